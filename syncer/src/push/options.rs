//! What a push is asked to do beyond the image: [`PushOptions`], and the [`Health`]
//! check a push runs after the triggers (an inventory's `policy.health`).

use crate::protocol::Previous;
use crate::transport::TransportOptions;
use serde::Deserialize;

#[derive(Clone, Default)]
pub struct PushOptions {
    pub dry_run: bool,
    pub verify: bool,
    pub transport: TransportOptions,
    /// Run on the host after its triggers; a failure fails the push.
    pub health: Option<Health>,
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

/// A health check: run on the host after its triggers (as a trigger would be), retried
/// `retries` times `interval` seconds apart; the last attempt decides.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub command: String,
    #[serde(default = "default_health_timeout")]
    pub timeout: u64,
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
