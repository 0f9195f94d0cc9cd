//! How `imager build`, `rebuild` and `lock` print their reports as text (and the lock's
//! JSON), next to the report types so that a new field is shown where it is defined.

use super::lock::Lock;
use super::vary::VariedRebuild;
use super::{cache, Built, Rebuilt};
use std::io::{self, Write};
use std::path::Path;

/// Seconds as the reports print them, `1.2s`; a negative, `-0.0` or NaN is shown as 0
/// (a time is never negative, and "-0.0s" reads as a bug).
fn secs(s: f64) -> String {
    format!("{:.1}s", if s > 0.0 { s } else { 0.0 })
}

impl Built {
    /// Prints the build report: id and name, packages and downloads, overlays, hooks,
    /// scrub and normalisation counts, and the time each phase took.
    pub fn write_text(&self, out: &mut dyn Write) -> io::Result<()> {
        let b = self;
        writeln!(out, "{} {}", b.id, b.name)?;
        let local = match b.download.local {
            0 => String::new(),
            n => format!("; {n} copied from local directories"),
        };
        writeln!(
            out,
            "  {} packages ({} downloaded, {} bytes; {} cached{local}), epoch {}{}",
            b.packages,
            b.download.downloaded,
            b.download.bytes,
            b.download.cached,
            b.epoch,
            if b.lock_updated { ", lock updated" } else { "" }
        )?;
        let key = b.install.key.map(|k| k.short()).unwrap_or_default();
        match b.install.cache {
            "hit" if b.install.restored == Some(cache::SYNCED) => writeln!(
                out,
                "  installed: install cache entry {key} (the last build's tree, synced back to it)"
            )?,
            "hit" => writeln!(out, "  installed: a copy of install cache entry {key}")?,
            "miss" => writeln!(
                out,
                "  installed by mmdebstrap; kept as install cache entry {key}"
            )?,
            "refresh" => writeln!(
                out,
                "  installed by mmdebstrap (--no-cache); install cache entry {key} replaced"
            )?,
            _ => writeln!(out, "  installed by mmdebstrap (no install cache)")?,
        }
        if let Some(n) = &b.install.note {
            writeln!(out, "  warning: {n}")?;
        }
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
        // Not `sum()`: an empty float sum is -0.0, printed "-0.0s".
        let total = b.phases.iter().fold(0.0, |t, (_, s)| t + s);
        let phases: Vec<String> = b
            .phases
            .iter()
            .map(|(n, s)| format!("{n} {}", secs(*s)))
            .collect();
        writeln!(out, "  time {}: {}", secs(total), phases.join(", "))
    }
}

impl Rebuilt {
    /// Prints whether the rebuild matched; if not, every differing manifest line.
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
    /// Prints what was varied, then the rebuild's report and whether the tar.zst exports
    /// matched.
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

#[cfg(test)]
mod tests {
    use super::secs;

    #[test]
    fn build_times_are_never_printed_negative() {
        assert_eq!(secs(-0.0), "0.0s");
        assert_eq!(secs(-0.04), "0.0s");
        assert_eq!(secs(f64::NAN), "0.0s");
        assert_eq!(secs(2.34), "2.3s");
    }
}
