//! How each changed file's content travels, once `choose` (`push/content.rs`) has said
//! what the host and the store allow: the candidates for a file whose old version the store holds
//! (bsdiff, gzip-aware for gzip files, Zucchini for executables, bitcode-aware for LLVM
//! bitcode, zstd patch-from, whole) and the one kept, then the packs that carry the
//! files whose raw bytes compress better together ([`crate::encoding::pack`]).
//!
//! The rule for a file with an old version: the smallest candidate on its own, except
//! that a raw patch (bsdiff, gzip-aware, Zucchini) or whole content, which go into a pack, are kept unless the
//! zstd delta is clearly smaller ([`PACK_GAIN`]): in a pack they share a compression
//! context and come out smaller than on their own, a zstd delta cannot (it is
//! compressed already).

use crate::delta::Cache;
use crate::encoding::{bitcode, bsdiff, gzip, pack, zucchini, Encoding, PatchKind};
use crate::error::{Error, Result};
use crate::payload::Payload;
use imager::store::Store;
use imager::tree::escape::escape;
use imager::Hash;
use serde::Serialize;
use std::sync::Arc;

mod packs;
pub use packs::*;

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

/// A bitcode-aware candidate is computed only for bitcode whose bsdiff patch is larger
/// than this: reading a small file into tokens costs next to nothing, and on the server
/// benchmark pair the files with a bsdiff patch of 1 to 4 KiB still save some 40%.
pub const BITCODE_FROM: u64 = 1 << 10;

/// Files from this size get their Zucchini candidate (when they are executables)
/// computed alongside bsdiff's rather than after it, whatever bsdiff's patch: their
/// bsdiff patch is nearly always over [`ZUCCHINI_FROM`].
pub const ZUCCHINI_ALONGSIDE: u64 = 1 << 20;

/// The lowest zstd level at which a file's gzip-aware, Zucchini and bitcode-aware
/// candidates are computed. Below it (level 1 is a `local:` host's default: its bytes cross a pipe)
/// they are left out: the agent's rebuilding of deflate streams and applying of Zucchini
/// patches cost a push more time than the bytes they save take on a pipe (a managed
/// host of the benchmark corpus: 0.55 s with them, 0.45 s without, for 2.3 MB against
/// 4.8 MB; `docs/benchmarks.md`), and the cold plan skips their CPU-heavy diffs.
pub const CONTENT_AWARE_FROM: i32 = 4;

/// Whether a push at `level` computes gzip-aware, Zucchini and bitcode-aware candidates
/// ([`CONTENT_AWARE_FROM`]).
pub fn content_aware(level: i32) -> bool {
    level >= CONTENT_AWARE_FROM
}

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
    /// Bytes of the bitcode-aware patch ([`bitcode`]), compressed as bsdiff's; `None`
    /// unless both versions are LLVM bitcode within [`bitcode::MAX_FILE`] whose bsdiff
    /// patch is over [`BITCODE_FROM`] bytes and whose tokens rebuild them exactly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitcode: Option<u64>,
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
            let Patches { b, g, z, c } =
                raw_patches(store, cache, &w, (old, old_size)).map_err(err)?;
            let p = if b.is_none() || w.size <= PATCH_FROM_MAX {
                Some(cache.zstd_delta(store, &old, &w.hash).map_err(err)?)
            } else {
                None
            };
            let least = [&b, &g, &z, &c, &p]
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
                bitcode: len(&c),
                zstd_delta: len(&p),
                whole: len(&wh),
            };
            let (e, payload, packable) = match pick(&candidates) {
                Encoding::ZstdDelta => (Encoding::ZstdDelta, p, Packable::From(old)),
                Encoding::Bsdiff => (Encoding::Bsdiff, b, Packable::From(old)),
                Encoding::GzipDelta => (Encoding::GzipDelta, g, Packable::From(old)),
                Encoding::Zucchini => (Encoding::Zucchini, z, Packable::From(old)),
                Encoding::Bitcode => (Encoding::Bitcode, c, Packable::From(old)),
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

/// A file's raw patches (bsdiff, gzip-aware, Zucchini, bitcode-aware), each
/// zstd-compressed at [`crate::delta::BSDIFF_LEVEL`], `None` where there is none.
struct Patches {
    b: Option<Arc<Vec<u8>>>,
    g: Option<Arc<Vec<u8>>>,
    z: Option<Arc<Vec<u8>>>,
    c: Option<Arc<Vec<u8>>>,
}

/// The raw patches of `w` from its old version `old` (hash, size) in the store, those
/// that apply: bsdiff (old versions up to [`bsdiff::MAX_OLD`]), gzip-aware (`.gz` files
/// it can rebuild), Zucchini (ELF files whose bsdiff patch is large enough to matter) and
/// bitcode-aware (LLVM bitcode, the same), the last three only at a level that is
/// [`content_aware`].
fn raw_patches(
    store: &Store,
    cache: &Cache,
    w: &Wanted,
    (old, old_size): (Hash, u64),
) -> std::result::Result<Patches, String> {
    let aware = content_aware(cache.level());
    let first = if aware {
        head(store, &w.hash, w.size)
    } else {
        [0; 4]
    };
    let fits = |max: u64| aware && old_size <= max && w.size <= max;
    let fits_zucchini = fits(zucchini::MAX_FILE) && zucchini::is_elf(&first);
    let fits_bitcode = fits(bitcode::MAX_FILE) && bitcode::is_bitcode(&first);
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
    let g = (aware
        && w.path.ends_with(b".gz")
        && old_size <= gzip::MAX_FILE
        && w.size <= gzip::MAX_FILE)
        .then(|| cache.patch(PatchKind::Gzip, store, &old, &w.hash).ok())
        .flatten();
    // Only candidates too: bsdiff's patch says whether they can matter, and the
    // files' first bytes whether they are executables or bitcode.
    let over = |n: u64| b.as_ref().is_some_and(|b| b.len() as u64 > n);
    let z = match early_z {
        Some(z) => z,
        None => (over(ZUCCHINI_FROM) && fits_zucchini)
            .then(zucchini)
            .flatten(),
    };
    let c = (over(BITCODE_FROM) && fits_bitcode)
        .then(|| cache.patch(PatchKind::Bitcode, store, &old, &w.hash).ok())
        .flatten();
    Ok(Patches { b, g, z, c })
}

/// The way a file with these candidates travels: see the module's rule.
fn pick(c: &Candidates) -> Encoding {
    // What goes into a pack, the smallest (on a tie the first: whole, then bsdiff).
    let packed = [
        (Encoding::Whole, c.whole),
        (Encoding::Bsdiff, c.bsdiff),
        (Encoding::GzipDelta, c.gzip),
        (Encoding::Zucchini, c.zucchini),
        (Encoding::Bitcode, c.bitcode),
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

/// The first bytes of the store's object `hash` (of `size` bytes), zeros where it has
/// none: they say whether it is an ELF file or bitcode (which get candidates of their
/// own).
fn head(store: &Store, hash: &Hash, size: u64) -> [u8; 4] {
    use std::io::Read;
    let mut head = [0u8; 4];
    if let Ok(mut r) = store.object_reader(hash, size) {
        let _ = r.read_exact(&mut head);
    }
    head
}

/// What kind of file this is, for the report's table of which way won by kind:
/// "executable" or "shared library" (ELF), "bitcode" (LLVM), "python", "compressed"
/// (gzip, xz, zstd, bzip2), "text" or "other".
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
    } else if bitcode::is_bitcode(head) {
        "bitcode"
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
            zstd_delta: z,
            whole: w,
            ..Candidates::default()
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
