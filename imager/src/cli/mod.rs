//! The `imager` command line: the global options, one subcommand per file in
//! [`commands`] (each over its own arguments struct), and how an outcome becomes an exit
//! status ([`exit`]). A command parses nothing itself and decides nothing the library
//! does not: it opens the store, calls the library and prints the report with the
//! report's own renderer.

mod args;
mod bars;
mod commands;
mod examples;
mod exit;
mod pager;

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
    about = "Reproducible, content-hashed images of Linux root filesystems",
    long_about = LONG_ABOUT,
    after_help = examples::IMAGER
)]
struct Cli {
    /// `--store` and `-q`, as syncer takes them.
    #[command(flatten)]
    common: cli_docs::Common,
    #[command(subcommand)]
    cmd: Cmd,
}

const LONG_ABOUT: &str = "\
Reproducible, content-hashed images of Linux root filesystems.

imager stores a root filesystem as an image whose ID is the blake3 of its canonical text \
manifest: the same tree always gets the same ID and the same tar.zst export. It imports \
directories and archives, builds images from a manifest of Debian packages, shows \
reviewers what changed between two images, signs them, and exports them as tar.zst, \
directories, ext4 disk images and OCI layouts (syncer pushes them to hosts). The store \
is --store DIR, else $IMAGER_STORE, else /var/lib/imager. An IMAGE is a name, NAME~N \
(the image the name pointed at N images ago), an ID or a unique ID prefix of 8 or more \
hex digits. `imager help COMMAND` shows a command's options and examples.";

// The variants' doc comments are the subcommands' help; their argument structs have
// none, so that clap takes these.
#[derive(Subcommand)]
enum Cmd {
    /// Add a directory or a tar[.gz|.zst] archive to the store as an image
    #[command(after_help = examples::IMPORT)]
    Import(import::ImportArgs),
    /// Write an image out as a deterministic tar.zst or into a directory
    #[command(after_help = examples::EXPORT)]
    Export(export::ExportArgs),
    /// List an image's entries (all, or PATH and what is below it) in manifest form
    #[command(after_help = examples::LS)]
    Ls(inspect::LsArgs),
    /// Show an image's ID, names and totals; --manifest prints its canonical text
    #[command(after_help = examples::SHOW)]
    Show(inspect::ShowArgs),
    /// Print the ID a directory would have as an image, storing nothing
    #[command(after_help = examples::HASH)]
    Hash(normalize::HashArgs),
    /// Normalise a directory in place: mtimes, gzip headers, pyc headers
    #[command(after_help = examples::NORMALIZE)]
    Normalize(normalize::NormalizeArgs),
    /// Verify every object, image and name in the store
    #[command(after_help = examples::FSCK)]
    Fsck(inspect::FsckArgs),
    /// The images a name has pointed at, newest first (NAME, NAME~1, ...)
    #[command(after_help = examples::HISTORY)]
    History(inspect::HistoryArgs),
    /// Every image: ID, size (its distinct objects), when stored (its manifest's mtime;
    /// the store records no time of its own), signed or not, names; newest first
    #[command(after_help = examples::LIST)]
    List(manage::ListArgs),
    /// Point a name at an image (the name's history keeps what it pointed at before)
    #[command(after_help = examples::TAG)]
    Tag(manage::TagArgs),
    /// Remove images' records (not one a name points at, or another image's build
    /// record needs, without --force); `imager gc` then frees their objects
    #[command(after_help = examples::RM)]
    Rm(manage::RmArgs),
    /// Free the objects no image uses; --keep N and --unnamed first remove old and
    /// unnamed images
    #[command(after_help = examples::GC)]
    Gc(manage::GcArgs),
    /// What changed between two images: packages with changelog entries, files by
    /// package (unowned first), modes, owners, capabilities, text diffs and content views
    /// (ELF symbols, gzip text, .pyc sources); --stat, a view folded to fit, or --full
    #[command(after_help = examples::DIFF)]
    Diff(review::DiffArgs),
    /// Install .debs into a throwaway copy of an image (chroot, no network, no services)
    /// and report every file they and their maintainer scripts added, changed or removed
    #[command(after_help = examples::TRY_PACKAGE)]
    TryPackage(review::TryPackageArgs),
    /// An image's installed packages: text, --json, --spdx (an SPDX 2.3 SBOM) or --cyclonedx
    #[command(after_help = examples::PACKAGES)]
    Packages(review::PackagesArgs),
    /// Resolve a build manifest's packages to exact versions and .deb hashes (M.lock)
    #[command(after_help = examples::LOCK)]
    Lock(build::LockArgs),
    /// Build the image a manifest describes, from its lock, and store it under its name
    #[command(after_help = examples::BUILD)]
    Build(build::BuildArgs),
    /// Build an image again from what its build stored, and report any difference
    #[command(after_help = examples::REBUILD)]
    Rebuild(build::RebuildArgs),
    /// Print what a build stored with an image: packages, lock, manifest, log, info,
    /// provenance
    #[command(after_help = examples::BUILD_INFO)]
    BuildInfo(build::BuildInfoArgs),
    /// Signing keys: `key generate --out FILE`
    #[command(after_help = examples::KEY)]
    Key(sign::KeyArgs),
    /// Sign an image (and its provenance) with an SSH key, for a name and a purpose
    #[command(after_help = examples::SIGN)]
    Sign(sign::SignArgs),
    /// Check an image's signatures against trusted keys or a trust policy, and its
    /// provenance against the store
    #[command(after_help = examples::VERIFY)]
    Verify(sign::VerifyArgs),
    /// Print a completion script for bash, zsh, fish, elvish or powershell
    #[command(after_help = examples::COMPLETIONS)]
    Completions(docs::CompletionsArgs),
    /// Write the man pages into DIR: imager.1, and imager-COMMAND.1 for each command;
    /// prints the path of each
    #[command(after_help = examples::MANPAGES)]
    Manpages(docs::ManpagesArgs),
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
    imager::contract::store_path(cli.common.store.as_deref())
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
    let progress: &dyn Progress = if !cli.common.quiet && std::io::stderr().is_terminal() {
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
        Cmd::Completions(a) => docs::completions(a, out),
        Cmd::Manpages(a) => docs::manpages(a, out),
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

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// The help, the man pages and the completions all come from these definitions, so a
    /// missing text shows in all three.
    #[test]
    fn every_argument_has_help_and_every_command_examples() {
        let mut offenders = Vec::new();
        let mut cli = Cli::command();
        cli.build();
        check(&cli, "imager", &mut offenders);
        assert!(offenders.is_empty(), "{}", offenders.join("\n"));
    }

    /// `--store`, `-q`, `--json` and `--dry-run` mean here what they mean in syncer, and
    /// no option is spelled as syncer spells something else (the same check runs there).
    #[test]
    fn the_options_shared_with_syncer_mean_the_same() {
        let offenders = cli_docs::vocabulary::check(&Cli::command());
        assert!(offenders.is_empty(), "{}", offenders.join("\n"));
    }

    fn check(cmd: &clap::Command, path: &str, offenders: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if a.get_help().is_none() && a.get_long_help().is_none() {
                offenders.push(format!("{path}: {id} has no help"));
            }
            // A value list where some values are explained and some not reads as if the
            // others had been forgotten.
            let values = a.get_possible_values();
            let explained = values.iter().filter(|v| v.get_help().is_some()).count();
            if explained != 0 && explained != values.len() {
                offenders.push(format!("{path}: {id} explains only some of its values"));
            }
        }
        let subs: Vec<_> = cmd
            .get_subcommands()
            .filter(|s| s.get_name() != "help")
            .collect();
        let after = cmd.get_after_help().or(cmd.get_after_long_help());
        let has_examples = after.is_some_and(|h| h.to_string().starts_with("Examples:"));
        if (subs.is_empty() || path == "imager") && !has_examples {
            offenders.push(format!("{path}: its help ends with no Examples:"));
        }
        if cmd.get_about().is_none() {
            offenders.push(format!("{path}: no about"));
        }
        for s in subs {
            check(s, &format!("{path} {}", s.get_name()), offenders);
        }
    }
}
