//! `syncer cache prune`: keeps the controller's delta cache within a size. A read of an
//! entry marks it used (its modification time, renewed when an hour old), so the entries
//! kept are the most recently used that fit, and the rest go, least recently used first: what the fleet's
//! current images need stays, the deltas to images long gone do not. Temporary files
//! and foreign files are left to `cache verify --repair`.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// What [`prune`] did (or, in a dry run, would do).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PruneReport {
    /// The cache directory.
    pub dir: PathBuf,
    /// Nothing was removed: the counts say what would be.
    pub dry_run: bool,
    /// Entries removed.
    pub removed: usize,
    /// Their bytes.
    pub removed_bytes: u64,
    /// Entries kept.
    pub kept: usize,
    /// Their bytes.
    pub kept_bytes: u64,
}

/// Keeps the most recently used entries of `dir` whose sizes add up to at most
/// `max_bytes`, and removes the others (none with `dry_run`). An entry another prune
/// removed first counts as removed.
pub fn prune(dir: &Path, max_bytes: u64, dry_run: bool) -> imager::Result<PruneReport> {
    let mut entries = Vec::new();
    for e in imager::fsx::read_dir(dir)? {
        let name = e.file_name().to_string_lossy().into_owned();
        if super::parse_entry_name(&name).is_none() && !super::views::is_view(&name) {
            continue;
        }
        let path = e.path();
        let m = imager::fsx::symlink_metadata(&path)?;
        if m.is_file() {
            let used = m.modified().unwrap_or(UNIX_EPOCH);
            entries.push((used, m.len(), name, path));
        }
    }
    // Most recently used first; a tie in a stable order.
    entries.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.2.cmp(&b.2)));
    let mut r = PruneReport {
        dir: dir.to_path_buf(),
        dry_run,
        ..Default::default()
    };
    let mut full = false;
    for (_, len, _, path) in entries {
        full = full || r.kept_bytes + len > max_bytes;
        if !full {
            r.kept += 1;
            r.kept_bytes += len;
            continue;
        }
        if !dry_run {
            if let Err(e) = imager::fsx::remove_file(&path) {
                if imager::fsx::exists(&path)? {
                    return Err(e);
                }
            }
        }
        r.removed += 1;
        r.removed_bytes += len;
    }
    Ok(r)
}
