#![allow(clippy::disallowed_methods)] // tests set up and read files directly

use super::*;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn text(seed: &str, lines: usize) -> Vec<u8> {
    (0..lines)
        .map(|i| format!("{seed} line {i}: the quick brown fox {}\n", i * i % 97))
        .collect::<String>()
        .into_bytes()
}

fn run(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> (bool, Vec<u8>) {
    let mut child = Command::new("gzip")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (out.status.success(), out.stdout)
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run(dir.path(), &["-dc"], Some(bytes));
    assert!(ok, "gzip -dc failed");
    out
}

fn gzip_test(bytes: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &["-t"], Some(bytes)).0
}

/// Compresses `content` as file `name` with real gzip, keeping name and mtime;
/// returns (the .gz bytes, what `gzip -n -c` makes of the same file).
fn real_gzip(dir: &Path, name: &str, content: &[u8]) -> (Vec<u8>, Vec<u8>) {
    std::fs::write(dir.join(name), content).unwrap();
    let touched = Command::new("touch")
        .args(["-d", "@1600000000", name])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(touched.success());
    assert!(run(dir, &["-k", "-f", name], None).0);
    let named = std::fs::read(dir.join(format!("{name}.gz"))).unwrap();
    let (ok, plain) = run(dir, &["-n", "-c", name], None);
    assert!(ok);
    (named, plain)
}

fn deflate(content: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
    e.write_all(content).unwrap();
    e.finish().unwrap()
}

fn trailer(content: &[u8]) -> Vec<u8> {
    let mut crc = Crc::new();
    crc.update(content);
    let mut t = crc.sum().to_le_bytes().to_vec();
    t.extend_from_slice(&(content.len() as u32).to_le_bytes());
    t
}

/// A member built by hand, with the optional fields RFC 1952 allows.
fn member(
    content: &[u8],
    mtime: u32,
    extra: Option<&[u8]>,
    name: Option<&[u8]>,
    comment: Option<&[u8]>,
    hcrc: bool,
) -> Vec<u8> {
    let mut flags = 0;
    let mut h = vec![0x1f, 0x8b, 8, 0];
    h.extend_from_slice(&mtime.to_le_bytes());
    h.extend_from_slice(&[0, 3]);
    if let Some(x) = extra {
        flags |= FEXTRA;
        h.extend_from_slice(&(x.len() as u16).to_le_bytes());
        h.extend_from_slice(x);
    }
    for (flag, field) in [(FNAME, name), (FCOMMENT, comment)] {
        if let Some(f) = field {
            flags |= flag;
            h.extend_from_slice(f);
            h.push(0);
        }
    }
    if hcrc {
        flags |= FHCRC;
    }
    h[3] = flags;
    if hcrc {
        let crc = crc16(&h);
        h.extend_from_slice(&crc.to_le_bytes());
    }
    h.extend_from_slice(&deflate(content));
    h.extend_from_slice(&trailer(content));
    h
}

#[test]
fn real_gzip_output_becomes_gzip_n_output() {
    let dir = tempfile::tempdir().unwrap();
    let content = text("foo", 2000);
    let (named, plain) = real_gzip(dir.path(), "foo.txt", &content);
    assert_ne!(named[3] & FNAME, 0, "gzip -k should store the name");
    assert_eq!(&named[4..8], &1_600_000_000u32.to_le_bytes());
    assert_eq!(&plain[4..8], &[0; 4], "gzip -n should store MTIME 0");

    let out = normalize(&named, 0).unwrap().unwrap();
    assert_eq!(&out[4..8], &[0; 4]);
    assert_eq!(out[3] & FNAME, 0);
    assert_eq!(gunzip(&out), content);
    // Same gzip, same level: same XFL, OS and deflate stream, so once the name
    // and MTIME are gone the bytes match `gzip -n` exactly.
    assert_eq!(out, plain);
    assert_eq!(normalize(&plain, 0).unwrap(), None);
}

#[test]
fn every_level_matches_gzip_n() {
    // XFL depends on the level (2 for -9, 4 for -1), so compare at several.
    let dir = tempfile::tempdir().unwrap();
    let content = text("lvl", 500);
    std::fs::write(dir.path().join("l.txt"), &content).unwrap();
    for level in ["-1", "-6", "-9"] {
        let (ok, named) = run(dir.path(), &[level, "-N", "-c", "l.txt"], None);
        assert!(ok);
        let (ok, plain) = run(dir.path(), &[level, "-n", "-c", "l.txt"], None);
        assert!(ok);
        assert_eq!(
            normalize(&named, 0).unwrap().unwrap(),
            plain,
            "level {level}"
        );
    }
}

#[test]
fn multi_member() {
    let dir = tempfile::tempdir().unwrap();
    let a = text("a", 300);
    let b = text("b", 4000);
    let (a_named, a_plain) = real_gzip(dir.path(), "a.txt", &a);
    let (b_named, b_plain) = real_gzip(dir.path(), "b.txt", &b);
    let both = [a_named.clone(), b_named.clone()].concat();
    let out = normalize(&both, 0).unwrap().unwrap();
    assert_eq!(out, [a_plain.clone(), b_plain.clone()].concat());
    assert_eq!(gunzip(&out), [a.clone(), b.clone()].concat());
    assert_eq!(normalize(&out, 0).unwrap(), None);

    // Only a later member needs rewriting: the earlier one is copied as it is.
    let mixed = [a_plain.clone(), b_named, a_named].concat();
    let out = normalize(&mixed, 0).unwrap().unwrap();
    assert_eq!(out, [a_plain.clone(), b_plain, a_plain].concat());
    assert_eq!(gunzip(&out), [a.clone(), b, a].concat());
}

#[test]
fn header_crc_is_recomputed() {
    let content = text("hcrc", 100);
    let m = member(&content, 12345, None, Some(b"x.txt"), None, true);
    assert!(gzip_test(&m), "hand-made member should be valid");
    let out = normalize(&m, 0).unwrap().unwrap();
    assert_eq!(out, member(&content, 0, None, None, None, true));
    assert!(gzip_test(&out));
    assert_eq!(gunzip(&out), content);

    let mut bad = m.clone();
    let at = 10 + b"x.txt\0".len();
    bad[at] ^= 1;
    assert!(matches!(
        normalize(&bad, 0),
        Err(GzipError::HeaderCrcMismatch { member: 0, offset, .. }) if offset == at
    ));
}

#[test]
fn comment_and_extra_are_kept() {
    let content = text("extra", 50);
    let extra: &[u8] = b"AB\x04\x00wxyz";
    let m = member(
        &content,
        7,
        Some(extra),
        Some(b"n"),
        Some(b"a comment"),
        true,
    );
    assert!(gzip_test(&m));
    let out = normalize(&m, 0).unwrap().unwrap();
    let want = member(&content, 0, Some(extra), None, Some(b"a comment"), true);
    assert_eq!(out, want);
    assert!(gzip_test(&out));
    assert_eq!(gunzip(&out), content);
    // Without FHCRC, and only the MTIME to change.
    let m = member(&content, 7, Some(extra), None, Some(b"c"), false);
    let out = normalize(&m, 0).unwrap().unwrap();
    assert_eq!(
        out,
        member(&content, 0, Some(extra), None, Some(b"c"), false)
    );
    // Other MTIMEs can be asked for.
    assert_eq!(normalize(&m, 7).unwrap(), None);
}

#[test]
fn idempotent() {
    let content = text("idem", 100);
    let m = member(&content, 99, None, Some(b"idem.txt"), None, false);
    let once = normalize(&m, 0).unwrap().unwrap();
    assert_eq!(normalize(&once, 0).unwrap(), None);
    let empty = member(b"", 0, None, None, None, false);
    assert_eq!(normalize(&empty, 0).unwrap(), None);
}

#[test]
fn every_truncation_is_an_error() {
    let content = text("short", 20);
    let m = [
        member(
            &content,
            5,
            Some(b"XY\x01\x00z"),
            Some(b"s"),
            Some(b"c"),
            true,
        ),
        member(b"tail", 5, None, Some(b"t"), None, false),
    ]
    .concat();
    assert!(normalize(&m, 0).unwrap().is_some());
    let first_end = m.len() - member(b"tail", 5, None, Some(b"t"), None, false).len();
    for len in 0..m.len() {
        // Cutting exactly between members leaves a valid one-member file.
        if len == first_end {
            continue;
        }
        assert!(normalize(&m[..len], 0).is_err(), "prefix of {len} bytes");
    }
    assert_eq!(normalize(&[], 0), Err(GzipError::NotGzip));
    assert!(matches!(
        normalize(&m[..5], 0),
        Err(GzipError::Truncated {
            member: 0,
            reading: "header",
            ..
        })
    ));
    assert!(matches!(
        normalize(&m[..first_end - 20], 0),
        Err(GzipError::Truncated {
            member: 0,
            reading: "deflate data",
            ..
        })
    ));
    assert!(matches!(
        normalize(&m[..first_end - 3], 0),
        Err(GzipError::Truncated {
            member: 0,
            reading: "CRC32/ISIZE trailer",
            ..
        })
    ));
    assert!(matches!(
        normalize(&m[..first_end + 11], 0),
        Err(GzipError::Truncated {
            member: 1,
            reading: "FNAME field",
            ..
        })
    ));
}

#[test]
fn damaged_trailers_and_data_are_errors() {
    let content = text("crc", 100);
    let m = member(&content, 5, None, None, None, false);
    let n = m.len();
    let mut bad = m.clone();
    bad[n - 8] ^= 0x80;
    assert!(matches!(
        normalize(&bad, 0),
        Err(GzipError::TrailerMismatch { field: "CRC32", offset, .. }) if offset == n - 8
    ));
    let mut bad = m.clone();
    bad[n - 1] ^= 0x01;
    assert!(matches!(
        normalize(&bad, 0),
        Err(GzipError::TrailerMismatch { field: "ISIZE", .. })
    ));
    let mut bad = m.clone();
    bad[2] = 7;
    assert!(normalize(&bad, 0).is_err());
    let mut bad = m.clone();
    bad[3] = 0x20;
    assert!(matches!(
        normalize(&bad, 0),
        Err(GzipError::ReservedFlags { flags: 0x20, .. })
    ));
    // Block type 3 is invalid deflate.
    let mut bad = m.clone();
    bad[10] = 0x07;
    assert!(matches!(
        normalize(&bad, 0),
        Err(GzipError::BadDeflate {
            member: 0,
            offset: 10,
            ..
        })
    ));
    let second = [m.clone(), m.clone()].concat();
    let mut bad = second.clone();
    bad[n + 2] = 9;
    assert_eq!(
        normalize(&bad, 0),
        Err(GzipError::BadMethod {
            member: 1,
            offset: n + 2,
            method: 9
        })
    );
}

/// Whatever a damaged file holds, normalising never panics, and whenever it rewrites
/// one the result is stable and decompresses to exactly what the input did.
#[test]
fn single_byte_changes_never_panic_and_never_change_content() {
    let content = text("fuzz", 30);
    let m = [
        member(
            &content,
            5,
            Some(b"ab\x00\x00"),
            Some(b"n"),
            Some(b"c"),
            true,
        ),
        member(b"x", 0, None, None, None, false),
    ]
    .concat();
    for i in 0..m.len() {
        for flip in [0x01, 0x10, 0x80, 0xff] {
            let mut bad = m.clone();
            bad[i] ^= flip;
            if let Ok(Some(out)) = normalize(&bad, 0) {
                assert_eq!(normalize(&out, 0), Ok(None), "byte {i} ^ {flip:#x}");
                let inflate = |b: &[u8]| {
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(b), &mut v)
                        .map(|_| v)
                        .ok()
                };
                assert!(
                    inflate(&bad).is_some(),
                    "byte {i} ^ {flip:#x} accepted a damaged file"
                );
                assert_eq!(inflate(&out), inflate(&bad), "byte {i} ^ {flip:#x}");
            }
        }
    }
}

#[test]
fn trailing_bytes() {
    let content = text("pad", 10);
    let m = member(&content, 5, None, Some(b"p"), None, false);
    let padded = [m.clone(), vec![0; 512]].concat();
    let out = normalize(&padded, 0).unwrap().unwrap();
    assert_eq!(
        out,
        [member(&content, 0, None, None, None, false), vec![0; 512]].concat()
    );
    assert_eq!(normalize(&out, 0).unwrap(), None);

    let garbage = [m.clone(), vec![0, 0, 1]].concat();
    assert_eq!(
        normalize(&garbage, 0),
        Err(GzipError::TrailingGarbage {
            offset: m.len(),
            len: 3
        })
    );
    let half_magic = [m.clone(), vec![0x1f]].concat();
    assert!(matches!(
        normalize(&half_magic, 0),
        Err(GzipError::TrailingGarbage { .. })
    ));
}

#[test]
fn member_limit() {
    let one = member(b"", 0, None, None, None, false);
    let many = one.repeat(MAX_MEMBERS);
    assert_eq!(normalize(&many, 0).unwrap(), None);
    let too_many = one.repeat(MAX_MEMBERS + 1);
    assert_eq!(
        normalize(&too_many, 0),
        Err(GzipError::TooManyMembers { limit: MAX_MEMBERS })
    );
}
