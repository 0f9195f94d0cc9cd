//! Staging: every new file, node and directory is first made in `ROOT/.syncer-staging/`
//! (the root's filesystem, so the commit is renames; a new directory with what is new
//! below it inside, so it goes into place with one rename), created
//! with `O_EXCL | O_NOFOLLOW`, owner, mode, xattrs and mtime set through its handle, its
//! content checked against the image's hash. Nothing outside the staging directory
//! changes until the commit; a failure here (disk full included) removes the staging
//! directory and leaves the host as it was.

use super::commit::STAGING;
use super::fsops::{self, ensure_dir, remove_tree_at};
use crate::error::{Error, Result};
use crate::protocol::{Change, ChangeKind};
use imager_core::error::IoContext;
use imager_core::safe_dir::{set_meta_fd, Beneath};
use imager_core::tree::escape::escape;
use imager_core::{Entry, Hash, Kind, Tree};
use rustix::fs::{Mode, OFlags};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// The staging directory of a push ([`crate::commit::STAGING`]): content and nodes are
/// made here, under fresh names or inside a new directory's tree ([`Names`]), then the
/// commit renames them into place.
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

/// Where each image path's new entry was staged.
///
/// A new directory is staged as a tree: what is new below it is made inside it, so the
/// commit renames the directory alone and its content goes into place with it (a first
/// install is a few renames, not one per file). Everything else gets a fresh name at the
/// top of the staging directory and a rename of its own.
#[derive(Default)]
pub struct Names {
    next: u64,
    /// Image path → staged name, for entries at the top (each renamed into place).
    staged: HashMap<Vec<u8>, String>,
    /// New directories staged as trees: path → where, relative to the staging directory.
    trees: HashMap<Vec<u8>, Vec<u8>>,
    /// Paths staged inside a new directory's tree.
    inside: HashSet<Vec<u8>>,
}

/// Where a path's new entry was staged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Staged {
    /// At the top of the staging directory, under this name: the commit renames it.
    Top(String),
    /// Inside a new directory's tree: it goes into place with that directory.
    Inside,
}

impl Names {
    /// Reserves the place of image path `path`'s new entry (made by
    /// [`StagingDir::fill_file`] or a node): inside its new parent directory's tree when
    /// it has one, else a fresh name at the top. Returns it relative to the staging
    /// directory.
    pub fn reserve(&mut self, path: &[u8]) -> Vec<u8> {
        if let Some(at) = self.inside_location(path) {
            self.inside.insert(path.to_vec());
            return at;
        }
        self.next += 1;
        let n = format!("s{}", self.next);
        self.staged.insert(path.to_vec(), n.clone());
        n.into_bytes()
    }

    /// Reserves the place of new directory `path`, whose new entries go inside it.
    pub fn reserve_tree(&mut self, path: &[u8]) -> Vec<u8> {
        let at = self.reserve(path);
        self.trees.insert(path.to_vec(), at.clone());
        at
    }

    fn inside_location(&self, path: &[u8]) -> Option<Vec<u8>> {
        let at = self.trees.get(imager_core::tree::parent(path)?)?;
        let name = imager_core::tree::file_name(path);
        // (An image's paths are normalized; this keeps a bad one at the top, by name.)
        if matches!(name, b"" | b"." | b"..") {
            return None;
        }
        Some([at.as_slice(), b"/", name].concat())
    }

    /// Where `path`'s new entry was staged, if it was.
    pub fn of(&self, path: &[u8]) -> Option<Staged> {
        if self.inside.contains(path) {
            return Some(Staged::Inside);
        }
        self.staged.get(path).cloned().map(Staged::Top)
    }

    /// How many files were staged so far: the entries but the new directories (made
    /// first), while the content arrives (the nodes come after it). The crash tests'
    /// `stage:N` counts these.
    pub fn files(&self) -> usize {
        self.staged.len() + self.inside.len() - self.trees.len()
    }

    /// Refuses content for a path staged already (by a `Put`, a `Pack` or a fetched
    /// blob): each would be checked, but the second would take room the first was
    /// counted in.
    pub fn once(&self, path: &[u8]) -> Result<()> {
        if self.of(path).is_some() {
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
        for n in fsops::names_in(&dir, &shown)? {
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
        let at = self.names.reserve(&e.path);
        self.dir.fill_file(b, e, &at, fill)
    }

    /// Stages the new directories of `changes` towards `image` as trees, first thing:
    /// what is new below each is then made inside it (see [`Names`]).
    pub fn with_new_dirs(mut self, changes: &[Change], image: &Tree) -> Result<Staging> {
        let mut dirs: Vec<&Entry> = changes
            .iter()
            .filter_map(|c| image.get(&c.path).filter(|e| is_new_dir(c, e)))
            .collect();
        // Parents first.
        dirs.sort_by(|a, b| imager_core::tree::path_cmp(&a.path, &b.path));
        for e in dirs {
            let at = self.names.reserve_tree(&e.path);
            self.dir.make_node(&at, e)?;
        }
        Ok(self)
    }

    /// Makes everything staged durable (one `syncfs` instead of an fsync per file).
    pub fn sync(&self) -> Result<()> {
        self.dir.sync()
    }
}

impl StagingDir {
    /// Makes node `e` (symlink, device, fifo, directory) at its reserved place `at`.
    pub fn make_node(&self, at: &[u8], e: &Entry) -> Result<()> {
        let shown = self.shown.join(imager_core::fsx::bytes_path(at));
        fsops::make_node(&self.fd, at, e, &shown)?;
        Ok(())
    }

    /// Makes file `e` at its reserved place `at` with the content `fill` writes
    /// (given the image's size for it), checked against the image's size and hash. Takes
    /// `&self`: the files of a pack are made by several threads at once.
    pub fn fill_file(
        &self,
        b: &Beneath,
        e: &Entry,
        at: &[u8],
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
        let staged = self.shown.join(imager_core::fsx::bytes_path(at));
        let fd = rustix::fs::openat(
            &self.fd,
            at,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .ctx("create", &staged)?;
        let mut w = Hashing {
            f: std::fs::File::from(fd),
            h: blake3::Hasher::new(),
            n: 0,
            limit: size,
            held: Vec::new(),
            hole_at_end: false,
        };
        fill(size, &mut w)?;
        w.finish().ctx("write", &staged)?;
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
        Ok(imager_core::fsx::syncfs(&self.fd, &self.shown)?)
    }
}

/// Whether change `c` adds directory `e` (its image entry): one staged as a tree, first.
fn is_new_dir(c: &Change, e: &Entry) -> bool {
    c.kind == ChangeKind::Add && e.kind == Kind::Dir
}

/// Makes the nodes of `changes` towards `image` (symlinks, devices, fifos, replacement
/// directories) in staging: every new entry but a file's content (sent), a hard link
/// (made by the commit) and a new directory (staged first) is made before the commit
/// point, so the commit creates no inode of its own.
pub fn put_nodes(
    names: &mut Names,
    dir: &StagingDir,
    changes: &[Change],
    image: &Tree,
) -> Result<()> {
    for c in changes {
        if c.kind == ChangeKind::Delete || c.kind == ChangeKind::Meta {
            continue;
        }
        let Some(e) = image.get(&c.path) else {
            continue;
        };
        if !is_new_dir(c, e) && !matches!(e.kind, Kind::File { .. } | Kind::HardLink { .. }) {
            let at = names.reserve(&e.path);
            dir.make_node(&at, e)?;
        }
    }
    Ok(())
}

/// Writes a staged file, hashing, refusing to grow past the image's size for the file.
/// Writes are held up to [`HELD`] bytes: a delta's steps come a few bytes at a time, and
/// one `write` each was most of a managed host's update in system time (78,000 calls
/// for the corpus pair). A write of [`HELD`] bytes or more with nothing held goes
/// through as it is.
struct Hashing {
    f: std::fs::File,
    h: blake3::Hasher,
    n: u64,
    limit: u64,
    held: Vec<u8>,
    /// The last bytes written were left a hole: the length must be set at the end.
    hole_at_end: bool,
}

/// Bytes a staged file's writes are held to (a multiple of the sparse check's 64 KiB
/// pieces, so that what is held starts where a piece of the file does, unless a large
/// write went through before).
const HELD: usize = 256 << 10;

impl Hashing {
    /// Writes what is held, and sets the length where the content ends in a hole.
    fn finish(&mut self) -> std::io::Result<()> {
        self.write_held()?;
        if self.hole_at_end {
            imager_core::fsx::end_sparse(&self.f, self.n)?;
        }
        Ok(())
    }

    /// Writes what is held.
    fn write_held(&mut self) -> std::io::Result<()> {
        // Holes stay holes: a sparse image file costs the host its data, not its size.
        if !self.held.is_empty() {
            self.hole_at_end = imager_core::fsx::write_sparse(&mut self.f, &self.held)?;
        }
        self.held.clear();
        Ok(())
    }
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.n + buf.len() as u64 > self.limit {
            return Err(std::io::Error::other(
                "the content is larger than the image says",
            ));
        }
        self.h.update(buf);
        self.n += buf.len() as u64;
        if self.held.is_empty() && buf.len() >= HELD {
            self.hole_at_end = imager_core::fsx::write_sparse(&mut self.f, buf)?;
            return Ok(buf.len());
        }
        let mut rest = buf;
        while !rest.is_empty() {
            if self.held.capacity() == 0 {
                // A small file's buffer is as small.
                self.held
                    .reserve_exact(HELD.min(usize::try_from(self.limit).unwrap_or(HELD)));
            }
            let n = rest.len().min(HELD - self.held.len());
            self.held.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.held.len() == HELD {
                self.write_held()?;
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.write_held()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn content_written_a_few_bytes_at_a_time_keeps_its_holes_and_hash() {
        // What a delta's steps write: small pieces, here 1 MiB of zeros between data,
        // and the same ending in zeros (a hole at the end: the length is set).
        let mut content = b"head".repeat(1000);
        content.resize(content.len() + (1 << 20), 0);
        let ending_in_zeros = content.clone();
        content.extend(b"tail".repeat(1000));
        written_in_small_pieces(&content);
        written_in_small_pieces(&ending_in_zeros);
    }

    fn written_in_small_pieces(content: &[u8]) {
        let f = tempfile::tempfile().expect("temp file");
        let mut w = Hashing {
            f: f.try_clone().expect("clone"),
            h: blake3::Hasher::new(),
            n: 0,
            limit: content.len() as u64,
            held: Vec::new(),
            hole_at_end: false,
        };
        for piece in content.chunks(7) {
            w.write_all(piece).expect("write");
        }
        w.finish().expect("finish");
        assert_eq!(Hash::from(w.h.finalize()), Hash::of(content));
        assert_eq!(f.metadata().expect("stat").len(), content.len() as u64);
        let mut back = vec![0; content.len()];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut back, 0).expect("read back");
        assert!(back == content, "the file differs from what was written");
        // Most of the zeros are a hole (a filesystem without holes stores them all).
        let stored = f.metadata().expect("stat").blocks() * 512;
        assert!(stored < 1 << 19, "{stored} bytes stored for 8 KB of data");
        // A write past the image's size is refused.
        assert!(w.write_all(b"x").is_err());
    }
}
