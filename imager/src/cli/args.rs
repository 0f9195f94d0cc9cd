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
    /// Print the report as one JSON object (see Reviewing images in the README); with
    /// --stat, the stat's rows
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// Print the report as Markdown, for a review tool or a merge request
    #[arg(long)]
    markdown: bool,
    /// Only the summary: counts of files and packages added, removed and changed
    #[arg(long, conflicts_with_all = ["stat", "full"])]
    summary: bool,
    /// Files added, changed and removed and their bytes per package and per top
    /// directory, and the totals (as git diff --stat)
    #[arg(long, conflicts_with = "full")]
    stat: bool,
    /// Everything: every file, whole diffs and views, whole changelogs (the default view
    /// folds each package's section to fit a screen)
    #[arg(long)]
    full: bool,
    /// Cut the output at N lines, the last saying how much was left out and where
    #[arg(long, value_name = "N")]
    max_lines: Option<usize>,
    /// At most N lines of each file's diff or content view [default: 40; with --full: all]
    #[arg(long, value_name = "N")]
    max_diff_lines: Option<usize>,
    /// Only paths matching this glob (repeatable)
    #[arg(long = "path", value_name = "GLOB")]
    pub paths: Vec<String>,
    /// Leave out paths matching this glob (e.g. '/usr/share/man/**'); repeatable
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Never page: on a terminal the report goes through $PAGER (else less -FRX), as git's
    #[arg(long)]
    no_pager: bool,
    /// Write the report as one self-contained HTML page (folded as the text view, or
    /// everything with --full; `-` for standard output); nothing else is printed unless
    /// --json or --markdown asks for it too
    #[arg(long, value_name = "OUT.html", conflicts_with_all = ["summary", "stat", "max_lines"])]
    html: Option<PathBuf>,
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

/// The globs as one set; `option` names them in errors.
fn globs(list: &[String], option: &str) -> Result<Option<globset::GlobSet>> {
    if list.is_empty() {
        return Ok(None);
    }
    let mut g = globset::GlobSetBuilder::new();
    for p in list {
        g.add(
            globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .with_context(|| format!("bad {option} glob {p:?}"))?,
        );
    }
    Ok(Some(g.build()?))
}

impl ReviewArgs {
    /// The `--path` and `--exclude` globs and `packages` (`diff --package`) as a review
    /// filter; the reports of counts read no content.
    pub fn filter(&self, packages: &[String]) -> Result<review::Filter> {
        Ok(review::Filter {
            packages: packages.to_vec(),
            paths: globs(&self.paths, "--path")?,
            exclude: globs(&self.exclude, "--exclude")?,
            no_content: self.stat || (self.summary && !self.json),
        })
    }

    /// How the sections fold: the default view's, or everything with `--full`, and
    /// `--max-diff-lines`.
    fn limits(&self) -> review::fold::Limits {
        use review::fold::Limits;
        let mut limits = if self.full {
            Limits::full()
        } else {
            Limits::DEFAULT
        };
        if let Some(n) = self.max_diff_lines {
            limits.diff_lines = Some(n);
        }
        limits
    }

    /// Writes the HTML page `--html` asks for (`-`: to `out`); returns whether the text
    /// report is still to be printed (only when --json or --markdown asks for it).
    fn write_html(&self, out: &mut dyn Write, r: &review::Report) -> Result<bool> {
        let Some(path) = &self.html else {
            return Ok(true);
        };
        let page = review::html::render(r, &self.limits());
        if path.as_os_str() == "-" {
            out.write_all(page.as_bytes())?;
            return Ok(false);
        }
        imager::fsx::write_atomic(path, page.as_bytes())
            .with_context(|| format!("writing the HTML report to {}", path.display()))?;
        Ok(self.json || self.markdown)
    }

    /// Prints a review as JSON, Markdown or (coloured on a terminal) text, through the
    /// pager on a terminal; with `--html`, writes the page first.
    pub fn print(&self, out: &mut dyn Write, r: &review::Report) -> Result<()> {
        use review::render::{Level, Options};
        if !self.write_html(out, r)? {
            return Ok(());
        }
        let text = if self.json {
            let mut v = Vec::new();
            if self.stat {
                super::write_json(&mut v, &review::stat::stat(r))?;
            } else {
                super::write_json(&mut v, r)?;
            }
            String::from_utf8(v).context("JSON is UTF-8")?
        } else {
            let limits = self.limits();
            let level = match (self.summary, self.stat) {
                (true, _) => Level::Summary,
                (_, true) => Level::Stat,
                _ => Level::Sections,
            };
            let opts = Options {
                level,
                markdown: self.markdown,
                colour: !self.markdown && std::io::stdout().is_terminal(),
                limits,
                max_lines: self.max_lines,
            };
            review::render::render(r, &opts)
        };
        super::pager::write_paged(out, &text, !self.no_pager)
    }
}
