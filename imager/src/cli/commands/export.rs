//! `imager export`.

use crate::cli::{exit::Exit, Ctx};
use anyhow::{bail, Context, Result};
use clap::Args;
use imager::ops::{self, ExportTarget};
use imager::store::Access;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct ExportArgs {
    /// The image: a name, NAME~N, an ID or a unique ID prefix (8+ hex digits)
    image: String,
    /// The tar.zst to write (- for standard output)
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["dir", "disk", "oci"],
        required_unless_present_any = ["dir", "disk", "oci"]
    )]
    tar: Option<PathBuf>,
    /// A new or empty directory to create the tree in (needs root for owners and devices)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["disk", "oci"])]
    dir: Option<PathBuf>,
    /// An ext4 filesystem image of the tree, the same bytes on every export (needs
    /// e2fsprogs, and root)
    #[arg(long, value_name = "FILE", conflicts_with = "oci")]
    disk: Option<PathBuf>,
    /// A new or empty directory to write an OCI image layout in (one layer: the tar)
    #[arg(long, value_name = "DIR")]
    oci: Option<PathBuf>,
    /// The OCI layout's tag for the image (in its index.json only)
    #[arg(long, default_value = "latest", requires = "oci")]
    tag: String,
}

pub(crate) fn run(ctx: &Ctx, a: ExportArgs) -> Result<Exit> {
    let store = ctx.open(Access::Read)?;
    let id = store.resolve(&a.image)?;
    if let Some(out) = &a.disk {
        let d = imager::export_disk(&store, &id, out, ctx.progress)
            .with_context(|| format!("exporting {}", a.image))?;
        let summary = format!(
            "{}: ext4, UUID {}, {} bytes, {} inodes",
            out.display(),
            d.uuid,
            d.bytes,
            d.inodes
        );
        // `--disk /dev/stdout | dd ...`: the image alone goes there.
        if imager::fsx::is_stdout(out) {
            eprintln!("{summary}");
        } else {
            println!("{summary}");
        }
        return Ok(Exit::Success);
    }
    if let Some(dir) = &a.oci {
        let o = imager::export_oci(&store, &id, dir, &a.tag, ctx.progress)
            .with_context(|| format!("exporting {}", a.image))?;
        println!(
            "{}:{}: manifest {}, layer {} ({} bytes), {}",
            dir.display(),
            a.tag,
            o.manifest,
            o.layer,
            o.layer_bytes,
            o.architecture
        );
        return Ok(Exit::Success);
    }
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
