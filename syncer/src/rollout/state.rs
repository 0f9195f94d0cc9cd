//! The saved state of a rollout (JSON, written atomically after every host): what each
//! host's outcome was, and why the rollout stopped. `--resume` reads it back and skips
//! the hosts that already run the image; it is also the report.

use super::hooks::HookRun;
use super::inventory::{Colo, Inventory};
use crate::error::{Error, Result};
use crate::push::{HostReport, PushOutcome};
use crate::transport::HostSpec;
use imager::Hash;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The way back of a failed host.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rollback {
    /// Whether the host is back at the image it ran before (also true, with no push, when
    /// it was at the target image already).
    pub ok: bool,
    /// The image it was rolled back to: the one it recorded before the failed push
    /// (`None`: it recorded none, and nothing was tried).
    pub image: Option<Hash>,
    /// Why the way back failed or was not tried (or, with `ok`, why none was needed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The way back's own push report, when it ran (not kept across `--resume`).
    #[serde(skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub report: Option<HostReport>,
}

/// What a rollout makes of a host: whether it counts as done or against the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The host runs the image and all its checks passed: `--resume` skips it.
    Ok,
    /// Anything else, a failure after the commit included: it counts against the wave's
    /// failure budget, and the host was rolled back if it was reached.
    Failed,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Ok => "ok",
            Verdict::Failed => "failed",
        })
    }
}

/// One host's result in a rollout: its line in the log and its entry in the saved state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostResult {
    /// The host as the inventory gives it (`ssh://...` or `local:...`).
    pub host: String,
    /// Its colo's name.
    pub colo: String,
    /// Its wave in the colo: "canary", or "wave N" counted from 1 after the canary.
    pub wave: String,
    /// What the rollout made of it: ok, or failed (rolled back when it was reached).
    pub outcome: Verdict,
    /// The push's own outcome ("ok", "failed before commit", "committed, trigger
    /// failed", ...; see [`HostReport::outcome`]).
    #[serde(default)]
    pub push_outcome: String,
    /// Whether the push's commit applied (before any rollback).
    #[serde(default)]
    pub committed: bool,
    /// Triggers that exited non-zero, were killed or timed out after the commit.
    #[serde(default)]
    pub triggers_failed: u64,
    /// Why the rollout counts this host as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The image the host recorded before the push; `None` when it recorded none or was
    /// not reached.
    pub image_before: Option<Hash>,
    /// The image it runs now: the target, or after a rollback the image it went back to;
    /// `None` when a rollback failed (what it runs is not known).
    pub image_after: Option<Hash>,
    /// The push's error, as its report says it (absent when it was ok).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The way back of a failed host that was reached (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// Paths the push added.
    pub added: u64,
    /// Paths whose content or kind the push changed.
    pub changed: u64,
    /// Paths the push deleted.
    pub deleted: u64,
    /// Bytes the controller sent the host in the push, frames included (the rollback's
    /// not counted).
    pub wire_sent: u64,
    /// Seconds the host took, wall clock: the push and any rollback.
    pub seconds: f64,
    /// The host's trust policy as its agent described it (`None`: it has none).
    #[serde(default)]
    pub trust: Option<String>,
    /// Where its content came from: mirrors (the colo's cache, the origin) or the
    /// controller.
    #[serde(default)]
    pub content: crate::push::ContentSources,
    /// The policy's `pre` hook, run on the controller before the host was touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre: Option<HookRun>,
    /// The policy's `post` hook, run after the push and any rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post: Option<HookRun>,
    /// The push's full report (not kept across `--resume`).
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub push: Option<HostReport>,
    /// In a fleet record (etcd), the run of the rollout this result belongs to: a host
    /// whose result is of an earlier run (before a `--resume`) is pushed again if failed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub run: u64,
    /// In a fleet record, the controller that pushed the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// In a fleet record, set when the host was taken over from a controller that
    /// left it in the middle of its push: whose it was and what the host said it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_over: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl HostResult {
    /// The result of the push `r` to `spec` (and of its `rollback`, if one ran), in
    /// `colo`'s `wave`, which took `seconds` in all.
    pub fn new(
        colo: &str,
        wave: &str,
        spec: &HostSpec,
        r: HostReport,
        rollback: Option<Rollback>,
        seconds: f64,
    ) -> HostResult {
        // After a rollback the host runs what it ran before (if the way back worked).
        let image_after = match &rollback {
            Some(rb) if rb.ok => rb.image,
            Some(_) => None,
            None => r.image_after.or(r.image_before),
        };
        HostResult {
            host: spec.to_string(),
            colo: colo.to_string(),
            wave: wave.to_string(),
            outcome: if r.ok { Verdict::Ok } else { Verdict::Failed },
            push_outcome: r.outcome.to_string(),
            committed: r.committed,
            triggers_failed: r.triggers_failed,
            reason: (!r.ok).then(|| failure_reason(&r).to_string()),
            image_before: r.image_before,
            image_after,
            error: r.error.clone(),
            rollback,
            added: r.added,
            changed: r.changed,
            deleted: r.deleted,
            wire_sent: r.wire_sent,
            seconds,
            trust: r.trust.clone(),
            content: r.content.clone(),
            pre: None,
            post: None,
            push: Some(r),
            run: 0,
            controller: None,
            taken_over: None,
        }
    }

    /// Counts the host as failed for `why` too (a `post` hook that failed after it
    /// passed, or after its own failure).
    pub fn fail(&mut self, why: String) {
        self.reason = Some(match (self.ok(), self.reason.take()) {
            (false, Some(r)) => format!("{r}; {why}"),
            _ => why,
        });
        self.outcome = Verdict::Failed;
    }

    /// Whether the rollout counts the host as done.
    pub fn ok(&self) -> bool {
        self.outcome == Verdict::Ok
    }

    /// "failed (committed, trigger failed)": the rollout's verdict and the push's.
    fn verdict(&self) -> String {
        match (self.ok(), self.push_outcome.is_empty()) {
            (true, _) => self.outcome.to_string(),
            // Marked so that a failure stands out among a hundred "ok" lines.
            (false, true) => "FAILED".into(),
            (false, false) => format!("FAILED ({})", self.push_outcome),
        }
    }

    /// One log line.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} [{} {}]: {} in {:.1} s, {} sent",
            self.host,
            self.colo,
            self.wave,
            self.verdict(),
            self.seconds.max(0.0),
            imager::units::bytes(self.wire_sent)
        );
        let c = &self.content;
        if c.blobs > 0 {
            let (hits, asked) = c
                .mirrors
                .first()
                .map_or((0, 0), |m| (m.cache_hits, m.cache_hits + m.cache_misses));
            s.push_str(&format!(
                ", {} from mirrors ({hits} of {asked} cache hits), {} of {} published files from none",
                imager::units::bytes(c.mirrors_bytes),
                c.blobs_missing,
                c.blobs
            ));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(": {e}"));
        }
        if let Some(rb) = &self.rollback {
            s.push_str(&match (rb.ok, &rb.error) {
                (true, _) => "; rolled back".to_string(),
                (false, Some(e)) => format!("; ROLLBACK FAILED: {e}"),
                (false, None) => "; ROLLBACK FAILED".to_string(),
            });
        }
        for (name, hook) in [("pre", &self.pre), ("post", &self.post)] {
            if let Some(h) = hook {
                s.push_str(&format!(
                    "; {name} hook {} in {:.1} s",
                    h.describe(),
                    h.seconds
                ));
            }
        }
        s
    }
}

/// What a failed push means to a rollout: every failure counts against the wave's
/// budget and is rolled back, a trigger or health check that fails after the commit
/// applied included (the host runs the new image but is not known to work on it).
fn failure_reason(r: &HostReport) -> &'static str {
    match r.outcome {
        PushOutcome::CommittedTriggerFailed => {
            "the commit applied but a trigger failed: a rollout counts a failed trigger as a failed host"
        }
        PushOutcome::CommittedHealthCheckFailed => {
            "the commit applied but the health check failed: a rollout counts that as a failed host"
        }
        PushOutcome::CommittedStaleProcesses => {
            "the commit applied but processes still run files it replaced, and the policy \
             has require_restarted: a rollout counts that as a failed host"
        }
        PushOutcome::CommittedThenFailed => "the commit applied, then the session failed",
        _ => "the push failed before its commit (the host was left as it was)",
    }
}

/// A rollout's saved state, which is also its report (`--json`): what `--resume` and
/// `status --inventory` read back.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RolloutState {
    /// The image rolled out.
    pub image: Hash,
    /// The inventory's path as given: a resumed rollout must give the same.
    pub inventory: String,
    /// The colos selected, in the order they roll.
    pub colos: Vec<String>,
    /// The `--limit` patterns of the last run (none: every host of the colos).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limit: Vec<String>,
    /// The hosts of the colos that `limit` left out, untouched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_selected: Vec<String>,
    /// The latest result of every host reached, in the order they finished.
    pub hosts: Vec<HostResult>,
    /// Why the rollout stopped before its end: a wave over its failure budget, Ctrl-C,
    /// a colo not confirmed. `None` when it did not stop.
    pub stopped: Option<String>,
    /// Every selected colo was rolled with nothing stopping it (hosts may still have
    /// failed within their wave's budget).
    pub finished: bool,
    /// Seconds the last run took, wall clock (a resumed rollout counts from its resume).
    pub wall_seconds: f64,
    /// CPU seconds (user and system) the controller's process had used by the end of
    /// the last run, the agents it started not included.
    pub controller_cpu_seconds: f64,
    /// Per colo, where its hosts' content came from (the sum of its hosts' latest
    /// results): bytes from each mirror, from the controller, cache hits.
    #[serde(default)]
    pub content: std::collections::BTreeMap<String, crate::push::ContentSources>,
    /// The fleet-wide side of a rollout: its etcd record, its run, the fleet budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetInfo>,
}

/// What a rollout recorded in etcd adds to its state (`None` in a state file).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FleetInfo {
    /// Where the record is: `etcd://H:P,.../PREFIX`.
    pub url: String,
    /// Counts the rollout's runs: 1 at its start, one more at each `--resume`.
    pub run: u64,
    /// The inventory's blake3: a controller that joins must have the same.
    pub inventory_digest: String,
    /// Who started it: `user@machine pid N`.
    pub started_by: String,
    /// Failed hosts the whole rollout may have (`[fleet] failure_budget`); one more and
    /// every controller stops starting hosts. `None`: no fleet-wide budget.
    pub failure_budget: Option<usize>,
    /// Hosts that failed in this run, all controllers together.
    pub failed: u64,
    /// Colos an operator let start (`--continue`, or `--yes` at the start).
    #[serde(default)]
    pub continued: Vec<String>,
    /// The colo a controller waits at for `--continue`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// The controllers working on it now (read from their leased keys, not stored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controllers: Vec<String>,
}

impl RolloutState {
    /// The state of a rollout of `image` over `colos` of `inv` that has not started.
    pub fn new(image: Hash, inv: &Inventory, colos: &[&Colo]) -> RolloutState {
        RolloutState {
            image,
            inventory: inv.path.display().to_string(),
            colos: colos.iter().map(|c| c.name.clone()).collect(),
            limit: Vec::new(),
            not_selected: Vec::new(),
            hosts: Vec::new(),
            stopped: None,
            finished: false,
            wall_seconds: 0.0,
            controller_cpu_seconds: 0.0,
            content: Default::default(),
            fleet: None,
        }
    }

    /// Reads a saved state back; an error names the file.
    pub fn load(path: &Path) -> Result<RolloutState> {
        let text = imager::fsx::read_to_string(path).map_err(|e| {
            let e = e.into_io();
            Error::RolloutState(format!(
                "cannot read the rollout state {}: {e}",
                path.display()
            ))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| Error::RolloutState(format!("{}: {e}", path.display())))
    }

    /// Written beside, then renamed over: a crash never leaves half a state.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::RolloutState(format!("cannot write the rollout state: {e}")))?;
        imager::fsx::write_atomic(path, text.as_bytes())
            .map_err(|e| Error::RolloutState(format!("cannot write {}: {e}", path.display())))
    }

    /// A resumed rollout must be of the same image over the same inventory.
    pub fn check(&self, image: Hash, inv: &Inventory) -> Result<()> {
        if self.image != image {
            return Err(Error::RolloutState(format!(
                "the saved rollout is of image {}, not {image}",
                self.image
            )));
        }
        if self.inventory != inv.path.display().to_string() {
            return Err(Error::RolloutState(format!(
                "the saved rollout is over {}, not {}",
                self.inventory,
                inv.path.display()
            )));
        }
        Ok(())
    }

    /// Whether the latest result of `h` is ok, so `--resume` skips it.
    pub fn is_done(&self, h: &HostSpec) -> bool {
        let name = h.to_string();
        self.hosts.iter().any(|r| r.host == name && r.ok())
    }

    /// Keeps the latest result per host.
    pub fn record(&mut self, r: HostResult) {
        self.hosts.retain(|x| x.host != r.host);
        self.hosts.push(r);
        self.content.clear();
        for h in &self.hosts {
            self.content
                .entry(h.colo.clone())
                .or_default()
                .add(&h.content);
        }
    }

    /// Replaces the results of `colo`'s hosts with `hosts` (as read from a fleet record):
    /// one pass, however many hosts the other colos have.
    pub fn replace_colo(&mut self, colo: &str, hosts: Vec<HostResult>) {
        self.hosts.retain(|h| h.colo != colo);
        self.hosts.extend(hosts);
    }

    /// How many hosts' latest result is `outcome`.
    pub fn count(&self, outcome: Verdict) -> usize {
        self.hosts.iter().filter(|r| r.outcome == outcome).count()
    }
}
