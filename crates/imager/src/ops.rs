//! What each command does, as library functions: the binary parses arguments into these
//! option structs and prints the results; tests call them directly.

pub use crate::import::{import, ImportOptions, ImportSource, Imported};
pub use crate::ingest::hash_dir;

use crate::archive::{dir, tar_export};
use crate::error::{Error, IoContext, Result};
use crate::ingest::{ingest, HashOnly, Ingested, Spill};
use crate::normalize::{self, Report};
use crate::progress::Progress;
use crate::safe_dir::Beneath;
use crate::store::{Access, Store};
use crate::tree::scan::{scan, Excludes};
use crate::tree::{Hash, Kind, Stats, Tree};
use rustix::fs::{Mode, OFlags};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `imager normalize DIR`: applies the rules to the directory in place. Rewritten files
/// keep their inode (hard links stay linked), owner, mode and xattrs. Their new content
/// waits in a scratch file on the directory's filesystem until the whole tree has been
/// read, so nothing is written if a file stops the run, and memory stays bounded.
pub fn normalize_dir(
    dir: &Path,
    norm: &normalize::Options,
    excludes: &Excludes,
    progress: &dyn Progress,
) -> Result<Report> {
    let pending = scan(dir, excludes)?;
    let before: Vec<(Vec<u8>, i64, bool)> = pending
        .iter()
        .map(|p| {
            (
                p.entry.path.clone(),
                p.entry.mtime,
                p.entry.kind == Kind::Dir,
            )
        })
        .collect();
    let spill = Spill::new(dir)?;
    let Ingested {
        tree,
        report,
        rewritten,
    } = ingest(pending, Some(norm), &HashOnly, Some(&spill), progress)?;
    let b = Beneath::open(dir)?;
    for (path, kept) in &rewritten {
        let shown = b.display(path);
        let (parent, name) = b.parent(path)?;
        let fd = rustix::fs::openat(
            &parent,
            name,
            OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ctx("open for rewriting", &shown)?;
        let mut f = std::fs::File::from(fd);
        let len = spill.copy_to(*kept, &mut f, &shown)?;
        f.set_len(len).ctx("truncate", &shown)?;
    }
    // Content writes changed mtimes; set every mtime that differs, directories last and
    // deepest first.
    let rewritten_paths: std::collections::HashSet<&[u8]> =
        rewritten.iter().map(|(p, _)| p.as_slice()).collect();
    let mut todo: Vec<(&[u8], i64, bool)> = Vec::new();
    for (path, old, is_dir) in &before {
        if let Some(e) = tree.get(path) {
            if e.mtime != *old || rewritten_paths.contains(path.as_slice()) {
                todo.push((path, e.mtime, *is_dir));
            }
        }
    }
    todo.sort_by_key(|(p, _, is_dir)| (*is_dir, std::cmp::Reverse(p.to_vec())));
    for (path, m, _) in todo {
        let shown = b.display(path);
        let ts = crate::fsx::timestamps(m);
        if path == b"/" {
            rustix::fs::futimens(b.root_fd(), &ts).ctx("set mtime of", &shown)?;
        } else {
            let (parent, name) = b.parent(path)?;
            rustix::fs::utimensat(&parent, name, &ts, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                .ctx("set mtime of", &shown)?;
        }
    }
    Ok(report)
}

/// Where an export goes.
pub enum ExportTarget {
    /// A tar.zst file at this path, written atomically (the deterministic export).
    TarZst(PathBuf),
    /// The same tar.zst bytes on standard output.
    TarZstStdout,
    /// A new or empty directory, filled with the image's entries and exact metadata.
    Dir(PathBuf),
}

/// `imager export`: writes the stored image `id` to `target`.
pub fn export(
    store: &Store,
    id: &Hash,
    target: &ExportTarget,
    progress: &dyn Progress,
) -> Result<()> {
    let tree = store.read_image(id)?;
    match target {
        ExportTarget::TarZst(p) => tar_export::export_tar_zst(store, &tree, p, progress),
        ExportTarget::TarZstStdout => {
            let out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut w = tar_export::write_tar_zst(store, &tree, out, progress)?;
            w.flush()
                .map_err(|e| Error::io("write", "standard output", e))
        }
        ExportTarget::Dir(d) => dir::export_dir(store, &tree, d, progress),
    }
}

/// `imager ls`: the manifest lines of `path` and everything below it.
pub fn ls(tree: &Tree, path: &str) -> Result<String> {
    let p = crate::tree::entry_path(path.as_bytes())
        .map_err(|r| Error::Usage(format!("{path}: {r}")))?;
    if tree.get(&p).is_none() {
        return Err(Error::Usage(format!("{path}: no such path in the image")));
    }
    let mut out = String::new();
    for e in tree.subtree(&p) {
        crate::tree::text::write_entry(&mut out, e);
    }
    Ok(out)
}

/// What `imager show` reports about an image.
#[derive(Debug, serde::Serialize)]
pub struct Shown {
    /// The image's id, in hex.
    pub id: String,
    /// Names whose current image this is, and names that had it earlier (`name~N`).
    pub names: Vec<String>,
    /// Counts and sizes of the image's entries and content.
    pub stats: Stats,
}

impl Shown {
    /// The report as `imager show` prints it.
    pub fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let t = &self.stats;
        writeln!(out, "image   {}", self.id)?;
        let names = if self.names.is_empty() {
            "-".to_string()
        } else {
            self.names.join(" ")
        };
        writeln!(out, "names   {names}")?;
        writeln!(
            out,
            "entries {} files, {} dirs, {} symlinks, {} hard links, {} devices, {} fifos",
            t.files, t.dirs, t.symlinks, t.hardlinks, t.devices, t.fifos
        )?;
        writeln!(
            out,
            "content {} bytes in {} distinct objects; {} entries with xattrs",
            t.bytes, t.objects, t.with_xattrs
        )
    }
}

/// `imager show`: what an image is and what names it.
pub fn show(store: &Store, id: &Hash) -> Result<Shown> {
    let tree = store.read_image(id)?;
    let names = store.names_by_image()?.remove(id).unwrap_or_default();
    Ok(Shown {
        id: id.to_hex(),
        names,
        stats: tree.stats(),
    })
}

/// `imager lock` and `imager build` as library calls, for callers that build the images
/// they work with (the syncer's live tests build the example manifest).
pub use crate::build::{build, lock, BuildOptions, Built};

/// Opens the store at `root`, for reading or for writing (see [`Access`]).
pub fn open_store(root: &Path, access: Access) -> Result<Store> {
    Store::open(root, access)
}
