//! `syncer rollback --inventory FILE`: returns a colo (or the fleet) to each host's
//! previous image, or to `--to`.

use super::progress::PlainLog;
use super::{state_path, Ctx, ExitCode, HostArgs};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use syncer::rollout::inventory::Inventory;
use syncer::rollout::RolloutOptions;

#[derive(Args)]
pub struct RollbackArgs {
    /// The fleet inventory (as `rollout` takes it)
    #[arg(long)]
    inventory: PathBuf,
    /// Only these colos (repeatable) [default: every colo]
    #[arg(long)]
    colo: Vec<String>,
    /// Every host to this image (name, name~N or ID) [default: each host's previous
    /// image, as the host recorded it]
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    conn: HostArgs,
}

pub fn run(a: RollbackArgs, ctx: &Ctx) -> Result<ExitCode> {
    let inv = Inventory::load(&a.inventory)?;
    let store = ctx.open_store()?;
    let to = a.to.map(|t| store.resolve(&t)).transpose()?;
    let opts = RolloutOptions {
        colos: a.colo.clone(),
        limit: Default::default(),
        yes: true,
        rehash: a.conn.rehash,
        no_store_copies: false,
        transport: a.conn.push_options(false)?.transport,
        state_file: state_path(&inv.path),
        fleet: None,
        join: false,
        stop: Arc::new(AtomicBool::new(false)),
        confirm: Box::new(|_| true),
    };
    let reports = syncer::rollout::rollback(
        &store,
        &inv,
        &a.colo,
        to,
        &opts,
        &PlainLog { quiet: ctx.quiet },
    )?;
    a.conn.print(
        || &reports,
        || reports.iter().map(syncer::render::push_report).collect(),
    )?;
    Ok(ExitCode::ok_if(reports.iter().all(|r| r.ok)))
}
