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
//!
//! Copying a whole tree costs seconds (one file creation per file), so a build gives its
//! tree back when it is done with it: it becomes the entry's `scratch`, and the next
//! build takes it, brings it back to the entry's state with `rsync --delete` (which
//! rewrites only what the last build's overlays, hooks and scrub changed) and hashes it:
//! only a tree whose ID is the entry's record is used, else a fresh copy is taken.

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
/// [`DEFAULT_LIMIT`] as the command line writes it (a unit test holds them equal).
pub const DEFAULT_LIMIT_TEXT: &str = "4G";
/// The format of an entry and of the key's inputs; a change starts a new cache.
const FORMAT: &str = "imager install cache 1";
const ENTRY: &str = "entry.json";
/// The tree the last build of an entry's package set finished with (see the module's
/// comment).
const SCRATCH: &str = "scratch";
/// A hit from the entry's scratch tree, the last build's, brought back to the entry.
pub const SYNCED: &str = "synced";
/// A hit from a full copy of the entry.
pub const COPIED: &str = "copied";

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
    /// The cache key (none when the cache is off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Hash>,
    /// How a hit's tree was made: [`SYNCED`] or [`COPIED`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored: Option<&'static str>,
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
    /// `root` is the cached tree, verified, made as the value says ([`SYNCED`] or
    /// [`COPIED`]).
    Hit(&'static str),
    /// No entry for the key.
    Miss,
    /// The entry was damaged (why): it is removed, and `root` does not exist.
    Damaged(String),
}

/// Brings `root`, a tree an earlier build started from the entry at `entry_dir`, back to
/// the entry's state: only what differs in size or mtime (or is missing, or is left
/// over) is written. Never crosses into another filesystem, so nothing mounted inside
/// the tree is touched. The caller verifies the result by its ID.
fn sync_scratch(entry_dir: &Path, root: &Path) -> Result<()> {
    let mut from = entry_dir.join("root").into_os_string();
    from.push("/");
    let mut to = root.as_os_str().to_owned();
    to.push("/");
    let out = Command::new("rsync")
        .args(["-aHAXx", "--numeric-ids", "--delete", "--no-inc-recursive"])
        .arg(from)
        .arg(to)
        .output()
        .map_err(|e| Error::io("run", "rsync", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Build(format!(
            "rsync {} into {}: {} ({})",
            entry_dir.display(),
            root.display(),
            String::from_utf8_lossy(&out.stderr).trim(),
            out.status
        )))
    }
}

/// Takes the entry's scratch tree as `root` and brings it to the entry's state;
/// `Ok(true)` when `root` is now exactly the recorded tree. Anything else (no scratch, a
/// failed sync, another ID) leaves `root` absent, for a full copy.
fn take_scratch(entry_dir: &Path, root: &Path, record: &str) -> Result<bool> {
    let scratch = entry_dir.join(SCRATCH);
    // Renamed, not shared: a build that runs at the same time finds none and copies.
    if !fsx::exists(&scratch)? || fsx::rename(&scratch, root).is_err() {
        return Ok(false);
    }
    let same = sync_scratch(entry_dir, root)
        .and_then(|()| tree_id(root))
        .is_ok_and(|(id, _)| id.to_hex() == record);
    if !same {
        fsx::remove_dir_all(root)?;
    }
    Ok(same)
}

/// Gives a finished build's tree, started from the entry for `key`, back to that entry
/// as its scratch tree for the next build. Leaves `root` where it is when the entry is
/// gone or already has one (another build's); the build's work directory then goes with
/// it.
pub fn keep_scratch(store: &Store, key: &Hash, root: &Path) -> Result<()> {
    let entry_dir = dir(store).join(key.to_hex());
    let scratch = entry_dir.join(SCRATCH);
    if fsx::exists(entry_dir.join(ENTRY))? && !fsx::exists(&scratch)? {
        // A race with another build's rename only fails this one.
        let _ = fsx::rename(root, &scratch);
    }
    Ok(())
}

/// Makes `root` (absent) a copy of the entry for `key`, verified against its record:
/// the entry's scratch tree brought up to date when there is one, else a full copy.
pub fn restore(store: &Store, key: &Hash, root: &Path) -> Result<Restored> {
    let entry_dir = dir(store).join(key.to_hex());
    if !fsx::exists(&entry_dir)? {
        return Ok(Restored::Miss);
    }
    let found = read_entry(&entry_dir.join(ENTRY)).and_then(|mut e| {
        let (id, how) = if take_scratch(&entry_dir, root, &e.tree)? {
            (e.tree.clone(), SYNCED)
        } else {
            let (id, _) = copy_and_hash(&entry_dir.join("root"), root)?;
            (id.to_hex(), COPIED)
        };
        if id != e.tree {
            return Err(Error::Build(format!(
                "its tree is now {}, it was {} when cached",
                id.get(..12).unwrap_or(&id),
                e.tree.get(..12).unwrap_or(&e.tree)
            )));
        }
        e.last_used = now();
        let text = serde_json::to_vec_pretty(&e).map_err(|e| Error::Internal(e.to_string()))?;
        // Only the last use changed: not flushed (a crash may lose it, or leave a record
        // that does not parse, which only makes the entry go first or be installed again).
        let path = entry_dir.join(ENTRY);
        fsx::replace_unsynced_with(&path, |f| {
            std::io::Write::write_all(f, &text).map_err(|e| Error::io("write", &path, e))
        })?;
        Ok(how)
    });
    match found {
        Ok(how) => Ok(Restored::Hit(how)),
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
        // An entry without a readable record is no use: it goes first. A scratch tree
        // holds about as much as the entry's.
        let (used, mut bytes) =
            read_entry(&path.join(ENTRY)).map_or((0, 0), |e| (e.last_used, e.bytes));
        if fsx::exists(path.join(SCRATCH))? {
            bytes *= 2;
        }
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

    #[test]
    fn the_default_limit_is_written_once_in_each_form() {
        assert_eq!(
            crate::units::parse_bytes(DEFAULT_LIMIT_TEXT),
            Some(DEFAULT_LIMIT)
        );
    }

    fn tree(dir: &Path, content: &str) {
        std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
        std::fs::write(dir.join("usr/bin/tool"), content).unwrap();
        std::os::unix::fs::symlink("usr/bin", dir.join("bin")).unwrap();
    }

    fn key_of(n: u8) -> Hash {
        Hash([n; 32])
    }

    /// How `restore` made `out` from entry `n`, or why it did not.
    fn restored(store: &Store, n: u8, out: &Path) -> &'static str {
        match restore(store, &key_of(n), out).unwrap() {
            Restored::Hit(how) => how,
            Restored::Miss => "miss",
            Restored::Damaged(_) => "damaged",
        }
    }

    #[test]
    fn a_copy_is_verified_and_a_damaged_entry_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("store"), Access::Write).unwrap();
        let installed = d.path().join("installed");
        tree(&installed, "v1");
        save(&store, &key_of(1), &installed, DEFAULT_LIMIT).unwrap();
        let out = d.path().join("out");
        assert_eq!(restored(&store, 2, &out), "miss");
        assert_eq!(restored(&store, 1, &out), COPIED);
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

    /// A build's tree given back is brought to the entry's state, whatever the build did
    /// to it; one that rsync's size-and-mtime check cannot see through is caught by its
    /// ID and replaced by a full copy.
    #[test]
    fn a_scratch_tree_is_brought_back_to_the_entry_or_replaced() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("store"), Access::Write).unwrap();
        let installed = d.path().join("installed");
        tree(&installed, "v1");
        std::fs::create_dir_all(installed.join("etc")).unwrap();
        std::fs::write(installed.join("etc/motd"), "hello").unwrap();
        save(&store, &key_of(1), &installed, DEFAULT_LIMIT).unwrap();
        let entry = store.root().join(DIR).join(key_of(1).to_hex());
        let out = d.path().join("out");
        let scratch = entry.join(SCRATCH);

        // What overlays, hooks and the scrub do: write, add, remove, chmod.
        assert_eq!(restored(&store, 1, &out), COPIED);
        std::fs::write(out.join("usr/bin/tool"), "v2 longer").unwrap();
        std::fs::write(out.join("etc/added"), "x").unwrap();
        std::fs::remove_file(out.join("bin")).unwrap();
        fsx::set_mode(out.join("etc/motd"), 0o600).unwrap();
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let usr = ino(&out.join("usr"));
        keep_scratch(&store, &key_of(1), &out).unwrap();
        assert!(!out.exists() && scratch.is_dir());
        assert_eq!(restored(&store, 1, &out), SYNCED);
        assert!(!scratch.exists(), "the scratch tree is taken, not shared");
        assert_eq!(
            tree_id(&out).unwrap(),
            tree_id(&entry.join("root")).unwrap()
        );
        assert_eq!(std::fs::read(out.join("usr/bin/tool")).unwrap(), b"v1");
        assert!(out.join("bin").is_symlink() && !out.join("etc/added").exists());
        assert_eq!(ino(&out.join("usr")), usr, "synced in place, not copied");

        // Same size, mtime put back: rsync skips it, the ID does not.
        let tool = out.join("usr/bin/tool");
        let mtime = std::fs::metadata(&tool).unwrap().modified().unwrap();
        std::fs::write(&tool, "v9").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&tool)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        keep_scratch(&store, &key_of(1), &out).unwrap();
        assert_eq!(
            restored(&store, 1, &out),
            COPIED,
            "the ID differs: a full copy"
        );
        assert_eq!(std::fs::read(&tool).unwrap(), b"v1");
        assert_eq!(
            tree_id(&out).unwrap(),
            tree_id(&entry.join("root")).unwrap()
        );

        // Only one scratch tree: a second build's tree is left to its work directory.
        let other = d.path().join("other");
        assert_eq!(restored(&store, 1, &other), COPIED);
        keep_scratch(&store, &key_of(1), &out).unwrap();
        keep_scratch(&store, &key_of(1), &other).unwrap();
        assert!(!out.exists() && other.exists() && scratch.is_dir());
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
