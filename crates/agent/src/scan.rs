//! What the host has: one walk of the root (never into another filesystem, never into
//! local-state paths or the syncer's own directories), then blake3 of every file in
//! parallel, except those the hash cache ([`cache`]) already knows.

mod cache;

use crate::compare::HostTree;
use crate::protocol::{KeptWhy, ScanStats};
use crate::written::now_ns;
pub use cache::HashCache;
use imager_core::error::IoContext;
use imager_core::fsx;
use imager_core::safe_dir::Beneath;
use imager_core::tree::escape::escape;
use imager_core::tree::is_below;
use imager_core::tree::scan::Excludes;
use imager_core::tree::scan::{entry_of, is_vanished, walk_live, Found};
use imager_core::Tree;
use imager_core::{Entry, Hash, Kind};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Paths (relative to the root) that belong to the syncer itself.
pub const OWN_PATHS: &[&[u8]] = &[b"/.syncer-staging", b"/var/lib/syncer", b"/etc/syncer"];

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
    let (found, mut host) = walk_host(root, local)?;
    let mut stats = ScanStats::default();
    let entries = entries_found(&found, &host, cache, verify, &mut stats, start_ns)?;
    stats.entries = entries.len() as u64;
    stats.seconds = started.elapsed().as_secs_f64();
    host.entries = entries;
    Ok((host, stats))
}

/// The walk of the host's root: what it found, and what it keeps (mount points,
/// local-state symlinks) and protects.
fn walk_host(root: &Path, local: &Excludes) -> crate::Result<(Vec<Found>, HostTree)> {
    let root_dev = fsx::symlink_metadata(root)?.dev();
    let mut host = HostTree::default();
    keep_mount_points(root, local, &mut host)?;
    let skipped = std::sync::Mutex::new(Vec::new());
    let found = walk_live(root, |p| {
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
    Ok((found, host))
}

/// The entries of what the walk found, hashed (or from the cache) and with their
/// extended attributes, but those gone since the walk saw them; the cache is refreshed
/// with them (a scan that started at `start_ns`).
fn entries_found(
    found: &[Found],
    host: &HostTree,
    cache: &mut HashCache,
    verify: bool,
    stats: &mut ScanStats,
    start_ns: i128,
) -> crate::Result<Vec<Entry>> {
    let (mut entries, to_hash, mut xattrs_known) = entries_of(found, host, cache, verify, stats)?;
    let disk_of: DiskOf = found
        .iter()
        .map(|f| (f.path.as_slice(), (&f.disk, &f.meta)))
        .collect();
    let mut vanished = hash_files(&mut entries, &to_hash, &disk_of, stats)?;
    for &i in &to_hash {
        xattrs_known[i] = true;
    }
    vanished.extend(read_xattrs(&mut entries, &xattrs_known, &disk_of)?);
    let entries = without_vanished(entries, vanished)?;
    cache.refresh(&entries, &disk_of, start_ns);
    Ok(entries)
}

/// Each walked path's file on disk and its metadata, as the walk saw them.
pub(crate) type DiskOf<'a> = HashMap<&'a [u8], (&'a PathBuf, &'a std::fs::Metadata)>;

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
/// the indices of the files still to hash, and for each entry whether its extended
/// attributes are known (the cache knows it has none).
fn entries_of(
    found: &[Found],
    host: &HostTree,
    cache: &HashCache,
    verify: bool,
    stats: &mut ScanStats,
) -> crate::Result<(Vec<Entry>, Vec<usize>, Vec<bool>)> {
    let mut links = HashMap::new();
    let mut entries = Vec::with_capacity(found.len());
    let mut to_hash: Vec<usize> = Vec::new();
    let mut bare = Vec::with_capacity(found.len());
    for f in found {
        if host.is_kept(&f.path) {
            continue;
        }
        // A socket: no image holds one; it is left alone (a rename over it replaces it).
        // A symlink gone since the walk saw it is gone.
        let mut e = match entry_of(f, &mut links) {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(e) if is_vanished(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut known_bare = false;
        if let Kind::File { hash, .. } = &mut e.kind {
            match cache.get(&f.path, &f.meta).filter(|_| !verify) {
                Some(c) => {
                    stats.cached_files += 1;
                    *hash = c.hash;
                    known_bare = c.bare;
                }
                None => to_hash.push(entries.len()),
            }
        }
        entries.push(e);
        bare.push(known_bare);
    }
    Ok((entries, to_hash, bare))
}

/// Hashes the files at `to_hash` in parallel, and reads their extended attributes
/// through the same open file; the indices of those gone since the walk saw them (a
/// running host's temporary files).
fn hash_files(
    entries: &mut [Entry],
    to_hash: &[usize],
    disk_of: &DiskOf,
    stats: &mut ScanStats,
) -> crate::Result<Vec<usize>> {
    type Read = (Hash, Vec<(Vec<u8>, Vec<u8>)>);
    let read: Vec<(usize, Option<Read>)> = to_hash
        .par_iter()
        .map(|&i| -> crate::Result<(usize, Option<Read>)> {
            let (disk, _) = disk_of[entries[i].path.as_slice()];
            let f = match fsx::open_nofollow(disk) {
                Err(e) if is_vanished(&e) => return Ok((i, None)),
                r => r?,
            };
            let xattrs = fsx::read_xattrs_fd(&f, disk)?;
            let mut h = blake3::Hasher::new();
            h.update_reader(f).ctx("read", disk.as_path())?;
            Ok((i, Some((Hash::from(h.finalize()), xattrs))))
        })
        .collect::<crate::Result<_>>()?;
    let mut vanished = Vec::new();
    for (i, r) in read {
        let Some((h, xattrs)) = r else {
            vanished.push(i);
            continue;
        };
        entries[i].xattrs = xattrs;
        if let Kind::File { hash, size } = &mut entries[i].kind {
            *hash = h;
            stats.hashed_files += 1;
            stats.hashed_bytes += *size;
        }
    }
    Ok(vanished)
}

/// The entries but those at `vanished` and what lies below a directory among them: gone
/// from the host since the walk saw them. An image path among them is added again by the
/// push; a path the host made is not the push's to know of. A file gone whose other names
/// the walk saw as its hard links is an error: those names are still there, and the
/// scan cannot say what they hold (left out, the host's data in them would be unknown to
/// the push, and a directory holding them unprotected).
fn without_vanished(entries: Vec<Entry>, vanished: Vec<usize>) -> crate::Result<Vec<Entry>> {
    if vanished.is_empty() {
        return Ok(entries);
    }
    let mut gone = vec![false; entries.len()];
    for i in vanished {
        gone[i] = true;
    }
    let gone_paths: HashSet<&[u8]> = entries
        .iter()
        .zip(&gone)
        .filter(|(_, &g)| g)
        .map(|(e, _)| e.path.as_slice())
        .collect();
    let below_gone = |p: &[u8]| {
        let mut q = imager_core::tree::parent(p);
        while let Some(d) = q {
            if gone_paths.contains(d) {
                return true;
            }
            q = imager_core::tree::parent(d);
        }
        false
    };
    let mut keep = Vec::with_capacity(entries.len());
    for (e, &g) in entries.iter().zip(&gone) {
        let here = !g && !below_gone(&e.path);
        if let Kind::HardLink { target } = &e.kind {
            if here && gone_paths.contains(target.as_slice()) {
                return Err(crate::Error::Agent(format!(
                    "{} was removed during the scan, and {} is another name of its file: \
                     the host is changing; push again",
                    escape(target),
                    escape(&e.path)
                )));
            }
        }
        keep.push(here);
    }
    Ok(entries
        .into_iter()
        .zip(keep)
        .filter_map(|(e, k)| k.then_some(e))
        .collect())
}

/// Reads the extended attributes of every entry but those `known` already, in
/// parallel (a hard link has its target's); the indices of the entries gone since the
/// walk saw them.
fn read_xattrs(
    entries: &mut [Entry],
    known: &[bool],
    disk_of: &DiskOf,
) -> crate::Result<Vec<usize>> {
    let gone: Vec<Option<usize>> = entries
        .par_iter_mut()
        .enumerate()
        .zip(known)
        .map(|((i, e), &known)| -> crate::Result<Option<usize>> {
            if !e.is_hardlink() && !known {
                match fsx::read_xattrs(disk_of[e.path.as_slice()].0) {
                    Ok(x) => e.xattrs = x,
                    Err(err) if is_vanished(&err) => return Ok(Some(i)),
                    Err(err) => return Err(err.into()),
                }
            }
            Ok(None)
        })
        .collect::<crate::Result<_>>()?;
    Ok(gone.into_iter().flatten().collect())
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
    // One covering for the paths, one for their parents: each remembers its own last.
    let (local, local_parent) = (local.covering(), local.covering());
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
            || (!local_parent.covers(parent) && parent != b"/" && !on_host.contains(parent));
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
    use super::own_path;
    use std::path::Path;

    /// A running host's files come and go while it is scanned (nginx's temp bodies):
    /// what the walk saw and is gone when it is hashed, read as a link or asked for its
    /// xattrs is left out, with what was below a directory gone (files the cache knew
    /// and never opened too), instead of failing the scan. (Before: "failed to open
    /// /var/lib/nginx/body/0000000981", and the push failed.) A file gone whose other
    /// name is still there fails the scan: what that name holds is the host's.
    #[test]
    #[allow(clippy::unwrap_used, clippy::disallowed_methods)]
    fn what_vanishes_between_the_walk_and_its_reading_is_left_out() {
        use super::{entries_found, walk_host, HashCache};
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let body = root.join("var/lib/nginx/body");
        std::fs::create_dir_all(body.join("dir")).unwrap();
        for n in ["0000000981", "kept", "dir/inner"] {
            std::fs::write(body.join(n), n).unwrap();
        }
        std::os::unix::fs::symlink("kept", body.join("link")).unwrap();
        let st = crate::state::StateDir::open(root).unwrap();
        st.create().unwrap();
        let local = super::local_excludes(&[]).unwrap();
        let scan_after = |change: &dyn Fn()| {
            let (found, host) = walk_host(root, &local).unwrap();
            change();
            let mut cache = HashCache::load(&st);
            let mut stats = Default::default();
            let start = crate::written::now_ns();
            let entries = entries_found(&found, &host, &mut cache, false, &mut stats, start)?;
            cache.save(&st).unwrap();
            let names: Vec<String> = entries
                .iter()
                .map(|e| String::from_utf8_lossy(&e.path).into_owned())
                .filter(|p| p.starts_with("/var/lib/nginx/body/"))
                .collect();
            crate::Result::Ok((names, stats.cached_files))
        };
        // Cached (and known to have no xattrs) once the clock is a tick past the files.
        crate::written::wait_a_tick();
        assert_eq!(scan_after(&|| {}).unwrap().0.len(), 5);
        // Gone after the walk: a new file, a symlink, and a directory whose file the
        // cache knows (so it is never opened). (A file the cache knows and that goes
        // after the walk stays in the scan, as any change after it: the next push sees
        // it.)
        std::fs::write(body.join("0000000982"), b"new").unwrap();
        let (names, cached) = scan_after(&|| {
            std::fs::remove_file(body.join("0000000982")).unwrap();
            std::fs::remove_file(body.join("link")).unwrap();
            std::fs::remove_dir_all(body.join("dir")).unwrap();
        })
        .unwrap();
        let body_path = |n: &str| format!("/var/lib/nginx/body/{n}");
        assert_eq!(names, [body_path("0000000981"), body_path("kept")]);
        assert!(cached >= 3, "the files were not cached: {cached}");
        // A file with a second name: the first name goes, the second stays.
        std::fs::hard_link(body.join("kept"), body.join("zz-linked")).unwrap();
        let err: crate::Error =
            scan_after(&|| std::fs::remove_file(body.join("kept")).unwrap()).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("/var/lib/nginx/body/zz-linked"), "{err}");
        assert!(err.contains("push again"), "{err}");
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
