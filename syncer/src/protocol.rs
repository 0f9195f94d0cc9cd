//! The wire protocol between the controller and an agent (`syncer serve`): every message
//! and its framing, versioned. Nothing else lives here.
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
//! Stage, (Put Data*)*, Commit → Committed, TriggerRan*, Done | Error
//! Bye
//! ```

use crate::error::{Error, Result};
use imager::{Entry, Hash, Kind};
use serde::Serialize;
use std::io::{Read, Write};

pub const MAGIC: &[u8; 4] = b"SYNC";
pub const PROTOCOL_VERSION: u32 = 2;
/// Largest frame body either side accepts.
pub const MAX_FRAME: usize = 64 << 20;
/// A message whose encoding is larger than this travels as several frames (`Part`
/// frames, then a `PartEnd`), each piece compressed on its own: manifests and
/// difference lists of images with millions of entries.
pub const PIECE: usize = 16 << 20;
/// Largest message (all its pieces together) either side accepts: about seven million
/// entries' difference list.
pub const MAX_MESSAGE: usize = 1 << 30;
/// Items reserved ahead of a list from its announced count: the rest grows as items
/// decode (a count is checked against the bytes left, but each item decodes into a
/// larger value than its encoding).
const PREALLOC: usize = 4096;
/// How much one compressed piece of a large message may inflate: real manifests and
/// difference lists compress some 5 to 150 times; a run of zeros, 30,000 times. So a
/// peer must send at least 1/1024 of what it makes the other side hold.
pub const MAX_INFLATION: usize = 1024;
const TAG_PART: u8 = 30;
const TAG_PART_END: u8 = 31;
/// Largest file an agent applies a delta to (base and result are held in memory); a
/// larger file travels whole.
pub const MAX_DELTA_FILE: u64 = 4 << 30;
/// File content travels in `Data` frames of at most this size.
pub const CHUNK: usize = 1 << 20;
/// Bodies larger than this are compressed.
const COMPRESS_ABOVE: usize = 4096;
const COMPRESSED: u8 = 0x80;

/// How the agent gets a staged file's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The content is on the host already, at this path.
    LocalCopy { from: Vec<u8> },
    /// zstd-compressed whole content.
    Whole,
    /// zstd with the host's current file at the path as reference (`--patch-from`).
    ZstdDelta,
    /// An rsync delta (fast_rsync) against the host's current file, zstd-compressed.
    RsyncDelta,
}

/// How a path on the host differs from the image it is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// The host lacks the path.
    Add,
    /// Both are files; the content differs (metadata may too).
    Content,
    /// Something else must be put in its place: another kind, another symlink target,
    /// device number or hard-link target.
    Replace,
    /// Same kind and content; owner, mode, xattrs or mtime differ.
    Meta,
    /// The host has a path the image lacks.
    Delete,
}

impl ChangeKind {
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Add => 'A',
            ChangeKind::Content => 'M',
            ChangeKind::Replace => 'R',
            ChangeKind::Meta => 'm',
            ChangeKind::Delete => 'D',
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub path: Vec<u8>,
    pub kind: ChangeKind,
    /// The host's entry at the path (with its content hash), if it has one.
    pub host: Option<Entry>,
}

/// Why a host path is left alone by every push (it and everything below it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeptWhy {
    /// A mount point (another filesystem, or a bind mount of the root's own).
    Mount,
    /// A symlink at or above a local-state path: the host's own layout.
    LocalStateSymlink,
}

/// A host path the scan found and every push leaves alone.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Kept {
    #[serde(serialize_with = "crate::protocol::escaped")]
    pub path: Vec<u8>,
    pub why: KeptWhy,
}

/// Serializes a path as the project's escaped text.
pub fn escaped<S: serde::Serializer>(p: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&imager::tree::escape::escape(p))
}

/// The image manifest as sent to an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestData {
    /// zstd-compressed (once per image, at a high level, by the controller).
    Zstd(Vec<u8>),
    /// A zstd delta from the manifest of the image the agent says it has.
    Delta { base: Hash, delta: Vec<u8> },
    /// The image the agent says it has: it holds the manifest already.
    Recorded,
}

/// The outcome of one trigger.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TriggerRun {
    pub name: String,
    /// Exit status; `None` if it was killed (timeout or signal).
    pub status: Option<i32>,
    pub timed_out: bool,
    pub seconds: f64,
    pub output: String,
}

/// What the agent did with a commit.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Committed {
    pub ops: u64,
    pub stage_seconds: f64,
    pub commit_seconds: f64,
}

/// What a scan took.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ScanStats {
    pub entries: u64,
    pub hashed_files: u64,
    pub hashed_bytes: u64,
    pub cached_files: u64,
    pub seconds: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Msg {
    Hello {
        version: u32,
    },
    Welcome {
        version: u32,
        /// The agent's crate version and the blake3 of its executable.
        agent: String,
        exe: Hash,
        /// The image the host was last synced to, and the one before it.
        image: Option<Hash>,
        previous: Option<Hash>,
        /// A commit interrupted earlier that this session finished first.
        rolled_forward: bool,
        /// An unfinished commit (to this image) the agent was told to drop.
        abandoned: Option<Hash>,
    },
    Error {
        message: String,
    },
    Status {
        verify: bool,
    },
    Target {
        image: Hash,
        manifest: ManifestData,
        local_state: Vec<String>,
        /// The image's /usr/lib/imager/triggers.toml (empty when it has none).
        triggers: Vec<u8>,
        verify: bool,
        /// Only look: write nothing on the host, not even the hash cache.
        dry_run: bool,
        /// Record this as the host's previous image (a rollback puts back what it was);
        /// `None`: the image the host had.
        previous: Option<Option<Hash>>,
    },
    Differences {
        image: Option<Hash>,
        changes: Vec<Change>,
        /// For content the image needs: a host path that already holds it.
        have: Vec<(Hash, Vec<u8>)>,
        scan: ScanStats,
        /// Mount points and local-state symlinks the scan left alone.
        kept: Vec<Kept>,
    },
    SignatureRequest {
        paths: Vec<Vec<u8>>,
    },
    Signatures {
        sigs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    Stage {
        files: u64,
        bytes: u64,
    },
    Put {
        path: Vec<u8>,
        source: Source,
        len: u64,
    },
    Data {
        bytes: Vec<u8>,
    },
    Commit,
    Committed(Committed),
    TriggerRan(TriggerRun),
    Done,
    Bye,
    /// Run a health check on the host (after a push), as a trigger would be run.
    Health {
        command: String,
        timeout: u64,
    },
    HealthResult(TriggerRun),
}

impl Msg {
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "Hello",
            Msg::Welcome { .. } => "Welcome",
            Msg::Error { .. } => "Error",
            Msg::Status { .. } => "Status",
            Msg::Target { .. } => "Target",
            Msg::Differences { .. } => "Differences",
            Msg::SignatureRequest { .. } => "SignatureRequest",
            Msg::Signatures { .. } => "Signatures",
            Msg::Stage { .. } => "Stage",
            Msg::Put { .. } => "Put",
            Msg::Data { .. } => "Data",
            Msg::Commit => "Commit",
            Msg::Committed(_) => "Committed",
            Msg::TriggerRan(_) => "TriggerRan",
            Msg::Done => "Done",
            Msg::Bye => "Bye",
            Msg::Health { .. } => "Health",
            Msg::HealthResult(_) => "HealthResult",
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Msg::Hello { .. } => 1,
            Msg::Welcome { .. } => 2,
            Msg::Error { .. } => 3,
            Msg::Status { .. } => 4,
            Msg::Target { .. } => 5,
            Msg::Differences { .. } => 6,
            Msg::SignatureRequest { .. } => 7,
            Msg::Signatures { .. } => 8,
            Msg::Stage { .. } => 9,
            Msg::Put { .. } => 10,
            Msg::Data { .. } => 11,
            Msg::Commit => 12,
            Msg::Committed(_) => 13,
            Msg::TriggerRan(_) => 14,
            Msg::Done => 15,
            Msg::Bye => 16,
            Msg::Health { .. } => 17,
            Msg::HealthResult(_) => 18,
        }
    }

    /// The frame body: tag and fields, compressed when large (never the Hello). A message
    /// larger than a frame is an error here; [`Conn::send`] sends it in pieces.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut e = Enc::default();
        self.encode_fields(&mut e);
        let tag = self.tag();
        frame_body(self, tag, e.0)
    }

    /// The tag and fields, uncompressed, of any size.
    fn encode_raw(&self) -> (u8, Vec<u8>) {
        let mut e = Enc::default();
        self.encode_fields(&mut e);
        (self.tag(), e.0)
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

impl Msg {
    fn encode_fields(&self, e: &mut Enc) {
        match self {
            Msg::Hello { version } => {
                e.raw(MAGIC);
                e.u32(*version);
            }
            Msg::Welcome {
                version,
                agent,
                exe,
                image,
                previous,
                rolled_forward,
                abandoned,
            } => {
                e.u32(*version);
                e.str(agent);
                e.hash(exe);
                e.opt_hash(image);
                e.opt_hash(previous);
                e.bool(*rolled_forward);
                e.opt_hash(abandoned);
            }
            Msg::Error { message } => e.str(message),
            Msg::Status { verify } => e.bool(*verify),
            Msg::Target {
                image,
                manifest,
                local_state,
                triggers,
                verify,
                dry_run,
                previous,
            } => {
                e.hash(image);
                match manifest {
                    ManifestData::Delta { base, delta } => {
                        e.u8(1);
                        e.hash(base);
                        e.bytes(delta);
                    }
                    ManifestData::Recorded => e.u8(2),
                    ManifestData::Zstd(z) => {
                        e.u8(0);
                        e.bytes(z);
                    }
                }
                e.u32(local_state.len() as u32);
                for l in local_state {
                    e.str(l);
                }
                e.bytes(triggers);
                e.bool(*verify);
                e.bool(*dry_run);
                match previous {
                    None => e.u8(0),
                    Some(None) => e.u8(1),
                    Some(Some(h)) => {
                        e.u8(2);
                        e.hash(h);
                    }
                }
            }
            Msg::Differences {
                image,
                changes,
                have,
                scan,
                kept,
            } => {
                e.opt_hash(image);
                e.u32(changes.len() as u32);
                for c in changes {
                    e.bytes(&c.path);
                    e.u8(match c.kind {
                        ChangeKind::Add => 0,
                        ChangeKind::Content => 1,
                        ChangeKind::Replace => 2,
                        ChangeKind::Meta => 3,
                        ChangeKind::Delete => 4,
                    });
                    match &c.host {
                        None => e.u8(0),
                        Some(h) => {
                            e.u8(1);
                            e.entry(h);
                        }
                    }
                }
                e.u32(have.len() as u32);
                for (h, p) in have {
                    e.hash(h);
                    e.bytes(p);
                }
                e.u64(scan.entries);
                e.u64(scan.hashed_files);
                e.u64(scan.hashed_bytes);
                e.u64(scan.cached_files);
                e.f64(scan.seconds);
                e.u32(kept.len() as u32);
                for k in kept {
                    e.bytes(&k.path);
                    e.u8(match k.why {
                        KeptWhy::Mount => 0,
                        KeptWhy::LocalStateSymlink => 1,
                    });
                }
            }
            Msg::SignatureRequest { paths } => {
                e.u32(paths.len() as u32);
                for p in paths {
                    e.bytes(p);
                }
            }
            Msg::Signatures { sigs } => {
                e.u32(sigs.len() as u32);
                for (p, s) in sigs {
                    e.bytes(p);
                    e.bytes(s);
                }
            }
            Msg::Stage { files, bytes } => {
                e.u64(*files);
                e.u64(*bytes);
            }
            Msg::Put { path, source, len } => {
                e.bytes(path);
                match source {
                    Source::LocalCopy { from } => {
                        e.u8(0);
                        e.bytes(from);
                    }
                    Source::Whole => e.u8(1),
                    Source::ZstdDelta => e.u8(2),
                    Source::RsyncDelta => e.u8(3),
                }
                e.u64(*len);
            }
            Msg::Data { bytes } => e.raw(bytes),
            Msg::Commit | Msg::Done | Msg::Bye => {}
            Msg::Committed(c) => {
                e.u64(c.ops);
                e.f64(c.stage_seconds);
                e.f64(c.commit_seconds);
            }
            Msg::Health { command, timeout } => {
                e.str(command);
                e.u64(*timeout);
            }
            Msg::TriggerRan(t) | Msg::HealthResult(t) => {
                e.str(&t.name);
                match t.status {
                    None => e.u8(0),
                    Some(s) => {
                        e.u8(1);
                        e.u32(s as u32);
                    }
                }
                e.bool(t.timed_out);
                e.f64(t.seconds);
                e.str(&t.output);
            }
        }
    }

    pub fn decode(body: &[u8]) -> Result<Msg> {
        let (tag, fields) = inflate(body)?;
        Msg::decode_fields(tag, &fields)
    }

    /// A message from its tag (without the compression bit) and its fields.
    fn decode_fields(tag: u8, fields: &[u8]) -> Result<Msg> {
        let mut d = Dec(fields);
        let msg = match tag {
            1 => {
                let magic = d.take(4)?;
                if magic != MAGIC {
                    return Err(Error::protocol(
                        "the peer is not a syncer (bad magic in its first message)",
                    ));
                }
                Msg::Hello { version: d.u32()? }
            }
            2 => Msg::Welcome {
                version: d.u32()?,
                agent: d.str()?,
                exe: d.hash()?,
                image: d.opt_hash()?,
                previous: d.opt_hash()?,
                rolled_forward: d.bool()?,
                abandoned: d.opt_hash()?,
            },
            3 => Msg::Error { message: d.str()? },
            4 => Msg::Status { verify: d.bool()? },
            5 => {
                let image = d.hash()?;
                let manifest = match d.u8()? {
                    1 => ManifestData::Delta {
                        base: d.hash()?,
                        delta: d.bytes()?,
                    },
                    0 => ManifestData::Zstd(d.bytes()?),
                    2 => ManifestData::Recorded,
                    k => return Err(Error::protocol(format!("unknown manifest form {k}"))),
                };
                let n = d.count(4)?;
                let mut local_state = Vec::with_capacity(n.min(PREALLOC));
                for _ in 0..n {
                    local_state.push(d.str()?);
                }
                Msg::Target {
                    image,
                    manifest,
                    local_state,
                    triggers: d.bytes()?,
                    verify: d.bool()?,
                    dry_run: d.bool()?,
                    previous: match d.u8()? {
                        0 => None,
                        1 => Some(None),
                        2 => Some(Some(d.hash()?)),
                        k => return Err(Error::protocol(format!("unknown previous form {k}"))),
                    },
                }
            }
            6 => {
                let image = d.opt_hash()?;
                let n = d.count(6)?;
                let mut changes = Vec::with_capacity(n.min(PREALLOC));
                for _ in 0..n {
                    let path = d.bytes()?;
                    let kind = match d.u8()? {
                        0 => ChangeKind::Add,
                        1 => ChangeKind::Content,
                        2 => ChangeKind::Replace,
                        3 => ChangeKind::Meta,
                        4 => ChangeKind::Delete,
                        k => return Err(Error::protocol(format!("unknown change kind {k}"))),
                    };
                    let host = match d.u8()? {
                        0 => None,
                        _ => Some(d.entry()?),
                    };
                    changes.push(Change { path, kind, host });
                }
                let n = d.count(36)?;
                let mut have = Vec::with_capacity(n.min(PREALLOC));
                for _ in 0..n {
                    have.push((d.hash()?, d.bytes()?));
                }
                let scan = ScanStats {
                    entries: d.u64()?,
                    hashed_files: d.u64()?,
                    hashed_bytes: d.u64()?,
                    cached_files: d.u64()?,
                    seconds: d.f64()?,
                };
                let n = d.count(5)?;
                let mut kept = Vec::with_capacity(n.min(PREALLOC));
                for _ in 0..n {
                    let path = d.bytes()?;
                    let why = match d.u8()? {
                        0 => KeptWhy::Mount,
                        1 => KeptWhy::LocalStateSymlink,
                        k => return Err(Error::protocol(format!("unknown kept reason {k}"))),
                    };
                    kept.push(Kept { path, why });
                }
                Msg::Differences {
                    image,
                    changes,
                    have,
                    scan,
                    kept,
                }
            }
            7 => {
                let n = d.count(4)?;
                let mut paths = Vec::with_capacity(n.min(PREALLOC));
                for _ in 0..n {
                    paths.push(d.bytes()?);
                }
                Msg::SignatureRequest { paths }
            }
            8 => {
                let n = d.count(8)?;
                let mut sigs = Vec::with_capacity(n.min(PREALLOC));
                for _ in 0..n {
                    sigs.push((d.bytes()?, d.bytes()?));
                }
                Msg::Signatures { sigs }
            }
            9 => Msg::Stage {
                files: d.u64()?,
                bytes: d.u64()?,
            },
            10 => {
                let path = d.bytes()?;
                let source = match d.u8()? {
                    0 => Source::LocalCopy { from: d.bytes()? },
                    1 => Source::Whole,
                    2 => Source::ZstdDelta,
                    3 => Source::RsyncDelta,
                    k => return Err(Error::protocol(format!("unknown content source {k}"))),
                };
                Msg::Put {
                    path,
                    source,
                    len: d.u64()?,
                }
            }
            11 => Msg::Data {
                bytes: std::mem::take(&mut d.0).to_vec(),
            },
            12 => Msg::Commit,
            13 => Msg::Committed(Committed {
                ops: d.u64()?,
                stage_seconds: d.f64()?,
                commit_seconds: d.f64()?,
            }),
            14 => Msg::TriggerRan(d.run()?),
            15 => Msg::Done,
            16 => Msg::Bye,
            17 => Msg::Health {
                command: d.str()?,
                timeout: d.u64()?,
            },
            18 => Msg::HealthResult(d.run()?),
            t => return Err(Error::protocol(format!("unknown message type {t}"))),
        };
        if !d.0.is_empty() {
            return Err(Error::protocol(format!(
                "{} message has {} trailing bytes",
                msg.name(),
                d.0.len()
            )));
        }
        Ok(msg)
    }
}

/// One end of a session: frames over any byte streams, counting bytes each way.
pub struct Conn<R, W> {
    r: R,
    w: W,
    pub sent: u64,
    pub received: u64,
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
    pub fn new(r: R, w: W) -> Self {
        Conn {
            r,
            w,
            sent: 0,
            received: 0,
        }
    }

    pub fn send(&mut self, m: &Msg) -> Result<()> {
        let (tag, fields) = m.encode_raw();
        if fields.len() < PIECE {
            self.frame(&frame_body(m, tag, fields)?)?;
        } else {
            // In pieces of the message's encoding: its tag, then its fields.
            if fields.len() + 1 > MAX_MESSAGE {
                return Err(Error::protocol(format!(
                    "{} message of {} bytes is larger than the limit of {MAX_MESSAGE} bytes",
                    m.name(),
                    fields.len() + 1
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
        if !matches!(m, Msg::Put { .. } | Msg::Data { .. }) {
            self.w.flush()?;
        }
        Ok(())
    }

    fn frame(&mut self, body: &[u8]) -> Result<()> {
        self.w.write_all(&(body.len() as u32).to_le_bytes())?;
        self.w.write_all(body)?;
        self.sent += 4 + body.len() as u64;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        Ok(self.w.flush()?)
    }

    /// The next message; `Ok(None)` at a clean end of stream (between messages).
    pub fn recv_opt(&mut self) -> Result<Option<Msg>> {
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
            if raw.len() + piece.len() > MAX_MESSAGE {
                return Err(Error::protocol(format!(
                    "a message of more than {MAX_MESSAGE} bytes was sent"
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
                Err(e) => return Err(e.into()),
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
                e.into()
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

#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn bool(&mut self, v: bool) {
        self.0.push(v as u8);
    }
    fn u32(&mut self, v: u32) {
        self.raw(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.raw(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.raw(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.raw(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.raw(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn hash(&mut self, h: &Hash) {
        self.raw(&h.0);
    }
    fn opt_hash(&mut self, h: &Option<Hash>) {
        match h {
            None => self.u8(0),
            Some(h) => {
                self.u8(1);
                self.hash(h);
            }
        }
    }
    fn entry(&mut self, e: &Entry) {
        self.bytes(&e.path);
        match &e.kind {
            Kind::File { size, hash } => {
                self.u8(0);
                self.u64(*size);
                self.hash(hash);
            }
            Kind::Dir => self.u8(1),
            Kind::Symlink { target } => {
                self.u8(2);
                self.bytes(target);
            }
            Kind::HardLink { target } => {
                self.u8(3);
                self.bytes(target);
            }
            Kind::CharDev { major, minor } => {
                self.u8(4);
                self.u32(*major);
                self.u32(*minor);
            }
            Kind::BlockDev { major, minor } => {
                self.u8(5);
                self.u32(*major);
                self.u32(*minor);
            }
            Kind::Fifo => self.u8(6),
        }
        self.u32(e.mode);
        self.u32(e.uid);
        self.u32(e.gid);
        self.i64(e.mtime);
        self.u32(e.xattrs.len() as u32);
        for (n, v) in &e.xattrs {
            self.bytes(n);
            self.bytes(v);
        }
    }
}

struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.0.len() {
            return Err(Error::protocol(format!(
                "a field of {n} bytes runs past the end of its frame ({} left)",
                self.0.len()
            )));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(Error::protocol(format!("bad boolean {b}"))),
        }
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.arr()?))
    }
    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.arr()?))
    }
    /// A count of items each at least `min` bytes long, checked against what is left.
    fn count(&mut self, min: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.0.len() {
            return Err(Error::protocol(format!(
                "a count of {n} items cannot fit in the {} bytes left of its frame",
                self.0.len()
            )));
        }
        Ok(n)
    }
    fn bytes(&mut self) -> Result<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn str(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?).map_err(|_| Error::protocol("a text field is not UTF-8"))
    }
    fn hash(&mut self) -> Result<Hash> {
        Ok(Hash(self.arr()?))
    }
    fn opt_hash(&mut self) -> Result<Option<Hash>> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.hash()?),
        })
    }
    fn run(&mut self) -> Result<TriggerRun> {
        let name = self.str()?;
        let status = match self.u8()? {
            0 => None,
            _ => Some(self.u32()? as i32),
        };
        Ok(TriggerRun {
            name,
            status,
            timed_out: self.bool()?,
            seconds: self.f64()?,
            output: self.str()?,
        })
    }

    fn entry(&mut self) -> Result<Entry> {
        let path = self.bytes()?;
        let kind = match self.u8()? {
            0 => Kind::File {
                size: self.u64()?,
                hash: self.hash()?,
            },
            1 => Kind::Dir,
            2 => Kind::Symlink {
                target: self.bytes()?,
            },
            3 => Kind::HardLink {
                target: self.bytes()?,
            },
            4 => Kind::CharDev {
                major: self.u32()?,
                minor: self.u32()?,
            },
            5 => Kind::BlockDev {
                major: self.u32()?,
                minor: self.u32()?,
            },
            6 => Kind::Fifo,
            k => return Err(Error::protocol(format!("unknown entry kind {k}"))),
        };
        let (mode, uid, gid, mtime) = (self.u32()?, self.u32()?, self.u32()?, self.i64()?);
        let n = self.count(8)?;
        let mut xattrs = Vec::with_capacity(n.min(PREALLOC));
        for _ in 0..n {
            xattrs.push((self.bytes()?, self.bytes()?));
        }
        Ok(Entry {
            path,
            kind,
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_larger_than_a_frame_travels_in_pieces() {
        let changes: Vec<Change> = (0..400_000u32)
            .map(|i| Change {
                path: format!("/{}/{i:08}", "p".repeat(200)).into_bytes(),
                kind: ChangeKind::Add,
                host: None,
            })
            .collect();
        let m = Msg::Differences {
            image: None,
            changes,
            have: Vec::new(),
            scan: ScanStats::default(),
            kept: Vec::new(),
        };
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
        roundtrip(Msg::Hello { version: 1 });
        roundtrip(Msg::Differences {
            image: Some(Hash::of(b"i")),
            changes: (0..2000)
                .map(|i| Change {
                    path: format!("/p/{i}").into_bytes(),
                    kind: ChangeKind::Content,
                    host: Some(e.clone()),
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
        });
        roundtrip(Msg::Put {
            path: b"/a".to_vec(),
            source: Source::LocalCopy {
                from: b"/b".to_vec(),
            },
            len: 0,
        });
        roundtrip(Msg::TriggerRan(TriggerRun {
            name: "t".into(),
            status: Some(-1),
            timed_out: false,
            seconds: 0.5,
            output: "ok".into(),
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
