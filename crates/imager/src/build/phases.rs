//! Hooks at mmdebstrap's phases (`setup`, `extract`, `essential`, `customize`): each
//! becomes an mmdebstrap `--PHASE-hook` command that runs the manifest's command under
//! the rules of imager's own hooks (`chroot::run_hooks`): a clean environment, its own
//! UTS/IPC/PID/mount namespaces (mmdebstrap already runs with no network), a time limit
//! that kills everything it started, services kept from starting, and a line in the
//! build log naming it; a failure names the hook and its phase.

use super::recipe::{Hook, HookPhase};
use crate::error::Error;
use crate::escape::shell_quote;
use std::path::Path;

/// The `--PHASE-hook=COMMAND` arguments for mmdebstrap, in the manifest's order within
/// each phase (mmdebstrap runs them so).
pub fn mmdebstrap_args(hooks: &[Hook], epoch: i64) -> Vec<String> {
    HookPhase::MMDEBSTRAP
        .iter()
        .flat_map(|&phase| {
            hooks
                .iter()
                .filter(move |h| h.phase == phase)
                .map(move |h| format!("--{}-hook={}", phase.name(), command(h, epoch)))
        })
        .collect()
}

/// How the hook is named in the log's failure line and in the error.
fn label(h: &Hook) -> String {
    format!("hook {:?} ({} phase)", h.name, h.phase.name())
}

/// The shell command mmdebstrap runs (with `sh -c`, the root as `$1`).
fn command(h: &Hook, epoch: i64) -> String {
    // Inside the root, as imager's own hooks are; the setup phase has no shell there yet.
    let inner = match h.phase {
        HookPhase::Setup => r#"cd "$1" && exec /bin/sh -c "$2""#,
        _ => r#"mount -t proc proc "$1/proc" && exec chroot "$1" /bin/sh -c "$2""#,
    };
    let policy = match h.phase {
        HookPhase::Setup => "",
        _ => {
            r#"if [ -d "$1/usr/sbin" ] && [ ! -e "$p" ] && [ ! -L "$p" ]; then printf '#!/bin/sh\n# written by imager for the build: no service starts\nexit 101\n' > "$p" && chmod 755 "$p" && made=1; fi"#
        }
    };
    let label = label(h);
    format!(
        r#"echo {banner}; p="$1/{POLICY}"; made=; {policy}
env -i PATH={path} HOME=/root LC_ALL=C.UTF-8 TZ=UTC SOURCE_DATE_EPOCH={epoch} DEBIAN_FRONTEND=noninteractive IMAGER_HOOK={name} IMAGER_ROOT="$1" timeout -s KILL {t} unshare --uts --ipc --pid --kill-child --mount --propagation private -- /bin/sh -c {inner} hook "$1" {run}
rc=$?; if [ -n "$made" ]; then rm -f "$p"; fi
if [ $rc -eq 137 ]; then echo {timed_out} >&2; exit $rc; fi
if [ $rc -ne 0 ]; then echo {failed}" (exit $rc)" >&2; exit $rc; fi"#,
        banner = shell_quote(&format!("--- {label}: {}", h.run)),
        POLICY = super::chroot::POLICY_RC_D,
        path = super::chroot::PATH,
        name = shell_quote(&h.name),
        t = h.timeout,
        inner = shell_quote(inner),
        run = shell_quote(&h.run),
        timed_out = shell_quote(&format!("imager: {label} timed out after {} s", h.timeout)),
        failed = shell_quote(&format!("imager: {label} failed")),
    )
}

/// mmdebstrap's failure as the failure of the phase hook whose line its output ends
/// with: the hook, its phase and the manifest named, as for imager's own hooks.
pub fn name_failed_hook(e: Error, hooks: &[Hook], manifest: &Path) -> Error {
    let Error::Command { program, detail } = e else {
        return e;
    };
    let found = hooks
        .iter()
        .filter(|h| h.phase != HookPhase::Final)
        .find(|h| detail.contains(&format!("imager: {} ", label(h))));
    match found {
        Some(h) => Error::Command {
            program: format!("{} of {}", label(h), manifest.display()),
            detail,
        },
        None => Error::Command { program, detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn hook(name: &str, phase: HookPhase, run: &str, timeout: u64) -> Hook {
        Hook {
            name: name.into(),
            run: run.into(),
            timeout,
            phase,
        }
    }

    /// Runs a setup hook's command as mmdebstrap would (`sh -c COMMAND exec ROOT`).
    fn run_as_mmdebstrap(h: &Hook, root: &Path) -> std::process::Output {
        Command::new("sh")
            .arg("-c")
            .arg(command(h, 1_700_000_000))
            .arg("exec")
            .arg(root)
            .output()
            .unwrap()
    }

    #[test]
    fn a_setup_hook_runs_in_the_root_with_the_build_environment() {
        let d = tempfile::tempdir().unwrap();
        let h = hook(
            "it's",
            HookPhase::Setup,
            "echo \"$IMAGER_HOOK $SOURCE_DATE_EPOCH $TZ $PWD $HOME\" > made; echo $$ >> made",
            60,
        );
        let out = run_as_mmdebstrap(&h, d.path());
        assert!(out.status.success(), "{out:?}");
        let made = crate::fsx::read_to_string(&d.path().join("made")).unwrap();
        let want = format!("it's 1700000000 UTC {} /root\n", d.path().display());
        assert!(made.starts_with(&want), "{made}");
        // PID namespace of its own: the hook's shell is PID 1 there.
        assert_eq!(made.lines().nth(1), Some("1"), "{made}");
        let log = String::from_utf8_lossy(&out.stdout);
        assert!(
            log.starts_with("--- hook \"it's\" (setup phase): echo"),
            "{log}"
        );
    }

    #[test]
    fn a_failing_or_slow_hook_is_named_with_its_phase() {
        let d = tempfile::tempdir().unwrap();
        let bad = hook("bad", HookPhase::Setup, "echo said-this >&2; exit 3", 60);
        let out = run_as_mmdebstrap(&bad, d.path());
        assert_eq!(out.status.code(), Some(3));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("said-this"), "{err}");
        assert!(
            err.contains("imager: hook \"bad\" (setup phase) failed (exit 3)"),
            "{err}"
        );
        let e = Error::Command {
            program: "mmdebstrap".into(),
            detail: format!("failed; its last output:\n{err}"),
        };
        let named = name_failed_hook(e, &[bad], Path::new("/m/app.toml")).to_string();
        assert!(
            named.contains("hook \"bad\" (setup phase) of /m/app.toml"),
            "{named}"
        );

        let slow = hook("slow", HookPhase::Setup, "sleep 600 & sleep 600", 1);
        let out = run_as_mmdebstrap(&slow, d.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("imager: hook \"slow\" (setup phase) timed out after 1 s"),
            "{err}"
        );
    }
}
