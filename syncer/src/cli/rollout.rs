//! `syncer rollout IMAGE --inventory FILE`: colo by colo, canary then waves, saving its
//! state after every host so that `--resume` continues it; Ctrl-C stops it between hosts.
//! `--limit` rolls part of the hosts, `--dry-run` shows the plan and writes nothing.

use super::progress::{observer, HostBars, PlainLog};
use super::{state_path, Ctx, ExitCode, HostArgs, UsageError};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use syncer::rollout::inventory::Inventory;
use syncer::rollout::limit::Limit;
use syncer::rollout::state::{RolloutState, Verdict};
use syncer::rollout::RolloutOptions;

#[derive(Args)]
pub struct RolloutArgs {
    /// The image (name, name~N or ID); with --resume, the saved rollout's
    #[arg(required_unless_present = "resume")]
    image: Option<String>,
    /// The fleet inventory: colos, hosts, policy, connection settings (TOML; see
    /// syncer/inventories/example.toml)
    #[arg(long)]
    inventory: PathBuf,
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
    /// The rollout state [default: the inventory's name with .rollout.json]
    #[arg(long)]
    state: Option<PathBuf>,
    /// Send local: hosts' new files through their agents' pipes, as remote hosts get
    /// them, instead of letting the agents copy them from the store (to measure what a
    /// fleet would be sent)
    #[arg(long)]
    no_store_copies: bool,
    #[command(flatten)]
    conn: HostArgs,
}

pub fn run(a: RolloutArgs, ctx: &Ctx) -> Result<ExitCode> {
    let inv = Inventory::load(&a.inventory)?;
    let state_file = a.state.unwrap_or_else(|| state_path(&inv.path));
    let store = ctx.open_store()?;
    let saved = if a.resume {
        Some(RolloutState::load(&state_file)?)
    } else {
        None
    };
    let id = match (&a.image, &saved) {
        (Some(i), _) => store.resolve(i)?,
        // A bad ID in the saved state is refused when it is loaded, naming the file.
        (None, Some(s)) => s.image,
        (None, None) => bail!("give an IMAGE or --resume"),
    };
    let colos = match (&saved, a.colo.is_empty()) {
        (Some(s), true) => s.colos.clone(),
        _ => a.colo,
    };
    let patterns = match (&saved, a.limit.is_empty()) {
        (Some(s), true) => s.limit.clone(),
        _ => a.limit,
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
    let opts = RolloutOptions {
        colos,
        limit,
        yes: a.yes,
        rehash: a.conn.rehash,
        no_store_copies: a.no_store_copies,
        transport: a.conn.push_options(false)?.transport,
        state_file: state_file.clone(),
        stop: Arc::clone(&stop),
        // The question is asked with the bars hidden: drawn over, it was drawn twice.
        confirm: Box::new(move |colo| multi.suspend(|| confirm(colo))),
    };
    // `-q`: no bars, and of the log only each host's outcome and the warnings.
    let plain = PlainLog { quiet: ctx.quiet };
    let obs = observer(&bars, a.conn.json || ctx.quiet, &plain);
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
        .print(|| &st, || syncer::render::rollout(&st, &state_file))?;
    if stop.load(std::sync::atomic::Ordering::SeqCst) && !st.finished {
        return Ok(ExitCode::Interrupted);
    }
    Ok(ExitCode::ok_if(
        st.finished && st.count(Verdict::Failed) == 0,
    ))
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
