//! LLVM's bitstream container, read into byte-aligned tokens and written back bit for
//! bit. A bitstream packs its fields at any bit offset, so one field grown by a bit
//! shifts every byte after it in its block and a byte-wise diff finds nothing in common;
//! its tokens (each field a LEB128 number, blobs as raw bytes) keep what did not change
//! byte for byte.
//!
//! Only the container is read (blocks, abbreviations, records, the `BLOCKINFO` block),
//! not what LLVM's IR means by its records, so any bitstream written as LLVM writes
//! them round-trips. One walk of the structure ([`walk`]) serves both directions through
//! [`Side`]: a [`Reader`] takes each field from the bits and appends its token, a
//! [`Writer`] takes each from the tokens and appends its bits, so the two cannot
//! disagree on the layout. What the writer cannot reproduce (a non-minimal VBR, padding
//! that is not zero, a block length that is not the block's) the reader refuses or the
//! caller's comparison finds: tokens are used only for a file they rebuild exactly.
//!
//! Both directions are bounded for hostile input: the output's size, the nesting depth,
//! every count by the bytes left to read, array elements that take no bits refused.

use std::collections::HashMap;
use std::rc::Rc;

/// How an LLVM bitcode file starts (`BC` `0xC0DE`).
pub const MAGIC: [u8; 4] = *b"BC\xC0\xDE";

/// The deepest nesting of blocks accepted (LLVM's own files nest a few deep).
const MAX_DEPTH: u32 = 64;
/// The widest fixed field or VBR chunk (LLVM's `MaxChunkSize`).
const MAX_WIDTH: u64 = 32;
/// The most abbreviation operands held at once, BLOCKINFO's and the open blocks' own
/// (LLVM's files hold a few hundred): each takes a few bits to write and 8 bytes to
/// hold, so without a bound a hostile file would hold far more memory than its size.
const MAX_OPS: usize = 1 << 16;

type R<T> = Result<T, String>;

/// One operand of an abbreviation.
#[derive(Clone, Copy, Debug)]
enum Op {
    Literal,
    Fixed(u32),
    Vbr(u32),
    Array,
    Char6,
    Blob,
}

type Abbrev = Rc<[Op]>;
/// The abbreviations `BLOCKINFO` gave each block id.
type BlockInfo = HashMap<u64, Rc<Vec<Abbrev>>>;

/// One direction of the walk: each call moves one field from its source to its
/// destination and returns the field's value.
trait Side {
    fn fixed(&mut self, width: u32) -> R<u64>;
    fn vbr(&mut self, width: u32) -> R<u64>;
    /// Zero bits up to the next 32-bit word.
    fn align(&mut self) -> R<()>;
    /// A block's length word (after its header, aligned).
    fn block_start(&mut self) -> R<()>;
    /// A block's end (aligned): its length is known.
    fn block_end(&mut self) -> R<()>;
    /// `n` raw bytes, at a byte boundary.
    fn bytes(&mut self, n: u64) -> R<()>;
    /// At the top level: whether another block follows (its `ENTER_SUBBLOCK` id taken).
    fn next_block(&mut self) -> R<bool>;
    /// At the top level: what follows the last block, raw.
    fn tail(&mut self) -> R<()>;
}

/// The tokens of bitcode file `data`, at most `limit` bytes of them.
pub fn tokens(data: &[u8], limit: u64) -> R<Vec<u8>> {
    if !data.starts_with(&MAGIC) {
        return Err("not LLVM bitcode (no BC 0xC0DE magic)".into());
    }
    let mut r = Reader {
        data,
        pos: 0,
        out: Vec::new(),
        limit,
        lengths: Vec::new(),
    };
    walk(&mut r)?;
    Ok(r.out)
}

/// The bitcode file `tokens` make, at most `limit` bytes.
pub fn bits(tokens: &[u8], limit: u64) -> R<Vec<u8>> {
    let mut w = Writer {
        tokens,
        at: 0,
        out: Vec::new(),
        acc: 0,
        nbits: 0,
        limit,
        starts: Vec::new(),
    };
    walk(&mut w)?;
    w.flush_check()?;
    Ok(w.out)
}

/// The structure of a bitstream, walked through `s`.
fn walk(s: &mut impl Side) -> R<()> {
    s.bytes(MAGIC.len() as u64)?;
    let mut info = BlockInfo::new();
    let mut ops_left = MAX_OPS;
    while s.next_block()? {
        block(s, (&mut info, &mut ops_left), 0)?;
    }
    s.tail()
}

/// A block, from its `ENTER_SUBBLOCK` header to its `END_BLOCK`.
fn block(s: &mut impl Side, (info, ops_left): (&mut BlockInfo, &mut usize), depth: u32) -> R<()> {
    if depth > MAX_DEPTH {
        return Err(format!("blocks nested more than {MAX_DEPTH} deep"));
    }
    let id = s.vbr(8)?;
    let width = s.vbr(4)?;
    if width == 0 || width > MAX_WIDTH {
        return Err(format!("a block's abbreviation width of {width} bits"));
    }
    s.align()?;
    s.block_start()?;
    let inherited = info.get(&id).cloned().unwrap_or_default();
    let mut own: Vec<Abbrev> = Vec::new();
    // In BLOCKINFO, the block id that SETBID chose: where its abbreviations go.
    let mut target: Option<u64> = None;
    loop {
        match s.fixed(width as u32)? {
            0 => {
                s.align()?;
                // The block's own abbreviations end with it (BLOCKINFO's stay).
                *ops_left += own.iter().map(|a| a.len()).sum::<usize>();
                return s.block_end();
            }
            1 => block(s, (info, ops_left), depth + 1)?,
            2 => {
                let a = define(s, ops_left)?;
                if id == 0 {
                    let t = target.ok_or("BLOCKINFO defines an abbreviation before SETBID")?;
                    Rc::make_mut(info.entry(t).or_default()).push(a);
                } else {
                    own.push(a);
                }
            }
            3 => {
                let code = s.vbr(6)?;
                let n = s.vbr(6)?;
                for i in 0..n {
                    let v = s.vbr(6)?;
                    if id == 0 && code == 1 && i == 0 {
                        target = Some(v);
                    }
                }
            }
            n => {
                let k = (n - 4) as usize;
                let a = match inherited.get(k) {
                    Some(a) => a.clone(),
                    None => own
                        .get(k - inherited.len())
                        .cloned()
                        .ok_or_else(|| format!("abbreviation {n} is not defined"))?,
                };
                record(s, &a)?;
            }
        }
    }
}

/// A `DEFINE_ABBREV`: its operands, checked so that every record it makes takes bits,
/// and counted against `ops_left`.
fn define(s: &mut impl Side, ops_left: &mut usize) -> R<Abbrev> {
    let n = s.vbr(5)?;
    *ops_left = usize::try_from(n)
        .ok()
        .and_then(|n| ops_left.checked_sub(n))
        .ok_or(format!("more than {MAX_OPS} abbreviation operands"))?;
    let mut ops = Vec::new();
    for _ in 0..n {
        let op = if s.fixed(1)? == 1 {
            s.vbr(8)?;
            Op::Literal
        } else {
            match s.fixed(3)? {
                e @ (1 | 2) => {
                    let w = s.vbr(5)?;
                    if w > MAX_WIDTH || (e == 2 && w == 1) {
                        return Err(format!("an abbreviation operand of width {w}"));
                    }
                    match (e, w) {
                        (1, w) => Op::Fixed(w as u32),
                        (_, 0) => Op::Literal,
                        (_, w) => Op::Vbr(w as u32),
                    }
                }
                3 => Op::Array,
                4 => Op::Char6,
                5 => Op::Blob,
                e => return Err(format!("abbreviation operand encoding {e}")),
            }
        };
        ops.push(op);
    }
    for (i, op) in ops.iter().enumerate() {
        let last = i + 1 == ops.len();
        match op {
            Op::Blob if !last => return Err("a blob that is not the last operand".into()),
            Op::Array if i + 2 != ops.len() => {
                return Err("an array that is not the last operand but one".into())
            }
            Op::Array if !matches!(ops[i + 1], Op::Fixed(1..) | Op::Vbr(_) | Op::Char6) => {
                return Err("an array whose elements take no bits".into())
            }
            _ => {}
        }
    }
    Ok(ops.into())
}

/// A record written with abbreviation `a`.
fn record(s: &mut impl Side, a: &[Op]) -> R<()> {
    let mut i = 0;
    while i < a.len() {
        match a[i] {
            Op::Array => {
                let n = s.vbr(6)?;
                for _ in 0..n {
                    scalar(s, a[i + 1])?;
                }
                i += 1;
            }
            Op::Blob => {
                let n = s.vbr(6)?;
                s.align()?;
                s.bytes(n)?;
                s.align()?;
            }
            op => scalar(s, op)?,
        }
        i += 1;
    }
    Ok(())
}

fn scalar(s: &mut impl Side, op: Op) -> R<()> {
    match op {
        Op::Fixed(w) => s.fixed(w).map(drop),
        Op::Vbr(w) => s.vbr(w).map(drop),
        Op::Char6 => s.fixed(6).map(drop),
        Op::Literal | Op::Array | Op::Blob => Ok(()),
    }
}

/// Appends `v` as LEB128.
fn leb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Bits to tokens.
struct Reader<'a> {
    data: &'a [u8],
    /// In bits.
    pos: u64,
    out: Vec<u8>,
    limit: u64,
    /// Open blocks: (declared length in words, the word after the length word).
    lengths: Vec<(u64, u64)>,
}

impl Reader<'_> {
    fn bits_left(&self) -> u64 {
        self.data.len() as u64 * 8 - self.pos
    }

    fn read(&mut self, width: u32) -> R<u64> {
        if u64::from(width) > self.bits_left() {
            return Err(format!("ends inside a field (at bit {})", self.pos));
        }
        if width == 0 {
            return Ok(0);
        }
        let at = (self.pos / 8) as usize;
        let mut word = [0u8; 8];
        let have = (self.data.len() - at).min(8);
        word[..have].copy_from_slice(&self.data[at..at + have]);
        let v = (u64::from_le_bytes(word) >> (self.pos % 8)) & ((1u64 << width) - 1);
        self.pos += u64::from(width);
        Ok(v)
    }

    fn emit(&mut self, v: u64) -> R<u64> {
        leb(&mut self.out, v);
        self.room()?;
        Ok(v)
    }

    fn room(&self) -> R<()> {
        if self.out.len() as u64 > self.limit {
            return Err(format!("its tokens are over the {}-byte limit", self.limit));
        }
        Ok(())
    }
}

impl Side for Reader<'_> {
    fn fixed(&mut self, width: u32) -> R<u64> {
        let v = self.read(width)?;
        self.emit(v)
    }

    fn vbr(&mut self, width: u32) -> R<u64> {
        let (mut v, mut shift) = (0u64, 0u32);
        let high = 1u64 << (width - 1);
        loop {
            let chunk = self.read(width)?;
            let part = chunk & (high - 1);
            if shift >= 64 || (shift > 0 && part.leading_zeros() < shift) {
                if part != 0 {
                    return Err("a VBR value over 64 bits".into());
                }
            } else {
                v |= part << shift;
            }
            shift = shift.saturating_add(width - 1);
            if chunk & high == 0 {
                return self.emit(v);
            }
        }
    }

    fn align(&mut self) -> R<()> {
        let pad = (32 - self.pos % 32) % 32;
        if self.read(pad as u32)? != 0 {
            return Err(format!("padding that is not zero before bit {}", self.pos));
        }
        Ok(())
    }

    fn block_start(&mut self) -> R<()> {
        let words = self.read(32)?;
        self.lengths.push((words, self.pos / 32));
        Ok(())
    }

    fn block_end(&mut self) -> R<()> {
        let (words, start) = self
            .lengths
            .pop()
            .ok_or("a block ends that did not start")?;
        if self.pos / 32 - start != words {
            return Err(format!(
                "a block's length word says {words} words, not {}",
                self.pos / 32 - start
            ));
        }
        Ok(())
    }

    fn bytes(&mut self, n: u64) -> R<()> {
        if !self.pos.is_multiple_of(8) || n > self.bits_left() / 8 {
            return Err(format!("{n} raw bytes past the end"));
        }
        let at = (self.pos / 8) as usize;
        self.out.extend_from_slice(&self.data[at..at + n as usize]);
        self.pos += n * 8;
        self.room()
    }

    fn next_block(&mut self) -> R<bool> {
        let more = self.bits_left() >= 32 && {
            let at = self.pos;
            let id = self.read(2)?;
            self.pos = at;
            id == 1
        };
        if more {
            self.read(2)?;
        }
        self.emit(u64::from(more)).map(|_| more)
    }

    fn tail(&mut self) -> R<()> {
        let n = self.bits_left() / 8;
        self.emit(n)?;
        self.bytes(n)
    }
}

/// Tokens to bits.
struct Writer<'a> {
    tokens: &'a [u8],
    at: usize,
    out: Vec<u8>,
    /// Bits not yet a whole byte of `out`.
    acc: u64,
    nbits: u32,
    limit: u64,
    /// Open blocks: where each one's length word is in `out`.
    starts: Vec<usize>,
}

impl Writer<'_> {
    fn token(&mut self) -> R<u64> {
        let (mut v, mut shift) = (0u64, 0u32);
        loop {
            let b = *self
                .tokens
                .get(self.at)
                .ok_or("the tokens end inside a field")?;
            self.at += 1;
            if shift >= 64 || (shift == 63 && b & 0x7e != 0) {
                return Err("a token over 64 bits".into());
            }
            v |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
    }

    fn put(&mut self, v: u64, width: u32) -> R<()> {
        self.acc |= v << self.nbits;
        self.nbits += width;
        while self.nbits >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.nbits -= 8;
        }
        if self.out.len() as u64 > self.limit {
            return Err(format!("it makes more than {} bytes", self.limit));
        }
        Ok(())
    }

    fn bit_pos(&self) -> u64 {
        self.out.len() as u64 * 8 + u64::from(self.nbits)
    }

    fn flush_check(&self) -> R<()> {
        if self.at != self.tokens.len() {
            return Err("tokens left over after the bitstream's end".into());
        }
        Ok(())
    }
}

impl Side for Writer<'_> {
    fn fixed(&mut self, width: u32) -> R<u64> {
        let v = self.token()?;
        if width < 64 && v >> width != 0 {
            return Err(format!("{v} does not fit a {width}-bit field"));
        }
        self.put(v, width)?;
        Ok(v)
    }

    fn vbr(&mut self, width: u32) -> R<u64> {
        let v = self.token()?;
        let payload = width - 1;
        let mut rest = v;
        loop {
            let part = rest & ((1u64 << payload) - 1);
            rest >>= payload;
            let more = rest != 0;
            self.put(part | (u64::from(more) << payload), width)?;
            if !more {
                return Ok(v);
            }
        }
    }

    fn align(&mut self) -> R<()> {
        let pad = (32 - self.bit_pos() % 32) % 32;
        self.put(0, pad as u32)
    }

    fn block_start(&mut self) -> R<()> {
        self.starts.push(self.out.len());
        self.put(0, 32)
    }

    fn block_end(&mut self) -> R<()> {
        let at = self.starts.pop().ok_or("a block ends that did not start")?;
        let words = (self.out.len() - at - 4) / 4;
        let words = u32::try_from(words).map_err(|_| "a block over 2^32 words")?;
        self.out[at..at + 4].copy_from_slice(&words.to_le_bytes());
        Ok(())
    }

    fn bytes(&mut self, n: u64) -> R<()> {
        if self.nbits != 0 {
            return Err("raw bytes off a byte boundary".into());
        }
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.at.checked_add(n))
            .filter(|&e| e <= self.tokens.len())
            .ok_or("the tokens end inside raw bytes")?;
        if self.out.len() as u64 + n > self.limit {
            return Err(format!("it makes more than {} bytes", self.limit));
        }
        self.out.extend_from_slice(&self.tokens[self.at..end]);
        self.at = end;
        Ok(())
    }

    fn next_block(&mut self) -> R<bool> {
        match self.token()? {
            0 => Ok(false),
            1 => self.put(1, 2).map(|_| true),
            t => Err(format!("a top-level token {t}")),
        }
    }

    fn tail(&mut self) -> R<()> {
        let n = self.token()?;
        self.bytes(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tokens of a small bitstream: BLOCKINFO giving block 8 an abbreviation (fixed 3,
    /// an array of char6), block 8 defining its own (literal 7, VBR 6, blob) and using
    /// both, an unabbreviated record of the largest value, a nested empty block, then one
    /// byte after the last block.
    fn sample() -> Vec<u8> {
        let mut t = MAGIC.to_vec();
        let mut l = |vs: &[u64]| vs.iter().for_each(|&v| leb(&mut t, v));
        l(&[1, 0, 2]); // a top-level block: BLOCKINFO, abbreviation ids of 2 bits
        l(&[3, 1, 1, 8]); // SETBID 8
        l(&[2, 3, 0, 1, 3, 0, 3, 0, 4]); // [fixed 3, array, char6]
        l(&[0]); // END_BLOCK
        l(&[1, 8, 3]); // block 8, 3-bit ids
        l(&[2, 3, 1, 7, 0, 2, 6, 0, 5]); // [literal 7, vbr 6, blob]
        l(&[4, 5, 3, 1, 2, 3]); // the BLOCKINFO abbreviation
        l(&[5, 123_456, 4]); // its own, then the blob's bytes
        t.extend_from_slice(b"blob");
        let mut l = |vs: &[u64]| vs.iter().for_each(|&v| leb(&mut t, v));
        l(&[3, 9, 2, u64::MAX, 1]); // unabbreviated
        l(&[1, 9, 2, 0]); // a nested block, empty
        l(&[0]); // END_BLOCK of block 8
        l(&[0, 1]); // no more blocks; one byte of tail
        t.push(0x55);
        t
    }

    #[test]
    fn a_bitstream_round_trips_through_its_tokens() {
        let toks = sample();
        let file = bits(&toks, 1 << 20).expect("bits");
        assert!(file.starts_with(&MAGIC));
        assert_eq!(tokens(&file, 1 << 20).expect("tokens"), toks);
        assert_eq!(bits(&toks, 1 << 20).expect("bits again"), file);
    }

    #[test]
    fn abbreviations_held_at_once_are_bounded_and_freed_with_their_block() {
        // Blocks one after another, each defining 1,000 literal operands: more than the
        // bound in all, never more than 1,000 held.
        let mut t = MAGIC.to_vec();
        for _ in 0..(MAX_OPS / 1000 + 5) {
            [1, 8, 3, 2, 1000].iter().for_each(|&v| leb(&mut t, v));
            (0..1000).for_each(|_| t.extend_from_slice(&[1, 0]));
            leb(&mut t, 0);
        }
        t.extend_from_slice(&[0, 0]);
        let file = bits(&t, 1 << 24).expect("bits");
        assert_eq!(tokens(&file, 1 << 24).expect("tokens"), t);
        // One definition of more than the bound is refused before it is read.
        let mut t = MAGIC.to_vec();
        [1, 8, 3, 2, MAX_OPS as u64 + 1]
            .iter()
            .for_each(|&v| leb(&mut t, v));
        let e = bits(&t, 1 << 24).expect_err("too many operands");
        assert!(e.contains("abbreviation operands"), "{e}");
    }

    #[test]
    fn damage_is_refused_or_rebuilds_other_bytes() {
        let toks = sample();
        let file = bits(&toks, 1 << 20).expect("bits");
        for i in 4..file.len() {
            for bit in [1u8, 0x10, 0x80] {
                let mut bad = file.clone();
                bad[i] ^= bit;
                if let Ok(t) = tokens(&bad, 1 << 20) {
                    assert_eq!(bits(&t, 1 << 20).expect("rebuild"), bad, "byte {i}");
                }
            }
        }
        assert!(tokens(&file, 8).is_err());
        assert!(bits(&toks, 8).is_err());
        assert!(tokens(b"not bitcode", 1 << 20).is_err());
    }
}
