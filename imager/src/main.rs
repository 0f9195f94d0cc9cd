//! The `imager` command line: parses arguments into the library's option structs, calls
//! [`imager::ops`], prints. No behaviour lives here.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use imager::build;
use imager::normalize::{self, MtimePolicy};
use imager::ops::{self, ExportTarget, ImportOptions, Source};
use imager::progress::{Progress, Quiet};
use imager::store::{Access, Store};
use imager::tree::scan::Excludes;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

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

/// How `diff` and `try-package` show their report.
#[derive(Args)]
struct ReviewArgs {
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    #[arg(long)]
    markdown: bool,
    /// Only the summary
    #[arg(long)]
    summary: bool,
    /// Only paths matching this glob (repeatable)
    #[arg(long = "path", value_name = "GLOB")]
    paths: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Add a directory or a tar[.gz|.zst] archive to the store as an image
    Import {
        /// A directory, an archive, or - for an archive on standard input
        source: PathBuf,
        /// Point this name at the new image (the previous one stays as NAME~1)
        #[arg(long)]
        name: Option<String>,
        /// Normalise (mtimes, gzip headers, pyc headers) while importing
        #[arg(long)]
        normalize: bool,
        #[command(flatten)]
        norm: NormArgs,
        #[command(flatten)]
        ex: ExcludeArgs,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Write an image out as a deterministic tar.zst or into a directory
    Export {
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
    },
    /// List an image's entries (all, or PATH and what is below it) in manifest form
    Ls { image: String, path: Option<String> },
    /// Show an image's ID, names and totals; --manifest prints its canonical text
    Show {
        image: String,
        #[arg(long)]
        manifest: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print the ID a directory would have as an image, storing nothing
    Hash {
        dir: PathBuf,
        /// Compute the ID of the normalised tree (the directory is not changed)
        #[arg(long)]
        normalize: bool,
        #[command(flatten)]
        norm: NormArgs,
        #[command(flatten)]
        ex: ExcludeArgs,
    },
    /// Normalise a directory in place: mtimes, gzip headers, pyc headers
    Normalize {
        dir: PathBuf,
        #[command(flatten)]
        norm: NormArgs,
        #[command(flatten)]
        ex: ExcludeArgs,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Verify every object, image and name in the store
    Fsck {
        #[arg(long)]
        json: bool,
    },
    /// The images a name has pointed at, newest first (NAME, NAME~1, ...)
    History { name: String },
    /// What changed between two images: packages with changelog entries, files by
    /// package (unowned first), modes, owners, capabilities, text diffs
    Diff {
        /// A name, name~N, ID, or a tar[.zst] file (imported first)
        old: String,
        new: String,
        #[command(flatten)]
        view: ReviewArgs,
        /// Only this package's files and version (repeatable)
        #[arg(long = "package", value_name = "NAME")]
        packages: Vec<String>,
    },
    /// Install .debs into a throwaway copy of an image (chroot, no network, no services)
    /// and report every file they and their maintainer scripts added, changed or removed
    TryPackage {
        image: String,
        #[arg(required = true)]
        debs: Vec<PathBuf>,
        #[command(flatten)]
        view: ReviewArgs,
    },
    /// An image's installed packages: text, --json, or --spdx (an SPDX 2.3 SBOM)
    Packages {
        image: String,
        #[arg(long, conflicts_with = "spdx")]
        json: bool,
        #[arg(long)]
        spdx: bool,
    },
    /// Resolve a build manifest's packages to exact versions and .deb hashes (M.lock)
    Lock {
        manifest: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Build the image a manifest describes, from its lock, and store it under its name
    Build {
        manifest: PathBuf,
        /// Resolve again (and rewrite M.lock) if the lock is missing or stale
        #[arg(long)]
        update_lock: bool,
        /// Keep the chroot and log of a failed build to inspect
        #[arg(long)]
        keep_failed: bool,
        /// An image whose mtimes unchanged entries keep (ProdNG's rule)
        #[arg(long, value_name = "IMAGE")]
        previous: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Build an image again from what its build stored, and report any difference
    Rebuild {
        image: String,
        #[arg(long)]
        keep_failed: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print what a build stored with an image: packages, lock, manifest, log, info
    BuildInfo {
        image: String,
        #[arg(long, value_enum, default_value_t = BuildFile::Info)]
        what: BuildFile,
    },
}

/// The files a build stores with its image.
#[derive(Clone, Copy, ValueEnum)]
enum BuildFile {
    /// name, version, architecture, source package
    Packages,
    Lock,
    /// the manifest flattened into one file
    Manifest,
    Log,
    /// tool version, epoch, phase timings (JSON)
    Info,
    LocalState,
}

#[derive(Args)]
struct NormArgs {
    /// The epoch for mtimes [default: $SOURCE_DATE_EPOCH]
    #[arg(long)]
    epoch: Option<i64>,
    /// Clamp mtimes at the epoch, or set all of them to it
    #[arg(long, value_enum, default_value_t = MtimeArg::Clamp)]
    mtime: MtimeArg,
    /// Leave gzip headers alone
    #[arg(long)]
    no_gzip: bool,
    /// Leave pyc headers alone
    #[arg(long)]
    no_pyc: bool,
    /// An image (name, name~N or ID) whose mtimes unchanged entries keep (ProdNG's rule)
    #[arg(long, value_name = "IMAGE")]
    previous: Option<String>,
}

#[derive(Args)]
struct ExcludeArgs {
    /// Leave out paths matching this glob (e.g. '/var/log/**'); repeatable
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Leave out the globs listed in this file (one a line, # comments); repeatable
    #[arg(long, value_name = "FILE")]
    exclude_from: Vec<PathBuf>,
}

#[derive(Args)]
struct ReportArgs {
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
    /// List every path normalisation changed
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum MtimeArg {
    Clamp,
    Set,
}

impl ExcludeArgs {
    fn build(&self) -> Result<Excludes> {
        Ok(Excludes::from_files(&self.exclude_from, &self.exclude)?)
    }
}

impl NormArgs {
    /// `store` is the store the command already holds, if any (a second handle would
    /// wait on its lock).
    fn build(&self, store: Option<&Store>, root: &std::path::Path) -> Result<normalize::Options> {
        let epoch = match self.epoch {
            Some(e) => e,
            None => std::env::var("SOURCE_DATE_EPOCH")
                .context("normalising needs an epoch: pass --epoch or set SOURCE_DATE_EPOCH")?
                .trim()
                .parse()
                .context("SOURCE_DATE_EPOCH is not a whole number of seconds")?,
        };
        let mut o = normalize::Options::new(epoch);
        o.mtime = match self.mtime {
            MtimeArg::Clamp => MtimePolicy::Clamp,
            MtimeArg::Set => MtimePolicy::Set,
        };
        o.gzip = !self.no_gzip;
        o.pyc = !self.no_pyc;
        if let Some(p) = &self.previous {
            let owned;
            let s = match store {
                Some(s) => s,
                None => {
                    owned = Store::open(root, Access::Read)?;
                    &owned
                }
            };
            let id = s.resolve(p)?;
            o.previous = Some(s.read_image(&id)?);
        }
        Ok(o)
    }
}

/// indicatif bars on a terminal.
struct Bars {
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl Progress for Bars {
    fn start(&self, phase: &str, total: Option<u64>) {
        let bar = match total {
            Some(n) => indicatif::ProgressBar::new(n).with_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:>14} [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_message(phase.to_string());
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(bar);
        }
    }
    fn inc(&self, n: u64) {
        if let Ok(b) = self.bar.lock() {
            if let Some(b) = b.as_ref() {
                b.inc(n);
            }
        }
    }
    fn finish(&self) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some(b) = b.take() {
                b.finish_and_clear();
            }
        }
    }
}

fn store_path(cli: &Cli) -> PathBuf {
    cli.store
        .clone()
        .or_else(|| std::env::var_os("IMAGER_STORE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/lib/imager"))
}

fn print_report(r: &normalize::Report, verbose: bool, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "normalised: {} mtimes set, {} mtimes kept from the previous image, {} gzip headers, {} pyc headers",
        r.mtime, r.mtime_previous, r.gzip, r.pyc
    )?;
    for (path, why) in &r.skipped {
        writeln!(out, "left as is: {path}: {why}")?;
    }
    if verbose {
        for (rule, path) in &r.changed {
            let rule = serde_json::to_value(rule)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            writeln!(out, "{rule:>14} {path}")?;
        }
    }
    Ok(())
}

/// The `--path` globs and `--package` names of `diff` and `try-package`.
fn review_filter(paths: &[String], packages: &[String]) -> Result<imager::review::Filter> {
    let mut filter = imager::review::Filter {
        packages: packages.to_vec(),
        ..Default::default()
    };
    if !paths.is_empty() {
        let mut g = globset::GlobSetBuilder::new();
        for p in paths {
            g.add(
                globset::GlobBuilder::new(p)
                    .literal_separator(true)
                    .build()
                    .with_context(|| format!("bad --path glob {p:?}"))?,
            );
        }
        filter.paths = Some(g.build()?);
    }
    Ok(filter)
}

fn print_review(out: &mut impl Write, r: &imager::review::Report, view: &ReviewArgs) -> Result<()> {
    if view.json {
        serde_json::to_writer_pretty(&mut *out, r)?;
        writeln!(out)?;
    } else if view.markdown {
        write!(out, "{}", imager::review::render::markdown(r, view.summary))?;
    } else {
        let colour = std::io::stdout().is_terminal();
        write!(
            out,
            "{}",
            imager::review::render::text(r, colour, view.summary)
        )?;
    }
    Ok(())
}

fn run(cli: Cli, out: &mut impl Write) -> Result<ExitCode> {
    let bars = Bars {
        bar: std::sync::Mutex::new(None),
    };
    let progress: &dyn Progress = if !cli.quiet && std::io::stderr().is_terminal() {
        &bars
    } else {
        &Quiet
    };
    let root = store_path(&cli);
    let open = |a: Access| -> Result<Store> { Ok(Store::open(&root, a)?) };
    match &cli.cmd {
        Cmd::Import {
            source,
            name,
            normalize,
            norm,
            ex,
            report: ReportArgs { json, verbose },
        } => {
            let store = open(Access::Write)?;
            let imported = (|| -> Result<ops::Imported> {
                let norm_opts = if *normalize {
                    Some(norm.build(Some(&store), &root)?)
                } else {
                    None
                };
                let opts = ImportOptions {
                    name: name.clone(),
                    normalize: norm_opts,
                    excludes: ex.build()?,
                    extra: Vec::new(),
                };
                let src = Source::guess(source);
                ops::import(&store, &src, &opts, progress)
                    .with_context(|| format!("importing {}", source.display()))
            })();
            // A failed import into a store it just made leaves no store behind.
            let r = match imported {
                Ok(r) => r,
                Err(e) => {
                    store.discard_if_new();
                    return Err(e);
                }
            };
            if *json {
                serde_json::to_writer_pretty(&mut *out, &r)?;
                writeln!(out)?;
            } else {
                writeln!(out, "{}", r.id)?;
                eprintln!(
                    "imported {} files, {} dirs, {} symlinks, {} hard links, {} devices/fifos; {} bytes, {} new objects ({} new bytes){}",
                    r.stats.files, r.stats.dirs, r.stats.symlinks, r.stats.hardlinks, r.stats.devices + r.stats.fifos,
                    r.stats.bytes, r.new_objects, r.new_bytes,
                    r.name.as_deref().map(|n| format!("; name {n}")).unwrap_or_default()
                );
                if *normalize {
                    print_report(&r.normalize, *verbose, &mut std::io::stderr())?;
                }
            }
        }
        Cmd::Export { image, tar, dir } => {
            let store = open(Access::Read)?;
            let id = store.resolve(image)?;
            let target = match (tar, dir) {
                (Some(t), _) if t.as_os_str() == "-" => ExportTarget::TarZstStdout,
                (Some(t), _) => ExportTarget::TarZst(t.clone()),
                (None, Some(d)) => ExportTarget::Dir(d.clone()),
                (None, None) => bail!("give --tar FILE or --dir DIR"),
            };
            ops::export(&store, &id, &target, progress)
                .with_context(|| format!("exporting {image}"))?;
        }
        Cmd::Ls { image, path } => {
            let store = open(Access::Read)?;
            let tree = store.read_image(&store.resolve(image)?)?;
            out.write_all(ops::ls(&tree, path.as_deref().unwrap_or("/"))?.as_bytes())?;
        }
        Cmd::Show {
            image,
            manifest,
            json,
        } => {
            let store = open(Access::Read)?;
            let id = store.resolve(image)?;
            if *manifest {
                out.write_all(store.image_text(&id)?.as_bytes())?;
            } else {
                let s = ops::show(&store, &id)?;
                if *json {
                    serde_json::to_writer_pretty(&mut *out, &s)?;
                    writeln!(out)?;
                } else {
                    let t = &s.stats;
                    writeln!(out, "image   {}", s.id)?;
                    writeln!(
                        out,
                        "names   {}",
                        if s.names.is_empty() {
                            "-".to_string()
                        } else {
                            s.names.join(" ")
                        }
                    )?;
                    writeln!(out, "entries {} files, {} dirs, {} symlinks, {} hard links, {} devices, {} fifos", t.files, t.dirs, t.symlinks, t.hardlinks, t.devices, t.fifos)?;
                    writeln!(
                        out,
                        "content {} bytes in {} distinct objects; {} entries with xattrs",
                        t.bytes, t.objects, t.with_xattrs
                    )?;
                }
            }
        }
        Cmd::Hash {
            dir,
            normalize,
            norm,
            ex,
        } => {
            let norm_opts = if *normalize {
                Some(norm.build(None, &root)?)
            } else {
                None
            };
            let (id, _, _) = ops::hash_dir(dir, norm_opts.as_ref(), &ex.build()?, progress)?;
            writeln!(out, "{id}")?;
        }
        Cmd::Normalize {
            dir,
            norm,
            ex,
            report: ReportArgs { json, verbose },
        } => {
            let o = norm.build(None, &root)?;
            let r = ops::normalize_dir(dir, &o, &ex.build()?, progress)
                .with_context(|| format!("normalising {}", dir.display()))?;
            if *json {
                serde_json::to_writer_pretty(&mut *out, &r)?;
                writeln!(out)?;
            } else {
                print_report(&r, *verbose, out)?;
            }
        }
        Cmd::Fsck { json } => {
            let store = open(Access::Read)?;
            let r = store.fsck(progress)?;
            if *json {
                serde_json::to_writer_pretty(&mut *out, &r)?;
                writeln!(out)?;
            } else {
                for p in &r.problems {
                    writeln!(out, "problem: {p}")?;
                }
                writeln!(
                    out,
                    "{}: {} images, {} names, {} objects ({} bytes, {} unreferenced), {} problems",
                    root.display(),
                    r.images,
                    r.refs,
                    r.objects,
                    r.bytes,
                    r.unreferenced,
                    r.problems.len()
                )?;
            }
            if !r.ok() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Lock { manifest, json } => {
            let (l, path) = build::lock(manifest)?;
            if *json {
                let pk: Vec<_> = l.packages.iter().map(|p| serde_json::json!({"name": p.name, "version": p.version, "arch": p.arch, "sha256": p.sha256, "size": p.size})).collect();
                serde_json::to_writer_pretty(
                    &mut *out,
                    &serde_json::json!({"lock": path, "epoch": l.epoch, "packages": pk}),
                )?;
                writeln!(out)?;
            } else {
                let bytes: u64 = l.packages.iter().map(|p| p.size).sum();
                writeln!(
                    out,
                    "{}: {} packages, {} bytes of .debs, epoch {}",
                    path.display(),
                    l.packages.len(),
                    bytes,
                    l.epoch
                )?;
            }
        }
        Cmd::Build {
            manifest,
            update_lock,
            keep_failed,
            previous,
            json,
        } => {
            let store = open(Access::Write)?;
            let opts = build::BuildOptions {
                manifest: manifest.clone(),
                update_lock: *update_lock,
                keep_failed: *keep_failed,
                previous: previous.clone(),
                set_ref: true,
            };
            let b = build::build(&store, &opts, progress)
                .with_context(|| format!("building {}", manifest.display()))?;
            if *json {
                serde_json::to_writer_pretty(&mut *out, &b)?;
                writeln!(out)?;
            } else {
                print_built(&b, out)?;
            }
        }
        Cmd::Rebuild {
            image,
            keep_failed,
            json,
        } => {
            let store = open(Access::Write)?;
            let r = build::rebuild(&store, image, *keep_failed, progress)
                .with_context(|| format!("rebuilding {image}"))?;
            if *json {
                serde_json::to_writer_pretty(&mut *out, &r)?;
                writeln!(out)?;
            } else if r.identical {
                writeln!(out, "{}: rebuilt bit for bit", r.original)?;
            } else {
                writeln!(
                    out,
                    "{} rebuilt as {}: {} lines differ",
                    r.original,
                    r.rebuilt,
                    r.differences.len()
                )?;
                for d in &r.differences {
                    writeln!(out, "{d}")?;
                }
            }
            if !r.identical {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::BuildInfo { image, what } => {
            let store = open(Access::Read)?;
            let id = store.resolve(image)?;
            let file = match what {
                BuildFile::Packages => build::PACKAGES,
                BuildFile::Lock => build::BUILD_LOCK,
                BuildFile::Manifest => build::BUILD_MANIFEST,
                BuildFile::Log => build::BUILD_LOG,
                BuildFile::Info => build::BUILD_INFO,
                BuildFile::LocalState => build::BUILD_LOCAL_STATE,
            };
            match store.image_file(&id, file)? {
                Some(d) => out.write_all(&d)?,
                None => bail!("image {id} has no {file}: it was not made by `imager build`"),
            }
        }
        Cmd::Diff {
            old,
            new,
            view,
            packages,
        } => {
            // A file is an archive to import first; anything else names an image.
            let resolve = |spec: &str| -> Result<imager::Hash> {
                let p = std::path::Path::new(spec);
                if p.is_file() {
                    let store = open(Access::Write)?;
                    let r = match ops::import(
                        &store,
                        &ops::Source::Archive(p.to_path_buf()),
                        &ops::ImportOptions::plain(),
                        progress,
                    ) {
                        Ok(r) => r,
                        Err(e) => {
                            store.discard_if_new();
                            return Err(e.into());
                        }
                    };
                    Ok(imager::Hash::from_hex(&r.id).context("import gave no ID")?)
                } else {
                    Ok(open(Access::Read)?.resolve(spec)?)
                }
            };
            let (a, b) = (resolve(old)?, resolve(new)?);
            let store = open(Access::Read)?;
            let r = imager::review::diff(&store, &a, &b, &review_filter(&view.paths, packages)?)?;
            print_review(out, &r, view)?;
        }
        Cmd::TryPackage { image, debs, view } => {
            let id = open(Access::Read)?.resolve(image)?;
            let t = imager::review::try_package::try_packages(
                &root,
                &id,
                debs,
                &review_filter(&view.paths, &[])?,
                progress,
            )?;
            print_review(out, &t.report, view)?;
        }
        Cmd::Packages { image, json, spdx } => {
            let store = open(Access::Read)?;
            let id = store.resolve(image)?;
            let pkgs = imager::review::packages::list(&store, &id)?;
            if *spdx {
                let doc = imager::review::packages::spdx(&store, &id, &pkgs)?;
                serde_json::to_writer_pretty(&mut *out, &doc)?;
                writeln!(out)?;
            } else if *json {
                serde_json::to_writer_pretty(&mut *out, &pkgs)?;
                writeln!(out)?;
            } else {
                write!(out, "{}", imager::review::packages::text(&pkgs))?;
            }
        }
        Cmd::History { name } => {
            let store = open(Access::Read)?;
            let hist = store.ref_history(name)?;
            if hist.is_empty() {
                bail!("no image is named {name:?} in {}", root.display());
            }
            for (back, h) in hist.iter().rev().enumerate() {
                let label = if back == 0 {
                    name.clone()
                } else {
                    format!("{name}~{back}")
                };
                writeln!(out, "{h} {label}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_built(b: &build::Built, out: &mut impl Write) -> Result<()> {
    writeln!(out, "{} {}", b.id, b.name)?;
    writeln!(
        out,
        "  {} packages ({} downloaded, {} bytes; {} cached), epoch {}{}",
        b.packages,
        b.download.downloaded,
        b.download.bytes,
        b.download.cached,
        b.epoch,
        if b.lock_updated { ", lock updated" } else { "" }
    )?;
    writeln!(
        out,
        "  {} overlay entries, {} hooks; removed {} machine-state, {} local-state and {} generated stripped files; dropped {} dpkg list lines of stripped files",
        b.overlays, b.hooks, b.scrub.machine_state_removed, b.scrub.local_state_removed, b.scrub.strip_generated_removed, b.scrub.dpkg_list_lines_dropped
    )?;
    writeln!(
        out,
        "  normalised: {} mtimes, {} gzip headers, {} pyc headers; {} files, {} dirs, {} bytes",
        b.normalize.mtime,
        b.normalize.gzip,
        b.normalize.pyc,
        b.stats.files,
        b.stats.dirs,
        b.stats.bytes
    )?;
    let total: f64 = b.phases.iter().map(|(_, s)| s).sum();
    let phases: Vec<String> = b
        .phases
        .iter()
        .map(|(n, s)| format!("{n} {s:.1}s"))
        .collect();
    writeln!(out, "  time {total:.1}s: {}", phases.join(", "))?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    match run(cli, &mut out).and_then(|c| out.flush().map(|_| c).map_err(Into::into)) {
        Ok(c) => c,
        Err(e) => {
            // `imager ls x | head` closes the pipe: that is a normal end.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            // The library's errors already include their source's text: print each
            // cause only once.
            let mut msg = String::new();
            for c in e.chain() {
                let s = c.to_string();
                if !msg.contains(&s) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&s);
                }
            }
            // Messages quote outside input (a parser's complaint, a path): a terminal
            // gets no control character of it, whatever escaped or did not upstream.
            let msg: Vec<String> = msg
                .split('\n')
                .map(imager::tree::escape::escape_message)
                .collect();
            eprintln!("imager: error: {}", msg.join("\n"));
            ExitCode::FAILURE
        }
    }
}
