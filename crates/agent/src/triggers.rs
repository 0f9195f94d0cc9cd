//! Triggers: after a commit, each of the image's triggers whose path globs match a
//! changed path runs once, in (order, name) order, with the changed paths it watches in
//! `SYNCER_CHANGED_PATHS` (one per line). On a booted host (root `/`, systemd as init)
//! the command runs in a transient systemd scope; on a root other than `/` it runs
//! chrooted into it (there, `systemctl` has no manager to talk to). Output (stdout and
//! stderr, capped) and exit status are reported.

use crate::error::{Error, Result};
use crate::protocol::TriggerRun;
use imager_core::contract::{self, Trigger};
use imager_core::fsx;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MAX_OUTPUT: usize = 64 << 10;

/// The triggers an image's triggers.toml declares, in the order they run (none for an
/// empty file); an error says what does not parse.
pub fn parse(toml_text: &[u8]) -> Result<Vec<Trigger>> {
    contract::parse_triggers(toml_text).map_err(Error::Agent)
}

/// The triggers to run for `changed`, each with the paths it matched.
pub fn matching(triggers: &[Trigger], changed: &[Vec<u8>]) -> Result<Vec<(Trigger, Vec<Vec<u8>>)>> {
    let mut out = Vec::new();
    for t in triggers {
        let mut b = globset::GlobSetBuilder::new();
        for p in &t.paths {
            b.add(
                globset::GlobBuilder::new(p)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| {
                        Error::Agent(format!("trigger {}: bad glob {p:?}: {e}", t.name))
                    })?,
            );
        }
        let set = b
            .build()
            .map_err(|e| Error::Agent(format!("trigger {}: {e}", t.name)))?;
        let hits: Vec<Vec<u8>> = changed
            .iter()
            .filter(|p| set.is_match(fsx::bytes_path(p)))
            .cloned()
            .collect();
        if !hits.is_empty() {
            out.push((t.clone(), hits));
        }
    }
    Ok(out)
}

/// A trigger not run, and why.
pub fn skipped(t: &Trigger, why: &str) -> TriggerRun {
    TriggerRun {
        name: t.name.clone(),
        status: None,
        timed_out: false,
        seconds: 0.0,
        output: String::new(),
        skipped: Some(why.to_string()),
    }
}

/// Runs trigger `t` for `paths` on the host at `root` and reports its outcome. One that
/// needs a running system (`booted = true`) is skipped on a root that is not one.
pub fn run(root: &Path, image: &str, t: &Trigger, paths: &[Vec<u8>]) -> TriggerRun {
    if t.booted && !(root == Path::new("/") && systemd_runs()) {
        return skipped(
            t,
            &format!(
                "it needs a running system and {} is not one (no systemd runs it)",
                root.display()
            ),
        );
    }
    let started = Instant::now();
    let list: Vec<String> = paths
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let env = [
        ("SYNCER_CHANGED_PATHS", list.join("\n")),
        ("SYNCER_IMAGE", image.to_string()),
        ("SYNCER_TRIGGER", t.name.clone()),
    ];
    let timeout = Duration::from_secs(t.timeout.clamp(1, 7 * 86_400));
    let unit = (root == Path::new("/") && systemd_runs()).then(|| unit_name(t));
    let mut cmd = match &unit {
        Some(unit) => as_scope(unit, image, t),
        None if root == Path::new("/") => Command::new("/bin/sh"),
        None => {
            let mut c = Command::new("chroot");
            c.arg(root).arg("/bin/sh");
            c
        }
    };
    cmd.arg("-c")
        .arg(&t.run)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return TriggerRun {
                name: t.name.clone(),
                status: None,
                timed_out: false,
                seconds: started.elapsed().as_secs_f64(),
                output: format!("cannot start: {e}"),
                skipped: None,
            }
        }
    };
    let output = read_output(&mut child);
    let (status, timed_out) = wait_until(&mut child, started + timeout);
    TriggerRun {
        name: t.name.clone(),
        status: if timed_out {
            None
        } else {
            status.and_then(|s| s.code())
        },
        timed_out,
        seconds: started.elapsed().as_secs_f64(),
        output: output.collect(),
        skipped: None,
    }
}

/// True when the host runs systemd as its init (sd_booted(3): /run/systemd/system exists).
fn systemd_runs() -> bool {
    fsx::symlink_metadata(Path::new("/run/systemd/system")).is_ok_and(|m| m.is_dir())
}

/// The command in a transient scope unit of the host's systemd (`systemd-run --scope`):
/// it runs outside the agent's ssh session, in system.slice, and shows in the host's
/// journal as `syncer-trigger-NAME-...` ("syncer trigger NAME (image ...)"). A scope,
/// not a service: `--wait`/`--pipe` need a D-Bus daemon, which a minimal server may
/// lack, while a scope needs only systemd's own socket; and the command stays the
/// agent's child, so its output, exit status and timeout are handled as everywhere else.
fn as_scope(unit: &str, image: &str, t: &Trigger) -> Command {
    let short = image.get(..12).unwrap_or(image);
    let mut c = Command::new("systemd-run");
    c.arg("--scope")
        .arg("--quiet")
        .arg(format!("--unit={unit}"))
        .arg(format!(
            "--description=syncer trigger {} (image {short})",
            t.name
        ))
        .args(["--", "/bin/sh"]);
    c
}

/// A unit name of its own for one run of `t`: `syncer-trigger-NAME-PID-N.scope`.
fn unit_name(t: &Trigger) -> String {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name: String = t
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("syncer-trigger-{name}-{}-{n}.scope", std::process::id())
}

/// The command's stdout and stderr, read by threads (capped) so the command never
/// blocks on a full pipe.
struct Output {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    readers: usize,
}

fn read_output(child: &mut std::process::Child) -> Output {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let streams: Vec<Box<dyn Read + Send>> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    let readers = streams.len();
    for mut r in streams {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = (&mut r).take(MAX_OUTPUT as u64).read_to_end(&mut v);
            let _ = tx.send(v);
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        });
    }
    Output { rx, readers }
}

impl Output {
    /// What was read. A background process the command left holding its output must not
    /// keep the agent waiting: after the command exits, its output gets a short grace.
    fn collect(self) -> String {
        let mut output = Vec::new();
        let grace = Instant::now() + Duration::from_secs(2);
        for _ in 0..self.readers {
            match self
                .rx
                .recv_timeout(grace.saturating_duration_since(Instant::now()))
            {
                Ok(v) => output.extend(v),
                Err(_) => {
                    output.extend_from_slice(
                        b"\n(output not closed: a background process still holds it; not waited for)\n",
                    );
                    break;
                }
            }
        }
        output.truncate(MAX_OUTPUT);
        String::from_utf8_lossy(&output).into_owned()
    }
}

/// Waits for the command until `deadline`, then kills its process group. Returns its
/// status and whether it was killed.
fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
) -> (Option<std::process::ExitStatus>, bool) {
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return (Some(s), false),
            Ok(None) if Instant::now() >= deadline => {
                if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                return (child.wait().ok(), true);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return (None, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_background_process_holding_the_output_does_not_hang_the_agent() {
        let t = Trigger {
            name: "starts-a-daemon".into(),
            paths: vec![],
            run: "sleep 600 & echo started".into(),
            order: 0,
            timeout: 120,
            outputs: vec![],
            booted: false,
        };
        let started = Instant::now();
        let r = run(Path::new("/"), "img", &t, &[]);
        assert_eq!(r.status, Some(0), "{r:?}");
        assert!(!r.timed_out);
        // It came back when the shell exited (plus the grace), not when the sleep did.
        assert!(started.elapsed() < Duration::from_secs(300), "{r:?}");
        assert!(r.output.contains("background process"), "{r:?}");
    }

    #[test]
    fn triggers_match_globs_and_run_in_order() {
        let toml = b"[[trigger]]\nname = \"b\"\npaths = [\"/etc/**\"]\nrun = \"true\"\norder = 20\n\n[[trigger]]\nname = \"a\"\npaths = [\"/etc/ssh/*\"]\nrun = \"true\"\norder = 10\n";
        let ts = parse(toml).expect("triggers");
        let changed = vec![b"/etc/ssh/sshd_config".to_vec(), b"/usr/bin/x".to_vec()];
        let m = matching(&ts, &changed).expect("globs");
        let names: Vec<&str> = m.iter().map(|(t, _)| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(m[0].1, vec![b"/etc/ssh/sshd_config".to_vec()]);
    }
}
