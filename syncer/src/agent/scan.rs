//! What the host has: one walk of the root (never into another filesystem, never into
//! local-state paths or the syncer's own directories), then blake3 of every file in
//! parallel, except those the hash cache already knows.
//!
//! The cache is keyed on (path, size, mtime, ctime, inode): any write to a file moves its
//! ctime, so a hit means the content is what was hashed. A file whose ctime is not older
//! than the scan's start is not cached (it may be written again within the same clock
//! tick, git's "racy clean" problem).

use super::state::StateDir;
use crate::compare::HostTree;
use crate::protocol::ScanStats;
use imager::error::{Error as FsError, IoContext};
use imager::fsx;
use imager::tree::escape::{escape, unescape};
use imager::tree::scan::Excludes;
use imager::tree::{entry_path, path_cmp, MODE_MASK, SYMLINK_MODE};
use imager::{Entry, Hash, Kind};
use rayon::prelude::*;
use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Paths (relative to the root) that belong to the syncer itself.
pub const OWN_PATHS: &[&[u8]] = &[b"/.syncer-staging", b"/var/lib/syncer"];

#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
}

pub struct HashCache {
    map: HashMap<Vec<u8>, (Key, Hash)>,
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
        HashCache { map, dirty: false }
    }

    /// Writes the cache if the last scan changed it. Not flushed to disk: after a crash
    /// a lost or empty cache only means hashing again.
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
        state.write_unsynced(super::state::HASH_CACHE, out.as_bytes())
    }
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
    let start_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    let root_dev = std::fs::symlink_metadata(root).ctx("inspect", root)?.dev();
    let mut host = HostTree::default();
    let mut found: Vec<(Vec<u8>, PathBuf, std::fs::Metadata)> = Vec::new();
    let mut skipped: Vec<Vec<u8>> = Vec::new();
    let mut walker = walkdir::WalkDir::new(root)
        .same_file_system(true)
        .follow_links(false)
        .into_iter();
    while let Some(item) = walker.next() {
        let d = item.map_err(|e| {
            let path = e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| root.to_path_buf());
            let io = e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("filesystem loop"));
            FsError::io("walk", path, io)
        })?;
        let rel = d.path().strip_prefix(root).unwrap_or(d.path());
        let p = entry_path(fsx::path_bytes(rel))
            .map_err(|r| FsError::invalid(fsx::path_bytes(rel), r))?;
        if OWN_PATHS.contains(&p.as_slice()) || local.is_excluded(&p) {
            if d.file_type().is_dir() {
                walker.skip_current_dir();
            }
            skipped.push(p);
            continue;
        }
        let m = std::fs::symlink_metadata(d.path()).ctx("inspect", d.path())?;
        if m.is_dir() && m.dev() != root_dev {
            host.mounts.insert(p.clone());
        }
        found.push((p, d.into_path(), m));
    }
    for s in skipped {
        let mut p = imager::tree::parent(&s);
        while let Some(q) = p {
            if !host.protected.insert(q.to_vec()) {
                break;
            }
            p = imager::tree::parent(q);
        }
    }
    found.sort_by(|a, b| path_cmp(&a.0, &b.0));

    let mut first_of_inode: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut entries = Vec::with_capacity(found.len());
    let mut to_hash: Vec<usize> = Vec::new();
    let mut stats = ScanStats::default();
    for (p, disk, m) in &found {
        let ft = m.file_type();
        let mut mode = m.mode() & MODE_MASK;
        let kind = if ft.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = first_of_inode.get(&m.ino()) {
                    entries.push(Entry {
                        path: p.clone(),
                        kind: Kind::HardLink {
                            target: first.clone(),
                        },
                        mode,
                        uid: m.uid(),
                        gid: m.gid(),
                        mtime: m.mtime(),
                        xattrs: Vec::new(),
                    });
                    continue;
                }
                first_of_inode.insert(m.ino(), p.clone());
            }
            let k = key_of(m);
            let hash = match cache.map.get(p) {
                Some((ck, h)) if !verify && *ck == k => {
                    stats.cached_files += 1;
                    *h
                }
                _ => {
                    to_hash.push(entries.len());
                    Hash([0; 32])
                }
            };
            Kind::File {
                size: m.len(),
                hash,
            }
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            mode = SYMLINK_MODE;
            let t = std::fs::read_link(disk).ctx("read symlink", disk)?;
            Kind::Symlink {
                target: fsx::path_bytes(&t).to_vec(),
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            let (major, minor) = (rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev()));
            if ft.is_char_device() {
                Kind::CharDev { major, minor }
            } else {
                Kind::BlockDev { major, minor }
            }
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            // A socket: no image holds one; it is left alone (a rename over it replaces it).
            continue;
        };
        entries.push(Entry {
            path: p.clone(),
            kind,
            mode,
            uid: m.uid(),
            gid: m.gid(),
            mtime: m.mtime(),
            xattrs: Vec::new(),
        });
    }
    let disk_of: HashMap<&[u8], (&PathBuf, &std::fs::Metadata)> = found
        .iter()
        .map(|(p, d, m)| (p.as_slice(), (d, m)))
        .collect();

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
    entries
        .par_iter_mut()
        .try_for_each(|e: &mut Entry| -> crate::Result<()> {
            if !e.is_hardlink() {
                e.xattrs = fsx::read_xattrs(disk_of[e.path.as_slice()].0)?;
            }
            Ok(())
        })?;

    // Refresh the cache with what this scan saw (files only; racy ones left out).
    let mut map = HashMap::with_capacity(entries.len());
    for e in &entries {
        if let Kind::File { hash, .. } = e.kind {
            let k = key_of(disk_of[e.path.as_slice()].1);
            if k.ctime_ns < start_ns && k.mtime_ns < start_ns {
                map.insert(e.path.clone(), (k, hash));
            }
        }
    }
    cache.dirty = map != cache.map;
    cache.map = map;
    stats.entries = entries.len() as u64;
    stats.seconds = started.elapsed().as_secs_f64();
    host.entries = entries;
    Ok((host, stats))
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
