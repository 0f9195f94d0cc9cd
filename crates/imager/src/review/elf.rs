//! The ELF content view: which sections changed size and which symbols came, went or
//! changed size, as diffoscope's readelf/objdump summaries show them, without running
//! binutils. Read with the `object` crate; both the static (`.symtab`) and the dynamic
//! (`.dynsym`) tables count, since Debian's binaries are stripped to the latter.

use super::views::{ContentView, ViewKind};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use serde::Serialize;
use std::collections::BTreeMap;

/// At most this many symbol changes are listed; the rest are counted.
pub const MAX_SYMBOLS: usize = 400;

/// A named size on one side and the other (None: absent there).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SizeChange {
    /// The section's or symbol's name.
    pub name: String,
    /// Its size in the old file, in bytes.
    pub old: Option<u64>,
    /// Its size in the new file, in bytes.
    pub new: Option<u64>,
    /// An undefined symbol: one the file imports (its size is always 0).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub import: bool,
}

/// How an ELF file's sections and symbols differ.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ElfChange {
    /// Sections added, removed or resized, in the new file's order (then the old's).
    pub sections: Vec<SizeChange>,
    /// Symbols added, removed or resized, by name; at most [`MAX_SYMBOLS`].
    pub symbols: Vec<SizeChange>,
    /// Symbol changes beyond [`MAX_SYMBOLS`], not listed.
    pub symbols_omitted: u64,
}

impl ElfChange {
    /// `.text 123456 → 124000`, `+ sym foo (120 B)`, `- import bar`, one a line.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.sections {
            out.push(match (s.old, s.new) {
                (Some(o), Some(n)) => format!("{} {o} → {n}", s.name),
                (None, Some(n)) => format!("+ section {} ({n} B)", s.name),
                (Some(o), _) => format!("- section {} ({o} B)", s.name),
                (None, None) => continue,
            });
        }
        for s in &self.symbols {
            let what = if s.import { "import" } else { "sym" };
            out.push(match (s.old, s.new, s.import) {
                (None, Some(_), true) => format!("+ {what} {}", s.name),
                (Some(_), None, true) => format!("- {what} {}", s.name),
                (None, Some(n), _) => format!("+ {what} {} ({n} B)", s.name),
                (Some(o), None, _) => format!("- {what} {} ({o} B)", s.name),
                (Some(o), Some(n), _) => format!("~ {what} {} {o} B → {n} B", s.name),
                (None, None, _) => continue,
            });
        }
        if self.symbols_omitted > 0 {
            out.push(format!("… {} more symbol changes", self.symbols_omitted));
        }
        out
    }
}

/// One side's sections (in file order) and symbols, keyed by (name, import).
#[derive(Default)]
struct Table {
    sections: Vec<(String, u64)>,
    symbols: BTreeMap<(String, bool), u64>,
    stripped: bool,
}

fn table(data: &[u8]) -> Result<Table, object::Error> {
    let mut t = Table::default();
    if data.is_empty() {
        return Ok(t);
    }
    let f = object::File::parse(data)?;
    for s in f.sections() {
        let name = s.name().unwrap_or("?").to_string();
        if !name.is_empty() {
            t.sections.push((name, s.size()));
        }
    }
    t.stripped = f.symbol_table().is_none();
    for s in f.symbols().chain(f.dynamic_symbols()) {
        if matches!(s.kind(), SymbolKind::Section | SymbolKind::File) {
            continue;
        }
        match s.name() {
            Ok(n) if !n.is_empty() => {
                t.symbols
                    .insert((n.to_string(), s.is_undefined()), s.size());
            }
            _ => {}
        }
    }
    Ok(t)
}

/// The view of an ELF file's change (`old`/`new` empty for an absent side).
pub fn view(old: &[u8], new: &[u8]) -> ContentView {
    let mut v = ContentView::new(ViewKind::Elf);
    let (o, n) = match (table(old), table(new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            v.notes.push(format!("not readable as ELF: {e}"));
            return v;
        }
    };
    if (old.is_empty() || o.stripped) && (new.is_empty() || n.stripped) {
        v.notes
            .push("stripped: the symbols are the dynamic table's (exports and imports)".into());
    }
    let mut c = compare(&o, &n);
    if old.is_empty() || new.is_empty() {
        // A file added or removed whole: its main sections say enough.
        c.sections
            .retain(|s| MAIN_SECTIONS.contains(&s.name.as_str()));
    }
    v.elf = Some(c);
    v
}

/// The sections shown for a file added or removed whole.
const MAIN_SECTIONS: [&str; 4] = [".text", ".rodata", ".data", ".bss"];

fn compare(o: &Table, n: &Table) -> ElfChange {
    let mut c = ElfChange::default();
    let old_sections: BTreeMap<&str, u64> =
        o.sections.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let new_sections: BTreeMap<&str, u64> =
        n.sections.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    for (name, size) in &n.sections {
        let old = old_sections.get(name.as_str()).copied();
        if old != Some(*size) {
            c.sections.push(SizeChange {
                name: name.clone(),
                old,
                new: Some(*size),
                import: false,
            });
        }
    }
    for (name, size) in &o.sections {
        if !new_sections.contains_key(name.as_str()) {
            c.sections.push(SizeChange {
                name: name.clone(),
                old: Some(*size),
                new: None,
                import: false,
            });
        }
    }
    // Defined symbols (what the file offers) before imports.
    let keys: std::collections::BTreeSet<(bool, &String)> = o
        .symbols
        .keys()
        .chain(n.symbols.keys())
        .map(|(name, import)| (*import, name))
        .collect();
    for (import, name) in keys {
        let k = &(name.clone(), import);
        let (old, new) = (o.symbols.get(k).copied(), n.symbols.get(k).copied());
        if old == new {
            continue;
        }
        if c.symbols.len() == MAX_SYMBOLS {
            c.symbols_omitted += 1;
            continue;
        }
        c.symbols.push(SizeChange {
            name: k.0.clone(),
            old,
            new,
            import: k.1,
        });
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(name: &str, size: u64) -> ((String, bool), u64) {
        ((name.to_string(), false), size)
    }

    #[test]
    fn changed_sections_and_symbols_are_listed_and_capped() {
        let o = Table {
            sections: vec![(".text".into(), 100), (".old".into(), 8)],
            symbols: [sym("same", 4), sym("gone", 8), sym("grown", 10)].into(),
            stripped: false,
        };
        let mut n = Table {
            sections: vec![(".text".into(), 120), (".new".into(), 16)],
            symbols: [sym("same", 4), sym("grown", 12), sym("fresh", 120)].into(),
            stripped: false,
        };
        n.symbols.insert(("malloc".into(), true), 0);
        let lines = compare(&o, &n).lines();
        assert_eq!(
            lines,
            [
                ".text 100 → 120",
                "+ section .new (16 B)",
                "- section .old (8 B)",
                "+ sym fresh (120 B)",
                "- sym gone (8 B)",
                "~ sym grown 10 B → 12 B",
                "+ import malloc",
            ]
        );
        let many = Table {
            symbols: (0..MAX_SYMBOLS + 5)
                .map(|i| sym(&format!("s{i}"), 1))
                .collect(),
            ..Table::default()
        };
        let c = compare(&Table::default(), &many);
        assert_eq!((c.symbols.len(), c.symbols_omitted), (MAX_SYMBOLS, 5));
        assert!(c
            .lines()
            .last()
            .is_some_and(|l| l == "… 5 more symbol changes"));
    }

    #[test]
    fn a_real_elf_file_is_read() {
        // This test's own executable: an ELF file with symbols.
        let me = crate::fsx::read(&std::env::current_exe().expect("exe")).expect("read exe");
        let v = view(b"", &me);
        let e = v.elf.expect("an ELF view");
        assert!(e.sections.iter().any(|s| s.name == ".text"), "{e:?}");
        assert!(!e.symbols.is_empty());
        let bad = view(b"", b"\x7fELFnot really");
        assert!(bad.notes[0].contains("not readable as ELF"), "{bad:?}");
    }
}
