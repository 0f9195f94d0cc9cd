//! A gzip-aware delta: for a gzip file (a changelog, a man page) whose old version the
//! host has. A one-line change to the text rewrites the whole compressed file, so a
//! byte-level delta between two gzip files is nearly the whole file; between their
//! decompressed texts it is the change. The patch is that text delta plus what rebuilds
//! the exact compressed bytes from the new text, as Android's puffdiff and Google Play's
//! archive-patcher do.
//!
//! A gzip file is split into *segments*: the bytes kept as they are (each member's header
//! and trailer, anything after the last member) and each member's deflate stream. A
//! deflate stream is rebuilt from its text with `preflate-rs`'s reconstruction data:
//! preflate predicts the compressor's choices from the text and records only where the
//! stream differs, so GNU `gzip -9n` (what Debian packages ship) and zlib's streams cost
//! a few hundred bytes, and any other deflate stream (pigz, odd levels) still rebuilds
//! exactly, for more. Nothing depends on the host's gzip or zlib.
//!
//! The raw patch, uncompressed (zstd-compressed on its own, raw in a pack, as bsdiff's):
//! `SGZ2`, the new text's length, the blake3 of that length and the rest, the blake3 of the
//! new text, the number of segments, each segment (`0`, length, bytes: kept; `1`, its
//! text's length, the reconstruction data's length, the data: a deflate stream), then a
//! [`super::bsdiff`] patch from the old text to the new. Numbers are 8 bytes,
//! little-endian. preflate replays a compressor's decisions on the text it is given, and
//! on a text or reconstruction data other than the ones it was made from it may run for
//! minutes: the agent checks both hashes first, so preflate only ever sees the pair the
//! controller proved.
//!
//! Memory is bounded on the agent's side: the old file, both texts and the patch are held
//! (at most [`MAX_FILE`], [`MAX_TEXT`] each, and [`MAX_PATCH`]; the controller makes no
//! larger patch); an old file that inflates past the bound (a
//! decompression bomb on the host) or a patch that declares more fails that file, and the
//! hash check of what it makes refuses a damaged patch's result.

use super::bsdiff;
use crate::error::{Error, Result};
use imager_core::tree::escape::escape;
use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZFlush, MZStatus};
use std::io::Write;

/// The largest gzip file, old or new, that gets a gzip-aware delta.
pub const MAX_FILE: u64 = 16 << 20;

/// The largest text (all members decompressed) either side may have.
pub const MAX_TEXT: u64 = 32 << 20;

/// The largest raw patch the agent takes (and the controller makes): the segments' data
/// and the text delta.
pub const MAX_PATCH: u64 = MAX_TEXT + MAX_FILE;

/// The most members a gzip file is split into; the bytes after them are kept as they
/// are (a file of a million empty members would otherwise cost a million segments).
const MAX_MEMBERS: usize = 4096;

/// The first bytes of a patch: the format and its version. The version is in the cache
/// entries' and published files' names too ([`super::PatchKind::name`]), so a patch of
/// another version is never taken for one of this.
const MAGIC: &[u8; 4] = b"SGZ2";

/// A piece of a gzip file: bytes kept as they are, or a deflate stream.
#[derive(Debug)]
enum Segment {
    /// Header, trailer or trailing bytes: these bytes of the file.
    Kept(std::ops::Range<usize>),
    /// A deflate stream at these bytes of the file, of `text` decompressed bytes.
    Deflate {
        at: std::ops::Range<usize>,
        text: usize,
    },
}

/// A gzip file split into its segments, and its text (every member's, in order).
struct Parsed {
    segments: Vec<Segment>,
    text: Vec<u8>,
}

/// The length of the gzip member header at the start of `b`, `None` if `b` does not start
/// with one (magic, deflate, no reserved flag, its optional fields complete).
fn header_len(b: &[u8]) -> Option<usize> {
    if b.len() < 10 || b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 || b[3] & 0xe0 != 0 {
        return None;
    }
    let flags = b[3];
    let mut at = 10usize;
    if flags & 4 != 0 {
        let xlen = u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]) as usize;
        at = at.checked_add(2 + xlen)?;
    }
    for bit in [8u8, 16] {
        if flags & bit != 0 {
            let end = b.get(at..)?.iter().position(|&c| c == 0)?;
            at += end + 1;
        }
    }
    if flags & 2 != 0 {
        at += 2;
    }
    (at <= b.len()).then_some(at)
}

/// An inflater and its output buffer, made once per file and reset for each member.
struct Inflater {
    state: Box<InflateState>,
    buf: Vec<u8>,
}

/// Inflates the raw deflate stream at the start of `input`, appending its text to `text`
/// (which may not grow past `limit`); how many bytes of `input` the stream took.
fn inflate_stream(
    inf: &mut Inflater,
    input: &[u8],
    text: &mut Vec<u8>,
    limit: u64,
) -> std::result::Result<usize, String> {
    inf.state.reset(DataFormat::Raw);
    let (state, buf) = (&mut inf.state, &mut inf.buf);
    let mut at = 0usize;
    loop {
        let r = inflate(state, &input[at..], buf, MZFlush::None);
        at += r.bytes_consumed;
        if text.len() as u64 + r.bytes_written as u64 > limit {
            return Err(format!(
                "it decompresses to more than {limit} bytes (the most a gzip-aware delta takes)"
            ));
        }
        text.extend_from_slice(&buf[..r.bytes_written]);
        match r.status {
            Ok(MZStatus::StreamEnd) => return Ok(at),
            Ok(_) if r.bytes_consumed == 0 && r.bytes_written == 0 => {
                return Err("its deflate stream is truncated".into())
            }
            Ok(_) => {}
            Err(e) => return Err(format!("its deflate stream is damaged ({e:?})")),
        }
    }
}

/// Splits gzip file `b` into segments and inflates it (its text at most `limit` bytes).
/// The first member must be whole; after the last member that parses, the rest is kept.
fn parse(b: &[u8], limit: u64) -> std::result::Result<Parsed, String> {
    let mut p = Parsed {
        segments: Vec::new(),
        text: Vec::new(),
    };
    let mut at = 0usize;
    let mut kept_from = 0usize;
    let mut inf = Inflater {
        state: InflateState::new_boxed(DataFormat::Raw),
        buf: vec![0u8; 64 << 10],
    };
    while let Some(h) = header_len(&b[at..]).filter(|_| p.segments.len() < 2 * MAX_MEMBERS) {
        let start = at + h;
        let before = p.text.len();
        let len = match inflate_stream(&mut inf, &b[start..], &mut p.text, limit) {
            Ok(n) => n,
            // A damaged member after the first is trailing bytes, kept as they are.
            Err(_) if !p.segments.is_empty() => {
                p.text.truncate(before);
                break;
            }
            Err(e) => return Err(e),
        };
        let end = start + len;
        if b.len() < end + 8 {
            if p.segments.is_empty() {
                return Err("its first member has no trailer".into());
            }
            p.text.truncate(before);
            break;
        }
        p.segments.push(Segment::Kept(kept_from..start));
        p.segments.push(Segment::Deflate {
            at: start..end,
            text: p.text.len() - before,
        });
        at = end + 8;
        kept_from = end;
    }
    if p.segments.is_empty() {
        return Err("not a gzip file".into());
    }
    p.segments.push(Segment::Kept(kept_from..b.len()));
    Ok(p)
}

/// The text of gzip file `b`, or why it cannot be a delta's base.
fn text_of(b: &[u8]) -> std::result::Result<Vec<u8>, String> {
    if b.len() as u64 > MAX_FILE {
        return Err(format!("{} bytes, over the {MAX_FILE}-byte limit", b.len()));
    }
    parse(b, MAX_TEXT).map(|p| p.text)
}

fn put_u64(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u64).to_le_bytes());
}

/// The controller's side: the raw patch that makes gzip file `new` from gzip file `old`,
/// or why there is none (either is not gzip, is too large, or a deflate stream preflate
/// cannot take). It is proved here: applied to `old` as the agent will, it makes `new`.
pub fn diff(old: &[u8], new: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let old_text = text_of(old).map_err(|e| format!("the old file: {e}"))?;
    if new.len() as u64 > MAX_FILE {
        return Err(format!("the new file is over the {MAX_FILE}-byte limit"));
    }
    let p = parse(new, MAX_TEXT).map_err(|e| format!("the new file: {e}"))?;
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(&blake3::hash(&p.text).as_bytes()[..]);
    put_u64(&mut out, p.segments.len());
    // The reconstruction is checked once, on the whole patch, below.
    let config = preflate_rs::PreflateConfig {
        verify_compression: false,
        ..Default::default()
    };
    for s in &p.segments {
        match s {
            Segment::Kept(r) => {
                out.push(0);
                put_u64(&mut out, r.len());
                out.extend_from_slice(&new[r.clone()]);
            }
            Segment::Deflate { at, text } => {
                let (r, _) = preflate_rs::preflate_whole_deflate_stream(&new[at.clone()], &config)
                    .map_err(|e| format!("preflate cannot take a deflate stream: {e:?}"))?;
                if r.compressed_size != at.len() {
                    return Err(format!(
                        "preflate read {} bytes of a {}-byte deflate stream",
                        r.compressed_size,
                        at.len()
                    ));
                }
                out.push(1);
                put_u64(&mut out, *text);
                put_u64(&mut out, r.corrections.len());
                out.extend_from_slice(&r.corrections);
            }
        }
    }
    out.extend_from_slice(&bsdiff::diff(&old_text, &p.text)?);
    let len = (p.text.len() as u64).to_le_bytes();
    let sum = checksum(&len, &out);
    let out = [&MAGIC[..], &len, &sum, &out].concat();
    if out.len() as u64 > MAX_PATCH {
        return Err(format!("the patch is over the {MAX_PATCH}-byte limit"));
    }
    let made = patched(old, &out, new.len() as u64)?;
    if made != new {
        return Err("the gzip-aware patch just made does not rebuild the file".into());
    }
    Ok(out)
}

/// The blake3 a patch carries: of its text length and of everything after the checksum.
/// It finds damage (a torn cache entry, a bad mirror); it is no signature: the controller
/// is trusted with what it sends, and a mirror's blobs are checked against its index.
fn checksum(len: &[u8; 8], rest: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(len);
    h.update(rest);
    *h.finalize().as_bytes()
}

/// Reads a number of a patch.
fn take_u64(p: &mut &[u8]) -> std::result::Result<u64, String> {
    let (n, rest) = p
        .split_first_chunk::<8>()
        .ok_or("bad gzip-aware patch: it ends inside its segments")?;
    *p = rest;
    Ok(u64::from_le_bytes(*n))
}

/// Takes `n` bytes of a patch.
fn take<'a>(p: &mut &'a [u8], n: u64) -> std::result::Result<&'a [u8], String> {
    let n = usize::try_from(n)
        .ok()
        .filter(|&n| n <= p.len())
        .ok_or("bad gzip-aware patch: a segment runs past its end")?;
    let (a, rest) = p.split_at(n);
    *p = rest;
    Ok(a)
}

/// Applies raw patch `raw` to old gzip file `old`, writing the new file (of exactly `size`
/// bytes, or an error) to `out`.
pub fn apply(
    old: &[u8],
    raw: &[u8],
    size: u64,
    out: &mut impl Write,
) -> std::result::Result<(), String> {
    let written = apply_up_to(old, raw, size, out)?;
    if written != size {
        return Err(format!("the patch makes {written} bytes, not {size}"));
    }
    Ok(())
}

/// [`apply`] for a result of at most `size` bytes; how many it made.
pub fn apply_up_to(
    old: &[u8],
    raw: &[u8],
    size: u64,
    out: &mut impl Write,
) -> std::result::Result<u64, String> {
    let mut p = raw;
    if take(&mut p, 4)? != MAGIC {
        return Err("not a gzip-aware patch".into());
    }
    let text_len = take_u64(&mut p)?;
    if text_len > MAX_TEXT {
        return Err(format!(
            "the patch declares {text_len} bytes of text, over the {MAX_TEXT}-byte limit"
        ));
    }
    let sum = take(&mut p, 32)?;
    if checksum(&text_len.to_le_bytes(), p)[..] != sum[..] {
        return Err("the patch is damaged (its checksum does not match)".into());
    }
    let text_sum = take(&mut p, 32)?;
    let count = take_u64(&mut p)?;
    let mut segments = Vec::new();
    for _ in 0..count {
        let kind = take(&mut p, 1)?[0];
        match kind {
            0 => {
                let n = take_u64(&mut p)?;
                segments.push((None, take(&mut p, n)?));
            }
            1 => {
                let text = take_u64(&mut p)?;
                let n = take_u64(&mut p)?;
                segments.push((Some(text), take(&mut p, n)?));
            }
            k => return Err(format!("bad gzip-aware patch: a segment of kind {k}")),
        }
    }
    let old_text = text_of(old).map_err(|e| format!("the host's file: {e}"))?;
    let mut text = Vec::with_capacity(text_len as usize);
    bsdiff::apply(&old_text[..], &mut &p[..], text_len, &mut text).map_err(|e| e.to_string())?;
    drop(old_text);
    if blake3::hash(&text).as_bytes()[..] != text_sum[..] {
        return Err(
            "the text it makes is not the one it was made for (the host's file changed?)".into(),
        );
    }
    let mut written = 0u64;
    let mut emit = |bytes: &[u8]| -> std::result::Result<(), String> {
        written += bytes.len() as u64;
        if written > size {
            return Err(format!(
                "the patch makes more than the {size} bytes expected"
            ));
        }
        out.write_all(bytes).map_err(|e| e.to_string())
    };
    let mut at = 0usize;
    for (text_of_stream, data) in segments {
        match text_of_stream {
            None => emit(data)?,
            Some(n) => {
                let part = usize::try_from(n)
                    .ok()
                    .and_then(|n| text.get(at..at.checked_add(n)?))
                    .ok_or("bad gzip-aware patch: its streams take more text than it makes")?;
                at += part.len();
                let stream = preflate_rs::recreate_whole_deflate_stream(part, data)
                    .map_err(|e| format!("rebuilding a deflate stream: {e:?}"))?;
                emit(&stream)?;
            }
        }
    }
    if at != text.len() {
        return Err("bad gzip-aware patch: its streams leave text unused".into());
    }
    Ok(written)
}

/// The content raw patch `raw` makes from `old` (the controller's check), exactly `size`
/// bytes.
pub fn patched(old: &[u8], raw: &[u8], size: u64) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(size.min(MAX_FILE) as usize);
    apply(old, raw, size, &mut out)?;
    Ok(out)
}

/// The agent's side: `raw` applied to the host's file `old` (both read whole within
/// their limits by the caller), the result written to `out`; errors name `path`.
pub fn apply_held(
    path: &[u8],
    old: &[u8],
    raw: &[u8],
    size: u64,
    out: &mut impl Write,
) -> Result<()> {
    let mut w = std::io::BufWriter::new(out);
    apply(old, raw, size, &mut w)
        .and_then(|()| w.flush().map_err(|e| e.to_string()))
        .map_err(|e| {
            Error::Agent(format!(
                "applying the gzip-aware delta for {}: {e}",
                escape(path)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(text: &[u8]) -> Vec<u8> {
        // GNU gzip -9n as Debian ships: the system's own tool, as a real file would be
        // made.
        let mut c = std::process::Command::new("gzip")
            .args(["-9n", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip");
        let mut i = c.stdin.take().expect("stdin");
        let t = text.to_vec();
        let w = std::thread::spawn(move || i.write_all(&t));
        let o = c.wait_with_output().expect("gzip output");
        w.join().expect("writer").expect("write");
        o.stdout
    }

    fn changelog(n: usize, extra: &str) -> Vec<u8> {
        let mut s = String::from(extra);
        for i in 0..n {
            s.push_str(&format!(
                "pkg (1.{i}-1) bookworm; urgency=medium\n\n  * Fix number {i} of many.\n\n -- A <a@b>  Mon, 0{} Jan 2024\n\n",
                i % 9
            ));
        }
        s.into_bytes()
    }

    #[test]
    fn a_changed_gzip_file_patches_as_its_text_change() {
        let old = gzip(&changelog(400, ""));
        let new = gzip(&changelog(400, "pkg (2.0-1) new entry\n\n"));
        let raw = diff(&old, &new).expect("diff");
        assert_eq!(patched(&old, &raw, new.len() as u64).expect("apply"), new);
        let z = super::super::whole::encode(&raw, 19).expect("z");
        let whole = super::super::whole::encode(&new, 19).expect("z");
        assert!(z.len() * 5 < whole.len(), "{} vs {}", z.len(), whole.len());
    }

    #[test]
    fn damage_limits_and_non_gzip_are_refused() {
        let old = gzip(&changelog(50, ""));
        let new = gzip(&changelog(50, "x\n"));
        let raw = diff(&old, &new).expect("diff");
        let n = new.len() as u64;
        assert!(patched(&old, &raw, n - 1).is_err());
        assert!(patched(&old, &raw[..raw.len() - 5], n).is_err());
        let mut big = raw.clone();
        big[4..12].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = patched(&old, &big, n).expect_err("1 TB of text");
        assert!(e.contains("over the"), "{e}");
        assert!(diff(b"plain text", &new).is_err());
        // A bomb as the host's old file: 64 MiB of zeros in a 64 KiB gzip file.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        let e = patched(&bomb, &raw, n).expect_err("bomb");
        assert!(e.contains("decompresses to more than"), "{e}");
    }
}
