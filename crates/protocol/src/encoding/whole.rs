//! Whole content, zstd-compressed: for new files, small ones, and whatever a delta would
//! not make smaller.

use super::write_err;
use crate::error::Result;
use imager_core::safe_dir::Beneath;
use std::io::Write;

/// The controller's side: `data` compressed at `level`.
pub fn encode(data: &[u8], level: i32) -> std::result::Result<Vec<u8>, String> {
    zstd::bulk::compress(data, level).map_err(|e| e.to_string())
}

/// The agent's side: streamed into the staged copy of `path` (memory stays small
/// whatever the file's size).
pub fn decode(host: &Beneath, path: &[u8], payload: &[u8], out: &mut impl Write) -> Result<()> {
    let mut d = zstd::stream::read::Decoder::new(payload).map_err(|e| write_err(host, path, e))?;
    std::io::copy(&mut d, out).map_err(|e| write_err(host, path, e))?;
    Ok(())
}
