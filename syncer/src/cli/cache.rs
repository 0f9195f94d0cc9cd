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
    /// Keep the cache within a size: the most recently used entries that fit stay (a
    /// push marks the entries it reads, at most once an hour), the others are removed
    #[command(after_help = super::examples::CACHE_PRUNE)]
    Prune {
        /// The cache directory [default: STORE/syncer-cache]
        #[arg(long)]
        cache: Option<PathBuf>,
        /// The most the cache may hold (bytes, or with k, M, G, T: powers of 1000)
        #[arg(long, value_name = "SIZE", value_parser = imager::units::parse_size_arg)]
        max_size: u64,
        /// Show what would be removed, and remove nothing
        #[arg(long)]
        dry_run: bool,
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
        CacheCmd::Prune {
            cache,
            max_size,
            dry_run,
            json,
        } => {
            let dir = cache.unwrap_or_else(|| ctx.store.join("syncer-cache"));
            let r = syncer::delta::prune::prune(&dir, max_size, dry_run)?;
            print_report(json, || &r, || prune_text(&r))?;
            Ok(ExitCode::Success)
        }
    }
}

/// `cache prune`'s one line.
fn prune_text(r: &syncer::delta::prune::PruneReport) -> String {
    let b = imager::units::bytes;
    format!(
        "{}: {} {} entries ({}), kept {} ({})\n",
        r.dir.display(),
        if r.dry_run { "would remove" } else { "removed" },
        r.removed,
        b(r.removed_bytes),
        r.kept,
        b(r.kept_bytes)
    )
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
