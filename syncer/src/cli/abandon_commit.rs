//! `syncer abandon-commit HOST...`: drops the unfinished commit of hosts whose
//! roll-forward keeps failing, then shows their status.

use super::status::host_statuses;
use super::{Ctx, ExitCode, HostArgs};
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct AbandonCommitArgs {
    /// Hosts: ssh://[user@]host[:port][/root] or local:/path
    #[arg(required = true)]
    hosts: Vec<String>,
    #[command(flatten)]
    conn: HostArgs,
}

pub fn run(a: AbandonCommitArgs, ctx: &Ctx) -> Result<ExitCode> {
    let st = host_statuses(ctx, &a.hosts, &a.conn, true)?;
    a.conn.print(
        || &st,
        || st.iter().map(syncer::render::abandoned).collect(),
    )?;
    Ok(ExitCode::ok_if(st.iter().all(|s| s.ok)))
}
