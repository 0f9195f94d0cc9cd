//! `syncer publish IMAGE --to DIR [--from IMAGE...]`: writes what hosts fetch over HTTP
//! from their colo's caches ([`syncer::publish`]).

use super::push::cache_dir;
use super::{print_report, Ctx, ExitCode};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use syncer::delta::Cache;
use syncer::push::Image;

#[derive(Args)]
pub struct PublishArgs {
    /// The image hosts are to reach (name, name~N or ID)
    image: String,
    /// The directory a web server serves as the origin (made if missing)
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Images hosts are at now: what each needs is published as its own packs (a host
    /// with an empty root always is)
    #[arg(long, value_name = "IMAGE")]
    from: Vec<String>,
    /// The delta cache [default: STORE/syncer-cache if it can be made]
    #[arg(long)]
    cache: Option<PathBuf>,
    /// zstd level: the one pushes and rollouts run at (a host asks for names with it)
    #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(1..=22))]
    level: i32,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(a: PublishArgs, ctx: &Ctx) -> Result<ExitCode> {
    let store = ctx.open_store()?;
    let id = store.resolve(&a.image)?;
    let image = Image::load(&store, id)?;
    let from = a
        .from
        .iter()
        .map(|f| store.resolve(f))
        .collect::<imager::Result<Vec<_>>>()?;
    let cache = Cache::new(cache_dir(a.cache, &ctx.store)?, a.level);
    let r = syncer::publish::publish(&store, &cache, &image, &from, &a.to)
        .with_context(|| format!("publishing {} to {}", a.image, a.to.display()))?;
    print_report(a.json, || &r, || syncer::render::publish(&r))?;
    Ok(ExitCode::ok_if(true))
}
