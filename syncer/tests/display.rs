//! What a rollout shows, as a person sees it: under a real terminal (a tmux pane, read
//! with `capture-pane`) and piped into a log. Each host's line appears once, a failed
//! one marked; the prompt between colos once; the conclusion (the summary, `STOPPED`,
//! the `--resume` hint) stays on the screen after the bars are gone. The tests wait for
//! what the pane shows, never for a time.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Five `local:` hosts at v1 in two colos (lab: 2, prod: 3), and v2 to roll out; the
/// health check fails on a host that has `/root/fail-health`.
struct Fleet {
    _t: tempfile::TempDir,
    dir: PathBuf,
    store: PathBuf,
    hosts: Vec<PathBuf>,
}

impl Fleet {
    fn new(prefix: &str) -> Fleet {
        let (t, dir, store) = two_image_store(prefix, 100_000);
        let hosts: Vec<PathBuf> = (1..=5).map(|i| dir.join(format!("h{i}"))).collect();
        for h in &hosts {
            std::fs::create_dir(h).unwrap();
            ok(&store, &["push", "v1", &format!("local:{}", h.display())]);
        }
        Fleet {
            _t: t,
            dir,
            store,
            hosts,
        }
    }

    fn spec(&self, i: usize) -> String {
        format!("local:{}", self.hosts[i].display())
    }

    fn inventory(&self) -> PathBuf {
        let list = |r: std::ops::Range<usize>| {
            r.map(|i| format!("\"{}\"", self.spec(i)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let p = self.dir.join("fleet.toml");
        std::fs::write(
            &p,
            format!(
                "[policy]\npause = \"confirm\"\ncanary = 1\nwaves = [\"100%\"]\nparallel = 2\n\
                 [policy.health]\ncommand = \"test ! -e /root/fail-health\"\ntimeout = 10\nretries = 0\n\n\
                 [[colo]]\nname = \"lab\"\nhosts = [{}]\n\n[[colo]]\nname = \"prod\"\nhosts = [{}]\n",
                list(0..2),
                list(2..5)
            ),
        )
        .unwrap();
        p
    }

    /// The rollout's command line, for a shell.
    fn rollout(&self, extra: &str) -> String {
        format!(
            "IMAGER_STORE='{}' '{}' rollout v2 --inventory '{}' {extra}",
            self.store.display(),
            env!("CARGO_BIN_EXE_syncer"),
            self.inventory().display()
        )
    }
}

/// A tmux server of its own (its own socket), with one 160×50 pane running a command;
/// killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(dir: &Path, command: &str) -> Tmux {
        // A socket of its own each time: `kill-server` returns before the old server
        // is gone, and a new one on the same socket could reach the one exiting ("server
        // exited unexpectedly", as CI saw once).
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let t = Tmux {
            socket: dir.join(format!("tmux-{n}.sock")).display().to_string(),
        };
        // The pane stays after the command ends (its last screen is what is checked),
        // and says it ended on a tmux channel ([`Tmux::ended`]).
        let script = dir.join("pane.sh");
        std::fs::write(
            &script,
            format!(
                "{command}\necho EXIT=$?\ntmux -S '{}' wait-for -S ended\nsleep infinity\n",
                t.socket
            ),
        )
        .unwrap();
        t.tmux(&[
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "50",
            "-s",
            "t",
            &format!("sh '{}'", script.display()),
        ]);
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-S", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pane's text, the lines scrolled off included.
    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "t", "-S", "-", "-E", "-"])
    }

    /// Waits until the pane shows `what` (a prompt: no program tells when it is drawn,
    /// so the pane is read again until it is; the bound only makes a broken display fail
    /// the test instead of hanging it); returns the screen.
    fn wait_for(&self, what: &str) -> String {
        let start = std::time::Instant::now();
        loop {
            let s = self.screen();
            if s.contains(what) {
                return s;
            }
            assert!(
                start.elapsed().as_secs() < 600,
                "the pane never showed {what:?}:\n{s}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Waits until the pane's command has ended (the channel is signalled even when
    /// nobody waits yet), then returns the screen.
    fn ended(&self) -> String {
        self.tmux(&["wait-for", "ended"]);
        self.screen()
    }

    fn keys(&self, keys: &[&str]) {
        let mut a = vec!["send-keys", "-t", "t"];
        a.extend_from_slice(keys);
        self.tmux(&a);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-S", &self.socket, "kill-server"])
            .status();
    }
}

/// How many lines of `text` contain `what`.
fn lines_with(text: &str, what: &str) -> usize {
    text.lines().filter(|l| l.contains(what)).count()
}

#[test]
fn on_a_terminal_each_host_is_one_line_and_the_conclusion_stays() {
    let f = Fleet::new("display-tty-");
    let pane = Tmux::run(&f.dir, &f.rollout(""));
    // The prompt between the colos, asked once, answered on the terminal.
    let s = pane.wait_for("Continue with colo prod? [y/N]");
    assert_eq!(lines_with(&s, "Continue with colo prod?"), 1, "{s}");
    pane.keys(&["y", "Enter"]);
    let s = pane.ended();
    assert!(s.contains("EXIT=0"), "{s}");
    for i in 0..5 {
        assert_eq!(
            lines_with(&s, &format!("{} [", f.spec(i))),
            1,
            "host {i}:\n{s}"
        );
    }
    assert_eq!(lines_with(&s, "Continue with colo prod?"), 1, "{s}");
    // The conclusion is the last thing on the screen; no bar is left over it.
    let last: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    let n = last.len();
    assert!(last[n - 2].starts_with("finished: image "), "{s}");
    assert!(last[n - 3].starts_with("5 host(s) ok, 0 failed"), "{s}");
    assert!(!s.contains("/5 hosts") && !s.contains(" done "), "{s}");

    // A canary that fails: marked, and STOPPED with the resume hint stays on screen.
    for h in &f.hosts {
        ok(&f.store, &["push", "v1", &format!("local:{}", h.display())]);
    }
    std::fs::write(f.hosts[0].join("root/fail-health"), "").unwrap();
    drop(pane);
    let pane = Tmux::run(&f.dir, &f.rollout("--yes"));
    let s = pane.ended();
    assert!(s.contains("EXIT=1"), "{s}");
    let failed = format!("{} [lab canary]: FAILED", f.spec(0));
    // Once as it finished, once in the conclusion's list of failures.
    assert_eq!(lines_with(&s, &failed), 2, "{s}");
    let stop = s
        .lines()
        .position(|l| l.starts_with("STOPPED: colo lab canary: 1 host(s) failed, the budget is 0"))
        .unwrap_or_else(|| panic!("no STOPPED line:\n{s}"));
    assert!(s.lines().nth(stop + 1).unwrap().contains("--resume"), "{s}");
}

#[test]
fn piped_into_a_log_each_host_is_one_line() {
    let f = Fleet::new("display-log-");
    std::fs::write(f.hosts[3].join("root/fail-health"), "").unwrap();
    let log = f.dir.join("rollout.log");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{} > '{}' 2>&1", f.rollout("--yes"), log.display()))
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let text = std::fs::read_to_string(&log).unwrap();
    // Prod's wave fails one host (its budget is 0); the other host of the wave may or
    // may not have started before that (two at once), and is in the log once if it did.
    for i in [0, 1, 2] {
        assert_eq!(
            lines_with(&text, &format!("{} [", f.spec(i))),
            1,
            "host {i}:\n{text}"
        );
    }
    assert!(
        lines_with(&text, &format!("{} [", f.spec(4))) <= 1,
        "{text}"
    );
    let failed = format!("{} [prod wave 1]: FAILED", f.spec(3));
    assert_eq!(lines_with(&text, &failed), 2, "{text}");
    assert_eq!(lines_with(&text, "STOPPED: colo prod wave 1"), 1, "{text}");
    assert_eq!(lines_with(&text, " host(s) ok, 1 failed"), 1, "{text}");
}
