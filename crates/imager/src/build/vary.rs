//! `imager rebuild --vary`: rebuilds an image in a builder environment unlike the one it
//! was built in, as reprotest and Debian's reproducible-builds CI do, to show that the
//! image ID depends on the manifest and lock alone. The rebuild runs as a child `imager
//! rebuild` under the varied environment (so nothing of this process leaks into it):
//! another umask, time zone, locale, hostname (its own UTS namespace), working directory,
//! HOME, PATH order, one CPU, a clock a day ahead (libfaketime), overlay sources with
//! other permission bits than the author's, and another store path.
//!
//! Equal IDs are not the whole claim: the child also exports the image it built to
//! tar.zst in its varied environment, from its own store (before a copied store is
//! removed), and reports the export's digest; the parent compares it with the digest of
//! the original's export made here. An exporter that let the time, umask or locale into
//! the archive would show as a difference even with the same ID.

use super::Rebuilt;
use crate::error::{Error, Result};
use crate::store::{Access, Store};
use crate::tree::Hash;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One thing about the builder's environment that must not reach the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Vary {
    /// umask 0002 (group-writable files) instead of the usual 0022
    Umask,
    /// TZ=Pacific/Chatham (UTC+12:45 or +13:45)
    Tz,
    /// LANG and LC_ALL fr_FR.UTF-8, LANGUAGE=fr
    Locale,
    /// another hostname, in a UTS namespace of its own
    Hostname,
    /// another working directory
    Cwd,
    /// another, empty HOME
    Home,
    /// PATH's directories in reverse order
    Path,
    /// one CPU (taskset)
    Cpus,
    /// the clock a day ahead (faketime)
    Time,
    /// overlay sources group-writable and not world-readable, as another checkout makes them
    OverlayPerms,
    /// another store path (a hard-linked copy of the store beside it)
    Store,
    /// every variation above
    All,
}

impl Vary {
    /// Every value `--vary` takes, `All` last (every one before it is one variation).
    pub const CHOICES: [Vary; 12] = [
        Vary::Umask,
        Vary::Tz,
        Vary::Locale,
        Vary::Hostname,
        Vary::Cwd,
        Vary::Home,
        Vary::Path,
        Vary::Cpus,
        Vary::Time,
        Vary::OverlayPerms,
        Vary::Store,
        Vary::All,
    ];

    /// The value as `--vary` spells it.
    pub fn name(self) -> &'static str {
        self.spelled().0
    }

    /// What it varies, for the command's help.
    pub fn help(self) -> &'static str {
        self.spelled().1
    }

    fn spelled(self) -> (&'static str, &'static str) {
        match self {
            Vary::Umask => (
                "umask",
                "umask 0002 (group-writable files) instead of the usual 0022",
            ),
            Vary::Tz => ("tz", "TZ=Pacific/Chatham (UTC+12:45 or +13:45)"),
            Vary::Locale => ("locale", "LANG and LC_ALL fr_FR.UTF-8, LANGUAGE=fr"),
            Vary::Hostname => (
                "hostname",
                "another hostname, in a UTS namespace of its own",
            ),
            Vary::Cwd => ("cwd", "another working directory"),
            Vary::Home => ("home", "another, empty HOME"),
            Vary::Path => ("path", "PATH's directories in reverse order"),
            Vary::Cpus => ("cpus", "one CPU (taskset)"),
            Vary::Time => ("time", "the clock a day ahead (faketime)"),
            Vary::OverlayPerms => (
                "overlay-perms",
                "overlay sources group-writable and not world-readable, as another checkout \
                 makes them",
            ),
            Vary::Store => (
                "store",
                "another store path (a hard-linked copy of the store beside it)",
            ),
            Vary::All => ("all", "every variation above"),
        }
    }
}

/// A rebuild under varied conditions: what was varied and what came out.
#[derive(Debug, serde::Serialize)]
pub struct VariedRebuild {
    /// Each condition varied and its value, one phrase each (`TZ=Pacific/Chatham`,
    /// `store: /tmp/...`).
    pub varied: Vec<String>,
    /// The rebuild's comparison with the original image.
    #[serde(flatten)]
    pub rebuilt: Rebuilt,
    /// The digest of the original's tar.zst export, made by this process.
    pub original_tar_sha256: String,
    /// Whether that equals the rebuild's `rebuilt_tar_sha256`.
    pub tar_identical: bool,
}

impl VariedRebuild {
    /// Both the ID and the tar.zst bytes came out the same.
    pub fn identical(&self) -> bool {
        self.rebuilt.identical && self.tar_identical
    }
}

/// The child's side of the tarball comparison: the digest of the rebuilt image's tar.zst
/// export from `store` (the child's own), recorded in `r`.
pub fn record_tar_digest(store: &Store, r: &mut Rebuilt) -> Result<()> {
    r.rebuilt_tar_sha256 = Some(tar_digest(store, &r.rebuilt)?);
    Ok(())
}

fn tar_digest(store: &Store, id: &str) -> Result<String> {
    let id = Hash::from_hex(id).ok_or_else(|| Error::Internal(format!("bad image ID {id}")))?;
    let tree = store.read_image(&id)?;
    crate::archive::tar_export::tar_zst_digest(store, &tree, &crate::progress::Quiet)
}

/// Finds `program` on PATH, or says which package provides it.
fn program(name: &str, package: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| matches!(crate::fsx::is_file(p), Ok(true)))
        })
        .ok_or_else(|| {
            Error::Build(format!(
                "rebuild --vary needs {name}: apt-get install {package}"
            ))
        })
}

/// Rebuilds `image` from `store_root` by running `exe` (this imager) under the
/// variations in `vary` (the working directory and HOME it makes are removed after).
pub fn rebuild(exe: &Path, store_root: &Path, image: &str, vary: &[Vary]) -> Result<VariedRebuild> {
    let work = super::work_dir(&store_root.join("build"), "vary")?;
    let scratch = work.path.as_path();
    let mut each: Vec<Vary> = if vary.contains(&Vary::All) {
        Vary::CHOICES[..Vary::CHOICES.len() - 1].to_vec()
    } else {
        vary.to_vec()
    };
    each.sort();
    each.dedup();
    let copy = if each.contains(&Vary::Store) {
        Some(StoreCopy::beside(store_root)?)
    } else {
        None
    };
    let store = copy.as_ref().map_or(store_root, |c| c.path.as_path());
    let (argv, mut varied) = chain(exe, store, image, &each)?;
    if let Some(c) = &copy {
        varied.push(format!("store: {}", c.path.display()));
    }
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    environment(&mut c, &each, scratch, &mut varied)?;
    let out = c
        .output()
        .map_err(|e| Error::io("run", PathBuf::from(&argv[0]), e))?;
    let rebuilt: Rebuilt = serde_json::from_slice(&out.stdout).map_err(|e| {
        Error::Build(format!(
            "the varied rebuild of {image} failed ({}): {e}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })?;
    let rebuilt_tar = rebuilt.rebuilt_tar_sha256.clone().ok_or_else(|| {
        Error::Internal(format!(
            "the varied rebuild of {image} reported no tar digest"
        ))
    })?;
    // The child has finished and released the store's lock.
    let original_tar_sha256 =
        tar_digest(&Store::open(store_root, Access::Read)?, &rebuilt.original)?;
    let tar_identical = original_tar_sha256 == rebuilt_tar;
    Ok(VariedRebuild {
        varied,
        rebuilt,
        original_tar_sha256,
        tar_identical,
    })
}

/// The child's command line, with the wrappers that vary its process (and what each
/// varies): `[taskset -c 0] [unshare --uts --] sh -c SCRIPT sh [faketime +1d] imager ...`.
fn chain(
    exe: &Path,
    store_root: &Path,
    image: &str,
    each: &[Vary],
) -> Result<(Vec<String>, Vec<String>)> {
    let mut varied = Vec::new();
    // The chain: [taskset -c 0] [unshare --uts] sh -c SCRIPT sh [faketime +1d] imager ...
    let mut argv: Vec<String> = Vec::new();
    let mut script = String::new();
    if each.contains(&Vary::Cpus) {
        argv.extend([
            path_str(&program("taskset", "util-linux")?)?,
            "-c".into(),
            "0".into(),
        ]);
        varied.push("cpus: 1 (taskset -c 0)".to_string());
    }
    if each.contains(&Vary::Hostname) {
        argv.extend([
            path_str(&program("unshare", "util-linux")?)?,
            "--uts".into(),
            "--".into(),
        ]);
        script.push_str("hostname imager-varied-builder && ");
        varied.push("hostname: imager-varied-builder".to_string());
    }
    if each.contains(&Vary::Umask) {
        script.push_str("umask 0002 && ");
        varied.push("umask: 0002".to_string());
    }
    script.push_str("exec \"$@\"");
    argv.extend(["/bin/sh".into(), "-c".into(), script, "sh".into()]);
    if each.contains(&Vary::Time) {
        argv.extend([
            path_str(&program("faketime", "faketime")?)?,
            "-f".into(),
            "+1d".into(),
        ]);
        varied.push("time: a day ahead (faketime -f +1d)".to_string());
    }
    argv.push(path_str(exe)?);
    argv.extend(["--store".into(), path_str(store_root)?, "--quiet".into()]);
    argv.extend([
        "rebuild".into(),
        image.into(),
        "--json".into(),
        "--tar-digest".into(),
    ]);
    if each.contains(&Vary::OverlayPerms) {
        argv.push("--scramble-overlay-perms".into());
        varied.push("overlay sources: group-writable, not world-readable".to_string());
    }
    Ok((argv, varied))
}

/// The child's environment: variables and working directory (made in `scratch`).
fn environment(
    c: &mut Command,
    each: &[Vary],
    scratch: &Path,
    varied: &mut Vec<String>,
) -> Result<()> {
    if each.contains(&Vary::Tz) {
        c.env("TZ", "Pacific/Chatham");
        varied.push("TZ=Pacific/Chatham".to_string());
    }
    if each.contains(&Vary::Locale) {
        c.env("LANG", "fr_FR.UTF-8")
            .env("LC_ALL", "fr_FR.UTF-8")
            .env("LANGUAGE", "fr");
        varied.push("locale: fr_FR.UTF-8".to_string());
    }
    let dir = |name: &str| -> Result<PathBuf> {
        let d = scratch.join(name);
        crate::fsx::create_dir_all(&d)?;
        Ok(d)
    };
    if each.contains(&Vary::Cwd) {
        let d = dir("cwd")?;
        varied.push(format!("working directory: {}", d.display()));
        c.current_dir(d);
    }
    if each.contains(&Vary::Home) {
        let d = dir("home")?;
        varied.push(format!("HOME={}", d.display()));
        c.env("HOME", d);
    }
    if each.contains(&Vary::Path) {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        dirs.reverse();
        let p = std::env::join_paths(dirs)
            .map_err(|e| Error::Internal(format!("cannot reverse PATH: {e}")))?;
        varied.push(format!("PATH={}", p.to_string_lossy()));
        c.env("PATH", p);
    }
    Ok(())
}

/// A store's objects, images, names and package cache under another path, hard-linked
/// (they are never changed in place, only added and renamed into place), removed again
/// when dropped.
struct StoreCopy {
    path: PathBuf,
}

impl StoreCopy {
    fn beside(store: &Path) -> Result<StoreCopy> {
        let name = store
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "store".into());
        let path = store.with_file_name(format!(".{name}.vary-{}", std::process::id()));
        crate::fsx::create_dir(&path)?;
        let copy = StoreCopy { path };
        for e in crate::fsx::read_dir(store)? {
            let n = e.file_name();
            // Work directories, temporary files and the lock are this store's own.
            if ["build", "tmp", "lock"].iter().any(|x| n == *x) {
                continue;
            }
            let out = Command::new("cp")
                .arg("-al")
                .arg(e.path())
                .arg(copy.path.join(&n))
                .output()
                .map_err(|err| Error::io("run cp -al for", e.path(), err))?;
            if !out.status.success() {
                return Err(Error::Build(format!(
                    "cannot copy the store {} to {}: {}",
                    store.display(),
                    copy.path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        Ok(copy)
    }
}

impl Drop for StoreCopy {
    fn drop(&mut self) {
        let _ = crate::fsx::remove_dir_all(&self.path);
    }
}

fn path_str(p: &Path) -> Result<String> {
    p.to_str()
        .map(String::from)
        .ok_or_else(|| Error::Build(format!("{} is not UTF-8", p.display())))
}
