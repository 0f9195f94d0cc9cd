//! A file's body in the HTML report: its unified diff side by side (old on the left, new
//! on the right, line numbers from the hunk headers, a run of removed lines paired with
//! the added lines after it), an ELF view as a table of sections and symbols, a view's
//! notes as notes. Only the lines the fold chose ([`ShownFile::body`]) are drawn, so the
//! page shows what the text view shows; what was cut is counted under it.

use super::esc;
use crate::review::elf::ElfChange;
use crate::review::fold::ShownFile;
use crate::review::render::body_word;
use std::fmt::Write;

/// The body of a shown file, and the line counting what was cut.
pub(super) fn body(o: &mut String, sf: &ShownFile) {
    let f = sf.file;
    let mut lines: &[String] = &sf.body;
    if let Some(v) = f.view.as_ref().filter(|_| f.diff.is_none()) {
        let kind = format!("{:?}", v.kind).to_lowercase();
        let _ = write!(o, "<div class=\"view\" data-view=\"{kind}\">");
        // The view's lines are its notes, then its diff or its ELF summary.
        let k = v.notes.len().min(lines.len());
        for n in &lines[..k] {
            let _ = write!(o, "<p class=\"note\">{}</p>", esc(n));
        }
        lines = &lines[k..];
        if let Some(e) = &v.elf {
            elf_table(o, e, lines.len());
            lines = &[];
        }
        o.push_str("</div>");
    }
    if !lines.is_empty() {
        side_by_side(o, lines);
    }
    if sf.body_omitted > 0 {
        let _ = write!(
            o,
            "<p class=\"more\">… {} more lines of this {} <span class=\"dim\">(--full shows them)</span></p>",
            sf.body_omitted,
            body_word(f)
        );
    }
}

/// The old and new start lines of a hunk header (`@@ -12,5 +12,6 @@`); 0 where it does
/// not parse.
fn hunk_starts(l: &str) -> (u64, u64) {
    let mut w = l.split_whitespace().skip(1);
    let mut start = |sign: char| {
        w.next()
            .and_then(|t| t.strip_prefix(sign))
            .and_then(|t| t.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let old = start('-');
    (old, start('+'))
}

/// A line of one side: its number and text; None for an empty cell.
type Cell<'a> = Option<(u64, &'a str)>;

fn row(o: &mut String, class: &str, old: Cell, new: Cell) {
    let cell = |c: Cell, side: &str| match c {
        Some((n, t)) => format!(
            "<td class=\"ln\">{n}</td><td class=\"{side}\">{}</td>",
            esc(t)
        ),
        None => "<td class=\"ln\"></td><td class=\"none\"></td>".to_string(),
    };
    let _ = write!(
        o,
        "<tr class=\"{class}\">{}{}</tr>",
        cell(old, "o"),
        cell(new, "n")
    );
}

/// Pairs the removed lines with the added lines that followed them, row by row.
fn flush(o: &mut String, dels: &mut Vec<&str>, adds: &mut Vec<&str>, ln: &mut (u64, u64)) {
    for i in 0..dels.len().max(adds.len()) {
        let old = dels.get(i).map(|t| {
            ln.0 += 1;
            (ln.0 - 1, *t)
        });
        let new = adds.get(i).map(|t| {
            ln.1 += 1;
            (ln.1 - 1, *t)
        });
        let class = match (old.is_some(), new.is_some()) {
            (true, true) => "chg",
            (true, false) => "del",
            _ => "add",
        };
        row(o, class, old, new);
    }
    dels.clear();
    adds.clear();
}

/// A unified diff's lines as a two-sided table.
fn side_by_side(o: &mut String, lines: &[String]) {
    o.push_str(
        "<table class=\"sbs\"><colgroup><col class=\"ln\"><col class=\"side\"><col class=\"ln\"><col class=\"side\"></colgroup><tbody>",
    );
    let (mut dels, mut adds) = (Vec::new(), Vec::new());
    let mut ln = (0u64, 0u64);
    let mut in_hunk = false;
    let mut old_name: Option<&str> = None;
    for l in lines {
        let (first, rest) = match l.chars().next() {
            Some(c) => (Some(c), &l[c.len_utf8()..]),
            None => (None, ""),
        };
        match first {
            Some('-') if in_hunk => dels.push(rest),
            Some('+') if in_hunk => adds.push(rest),
            _ => flush(o, &mut dels, &mut adds, &mut ln),
        }
        match first {
            Some('-' | '+') if in_hunk => {}
            Some('@') if l.starts_with("@@") => {
                ln = hunk_starts(l);
                in_hunk = true;
                let _ = write!(
                    o,
                    "<tr class=\"hunk\"><td colspan=\"4\">{}</td></tr>",
                    esc(l)
                );
            }
            Some('-') if l.starts_with("---") => old_name = Some(l),
            Some('+') if l.starts_with("+++") => {
                let _ = write!(
                    o,
                    "<tr class=\"hdr\"><td colspan=\"2\">{}</td><td colspan=\"2\">{}</td></tr>",
                    esc(old_name.take().unwrap_or("")),
                    esc(l)
                );
            }
            Some(' ') | None if in_hunk => {
                row(o, "ctx", Some((ln.0, rest)), Some((ln.1, rest)));
                ln = (ln.0 + 1, ln.1 + 1);
            }
            _ => {
                let _ = write!(
                    o,
                    "<tr class=\"note\"><td colspan=\"4\">{}</td></tr>",
                    esc(l)
                );
            }
        }
    }
    flush(o, &mut dels, &mut adds, &mut ln);
    o.push_str("</tbody></table>");
}

/// A size in a table cell: `1234 B`, or a dash where absent.
fn size(s: Option<u64>) -> String {
    s.map_or("—".into(), |n| format!("{n} B"))
}

/// The first `n` lines of an ELF view (as [`ElfChange::lines`] counts them) as a table.
fn elf_table(o: &mut String, e: &ElfChange, n: usize) {
    let sections = e
        .sections
        .iter()
        .map(|s| ("section", s))
        .chain(e.symbols.iter().map(|s| {
            let what = if s.import { "import" } else { "symbol" };
            (what, s)
        }))
        .filter(|(_, s)| s.old.is_some() || s.new.is_some());
    let rows: Vec<_> = sections.collect();
    if n > 0 {
        o.push_str(
            "<table class=\"elf\"><thead><tr><th></th><th>Name</th><th>Old</th><th>New</th></tr></thead><tbody>",
        );
        for (what, s) in rows.iter().take(n) {
            let class = match (s.old, s.new) {
                (None, _) => "add",
                (_, None) => "del",
                _ => "chg",
            };
            let _ = write!(
                o,
                "<tr class=\"{class}\"><td>{what}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&s.name),
                size(s.old),
                size(s.new)
            );
        }
        o.push_str("</tbody></table>");
    }
    if e.symbols_omitted > 0 && n > rows.len() {
        let _ = write!(
            o,
            "<p class=\"more\">… {} more symbol changes</p>",
            e.symbols_omitted
        );
    }
}
