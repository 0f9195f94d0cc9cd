//! Local packages: the team's own `.deb` files, from directories the manifest names
//! (`[[local]] dir`), installed without a server and pinned in the lock by sha256 like the
//! mirrors' packages.
//!
//! Locking finds every `.deb` below each directory, makes a flat repository index of them
//! (their control data, as the build's own repository has it) and gives it to apt as one
//! more source, so that they are resolved together with the mirrors' (a local package's
//! dependencies come from the mirrors, a local version newer than a mirror's wins). The
//! lock names the directories (`local` lines) and, for each local .deb chosen, its path
//! below its directory, size and sha256.
//!
//! Building checks each locked local .deb against the file the manifest's directory holds
//! now: one changed or gone since the lock makes the lock stale, with the file and both
//! digests named. Then it is copied into the store's .deb cache, verified, and from there
//! on is a cached .deb like any other, which is what `imager rebuild` builds from.

use super::apt::{Index, IndexEntry, Origin};
use super::debs;
use super::lock::{Lock, LockedPackage};
use super::recipe::Recipe;
use crate::deb822;
use crate::error::{Error, Result};
use crate::fsx;
use crate::store::Store;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// One .deb found in a local directory.
struct Found {
    /// Index of its directory in the manifest's list.
    dir: usize,
    /// Its path below that directory, as the lock writes it.
    rel: String,
    path: PathBuf,
    size: u64,
    sha256: String,
}

/// Every `.deb` below each directory (symbolic links followed, as a repository's pool may
/// use them), in the order of the directories, then of their paths.
fn scan(dirs: &[PathBuf]) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let walk = walkdir::WalkDir::new(dir)
            .follow_links(true)
            .sort_by_file_name();
        for e in walk {
            let e = e.map_err(|source| Error::Walk {
                root: dir.clone(),
                source,
            })?;
            if !e.file_type().is_file() || e.path().extension() != Some("deb".as_ref()) {
                continue;
            }
            let path = e.path().to_path_buf();
            // The lock's lines are words split at spaces.
            let rel = path
                .strip_prefix(dir)
                .ok()
                .and_then(|r| r.to_str())
                .filter(|r| !r.contains(char::is_whitespace))
                .ok_or_else(|| {
                    Error::Build(format!(
                        "{}: a local .deb's path must be UTF-8 without spaces to be locked; rename it",
                        path.display()
                    ))
                })?
                .to_string();
            out.push(Found {
                dir: i,
                rel,
                size: fsx::metadata(&path)?.len(),
                sha256: String::new(),
                path,
            });
        }
    }
    out.par_iter_mut().try_for_each(|f| -> Result<()> {
        f.sha256 = debs::sha256_file(&f.path)?;
        Ok(())
    })?;
    Ok(out)
}

/// Writes a flat repository index of every .deb in `dirs` into `repo` (for apt, as a
/// trusted `file:` source) and returns them as index entries, each with its local origin.
/// Nothing is written for no directories.
pub fn offer(dirs: &[PathBuf], repo: &Path) -> Result<Index> {
    let mut index = Index::new();
    if dirs.is_empty() {
        return Ok(index);
    }
    let found = scan(dirs)?;
    let stanzas: Vec<String> = found
        .par_iter()
        .map(|f| {
            let filename = format!("./{}/{}", f.dir, f.rel);
            debs::stanza(&f.path, &f.path, &filename, f.size, &f.sha256)
        })
        .collect::<Result<_>>()?;
    let mut from: std::collections::BTreeMap<(String, String, String), &Path> = Default::default();
    for (f, text) in found.iter().zip(&stanzas) {
        let fields = deb822::parse(text);
        let field = |k: &str| {
            fields
                .first()
                .and_then(|p| p.get(k))
                .map(str::to_string)
                .ok_or_else(|| {
                    Error::Build(format!(
                        "{}: its control data has no {k}, so it is no package apt can install",
                        f.path.display()
                    ))
                })
        };
        let key = (field("Package")?, field("Version")?, field("Architecture")?);
        if let Some(other) = from.get(&key) {
            if index.get(&key).is_some_and(|e| e.sha256 != f.sha256) {
                return Err(Error::Build(format!(
                    "{} and {} are both {} {} {} but differ: keep one",
                    other.display(),
                    f.path.display(),
                    key.0,
                    key.1,
                    key.2
                )));
            }
            continue;
        }
        from.insert(key.clone(), &f.path);
        index.insert(
            key,
            IndexEntry {
                filename: f.rel.clone(),
                size: f.size,
                sha256: f.sha256.clone(),
                // Never in the variant's base set: a local package goes in only when the
                // manifest lists it (or a package it lists depends on it).
                essential: false,
                priority: "optional".into(),
                source: Some(Origin::Local(f.dir)),
            },
        );
    }
    fsx::create_dir_all(repo)?;
    let packages = stanzas.concat();
    // A Release naming the one index there is: without it apt tries each compressed name
    // first and logs a failure for every one. Its Date is the epoch's zero so that the
    // lock's epoch stays the mirrors' newest.
    let release = format!(
        "Date: Thu, 01 Jan 1970 00:00:00 UTC\nSHA256:\n {} {} Packages\n",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(packages.as_bytes())),
        packages.len()
    );
    fsx::write(repo.join("Packages"), packages)?;
    fsx::write(repo.join("Release"), release)?;
    Ok(index)
}

/// The directories as the lock names them: relative to `base` (the lock's directory)
/// when below it, else absolute.
pub fn shown_dirs(dirs: &[PathBuf], base: &Path) -> Result<Vec<String>> {
    dirs.iter()
        .map(|d| {
            let shown = match d.strip_prefix(base) {
                Ok(r) if r.as_os_str().is_empty() => ".".to_string(),
                Ok(r) => r.display().to_string(),
                Err(_) => d.display().to_string(),
            };
            if shown.contains('\n') {
                return Err(Error::Build(format!(
                    "{}: a local directory's path must not hold a newline to be locked",
                    d.display()
                )));
            }
            Ok(shown)
        })
        .collect()
}

/// The locked local packages with the file each is in now, below the manifest's
/// directories; None for a directory the manifest does not have ([`stale`] says so).
fn locked_files<'a>(m: &Recipe, lk: &'a Lock) -> Vec<(&'a LockedPackage, Option<PathBuf>)> {
    lk.packages
        .iter()
        .filter_map(|p| match p.source {
            Origin::Local(i) => Some((p, m.local_debs.get(i).map(|d| d.join(&p.filename)))),
            Origin::Mirror(_) => None,
        })
        .collect()
}

/// Why the lock no longer matches the manifest's local .debs, one line per problem: the
/// directories are others, or a locked .deb is gone or changed (its file, the lock's and
/// the file's sha256). None when every locked local .deb is the file the lock says.
pub fn stale(m: &Recipe, lk: &Lock) -> Result<Option<String>> {
    let mut problems = Vec::new();
    if m.local_debs.len() != lk.locals.len() {
        problems.push(format!(
            "the manifest names {} local .deb directories, the lock {}",
            m.local_debs.len(),
            lk.locals.len()
        ));
    }
    for (p, file) in locked_files(m, lk) {
        let Some(file) = file else { continue };
        if !fsx::is_file(&file)? {
            problems.push(format!(
                "{} ({} {}) is locked but gone",
                file.display(),
                p.name,
                p.version
            ));
            continue;
        }
        let got = debs::sha256_file(&file)?;
        if got != p.sha256 {
            problems.push(changed(&file, p, &got));
        }
    }
    Ok((!problems.is_empty()).then(|| problems.join("\n  ")))
}

fn changed(file: &Path, p: &LockedPackage, got: &str) -> String {
    format!(
        "{} ({} {}) changed since the lock was made: the lock has sha256 {}, the file now {got}",
        file.display(),
        p.name,
        p.version,
        p.sha256
    )
}

/// Copies the locked local .debs the store's cache lacks into it, each verified against
/// the lock; returns how many. A copy, not a link: the cache must not change when the
/// team's file does.
pub fn cache(store: &Store, m: &Recipe, lk: &Lock) -> Result<usize> {
    fsx::create_dir_all(&debs::cache_dir(store))?;
    let mut copied = 0;
    for (p, file) in locked_files(m, lk) {
        if fsx::is_file(debs::cached(store, p))? {
            continue;
        }
        let file = file.ok_or_else(|| {
            Error::Build(format!(
                "the lock's local .deb {} {} comes from a directory the manifest does not name",
                p.name, p.version
            ))
        })?;
        let part = store
            .root()
            .join("tmp")
            .join(format!("{}.deb.part", p.sha256));
        fsx::copy(&file, &part)?;
        let mut tried = Vec::new();
        if !debs::keep_if_valid(store, p, &part, &mut tried)? {
            let got = debs::sha256_file(&file)?;
            return Err(Error::Build(changed(&file, p, &got)));
        }
        copied += 1;
    }
    Ok(copied)
}

/// For `imager rebuild`: the manifest's local directories (`local/<n>` in `dir`, as the
/// flattened manifest names them) made again with exactly the locked .debs, hard-linked
/// from the store's cache.
pub fn from_cache(store: &Store, lk: &Lock, dir: &Path) -> Result<()> {
    for i in 0..lk.locals.len() {
        fsx::create_dir_all(&dir.join(format!("local/{i}")))?;
    }
    for p in &lk.packages {
        let Origin::Local(i) = p.source else { continue };
        let src = debs::cached(store, p);
        if !fsx::is_file(&src)? {
            return Err(Error::Store {
                store: store.root().to_path_buf(),
                reason: format!(
                    "the local .deb {} {} (sha256 {}) the image was built from is not in the .deb cache",
                    p.name, p.version, p.sha256
                ),
            });
        }
        let dest = dir.join(format!("local/{i}")).join(&p.filename);
        if let Some(parent) = dest.parent() {
            fsx::create_dir_all(parent)?;
        }
        fsx::hard_link(&src, &dest)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // tests set up and read files directly
    use super::*;

    /// A real .deb made by dpkg-deb: package `name` 1.0 for all, holding `content`.
    fn deb(at: &Path, name: &str, content: &str) -> String {
        let pkg = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(pkg.path().join("DEBIAN")).unwrap();
        std::fs::write(
            pkg.path().join("DEBIAN/control"),
            format!("Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: T <t@example.org>\nDescription: test\n"),
        )
        .unwrap();
        std::fs::write(pkg.path().join("f"), content).unwrap();
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        let st = std::process::Command::new("dpkg-deb")
            .args(["--root-owner-group", "-b"])
            .arg(pkg.path())
            .arg(at)
            .output()
            .unwrap();
        assert!(st.status.success(), "{st:?}");
        debs::sha256_file(at).unwrap()
    }

    fn key(name: &str) -> (String, String, String) {
        (name.into(), "1.0".into(), "all".into())
    }

    #[test]
    fn every_deb_below_is_offered_from_its_directory() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let sha = deb(&a.join("pool/x/one_1.0_all.deb"), "one", "1");
        deb(&b.join("two.deb"), "two", "2");
        std::fs::write(a.join("notes.txt"), "not a package").unwrap();
        let index = offer(&[a.clone(), b.clone()], &d.path().join("repo")).unwrap();
        assert_eq!(index.len(), 2);
        let one = &index[&key("one")];
        assert_eq!(one.filename, "pool/x/one_1.0_all.deb");
        assert_eq!(
            (one.source, one.sha256.as_str()),
            (Some(Origin::Local(0)), sha.as_str())
        );
        assert!(!one.essential);
        assert_eq!(index[&key("two")].source, Some(Origin::Local(1)));
        let packages = std::fs::read_to_string(d.path().join("repo/Packages")).unwrap();
        assert!(
            packages.contains("Filename: ./0/pool/x/one_1.0_all.deb\n"),
            "{packages}"
        );
        assert!(std::fs::read_to_string(d.path().join("repo/Release"))
            .unwrap()
            .contains(" Packages\n"));
        assert!(offer(&[], &d.path().join("none")).unwrap().is_empty());

        // The same package twice with other bytes is refused, naming both files.
        deb(&b.join("one-again.deb"), "one", "other");
        let e = offer(&[a, b], &d.path().join("repo2"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("one_1.0_all.deb") && e.contains("one-again.deb"),
            "{e}"
        );

        let shown = shown_dirs(
            &[
                d.path().join("a"),
                d.path().to_path_buf(),
                PathBuf::from("/srv/apt"),
            ],
            d.path(),
        )
        .unwrap();
        assert_eq!(shown, ["a", ".", "/srv/apt"]);
    }

    #[test]
    fn a_changed_or_gone_deb_makes_the_lock_stale() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("debs/one_1.0_all.deb");
        let sha = deb(&file, "one", "1");
        let m = d.path().join("m.toml");
        std::fs::write(&m, "name = \"m\"\n[[local]]\ndir = \"debs\"\n").unwrap();
        let m = super::super::recipe::load(&m).unwrap();
        let mut lk = Lock {
            inputs: String::new(),
            epoch: 0,
            sources: vec![],
            locals: vec!["debs".into()],
            packages: vec![LockedPackage {
                name: "one".into(),
                version: "1.0".into(),
                arch: "all".into(),
                source: Origin::Local(0),
                filename: "one_1.0_all.deb".into(),
                size: 0,
                sha256: sha.clone(),
            }],
        };
        assert_eq!(stale(&m, &lk).unwrap(), None);
        let sha2 = deb(&file, "one", "2");
        let why = stale(&m, &lk).unwrap().unwrap();
        assert!(
            why.contains("one_1.0_all.deb (one 1.0) changed")
                && why.contains(&sha)
                && why.contains(&sha2),
            "{why}"
        );
        std::fs::remove_file(&file).unwrap();
        assert!(stale(&m, &lk).unwrap().unwrap().contains("locked but gone"));
        lk.locals.push("more".into());
        assert!(stale(&m, &lk)
            .unwrap()
            .unwrap()
            .contains("the manifest names 1 local .deb directories, the lock 2"));
    }
}
