//! An rsync delta (fast_rsync), zstd-compressed: for a changed host file whose old
//! version the controller lacks. The agent sends a signature of its file first
//! (`SignatureRequest` → `Signatures`); the delta is computed against it.

use super::whole;

/// The block size for a file of `len` bytes: about √len, between 1 KiB and 64 KiB, so the
/// signature stays near 1% of the file.
fn block_size(len: usize) -> u32 {
    ((len as f64).sqrt() as u32)
        .clamp(1024, 65536)
        .next_power_of_two()
}

/// The agent's first step: the signature of its current file.
pub fn signature(base: &[u8]) -> Vec<u8> {
    fast_rsync::Signature::calculate(
        base,
        fast_rsync::SignatureOptions {
            block_size: block_size(base.len()),
            crypto_hash_size: 8,
        },
    )
    .into_serialized()
}

/// The controller's side: a delta from the agent's signature to `new`, zstd-compressed.
pub fn encode(sig: &[u8], new: &[u8], level: i32) -> std::result::Result<Vec<u8>, String> {
    let sig = fast_rsync::Signature::deserialize(sig.to_vec())
        .map_err(|e| format!("bad signature: {e:?}"))?;
    let mut out = Vec::new();
    fast_rsync::diff(&sig.index(), new, &mut out).map_err(|e| format!("{e:?}"))?;
    whole::encode(&out, level)
}

/// Reverses [`encode`] (the agent's side, against its current file `base`); the result
/// may not exceed `size` bytes.
pub fn apply(base: &[u8], delta: &[u8], size: usize) -> std::result::Result<Vec<u8>, String> {
    // The rsync delta itself is at most a little larger than the file it makes.
    let raw = zstd::bulk::decompress(delta, size + size / 8 + 4096).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(size);
    fast_rsync::apply_limited(base, &raw, &mut out, size).map_err(|e| format!("{e:?}"))?;
    Ok(out)
}
