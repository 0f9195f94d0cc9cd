//! The on-disk store: content objects addressed by blake3, images by ID, and names with
//! history.
//!
//! ```text
//! STORE/
//!   objects/ab/cdef…   file content, raw, named by its blake3 (read-only files)
//!   images/<id>/manifest   the canonical manifest text; blake3(manifest) == <id>
//!   images/<id>/…      whatever else belongs to the image (build info, package list,
//!                      provenance.json and its DSSE envelope)
//!   images/<id>/signatures/<h>.msg, <h>.sig   signatures (crate::sign): a statement
//!                      and the SSH signature over it, <h> a digest of both
//!   refs/<name>        the image IDs the name has pointed at, oldest first, one a line
//!   debs/<sha256>.deb  the .deb cache of `imager build`
//!   build/             builds in progress (see `crate::build`)
//!   tmp/               staging; anything here is an unfinished write, removed on open
//!   lock               flock: shared by readers, exclusive by writers
//! ```
//! Writes are atomic: objects are staged in `tmp/`, flushed with one `syncfs`, then
//! renamed into place; an image directory is renamed into place only after all its
//! objects are; a ref is replaced by rename. A crash leaves at worst unreferenced objects
//! and files in `tmp/`, never a name pointing at something incomplete. Every read checks
//! the content against its name.
//!
//! Removal ([`manage`]) runs the same rules backwards: names first (a ref is rewritten or
//! unlinked before the image it named goes), then the image directory, renamed into
//! `tmp/` in one step and deleted there, then (by `gc` alone) the objects no remaining
//! image uses. A crash leaves at worst unreferenced objects and files in `tmp/`, never an
//! image missing objects or a name pointing at a missing image.

mod fsck;
mod lock;
mod manage;
mod txn;

pub use fsck::FsckReport;
pub use lock::on_lock_wait;
pub use manage::{RefChange, Swept};
pub use txn::Txn;

use crate::error::{Error, IoContext, Result};
use crate::fsx;
use crate::tree::{text, Hash, Tree};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// An open store (the layout is in the module comment), locked while open: shared for
/// reading, exclusive for writing.
pub struct Store {
    root: PathBuf,
    _lock: File,
    /// The lock held: what removes images and objects refuses to run without the
    /// exclusive one.
    access: Access,
    /// What this open created, parents first (empty if the store existed): what
    /// [`Store::discard_if_new`] removes.
    created: Vec<PathBuf>,
}

/// Whether a command only reads the store or also writes to it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// Shared lock: others may read at the same time; the store must already exist.
    Read,
    /// Exclusive lock: creates the store if it is missing and clears `tmp/` when opened.
    Write,
}

/// The canonical manifest of `tree`, if the store may keep it: one the syncer could not
/// carry (larger than [`crate::contract::MAX_MANIFEST`]) is refused here, before
/// anything is written, rather than by every push.
pub(crate) fn printed_image(tree: &Tree) -> Result<String> {
    let text = text::print(tree);
    crate::contract::check_manifest_len(text.len()).map_err(|reason| Error::InvalidTree {
        path: "/".into(),
        reason: format!("the image cannot be stored: {reason}"),
    })?;
    Ok(text)
}

impl Store {
    /// Opens (and on first write, creates) the store at `root`, taking its lock.
    pub fn open(root: &Path, access: Access) -> Result<Store> {
        let mut created = Vec::new();
        if access == Access::Write {
            // The missing ancestors of the store, outermost first.
            let mut missing: Vec<PathBuf> = Vec::new();
            for a in root.ancestors() {
                if a.as_os_str().is_empty() || fsx::exists(a)? {
                    break;
                }
                missing.push(a.to_path_buf());
            }
            missing.reverse();
            created.extend(missing);
            for sub in ["objects", "images", "refs", "tmp"] {
                let d = root.join(sub);
                if !fsx::exists(&d)? {
                    created.push(d.clone());
                }
                fsx::create_dir_all(&d)?;
            }
            if !fsx::exists(root.join("lock"))? {
                created.push(root.join("lock"));
            }
        } else if !fsx::is_dir(root.join("images"))? {
            return Err(Error::Store {
                store: root.to_path_buf(),
                reason: "no store here (import an image first, or pass --store)".into(),
            });
        }
        let lock_path = root.join("lock");
        let lock = fsx::open_with(
            std::fs::OpenOptions::new()
                .create(access == Access::Write)
                .truncate(false)
                .read(true)
                .write(access == Access::Write),
            &lock_path,
            "open lock",
        )?;
        lock::take(&lock, &lock_path, access)?;
        let store = Store {
            root: root.to_path_buf(),
            _lock: lock,
            access,
            created,
        };
        if access == Access::Write {
            store.clean_tmp()?;
        }
        Ok(store)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Undoes the creation of a store that this open made, for a command that failed
    /// before storing anything: a mistyped `--store` with a failed import leaves no
    /// store behind. Removes only what the open created, and only while it is empty (so
    /// a store that did get an image, or a directory someone else filled, stays).
    pub fn discard_if_new(self) {
        let holds_something = ["objects", "images", "refs"]
            .iter()
            .any(|sub| fsx::read_dir(self.root.join(sub)).map_or(true, |d| !d.is_empty()));
        if self.created.is_empty() || holds_something {
            return;
        }
        // Unfinished writes of this command only: we hold the exclusive lock.
        let _ = self.clean_tmp();
        for p in self.created.iter().rev() {
            if matches!(fsx::is_dir(p), Ok(true)) {
                if fsx::remove_dir(p).is_err() {
                    return; // not empty: something of the store is worth keeping
                }
            } else {
                let _ = fsx::remove_file(p);
            }
        }
    }

    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Store {
            store: self.root.clone(),
            reason: reason.into(),
        }
    }

    /// Removes what an interrupted writer left in `tmp/` (we hold the exclusive lock).
    fn clean_tmp(&self) -> Result<()> {
        let tmp = self.root.join("tmp");
        for e in fsx::read_dir(&tmp)? {
            let p = e.path();
            // The entry itself, not what a symlink there points at.
            if e.file_type().ctx("look at", &p)?.is_dir() {
                fsx::remove_dir_all(&p)?;
            } else {
                fsx::remove_file(&p)?;
            }
        }
        Ok(())
    }

    /// Where the object with hash `h` lives: `objects/ab/cdef…`, named by its hex.
    pub fn object_path(&self, h: &Hash) -> PathBuf {
        self.objects_dir().join(h.object_name())
    }

    /// The directory of the objects ([`Hash::object_name`] below it).
    pub fn objects_dir(&self) -> PathBuf {
        self.root.join("objects")
    }

    /// Whether the store has the object. One that cannot be looked at reads as absent:
    /// the caller then writes or reads it, and that call's error names the path.
    pub fn has_object(&self, h: &Hash) -> bool {
        matches!(fsx::is_file(self.object_path(h)), Ok(true))
    }

    /// Starts a write of new objects (see [`Txn`]).
    pub fn txn(&self) -> Txn<'_> {
        Txn::new(self)
    }

    /// An object's content, verified against its name.
    pub fn read_object(&self, h: &Hash) -> Result<Vec<u8>> {
        let p = self.object_path(h);
        let data = fsx::read(&p).map_err(|e| e.doing("read object"))?;
        if Hash::of(&data) != *h {
            return Err(self.err(format!(
                "object {h} is corrupt: its content hashes to {}",
                Hash::of(&data)
            )));
        }
        Ok(data)
    }

    /// A reader of an object that checks, when it reaches the end, that the content has
    /// the expected size and hash, and fails the read otherwise: whatever consumes it
    /// (an archive, a copy) fails instead of passing on corrupt bytes.
    pub fn object_reader(&self, h: &Hash, size: u64) -> Result<ObjectReader> {
        let p = self.object_path(h);
        let f = fsx::open(&p).map_err(|e| e.doing("open object"))?;
        Ok(ObjectReader {
            f,
            path: p,
            want: *h,
            size,
            seen: 0,
            hasher: blake3::Hasher::new(),
        })
    }

    fn image_dir(&self, id: &Hash) -> PathBuf {
        self.root.join("images").join(id.to_hex())
    }

    /// Whether the store has the image (as [`Store::has_object`], an image that cannot
    /// be looked at reads as absent, and reading it says why).
    pub fn has_image(&self, id: &Hash) -> bool {
        matches!(fsx::is_file(self.image_dir(id).join("manifest")), Ok(true))
    }

    /// The canonical text of an image, verified against its ID.
    pub fn image_text(&self, id: &Hash) -> Result<String> {
        let p = self.image_dir(id).join("manifest");
        let text = fsx::read_to_string(&p)?;
        if text::id_of(&text) != *id {
            return Err(self.err(format!(
                "image {id} is corrupt: its manifest hashes to {}",
                text::id_of(&text)
            )));
        }
        Ok(text)
    }

    /// Reads image `id` as a tree, its manifest checked against its id.
    pub fn read_image(&self, id: &Hash) -> Result<Tree> {
        text::parse(&self.image_text(id)?, &format!("image {id}"))
    }

    /// Reads a file stored with an image (`None` if the image has no such file).
    pub fn image_file(&self, id: &Hash, name: &str) -> Result<Option<Vec<u8>>> {
        let p = self.image_dir(id).join(name);
        fsx::read_if_exists(&p)
    }

    /// Adds a file to a stored image, or replaces it (atomically): what is signed or
    /// derived after the image was written (the provenance and its envelope).
    pub fn add_image_file(&self, id: &Hash, name: &str, data: &[u8]) -> Result<PathBuf> {
        if !self.has_image(id) {
            return Err(self.err(format!("no image {id}")));
        }
        let p = self.image_dir(id).join(name);
        fsx::write_atomic(&p, data)?;
        Ok(p)
    }

    /// Stores a signature of an image (the same signature twice is stored once), and
    /// returns the path of its `.sig` file.
    pub fn add_signature(&self, id: &Hash, s: &crate::sign::Signed) -> Result<PathBuf> {
        if !self.has_image(id) {
            return Err(self.err(format!("no image {id}")));
        }
        let dir = self.image_dir(id).join("signatures");
        fsx::create_dir_all(&dir)?;
        let mut h = blake3::Hasher::new();
        h.update(&s.statement);
        h.update(&s.signature);
        let stem = &h.finalize().to_hex()[..16];
        // The statement first: a signature is listed only once its .sig is there.
        fsx::write_atomic(&dir.join(format!("{stem}.msg")), &s.statement)?;
        let sig = dir.join(format!("{stem}.sig"));
        fsx::write_atomic(&sig, &s.signature)?;
        fsx::sync_dir(&dir)?;
        Ok(sig)
    }

    /// The signatures stored with an image, by file name (`origin` is the `.sig` path).
    pub fn signatures(&self, id: &Hash) -> Result<Vec<crate::sign::Signed>> {
        let dir = self.image_dir(id).join("signatures");
        let mut out = Vec::new();
        let Some(entries) = fsx::read_dir_if_exists(&dir)? else {
            return Ok(out);
        };
        let mut sigs: Vec<PathBuf> = entries
            .into_iter()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sig"))
            .collect();
        sigs.sort();
        for sig in sigs {
            let msg = sig.with_extension("msg");
            let Some(statement) = fsx::read_if_exists(&msg)? else {
                continue;
            };
            out.push(crate::sign::Signed {
                statement,
                signature: fsx::read(&sig)?,
                origin: sig.display().to_string(),
            });
        }
        Ok(out)
    }

    /// Records an image whose objects are all in the store. `extra` files are stored
    /// beside the manifest. Returns the image ID. An image whose manifest is larger than
    /// the syncer carries ([`crate::contract::MAX_MANIFEST`]) is refused.
    pub fn write_image(&self, tree: &Tree, extra: &[(&str, &[u8])]) -> Result<Hash> {
        let text = printed_image(tree)?;
        self.write_image_text(tree, &text, extra)
    }

    /// [`Store::write_image`] with the tree's manifest already printed (and checked by
    /// [`printed_image`]): an import checks before it commits its objects.
    pub(crate) fn write_image_text(
        &self,
        tree: &Tree,
        text: &str,
        extra: &[(&str, &[u8])],
    ) -> Result<Hash> {
        for (h, size) in tree.objects() {
            let p = self.object_path(&h);
            let m = fsx::metadata(&p).map_err(|e| e.doing("inspect object"))?;
            if m.len() != size {
                return Err(self.err(format!(
                    "object {h} has {} bytes, the image says {size}",
                    m.len()
                )));
            }
        }
        let id = text::id_of(text);
        let dir = self.image_dir(&id);
        if fsx::is_file(dir.join("manifest"))? {
            return Ok(id);
        }
        let tmp = self.root.join("tmp").join(format!("image-{}", id.to_hex()));
        fsx::create_dir_all(&tmp)?;
        write_synced(&tmp.join("manifest"), text.as_bytes())?;
        for (name, data) in extra {
            write_synced(&tmp.join(name), data)?;
        }
        fsx::sync_dir(&tmp)?;
        fsx::rename(&tmp, &dir)?;
        fsx::sync_dir(&self.root.join("images"))?;
        Ok(id)
    }

    /// All image IDs in the store.
    pub fn images(&self) -> Result<Vec<Hash>> {
        let d = self.root.join("images");
        let mut out = Vec::new();
        for e in fsx::read_dir(&d)? {
            if let Some(h) = e.file_name().to_str().and_then(Hash::from_hex) {
                out.push(h);
            }
        }
        out.sort();
        Ok(out)
    }

    fn check_ref_name(&self, name: &str) -> Result<()> {
        let ok = !name.is_empty()
            && name.len() <= 200
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "bad image name {name:?}: use letters, digits, `.`, `_` and `-` (not starting with `.`)"
            )))
        }
    }

    /// The IDs a name has pointed at, oldest first (empty if the name is unknown).
    pub fn ref_history(&self, name: &str) -> Result<Vec<Hash>> {
        self.check_ref_name(name)?;
        let p = self.root.join("refs").join(name);
        let Some(text) = fsx::read_to_string_if_exists(&p)? else {
            return Ok(Vec::new());
        };
        text.lines()
            .enumerate()
            .map(|(i, l)| {
                Hash::from_hex(l).ok_or_else(|| {
                    self.err(format!("refs/{name}:{}: not an image ID: {l:?}", i + 1))
                })
            })
            .collect()
    }

    /// The names whose current image is `id`, sorted. A ref that cannot be read is
    /// left out (`fsck` reports it): one damaged name must not break every command that
    /// shows an image's names.
    pub fn names_of(&self, id: &Hash) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for n in self.refs()? {
            if self.ref_history(&n).ok().and_then(|h| h.last().copied()) == Some(*id) {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// All names, sorted.
    pub fn refs(&self) -> Result<Vec<String>> {
        let d = self.root.join("refs");
        let mut out = Vec::new();
        for e in fsx::read_dir(&d)? {
            if let Some(n) = e.file_name().to_str() {
                out.push(n.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Points `name` at `id`, keeping the history (`name~1` is then the previous image).
    /// Pointing a name at the image it already has changes nothing.
    pub fn set_ref(&self, name: &str, id: &Hash) -> Result<()> {
        if !self.has_image(id) {
            return Err(self.err(format!("cannot name {id}: no such image")));
        }
        let mut hist = self.ref_history(name)?;
        if hist.last() == Some(id) {
            return Ok(());
        }
        hist.push(*id);
        self.write_ref(name, &hist)
    }

    /// Replaces the history of `name` (oldest first) by rename: readers see the old
    /// history or the new one, never a mix.
    fn write_ref(&self, name: &str, hist: &[Hash]) -> Result<()> {
        self.check_ref_name(name)?;
        let text: String = hist.iter().map(|h| format!("{h}\n")).collect();
        let tmp = self.root.join("tmp").join(format!("ref-{name}"));
        let refs = self.root.join("refs");
        fsx::write_atomic_via(&tmp, &refs.join(name), |f| {
            f.write_all(text.as_bytes()).ctx("write", &tmp)
        })
    }

    /// Resolves `name`, `name~N`, a full ID or an unambiguous ID prefix (8+ hex digits).
    pub fn resolve(&self, spec: &str) -> Result<Hash> {
        let not_found = |reason: String| Error::NotFound {
            spec: spec.to_string(),
            store: self.root.clone(),
            reason,
        };
        if let Some(h) = Hash::from_hex(spec) {
            return if self.has_image(&h) {
                Ok(h)
            } else {
                Err(not_found("no image with that ID".into()))
            };
        }
        let (name, back) = match spec.split_once('~') {
            Some((n, k)) => (
                n,
                k.parse::<usize>()
                    .map_err(|_| not_found(format!("{k:?} after ~ is not a number")))?,
            ),
            None => (spec, 0),
        };
        let hist = if self.check_ref_name(name).is_ok() {
            self.ref_history(name)?
        } else {
            Vec::new()
        };
        if !hist.is_empty() {
            return hist
                .len()
                .checked_sub(back + 1)
                .map(|i| hist[i])
                .ok_or_else(|| {
                    not_found(format!(
                        "{name} has only {} image(s) in its history",
                        hist.len()
                    ))
                });
        }
        if back == 0
            && spec.len() >= 8
            && spec
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            let matches: Vec<Hash> = self
                .images()?
                .into_iter()
                .filter(|h| h.to_hex().starts_with(spec))
                .collect();
            return match matches.as_slice() {
                [h] => Ok(*h),
                [] => Err(not_found("no name and no image ID starts so".into())),
                _ => Err(not_found(format!("{} image IDs start so", matches.len()))),
            };
        }
        // A short run of hex digits is most likely a prefix of an ID, not a name.
        let hexish = !spec.is_empty()
            && spec
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        Err(not_found(if back == 0 && hexish {
            format!(
                "no such name, and an ID prefix needs at least 8 hex digits ({} given)",
                spec.len()
            )
        } else {
            "no such name".into()
        }))
    }

    /// Verifies every object and image (see `fsck`).
    pub fn fsck(&self, progress: &dyn crate::progress::Progress) -> Result<FsckReport> {
        fsck::run(self, progress)
    }
}

/// Writes a file and flushes it to disk before returning.
fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = fsx::create(path)?;
    f.write_all(data).ctx("write", path)?;
    f.sync_all().ctx("flush", path)
}

/// See [`Store::object_reader`].
pub struct ObjectReader {
    f: File,
    path: PathBuf,
    want: Hash,
    size: u64,
    seen: u64,
    hasher: blake3::Hasher,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.f.read(buf)?;
        self.seen += n as u64;
        self.hasher.update(&buf[..n]);
        if self.seen > self.size || (n == 0 && self.seen != self.size) {
            return Err(std::io::Error::other(format!(
                "object {} ({}) has {} bytes, the image says {}",
                self.want,
                self.path.display(),
                self.seen,
                self.size
            )));
        }
        if n == 0 && Hash::from(self.hasher.finalize()) != self.want {
            return Err(std::io::Error::other(format!(
                "object {} ({}) is corrupt: its content hashes to {}",
                self.want,
                self.path.display(),
                Hash::from(self.hasher.finalize())
            )));
        }
        Ok(n)
    }
}
