//! Rollouts over a fleet of real hosts: `local:` roots and two sshd instances on
//! 127.0.0.1, in two colos. Health checks that fail, failure budgets, `--resume`,
//! rollback, bandwidth limits, and reports that agree with the hosts.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;

use common::*;
use std::path::PathBuf;

/// A fleet: 8 local roots and 2 ssh hosts (each behind its own sshd), all at image v1.
struct Fleet {
    _t: tempfile::TempDir,
    dir: PathBuf,
    store: PathBuf,
    /// Host spec and its root directory.
    hosts: Vec<(String, PathBuf)>,
    _sshd: Vec<Sshd>,
    rsh: String,
}

impl Fleet {
    fn new(prefix: &str) -> Fleet {
        let (t, dir, store) = two_image_store(prefix, 300_000);
        // Two sshds, one client key.
        let sshd = vec![Sshd::start(&dir), Sshd::start(&dir)];
        let rsh = sshd[0].rsh();
        let mut hosts = Vec::new();
        for i in 1..=8 {
            let root = dir.join(format!("h{i}"));
            std::fs::create_dir(&root).unwrap();
            hosts.push((format!("local:{}", root.display()), root));
        }
        for (i, s) in sshd.iter().enumerate() {
            let root = dir.join(format!("s{}", i + 1));
            std::fs::create_dir(&root).unwrap();
            hosts.push((
                format!("ssh://root@127.0.0.1:{}{}", s.port, root.display()),
                root,
            ));
        }
        let f = Fleet {
            _t: t,
            dir,
            store,
            hosts,
            _sshd: sshd,
            rsh,
        };
        let mut args = vec!["push", "v1"];
        let specs: Vec<String> = f.hosts.iter().map(|h| h.0.clone()).collect();
        args.extend(specs.iter().map(String::as_str));
        args.extend(f.conn());
        ok(&f.store, &args);
        f
    }

    fn conn(&self) -> Vec<&str> {
        vec!["-e", &self.rsh, "--agent", env!("CARGO_BIN_EXE_syncer")]
    }

    fn spec(&self, i: usize) -> &str {
        &self.hosts[i].0
    }

    /// An inventory: colo "test" = hosts 0..3, colo "ams" = hosts 3..10; `policy` is
    /// added to the global [policy] table.
    fn inventory(&self, policy: &str) -> PathBuf {
        let list = |r: std::ops::Range<usize>| {
            r.map(|i| format!("\"{}\"", self.spec(i)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let p = self.dir.join("fleet.toml");
        std::fs::write(
            &p,
            format!(
                "[policy]\npause = \"none\"\nparallel = 4\n{policy}\n\
                 [policy.health]\ncommand = \"test ! -e /root/fail-health\"\ntimeout = 10\nretries = 1\ninterval = 1\n\n\
                 [[colo]]\nname = \"test\"\nhosts = [{}]\n\n[[colo]]\nname = \"ams\"\nhosts = [{}]\n",
                list(0..3),
                list(3..10)
            ),
        )
        .unwrap();
        p
    }

    fn image_of(&self, i: usize) -> String {
        std::fs::read_to_string(self.hosts[i].1.join("var/lib/syncer/image"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn fail_health(&self, i: usize, fail: bool) {
        let m = self.hosts[i].1.join("root/fail-health");
        if fail {
            std::fs::write(m, "").unwrap();
        } else {
            std::fs::remove_file(m).unwrap();
        }
    }

    fn rollout(&self, args: &[&str]) -> (bool, serde_json::Value) {
        let mut a = vec!["rollout"];
        a.extend_from_slice(args);
        a.push("--json");
        a.extend(self.conn());
        let out = run(&self.store, &a);
        let v = json(&String::from_utf8_lossy(&out.stdout));
        (out.status.success(), v)
    }

    fn id(&self, name: &str) -> String {
        imager::store::Store::open(&self.store, imager::store::Access::Read)
            .unwrap()
            .resolve(name)
            .unwrap()
            .to_hex()
    }
}

fn result<'a>(st: &'a serde_json::Value, host: &str) -> &'a serde_json::Value {
    st["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == host)
        .unwrap_or_else(|| panic!("{host} not in the report:\n{st:#}"))
}

#[test]
fn a_failing_canary_stops_its_colo_is_rolled_back_and_nothing_else_is_touched() {
    let f = Fleet::new("rollout-canary-");
    let inv = f.inventory("canary = 1\nwaves = [\"100%\"]");
    let (v1, v2) = (f.id("v1"), f.id("v2"));
    f.fail_health(0, true);
    let (good, st) = f.rollout(&["v2", "--inventory", inv.to_str().unwrap(), "--yes"]);
    assert!(!good);
    assert!(st["stopped"].as_str().unwrap().contains("canary"), "{st:#}");
    assert_eq!(st["hosts"].as_array().unwrap().len(), 1, "{st:#}");
    let canary = result(&st, f.spec(0));
    assert_eq!(canary["outcome"], "failed");
    assert!(
        canary["error"].as_str().unwrap().contains("health check"),
        "{canary:#}"
    );
    assert_eq!(canary["rollback"]["ok"], true, "{canary:#}");
    assert_eq!(canary["image_after"], v1);
    // The canary really is back at v1, as a delta, and every other host never moved.
    assert_host_is(
        &f.hosts[0].1,
        &f.store,
        &imager::Hash::from_hex(&v1).unwrap(),
    );
    for i in 0..10 {
        assert_eq!(f.image_of(i), v1, "host {i}");
        // The failed image is not recorded as the canary's "previous" either.
        assert!(
            !f.hosts[i].1.join("var/lib/syncer/image.previous").exists(),
            "host {i}"
        );
    }
    let _ = v2;
}

#[test]
fn a_spent_failure_budget_stops_after_its_wave_and_resume_completes() {
    let f = Fleet::new("rollout-budget-");
    let inv = f.inventory("canary = 1\nwaves = [2]\nfailure_budget = 1");
    let (v1, v2) = (f.id("v1"), f.id("v2"));
    // colo test: canary h1, then a wave of h2 and h3, both failing.
    f.fail_health(1, true);
    f.fail_health(2, true);
    let (good, st) = f.rollout(&["v2", "--inventory", inv.to_str().unwrap(), "--yes"]);
    assert!(!good);
    assert!(
        st["stopped"].as_str().unwrap().contains("budget is 1"),
        "{st:#}"
    );
    assert_eq!(result(&st, f.spec(0))["outcome"], "ok");
    for i in [1, 2] {
        let r = result(&st, f.spec(i));
        assert_eq!(r["outcome"], "failed");
        assert_eq!(r["rollback"]["ok"], true);
        assert_eq!(f.image_of(i), v1);
    }
    assert_eq!(f.image_of(0), v2);
    for i in 3..10 {
        assert_eq!(f.image_of(i), v1, "host {i} of the next colo was touched");
    }

    // The fault is fixed: --resume finishes the rollout, colo after colo.
    f.fail_health(1, false);
    f.fail_health(2, false);
    let (good, st) = f.rollout(&["--resume", "--inventory", inv.to_str().unwrap(), "--yes"]);
    assert!(good, "{st:#}");
    assert_eq!(st["finished"], true);
    assert_eq!(st["hosts"].as_array().unwrap().len(), 10);
    for (i, (spec, root)) in f.hosts.iter().enumerate() {
        let r = result(&st, spec);
        assert_eq!(r["outcome"], "ok", "{r:#}");
        // The report agrees with the host.
        assert_eq!(r["image_after"], f.image_of(i));
        assert_eq!(f.image_of(i), v2);
        assert_host_is(root, &f.store, &imager::Hash::from_hex(&v2).unwrap());
    }
    // Every host got content: the canary in the first run, the others now.
    let pushed = st["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["changed"].as_u64().unwrap() > 0)
        .count();
    assert_eq!(pushed, 10, "{st:#}");

    // status --inventory: every host at v2, clean, last result ok.
    let mut a = vec!["status", "--inventory", inv.to_str().unwrap(), "--json"];
    a.extend(f.conn());
    let s = json(&ok(&f.store, &a));
    for row in s.as_array().unwrap() {
        assert_eq!(row["status"]["image"], v2, "{row:#}");
        assert_eq!(row["status"]["drifted"], false);
        assert_eq!(row["last"]["outcome"], "ok");
    }

    // rollback of one colo: back to v1 (each host's previous image), the other stays.
    let mut a = vec![
        "rollback",
        "--inventory",
        inv.to_str().unwrap(),
        "--colo",
        "test",
        "--json",
    ];
    a.extend(f.conn());
    let r = json(&ok(&f.store, &a));
    assert_eq!(r.as_array().unwrap().len(), 3);
    for i in 0..3 {
        assert_eq!(f.image_of(i), v1);
    }
    for i in 3..10 {
        assert_eq!(f.image_of(i), v2);
    }
    // And to a named image.
    let mut a = vec![
        "rollback",
        "--inventory",
        inv.to_str().unwrap(),
        "--colo",
        "test",
        "--to",
        "v2",
    ];
    a.extend(f.conn());
    ok(&f.store, &a);
    for i in 0..10 {
        assert_eq!(f.image_of(i), v2, "host {i}");
    }
}

/// Three empty `local:` hosts synced to v1 (a tiny root), and v3 carrying `payload`
/// incompressible bytes: the scratch dir, store, host roots and both image IDs.
fn small_fleet(
    prefix: &str,
    payload: usize,
) -> (tempfile::TempDir, PathBuf, Vec<PathBuf>, String, String) {
    let t = scratch(prefix);
    let dir = t.path().to_path_buf();
    let store = dir.join("store");
    mini_root(&dir.join("v1"), 1, 1000);
    mini_root(&dir.join("v3"), 3, payload);
    let v1 = import(&store, &dir.join("v1"), "v1").to_hex();
    let v3 = import(&store, &dir.join("v3"), "v3").to_hex();
    let hosts: Vec<PathBuf> = (1..=3).map(|i| dir.join(format!("h{i}"))).collect();
    for h in &hosts {
        std::fs::create_dir(h).unwrap();
        ok(&store, &["push", "v1", &format!("local:{}", h.display())]);
    }
    (t, store, hosts, v1, v3)
}

#[test]
fn bandwidth_limits_are_never_exceeded() {
    let (t, store, hosts, _, _) = small_fleet("rollout-bw-", 3_000_000);
    let dir = t.path();
    let inv = dir.join("fleet.toml");
    std::fs::write(
        &inv,
        format!(
            "[policy]\npause = \"none\"\ncanary = 0\nparallel = 2\n\n\
             [[colo]]\nname = \"one\"\nhosts = [\"local:{}\"]\n[colo.policy]\nbandwidth_per_host = \"1MB\"\n\n\
             [[colo]]\nname = \"two\"\nhosts = [\"local:{}\", \"local:{}\"]\n[colo.policy]\nbandwidth_total = \"1MB\"\n",
            hosts[0].display(),
            hosts[1].display(),
            hosts[2].display()
        ),
    )
    .unwrap();
    let out = run(
        &store,
        &[
            "rollout",
            "v3",
            "--inventory",
            inv.to_str().unwrap(),
            "--yes",
            "--json",
        ],
    );
    let st = json(&String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{st:#}");
    let rate = |h: &serde_json::Value| {
        h["push"]["wire_sent"].as_f64().unwrap() / h["push"]["phases"]["send"].as_f64().unwrap()
    };
    let hs = st["hosts"].as_array().unwrap();
    let one = hs.iter().find(|h| h["colo"] == "one").unwrap();
    // The limits hold: never above them (a loaded machine can only send slower, so
    // there is no lower bound here; the buckets' own unit tests check the rate itself).
    let r = rate(one) / 1e6;
    assert!(r <= 1.2, "per-host limit 1 MB/s, measured {r:.3} MB/s");
    // Two hosts sharing 1 MB/s: together they get about that.
    let two: Vec<_> = hs.iter().filter(|h| h["colo"] == "two").collect();
    let bytes: f64 = two
        .iter()
        .map(|h| h["push"]["wire_sent"].as_f64().unwrap())
        .sum();
    let secs = two
        .iter()
        .map(|h| h["push"]["phases"]["send"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let r = bytes / secs / 1e6;
    assert!(r <= 1.2, "total limit 1 MB/s, measured {r:.3} MB/s");
}

#[test]
fn ctrl_c_lets_the_hosts_in_flight_finish_and_starts_no_more() {
    let (t, store, hosts, v1, v3) = small_fleet("rollout-int-", 2_000_000);
    let dir = t.path();
    let list: Vec<String> = hosts
        .iter()
        .map(|h| format!("local:{}", h.display()))
        .collect();
    let inv = dir.join("fleet.toml");
    std::fs::write(
        &inv,
        format!(
            "[policy]\npause = \"none\"\ncanary = 0\nparallel = 1\nbandwidth_per_host = \"1MB\"\n\n\
             [[colo]]\nname = \"one\"\nhosts = [{}]\n",
            list.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
        ),
    )
    .unwrap();
    let mut cmd = syncer();
    // As a terminal does: the controller leads a process group, Ctrl-C signals the group.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd
        .args([
            "rollout",
            "v3",
            "--inventory",
            inv.to_str().unwrap(),
            "--yes",
            "--json",
        ])
        .env("IMAGER_STORE", &store)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the first host's agent runs: at 1 MB/s its 2 MB take two seconds
    // after that whatever the machine's speed, so the host is in flight.
    let first = format!("serve --root {}", hosts[0].display());
    while !std::process::Command::new("pgrep")
        .args(["-f", &first])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    rustix::process::kill_process_group(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let st = json(&String::from_utf8_lossy(&out.stdout));
    // 128 + SIGINT, as a shell reports a command Ctrl-C stopped.
    assert_eq!(out.status.code(), Some(130), "{st:#}");
    assert_eq!(st["stopped"], "interrupted", "{st:#}");
    let done = st["hosts"].as_array().unwrap();
    assert_eq!(done.len(), 1, "{st:#}");
    assert_eq!(
        done[0]["outcome"], "ok",
        "the host in flight finished: {st:#}"
    );
    let image = |h: &PathBuf| {
        std::fs::read_to_string(h.join("var/lib/syncer/image"))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(image(&hosts[0]), v3);
    assert_eq!(image(&hosts[1]), v1);
    assert_eq!(image(&hosts[2]), v1);
    let out = run(
        &store,
        &[
            "rollout",
            "--resume",
            "--inventory",
            inv.to_str().unwrap(),
            "--yes",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for h in &hosts {
        assert_eq!(image(h), v3);
    }
}

/// A shell chrooted into a `local:` root, as a service of that host would run: it maps
/// the root's `/bin/sh` until it ends (when its standard input closes).
struct ChrootedShell(std::process::Child);

impl ChrootedShell {
    fn start(root: &std::path::Path) -> ChrootedShell {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut c = Command::new("chroot")
            .arg(root)
            .args(["/bin/sh", "-c", "echo ready; read x"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Once it says so, the chrooted shell runs (not just chroot(8) before its exec).
        let mut line = String::new();
        std::io::BufReader::new(c.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        ChrootedShell(c)
    }

    fn pid(&self) -> u64 {
        self.0.id() as u64
    }

    /// Ends it (EOF on its input) and waits for it.
    fn stop(mut self) {
        drop(self.0.stdin.take());
        self.0.wait().unwrap();
    }
}

impl Drop for ChrootedShell {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn require_restarted_fails_a_host_whose_processes_still_run_replaced_files() {
    let t = scratch("rollout-stale-");
    let dir = t.path();
    let store = dir.join("store");
    mini_root(&dir.join("v1"), 1, 1000);
    mini_root(&dir.join("v2"), 2, 1000);
    // v2's shell is another file (the same program and a byte more): v2 replaces it.
    let sh2 = dir.join("v2/bin/sh");
    let mut b = std::fs::read(&sh2).unwrap();
    b.push(0);
    std::fs::write(&sh2, b).unwrap();
    import(&store, &dir.join("v1"), "v1");
    let v2 = import(&store, &dir.join("v2"), "v2").to_hex();
    let hosts: Vec<PathBuf> = (1..=2).map(|i| dir.join(format!("h{i}"))).collect();
    for h in &hosts {
        std::fs::create_dir(h).unwrap();
        ok(&store, &["push", "v1", &format!("local:{}", h.display())]);
    }
    let spec = |i: usize| format!("local:{}", hosts[i].display());
    let inv = dir.join("fleet.toml");
    std::fs::write(
        &inv,
        format!(
            "[policy]\npause = \"none\"\ncanary = 0\nfailure_budget = 1\nrequire_restarted = true\n\n\
             [[colo]]\nname = \"one\"\nhosts = [\"{}\", \"{}\"]\n",
            spec(0),
            spec(1)
        ),
    )
    .unwrap();
    let rollout = |extra: &[&str]| {
        let mut a = vec![
            "rollout",
            "--inventory",
            inv.to_str().unwrap(),
            "--yes",
            "--json",
        ];
        a.extend_from_slice(extra);
        let out = run(&store, &a);
        (
            out.status.success(),
            json(&String::from_utf8_lossy(&out.stdout)),
        )
    };

    // h1 runs a shell from its root; h2 runs nothing.
    let shell = ChrootedShell::start(&hosts[0]);
    let (good, st) = rollout(&["v2"]);
    // One failure is within the budget: the rollout finishes, failing.
    assert!(!good && st["finished"] == true, "{st:#}");
    let busy = result(&st, &spec(0));
    assert_eq!(busy["outcome"], "failed", "{busy:#}");
    assert_eq!(busy["push_outcome"], "committed, stale processes");
    let stale = busy["push"]["stale"].as_array().unwrap();
    assert_eq!(stale.len(), 1, "{busy:#}");
    let unit = stale[0]["unit"].as_str().unwrap();
    assert_eq!(
        stale[0]["processes"][0]["pid"].as_u64(),
        Some(shell.pid()),
        "{busy:#}"
    );
    assert_eq!(stale[0]["processes"][0]["comm"], "sh");
    assert_eq!(stale[0]["files"], serde_json::json!(["/bin/sh"]));
    let error = busy["error"].as_str().unwrap();
    assert!(
        error.contains("require_restarted") && error.contains(unit),
        "{busy:#}"
    );
    // Failed like a failed health check: rolled back to v1.
    assert_eq!(busy["rollback"]["ok"], true, "{busy:#}");
    let idle = result(&st, &spec(1));
    assert_eq!(idle["outcome"], "ok", "{idle:#}");
    assert_eq!(idle["push"]["stale"], serde_json::json!([]));
    assert_eq!(idle["image_after"], v2);

    // `status` shows it too: the shell still maps the /bin/sh the push replaced (v1's
    // first inode; the rollback wrote v1's content under a new one).
    let s = json(&ok(&store, &["status", &spec(0), "--json"]));
    assert_eq!(
        s[0]["stale"][0]["processes"][0]["pid"].as_u64(),
        Some(shell.pid()),
        "{s:#}"
    );
    let text = ok(&store, &["status", &spec(0)]);
    assert!(
        text.contains(&format!(
            "still running replaced files: {unit} (pids {} sh): /bin/sh",
            shell.pid()
        )),
        "{text}"
    );

    // Restarted (here: ended), the host passes.
    shell.stop();
    let (good, st) = rollout(&["--resume"]);
    assert!(good, "{st:#}");
    let busy = result(&st, &spec(0));
    assert_eq!(busy["outcome"], "ok", "{busy:#}");
    assert_eq!(busy["image_after"], v2);
}

/// A host whose plan deletes more than the policy's `max_delete` fails before anything
/// is written, and counts against the budget like any failed host: a canary over it
/// stops its colo.
#[test]
fn a_host_over_max_delete_fails_untouched_and_stops_its_colo() {
    let f = Fleet::new("rollout-maxdel-");
    let inv = f.inventory("canary = 1\nwaves = [\"100%\"]\nmax_delete = 3");
    let v1 = f.id("v1");
    // The canary holds files the image does not under an owned prefix (/etc).
    let strays = f.hosts[0].1.join("etc/strays");
    std::fs::create_dir(&strays).unwrap();
    for i in 0..5 {
        std::fs::write(strays.join(format!("{i}")), "s").unwrap();
    }
    let (good, st) = f.rollout(&["v2", "--inventory", inv.to_str().unwrap(), "--yes"]);
    assert!(!good, "{st:#}");
    assert!(st["stopped"].as_str().unwrap().contains("canary"), "{st:#}");
    let canary = result(&st, f.spec(0));
    assert_eq!(canary["outcome"], "failed", "{canary:#}");
    assert!(
        canary["error"]
            .as_str()
            .unwrap()
            .contains("the plan deletes 6 paths of the host's"),
        "{canary:#}"
    );
    assert_eq!(f.image_of(0), v1);
    assert_eq!(std::fs::read_dir(&strays).unwrap().count(), 5);
    for i in 1..10 {
        assert_eq!(f.image_of(i), v1, "host {i}");
    }
}
