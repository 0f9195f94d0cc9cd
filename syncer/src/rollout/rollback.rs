//! `syncer rollback`: each host of the colos back to the image it ran before, or the
//! whole selection to a named image, with the colos' policies and connections.

use super::inventory::Inventory;
use super::{host_options, load_signing_policy, opts_cache_dir, push_options, warn_dropped};
use super::{Images, RolloutOptions};
use crate::delta::Cache;
use crate::error::{Error, Result};
use crate::push::{self, HostReport, Observer};
use crate::ratelimit::Bucket;
use crate::transport;
use imager::store::Store;
use imager::Hash;
use std::collections::HashMap;
use std::sync::Mutex;

/// `syncer rollback`: each host of the colos back to the image it ran before (or to `to`).
pub fn rollback(
    store: &Store,
    inv: &Inventory,
    colos: &[String],
    to: Option<Hash>,
    opts: &RolloutOptions,
    obs: &dyn Observer,
) -> Result<Vec<HostReport>> {
    let selected = inv.select(colos)?;
    let images = Images {
        store,
        loaded: Mutex::new(HashMap::new()),
    };
    let cache = Cache::new(opts_cache_dir(store), 19);
    let mut out = Vec::new();
    for colo in selected {
        let total = colo.policy.bandwidth_total.map(Bucket::new);
        let mut popts = push_options(colo, opts, total);
        popts.health = None;
        popts.require_restarted = false;
        // Each host's image is checked as it is pushed (hosts go back to different
        // images); the policy itself must load before any host.
        popts.require_signed = load_signing_policy(colo)?;
        out.extend(push::for_hosts(&colo.hosts, colo.policy.parallel, |host| {
            let o = host_options(&popts, host);
            let h = &host.spec;
            let target = match to {
                Some(t) => Ok(t),
                None => transport::connect(h, &o.transport).and_then(|s| {
                    let prev = s.welcome.previous;
                    s.close();
                    prev.ok_or_else(|| Error::Rollback("the host records no previous image".into()))
                }),
            };
            let r = target.and_then(|t| images.get(t)).map(|img| {
                let r = push::push_host(store, &img, &cache, h, &o, obs);
                obs.log(&format!(
                    "{h}: {} {}",
                    if r.ok {
                        "back at"
                    } else {
                        "FAILED going back to"
                    },
                    img.id.short()
                ));
                r
            });
            r.unwrap_or_else(|e| HostReport {
                host: h.to_string(),
                error: Some(e.to_string()),
                outcome: push::PushOutcome::FailedBeforeCommit,
                ..Default::default()
            })
        }));
    }
    warn_dropped(&cache, obs);
    Ok(out)
}
