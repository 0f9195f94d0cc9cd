//! Moving images in and out of the store: a deterministic tar.zst, a directory with
//! exact metadata, an ext4 filesystem image ([`disk`]) and an OCI image layout ([`oci`])
//! on the way out; tar, tar.gz and tar.zst archives, checked entry by
//! entry, on the way in.

pub mod dir;
pub mod disk;
pub mod oci;
pub mod tar_export;
pub mod tar_import;

use sha2::{Digest, Sha256};
use std::io::Write;

/// The fixed zstd parameters of an export: changing any of them changes every archive's
/// bytes, so they are constants, not options.
pub const ZSTD_LEVEL: i32 = 9;
/// zstd's multi-threaded output depends on its job layout, not on how many threads run
/// it, but it differs from single-threaded output: this is fixed too.
pub const ZSTD_WORKERS: u32 = 2;

/// Passes bytes through, hashing and counting them.
pub(crate) struct Hashing<W> {
    pub(crate) inner: W,
    sha: Sha256,
    pub(crate) len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W> Hashing<W> {
    pub(crate) fn new(inner: W) -> Self {
        Hashing {
            inner,
            sha: Sha256::new(),
            len: 0,
        }
    }
    /// `sha256:` and the hex digest of what passed so far.
    pub(crate) fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.sha.clone().finalize()))
    }
}
