//! The commands over a directory rather than the store: `hash` and `normalize`.

use crate::cli::args::{ExcludeArgs, NormArgs, ReportArgs};
use crate::cli::{exit::Exit, write_json, Ctx};
use anyhow::{Context, Result};
use clap::Args;
use imager::ops;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct HashArgs {
    /// The directory to hash (read only, never changed)
    dir: PathBuf,
    /// Compute the ID of the normalised tree (the directory is not changed)
    #[arg(long)]
    normalize: bool,
    #[command(flatten)]
    norm: NormArgs,
    #[command(flatten)]
    ex: ExcludeArgs,
}

pub(crate) fn hash(ctx: &Ctx, a: HashArgs, out: &mut dyn Write) -> Result<Exit> {
    let norm_opts = if a.normalize {
        Some(a.norm.build(None, &ctx.root)?)
    } else {
        None
    };
    let (id, _, _) = ops::hash_dir(&a.dir, norm_opts.as_ref(), &a.ex.build()?, ctx.progress)?;
    writeln!(out, "{id}")?;
    Ok(Exit::Success)
}

#[derive(Args)]
pub(crate) struct NormalizeArgs {
    /// The directory to normalise in place (its files are rewritten)
    dir: PathBuf,
    #[command(flatten)]
    norm: NormArgs,
    #[command(flatten)]
    ex: ExcludeArgs,
    #[command(flatten)]
    report: ReportArgs,
}

pub(crate) fn normalize(ctx: &Ctx, a: NormalizeArgs, out: &mut dyn Write) -> Result<Exit> {
    let o = a.norm.build(None, &ctx.root)?;
    let r = ops::normalize_dir(&a.dir, &o, &a.ex.build()?, ctx.progress)
        .with_context(|| format!("normalising {}", a.dir.display()))?;
    if a.report.json {
        write_json(out, &r)?;
    } else {
        r.write_text(a.report.verbose, out)?;
    }
    Ok(Exit::Success)
}
