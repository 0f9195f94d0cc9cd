//! A bsdiff delta (Colin Percival's algorithm, as OSTree's static deltas use it), for a
//! host file whose old version the controller holds. It beats zstd's patch-from on
//! executables: code whose addresses shift changes many bytes by the same small amounts,
//! which bsdiff turns into runs of small differences that compress well.
//!
//! The patch is the `bsdiff` crate's stream: steps of a 24-byte control (how many bytes
//! to add to the old content, how many to copy from the patch, how far to move in the
//! old content; little-endian, the move sign-magnitude), each followed by those bytes.
//! It is uncompressed: it travels zstd-compressed on its own ([`encode`]) or in a pack
//! with other files' patches ([`super::pack`]), where they share one compression context.
//!
//! The agent applies a patch as a stream ([`apply`]): it reads the old content by offset
//! from the host's file and writes the result as it goes, so memory stays a few buffers
//! whatever the file's size.

use crate::error::{Error, Result};
use imager_core::safe_dir::Beneath;
use imager_core::tree::escape::escape;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

/// The largest old content bsdiff is computed for: its suffix sort takes 16 bytes of
/// memory per byte of the old file (1 GiB here). Larger files travel as zstd deltas.
pub const MAX_OLD: u64 = 64 << 20;

/// The raw patch from `old` to `new`.
pub fn diff(old: &[u8], new: &[u8]) -> std::result::Result<Vec<u8>, String> {
    if old.len() as u64 > MAX_OLD {
        return Err(format!(
            "bsdiff is computed for old content of at most {MAX_OLD} bytes, not {}",
            old.len()
        ));
    }
    let mut out = Vec::new();
    bsdiff::diff(old, new, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The controller's side of a patch sent on its own: the raw patch, zstd-compressed.
pub fn encode(raw: &[u8], level: i32) -> std::result::Result<Vec<u8>, String> {
    super::whole::encode(raw, level)
}

/// Old content read by offset: the host's file (the agent) or bytes in memory (the
/// controller's check of a patch it just made).
pub trait Base {
    /// The old content's length in bytes.
    fn size(&self) -> std::io::Result<u64>;
    /// Fills `buf` from `offset` in the old content; an error if that runs past its end.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl Base for std::fs::File {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl Base for [u8] {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| bad("an offset past the old content"))?;
        let part = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or_else(|| bad("a step reads past the end of the old content"))?;
        buf.copy_from_slice(part);
        Ok(())
    }
}

/// The host's file read through a few cached blocks. A patch's steps read the old
/// content a few bytes each, mostly forwards but also back and forth between regions
/// (an executable's code and its data), and one `pread` per step was a large part of a
/// managed host's update in system time (46,000 calls for the corpus pair).
pub struct Window {
    f: std::fs::File,
    len: u64,
    /// Blocks read, by their index in the file, and when each was last used.
    held: std::cell::RefCell<Vec<Block>>,
    uses: std::cell::Cell<u64>,
}

struct Block {
    index: u64,
    used: u64,
    bytes: Vec<u8>,
}

/// A block's size; a read of more than [`BLOCKS`] of them goes to the file directly.
const BLOCK: u64 = 64 << 10;

/// Blocks kept at once (the least recently used is read over).
const BLOCKS: usize = 16;

impl Window {
    /// Reads `f` through cached blocks.
    pub fn new(f: std::fs::File) -> std::io::Result<Window> {
        Ok(Window {
            len: f.metadata()?.len(),
            f,
            held: std::cell::RefCell::new(Vec::new()),
            uses: std::cell::Cell::new(0),
        })
    }

    /// Copies the bytes of block `index` from `at` in it into `buf`, reading the block
    /// first when it is not held.
    fn copy_from(&self, index: u64, at: usize, buf: &mut [u8]) -> std::io::Result<()> {
        let mut held = self.held.borrow_mut();
        let used = self.uses.get() + 1;
        self.uses.set(used);
        let i = match held.iter().position(|b| b.index == index) {
            Some(i) => i,
            None => {
                let start = index * BLOCK;
                // Sized to what the file holds: most files are far smaller than a block.
                let mut bytes = vec![0; BLOCK.min(self.len.saturating_sub(start)) as usize];
                // A file cut short since it was opened ends before the length it had.
                FileExt::read_exact_at(&self.f, &mut bytes, start).map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => {
                        bad("a step reads past the end of the old content")
                    }
                    _ => e,
                })?;
                let block = Block { index, used, bytes };
                if held.len() < BLOCKS {
                    held.push(block);
                    held.len() - 1
                } else {
                    let (oldest, _) = held
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, b)| b.used)
                        .ok_or_else(|| bad("no block"))?;
                    held[oldest] = block;
                    oldest
                }
            }
        };
        let block = &mut held[i];
        block.used = used;
        let part = block
            .bytes
            .get(at..at + buf.len())
            .ok_or_else(|| bad("a step reads past the end of the old content"))?;
        buf.copy_from_slice(part);
        Ok(())
    }
}

impl Base for Window {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if buf.len() as u64 > BLOCK * BLOCKS as u64 {
            return FileExt::read_exact_at(&self.f, buf, offset);
        }
        let (mut done, mut at) = (0, offset);
        while done < buf.len() {
            let (index, within) = (at / BLOCK, (at % BLOCK) as usize);
            let n = (buf.len() - done).min(BLOCK as usize - within);
            self.copy_from(index, within, &mut buf[done..done + n])?;
            done += n;
            at += n as u64;
        }
        Ok(())
    }
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("bad bsdiff patch: {what}"),
    )
}

/// Steps are read and written in pieces of this size.
const BUF: usize = 64 << 10;

/// Applies the raw patch read from `patch` to `base`, writing the result (exactly
/// `size` bytes, or an error) to `out`. Reads the patch to its end.
pub fn apply(
    base: &(impl Base + ?Sized),
    patch: &mut (impl Read + ?Sized),
    size: u64,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let written = apply_up_to(base, patch, size, out)?;
    if written != size {
        return Err(bad(&format!("it makes {written} bytes, not {size}")));
    }
    Ok(())
}

/// [`apply`] for a result of at most `size` bytes; how many it made.
fn apply_up_to(
    base: &(impl Base + ?Sized),
    patch: &mut (impl Read + ?Sized),
    size: u64,
    out: &mut impl Write,
) -> std::io::Result<u64> {
    let base_len = base.size()?;
    let (mut old_pos, mut written) = (0u64, 0u64);
    // No step adds more than the result's size: a small file's buffers are as small.
    let buf_len = BUF.min(usize::try_from(size).unwrap_or(BUF));
    let (mut buf, mut old) = (vec![0u8; buf_len], vec![0u8; buf_len]);
    while let Some((add, copy, seek)) = control(patch)? {
        let step = add
            .checked_add(copy)
            .ok_or_else(|| bad("a step overflows"))?;
        if written.checked_add(step).is_none_or(|w| w > size) {
            return Err(bad(&format!(
                "it makes more than the {size} bytes expected"
            )));
        }
        if old_pos.checked_add(add).is_none_or(|e| e > base_len) {
            return Err(bad("a step reads past the end of the old content"));
        }
        let mut left = add;
        while left > 0 {
            let n = left.min(buf_len as u64) as usize;
            patch.read_exact(&mut buf[..n])?;
            base.read_exact_at(&mut old[..n], old_pos)?;
            for (b, o) in buf[..n].iter_mut().zip(&old[..n]) {
                *b = b.wrapping_add(*o);
            }
            out.write_all(&buf[..n])?;
            old_pos += n as u64;
            left -= n as u64;
        }
        let copied = std::io::copy(&mut (&mut *patch).take(copy), out)?;
        if copied != copy {
            return Err(bad("it ends inside a step"));
        }
        old_pos = old_pos
            .checked_add_signed(seek)
            .ok_or_else(|| bad("a step moves before the start of the old content"))?;
        written += step;
    }
    Ok(written)
}

/// The next step's control (bytes to add, bytes to copy, move), `None` at the end of
/// the patch (which may only end between steps).
fn control(patch: &mut (impl Read + ?Sized)) -> std::io::Result<Option<(u64, u64, i64)>> {
    let mut c = [0u8; 24];
    let mut got = 0;
    while got < c.len() {
        match patch.read(&mut c[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(bad("it ends inside a step's control")),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let word = |i: usize| u64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    let seek = word(2);
    // Sign and magnitude: the top bit is the sign.
    let magnitude = (seek & !(1 << 63)) as i64;
    let seek = if seek >> 63 == 1 {
        -magnitude
    } else {
        magnitude
    };
    Ok(Some((word(0), word(1), seek)))
}

/// Applies a raw patch read from `patch` to the host's file at `path`.
pub fn apply_to(
    host: &Beneath,
    path: &[u8],
    size: u64,
    patch: &mut (impl Read + ?Sized),
    out: &mut impl Write,
) -> Result<()> {
    let base = crate::hostfs::open_file(host, path)?;
    let base = Window::new(base).map_err(|e| {
        Error::Agent(format!(
            "reading {} for its bsdiff delta: {e}",
            escape(path)
        ))
    })?;
    apply(&base, patch, size, out).map_err(|e| {
        Error::Agent(format!(
            "applying the bsdiff delta for {}: {e}",
            escape(path)
        ))
    })
}

/// The content a raw patch makes from `old` (the controller's check), exactly `size`
/// bytes.
pub fn patched(old: &[u8], raw: &[u8], size: u64) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(size.min(MAX_OLD * 2) as usize);
    apply(old, &mut &raw[..], size, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The content a raw patch makes from `old`, of at most `limit` bytes (a check of a
/// cached patch, whose result's size is not known).
pub fn patched_up_to(old: &[u8], raw: &[u8], limit: u64) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    apply_up_to(old, &mut &raw[..], limit, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, Vec<u8>) {
        // "Code" whose addresses shift by a constant after an insertion.
        let old: Vec<u8> = (0..50_000u32)
            .flat_map(|i| (i * 16).to_le_bytes())
            .collect();
        let mut new: Vec<u8> = b"inserted".to_vec();
        new.extend((0..50_000u32).flat_map(|i| (i * 16 + 8).to_le_bytes()));
        (old, new)
    }

    #[test]
    fn a_patch_round_trips_and_is_small() {
        let (old, new) = sample();
        let raw = diff(&old, &new).expect("diff");
        assert_eq!(patched(&old, &raw, new.len() as u64).expect("apply"), new);
        let z = encode(&raw, 19).expect("encode");
        assert!(z.len() < new.len() / 20, "{} of {}", z.len(), new.len());
    }

    #[test]
    fn a_damaged_or_mismatched_patch_is_refused() {
        let (old, new) = sample();
        let raw = diff(&old, &new).expect("diff");
        let n = new.len() as u64;
        // Wrong size expected, truncated patch, a step's length inflated, a short base.
        assert!(patched(&old, &raw, n - 1).is_err());
        assert!(patched(&old, &raw, n + 1).is_err());
        assert!(patched(&old, &raw[..raw.len() - 3], n).is_err());
        let mut big = raw.clone();
        big[0..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(patched(&old, &big, n).is_err());
        assert!(patched(&old[..old.len() / 2], &raw, n).is_err());
    }

    #[test]
    fn a_host_file_read_through_cached_blocks_gives_what_the_file_holds() {
        // Sixty blocks of old content; the new one moves its blocks around, so steps
        // move back and forth across more blocks than are held.
        let old: Vec<u8> = (0..15 * BLOCK as u32)
            .flat_map(|i| (i.wrapping_mul(2_654_435_761) >> 7).to_le_bytes())
            .collect();
        let block = old.len() / 6;
        let mut new = Vec::new();
        for i in [5, 0, 3, 1, 4, 2] {
            new.extend_from_slice(&old[i * block..(i + 1) * block]);
            new.extend_from_slice(b"changed");
        }
        let raw = diff(&old, &new).expect("diff");
        let mut file = tempfile::tempfile().expect("temp file");
        std::io::Write::write_all(&mut file, &old).expect("write");
        let n = new.len() as u64;
        let window = Window::new(file.try_clone().expect("clone")).expect("window");
        let mut out = Vec::new();
        apply(&window, &mut &raw[..], n, &mut out).expect("apply");
        assert!(out == new, "the result differs from the new content");
        // A file cut short after it was opened: a step past its new end is refused.
        file.set_len(old.len() as u64 / 2).expect("truncate");
        let mut out = Vec::new();
        let err = apply(&window, &mut &raw[..], n, &mut out).expect_err("a short file");
        assert!(err.to_string().contains("past the end"), "{err}");
    }
}
