//! How a push shows its progress and times itself: the [`Phase`]s one host's push goes
//! through, the [`Observer`] told of each (progress bars, a rollout's log), and a
//! [`Clock`] whose guards time a phase from its start to the end of their scope (an
//! early return by `?` included), so a start is never left without its finish.

use serde::Serialize;
use std::cell::RefCell;
use std::time::Instant;

/// One step of a push to a host, in order; `Done` or `Failed` ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Phase {
    /// Reaching the host and starting its agent (installing it first when asked to and
    /// it is missing or another build), up to the agent's welcome.
    Connecting,
    /// The agent scans the host and compares it with the image, up to its differences.
    Scanning,
    /// Choosing how each changed file travels and encoding it (deltas, packs).
    Planning,
    /// Sending the content (the agent stages it as it arrives).
    Staging,
    /// Waiting for the agent to commit the staged files through its journal.
    Committing,
    /// The image's triggers running on the host, then its check for processes that
    /// still run replaced files.
    Triggers,
    /// The push's health check, retried as its options say.
    HealthCheck,
    /// The push is over and the host is fine.
    Done,
    /// The push is over and failed, at whatever phase (its report says where).
    Failed,
}

impl Phase {
    /// The word progress bars show.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::Scanning => "scanning",
            Phase::Planning => "planning",
            Phase::Staging => "staging",
            Phase::Committing => "committing",
            Phase::Triggers => "triggers",
            Phase::HealthCheck => "health check",
            Phase::Done => "done",
            Phase::Failed => "failed",
        }
    }

    /// Whether the push is over.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Done | Phase::Failed)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Called as a push goes through its phases (progress bars) and a rollout through its
/// waves.
pub trait Observer: Sync {
    /// The push to `host` enters `phase` (a final one once, at its end).
    fn phase(&self, _host: &str, _phase: Phase) {}
    /// Content sent to `host` so far: `done` of the `total` bytes the controller sends
    /// itself, encoded as they go on the wire (what mirrors serve is not counted).
    fn bytes(&self, _host: &str, _total: u64, _done: u64) {}
    /// A line for the log of a rollout (printed when there are no progress bars): a
    /// host's outcome, a warning.
    fn log(&self, _line: &str) {}
    /// A line that only says how far a rollout got (a wave starts, a pause, a host is
    /// rolled back): logged as [`Observer::log`]'s unless the observer is quiet (`-q`).
    fn note(&self, line: &str) {
        self.log(line);
    }
    /// A rollout of `hosts` hosts begins.
    fn rollout(&self, _hosts: u64) {}
    /// A wave begins (`label`: colo and wave).
    fn wave(&self, _label: &str, _hosts: u64) {}
    /// A host of the rollout is done (pushed, checked and, if it failed, rolled back).
    fn host_done(&self, _ok: bool) {}
}

/// Observes nothing.
pub struct NoObserver;
impl Observer for NoObserver {}

/// The seconds each phase of one host's push took, and the observer told of each.
pub struct Clock<'a> {
    host: String,
    obs: &'a dyn Observer,
    seconds: RefCell<Vec<(Phase, f64)>>,
}

impl<'a> Clock<'a> {
    /// A clock for the push to `host` (the name the observer is told), no phase timed yet.
    pub fn new(host: &str, obs: &'a dyn Observer) -> Clock<'a> {
        Clock {
            host: host.to_string(),
            obs,
            seconds: RefCell::new(Vec::new()),
        }
    }

    /// Tells the observer that `phase` begins; its time counts until the guard drops.
    pub fn start(&self, phase: Phase) -> PhaseGuard<'_, 'a> {
        self.obs.phase(&self.host, phase);
        PhaseGuard {
            clock: self,
            phase,
            started: Instant::now(),
        }
    }

    /// Tells the observer the push is over (`Done` or `Failed`).
    pub fn finish(&self, phase: Phase) {
        self.obs.phase(&self.host, phase);
    }

    /// The seconds `phase` took (every time it ran, added up); 0 if it did not run.
    pub fn seconds(&self, phase: Phase) -> f64 {
        self.seconds
            .borrow()
            .iter()
            .filter(|(p, _)| *p == phase)
            // Not `sum()`: an empty float sum is -0.0, which reports print as "-0.00s".
            .fold(0.0, |total, (_, s)| total + s)
    }

    /// The observer it tells, for the parts of a push that report more than phases
    /// (bytes sent).
    pub fn observer(&self) -> &'a dyn Observer {
        self.obs
    }

    /// The host's name, as the observer is told it.
    pub fn host(&self) -> &str {
        &self.host
    }
}

/// A running phase: its time is recorded when it drops.
pub struct PhaseGuard<'c, 'a> {
    clock: &'c Clock<'a>,
    phase: Phase,
    started: Instant,
}

impl Drop for PhaseGuard<'_, '_> {
    fn drop(&mut self) {
        let s = self.started.elapsed().as_secs_f64();
        self.clock.seconds.borrow_mut().push((self.phase, s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);
    impl Observer for Seen {
        fn phase(&self, host: &str, phase: Phase) {
            self.0.lock().unwrap().push(format!("{host} {phase}"));
        }
    }

    fn failing(clock: &Clock) -> Result<(), ()> {
        let _scan = clock.start(Phase::Scanning);
        Err(())?;
        Ok(())
    }

    #[test]
    fn a_phase_is_timed_to_the_end_of_its_scope_even_on_an_early_return() {
        let seen = Seen::default();
        let clock = Clock::new("h", &seen);
        {
            let _c = clock.start(Phase::Connecting);
        }
        assert!(failing(&clock).is_err());
        let scan_recorded = clock
            .seconds
            .borrow()
            .iter()
            .any(|(p, _)| *p == Phase::Scanning);
        assert!(scan_recorded, "the early return still recorded the phase");
        assert_eq!(clock.seconds(Phase::Planning), 0.0);
        // Positive zero: a phase that never ran is printed "0.00s", not "-0.00s".
        assert!(clock.seconds(Phase::Planning).is_sign_positive());
        clock.finish(Phase::Failed);
        assert_eq!(
            *seen.0.lock().unwrap(),
            ["h connecting", "h scanning", "h failed"]
        );
        assert!(Phase::Failed.is_final() && !Phase::Triggers.is_final());
    }
}
