//! `syncer rollout --dry-run`: the whole rollout's plan, written nowhere. Per colo its
//! waves and their hosts as the rollout would make them (`--colo` and `--limit` as
//! given), and per host what a `push --dry-run` finds: what would be sent, added,
//! changed and deleted, or why the host cannot be reached. No hook runs (they act on
//! load balancers and the like), no host is written and no rollout state is saved.

use super::inventory::{Colo, Host, Inventory};
use super::RolloutOptions;
use super::{host_options, named_waves, push_options, selected, signing_policy, Images};
use crate::delta::Cache;
use crate::error::Result;
use crate::protocol::ChangeKind;
use crate::push::{self, HostReport, Observer};
use imager::store::Store;
use imager::Hash;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;

/// A rollout's plan: what `--dry-run` prints.
#[derive(Clone, Debug, Serialize)]
pub struct RolloutPlan {
    /// The image that would be rolled out.
    pub image: Hash,
    /// The colos in rollout order, with their selected hosts.
    pub colos: Vec<ColoPlan>,
    /// The hosts of those colos that `--limit` leaves out.
    pub not_selected: Vec<String>,
}

/// One colo's part of the plan.
#[derive(Clone, Debug, Serialize)]
pub struct ColoPlan {
    /// Its name.
    pub name: String,
    /// Why the colo would not be rolled at all (its `require_signed` policy refuses
    /// the image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Its `pre` and `post` hooks (which a dry run does not run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre: Option<String>,
    /// See `pre`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post: Option<String>,
    /// Its waves in order, the canary first.
    pub waves: Vec<WavePlan>,
}

/// One wave of a colo's plan.
#[derive(Clone, Debug, Serialize)]
pub struct WavePlan {
    /// "canary" or "wave N".
    pub name: String,
    /// Failed hosts it may have before the rollout stops.
    pub failure_budget: usize,
    /// Its hosts, in order.
    pub hosts: Vec<HostPlan>,
}

/// What a push to one host would do.
#[derive(Clone, Debug, Serialize)]
pub struct HostPlan {
    /// The host, as the inventory spells it.
    pub host: String,
    /// Whether the host was reached and planned without error.
    pub ok: bool,
    /// Why not (unreachable, a plan over `max_delete`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The image it runs now, if it records one.
    pub image_before: Option<Hash>,
    /// Bytes the push would send (its content, as planned).
    pub bytes: u64,
    /// Paths it would add.
    pub added: u64,
    /// Paths whose content or kind it would change.
    pub changed: u64,
    /// Paths it would delete.
    pub deleted: u64,
    /// Those paths, escaped as manifests write them.
    pub deletes: Vec<String>,
}

impl HostPlan {
    fn of(r: &HostReport) -> HostPlan {
        HostPlan {
            host: r.host.clone(),
            ok: r.ok,
            error: r.error.clone(),
            image_before: r.image_before,
            bytes: r.planned.bytes(),
            added: r.added,
            changed: r.changed,
            deleted: r.deleted,
            deletes: r
                .paths
                .iter()
                .filter(|p| p.change == ChangeKind::Delete)
                .map(|p| p.path.clone())
                .collect(),
        }
    }
}

/// The plan of a rollout of `image` over `inv` as `opts` selects it: every selected host
/// planned as `push --dry-run` plans it, nothing written.
pub fn plan(
    store: &Store,
    image: Hash,
    inv: &Inventory,
    opts: &RolloutOptions,
    obs: &dyn Observer,
) -> Result<RolloutPlan> {
    let (colos, not_selected) = selected(inv, opts)?;
    let images = Images {
        store,
        loaded: Mutex::new(HashMap::new()),
    };
    let target = images.get(image)?;
    let cache = Cache::new(super::opts_cache_dir(store), 19);
    let mut out = Vec::new();
    for colo in &colos {
        out.push(colo_plan(colo, &target, &cache, store, opts, obs)?);
    }
    Ok(RolloutPlan {
        image,
        colos: out,
        not_selected,
    })
}

fn colo_plan(
    colo: &Colo,
    target: &push::Image,
    cache: &Cache,
    store: &Store,
    opts: &RolloutOptions,
    obs: &dyn Observer,
) -> Result<ColoPlan> {
    let mut popts = push_options(colo, opts, None);
    popts.dry_run = true;
    let refused = match signing_policy(colo, target) {
        Ok(p) => {
            popts.require_signed = p;
            None
        }
        Err(e) => Some(e.to_string()),
    };
    let mut waves = Vec::new();
    for (name, failure_budget, hosts) in named_waves(colo)? {
        let hosts = match &refused {
            Some(why) => hosts.iter().map(|h| refused_host(h, why)).collect(),
            None => push::for_hosts(&hosts, colo.policy.parallel, |h| {
                let o = host_options(&popts, h);
                HostPlan::of(&push::push_host(store, target, cache, &h.spec, &o, obs))
            }),
        };
        waves.push(WavePlan {
            name,
            failure_budget,
            hosts,
        });
    }
    Ok(ColoPlan {
        name: colo.name.clone(),
        refused,
        pre: colo.policy.pre.clone(),
        post: colo.policy.post.clone(),
        waves,
    })
}

/// A host of a colo whose signing policy refuses the image: not contacted.
fn refused_host(h: &Host, why: &str) -> HostPlan {
    HostPlan {
        host: h.spec.to_string(),
        ok: false,
        error: Some(why.to_string()),
        image_before: None,
        bytes: 0,
        added: 0,
        changed: 0,
        deleted: 0,
        deletes: Vec::new(),
    }
}

impl RolloutPlan {
    /// Whether every host was reached and planned.
    pub fn ok(&self) -> bool {
        self.colos
            .iter()
            .flat_map(|c| &c.waves)
            .flat_map(|w| &w.hosts)
            .all(|h| h.ok)
    }
}
