//! Content views: what changed inside a file a text diff cannot show. ELF files show
//! their changed sections and symbols ([`super::elf`], as diffoscope's readelf summary),
//! gzip files the diff of their decompressed text (man pages, changelogs), a `.pyc` the
//! diff of its `.py` source when the image has it. Every view is bounded: inputs over
//! [`MAX_INPUT`] get none, decompression stops at [`MAX_DECOMPRESSED`], a view keeps at
//! most [`MAX_VIEW_LINES`] lines, and each says in its notes what it left out.

use super::elf::ElfChange;
use crate::error::Result;
use serde::Serialize;
use std::io::Read;

/// Files larger than this (either side) get no view: reading them costs too much memory.
pub const MAX_INPUT: u64 = 64 << 20;
/// A gzip file is decompressed up to this many bytes (a package may carry a gzip bomb).
pub const MAX_DECOMPRESSED: u64 = 8 << 20;
/// A view's diff keeps at most this many lines.
pub const MAX_VIEW_LINES: usize = 5000;

/// Which view a file got.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ViewKind {
    /// An ELF object: sections and symbols.
    Elf,
    /// A gzip file: its decompressed text.
    Gzip,
    /// Compiled Python: its source's diff.
    Pyc,
}

/// What changed inside a file that is not small text.
#[derive(Clone, Debug, Serialize)]
pub struct ContentView {
    /// Which view this is.
    pub kind: ViewKind,
    /// A unified diff: of the decompressed text (gzip) or of the source (pyc).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Changed sections and symbols (ELF).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elf: Option<ElfChange>,
    /// What the view could not show or left out, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl ContentView {
    /// An empty view of this kind, to fill in.
    pub fn new(kind: ViewKind) -> ContentView {
        ContentView {
            kind,
            diff: None,
            elf: None,
            notes: Vec::new(),
        }
    }

    /// The view as lines for a text report: its notes (`note: ...`), then the diff or the
    /// ELF summary.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.notes.iter().map(|n| format!("note: {n}")).collect();
        if let Some(d) = &self.diff {
            out.extend(d.lines().map(str::to_string));
        }
        if let Some(e) = &self.elf {
            out.extend(e.lines());
        }
        out
    }
}

/// Reads a path's content from one of the two images (None: not a regular file there).
pub type Reader<'a> = &'a dyn Fn(&[u8]) -> Result<Option<Vec<u8>>>;

/// The view of a changed file's content (`old`, `new`: empty for an absent side), or
/// None when no view applies. `read_old`/`read_new` read other paths (a .pyc's source).
pub fn view(
    path: &[u8],
    old: &[u8],
    new: &[u8],
    read_old: Reader,
    read_new: Reader,
) -> Result<Option<ContentView>> {
    let magic = |m: &[u8]| old.starts_with(m) || new.starts_with(m);
    if path.ends_with(b".pyc") {
        return pyc(path, read_old, read_new).map(Some);
    }
    if magic(b"\x1f\x8b") {
        return Ok(Some(gzip(path, old, new)));
    }
    if magic(b"\x7fELF") {
        return Ok(Some(super::elf::view(old, new)));
    }
    Ok(None)
}

/// Up to [`MAX_DECOMPRESSED`] bytes of a gzip stream; whether it was cut there.
fn gunzip(gz: &[u8]) -> std::io::Result<(Vec<u8>, bool)> {
    let mut raw = Vec::new();
    if gz.is_empty() {
        return Ok((raw, false));
    }
    flate2::read::MultiGzDecoder::new(gz)
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut raw)?;
    let capped = raw.len() as u64 > MAX_DECOMPRESSED;
    raw.truncate(MAX_DECOMPRESSED as usize);
    Ok((raw, capped))
}

fn gzip(path: &[u8], old: &[u8], new: &[u8]) -> ContentView {
    let mut v = ContentView::new(ViewKind::Gzip);
    let (o, n) = match (gunzip(old), gunzip(new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            v.notes.push(format!("not readable as gzip: {e}"));
            return v;
        }
    };
    if o.1 || n.1 {
        v.notes.push(format!(
            "decompressed content cut at {} (the diff is of the first {} of each side)",
            crate::units::bytes(MAX_DECOMPRESSED),
            crate::units::bytes(MAX_DECOMPRESSED)
        ));
    }
    if o.0 == n.0 {
        v.notes
            .push("the decompressed content is the same: only the gzip wrapper differs".into());
        return v;
    }
    let text = |d: &[u8]| !d.contains(&0) && std::str::from_utf8(d).is_ok();
    if !(text(&o.0) && text(&n.0)) {
        v.notes.push(format!(
            "the decompressed content is not text ({} -> {} bytes)",
            o.0.len(),
            n.0.len()
        ));
        return v;
    }
    let d = super::compare::unified(
        path,
        &String::from_utf8_lossy(&o.0),
        &String::from_utf8_lossy(&n.0),
    );
    v.diff = Some(cap(d, &mut v.notes));
    v
}

/// A diff cut at [`MAX_VIEW_LINES`] lines, saying so in `notes`.
fn cap(d: String, notes: &mut Vec<String>) -> String {
    let total = d.lines().count();
    if total <= MAX_VIEW_LINES {
        return d;
    }
    notes.push(format!(
        "the diff is cut at {MAX_VIEW_LINES} of its {total} lines"
    ));
    d.lines()
        .take(MAX_VIEW_LINES)
        .flat_map(|l| [l, "\n"])
        .collect()
}

/// The source a compiled Python file was made from: `d/__pycache__/m.TAG.pyc` and the
/// legacy `d/m.pyc` both come from `d/m.py`.
pub fn pyc_source(path: &[u8]) -> Option<Vec<u8>> {
    let stem = path.strip_suffix(b".pyc")?;
    let slash = stem.iter().rposition(|&b| b == b'/')?;
    let (dir, file) = (&stem[..slash], &stem[slash + 1..]);
    match dir.strip_suffix(b"/__pycache__") {
        Some(parent) => {
            let module = file.split(|&b| b == b'.').next()?;
            Some([parent, b"/", module, b".py"].concat())
        }
        None => Some([stem, b".py"].concat()),
    }
}

fn pyc(path: &[u8], read_old: Reader, read_new: Reader) -> Result<ContentView> {
    let mut v = ContentView::new(ViewKind::Pyc);
    let Some(py) = pyc_source(path) else {
        v.notes.push("no source path for this name".into());
        return Ok(v);
    };
    let shown = crate::escape::escape(&py);
    match (read_old(&py)?, read_new(&py)?) {
        (None, None) => v
            .notes
            .push(format!("its source {shown} is in neither image")),
        (o, n) if o == n => v.notes.push(format!(
            "its source {shown} is unchanged: the compiled file differs only"
        )),
        (o, n) => {
            let (o, n) = (o.unwrap_or_default(), n.unwrap_or_default());
            if o.len() as u64 > MAX_DECOMPRESSED || n.len() as u64 > MAX_DECOMPRESSED {
                v.notes
                    .push(format!("its source {shown} is too large to diff"));
                return Ok(v);
            }
            v.notes.push(format!("the diff of its source {shown}"));
            let d = super::compare::unified(
                &py,
                &String::from_utf8_lossy(&o),
                &String::from_utf8_lossy(&n),
            );
            v.diff = Some(cap(d, &mut v.notes));
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(text: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text).expect("in memory");
        e.finish().expect("in memory")
    }

    #[test]
    fn pyc_sources_are_found_for_both_layouts() {
        let s = |p: &str| pyc_source(p.as_bytes()).map(|v| String::from_utf8(v).expect("utf-8"));
        assert_eq!(
            s("/usr/lib/python3/dist-packages/yaml/__pycache__/reader.cpython-311.pyc"),
            Some("/usr/lib/python3/dist-packages/yaml/reader.py".into())
        );
        assert_eq!(
            s("/opt/app/__pycache__/app.cpython-311.opt-1.pyc"),
            Some("/opt/app/app.py".into())
        );
        assert_eq!(s("/opt/old/mod.pyc"), Some("/opt/old/mod.py".into()));
        assert_eq!(s("/x.py"), None);
    }

    #[test]
    fn gzip_views_diff_the_text_and_say_when_it_is_the_same() {
        let none: Reader = &|_| Ok(None);
        let v = view(b"/m.1.gz", &gz(b"a\nb\n"), &gz(b"a\nc\n"), none, none)
            .expect("view")
            .expect("a gzip view");
        assert_eq!(v.kind, ViewKind::Gzip);
        let d = v.diff.expect("a diff");
        assert!(d.contains("-b\n") && d.contains("+c\n"), "{d}");
        // The same text with another header (a name, a time): said, no diff.
        let mut other = gz(b"a\nb\n");
        other[4] = 1;
        let v = view(b"/m.1.gz", &gz(b"a\nb\n"), &other, none, none)
            .expect("view")
            .expect("a gzip view");
        assert!(v.diff.is_none() && v.notes[0].contains("same"), "{v:?}");
        // Garbage after the magic: a note, not an error.
        let v = view(b"/x.gz", b"\x1f\x8bnope", b"", none, none)
            .expect("view")
            .expect("a gzip view");
        assert!(v.notes[0].contains("not readable as gzip"), "{v:?}");
    }

    #[test]
    fn a_gzip_bomb_is_cut_and_said_so() {
        let big = vec![b'a'; (MAX_DECOMPRESSED + 10) as usize];
        let v = gzip(b"/bomb.gz", b"", &gz(&big));
        assert!(
            v.notes.iter().any(|n| n.contains("cut at")),
            "{:?}",
            v.notes
        );
    }

    #[test]
    fn pyc_views_diff_the_source_or_say_it_is_missing() {
        let old: Reader = &|p| Ok((p == b"/a/m.py").then(|| b"x = 1\n".to_vec()));
        let new: Reader = &|p| Ok((p == b"/a/m.py").then(|| b"x = 2\n".to_vec()));
        let v = view(b"/a/__pycache__/m.cpython-311.pyc", b"o", b"n", old, new)
            .expect("view")
            .expect("a pyc view");
        assert!(v.diff.expect("diff").contains("+x = 2"));
        let none: Reader = &|_| Ok(None);
        let v = view(b"/b/n.pyc", b"o", b"n", none, none)
            .expect("view")
            .expect("a pyc view");
        assert!(v.notes[0].contains("in neither image"), "{v:?}");
    }

    #[test]
    fn long_view_diffs_are_cut_with_a_note() {
        let d: String = (0..MAX_VIEW_LINES + 7).map(|i| format!("+{i}\n")).collect();
        let mut notes = Vec::new();
        let c = cap(d, &mut notes);
        assert_eq!(c.lines().count(), MAX_VIEW_LINES);
        assert!(notes[0].contains(&format!("of its {} lines", MAX_VIEW_LINES + 7)));
    }
}
