//! The controller's side of a session: push an image to a host (plan, send, commit,
//! triggers), or ask a host how it differs from the image it runs (status, diff).
//!
//! Here, a push's session step by step ([`push_host`]) and the runner over many hosts
//! ([`for_hosts`]); beside it, the image as pushed (`image.rs`), the options
//! (`options.rs`), the reports (`report.rs`), how each file's content travels
//! (`content.rs`), what is published for hosts at an image (`published.rs`), sending
//! (`send.rs`), and `status` and `diff` (`status.rs`). The rollout and publishing build
//! on this module; it uses neither.

mod content;
mod image;
mod options;
mod published;
mod report;
mod send;
mod status;

pub use image::Image;
pub use options::{Health, PushOptions};
pub(crate) use published::{item_name, pack_name, plan_from};
pub use report::{
    ByKind, ContentSources, HostReport, Packs, PathChange, Phases, PushOutcome, Sent, WireBytes,
};
pub use status::{status_host, HostStatus};

pub use crate::progress::{NoObserver, Observer};

use crate::delta::Cache;
use crate::error::{Error, Result};
use crate::progress::{Clock, Phase};
use crate::protocol::client::{self, AfterCommit, Targeted};
use crate::protocol::{Differences, ManifestData, Stage, StaleUnit, Target};
use crate::transport::{self, AgentRead, AgentWrite, HostSpec, RunningAgent};
use content::plan;
use imager::store::Store;
use send::{fetch, send_items, Later, Left, Made};
use status::path_changes;
use std::sync::Arc;
use std::time::Instant;

/// Pushes `image` to one host; never fails, the report says how it went.
pub fn push_host(
    store: &Store,
    image: &Image,
    cache: &Cache,
    spec: &HostSpec,
    opts: &PushOptions,
    obs: &dyn Observer,
) -> HostReport {
    let started = Instant::now();
    let clock = Clock::new(&spec.to_string(), obs);
    let mut r = HostReport {
        host: spec.to_string(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    if let Some(policy) = &opts.require_signed {
        if let Err(e) = policy.check(&image.id, &image.signed(), imager::sign::now()) {
            r.error = Some(format!("not pushed: {e}"));
            r.outcome = PushOutcome::FailedBeforeCommit;
            clock.finish(Phase::Failed);
            return r;
        }
    }
    let connecting = clock.start(Phase::Connecting);
    let connected = transport::connect(spec, &transport_of(store, opts));
    drop(connecting);
    let session = match connected {
        Ok(s) => s,
        Err(e) => {
            r.error = Some(e.to_string());
            // An agent that cannot finish an earlier session's commit says so first.
            r.outcome = match e {
                Error::MidCommit(at, _) => {
                    r.mid_commit = Some(*at);
                    PushOutcome::MidCommit
                }
                _ => PushOutcome::FailedBeforeCommit,
            };
            r.phases.add_clock(&clock, started);
            clock.finish(Phase::Failed);
            return r;
        }
    };
    r.agent = Some(session.welcome.agent.clone());
    r.trust = session.welcome.trust.as_ref().map(|t| t.describe());
    r.agent_installed = session.installed;
    r.rolled_forward = session.welcome.rolled_forward;
    r.damaged_record = session.welcome.damaged_record.clone();
    r.image_before = session.welcome.image;
    r.previous_before = session.welcome.previous;
    let outcome = run_push(session, store, image, cache, opts, &clock, &mut r);
    let failed_triggers = trigger_failures(&r);
    r.triggers_failed = failed_triggers.len() as u64;
    let errored = outcome.is_err();
    // The agent's own error answer comes before its commit point (after it, it is a
    // MidCommit): the host was not changed, even if Commit had been sent.
    let refused = matches!(outcome, Err(Error::Agent(_)));
    match outcome {
        Ok(()) => {
            let failed = failures_after_commit(&r, opts, failed_triggers);
            r.ok = failed.is_empty();
            if !r.ok {
                r.error = Some(failed.join("; "));
            }
        }
        Err(e) => {
            if let Error::MidCommit(at, _) = &e {
                r.mid_commit = Some((**at).clone());
            }
            r.error = Some(e.to_string());
        }
    }
    r.outcome = PushOutcome::of(&r, errored, refused);
    r.phases.add_clock(&clock, started);
    clock.finish(if r.ok { Phase::Done } else { Phase::Failed });
    r
}

/// How the host is reached: a local host's agent, which runs on this machine, is given
/// the store's objects to copy new files from (unless the push takes mirrors' content
/// or was asked not to).
fn transport_of(store: &Store, opts: &PushOptions) -> transport::TransportOptions {
    let mut transport = opts.transport.clone();
    if opts.mirrors.is_empty() && !opts.no_store_copies {
        transport.objects = Some(store.objects_dir());
    }
    transport
}

/// The triggers that failed, a phrase each.
fn trigger_failures(r: &HostReport) -> Vec<String> {
    r.triggers
        .iter()
        .filter(|t| t.failed())
        .map(|t| {
            if t.timed_out {
                format!("trigger {} timed out", t.name)
            } else {
                match t.status {
                    Some(c) => format!("trigger {} failed (exit {c})", t.name),
                    None => format!("trigger {} was killed", t.name),
                }
            }
        })
        .collect()
}

/// What makes a committed host a failure, a phrase each: its failed triggers, a failed
/// health check, and (when the policy requires restarts) processes still running
/// replaced files.
fn failures_after_commit(
    r: &HostReport,
    opts: &PushOptions,
    mut failed: Vec<String>,
) -> Vec<String> {
    if let Some(last) = r.health.last().filter(|h| h.status != Some(0)) {
        failed.push(format!(
            "health check failed after {} attempt(s) ({}): {}",
            r.health.len(),
            if last.timed_out {
                "timed out".to_string()
            } else {
                match last.status {
                    Some(c) => format!("exit {c}"),
                    None => "killed".to_string(),
                }
            },
            last.output.trim()
        ));
    }
    if opts.require_restarted && !r.stale.is_empty() {
        failed.push(format!(
            "processes still run replaced files (require_restarted): {}",
            stale_units(&r.stale)
        ));
    }
    failed
}

fn run_push(
    mut s: RunningAgent,
    store: &Store,
    image: &Image,
    cache: &Cache,
    opts: &PushOptions,
    clock: &Clock,
    r: &mut HostReport,
) -> Result<()> {
    let result = push_steps(&mut s, store, image, cache, opts, clock, r);
    r.wire_sent = s.conn.sent;
    r.wire_received = s.conn.received;
    r.wire = s
        .conn
        .by_message
        .iter()
        .map(|(k, [sent, received])| {
            (
                *k,
                WireBytes {
                    sent: *sent,
                    received: *received,
                },
            )
        })
        .collect();
    match result {
        Ok(()) => {
            s.close();
            Ok(())
        }
        Err(e) => Err(s.fail(e)),
    }
}

/// The session's steps over an agent started by this controller (`protocol::client`).
type Ready<'c> = client::Ready<'c, AgentRead, AgentWrite>;
type Planning<'c> = client::Planning<'c, AgentRead, AgentWrite>;
type Staging<'c> = client::Staging<'c, AgentRead, AgentWrite>;
type Committing<'c> = client::Committing<'c, AgentRead, AgentWrite>;
type Triggering<'c> = client::Triggering<'c, AgentRead, AgentWrite>;

/// The session, in the protocol's order (each step's type allows only the next): the
/// target and the host's differences, the plan, then (unless a dry run) the content, the
/// commit, the triggers and the health checks, each timed as its phase.
fn push_steps(
    s: &mut RunningAgent,
    store: &Store,
    image: &Image,
    cache: &Cache,
    opts: &PushOptions,
    clock: &Clock,
    r: &mut HostReport,
) -> Result<()> {
    let at = s.welcome.image;
    let scanning = clock.start(Phase::Scanning);
    let ready = Ready::new(&mut s.conn);
    let (changes, have, mut planning) = differences(ready, at, store, image, cache, opts, r)?;
    drop(scanning);
    let too_many = opts.max_delete.check(&changes, r.scan.entries);
    if let (Err(why), false) = (&too_many, opts.dry_run) {
        r.refused = true;
        return Err(Error::Refused(why.clone()));
    }

    let planning_phase = clock.start(Phase::Planning);
    // With mirrors, a host at an image takes the packs published for it where it can.
    let shared = match (opts.mirrors.is_empty(), at) {
        (false, Some(from)) if from != image.id && store.has_image(&from) => {
            let (shared, error) = image.shared_packs(store, cache, from);
            r.content.shared_packs_error = error;
            shared
        }
        _ => Arc::new(Vec::new()),
    };
    let plan_in = (&changes[..], &have[..], s.store_copies);
    // Without mirrors, each new pack is made while the one before it is sent; the
    // mirrors are asked for every pack by name, so those must all be made first.
    let later = (&shared[..], opts.mirrors.is_empty() && !opts.dry_run);
    let mut planned = plan(&mut planning, store, image, cache, plan_in, later, r)?;
    drop(planning_phase);
    if opts.dry_run {
        r.paths = path_changes(Some(store), &changes, &planned.items);
        // The dry run shows the whole plan, and fails as the push would.
        return too_many.map_err(Error::Refused);
    }

    let staging = clock.start(Phase::Staging);
    let items = &planned.items;
    let mut st: Staging = planning.stage(Stage {
        files: items.len() as u64,
        bytes: items.iter().map(|i| i.size).sum(),
    })?;
    let mut left = Left::all(items, &planned.packs);
    if !opts.mirrors.is_empty() {
        let rate = opts.transport.rate_per_host.unwrap_or(0);
        left = fetch(&mut st, left, &opts.mirrors, rate, cache, r)?;
    }
    let pending = std::mem::take(&mut planned.pending);
    send_while_packing(&mut st, store, cache, (items, &left), pending, clock, r)?;
    r.content.controller_bytes = r.sent.bytes();
    let committing = st.commit()?;
    r.commit_sent = true;
    drop(staging);
    let triggering = committed(committing, clock, r)?;
    r.image_after = Some(image.id);
    let triggers = clock.start(Phase::Triggers);
    let mut ready = triggering.finish(|e| match e {
        AfterCommit::Trigger(t) => r.triggers.push(t),
        AfterCommit::Stale(st) => r.stale = st.units,
    })?;
    drop(triggers);
    if let Some(h) = &opts.health {
        let _health = clock.start(Phase::HealthCheck);
        health_checks(&mut ready, h, r)?;
    }
    Ok(())
}

/// Sends the plan's content (`left`, then the packs of the `pending` groups), each pack
/// made on a thread of its own while the one before it goes out: a first install's
/// compression overlaps the link and the host's writing instead of preceding them. A
/// pack of whole contents is made fast when the sending waited for the one before it.
fn send_while_packing(
    st: &mut Staging,
    store: &Store,
    cache: &Cache,
    (items, left): (&[crate::plan::Item], &Left),
    pending: Vec<Vec<usize>>,
    clock: &Clock,
    r: &mut HostReport,
) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let raw = pending
        .iter()
        .map(|g| crate::plan::group_raw(items, g))
        .sum();
    let starved = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // One pack ahead: made while the one before it is sent, no more held.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let starved = &starved;
        scope.spawn(move || {
            for g in pending {
                let fast = starved.swap(false, Ordering::Relaxed);
                let making = crate::plan::Making::Beside { fast };
                let p = crate::plan::make_pack(store, cache, items, (g, making));
                let failed = p.is_err();
                // The receiver is gone when the sending failed: stop making packs.
                if tx.send(p).is_err() || failed {
                    break;
                }
            }
        });
        let mut made = Made {
            rx,
            starved,
            first: true,
        };
        let later = Later {
            packs: &mut made,
            raw,
            cache,
        };
        send_items(st, items, left, later, (clock.host(), clock.observer()), r)
    })
}

/// Contents the host holds already, each at a path (`Differences::have`).
type Have = Vec<(imager::Hash, Vec<u8>)>;

/// Sends the target and returns how the host differs from it (the changes, and the
/// contents it holds at other paths); a host that records no image (`at`) says what
/// its tree is first, so that one installed from an image of the store gets a manifest
/// delta.
fn differences<'c>(
    ready: Ready<'c>,
    at: Option<imager::Hash>,
    store: &Store,
    image: &Image,
    cache: &Cache,
    opts: &PushOptions,
    r: &mut HostReport,
) -> Result<(Vec<crate::protocol::Change>, Have, Planning<'c>)> {
    let manifest = match at {
        None => ManifestData::Ask,
        known => image.manifest_for(store, cache, known)?,
    };
    let targeted = ready.target(Target {
        image: image.id,
        manifest,
        local_state: image.local_state_file.clone(),
        triggers: image.triggers.clone(),
        verify: opts.rehash, // the wire keeps its name: agents of every version read it
        dry_run: opts.dry_run,
        previous: opts.restore_previous,
        signatures: image.signatures.clone(),
        owned: image.owned_file.clone(),
        install_triggers: opts.install_triggers,
    })?;
    let (differences, planning) = match targeted {
        Targeted::Asked(identity, asked) => {
            let manifest = image.manifest_for_identity(store, cache, &identity)?;
            r.recognized = matches!(manifest, ManifestData::Delta { .. });
            asked.manifest(crate::protocol::Manifest { manifest })?
        }
        Targeted::Differs(d, planning) => (d, planning),
    };
    let Differences {
        changes,
        have,
        scan,
        kept,
        unmanaged,
        ..
    } = differences;
    r.scan = scan;
    r.kept = kept;
    r.unmanaged = unmanaged;
    Ok((changes, have, planning))
}

/// Waits for the agent's `Committed`, timed as the commit phase.
fn committed<'c>(
    committing: Committing<'c>,
    clock: &Clock,
    r: &mut HostReport,
) -> Result<Triggering<'c>> {
    let _committing = clock.start(Phase::Committing);
    let (c, triggering) = committing.committed()?;
    // The agent's own staging time, from its `Stage` message (Phases::stage takes the
    // longer of it and the sending). A time is never negative, whatever it sends.
    r.phases.stage = c.stage_seconds.max(0.0);
    r.phases.commit = c.commit_seconds.max(0.0);
    r.commit_ops = c.ops;
    r.committed = true;
    Ok(triggering)
}

/// The units of a stale-process listing, for a message: "nginx.service, cron.service".
pub fn stale_units(stale: &[StaleUnit]) -> String {
    stale
        .iter()
        .map(|u| u.unit.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs the health check until it passes or its attempts are spent, each in `r.health`.
fn health_checks(ready: &mut Ready, h: &Health, r: &mut HostReport) -> Result<()> {
    for attempt in 0..=h.retries {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_secs(h.interval));
        }
        let run = ready.health(crate::protocol::Health {
            command: h.command.clone(),
            timeout: h.timeout,
        })?;
        let ok = run.status == Some(0);
        r.health.push(run);
        if ok {
            break;
        }
    }
    Ok(())
}

/// Runs `f` for every host, at most `jobs` at a time, returning results in host order.
pub fn for_hosts<H: Sync, T: Send>(hosts: &[H], jobs: usize, f: impl Fn(&H) -> T + Sync) -> Vec<T> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<T>>> =
        std::sync::Mutex::new((0..hosts.len()).map(|_| None).collect());
    std::thread::scope(|sc| {
        for _ in 0..jobs.clamp(1, hosts.len().max(1)) {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= hosts.len() {
                    break;
                }
                let out = f(&hosts[i]);
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(out);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect()
}
