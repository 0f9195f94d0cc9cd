//! The `syncer` command: argument parsing and printing over the library.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::sync::Mutex;
use syncer::delta::Cache;
use syncer::push::{self, HostReport, HostStatus, Image, Observer, PushOptions};
use syncer::rollout::inventory::Inventory;
use syncer::rollout::state::RolloutState;
use syncer::rollout::RolloutOptions;
use syncer::transport::{HostSpec, TransportOptions, DEFAULT_AGENT};

#[derive(Parser)]
#[command(
    name = "syncer",
    version,
    about = "Push imager images onto hosts as file-level deltas"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Conn {
    /// The image store [env: IMAGER_STORE; default /var/lib/imager]
    #[arg(long)]
    store: Option<PathBuf>,
    /// The ssh command for ssh:// hosts, split on spaces (like rsync's -e)
    #[arg(short = 'e', long = "rsh", default_value = "ssh")]
    rsh: String,
    /// The agent's path on ssh:// hosts
    #[arg(long, default_value = DEFAULT_AGENT)]
    agent: String,
    /// Copy this program to ssh:// hosts whose agent is missing or different
    #[arg(long)]
    install_agent: bool,
    /// Hash every file on the host, ignoring the agent's hash cache
    #[arg(long)]
    verify: bool,
    /// Print a JSON report
    #[arg(long)]
    json: bool,
    /// Hosts handled at once (1 or more)
    #[arg(short = 'j', long, default_value_t = 8, value_parser = at_least_one)]
    jobs: usize,
}

#[derive(Subcommand)]
enum Cmd {
    /// The agent: serve one session on stdin/stdout for the host root DIR
    Serve {
        #[arg(long)]
        root: PathBuf,
        /// Drop an unfinished commit instead of finishing it (see abandon-commit)
        #[arg(long)]
        abandon_commit: bool,
    },
    /// Make hosts equal to an image (name, name~N or ID in the store)
    Push {
        image: String,
        #[arg(required = true)]
        hosts: Vec<String>,
        #[command(flatten)]
        conn: Conn,
        /// Show what would be sent, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Where computed deltas are kept between runs [default: STORE/syncer-cache if it
        /// can be made, else none]
        #[arg(long)]
        cache: Option<PathBuf>,
        /// zstd level for whole files and deltas (1 to 22)
        #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(1..=22))]
        level: i32,
    },
    /// The image each host runs and whether it drifted from it
    Status {
        /// Hosts (or every host of --inventory)
        #[arg(required_unless_present = "inventory")]
        hosts: Vec<String>,
        /// A fleet inventory: its hosts by colo, with the last rollout's result
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// The rollout state [default: the inventory's name with .rollout.json]
        #[arg(long)]
        state: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Roll an image across a fleet: colo by colo, canary then waves, with health checks,
    /// failure budgets and automatic rollback of failed hosts
    Rollout {
        /// The image (name, name~N or ID); with --resume, the saved rollout's
        #[arg(required_unless_present = "resume")]
        image: Option<String>,
        #[arg(long)]
        inventory: PathBuf,
        /// Only these colos (repeatable), in inventory order
        #[arg(long)]
        colo: Vec<String>,
        /// Continue the rollout saved in the state file
        #[arg(long)]
        resume: bool,
        /// Go on between colos without asking (for unattended runs)
        #[arg(long)]
        yes: bool,
        /// The rollout state [default: the inventory's name with .rollout.json]
        #[arg(long)]
        state: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Return a colo (or the fleet) to each host's previous image, or to --to
    Rollback {
        #[arg(long)]
        inventory: PathBuf,
        #[arg(long)]
        colo: Vec<String>,
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Drop the unfinished commit of hosts whose roll-forward keeps failing: they keep
    /// what the commit had done and their recorded image; push an image next
    AbandonCommit {
        #[arg(required = true)]
        hosts: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// The controller's delta cache
    Cache {
        #[command(subcommand)]
        cmd: CacheCmd,
    },
    /// The paths where a host differs from the image it runs
    Diff {
        host: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum CacheCmd {
    /// Check every entry: its checksum, and that it decodes to the content its name says
    /// (exit 1 if any entry is bad and was not removed)
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

/// `-j`: a count of hosts at once; 0 would do nothing.
fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be 1 or more".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a count: {e}")),
    }
}

fn store_path(p: &Option<PathBuf>) -> PathBuf {
    p.clone()
        .or_else(|| std::env::var_os("IMAGER_STORE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/lib/imager"))
}

fn options(c: &Conn, dry_run: bool) -> Result<PushOptions> {
    let ssh: Vec<String> = c.rsh.split_whitespace().map(String::from).collect();
    if ssh.is_empty() {
        return Err(UsageError("--rsh is empty".into()).into());
    }
    Ok(PushOptions {
        dry_run,
        verify: c.verify,
        transport: TransportOptions {
            ssh,
            agent: c.agent.clone(),
            install_agent: c.install_agent,
            ..Default::default()
        },
        health: None,
        restore_previous: syncer::protocol::Previous::Keep,
    })
}

/// An error in how the command was asked (exit status 2, like clap's own); every other
/// error is a failure to do what was asked (exit status 1).
#[derive(Debug)]
struct UsageError(String);
impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

fn host(h: &str) -> Result<HostSpec> {
    HostSpec::parse(h).map_err(|e| UsageError(e.to_string()).into())
}

fn hosts(list: &[String]) -> Result<Vec<HostSpec>> {
    list.iter().map(|h| host(h)).collect()
}

/// One bar per host on a terminal.
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    /// A rollout's whole fleet and its current wave.
    fleet: Mutex<Option<(ProgressBar, ProgressBar)>>,
}

impl Bars {
    fn new() -> Bars {
        Bars {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
            fleet: Mutex::new(None),
        }
    }

    fn counter(&self, len: u64, prefix: &str) -> ProgressBar {
        let b = self.multi.insert(0, ProgressBar::new(len));
        b.set_style(
            ProgressStyle::with_template("{prefix:30} {bar:43} {pos}/{len} hosts {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_prefix(prefix.to_string());
        b
    }

    fn bar(&self, host: &str) -> ProgressBar {
        let mut m = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(host.to_string())
            .or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(0));
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix:30} {msg:12} {bar:30} {bytes}/{total_bytes}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.set_prefix(host.to_string());
                b
            })
            .clone()
    }
}

impl Observer for Bars {
    fn phase(&self, host: &str, phase: &str) {
        let b = self.bar(host);
        b.set_message(phase.to_string());
        if phase == "done" || phase == "failed" {
            b.finish();
        }
    }
    fn log(&self, line: &str) {
        let _ = self.multi.println(line);
    }
    fn rollout(&self, hosts: u64) {
        let fleet = self.counter(hosts, "fleet");
        let wave = self.counter(0, "wave");
        self.multi.remove(&wave);
        let wave = self.multi.insert(1, wave);
        *self.fleet.lock().unwrap_or_else(|p| p.into_inner()) = Some((fleet, wave));
    }
    fn wave(&self, label: &str, hosts: u64) {
        if let Some((_, w)) = &*self.fleet.lock().unwrap_or_else(|p| p.into_inner()) {
            w.set_prefix(label.to_string());
            w.set_length(hosts);
            w.set_position(0);
        }
    }
    fn host_done(&self, ok: bool) {
        if let Some((f, w)) = &*self.fleet.lock().unwrap_or_else(|p| p.into_inner()) {
            f.inc(1);
            w.inc(1);
            if !ok {
                f.set_message("(failures)");
            }
        }
    }
    fn bytes(&self, host: &str, total: u64, done: u64) {
        let b = self.bar(host);
        b.set_length(total);
        b.set_position(done);
    }
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("syncer: {e:#}");
            std::process::exit(if e.is::<UsageError>() { 2 } else { 1 });
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Serve {
            root,
            abandon_commit,
        } => {
            let stdin = std::io::stdin().lock();
            let stdout = std::io::stdout().lock();
            let opts = syncer::agent::ServeOptions { abandon_commit };
            syncer::agent::serve(&root, &opts, stdin, stdout)
                .with_context(|| format!("agent on {}", root.display()))?;
            Ok(0)
        }
        Cmd::Push {
            image,
            hosts: list,
            conn,
            dry_run,
            cache,
            level,
        } => {
            let specs = hosts(&list)?;
            let root = store_path(&conn.store);
            let store = imager::store::Store::open(&root, imager::store::Access::Read)?;
            let id = store.resolve(&image)?;
            let img = Image::load(&store, id)?;
            let cache_dir = match cache {
                Some(d) => {
                    std::fs::create_dir_all(&d).with_context(|| {
                        format!("cannot create the cache directory {}", d.display())
                    })?;
                    Some(d)
                }
                None => {
                    let d = root.join("syncer-cache");
                    std::fs::create_dir_all(&d).ok().map(|_| d)
                }
            };
            let cache = Cache::new(cache_dir, level);
            let opts = options(&conn, dry_run)?;
            let bars = Bars::new();
            let obs: &dyn Observer = if std::io::stderr().is_terminal() && !conn.json {
                &bars
            } else {
                &push::NoObserver
            };
            let reports = push::for_hosts(&specs, conn.jobs, |h| {
                push::push_host(&store, &img, &cache, h, &opts, obs)
            });
            let dropped = cache.dropped();
            for d in &dropped {
                eprintln!("syncer: warning: {d}");
            }
            if conn.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "image": id.to_hex(),
                        "hosts": reports,
                        "cache_dropped": dropped,
                    }))?
                );
            } else {
                for r in &reports {
                    print_push(r);
                }
            }
            Ok(if reports.iter().all(|r| r.ok) { 0 } else { 1 })
        }
        Cmd::Status {
            inventory: Some(inv),
            state,
            conn,
            ..
        } => {
            let inv = Inventory::load(&inv)?;
            let store =
                imager::store::Store::open(&store_path(&conn.store), imager::store::Access::Read)
                    .ok();
            let saved = RolloutState::load(&state.unwrap_or_else(|| state_path(&inv.path))).ok();
            let opts = options(&conn, false)?;
            let mut rows = Vec::new();
            for colo in &inv.colos {
                let st = push::for_hosts(&colo.hosts, conn.jobs, |h| {
                    push::status_host(store.as_ref(), h, &opts, false)
                });
                for s in st {
                    let last = saved
                        .as_ref()
                        .and_then(|r| r.hosts.iter().find(|x| x.host == s.host).cloned());
                    rows.push((colo.name.clone(), s, last));
                }
            }
            if conn.json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(c, s, l)| serde_json::json!({"colo": c, "status": s, "last": l}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<40} {:<10} {:<24} {:<18} LAST",
                    "HOST", "COLO", "IMAGE", "DRIFT"
                );
                for (c, s, l) in &rows {
                    let image = match (&s.error, &s.image) {
                        (Some(_), _) if s.mid_commit => "mid-commit".to_string(),
                        (Some(_), _) => "unreachable".to_string(),
                        (None, None) => "never synced".to_string(),
                        (None, Some(id)) if s.names.is_empty() => id[..12].to_string(),
                        (None, Some(id)) => format!("{} ({})", &id[..12], s.names.join(",")),
                    };
                    let drift = if s.error.is_some() {
                        "-".to_string()
                    } else if s.drifted {
                        format!("{} paths", s.differences)
                    } else {
                        "clean".into()
                    };
                    let last = l
                        .as_ref()
                        .map(|r| format!("{} ({})", r.outcome, r.wave))
                        .unwrap_or_else(|| "-".into());
                    println!("{:<40} {c:<10} {image:<24} {drift:<18} {last}", s.host);
                }
            }
            Ok(if rows.iter().all(|(_, s, _)| s.ok && !s.drifted) {
                0
            } else {
                1
            })
        }
        Cmd::Rollout {
            image,
            inventory,
            colo,
            resume,
            yes,
            state,
            conn,
        } => {
            let inv = Inventory::load(&inventory)?;
            let state_file = state.unwrap_or_else(|| state_path(&inv.path));
            let store =
                imager::store::Store::open(&store_path(&conn.store), imager::store::Access::Read)?;
            let saved = if resume {
                Some(RolloutState::load(&state_file)?)
            } else {
                None
            };
            let id = match (&image, &saved) {
                (Some(i), _) => store.resolve(i)?,
                (None, Some(s)) => imager::Hash::from_hex(&s.image)
                    .with_context(|| format!("{}: bad image ID", state_file.display()))?,
                (None, None) => bail!("give an IMAGE or --resume"),
            };
            let colos = match (&saved, colo.is_empty()) {
                (Some(s), true) => s.colos.clone(),
                _ => colo,
            };
            let stop = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))
                .context("cannot catch Ctrl-C")?;
            signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))
                .context("cannot catch SIGTERM")?;
            let base = options(&conn, false)?;
            let opts = RolloutOptions {
                colos,
                yes,
                verify: conn.verify,
                transport: base.transport,
                state_file: state_file.clone(),
                stop,
                confirm: Box::new(confirm),
            };
            let bars = Bars::new();
            let obs: &dyn Observer = if std::io::stderr().is_terminal() && !conn.json {
                &bars
            } else {
                &PlainLog
            };
            let st = syncer::rollout::run(&store, id, &inv, &opts, saved, obs)?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print_rollout(&st, &state_file);
            }
            Ok(if st.finished && st.count("failed") == 0 {
                0
            } else {
                1
            })
        }
        Cmd::Rollback {
            inventory,
            colo,
            to,
            conn,
        } => {
            let inv = Inventory::load(&inventory)?;
            let store =
                imager::store::Store::open(&store_path(&conn.store), imager::store::Access::Read)?;
            let to = to.map(|t| store.resolve(&t)).transpose()?;
            let base = options(&conn, false)?;
            let opts = RolloutOptions {
                colos: colo.clone(),
                yes: true,
                verify: conn.verify,
                transport: base.transport,
                state_file: state_path(&inv.path),
                stop: Arc::new(AtomicBool::new(false)),
                confirm: Box::new(|_| true),
            };
            let reports = syncer::rollout::rollback(&store, &inv, &colo, to, &opts, &PlainLog)?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                for r in &reports {
                    print_push(r);
                }
            }
            Ok(if reports.iter().all(|r| r.ok) { 0 } else { 1 })
        }
        Cmd::AbandonCommit { hosts: list, conn } => {
            let st = host_statuses(&list, &conn, true)?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                for s in &st {
                    match &s.abandoned {
                        Some(id) => println!(
                            "{}: dropped the unfinished commit to image {}",
                            s.host,
                            &id[..12]
                        ),
                        None if s.ok => println!("{}: no unfinished commit", s.host),
                        None => {}
                    }
                    print_status(s);
                }
            }
            Ok(if st.iter().all(|s| s.ok) { 0 } else { 1 })
        }
        Cmd::Status {
            hosts: list, conn, ..
        } => {
            let st = host_statuses(&list, &conn, false)?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                for s in &st {
                    print_status(s);
                }
            }
            Ok(if st.iter().all(|s| s.ok && !s.drifted) {
                0
            } else {
                1
            })
        }
        Cmd::Cache {
            cmd:
                CacheCmd::Verify {
                    store,
                    cache,
                    repair,
                    json,
                },
        } => {
            let root = store_path(&store);
            let dir = cache.unwrap_or_else(|| root.join("syncer-cache"));
            // Without the store, entries are still checked against their checksums.
            let store = imager::store::Store::open(&root, imager::store::Access::Read).ok();
            let r = syncer::delta::verify(&dir, store.as_ref(), repair)
                .with_context(|| format!("cannot read the cache directory {}", dir.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for b in &r.bad {
                    let done = if b.removed { " (removed)" } else { "" };
                    println!("BAD {}: {}{done}", b.file.display(), b.problem);
                }
                for o in &r.other {
                    println!("not an entry: {}", o.display());
                }
                println!(
                    "{}: {} good, {} bad, {} unchecked (base not in the store {})",
                    r.dir.display(),
                    r.good,
                    r.bad.len(),
                    r.unchecked,
                    root.display()
                );
            }
            Ok(if r.bad.iter().all(|b| b.removed) {
                0
            } else {
                1
            })
        }
        Cmd::Diff { host: h, conn } => {
            let spec = host(&h)?;
            let store =
                imager::store::Store::open(&store_path(&conn.store), imager::store::Access::Read)
                    .ok();
            let opts = options(&conn, false)?;
            let s = push::status_host(store.as_ref(), &spec, &opts, true);
            let never_synced = s.ok && s.image.is_none();
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                if let Some(e) = &s.error {
                    bail!("{}: {e}", s.host);
                }
                for p in &s.paths {
                    println!("{} {}", p.change.letter(), p.path);
                }
            }
            if never_synced {
                // Nothing to compare with: an empty listing would read as "clean".
                eprintln!(
                    "syncer: {}: no image recorded on this host (never synced), so there is nothing to compare it with; \
                     `syncer push --dry-run IMAGE {}` shows how it differs from an image",
                    s.host, s.host
                );
                return Ok(1);
            }
            Ok(if s.ok && !s.drifted { 0 } else { 1 })
        }
    }
}

/// Where a rollout over `inventory` keeps its state: `fleet.toml` → `fleet.rollout.json`.
/// `status` of each host (after dropping an unfinished commit, with `abandon`).
fn host_statuses(list: &[String], conn: &Conn, abandon: bool) -> Result<Vec<HostStatus>> {
    let specs = hosts(list)?;
    let store =
        imager::store::Store::open(&store_path(&conn.store), imager::store::Access::Read).ok();
    let mut opts = options(conn, false)?;
    opts.transport.abandon_commit = abandon;
    Ok(push::for_hosts(&specs, conn.jobs, |h| {
        push::status_host(store.as_ref(), h, &opts, false)
    }))
}

fn state_path(inventory: &std::path::Path) -> PathBuf {
    inventory.with_extension("rollout.json")
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

/// Log lines on stderr, for runs without a terminal.
struct PlainLog;
impl Observer for PlainLog {
    fn log(&self, line: &str) {
        eprintln!("{line}");
    }
}

fn print_rollout(st: &RolloutState, state_file: &std::path::Path) {
    for r in &st.hosts {
        println!("{}", r.line());
    }
    println!(
        "{} host(s) ok, {} failed, {} rolled back; {:.1} s, controller CPU {:.2} s",
        st.count("ok"),
        st.count("failed"),
        st.hosts
            .iter()
            .filter(|r| r.rollback.as_ref().is_some_and(|b| b.ok))
            .count(),
        st.wall_seconds,
        st.controller_cpu_seconds
    );
    match &st.stopped {
        Some(why) => println!(
            "STOPPED: {why}\n(state in {}; `syncer rollout --resume --inventory ...` continues)",
            state_file.display()
        ),
        None => println!("finished: image {}", &st.image[..12]),
    }
}

fn mb(b: u64) -> String {
    format!("{:.2} MB", b as f64 / 1e6)
}

fn print_push(r: &HostReport) {
    let short = |h: &Option<String>| {
        h.as_deref()
            .map(|s| s[..12.min(s.len())].to_string())
            .unwrap_or_else(|| "-".into())
    };
    let state = if r.ok {
        r.outcome.clone()
    } else {
        format!("FAILED ({})", r.outcome)
    };
    println!(
        "{}: {state}  {} -> {}",
        r.host,
        short(&r.image_before),
        short(&r.image_after)
    );
    if let Some(e) = &r.error {
        println!("  error: {e}");
    }
    if r.rolled_forward {
        println!("  finished an interrupted commit first");
    }
    print_kept(&r.kept);
    println!(
        "  paths: {} added, {} changed, {} metadata only, {} deleted",
        r.added, r.changed, r.metadata, r.deleted
    );
    // A dry run sends nothing: it shows the plan.
    let (shown, verb) = if r.dry_run {
        (&r.planned, "to send")
    } else {
        (&r.sent, "sent")
    };
    for (name, s, p) in [
        ("local copy", &shown.local_copy, &r.planned.local_copy),
        ("zstd delta", &shown.zstd_delta, &r.planned.zstd_delta),
        ("rsync delta", &shown.rsync_delta, &r.planned.rsync_delta),
        ("whole", &shown.whole, &r.planned.whole),
    ] {
        if s.files > 0 || p.files > 0 {
            let of_plan = if s == p {
                String::new()
            } else {
                format!("  (of {} files, {} planned)", p.files, mb(p.bytes))
            };
            println!(
                "  {name:12} {:6} files  {:>12} {verb} for {:>12}{of_plan}",
                s.files,
                mb(s.bytes),
                mb(s.content_bytes)
            );
        }
    }
    println!(
        "  wire: {} sent, {} received",
        mb(r.wire_sent),
        mb(r.wire_received)
    );
    let p = &r.phases;
    println!(
        "  time: connect {:.2}s  scan {:.2}s  plan {:.2}s  stage {:.2}s  commit {:.2}s  triggers {:.2}s  total {:.2}s",
        p.connect, p.scan, p.plan, p.stage, p.commit, p.triggers, p.total
    );
    for t in &r.triggers {
        let how = if t.timed_out {
            "timed out".to_string()
        } else {
            match t.status {
                Some(c) => format!("exit {c}"),
                None => "killed".into(),
            }
        };
        println!("  trigger {}: {how} ({:.2}s)", t.name, t.seconds);
        for l in t.output.lines() {
            println!("    | {l}");
        }
    }
    if r.dry_run {
        for c in &r.paths {
            match c.via {
                Some(v) => println!("  {} {} ({v})", c.change.letter(), c.path),
                None => println!("  {} {}", c.change.letter(), c.path),
            }
        }
    }
}

fn print_status(s: &HostStatus) {
    match (&s.error, &s.image) {
        (Some(e), _) => println!("{}: error: {e}", s.host),
        (None, None) => println!("{}: never synced", s.host),
        (None, Some(id)) => {
            let names = if s.names.is_empty() {
                String::new()
            } else {
                format!(" ({})", s.names.join(", "))
            };
            let drift = if s.drifted {
                format!("drifted: {} paths differ", s.differences)
            } else {
                "clean".into()
            };
            println!("{}: {}{names}  {drift}", s.host, &id[..12]);
        }
    }
    print_kept(&s.kept);
}

/// The host paths a push leaves alone, one line each.
fn print_kept(kept: &[syncer::protocol::Kept]) {
    for k in kept {
        let why = match k.why {
            syncer::protocol::KeptWhy::Mount => "mount point",
            syncer::protocol::KeptWhy::LocalStateSymlink => "symlink to local state",
        };
        println!(
            "  left alone: {} ({why})",
            imager::tree::escape::escape(&k.path)
        );
    }
}
