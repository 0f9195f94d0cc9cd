//! Exporting an image into a directory with exact metadata: owners, modes (setuid and
//! all), xattrs (capabilities included), devices, fifos, hard links and mtimes.
//!
//! The target must be new or empty. Directories are made first (private, 0700), then
//! files, links, devices and fifos in parallel, then hard links, then every directory's
//! metadata deepest first, so that creating children does not disturb a parent's mtime
//! and a read-only directory is filled before it becomes read-only. Every write goes
//! through [`crate::safe_dir`], beneath the target. An export that fails leaves nothing
//! behind: the directory it made is removed, or the empty one it was given emptied.

use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use crate::safe_dir::{set_meta_at, set_meta_fd, Beneath};
use crate::store::Store;
use crate::tree::{Entry, Hash, Kind, Tree};
use rayon::prelude::*;
use rustix::fs::{FileType, Mode, OFlags};
use std::path::Path;

pub fn export_dir(store: &Store, tree: &Tree, dest: &Path, progress: &dyn Progress) -> Result<()> {
    // A file (or a symlink to one or to nothing) is refused here, by what it is.
    crate::fsx::output_dir(dest)?;
    let made = match crate::fsx::read_dir(dest) {
        Ok(entries) => {
            if !entries.is_empty() {
                return Err(Error::Usage(format!(
                    "{} is not empty; export into a new or empty directory",
                    dest.display()
                )));
            }
            false
        }
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => {
            crate::fsx::create_dir(dest)?;
            true
        }
        Err(e) => return Err(e.doing("open directory")),
    };
    let filled = fill(store, tree, dest, progress);
    if filled.is_err() {
        // A half-written tree (a file cut short, directories still private) must not
        // pass for the image: what this export made goes, and the target is as it was.
        undo(dest, made);
    }
    filled
}

/// Removes what a failed export wrote: the directory it made, or what it put into the
/// empty one it was given. Best effort: the export's own error is the one reported.
fn undo(dest: &Path, made: bool) {
    if made {
        let _ = crate::fsx::remove_dir_all(dest);
        return;
    }
    if let Ok(entries) = crate::fsx::read_dir(dest) {
        for e in entries {
            let p = dest.join(e.file_name());
            match e.file_type() {
                Ok(t) if t.is_dir() => {
                    let _ = crate::fsx::remove_dir_all(&p);
                }
                _ => {
                    let _ = crate::fsx::remove_file(&p);
                }
            }
        }
    }
}

/// Writes file `e` (its content `hash`, `size` bytes) as `name` in directory `parent`.
fn write_file(
    store: &Store,
    (parent, name): (&std::os::fd::OwnedFd, &[u8]),
    e: &Entry,
    (hash, size): (&Hash, u64),
    shown: &Path,
) -> Result<()> {
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .ctx("create", shown)?;
    let mut f = std::fs::File::from(fd);
    let mut r = store.object_reader(hash, size)?;
    std::io::copy(&mut r, &mut f).map_err(|err| Error::Store {
        store: store.root().to_path_buf(),
        reason: format!("exporting {}: {err}", shown.display()),
    })?;
    set_meta_fd(&f, e, shown)
}

/// Writes the tree into the empty directory `dest`.
fn fill(store: &Store, tree: &Tree, dest: &Path, progress: &dyn Progress) -> Result<()> {
    let b = Beneath::open(dest)?;
    let entries = tree.entries();
    progress.start("export", Some(entries.len() as u64));

    for e in entries
        .iter()
        .filter(|e| e.kind == Kind::Dir && e.path != b"/")
    {
        let (parent, name) = b.parent(&e.path)?;
        rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
            .ctx("create directory", b.display(&e.path))?;
    }

    entries
        .par_iter()
        .filter(|e| !matches!(e.kind, Kind::Dir | Kind::HardLink { .. }))
        .try_for_each(|e| -> Result<()> {
            let shown = b.display(&e.path);
            let (parent, name) = b.parent(&e.path)?;
            match &e.kind {
                Kind::File { hash, size } => {
                    write_file(store, (&parent, name), e, (hash, *size), &shown)?
                }
                Kind::Symlink { target } => {
                    rustix::fs::symlinkat(target.as_slice(), &parent, name)
                        .ctx("create symlink", &shown)?;
                    set_meta_at(&parent, name, e, &shown)?;
                }
                Kind::CharDev { .. } | Kind::BlockDev { .. } | Kind::Fifo => {
                    let (ft, dev) = match e.kind {
                        Kind::CharDev { major, minor } => {
                            (FileType::CharacterDevice, rustix::fs::makedev(major, minor))
                        }
                        Kind::BlockDev { major, minor } => {
                            (FileType::BlockDevice, rustix::fs::makedev(major, minor))
                        }
                        _ => (FileType::Fifo, 0),
                    };
                    rustix::fs::mknodat(&parent, name, ft, Mode::from_raw_mode(0o600), dev)
                        .ctx("create node", &shown)?;
                    set_meta_at(&parent, name, e, &shown)?;
                }
                _ => {}
            }
            progress.inc(1);
            Ok(())
        })?;

    for e in entries {
        if let Kind::HardLink { target } = &e.kind {
            let (tparent, tname) = b.parent(target)?;
            let (parent, name) = b.parent(&e.path)?;
            rustix::fs::linkat(&tparent, tname, &parent, name, rustix::fs::AtFlags::empty())
                .ctx("create hard link", b.display(&e.path))?;
            progress.inc(1);
        }
    }

    for e in entries.iter().rev().filter(|e| e.kind == Kind::Dir) {
        let fd = b.open_dir(&e.path)?;
        set_meta_fd(&fd, e, &b.display(&e.path))?;
        progress.inc(1);
    }
    progress.finish();
    Ok(())
}
