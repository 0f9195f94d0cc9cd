//! The commands that list, name and remove images: `list`, `tag`, `rm`, `gc` (the rules
//! they follow are in `imager::manage`).

use crate::cli::{exit::Exit, print_report, Ctx};
use anyhow::Result;
use clap::Args;
use imager::manage;
use imager::store::Access;
use std::io::Write;

#[derive(Args)]
pub(crate) struct ListArgs {
    /// Show whole image IDs, not their first 12 hex digits
    #[arg(long)]
    full: bool,
    /// Print the list as a JSON array
    #[arg(long)]
    json: bool,
}

pub(crate) fn list(ctx: &Ctx, a: ListArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = ctx.open(Access::Read)?;
    let items = manage::list(&store)?;
    print_report(out, a.json, &items, |i, o| manage::write_list(i, a.full, o))?;
    Ok(Exit::Success)
}

#[derive(Args)]
pub(crate) struct TagArgs {
    /// The image: a name, NAME~N, an ID or a unique ID prefix (8+ hex digits)
    image: String,
    /// The name to point at it
    name: String,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

pub(crate) fn tag(ctx: &Ctx, a: TagArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = ctx.open(Access::Write)?;
    let t = manage::tag(&store, &a.image, &a.name)?;
    print_report(out, a.json, &t, |r, o| r.write_text(o))?;
    Ok(Exit::Success)
}

#[derive(Args)]
pub(crate) struct RmArgs {
    /// Images: names, NAME~N, IDs or unique ID prefixes
    #[arg(required = true)]
    images: Vec<String>,
    /// Also remove an image a name points at (the name is removed with it) or that
    /// another image's build record needs
    #[arg(long)]
    force: bool,
    /// Then free the objects no remaining image uses (as `imager gc`)
    #[arg(long)]
    gc: bool,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

pub(crate) fn rm(ctx: &Ctx, a: RmArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = ctx.open(Access::Write)?;
    let o = manage::RmOptions {
        force: a.force,
        gc: a.gc,
    };
    let r = manage::rm(&store, &a.images, o)?;
    print_report(out, a.json, &r, |r, o| r.write_text(o))?;
    Ok(Exit::Success)
}

#[derive(Args)]
pub(crate) struct GcArgs {
    /// First remove the images older than the N most recent entries of every name's
    /// history (a name's current image, and an image a kept image's build record
    /// needs, are always kept)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    keep: Option<u64>,
    /// First remove the images in no name's history (not even as NAME~N)
    #[arg(long)]
    unnamed: bool,
    /// Also remove the cached .debs that no remaining image's build lock lists
    #[arg(long)]
    debs: bool,
    /// Also empty the install cache (the installed package sets builds start from)
    #[arg(long)]
    build_cache: bool,
    /// Show what would be removed and the bytes; remove nothing
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

pub(crate) fn gc(ctx: &Ctx, a: GcArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = ctx.open(Access::Write)?;
    let o = manage::GcOptions {
        keep: a.keep.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        unnamed: a.unnamed,
        debs: a.debs,
        build_cache: a.build_cache,
        dry_run: a.dry_run,
    };
    let r = manage::gc(&store, &o)?;
    print_report(out, a.json, &r, |r, o| r.write_text(o))?;
    Ok(Exit::Success)
}
