//! The build manifest: the TOML file an image engineer writes (suite, packages, strip
//! rules, overlays, hooks, triggers, local state), and how a manifest that `extends`
//! another is merged with it. Every error names the file, and the line and key where
//! the TOML parser or a later check can tell.

use crate::contract::{self, DEFAULT_LOCAL_STATE};
use crate::error::{Error, Result};
use crate::fsx;
use crate::tree::scan::{list_lines, Excludes};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

use crate::contract::Trigger;

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

/// Where packages come from: this machine's own apt sources, or explicit mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirrors {
    Host,
    List(Vec<Mirror>),
}

/// An explicit mirror: a URL (a Debian mirror, or a snapshot.debian.org URL), the suites
/// to use from it (default: the source's suite) and components (default: the source's).
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub url: String,
    #[serde(default)]
    pub suites: Vec<String>,
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

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Essential => "essential",
            Variant::Minbase => "minbase",
            Variant::Required => "required",
            Variant::Important => "important",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AptSource {
    pub suite: String,
    pub architecture: String,
    pub components: Vec<String>,
    pub variant: Variant,
    pub mirrors: Mirrors,
    /// With host mirrors: also use `<suite>-updates` and `<suite>-security` when the
    /// host's sources have them.
    pub updates: bool,
}

/// A package to install, optionally pinned to an exact version (`name=version`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PackageSpec {
    pub name: String,
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
    pub docs: bool,
    pub man: bool,
    pub info: bool,
    pub locales: Vec<String>,
    pub exclude: Vec<String>,
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

#[derive(Debug, Clone)]
pub struct Overlay {
    /// Absolute path of the file or directory to copy in.
    pub src: PathBuf,
    /// Where it goes in the image.
    pub dest: String,
    pub owner: u32,
    pub group: u32,
    /// Mode of files (default: 0o755 if the source is executable by its owner, else
    /// 0o644; git keeps only that bit, so nothing else of a checkout counts).
    pub mode: Option<u32>,
    /// Mode of directories created from a source directory (default 0o755).
    pub dir_mode: u32,
}

/// A command run inside the chroot after the packages are installed, with no network.
#[derive(Deserialize, Serialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    pub name: String,
    /// Run with `/bin/sh -c` inside the image.
    pub run: String,
    /// Seconds before the hook is killed.
    #[serde(default = "default_hook_timeout")]
    pub timeout: u64,
}

fn default_hook_timeout() -> u64 {
    600
}

/// A manifest with its `extends` chain merged: lists add up (parent first), scalars are
/// the nearest file's.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub name: String,
    pub description: Option<String>,
    /// Files read, the one given first, then its parent, and so on.
    pub files: Vec<PathBuf>,
    pub epoch: Option<i64>,
    pub source: AptSource,
    pub packages: Vec<PackageSpec>,
    pub strip: Strip,
    pub overlays: Vec<Overlay>,
    pub hooks: Vec<Hook>,
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
pub fn load(path: &Path) -> Result<Manifest> {
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

/// A manifest file as read: its canonical path, its text (for line numbers), its content.
type Link = (PathBuf, String, File);

fn src_of(f: &File) -> Option<&AptSourceFile> {
    f.source.as_ref()
}

/// A scalar's value: the nearest file that sets it wins (the given file, then its parent...).
fn nearest<'c, T>(chain: &'c [Link], get: impl Fn(&'c File) -> Option<T>) -> Option<T> {
    chain.iter().find_map(|(_, _, f)| get(f))
}

fn merge(chain: Vec<Link>) -> Result<Manifest> {
    let files: Vec<PathBuf> = chain.iter().map(|(p, _, _)| p.clone()).collect();
    let first = &chain[0].0;
    let name = nearest(&chain, |f| f.name.clone()).ok_or_else(|| Error::Manifest {
        source_name: first.display().to_string(),
        line: 0,
        reason: "no `name` (set it here or in a manifest this one extends)".into(),
    })?;
    check_name(&name, first)?;
    let source = merge_source(&chain)?;
    let strip_flag = |get: fn(&StripFile) -> Option<bool>| {
        nearest(&chain, |f| f.strip.as_ref().and_then(get)).unwrap_or(false)
    };
    let mut lists = Lists {
        strip: Strip {
            docs: strip_flag(|s| s.docs),
            man: strip_flag(|s| s.man),
            info: strip_flag(|s| s.info),
            ..Strip::default()
        },
        ..Lists::default()
    };
    // Lists: parent first, so a child's settings come after (and win) where order matters.
    for (p, text, f) in chain.iter().rev() {
        let w = Where { file: p, text };
        lists.add_packages(&w, f)?;
        lists.add_strip(&w, f)?;
        lists.add_overlays(&w, f)?;
        lists.add_hooks(&w, f)?;
        lists.add_triggers(&w, f)?;
        lists.add_local_state(&w, f)?;
    }
    let Lists {
        packages,
        strip,
        overlays,
        hooks,
        mut triggers,
        local_state,
    } = lists;
    contract::sort_triggers(&mut triggers);
    let local_state = local_state.unwrap_or_else(|| list_lines(DEFAULT_LOCAL_STATE));
    Excludes::new(&local_state)?;
    let owned = match chain
        .iter()
        .find_map(|(p, text, f)| Some((p, text, f.owned.as_ref()?)))
    {
        None => None,
        Some((p, text, o)) => {
            for g in o.get_ref() {
                let bad =
                    |why: String| at(p, text, Some(o.span().start), format!("owned: {g:?} {why}"));
                if !g.starts_with('/') {
                    return Err(bad("must be an absolute path glob".into()));
                }
                Excludes::new(std::slice::from_ref(g)).map_err(|e| bad(e.to_string()))?;
            }
            Some(o.get_ref().clone())
        }
    };
    Ok(Manifest {
        name,
        description: nearest(&chain, |f| f.description.clone()),
        epoch: nearest(&chain, |f| f.epoch),
        files,
        source,
        packages: packages.into_values().collect(),
        strip,
        overlays,
        hooks,
        triggers,
        local_state,
        owned,
        first_boot: nearest(&chain, |f| f.first_boot).unwrap_or(true),
    })
}

/// The `[source]` table: each field from the nearest file that sets it.
fn merge_source(chain: &[Link]) -> Result<AptSource> {
    let variant = match chain
        .iter()
        .find_map(|(p, text, f)| Some((p, text, src_of(f)?.variant.as_ref()?)))
    {
        None => Variant::Minbase,
        Some((p, text, v)) => Variant::parse(v.get_ref()).ok_or_else(|| {
            at(
                p,
                text,
                Some(v.span().start),
                format!(
                    "source.variant {:?}: expected essential, minbase, required or important",
                    v.get_ref()
                ),
            )
        })?,
    };
    Ok(AptSource {
        suite: nearest(chain, |f| src_of(f)?.suite.clone()).unwrap_or_else(|| "bookworm".into()),
        architecture: nearest(chain, |f| src_of(f)?.architecture.clone())
            .unwrap_or_else(|| "amd64".into()),
        components: nearest(chain, |f| src_of(f)?.components.clone())
            .unwrap_or_else(|| vec!["main".into()]),
        variant,
        mirrors: nearest(chain, |f| {
            Some(src_of(f)?.mirrors.as_ref()?.get_ref().clone())
        })
        .unwrap_or(Mirrors::Host),
        updates: nearest(chain, |f| src_of(f)?.updates).unwrap_or(true),
    })
}

/// One manifest file of the chain, for errors that point into it.
struct Where<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Where<'_> {
    fn at(&self, offset: Option<usize>, reason: String) -> Error {
        at(self.file, self.text, offset, reason)
    }
}

/// The settings that add up along the chain, parent first.
#[derive(Default)]
struct Lists {
    packages: BTreeMap<String, PackageSpec>,
    strip: Strip,
    overlays: Vec<Overlay>,
    hooks: Vec<Hook>,
    triggers: Vec<Trigger>,
    local_state: Option<Vec<String>>,
}

impl Lists {
    fn add_packages(&mut self, w: &Where, f: &File) -> Result<()> {
        for s in &f.packages {
            let spec = parse_package(s.get_ref()).ok_or_else(|| {
                w.at(
                    Some(s.span().start),
                    format!(
                        "packages: {:?} is not a package name or name=version",
                        s.get_ref()
                    ),
                )
            })?;
            self.packages.insert(spec.name.clone(), spec);
        }
        Ok(())
    }

    fn add_strip(&mut self, w: &Where, f: &File) -> Result<()> {
        let Some(st) = &f.strip else {
            return Ok(());
        };
        let strip = &mut self.strip;
        for l in &st.locales {
            if l.is_empty() || l.contains('/') || l.contains('*') {
                return Err(w.at(None, format!("strip.locales: {l:?} is not a locale name")));
            }
            if !strip.locales.contains(l) {
                strip.locales.push(l.clone());
            }
        }
        for (list, out) in [
            (&st.exclude, &mut strip.exclude),
            (&st.keep, &mut strip.keep),
        ] {
            for g in list {
                check_dpkg_glob(g.get_ref()).map_err(|why| {
                    w.at(
                        Some(g.span().start),
                        format!("strip: {:?}: {why}", g.get_ref()),
                    )
                })?;
                out.push(g.get_ref().clone());
            }
        }
        Ok(())
    }

    fn add_overlays(&mut self, w: &Where, f: &File) -> Result<()> {
        let dir = w.file.parent().unwrap_or(Path::new("/"));
        for o in &f.overlay {
            let dest = o.dest.get_ref();
            if !dest.starts_with('/') || dest.split('/').any(|c| c == "..") {
                return Err(w.at(
                    Some(o.dest.span().start),
                    format!("overlay.dest {dest:?}: must be an absolute path without `..`"),
                ));
            }
            let src = dir.join(o.src.get_ref());
            if fsx::symlink_metadata(&src).is_err() {
                return Err(w.at(
                    Some(o.src.span().start),
                    format!("overlay.src {}: no such file or directory", src.display()),
                ));
            }
            for (what, m) in [("mode", o.mode), ("dir_mode", o.dir_mode)] {
                if m.is_some_and(|m| m > 0o7777) {
                    return Err(w.at(
                        Some(o.src.span().start),
                        format!(
                            "overlay.{what}: {m:?} is not a permission mode (write it as 0o644)"
                        ),
                    ));
                }
            }
            self.overlays.push(Overlay {
                src,
                dest: dest.trim_end_matches('/').to_string(),
                owner: o.owner,
                group: o.group,
                mode: o.mode,
                dir_mode: o.dir_mode.unwrap_or(0o755),
            });
        }
        Ok(())
    }

    fn add_hooks(&mut self, w: &Where, f: &File) -> Result<()> {
        for h in &f.hook {
            if self.hooks.iter().any(|x| x.name == h.name) {
                return Err(w.at(None, format!("hook {:?} is defined twice", h.name)));
            }
            self.hooks.push(h.clone());
        }
        Ok(())
    }

    fn add_triggers(&mut self, w: &Where, f: &File) -> Result<()> {
        for t in &f.trigger {
            let tr = t.get_ref();
            tr.check().map_err(|why| w.at(Some(t.span().start), why))?;
            // A child may redefine a parent's trigger by name.
            self.triggers.retain(|x| x.name != tr.name);
            self.triggers.push(tr.clone());
        }
        Ok(())
    }

    fn add_local_state(&mut self, w: &Where, f: &File) -> Result<()> {
        let Some(ls) = &f.local_state else {
            return Ok(());
        };
        let dir = w.file.parent().unwrap_or(Path::new("/"));
        let acc = self.local_state.get_or_insert_with(Vec::new);
        for l in ls {
            let lp = dir.join(l.get_ref());
            let body = fsx::read_to_string(&lp).map_err(|e| {
                w.at(
                    Some(l.span().start),
                    format!("local_state {}: {}", lp.display(), e.into_io()),
                )
            })?;
            acc.extend(list_lines(&body));
        }
        Ok(())
    }
}

impl Manifest {
    /// Every setting as text, leaving out where files are (the manifest files, overlay
    /// sources): what [`Manifest::flattened`] must read back to (its test, the fuzz target).
    pub fn settings_text(&self) -> String {
        let o: Vec<_> = self
            .overlays
            .iter()
            .map(|o| (&o.dest, o.owner, o.group, o.mode, o.dir_mode))
            .collect();
        format!(
            "{} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
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
            self.owned
        )
    }

    /// This manifest as one self-contained file (no `extends`) that [`load`] reads back
    /// to the same settings: what a build stores so that the image can be rebuilt.
    /// Overlay sources become `overlays/<n>` and the local-state list `local-state.txt`,
    /// both relative to the file.
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
#[allow(clippy::disallowed_methods)] // tests set up and read files directly
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn extends_adds_lists_and_overrides_scalars() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "base.toml", "name = \"base\"\npackages = [\"openssh-server\", \"gzip\"]\n[source]\nsuite = \"bookworm\"\n[strip]\ndocs = true\nexclude = [\"/usr/share/lintian/*\"]\n[[trigger]]\nname = \"sshd\"\npaths = [\"/etc/ssh/**\"]\nrun = \"true\"\n");
        let app = write(d.path(), "app.toml", "name = \"app\"\nextends = \"base.toml\"\npackages = [\"python3\", \"gzip=1.12-1\"]\n[strip]\nexclude = [\"/usr/share/bug/*\"]\n[[hook]]\nname = \"h\"\nrun = \"true\"\n");
        let m = load(&app).unwrap();
        assert_eq!(m.name, "app");
        assert_eq!(m.source.suite, "bookworm");
        let names: Vec<String> = m.packages.iter().map(|p| p.to_string()).collect();
        assert_eq!(names, ["gzip=1.12-1", "openssh-server", "python3"]);
        assert!(m.strip.docs);
        assert_eq!(
            m.strip.exclude,
            ["/usr/share/lintian/*", "/usr/share/bug/*"]
        );
        assert_eq!(m.triggers.len(), 1);
        assert_eq!(m.hooks.len(), 1);
        assert_eq!(m.files.len(), 2);
        assert!(m.local_state.iter().any(|l| l == "/etc/machine-id"));
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        let d = tempfile::tempdir().unwrap();
        // (file, body, what the error must say)
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "m.toml",
                "name = \"x\"\n\n[source]\nsuit = \"bookworm\"\n",
                &["m.toml:4:", "suit"],
            ),
            (
                "t.toml",
                "name = \"x\"\npackages = \"gzip\"\n",
                &["t.toml:2:"],
            ),
            (
                "g.toml",
                "name = \"x\"\n[strip]\nexclude = [\"/usr/[share\"]\n",
                &["g.toml:3:", "/usr/[share"],
            ),
            (
                "v.toml",
                "name = \"x\"\n[source]\nmirrors = \"hots\"\n",
                &["v.toml:3:", "hots"],
            ),
            (
                "r.toml",
                "name = \"x\"\n[source]\nvariant = \"tiny\"\n",
                &["r.toml:3:", "tiny"],
            ),
        ];
        for (file, body, expect) in cases {
            let e = load(&write(d.path(), file, body)).unwrap_err().to_string();
            for x in *expect {
                assert!(e.contains(x), "{file}: {x:?} not in {e}");
            }
        }
    }

    #[test]
    fn a_flattened_manifest_reads_back_the_same() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("ov")).unwrap();
        std::fs::write(d.path().join("ov/f"), "x").unwrap();
        write(d.path(), "base.toml", "name = \"base\"\npackages = [\"gzip\"]\nepoch = 5\n[source]\nvariant = \"important\"\nmirrors = [\"http://a/debian\", { url = \"http://b/sec\", suites = [\"bookworm-security\"], components = [\"main\", \"contrib\"] }]\n[strip]\ndocs = true\nlocales = [\"en\"]\nkeep = [\"/usr/share/doc/x/*\"]\n[[trigger]]\nname = \"t\"\npaths = [\"/etc/**\"]\nrun = \"true\"\norder = 3\n");
        let app = write(d.path(), "app.toml", "name = \"app\"\nextends = \"base.toml\"\npackages = [\"jq=1.6-2.1\"]\n[[overlay]]\nsrc = \"ov\"\ndest = \"/opt/ov\"\nowner = 7\nmode = 0o640\n[[hook]]\nname = \"h\"\nrun = \"echo hi\"\ntimeout = 9\n");
        let m = load(&app).unwrap();
        let flat = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(flat.path().join("overlays/0")).unwrap();
        std::fs::write(
            flat.path().join("local-state.txt"),
            m.local_state.join("\n"),
        )
        .unwrap();
        let back = load(&write(flat.path(), "flat.toml", &m.flattened().unwrap())).unwrap();
        assert_eq!(back.settings_text(), m.settings_text());
        assert_eq!(
            back.overlays[0].src,
            flat.path().canonicalize().unwrap().join("overlays/0")
        );
    }

    #[test]
    fn first_boot_is_on_unless_a_manifest_or_its_parent_turns_it_off() {
        let d = tempfile::tempdir().unwrap();
        let on = write(d.path(), "on.toml", "name = \"on\"\n");
        assert!(load(&on).unwrap().first_boot);
        assert!(!load(&on)
            .unwrap()
            .flattened()
            .unwrap()
            .contains("first_boot"));
        write(d.path(), "off.toml", "name = \"off\"\nfirst_boot = false\n");
        let child = write(
            d.path(),
            "child.toml",
            "name = \"child\"\nextends = \"off.toml\"\n",
        );
        let m = load(&child).unwrap();
        assert!(!m.first_boot);
        assert!(m.flattened().unwrap().contains("first_boot = false"));
        std::fs::write(d.path().join("local-state.txt"), m.local_state.join("\n")).unwrap();
        let back = write(d.path(), "flat.toml", &m.flattened().unwrap());
        assert!(!load(&back).unwrap().first_boot);
    }

    #[test]
    fn cycles_and_missing_parents_are_errors() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.toml", "name = \"a\"\nextends = \"b.toml\"\n");
        let b = write(d.path(), "b.toml", "name = \"b\"\nextends = \"a.toml\"\n");
        let e = load(&b).unwrap_err().to_string();
        assert!(e.contains("cycle") && e.contains("a.toml"), "{e}");
        let c = write(
            d.path(),
            "c.toml",
            "name = \"c\"\n\nextends = \"nope.toml\"\n",
        );
        let e = load(&c).unwrap_err().to_string();
        assert!(e.contains("c.toml:3:") && e.contains("nope.toml"), "{e}");
    }

    #[test]
    fn explicit_mirrors_and_pins() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "m.toml", "name = \"m\"\npackages = [\"libc6=2.36-9+deb12u4\"]\n[source]\nmirrors = [\"http://snapshot.debian.org/archive/debian/20250520T000000Z\", { url = \"http://deb.debian.org/debian-security\", suites = [\"bookworm-security\"] }]\n");
        let m = load(&p).unwrap();
        match &m.source.mirrors {
            Mirrors::List(l) => {
                assert_eq!(l.len(), 2);
                assert_eq!(l[1].suites, ["bookworm-security"]);
            }
            Mirrors::Host => panic!("expected a list"),
        }
        assert_eq!(m.packages[0].version.as_deref(), Some("2.36-9+deb12u4"));
        let bad = write(
            d.path(),
            "b.toml",
            "name = \"m\"\npackages = [\"Bad Name\"]\n",
        );
        assert!(load(&bad).unwrap_err().to_string().contains("b.toml:2:"));
    }
}
