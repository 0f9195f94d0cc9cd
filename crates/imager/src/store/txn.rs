//! A batch of new objects written atomically.
//!
//! Objects are written to `tmp/` as they come (from many threads), then one `syncfs`
//! makes them all durable before any is renamed to its final name. Flushing each file on
//! its own would cost one disk round trip per file, a few thousand for a root filesystem;
//! the store's promise (an object under its final name is complete) is the same.
//! A batch also keeps spill files in `tmp/` (content waiting to be normalised), removed
//! when it ends.

use super::Store;
use crate::error::{Error, IoContext, Result};
use crate::fsx;
use crate::tree::Hash;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A batch of new objects (see the module comment): staged by [`Txn::put_bytes`] and
/// [`Txn::put_reader`] from many threads, named only by [`Txn::commit`]; a batch dropped
/// without a commit removes what it staged.
pub struct Txn<'s> {
    store: &'s Store,
    staged: Mutex<Vec<(PathBuf, Hash)>>,
    known: Mutex<HashSet<Hash>>,
    /// Files of [`Txn::spill`], removed when the batch ends.
    spilled: Mutex<Vec<PathBuf>>,
    counter: AtomicU64,
    /// Bytes of content that were new to the store.
    pub new_bytes: AtomicU64,
}

impl<'s> Txn<'s> {
    pub(super) fn new(store: &'s Store) -> Txn<'s> {
        Txn {
            store,
            staged: Mutex::new(Vec::new()),
            known: Mutex::new(HashSet::new()),
            spilled: Mutex::new(Vec::new()),
            counter: AtomicU64::new(0),
            new_bytes: AtomicU64::new(0),
        }
    }

    fn tmp_path(&self, kind: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.store
            .root
            .join("tmp")
            .join(format!("{kind}-{}-{n}", std::process::id()))
    }

    /// True if the object is in the store or this batch already (and claims it if not,
    /// so two threads with the same content write it once).
    fn claim(&self, h: &Hash) -> bool {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.contains(h) {
            return true;
        }
        known.insert(*h);
        self.store.has_object(h)
    }

    /// Adds content held in memory; returns its hash.
    pub fn put_bytes(&self, data: &[u8]) -> Result<Hash> {
        let h = Hash::of(data);
        if self.claim(&h) {
            return Ok(h);
        }
        let tmp = self.tmp_path("obj");
        let mut f = fsx::create(&tmp)?;
        f.write_all(data).ctx("write", &tmp)?;
        drop(f);
        self.stage(tmp, h)?;
        self.new_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(h)
    }

    /// Adds content from a stream of exactly `size` bytes (larger than memory is fine);
    /// `what` names the source in errors. Returns the hash.
    pub fn put_reader(&self, r: impl Read, size: u64, what: &str) -> Result<Hash> {
        let tmp = self.tmp_path("obj");
        let mut hasher = blake3::Hasher::new();
        copy_exact(r, &tmp, size, what, Some(&mut hasher))?;
        let h = Hash::from(hasher.finalize());
        if self.claim(&h) {
            fsx::remove_file(&tmp)?;
            return Ok(h);
        }
        self.stage(tmp, h)?;
        self.new_bytes.fetch_add(size, Ordering::Relaxed);
        Ok(h)
    }

    /// Keeps a stream of exactly `size` bytes in a file of `tmp/` until the batch ends
    /// (committed or dropped), for content that must wait before it can be hashed and
    /// stored (an archive member normalisation may rewrite). Returns the file's path.
    pub fn spill(&self, r: impl Read, size: u64, what: &str) -> Result<PathBuf> {
        let tmp = self.tmp_path("spill");
        // Recorded first, so that a failed copy is removed with the rest.
        self.spilled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tmp.clone());
        copy_exact(r, &tmp, size, what, None)?;
        Ok(tmp)
    }

    fn stage(&self, tmp: PathBuf, h: Hash) -> Result<()> {
        fsx::set_mode(&tmp, 0o444)?;
        self.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((tmp, h));
        Ok(())
    }

    /// Makes every staged object durable, then gives each its final name.
    pub fn commit(self) -> Result<usize> {
        let staged = std::mem::take(&mut *self.staged.lock().unwrap_or_else(|e| e.into_inner()));
        if staged.is_empty() {
            return Ok(0);
        }
        let tmp_dir = self.store.root.join("tmp");
        let d = fsx::open(&tmp_dir)?;
        fsx::syncfs(&d, &tmp_dir)?;
        let mut dirs = HashSet::new();
        for (tmp, h) in &staged {
            let dst = self.store.object_path(h);
            if let Some(parent) = dst.parent() {
                if dirs.insert(parent.to_path_buf()) {
                    fsx::create_dir_all(parent)?;
                }
            }
            fsx::rename(tmp, &dst)?;
        }
        fsx::syncfs(&d, &tmp_dir)?;
        Ok(staged.len())
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        // An abandoned batch leaves nothing behind (a crash leaves tmp/, cleaned on open).
        let staged = self
            .staged
            .get_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        for (tmp, _) in staged {
            let _ = fsx::remove_file(&tmp);
        }
        let spilled = self
            .spilled
            .get_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        for tmp in spilled {
            let _ = fsx::remove_file(&tmp);
        }
    }
}

/// Copies exactly `size` bytes of `r` into a new file `tmp` (removed again on failure),
/// feeding `hasher` if given; `what` names the source in errors.
fn copy_exact(
    mut r: impl Read,
    tmp: &std::path::Path,
    size: u64,
    what: &str,
    mut hasher: Option<&mut blake3::Hasher>,
) -> Result<()> {
    let result = (|| {
        let mut f = fsx::create(tmp)?;
        let mut buf = vec![0u8; 256 * 1024];
        let (mut n, mut hole) = (0u64, false);
        loop {
            let k = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read content of", what, e)),
            };
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&buf[..k]);
            }
            hole = fsx::write_sparse(&mut f, &buf[..k]).ctx("write", tmp)?;
            n += k as u64;
        }
        if hole {
            fsx::end_sparse(&f, n).ctx("write", tmp)?;
        }
        if n != size {
            return Err(Error::io(
                "read content of",
                what,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("expected {size} bytes, got {n}"),
                ),
            ));
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fsx::remove_file(tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    /// Zeros are stored as holes, and a content ending in them still has its length
    /// (only then is it set: a file ending in data has it already).
    #[test]
    fn content_copied_in_keeps_its_holes_and_its_length() {
        let t = tempfile::tempdir().expect("temp dir");
        for (name, tail) in [("ends-in-data", &b"tail"[..]), ("ends-in-zeros", &b""[..])] {
            let mut content = b"head".to_vec();
            content.resize(4 + (1 << 20), 0);
            content.extend_from_slice(tail);
            let tmp = t.path().join(name);
            let mut h = blake3::Hasher::new();
            let n = content.len() as u64;
            super::copy_exact(&content[..], &tmp, n, name, Some(&mut h)).expect("copy");
            assert_eq!(crate::fsx::read(&tmp).expect("read"), content, "{name}");
            let m = crate::fsx::symlink_metadata(&tmp).expect("stat");
            assert_eq!(m.len(), n, "{name}");
            assert!(m.blocks() * 512 < 1 << 19, "{name}: the zeros were stored");
            assert_eq!(h.finalize(), blake3::hash(&content));
        }
    }
}
