//! How each path and each package differs between two opened images: the sides' metadata
//! compared phrase by phrase, risky changes flagged, content shown as a text diff or a
//! content view ([`super::views`]).

use super::opened::Opened;
use super::*;
use crate::error::Result;
use crate::escape::escape;
use crate::packages::dpkg;
use crate::tree::{Entry, Kind, Tree};
use std::collections::BTreeMap;

/// Text files up to this size get a unified diff.
const MAX_TEXT_DIFF: u64 = 64 << 10;

fn side(e: &Entry, tree: &Tree) -> FileSide {
    // A hard link's metadata is its target's; show that, with the link.
    let meta = match &e.kind {
        Kind::HardLink { target } => tree.get(target).unwrap_or(e),
        _ => e,
    };
    let (size, blake3) = match &meta.kind {
        Kind::File { size, hash } => (Some(*size), Some(hash.to_hex())),
        _ => (None, None),
    };
    FileSide {
        kind: e.kind.name(),
        size,
        blake3,
        mode: format!("{:04o}", meta.mode),
        uid: meta.uid,
        gid: meta.gid,
        target: match &e.kind {
            Kind::Symlink { target } | Kind::HardLink { target } => Some(escape(target)),
            _ => None,
        },
        device: match &e.kind {
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                Some(format!("{major},{minor}"))
            }
            _ => None,
        },
        capability: meta
            .xattrs
            .iter()
            .find(|(n, _)| n == b"security.capability")
            .map(|(_, v)| hex::encode(v)),
        mtime: meta.mtime,
    }
}

/// Is this content worth a text diff: small, UTF-8, no NUL.
pub(super) fn is_text(data: &[u8]) -> bool {
    data.len() as u64 <= MAX_TEXT_DIFF && !data.contains(&0) && std::str::from_utf8(data).is_ok()
}

fn describe(
    path: &[u8],
    old: Option<&Entry>,
    new: Option<&Entry>,
    a: &Opened,
    b: &Opened,
    no_content: bool,
) -> Result<FileChange> {
    let (os, ns) = (old.map(|e| side(e, &a.tree)), new.map(|e| side(e, &b.tree)));
    let mut what = Vec::new();
    let mut flagged = Vec::new();
    let change = match (&os, &ns, old, new) {
        (None, Some(n), _, _) => {
            if special(&n.mode) != 0 {
                flagged.push(format!("new {} file with mode {}", n.kind, n.mode));
            }
            if n.capability.is_some() {
                flagged.push("new file with capabilities".into());
            }
            FileChangeKind::Added
        }
        (Some(_), None, _, _) => FileChangeKind::Removed,
        (Some(o), Some(n), Some(oe), Some(ne)) => {
            compare_sides(o, n, &mut what, &mut flagged);
            if oe.xattrs != ne.xattrs && o.capability == n.capability {
                what.push("xattrs".into());
            }
            if oe.mtime != ne.mtime {
                what.push(format!("mtime {} -> {}", date(oe.mtime), date(ne.mtime)));
            }
            FileChangeKind::Changed
        }
        _ => FileChangeKind::Changed,
    };
    let (diff, view) = if no_content {
        (None, None)
    } else {
        content(path, &os, &ns, a, b)?
    };
    Ok(FileChange {
        path: escape(path),
        change,
        old: os,
        new: ns,
        what,
        flagged,
        diff,
        view,
    })
}

/// The setuid and setgid bits of an octal mode.
fn special(m: &str) -> u32 {
    u32::from_str_radix(m, 8).unwrap_or(0) & 0o6000
}

/// What differs between a path's two sides (`what`), and what of that a reviewer must
/// look at (`flagged`: setuid/setgid bits, capabilities).
fn compare_sides(o: &FileSide, n: &FileSide, what: &mut Vec<String>, flagged: &mut Vec<String>) {
    if o.kind != n.kind {
        what.push(format!("type {} -> {}", o.kind, n.kind));
    }
    if o.blake3 != n.blake3 && o.kind == "file" && n.kind == "file" {
        let short = |h: &Option<String>| {
            h.as_deref()
                .map(|h| h[..12].to_string())
                .unwrap_or_default()
        };
        what.push(format!(
            "content {} -> {} bytes, blake3 {} -> {}",
            o.size.unwrap_or(0),
            n.size.unwrap_or(0),
            short(&o.blake3),
            short(&n.blake3)
        ));
    }
    if o.mode != n.mode && o.kind != "symlink" {
        what.push(format!("mode {} -> {}", o.mode, n.mode));
        if special(&o.mode) != special(&n.mode) {
            flagged.push(format!("setuid/setgid bits: mode {} -> {}", o.mode, n.mode));
        }
    }
    if o.uid != n.uid || o.gid != n.gid {
        what.push(format!("owner {}:{} -> {}:{}", o.uid, o.gid, n.uid, n.gid));
    }
    if o.target != n.target {
        what.push(format!(
            "target {} -> {}",
            o.target.as_deref().unwrap_or("-"),
            n.target.as_deref().unwrap_or("-")
        ));
    }
    if o.device != n.device {
        what.push(format!(
            "device {} -> {}",
            o.device.as_deref().unwrap_or("-"),
            n.device.as_deref().unwrap_or("-")
        ));
    }
    if o.capability != n.capability {
        what.push("capabilities".into());
        flagged.push(format!(
            "capabilities {} -> {}",
            o.capability.as_deref().unwrap_or("none"),
            n.capability.as_deref().unwrap_or("none")
        ));
    }
}

/// A time as reviewers read it: `2024-05-20 13:04:05 UTC`.
pub(super) fn date(t: i64) -> String {
    let iso = crate::time::utc(t);
    format!("{} {} UTC", &iso[..10], iso[11..].trim_end_matches('Z'))
}

/// What the path's content change looks like, when it changed: a unified diff when both
/// sides are small text files (or absent), else a content view when there is one.
fn content(
    path: &[u8],
    os: &Option<FileSide>,
    ns: &Option<FileSide>,
    a: &Opened,
    b: &Opened,
) -> Result<(Option<String>, Option<ContentView>)> {
    let content_changed = os.as_ref().map(|s| &s.blake3) != ns.as_ref().map(|s| &s.blake3);
    let readable = |s: &Option<FileSide>, limit: u64| {
        s.as_ref()
            .is_none_or(|s| s.kind == "file" && s.size.unwrap_or(0) <= limit)
    };
    if !content_changed {
        return Ok((None, None));
    }
    if !(readable(os, views::MAX_INPUT) && readable(ns, views::MAX_INPUT)) {
        return Ok((None, None));
    }
    let od = a.bytes(path)?.unwrap_or_default();
    let nd = b.bytes(path)?.unwrap_or_default();
    let small = readable(os, MAX_TEXT_DIFF) && readable(ns, MAX_TEXT_DIFF);
    if small && is_text(&od) && is_text(&nd) {
        let (ot, nt) = (String::from_utf8_lossy(&od), String::from_utf8_lossy(&nd));
        return Ok((Some(unified(path, &ot, &nt)), None));
    }
    let view = views::view(path, &od, &nd, &|p: &[u8]| a.bytes(p), &|p: &[u8]| {
        b.bytes(p)
    })?;
    Ok((None, view))
}

/// A unified diff with three lines of context, headed `a/PATH` and `b/PATH`.
pub(super) fn unified(path: &[u8], old: &str, new: &str) -> String {
    let p = escape(path);
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a{p}"), &format!("b{p}"))
        .to_string()
}

/// The packages that were added, removed or changed version (with the changelog entries
/// an upgrade brings), counted in `summary`; listed if the filter asks for them.
pub(super) fn package_changes(
    a: &Opened,
    b: &Opened,
    filter: &Filter,
    summary: &mut Summary,
) -> Result<Vec<PackageChange>> {
    let mut packages = Vec::new();
    let names: std::collections::BTreeSet<&String> =
        a.packages.keys().chain(b.packages.keys()).collect();
    for name in names {
        let (o, n) = (a.packages.get(name), b.packages.get(name));
        let (change, changelog) = match (o, n) {
            (None, Some(_)) => (PackageChangeKind::Added, Vec::new()),
            (Some(_), None) => (PackageChangeKind::Removed, Vec::new()),
            (Some(o), Some(n)) => match dpkg::compare_versions(&o.version, &n.version) {
                std::cmp::Ordering::Equal => continue,
                std::cmp::Ordering::Less => (
                    PackageChangeKind::Upgraded,
                    // Changelogs carry source versions (a binNMU's +b1 is not in them).
                    dpkg::entries_between(&b.changelog(n)?, &o.source_version, &n.source_version),
                ),
                std::cmp::Ordering::Greater => (PackageChangeKind::Downgraded, Vec::new()),
            },
            (None, None) => continue,
        };
        match change {
            PackageChangeKind::Added => summary.packages_added += 1,
            PackageChangeKind::Removed => summary.packages_removed += 1,
            PackageChangeKind::Upgraded => summary.packages_upgraded += 1,
            PackageChangeKind::Downgraded => summary.packages_downgraded += 1,
        }
        let pkg = n.or(o).expect("one side has the package");
        if !filter.packages.is_empty() && !filter.packages.contains(&pkg.name) {
            continue;
        }
        packages.push(PackageChange {
            name: pkg.name.clone(),
            change,
            old_version: o.map(|p| p.version.clone()),
            new_version: n.map(|p| p.version.clone()),
            source: pkg.source.clone(),
            source_version: pkg.source_version.clone(),
            changelog,
        });
    }

    Ok(packages)
}

/// Changed paths by the package that owns them.
type ByPackage = BTreeMap<String, Vec<FileChange>>;

/// The paths that differ, counted in `summary`, each under the package that owns it
/// (or unowned); listed if the filter asks for them.
pub(super) fn file_changes(
    a: &Opened,
    b: &Opened,
    filter: &Filter,
    packages: &[PackageChange],
    summary: &mut Summary,
) -> Result<(Vec<FileChange>, ByPackage)> {
    let changed: std::collections::HashSet<&str> =
        packages.iter().map(|p| p.name.as_str()).collect();
    let mut unowned = Vec::new();
    let mut by_package: BTreeMap<String, Vec<FileChange>> = BTreeMap::new();
    let (x, y) = (a.tree.entries(), b.tree.entries());
    let (mut i, mut j) = (0, 0);
    while i < x.len() || j < y.len() {
        let ord = match (x.get(i), y.get(j)) {
            (Some(p), Some(q)) => crate::tree::path_cmp(&p.path, &q.path),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let (old, new) = match ord {
            std::cmp::Ordering::Less => {
                i += 1;
                (Some(&x[i - 1]), None)
            }
            std::cmp::Ordering::Greater => {
                j += 1;
                (None, Some(&y[j - 1]))
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
                if x[i - 1] == y[j - 1] {
                    continue;
                }
                (Some(&x[i - 1]), Some(&y[j - 1]))
            }
        };
        let path = &old.or(new).expect("one side has the path").path;
        let size = |e: Option<&Entry>| match e.map(|e| &e.kind) {
            Some(Kind::File { size, .. }) => *size,
            _ => 0,
        };
        summary.bytes_old += size(old);
        summary.bytes_new += size(new);
        match (old, new) {
            (None, Some(_)) => summary.files_added += 1,
            (Some(_), None) => summary.files_removed += 1,
            _ => summary.files_changed += 1,
        }
        if !filter.lists(path) {
            continue;
        }
        let mut owners: Vec<String> = a
            .owners_of(path)
            .chain(b.owners_of(path))
            .cloned()
            .collect();
        owners.sort();
        owners.dedup();
        if !filter.packages.is_empty() && !owners.iter().any(|o| filter.packages.contains(o)) {
            continue;
        }
        let fc = describe(path, old, new, a, b, filter.no_content)?;
        // A path several packages share (a directory) goes under the one asked for, else
        // one that changed version, else the first by name.
        let home = owners
            .iter()
            .find(|o| filter.packages.contains(o))
            .or_else(|| owners.iter().find(|o| changed.contains(o.as_str())))
            .or(owners.first());
        match home {
            None => unowned.push(fc),
            Some(o) => by_package.entry(o.clone()).or_default().push(fc),
        }
    }
    Ok((unowned, by_package))
}
