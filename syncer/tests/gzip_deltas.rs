//! Gzip-aware deltas on gzip files made every way a host meets them: GNU `gzip -9n` (what
//! Debian ships) and `-1n`, pigz, zlib at three levels, a header with a name, comment,
//! extra field and header CRC, two members, trailing bytes, and a `.gz` that is no gzip
//! file. Pushed from one version to the next onto a `local:` host, every file ends exact,
//! rebuilt through its gzip-aware patch or sent another way; a damaged patch never makes
//! a file that passes for the new one.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// Writes the two versions of every variant under `dir/v1` and `dir/v2`: the same
/// changelog-like text, the second with a new entry at its top, compressed the variant's
/// way (Python's zlib and gzip header code for what the command-line tools do not make).
fn make_variants(dir: &Path) {
    let script = r#"
import gzip, os, struct, subprocess, sys, zlib
out = sys.argv[1]
def text(extra, n):
    s = extra
    for i in range(n):
        s += "pkg (1.%d-1) bookworm; urgency=medium\n\n  * Fix number %d of the many (CVE-2024-%05d).\n\n -- Maintainer <m@example.org>  Mon, %02d Jan 2024 10:00:00 +0000\n\n" % (i, i, i * 7, i % 28 + 1)
    return s.encode()
def tool(args, data):
    return subprocess.run(args, input=data, stdout=subprocess.PIPE, check=True).stdout
def zlib_gzip(data, level, flags=0, fields=b""):
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    body = c.compress(data) + c.flush()
    head = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\x03" + fields
    if flags & 2:
        head += struct.pack("<H", zlib.crc32(head) & 0xffff)
    return head + body + struct.pack("<II", zlib.crc32(data) & 0xffffffff, len(data) & 0xffffffff)
variants = {
    "gnu-9n.gz": lambda t: tool(["gzip", "-9n", "-c"], t),
    "gnu-1n.gz": lambda t: tool(["gzip", "-1n", "-c"], t),
    "pigz.gz": lambda t: tool(["pigz", "-9n", "-c", "-b", "32", "-p", "2"], t),
    "zlib-1.gz": lambda t: zlib_gzip(t, 1),
    "zlib-6.gz": lambda t: zlib_gzip(t, 6),
    "zlib-9.gz": lambda t: zlib_gzip(t, 9),
    "fields.gz": lambda t: zlib_gzip(t, 9, 4 | 8 | 16 | 2,
        struct.pack("<H", 6) + b"AB\x02\0xy" + b"changelog\0" + b"a comment\0"),
    "two-members.gz": lambda t: tool(["gzip", "-9n", "-c"], t[: len(t) // 2])
        + tool(["gzip", "-9n", "-c"], t[len(t) // 2 :]),
    "trailing.gz": lambda t: tool(["gzip", "-9n", "-c"], t) + b"\0\0\0\0trailing bytes",
    "not-gzip.gz": lambda t: t,
}
for v, extra in (("v1", ""), ("v2", "pkg (2.0-1) bookworm-security; urgency=high\n\n  * New upstream release.\n\n")):
    d = os.path.join(out, v, "usr", "share", "doc", "pkg")
    os.makedirs(d, exist_ok=True)
    # Where the agent keeps its record: in the image, as on a real root.
    os.makedirs(os.path.join(out, v, "var", "lib"), exist_ok=True)
    t = text(extra, 1500)
    for name, make in variants.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(make(t))
"#;
    let st = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success(), "making the gzip variants");
}

#[test]
fn gzip_files_made_every_way_end_exact_and_the_common_ones_travel_as_their_text_change() {
    let t = scratch("gzip-deltas-");
    make_variants(t.path());
    let store = t.path().join("store");
    let v1 = import(&store, &t.path().join("v1"), "v1");
    let v2 = import(&store, &t.path().join("v2"), "v2");
    let h = t.path().join("host");
    std::fs::create_dir_all(&h).unwrap();
    let hs = format!("local:{}", h.display());
    push(&store, "v1", &hs, &[]);
    assert_host_is(&h, &store, &v1);

    // At a `local:` host's default level (1) no file gets a gzip-aware candidate: on a
    // pipe the agent's deflate rebuilds cost more time than the bytes they save. The
    // host still ends exact.
    let fast = push(&store, "v2", &hs, &[]);
    assert_host_is(&h, &store, &v2);
    assert_eq!(fast["sent"]["gzip_delta"]["files"], 0, "{fast:#}");
    assert!(
        fast["sent"]["bsdiff"]["files"].as_u64().unwrap() >= 7,
        "{fast:#}"
    );
    // The files the last two commits wrote are not hashed again: the agent took them
    // as they left them.
    let back = push(&store, "v1", &hs, &[]);
    assert_host_is(&h, &store, &v1);
    assert_eq!(back["scan"]["hashed_files"], 0, "{back:#}");

    // From level 4 on they do. The plan, path by path (a dry run lists it), then the
    // push.
    let dry = push(&store, "v2", &hs, &["--dry-run", "--level", "9"]);
    let r = push(&store, "v2", &hs, &["--level", "9"]);
    assert_host_is(&h, &store, &v2);
    let via = |name: &str| -> serde_json::Value {
        let p = format!("/usr/share/doc/pkg/{name}");
        dry["paths"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == p.as_str())
            .unwrap_or_else(|| panic!("{p} not in the report:\n{dry:#}"))
            .clone()
    };
    // What Debian ships, zlib's streams and the odd containers around them: a patch of
    // the text, far smaller than bsdiff's of the compressed bytes.
    for name in [
        "gnu-9n.gz",
        "gnu-1n.gz",
        "zlib-6.gz",
        "zlib-9.gz",
        "fields.gz",
        "two-members.gz",
        "trailing.gz",
    ] {
        let p = via(name);
        assert_eq!(p["via"], "gzip delta", "{name}: {p:#}");
        let c = &p["candidates"];
        let (g, b) = (c["gzip"].as_u64().unwrap(), c["bsdiff"].as_u64().unwrap());
        assert!(g * 2 < b, "{name}: gzip-aware {g} bytes, bsdiff {b}: {p:#}");
    }
    // Every other file still has its candidates and ends exact (checked above); the
    // one that is no gzip file has no gzip-aware candidate.
    for name in ["pigz.gz", "zlib-1.gz"] {
        assert!(via(name)["candidates"]["bsdiff"].is_u64(), "{name}");
    }
    assert!(
        via("not-gzip.gz")["candidates"]["gzip"].is_null(),
        "{dry:#}"
    );
    assert!(
        r["sent"]["gzip_delta"]["files"].as_u64().unwrap() >= 7,
        "{r:#}"
    );

    // The delta cache keeps the gzip-aware patches checksummed, and `cache verify`
    // decodes each against its base: all good; one damaged is named.
    let cache = store.join("syncer-cache");
    let gz: Vec<std::path::PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".gzip2.L"))
        .collect();
    assert!(gz.len() >= 7, "{gz:?}");
    let out = run(&store, &["cache", "verify", "--json"]);
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{v:#}");
    assert!(v["good"].as_u64().unwrap() >= gz.len() as u64, "{v:#}");
    let mut bytes = std::fs::read(&gz[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x04;
    std::fs::write(&gz[0], &bytes).unwrap();
    let out = run(&store, &["cache", "verify", "--json"]);
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    assert_eq!(v["bad"][0]["file"], gz[0].display().to_string(), "{v:#}");

    // And back: the old versions are made from the new the same way.
    let back = push(&store, "v1", &hs, &["--level", "9"]);
    assert_host_is(&h, &store, &v1);
    assert!(
        back["sent"]["gzip_delta"]["files"].as_u64().unwrap() >= 7,
        "{back:#}"
    );
}

/// A damaged gzip-aware patch, or one that declares a terabyte of text, sent to a real
/// agent: refused with a message that names the file, and the host keeps its old file.
#[test]
fn a_damaged_or_oversized_gzip_aware_patch_is_refused_and_the_host_keeps_its_file() {
    use syncer::encoding::{gzip, Encoding};
    let t = scratch("gzip-damage-");
    make_variants(t.path());
    let root = t.path().join("v1");
    let store = t.path().join("store");
    let id = import(&store, &t.path().join("v2"), "v2");
    let file = "usr/share/doc/pkg/gnu-9n.gz";
    let read = |d: &Path| std::fs::read(d.join(file)).unwrap();
    let raw = gzip::diff(&read(&root), &read(&t.path().join("v2"))).unwrap();
    // The new text's length is the 8 bytes after the magic `SGZ2`.
    let put = (file, Encoding::GzipDelta);
    assert_patches_refused(&root, (&store, id), put, &raw, 4, "gzip-aware delta");
}

#[test]
fn a_damaged_gzip_aware_patch_never_makes_the_new_file() {
    use syncer::encoding::gzip;
    let t = scratch("gzip-flips-");
    make_variants(t.path());
    let d = |v: &str, n: &str| {
        std::fs::read(t.path().join(v).join("usr/share/doc/pkg").join(n)).unwrap()
    };
    for name in ["gnu-9n.gz", "two-members.gz", "fields.gz"] {
        let (old, new) = (d("v1", name), d("v2", name));
        let raw = gzip::diff(&old, &new).unwrap();
        assert_eq!(gzip::patched(&old, &raw, new.len() as u64).unwrap(), new);
        // Forty bytes spread over the patch (its segments, reconstruction data and text
        // delta), each flipped in turn: the patch fails, or what it makes is not the new
        // file (which the agent's hash check then refuses).
        for at in (0..raw.len()).step_by(raw.len() / 40 + 1) {
            let mut bad = raw.clone();
            bad[at] ^= 0x21;
            if let Ok(out) = gzip::patched(&old, &bad, new.len() as u64) {
                assert_ne!(out, new, "{name}: byte {at} flipped still made the file");
            }
        }
    }
}
