//! Content from HTTP mirrors: the blobs a `Fetch` names (`crate::publish` writes them),
//! each taken from the first mirror that gives exactly its bytes. A mirror is a colo's
//! nginx cache or the origin behind it; none is trusted: every blob is checked by its
//! length and blake3, which came over the controller's ssh session, before it is
//! staged. An interrupted transfer resumes with a Range request; a blob a mirror does
//! not have (404), cannot serve, or serves wrong goes to the next mirror; one no mirror
//! gives is left to the controller's own stream.
//!
//! Whatever a mirror does, it costs a push a bounded time: a blob has one budget per
//! mirror (`SLACK` plus its length at `FLOOR`) for all the requests it takes, and a
//! mirror that sends slower than the floor over the last `WINDOW` (or nothing for a
//! window), runs out of a budget or does not answer is left out for the rest of the
//! fetch. A cache that is down or a black hole costs one timeout; one that trickles,
//! about a window.

use crate::error::{Error, Result};
use crate::protocol::{Blob, MirrorStats};
use crate::ratelimit::{Bucket, LimitedRead};
use imager_core::Hash;
use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests per blob and mirror: the first, and resumes of a transfer cut short while
/// each brings bytes the last did not (all within the blob's one budget).
const ATTEMPTS: u32 = 4;
/// How long a mirror may take to accept a connection before it is left out.
const CONNECT: Duration = Duration::from_secs(10);
/// The slowest a mirror may send (bytes per second, averaged over the last [`WINDOW`];
/// half the fetch's rate limit when that is lower): a cache that stalls or trickles is
/// left for the next mirror instead of holding the push. Also what a blob's budget
/// allows for its length.
const FLOOR: u64 = 64 << 10;
/// The window over which [`FLOOR`] is measured, across a blob's requests, and the
/// longest a mirror may send nothing (no answer to a request, or a body that stops).
/// Longer than a colo cache's 1 MiB slice takes at the floor (16 s): a host whose
/// request waits on the cache's lock while another fills that slice from the origin is
/// not taken for a stalled one.
const WINDOW: Duration = Duration::from_secs(20);
/// A blob's budget on one mirror, for all its requests, is this plus its length at
/// [`FLOOR`]: time to connect, answer, resume and warm up, once per blob, not once per
/// request.
const SLACK: Duration = Duration::from_secs(60);
/// Failures in a row after which a mirror is left out for the rest of a fetch (one that
/// is slow or does not answer is left out at once).
const FAILURES: u32 = 3;
/// For the tests only: `window=S,slack=S,floor=B` (seconds, bytes per second) in place
/// of the constants above, so that a trickling mirror is caught in a second, not in a
/// window of twenty.
const LIMITS_VAR: &str = "SYNCER_TEST_MIRROR_LIMITS";

/// The numbers a fetch holds mirrors to: the constants above, or the tests' own.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Limits {
    connect: Duration,
    window: Duration,
    slack: Duration,
    floor: u64,
}

impl Limits {
    const DEFAULT: Limits = Limits {
        connect: CONNECT,
        window: WINDOW,
        slack: SLACK,
        floor: FLOOR,
    };

    fn from_env() -> Limits {
        match std::env::var(LIMITS_VAR) {
            Ok(v) => Limits::parse(&v),
            Err(_) => Limits::DEFAULT,
        }
    }

    /// What a test asked for; what does not parse keeps its default.
    fn parse(v: &str) -> Limits {
        let mut l = Limits::DEFAULT;
        let secs = |s: &str| {
            s.parse::<f64>()
                .ok()
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
        };
        for (k, v) in v.split(',').filter_map(|kv| kv.split_once('=')) {
            match k.trim() {
                "window" => l.window = secs(v).unwrap_or(l.window),
                "slack" => l.slack = secs(v).unwrap_or(l.slack),
                "floor" => l.floor = v.parse().unwrap_or(l.floor).max(1),
                _ => {}
            }
        }
        l
    }
}

/// Fetches blobs from a list of mirrors, keeping each mirror's account.
pub struct Fetcher {
    http: ureq::Agent,
    mirrors: Vec<String>,
    /// Each mirror's account so far, in the order of the mirrors given.
    pub stats: Vec<MirrorStats>,
    buckets: Vec<Arc<Bucket>>,
    limits: Limits,
    /// Mirrors left out for the rest of the fetch (refused by the trust policy, slow,
    /// silent, or failing [`FAILURES`] blobs in a row).
    down: Vec<bool>,
    /// Failures in a row per mirror (a 404 is no failure): after [`FAILURES`], it is
    /// left out, so that a sick cache costs a few failed blobs, not one per blob.
    failures: Vec<u32>,
    /// Mirrors that answered a request of this fetch: only a connection to one of those
    /// can be a kept-alive one the mirror closed meanwhile.
    answered: Vec<bool>,
}

/// Why a mirror did not give a blob.
enum Miss {
    NotFound,
    /// No answer (no connection, or no response in time), or too slow (under the floor
    /// over a window, silent for one, or over the blob's budget): the mirror is left
    /// out for the rest of the fetch, so that it costs one timeout, not one per blob.
    LeftOut(String),
    Failed(String),
    Corrupt(String),
}

impl Fetcher {
    /// Mirrors are `http://host[:port]/path/` base URLs; `rate` limits the bytes read
    /// per second (0: none); a mirror `refused` says why (the host's trust policy) is
    /// never asked.
    pub fn new(mirrors: &[String], rate: u64, refused: Vec<Option<String>>) -> Result<Fetcher> {
        for m in mirrors {
            check_mirror(m).map_err(Error::Protocol)?;
        }
        let mut limits = Limits::from_env();
        if rate > 0 {
            // The rate limit must not make a good mirror look too slow.
            limits.floor = limits.floor.min(rate / 2).max(1);
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A mirror serves its own files: a redirect could send the host anywhere.
            .max_redirects(0)
            .timeout_connect(Some(limits.connect))
            // Silent for a window, while answering or sending a body: given up (a
            // per-read timeout stops a body that stalls, which a rate measured between
            // reads cannot see).
            .timeout_recv_response(Some(limits.window))
            .timeout_per_read(Some(limits.window))
            .build();
        Ok(Fetcher {
            http: ureq::Agent::new_with_config(config),
            mirrors: mirrors.to_vec(),
            stats: mirrors
                .iter()
                .zip(&refused)
                .map(|(m, why)| MirrorStats {
                    url: m.clone(),
                    last_error: why.clone().unwrap_or_default(),
                    ..MirrorStats::default()
                })
                .collect(),
            buckets: (rate > 0).then(|| Bucket::new(rate)).into_iter().collect(),
            limits,
            down: refused.iter().map(Option::is_some).collect(),
            failures: vec![0; mirrors.len()],
            answered: vec![false; mirrors.len()],
        })
    }

    /// The blob's bytes from the first mirror that gives them right (`None`: none does).
    pub fn get(&mut self, blob: &Blob) -> Option<Vec<u8>> {
        for m in 0..self.mirrors.len() {
            if self.down[m] {
                continue;
            }
            let got = self.fetch_from(m, blob);
            match &got {
                Ok(_) | Err(Miss::NotFound) => self.failures[m] = 0,
                Err(_) => {
                    self.failures[m] += 1;
                    self.down[m] |= self.failures[m] >= FAILURES;
                }
            }
            match got {
                Ok(bytes) => {
                    self.stats[m].blobs += 1;
                    return Some(bytes);
                }
                Err(Miss::NotFound) => self.stats[m].not_found += 1,
                Err(Miss::LeftOut(e)) => {
                    self.down[m] = true;
                    self.stats[m].errors += 1;
                    self.stats[m].last_error = format!("{}: {e} (not asked again)", blob.name);
                }
                Err(Miss::Failed(e)) => {
                    self.stats[m].errors += 1;
                    self.stats[m].last_error = format!("{}: {e}", blob.name);
                }
                Err(Miss::Corrupt(e)) => {
                    self.stats[m].corrupt += 1;
                    self.stats[m].last_error = format!("{}: {e}", blob.name);
                }
            }
        }
        None
    }

    fn fetch_from(&mut self, m: usize, blob: &Blob) -> std::result::Result<Vec<u8>, Miss> {
        let url = format!("{}{}", self.mirrors[m], blob.name);
        let len = blob.len;
        // One clock for the blob on this mirror, whatever number of requests it takes.
        let mut pace = Pace::new(Instant::now(), len, &self.limits);
        // Grown as bytes arrive (a length from the controller, not an allocation).
        let mut got: Vec<u8> = Vec::new();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let from = got.len() as u64;
            let left = pace.check(Instant::now()).map_err(Miss::LeftOut)?;
            let mut req = self.http.get(&url);
            if from > 0 {
                req = req.header("Range", &format!("bytes={from}-"));
                self.stats[m].resumed += 1;
            }
            // The rest of the budget bounds this request, connecting included.
            let req = req.config().timeout_global(Some(left)).build();
            self.stats[m].requests += 1;
            let resp = match req.call() {
                Ok(r) => r,
                // A kept-alive connection the mirror closed meanwhile fails at once:
                // once more, on a new one. Not a timeout: a mirror that does not answer
                // costs one.
                Err(e)
                    if attempt == 1
                        && self.answered[m]
                        && !matches!(e, ureq::Error::Timeout(_)) =>
                {
                    continue
                }
                Err(ureq::Error::Timeout(t)) => {
                    return Err(Miss::LeftOut(timed_out(t, true, &self.limits, &pace)))
                }
                Err(e) => return Err(Miss::LeftOut(e.to_string())),
            };
            self.answered[m] = true;
            pace.answered(Instant::now());
            count_cache_status(&mut self.stats[m], &resp);
            match resp.status().as_u16() {
                404 | 410 => return Err(Miss::NotFound),
                200 => got.clear(),
                206 if from > 0 && content_range_start(&resp) == Some(from) => {}
                206 => {
                    return Err(Miss::Failed(format!(
                        "a partial answer that does not start at byte {from}"
                    )))
                }
                s => return Err(Miss::Failed(format!("HTTP status {s}"))),
            }
            let want = len.saturating_sub(got.len() as u64);
            // One byte more than is due shows a blob that is too long.
            let body = resp.into_body().into_reader().take(want.saturating_add(1));
            let mut r = LimitedRead::new(body, self.buckets.clone());
            let before = got.len();
            let read = read_paced(&mut r, &mut got, &mut pace, &self.limits);
            self.stats[m].bytes += (got.len() - before) as u64;
            match read {
                // A body that ended early but cleanly (no length announced): resumed too.
                Ok(()) if (got.len() as u64) < len && got.len() > before && attempt < ATTEMPTS => {}
                Ok(()) => break,
                Err(Cut::Slow(e)) => return Err(Miss::LeftOut(e)),
                // Resumed from where it stopped while requests bring bytes.
                Err(Cut::Io(_)) if attempt < ATTEMPTS && got.len() > before => {}
                Err(Cut::Io(e)) => return Err(Miss::Failed(e)),
            }
        }
        check_blob(&got, blob)?;
        Ok(got)
    }
}

/// Counts a mirror's answer as a cache hit or miss when it says (nginx's
/// `X-Cache-Status`), so the report shows how well a caching mirror serves.
fn count_cache_status(stats: &mut MirrorStats, resp: &ureq::http::Response<ureq::Body>) {
    match resp
        .headers()
        .get("x-cache-status")
        .and_then(|v| v.to_str().ok())
    {
        Some("HIT") => stats.cache_hits += 1,
        Some(_) => stats.cache_misses += 1,
        None => {}
    }
}

/// Checks that a fetched blob is the one published, by its length and then its hash, so
/// a mirror's wrong bytes are never used.
fn check_blob(got: &[u8], blob: &Blob) -> std::result::Result<(), Miss> {
    let len = blob.len;
    if got.len() as u64 != len {
        return Err(Miss::Corrupt(format!(
            "{} bytes, not the {len} published",
            got.len()
        )));
    }
    let h = Hash::of(got);
    if h != blob.hash {
        return Err(Miss::Corrupt(format!(
            "its bytes hash to {h}, not to {}",
            blob.hash
        )));
    }
    Ok(())
}

/// How a body read stopped short.
enum Cut {
    /// The mirror is too slow: under the floor, silent for a window, over the budget.
    Slow(String),
    /// The connection broke or the body ended early: worth resuming.
    Io(String),
}

/// Reads `r` to its end into `got`, counting every read on `pace` and stopping as soon
/// as the mirror is too slow.
fn read_paced(
    r: &mut impl Read,
    got: &mut Vec<u8>,
    pace: &mut Pace,
    l: &Limits,
) -> std::result::Result<(), Cut> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(match ureq::Error::from(e) {
                    ureq::Error::Timeout(t) => Cut::Slow(timed_out(t, false, l, pace)),
                    e => Cut::Io(e.to_string()),
                })
            }
        };
        got.extend_from_slice(&buf[..n]);
        pace.record(Instant::now(), n as u64).map_err(Cut::Slow)?;
    }
}

/// Why a request ended in one of ureq's timeouts (`answering`: before the mirror's
/// answer), in the terms of the limits that set them.
fn timed_out(t: ureq::Timeout, answering: bool, l: &Limits, pace: &Pace) -> String {
    match t {
        ureq::Timeout::Connect => format!("no connection in {:?}", l.connect),
        ureq::Timeout::RecvResponse | ureq::Timeout::PerRead if answering => {
            format!("no answer in {:?}", l.window)
        }
        ureq::Timeout::PerRead => format!("too slow: nothing for {:?}", l.window),
        ureq::Timeout::Global => pace.spent(),
        t => format!("timeout ({t})"),
    }
}

/// The clock of one blob on one mirror, across all its requests: the budget (the
/// limits' slack plus the blob's length at the floor) and the rate over the last
/// window, measured from the mirror's first answer (a cache filling its first slice
/// from the origin is not slow), through resumes and the waits between them.
struct Pace {
    floor: u64,
    window: Duration,
    budget: Duration,
    deadline: Instant,
    /// `(when, bytes by then)`, at most a few per window: the first is the latest at
    /// least a window old once there is one, what the rate is measured from.
    samples: VecDeque<(Instant, u64)>,
    bytes: u64,
}

/// Samples per window: the rate is measured over a window and at most this fraction of
/// one more.
const SAMPLES: u32 = 16;

impl Pace {
    fn new(now: Instant, len: u64, l: &Limits) -> Pace {
        let floor = l.floor.max(1);
        // A length from the controller can be any u64: a budget of more than a century
        // is none, and an instant that far is one a clock can hold.
        let century = Duration::from_secs(100 * 365 * 86400);
        let budget = l
            .slack
            .saturating_add(Duration::from_secs_f64(
                (len as f64 / floor as f64).min(century.as_secs_f64()),
            ))
            .min(century);
        Pace {
            floor,
            window: l.window,
            budget,
            deadline: now + budget,
            samples: VecDeque::new(),
            bytes: 0,
        }
    }

    /// The mirror answered a request: its rate is measured from its first answer.
    fn answered(&mut self, now: Instant) {
        if self.samples.is_empty() {
            self.samples.push_back((now, self.bytes));
        }
    }

    /// `n` more bytes arrived at `now`; `Err` says why the mirror is too slow.
    fn record(&mut self, now: Instant, n: u64) -> std::result::Result<Duration, String> {
        self.bytes += n;
        self.check(now)
    }

    /// The time left in the budget, or why the mirror is too slow.
    fn check(&mut self, now: Instant) -> std::result::Result<Duration, String> {
        let left = self.deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Err(self.spent());
        }
        while self
            .samples
            .get(1)
            .is_some_and(|&(t, _)| now.saturating_duration_since(t) >= self.window)
        {
            self.samples.pop_front();
        }
        if let Some(&(t, b)) = self.samples.front() {
            let over = now.saturating_duration_since(t);
            if over >= self.window {
                let rate = (self.bytes - b) as f64 / over.as_secs_f64();
                if rate < self.floor as f64 {
                    return Err(format!(
                        "too slow: {rate:.0} bytes/s over the last {over:.1?}, under the floor of {} bytes/s",
                        self.floor
                    ));
                }
            }
            let newest = self.samples.back().map_or(t, |&(t, _)| t);
            if now.saturating_duration_since(newest) >= self.window / SAMPLES {
                self.samples.push_back((now, self.bytes));
            }
        }
        Ok(left)
    }

    fn spent(&self) -> String {
        format!(
            "too slow: out of its budget for the blob ({:.1?})",
            self.budget
        )
    }
}

/// The first byte of a 206's `Content-Range: bytes A-B/N`.
fn content_range_start(resp: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let v = resp.headers().get("content-range")?.to_str().ok()?;
    let (a, _) = v.strip_prefix("bytes ")?.split_once('-')?;
    a.trim().parse().ok()
}

/// A mirror's base URL must be plain `http://` and end in `/` (blob names are
/// appended to it).
pub fn check_mirror(m: &str) -> std::result::Result<(), String> {
    let rest = m
        .strip_prefix("http://")
        .ok_or_else(|| format!("mirror {m:?}: only http:// mirrors are fetched from (every byte is checked by hash, so TLS adds nothing to integrity)"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("mirror {m:?} names no host"));
    }
    if !m.ends_with('/') {
        return Err(format!("mirror {m:?} must end in '/'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A floor of 1000 bytes/s over 10 s, 60 s of slack.
    const L: Limits = Limits {
        connect: CONNECT,
        window: Duration::from_secs(10),
        slack: Duration::from_secs(60),
        floor: 1000,
    };

    /// A blob of `len` bytes whose mirror answered at once.
    fn answered(len: u64) -> (Instant, Pace) {
        let t0 = Instant::now();
        let mut p = Pace::new(t0, len, &L);
        p.answered(t0);
        (t0, p)
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// Feeds `bytes` every `every` ms from `from` ms on until the pace gives up or `until`
    /// ms: when it gave up (ms) and why.
    fn feed(
        p: &mut Pace,
        t0: Instant,
        from: u64,
        every: u64,
        bytes: u64,
        until: u64,
    ) -> Option<(u64, String)> {
        let mut t = from;
        while t <= until {
            if let Err(e) = p.record(ms(t0, t), bytes) {
                return Some((t, e));
            }
            t += every;
        }
        None
    }

    #[test]
    fn a_trickle_under_the_floor_is_given_up_once_a_window_has_passed() {
        let (t0, mut p) = answered(10_000_000);
        // A byte per 100 ms: 10 bytes/s.
        let (at, why) = feed(&mut p, t0, 100, 100, 1, 60_000).unwrap();
        assert!((10_000..=10_000 + 10_000 / 16 + 100).contains(&at), "{at}");
        assert!(why.contains("under the floor of 1000 bytes/s"), "{why}");
    }

    #[test]
    fn the_rate_is_that_of_the_last_window_not_since_the_start() {
        let (t0, mut p) = answered(10_000_000);
        // 100 kB/s for 100 s: far above the floor, and far ahead of it on average.
        assert_eq!(feed(&mut p, t0, 100, 100, 10_000, 100_000), None);
        // Then a trickle: given up about a window later, not when the average drops.
        let (at, _) = feed(&mut p, t0, 100_100, 100, 1, 200_000).unwrap();
        assert!((110_000..=111_000).contains(&at), "{at}");
    }

    #[test]
    fn bursts_that_keep_above_the_floor_over_each_window_are_not_too_slow() {
        let (t0, mut p) = answered(10_000_000);
        // 12 kB every 8 s (1500 bytes/s), nothing in between (a cache's lock wait).
        assert_eq!(feed(&mut p, t0, 8_000, 8_000, 12_000, 600_000), None);
    }

    #[test]
    fn the_window_starts_at_the_first_answer() {
        let t0 = Instant::now();
        let mut p = Pace::new(t0, 10_000_000, &L);
        // No answer for 25 s (a cache filling its first slice), then a good rate.
        assert!(p.check(ms(t0, 25_000)).is_ok());
        p.answered(ms(t0, 25_000));
        assert_eq!(feed(&mut p, t0, 25_100, 100, 200, 60_000), None);
        // A later answer (a resume) does not restart it.
        p.answered(ms(t0, 80_000));
        assert!(p.check(ms(t0, 80_000)).is_err());
    }

    #[test]
    fn a_blob_has_one_budget_whatever_its_rate() {
        // 60 s of slack and 5000 bytes at 1000 bytes/s.
        let (t0, mut p) = answered(5000);
        // Just above the floor all along: the budget ends it, at 65 s.
        let (at, why) = feed(&mut p, t0, 100, 100, 101, 100_000).unwrap();
        assert_eq!(at, 65_000);
        assert!(
            why.contains("out of its budget for the blob (65.0s)"),
            "{why}"
        );
        assert!(p.check(ms(t0, 66_000)).is_err());
        let p = Pace::new(t0, 5000, &L);
        assert_eq!(
            p.deadline.saturating_duration_since(ms(t0, 64_500)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn any_length_has_a_budget() {
        let t0 = Instant::now();
        let one = Limits { floor: 1, ..L };
        let mut p = Pace::new(t0, u64::MAX, &one);
        assert!(p.check(ms(t0, 1000)).unwrap() > Duration::from_secs(86400 * 365));
    }

    #[test]
    fn the_tests_limits_replace_the_constants_they_name() {
        assert_eq!(Limits::parse(""), Limits::DEFAULT);
        let l = Limits::parse("window=0.5,floor=100,slack=x,bogus=1,connect=1");
        assert_eq!(
            l,
            Limits {
                window: Duration::from_millis(500),
                floor: 100,
                ..Limits::DEFAULT
            }
        );
        assert_eq!(Limits::parse("floor=0").floor, 1);
    }
}
