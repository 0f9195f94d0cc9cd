//! Filesystem calls with the path and the action in every error, and the few Linux
//! calls std lacks (xattrs, device numbers, `O_NOFOLLOW` opens, fixed timestamps). All of
//! the library's filesystem access goes through here or through [`crate::safe_dir`]:
//! clippy's `disallowed-methods` (clippy.toml) refuses `std::fs` calls anywhere else, so
//! that every error names its path and every write that must be atomic is.
//!
//! It is also the one place that decides how an output path the user named is written
//! ([`output_target`], [`output_dir`]): a file is replaced atomically, a device or fifo
//! is written into, and anything else (a directory, a socket, a dangling symlink) is
//! refused, never replaced.
#![allow(clippy::disallowed_methods)]

use crate::error::{IoContext, Result};
use rustix::fs::{Gid, Timespec, Timestamps, Uid};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A whole file's bytes.
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

/// Opens a file for reading, following symlinks.
pub fn open(path: impl AsRef<Path>) -> Result<File> {
    let path = path.as_ref();
    File::open(path).ctx("open", path)
}

/// Opens a file for writing, creating it or truncating what is there (not atomic: see
/// [`write_atomic`]).
pub fn create(path: impl AsRef<Path>) -> Result<File> {
    let path = path.as_ref();
    File::create(path).ctx("create", path)
}

/// Opens with `opts`; `action` says what for ("open lock").
pub fn open_with(opts: &std::fs::OpenOptions, path: &Path, action: &'static str) -> Result<File> {
    opts.open(path).ctx(action, path)
}

/// Creates one directory; its parent must exist and the path must not.
pub fn create_dir(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    std::fs::create_dir(path).ctx("create directory", path)
}

/// Removes an empty directory.
pub fn remove_dir(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    std::fs::remove_dir(path).ctx("remove", path)
}

/// Removes a directory and everything under it (symlinks are removed, not followed).
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

/// The target a symlink holds, as written (not resolved).
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

/// Sets the permission bits (`0o644`), following a final symlink.
pub fn set_mode(path: impl AsRef<Path>, mode: u32) -> Result<()> {
    let path = path.as_ref();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).ctx("set mode of", path)
}

/// The absolute path with every symlink, `.` and `..` resolved; the path must exist.
pub fn canonicalize(path: impl AsRef<Path>) -> Result<PathBuf> {
    let path = path.as_ref();
    std::fs::canonicalize(path).ctx("resolve", path)
}

/// A whole file as text; an error if it is not UTF-8.
pub fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).ctx("read", path)
}

/// Creates a directory and any missing parents; one already there is not an error.
pub fn create_dir_all(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).ctx("create directory", path)
}

/// Moves `from` to `to`, replacing what is there (atomic on one filesystem); the error
/// names `to`.
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).ctx("rename into place", to)
}

/// Removes a file or symlink (not a directory).
pub fn remove_file(path: &Path) -> Result<()> {
    std::fs::remove_file(path).ctx("remove", path)
}

/// What an output path the user named is now, and so how [`write_atomic`] writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    /// Nothing is there, a regular file, or a symlink to one: the new file is made beside
    /// this path and renamed over it. For a symlink this is the file it resolves to, so
    /// the link stays a link and the file it names gets the bytes.
    Replace(PathBuf),
    /// A character device or a fifo, directly or through a symlink (`/dev/null`,
    /// `/dev/stdout`, a pipe someone reads): there is no file to replace, so the bytes
    /// are written into it where it is. `what` is "a character device" or "a fifo".
    Stream {
        /// What is there, for messages: "a character device" or "a fifo".
        what: &'static str,
    },
}

/// Decides how an output path is written (see [`OutputTarget`]); anything else that is there
/// (a directory, a socket, a block device, a symlink to one of those or to nothing) is
/// refused with [`crate::Error::NotReplaced`], because a rename would silently put a
/// file where the user had something else: `export --tar /dev/null` used to replace the
/// machine's `/dev/null` with a regular file.
pub fn output_target(path: &Path) -> Result<OutputTarget> {
    use std::os::unix::fs::FileTypeExt;
    let Some((ft, link)) = inspect_output(path)? else {
        return Ok(OutputTarget::Replace(path.to_path_buf()));
    };
    if ft.is_file() {
        return Ok(OutputTarget::Replace(if link {
            canonicalize(path)?
        } else {
            path.to_path_buf()
        }));
    }
    if ft.is_char_device() {
        return Ok(OutputTarget::Stream {
            what: "a character device",
        });
    }
    if ft.is_fifo() {
        return Ok(OutputTarget::Stream { what: "a fifo" });
    }
    Err(not_replaced(path, ft, link, ""))
}

/// [`output_target`] for an output that is a directory (an OCI layout, an exported
/// tree): the directory to write. `path` may be nothing yet or a directory (whether it
/// must be empty is the caller's rule); a symlink to a directory gives the directory it
/// resolves to, so the output goes where the link points and the link stays. Anything
/// else is refused.
pub fn output_dir(path: &Path) -> Result<PathBuf> {
    match inspect_output(path)? {
        None => Ok(path.to_path_buf()),
        Some((ft, false)) if ft.is_dir() => Ok(path.to_path_buf()),
        Some((ft, true)) if ft.is_dir() => canonicalize(path),
        Some((ft, link)) => Err(not_replaced(path, ft, link, " (a directory is expected)")),
    }
}

/// The type of what `path` names, following symlinks, and whether it was reached
/// through one; `None` when nothing is there. A symlink to nothing is refused here:
/// writing through it would create a file somewhere the user may not expect, and
/// replacing it would lose the link.
fn inspect_output(path: &Path) -> Result<Option<(std::fs::FileType, bool)>> {
    let own = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        r => r.ctx("inspect", path)?,
    };
    if !own.file_type().is_symlink() {
        return Ok(Some((own.file_type(), false)));
    }
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some((m.file_type(), true))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(crate::Error::NotReplaced {
            path: path.to_path_buf(),
            what: format!(
                "a symlink to {}, which does not exist",
                read_link(path)?.display()
            ),
        }),
        Err(e) => Err(crate::Error::io("inspect", path, e)),
    }
}

fn not_replaced(path: &Path, ft: std::fs::FileType, link: bool, why: &str) -> crate::Error {
    use std::os::unix::fs::FileTypeExt;
    let what = if ft.is_dir() {
        "a directory"
    } else if ft.is_file() {
        "a regular file"
    } else if ft.is_block_device() {
        "a block device (write to a file, then copy that with dd)"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_fifo() {
        "a fifo"
    } else {
        "neither a file nor a directory"
    };
    let through = if link { "a symlink to " } else { "" };
    crate::Error::NotReplaced {
        path: path.to_path_buf(),
        what: format!("{through}{what}{why}"),
    }
}

/// Opens a character device or fifo that [`output_target`] found, to write into it in
/// place: without creating or truncating (neither means anything for a device or a
/// pipe) and without making a terminal the controlling one. Opening a fifo waits for its
/// reader, as any writer of a fifo does. What was opened is checked again, so a regular
/// file put there since is not written over from its start.
pub fn open_stream(path: &Path) -> Result<File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(path)
        .ctx("open for writing", path)?;
    let ft = f.metadata().ctx("inspect", path)?.file_type();
    if ft.is_char_device() || ft.is_fifo() {
        Ok(f)
    } else {
        Err(not_replaced(
            path,
            ft,
            false,
            " (it changed while being opened)",
        ))
    }
}

/// Whether `path` is the file standard output is (`/dev/stdout`, or the fifo or device
/// it was sent to), so that a command writing its output there prints its summary
/// elsewhere instead of into the output.
pub fn is_stdout(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let stdout = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .and_then(|f| f.metadata());
    match (stdout, std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Writes `bytes` to an output path so that no reader and no crash ever sees half of them
/// where that can be had, and never replaces what is not a file (see [`output_target`]).
///
/// A path that is nothing yet or a regular file (or a symlink to one: the file it
/// resolves to) is replaced atomically: the bytes go to a temporary beside it
/// (`.NAME.tmp-PID`, on the same filesystem, so the rename is atomic), the temporary is
/// flushed (`fsync`), renamed over the file, and then the file's directory is flushed.
/// So at every moment, crash or not, the file holds either what it held before (or
/// nothing) or all of the new bytes; once this returns `Ok`, the new bytes and the new
/// name survive a power loss (on a filesystem that honours `fsync`). On an error the
/// temporary is removed and the file is as it was. Two writers of the same path in one
/// process would share the temporary: callers serialise.
///
/// A character device or fifo gets the bytes written into it in place (there is nothing
/// to rename over, and a reader of a pipe sees bytes as they come anyway); a directory,
/// socket, block device or dangling symlink is refused, untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes).ctx("write", path))
}

/// [`write_atomic`] for content produced as a stream: `fill` writes it to the temporary
/// (or to the device or fifo itself).
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    match output_target(path)? {
        OutputTarget::Stream { .. } => fill(&mut open_stream(path)?),
        OutputTarget::Replace(file) => write_atomic_via(&temp_beside(&file), &file, fill),
    }
}

/// `.NAME.tmp-PID` beside `path`: on its filesystem, so renaming it over `path` is atomic.
fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_dir(path).join(format!(".{name}.tmp-{}", std::process::id()))
}

/// The atomic replacement of [`write_atomic`] through a temporary the caller chose (a
/// store's `tmp/`, which it cleans after a crash); `tmp` must be on `path`'s filesystem.
/// For paths the program owns: it replaces whatever is at `path`, unlike
/// [`write_atomic`], which first looks at what an output path is.
pub fn write_atomic_via(
    tmp: &Path,
    path: &Path,
    fill: impl FnOnce(&mut File) -> Result<()>,
) -> Result<()> {
    replace_via(tmp, path, fill, true)
}

/// Replaces `path` with what `fill` writes, through a temporary beside it, without
/// flushing anything: readers see the old file or the whole new one, but after a power
/// cut the new one may be empty or torn. Only for files that check themselves when read
/// (a checksummed cache entry) and are made again when they fail: it saves a flush of
/// every byte written, which a push's first install waits for.
pub fn replace_unsynced_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> Result<()>,
) -> Result<()> {
    replace_via(&temp_beside(path), path, fill, false)
}

fn replace_via(
    tmp: &Path,
    path: &Path,
    fill: impl FnOnce(&mut File) -> Result<()>,
    durable: bool,
) -> Result<()> {
    let r = (|| {
        let mut f = File::create(tmp).ctx("create", tmp)?;
        fill(&mut f)?;
        if durable {
            f.sync_all().ctx("flush", tmp)?;
        }
        rename(tmp, path)?;
        if durable {
            sync_dir(parent_dir(path))?;
        }
        Ok(())
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

/// The first `N` bytes of an open file (`.1` says how many there were, for a shorter
/// file), read without moving its offset: normalisation decides from them, before it
/// reads the rest, whether a rule may rewrite the file.
pub fn read_head<const N: usize>(f: &File, path: &Path) -> Result<([u8; N], usize)> {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; N];
    let mut n = 0;
    while n < N {
        match f.read_at(&mut head[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(crate::Error::io("read", path, e)),
        }
    }
    Ok((head, n))
}

/// Reads the rest of an open file into memory (all of it, if nothing was read yet).
pub fn read_all(f: &mut File, size_hint: u64, path: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size_hint.min(1 << 30) as usize);
    f.read_to_end(&mut buf).ctx("read", path)?;
    Ok(buf)
}

/// Writes `buf` at the file's position, leaving a hole where a 64 KiB piece of it is all
/// zeros: a sparse file (a disk image, a database's preallocated space) stays sparse
/// when copied. A hole at the end only exists once [`end_sparse`] sets the length.
/// Returns whether `buf` ended in a hole (`false` for an empty `buf`): only a file whose
/// last write did needs [`end_sparse`] (a `ftruncate` per staged file otherwise).
pub fn write_sparse(f: &mut File, buf: &[u8]) -> std::io::Result<bool> {
    use std::io::{Seek, SeekFrom, Write};
    const PIECE: usize = 64 << 10;
    let mut hole = false;
    for piece in buf.chunks(PIECE) {
        hole = piece.len() == PIECE && piece.iter().all(|&b| b == 0);
        if hole {
            f.seek(SeekFrom::Current(PIECE as i64))?;
        } else {
            f.write_all(piece)?;
        }
    }
    Ok(hole)
}

/// Ends a file written by [`write_sparse`] at `len` bytes (a trailing hole included).
pub fn end_sparse(f: &File, len: u64) -> std::io::Result<()> {
    f.set_len(len)
}

/// An unnamed scratch file on the filesystem of directory `dir` (`O_TMPFILE`): it never
/// shows in `dir`, leaves `dir`'s mtime alone and is freed when closed, by a crash too.
/// Where `dir`'s filesystem cannot make one (NFS, some FUSE filesystems, a read-only
/// mount), a file of the system's temporary directory, unlinked as soon as it is open.
pub fn scratch_file(dir: &Path) -> Result<File> {
    use rustix::fs::{Mode, OFlags};
    use std::os::unix::fs::OpenOptionsExt;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    if let Ok(fd) = rustix::fs::open(dir, flags, Mode::RUSR | Mode::WUSR) {
        return Ok(File::from(fd));
    }
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(".imager-scratch-{}-{n}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .ctx("create", &path)?;
    remove_file(&path)?;
    Ok(f)
}

/// A path's raw bytes, as the tree and the manifest hold paths (not necessarily UTF-8).
pub fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

/// Raw bytes as a path: the inverse of [`path_bytes`].
pub fn bytes_path(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

/// Extended attributes of `path` (not following a final symlink), sorted by name.
pub fn read_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    xattrs_with(
        |buf| rustix::fs::llistxattr(path, buf),
        |name, buf| rustix::fs::lgetxattr(path, name, buf),
        path,
    )
}

/// [`read_xattrs`] of an open file (no path looked up again); `path` is for errors.
pub fn read_xattrs_fd(fd: impl AsFd, path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let fd = fd.as_fd();
    xattrs_with(
        |buf| rustix::fs::flistxattr(fd, buf),
        |name, buf| rustix::fs::fgetxattr(fd, name, buf),
        path,
    )
}

/// Every extended attribute, sorted by name, through `list` (the names) and `get` (a
/// value).
fn xattrs_with(
    list: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
    mut get: impl FnMut(&[u8], &mut [u8]) -> rustix::io::Result<usize>,
    path: &Path,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = xattr_names(list, path)?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let mut buf = vec![0u8; 256];
        let value = loop {
            match get(name.as_slice(), &mut buf[..]) {
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

/// Sets an extended attribute on an open file, creating or replacing it; `path` is for
/// the error only.
pub fn set_xattr_fd(fd: impl AsFd, name: &[u8], value: &[u8], path: &Path) -> Result<()> {
    rustix::fs::fsetxattr(fd, name, value, rustix::fs::XattrFlags::empty())
        .ctx("set extended attribute on", path)
}

/// Access and modification times both set to `mtime` (seconds since the epoch, whole
/// seconds), for `futimens`/`utimensat`.
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

/// Sets a file's modification time to now, its access time left as it is: a cache marks
/// an entry used (access times are not kept on most mounts, `relatime`).
pub fn touch(path: &Path) -> Result<()> {
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &now_mtime(),
        rustix::fs::AtFlags::empty(),
    )
    .ctx("set the modification time of", path)
}

/// The modification time set to now, the access time left.
fn now_mtime() -> Timestamps {
    let at = |nsec| Timespec {
        tv_sec: 0,
        tv_nsec: nsec,
    };
    Timestamps {
        last_access: at(rustix::fs::UTIME_OMIT),
        last_modification: at(rustix::fs::UTIME_NOW),
    }
}

/// Reads a file whole, asks `valid` whether what it holds is good (always) and, if so,
/// marks it used (its modification time set to now, as [`touch`] does) unless that mark
/// is already within `fresh` of now: a cache read by every push marks its entries once in a while, through
/// the handle it read with, not with a path lookup and an inode write per read. Failing
/// to mark is not an error (a read-only cache).
pub fn read_and_mark_used(
    path: &Path,
    fresh: std::time::Duration,
    valid: impl FnOnce(&[u8]) -> bool,
) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut f = File::open(path).ctx("read", path)?;
    let m = f.metadata().ctx("read", path)?;
    let mut data = Vec::new();
    // As std::fs::read: a size that cannot be held is an error, not an abort.
    data.try_reserve_exact(usize::try_from(m.len()).unwrap_or(usize::MAX))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::OutOfMemory, e.to_string()))
        .ctx("read", path)?;
    f.read_to_end(&mut data).ctx("read", path)?;
    let stale = m
        .modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age >= fresh);
    if valid(&data) && stale {
        let _ = rustix::fs::futimens(&f, &now_mtime());
    }
    Ok(data)
}

/// Flushes the whole filesystem `fd` is on (`syncfs`): everything written or renamed
/// on it before is on disk once it returns. `path` names it in the error.
pub fn syncfs(fd: impl AsFd, path: &Path) -> Result<()> {
    rustix::fs::syncfs(fd).ctx("flush the filesystem of", path)
}

/// Sets an open file's owner and group to numeric IDs; `path` is for the error only.
pub fn fchown(fd: impl AsFd, uid: u32, gid: u32, path: &Path) -> Result<()> {
    rustix::fs::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .ctx("change owner of", path)
}

/// `path` joined under `root`, for messages: `root` + `/etc/x`.
pub fn under(root: &Path, entry_path: &[u8]) -> PathBuf {
    let rel = entry_path.strip_prefix(b"/").unwrap_or(entry_path);
    root.join(bytes_path(rel))
}

mod probe;
pub use probe::{exists, is_dir, is_file};

#[cfg(test)]
mod tests;
