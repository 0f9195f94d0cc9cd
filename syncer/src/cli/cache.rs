//! `syncer cache ...`: the controller's delta cache.

use super::{print_report, Ctx, ExitCode};
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CacheCmd {
    /// Check every entry: its checksum, and that it decodes to the content its name says
    /// (exit 1 if any entry is bad and was not removed)
    #[command(after_help = super::examples::CACHE_VERIFY)]
    Verify {
        /// The cache directory [default: STORE/syncer-cache]
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Remove bad entries (and leftover temporary files); a push recomputes them
        #[arg(long)]
        repair: bool,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: CacheCmd, ctx: &Ctx) -> Result<ExitCode> {
    match cmd {
        CacheCmd::Verify {
            cache,
            repair,
            json,
        } => verify(ctx, cache, repair, json),
    }
}

/// Deltas are decoded against their base from the store; without one, entries are
/// still checked against their checksums.
fn verify(ctx: &Ctx, cache: Option<PathBuf>, repair: bool, json: bool) -> Result<ExitCode> {
    let dir = cache.unwrap_or_else(|| ctx.store.join("syncer-cache"));
    let store = ctx.store_if_any();
    let r = syncer::delta::verify(&dir, store.as_ref(), repair)
        .with_context(|| format!("cannot read the cache directory {}", dir.display()))?;
    print_report(json, || &r, || syncer::render::cache_verify(&r, &ctx.store))?;
    Ok(ExitCode::ok_if(r.bad.iter().all(|b| b.removed)))
}
