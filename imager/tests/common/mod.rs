//! Helpers for the imager integration tests: run the real binary against an isolated
//! store, and on failure show the command and everything it printed.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
pub mod sbom;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("imager-test-")
                // Not /tmp: the image's local state covers /tmp/**, which would hide a
                // store path leaking into an image.
                .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
                .expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn store(&self) -> PathBuf {
        self.path("store")
    }

    /// `imager --store <store> --quiet ARGS`, to add to (an environment variable) and run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imager"));
        cmd.arg("--store")
            .arg(self.store())
            .arg("--quiet")
            .args(args)
            .env_remove("SOURCE_DATE_EPOCH");
        cmd
    }

    /// Runs `imager --store <store> --quiet ARGS`, whatever its outcome.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run imager")
    }

    /// Runs imager like [`Env::run`], under a Python parent; returns its output and its
    /// peak RSS in MiB. The parent's getrusage(RUSAGE_CHILDREN) is imager's alone, where
    /// this process's own would take in the children of every test running beside it.
    pub fn run_measured(&self, args: &[&str]) -> (Output, u64) {
        let imager = self.command(args);
        let mut out = Command::new("python3")
            .arg("-c")
            .arg(
                "import resource, subprocess, sys\n\
                 rc = subprocess.run(sys.argv[1:]).returncode\n\
                 peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n\
                 sys.stderr.write('\\npeak-rss-kib %d\\n' % peak)\n\
                 sys.exit(rc if rc >= 0 else 128 - rc)",
            )
            .arg(imager.get_program())
            .args(imager.get_args())
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .expect("run python3");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let (rest, kib) = stderr
            .trim_end()
            .rsplit_once("\npeak-rss-kib ")
            .expect("the peak RSS line");
        out.stderr = rest.as_bytes().to_vec();
        (out, kib.parse::<u64>().expect("peak RSS in KiB") / 1024)
    }

    /// Runs imager and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        if !out.status.success() {
            panic!(
                "imager {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs imager and requires failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "imager {args:?} should have failed; stdout:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The ID printed by `import` / `hash` (first line of stdout).
    pub fn id(&self, args: &[&str]) -> String {
        let out = self.ok(args);
        let id = out.lines().next().unwrap_or_default().trim().to_string();
        assert_eq!(id.len(), 64, "not an ID: {out:?}");
        id
    }
}

pub fn sh(cmd: &str, dir: &Path) -> Output {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Requires `tool` on PATH, naming the package to install when it is not.
pub fn need(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .env(
            "PATH",
            format!(
                "{}:/usr/sbin:/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is missing: apt-get install {package} (see the README's set-up)"
    );
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 test path")
}

/// A small tree with a bit of everything: setuid, a capability, a user xattr, a hard
/// link, a symlink, a device, a fifo, a name with a space and a newline, a long name.
pub fn sample_tree(root: &Path) {
    let long = "l".repeat(150);
    let script = format!(
        "set -e; mkdir -p a/b '{long}'; echo hello > a/f; ln a/f a/hl; ln -s ../f a/b/link; \
         printf x > 'a/sp ace
nl'; mknod a/null c 1 3; mkfifo a/fifo; chmod 4755 a/f; setfattr -n user.test -v val a/f; \
         setcap cap_net_raw+ep a/hl; chown 1000:1001 a/b; echo deep > '{long}/{long}'; \
         ln -s '{long}/{long}' '{long}/link-{long}'; touch -d @1600000000 a/b; touch -h -d @1500000000 a/b/link"
    );
    std::fs::create_dir_all(root).expect("mkdir");
    sh(&script, root);
}

/// Writes a tar crafted by Python's tarfile (which writes what it is told); `mode` is
/// tarfile's (`w`, `w:gz`).
pub fn craft_tar(env: &Env, name: &str, mode: &str, body: &str) -> String {
    let script = format!(
        "import tarfile, io\nt = tarfile.open('{name}', '{mode}', format=tarfile.PAX_FORMAT)\n\
         def add(n, data=b'', **kw):\n    i = tarfile.TarInfo(n)\n    i.size = len(data)\n    [setattr(i, k, v) for k, v in kw.items()]\n    t.addfile(i, io.BytesIO(data) if data else None)\n\
         add('./', type=tarfile.DIRTYPE)\n{body}\nt.close()\n"
    );
    std::fs::write(env.path("craft.py"), script).unwrap();
    sh("python3 craft.py", env.dir.path());
    s(&env.path(name)).to_string()
}
