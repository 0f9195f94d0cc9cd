//! Filesystem calls with the path and the action in every error, and the few Linux
//! calls std lacks (xattrs, device numbers, `O_NOFOLLOW` opens, fixed timestamps). All of
//! the library's filesystem access goes through here or through [`crate::safe_dir`]:
//! clippy's `disallowed-methods` (clippy.toml) refuses `std::fs` calls anywhere else, so
//! that every error names its path and every write that must be atomic is.
#![allow(clippy::disallowed_methods)]

use crate::error::{IoContext, Result};
use rustix::fs::{Gid, Timespec, Timestamps, Uid};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).ctx("read", path)
}

/// [`read`], with `None` for a file that does not exist.
pub fn read_if_exists(path: impl AsRef<Path>) -> Result<Option<Vec<u8>>> {
    let path = path.as_ref();
    if_exists(std::fs::read(path), "read", path)
}

/// [`read_to_string`], with `None` for a file that does not exist.
pub fn read_to_string_if_exists(path: impl AsRef<Path>) -> Result<Option<String>> {
    let path = path.as_ref();
    if_exists(std::fs::read_to_string(path), "read", path)
}

fn if_exists<T>(r: std::io::Result<T>, action: &'static str, path: &Path) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::Error::io(action, path, e)),
    }
}

/// Writes a whole file in place (not atomically: see [`write_atomic`]).
pub fn write(path: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> Result<()> {
    let path = path.as_ref();
    std::fs::write(path, bytes).ctx("write", path)
}

pub fn open(path: impl AsRef<Path>) -> Result<File> {
    let path = path.as_ref();
    File::open(path).ctx("open", path)
}

pub fn create(path: impl AsRef<Path>) -> Result<File> {
    let path = path.as_ref();
    File::create(path).ctx("create", path)
}

/// Opens with `opts`; `action` says what for ("open lock").
pub fn open_with(opts: &std::fs::OpenOptions, path: &Path, action: &'static str) -> Result<File> {
    opts.open(path).ctx(action, path)
}

pub fn create_dir(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    std::fs::create_dir(path).ctx("create directory", path)
}

pub fn remove_dir(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    std::fs::remove_dir(path).ctx("remove", path)
}

pub fn remove_dir_all(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    std::fs::remove_dir_all(path).ctx("remove", path)
}

/// A directory's entries, all read (an error part way names the directory).
pub fn read_dir(path: impl AsRef<Path>) -> Result<Vec<std::fs::DirEntry>> {
    let path = path.as_ref();
    std::fs::read_dir(path)
        .and_then(|d| d.collect::<std::io::Result<Vec<_>>>())
        .ctx("list", path)
}

/// [`read_dir`], or `None` when the directory does not exist.
pub fn read_dir_if_exists(path: impl AsRef<Path>) -> Result<Option<Vec<std::fs::DirEntry>>> {
    let path = path.as_ref();
    match std::fs::read_dir(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        r => r
            .and_then(|d| d.collect::<std::io::Result<Vec<_>>>())
            .map(Some)
            .ctx("list", path),
    }
}

/// Metadata, following a final symlink.
pub fn metadata(path: impl AsRef<Path>) -> Result<std::fs::Metadata> {
    let path = path.as_ref();
    std::fs::metadata(path).ctx("inspect", path)
}

/// Metadata of the path itself (a symlink is not followed).
pub fn symlink_metadata(path: impl AsRef<Path>) -> Result<std::fs::Metadata> {
    let path = path.as_ref();
    std::fs::symlink_metadata(path).ctx("inspect", path)
}

pub fn read_link(path: impl AsRef<Path>) -> Result<PathBuf> {
    let path = path.as_ref();
    std::fs::read_link(path).ctx("read symlink", path)
}

/// Copies a file's content and mode; the error names the source.
pub fn copy(from: &Path, to: &Path) -> Result<u64> {
    std::fs::copy(from, to).ctx("copy", from)
}

/// Creates a symlink at `link` to `target`; the error names `link`.
pub fn symlink(target: &str, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link).ctx("create symlink", link)
}

/// Makes `dest` another name of `src`; the error names `dest`.
pub fn hard_link(src: &Path, dest: &Path) -> Result<()> {
    std::fs::hard_link(src, dest).ctx("link", dest)
}

pub fn set_mode(path: impl AsRef<Path>, mode: u32) -> Result<()> {
    let path = path.as_ref();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).ctx("set mode of", path)
}

pub fn canonicalize(path: impl AsRef<Path>) -> Result<PathBuf> {
    let path = path.as_ref();
    std::fs::canonicalize(path).ctx("resolve", path)
}

pub fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).ctx("read", path)
}

pub fn create_dir_all(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).ctx("create directory", path)
}

pub fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).ctx("rename into place", to)
}

pub fn remove_file(path: &Path) -> Result<()> {
    std::fs::remove_file(path).ctx("remove", path)
}

/// Replaces `path` with `bytes` so that no reader and no crash ever sees half of them.
///
/// What it guarantees: the bytes go to a temporary beside `path` (`.NAME.tmp-PID`, on the
/// same filesystem, so the rename is atomic), the temporary is flushed (`fsync`), renamed
/// over `path`, and then `path`'s directory is flushed. So at every moment, crash or not,
/// `path` holds either what it held before (or nothing) or all of the new bytes; once this
/// returns `Ok`, the new bytes and the new name survive a power loss (on a filesystem that
/// honours `fsync`). On an error the temporary is removed and `path` is as it was. Two
/// writers of the same path in one process would share the temporary: callers serialise.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes).ctx("write", path))
}

/// [`write_atomic`] for content produced as a stream: `fill` writes it to the temporary.
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    write_atomic_via(&tmp, path, fill)
}

/// [`write_atomic`] through a temporary the caller chose (a store's `tmp/`, which it
/// cleans after a crash); `tmp` must be on `path`'s filesystem.
pub fn write_atomic_via(
    tmp: &Path,
    path: &Path,
    fill: impl FnOnce(&mut File) -> Result<()>,
) -> Result<()> {
    let r = (|| {
        let mut f = File::create(tmp).ctx("create", tmp)?;
        fill(&mut f)?;
        f.sync_all().ctx("flush", tmp)?;
        rename(tmp, path)?;
        sync_dir(parent_dir(path))
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    r
}

/// Flushes a directory, so that the names just made or renamed in it are durable.
pub fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .ctx("flush directory", path)
}

/// The directory `path` is in (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Opens a file for reading without following a symlink in the last component, so a
/// tree that changes under a scan cannot redirect it.
pub fn open_nofollow(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .ctx("open", path)
}

/// Reads a whole file into memory, refusing to follow a final symlink.
pub fn read_nofollow(path: &Path, size_hint: u64) -> Result<Vec<u8>> {
    let mut f = open_nofollow(path)?;
    let mut buf = Vec::with_capacity(size_hint.min(1 << 30) as usize);
    f.read_to_end(&mut buf).ctx("read", path)?;
    Ok(buf)
}

pub fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

pub fn bytes_path(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

/// Extended attributes of `path` (not following a final symlink), sorted by name.
pub fn read_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = xattr_names(|buf| rustix::fs::llistxattr(path, buf), path)?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let mut buf = vec![0u8; 256];
        let value = loop {
            match rustix::fs::lgetxattr(path, name.as_slice(), &mut buf[..]) {
                Ok(n) => break buf[..n].to_vec(),
                Err(rustix::io::Errno::RANGE) => buf.resize(buf.len() * 4, 0),
                // Removed between list and get: the tree changed under us; not an xattr.
                Err(rustix::io::Errno::NODATA) => break Vec::new(),
                Err(e) => return Err(e).ctx("read extended attribute of", path),
            }
        };
        out.push((name, value));
    }
    out.sort();
    Ok(out)
}

fn xattr_names(
    mut list: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
    path: &Path,
) -> Result<Vec<Vec<u8>>> {
    let mut buf = vec![0u8; 1024];
    let n = loop {
        match list(&mut buf[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => buf.resize(buf.len() * 4, 0),
            Err(rustix::io::Errno::OPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(e).ctx("list extended attributes of", path),
        }
    };
    Ok(buf[..n]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| n.to_vec())
        .collect())
}

pub fn set_xattr_fd(fd: impl AsFd, name: &[u8], value: &[u8], path: &Path) -> Result<()> {
    rustix::fs::fsetxattr(fd, name, value, rustix::fs::XattrFlags::empty())
        .ctx("set extended attribute on", path)
}

pub fn timestamps(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

pub fn fchown(fd: impl AsFd, uid: u32, gid: u32, path: &Path) -> Result<()> {
    rustix::fs::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .ctx("change owner of", path)
}

/// `path` joined under `root`, for messages: `root` + `/etc/x`.
pub fn under(root: &Path, entry_path: &[u8]) -> PathBuf {
    let rel = entry_path.strip_prefix(b"/").unwrap_or(entry_path);
    root.join(bytes_path(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = read_dir(dir)
            .unwrap()
            .iter()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(read(&p).unwrap(), b"two");
        assert_eq!(names(d.path()), ["state.json"]);
    }

    #[test]
    fn a_failed_atomic_write_keeps_the_old_file_and_removes_the_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cache");
        write_atomic(&p, b"old").unwrap();
        let e = write_atomic_with(&p, |f| {
            f.write_all(b"half").ctx("write", &p)?;
            Err(crate::Error::Internal("the producer failed".into()))
        })
        .unwrap_err();
        assert!(e.to_string().contains("the producer failed"), "{e}");
        assert_eq!(read(&p).unwrap(), b"old");
        assert_eq!(names(d.path()), ["cache"]);
        // A directory that does not exist: the error names the temporary it could not make.
        let e = write_atomic(&d.path().join("no/such/file"), b"x").unwrap_err();
        assert!(e.to_string().starts_with("failed to create "), "{e}");
    }
}
