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
use syncer::rollout::limit::Limit;
use syncer::rollout::RolloutOptions;

#[derive(Args)]
pub struct RollbackArgs {
    /// The fleet inventory (as `rollout` takes it)
    #[arg(long)]
    inventory: PathBuf,
    /// Only these colos (repeatable) [default: every colo]
    #[arg(long)]
    colo: Vec<String>,
    /// Only the hosts this selects (repeatable): a host spec, a colo's name, or a glob
    /// over host specs (`ssh://ams1-web*`), as for `rollout`
    #[arg(long, value_name = "PATTERN")]
    limit: Vec<String>,
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
        limit: Limit::new(&a.limit, &inv.select(&a.colo)?)
            .map_err(|e| super::UsageError(e.to_string()))?,
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
    let hosts = syncer::rollout::rollback(&store, &inv, to, &opts, &PlainLog { quiet: ctx.quiet })?;
    a.conn.print(
        || &hosts,
        || {
            hosts
                .iter()
                .map(|h| syncer::render::push_report(&h.report))
                .collect()
        },
    )?;
    Ok(ExitCode::ok_if(hosts.iter().all(|h| h.report.ok)))
}
