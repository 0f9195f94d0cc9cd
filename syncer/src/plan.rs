//! How each changed file's content travels, once `choose` (`push/content.rs`) has said
//! what the host and the store allow: the candidates for a file whose old version the store holds
//! (bsdiff, gzip-aware for gzip files, Zucchini for executables, zstd patch-from, whole) and the one kept, then the packs that carry the
//! files whose raw bytes compress better together ([`crate::encoding::pack`]).
//!
//! The rule for a file with an old version: the smallest candidate on its own, except
//! that a raw patch (bsdiff, gzip-aware, Zucchini) or whole content, which go into a pack, are kept unless the
//! zstd delta is clearly smaller ([`PACK_GAIN`]): in a pack they share a compression
//! context and come out smaller than on their own, a zstd delta cannot (it is
//! compressed already).

use crate::delta::Cache;
use crate::encoding::{bsdiff, gzip, pack, zucchini, Encoding, PatchKind};
use crate::error::{Error, Result};
use crate::payload::Payload;
use crate::protocol::PackEntry;
use imager::store::Store;
use imager::tree::escape::escape;
use imager::Hash;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// A zstd delta (at the push's level) must be smaller than this share of the bsdiff
/// patch (at [`crate::delta::BSDIFF_LEVEL`]) to be sent instead: in a pack, the patches
/// of the benchmark corpus came out some 13% smaller than on their own at the same
/// level, and level 3 makes them some 13% larger than level 19 (0.87 × 0.87).
pub const PACK_GAIN: f64 = 0.75;

/// Files up to this size get a zstd patch-from candidate beside bsdiff: cheap for them,
/// and the better of the two on small text. Larger files (executables, libraries) get
/// bsdiff only, unless bsdiff cannot take them ([`bsdiff::MAX_OLD`]): at level 19,
/// patch-from costs more CPU than bsdiff and lost to it on nearly all of them.
pub const PATCH_FROM_MAX: u64 = 1 << 20;

/// A Zucchini candidate is computed only for an executable whose bsdiff patch is larger
/// than this (as update_engine does): it costs as much CPU as bsdiff, and on a small
/// patch saves a few hundred bytes at most.
pub const ZUCCHINI_FROM: u64 = 4 << 10;

/// Files from this size get their Zucchini candidate (when they are executables)
/// computed alongside bsdiff's rather than after it, whatever bsdiff's patch: their
/// bsdiff patch is nearly always over [`ZUCCHINI_FROM`].
pub const ZUCCHINI_ALONGSIDE: u64 = 1 << 20;

/// The sizes, each compressed on its own, of the ways a file with an old version in
/// the store could travel (those computed), for the report.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Candidates {
    /// Bytes of the bsdiff patch, zstd-compressed at [`crate::delta::BSDIFF_LEVEL`];
    /// `None` when the old version is too large for bsdiff ([`bsdiff::MAX_OLD`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bsdiff: Option<u64>,
    /// Bytes of the gzip-aware patch ([`gzip`]), compressed as bsdiff's; `None` unless
    /// both versions are gzip files (named `.gz`) within [`gzip::MAX_FILE`] whose
    /// deflate streams it can rebuild.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gzip: Option<u64>,
    /// Bytes of the Zucchini patch ([`zucchini`]), compressed as bsdiff's; `None` unless
    /// both versions are ELF files within [`zucchini::MAX_FILE`] whose bsdiff patch is
    /// over [`ZUCCHINI_FROM`] bytes or that are [`ZUCCHINI_ALONGSIDE`] bytes or more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zucchini: Option<u64>,
    /// Bytes of the zstd patch-from delta at the push's level; `None` for a file larger
    /// than [`PATCH_FROM_MAX`] that bsdiff could take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zstd_delta: Option<u64>,
    /// Bytes of the whole content compressed at the push's level; `None` when a delta
    /// came out under a quarter of the file's size, so it was not worth computing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whole: Option<u64>,
}

/// One file's content as it travels.
pub struct Item {
    /// The file's path in the image, raw bytes (not necessarily UTF-8).
    pub path: Vec<u8>,
    /// The new content's hash, as the image names it.
    pub hash: Hash,
    /// The new content's size in bytes, uncompressed.
    pub size: u64,
    /// The way it travels, as chosen (a delta's candidates compared).
    pub encoding: Encoding,
    /// The encoding on its own (a `Put`'s payload).
    pub payload: Payload,
    /// Whether it can go into a pack, and as what.
    pub packable: Packable,
    /// Whether it travels in a pack (set by [`groups`], or [`reuse`]).
    pub packed: bool,
    /// The sizes compared to choose its encoding; `None` unless the store held the
    /// host's old version (the report sums them).
    pub candidates: Option<Candidates>,
}

/// Whether an item can go into a pack, and as what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packable {
    /// It travels on its own: a local copy, an rsync delta, a large file's records,
    /// whole content larger than a pack's part.
    No,
    /// Its whole content.
    Whole,
    /// A raw patch (bsdiff, gzip-aware, Zucchini) or zstd delta from this old content.
    From(Hash),
}

impl Packable {
    /// The old content its delta is from, if it is a delta.
    pub fn base(self) -> Option<Hash> {
        match self {
            Packable::From(h) => Some(h),
            _ => None,
        }
    }
}

/// How one file's content may travel (`choose`, in `push/content.rs`), decided before
/// anything is encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// The file's path in the image, raw bytes.
    pub path: Vec<u8>,
    /// The new content's hash.
    pub hash: Hash,
    /// The new content's size in bytes.
    pub size: u64,
    /// The way `choose` allows: a `ZstdDelta` with a base means "compare the delta
    /// candidates" ([`encode`] may settle on bsdiff or whole).
    pub encoding: Encoding,
    /// For a delta: the old content, in the store, it is made from, and its size.
    pub base: Option<(Hash, u64)>,
}

/// Encodes one file as `w` says: a file with an old version in the store gets its
/// candidates compared, whole content is compressed, and any other way (a local copy,
/// an rsync delta) is `other`'s.
pub fn encode(
    store: &Store,
    cache: &Cache,
    w: Wanted,
    other: impl FnOnce(&Wanted) -> Result<(Encoding, Arc<Vec<u8>>)>,
) -> Result<Item> {
    let err = |m: String| Error::Encode(format!("encoding {}: {m}", escape(&w.path)));
    let whole = || cache.whole(store, &w.hash).map_err(err);
    let item = |encoding, payload: Payload, packable, candidates| Item {
        path: w.path.clone(),
        hash: w.hash,
        size: w.size,
        encoding,
        payload,
        packable,
        packed: false,
        candidates,
    };
    Ok(match (&w.encoding, w.base) {
        (Encoding::Chunked, base) => {
            let payload = cache.chunked(store, base, (&w.hash, w.size)).map_err(err)?;
            item(Encoding::Chunked, payload, Packable::No, None)
        }
        (Encoding::ZstdDelta, Some((old, old_size))) => {
            let (b, g, z) = raw_patches(store, cache, &w, (old, old_size)).map_err(err)?;
            let p = if b.is_none() || w.size <= PATCH_FROM_MAX {
                Some(cache.zstd_delta(store, &old, &w.hash).map_err(err)?)
            } else {
                None
            };
            let least = [&b, &g, &z, &p]
                .into_iter()
                .flatten()
                .map(|d| d.len())
                .min();
            // The whole file only when the deltas are not clearly small.
            let wh = match least {
                Some(n) if (n as u64) * 4 < w.size => None,
                _ => Some(whole()?),
            };
            let len = |d: &Option<Arc<Vec<u8>>>| d.as_ref().map(|d| d.len() as u64);
            let candidates = Candidates {
                bsdiff: len(&b),
                gzip: len(&g),
                zucchini: len(&z),
                zstd_delta: len(&p),
                whole: len(&wh),
            };
            let (e, payload, packable) = match pick(&candidates) {
                Encoding::ZstdDelta => (Encoding::ZstdDelta, p, Packable::From(old)),
                Encoding::Bsdiff => (Encoding::Bsdiff, b, Packable::From(old)),
                Encoding::GzipDelta => (Encoding::GzipDelta, g, Packable::From(old)),
                Encoding::Zucchini => (Encoding::Zucchini, z, Packable::From(old)),
                _ => (Encoding::Whole, wh, Packable::Whole),
            };
            item(
                e,
                payload.unwrap_or_default().into(),
                packable,
                Some(candidates),
            )
        }
        // Compressed on its own only if it is to travel so ([`finish_alone`]): in a
        // pack its content is compressed with the pack.
        (Encoding::Whole, _) | (Encoding::ZstdDelta, None) if w.size <= pack::MAX_PART => {
            item(Encoding::Whole, Payload::default(), Packable::Whole, None)
        }
        (Encoding::Whole, _) | (Encoding::ZstdDelta, None) => {
            item(Encoding::Whole, whole()?.into(), Packable::No, None)
        }
        _ => {
            let (e, payload) = other(&w)?;
            item(e, payload.into(), Packable::No, None)
        }
    })
}

/// A file's bsdiff, gzip-aware and Zucchini patches, each zstd-compressed at
/// [`crate::delta::BSDIFF_LEVEL`], `None` where there is none.
type Patches = (
    Option<Arc<Vec<u8>>>,
    Option<Arc<Vec<u8>>>,
    Option<Arc<Vec<u8>>>,
);

/// The raw patches of `w` from its old version `old` (hash, size) in the store, those
/// that apply: bsdiff (old versions up to [`bsdiff::MAX_OLD`]), gzip-aware (`.gz` files
/// it can rebuild) and Zucchini (ELF files whose bsdiff patch is large enough to matter).
fn raw_patches(
    store: &Store,
    cache: &Cache,
    w: &Wanted,
    (old, old_size): (Hash, u64),
) -> std::result::Result<Patches, String> {
    let fits_zucchini = old_size <= zucchini::MAX_FILE
        && w.size <= zucchini::MAX_FILE
        && starts_elf(store, &w.hash, w.size);
    let zucchini = || cache.patch(PatchKind::Zucchini, store, &old, &w.hash).ok();
    // A large file's Zucchini patch is computed beside its bsdiff patch, not after
    // it: on a cold cache the two are the plan's longest chain.
    let (b, early_z) = if old_size <= bsdiff::MAX_OLD {
        let bsdiff = || cache.patch(PatchKind::Bsdiff, store, &old, &w.hash);
        let (b, z) = if fits_zucchini && w.size >= ZUCCHINI_ALONGSIDE {
            let (b, z) = rayon::join(bsdiff, zucchini);
            (b, Some(z))
        } else {
            (bsdiff(), None)
        };
        (Some(b?), z)
    } else {
        (None, None)
    };
    // Only a candidate: a file named .gz that is no gzip file, or whose stream
    // preflate cannot take, travels another way.
    let g = (w.path.ends_with(b".gz") && old_size <= gzip::MAX_FILE && w.size <= gzip::MAX_FILE)
        .then(|| cache.patch(PatchKind::Gzip, store, &old, &w.hash).ok())
        .flatten();
    // Only a candidate too: bsdiff's patch says whether it can matter, and the
    // files' first bytes whether they are executables.
    let z = match early_z {
        Some(z) => z,
        None => b
            .as_ref()
            .filter(|b| b.len() as u64 > ZUCCHINI_FROM && fits_zucchini)
            .and_then(|_| zucchini()),
    };
    Ok((b, g, z))
}

/// The way a file with these candidates travels: see the module's rule.
fn pick(c: &Candidates) -> Encoding {
    // What goes into a pack, the smallest (on a tie the first: whole, then bsdiff).
    let packed = [
        (Encoding::Whole, c.whole),
        (Encoding::Bsdiff, c.bsdiff),
        (Encoding::GzipDelta, c.gzip),
        (Encoding::Zucchini, c.zucchini),
    ]
    .into_iter()
    .filter_map(|(e, n)| Some((e, n?)))
    .min_by_key(|(_, n)| *n);
    match (packed, c.zstd_delta) {
        (Some((_, n)), Some(z)) if (z as f64) < PACK_GAIN * n as f64 => Encoding::ZstdDelta,
        (Some((e, _)), _) => e,
        (None, Some(_)) => Encoding::ZstdDelta,
        (None, None) => Encoding::Whole,
    }
}

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
        Encoding::Bsdiff | Encoding::GzipDelta | Encoding::Zucchini => {
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

/// The pack of `group` (of [`groups`]): from the cache, or compressed and checked; at
/// [`FAST_LEVEL`] when `fast` and its level would be the whole contents' (unless the
/// cache holds it at that level already).
pub fn make_pack(
    store: &Store,
    cache: &Cache,
    items: &[Item],
    (group, fast): (Vec<usize>, bool),
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
    if fast && level == cache.whole_level() && !cache.has_pack(&key, level) {
        level = level.min(FAST_LEVEL);
    }
    let payload = cache
        .pack(&key, level, |level| {
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
    Ok(BuiltPack {
        key,
        entries,
        items: group,
        payload,
        raw,
        skip: Vec::new(),
        level,
    })
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

/// Whether the store's object `hash` (of `size` bytes) is an ELF file, by its first
/// bytes (a Zucchini candidate is computed only for those).
fn starts_elf(store: &Store, hash: &Hash, size: u64) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    let Ok(mut r) = store.object_reader(hash, size) else {
        return false;
    };
    r.read_exact(&mut head).is_ok() && zucchini::is_elf(&head)
}

/// What kind of file this is, for the report's table of which way won by kind:
/// "executable" or "shared library" (ELF), "python", "compressed" (gzip, xz, zstd,
/// bzip2), "text" or "other".
pub fn class(store: &Store, path: &[u8], hash: &Hash, size: u64) -> &'static str {
    use std::io::Read;
    // The first 4 KiB tell, not the whole file.
    let mut buf = Vec::with_capacity(4096);
    if let Ok(r) = store.object_reader(hash, size) {
        let _ = r.take(4096).read_to_end(&mut buf);
    }
    let head = &buf[..];
    let name = String::from_utf8_lossy(path);
    if head.starts_with(b"\x7fELF") {
        if name.contains(".so") {
            "shared library"
        } else {
            "executable"
        }
    } else if name.ends_with(".py") {
        "python"
    } else if [&b"\x1f\x8b"[..], b"\xfd7zXZ\0", b"\x28\xb5\x2f\xfd", b"BZh"]
        .iter()
        .any(|m| head.starts_with(m))
    {
        "compressed"
    } else if head.iter().all(|&b| b >= 0x20 || b"\n\t\r".contains(&b)) {
        "text"
    } else {
        "other"
    }
}

/// `bytes` shared out among `weights` in proportion, exactly (the remainder to the
/// largest), for reports of what each packed file cost.
pub fn apportion(bytes: u64, weights: &[u64]) -> Vec<u64> {
    let total: u128 = weights.iter().map(|&w| w as u128).sum();
    if total == 0 {
        return vec![0; weights.len()];
    }
    let mut out: Vec<u64> = weights
        .iter()
        .map(|&w| (bytes as u128 * w as u128 / total) as u64)
        .collect();
    let rest = bytes - out.iter().sum::<u64>();
    if let Some(i) = (0..weights.len()).max_by_key(|&i| weights[i]) {
        out[i] += rest;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(b: Option<u64>, z: Option<u64>, w: Option<u64>) -> Candidates {
        Candidates {
            bsdiff: b,
            gzip: None,
            zucchini: None,
            zstd_delta: z,
            whole: w,
        }
    }

    #[test]
    fn a_zstd_delta_is_kept_only_when_clearly_smaller_than_what_packs() {
        assert_eq!(pick(&c(Some(100), None, None)), Encoding::Bsdiff);
        assert_eq!(pick(&c(Some(100), Some(90), None)), Encoding::Bsdiff);
        assert_eq!(pick(&c(Some(100), Some(70), None)), Encoding::ZstdDelta);
        assert_eq!(pick(&c(Some(100), Some(95), Some(90))), Encoding::Whole);
        assert_eq!(pick(&c(None, Some(10), None)), Encoding::ZstdDelta);
        assert_eq!(pick(&c(None, Some(50), Some(40))), Encoding::Whole);
    }

    #[test]
    fn shares_add_up_to_the_whole() {
        assert_eq!(apportion(10, &[1, 1, 1]), vec![3, 3, 4]);
        assert_eq!(apportion(10, &[1, 1, 1]).iter().sum::<u64>(), 10);
        assert_eq!(apportion(7, &[0, 5, 2]), vec![0, 5, 2]);
        assert_eq!(apportion(5, &[0, 0]), vec![0, 0]);
    }
}
