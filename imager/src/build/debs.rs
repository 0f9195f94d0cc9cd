//! The .deb cache in the store (`debs/<sha256>.deb`, verified when added and when used)
//! and the flat apt repository a build installs from: exactly the locked .debs, so apt
//! inside mmdebstrap can choose nothing else.

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

pub fn cache_dir(store: &Store) -> PathBuf {
    store.root().join("debs")
}

fn cached(store: &Store, p: &LockedPackage) -> PathBuf {
    cache_dir(store).join(format!("{}.deb", p.sha256))
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).ctx("open", path)?;
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
pub struct Fetched {
    pub downloaded: usize,
    pub bytes: u64,
    pub cached: usize,
}

/// Makes sure every locked .deb is in the cache, downloading the missing ones from the
/// current sources (`mirrors`, in the lock's source order) and then from the URI the
/// lock recorded. Each download is checked against the lock's sha256 before it is kept.
pub fn fetch(
    store: &Store,
    lock: &Lock,
    mirrors: &[super::apt::SourceLine],
    progress: &dyn crate::progress::Progress,
) -> Result<Fetched> {
    let dir = cache_dir(store);
    fsx::create_dir_all(&dir)?;
    let missing: Vec<&LockedPackage> = lock
        .packages
        .iter()
        .filter(|p| !cached(store, p).is_file())
        .collect();
    progress.start("download", Some(missing.len() as u64));
    // Downloads wait on the network, not the CPU: a few more than the cores.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(6)
        .build()
        .map_err(|e| Error::Usage(format!("cannot start download threads: {e}")))?;
    let results: Vec<Result<u64>> = pool.install(|| {
        missing
            .par_iter()
            .map(|p| {
                let r = download(store, lock, mirrors, p);
                progress.inc(1);
                r
            })
            .collect()
    });
    progress.finish();
    let mut f = Fetched {
        cached: lock.packages.len() - missing.len(),
        ..Fetched::default()
    };
    for r in results {
        f.bytes += r?;
        f.downloaded += 1;
    }
    Ok(f)
}

fn download(
    store: &Store,
    lock: &Lock,
    mirrors: &[super::apt::SourceLine],
    p: &LockedPackage,
) -> Result<u64> {
    let recorded = &lock.sources[p.source].uri;
    let mut uris: Vec<String> = Vec::new();
    // The source at the same place in today's list first (a host mirror may have moved),
    // then every other current one, then the recorded one.
    if let Some(m) = mirrors.get(p.source) {
        uris.push(m.uri.clone());
    }
    uris.extend(mirrors.iter().map(|m| m.uri.clone()));
    uris.push(recorded.clone());
    uris.dedup();
    let mut seen = std::collections::HashSet::new();
    uris.retain(|u| seen.insert(u.clone()));

    let tmp = store
        .root()
        .join("tmp")
        .join(format!("{}.deb.part", p.sha256));
    let mut tried = Vec::new();
    for base in uris {
        let url = format!("{base}/{}", p.filename);
        let _ = std::fs::remove_file(&tmp);
        let out = Command::new(APT_HELPER)
            .args(["-q", "download-file", &url])
            .arg(&tmp)
            .arg(format!("SHA256:{}", p.sha256))
            .output()
            .map_err(|e| Error::io("run", APT_HELPER, e))?;
        if out.status.success() && tmp.is_file() {
            let got = sha256_file(&tmp)?;
            if got == p.sha256 {
                let dest = cached(store, p);
                fsx::rename(&tmp, &dest)?;
                return Ok(p.size);
            }
            tried.push(format!("{url}: sha256 {got}"));
        } else {
            let why = String::from_utf8_lossy(&out.stderr);
            let why = why
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("failed")
                .trim();
            tried.push(format!("{url}: {why}"));
        }
    }
    let _ = std::fs::remove_file(&tmp);
    Err(Error::Usage(format!(
        "cannot download {} {} ({}): {}\n(a version gone from the mirror needs `imager lock` again, or a snapshot mirror)",
        p.name,
        p.version,
        p.sha256,
        tried.join("; ")
    )))
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
            std::fs::hard_link(&src, &dest).ctx("link", &dest)?;
            let out = Command::new("dpkg-deb")
                .arg("-f")
                .arg(&dest)
                .output()
                .map_err(|e| Error::io("run", "dpkg-deb", e))?;
            if !out.status.success() {
                return Err(Error::Usage(format!(
                    "dpkg-deb cannot read {}: {}",
                    src.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            let control = String::from_utf8_lossy(&out.stdout);
            Ok(format!(
                "{}\nFilename: ./{name}\nSize: {}\nSHA256: {}\n\n",
                control.trim_end(),
                p.size,
                p.sha256
            ))
        })
        .collect();
    let mut index = String::new();
    for s in stanzas {
        index += &s?;
    }
    std::fs::write(repo.join("Packages"), index).ctx("write", repo.join("Packages"))
}
