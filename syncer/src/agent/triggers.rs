//! Triggers: after a commit, each of the image's triggers whose path globs match a
//! changed path runs once, in (order, name) order, with the changed paths it watches in
//! `SYNCER_CHANGED_PATHS` (one per line). On a root other than `/` the command runs
//! chrooted into it. Output (stdout and stderr, capped) and exit status are reported.

use crate::error::{Error, Result};
use crate::protocol::TriggerRun;
use imager::build::manifest::Trigger;
use imager::build::scrub::TriggerFile;
use imager::fsx;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MAX_OUTPUT: usize = 64 << 10;

pub fn parse(toml_text: &[u8]) -> Result<Vec<Trigger>> {
    if toml_text.is_empty() {
        return Ok(Vec::new());
    }
    let text = std::str::from_utf8(toml_text)
        .map_err(|_| Error::Agent("the image's triggers.toml is not UTF-8".into()))?;
    let f: TriggerFile = toml::from_str(text)
        .map_err(|e| Error::Agent(format!("the image's triggers.toml: {e}")))?;
    let mut t = f.trigger;
    t.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
    Ok(t)
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

pub fn run(root: &Path, image: &str, t: &Trigger, paths: &[Vec<u8>]) -> TriggerRun {
    let started = Instant::now();
    let mut cmd = if root == Path::new("/") {
        Command::new("/bin/sh")
    } else {
        let mut c = Command::new("chroot");
        c.arg(root).arg("/bin/sh");
        c
    };
    let list: Vec<String> = paths
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    cmd.arg("-c")
        .arg(&t.run)
        .env("SYNCER_CHANGED_PATHS", list.join("\n"))
        .env("SYNCER_IMAGE", image)
        .env("SYNCER_TRIGGER", &t.name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let fail = |m: String| TriggerRun {
        name: t.name.clone(),
        status: None,
        timed_out: false,
        seconds: started.elapsed().as_secs_f64(),
        output: m,
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start: {e}")),
    };
    let readers: Vec<_> = [
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
    .map(|mut r| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = (&mut r).take(MAX_OUTPUT as u64).read_to_end(&mut v);
            // Keep draining so the command never blocks on a full pipe.
            let _ = std::io::copy(&mut r, &mut std::io::sink());
            v
        })
    })
    .collect();
    let deadline = started + Duration::from_secs(t.timeout.max(1));
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let mut output = Vec::new();
    for r in readers {
        output.extend(r.join().unwrap_or_default());
    }
    output.truncate(MAX_OUTPUT);
    TriggerRun {
        name: t.name.clone(),
        status: if timed_out {
            None
        } else {
            status.and_then(|s| s.code())
        },
        timed_out,
        seconds: started.elapsed().as_secs_f64(),
        output: String::from_utf8_lossy(&output).into_owned(),
    }
}
