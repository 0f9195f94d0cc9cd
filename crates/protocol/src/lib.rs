//! syncer-protocol: the wire between the controller and an agent (`syncer serve`):
//! every message and its framing, versioned (this module), and what both ends of it
//! share: the field codec ([`wire`]), the encodings file content travels in
//! ([`encoding`]), the comparison of a host's tree with an image ([`compare`]), reading
//! host files ([`hostfs`]), a byte-rate limit ([`ratelimit`]), and the [`error`] type.
//!
//! The modules are layered: each uses only modules listed before it here (no cycle;
//! `.ci/module-cycles` checks it). [`error`]; [`ratelimit`]; [`hostfs`]; [`wire`];
//! [`encoding`]; this module's messages (`errors`, [`item`], `messages`); [`compare`].
//!
//! A frame is a little-endian `u32` body length, then the body: one tag byte (bit 7 set
//! when the rest is zstd-compressed) and the message's fields. Lengths are checked
//! against [`MAX_FRAME`] before anything is allocated; inside a body, every length and
//! count is checked against the bytes that remain (and lists reserve at most a few
//! thousand items ahead), so a hostile or truncated stream cannot make either side
//! allocate more than a frame beyond what arrived, nor a message in pieces more than
//! [`MAX_INFLATION`] times what arrived. The first frame of a session is
//! always [`Msg::Hello`], whose layout never changes (magic, then version), so a peer of
//! another version gets a clear error instead of garbage. A message whose encoding is
//! larger than [`PIECE`] (the manifest or difference list of an image with millions of
//! entries) is sent as consecutive pieces of its encoding in `Part` frames, the last in
//! a `PartEnd`, and reassembled up to [`MAX_MESSAGE`] as the pieces arrive.
//!
//! Session (controller → agent, agent → controller):
//! ```text
//! Hello            → Welcome | Error
//! Status           → Differences                 (status, diff)
//! Target           → Differences                 (push: what differs from the image)
//! SignatureRequest → Signatures                  (rsync deltas; optional)
//! Stage, [Fetch → Fetched], (Put Data* | Pack Data*)*, Commit
//!                  → Committed, TriggerRan*, Stale, Done | Error
//! Bye
//! ```
//!
//! Here: the framing, pieces and limits, and [`Conn`]. The messages and the one table
//! of their tags are in `messages.rs` (each message a struct whose declaration is its
//! codec); the field codec under them, the `Wire` trait, is [`crate::wire`]. How file
//! content is encoded inside `Data` frames is [`crate::encoding`], which declares the
//! wire forms of [`Encoding`](crate::encoding::Encoding) and [`PackEntry`].

#![warn(missing_docs)]

pub mod client;
pub mod compare;
pub mod encoding;
pub mod error;
pub mod hostfs;
pub mod ratelimit;
pub mod wire;

mod errors;
mod fetch;
pub mod item;
mod messages;

pub use crate::encoding::pack::PackEntry;
pub use crate::error::MidCommit;
pub use errors::ErrorMessage;
pub use fetch::*;
pub use messages::*;

use crate::error::{Error, Result};
use crate::wire::Enc;
use std::io::{Read, Write};

/// The version both ends speak, sent in `Hello` and `Welcome`: any change to a message's
/// encoding raises it, and a peer of another version is refused.
pub const PROTOCOL_VERSION: u32 = 11;
/// Largest frame body either side accepts.
pub const MAX_FRAME: usize = 64 << 20;
/// A message whose encoding is larger than this travels as several frames (`Part`
/// frames, then a `PartEnd`), each piece compressed on its own: manifests and
/// difference lists of images with millions of entries.
pub const PIECE: usize = 16 << 20;
/// Largest message (all its pieces together) either side accepts: the largest manifest
/// an image may have ([`imager_core::contract::MAX_MANIFEST`], 1 GiB). A host that has
/// nothing gets a difference list smaller than the manifest (paths without their
/// metadata), so every image imager stores can be pushed; only a host that differs in
/// more than the image holds (millions of extra files) can need more, and is told so
/// with the numbers.
pub const MAX_MESSAGE: usize = imager_core::contract::MAX_MANIFEST;
/// How much one compressed piece of a large message may inflate: real manifests and
/// difference lists compress some 5 to 150 times; a run of zeros, 30,000 times. So a
/// peer must send at least 1/1024 of what it makes the other side hold.
pub const MAX_INFLATION: usize = 1024;
const TAG_PART: u8 = 30;
const TAG_PART_END: u8 = 31;
/// The largest content payload (a `Put` or a mirror's blob) an agent holds in memory:
/// twice the largest file the in-memory encodings carry
/// ([`crate::encoding::chunked::LARGE`]); a larger file's records are streamed.
pub const MAX_HELD: u64 = 2 * crate::encoding::chunked::LARGE;
/// File content travels in `Data` frames of at most this size.
pub const CHUNK: usize = 1 << 20;
/// Bodies larger than this are compressed.
const COMPRESS_ABOVE: usize = 4096;
const COMPRESSED: u8 = 0x80;

impl Msg {
    /// The frame body: tag and fields, compressed when large (never the Hello). A message
    /// larger than a frame is an error here; [`Conn::send`] sends it in pieces.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let (tag, fields) = self.encode_raw();
        frame_body(self, tag, fields)
    }

    /// The tag and fields, uncompressed, of any size.
    fn encode_raw(&self) -> (u8, Vec<u8>) {
        let mut e = Enc::default();
        self.encode_fields(&mut e);
        (self.tag(), e.0)
    }

    /// A message from one frame's body (inflated when compressed); bytes left over after
    /// its fields are an error. A message sent in pieces is [`Conn::recv_opt`]'s to join.
    pub fn decode(body: &[u8]) -> Result<Msg> {
        let (tag, fields) = inflate(body)?;
        Msg::decode_fields(tag, &fields)
    }
}

/// One frame's body for `tag` and `fields`: compressed when large (never a Hello or file
/// content), checked against the frame limit at both its inflated and its sent size.
fn frame_body(m: &Msg, tag: u8, fields: Vec<u8>) -> Result<Vec<u8>> {
    // The receiver bounds the inflated size too: check what it will see.
    if fields.len() + 1 > MAX_FRAME {
        return Err(Error::protocol(format!(
            "{} message of {} bytes is larger than a frame ({MAX_FRAME})",
            m.name(),
            fields.len() + 1
        )));
    }
    let mut body = Vec::with_capacity(fields.len() + 1);
    if fields.len() > COMPRESS_ABOVE && !matches!(m, Msg::Hello { .. } | Msg::Data { .. }) {
        body.push(tag | COMPRESSED);
        body.extend(
            zstd::bulk::compress(&fields, 3)
                .map_err(|err| Error::protocol(format!("compressing a frame: {err}")))?,
        );
    } else {
        body.push(tag);
        body.extend(fields);
    }
    if body.len() > MAX_FRAME {
        return Err(Error::protocol(format!(
            "{} message of {} bytes is larger than a frame ({MAX_FRAME})",
            m.name(),
            body.len()
        )));
    }
    Ok(body)
}

/// One end of a session: frames over any byte streams, counting bytes each way, in all
/// and by message (so that a report can say where the bytes went).
pub struct Conn<R, W> {
    r: R,
    w: W,
    /// Bytes written, frames' length prefixes included.
    pub sent: u64,
    /// Bytes read, frames' length prefixes included.
    pub received: u64,
    /// Bytes on the wire (frames included) by message name: sent, received.
    pub by_message: std::collections::BTreeMap<&'static str, [u64; 2]>,
    /// [`MAX_MESSAGE`]; smaller in the unit tests, which cannot build a GiB message.
    max_message: usize,
}

/// A frame body's tag (without the compression bit) and its fields, inflated.
fn inflate(body: &[u8]) -> Result<(u8, std::borrow::Cow<'_, [u8]>)> {
    let (&tag, rest) = body
        .split_first()
        .ok_or_else(|| Error::protocol("empty frame"))?;
    if tag & COMPRESSED != 0 {
        let inflated = zstd::bulk::decompress(rest, MAX_FRAME)
            .map_err(|e| Error::protocol(format!("bad compressed frame: {e}")))?;
        Ok((tag & !COMPRESSED, inflated.into()))
    } else {
        Ok((tag, rest.into()))
    }
}

impl<R: Read, W: Write> Conn<R, W> {
    /// A session that reads frames from `r` and writes them to `w`, its counts at zero.
    pub fn new(r: R, w: W) -> Self {
        Conn {
            r,
            w,
            sent: 0,
            received: 0,
            by_message: Default::default(),
            max_message: MAX_MESSAGE,
        }
    }

    #[cfg(test)]
    fn with_max_message(mut self, n: usize) -> Self {
        self.max_message = n;
        self
    }

    /// Sends `m` (in pieces when large), then flushes, except after `Put`, `Pack` and
    /// `Data`, whose content follows at once.
    pub fn send(&mut self, m: &Msg) -> Result<()> {
        let before = self.sent;
        self.send_frames(m)?;
        self.by_message.entry(m.name()).or_default()[0] += self.sent - before;
        if !matches!(m, Msg::Put { .. } | Msg::Pack { .. } | Msg::Data { .. }) {
            self.w.flush().map_err(Error::connection)?;
        }
        Ok(())
    }

    fn send_frames(&mut self, m: &Msg) -> Result<()> {
        let (tag, fields) = m.encode_raw();
        if fields.len() < PIECE {
            self.frame(&frame_body(m, tag, fields)?)?;
        } else {
            // In pieces of the message's encoding: its tag, then its fields.
            // Refused before a frame is written, so the peer hears why (the agent sends
            // this error in its place) instead of waiting for the rest.
            if fields.len() + 1 > self.max_message {
                return Err(Error::protocol(format!(
                    "the {} message is {} bytes, more than the limit of {} bytes one \
                     message may carry",
                    m.name(),
                    fields.len() + 1,
                    self.max_message
                )));
            }
            let mut raw = Vec::with_capacity(fields.len() + 1);
            raw.push(tag);
            raw.extend_from_slice(&fields);
            drop(fields);
            let pieces = raw.len().div_ceil(PIECE);
            for (i, piece) in raw.chunks(PIECE).enumerate() {
                let t = if i + 1 == pieces {
                    TAG_PART_END
                } else {
                    TAG_PART
                };
                self.frame(&frame_body(m, t, piece.to_vec())?)?;
            }
        }
        Ok(())
    }

    fn frame(&mut self, body: &[u8]) -> Result<()> {
        self.w
            .write_all(&(body.len() as u32).to_le_bytes())
            .map_err(Error::connection)?;
        self.w.write_all(body).map_err(Error::connection)?;
        self.sent += 4 + body.len() as u64;
        Ok(())
    }

    /// Flushes what `send` left buffered (after content messages).
    pub fn flush(&mut self) -> Result<()> {
        self.w.flush().map_err(Error::connection)
    }

    /// The next message; `Ok(None)` at a clean end of stream (between messages).
    pub fn recv_opt(&mut self) -> Result<Option<Msg>> {
        let before = self.received;
        let m = self.recv_message()?;
        if let Some(m) = &m {
            self.by_message.entry(m.name()).or_default()[1] += self.received - before;
        }
        Ok(m)
    }

    fn recv_message(&mut self) -> Result<Option<Msg>> {
        let Some(body) = self.recv_frame()? else {
            return Ok(None);
        };
        let (tag, fields) = inflate(&body)?;
        if tag != TAG_PART && tag != TAG_PART_END {
            return Msg::decode_fields(tag, &fields).map(Some);
        }
        // A message in pieces: grown as they arrive, never beyond the limit.
        let mut raw: Vec<u8> = Vec::new();
        let (mut t, mut piece) = (tag, fields.into_owned());
        let mut wire = body.len();
        loop {
            if piece.len() > PIECE || piece.len() > wire.saturating_mul(MAX_INFLATION) {
                return Err(Error::protocol(format!(
                    "a piece of a message inflates from {wire} to {} bytes",
                    piece.len()
                )));
            }
            if raw.len() + piece.len() > self.max_message {
                return Err(Error::protocol(format!(
                    "the peer sent a message in pieces of more than {} bytes (the limit \
                     one message may carry), {} bytes before its end",
                    self.max_message,
                    raw.len() + piece.len()
                )));
            }
            raw.extend_from_slice(&piece);
            if t == TAG_PART_END {
                break;
            }
            let next = self
                .recv_frame()?
                .ok_or_else(|| Error::protocol("the stream ended inside a message in pieces"))?;
            wire = next.len();
            let (nt, nf) = inflate(&next)?;
            if nt != TAG_PART && nt != TAG_PART_END {
                return Err(Error::protocol("a message in pieces was interrupted"));
            }
            (t, piece) = (nt, nf.into_owned());
        }
        let (&tag, fields) = raw
            .split_first()
            .ok_or_else(|| Error::protocol("an empty message in pieces"))?;
        if tag == TAG_PART || tag == TAG_PART_END || tag & COMPRESSED != 0 {
            return Err(Error::protocol("a message in pieces holds no message"));
        }
        Msg::decode_fields(tag, fields).map(Some)
    }

    /// One frame's body; `Ok(None)` at a clean end of stream (between frames).
    fn recv_frame(&mut self) -> Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match self.r.read(&mut len[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(Error::protocol("the stream ended inside a frame header")),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::connection(e)),
            }
        }
        let n = u32::from_le_bytes(len) as usize;
        if n > MAX_FRAME {
            return Err(Error::protocol(format!(
                "frame of {n} bytes announced, the limit is {MAX_FRAME}"
            )));
        }
        let mut body = vec![0u8; n];
        self.r.read_exact(&mut body).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::protocol(format!("the stream ended inside a frame of {n} bytes"))
            } else {
                Error::connection(e)
            }
        })?;
        self.received += 4 + n as u64;
        Ok(Some(body))
    }

    /// The next message; the end of the stream is an error naming what was expected.
    pub fn recv(&mut self, expecting: &str) -> Result<Msg> {
        self.recv_opt()?.ok_or_else(|| {
            Error::Connection(format!("the stream ended while waiting for {expecting}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imager_core::{Entry, Hash, Kind};

    #[test]
    fn a_message_larger_than_a_frame_travels_in_pieces() {
        let changes: Vec<Change> = (0..400_000u32)
            .map(|i| Change {
                path: format!("/{}/{i:08}", "p".repeat(200)).into_bytes(),
                kind: ChangeKind::Add,
                host: None,
                what: 0,
            })
            .collect();
        let m = Msg::Differences(Differences {
            image: None,
            changes,
            have: Vec::new(),
            scan: ScanStats::default(),
            kept: Vec::new(),
            stale: Vec::new(),
            unmanaged: Vec::new(),
        });
        let mut wire = Vec::new();
        let mut c = Conn::new(&[][..], &mut wire);
        c.send(&m).expect("send");
        c.send(&Msg::Bye).expect("send");
        // One frame cannot hold it.
        assert!(m.encode().is_err());
        let mut r = Conn::new(&wire[..], std::io::sink());
        assert_eq!(r.recv("big").expect("recv"), m);
        assert_eq!(r.recv("bye").expect("recv"), Msg::Bye);
        // A piece that inflates a thousandfold (zeros decode as a huge list): refused
        // before it is held or decoded.
        let zeros = zstd::bulk::compress(&vec![0u8; PIECE], 19).expect("compress");
        let mut bomb = vec![TAG_PART_END | COMPRESSED];
        bomb.extend(&zeros);
        let mut wire2 = (bomb.len() as u32).to_le_bytes().to_vec();
        wire2.extend(&bomb);
        let e = Conn::new(&wire2[..], std::io::sink())
            .recv("bomb")
            .expect_err("a bomb");
        assert!(e.to_string().contains("inflates"), "{e}");
        // Beyond the message limit (a smaller one here: a GiB message is too heavy for a
        // unit test): refused by the sender before any frame, and by the receiver as the
        // pieces arrive, each naming the limit and the size.
        let limit = 3 * PIECE;
        let mut none = Vec::new();
        let e = Conn::new(&[][..], &mut none)
            .with_max_message(limit)
            .send(&m)
            .expect_err("over the limit");
        let size = m.encode_raw().1.len() + 1;
        assert!(
            e.to_string().contains(&format!(
                "the Differences message is {size} bytes, more than the limit of {limit} bytes"
            )),
            "{e}"
        );
        assert!(none.is_empty(), "nothing is sent");
        let e = Conn::new(&wire[..], std::io::sink())
            .with_max_message(limit)
            .recv("big")
            .expect_err("over the limit");
        assert!(
            e.to_string().contains(&format!("more than {limit} bytes"))
                && e.to_string()
                    .contains(&format!("{} bytes before its end", 4 * PIECE)),
            "{e}"
        );
        // Cut short inside the pieces: an error, not a hang or a short message.
        let mut r = Conn::new(&wire[..wire.len() / 2], std::io::sink());
        assert!(r.recv("big").is_err());
    }

    fn roundtrip(m: Msg) {
        let body = m.encode().expect("encode");
        assert_eq!(Msg::decode(&body).expect("decode"), m);
    }

    #[test]
    fn messages_round_trip() {
        let e = Entry {
            path: b"/usr/bin/ping".to_vec(),
            kind: Kind::File {
                size: 9,
                hash: Hash::of(b"x"),
            },
            mode: 0o4755,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            xattrs: vec![(b"security.capability".to_vec(), vec![1, 2, 3])],
        };
        roundtrip(Msg::Hello(Hello { version: 1 }));
        roundtrip(Msg::Differences(Differences {
            image: Some(Hash::of(b"i")),
            changes: (0..2000)
                .map(|i| Change {
                    path: format!("/p/{i}").into_bytes(),
                    kind: ChangeKind::Content,
                    host: Some(e.clone()),
                    what: 0,
                })
                .collect(),
            have: vec![(Hash::of(b"y"), b"/a".to_vec())],
            scan: ScanStats::default(),
            kept: vec![
                Kept {
                    path: b"/srv".to_vec(),
                    why: KeptWhy::Mount,
                },
                Kept {
                    path: b"/home".to_vec(),
                    why: KeptWhy::LocalStateSymlink,
                },
            ],
            stale: vec![StaleUnit {
                unit: "nginx.service".into(),
                processes: vec![StaleProcess {
                    pid: 7,
                    comm: "nginx".into(),
                }],
                more_processes: 0,
                files: vec![b"/usr/sbin/nginx".to_vec()],
                more_files: 2,
            }],
            unmanaged: Vec::new(),
        }));
        roundtrip(Msg::Put(Put {
            path: b"/a".to_vec(),
            encoding: crate::encoding::Encoding::LocalCopy {
                from: b"/b".to_vec(),
            },
            len: 0,
        }));
        roundtrip(Msg::TriggerRan(TriggerRun {
            name: "t".into(),
            status: Some(-1),
            timed_out: false,
            seconds: 0.5,
            output: "ok".into(),
            skipped: None,
        }));
    }

    #[test]
    fn hostile_counts_and_lengths_are_refused_before_allocating() {
        // A Differences message claiming 2^32-1 changes in a 9-byte body.
        let mut body = vec![6u8, 0];
        body.extend(u32::MAX.to_le_bytes());
        let err = Msg::decode(&body).unwrap_err().to_string();
        assert!(err.contains("cannot fit"), "{err}");
        // A bytes field claiming 1 GiB.
        let mut body = vec![3u8];
        body.extend((1u32 << 30).to_le_bytes());
        let err = Msg::decode(&body).unwrap_err().to_string();
        assert!(err.contains("runs past the end"), "{err}");
        // An oversized frame header.
        let mut stream = Vec::new();
        stream.extend(((MAX_FRAME + 1) as u32).to_le_bytes());
        let mut c = Conn::new(&stream[..], Vec::new());
        let err = c.recv("x").unwrap_err().to_string();
        assert!(err.contains("limit"), "{err}");
        // A truncated frame.
        let mut stream = Vec::new();
        stream.extend(100u32.to_le_bytes());
        stream.extend([1u8; 10]);
        let mut c = Conn::new(&stream[..], Vec::new());
        let err = c.recv("x").unwrap_err().to_string();
        assert!(err.contains("ended inside a frame"), "{err}");
    }
}
