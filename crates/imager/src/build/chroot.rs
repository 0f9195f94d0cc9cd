//! The build chroot: mmdebstrap installs the locked packages from the flat repository
//! with no network; overlays are copied in; hooks run inside with no network, their own
//! PID/UTS/IPC/mount namespaces and a policy-rc.d that keeps services from starting.

use super::recipe::{Hook, HookPhase, Overlay, Recipe};
use crate::error::{Error, IoContext, Result};
use crate::fsx;
use crate::safe_dir::Beneath;
use rustix::fs::{AtFlags, Mode, OFlags};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(super) const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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

/// The build log, opened to append to.
fn open_log(log: &Path) -> Result<std::fs::File> {
    fsx::open_with(
        std::fs::OpenOptions::new().create(true).append(true),
        log,
        "open",
    )
}

/// Runs `c` with its output appended to `log`; on failure, or after `timeout`, the
/// error carries the last lines of that output.
fn run_logged(mut c: Command, what: &str, log: &Path, timeout: Option<Duration>) -> Result<()> {
    let out = open_log(log)?;
    let start = fsx::metadata(log).map(|m| m.len()).unwrap_or(0);
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
    let text = fsx::read(log).unwrap_or_default();
    let tail: Vec<&str> = std::str::from_utf8(&text[(start as usize).min(text.len())..])
        .unwrap_or("")
        .lines()
        .collect();
    let shown = tail[tail.len().saturating_sub(40)..].join("\n");
    let how = match status {
        None => format!("timed out after {} s", timeout.map_or(0, |t| t.as_secs())),
        Some(s) => format!("failed ({s})"),
    };
    // Not the log's path: the work directory goes unless --keep-failed keeps it.
    Err(Error::Command {
        program: what.into(),
        detail: format!("{how}; its last output:\n{shown}"),
    })
}

/// mmdebstrap's options for installing `names` under the manifest's variant, strip
/// rules and mmdebstrap-phase hooks: everything of its command line but the suite, the
/// root and the repository, which name this build's work directory. What they install
/// from the locked .debs depends on these alone (with the tools' versions), which makes
/// them part of the install cache's key.
pub fn mmdebstrap_args(m: &Recipe, names: &[String], epoch: i64) -> Vec<String> {
    let (exclude, keep) = m.strip.filters();
    let mut a: Vec<String> = ["--mode=root", "--format=directory", "--verbose"]
        .map(String::from)
        .to_vec();
    a.push(format!("--variant={}", m.source.variant.as_str()));
    a.push(format!("--architectures={}", m.source.architecture));
    a.push(format!("--include={}", names.join(",")));
    a.extend(
        exclude
            .iter()
            .map(|g| format!("--dpkgopt=path-exclude={g}")),
    );
    a.extend(keep.iter().map(|g| format!("--dpkgopt=path-include={g}")));
    // apt inside the chroot reads the repository through a bind mount (in our mount
    // namespace) that mmdebstrap's own hook sets up and removes.
    a.push("--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount".into());
    // The manifest's hooks of mmdebstrap's phases, under the rules of run_hooks.
    a.extend(super::phases::mmdebstrap_args(&m.hooks, epoch));
    a
}

/// Populates `root` (absent) from `repo` with mmdebstrap run with `args`
/// ([`mmdebstrap_args`]).
pub fn install(
    root: &Path,
    repo: &Path,
    m: &Recipe,
    args: &[String],
    epoch: i64,
    log: &Path,
) -> Result<()> {
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
    ]);
    c.args(args);
    // The priority and Essential sets come from the repository, which has no suite name.
    c.arg("")
        .arg(root)
        .arg(format!("deb [trusted=yes] file://{} ./", repo.display()));
    clean_env(&mut c, epoch);
    run_logged(c, "mmdebstrap", log, None)
        .map_err(|e| super::phases::name_failed_hook(e, &m.hooks, &m.files[0]))?;
    remove_mount_point(root, repo)
}

/// Removes the directories mmdebstrap's file-mirror hook made in the chroot to mount the
/// repository on (it unmounts, but leaves `<store>/build/<work>/repo` and its parents):
/// they would put the store's path and the work directory's unique name into the image.
/// From the deepest up, each goes while it is empty and no package owns it.
fn remove_mount_point(root: &Path, repo: &Path) -> Result<()> {
    let owned = owned_paths(root)?;
    let mut p = Some(repo);
    while let Some(dir) = p.filter(|d| d.parent().is_some()) {
        let rel = dir.strip_prefix("/").unwrap_or(dir);
        if owned.contains(fsx::path_bytes(dir)) {
            break;
        }
        // Not empty (the chroot's own /var, /srv, ...) or never made: done.
        if fsx::remove_dir(root.join(rel)).is_err() {
            break;
        }
        p = dir.parent();
    }
    Ok(())
}

/// Every path some installed package lists (dpkg's `info/*.list` files).
fn owned_paths(root: &Path) -> Result<std::collections::HashSet<Vec<u8>>> {
    let info = root.join("var/lib/dpkg/info");
    let mut owned = std::collections::HashSet::new();
    for e in fsx::read_dir(&info)? {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "list") {
            for l in fsx::read(&path)?.split(|&b| b == b'\n') {
                owned.insert(l.to_vec());
            }
        }
    }
    Ok(owned)
}

/// Copies the manifest's overlays into the image, in order, with their owners and modes.
pub fn apply_overlays(root: &Path, overlays: &[Overlay]) -> Result<usize> {
    let b = Beneath::in_root(root)?;
    let mut n = 0;
    for o in overlays {
        let meta = fsx::symlink_metadata(&o.src).map_err(|e| e.doing("inspect overlay"))?;
        let walk = walkdir::WalkDir::new(&o.src).sort_by_file_name();
        // A directory brings everything below it; anything else is the one entry.
        let walk = if meta.is_dir() {
            walk
        } else {
            walk.max_depth(0)
        };
        for e in walk {
            let e = e.map_err(|e| Error::Build(format!("overlay {}: {e}", o.src.display())))?;
            let mut dest = o.dest.as_bytes().to_vec();
            let rel = e.path().strip_prefix(&o.src).unwrap_or(Path::new(""));
            if !rel.as_os_str().is_empty() {
                dest.push(b'/');
                dest.extend_from_slice(fsx::path_bytes(rel));
            }
            place(&b, e.path(), &dest, o)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Puts one overlay entry at `dest`: staged under a temporary name in its directory,
/// then renamed over whatever is there (a symlink is replaced, not followed).
fn place(b: &Beneath, src: &Path, dest: &[u8], o: &Overlay) -> Result<()> {
    let shown = b.display(dest);
    let parent = crate::tree::parent(dest).ok_or_else(|| {
        Error::Build(format!(
            "overlay {}: cannot replace the image's root",
            src.display()
        ))
    })?;
    mkdirs(b, parent, o.dir_mode)?;
    let (dir, name) = b.parent(dest)?;
    let meta = fsx::symlink_metadata(src).map_err(|e| e.doing("inspect overlay"))?;
    if meta.is_dir() {
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(o.dir_mode)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(Error::io("create directory", &shown, e.into())),
        }
        let d = b.open_dir(dest)?;
        fsx::fchown(&d, o.owner, o.group, &shown)?;
        return rustix::fs::fchmod(&d, Mode::from_raw_mode(o.dir_mode)).ctx("set mode of", &shown);
    }
    let mut tmp = b".imager-overlay.".to_vec();
    tmp.extend_from_slice(name);
    let tmp = tmp.as_slice();
    let _ = rustix::fs::unlinkat(&dir, tmp, AtFlags::empty());
    if meta.file_type().is_symlink() {
        let target = fsx::read_link(src).map_err(|e| e.doing("read link"))?;
        rustix::fs::symlinkat(&target, &dir, tmp).ctx("create symlink", &shown)?;
        rustix::fs::chownat(
            &dir,
            tmp,
            Some(rustix::fs::Uid::from_raw(o.owner)),
            Some(rustix::fs::Gid::from_raw(o.group)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .ctx("set owner of", &shown)?;
    } else if meta.is_file() {
        let f = rustix::fs::openat(
            &dir,
            tmp,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .ctx("create", &shown)?;
        let mut file = std::fs::File::from(f);
        std::io::copy(&mut fsx::open(src)?, &mut file).ctx("write", &shown)?;
        fsx::fchown(&file, o.owner, o.group, &shown)?;
        // After chown, which clears setuid/setgid bits.
        // Without a `mode`, what git keeps of a checkout's modes: executable or not. The
        // rest (group write, a 0600 file) depends on who checked it out and their umask.
        let mode = o.mode.unwrap_or(if meta.mode() & 0o100 != 0 {
            0o755
        } else {
            0o644
        });
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode)).ctx("set mode of", &shown)?;
    } else {
        return Err(Error::Build(format!(
            "overlay {}: only files, directories and symlinks can be copied in",
            src.display()
        )));
    }
    rustix::fs::renameat(&dir, tmp, &dir, name).ctx("rename into place", &shown)
}

/// Creates the missing directories of `path` inside the image.
fn mkdirs(b: &Beneath, path: &[u8], mode: u32) -> Result<()> {
    let mut cur = Vec::new();
    for c in path.split(|&x| x == b'/').filter(|c| !c.is_empty()) {
        let parent = b.open_dir(if cur.is_empty() { b"/" } else { &cur })?;
        cur.push(b'/');
        cur.extend_from_slice(c);
        match rustix::fs::mkdirat(&parent, c, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(Error::io("create directory", b.display(&cur), e.into())),
        }
    }
    Ok(())
}

pub(super) const POLICY_RC_D: &str = "usr/sbin/policy-rc.d";

/// Runs the hooks of the `final` phase (after the overlays) in order inside the image.
pub fn run_hooks(
    root: &Path,
    hooks: &[Hook],
    epoch: i64,
    log: &Path,
    manifest: &Path,
) -> Result<()> {
    // (The others ran at their phases of mmdebstrap's: `phases`.)
    let hooks: Vec<&Hook> = hooks
        .iter()
        .filter(|h| h.phase == HookPhase::Final)
        .collect();
    if hooks.is_empty() {
        return Ok(());
    }
    let policy = root.join(POLICY_RC_D);
    let had_policy = fsx::exists(&policy)?;
    if !had_policy {
        fsx::write(
            &policy,
            "#!/bin/sh\n# written by imager for the build: no service starts\nexit 101\n",
        )?;
        fsx::set_mode(&policy, 0o755)?;
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
        let _ = writeln!(open_log(log)?, "--- hook {}: {}", h.name, h.run);
        run_logged(
            c,
            &format!("hook {:?} of {}", h.name, manifest.display()),
            log,
            Some(Duration::from_secs(h.timeout)),
        )
    });
    if !had_policy {
        let _ = fsx::remove_file(&policy);
    }
    r
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests set up and read files directly
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A root holding only a shell and `sleep` with the libraries they load: enough to
    /// run hooks in, without building an image.
    fn tiny_root(dir: &Path) {
        for d in ["proc", "usr/sbin", "tmp"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::os::unix::fs::symlink("usr/bin", dir.join("bin")).unwrap();
        for prog in ["/bin/sh", "/bin/sleep"] {
            let real = std::fs::canonicalize(prog).unwrap();
            let ldd = Command::new("ldd").arg(&real).output().unwrap();
            let libs: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
                .split_whitespace()
                .filter(|w| w.starts_with('/'))
                .map(String::from)
                .collect();
            let name = Path::new(prog).file_name().unwrap();
            let files = libs.iter().map(PathBuf::from).chain([real.clone()]);
            for f in files {
                let dest = if f == real {
                    dir.join("usr/bin").join(name)
                } else {
                    dir.join(f.strip_prefix("/").unwrap())
                };
                std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                std::fs::copy(&f, &dest).unwrap();
            }
        }
    }

    fn hook(name: &str, run: &str, timeout: u64) -> Hook {
        Hook {
            name: name.into(),
            run: run.into(),
            timeout,
            phase: HookPhase::Final,
        }
    }

    #[test]
    fn hooks_run_inside_and_time_out_with_their_output_shown() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        tiny_root(&root);
        let log = d.path().join("log");
        let m = Path::new("m.toml");
        // Inside the root, with the build's environment and no network but loopback.
        run_hooks(
            &root,
            &[hook(
                "ok",
                "echo $SOURCE_DATE_EPOCH $IMAGER_HOOK > /tmp/out; test ! -e /etc/passwd",
                10,
            )],
            42,
            &log,
            m,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("tmp/out")).unwrap(),
            "42 ok\n"
        );
        assert!(!root.join(POLICY_RC_D).exists(), "policy-rc.d left behind");

        let t0 = Instant::now();
        let e = run_hooks(
            &root,
            &[hook("slow", "echo started-sleeping; sleep 3600", 10)],
            0,
            &log,
            m,
        )
        .unwrap_err()
        .to_string();
        assert!(
            t0.elapsed() < Duration::from_secs(1800),
            "the timeout did not kill the hook"
        );
        assert!(
            e.contains("hook \"slow\" of m.toml timed out after 10 s")
                && e.contains("started-sleeping"),
            "{e}"
        );

        let e = run_hooks(
            &root,
            &[hook("bad", "echo said-this >&2; exit 3", 10)],
            0,
            &log,
            m,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("hook \"bad\"") && e.contains("said-this") && e.contains("exit status: 3"),
            "{e}"
        );
    }
}
