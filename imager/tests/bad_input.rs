//! Bad input to import and export through the real binary: archives built to exhaust
//! memory, owners and xattr names no host can be given, terminal escapes in error text,
//! and a failed import into a store that did not exist yet.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;
use common::{craft_tar as craft, s, sh, Env};
use std::process::Command;

/// Records a hand-written manifest in the store as an image, as a damaged or foreign
/// store would hold it; returns its ID.
fn put_manifest(env: &Env, text: &str) -> String {
    env.ok(&["import", s(&env.path("empty"))]);
    let id = blake3::hash(text.as_bytes()).to_hex().to_string();
    let dir = env.store().join("images").join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("manifest"), text).unwrap();
    id
}

const MIB: usize = 1 << 20;

#[test]
fn normalize_import_of_many_large_gzip_and_pyc_members_keeps_memory_bounded() {
    let env = Env::new();
    // 48 members of 16 MiB that look like gzip (or are named .pyc): 768 MiB of content
    // in an archive of about a megabyte, then a real gzip file. All-zero bodies, so the store keeps one object.
    let archive = craft(
        &env,
        "bomb.tar.gz",
        "w:gz",
        &format!(
            "gz = b'\\x1f\\x8b\\x08' + bytes({size})\n\
             for i in range(40):\n    add('./g%02d.gz' % i, gz)\n\
             for i in range(8):\n    add('./p%02d.pyc' % i, bytes({pyc}))\n\
             import gzip\nreal = gzip.compress(b'hello\\n' * 1000, mtime=123)\n\
             open('real.gz', 'wb').write(real)\nadd('./real.gz', real)\n",
            size = 16 * MIB - 3,
            pyc = 16 * MIB
        ),
    );
    assert!(std::fs::metadata(&archive).unwrap().len() < 4 * MIB as u64);
    let (out, peak_mib) =
        env.run_measured(&["import", "--normalize", "--epoch", "1700000000", &archive]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "import failed: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Everything held at once would be 768 MiB and more; the bound is half of that.
    assert!(
        peak_mib < 384,
        "import --normalize peaked at {peak_mib} MiB for 768 MiB of candidates"
    );
    // The spilled members left nothing behind, and the image is complete.
    let tmp: Vec<_> = std::fs::read_dir(env.store().join("tmp"))
        .unwrap()
        .flatten()
        .collect();
    assert!(tmp.is_empty(), "left in tmp/: {tmp:?}");
    let id = report.lines().next().unwrap().to_string();
    let ls = env.ok(&["ls", &id]);
    assert_eq!(ls.matches(" file ").count(), 49, "{ls}");
    // The last member came after the in-memory limit: it was normalised all the same
    // (its header's MTIME zeroed).
    let mut real = std::fs::read(env.path("real.gz")).unwrap();
    real[4..8].fill(0);
    let want = blake3::hash(&real).to_hex().to_string();
    assert!(
        ls.lines()
            .any(|l| l.starts_with("/real.gz ") && l.contains(&want)),
        "{ls}"
    );
}

#[test]
fn uid_or_gid_minus_one_is_refused_from_a_tar_and_from_a_manifest() {
    let env = Env::new();
    std::fs::create_dir(env.path("empty")).unwrap();
    for (name, field) in [("uid.tar", "uid"), ("gid.tar", "gid")] {
        let path = craft(
            &env,
            name,
            "w",
            &format!(
                "add('./etc', type=tarfile.DIRTYPE)\nadd('./etc/f', b'x', {field}=4294967295)"
            ),
        );
        let err = env.fails(&["import", &path]);
        assert!(
            err.contains("/etc/f") && err.contains(&format!("{field} 4294967295")),
            "{name}: {err}"
        );
    }
    // A manifest (a store's own, or one sent to a host) is refused with its line.
    let text = "#imager-manifest v1\n/ dir mode=0755 uid=0 gid=0 mtime=0\n\
                /d dir mode=0755 uid=4294967295 gid=0 mtime=0\n";
    let id = put_manifest(&env, text);
    let err = env.fails(&["export", &id, "--dir", s(&env.path("out"))]);
    assert!(
        err.contains(":3:") && err.contains("/d") && err.contains("uid 4294967295"),
        "{err}"
    );
}

#[test]
fn xattr_name_with_equals_is_refused_at_import_and_export() {
    let env = Env::new();
    std::fs::create_dir(env.path("empty")).unwrap();
    sh(
        "mkdir -p src/a && echo x > src/a/f && setfattr -n 'user.a=b' -v v src/a/f",
        env.dir.path(),
    );
    let err = env.fails(&["import", s(&env.path("src"))]);
    assert!(
        err.contains("/a/f") && err.contains("user.a=b") && err.contains('='),
        "{err}"
    );
    let images = std::fs::read_dir(env.store().join("images")).map_or(0, |d| d.count());
    assert_eq!(images, 0, "the directory was imported");

    // An image that holds one anyway (made by hand) is not exported to a tar, whose pax
    // key `SCHILY.xattr.user.a=b` would read back as the attribute `user.a`.
    let text = "#imager-manifest v1\n/ dir mode=0755 uid=0 gid=0 mtime=0 xattr.user.a\\x3db=76\n";
    let id = put_manifest(&env, text);
    let out = env.path("x.tar.zst");
    let err = env.fails(&["export", &id, "--tar", s(&out)]);
    assert!(err.contains("user.a=b"), "{err}");
    assert!(!out.exists(), "the archive was written");
}

#[test]
fn terminal_escapes_in_a_tar_error_are_escaped() {
    let env = Env::new();
    // A header whose uid field (and name) hold terminal control sequences: the tar
    // crate's error quotes both.
    let mut h = tar::Header::new_ustar();
    h.set_path("evil\x1b]0;owned\x07").unwrap();
    h.set_mode(0o644);
    h.set_size(0);
    h.set_mtime(0);
    h.set_gid(0);
    h.as_old_mut().uid.copy_from_slice(b"\x1b[2J\x1b[m\0");
    h.set_cksum();
    let mut data = h.as_bytes().to_vec();
    data.extend([0u8; 1024]);
    std::fs::write(env.path("esc.tar"), data).unwrap();
    let out = env.run(&["import", s(&env.path("esc.tar"))]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.stderr.iter().any(|&b| b == 0x1b || b == 0x07),
        "raw control bytes on stderr: {err:?}"
    );
    assert!(err.contains("evil") && err.contains("\\x1b"), "{err}");
}

#[test]
fn a_failed_import_into_a_missing_store_leaves_no_store() {
    let env = Env::new();
    std::fs::write(env.path("corrupt.tar"), vec![0x55u8; 4096]).unwrap();
    for src in ["does-not-exist.tar", "corrupt.tar"] {
        let err = env.fails(&["import", s(&env.path(src))]);
        assert!(err.contains(src), "{err}");
        assert!(
            !env.store().exists(),
            "a failed import of {src} created the store"
        );
    }
    // Below a missing parent too: nothing of the path is left.
    let deep = env.path("a/b/store");
    let out = Command::new(env!("CARGO_BIN_EXE_imager"))
        .args(["--store", s(&deep), "--quiet", "import", "nope.tar"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!env.path("a").exists(), "the store's parents were left");

    // A store that exists keeps what it has; a successful import makes a new one.
    std::fs::create_dir(env.path("src")).unwrap();
    std::fs::write(env.path("src/f"), "x").unwrap();
    let id = env.id(&["import", s(&env.path("src")), "--name", "t"]);
    env.fails(&["import", s(&env.path("corrupt.tar"))]);
    assert!(env.ok(&["history", "t"]).contains(&id));
}
