//! What is published for hosts at an image ([`crate::publish`] writes it; a push asks
//! a host to fetch it from its mirrors before sending the rest): where each blob is
//! named, and the plan for a clean host whose blobs they are. Both sides use this, so
//! what a host is asked to fetch is byte for byte what was published.

use super::content::{choose, encode_all};
use super::Image;
use crate::delta::Cache;
use crate::encoding::Encoding;
use crate::error::Result;
use crate::plan::{Item, Packable};
use imager::store::Store;
use imager::{Hash, Tree};
use std::collections::HashMap;

/// Where a pack is published.
pub(crate) fn pack_name(key: &Hash, level: i32) -> String {
    format!("packs/{key}.L{level}.zst")
}

/// Where a file that travels on its own is published (`None`: it cannot be, a local
/// copy or an rsync delta being made for one host's bytes, a large file's records too
/// big for an agent to hold); whole contents at the cache's whole level, deltas at its
/// level, as the cache made them.
pub(crate) fn item_name(it: &Item, cache: &Cache) -> Option<String> {
    let level = cache.level();
    // A large file's records are not published: each host gets them from the controller.
    if matches!(it.payload, crate::payload::Payload::Spilled(..)) {
        return None;
    }
    let new = it.hash;
    match (&it.encoding, it.packable) {
        (Encoding::Whole, _) if !it.payload.is_empty() => {
            Some(format!("objects/{new}.L{}.zst", cache.whole_level()))
        }
        (Encoding::ZstdDelta, Packable::From(old)) => {
            Some(format!("deltas/{old}-{new}.zstd.L{level}"))
        }
        (e, Packable::From(old)) => {
            let kind = e.patch_kind()?.name();
            Some(format!("deltas/{old}-{new}.{kind}.L{level}.zst"))
        }
        _ => None,
    }
}

/// The items and packs a push makes for a clean host whose tree is `from`.
pub(crate) fn plan_from(
    store: &Store,
    cache: &Cache,
    image: &Image,
    from: &Tree,
) -> Result<(Vec<Item>, Vec<crate::plan::BuiltPack>)> {
    let excludes = crate::agent::scan::local_excludes(&image.local_state)?;
    let local = excludes.covering();
    // The host's scan leaves out its local state: so does this. What of the image's
    // local state a clean host at `from` lacks (all of it, on an empty root) it gets, as
    // the agent finds (`agent::scan::absent_local_state`): left out here, a first
    // install's plan had files this one lacked, and not one of its packs had the key
    // that was published.
    let absent_local = image
        .tree
        .entries()
        .iter()
        .filter(|e| e.path != b"/" && local.covers(&e.path) && from.get(&e.path).is_none())
        .map(|e| e.path.clone())
        .collect();
    let mut host = crate::compare::HostTree {
        entries: from
            .entries()
            .iter()
            .filter(|e| !local.covers(&e.path))
            .cloned()
            .collect(),
        absent_local,
        ..Default::default()
    };
    // Which paths go carries no content: the owned prefixes alone do for the plan.
    let own = crate::compare::Ownership::owned(&image.owned)?;
    let (changes, _) = crate::compare::compare(
        &image.tree,
        &mut host,
        &excludes,
        &own,
        crate::compare::DirMtimes::Strict,
    );
    let have = crate::agent::have_list(&image.tree, &host, &changes);
    // Published content is for hosts elsewhere: never a store copy.
    let choices = choose(&changes, &image.tree, &have, false, |h| store.has_object(h));
    let p = encode_all(store, cache, &HashMap::new(), choices, &[], false)?;
    Ok((p.items, p.packs))
}
