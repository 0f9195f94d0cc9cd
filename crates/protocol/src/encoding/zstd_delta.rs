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

/// Whether the encoder also looks for long matches (long distance matching) against an
/// old content of `old_len` bytes at `level`. Below level 16 zstd's match finders index
/// only the last part of a reference (at level 1 some 64 to 128 kB, from level 9 a few
/// MB): the rest of the old content is never found, and a 2.4 MB manifest's delta at
/// level 1 was 600 kB where long matching makes it 50 kB (`zstd --patch-from` turns it
/// on when the reference outgrows the level's search). A reference of 64 kB or less is
/// within every level's reach, and long matching made such deltas a few percent larger
/// at middle levels. From level 16 the searches reach far enough up to 8 MB.
fn long_distance(old_len: usize, level: i32) -> bool {
    old_len > (8 << 20) || (level < 16 && old_len > (64 << 10))
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
    c.set_parameter(CParameter::EnableLongDistanceMatching(long_distance(
        old.len(),
        level,
    )))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2 MB old content changed in a few places: at a fast level too, the delta is the
    /// change (before long matching at low levels, level 1 found almost nothing of the
    /// old content: a delta nearly the size of the file).
    #[test]
    fn a_delta_at_a_fast_level_finds_the_whole_old_content() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let old: Vec<u8> = (0..2 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut new = old.clone();
        for at in [1000, 700_000, 1_500_000] {
            new[at..at + 100].fill(7);
        }
        new.extend_from_slice(b"tail");
        for level in [1, 3, 9, 19] {
            let d = encode(&old, &new, level).expect("delta");
            assert!(d.len() < 20_000, "level {level}: {} bytes", d.len());
            assert_eq!(apply(&old, &d, new.len()).expect("apply"), new);
        }
    }
}
