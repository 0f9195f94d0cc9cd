//! What still runs old code after a push (as debian-goodies' `checkrestart` and
//! `needrestart` tell after an upgrade).
//!
//! A commit replaces a file by renaming a new inode over its path; a process that mapped
//! the old one (its executable, a shared library) keeps that inode mapped, unlinked,
//! until it restarts. So a push that updated libssl has not fixed a running nginx until
//! nginx restarts, and its triggers may not have restarted everything. The kernel shows
//! such a mapping as the old path with ` (deleted)` in `/proc/PID/maps` (and in the
//! `/proc/PID/exe` link); a file at that path now means it was replaced, not just removed.
//!
//! [`list`] reads that for every process whose root is the synced root, and groups the
//! processes by systemd unit (from `/proc/PID/cgroup`), the thing an operator restarts.
//! Reading `/proc` races with processes ending: one that vanishes, or any entry that
//! cannot be read, is skipped; the listing itself never fails.
//!
//! Paths in `/proc/PID/maps` are as the *reader* sees them: for a process chrooted into
//! a `local:` root in the agent's own mount namespace they start with the root's path
//! (which is stripped); for one in another mount namespace whose root is the synced root
//! (a container), they are relative to that namespace's root, which is the synced root.

use crate::protocol::{StaleProcess, StaleUnit};
use imager_core::fsx;
use imager_core::safe_dir::Beneath;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The unit of processes in no `.service` or `.scope` (a kernel-started process, or a
/// system without systemd).
pub const NO_UNIT: &str = "(no unit)";

/// At most this many processes and files are listed per unit (the rest are counted):
/// a unit of 500 workers mapping 80 libraries is one restart, not 40,000 lines.
pub const MAX_LISTED: usize = 32;

/// Root-relative path prefixes never reported: scratch and runtime filesystems whose
/// files are replaced as a matter of course (and not by a push), and the names the
/// kernel gives mappings without a file (`memfd:`, SysV shared memory, ...). A prefix
/// ending in `/` matches that directory and everything below it.
pub const IGNORED: &[&[u8]] = &[
    b"/tmp/",
    b"/var/tmp/",
    b"/run/",
    b"/dev/",
    b"/proc/",
    b"/sys/",
    b"/memfd:",
    b"/SYSV",
    b"/anon_hugepage",
    b"/[",
    b"/drm mm object",
];

/// The processes running under `root` that still map files replaced since they started,
/// by unit (sorted by unit name).
pub fn list(root: &Path) -> Vec<StaleUnit> {
    list_with(root, IGNORED)
}

/// [`list`] with another set of ignored prefixes (tests whose scratch directory lies
/// under one of the usual ones).
pub fn list_with(root: &Path, ignored: &[&[u8]]) -> Vec<StaleUnit> {
    let Some(r) = Root::open(root) else {
        return Vec::new();
    };
    let mut units: BTreeMap<String, (Vec<StaleProcess>, BTreeSet<Vec<u8>>)> = BTreeMap::new();
    let Ok(entries) = fsx::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .iter()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Some(p) = process(pid, &r, ignored) else {
            continue;
        };
        let u = units.entry(p.unit).or_default();
        u.0.push(StaleProcess { pid, comm: p.comm });
        u.1.extend(p.files);
    }
    units
        .into_iter()
        .map(|(unit, (mut processes, files))| {
            let more_processes = processes.len().saturating_sub(MAX_LISTED) as u64;
            processes.truncate(MAX_LISTED);
            let more_files = files.len().saturating_sub(MAX_LISTED) as u64;
            StaleUnit {
                unit,
                processes,
                more_processes,
                files: files.into_iter().take(MAX_LISTED).collect(),
                more_files,
            }
        })
        .collect()
}

/// The synced root as the listing needs it.
struct Root {
    /// For the existence check, never following a symlink out of the root.
    beneath: Beneath,
    dev: u64,
    ino: u64,
    /// Its path as this process sees it (what the kernel prefixes paths with).
    canonical: Vec<u8>,
    /// This process's mount namespace (`mnt:[N]`), if readable.
    mnt_ns: Option<std::path::PathBuf>,
}

impl Root {
    fn open(root: &Path) -> Option<Root> {
        let m = fsx::metadata(root).ok()?;
        Some(Root {
            beneath: Beneath::open(root).ok()?,
            dev: m.dev(),
            ino: m.ino(),
            canonical: fsx::path_bytes(&fsx::canonicalize(root).ok()?).to_vec(),
            mnt_ns: fsx::read_link("/proc/self/ns/mnt").ok(),
        })
    }

    /// Whether an entry path exists beneath the root (without following symlinks).
    fn has(&self, path: &[u8]) -> bool {
        let Ok((dir, name)) = self.beneath.parent(path) else {
            return false;
        };
        rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }
}

/// One process's part of the listing.
struct Process {
    unit: String,
    comm: String,
    files: BTreeSet<Vec<u8>>,
}

/// The replaced files `pid` maps, if it runs under `r` and maps any; `None` too when it
/// ended or could not be read.
fn process(pid: u32, r: &Root, ignored: &[&[u8]]) -> Option<Process> {
    let dir = format!("/proc/{pid}");
    let at = |name: &str| std::path::PathBuf::from(format!("{dir}/{name}"));
    // Following the link: the process's root directory itself.
    let m = fsx::metadata(at("root")).ok()?;
    if (m.dev(), m.ino()) != (r.dev, r.ino) {
        return None;
    }
    let same_ns = match (&r.mnt_ns, fsx::read_link(at("ns/mnt"))) {
        (Some(own), Ok(its)) => *own == its,
        _ => true,
    };
    let exe = fsx::read_link(at("exe")).ok();
    let maps = fsx::read(&at("maps")).unwrap_or_default();
    let candidates = exe
        .iter()
        .map(|e| fsx::path_bytes(e).to_vec())
        .chain(maps_paths(&maps));
    let mut files = BTreeSet::new();
    for seen in candidates {
        let Some(path) = deleted(&seen) else {
            continue;
        };
        let Some(rel) = relative(path, &r.canonical, same_ns) else {
            continue;
        };
        if is_ignored(rel, ignored) || files.contains(rel) || !r.has(rel) {
            continue;
        }
        files.insert(rel.to_vec());
    }
    if files.is_empty() {
        return None;
    }
    let comm = fsx::read(&at("comm")).ok()?;
    let comm = String::from_utf8_lossy(&comm).trim_end().to_string();
    let cgroup = fsx::read(&at("cgroup")).unwrap_or_default();
    let unit = unit_of(&String::from_utf8_lossy(&cgroup)).unwrap_or_else(|| NO_UNIT.to_string());
    Some(Process { unit, comm, files })
}

/// The path of a mapping (or exe link) whose file was unlinked: without the kernel's
/// ` (deleted)` mark; `None` for a live file or a mapping without a path.
fn deleted(seen: &[u8]) -> Option<&[u8]> {
    seen.strip_suffix(b" (deleted)")
        .filter(|p| p.first() == Some(&b'/'))
}

/// The pathname of every file-backed line of `/proc/PID/maps` (address, perms, offset,
/// device and inode come first, the pathname after the padding; the kernel writes a
/// newline in a name as `\012`).
fn maps_paths(maps: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    maps.split(|&b| b == b'\n').filter_map(|line| {
        let mut rest = line;
        for _ in 0..5 {
            let end = rest.iter().position(|&b| b == b' ')?;
            rest = &rest[end..];
            let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
            rest = &rest[start..];
        }
        (rest.first() == Some(&b'/')).then(|| unescape_newlines(rest))
    })
}

fn unescape_newlines(p: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        if p[i..].starts_with(b"\\012") {
            out.push(b'\n');
            i += 4;
        } else {
            out.push(p[i]);
            i += 1;
        }
    }
    out
}

/// `path` as an entry path under the synced root, whose path as this process sees it is
/// `canonical`. In this mount namespace the kernel shows paths from this process's root:
/// strip the root's path (a path outside it is not the root's file). In another one it
/// shows them from that namespace's root: the process's root, so the synced one, for a
/// container; but the host's `/` for a service chrooted in a namespace of its own
/// (systemd's `RootDirectory=` with `PrivateTmp=`), whose paths start with the root's.
fn relative<'p>(path: &'p [u8], canonical: &[u8], same_ns: bool) -> Option<&'p [u8]> {
    if canonical == b"/" {
        return Some(path);
    }
    match path.strip_prefix(canonical) {
        Some(rest) if rest.first() == Some(&b'/') => Some(rest),
        _ if !same_ns => Some(path),
        _ => None,
    }
}

/// Whether `path` is one of the [`IGNORED`] kinds (a prefix ending in `/` matches the
/// directory itself too).
fn is_ignored(path: &[u8], ignored: &[&[u8]]) -> bool {
    let mut dir = path.to_vec();
    dir.push(b'/');
    ignored.iter().any(|p| dir.starts_with(p))
}

/// The systemd unit of a `/proc/PID/cgroup`: in the unified hierarchy's line (`0::`),
/// else systemd's own v1 hierarchy (`N:name=systemd:`), the deepest path component that
/// is a `.service` or a `.scope` (`/system.slice/nginx.service` is `nginx.service`; a
/// user's `/user.slice/user-1000.slice/user@1000.service/app.slice/x.service` is
/// `x.service`).
fn unit_of(cgroup: &str) -> Option<String> {
    let path_of = |want: &dyn Fn(&str) -> bool| {
        cgroup.lines().find_map(|l| {
            let (_, rest) = l.split_once(':')?;
            let (controllers, path) = rest.split_once(':')?;
            want(controllers).then_some(path)
        })
    };
    let unit = |path: &str| {
        path.split('/')
            .rev()
            .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
            .map(str::to_string)
    };
    path_of(&|c| c.is_empty())
        .and_then(unit)
        .or_else(|| path_of(&|c| c == "name=systemd").and_then(unit))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // the test makes and replaces files directly
    use super::*;
    use std::process::{Child, Command};

    #[test]
    fn cgroup_lines_name_the_deepest_service_or_scope() {
        assert_eq!(
            unit_of("0::/system.slice/nginx.service\n").as_deref(),
            Some("nginx.service")
        );
        assert_eq!(
            unit_of("0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.service\n")
                .as_deref(),
            Some("x.service")
        );
        assert_eq!(
            unit_of("0::/user.slice/user-0.slice/session-4.scope\n").as_deref(),
            Some("session-4.scope")
        );
        // A container's processes, seen from the host.
        assert_eq!(
            unit_of("0::/machine.slice/machine-web.scope/payload/system.slice/ssh.service\n")
                .as_deref(),
            Some("ssh.service")
        );
        // Hybrid or v1: the unified line names no unit, systemd's hierarchy does.
        assert_eq!(
            unit_of("12:cpu,cpuacct:/x\n1:name=systemd:/system.slice/cron.service\n0::/\n")
                .as_deref(),
            Some("cron.service")
        );
        assert_eq!(unit_of("0::/\n"), None);
        assert_eq!(unit_of(""), None);
    }

    #[test]
    fn maps_lines_give_their_paths_and_deleted_ones_are_told_apart() {
        let maps =
            b"55d0c0a00000-55d0c0a02000 r--p 00000000 08:01 1234   /usr/bin/sleep (deleted)\n\
7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n\
7f0000001000-7f0000002000 rw-p 00000000 00:00 0    [heap]\n\
7f0000002000-7f0000003000 r-xp 00000000 08:01 99   /usr/lib/a b.so\n\
7f0000003000-7f0000004000 rw-s 00000000 00:01 7    /memfd:x (deleted)\n\
7f0000004000-7f0000005000 r--p 00000000 08:01 5    /opt/new\\012line (deleted)\n";
        let paths: Vec<Vec<u8>> = maps_paths(maps).collect();
        assert_eq!(
            paths,
            [
                b"/usr/bin/sleep (deleted)".to_vec(),
                b"/usr/lib/a b.so".to_vec(),
                b"/memfd:x (deleted)".to_vec(),
                b"/opt/new\nline (deleted)".to_vec(),
            ]
        );
        assert_eq!(
            deleted(b"/usr/bin/sleep (deleted)"),
            Some(&b"/usr/bin/sleep"[..])
        );
        assert_eq!(deleted(b"/usr/lib/a b.so"), None);
        assert_eq!(deleted(b"[heap] (deleted)"), None);
    }

    #[test]
    fn paths_are_taken_relative_to_the_root_and_scratch_places_are_ignored() {
        // Root `/`, or a process in another mount namespace: as they are.
        assert_eq!(
            relative(b"/usr/lib/x", b"/", true),
            Some(&b"/usr/lib/x"[..])
        );
        assert_eq!(
            relative(b"/usr/lib/x", b"/srv/h1", false),
            Some(&b"/usr/lib/x"[..])
        );
        // A chroot in this namespace: the root's path is stripped; a file outside the
        // root (or beside it, with a longer name) is not the root's.
        assert_eq!(
            relative(b"/srv/h1/usr/lib/x", b"/srv/h1", true),
            Some(&b"/usr/lib/x"[..])
        );
        assert_eq!(relative(b"/usr/lib/x", b"/srv/h1", true), None);
        // Chrooted in a namespace of its own: the same.
        assert_eq!(
            relative(b"/srv/h1/usr/lib/x", b"/srv/h1", false),
            Some(&b"/usr/lib/x"[..])
        );
        assert_eq!(relative(b"/srv/h10/usr/lib/x", b"/srv/h1", true), None);
        for p in [
            &b"/tmp/x"[..],
            b"/tmp",
            b"/var/tmp/a/b",
            b"/run/x",
            b"/dev/shm/y",
            b"/memfd:wayland",
            b"/SYSV00000000",
        ] {
            assert!(is_ignored(p, IGNORED), "{}", String::from_utf8_lossy(p));
        }
        for p in [
            &b"/usr/lib/x"[..],
            b"/tmpfoo",
            b"/running",
            b"/var/lib/tmp/x",
        ] {
            assert!(!is_ignored(p, IGNORED), "{}", String::from_utf8_lossy(p));
        }
    }

    /// Kills its child however the test ends.
    struct Running(Child);

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_process_whose_executable_was_replaced_is_listed_and_an_unchanged_one_is_not() {
        // Beside the test binary, not in the usual scratch places the listing ignores;
        // if the build itself lies under one of them (a checkout in /tmp), that prefix
        // alone is not ignored here: everything else about the listing is as in use.
        let exe = std::env::current_exe().unwrap();
        let t = tempfile::Builder::new()
            .prefix("stale-test")
            .tempdir_in(exe.parent().unwrap())
            .unwrap();
        let dir = fsx::canonicalize(t.path()).unwrap();
        let ignored: Vec<&[u8]> = IGNORED
            .iter()
            .copied()
            .filter(|p| !is_ignored(fsx::path_bytes(&dir), &[p]))
            .collect();
        let (old, same) = (dir.join("old-sleep"), dir.join("same-sleep"));
        let sleep = std::fs::read("/bin/sleep").unwrap();
        for p in [&old, &same] {
            std::fs::write(p, &sleep).unwrap();
            fsx::set_mode(p, 0o755).unwrap();
        }
        // `spawn` returns once the exec succeeded: the process maps the file by then.
        let a = Running(Command::new(&old).arg("1000000").spawn().unwrap());
        let b = Running(Command::new(&same).arg("1000000").spawn().unwrap());
        let before = list_with(Path::new("/"), &ignored);
        let pids = |l: &[StaleUnit]| -> Vec<u32> {
            l.iter()
                .flat_map(|u| u.processes.iter().map(|p| p.pid))
                .collect()
        };
        assert!(!pids(&before).contains(&a.0.id()), "{before:?}");

        // Replaced the way a commit replaces a file: a new one renamed over it.
        let new = dir.join("new-sleep");
        let mut changed = sleep.clone();
        changed.push(0);
        std::fs::write(&new, &changed).unwrap();
        std::fs::rename(&new, &old).unwrap();
        let after = list_with(Path::new("/"), &ignored);
        let unit = after
            .iter()
            .find(|u| u.processes.iter().any(|p| p.pid == a.0.id()))
            .unwrap_or_else(|| panic!("pid {} is not listed: {after:?}", a.0.id()));
        let p = unit.processes.iter().find(|p| p.pid == a.0.id()).unwrap();
        assert_eq!(p.comm, "old-sleep");
        assert!(!unit.unit.is_empty());
        assert!(
            unit.files.contains(&fsx::path_bytes(&old).to_vec()),
            "{unit:?}"
        );
        assert!(!pids(&after).contains(&b.0.id()), "{after:?}");

        // Removed without a replacement: no longer listed (nothing to restart into).
        std::fs::remove_file(&old).unwrap();
        let gone = list_with(Path::new("/"), &ignored);
        assert!(!pids(&gone).contains(&a.0.id()), "{gone:?}");
        drop((a, b));
    }
}
