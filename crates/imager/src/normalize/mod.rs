//! Normalisation: the rules that take build-time noise out of a tree so that two builds
//! of the same inputs give the same image. Each rule is a pure function in its own
//! module; [`mod@crate::ingest`] applies them while it reads each file once.
//!
//! - [`mtime`]: every mtime set to, or clamped at, the epoch; then ProdNG's rule: an
//!   entry whose content and metadata equal the previous image's keeps that image's
//!   mtime, so a rebuild does not produce "mtime-only" changes.
//! - [`gzip`]: member headers rewritten to MTIME 0 and no stored file name.
//! - [`pyc`]: timestamp-based pycs rewritten to their normalised source's mtime and size.

pub mod gzip;
pub mod mtime;
pub mod pyc;

use crate::tree::Tree;

/// How mtimes are made constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum MtimePolicy {
    /// Every mtime later than the epoch becomes the epoch (older ones are kept).
    Clamp,
    /// Every mtime becomes the epoch.
    Set,
}

/// What normalisation does; see the module documentation.
#[derive(Clone, Debug)]
pub struct Options {
    /// `SOURCE_DATE_EPOCH`: the mtime entries are set to or clamped at, seconds since the
    /// epoch (UTC).
    pub epoch: i64,
    /// Whether mtimes later than the epoch are clamped (the default) or every mtime is set.
    pub mtime: MtimePolicy,
    /// Rewrite gzip member headers (default on).
    pub gzip: bool,
    /// Rewrite timestamp-based pyc headers (default on).
    pub pyc: bool,
    /// The image this one follows, for the ProdNG mtime rule.
    pub previous: Option<Tree>,
}

impl Options {
    /// The defaults for `epoch`: clamp mtimes, normalise gzip and pyc headers, no previous
    /// image.
    pub fn new(epoch: i64) -> Options {
        Options {
            epoch,
            mtime: MtimePolicy::Clamp,
            gzip: true,
            pyc: true,
            previous: None,
        }
    }
}

/// The rule that changed a path, for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// An mtime set or clamped to the epoch.
    Mtime,
    /// An mtime taken from the previous image, whose entry is the same but for its mtime.
    MtimePrevious,
    /// A gzip header rewritten.
    Gzip,
    /// A pyc header rewritten.
    Pyc,
}

/// What normalisation changed: counts per rule, the paths, and what it left alone.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    /// Entries whose mtime was set or clamped to the epoch.
    pub mtime: usize,
    /// Entries that kept the previous image's mtime instead.
    pub mtime_previous: usize,
    /// Gzip files whose headers were rewritten.
    pub gzip: usize,
    /// Pyc files whose headers were rewritten.
    pub pyc: usize,
    /// (rule, escaped path), sorted.
    pub changed: Vec<(Rule, String)>,
    /// (escaped path, reason) of the files a rule would have looked at but that were left
    /// as they are: gzip that does not parse, and files too large to read into memory
    /// ([`crate::ingest::IN_MEMORY_LIMIT`]).
    pub skipped: Vec<(String, String)>,
}

impl Report {
    pub(crate) fn record(&mut self, rule: Rule, path: &[u8]) {
        match rule {
            Rule::Mtime => self.mtime += 1,
            Rule::MtimePrevious => self.mtime_previous += 1,
            Rule::Gzip => self.gzip += 1,
            Rule::Pyc => self.pyc += 1,
        }
        self.changed.push((rule, crate::escape::escape(path)));
    }

    /// The report as `imager normalize` prints it: the counts, what was left alone and,
    /// if `verbose`, every path with the rule that changed it.
    pub fn write_text(&self, verbose: bool, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        writeln!(
            out,
            "normalised: {} mtimes set, {} mtimes kept from the previous image, {} gzip headers, {} pyc headers",
            self.mtime, self.mtime_previous, self.gzip, self.pyc
        )?;
        for (path, why) in &self.skipped {
            writeln!(out, "left as is: {path}: {why}")?;
        }
        if verbose {
            for (rule, path) in &self.changed {
                let rule = serde_json::to_value(rule)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                writeln!(out, "{rule:>14} {path}")?;
            }
        }
        Ok(())
    }
}
