//! A real Debian root filesystem, built twice with mmdebstrap at different times: the raw
//! trees differ (mtimes of everything the build touched), the normalised images are the
//! same. SSH host keys are random per build and left out (the build removes them, a later
//! issue). Needs root and the Debian archive, as CI has; about two minutes.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;
use common::{s, Env};
use std::process::Command;

const EPOCH: &str = "1700000000";

fn mmdebstrap(dest: &std::path::Path) {
    let out = Command::new("mmdebstrap")
        .args([
            "--quiet",
            "--variant=minbase",
            "--mode=root",
            "--include=openssh-server,python3-yaml,man-db,gzip",
            "bookworm",
        ])
        .arg(dest)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .expect("mmdebstrap is installed (see the README's set-up)");
    assert!(
        out.status.success(),
        "mmdebstrap failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn two_debian_builds_at_different_times_normalise_to_one_image() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    mmdebstrap(&a);
    std::thread::sleep(std::time::Duration::from_secs(2));
    mmdebstrap(&b);
    let keys = ["--exclude", "/etc/ssh/ssh_host_*"];
    let raw_a = env.id(&[&["import", s(&a)][..], &keys].concat());
    let raw_b = env.id(&[&["import", s(&b)][..], &keys].concat());
    assert_ne!(
        raw_a, raw_b,
        "builds at different times should differ before normalisation"
    );
    let norm = ["--normalize", "--epoch", EPOCH];
    let id_a = env.id(&[&["import", s(&a), "--name", "deb"][..], &norm, &keys].concat());
    let id_b = env.id(&[&["import", s(&b), "--name", "deb"][..], &norm, &keys].concat());
    if id_a != id_b {
        let diff = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "diff <(imager --store {st} show deb~1 --manifest) <(imager --store {st} show deb --manifest) | head -40",
                st = s(&env.store())
            ))
            .env("PATH", format!("{}:{}", std::path::Path::new(env!("CARGO_BIN_EXE_imager")).parent().unwrap().display(), std::env::var("PATH").unwrap_or_default()))
            .output()
            .unwrap();
        panic!(
            "normalised builds differ:\n{}",
            String::from_utf8_lossy(&diff.stdout)
        );
    }
    // The image exports to a tar.zst that imports to the same ID, and it has what a
    // Debian system needs.
    env.ok(&["export", "deb", "--tar", s(&env.path("deb.tar.zst"))]);
    assert_eq!(env.id(&["import", s(&env.path("deb.tar.zst"))]), id_a);
    let ls = env.ok(&["ls", "deb", "/usr/bin"]);
    assert!(
        ls.contains("/usr/bin/ssh file") && ls.contains("/usr/bin/python3"),
        "{ls}"
    );
    assert!(env
        .ok(&["ls", "deb", "/dev"])
        .contains("/dev/null char mode=0666"));
}
