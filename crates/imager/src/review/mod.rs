//! What reviewers read before an image ships: how two images differ, as a model
//! ([`Report`]) shaped for reading ([`stat`]: counts per package and directory; [`fold`]:
//! sections per package with long lists and diffs folded) and rendered as text, JSON or
//! Markdown ([`render`]) or as one self-contained HTML page ([`html`]). The shapes are data
//! (serde), so that other renderers reuse them.
//!
//! Packages come from each image's dpkg status, with the changelog entries between the
//! two versions; files are grouped by the package that owns them (dpkg's file lists),
//! files no package owns first; every file shows what changed about it, the risky
//! changes (setuid/setgid bits, capabilities) flagged, and small text files get a unified
//! diff; other files get a content view ([`views`]: ELF symbols and sections, gzip's
//! decompressed text, a .pyc's source). Only the manifests are compared; content is read
//! only for dpkg's files, changelogs, the text diffs and the views.

mod compare;
mod elf;
pub mod fold;
pub mod html;
mod opened;
pub mod render;
pub mod stat;
pub mod try_package;
pub mod views;

use crate::error::Result;
use crate::packages::dpkg::ChangelogEntry;
use crate::store::Store;
use crate::Hash;
use compare::{file_changes, package_changes};
use opened::Opened;
use serde::Serialize;
pub use views::ContentView;

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
    /// Modification time, seconds since 1970 (UTC).
    pub mtime: i64,
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
    /// What changed inside content that is not small text (ELF symbols and sections, a
    /// gzip file's text, a .pyc's source); None when there is no such view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<ContentView>,
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
    /// Not the paths these globs match (after `paths`); None to leave none out.
    pub exclude: Option<globset::GlobSet>,
    /// Only these packages and the paths they own; empty for every package.
    pub packages: Vec<String>,
    /// Read no content for the listed files (no text diffs, no views): for the reports
    /// that show only counts.
    pub no_content: bool,
}

impl Filter {
    /// Whether a changed path (raw bytes) is listed.
    fn lists(&self, path: &[u8]) -> bool {
        let p = crate::fsx::bytes_path(path);
        self.paths.as_ref().is_none_or(|g| g.is_match(p))
            && !self.exclude.as_ref().is_some_and(|g| g.is_match(p))
    }
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
