//! The checks behind the fuzz targets (one thin file per target in `fuzz_targets/`), kept
//! here so that a crash found by a target can be replayed as an ordinary function call
//! and so that targets sharing an invariant (a message must survive encode → decode)
//! state it once.
//!
//! Every check is "parse; if the input was accepted, what we print from it must parse
//! back to the same thing" where the format has a printer, and "does not panic, does not
//! hang, does not allocate without bound" everywhere.
#![allow(clippy::disallowed_methods)] // fuzz harness: sets up scratch files directly

use imager::store::{Access, Store};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use syncer::protocol::{Conn, Msg, MAX_FRAME};

/// A directory for the whole fuzzing process: under `$IMAGER_FUZZ_SCRATCH` when set
/// (`run.sh` points it at a directory it removes; libFuzzer exits without running
/// destructors, so a temporary directory would stay behind), else on tmpfs when there is
/// one (the tar target writes a store and `syncfs`s it on every input).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("IMAGER_FUZZ_SCRATCH")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/dev/shm"));
        let t = if base.is_dir() {
            tempfile::tempdir_in(base)
        } else {
            tempfile::tempdir()
        };
        t.expect("a scratch directory for fuzzing")
    })
    .path()
}

/// A fresh subdirectory of [`scratch`] (emptied if it exists).
pub fn fresh_dir(name: &str) -> PathBuf {
    let d = scratch().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a scratch subdirectory");
    d
}

/// A message accepted by `decode` must encode, and the encoding must decode to the same
/// message and encode to the same bytes. Messages are compared by their `Debug` text,
/// since some hold f64 fields (NaN is not equal to itself).
pub fn check_msg(m: &Msg) {
    let enc = match m.encode() {
        Ok(e) => e,
        Err(e) => {
            // Only the frame limit may refuse it: a body inflated from a compressed frame
            // can be up to MAX_FRAME, plus the tag.
            let s = e.to_string();
            assert!(s.contains("larger than a frame"), "encode failed: {s}");
            return;
        }
    };
    assert!(enc.len() <= MAX_FRAME);
    let back = Msg::decode(&enc).expect("decoding what encode wrote");
    assert_eq!(
        format!("{m:?}"),
        format!("{back:?}"),
        "decode(encode(m)) != m"
    );
    assert_eq!(
        back.encode().expect("re-encoding"),
        enc,
        "encoding is not stable"
    );
}

/// One frame body, as `Msg::decode` sees it.
pub fn protocol_body(body: &[u8]) {
    if let Ok(m) = Msg::decode(body) {
        check_msg(&m);
    }
}

/// A byte stream, as an agent or controller reads it: frames until the end or an error.
/// Each message goes out through another `Conn` and must come back the same, and the
/// byte counts must add up.
pub fn protocol_stream(data: &[u8]) {
    let mut c = Conn::new(data, std::io::sink());
    let mut written = Vec::new();
    let mut got = Vec::new();
    let (clean_end, sent) = {
        let mut out = Conn::new(std::io::empty(), &mut written);
        let clean_end = loop {
            match c.recv_opt() {
                Ok(Some(m)) => {
                    check_msg(&m);
                    if out.send(&m).is_ok() {
                        got.push(format!("{m:?}"));
                    }
                }
                Ok(None) => break true,
                Err(_) => break false,
            }
        };
        (clean_end, out.sent)
    };
    assert!(c.received <= data.len() as u64);
    if clean_end {
        assert_eq!(
            c.received,
            data.len() as u64,
            "a clean end left bytes unread"
        );
    }
    assert_eq!(sent, written.len() as u64, "send miscounted its bytes");
    let mut again = Conn::new(&written[..], std::io::sink());
    for want in &got {
        let m = again
            .recv("the re-sent message")
            .expect("reading back what send wrote");
        assert_eq!(&format!("{m:?}"), want);
    }
    assert!(
        matches!(again.recv_opt(), Ok(None)),
        "send wrote more than it was given"
    );
}

/// Counts inputs, to reset stores now and then so a long run does not fill tmpfs.
pub fn every(n: u64) -> bool {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    COUNT.fetch_add(1, Ordering::Relaxed).is_multiple_of(n)
}

/// The store the tar target imports into: emptied every few hundred inputs.
pub fn store() -> Store {
    let root = scratch().join("store");
    if every(500) {
        let _ = std::fs::remove_dir_all(&root);
    }
    Store::open(&root, Access::Write).expect("open the fuzzing store")
}

/// The canonical manifest text: accepted text prints back to itself (parse promises it)
/// and parses to the same tree again.
pub fn manifest_text(data: &[u8]) {
    use imager::tree::text;
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tree) = text::parse(s, "fuzz input") else {
        return;
    };
    let printed = text::print(&tree);
    assert_eq!(printed, s, "parse accepted a text that is not canonical");
    let again = text::parse(&printed, "printed").expect("parsing what print wrote");
    assert_eq!(again, tree);
    assert!(text::differences(&tree, &again).is_empty());
}

/// A tree built from structured input (see `tree_roundtrip`): what print writes must
/// parse to the same tree, and every entry must survive the protocol's encoding and a
/// journal naming its path.
pub fn tree_roundtrip(entries: Vec<imager::Entry>) {
    use imager::tree::text;
    use syncer::agent::commit::{Journal, Op};
    use syncer::protocol::{Change, ChangeKind, ScanStats};
    let Ok(tree) = imager::Tree::new(entries) else {
        return;
    };
    let printed = text::print(&tree);
    let back = text::parse(&printed, "printed tree")
        .unwrap_or_else(|e| panic!("print wrote a text parse refuses: {e}\n{printed}"));
    assert_eq!(back, tree);
    let m = Msg::Differences(syncer::protocol::Differences {
        image: Some(text::id_of(&printed)),
        changes: tree
            .entries()
            .iter()
            .map(|e| Change {
                path: e.path.clone(),
                kind: ChangeKind::Meta,
                host: Some(e.clone()),
                what: 0,
            })
            .collect(),
        have: Vec::new(),
        scan: ScanStats::default(),
        kept: Vec::new(),
        stale: Vec::new(),
        unmanaged: Vec::new(),
    });
    check_msg(&m);
    let j = Journal {
        image: text::id_of(&printed),
        ops: tree
            .entries()
            .iter()
            .flat_map(|e| {
                [
                    Op::Mkdir(e.path.clone()),
                    Op::Link {
                        target: e.path.clone(),
                        path: e.path.clone(),
                    },
                    Op::Rename {
                        staged: "s-1".into(),
                        path: e.path.clone(),
                    },
                ]
            })
            .collect(),
        changed: tree.entries().iter().map(|e| e.path.clone()).collect(),
        previous: syncer::protocol::Previous::None,
    };
    let jt = j.text();
    let jb = Journal::parse(&jt).expect("parsing the journal text wrote");
    assert_eq!(jb.ops, j.ops);
    assert_eq!(jb.changed, j.changed);
    assert_eq!(jb.text(), jt);
}

/// An archive as `imager import` reads it (tar, tar.gz or tar.zst): if it imports, the
/// tree exported again as tar must import to the same tree.
pub fn tar_import(data: &[u8]) {
    use imager::fuzzing::{tar_export, tar_import};
    use imager::ingest::{ingest, StoreSink};
    use imager::progress::Quiet;
    use imager::tree::scan::Excludes;
    let store = store();
    let excludes = Excludes::new(&[]).expect("no excludes");
    // Both ways of reading content (streamed, or held for normalisation), by input.
    let opts = tar_import::ArchiveReadOptions {
        keep_candidates: data.len().is_multiple_of(2),
        excludes: &excludes,
    };
    let import = |bytes: &[u8], name: &str| -> Option<imager::Tree> {
        let txn = store.txn();
        let pending = tar_import::read_archive(bytes, name, &txn, &opts).ok()?;
        let tree = ingest(pending, None, &StoreSink { txn: &txn }, None, &Quiet)
            .ok()?
            .tree;
        txn.commit().expect("commit the imported objects");
        Some(tree)
    };
    let Some(tree) = import(data, "fuzz input") else {
        return;
    };
    let tar = tar_export::write_tar(&store, &tree, Vec::new(), &Quiet)
        .expect("exporting an imported tree");
    let back = import(&tar, "exported").expect("importing what export wrote");
    assert_eq!(
        imager::tree::text::print(&back),
        imager::tree::text::print(&tree),
        "export then import changed the tree"
    );
}

/// The build manifest (TOML), read from a file as `imager build` reads it: if it loads,
/// its flattened form (what a build stores) must load to the same settings.
pub fn build_manifest(data: &[u8]) {
    use imager::fuzzing::load_manifest as load;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = fresh_dir("manifest");
    let path = dir.join("m.toml");
    std::fs::write(&path, text).expect("write the manifest");
    let Ok(m) = load(&path) else {
        return;
    };
    let flat = m.flattened().expect("flattening a loaded manifest");
    let fdir = fresh_dir("flat");
    for i in 0..m.overlays.len() {
        std::fs::create_dir_all(fdir.join(format!("overlays/{i}"))).expect("overlay dir");
    }
    for i in 0..m.local_debs.len() {
        std::fs::create_dir_all(fdir.join(format!("local/{i}"))).expect("local .deb dir");
    }
    std::fs::write(fdir.join("local-state.txt"), m.local_state.join("\n"))
        .expect("write local-state.txt");
    let fpath = fdir.join("flat.toml");
    std::fs::write(&fpath, &flat).expect("write the flattened manifest");
    let back = load(&fpath)
        .unwrap_or_else(|e| panic!("the flattened manifest does not load: {e}\n{flat}"));
    assert_eq!(
        back.settings_text(),
        m.settings_text(),
        "flattened:\n{flat}"
    );
}

/// dpkg's status database and the other deb822 texts (apt's Release files, from a
/// mirror): paragraphs, installed packages, Release dates.
pub fn dpkg_status(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for p in imager::fuzzing::parse_deb822(&text) {
        for (k, v) in &p.fields {
            assert!(!k.contains(':') && !k.contains(' '), "field name {k:?}");
            assert!(p.get(k).is_some());
            let _ = imager::fuzzing::parse_release_date(v);
        }
    }
    let installed = imager::fuzzing::dpkg_status(&text);
    for (key, pkg) in &installed {
        assert!(key.starts_with(&pkg.name), "{key} names {}", pkg.name);
    }
    // The build's reader of the same file, through a root directory.
    let root = fresh_dir("dpkg-root");
    let status = root.join("var/lib/dpkg");
    std::fs::create_dir_all(&status).expect("dpkg dir");
    std::fs::write(status.join("status"), data).expect("write status");
    if let Ok(list) = imager::fuzzing::dpkg_installed_in(&root) {
        // Both readers take the same paragraphs as installed packages. (Review keys a
        // second copy of a name as `name:arch`, which a literal `name:arch` package
        // would collide with; dpkg allows no `:` in a name, so such a file is not real.)
        for i in list.iter().filter(|i| !i.name.contains(':')) {
            assert!(
                installed.values().any(|p| p.name == i.name),
                "{} is installed for the build but not for review",
                i.name
            );
        }
    }
}

/// A package's changelog.Debian (as `imager diff` shows it): the entries, and the ones
/// between two of its versions.
pub fn deb_changelog(data: &[u8]) {
    use imager::fuzzing::{changelog_entries, entries_between};
    let text = String::from_utf8_lossy(data);
    let entries = changelog_entries(&text);
    assert!(entries.len() <= text.lines().count());
    for e in &entries {
        assert!(e.text.contains(&e.version));
    }
    if let (Some(new), Some(old)) = (entries.first(), entries.last()) {
        let between = entries_between(&entries, &old.version, &new.version);
        assert!(between.len() <= entries.len());
        assert!(entries_between(&entries, &new.version, &old.version).len() <= entries.len());
    }
}

/// dpkg's version order must be a total order (on the classes it calls equal), or the
/// changelog entries between two versions depend on the order of comparisons.
pub fn dpkg_version(data: &[u8]) {
    use imager::fuzzing::compare_versions as cmp;
    use std::cmp::Ordering::*;
    let text = String::from_utf8_lossy(data);
    let v: Vec<&str> = text.splitn(3, '\n').collect();
    for a in &v {
        assert_eq!(cmp(a, a), Equal, "{a:?} is not equal to itself");
        for b in &v {
            assert_eq!(cmp(a, b), cmp(b, a).reverse(), "{a:?} vs {b:?}");
            for c in &v {
                if cmp(a, b) != Greater && cmp(b, c) != Greater {
                    assert_ne!(
                        cmp(a, c),
                        Greater,
                        "{a:?} <= {b:?} <= {c:?} but {a:?} > {c:?}"
                    );
                }
            }
        }
    }
}

/// The agent's commit journal (read back after a crash): text → journal → text is stable.
pub fn journal(data: &[u8]) {
    use syncer::agent::commit::Journal;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(j) = Journal::parse(text) else {
        return;
    };
    let t = j.text();
    let back = Journal::parse(&t).unwrap_or_else(|e| panic!("re-parsing {t:?}: {e}"));
    assert_eq!(back.ops, j.ops);
    assert_eq!(back.changed, j.changed);
    assert_eq!(back.previous, j.previous);
    assert_eq!(back.image, j.image);
    assert_eq!(back.text(), t);
}

/// The agent's hash cache (a file on the host, possibly damaged): loading never fails
/// or panics, whatever is in it.
pub fn hash_cache(data: &[u8]) {
    use syncer::agent::scan::HashCache;
    use syncer::agent::state::StateDir;
    let root = fresh_dir("host");
    let dir = root.join("var/lib/syncer");
    std::fs::create_dir_all(&dir).expect("state dir");
    std::fs::write(dir.join("hash-cache"), data).expect("write the cache");
    // The same bytes as the list of what the last commit wrote.
    std::fs::write(dir.join("hash-cache.committed"), data).expect("write the list");
    let st = StateDir::open(&root).expect("open the state dir");
    let cache = HashCache::load(&st);
    cache
        .save(&st)
        .expect("saving an unchanged cache writes nothing");
}

/// The image's triggers.toml as the agent receives it: if it parses, it prints back to
/// the same triggers, and matching them against paths does not panic.
pub fn agent_triggers(data: &[u8]) {
    use imager::contract::TriggerFile;
    use syncer::agent::triggers::{matching, parse};
    let Ok(t) = parse(data) else {
        return;
    };
    let printed = toml::to_string(&TriggerFile { trigger: t.clone() }).expect("print triggers");
    let back = parse(printed.as_bytes())
        .unwrap_or_else(|e| panic!("re-parsing printed triggers: {e}\n{printed}"));
    assert_eq!(back, t);
    let changed: Vec<Vec<u8>> = [&b"/etc/ssh/sshd_config"[..], b"/usr/bin/x", b"/a\nb"]
        .iter()
        .map(|p| p.to_vec())
        .collect();
    let _ = matching(&t, &changed);
}

/// A host's trust policy as the agent reads it, and a signature checked against it: four
/// parts separated by `\n--8<--\n` (allowed_signers, trust.toml, a signed statement, an
/// armored SSH signature). Nothing may panic; a policy that loads must check any
/// signature to an answer.
pub fn trust_policy(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split("\n--8<--\n");
    let (signers, policy) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (statement, signature) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let parsed = imager::sign::Statement::parse(statement.as_bytes());
    let _ = imager::sign::Signers::parse_allowed(signers, "allowed_signers");
    let read = |_: &str| Ok((signers.to_string(), "allowed_signers".to_string()));
    let Ok(p) = imager::sign::TrustPolicy::parse(policy, "trust.toml", &read) else {
        return;
    };
    let _ = p.summary();
    // The statement's own image, so that a valid seed reaches the signature check.
    let image = parsed
        .map(|s| s.image)
        .unwrap_or_else(|_| imager::Hash::of(statement.as_bytes()));
    let signed = imager::sign::Signed {
        statement: statement.as_bytes().to_vec(),
        signature: signature.as_bytes().to_vec(),
        origin: "signature 1".into(),
    };
    let _ = p.check(&image, &[signed], 1_796_000_000);
}

/// The host's current file the `chunked_records` target decodes against (seeds are made
/// against the same bytes).
pub fn chunked_base() -> Vec<u8> {
    (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// A large file's records as the agent decodes them (`syncer::encoding::chunked`), the
/// host's current file being [`chunked_base`]: the first 4 bytes are the file's size (at
/// most `LARGE`), the rest the records. Nothing may panic, and what decodes has the size
/// announced.
pub fn chunked_records(data: &[u8]) {
    use syncer::encoding::chunked;
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static HOST: OnceLock<imager::safe_dir::Beneath> = OnceLock::new();
    let host = HOST.get_or_init(|| {
        let d = fresh_dir("chunked");
        std::fs::write(d.join("f"), chunked_base()).expect("write the base");
        imager::safe_dir::Beneath::open(&d).expect("open the root")
    });
    let Some((head, records)) = data.split_first_chunk::<4>() else {
        return;
    };
    let size = u64::from(u32::from_le_bytes(*head)) % (chunked::LARGE + 1);
    let mut out = Count(0);
    if chunked::decode(host, b"/f", size, &mut &records[..], &mut out).is_ok() {
        assert_eq!(out.0, size, "decoded to another size than announced");
    }
}

/// A gzip-aware patch as the agent applies it (`syncer::encoding::gzip`): with a first
/// byte that is even, the rest is a patch applied to a real `gzip -9n` file; odd, the
/// rest is the host's old file, to which a real patch is applied (a hostile or damaged
/// gzip file: a bomb, a truncated stream, odd headers). Nothing may panic, and what a
/// patch makes has at most the size announced.
pub fn gzip_patch(data: &[u8]) {
    use syncer::encoding::gzip;
    const OLD: &[u8] = include_bytes!("../data/gzip-old.gz");
    const NEW: &[u8] = include_bytes!("../data/gzip-new.gz");
    static PATCH: OnceLock<Vec<u8>> = OnceLock::new();
    let patch = PATCH.get_or_init(|| gzip::diff(OLD, NEW).expect("a patch between the seeds"));
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut out = Vec::new();
    let made = if mode % 2 == 0 {
        gzip::apply_up_to(OLD, rest, NEW.len() as u64, &mut out)
    } else {
        gzip::apply_up_to(rest, patch, NEW.len() as u64, &mut out)
    };
    if let Ok(n) = made {
        assert!(n <= NEW.len() as u64 && n == out.len() as u64, "made {n} bytes");
    }
}

/// A Zucchini patch as the agent applies it (`syncer::encoding::zucchini`, Chromium's C++
/// behind the bindings), against a real executable (`/bin/true`): with a first byte that
/// is even, the rest is the patch; odd, the rest is the host's old file, to which a real
/// patch (to `/bin/true` with its code shifted) is applied. Nothing may crash, and what
/// a patch makes has at most the size announced.
pub fn zucchini_patch(data: &[u8]) {
    use syncer::encoding::zucchini;
    static SEED: OnceLock<(Vec<u8>, Vec<u8>, u64)> = OnceLock::new();
    let (old, patch, size) = SEED.get_or_init(|| {
        let old = std::fs::read("/bin/true").expect("read /bin/true");
        let mut new = old.clone();
        let at = new.len() / 3;
        new.splice(at..at, [0x90u8; 32]);
        let patch = zucchini::diff(&old, &new).expect("a patch of /bin/true");
        (old, patch, new.len() as u64)
    });
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let made = if mode % 2 == 0 {
        zucchini::patched(old, rest, *size)
    } else {
        zucchini::patched(rest, patch, *size)
    };
    if let Ok(out) = made {
        assert!(out.len() as u64 <= *size, "made {} bytes", out.len());
    }
}

/// A bitcode-aware patch as the agent applies it (`syncer::encoding::bitcode`), against
/// real LLVM bitcode (two modules `llvm-as` wrote): by the first byte modulo 3, the rest
/// is a patch applied to the old module; the host's old file, to which a real patch is
/// applied; or a bitstream read into tokens, which must write back and read again to the
/// same tokens (what the reader accepts, the writer can write). Nothing may panic, and
/// what a patch makes has at most the size announced.
pub fn bitcode_patch(data: &[u8]) {
    use syncer::encoding::bitcode::{self, stream};
    const OLD: &[u8] = include_bytes!("../data/bitcode-old.bc");
    const NEW: &[u8] = include_bytes!("../data/bitcode-new.bc");
    static PATCH: OnceLock<Vec<u8>> = OnceLock::new();
    let patch = PATCH.get_or_init(|| bitcode::diff(OLD, NEW).expect("a patch between the seeds"));
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let size = NEW.len() as u64;
    let made = match mode % 3 {
        0 => bitcode::patched(OLD, rest, size),
        1 => bitcode::patched(rest, patch, size),
        _ => {
            let limit = bitcode::max_tokens(rest.len() as u64);
            if let Ok(t) = stream::tokens(rest, limit) {
                let again = stream::bits(&t, 1 << 24).expect("the reader's tokens write");
                assert_eq!(stream::tokens(&again, limit).as_ref(), Ok(&t), "tokens differ");
            }
            return;
        }
    };
    if let Ok(out) = made {
        assert!(out.len() as u64 <= size, "made {} bytes", out.len());
    }
}
