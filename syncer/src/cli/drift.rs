//! `syncer drift HOST` (`diff` before; an alias still): the paths where a host differs
//! from the image it runs. `imager diff` compares two images; this compares a host with
//! its own.

use super::{host, Ctx, ExitCode, HostArgs};
use anyhow::{bail, Result};
use clap::Args;
use syncer::push;

#[derive(Args)]
#[command(after_help = super::examples::with_ownership(super::examples::DRIFT))]
pub struct DriftArgs {
    /// The host: ssh://[user@]host[:port][/root] or local:/path
    host: String,
    #[command(flatten)]
    conn: HostArgs,
}

pub fn run(a: DriftArgs, ctx: &Ctx) -> Result<ExitCode> {
    let spec = host(&a.host)?;
    let store = ctx.store_if_any();
    let opts = a.conn.push_options(false)?;
    let s = push::status_host(store.as_ref(), &spec, &opts, true);
    let never_synced = s.ok && s.image.is_none();
    if !a.conn.json {
        if let Some(e) = &s.error {
            bail!("{}: {e}", s.host);
        }
    }
    a.conn.print(|| &s, || syncer::render::diff(&s))?;
    if never_synced {
        // Nothing to compare with: an empty listing would read as "clean".
        eprintln!(
            "syncer: {}: no image recorded on this host (never synced), so there is nothing to compare it with; \
             `syncer push --dry-run IMAGE {}` shows how it differs from an image",
            s.host, s.host
        );
        return Ok(ExitCode::Failure);
    }
    Ok(ExitCode::ok_if(s.ok && !s.drifted))
}
