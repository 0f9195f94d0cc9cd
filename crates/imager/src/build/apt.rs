//! A private apt: the manifest's sources resolved to apt source lines, and apt run with
//! its own state directory (lists, status, cache) so that resolving packages reads and
//! changes nothing of this machine's apt state. Proxy and other settings in the host's
//! `apt.conf.d` still apply.

use super::recipe::{AptSource, Mirrors, Variant};
use crate::deb822;
use crate::error::{Error, Result};
use crate::fsx;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One apt source: `deb URI SUITE COMPONENTS...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLine {
    /// The archive's base URI (`http://deb.debian.org/debian`).
    pub uri: String,
    /// The suite or codename (`bookworm`, `bookworm-updates`).
    pub suite: String,
    /// Archive components (`main`, `contrib`), in order.
    pub components: Vec<String>,
}

impl SourceLine {
    /// The line without its `deb ` prefix: `URI SUITE COMPONENTS...`, as the lock's
    /// `source` lines and [`SourceLine::parse`] have it.
    pub fn text(&self) -> String {
        format!("{} {} {}", self.uri, self.suite, self.components.join(" "))
    }

    /// Parses what [`SourceLine::text`] wrote.
    pub fn parse(s: &str) -> Option<SourceLine> {
        let mut it = s.split_whitespace();
        let uri = it.next()?.to_string();
        let suite = it.next()?.to_string();
        let components: Vec<String> = it.map(String::from).collect();
        (!components.is_empty()).then_some(SourceLine {
            uri,
            suite,
            components,
        })
    }
}

const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The apt sources a manifest's `[source]` stands for on this machine.
pub fn resolve_sources(src: &AptSource) -> Result<Vec<SourceLine>> {
    let mut out: Vec<SourceLine> = Vec::new();
    let mut push = |uri: &str, suite: String, components: &[String]| {
        let l = SourceLine {
            uri: uri.trim_end_matches('/').to_string(),
            suite,
            components: if components.is_empty() {
                src.components.clone()
            } else {
                components.to_vec()
            },
        };
        if !out.contains(&l) {
            out.push(l);
        }
    };
    match &src.mirrors {
        Mirrors::List(list) => {
            for m in list {
                if m.suites.is_empty() {
                    push(&m.url, src.suite.clone(), &m.components);
                    if src.updates {
                        push(&m.url, format!("{}-updates", src.suite), &m.components);
                    }
                } else {
                    for s in &m.suites {
                        push(&m.url, s.clone(), &m.components);
                    }
                }
            }
        }
        Mirrors::Host => {
            let host = host_sources()?;
            let codename = host_codename();
            for (uri, suite) in &host {
                let (base, suffix) = match suite.split_once('-') {
                    Some((b, s)) => (b, Some(s)),
                    None => (suite.as_str(), None),
                };
                // Only the host's Debian release lines: third-party repositories
                // (suite "nodistro", say) have nothing for the manifest's suite.
                if codename.as_deref().is_some_and(|c| c != base) {
                    continue;
                }
                match suffix {
                    None => push(uri, src.suite.clone(), &[]),
                    Some(s @ ("updates" | "security")) if src.updates => {
                        push(uri, format!("{}-{s}", src.suite), &[])
                    }
                    _ => {}
                }
            }
            if !out.iter().any(|l| l.suite == src.suite) {
                return Err(Error::Build(format!(
                    "mirrors = \"host\": no Debian mirror for {} found in this machine's apt sources \
                     (/etc/apt/sources.list, /etc/apt/sources.list.d); list mirrors in the manifest",
                    src.suite
                )));
            }
        }
    }
    Ok(out)
}

fn host_codename() -> Option<String> {
    let t = fsx::read_to_string(Path::new("/etc/os-release")).ok()?;
    t.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// (URI, suite) of every `deb` source of this machine, in one-line or deb822 form.
fn host_sources() -> Result<Vec<(String, String)>> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fsx::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.iter().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = fsx::read_to_string(&f) else {
            continue;
        };
        let name = f.to_string_lossy();
        if name.ends_with(".sources") {
            for p in deb822::parse(&text) {
                let enabled = p.get("Enabled").is_none_or(|v| v != "no");
                let types = p.get("Types").unwrap_or("");
                if !enabled || !types.split_whitespace().any(|t| t == "deb") {
                    continue;
                }
                for uri in p.get("URIs").unwrap_or("").split_whitespace() {
                    for s in p.get("Suites").unwrap_or("").split_whitespace() {
                        out.push((uri.to_string(), s.to_string()));
                    }
                }
            }
        } else if name.ends_with(".list") {
            for l in text.lines() {
                let l = l.split('#').next().unwrap_or("").trim();
                let mut words = l.split_whitespace();
                if words.next() != Some("deb") {
                    continue;
                }
                let mut rest: Vec<&str> = words.collect();
                if rest.first().is_some_and(|w| w.starts_with('[')) {
                    let end = rest.iter().position(|w| w.ends_with(']')).unwrap_or(0);
                    rest.drain(..=end);
                }
                if rest.len() >= 2 {
                    out.push((rest[0].to_string(), rest[1].to_string()));
                }
            }
        }
    }
    Ok(out)
}

/// Where a locked package comes from: a mirror's source line, or a local .deb directory
/// of the manifest (`[[local]]`), each by its index in the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The lock's `source` line of this index.
    Mirror(usize),
    /// The lock's `local` line of this index.
    Local(usize),
}

/// As the lock writes it: `3` for a mirror, `local:0` for a local directory.
impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Mirror(i) => write!(f, "{i}"),
            Origin::Local(i) => write!(f, "local:{i}"),
        }
    }
}

/// A package version as an index describes it.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    /// Path of the .deb below the source's URI (the index's `Filename`).
    pub filename: String,
    /// Size of the .deb in bytes.
    pub size: u64,
    /// SHA-256 of the .deb, hex, as the index gives it.
    pub sha256: String,
    /// `Essential: yes`: in the base set of every variant.
    pub essential: bool,
    /// The `Priority` field (`required`, `important`, ...); `optional` when absent.
    pub priority: String,
    /// The source whose Packages file lists it.
    pub source: Option<Origin>,
}

/// Every package version of the downloaded indices, keyed by (name, version, arch).
pub type Index = BTreeMap<(String, String, String), IndexEntry>;

/// apt with a state directory of its own.
pub struct PrivateApt {
    dir: PathBuf,
    arch: String,
    sources: Vec<SourceLine>,
}

impl PrivateApt {
    /// Sets up `dir` (which must be empty or absent) for the given sources, and `local`, a
    /// flat repository of the manifest's own .debs (its index made here, so trusted).
    pub fn new(
        dir: &Path,
        sources: &[SourceLine],
        local: Option<&Path>,
        arch: &str,
    ) -> Result<PrivateApt> {
        for sub in [
            "lists/partial",
            "cache/archives/partial",
            "etc/sources.list.d",
            "etc/preferences.d",
        ] {
            fsx::create_dir_all(&dir.join(sub))?;
        }
        fsx::write(dir.join("status"), b"")?;
        let signed = if fsx::exists(DEBIAN_KEYRING)? {
            format!("[signed-by={DEBIAN_KEYRING}] ")
        } else {
            String::new()
        };
        let mut list: String = sources
            .iter()
            .map(|s| format!("deb {signed}{}\n", s.text()))
            .collect();
        if let Some(l) = local {
            list += &format!("deb [trusted=yes] file:{} ./\n", l.display());
        }
        fsx::write(dir.join("etc/sources.list"), list)?;
        Ok(PrivateApt {
            dir: dir.to_path_buf(),
            arch: arch.to_string(),
            sources: sources.to_vec(),
        })
    }

    fn cmd(&self, program: &str) -> Command {
        let d = self.dir.display();
        let mut c = Command::new(program);
        for o in [
            format!("Dir::State={d}"),
            format!("Dir::State::lists={d}/lists"),
            format!("Dir::State::status={d}/status"),
            format!("Dir::Cache={d}/cache"),
            format!("Dir::Etc::SourceList={d}/etc/sources.list"),
            format!("Dir::Etc::SourceParts={d}/etc/sources.list.d"),
            format!("Dir::Etc::Preferences={d}/etc/preferences"),
            format!("Dir::Etc::PreferencesParts={d}/etc/preferences.d"),
            format!("APT::Architecture={}", self.arch),
            format!("APT::Architectures={}", self.arch),
            "APT::Install-Recommends=false".into(),
            "APT::Install-Suggests=false".into(),
            "Acquire::Languages=none".into(),
            // We read the Packages files ourselves: keep them uncompressed whatever the
            // host's apt.conf.d says (Docker images set GzipIndexes).
            "Acquire::GzipIndexes=false".into(),
            // Snapshot mirrors serve Release files whose Valid-Until has passed.
            "Acquire::Check-Valid-Until=false".into(),
            "Debug::NoLocking=true".into(),
        ] {
            c.arg("-o").arg(o);
        }
        c.env("LC_ALL", "C.UTF-8");
        c
    }

    /// Downloads the indices. Fails (with apt's own words) when a mirror is unreachable
    /// or does not have the suite.
    pub fn update(&self) -> Result<()> {
        let mut c = self.cmd("apt-get");
        c.args(["-q", "update"]);
        let out = c
            .output()
            .map_err(|e| Error::io("run", "apt-get update", e))?;
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        // apt-get update exits 0 on some fetch failures; its W:/E: lines tell.
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("E:") || (l.starts_with("W:") && l.contains("Failed to fetch"))
            })
            .collect();
        if !bad.is_empty() || !out.status.success() {
            return Err(Error::Command {
                program: "apt-get update".into(),
                detail: format!("failed (is the mirror reachable?):\n{}", bad.join("\n")),
            });
        }
        Ok(())
    }

    /// Reads the downloaded indices (once: they are large).
    pub fn index(&self) -> Result<Index> {
        let mut out = BTreeMap::new();
        for f in self.list_files("_Packages")? {
            let fname = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let source = self
                .sources
                .iter()
                .position(|s| fname.starts_with(&list_prefix(s)));
            for p in deb822::parse(&fsx::read_to_string(&f)?) {
                let (Some(n), Some(v), Some(a), Some(file), Some(size), Some(sha)) = (
                    p.get("Package"),
                    p.get("Version"),
                    p.get("Architecture"),
                    p.get("Filename"),
                    p.get("Size").and_then(|s| s.parse().ok()),
                    p.get("SHA256"),
                ) else {
                    continue;
                };
                out.entry((n.to_string(), v.to_string(), a.to_string()))
                    .or_insert(IndexEntry {
                        filename: file.to_string(),
                        size,
                        sha256: sha.to_string(),
                        essential: p.get("Essential") == Some("yes"),
                        priority: p.get("Priority").unwrap_or("optional").to_string(),
                        source: source.map(Origin::Mirror),
                    });
            }
        }
        Ok(out)
    }

    /// The newest `Date:` of the sources' Release files: the moment the package set was
    /// published, used as the image's epoch.
    pub fn newest_release_date(&self) -> Result<Option<i64>> {
        let mut newest = None;
        for f in self.list_files("Release")? {
            let text = fsx::read_to_string(&f)?;
            for p in deb822::parse(&text) {
                if let Some(d) = p.get("Date").and_then(deb822::parse_release_date) {
                    newest = newest.max(Some(d));
                }
            }
        }
        Ok(newest)
    }

    fn list_files(&self, suffix: &str) -> Result<Vec<PathBuf>> {
        let lists = self.dir.join("lists");
        let mut v: Vec<PathBuf> = fsx::read_dir(&lists)
            .map_err(|e| e.doing("read directory"))?
            .iter()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect();
        v.sort();
        Ok(v)
    }

    /// What apt would install on an empty system for the variant's base set and these
    /// packages: (name, version, arch), sorted by name.
    pub fn resolve(
        &self,
        index: &Index,
        variant: Variant,
        packages: &[String],
    ) -> Result<Vec<(String, String, String)>> {
        let mut want: Vec<String> = Vec::new();
        for ((n, _, _), e) in index {
            let base = e.essential
                || match variant {
                    Variant::Essential => false,
                    Variant::Minbase | Variant::Required => e.priority == "required",
                    Variant::Important => e.priority == "required" || e.priority == "important",
                };
            if base && !want.contains(n) {
                want.push(n.clone());
            }
        }
        if variant != Variant::Essential {
            want.push("apt".into());
        }
        want.extend(packages.iter().cloned());
        let mut c = self.cmd("apt-get");
        c.args(["-q", "-s", "install"]).args(&want);
        let out = run(&mut c, "apt-get install --simulate")?;
        let mut got = Vec::new();
        for l in out.lines() {
            // Inst libc6 (2.36-9+deb12u4 Debian:12.5/stable [amd64])
            let Some(rest) = l.strip_prefix("Inst ") else {
                continue;
            };
            let mut it = rest.splitn(2, ' ');
            let name = it.next().unwrap_or("").to_string();
            // `(VERSION RELEASE [ARCH])`, sometimes followed by `[...]` (what it replaces)
            let inner = it.next().unwrap_or("").trim_start_matches('(');
            let inner = inner.split(')').next().unwrap_or("");
            let version = inner.split_whitespace().next().unwrap_or("").to_string();
            let arch = inner
                .rsplit_once('[')
                .map(|(_, a)| a.split(']').next().unwrap_or("").to_string())
                .unwrap_or_default();
            if name.is_empty() || version.is_empty() || arch.is_empty() {
                return Err(Error::Build(format!("cannot read apt's plan line {l:?}")));
            }
            got.push((name, version, arch));
        }
        got.sort();
        Ok(got)
    }
}

/// The start of the names apt gives the index files of a source (apt's URItoFileName:
/// scheme and credentials dropped, some characters %-quoted, `/` turned into `_`).
fn list_prefix(s: &SourceLine) -> String {
    let uri = format!("{}/dists/{}/", s.uri, s.suite);
    let rest = uri.split_once("://").map_or(uri.as_str(), |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let mut out = String::new();
    for c in rest.chars() {
        if c <= ' ' || c >= '\x7f' || "\\|{}[]<>\"^~_=!@#$%&*".contains(c) {
            for b in c.to_string().bytes() {
                out += &format!("%{b:02x}");
            }
        } else if c == '/' {
            out.push('_');
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs a command, returning its standard output; a failure carries apt's E: lines.
fn run(c: &mut Command, what: &str) -> Result<String> {
    let out = c.output().map_err(|e| Error::io("run", what, e))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errs: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
            .collect();
        let shown = if errs.is_empty() {
            stderr.trim().to_string()
        } else {
            errs.join("\n")
        };
        return Err(Error::Command {
            program: what.into(),
            detail: format!("failed ({}):\n{shown}", out.status),
        });
    }
    Ok(stdout)
}
