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

/// Issue 27's one vocabulary across imager and syncer: `--store` and `-q` are global
/// options (before or after the subcommand), `drift`, `--rehash` and `--policy` took the
/// names imager uses for something else or spells otherwise, and the old spellings
/// (`diff`, `--verify`, `--require-signed`) still run and do what the new ones do; the
/// help shows no `--verify` (imager's signature check) nor `--require-signed`.
#[test]
fn old_spellings_still_work_and_shared_options_go_before_or_after_the_command() {
    let t = scratch("vocabulary-");
    let store = t.path().join("store");
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/app.conf"), "version 1\n").unwrap();
    import(&store, &src, "web");
    std::fs::create_dir(t.path().join("host")).unwrap();
    let host = format!("local:{}", t.path().join("host").display());
    let st = store.to_str().unwrap();
    // No $IMAGER_STORE: only the option says where the store is.
    let syncer = |args: &[&str]| {
        syncer()
            .env_remove("IMAGER_STORE")
            .args(args)
            .output()
            .unwrap()
    };

    let out = syncer(&["-q", "push", "web", &host, "--store", st, "--json"]);
    assert!(out.status.success(), "{out:?}");
    // Nothing but a wait for the store's lock, which -q still tells (a warning): this
    // process's import held it for writing, and a child another test forked meanwhile
    // keeps that lock until its exec, which on a loaded machine can outlast the import.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.lines()
            .all(|l| l.starts_with("syncer: waiting for the store's lock (")),
        "-q: {out:?}"
    );
    let out = syncer(&["--store", st, "push", "web", &host, "--quiet"]);
    assert!(out.status.success(), "{out:?}");
    std::fs::write(t.path().join("host/etc/app.conf"), "version 2\n").unwrap();

    // Each pair: the new spelling, then the old one; the same outcome and output.
    let pairs: [(&[&str], &[&str]); 3] = [
        (
            &["--store", st, "drift", &host, "--json"],
            &["diff", &host, "--json", "--store", st],
        ),
        (
            &["status", &host, "--rehash", "--json", "--store", st],
            &["--store", st, "status", &host, "--verify", "--json"],
        ),
        (
            &[
                "push",
                "web",
                &host,
                "--store",
                st,
                "--policy",
                "/nonexistent.toml",
            ],
            &[
                "push",
                "web",
                &host,
                "--store",
                st,
                "--require-signed",
                "/nonexistent.toml",
            ],
        ),
    ];
    for (new, old) in pairs {
        let (n, o) = (syncer(new), syncer(old));
        assert_eq!(
            n.status.code(),
            o.status.code(),
            "{new:?}: {n:?}\n{old:?}: {o:?}"
        );
        assert_eq!(n.stdout, o.stdout, "{new:?} and {old:?}");
        assert_eq!(n.stderr, o.stderr, "{new:?} and {old:?}");
    }
    let drift = json(&String::from_utf8_lossy(&syncer(pairs[0].0).stdout));
    assert_eq!(drift["drifted"], true, "{drift:#}");
    assert!(
        syncer(pairs[2].0).status.code() == Some(1),
        "a policy that cannot be read refuses the push"
    );

    for cmd in [
        "push",
        "status",
        "rollout",
        "rollback",
        "abandon-commit",
        "drift",
        "publish",
    ] {
        let help = String::from_utf8(syncer(&[cmd, "--help"]).stdout).unwrap();
        assert!(
            help.contains("--store <DIR>") && help.contains("-q, --quiet"),
            "{cmd}: {help}"
        );
        assert!(
            !help.contains("--verify") && !help.contains("--require-signed"),
            "{cmd}: {help}"
        );
    }
    let help = String::from_utf8(syncer(&["--help"]).stdout).unwrap();
    assert!(
        help.contains("drift") && help.contains("[alias: diff]"),
        "{help}"
    );
}
