//! A zstd delta: the new content compressed with the old as a raw prefix
//! (`zstd --patch-from`), for a host file whose old version the controller holds.
//! Also how an image manifest travels to a host that has the one before.

use zstd::zstd_safe::{CCtx, CParameter, DCtx, DParameter};

/// Window of the patch-from encoder: the old content plus the new must fit.
fn window_log(total: usize) -> u32 {
    let mut w = 10u32;
    while w < 31 && (1usize << w) < total {
        w += 1;
    }
    w
}

/// The controller's side, `zstd --patch-from=old`: `new` compressed with `old` as a
/// reference prefix.
pub fn encode(old: &[u8], new: &[u8], level: i32) -> std::result::Result<Vec<u8>, String> {
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

/// Reverses [`encode`] (the agent's side, against its current file); the result may not
/// exceed `size` bytes.
pub fn apply(old: &[u8], delta: &[u8], size: usize) -> std::result::Result<Vec<u8>, String> {
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

/// The agent's side, streamed: the delta in `payload` applied to `old` and written to
/// `out` as it decodes, so that the result is never held in memory beside its base.
pub fn decode(old: &[u8], payload: &[u8], out: &mut impl std::io::Write) -> std::io::Result<()> {
    let mut d = zstd::stream::read::Decoder::with_ref_prefix(payload, old)?;
    d.window_log_max(31)?;
    std::io::copy(&mut d, out)?;
    Ok(())
}
