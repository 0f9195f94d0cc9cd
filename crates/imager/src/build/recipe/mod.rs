//! The build recipe: the TOML file an image engineer writes (suite, packages, strip
//! rules, overlays, hooks, triggers, local state; users and the CLI call it the build
//! manifest, `manifests/*.toml`), and how one that `extends` another is merged with it.
//! In the code it is a [`Recipe`], so that "manifest" means only an image's listing
//! (`crate::tree::text`). Every error names the file, and the line and key where the
//! TOML parser or a later check can tell.

use crate::contract::{self, DEFAULT_LOCAL_STATE};
use crate::error::{Error, Result};
use crate::fsx;
use crate::tree::scan::{list_lines, Excludes};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

use crate::contract::Trigger;
use merge::{merge, Link};

mod merge;

/// One manifest file as written; optional fields are what it leaves to its parent.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<String>,
    extends: Option<Spanned<String>>,
    description: Option<String>,
    epoch: Option<i64>,
    source: Option<AptSourceFile>,
    #[serde(default)]
    packages: Vec<Spanned<String>>,
    strip: Option<StripFile>,
    #[serde(default)]
    overlay: Vec<OverlayFile>,
    #[serde(default)]
    hook: Vec<Hook>,
    #[serde(default)]
    trigger: Vec<Spanned<Trigger>>,
    #[serde(default)]
    local: Vec<LocalFile>,
    local_state: Option<Vec<Spanned<String>>>,
    owned: Option<Spanned<Vec<String>>>,
    first_boot: Option<bool>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct AptSourceFile {
    suite: Option<String>,
    architecture: Option<String>,
    components: Option<Vec<String>>,
    variant: Option<Spanned<String>>,
    mirrors: Option<Spanned<Mirrors>>,
    updates: Option<bool>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct StripFile {
    docs: Option<bool>,
    man: Option<bool>,
    info: Option<bool>,
    #[serde(default)]
    locales: Vec<String>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    keep: Vec<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct OverlayFile {
    src: Spanned<String>,
    dest: Spanned<String>,
    #[serde(default)]
    owner: u32,
    #[serde(default)]
    group: u32,
    mode: Option<u32>,
    dir_mode: Option<u32>,
}

/// A `[[local]]` table: a directory of the team's own .debs.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct LocalFile {
    dir: Spanned<String>,
}

/// Where packages come from: this machine's own apt sources, or explicit mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirrors {
    /// The build machine's own apt sources (`"host"`, the default).
    Host,
    /// These mirrors, in order.
    List(Vec<Mirror>),
}

/// An explicit mirror: a URL (a Debian mirror, or a snapshot.debian.org URL), the suites
/// to use from it (default: the source's suite) and components (default: the source's).
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The mirror's base URL, as apt's `sources.list` takes it.
    pub url: String,
    /// Suites to use from it; empty for the source's suite.
    #[serde(default)]
    pub suites: Vec<String>,
    /// Components to use from it; empty for the source's components.
    #[serde(default)]
    pub components: Vec<String>,
}

/// Written as it is read: `"host"` or a list of mirror tables.
impl Serialize for Mirrors {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Mirrors::Host => s.serialize_str("host"),
            Mirrors::List(l) => l.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Mirrors {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum One {
            Url(String),
            Full(Mirror),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            List(Vec<One>),
        }
        let expected = "\"host\" or a list of mirrors (URLs or { url, suites, components } tables)";
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom(format!("expected {expected}")))?
        {
            Raw::Word(w) if w == "host" => Ok(Mirrors::Host),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "{w:?}: expected {expected}"
            ))),
            Raw::List(l) if l.is_empty() => {
                Err(serde::de::Error::custom("the mirror list is empty"))
            }
            Raw::List(l) => Ok(Mirrors::List(
                l.into_iter()
                    .map(|m| match m {
                        One::Url(url) => Mirror {
                            url,
                            suites: vec![],
                            components: vec![],
                        },
                        One::Full(m) => m,
                    })
                    .collect(),
            )),
        }
    }
}

/// Which packages mmdebstrap starts from before the listed ones (its `--variant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Essential packages only.
    Essential,
    /// Essential, `Priority: required` and apt: Debian's usual minimal base.
    Minbase,
    /// Essential and `Priority: required` (no apt).
    Required,
    /// Up to `Priority: important`.
    Important,
}

impl Variant {
    fn parse(s: &str) -> Option<Variant> {
        Some(match s {
            "essential" => Variant::Essential,
            "minbase" => Variant::Minbase,
            "required" => Variant::Required,
            "important" => Variant::Important,
            _ => return None,
        })
    }

    /// The name mmdebstrap's `--variant` and the manifest use (`minbase`).
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Essential => "essential",
            Variant::Minbase => "minbase",
            Variant::Required => "required",
            Variant::Important => "important",
        }
    }
}

/// The `[source]` table, merged: which Debian release, for which architecture, from
/// where.
#[derive(Debug, Clone, Serialize)]
pub struct AptSource {
    /// The Debian suite or codename (default `bookworm`).
    pub suite: String,
    /// The Debian architecture to install (default `amd64`).
    pub architecture: String,
    /// Archive components (default `main`).
    pub components: Vec<String>,
    /// The base mmdebstrap starts from before the listed packages.
    pub variant: Variant,
    /// Where packages come from (default: the host's apt sources).
    pub mirrors: Mirrors,
    /// With host mirrors: also use `<suite>-updates` and `<suite>-security` when the
    /// host's sources have them.
    pub updates: bool,
}

/// A package to install, optionally pinned to an exact version (`name=version`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PackageSpec {
    /// The binary package's name.
    pub name: String,
    /// The exact version to install; None for the newest the sources offer.
    pub version: Option<String>,
}

impl std::fmt::Display for PackageSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}={v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Paths left out of the image, applied as dpkg `path-exclude`/`path-include` filters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Strip {
    /// Leave out `/usr/share/doc` (each package's copyright file stays).
    pub docs: bool,
    /// Leave out translated manual pages; the untranslated `/usr/share/man/man[0-9]*` stay.
    pub man: bool,
    /// Leave out `/usr/share/info`.
    pub info: bool,
    /// Locales kept under `/usr/share/locale`; when non-empty, every other locale is left
    /// out.
    pub locales: Vec<String>,
    /// More `path-exclude` globs, dpkg's syntax (`*` crosses `/`).
    pub exclude: Vec<String>,
    /// More `path-include` globs: exceptions to the exclusions, dpkg's syntax.
    pub keep: Vec<String>,
}

impl Strip {
    /// The dpkg filters, in the order dpkg applies them (the last matching one wins):
    /// every exclusion, then every exception.
    pub fn filters(&self) -> (Vec<String>, Vec<String>) {
        let mut ex = Vec::new();
        let mut keep = Vec::new();
        if self.docs {
            ex.push("/usr/share/doc/*".into());
            ex.push("/usr/share/doc-base/*".into());
            // Licences stay: Debian asks that every binary ships its copyright file.
            keep.push("/usr/share/doc/*/copyright".into());
        }
        if self.man {
            ex.push("/usr/share/man/*".into());
            keep.push("/usr/share/man/man[0-9]*".into());
        }
        if self.info {
            ex.push("/usr/share/info/*".into());
        }
        if !self.locales.is_empty() {
            ex.push("/usr/share/locale/*".into());
            keep.push("/usr/share/locale/locale.alias".into());
            for l in &self.locales {
                keep.push(format!("/usr/share/locale/{l}/*"));
            }
        }
        ex.extend(self.exclude.iter().cloned());
        keep.extend(self.keep.iter().cloned());
        (ex, keep)
    }

    /// The filters as dpkg evaluates them on a path (`None` when nothing is stripped).
    pub fn matcher(&self) -> Result<Option<StripMatcher>> {
        let (ex, keep) = self.filters();
        if ex.is_empty() {
            return Ok(None);
        }
        let set = |globs: &[String]| -> Result<globset::GlobSet> {
            let mut b = globset::GlobSetBuilder::new();
            for g in globs {
                // fnmatch(3) without FNM_PATHNAME, as dpkg uses it: `*` crosses `/`.
                b.add(
                    globset::Glob::new(g)
                        .map_err(|e| Error::Build(format!("strip glob {g:?}: {e}")))?,
                );
            }
            b.build()
                .map_err(|e| Error::Build(format!("strip globs: {e}")))
        };
        Ok(Some(StripMatcher {
            exclude: set(&ex)?,
            keep: set(&keep)?,
        }))
    }
}

/// A [`Strip`]'s globs compiled, to ask whether dpkg would leave a path out.
pub struct StripMatcher {
    exclude: globset::GlobSet,
    keep: globset::GlobSet,
}

impl StripMatcher {
    /// Excluded by a glob and kept by none (dpkg: the last matching filter wins, and
    /// every `path-include` comes after every `path-exclude`).
    pub fn strips(&self, path: &[u8]) -> bool {
        let c = globset::Candidate::new(fsx::bytes_path(path));
        self.exclude.is_match_candidate(&c) && !self.keep.is_match_candidate(&c)
    }
}

/// A file or directory from the build machine copied into the image after the packages
/// are installed.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// Absolute path of the file or directory to copy in.
    pub src: PathBuf,
    /// Where it goes in the image.
    pub dest: String,
    /// Numeric user id the copied files get (default 0).
    pub owner: u32,
    /// Numeric group id the copied files get (default 0).
    pub group: u32,
    /// Mode of files (default: 0o755 if the source is executable by its owner, else
    /// 0o644; git keeps only that bit, so nothing else of a checkout counts).
    pub mode: Option<u32>,
    /// Mode of directories created from a source directory (default 0o755).
    pub dir_mode: u32,
}

/// A command run during the build with no network, in namespaces of its own, a clean
/// environment (`SOURCE_DATE_EPOCH`, `TZ=UTC`, `LC_ALL=C.UTF-8`) and a time limit: by
/// default inside the chroot after the packages and overlays; at one of mmdebstrap's
/// phases with `phase`.
#[derive(Deserialize, Serialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// Names the hook in the build log and in errors, and is `IMAGER_HOOK` in its
    /// environment; unique across the `extends` chain.
    pub name: String,
    /// Run with `/bin/sh -c` inside the image (in the `setup` phase, which has nothing
    /// to run inside yet, in the root's directory, which `IMAGER_ROOT` names).
    pub run: String,
    /// Seconds before the hook is killed.
    #[serde(default = "default_hook_timeout")]
    pub timeout: u64,
    /// When it runs (written only when not the default: manifests flattened before
    /// phases existed read back the same).
    #[serde(default, skip_serializing_if = "HookPhase::is_final")]
    pub phase: HookPhase,
}

/// When a hook runs: mmdebstrap's four hook phases, then after the overlays.
#[derive(Deserialize, Serialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum HookPhase {
    /// The root has its directories and apt's configuration, no package yet.
    Setup,
    /// The essential packages are unpacked, not configured.
    Extract,
    /// The essential packages are installed; the manifest's others are not yet.
    Essential,
    /// Every package is installed; the overlays are not copied in yet.
    Customize,
    /// After the overlays (the default).
    #[default]
    Final,
}

impl HookPhase {
    /// mmdebstrap's phases, in order (`final` is imager's own).
    pub const MMDEBSTRAP: [HookPhase; 4] = [
        HookPhase::Setup,
        HookPhase::Extract,
        HookPhase::Essential,
        HookPhase::Customize,
    ];

    /// As the manifest names it.
    pub fn name(self) -> &'static str {
        match self {
            HookPhase::Setup => "setup",
            HookPhase::Extract => "extract",
            HookPhase::Essential => "essential",
            HookPhase::Customize => "customize",
            HookPhase::Final => "final",
        }
    }

    fn is_final(&self) -> bool {
        *self == HookPhase::Final
    }
}

fn default_hook_timeout() -> u64 {
    600
}

/// A build manifest with its `extends` chain merged: lists add up (parent first),
/// scalars are the nearest file's.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The image's name: the ref `imager build` sets, and what the build info and the
    /// provenance's subjects are called.
    pub name: String,
    /// Free text about the image; None when no file in the chain gives one.
    pub description: Option<String>,
    /// Files read, the one given first, then its parent, and so on.
    pub files: Vec<PathBuf>,
    /// `SOURCE_DATE_EPOCH` for the build, seconds since the epoch (UTC); None: the newest
    /// Date of the sources' Release files, fixed at lock time.
    pub epoch: Option<i64>,
    /// Which release to install, and from where.
    pub source: AptSource,
    /// The packages asked for, one per name (sorted by name); a nearer file's pin replaces a
    /// parent's.
    pub packages: Vec<PackageSpec>,
    /// What dpkg leaves out of the image.
    pub strip: Strip,
    /// Files copied in after install, parent's first.
    pub overlays: Vec<Overlay>,
    /// Commands run in the chroot after install, parent's first.
    pub hooks: Vec<Hook>,
    /// Directories (absolute, canonical) whose `.debs`, at any depth, apt may choose
    /// from beside the mirrors' (`[[local]]`), parent's first, each once.
    pub local_debs: Vec<PathBuf>,
    /// What the syncer runs when the listed paths change, sorted; a child's trigger replaces
    /// a parent's of the same name.
    pub triggers: Vec<Trigger>,
    /// Local-state globs (from the listed files, or the built-in default list).
    pub local_state: Vec<String>,
    /// The prefixes the image owns completely (`owned`, the nearest file's): a push
    /// deletes what a host made below them. `None`: the syncer's default list, and the
    /// image carries no file (so images built before the setting keep their IDs).
    pub owned: Option<Vec<String>>,
    /// Install the first-boot unit (ssh host keys) when the image runs sshd (default).
    pub first_boot: bool,
}

/// Reads `path` and every manifest it extends.
pub fn load(path: &Path) -> Result<Recipe> {
    let mut chain: Vec<Link> = Vec::new();
    let mut next = Some(path.to_path_buf());
    while let Some(p) = next.take() {
        let canon = fsx::canonicalize(&p).map_err(|e| match chain.last() {
            Some((parent, text, f)) => at(
                parent,
                text,
                f.extends.as_ref().map(|s| s.span().start),
                format!("extends {}: {}", p.display(), e.into_io()),
            ),
            None => e.doing("read manifest"),
        })?;
        if let Some(i) = chain.iter().position(|(q, _, _)| *q == canon) {
            let cycle: Vec<String> = chain[i..]
                .iter()
                .map(|(q, _, _)| q.display().to_string())
                .collect();
            return Err(Error::Manifest {
                source_name: canon.display().to_string(),
                line: 0,
                reason: format!(
                    "`extends` makes a cycle: {} -> {}",
                    cycle.join(" -> "),
                    canon.display()
                ),
            });
        }
        let text = fsx::read_to_string(&canon)?;
        let file: File = toml::from_str(&text).map_err(|e| toml_error(&canon, &text, &e))?;
        if let Some(ext) = &file.extends {
            let dir = canon.parent().unwrap_or(Path::new("/"));
            next = Some(dir.join(ext.get_ref()));
        }
        chain.push((canon, text, file));
    }
    merge(chain)
}

impl Recipe {
    /// Every setting as text, leaving out where files are (the manifest files, overlay
    /// sources): what [`Recipe::flattened`] must read back to (its test, the fuzz target).
    pub fn settings_text(&self) -> String {
        let o: Vec<_> = self
            .overlays
            .iter()
            .map(|o| (&o.dest, o.owner, o.group, o.mode, o.dir_mode))
            .collect();
        format!(
            "{} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {}",
            self.name,
            self.description,
            self.epoch,
            self.source,
            self.packages,
            self.strip,
            o,
            self.hooks,
            self.triggers,
            self.local_state,
            self.first_boot,
            self.owned,
            self.local_debs.len()
        )
    }

    /// This manifest as one self-contained file (no `extends`) that [`load`] reads back
    /// to the same settings: what a build stores so that the image can be rebuilt.
    /// Overlay sources become `overlays/<n>`, local .deb directories `local/<n>` and the
    /// local-state list `local-state.txt`, all relative to the file.
    pub fn flattened(&self) -> Result<String> {
        #[derive(Serialize)]
        struct Flat<'a> {
            name: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            description: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            epoch: Option<i64>,
            // Written only when off: images built before it existed flatten as they did.
            #[serde(skip_serializing_if = "Option::is_none")]
            first_boot: Option<bool>,
            packages: Vec<String>,
            local_state: [&'a str; 1],
            #[serde(skip_serializing_if = "Option::is_none")]
            owned: Option<&'a [String]>,
            // Both serialise as the manifest writes them.
            source: &'a AptSource,
            strip: &'a Strip,
            overlay: Vec<FlatOverlay<'a>>,
            // Written only when there is one: manifests without keep their flat text.
            #[serde(skip_serializing_if = "Vec::is_empty")]
            local: Vec<FlatLocal>,
            hook: &'a [Hook],
            trigger: &'a [Trigger],
        }
        #[derive(Serialize)]
        struct FlatOverlay<'a> {
            src: String,
            dest: &'a str,
            owner: u32,
            group: u32,
            #[serde(skip_serializing_if = "Option::is_none")]
            mode: Option<u32>,
            dir_mode: u32,
        }
        #[derive(Serialize)]
        struct FlatLocal {
            dir: String,
        }
        let flat = Flat {
            name: &self.name,
            description: self.description.as_deref(),
            epoch: self.epoch,
            packages: self.packages.iter().map(|p| p.to_string()).collect(),
            local_state: ["local-state.txt"],
            owned: self.owned.as_deref(),
            source: &self.source,
            strip: &self.strip,
            overlay: self
                .overlays
                .iter()
                .enumerate()
                .map(|(i, o)| FlatOverlay {
                    src: format!("overlays/{i}"),
                    dest: &o.dest,
                    owner: o.owner,
                    group: o.group,
                    mode: o.mode,
                    dir_mode: o.dir_mode,
                })
                .collect(),
            local: (0..self.local_debs.len())
                .map(|i| FlatLocal {
                    dir: format!("local/{i}"),
                })
                .collect(),
            hook: &self.hooks,
            trigger: &self.triggers,
            first_boot: (!self.first_boot).then_some(false),
        };
        toml::to_string(&flat).map_err(|e| {
            Error::Internal(format!("cannot write the manifest of {}: {e}", self.name))
        })
    }
}

fn check_name(name: &str, file: &Path) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::Manifest {
            source_name: file.display().to_string(),
            line: 0,
            reason: format!("name {name:?}: use letters, digits, `-`, `_` and `.`"),
        })
    }
}

fn parse_package(s: &str) -> Option<PackageSpec> {
    let (name, version) = match s.split_once('=') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (s, None),
    };
    // Debian policy 5.6.1 for names; versions are checked by apt when resolving.
    let name_ok = name.len() >= 2
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    let version_ok = version.as_deref().is_none_or(|v| {
        !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".+-~:".contains(&b))
    });
    (name_ok && version_ok).then(|| PackageSpec {
        name: name.to_string(),
        version,
    })
}

/// dpkg matches filters with fnmatch(3) on the absolute path; we check the syntax with
/// globset (whose `*` likewise crosses `/` unless told otherwise).
fn check_dpkg_glob(g: &str) -> std::result::Result<(), String> {
    if !g.starts_with('/') {
        return Err("must be an absolute path glob".into());
    }
    globset::Glob::new(g).map(|_| ()).map_err(|e| e.to_string())
}

/// An error at a byte offset of a manifest file, reported as `file:line`.
fn at(file: &Path, text: &str, offset: Option<usize>, reason: String) -> Error {
    Error::Manifest {
        source_name: file.display().to_string(),
        line: offset.map(|o| line_of(text, o)).unwrap_or(0),
        reason,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn toml_error(file: &Path, text: &str, e: &toml::de::Error) -> Error {
    Error::Manifest {
        source_name: file.display().to_string(),
        line: e.span().map(|s| line_of(text, s.start)).unwrap_or(0),
        reason: e.message().to_string(),
    }
}

#[cfg(test)]
mod tests;
