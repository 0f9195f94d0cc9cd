//! The agent's own files on a host, in `ROOT/var/lib/syncer/` (local state, so no push
//! ever touches it): the image the host was last synced to and that image's manifest,
//! local-state globs and triggers; the hash cache; and, while a commit is in flight, the
//! journal and the target manifest it refers to, then the triggers still to run.

use super::fsops::{self, ensure_dir};
use imager::safe_dir::Beneath;
use imager::Hash;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

pub const DIR: &[u8] = b"/var/lib/syncer";
pub const IMAGE: &str = "image";
pub const PREVIOUS: &str = "image.previous";
pub const MANIFEST: &str = "image.manifest";
pub const LOCAL_STATE: &str = "local-state.txt";
pub const TRIGGERS: &str = "triggers.toml";
/// The recorded image's owned-prefix file (none: the built-in list).
pub const OWNED: &str = "owned.txt";
pub const HASH_CACHE: &str = "hash-cache";
pub const JOURNAL: &str = "journal";
pub const TARGET: &str = "target.manifest";
pub const TARGET_LOCAL_STATE: &str = "target.local-state.txt";
pub const TARGET_TRIGGERS: &str = "target.triggers.toml";
pub const TARGET_OWNED: &str = "target.owned.txt";
pub const PENDING_TRIGGERS: &str = "triggers.pending";

/// Made on the first write, so that a session that writes nothing (a refused
/// connection, `status` on a host never synced) leaves no trace.
pub struct StateDir {
    fd: std::sync::OnceLock<OwnedFd>,
    root: Beneath,
    shown: PathBuf,
}

impl StateDir {
    pub fn open(root: &std::path::Path) -> crate::Result<StateDir> {
        let b = Beneath::open(root)?;
        let fd = std::sync::OnceLock::new();
        match b.open_dir(DIR) {
            Ok(d) => {
                let _ = fd.set(d);
            }
            Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(StateDir {
            fd,
            shown: b.display(DIR),
            root: b,
        })
    }

    /// Makes the directory now if it does not exist yet.
    pub fn create(&self) -> crate::Result<()> {
        self.dir().map(|_| ())
    }

    fn dir(&self) -> crate::Result<&OwnedFd> {
        if let Some(d) = self.fd.get() {
            return Ok(d);
        }
        let d = ensure_dir(&self.root, DIR)?;
        Ok(self.fd.get_or_init(|| d))
    }

    fn shown(&self, name: &str) -> PathBuf {
        self.shown.join(name)
    }

    pub fn read(&self, name: &str) -> crate::Result<Option<Vec<u8>>> {
        match self.fd.get() {
            Some(d) => Ok(fsops::read_at(d, name, &self.shown(name))?),
            None => Ok(None),
        }
    }

    pub fn read_text(&self, name: &str) -> crate::Result<Option<String>> {
        match self.read(name)? {
            None => Ok(None),
            Some(b) => String::from_utf8(b).map(Some).map_err(|_| {
                crate::Error::Agent(format!("{} is not UTF-8", self.shown(name).display()))
            }),
        }
    }

    pub fn write(&self, name: &str, data: &[u8]) -> crate::Result<()> {
        Ok(fsops::write_atomic(
            self.dir()?,
            name,
            data,
            &self.shown(name),
        )?)
    }

    /// The same without flushing: for files that are only a shortcut (the hash cache).
    pub fn write_unsynced(&self, name: &str, data: &[u8]) -> crate::Result<()> {
        Ok(fsops::write_replace(
            self.dir()?,
            name,
            data,
            &self.shown(name),
            false,
        )?)
    }

    pub fn remove(&self, name: &str) -> crate::Result<()> {
        match self.fd.get() {
            Some(d) => Ok(fsops::remove_at(d, name, &self.shown(name))?),
            None => Ok(()),
        }
    }

    pub fn rename(&self, from: &str, to: &str) -> crate::Result<()> {
        use imager::error::IoContext;
        let d = self.dir()?;
        rustix::fs::renameat(d, from, d, to).ctx("rename into place", self.shown(to))?;
        rustix::fs::fsync(d)
            .ctx("flush directory", self.shown.clone())
            .map_err(Into::into)
    }

    /// The image the host was last synced to.
    pub fn image(&self) -> crate::Result<Option<Hash>> {
        self.id(IMAGE)
    }

    /// The image it ran before that.
    pub fn previous(&self) -> crate::Result<Option<Hash>> {
        self.id(PREVIOUS)
    }

    fn id(&self, name: &str) -> crate::Result<Option<Hash>> {
        Ok(self.read_text(name)?.and_then(|t| Hash::from_hex(t.trim())))
    }
}
