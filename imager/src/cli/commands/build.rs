//! The build commands: `lock`, `build`, `rebuild`, `build-info`.

use crate::cli::{exit::Exit, write_json, Ctx};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use imager::build;
use imager::store::Access;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct LockArgs {
    /// The build manifest (M.toml); the lock is written beside it as M.lock
    manifest: PathBuf,
    /// Print the lock's path, epoch and packages as JSON instead of one line of totals
    #[arg(long)]
    json: bool,
}

pub(crate) fn lock(a: LockArgs, out: &mut dyn Write) -> Result<Exit> {
    let (l, path) = build::lock(&a.manifest)?;
    if a.json {
        write_json(out, &l.json(&path))?;
    } else {
        l.write_summary(&path, out)?;
    }
    Ok(Exit::Success)
}

#[derive(Args)]
pub(crate) struct BuildArgs {
    /// The build manifest (M.toml), built from the lock M.lock beside it
    manifest: PathBuf,
    /// Resolve again (and rewrite M.lock) if the lock is missing or stale
    #[arg(long)]
    update_lock: bool,
    /// Keep the chroot and log of a failed build (under STORE/build/) to inspect
    #[arg(long)]
    keep_failed: bool,
    /// An image whose mtimes unchanged entries keep (ProdNG's rule)
    #[arg(long, value_name = "IMAGE")]
    previous: Option<String>,
    /// Install the packages from scratch even when the install cache has them (the
    /// entry is replaced with what was installed)
    #[arg(long)]
    no_cache: bool,
    /// The most the install cache (STORE/build-cache) may hold; least recently used
    /// entries go first (bytes, or with k, M, G, T: powers of 1000)
    #[arg(long, value_name = "SIZE", value_parser = imager::units::parse_size_arg, default_value = imager::build::cache::DEFAULT_LIMIT_TEXT)]
    cache_limit: u64,
    /// Do not write a new image's provenance and SPDX document (most of a build from the
    /// install cache: for the edit-build-diff loop; a later build of the image writes them)
    #[arg(long)]
    no_provenance: bool,
    /// Print the report (ID, epoch, downloads, scrub, normalisation, phase times) as JSON
    #[arg(long)]
    json: bool,
}

pub(crate) fn build(ctx: &Ctx, a: BuildArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = ctx.open(Access::Write)?;
    let opts = build::BuildOptions {
        manifest: a.manifest.clone(),
        update_lock: a.update_lock,
        keep_failed: a.keep_failed,
        previous: a.previous,
        set_ref: true,
        cache: if a.no_cache {
            build::cache::Use::Refresh {
                limit: a.cache_limit,
            }
        } else {
            build::cache::Use::ReadWrite {
                limit: a.cache_limit,
            }
        },
        provenance: !a.no_provenance,
    };
    let b = build::build(&store, &opts, ctx.progress)
        .with_context(|| format!("building {}", a.manifest.display()))?;
    if a.json {
        write_json(out, &b)?;
    } else {
        b.write_text(out)?;
    }
    Ok(Exit::Success)
}

#[derive(Args)]
pub(crate) struct RebuildArgs {
    /// The image to rebuild (made by `imager build`): a name, NAME~N, an ID or an ID prefix
    image: String,
    /// Keep the chroot and log of a failed rebuild (under STORE/build/) to inspect
    #[arg(long)]
    keep_failed: bool,
    /// Print both IDs and every difference as JSON
    #[arg(long)]
    json: bool,
    /// Rebuild in a builder environment unlike the original's (comma-separated, or all)
    #[arg(long, value_enum, value_delimiter = ',', value_name = "WHAT")]
    vary: Vec<VaryArg>,
    /// (for --overlay-perms) give the overlay sources other permission bits
    #[arg(long, hide = true)]
    scramble_overlay_perms: bool,
    /// (for --vary) also report the digest of the rebuilt image's tar.zst export
    #[arg(long, hide = true)]
    tar_digest: bool,
}

/// Exits 1 when the rebuild differs.
pub(crate) fn rebuild(ctx: &Ctx, a: RebuildArgs, out: &mut dyn Write) -> Result<Exit> {
    if !a.vary.is_empty() {
        // Not opened here: the child rebuild takes the store's lock.
        return varied(&ctx.root, a, out);
    }
    let store = ctx.open(Access::Write)?;
    let mut r = build::rebuild(
        &store,
        &a.image,
        a.keep_failed,
        a.scramble_overlay_perms,
        ctx.progress,
    )
    .with_context(|| format!("rebuilding {}", a.image))?;
    if a.tar_digest {
        build::vary::record_tar_digest(&store, &mut r)
            .with_context(|| format!("exporting the rebuild of {}", a.image))?;
    }
    if a.json {
        write_json(out, &r)?;
    } else {
        r.write_text(out)?;
    }
    Ok(if r.identical {
        Exit::Success
    } else {
        Exit::Failure
    })
}

/// `rebuild --vary`: the rebuild runs as a child imager in the varied environment.
fn varied(store: &std::path::Path, a: RebuildArgs, out: &mut dyn Write) -> Result<Exit> {
    let exe = std::env::current_exe().context("cannot find this program")?;
    let vary: Vec<_> = a.vary.iter().map(|v| v.0).collect();
    let r = build::vary::rebuild(&exe, store, &a.image, &vary)
        .with_context(|| format!("rebuilding {} under varied conditions", a.image))?;
    if a.json {
        write_json(out, &r)?;
    } else {
        r.write_text(out)?;
    }
    Ok(if r.identical() {
        Exit::Success
    } else {
        Exit::Failure
    })
}

#[derive(Args)]
pub(crate) struct BuildInfoArgs {
    /// The image (made by `imager build`): a name, NAME~N, an ID or an ID prefix
    image: String,
    /// Which of the files the build stored to print
    #[arg(long, value_enum, default_value_t = BuildFile::Info)]
    what: BuildFile,
}

/// The files a build stores with its image.
#[derive(Clone, Copy, ValueEnum)]
enum BuildFile {
    /// name, version, architecture, source package
    Packages,
    /// the lock the build installed from
    Lock,
    /// the manifest flattened into one file
    Manifest,
    /// mmdebstrap's and the hooks' output
    Log,
    /// tool version, epoch, phase timings (JSON)
    Info,
    /// the local-state globs the scrub applied
    LocalState,
    /// the in-toto statement with the SLSA provenance of the build (JSON)
    Provenance,
    /// the provenance's DSSE envelope, once `imager sign --provenance` signed it
    ProvenanceEnvelope,
}

pub(crate) fn build_info(ctx: &Ctx, a: BuildInfoArgs, out: &mut dyn Write) -> Result<Exit> {
    let store = ctx.open(Access::Read)?;
    let id = store.resolve(&a.image)?;
    let file = match a.what {
        BuildFile::Packages => build::PACKAGES,
        BuildFile::Lock => build::BUILD_LOCK,
        BuildFile::Manifest => build::BUILD_MANIFEST,
        BuildFile::Log => build::BUILD_LOG,
        BuildFile::Info => build::BUILD_INFO,
        BuildFile::LocalState => build::BUILD_LOCAL_STATE,
        BuildFile::Provenance => imager::build::provenance::PROVENANCE,
        BuildFile::ProvenanceEnvelope => imager::build::provenance::ENVELOPE,
    };
    match store.image_file(&id, file)? {
        Some(d) => out.write_all(&d)?,
        None if file == imager::build::provenance::PROVENANCE => bail!(
            "image {id} has no {file}: it was built with --no-provenance (a build of the same \
             manifest without it writes one), or not by `imager build`"
        ),
        None => bail!("image {id} has no {file}: it was not made by `imager build`"),
    }
    Ok(Exit::Success)
}

/// A `--vary` value: the library's [`build::vary::Vary`], spelled and explained as the
/// library says, for clap.
#[derive(Clone, Copy, Debug)]
struct VaryArg(build::vary::Vary);

impl clap::ValueEnum for VaryArg {
    fn value_variants<'a>() -> &'a [Self] {
        use build::vary::Vary;
        const ALL: [VaryArg; Vary::CHOICES.len()] = {
            let mut out = [VaryArg(Vary::All); Vary::CHOICES.len()];
            let mut i = 0;
            while i < out.len() {
                out[i] = VaryArg(Vary::CHOICES[i]);
                i += 1;
            }
            out
        };
        &ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.0.name()).help(self.0.help()))
    }
}
