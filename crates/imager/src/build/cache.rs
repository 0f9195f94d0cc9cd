//! The install cache: the tree mmdebstrap installed from a lock, kept in the store
//! (`build-cache/<key>/root`) so that a build whose package stage did not change starts
//! from a copy of it and only reapplies overlays, final hooks and the scrub.
//!
//! The key covers everything that stage depends on: the locked .debs (by sha256), the
//! epoch, mmdebstrap's options (variant, architecture, strip rules, the hooks of
//! mmdebstrap's phases), the versions of mmdebstrap, apt and dpkg, and imager's own. An
//! entry records the ID of its tree as it was installed (contents, modes, owners,
//! xattrs, mtimes); each time a copy is taken out, the entry is hashed again and compared
//! with it, so a damaged entry is found, removed and installed again, never built on.
//! Entries beyond the size limit go least recently used first; `imager gc --build-cache`
//! removes them all.

use super::lock::Lock;
use crate::error::{Error, Result};
use crate::fsx;
use crate::store::Store;
use crate::tree::scan::Excludes;
use crate::tree::Hash;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The cache's directory in the store.
pub const DIR: &str = "build-cache";
/// What a build keeps at most unless told otherwise: a few package sets of a usual size.
pub const DEFAULT_LIMIT: u64 = 4_000_000_000;
/// The format of an entry and of the key's inputs; a change starts a new cache.
const FORMAT: &str = "imager install cache 1";
const ENTRY: &str = "entry.json";

/// How a build uses the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Start from an entry when there is one; keep a new one after installing.
    ReadWrite {
        /// Bytes the cache may hold after the new entry is in.
        limit: u64,
    },
    /// Install from scratch, and replace the entry with what was installed
    /// (`imager build --no-cache`).
    Refresh {
        /// As for `ReadWrite`.
        limit: u64,
    },
    /// Neither read nor write (`imager rebuild`: it proves a build from scratch).
    Off,
}

/// Where a build's installed tree came from, for its report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// `hit` (a copy of the cached tree), `miss` (installed, then cached), `refresh`
    /// (installed although cached, cache replaced) or `off`.
    pub cache: &'static str,
    /// The cache key, in hex (none when the cache is off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What went wrong with the cache when it did: a damaged entry removed, or an entry
    /// that could not be kept. The build itself went on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What an entry's `entry.json` holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    format: String,
    /// The ID of the tree under `root/` as it was installed.
    tree: String,
    /// Bytes of file content under `root/`.
    bytes: u64,
    created: u64,
    last_used: u64,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The first line a tool prints for `--version`, or why there is none.
fn tool_version(tool: &str) -> String {
    match Command::new(tool).arg("--version").output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        Err(e) => format!("{tool}: {e}"),
    }
}

/// The key of the install that `mmdebstrap_args` would make from `lk`'s .debs.
pub fn key(lk: &Lock, mmdebstrap_args: &[String]) -> Hash {
    let mut h = blake3::Hasher::new();
    let mut line = |s: &str| {
        h.update(s.as_bytes());
        h.update(b"\n");
    };
    line(FORMAT);
    line(&format!("imager {}", env!("CARGO_PKG_VERSION")));
    for tool in ["mmdebstrap", "apt-get", "dpkg"] {
        line(&tool_version(tool));
    }
    line(&format!("epoch {}", lk.epoch));
    for a in mmdebstrap_args {
        line(&format!("arg {}", a.replace('\n', "\\n")));
    }
    for p in &lk.packages {
        line(&format!(
            "deb {} {} {} {}",
            p.name, p.version, p.arch, p.sha256
        ));
    }
    Hash(*h.finalize().as_bytes())
}

fn dir(store: &Store) -> PathBuf {
    store.root().join(DIR)
}

/// The ID of the tree at `root`, exactly as it is (no normalisation).
fn tree_id(root: &Path) -> Result<(Hash, u64)> {
    let (id, tree, _) =
        crate::ingest::hash_dir(root, None, &Excludes::default(), &crate::progress::Quiet)?;
    Ok((id, tree.stats().bytes))
}

/// `cp -a`, sharing blocks (reflink) where the filesystem can: owners, modes, xattrs,
/// hard links and mtimes come along.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let st = Command::new("cp")
        .args(["-a", "--reflink=auto", "--no-target-directory"])
        .arg(from)
        .arg(to)
        .status()
        .map_err(|e| Error::io("run", "cp", e))?;
    if st.success() {
        Ok(())
    } else {
        Err(Error::Build(format!(
            "cannot copy {} to {} (cp {st})",
            from.display(),
            to.display()
        )))
    }
}

/// Copies `from` to `to` and hashes `from` at the same time (the copy is mostly the
/// kernel's work, the hash blake3's on the other cores): `from` is not written while
/// this runs, and cp fails loudly on any error, so the hash is also the copy's.
fn copy_and_hash(from: &Path, to: &Path) -> Result<(Hash, u64)> {
    std::thread::scope(|s| {
        let hashing = s.spawn(|| tree_id(from));
        let copied = copy_tree(from, to);
        let hashed = hashing
            .join()
            .map_err(|_| Error::Internal("hashing the install cache's tree panicked".into()))?;
        copied.and(hashed)
    })
}

fn read_entry(path: &Path) -> Result<Entry> {
    let text = fsx::read(path)?;
    let e: Entry = serde_json::from_slice(&text).map_err(|e| {
        Error::Build(format!(
            "{}: not an install cache entry: {e}",
            path.display()
        ))
    })?;
    if e.format != FORMAT {
        return Err(Error::Build(format!(
            "{}: format {:?}, not {FORMAT:?}",
            path.display(),
            e.format
        )));
    }
    Ok(e)
}

/// What [`restore`] found.
pub enum Restored {
    /// `root` is a verified copy of the cached tree.
    Hit,
    /// No entry for the key.
    Miss,
    /// The entry was damaged (why): it is removed, and `root` does not exist.
    Damaged(String),
}

/// Makes `root` (absent) a copy of the entry for `key`, verified against its record.
pub fn restore(store: &Store, key: &Hash, root: &Path) -> Result<Restored> {
    let entry_dir = dir(store).join(key.to_hex());
    if !fsx::exists(&entry_dir)? {
        return Ok(Restored::Miss);
    }
    let found = read_entry(&entry_dir.join(ENTRY)).and_then(|mut e| {
        let (id, _) = copy_and_hash(&entry_dir.join("root"), root)?;
        if id.to_hex() != e.tree {
            return Err(Error::Build(format!(
                "its tree is now {}, it was {} when cached",
                id.short(),
                e.tree.get(..12).unwrap_or(&e.tree)
            )));
        }
        e.last_used = now();
        let text = serde_json::to_vec_pretty(&e).map_err(|e| Error::Internal(e.to_string()))?;
        fsx::write_atomic(&entry_dir.join(ENTRY), &text)
    });
    match found {
        Ok(()) => Ok(Restored::Hit),
        Err(e) => {
            let why = format!(
                "install cache entry {} is damaged ({e}): removed, installing again",
                entry_dir.display()
            );
            if fsx::exists(root)? {
                fsx::remove_dir_all(root)?;
            }
            discard(&entry_dir)?;
            Ok(Restored::Damaged(why))
        }
    }
}

/// Removes an entry: renamed out of the way first, so that a crash half-way leaves a
/// leftover (swept by the next save) rather than an entry with half a tree.
fn discard(entry_dir: &Path) -> Result<()> {
    let gone = entry_dir.with_file_name(format!(".old-{}", super::unique("entry")));
    fsx::rename(entry_dir, &gone)?;
    fsx::remove_dir_all(&gone)
}

/// Keeps a copy of the installed tree at `root` as the entry for `key` (replacing one
/// there), then trims the cache to `limit` bytes, oldest use first.
pub fn save(store: &Store, key: &Hash, root: &Path, limit: u64) -> Result<()> {
    let cache = dir(store);
    fsx::create_dir_all(&cache)?;
    let new = cache.join(format!(".new-{}", super::unique("entry")));
    fsx::create_dir_all(&new)?;
    let made = (|| {
        let (id, bytes) = copy_and_hash(root, &new.join("root"))?;
        let t = now();
        let e = Entry {
            format: FORMAT.into(),
            tree: id.to_hex(),
            bytes,
            created: t,
            last_used: t,
        };
        let text = serde_json::to_vec_pretty(&e).map_err(|e| Error::Internal(e.to_string()))?;
        fsx::write(new.join(ENTRY), text)?;
        let at = cache.join(key.to_hex());
        if fsx::exists(&at)? {
            discard(&at)?;
        }
        fsx::rename(&new, &at)
    })();
    if made.is_err() && fsx::exists(&new)? {
        fsx::remove_dir_all(&new)?;
    }
    made?;
    trim(store, limit, Some(key), false).map(|_| ())
}

/// What [`trim`] removed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Trimmed {
    /// Entries removed (leftovers of interrupted saves included).
    pub removed: usize,
    /// Their bytes of file content.
    pub removed_bytes: u64,
    /// Entries kept.
    pub kept: usize,
    /// Their bytes.
    pub kept_bytes: u64,
}

/// Removes leftovers of interrupted saves, and entries, least recently used first, until
/// the rest hold at most `limit` bytes; `keep` stays whatever its size. A limit of 0
/// empties the cache. A dry run counts what would go and removes nothing.
pub fn trim(store: &Store, limit: u64, keep: Option<&Hash>, dry_run: bool) -> Result<Trimmed> {
    let mut t = Trimmed::default();
    let Some(list) = fsx::read_dir_if_exists(dir(store))? else {
        return Ok(t);
    };
    let mut entries = Vec::new();
    for d in list {
        let path = d.path();
        let name = d.file_name().to_string_lossy().into_owned();
        if name.starts_with(".new-") || name.starts_with(".old-") {
            if !dry_run {
                fsx::remove_dir_all(&path)?;
            }
            t.removed += 1;
            continue;
        }
        if Hash::from_hex(&name).is_none() {
            continue; // not the cache's
        }
        // An entry without a readable record is no use: it goes first.
        let (used, bytes) =
            read_entry(&path.join(ENTRY)).map_or((0, 0), |e| (e.last_used, e.bytes));
        entries.push((used, bytes, name, path));
    }
    // Newest first: what is kept is counted from the front.
    entries.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.2.cmp(&b.2)));
    let keep = keep.map(|k| k.to_hex());
    for (_, bytes, name, path) in entries {
        let pinned = keep.as_deref() == Some(name.as_str());
        if pinned || (bytes > 0 && t.kept_bytes + bytes <= limit) {
            t.kept += 1;
            t.kept_bytes += bytes;
        } else {
            if !dry_run {
                discard(&path)?;
            }
            t.removed += 1;
            t.removed_bytes += bytes;
        }
    }
    Ok(t)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)] // tests set up files directly
mod tests {
    use super::*;
    use crate::store::Access;

    fn tree(dir: &Path, content: &str) {
        std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
        std::fs::write(dir.join("usr/bin/tool"), content).unwrap();
        std::os::unix::fs::symlink("usr/bin", dir.join("bin")).unwrap();
    }

    fn key_of(n: u8) -> Hash {
        Hash([n; 32])
    }

    #[test]
    fn a_copy_is_verified_and_a_damaged_entry_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("store"), Access::Write).unwrap();
        let installed = d.path().join("installed");
        tree(&installed, "v1");
        save(&store, &key_of(1), &installed, DEFAULT_LIMIT).unwrap();
        let out = d.path().join("out");
        assert!(matches!(
            restore(&store, &key_of(2), &out).unwrap(),
            Restored::Miss
        ));
        assert!(matches!(
            restore(&store, &key_of(1), &out).unwrap(),
            Restored::Hit
        ));
        assert_eq!(std::fs::read(out.join("usr/bin/tool")).unwrap(), b"v1");
        assert!(out.join("bin").is_symlink());
        std::fs::remove_dir_all(&out).unwrap();

        // A mode changed in the cache is damage as much as content is.
        let entry = store.root().join(DIR).join(key_of(1).to_hex());
        fsx::set_mode(entry.join("root/usr/bin/tool"), 0o600).unwrap();
        match restore(&store, &key_of(1), &out).unwrap() {
            Restored::Damaged(why) => assert!(why.contains("damaged"), "{why}"),
            _ => panic!("damage not found"),
        }
        assert!(!out.exists() && !entry.exists());
    }

    #[test]
    fn the_limit_keeps_the_most_recently_used_entries() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("store"), Access::Write).unwrap();
        for n in 1..=3u8 {
            let t = d.path().join(format!("t{n}"));
            tree(&t, &"x".repeat(100));
            save(&store, &key_of(n), &t, DEFAULT_LIMIT).unwrap();
        }
        // Entry 1 used last: its record says so.
        let e1 = store.root().join(DIR).join(key_of(1).to_hex()).join(ENTRY);
        let mut e = read_entry(&e1).unwrap();
        e.last_used += 10;
        fsx::write(&e1, serde_json::to_vec(&e).unwrap()).unwrap();
        // A leftover of an interrupted save goes too.
        fsx::create_dir_all(&store.root().join(DIR).join(".new-x/root")).unwrap();
        let dry = trim(&store, 250, None, true).unwrap();
        assert_eq!((dry.removed, dry.kept), (2, 2));
        assert!(store.root().join(DIR).join(".new-x").exists());
        let t = trim(&store, 250, None, false).unwrap();
        assert_eq!((t.removed, t.kept, t.kept_bytes), (2, 2, 200));
        let left: Vec<String> = fsx::read_dir(store.root().join(DIR))
            .unwrap()
            .into_iter()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.contains(&key_of(1).to_hex()), "{left:?}");
        assert_eq!(trim(&store, 0, None, false).unwrap().kept, 0);
    }
}
