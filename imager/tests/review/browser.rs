//! Headless Chromium for the HTML report's tests: a screenshot, the DOM after the page's
//! script ran, and a proxy that notes every request the browser tries, so that "the page
//! fetches nothing" is observed, not assumed. Also a small reader of the start tags
//! in the DOM Chromium prints (its serialisation is regular: double-quoted attributes,
//! `&quot;` and `&amp;` escaped), enough to count what the report's data attributes mark.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Debian's `chromium`; the tests fail (never skip) without it.
pub fn chromium() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .unwrap();
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !p.is_empty(),
        "the HTML report is tested in a real browser: apt-get install chromium"
    );
    PathBuf::from(p)
}

/// Hosts of Chromium's own services, which it calls whatever page it shows (component
/// updates, sign-in, network time), even with its background networking switched off.
/// Not resources a page could load; any other host a request goes to is the page's.
pub const BROWSER_OWN: [&str; 6] = [
    "accounts.google.com",
    "update.googleapis.com",
    "clients2.google.com",
    "safebrowsing.googleapis.com",
    "optimizationguide-pa.googleapis.com",
    "content-autofill.googleapis.com",
];

/// A proxy that answers nothing: it accepts each connection, notes the host the request
/// is for (`CONNECT host:443`, `GET http://host/...`) and closes it. Every request the
/// browser makes for anything but a file goes to it.
pub struct Proxy {
    pub addr: String,
    seen: Seen,
    readers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The hosts requested, in the order their readers saw them, and their signal.
type Seen = Arc<(Mutex<Vec<String>>, Condvar)>;

/// The host of the proxy's own last request (`Proxy::page_requests`).
const SYNC_HOST: &str = "proxy-sync.invalid";

/// The host a proxy request's first line names.
fn request_host(first: &str) -> String {
    let target = first.split_whitespace().nth(1).unwrap_or("");
    let hostport = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .map(|t| t.split('/').next().unwrap_or(""))
        .unwrap_or(target);
    hostport
        .rsplit_once(':')
        .map_or(hostport, |(h, _)| h)
        .to_string()
}

impl Proxy {
    pub fn start() -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let seen: Seen = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let readers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, r, st) = (seen.clone(), readers.clone(), stop.clone());
        // Each connection is read on a thread of its own until its first line or its
        // end (Chromium's exit closes it): no time limit, and one idle connection does
        // not hold up the others.
        let thread = std::thread::spawn(move || {
            for c in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut c) = c else { continue };
                let s = s.clone();
                r.lock().unwrap().push(std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    let n = c.read(&mut buf).unwrap_or(0);
                    let text = String::from_utf8_lossy(&buf[..n]);
                    let host = request_host(text.lines().next().unwrap_or(""));
                    s.0.lock().unwrap().push(host);
                    s.1.notify_all();
                }));
            }
        });
        Proxy {
            addr,
            seen,
            readers,
            stop,
            thread: Some(thread),
        }
    }

    /// The hosts of the requests so far that Chromium did not make for itself. A request
    /// of its own (`SYNC_HOST`) goes last: once it is seen, every connection accepted
    /// before it was too, and their readers are waited for.
    pub fn page_requests(&self) -> Vec<String> {
        let mut c = TcpStream::connect(&self.addr).unwrap();
        c.write_all(format!("GET http://{SYNC_HOST}/ HTTP/1.1\r\n").as_bytes())
            .unwrap();
        drop(c);
        let (lock, cv) = &*self.seen;
        drop(
            cv.wait_while(lock.lock().unwrap(), |v| !v.iter().any(|h| h == SYNC_HOST))
                .unwrap(),
        );
        for t in std::mem::take(&mut *self.readers.lock().unwrap()) {
            t.join().unwrap();
        }
        let seen = lock.lock().unwrap();
        seen.iter()
            .filter(|h| !BROWSER_OWN.contains(&h.as_str()) && *h != SYNC_HOST)
            .cloned()
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees `stop`.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `file://` URL of a path (the test's paths need no percent-encoding).
pub fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

/// Runs headless Chromium on `url` with `extra` options: its own profile under `work`,
/// every request through `proxy`, no name resolving, as little background fetching as
/// its switches allow ([`BROWSER_OWN`] is what is left);
/// killed after 180 s. Returns stdout; panics with stderr on failure.
pub fn run(work: &Path, proxy: &Proxy, url: &str, extra: &[String]) -> String {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let profile = work.join(format!(
        "chromium-profile-{}",
        RUNS.fetch_add(1, Ordering::SeqCst)
    ));
    let mut c = Command::new("timeout");
    c.arg("180")
        .arg(chromium())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-client-side-phishing-detection",
            "--disable-domain-reliability",
            "--no-pings",
            "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,AutofillServerCommunication,MediaRouter,Translate",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--proxy-server=http://{}", proxy.addr))
        .arg("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
        .args(extra)
        .arg(url);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "chromium on {url} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM after the page's scripts ran.
pub fn dump_dom(work: &Path, proxy: &Proxy, url: &str) -> String {
    run(work, proxy, url, &["--dump-dom".to_string()])
}

/// A 1280×2000 screenshot of `url` saved at `png`; checks it is one, with content (a
/// blank page compresses to a few kB).
pub fn screenshot(work: &Path, proxy: &Proxy, url: &str, png: &Path) {
    let _ = std::fs::remove_file(png);
    run(
        work,
        proxy,
        url,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,2000".to_string(),
            "--hide-scrollbars".to_string(),
        ],
    );
    let b = std::fs::read(png).unwrap_or_else(|e| panic!("no screenshot {}: {e}", png.display()));
    assert_eq!(
        &b[..8],
        b"\x89PNG\r\n\x1a\n",
        "not a PNG: {}",
        png.display()
    );
    let dim = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    assert_eq!((dim(16), dim(20)), (1280, 2000), "{}", png.display());
    assert!(
        b.len() > 40_000,
        "{}: {} bytes, a nearly blank page",
        png.display(),
        b.len()
    );
}

/// One start tag: its name and attributes (values with character references decoded).
#[derive(Debug)]
pub struct Tag {
    pub name: String,
    pub attrs: BTreeMap<String, String>,
}

impl Tag {
    pub fn get(&self, a: &str) -> Option<&str> {
        self.attrs.get(a).map(String::as_str)
    }
    pub fn hidden(&self) -> bool {
        self.attrs.contains_key("hidden")
    }
}

pub fn decode(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The start tags of a serialised DOM, in document order (the text of `<script>` and
/// `<style>` skipped).
pub fn tags(html: &str) -> Vec<Tag> {
    let b = html.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = html[i..].find('<') {
        i += off + 1;
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'-') {
            i += 1;
        }
        if i == start {
            continue;
        }
        let name = html[start..i].to_ascii_lowercase();
        let mut attrs = BTreeMap::new();
        loop {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= b.len() || b[i] == b'>' || b[i] == b'/' {
                break;
            }
            let a = i;
            while i < b.len() && !b"= >/\t\n".contains(&b[i]) {
                i += 1;
            }
            let key = html[a..i].to_string();
            let mut value = String::new();
            if i < b.len() && b[i] == b'=' {
                i += 1;
                if i < b.len() && b[i] == b'"' {
                    let end = html[i + 1..].find('"').map_or(b.len(), |e| e + i + 1);
                    value = decode(&html[i + 1..end]);
                    i = (end + 1).min(b.len());
                } else {
                    let a = i;
                    while i < b.len() && !b" >\t\n".contains(&b[i]) {
                        i += 1;
                    }
                    value = decode(&html[a..i]);
                }
            } else if key.is_empty() {
                // Not an attribute (a stray character): step over it.
                i += 1;
            }
            attrs.insert(key, value);
        }
        if name == "script" || name == "style" {
            if let Some(e) = html[i..].find(&format!("</{name}>")) {
                i += e;
            }
        }
        out.push(Tag { name, attrs });
    }
    out
}

/// What the report's DOM holds, read from its data attributes.
#[derive(Debug, Default)]
pub struct Dom {
    /// `(name, kind, hidden)` of the package table's rows.
    pub rows: Vec<(String, String, bool)>,
    /// The sections in order: `(kind, package, total, folded, hidden, files)` with the
    /// files as `(path, change, hidden)`.
    pub sections: Vec<DomSection>,
    /// The summary's data attributes.
    pub summary: BTreeMap<String, String>,
    /// `<script>` elements.
    pub scripts: usize,
    /// Every tag, for anything else.
    pub all: Vec<Tag>,
}

#[derive(Debug, Default)]
pub struct DomSection {
    pub kind: String,
    pub package: String,
    pub total: u64,
    pub folded: u64,
    pub hidden: bool,
    pub files: Vec<(String, String, bool)>,
}

pub fn read_dom(html: &str) -> Dom {
    let mut d = Dom::default();
    let all = tags(html);
    for t in &all {
        let s = |a: &str| t.get(a).unwrap_or("").to_string();
        if t.name == "script" {
            d.scripts += 1;
        } else if t.name == "tr" && t.get("data-kind").is_some() {
            d.rows.push((s("data-package"), s("data-kind"), t.hidden()));
        } else if t.get("data-section").is_some() {
            d.sections.push(DomSection {
                kind: s("data-section"),
                package: s("data-package"),
                total: s("data-total").parse().unwrap(),
                folded: s("data-folded").parse().unwrap(),
                hidden: t.hidden(),
                files: Vec::new(),
            });
        } else if t.get("data-file").is_some() {
            let sec = d.sections.last_mut().expect("a file outside any section");
            sec.files
                .push((s("data-file"), s("data-change"), t.hidden()));
        } else if t.name == "ul" && t.get("data-files-added").is_some() {
            d.summary = t.attrs.clone();
        }
    }
    d.all = all;
    d
}
