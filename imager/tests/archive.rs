//! Exports and imports through the real binary: determinism, GNU tar compatibility, and
//! the refusal of unsafe or damaged archives.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;
use common::{s, sample_tree, sh, Env};

#[test]
fn two_exports_are_byte_identical_and_gnu_tar_extracts_the_same_tree() {
    let env = Env::new();
    sample_tree(&env.path("src"));
    let id = env.id(&["import", s(&env.path("src")), "--name", "t"]);
    env.ok(&["export", "t", "--tar", s(&env.path("one.tar.zst"))]);
    env.ok(&["export", &id, "--tar", s(&env.path("two.tar.zst"))]);
    let one = std::fs::read(env.path("one.tar.zst")).unwrap();
    assert_eq!(
        one,
        std::fs::read(env.path("two.tar.zst")).unwrap(),
        "exports differ"
    );

    // GNU tar lists it with numeric owners and extracts it exactly.
    let list = sh("tar --zstd -tvf one.tar.zst", env.dir.path());
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("-rwsr-xr-x 0/0")
            && list.contains("1000/1001")
            && list.contains("./a/hl link to ./a/f"),
        "{list}"
    );
    std::fs::create_dir(env.path("gnu")).unwrap();
    sh(
        "tar --zstd --xattrs --xattrs-include='*' --numeric-owner -xpf one.tar.zst -C gnu",
        env.dir.path(),
    );
    assert_eq!(
        env.id(&["hash", s(&env.path("gnu"))]),
        id,
        "GNU tar's extraction differs"
    );

    // Importing the archive gives the same image; so does exporting to a directory.
    assert_eq!(env.id(&["import", s(&env.path("one.tar.zst"))]), id);
    env.ok(&["export", "t", "--dir", s(&env.path("out"))]);
    assert_eq!(env.id(&["hash", s(&env.path("out"))]), id);
    let caps = sh("getcap out/a/f", env.dir.path());
    assert!(
        String::from_utf8_lossy(&caps.stdout).contains("cap_net_raw=ep"),
        "capability lost"
    );
}

#[test]
fn names_keep_their_history() {
    let env = Env::new();
    sample_tree(&env.path("src"));
    let first = env.id(&["import", s(&env.path("src")), "--name", "base"]);
    std::fs::write(env.path("src/a/new"), "new").unwrap();
    let second = env.id(&["import", s(&env.path("src")), "--name", "base"]);
    assert_ne!(first, second);
    let hist = env.ok(&["history", "base"]);
    assert_eq!(hist, format!("{second} base\n{first} base~1\n"));
    assert!(env.ok(&["show", "base~1"]).contains(&first));
    assert!(env.ok(&["show", &first[..12]]).contains("base~1"));
    assert!(env.ok(&["ls", "base", "/a"]).contains("/a/new file"));
    assert!(!env.ok(&["ls", "base~1", "/a"]).contains("/a/new"));
    assert!(env.fails(&["show", "base~2"]).contains("only 2 image(s)"));
    assert!(env.fails(&["show", "nope"]).contains("no image \"nope\""));
    // A short prefix is not taken for a name without saying why it matched nothing.
    let short = &first[..4];
    assert!(env
        .fails(&["show", short])
        .contains("an ID prefix needs at least 8 hex digits (4 given)"));
}

#[test]
fn fsck_finds_a_corrupt_object_and_export_refuses_it() {
    let env = Env::new();
    sample_tree(&env.path("src"));
    env.ok(&["import", s(&env.path("src")), "--name", "t"]);
    assert!(env.ok(&["fsck"]).contains("0 problems"));
    // Damage the object holding "hello\n".
    let h = blake3::hash(b"hello\n").to_hex().to_string();
    let obj = env.store().join("objects").join(&h[..2]).join(&h[2..]);
    sh(
        &format!("chmod u+w {0} && printf 'HELLO\\n' > {0}", obj.display()),
        env.dir.path(),
    );
    let out = env.run(&["fsck"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("object {h} is corrupt")));
    let err = env.fails(&["export", "t", "--tar", s(&env.path("x.tar.zst"))]);
    assert!(err.contains(&h) && err.contains("corrupt"), "{err}");
    assert!(
        !env.path("x.tar.zst").exists(),
        "a failed export left its output"
    );
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let err = env.fails(&["export", "t", "--dir", s(&env.path("xd"))]);
    assert!(err.contains("corrupt"), "{err}");
    // A damaged manifest is caught too.
    let id = env
        .ok(&["history", "t"])
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    sh(
        &format!(
            "echo >> {}",
            env.store()
                .join("images")
                .join(&id)
                .join("manifest")
                .display()
        ),
        env.dir.path(),
    );
    assert!(env.fails(&["show", "t"]).contains("manifest hashes to"));
}

fn craft(env: &Env, name: &str, body: &str) -> String {
    common::craft_tar(env, name, "w", body)
}

#[test]
fn unsafe_and_damaged_archives_are_refused_with_the_path() {
    let env = Env::new();
    let cases = [
        ("dotdot.tar", "add('../escape', b'x')", "../escape"),
        ("abs.tar", "add('/etc/evil', b'x')", "absolute path"),
        (
            "undersym.tar",
            "add('./lib', type=tarfile.SYMTYPE, linkname='/etc')\nadd('./lib/passwd', b'x')",
            "/lib/passwd",
        ),
        (
            "hardout.tar",
            "add('./h', type=tarfile.LNKTYPE, linkname='../../etc/shadow')",
            "./h",
        ),
        (
            "hardlater.tar",
            "add('./h', type=tarfile.LNKTYPE, linkname='./later')\nadd('./later', b'x')",
            "not earlier in the archive",
        ),
        ("dup.tar", "add('./f', b'x')\nadd('./f', b'y')", "twice"),
        ("sparse.tar", "add('./s', type=b'S')", "unsupported"),
    ];
    for (name, body, expect) in cases {
        let path = craft(&env, name, body);
        let err = env.fails(&["import", &path]);
        assert!(
            err.contains(expect),
            "{name}: expected {expect:?} in: {err}"
        );
    }
    // Nothing of any of them reached the store or the filesystem.
    assert!(!env.dir.path().parent().unwrap().join("escape").exists());
    let images = std::fs::read_dir(env.store().join("images"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(images, 0);

    // A size field claiming 8 EiB: a clear error, not an allocation.
    let mut hdr = tar::Header::new_ustar();
    hdr.set_path("huge").unwrap();
    hdr.set_mode(0o644);
    hdr.set_uid(0);
    hdr.set_gid(0);
    hdr.set_mtime(0);
    hdr.set_size(u64::MAX >> 1);
    hdr.set_cksum();
    std::fs::write(env.path("huge.tar"), hdr.as_bytes()).unwrap();
    let err = env.fails(&["import", s(&env.path("huge.tar"))]);
    assert!(
        err.contains("huge") && err.contains("more than the limit"),
        "{err}"
    );

    // A pax header claiming a gigabyte: refused before it is read.
    let mut x = tar::Header::new_ustar();
    x.set_entry_type(tar::EntryType::XHeader);
    x.set_size(1 << 30);
    x.set_cksum();
    std::fs::write(env.path("pax.tar"), x.as_bytes()).unwrap();
    assert!(env
        .fails(&["import", s(&env.path("pax.tar"))])
        .contains("extension header"));

    // Truncated archives, compressed or not.
    sample_tree(&env.path("src"));
    env.ok(&["import", s(&env.path("src")), "--name", "t"]);
    env.ok(&["export", "t", "--tar", s(&env.path("t.tar.zst"))]);
    let full = std::fs::read(env.path("t.tar.zst")).unwrap();
    std::fs::write(env.path("cut.tar.zst"), &full[..full.len() - 40]).unwrap();
    env.fails(&["import", s(&env.path("cut.tar.zst"))]);
    sh(
        "zstd -qdc t.tar.zst | head -c 2048 > cut.tar",
        env.dir.path(),
    );
    assert!(env
        .fails(&["import", s(&env.path("cut.tar"))])
        .contains("truncated"));
}

/// An export into a directory that fails half-way (here a damaged object) leaves
/// nothing: the directory it made is gone, an empty one it was given is empty again.
#[test]
fn a_failed_directory_export_leaves_nothing_behind() {
    let env = Env::new();
    sample_tree(&env.path("src"));
    std::fs::write(env.path("src/big"), vec![7u8; 300_000]).unwrap();
    env.id(&["import", s(&env.path("src")), "--name", "t"]);
    // Damage one object: the export reads it and fails on its hash.
    let hex = blake3::hash(&vec![7u8; 300_000]).to_hex().to_string();
    let obj = env.store().join("objects").join(&hex[..2]).join(&hex[2..]);
    let mut bytes = std::fs::read(&obj).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    sh(&format!("chmod u+w '{}'", obj.display()), env.dir.path());
    std::fs::write(&obj, bytes).unwrap();
    let out = env.path("out");
    let e = env.fails(&["export", "t", "--dir", s(&out)]);
    assert!(!e.is_empty());
    assert!(
        !out.exists(),
        "a partial tree was left in {}",
        out.display()
    );
    std::fs::create_dir(&out).unwrap();
    env.fails(&["export", "t", "--dir", s(&out)]);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}

/// One damaged name does not break the commands that show names; fsck reports it, and
/// an empty one too.
#[test]
fn a_malformed_or_empty_ref_breaks_nothing_and_fsck_reports_it() {
    let env = Env::new();
    sample_tree(&env.path("src"));
    let id = env.id(&["import", s(&env.path("src")), "--name", "t"]);
    let refs = env.store().join("refs");
    std::fs::write(refs.join("broken"), "not an image id\n").unwrap();
    std::fs::write(refs.join("empty"), "").unwrap();
    assert!(env.ok(&["show", &id]).contains('t'));
    env.ok(&["diff", "t", &id]);
    let out = env.run(&["fsck"]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("ref broken: "), "{text}");
    assert!(
        text.contains("ref empty: empty (it names no image)"),
        "{text}"
    );
}
