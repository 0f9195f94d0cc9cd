//! What a push or rollout shows while it runs: on a terminal, one progress bar per host
//! in flight (and the fleet's and the wave's totals), each finished host as one printed
//! line above them; without a terminal, plain log lines. Conclusions are printed after
//! the bars are cleared ([`HostBars::clear`]), so that no redraw overwrites them.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use syncer::progress::{Observer, Phase};

/// Bars when stderr is a terminal and `no_bars` is false (the report is text, no `-q`);
/// else `plain`.
pub fn observer<'a>(
    bars: &'a HostBars,
    no_bars: bool,
    plain: &'a dyn Observer,
) -> &'a dyn Observer {
    if std::io::stderr().is_terminal() && !no_bars {
        bars
    } else {
        plain
    }
}

/// One bar per host on a terminal.
pub struct HostBars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    /// A rollout's whole fleet and its current wave.
    fleet: Mutex<Option<(ProgressBar, ProgressBar)>>,
}

impl HostBars {
    pub fn new() -> HostBars {
        HostBars {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
            fleet: Mutex::new(None),
        }
    }

    fn counter(&self, len: u64, prefix: &str) -> ProgressBar {
        let b = self.multi.insert(0, ProgressBar::new(len));
        b.set_style(
            ProgressStyle::with_template("{prefix:30} {bar:43} {pos}/{len} hosts {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_prefix(prefix.to_string());
        b
    }

    fn bar(&self, host: &str) -> ProgressBar {
        let mut m = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(host.to_string())
            .or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(0));
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix:30} {msg:12} {bar:30} {bytes}/{total_bytes}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.set_prefix(host.to_string());
                b
            })
            .clone()
    }
}

impl HostBars {
    /// Removes every bar from the terminal, before the command prints its conclusion.
    pub fn clear(&self) {
        for (_, b) in self.bars.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            b.finish_and_clear();
        }
        if let Some((f, w)) = self.fleet.lock().unwrap_or_else(|p| p.into_inner()).take() {
            f.finish_and_clear();
            w.finish_and_clear();
        }
        let _ = self.multi.clear();
    }

    /// The bars' terminal: a question asked in its `suspend` has the bars hidden while
    /// it waits, drawn again after.
    pub fn multi(&self) -> MultiProgress {
        self.multi.clone()
    }
}

impl Observer for HostBars {
    fn phase(&self, host: &str, phase: Phase) {
        if phase.is_final() {
            // A finished host leaves the screen: its outcome is its printed line (a
            // rollout's, or the push's report), never a bar that says "done" about a
            // host the rollout then failed.
            let gone = self
                .bars
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(host);
            if let Some(b) = gone {
                b.finish_and_clear();
                self.multi.remove(&b);
            }
            return;
        }
        self.bar(host).set_message(phase.label());
    }
    fn log(&self, line: &str) {
        let _ = self.multi.println(line);
    }
    fn rollout(&self, hosts: u64) {
        let fleet = self.counter(hosts, "fleet");
        let wave = self.counter(0, "wave");
        self.multi.remove(&wave);
        let wave = self.multi.insert(1, wave);
        *self.fleet.lock().unwrap_or_else(|p| p.into_inner()) = Some((fleet, wave));
    }
    fn wave(&self, label: &str, hosts: u64) {
        if let Some((_, w)) = &*self.fleet.lock().unwrap_or_else(|p| p.into_inner()) {
            w.set_prefix(label.to_string());
            w.set_length(hosts);
            w.set_position(0);
        }
    }
    fn host_done(&self, ok: bool) {
        if let Some((f, w)) = &*self.fleet.lock().unwrap_or_else(|p| p.into_inner()) {
            f.inc(1);
            w.inc(1);
            if !ok {
                f.set_message("(failures)");
            }
        }
    }
    fn bytes(&self, host: &str, total: u64, done: u64) {
        let b = self.bar(host);
        b.set_length(total);
        b.set_position(done);
    }
}

/// Log lines on stderr, for runs without a terminal (or with `-q`): each host's outcome
/// and the warnings, and unless `quiet` the notes of how far the rollout got.
pub struct PlainLog {
    pub quiet: bool,
}
impl Observer for PlainLog {
    fn log(&self, line: &str) {
        eprintln!("{line}");
    }
    fn note(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }
}

/// Without a terminal, a line on stderr for each host whose phase has gone on for
/// [`SlowLog::AFTER`], then every [`SlowLog::EVERY`] it goes on: a first install
/// planning for minutes, or a large file crossing a slow link, is not silent in a log.
/// Phases that end sooner print nothing (the report says it all).
pub struct SlowLog {
    hosts: Mutex<HashMap<String, Slow>>,
    done: (Mutex<bool>, std::sync::Condvar),
}

/// Where one host is: its phase, since when, when it was last told, and its bytes.
struct Slow {
    phase: Phase,
    since: std::time::Instant,
    told: Option<std::time::Instant>,
    bytes: Option<(u64, u64)>,
}

impl SlowLog {
    const AFTER: std::time::Duration = std::time::Duration::from_secs(5);
    const EVERY: std::time::Duration = std::time::Duration::from_secs(30);

    pub fn new() -> SlowLog {
        SlowLog {
            hosts: Mutex::new(HashMap::new()),
            done: (Mutex::new(false), std::sync::Condvar::new()),
        }
    }

    /// Runs `f` (the pushes) with a thread that prints the lines, stopped when `f` ends.
    pub fn while_running<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| self.watch());
            let out = f();
            *self.done.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
            self.done.1.notify_all();
            out
        })
    }

    fn watch(&self) {
        let mut done = self.done.0.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            done = self
                .done
                .1
                .wait_timeout(done, std::time::Duration::from_secs(1))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            for line in self.due(std::time::Instant::now()) {
                eprintln!("{line}");
            }
        }
    }

    /// The lines due at `now`, each host marked as told.
    fn due(&self, now: std::time::Instant) -> Vec<String> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (host, s) in hosts.iter_mut() {
            let wait = match s.told {
                None => Self::AFTER,
                Some(_) => Self::EVERY,
            };
            if now.duration_since(s.told.unwrap_or(s.since)) < wait {
                continue;
            }
            s.told = Some(now);
            let mut line = format!(
                "{host}: {} for {} s",
                s.phase.label(),
                now.duration_since(s.since).as_secs()
            );
            if let (Phase::Staging, Some((total, done))) = (s.phase, s.bytes) {
                line += &format!(
                    ", {} of {} sent",
                    imager::units::bytes(done),
                    imager::units::bytes(total)
                );
            }
            out.push(line);
        }
        out.sort();
        out
    }
}

impl Observer for SlowLog {
    fn phase(&self, host: &str, phase: Phase) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if phase.is_final() {
            hosts.remove(host);
        } else {
            hosts.insert(
                host.to_string(),
                Slow {
                    phase,
                    since: std::time::Instant::now(),
                    told: None,
                    bytes: None,
                },
            );
        }
    }
    fn bytes(&self, host: &str, total: u64, done: u64) {
        if let Some(s) = self
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(host)
        {
            s.bytes = Some((total, done));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_slow_phase_is_told_after_five_seconds_then_every_thirty() {
        let log = SlowLog::new();
        log.phase("h", Phase::Planning);
        let t0 = log.hosts.lock().unwrap().get("h").unwrap().since;
        assert!(log.due(t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(
            log.due(t0 + Duration::from_secs(5)),
            ["h: planning for 5 s"]
        );
        assert!(log.due(t0 + Duration::from_secs(20)).is_empty());
        assert_eq!(
            log.due(t0 + Duration::from_secs(35)),
            ["h: planning for 35 s"]
        );
        log.phase("h", Phase::Staging);
        log.bytes("h", 2_000_000, 500_000);
        let t1 = log.hosts.lock().unwrap().get("h").unwrap().since;
        assert_eq!(
            log.due(t1 + Duration::from_secs(6)),
            ["h: staging for 6 s, 500 kB of 2.00 MB sent"]
        );
        log.phase("h", Phase::Done);
        assert!(log.due(t1 + Duration::from_secs(60)).is_empty());
    }
}
