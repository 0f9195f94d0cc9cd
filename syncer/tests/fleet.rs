//! Rollouts recorded in etcd: a real cluster of three etcd members on 127.0.0.1 per
//! test (started and killed by the test), `local:` hosts, and the real `syncer` binary
//! as controllers. Several controllers on one rollout, a controller killed mid-commit,
//! a second rollout refused, the fleet's failure budget, and etcd members lost.
//!
//! The tests wait for events (a line a controller or a hook writes, a process that
//! ends, an agent that stopped itself), never for a time.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// One etcd member: its ports, data directory, and process while it runs.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A three-member etcd cluster on 127.0.0.1, its data in the test's directory; every
/// member still running is killed when it is dropped.
struct Etcd {
    dir: PathBuf,
    members: Vec<Member>,
}

impl Etcd {
    fn start(dir: &Path) -> Etcd {
        let members = (1..=3)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let mut e = Etcd {
            dir: dir.to_path_buf(),
            members,
        };
        e.restart(&[0, 1, 2]);
        e
    }

    /// Starts these members (again, on their data), then waits until each serves: a
    /// member of a new or restarted cluster serves once a quorum is up.
    fn restart(&mut self, which: &[usize]) {
        let cluster: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        for &i in which {
            let m = &self.members[i];
            let child = Command::new("etcd")
                .args(["--name", &m.name])
                .arg("--data-dir")
                .arg(self.dir.join(&m.name))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{}", m.client),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{}", m.client),
                ])
                .args([
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{}", m.peer),
                ])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{}", m.peer),
                ])
                .args(["--initial-cluster", &cluster.join(",")])
                .args([
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "t",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            self.members[i].child = Some(child);
        }
        for &i in which {
            let log = self.dir.join(format!("{}.log", self.members[i].name));
            let child = self.members[i].child.as_mut().unwrap();
            wait_for_line(child, "ready to serve client requests", &log, "etcd");
        }
    }

    /// `etcd://` with every member, and this prefix.
    fn url(&self, prefix: &str) -> String {
        let m: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect();
        format!("etcd://{}/{prefix}", m.join(","))
    }

    /// kill -9 of a member.
    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// A member stopped as its service would be (SIGTERM), once it has exited.
    fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            sh(&format!("kill -TERM {}", c.id()));
            c.wait().unwrap();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A controller (`syncer rollout ...`) running in the background: its stderr is read
/// line by line as it comes, so a test can wait for what it says.
struct Controller {
    child: Child,
    lines: mpsc::Receiver<String>,
    said: String,
}

impl Controller {
    fn start(store: &Path, args: &[&str], env: &[(&str, &str)]) -> Controller {
        let mut cmd = syncer();
        cmd.args(args)
            .env("IMAGER_STORE", store)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Controller {
            child,
            lines,
            said: String::new(),
        }
    }

    /// Waits until the controller says a line holding `what` (panics if it ends first).
    fn wait_for(&mut self, what: &str) -> String {
        loop {
            match self.lines.recv() {
                Ok(l) => {
                    self.said += &format!("{l}\n");
                    if l.contains(what) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "the controller ended before saying {what:?}:\n{}",
                    self.said
                ),
            }
        }
    }

    /// Waits for the controller to end: whether it succeeded, its report, what it said.
    fn finish(mut self) -> (bool, serde_json::Value, String) {
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = self.child.wait().unwrap();
        self.said.extend(self.lines.iter().map(|l| l + "\n"));
        let v = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("no report ({e}): {out}\nstderr:\n{}", self.said));
        (status.success(), v, self.said)
    }
}

/// A fleet of `local:` hosts in colos, all at v1, and its store.
struct Hosts {
    _t: tempfile::TempDir,
    dir: PathBuf,
    store: PathBuf,
    /// Per colo, its name and its hosts' roots.
    colos: Vec<(String, Vec<PathBuf>)>,
}

impl Hosts {
    fn new(prefix: &str, colos: &[(&str, usize)]) -> Hosts {
        let (t, dir, store) = two_image_store(prefix, 20_000);
        let mut out = Vec::new();
        let mut specs = Vec::new();
        for (name, n) in colos {
            let roots: Vec<PathBuf> = (1..=*n).map(|i| dir.join(format!("{name}{i}"))).collect();
            for r in &roots {
                std::fs::create_dir(r).unwrap();
                specs.push(spec(r));
            }
            out.push((name.to_string(), roots));
        }
        let mut args = vec!["push", "v1"];
        args.extend(specs.iter().map(String::as_str));
        ok(&store, &args);
        Hosts {
            _t: t,
            dir,
            store,
            colos: out,
        }
    }

    fn all(&self) -> Vec<&PathBuf> {
        self.colos.iter().flat_map(|(_, r)| r).collect()
    }

    /// The inventory: `[fleet]` and `[policy]` as given, then the colos.
    fn inventory(&self, fleet: &str, policy: &str) -> PathBuf {
        let mut text = format!("[fleet]\n{fleet}\n[policy]\npause = \"none\"\n{policy}\n");
        text += "[policy.health]\ncommand = \"test ! -e /root/fail-health\"\ntimeout = 10\nretries = 1\ninterval = 1\n";
        for (name, roots) in &self.colos {
            let hosts: Vec<String> = roots.iter().map(|r| format!("\"{}\"", spec(r))).collect();
            text += &format!(
                "[[colo]]\nname = \"{name}\"\nhosts = [{}]\n",
                hosts.join(", ")
            );
        }
        let p = self.dir.join("fleet.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn id(&self, name: &str) -> String {
        id(&self.store, name).to_hex()
    }

    /// The `pre` hook's log: every host a controller started, one line each time.
    fn started(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("pushes.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `syncer rollout --status --json` of the record at `url` (which exits 1 for a
    /// rollout that stopped, as the rollout did).
    fn status(&self, url: &str) -> serde_json::Value {
        let out = run(
            &self.store,
            &["rollout", "--status", "--state", url, "--json"],
        );
        json(&String::from_utf8_lossy(&out.stdout))
    }
}

fn spec(root: &Path) -> String {
    format!("local:{}", root.display())
}

fn image_of(root: &Path) -> String {
    std::fs::read_to_string(root.join("var/lib/syncer/image"))
        .unwrap()
        .trim()
        .to_string()
}

/// The record's result for `root`.
fn result<'a>(st: &'a serde_json::Value, root: &Path) -> &'a serde_json::Value {
    let host = spec(root);
    st["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == host)
        .unwrap_or_else(|| panic!("{host} not in the record:\n{st:#}"))
}

const LOG_PRE: &str = "pre = \"echo \\\"$SYNCER_HOST\\\" >> pushes.log\"";

#[test]
fn two_controllers_share_a_rollout_of_two_colos_in_parallel_and_push_each_host_once() {
    let h = Hosts::new("fleet-two-", &[("a", 6), ("b", 6)]);
    let etcd = Etcd::start(&h.dir);
    let url = etcd.url("fleet/two");
    let inv = h.inventory(
        &format!("state = \"{url}\"\nparallel_colos = 2"),
        &format!("canary = 1\nwaves = [\"50%\", \"100%\"]\nparallel = 2\n{LOG_PRE}"),
    );
    let inv = inv.to_str().unwrap();
    let mut a = Controller::start(
        &h.store,
        &["rollout", "v2", "--inventory", inv, "--yes", "--json"],
        &[],
    );
    // The record exists once a colo's canary starts: the second controller joins it.
    a.wait_for("canary");
    let b = Controller::start(
        &h.store,
        &[
            "rollout",
            "--join",
            &url,
            "--inventory",
            inv,
            "--yes",
            "--json",
        ],
        &[],
    );
    let (ok_a, st_a, said_a) = a.finish();
    let (ok_b, _, said_b) = b.finish();
    assert!(ok_a && ok_b, "A:\n{said_a}\nB:\n{said_b}");
    let v2 = h.id("v2");
    let mut started = h.started();
    started.sort();
    let mut want: Vec<String> = h.all().iter().map(|r| spec(r)).collect();
    want.sort();
    // Each host's pre hook ran once: no host was pushed twice, by one controller or two.
    assert_eq!(started, want);
    let st = h.status(&url);
    assert_eq!(st["finished"], true, "{st:#}");
    assert_eq!(st_a["finished"], true, "{st_a:#}");
    for r in h.all() {
        assert_eq!(image_of(r), v2);
        let res = result(&st, r);
        assert_eq!(res["outcome"], "ok", "{res:#}");
        assert_eq!(res["run"], 1);
        assert!(res["controller"].as_str().unwrap().contains("pid"));
    }
    // `status --inventory` reads each host's last result from etcd (the inventory's
    // `[fleet] state`).
    let rows = json(&ok(&h.store, &["status", "--inventory", inv, "--json"]));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 12);
    for row in rows {
        assert_eq!(row["last"]["outcome"], "ok", "{row:#}");
    }
    // The hosts were given back: the record's reservations went with its end.
    let again = run(
        &h.store,
        &[
            "rollout",
            "v1",
            "--inventory",
            inv,
            "--state",
            &etcd.url("fleet/next"),
            "--yes",
            "--json",
        ],
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn a_controller_killed_mid_commit_leaves_its_host_to_the_other_which_asks_it_first() {
    let h = Hosts::new("fleet-kill-", &[("a", 6)]);
    let etcd = Etcd::start(&h.dir);
    let url = etcd.url("fleet/kill");
    let inv = h.inventory(
        "",
        &format!("canary = 0\nwaves = [\"100%\"]\nparallel = 1\n{LOG_PRE}"),
    );
    let inv = inv.to_str().unwrap();
    let common = ["--inventory", inv, "--yes", "--json", "--lease-ttl", "2"];
    let mut args = vec!["rollout", "v2", "--state", &url];
    args.extend(common);
    // Its agents stop themselves (SIGSTOP) after the journal is written, before the
    // commit's first operation: the host is left mid-commit when both are killed.
    let mut a = Controller::start(&h.store, &args, &[("SYNCER_TEST_STOP_AT", "commit:1")]);
    // Waits for the event (an agent stopped at its stop point), however long it takes,
    // but not for a controller that ended without reaching it.
    let (root, agent) = loop {
        if let Some(found) = h
            .all()
            .into_iter()
            .find_map(|r| stopped_agent(r).map(|p| (r.clone(), p)))
        {
            break found;
        }
        if let Ok(Some(st)) = a.child.try_wait() {
            panic!("the first controller ended ({st}) before an agent stopped mid-commit");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let mut args = vec!["rollout", "--join", &url];
    args.extend(common);
    let b = Controller::start(&h.store, &args, &[]);
    sh(&format!("kill -9 {} {agent}", a.child.id()));
    let (ok_a, ..) = a.finish_killed();
    assert!(!ok_a);
    assert!(root.join("var/lib/syncer/journal").exists());
    let (ok_b, st, said) = b.finish();
    assert!(ok_b, "{said}\n{st:#}");
    let v2 = h.id("v2");
    let st = h.status(&url);
    assert_eq!(st["finished"], true, "{st:#}");
    for r in h.all() {
        assert_eq!(image_of(r), v2);
        assert_eq!(result(&st, r)["outcome"], "ok");
    }
    assert!(!root.join("var/lib/syncer/journal").exists());
    assert_host_is(&root, &h.store, &imager::Hash::from_hex(&v2).unwrap());
    let taken = result(&st, &root)["taken_over"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(taken.starts_with("taken over from"), "{st:#}");
    assert!(taken.contains("the host said: at image"), "{taken}");
    // Every other host was pushed once; the one taken over twice, one after the other.
    let started = h.started();
    for r in h.all() {
        let n = started.iter().filter(|s| **s == spec(r)).count();
        assert_eq!(n, if *r == root { 2 } else { 1 }, "{}", spec(r));
    }
}

impl Controller {
    /// Waits for a controller that was killed.
    fn finish_killed(mut self) -> (bool, ()) {
        (self.child.wait().unwrap().success(), ())
    }
}

#[test]
fn the_fleet_budget_stops_every_colo_and_holds_the_hosts_until_forgotten() {
    let h = Hosts::new("fleet-budget-", &[("a", 3), ("b", 3)]);
    let etcd = Etcd::start(&h.dir);
    let url = etcd.url("fleet/budget");
    let inv = h.inventory(
        &format!("state = \"{url}\"\nparallel_colos = 2\nfailure_budget = 1"),
        "canary = 0\nwaves = [\"100%\"]\nparallel = 1\nfailure_budget = 5",
    );
    let inv = inv.to_str().unwrap();
    for r in h.all() {
        std::fs::write(r.join("root/fail-health"), "").unwrap();
    }
    let out = run(
        &h.store,
        &["rollout", "v2", "--inventory", inv, "--yes", "--json"],
    );
    assert!(!out.status.success());
    let st = h.status(&url);
    assert!(
        st["stopped"]
            .as_str()
            .unwrap()
            .contains("fleet's failure budget"),
        "{st:#}"
    );
    assert!(st["fleet"]["failed"].as_u64().unwrap() >= 2, "{st:#}");
    // Each colo stopped within its own wave: its third host was never started.
    let v1 = h.id("v1");
    for (_, roots) in &h.colos {
        assert!(!h.started().contains(&spec(&roots[2])), "{st:#}");
        assert_eq!(image_of(&roots[2]), v1);
    }
    // A second rollout over the same hosts, under another prefix, is refused.
    let other = etcd.url("fleet/other");
    let second = [
        "rollout",
        "v1",
        "--inventory",
        inv,
        "--state",
        &other,
        "--yes",
    ];
    let out = run(&h.store, &second);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is held by the rollout at /fleet/budget"),
        "{err}"
    );
    assert!(err.contains(&format!("image {}", h.id("v2"))), "{err}");
    assert!(err.contains("started by") && err.contains("pid"), "{err}");
    // Forgotten, the first rollout gives its hosts back.
    ok(&h.store, &["rollout", "--forget", &url]);
    for r in h.all() {
        let _ = std::fs::remove_file(r.join("root/fail-health"));
    }
    ok(&h.store, &second);
}

/// A FIFO the `pre` hook writes each host's name to, read by the test: the event that a
/// host has started. Opened read-write, so that it never reads an end between writers.
fn started_fifo(dir: &Path) -> BufReader<std::fs::File> {
    let p = dir.join("started.fifo");
    sh(&format!("mkfifo '{}'", p.display()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    BufReader::new(f)
}

fn next_started(r: &mut BufReader<std::fs::File>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l.trim().to_string()
}

/// Lets the host whose `pre` hook waits at its gate go on.
fn open_gate(dir: &Path, host: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("gates").join(host))
        .unwrap();
    f.write_all(b"go\n").unwrap();
}

#[test]
fn etcd_members_lost_and_back_stop_new_hosts_but_lose_no_outcome() {
    let h = Hosts::new("fleet-etcd-", &[("a", 4)]);
    let mut etcd = Etcd::start(&h.dir);
    let url = etcd.url("fleet/trouble");
    sh(&format!(
        "mkdir '{0}/gates'; for i in 1 2 3 4; do mkfifo '{0}/gates/a'$i; done",
        h.dir.display()
    ));
    let mut started = started_fifo(&h.dir);
    // Each host's pre hook says it started, then waits for its gate to open.
    let pre = "pre = \"h=$(basename $SYNCER_HOST); echo $h > started.fifo; read x < gates/$h\"";
    let inv = h.inventory(
        "",
        &format!("canary = 0\nwaves = [\"100%\"]\nparallel = 2\n{pre}"),
    );
    let inv = inv.to_str().unwrap();
    let args = [
        "rollout",
        "v2",
        "--inventory",
        inv,
        "--state",
        &url,
        "--yes",
        "--json",
        "--lease-ttl",
        "5",
    ];
    let mut c = Controller::start(&h.store, &args, &[]);
    let first = [next_started(&mut started), next_started(&mut started)];
    // One member killed: the rollout goes on through the others.
    etcd.kill(0);
    open_gate(&h.dir, &first[0]);
    let third = next_started(&mut started);
    // Every member stopped: the hosts in flight finish, their outcomes wait for etcd.
    etcd.stop(1);
    etcd.stop(2);
    open_gate(&h.dir, &first[1]);
    open_gate(&h.dir, &third);
    let root = |name: &str| h.dir.join(name);
    let v2 = h.id("v2");
    let v1 = h.id("v1");
    let mut waiting: Vec<String> = [&first[1], &third]
        .iter()
        .map(|n| format!("to record local:{}'s outcome", root(n).display()))
        .collect();
    while !waiting.is_empty() {
        let l = c.wait_for("waiting for etcd");
        waiting.retain(|w| !l.contains(w.as_str()));
    }
    // Both were pushed whole while etcd was away.
    assert_eq!(image_of(&root(&first[1])), v2);
    assert_eq!(image_of(&root(&third)), v2);
    let fourth = ["a1", "a2", "a3", "a4"]
        .into_iter()
        .find(|n| !first.contains(&n.to_string()) && *n != third)
        .unwrap();
    // No new host starts while etcd is out of reach.
    assert_eq!(image_of(&root(fourth)), v1);
    // Back: the outcomes are recorded, the last host starts, the rollout completes.
    etcd.restart(&[0, 1, 2]);
    assert_eq!(next_started(&mut started), fourth);
    open_gate(&h.dir, fourth);
    let (good, _, said) = c.finish();
    assert!(good, "{said}");
    assert!(said.contains("etcd is back"), "{said}");
    let st = h.status(&url);
    assert_eq!(st["finished"], true, "{st:#}");
    for r in h.all() {
        assert_eq!(image_of(r), v2);
        assert_eq!(result(&st, r)["outcome"], "ok");
    }
}

#[test]
fn the_pause_between_colos_is_answered_from_another_machine_and_watched_live() {
    let h = Hosts::new("fleet-continue-", &[("a", 2), ("b", 2)]);
    let etcd = Etcd::start(&h.dir);
    let url = etcd.url("fleet/continue");
    let inv = h.inventory(
        "",
        &format!("canary = 0\nwaves = [\"100%\"]\nparallel = 2\n{LOG_PRE}"),
    );
    // The policy's pause becomes a confirmation (after the "none" the helper writes).
    let text = std::fs::read_to_string(&inv)
        .unwrap()
        .replace("pause = \"none\"", "pause = \"confirm\"");
    std::fs::write(&inv, text).unwrap();
    let inv = inv.to_str().unwrap();
    let args = [
        "rollout",
        "v2",
        "--inventory",
        inv,
        "--state",
        &url,
        "--json",
    ];
    let mut c = Controller::start(&h.store, &args, &[]);
    c.wait_for("colo b waits: `syncer rollout --continue");
    // Colo b was not started: its hosts are as they were.
    let v1 = h.id("v1");
    for r in &h.colos[1].1 {
        assert_eq!(image_of(r), v1);
    }
    let watch = Controller::start(
        &h.store,
        &["rollout", "--status", "--state", &url, "--watch"],
        &[],
    );
    let said = ok(&h.store, &["rollout", "--continue", &url]);
    assert!(said.contains("colo b"), "{said}");
    let (good, st, said) = c.finish();
    assert!(good, "{said}");
    assert_eq!(st["finished"], true);
    // The watcher printed the record as it changed, and ended with the rollout.
    let mut out = String::new();
    let mut w = watch;
    w.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(w.child.wait().unwrap().success(), "{out}");
    assert!(out.contains("finished: image"), "{out}");
    let v2 = h.id("v2");
    for r in h.all() {
        assert_eq!(image_of(r), v2);
    }
}
