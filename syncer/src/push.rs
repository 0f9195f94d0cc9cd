//! The controller's side of a session: push an image to a host (plan, send, commit,
//! triggers), or ask a host how it differs from the image it runs (status, diff).

use crate::delta::Cache;
use crate::encoding::{rsync_delta, Encoding};
use crate::error::{Error, Result};
use crate::plan::{self, Candidates, Item, Pack, Wanted};
use crate::progress::{Clock, Phase};
use crate::protocol::{
    BlobUse, Change, ChangeKind, Data, Differences, Health, Kept, ManifestData, Msg, Previous, Put,
    ScanStats, SignatureRequest, Signatures, Stage, StaleUnit, Status, Target, TriggerRun,
    Unmanaged, CHUNK,
};
use crate::publish;
use crate::transport::{self, HostSpec, Session, TransportOptions};
use imager::contract;
use imager::store::Store;
use imager::tree::escape::escape;
use imager::{Hash, Kind, Tree};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
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
    /// What a host never compares: the image's local-state globs and its triggers'
    /// outputs.
    pub local_state: Vec<String>,
    /// The local-state file the globs come from, as the image holds it (sent as is).
    pub local_state_file: Option<Vec<u8>>,
    /// The prefixes the image owns completely, and the file they come from (sent as is).
    pub owned: Vec<String>,
    pub owned_file: Option<Vec<u8>>,
    pub triggers: Vec<u8>,
    /// Its signatures in the store, sent with the `Target` for the host's trust policy.
    pub signatures: Vec<crate::protocol::ImageSignature>,
    /// Host views found for a host's `Identity` (tree ID, kept paths), so that a
    /// rollout to many hosts never synced searches the store's images once.
    views: std::sync::Mutex<HashMap<ViewKey, Option<String>>>,
    /// The packs a clean host at an image gets (those `publish` publishes), by that
    /// image: a host at it that drifted reuses them, so it fetches what was published.
    shared: std::sync::Mutex<HashMap<Hash, SharedSlot>>,
}

/// One source image's shared packs (and why they could not be made), computed by the
/// first host that needs them while the others at that image wait.
type SharedSlot = Arc<std::sync::Mutex<Option<(Arc<Vec<plan::Shared>>, Option<String>)>>>;

/// A host's `Identity`: its tree's view ID and the paths it left alone.
type ViewKey = (Hash, Vec<Vec<u8>>);

impl Image {
    /// The signatures as [`imager::sign`] checks them.
    pub fn signed(&self) -> Vec<imager::sign::Signed> {
        crate::protocol::ImageSignature::signed(&self.signatures, " in the controller's store")
    }

    pub fn load(store: &Store, id: Hash) -> Result<Image> {
        let text = store.image_text(&id)?;
        // An image stored before imager refused it: said here, with the numbers, instead
        // of by every agent.
        contract::check_manifest_len(text.len())
            .map_err(|e| Error::Encode(format!("image {id} cannot be pushed: {e}")))?;
        let tree = imager::tree::text::parse(&text, &format!("image {id}"))?;
        let file = |p: &[u8]| -> Result<Option<Vec<u8>>> {
            match tree.get(p).map(|e| &e.kind) {
                Some(Kind::File { hash, .. }) => Ok(Some(store.read_object(hash)?)),
                _ => Ok(None),
            }
        };
        let local = file(contract::LOCAL_STATE_FILE.as_bytes())?;
        let triggers = file(contract::TRIGGERS_FILE.as_bytes())?.unwrap_or_default();
        let owned = file(contract::OWNED_FILE.as_bytes())?;
        Ok(Image {
            id,
            tree,
            text,
            local_state: contract::host_local_globs(local.as_deref(), &triggers)
                .map_err(|e| Error::Encode(format!("image {id}: {e}")))?,
            local_state_file: local,
            owned: contract::owned_of(owned.as_deref()),
            owned_file: owned,
            triggers,
            signatures: store
                .signatures(&id)?
                .into_iter()
                .map(|s| crate::protocol::ImageSignature {
                    statement: s.statement,
                    signature: s.signature,
                })
                .collect(),
            views: Default::default(),
            shared: Default::default(),
        })
    }

    /// The packs a clean host at `from` gets for this image, computed once per image
    /// pair. They only save bytes: when they cannot be made, hosts plan without them
    /// (the reason is in the hosts' reports, `shared_packs_error`).
    pub fn shared_packs(
        &self,
        store: &Store,
        cache: &Cache,
        from: Hash,
    ) -> (Arc<Vec<plan::Shared>>, Option<String>) {
        let slot = self
            .shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(from)
            .or_default()
            .clone();
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(made) = slot.as_ref() {
            return made.clone();
        }
        let made = store
            .read_image(&from)
            .map_err(Error::from)
            .and_then(|tree| publish::plan_from(store, cache, self, &tree));
        let made = match made {
            Ok((items, packs)) => (Arc::new(plan::Shared::of(&items, packs)), None),
            Err(e) => (
                Arc::new(Vec::new()),
                Some(format!("the packs published for image {from}: {e}")),
            ),
        };
        *slot = Some(made.clone());
        made
    }

    /// How to tell a host that records no image what this image is, once it has said
    /// the ID of its own tree's host view ([`crate::compare::host_view`]) and what it
    /// left alone: a delta against the view of the image (one a name of the store
    /// points or pointed at) whose view has that ID, else whole.
    fn manifest_for_identity(
        &self,
        store: &Store,
        cache: &Cache,
        id: &crate::protocol::Identity,
    ) -> Result<ManifestData> {
        let Some(view) = self.view_with_id(store, id)? else {
            return self.manifest_for(store, cache, None);
        };
        let d = cache
            .manifest_delta((&id.tree, &view), (&self.id, &self.text))
            .map_err(|e| Error::Encode(format!("manifest delta: {e}")))?;
        Ok(ManifestData::Delta {
            base: id.tree,
            delta: d.to_vec(),
        })
    }

    /// The host view (under this image's local-state globs) of the image, among those
    /// the store's names point or pointed at, whose view the host said it has.
    fn view_with_id(
        &self,
        store: &Store,
        id: &crate::protocol::Identity,
    ) -> Result<Option<String>> {
        let key = (id.tree, id.kept.clone());
        if let Some(v) = self
            .views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(v.clone());
        }
        let found = self.search_view(store, id)?;
        self.views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, found.clone());
        Ok(found)
    }

    fn search_view(&self, store: &Store, id: &crate::protocol::Identity) -> Result<Option<String>> {
        let local = crate::agent::scan::local_excludes(&self.local_state)?;
        let mut seen = std::collections::HashSet::new();
        for name in store.refs()? {
            for image in store.ref_history(&name)? {
                if !seen.insert(image) || !store.has_image(&image) {
                    continue;
                }
                let tree = store.read_image(&image)?;
                let view = crate::compare::host_view(tree.entries().iter(), &local, &id.kept)?;
                if imager::tree::text::id_of(&view) == id.tree {
                    return Ok(Some(view));
                }
            }
        }
        Ok(None)
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
                    .map_err(|e| Error::Encode(format!("manifest delta: {e}")))?;
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
                    .map_err(|e| Error::Encode(format!("compressing the manifest: {e}")))?
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
    /// Processes still running replaced files after the triggers fail the push (the
    /// inventory's `require_restarted`).
    pub require_restarted: bool,
    /// For a rollback: the previous image to record (what the host had recorded before
    /// the failed push), instead of the image it is leaving.
    pub restore_previous: Previous,
    /// `--require-signed` / the inventory's `require_signed`: the controller pushes only
    /// an image this policy accepts (the hosts check their own policy again).
    pub require_signed: Option<std::sync::Arc<imager::sign::TrustPolicy>>,
    /// HTTP mirrors of a published store (`crate::publish`), in order (the colo's cache,
    /// then the origin): the host fetches what they have; the rest comes over ssh.
    pub mirrors: Vec<String>,
    /// Run the image's triggers on a first install too (`--install-triggers`).
    pub install_triggers: bool,
    /// The most a host's plan may delete (`--max-delete`, the policy's `max_delete`):
    /// a count, or a percentage of the host's entries; `None`: no limit.
    pub max_delete: crate::deletes::MaxDelete,
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
    /// bsdiff patches, on their own and in packs (a packed file's `bytes` are its share
    /// of its pack's, in proportion to its raw part).
    pub bsdiff: Sent,
    /// Whole content, on its own and in packs (shared out the same way).
    pub whole: Sent,
    /// Large files' records.
    pub chunked: Sent,
}

impl ByKind {
    fn of(&mut self, encoding: &Encoding) -> &mut Sent {
        match encoding {
            Encoding::LocalCopy { .. } => &mut self.local_copy,
            Encoding::ZstdDelta => &mut self.zstd_delta,
            Encoding::RsyncDelta => &mut self.rsync_delta,
            Encoding::Bsdiff => &mut self.bsdiff,
            Encoding::Whole => &mut self.whole,
            Encoding::Chunked => &mut self.chunked,
        }
    }

    /// Bytes on the wire, all ways together.
    pub fn bytes(&self) -> u64 {
        self.rows().iter().map(|(_, s)| s.bytes).sum()
    }

    /// Each way with its label, in the order reports list them.
    pub fn rows(&self) -> [(&'static str, &Sent); 6] {
        [
            (
                Encoding::LocalCopy { from: Vec::new() }.label(),
                &self.local_copy,
            ),
            (Encoding::ZstdDelta.label(), &self.zstd_delta),
            (Encoding::RsyncDelta.label(), &self.rsync_delta),
            (Encoding::Bsdiff.label(), &self.bsdiff),
            (Encoding::Whole.label(), &self.whole),
            (Encoding::Chunked.label(), &self.chunked),
        ]
    }
}

/// What happened to a host, in a few words (`HostReport::outcome`; the JSON and text
/// reports spell it as below).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum PushOutcome {
    #[serde(rename = "ok")]
    Ok,
    #[serde(rename = "dry run")]
    DryRun,
    /// The host was left as it was.
    #[default]
    #[serde(rename = "failed before commit")]
    FailedBeforeCommit,
    /// The host runs the new image; the session failed after the commit.
    #[serde(rename = "committed, then failed")]
    CommittedThenFailed,
    #[serde(rename = "committed, trigger failed")]
    CommittedTriggerFailed,
    #[serde(rename = "committed, health check failed")]
    CommittedHealthCheckFailed,
    /// Processes still run replaced files and the push required them restarted.
    #[serde(rename = "committed, stale processes")]
    CommittedStaleProcesses,
    /// The agent stopped after its commit point (the journal was written): some of the
    /// new image is in place, and the next session on the host finishes the commit
    /// before anything else (`mid_commit` says to which image and how far).
    #[serde(rename = "in the middle of a commit")]
    MidCommit,
    /// The session ended after the controller sent `Commit` and before the agent said
    /// how it went (killed, connection lost): the host may be in the middle of the
    /// commit, or untouched; the next session finishes it if it began.
    #[serde(rename = "stopped during its commit")]
    CommitInterrupted,
}

impl PushOutcome {
    pub fn words(self) -> &'static str {
        match self {
            PushOutcome::Ok => "ok",
            PushOutcome::DryRun => "dry run",
            PushOutcome::FailedBeforeCommit => "failed before commit",
            PushOutcome::CommittedThenFailed => "committed, then failed",
            PushOutcome::CommittedTriggerFailed => "committed, trigger failed",
            PushOutcome::CommittedHealthCheckFailed => "committed, health check failed",
            PushOutcome::CommittedStaleProcesses => "committed, stale processes",
            PushOutcome::MidCommit => "in the middle of a commit",
            PushOutcome::CommitInterrupted => "stopped during its commit",
        }
    }

    /// The outcome of a finished push (`errored`: the session failed).
    fn of(r: &HostReport, errored: bool) -> PushOutcome {
        if r.ok && r.dry_run {
            PushOutcome::DryRun
        } else if r.ok {
            PushOutcome::Ok
        } else if r.mid_commit.is_some() {
            PushOutcome::MidCommit
        } else if !r.committed && r.commit_sent {
            PushOutcome::CommitInterrupted
        } else if !r.committed {
            PushOutcome::FailedBeforeCommit
        } else if errored {
            PushOutcome::CommittedThenFailed
        } else if r.triggers_failed > 0 {
            PushOutcome::CommittedTriggerFailed
        } else if r.health.last().is_some_and(|h| h.status != Some(0)) {
            PushOutcome::CommittedHealthCheckFailed
        } else {
            PushOutcome::CommittedStaleProcesses
        }
    }
}

impl std::fmt::Display for PushOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.words())
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

impl Phases {
    /// Adds what `clock` timed (the agent's own stage and commit seconds are in already)
    /// and the total since `started`.
    fn add_clock(&mut self, clock: &Clock, started: Instant) {
        self.connect = clock.seconds(Phase::Connecting);
        self.scan = clock.seconds(Phase::Scanning);
        self.plan = clock.seconds(Phase::Planning);
        self.send = clock.seconds(Phase::Staging);
        self.stage += self.send;
        self.triggers = clock.seconds(Phase::Triggers);
        self.health = clock.seconds(Phase::HealthCheck);
        self.total = started.elapsed().as_secs_f64();
    }
}

/// One planned path, for `--dry-run` and `diff`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PathChange {
    pub path: String,
    pub change: ChangeKind,
    /// What differs, as `rsync --itemize-changes` says it ([`crate::protocol::item`]).
    pub item: String,
    /// A delete of a path the host made (not the recorded image's), under a prefix the
    /// image owns.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub host_made: bool,
    /// How content would travel (files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<&'static str>,
    /// In a pack with other files.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub packed: bool,
    /// For a file whose old version the store holds: the size of each way computed,
    /// compressed on its own, and what kind of file it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Candidates>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<&'static str>,
}

/// The packs of a push (see [`crate::encoding::pack`]).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Packs {
    pub packs: u64,
    pub files: u64,
    /// Their raw parts (contents and patches), before compression.
    pub raw_bytes: u64,
    /// On the wire.
    pub bytes: u64,
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
    /// The host's trust policy as its agent described it (`None`: it has none).
    pub trust: Option<String>,
    pub agent_installed: bool,
    pub rolled_forward: bool,
    /// A host that recorded no image had the tree of an image of the store (its host
    /// view: without local state, mount points and directory mtimes), so the manifest
    /// went as a delta.
    pub recognized: bool,
    /// What happened, in a few words: "ok", "dry run", "failed before commit",
    /// "committed, trigger failed", "committed, health check failed", "committed, stale
    /// processes" or "committed, then failed" (the host runs the new image; what ran
    /// after the commit went wrong).
    pub outcome: PushOutcome,
    /// Whether the host's commit applied (it runs `image_after`), whatever came after.
    pub committed: bool,
    /// The plan deleted more than `--max-delete` allows: stopped before anything was
    /// written (so a rollout has nothing to roll back).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// Why the host's record of its image was not trusted (it was then treated as
    /// recording no image, and the push recorded the image again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged_record: Option<String>,
    /// The controller sent `Commit` (what the agent did with it is `committed` or
    /// `mid_commit`).
    pub commit_sent: bool,
    /// The commit the host is in the middle of, when the agent stopped after its commit
    /// point (this push's, or one an earlier session left that it could not finish).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mid_commit: Option<crate::protocol::MidCommit>,
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
    /// Where the wire's bytes went: by message, sent and received (frames included).
    pub wire: BTreeMap<&'static str, WireBytes>,
    /// Where the content came from: the mirrors (each one's account) and the controller.
    pub content: ContentSources,
    /// Planned packs.
    pub packs: Packs,
    pub scan: ScanStats,
    /// Mount points and local-state symlinks on the host that the push left alone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<Kept>,
    /// What the host made outside the image's owned prefixes, kept (outermost paths).
    pub unmanaged: Vec<Unmanaged>,
    pub phases: Phases,
    pub triggers: Vec<TriggerRun>,
    /// After the triggers: processes, by unit, that still run files the push (or
    /// anything else) replaced, so still run the old code until restarted.
    pub stale: Vec<StaleUnit>,
    /// Every attempt of the health check, the last one deciding.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<TriggerRun>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathChange>,
}

/// Where a host's content came from.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ContentSources {
    /// Content bytes (encoded, as published) the host took from mirrors, and those the
    /// controller sent in `Data` frames.
    pub mirrors_bytes: u64,
    pub controller_bytes: u64,
    /// Blobs offered for fetching, and how many no mirror gave (sent by the controller).
    pub blobs: u64,
    pub blobs_missing: u64,
    /// Each mirror's account, in the order tried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<crate::protocol::MirrorStats>,
    /// Why the published packs of the host's image could not be planned (the host then
    /// fetched only what its own plan names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_packs_error: Option<String>,
}

impl ContentSources {
    /// Adds another host's (for a colo's or the fleet's total): mirrors by URL.
    pub fn add(&mut self, o: &ContentSources) {
        self.mirrors_bytes += o.mirrors_bytes;
        self.controller_bytes += o.controller_bytes;
        self.blobs += o.blobs;
        self.blobs_missing += o.blobs_missing;
        for m in &o.mirrors {
            match self.mirrors.iter_mut().find(|x| x.url == m.url) {
                Some(x) => {
                    x.bytes += m.bytes;
                    x.requests += m.requests;
                    x.blobs += m.blobs;
                    x.cache_hits += m.cache_hits;
                    x.cache_misses += m.cache_misses;
                    x.not_found += m.not_found;
                    x.errors += m.errors;
                    x.corrupt += m.corrupt;
                    x.resumed += m.resumed;
                    if !m.last_error.is_empty() {
                        x.last_error = m.last_error.clone();
                    }
                }
                None => self.mirrors.push(m.clone()),
            }
        }
    }
}

/// Bytes of one message kind on the wire.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct WireBytes {
    pub sent: u64,
    pub received: u64,
}

pub use crate::progress::{NoObserver, Observer};

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
    let connected = transport::connect(spec, &opts.transport);
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
    r.image_before = session.welcome.image.map(|h| h.to_hex());
    r.previous_before = session.welcome.previous.map(|h| h.to_hex());
    let outcome = run_push(session, store, image, cache, opts, &clock, &mut r);
    let failed_triggers: Vec<String> = r
        .triggers
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
    r.outcome = PushOutcome::of(&r, errored);
    r.phases.add_clock(&clock, started);
    clock.finish(if r.ok { Phase::Done } else { Phase::Failed });
    r
}

fn run_push(
    mut s: Session,
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
    clock: &Clock,
    r: &mut HostReport,
) -> Result<()> {
    let scanning = clock.start(Phase::Scanning);
    // A host that records no image is asked what its tree is first: one that was
    // installed from (or is a copy of) an image of the store gets a manifest delta.
    let manifest = match s.welcome.image {
        None => ManifestData::Ask,
        known => image.manifest_for(store, cache, known)?,
    };
    let asked = manifest == ManifestData::Ask;
    s.conn.send(&Msg::Target(Target {
        image: image.id,
        manifest,
        local_state: image.local_state_file.clone(),
        triggers: image.triggers.clone(),
        verify: opts.verify,
        dry_run: opts.dry_run,
        previous: opts.restore_previous,
        signatures: image.signatures.clone(),
        owned: image.owned_file.clone(),
        install_triggers: opts.install_triggers,
    }))?;
    if asked {
        match s.reply()? {
            Msg::Identity(i) => {
                let manifest = image.manifest_for_identity(store, cache, &i)?;
                r.recognized = matches!(manifest, ManifestData::Delta { .. });
                s.conn
                    .send(&Msg::Manifest(crate::protocol::Manifest { manifest }))?;
            }
            m => return Err(unexpected("Identity", &m)),
        }
    }
    let (changes, have) = match s.reply()? {
        Msg::Differences(Differences {
            changes,
            have,
            scan,
            kept,
            unmanaged,
            ..
        }) => {
            r.scan = scan;
            r.kept = kept;
            r.unmanaged = unmanaged;
            (changes, have)
        }
        m => return Err(unexpected("Differences", &m)),
    };
    drop(scanning);
    let too_many = opts.max_delete.check(&changes, r.scan.entries);
    if let (Err(why), false) = (&too_many, opts.dry_run) {
        r.refused = true;
        return Err(Error::Refused(why.clone()));
    }

    let planning = clock.start(Phase::Planning);
    // With mirrors, a host at an image takes the packs published for it where it can.
    let shared = match (opts.mirrors.is_empty(), s.welcome.image) {
        (false, Some(from)) if from != image.id && store.has_image(&from) => {
            let (shared, error) = image.shared_packs(store, cache, from);
            r.content.shared_packs_error = error;
            shared
        }
        _ => Arc::new(Vec::new()),
    };
    let (items, packs) = plan(s, store, image, cache, (&changes, &have), &shared, r)?;
    drop(planning);
    if opts.dry_run {
        r.paths = path_changes(Some(store), &changes, &items);
        // The dry run shows the whole plan, and fails as the push would.
        return too_many.map_err(Error::Refused);
    }

    let staging = clock.start(Phase::Staging);
    s.conn.send(&Msg::Stage(Stage {
        files: items.len() as u64,
        bytes: items.iter().map(|i| i.size).sum(),
    }))?;
    let mut left = Left::all(&items, &packs);
    if !opts.mirrors.is_empty() {
        let rate = opts.transport.rate_per_host.unwrap_or(0);
        left = fetch(s, left, &opts.mirrors, rate, cache.level(), r)?;
    }
    send_items(
        s,
        &items,
        &left,
        clock.host(),
        clock.observer(),
        &mut r.sent,
    )?;
    r.content.controller_bytes = r.sent.bytes();
    r.commit_sent = true;
    drop(staging);
    let _committing = clock.start(Phase::Committing);
    match s.reply()? {
        Msg::Committed(c) => {
            // The agent's part of staging: what it did after the last byte arrived.
            // The agent's figures: a time is never negative, whatever it sends.
            r.phases.stage = c.stage_seconds.max(0.0);
            r.phases.commit = c.commit_seconds.max(0.0);
            r.commit_ops = c.ops;
            r.committed = true;
        }
        m => return Err(unexpected("Committed", &m)),
    }
    r.image_after = Some(image.id.to_hex());
    let triggers = clock.start(Phase::Triggers);
    loop {
        match s.reply()? {
            Msg::TriggerRan(tr) => r.triggers.push(tr),
            Msg::Stale(st) => r.stale = st.units,
            Msg::Done => break,
            m => return Err(unexpected("TriggerRan, Stale or Done", &m)),
        }
    }
    drop(triggers);
    if let Some(h) = &opts.health {
        let _health = clock.start(Phase::HealthCheck);
        health_checks(s, h, r)?;
    }
    Ok(())
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
fn health_checks(
    s: &mut Session,
    h: &crate::rollout::inventory::Health,
    r: &mut HostReport,
) -> Result<()> {
    for attempt in 0..=h.retries {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_secs(h.interval));
        }
        s.conn.send(&Msg::Health(Health {
            command: h.command.clone(),
            timeout: h.timeout,
        }))?;
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
    Ok(())
}

/// Decides how each file's content travels ([`choose`]) from the host's differences
/// and the contents it has, asks the host for the rsync signatures that needs, and
/// encodes every file (deltas from the cache; `shared` packs reused where they fit).
fn plan(
    s: &mut Session,
    store: &Store,
    image: &Image,
    cache: &Cache,
    (changes, have): (&[Change], &[(Hash, Vec<u8>)]),
    shared: &[plan::Shared],
    r: &mut HostReport,
) -> Result<(Vec<Item>, Vec<Pack>)> {
    for c in changes {
        match c.kind {
            ChangeKind::Add => r.added += 1,
            ChangeKind::Content | ChangeKind::Replace => r.changed += 1,
            ChangeKind::Meta => r.metadata += 1,
            ChangeKind::Delete => r.deleted += 1,
        }
    }
    let choices = choose(changes, &image.tree, have, |h| store.has_object(h));
    let sigs = signatures(s, &choices)?;
    let (items, packs) = encode_all(store, cache, &sigs, choices, shared)?;
    for it in items.iter().filter(|it| !it.packed) {
        let k = r.planned.of(&it.encoding);
        k.files += 1;
        k.bytes += it.payload.len();
        k.content_bytes += it.size;
    }
    for p in &packs {
        for (&i, bytes) in p.items.iter().zip(pack_shares(p)) {
            let k = r.planned.of(&items[i].encoding);
            k.files += 1;
            k.bytes += bytes;
            k.content_bytes += items[i].size;
        }
        r.packs.packs += 1;
        r.packs.files += p.items.len() as u64;
        r.packs.raw_bytes += p.raw;
        r.packs.bytes += p.payload.len() as u64;
    }
    Ok((items, packs))
}

/// Every file encoded as chosen, packed where packs take them (first the `shared` ones
/// that fit, [`plan::reuse`]), the rest finished alone: the same for a host and for
/// [`crate::publish`], so what is published for a host at an image is byte for byte
/// what a push to it would send.
pub(crate) fn encode_all(
    store: &Store,
    cache: &Cache,
    sigs: &HashMap<Vec<u8>, Vec<u8>>,
    choices: Vec<Choice>,
    shared: &[plan::Shared],
) -> Result<(Vec<Item>, Vec<Pack>)> {
    let mut items: Vec<Item> = choices
        .into_par_iter()
        .map(|c| encode(store, cache, sigs, c))
        .collect::<Result<_>>()?;
    let mut packs = plan::reuse(&mut items, shared);
    packs.extend(plan::packs(store, cache, &mut items)?);
    plan::finish_alone(store, cache, &mut items)?;
    Ok((items, packs))
}

/// Each packed file's share of its pack's bytes on the wire.
fn pack_shares(p: &Pack) -> Vec<u64> {
    // Skipped entries' bytes go to the files taken (they travel for them).
    let weights: Vec<u64> = p
        .entries
        .iter()
        .enumerate()
        .filter(|(k, _)| !p.skip.contains(&(*k as u32)))
        .map(|(_, e)| e.len)
        .collect();
    plan::apportion(p.payload.len() as u64, &weights)
}

/// How one file's content may travel, decided before anything is encoded.
type Choice = Wanted;

/// How the content of each changed file of `tree` travels: a local copy when the host
/// holds it already (`have`), chunked when it is large (against the host's old version
/// when the store holds that: [`crate::encoding::chunked`]), a zstd delta from the host's old version when the store holds that (`in_store`),
/// an rsync delta when it does not and the file is large enough to be worth the
/// signature round trip, else whole. Metadata changes, deletions and non-files carry no
/// content.
pub(crate) fn choose(
    changes: &[Change],
    tree: &Tree,
    have: &[(Hash, Vec<u8>)],
    in_store: impl Fn(&Hash) -> bool,
) -> Vec<Choice> {
    let have: HashMap<Hash, &Vec<u8>> = have.iter().map(|(h, p)| (*h, p)).collect();
    let mut out = Vec::new();
    for c in changes {
        if matches!(c.kind, ChangeKind::Meta | ChangeKind::Delete) {
            continue;
        }
        let Some(Kind::File { hash, size }) = tree.get(&c.path).map(|e| &e.kind) else {
            continue;
        };
        let old = match (&c.kind, c.host.as_ref().map(|h| &h.kind)) {
            (ChangeKind::Content, Some(Kind::File { hash, size })) => Some((*hash, *size)),
            _ => None,
        };
        let (encoding, base) = if let Some(p) = have.get(hash) {
            (Encoding::LocalCopy { from: (*p).clone() }, None)
        } else if *size > crate::encoding::chunked::LARGE {
            (Encoding::Chunked, old.filter(|(o, _)| in_store(o)))
        } else if let Some(o) = old.filter(|(o, _)| in_store(o)) {
            (Encoding::ZstdDelta, Some(o))
        } else if old.is_some() && *size >= MIN_RSYNC {
            (Encoding::RsyncDelta, None)
        } else {
            (Encoding::Whole, None)
        };
        out.push(Choice {
            path: c.path.clone(),
            hash: *hash,
            size: *size,
            encoding,
            base,
        });
    }
    out
}

/// The host's rsync signatures of the files that travel as rsync deltas (one round
/// trip, none when there are no such files).
fn signatures(s: &mut Session, choices: &[Choice]) -> Result<HashMap<Vec<u8>, Vec<u8>>> {
    let paths: Vec<Vec<u8>> = choices
        .iter()
        .filter(|c| c.encoding == Encoding::RsyncDelta)
        .map(|c| c.path.clone())
        .collect();
    let mut sigs: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    if !paths.is_empty() {
        s.conn
            .send(&Msg::SignatureRequest(SignatureRequest { paths }))?;
        match s.conn.recv("signatures")? {
            Msg::Signatures(Signatures { sigs: v }) => sigs.extend(v),
            Msg::Error(e) => return Err(Error::from_agent(e)),
            m => {
                return Err(Error::Protocol(format!(
                    "expected Signatures, got {}",
                    m.name()
                )))
            }
        }
    }
    Ok(sigs)
}

/// One file's encoded content as chosen (a delta only when smaller than the whole).
fn encode(
    store: &Store,
    cache: &Cache,
    sigs: &HashMap<Vec<u8>, Vec<u8>>,
    w: Choice,
) -> Result<Item> {
    plan::encode(store, cache, w, |w| match &w.encoding {
        Encoding::RsyncDelta => {
            let sig = sigs
                .get(&w.path)
                .ok_or_else(|| Error::Protocol(format!("no signature for {}", escape(&w.path))))?;
            let new = store.read_object(&w.hash)?;
            let d = rsync_delta::encode(sig, &new, cache.level())
                .map(Arc::new)
                .map_err(|m| Error::Encode(format!("encoding {}: {m}", escape(&w.path))))?;
            let whole = || {
                cache
                    .whole(store, &w.hash)
                    .map_err(|m| Error::Encode(format!("encoding {}: {m}", escape(&w.path))))
            };
            // An rsync delta, or the whole file when that is smaller.
            smaller(d, Encoding::RsyncDelta, w.size, whole)
        }
        // A local copy: nothing travels but the path.
        e => Ok((e.clone(), Arc::new(Vec::new()))),
    })
}

/// A delta, unless the whole file compressed is smaller (checked only when the delta is
/// not clearly small).
fn smaller(
    d: Arc<Vec<u8>>,
    kind: Encoding,
    size: u64,
    whole: impl FnOnce() -> Result<Arc<Vec<u8>>>,
) -> Result<(Encoding, Arc<Vec<u8>>)> {
    if (d.len() as u64) * 4 < size {
        return Ok((kind, d));
    }
    let w = whole()?;
    Ok(if w.len() <= d.len() {
        (Encoding::Whole, w)
    } else {
        (kind, d)
    })
}

/// What the controller sends itself: the packs and lone items no mirror gave.
struct Left<'a> {
    packs: Vec<&'a Pack>,
    alone: Vec<&'a Item>,
}

impl<'a> Left<'a> {
    fn all(items: &'a [Item], packs: &'a [Pack]) -> Left<'a> {
        Left {
            packs: packs.iter().collect(),
            alone: items.iter().filter(|it| !it.packed).collect(),
        }
    }
}

/// Asks the host to fetch every published blob of the plan from `mirrors` (packs by
/// their key, lone files by what they are: [`crate::publish`] names both the same way),
/// records what it got, and leaves the rest to the controller.
fn fetch<'a>(
    s: &mut Session,
    all: Left<'a>,
    mirrors: &[String],
    rate: u64,
    level: i32,
    r: &mut HostReport,
) -> Result<Left<'a>> {
    let mut left = Left {
        packs: Vec::new(),
        alone: Vec::new(),
    };
    // Each blob's pack or item, in the order of `blobs`.
    let mut which: Vec<std::result::Result<&Pack, &Item>> = Vec::new();
    let mut blobs = Vec::new();
    for p in all.packs {
        blobs.push(crate::protocol::Blob {
            name: publish::pack_name(&p.key, level),
            len: p.payload.len() as u64,
            hash: Hash::of(&p.payload),
            stages: BlobUse::Pack {
                entries: p.entries.clone(),
                skip: p.skip.clone(),
            },
        });
        which.push(Ok(p));
    }
    for it in all.alone {
        let Some(name) = publish::item_name(it, level) else {
            left.alone.push(it);
            continue;
        };
        blobs.push(crate::protocol::Blob {
            name,
            len: it.payload.len(),
            hash: Hash::of(it.payload.bytes()),
            stages: BlobUse::Put {
                path: it.path.clone(),
                encoding: it.encoding.clone(),
            },
        });
        which.push(Err(it));
    }
    if blobs.is_empty() {
        return Ok(left);
    }
    s.conn.send(&Msg::Fetch(crate::protocol::Fetch {
        mirrors: mirrors.to_vec(),
        rate,
        blobs,
    }))?;
    let answer = match s.reply()? {
        Msg::Fetched(f) => f,
        m => return Err(unexpected("Fetched", &m)),
    };
    let missing: std::collections::HashSet<u32> = answer.missing.iter().copied().collect();
    if missing.iter().any(|&m| m as usize >= which.len()) {
        return Err(Error::Protocol(
            "Fetched names a blob that was not asked for".into(),
        ));
    }
    r.content.blobs = which.len() as u64;
    r.content.blobs_missing = missing.len() as u64;
    for (n, w) in which.into_iter().enumerate() {
        match (missing.contains(&(n as u32)), w) {
            (true, Ok(p)) => left.packs.push(p),
            (true, Err(it)) => left.alone.push(it),
            (false, Ok(p)) => r.content.mirrors_bytes += p.payload.len() as u64,
            (false, Err(it)) => r.content.mirrors_bytes += it.payload.len(),
        }
    }
    r.content.mirrors = answer.mirrors;
    Ok(left)
}

/// Sends what is `left` to the controller (`Stage` was sent; `items` are what packs
/// index), counting into `sent` what went out (all of it unless this fails).
fn send_items(
    s: &mut Session,
    items: &[Item],
    left: &Left,
    host: &str,
    obs: &dyn Observer,
    sent: &mut ByKind,
) -> Result<()> {
    let total: u64 = left.alone.iter().map(|i| i.payload.len()).sum::<u64>()
        + left
            .packs
            .iter()
            .map(|p| p.payload.len() as u64)
            .sum::<u64>();
    let mut done = 0u64;
    for p in &left.packs {
        s.conn.send(&Msg::Pack(crate::protocol::Pack {
            entries: p.entries.clone(),
            skip: p.skip.clone(),
            len: p.payload.len() as u64,
        }))?;
        // Each chunk's bytes go to the packed files in order, each up to its share.
        let shares = pack_shares(p);
        let mut owed = p.items.iter().zip(shares).peekable();
        let mut left_of_first = owed.peek().map_or(0, |(_, b)| *b);
        for chunk in p.payload.chunks(CHUNK) {
            s.conn.send(&Msg::Data(Data {
                bytes: chunk.to_vec(),
            }))?;
            done += chunk.len() as u64;
            obs.bytes(host, total, done);
            let mut n = chunk.len() as u64;
            while n > 0 {
                let Some((&i, _)) = owed.peek() else { break };
                let take = n.min(left_of_first);
                sent.of(&items[i].encoding).bytes += take;
                (n, left_of_first) = (n - take, left_of_first - take);
                if left_of_first == 0 {
                    owed.next();
                    left_of_first = owed.peek().map_or(0, |(_, b)| *b);
                }
            }
        }
        for &i in &p.items {
            let k = sent.of(&items[i].encoding);
            k.files += 1;
            k.content_bytes += items[i].size;
        }
    }
    for it in &left.alone {
        s.conn.send(&Msg::Put(Put {
            path: it.path.clone(),
            encoding: it.encoding.clone(),
            len: it.payload.len(),
        }))?;
        it.payload.for_each_piece(CHUNK, |chunk| {
            s.conn.send(&Msg::Data(Data {
                bytes: chunk.to_vec(),
            }))?;
            done += chunk.len() as u64;
            sent.of(&it.encoding).bytes += chunk.len() as u64;
            obs.bytes(host, total, done);
            Ok(())
        })?;
        let k = sent.of(&it.encoding);
        k.files += 1;
        k.content_bytes += it.size;
    }
    s.conn.send(&Msg::Commit)?;
    s.conn.flush()
}

fn path_changes(store: Option<&Store>, changes: &[Change], items: &[Item]) -> Vec<PathChange> {
    let by_path: HashMap<&[u8], &Item> = items.iter().map(|i| (i.path.as_slice(), i)).collect();
    changes
        .iter()
        .map(|c| {
            let it = by_path.get(c.path.as_slice());
            PathChange {
                path: escape(&c.path),
                change: c.kind,
                item: crate::protocol::item::letters(c.kind, c.what),
                host_made: c.kind == ChangeKind::Delete
                    && c.what & crate::protocol::item::UNMANAGED != 0,
                via: it.map(|i| i.encoding.label()),
                packed: it.is_some_and(|i| i.packed),
                candidates: it.and_then(|i| i.candidates.clone()),
                class: it
                    .filter(|i| i.candidates.is_some())
                    .zip(store)
                    .map(|(i, s)| plan::class(s, &i.path, &i.hash, i.size)),
            }
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
    /// The host's trust policy as its agent described it (`None`: it has none).
    pub trust: Option<String>,
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
    /// What the host made outside the image's owned prefixes: kept, and not drift.
    pub unmanaged: Vec<Unmanaged>,
    /// Processes, by unit, that still run replaced files (see [`HostReport::stale`]).
    pub stale: Vec<StaleUnit>,
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
        st.trust = s.welcome.trust.as_ref().map(|t| t.describe());
        st.abandoned = s.welcome.abandoned.map(|h| h.to_hex());
        st.image = s.welcome.image.map(|h| h.to_hex());
        if let (Some(store), Some(id)) = (store, s.welcome.image) {
            st.names = store.names_of(&id)?;
        }
        let changes = match s
            .conn
            .send(&Msg::Status(Status {
                verify: opts.verify,
            }))
            .and_then(|_| s.reply())
        {
            Ok(Msg::Differences(Differences {
                changes,
                kept,
                stale,
                unmanaged,
                ..
            })) => {
                st.kept = kept;
                st.stale = stale;
                st.unmanaged = unmanaged;
                changes
            }
            Ok(m) => return Err(s.fail(unexpected("Differences", &m))),
            Err(e) => return Err(s.fail(e)),
        };
        s.close();
        st.differences = changes.len() as u64;
        st.drifted = !changes.is_empty();
        if with_paths {
            st.paths = path_changes(None, &changes, &[]);
        }
        Ok(())
    })();
    match r {
        Ok(()) => st.ok = true,
        Err(e) => {
            let m = e.to_string();
            st.mid_commit = matches!(e, Error::MidCommit(..));
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

#[cfg(test)]
mod tests {
    use super::*;
    use imager::Entry;

    fn file(path: &str, size: u64, content: &[u8]) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind: Kind::File {
                size,
                hash: Hash::of(content),
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        }
    }

    fn change(path: &str, kind: ChangeKind, host: Option<Entry>) -> Change {
        Change {
            path: path.as_bytes().to_vec(),
            kind,
            host,
            what: 0,
        }
    }

    #[test]
    fn each_file_travels_the_cheapest_way_its_host_and_the_store_allow() {
        let big = 1 << 20;
        let root = Entry {
            path: b"/".to_vec(),
            kind: Kind::Dir,
            mode: 0o755,
            ..file("/", 0, b"")
        };
        let tree = Tree::new(vec![
            root,
            file("/copied", 10, b"held"),
            file("/delta", big, b"new-d"),
            file("/huge", 5 << 30, b"new-h"),
            file("/meta", 3, b"m"),
            file("/rsync", big, b"new-r"),
            file("/small", 100, b"new-s"),
        ])
        .expect("tree");
        let old = |p: &str, c: &[u8]| Some(file(p, big, c));
        let changes = vec![
            change("/copied", ChangeKind::Add, None),
            change("/delta", ChangeKind::Content, old("/delta", b"old-d")),
            change("/huge", ChangeKind::Content, old("/huge", b"old-h")),
            change("/meta", ChangeKind::Meta, None),
            change("/rsync", ChangeKind::Content, old("/rsync", b"old-r")),
            change("/small", ChangeKind::Content, old("/small", b"old-s")),
            change("/gone", ChangeKind::Delete, None),
        ];
        let have = vec![(Hash::of(b"held"), b"/elsewhere".to_vec())];
        // The store holds the old versions of /delta and /huge only.
        let stored = [Hash::of(b"old-d"), Hash::of(b"old-h")];
        let got: Vec<(String, Encoding, Option<Hash>)> =
            choose(&changes, &tree, &have, |h| stored.contains(h))
                .into_iter()
                .map(|c| (escape(&c.path), c.encoding, c.base.map(|(h, _)| h)))
                .collect();
        assert_eq!(
            got,
            vec![
                (
                    "/copied".into(),
                    Encoding::LocalCopy {
                        from: b"/elsewhere".to_vec()
                    },
                    None
                ),
                (
                    "/delta".into(),
                    Encoding::ZstdDelta,
                    Some(Hash::of(b"old-d"))
                ),
                // Larger than an agent applies a delta to: whole, though the store has
                // its old version.
                ("/huge".into(), Encoding::Whole, None),
                ("/rsync".into(), Encoding::RsyncDelta, None),
                // Too small for the signature round trip to pay.
                ("/small".into(), Encoding::Whole, None),
            ]
        );
    }

    #[test]
    fn a_delta_travels_only_when_smaller_than_the_whole_file() {
        let bytes = |n: usize| Arc::new(vec![0u8; n]);
        let never = || -> Result<Arc<Vec<u8>>> { panic!("the whole file was not needed") };
        // Clearly small: the whole file is not even compressed.
        let (e, d) = smaller(bytes(10), Encoding::ZstdDelta, 1000, never).expect("smaller");
        assert_eq!((e, d.len()), (Encoding::ZstdDelta, 10));
        // Not clearly small, and the whole is smaller: whole.
        let (e, d) =
            smaller(bytes(600), Encoding::RsyncDelta, 1000, || Ok(bytes(500))).expect("smaller");
        assert_eq!((e, d.len()), (Encoding::Whole, 500));
        // Not clearly small, but smaller than the whole: the delta.
        let (e, d) =
            smaller(bytes(600), Encoding::RsyncDelta, 1000, || Ok(bytes(700))).expect("smaller");
        assert_eq!((e, d.len()), (Encoding::RsyncDelta, 600));
    }
}
