//! The hash cache (`/var/lib/syncer/hash-cache`): the hashes of the host's files from
//! earlier scans, so that a scan hashes only what changed.
//!
//! It is keyed on (path, size, mtime, ctime, inode): any write to a file moves its
//! ctime, so a hit means the content is what was hashed. Setting or removing an extended
//! attribute moves the ctime too, so the cache also says which files have none, and
//! those are not asked for them again (a `llistxattr` by path for every file was a
//! sixth of a managed host's scan). What the last commit wrote is taken as it left it
//! ([`crate::written`]), so a push's own renames cost no hashing. A file whose ctime is
//! not a clock tick older than the scan's start is not cached: a write right after the
//! scan could give it the very ctime it had (git's "racy clean" problem; see `settled`).

use super::DiskOf;
use crate::state::StateDir;
use crate::written::{Committed, TICK_NS};
use imager_core::tree::escape::{escape, unescape};
use imager_core::{Entry, Hash, Kind};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
}

/// The hashes of the host's files from earlier scans, by path, each valid while the file's
/// size, mtime, ctime and inode are those recorded with it (the `hash-cache` state file),
/// and whether each had no extended attributes.
pub struct HashCache {
    map: HashMap<Vec<u8>, (Key, Cached)>,
    /// What the last commit wrote ([`crate::written::record_written`]), until a scan
    /// has taken it in.
    committed: Committed,
    /// Whether the last scan changed anything (an unchanged cache is not rewritten).
    dirty: bool,
}

/// What the cache knows of a file whose key still matches.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Cached {
    pub(super) hash: Hash,
    /// It had no extended attributes (`false`: it had some, or a version 1 cache did
    /// not say).
    pub(super) bare: bool,
}

const CACHE_HEADER: &str = "#syncer-hash-cache v2";

/// The header of the caches agents wrote before they recorded extended attributes:
/// still read (their hashes hold), so an upgraded agent hashes nothing again.
const CACHE_HEADER_V1: &str = "#syncer-hash-cache v1";

impl HashCache {
    /// Loads the cache; a missing or unreadable one is empty (it is only a shortcut).
    pub fn load(state: &StateDir) -> HashCache {
        let mut map = HashMap::new();
        if let Ok(Some(text)) = state.read(crate::state::HASH_CACHE) {
            let text = String::from_utf8_lossy(&text);
            let mut lines = text.lines();
            let version = match lines.next() {
                Some(CACHE_HEADER) => Some(2),
                Some(CACHE_HEADER_V1) => Some(1),
                _ => None,
            };
            if let Some(version) = version {
                for l in lines {
                    if let Some((p, k, c)) = parse_cache_line(l, version) {
                        map.insert(p, (k, c));
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
        for (p, (k, c)) in v {
            out.push_str(&format!(
                "{} {} {} {} {} {} {}\n",
                k.size,
                k.mtime_ns,
                k.ctime_ns,
                k.ino,
                c.hash,
                if c.bare { "-" } else { "x" },
                escape(p)
            ));
        }
        state.write_unsynced(crate::state::HASH_CACHE, out.as_bytes())?;
        // What the commit wrote is in the cache now, or was not as it left it, or (a scan
        // within a tick of the commit) still only in its list.
        if self.committed.files.is_empty() {
            state.remove(crate::state::HASH_CACHE_COMMITTED)
        } else {
            self.committed.write(state)
        }
    }

    /// The hash of `path` (whose metadata the walk saw as `m`) if the cache or the last
    /// commit's list vouches for it, and whether the file is known to have no extended
    /// attributes.
    pub(super) fn get(&self, path: &[u8], m: &std::fs::Metadata) -> Option<Cached> {
        let k = key_of(m);
        match self.map.get(path) {
            Some((ck, c)) if *ck == k => Some(*c),
            _ => self
                .committed
                .hit(path, (k.size, k.mtime_ns, k.ctime_ns))
                .map(|f| Cached {
                    hash: f.hash,
                    bare: false,
                }),
        }
    }

    /// Replaces the cache with what a scan that started at `start_ns` saw (files only;
    /// racy ones left out).
    pub(super) fn refresh(&mut self, entries: &[Entry], disk_of: &DiskOf, start_ns: i128) {
        let mut map = HashMap::with_capacity(entries.len());
        let mut unsettled = HashMap::new();
        for e in entries {
            if let Kind::File { hash, .. } = e.kind {
                let k = key_of(disk_of[e.path.as_slice()].1);
                if settled(&k, start_ns) {
                    let bare = e.xattrs.is_empty();
                    map.insert(e.path.clone(), (k, Cached { hash, bare }));
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

/// A line of a cache of `version` 1 (`size mtime ctime inode hash path`) or 2 (with
/// `-` for no extended attributes, else `x`, before the path).
fn parse_cache_line(l: &str, version: u8) -> Option<(Vec<u8>, Key, Cached)> {
    let mut it = l.split(' ');
    let key = Key {
        size: it.next()?.parse().ok()?,
        mtime_ns: it.next()?.parse().ok()?,
        ctime_ns: it.next()?.parse().ok()?,
        ino: it.next()?.parse().ok()?,
    };
    let hash = Hash::from_hex(it.next()?)?;
    let bare = match version {
        1 => false,
        _ => match it.next()? {
            "-" => true,
            "x" => false,
            _ => return None,
        },
    };
    let p = unescape(it.next()?).ok()?;
    Some((p, key, Cached { hash, bare }))
}

fn key_of(m: &std::fs::Metadata) -> Key {
    Key {
        size: m.len(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        ino: m.ino(),
    }
}

#[cfg(test)]
mod tests {
    use super::{settled, Key};
    use crate::written::{record_written, Written};
    use std::path::Path;

    /// What a commit wrote is not hashed by the next scan, unless it changed since: a
    /// file written over (its mtime put back to the image's) after the commit ended is
    /// hashed again and found to differ. (Before: every file the commit wrote was
    /// hashed again.)
    #[test]
    #[allow(clippy::unwrap_used, clippy::disallowed_methods)]
    fn the_next_scan_takes_what_the_commit_wrote_as_it_left_it() {
        use crate::scan::{scan, HashCache};
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
        let local = crate::scan::local_excludes(&[]).unwrap();
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
        assert!(again.get(b"/kept", &meta).map(|c| c.hash) == Some(Hash::of(b"as committed")));
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

    /// The cache says which files have no extended attributes, and the next scan does
    /// not ask those; setting one moves the file's ctime, so it is seen. A cache of
    /// version 1 (no such field) still gives its hashes, and every file is asked.
    #[test]
    #[allow(clippy::unwrap_used, clippy::disallowed_methods)]
    fn files_the_cache_knows_have_no_xattrs_are_not_asked_until_their_ctime_moves() {
        use crate::scan::{scan, HashCache};
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let set = |name: &str, value: &[u8]| {
            let f = std::fs::File::open(root.join(name)).unwrap();
            imager_core::fsx::set_xattr_fd(&f, b"user.test", value, Path::new(name)).unwrap();
        };
        std::fs::write(root.join("plain"), b"plain").unwrap();
        std::fs::write(root.join("marked"), b"marked").unwrap();
        set("marked", b"1");
        let st = crate::state::StateDir::open(root).unwrap();
        st.create().unwrap();
        // Cached only once the clock is a tick past the files' last change.
        crate::written::wait_a_tick();
        let local = crate::scan::local_excludes(&[]).unwrap();
        let scan_again = || {
            let mut cache = HashCache::load(&st);
            let (host, stats) = scan(root, &local, &mut cache, false).unwrap();
            cache.save(&st).unwrap();
            let xattrs = |n: &str| {
                let e = host
                    .entries
                    .iter()
                    .find(|e| e.path == format!("/{n}").as_bytes());
                e.unwrap().xattrs.clone()
            };
            (stats.cached_files, xattrs("plain"), xattrs("marked"))
        };
        let marked = vec![(b"user.test".to_vec(), b"1".to_vec())];
        assert_eq!(scan_again(), (0, vec![], marked.clone()));
        let text = String::from_utf8(st.read(crate::state::HASH_CACHE).unwrap().unwrap()).unwrap();
        assert!(text.starts_with("#syncer-hash-cache v2\n"), "{text}");
        assert!(
            text.contains(" - /plain\n") && text.contains(" x /marked\n"),
            "{text}"
        );
        // Both cached; the marked file's xattrs are still read.
        assert_eq!(scan_again(), (2, vec![], marked.clone()));
        // An xattr set on the plain file: its ctime moved, so it is looked at again.
        set("plain", b"2");
        crate::written::wait_a_tick();
        let plain = vec![(b"user.test".to_vec(), b"2".to_vec())];
        assert_eq!(scan_again(), (1, plain.clone(), marked.clone()));
        assert_eq!(scan_again(), (2, plain.clone(), marked.clone()));
        // A version 1 cache: its hashes hold, every file is asked.
        let v1: String = text
            .replace("#syncer-hash-cache v2", "#syncer-hash-cache v1")
            .replace(" - /", " /")
            .replace(" x /", " /");
        st.write_unsynced(crate::state::HASH_CACHE, v1.as_bytes())
            .unwrap();
        let (cached, p, m) = scan_again();
        assert_eq!((p, m), (plain, marked));
        assert_eq!(
            cached, 1,
            "the plain file changed since that cache, the marked did not"
        );
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
}
