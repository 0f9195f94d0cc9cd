//! Content the host holds already at another path (the agent's `have` list): nothing
//! travels but the path.

use super::write_err;
use crate::error::Result;
use imager_core::safe_dir::Beneath;
use std::io::Write;

/// The agent's side: host file `from` copied into the staged copy of `path`, opened
/// without following a symlink (a path the scan saw as a file).
pub fn decode(host: &Beneath, path: &[u8], from: &[u8], out: &mut impl Write) -> Result<()> {
    let mut f = crate::hostfs::open_file(host, from)?;
    std::io::copy(&mut f, out).map_err(|e| write_err(host, path, e))?;
    Ok(())
}
