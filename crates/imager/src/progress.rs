//! Progress reporting, supplied by the caller: the library says what it is doing, the
//! binary decides whether that becomes indicatif bars (on a terminal) or nothing.

pub trait Progress: Sync {
    /// A new phase begins; `total` is its number of steps when known.
    fn start(&self, _phase: &str, _total: Option<u64>) {}
    fn inc(&self, _n: u64) {}
    fn finish(&self) {}
}

/// Reports nothing (tests, pipes).
pub struct Quiet;
impl Progress for Quiet {}
