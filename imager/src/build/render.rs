//! How `imager build`, `rebuild` and `lock` print their reports as text (and the lock's
//! JSON), next to the report types so that a new field is shown where it is defined.

use super::lock::Lock;
use super::vary::VariedRebuild;
use super::{Built, Rebuilt};
use std::io::{self, Write};
use std::path::Path;

impl Built {
    pub fn write_text(&self, out: &mut dyn Write) -> io::Result<()> {
        let b = self;
        writeln!(out, "{} {}", b.id, b.name)?;
        writeln!(
            out,
            "  {} packages ({} downloaded, {} bytes; {} cached), epoch {}{}",
            b.packages,
            b.download.downloaded,
            b.download.bytes,
            b.download.cached,
            b.epoch,
            if b.lock_updated { ", lock updated" } else { "" }
        )?;
        writeln!(
            out,
            "  {} overlay entries, {} hooks; removed {} machine-state, {} local-state and {} generated stripped files; dropped {} dpkg list lines of stripped files",
            b.overlays, b.hooks, b.scrub.machine_state_removed, b.scrub.local_state_removed, b.scrub.strip_generated_removed, b.scrub.dpkg_list_lines_dropped
        )?;
        writeln!(
            out,
            "  normalised: {} mtimes, {} gzip headers, {} pyc headers; {} files, {} dirs, {} bytes",
            b.normalize.mtime,
            b.normalize.gzip,
            b.normalize.pyc,
            b.stats.files,
            b.stats.dirs,
            b.stats.bytes
        )?;
        let total: f64 = b.phases.iter().map(|(_, s)| s).sum();
        let phases: Vec<String> = b
            .phases
            .iter()
            .map(|(n, s)| format!("{n} {s:.1}s"))
            .collect();
        writeln!(out, "  time {total:.1}s: {}", phases.join(", "))
    }
}

impl Rebuilt {
    pub fn write_text(&self, out: &mut dyn Write) -> io::Result<()> {
        if self.identical {
            return writeln!(out, "{}: rebuilt bit for bit", self.original);
        }
        writeln!(
            out,
            "{} rebuilt as {}: {} lines differ",
            self.original,
            self.rebuilt,
            self.differences.len()
        )?;
        for d in &self.differences {
            writeln!(out, "{d}")?;
        }
        Ok(())
    }
}

impl VariedRebuild {
    pub fn write_text(&self, out: &mut dyn Write) -> io::Result<()> {
        for v in &self.varied {
            writeln!(out, "varied: {v}")?;
        }
        self.rebuilt.write_text(out)?;
        let rebuilt = self.rebuilt.rebuilt_tar_sha256.as_deref().unwrap_or("-");
        if self.tar_identical {
            writeln!(out, "tar.zst export identical: {rebuilt}")
        } else {
            writeln!(
                out,
                "tar.zst exports differ: original {}, rebuilt {rebuilt}",
                self.original_tar_sha256
            )
        }
    }
}

impl Lock {
    /// `imager lock --json`: the lock file's path, the epoch and each package.
    pub fn json(&self, path: &Path) -> serde_json::Value {
        let pk: Vec<_> = self.packages.iter().map(|p| serde_json::json!({"name": p.name, "version": p.version, "arch": p.arch, "sha256": p.sha256, "size": p.size})).collect();
        serde_json::json!({"lock": path, "epoch": self.epoch, "packages": pk})
    }

    /// `imager lock`: one line of totals.
    pub fn write_summary(&self, path: &Path, out: &mut dyn Write) -> io::Result<()> {
        let bytes: u64 = self.packages.iter().map(|p| p.size).sum();
        writeln!(
            out,
            "{}: {} packages, {} bytes of .debs, epoch {}",
            path.display(),
            self.packages.len(),
            bytes,
            self.epoch
        )
    }
}
