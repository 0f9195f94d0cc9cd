//! The content a push stages: the handlers of `Put`, `Pack` and `Fetch` (a file's
//! encoding, a pack's stream, blobs from HTTP mirrors), each file checked to be one the
//! push sends content for, staged once and checked against the image by [`Staging`].

use super::stage::Staging;
use super::{fetch, test_stop_point, Pending, Session};
use crate::error::{Error, Result};
use crate::protocol::{BlobUse, Conn, Data, Fetch, Fetched, Msg, Pack, PackEntry, Put};
use imager_core::safe_dir::Beneath;
use imager_core::tree::escape::escape;
use imager_core::Entry;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;

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

    /// Several files from one stream (`encoding::pack`), each staged and checked as a
    /// `Put`'s.
    pub(super) fn on_pack<R: Read, W: Write>(
        &mut self,
        conn: &mut Conn<R, W>,
        pack: Pack,
    ) -> Result<()> {
        let (Some(p), Some(s)) = (self.pending.as_ref(), self.staging.as_mut()) else {
            return Err(Error::Protocol("Pack before Stage".into()));
        };
        let files = pack_files(p, &pack.entries, &pack.skip)?;
        held(pack.len, "a pack's stream")?;
        let stream = read_payload(conn, pack.len)?;
        stage_pack(s, (&self.b, self.objects), &pack.entries, files, &stream)
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
                        // (A mirror's pack holds no store copies.)
                        Some(stream) => stage_pack(s, (&self.b, None), entries, files, &stream)?,
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

/// The objects directory a store copy is read from: only an agent the controller gave
/// one takes store copies, and nothing travels with them. They come in packs (a lone
/// `Put` of one is refused by [`crate::encoding::Encoding::decode`]).
fn store_objects<'a>(objects: Option<&'a Path>, path: &[u8], len: u64) -> Result<&'a Path> {
    match objects {
        Some(dir) if len == 0 => Ok(dir),
        Some(_) => Err(Error::Protocol(format!(
            "{} was sent as a store copy with {len} bytes",
            escape(path)
        ))),
        None => Err(Error::Protocol(format!(
            "{} was sent as a store copy, and this agent was given no store objects \
             (serve --objects DIR: a local: host only)",
            escape(path)
        ))),
    }
}

/// A store copy: the controller's object of the file's hash
/// ([`imager_core::Hash::object_name`]). The staged file is checked against the image's size and hash like any
/// content, so a damaged object fails the file, never the host.
fn copy_object(objects: &Path, e: &Entry, out: &mut dyn Write) -> Result<()> {
    let imager_core::Kind::File { hash, .. } = e.kind else {
        return Err(Error::Protocol(format!(
            "{} is not a file",
            escape(&e.path)
        )));
    };
    let path = objects.join(hash.object_name());
    // Large reads (std::io::copy writes a BufReader's buffer as it is): a first
    // install is hundreds of MB of these.
    let mut f = std::io::BufReader::with_capacity(1 << 20, imager_core::fsx::open(&path)?);
    std::io::copy(&mut f, out)
        .map_err(|err| imager_core::Error::io("copy the store object", path, err))?;
    Ok(())
}

/// Refuses content for a path staged already (by a `Put`, a `Pack` or a fetched blob):
/// each would be checked, but the second would take room the first was counted in.
fn staged_once(s: &Staging, path: &[u8]) -> Result<()> {
    if s.staged.contains_key(path) {
        return Err(Error::Protocol(format!(
            "{} was sent twice",
            imager_core::tree::escape::escape(path)
        )));
    }
    Ok(())
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
    staged_once(s, &e.path)?;
    s.put_file_with(b, e, fill)?;
    test_stop_point("stage", s.staged.len());
    Ok(())
}

/// Stages the files of a pack's stream, `files` being its entries' in the image.
///
/// The stream is decoded in order on this thread; its parts are staged by workers, one
/// per core (at most [`PACK_WORKERS`]): rebuilding a gzip file's deflate streams or
/// applying a Zucchini patch takes CPU that the stream's decoding does not, and was most
/// of a warm push's time while it ran on one core. The parts read and not yet staged
/// hold at most [`QUEUED`] bytes (one part alone may be larger); at most one large
/// in-memory patch ([`heavy`]) is applied at a time, so memory stays what one such patch
/// takes. The first failure in the pack's order is the one reported, and no part after
/// it is started.
fn stage_pack(
    s: &mut Staging,
    (b, objects): (&Beneath, Option<&Path>),
    entries: &[PackEntry],
    files: Vec<Option<&Entry>>,
    stream: &[u8],
) -> Result<()> {
    let before = s.staged.len();
    let mut jobs = Vec::with_capacity(files.len());
    for f in files {
        jobs.push(match f {
            Some(e) => {
                staged_once(s, &e.path)?;
                Some((e, s.reserve(&e.path)))
            }
            None => None,
        });
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(PACK_WORKERS));
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Vec<u8>)>();
    let run = PackRun {
        s,
        b,
        objects,
        entries,
        jobs,
        rx: std::sync::Mutex::new(rx),
        failed: Failure::default(),
        done: std::sync::atomic::AtomicUsize::new(before),
        heavy: std::sync::Mutex::new(()),
        queued: Budget::new(QUEUED),
    };
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| run.work());
        }
        let mut i = 0;
        let read = crate::encoding::pack::unpack(stream, entries, |_, part| {
            if run.failed.any() {
                // A worker failed on an earlier part: its error is the one told.
                return Err(Error::Protocol("stopped".into()));
            }
            let mut v = Vec::new();
            part.read_to_end(&mut v)
                .map_err(|e| Error::Protocol(format!("bad pack: {e}")))?;
            // Skipped entries are read and dropped: the pack's own check wants every
            // part read.
            if run.jobs[i].is_some() {
                run.queued.take(v.len() as u64);
                if tx.send((i, v)).is_err() {
                    return Err(Error::Protocol("the pack's workers stopped".into()));
                }
            }
            i += 1;
            Ok(())
        });
        drop(tx);
        if let Err(e) = read {
            run.failed.set(i, e);
        }
    });
    run.failed.into_result()
}

/// Bytes of parts read and waiting for a worker, at most.
const QUEUED: u64 = 32 << 20;

/// One pack being staged: what its workers share.
struct PackRun<'a> {
    s: &'a Staging,
    b: &'a Beneath,
    /// The controller's store objects, for store copies ([`Session::objects`]).
    objects: Option<&'a Path>,
    entries: &'a [PackEntry],
    /// Each entry's file and reserved staged name (`None`: skipped).
    jobs: Vec<Option<(&'a Entry, String)>>,
    rx: std::sync::Mutex<std::sync::mpsc::Receiver<(usize, Vec<u8>)>>,
    failed: Failure,
    /// Files staged in the session, for the crash tests' stop point.
    done: std::sync::atomic::AtomicUsize,
    /// Held while a heavy part is applied.
    heavy: std::sync::Mutex<()>,
    queued: Budget,
}

impl PackRun<'_> {
    /// A worker: stages parts as they come until the stream ends.
    fn work(&self) {
        loop {
            let next = self
                .rx
                .lock()
                .map_err(drop)
                .and_then(|r| r.recv().map_err(drop));
            let Ok((i, part)) = next else {
                return;
            };
            self.stage(i, &part);
            self.queued.give(part.len() as u64);
        }
    }

    fn stage(&self, i: usize, part: &[u8]) {
        let (Some((e, name)), pe) = (&self.jobs[i], &self.entries[i]) else {
            return;
        };
        if self.failed.any() {
            return;
        }
        let _one = heavy(pe, e).then(|| self.heavy.lock());
        let r = match pe.encoding {
            crate::encoding::Encoding::StoreCopy => {
                let from = |o| {
                    self.s
                        .fill_file(self.b, e, name, |_, out| copy_object(o, e, out))
                };
                store_objects(self.objects, &pe.path, pe.len).and_then(from)
            }
            _ => self.s.fill_file(self.b, e, name, |size, mut out| {
                pe.encoding
                    .decode_part(self.b, &pe.path, size, &mut &part[..], &mut out)
            }),
        };
        match r {
            Ok(()) => test_stop_point(
                "stage",
                1 + self.done.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
            ),
            Err(err) => self.failed.set(i, err),
        }
    }
}

/// A count of bytes in flight, at most `max` (a single larger amount passes alone).
struct Budget {
    used: std::sync::Mutex<u64>,
    freed: std::sync::Condvar,
    max: u64,
}

impl Budget {
    fn new(max: u64) -> Budget {
        Budget {
            used: std::sync::Mutex::new(0),
            freed: std::sync::Condvar::new(),
            max,
        }
    }

    /// Waits until `n` more bytes fit (or nothing is in flight), then counts them.
    fn take(&self, n: u64) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used > 0 && *used + n > self.max {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += n;
    }

    fn give(&self, n: u64) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(n);
        self.freed.notify_all();
    }
}

/// At most this many threads stage one pack's parts.
const PACK_WORKERS: usize = 4;

/// Whether staging pack entry `pe` (file `e`) holds large buffers: a gzip-aware or
/// Zucchini patch is applied in memory (the host's old file, the patch, the new content),
/// and over [`HEAVY`] bytes such parts go one at a time.
fn heavy(pe: &PackEntry, e: &Entry) -> bool {
    const HEAVY: u64 = 8 << 20;
    let size = match e.kind {
        imager_core::Kind::File { size, .. } => size,
        _ => 0,
    };
    matches!(
        pe.encoding,
        crate::encoding::Encoding::GzipDelta | crate::encoding::Encoding::Zucchini
    ) && size.saturating_add(pe.len) > HEAVY
}

/// The first failure of a pack's staging, by the entries' order.
#[derive(Default)]
struct Failure(
    std::sync::Mutex<Option<(usize, Error)>>,
    std::sync::atomic::AtomicBool,
);

impl Failure {
    fn set(&self, i: usize, e: Error) {
        self.1.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut f) = self.0.lock() {
            if f.as_ref().is_none_or(|(j, _)| i < *j) {
                *f = Some((i, e));
            }
        }
    }
    fn any(&self) -> bool {
        self.1.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn into_result(self) -> Result<()> {
        match self.0.into_inner() {
            Ok(None) => Ok(()),
            Ok(Some((_, e))) => Err(e),
            Err(_) => Err(Error::Agent("a pack's worker panicked".into())),
        }
    }
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
