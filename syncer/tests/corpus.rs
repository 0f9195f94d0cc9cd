//! Pushes between the two real Debian roots of the benchmark corpus (A, and B a security
//! update later) onto `local:` host roots: exactness, local state, drift repair, hostile
//! symlinks, `kill -9` at random moments, triggers and crash recovery.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;

use common::*;
use imager::{Hash, Kind, Tree};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One store with A and B, shared by the tests of this file.
struct Corpus {
    dir: PathBuf,
    store: PathBuf,
    a: Hash,
    b: Hash,
}

fn corpus_store() -> &'static Corpus {
    static C: OnceLock<Corpus> = OnceLock::new();
    C.get_or_init(|| {
        let dir = corpus();
        // Kept between runs: importing again into it is quick.
        let store = Path::new(env!("CARGO_TARGET_TMPDIR")).join("corpus-store");
        let a = import(&store, &dir.join("A"), "A");
        let b = import(&store, &dir.join("B"), "B");
        Corpus { dir, store, a, b }
    })
}

/// The host's own state, which no push may touch.
const LOCAL: &[(&str, &str)] = &[
    ("etc/hostname", "web-17\n"),
    ("var/log/app/today.log", "request 1\n"),
    ("etc/ssh/ssh_host_ed25519_key", "PRIVATE\n"),
    ("etc/machine-id", "0123456789abcdef0123456789abcdef\n"),
    // A root filesystem's own (ext4): never deleted, and no bar to recognising the host.
    ("lost+found/#1234", "recovered\n"),
];

fn host(c: &Corpus, scratch: &Path, from: &str) -> PathBuf {
    let h = scratch.join("host");
    copy_tree(&c.dir.join(from), &h);
    for (p, content) in LOCAL {
        std::fs::create_dir_all(h.join(p).parent().unwrap()).unwrap();
        std::fs::write(h.join(p), content).unwrap();
    }
    h
}

fn local_state_intact(h: &Path) {
    for (p, content) in LOCAL {
        assert_eq!(&std::fs::read_to_string(h.join(p)).unwrap(), content, "{p}");
    }
}

#[test]
fn b_onto_a_makes_the_host_equal_b_and_keeps_its_local_state() {
    let c = corpus_store();
    let t = scratch("push-ab-");
    let h = host(c, t.path(), "A");
    let hs = format!("local:{}", h.display());
    let before = host_tree(&h);

    // A dry run reports the plan and changes nothing. Both at the level of a fleet's
    // pushes (a `local:` host's default is 1): the deltas' sizes are what ssh hosts get.
    let dry = push(&c.store, "B", &hs, &["--dry-run", "--level", "19"]);
    assert_eq!(dry["dry_run"], true);
    assert!(dry["changed"].as_u64().unwrap() > 500, "{dry:#}");
    let deltas = |r: &serde_json::Value, k: &str| -> u64 {
        ["zstd_delta", "bsdiff", "gzip_delta", "zucchini"]
            .iter()
            .map(|e| r[k][e]["files"].as_u64().unwrap())
            .sum()
    };
    assert!(deltas(&dry, "planned") > 500, "{dry:#}");
    // Most of them bsdiff patches, packed together; the changelogs and man pages as
    // gzip-aware patches.
    assert!(
        dry["planned"]["bsdiff"]["files"].as_u64().unwrap() > 200,
        "{dry:#}"
    );
    assert!(
        dry["planned"]["gzip_delta"]["files"].as_u64().unwrap() > 300,
        "{dry:#}"
    );
    // And the executables and libraries whose bsdiff patch is large, as Zucchini patches.
    assert!(
        dry["planned"]["zucchini"]["files"].as_u64().unwrap() > 20,
        "{dry:#}"
    );
    assert!(dry["packs"]["files"].as_u64().unwrap() > 200, "{dry:#}");
    assert!(dry["paths"].as_array().unwrap().len() > 1000);
    // Never synced, but a copy of A with only its own local state added: recognized as
    // A, so the manifest went as a delta from A's, not whole (half a megabyte).
    assert_eq!(dry["recognized"], true, "{dry:#}");
    assert!(
        dry["wire"]["Manifest"]["sent"].as_u64().unwrap() < 150_000,
        "{dry:#}"
    );
    let d = imager::tree::text::differences(&before, &host_tree(&h));
    assert!(d.is_empty(), "--dry-run changed the host: {d:?}");
    assert!(!h.join("var/lib/syncer/image").exists());

    let r = push(&c.store, "B", &hs, &["--level", "19"]);
    assert_host_is(&h, &c.store, &c.b);
    local_state_intact(&h);
    assert_eq!(r["image_after"], c.b.to_hex());
    // Recognized again, now from the manifest delta (and view IDs) the dry run left in
    // the delta cache.
    assert_eq!(r["recognized"], true, "{r:#}");
    assert!(
        r["wire"]["Manifest"]["sent"].as_u64().unwrap() < 150_000,
        "{r:#}"
    );
    assert!(
        std::fs::read_dir(c.store.join("syncer-cache"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("view-")),
        "no view ID kept"
    );
    assert!(r["commit_ops"].as_u64().unwrap() > 1000, "{r:#}");
    // Content the store held in its old version went as deltas, far smaller than the
    // files; nothing unchanged went at all.
    for k in ["zstd_delta", "bsdiff", "gzip_delta", "zucchini"] {
        let d = &r["sent"][k];
        assert!(
            d["bytes"].as_u64().unwrap() * 5 < d["content_bytes"].as_u64().unwrap(),
            "{k}: {r:#}"
        );
    }
    assert!(r["wire_sent"].as_u64().unwrap() < 6_000_000, "{r:#}");
    // Where the bytes went: the content (packs and files) is most of them.
    let content = ["Pack", "Put", "Data"]
        .iter()
        .map(|m| r["wire"][m]["sent"].as_u64().unwrap_or(0))
        .sum::<u64>();
    assert!(content * 10 > r["wire_sent"].as_u64().unwrap() * 8, "{r:#}");
    assert!(!h.join(".syncer-staging").read_dir().unwrap().any(|_| true));
    // Every cache entry the push made (bsdiff, gzip-aware and Zucchini patches, packs)
    // decodes to what its name says.
    let out = run(&c.store, &["cache", "verify", "--json"]);
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{v:#}");
    assert!(v["good"].as_u64().unwrap() > 500, "{v:#}");

    // Status: at B, clean. A second push is a no-op that sends no content.
    let st = json(&ok(&c.store, &["status", &hs, "--json"]));
    assert_eq!(st[0]["image"], c.b.to_hex());
    assert_eq!(st[0]["drifted"], false, "{st:#}");
    assert_eq!(st[0]["names"][0], "B");
    let again = push(&c.store, "B", &hs, &[]);
    for k in ["added", "changed", "metadata", "deleted", "commit_ops"] {
        assert_eq!(again[k], 0, "{k}: {again:#}");
    }
    assert!(
        again["scan"]["cached_files"].as_u64().unwrap() > 10_000,
        "{again:#}"
    );
    assert_eq!(again["scan"]["hashed_files"], 0, "{again:#}");

    // Back to A: the host is managed now, so the way back is a delta too.
    let back = push(&c.store, "A", &hs, &[]);
    assert_host_is(&h, &c.store, &c.a);
    assert!(deltas(&back, "sent") > 500, "{back:#}");
    local_state_intact(&h);
}

#[test]
fn a_drifted_host_is_repaired_and_nothing_outside_its_root_is_touched() {
    let c = corpus_store();
    let t = scratch("push-drift-");
    let h = host(c, t.path(), "B");
    let hs = format!("local:{}", h.display());
    let first = push(&c.store, "B", &hs, &[]);
    assert_eq!(first["recognized"], true, "{first:#}");

    // Drift: a modified file, an extra one, a missing one, a mode change, a file
    // replaced by a symlink to the machine's /etc/shadow, a directory replaced by a
    // symlink to /.
    std::fs::write(h.join("etc/debian_version"), "hacked\n").unwrap();
    std::fs::write(h.join("usr/bin/extra-tool"), "#!/bin/sh\n").unwrap();
    std::fs::remove_file(h.join("etc/issue")).unwrap();
    sh(&format!("chmod 600 '{}'", h.join("etc/passwd").display()));
    std::fs::remove_file(h.join("etc/issue.net")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", h.join("etc/issue.net")).unwrap();
    std::fs::remove_dir_all(h.join("usr/share/man")).unwrap();
    std::os::unix::fs::symlink("/", h.join("usr/share/man")).unwrap();
    let shadow = file_hash(Path::new("/etc/shadow"));
    let real_root: Vec<_> = std::fs::read_dir("/")
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();

    let out = run(&c.store, &["drift", &hs]);
    assert_eq!(out.status.code(), Some(1), "diff exits 1 on a drifted host");
    let out = String::from_utf8_lossy(&out.stdout);
    // Itemised as rsync does: what happens and to what kind, then what differs.
    for (item, path) in [
        (">fc", "/etc/debian_version"),
        (
            "*deleting",
            "/usr/bin/extra-tool (made on the host, under an owned prefix)",
        ),
        ("cf+++++++", "/etc/issue"),
        (".f...p...", "/etc/passwd"),
        (">fR", "/etc/issue.net"),
        ("cdR", "/usr/share/man"),
        ("cd+++++++", "/usr/share/man/man1"),
    ] {
        assert!(
            out.lines().any(|l| {
                let l = l.trim_start();
                l.starts_with(item) && l.split_once(' ').is_some_and(|(_, p)| p == path)
            }),
            "diff lacks {item} {path}:\n{out}"
        );
    }
    let st = json(&String::from_utf8_lossy(
        &run(&c.store, &["status", &hs, "--json"]).stdout,
    ));
    assert_eq!(st[0]["drifted"], true);

    push(&c.store, "B", &hs, &[]);
    assert_host_is(&h, &c.store, &c.b);
    local_state_intact(&h);
    assert_eq!(
        file_hash(Path::new("/etc/shadow")),
        shadow,
        "/etc/shadow was written"
    );
    let after: Vec<_> = std::fs::read_dir("/")
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(real_root, after, "something was created in the machine's /");
    assert!(!Path::new("/man1").exists());
}

/// Every file's content at `path` in either image, for the torn-file check. A hard
/// link's content is its target's (mid-commit, a link not yet made again is a file of
/// its own holding the old content).
fn versions(trees: &[&Tree]) -> HashMap<Vec<u8>, Vec<Hash>> {
    let mut m: HashMap<Vec<u8>, Vec<Hash>> = HashMap::new();
    for t in trees {
        for e in t.entries() {
            let content = match &e.kind {
                Kind::File { hash, .. } => Some(*hash),
                Kind::HardLink { target } => match t.get(target).map(|t| &t.kind) {
                    Some(Kind::File { hash, .. }) => Some(*hash),
                    _ => None,
                },
                _ => None,
            };
            if let Some(h) = content {
                m.entry(e.path.clone()).or_default().push(h);
            }
        }
    }
    m
}

/// The image a host is at, or is committing to when a journal is left.
fn effective_image(root: &Path) -> Option<Hash> {
    let st = root.join("var/lib/syncer");
    if let Ok(j) = std::fs::read_to_string(st.join("journal")) {
        return j
            .lines()
            .next()?
            .split("image=")
            .nth(1)
            .and_then(Hash::from_hex);
    }
    Hash::from_hex(std::fs::read_to_string(st.join("image")).ok()?.trim())
}

#[test]
fn kill_9_at_random_moments_never_tears_a_file_and_the_next_push_completes() {
    let c = corpus_store();
    let t = scratch("push-kill-");
    let h = host(c, t.path(), "A");
    let hs = format!("local:{}", h.display());
    let (ta, tb) = (image(&c.store, &c.a), image(&c.store, &c.b));
    let known = versions(&[&ta, &tb]);
    // Warm the delta cache both ways; the reports say how many files each direction
    // stages and how many operations its commit has.
    let sizes = |r: &serde_json::Value| {
        let sent = &r["sent"];
        let files: u64 = [
            "local_copy",
            "zstd_delta",
            "rsync_delta",
            "bsdiff",
            "gzip_delta",
            "zucchini",
            "whole",
        ]
        .iter()
        .map(|k| sent[k]["files"].as_u64().unwrap())
        .sum();
        (files, r["commit_ops"].as_u64().unwrap())
    };
    let to_b = sizes(&push(&c.store, "B", &hs, &[]));
    let to_a = sizes(&push(&c.store, "A", &hs, &[]));
    assert!(
        to_b.0 > 100 && to_b.1 > 100 && to_a.0 > 100,
        "{to_b:?} {to_a:?}"
    );
    let mut seed = std::process::id() as u64;
    let mut interrupted = 0;
    for round in 0..16 {
        // Always the other image than the host is at (or is committing to), so that
        // every round has the whole update to do.
        let (target, (files, ops)) = if effective_image(&h) == Some(c.b) {
            ("A", to_a)
        } else {
            ("B", to_b)
        };
        // A cheap LCG picks the moment: the Nth staged file or the Nth commit operation
        // (the agent stops itself there, so where it dies does not depend on how fast
        // this machine is). The moments differ from run to run and round to round.
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = seed >> 33;
        let at = if r.is_multiple_of(2) {
            format!("stage:{}", 1 + (r / 2) % files)
        } else {
            format!("commit:{}", 1 + (r / 2) % ops)
        };
        let mut child = syncer()
            .args(["push", target, &hs, "--json"])
            .env("IMAGER_STORE", &c.store)
            .env("SYNCER_TEST_STOP_AT", &at)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the event: the agent stopped at its point, or the push ended (the
        // point was not reached: a round where the host had drifted less).
        let killed = loop {
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            if let Some(pid) = stopped_agent(&h) {
                rustix::process::kill_process(
                    rustix::process::Pid::from_raw(pid).unwrap(),
                    rustix::process::Signal::KILL,
                )
                .unwrap();
                break true;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let out = child.wait_with_output().unwrap();
        if killed {
            assert!(
                !out.status.success(),
                "round {round}: killed at {at}, push ok"
            );
            interrupted += 1;
        }
        // Every file is some image's version of that path, never a mix.
        for e in host_tree(&h).entries() {
            if let Kind::File { hash, .. } = e.kind {
                let ok = known.get(&e.path).is_some_and(|v| v.contains(&hash));
                assert!(
                    ok,
                    "round {round} (killed at {at}): {} has content of neither image",
                    String::from_utf8_lossy(&e.path)
                );
            }
        }
    }
    // Every point is reached (a round has the whole update to do), but a roll-forward
    // can finish a commit that ends exactly at its point.
    assert!(
        interrupted >= 13,
        "only {interrupted} of 16 pushes were interrupted"
    );
    push(&c.store, "B", &hs, &[]);
    assert_host_is(&h, &c.store, &c.b);
    local_state_intact(&h);
}

fn trigger_names(r: &serde_json::Value) -> Vec<String> {
    r["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn triggers_run_once_for_watched_changes_and_again_after_a_crash() {
    let c = corpus_store();
    let t = scratch("push-trig-");
    // Image C: B plus an app config, triggers, and a changed sshd_config.
    let src = t.path().join("C");
    copy_tree(&c.dir.join("B"), &src);
    std::fs::create_dir_all(src.join("usr/lib/imager")).unwrap();
    std::fs::write(
        src.join("usr/lib/imager/triggers.toml"),
        r#"
[[trigger]]
name = "reload-app"
paths = ["/etc/app/**"]
run = "echo run >> /var/log/app/reloads; printf '%s\n' \"$SYNCER_CHANGED_PATHS\" >> /var/log/app/reloads; echo reloaded app"
order = 10
timeout = 30

[[trigger]]
name = "reload-sshd"
paths = ["/etc/ssh/sshd_config"]
run = "echo sshd >> /var/log/app/sshd-reloads"
order = 20
timeout = 30

[[trigger]]
name = "update-grub"
paths = ["/boot/**"]
run = "echo grub >> /var/log/app/grub-runs"
"#,
    )
    .unwrap();
    std::fs::create_dir_all(src.join("etc/app")).unwrap();
    std::fs::write(src.join("etc/app/app.conf"), "workers = 4\n").unwrap();
    let cid = import(&c.store, &src, "C");

    let h = host(c, t.path(), "B");
    let hs = format!("local:{}", h.display());
    push(&c.store, "B", &hs, &[]);
    let r = push(&c.store, "C", &hs, &[]);
    assert_host_is(&h, &c.store, &cid);
    let names = trigger_names(&r);
    assert_eq!(names, ["reload-app"], "{r:#}");
    assert_eq!(r["triggers"][0]["status"], 0);
    assert!(r["triggers"][0]["output"]
        .as_str()
        .unwrap()
        .contains("reloaded app"));
    let log = std::fs::read_to_string(h.join("var/log/app/reloads")).unwrap();
    // It ran once, inside the host's root, with the changed paths it watches.
    assert_eq!(log.matches("run\n").count(), 1, "{log}");
    assert!(log.lines().any(|l| l == "/etc/app/app.conf"), "{log}");
    assert!(!log.contains("/etc/ssh"), "{log}");
    assert!(!h.join("var/log/app/sshd-reloads").exists());

    // A change to sshd_config, and an agent that dies right after writing its journal:
    // nothing ran yet; the next push finishes the commit and runs the trigger.
    std::fs::write(src.join("etc/ssh/sshd_config"), "PermitRootLogin no\n").unwrap();
    let did = import(&c.store, &src, "C");
    let out = syncer()
        .args(["push", "C", &hs, "--json"])
        .env("IMAGER_STORE", &c.store)
        .env("SYNCER_TEST_CRASH_AFTER_JOURNAL", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!h.join("var/log/app/sshd-reloads").exists());
    let r = push(&c.store, "C", &hs, &[]);
    assert_eq!(r["rolled_forward"], true, "{r:#}");
    assert_eq!(
        r["added"].as_u64().unwrap() + r["changed"].as_u64().unwrap(),
        0,
        "{r:#}"
    );
    let names = trigger_names(&r);
    assert_eq!(names, ["reload-sshd"], "{r:#}");
    assert_eq!(
        std::fs::read_to_string(h.join("var/log/app/sshd-reloads")).unwrap(),
        "sshd\n"
    );
    assert_host_is(&h, &c.store, &did);

    // A failing trigger fails the push and says so.
    std::fs::write(
        src.join("usr/lib/imager/triggers.toml"),
        "[[trigger]]\nname = \"broken\"\npaths = [\"/etc/app/*\"]\nrun = \"echo nope >&2; exit 3\"\n",
    )
    .unwrap();
    std::fs::write(src.join("etc/app/app.conf"), "workers = 8\n").unwrap();
    import(&c.store, &src, "C");
    let out = run(&c.store, &["push", "C", &hs, "--json"]);
    assert!(!out.status.success());
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(v["hosts"][0]["triggers"][0]["status"], 3);
    assert!(
        v["hosts"][0]["error"].as_str().unwrap().contains("broken"),
        "{v:#}"
    );
    assert!(v["hosts"][0]["triggers"][0]["output"]
        .as_str()
        .unwrap()
        .contains("nope"));
}

#[test]
fn every_encoder_round_trips_on_the_corpus_and_a_corrupt_delta_is_detected() {
    use rayon::prelude::*;
    use syncer::encoding::{bsdiff, pack, rsync_delta, whole, zstd_delta};
    let c = corpus_store();
    let s = imager::store::Store::open(&c.store, imager::store::Access::Read).unwrap();
    let (ta, tb) = (image(&c.store, &c.a), image(&c.store, &c.b));
    let file = |t: &Tree, p: &[u8]| match t.get(p).map(|e| &e.kind) {
        Some(Kind::File { hash, .. }) => Some(*hash),
        _ => None,
    };
    let pairs: Vec<(Vec<u8>, Hash, Hash)> = tb
        .entries()
        .iter()
        .filter_map(|e| {
            let new = file(&tb, &e.path)?;
            let old = file(&ta, &e.path)?;
            (old != new).then(|| (e.path.clone(), old, new))
        })
        .collect();
    assert!(pairs.len() > 500, "{} changed files", pairs.len());
    // Every encoder, every changed file: encoded, then decoded to exactly the new file.
    // zstd at a fast level: the round trip is what is tested here, not the size.
    let raws: Vec<Vec<u8>> = pairs
        .par_iter()
        .map(|(p, old, new)| {
            let shown = String::from_utf8_lossy(p);
            let (o, n) = (s.read_object(old).unwrap(), s.read_object(new).unwrap());
            let z = zstd_delta::encode(&o, &n, 3).unwrap();
            assert_eq!(
                zstd_delta::apply(&o, &z, n.len()).unwrap(),
                n,
                "zstd delta {shown}"
            );
            let mut streamed = Vec::new();
            zstd_delta::decode(&o, &z, &mut streamed).unwrap();
            assert_eq!(streamed, n, "streamed zstd delta {shown}");
            let w = whole::encode(&n, 3).unwrap();
            assert_eq!(
                zstd::bulk::decompress(&w, n.len()).unwrap(),
                n,
                "whole {shown}"
            );
            let r = rsync_delta::encode(&rsync_delta::signature(&o), &n, 3).unwrap();
            assert_eq!(
                rsync_delta::apply(&o, &r, n.len()).unwrap(),
                n,
                "rsync {shown}"
            );
            let raw = bsdiff::diff(&o, &n).unwrap();
            assert_eq!(
                bsdiff::patched(&o, &raw, n.len() as u64).unwrap(),
                n,
                "bsdiff {shown}"
            );
            raw
        })
        .collect();
    // The changed gzip files (changelogs, man pages: GNU gzip -9n, as Debian ships
    // them): nearly all have a gzip-aware patch, each makes its file exactly, and
    // together they are far smaller than bsdiff's. (preflate cannot predict a few
    // streams; those travel another way.)
    let gz: Vec<&(Vec<u8>, Hash, Hash)> = pairs
        .iter()
        .filter(|(p, _, _)| p.ends_with(b".gz"))
        .collect();
    assert!(gz.len() > 300, "{} changed gzip files", gz.len());
    let sizes: Vec<(usize, usize)> = gz
        .par_iter()
        .filter_map(|(p, old, new)| {
            let shown = String::from_utf8_lossy(p);
            let (o, n) = (s.read_object(old).unwrap(), s.read_object(new).unwrap());
            let raw = match syncer::encoding::gzip::diff(&o, &n) {
                Ok(raw) => raw,
                Err(e) => {
                    eprintln!("no gzip-aware patch for {shown}: {e}");
                    return None;
                }
            };
            assert_eq!(
                syncer::encoding::gzip::patched(&o, &raw, n.len() as u64).unwrap(),
                n,
                "gzip {shown}"
            );
            let g = whole::encode(&raw, 3).unwrap().len();
            let b = whole::encode(&bsdiff::diff(&o, &n).unwrap(), 3)
                .unwrap()
                .len();
            Some((g, b))
        })
        .collect();
    assert!(
        sizes.len() * 100 >= gz.len() * 95,
        "{} of {} changed gzip files have a gzip-aware patch",
        sizes.len(),
        gz.len()
    );
    let (g, b) = sizes.iter().fold((0, 0), |(g, b), (x, y)| (g + x, b + y));
    assert!(g * 5 < b, "gzip-aware patches {g} bytes, bsdiff {b}");
    // Every changed executable and library has a Zucchini patch that makes it exactly;
    // together they are smaller than bsdiff's.
    use syncer::encoding::zucchini;
    let elf: Vec<(usize, usize)> = pairs
        .par_iter()
        .filter_map(|(p, old, new)| {
            let shown = String::from_utf8_lossy(p);
            let (o, n) = (s.read_object(old).unwrap(), s.read_object(new).unwrap());
            if !zucchini::is_elf(&o) || !zucchini::is_elf(&n) {
                return None;
            }
            let raw =
                zucchini::diff(&o, &n).unwrap_or_else(|e| panic!("Zucchini patch of {shown}: {e}"));
            let made = zucchini::patched(&o, &raw, n.len() as u64).unwrap();
            assert!(made == n, "zucchini {shown}");
            let z = whole::encode(&raw, 3).unwrap().len();
            let b = whole::encode(&bsdiff::diff(&o, &n).unwrap(), 3)
                .unwrap()
                .len();
            Some((z, b))
        })
        .collect();
    assert!(elf.len() > 100, "{} changed ELF files", elf.len());
    let (z, b) = elf.iter().fold((0, 0), |(z, b), (x, y)| (z + x, b + y));
    assert!(z * 10 < b * 8, "Zucchini patches {z} bytes, bsdiff {b}");
    // All the patches as one pack, and back.
    let all: Vec<u8> = raws.concat();
    let packed = pack::compress(&all, 3).unwrap();
    assert_eq!(pack::decompress(&packed, all.len() as u64).unwrap(), all);

    // A damaged delta never makes a file that passes for the new one: each encoding of
    // the largest changed file, one byte flipped, fails or makes other content.
    let (i, _) = pairs
        .iter()
        .enumerate()
        .max_by_key(|(_, (_, _, n))| s.read_object(n).unwrap().len())
        .unwrap();
    let (_, old, new) = &pairs[i];
    let (o, n) = (s.read_object(old).unwrap(), s.read_object(new).unwrap());
    let flip = |mut d: Vec<u8>| {
        let at = d.len() / 2;
        d[at] ^= 0x40;
        d
    };
    let wrong = |r: Result<Vec<u8>, String>| r.map_or(true, |out| Hash::of(&out) != *new);
    let size = n.len();
    assert!(wrong(bsdiff::patched(
        &o,
        &flip(raws[i].clone()),
        size as u64
    )));
    let z = flip(zstd_delta::encode(&o, &n, 3).unwrap());
    assert!(wrong(zstd_delta::apply(&o, &z, size)));
    let r = flip(rsync_delta::encode(&rsync_delta::signature(&o), &n, 3).unwrap());
    assert!(wrong(rsync_delta::apply(&o, &r, size)));
    let p = flip(packed);
    assert!(pack::decompress(&p, all.len() as u64).map_or(true, |d| d != all));
}
