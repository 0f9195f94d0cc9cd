//! What a push is asked to do beyond the image: [`PushOptions`], and the [`Health`]
//! check a push runs after the triggers (an inventory's `policy.health`).

use crate::protocol::Previous;
use crate::transport::TransportOptions;
use serde::Deserialize;

/// How to push an image, beyond the image itself: one set for every host of a push, or
/// of a colo's waves in a rollout.
#[derive(Clone, Default)]
pub struct PushOptions {
    /// Only plan: the host is scanned and the plan reported; no content is sent and
    /// nothing is written on the host (not even its hash cache).
    pub dry_run: bool,
    /// Have the agent hash every file instead of trusting its hash cache: slower, and
    /// catches a change that kept a file's size and times.
    pub rehash: bool,
    /// How hosts are reached: ssh, the agent, rate limits.
    pub transport: TransportOptions,
    /// Run on the host after its triggers; a failure fails the push.
    pub health: Option<Health>,
    /// Processes still running replaced files after the triggers fail the push (the
    /// inventory's `require_restarted`).
    pub require_restarted: bool,
    /// For a rollback: the previous image to record (what the host had recorded before
    /// the failed push), instead of the image it is leaving.
    pub restore_previous: Previous,
    /// `--policy` / the inventory's `require_signed`: the controller pushes only
    /// an image this policy accepts (the hosts check their own policy again).
    pub require_signed: Option<std::sync::Arc<imager::sign::TrustPolicy>>,
    /// HTTP mirrors of a published store (`crate::publish`), in order (the colo's cache,
    /// then the origin): the host fetches what they have; the rest comes over ssh.
    pub mirrors: Vec<String>,
    /// Run the image's triggers on a first install too (`--install-triggers`).
    pub install_triggers: bool,
    /// `--no-store-copies`: a `local:` host's agent is not given the store's objects,
    /// so its new files travel through the pipe as a remote host's would. (With
    /// mirrors it is never given them: the hosts are to take the mirrors' content.)
    pub no_store_copies: bool,
    /// The most a host's plan may delete (`--max-delete`, the policy's `max_delete`):
    /// a count, or a percentage of the host's entries; `MaxDelete::Unlimited`: no limit.
    pub max_delete: crate::deletes::MaxDelete,
}

/// A health check: run on the host after its triggers (as a trigger would be), retried
/// `retries` times `interval` seconds apart; the last attempt decides.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// The command, run by the agent as a trigger's command is; exit status 0 passes.
    pub command: String,
    /// Seconds one attempt may run before it is killed (60 unless given).
    #[serde(default = "default_health_timeout")]
    pub timeout: u64,
    /// Attempts after the first one fails (0 unless given): `retries + 1` in all.
    #[serde(default)]
    pub retries: u32,
    /// Seconds between attempts.
    #[serde(default = "default_health_interval")]
    pub interval: u64,
}

fn default_health_timeout() -> u64 {
    60
}
fn default_health_interval() -> u64 {
    5
}
