//! A rollout policy's `pre` and `post` commands, run on the controller around each host
//! (to drain it from a load balancer and put it back, say): `sh -c` in the inventory's
//! directory, with the host, colo, wave and image in the environment, killed with
//! everything it started when its time is up. What it did (exit status, the last lines
//! it printed, seconds) goes into the host's record.

use serde::{Deserialize, Serialize};
use std::io::{Read, Seek};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The last lines of a hook's output kept in the record (its stdout and stderr together).
const TAIL_LINES: usize = 10;
/// The most of a hook's output read back, from its end.
const TAIL_BYTES: u64 = 16 << 10;

/// One run of a hook: what the host's record says of it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HookRun {
    /// The command, as the policy gives it.
    pub command: String,
    /// Its exit code (`None`: killed by a signal, timed out, or never started).
    pub status: Option<i32>,
    /// It ran past the policy's `hook_timeout` and was killed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// Why it could not be started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last lines of its output, stdout and stderr as they came.
    #[serde(default)]
    pub output: Vec<String>,
    /// Seconds it ran.
    pub seconds: f64,
}

impl HookRun {
    /// Whether it exited with status 0.
    pub fn ok(&self) -> bool {
        self.status == Some(0)
    }

    /// How it ended, for a host's line and its failure reason: "ok", "exit 3", "timed
    /// out after 300 s", "killed", or why it did not start; and its last line.
    pub fn describe(&self) -> String {
        let how = match (&self.error, self.status, self.timed_out) {
            (Some(e), _, _) => return format!("could not start: {e}"),
            (None, _, true) => format!("timed out after {:.0} s", self.seconds),
            (None, Some(0), _) => "ok".to_string(),
            (None, Some(c), _) => format!("exit {c}"),
            (None, None, _) => "killed".to_string(),
        };
        match self.output.last() {
            Some(l) if !self.ok() => format!("{how}: {l}"),
            _ => how,
        }
    }
}

/// A colo policy's hooks around one host's turn (a rollout's or a rollback's): `pre`
/// before anything touches the host, `post` after, with the outcome in its
/// environment. Each run is logged on the host's line.
pub struct Around<'a> {
    policy: &'a super::inventory::Policy,
    dir: &'a Path,
    host: &'a crate::transport::HostSpec,
    env: Vec<(&'static str, String)>,
    obs: &'a dyn crate::push::Observer,
}

impl<'a> Around<'a> {
    /// The hooks of `colo`'s policy around `host`, run in `dir` (the inventory's) with
    /// `SYNCER_HOST`, `SYNCER_COLO`, `SYNCER_WAVE` (`wave`) and `SYNCER_IMAGE` (`image`).
    pub fn new(
        colo: &'a super::inventory::Colo,
        host: &'a crate::transport::HostSpec,
        (wave, image): (&str, &imager::Hash),
        dir: &'a Path,
        obs: &'a dyn crate::push::Observer,
    ) -> Around<'a> {
        let env = vec![
            ("SYNCER_HOST", host.to_string()),
            ("SYNCER_COLO", colo.name.clone()),
            ("SYNCER_WAVE", wave.to_string()),
            ("SYNCER_IMAGE", image.to_hex()),
        ];
        Around {
            policy: &colo.policy,
            dir,
            host,
            env,
            obs,
        }
    }

    fn run(&self, cmd: &str) -> HookRun {
        let r = run(cmd, &self.env, self.dir, self.policy.hook_timeout);
        self.obs
            .log(&format!("{}: {cmd:?}: {}", self.host, r.describe()));
        r
    }

    /// Runs `pre`, if the policy has one.
    pub fn pre(&self) -> Option<HookRun> {
        self.policy.pre.as_deref().map(|c| self.run(c))
    }

    /// Runs `post`, if the policy has one, with `SYNCER_OUTCOME` set to `outcome`.
    pub fn post(&mut self, outcome: &str) -> Option<HookRun> {
        let cmd = self.policy.post.as_deref()?;
        self.env.push(("SYNCER_OUTCOME", outcome.to_string()));
        Some(self.run(cmd))
    }
}

/// Why a host failed whose `pre` hook failed.
pub fn pre_failed(failed: &HookRun) -> String {
    format!(
        "the pre hook failed ({}): the host was not touched",
        failed.describe()
    )
}

/// Why a host failed whose `post` hook failed.
pub fn post_failed(failed: &HookRun) -> String {
    format!("the post hook failed ({})", failed.describe())
}

/// Runs `command` with `sh -c` in `dir` with `env` added, for at most `timeout`; never
/// fails, the run says how it went.
pub fn run(command: &str, env: &[(&str, String)], dir: &Path, timeout: Duration) -> HookRun {
    let started = Instant::now();
    let mut out = HookRun {
        command: command.to_string(),
        ..Default::default()
    };
    match run_in_group(command, env, dir, timeout) {
        Ok((status, timed_out, output)) => {
            out.status = status;
            out.timed_out = timed_out;
            out.output = output;
        }
        Err(e) => out.error = Some(e),
    }
    out.seconds = started.elapsed().as_secs_f64();
    out
}

/// The hook in its own process group, so that a timeout kills whatever it started too;
/// its output goes to an anonymous file rather than a pipe, which a process it left
/// behind could hold open: its exit status, whether it timed out, its last lines.
fn run_in_group(
    command: &str,
    env: &[(&str, String)],
    dir: &Path,
    timeout: Duration,
) -> Result<(Option<i32>, bool, Vec<String>), String> {
    let out = rustix::fs::memfd_create("syncer-hook", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| format!("cannot make a file for its output: {e}"))?;
    let mut file = std::fs::File::from(out);
    let dup = |f: &std::fs::File| {
        f.try_clone()
            .map(Stdio::from)
            .map_err(|e| format!("cannot share its output file: {e}"))
    };
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(dup(&file)?)
        .stderr(dup(&file)?);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| format!("sh: {e}"))?;
    let watchdog = crate::transport::Watchdog::start(child.id(), timeout);
    // Waited for without reaping it, so that the watchdog, stopped before the reaping,
    // can never signal a reused process group.
    let pid = rustix::process::Pid::from_child(&child);
    let waited = rustix::process::waitid(
        rustix::process::WaitId::Pid(pid),
        rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT,
    );
    let timed_out = watchdog.stop();
    let status = child.wait().map_err(|e| format!("waiting for it: {e}"))?;
    waited.map_err(|e| format!("waiting for it: {e}"))?;
    Ok((status.code(), timed_out, tail(&mut file)))
}

/// The last lines of the output file.
fn tail(f: &mut std::fs::File) -> Vec<String> {
    let len = f.seek(std::io::SeekFrom::End(0)).unwrap_or(0);
    let mut buf = Vec::new();
    if f.seek(std::io::SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))
        .is_ok()
    {
        let _ = f.read_to_end(&mut buf);
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(cmd: &str, timeout: Duration) -> HookRun {
        run(
            cmd,
            &[("SYNCER_HOST", "ssh://h".into())],
            Path::new("/"),
            timeout,
        )
    }

    #[test]
    fn a_hook_reports_its_status_environment_and_last_lines() {
        let r = hook("pwd; echo \"$SYNCER_HOST\" >&2", Duration::from_secs(60));
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.output, ["/", "ssh://h"]);
        assert_eq!(r.describe(), "ok");
        let r = hook("seq 1 20; exit 3", Duration::from_secs(60));
        assert_eq!(r.status, Some(3));
        assert_eq!(r.output.len(), TAIL_LINES);
        assert_eq!(r.describe(), "exit 3: 20");
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed_with_what_it_started() {
        // The background sleep holds the group: it is killed with the shell.
        let r = hook("sleep 1000 & wait", Duration::from_millis(200));
        assert!(r.timed_out && r.status.is_none(), "{r:?}");
        assert!(
            r.describe().starts_with("timed out after"),
            "{}",
            r.describe()
        );
    }
}
