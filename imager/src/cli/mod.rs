//! The `imager` command line: the global options, one subcommand per file in
//! [`commands`] (each over its own arguments struct), and how an outcome becomes an exit
//! status ([`exit`]). A command parses nothing itself and decides nothing the library
//! does not: it opens the store, calls the library and prints the report with the
//! report's own renderer.

mod args;
mod bars;
mod commands;
mod exit;

use anyhow::Result;
use clap::{Parser, Subcommand};
use commands::*;
use exit::Exit;
use imager::progress::{Progress, Quiet};
use imager::store::{Access, Store};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "imager",
    version,
    about = "Reproducible, content-hashed images of Linux root filesystems"
)]
struct Cli {
    /// The image store [env: IMAGER_STORE; default /var/lib/imager]
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,
    /// No progress bars, even on a terminal
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

// The variants' doc comments are the subcommands' help; their argument structs have
// none, so that clap takes these.
#[derive(Subcommand)]
enum Cmd {
    /// Add a directory or a tar[.gz|.zst] archive to the store as an image
    Import(import::ImportArgs),
    /// Write an image out as a deterministic tar.zst or into a directory
    Export(export::ExportArgs),
    /// List an image's entries (all, or PATH and what is below it) in manifest form
    Ls(inspect::LsArgs),
    /// Show an image's ID, names and totals; --manifest prints its canonical text
    Show(inspect::ShowArgs),
    /// Print the ID a directory would have as an image, storing nothing
    Hash(normalize::HashArgs),
    /// Normalise a directory in place: mtimes, gzip headers, pyc headers
    Normalize(normalize::NormalizeArgs),
    /// Verify every object, image and name in the store
    Fsck(inspect::FsckArgs),
    /// The images a name has pointed at, newest first (NAME, NAME~1, ...)
    History(inspect::HistoryArgs),
    /// Every image: ID, size (its distinct objects), when stored (its manifest's mtime;
    /// the store records no time of its own), signed or not, names; newest first
    List(manage::ListArgs),
    /// Point a name at an image (the name's history keeps what it pointed at before)
    Tag(manage::TagArgs),
    /// Remove images' records (not one a name points at, or another image's build
    /// record needs, without --force); `imager gc` then frees their objects
    Rm(manage::RmArgs),
    /// Free the objects no image uses; --keep N and --unnamed first remove old and
    /// unnamed images
    Gc(manage::GcArgs),
    /// What changed between two images: packages with changelog entries, files by
    /// package (unowned first), modes, owners, capabilities, text diffs
    Diff(review::DiffArgs),
    /// Install .debs into a throwaway copy of an image (chroot, no network, no services)
    /// and report every file they and their maintainer scripts added, changed or removed
    TryPackage(review::TryPackageArgs),
    /// An image's installed packages: text, --json, --spdx (an SPDX 2.3 SBOM) or --cyclonedx
    Packages(review::PackagesArgs),
    /// Resolve a build manifest's packages to exact versions and .deb hashes (M.lock)
    Lock(build::LockArgs),
    /// Build the image a manifest describes, from its lock, and store it under its name
    Build(build::BuildArgs),
    /// Build an image again from what its build stored, and report any difference
    Rebuild(build::RebuildArgs),
    /// Print what a build stored with an image: packages, lock, manifest, log, info,
    /// provenance
    BuildInfo(build::BuildInfoArgs),
    /// Signing keys: `key generate --out FILE`
    Key(sign::KeyArgs),
    /// Sign an image (and its provenance) with an SSH key, for a name and a purpose
    Sign(sign::SignArgs),
    /// Check an image's signatures against trusted keys or a trust policy, and its
    /// provenance against the store
    Verify(sign::VerifyArgs),
}

/// What every command gets: where the store is, and where progress goes.
pub(crate) struct Ctx<'a> {
    pub root: PathBuf,
    pub progress: &'a dyn Progress,
}

impl Ctx<'_> {
    pub fn open(&self, access: Access) -> Result<Store> {
        Ok(Store::open(&self.root, access)?)
    }
}

/// `--store`, else `$IMAGER_STORE`, else the default.
fn store_path(cli: &Cli) -> PathBuf {
    imager::contract::store_path(cli.store.as_deref())
}

/// Writes a report as pretty JSON and a newline.
pub(crate) fn write_json(out: &mut dyn Write, v: &impl serde::Serialize) -> Result<()> {
    // As an io::Error, so that a closed pipe (`--json | head`) is seen as one.
    serde_json::to_writer_pretty(&mut *out, v).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// Prints a report as JSON (`--json`) or with its text renderer.
pub(crate) fn print_report<R: serde::Serialize>(
    out: &mut dyn Write,
    json: bool,
    r: &R,
    text: impl FnOnce(&R, &mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    if json {
        write_json(out, r)
    } else {
        Ok(text(r, out)?)
    }
}

fn run(cli: Cli, out: &mut dyn Write) -> Result<Exit> {
    let bars = bars::TerminalBars::default();
    let progress: &dyn Progress = if !cli.quiet && std::io::stderr().is_terminal() {
        &bars
    } else {
        &Quiet
    };
    let ctx = Ctx {
        root: store_path(&cli),
        progress,
    };
    match cli.cmd {
        Cmd::Import(a) => import::run(&ctx, a, out),
        Cmd::Export(a) => export::run(&ctx, a),
        Cmd::Ls(a) => inspect::ls(&ctx, a, out),
        Cmd::Show(a) => inspect::show(&ctx, a, out),
        Cmd::Hash(a) => normalize::hash(&ctx, a, out),
        Cmd::Normalize(a) => normalize::normalize(&ctx, a, out),
        Cmd::Fsck(a) => inspect::fsck(&ctx, a, out),
        Cmd::History(a) => inspect::history(&ctx, a, out),
        Cmd::List(a) => manage::list(&ctx, a, out),
        Cmd::Tag(a) => manage::tag(&ctx, a, out),
        Cmd::Rm(a) => manage::rm(&ctx, a, out),
        Cmd::Gc(a) => manage::gc(&ctx, a, out),
        Cmd::Diff(a) => review::diff(&ctx, a, out),
        Cmd::TryPackage(a) => review::try_package(&ctx, a, out),
        Cmd::Packages(a) => review::packages(&ctx, a, out),
        Cmd::Lock(a) => build::lock(a, out),
        Cmd::Build(a) => build::build(&ctx, a, out),
        Cmd::Rebuild(a) => build::rebuild(&ctx, a, out),
        Cmd::BuildInfo(a) => build::build_info(&ctx, a, out),
        Cmd::Key(a) => sign::key(a, out),
        Cmd::Sign(a) => sign::sign(&ctx, a, out),
        Cmd::Verify(a) => sign::verify(&ctx, a, out),
    }
}

/// The `imager` binary: parse, run, flush, and turn the outcome into an exit status.
pub fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return exit::usage(e).into(),
    };
    imager::store::on_lock_wait(|m| eprintln!("imager: {m}"));
    let mut out = std::io::stdout().lock();
    let outcome = run(cli, &mut out).and_then(|c| out.flush().map(|_| c).map_err(Into::into));
    match outcome {
        Ok(c) => c.into(),
        Err(e) => exit::report(&e).into(),
    }
}
