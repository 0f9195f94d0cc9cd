//! Gzip header normalisation.
//!
//! A gzip member header (RFC 1952) embeds an MTIME and, when `gzip` is run on a named
//! file without `-n`, the original file name (FNAME). Both vary between builds of the
//! same inputs, so two otherwise identical images would differ in their `.gz` files.
//!
//! We rewrite headers only: MTIME set to a fixed value, FNAME removed, FHCRC recomputed
//! when present. The deflate stream and the CRC32/ISIZE trailer are copied byte for
//! byte, never recompressed, so the decompressed content is identical and we do not
//! depend on any compressor's output being stable across versions. Each member is
//! still inflated (into a discarded scratch buffer) because a deflate stream's end can
//! only be found by decoding it, and doing so lets us check the trailer, so a damaged
//! file is reported rather than silently carried along with a "fixed" header.

use flate2::{Crc, Decompress, FlushDecompress, Status};

const MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
/// Bits RFC 1952 reserves; gzip refuses members that set them, so we do too.
const FRESERVED: u8 = 0xe0;
/// Bounds the work a hostile file of many tiny members can cause.
const MAX_MEMBERS: usize = 100_000;
/// Inflated bytes are only checksummed, then overwritten. 32 KiB stays in L1/L2
/// cache and measured slightly faster than 64 or 256 KiB over /usr/share's .gz files.
const SCRATCH: usize = 32 * 1024;

/// Why a file that starts like gzip could not be normalised (the caller leaves it
/// unchanged and reports it). `member` is the 0-based index of the member and
/// `offset` a byte offset into the whole input: where the offending field starts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GzipError {
    /// The first three bytes are not a gzip member's magic and deflate method.
    #[error("not gzip: the data does not start with 1f 8b 08")]
    NotGzip,
    /// The data ends inside a member.
    #[error(
        "member {member}: {reading} starting at byte {offset} is cut off by the end of the data"
    )]
    Truncated {
        /// 0-based index of the member.
        member: usize,
        /// Where the cut-off part starts, in bytes from the start of the input.
        offset: usize,
        /// The part being read ("header", "FNAME field", "deflate data", ...).
        reading: &'static str,
    },
    /// A member header names a compression method other than deflate.
    #[error("member {member} at byte {offset} has compression method {method}, not deflate (8)")]
    BadMethod {
        /// 0-based index of the member.
        member: usize,
        /// Where the CM byte is, in bytes from the start of the input.
        offset: usize,
        /// The CM byte the header carries.
        method: u8,
    },
    /// A member header sets flag bits RFC 1952 reserves.
    #[error("member {member} at byte {offset} sets reserved header flags {flags:#04x}")]
    ReservedFlags {
        /// 0-based index of the member.
        member: usize,
        /// Where the FLG byte is, in bytes from the start of the input.
        offset: usize,
        /// The whole FLG byte, reserved bits included.
        flags: u8,
    },
    /// A member's FHCRC does not match its header.
    #[error("member {member}: header CRC at byte {offset} is {stored:#06x}, not {computed:#06x}")]
    HeaderCrcMismatch {
        /// 0-based index of the member.
        member: usize,
        /// Where the FHCRC field starts, in bytes from the start of the input.
        offset: usize,
        /// The header CRC the file carries.
        stored: u16,
        /// The low 16 bits of the CRC32 of the header as read.
        computed: u16,
    },
    /// A member's deflate stream does not decode.
    #[error("member {member}: invalid deflate data starting at byte {offset}: {msg}")]
    BadDeflate {
        /// 0-based index of the member.
        member: usize,
        /// Where the member's deflate data starts, in bytes from the start of the input.
        offset: usize,
        /// The inflater's message.
        msg: String,
    },
    /// A member's CRC32 or ISIZE does not match its inflated data.
    #[error(
        "member {member}: {field} at byte {offset} is {stored:#010x}, computed {computed:#010x}"
    )]
    TrailerMismatch {
        /// 0-based index of the member.
        member: usize,
        /// Where the mismatched trailer field starts, in bytes from the start of the input.
        offset: usize,
        /// Which trailer field: "CRC32" or "ISIZE".
        field: &'static str,
        /// The value the file carries.
        stored: u32,
        /// The value of the inflated data (ISIZE: its length modulo 2^32).
        computed: u32,
    },
    /// Bytes after the last member that are neither another member nor zero padding.
    #[error("{len} bytes after the last member, at byte {offset}, are not zero padding")]
    TrailingGarbage {
        /// Where they start, in bytes from the start of the input.
        offset: usize,
        /// How many bytes there are, to the end of the input.
        len: usize,
    },
    /// The file has more members than the normaliser will work through (a hostile
    /// file of many tiny members).
    #[error("more than {limit} gzip members")]
    TooManyMembers {
        /// The most members a file may have.
        limit: usize,
    },
}

/// True when `data` starts with the gzip magic and deflate method (1f 8b 08).
pub fn looks_like_gzip(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// Rewrites every member's header so MTIME = `mtime` (callers pass 0) and FNAME is
/// removed, recomputing FHCRC when present; FEXTRA, FCOMMENT, FTEXT, XFL, OS, the
/// deflate data and the CRC32/ISIZE trailer are copied verbatim. Every member's
/// trailer is checked against its inflated data. Zero bytes after the last member
/// (padding, which gzip tolerates) are kept; anything else there is an error.
///
/// Returns `Ok(None)` when nothing needed to change (the common case: Debian builds
/// its files with `gzip -n`), `Ok(Some(new_bytes))` otherwise.
pub fn normalize(data: &[u8], mtime: u32) -> Result<Option<Vec<u8>>, GzipError> {
    if !looks_like_gzip(data) {
        return Err(GzipError::NotGzip);
    }
    let mut inflater = Inflater::new();
    // Members before the first one that needs rewriting are copied as one block, so
    // only the members from there on are remembered, and an unchanged file (the
    // usual case) costs no allocation beyond the inflater's.
    let mut first_changed: Option<usize> = None;
    let mut rewrites: Vec<(Header, usize)> = Vec::new();
    let mut pos = 0;
    let mut member = 0;
    while pos < data.len() {
        let rest = data.get(pos..).unwrap_or_default();
        if !rest.starts_with(&MAGIC[..2]) {
            if rest.iter().all(|&b| b == 0) {
                break;
            }
            return Err(GzipError::TrailingGarbage {
                offset: pos,
                len: rest.len(),
            });
        }
        if member == MAX_MEMBERS {
            return Err(GzipError::TooManyMembers { limit: MAX_MEMBERS });
        }
        let header = Header::parse(data, pos, member)?;
        let end = inflater.check_body(data, header.body, member)?;
        if header.needs_rewrite(mtime) && first_changed.is_none() {
            first_changed = Some(pos);
        }
        if first_changed.is_some() {
            rewrites.push((header, end));
        }
        pos = end;
        member += 1;
    }
    let Some(first) = first_changed else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(data.get(..first).unwrap_or_default());
    for (header, end) in &rewrites {
        header.write(data, mtime, &mut out);
        out.extend_from_slice(data.get(header.body..*end).unwrap_or_default());
    }
    out.extend_from_slice(data.get(pos..).unwrap_or_default());
    Ok(Some(out))
}

/// A member's header: the fields a rewrite keeps, and where the variable-length ones
/// lie in the input (in bounds once `parse` has returned).
#[derive(Clone, Copy, Debug)]
struct Header {
    flags: u8,
    mtime: u32,
    xfl_os: [u8; 2],
    /// XLEN and the extra field itself, verbatim.
    extra: Option<(usize, usize)>,
    /// The comment including its terminating NUL.
    comment: Option<(usize, usize)>,
    /// Where the deflate data starts.
    body: usize,
}

/// Reads a member's fields in order, turning every out-of-bounds read into
/// [`GzipError::Truncated`].
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    member: usize,
}

impl Reader<'_> {
    fn truncated(&self, reading: &'static str) -> GzipError {
        GzipError::Truncated {
            member: self.member,
            offset: self.pos,
            reading,
        }
    }

    fn array<const N: usize>(&mut self, reading: &'static str) -> Result<[u8; N], GzipError> {
        let field: [u8; N] = self
            .pos
            .checked_add(N)
            .and_then(|end| self.data.get(self.pos..end))
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| self.truncated(reading))?;
        self.pos += N;
        Ok(field)
    }

    fn skip(&mut self, n: usize, reading: &'static str) -> Result<(), GzipError> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.data.len() => {
                self.pos = end;
                Ok(())
            }
            _ => Err(self.truncated(reading)),
        }
    }

    /// A zero-terminated field; returns its range including the NUL.
    fn zero_terminated(&mut self, reading: &'static str) -> Result<(usize, usize), GzipError> {
        let start = self.pos;
        let len = self
            .data
            .get(start..)
            .and_then(|rest| rest.iter().position(|&b| b == 0))
            .ok_or_else(|| self.truncated(reading))?;
        self.pos = start + len + 1;
        Ok((start, self.pos))
    }
}

impl Header {
    /// Parses the header of the member at `start`, whose first two bytes the caller
    /// has seen to be the gzip magic.
    fn parse(data: &[u8], start: usize, member: usize) -> Result<Header, GzipError> {
        let mut r = Reader {
            data,
            pos: start,
            member,
        };
        let [_, _, method, flags, m0, m1, m2, m3, xfl, os] = r.array::<10>("header")?;
        if method != MAGIC[2] {
            return Err(GzipError::BadMethod {
                member,
                offset: start + 2,
                method,
            });
        }
        if flags & FRESERVED != 0 {
            return Err(GzipError::ReservedFlags {
                member,
                offset: start + 3,
                flags,
            });
        }
        let mut extra = None;
        if flags & FEXTRA != 0 {
            let from = r.pos;
            let xlen = u16::from_le_bytes(r.array("FEXTRA length")?);
            r.skip(usize::from(xlen), "FEXTRA field")?;
            extra = Some((from, r.pos));
        }
        if flags & FNAME != 0 {
            r.zero_terminated("FNAME field")?;
        }
        let comment = if flags & FCOMMENT != 0 {
            Some(r.zero_terminated("FCOMMENT field")?)
        } else {
            None
        };
        if flags & FHCRC != 0 {
            let at = r.pos;
            let stored = u16::from_le_bytes(r.array("FHCRC field")?);
            let computed = crc16(data.get(start..at).unwrap_or_default());
            if stored != computed {
                return Err(GzipError::HeaderCrcMismatch {
                    member,
                    offset: at,
                    stored,
                    computed,
                });
            }
        }
        Ok(Header {
            flags,
            mtime: u32::from_le_bytes([m0, m1, m2, m3]),
            xfl_os: [xfl, os],
            extra,
            comment,
            body: r.pos,
        })
    }

    fn needs_rewrite(&self, mtime: u32) -> bool {
        self.mtime != mtime || self.flags & FNAME != 0
    }

    fn write(&self, data: &[u8], mtime: u32, out: &mut Vec<u8>) {
        let from = out.len();
        out.extend_from_slice(&MAGIC);
        out.push(self.flags & !FNAME);
        out.extend_from_slice(&mtime.to_le_bytes());
        out.extend_from_slice(&self.xfl_os);
        for field in [self.extra, self.comment].into_iter().flatten() {
            out.extend_from_slice(data.get(field.0..field.1).unwrap_or_default());
        }
        if self.flags & FHCRC != 0 {
            let crc = crc16(out.get(from..).unwrap_or_default());
            out.extend_from_slice(&crc.to_le_bytes());
        }
    }
}

/// FHCRC is the low 16 bits of the CRC32 of the header bytes before it.
fn crc16(header: &[u8]) -> u16 {
    let mut crc = Crc::new();
    crc.update(header);
    (crc.sum() & 0xffff) as u16
}

/// One raw inflater and scratch buffer, reused across the members of a file.
struct Inflater {
    inflate: Decompress,
    scratch: Vec<u8>,
}

impl Inflater {
    fn new() -> Inflater {
        Inflater {
            inflate: Decompress::new(false),
            scratch: vec![0; SCRATCH],
        }
    }

    /// Inflates the deflate stream starting at `body`, checks the trailer after it,
    /// and returns where the member ends.
    fn check_body(&mut self, data: &[u8], body: usize, member: usize) -> Result<usize, GzipError> {
        self.inflate.reset(false);
        let input = data.get(body..).unwrap_or_default();
        let mut crc = Crc::new();
        let mut consumed = 0usize;
        loop {
            let rest = input.get(consumed..).unwrap_or_default();
            let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
            let status = self
                .inflate
                .decompress(rest, &mut self.scratch, FlushDecompress::None)
                .map_err(|e| GzipError::BadDeflate {
                    member,
                    offset: body,
                    msg: e.to_string(),
                })?;
            let read = usize::try_from(self.inflate.total_in() - in_before).unwrap_or(usize::MAX);
            let written =
                usize::try_from(self.inflate.total_out() - out_before).unwrap_or(usize::MAX);
            crc.update(self.scratch.get(..written).unwrap_or_default());
            consumed = consumed.saturating_add(read);
            match status {
                Status::StreamEnd => break,
                // All remaining input was offered and the output buffer had room, so
                // no progress means the stream needs bytes that are not there.
                Status::Ok | Status::BufError if read == 0 && written == 0 => {
                    return Err(GzipError::Truncated {
                        member,
                        offset: body,
                        reading: "deflate data",
                    })
                }
                Status::Ok | Status::BufError => {}
            }
        }
        let trailer = body.saturating_add(consumed);
        let mut r = Reader {
            data,
            pos: trailer,
            member,
        };
        let [c0, c1, c2, c3, s0, s1, s2, s3] = r.array("CRC32/ISIZE trailer")?;
        let stored_crc = u32::from_le_bytes([c0, c1, c2, c3]);
        let stored_size = u32::from_le_bytes([s0, s1, s2, s3]);
        if stored_crc != crc.sum() {
            return Err(GzipError::TrailerMismatch {
                member,
                offset: trailer,
                field: "CRC32",
                stored: stored_crc,
                computed: crc.sum(),
            });
        }
        // ISIZE is the uncompressed size modulo 2^32.
        let size = (self.inflate.total_out() & 0xffff_ffff) as u32;
        if stored_size != size {
            return Err(GzipError::TrailerMismatch {
                member,
                offset: trailer + 4,
                field: "ISIZE",
                stored: stored_size,
                computed: size,
            });
        }
        Ok(r.pos)
    }
}

#[cfg(test)]
mod tests;
