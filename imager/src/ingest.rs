//! Turning pending entries (from a directory scan or an archive) into an image tree:
//! each file is read once, normalised (gzip, pyc), hashed and handed to a [`Sink`]
//! (the store, or nothing when only the ID is wanted), in parallel; then the mtime rule.
//!
//! Order matters and is fixed: a pyc's header needs its source's final mtime, and the
//! ProdNG mtime rule needs final content hashes, so the stages are
//! (1) every file but pycs, (2) mtimes of those, (3) pycs, (4) their mtimes.

use crate::error::{Error, Result};
use crate::fsx;
use crate::normalize::{self, gzip, mtime, pyc, Report, Rule};
use crate::progress::Progress;
use crate::store::Txn;
use crate::tree::scan::{Content, Pending};
use crate::tree::{path_cmp, Entry, Hash, Kind, Tree};
use rayon::prelude::*;
use std::path::Path;

/// Files up to this size are read into memory (and normalised); larger ones are
/// streamed and taken as they are (no gzip or pyc file in a root filesystem is near it).
pub const IN_MEMORY_LIMIT: u64 = 64 << 20;

/// File data the content stage may hold in memory at once, over all threads (a file
/// over it still goes through, alone). Two copies of each exist while it is normalised.
const READ_BUDGET: u64 = 256 << 20;

/// A count of bytes that threads reserve before reading a file into memory and give
/// back when it is stored; a reservation waits until the others leave room for it.
struct Budget {
    free: std::sync::Mutex<u64>,
    freed: std::sync::Condvar,
    total: u64,
}

/// A reservation of [`Budget`]; returned on drop.
struct Reserved<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Budget {
    fn new(total: u64) -> Budget {
        Budget {
            free: std::sync::Mutex::new(total),
            freed: std::sync::Condvar::new(),
            total,
        }
    }

    fn reserve(&self, bytes: u64) -> Reserved<'_> {
        // Larger than the whole budget: it waits until it has the budget to itself.
        let bytes = bytes.min(self.total);
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free < bytes {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= bytes;
        Reserved {
            budget: self,
            bytes,
        }
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let mut free = self.budget.free.lock().unwrap_or_else(|e| e.into_inner());
        *free += self.bytes;
        self.budget.freed.notify_all();
    }
}

/// Where ingested content goes.
pub trait Sink: Sync {
    fn put_bytes(&self, data: &[u8]) -> Result<Hash>;
    fn put_file(&self, path: &Path, size: u64) -> Result<Hash>;
}

/// Hashes only: for `imager hash` and `imager normalize`.
pub struct HashOnly;

impl Sink for HashOnly {
    fn put_bytes(&self, data: &[u8]) -> Result<Hash> {
        Ok(Hash::of(data))
    }
    fn put_file(&self, path: &Path, size: u64) -> Result<Hash> {
        let f = fsx::open_nofollow(path)?;
        let mut h = blake3::Hasher::new();
        h.update_reader(f).map_err(|e| Error::io("read", path, e))?;
        let _ = size;
        Ok(Hash::from(h.finalize()))
    }
}

/// Into the store, through a transaction.
pub struct StoreSink<'a> {
    pub txn: &'a Txn<'a>,
}

impl Sink for StoreSink<'_> {
    fn put_bytes(&self, data: &[u8]) -> Result<Hash> {
        self.txn.put_bytes(data)
    }
    fn put_file(&self, path: &Path, size: u64) -> Result<Hash> {
        let f = fsx::open_nofollow(path)?;
        self.txn.put_reader(f, size, &path.display().to_string())
    }
}

/// The result of an ingest: the tree, what normalisation did, and (when asked) the new
/// content of every file normalisation rewrote, for writing back to a directory.
pub struct Ingested {
    pub tree: Tree,
    pub report: Report,
    pub rewritten: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Runs the stages described in the module documentation.
pub fn ingest(
    mut pending: Vec<Pending>,
    opts: Option<&normalize::Options>,
    sink: &dyn Sink,
    keep_rewritten: bool,
    progress: &dyn Progress,
) -> Result<Ingested> {
    pending.sort_by(|a, b| path_cmp(&a.entry.path, &b.entry.path));
    let files = pending.iter().filter(|p| p.content.is_some()).count() as u64;
    progress.start("hash", Some(files));
    let mut report = Report::default();
    let mut rewritten = Vec::new();
    let previous = opts.and_then(|o| o.previous.as_ref());

    for pyc_pass in [false, true] {
        // Content: read, normalise, hash, store (in parallel), then record (in order).
        // Taken out, so that content held in memory is freed as soon as it is stored.
        let work: Vec<(usize, Content)> = pending
            .iter_mut()
            .enumerate()
            .filter(|(_, p)| pyc::is_pyc(&p.entry.path) == pyc_pass)
            .filter_map(|(i, p)| p.content.replace(Content::Known).map(|c| (i, c)))
            .collect();
        let budget = Budget::new(READ_BUDGET);
        let outcomes: Vec<Result<(usize, Outcome)>> = work
            .into_par_iter()
            .map(|(i, c)| {
                let r = content_stage(&pending, &pending[i].entry, c, opts, sink, &budget)
                    .map(|o| (i, o));
                progress.inc(1);
                r
            })
            .collect();
        for r in outcomes {
            let (i, o) = r?;
            let p = &mut pending[i];
            p.entry.kind = Kind::File {
                size: o.size,
                hash: o.hash,
            };
            if let Some(reason) = o.skipped {
                report
                    .skipped
                    .push((crate::tree::escape::escape(&p.entry.path), reason));
            }
            if let Some((rule, data)) = o.change {
                report.record(rule, &p.entry.path);
                if keep_rewritten {
                    rewritten.push((p.entry.path.clone(), data));
                }
            }
        }
        // Hashes are final for this pass's files; now their mtimes.
        if let Some(o) = opts {
            for p in pending.iter_mut() {
                if p.entry.is_hardlink() || pyc::is_pyc(&p.entry.path) != pyc_pass {
                    continue;
                }
                let (m, rule) = mtime::normalize(&p.entry, o, previous);
                if let Some(rule) = rule {
                    report.record(rule, &p.entry.path);
                }
                p.entry.mtime = m;
            }
        }
    }
    progress.finish();

    // A hard link is another name of its target's inode: same metadata.
    let mut entries: Vec<Entry> = pending.into_iter().map(|p| p.entry).collect();
    for i in 0..entries.len() {
        if let Kind::HardLink { target } = &entries[i].kind {
            if let Ok(j) = entries.binary_search_by(|e| path_cmp(&e.path, target)) {
                let t = entries[j].clone();
                let e = &mut entries[i];
                (e.mode, e.uid, e.gid, e.mtime, e.xattrs) =
                    (t.mode, t.uid, t.gid, t.mtime, t.xattrs);
            }
        }
    }
    report.changed.sort();
    Ok(Ingested {
        tree: Tree::new(entries)?,
        report,
        rewritten,
    })
}

/// What the content stage did to one file.
struct Outcome {
    hash: Hash,
    size: u64,
    change: Option<(Rule, Vec<u8>)>,
    /// Why a file that looked normalisable was left as it is.
    skipped: Option<String>,
}

/// One file: read once, normalised if a rule applies, hashed and given to the sink.
/// `all` is read for a pyc's source entry, whose mtime is final by the pyc pass.
fn content_stage(
    all: &[Pending],
    entry: &Entry,
    content: Content,
    opts: Option<&normalize::Options>,
    sink: &dyn Sink,
    budget: &Budget,
) -> Result<Outcome> {
    let (size, known) = match entry.kind {
        Kind::File { size, hash } => (size, hash),
        _ => {
            return Err(Error::invalid(
                &entry.path,
                "content given for an entry that is not a file",
            ))
        }
    };
    let path = &entry.path;
    let rules = opts.filter(|o| (o.gzip || o.pyc) && size <= IN_MEMORY_LIMIT);
    // Held until this file is stored: what all threads read into memory stays bounded
    // whatever the number of cores.
    let _reserved = match &content {
        Content::Disk(_) if size <= IN_MEMORY_LIMIT => Some(budget.reserve(size)),
        _ => None,
    };
    let (data, stored) = match content {
        Content::Disk(disk) if size <= IN_MEMORY_LIMIT => {
            let d = fsx::read_nofollow(&disk, size)?;
            if d.len() as u64 != size {
                return Err(Error::invalid(
                    path,
                    format!("{} changed size while being read", disk.display()),
                ));
            }
            (Some(d), None)
        }
        Content::Disk(disk) => (None, Some(sink.put_file(&disk, size)?)),
        Content::Bytes(d) => (Some(d), None),
        // Stored by an importer that kept rule candidates as bytes: taken as it is.
        Content::Known => (None, Some(known)),
    };
    let mut change = None;
    let mut skipped = None;
    if let (Some(o), Some(d)) = (rules, data.as_ref()) {
        if o.gzip && gzip::looks_like_gzip(d) {
            match gzip::normalize(d, 0) {
                Ok(Some(n)) => change = Some((Rule::Gzip, n)),
                Ok(None) => {}
                // Left as it is: a damaged .gz is its package's business, not a reason
                // to refuse the tree; the report lists it.
                Err(e) => skipped = Some(format!("gzip: {e}")),
            }
        } else if o.pyc && pyc::is_pyc(path) {
            let source = pyc::source_path(path)
                .and_then(|s| all.binary_search_by(|x| path_cmp(&x.entry.path, &s)).ok())
                .map(|j| &all[j].entry);
            if let Some(Entry {
                kind: Kind::File { size: src_size, .. },
                mtime,
                ..
            }) = source
            {
                change = pyc::normalize(d, *mtime, *src_size).map(|n| (Rule::Pyc, n));
            }
        }
    }
    let (hash, size) = match (&change, &data, stored) {
        (Some((_, d)), _, _) | (None, Some(d), None) => (sink.put_bytes(d)?, d.len() as u64),
        (None, _, Some(h)) => (h, size),
        (None, None, None) => return Err(Error::invalid(path, "no content")),
    };
    Ok(Outcome {
        hash,
        size,
        change,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn reservations_never_exceed_the_budget() {
        let budget = Budget::new(10);
        let (held, peak) = (AtomicU64::new(0), AtomicU64::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let _r = budget.reserve(6);
                        let now = held.fetch_add(6, Ordering::SeqCst) + 6;
                        peak.fetch_max(now, Ordering::SeqCst);
                        held.fetch_sub(6, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(
            peak.load(Ordering::SeqCst),
            6,
            "two reservations of 6 held at once"
        );
        // One larger than the whole budget still goes through (alone).
        drop(budget.reserve(100));
    }
}
