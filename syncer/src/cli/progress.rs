//! What a push or rollout shows while it runs: on a terminal, one progress bar per host
//! in flight (and the fleet's and the wave's totals), each finished host as one printed
//! line above them; without a terminal, plain log lines. Conclusions are printed after
//! the bars are cleared ([`HostBars::clear`]), so that no redraw overwrites them.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use syncer::progress::{Observer, Phase};

/// Bars when stderr is a terminal and the report is text; else `quiet`.
pub fn observer<'a>(bars: &'a HostBars, json: bool, quiet: &'a dyn Observer) -> &'a dyn Observer {
    if std::io::stderr().is_terminal() && !json {
        bars
    } else {
        quiet
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

/// Log lines on stderr, for runs without a terminal.
pub struct PlainLog;
impl Observer for PlainLog {
    fn log(&self, line: &str) {
        eprintln!("{line}");
    }
}
