//! After installation: what makes one machine's chroot differ from another's is removed
//! or made constant (caches, logs, seeds, host keys, machine-id, shadow's last-change
//! field), local-state paths are emptied, dpkg's file lists are made to agree with the
//! strip rules, and the image's own files (`/usr/lib/imager/`) are written.

use super::lock::Lock;
use super::manifest::{Manifest, Strip};
use crate::deb822;
use crate::error::{Error, IoContext, Result};
use crate::fsx;
use crate::tree::scan::Excludes;
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Where an image built by imager says how the syncer should treat it.
pub const IMAGE_DIR: &str = "usr/lib/imager";

/// Machine-local files no image should carry, whatever its local-state list says.
const MACHINE_STATE: &[&str] = &[
    "/var/lib/apt/lists/*",
    "/var/lib/apt/lists/partial/*",
    "/var/cache/apt/*.bin",
    "/var/cache/apt/archives/*.deb",
    "/var/cache/apt/archives/partial/*",
    "/var/cache/ldconfig/aux-cache",
    "/var/lib/dpkg/*-old",
    "/var/cache/debconf/*-old",
    "/etc/ssh/ssh_host_*",
    "/var/lib/systemd/random-seed",
    "/var/lib/urandom/random-seed",
    "/etc/resolv.conf",
    "/etc/hostname",
];

/// What scrubbing did, for the build report.
#[derive(Debug, Default, serde::Serialize)]
pub struct Scrubbed {
    pub machine_state_removed: usize,
    pub local_state_removed: usize,
    pub dpkg_list_lines_dropped: usize,
    /// Files the strip rules cover that maintainer scripts or hooks made (dpkg's filters
    /// only see files from packages).
    pub strip_generated_removed: usize,
}

pub fn scrub(root: &Path, m: &Manifest, lock: &Lock) -> Result<Scrubbed> {
    let mut s = Scrubbed::default();
    let machine: Vec<String> = MACHINE_STATE.iter().map(|g| g.to_string()).collect();
    s.machine_state_removed = remove_matching(root, &Excludes::new(&machine)?, false)?;

    let dbus = root.join("var/lib/dbus/machine-id");
    if std::fs::symlink_metadata(&dbus).is_ok_and(|m| m.is_file()) {
        fsx::remove_file(&dbus)?;
        s.machine_state_removed += 1;
    }
    // Empty, not absent: systemd treats an empty machine-id as the first boot.
    let mid = root.join("etc/machine-id");
    let _ = std::fs::remove_file(&mid);
    std::fs::write(&mid, b"").ctx("write", &mid)?;
    std::fs::set_permissions(&mid, std::fs::Permissions::from_mode(0o444))
        .ctx("set mode of", &mid)?;

    for f in ["etc/shadow", "etc/shadow-"] {
        fix_shadow(&root.join(f), lock.epoch)?;
    }

    let sources: String = lock
        .sources
        .iter()
        .map(|l| format!("deb {}\n", l.text()))
        .collect();
    let list = root.join("etc/apt/sources.list");
    std::fs::write(&list, sources).ctx("write", &list)?;

    // A file below a local-state directory matches `dir/**`, a file named directly
    // matches itself: `covers` sees both.
    s.local_state_removed = remove_matching(root, &Excludes::new(&m.local_state)?, true)?;
    s.dpkg_list_lines_dropped = align_dpkg_lists(root, &m.strip)?;
    s.strip_generated_removed = strip_generated(root, &m.strip)?;

    let dir = root.join(IMAGE_DIR);
    fsx::create_dir_all(&dir)?;
    let triggers = toml::to_string(&TriggerFile {
        trigger: m.triggers.clone(),
    })
    .map_err(|e| Error::Usage(format!("cannot write triggers: {e}")))?;
    std::fs::write(dir.join("triggers.toml"), triggers).ctx("write", dir.join("triggers.toml"))?;
    let mut ls = String::from(
        "# local state of this image: the syncer never touches these paths on a host\n",
    );
    for l in &m.local_state {
        ls += l;
        ls.push('\n');
    }
    std::fs::write(dir.join("local-state.txt"), ls).ctx("write", dir.join("local-state.txt"))?;
    Ok(s)
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct TriggerFile {
    #[serde(default)]
    pub trigger: Vec<super::manifest::Trigger>,
}

/// Removes the files, symlinks and other non-directories the globs match, keeping
/// `/etc/machine-id` (made empty above) when applying the local-state list. Directories
/// stay, emptied: packages own directories such as /var/log/nginx and fail without them,
/// and dpkg's lists name them. Never follows symlinks.
fn remove_matching(root: &Path, ex: &Excludes, local_state: bool) -> Result<usize> {
    let mut n = 0;
    let it = walkdir::WalkDir::new(root)
        .follow_links(false)
        .same_file_system(true);
    for e in it {
        let e = e.map_err(|e| Error::Usage(format!("walking {}: {e}", root.display())))?;
        let rel = e.path().strip_prefix(root).unwrap_or(Path::new(""));
        if rel.as_os_str().is_empty() {
            continue;
        }
        let mut p = b"/".to_vec();
        p.extend_from_slice(fsx::path_bytes(rel));
        if !ex.covers(&p) || (local_state && p == b"/etc/machine-id") {
            continue;
        }
        if !e.file_type().is_dir() {
            fsx::remove_file(e.path())?;
            n += 1;
        }
    }
    Ok(n)
}

/// Sets the last-change field (days since the epoch) of every account that has one.
fn fix_shadow(path: &Path, epoch: i64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let day = (epoch / 86400).to_string();
    let mut out = String::new();
    for line in text.lines() {
        let mut f: Vec<&str> = line.split(':').collect();
        if f.len() >= 3 && !f[2].is_empty() {
            f[2] = &day;
        }
        out += &f.join(":");
        out.push('\n');
    }
    if out != text {
        let meta = std::fs::metadata(path).ctx("inspect", path)?;
        std::fs::write(path, out).ctx("write", path)?;
        std::fs::set_permissions(path, meta.permissions()).ctx("set mode of", path)?;
    }
    Ok(())
}

/// The strip filters as dpkg evaluates them: excluded by one glob and kept by none.
fn strip_matcher(strip: &Strip) -> Result<Option<impl Fn(&str) -> bool>> {
    let (ex, keep) = strip.filters();
    if ex.is_empty() {
        return Ok(None);
    }
    let set = |globs: &[String]| -> Result<GlobSet> {
        let mut b = GlobSetBuilder::new();
        for g in globs {
            // fnmatch(3) without FNM_PATHNAME, as dpkg uses it: `*` crosses `/`.
            b.add(Glob::new(g).map_err(|e| Error::Usage(format!("strip glob {g:?}: {e}")))?);
        }
        b.build()
            .map_err(|e| Error::Usage(format!("strip globs: {e}")))
    };
    let (ex, keep) = (set(&ex)?, set(&keep)?);
    Ok(Some(move |p: &str| ex.is_match(p) && !keep.is_match(p)))
}

/// Removes files under the strip rules that no package owns: made by maintainer scripts
/// (base-files copies /usr/share/info/dir) or hooks, which dpkg's filters do not see.
fn strip_generated(root: &Path, strip: &Strip) -> Result<usize> {
    let Some(stripped) = strip_matcher(strip)? else {
        return Ok(0);
    };
    let info = root.join("var/lib/dpkg/info");
    let mut owned = std::collections::HashSet::new();
    for e in std::fs::read_dir(&info).ctx("read directory", &info)? {
        let path = e.ctx("read directory", &info)?.path();
        if path.extension().is_some_and(|x| x == "list") {
            for l in fsx::read(&path)?.split(|&b| b == b'\n') {
                owned.insert(l.to_vec());
            }
        }
    }
    let mut n = 0;
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .same_file_system(true)
    {
        let e = e.map_err(|e| Error::Usage(format!("walking {}: {e}", root.display())))?;
        if e.file_type().is_dir() {
            continue;
        }
        let rel = e.path().strip_prefix(root).unwrap_or(Path::new(""));
        let mut p = b"/".to_vec();
        p.extend_from_slice(fsx::path_bytes(rel));
        if stripped(&String::from_utf8_lossy(&p)) && !owned.contains(&p) {
            fsx::remove_file(e.path())?;
            n += 1;
        }
    }
    Ok(n)
}

/// dpkg records the files its path-exclude filters kept off the disk; drop those lines
/// (from `*.list` and `*.md5sums`) so that `dpkg -L`, `dpkg -S` and `dpkg --verify` tell
/// the truth about the image. Only missing paths the filters excluded are dropped.
fn align_dpkg_lists(root: &Path, strip: &Strip) -> Result<usize> {
    let Some(stripped) = strip_matcher(strip)? else {
        return Ok(0);
    };
    let gone =
        |p: &str| stripped(p) && std::fs::symlink_metadata(fsx::under(root, p.as_bytes())).is_err();
    let info = root.join("var/lib/dpkg/info");
    let mut dropped = 0;
    for e in std::fs::read_dir(&info).ctx("read directory", &info)? {
        let path = e.ctx("read directory", &info)?.path();
        let name = path.to_string_lossy().into_owned();
        let is_list = name.ends_with(".list");
        if !is_list && !name.ends_with(".md5sums") {
            continue;
        }
        let text = fsx::read(&path)?;
        let mut out = Vec::with_capacity(text.len());
        for line in text.split_inclusive(|&b| b == b'\n') {
            let l = String::from_utf8_lossy(line);
            let l = l.trim_end_matches('\n');
            let p = if is_list {
                l.to_string()
            } else {
                // `<md5>  <path without the leading slash>`
                format!("/{}", l.split_once("  ").map_or("", |(_, p)| p))
            };
            if gone(&p) {
                dropped += 1;
            } else {
                out.extend_from_slice(line);
            }
        }
        if out.len() != text.len() {
            std::fs::write(&path, out).ctx("write", &path)?;
        }
    }
    Ok(dropped)
}

/// One installed package, from dpkg's status database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Installed {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub source: String,
}

/// The packages dpkg says are installed under `root`, sorted by name.
pub fn installed(root: &Path) -> Result<Vec<Installed>> {
    let status = root.join("var/lib/dpkg/status");
    let mut out: Vec<Installed> = deb822::parse(&fsx::read_to_string(&status)?)
        .into_iter()
        .filter(|p| p.get("Status").is_some_and(|s| s.ends_with(" installed")))
        .filter_map(|p| {
            let name = p.get("Package")?.to_string();
            let source = p
                .get("Source")
                .map(|s| s.split_whitespace().next().unwrap_or(s).to_string())
                .unwrap_or_else(|| name.clone());
            Some(Installed {
                version: p.get("Version")?.to_string(),
                arch: p.get("Architecture")?.to_string(),
                source,
                name,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
