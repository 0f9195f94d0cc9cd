//! An encoded file's bytes on the controller, shared by every host of a push: in memory
//! for the encodings of small files, in an unnamed scratch file for a large file's
//! records ([`crate::encoding::chunked`]), so that the controller's memory does not grow
//! with a file's size. Senders read either in pieces.

use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The bytes one file's encoding takes on the wire.
#[derive(Clone, Debug)]
pub enum Payload {
    /// Held in memory (small files' encodings, packs), shared without copying.
    Memory(Arc<Vec<u8>>),
    /// A scratch file (freed when the last host is done with it) and its length.
    Spilled(Arc<File>, u64),
}

impl Default for Payload {
    fn default() -> Self {
        Payload::Memory(Arc::default())
    }
}

impl From<Arc<Vec<u8>>> for Payload {
    fn from(v: Arc<Vec<u8>>) -> Self {
        Payload::Memory(v)
    }
}

impl Payload {
    /// Bytes it takes on the wire, in memory or spilled alike.
    pub fn len(&self) -> u64 {
        match self {
            Payload::Memory(v) => v.len() as u64,
            Payload::Spilled(_, n) => *n,
        }
    }

    /// Whether it has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, when they are in memory: the encodings that go into packs or are
    /// published to mirrors are (they are of files of at most
    /// [`crate::encoding::chunked::LARGE`] bytes); a spilled one has none here.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Payload::Memory(v) => v,
            Payload::Spilled(..) => &[],
        }
    }

    /// Hands the bytes to `each` in order, in pieces of at most `piece` bytes.
    pub fn for_each_piece(
        &self,
        piece: usize,
        mut each: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        match self {
            Payload::Memory(v) => v.chunks(piece).try_for_each(each),
            Payload::Spilled(f, len) => {
                let mut buf = vec![0u8; piece];
                let mut off = 0u64;
                while off < *len {
                    let n = (piece as u64).min(len - off) as usize;
                    f.read_exact_at(&mut buf[..n], off).map_err(|e| {
                        Error::Encode(format!("reading back a large file's encoding: {e}"))
                    })?;
                    each(&buf[..n])?;
                    off += n as u64;
                }
                Ok(())
            }
        }
    }
}
