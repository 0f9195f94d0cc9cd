//! The canonical manifest text: one line per entry, in path order ([`super::path_cmp`]), the form
//! reviewers read and diff and whose blake3 is the image ID.
//!
//! ```text
//! #imager-manifest v1
//! / dir mode=0755 uid=0 gid=0 mtime=1700000000
//! /bin symlink uid=0 gid=0 mtime=1700000000 target=usr/bin
//! /usr/bin/ping file mode=0755 uid=0 gid=0 mtime=1700000000 size=90568 blake3=… xattr.security.capability=0100000200200000…
//! /usr/bin/perl5.36.0 hardlink target=/usr/bin/perl
//! /dev/null char mode=0666 uid=0 gid=0 mtime=1700000000 dev=1,3
//! ```
//! Fields come in this fixed order and only where the kind has them; paths, targets and
//! xattr names use [`super::escape`]; xattr values are lowercase hex. A symlink's mode is
//! always 0777 and is not written; a hard link has no metadata of its own. Parsing is
//! strict: a text is accepted only if printing what was parsed gives the same bytes, so
//! an image ID names exactly one tree.

use super::{Entry, Hash, Kind, Tree, SYMLINK_MODE};
use crate::error::{Error, Result};
use crate::escape::{escape, escape_with, unescape, unescape_with};
use std::fmt::Write;

/// The first line of every manifest text (without its newline): the format and its version.
pub const HEADER: &str = "#imager-manifest v1";

/// Appends one entry's line (with its newline) to `out`.
pub fn write_entry(out: &mut String, e: &Entry) {
    out.push_str(&escape(&e.path));
    out.push(' ');
    out.push_str(e.kind.name());
    if let Kind::HardLink { target } = &e.kind {
        let _ = write!(out, " target={}", escape(target));
        out.push('\n');
        return;
    }
    if !matches!(e.kind, Kind::Symlink { .. }) {
        let _ = write!(out, " mode={:04o}", e.mode);
    }
    let _ = write!(out, " uid={} gid={} mtime={}", e.uid, e.gid, e.mtime);
    match &e.kind {
        Kind::File { size, hash } => {
            let _ = write!(out, " size={size} blake3={hash}");
        }
        Kind::Symlink { target } => {
            let _ = write!(out, " target={}", escape(target));
        }
        Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
            let _ = write!(out, " dev={major},{minor}");
        }
        Kind::Dir | Kind::Fifo | Kind::HardLink { .. } => {}
    }
    for (name, value) in &e.xattrs {
        let _ = write!(
            out,
            " xattr.{}={}",
            escape_with(name, b"="),
            hex::encode(value)
        );
    }
    out.push('\n');
}

/// The canonical text of a tree.
pub fn print(tree: &Tree) -> String {
    let mut out = String::with_capacity(tree.entries().len() * 120 + HEADER.len() + 1);
    out.push_str(HEADER);
    out.push('\n');
    for e in tree.entries() {
        write_entry(&mut out, e);
    }
    out
}

/// Path by path, how two trees differ: `- line` for an entry of `a` that `b` lacks or
/// has otherwise, `+ line` for `b`'s. Entries equal in both are left out.
pub fn differences(a: &Tree, b: &Tree) -> Vec<String> {
    let line = |e: &Entry| {
        let mut s = String::new();
        write_entry(&mut s, e);
        s.trim_end().to_string()
    };
    let (mut i, mut j) = (0, 0);
    let (x, y) = (a.entries(), b.entries());
    let mut out = Vec::new();
    while i < x.len() || j < y.len() {
        let ord = match (x.get(i), y.get(j)) {
            (Some(p), Some(q)) => super::path_cmp(&p.path, &q.path),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                out.push(format!("- {}", line(&x[i])));
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(format!("+ {}", line(&y[j])));
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                if x[i] != y[j] {
                    out.push(format!("- {}", line(&x[i])));
                    out.push(format!("+ {}", line(&y[j])));
                }
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// The paths a canonical text lists, escaped as it writes them (each line's first
/// field), without parsing the rest: a cheap set of an image's paths.
pub fn escaped_paths(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(' ').next())
        .filter(|p| !p.is_empty())
}

/// The image ID of a canonical text.
pub fn id_of(text: &str) -> Hash {
    Hash::of(text.as_bytes())
}

/// Parses a canonical text; `source_name` names it in errors (a file path or an image ID).
///
/// The lines are parsed and checked to be canonical in parallel (a host's manifest is
/// some 16,000 lines, parsed on both sides of every push, and the single-threaded parse
/// was a tenth of a managed host's push); hard links and the order are then checked in
/// one pass, line by line, so an error is the one the first bad line gives.
pub fn parse(text: &str, source_name: &str) -> Result<Tree> {
    use rayon::prelude::*;
    let err = |line: usize, reason: String| Error::Manifest {
        source_name: source_name.to_string(),
        line,
        reason,
    };
    let mut lines = text.split_inclusive('\n');
    match lines.next() {
        Some(h) if h == format!("{HEADER}\n") => {}
        _ => return Err(err(1, format!("expected the header line {HEADER:?}"))),
    }
    let lines: Vec<&str> = lines.collect();
    // Each line's entry (or why it does not parse), and whether it is printed as it is.
    let parsed: Vec<(std::result::Result<Entry, String>, bool)> = lines
        .par_chunks(PARSE_CHUNK)
        .flat_map_iter(|chunk| {
            let mut printed = String::new();
            chunk.iter().map(move |raw| {
                let Some(line) = raw.strip_suffix('\n') else {
                    return (Err("the last line has no newline".into()), false);
                };
                let e = parse_line(line);
                let canonical = e.as_ref().is_ok_and(|e| {
                    printed.clear();
                    write_entry(&mut printed, e);
                    printed == *raw
                });
                (e, canonical)
            })
        })
        .collect();
    let mut entries: Vec<Entry> = Vec::with_capacity(parsed.len());
    let mut canonical = true;
    for (n, (e, printed_as_is)) in parsed.into_iter().enumerate() {
        let lineno = n + 2;
        let mut e = e.map_err(|r| err(lineno, r))?;
        canonical &= printed_as_is;
        if let Kind::HardLink { target } = &e.kind {
            // A hard link shares its target's inode, so it shares its metadata.
            let t = entries
                .binary_search_by(|x| super::path_cmp(&x.path, target))
                .ok()
                .map(|i| &entries[i])
                .ok_or_else(|| {
                    err(
                        lineno,
                        format!(
                            "hard link target {} is not an earlier entry",
                            escape(target)
                        ),
                    )
                })?;
            e.mode = t.mode;
            e.uid = t.uid;
            e.gid = t.gid;
            e.mtime = t.mtime;
            e.xattrs = t.xattrs.clone();
        }
        if let Some(prev) = entries.last() {
            if super::path_cmp(&prev.path, &e.path) != std::cmp::Ordering::Less {
                return Err(err(
                    lineno,
                    "entries are not in path order, or a path repeats".into(),
                ));
            }
        }
        entries.push(e);
    }
    let tree = Tree::new(entries).map_err(|e| err(0, e.to_string()))?;
    // Strictness: exactly one text per tree. Every line is its entry as printed, so the
    // whole text is the tree's.
    if !canonical {
        return Err(err(
            0,
            "the text is not in canonical form (fields, order or spelling)".into(),
        ));
    }
    Ok(tree)
}

/// Lines a thread parses at a time.
const PARSE_CHUNK: usize = 2048;

fn parse_line(line: &str) -> std::result::Result<Entry, String> {
    let mut fields = line.split(' ');
    let path = unescape(fields.next().unwrap_or_default())?;
    let kind_name = fields.next().ok_or("missing the kind")?;
    let kv = fields
        .map(|f| {
            f.split_once('=')
                .ok_or_else(|| format!("field {f:?} is not key=value"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut it = kv.into_iter().peekable();
    let mut take = |key: &str| -> std::result::Result<&str, String> {
        match it.next() {
            Some((k, v)) if k == key => Ok(v),
            Some((k, _)) => Err(format!("expected field {key}, found {k}")),
            None => Err(format!("missing field {key}")),
        }
    };
    let mut e = Entry {
        path,
        kind: Kind::Dir,
        mode: 0,
        uid: 0,
        gid: 0,
        mtime: 0,
        xattrs: Vec::new(),
    };
    if kind_name == "hardlink" {
        e.kind = Kind::HardLink {
            target: unescape(take("target")?)?,
        };
        if it.next().is_some() {
            return Err("a hardlink line has only a target".into());
        }
        return Ok(e);
    }
    if kind_name == "symlink" {
        e.mode = SYMLINK_MODE;
    } else {
        let m = take("mode")?;
        e.mode = u32::from_str_radix(m, 8).map_err(|_| format!("mode={m:?} is not octal"))?;
    }
    e.uid = u32::try_from(number("uid", take("uid")?)?).map_err(|_| "uid out of range")?;
    e.gid = u32::try_from(number("gid", take("gid")?)?).map_err(|_| "gid out of range")?;
    let m = take("mtime")?;
    e.mtime = m
        .parse::<i64>()
        .map_err(|_| format!("mtime={m:?} is not a number"))?;
    e.kind = match kind_name {
        "file" => {
            let size = number("size", take("size")?)?;
            let h = take("blake3")?;
            let hash = Hash::from_hex(h)
                .ok_or_else(|| format!("blake3={h:?} is not 64 lowercase hex digits"))?;
            Kind::File { size, hash }
        }
        "dir" => Kind::Dir,
        "fifo" => Kind::Fifo,
        "symlink" => Kind::Symlink {
            target: unescape(take("target")?)?,
        },
        "char" | "block" => {
            let (major, minor) = parse_dev(take("dev")?)?;
            if kind_name == "char" {
                Kind::CharDev { major, minor }
            } else {
                Kind::BlockDev { major, minor }
            }
        }
        other => return Err(format!("unknown kind {other:?}")),
    };
    for (k, v) in it {
        e.xattrs.push(parse_xattr(k, v)?);
    }
    super::check_applicable(&e).map_err(|r| format!("{}: {r}", escape(&e.path)))?;
    Ok(e)
}

/// A field's unsigned number.
fn number(key: &str, v: &str) -> std::result::Result<u64, String> {
    v.parse::<u64>()
        .map_err(|_| format!("{key}={v:?} is not a number"))
}

/// A device's `dev=MAJOR,MINOR`.
fn parse_dev(d: &str) -> std::result::Result<(u32, u32), String> {
    let (a, b) = d
        .split_once(',')
        .ok_or_else(|| format!("dev={d:?} is not MAJOR,MINOR"))?;
    let major = a
        .parse::<u32>()
        .map_err(|_| format!("bad device major {a:?}"))?;
    let minor = b
        .parse::<u32>()
        .map_err(|_| format!("bad device minor {b:?}"))?;
    Ok((major, minor))
}

/// An `xattr.NAME=HEX` field: the name unescaped, the value from lowercase hex (one
/// spelling only, so that the text stays canonical).
fn parse_xattr(k: &str, v: &str) -> std::result::Result<(Vec<u8>, Vec<u8>), String> {
    let name = k
        .strip_prefix("xattr.")
        .ok_or_else(|| format!("unexpected field {k}"))?;
    let name = unescape_with(name, b"=")?;
    if v.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("xattr value of {k} is not lowercase hex"));
    }
    let value = hex::decode(v).map_err(|_| format!("xattr value of {k} is not hex"))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_listed_path_by_path() {
        let a = parse(SAMPLE, "a").unwrap();
        let b_text = SAMPLE
            .replace("/bin symlink uid=0 gid=0 mtime=-1 target=usr/bin\n", "")
            .replace("/p fifo mode=0600", "/p fifo mode=0644")
            + "/q fifo mode=0600 uid=0 gid=0 mtime=0\n";
        let b = parse(&b_text, "b").unwrap();
        assert_eq!(
            differences(&a, &b),
            [
                "- /bin symlink uid=0 gid=0 mtime=-1 target=usr/bin",
                "- /p fifo mode=0600 uid=1000 gid=1000 mtime=0",
                "+ /p fifo mode=0644 uid=1000 gid=1000 mtime=0",
                "+ /q fifo mode=0600 uid=0 gid=0 mtime=0",
            ]
        );
        assert!(differences(&a, &a).is_empty());
    }

    const SAMPLE: &str = "#imager-manifest v1
/ dir mode=0755 uid=0 gid=0 mtime=1700000000
/a\\x20b\\x0a file mode=4755 uid=0 gid=0 mtime=5 size=3 blake3=6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85 xattr.security.capability=0100000200200000 xattr.user.a\\x20b=
/a\\x20b\\x0a2 hardlink target=/a\\x20b\\x0a
/bin symlink uid=0 gid=0 mtime=-1 target=usr/bin
/null char mode=0666 uid=0 gid=0 mtime=0 dev=1,3
/p fifo mode=0600 uid=1000 gid=1000 mtime=0
";

    #[test]
    fn canonical_text_round_trips() {
        let t = parse(SAMPLE, "sample").unwrap();
        assert_eq!(print(&t), SAMPLE);
        assert_eq!(t.entries().len(), 6);
        let hl = t.get(b"/a b\n2").unwrap();
        assert_eq!(hl.mode, 0o4755, "a hard link takes its target's metadata");
    }

    #[test]
    fn a_text_of_many_chunks_parses_and_names_its_first_bad_line() {
        let mut text = format!("{HEADER}\n/ dir mode=0755 uid=0 gid=0 mtime=0\n");
        for i in 0..3 * PARSE_CHUNK {
            text.push_str(&format!("/f{i:06} fifo mode=0600 uid=0 gid=0 mtime={i}\n"));
        }
        let t = parse(&text, "many").expect("parse");
        assert_eq!(t.entries().len(), 3 * PARSE_CHUNK + 1);
        assert_eq!(print(&t), text);
        // Line numbers count from the header, line 1; file i is on line i + 3.
        let at = |i: usize| format!("/f{i:06} fifo mode=0600");
        let bad = text
            .replace(&at(2 * PARSE_CHUNK + 7), "/f fifo mode=0600")
            .replace(
                &at(PARSE_CHUNK + 5),
                &at(PARSE_CHUNK + 5).replace("0600", "06z0"),
            );
        match parse(&bad, "many") {
            Err(Error::Manifest { line, .. }) => assert_eq!(line, PARSE_CHUNK + 8),
            other => panic!("expected the first bad line named, got {other:?}"),
        }
    }

    #[test]
    fn non_canonical_texts_are_refused() {
        for (bad, why) in [
            (
                SAMPLE.replace(
                    "mode=0755 uid=0 gid=0 mtime=1700000000",
                    "uid=0 mode=0755 gid=0 mtime=1700000000",
                ),
                "field order",
            ),
            (SAMPLE.replace("mode=0666", "mode=666"), "mode spelling"),
            (SAMPLE.replace("/bin symlink", "/zzz symlink"), "sort order"),
            (SAMPLE.replace("dev=1,3\n", "dev=1,3"), "missing newline"),
            (SAMPLE.replace("/p fifo", "/q/p fifo"), "missing parent"),
            (
                SAMPLE.replace("hardlink target=/a\\x20b\\x0a", "hardlink target=/zz"),
                "dangling hard link",
            ),
            (
                SAMPLE.replace("uid=1000 gid=1000", "uid=4294967295 gid=1000"),
                "uid (uid_t)-1",
            ),
            (
                SAMPLE.replace("xattr.user.a\\x20b=", "xattr.user.a\\x3db="),
                "xattr name with =",
            ),
        ] {
            assert!(parse(&bad, "x").is_err(), "{why} accepted");
        }
    }
}
