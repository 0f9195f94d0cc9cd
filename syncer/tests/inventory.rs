//! Inventories that carry host settings: hosts behind a real sshd reached only through
//! the inventory's connection settings (no `-e`, no `--agent`), `--limit`, `--dry-run`,
//! a bad key refused, and `pre`/`post` hooks around each host.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;

use common::*;
use std::path::{Path, PathBuf};

/// Two ssh roots behind one sshd (colo "edge") and two `local:` roots (colo "core"),
/// empty; images v1 and v2 in the store.
struct Fleet {
    _t: tempfile::TempDir,
    dir: PathBuf,
    store: PathBuf,
    hosts: Vec<(String, PathBuf)>,
    sshd: Sshd,
}

impl Fleet {
    fn new(prefix: &str) -> Fleet {
        let (t, dir, store) = two_image_store(prefix, 20_000);
        let sshd = Sshd::start(&dir);
        let mut hosts = Vec::new();
        for (i, scheme) in [
            (1, "ssh://127.0.0.1"),
            (2, "ssh://127.0.0.1"),
            (3, "local:"),
            (4, "local:"),
        ] {
            let root = dir.join(format!("h{i}"));
            std::fs::create_dir(&root).unwrap();
            hosts.push((format!("{scheme}{}", root.display()), root));
        }
        Fleet {
            _t: t,
            dir,
            store,
            hosts,
            sshd,
        }
    }

    /// The inventory: ssh options globally, the key and agent per colo, the port per
    /// host; `extra` goes into the global [policy].
    fn inventory(&self, extra: &str) -> PathBuf {
        let p = self.dir.join("fleet.toml");
        std::fs::write(
            &p,
            format!(
                "[connect]\nuser = \"root\"\nssh_options = [\"StrictHostKeyChecking=no\", \
                 \"UserKnownHostsFile=/dev/null\", \"BatchMode=yes\", \"LogLevel=ERROR\"]\n\
                 [policy]\npause = \"none\"\ncanary = 1\nparallel = 1\n{extra}\n\n\
                 [[colo]]\nname = \"edge\"\nhosts = [\n  {{ host = \"{}\", port = {} }},\n  \
                 {{ host = \"{}\", port = {} }},\n]\n\
                 [colo.connect]\nidentity = \"ssh-client-id\"\nagent = \"{}\"\n\n\
                 [[colo]]\nname = \"core\"\nhosts = [\"{}\", \"{}\"]\n",
                self.hosts[0].0,
                self.sshd.port,
                self.hosts[1].0,
                self.sshd.port,
                env!("CARGO_BIN_EXE_syncer"),
                self.hosts[2].0,
                self.hosts[3].0,
            ),
        )
        .unwrap();
        p
    }

    /// `syncer rollout ARGS --json` with no connection flags: success and the report.
    fn rollout(&self, args: &[&str]) -> (std::process::Output, serde_json::Value) {
        let mut a = vec!["rollout", "--yes", "--json"];
        a.extend_from_slice(args);
        let out = run(&self.store, &a);
        let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out, v)
    }

    fn image_of(&self, i: usize) -> Option<String> {
        std::fs::read_to_string(self.hosts[i].1.join("var/lib/syncer/image"))
            .ok()
            .map(|s| s.trim().to_string())
    }
}

/// Every file under `dir` with its content's hash: what "changed nothing" compares.
fn snapshot(dir: &Path) -> Vec<(PathBuf, imager::Hash)> {
    let mut v: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().to_path_buf(), file_hash(e.path())))
        .collect();
    v.sort();
    v
}

#[test]
fn inventory_settings_reach_hosts_with_no_connection_flags_and_limit_selects() {
    let f = Fleet::new("inv-settings-");
    let inv = f.inventory("");
    let inv_s = inv.to_str().unwrap();
    let (v1, v2) = (id(&f.store, "v1"), id(&f.store, "v2"));
    let (out, st) = f.rollout(&["v1", "--inventory", inv_s]);
    assert!(
        out.status.success(),
        "{st:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, (_, root)) in f.hosts.iter().enumerate() {
        assert_eq!(f.image_of(i), Some(v1.to_hex()), "host {i}");
        assert_host_is_whole(root, &f.store, &v1);
    }
    // status --inventory reaches them the same way.
    let s = json(&ok(&f.store, &["status", "--inventory", inv_s, "--json"]));
    assert_eq!(s.as_array().unwrap().len(), 4);
    for row in s.as_array().unwrap() {
        assert_eq!(row["status"]["image"], v1.to_hex(), "{row:#}");
    }

    // --limit by glob: one ssh host; the others are left alone and reported.
    let (out, st) = f.rollout(&["v2", "--inventory", inv_s, "--limit", "ssh://*/h2"]);
    assert!(out.status.success(), "{st:#}");
    assert_eq!(st["hosts"].as_array().unwrap().len(), 1, "{st:#}");
    assert_eq!(st["not_selected"].as_array().unwrap().len(), 3, "{st:#}");
    assert_eq!(
        st["hosts"][0]["wave"], "canary",
        "the selected host is its colo's canary"
    );
    let images: Vec<_> = (0..4).map(|i| f.image_of(i).unwrap()).collect();
    assert_eq!(images, [v1.to_hex(), v2.to_hex(), v1.to_hex(), v1.to_hex()]);
    // --limit by colo.
    let (out, st) = f.rollout(&["v2", "--inventory", inv_s, "--limit", "core"]);
    assert!(out.status.success(), "{st:#}");
    let images: Vec<_> = (0..4).map(|i| f.image_of(i).unwrap()).collect();
    assert_eq!(images, [v1.to_hex(), v2.to_hex(), v2.to_hex(), v2.to_hex()]);
    assert_host_is(&f.hosts[3].1, &f.store, &v2);
    // A pattern that matches nothing is a usage error naming it; nothing is touched.
    let (out, _) = f.rollout(&[
        "v2",
        "--inventory",
        inv_s,
        "--limit",
        "core",
        "--limit",
        "ssh://nowhere*",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--limit \"ssh://nowhere*\" matches no host"),
        "{err}"
    );
    assert_eq!(f.image_of(0), Some(v1.to_hex()));
}

#[test]
fn a_dry_run_reports_every_hosts_plan_and_changes_nothing() {
    let f = Fleet::new("inv-dry-");
    let inv = f.inventory("");
    let inv_s = inv.to_str().unwrap();
    let (out, st) = f.rollout(&["v1", "--inventory", inv_s]);
    assert!(out.status.success(), "{st:#}");
    // A stray file under a prefix the image owns, which v2 would delete.
    let stray = f.hosts[2].1.join("etc/stray.conf");
    std::fs::write(&stray, "x").unwrap();
    let state = f.dir.join("fleet.rollout.json");
    let hosts_before: Vec<_> = f.hosts.iter().map(|h| snapshot(&h.1)).collect();
    let state_before = std::fs::read(&state).unwrap();

    let (out, plan) = f.rollout(&["v2", "--inventory", inv_s, "--dry-run"]);
    assert!(
        out.status.success(),
        "{plan:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let colos = plan["colos"].as_array().unwrap();
    assert_eq!(colos.len(), 2);
    let waves: Vec<_> = colos[1]["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].clone())
        .collect();
    assert_eq!(waves, ["canary", "wave 1"]);
    let h3 = &colos[1]["waves"][0]["hosts"][0];
    assert_eq!(h3["host"], f.hosts[2].0.as_str(), "{plan:#}");
    assert!(
        h3["changed"].as_u64().unwrap() > 0 && h3["bytes"].as_u64().unwrap() > 0,
        "{h3:#}"
    );
    assert_eq!(
        h3["deletes"],
        serde_json::json!(["/etc/stray.conf"]),
        "{h3:#}"
    );
    for w in colos.iter().flat_map(|c| c["waves"].as_array().unwrap()) {
        for h in w["hosts"].as_array().unwrap() {
            assert_eq!(h["ok"], true, "{h:#}");
        }
    }
    // Nothing written: hosts and the rollout state as they were.
    for (i, h) in f.hosts.iter().enumerate() {
        assert_eq!(snapshot(&h.1), hosts_before[i], "host {i}");
    }
    assert_eq!(std::fs::read(&state).unwrap(), state_before);

    // The text plan, and a host that cannot be reached says why.
    let text = String::from_utf8(
        run(
            &f.store,
            &[
                "rollout",
                "v2",
                "--inventory",
                inv_s,
                "--dry-run",
                "--limit",
                "core",
            ],
        )
        .stdout,
    )
    .unwrap();
    assert!(
        text.contains("colo core:") && text.contains("delete /etc/stray.conf"),
        "{text}"
    );
    assert!(!text.contains("colo edge"), "{text}");
    let text = std::fs::read_to_string(&inv).unwrap().replace(
        &format!("port = {} }},\n]", f.sshd.port),
        &format!("port = {} }},\n]", free_port()),
    );
    std::fs::write(&inv, text).unwrap();
    let (out, plan) = f.rollout(&["v2", "--inventory", inv_s, "--dry-run", "--limit", "edge"]);
    assert!(!out.status.success(), "{plan:#}");
    let h2 = &plan["colos"][0]["waves"][1]["hosts"][0];
    assert_eq!(h2["ok"], false, "{plan:#}");
    assert!(h2["error"].as_str().unwrap().contains("onnect"), "{h2:#}");
    assert_eq!(std::fs::read(&state).unwrap(), state_before);
}

#[test]
fn a_bad_key_in_an_inventory_is_refused_naming_the_file_and_key() {
    let t = scratch("inv-badkey-");
    let inv = t.path().join("fleet.toml");
    for (text, key) in [
        (
            "[connect]\nprot = 22\n[[colo]]\nname = \"a\"\nhosts = [\"local:/x\"]\n",
            "prot",
        ),
        (
            "[[colo]]\nname = \"a\"\nhosts = [{ host = \"ssh://h\", identiy = \"k\" }]\n",
            "identiy",
        ),
        (
            "[[colo]]\nname = \"a\"\nhosts = [\"local:/x\"]\n[colo.connect]\nagnet = \"/a\"\n",
            "agnet",
        ),
        (
            "[policy]\npre_hook = \"true\"\n[[colo]]\nname = \"a\"\nhosts = [\"local:/x\"]\n",
            "pre_hook",
        ),
    ] {
        std::fs::write(&inv, text).unwrap();
        let out = run(
            &t.path().join("store"),
            &["rollout", "v1", "--inventory", inv.to_str().unwrap()],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&inv.display().to_string()) && err.contains(&format!("`{key}`")),
            "{text}: {err}"
        );
    }
}

/// Three `local:` hosts at v1 with hooks that log to a file: h2's pre fails, h3's health
/// check fails, h4's post fails.
#[test]
fn pre_and_post_hooks_run_around_each_host_and_their_failures_fail_it() {
    let t = scratch("inv-hooks-");
    let dir = t.path();
    let store = dir.join("store");
    mini_root(&dir.join("v1"), 1, 1000);
    mini_root(&dir.join("v2"), 2, 1000);
    let v1 = import(&store, &dir.join("v1"), "v1");
    let v2 = import(&store, &dir.join("v2"), "v2");
    let hosts: Vec<PathBuf> = (1..=4).map(|i| dir.join(format!("h{i}"))).collect();
    let spec = |i: usize| format!("local:{}", hosts[i].display());
    for h in &hosts {
        std::fs::create_dir(h).unwrap();
        ok(&store, &["push", "v1", &format!("local:{}", h.display())]);
    }
    std::fs::write(hosts[2].join("root/fail-health"), "").unwrap();
    let list: Vec<String> = (0..4).map(|i| format!("\"{}\"", spec(i))).collect();
    let inv = dir.join("fleet.toml");
    // Relative to the inventory's directory, where hooks run.
    std::fs::write(
        &inv,
        format!(
            "[policy]\npause = \"none\"\ncanary = 0\nparallel = 1\nfailure_budget = 3\n\
             pre = 'echo \"pre $SYNCER_HOST $SYNCER_COLO $SYNCER_WAVE $SYNCER_IMAGE\" >> hooks.log; \
             case $SYNCER_HOST in *h2) echo draining failed; exit 3;; esac'\n\
             post = 'echo \"post $SYNCER_HOST $SYNCER_OUTCOME\" >> hooks.log; \
             case $SYNCER_HOST in *h4) echo undrain failed >&2; exit 4;; esac'\n\
             [policy.health]\ncommand = \"test ! -e /root/fail-health\"\ntimeout = 10\n\n\
             [[colo]]\nname = \"one\"\nhosts = [{}]\n",
            list.join(", ")
        ),
    )
    .unwrap();
    let before = snapshot(&hosts[1]);
    let out = run(
        &store,
        &[
            "rollout",
            "v2",
            "--inventory",
            inv.to_str().unwrap(),
            "--yes",
            "--json",
        ],
    );
    let st = json(&String::from_utf8_lossy(&out.stdout));
    assert!(!out.status.success() && st["finished"] == true, "{st:#}");
    let log = std::fs::read_to_string(dir.join("hooks.log")).unwrap();
    let v2h = v2.to_hex();
    let want: Vec<String> = vec![
        format!("pre {} one wave 1 {v2h}", spec(0)),
        format!("post {} ok", spec(0)),
        format!("pre {} one wave 1 {v2h}", spec(1)),
        format!("post {} failed", spec(1)),
        format!("pre {} one wave 1 {v2h}", spec(2)),
        format!("post {} failed", spec(2)),
        format!("pre {} one wave 1 {v2h}", spec(3)),
        format!("post {} ok", spec(3)),
    ];
    assert_eq!(log.lines().collect::<Vec<_>>(), want);
    let rec = |i: usize| {
        st["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == spec(i).as_str())
            .unwrap()
            .clone()
    };
    let image = |i: usize| std::fs::read_to_string(hosts[i].join("var/lib/syncer/image")).unwrap();
    // h1: ok, at v2, both hooks recorded.
    assert_eq!(rec(0)["outcome"], "ok");
    assert_eq!(rec(0)["pre"]["status"], 0);
    assert_eq!(image(0).trim(), v2h);
    let failed_for = |r: &serde_json::Value, why: &str| {
        assert_eq!(r["outcome"], "failed", "{r:#}");
        let reason = r["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(why), "{r:#}");
    };
    // h2: failed by its pre, never touched.
    let h2 = rec(1);
    failed_for(&h2, "the pre hook failed (exit 3: draining failed)");
    assert_eq!(h2["pre"]["output"], serde_json::json!(["draining failed"]));
    assert_eq!(snapshot(&hosts[1]), before);
    // h3: its health check failed, rolled back; its post saw "failed".
    let h3 = rec(2);
    failed_for(&h3, "health check");
    assert_eq!(h3["rollback"]["ok"], true, "{h3:#}");
    assert_eq!(image(2).trim(), v1.to_hex());
    // h4: pushed, then failed by its post (not rolled back: the post runs after).
    failed_for(&rec(3), "the post hook failed (exit 4: undrain failed)");
    assert_eq!(image(3).trim(), v2h);
    // The text report names the hook on the host's line.
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("post hook exit 4: undrain failed"), "{text}");

    // `syncer rollback` runs the same hooks around each host it puts back, over the
    // hosts `--limit` selects: h1 and h4 back to v1, the others left alone.
    std::fs::remove_file(dir.join("hooks.log")).unwrap();
    let (s0, s3) = (spec(0), spec(3));
    let inv_s = inv.to_str().unwrap();
    let rb_args = ["rollback", "--inventory", inv_s, "--json", "--limit"];
    let out = run(&store, &[&rb_args[..], &[&s0, "--limit", &s3]].concat());
    let rb = json(&String::from_utf8_lossy(&out.stdout));
    assert!(!out.status.success(), "{rb:#}");
    let log = std::fs::read_to_string(dir.join("hooks.log")).unwrap();
    let v1h = v1.to_hex();
    let want: Vec<String> = vec![
        format!("pre {s0} one rollback {v1h}"),
        format!("post {s0} ok"),
        format!("pre {s3} one rollback {v1h}"),
        format!("post {s3} ok"),
    ];
    assert_eq!(log.lines().collect::<Vec<_>>(), want);
    let rb = rb.as_array().unwrap();
    assert_eq!(rb.len(), 2, "{rb:#?}");
    assert_eq!(
        (rb[0]["host"].as_str(), rb[0]["ok"].as_bool()),
        (Some(&*s0), Some(true))
    );
    assert_eq!(rb[0]["pre"]["status"], 0);
    assert_eq!(rb[1]["ok"], false);
    let err = rb[1]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("the post hook failed (exit 4: undrain failed)"),
        "{rb:#?}"
    );
    for i in [0, 3] {
        assert_eq!(image(i).trim(), v1h, "host {i}");
    }
    assert_eq!(image(2).trim(), v1h);

    // A failed pre leaves its host untouched.
    let before = snapshot(&hosts[1]);
    let out = run(&store, &[&rb_args[..], &[&spec(1), "--to", "v2"]].concat());
    let rb = json(&String::from_utf8_lossy(&out.stdout));
    assert!(!out.status.success(), "{rb:#}");
    let err = rb[0]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("the pre hook failed (exit 3: draining failed)"),
        "{rb:#}"
    );
    assert!(err.contains("the host was not touched"), "{rb:#}");
    assert_eq!(snapshot(&hosts[1]), before);
}

/// A host spec's own `:port` and `user@` win over everything, the ssh command line's own
/// `-p` included (as the README says): the spec names the one host, `-e` and `rsh` are
/// shared by many.
/// A host's own `port` and `user` beat a `-p` and `-l` in its colo's `rsh` (more
/// specific), where a global `port` loses to that `rsh` (less specific).
#[test]
fn a_hosts_port_and_user_win_over_its_colos_rsh() {
    let f = Fleet::new("inv-rsh-");
    let inv = f.dir.join("rsh.toml");
    let agent = env!("CARGO_BIN_EXE_syncer");
    // Port 1 refuses connections, user nobody has no key: reached only if each host's
    // own settings come first.
    std::fs::write(
        &inv,
        format!(
            "[connect]\nport = 1\n[policy]\npause = \"none\"\ncanary = 1\nparallel = 1\n\n\
             [[colo]]\nname = \"edge\"\nhosts = [\n  {{ host = \"{}\", port = {}, user = \"root\" }},\n]\n\
             [colo.connect]\nrsh = \"{} -p 1 -l nobody\"\nagent = \"{agent}\"\n\n\
             [[colo]]\nname = \"far\"\nhosts = [\"{}\"]\n\
             [colo.connect]\nrsh = \"{} -p {} -l root\"\nagent = \"{agent}\"\n",
            f.hosts[0].0,
            f.sshd.port,
            f.sshd.rsh(),
            f.hosts[1].0,
            f.sshd.rsh(),
            f.sshd.port,
        ),
    )
    .unwrap();
    let (out, st) = f.rollout(&["v1", "--inventory", inv.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{st:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..2 {
        assert_host_is_whole(&f.hosts[i].1, &f.store, &id(&f.store, "v1"));
    }
}

#[test]
fn a_host_specs_own_port_wins_over_the_ssh_command_lines() {
    let f = Fleet::new("inv-port-");
    let host = format!(
        "ssh://root@127.0.0.1:{}{}",
        f.sshd.port,
        f.hosts[0].1.display()
    );
    // Port 1 refuses connections: reached only if the spec's port is the one used.
    let rsh = format!("{} -p 1 -l nobody", f.sshd.rsh());
    let out = run(
        &f.store,
        &[
            "push",
            "v1",
            &host,
            "-e",
            &rsh,
            "--agent",
            env!("CARGO_BIN_EXE_syncer"),
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_host_is_whole(&f.hosts[0].1, &f.store, &id(&f.store, "v1"));
}
