//! Whether a path is there, and what it is, without hiding why a check failed.
//! `Path::exists`, `is_file` and `is_dir` answer `false` for a path they could not look
//! at (EACCES on a parent, EIO, a symlink loop), so "absent" and "unreadable" read the
//! same and a caller goes on to recreate or skip what is there. These answer `false`
//! only for a path that is not there (ENOENT, or ENOTDIR: a parent is not a directory);
//! any other failure is an error that names the path. clippy.toml refuses the `Path`
//! ones.
#![allow(clippy::disallowed_methods)]

use crate::error::{Error, Result};
use std::io::ErrorKind;
use std::path::Path;

/// The path's metadata (following symlinks), `None` when nothing is there.
fn probe(path: &Path) -> Result<Option<std::fs::Metadata>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc_enotdir()) => {
            Ok(None)
        }
        Err(e) => Err(Error::io("look at", path, e)),
    }
}

/// ENOTDIR: a component of the path is not a directory, so the path is not there.
fn libc_enotdir() -> i32 {
    rustix::io::Errno::NOTDIR.raw_os_error()
}

/// Whether something is at `path` (following symlinks: a dangling one is not there).
pub fn exists(path: impl AsRef<Path>) -> Result<bool> {
    Ok(probe(path.as_ref())?.is_some())
}

/// Whether `path` is a regular file (following symlinks).
pub fn is_file(path: impl AsRef<Path>) -> Result<bool> {
    Ok(probe(path.as_ref())?.is_some_and(|m| m.is_file()))
}

/// Whether `path` is a directory (following symlinks).
pub fn is_dir(path: impl AsRef<Path>) -> Result<bool> {
    Ok(probe(path.as_ref())?.is_some_and(|m| m.is_dir()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn absent_is_false_and_unreadable_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        assert!(exists(&f).unwrap() && is_file(&f).unwrap() && !is_dir(&f).unwrap());
        assert!(is_dir(d.path()).unwrap());
        assert!(!exists(d.path().join("none")).unwrap());
        // A parent that is a file: not there, as `ls` says.
        assert!(!exists(f.join("below")).unwrap());
        std::os::unix::fs::symlink("nowhere", d.path().join("dangling")).unwrap();
        assert!(!exists(d.path().join("dangling")).unwrap());
        // A directory this process cannot search: an error naming the path (root can
        // search anything, so the check needs a process without CAP_DAC_OVERRIDE).
        let closed = d.path().join("closed");
        std::fs::create_dir(&closed).unwrap();
        std::fs::write(closed.join("in"), b"").unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o000)).unwrap();
        if rustix::process::geteuid().is_root() {
            // Root's answer is the truth; the error path is checked below by a loop.
            assert!(exists(closed.join("in")).unwrap());
        } else {
            let e = exists(closed.join("in")).unwrap_err().to_string();
            assert!(e.contains("closed/in"), "{e}");
        }
        let lp = d.path().join("loop");
        std::os::unix::fs::symlink("loop", &lp).unwrap();
        let e = exists(&lp).unwrap_err().to_string();
        assert!(e.contains("look at") && e.contains("loop"), "{e}");
        assert!(!Path::new(&lp).exists(), "std's answer hides the loop");
    }
}
