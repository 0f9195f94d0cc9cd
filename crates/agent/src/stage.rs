//! Staging: every new file, node and replacement directory is first made in
//! `ROOT/.syncer-staging/` (the root's filesystem, so the commit is renames), created
//! with `O_EXCL | O_NOFOLLOW`, owner, mode, xattrs and mtime set through its handle, its
//! content checked against the image's hash. Nothing outside the staging directory
//! changes until the commit; a failure here (disk full included) removes the staging
//! directory and leaves the host as it was.

use super::commit::STAGING;
use super::fsops::{self, ensure_dir, remove_tree_at};
use crate::error::{Error, Result};
use imager_core::error::IoContext;
use imager_core::safe_dir::{set_meta_fd, Beneath};
use imager_core::tree::escape::escape;
use imager_core::{Entry, Hash, Kind};
use rustix::fs::{Mode, OFlags};
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// The staging directory of a push ([`crate::commit::STAGING`]): content and nodes are
/// made here under fresh names, then the commit renames them into place.
pub struct Staging {
    /// Where entries are made.
    pub dir: StagingDir,
    /// Which name each image path was given there.
    pub names: Names,
}

/// The staging directory itself: files are filled through `&self`, so several threads
/// stage a pack's files at once while the session thread reserves the next names.
pub struct StagingDir {
    /// The directory's handle, opened beneath the root.
    pub fd: OwnedFd,
    shown: PathBuf,
}

/// The staged names handed out so far.
#[derive(Default)]
pub struct Names {
    next: u64,
    /// Image path → staged name.
    pub staged: HashMap<Vec<u8>, String>,
}

impl Names {
    /// Reserves a fresh staged name for image path `path` (made by
    /// [`StagingDir::fill_file`]).
    pub fn reserve(&mut self, path: &[u8]) -> String {
        self.next += 1;
        let n = format!("s{}", self.next);
        self.staged.insert(path.to_vec(), n.clone());
        n
    }

    /// Refuses content for a path staged already (by a `Put`, a `Pack` or a fetched
    /// blob): each would be checked, but the second would take room the first was
    /// counted in.
    pub fn once(&self, path: &[u8]) -> Result<()> {
        if self.staged.contains_key(path) {
            return Err(Error::Protocol(format!("{} was sent twice", escape(path))));
        }
        Ok(())
    }
}

impl Staging {
    /// A fresh, empty staging directory (whatever an interrupted run left is removed).
    pub fn create(b: &Beneath) -> Result<Staging> {
        ensure_dir(b, STAGING)?;
        Staging::clear(b)?;
        Ok(Staging {
            dir: StagingDir {
                fd: ensure_dir(b, STAGING)?,
                shown: b.display(STAGING),
            },
            names: Names::default(),
        })
    }

    /// Empties the staging directory. The directory itself stays: removing and making
    /// it again would move the root directory's mtime on every push.
    pub fn clear(b: &Beneath) -> Result<()> {
        reclaim(b)?;
        let dir = match b.open_dir(STAGING) {
            Ok(d) => d,
            Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let shown = b.display(STAGING);
        let mut names = Vec::new();
        for ent in rustix::fs::Dir::read_from(&dir).ctx("list", shown.clone())? {
            let ent = ent.ctx("list", shown.clone())?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
        for n in names {
            remove_tree_at(&dir, &n, &shown.join(imager_core::fsx::bytes_path(&n)))?;
        }
        Ok(())
    }

    /// Checks there is room for `bytes` of new content and `inodes` new entries, with
    /// a margin, so that a full filesystem stops the push while the host is untouched.
    pub fn check_room(&self, bytes: u64, inodes: u64) -> Result<()> {
        let d = &self.dir;
        let (free, free_inodes) = fsops::free_space(&d.fd, &d.shown)?;
        let need = bytes.saturating_add(bytes / 50).saturating_add(8 << 20);
        if free < need {
            return Err(Error::Agent(format!(
                "not enough space on the filesystem of {}: the update needs {} bytes, {} are free",
                d.shown.display(),
                need,
                free
            )));
        }
        if let Some(fi) = free_inodes.filter(|fi| *fi < inodes) {
            return Err(Error::Agent(format!(
                "not enough inodes on the filesystem of {}: the update needs {inodes} new entries, {fi} inodes are free",
                d.shown.display(),
            )));
        }
        Ok(())
    }

    /// Stages file `e` with the content `fill` writes (given the image's size for it),
    /// checked against the image's size and hash.
    pub fn put_file_with(
        &mut self,
        b: &Beneath,
        e: &Entry,
        fill: impl FnOnce(u64, &mut dyn Write) -> Result<()>,
    ) -> Result<()> {
        let name = self.names.reserve(&e.path);
        self.dir.fill_file(b, e, &name, fill)
    }

    /// Stages a symlink, device, fifo or (empty) replacement directory.
    pub fn put_node(&mut self, e: &Entry) -> Result<()> {
        let name = self.names.reserve(&e.path);
        let shown = self.dir.shown.join(&name);
        fsops::make_node(&self.dir.fd, name.as_bytes(), e, &shown)?;
        Ok(())
    }

    /// Makes everything staged durable (one `syncfs` instead of an fsync per file).
    pub fn sync(&self) -> Result<()> {
        self.dir.sync()
    }
}

impl StagingDir {
    /// Makes file `e` under its reserved staged `name` with the content `fill` writes
    /// (given the image's size for it), checked against the image's size and hash. Takes
    /// `&self`: the files of a pack are made by several threads at once.
    pub fn fill_file(
        &self,
        b: &Beneath,
        e: &Entry,
        name: &str,
        fill: impl FnOnce(u64, &mut dyn Write) -> Result<()>,
    ) -> Result<()> {
        let Kind::File { size, hash } = e.kind else {
            return Err(Error::Protocol(format!(
                "content sent for {}, which is a {} in the image",
                escape(&e.path),
                e.kind.name()
            )));
        };
        let shown = b.display(&e.path);
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .ctx("create", self.shown.join(name))?;
        let mut w = Hashing {
            f: std::fs::File::from(fd),
            h: blake3::Hasher::new(),
            n: 0,
            limit: size,
        };
        fill(size, &mut w)?;
        imager_core::fsx::end_sparse(&w.f, w.n).ctx("write", self.shown.join(name))?;
        if w.n != size || Hash::from(w.h.finalize()) != hash {
            return Err(Error::Agent(format!(
                "{}: the content assembled for it does not match the image (size {} of {size}); \
                 the host changed during the push, or a delta's base was not what was scanned",
                shown.display(),
                w.n
            )));
        }
        set_meta_fd(&w.f, e, &shown)?;
        Ok(())
    }

    /// Makes everything staged durable (one `syncfs` instead of an fsync per file).
    pub fn sync(&self) -> Result<()> {
        rustix::fs::syncfs(&self.fd).ctx("flush", self.shown.clone())?;
        Ok(())
    }
}

/// Writes through, hashing, refusing to grow past the image's size for the file.
struct Hashing {
    f: std::fs::File,
    h: blake3::Hasher,
    n: u64,
    limit: u64,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.n + buf.len() as u64 > self.limit {
            return Err(std::io::Error::other(
                "the content is larger than the image says",
            ));
        }
        // Holes stay holes: a sparse image file costs the host its data, not its size.
        imager_core::fsx::write_sparse(&mut self.f, buf)?;
        self.h.update(buf);
        self.n += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.f.flush()
    }
}

/// The staging path is the syncer's own: anything but a directory there (a symlink, a
/// file someone left) is removed, the entry itself and never what a symlink points at,
/// instead of blocking every session.
fn reclaim(b: &Beneath) -> Result<()> {
    let (root, name) = b.parent(STAGING)?;
    match rustix::fs::statat(&root, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode)
                != rustix::fs::FileType::Directory =>
        {
            rustix::fs::unlinkat(&root, name, rustix::fs::AtFlags::empty())
                .ctx("remove", b.display(STAGING))?;
            Ok(())
        }
        _ => Ok(()),
    }
}
