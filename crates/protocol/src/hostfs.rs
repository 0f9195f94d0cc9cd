//! Reading host files beneath the root: opened relative to directory handles from
//! imager's [`Beneath`] (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`), never through
//! a symlink found on the host. The content decoders ([`crate::encoding`]: local copies,
//! delta bases) and the agent (rsync signatures) read the host's files through here; the
//! agent's writes go through `agent::fsops`.

use imager_core::error::{Error as FsError, IoContext};
use imager_core::safe_dir::Beneath;
use rustix::fs::{Mode, OFlags};

/// A result whose error is imager's filesystem error, which names the path and the action.
pub type Result<T> = std::result::Result<T, FsError>;

/// Opens a host file beneath the root for reading, not following a symlink at any step.
pub fn open_file(b: &Beneath, path: &[u8]) -> Result<std::fs::File> {
    let (parent, name) = b.parent(path)?;
    let fd = rustix::fs::openat(
        &parent,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx("open", b.display(path))?;
    Ok(std::fs::File::from(fd))
}

/// Reads a host file beneath the root, not following a symlink at any step.
pub fn read_file(b: &Beneath, path: &[u8]) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut open_file(b, path)?, &mut v).ctx("read", b.display(path))?;
    Ok(v)
}
