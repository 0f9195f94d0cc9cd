//! `syncer rollout IMAGE --inventory FILE`: colo by colo, canary then waves, saving its
//! state after every host so that `--resume` continues it; Ctrl-C stops it between hosts.
//! `--limit` rolls part of the hosts, `--dry-run` shows the plan and writes nothing.
//! With `--state etcd://...` (or the inventory's `[fleet] state`) the record is in etcd:
//! `--join` adds a controller, `--status` and `--continue` work from any machine.

use super::progress::{observer, HostBars, PlainLog};
use super::{state_path, Ctx, ExitCode, HostArgs, UsageError};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::IsTerminal;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use syncer::rollout::fleet::Fleet;
use syncer::rollout::inventory::Inventory;
use syncer::rollout::limit::Limit;
use syncer::rollout::state::{RolloutState, Verdict};
use syncer::rollout::RolloutOptions;

#[derive(Args)]
pub struct RolloutArgs {
    /// The image (name, name~N or ID); with --resume, the saved rollout's
    #[arg(required_unless_present_any = ["resume", "join", "status", "continue_", "forget"])]
    image: Option<String>,
    /// The fleet inventory: colos, hosts, policy, connection settings (TOML; see
    /// syncer/inventories/example.toml)
    #[arg(long, required_unless_present_any = ["status", "continue_", "forget"])]
    inventory: Option<PathBuf>,
    /// Only these colos (repeatable), in inventory order
    #[arg(long)]
    colo: Vec<String>,
    /// Only the hosts this selects (repeatable): a host spec, a colo's name, or a glob
    /// over host specs (`ssh://ams1-web*`); canary and waves are made of the selected
    /// hosts of each colo, the others are left alone
    #[arg(long, value_name = "PATTERN")]
    limit: Vec<String>,
    /// Show the whole rollout's plan (per colo its waves, per host what a push would
    /// send and delete); change nothing: no host is touched, no state written
    #[arg(long, conflicts_with = "resume")]
    dry_run: bool,
    /// Continue the rollout saved in the state file
    #[arg(long)]
    resume: bool,
    /// Go on between colos without asking (for unattended runs)
    #[arg(long)]
    yes: bool,
    /// The rollout state: a file, or a record in etcd, `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`
    /// [default: the inventory's `[fleet] state`, else its name with .rollout.json]
    #[arg(long)]
    state: Option<String>,
    /// Join the rollout recorded at this etcd address as one more controller: take the
    /// hosts of its running colos that no controller holds (same inventory content)
    #[arg(long, value_name = "ETCD_URL", conflicts_with_all = ["resume", "dry_run"])]
    join: Option<String>,
    /// Print the rollout's record (the state file, or from etcd from any machine)
    #[arg(long)]
    status: bool,
    /// With --status: print it again at every change until the rollout ends
    #[arg(long, requires = "status")]
    watch: bool,
    /// Let the colo that waits for a confirmation (pause = "confirm") start, in the
    /// rollout recorded at this etcd address (--colo names another)
    #[arg(long = "continue", id = "continue_", value_name = "ETCD_URL")]
    continue_: Option<String>,
    /// Drop the record of the rollout at this etcd address and give back its hosts
    #[arg(long, value_name = "ETCD_URL")]
    forget: Option<String>,
    /// Seconds this controller's etcd lease lasts without renewal: a controller that
    /// dies frees its hosts this long after
    #[arg(long, default_value_t = 15, value_name = "SECONDS")]
    lease_ttl: u64,
    /// Send local: hosts' new files through their agents' pipes, as remote hosts get
    /// them, instead of letting the agents copy them from the store (to measure what a
    /// fleet would be sent)
    #[arg(long)]
    no_store_copies: bool,
    #[command(flatten)]
    conn: HostArgs,
}

pub fn run(a: RolloutArgs, ctx: &Ctx) -> Result<ExitCode> {
    let plain = PlainLog { quiet: ctx.quiet };
    if let Some(url) = &a.continue_ {
        let f = Fleet::reader(url)?;
        let colo = syncer::rollout::continue_colo(&f, a.colo.first().map(String::as_str), &plain)?;
        println!("colo {colo} of the rollout at {url} may start");
        return Ok(ExitCode::Success);
    }
    if let Some(url) = &a.forget {
        let n = Fleet::reader(url)?.forget()?;
        println!("dropped the rollout at {url} ({n} keys, its reservations included)");
        return Ok(ExitCode::Success);
    }
    let inv = a.inventory.as_deref().map(Inventory::load).transpose()?;
    let state = a
        .join
        .clone()
        .or(a.state.clone())
        .or_else(|| inv.as_ref().and_then(|i| i.fleet.state.clone()))
        .or_else(|| {
            inv.as_ref()
                .map(|i| state_path(&i.path).display().to_string())
        })
        .context("give --state or --inventory")?;
    if a.status {
        return status(&state, a.watch, &a.conn);
    }
    let inv = inv.context("give --inventory")?;
    let etcd = state.starts_with("etcd://");
    if a.join.is_some() && !etcd {
        bail!("--join takes an etcd:// address");
    }
    let store = ctx.open_store()?;
    let saved = match (a.resume || a.join.is_some(), etcd) {
        (false, _) => None,
        (true, false) => Some(RolloutState::load(Path::new(&state))?),
        (true, true) => Some(
            Fleet::reader(&state)?
                .load()?
                .with_context(|| format!("no rollout is recorded at {state}"))?
                .0,
        ),
    };
    let id = match (&a.image, &saved) {
        (Some(i), _) => store.resolve(i)?,
        // A bad ID in the saved state is refused when it is loaded, naming the file.
        (None, Some(s)) => s.image,
        (None, None) => bail!("give an IMAGE or --resume"),
    };
    let colos = match (&saved, a.colo.is_empty()) {
        (Some(s), true) => s.colos.clone(),
        _ => a.colo.clone(),
    };
    let patterns = match (&saved, a.limit.is_empty()) {
        (Some(s), true) => s.limit.clone(),
        _ => a.limit.clone(),
    };
    // A pattern that selects nothing is how the command was asked: exit status 2.
    let limit =
        Limit::new(&patterns, &inv.select(&colos)?).map_err(|e| UsageError(e.to_string()))?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))
        .context("cannot catch Ctrl-C")?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))
        .context("cannot catch SIGTERM")?;
    let bars = HostBars::new();
    let multi = bars.multi();
    // `-q`: no bars, and of the log only each host's outcome and the warnings.
    let obs = observer(&bars, a.conn.json || ctx.quiet, &plain);
    let fleet = match etcd && !a.dry_run {
        true => {
            let stopped = || stop.load(std::sync::atomic::Ordering::SeqCst);
            Some(Arc::new(Fleet::connect(
                &state,
                a.lease_ttl,
                obs,
                &stopped,
            )?))
        }
        false => None,
    };
    let opts = RolloutOptions {
        colos,
        limit,
        yes: a.yes,
        rehash: a.conn.rehash,
        no_store_copies: a.no_store_copies,
        transport: a.conn.push_options(false)?.transport,
        state_file: PathBuf::from(&state),
        fleet,
        join: a.join.is_some(),
        stop: Arc::clone(&stop),
        // The question is asked with the bars hidden: drawn over, it was drawn twice.
        confirm: Box::new(move |colo| multi.suspend(|| confirm(colo))),
    };
    if a.dry_run {
        let plan = syncer::rollout::dryrun::plan(&store, id, &inv, &opts, obs);
        bars.clear();
        let plan = plan?;
        a.conn
            .print(|| &plan, || syncer::render::rollout_plan(&plan))?;
        return Ok(ExitCode::ok_if(plan.ok()));
    }
    let st = syncer::rollout::run(&store, id, &inv, &opts, saved, obs);
    bars.clear();
    let st = st?;
    a.conn
        .print(|| &st, || syncer::render::rollout(&st, Path::new(&state)))?;
    if stop.load(std::sync::atomic::Ordering::SeqCst) && !st.finished {
        return Ok(ExitCode::Interrupted);
    }
    Ok(ExitCode::ok_if(
        st.finished && st.count(Verdict::Failed) == 0,
    ))
}

/// `--status`: the record as it is (with `watch`, again at each change until the
/// rollout finishes or stops).
fn status(state: &str, watch: bool, conn: &HostArgs) -> Result<ExitCode> {
    if !state.starts_with("etcd://") {
        let st = RolloutState::load(Path::new(state))?;
        conn.print(|| &st, || syncer::render::rollout(&st, Path::new(state)))?;
        return Ok(ExitCode::ok_if(
            st.finished && st.count(Verdict::Failed) == 0,
        ));
    }
    let f = Fleet::reader(state)?;
    loop {
        let (st, rev) = f
            .load()?
            .with_context(|| format!("no rollout is recorded at {state}"))?;
        let text = || {
            let mut s = String::new();
            for h in &st.hosts {
                s.push_str(&h.line());
                s.push('\n');
            }
            s.push_str(&format!("{}\n", syncer::rollout::fleet::describe(&st)));
            s + &syncer::render::rollout(&st, Path::new(state))
        };
        conn.print(|| &st, text)?;
        if !watch || st.finished || st.stopped.is_some() {
            return Ok(ExitCode::ok_if(
                st.finished && st.count(Verdict::Failed) == 0,
            ));
        }
        f.wait_change(rev)
            .with_context(|| format!("cannot watch the rollout at {state}"))?;
    }
}

/// Asks on the terminal whether to go on to the next colo.
fn confirm(colo: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        eprintln!("syncer: not asking about colo {colo} without a terminal; pass --yes for unattended runs");
        return false;
    }
    eprint!("Continue with colo {colo}? [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes")
}
