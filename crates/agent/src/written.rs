//! The files the last commits wrote, by path, with the content each was checked to hold
//! (`/var/lib/syncer/hash-cache.committed`): the next scan takes a file that is still as
//! its commit left it without hashing it again ([`crate::scan::HashCache`]).

use crate::state::StateDir;
use imager_core::tree::escape::{escape, unescape};
use imager_core::Hash;
use std::collections::HashMap;

/// The longest tick of the kernel's coarse clock, which file times come from: a jiffy,
/// 10 ms at the lowest `HZ` Linux has.
pub const TICK_NS: i128 = 10_000_000;

/// The wall clock in nanoseconds since the epoch (what file times are compared with).
pub fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Returns once the clock is a tick past now: what was changed before the call is then
/// settled for a scan that starts after it (waits for the clock, not for a set time).
#[cfg(test)]
pub(crate) fn wait_a_tick() {
    let done = now_ns() + TICK_NS;
    while now_ns() <= done {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// A file a commit made (or set the metadata of), with the content it was checked to
/// hold and the size and mtime the image gives it ([`record_written`]).
pub struct Written {
    /// The file's path in the image.
    pub path: Vec<u8>,
    /// The content it holds.
    pub hash: Hash,
    /// Its size, as the image gives it.
    pub size: u64,
    /// Its mtime in whole seconds, as the image gives it.
    pub mtime: i64,
}

/// Adds the files a commit that ended at `committed_ns` wrote to the list the next scan
/// reads ([`crate::scan::HashCache::load`]): a push's renames move the ctime of every
/// file it writes (1,290 files of a managed host's update of the benchmark corpus, all of
/// a first install), so the cache misses them all, and without this list the next scan
/// would hash again what this push has just checked. Entries of an earlier commit that a
/// scan could not yet take into the cache (within a tick of it) stay, each with its own
/// commit's end. Not flushed: a lost list means hashing again.
pub fn record_written(
    state: &StateDir,
    written: &[Written],
    committed_ns: i128,
) -> crate::Result<()> {
    if written.is_empty() {
        return Ok(());
    }
    let mut c = Committed::load(state);
    for w in written {
        let f = CommittedFile {
            size: w.size,
            mtime: w.mtime,
            at_ns: committed_ns,
            hash: w.hash,
        };
        c.files.insert(w.path.clone(), f);
    }
    c.write(state)
}

const COMMITTED_HEADER: &str = "#syncer-committed v2";

/// One file of the list [`record_written`] keeps.
#[derive(Clone, Copy)]
pub(crate) struct CommittedFile {
    /// Its size and mtime (whole seconds) in the image.
    size: u64,
    mtime: i64,
    /// When the commit that wrote it ended (ns since the epoch).
    at_ns: i128,
    /// The content it held then.
    pub(crate) hash: Hash,
}

/// The files recent commits wrote, by path ([`record_written`]).
#[derive(Default)]
pub(crate) struct Committed {
    pub(crate) files: HashMap<Vec<u8>, CommittedFile>,
}

impl Committed {
    pub(crate) fn write(&self, state: &StateDir) -> crate::Result<()> {
        let mut out = String::with_capacity(self.files.len() * 140);
        out.push_str(COMMITTED_HEADER);
        out.push('\n');
        for (p, f) in &self.files {
            out.push_str(&format!(
                "{} {} {} {} {}\n",
                f.size,
                f.mtime,
                f.at_ns,
                f.hash,
                escape(p)
            ));
        }
        state.write_unsynced(super::state::HASH_CACHE_COMMITTED, out.as_bytes())
    }

    /// The list; a missing, unreadable or older one is empty (it is only a shortcut).
    pub(crate) fn load(state: &StateDir) -> Committed {
        let mut c = Committed::default();
        let Ok(Some(text)) = state.read(super::state::HASH_CACHE_COMMITTED) else {
            return c;
        };
        let text = String::from_utf8_lossy(&text);
        let mut lines = text.lines();
        if lines.next() != Some(COMMITTED_HEADER) {
            return c;
        }
        for l in lines {
            let mut it = l.split(' ');
            let line = (|| {
                let f = CommittedFile {
                    size: it.next()?.parse().ok()?,
                    mtime: it.next()?.parse().ok()?,
                    at_ns: it.next()?.parse().ok()?,
                    hash: Hash::from_hex(it.next()?)?,
                };
                Some((unescape(it.next()?).ok()?, f))
            })();
            if let Some((p, f)) = line {
                c.files.insert(p, f);
            }
        }
        // A clock now behind a commit's end was set back since: a change made after the
        // commit could carry a ctime before its end, so the list vouches for nothing.
        let now = now_ns();
        if c.files.values().any(|f| f.at_ns > now) {
            c.files.clear();
        }
        c
    }

    /// `path`'s entry (with the content its commit left), if the file is still as that
    /// commit left it: of the image's size and mtime (an ordinary write since would have
    /// moved the mtime to "now", and an image's mtimes are a tick older than its commit),
    /// and changed no later than the commit ended (its renames are the last change it
    /// made).
    pub(crate) fn hit(
        &self,
        path: &[u8],
        (size, mtime_ns, ctime_ns): (u64, i128, i128),
    ) -> Option<&CommittedFile> {
        let f = self.files.get(path)?;
        let image_mtime_ns = f.mtime as i128 * 1_000_000_000;
        (size == f.size
            && mtime_ns == image_mtime_ns
            && image_mtime_ns + TICK_NS <= f.at_ns
            && ctime_ns <= f.at_ns)
            .then_some(f)
    }
}
