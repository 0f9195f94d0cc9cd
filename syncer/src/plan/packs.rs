//! Packs: the groups of files whose raw bytes travel as one zstd stream
//! ([`crate::encoding::pack`]), made or found in the delta cache and checked ([`make_pack`];
//! a push makes each while the one before it is sent), reused from the packs published
//! for hosts at an image ([`reuse`]), and the files no pack took, finished alone.

use super::{Item, Packable};
use crate::delta::Cache;
use crate::encoding::{pack, Encoding};
use crate::error::{Error, Result};
use crate::protocol::PackEntry;
use imager::store::Store;
use imager::tree::escape::escape;
use imager::Hash;
use std::collections::HashMap;
use std::sync::Arc;

/// A pack as sent: its entries (in the items' order) and its stream.
pub struct BuiltPack {
    /// What names it (in the cache, and where it is published): its parts.
    pub key: Hash,
    /// Each part's path, encoding and raw length, as the host is told them.
    pub entries: Vec<PackEntry>,
    /// The items (indexes) it carries, in order.
    pub items: Vec<usize>,
    /// The compressed stream, as it goes on the wire.
    pub payload: Arc<Vec<u8>>,
    /// Bytes of all its parts before the pack's compression (skipped entries included).
    pub raw: u64,
    /// Entries (indexes) this host skips: a pack made for hosts at an image, reused for
    /// one that drifted from it in those files ([`reuse`]).
    pub skip: Vec<u32>,
    /// The zstd level of its stream ([`pack_level`]), which its published name carries.
    pub level: i32,
    /// Made beside the sending and not yet kept in the delta cache: the sender keeps it
    /// ([`Cache::keep_pack`]) once it is sent.
    pub unkept: bool,
}

/// A pack as made for a clean host at some image (what `crate::publish` publishes):
/// its parts' identities, so that a host at that image can reuse it.
pub struct Shared {
    /// What names it: the hash of its parts, as for [`BuiltPack::key`].
    pub key: Hash,
    /// Each part's path, encoding and raw length.
    pub entries: Vec<PackEntry>,
    /// Each entry's new content and the old content its delta is from.
    pub parts: Vec<(Hash, Option<Hash>)>,
    /// The compressed stream.
    pub payload: Arc<Vec<u8>>,
    /// Bytes of all its parts before the pack's compression.
    pub raw: u64,
    /// The zstd level of its stream.
    pub level: i32,
}

impl Shared {
    /// The shared form of the packs of a plan.
    pub fn of(items: &[Item], packs: Vec<BuiltPack>) -> Vec<Shared> {
        packs
            .into_iter()
            .map(|p| Shared {
                key: p.key,
                parts: p
                    .items
                    .iter()
                    .map(|&i| (items[i].hash, items[i].packable.base()))
                    .collect(),
                entries: p.entries,
                payload: p.payload,
                raw: p.raw,
                level: p.level,
            })
            .collect()
    }
}

/// Takes the `shared` packs that carry at least half their raw bytes for `items`
/// (the same file, the same way, from the same old content), skipping their other
/// entries; those items are marked packed. A host that drifted from the image the
/// packs were made for in a few files so still fetches them (a pack's key would change
/// with any file that differs), and only its drifted files travel otherwise.
pub fn reuse(items: &mut [Item], shared: &[Shared]) -> Vec<BuiltPack> {
    let by_path: HashMap<Vec<u8>, usize> = items
        .iter()
        .enumerate()
        .filter(|(_, it)| it.packable != Packable::No && !it.packed)
        .map(|(i, it)| (it.path.clone(), i))
        .collect();
    let mut used = vec![false; items.len()];
    let mut out = Vec::new();
    for sp in shared {
        let (mut taken, mut skip, mut raw) = (Vec::new(), Vec::new(), 0u64);
        for (k, (e, (hash, base))) in sp.entries.iter().zip(&sp.parts).enumerate() {
            let same = by_path.get(&e.path).copied().filter(|&i| {
                let it = &items[i];
                !used[i]
                    && it.hash == *hash
                    && it.encoding == e.encoding
                    && it.packable.base() == *base
                    && raw_len(it) == e.len
            });
            match same {
                Some(i) => {
                    taken.push(i);
                    raw += e.len;
                }
                None => skip.push(k as u32),
            }
        }
        if taken.is_empty() || raw * 2 < sp.raw {
            continue;
        }
        for &i in &taken {
            used[i] = true;
        }
        out.push(BuiltPack {
            key: sp.key,
            entries: sp.entries.clone(),
            items: taken,
            payload: sp.payload.clone(),
            raw: sp.raw,
            skip,
            level: sp.level,
            unkept: false,
        });
    }
    for (it, u) in items.iter_mut().zip(used) {
        it.packed |= u;
    }
    out
}

/// The bytes of a packable item in a pack: its content, its raw patch uncompressed,
/// or its zstd delta as it is (compressed already, but in a pack it needs no `Put`).
fn raw_part(store: &Store, it: &Item) -> std::result::Result<Vec<u8>, String> {
    match (&it.encoding, it.packable) {
        (Encoding::ZstdDelta, _) => Ok(it.payload.bytes().to_vec()),
        (e, Packable::From(_)) if e.patch_kind().is_some() => {
            crate::delta::decompress_frame(it.payload.bytes())
        }
        _ => store.read_object(&it.hash).map_err(|e| e.to_string()),
    }
}

/// The length of an item's raw part.
fn raw_len(it: &Item) -> u64 {
    match it.encoding {
        Encoding::ZstdDelta => it.payload.len(),
        ref e if e.patch_kind().is_some() => {
            zstd::zstd_safe::get_frame_content_size(it.payload.bytes())
                .ok()
                .flatten()
                .unwrap_or(u64::MAX)
        }
        _ => it.size,
    }
}

/// Groups the packable items (in order, each part at most [`pack::MAX_PART`]) for packs
/// of at most [`pack::MAX_RAW`] raw bytes ([`WHOLE_PACK_RAW`] of whole content), each of two files or more (a pack of one file
/// is that file on its own); their items are marked packed. Each is made by
/// [`make_pack`] (a push makes each as the one before it is sent).
pub fn groups(items: &mut [Item]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let (mut raw, mut whole) = (0u64, 0u64);
    for (i, it) in items.iter().enumerate() {
        let n = raw_len(it);
        // (Packed already: in a pack reused from another plan.)
        if it.packable == Packable::No || it.packed || n > pack::MAX_PART {
            continue;
        }
        let w = if it.encoding == Encoding::Whole { n } else { 0 };
        if groups.is_empty() || raw + n > pack::MAX_RAW || whole + w > WHOLE_PACK_RAW {
            groups.push(Vec::new());
            (raw, whole) = (0, 0);
        }
        (raw, whole) = (raw + n, whole + w);
        if let Some(g) = groups.last_mut() {
            g.push(i);
        }
    }
    groups.retain(|g| g.len() >= 2);
    for &i in groups.iter().flatten() {
        items[i].packed = true;
    }
    groups
}

/// The raw bytes of a group's parts (before the pack's compression).
pub fn group_raw(items: &[Item], group: &[usize]) -> u64 {
    group.iter().map(|&i| raw_len(&items[i])).sum()
}

/// Encodes on its own, at the push's level, every item that [`encode`] left for a pack
/// but that no pack took: whole content not compressed yet, raw patches compressed
/// at the fast level packs start from.
pub fn finish_alone(store: &Store, cache: &Cache, items: &mut [Item]) -> Result<()> {
    use rayon::prelude::*;
    items
        .par_iter_mut()
        .filter(|it| !it.packed)
        .try_for_each(|it| {
            let err = |m: String| Error::Encode(format!("encoding {}: {m}", escape(&it.path)));
            match (&it.encoding, it.packable) {
                (Encoding::Whole, _) if it.payload.is_empty() => {
                    it.payload = cache.whole(store, &it.hash).map_err(err)?.into();
                }
                (e, Packable::From(old)) => {
                    let Some(kind) = e.patch_kind() else {
                        return Ok(());
                    };
                    it.payload = cache
                        .patch_alone(kind, store, &old, &it.hash)
                        .map_err(err)?
                        .into();
                }
                _ => {}
            }
            Ok(())
        })
}

/// The hash naming a pack: of its parts (how each travels, from what, to what).
fn pack_key(items: &[Item], group: &[usize]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"syncer pack 1\n");
    for &i in group {
        let it = &items[i];
        let base = it.packable.base().map_or([0u8; 32], |b| b.0);
        h.update(&[match it.encoding {
            Encoding::Bsdiff => 1,
            Encoding::GzipDelta => 3,
            Encoding::Zucchini => 4,
            Encoding::Bitcode => 5,
            Encoding::ZstdDelta => 2,
            _ => 0,
        }]);
        h.update(&base);
        h.update(&it.hash.0);
        // And the part's own bytes (a patch, a delta): made again by another build of
        // its differ (preflate, Zucchini) or in another format, a patch may differ, and a
        // pack made before must not pass for it.
        if !it.payload.is_empty() {
            h.update(blake3::hash(it.payload.bytes()).as_bytes());
        }
    }
    Hash::from(h.finalize())
}

/// The most whole content a pack holds (its raw bytes may reach [`pack::MAX_RAW`] with
/// patches): packs are made while the ones before them are sent, and a first install's
/// first bytes wait for its first pack. The corpus's 323 MB at level 3 in 16 MB packs
/// are 2.6% larger than in 64 MB ones; patches, which gain more from one another, keep
/// the larger packs.
pub const WHOLE_PACK_RAW: u64 = 16 << 20;

/// The level of a pack of whole contents made `fast`: while the link takes bytes faster
/// than the packs are made ([`crate::push`] sees it waiting for them), compressing
/// harder only slows the push down (as `zstd --adapt` lowers its level).
pub const FAST_LEVEL: i32 = 1;

/// How [`make_pack`] makes a pack: before anything is sent (kept in the cache as it is
/// made), or beside the sending, which keeps it ([`BuiltPack::unkept`]) while the next
/// is made, and `fast` when the sending waited for the pack before it.
#[derive(Clone, Copy)]
pub enum Making {
    /// For a plan made whole before anything is sent (a dry run, mirrors, `publish`).
    Before,
    /// While the pack before it is sent.
    Beside {
        /// The sending waited for the pack before this one.
        fast: bool,
    },
}

/// The pack of `group` (of [`groups`]): from the cache, or compressed and checked; at
/// [`FAST_LEVEL`] when made fast and its level would be the whole contents' (unless the
/// cache holds it at that level already).
pub fn make_pack(
    store: &Store,
    cache: &Cache,
    items: &[Item],
    (group, making): (Vec<usize>, Making),
) -> Result<BuiltPack> {
    let entries: Vec<PackEntry> = group
        .iter()
        .map(|&i| PackEntry {
            path: items[i].path.clone(),
            encoding: items[i].encoding.clone(),
            len: raw_len(&items[i]),
        })
        .collect();
    let raw: u64 = entries.iter().map(|e| e.len).sum();
    let key = pack_key(items, &group);
    let mut level = pack_level(cache, &entries);
    let fast = matches!(making, Making::Beside { fast: true });
    if fast && level == cache.whole_level() && !cache.has_pack(&key, level) {
        level = level.min(FAST_LEVEL);
    }
    let (payload, unkept) = cache
        .pack_unkept(&key, level, |level| {
            let mut all = Vec::with_capacity(raw as usize);
            for &i in &group {
                all.extend(raw_part(store, &items[i])?);
            }
            let z = pack::compress(&all, level)?;
            // Each part was checked when computed (a patch against its base, content by
            // its hash in the store); the stream must give back exactly the parts.
            if pack::decompress(&z, raw)? != all {
                return Err("the pack just made does not decompress to its parts".into());
            }
            Ok(z)
        })
        .map_err(|m| {
            Error::Encode(format!(
                "packing {} files from {}: {m}",
                group.len(),
                escape(&items[group[0]].path)
            ))
        })?;
    let mut p = BuiltPack {
        key,
        entries,
        items: group,
        payload,
        raw,
        skip: Vec::new(),
        level,
        unkept: false,
    };
    match making {
        Making::Before if unkept => cache.keep_pack(&p.key, p.level, &p.payload),
        Making::Before => {}
        Making::Beside { .. } => p.unkept = unkept,
    }
    Ok(p)
}

/// A pack is compressed at the push's level, or at the whole contents' level
/// ([`Cache::whole_level`]) when whole contents are most of its raw bytes (a first
/// install's packs: all of them): what it holds decides, so the push and `publish` name
/// the same pack alike.
fn pack_level(cache: &Cache, entries: &[PackEntry]) -> i32 {
    let raw: u64 = entries.iter().map(|e| e.len).sum();
    let whole: u64 = entries
        .iter()
        .filter(|e| e.encoding == Encoding::Whole)
        .map(|e| e.len)
        .sum();
    if whole * 2 > raw {
        cache.whole_level()
    } else {
        cache.level()
    }
}
