//! Content through colo caches: `syncer publish` writes a store of static files, a real
//! nginx serves it as the origin and one caching nginx per colo (the shipped
//! configurations) sits in front of it; hosts (local roots, and some through a real
//! sshd) fetch their content from those mirrors while the controller drives the push
//! over its session. Caches that die or serve wrong bytes send hosts to the next
//! mirror, and to the controller when none works; mirrors that trickle or never answer
//! cost one try and a bounded time (the tests shorten the limits, and count requests,
//! not seconds: they hold whatever the machine's speed).
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;

use common::*;
use std::collections::HashMap;
use std::path::Path;

/// Image v`v`: a small root plus a few config files, and (from v2) a file too large for
/// a pack (it travels alone, and is the same in v2 and v3).
fn version(dir: &Path, v: u32) {
    mini_root(dir, v, 200_000);
    sh(&format!(
        "set -e; cd '{d}'; mkdir -p etc/app.d usr/share/app
         for i in 1 2 3 4 5 6; do printf 'setting %s = {v}\\n' $i > etc/app.d/$i.conf; done
         python3 -c 'import random,sys; random.seed({v}); sys.stdout.buffer.write(random.randbytes(300000))' > usr/share/app/data
         python3 -c 'import random,sys; random.seed(0); b=bytearray(random.randbytes(100000)); b[5000:5004]=b\"v%03d\" % {v}; sys.stdout.buffer.write(b)' > usr/share/app/lib",
        d = dir.display()
    ));
    if v >= 2 {
        sh(&format!(
            "python3 -c 'import sys; sys.stdout.buffer.write(b\"\".join(b\"big line %d\\n\" % i for i in range(1700000)))' > '{}/usr/share/app/big'",
            dir.display()
        ));
    }
}

/// The hosts of a report (a push's or a rollout's) by their spec.
fn by_host(report: &serde_json::Value) -> HashMap<String, serde_json::Value> {
    report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["host"].as_str().unwrap().to_string(), h.clone()))
        .collect()
}

/// The bytes the controller sent as file content (`Data` frames) to a host.
fn data_sent(push: &serde_json::Value) -> u64 {
    push["wire"]["Data"]["sent"].as_u64().unwrap_or(0)
}

#[test]
fn hosts_take_their_content_from_colo_caches_and_fall_back_when_they_fail() {
    let t = scratch("mirrors-");
    let dir = t.path();
    let store = dir.join("store");
    for v in 1..=3 {
        version(&dir.join(format!("v{v}")), v);
        import(&store, &dir.join(format!("v{v}")), &format!("v{v}"));
    }
    let (v1, v2) = (id(&store, "v1"), id(&store, "v2"));
    // Hosts at v1; two of them (one per colo) reached through a real sshd.
    let sshd = Sshd::start(dir);
    let rsh = sshd.rsh();
    let conn = ["-e", rsh.as_str(), "--agent", env!("CARGO_BIN_EXE_syncer")];
    let mut hosts = Vec::new();
    for i in 0..11 {
        let root = dir.join(format!("h{i}"));
        std::fs::create_dir(&root).unwrap();
        let spec = match i {
            3 | 7 => format!("ssh://root@127.0.0.1:{}{}", sshd.port, root.display()),
            _ => format!("local:{}", root.display()),
        };
        push(&store, "v1", &spec, &conn);
        hosts.push((spec, root));
    }

    // Published: what a host at v1 (and an empty one) needs for v2.
    let publ = dir.join("pub");
    let s = str_of(&publ);
    let r = json(&ok(
        &store,
        &["publish", "v2", "--from", "v1", "--to", &s, "--json"],
    ));
    let pairs = r["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 2, "{r:#}");
    let from_v1 = &pairs[1];
    assert_eq!(from_v1["from"], v1.to_hex());
    assert!(
        from_v1["blobs"].as_u64().unwrap() >= 2,
        "a pack and the big file: {r:#}"
    );
    // The big file is the same whole object for an empty host: written once.
    assert_eq!(from_v1["present"], 1, "{r:#}");
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(publ.join(from_v1["index"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let names: Vec<String> = index["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("packs/")), "{index:#}");
    assert!(names.iter().any(|n| n.starts_with("objects/")), "{index:#}");
    // Publishing again writes nothing.
    let again = json(&ok(
        &store,
        &["publish", "v2", "--from", "v1", "--to", &s, "--json"],
    ));
    for p in again["pairs"].as_array().unwrap() {
        assert_eq!(p["written"], 0, "{again:#}");
    }

    let mut origin = Nginx::origin(&dir.join("origin"), &publ);
    let mut cache_a = Nginx::cache(&dir.join("cache-a"), origin.port);
    let cache_b = Nginx::cache(&dir.join("cache-b"), origin.port);

    // Colo b's cache dies in the middle of its wave: the health check of its first
    // wave host (local state of that host names the cache's pid) stops it and waits
    // for it to be gone, so the hosts after it find it dead.
    let kill = hosts[5].1.join("var/log/kill-cache");
    std::fs::create_dir_all(kill.parent().unwrap()).unwrap();
    std::fs::write(&kill, cache_b.pid().to_string()).unwrap();
    let health = "if [ -f /var/log/kill-cache ]; then read p < /var/log/kill-cache; \
                  kill -TERM $p; while kill -0 $p 2>/dev/null; do :; done; fi";

    // Two colos of four hosts, each behind its cache, the canary first.
    let list = |r: std::ops::Range<usize>| {
        hosts[r]
            .iter()
            .map(|(s, _)| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let inv = dir.join("fleet.toml");
    std::fs::write(
        &inv,
        format!(
            "[policy]\npause = \"none\"\ncanary = 1\nwaves = [\"100%\"]\nparallel = 3\n\
             [policy.health]\ncommand = '{health}'\nretries = 0\n\
             [[colo]]\nname = \"a\"\nhosts = [{}]\nmirrors = [\"{}\", \"{}\"]\n\
             [[colo]]\nname = \"b\"\nhosts = [{}]\nmirrors = [\"{}\", \"{}\"]\n\
             [colo.policy]\nparallel = 1\n",
            list(0..4),
            cache_a.url(),
            origin.url(),
            list(4..8),
            cache_b.url(),
            origin.url()
        ),
    )
    .unwrap();
    let out = ok(
        &store,
        &[
            "rollout",
            "v2",
            "--inventory",
            &str_of(&inv),
            "--yes",
            "--json",
            conn[0],
            conn[1],
            conn[2],
            conn[3],
        ],
    );
    let report = json(&out);
    let results = by_host(&report);
    for (spec, root) in &hosts[..8] {
        assert_host_is(root, &store, &v2);
        let h = &results[spec];
        assert_eq!(h["content"]["blobs_missing"], 0, "{h:#}");
        assert_eq!(h["content"]["controller_bytes"], 0, "{h:#}");
        assert!(
            h["content"]["mirrors_bytes"].as_u64().unwrap() > 1000,
            "{h:#}"
        );
        // The controller's session (ssh or a local agent's pipe) carried no file
        // content at all: control only.
        assert_eq!(data_sent(&h["push"]), 0, "{h:#}");
    }
    // The origin served each slice of each file once per colo (its cache asked once).
    let mut asked: HashMap<String, u32> = HashMap::new();
    for l in origin.access_log() {
        let f: Vec<&str> = l.split(' ').collect();
        *asked.entry(format!("{} {}", f[1], f[2])).or_default() += 1;
    }
    assert!(!asked.is_empty());
    for (what, n) in &asked {
        assert!(*n <= 2, "the origin served {what} {n} times:\n{asked:#?}");
    }
    for name in &names {
        assert!(
            asked.keys().any(|k| k.starts_with(&format!("/{name} "))),
            "{name} never reached the origin: {asked:#?}"
        );
    }
    // The canary warmed each cache for its wave: hits in both colos' totals.
    for (colo, hits) in [("a", 3 * 2), ("b", 2)] {
        let m = &report["content"][colo]["mirrors"][0];
        assert!(
            m["cache_hits"].as_u64().unwrap() >= hits,
            "{colo}: {report:#}"
        );
        assert_eq!(report["content"][colo]["controller_bytes"], 0);
    }
    // Colo b's hosts after its cache died took everything from the origin.
    for (spec, _) in &hosts[6..8] {
        let m = &results[spec]["content"]["mirrors"];
        assert!(m[0]["errors"].as_u64().unwrap() >= 1, "{m:#}");
        assert_eq!(m[0]["blobs"], 0, "{m:#}");
        assert!(m[1]["blobs"].as_u64().unwrap() >= 2, "{m:#}");
    }

    let push_via = |host: usize, mirrors: &[String]| {
        let mut args = vec!["push", "v2", hosts[host].0.as_str(), "--json"];
        for m in mirrors {
            args.extend(["--mirror", m.as_str()]);
        }
        let out = ok(&store, &args);
        assert_host_is(&hosts[host].1, &store, &v2);
        json(&out)["hosts"][0].clone()
    };
    let mirrors = [cache_a.url(), origin.url()];

    // A host that drifted from v1 in a file the update patches (its old version is
    // not the one the published patch is from): it still takes the published pack,
    // skipping that file's entry, and only that file comes from the controller.
    sh(&format!(
        "printf 'edit' | dd of='{}' bs=1 seek=70000 conv=notrunc status=none",
        hosts[10].1.join("usr/share/app/lib").display()
    ));
    let h = push_via(10, &mirrors);
    assert!(
        h["content"]["blobs_missing"].as_u64().unwrap() <= 1,
        "{h:#}"
    );
    assert!(
        h["content"]["mirrors_bytes"].as_u64().unwrap() > 300_000,
        "{h:#}"
    );
    let from_controller = h["content"]["controller_bytes"].as_u64().unwrap();
    assert!(from_controller > 0 && from_controller < 150_000, "{h:#}");

    // A cache that serves wrong bytes: caught by hash, taken from the origin instead,
    // nothing wrong committed.
    let cached = sh(&format!(
        "grep -rl --text 'KEY: /packs/' '{}' | head -1",
        dir.join("cache-a/cache").display()
    ));
    let cached = cached.trim();
    assert!(!cached.is_empty(), "no pack in cache a");
    sh(&format!(
        "f='{cached}'; n=$(stat -c %s \"$f\"); printf 'X' | dd of=\"$f\" bs=1 seek=$((n-1)) conv=notrunc status=none"
    ));
    let h = push_via(8, &mirrors);
    let m = &h["content"]["mirrors"];
    assert!(m[0]["corrupt"].as_u64().unwrap() >= 1, "{h:#}");
    assert!(m[1]["blobs"].as_u64().unwrap() >= 1, "{h:#}");
    assert_eq!(h["content"]["blobs_missing"], 0, "{h:#}");
    assert_eq!(data_sent(&h), 0, "{h:#}");

    // No mirror works: the controller sends it all.
    cache_a.stop();
    origin.stop();
    let h = push_via(9, &mirrors);
    assert_eq!(
        h["content"]["blobs_missing"], h["content"]["blobs"],
        "{h:#}"
    );
    assert!(data_sent(&h) > 1000, "{h:#}");
    assert_eq!(
        h["content"]["controller_bytes"].as_u64().unwrap(),
        h["sent"]["whole"]["bytes"].as_u64().unwrap()
            + h["sent"]["bsdiff"]["bytes"].as_u64().unwrap()
            + h["sent"]["gzip_delta"]["bytes"].as_u64().unwrap()
            + h["sent"]["zucchini"]["bytes"].as_u64().unwrap()
            + h["sent"]["bitcode_delta"]["bytes"].as_u64().unwrap()
            + h["sent"]["zstd_delta"]["bytes"].as_u64().unwrap(),
        "{h:#}"
    );

    // The next update reuses what was published: the big file did not change.
    let r = json(&ok(
        &store,
        &["publish", "v3", "--from", "v2", "--to", &s, "--json"],
    ));
    let present: u64 = r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["present"].as_u64().unwrap())
        .sum();
    assert!(present >= 1, "{r:#}");
}

fn str_of(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// A mirror that breaks every transfer: the first request for a file gets its headers
/// and half its bytes, then the connection closes; requests with a Range get what they
/// ask for. Python's http.server on a port of its own (it says which once it listens),
/// stopped at the end.
struct Breaking {
    child: std::process::Child,
    port: u16,
}

impl Breaking {
    fn start(root: &Path) -> Breaking {
        let script = r#"
import http.server, os, sys
root = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        p = os.path.join(root, self.path.lstrip("/"))
        if not os.path.isfile(p):
            self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
        data = open(p, "rb").read()
        r = self.headers.get("Range")
        if r:
            start = int(r.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers(); self.wfile.write(data[start:])
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers(); self.wfile.write(data[: len(data) // 2]); self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
    def log_message(self, *a): pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(root)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the breaking mirror did not start: {line:?}"));
        Breaking { child, port }
    }
}

impl Drop for Breaking {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A host at v1 and what a host at v1 needs for v2, published (not served yet).
struct Update {
    _t: tempfile::TempDir,
    store: std::path::PathBuf,
    root: std::path::PathBuf,
    spec: String,
    publ: std::path::PathBuf,
}

fn update(prefix: &str) -> Update {
    let t = scratch(prefix);
    let dir = t.path();
    let store = dir.join("store");
    for v in 1..=2 {
        version(&dir.join(format!("v{v}")), v);
        import(&store, &dir.join(format!("v{v}")), &format!("v{v}"));
    }
    let root = dir.join("host");
    std::fs::create_dir(&root).unwrap();
    let spec = format!("local:{}", root.display());
    push(&store, "v1", &spec, &[]);
    let publ = dir.join("pub");
    ok(
        &store,
        &["publish", "v2", "--from", "v1", "--to", &str_of(&publ)],
    );
    Update {
        store,
        root,
        spec,
        publ,
        _t: t,
    }
}

impl Update {
    /// Pushes v2 through `mirrors` with `SYNCER_TEST_MIRROR_LIMITS` set to `limits`;
    /// checks the host is v2 and returns its report.
    fn push(&self, mirrors: &[String], limits: &str) -> serde_json::Value {
        let mut args = vec!["push", "v2", self.spec.as_str(), "--json"];
        for m in mirrors {
            args.extend(["--mirror", m.as_str()]);
        }
        let out = syncer()
            .args(&args)
            .env("IMAGER_STORE", &self.store)
            .env("SYNCER_TEST_MIRROR_LIMITS", limits)
            .output()
            .unwrap();
        // (A push never fails for its mirrors: its report says what they did.)
        let report = json(&String::from_utf8_lossy(&out.stdout));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{report:#}\n{stderr}");
        assert_host_is(&self.root, &self.store, &id(&self.store, "v2"));
        report["hosts"][0].clone()
    }
}

#[test]
fn a_transfer_cut_short_resumes_where_it_stopped() {
    let u = update("mirrors-resume-");
    let mirror = Breaking::start(&u.publ);
    let url = format!("http://127.0.0.1:{}/", mirror.port);
    let h = &u.push(&[url], "");
    let m = &h["content"]["mirrors"][0];
    // Every file's transfer broke half-way and was resumed, none was fetched twice.
    assert_eq!(m["resumed"], h["content"]["blobs"], "{h:#}");
    assert_eq!(m["blobs"], h["content"]["blobs"], "{h:#}");
    assert_eq!(m["bytes"], h["content"]["mirrors_bytes"], "{h:#}");
    assert_eq!(m["errors"], 0, "{h:#}");
    assert_eq!(data_sent(h), 0, "{h:#}");
}

/// How a [`Hostile`] mirror treats a request.
#[derive(Clone, Copy)]
enum Hostility {
    /// Answers at once, with the file (or the part a Range asks for), then sends its
    /// body a byte per 100 ms and closes the connection after `cut_after` bytes.
    Trickle { cut_after: usize },
    /// Accepts the connection, reads the request and never answers.
    BlackHole,
}

/// A mirror of the files under a directory that is hostile in a way of its own, in
/// threads of the test (one per connection, a connection per request); it records
/// each request (`PATH RANGE`) and connection, and stops when dropped.
struct Hostile {
    port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Hostile {
    fn start(root: &Path, how: Hostility) -> Hostile {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let h = Hostile {
            port: listener.local_addr().unwrap().port(),
            requests: Default::default(),
            connections: Default::default(),
            stop: Default::default(),
        };
        let (root, requests, connections, stop) = (
            root.to_path_buf(),
            h.requests.clone(),
            h.connections.clone(),
            h.stop.clone(),
        );
        // Blocks in accept: a drop wakes it with a connection of its own.
        std::thread::spawn(move || {
            for s in listener.incoming() {
                if stop.load(SeqCst) {
                    return;
                }
                let Ok(s) = s else { continue };
                connections.fetch_add(1, SeqCst);
                let (root, requests, stop) = (root.clone(), requests.clone(), stop.clone());
                std::thread::spawn(move || serve_hostile(s, &root, how, &requests, &stop));
            }
        });
        h
    }

    /// A trickling mirror that cuts each connection after `cut_after` bytes.
    fn trickle(root: &Path, cut_after: usize) -> Hostile {
        Hostile::start(root, Hostility::Trickle { cut_after })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve_hostile(
    mut s: std::net::TcpStream,
    root: &Path,
    how: Hostility,
    requests: &std::sync::Mutex<Vec<String>>,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::io::{Read, Write};
    let stopped = || stop.load(std::sync::atomic::Ordering::SeqCst);
    // Short reads, so that a stop or a client gone is seen.
    s.set_read_timeout(Some(std::time::Duration::from_millis(50)))
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(_) if stopped() => return,
            Err(_) => {}
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
    let from: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("range: bytes=")
                .map(String::from)
        })
        .and_then(|r| r.split('-').next()?.parse().ok())
        .unwrap_or(0);
    requests.lock().unwrap().push(format!("{path} {from}"));
    match how {
        Hostility::BlackHole => {
            // Until the client gives up (it closes) or the test ends.
            while !stopped() {
                if let Ok(0) = s.read(&mut buf) {
                    return;
                }
            }
        }
        Hostility::Trickle { cut_after } => {
            let Ok(data) = std::fs::read(root.join(path.trim_start_matches('/'))) else {
                let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                return;
            };
            let status = match from {
                0 => "200 OK".to_string(),
                f => format!(
                    "206 Partial Content\r\nContent-Range: bytes {f}-{}/{}",
                    data.len() - 1,
                    data.len()
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                data.len() - from
            );
            if s.write_all(head.as_bytes()).is_err() {
                return;
            }
            for (sent, b) in data[from..].iter().enumerate() {
                if stopped() || sent == cut_after || s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

#[test]
fn a_trickling_mirror_is_left_out_after_one_blob_and_the_next_one_serves_the_push() {
    let u = update("mirrors-trickle-");
    // Cut after 5 s too, which would resume it if it were not left out.
    let trickle = Hostile::trickle(&u.publ, 50);
    let origin = Nginx::origin(&u.publ.with_file_name("origin"), &u.publ);
    // A byte per 100 ms against a floor of 4096 bytes/s over 2 s: however slow the
    // machine, the trickle is under it, and the origin (a local nginx) far above it.
    let h = u.push(&[trickle.url(), origin.url()], "window=2,floor=4096");
    let m = &h["content"]["mirrors"];
    assert_eq!(
        trickle.requests().len(),
        1,
        "{:?}\n{h:#}",
        trickle.requests()
    );
    assert_eq!(m[0]["requests"], 1, "{h:#}");
    assert_eq!(m[0]["errors"], 1, "{h:#}");
    assert_eq!(m[0]["resumed"], 0, "{h:#}");
    let why = m[0]["last_error"].as_str().unwrap();
    assert!(
        why.contains("too slow") && why.ends_with("(not asked again)"),
        "{h:#}"
    );
    // Everything came from the next mirror: nothing from the controller.
    assert_eq!(m[1]["blobs"], h["content"]["blobs"], "{h:#}");
    assert_eq!(h["content"]["blobs_missing"], 0, "{h:#}");
    assert_eq!(data_sent(&h), 0, "{h:#}");
}

#[test]
fn a_blob_has_one_budget_on_a_mirror_across_its_resumes() {
    let u = update("mirrors-budget-");
    // Each request brings 10 bytes (a second) and is cut: every one of them is worth a
    // resume, but the blob's one budget (2 s: no window, a floor that makes its length
    // free) runs out long before the requests do.
    let trickle = Hostile::trickle(&u.publ, 10);
    let h = u.push(&[trickle.url()], "window=100000,slack=2,floor=1000000000");
    let asked = trickle.requests();
    let path = |r: &String| r.split(' ').next().unwrap().to_string();
    // Requests for the first blob only (it was left out after it), fewer than the
    // four a blob may take: the budget ended them, not their number.
    assert!((1..4).contains(&asked.len()), "{asked:?}\n{h:#}");
    assert!(
        asked.iter().all(|r| path(r) == path(&asked[0])),
        "{asked:?}"
    );
    let m = &h["content"]["mirrors"][0];
    assert_eq!(m["errors"], 1, "{h:#}");
    let why = m["last_error"].as_str().unwrap();
    assert!(why.contains("out of its budget"), "{h:#}");
    // No mirror left: the controller sent it all.
    assert_eq!(
        h["content"]["blobs_missing"], h["content"]["blobs"],
        "{h:#}"
    );
    assert!(data_sent(&h) > 1000, "{h:#}");
}

#[test]
fn a_black_hole_mirror_costs_one_timeout() {
    let u = update("mirrors-black-hole-");
    let hole = Hostile::start(&u.publ, Hostility::BlackHole);
    let h = u.push(&[hole.url()], "window=1");
    // One request on one connection for all the blobs, none retried.
    assert_eq!(hole.connections(), 1, "{:?}\n{h:#}", hole.requests());
    assert_eq!(hole.requests().len(), 1, "{h:#}");
    let m = &h["content"]["mirrors"][0];
    assert_eq!(m["requests"], 1, "{h:#}");
    let why = m["last_error"].as_str().unwrap();
    assert!(why.contains("no answer in 1s (not asked again)"), "{h:#}");
    assert!(h["content"]["blobs"].as_u64().unwrap() >= 2, "{h:#}");
    assert_eq!(
        h["content"]["blobs_missing"], h["content"]["blobs"],
        "{h:#}"
    );
}

/// "Hosts at the same image ask for the same files": a first install onto an empty root
/// asks its mirrors for exactly what `publish` wrote for an empty root, local-state files
/// of the image (which a first install gets, a later push never touches) included, so no
/// file content comes from the controller.
#[test]
fn a_first_install_takes_what_publish_wrote_for_an_empty_root() {
    let t = scratch("mirrors-first-");
    let dir = t.path();
    let store = dir.join("store");
    let tree = dir.join("v2");
    version(&tree, 2);
    // As a build keeps them: default local state, among the image's other files in
    // the order of the image (so that a plan that left them out groups its packs
    // differently from one that has them).
    sh(&format!(
        "set -e; cd '{d}'; mkdir -p var/log/app etc/ssh root
         printf '127.0.0.1 localhost\\n' > etc/hosts
         printf 'image\\n' > etc/hostname
         for i in 1 2 3; do printf 'log %s\\n' $i > var/log/app/$i.log; done
         printf 'PS1=x\\n' > root/.profile",
        d = tree.display()
    ));
    import_leaving_out(&store, &tree, "v2", &[]);
    let publ = dir.join("pub");
    let r = json(&ok(
        &store,
        &["publish", "v2", "--to", &str_of(&publ), "--json"],
    ));
    assert_eq!(r["pairs"][0]["from"], serde_json::Value::Null, "{r:#}");
    let origin = Nginx::origin(&dir.join("origin"), &publ);

    let root = dir.join("host");
    std::fs::create_dir(&root).unwrap();
    let spec = format!("local:{}", root.display());
    let out = ok(
        &store,
        &["push", "v2", &spec, "--json", "--mirror", &origin.url()],
    );
    let h = json(&out)["hosts"][0].clone();
    assert_host_is_whole(&root, &store, &id(&store, "v2"));
    assert_eq!(h["content"]["blobs_missing"], 0, "{h:#}");
    assert_eq!(h["content"]["controller_bytes"], 0, "{h:#}");
    assert_eq!(data_sent(&h), 0, "{h:#}");
    assert!(
        h["content"]["mirrors_bytes"].as_u64().unwrap() > 300_000,
        "{h:#}"
    );
}
