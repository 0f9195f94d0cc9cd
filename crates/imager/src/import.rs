//! `imager import`: a directory or an archive into the store as an image, normalised if
//! asked (the build and `try-package` import their roots through it too).

use crate::archive::tar_import;
use crate::error::Result;
use crate::ingest::{ingest, Ingested, StoreSink};
use crate::normalize::{self, Report};
use crate::progress::Progress;
use crate::store::Store;
use crate::tree::scan::{scan, Excludes};
use crate::tree::Stats;
use std::path::{Path, PathBuf};

/// Where a tree comes from.
#[derive(Clone, Debug)]
pub enum ImportSource {
    /// A directory on this machine, scanned without following symlinks.
    Dir(PathBuf),
    /// A tar, tar.gz or tar.zst file (`-` for standard input).
    Archive(PathBuf),
}

impl ImportSource {
    /// A directory is a directory; anything else is read as an archive.
    pub fn guess(path: &Path) -> ImportSource {
        // A path that cannot be looked at is taken for an archive: opening it says why.
        if matches!(crate::fsx::is_dir(path), Ok(true)) {
            ImportSource::Dir(path.to_path_buf())
        } else {
            ImportSource::Archive(path.to_path_buf())
        }
    }
}

/// How `imager import` stores a tree.
pub struct ImportOptions {
    /// The name to point at the new image (its history keeps the previous one).
    pub name: Option<String>,
    /// How to normalise the tree; None stores it as it is.
    pub normalize: Option<normalize::Options>,
    /// Paths left out of the image (globs, `/var/log/**`).
    pub excludes: Excludes,
    /// Files stored beside the image's manifest (a build's record), by name.
    pub extra: Vec<(String, Vec<u8>)>,
}

impl ImportOptions {
    /// A tree as it is: no name, no normalisation, nothing left out.
    pub fn plain() -> ImportOptions {
        ImportOptions {
            name: None,
            normalize: None,
            excludes: Excludes::default(),
            extra: Vec::new(),
        }
    }
}

/// What `imager import` stored.
#[derive(Debug, serde::Serialize)]
pub struct Imported {
    /// The new image's id, in hex.
    pub id: String,
    /// The name now pointing at it; None when none was asked for.
    pub name: Option<String>,
    /// Counts and sizes of the image's entries.
    pub stats: Stats,
    /// Bytes of content the store did not have before.
    pub new_bytes: u64,
    /// Content objects the store did not have before.
    pub new_objects: usize,
    /// What normalisation changed; empty when it was not asked for.
    pub normalize: Report,
}

impl Imported {
    /// The line `imager import` prints on standard error: what the image holds and what
    /// the store gained.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        format!(
            "imported {} files, {} dirs, {} symlinks, {} hard links, {} devices/fifos; {} bytes, {} new objects ({} new bytes){}",
            s.files, s.dirs, s.symlinks, s.hardlinks, s.devices + s.fifos,
            s.bytes, self.new_objects, self.new_bytes,
            self.name.as_deref().map(|n| format!("; name {n}")).unwrap_or_default()
        )
    }
}

/// `imager import`: a directory or archive into the store, normalised if asked.
pub fn import(
    store: &Store,
    src: &ImportSource,
    opts: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Imported> {
    let txn = store.txn();
    let pending = match src {
        ImportSource::Dir(d) => scan(d, &opts.excludes)?,
        ImportSource::Archive(p) => {
            let shown = p.display().to_string();
            let iopts = tar_import::ArchiveReadOptions {
                keep_candidates: opts.normalize.is_some(),
                excludes: &opts.excludes,
            };
            progress.start("read archive", None);
            let r = if p.as_os_str() == "-" {
                tar_import::read_archive(std::io::stdin().lock(), "standard input", &txn, &iopts)
            } else {
                let f = crate::fsx::open(p)?;
                tar_import::read_archive(f, &shown, &txn, &iopts)
            };
            progress.finish();
            r?
        }
    };
    let Ingested { tree, report, .. } = ingest(
        pending,
        opts.normalize.as_ref(),
        &StoreSink { txn: &txn },
        None,
        progress,
    )?;
    // Refused before its objects are committed: an image too large to push leaves
    // nothing in the store.
    let text = crate::store::printed_image(&tree)?;
    let new_bytes = txn.new_bytes.load(std::sync::atomic::Ordering::Relaxed);
    let new_objects = txn.commit()?;
    let extra: Vec<(&str, &[u8])> = opts
        .extra
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let id = store.write_image_text(&tree, &text, &extra)?;
    if let Some(n) = &opts.name {
        store.set_ref(n, &id)?;
    }
    Ok(Imported {
        id: id.to_hex(),
        name: opts.name.clone(),
        stats: tree.stats(),
        new_bytes,
        new_objects,
        normalize: report,
    })
}
