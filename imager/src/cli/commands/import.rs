//! `imager import`.

use crate::cli::args::{ExcludeArgs, NormArgs, ReportArgs};
use crate::cli::{exit::Exit, write_json, Ctx};
use anyhow::{Context, Result};
use clap::Args;
use imager::ops::{self, ImportOptions, ImportSource};
use imager::store::Access;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct ImportArgs {
    /// A directory, an archive, or - for an archive on standard input
    source: PathBuf,
    /// Point this name at the new image (the previous one stays as NAME~1)
    #[arg(long)]
    name: Option<String>,
    /// Normalise (mtimes, gzip headers, pyc headers) while importing
    #[arg(long)]
    normalize: bool,
    #[command(flatten)]
    norm: NormArgs,
    #[command(flatten)]
    ex: ExcludeArgs,
    #[command(flatten)]
    report: ReportArgs,
}

pub(crate) fn run(ctx: &Ctx, a: ImportArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = ctx.open(Access::Write)?;
    let imported = (|| -> Result<ops::Imported> {
        let norm_opts = if a.normalize {
            Some(a.norm.build(Some(&store), &ctx.root)?)
        } else {
            None
        };
        let opts = ImportOptions {
            name: a.name.clone(),
            normalize: norm_opts,
            excludes: a.ex.build()?,
            extra: Vec::new(),
        };
        ops::import(&store, &ImportSource::guess(&a.source), &opts, ctx.progress)
            .with_context(|| format!("importing {}", a.source.display()))
    })();
    // A failed import into a store it just made leaves no store behind.
    let r = match imported {
        Ok(r) => r,
        Err(e) => {
            store.discard_if_new();
            return Err(e);
        }
    };
    if a.report.json {
        write_json(out, &r)?;
    } else {
        writeln!(out, "{}", r.id)?;
        eprintln!("{}", r.summary());
        if a.normalize {
            r.normalize
                .write_text(a.report.verbose, &mut std::io::stderr())?;
        }
    }
    Ok(Exit::Success)
}
