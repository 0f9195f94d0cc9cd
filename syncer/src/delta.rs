//! Content encodings for the wire and the controller's cache of them.
//!
//! - whole: zstd;
//! - zstd delta: zstd with the old content as a raw prefix (`zstd --patch-from`), for an
//!   old version the controller holds;
//! - rsync delta: fast_rsync against a signature the agent sent, then zstd.
//!
//! Encodings are cached by (old hash, new hash, level) in memory and, with a cache
//! directory, on disk, so that every host at the same old version costs one computation.

use imager::store::Store;
use imager::Hash;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use zstd::zstd_safe::{CCtx, CParameter, DCtx, DParameter};

/// Window of the patch-from encoder: the old content plus the new must fit.
fn window_log(total: usize) -> u32 {
    let mut w = 10u32;
    while w < 31 && (1usize << w) < total {
        w += 1;
    }
    w
}

pub fn zstd_whole(data: &[u8], level: i32) -> Result<Vec<u8>, String> {
    zstd::bulk::compress(data, level).map_err(|e| e.to_string())
}

/// `zstd --patch-from=old`: `new` compressed with `old` as a reference prefix.
pub fn zstd_delta(old: &[u8], new: &[u8], level: i32) -> Result<Vec<u8>, String> {
    let mut c = CCtx::create();
    let e = |code: usize| zstd::zstd_safe::get_error_name(code).to_string();
    c.set_parameter(CParameter::CompressionLevel(level))
        .map_err(e)?;
    c.set_parameter(CParameter::WindowLog(window_log(old.len() + new.len())))
        .map_err(e)?;
    c.set_parameter(CParameter::EnableLongDistanceMatching(
        old.len() > (8 << 20),
    ))
    .map_err(e)?;
    c.set_parameter(CParameter::ContentSizeFlag(true))
        .map_err(e)?;
    c.ref_prefix(old).map_err(e)?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(new.len()));
    c.compress2(&mut out, new).map_err(e)?;
    Ok(out)
}

/// Reverses [`zstd_delta`]; the result may not exceed `size` bytes.
pub fn zstd_apply(old: &[u8], delta: &[u8], size: usize) -> Result<Vec<u8>, String> {
    let mut d = DCtx::create();
    let e = |code: usize| zstd::zstd_safe::get_error_name(code).to_string();
    d.set_parameter(DParameter::WindowLogMax(31)).map_err(e)?;
    d.ref_prefix(old).map_err(e)?;
    // The frame says its size (the encoder writes it): allocate that, not the limit.
    let want = match zstd::zstd_safe::get_frame_content_size(delta) {
        Ok(Some(n)) if n > size as u64 => {
            return Err(format!(
                "the delta makes {n} bytes, more than the {size} expected"
            ))
        }
        Ok(Some(n)) => n as usize,
        _ => size,
    };
    let mut out = Vec::with_capacity(want);
    d.decompress(&mut out, delta).map_err(e)?;
    Ok(out)
}

/// The level for a manifest of `len` bytes: the push's level up to 32 MiB (a few hundred
/// thousand entries), then at most 9: level 19 over a manifest of millions of entries
/// takes minutes of controller CPU for a few percent of its size.
fn manifest_level(level: i32, len: usize) -> i32 {
    if len > 32 << 20 {
        level.min(9)
    } else {
        level
    }
}

/// The block size for a file of `len` bytes: about √len, between 1 KiB and 64 KiB, so the
/// signature stays near 1% of the file.
fn block_size(len: usize) -> u32 {
    ((len as f64).sqrt() as u32)
        .clamp(1024, 65536)
        .next_power_of_two()
}

pub fn rsync_signature(base: &[u8]) -> Vec<u8> {
    fast_rsync::Signature::calculate(
        base,
        fast_rsync::SignatureOptions {
            block_size: block_size(base.len()),
            crypto_hash_size: 8,
        },
    )
    .into_serialized()
}

/// An rsync delta from the agent's signature to `new`, zstd-compressed.
pub fn rsync_delta(sig: &[u8], new: &[u8], level: i32) -> Result<Vec<u8>, String> {
    let sig = fast_rsync::Signature::deserialize(sig.to_vec())
        .map_err(|e| format!("bad signature: {e:?}"))?;
    let mut out = Vec::new();
    fast_rsync::diff(&sig.index(), new, &mut out).map_err(|e| format!("{e:?}"))?;
    zstd_whole(&out, level)
}

pub fn rsync_apply(base: &[u8], delta: &[u8], size: usize) -> Result<Vec<u8>, String> {
    // The rsync delta itself is at most a little larger than the file it makes.
    let raw = zstd::bulk::decompress(delta, size + size / 8 + 4096).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(size);
    fast_rsync::apply_limited(base, &raw, &mut out, size).map_err(|e| format!("{e:?}"))?;
    Ok(out)
}

/// What was sent for one file: the kind and the encoded bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    Whole,
    ZstdDelta,
}

type Slot = Arc<OnceLock<Result<Arc<Vec<u8>>, String>>>;
/// (encoding, old content, new content).
type Key = (Encoding, Option<Hash>, Hash);

/// Encodings computed once per process (and per cache directory), shared by every host.
pub struct Cache {
    dir: Option<PathBuf>,
    level: i32,
    slots: Mutex<HashMap<Key, Slot>>,
}

impl Cache {
    pub fn new(dir: Option<PathBuf>, level: i32) -> Cache {
        Cache {
            dir,
            level,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn level(&self) -> i32 {
        self.level
    }

    /// The zstd of `new`'s content.
    pub fn whole(&self, store: &Store, new: &Hash) -> Result<Arc<Vec<u8>>, String> {
        self.get(Encoding::Whole, None, new, || {
            let data = store.read_object(new).map_err(|e| e.to_string())?;
            zstd_whole(&data, self.level)
        })
    }

    /// The patch-from delta of `new` against `old` (both in the store).
    pub fn zstd_delta(
        &self,
        store: &Store,
        old: &Hash,
        new: &Hash,
    ) -> Result<Arc<Vec<u8>>, String> {
        self.get(Encoding::ZstdDelta, Some(*old), new, || {
            let o = store.read_object(old).map_err(|e| e.to_string())?;
            let n = store.read_object(new).map_err(|e| e.to_string())?;
            zstd_delta(&o, &n, self.level)
        })
    }

    /// The patch-from delta between two image manifests (their IDs are the blake3 of
    /// their text, like objects, so they share the cache's keys).
    pub fn manifest_delta(
        &self,
        old: (&Hash, &str),
        new: (&Hash, &str),
    ) -> Result<Arc<Vec<u8>>, String> {
        self.get(Encoding::ZstdDelta, Some(*old.0), new.0, || {
            let level = manifest_level(self.level, old.1.len() + new.1.len());
            zstd_delta(old.1.as_bytes(), new.1.as_bytes(), level)
        })
    }

    /// An image manifest compressed whole (for hosts that know no earlier image).
    pub fn manifest_whole(&self, id: &Hash, text: &str) -> Result<Arc<Vec<u8>>, String> {
        self.get(Encoding::Whole, None, id, || {
            zstd_whole(text.as_bytes(), manifest_level(self.level, text.len()))
        })
    }

    fn file(&self, enc: Encoding, old: Option<Hash>, new: &Hash) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let name = match (enc, old) {
            (Encoding::ZstdDelta, Some(o)) => format!("{o}-{new}.L{}.zst", self.level),
            _ => format!("{new}.L{}.zst", self.level),
        };
        Some(dir.join(name))
    }

    fn get(
        &self,
        enc: Encoding,
        old: Option<Hash>,
        new: &Hash,
        compute: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<Arc<Vec<u8>>, String> {
        let slot = {
            let mut m = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            m.entry((enc, old, *new)).or_default().clone()
        };
        slot.get_or_init(|| {
            let file = self.file(enc, old, new);
            if let Some(f) = &file {
                if let Ok(d) = std::fs::read(f) {
                    return Ok(Arc::new(d));
                }
            }
            let d = compute()?;
            if let Some(f) = &file {
                // A cache that cannot be written is only slower.
                let tmp = f.with_extension(format!("tmp{}", std::process::id()));
                if std::fs::write(&tmp, &d).is_ok() {
                    let _ = std::fs::rename(&tmp, f);
                }
            }
            Ok(Arc::new(d))
        })
        .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_round_trip() {
        let old: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i * 7).to_le_bytes())
            .collect();
        let mut new = old.clone();
        new[1000..1100].fill(9);
        new.extend_from_slice(b"tail");
        let d = zstd_delta(&old, &new, 3).expect("delta");
        assert!(d.len() < 2000, "{}", d.len());
        assert_eq!(zstd_apply(&old, &d, new.len()).expect("apply"), new);
        assert!(zstd_apply(&old, &d, 10).is_err());
        let sig = rsync_signature(&old);
        let d = rsync_delta(&sig, &new, 3).expect("rsync delta");
        assert!(d.len() < 20_000, "{}", d.len());
        assert_eq!(rsync_apply(&old, &d, new.len()).expect("apply"), new);
    }
}
