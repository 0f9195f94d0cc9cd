//! The `syncer` command's subcommands, one module each (`serve`, `push`, `status`, ...):
//! each holds its arguments (a clap `Args` struct) and a `run` over them that calls the
//! library and prints the report's rendering ([`syncer::render`]). This module holds what
//! they share: the connection arguments, the store's path, host parsing and exit codes.
//! Only the binary uses it; the library knows nothing of the command line.

pub mod abandon_commit;
pub mod cache;
pub mod drift;
pub mod examples;
pub mod progress;
pub mod publish;
pub mod push;
pub mod rollback;
pub mod rollout;
pub mod serve;
pub mod status;

use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};
use syncer::push::PushOptions;
use syncer::transport::{HostSpec, TransportOptions, DEFAULT_AGENT};

/// What a push may delete, and the letters of its itemised listings: the `--help` of
/// `push` and `drift`.
pub fn ownership_help() -> String {
    format!(
        "What a push deletes: a path the image does not hold goes when the host's recorded \
         image held it (the syncer put it there) or when it lies under a prefix the image \
         owns (default /usr, /bin, /sbin, /lib*, /etc, /boot; the image's \
         /usr/lib/imager/owned.txt); anything else the host made (under /var, /srv, /opt, \
         /home, ...) is kept, and local state is never touched.\n\n{}",
        syncer::protocol::item::LEGEND
    )
}

/// What every command gets from the global options (`cli_docs::Common`, imager's too):
/// the store's path and whether progress is shown.
pub struct Ctx {
    /// `--store`, else `$IMAGER_STORE`, else imager's default store.
    pub store: PathBuf,
    /// `-q`: no progress bars or lines.
    pub quiet: bool,
}

impl Ctx {
    pub fn new(common: &cli_docs::Common) -> Ctx {
        Ctx {
            store: imager::contract::store_path(common.store.as_deref()),
            quiet: common.quiet,
        }
    }

    /// The store, if it can be opened: commands that only read hosts work without one
    /// (image names are then shown as IDs).
    pub fn store_if_any(&self) -> Option<imager::store::Store> {
        self.open_store().ok()
    }

    /// The store, which the command needs.
    pub fn open_store(&self) -> Result<imager::store::Store> {
        Ok(imager::store::Store::open(
            &self.store,
            imager::store::Access::Read,
        )?)
    }
}

/// How the command reaches hosts and reports: the options every host command takes.
#[derive(Args, Clone)]
pub struct HostArgs {
    /// The ssh command for ssh:// hosts, split on spaces (like rsync's -e)
    #[arg(short = 'e', long = "rsh", default_value = "ssh")]
    pub rsh: String,
    /// The agent's path on ssh:// hosts
    #[arg(long, default_value = DEFAULT_AGENT)]
    pub agent: String,
    /// Copy this program to ssh:// hosts whose agent is missing or different
    #[arg(long)]
    pub install_agent: bool,
    /// Hash every file on the host, ignoring the agent's hash cache
    // `--verify` before: a hidden alias, since `imager verify` checks signatures.
    #[arg(long, alias = "verify")]
    pub rehash: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// Hosts handled at once (1 or more)
    #[arg(short = 'j', long, default_value_t = 8, value_parser = at_least_one)]
    pub jobs: usize,
}

/// How long an agent may take to greet the controller: `SYNCER_HANDSHAKE_TIMEOUT`
/// seconds (for a host known to be slow, and for tests), else the default.
fn handshake_timeout() -> Result<std::time::Duration> {
    match std::env::var("SYNCER_HANDSHAKE_TIMEOUT") {
        Err(_) => Ok(syncer::transport::DEFAULT_HANDSHAKE_TIMEOUT),
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(std::time::Duration::from_secs_f64)
            .ok_or_else(|| {
                UsageError(format!(
                    "SYNCER_HANDSHAKE_TIMEOUT={v:?} is not a number of seconds above 0"
                ))
                .into()
            }),
    }
}

impl HostArgs {
    /// Push options from these arguments (no health check, the host's own previous).
    pub fn push_options(&self, dry_run: bool) -> Result<PushOptions> {
        let ssh: Vec<String> = self.rsh.split_whitespace().map(String::from).collect();
        if ssh.is_empty() {
            return Err(UsageError("--rsh is empty".into()).into());
        }
        Ok(PushOptions {
            dry_run,
            rehash: self.rehash,
            transport: TransportOptions {
                ssh,
                agent: self.agent.clone(),
                install_agent: self.install_agent,
                handshake_timeout: handshake_timeout()?,
                ..Default::default()
            },
            ..Default::default()
        })
    }

    /// Prints the report `json` makes as pretty JSON with `--json`, else what `text`
    /// renders (only the one asked for is made).
    pub fn print<T: serde::Serialize>(
        &self,
        json: impl FnOnce() -> T,
        text: impl FnOnce() -> String,
    ) -> Result<()> {
        print_report(self.json, json, text)
    }
}

/// Whether `e` is a write to a pipe whose reader went away (`| head`): nothing to say.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints the report `json` makes as pretty JSON when `as_json`, else the text rendering
/// (a write error is returned, not a panic as `print!` makes of it).
pub fn print_report<T: serde::Serialize>(
    as_json: bool,
    json: impl FnOnce() -> T,
    text: impl FnOnce() -> String,
) -> Result<()> {
    use std::io::Write;
    let body = if as_json {
        serde_json::to_string_pretty(&json())? + "\n"
    } else {
        text()
    };
    let mut out = std::io::stdout().lock();
    out.write_all(body.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `-j`: a count of hosts at once; 0 would do nothing.
fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be 1 or more".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a count: {e}")),
    }
}

/// Where a rollout over `inventory` keeps its state: `fleet.toml` → `fleet.rollout.json`.
pub fn state_path(inventory: &Path) -> PathBuf {
    inventory.with_extension("rollout.json")
}

/// An error in how the command was asked (exit status 2, like clap's own); every other
/// error is a failure to do what was asked (exit status 1).
#[derive(Debug)]
pub struct UsageError(pub String);
impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

pub fn host(h: &str) -> Result<HostSpec> {
    HostSpec::parse(h).map_err(|e| UsageError(e.to_string()).into())
}

pub fn hosts(list: &[String]) -> Result<Vec<HostSpec>> {
    list.iter().map(|h| host(h)).collect()
}

/// The command's exit status: what scripts and rollouts branch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything asked for was done (and every host is as it should be).
    Success = 0,
    /// Something asked for failed: a host, a check, a file.
    Failure = 1,
    /// The command was asked wrongly (arguments, a host spec); nothing was tried.
    Usage = 2,
    /// Stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it): what was in
    /// flight finished, nothing more was started.
    Interrupted = 130,
}

impl ExitCode {
    /// Success when `ok`, else failure.
    pub fn ok_if(ok: bool) -> ExitCode {
        if ok {
            ExitCode::Success
        } else {
            ExitCode::Failure
        }
    }

    /// The exit status for an error that stopped the command (a closed pipe counts as
    /// success: `syncer drift HOST | head`).
    pub fn of_error(e: &anyhow::Error) -> ExitCode {
        if e.chain().any(|c| c.is::<UsageError>()) {
            ExitCode::Usage
        } else if is_broken_pipe(e) {
            ExitCode::Success
        } else {
            ExitCode::Failure
        }
    }

    pub fn code(self) -> i32 {
        self as i32
    }
}
