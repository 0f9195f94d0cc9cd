//! A booted machine for tests: an image's root started with `systemd-nspawn --boot`
//! (systemd as PID 1, its own network namespace), waited for until systemd says the boot
//! is over, reached through its namespaces, and powered off when dropped, a failing
//! test included. Shared by the imager's and the syncer's tests (`#[path]`-included).
//!
//! nspawn runs with `--register=no --keep-unit`: test machines need no systemd on the
//! host (CI containers have none). [`Machine::boot`] mounts the root
//! `--volatile=overlay`, so the image's directory stays as exported and every boot is a
//! first boot; [`Machine::boot_installed`] keeps what the boot writes, as a disk does.
//!
//! Each machine gets cgroups of its own (one per hierarchy systemd uses) before nspawn
//! starts: with `--keep-unit` a container takes the cgroup it was started in, and two
//! machines started from one test process would share it, each systemd creating and
//! removing the other's `/system.slice/...` (units then fail "to attach to cgroup").
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub struct Machine {
    pub name: String,
    /// The machine's address on its veth link, for machines booted [`Machine::networked`].
    pub addr: Option<String>,
    child: Child,
    /// The container's PID 1 (systemd), as the host sees it.
    pub leader: u32,
    log: PathBuf,
    cgroups: Vec<PathBuf>,
}

/// The program `what` is on PATH, or the test fails saying which package provides it.
pub fn require(what: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(what).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{what} is not installed: apt-get install {package} (the README's set-up does)"
    );
}

impl Machine {
    /// Boots `root` as machine `name` (a short name: it is also the hostname) on a
    /// volatile overlay (`root` stays as it is); `log` receives the console.
    pub fn boot(root: &Path, name: &str, log: &Path) -> Machine {
        Machine::start(root, name, log, true, false)
    }

    /// Boots `root` as an installed machine does: what the boot writes stays in `root`.
    pub fn boot_installed(root: &Path, name: &str, log: &Path) -> Machine {
        Machine::start(root, name, log, false, false)
    }

    /// Boots `root` as an installed machine reachable from the host: a veth pair
    /// (`--network-veth`), the host side 10.231.N.1/24 and the machine 10.231.N.2
    /// ([`Machine::addr`]), N one per machine this process starts.
    pub fn networked(root: &Path, name: &str, log: &Path) -> Machine {
        Machine::start(root, name, log, false, true)
    }

    fn start(root: &Path, name: &str, log: &Path, volatile: bool, veth: bool) -> Machine {
        require("systemd-nspawn", "systemd-container");
        let out = std::fs::File::create(log).unwrap();
        let cgroups = own_cgroups(name);
        let dirs: Vec<String> = cgroups.iter().map(|d| d.display().to_string()).collect();
        // The shell moves itself into the machine's cgroups, then becomes nspawn.
        let mut c = Command::new("/bin/sh");
        c.arg("-c")
            .arg(r#"IFS=:; for d in $MACHINE_CGROUPS; do echo $$ > "$d/cgroup.procs" || exit 1; done; exec systemd-nspawn "$@""#)
            .arg("sh")
            .env("MACHINE_CGROUPS", dirs.join(":"));
        c.args(["--boot", "--quiet", "--register=no", "--keep-unit"]);
        c.arg(if veth {
            "--network-veth"
        } else {
            "--private-network"
        });
        // The image's own /etc/resolv.conf (what its first boot made), never the host's:
        // with a private network nspawn's default (auto) already leaves it alone; said
        // here so that tests of the image can rely on it.
        c.arg("--resolv-conf=off");
        if volatile {
            c.arg("--volatile=overlay");
        }
        let child = c
            .arg(format!("--machine={name}"))
            .arg("-D")
            .arg(root)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut m = Machine {
            name: name.to_string(),
            addr: None,
            leader: 0,
            child,
            log: log.to_path_buf(),
            cgroups,
        };
        m.leader = m.wait_for_leader();
        if veth {
            m.addr = Some(m.link_up());
        }
        m
    }

    /// Addresses both ends of the machine's veth pair; returns the machine's address.
    fn link_up(&self) -> String {
        static SUBNETS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SUBNETS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 250 + 1;
        // nspawn names the host side ve-NAME (names up to 12 characters are kept whole).
        let host_if = format!("ve-{}", self.name);
        assert!(
            host_if.len() <= 15,
            "machine name {} is too long",
            self.name
        );
        let ip = |args: &str, netns: bool| {
            let mut c = if netns {
                let mut c = Command::new("nsenter");
                c.arg(format!("--target={}", self.leader))
                    .args(["--net", "--", "ip"]);
                c
            } else {
                Command::new("ip")
            };
            c.args(args.split_whitespace()).output().unwrap()
        };
        // The pair exists before nspawn starts init; wait for both ends all the same.
        loop {
            if ip(&format!("link show {host_if}"), false).status.success()
                && ip("link show host0", true).status.success()
            {
                break;
            }
            assert!(
                Path::new(&format!("/proc/{}", self.leader)).exists(),
                "{} stopped before its network was up:\n{}",
                self.name,
                self.console()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        for (args, netns) in [
            (format!("addr replace 10.231.{n}.1/24 dev {host_if}"), false),
            (format!("link set {host_if} up"), false),
            (format!("addr replace 10.231.{n}.2/24 dev host0"), true),
            ("link set host0 up".to_string(), true),
        ] {
            let out = ip(&args, netns);
            assert!(
                out.status.success(),
                "ip {args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        format!("10.231.{n}.2")
    }

    /// The container's init: nspawn's child once it has forked it.
    fn wait_for_leader(&mut self) -> u32 {
        let pid = self.child.id();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("systemd-nspawn exited ({st}):\n{}", self.console());
            }
            // nspawn forks once (the outer child), which forks init in the new PID
            // namespace; init is the one whose command is systemd.
            for c in descendants(pid) {
                let comm = std::fs::read_to_string(format!("/proc/{c}/comm")).unwrap_or_default();
                if comm.trim() == "systemd" {
                    return c;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// What the console showed so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `sh -c cmd` inside the machine (all its namespaces), whatever its outcome.
    pub fn run(&self, cmd: &str) -> Output {
        Command::new("nsenter")
            .arg(format!("--target={}", self.leader))
            .args(["--all", "--", "/bin/sh", "-c", cmd])
            .output()
            .unwrap()
    }

    /// Runs `sh -c cmd` inside the machine and requires success; returns its stdout.
    pub fn ok(&self, cmd: &str) -> String {
        let out = self.run(cmd);
        assert!(
            out.status.success(),
            "in {}: {cmd:?} failed ({}):\n{}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a host program in the machine's network namespace only (to reach its
    /// services on its own loopback).
    pub fn in_netns(&self, program: &str, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--target={}", self.leader))
            .args(["--net", "--", program])
            .args(args)
            .output()
            .unwrap()
    }

    /// Waits until systemd has finished booting and returns its verdict ("running",
    /// "degraded", ...): `systemctl is-system-running --wait`, once its bus is up.
    pub fn wait_booted(&self) -> String {
        let private = format!("/proc/{}/root/run/systemd/private", self.leader);
        loop {
            if Path::new(&private).exists() {
                let out = self.run("systemctl is-system-running --wait");
                let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
                // Before the manager answers, systemctl reports it cannot connect.
                if !state.is_empty() && state != "offline" {
                    return state;
                }
            }
            assert!(
                Path::new(&format!("/proc/{}", self.leader)).exists(),
                "{} stopped while booting:\n{}",
                self.name,
                self.console()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Waits for the boot to end and requires it clean (`running`), else fails the test
    /// with the units that failed.
    pub fn assert_running(&self) {
        let state = self.wait_booted();
        assert_eq!(
            state,
            "running",
            "{} booted {state}:\n{}",
            self.name,
            self.failed_units()
        );
    }

    /// The units that failed, for a message when the boot is not clean.
    pub fn failed_units(&self) -> String {
        let out = self.run("systemctl --failed --no-legend --plain; journalctl -b --no-pager -p warning | tail -50");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A new cgroup for machine `name` below this process's own, in the systemd-named
/// hierarchy (cgroup v1 and hybrid) and the unified one (v2 and hybrid).
fn own_cgroups(name: &str) -> Vec<PathBuf> {
    let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let leaf = format!("imager-test-{name}-{}", std::process::id());
    let mut dirs = Vec::new();
    for line in mine.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let mount = if controllers == "name=systemd" {
            PathBuf::from("/sys/fs/cgroup/systemd")
        } else if id == "0" && controllers.is_empty() {
            if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
                PathBuf::from("/sys/fs/cgroup/unified")
            } else if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                PathBuf::from("/sys/fs/cgroup")
            } else {
                continue;
            }
        } else {
            continue;
        };
        let dir = mount.join(path.trim_start_matches('/')).join(&leaf);
        remove_cgroup(&dir);
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", dir.display()));
        dirs.push(dir);
    }
    dirs
}

/// Removes a cgroup and the ones systemd made below it, deepest first (a cgroup is
/// removed with rmdir, once it has no processes and no children).
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Every process below `pid`, children first.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

impl Drop for Machine {
    fn drop(&mut self) {
        // SIGTERM asks nspawn to power the machine off; it exits once systemd has.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let mut stopped = false;
        for _ in 0..600 {
            if let Ok(Some(_)) = self.child.try_wait() {
                stopped = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if !stopped {
            // A machine that does not stop in a minute is killed with its PID namespace.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for d in &self.cgroups {
            remove_cgroup(d);
        }
    }
}
