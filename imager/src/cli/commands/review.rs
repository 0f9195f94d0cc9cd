//! The review commands: `diff`, `try-package`, `packages`.

use crate::cli::args::ReviewArgs;
use crate::cli::{exit::Exit, write_json, Ctx};
use anyhow::{Context, Result};
use clap::Args;
use imager::ops::{self, ImportSource};
use imager::review;
use imager::store::Access;
use imager::tree::Hash;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub(crate) struct DiffArgs {
    /// A name, name~N, ID, or a tar[.zst] file (imported first)
    old: String,
    /// The newer image, in any of the forms OLD takes
    new: String,
    #[command(flatten)]
    view: ReviewArgs,
    /// Only this package's files and version (repeatable)
    #[arg(long = "package", value_name = "NAME")]
    packages: Vec<String>,
}

pub(crate) fn diff(ctx: &Ctx, a: DiffArgs, out: &mut dyn Write) -> Result<Exit> {
    let (old, new) = (
        resolve_or_import(ctx, &a.old)?,
        resolve_or_import(ctx, &a.new)?,
    );
    let store = ctx.open(Access::Read)?;
    let r = review::diff(&store, &old, &new, &a.view.filter(&a.packages)?)?;
    a.view.print(out, &r)?;
    Ok(Exit::Success)
}

/// A file is an archive to import first; anything else names an image.
fn resolve_or_import(ctx: &Ctx, spec: &str) -> Result<Hash> {
    let p = Path::new(spec);
    if !imager::fsx::is_file(p)? {
        return Ok(ctx.open(Access::Read)?.resolve(spec)?);
    }
    let store = ctx.open(Access::Write)?;
    let src = ImportSource::Archive(p.to_path_buf());
    let r = match ops::import(&store, &src, &ops::ImportOptions::plain(), ctx.progress) {
        Ok(r) => r,
        Err(e) => {
            store.discard_if_new();
            return Err(e.into());
        }
    };
    Hash::from_hex(&r.id).context("import gave no ID")
}

#[derive(Args)]
pub(crate) struct TryPackageArgs {
    /// The image to try them in (not changed): a name, NAME~N, an ID or an ID prefix
    image: String,
    /// The .deb files, installed together by one `dpkg -i`
    #[arg(required = true, value_name = "DEB")]
    debs: Vec<PathBuf>,
    #[command(flatten)]
    view: ReviewArgs,
}

pub(crate) fn try_package(ctx: &Ctx, a: TryPackageArgs, out: &mut dyn Write) -> Result<Exit> {
    let id = ctx.open(Access::Read)?.resolve(&a.image)?;
    let t = review::try_package::try_packages(
        &ctx.root,
        &id,
        &a.debs,
        &a.view.filter(&[])?,
        ctx.progress,
    )?;
    a.view.print(out, &t)?;
    Ok(Exit::Success)
}

#[derive(Args)]
pub(crate) struct PackagesArgs {
    /// The image: a name, NAME~N, an ID or a unique ID prefix (8+ hex digits)
    image: String,
    /// Print the packages as a JSON array (without an option: one line each, as text)
    #[arg(long, conflicts_with_all = ["spdx", "cyclonedx"])]
    json: bool,
    /// An SPDX 2.3 SBOM (JSON; the one `imager build` stored, when there is one)
    #[arg(long, conflicts_with = "cyclonedx")]
    spdx: bool,
    /// A CycloneDX 1.5 SBOM (JSON)
    #[arg(long)]
    cyclonedx: bool,
}

pub(crate) fn packages(ctx: &Ctx, a: PackagesArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = ctx.open(Access::Read)?;
    let id = store.resolve(&a.image)?;
    let pkgs = imager::packages::list(&store, &id)?;
    if a.cyclonedx {
        let records = imager::sbom::records(&store, &id)?;
        write_json(
            out,
            &imager::packages::cyclonedx::cyclonedx(&store, &id, &pkgs, &records)?,
        )?;
    } else if a.spdx {
        let records = || imager::sbom::records(&store, &id);
        out.write_all(&imager::packages::spdx_bytes(&store, &id, records)?)?;
    } else if a.json {
        write_json(out, &pkgs)?;
    } else {
        write!(out, "{}", imager::packages::text(&pkgs))?;
    }
    Ok(Exit::Success)
}
