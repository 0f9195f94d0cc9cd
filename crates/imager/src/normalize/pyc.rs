//! `.pyc` header normalisation.
//!
//! A timestamp-based pyc (PEP 552, flags word 0) records the mtime and size of the
//! source file it was compiled from, and importlib uses the cached code only while
//! both still match the source. Once the image's mtimes have been normalised, the
//! recorded mtime no longer matches, so Python would treat every pyc as stale:
//! recompiling on each import, or writing fresh pycs (new bytes, new noise) wherever
//! the image is writable. Rewriting the header to the normalised source's mtime and
//! size keeps the caches valid; the marshalled code after the header is untouched.
//!
//! Hash-based pycs (flags bit 0 set) do not depend on mtimes and are left alone, as
//! are pycs from before Python 3.7, which have no flags word and whose layout we do
//! not rewrite.

/// The directory PEP 3147 puts cached bytecode in.
const PYCACHE: &[u8] = b"__pycache__";
/// Python 3.7 introduced the flags word (PEP 552) at this magic number; every
/// later Python 3 magic number is larger.
const FIRST_MAGIC_WITH_FLAGS: u16 = 3390;
/// Python 2 magic numbers (20121 for 1.5 up to 62211 for 2.7) are larger than any
/// Python 3 one, yet their header has no flags word: bytes 4..8 are the mtime and
/// 8.. is code. Anything from here up is therefore not a PEP 552 header.
const FIRST_PYTHON2_MAGIC: u16 = 20000;
const FLAG_HASH_BASED: u32 = 0b01;
const FLAG_CHECK_SOURCE: u32 = 0b10;

/// The source file a cached .pyc belongs to, per PEP 3147:
/// `dir/__pycache__/mod.cpython-311.pyc` (also `.opt-1.pyc`, `.opt-2.pyc`) ->
/// `dir/mod.py`; legacy `dir/mod.pyc` -> `dir/mod.py`. Paths are raw bytes and may
/// be non-UTF-8. Returns None for names that are not .pyc, and for names in
/// `__pycache__` that importlib's `source_from_cache` would reject (not exactly
/// `name.tag.pyc` or `name.tag.opt-N.pyc`), since no source maps to those.
pub fn source_path(pyc_path: &[u8]) -> Option<Vec<u8>> {
    let stem = pyc_path.strip_suffix(b".pyc")?;
    let (dir, name) = match pyc_path.iter().rposition(|&b| b == b'/') {
        Some(i) => pyc_path.split_at(i + 1),
        None => (&b""[..], pyc_path),
    };
    let in_pycache = dir
        .strip_suffix(b"/")
        .map(|d| d.rsplit(|&b| b == b'/').next() == Some(PYCACHE))
        .unwrap_or(false);
    if !in_pycache {
        // A legacy pyc sits next to its source.
        return Some([stem, b".py"].concat());
    }
    let parts: Vec<&[u8]> = name.split(|&b| b == b'.').collect();
    // Mirrors importlib.util.source_from_cache: `name.tag.pyc` or
    // `name.tag.opt-N.pyc`, the module being everything before the first dot.
    match parts.as_slice() {
        [_, _, _] => {}
        [_, _, opt, _] => {
            let level = opt.strip_prefix(b"opt-")?;
            if level.is_empty() || !level.iter().all(u8::is_ascii_alphanumeric) {
                return None;
            }
        }
        _ => return None,
    }
    let module = parts.first()?;
    let parent = dir.get(..dir.len().checked_sub(PYCACHE.len() + 1)?)?;
    Some([parent, module, b".py"].concat())
}

/// Whether a path names a compiled Python file (the rule's candidates).
pub fn is_pyc(path: &[u8]) -> bool {
    path.ends_with(b".pyc")
}

/// What a .pyc header says about how Python checks that the pyc is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PycKind {
    /// Valid while the source's mtime and size (both modulo 2^32) match these.
    Timestamp { mtime: u32, size: u32 },
    /// Checked against a hash of the source, or not checked at all.
    Hash,
    /// Too short, not a pyc, from before Python 3.7, or flags this code does not know.
    Unknown,
}

/// Reads the 16-byte PEP 552 header: a 2-byte little-endian magic number followed
/// by `\r\n`, then a little-endian flags word. Bit 0 clear means a timestamp pyc with
/// the source mtime at 8..12 and size at 12..16; bit 0 set means hash-based.
fn classify(data: &[u8]) -> PycKind {
    let Some(&[m0, m1, b'\r', b'\n', f0, f1, f2, f3, t0, t1, t2, t3, s0, s1, s2, s3]) =
        data.get(..16)
    else {
        return PycKind::Unknown;
    };
    let magic = u16::from_le_bytes([m0, m1]);
    if !(FIRST_MAGIC_WITH_FLAGS..FIRST_PYTHON2_MAGIC).contains(&magic) {
        return PycKind::Unknown;
    }
    let flags = u32::from_le_bytes([f0, f1, f2, f3]);
    if flags & !(FLAG_HASH_BASED | FLAG_CHECK_SOURCE) != 0 {
        // CPython rejects other flags ("invalid flags"), so there is nothing to keep valid.
        PycKind::Unknown
    } else if flags & FLAG_HASH_BASED != 0 {
        PycKind::Hash
    } else {
        // As importlib's _classify_pyc: without the hash bit it is a timestamp pyc,
        // whatever the check_source bit says.
        PycKind::Timestamp {
            mtime: u32::from_le_bytes([t0, t1, t2, t3]),
            size: u32::from_le_bytes([s0, s1, s2, s3]),
        }
    }
}

/// For a timestamp pyc, returns the data with the source mtime and size replaced
/// by `source_mtime & 0xFFFF_FFFF` and `source_size & 0xFFFF_FFFF`, as importlib
/// computes them (`int(st.st_mtime) & 0xFFFFFFFF`, `st.st_size & 0xFFFFFFFF`; for a
/// negative mtime that is the low 32 bits of its two's complement, as with Python's
/// unbounded ints). Returns None when the header already matches or the data is not
/// a timestamp pyc.
pub fn normalize(data: &[u8], source_mtime: i64, source_size: u64) -> Option<Vec<u8>> {
    let PycKind::Timestamp { mtime, size } = classify(data) else {
        return None;
    };
    let want_mtime = (source_mtime as u64 & 0xFFFF_FFFF) as u32;
    let want_size = (source_size & 0xFFFF_FFFF) as u32;
    if (mtime, size) == (want_mtime, want_size) {
        return None;
    }
    let mut out = data.to_vec();
    out.get_mut(8..12)?
        .copy_from_slice(&want_mtime.to_le_bytes());
    out.get_mut(12..16)?
        .copy_from_slice(&want_size.to_le_bytes());
    Some(out)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests set up and read files directly
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    #[test]
    fn source_paths() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (
                b"/usr/lib/python3/dist-packages/yaml/__pycache__/nodes.cpython-311.pyc",
                Some(b"/usr/lib/python3/dist-packages/yaml/nodes.py"),
            ),
            (
                b"/usr/lib/python3.11/__pycache__/os.cpython-311.opt-1.pyc",
                Some(b"/usr/lib/python3.11/os.py"),
            ),
            (b"/a/__pycache__/m.cpython-311.opt-2.pyc", Some(b"/a/m.py")),
            (b"__pycache__/m.cpython-311.pyc", Some(b"m.py")),
            (b"/__pycache__/m.cpython-311.pyc", Some(b"/m.py")),
            (
                b"/usr/lib/python2.7/os.pyc",
                Some(b"/usr/lib/python2.7/os.py"),
            ),
            (b"os.pyc", Some(b"os.py")),
            (
                b"/a/not__pycache__/m.cpython-311.pyc",
                Some(b"/a/not__pycache__/m.cpython-311.py"),
            ),
            (
                b"/a/\xff\xfe/__pycache__/\xe9t\xe9.cpython-311.pyc",
                Some(b"/a/\xff\xfe/\xe9t\xe9.py"),
            ),
            // Not .pyc at all.
            (b"/a/m.py", None),
            (b"/a/m.pyo", None),
            (b"/a/m.pyc/", None),
            (b"/a/__pycache__/m.cpython-311.pyc.bak", None),
            // In __pycache__ but not a name importlib maps to a source.
            (b"/a/__pycache__/m.pyc", None),
            (b"/a/__pycache__/m.cpython-311.x.pyc", None),
            (b"/a/__pycache__/m.cpython-311.opt-.pyc", None),
            (b"/a/__pycache__/m.b.cpython-311.opt-1.pyc.pyc", None),
            // No module name before the tag: importlib maps it to `.py`, and so do we.
            (b"/a/__pycache__/.cpython-311.pyc", Some(b"/a/.py")),
        ];
        for (pyc, want) in cases {
            assert_eq!(
                source_path(pyc).as_deref(),
                *want,
                "{}",
                String::from_utf8_lossy(pyc)
            );
        }
    }

    fn header(magic: u16, flags: u32, a: u32, b: u32) -> Vec<u8> {
        let mut h = magic.to_le_bytes().to_vec();
        h.extend_from_slice(b"\r\n");
        for w in [flags, a, b] {
            h.extend_from_slice(&w.to_le_bytes());
        }
        h.extend_from_slice(b"\xe3code");
        h
    }

    #[test]
    fn classify_headers() {
        let ts = PycKind::Timestamp { mtime: 7, size: 9 };
        assert_eq!(classify(&header(3495, 0, 7, 9)), ts);
        assert_eq!(classify(&header(3390, 0, 7, 9)), ts);
        assert_eq!(classify(&header(3495, 1, 7, 9)), PycKind::Hash);
        assert_eq!(classify(&header(3495, 3, 7, 9)), PycKind::Hash);
        // Python writes flags 0 for timestamp pycs but reads bit 1 alone the same way.
        assert_eq!(classify(&header(3495, 2, 7, 9)), ts);
        assert_eq!(classify(&header(3495, 5, 7, 9)), PycKind::Unknown);
        // Python 3.6 and 2.7: no flags word.
        assert_eq!(classify(&header(3379, 0, 7, 9)), PycKind::Unknown);
        assert_eq!(classify(&header(62211, 0, 7, 9)), PycKind::Unknown);
        let mut bad = header(3495, 0, 7, 9);
        bad[3] = b'x';
        assert_eq!(classify(&bad), PycKind::Unknown);
        let full = header(3495, 0, 7, 9);
        assert_eq!(classify(&full[..16]), ts);
        for len in 0..16 {
            assert_eq!(classify(&full[..len]), PycKind::Unknown);
        }
    }

    #[test]
    fn normalize_headers() {
        let pyc = header(3495, 0, 7, 9);
        let out = normalize(&pyc, 1_700_000_000, 123).unwrap();
        assert_eq!(out, header(3495, 0, 1_700_000_000, 123));
        assert_eq!(normalize(&out, 1_700_000_000, 123), None);
        // Values wrap as Python's `& 0xFFFFFFFF` does.
        let out = normalize(&pyc, -1, (1 << 32) + 5).unwrap();
        assert_eq!(out, header(3495, 0, u32::MAX, 5));
        let out = normalize(&pyc, (1 << 32) + 3, 9).unwrap();
        assert_eq!(out, header(3495, 0, 3, 9));
        assert_eq!(normalize(&header(3495, 1, 7, 9), 0, 0), None);
        assert_eq!(normalize(&header(3379, 0, 7, 9), 0, 0), None);
        assert_eq!(normalize(b"", 0, 0), None);
    }

    /// Runs python3 in `dir` with the environment a test needs to be deterministic:
    /// bytecode writing on, and SOURCE_DATE_EPOCH only when asked for.
    fn python(dir: &Path, args: &[&str], epoch: Option<&str>) -> Output {
        let mut cmd = Command::new("python3");
        cmd.args(args)
            .current_dir(dir)
            .env("PYTHONPATH", dir)
            .env_remove("PYTHONDONTWRITEBYTECODE")
            .env_remove("PYTHONPYCACHEPREFIX")
            .env_remove("SOURCE_DATE_EPOCH");
        if let Some(e) = epoch {
            cmd.env("SOURCE_DATE_EPOCH", e);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "python3 {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Writes and compiles `mod_a.py`; returns the pyc's path.
    fn compiled(dir: &Path, epoch: Option<&str>) -> PathBuf {
        std::fs::write(dir.join("mod_a.py"), "X = 42\ndef f():\n    return X\n").unwrap();
        python(dir, &["-m", "py_compile", "mod_a.py"], epoch);
        let out = python(
            dir,
            &[
                "-c",
                "import importlib.util; print(importlib.util.cache_from_source('mod_a.py'))",
            ],
            None,
        );
        let pyc = dir.join(String::from_utf8(out.stdout).unwrap().trim());
        assert!(pyc.exists(), "{}", pyc.display());
        pyc
    }

    fn touch(path: &Path, at: &str) {
        let ok = Command::new("touch")
            .args(["-d", at])
            .arg(path)
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn import(dir: &Path) -> String {
        let out = python(
            dir,
            &["-v", "-c", "import mod_a; assert mod_a.f() == 42"],
            None,
        );
        String::from_utf8(out.stderr).unwrap()
    }

    #[test]
    fn python_uses_normalized_pyc() {
        let dir = tempfile::tempdir().unwrap();
        let pyc = compiled(dir.path(), None);
        let original = std::fs::read(&pyc).unwrap();
        assert!(matches!(classify(&original), PycKind::Timestamp { .. }));
        let source = dir.path().join("mod_a.py");
        touch(&source, "@1700000000");
        let size = std::fs::metadata(&source).unwrap().len();
        let fixed = normalize(&original, 1_700_000_000, size).unwrap();
        assert_eq!(
            classify(&fixed),
            PycKind::Timestamp {
                mtime: 1_700_000_000,
                size: size as u32
            }
        );
        std::fs::write(&pyc, &fixed).unwrap();

        let log = import(dir.path());
        let name = pyc.file_name().unwrap().to_str().unwrap();
        assert!(
            log.lines()
                .any(|l| l.contains(name) && l.contains(" matches ")),
            "python did not use the pyc:\n{log}"
        );
        assert!(!log.contains("bytecode is stale"), "{log}");
        assert_eq!(
            std::fs::read(&pyc).unwrap(),
            fixed,
            "python rewrote the pyc"
        );
    }

    #[test]
    fn python_rewrites_stale_pyc() {
        let dir = tempfile::tempdir().unwrap();
        let pyc = compiled(dir.path(), None);
        let original = std::fs::read(&pyc).unwrap();
        let source = dir.path().join("mod_a.py");
        touch(&source, "@1700000000");

        let log = import(dir.path());
        assert!(log.contains("bytecode is stale for 'mod_a'"), "{log}");
        let rewritten = std::fs::read(&pyc).unwrap();
        assert_ne!(rewritten, original, "python kept a stale pyc");
        // Python's own fresh header is exactly what normalize writes.
        let size = std::fs::metadata(&source).unwrap().len();
        let fixed = normalize(&original, 1_700_000_000, size).unwrap();
        assert_eq!(rewritten[..16], fixed[..16]);
        assert_eq!(normalize(&rewritten, 1_700_000_000, size), None);
    }

    #[test]
    fn source_date_epoch_makes_hash_pycs() {
        let dir = tempfile::tempdir().unwrap();
        let pyc = compiled(dir.path(), Some("1600000000"));
        let data = std::fs::read(&pyc).unwrap();
        assert_eq!(classify(&data), PycKind::Hash);
        assert_eq!(normalize(&data, 1_700_000_000, 1), None);
    }
}
