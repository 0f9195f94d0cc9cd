//! The guard on deletions (`push --max-delete`, a rollout policy's `max_delete`): a host
//! whose plan deletes more than the limit stops before anything is written, as rsync's
//! `--max-delete` does. The ownership rule (`crate::compare`) already keeps what a host
//! made outside the image's owned prefixes; this catches the rest of what goes wrong at
//! scale: the wrong image, the wrong host, an owned prefix that holds a host's data.

use crate::protocol::{Change, ChangeKind};
use imager::tree::escape::escape;

/// How many of a host's paths one push may delete.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxDelete {
    /// At most this many paths, however large the host.
    Count(u64),
    /// Of the entries the host's scan saw.
    Percent(f64),
    /// No limit: the guard is off.
    Unlimited,
}

/// The default: every ordinary upgrade deletes far fewer; a push that would empty a
/// host, or wipe what it keeps under an owned prefix, stops.
pub const DEFAULT: MaxDelete = MaxDelete::Count(1000);

impl Default for MaxDelete {
    fn default() -> Self {
        DEFAULT
    }
}

impl std::str::FromStr for MaxDelete {
    type Err = String;
    fn from_str(s: &str) -> Result<MaxDelete, String> {
        let t = s.trim();
        let bad = || format!("bad deletion limit {s:?}: use a count, N% or unlimited");
        if t == "unlimited" {
            return Ok(MaxDelete::Unlimited);
        }
        match t.strip_suffix('%') {
            Some(p) => {
                let p: f64 = p.trim().parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(bad());
                }
                Ok(MaxDelete::Percent(p))
            }
            None => t.parse().map(MaxDelete::Count).map_err(|_| bad()),
        }
    }
}

impl std::fmt::Display for MaxDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxDelete::Count(n) => write!(f, "{n}"),
            MaxDelete::Percent(p) => write!(f, "{p}%"),
            MaxDelete::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// Paths named in the refusal.
const SHOWN: usize = 10;

impl MaxDelete {
    /// The most a host with `entries` entries may lose.
    pub fn limit(&self, entries: u64) -> Option<u64> {
        match *self {
            MaxDelete::Count(n) => Some(n),
            MaxDelete::Percent(p) => Some((entries as f64 * p / 100.0).floor() as u64),
            MaxDelete::Unlimited => None,
        }
    }

    /// Why a plan of `changes` on a host of `entries` entries must stop, if it must:
    /// the count, the limit and the first paths.
    pub fn check(&self, changes: &[Change], entries: u64) -> Result<(), String> {
        let Some(limit) = self.limit(entries) else {
            return Ok(());
        };
        let deletes: Vec<&Change> = changes
            .iter()
            .filter(|c| c.kind == ChangeKind::Delete)
            .collect();
        let n = deletes.len() as u64;
        if n <= limit {
            return Ok(());
        }
        let first: Vec<String> = deletes
            .iter()
            .take(SHOWN)
            .map(|c| escape(&c.path))
            .collect();
        Err(format!(
            "the plan deletes {n} paths of the host's {entries}, more than --max-delete {self} \
             allows ({limit}); nothing was written. The first: {}{}. Check the image and the \
             host; push with --max-delete N (or N%, or unlimited) to allow it",
            first.join(", "),
            if n as usize > SHOWN { ", ..." } else { "" }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deletes(n: usize) -> Vec<Change> {
        (0..n)
            .map(|i| Change {
                path: format!("/usr/f{i}").into_bytes(),
                kind: ChangeKind::Delete,
                host: None,
                what: 0,
            })
            .collect()
    }

    #[test]
    fn limits_parse_and_stop_plans_over_them() {
        assert_eq!("5".parse::<MaxDelete>(), Ok(MaxDelete::Count(5)));
        assert_eq!("2.5%".parse::<MaxDelete>(), Ok(MaxDelete::Percent(2.5)));
        assert_eq!("unlimited".parse::<MaxDelete>(), Ok(MaxDelete::Unlimited));
        assert!("-1".parse::<MaxDelete>().is_err());
        assert!("101%".parse::<MaxDelete>().is_err());
        assert!(MaxDelete::Count(3).check(&deletes(3), 10).is_ok());
        let e = MaxDelete::Count(3).check(&deletes(12), 100).unwrap_err();
        assert!(e.contains("deletes 12 paths of the host's 100"), "{e}");
        assert!(e.contains("/usr/f0, /usr/f1"), "{e}");
        assert!(e.contains("/usr/f9, ..."), "{e}");
        assert!(MaxDelete::Percent(10.0).check(&deletes(10), 100).is_ok());
        assert!(MaxDelete::Percent(10.0).check(&deletes(11), 100).is_err());
        assert!(MaxDelete::Unlimited.check(&deletes(1000), 1).is_ok());
    }
}
