//! Bandwidth limits: token buckets shared by whatever writes through them (one per host,
//! one for all hosts), so a rollout never sends faster than the policy allows.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A token bucket of `rate` bytes per second holding at most a tenth of a second's worth,
/// so the rate holds over any interval longer than that.
pub struct Bucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    /// A bucket of `rate` bytes per second (0 counts as 1), empty at first, in an `Arc` for
    /// the writers and readers that share it.
    pub fn new(rate: u64) -> Arc<Bucket> {
        Arc::new(Bucket {
            rate: rate.max(1) as f64,
            state: Mutex::new((0.0, Instant::now())),
        })
    }

    fn burst(&self) -> f64 {
        (self.rate / 10.0).max(4096.0)
    }

    /// Waits until `n` bytes may go.
    pub fn take(&self, n: usize) {
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let (tokens, last) = *s;
            let tokens =
                (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst());
            let left = tokens - n as f64;
            *s = (left, now);
            if left < 0.0 {
                Duration::from_secs_f64(-left / self.rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// A writer that passes through every bucket before writing (none: unlimited).
pub struct Limited<W> {
    inner: W,
    buckets: Vec<Arc<Bucket>>,
}

impl<W: Write> Limited<W> {
    /// Writes to `inner` at the pace of every bucket in `buckets`.
    pub fn new(inner: W, buckets: Vec<Arc<Bucket>>) -> Self {
        Limited { inner, buckets }
    }
}

impl<W: Write> Write for Limited<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.buckets.is_empty() {
            return self.inner.write(buf);
        }
        // Small pieces, so that a large write is spread out instead of sent in a burst.
        let piece = &buf[..buf.len().min(16 << 10)];
        for b in &self.buckets {
            b.take(piece.len());
        }
        self.inner.write_all(piece)?;
        Ok(piece.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that passes through every bucket after reading (none: unlimited): the
/// agent's fetches from HTTP mirrors, which the controller's buckets never see.
pub struct LimitedRead<R> {
    inner: R,
    buckets: Vec<Arc<Bucket>>,
}

impl<R: Read> LimitedRead<R> {
    /// Reads from `inner` at the pace of every bucket in `buckets`.
    pub fn new(inner: R, buckets: Vec<Arc<Bucket>>) -> Self {
        LimitedRead { inner, buckets }
    }
}

impl<R: Read> Read for LimitedRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.buckets.is_empty() {
            return self.inner.read(buf);
        }
        let n = buf.len().min(16 << 10);
        let got = self.inner.read(&mut buf[..n])?;
        for b in &self.buckets {
            b.take(got);
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_its_rate() {
        let b = Bucket::new(1_000_000);
        let mut w = Limited::new(std::io::sink(), vec![b]);
        let t = Instant::now();
        w.write_all(&vec![0u8; 500_000]).unwrap_or_default();
        let s = t.elapsed().as_secs_f64();
        // Never faster than the rate (a burst of a tenth of a second aside); a loaded
        // machine can only make it slower, so there is no upper bound.
        assert!(s >= 0.4, "500 kB at 1 MB/s took {s} s");
    }
}
