//! Argument groups several commands share: normalisation, exclusions, report format and
//! the review views, each with the conversion into the library's options.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use imager::normalize::{self, MtimePolicy};
use imager::review;
use imager::store::{Access, Store};
use imager::tree::scan::Excludes;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// How `diff` and `try-package` show their report.
#[derive(Args)]
pub(crate) struct ReviewArgs {
    /// Print the report as one JSON object (see Reviewing images in the README)
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// Print the report as Markdown, for a review tool or a merge request
    #[arg(long)]
    markdown: bool,
    /// Only the summary: counts of files and packages added, removed and changed
    #[arg(long)]
    summary: bool,
    /// Only paths matching this glob (repeatable)
    #[arg(long = "path", value_name = "GLOB")]
    pub paths: Vec<String>,
}

#[derive(Args)]
pub(crate) struct NormArgs {
    /// The epoch for mtimes, in seconds since 1970 (before it: negative)
    /// [default: $SOURCE_DATE_EPOCH]
    // `--epoch -5` is a value, not an unknown option `-5`: mtimes before 1970 are
    // valid (an image's mtimes are i64, as the filesystem's are).
    #[arg(long, allow_negative_numbers = true, value_name = "SECONDS")]
    epoch: Option<i64>,
    /// Clamp mtimes at the epoch, or set all of them to it
    #[arg(long, value_enum, default_value_t = MtimeArg::Clamp)]
    mtime: MtimeArg,
    /// Leave gzip headers alone
    #[arg(long)]
    no_gzip: bool,
    /// Leave pyc headers alone
    #[arg(long)]
    no_pyc: bool,
    /// An image (name, name~N or ID) whose mtimes unchanged entries keep (ProdNG's rule)
    #[arg(long, value_name = "IMAGE")]
    previous: Option<String>,
}

#[derive(Args)]
pub(crate) struct ExcludeArgs {
    /// Leave out paths matching this glob (e.g. '/var/log/**'); repeatable
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Leave out the globs listed in this file (one a line, # comments); repeatable
    #[arg(long, value_name = "FILE")]
    exclude_from: Vec<PathBuf>,
}

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// List every path normalisation changed
    #[arg(long, short)]
    pub verbose: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum MtimeArg {
    Clamp,
    Set,
}

impl ExcludeArgs {
    pub fn build(&self) -> Result<Excludes> {
        Ok(Excludes::from_files(&self.exclude_from, &self.exclude)?)
    }
}

impl NormArgs {
    /// `store` is the store the command already holds, if any (a second handle would
    /// wait on its lock).
    pub fn build(&self, store: Option<&Store>, root: &Path) -> Result<normalize::Options> {
        let epoch = match self.epoch {
            Some(e) => e,
            None => std::env::var("SOURCE_DATE_EPOCH")
                .context("normalising needs an epoch: pass --epoch or set SOURCE_DATE_EPOCH")?
                .trim()
                .parse()
                .context("SOURCE_DATE_EPOCH is not a whole number of seconds")?,
        };
        let mut o = normalize::Options::new(epoch);
        o.mtime = match self.mtime {
            MtimeArg::Clamp => MtimePolicy::Clamp,
            MtimeArg::Set => MtimePolicy::Set,
        };
        o.gzip = !self.no_gzip;
        o.pyc = !self.no_pyc;
        if let Some(p) = &self.previous {
            let owned;
            let s = match store {
                Some(s) => s,
                None => {
                    owned = Store::open(root, Access::Read)?;
                    &owned
                }
            };
            let id = s.resolve(p)?;
            o.previous = Some(s.read_image(&id)?);
        }
        Ok(o)
    }
}

impl ReviewArgs {
    /// The `--path` globs and `packages` (`diff --package`) as a review filter.
    pub fn filter(&self, packages: &[String]) -> Result<review::Filter> {
        let mut filter = review::Filter {
            packages: packages.to_vec(),
            ..Default::default()
        };
        if !self.paths.is_empty() {
            let mut g = globset::GlobSetBuilder::new();
            for p in &self.paths {
                g.add(
                    globset::GlobBuilder::new(p)
                        .literal_separator(true)
                        .build()
                        .with_context(|| format!("bad --path glob {p:?}"))?,
                );
            }
            filter.paths = Some(g.build()?);
        }
        Ok(filter)
    }

    /// Prints a review as JSON, Markdown or (coloured on a terminal) text.
    pub fn print(&self, out: &mut dyn Write, r: &review::Report) -> Result<()> {
        if self.json {
            super::write_json(out, r)?;
        } else if self.markdown {
            write!(out, "{}", review::render::markdown(r, self.summary))?;
        } else {
            let colour = std::io::stdout().is_terminal();
            write!(out, "{}", review::render::text(r, colour, self.summary))?;
        }
        Ok(())
    }
}
