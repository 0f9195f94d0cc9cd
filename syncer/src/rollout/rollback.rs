//! `syncer rollback`: each host of the colos (or of their hosts `--limit` selects) back
//! to the image it ran before, or the whole selection to a named image, with the colos'
//! policies, connections and `pre`/`post` hooks (a host is drained for its rollback as
//! for its rollout).

use super::hooks::{self, HookRun};
use super::inventory::{Colo, Host, Inventory};
use super::{host_options, load_signing_policy, opts_cache_dir, push_options, warn_dropped};
use super::{Images, RolloutOptions};
use crate::delta::Cache;
use crate::error::{Error, Result};
use crate::push::{self, HostReport, Image, Observer, PushOptions};
use crate::ratelimit::Bucket;
use crate::transport;
use imager::store::Store;
use imager::Hash;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One host of a rollback: its push back, and the policy's hooks around it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RolledBack {
    /// The push (a failed hook fails it, the reason in its `error`).
    #[serde(flatten)]
    pub report: HostReport,
    /// The `pre` hook's run, when the policy has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre: Option<HookRun>,
    /// The `post` hook's run, when the policy has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post: Option<HookRun>,
}

/// `syncer rollback`: each selected host back to the image it ran before (or to `to`).
pub fn rollback(
    store: &Store,
    inv: &Inventory,
    to: Option<Hash>,
    opts: &RolloutOptions,
    obs: &dyn Observer,
) -> Result<Vec<RolledBack>> {
    let back = Back {
        store,
        inv,
        images: Images {
            store,
            loaded: Mutex::new(HashMap::new()),
        },
        cache: Cache::new(opts_cache_dir(store), 19),
        obs,
    };
    let mut out = Vec::new();
    for colo in inv.select(&opts.colos)? {
        let (colo, _) = opts.limit.apply(colo);
        if colo.hosts.is_empty() {
            continue;
        }
        let total = colo.policy.bandwidth_total.map(Bucket::new);
        let mut popts = push_options(&colo, opts, total);
        popts.health = None;
        popts.require_restarted = false;
        // Each host's image is checked as it is pushed (hosts go back to different
        // images); the policy itself must load before any host.
        popts.require_signed = load_signing_policy(&colo)?;
        out.extend(push::for_hosts(&colo.hosts, colo.policy.parallel, |host| {
            back.host(&colo, host, to, &popts)
        }));
    }
    warn_dropped(&back.cache, obs);
    Ok(out)
}

/// What every host of a rollback shares.
struct Back<'a> {
    store: &'a Store,
    inv: &'a Inventory,
    images: Images<'a>,
    cache: Cache,
    obs: &'a dyn Observer,
}

impl Back<'_> {
    /// One host: the image it goes back to, then its `pre` hook, its push back if that
    /// passed, and its `post` hook, which sees the outcome.
    fn host(&self, colo: &Colo, host: &Host, to: Option<Hash>, popts: &PushOptions) -> RolledBack {
        let o = host_options(popts, host);
        let h = &host.spec;
        let img = match self.target(host, to, &o) {
            Ok(img) => img,
            Err(e) => {
                let report = HostReport::untouched(h, e.to_string());
                return RolledBack {
                    report,
                    pre: None,
                    post: None,
                };
            }
        };
        let image = ("rollback", &img.id);
        let mut around = hooks::Around::new(colo, h, image, self.inv.dir(), self.obs);
        let pre = around.pre();
        let mut report = match pre.as_ref().filter(|r| !r.ok()) {
            Some(f) => HostReport::untouched(h, hooks::pre_failed(f)),
            None => {
                let r = push::push_host(self.store, &img, &self.cache, h, &o, self.obs);
                let how = if r.ok {
                    "back at"
                } else {
                    "FAILED going back to"
                };
                self.obs.log(&format!("{h}: {how} {}", img.id.short()));
                r
            }
        };
        let post = around.post(if report.ok { "ok" } else { "failed" });
        if let Some(p) = post.as_ref().filter(|p| !p.ok()) {
            let why = hooks::post_failed(p);
            report.ok = false;
            report.error = Some(match report.error.take() {
                Some(e) => format!("{e}; {why}"),
                None => why,
            });
        }
        RolledBack { report, pre, post }
    }

    /// The image `host` goes back to: `to`, or the one it recorded before its current.
    fn target(&self, host: &Host, to: Option<Hash>, o: &PushOptions) -> Result<Arc<Image>> {
        let t = match to {
            Some(t) => t,
            None => {
                let s = transport::connect(&host.spec, &o.transport)?;
                let prev = s.welcome.previous;
                s.close();
                prev.ok_or_else(|| Error::Rollback("the host records no previous image".into()))?
            }
        };
        self.images.get(t)
    }
}
