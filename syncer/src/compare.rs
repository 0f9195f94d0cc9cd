//! How a host's tree differs from an image: one merge walk of two sorted entry lists,
//! producing the per-path [`Change`]s that a push applies and `status`/`diff` report.
//! Local-state paths and whatever lies on other filesystems are never part of it, except
//! local-state paths of the image that the host lacks: those are added.

use crate::protocol::{Change, ChangeKind, Kept, KeptWhy};
use imager::tree::path_cmp;
use imager::tree::scan::Excludes;
use imager::{Entry, Kind, Tree};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

/// A host's tree as the agent scanned it.
#[derive(Debug, Default)]
pub struct HostTree {
    /// In image order ([`path_cmp`]), files with their content hash.
    pub entries: Vec<Entry>,
    /// Paths left alone with everything below them: mount points (not entered, never
    /// changed) and symlinks at or above local state (the host's own layout).
    pub kept: BTreeMap<Vec<u8>, KeptWhy>,
    /// Directories holding local state the scan skipped, or a kept path: never deleted
    /// or replaced, and their mtime (which the host's own writes move) is not compared.
    pub protected: HashSet<Vec<u8>>,
    /// Entries whose inode has more names than the scan saw (a hard link outside the
    /// root or in local state): changing them in place would change those names too, so
    /// they are drift, replaced by a new inode.
    pub shared: HashSet<Vec<u8>>,
    /// Local-state paths the image has and the host lacks (a first install onto an empty
    /// root: /var/log/nginx, /etc/hosts). They are added like any missing path, once;
    /// once present they are the host's and never compared again.
    pub absent_local: HashSet<Vec<u8>>,
}

impl HostTree {
    /// True when `path` is a kept path or lies below one.
    pub fn is_kept(&self, path: &[u8]) -> bool {
        let mut p = Some(path);
        while let Some(q) = p {
            if self.kept.contains_key(q) {
                return true;
            }
            p = imager::tree::parent(q);
        }
        false
    }

    /// What the scan left alone, for the report.
    pub fn kept_list(&self) -> Vec<Kept> {
        self.kept
            .iter()
            .map(|(p, w)| Kept {
                path: p.clone(),
                why: *w,
            })
            .collect()
    }
}

/// How closely directories that hold local state are compared.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum DirMtimes {
    /// Their mtime counts: a push sets it back to the image's.
    Strict,
    /// Their mtime is the host's business (its own writes move it): `status` and `diff`.
    Lenient,
}

/// Every path where the host differs from `image`, in image order.
pub fn compare(image: &Tree, host: &HostTree, local: &Excludes, mtimes: DirMtimes) -> Vec<Change> {
    let (x, y) = (image.entries(), &host.entries);
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    let skip = |p: &[u8]| local.covers(p) || host.is_kept(p);
    while i < x.len() || j < y.len() {
        let ord = match (x.get(i), y.get(j)) {
            (Some(a), Some(b)) => path_cmp(&a.path, &b.path),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match ord {
            Ordering::Less => {
                let t = &x[i];
                i += 1;
                if !skip(&t.path) || host.absent_local.contains(&t.path) {
                    out.push(change(&t.path, ChangeKind::Add, None));
                }
            }
            Ordering::Greater => {
                let h = &y[j];
                j += 1;
                // A directory the image lacks that holds local state (or the syncer's
                // own state) stays: it is no difference to report or apply.
                if !skip(&h.path) && !host.protected.contains(&h.path) {
                    out.push(change(&h.path, ChangeKind::Delete, Some(h)));
                }
            }
            Ordering::Equal => {
                let (t, h) = (&x[i], &y[j]);
                i += 1;
                j += 1;
                if skip(&t.path) {
                    continue;
                }
                let lenient = mtimes == DirMtimes::Lenient && host.protected.contains(&t.path);
                let kind = match differ(t, h, lenient) {
                    // Same content, but other names share the inode: a new one.
                    None | Some(ChangeKind::Meta) if host.shared.contains(&t.path) => {
                        Some(if matches!(t.kind, Kind::File { .. }) {
                            ChangeKind::Content
                        } else {
                            ChangeKind::Replace
                        })
                    }
                    k => k,
                };
                if let Some(kind) = kind {
                    out.push(change(&t.path, kind, Some(h)));
                }
            }
        }
    }
    relink(image, &mut out, &skip);
    out
}

fn change(path: &[u8], kind: ChangeKind, host: Option<&Entry>) -> Change {
    Change {
        path: path.to_vec(),
        kind,
        host: host.cloned(),
    }
}

/// How `h` (host) must change to become `t` (image), if at all.
fn differ(t: &Entry, h: &Entry, lenient_mtime: bool) -> Option<ChangeKind> {
    let meta = |mtime_counts: bool| {
        t.mode != h.mode
            || t.uid != h.uid
            || t.gid != h.gid
            || t.xattrs != h.xattrs
            || (mtime_counts && t.mtime != h.mtime)
    };
    match (&t.kind, &h.kind) {
        (Kind::File { hash: a, size: s }, Kind::File { hash: b, size: r }) => {
            if a != b || s != r {
                Some(ChangeKind::Content)
            } else {
                meta(true).then_some(ChangeKind::Meta)
            }
        }
        (Kind::Dir, Kind::Dir) => meta(!lenient_mtime).then_some(ChangeKind::Meta),
        (Kind::HardLink { target: a }, Kind::HardLink { target: b }) => {
            (a != b).then_some(ChangeKind::Replace)
        }
        (a, b) if a == b => meta(true).then_some(ChangeKind::Meta),
        _ => Some(ChangeKind::Replace),
    }
}

/// A hard link whose target file gets a new inode must be made again, or it would keep
/// naming the old content.
fn relink(image: &Tree, out: &mut Vec<Change>, skip: &dyn Fn(&[u8]) -> bool) {
    let renewed: HashSet<Vec<u8>> = out
        .iter()
        .filter(|c| {
            matches!(
                c.kind,
                ChangeKind::Add | ChangeKind::Content | ChangeKind::Replace
            )
        })
        .map(|c| c.path.clone())
        .collect();
    if renewed.is_empty() {
        return;
    }
    let listed: HashSet<Vec<u8>> = out.iter().map(|c| c.path.clone()).collect();
    let mut extra = Vec::new();
    for e in image.entries() {
        if let Kind::HardLink { target } = &e.kind {
            // Not below a mount or kept symlink, nor local state: never written.
            if renewed.contains(target) && !listed.contains(&e.path) && !skip(&e.path) {
                extra.push(Change {
                    path: e.path.clone(),
                    kind: ChangeKind::Replace,
                    host: None,
                });
            }
        }
    }
    if !extra.is_empty() {
        out.extend(extra);
        out.sort_by(|a, b| path_cmp(&a.path, &b.path));
    }
}

/// The manifest of a tree as a host that was installed from it holds it, whatever the
/// host has done since to what is its own: without the paths local state covers and
/// the subtrees of `kept` paths (mount points, local-state symlinks), and with every
/// directory's mtime 0 (the host's writes to its local state move its parents'). The
/// agent sends the ID of its own tree's view (`Identity`); the controller finds the
/// image whose view has it and sends the manifest as a delta against that view.
pub fn host_view<'a>(
    entries: impl Iterator<Item = &'a Entry>,
    local: &Excludes,
    kept: &[Vec<u8>],
) -> imager::Result<String> {
    let under_kept = |p: &[u8]| {
        kept.iter()
            .any(|k| p == k.as_slice() || imager::tree::is_below(p, k))
    };
    let view: Vec<Entry> = entries
        .filter(|e| e.path == b"/" || (!local.covers(&e.path) && !under_kept(&e.path)))
        .map(|e| {
            let mut e = e.clone();
            if e.kind == Kind::Dir {
                e.mtime = 0;
            }
            e
        })
        .collect();
    Ok(imager::tree::text::print(&Tree::new(view)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imager::Hash;

    fn file(p: &str, content: &[u8], mode: u32) -> Entry {
        Entry {
            path: p.as_bytes().to_vec(),
            kind: Kind::File {
                size: content.len() as u64,
                hash: Hash::of(content),
            },
            mode,
            uid: 0,
            gid: 0,
            mtime: 1,
            xattrs: vec![],
        }
    }

    #[test]
    fn classifies_every_kind_of_difference() {
        let d = |p: &str| Entry::dir(p.as_bytes(), 0o755, 1);
        let mut link = file("/etc/l", b"", 0);
        link.kind = Kind::Symlink {
            target: b"x".to_vec(),
        };
        link.mode = 0o777;
        let image = Tree::new(vec![
            d("/"),
            d("/etc"),
            file("/etc/a", b"new", 0o644),
            file("/etc/b", b"same", 0o600),
            file("/etc/c", b"c", 0o644),
            link.clone(),
            d("/var"),
            d("/var/log"),
        ])
        .expect("tree");
        let mut host_link = link;
        host_link.kind = Kind::Symlink {
            target: b"y".to_vec(),
        };
        let mut log_dir = d("/var/log");
        log_dir.mtime = 99;
        let host = HostTree {
            entries: vec![
                d("/"),
                d("/etc"),
                file("/etc/a", b"old", 0o644),
                file("/etc/b", b"same", 0o644),
                host_link,
                file("/etc/z", b"extra", 0o644),
                d("/var"),
                log_dir,
                file("/var/log/syslog", b"mine", 0o644),
            ],
            protected: [b"/var/log".to_vec()].into_iter().collect(),
            ..Default::default()
        };
        let local = Excludes::new(&["/var/log/**".to_string()]).expect("globs");
        let got: Vec<(String, char)> = compare(&image, &host, &local, DirMtimes::Lenient)
            .iter()
            .map(|c| {
                (
                    String::from_utf8_lossy(&c.path).into_owned(),
                    c.kind.letter(),
                )
            })
            .collect();
        let want: Vec<(String, char)> = [
            ("/etc/a", 'M'),
            ("/etc/b", 'm'),
            ("/etc/c", 'A'),
            ("/etc/l", 'R'),
            ("/etc/z", 'D'),
        ]
        .iter()
        .map(|(p, k)| (p.to_string(), *k))
        .collect();
        assert_eq!(got, want);
    }
}
