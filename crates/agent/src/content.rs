//! The content a push stages: the handlers of `Put`, `Pack` and `Fetch` (a file's
//! encoding, a pack's stream, blobs from HTTP mirrors), each file checked to be one the
//! push sends content for, staged once and checked against the image by [`Staging`].

use super::stage::{Names, Staging};
use super::{fetch, packs, test_stop_point, Pending, Session};
use crate::error::{Error, Result};
use crate::protocol::{BlobUse, Conn, Data, Fetch, Fetched, Msg, Pack, PackEntry, Put};
use imager_core::safe_dir::Beneath;
use imager_core::tree::escape::escape;
use imager_core::Entry;
use std::collections::HashSet;
use std::io::{Read, Write};

impl Session<'_> {
    pub(super) fn on_put<R: Read, W: Write>(
        &mut self,
        conn: &mut Conn<R, W>,
        put: Put,
    ) -> Result<()> {
        let (Some(p), Some(s)) = (self.pending.as_ref(), self.staging.as_mut()) else {
            return Err(Error::Protocol("Put before Stage".into()));
        };
        let e = needs_content(p, &put.path)?;
        if put.encoding == crate::encoding::Encoding::Chunked {
            // Streamed from the connection into the staged file: never held whole.
            let mut from = Incoming {
                conn,
                left: put.len,
                buf: Vec::new(),
                at: 0,
            };
            stage_with(s, &self.b, e, |size, out| {
                crate::encoding::chunked::decode(&self.b, &e.path, size, &mut from, out)
            })?;
            if from.left > 0 || from.at < from.buf.len() {
                return Err(Error::Protocol(format!(
                    "{} bytes of {} were sent beyond its records",
                    from.left + (from.buf.len() - from.at) as u64,
                    escape(&e.path)
                )));
            }
            return Ok(());
        }
        held(
            put.len,
            &format!(
                "the {} content of {}",
                put.encoding.label(),
                escape(&e.path)
            ),
        )?;
        let payload = read_payload(conn, put.len)?;
        stage_put(s, &self.b, e, &put.encoding, &payload)
    }

    /// Packs (`encoding::pack`: several files from one stream), each file staged and
    /// checked as a `Put`'s: this one and every `Pack` right after it, staged while the
    /// next ones are read ([`packs`]). Returns the message that followed them.
    pub(super) fn on_packs<R: Read, W: Write>(
        &mut self,
        conn: &mut Conn<R, W>,
        first: Pack,
    ) -> Result<Option<Msg>> {
        let (Some(p), Some(s)) = (self.pending.as_ref(), self.staging.as_mut()) else {
            return Err(Error::Protocol("Pack before Stage".into()));
        };
        let target = packs::Target {
            dir: &s.dir,
            b: &self.b,
            objects: self.objects,
        };
        let mut first = Some(first);
        let mut after = None;
        packs::stage_packs(&mut s.names, &target, |names| {
            let pack = match first.take() {
                Some(pack) => pack,
                None => match conn.recv_opt()? {
                    Some(Msg::Pack(pack)) => pack,
                    other => {
                        after = other;
                        return Ok(None);
                    }
                },
            };
            let files = pack_files(p, &pack.entries, &pack.skip)?;
            held(pack.len, "a pack's stream")?;
            let files = reserve(names, files)?;
            let stream = read_payload(conn, pack.len)?;
            Ok(Some(packs::Ready {
                entries: pack.entries,
                files,
                stream,
            }))
        })?;
        Ok(after)
    }

    /// Blobs from HTTP mirrors ([`fetch`]), each staged as the `Pack` or `Put` it is
    /// once its bytes passed their check; the answer says which no mirror gave.
    pub(super) fn on_fetch<R: Read, W: Write>(
        &mut self,
        conn: &mut Conn<R, W>,
        f: Fetch,
    ) -> Result<()> {
        let (Some(p), Some(s)) = (self.pending.as_ref(), self.staging.as_mut()) else {
            return Err(Error::Protocol("Fetch before Stage".into()));
        };
        let refused: Vec<Option<String>> = f
            .mirrors
            .iter()
            .map(|m| self.trust.mirror_refusal(m))
            .collect();
        let mut fetcher = fetch::Fetcher::new(&f.mirrors, f.rate, refused)?;
        let mut missing = Vec::new();
        for (i, blob) in f.blobs.iter().enumerate() {
            // What it stages is checked before a byte is fetched, its size too: a blob is
            // held in memory.
            held(blob.len, &format!("blob {}", blob.name))?;
            match &blob.stages {
                BlobUse::Pack { entries, skip } => {
                    let files = pack_files(p, entries, skip)?;
                    match fetcher.get(blob) {
                        Some(stream) => stage_one(s, &self.b, entries.clone(), files, stream)?,
                        None => missing.push(i as u32),
                    }
                }
                BlobUse::Put { path, encoding } => {
                    let e = needs_content(p, path)?;
                    match fetcher.get(blob) {
                        Some(payload) => stage_put(s, &self.b, e, encoding, &payload)?,
                        None => missing.push(i as u32),
                    }
                }
            }
        }
        conn.send(&Msg::Fetched(Fetched {
            missing,
            mirrors: fetcher.stats,
        }))
    }
}

/// The image's entry for `path`, which must be a path whose content the push sends.
fn needs_content<'a>(p: &'a Pending, path: &[u8]) -> Result<&'a Entry> {
    if !p.content.contains(path) {
        return Err(Error::Protocol(format!(
            "content sent for {}, which does not need any",
            escape(path)
        )));
    }
    p.image.get(path).ok_or_else(|| {
        Error::Protocol(format!(
            "content sent for {}, not in the image",
            escape(path)
        ))
    })
}

/// The image's entries a pack's entries fill, each one the host needs content for
/// (`None` for an entry skipped).
fn pack_files<'p>(
    p: &'p Pending,
    entries: &[PackEntry],
    skip: &[u32],
) -> Result<Vec<Option<&'p Entry>>> {
    crate::encoding::pack::check_entries(entries)?;
    if let Some(s) = skip.iter().find(|&&s| s as usize >= entries.len()) {
        return Err(Error::Protocol(format!(
            "a pack of {} entries (the first {}) skips entry {s}",
            entries.len(),
            entries
                .first()
                .map_or("-".into(), |e| imager_core::tree::escape::escape(&e.path))
        )));
    }
    let skip: HashSet<u32> = skip.iter().copied().collect();
    (0..entries.len())
        .map(|i| match skip.contains(&(i as u32)) {
            true => Ok(None),
            false => needs_content(p, &entries[i].path).map(Some),
        })
        .collect()
}

/// Stages one pack a mirror gave (whole, checked): the pipeline of [`packs`] for one
/// pack. (A mirror's pack holds no store copies.)
fn stage_one(
    s: &mut Staging,
    b: &Beneath,
    entries: Vec<PackEntry>,
    files: Vec<Option<&Entry>>,
    stream: Vec<u8>,
) -> Result<()> {
    let target = packs::Target {
        dir: &s.dir,
        b,
        objects: None,
    };
    let mut one = Some((entries, files, stream));
    packs::stage_packs(&mut s.names, &target, |names| {
        let Some((entries, files, stream)) = one.take() else {
            return Ok(None);
        };
        let files = reserve(names, files)?;
        Ok(Some(packs::Ready {
            entries,
            files,
            stream,
        }))
    })
}

/// Reserves a staged name for each file of a pack (each staged once per session).
fn reserve<'p>(
    names: &mut Names,
    files: Vec<Option<&'p Entry>>,
) -> Result<Vec<Option<packs::Staged<'p>>>> {
    files
        .into_iter()
        .map(|f| {
            f.map(|e| {
                names.once(&e.path)?;
                Ok((e, names.reserve(&e.path)))
            })
            .transpose()
        })
        .collect()
}

/// Stages one file from its encoding (checked against the image by [`Staging`]).
fn stage_put(
    s: &mut Staging,
    b: &Beneath,
    e: &Entry,
    enc: &crate::encoding::Encoding,
    payload: &[u8],
) -> Result<()> {
    stage_with(s, b, e, |size, mut out| {
        enc.decode(b, &e.path, size, payload, &mut out)
    })
}

/// Stages file `e` (once per session) with what `fill` writes, checked against the
/// image's size and hash, then passes the kill -9 tests' stop point.
fn stage_with(
    s: &mut Staging,
    b: &Beneath,
    e: &Entry,
    fill: impl FnOnce(u64, &mut dyn Write) -> Result<()>,
) -> Result<()> {
    s.names.once(&e.path)?;
    s.put_file_with(b, e, fill)?;
    test_stop_point("stage", s.names.files());
    Ok(())
}

/// A `Put`'s content as it arrives in `Data` messages, read in order (a large file's
/// records, decoded as they come).
struct Incoming<'c, R: Read, W: Write> {
    conn: &'c mut Conn<R, W>,
    /// Bytes announced and not received yet.
    left: u64,
    buf: Vec<u8>,
    at: usize,
}

impl<R: Read, W: Write> Read for Incoming<'_, R, W> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            if self.left == 0 || out.is_empty() {
                return Ok(0);
            }
            let refuse = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
            match self.conn.recv("file content") {
                Ok(Msg::Data(Data { bytes })) => {
                    if bytes.len() > crate::protocol::CHUNK || bytes.len() as u64 > self.left {
                        return Err(refuse("more file content than announced".into()));
                    }
                    self.left -= bytes.len() as u64;
                    (self.buf, self.at) = (bytes, 0);
                }
                Ok(m) => return Err(refuse(format!("expected file content, got {}", m.name()))),
                Err(e) => return Err(refuse(e.to_string())),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Refuses a payload of `len` bytes that would be held in memory past
/// [`crate::protocol::MAX_HELD`] (`what` names it), before a byte of it is read: only a
/// large file's records are streamed, and the controller sends no other payload that
/// large.
fn held(len: u64, what: &str) -> Result<()> {
    if len > crate::protocol::MAX_HELD {
        return Err(Error::Protocol(format!(
            "{what} is {len} bytes, more than an agent holds in memory ({}); larger \
             files travel chunked",
            crate::protocol::MAX_HELD
        )));
    }
    Ok(())
}

fn read_payload<R: Read, W: Write>(conn: &mut Conn<R, W>, len: u64) -> Result<Vec<u8>> {
    // Grown as data arrives, never allocated from the announced length.
    let mut v = Vec::new();
    while (v.len() as u64) < len {
        match conn.recv("file content")? {
            Msg::Data(Data { bytes }) => {
                if bytes.len() > crate::protocol::CHUNK || v.len() as u64 + bytes.len() as u64 > len
                {
                    return Err(Error::Protocol("more file content than announced".into()));
                }
                v.extend_from_slice(&bytes);
            }
            m => {
                return Err(Error::Protocol(format!(
                    "expected file content, got {}",
                    m.name()
                )))
            }
        }
    }
    Ok(v)
}
