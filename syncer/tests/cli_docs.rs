//! `syncer completions` and `syncer manpages`: made from the same clap definitions as
//! `--help`, by the real binary.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;

use common::*;
use std::process::Command;

#[test]
fn completions_parse_and_man_pages_carry_the_help_texts() {
    let t = scratch("cli-docs-");
    let out = syncer().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let script = t.path().join("syncer.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(check.status.success(), "bash -n: {check:?}");
    let bash = String::from_utf8_lossy(&out.stdout);
    assert!(
        bash.contains("rollout") && bash.contains("--max-delete"),
        "{bash}"
    );
    for shell in ["zsh", "fish"] {
        let out = syncer().args(["completions", shell]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("publish"),
            "{shell}: {text}"
        );
    }

    let dir = t.path().join("man1");
    let out = syncer()
        .args(["manpages", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for page in [
        "syncer.1",
        "syncer-push.1",
        "syncer-rollout.1",
        "syncer-cache-verify.1",
    ] {
        assert!(dir.join(page).is_file(), "no {page}");
    }
    let push = std::fs::read_to_string(dir.join("syncer-push.1")).unwrap();
    // The option's help text and the examples, as lines to copy (dashes escaped).
    assert!(push.contains("max\\-delete"), "{push}");
    assert!(
        push.contains(".SH EXAMPLES") && push.contains("syncer push web ssh://root@web1"),
        "{push}"
    );
}
