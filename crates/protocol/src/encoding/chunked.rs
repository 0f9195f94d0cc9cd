//! Large files, in spans: the encoding of every file over [`LARGE`] bytes, whose memory
//! stays bounded whatever the file's size, on both sides (a disk image, a database
//! dump, a 16 GiB sparse file cost what a 64 MiB one does).
//!
//! The content is cut into spans of [`SPAN`] bytes, each sent as one record:
//! - `Same`: the host's current file holds these bytes at the same offset (the
//!   controller compared them with the old version it holds);
//! - `Zstd`: the span compressed on its own;
//! - `Patch`: the span compressed with the host's current bytes around the same offset
//!   (the span and [`MARGIN`] on each side) as a `--patch-from` prefix, so that an edit
//!   in place, or a shift of up to a margin, costs what it changed.
//!
//! A record is a tag byte and little-endian `u64` fields, then the frame it announces:
//! `0 len` (Same), `1 out_len zlen` (Zstd), `2 base_off base_len out_len zlen` (Patch).
//! The controller writes the records to a scratch file (never memory) and proves each
//! frame by decoding it against the bytes it came from; the agent decodes them as they
//! arrive, reading the host's file in windows, and the staged file's hash is checked
//! as for any other encoding.

use super::{write_err, zstd_delta};
use crate::error::{Error, Result};
use imager_core::safe_dir::Beneath;
use imager_core::tree::escape::escape;
use imager_core::Hash;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

/// Files larger than this travel chunked (smaller ones are held in memory whole by the
/// other encodings: the controller's and the agent's bound).
pub const LARGE: u64 = 64 << 20;

/// The bytes of one record's output.
pub const SPAN: u64 = 16 << 20;

/// How far before and after its span a `Patch` looks in the host's file.
pub const MARGIN: u64 = 4 << 20;

const SAME: u8 = 0;
const ZSTD: u8 = 1;
const PATCH: u8 = 2;

/// The largest frame a record may announce: a span that does not compress, framed.
fn max_frame() -> u64 {
    zstd::zstd_safe::compress_bound(SPAN as usize) as u64 + 1024
}

/// The window of the host's file a `Patch` for the span at `off` refers to.
fn window(off: u64, old_len: u64) -> (u64, u64) {
    let start = off.saturating_sub(MARGIN).min(old_len);
    let end = (off + SPAN + MARGIN).min(old_len);
    (start, end - start)
}

/// Reads `len` bytes of `f` at `off` into `buf`.
fn read_at(f: &File, off: u64, len: u64, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.resize(len as usize, 0);
    f.read_exact_at(buf, off)
}

/// The controller's side: `new` (`new_len` bytes) as records into `out`, with `old`
/// (the host's current content, as the store holds it) for `Same` and `Patch`. Returns
/// the blake3 of the content read, for the caller to check against what it should be.
pub fn encode(
    new: &File,
    new_len: u64,
    old: Option<(&File, u64)>,
    level: i32,
    out: &mut impl Write,
) -> std::result::Result<Hash, String> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let mut hasher = blake3::Hasher::new();
    let (mut span, mut before, mut base) = (Vec::new(), Vec::new(), Vec::new());
    // Adjacent `Same` spans make one record.
    let mut same = 0u64;
    let flush_same = |same: &mut u64, out: &mut dyn Write| -> std::io::Result<()> {
        if *same > 0 {
            out.write_all(&[SAME])?;
            out.write_all(&same.to_le_bytes())?;
            *same = 0;
        }
        Ok(())
    };
    let mut off = 0u64;
    while off < new_len {
        let len = SPAN.min(new_len - off);
        read_at(new, off, len, &mut span).map_err(|e| io("reading the new content", e))?;
        hasher.update(&span);
        if let Some((o, old_len)) = old {
            if off + len <= old_len {
                read_at(o, off, len, &mut before).map_err(|e| io("reading the old content", e))?;
                if before == span {
                    same += len;
                    off += len;
                    continue;
                }
            }
        }
        flush_same(&mut same, out).map_err(|e| io("writing the encoding", e))?;
        let patch_base = match old {
            Some((o, old_len)) if window(off, old_len).1 > 0 => {
                let (b_off, b_len) = window(off, old_len);
                read_at(o, b_off, b_len, &mut base)
                    .map_err(|e| io("reading the old content", e))?;
                Some((b_off, b_len))
            }
            _ => None,
        };
        let (tag, head, frame) = match patch_base {
            Some((b_off, b_len)) => {
                let frame = zstd_delta::encode(&base, &span, level)?;
                if zstd_delta::apply(&base, &frame, span.len())? != span {
                    return Err(format!("the patch of the span at {off} does not make it"));
                }
                (PATCH, vec![b_off, b_len, len, frame.len() as u64], frame)
            }
            None => {
                let frame = zstd::bulk::compress(&span, level).map_err(|e| e.to_string())?;
                if zstd::bulk::decompress(&frame, span.len()).map_err(|e| e.to_string())? != span {
                    return Err(format!("the frame of the span at {off} does not make it"));
                }
                (ZSTD, vec![len, frame.len() as u64], frame)
            }
        };
        let write = || -> std::io::Result<()> {
            out.write_all(&[tag])?;
            for n in head {
                out.write_all(&n.to_le_bytes())?;
            }
            out.write_all(&frame)
        };
        write().map_err(|e| io("writing the encoding", e))?;
        off += len;
    }
    flush_same(&mut same, out).map_err(|e| io("writing the encoding", e))?;
    Ok(Hash::from(hasher.finalize()))
}

/// The agent's side: the records read from `payload` make the content of host file
/// `path` (`size` bytes in the image) into `out`, reading the host's current file where
/// they refer to it. Every length is checked against its bound before anything is
/// allocated, and the output may not pass `size`.
pub fn decode(
    host: &Beneath,
    path: &[u8],
    size: u64,
    payload: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<()> {
    let mut d = Decoder {
        host,
        path,
        size,
        current: None,
        done: 0,
        frame: Vec::new(),
        buf: Vec::new(),
    };
    loop {
        let mut tag = [0u8; 1];
        match payload.read(&mut tag) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(d.recv(e)),
        }
        match tag[0] {
            SAME => {
                let len = d.field(payload)?;
                d.same(len, out)?;
            }
            ZSTD => d.frame(None, payload, out)?,
            PATCH => {
                let base = (d.field(payload)?, d.field(payload)?);
                d.frame(Some(base), payload, out)?;
            }
            t => return Err(d.bad(format!("unknown record {t}"))),
        }
    }
    if d.done != size {
        return Err(d.bad(format!("it made {} bytes, the file has {size}", d.done)));
    }
    Ok(())
}

/// Where the agent is in one file's records.
struct Decoder<'a> {
    host: &'a Beneath,
    path: &'a [u8],
    size: u64,
    /// The host's current file and its length, opened by the first record that reads it.
    current: Option<(File, u64)>,
    /// Bytes made so far.
    done: u64,
    frame: Vec<u8>,
    buf: Vec<u8>,
}

impl Decoder<'_> {
    fn bad(&self, why: String) -> Error {
        Error::Protocol(format!("chunked content of {}: {why}", escape(self.path)))
    }

    fn recv(&self, e: std::io::Error) -> Error {
        self.bad(format!("reading it: {e}"))
    }

    fn io(&self, e: std::io::Error) -> Error {
        write_err(self.host, self.path, e)
    }

    fn field(&self, payload: &mut dyn Read) -> Result<u64> {
        let mut b = [0u8; 8];
        payload.read_exact(&mut b).map_err(|e| self.recv(e))?;
        Ok(u64::from_le_bytes(b))
    }

    /// The host's current file, which must hold at least `end` bytes (it is opened once,
    /// without following a symlink).
    fn base(&mut self, end: u64) -> Result<&File> {
        if self.current.is_none() {
            let f = crate::hostfs::open_file(self.host, self.path)?;
            let len = f.metadata().map_err(|e| self.io(e))?.len();
            self.current = Some((f, len));
        }
        match &self.current {
            Some((f, len)) if end <= *len => Ok(f),
            Some((_, len)) => Err(Error::Agent(format!(
                "{}: the host's file has {len} bytes, the push reads it up to {end}; the \
                 host changed during the push",
                self.host.display(self.path).display()
            ))),
            None => Err(self.bad("no host file".into())),
        }
    }

    /// `Same`: `len` bytes of the host's file at the current offset, copied in 1 MiB
    /// pieces.
    fn same(&mut self, len: u64, out: &mut dyn Write) -> Result<()> {
        if len > self.size - self.done {
            return Err(self.bad(format!("{len} bytes copied past its size {}", self.size)));
        }
        let (start, end) = (self.done, self.done + len);
        let f = self.base(end)?.try_clone().map_err(|e| self.io(e))?;
        let mut at = start;
        while at < end {
            let n = (1 << 20).min(end - at);
            let mut piece = std::mem::take(&mut self.buf);
            read_at(&f, at, n, &mut piece).map_err(|e| self.io(e))?;
            out.write_all(&piece).map_err(|e| self.io(e))?;
            self.buf = piece;
            at += n;
        }
        self.done = end;
        Ok(())
    }

    /// `Zstd` (no `base`) or `Patch` (against the host's bytes at `base`: offset and
    /// length): the frame read from `payload`, decoded and written.
    fn frame(
        &mut self,
        base: Option<(u64, u64)>,
        payload: &mut dyn Read,
        out: &mut dyn Write,
    ) -> Result<()> {
        let (out_len, zlen) = (self.field(payload)?, self.field(payload)?);
        if out_len > SPAN || out_len > self.size - self.done {
            return Err(self.bad(format!(
                "a record of {out_len} bytes at {} (spans are at most {SPAN}, the file {})",
                self.done, self.size
            )));
        }
        if zlen > max_frame() {
            return Err(self.bad(format!("a frame of {zlen} bytes announced")));
        }
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        payload
            .take(zlen)
            .read_to_end(&mut frame)
            .map_err(|e| self.recv(e))?;
        if frame.len() as u64 != zlen {
            return Err(self.bad(format!("a frame of {zlen} bytes ends early")));
        }
        let made = match base {
            Some((b_off, b_len)) => {
                if b_len > SPAN + 2 * MARGIN {
                    return Err(self.bad(format!("a base window of {b_len} bytes")));
                }
                let f = self.base(b_off.saturating_add(b_len))?;
                let mut window = Vec::new();
                read_at(f, b_off, b_len, &mut window).map_err(|e| self.io(e))?;
                zstd_delta::apply(&window, &frame, out_len as usize).map_err(|e| self.bad(e))?
            }
            None => zstd::bulk::decompress(&frame, out_len as usize)
                .map_err(|e| self.bad(e.to_string()))?,
        };
        self.frame = frame;
        if made.len() as u64 != out_len {
            return Err(self.bad(format!(
                "a record made {} bytes, not the {out_len} it announced",
                made.len()
            )));
        }
        out.write_all(&made).map_err(|e| self.io(e))?;
        self.done += out_len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(data: &[u8]) -> File {
        let mut f = imager_core::fsx::scratch_file(&std::env::temp_dir()).expect("scratch");
        f.write_all(data).expect("write");
        f
    }

    fn decode_with(old: &[u8], enc: &[u8], size: u64) -> Result<Vec<u8>> {
        let dir = tempfile::tempdir().expect("tempdir");
        imager_core::fsx::write(dir.path().join("f"), old).expect("write old");
        let b = Beneath::open(dir.path()).expect("root");
        let mut out = Vec::new();
        decode(&b, b"/f", size, &mut &enc[..], &mut out)?;
        Ok(out)
    }

    #[test]
    fn spans_round_trip_with_and_without_an_old_version() {
        // Three spans and a bit; the second changed in place, the tail grown.
        let old: Vec<u8> = (0..(3 * SPAN + 1000) as u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        let mut new = old.clone();
        new[(SPAN + 5) as usize..(SPAN + 4096) as usize].fill(7);
        new.extend_from_slice(b"grown");
        let (o, n) = (file_of(&old), file_of(&new));
        let mut enc = Vec::new();
        let h = encode(
            &n,
            new.len() as u64,
            Some((&o, old.len() as u64)),
            3,
            &mut enc,
        )
        .expect("encode");
        assert_eq!(h, Hash::of(&new));
        // Two spans the same (one record), a patch of a few KiB, the tail's patch.
        assert!(enc.len() < 64 << 10, "{} bytes", enc.len());
        assert_eq!(enc[0], SAME, "the first span is the same");
        assert_eq!(
            decode_with(&old, &enc, new.len() as u64).expect("decode"),
            new
        );
        // The host's file changed under the push: refused, not made wrong.
        assert!(decode_with(&old[..1000], &enc, new.len() as u64).is_err());
        // Without an old version: every span compressed on its own.
        let mut whole = Vec::new();
        encode(&n, new.len() as u64, None, 3, &mut whole).expect("encode");
        assert_eq!(
            decode_with(b"", &whole, new.len() as u64).expect("decode"),
            new
        );
        // A size that does not match is refused.
        assert!(decode_with(b"", &whole, new.len() as u64 - 1).is_err());
        assert!(decode_with(b"", &whole, new.len() as u64 + 1).is_err());
    }

    #[test]
    fn hostile_records_are_refused_before_allocating() {
        let mut rec = vec![ZSTD];
        rec.extend(SPAN.to_le_bytes());
        rec.extend(u64::MAX.to_le_bytes());
        let e = decode_with(b"", &rec, SPAN).expect_err("refused");
        assert!(e.to_string().contains("a frame of"), "{e}");
        let mut rec = vec![SAME];
        rec.extend(u64::MAX.to_le_bytes());
        assert!(decode_with(b"", &rec, 10).is_err());
        assert!(decode_with(b"", &[9], 10).is_err());
    }
}
