//! The build chroot: mmdebstrap installs the locked packages from the flat repository
//! with no network; overlays are copied in; hooks run inside with no network, their own
//! PID/UTS/IPC/mount namespaces and a policy-rc.d that keeps services from starting.

use super::manifest::{Hook, Manifest, Overlay};
use crate::error::{Error, IoContext, Result};
use crate::fsx;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A command's environment: nothing of the caller's, only what makes runs repeatable.
fn clean_env(c: &mut Command, epoch: i64) {
    c.env_clear()
        .env("PATH", PATH)
        .env("HOME", "/root")
        .env("LC_ALL", "C.UTF-8")
        .env("TZ", "UTC")
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env("DEBIAN_FRONTEND", "noninteractive");
}

/// Runs `c` with its output appended to `log`; on failure, or after `timeout`, the
/// error carries the last lines of that output.
fn run_logged(mut c: Command, what: &str, log: &Path, timeout: Option<Duration>) -> Result<()> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .ctx("open", log)?;
    let start = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
    let err = out.try_clone().ctx("open", log)?;
    // Its own process group, so a timeout can kill everything it started.
    c.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let mut child = c.spawn().map_err(|e| Error::io("run", what, e))?;
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child
            .try_wait()
            .map_err(|e| Error::io("wait for", what, e))?
        {
            break Some(s);
        }
        if timeout.is_some_and(|t| t0.elapsed() > t) {
            let pgid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let ok = status.is_some_and(|s| s.success());
    if ok {
        return Ok(());
    }
    let text = std::fs::read(log).unwrap_or_default();
    let tail: Vec<&str> = std::str::from_utf8(&text[(start as usize).min(text.len())..])
        .unwrap_or("")
        .lines()
        .collect();
    let shown = tail[tail.len().saturating_sub(40)..].join("\n");
    let how = match status {
        None => format!("timed out after {} s", timeout.map_or(0, |t| t.as_secs())),
        Some(s) => format!("failed ({s})"),
    };
    Err(Error::Usage(format!(
        "{what} {how}; its last output (all of it in {}):\n{shown}",
        log.display()
    )))
}

/// Populates `root` (absent) with the locked package set from `repo`.
pub fn install(
    root: &Path,
    repo: &Path,
    m: &Manifest,
    names: &[String],
    epoch: i64,
    log: &Path,
) -> Result<()> {
    let (exclude, keep) = m.strip.filters();
    let mut c = Command::new("unshare");
    // A network namespace of its own: the repository is a local directory, and no
    // maintainer script may reach out. A mount namespace: what mmdebstrap mounts in the
    // chroot (/proc, /sys) goes away with it, even if it is killed.
    c.args([
        "--net",
        "--mount",
        "--propagation",
        "private",
        "--",
        "mmdebstrap",
        "--mode=root",
        "--format=directory",
        "--verbose",
    ]);
    c.arg(format!("--variant={}", m.source.variant.as_str()));
    c.arg(format!("--architectures={}", m.source.architecture));
    c.arg(format!("--include={}", names.join(",")));
    for g in &exclude {
        c.arg(format!("--dpkgopt=path-exclude={g}"));
    }
    for g in &keep {
        c.arg(format!("--dpkgopt=path-include={g}"));
    }
    // apt inside the chroot reads the repository through a bind mount (in our mount
    // namespace) that mmdebstrap's own hook sets up and removes.
    c.arg("--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount");
    // The priority and Essential sets come from the repository, which has no suite name.
    c.arg("")
        .arg(root)
        .arg(format!("deb [trusted=yes] file://{} ./", repo.display()));
    clean_env(&mut c, epoch);
    run_logged(c, "mmdebstrap", log, None)
}

/// Opens a directory of the image, resolving symlinks as the image would (inside it).
fn open_in_root(root: &OwnedFd, path: &str, shown: &Path) -> Result<OwnedFd> {
    let rel = path.trim_start_matches('/');
    rustix::fs::openat2(
        root,
        if rel.is_empty() { "." } else { rel },
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ctx("open directory", shown)
}

/// Copies the manifest's overlays into the image, in order, with their owners and modes.
pub fn apply_overlays(root: &Path, overlays: &[Overlay]) -> Result<usize> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx("open", root)?;
    let mut n = 0;
    for o in overlays {
        let meta = std::fs::symlink_metadata(&o.src).ctx("inspect overlay", &o.src)?;
        if meta.is_dir() {
            for e in walkdir::WalkDir::new(&o.src).sort_by_file_name() {
                let e = e.map_err(|e| Error::Usage(format!("overlay {}: {e}", o.src.display())))?;
                let rel = e.path().strip_prefix(&o.src).unwrap_or(Path::new(""));
                let dest = if rel.as_os_str().is_empty() {
                    o.dest.clone()
                } else {
                    format!("{}/{}", o.dest, rel.display())
                };
                place(&root_fd, root, e.path(), &dest, o)?;
                n += 1;
            }
        } else {
            place(&root_fd, root, &o.src, &o.dest, o)?;
            n += 1;
        }
    }
    Ok(n)
}

fn place(root_fd: &OwnedFd, root: &Path, src: &Path, dest: &str, o: &Overlay) -> Result<()> {
    let shown = fsx::under(root, dest.as_bytes());
    let (parent, name) = dest.rsplit_once('/').unwrap_or(("", dest));
    if name.is_empty() {
        return Err(Error::Usage(format!(
            "overlay {}: cannot replace the image's root",
            src.display()
        )));
    }
    mkdirs(root_fd, root, parent, o.dir_mode)?;
    let dir = open_in_root(root_fd, parent, &shown)?;
    let meta = std::fs::symlink_metadata(src).ctx("inspect overlay", src)?;
    let tmp = format!(".{name}.imager-overlay");
    let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), rustix::fs::AtFlags::empty());
    if meta.is_dir() {
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(o.dir_mode)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(Error::io("create directory", &shown, e.into())),
        }
        let d = rustix::fs::openat(
            &dir,
            name,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY,
            Mode::empty(),
        )
        .ctx("open directory", &shown)?;
        rustix::fs::fchown(&d, Some(uid(o.owner)), Some(gid(o.group)))
            .ctx("set owner of", &shown)?;
        rustix::fs::fchmod(&d, Mode::from_raw_mode(o.dir_mode)).ctx("set mode of", &shown)?;
        return Ok(());
    }
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(src).ctx("read link", src)?;
        rustix::fs::symlinkat(&target, &dir, tmp.as_str()).ctx("create symlink", &shown)?;
        rustix::fs::chownat(
            &dir,
            tmp.as_str(),
            Some(uid(o.owner)),
            Some(gid(o.group)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .ctx("set owner of", &shown)?;
    } else if meta.is_file() {
        let data = fsx::read(src)?;
        let mode = o.mode.unwrap_or(meta.mode() & 0o7777);
        let f = rustix::fs::openat(
            &dir,
            tmp.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .ctx("create", &shown)?;
        let mut file = std::fs::File::from(f);
        file.write_all(&data).ctx("write", &shown)?;
        rustix::fs::fchown(&file, Some(uid(o.owner)), Some(gid(o.group)))
            .ctx("set owner of", &shown)?;
        // After chown, which clears setuid/setgid bits.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .ctx("set mode of", &shown)?;
    } else {
        return Err(Error::Usage(format!(
            "overlay {}: only files, directories and symlinks can be copied in",
            src.display()
        )));
    }
    // Replaces whatever is there (a symlink included: it is replaced, not followed).
    rustix::fs::renameat(&dir, tmp.as_str(), &dir, name).ctx("rename into place", &shown)?;
    Ok(())
}

fn uid(n: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(n)
}
fn gid(n: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(n)
}

/// Creates the missing directories of `path` inside the image.
fn mkdirs(root_fd: &OwnedFd, root: &Path, path: &str, mode: u32) -> Result<()> {
    let mut cur = String::new();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        let parent = open_in_root(root_fd, &cur, &fsx::under(root, cur.as_bytes()))?;
        cur = format!("{cur}/{c}");
        match rustix::fs::mkdirat(&parent, c, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => {
                return Err(Error::io(
                    "create directory",
                    fsx::under(root, cur.as_bytes()),
                    e.into(),
                ))
            }
        }
    }
    Ok(())
}

const POLICY_RC_D: &str = "usr/sbin/policy-rc.d";

/// Runs the hooks in order inside the image.
pub fn run_hooks(
    root: &Path,
    hooks: &[Hook],
    epoch: i64,
    log: &Path,
    manifest: &Path,
) -> Result<()> {
    if hooks.is_empty() {
        return Ok(());
    }
    let policy = root.join(POLICY_RC_D);
    let had_policy = policy.exists();
    if !had_policy {
        std::fs::write(
            &policy,
            "#!/bin/sh\n# written by imager for the build: no service starts\nexit 101\n",
        )
        .ctx("write", &policy)?;
        std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o755))
            .ctx("set mode of", &policy)?;
    }
    let r = hooks.iter().try_for_each(|h| {
        let mut c = Command::new("unshare");
        c.args([
            "--net",
            "--uts",
            "--ipc",
            "--pid",
            "--fork",
            "--mount",
            "--propagation",
            "private",
            "--",
        ]);
        c.args([
            "/bin/sh",
            "-c",
            "mount -t proc proc \"$1/proc\" && exec chroot \"$1\" /bin/sh -c \"$2\"",
            "hook",
        ]);
        c.arg(root).arg(&h.run);
        clean_env(&mut c, epoch);
        c.env("IMAGER_HOOK", &h.name);
        let _ = writeln!(
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(log)
                .ctx("open", log)?,
            "--- hook {}: {}",
            h.name,
            h.run
        );
        run_logged(
            c,
            &format!("hook {:?} of {}", h.name, manifest.display()),
            log,
            Some(Duration::from_secs(h.timeout)),
        )
    });
    if !had_policy {
        let _ = std::fs::remove_file(&policy);
    }
    r
}
