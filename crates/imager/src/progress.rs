//! Progress reporting, supplied by the caller: the library says what it is doing, the
//! binary decides whether that becomes indicatif bars (on a terminal) or nothing.

/// Where the library reports how far a long operation has got. Every method does
/// nothing by default; it is `Sync` because work runs on several threads.
pub trait Progress: Sync {
    /// A new phase begins; `total` is its number of steps when known.
    fn start(&self, _phase: &str, _total: Option<u64>) {}
    /// `n` more steps of the current phase are done.
    fn inc(&self, _n: u64) {}
    /// The current phase is over.
    fn finish(&self) {}
}

/// Reports nothing (tests, pipes).
pub struct Quiet;
impl Progress for Quiet {}
