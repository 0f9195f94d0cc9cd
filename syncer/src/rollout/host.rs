//! One host's push in a rollout and, when it fails after the host was reached, its way
//! back to the image it ran before; and the images those pushes load, once each.

use super::state::Rollback;
use crate::delta::Cache;
use crate::error::Result;
use crate::push::{self, HostReport, Image, Observer, PushOptions};
use crate::transport::HostSpec;
use imager::store::Store;
use imager::Hash;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Images loaded once each (the target, and every image hosts are rolled back to).
pub(super) struct Images<'s> {
    pub(super) store: &'s Store,
    pub(super) loaded: Mutex<HashMap<Hash, Arc<Image>>>,
}

impl Images<'_> {
    pub(super) fn get(&self, id: Hash) -> Result<Arc<Image>> {
        if let Some(i) = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(i.clone());
        }
        let i = Arc::new(Image::load(self.store, id)?);
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, i.clone());
        Ok(i)
    }
}

/// Pushes `target` to one host and, if that fails after the host was reached, pushes
/// back the image it had before.
pub(super) fn roll_host(
    images: &Images,
    target: &Image,
    cache: &Cache,
    spec: &HostSpec,
    opts: &PushOptions,
    obs: &dyn Observer,
) -> (HostReport, Option<Rollback>) {
    let r = push::push_host(images.store, target, cache, spec, opts, obs);
    if r.ok || r.agent.is_none() || r.refused {
        // Success, a host never reached, or a plan refused before anything was
        // written: nothing to undo (a way back would delete what the guard kept).
        return (r, None);
    }
    let before = r.image_before;
    let rb = match before {
        None => Rollback {
            ok: false,
            image: None,
            error: Some("the host had no recorded image to go back to".into()),
            report: None,
        },
        Some(b) if b == target.id => Rollback {
            ok: true,
            image: Some(b),
            error: Some("the host was already at the target image before".into()),
            report: None,
        },
        Some(b) => match images.get(b) {
            Err(e) => Rollback {
                ok: false,
                image: Some(b),
                error: Some(format!("cannot load the previous image: {e}")),
                report: None,
            },
            Ok(prev) => {
                obs.note(&format!("{spec}: rolling back to {}", b.short()));
                let mut back = opts.clone();
                back.health = None;
                // From the controller: mirrors hold the way forward, and an urgent way
                // back must not wait for their 404s.
                back.mirrors.clear();
                // The way back replaces files too: its own stale processes are listed,
                // never a reason to fail it.
                back.require_restarted = false;
                // The way back deletes what the failed push added: the syncer's own.
                back.max_delete = crate::deletes::MaxDelete::Unlimited;
                // Back to how it was: the failed image is not this host's "previous".
                back.restore_previous = crate::protocol::Previous::set(r.previous_before);
                let rr = push::push_host(images.store, &prev, cache, spec, &back, obs);
                Rollback {
                    ok: rr.ok,
                    image: Some(b),
                    error: rr.error.clone(),
                    report: Some(rr),
                }
            }
        },
    };
    (r, Some(rb))
}
