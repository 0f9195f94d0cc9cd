//! Reading a directory into image entries: one walk (not crossing into other
//! filesystems), then the per-entry system calls (xattrs) in parallel. File content is not
//! read here; the ingest stage reads each file once, to normalise, hash and store it.

use super::{Entry, Hash, Kind, SYMLINK_MODE};
use crate::error::{Error, Result};
use crate::fsx;
use globset::{Candidate, GlobSet};
use rayon::prelude::*;
use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where an entry's content comes from until it is hashed and stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// A file on disk, read when ingested.
    Disk(PathBuf),
    /// Held in memory: small files an archive importer keeps because a normalisation
    /// rule may apply to them.
    Bytes(Vec<u8>),
    /// Already hashed (and stored, when ingesting into a store): the hash is in the entry.
    Known,
    /// Like `Known`, from an archive importer that would have kept the file for a
    /// normalisation rule but for its size; its first bytes, so that the ingest can say
    /// which rule it was not given to and report it.
    KnownTooLarge([u8; 3]),
}

/// An entry whose file content (if any) has not been hashed yet.
#[derive(Clone, Debug)]
pub struct Pending {
    /// The entry. A `File`'s hash is final only when `content` is [`Content::Known`] or
    /// [`Content::KnownTooLarge`]; otherwise the ingest sets it (a scan leaves zeros).
    pub entry: Entry,
    /// Where the file's content comes from; `None` for an entry without content to ingest
    /// (anything but a `File`).
    pub content: Option<Content>,
}

/// Paths left out of a scan or an import: globs over entry paths (`/var/log/**`).
/// A directory that matches is left out with everything below it.
#[derive(Clone, Default)]
pub struct Excludes {
    set: Option<GlobSet>,
    /// Each pattern's components, matched one by one (`None` for `**`): whether a match
    /// could lie at or below a path.
    components: Vec<Vec<Option<globset::GlobMatcher>>>,
}

impl Excludes {
    /// Compiles glob patterns over entry paths (`*` within a name, `**` across
    /// directories, `\` escapes); no patterns exclude nothing. A bad pattern is a usage error.
    pub fn new(patterns: &[String]) -> Result<Excludes> {
        if patterns.is_empty() {
            return Ok(Excludes::default());
        }
        let mut b = globset::GlobSetBuilder::new();
        for p in patterns {
            let g = globset::GlobBuilder::new(p)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::Usage(format!("bad exclude pattern {p:?}: {e}")))?;
            b.add(g);
        }
        let set = b
            .build()
            .map_err(|e| Error::Usage(format!("bad exclude patterns: {e}")))?;
        let components = patterns
            .iter()
            .map(|p| components_of(p))
            .collect::<Result<_>>()?;
        Ok(Excludes {
            set: Some(set),
            components,
        })
    }

    /// True when `path` is excluded or is a directory some excluded path could lie
    /// below (`/var` and `/var/log` for `/var/log/**`, `/srv/app` for `/srv/*/data`,
    /// every path for `**/cache`): replacing it would take the excluded paths with it.
    pub fn is_at_or_above(&self, path: &[u8]) -> bool {
        if path == b"/" {
            return false;
        }
        if self.is_excluded(path) {
            return true;
        }
        let names: Vec<&[u8]> = path
            .split(|&c| c == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        self.components.iter().any(|pattern| {
            for (i, name) in names.iter().enumerate() {
                match pattern.get(i) {
                    // The pattern ends above the path: the path would be below a match
                    // (which `is_excluded` answered), not above one.
                    None => return false,
                    Some(None) => return true,
                    Some(Some(m)) if !m.is_match(fsx::bytes_path(name)) => return false,
                    Some(Some(_)) => {}
                }
            }
            true
        })
    }

    /// Reads patterns from list files: one a line, `#` comments and blank lines skipped.
    pub fn from_files(files: &[PathBuf], extra: &[String]) -> Result<Excludes> {
        let mut patterns = extra.to_vec();
        for f in files {
            patterns.extend(list_lines(&fsx::read_to_string(f)?));
        }
        Excludes::new(&patterns)
    }

    /// True when `path` or one of its parent directories is excluded.
    pub fn covers(&self, path: &[u8]) -> bool {
        let mut p = Some(path);
        while let Some(q) = p {
            if self.is_excluded(q) {
                return true;
            }
            p = super::parent(q);
        }
        false
    }

    /// [`Excludes::covers`] for many paths asked in path order ([`Covering`]).
    pub fn covering(&self) -> Covering<'_> {
        Covering {
            excludes: self,
            last: std::cell::RefCell::new(None),
        }
    }

    /// True when `path` itself matches a pattern (its parents are not looked at: see
    /// [`Excludes::covers`]); the root is never excluded.
    pub fn is_excluded(&self, path: &[u8]) -> bool {
        match &self.set {
            Some(s) => path != b"/" && s.is_match_candidate(&Candidate::new(fsx::bytes_path(path))),
            None => false,
        }
    }
}

/// [`Excludes::covers`] remembering its answer for the last parent directory asked
/// about: a path is covered when it matches or its parent is covered, so paths asked in
/// path order cost one match each instead of one per ancestor (a comparison of two
/// 16,000-entry trees asked some 200,000).
pub struct Covering<'a> {
    excludes: &'a Excludes,
    last: std::cell::RefCell<Option<(Vec<u8>, bool)>>,
}

impl Covering<'_> {
    /// True when `path` or one of its parent directories is excluded.
    pub fn covers(&self, path: &[u8]) -> bool {
        if self.excludes.set.is_none() {
            return false;
        }
        if self.excludes.is_excluded(path) {
            return true;
        }
        let Some(parent) = super::parent(path) else {
            return false;
        };
        let mut last = self.last.borrow_mut();
        match &*last {
            Some((p, covered)) if p.as_slice() == parent => *covered,
            _ => {
                let covered = self.excludes.covers(parent);
                *last = Some((parent.to_vec(), covered));
                covered
            }
        }
    }
}

/// A pattern's components as matchers of one name each (`None` for `**`).
fn components_of(pattern: &str) -> Result<Vec<Option<globset::GlobMatcher>>> {
    pattern
        .split('/')
        .filter(|c| !c.is_empty())
        .map(|c| {
            if c == "**" {
                return Ok(None);
            }
            globset::GlobBuilder::new(c)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map(|g| Some(g.compile_matcher()))
                .map_err(|e| Error::Usage(format!("bad exclude pattern {pattern:?}: {e}")))
        })
        .collect()
}

/// The patterns of a list file: one a line, `#` comments and blank lines skipped.
pub fn list_lines(body: &str) -> Vec<String> {
    body.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// A path found by [`walk`]: its entry path, its path on disk and its metadata.
pub struct Found {
    /// The entry path (`/etc/passwd`), relative to the walked root.
    pub path: Vec<u8>,
    /// The path on disk (the root joined with the entry path).
    pub disk: PathBuf,
    /// Its metadata, a symlink's own (not followed).
    pub meta: std::fs::Metadata,
}

/// One walk of `root` (a directory), in image order, never following symlinks and never
/// entering another filesystem (mount points below `root` are listed, not entered).
/// `skip(path)` leaves a path out, and with a directory everything below it.
///
/// Directories are read in parallel (rayon), each entry's metadata taken relative to
/// its directory's handle (std's `DirEntry::metadata`), not by resolving its whole path
/// again: a host's scan, most of a managed push, was one thread of `statx` path walks.
pub fn walk(root: &Path, skip: impl Fn(&[u8]) -> bool + Sync) -> Result<Vec<Found>> {
    walk_with(root, &skip, false)
}

/// [`walk`] of a tree that changes while it is walked (a running host: nginx's temp
/// files come and go by the hundred): an entry gone between its directory's listing and
/// its metadata, or a directory gone before it is listed, is left out, as it is gone.
pub fn walk_live(root: &Path, skip: impl Fn(&[u8]) -> bool + Sync) -> Result<Vec<Found>> {
    walk_with(root, &skip, true)
}

/// Whether an error says the entry is gone: removed, or a directory replaced by a
/// non-directory, since it was listed.
pub fn is_vanished(e: &Error) -> bool {
    matches!(
        e.io_kind(),
        Some(std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory)
    )
}

fn walk_with(root: &Path, skip: &(dyn Fn(&[u8]) -> bool + Sync), live: bool) -> Result<Vec<Found>> {
    let meta = fsx::symlink_metadata(root)?;
    if !meta.is_dir() {
        return Err(Error::Usage(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let w = Walk {
        root_dev: meta.dev(),
        skip,
        live,
        found: std::sync::Mutex::new(Vec::new()),
        error: std::sync::Mutex::new(None),
    };
    rayon::scope(|s| w.dir(s, root.to_path_buf(), b"/".to_vec()));
    if let Some(e) = w.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut found = w.found.into_inner().unwrap_or_else(|p| p.into_inner());
    found.push(Found {
        path: b"/".to_vec(),
        disk: root.to_path_buf(),
        meta,
    });
    found.sort_by(|a, b| super::path_cmp(&a.path, &b.path));
    Ok(found)
}

/// A walk in progress ([`walk`]): what it found, and its first error.
struct Walk<'a> {
    root_dev: u64,
    skip: &'a (dyn Fn(&[u8]) -> bool + Sync),
    /// Entries that vanish are left out ([`walk_live`]).
    live: bool,
    found: std::sync::Mutex<Vec<Found>>,
    error: std::sync::Mutex<Option<Error>>,
}

impl<'a> Walk<'a> {
    /// Lists directory `disk` (entry path `path`), and walks each of its directories on
    /// the root's filesystem as a task of its own.
    fn dir<'s>(&'s self, s: &rayon::Scope<'s>, disk: PathBuf, path: Vec<u8>) {
        if let Err(e) = self.list(s, &disk, &path) {
            let mut first = self.error.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert(e);
        }
    }

    fn list<'s>(&'s self, s: &rayon::Scope<'s>, disk: &Path, path: &[u8]) -> Result<()> {
        let mut here = Vec::new();
        let listed = match fsx::read_dir(disk) {
            // The root itself stays strict: a root gone is not an empty host.
            Err(e) if self.live && is_vanished(&e) && path != b"/" => return Ok(()),
            r => r?,
        };
        for ent in listed {
            let name = ent.file_name();
            let name = fsx::path_bytes(Path::new(&name));
            let mut p = Vec::with_capacity(path.len() + 1 + name.len());
            p.extend_from_slice(path);
            if path != b"/" {
                p.push(b'/');
            }
            p.extend_from_slice(name);
            // Before its metadata: what is left out is not even looked at.
            if (self.skip)(&p) {
                continue;
            }
            let disk = ent.path();
            let m = match ent.metadata() {
                Err(e) if self.live && e.kind() == std::io::ErrorKind::NotFound => continue,
                r => r.map_err(|e| Error::io("inspect", disk.clone(), e))?,
            };
            if m.is_dir() && m.dev() == self.root_dev {
                let (d, q) = (disk.clone(), p.clone());
                s.spawn(move |s| self.dir(s, d, q));
            }
            here.push(Found {
                path: p,
                disk,
                meta: m,
            });
        }
        self.found
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(here);
        Ok(())
    }
}

/// The entry for a walked path, without content hash or xattrs (`None` for a socket,
/// which no image holds). `links` remembers multiply-linked inodes: the first path (in
/// image order) of an inode is its `File`, later ones are `HardLink`s to it.
pub fn entry_of(f: &Found, links: &mut HashMap<(u64, u64), Vec<u8>>) -> Result<Option<Entry>> {
    let (p, m) = (&f.path, &f.meta);
    let ft = m.file_type();
    let kind = if ft.is_file() {
        match m.nlink() > 1 {
            true => match links.get(&(m.dev(), m.ino())) {
                Some(first) => Kind::HardLink {
                    target: first.clone(),
                },
                None => {
                    links.insert((m.dev(), m.ino()), p.clone());
                    Kind::File {
                        size: m.len(),
                        hash: Hash([0; 32]),
                    }
                }
            },
            false => Kind::File {
                size: m.len(),
                hash: Hash([0; 32]),
            },
        }
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        let t = fsx::read_link(&f.disk)?;
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
    } else if ft.is_socket() {
        return Ok(None);
    } else {
        return Err(Error::invalid(p, "unknown file type"));
    };
    let mode = if matches!(kind, Kind::Symlink { .. }) {
        SYMLINK_MODE
    } else {
        m.mode() & super::MODE_MASK
    };
    Ok(Some(Entry {
        path: p.clone(),
        kind,
        mode,
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
        xattrs: Vec::new(),
    }))
}

/// Walks `root` into sorted pending entries. Sockets are refused (an image cannot carry
/// one); mount points below `root` are kept as directories but not entered.
pub fn scan(root: &Path, excludes: &Excludes) -> Result<Vec<Pending>> {
    let found = walk(root, |p| excludes.is_excluded(p))?;
    let mut links = HashMap::new();
    let mut out: Vec<Pending> = Vec::with_capacity(found.len());
    for f in &found {
        let entry = entry_of(f, &mut links)?.ok_or_else(|| {
            Error::invalid(
                &f.path,
                format!(
                    "{} is a socket, which an image cannot hold",
                    f.disk.display()
                ),
            )
        })?;
        let content =
            matches!(entry.kind, Kind::File { .. }).then(|| Content::Disk(f.disk.clone()));
        out.push(Pending { entry, content });
    }
    drop(found);

    // The xattr calls are the scan's per-entry syscalls; spread them over the cores.
    out.par_iter_mut().try_for_each(|pe| -> Result<()> {
        if !pe.entry.is_hardlink() {
            pe.entry.xattrs = fsx::read_xattrs(&fsx::under(root, &pe.entry.path))?;
        }
        Ok(())
    })?;
    // Refused before any content is read (the tree's validation would, after).
    for pe in &out {
        super::check_applicable(&pe.entry).map_err(|r| {
            Error::invalid(
                &pe.entry.path,
                format!("{}: {r}", fsx::under(root, &pe.entry.path).display()),
            )
        })?;
    }
    // A hard link's metadata is its target's; ingest copies it once content is final.
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asked in any order, remembering or not, the covering answers as `covers` does.
    #[test]
    fn a_covering_answers_as_covers_in_any_order() {
        let ex = Excludes::new(&[
            "/var/log".to_string(),
            "/home/*/.cache".to_string(),
            "**/*.pyc".to_string(),
        ])
        .expect("patterns");
        let paths: Vec<&[u8]> = vec![
            b"/",
            b"/etc",
            b"/etc/a.pyc",
            b"/home",
            b"/home/u",
            b"/home/u/.cache",
            b"/home/u/.cache/x",
            b"/home/u/.cache/x/y",
            b"/home/u/.config",
            b"/var",
            b"/var/log",
            b"/var/log/syslog",
            b"/var/log/apt/history.log",
            b"/var/lib",
            b"/var/lib/x.pyc/inner",
            b"/var/lib/y",
        ];
        let covering = ex.covering();
        let want: Vec<bool> = paths.iter().map(|p| ex.covers(p)).collect();
        assert_eq!(want.iter().filter(|&&c| c).count(), 8, "{want:?}");
        for order in [paths.clone(), paths.iter().rev().cloned().collect()] {
            for p in order {
                let i = paths.iter().position(|q| *q == p).expect("a listed path");
                assert_eq!(
                    covering.covers(p),
                    want[i],
                    "{}",
                    String::from_utf8_lossy(p)
                );
            }
        }
        assert!(!Excludes::default().covering().covers(b"/var/log"));
    }

    /// A skipped mount point must not end the walk of its parent (walkdir's filter_entry
    /// with same_file_system did that: on a booted host, every name after /proc).
    #[test]
    #[allow(clippy::disallowed_methods)] // the test sets up its tree directly
    fn a_skipped_mount_point_leaves_its_siblings_walked() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path();
        let names: Vec<String> = (0..30).map(|i| format!("d{i:02}")).collect();
        for n in &names {
            std::fs::create_dir(root.join(n)).expect("mkdir");
            std::fs::write(root.join(n).join("f"), n).expect("write");
        }
        let mounted = root.join("d07");
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&mounted)
            .status()
            .expect("mount");
        assert!(st.success(), "mount (the tests run as root)");
        let found = walk(root, |p| p == b"/d07").expect("walk");
        let _ = std::process::Command::new("umount").arg(&mounted).status();
        let paths: Vec<String> = found
            .iter()
            .map(|f| String::from_utf8_lossy(&f.path).into_owned())
            .collect();
        for n in names.iter().filter(|n| *n != "d07") {
            assert!(
                paths.contains(&format!("/{n}/f")),
                "/{n}/f not walked: {paths:?}"
            );
        }
        assert!(!paths.iter().any(|p| p.starts_with("/d07")), "{paths:?}");
        // Not skipped, a mount point is listed, not entered.
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&mounted)
            .status()
            .expect("mount");
        std::fs::write(mounted.join("inside"), "x").expect("write");
        let found = walk(root, |_| false).expect("walk");
        let _ = std::process::Command::new("umount").arg(&mounted).status();
        let paths: Vec<Vec<u8>> = found.into_iter().map(|f| f.path).collect();
        assert!(paths.contains(&b"/d07".to_vec()));
        assert!(!paths.contains(&b"/d07/inside".to_vec()));
        assert!(paths.contains(&b"/d29/f".to_vec()));
    }

    #[test]
    fn a_path_at_or_above_an_excluded_one_is_told() {
        let ex = Excludes::new(&[
            "/var/log/**".to_string(),
            "/etc/ssh/ssh_host_*".to_string(),
            "/etc/machine-id".to_string(),
            "**/cache".to_string(),
        ])
        .expect("globs");
        for p in [
            "/var",
            "/var/log",
            "/var/log/x",
            "/etc/ssh",
            "/etc/machine-id",
            "/a/cache",
            // `**/cache` could lie below any directory.
            "/usr/bin",
        ] {
            assert!(ex.is_at_or_above(p.as_bytes()), "{p}");
        }
        let mid = Excludes::new(&["/srv/*/data/**".to_string()]).expect("globs");
        for p in ["/srv", "/srv/app", "/srv/app/data"] {
            assert!(mid.is_at_or_above(p.as_bytes()), "{p}");
        }
        for p in ["/srv/app/logs", "/usr", "/srvx"] {
            assert!(!mid.is_at_or_above(p.as_bytes()), "{p}");
        }
        let plain = Excludes::new(&[
            "/var/log/**".to_string(),
            "/etc/ssh/ssh_host_*".to_string(),
            "/etc/machine-id".to_string(),
        ])
        .expect("globs");
        for p in [
            "/",
            "/etc/ssh/sshd_config",
            "/usr",
            "/etc/machine-idx",
            "/variable",
        ] {
            assert!(!plain.is_at_or_above(p.as_bytes()), "{p}");
        }
    }
}
