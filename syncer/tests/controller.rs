//! The controller's side on the real binary: its delta cache (damaged entries are
//! dropped and recomputed, `syncer cache verify`), its reports and exit codes, and the
//! agent it installs on ssh hosts.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;

use common::*;
use std::path::{Path, PathBuf};

struct Fixture {
    _t: tempfile::TempDir,
    dir: PathBuf,
    store: PathBuf,
}

/// Two versions of a small tree: v2 changes two files (zstd deltas) and adds one (whole).
fn fixture(prefix: &str) -> Fixture {
    let t = scratch(prefix);
    let dir = t.path().to_path_buf();
    let store = dir.join("store");
    for v in [1u32, 2] {
        let d = dir.join(format!("v{v}"));
        sh(&format!(
            "set -e; mkdir -p '{d}/etc' '{d}/srv' '{d}/var/lib'
             python3 -c 'import random,sys; random.seed(1); sys.stdout.buffer.write(random.randbytes(300000))' > '{d}/srv/big'
             printf 'conf {v}\\n' > '{d}/etc/app.conf'
             if [ {v} = 2 ]; then printf 'changed' >> '{d}/srv/big'; printf 'new file\\n' > '{d}/etc/new.conf'; fi",
            d = d.display()
        ));
        import(&store, &d, &format!("v{v}"));
    }
    Fixture { _t: t, dir, store }
}

fn new_host(f: &Fixture, name: &str) -> (PathBuf, String) {
    let h = f.dir.join(name);
    std::fs::create_dir(&h).unwrap();
    let hs = format!("local:{}", h.display());
    (h, hs)
}

/// The cache's entries, largest first.
fn entries(cache: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "zst"))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    v
}

#[test]
fn a_damaged_delta_cache_entry_is_dropped_recomputed_and_reported_by_cache_verify() {
    let f = fixture("ctl-cache-");
    let cache = f.store.join("syncer-cache");
    let (a, hs_a) = new_host(&f, "host-a");
    push(&f.store, "v1", &hs_a, &[]);
    let of_v1 = entries(&cache);
    push(&f.store, "v2", &hs_a, &[]);
    assert_host_is(&a, &f.store, &id(&f.store, "v2"));
    // The entries a host going from v1 to v2 needs.
    let before: Vec<PathBuf> = entries(&cache)
        .into_iter()
        .filter(|p| !of_v1.contains(p))
        .collect();
    let delta = before
        .iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().contains('-'))
        .expect("a delta entry")
        .clone();
    let whole = before
        .iter()
        .find(|p| !p.file_name().unwrap().to_string_lossy().contains('-'))
        .expect("a whole entry")
        .clone();
    // One entry emptied (a torn write), one with a byte flipped in its middle.
    std::fs::write(&delta, b"").unwrap();
    let mut w = std::fs::read(&whole).unwrap();
    let mid = w.len() / 2;
    w[mid] ^= 0x40;
    std::fs::write(&whole, &w).unwrap();

    // The check names both and fails.
    let out = run(&f.store, &["cache", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v = json(&String::from_utf8_lossy(&out.stdout));
    let bad: Vec<String> = v["bad"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["file"].as_str().unwrap().to_string())
        .collect();
    let mut want = vec![delta.display().to_string(), whole.display().to_string()];
    want.sort();
    let mut got = bad.clone();
    got.sort();
    assert_eq!(got, want, "{v:#}");
    assert!(v["good"].as_u64().unwrap() > 0, "{v:#}");
    let text = run(&f.store, &["cache", "verify"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&delta.display().to_string()), "{text}");

    // A second host at v1 needs exactly those entries: the push still succeeds, warns
    // naming the files, and rewrites them good.
    let (b, hs_b) = new_host(&f, "host-b");
    push(&f.store, "v1", &hs_b, &[]);
    let out = run(&f.store, &["push", "v2", &hs_b, "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{v:#}\n{stderr}");
    assert_host_is(&b, &f.store, &id(&f.store, "v2"));
    for p in [&delta, &whole] {
        assert!(
            stderr.contains(&p.display().to_string()),
            "no warning names {}: {stderr}",
            p.display()
        );
    }
    assert_eq!(v["cache_dropped"].as_array().unwrap().len(), 2, "{v:#}");
    assert!(std::fs::metadata(&delta).unwrap().len() > 0);
    let out = run(&f.store, &["cache", "verify", "--json"]);
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{v:#}");
    assert_eq!(v["bad"].as_array().unwrap().len(), 0, "{v:#}");

    // --repair removes a bad entry and then exits 0.
    std::fs::write(&whole, b"garbage").unwrap();
    let out = run(&f.store, &["cache", "verify", "--repair", "--json"]);
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{v:#}");
    assert_eq!(v["bad"][0]["removed"], true, "{v:#}");
    assert!(!whole.exists());
}

/// v1 and v2 of a tiny root with a shell; v2 changes /etc/app.conf and carries a trigger
/// on it that fails.
fn trigger_fixture(prefix: &str) -> Fixture {
    let t = scratch(prefix);
    let dir = t.path().to_path_buf();
    let store = dir.join("store");
    mini_root(&dir.join("v1"), 1, 1000);
    import(&store, &dir.join("v1"), "v1");
    let v2 = dir.join("v2");
    mini_root(&v2, 2, 1000);
    std::fs::create_dir_all(v2.join("usr/lib/imager")).unwrap();
    std::fs::write(
        v2.join("usr/lib/imager/triggers.toml"),
        "[[trigger]]\nname = \"reload\"\npaths = [\"/etc/app.conf\"]\nrun = \"echo cannot reload >&2; exit 3\"\n",
    )
    .unwrap();
    import(&store, &v2, "v2");
    Fixture { _t: t, dir, store }
}

#[test]
fn a_push_whose_commit_applied_but_whose_trigger_failed_says_so() {
    let f = trigger_fixture("ctl-trigger-");
    let (h, hs) = new_host(&f, "host");
    push(&f.store, "v1", &hs, &[]);
    let out = run(&f.store, &["push", "v2", &hs, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&String::from_utf8_lossy(&out.stdout));
    let r = &v["hosts"][0];
    assert_eq!(r["ok"], false, "{r:#}");
    assert_eq!(r["committed"], true, "{r:#}");
    assert_eq!(r["triggers_failed"], 1, "{r:#}");
    assert_eq!(r["outcome"], "committed, trigger failed", "{r:#}");
    assert_eq!(r["image_after"], id(&f.store, "v2").to_hex());
    assert_host_is(&h, &f.store, &id(&f.store, "v2"));

    // The text report says the same.
    let (_h2, hs2) = new_host(&f, "host2");
    push(&f.store, "v1", &hs2, &[]);
    let out = run(&f.store, &["push", "v2", &hs2]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAILED (committed, trigger failed)"),
        "{text}"
    );
    assert!(text.contains("trigger reload failed (exit 3)"), "{text}");

    // A rollout counts it as a failed host, and says why.
    let (_h3, hs3) = new_host(&f, "host3");
    push(&f.store, "v1", &hs3, &[]);
    let inv = f.dir.join("fleet.toml");
    std::fs::write(
        &inv,
        format!("[policy]\npause = \"none\"\ncanary = 0\n\n[[colo]]\nname = \"one\"\nhosts = [\"{hs3}\"]\n"),
    )
    .unwrap();
    let out = run(
        &f.store,
        &[
            "rollout",
            "v2",
            "--inventory",
            inv.to_str().unwrap(),
            "--yes",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let st = json(&String::from_utf8_lossy(&out.stdout));
    let hr = &st["hosts"][0];
    assert_eq!(hr["outcome"], "failed", "{hr:#}");
    assert_eq!(hr["push_outcome"], "committed, trigger failed", "{hr:#}");
    assert_eq!(hr["committed"], true, "{hr:#}");
    assert!(
        hr["reason"]
            .as_str()
            .unwrap()
            .contains("counts a failed trigger as a failed host"),
        "{hr:#}"
    );
}

/// A tmpfs mounted for one test, unmounted however the test ends.
struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_failed_push_reports_the_bytes_it_sent_not_the_ones_it_planned() {
    let t = scratch("ctl-sent-");
    let dir = t.path();
    let store = dir.join("store");
    let v = dir.join("v1");
    sh(&format!(
        "set -e; mkdir -p '{d}/srv' '{d}/var/lib'
         head -c 16777216 /dev/urandom > '{d}/srv/big'",
        d = v.display()
    ));
    import(&store, &v, "v1");
    let h = dir.join("host");
    std::fs::create_dir(&h).unwrap();
    sh(&format!(
        "mount -t tmpfs -o size=4m tmpfs '{}'",
        h.display()
    ));
    let _m = Mount(h.clone());
    let out = run(
        &store,
        &[
            "push",
            "v1",
            &format!("local:{}", h.display()),
            "--json",
            "--level",
            "1",
            // Through the pipe, as to a remote host: what was sent is counted.
            "--no-store-copies",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let v = json(&String::from_utf8_lossy(&out.stdout));
    let r = &v["hosts"][0];
    assert_eq!(r["outcome"], "failed before commit", "{r:#}");
    assert_eq!(r["committed"], false, "{r:#}");
    let planned = r["planned"]["whole"]["bytes"].as_u64().unwrap();
    let sent = r["sent"]["whole"]["bytes"].as_u64().unwrap();
    assert!(planned > 16_000_000, "{r:#}");
    assert!(
        sent < planned,
        "a failed push claims it sent all it planned: {r:#}"
    );
    assert_eq!(r["sent"]["whole"]["files"], 0, "{r:#}");
    assert!(
        r["wire_sent"].as_u64().unwrap() >= sent,
        "the wire count is missing: {r:#}"
    );
}

/// A push makes each pack while the one before it is sent (a first install's
/// compression overlaps the link): a pack that cannot be made after others went out
/// fails the host before its commit, naming the file, and the host keeps its tree.
#[test]
fn packs_are_sent_as_they_are_made_and_one_that_cannot_be_made_fails_before_commit() {
    let t = scratch("ctl-stream-");
    let dir = t.path();
    let store = dir.join("store");
    let v = dir.join("v1");
    // Twelve files of 3 MiB: three packs (at most 16 MiB of whole content each),
    // a01-a05, a06-a10 and a11-a12.
    sh(&format!(
        "set -e; mkdir -p '{d}/srv' '{d}/var/lib'
         for i in 01 02 03 04 05 06 07 08 09 10 11 12; do head -c 3145728 /dev/urandom > '{d}/srv/a'$i; done",
        d = v.display()
    ));
    import(&store, &v, "v1");
    let a12 = imager::Hash::of(&std::fs::read(v.join("srv/a12")).unwrap());
    let object = store
        .join("objects")
        .join(&a12.to_hex()[..2])
        .join(&a12.to_hex()[2..]);
    sh(&format!(
        "chmod u+w '{o}' && printf 'XXXX' | dd of='{o}' bs=1 seek=4096 conv=notrunc status=none",
        o = object.display()
    ));
    let h = dir.join("host");
    std::fs::create_dir(&h).unwrap();
    let hs = format!("local:{}", h.display());
    let args = ["push", "v1", &hs, "--json", "--level", "1"];
    let out = run(&store, &[&args[..], &["--no-store-copies"]].concat());
    assert_eq!(out.status.code(), Some(1));
    let v = json(&String::from_utf8_lossy(&out.stdout));
    let r = &v["hosts"][0];
    assert_eq!(r["outcome"], "failed before commit", "{r:#}");
    let e = r["error"].as_str().unwrap();
    assert!(
        e.contains("packing 2 files from /srv/a11") && e.contains("corrupt"),
        "{e}"
    );
    // The first packs went out whole before the last was found unmakeable.
    assert_eq!(r["sent"]["whole"]["files"], 10, "{r:#}");
    assert_eq!(r["packs"]["packs"], 2, "{r:#}");
    assert!(!h.join("srv").exists(), "the failed push left files");
}

/// Each row: arguments, the exit status, a text the output must contain, a text that must
/// appear at most once (a cause repeated by the error chain).
#[test]
fn cli_errors_have_the_right_exit_status_and_say_their_cause_once() {
    let f = fixture("ctl-cli-");
    let (_h, hs) = new_host(&f, "never-synced");
    let missing = f.dir.join("no-store");
    let ssh = "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null";
    let rows: Vec<(Vec<&str>, i32, &str, &str)> = vec![
        (
            vec!["push", "nope", &hs],
            1,
            "no image \"nope\" in store",
            "nope",
        ),
        (
            vec!["push", "v1", &hs, "--store", missing.to_str().unwrap()],
            1,
            "no store here",
            "no store",
        ),
        (
            vec!["push", "v1", &hs, "--level", "0"],
            2,
            "0 is not in 1..=22",
            "1..=22",
        ),
        (
            vec!["push", "v1", &hs, "--level", "99"],
            2,
            "99 is not in 1..=22",
            "1..=22",
        ),
        (
            vec!["push", "v1", &hs, "-j", "0"],
            2,
            "must be 1 or more",
            "1 or more",
        ),
        (
            vec!["status", &hs, "-j", "0"],
            2,
            "must be 1 or more",
            "1 or more",
        ),
        (vec!["push", "v1", "local:rel"], 2, "bad host", "bad host"),
        (
            vec!["drift", &hs],
            1,
            "no image recorded on this host",
            "never synced",
        ),
        (
            vec![
                "push",
                "v1",
                "ssh://127.0.0.1:1/x",
                "-e",
                ssh,
                "--install-agent",
            ],
            1,
            "Connection refused",
            "Connection refused",
        ),
        (
            vec!["push", "v1", "ssh://127.0.0.1:1/x", "-e", ssh],
            1,
            "Connection refused",
            "--install-agent copies it",
        ),
    ];
    let mut failures = Vec::new();
    for (args, code, want, once) in &rows {
        let out = run(&f.store, args);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let n = all.matches(once).count();
        // "--install-agent copies it" is a hint that does not belong to an ssh failure.
        let max = if once.starts_with("--install") { 0 } else { 1 };
        if out.status.code() != Some(*code) || !all.contains(want) || n > max {
            failures.push(format!(
                "syncer {args:?}: exit {:?} (want {code}), {want:?} {}, {once:?} {n} times:\n{all}",
                out.status.code(),
                if all.contains(want) {
                    "present"
                } else {
                    "MISSING"
                }
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// A kB figure from /proc/PID/status.
fn status_kb(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in:\n{s}"))
}

#[test]
fn the_agent_does_not_read_its_whole_executable_to_say_who_it_is() {
    use std::io::{Read, Write};
    use syncer::protocol::{Msg, PROTOCOL_VERSION};
    let t = scratch("ctl-rss-");
    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let exe_kb = std::fs::metadata(env!("CARGO_BIN_EXE_syncer"))
        .unwrap()
        .len()
        / 1024;
    let mut c = syncer()
        .args(["serve", "--root"])
        .arg(&root)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let body = Msg::Hello(syncer::protocol::Hello {
        version: PROTOCOL_VERSION,
    })
    .encode()
    .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    stdin.write_all(&(body.len() as u32).to_le_bytes()).unwrap();
    stdin.write_all(&body).unwrap();
    stdin.flush().unwrap();
    // The Welcome frame: the agent has said who it is, and waits for the next message.
    let mut out = c.stdout.take().unwrap();
    let mut len = [0u8; 4];
    out.read_exact(&mut len).unwrap();
    let mut welcome = vec![0u8; u32::from_le_bytes(len) as usize];
    out.read_exact(&mut welcome).unwrap();
    let hwm = status_kb(c.id(), "VmHWM:");
    drop(stdin);
    c.wait().unwrap();
    // The executable is tens of MB (debug info); reading it whole put all of it in memory.
    assert!(
        hwm < 24 * 1024 && hwm < exe_kb / 2,
        "agent peak RSS at Welcome: {hwm} kB (executable {exe_kb} kB)"
    );
}

/// Whether an ELF file has a section of that name (per `readelf -S`).
fn has_section(path: &Path, name: &str) -> bool {
    sh(&format!("readelf -SW '{}'", path.display()))
        .lines()
        .any(|l| l.split_whitespace().any(|w| w == name))
}

/// How many symbols of an ELF file's symbol table name `needle` (per `readelf -sW`).
fn symbols_naming(path: &Path, needle: &str) -> usize {
    sh(&format!("readelf -sW '{}'", path.display()))
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn the_agent_installed_on_an_ssh_host_is_small_and_stripped_of_debug_info() {
    let f = fixture("ctl-strip-");
    let sshd = Sshd::start(&f.dir);
    let (h, _) = new_host(&f, "host");
    let hs = format!("ssh://root@127.0.0.1:{}{}", sshd.port, h.display());
    let agent = f.dir.join("remote/bin/syncer");
    let rsh = sshd.rsh();
    let args = [
        "-e",
        rsh.as_str(),
        "--agent",
        agent.to_str().unwrap(),
        "--install-agent",
    ];
    let built = Path::new(env!("CARGO_BIN_EXE_syncer-agent"));
    assert!(
        has_section(built, ".debug_info"),
        "the test binary has no debug info"
    );
    let r = push(&f.store, "v1", &hs, &args);
    assert_eq!(r["agent_installed"], true, "{r:#}");
    assert_host_is(&h, &f.store, &id(&f.store, "v1"));
    assert!(
        !has_section(&agent, ".debug_info"),
        "the installed agent has debug info"
    );
    assert!(
        has_section(&agent, ".symtab"),
        "the installed agent lost its symbols"
    );
    let (big, small) = (
        std::fs::metadata(built).unwrap().len(),
        std::fs::metadata(&agent).unwrap().len(),
    );
    assert!(small * 3 < big, "installed {small} bytes, built {big}");
    // The agent crate alone: no argument parser, progress bars, store or builder in
    // what hosts run (the controller has them all).
    let controller = Path::new(env!("CARGO_BIN_EXE_syncer"));
    for needle in ["clap_builder", "indicatif", "imager5store"] {
        assert!(
            symbols_naming(controller, needle) > 0,
            "the controller has no {needle} symbols: the check below proves nothing"
        );
        assert_eq!(
            symbols_naming(&agent, needle),
            0,
            "the installed agent carries {needle}"
        );
    }
    // The stripped agent is the same build: not installed again.
    let r = push(&f.store, "v2", &hs, &args);
    assert_eq!(r["agent_installed"], false, "{r:#}");
    assert_host_is(&h, &f.store, &id(&f.store, "v2"));
}

/// `syncer ARGS` under GNU time: (its JSON report's host, the peak RSS in kB of the
/// largest process of the push, the controller or the agent it runs).
fn push_measured(store: &Path, args: &[&str]) -> (serde_json::Value, u64) {
    let t = tempfile::NamedTempFile::new_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(t.path())
        .arg(env!("CARGO_BIN_EXE_syncer"))
        .args(args)
        .arg("--json")
        .env("IMAGER_STORE", store)
        .output()
        .unwrap();
    let r = json(&String::from_utf8_lossy(&out.stdout))["hosts"][0].clone();
    assert!(
        out.status.success() && r["ok"] == true,
        "syncer {args:?} failed:\n{r:#}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kb = std::fs::read_to_string(t.path()).unwrap();
    (r, kb.trim().lines().last().unwrap().parse().unwrap())
}

#[test]
fn a_large_file_travels_in_bounded_memory_on_both_sides() {
    // 1 GiB and a bit (mostly a hole); v2 rewrites 1 MiB in the middle and grows it.
    // The controller held a file's content and its encoding in memory (2.1 GB of RSS
    // for this file), the agent the payload and the delta's base.
    const BOUND_KB: u64 = 512 * 1024;
    let t = scratch("ctl-large-");
    let dir = t.path();
    let store = dir.join("store");
    let mut ids = Vec::new();
    for v in [1u32, 2] {
        let d = dir.join(format!("v{v}"));
        sh(&format!(
            "set -e; mkdir -p '{d}/srv' '{d}/etc' '{d}/var/lib'; printf 'v{v}\\n' > '{d}/etc/version'
             python3 - <<'PY'
import os, random
random.seed(7)
with open('{d}/srv/disk.img', 'wb') as f:
    f.truncate((1 << 30) + 12345)
    f.seek(5 << 20); f.write(random.randbytes(3 << 20))
    if {v} == 2:
        f.seek(600 << 20); f.write(random.randbytes(1 << 20))
        f.seek(0, 2); f.write(b'grown')
PY",
            d = d.display()
        ));
        ids.push(import(&store, &d, &format!("v{v}")));
    }
    let host = dir.join("host");
    std::fs::create_dir(&host).unwrap();
    let hs = format!("local:{}", host.display());
    // Through the pipe (a local host's agent would copy it from the store): the
    // chunked encoding of a whole large file, as a remote host gets it.
    let (r, kb) = push_measured(&store, &["push", "v1", &hs, "--no-store-copies"]);
    assert!(kb < BOUND_KB, "first install: peak RSS {kb} kB");
    assert_eq!(r["sent"]["chunked"]["files"], 1, "{r:#}");
    assert_host_is(&host, &store, &ids[0]);
    // Its holes stay holes on the host (3 MiB of data in 1 GiB).
    let allocated = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(host.join("srv/disk.img"))
            .unwrap()
            .blocks()
            * 512
    };
    assert!(
        allocated < 64 << 20,
        "{allocated} bytes allocated on the host"
    );
    let (r, kb) = push_measured(&store, &["push", "v2", &hs]);
    eprintln!("peak RSS of the delta push: {kb} kB");
    assert!(kb < BOUND_KB, "delta push: peak RSS {kb} kB");
    assert_eq!(r["sent"]["chunked"]["files"], 1, "{r:#}");
    // The spans the host has cost nothing: the changed MiB (random) and the tail travel.
    let bytes = r["sent"]["chunked"]["bytes"].as_u64().unwrap();
    assert!(
        bytes < 3 << 20,
        "{bytes} bytes sent for 1 MiB changed:\n{r:#}"
    );
    assert_host_is(&host, &store, &ids[1]);
}

/// An agent that starts but never greets (a host hanging before the session starts) is
/// given up on after the handshake timeout, with an error naming the host and what it
/// waited for, instead of stalling the push forever. The "ssh" here runs a shell whose
/// child holds the pipes: the whole process group must be stopped for the push to end.
#[test]
fn an_agent_that_never_greets_fails_the_host_after_the_handshake_timeout() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture("ctl-hang-");
    let ssh = f.dir.join("hanging-ssh");
    std::fs::write(&ssh, "#!/bin/sh\nsleep 60\n").unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = "ssh://hung-host/srv/x";
    let out = syncer()
        .args(["push", "v1", host, "--json", "-e", ssh.to_str().unwrap()])
        .env("IMAGER_STORE", &f.store)
        .env("SYNCER_HANDSHAKE_TIMEOUT", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let r = json(&stdout);
    let e = r["hosts"][0]["error"].as_str().unwrap_or_default();
    assert!(
        r["hosts"][0]["host"] == host && e.contains("did not send its greeting (Welcome)"),
        "{r:#}\n{stderr}"
    );
}

/// A report piped into a reader that stops early (`| head`) ends the command quietly with
/// success, as imager's do: `print!` panicked (exit status 101 and a panic message).
#[test]
fn a_report_into_a_closed_pipe_ends_quietly() {
    use std::io::Read;
    let t = scratch("ctl-pipe-");
    let src = t.path().join("src");
    // Enough paths that the dry run's JSON is far larger than a pipe's buffer.
    sh(&format!(
        "set -e; mkdir -p '{s}/var/lib' '{s}/srv'; cd '{s}/srv'; for i in $(seq 1 3000); do echo $i > f$i; done",
        s = src.display()
    ));
    let store = t.path().join("store");
    import(&store, &src, "many");
    let root = t.path().join("host");
    std::fs::create_dir(&root).unwrap();
    let mut child = syncer()
        .args(["push", "many"])
        .arg(format!("local:{}", root.display()))
        .args(["--dry-run", "--json"])
        .env("IMAGER_STORE", &store)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    // The reader is gone (stdout dropped above); the rest of the report has nowhere to go.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("syncer:"),
        "{stderr}"
    );
}

/// A remote shell that cannot find the agent (status 127) gets the hint to install it,
/// decided on the agent's exit code, not on the text of the error.
#[test]
fn an_agent_missing_on_the_host_gets_the_install_hint() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture("ctl-missing-");
    let ssh = f.dir.join("shell-without-agent");
    std::fs::write(
        &ssh,
        "#!/bin/sh\necho 'sh: 1: /usr/local/bin/syncer: not found' >&2\nexit 127\n",
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(
        &f.store,
        &["push", "v1", "ssh://h/srv/x", "-e", ssh.to_str().unwrap()],
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert_eq!(
        all.matches("--install-agent copies it there").count(),
        1,
        "{all}"
    );
    assert!(all.contains("exit status: 127"), "{all}");
}

/// A push to `local:` hosts compresses at level 1 unless told (their bytes cross a pipe
/// on this machine; at 19 a first install spent minutes compressing), and at 19, the
/// level `publish` names its files with, as soon as a mirror is given or `--level` says.
#[test]
fn a_local_push_compresses_at_level_1_unless_told() {
    let f = fixture("ctl-level-");
    let cache = f.store.join("syncer-cache");
    let level_of = |host: &str, extra: &[&str]| {
        let mut args = vec!["push", "v2", host, "--json"];
        args.extend_from_slice(extra);
        let out = run(&f.store, &args);
        assert!(out.status.success(), "{out:?}");
        json(&String::from_utf8_lossy(&out.stdout))["level"].clone()
    };
    let (a, hs_a) = new_host(&f, "host-a");
    assert_eq!(level_of(&hs_a, &[]), 1);
    assert_host_is(&a, &f.store, &id(&f.store, "v2"));
    let names: Vec<String> = entries(&cache)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n.contains(".L1.")),
        "{names:?}"
    );
    // At level 19 an empty host's content, all whole, is still compressed at level 3
    // (level 19 is slower than nearly any link), its manifest at 9; a host at v1 gets
    // its deltas at 19.
    std::fs::remove_dir_all(&cache).unwrap();
    let (_, hs_b) = new_host(&f, "host-b");
    assert_eq!(level_of(&hs_b, &["--level", "19"]), 19);
    let names = |c: &Path| -> Vec<String> {
        entries(c)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    let first = names(&cache);
    let manifest = format!("{}.L9.zst", id(&f.store, "v2"));
    assert!(
        first.contains(&manifest)
            && first
                .iter()
                .all(|n| n.ends_with(".L3.zst") || *n == manifest),
        "{first:?}"
    );
    let (_, hs_c) = new_host(&f, "host-c");
    push(&f.store, "v1", &hs_c, &["--level", "19"]);
    assert_eq!(level_of(&hs_c, &["--level", "19"]), 19);
    assert!(
        names(&cache)
            .iter()
            .any(|n| n.contains('-') && n.ends_with(".L19.zst")),
        "{:?}",
        names(&cache)
    );
}

/// A `local:` host's agent copies what would travel whole from the store itself (store
/// copies): nothing of the content crosses the pipe, the host is the image, and a
/// store object that is not what its name says fails the push before the commit,
/// leaving the host as it was.
#[test]
fn a_local_host_copies_new_files_from_the_store_and_checks_them() {
    let f = fixture("ctl-store-copy-");
    let (h, hs) = new_host(&f, "host");
    let r = push(&f.store, "v1", &hs, &[]);
    assert_eq!(r["sent"]["store_copy"]["files"], 2, "{r:#}");
    assert_eq!(r["sent"]["whole"]["files"], 0, "{r:#}");
    // The 300 kB of random content stayed out of the pipe.
    let wire = r["wire_sent"].as_u64().unwrap();
    assert!(wire < 100_000, "{wire} bytes sent for a store copy:\n{r:#}");
    assert_host_is(&h, &f.store, &id(&f.store, "v1"));

    // v2's new file, copied from a store object someone overwrote: refused.
    let new = imager::Hash::of(b"new file\n");
    let object = f
        .store
        .join("objects")
        .join(&new.to_hex()[..2])
        .join(&new.to_hex()[2..]);
    sh(&format!(
        "chmod u+w '{o}' && printf 'new fil!\\n' > '{o}'",
        o = object.display()
    ));
    let out = run(&f.store, &["push", "v2", &hs, "--json"]);
    let v = json(&String::from_utf8_lossy(&out.stdout));
    let r2 = &v["hosts"][0];
    assert_eq!(out.status.code(), Some(1), "{r2:#}");
    assert_eq!(r2["committed"], false, "{r2:#}");
    assert!(
        r2["error"]
            .as_str()
            .unwrap_or("")
            .contains("does not match the image"),
        "{r2:#}"
    );
    // The agent said it stopped before its commit point, though the controller had
    // sent Commit: the host was not touched, and the report says so.
    assert_eq!(r2["outcome"], "failed before commit", "{r2:#}");
    assert_host_is(&h, &f.store, &id(&f.store, "v1"));
}

/// `syncer cache prune`: a push marks each cache entry it reads as used, and a prune
/// keeps the most recently used entries that fit and removes the others; a dry run only
/// counts.
#[test]
fn cache_prune_keeps_the_entries_pushes_used_last() {
    let (_t, dir, store) = two_image_store("cache-prune-", 200_000);
    let cache = dir.join("cache");
    let c = cache.to_str().unwrap();
    let host = |n: &str| {
        let h = dir.join(n);
        std::fs::create_dir_all(&h).unwrap();
        format!("local:{}", h.display())
    };
    let (h1, h2) = (host("h1"), host("h2"));
    // Packs (not store copies) so that a first install goes through the cache.
    let push = |image: &str, h: &str| {
        ok(
            &store,
            &["push", image, h, "--cache", c, "--no-store-copies"],
        );
    };
    push("v1", &h1);
    push("v2", &h1);
    let entries = || -> Vec<(String, u64, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    m.len(),
                    m.modified().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let all = entries();
    assert!(all.len() >= 2, "{all:?}");
    // Everything last used a day ago; then a first install of v1 reads its packs. What
    // the push used is what it marked (or wrote): whatever changed since.
    sh(&format!("touch -m -d '1 day ago' '{}'/*", cache.display()));
    let before = entries();
    push("v1", &h2);
    let now = entries();
    let used: Vec<&(String, u64, _)> = now.iter().filter(|e| !before.contains(e)).collect();
    // Entries read (not only written) are marked: those of the first install of h1.
    assert!(
        used.iter().any(|u| before.iter().any(|b| b.0 == u.0)),
        "{used:?}"
    );
    assert!(!used.is_empty() && used.len() < now.len(), "{now:?}");
    let used_bytes: u64 = used.iter().map(|e| e.1).sum();

    let prune = |max: &str, dry: bool| {
        let mut a = vec!["cache", "prune", "--cache", c, "--max-size", max, "--json"];
        if dry {
            a.push("--dry-run");
        }
        json(&ok(&store, &a))
    };
    let max = used_bytes.to_string();
    let dry = prune(&max, true);
    assert_eq!(dry["removed"], (now.len() - used.len()) as u64, "{dry:#}");
    assert_eq!(entries(), now, "a dry run removes nothing");
    let r = prune(&max, false);
    assert_eq!(
        (r["kept"].as_u64(), r["kept_bytes"].as_u64()),
        (Some(used.len() as u64), Some(used_bytes))
    );
    let left: Vec<String> = entries().into_iter().map(|e| e.0).collect();
    let want: Vec<String> = used.iter().map(|e| e.0.clone()).collect();
    assert_eq!(left, want);
    // The pushes still work from what is left (what is missing is computed again).
    push("v2", &h2);
    assert!(prune("0", false)["kept"] == 0);
    assert!(entries().is_empty());
    // A size it cannot read is a usage error naming the value.
    let out = run(
        &store,
        &["cache", "prune", "--cache", c, "--max-size", "lots"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"lots\" is not a size"));
}

/// A host never synced that holds an image's tree is told the manifest as a delta from
/// its own view. Once that delta is in the cache it answers such a host without the
/// store's images being looked at, even after the image it was made from left the store
/// (before, the store was searched each time, and such a host was told the manifest
/// whole); without that delta, and without the image, the manifest goes whole.
#[test]
fn a_host_never_synced_is_answered_from_the_manifest_delta_in_the_cache() {
    let f = fixture("ctl-identity-");
    let v2 = id(&f.store, "v2");
    let copy_of_v1 = |name: &str| {
        let h = f.dir.join(name);
        copy_tree(&f.dir.join("v1"), &h);
        (h.clone(), format!("local:{}", h.display()))
    };
    let (a, hs_a) = copy_of_v1("host-a");
    let r = push(&f.store, "v2", &hs_a, &[]);
    assert_eq!(r["recognized"], true, "{r:#}");
    assert_host_is(&a, &f.store, &v2);
    let s = imager::store::Store::open(&f.store, imager::store::Access::Write).unwrap();
    let o = imager::manage::RmOptions {
        force: true,
        gc: false,
    };
    imager::manage::rm(&s, &["v1".to_string()], o).unwrap();
    drop(s);
    let (b, hs_b) = copy_of_v1("host-b");
    let r = push(&f.store, "v2", &hs_b, &[]);
    assert_eq!(r["recognized"], true, "{r:#}");
    assert_host_is(&b, &f.store, &v2);
    // Another cache, and no image of the store with the host's tree: whole.
    let (c, hs_c) = copy_of_v1("host-c");
    let other = f.dir.join("other-cache");
    let r = push(&f.store, "v2", &hs_c, &["--cache", other.to_str().unwrap()]);
    assert_eq!(r["recognized"], false, "{r:#}");
    assert_host_is(&c, &f.store, &v2);
}
