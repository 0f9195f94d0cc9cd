//! The controller's cache of content encodings ([`crate::encoding`]): whole, zstd delta
//! and bsdiff patch of files, packs of files, and image manifests.
//!
//! Encodings are cached by (what, old hash, new hash, level) in memory and, with a cache
//! directory, on disk, so that every host at the same old version costs one computation.
//! A cached encoding is shared by every host of a push, so a wrong one would fail them
//! all: each is decoded and checked against the content it must make when computed, and
//! kept on disk with a checksum that every read checks (a damaged file is dropped and
//! computed again); [`verify`] checks a whole cache directory.

use crate::encoding::{chunked, pack, whole, zstd_delta, PatchKind};
use crate::payload::Payload;
use imager::store::Store;
use imager::Hash;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The most a manifest is compressed: the corpus image's 2.4 MB manifest took 2.6 s at
/// level 19 for 538 kB, 0.07 s at level 9 for 601 kB. A host that knows no earlier image
/// waits for it before anything else (its first install's whole contents travel at
/// [`WHOLE_LEVEL`] for the same reason); 63 kB more is worth 2.5 s only on a link under
/// 200 kbit/s.
const MANIFEST_LEVEL: i32 = 9;

/// The level of a whole manifest: the push's, at most [`MANIFEST_LEVEL`].
fn manifest_level(level: i32) -> i32 {
    level.min(MANIFEST_LEVEL)
}

/// The level of a delta between manifests of `len` bytes together: the push's up to
/// 32 MiB (a few hundred thousand entries), then at most [`MANIFEST_LEVEL`]: level 19
/// over a manifest of millions of entries takes minutes of controller CPU for a few
/// percent of its size. (A delta is small and made once for every host of a pair.)
fn manifest_delta_level(level: i32, len: usize) -> i32 {
    if len > 32 << 20 {
        manifest_level(level)
    } else {
        level
    }
}

type Slot = Arc<OnceLock<Result<Arc<Vec<u8>>, String>>>;
type LargeSlot = Arc<OnceLock<Result<Payload, String>>>;

/// What a cache entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum What {
    /// zstd: whole content (no old hash) or a patch-from delta.
    Zstd,
    /// A raw patch from old to new (bsdiff, gzip-aware, Zucchini), zstd-compressed at
    /// [`BSDIFF_LEVEL`]: the form packs are made from (they decompress it), and its size
    /// the candidate's.
    Patch(PatchKind),
    /// The same patch compressed at the push's level, to travel on its own.
    PatchAlone(PatchKind),
    /// A pack's stream; its "new hash" is the hash of the pack's list of parts.
    Pack,
}

/// (what, old content for a delta, new content).
type Key = (What, Option<Hash>, Hash);

/// The most a file's whole content, and a pack that is mostly whole contents, is
/// compressed at, whatever the push's level: level 19 runs at some 3 MB/s a core, slower
/// than nearly any link (a first install of a 330 MB root over ssh spent 108 s of its
/// 112 s compressing), where level 3 runs at hundreds of MB/s for some 20% more bytes.
/// Deltas and patches, small and computed once for a whole fleet, keep the push's level.
pub const WHOLE_LEVEL: i32 = 3;

/// The zstd level raw patches (bsdiff, gzip-aware, Zucchini) are kept at: fast, as nearly all of them travel in
/// packs, which compress them again (at level 19, 10 s of CPU more for the corpus).
pub const BSDIFF_LEVEL: i32 = 3;

/// The first bytes of a cache file. An entry is `MAGIC`, the blake3 of the encoded bytes,
/// then the encoded bytes. An encoding is decoded and checked against the content it
/// must produce once, when it is computed; after that only its bytes can go wrong (a
/// torn write, a flipped bit), and the checksum catches that on every read without
/// decoding.
const MAGIC: &[u8; 8] = b"SYNCZC1\n";
const HEADER: usize = MAGIC.len() + 32;
/// How a zstd frame starts (an entry written before entries had a checksum).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// How often an entry read is marked used again.
const MARK_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The encoded bytes of a cache file, or why it cannot be used.
fn entry_payload(file: &[u8]) -> Result<&[u8], String> {
    if file.is_empty() {
        return Err("empty".into());
    }
    if file.len() < HEADER || &file[..MAGIC.len()] != MAGIC {
        return Err(
            "not a checksummed cache entry (damaged, or written by an older syncer)".into(),
        );
    }
    let payload = &file[HEADER..];
    if Hash::of(payload).0[..] != file[MAGIC.len()..HEADER] {
        return Err(format!(
            "checksum mismatch: its {} bytes of encoded data are not the ones written",
            payload.len()
        ));
    }
    Ok(payload)
}

/// The largest content a cache entry may decode to, so that a damaged frame header
/// cannot make a check allocate without bound.
const MAX_DECODED: u64 = 16 << 30;

/// Decodes an encoding (against `old` for a delta) and checks that it makes `new`.
fn check_decodes(what: What, old: Option<&[u8]>, data: &[u8], new: &Hash) -> Result<(), String> {
    let size = match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(Some(n)) if n <= MAX_DECODED => n as usize,
        Ok(Some(n)) => {
            return Err(format!(
                "its frame declares {n} bytes, over the {MAX_DECODED}-byte limit"
            ))
        }
        Ok(None) => return Err("its zstd frame does not declare its content size".into()),
        Err(_) => return Err("not a zstd frame".into()),
    };
    let out = match (what, old) {
        (What::Patch(kind) | What::PatchAlone(kind), Some(o)) => {
            let raw = zstd::bulk::decompress(data, size).map_err(|e| e.to_string())?;
            kind.patched(o, &raw, MAX_DECODED)?
        }
        (What::Pack, _) => {
            // Its parts are checked by whoever makes it; here only that it decodes.
            pack::decompress(data, size as u64)?;
            return Ok(());
        }
        (_, Some(o)) => zstd_delta::apply(o, data, size)?,
        (_, None) => zstd::bulk::decompress(data, size).map_err(|e| e.to_string())?,
    };
    let got = Hash::of(&out);
    if got != *new {
        return Err(format!("decodes to content {got}, not {new}"));
    }
    Ok(())
}

/// An encoding just computed, checked before it is used or kept: a wrong one would fail
/// on every host it is sent to.
fn checked(what: What, d: Vec<u8>, old: Option<&[u8]>, new: &Hash) -> Result<Vec<u8>, String> {
    check_decodes(what, old, &d, new)
        .map_err(|e| format!("the encoding just computed is wrong: {e}"))?;
    Ok(d)
}

/// `raw` zstd-compressed at `level`, checked to decompress to it.
fn checked_compression(raw: &[u8], level: i32) -> Result<Vec<u8>, String> {
    let z = whole::encode(raw, level)?;
    if decompress_frame(&z)? != raw {
        return Err("the compressed patch does not decompress to it".into());
    }
    Ok(z)
}

/// A zstd frame that says its size, decompressed.
pub fn decompress_frame(z: &[u8]) -> Result<Vec<u8>, String> {
    let n = zstd::zstd_safe::get_frame_content_size(z)
        .ok()
        .flatten()
        .filter(|&n| n <= MAX_DECODED)
        .ok_or("a zstd frame without its size")?;
    zstd::bulk::decompress(z, n as usize).map_err(|e| e.to_string())
}

/// Writes `parts` to `path` so that other pushes see no file, the old one or the whole
/// new one. Not flushed: an entry checks itself when read (its checksum), and one a
/// crash tore is computed again, while flushing would make a first install wait for its
/// hundred MB of packs to reach the disk.
fn write_entry(path: &Path, parts: &[&[u8]]) -> imager::Result<()> {
    imager::fsx::replace_unsynced_with(path, |f| {
        parts
            .iter()
            .try_for_each(|p| f.write_all(p))
            .map_err(|e| imager::Error::io("write", path, e))
    })
}

/// The file name of an entry: `OLD-NEW.LLEVEL.zst` for a zstd delta, `NEW.LLEVEL.zst`
/// whole, `OLD-NEW.KIND.LLEVEL.zst` for a raw patch (`bsdiff`, `gzip2`, `zucchini`, `bitcode1`),
/// `pack-KEY.LLEVEL.zst` a pack.
fn entry_name((what, old, new): Key, level: i32) -> String {
    match (what, old) {
        (What::Pack, _) => format!("pack-{new}.L{level}.zst"),
        // Both forms are one kind of entry: at the same level they are the same bytes.
        (What::Patch(k), Some(o)) => format!("{o}-{new}.{}.L{BSDIFF_LEVEL}.zst", k.name()),
        (What::PatchAlone(k), Some(o)) => format!("{o}-{new}.{}.L{level}.zst", k.name()),
        (_, Some(o)) => format!("{o}-{new}.L{level}.zst"),
        (_, None) => format!("{new}.L{level}.zst"),
    }
}

/// Reverses [`entry_name`], or `None` for a file that is no entry.
fn parse_entry_name(name: &str) -> Option<Key> {
    let stem = name.strip_suffix(".zst")?;
    let (hashes, level) = stem.rsplit_once(".L")?;
    level.parse::<i32>().ok()?;
    if let Some(key) = hashes.strip_prefix("pack-") {
        return Some((What::Pack, None, Hash::from_hex(key)?));
    }
    let (what, hashes) = PatchKind::ALL
        .iter()
        .find_map(|k| {
            let h = hashes.strip_suffix(k.name())?.strip_suffix('.')?;
            Some((What::Patch(*k), h))
        })
        .unwrap_or((What::Zstd, hashes));
    match (what, hashes.split_once('-')) {
        (_, Some((o, n))) => Some((what, Some(Hash::from_hex(o)?), Hash::from_hex(n)?)),
        (What::Zstd, None) => Some((what, None, Hash::from_hex(hashes)?)),
        _ => None,
    }
}

/// Encodings computed once per process (and per cache directory), shared by every host.
pub struct Cache {
    dir: Option<PathBuf>,
    level: i32,
    /// By entry and level (a pack may be made at two levels by one push: see
    /// `plan::make_pack`).
    slots: Mutex<HashMap<(Key, i32), Slot>>,
    /// Large files' records ([`chunked`]) by (old, new) content: in scratch files, for
    /// this process only (the cache directory keeps what is read back into memory).
    large: Mutex<HashMap<(Option<Hash>, Hash), LargeSlot>>,
    /// Cache files found damaged (and recomputed), a line each, for the caller to show.
    dropped: Mutex<Vec<String>>,
}

impl Cache {
    /// A cache that keeps its entries on disk in `dir` (only in memory when `None`) and
    /// encodes deltas at zstd `level` (1 to 22) and whole contents at most at
    /// [`WHOLE_LEVEL`]; the level is part of each entry's name, so runs at different
    /// levels do not share entries.
    pub fn new(dir: Option<PathBuf>, level: i32) -> Cache {
        Cache {
            dir,
            level,
            slots: Mutex::new(HashMap::new()),
            large: Mutex::new(HashMap::new()),
            dropped: Mutex::new(Vec::new()),
        }
    }

    /// The zstd level it encodes at: the push's, which rsync deltas use too and published
    /// files' names carry.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// The zstd level of whole contents, and of packs made mostly of them: the push's,
    /// at most [`WHOLE_LEVEL`].
    pub fn whole_level(&self) -> i32 {
        self.level.min(WHOLE_LEVEL)
    }

    /// The damaged cache files dropped and recomputed so far, each named once.
    pub fn dropped(&self) -> Vec<String> {
        self.dropped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The zstd of `new`'s content.
    pub fn whole(&self, store: &Store, new: &Hash) -> Result<Arc<Vec<u8>>, String> {
        self.get((What::Zstd, None, *new), || {
            let data = store.read_object(new).map_err(|e| e.to_string())?;
            checked(
                What::Zstd,
                whole::encode(&data, self.whole_level())?,
                None,
                new,
            )
        })
    }

    /// The patch-from delta of `new` against `old` (both in the store).
    pub fn zstd_delta(
        &self,
        store: &Store,
        old: &Hash,
        new: &Hash,
    ) -> Result<Arc<Vec<u8>>, String> {
        self.get((What::Zstd, Some(*old), *new), || {
            let o = store.read_object(old).map_err(|e| e.to_string())?;
            let n = store.read_object(new).map_err(|e| e.to_string())?;
            checked(
                What::Zstd,
                zstd_delta::encode(&o, &n, self.level)?,
                Some(&o),
                new,
            )
        })
    }

    /// The raw patch of kind `kind` of `new` from `old` (both in the store),
    /// zstd-compressed on its own at [`BSDIFF_LEVEL`] (the raw patch, for a pack, is its
    /// decompression); an error when there is none (a gzip-aware patch between files
    /// that are not both gzip).
    pub fn patch(
        &self,
        kind: PatchKind,
        store: &Store,
        old: &Hash,
        new: &Hash,
    ) -> Result<Arc<Vec<u8>>, String> {
        self.get((What::Patch(kind), Some(*old), *new), || {
            let o = store.read_object(old).map_err(|e| e.to_string())?;
            let n = store.read_object(new).map_err(|e| e.to_string())?;
            // Proved as its raw form is used (a pack); the compressed form adds a frame
            // the decompression below proves.
            let raw = kind.diff(&o, &n)?;
            drop((o, n));
            checked_compression(&raw, BSDIFF_LEVEL)
        })
    }

    /// The raw patch of `new` from `old` compressed at the push's level, for one that
    /// travels on its own (not in a pack).
    pub fn patch_alone(
        &self,
        kind: PatchKind,
        store: &Store,
        old: &Hash,
        new: &Hash,
    ) -> Result<Arc<Vec<u8>>, String> {
        if self.level == BSDIFF_LEVEL {
            return self.patch(kind, store, old, new);
        }
        self.get((What::PatchAlone(kind), Some(*old), *new), || {
            let z = self.patch(kind, store, old, new)?;
            let raw = decompress_frame(&z)?;
            checked_compression(&raw, self.level)
        })
    }

    /// A pack's stream at zstd `level`, by the hash of its list of parts (`key`, which
    /// decides the level: see `plan::pack_level`): from the cache, or made by `make`
    /// (which checks every part).
    pub fn pack(
        &self,
        key: &Hash,
        level: i32,
        make: impl FnOnce(i32) -> Result<Vec<u8>, String>,
    ) -> Result<Arc<Vec<u8>>, String> {
        self.get_at((What::Pack, None, *key), level, || make(level))
    }

    /// [`Cache::pack`], leaving a pack made now (then `true`) to be written into the
    /// cache's directory by [`Cache::keep_pack`]: a push makes the next pack while the
    /// one before it is sent and written.
    pub fn pack_unkept(
        &self,
        key: &Hash,
        level: i32,
        make: impl FnOnce(i32) -> Result<Vec<u8>, String>,
    ) -> Result<(Arc<Vec<u8>>, bool), String> {
        self.find_or_make((What::Pack, None, *key), level, || make(level))
    }

    /// Keeps a pack [`Cache::pack_unkept`] made.
    pub fn keep_pack(&self, key: &Hash, level: i32, d: &[u8]) {
        self.keep((What::Pack, None, *key), level, d);
    }

    /// Whether the pack `key` at `level` is made already (in memory, or a file of the
    /// cache: its checksum is checked when it is read).
    pub fn has_pack(&self, key: &Hash, level: i32) -> bool {
        let k = (What::Pack, None, *key);
        let made = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(k, level))
            .is_some_and(|s| matches!(s.get(), Some(Ok(_))));
        // (A file that cannot be looked at reads as absent: the pack is made again.)
        made || self
            .dir
            .as_ref()
            .is_some_and(|d| imager::fsx::exists(d.join(entry_name(k, level))).unwrap_or(false))
    }

    /// The records of large file `new` (`size` bytes), against the host's `old` version
    /// when the store holds it, in a scratch file of the store's filesystem. Each frame
    /// is proved as it is made; the content read is checked against `new`'s hash, and
    /// the old version's against its own before it is used.
    pub fn chunked(
        &self,
        store: &Store,
        old: Option<(Hash, u64)>,
        (new, size): (&Hash, u64),
    ) -> Result<Payload, String> {
        let slot = {
            let mut m = self.large.lock().unwrap_or_else(|p| p.into_inner());
            m.entry((old.map(|o| o.0), *new)).or_default().clone()
        };
        slot.get_or_init(|| {
            // One large file at a time: each holds a few hundred MB of zstd state at high
            // levels, so encoding them side by side would make the bound grow with the
            // number of cores.
            static ONE: Mutex<()> = Mutex::new(());
            let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
            let open = |h: &Hash| {
                imager::fsx::open(store.object_path(h)).map_err(|e| format!("object {h}: {e}"))
            };
            let o = match old {
                Some((h, len)) => {
                    let mut r = store
                        .object_reader(&h, len)
                        .map_err(|e| format!("object {h}: {e}"))?;
                    std::io::copy(&mut r, &mut std::io::sink())
                        .map_err(|e| format!("object {h}: {e}"))?;
                    Some((open(&h)?, len))
                }
                None => None,
            };
            let n = open(new)?;
            let spill = imager::fsx::scratch_file(&store.root().join("tmp"))
                .map_err(|e| format!("a scratch file for a large file's encoding: {e}"))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, &spill);
            // Without an old version every record is whole content.
            let level = match o {
                Some(_) => self.level,
                None => self.whole_level(),
            };
            let got = chunked::encode(&n, size, o.as_ref().map(|(f, l)| (f, *l)), level, &mut w)?;
            w.flush()
                .map_err(|e| format!("writing a large file's encoding: {e}"))?;
            drop(w);
            if got != *new {
                return Err(format!(
                    "object {new} reads as content {got}: the store is damaged \
                     (`imager fsck`)"
                ));
            }
            let len = spill
                .metadata()
                .map_err(|e| format!("a large file's encoding: {e}"))?
                .len();
            Ok(Payload::Spilled(Arc::new(spill), len))
        })
        .clone()
    }

    /// The patch-from delta between two image manifests (their IDs are the blake3 of
    /// their text, like objects, so they share the cache's keys).
    pub fn manifest_delta(
        &self,
        old: (&Hash, &str),
        new: (&Hash, &str),
    ) -> Result<Arc<Vec<u8>>, String> {
        self.get((What::Zstd, Some(*old.0), *new.0), || {
            let (o, n) = (old.1.as_bytes(), new.1.as_bytes());
            // The key says what the delta is from: a host is sent it by that ID alone
            // (`known_manifest_delta`), so an entry is never made from another text.
            if Hash::of(o) != *old.0 {
                return Err(format!("the base text does not hash to {}", old.0));
            }
            let level = manifest_delta_level(self.level, o.len() + n.len());
            checked(What::Zstd, zstd_delta::encode(o, n, level)?, Some(o), new.0)
        })
    }

    /// The manifest delta from `old` to `new` when it was made before (in memory or in
    /// the cache's directory), else `None`: never computed.
    pub fn known_manifest_delta(&self, old: &Hash, new: &Hash) -> Option<Arc<Vec<u8>>> {
        self.find((What::Zstd, Some(*old), *new), self.level)
    }

    /// An image manifest compressed whole (for hosts that know no earlier image).
    pub fn manifest_whole(&self, id: &Hash, text: &str) -> Result<Arc<Vec<u8>>, String> {
        let level = manifest_level(self.level);
        self.get_at((What::Zstd, None, *id), level, || {
            checked(What::Zstd, whole::encode(text.as_bytes(), level)?, None, id)
        })
    }

    /// The encoding of `new` (against `old` for a delta): from memory, from a cache file
    /// whose checksum holds, or computed (and checked) by `compute` and kept.
    fn get(
        &self,
        key: Key,
        compute: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<Arc<Vec<u8>>, String> {
        let level = match key {
            (What::Zstd, None, _) => self.whole_level(),
            _ => self.level,
        };
        self.get_at(key, level, compute)
    }

    /// [`Cache::get`] for an entry encoded at `level` (its name says it).
    fn get_at(
        &self,
        key: Key,
        level: i32,
        compute: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<Arc<Vec<u8>>, String> {
        let (d, made) = self.find_or_make(key, level, compute)?;
        if made {
            self.keep(key, level, &d);
        }
        Ok(d)
    }

    /// The entry from memory or from its file, else computed: then `true`, and it is
    /// not yet kept in the cache's directory ([`Cache::keep`]).
    fn find_or_make(
        &self,
        key: Key,
        level: i32,
        compute: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<(Arc<Vec<u8>>, bool), String> {
        let mut made = false;
        let slot = {
            let mut m = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            m.entry((key, level)).or_default().clone()
        };
        let got = slot.get_or_init(|| {
            if let Some(data) = self.read_entry(key, level, true) {
                return Ok(Arc::new(data));
            }
            let d = compute()?;
            made = true;
            Ok(Arc::new(d))
        });
        got.clone().map(|d| (d, made))
    }

    /// The entry from memory or from its file (whose checksum holds), never computed:
    /// `None` leaves it to be made by whoever asks for it next.
    fn find(&self, key: Key, level: i32) -> Option<Arc<Vec<u8>>> {
        let slot = {
            let mut m = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            m.entry((key, level)).or_default().clone()
        };
        if let Some(got) = slot.get() {
            return got.as_ref().ok().cloned();
        }
        // A damaged file is said so by whoever makes the entry again.
        let data = Arc::new(self.read_entry(key, level, false)?);
        // (Another thread may have made it meanwhile: either is the same entry.)
        let _ = slot.set(Ok(data.clone()));
        Some(data)
    }

    /// The payload of the entry's file when there is one and its checksum holds; marked
    /// used (within the hour): `syncer cache prune` removes the least recently used
    /// first (a read-only cache is only pruned by age). With `report`, a damaged file is
    /// said so (it is made again and replaced).
    fn read_entry(&self, key: Key, level: i32, report: bool) -> Option<Vec<u8>> {
        let f = self.dir.as_ref()?.join(entry_name(key, level));
        let mut checked = Ok(());
        let read = imager::fsx::read_and_mark_used(&f, MARK_EVERY, |d| {
            checked = entry_payload(d).map(drop);
            checked.is_ok()
        });
        // Absent, or unreadable: computed again, and the write replaces it.
        let mut data = read.ok()?;
        match checked {
            Ok(()) => {
                data.drain(..HEADER);
                return Some(data);
            }
            // An entry of an older syncer (a bare zstd frame, no checksum) is replaced
            // without a warning: every one of them would warn.
            Err(_) if data.starts_with(&ZSTD_MAGIC) || !report => {}
            Err(why) => self
                .dropped
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!(
                    "damaged delta cache entry {}: {why}; recomputed it",
                    f.display()
                )),
        }
        None
    }

    /// Writes an entry computed by [`Cache::find_or_make`] into the cache's directory.
    fn keep(&self, key: Key, level: i32, d: &[u8]) {
        if let Some(dir) = &self.dir {
            // A cache that cannot be written is only slower.
            let _ = write_entry(
                &dir.join(entry_name(key, level)),
                &[MAGIC, &Hash::of(d).0, d],
            );
        }
    }
}

mod verify;
pub use verify::{verify, BadEntry, VerifyReport};

pub mod prune;
#[cfg(test)]
mod tests;
pub mod views;
