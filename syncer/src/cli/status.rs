//! `syncer status`: the image each host runs and whether it drifted, for hosts given
//! by name or for a whole inventory (with each host's last rollout result).

use super::{hosts, state_path, Ctx, ExitCode, HostArgs};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use syncer::push::{self, HostStatus};
use syncer::render::FleetRow;
use syncer::rollout::inventory::Inventory;
use syncer::rollout::state::RolloutState;

#[derive(Args)]
pub struct StatusArgs {
    /// Hosts (or every host of --inventory)
    #[arg(required_unless_present = "inventory")]
    hosts: Vec<String>,
    /// A fleet inventory: its hosts by colo, with the last rollout's result
    #[arg(long)]
    inventory: Option<PathBuf>,
    /// The rollout state: a file or `etcd://HOST:PORT[,...]/PREFIX` [default: the
    /// inventory's `[fleet] state`, else its name with .rollout.json]
    #[arg(long)]
    state: Option<String>,
    #[command(flatten)]
    conn: HostArgs,
}

pub fn run(a: StatusArgs, ctx: &Ctx) -> Result<ExitCode> {
    match &a.inventory {
        Some(inv) => fleet(ctx, inv, a.state, &a.conn),
        None => {
            let st = host_statuses(ctx, &a.hosts, &a.conn, false)?;
            a.conn.print(
                || &st,
                || st.iter().map(syncer::render::host_status).collect(),
            )?;
            Ok(ExitCode::ok_if(st.iter().all(|s| s.ok && !s.drifted)))
        }
    }
}

/// Every host of the inventory, colo by colo, with its last rollout result.
fn fleet(
    ctx: &Ctx,
    inv: &std::path::Path,
    state: Option<String>,
    conn: &HostArgs,
) -> Result<ExitCode> {
    let inv = Inventory::load(inv)?;
    let store = ctx.store_if_any();
    let state = state
        .or_else(|| inv.fleet.state.clone())
        .unwrap_or_else(|| state_path(&inv.path).display().to_string());
    let saved = if state.starts_with("etcd://") {
        // A record that cannot be read is said, not taken for "no rollout".
        syncer::rollout::fleet::Fleet::reader(&state)?
            .load()?
            .map(|(st, _)| st)
    } else {
        RolloutState::load(std::path::Path::new(&state)).ok()
    };
    let opts = conn.push_options(false)?;
    let mut rows = Vec::new();
    for colo in &inv.colos {
        // Each host reached as its inventory settings say, over the command line's.
        let st = push::for_hosts(&colo.hosts, conn.jobs, |h| {
            let o = syncer::rollout::host_options(&opts, h);
            push::status_host(store.as_ref(), &h.spec, &o, false)
        });
        for status in st {
            let last = saved
                .as_ref()
                .and_then(|r| r.hosts.iter().find(|x| x.host == status.host).cloned());
            rows.push(FleetRow {
                colo: colo.name.clone(),
                status,
                last,
            });
        }
    }
    let json = || -> Vec<_> {
        rows.iter()
            .map(|r| serde_json::json!({"colo": r.colo, "status": r.status, "last": r.last}))
            .collect()
    };
    conn.print(json, || syncer::render::fleet_status(&rows))?;
    Ok(ExitCode::ok_if(
        rows.iter().all(|r| r.status.ok && !r.status.drifted),
    ))
}

/// `status` of each host (after dropping an unfinished commit, with `abandon`).
pub fn host_statuses(
    ctx: &Ctx,
    list: &[String],
    conn: &HostArgs,
    abandon: bool,
) -> Result<Vec<HostStatus>> {
    let specs = hosts(list)?;
    let store = ctx.store_if_any();
    let mut opts = conn.push_options(false)?;
    opts.transport.abandon_commit = abandon;
    Ok(push::for_hosts(&specs, conn.jobs, |h| {
        push::status_host(store.as_ref(), h, &opts, false)
    }))
}
