//! The store's side of listing and removing images: the facts `imager list` shows about
//! an image (its names, when it was stored), and the steps `imager rm` and `imager gc`
//! are made of (forget names, remove an image, sweep objects), each safe to interrupt
//! (the order is in the store's module comment). Which images may go is decided above
//! the store, in `crate::manage`: only the build knows what its records refer to.

use super::{Access, Store};
use crate::error::Result;
use crate::fsx;
use crate::tree::Hash;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;

/// What a removal did to one name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefChange {
    /// The name.
    pub name: String,
    /// True when the name itself went: the image it pointed at was removed, and a name
    /// never points at a missing image (nor silently back at an older one).
    pub removed: bool,
    /// History entries (`name~N`) dropped because their images were removed.
    pub dropped: usize,
}

/// Objects a sweep removed (or, on a dry run, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Swept {
    /// Object files.
    pub objects: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// For the crash tests: with `IMAGER_TEST_STOP_AT=PHASE:N` (`rm:N`, the Nth image
/// renamed into `tmp/` and not yet deleted; `sweep:N`, after the Nth object deleted) the
/// process stops itself with SIGSTOP there, so a test can `kill -9` it at an exact point
/// whatever the machine's speed (the agent's `SYNCER_TEST_STOP_AT`, for the store).
fn test_stop_point(phase: &str) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static AT: std::sync::OnceLock<Option<(String, usize)>> = std::sync::OnceLock::new();
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    let at = AT.get_or_init(|| {
        let v = std::env::var("IMAGER_TEST_STOP_AT").ok()?;
        let (p, n) = v.split_once(':')?;
        Some((p.to_string(), n.parse().ok()?))
    });
    if let Some((p, k)) = at {
        if p == phase && SEEN.fetch_add(1, Ordering::Relaxed) + 1 == *k {
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::STOP,
            );
        }
    }
}

impl Store {
    /// Removing needs the exclusive lock: a reader (an export, a push) or a writer (an
    /// import that found an object already stored and counts on it) must not see it go.
    fn require_write(&self, what: &str) -> Result<()> {
        if self.access == Access::Write {
            Ok(())
        } else {
            Err(self.err(format!(
                "{what} needs the store opened for writing (its exclusive lock)"
            )))
        }
    }

    /// Every image that has a name, with its names: `name` where the name points at it
    /// now, `name~N` where it did N images ago; by name, then newest first. A ref that
    /// cannot be read names nothing here (`fsck` reports it).
    pub fn names_by_image(&self) -> Result<HashMap<Hash, Vec<String>>> {
        let mut out: HashMap<Hash, Vec<String>> = HashMap::new();
        for r in self.refs()? {
            let Ok(hist) = self.ref_history(&r) else {
                continue;
            };
            for (back, h) in hist.iter().rev().enumerate() {
                out.entry(*h).or_default().push(if back == 0 {
                    r.clone()
                } else {
                    format!("{r}~{back}")
                });
            }
        }
        Ok(out)
    }

    /// When the image was stored, in seconds since the epoch: the mtime of its
    /// manifest, which is written once, when the image is first stored, and never
    /// changed (signing or adding provenance touches the directory, not the manifest).
    /// The store keeps no time of its own.
    pub fn stored_at(&self, id: &Hash) -> Result<i64> {
        Ok(fsx::metadata(self.image_dir(id).join("manifest"))?.mtime())
    }

    /// Drops the removed images `gone` from every name's history, rewriting each ref by
    /// rename. A name whose current image is in `gone` is removed: pointing it back at
    /// an older image would quietly change what it deploys. Called before the images go,
    /// so that a crash leaves names pointing only at images still there. With `dry_run`,
    /// only says what it would change.
    pub fn forget(&self, gone: &HashSet<Hash>, dry_run: bool) -> Result<Vec<RefChange>> {
        if !dry_run {
            self.require_write("forgetting images")?;
        }
        if gone.is_empty() {
            // Nothing to forget: a damaged ref elsewhere is fsck's to report, not a
            // reason to stop.
            return Ok(Vec::new());
        }
        let refs = self.root.join("refs");
        let mut changes = Vec::new();
        for name in self.refs()? {
            // A ref that cannot be read might name an image in `gone`: stop rather than
            // leave it dangling.
            let hist = self.ref_history(&name)?;
            let kept: Vec<Hash> = hist.iter().filter(|h| !gone.contains(h)).copied().collect();
            if kept.len() == hist.len() {
                continue;
            }
            let removed = hist.last().is_some_and(|h| gone.contains(h));
            if removed && !dry_run {
                fsx::remove_file(&refs.join(&name))?;
                fsx::sync_dir(&refs)?;
            } else if !dry_run {
                self.write_ref(&name, &kept)?;
            }
            changes.push(RefChange {
                name,
                removed,
                dropped: hist.len() - kept.len() - usize::from(removed),
            });
        }
        Ok(changes)
    }

    /// Removes an image's record (its manifest and files; its objects stay for a sweep):
    /// its directory is renamed into `tmp/` in one step, so the image is there whole or
    /// not at all, then deleted (what a crash leaves of it, the next writer's open
    /// clears). The caller has dropped it from every name first ([`Store::forget`]).
    pub fn remove_image(&self, id: &Hash) -> Result<()> {
        self.require_write("removing an image")?;
        let dir = self.image_dir(id);
        let images = self.root.join("images");
        let tmp = self.root.join("tmp").join(format!("rm-{}", id.to_hex()));
        fsx::rename(&dir, &tmp)?;
        fsx::sync_dir(&images)?;
        test_stop_point("rm");
        fsx::remove_dir_all(&tmp)
    }

    /// Removes every object whose hash is not in `live` (with `dry_run`, only counts
    /// them). Files under `objects/` whose names are not hashes are left for `fsck` to
    /// report: they are not ours to judge.
    pub fn sweep_objects(&self, live: &HashSet<Hash>, dry_run: bool) -> Result<Swept> {
        if !dry_run {
            self.require_write("removing objects")?;
        }
        let mut swept = Swept::default();
        for p in super::fsck::object_files(self)? {
            let Some(h) = object_hash(&p) else {
                continue;
            };
            if live.contains(&h) {
                continue;
            }
            swept.bytes += fsx::symlink_metadata(&p)?.len();
            swept.objects += 1;
            if !dry_run {
                fsx::remove_file(&p)?;
                test_stop_point("sweep");
            }
        }
        Ok(swept)
    }

    /// Every object the images in `images` use, read from their manifests (each checked
    /// against its ID: a sweep must not trust a damaged manifest's list).
    pub fn objects_of(&self, images: &[Hash]) -> Result<HashSet<Hash>> {
        let mut live = HashSet::new();
        for id in images {
            let tree = self
                .read_image(id)
                .map_err(|e| self.err(format!("cannot tell what image {id} uses: {e}")))?;
            live.extend(tree.objects().into_iter().map(|(h, _)| h));
        }
        Ok(live)
    }

    /// The bytes of an image's distinct objects (each counted once however many files
    /// share it), as its manifest gives them.
    pub fn image_bytes(&self, id: &Hash) -> Result<u64> {
        Ok(self.read_image(id)?.objects().iter().map(|(_, n)| n).sum())
    }

    /// Whether the image carries a signature ([`Store::signatures`] finds one).
    pub fn is_signed(&self, id: &Hash) -> Result<bool> {
        Ok(!self.signatures(id)?.is_empty())
    }
}

/// The hash an object file's path names (`objects/ab/cdef…`), if it names one.
pub(super) fn object_hash(p: &std::path::Path) -> Option<Hash> {
    let fan = p.parent()?.file_name()?.to_str()?;
    let rest = p.file_name()?.to_str()?;
    Hash::from_hex(&format!("{fan}{rest}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::tree::{Entry, Tree};

    /// A stored image of empty directories: `/` and `dirs`.
    fn image(store: &Store, dirs: &[&str]) -> Hash {
        let mut entries = vec![Entry::dir(b"/", 0o755, 0)];
        entries.extend(dirs.iter().map(|d| Entry::dir(d.as_bytes(), 0o755, 0)));
        store
            .write_image(&Tree::new(entries).unwrap(), &[])
            .unwrap()
    }

    #[test]
    fn forget_trims_histories_and_removes_a_name_whose_current_image_goes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s"), Access::Write).unwrap();
        let (i1, i2, i3) = (
            image(&store, &[]),
            image(&store, &["/a"]),
            image(&store, &["/b"]),
        );
        for id in [i1, i2, i3] {
            store.set_ref("web", &id).unwrap();
        }
        store.set_ref("db", &i1).unwrap();
        store.set_ref("db", &i2).unwrap();

        let changes = store.forget(&HashSet::from([i1]), false).unwrap();
        let dropped = |name: &str| RefChange {
            name: name.into(),
            removed: false,
            dropped: 1,
        };
        assert_eq!(changes, vec![dropped("db"), dropped("web")]);
        assert_eq!(store.ref_history("web").unwrap(), vec![i2, i3]);

        let gone = HashSet::from([i3]);
        let would = store.forget(&gone, true).unwrap();
        assert_eq!(
            store.ref_history("web").unwrap(),
            vec![i2, i3],
            "a dry run writes nothing"
        );
        assert_eq!(store.forget(&gone, false).unwrap(), would);
        assert!(would[0].removed && would[0].dropped == 0);
        assert_eq!(store.refs().unwrap(), vec!["db".to_string()]);
    }

    #[test]
    fn removing_needs_the_exclusive_lock() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        let id = image(&Store::open(&root, Access::Write).unwrap(), &[]);
        let store = Store::open(&root, Access::Read).unwrap();
        let e = store.remove_image(&id).unwrap_err().to_string();
        assert!(e.contains("exclusive lock"), "{e}");
        assert!(store.forget(&HashSet::from([id]), false).is_err());
        assert!(store.sweep_objects(&HashSet::new(), false).is_err());
        assert_eq!(
            store.sweep_objects(&HashSet::new(), true).unwrap(),
            Swept::default()
        );
        assert!(store.has_image(&id));
    }
}
