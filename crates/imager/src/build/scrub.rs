//! After installation: what makes one machine's chroot differ from another's is removed
//! or made constant (caches, logs, seeds, host keys, machine-id, shadow's last-change
//! field), local-state paths are emptied, dpkg's file lists are made to agree with the
//! strip rules (see [`super::dpkg`]), and the image's own files (`/usr/lib/imager/`)
//! are written.

use super::dpkg;
use super::lock::Lock;
use super::recipe::{Recipe, StripMatcher};
use crate::contract;
use crate::error::{Error, Result};
use crate::fsx;
use crate::tree::scan::Excludes;
use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Machine-local files no image should carry, whatever its local-state list says.
const MACHINE_STATE: &[&str] = &[
    "/var/lib/apt/lists/*",
    "/var/cache/apt/*.bin",
    "/var/cache/apt/archives/*.deb",
    "/var/cache/apt/archives/partial/*",
    "/var/cache/ldconfig/aux-cache",
    "/var/lib/dpkg/*-old",
    "/var/cache/debconf/*-old",
    "/etc/ssh/ssh_host_*",
    "/var/lib/dbus/machine-id",
    "/var/lib/systemd/random-seed",
    "/var/lib/urandom/random-seed",
    "/etc/resolv.conf",
    "/etc/hostname",
];

/// What scrubbing did, for the build report.
#[derive(Debug, Default, serde::Serialize)]
pub struct Scrubbed {
    /// Files removed because they are machine state (caches, logs, seeds, host keys).
    pub machine_state_removed: usize,
    /// Files removed because the recipe's local-state globs cover them.
    pub local_state_removed: usize,
    /// Lines dropped from dpkg's `*.list` and `*.md5sums` for paths the strip rules kept
    /// off the disk.
    pub dpkg_list_lines_dropped: usize,
    /// Files the strip rules cover that maintainer scripts or hooks made (dpkg's filters
    /// only see files from packages).
    pub strip_generated_removed: usize,
}

/// Scrubs the installed tree at `root` (see the module comment): empties `/etc/machine-id`,
/// sets shadow's last-change day to the lock's epoch, writes the lock's sources to
/// `/etc/apt/sources.list`, aligns dpkg's lists, removes unwanted files and writes the
/// image's own files (triggers, local state, owned prefixes).
pub fn scrub(root: &Path, m: &Recipe, lock: &Lock) -> Result<Scrubbed> {
    let mut s = Scrubbed::default();
    // Empty, not absent: systemd treats an empty machine-id as the first boot.
    let mid = root.join("etc/machine-id");
    let _ = fsx::remove_file(&mid);
    fsx::write(&mid, b"")?;
    fsx::set_mode(&mid, 0o444)?;
    for f in ["etc/shadow", "etc/shadow-"] {
        fix_shadow(&root.join(f), lock.epoch)?;
    }
    let sources: String = lock
        .sources
        .iter()
        .map(|l| format!("deb {}\n", l.text()))
        .collect();
    let list = root.join("etc/apt/sources.list");
    fsx::write(&list, sources)?;

    let strip = m.strip.matcher()?;
    let (dropped, owned) = dpkg::align_lists(root, strip.as_ref())?;
    s.dpkg_list_lines_dropped = dropped;
    let machine: Vec<String> = MACHINE_STATE.iter().map(|g| g.to_string()).collect();
    let unwanted = Unwanted {
        machine: Excludes::new(&machine)?,
        local: Excludes::new(&m.local_state)?,
        strip,
        owned,
    };
    remove_unwanted(root, &unwanted, &mut s)?;

    fsx::create_dir_all(&root.join(contract::IMAGE_DIR))?;
    let triggers = contract::triggers_text(&m.triggers)
        .map_err(|e| Error::Internal(format!("cannot write triggers: {e}")))?;
    let file = |p: &str| fsx::under(root, p.as_bytes());
    let t = file(contract::TRIGGERS_FILE);
    fsx::write(&t, triggers)?;
    let ls = file(contract::LOCAL_STATE_FILE);
    fsx::write(&ls, contract::local_state_text(&m.local_state))?;
    if let Some(owned) = &m.owned {
        fsx::write(file(contract::OWNED_FILE), contract::owned_text(owned))?;
    }
    Ok(s)
}

/// What no image keeps: machine state, local state (a glob names a file, or a directory
/// whose files go: `covers` sees both) and files under the strip rules that no package
/// owns (base-files copies /usr/share/info/dir; hooks make others).
struct Unwanted {
    machine: Excludes,
    local: Excludes,
    strip: Option<StripMatcher>,
    owned: HashSet<Vec<u8>>,
}

/// One walk removing the files, symlinks and other non-directories that are unwanted,
/// keeping `/etc/machine-id` (made empty above). Directories stay, emptied: packages own
/// directories such as /var/log/nginx and fail without them, and dpkg's lists name them.
/// Never follows symlinks.
fn remove_unwanted(root: &Path, u: &Unwanted, s: &mut Scrubbed) -> Result<()> {
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .same_file_system(true)
    {
        let e = e.map_err(|source| Error::Walk {
            root: root.to_path_buf(),
            source,
        })?;
        if e.file_type().is_dir() {
            continue;
        }
        let rel = e.path().strip_prefix(root).unwrap_or(Path::new(""));
        let p = [b"/".as_slice(), fsx::path_bytes(rel)].concat();
        let count = if u.machine.covers(&p) {
            &mut s.machine_state_removed
        } else if u.local.covers(&p) && p != b"/etc/machine-id" {
            &mut s.local_state_removed
        } else if u.strip.as_ref().is_some_and(|m| m.strips(&p)) && !u.owned.contains(&p) {
            &mut s.strip_generated_removed
        } else {
            continue;
        };
        fsx::remove_file(e.path())?;
        *count += 1;
    }
    Ok(())
}

/// Sets the last-change field (days since the epoch) of every account that has one.
fn fix_shadow(path: &Path, epoch: i64) -> Result<()> {
    let Ok(text) = fsx::read_to_string(path) else {
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
        let meta = fsx::metadata(path)?;
        fsx::write(path, out)?;
        fsx::set_mode(path, meta.permissions().mode())?;
    }
    Ok(())
}
