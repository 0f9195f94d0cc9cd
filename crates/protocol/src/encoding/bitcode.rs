//! A bitcode-aware delta: an LLVM bitcode file (PostgreSQL's JIT ships one per source
//! file under `lib/bitcode`) diffed as its byte-aligned tokens ([`stream`]) and rebuilt
//! bit for bit. A bitstream packs its fields at any bit offset, so a rebuilt module
//! shares almost no bytes with its old version and bsdiff's patch is nearly the whole
//! file; its tokens keep the unchanged records byte for byte. On the server benchmark
//! pair, 938 changed bitcode files took 3.6 MB as bsdiff or zstd patches, 2.4 MB with
//! this candidate beside them.
//!
//! The raw patch: the new tokens' length (8 bytes, little-endian), then a bsdiff patch
//! ([`super::bsdiff`]) from the old file's tokens to the new file's. The controller makes
//! one only for a file its tokens rebuild exactly, and proves the patch by applying it
//! as the agent will. The agent holds the host's file, both token streams and the result,
//! each refused past its limit before it is made ([`MAX_FILE`], [`max_tokens`]), so a
//! hostile old file or a patch claiming a huge output fails that file alone.

pub mod stream;

use super::bsdiff;

/// The largest old or new file a bitcode patch is made for and applied to (PostgreSQL's
/// largest, its summary index, is under 2 MB): the agent holds the old and new files,
/// both token streams and the patch, some 7 times this at most.
pub const MAX_FILE: u64 = 16 << 20;

/// The most token bytes a file of `size` bytes may take: LLVM's files take some 7% more
/// than their bits; a stream of one-bit fields would take eight times as many.
pub fn max_tokens(size: u64) -> u64 {
    size.saturating_mul(2).saturating_add(1 << 20)
}

/// Whether `b` starts as LLVM bitcode.
pub fn is_bitcode(b: &[u8]) -> bool {
    b.starts_with(&stream::MAGIC)
}

/// The controller's side: the raw patch from bitcode file `old` to bitcode file `new`,
/// proved to make `new`, or why there is none.
pub fn diff(old: &[u8], new: &[u8]) -> std::result::Result<Vec<u8>, String> {
    if old.len().max(new.len()) as u64 > MAX_FILE {
        return Err(format!("over the {MAX_FILE}-byte limit of bitcode patches"));
    }
    let old_t = stream::tokens(old, max_tokens(old.len() as u64))?;
    let new_t = stream::tokens(new, max_tokens(new.len() as u64))?;
    if stream::bits(&new_t, new.len() as u64)? != new {
        return Err("its tokens do not rebuild the file exactly".into());
    }
    let mut raw = (new_t.len() as u64).to_le_bytes().to_vec();
    raw.extend_from_slice(&bsdiff::diff(&old_t, &new_t)?);
    if patched(old, &raw, new.len() as u64)? != new {
        return Err("the bitcode patch just made does not make its file".into());
    }
    Ok(raw)
}

/// The content raw patch `raw` makes from `old`, of at most `limit` bytes.
pub fn patched(old: &[u8], raw: &[u8], limit: u64) -> std::result::Result<Vec<u8>, String> {
    let limit = limit.min(MAX_FILE);
    if old.len() as u64 > MAX_FILE {
        return Err(format!("the old file is over the {MAX_FILE}-byte limit"));
    }
    let (len, patch) = raw
        .split_first_chunk::<8>()
        .ok_or("a bitcode patch shorter than its header")?;
    let len = u64::from_le_bytes(*len);
    if len > max_tokens(limit) {
        return Err(format!(
            "it declares {len} bytes of tokens, over the {}-byte limit",
            max_tokens(limit)
        ));
    }
    let old_t = stream::tokens(old, max_tokens(old.len() as u64))?;
    let new_t = bsdiff::patched_up_to(&old_t, patch, len)?;
    if new_t.len() as u64 != len {
        return Err(format!(
            "it makes {} bytes of tokens, not {len}",
            new_t.len()
        ));
    }
    stream::bits(&new_t, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two modules `llvm-as` wrote (the fuzz target's seeds): the second has a constant
    /// changed in some functions and a function added.
    const OLD: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/data/bitcode-old.bc"
    ));
    const NEW: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/data/bitcode-new.bc"
    ));

    #[test]
    fn a_patch_round_trips_and_damage_a_wrong_size_or_a_huge_claim_is_refused() {
        let raw = diff(OLD, NEW).expect("diff");
        let size = NEW.len() as u64;
        assert_eq!(patched(OLD, &raw, size).expect("apply"), NEW);
        assert!(patched(OLD, &raw, size - 1).is_err());
        for i in (0..raw.len()).step_by(7) {
            let mut bad = raw.clone();
            bad[i] ^= 0x21;
            assert!(patched(OLD, &bad, size).map_or(true, |o| o != NEW) || bad == raw);
        }
        let mut huge = raw.clone();
        huge[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = patched(OLD, &huge, size).expect_err("a terabyte of tokens");
        assert!(e.contains("over the"), "{e}");
        assert!(patched(b"not bitcode", &raw, size).is_err());
        assert!(diff(b"not bitcode", NEW).is_err());
        let mut out = Vec::new();
        let apply = |size| patched(OLD, &raw, size);
        let e = super::super::apply_in_memory(
            "bitcode delta",
            MAX_FILE,
            b"/x.bc",
            1 << 40,
            &mut out,
            apply,
        )
        .expect_err("too large");
        assert!(e.to_string().contains("/x.bc"), "{e}");
    }
}
