//! `imager lock`, `imager build` and `imager rebuild`: from a package manifest to a
//! reproducible image in the store.
//!
//! Phases: resolve (the lock), download (.debs into the store's cache), install
//! (mmdebstrap from a flat repository of exactly the locked .debs, in its own network and
//! mount namespaces), overlays, hooks (no network), scrub (machine state, local state,
//! dpkg lists), then normalise, hash and store through the same path as `imager import`.
//! What the build used is stored with the image so that `imager rebuild` can repeat it.

pub mod apt;
pub mod cache;
pub mod chroot;
pub mod debs;
pub mod dpkg;
pub mod firstboot;
pub mod local;
pub mod lock;
mod phases;
pub mod provenance;
pub mod recipe;
mod render;
pub mod scrub;
pub mod vary;

use crate::error::{Error, Result};
use crate::fsx;
use crate::import::{self, ImportOptions, ImportSource};
use crate::normalize;
use crate::progress::Progress;
use crate::store::Store;
use crate::tree::scan::Excludes;
use crate::tree::{text, Hash};
use lock::Lock;
use recipe::Recipe;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Files stored beside an image's manifest by a build.
pub const BUILD_MANIFEST: &str = "build-manifest.toml";
/// The lock the image was built from, as `imager lock` prints it.
pub const BUILD_LOCK: &str = "build.lock";
/// The recipe's local-state globs, one a line, as the build used them.
pub const BUILD_LOCAL_STATE: &str = "build-local-state.txt";
/// JSON: tool version, manifest name and files, epoch, lock inputs, previous image,
/// overlay image, start time and phase timings.
pub const BUILD_INFO: &str = "build-info.json";
/// The build's log: mmdebstrap's and the hooks' output.
pub const BUILD_LOG: &str = "build.log";
/// The installed packages, one `name version arch source` line each, as dpkg's status
/// has them after the hooks.
pub const PACKAGES: &str = "packages.txt";

/// A unique directory name for this process's work.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Removes a work directory when dropped, unless told to keep it.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fsx::remove_dir_all(&self.path);
        }
    }
}

fn work_dir(parent: &Path, prefix: &str) -> Result<WorkDir> {
    let path = parent.join(unique(prefix));
    fsx::create_dir_all(&path)?;
    Ok(WorkDir { path, keep: false })
}

/// `imager lock`: resolves the manifest's packages and writes `M.lock` beside it.
pub fn lock(manifest_path: &Path) -> Result<(Lock, PathBuf)> {
    let m = recipe::load(manifest_path)?;
    let path = lock::lock_path(&m.files[0]);
    Ok((write_lock(&m, &path)?, path))
}

fn write_lock(m: &Recipe, path: &Path) -> Result<Lock> {
    let w = work_dir(&std::env::temp_dir(), "imager-lock")?;
    let l = lock::resolve(m, &w.path)?;
    let shown = m.files[0].file_name().unwrap_or_default().to_string_lossy();
    fsx::write_atomic(path, l.print(&shown).as_bytes())?;
    Ok(l)
}

/// What `imager build` is asked to do.
pub struct BuildOptions {
    /// The build manifest (`manifests/*.toml`) to build; its lock is `M.lock` beside it.
    pub manifest: PathBuf,
    /// Resolve again when the lock is missing or was made from other inputs.
    pub update_lock: bool,
    /// Keep the work directory (chroot, repository, log) when the build fails.
    pub keep_failed: bool,
    /// The image this one follows (ProdNG's mtime rule; see `normalize`).
    pub previous: Option<String>,
    /// Point the manifest's name at the new image.
    pub set_ref: bool,
    /// Whether the package stage may start from, and is kept in, the install cache.
    pub cache: cache::Use,
    /// Write the provenance statement (and SPDX document) of a new image: most of a
    /// build from the install cache is making its tar.zst to hash, so an engineer's
    /// edit-build-diff loop may leave it out; a later build of the same image writes it.
    pub provenance: bool,
}

/// What `imager build` made, for its report (text or JSON).
#[derive(Debug, serde::Serialize)]
pub struct Built {
    /// The new image's id, in hex.
    pub id: String,
    /// The manifest's name; a ref to the image only when `set_ref` was asked for.
    pub name: String,
    /// `SOURCE_DATE_EPOCH` the build used (the lock's), seconds since the epoch (UTC).
    pub epoch: i64,
    /// Packages installed in the image, as dpkg's status lists them after the hooks.
    pub packages: usize,
    /// True when the lock was missing or stale and was resolved again.
    pub lock_updated: bool,
    /// What was downloaded into the store's .deb cache and what it already had.
    pub download: debs::Downloads,
    /// Where the installed packages came from: mmdebstrap or the install cache.
    pub install: cache::Report,
    /// Entries (files, directories, links) the overlays copied into the image.
    pub overlays: usize,
    /// Hooks run.
    pub hooks: usize,
    /// What the scrub removed.
    pub scrub: scrub::Scrubbed,
    /// What normalisation changed.
    pub normalize: normalize::Report,
    /// Counts and sizes of the stored image.
    pub stats: crate::tree::Stats,
    /// (phase, seconds), in order.
    pub phases: Vec<(String, f64)>,
}

struct PhaseClock(Vec<(String, f64)>, Instant);
impl PhaseClock {
    fn done(&mut self, name: &str) {
        self.0
            .push((name.to_string(), self.1.elapsed().as_secs_f64()));
        self.1 = Instant::now();
    }
}

/// `imager build`: see the module comment. Needs root (mmdebstrap's root mode, chroot).
pub fn build(store: &Store, opts: &BuildOptions, progress: &dyn Progress) -> Result<Built> {
    let m = recipe::load(&opts.manifest)?;
    if !rustix::process::geteuid().is_root() {
        return Err(Error::Build(
            "imager build needs root: it installs packages into a chroot with mmdebstrap".into(),
        ));
    }
    // What the build makes (mmdebstrap's tree, hooks' files, directories, imager's own
    // files) takes its mode from the umask: fix it, so the builder's never reaches the image.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let mut ph = PhaseClock(Vec::new(), Instant::now());
    progress.start("resolve", None);
    let lock_file = lock::lock_path(&m.files[0]);
    let (lk, lock_updated) = current_lock(&m, &lock_file, opts.update_lock)?;
    progress.finish();
    ph.done("resolve");
    let previous = match &opts.previous {
        Some(spec) => Some(store.resolve(spec)?),
        None => None,
    };
    build_with(store, &m, &lk, lock_updated, previous, opts, progress, ph)
}

fn current_lock(m: &Recipe, path: &Path, update: bool) -> Result<(Lock, bool)> {
    let want = lock::inputs_digest(m);
    let shown = m.files[0].display();
    if fsx::is_file(path)? {
        let l = Lock::read(path)?;
        // Read only for a lock whose inputs match: another's says so first.
        let stale_locals = if l.inputs == want {
            local::stale(m, &l)?
        } else {
            None
        };
        if l.inputs == want && stale_locals.is_none() {
            return Ok((l, false));
        }
        if !update {
            let why = match stale_locals {
                Some(w) => format!(", whose local .debs are not the locked ones:\n  {w}\n"),
                None => " (its packages or sources changed): ".into(),
            };
            return Err(Error::Build(format!(
                "{} no longer matches {shown}{why}run `imager lock {shown}` \
                 and review the change, or build with --update-lock",
                path.display(),
            )));
        }
    } else if !update {
        return Err(Error::Build(format!(
            "{shown} has no lock ({} is missing): run `imager lock {shown}` first, or build with --update-lock",
            path.display(),
        )));
    }
    Ok((write_lock(m, path)?, true))
}

#[allow(clippy::too_many_arguments)]
fn build_with(
    store: &Store,
    m: &Recipe,
    lk: &Lock,
    lock_updated: bool,
    previous: Option<Hash>,
    opts: &BuildOptions,
    progress: &dyn Progress,
    mut ph: PhaseClock,
) -> Result<Built> {
    let started = std::time::SystemTime::now();
    // Today's view of the mirrors to download from; a machine whose apt sources name no
    // mirror for the suite can still build from the lock's recorded ones.
    let sources = apt::resolve_sources(&m.source).unwrap_or_else(|_| lk.sources.clone());
    let copied = local::cache(store, m, lk)?;
    let fetched = debs::fetch(store, lk, &sources, progress)?;
    // fetch found the local .debs just copied in the cache: they were not there before.
    let download = debs::Downloads {
        local: copied,
        cached: fetched.cached.saturating_sub(copied),
        ..fetched
    };
    ph.done("download");

    let builds = store.root().join("build");
    let mut w = work_dir(&builds, &m.name)?;
    let run = Run {
        store,
        m,
        lk,
        lock_updated,
        previous,
        started,
        progress,
        cache: opts.cache,
        provenance: opts.provenance,
    };
    match run.in_chroot(&w.path, opts.set_ref, download, &mut ph) {
        Ok(mut b) => {
            b.phases = ph.0;
            Ok(b)
        }
        Err(e) if opts.keep_failed => {
            w.keep = true;
            Err(Error::KeptFailed {
                source: Box::new(e),
                dir: w.path.clone(),
            })
        }
        Err(e) => Err(e),
    }
}

/// Files stored beside an image: (name, content).
type StoredFiles = Vec<(String, Vec<u8>)>;

/// One build, once its packages are downloaded.
struct Run<'a> {
    store: &'a Store,
    m: &'a Recipe,
    lk: &'a Lock,
    lock_updated: bool,
    previous: Option<Hash>,
    started: std::time::SystemTime,
    progress: &'a dyn Progress,
    cache: cache::Use,
    provenance: bool,
}

impl Run<'_> {
    /// Installs, applies overlays and hooks, scrubs, and stores the result with its
    /// build record, in the work directory `work`.
    fn in_chroot(
        &self,
        work: &Path,
        set_ref: bool,
        download: debs::Downloads,
        ph: &mut PhaseClock,
    ) -> Result<Built> {
        let (store, m, lk, progress) = (self.store, self.m, self.lk, self.progress);
        let root = work.join("root");
        let log = work.join("build.log");
        progress.start("install", None);
        let install = self.install(work, &root, &log, ph)?;
        progress.finish();

        progress.start("overlays and hooks", None);
        let overlays = chroot::apply_overlays(&root, &m.overlays)?;
        ph.done("overlays");
        chroot::run_hooks(&root, &m.hooks, lk.epoch, &log, &m.files[0])?;
        progress.finish();
        ph.done("hooks");

        let scrubbed = scrub::scrub(&root, m, lk)?;
        if m.first_boot {
            firstboot::install(&root)?;
        }
        // Read again: a hook may have installed or removed packages.
        let installed = dpkg::installed(&root)?;
        ph.done("scrub");

        let mut norm = normalize::Options::new(lk.epoch);
        norm.previous = match self.previous {
            Some(id) => Some(store.read_image(&id)?),
            None => None,
        };
        let (extra, overlay_image) = self.record(work, &installed, &log, ph)?;
        let imported = import::import(
            store,
            &ImportSource::Dir(root.clone()),
            &ImportOptions {
                name: set_ref.then(|| m.name.clone()),
                normalize: Some(norm),
                excludes: Excludes::default(),
                extra,
            },
            progress,
        )?;
        ph.done("normalise, hash, store");
        if let Some(k) = &install.key {
            // The next build of this package set starts from this tree (an optimisation:
            // a tree that cannot be kept is removed with the work directory).
            let _ = cache::keep_scratch(store, k, &root);
        }
        if self.provenance {
            self.write_provenance(&imported.id, overlay_image)?;
            ph.done("provenance");
        }
        Ok(Built {
            id: imported.id,
            name: m.name.clone(),
            epoch: lk.epoch,
            packages: installed.len(),
            lock_updated: self.lock_updated,
            download,
            install,
            overlays,
            hooks: m.hooks.len(),
            scrub: scrubbed,
            normalize: imported.normalize,
            stats: imported.stats,
            phases: Vec::new(),
        })
    }

    /// Makes `root` the locked package set as mmdebstrap installs it: a verified copy of
    /// the install cache's entry when there is one (and the cache may be read), else
    /// installed from a flat repository of the locked .debs, then kept in the cache. A
    /// cache that cannot keep the new entry is reported; the build goes on.
    fn install(
        &self,
        work: &Path,
        root: &Path,
        log: &Path,
        ph: &mut PhaseClock,
    ) -> Result<cache::Report> {
        let (store, m, lk) = (self.store, self.m, self.lk);
        let names: Vec<String> = lk.packages.iter().map(|p| p.name.clone()).collect();
        let args = chroot::mmdebstrap_args(m, &names, lk.epoch);
        let key = (self.cache != cache::Use::Off).then(|| cache::key(lk, &args));
        let mut report = cache::Report {
            cache: "off",
            key,
            restored: None,
            note: None,
        };
        if let (Some(k), cache::Use::ReadWrite { .. }) = (&key, self.cache) {
            match cache::restore(store, k, root)? {
                cache::Restored::Hit(how) => {
                    dpkg::check_installed(root, lk, &m.files[0])?;
                    let line = format!("--- install: install cache entry {} ({how})\n", k.to_hex());
                    fsx::write(log, line)?;
                    report.cache = "hit";
                    report.restored = Some(how);
                    ph.done("install (cached)");
                    return Ok(report);
                }
                cache::Restored::Miss => {}
                cache::Restored::Damaged(why) => report.note = Some(why),
            }
        }
        let repo = work.join("repo");
        debs::make_repo(store, lk, &repo)?;
        chroot::install(root, &repo, m, &args, lk.epoch, log)?;
        dpkg::check_installed(root, lk, &m.files[0])?;
        ph.done("install");
        let limit = match self.cache {
            cache::Use::ReadWrite { limit } => {
                report.cache = "miss";
                limit
            }
            cache::Use::Refresh { limit } => {
                report.cache = "refresh";
                limit
            }
            cache::Use::Off => return Ok(report),
        };
        if let Some(k) = &key {
            if let Err(e) = cache::save(store, k, root, limit) {
                report.note = Some(format!(
                    "the install cache could not keep this install: {e}"
                ));
            }
            ph.done("install cache");
        }
        Ok(report)
    }

    /// What is needed to build this image again (and what the build did), stored beside
    /// it: the flattened manifest, the lock, the local-state list, the build info, the
    /// installed packages and the log. Stores the overlays as an image of their own.
    fn record(
        &self,
        work: &Path,
        installed: &[dpkg::Installed],
        log: &Path,
        ph: &PhaseClock,
    ) -> Result<(StoredFiles, Option<Hash>)> {
        let (m, lk) = (self.m, self.lk);
        let overlay_image = store_overlays(self.store, m, work)?;
        let packages: String = installed
            .iter()
            .map(|p| format!("{} {} {} {}\n", p.name, p.version, p.arch, p.source))
            .collect();
        let info = serde_json::json!({
            "tool": format!("imager {}", env!("CARGO_PKG_VERSION")),
            "manifest": m.name,
            "manifest_files": m.files,
            "epoch": lk.epoch,
            "lock_inputs": lk.inputs,
            "previous": self.previous.map(|p| p.to_hex()),
            "overlays": overlay_image.map(|p| p.to_hex()),
            "started": self.started.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "phases": ph.0,
        });
        let local_state: String = m.local_state.iter().map(|l| format!("{l}\n")).collect();
        let log_text = fsx::read(log).unwrap_or_default();
        let files = vec![
            (BUILD_MANIFEST.to_string(), m.flattened()?.into_bytes()),
            (
                BUILD_LOCK.to_string(),
                lk.print(&format!("{} (stored with the image)", m.name))
                    .into_bytes(),
            ),
            (BUILD_LOCAL_STATE.to_string(), local_state.into_bytes()),
            (
                BUILD_INFO.to_string(),
                serde_json::to_vec_pretty(&info).unwrap_or_default(),
            ),
            (PACKAGES.to_string(), packages.into_bytes()),
            (BUILD_LOG.to_string(), log_text),
        ];
        Ok((files, overlay_image))
    }

    /// Writes the image's provenance ([`provenance`]) unless it has one: an
    /// image keeps the provenance of the build that first stored it (a signature may
    /// cover it).
    fn write_provenance(&self, id: &str, overlays: Option<Hash>) -> Result<()> {
        let id = Hash::from_hex(id).ok_or_else(|| Error::Internal("bad image ID".into()))?;
        if self
            .store
            .image_file(&id, provenance::PROVENANCE)?
            .is_some()
        {
            return Ok(());
        }
        let secs = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        };
        let lk = self.lk;
        let debs = lk
            .packages
            .iter()
            .map(|p| {
                // A local .deb by the file it was copied from: it has no download URL.
                let url = match p.source {
                    apt::Origin::Mirror(i) => {
                        let base = lk.sources.get(i).map(|s| s.uri.as_str()).unwrap_or("");
                        format!("{}/{}", base.trim_end_matches('/'), p.filename)
                    }
                    apt::Origin::Local(i) => {
                        let dir = self.m.local_debs.get(i).cloned().unwrap_or_default();
                        format!("file://{}", dir.join(&p.filename).display())
                    }
                };
                (
                    format!("{}={}:{}", p.name, p.version, p.arch),
                    url,
                    p.sha256.clone(),
                )
            })
            .collect();
        let lock_file = lock::lock_path(&self.m.files[0]);
        let facts = provenance::Facts {
            name: &self.m.name,
            manifest_files: &self.m.files,
            lock_file: &lock_file,
            epoch: lk.epoch,
            previous: self.previous,
            overlays,
            debs,
            started: secs(self.started),
            finished: secs(std::time::SystemTime::now()),
        };
        let text = provenance::statement(self.store, &id, &facts)?;
        self.store
            .add_image_file(&id, provenance::PROVENANCE, &text)?;
        Ok(())
    }
}

/// Copies the overlay sources into the store as an (unnamed) image of their own, so a
/// rebuild has them even when the repository has moved on.
fn store_overlays(store: &Store, m: &Recipe, work: &Path) -> Result<Option<Hash>> {
    if m.overlays.is_empty() {
        return Ok(None);
    }
    let dir = work.join("overlays");
    fsx::create_dir_all(&dir)?;
    for (i, o) in m.overlays.iter().enumerate() {
        let st = std::process::Command::new("cp")
            .args(["-a", "--no-dereference"])
            .arg(&o.src)
            .arg(dir.join(i.to_string()))
            .status()
            .map_err(|e| Error::io("run", "cp", e))?;
        if !st.success() {
            return Err(Error::Build(format!(
                "cannot copy overlay {}",
                o.src.display()
            )));
        }
    }
    let imported = import::import(
        store,
        &ImportSource::Dir(dir),
        &ImportOptions {
            name: None,
            normalize: None,
            excludes: Excludes::default(),
            extra: Vec::new(),
        },
        &crate::progress::Quiet,
    )?;
    Hash::from_hex(&imported.id)
        .map(Some)
        .ok_or_else(|| Error::Internal("bad overlay image ID".into()))
}

/// Gives every overlay source the permission bits of another checkout: group-writable,
/// not readable by others (a checkout keeps only the executable bit of what the author
/// had; the rest comes from the umask of whoever checked it out).
fn scramble_perms(dir: &Path) -> Result<()> {
    for e in walkdir::WalkDir::new(dir).follow_links(false) {
        let e = e.map_err(|source| Error::Walk {
            root: dir.to_path_buf(),
            source,
        })?;
        if e.file_type().is_symlink() {
            continue;
        }
        let mode = fsx::symlink_metadata(e.path())?.permissions();
        use std::os::unix::fs::PermissionsExt;
        fsx::set_mode(e.path(), (mode.mode() & 0o7777 | 0o020) & !0o004)?;
    }
    Ok(())
}

/// What `imager rebuild` found.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Rebuilt {
    /// The id of the image rebuilt, in hex.
    pub original: String,
    /// The id of the rebuild's image, in hex.
    pub rebuilt: String,
    /// True when the rebuild gave the same image id: the build is reproducible.
    pub identical: bool,
    /// Path by path, `-` the original's manifest line, `+` the rebuild's.
    pub differences: Vec<String>,
    /// The digest of the rebuilt image's tar.zst export, made by the rebuild's own
    /// process from its own store (only when the child of `rebuild --vary` asks for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuilt_tar_sha256: Option<String>,
}

/// `imager rebuild ID`: builds the image again from what its build stored (manifest,
/// lock, overlays, local-state list, previous image) and compares, path by path.
pub fn rebuild(
    store: &Store,
    spec: &str,
    keep_failed: bool,
    scramble_overlay_perms: bool,
    progress: &dyn Progress,
) -> Result<Rebuilt> {
    let id = store.resolve(spec)?;
    let need = |name: &str| -> Result<Vec<u8>> {
        store.image_file(&id, name)?.ok_or_else(|| {
            Error::Build(format!("image {id} has no {name}: it was not made by `imager build`, so there is nothing to rebuild it from"))
        })
    };
    let flat = need(BUILD_MANIFEST)?;
    let lock_text = need(BUILD_LOCK)?;
    let local_state = need(BUILD_LOCAL_STATE)?;
    let info: serde_json::Value = serde_json::from_slice(&need(BUILD_INFO)?)
        .map_err(|e| Error::Build(format!("image {id}: {BUILD_INFO} is not JSON: {e}")))?;
    let w = work_dir(&store.root().join("build"), "rebuild")?;
    let mpath = w.path.join("manifest.toml");
    fsx::write(&mpath, &flat)?;
    fsx::write(lock::lock_path(&mpath), &lock_text)?;
    fsx::write(w.path.join("local-state.txt"), &local_state)?;
    let lk = Lock::parse(&String::from_utf8_lossy(&lock_text), BUILD_LOCK)?;
    local::from_cache(store, &lk, &w.path)?;
    if let Some(ov) = info["overlays"].as_str().and_then(Hash::from_hex) {
        let tree = store.read_image(&ov)?;
        crate::archive::dir::export_dir(
            store,
            &tree,
            &w.path.join("overlays"),
            &crate::progress::Quiet,
        )?;
        if scramble_overlay_perms {
            scramble_perms(&w.path.join("overlays"))?;
        }
    }
    let previous = info["previous"].as_str().map(String::from);
    let built = build(
        store,
        &BuildOptions {
            manifest: mpath,
            update_lock: false,
            keep_failed,
            previous,
            set_ref: false,
            // A rebuild proves that the image comes from its inputs alone.
            cache: cache::Use::Off,
            provenance: true,
        },
        progress,
    )?;
    let new_id = Hash::from_hex(&built.id).ok_or_else(|| Error::Internal("bad image ID".into()))?;
    let differences = if new_id == id {
        Vec::new()
    } else {
        text::differences(&store.read_image(&id)?, &store.read_image(&new_id)?)
    };
    Ok(Rebuilt {
        original: id.to_hex(),
        rebuilt: built.id,
        identical: new_id == id,
        differences,
        rebuilt_tar_sha256: None,
    })
}
