//! `syncer serve`: the agent, one session on stdin/stdout (started over ssh, or as a
//! local child for `local:` hosts).

use super::ExitCode;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ServeArgs {
    /// The host's root directory the session syncs (`/` on a host; a chroot's or
    /// container's root otherwise)
    #[arg(long)]
    root: PathBuf,
    /// Drop an unfinished commit instead of finishing it (see abandon-commit)
    #[arg(long)]
    abandon_commit: bool,
    /// The controller's store objects, read for files sent as store copies (given by
    /// a controller to the agents of its local: hosts)
    #[arg(long, value_name = "DIR")]
    objects: Option<PathBuf>,
}

pub fn run(a: ServeArgs) -> Result<ExitCode> {
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    let opts = syncer::agent::ServeOptions {
        abandon_commit: a.abandon_commit,
        objects: a.objects,
    };
    syncer::agent::serve(&a.root, &opts, stdin, stdout)
        .with_context(|| format!("agent on {}", a.root.display()))?;
    Ok(ExitCode::Success)
}
