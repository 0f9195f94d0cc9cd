//! What a push reports about a host ([`HostReport`]): its outcome, what was planned
//! and sent by each way of sending content, where the bytes went, and the host's answers
//! (scan, kept paths, triggers, stale processes, health checks).

use crate::encoding::Encoding;
use crate::plan::Candidates;
use crate::progress::{Clock, Phase};
use crate::protocol::{ChangeKind, Kept, ScanStats, StaleUnit, TriggerRun, Unmanaged};
use imager::Hash;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// Files and bytes for one way of sending content.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Sent {
    /// Files whose content travels this way.
    pub files: u64,
    /// Bytes on the wire for them.
    pub bytes: u64,
    /// Their size once written.
    pub content_bytes: u64,
}

/// Files and bytes by the way their content travels, one [`Sent`] for each way.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ByKind {
    /// Contents the host holds already at another path, copied there: nothing but the
    /// `Put` travels.
    pub local_copy: Sent,
    /// zstd patch-from deltas from the host's old version (which the store holds), on
    /// their own and in packs.
    pub zstd_delta: Sent,
    /// rsync deltas against the host's signatures, for old versions the store lacks;
    /// always on their own.
    pub rsync_delta: Sent,
    /// bsdiff patches, on their own and in packs (a packed file's `bytes` are its share
    /// of its pack's, in proportion to its part compressed alone where that is known, a
    /// patch or whole content with a whole candidate, else to its raw length).
    pub bsdiff: Sent,
    /// gzip-aware patches, on their own and in packs (shared out the same way).
    pub gzip_delta: Sent,
    /// Zucchini patches, on their own and in packs (shared out the same way).
    pub zucchini: Sent,
    /// Bitcode-aware patches, on their own and in packs (shared out the same way).
    pub bitcode_delta: Sent,
    /// Whole content, on its own and in packs (shared out the same way).
    pub whole: Sent,
    /// Large files' records.
    pub chunked: Sent,
    /// Contents a `local:` host's agent copied from the store's objects itself: nothing
    /// but the `Put` travels.
    pub store_copy: Sent,
}

impl ByKind {
    pub(super) fn of(&mut self, encoding: &Encoding) -> &mut Sent {
        match encoding {
            Encoding::LocalCopy { .. } => &mut self.local_copy,
            Encoding::ZstdDelta => &mut self.zstd_delta,
            Encoding::RsyncDelta => &mut self.rsync_delta,
            Encoding::Bsdiff => &mut self.bsdiff,
            Encoding::GzipDelta => &mut self.gzip_delta,
            Encoding::Zucchini => &mut self.zucchini,
            Encoding::Bitcode => &mut self.bitcode_delta,
            Encoding::Whole => &mut self.whole,
            Encoding::Chunked => &mut self.chunked,
            Encoding::StoreCopy => &mut self.store_copy,
        }
    }

    /// Bytes on the wire, all ways together.
    pub fn bytes(&self) -> u64 {
        self.rows().iter().map(|(_, s)| s.bytes).sum()
    }

    /// Each way with its label, in the order reports list them.
    pub fn rows(&self) -> [(&'static str, &Sent); 10] {
        [
            (
                Encoding::LocalCopy { from: Vec::new() }.label(),
                &self.local_copy,
            ),
            (Encoding::ZstdDelta.label(), &self.zstd_delta),
            (Encoding::RsyncDelta.label(), &self.rsync_delta),
            (Encoding::Bsdiff.label(), &self.bsdiff),
            (Encoding::GzipDelta.label(), &self.gzip_delta),
            (Encoding::Zucchini.label(), &self.zucchini),
            (Encoding::Bitcode.label(), &self.bitcode_delta),
            (Encoding::Whole.label(), &self.whole),
            (Encoding::Chunked.label(), &self.chunked),
            (Encoding::StoreCopy.label(), &self.store_copy),
        ]
    }
}

/// What happened to a host, in a few words (`HostReport::outcome`; the JSON and text
/// reports spell it as below).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum PushOutcome {
    /// The host committed the image and all that came after passed: triggers, health
    /// check, and the stale-process rule when required.
    #[serde(rename = "ok")]
    Ok,
    /// A dry run that planned without error; the host is unchanged.
    #[serde(rename = "dry run")]
    DryRun,
    /// The host was left as it was.
    #[default]
    #[serde(rename = "failed before commit")]
    FailedBeforeCommit,
    /// The host runs the new image; the session failed after the commit.
    #[serde(rename = "committed, then failed")]
    CommittedThenFailed,
    /// The host runs the new image; a trigger failed, was killed or timed out.
    #[serde(rename = "committed, trigger failed")]
    CommittedTriggerFailed,
    /// The host runs the new image; the last attempt of the health check failed.
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
    /// How reports print it: the same words as its JSON spelling.
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

    /// The outcome of a finished push (`errored`: the session failed; `refused`: with
    /// the agent's answer that it stopped before its commit point).
    pub(super) fn of(r: &HostReport, errored: bool, refused: bool) -> PushOutcome {
        if r.ok && r.dry_run {
            PushOutcome::DryRun
        } else if r.ok {
            PushOutcome::Ok
        } else if r.mid_commit.is_some() {
            PushOutcome::MidCommit
        } else if !r.committed && r.commit_sent && !refused {
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

/// How long each step of a push to a host took, in seconds of wall clock; 0 for a step
/// that did not run.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Phases {
    /// Reaching the host and starting its agent, up to its welcome (an install of the
    /// agent included).
    pub connect: f64,
    /// From sending the target to the host's differences: mostly the agent's scan.
    pub scan: f64,
    /// Choosing and encoding the content on the controller (deltas, packs; the cache
    /// makes it short for every host after the first at an image).
    pub plan: f64,
    /// Sending the content (the part a bandwidth limit stretches).
    pub send: f64,
    /// Staging in all: the longer of `send` and the agent's own staging, from the
    /// `Stage` message to the content flushed (by its clock; it goes on after the last
    /// byte is sent, as it decodes and writes what the pipe holds).
    pub stage: f64,
    /// The agent's commit through its journal, by its own clock.
    pub commit: f64,
    /// From the commit's answer to the agent's last word: the triggers, then its check
    /// for stale processes.
    pub triggers: f64,
    /// Every attempt of the health check and the waits between them.
    pub health: f64,
    /// The whole push, from its start to its report: more than the sum of the phases.
    pub total: f64,
}

impl Phases {
    /// Adds what `clock` timed (the agent's own stage and commit seconds are in already)
    /// and the total since `started`.
    pub(super) fn add_clock(&mut self, clock: &Clock, started: Instant) {
        self.connect = clock.seconds(Phase::Connecting);
        self.scan = clock.seconds(Phase::Scanning);
        self.plan = clock.seconds(Phase::Planning);
        self.send = clock.seconds(Phase::Staging);
        self.stage = self.stage.max(self.send);
        self.triggers = clock.seconds(Phase::Triggers);
        self.health = clock.seconds(Phase::HealthCheck);
        self.total = started.elapsed().as_secs_f64();
    }
}

/// One planned path, for `--dry-run` and `diff`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PathChange {
    /// The path, escaped as manifests write it (so any byte prints).
    pub path: String,
    /// What the plan does to it: add, content, replace, meta or delete.
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
    /// That kind of file, with `candidates`: "executable", "shared library", "python",
    /// "compressed", "text" or "other" (absent when the store was not at hand).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<&'static str>,
}

/// The packs of a push (see [`crate::encoding::pack`]).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Packs {
    /// Packs planned, each one compressed stream on the wire.
    pub packs: u64,
    /// Files they carry.
    pub files: u64,
    /// Their raw parts (contents and patches), before compression.
    pub raw_bytes: u64,
    /// On the wire.
    pub bytes: u64,
}

/// What a push did to one host, for the text report and `--json`: never an error of its
/// own, whatever went wrong is in here.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HostReport {
    /// The host as given (`ssh://...` or `local:...`).
    pub host: String,
    /// Whether the push did all it was asked: committed (or, in a dry run, planned) with
    /// no trigger, health check or required restart failing.
    pub ok: bool,
    /// Why it is not ok: the error that stopped it, or the failures after the commit
    /// joined by "; ". Absent when ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The push only planned (`--dry-run`): nothing was sent to the host or written.
    pub dry_run: bool,
    /// The image the host recorded when the session began; `None` when it records none,
    /// or when its agent was never reached.
    pub image_before: Option<Hash>,
    /// The image the host had recorded before `image_before`.
    pub previous_before: Option<Hash>,
    /// The image the host runs after this push; `None` unless it committed.
    pub image_after: Option<Hash>,
    /// The agent's version, as its welcome said it; `None` when it was not reached.
    pub agent: Option<String>,
    /// The host's trust policy as its agent described it (`None`: it has none).
    pub trust: Option<String>,
    /// The push installed the agent on the host before its session (`--install-agent`):
    /// it was missing or another build.
    pub agent_installed: bool,
    /// The agent first finished a commit that an earlier session had left halfway.
    pub rolled_forward: bool,
    /// A host that recorded no image had the tree of an image (its host view: without
    /// local state, mount points and directory mtimes) that the store holds or that a
    /// manifest delta in the cache was made from, so the manifest went as a delta.
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
    /// Paths the plan adds: the host lacks them.
    pub added: u64,
    /// Paths whose content or kind changes (a file's content, a symlink's target,
    /// another kind of entry).
    pub changed: u64,
    /// Paths whose owner, mode, xattrs or mtime alone change.
    pub metadata: u64,
    /// Paths the plan deletes.
    pub deleted: u64,
    /// Operations the agent's commit journal held.
    pub commit_ops: u64,
    /// What the plan would send (a dry run sends nothing).
    pub planned: ByKind,
    /// What was sent: the plan once every file went out, less when the push failed on
    /// the way (a file counts once all its bytes were sent; `bytes` counts every byte).
    pub sent: ByKind,
    /// Bytes the controller sent the agent in the whole session, frames included: what
    /// bandwidth the push took towards the host (mirrors' fetches not counted).
    pub wire_sent: u64,
    /// Bytes the agent sent back in the session, frames included.
    pub wire_received: u64,
    /// Where the wire's bytes went: by message, sent and received (frames included).
    pub wire: BTreeMap<&'static str, WireBytes>,
    /// Where the content came from: the mirrors (each one's account) and the controller.
    pub content: ContentSources,
    /// Planned packs.
    pub packs: Packs,
    /// What the host's scan took: entries seen, files hashed, bytes read.
    pub scan: ScanStats,
    /// Mount points and local-state symlinks on the host that the push left alone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<Kept>,
    /// What the host made outside the image's owned prefixes, kept (outermost paths).
    pub unmanaged: Vec<Unmanaged>,
    /// Seconds each phase took.
    pub phases: Phases,
    /// The triggers that ran after the commit, in order, each with its exit status,
    /// output and time.
    pub triggers: Vec<TriggerRun>,
    /// After the triggers: processes, by unit, that still run files the push (or
    /// anything else) replaced, so still run the old code until restarted.
    pub stale: Vec<StaleUnit>,
    /// Every attempt of the health check, the last one deciding.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<TriggerRun>,
    /// Every path the plan changes, with how its content would travel: filled by a dry
    /// run only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathChange>,
}

impl HostReport {
    /// A host left as it was, for `why` (a failed `pre` hook, no image to go back to).
    pub fn untouched(host: &impl std::fmt::Display, why: String) -> HostReport {
        HostReport {
            host: host.to_string(),
            error: Some(why),
            outcome: PushOutcome::FailedBeforeCommit,
            ..Default::default()
        }
    }
}

/// Where a host's content came from.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ContentSources {
    /// Content bytes (encoded, as published) the host took from mirrors, and those the
    /// controller sent in `Data` frames.
    pub mirrors_bytes: u64,
    /// Content bytes the controller sent itself (all of them without mirrors).
    pub controller_bytes: u64,
    /// Blobs offered for fetching, and how many no mirror gave (sent by the controller).
    pub blobs: u64,
    /// Of those, the ones no mirror gave: the controller sent them.
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
    /// Bytes the controller sent in messages of this kind, frames included.
    pub sent: u64,
    /// Bytes the agent sent in messages of this kind, frames included.
    pub received: u64,
}
