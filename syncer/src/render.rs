//! The reports as text: what the `syncer` command prints without `--json` (JSON is each
//! report's serde form). One function per report, each returning whole lines, so the
//! command only chooses between the two forms and a test can read what a user sees.

use crate::delta::VerifyReport;
use crate::protocol::{Kept, KeptWhy, StaleUnit, TriggerRun, Unmanaged};
use crate::push::{HostReport, HostStatus};
use crate::rollout::state::{HostResult, RolloutState, Verdict};
use imager::tree::escape::escape;
use std::fmt::Write;
use std::path::Path;

/// `writeln!` into a String, which cannot fail.
macro_rules! line {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

fn size(b: u64) -> String {
    imager::units::bytes(b)
}

/// Seconds as reports print them, `0.12s`. A negative, `-0.0` or NaN (an agent's
/// figure, an empty float sum) is shown as 0: a time is never negative, and "-0.00s"
/// reads as a bug.
pub fn secs(s: f64) -> String {
    format!("{:.2}s", if s > 0.0 { s } else { 0.0 })
}

/// The first 12 hex digits of an image ID, "-" for none.
fn short(h: &Option<imager::Hash>) -> String {
    h.map(|h| h.short()).unwrap_or_else(|| "-".into())
}

/// A push to one host: outcome, paths, bytes by way of sending, time by phase, triggers,
/// and for a dry run the planned paths.
pub fn push_report(r: &HostReport) -> String {
    let mut out = String::new();
    let state = if r.ok {
        r.outcome.to_string()
    } else {
        format!("FAILED ({})", r.outcome)
    };
    line!(
        out,
        "{}: {state}  {} -> {}",
        r.host,
        short(&r.image_before),
        short(&r.image_after)
    );
    if let Some(e) = &r.error {
        line!(out, "  error: {e}");
    }
    out.push_str(&commit_state(r));
    if let Some(d) = &r.damaged_record {
        line!(out, "  warning: {d}");
    }
    if let Some(t) = &r.trust {
        line!(out, "  trust policy: {t}");
    }
    if r.rolled_forward {
        line!(out, "  finished an interrupted commit first");
    }
    out.push_str(&kept(&r.kept));
    out.push_str(&unmanaged_summary(&r.unmanaged));
    line!(
        out,
        "  paths: {} added, {} changed, {} metadata only, {} deleted",
        r.added,
        r.changed,
        r.metadata,
        r.deleted
    );
    out.push_str(&sent(r));
    if r.content.blobs > 0 {
        line!(out, "  content: {}", content(&r.content));
    }
    line!(
        out,
        "  wire: {} sent, {} received",
        size(r.wire_sent),
        size(r.wire_received)
    );
    let p = &r.phases;
    line!(
        out,
        "  time: connect {}  scan {}  plan {}  stage {}  commit {}  triggers {}  total {}",
        secs(p.connect),
        secs(p.scan),
        secs(p.plan),
        secs(p.stage),
        secs(p.commit),
        secs(p.triggers),
        secs(p.total)
    );
    out.push_str(&trigger_runs(&r.triggers));
    out.push_str(&stale(&r.stale));
    if r.dry_run {
        out.push_str(&itemized(&r.paths, &r.unmanaged, "  "));
    }
    out
}

/// The triggers a push ran, each with how it ended and its output, so a user sees why a
/// service did or did not restart.
fn trigger_runs(runs: &[TriggerRun]) -> String {
    let mut out = String::new();
    for t in runs {
        if let Some(why) = &t.skipped {
            line!(out, "  trigger {}: skipped: {why}", t.name);
            continue;
        }
        let how = if t.timed_out {
            "timed out".to_string()
        } else {
            match t.status {
                Some(c) => format!("exit {c}"),
                None => "killed".into(),
            }
        };
        line!(out, "  trigger {}: {how} ({})", t.name, secs(t.seconds));
        for l in t.output.lines() {
            line!(out, "    | {l}");
        }
    }
    out
}

/// Path by path, as `rsync --itemize-changes` (the legend is in `--help`), then what
/// the host made and keeps.
fn itemized(paths: &[crate::push::PathChange], unmanaged: &[Unmanaged], indent: &str) -> String {
    let mut out = String::new();
    for c in paths {
        let mut notes = Vec::new();
        if let Some(v) = c.via {
            notes.push(v.to_string());
        }
        if c.host_made {
            notes.push("made on the host, under an owned prefix".into());
        }
        if notes.is_empty() {
            line!(out, "{indent}{} {}", c.item, c.path);
        } else {
            line!(out, "{indent}{} {} ({})", c.item, c.path, notes.join("; "));
        }
    }
    for u in unmanaged {
        line!(
            out,
            "{indent}*unmanaged {} (made on the host, kept: {} entr{})",
            escape(&u.path),
            u.entries,
            if u.entries == 1 { "y" } else { "ies" }
        );
    }
    out
}

/// One line on what the host made and the push keeps, naming the first paths.
fn unmanaged_summary(u: &[Unmanaged]) -> String {
    if u.is_empty() {
        return String::new();
    }
    const SHOWN: usize = 5;
    let entries: u64 = u.iter().map(|x| x.entries).sum();
    let names: Vec<String> = u.iter().take(SHOWN).map(|x| escape(&x.path)).collect();
    format!(
        "  kept what the host made outside the image's owned prefixes: {entries} entries under {} path(s): {}{}\n",
        u.len(),
        names.join(", "),
        if u.len() > SHOWN { ", ..." } else { "" }
    )
}

/// Where a push that stopped during a commit left the host, and what happens next.
fn commit_state(r: &HostReport) -> String {
    let next = "the next session on this host finishes the commit before anything else \
                (`syncer abandon-commit HOST` drops it instead)";
    match (&r.mid_commit, r.outcome) {
        (Some(m), _) => {
            let image = m
                .image
                .map_or("an unknown image".into(), |h| format!("image {h}"));
            let done = match (m.applied, m.ops) {
                (Some(a), Some(n)) => format!("{a} of {n} operations done"),
                (None, Some(n)) => format!("{n} operations"),
                _ => "its journal cannot be read".into(),
            };
            format!("  in the middle of a commit to {image} ({done}): {next}\n")
        }
        (None, crate::push::PushOutcome::CommitInterrupted) => format!(
            "  the session ended after the commit was sent: the host may be in the middle \
             of it; {next}\n"
        ),
        _ => String::new(),
    }
}

/// Files and bytes by way of sending: what was sent, or for a dry run what would be.
fn sent(r: &HostReport) -> String {
    let mut out = String::new();
    // A dry run sends nothing: it shows the plan.
    let (shown, verb) = if r.dry_run {
        (&r.planned, "to send")
    } else {
        (&r.sent, "sent")
    };
    for ((name, s), (_, p)) in shown.rows().into_iter().zip(r.planned.rows()) {
        if s.files > 0 || p.files > 0 {
            let of_plan = if s == p {
                String::new()
            } else {
                format!("  (of {} files, {} planned)", p.files, size(p.bytes))
            };
            line!(
                out,
                "  {name:12} {:6} files  {:>12} {verb} for {:>12}{of_plan}",
                s.files,
                size(s.bytes),
                size(s.content_bytes)
            );
        }
    }
    out
}

/// One host's status: its image and drift, or why it could not be read.
pub fn host_status(s: &HostStatus) -> String {
    let mut out = String::new();
    match (&s.error, &s.image) {
        (Some(e), _) => line!(out, "{}: error: {e}", s.host),
        (None, None) => line!(out, "{}: never synced", s.host),
        (None, Some(id)) => {
            let names = if s.names.is_empty() {
                String::new()
            } else {
                format!(" ({})", s.names.join(", "))
            };
            let drift = if s.drifted {
                format!("drifted: {} paths differ", s.differences)
            } else {
                "clean".into()
            };
            let made: u64 = s.unmanaged.iter().map(|u| u.entries).sum();
            let drift = if made > 0 {
                format!("{drift}; {made} entries the host made, kept (not drift)")
            } else {
                drift
            };
            line!(out, "{}: {}{names}  {drift}", s.host, id.short());
        }
    }
    if s.ok || s.trust.is_some() {
        line!(out, "  trust policy: {}", trust(&s.trust));
    }
    out.push_str(&kept(&s.kept));
    out.push_str(&stale(&s.stale));
    out
}

/// A host's trust policy in words: "none (accepts any image)" when it has none.
fn trust(t: &Option<String>) -> String {
    t.clone()
        .unwrap_or_else(|| "none (accepts any image, signed or not)".into())
}

/// Processes still running replaced files, a line per unit: "still running replaced
/// files: nginx.service (pids 123 nginx, 124 nginx): /usr/lib/libpcre2-8.so.0.11.2".
pub fn stale(units: &[StaleUnit]) -> String {
    let mut out = String::new();
    let more = |n: u64| {
        if n > 0 {
            format!(" and {n} more")
        } else {
            String::new()
        }
    };
    for u in units {
        let pids: Vec<String> = u
            .processes
            .iter()
            .map(|p| format!("{} {}", p.pid, p.comm))
            .collect();
        let files: Vec<String> = u.files.iter().map(|f| escape(f)).collect();
        line!(
            out,
            "  still running replaced files: {} (pids {}{}): {}{}",
            u.unit,
            pids.join(", "),
            more(u.more_processes),
            files.join(", "),
            more(u.more_files)
        );
    }
    out
}

/// What `abandon-commit` did on one host, then its status.
pub fn abandoned(s: &HostStatus) -> String {
    let mut out = String::new();
    match &s.abandoned {
        Some(id) => line!(
            out,
            "{}: dropped the unfinished commit to image {}",
            s.host,
            &id[..12]
        ),
        None if s.ok => line!(out, "{}: no unfinished commit", s.host),
        None => {}
    }
    out.push_str(&host_status(s));
    out
}

/// The host paths a push leaves alone, one line each.
pub fn kept(kept: &[Kept]) -> String {
    let mut out = String::new();
    for k in kept {
        let why = match k.why {
            KeptWhy::Mount => "mount point",
            KeptWhy::LocalStateSymlink => "symlink to local state",
        };
        line!(out, "  left alone: {} ({why})", escape(&k.path));
    }
    out
}

/// The paths where a host differs from its image, itemised, then what the host made
/// outside the image's owned prefixes (kept, not drift).
pub fn diff(s: &HostStatus) -> String {
    let mut out = String::new();
    if !s.paths.is_empty() {
        line!(out, "drift (where the host differs from its image):");
        out.push_str(&itemized(&s.paths, &[], "  "));
    }
    if !s.unmanaged.is_empty() {
        line!(
            out,
            "made on the host outside the image's owned prefixes (kept by every push; not drift):"
        );
        out.push_str(&itemized(&[], &s.unmanaged, "  "));
    }
    out
}

/// One row of the fleet's status: a host of a colo and its last rollout result.
pub struct FleetRow {
    /// The colo the inventory lists the host in.
    pub colo: String,
    /// What the host says now ([`crate::push::status_host`]).
    pub status: HostStatus,
    /// Its latest result in the saved rollout state; `None` when no rollout reached it,
    /// or there is no state.
    pub last: Option<HostResult>,
}

/// The fleet's status as a table: host, colo, image, drift, last rollout result; then,
/// for each host that could not be asked or whose trust policy is unusable, why (a table
/// that only said "unreachable" left the operator to guess).
pub fn fleet_status(rows: &[FleetRow]) -> String {
    let mut out = String::new();
    let mut why = Vec::new();
    line!(
        out,
        "{:<40} {:<10} {:<24} {:<18} {:<8} LAST",
        "HOST",
        "COLO",
        "IMAGE",
        "DRIFT",
        "TRUST"
    );
    for FleetRow {
        colo: c,
        status: s,
        last: l,
    } in rows
    {
        let image = match (&s.error, &s.image) {
            (Some(_), _) if s.mid_commit => "mid-commit".to_string(),
            (Some(_), _) => "unreachable".to_string(),
            (None, None) => "never synced".to_string(),
            (None, Some(id)) if s.names.is_empty() => id.short(),
            (None, Some(id)) => format!("{} ({})", id.short(), s.names.join(",")),
        };
        let drift = if s.error.is_some() {
            "-".to_string()
        } else if s.drifted {
            format!("{} paths", s.differences)
        } else {
            "clean".into()
        };
        let last = l
            .as_ref()
            .map(|r| format!("{} ({})", r.outcome, r.wave))
            .unwrap_or_else(|| "-".into());
        let trust = match (&s.error, &s.trust) {
            (Some(_), _) => "-",
            (None, None) => "none",
            (None, Some(t)) if t.starts_with("unusable") => "BROKEN",
            (None, Some(_)) => "policy",
        };
        line!(
            out,
            "{:<40} {c:<10} {image:<24} {drift:<18} {trust:<8} {last}",
            s.host
        );
        match (&s.error, &s.trust) {
            (Some(e), _) => why.push(format!("{}: {e}", s.host)),
            (None, Some(t)) if t.starts_with("unusable") => {
                why.push(format!("{}: trust policy {t}", s.host))
            }
            _ => {}
        }
    }
    if !why.is_empty() {
        line!(out, "");
        for w in why {
            line!(out, "{w}");
        }
    }
    out
}

/// A rollout's conclusion: the hosts that failed, the totals, and whether it finished or
/// stopped (and how to resume it from `state_file`). Every host's line was printed as
/// it finished (above the bars, or in the log): repeating them doubled each in a log.
pub fn rollout(st: &RolloutState, state_file: &Path) -> String {
    let mut out = String::new();
    for r in st.hosts.iter().filter(|r| !r.ok()) {
        line!(out, "{}", r.line());
    }
    line!(
        out,
        "{} host(s) ok, {} failed, {} rolled back; {:.1} s, controller CPU {:.2} s",
        st.count(Verdict::Ok),
        st.count(Verdict::Failed),
        st.hosts
            .iter()
            .filter(|r| r.rollback.as_ref().is_some_and(|b| b.ok))
            .count(),
        st.wall_seconds,
        st.controller_cpu_seconds
    );
    for (colo, c) in &st.content {
        if c.blobs > 0 {
            line!(out, "colo {colo}: {}", content(c));
        }
    }
    if !st.not_selected.is_empty() {
        line!(
            out,
            "{} host(s) not selected (--limit {}), left alone",
            st.not_selected.len(),
            st.limit.join(" --limit ")
        );
    }
    match &st.stopped {
        Some(why) => line!(
            out,
            "STOPPED: {why}\n(state in {}; `syncer rollout --resume --inventory ...` continues)",
            state_file.display()
        ),
        None => line!(out, "finished: image {}", st.image.short()),
    }
    out
}

/// Where content came from: "4.10 MB from mirrors (http://cache/: 4.10 MB, 3 of 5
/// hits; http://origin/: 0.00 MB), 0.00 MB from the controller".
fn content(c: &crate::push::ContentSources) -> String {
    let each: Vec<String> = c
        .mirrors
        .iter()
        .map(|m| {
            let mut s = format!("{}: {}", m.url, size(m.bytes));
            if m.cache_hits + m.cache_misses > 0 {
                s += &format!(
                    ", {} of {} cache hits",
                    m.cache_hits,
                    m.cache_hits + m.cache_misses
                );
            }
            for (n, what) in [
                (m.not_found, "not found"),
                (m.errors, "failed"),
                (m.corrupt, "WRONG BYTES"),
            ] {
                if n > 0 {
                    s += &format!(", {n} {what}");
                }
            }
            if !m.last_error.is_empty() {
                s += &format!(", last error: {}", m.last_error);
            }
            s
        })
        .collect();
    format!(
        "{} from mirrors ({}), {} from the controller; {} of {} published files from no mirror",
        size(c.mirrors_bytes),
        each.join("; "),
        size(c.controller_bytes),
        c.blobs_missing,
        c.blobs
    )
}

/// `syncer publish`: each pair's files, written and already there.
pub fn publish(r: &crate::publish::PublishReport) -> String {
    let mut out = String::new();
    for p in &r.pairs {
        line!(
            out,
            "{} -> {}: {} file(s), {} ({} written, {}; {} there already); {} file(s) not publishable; index {}",
            // An empty root is `none`, as in the index's name.
            p.from.as_ref().map_or("none", |f| &f[..12]),
            &p.to[..12],
            p.blobs,
            size(p.bytes),
            p.written,
            size(p.written_bytes),
            p.present,
            p.not_published,
            p.index
        );
    }
    line!(
        out,
        "published to {} (zstd level {})",
        r.dir.display(),
        r.level
    );
    out
}

/// `cache verify`: each bad entry and stray file, then the totals (`store` is where
/// bases were looked for).
pub fn cache_verify(r: &VerifyReport, store: &Path) -> String {
    let mut out = String::new();
    for b in &r.bad {
        let done = if b.removed { " (removed)" } else { "" };
        line!(out, "BAD {}: {}{done}", b.file.display(), b.problem);
    }
    for o in &r.other {
        line!(out, "not an entry: {}", o.display());
    }
    line!(
        out,
        "{}: {} good, {} bad, {} unchecked (base not in the store {})",
        r.dir.display(),
        r.good,
        r.bad.len(),
        r.unchecked,
        store.display()
    );
    out
}

/// A rollout's plan (`rollout --dry-run`): per colo its waves, per host what a push would
/// send and delete (the first deletes of each, all of them in `--json`).
pub fn rollout_plan(p: &crate::rollout::dryrun::RolloutPlan) -> String {
    const DELETES_SHOWN: usize = 10;
    let mut out = String::new();
    line!(
        out,
        "dry run: image {}, nothing is written",
        p.image.short()
    );
    for c in &p.colos {
        line!(out, "colo {}:", c.name);
        if let Some(why) = &c.refused {
            line!(out, "  REFUSED: {why}");
        }
        for (name, cmd) in [("pre", &c.pre), ("post", &c.post)] {
            if let Some(cmd) = cmd {
                line!(out, "  {name} hook (not run): {cmd}");
            }
        }
        for w in &c.waves {
            line!(
                out,
                "  {}: {} host(s), failure budget {}",
                w.name,
                w.hosts.len(),
                w.failure_budget
            );
            for h in &w.hosts {
                match &h.error {
                    Some(e) => line!(out, "    {}: FAILED: {e}", h.host),
                    None => line!(
                        out,
                        "    {}: {} -> {}, {} to send, {} added, {} changed, {} deleted",
                        h.host,
                        short(&h.image_before),
                        p.image.short(),
                        size(h.bytes),
                        h.added,
                        h.changed,
                        h.deleted
                    ),
                }
                for d in h.deletes.iter().take(DELETES_SHOWN) {
                    line!(out, "      delete {d}");
                }
                if h.deletes.len() > DELETES_SHOWN {
                    line!(
                        out,
                        "      ... and {} more deletes (--json lists them)",
                        h.deletes.len() - DELETES_SHOWN
                    );
                }
            }
        }
    }
    if !p.not_selected.is_empty() {
        line!(out, "not selected: {}", p.not_selected.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::StaleProcess;

    /// A time is never printed negative: "-0.00s" came from an empty float sum (-0.0).
    #[test]
    fn seconds_are_never_printed_negative() {
        assert_eq!(secs(-0.0), "0.00s");
        assert_eq!(secs(-0.004), "0.00s");
        assert_eq!(secs(-3.0), "0.00s");
        assert_eq!(secs(f64::NAN), "0.00s");
        assert_eq!(secs(0.0), "0.00s");
        assert_eq!(secs(1.234), "1.23s");
        let empty: [f64; 0] = [];
        assert_eq!(secs(empty.iter().sum()), "0.00s");
    }

    /// An unreachable host's row is followed, below the table, by why.
    #[test]
    fn the_fleet_table_says_why_a_host_is_unreachable() {
        let row = |host: &str, error: Option<&str>| FleetRow {
            colo: "lab".into(),
            status: HostStatus {
                host: host.into(),
                ok: error.is_none(),
                error: error.map(String::from),
                ..Default::default()
            },
            last: None,
        };
        let text = fleet_status(&[
            row("local:/srv/a", None),
            row(
                "ssh://web1",
                Some("ssh: connect to host web1 port 22: Connection refused"),
            ),
        ]);
        let last = "ssh://web1: ssh: connect to host web1 port 22: Connection refused";
        assert!(
            text.lines().nth(2).unwrap_or("").contains("unreachable"),
            "{text}"
        );
        assert_eq!(text.lines().last(), Some(last), "{text}");
        assert!(!text.contains("local:/srv/a: "), "{text}");
    }

    #[test]
    fn stale_processes_are_a_line_per_unit_with_what_was_left_out_counted() {
        let p = |pid, comm: &str| StaleProcess {
            pid,
            comm: comm.into(),
        };
        let units = [
            StaleUnit {
                unit: "nginx.service".into(),
                processes: vec![p(123, "nginx"), p(124, "nginx")],
                more_processes: 0,
                files: vec![b"/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0.11.2".to_vec()],
                more_files: 0,
            },
            StaleUnit {
                unit: "(no unit)".into(),
                processes: vec![p(9, "sh")],
                more_processes: 2,
                files: vec![b"/bin/sh".to_vec(), b"/lib/a\n".to_vec()],
                more_files: 5,
            },
        ];
        assert_eq!(
            stale(&units),
            "  still running replaced files: nginx.service (pids 123 nginx, 124 nginx): \
             /usr/lib/x86_64-linux-gnu/libpcre2-8.so.0.11.2\n  \
             still running replaced files: (no unit) (pids 9 sh and 2 more): /bin/sh, \
             /lib/a\\x0a and 5 more\n"
        );
        assert_eq!(stale(&[]), "");
    }
}
