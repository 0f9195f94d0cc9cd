//! Writing beneath a directory without ever following a symlink: every parent is opened
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` relative to a handle on the root,
//! and every new name is created relative to that parent with `O_EXCL | O_NOFOLLOW`.
//! Whatever a tree or a hostile directory contains, nothing is written outside the root.
//!
//! [`Beneath::in_root`] is the variant for a chroot the imager is building: there a
//! symlink such as `/lib -> usr/lib` is part of the image and is followed, but resolved
//! as the image would resolve it (`RESOLVE_IN_ROOT`), so it still cannot lead outside.

use crate::error::{Error, IoContext, Result};
use crate::fsx;
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A handle on a directory that everything is written beneath, and the rules for resolving
/// paths under it (see the module doc).
pub struct Beneath {
    root: OwnedFd,
    path: PathBuf,
    /// How parents are resolved: never through a symlink, or through symlinks taken
    /// relative to the root.
    resolve: ResolveFlags,
    nofollow: OFlags,
}

impl Beneath {
    /// No symlink is ever followed.
    pub fn open(path: &Path) -> Result<Beneath> {
        Beneath::with(
            path,
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
            OFlags::NOFOLLOW,
        )
    }

    /// Symlinks are followed as if `path` were `/` (a chroot of our own making).
    pub fn in_root(path: &Path) -> Result<Beneath> {
        Beneath::with(path, ResolveFlags::IN_ROOT, OFlags::empty())
    }

    fn with(path: &Path, resolve: ResolveFlags, nofollow: OFlags) -> Result<Beneath> {
        let root = rustix::fs::open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ctx("open directory", path)?;
        Ok(Beneath {
            root,
            path: path.to_path_buf(),
            resolve: resolve | ResolveFlags::NO_MAGICLINKS,
            nofollow,
        })
    }

    /// The open root directory itself, for calls on it that this type does not make (a
    /// lock, setting its mtime).
    pub fn root_fd(&self) -> &OwnedFd {
        &self.root
    }

    /// The host path of an entry path, for messages.
    pub fn display(&self, entry_path: &[u8]) -> PathBuf {
        fsx::under(&self.path, entry_path)
    }

    /// Opens a directory entry path (`/` or `/a/b`) beneath the root.
    pub fn open_dir(&self, entry_path: &[u8]) -> Result<OwnedFd> {
        let rel = entry_path.strip_prefix(b"/").unwrap_or(entry_path);
        let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
        match rustix::fs::openat2(
            &self.root,
            rel,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | self.nofollow,
            Mode::empty(),
            self.resolve,
        ) {
            // Kernels before 5.6 lack openat2: the same guarantee, one name at a time.
            Err(rustix::io::Errno::NOSYS) if self.nofollow == OFlags::NOFOLLOW => {
                open_dir_nofollow(&self.root, rel)
            }
            r => r,
        }
        .ctx("open directory", self.display(entry_path))
    }

    /// The parent directory's handle and the last name of an entry path.
    pub fn parent<'p>(&self, entry_path: &'p [u8]) -> Result<(OwnedFd, &'p [u8])> {
        let parent = crate::tree::parent(entry_path)
            .ok_or_else(|| Error::Internal("the root has no parent".into()))?;
        Ok((self.open_dir(parent)?, crate::tree::file_name(entry_path)))
    }
}

/// Opens directory `rel` below `root` component by component with `O_NOFOLLOW`, so no
/// symlink is followed and `..` is refused: what `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`
/// does where openat2 is missing.
pub fn open_dir_nofollow(root: &OwnedFd, rel: &[u8]) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let mut fd = rustix::fs::openat(root, ".", flags, Mode::empty())?;
    for comp in rel.split(|&c| c == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err(rustix::io::Errno::XDEV),
            c => fd = rustix::fs::openat(&fd, c, flags, Mode::empty())?,
        }
    }
    Ok(fd)
}

/// Sets owner, then mode, then xattrs, then mtime through a file handle: chown clears
/// setuid/setgid and file capabilities, so the order is what keeps them.
pub fn set_meta_fd(fd: impl AsFd, e: &crate::Entry, shown: &Path) -> Result<()> {
    let fd = fd.as_fd();
    fsx::fchown(fd, e.uid, e.gid, shown)?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(e.mode)).ctx("set mode of", shown)?;
    for (name, value) in &e.xattrs {
        fsx::set_xattr_fd(fd, name, value, shown)?;
    }
    rustix::fs::futimens(fd, &fsx::timestamps(e.mtime)).ctx("set mtime of", shown)
}

/// The same for a name that cannot be opened for writing (symlink, device, fifo):
/// through its parent's handle, never following the name.
pub fn set_meta_at(parent: &OwnedFd, name: &[u8], e: &crate::Entry, shown: &Path) -> Result<()> {
    rustix::fs::chownat(
        parent,
        name,
        Some(rustix::fs::Uid::from_raw(e.uid)),
        Some(rustix::fs::Gid::from_raw(e.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .ctx("change owner of", shown)?;
    let is_link = matches!(e.kind, crate::Kind::Symlink { .. });
    if !is_link {
        // chmodat follows a final symlink, so a node swapped for one after it was looked
        // at would lead elsewhere: take the node itself (O_PATH, not following), check
        // it is no symlink, and change the inode that handle names.
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ctx("open", shown)?;
        let st = rustix::fs::fstat(&fd).ctx("inspect", shown)?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink {
            return Err(Error::invalid(
                fsx::path_bytes(shown),
                "became a symlink while its metadata was being set",
            ));
        }
        use std::os::fd::AsRawFd;
        let via = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        rustix::fs::chmod(&via, Mode::from_raw_mode(e.mode)).ctx("set mode of", shown)?;
    }
    if !e.xattrs.is_empty() {
        // No fd-based call reaches a symlink; the parent's /proc handle plus a final
        // name that l*xattr does not follow is the same guarantee.
        use std::os::fd::AsRawFd;
        let via = PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd()))
            .join(fsx::bytes_path(name));
        for (n, v) in &e.xattrs {
            rustix::fs::lsetxattr(&via, n.as_slice(), v, rustix::fs::XattrFlags::empty())
                .ctx("set extended attribute on", shown)?;
        }
    }
    rustix::fs::utimensat(
        parent,
        name,
        &fsx::timestamps(e.mtime),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .ctx("set mtime of", shown)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests set up and read files directly
mod tests {
    use super::*;

    #[test]
    fn the_fallback_walk_refuses_symlinks_and_dotdot() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(t.path().join("a/b")).expect("mkdir");
        std::os::unix::fs::symlink("/", t.path().join("a/up")).expect("symlink");
        let root = rustix::fs::open(t.path(), OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())
            .expect("open");
        assert!(open_dir_nofollow(&root, b"a/b").is_ok());
        assert!(open_dir_nofollow(&root, b".").is_ok());
        // O_DIRECTORY | O_NOFOLLOW on a symlink: ENOTDIR (ELOOP on some kernels).
        let e = open_dir_nofollow(&root, b"a/up/etc").err();
        assert!(
            matches!(e, Some(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP)),
            "{e:?}"
        );
        assert_eq!(
            open_dir_nofollow(&root, b"a/../..").err(),
            Some(rustix::io::Errno::XDEV)
        );
    }
}
