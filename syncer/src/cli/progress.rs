//! What a push or rollout shows while it runs: one progress bar per host (and the
//! fleet's and the wave's) on a terminal, plain log lines without one.

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

impl Observer for HostBars {
    fn phase(&self, host: &str, phase: Phase) {
        let b = self.bar(host);
        b.set_message(phase.label());
        if phase.is_final() {
            b.finish();
        }
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
