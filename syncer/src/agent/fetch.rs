//! Content from HTTP mirrors: the blobs a `Fetch` names (`crate::publish` writes them),
//! each taken from the first mirror that gives exactly its bytes. A mirror is a colo's
//! nginx cache or the origin behind it; none is trusted: every blob is checked by its
//! length and blake3, which came over the controller's ssh session, before it is
//! staged. An interrupted transfer resumes with a Range request; a blob a mirror does
//! not have (404), cannot serve, or serves wrong goes to the next mirror; one no mirror
//! gives is left to the controller's own stream.

use crate::error::{Error, Result};
use crate::protocol::{Blob, MirrorStats};
use crate::ratelimit::{Bucket, LimitedRead};
use imager::Hash;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

/// Requests per blob and mirror, as long as each one brings bytes the last did not.
const ATTEMPTS: u32 = 4;
/// The slowest a mirror may send a body before it is left for the next one (bytes per
/// second, on top of a minute): a cache that stalls must not hold a push forever.
const SLOWEST: u64 = 64 << 10;
/// Failures in a row after which a mirror is left out for the rest of a fetch.
const FAILURES: u32 = 3;

/// Fetches blobs from a list of mirrors, keeping each mirror's account.
pub struct Fetcher {
    http: ureq::Agent,
    mirrors: Vec<String>,
    pub stats: Vec<MirrorStats>,
    buckets: Vec<Arc<Bucket>>,
    rate: u64,
    down: Vec<bool>,
    /// Failures in a row per mirror (a 404 is no failure): after [`FAILURES`], it is
    /// left out, so that a sick cache costs a few timeouts, not one per blob.
    failures: Vec<u32>,
}

/// Why a mirror did not give a blob.
enum Miss {
    NotFound,
    /// No answer at all: the mirror is left out for the rest of the fetch (a cache
    /// that is down would otherwise cost a connection timeout per blob).
    Unreachable(String),
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
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A mirror serves its own files: a redirect could send the host anywhere.
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(30)))
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
            rate,
            down: refused.iter().map(Option::is_some).collect(),
            failures: vec![0; mirrors.len()],
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
                Err(Miss::Unreachable(e)) => {
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
        // Grown as bytes arrive (a length from the controller, not an allocation).
        let mut got: Vec<u8> = Vec::new();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let from = got.len() as u64;
            let mut req = self.http.get(&url);
            if from > 0 {
                req = req.header("Range", &format!("bytes={from}-"));
                self.stats[m].resumed += 1;
            }
            let left = len.saturating_sub(from);
            let slowest = match self.rate {
                0 => SLOWEST,
                r => SLOWEST.min(r / 2).max(1),
            };
            let req = req
                .config()
                .timeout_recv_body(Some(Duration::from_secs(60 + left / slowest)))
                .build();
            self.stats[m].requests += 1;
            let resp = match req.call() {
                Ok(r) => r,
                // A kept-alive connection the server closed meanwhile: once more, on a
                // new one.
                Err(_) if attempt == 1 => continue,
                Err(e) if from == 0 => return Err(Miss::Unreachable(e.to_string())),
                Err(e) => return Err(Miss::Failed(e.to_string())),
            };
            match resp
                .headers()
                .get("x-cache-status")
                .and_then(|v| v.to_str().ok())
            {
                Some("HIT") => self.stats[m].cache_hits += 1,
                Some(_) => self.stats[m].cache_misses += 1,
                None => {}
            }
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
            let read = r.read_to_end(&mut got);
            self.stats[m].bytes += (got.len() - before) as u64;
            match read {
                // A body that ended early but cleanly (no length announced): resumed too.
                Ok(_) if (got.len() as u64) < len && got.len() > before && attempt < ATTEMPTS => {}
                Ok(_) => break,
                // Resumed from where it stopped while requests bring bytes.
                Err(_) if attempt < ATTEMPTS && got.len() > before => {}
                Err(e) => return Err(Miss::Failed(e.to_string())),
            }
        }
        if got.len() as u64 != len {
            return Err(Miss::Corrupt(format!(
                "{} bytes, not the {len} published",
                got.len()
            )));
        }
        let h = Hash::of(&got);
        if h != blob.hash {
            return Err(Miss::Corrupt(format!(
                "its bytes hash to {h}, not to {}",
                blob.hash
            )));
        }
        Ok(got)
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
