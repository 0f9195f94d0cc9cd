//! How a host's tree differs from an image: one merge walk of two sorted entry lists,
//! producing the per-path [`Change`]s that a push applies and `status`/`diff` report.
//! Local-state paths and whatever lies on other filesystems are never part of it, except
//! local-state paths of the image that the host lacks: those are added.
//!
//! Who owns a path the image lacks ([`Ownership`]): the image owns what it holds. A host
//! path it does not hold is deleted when the host's recorded image held it (the syncer
//! put it there) or when it lies under a prefix the image owns completely (`/usr`,
//! `/etc`, ...); anything else the host made (a database under `/var/lib`, a crontab,
//! a service's temp directory) is *unmanaged*: kept with everything below it, and the
//! directories above it are neither deleted nor replaced.

use crate::{item, Change, ChangeKind, Kept, KeptWhy, Unmanaged};
use imager_core::tree::path_cmp;
use imager_core::tree::scan::Excludes;
use imager_core::{Entry, Kind, Tree};
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
            p = imager_core::tree::parent(q);
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

/// Who owns the host's paths that the image lacks.
pub struct Ownership<'a> {
    /// The paths of the image the host records (escaped, as its manifest lists them),
    /// when the record checks out: the syncer put them there, so a push that no longer
    /// has them deletes them. `None` for `status` (the recorded image is the one
    /// compared) and for a host that records no image.
    pub recorded: Option<Recorded<'a>>,
    /// Prefixes the image owns completely: what the host made below them goes.
    pub owned: Excludes,
}

impl Ownership<'_> {
    /// The rule for an image whose owned prefixes are `globs`, with no recorded image.
    pub fn owned(globs: &[String]) -> crate::Result<Ownership<'static>> {
        Ok(Ownership {
            recorded: None,
            owned: Excludes::new(globs)?,
        })
    }

    /// Whether a host path the image lacks goes: the syncer put it there, or it lies
    /// under an owned prefix.
    fn deletes(&self, path: &[u8]) -> bool {
        self.owned.covers(path) || self.recorded.as_ref().is_some_and(|r| r.holds(path))
    }
}

/// The paths of a recorded manifest, borrowed from its text: the set is made on the
/// first question (most pushes find nothing on the host that the image lacks).
pub struct Recorded<'a> {
    text: &'a str,
    paths: std::sync::OnceLock<HashSet<&'a str>>,
}

impl<'a> Recorded<'a> {
    /// The paths of `manifest` (a manifest's text), read only when first asked about.
    pub fn of(manifest: &'a str) -> Recorded<'a> {
        Recorded {
            text: manifest,
            paths: std::sync::OnceLock::new(),
        }
    }

    fn holds(&self, path: &[u8]) -> bool {
        self.paths
            .get_or_init(|| imager_core::tree::text::escaped_paths(self.text).collect())
            .contains(imager_core::tree::escape::escape(path).as_str())
    }
}

/// Finds what the host made that the image lacks and does not own: protects the
/// directories above it (never deleted or replaced) and returns, by host entry, whether
/// it is such a path (for [`compare`] to leave out: a flag, not a set of paths, since a
/// database's millions of files would double the scan's memory), and the outermost
/// ones with their entry counts (for reports).
pub fn keep_unmanaged(
    image: &Tree,
    host: &mut HostTree,
    local: &Excludes,
    own: &Ownership,
) -> (Vec<bool>, Vec<Unmanaged>) {
    let mut all = vec![false; host.entries.len()];
    let mut outer: Vec<Unmanaged> = Vec::new();
    let local = local.covering();
    for (i, h) in host.entries.iter().enumerate() {
        let p = &h.path;
        if image.get(p).is_some()
            || local.covers(p)
            || host.is_kept(p)
            || host.protected.contains(p)
            || own.deletes(p)
        {
            continue;
        }
        match outer.last_mut() {
            // Entries come in path order: what is below an outermost path follows it.
            Some(u) if imager_core::tree::is_below(p, &u.path) => u.entries += 1,
            _ => outer.push(Unmanaged {
                path: p.clone(),
                entries: 1,
            }),
        }
        all[i] = true;
    }
    for u in &outer {
        let mut q = imager_core::tree::parent(&u.path);
        while let Some(d) = q {
            if !host.protected.insert(d.to_vec()) {
                break;
            }
            q = imager_core::tree::parent(d);
        }
    }
    (all, outer)
}

/// How closely directories that hold local state are compared.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum DirMtimes {
    /// Their mtime counts: a push sets it back to the image's.
    Strict,
    /// Their mtime is the host's business (its own writes move it): `status` and `diff`.
    Lenient,
}

/// Every path where the host differs from `image`, in image order, and what the host
/// made that is not the image's to delete (see [`Ownership`]), outermost paths first.
pub fn compare(
    image: &Tree,
    host: &mut HostTree,
    local: &Excludes,
    own: &Ownership,
    mtimes: DirMtimes,
) -> (Vec<Change>, Vec<Unmanaged>) {
    let (unmanaged, outer) = keep_unmanaged(image, host, local, own);
    let host: &HostTree = host;
    let (x, y) = (image.entries(), &host.entries);
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    let covering = local.covering();
    let skip = |p: &[u8]| covering.covers(p) || host.is_kept(p);
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
                    out.push(change(
                        &t.path,
                        ChangeKind::Add,
                        None,
                        item::with_kind(0, &t.kind),
                    ));
                }
            }
            Ordering::Greater => {
                let (h, made_here) = (&y[j], unmanaged[j]);
                j += 1;
                // A directory the image lacks that holds local state (or the syncer's
                // own state, or what the host made) stays: it is no difference to
                // report or apply; nor is what the host made.
                if !skip(&h.path) && !host.protected.contains(&h.path) && !made_here {
                    let mut what = item::with_kind(0, &h.kind);
                    if own.recorded.as_ref().is_none_or(|r| !r.holds(&h.path)) {
                        what |= item::UNMANAGED;
                    }
                    out.push(change(&h.path, ChangeKind::Delete, Some(h), what));
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
                    let mut what = item::between(t, h);
                    if host.shared.contains(&t.path) {
                        what |= item::SHARED;
                    }
                    out.push(change(&t.path, kind, Some(h), what));
                }
            }
        }
    }
    relink(image, &mut out, &skip);
    (out, outer)
}

fn change(path: &[u8], kind: ChangeKind, host: Option<&Entry>, what: u32) -> Change {
    Change {
        path: path.to_vec(),
        kind,
        host: host.cloned(),
        what,
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
                    what: item::with_kind(item::REPLACED, &e.kind),
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
) -> imager_core::Result<String> {
    let under_kept = |p: &[u8]| {
        kept.iter()
            .any(|k| p == k.as_slice() || imager_core::tree::is_below(p, k))
    };
    let local = local.covering();
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
    Ok(imager_core::tree::text::print(&Tree::new(view)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imager_core::Hash;

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
        let mut host = host;
        let local = Excludes::new(&["/var/log/**".to_string()]).expect("globs");
        let own = Ownership::owned(&["/etc".to_string()]).expect("globs");
        let got: Vec<(String, char)> = compare(&image, &mut host, &local, &own, DirMtimes::Lenient)
            .0
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

    /// The rule in the module comment: what the recorded image held goes, what the host
    /// made goes only under an owned prefix, and the directories above what the host
    /// made stay even when the recorded image held them.
    #[test]
    fn a_host_keeps_what_it_made_outside_owned_prefixes() {
        let d = |p: &str| Entry::dir(p.as_bytes(), 0o755, 1);
        let image = Tree::new(vec![d("/"), d("/usr"), d("/var"), d("/var/lib")]).expect("tree");
        let recorded_text = imager_core::tree::text::print(
            &Tree::new(vec![
                d("/"),
                d("/usr"),
                file("/usr/old", b"o", 0o644),
                d("/var"),
                d("/var/lib"),
                d("/var/lib/app"),
                file("/var/lib/app/bin", b"b", 0o755),
                file("/var/lib/gone", b"g", 0o644),
            ])
            .expect("tree"),
        );
        let mut host = HostTree {
            entries: vec![
                d("/"),
                d("/srv"),
                file("/srv/mine", b"m", 0o644),
                d("/usr"),
                file("/usr/old", b"o", 0o644),
                file("/usr/stray", b"s", 0o644),
                d("/var"),
                d("/var/lib"),
                d("/var/lib/app"),
                file("/var/lib/app/bin", b"b", 0o755),
                file("/var/lib/app/data", b"d", 0o600),
                file("/var/lib/gone", b"g", 0o644),
                d("/var/lib/postgresql"),
                d("/var/lib/postgresql/15"),
                file("/var/lib/postgresql/15/PG_VERSION", b"15", 0o600),
            ],
            ..Default::default()
        };
        let local = Excludes::new(&[]).expect("globs");
        let own = Ownership {
            recorded: Some(Recorded::of(&recorded_text)),
            owned: Excludes::new(&["/usr".to_string()]).expect("globs"),
        };
        let (changes, unmanaged) = compare(&image, &mut host, &local, &own, DirMtimes::Strict);
        let got: Vec<(String, String)> = changes
            .iter()
            .map(|c| {
                (
                    String::from_utf8_lossy(&c.path).into_owned(),
                    item::letters(c.kind, c.what)
                        + if c.what & item::UNMANAGED != 0 {
                            " host's"
                        } else {
                            ""
                        },
                )
            })
            .collect();
        let want = [
            ("/usr/old", "*deleting"),
            ("/usr/stray", "*deleting host's"),
            ("/var/lib/app/bin", "*deleting"),
            ("/var/lib/gone", "*deleting"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(p, k)| (p.to_string(), k.to_string()))
            .collect();
        assert_eq!(got, want);
        let kept: Vec<(String, u64)> = unmanaged
            .iter()
            .map(|u| (String::from_utf8_lossy(&u.path).into_owned(), u.entries))
            .collect();
        assert_eq!(
            kept,
            [
                ("/srv".to_string(), 2),
                ("/var/lib/app/data".to_string(), 1),
                ("/var/lib/postgresql".to_string(), 3)
            ]
        );
        // /var/lib/app was the recorded image's, but holds what the host made.
        assert!(host.protected.contains(b"/var/lib/app".as_slice()));
    }
}
