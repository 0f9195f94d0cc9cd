//! Images on machines that run them: the example database server (`manifests/db.toml`:
//! `base.toml` plus PostgreSQL) built with imager, installed onto empty roots, each root booted under systemd-nspawn
//! (systemd as PID 1, its own network namespace), then updated while it runs: pushes
//! over ssh into the running machine, with its nginx serving and an ssh session open,
//! and a rollout over two such machines whose canary fails its health check.
//!
//! Needs root, mmdebstrap and the Debian mirrors of this machine's apt sources, like
//! imager's build tests. `SYNCER_LIVE_BASE=STORE` takes the `db` image from an existing
//! store (hard-linked into the test's own) instead of building it, for quicker reruns.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;
#[path = "../../tests/support/debs.rs"]
mod debs;
#[path = "../../tests/support/nspawn.rs"]
mod nspawn;

use common::*;
use nspawn::Machine;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The images the live tests push, made once per test run: `db` built from the
/// example manifest, and from its tree
/// - `live-a`: nginx serves `/version` ("A") and `/health` ("ok");
/// - `live-b`: the update: `/version` says "B" (nginx's trigger), an sshd drop-in and a
///   new sshd binary (sshd's trigger), and a new libfastjson, a library only rsyslogd
///   maps and no trigger restarts it for (the ldconfig trigger only);
/// - `live-broken`: like `live-a` but `/health` answers 503.
///
/// Each says in /etc/live-version which `/version` its nginx configuration serves.
struct Images {
    store: PathBuf,
}

const LIB: &str = "/usr/lib/x86_64-linux-gnu/libfastjson.so.4.3.0";

fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-images");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = dir.join("store");
        match std::env::var_os("SYNCER_LIVE_BASE") {
            Some(s) => {
                sh(&format!(
                    "cp -al '{}' '{}'",
                    Path::new(&s).display(),
                    store.display()
                ));
            }
            None => {
                build_base(&dir, &store);
            }
        }
        let tree = dir.join("tree-a");
        // (The read lock is let go before the imports below take the write lock.)
        imager::ops::export(
            &imager::Store::open(&store, imager::Access::Read).unwrap(),
            &common::id(&store, "db"),
            &imager::ExportTarget::Dir(tree.clone()),
            &imager::Quiet,
        )
        .unwrap();
        let site = |version: &str, health: &str| {
            format!(
                "server {{\n  listen 80 default_server;\n  root /var/www/html;\n  \
                 location = /version {{ return 200 \"{version}\\n\"; }}\n  \
                 location = /health {{ return {health}; }}\n  \
                 location = /upload {{ client_body_buffer_size 1k; proxy_pass http://127.0.0.1/version; }}\n}}\n"
            )
        };
        let default_site = tree.join("etc/nginx/sites-available/default");
        std::fs::write(&default_site, site("A", "200 \"ok\\n\"")).unwrap();
        std::fs::write(tree.join("etc/live-version"), "A\n").unwrap();
        import_leaving_out(&store, &tree, "live-a", &[]);
        let b = dir.join("tree-b");
        sh(&format!("cp -a '{}' '{}'", tree.display(), b.display()));
        std::fs::write(
            b.join("etc/nginx/sites-available/default"),
            site("B", "200 \"ok\\n\""),
        )
        .unwrap();
        std::fs::write(b.join("etc/live-version"), "B\n").unwrap();
        std::fs::write(
            b.join("etc/ssh/sshd_config.d/live.conf"),
            "ClientAliveInterval 120\n",
        )
        .unwrap();
        // Bytes after an ELF file's end change nothing when it runs, but make it new.
        sh(&format!(
            "cd '{}' && printf 'live-b' >> usr/sbin/sshd && printf 'live-b' >> .{LIB}",
            b.display()
        ));
        import_leaving_out(&store, &b, "live-b", &[]);
        std::fs::write(&default_site, site("broken", "503")).unwrap();
        std::fs::write(tree.join("etc/live-version"), "broken\n").unwrap();
        import_leaving_out(&store, &tree, "live-broken", &[]);
        Images { store }
    })
}

/// Builds `manifests/db.toml` (a copy, with the exclude lists it names: the lock is
/// written beside it) into `store`.
fn build_base(scratch: &Path, store: &Path) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    let m = scratch.join("manifests");
    sh(&format!("cp -a {} {}", src.display(), m.display()));
    let lists = Path::new(env!("CARGO_MANIFEST_DIR")).join("../exclude-lists");
    sh(&format!(
        "cp -a {} {}",
        lists.display(),
        scratch.join("exclude-lists").display()
    ));
    let _ = std::fs::remove_file(m.join("db.lock"));
    let st = imager::ops::open_store(store, imager::Access::Write).unwrap();
    let built = imager::ops::build(
        &st,
        &imager::ops::BuildOptions {
            manifest: m.join("db.toml"),
            update_lock: true,
            keep_failed: false,
            previous: None,
            set_ref: true,
            cache: imager::build::cache::Use::ReadWrite {
                limit: imager::build::cache::DEFAULT_LIMIT,
            },
            provenance: true,
        },
        &imager::Quiet,
    )
    .unwrap();
    built.id
}

fn id_of(name: &str) -> String {
    common::id(&images().store, name).to_hex()
}

/// Pushes `image` onto a root nothing runs from (a first install, or a re-image). A
/// first install runs no trigger (each is reported skipped); on a re-image those that
/// need a running system (`booted = true`: the `systemctl` ones) are skipped, the others
/// (ldconfig) run chrooted. Either way the push succeeds.
fn install(image: &str, root: &Path) {
    let host = format!("local:{}", root.display());
    let out = run(&images().store, &["push", image, &host, "--json"]);
    let r = json(&String::from_utf8_lossy(&out.stdout))["hosts"][0].clone();
    assert_eq!(r["committed"], true, "{r:#}");
    assert_eq!(r["ok"], true, "{r:#}");
    assert!(out.status.success(), "{r:#}");
    for t in r["triggers"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let skipped = t["skipped"].as_str().unwrap_or("");
        assert!(
            t["status"] == 0
                || (skipped.contains("needs a running system")
                    && ["systemd-daemon-reload", "reload-sshd", "reload-nginx"].contains(&name))
                || skipped.contains("a first install"),
            "{r:#}"
        );
    }
}

/// A client key for root on `root`'s machine and the `-e` command that uses it.
fn authorize(dir: &Path, root: &Path) -> String {
    let key = dir.join("id");
    if !key.exists() {
        sh(&format!(
            "ssh-keygen -q -t ed25519 -N '' -f '{}'",
            key.display()
        ));
    }
    sh(&format!(
        "install -d -m 700 '{r}/root/.ssh' && install -m 600 '{k}.pub' '{r}/root/.ssh/authorized_keys'",
        r = root.display(),
        k = key.display()
    ));
    format!(
        "ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
        key.display()
    )
}

/// Installs `image` on a new root `name` under `dir` and boots it reachable over its
/// veth link; returns the machine once it is `running`.
fn live_machine(dir: &Path, name: &str, image: &str) -> (Machine, PathBuf, String) {
    let root = dir.join(name);
    std::fs::create_dir(&root).unwrap();
    install(image, &root);
    let rsh = authorize(dir, &root);
    let m = Machine::networked(&root, name, &dir.join(format!("{name}.log")));
    m.assert_running();
    (m, root, rsh)
}

/// A database client inside the machine: one row per transaction until
/// /tmp/writer-stop exists; the last row acknowledged in /tmp/writer-last, any failure
/// in /tmp/writer-failed and /tmp/writer-errors; /tmp/writer-done once it stopped.
const PG_WRITER: &str = r#"i=0
while [ ! -e /tmp/writer-stop ]; do
    i=$((i+1))
    if runuser -u postgres -- psql -qXc "insert into rows values ($i)" >/dev/null 2>>/tmp/writer-errors; then
        echo $i > /tmp/writer-last
    else
        echo $i >> /tmp/writer-failed
    fi
done
touch /tmp/writer-done
"#;

/// One HTTP/1.0 GET: the status code and body.
fn get(addr: &str, path: &str) -> std::io::Result<(u32, String)> {
    request(addr, "GET", path, 0)
}

/// A POST of a 32 KiB body to `/upload`, which nginx buffers in 1 KiB and so writes to
/// a temporary file under /var/lib/nginx/body before proxying it to `/version`: it
/// fails (HTTP 500) when a push deleted nginx's temp directories.
fn upload(addr: &str) -> std::io::Result<(u32, String)> {
    request(addr, "POST", "/upload", 32 << 10)
}

fn request(addr: &str, method: &str, path: &str, body: usize) -> std::io::Result<(u32, String)> {
    let mut s = std::net::TcpStream::connect((addr, 80))?;
    // A request that never finishes fails the test instead of hanging it.
    s.set_read_timeout(Some(std::time::Duration::from_secs(120)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: live\r\nContent-Length: {body}\r\n\r\n"
    )?;
    s.write_all(&vec![b'x'; body])?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((code, body))
}

/// Requests `/version` and uploads bodies to `/upload`, one after another until
/// stopped, as clients of the host do.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Result<String, String>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str) -> Load {
        let (stop, seen) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(Vec::new())),
        );
        let (s, v, addr) = (stop.clone(), seen.clone(), addr.to_string());
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                // Every other request carries a body larger than nginx buffers in memory.
                n += 1;
                let answer = if n.is_multiple_of(2) {
                    upload(&addr)
                } else {
                    get(&addr, "/version")
                };
                let r = match answer {
                    Ok((200, body)) => Ok(body.trim().to_string()),
                    Ok((code, body)) => Err(format!("HTTP {code}: {body}")),
                    Err(e) => Err(e.to_string()),
                };
                v.lock().unwrap().push(r);
            }
        });
        Load {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn answers(&self) -> Vec<Result<String, String>> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until a request answered `version`, then stops; returns every answer.
    fn stop_after(mut self, version: &str) -> Vec<Result<String, String>> {
        while !self.answers().iter().any(|a| a.as_deref() == Ok(version)) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.answers()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Each running service and its main process.
fn services(m: &Machine) -> Vec<(String, String)> {
    m.ok("for u in $(systemctl list-units --type=service --state=running --no-legend --plain | cut -d' ' -f1); do \
          echo \"$u $(systemctl show -p MainPID --value $u)\"; done")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .collect()
}

fn units_in(stale: &serde_json::Value) -> Vec<String> {
    stale
        .as_array()
        .map(|a| {
            a.iter()
                .map(|u| u["unit"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A first install: the image pushed onto two empty roots, each booted as an installed
/// machine. Both come up `running` with sshd answering, with host keys and machine-ids
/// of their own; a later push keeps the keys, and both run the same image ID.
#[test]
fn an_image_pushed_onto_an_empty_root_boots_with_keys_of_its_own() {
    let im = images();
    let s = scratch("syncer-live-");
    let id = id_of("db");
    let mut seen = Vec::new();
    for name in ["first-a", "first-b"] {
        let root = s.path().join(name);
        std::fs::create_dir(&root).unwrap();
        install("db", &root);
        let log = s.path().join(format!("{name}.log"));
        let m = Machine::boot_installed(&root, name, &log);
        m.assert_running();
        let scan = m.in_netns("ssh-keyscan", &["-T", "20", "127.0.0.1"]);
        let keys = String::from_utf8_lossy(&scan.stdout).into_owned();
        assert!(
            keys.contains("ssh-ed25519 "),
            "{name}: no ed25519 key: {scan:?}"
        );
        let machine_id = m.ok("cat /etc/machine-id").trim().to_string();
        assert_eq!(machine_id.len(), 32, "{name}: machine-id {machine_id:?}");
        // What the first boot and the services made (keys, the cluster, nginx's temp
        // directories, timer stamps, ldconfig's cache) is no drift.
        let host = format!("local:{}", root.display());
        let out = run(&im.store, &["drift", &host]);
        assert!(
            out.status.success(),
            "{name}: drift right after the first boot:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        drop(m);
        // What the first boot made is the machine's own: a push of the image again
        // (what a re-image does) keeps the host keys and the machine-id.
        let key = root.join("etc/ssh/ssh_host_ed25519_key");
        let before = std::fs::read(&key).unwrap();
        let cluster = root.join("var/lib/postgresql/15/main/PG_VERSION");
        assert!(cluster.exists(), "{name}: the first boot made no cluster");
        install("db", &root);
        assert!(
            cluster.exists(),
            "{name}: the push deleted the database cluster"
        );
        assert_eq!(
            std::fs::read(&key).unwrap(),
            before,
            "{name}: the push replaced a host key"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/machine-id"))
                .unwrap()
                .trim(),
            machine_id
        );
        let out = run(&im.store, &["status", &host, "--json"]);
        let status = json(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(status[0]["image"].as_str(), Some(id.as_str()), "{status:#}");
        seen.push((keys, machine_id));
    }
    assert_ne!(seen[0].0, seen[1].0, "two installs got the same host keys");
    assert_ne!(seen[0].1, seen[1].1, "two installs got the same machine-id");
}

/// The update pushed over ssh into a running machine (the agent runs inside it, root
/// `/`) while a client keeps requesting from its nginx and an ssh session stays open.
#[test]
fn a_running_host_takes_a_live_update_over_ssh() {
    let s = scratch("syncer-live-push-");
    let (m, root, rsh) = live_machine(s.path(), "web1", "live-a");
    let addr = m.addr.clone().unwrap();
    let host = format!("ssh://root@{addr}/");
    assert_eq!(get(&addr, "/version").unwrap(), (200, "A\n".to_string()));
    let own: Vec<(String, Vec<u8>)> = [
        "etc/ssh/ssh_host_ed25519_key",
        "etc/ssh/ssh_host_rsa_key",
        "etc/machine-id",
    ]
    .iter()
    .map(|f| (f.to_string(), std::fs::read(root.join(f)).unwrap()))
    .collect();
    let log = root.join("var/log/nginx/access.log");
    let log_before = std::fs::read(&log).unwrap();
    assert!(!log_before.is_empty());
    let before = services(&m);
    let sshd_pid = m
        .ok("systemctl show -p MainPID --value ssh")
        .trim()
        .to_string();

    // What the running system made: nginx's temp directories (a body larger than its
    // buffer goes through them), a Persistent= timer's stamp, ldconfig's cache. None of
    // it is drift, and the push keeps it.
    assert_eq!(upload(&addr).unwrap(), (200, "A\n".to_string()));
    m.ok("mkdir -p /var/lib/systemd/timers && echo stamp > /var/lib/systemd/timers/stamp-live.timer && ldconfig");
    // (nginx's writes move its directories' mtimes; a stamp's mtime is what
    // Persistent= reads.)
    let made = "stat -c '%n %F %A %U %G' /var/lib/nginx/*; \
                stat -c '%n %F %A %U %G %Y' /var/lib/systemd/timers/*; \
                md5sum /var/lib/systemd/timers/*";
    let made_before = m.ok(made);
    assert!(made_before.contains("body"), "{made_before}");
    let diff = |when: &str| {
        let out = run(
            &images().store,
            &["drift", &host, "-e", &rsh, "--install-agent"],
        );
        assert!(
            out.status.success(),
            "{when}: a host that ran its services reports drift:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    diff("before the push");

    // A client of the database writes a row per transaction throughout the push.
    m.ok("runuser -u postgres -- psql -qXc 'create table rows (i int primary key)'");
    std::fs::write(root.join("root/pg-writer.sh"), PG_WRITER).unwrap();
    m.ok("rm -f /tmp/writer-*; setsid /bin/sh /root/pg-writer.sh </dev/null >/dev/null 2>&1 &");
    m.ok("until [ -s /tmp/writer-last ]; do sleep 0.1; done");

    // An interactive session, open across the push.
    let mut args: Vec<&str> = rsh.split_whitespace().skip(1).collect();
    let target = format!("root@{addr}");
    args.extend([&target, "echo ready; read line; echo alive $line"]);
    let mut session = Command::new("ssh")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(session.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");

    let load = Load::start(&addr);
    let out = run(
        &images().store,
        &[
            "push",
            "live-b",
            &host,
            "-e",
            &rsh,
            "--install-agent",
            "--json",
        ],
    );
    let report = json(&String::from_utf8_lossy(&out.stdout));
    let r = &report["hosts"][0];
    assert!(out.status.success(), "{report:#}");
    assert_eq!(r["committed"], true, "{r:#}");
    let answers = load.stop_after("B");
    let failed: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "requests failed during the push: {failed:?}"
    );
    assert!(answers.len() >= 2, "{answers:?}");

    // The triggers that fired ran through the machine's systemd, in its journal.
    let fired: Vec<&str> = r["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for t in ["ldconfig", "reload-sshd", "reload-nginx"] {
        assert!(fired.contains(&t), "{t} did not run: {r:#}");
    }
    for t in r["triggers"].as_array().unwrap() {
        assert_eq!(t["status"], 0, "{t:#}");
    }
    let journal = m.ok("journalctl --no-pager -b -o cat _PID=1 | grep 'syncer trigger'");
    for t in ["ldconfig", "reload-sshd", "reload-nginx"] {
        assert!(
            journal.contains(&format!("syncer trigger {t} ")),
            "{t} not in the journal:\n{journal}"
        );
    }

    // The session survived and the machine is well.
    writeln!(session.stdin.as_mut().unwrap(), "still").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "alive still");
    session.wait().unwrap();
    assert_eq!(m.ok("systemctl is-system-running").trim(), "running");
    // Reloaded, not restarted: every service keeps its main process; sshd's re-executed
    // itself and runs the new binary.
    assert_eq!(services(&m), before);
    let exe = m.ok(&format!("readlink /proc/{sshd_pid}/exe"));
    assert_eq!(
        exe.trim(),
        "/usr/sbin/sshd",
        "sshd still runs the old binary"
    );
    assert_eq!(get(&addr, "/version").unwrap().1, "B\n");
    assert_eq!(upload(&addr).unwrap(), (200, "B\n".to_string()));
    assert_eq!(
        m.ok(made),
        made_before,
        "the push changed what the services made"
    );
    diff("after the push");
    // Every row the client was told was written is there, none failed, and the
    // database checks out.
    m.ok("touch /tmp/writer-stop; until [ -e /tmp/writer-done ]; do sleep 0.1; done");
    assert_eq!(
        m.ok("cat /tmp/writer-failed /tmp/writer-errors 2>/dev/null || true"),
        "",
        "database writes failed during the push"
    );
    let last: u64 = m.ok("cat /tmp/writer-last").trim().parse().unwrap();
    assert!(last >= 2, "{last}");
    assert_eq!(
        m.ok("runuser -u postgres -- psql -AtXc 'select count(*), max(i) from rows'")
            .trim(),
        format!("{last}|{last}")
    );
    m.ok("runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_amcheck --install-missing --all");

    // What still runs replaced code: rsyslogd maps the old libfastjson (no trigger
    // restarts it); nginx does not, nor sshd's listener. The sshd processes of open
    // sessions (this test's and the agent's own; without logind they stay in
    // ssh.service) do run the old binary, and are listed.
    let stale = units_in(&r["stale"]);
    assert!(stale.contains(&"rsyslog.service".to_string()), "{r:#}");
    assert!(!stale.contains(&"nginx.service".to_string()), "{r:#}");
    let pids_of = |unit: &str| -> Vec<String> {
        r["stale"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["unit"] == unit)
            .flat_map(|u| u["processes"].as_array().unwrap().clone())
            .map(|p| p["pid"].to_string())
            .collect()
    };
    assert!(!pids_of("ssh.service").contains(&sshd_pid), "{r:#}");
    let rsyslog = r["stale"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == "rsyslog.service")
        .unwrap();
    assert!(rsyslog["files"].to_string().contains(LIB), "{rsyslog:#}");
    let out = run(&images().store, &["status", &host, "-e", &rsh, "--json"]);
    let status = json(&String::from_utf8_lossy(&out.stdout));
    assert!(
        units_in(&status[0]["stale"]).contains(&"rsyslog.service".to_string()),
        "{status:#}"
    );
    assert_eq!(status[0]["image"].as_str(), Some(id_of("live-b").as_str()));

    // The host's own state is untouched; its log only grew.
    for (f, bytes) in own {
        assert_eq!(std::fs::read(root.join(&f)).unwrap(), bytes, "{f} changed");
    }
    assert!(std::fs::read(&log).unwrap().starts_with(&log_before));
}

/// A rollout over two running machines: the image's health check fails on the canary,
/// which is rolled back (its nginx serving the previous configuration again) and the
/// rollout stops before the other host.
#[test]
fn a_live_canary_that_fails_its_health_check_is_rolled_back() {
    let s = scratch("syncer-live-rollout-");
    let (m1, _r1, rsh) = live_machine(s.path(), "canary1", "live-a");
    let (m2, r2, _) = live_machine(s.path(), "web2", "live-a");
    let hosts: Vec<String> = [&m1, &m2]
        .iter()
        .map(|m| format!("ssh://root@{}/", m.addr.as_ref().unwrap()))
        .collect();
    // An nginx reload returns before the new configuration serves (old workers finish
    // their requests): the check waits until nginx serves this image's version (or its
    // own timeout ends it), then asks for /health.
    let check = "want=$(cat /etc/live-version); \
                 until [ \\\"$(curl -fsS http://127.0.0.1/version)\\\" = \\\"$want\\\" ]; do sleep 0.2; done; \
                 curl -fsS http://127.0.0.1/health";
    let inv = s.path().join("fleet.toml");
    std::fs::write(
        &inv,
        format!(
            "[policy]\ncanary = 1\nwaves = [\"100%\"]\nparallel = 2\nfailure_budget = 0\npause = \"none\"\n\n\
             [policy.health]\ncommand = \"{check}\"\ntimeout = 60\nretries = 1\ninterval = 1\n\n\
             [[colo]]\nname = \"live\"\nhosts = [\"{}\", \"{}\"]\n",
            hosts[0], hosts[1]
        ),
    )
    .unwrap();
    let out = run(
        &images().store,
        &[
            "rollout",
            "live-broken",
            "--inventory",
            inv.to_str().unwrap(),
            "--yes",
            "--json",
            "-e",
            &rsh,
            "--install-agent",
        ],
    );
    let st = json(&String::from_utf8_lossy(&out.stdout));
    assert!(!out.status.success(), "{st:#}");
    assert!(st["stopped"].as_str().unwrap().contains("canary"), "{st:#}");
    let hs = st["hosts"].as_array().unwrap();
    assert_eq!(hs.len(), 1, "{st:#}");
    assert!(
        hs[0]["error"].as_str().unwrap().contains("health check"),
        "{st:#}"
    );
    assert_eq!(hs[0]["rollback"]["ok"], true, "{st:#}");
    let a = id_of("live-a");
    assert_eq!(hs[0]["image_after"], a.as_str(), "{st:#}");
    // The canary serves again, with the previous configuration; the other host never
    // moved.
    let addr = m1.addr.as_ref().unwrap();
    // (Once the reload the rollback triggered has taken effect.)
    while get(addr, "/version").unwrap().1 != "A\n" {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(get(addr, "/health").unwrap(), (200, "ok\n".to_string()));
    assert_eq!(m1.ok("systemctl is-system-running").trim(), "running");
    // The rollout never reached it: not even an agent was installed there.
    assert!(!r2.join("var/lib/syncer/bin").exists());
    let out = run(
        &images().store,
        &["status", &hosts[1], "-e", &rsh, "--install-agent", "--json"],
    );
    let status = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(status[0]["image"].as_str(), Some(a.as_str()), "{status:#}");
}

/// Builds the controller's and the agent's packages of the binaries these tests run,
/// and checks that the controller's depends on this very agent version (cargo-deb does
/// not substitute `${binary:Version}`: it is written out in syncer/Cargo.toml).
fn build_debs(out: &Path) -> (PathBuf, PathBuf) {
    let bin = Path::new(env!("CARGO_BIN_EXE_syncer"));
    let made = debs::build(bin, out, &["syncer", "syncer-agent"]);
    let (syncer, agent) = (made[0].clone(), made[1].clone());
    let agent_version = debs::field(&agent, "Version");
    assert!(
        debs::field(&syncer, "Depends").contains(&format!("syncer-agent (= {agent_version})")),
        "the controller's package depends on another agent version than {agent_version}"
    );
    (syncer, agent)
}

/// The agent's Debian package installed with dpkg into a booted machine: pushes reach
/// it with neither `--agent` nor `--install-agent`, a push of an image without the
/// package keeps the agent (it never deletes the program it runs from, which lies
/// below the owned /usr), the forced command its README.Debian gives works, its example
/// trust policy is a valid policy once uncommented, and removing the package takes only
/// the package's own files. The controller's package installs beside it.
#[test]
fn the_agent_package_installed_with_dpkg_takes_pushes() {
    let s = scratch("syncer-live-deb-");
    let (syncer_deb, agent_deb) = build_debs(&s.path().join("debs"));
    let (m, root, rsh) = live_machine(s.path(), "deb1", "live-a");
    let addr = m.addr.clone().unwrap();
    let host = format!("ssh://root@{addr}/");
    for deb in [&agent_deb, &syncer_deb] {
        std::fs::copy(deb, root.join("var/tmp").join(deb.file_name().unwrap())).unwrap();
    }
    m.ok("dpkg -i /var/tmp/syncer-agent_*.deb");
    assert_eq!(
        m.ok("readlink /var/lib/syncer/bin/syncer").trim(),
        "/usr/bin/syncer-agent"
    );
    m.ok("test -f /etc/syncer/trust.toml.example && test ! -e /etc/syncer/trust.toml");
    // The controller's package: its dependency on this agent version holds.
    m.ok("dpkg -i /var/tmp/syncer_*.deb && syncer --help >/dev/null");
    m.ok("test -s /usr/share/bash-completion/completions/syncer && test -s /usr/share/man/man1/syncer-push.1.gz");
    // Removing the packages takes their files and the link; the agent's state and the
    // example policy (a conffile, until a purge) stay. (Before the pushes below: after
    // a push the host's dpkg database is the image's, which does not list them.)
    m.ok("dpkg -r syncer syncer-agent");
    m.ok("test ! -e /usr/bin/syncer-agent && test ! -L /var/lib/syncer/bin/syncer");
    m.ok("test -f /var/lib/syncer/image && test -f /etc/syncer/trust.toml.example");
    m.ok("dpkg -i /var/tmp/syncer-agent_*.deb /var/tmp/syncer_*.deb && rm /var/tmp/*.deb");

    // The image has no syncer-agent: a push keeps the agent it runs (the package's),
    // and the next push finds it.
    let r = push(&images().store, "live-b", &host, &["-e", &rsh]);
    assert_eq!(r["committed"], true, "{r:#}");
    m.ok("test -x /usr/bin/syncer-agent");
    // (The image's files, not nginx's answer: its reload is graceful, old workers
    // answer until they finish, and the reload is the live tests' subject.)
    assert_eq!(
        std::fs::read_to_string(root.join("etc/live-version")).unwrap(),
        "B\n"
    );
    let drift = run(&images().store, &["drift", &host, "-e", &rsh]);
    assert!(
        drift.status.success(),
        "the packaged agent is drift:\n{}",
        String::from_utf8_lossy(&drift.stdout)
    );

    // README.Debian's forced command: the controller's key starts the agent and
    // nothing else, and pushes still work through it.
    let key = std::fs::read_to_string(s.path().join("id.pub")).unwrap();
    std::fs::write(
        root.join("root/.ssh/authorized_keys"),
        format!(
            "command=\"/usr/bin/syncer-agent serve --root /\",no-port-forwarding,\
             no-X11-forwarding,no-agent-forwarding,no-pty {key}"
        ),
    )
    .unwrap();
    let r = push(&images().store, "live-a", &host, &["-e", &rsh]);
    assert_eq!(r["committed"], true, "{r:#}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/live-version")).unwrap(),
        "A\n"
    );
    let shell = Command::new("sh")
        .arg("-c")
        .arg(format!("{rsh} root@{addr} echo a shell"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&shell.stdout).contains("a shell"),
        "the forced command let the key run a shell"
    );

    // The example policy, uncommented, is one the agent uses.
    m.ok("sed -E 's/^#([a-z_]+ =|\\[\\[require)/\\1/' /etc/syncer/trust.toml.example > /etc/syncer/trust.toml");
    let k: Vec<&str> = key.split_whitespace().take(2).collect();
    let k = k.join(" ");
    std::fs::write(
        root.join("etc/syncer/allowed_signers"),
        format!("release@example.com {k}\nreview-1@example.com {k}\n"),
    )
    .unwrap();
    let out = run(&images().store, &["status", &host, "-e", &rsh, "--json"]);
    let status = json(&String::from_utf8_lossy(&out.stdout));
    let trust = status[0]["trust"].as_str().unwrap_or("none");
    assert!(trust.starts_with("2 requirements"), "{status:#}");
    m.ok("rm /etc/syncer/trust.toml /etc/syncer/allowed_signers");
}
