//! The .deb cache in the store (`debs/<sha256>.deb`, verified when added and when used)
//! and the flat apt repository a build installs from: exactly the locked .debs, so apt
//! inside mmdebstrap can choose nothing else.

use super::apt::{Origin, SourceLine};
use super::lock::{Lock, LockedPackage};
use crate::error::{Error, IoContext, Result};
use crate::fsx;
use crate::store::Store;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

const APT_HELPER: &str = "/usr/lib/apt/apt-helper";

/// Where the store caches .debs: `debs/` in the store's root, one `<sha256>.deb` each.
pub fn cache_dir(store: &Store) -> PathBuf {
    store.root().join("debs")
}

/// Where the store caches the locked .deb `p`.
pub(super) fn cached(store: &Store, p: &LockedPackage) -> PathBuf {
    cache_dir(store).join(format!("{}.deb", p.sha256))
}

/// The SHA-256 of a file, lowercase hex.
pub(super) fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fsx::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).ctx("read", path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// What fetching did: packages downloaded and bytes, the rest came from the cache.
#[derive(Debug, Default, serde::Serialize)]
pub struct Downloads {
    /// Packages fetched from a mirror.
    pub downloaded: usize,
    /// Bytes fetched (the locked sizes of the downloaded packages).
    pub bytes: u64,
    /// Packages the cache already had.
    pub cached: usize,
    /// Packages copied into the cache from the manifest's local directories.
    pub local: usize,
}

/// Makes sure every locked .deb of a mirror is in the cache (local ones are copied in
/// before, see `super::local`). Missing ones are fetched in one apt
/// download from the first candidate mirror (apt pipelines and parallelises it); those
/// that failed are then tried, one by one, on every other candidate. Each file is checked
/// against the lock's sha256 before it is kept.
pub fn fetch(
    store: &Store,
    lock: &Lock,
    mirrors: &[SourceLine],
    progress: &dyn crate::progress::Progress,
) -> Result<Downloads> {
    fsx::create_dir_all(&cache_dir(store))?;
    let mut missing: Vec<&LockedPackage> = Vec::new();
    for p in &lock.packages {
        if matches!(p.source, Origin::Mirror(_)) && !fsx::is_file(cached(store, p))? {
            missing.push(p);
        }
    }
    let mut f = Downloads {
        cached: lock.packages.len() - missing.len(),
        ..Downloads::default()
    };
    if missing.is_empty() {
        return Ok(f);
    }
    progress.start("download", Some(missing.len() as u64));
    let part = |p: &LockedPackage| {
        store
            .root()
            .join("tmp")
            .join(format!("{}.deb.part", p.sha256))
    };
    let first: Vec<(String, PathBuf, &LockedPackage)> = missing
        .iter()
        .map(|p| {
            (
                format!("{}/{}", candidates(lock, mirrors, p)[0], p.filename),
                part(p),
                *p,
            )
        })
        .collect();
    // The batch's failures are retried below, where each is reported.
    let _ = apt_download(&first);
    for p in missing {
        let mut tried = Vec::new();
        let mut ok = keep_if_valid(store, p, &part(p), &mut tried)?;
        for base in candidates(lock, mirrors, p).iter().skip(1) {
            if ok {
                break;
            }
            let url = format!("{base}/{}", p.filename);
            match apt_download(&[(url.clone(), part(p), p)]) {
                Ok(()) => ok = keep_if_valid(store, p, &part(p), &mut tried)?,
                Err(why) => tried.push(format!("{url}: {why}")),
            }
        }
        if !ok {
            return Err(Error::Build(format!(
                "cannot download {} {} ({}): {}\n(a version gone from the mirror needs \
                 `imager lock` again, or a snapshot mirror)",
                p.name,
                p.version,
                p.sha256,
                tried.join("; ")
            )));
        }
        f.downloaded += 1;
        f.bytes += p.size;
        progress.inc(1);
    }
    progress.finish();
    Ok(f)
}

/// Where a package may be found: the source at its place in today's list first (a host
/// mirror may have moved), then every other current one, then the one the lock recorded.
fn candidates(lock: &Lock, mirrors: &[SourceLine], p: &LockedPackage) -> Vec<String> {
    let mut uris: Vec<String> = Vec::new();
    let at = match p.source {
        Origin::Mirror(i) => i,
        // Never asked: fetch leaves local packages out.
        Origin::Local(_) => usize::MAX,
    };
    let all = mirrors
        .get(at)
        .into_iter()
        .chain(mirrors)
        .chain(lock.sources.get(at));
    for m in all {
        if !uris.contains(&m.uri) {
            uris.push(m.uri.clone());
        }
    }
    uris
}

/// Moves a downloaded (or copied) file into the cache if its sha256 is the locked one;
/// otherwise removes it and notes what it was in `tried`.
pub(super) fn keep_if_valid(
    store: &Store,
    p: &LockedPackage,
    part: &Path,
    tried: &mut Vec<String>,
) -> Result<bool> {
    if !fsx::is_file(part)? {
        return Ok(false);
    }
    let got = sha256_file(part)?;
    if got != p.sha256 {
        tried.push(format!("{}: sha256 {got}", p.filename));
        fsx::remove_file(part)?;
        return Ok(false);
    }
    fsx::rename(part, &cached(store, p))?;
    Ok(true)
}

/// One run of apt's downloader (apt's methods, proxies and retries) for several files;
/// apt checks each against its sha256 too. The error is apt's last complaint.
fn apt_download(files: &[(String, PathBuf, &LockedPackage)]) -> std::result::Result<(), String> {
    let mut c = Command::new(APT_HELPER);
    // Files go to the store, which apt's unprivileged `_apt` user cannot write.
    c.args(["-q", "-o", "APT::Sandbox::User=root", "download-file"]);
    for (url, part, p) in files {
        let _ = fsx::remove_file(part);
        c.arg(url).arg(part).arg(format!("SHA256:{}", p.sha256));
    }
    let out = c
        .output()
        .map_err(|e| format!("cannot run {APT_HELPER}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let why = err
        .lines()
        .find(|l| l.starts_with("E: Failed"))
        .or_else(|| err.lines().rev().find(|l| l.starts_with("E:")))
        .unwrap_or("failed");
    Err(why.trim().to_string())
}

/// Builds a flat repository in `repo` (on the store's filesystem) from the cached .debs:
/// hard links named as Debian names them, and a `Packages` index from their control data.
pub fn make_repo(store: &Store, lock: &Lock, repo: &Path) -> Result<()> {
    fsx::create_dir_all(repo)?;
    let stanzas: Vec<Result<String>> = lock
        .packages
        .par_iter()
        .map(|p| {
            let src = cached(store, p);
            let got = sha256_file(&src)?;
            if got != p.sha256 {
                return Err(Error::Store {
                    store: store.root().to_path_buf(),
                    reason: format!(
                        "cached {} is corrupt (sha256 {got}); delete it to download again",
                        src.display()
                    ),
                });
            }
            let name = format!(
                "{}_{}_{}.deb",
                p.name,
                p.version.replace(':', "%3a"),
                p.arch
            );
            let dest = repo.join(&name);
            fsx::hard_link(&src, &dest)?;
            stanza(&dest, &src, &format!("./{name}"), p.size, &p.sha256)
        })
        .collect();
    let mut index = String::new();
    for s in stanzas {
        index += &s?;
    }
    fsx::write(repo.join("Packages"), index)
}

/// The `Packages` stanza of the .deb at `deb`: its control data, then `Filename` (below
/// the repository), `Size` and `SHA256`. `shown` names it in errors (the cached file, not
/// the repository's link to it).
pub(super) fn stanza(
    deb: &Path,
    shown: &Path,
    filename: &str,
    size: u64,
    sha256: &str,
) -> Result<String> {
    let out = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .output()
        .map_err(|e| Error::io("run", "dpkg-deb", e))?;
    if !out.status.success() {
        return Err(Error::Command {
            program: "dpkg-deb".into(),
            detail: format!(
                "cannot read {}: {}",
                shown.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let control = String::from_utf8_lossy(&out.stdout);
    Ok(format!(
        "{}\nFilename: {filename}\nSize: {size}\nSHA256: {sha256}\n\n",
        control.trim_end()
    ))
}
