//! What reviewers read before an image ships: how two images differ, as a model
//! ([`Report`]) rendered as text, JSON or Markdown ([`render`]).
//!
//! Packages come from each image's dpkg status, with the changelog entries between the
//! two versions; files are grouped by the package that owns them (dpkg's file lists),
//! files no package owns first; every file shows what changed about it, the risky
//! changes (setuid/setgid bits, capabilities) flagged, and small text files get a unified
//! diff. Only the manifests are compared; content is read only for dpkg's files,
//! changelogs and the text diffs.

pub mod render;
pub mod try_package;

use crate::error::Result;
use crate::escape::escape;
use crate::packages::dpkg::{self, ChangelogEntry, Package};
use crate::store::Store;
use crate::tree::{Entry, Kind, Tree};
use crate::Hash;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Text files up to this size get a unified diff.
const MAX_TEXT_DIFF: u64 = 64 << 10;

/// One of the two images compared.
#[derive(Clone, Debug, Serialize)]
pub struct Side {
    /// The image's id, in hex.
    pub id: String,
    /// The names whose current image this is, sorted; empty when none points at it.
    pub names: Vec<String>,
}

/// What changed, counted over the whole diff: the filter narrows what is listed, not
/// these counts.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Paths only the new image has.
    pub files_added: u64,
    /// Paths only the old image has.
    pub files_removed: u64,
    /// Paths both images have, with any difference (content, metadata, type).
    pub files_changed: u64,
    /// Bytes of the regular files among the changed paths, in the old image.
    pub bytes_old: u64,
    /// Bytes of the regular files among the changed paths, in the new image.
    pub bytes_new: u64,
    /// Packages only the new image's dpkg status lists.
    pub packages_added: u64,
    /// Packages only the old image's dpkg status lists.
    pub packages_removed: u64,
    /// Packages whose version went up, by dpkg's ordering.
    pub packages_upgraded: u64,
    /// Packages whose version went down, by dpkg's ordering.
    pub packages_downgraded: u64,
}

/// How a package differs between the two images.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PackageChangeKind {
    /// Only in the new image.
    Added,
    /// Only in the old image.
    Removed,
    /// A newer version in the new image; the change carries the changelog entries between.
    Upgraded,
    /// An older version in the new image; no changelog entries are given.
    Downgraded,
}

/// A package added, removed or at another version.
#[derive(Clone, Debug, Serialize)]
pub struct PackageChange {
    /// The binary package's name.
    pub name: String,
    /// Which way it changed.
    pub change: PackageChangeKind,
    /// Its version in the old image; None when it was added.
    pub old_version: Option<String>,
    /// Its version in the new image; None when it was removed.
    pub new_version: Option<String>,
    /// The source package it was built from (the new side's, else the old's).
    pub source: String,
    /// The new (else old) side's source version, which the changelog entries use.
    pub source_version: String,
    /// New changelog entries (upgrades), newest first.
    pub changelog: Vec<ChangelogEntry>,
}

/// How a path differs between the two images.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileChangeKind {
    /// Only in the new image.
    Added,
    /// Only in the old image.
    Removed,
    /// In both, with some difference.
    Changed,
}

/// One side of a changed path, as the manifest line says.
#[derive(Clone, Debug, Serialize)]
pub struct FileSide {
    /// The entry's type: `file`, `dir`, `symlink`, `hardlink`, `char`, `block` or `fifo`.
    pub kind: &'static str,
    /// Content size in bytes; None unless a regular file (or a hard link to one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// BLAKE3 hash of the content, in hex; None unless a regular file (or a hard link to one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// Permission bits as four octal digits (`0755`); a hard link shows its target's.
    pub mode: String,
    /// Owner's numeric user id.
    pub uid: u32,
    /// Owner's numeric group id.
    pub gid: u32,
    /// Where a symlink points or the path a hard link shares, escaped; None otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A device node's `major,minor`; None otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The `security.capability` xattr in hex; None when the file has no capabilities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
}

/// A path that was added, removed or changed.
#[derive(Clone, Debug, Serialize)]
pub struct FileChange {
    /// The path, escaped for display.
    pub path: String,
    /// Whether it was added, removed or changed.
    pub change: FileChangeKind,
    /// The old image's entry; None when added.
    pub old: Option<FileSide>,
    /// The new image's entry; None when removed.
    pub new: Option<FileSide>,
    /// What changed, one phrase each ("content 10 -> 12 bytes", "mode 0644 -> 0755").
    pub what: Vec<String>,
    /// The changes a reviewer must not miss: setuid/setgid bits, capabilities.
    pub flagged: Vec<String>,
    /// A unified diff of the content when both sides are small text files (or absent);
    /// None otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// The changed paths one package owns.
#[derive(Clone, Debug, Serialize)]
pub struct PackageFiles {
    /// The owning package's name.
    pub package: String,
    /// Its changed paths, in image order.
    pub files: Vec<FileChange>,
}

/// How one image differs from another: the model [`render`] prints as text or Markdown
/// and serde gives as JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The image compared from.
    pub old: Side,
    /// The image compared to.
    pub new: Side,
    /// Counts over the whole diff, whatever the filter.
    pub summary: Summary,
    /// Changed packages, by name (only those the filter names, when it names any).
    pub packages: Vec<PackageChange>,
    /// Changed paths no package owns (in either image): they deserve the hardest look.
    pub unowned: Vec<FileChange>,
    /// Changed paths some package owns, grouped by package (sorted by name). A path several
    /// packages own is listed once: under a package the filter named, else one that changed
    /// version, else the first by name.
    pub by_package: Vec<PackageFiles>,
}

/// What to include.
#[derive(Default)]
pub struct Filter {
    /// Only paths these globs match; None for every path.
    pub paths: Option<globset::GlobSet>,
    /// Only these packages and the paths they own; empty for every package.
    pub packages: Vec<String>,
}

/// An image opened for review: its tree and what dpkg says about it.
struct Opened<'s> {
    store: &'s Store,
    tree: Tree,
    packages: BTreeMap<String, Package>,
    owners: HashMap<Vec<u8>, Vec<String>>,
}

impl<'s> Opened<'s> {
    fn open(store: &'s Store, id: &Hash) -> Result<Opened<'s>> {
        let tree = store.read_image(id)?;
        let mut o = Opened {
            store,
            tree,
            packages: BTreeMap::new(),
            owners: HashMap::new(),
        };
        if let Some(status) = o.text(b"/var/lib/dpkg/status")? {
            o.packages = dpkg::installed(&status);
        }
        let lists: Vec<(String, Hash)> = o
            .tree
            .entries()
            .iter()
            .filter_map(|e| match (&e.kind, dpkg::list_owner(&e.path)) {
                (Kind::File { hash, .. }, Some(p)) => Some((p, *hash)),
                _ => None,
            })
            .collect();
        for (pkg, h) in lists {
            let data = store.read_object(&h)?;
            for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let p = if line == b"/." {
                    b"/".to_vec()
                } else {
                    line.to_vec()
                };
                o.owners.entry(p).or_default().push(pkg.clone());
            }
        }
        Ok(o)
    }

    /// The packages that own a path. Debian 12's file lists still name the paths before
    /// the /usr merge (`/lib/x` for what the tree holds at `/usr/lib/x`), so those are
    /// tried too.
    fn owners_of(&self, path: &[u8]) -> impl Iterator<Item = &String> {
        let alias = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"]
            .iter()
            .find_map(|d| {
                let prefix = format!("/usr/{d}/");
                path.starts_with(prefix.as_bytes())
                    .then(|| path[4..].to_vec())
            });
        self.owners
            .get(path)
            .into_iter()
            .chain(alias.and_then(|a| self.owners.get(&a)))
            .flatten()
    }

    /// The content of a regular file of the image.
    fn bytes(&self, path: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.tree.get(path).map(|e| &e.kind) {
            Some(Kind::File { hash, .. }) => Ok(Some(self.store.read_object(hash)?)),
            _ => Ok(None),
        }
    }

    fn text(&self, path: &[u8]) -> Result<Option<String>> {
        Ok(self
            .bytes(path)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    fn changelog(&self, pkg: &Package) -> Result<Vec<ChangelogEntry>> {
        // Native packages (apt, ca-certificates) have only changelog.gz.
        for (name, file) in [
            (&pkg.name, "changelog.Debian.gz"),
            (&pkg.source, "changelog.Debian.gz"),
            (&pkg.name, "changelog.gz"),
            (&pkg.source, "changelog.gz"),
        ] {
            let p = format!("/usr/share/doc/{name}/{file}");
            if let Some(gz) = self.bytes(p.as_bytes())? {
                // Bounded: a package under review may carry a gzip bomb.
                let mut raw = Vec::new();
                let d = flate2::read::MultiGzDecoder::new(&gz[..]);
                if std::io::Read::read_to_end(&mut std::io::Read::take(d, 16 << 20), &mut raw)
                    .is_ok()
                {
                    return Ok(dpkg::changelog_entries(&String::from_utf8_lossy(&raw)));
                }
            }
        }
        Ok(Vec::new())
    }
}

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
    }
}

/// Is this content worth a text diff: small, UTF-8, no NUL.
fn is_text(data: &[u8]) -> bool {
    data.len() as u64 <= MAX_TEXT_DIFF && !data.contains(&0) && std::str::from_utf8(data).is_ok()
}

fn describe(
    path: &[u8],
    old: Option<&Entry>,
    new: Option<&Entry>,
    a: &Opened,
    b: &Opened,
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
                what.push(format!("mtime {} -> {}", oe.mtime, ne.mtime));
            }
            FileChangeKind::Changed
        }
        _ => FileChangeKind::Changed,
    };
    let diff = text_diff(path, &os, &ns, a, b)?;
    Ok(FileChange {
        path: escape(path),
        change,
        old: os,
        new: ns,
        what,
        flagged,
        diff,
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

/// A unified diff of the path's content, when it changed and both sides are small text
/// files (or absent).
fn text_diff(
    path: &[u8],
    os: &Option<FileSide>,
    ns: &Option<FileSide>,
    a: &Opened,
    b: &Opened,
) -> Result<Option<String>> {
    let small = |s: &Option<FileSide>| {
        s.as_ref()
            .is_none_or(|s| s.kind == "file" && s.size.unwrap_or(0) <= MAX_TEXT_DIFF)
    };
    let content_changed = os.as_ref().map(|s| &s.blake3) != ns.as_ref().map(|s| &s.blake3);
    if !(content_changed && small(os) && small(ns)) {
        return Ok(None);
    }
    let od = a.bytes(path)?.unwrap_or_default();
    let nd = b.bytes(path)?.unwrap_or_default();
    if !(is_text(&od) && is_text(&nd)) {
        return Ok(None);
    }
    let (ot, nt) = (String::from_utf8_lossy(&od), String::from_utf8_lossy(&nd));
    let p = escape(path);
    Ok(Some(
        similar::TextDiff::from_lines(ot.as_ref(), nt.as_ref())
            .unified_diff()
            .context_radius(3)
            .header(&format!("a{p}"), &format!("b{p}"))
            .to_string(),
    ))
}

/// How `new` differs from `old`.
pub fn diff(store: &Store, old: &Hash, new: &Hash, filter: &Filter) -> Result<Report> {
    let a = Opened::open(store, old)?;
    let b = Opened::open(store, new)?;
    let mut summary = Summary::default();
    let packages = package_changes(&a, &b, filter, &mut summary)?;
    let (unowned, by_package) = file_changes(&a, &b, filter, &packages, &mut summary)?;
    Ok(Report {
        old: Side {
            id: old.to_hex(),
            names: store.names_of(old)?,
        },
        new: Side {
            id: new.to_hex(),
            names: store.names_of(new)?,
        },
        summary,
        packages,
        unowned,
        by_package: by_package
            .into_iter()
            .map(|(package, files)| PackageFiles { package, files })
            .collect(),
    })
}

/// The packages that were added, removed or changed version (with the changelog entries
/// an upgrade brings), counted in `summary`; listed if the filter asks for them.
fn package_changes(
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
fn file_changes(
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
        if let Some(g) = &filter.paths {
            if !g.is_match(crate::fsx::bytes_path(path)) {
                continue;
            }
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
        let fc = describe(path, old, new, a, b)?;
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
