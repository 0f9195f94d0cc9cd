//! An image as the controller pushes it ([`Image`]): its tree, text and the files it
//! carries in `/usr/lib/imager/`, loaded once for every host, with what is computed once
//! for all of them (the manifest a host is told, the host views a host that records no
//! image is recognised by, the packs published for hosts at an image).

use super::published;
use crate::delta::Cache;
use crate::error::{Error, Result};
use crate::plan;
use crate::protocol::ManifestData;
use imager::contract;
use imager::store::Store;
use imager::{Hash, Kind, Tree};
use std::collections::HashMap;
use std::sync::Arc;

/// An image as the controller pushes it: its tree and text, and the local-state globs and
/// triggers it carries in `/usr/lib/imager/`.
pub struct Image {
    /// Its ID: the blake3 of its manifest text.
    pub id: Hash,
    /// Its entries, parsed from the manifest.
    pub tree: Tree,
    /// Its manifest as the store holds it: what hosts are sent (whole or as a delta).
    pub text: String,
    /// What a host never compares: the image's local-state globs and its triggers'
    /// outputs.
    pub local_state: Vec<String>,
    /// The local-state file the globs come from, as the image holds it (sent as is).
    pub local_state_file: Option<Vec<u8>>,
    /// The prefixes the image owns completely, and the file they come from (sent as is).
    pub owned: Vec<String>,
    /// The file `owned` comes from (`/usr/lib/imager/owned.txt`) as the image holds it;
    /// `None` when it has none (the default prefixes apply).
    pub owned_file: Option<Vec<u8>>,
    /// Its triggers file (`/usr/lib/imager/triggers.toml`) as it holds it; empty when it
    /// has none. Sent as is, for the agent to check against the manifest and run.
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

    /// Reads image `id` from `store` with its local-state, owned and triggers files and
    /// its signatures; an image too large for any agent to take is refused here.
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
            .and_then(|tree| published::plan_from(store, cache, self, &tree));
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
    pub(super) fn manifest_for_identity(
        &self,
        store: &Store,
        cache: &Cache,
        id: &crate::protocol::Identity,
    ) -> Result<ManifestData> {
        // A view this image's manifest was sent from before: the delta is the cache's,
        // made from the text that hashes to the host's ID (its key), and the agent
        // checks what it makes against the image's ID. No image's view is made again.
        if let Some(d) = cache.known_manifest_delta(&id.tree, &self.id) {
            return Ok(ManifestData::Delta {
                base: id.tree,
                delta: d.to_vec(),
            });
        }
        let Some(view) = self.view_with_id(store, cache, id)? else {
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
        cache: &Cache,
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
        let found = self.search_view((store, cache), id)?;
        self.views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, found.clone());
        Ok(found)
    }

    /// [`Image::view_with_id`]'s search, each time: (the store, its delta cache).
    fn search_view(
        &self,
        (store, cache): (&Store, &Cache),
        id: &crate::protocol::Identity,
    ) -> Result<Option<String>> {
        use rayon::prelude::*;
        let local = crate::agent::scan::local_excludes(&self.local_state)?;
        let mut seen = std::collections::HashSet::new();
        let mut images = Vec::new();
        for name in store.refs()? {
            for image in store.ref_history(&name)? {
                if seen.insert(image) && store.has_image(&image) {
                    images.push(image);
                }
            }
        }
        let view = |image: &Hash| -> Result<String> {
            let tree = store.read_image(image)?;
            Ok(crate::compare::host_view(
                tree.entries().iter(),
                &local,
                &id.kept,
            )?)
        };
        // Each image's view ID comes from the delta cache once it was computed (an empty
        // root's first install looks at every image), else from its view, made on every
        // core (a view just made that matches is kept). Images with the same view give
        // the same text, so whichever matches first will do; a match the cache named is
        // made and checked (the cache is only a shortcut).
        let made = std::sync::Mutex::new(None);
        let matching = images
            .par_iter()
            .map(|image| -> Result<Option<Hash>> {
                let key = crate::delta::views::view_key(image, &self.local_state, &id.kept);
                let vid = cache.view_id(&key, || {
                    let v = view(image)?;
                    let vid = imager::tree::text::id_of(&v);
                    if vid == id.tree {
                        *made.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
                    }
                    Ok(vid)
                })?;
                Ok((vid == id.tree).then_some(*image))
            })
            .find_map_any(|r| r.transpose())
            .transpose()?;
        let Some(image) = matching else {
            return Ok(None);
        };
        let v = match made.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(v) => v,
            None => view(&image)?,
        };
        Ok((imager::tree::text::id_of(&v) == id.tree).then_some(v))
    }

    /// How to tell a host at image `base` (if any) what this image is.
    pub(super) fn manifest_for(
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
