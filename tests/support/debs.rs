//! The Debian packages of the binaries a test runs (`packaging/debs.sh`, cargo-deb),
//! built from the test's own debug binaries rather than a release build. Shared by
//! imager's and syncer's tests (`#[path]`), as `nspawn.rs` is.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `packages` (`imager`, `syncer`, `syncer-agent`) into `out` from the binaries
/// beside `bin` (a `CARGO_BIN_EXE_*` path); returns each package's file, in order.
pub fn build(bin: &Path, out: &Path, packages: &[&str]) -> Vec<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("cargo-deb").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "cargo-deb is missing: cargo install cargo-deb --version 3.8.0 --locked (the README's set-up does)"
    );
    // bin is TARGET/debug/NAME; both crates sit one level below the workspace.
    let target = bin
        .parent()
        .and_then(Path::parent)
        .expect("a target directory");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/debs.sh");
    let made = Command::new(&script)
        .args(["--profile", "dev", "--no-build", "-o"])
        .arg(out)
        .args(packages)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("run packaging/debs.sh");
    assert!(
        made.status.success(),
        "debs.sh failed:\n{}{}",
        String::from_utf8_lossy(&made.stdout),
        String::from_utf8_lossy(&made.stderr)
    );
    let version = env!("CARGO_PKG_VERSION");
    packages
        .iter()
        .map(|p| out.join(format!("{p}_{version}-1_amd64.deb")))
        .collect()
}

/// A control field of a package file (`dpkg-deb -f`).
pub fn field(deb: &Path, name: &str) -> String {
    let o = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .arg(name)
        .output()
        .expect("run dpkg-deb");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}
