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
        let outcomes: Vec<Result<(usize, Outcome)>> = pending
            .par_iter()
            .enumerate()
            .filter(|(_, p)| p.content.is_some() && pyc::is_pyc(&p.entry.path) == pyc_pass)
            .map(|(i, p)| {
                let r = content_stage(&pending, p, opts, sink).map(|o| (i, o));
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
            p.content = Some(Content::Known);
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
    p: &Pending,
    opts: Option<&normalize::Options>,
    sink: &dyn Sink,
) -> Result<Outcome> {
    let (size, known) = match p.entry.kind {
        Kind::File { size, hash } => (size, hash),
        _ => {
            return Err(Error::invalid(
                &p.entry.path,
                "content given for an entry that is not a file",
            ))
        }
    };
    let path = &p.entry.path;
    let rules = opts.filter(|o| (o.gzip || o.pyc) && size <= IN_MEMORY_LIMIT);
    let (data, stored) = match p.content.as_ref() {
        Some(Content::Disk(disk)) if size <= IN_MEMORY_LIMIT => {
            let d = fsx::read_nofollow(disk, size)?;
            if d.len() as u64 != size {
                return Err(Error::invalid(
                    path,
                    format!("{} changed size while being read", disk.display()),
                ));
            }
            (Some(d), None)
        }
        Some(Content::Disk(disk)) => (None, Some(sink.put_file(disk, size)?)),
        Some(Content::Bytes(d)) => (Some(d.clone()), None),
        // Stored by an importer that kept rule candidates as bytes: taken as it is.
        Some(Content::Known) | None => (None, Some(known)),
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
