//! Every write the agent makes to a host goes through here: relative to directory
//! handles opened beneath the root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! (imager's [`Beneath`]), new names created with `O_EXCL | O_NOFOLLOW`, and nothing
//! ever followed through a symlink found on the host. Reads of host files, which the
//! content decoders need too, are [`crate::hostfs`]'s.

use imager_core::error::{Error as FsError, IoContext};
use imager_core::fsx;
use imager_core::safe_dir::Beneath;
use imager_core::{Entry, Kind};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// A result whose error is imager's filesystem error, which names the path and the action.
pub type Result<T> = std::result::Result<T, FsError>;

/// Opens (creating as needed, 0700) a directory beneath the root, one component at a
/// time, never through a symlink.
pub fn ensure_dir(b: &Beneath, path: &[u8]) -> Result<OwnedFd> {
    let mut cur = Vec::new();
    for comp in path.split(|&c| c == b'/').filter(|c| !c.is_empty()) {
        let parent = if cur.is_empty() {
            b"/".to_vec()
        } else {
            cur.clone()
        };
        cur.push(b'/');
        cur.extend_from_slice(comp);
        let pfd = b.open_dir(&parent)?;
        match rustix::fs::mkdirat(&pfd, comp, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e).ctx("create directory", b.display(&cur)),
        }
    }
    b.open_dir(path)
}

/// Reads a file in a directory handle (`None` if it does not exist).
pub fn read_at(dir: &OwnedFd, name: &str, shown: &Path) -> Result<Option<Vec<u8>>> {
    match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut v).ctx("read", shown)?;
            Ok(Some(v))
        }
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e).ctx("open", shown),
    }
}

/// Replaces `name` in `dir` with `data`: a new file, flushed, then renamed over.
pub fn write_atomic(dir: &OwnedFd, name: &str, data: &[u8], shown: &Path) -> Result<()> {
    write_replace(dir, name, data, shown, true)
}

/// Replaces `name` by rename (readers see the old or the new file), flushing first if
/// `durable`.
pub fn write_replace(
    dir: &OwnedFd,
    name: &str,
    data: &[u8],
    shown: &Path,
    durable: bool,
) -> Result<()> {
    let tmp = format!(".{name}.tmp");
    let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    let fd = rustix::fs::openat(
        dir,
        tmp.as_str(),
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .ctx("create", shown)?;
    let mut f = std::fs::File::from(fd);
    f.write_all(data).ctx("write", shown)?;
    if durable {
        f.sync_all().ctx("flush", shown)?;
    }
    rustix::fs::renameat(dir, tmp.as_str(), dir, name).ctx("rename into place", shown)?;
    if durable {
        rustix::fs::fsync(dir).ctx("flush directory of", shown)?;
    }
    Ok(())
}

/// Removes the non-directory `name` in `dir` (`shown` in messages); one already gone is not
/// an error.
pub fn remove_at(dir: &OwnedFd, name: &str, shown: &Path) -> Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e).ctx("remove", shown),
    }
}

/// What is at a name, not following it.
pub fn stat_at(dir: &OwnedFd, name: &[u8]) -> Option<rustix::fs::Stat> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()
}

/// Whether the stat is of a directory.
pub fn is_dir(st: &rustix::fs::Stat) -> bool {
    rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
}

/// Removes `name` in `dir` and, if it is a directory, everything below it, never
/// following a symlink and never crossing into another filesystem (a mount point inside
/// stops the removal with an error). A missing name is not an error.
pub fn remove_tree_at(dir: &OwnedFd, name: &[u8], shown: &Path) -> Result<()> {
    remove_on(dir, name, shown, None)
}

/// Opens directory `name` in `dir`, never through a symlink.
pub fn open_dir_at(dir: &OwnedFd, name: &[u8], shown: &Path) -> Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx("open directory", shown)
}

/// The names in directory `dir` (`.` and `..` left out).
pub fn names_in(dir: &OwnedFd, shown: &Path) -> Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for ent in rustix::fs::Dir::read_from(dir).ctx("list", shown)? {
        let ent = ent.ctx("list", shown)?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    Ok(names)
}

/// `within`: the device and mount ID of the directory being emptied (`None` at the top).
fn remove_on(
    dir: &OwnedFd,
    name: &[u8],
    shown: &Path,
    within: Option<(u64, Option<u64>)>,
) -> Result<()> {
    let Some(st) = stat_at(dir, name) else {
        return Ok(());
    };
    if !is_dir(&st) {
        return match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e).ctx("remove", shown),
        };
    }
    // A bind mount of the same filesystem has the same st_dev: its mount ID tells.
    let mnt = super::mounts::mount_id(dir, name);
    if within.is_some_and(|(d, m)| d != st.st_dev || (m.is_some() && m != mnt)) {
        return Err(FsError::io(
            "remove (a mount point is inside)",
            shown,
            std::io::Error::from_raw_os_error(Errno::XDEV.raw_os_error()),
        ));
    }
    let sub = open_dir_at(dir, name, shown)?;
    for n in names_in(&sub, shown)? {
        remove_on(
            &sub,
            &n,
            &shown.join(fsx::bytes_path(&n)),
            Some((st.st_dev, mnt)),
        )?;
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e).ctx("remove directory", shown),
    }
}

/// Brings an existing entry's owner, mode, xattrs (extra ones removed) and mtime to the
/// image's, in place: regular files and directories through a handle opened without
/// following, other kinds through their parent's handle.
pub fn set_meta(b: &Beneath, e: &Entry) -> Result<()> {
    let shown = b.display(&e.path);
    match e.kind {
        Kind::Dir => {
            let fd = b.open_dir(&e.path)?;
            drop_extra_xattrs_fd(&fd, e, &shown)?;
            imager_core::safe_dir::set_meta_fd(&fd, e, &shown)
        }
        Kind::File { .. } => {
            let (parent, name) = b.parent(&e.path)?;
            let fd = rustix::fs::openat(
                &parent,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ctx("open", &shown)?;
            let st = rustix::fs::fstat(&fd).ctx("inspect", &shown)?;
            if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
            {
                return Err(FsError::invalid(
                    &e.path,
                    "changed under the agent: not a regular file",
                ));
            }
            drop_extra_xattrs_fd(&fd, e, &shown)?;
            imager_core::safe_dir::set_meta_fd(&fd, e, &shown)
        }
        Kind::HardLink { .. } => Ok(()),
        _ => {
            let (parent, name) = b.parent(&e.path)?;
            imager_core::safe_dir::set_meta_at(&parent, name, e, &shown)
        }
    }
}

fn drop_extra_xattrs_fd(fd: &OwnedFd, e: &Entry, shown: &Path) -> Result<()> {
    let mut buf = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::flistxattr(fd, &mut buf[..]) {
            Ok(n) => break n,
            Err(Errno::RANGE) => buf.resize(buf.len() * 4, 0),
            Err(Errno::OPNOTSUPP) => return Ok(()),
            Err(err) => return Err(err).ctx("list extended attributes of", shown),
        }
    };
    for name in buf[..n].split(|&c| c == 0).filter(|n| !n.is_empty()) {
        if !e.xattrs.iter().any(|(k, _)| k == name) {
            rustix::fs::fremovexattr(fd.as_fd(), name)
                .ctx("remove extended attribute of", shown)?;
        }
    }
    Ok(())
}

/// The free bytes and free inodes on the filesystem of `dir`, leaving the blocks and
/// inodes reserved for root to the host's own daemons. No inode count where the
/// filesystem has no fixed table (btrfs reports 0 inodes).
pub fn free_space(dir: &OwnedFd, shown: &Path) -> Result<(u64, Option<u64>)> {
    let s = rustix::fs::fstatvfs(dir).ctx("inspect filesystem of", shown)?;
    let inodes = (s.f_files > 0).then_some(s.f_favail);
    Ok((s.f_bavail.saturating_mul(s.f_frsize), inodes))
}

/// True when opening a path failed because a component is missing, is no directory, or
/// is a symlink (which the agent never follows).
pub fn is_gone(e: &FsError) -> bool {
    matches!(e, FsError::Io { source, .. } if matches!(
        source.raw_os_error(),
        Some(c) if c == Errno::NOENT.raw_os_error() || c == Errno::NOTDIR.raw_os_error() || c == Errno::LOOP.raw_os_error()
    ))
}

/// True when an error is the filesystem being full.
pub fn is_enospc(e: &FsError) -> bool {
    matches!(e, FsError::Io { source, .. } if source.raw_os_error() == Some(Errno::NOSPC.raw_os_error()))
}

/// Creates a node (symlink, device, fifo) named `name` in `dir` as `e` describes.
pub fn make_node(dir: &OwnedFd, name: &[u8], e: &Entry, shown: &Path) -> Result<()> {
    use rustix::fs::FileType;
    match &e.kind {
        Kind::Symlink { target } => {
            rustix::fs::symlinkat(target.as_slice(), dir, name).ctx("create symlink", shown)?
        }
        Kind::CharDev { major, minor } => rustix::fs::mknodat(
            dir,
            name,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            rustix::fs::makedev(*major, *minor),
        )
        .ctx("create node", shown)?,
        Kind::BlockDev { major, minor } => rustix::fs::mknodat(
            dir,
            name,
            FileType::BlockDevice,
            Mode::from_raw_mode(0o600),
            rustix::fs::makedev(*major, *minor),
        )
        .ctx("create node", shown)?,
        Kind::Fifo => rustix::fs::mknodat(dir, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
            .ctx("create node", shown)?,
        Kind::Dir => rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))
            .ctx("create directory", shown)?,
        Kind::File { .. } | Kind::HardLink { .. } => {
            return Err(FsError::invalid(&e.path, "not a node kind"))
        }
    }
    // Directories too: one renamed into place has its owner and mode from the start (a
    // 0700 directory there, until the commit's end or the next session after a kill,
    // would hide its files from the services that read them). Its mtime, which the
    // renames into it move, is set again at the commit's end.
    imager_core::safe_dir::set_meta_at(dir, name, e, shown)?;
    Ok(())
}
