//! The `syncer` command: argument parsing and printing over the library.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;
use syncer::delta::Cache;
use syncer::push::{self, HostReport, HostStatus, Image, Observer, PushOptions};
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
    /// Hosts handled at once
    #[arg(short = 'j', long, default_value_t = 8)]
    jobs: usize,
}

#[derive(Subcommand)]
enum Cmd {
    /// The agent: serve one session on stdin/stdout for the host root DIR
    Serve {
        #[arg(long)]
        root: PathBuf,
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
        /// zstd level for whole files and deltas
        #[arg(long, default_value_t = 19)]
        level: i32,
    },
    /// The image each host runs and whether it drifted from it
    Status {
        #[arg(required = true)]
        hosts: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// The paths where a host differs from the image it runs
    Diff {
        host: String,
        #[command(flatten)]
        conn: Conn,
    },
}

fn store_path(p: &Option<PathBuf>) -> PathBuf {
    p.clone()
        .or_else(|| std::env::var_os("IMAGER_STORE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/lib/imager"))
}

fn options(c: &Conn, dry_run: bool) -> Result<PushOptions> {
    let ssh: Vec<String> = c.rsh.split_whitespace().map(String::from).collect();
    if ssh.is_empty() {
        bail!("--rsh is empty");
    }
    Ok(PushOptions {
        dry_run,
        verify: c.verify,
        transport: TransportOptions {
            ssh,
            agent: c.agent.clone(),
            install_agent: c.install_agent,
            agent_prefix: Vec::new(),
        },
    })
}

fn hosts(list: &[String]) -> Result<Vec<HostSpec>> {
    list.iter()
        .map(|h| HostSpec::parse(h).map_err(Into::into))
        .collect()
}

/// One bar per host on a terminal.
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
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
            std::process::exit(2);
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Serve { root } => {
            let stdin = std::io::stdin().lock();
            let stdout = std::io::stdout().lock();
            syncer::agent::serve(&root, stdin, stdout)
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
            let bars = Bars {
                multi: MultiProgress::new(),
                bars: Mutex::new(HashMap::new()),
            };
            let obs: &dyn Observer = if std::io::stderr().is_terminal() && !conn.json {
                &bars
            } else {
                &push::NoObserver
            };
            let reports = push::for_hosts(&specs, conn.jobs, |h| {
                push::push_host(&store, &img, &cache, h, &opts, obs)
            });
            if conn.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "image": id.to_hex(),
                        "hosts": reports,
                    }))?
                );
            } else {
                for r in &reports {
                    print_push(r);
                }
            }
            Ok(if reports.iter().all(|r| r.ok) { 0 } else { 1 })
        }
        Cmd::Status { hosts: list, conn } => {
            let specs = hosts(&list)?;
            let store =
                imager::store::Store::open(&store_path(&conn.store), imager::store::Access::Read)
                    .ok();
            let opts = options(&conn, false)?;
            let st = push::for_hosts(&specs, conn.jobs, |h| {
                push::status_host(store.as_ref(), h, &opts, false)
            });
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
        Cmd::Diff { host, conn } => {
            let spec = HostSpec::parse(&host)?;
            let store =
                imager::store::Store::open(&store_path(&conn.store), imager::store::Access::Read)
                    .ok();
            let opts = options(&conn, false)?;
            let s = push::status_host(store.as_ref(), &spec, &opts, true);
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
            Ok(if s.ok && !s.drifted { 0 } else { 1 })
        }
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
        if r.dry_run {
            "dry run"
        } else {
            "ok"
        }
    } else {
        "FAILED"
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
    println!(
        "  paths: {} added, {} changed, {} metadata only, {} deleted",
        r.added, r.changed, r.metadata, r.deleted
    );
    for (name, s) in [
        ("local copy", &r.sent.local_copy),
        ("zstd delta", &r.sent.zstd_delta),
        ("rsync delta", &r.sent.rsync_delta),
        ("whole", &r.sent.whole),
    ] {
        if s.files > 0 {
            println!(
                "  {name:12} {:6} files  {:>12} sent for {:>12}",
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
}
