//! Progress as indicatif bars, for a terminal: one bar (or spinner) per phase.

use imager::progress::Progress;
use std::sync::Mutex;

#[derive(Default)]
pub(crate) struct TerminalBars {
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl Progress for TerminalBars {
    fn start(&self, phase: &str, total: Option<u64>) {
        let bar = match total {
            Some(n) => indicatif::ProgressBar::new(n).with_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:>14} [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_message(phase.to_string());
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(bar);
        }
    }
    fn inc(&self, n: u64) {
        if let Ok(b) = self.bar.lock() {
            if let Some(b) = b.as_ref() {
                b.inc(n);
            }
        }
    }
    fn finish(&self) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some(b) = b.take() {
                b.finish_and_clear();
            }
        }
    }
}
