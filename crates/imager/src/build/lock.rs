//! The lock: every package of an image (dependencies included) at an exact version with
//! the sha256 of its .deb, the sources it was resolved from, and the epoch. A build from a
//! lock resolves nothing; with the .debs cached it needs no network.
//!
//! ```text
//! # imager lock v1 ...
//! inputs <blake3 of the manifest's resolution inputs>
//! epoch 1747734000
//! source http://deb.debian.org/debian bookworm main
//! local debs
//! package adduser 3.134 all 0 pool/main/a/adduser/adduser_3.134_all.deb 1234 <sha256>
//! package hello 1.0 all local:0 hello_1.0_all.deb 772 <sha256>
//! ```
//! A `package` line is: name, version, architecture, where it came from (the index of a
//! `source` line, or `local:` and the index of a `local` line: a directory of the
//! manifest's own .debs, relative to the lock's), its path below that source's URI or
//! that directory, size, sha256.

use super::apt::{resolve_sources, Origin, PrivateApt, SourceLine};
use super::recipe::Recipe;
use crate::error::{Error, Result};
use crate::fsx;
use std::path::{Path, PathBuf};

const HEADER: &str = "# imager lock v1";

/// One `package` line: a .deb the build installs, pinned by size and sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedPackage {
    /// Binary package name.
    pub name: String,
    /// Exact Debian version.
    pub version: String,
    /// Debian architecture (`amd64`, `all`).
    pub arch: String,
    /// The [`Lock::sources`] or [`Lock::locals`] entry it came from.
    pub source: Origin,
    /// Path of the .deb below that source's URI (`pool/main/...`) or local directory;
    /// never empty components or `..`.
    pub filename: String,
    /// Size of the .deb in bytes.
    pub size: u64,
    /// SHA-256 of the .deb, lowercase hex.
    pub sha256: String,
}

/// A parsed lock: the exact package set an image is built from (see the module comment
/// for the file format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// [`inputs_digest`] of the manifest it was made from; a different digest means stale.
    pub inputs: String,
    /// `SOURCE_DATE_EPOCH` for the build, seconds since the epoch (UTC): the manifest's, else
    /// the newest Date of the sources' Release files.
    pub epoch: i64,
    /// The apt sources the packages were resolved from, in order; packages refer to them
    /// by index.
    pub sources: Vec<SourceLine>,
    /// The manifest's local .deb directories (`[[local]]`), in its order: relative to the
    /// lock's directory, or absolute when outside it.
    pub locals: Vec<String>,
    /// Every package the image gets, dependencies included.
    pub packages: Vec<LockedPackage>,
}

/// `M.toml` → `M.lock`.
pub fn lock_path(manifest: &Path) -> PathBuf {
    manifest.with_extension("lock")
}

/// The digest of what decides the package set: a lock made from other inputs is stale.
/// Hooks, strip rules, overlays and triggers do not enter it.
pub fn inputs_digest(m: &Recipe) -> String {
    let text = serde_json::json!({
        "source": m.source,
        "packages": m.packages.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "epoch": m.epoch,
    });
    blake3::hash(text.to_string().as_bytes())
        .to_hex()
        .to_string()
}

/// Resolves the manifest's packages against its sources and local .debs, using `work`
/// (an empty directory) for apt's state.
pub fn resolve(m: &Recipe, work: &Path) -> Result<Lock> {
    let file = m.files[0].display().to_string();
    let sources = resolve_sources(&m.source)?;
    let local_repo = work.join("local-debs");
    let offered = super::local::offer(&m.local_debs, &local_repo)?;
    let apt = PrivateApt::new(
        work,
        &sources,
        (!m.local_debs.is_empty()).then_some(local_repo.as_path()),
        &m.source.architecture,
    )?;
    apt.update()
        .map_err(|e| Error::Build(format!("{file}: {e}")))?;
    let specs: Vec<String> = m.packages.iter().map(|p| p.to_string()).collect();
    let mut index = apt.index()?;
    // The manifest's own win over a mirror's .deb of the same version.
    index.extend(offered);
    let chosen = apt
        .resolve(&index, m.source.variant, &specs)
        .map_err(|e| Error::Build(format!("{file}: resolving packages: {e}")))?;
    let mut packages = Vec::new();
    for (name, version, arch) in chosen {
        let e = index
            .get(&(name.clone(), version.clone(), arch.clone()))
            .ok_or_else(|| {
                Error::Build(format!(
                    "{file}: apt chose {name} {version} {arch}, which no index lists"
                ))
            })?;
        let source = e.source.ok_or_else(|| {
            Error::Build(format!(
                "{file}: cannot tell which source lists {name} {version}"
            ))
        })?;
        packages.push(LockedPackage {
            name,
            version,
            arch,
            source,
            filename: e.filename.clone(),
            size: e.size,
            sha256: e.sha256.clone(),
        });
    }
    let epoch = match m.epoch {
        Some(e) => e,
        None => apt.newest_release_date()?.ok_or_else(|| {
            Error::Build(format!(
                "{file}: the sources' Release files carry no Date; set `epoch` in the manifest"
            ))
        })?,
    };
    let lock_dir = m.files[0].parent().unwrap_or(Path::new("/"));
    Ok(Lock {
        inputs: inputs_digest(m),
        epoch,
        sources,
        locals: super::local::shown_dirs(&m.local_debs, lock_dir)?,
        packages,
    })
}

impl Lock {
    /// The lock file's text; `manifest_name` goes into the header comment, which
    /// [`Lock::parse`] skips.
    pub fn print(&self, manifest_name: &str) -> String {
        let mut s = format!(
            "{HEADER}: the exact package set of {manifest_name}, made by `imager lock`; edit the manifest, not this file\n"
        );
        s += &format!("inputs {}\nepoch {}\n", self.inputs, self.epoch);
        for src in &self.sources {
            s += &format!("source {}\n", src.text());
        }
        for l in &self.locals {
            s += &format!("local {l}\n");
        }
        for p in &self.packages {
            s += &format!(
                "package {} {} {} {} {} {} {}\n",
                p.name, p.version, p.arch, p.source, p.filename, p.size, p.sha256
            );
        }
        s
    }

    /// Parses a lock's text; `shown` names it in errors, which carry the line number.
    pub fn parse(text: &str, shown: &str) -> Result<Lock> {
        let bad = |line: usize, why: &str| Error::Manifest {
            source_name: shown.to_string(),
            line,
            reason: why.to_string(),
        };
        if !text.starts_with(HEADER) {
            return Err(bad(1, "not an imager lock (no `# imager lock v1` header)"));
        }
        let (mut inputs, mut epoch) = (None, None);
        let (mut sources, mut locals, mut packages) = (Vec::new(), Vec::new(), Vec::new());
        for (i, l) in text.lines().enumerate() {
            let n = i + 1;
            if l.starts_with('#') || l.trim().is_empty() {
                continue;
            }
            let (kw, rest) = l
                .split_once(' ')
                .ok_or_else(|| bad(n, "expected `keyword value`"))?;
            match kw {
                "inputs" => inputs = Some(rest.to_string()),
                "epoch" => {
                    epoch = Some(
                        rest.parse()
                            .map_err(|_| bad(n, "epoch is not an integer"))?,
                    )
                }
                "source" => sources.push(
                    SourceLine::parse(rest)
                        .ok_or_else(|| bad(n, "expected `source URI SUITE COMPONENT...`"))?,
                ),
                "local" => locals.push(rest.to_string()),
                "package" => {
                    let f: Vec<&str> = rest.split(' ').collect();
                    let ok = f.len() == 7
                        && f[6].len() == 64
                        && f[6].bytes().all(|b| b.is_ascii_hexdigit())
                        && !f[4].split('/').any(|c| c == ".." || c.is_empty());
                    if !ok {
                        return Err(bad(
                            n,
                            "expected `package NAME VERSION ARCH SOURCE PATH SIZE SHA256`",
                        ));
                    }
                    let source = parse_origin(f[3], sources.len(), locals.len())
                        .map_err(|why| bad(n, why))?;
                    packages.push(LockedPackage {
                        name: f[0].into(),
                        version: f[1].into(),
                        arch: f[2].into(),
                        source,
                        filename: f[4].into(),
                        size: f[5].parse().map_err(|_| bad(n, "size is not a number"))?,
                        sha256: f[6].to_ascii_lowercase(),
                    });
                }
                _ => return Err(bad(n, &format!("unknown keyword {kw:?}"))),
            }
        }
        Ok(Lock {
            inputs: inputs.ok_or_else(|| bad(0, "no `inputs` line"))?,
            epoch: epoch.ok_or_else(|| bad(0, "no `epoch` line"))?,
            sources,
            locals,
            packages,
        })
    }

    /// Reads and parses the lock file at `path`.
    pub fn read(path: &Path) -> Result<Lock> {
        Lock::parse(&fsx::read_to_string(path)?, &path.display().to_string())
    }
}

/// A `package` line's origin: a `source` line's index, or `local:` and a `local` line's.
fn parse_origin(
    word: &str,
    sources: usize,
    locals: usize,
) -> std::result::Result<Origin, &'static str> {
    let (index, count, what) = match word.strip_prefix("local:") {
        Some(i) => (i, locals, Origin::Local as fn(usize) -> Origin),
        None => (word, sources, Origin::Mirror as fn(usize) -> Origin),
    };
    let i: usize = index
        .parse()
        .map_err(|_| "source index is not a number (or local:NUMBER)")?;
    if i >= count {
        return Err("source index names no `source` (or `local`) line above");
    }
    Ok(what(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_parse_round_trip_and_errors() {
        let l = Lock {
            inputs: "ab".repeat(32),
            epoch: 1_700_000_000,
            sources: vec![SourceLine {
                uri: "http://deb.debian.org/debian".into(),
                suite: "bookworm".into(),
                components: vec!["main".into()],
            }],
            locals: vec!["team debs".into()],
            packages: vec![
                LockedPackage {
                    name: "gzip".into(),
                    version: "1.12-1".into(),
                    arch: "amd64".into(),
                    source: Origin::Mirror(0),
                    filename: "pool/main/g/gzip/gzip_1.12-1_amd64.deb".into(),
                    size: 123,
                    sha256: "0".repeat(64),
                },
                LockedPackage {
                    name: "hello".into(),
                    version: "1.0".into(),
                    arch: "all".into(),
                    source: Origin::Local(0),
                    filename: "hello_1.0_all.deb".into(),
                    size: 772,
                    sha256: "1".repeat(64),
                },
            ],
        };
        let t = l.print("base.toml");
        assert_eq!(Lock::parse(&t, "x.lock").unwrap(), l);
        assert!(t.contains("\nlocal team debs\n") && t.contains(" all local:0 hello_1.0"));
        let broken = t.replace(" 0 pool", " 3 pool");
        let e = Lock::parse(&broken, "x.lock").unwrap_err().to_string();
        assert!(e.starts_with("x.lock:6:"), "{e}");
        let broken = t.replace("local:0", "local:1");
        let e = Lock::parse(&broken, "x.lock").unwrap_err().to_string();
        assert!(e.starts_with("x.lock:7:"), "{e}");
        assert!(Lock::parse("package x", "y.lock").is_err());
    }
}
