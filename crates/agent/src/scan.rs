//! What the host has: one walk of the root (never into another filesystem, never into
//! local-state paths or the syncer's own directories), then blake3 of every file in
//! parallel, except those the hash cache already knows.
//!
//! The cache is keyed on (path, size, mtime, ctime, inode): any write to a file moves its
//! ctime, so a hit means the content is what was hashed. What the last commit wrote is
//! taken as it left it ([`crate::written`]), so a push's own renames cost no hashing. A
//! file whose ctime is not a clock tick older than the scan's start is not cached: a
//! write right after the scan could give it the very ctime it had (git's "racy clean"
//! problem; see `settled`).

use super::state::StateDir;
use crate::compare::HostTree;
use crate::protocol::{KeptWhy, ScanStats};
use crate::written::{now_ns, Committed, TICK_NS};
use imager_core::error::IoContext;
use imager_core::fsx;
use imager_core::safe_dir::Beneath;
use imager_core::tree::escape::{escape, unescape};
use imager_core::tree::is_below;
use imager_core::tree::scan::Excludes;
use imager_core::tree::scan::{entry_of, walk, Found};
use imager_core::Tree;
use imager_core::{Entry, Hash, Kind};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Paths (relative to the root) that belong to the syncer itself.
pub const OWN_PATHS: &[&[u8]] = &[b"/.syncer-staging", b"/var/lib/syncer", b"/etc/syncer"];

#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
}

/// The hashes of the host's files from earlier scans, by path, each valid while the file's
/// size, mtime, ctime and inode are those recorded with it (the `hash-cache` state file).
pub struct HashCache {
    map: HashMap<Vec<u8>, (Key, Hash)>,
    /// What the last commit wrote ([`crate::written::record_written`]), until a scan
    /// has taken it in.
    committed: Committed,
    /// Whether the last scan changed anything (an unchanged cache is not rewritten).
    dirty: bool,
}

const CACHE_HEADER: &str = "#syncer-hash-cache v1";

impl HashCache {
    /// Loads the cache; a missing or unreadable one is empty (it is only a shortcut).
    pub fn load(state: &StateDir) -> HashCache {
        let mut map = HashMap::new();
        if let Ok(Some(text)) = state.read(super::state::HASH_CACHE) {
            let text = String::from_utf8_lossy(&text);
            let mut lines = text.lines();
            if lines.next() == Some(CACHE_HEADER) {
                for l in lines {
                    if let Some((p, k, h)) = parse_cache_line(l) {
                        map.insert(p, (k, h));
                    }
                }
            }
        }
        HashCache {
            map,
            committed: Committed::load(state),
            dirty: false,
        }
    }

    /// Writes the cache if the last scan changed it, and with it the list of what commits
    /// wrote (what that scan could not yet take in, or none). Not flushed to disk: after
    /// a crash a lost or empty cache only means hashing again.
    pub fn save(&self, state: &StateDir) -> crate::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let mut out = String::with_capacity(self.map.len() * 140);
        out.push_str(CACHE_HEADER);
        out.push('\n');
        let mut v: Vec<_> = self.map.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        for (p, (k, h)) in v {
            out.push_str(&format!(
                "{} {} {} {} {} {}\n",
                k.size,
                k.mtime_ns,
                k.ctime_ns,
                k.ino,
                h,
                escape(p)
            ));
        }
        state.write_unsynced(super::state::HASH_CACHE, out.as_bytes())?;
        // What the commit wrote is in the cache now, or was not as it left it, or (a scan
        // within a tick of the commit) still only in its list.
        if self.committed.files.is_empty() {
            state.remove(super::state::HASH_CACHE_COMMITTED)
        } else {
            self.committed.write(state)
        }
    }

    /// The hash of `path` (whose metadata the walk saw as `m`) if the cache or the last
    /// commit's list vouches for it.
    fn get(&self, path: &[u8], m: &std::fs::Metadata) -> Option<Hash> {
        let k = key_of(m);
        match self.map.get(path) {
            Some((ck, h)) if *ck == k => Some(*h),
            _ => self
                .committed
                .hit(path, (k.size, k.mtime_ns, k.ctime_ns))
                .map(|f| f.hash),
        }
    }

    /// Replaces the cache with what a scan that started at `start_ns` saw (files only;
    /// racy ones left out).
    fn refresh(&mut self, entries: &[Entry], disk_of: &DiskOf, start_ns: i128) {
        let mut map = HashMap::with_capacity(entries.len());
        let mut unsettled = HashMap::new();
        for e in entries {
            if let Kind::File { hash, .. } = e.kind {
                let k = key_of(disk_of[e.path.as_slice()].1);
                if settled(&k, start_ns) {
                    map.insert(e.path.clone(), (k, hash));
                } else if let Some(c) = self
                    .committed
                    .hit(&e.path, (k.size, k.mtime_ns, k.ctime_ns))
                    .filter(|c| c.hash == hash)
                {
                    unsettled.insert(e.path.clone(), *c);
                }
            }
        }
        self.dirty = map != self.map || !self.committed.files.is_empty();
        self.map = map;
        self.committed.files = unsettled;
    }
}

/// Whether a file last changed as `k` says can be cached by a scan that started at
/// `start_ns`: its ctime is at least a tick older than the start, so that any later
/// change gets another ctime. A ctime of whole seconds is a filesystem that keeps no
/// more (ext4 with small inodes, FAT): its tick is then two seconds.
fn settled(k: &Key, start_ns: i128) -> bool {
    let tick = if k.ctime_ns % 1_000_000_000 == 0 {
        2_000_000_000
    } else {
        TICK_NS
    };
    k.ctime_ns + tick <= start_ns && k.mtime_ns < start_ns
}

fn parse_cache_line(l: &str) -> Option<(Vec<u8>, Key, Hash)> {
    let mut it = l.split(' ');
    let key = Key {
        size: it.next()?.parse().ok()?,
        mtime_ns: it.next()?.parse().ok()?,
        ctime_ns: it.next()?.parse().ok()?,
        ino: it.next()?.parse().ok()?,
    };
    let h = Hash::from_hex(it.next()?)?;
    let p = unescape(it.next()?).ok()?;
    Some((p, key, h))
}

fn key_of(m: &std::fs::Metadata) -> Key {
    Key {
        size: m.len(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        ino: m.ino(),
    }
}

/// Walks and hashes the host's root. With `verify`, the cache is not trusted (but is
/// refreshed).
pub fn scan(
    root: &Path,
    local: &Excludes,
    cache: &mut HashCache,
    verify: bool,
) -> crate::Result<(HostTree, ScanStats)> {
    let started = Instant::now();
    let start_ns = now_ns();
    let root_dev = fsx::symlink_metadata(root)?.dev();
    let mut host = HostTree::default();
    keep_mount_points(root, local, &mut host)?;
    let skipped = std::sync::Mutex::new(Vec::new());
    let found = walk(root, |p| {
        let skip = OWN_PATHS.contains(&p) || local.is_excluded(p) || host.kept.contains_key(p);
        if skip {
            skipped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(p.to_vec());
        }
        skip
    })?;
    let skipped = skipped.into_inner().unwrap_or_else(|e| e.into_inner());
    keep_found(root_dev, &found, local, &mut host);
    protect_parents(&mut host, skipped);
    mark_shared(&found, &mut host);
    let mut stats = ScanStats::default();
    let (mut entries, to_hash) = entries_of(&found, &host, cache, verify, &mut stats)?;
    let disk_of: DiskOf = found
        .iter()
        .map(|f| (f.path.as_slice(), (&f.disk, &f.meta)))
        .collect();
    hash_files(&mut entries, &to_hash, &disk_of, &mut stats)?;
    read_xattrs(&mut entries, &disk_of)?;
    cache.refresh(&entries, &disk_of, start_ns);
    stats.entries = entries.len() as u64;
    stats.seconds = started.elapsed().as_secs_f64();
    host.entries = entries;
    Ok((host, stats))
}

/// Each walked path's file on disk and its metadata, as the walk saw them.
type DiskOf<'a> = HashMap<&'a [u8], (&'a PathBuf, &'a std::fs::Metadata)>;

/// Keeps every mount point below the root, by the kernel's mount table: a bind mount of
/// the root's own filesystem has the root's st_dev, so the walk alone would enter it.
fn keep_mount_points(root: &Path, local: &Excludes, host: &mut HostTree) -> crate::Result<()> {
    for m in super::mounts::beneath(root)? {
        if !local.covers(&m) && !OWN_PATHS.iter().any(|o| m == *o || is_below(&m, o)) {
            host.kept.insert(m, KeptWhy::Mount);
        }
    }
    Ok(())
}

/// Keeps what the walk found to be another filesystem or a symlink standing for local
/// state, then only the outermost kept paths: what is below one is never looked at.
fn keep_found(root_dev: u64, found: &[Found], local: &Excludes, host: &mut HostTree) {
    for f in found {
        if f.meta.is_dir() && f.meta.dev() != root_dev {
            host.kept.insert(f.path.clone(), KeptWhy::Mount);
        } else if f.meta.file_type().is_symlink() && local.is_at_or_above(&f.path) {
            // /home -> /data/home: the host keeps its homes there, not in the image's
            // empty directory.
            host.kept.insert(f.path.clone(), KeptWhy::LocalStateSymlink);
        }
    }
    let outer: Vec<Vec<u8>> = host
        .kept
        .keys()
        .filter(|k| !host.kept.keys().any(|o| o != *k && is_below(k, o)))
        .cloned()
        .collect();
    host.kept.retain(|k, _| outer.contains(k));
}

/// Directories holding local state, a mount or a kept symlink are never deleted or
/// replaced.
fn protect_parents(host: &mut HostTree, skipped: Vec<Vec<u8>>) {
    let kept: Vec<Vec<u8>> = host.kept.keys().cloned().collect();
    for s in skipped.into_iter().chain(kept) {
        let mut p = imager_core::tree::parent(&s);
        while let Some(q) = p {
            if !host.protected.insert(q.to_vec()) {
                break;
            }
            p = imager_core::tree::parent(q);
        }
    }
}

/// Marks files with more links than names seen here: they have one outside the root or
/// in local state.
fn mark_shared(found: &[Found], host: &mut HostTree) {
    let mut names: HashMap<(u64, u64), u64> = HashMap::new();
    for f in found {
        if !f.meta.is_dir() {
            *names.entry((f.meta.dev(), f.meta.ino())).or_default() += 1;
        }
    }
    for f in found {
        if !f.meta.is_dir()
            && f.meta.nlink() > names[&(f.meta.dev(), f.meta.ino())]
            && !host.is_kept(&f.path)
        {
            host.shared.insert(f.path.clone());
        }
    }
}

/// The entries of what was found outside kept paths, with the hashes the cache knows,
/// and the indices of the files still to hash.
fn entries_of(
    found: &[Found],
    host: &HostTree,
    cache: &HashCache,
    verify: bool,
    stats: &mut ScanStats,
) -> crate::Result<(Vec<Entry>, Vec<usize>)> {
    let mut links = HashMap::new();
    let mut entries = Vec::with_capacity(found.len());
    let mut to_hash: Vec<usize> = Vec::new();
    for f in found {
        if host.is_kept(&f.path) {
            continue;
        }
        // A socket: no image holds one; it is left alone (a rename over it replaces it).
        let Some(mut e) = entry_of(f, &mut links)? else {
            continue;
        };
        if let Kind::File { hash, .. } = &mut e.kind {
            match cache.get(&f.path, &f.meta).filter(|_| !verify) {
                Some(h) => {
                    stats.cached_files += 1;
                    *hash = h;
                }
                None => to_hash.push(entries.len()),
            }
        }
        entries.push(e);
    }
    Ok((entries, to_hash))
}

/// Hashes the files at `to_hash` in parallel.
fn hash_files(
    entries: &mut [Entry],
    to_hash: &[usize],
    disk_of: &DiskOf,
    stats: &mut ScanStats,
) -> crate::Result<()> {
    let hashed: Vec<(usize, Hash)> = to_hash
        .par_iter()
        .map(|&i| -> crate::Result<(usize, Hash)> {
            let (disk, _) = disk_of[entries[i].path.as_slice()];
            let f = fsx::open_nofollow(disk)?;
            let mut h = blake3::Hasher::new();
            h.update_reader(f).ctx("read", disk.as_path())?;
            Ok((i, Hash::from(h.finalize())))
        })
        .collect::<crate::Result<_>>()?;
    for (i, h) in hashed {
        if let Kind::File { hash, size } = &mut entries[i].kind {
            *hash = h;
            stats.hashed_files += 1;
            stats.hashed_bytes += *size;
        }
    }
    Ok(())
}

/// Reads every entry's extended attributes in parallel (a hard link has its target's).
fn read_xattrs(entries: &mut [Entry], disk_of: &DiskOf) -> crate::Result<()> {
    entries
        .par_iter_mut()
        .try_for_each(|e: &mut Entry| -> crate::Result<()> {
            if !e.is_hardlink() {
                e.xattrs = fsx::read_xattrs(disk_of[e.path.as_slice()].0)?;
            }
            Ok(())
        })
}

/// The image's local-state paths that the host lacks, so that a first install gets them
/// (the scan never looks at local state). A path counts as absent only when its parent
/// is absent too or opens beneath the root and has no such name: whatever cannot be
/// looked at (a parent that is a symlink, a permission error) stays the host's.
pub fn absent_local_state(
    b: &Beneath,
    image: &Tree,
    local: &Excludes,
    host: &HostTree,
) -> HashSet<Vec<u8>> {
    let on_host: HashSet<&[u8]> = host.entries.iter().map(|e| e.path.as_slice()).collect();
    let mut absent: HashSet<Vec<u8>> = HashSet::new();
    for e in image.entries() {
        if e.path == b"/" || !local.covers(&e.path) || host.is_kept(&e.path) {
            continue;
        }
        let Some(parent) = imager_core::tree::parent(&e.path) else {
            continue;
        };
        // A parent outside local state is on the host exactly when the scan saw it.
        let parent_absent = absent.contains(parent)
            || (!local.covers(parent) && parent != b"/" && !on_host.contains(parent));
        let gone = parent_absent
            || match b.parent(&e.path) {
                Ok((dir, name)) => matches!(
                    rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW),
                    Err(rustix::io::Errno::NOENT)
                ),
                Err(_) => false,
            };
        if gone {
            absent.insert(e.path.clone());
        }
    }
    absent
}

/// For every hash the image needs, a host file that holds it.
pub fn holders(host: &HostTree) -> HashMap<Hash, Vec<u8>> {
    let mut out = HashMap::new();
    for e in &host.entries {
        if let Kind::File { hash, .. } = e.kind {
            out.entry(hash).or_insert_with(|| e.path.clone());
        }
    }
    out
}

/// The local-state globs of an image plus the syncer's own paths: what no push touches.
pub fn local_excludes(globs: &[String]) -> crate::Result<Excludes> {
    let mut all = globs.to_vec();
    all.extend(
        OWN_PATHS
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    );
    Ok(Excludes::new(&all)?)
}

/// Leaves the agent's own executable out of the host's tree when it lies in the synced
/// root and the image does not hold it. A host that installed the agent with its package
/// manager (`/usr/bin/syncer-agent`, below the owned `/usr`) would otherwise lose the
/// program every later push runs at its first push of an image without the package:
/// the push that deleted it would succeed, and the next would find no agent. Its
/// directories the image lacks are protected as local state's are. An image that holds the path
/// replaces it like any file (the running agent keeps its old inode).
pub fn spare_own_executable(root: &Path, image: &Tree, host: &mut HostTree) {
    let (Ok(exe), Ok(root)) = (fsx::read_link("/proc/self/exe"), fsx::canonicalize(root)) else {
        return;
    };
    if let Some(rel) = own_path(&root, &exe) {
        spare(&rel, image, host);
    }
}

/// `exe`'s path relative to `root` (`/usr/bin/syncer-agent`), when it lies below it.
fn own_path(root: &Path, exe: &Path) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let rest = exe.strip_prefix(root).ok()?;
    let rest = rest.as_os_str().as_bytes();
    (!rest.is_empty()).then(|| [b"/", rest].concat())
}

fn spare(rel: &[u8], image: &Tree, host: &mut HostTree) {
    if image.get(rel).is_some() {
        return;
    }
    host.entries.retain(|e| e.path != rel);
    // Its directories the image lacks would be deleted with it; those the image has
    // are compared as before.
    let mut p = rel;
    while let Some(i) = p.iter().rposition(|&b| b == b'/').filter(|&i| i > 0) {
        p = &p[..i];
        if image.get(p).is_none() {
            host.protected.insert(p.to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{own_path, settled, Key};
    use crate::written::{record_written, Written};
    use std::path::Path;

    /// What a commit wrote is not hashed by the next scan, unless it changed since: a
    /// file written over (its mtime put back to the image's) after the commit ended is
    /// hashed again and found to differ. (Before: every file the commit wrote was
    /// hashed again.)
    #[test]
    #[allow(clippy::unwrap_used, clippy::disallowed_methods)]
    fn the_next_scan_takes_what_the_commit_wrote_as_it_left_it() {
        use super::{scan, HashCache};
        use imager_core::Hash;
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let image_mtime = 1_600_000_000i64;
        let put = |name: &str, data: &[u8]| {
            let p = root.join(name);
            std::fs::write(&p, data).unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(image_mtime as u64);
            f.set_modified(at).unwrap();
        };
        let ctime = |name: &str| {
            let m = std::fs::symlink_metadata(root.join(name)).unwrap();
            m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128
        };
        put("kept", b"as committed");
        put("changed", b"as committed");
        put("touched", b"mtime moved");
        let st = crate::state::StateDir::open(root).unwrap();
        st.create().unwrap();
        // The commit's end: after its last change, as the agent takes it.
        let at = ["kept", "changed", "touched"]
            .map(ctime)
            .into_iter()
            .max()
            .unwrap();
        let written: Vec<Written> = [
            ("kept", &b"as committed"[..]),
            ("changed", b"as committed"),
            ("touched", b"mtime moved"),
        ]
        .iter()
        .map(|(n, d)| Written {
            path: format!("/{n}").into_bytes(),
            hash: Hash::of(d),
            size: d.len() as u64,
            mtime: image_mtime,
        })
        .collect();
        record_written(&st, &written, at).unwrap();
        // A write after the commit, the mtime put back: waits for the event (a ctime
        // past the commit's end), not for a time.
        while ctime("changed") <= at {
            put("changed", b"AS COMMITTED");
        }
        std::fs::File::options()
            .write(true)
            .open(root.join("touched"))
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        let local = super::local_excludes(&[]).unwrap();
        let mut cache = HashCache::load(&st);
        let (host, stats) = scan(root, &local, &mut cache, false).unwrap();
        assert_eq!(stats.hashed_files, 2, "{:?}", stats.hashed_files);
        assert_eq!(stats.cached_files, 1);
        let hash = |n: &str| match host
            .entries
            .iter()
            .find(|e| e.path == format!("/{n}").as_bytes())
        {
            Some(imager_core::Entry {
                kind: imager_core::Kind::File { hash, .. },
                ..
            }) => *hash,
            e => panic!("{n}: {e:?}"),
        };
        assert_eq!(hash("kept"), Hash::of(b"as committed"));
        assert_eq!(hash("changed"), Hash::of(b"AS COMMITTED"));
        assert_eq!(hash("touched"), Hash::of(b"mtime moved"));
        // Saved, the cache still vouches for the file (in its map, or, when the scan
        // began within a tick of the commit, in the list still), and the next commit's
        // list keeps it.
        cache.save(&st).unwrap();
        record_written(&st, &written[2..], at).unwrap();
        let meta = std::fs::symlink_metadata(root.join("kept")).unwrap();
        let again = HashCache::load(&st);
        assert_eq!(again.get(b"/kept", &meta), Some(Hash::of(b"as committed")));
        // A scan that verifies takes nothing from the list.
        record_written(&st, &written, at).unwrap();
        let mut cache = HashCache::load(&st);
        let (_, stats) = scan(root, &local, &mut cache, true).unwrap();
        assert_eq!(stats.hashed_files, 3);
        // Nor does any scan when the clock is behind a commit's end (set back since).
        st.remove(crate::state::HASH_CACHE).unwrap();
        let ahead = crate::written::now_ns() + 3_600_000_000_000;
        record_written(&st, &written, ahead).unwrap();
        let mut cache = HashCache::load(&st);
        let (_, stats) = scan(root, &local, &mut cache, false).unwrap();
        assert_eq!(stats.hashed_files, 3);
    }

    /// A file changed less than a tick before the scan started is hashed again next
    /// time: a write after the scan, in the same tick, would leave its ctime as it was.
    /// (Before: anything changed before the start was cached.)
    #[test]
    fn a_file_changed_within_a_tick_of_the_scan_is_not_cached() {
        let s = 1_700_000_000_123_456_789i128;
        let k = |ctime_ns: i128| Key {
            size: 1,
            mtime_ns: ctime_ns,
            ctime_ns,
            ino: 1,
        };
        assert!(!settled(&k(s - 1), s));
        assert!(!settled(&k(s - 9_999_999), s));
        assert!(settled(&k(s - 10_000_000), s));
        assert!(settled(&k(s - 3_600_000_000_000), s));
        assert!(!settled(&k(s + 1), s));
        // Whole seconds: a filesystem that keeps no finer times.
        let whole = 1_700_000_000_000_000_000i128;
        assert!(!settled(&k(whole), whole + 1_500_000_000));
        assert!(settled(&k(whole), whole + 2_000_000_000));
        // An mtime set ahead of the start (touch -d): never cached.
        let ahead = Key {
            mtime_ns: s + 1,
            ..k(s - 3_600_000_000_000)
        };
        assert!(!settled(&ahead, s));
    }

    #[test]
    fn the_own_executable_is_named_relative_to_the_root() {
        let exe = Path::new("/usr/bin/syncer-agent");
        assert_eq!(
            own_path(Path::new("/"), exe).as_deref(),
            Some(&b"/usr/bin/syncer-agent"[..])
        );
        assert_eq!(
            own_path(Path::new("/srv/h1"), Path::new("/srv/h1/usr/bin/a")).as_deref(),
            Some(&b"/usr/bin/a"[..])
        );
        // The controller's own agent, outside a local: root, is not the host's.
        assert_eq!(own_path(Path::new("/srv/h1"), exe), None);
        assert_eq!(
            own_path(Path::new("/srv/h1"), Path::new("/srv/h10/a")),
            None
        );
    }
}
