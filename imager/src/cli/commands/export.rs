//! `imager export`.

use crate::cli::{exit::Exit, Ctx};
use crate::ops::{self, ExportTarget};
use crate::store::Access;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct ExportArgs {
    image: String,
    /// The tar.zst to write (- for standard output)
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "dir",
        required_unless_present = "dir"
    )]
    tar: Option<PathBuf>,
    /// A new or empty directory to create the tree in (needs root for owners and devices)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub(crate) fn run(ctx: &Ctx, a: ExportArgs) -> Result<Exit> {
    let store = ctx.open(Access::Read)?;
    let id = store.resolve(&a.image)?;
    let target = match (a.tar, a.dir) {
        (Some(t), _) if t.as_os_str() == "-" => ExportTarget::TarZstStdout,
        (Some(t), _) => ExportTarget::TarZst(t),
        (None, Some(d)) => ExportTarget::Dir(d),
        (None, None) => bail!("give --tar FILE or --dir DIR"),
    };
    ops::export(&store, &id, &target, ctx.progress)
        .with_context(|| format!("exporting {}", a.image))?;
    Ok(Exit::Success)
}
