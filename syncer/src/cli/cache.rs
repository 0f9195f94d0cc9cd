//! `syncer cache ...`: the controller's delta cache.

use super::{print_report, store_path, ExitCode};
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CacheCmd {
    /// Check every entry: its checksum, and that it decodes to the content its name says
    /// (exit 1 if any entry is bad and was not removed)
    #[command(after_help = super::examples::CACHE_VERIFY)]
    Verify {
        /// The image store (deltas are decoded against their base from it)
        /// [env: IMAGER_STORE; default /var/lib/imager]
        #[arg(long)]
        store: Option<PathBuf>,
        /// The cache directory [default: STORE/syncer-cache]
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Remove bad entries (and leftover temporary files); a push recomputes them
        #[arg(long)]
        repair: bool,
        /// Print a JSON report
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: CacheCmd) -> Result<ExitCode> {
    match cmd {
        CacheCmd::Verify {
            store,
            cache,
            repair,
            json,
        } => verify(store, cache, repair, json),
    }
}

fn verify(
    store: Option<PathBuf>,
    cache: Option<PathBuf>,
    repair: bool,
    json: bool,
) -> Result<ExitCode> {
    let root = store_path(&store);
    let dir = cache.unwrap_or_else(|| root.join("syncer-cache"));
    // Without the store, entries are still checked against their checksums.
    let store = imager::store::Store::open(&root, imager::store::Access::Read).ok();
    let r = syncer::delta::verify(&dir, store.as_ref(), repair)
        .with_context(|| format!("cannot read the cache directory {}", dir.display()))?;
    print_report(json, || &r, || syncer::render::cache_verify(&r, &root))?;
    Ok(ExitCode::ok_if(r.bad.iter().all(|b| b.removed)))
}
