//! The controller's side of a session: push an image to a host (plan, send, commit,
//! triggers), or ask a host how it differs from the image it runs (status, diff).

use crate::delta::{self, Cache};
use crate::error::{Error, Result};
use crate::protocol::{
    Change, ChangeKind, Kept, ManifestData, Msg, ScanStats, Source, TriggerRun, CHUNK,
};
use crate::transport::{self, HostSpec, Session, TransportOptions};
use imager::contract;
use imager::store::Store;
use imager::tree::escape::escape;
use imager::{Hash, Kind, Tree};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Files smaller than this are sent whole rather than as an rsync delta (the signature
/// round trip costs more than it saves).
const MIN_RSYNC: u64 = 16 << 10;

/// An image as the controller pushes it: its tree and text, and the local-state globs and
/// triggers it carries in `/usr/lib/imager/`.
pub struct Image {
    pub id: Hash,
    pub tree: Tree,
    pub text: String,
    pub local_state: Vec<String>,
    pub triggers: Vec<u8>,
}

impl Image {
    pub fn load(store: &Store, id: Hash) -> Result<Image> {
        let text = store.image_text(&id)?;
        let tree = imager::tree::text::parse(&text, &format!("image {id}"))?;
        let file = |p: &[u8]| -> Result<Option<Vec<u8>>> {
            match tree.get(p).map(|e| &e.kind) {
                Some(Kind::File { hash, .. }) => Ok(Some(store.read_object(hash)?)),
                _ => Ok(None),
            }
        };
        let local = file(contract::LOCAL_STATE_FILE.as_bytes())?;
        let triggers = file(contract::TRIGGERS_FILE.as_bytes())?.unwrap_or_default();
        Ok(Image {
            id,
            tree,
            text,
            local_state: contract::local_state_of(local.as_deref()),
            triggers,
        })
    }

    /// How to tell a host at image `base` (if any) what this image is.
    fn manifest_for(
        &self,
        store: &Store,
        cache: &Cache,
        base: Option<Hash>,
    ) -> Result<ManifestData> {
        match base {
            Some(b) if b == self.id => Ok(ManifestData::Recorded),
            Some(b) if store.has_image(&b) => {
                let old = store.image_text(&b)?;
                let d = cache
                    .manifest_delta((&b, &old), (&self.id, &self.text))
                    .map_err(|e| Error::Usage(format!("manifest delta: {e}")))?;
                Ok(ManifestData::Delta {
                    base: b,
                    delta: d.to_vec(),
                })
            }
            // The manifest is the content whose blake3 is the image ID: its compressed
            // form is cached like any whole object (once for all hosts, kept on disk).
            _ => Ok(ManifestData::Zstd(
                cache
                    .manifest_whole(&self.id, &self.text)
                    .map_err(|e| Error::Usage(format!("compressing the manifest: {e}")))?
                    .to_vec(),
            )),
        }
    }
}

#[derive(Clone, Default)]
pub struct PushOptions {
    pub dry_run: bool,
    pub verify: bool,
    pub transport: TransportOptions,
    /// Run on the host after its triggers; a failure fails the push.
    pub health: Option<crate::rollout::inventory::Health>,
    /// For a rollback: the previous image to record (what the host had recorded before
    /// the failed push), instead of the image it is leaving.
    pub restore_previous: Option<Option<Hash>>,
}

/// Files and bytes for one way of sending content.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Sent {
    pub files: u64,
    /// Bytes on the wire for them.
    pub bytes: u64,
    /// Their size once written.
    pub content_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ByKind {
    pub local_copy: Sent,
    pub zstd_delta: Sent,
    pub rsync_delta: Sent,
    pub whole: Sent,
}

impl ByKind {
    fn of(&mut self, source: &Source) -> &mut Sent {
        match source {
            Source::LocalCopy { .. } => &mut self.local_copy,
            Source::ZstdDelta => &mut self.zstd_delta,
            Source::RsyncDelta => &mut self.rsync_delta,
            Source::Whole => &mut self.whole,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Phases {
    pub connect: f64,
    pub scan: f64,
    pub plan: f64,
    /// Sending the content (the part a bandwidth limit stretches).
    pub send: f64,
    pub stage: f64,
    pub commit: f64,
    pub triggers: f64,
    pub health: f64,
    pub total: f64,
}

/// One planned path, for `--dry-run` and `diff`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PathChange {
    pub path: String,
    pub change: ChangeKind,
    /// How content would travel (files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<&'static str>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct HostReport {
    pub host: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub dry_run: bool,
    pub image_before: Option<String>,
    /// The image the host had recorded before `image_before`.
    pub previous_before: Option<String>,
    pub image_after: Option<String>,
    pub agent: Option<String>,
    pub agent_installed: bool,
    pub rolled_forward: bool,
    /// What happened, in a few words: "ok", "dry run", "failed before commit",
    /// "committed, trigger failed", "committed, health check failed" or "committed, then
    /// failed" (the host runs the new image; what ran after the commit went wrong).
    pub outcome: String,
    /// Whether the host's commit applied (it runs `image_after`), whatever came after.
    pub committed: bool,
    /// Triggers that exited non-zero, were killed or timed out.
    pub triggers_failed: u64,
    pub added: u64,
    pub changed: u64,
    pub metadata: u64,
    pub deleted: u64,
    /// Operations the agent's commit journal held.
    pub commit_ops: u64,
    /// What the plan would send (a dry run sends nothing).
    pub planned: ByKind,
    /// What was sent: the plan once every file went out, less when the push failed on
    /// the way (a file counts once all its bytes were sent; `bytes` counts every byte).
    pub sent: ByKind,
    pub wire_sent: u64,
    pub wire_received: u64,
    pub scan: ScanStats,
    /// Mount points and local-state symlinks on the host that the push left alone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<Kept>,
    pub phases: Phases,
    pub triggers: Vec<TriggerRun>,
    /// Every attempt of the health check, the last one deciding.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<TriggerRun>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathChange>,
}

/// What a host is told to do for each changed file.
struct Item {
    path: Vec<u8>,
    size: u64,
    source: Source,
    payload: Arc<Vec<u8>>,
}

/// Called as a push goes through its phases (progress bars).
pub trait Observer: Sync {
    fn phase(&self, _host: &str, _phase: &str) {}
    fn bytes(&self, _host: &str, _total: u64, _done: u64) {}
    /// A line for the log of a rollout (printed when there are no progress bars).
    fn log(&self, _line: &str) {}
    /// A rollout of `hosts` hosts begins.
    fn rollout(&self, _hosts: u64) {}
    /// A wave begins (`label`: colo and wave).
    fn wave(&self, _label: &str, _hosts: u64) {}
    /// A host of the rollout is done (pushed, checked and, if it failed, rolled back).
    fn host_done(&self, _ok: bool) {}
}

pub struct NoObserver;
impl Observer for NoObserver {}

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
    let mut r = HostReport {
        host: spec.to_string(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    obs.phase(&r.host, "connecting");
    let session = match transport::connect(spec, &opts.transport) {
        Ok(s) => s,
        Err(e) => {
            r.error = Some(e.to_string());
            r.outcome = "failed before commit".into();
            r.phases.total = started.elapsed().as_secs_f64();
            return r;
        }
    };
    r.phases.connect = started.elapsed().as_secs_f64();
    r.agent = Some(session.welcome.agent.clone());
    r.agent_installed = session.installed;
    r.rolled_forward = session.welcome.rolled_forward;
    r.image_before = session.welcome.image.map(|h| h.to_hex());
    r.previous_before = session.welcome.previous.map(|h| h.to_hex());
    let outcome = run_push(session, store, image, cache, opts, obs, &mut r);
    let failed_triggers: Vec<String> = r
        .triggers
        .iter()
        .filter(|t| t.status != Some(0))
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
        .collect();
    r.triggers_failed = failed_triggers.len() as u64;
    let errored = outcome.is_err();
    match outcome {
        Ok(()) => {
            let mut failed = failed_triggers;
            if let Some(last) = r.health.last().filter(|h| h.status != Some(0)) {
                failed.push(format!(
                    "health check failed after {} attempt(s) ({}): {}",
                    r.health.len(),
                    if last.timed_out {
                        "timed out".to_string()
                    } else {
                        format!("exit {:?}", last.status)
                    },
                    last.output.trim()
                ));
            }
            r.ok = failed.is_empty();
            if !r.ok {
                r.error = Some(failed.join("; "));
            }
        }
        Err(e) => r.error = Some(e.to_string()),
    }
    r.outcome = if r.ok && r.dry_run {
        "dry run"
    } else if r.ok {
        "ok"
    } else if !r.committed {
        "failed before commit"
    } else if errored {
        "committed, then failed"
    } else if r.triggers_failed > 0 {
        "committed, trigger failed"
    } else {
        "committed, health check failed"
    }
    .into();
    r.phases.total = started.elapsed().as_secs_f64();
    obs.phase(&r.host, if r.ok { "done" } else { "failed" });
    r
}

fn run_push(
    mut s: Session,
    store: &Store,
    image: &Image,
    cache: &Cache,
    opts: &PushOptions,
    obs: &dyn Observer,
    r: &mut HostReport,
) -> Result<()> {
    let result = push_steps(&mut s, store, image, cache, opts, obs, r);
    r.wire_sent = s.conn.sent;
    r.wire_received = s.conn.received;
    match result {
        Ok(()) => {
            s.close();
            Ok(())
        }
        Err(e) => Err(s.fail(e)),
    }
}

/// The error for a message that is not the one expected.
fn unexpected(expected: &str, m: &Msg) -> Error {
    Error::Protocol(format!("expected {expected}, got {}", m.name()))
}

fn push_steps(
    s: &mut Session,
    store: &Store,
    image: &Image,
    cache: &Cache,
    opts: &PushOptions,
    obs: &dyn Observer,
    r: &mut HostReport,
) -> Result<()> {
    let host = r.host.clone();
    let t = Instant::now();
    obs.phase(&host, "scanning");
    s.conn.send(&Msg::Target {
        image: image.id,
        manifest: image.manifest_for(store, cache, s.welcome.image)?,
        local_state: image.local_state.clone(),
        triggers: image.triggers.clone(),
        verify: opts.verify,
        dry_run: opts.dry_run,
        previous: opts.restore_previous,
    })?;
    let (changes, have) = match s.reply()? {
        Msg::Differences {
            changes,
            have,
            scan,
            kept,
            ..
        } => {
            r.scan = scan;
            r.kept = kept;
            (changes, have)
        }
        m => return Err(unexpected("Differences", &m)),
    };
    r.phases.scan = t.elapsed().as_secs_f64();

    let t = Instant::now();
    obs.phase(&host, "planning");
    let items = plan(s, store, image, cache, &changes, &have, r)?;
    r.phases.plan = t.elapsed().as_secs_f64();
    if opts.dry_run {
        r.paths = path_changes(&changes, &items);
        return Ok(());
    }

    let t = Instant::now();
    obs.phase(&host, "staging");
    send_items(s, &items, &host, obs, &mut r.sent)?;
    r.phases.send = t.elapsed().as_secs_f64();
    r.phases.stage = r.phases.send;
    obs.phase(&host, "committing");
    match s.reply()? {
        Msg::Committed(c) => {
            r.phases.stage += c.stage_seconds;
            r.phases.commit = c.commit_seconds;
            r.commit_ops = c.ops;
            r.committed = true;
        }
        m => return Err(unexpected("Committed", &m)),
    }
    r.image_after = Some(image.id.to_hex());
    let t = Instant::now();
    obs.phase(&host, "triggers");
    loop {
        match s.reply()? {
            Msg::TriggerRan(tr) => r.triggers.push(tr),
            Msg::Done => break,
            m => return Err(unexpected("TriggerRan", &m)),
        }
    }
    r.phases.triggers = t.elapsed().as_secs_f64();
    if let Some(h) = &opts.health {
        obs.phase(&host, "health check");
        let t = Instant::now();
        for attempt in 0..=h.retries {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_secs(h.interval));
            }
            s.conn.send(&Msg::Health {
                command: h.command.clone(),
                timeout: h.timeout,
            })?;
            match s.reply()? {
                Msg::HealthResult(run) => {
                    let ok = run.status == Some(0);
                    r.health.push(run);
                    if ok {
                        break;
                    }
                }
                m => return Err(unexpected("HealthResult", &m)),
            }
        }
        r.phases.health = t.elapsed().as_secs_f64();
    }
    Ok(())
}

/// Decides how each file's content travels and encodes it (deltas from the cache).
fn plan(
    s: &mut Session,
    store: &Store,
    image: &Image,
    cache: &Cache,
    changes: &[Change],
    have: &[(Hash, Vec<u8>)],
    r: &mut HostReport,
) -> Result<Vec<Item>> {
    let have: HashMap<Hash, &Vec<u8>> = have.iter().map(|(h, p)| (*h, p)).collect();
    enum Way {
        Copy(Vec<u8>),
        Zstd(Hash),
        Rsync,
        Whole,
    }
    let mut ways: Vec<(Vec<u8>, Hash, u64, Way)> = Vec::new();
    for c in changes {
        match c.kind {
            ChangeKind::Add => r.added += 1,
            ChangeKind::Content | ChangeKind::Replace => r.changed += 1,
            ChangeKind::Meta => r.metadata += 1,
            ChangeKind::Delete => r.deleted += 1,
        }
        if matches!(c.kind, ChangeKind::Meta | ChangeKind::Delete) {
            continue;
        }
        let Some(Kind::File { hash, size }) = image.tree.get(&c.path).map(|e| &e.kind) else {
            continue;
        };
        let old = match (&c.kind, c.host.as_ref().map(|h| &h.kind)) {
            (ChangeKind::Content, Some(Kind::File { hash, .. })) => Some(*hash),
            _ => None,
        };
        let way = if let Some(p) = have.get(hash) {
            Way::Copy((*p).clone())
        } else if *size > crate::protocol::MAX_DELTA_FILE {
            Way::Whole
        } else if let Some(o) = old.filter(|o| store.has_object(o)) {
            Way::Zstd(o)
        } else if old.is_some() && *size >= MIN_RSYNC {
            Way::Rsync
        } else {
            Way::Whole
        };
        ways.push((c.path.clone(), *hash, *size, way));
    }
    let rsync_paths: Vec<Vec<u8>> = ways
        .iter()
        .filter(|w| matches!(w.3, Way::Rsync))
        .map(|w| w.0.clone())
        .collect();
    let mut sigs: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    if !rsync_paths.is_empty() {
        s.conn.send(&Msg::SignatureRequest { paths: rsync_paths })?;
        match s.conn.recv("signatures")? {
            Msg::Signatures { sigs: v } => sigs.extend(v),
            Msg::Error { message } => return Err(Error::Agent(message)),
            m => {
                return Err(Error::Protocol(format!(
                    "expected Signatures, got {}",
                    m.name()
                )))
            }
        }
    }
    let level = cache.level();
    let items: Vec<Item> = ways
        .into_par_iter()
        .map(|(path, hash, size, way)| -> Result<Item> {
            let enc = |e: std::result::Result<Arc<Vec<u8>>, String>| {
                e.map_err(|m| Error::Usage(format!("encoding {}: {m}", escape(&path))))
            };
            let (source, payload) = match way {
                Way::Copy(from) => (Source::LocalCopy { from }, Arc::new(Vec::new())),
                Way::Whole => (Source::Whole, enc(cache.whole(store, &hash))?),
                Way::Zstd(old) => {
                    let d = enc(cache.zstd_delta(store, &old, &hash))?;
                    smaller(
                        d,
                        Source::ZstdDelta,
                        size,
                        || enc(cache.whole(store, &hash)),
                    )?
                }
                Way::Rsync => {
                    let sig = sigs.get(&path).ok_or_else(|| {
                        Error::Protocol(format!("no signature for {}", escape(&path)))
                    })?;
                    let new = store.read_object(&hash)?;
                    let d =
                        Arc::new(enc(delta::rsync_delta(sig, &new, level).map(Arc::new))?.to_vec());
                    smaller(d, Source::RsyncDelta, size, || {
                        enc(cache.whole(store, &hash))
                    })?
                }
            };
            Ok(Item {
                path,
                size,
                source,
                payload,
            })
        })
        .collect::<Result<_>>()?;
    for it in &items {
        let k = r.planned.of(&it.source);
        k.files += 1;
        k.bytes += it.payload.len() as u64;
        k.content_bytes += it.size;
    }
    Ok(items)
}

/// A delta, unless the whole file compressed is smaller (checked only when the delta is
/// not clearly small).
fn smaller(
    d: Arc<Vec<u8>>,
    kind: Source,
    size: u64,
    whole: impl FnOnce() -> Result<Arc<Vec<u8>>>,
) -> Result<(Source, Arc<Vec<u8>>)> {
    if (d.len() as u64) * 4 < size {
        return Ok((kind, d));
    }
    let w = whole()?;
    Ok(if w.len() <= d.len() {
        (Source::Whole, w)
    } else {
        (kind, d)
    })
}

/// Sends every item, counting into `sent` what went out (all of it unless this fails).
fn send_items(
    s: &mut Session,
    items: &[Item],
    host: &str,
    obs: &dyn Observer,
    sent: &mut ByKind,
) -> Result<()> {
    let content: u64 = items.iter().map(|i| i.size).sum();
    let total: u64 = items.iter().map(|i| i.payload.len() as u64).sum();
    s.conn.send(&Msg::Stage {
        files: items.len() as u64,
        bytes: content,
    })?;
    let mut done = 0u64;
    for it in items {
        s.conn.send(&Msg::Put {
            path: it.path.clone(),
            source: it.source.clone(),
            len: it.payload.len() as u64,
        })?;
        for chunk in it.payload.chunks(CHUNK) {
            s.conn.send(&Msg::Data {
                bytes: chunk.to_vec(),
            })?;
            done += chunk.len() as u64;
            sent.of(&it.source).bytes += chunk.len() as u64;
            obs.bytes(host, total, done);
        }
        let k = sent.of(&it.source);
        k.files += 1;
        k.content_bytes += it.size;
    }
    s.conn.send(&Msg::Commit)?;
    s.conn.flush()
}

fn path_changes(changes: &[Change], items: &[Item]) -> Vec<PathChange> {
    let via: HashMap<&[u8], &'static str> = items
        .iter()
        .map(|i| {
            (
                i.path.as_slice(),
                match i.source {
                    Source::LocalCopy { .. } => "local copy",
                    Source::ZstdDelta => "zstd delta",
                    Source::RsyncDelta => "rsync delta",
                    Source::Whole => "whole",
                },
            )
        })
        .collect();
    changes
        .iter()
        .map(|c| PathChange {
            path: escape(&c.path),
            change: c.kind,
            via: via.get(c.path.as_slice()).copied(),
        })
        .collect()
}

/// What `status` and `diff` learn about a host.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HostStatus {
    pub host: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub image: Option<String>,
    /// Names in the controller's store that point at the image now.
    pub names: Vec<String>,
    pub agent: Option<String>,
    pub drifted: bool,
    pub differences: u64,
    /// The unfinished commit (its image) that `abandon-commit` dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abandoned: Option<String>,
    /// The host is in the middle of a commit it cannot finish (the error says why).
    pub mid_commit: bool,
    /// Mount points and local-state symlinks, never compared or changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<Kept>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathChange>,
}

pub fn status_host(
    store: Option<&Store>,
    spec: &HostSpec,
    opts: &PushOptions,
    with_paths: bool,
) -> HostStatus {
    let mut st = HostStatus {
        host: spec.to_string(),
        ..Default::default()
    };
    let r = (|| -> Result<()> {
        let mut s = transport::connect(spec, &opts.transport)?;
        st.agent = Some(s.welcome.agent.clone());
        st.abandoned = s.welcome.abandoned.map(|h| h.to_hex());
        st.image = s.welcome.image.map(|h| h.to_hex());
        if let (Some(store), Some(id)) = (store, s.welcome.image) {
            st.names = store.names_of(&id)?;
        }
        let changes = match s
            .conn
            .send(&Msg::Status {
                verify: opts.verify,
            })
            .and_then(|_| s.reply())
        {
            Ok(Msg::Differences { changes, kept, .. }) => {
                st.kept = kept;
                changes
            }
            Ok(m) => return Err(s.fail(unexpected("Differences", &m))),
            Err(e) => return Err(s.fail(e)),
        };
        s.close();
        st.differences = changes.len() as u64;
        st.drifted = !changes.is_empty();
        if with_paths {
            st.paths = path_changes(&changes, &[]);
        }
        Ok(())
    })();
    match r {
        Ok(()) => st.ok = true,
        Err(e) => {
            let m = e.to_string();
            st.mid_commit = m.contains(crate::agent::commit::MID_COMMIT);
            st.error = Some(m);
        }
    }
    st
}

/// Runs `f` for every host, at most `jobs` at a time, returning results in host order.
pub fn for_hosts<T: Send>(
    hosts: &[HostSpec],
    jobs: usize,
    f: impl Fn(&HostSpec) -> T + Sync,
) -> Vec<T> {
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
