//! The commands that look at the store without changing it: `ls`, `show`, `fsck`,
//! `history`.

use crate::cli::{exit::Exit, write_json, Ctx};
use anyhow::{bail, Result};
use clap::Args;
use imager::ops;
use imager::store::Access;
use std::io::Write;

#[derive(Args)]
pub(crate) struct LsArgs {
    /// The image: a name, NAME~N, an ID or a unique ID prefix (8+ hex digits)
    image: String,
    /// Only this path and what is below it [default: /, the whole image]
    path: Option<String>,
}

pub(crate) fn ls(ctx: &Ctx, a: LsArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = ctx.open(Access::Read)?;
    let tree = store.read_image(&store.resolve(&a.image)?)?;
    out.write_all(ops::ls(&tree, a.path.as_deref().unwrap_or("/"))?.as_bytes())?;
    Ok(Exit::Success)
}

#[derive(Args)]
pub(crate) struct ShowArgs {
    /// The image: a name, NAME~N, an ID or a unique ID prefix (8+ hex digits)
    image: String,
    /// Print the image's canonical manifest text (whose blake3 is its ID) instead
    #[arg(long)]
    manifest: bool,
    /// Print the ID, names and totals as JSON
    #[arg(long)]
    json: bool,
}

pub(crate) fn show(ctx: &Ctx, a: ShowArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = ctx.open(Access::Read)?;
    let id = store.resolve(&a.image)?;
    if a.manifest {
        out.write_all(store.image_text(&id)?.as_bytes())?;
        return Ok(Exit::Success);
    }
    let s = ops::show(&store, &id)?;
    if a.json {
        write_json(out, &s)?;
    } else {
        s.write_text(out)?;
    }
    Ok(Exit::Success)
}

#[derive(Args)]
pub(crate) struct FsckArgs {
    /// Print the counts checked and every problem found as JSON
    #[arg(long)]
    json: bool,
}

/// Exits 1 when the store has any problem.
pub(crate) fn fsck(ctx: &Ctx, a: FsckArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = ctx.open(Access::Read)?;
    let r = store.fsck(ctx.progress)?;
    if a.json {
        write_json(out, &r)?;
    } else {
        r.write_text(&ctx.root, out)?;
    }
    Ok(if r.ok() { Exit::Success } else { Exit::Failure })
}

#[derive(Args)]
pub(crate) struct HistoryArgs {
    /// The name whose history to print (each line: ID, then NAME or NAME~N)
    name: String,
}

pub(crate) fn history(ctx: &Ctx, a: HistoryArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = ctx.open(Access::Read)?;
    let hist = store.ref_history(&a.name)?;
    if hist.is_empty() {
        bail!("no image is named {:?} in {}", a.name, ctx.root.display());
    }
    for (back, h) in hist.iter().rev().enumerate() {
        if back == 0 {
            writeln!(out, "{h} {}", a.name)?;
        } else {
            writeln!(out, "{h} {}~{back}", a.name)?;
        }
    }
    Ok(Exit::Success)
}
