//! How a file's content travels to a host. [`Encoding`] is the one list of the ways:
//! each has its wire code (the table below), its label in reports, and its encoder
//! (the controller's side) and decoder (the agent's) together in a file of its own:
//!
//! - [`local_copy`], the content is on the host already, at another path;
//! - [`whole`], zstd;
//! - [`zstd_delta`], zstd with the host's current file as a raw prefix
//!   (`zstd --patch-from`), for an old version the controller holds;
//! - [`rsync_delta`], fast_rsync against a signature the agent sent, then zstd;
//! - [`bsdiff`], a bsdiff patch from the host's current file, for an old version the
//!   controller holds (smaller than zstd's on executables);
//! - [`gzip`], a gzip file's text delta and what rebuilds its exact compressed bytes,
//!   for an old version the controller holds (a changelog's new entry, not its whole
//!   recompressed file);
//! - [`zucchini`], Chromium's executable differ, for an ELF file whose old version the
//!   controller holds (a third smaller than bsdiff's patches on libraries);
//! - [`bitcode`], an LLVM bitcode file diffed as its byte-aligned tokens and rebuilt bit
//!   for bit, for one whose old version the controller holds;
//! - [`chunked`], every file over [`chunked::LARGE`] bytes: spans the host has, or
//!   compressed alone or against the host's bytes around them, so that memory stays
//!   bounded on both sides whatever the file's size.
//!
//! Whole contents and the raw patches (bsdiff, gzip-aware, Zucchini, bitcode: the
//! [`PatchKind`]s)
//! also travel in [`pack`]s: many files' raw bytes as one zstd stream.
//!
//! A new encoding is one new file, a variant here (its code, its label, its decoder in
//! [`Encoding::decode`]) and the controller's choice of it (`choose`, in
//! `push/content.rs`). The controller's cache of encodings is the syncer's `delta` module.

pub mod bitcode;
pub mod bsdiff;
pub mod chunked;
pub mod gzip;
pub mod local_copy;
pub mod pack;
pub mod rsync_delta;
pub mod whole;
pub mod zstd_delta;
pub mod zucchini;

use crate::error::{Error, Result};
use crate::wire::wire_enum;
use imager_core::safe_dir::Beneath;
use imager_core::tree::escape::escape;
use std::io::Write;

/// How the agent gets a staged file's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// The content is on the host already, at this path.
    LocalCopy {
        /// The host path that holds it, relative to the root.
        from: Vec<u8>,
    },
    /// zstd-compressed whole content.
    Whole,
    /// zstd with the host's current file at the path as reference (`--patch-from`).
    ZstdDelta,
    /// An rsync delta (fast_rsync) against the host's current file, zstd-compressed.
    RsyncDelta,
    /// A bsdiff patch from the host's current file: zstd-compressed on its own, raw in a
    /// pack.
    Bsdiff,
    /// A large file's records ([`chunked`]), streamed on both sides.
    Chunked,
    /// A gzip-aware patch from the host's current file ([`gzip`]): zstd-compressed on its
    /// own, raw in a pack.
    GzipDelta,
    /// A Zucchini patch from the host's current file ([`zucchini`]): zstd-compressed on
    /// its own, raw in a pack.
    Zucchini,
    /// The controller's store object of the file's hash, which the agent reads itself:
    /// only an agent on the controller's machine that was given the store's objects
    /// directory (`serve --objects DIR`, a `local:` host) takes it, as a pack entry
    /// whose part is empty (the pack's workers copy in parallel). Nothing travels.
    StoreCopy,
    /// A bitcode-aware patch from the host's current file ([`bitcode`]): zstd-compressed
    /// on its own, raw in a pack.
    Bitcode,
}

wire_enum!(Encoding, "content source" {
    0 => Encoding::LocalCopy { from },
    1 => Encoding::Whole,
    2 => Encoding::ZstdDelta,
    3 => Encoding::RsyncDelta,
    4 => Encoding::Bsdiff,
    5 => Encoding::Chunked,
    6 => Encoding::GzipDelta,
    7 => Encoding::Zucchini,
    8 => Encoding::StoreCopy,
    9 => Encoding::Bitcode,
});

impl Encoding {
    /// Its name in reports (`via` of a planned path, the rows of a push's summary).
    pub fn label(&self) -> &'static str {
        match self {
            Encoding::LocalCopy { .. } => "local copy",
            Encoding::ZstdDelta => "zstd delta",
            Encoding::RsyncDelta => "rsync delta",
            Encoding::Bsdiff => "bsdiff",
            Encoding::Whole => "whole",
            Encoding::Chunked => "chunked",
            Encoding::GzipDelta => "gzip delta",
            Encoding::Zucchini => "zucchini",
            Encoding::StoreCopy => "store copy",
            Encoding::Bitcode => "bitcode delta",
        }
    }

    /// The kind of raw patch it is, for one that is ([`PatchKind`]).
    pub fn patch_kind(&self) -> Option<PatchKind> {
        match self {
            Encoding::Bsdiff => Some(PatchKind::Bsdiff),
            Encoding::GzipDelta => Some(PatchKind::Gzip),
            Encoding::Zucchini => Some(PatchKind::Zucchini),
            Encoding::Bitcode => Some(PatchKind::Bitcode),
            _ => None,
        }
    }

    /// Writes the content of host file `path` (`size` bytes in the image) that
    /// `payload` makes into `out`. `host` reads host files (local copies, delta bases)
    /// without following symlinks.
    pub fn decode(
        &self,
        host: &Beneath,
        path: &[u8],
        size: u64,
        payload: &[u8],
        out: &mut impl Write,
    ) -> Result<()> {
        match self {
            Encoding::Whole => whole::decode(host, path, payload, out),
            Encoding::LocalCopy { from } => local_copy::decode(host, path, from, out),
            Encoding::ZstdDelta => {
                let base = delta_base(host, path, size)?;
                zstd_delta::decode(&base, payload, out).map_err(|e| {
                    Error::Agent(format!("applying the delta for {}: {e}", escape(path)))
                })
            }
            Encoding::RsyncDelta => apply_delta(rsync_delta::apply, host, path, size, payload, out),
            Encoding::Chunked => chunked::decode(host, path, size, &mut &payload[..], out),
            // Store copies travel in packs, which the agent stages itself.
            Encoding::StoreCopy => Err(Error::Protocol(format!(
                "{} was sent as a store copy on its own; store copies come in packs",
                escape(path)
            ))),
            // A raw patch sent on its own is zstd-compressed; in a pack it is raw.
            Encoding::Bsdiff | Encoding::GzipDelta | Encoding::Zucchini | Encoding::Bitcode => {
                let mut patch = zstd::stream::read::Decoder::new(payload)
                    .map_err(|e| write_err(host, path, e))?;
                self.decode_part(host, path, size, &mut patch, out)
            }
        }
    }

    /// Writes the content of host file `path` that its part of a pack makes (the content
    /// itself, a raw bsdiff patch or a zstd delta) into `out`, reading the part to its
    /// end.
    pub fn decode_part(
        &self,
        host: &Beneath,
        path: &[u8],
        size: u64,
        part: &mut dyn std::io::Read,
        out: &mut impl Write,
    ) -> Result<()> {
        match self {
            Encoding::Whole => std::io::copy(part, out)
                .map(drop)
                .map_err(|e| write_err(host, path, e)),
            Encoding::Bsdiff => bsdiff::apply_to(host, path, size, part, out),
            Encoding::GzipDelta => {
                let raw = read_part(path, part, gzip::MAX_PATCH)?;
                let old = read_host_bounded(host, path, gzip::MAX_FILE)?;
                gzip::apply_held(path, &old, &raw, size, out)
            }
            Encoding::Zucchini => {
                let raw = read_part(path, part, zucchini::MAX_FILE)?;
                let old = read_host_bounded(host, path, zucchini::MAX_FILE)?;
                apply_in_memory(
                    "Zucchini delta",
                    zucchini::MAX_FILE,
                    path,
                    size,
                    out,
                    |size| zucchini::patched(&old, &raw, size),
                )
            }
            Encoding::Bitcode => {
                let raw = read_part(path, part, bitcode::max_tokens(bitcode::MAX_FILE))?;
                let old = read_host_bounded(host, path, bitcode::MAX_FILE)?;
                apply_in_memory(
                    "bitcode delta",
                    bitcode::MAX_FILE,
                    path,
                    size,
                    out,
                    |size| bitcode::patched(&old, &raw, size),
                )
            }
            Encoding::ZstdDelta => {
                let mut delta = Vec::new();
                part.read_to_end(&mut delta)
                    .map_err(|e| write_err(host, path, e))?;
                self.decode(host, path, size, &delta, out)
            }
            other => Err(Error::Protocol(format!(
                "{} is packed as a {}, which a pack cannot hold",
                escape(path),
                other.label()
            ))),
        }
    }
}

/// The raw patches from a host's current file to the new content, which the controller
/// computes from the old version it holds: each travels zstd-compressed on its own or raw
/// in a pack, and its cache entry is checked by applying it ([`PatchKind::patched`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatchKind {
    /// [`bsdiff`]: any file.
    Bsdiff,
    /// [`gzip`]: gzip files, their texts diffed.
    Gzip,
    /// [`zucchini`]: ELF executables and libraries.
    Zucchini,
    /// [`bitcode`]: LLVM bitcode, its tokens diffed.
    Bitcode,
}

impl PatchKind {
    /// Every kind.
    pub const ALL: [PatchKind; 4] = [
        PatchKind::Bsdiff,
        PatchKind::Gzip,
        PatchKind::Zucchini,
        PatchKind::Bitcode,
    ];

    /// The encoding it travels as.
    pub fn encoding(self) -> Encoding {
        match self {
            PatchKind::Bsdiff => Encoding::Bsdiff,
            PatchKind::Gzip => Encoding::GzipDelta,
            PatchKind::Zucchini => Encoding::Zucchini,
            PatchKind::Bitcode => Encoding::Bitcode,
        }
    }

    /// Its name in cache entries and published files, with its format's version where
    /// the format changed (a cached or published patch of another version must not be
    /// taken for one of this: the agent would refuse it).
    pub fn name(self) -> &'static str {
        match self {
            PatchKind::Bsdiff => "bsdiff",
            PatchKind::Gzip => "gzip2",
            PatchKind::Zucchini => "zucchini",
            PatchKind::Bitcode => "bitcode1",
        }
    }

    /// The raw patch from `old` to `new`, proved to make `new`, or why there is none.
    pub fn diff(self, old: &[u8], new: &[u8]) -> std::result::Result<Vec<u8>, String> {
        match self {
            PatchKind::Bsdiff => {
                let raw = bsdiff::diff(old, new)?;
                if bsdiff::patched(old, &raw, new.len() as u64)? != new {
                    return Err("the bsdiff patch just computed does not make its content".into());
                }
                Ok(raw)
            }
            PatchKind::Gzip => gzip::diff(old, new),
            PatchKind::Zucchini => zucchini::diff(old, new),
            PatchKind::Bitcode => bitcode::diff(old, new),
        }
    }

    /// The content raw patch `raw` makes from `old`, at most `limit` bytes (a check of a
    /// cached patch).
    pub fn patched(
        self,
        old: &[u8],
        raw: &[u8],
        limit: u64,
    ) -> std::result::Result<Vec<u8>, String> {
        match self {
            PatchKind::Bsdiff => bsdiff::patched_up_to(old, raw, limit),
            PatchKind::Gzip => {
                let mut out = Vec::new();
                gzip::apply_up_to(old, raw, limit.min(gzip::MAX_FILE), &mut out)?;
                Ok(out)
            }
            PatchKind::Zucchini => zucchini::patched(old, raw, limit),
            PatchKind::Bitcode => bitcode::patched(old, raw, limit),
        }
    }
}

/// Reads `r` to its end, refused past `max` bytes.
fn read_bounded(r: &mut dyn std::io::Read, max: u64) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(r, max + 1), &mut v)?;
    if v.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("more than the {max} bytes allowed"),
        ));
    }
    Ok(v)
}

/// A patch applied in memory (gzip-aware, Zucchini), read from `part` to its end,
/// refused past `max` bytes.
fn read_part(path: &[u8], part: &mut dyn std::io::Read, max: u64) -> Result<Vec<u8>> {
    read_bounded(part, max)
        .map_err(|e| Error::Agent(format!("reading the delta for {}: {e}", escape(path))))
}

/// The host's file at `path`, refused if it is larger than `max` bytes.
fn read_host_bounded(host: &Beneath, path: &[u8], max: u64) -> Result<Vec<u8>> {
    let mut f = crate::hostfs::open_file(host, path)?;
    read_bounded(&mut f, max)
        .map_err(|e| Error::Agent(format!("reading {} as a delta's base: {e}", escape(path))))
}

/// The agent's side of a raw patch applied in memory (Zucchini, bitcode-aware): what
/// `patched` makes, at most `size` bytes, written to `out` if it is exactly `size` bytes;
/// over `max` it is refused before anything is made. Errors say `what` and name `path`.
pub(crate) fn apply_in_memory(
    what: &str,
    max: u64,
    path: &[u8],
    size: u64,
    out: &mut impl Write,
    patched: impl FnOnce(u64) -> std::result::Result<Vec<u8>, String>,
) -> Result<()> {
    let fail = |e: String| Error::Agent(format!("applying the {what} for {}: {e}", escape(path)));
    if size > max {
        return Err(fail(format!(
            "{size} bytes is over the {max}-byte limit of such patches"
        )));
    }
    let new = patched(size).map_err(fail)?;
    if new.len() as u64 != size {
        return Err(fail(format!("it makes {} bytes, not {size}", new.len())));
    }
    out.write_all(&new).map_err(|e| fail(e.to_string()))
}

/// The host's current content at `path` as a delta's base (held in memory), refused for
/// a file larger than the agent holds in memory (larger ones travel [`chunked`]).
fn delta_base(host: &Beneath, path: &[u8], size: u64) -> Result<Vec<u8>> {
    if size > chunked::LARGE {
        return Err(Error::Protocol(format!(
            "delta for {} ({size} bytes) is larger than the agent applies",
            escape(path)
        )));
    }
    Ok(crate::hostfs::read_file(host, path)?)
}

/// The error for content that cannot be written to the staged copy of `path`.
fn write_err(host: &Beneath, path: &[u8], err: std::io::Error) -> Error {
    imager_core::Error::io("write staged copy of", host.display(path), err).into()
}

/// A delta's `apply`: (base, delta, the most bytes it may make) to the content.
type Apply = fn(&[u8], &[u8], usize) -> std::result::Result<Vec<u8>, String>;

/// Applies an rsync delta to the host's current content at `path` and writes what it
/// makes (base and result are held in memory: fast_rsync applies into a buffer).
fn apply_delta(
    apply: Apply,
    host: &Beneath,
    path: &[u8],
    size: u64,
    payload: &[u8],
    out: &mut impl Write,
) -> Result<()> {
    let base = delta_base(host, path, size)?;
    let data = apply(&base, payload, size as usize)
        .map_err(|r| Error::Agent(format!("applying the delta for {}: {r}", escape(path))))?;
    out.write_all(&data).map_err(|e| write_err(host, path, e))
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
        let d = zstd_delta::encode(&old, &new, 3).expect("delta");
        assert!(d.len() < 2000, "{}", d.len());
        assert_eq!(zstd_delta::apply(&old, &d, new.len()).expect("apply"), new);
        assert!(zstd_delta::apply(&old, &d, 10).is_err());
        let sig = rsync_delta::signature(&old);
        let d = rsync_delta::encode(&sig, &new, 3).expect("rsync delta");
        assert!(d.len() < 20_000, "{}", d.len());
        assert_eq!(rsync_delta::apply(&old, &d, new.len()).expect("apply"), new);
    }
}
