//! Normalisation on files made by the real tools: `gzip` (which stores the name and
//! mtime) and `python3 -m py_compile` (timestamp-based pycs), checked with `gzip` and the
//! real interpreter afterwards; and its bounds: memory with many large files to rewrite,
//! and files too large to read reported rather than passed over.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;
use common::{s, sh, Env};
use std::io::Write;
use std::path::Path;

const EPOCH: &str = "1700000000";
const MIB: usize = 1 << 20;

/// A small tree whose build noise is a function of `label` and the wall clock.
fn build(root: &Path, label: &str) {
    std::fs::create_dir_all(root.join("pkg/__pycache__")).unwrap();
    let script = format!(
        "set -e
         seq 1 2000 > notes-{label}.txt && gzip -9 notes-{label}.txt && mv notes-{label}.txt.gz notes.txt.gz
         (seq 1 10; echo one) > m1 && (seq 1 10; echo two) > m2 && gzip m1 m2 && cat m1.gz m2.gz > multi.gz && rm m1.gz m2.gz
         printf 'VALUE = 42\\n' > pkg/mod_a.py
         env -u SOURCE_DATE_EPOCH python3 -m py_compile pkg/mod_a.py
         touch -d @$(( {EPOCH} + 1000 + $(shuf -i 0-999 -n 1) )) pkg/mod_a.py"
    );
    sh(&script, root);
}

#[test]
fn gzip_and_pyc_from_real_tools_normalise_to_the_same_image() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    build(&a, "first");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build(&b, "second");
    assert_ne!(
        env.id(&["hash", s(&a)]),
        env.id(&["hash", s(&b)]),
        "the two builds should differ before normalising"
    );
    // hash --normalize predicts what normalize does in place.
    let predicted = env.id(&["hash", s(&a), "--normalize", "--epoch", EPOCH]);
    let report = env.ok(&["normalize", s(&a), "--epoch", EPOCH, "--verbose"]);
    assert!(report.contains("2 gzip headers, 1 pyc headers"), "{report}");
    env.ok(&["normalize", s(&b), "--epoch", EPOCH]);
    let id = env.id(&["hash", s(&a)]);
    assert_eq!(id, predicted);
    assert_eq!(id, env.id(&["hash", s(&b)]), "normalised builds differ");
    // Idempotent: a second pass changes nothing.
    assert!(env.ok(&["normalize", s(&a), "--epoch", EPOCH]).contains(
        "0 mtimes set, 0 mtimes kept from the previous image, 0 gzip headers, 0 pyc headers"
    ));

    // gzip: MTIME 0 and no name in every member, same decompressed bytes.
    let gz = std::fs::read(a.join("notes.txt.gz")).unwrap();
    assert_eq!(&gz[4..8], &[0, 0, 0, 0], "MTIME not cleared");
    assert_eq!(gz[3] & 0x08, 0, "FNAME still set");
    let out = sh(
        "gzip -dc notes.txt.gz | cmp - /dev/stdin <<EOF\n$(seq 1 2000)\nEOF",
        &a,
    );
    assert!(out.status.success());
    let multi = sh("gzip -dc multi.gz", &a);
    assert_eq!(
        String::from_utf8_lossy(&multi.stdout),
        "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\none\n1\n2\n3\n4\n5\n6\n7\n8\n9\n10\ntwo\n"
    );
    sh("gzip -t multi.gz notes.txt.gz", &a);

    // pyc: Python uses it as it is (its verbose import says "matches") and leaves it alone.
    let pyc = a.join("pkg/__pycache__/mod_a.cpython-311.pyc");
    let pyc = if pyc.exists() {
        pyc
    } else {
        std::fs::read_dir(a.join("pkg/__pycache__"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
    };
    let before = std::fs::read(&pyc).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-v", "-c", "import pkg.mod_a as m; assert m.VALUE == 42"])
        .current_dir(&a)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("mod_a") && l.contains("matches")),
        "python recompiled:\n{stderr}"
    );
    assert_eq!(
        std::fs::read(&pyc).unwrap(),
        before,
        "python rewrote the pyc"
    );
}

#[test]
fn import_normalises_directories_and_archives_alike() {
    let env = Env::new();
    let a = env.path("a");
    build(&a, "x");
    env.ok(&["import", s(&a), "--name", "raw"]);
    env.ok(&["export", "raw", "--tar", s(&env.path("raw.tar.zst"))]);
    let from_dir = env.id(&["import", s(&a), "--normalize", "--epoch", EPOCH]);
    let from_tar = env.id(&[
        "import",
        s(&env.path("raw.tar.zst")),
        "--normalize",
        "--epoch",
        EPOCH,
    ]);
    assert_eq!(from_dir, from_tar);
    assert_eq!(
        from_dir,
        env.id(&["hash", s(&a), "--normalize", "--epoch", EPOCH])
    );
}

#[test]
fn unchanged_entries_keep_the_previous_images_mtime() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    sh(
        "echo same > same && echo old > changed && touch -d @1800000000 same changed .",
        &src,
    );
    env.ok(&[
        "import",
        s(&src),
        "--name",
        "app",
        "--normalize",
        "--epoch",
        "1000",
    ]);
    // The next build: same content for `same` but a new mtime, new content for `changed`.
    sh(
        "echo new > changed && touch -d @1900000000 same changed .",
        &src,
    );
    let out = env.run(&[
        "import",
        s(&src),
        "--name",
        "app",
        "--normalize",
        "--epoch",
        "2000",
        "--previous",
        "app",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls = env.ok(&["ls", "app"]);
    let line = |p: &str| {
        ls.lines()
            .find(|l| l.starts_with(&format!("{p} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("/same").contains("mtime=1000 "), "{ls}");
    assert!(line("/changed").contains("mtime=2000 "), "{ls}");
    // The root's metadata did not change either: it keeps the old mtime too.
    assert!(line("/").contains("mtime=1000"), "{ls}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2 mtimes kept from the previous image"),
        "{stderr}"
    );
}

#[test]
fn sockets_are_refused_with_their_path() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    let err = env.fails(&["import", s(&src)]);
    assert!(err.contains("sock") && err.contains("socket"), "{err}");
}

/// `len` bytes of a 64-letter alphabet from a fixed xorshift sequence: deflate takes
/// about a quarter off, so a gzip file of them is nearly as large as what it holds.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'0' + (x >> 58) as u8
        })
        .collect()
}

/// The deflate stream of `content` and the CRC32/ISIZE trailer of a member holding it.
fn deflate(content: &[u8], level: flate2::Compression) -> (Vec<u8>, Vec<u8>) {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), level);
    e.write_all(content).unwrap();
    let mut crc = flate2::Crc::new();
    crc.update(content);
    let mut trailer = crc.sum().to_le_bytes().to_vec();
    trailer.extend_from_slice(&(content.len() as u32).to_le_bytes());
    (e.finish().unwrap(), trailer)
}

/// Writes a one-member gzip file as `gzip` leaves a named file without `-n` (`name` and
/// `mtime` stored) or, with `None` and 0, as normalisation leaves it.
fn write_gzip(path: &Path, name: Option<&str>, mtime: u32, (body, trailer): &(Vec<u8>, Vec<u8>)) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&[0x1f, 0x8b, 8, if name.is_some() { 0x08 } else { 0 }])
        .unwrap();
    f.write_all(&mtime.to_le_bytes()).unwrap();
    f.write_all(&[0, 3]).unwrap();
    if let Some(n) = name {
        f.write_all(n.as_bytes()).unwrap();
        f.write_all(&[0]).unwrap();
    }
    f.write_all(body).unwrap();
    f.write_all(trailer).unwrap();
    f.flush().unwrap();
}

/// Issue 24: every rewritten gzip file stayed in memory until the end of the run, so
/// 480 MiB of .gz files to rewrite took more than 480 MiB (517 MiB for 40 files of
/// 12 MiB), in `hash`, `import` and `normalize` alike. The README's bound is 256 MiB of
/// file data at once, rewritten copies included; the rest is the program itself.
#[test]
fn normalising_many_large_gzip_files_keeps_memory_bounded() {
    let env = Env::new();
    let tree = env.path("tree");
    std::fs::create_dir(&tree).unwrap();
    let content = noise(13 * MIB);
    let member = deflate(&content, flate2::Compression::fast());
    let files = 48;
    for i in 0..files {
        let name = format!("f{i:02}.txt");
        write_gzip(
            &tree.join(format!("f{i:02}.gz")),
            Some(&name),
            1_600_000_000 + i,
            &member,
        );
    }
    let total_mib = files as usize * member.0.len() / MIB;
    let bound_mib = 256 + 64;
    let measured = |args: &[&str]| {
        let (out, peak_mib) = env.run_measured(args);
        eprintln!("imager {args:?}: peak RSS {peak_mib} MiB");
        assert!(
            out.status.success(),
            "imager {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            peak_mib < bound_mib,
            "imager {args:?} peaked at {peak_mib} MiB for {total_mib} MiB of gzip files \
             to rewrite (bound {bound_mib} MiB)"
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let t = s(&tree);
    let predicted = measured(&["hash", t, "--normalize", "--epoch", EPOCH]);
    let imported = measured(&["import", t, "--normalize", "--epoch", EPOCH]);
    assert_eq!(imported, predicted);
    let report = measured(&["normalize", t, "--epoch", EPOCH]);
    assert!(
        report.contains(&format!("{files} gzip headers")),
        "{report}"
    );
    // Written back from the spill: the tree is what hash predicted, each file exactly
    // what `gzip -n` would have made.
    assert_eq!(env.ok(&["hash", t]), predicted);
    let want = env.path("want.gz");
    write_gzip(&want, None, 0, &member);
    assert!(std::fs::read(tree.join("f07.gz")).unwrap() == std::fs::read(want).unwrap());
}

/// Issue 24: gzip files over 64 MiB were taken as they are, name and mtime included,
/// without a word. They still are (normalising them would need a streaming rewrite),
/// but every import and normalisation report lists them with the reason.
#[test]
fn a_gzip_file_too_large_to_normalise_is_reported_with_its_reason() {
    let env = Env::new();
    let tree = env.path("tree");
    std::fs::create_dir(&tree).unwrap();
    let big = tree.join("big.gz");
    write_gzip(
        &big,
        Some("big"),
        1_600_000_000,
        &deflate(&vec![0; 65 * MIB], flate2::Compression::none()),
    );
    let big_size = std::fs::metadata(&big).unwrap().len();
    let big_hash = blake3::hash(&std::fs::read(&big).unwrap());
    // A pyc too large to read: judged by its name, sparse so it costs nothing.
    std::fs::File::create(tree.join("big.pyc"))
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    // And a small one, normalised as ever.
    write_gzip(
        &tree.join("small.gz"),
        Some("small"),
        1_600_000_000,
        &deflate(b"small\n", flate2::Compression::best()),
    );
    let want = [
        (
            "/big.gz".to_string(),
            format!(
                "gzip: {big_size} bytes, larger than the 64 MiB normalisation reads into memory"
            ),
        ),
        (
            "/big.pyc".to_string(),
            format!(
                "pyc: {} bytes, larger than the 64 MiB normalisation reads into memory",
                65 << 20
            ),
        ),
    ];
    let skipped = |json: &str, at: &[&str]| -> Vec<(String, String)> {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let mut r = v;
        for k in at {
            r = r[*k].take();
        }
        assert_eq!(r["gzip"], 1, "{json}");
        serde_json::from_value(r["skipped"].take()).unwrap()
    };
    let t = s(&tree);
    // From a directory and from an archive of it (where the importer stores the large
    // members before the ingest sees them).
    let json = env.ok(&["import", t, "--normalize", "--epoch", EPOCH, "--json"]);
    assert_eq!(skipped(&json, &["normalize"]), want);
    env.ok(&["import", t, "--name", "raw"]);
    let tar = env.path("raw.tar.zst");
    env.ok(&["export", "raw", "--tar", s(&tar)]);
    let json = env.ok(&["import", s(&tar), "--normalize", "--epoch", EPOCH, "--json"]);
    assert_eq!(skipped(&json, &["normalize"]), want);
    // In place: reported in JSON and in text, and left exactly as it was.
    let json = env.ok(&["normalize", t, "--epoch", EPOCH, "--json"]);
    assert_eq!(skipped(&json, &[]), want);
    let text = env.ok(&["normalize", t, "--epoch", EPOCH]);
    assert!(
        text.contains(&format!("left as is: {}: {}", want[0].0, want[0].1)),
        "{text}"
    );
    assert_eq!(blake3::hash(&std::fs::read(&big).unwrap()), big_hash);
}

/// `--epoch -5` is the epoch -5 (an mtime before 1970 is valid), not an unknown option
/// `-5` that needed `--epoch=-5`.
#[test]
fn a_negative_epoch_is_taken_as_a_value() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let a = env.path("a");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::write(a.join("f"), "x\n").unwrap();
    let report = env.ok(&["normalize", s(&a), "--epoch", "-5", "--mtime", "set"]);
    assert!(report.contains("mtimes set"), "{report}");
    assert_eq!(std::fs::metadata(a.join("f")).unwrap().mtime(), -5);
    let spaced = env.id(&["hash", s(&a), "--normalize", "--epoch", "-5"]);
    let joined = env.id(&["hash", s(&a), "--normalize", "--epoch=-5"]);
    assert_eq!(spaced, joined);
}
