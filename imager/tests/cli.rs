//! The command line's exit statuses, which scripts depend on: 0 for success (a closed
//! pipe included), 1 for a failure, 2 for a command asked wrongly (as syncer's).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;
#[path = "../../tests/support/debs.rs"]
mod debs;
use common::Env;
use std::io::Read;
use std::process::{Command, Stdio};

#[test]
fn exit_statuses_say_success_failure_or_usage() {
    let env = Env::new();
    let code = |args: &[&str]| env.run(args).status.code();
    assert_eq!(code(&["--help"]), Some(0));
    assert_eq!(code(&["no-such-command"]), Some(2));
    assert_eq!(
        code(&["export", "x"]),
        Some(2),
        "--tar or --dir is required"
    );
    // Failures after parsing exit 1; misuse the library finds after parsing exits 2, as
    // syncer's usage errors do.
    assert_eq!(code(&["ls", "x"]), Some(1), "no store");
    let out = env.run(&["hash", "/nonexistent/dir", "--exclude", "["]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("imager: error: bad exclude pattern"),
        "{err}"
    );

    std::fs::create_dir_all(env.path("tree/etc")).unwrap();
    std::fs::write(env.path("tree/etc/a"), "a").unwrap();
    let tree = env.path("tree");
    env.ok(&["import", tree.to_str().unwrap(), "--name", "t"]);
    let out = env.run(&["fsck"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn a_reader_that_stops_early_is_not_a_failure() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("tree")).unwrap();
    for i in 0..20_000 {
        std::fs::write(env.path(&format!("tree/f{i:05}")), "").unwrap();
    }
    let tree = env.path("tree");
    env.ok(&["import", tree.to_str().unwrap(), "--name", "t"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_imager"))
        .arg("--store")
        .arg(env.store())
        .args(["--quiet", "ls", "t"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line's worth, then close the pipe: imager sees EPIPE on a later write.
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 16];
    stdout.read_exact(&mut buf).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
}

/// A command that must wait for the store's lock says so, and who holds it, then goes
/// on once the holder lets go (here `flock(1)` holding it for writing, as a `syncer
/// publish` or another build would). The test waits for the message and for the end,
/// never for a time.
#[test]
fn a_wait_for_the_store_lock_says_who_holds_it() {
    use std::io::{BufRead, BufReader, Write};
    let env = Env::new();
    let tree = env.path("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/motd"), "hello\n").unwrap();
    assert!(env
        .run(&["import", tree.to_str().unwrap()])
        .status
        .success());

    let lock = env.store().join("lock");
    let mut holder = Command::new("flock")
        .arg("--exclusive")
        .arg(&lock)
        .args(["-c", "echo held; read line"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut held = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut held)
        .unwrap();
    assert_eq!(held, "held\n");

    let mut waiting = env
        .command(&["import", tree.to_str().unwrap(), "--name", "again"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the kernel lists the import as blocked on the lock (`->` in
    // /proc/locks), then let the holder go and read all it said.
    let blocked = format!(" {} ", waiting.id());
    while !std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .any(|l| l.contains("-> FLOCK") && l.contains(&blocked))
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    holder.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert!(holder.wait().unwrap().success());
    let status = waiting.wait().unwrap();
    let mut err = String::new();
    waiting
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    let line = err.lines().next().unwrap_or_default();
    assert!(
        line.starts_with("imager: waiting for the store's lock (")
            && line.contains("to write: pid ")
            && line.contains("holds it for writing (")
            && line.contains("flock --exclusive"),
        "{err}"
    );
    assert!(env.store().join("refs/again").is_file());
}

/// The completion scripts are generated from the command definitions: they must parse and
/// know the commands, so that installing one cannot break a user's shell start-up.
#[test]
fn completion_scripts_parse_and_name_the_commands() {
    let env = Env::new();
    let bash = env.ok(&["completions", "bash"]);
    let script = env.path("imager.bash");
    std::fs::write(&script, &bash).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(check.status.success(), "bash -n: {check:?}");
    assert!(bash.contains("export"), "{bash}");
    for shell in ["zsh", "fish"] {
        let out = env.ok(&["completions", shell]);
        for command in ["export", "try-package", "build-info", "manpages"] {
            assert!(
                out.contains(command),
                "{shell} script without {command}:\n{out}"
            );
        }
    }
    assert_eq!(env.run(&["completions", "tcsh"]).status.code(), Some(2));
}

/// The man pages carry the same option texts as `--help`, and render with the system's
/// man (man-db, or groff where it is missing).
#[test]
fn man_pages_carry_the_help_texts() {
    let env = Env::new();
    let dir = env.path("man/man1");
    env.ok(&["manpages", common::s(&dir)]);
    for page in ["imager.1", "imager-export.1", "imager-key-generate.1"] {
        assert!(dir.join(page).is_file(), "no {page}");
    }
    let help = env.ok(&["export", "-h"]);
    let tar_help = help
        .lines()
        .find_map(|l| l.trim().strip_prefix("--tar <FILE>"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no --tar in:\n{help}"));
    let page = render_man(&dir.join("imager-export.1"));
    assert!(page.contains(tar_help), "{tar_help:?} not in:\n{page}");
    let examples = page.split_once(" EXAMPLES ").map(|(_, e)| e).unwrap_or("");
    assert!(
        examples.contains("imager export web --tar web.tar.zst"),
        "{page}"
    );
}

/// The `imager` Debian package (`packaging/debs.sh`, cargo-deb), made from the binary
/// these tests run: it holds the binary, a man page per command (gzipped, rendering
/// with man) and the three shells' completions, and depends on what builds need.
#[test]
fn the_debian_package_holds_the_binary_its_pages_and_completions() {
    let env = Env::new();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_imager"));
    let debs = debs::build(bin, &env.path("debs"), &["imager"]);
    let deb = &debs[0];
    let field = |f: &str| debs::field(deb, f);
    assert_eq!(field("Package"), "imager");
    assert!(
        field("Depends").contains("mmdebstrap"),
        "{}",
        field("Depends")
    );
    let root = env.path("root");
    let x = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(&root)
        .status()
        .unwrap();
    assert!(x.success());
    let imager = root.join("usr/bin/imager");
    let help = Command::new(&imager).arg("--help").output().unwrap();
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("Examples"));
    for f in [
        "usr/share/bash-completion/completions/imager",
        "usr/share/zsh/vendor-completions/_imager",
        "usr/share/fish/vendor_completions.d/imager.fish",
        "usr/share/doc/imager/copyright",
    ] {
        assert!(root.join(f).is_file(), "the package lacks /{f}");
    }
    let page = render_man(&root.join("usr/share/man/man1/imager-build.1.gz"));
    assert!(page.contains("imager build"), "{page}");
}

/// The page as text: no overstrikes, ASCII hyphens, whitespace collapsed (so that a line
/// break is a space).
fn render_man(page: &std::path::Path) -> String {
    let man = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "200")
        .env_remove("MAN_KEEP_FORMATTING")
        .output();
    let out = match man {
        Ok(o) => o,
        Err(_) => {
            common::need("groff", "groff-base");
            Command::new("groff")
                .args(["-man", "-Tutf8", "-P-cbou", "-rLL=200n"])
                .arg(page)
                .output()
                .unwrap()
        }
    };
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut plain = String::new();
    for c in text.chars() {
        match c {
            '\u{8}' => {
                plain.pop();
            }
            '\u{2010}' | '\u{2212}' => plain.push('-'),
            c => plain.push(c),
        }
    }
    plain.split_whitespace().collect::<Vec<_>>().join(" ")
}
