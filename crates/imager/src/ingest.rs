//! Turning pending entries (from a directory scan or an archive) into an image tree:
//! each file is read once, normalised (gzip, pyc), hashed and handed to a [`Sink`]
//! (the store, or nothing when only the ID is wanted), in parallel; then the mtime rule.
//!
//! Order matters and is fixed: a pyc's header needs its source's final mtime, and the
//! ProdNG mtime rule needs final content hashes, so the stages are
//! (1) every file but pycs, (2) mtimes of those, (3) pycs, (4) their mtimes.
//!
//! Memory does not grow with the tree: a file is in memory only while its thread
//! normalises and stores it, within `READ_BUDGET` over all threads; what `imager
//! normalize` must write back later waits in a [`Spill`] file, not in memory. A file a
//! rule would look at but that is too large to read into memory is stored as it is and
//! reported, never passed over in silence.

use crate::error::{Error, Result};
use crate::fsx;
use crate::normalize::{self, gzip, mtime, pyc, Report, Rule};
use crate::progress::Progress;
use crate::store::Txn;
use crate::tree::scan::{Content, Pending};
use crate::tree::{path_cmp, Entry, Hash, Kind, Tree};
use rayon::prelude::*;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Files up to this size are read into memory (and normalised); larger ones are
/// streamed and taken as they are, and the report lists those a rule would have looked
/// at (no gzip or pyc file in a Debian root filesystem is near it).
pub const IN_MEMORY_LIMIT: u64 = 64 << 20;

/// File data the content stage may hold in memory at once, over all threads (a file
/// over it still goes through, alone), the rewritten copy of a file a rule may rewrite
/// included: such a file reserves twice its size.
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
    /// Stores `data` (or only hashes it) and returns its BLAKE3 hash.
    fn put_bytes(&self, data: &[u8]) -> Result<Hash>;
    /// Stores the regular file at `path`, `size` bytes long, streamed rather than read into
    /// memory, and returns its BLAKE3 hash; never follows a symlink at `path`.
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
    /// The open store transaction new objects go into.
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

/// Where `imager normalize` keeps the new content of the files it rewrites until the
/// whole tree has been read (a file that stops the run must stop it before anything is
/// written): one scratch file ([`fsx::scratch_file`]) that every thread appends to at
/// offsets it reserves, so that memory does not grow with the number and size of the
/// rewritten files. It disappears when dropped, or when the process dies.
pub struct Spill {
    file: File,
    /// The directory whose filesystem holds it, for messages.
    dir: PathBuf,
    end: AtomicU64,
}

/// Where one file's new content lies in a [`Spill`].
#[derive(Clone, Copy, Debug)]
pub struct Kept {
    offset: u64,
    len: u64,
}

impl Spill {
    /// A spill on the filesystem of `dir` (the directory being normalised, which has room
    /// for the files it already holds).
    pub fn new(dir: &Path) -> Result<Spill> {
        Ok(Spill {
            file: fsx::scratch_file(dir)?,
            dir: dir.to_path_buf(),
            end: AtomicU64::new(0),
        })
    }

    fn keep(&self, data: &[u8]) -> Result<Kept> {
        use std::os::unix::fs::FileExt;
        let len = data.len() as u64;
        let offset = self.end.fetch_add(len, Ordering::Relaxed);
        self.file
            .write_all_at(data, offset)
            .map_err(|e| Error::io("write a scratch file in", &self.dir, e))?;
        Ok(Kept { offset, len })
    }

    /// Writes what `kept` holds to `out` (`shown` names it in errors) and returns its
    /// length, for truncating.
    pub fn copy_to(&self, kept: Kept, out: &mut File, shown: &Path) -> Result<u64> {
        use std::io::Write;
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; kept.len.min(256 << 10) as usize];
        let mut done = 0;
        while done < kept.len {
            let n = (kept.len - done).min(buf.len() as u64) as usize;
            let chunk = &mut buf[..n];
            self.file
                .read_exact_at(chunk, kept.offset + done)
                .map_err(|e| Error::io("read a scratch file in", &self.dir, e))?;
            out.write_all(chunk)
                .map_err(|e| Error::io("rewrite", shown, e))?;
            done += n as u64;
        }
        Ok(kept.len)
    }
}

/// The result of an ingest: the tree, what normalisation did, and (when a spill was
/// given) where the new content of every file normalisation rewrote waits, for writing
/// back to a directory.
pub struct Ingested {
    /// The image's tree, normalised, with every file's content hash.
    pub tree: Tree,
    /// What normalisation changed and what it left alone.
    pub report: Report,
    /// Every file normalisation rewrote: its path and where its new content waits in the
    /// spill (empty when no spill was given).
    pub rewritten: Vec<(Vec<u8>, Kept)>,
}

/// Runs the stages described in the module documentation; `keep` receives the new
/// content of the files normalisation rewrites.
pub fn ingest(
    mut pending: Vec<Pending>,
    opts: Option<&normalize::Options>,
    sink: &dyn Sink,
    keep: Option<&Spill>,
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
                let r = content_stage(&pending, &pending[i].entry, c, opts, sink, &budget, keep)
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
                    .push((crate::escape::escape(&p.entry.path), reason));
            }
            if let Some(rule) = o.change {
                report.record(rule, &p.entry.path);
            }
            if let Some(kept) = o.kept {
                rewritten.push((p.entry.path.clone(), kept));
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

    let entries = with_link_metadata(pending.into_iter().map(|p| p.entry).collect());
    report.changed.sort();
    Ok(Ingested {
        tree: Tree::new(entries)?,
        report,
        rewritten,
    })
}

/// The entries with each hard link given its target's metadata: it is another name of
/// the target's inode.
fn with_link_metadata(mut entries: Vec<Entry>) -> Vec<Entry> {
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
    entries
}

/// What the content stage did to one file. Only small values: the outcomes of a whole
/// pass are collected before they are recorded, so the new content itself is never
/// here (it once was, and memory grew with the total of the rewritten files).
struct Outcome {
    hash: Hash,
    size: u64,
    change: Option<Rule>,
    /// Where the new content waits, when the caller keeps it.
    kept: Option<Kept>,
    /// Why a file that looked normalisable was left as it is.
    skipped: Option<String>,
}

/// The rule that would look at a file, judged from its name and first bytes: gzip by
/// content (and first), pyc by name.
fn rule_for(o: &normalize::Options, path: &[u8], head: &[u8]) -> Option<Rule> {
    if o.gzip && gzip::looks_like_gzip(head) {
        Some(Rule::Gzip)
    } else if o.pyc && pyc::is_pyc(path) {
        Some(Rule::Pyc)
    } else {
        None
    }
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
    keep: Option<&Spill>,
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
    let rules = opts.filter(|o| o.gzip || o.pyc);
    let in_memory = size <= IN_MEMORY_LIMIT;
    // Which rule would look at it, before its content is read: that decides what its
    // reading reserves, and whether a file too large to read is reported.
    let (rule, file) = rule_before_reading(&content, path, rules, in_memory)?;
    // Held until this file is stored: what all threads hold in memory stays bounded
    // whatever the number of cores. A file read here counts, and so does the copy a rule
    // may make of it; an archive's bytes are already counted by its importer.
    let read = match &content {
        Content::Disk(_) if in_memory => size,
        _ => 0,
    };
    let copy = if rule.is_some() && in_memory { size } else { 0 };
    let _reserved = (read + copy > 0).then(|| budget.reserve(read + copy));
    let (data, stored) = match (content, file) {
        (Content::Disk(disk), Some(mut f)) if in_memory => {
            let d = fsx::read_all(&mut f, size, &disk)?;
            if d.len() as u64 != size {
                return Err(Error::invalid(
                    path,
                    format!("{} changed size while being read", disk.display()),
                ));
            }
            (Some(d), None)
        }
        (Content::Disk(disk), _) => (None, Some(sink.put_file(&disk, size)?)),
        (Content::Bytes(d), _) => (Some(d), None),
        // Stored by an importer that kept rule candidates as bytes: taken as it is.
        (Content::Known | Content::KnownTooLarge(_), _) => (None, Some(known)),
    };
    let (change, skipped) = apply_rule(all, path, size, rule, data.as_deref());
    let (hash, size) = match (&change, &data, stored) {
        (Some((_, d)), _, _) | (None, Some(d), None) => (sink.put_bytes(d)?, d.len() as u64),
        (None, _, Some(h)) => (h, size),
        (None, None, None) => return Err(Error::invalid(path, "no content")),
    };
    let kept = match (&change, keep) {
        (Some((_, d)), Some(spill)) => Some(spill.keep(d)?),
        _ => None,
    };
    Ok(Outcome {
        hash,
        size,
        change: change.map(|(rule, _)| rule),
        kept,
        skipped,
    })
}

/// The rule that would look at a file, found before its content is read (from its first
/// bytes), and the file opened for it when it is read here.
fn rule_before_reading(
    content: &Content,
    path: &[u8],
    rules: Option<&normalize::Options>,
    in_memory: bool,
) -> Result<(Option<Rule>, Option<File>)> {
    let mut file = None;
    let rule = match content {
        Content::Disk(disk) if in_memory || rules.is_some() => {
            let f = fsx::open_nofollow(disk)?;
            let rule = match rules {
                Some(o) => {
                    let (head, n) = fsx::read_head::<3>(&f, disk)?;
                    rule_for(o, path, &head[..n])
                }
                None => None,
            };
            file = Some(f);
            rule
        }
        Content::Bytes(d) => rules.and_then(|o| rule_for(o, path, d)),
        Content::KnownTooLarge(head) => rules.and_then(|o| rule_for(o, path, head)),
        Content::Disk(_) | Content::Known => None,
    };
    Ok((rule, file))
}

/// What `rule` makes of a file's content `data` (`None`: not read, too large): the
/// rewritten content, or why it was left as it is.
fn apply_rule(
    all: &[Pending],
    path: &[u8],
    size: u64,
    rule: Option<Rule>,
    data: Option<&[u8]>,
) -> (Option<(Rule, Vec<u8>)>, Option<String>) {
    let mut change = None;
    let mut skipped = None;
    match (rule, data) {
        (Some(Rule::Gzip), Some(d)) => match gzip::normalize(d, 0) {
            Ok(Some(n)) => change = Some((Rule::Gzip, n)),
            Ok(None) => {}
            // Left as it is: a damaged .gz is its package's business, not a reason
            // to refuse the tree; the report lists it.
            Err(e) => skipped = Some(format!("gzip: {e}")),
        },
        (Some(Rule::Pyc), Some(d)) => {
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
        // A rule would look at it, but it is too large to read into memory (rewriting it
        // would take a streaming rewrite): stored as it is, and said.
        (Some(r), None) => {
            let rule = if r == Rule::Gzip { "gzip" } else { "pyc" };
            skipped = Some(format!(
                "{rule}: {size} bytes, larger than the {} MiB normalisation reads into memory",
                IN_MEMORY_LIMIT >> 20
            ));
        }
        _ => {}
    }
    (change, skipped)
}

/// `imager hash`: the ID a directory would have (after normalisation, if asked),
/// writing nothing.
pub fn hash_dir(
    dir: &Path,
    norm: Option<&normalize::Options>,
    excludes: &crate::tree::scan::Excludes,
    progress: &dyn Progress,
) -> Result<(Hash, Tree, Report)> {
    let pending = crate::tree::scan::scan(dir, excludes)?;
    let Ingested { tree, report, .. } = ingest(pending, norm, &HashOnly, None, progress)?;
    Ok((
        crate::tree::text::id_of(&crate::tree::text::print(&tree)),
        tree,
        report,
    ))
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
