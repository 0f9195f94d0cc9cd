//! The agent's own files on a host, in `ROOT/var/lib/syncer/` (local state, so no push
//! ever touches it): the image the host was last synced to and that image's manifest,
//! local-state globs and triggers; the hash cache; and, while a commit is in flight, the
//! journal and the target manifest it refers to, then the triggers still to run; on a
//! host with a trust policy, the anti-rollback record.

use super::fsops::{self, ensure_dir};
use imager_core::safe_dir::Beneath;
use imager_core::Hash;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// The directory of these files, relative to the root.
pub const DIR: &[u8] = b"/var/lib/syncer";
/// The ID of the image the host runs, in hex (written last by a commit).
pub const IMAGE: &str = "image";
/// The ID of the image the host records as its previous one, which a rollback puts back
/// (absent: none).
pub const PREVIOUS: &str = "image.previous";
/// The manifest of the image the host runs: it must hash to `image`.
pub const MANIFEST: &str = "image.manifest";
/// The globs a scan never compares for the recorded image (its local state and its
/// triggers' outputs), one per line.
pub const LOCAL_STATE: &str = "local-state.txt";
/// The recorded image's triggers.toml (empty when it has none).
pub const TRIGGERS: &str = "triggers.toml";
/// The recorded image's owned-prefix file (none: the built-in list).
pub const OWNED: &str = "owned.txt";
/// The scan's cache of file hashes by path and inode metadata ([`crate::scan::HashCache`]).
pub const HASH_CACHE: &str = "hash-cache";
/// The files the last commit wrote, with their contents, until a scan takes them into
/// the hash cache ([`crate::written::record_written`]).
pub const HASH_CACHE_COMMITTED: &str = "hash-cache.committed";
/// The journal of a commit in flight ([`crate::commit::Journal`]): its presence is the
/// commit point.
pub const JOURNAL: &str = "journal";
/// The manifest of the image a commit in flight brings: becomes `image.manifest`.
pub const TARGET: &str = "target.manifest";
/// The globs never compared, of the commit in flight: become `local-state.txt`.
pub const TARGET_LOCAL_STATE: &str = "target.local-state.txt";
/// The triggers of the commit in flight: become `triggers.toml`.
pub const TARGET_TRIGGERS: &str = "target.triggers.toml";
/// The owned-prefix file of the commit in flight (empty: the built-in list): becomes
/// `owned.txt`.
pub const TARGET_OWNED: &str = "target.owned.txt";
/// The paths that finished commits changed and whose triggers have not run yet (escaped,
/// one per line, sorted): removed once they have.
pub const PENDING_TRIGGERS: &str = "triggers.pending";
/// Anti-rollback: the newest signed statement accepted per name, and the image the host
/// ran before its last commit ([`imager_trust::freshness::Newest`]); replaced by
/// `target.accepted` when a commit of an image the host's policy accepted finishes.
pub const ACCEPTED: &str = "accepted";
/// The anti-rollback record the commit in flight brings: becomes `accepted`.
pub const TARGET_ACCEPTED: &str = "target.accepted";

/// Made on the first write, so that a session that writes nothing (a refused
/// connection, `status` on a host never synced) leaves no trace.
pub struct StateDir {
    fd: std::sync::OnceLock<OwnedFd>,
    root: Beneath,
    shown: PathBuf,
}

impl StateDir {
    /// The state directory of the host root `root`, opened if it exists (made on the first
    /// write otherwise).
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

    /// Whether the directory exists (was there when opened, or made since).
    pub fn exists(&self) -> bool {
        self.fd.get().is_some()
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

    /// The file's path as messages show it.
    pub fn shown(&self, name: &str) -> PathBuf {
        self.shown.join(name)
    }

    /// The file's content (`None` when it, or the directory, does not exist).
    pub fn read(&self, name: &str) -> crate::Result<Option<Vec<u8>>> {
        match self.fd.get() {
            Some(d) => Ok(fsops::read_at(d, name, &self.shown(name))?),
            None => Ok(None),
        }
    }

    /// The file's content as text (`None` when it does not exist); not UTF-8 is an error.
    pub fn read_text(&self, name: &str) -> crate::Result<Option<String>> {
        match self.read(name)? {
            None => Ok(None),
            Some(b) => String::from_utf8(b).map(Some).map_err(|_| {
                crate::Error::Agent(format!("{} is not UTF-8", self.shown(name).display()))
            }),
        }
    }

    /// Replaces the file with `data` durably: a new file, flushed, then renamed over.
    pub fn write(&self, name: &str, data: &[u8]) -> crate::Result<()> {
        Ok(fsops::write_atomic(
            self.dir()?,
            name,
            data,
            &self.shown(name),
        )?)
    }

    /// The same without flushing: for files that are only a shortcut (the hash cache),
    /// or that a [`StateDir::sync`] after them puts on disk.
    pub fn write_unsynced(&self, name: &str, data: &[u8]) -> crate::Result<()> {
        Ok(fsops::write_replace(
            self.dir()?,
            name,
            data,
            &self.shown(name),
            false,
        )?)
    }

    /// Flushes the whole filesystem the directory is on (`syncfs`): files written with
    /// [`StateDir::write_unsynced`] and names removed or renamed before it are on disk
    /// once it returns, in one flush instead of two for each.
    pub fn sync(&self) -> crate::Result<()> {
        Ok(imager_core::fsx::syncfs(self.dir()?, &self.shown)?)
    }

    /// Removes the file; one that does not exist is not an error.
    pub fn remove(&self, name: &str) -> crate::Result<()> {
        match self.fd.get() {
            Some(d) => Ok(fsops::remove_at(d, name, &self.shown(name))?),
            None => Ok(()),
        }
    }

    /// Renames `from` over `to`, then flushes the directory so the rename survives a crash.
    pub fn rename(&self, from: &str, to: &str) -> crate::Result<()> {
        use imager_core::error::IoContext;
        let d = self.dir()?;
        rustix::fs::renameat(d, from, d, to).ctx("rename into place", self.shown(to))?;
        rustix::fs::fsync(d)
            .ctx("flush directory", self.shown.clone())
            .map_err(Into::into)
    }

    /// The image the host records, checked: its manifest must hash to its ID. A record
    /// that does not check out (bit rot, an admin's edit) is not trusted: the host then
    /// counts as recording no image (a push recognises its tree or sends the image
    /// whole, and records it again), and `why` says what is wrong.
    pub fn record(&self) -> crate::Result<Record> {
        let Some(text) = self.read_text(IMAGE)? else {
            return Ok(Record::None);
        };
        let shown = |n: &str| self.shown(n).display().to_string();
        let Some(id) = Hash::from_hex(text.trim()) else {
            return Ok(Record::Damaged {
                why: format!("{} does not hold an image ID", shown(IMAGE)),
            });
        };
        Ok(match self.read_text(MANIFEST) {
            Ok(Some(m)) if imager_core::tree::text::id_of(&m) == id => {
                Record::Valid { id, manifest: m }
            }
            Ok(Some(_)) => Record::Damaged {
                why: format!(
                    "{} does not hash to the recorded image {id}",
                    shown(MANIFEST)
                ),
            },
            Ok(None) => Record::Damaged {
                why: format!(
                    "{} is missing (the recorded image is {id})",
                    shown(MANIFEST)
                ),
            },
            Err(e) => Record::Damaged {
                why: format!("the recorded manifest cannot be read: {e}"),
            },
        })
    }

    /// The image the host was last synced to, as its ID file says (unchecked: see
    /// [`StateDir::record`]).
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

/// What a host records of the image it runs ([`StateDir::record`]).
pub enum Record {
    /// Never synced.
    None,
    /// A record that checks out: its manifest hashes to its ID.
    Valid {
        /// The image's ID.
        id: Hash,
        /// The image's manifest text.
        manifest: String,
    },
    /// A record that does not check out, and why.
    Damaged {
        /// What is wrong with it, for the message.
        why: String,
    },
}

impl Record {
    /// The recorded image, if the record checks out.
    pub fn id(&self) -> Option<Hash> {
        match self {
            Record::Valid { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// The recorded manifest, if the record checks out.
    pub fn manifest(&self) -> Option<&str> {
        match self {
            Record::Valid { manifest, .. } => Some(manifest),
            _ => None,
        }
    }

    /// Why the record is not trusted, if it is not.
    pub fn damage(&self) -> Option<String> {
        match self {
            Record::Damaged { why } => Some(format!(
                "the host's record of its image is damaged: {why}; it counts as recording \
                 no image until a push records one again"
            )),
            _ => None,
        }
    }
}
