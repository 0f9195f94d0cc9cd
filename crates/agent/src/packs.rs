//! Staging packs as a pipeline: the session thread reads each pack's bytes from the
//! connection and reserves its files' staged names; a decoder thread decompresses the
//! packs one after another; workers, one per core (at most [`PACK_WORKERS`]), stage the
//! parts.
//!
//! The three run at once across the controller's consecutive `Pack` messages, so
//! neither side waits for the other: before, each pack was read, then decompressed and
//! staged while nothing read the connection, and a first install over a pipe used one
//! core of two. Rebuilding a gzip file's deflate streams or applying a Zucchini patch
//! takes CPU that the stream's decoding does not, which is why parts go to workers.
//!
//! Memory is bounded: packs read and not yet decoded hold at most [`STREAMS_QUEUED`]
//! bytes (a pack's stream is dropped once decoded), parts decoded and not yet staged at
//! most [`PARTS_QUEUED`] (one larger pack or part passes alone), and at most one large in-memory patch ([`heavy`]) is applied at a
//! time. The first failure in the packs' order is the one reported: a part after it is
//! not started, and once any part failed no further pack is read.

use super::stage::{Names, StagingDir};
use super::test_stop_point;
use crate::error::{Error, Result};
use crate::protocol::PackEntry;
use imager_core::safe_dir::Beneath;
use imager_core::tree::escape::escape;
use imager_core::Entry;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Condvar, Mutex};

/// One pack, read and checked, ready to decode: its entries, each one's file in the
/// image and reserved staged name (`None`: skipped), and its stream.
pub struct Ready<'p> {
    /// The pack's entries, as the controller listed them.
    pub entries: Vec<PackEntry>,
    /// Each entry's file and staged place; `None` for an entry skipped.
    pub files: Vec<Option<Staged<'p>>>,
    /// The pack's compressed stream.
    pub stream: Vec<u8>,
}

/// A file of a pack: its entry in the image and its reserved place in the staging
/// directory.
pub type Staged<'p> = (&'p Entry, Vec<u8>);

/// Where parts are staged and what they may read.
pub struct Target<'a> {
    /// The staging directory.
    pub dir: &'a StagingDir,
    /// The host's root, for the delta encodings' bases.
    pub b: &'a Beneath,
    /// The controller's store objects, for store copies.
    pub objects: Option<&'a Path>,
}

/// Stages every pack `next` yields, in order, until it yields `None` (or fails, or a
/// part fails). `next` runs on the calling thread and reserves each pack's staged names
/// in `names`. Returns the first error by the packs' order: a part's, then `next`'s own.
pub fn stage_packs<'p>(
    names: &mut Names,
    target: &Target<'_>,
    mut next: impl FnMut(&mut Names) -> Result<Option<Ready<'p>>>,
) -> Result<()> {
    let run = Run {
        target,
        failed: Failure::default(),
        done: AtomicUsize::new(names.files()),
        heavy: Mutex::new(()),
        streams: Budget::new(STREAMS_QUEUED),
        parts: Budget::new(PARTS_QUEUED),
    };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(PACK_WORKERS));
    let (to_decoder, packs) = channel::<Ready<'p>>();
    let (to_workers, parts) = channel::<Part<'p>>();
    let parts = Mutex::new(parts);
    let read = std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| run.work(&parts));
        }
        let decoder = scope.spawn(|| run.decode(packs, to_workers));
        let read = (|| {
            while !run.failed.any() {
                let Some(pack) = next(names)? else {
                    return Ok(());
                };
                run.streams.take(pack.stream.len() as u64);
                if to_decoder.send(pack).is_err() {
                    return Err(Error::Protocol("the pack's decoder stopped".into()));
                }
            }
            Ok(())
        })();
        drop(to_decoder);
        let _ = decoder.join();
        read
    });
    run.failed.into_result().and(read)
}

/// Bytes of packs read and waiting for the decoder, at most.
const STREAMS_QUEUED: u64 = 32 << 20;

/// Bytes of parts decoded and waiting for a worker, at most.
const PARTS_QUEUED: u64 = 32 << 20;

/// At most this many threads stage parts.
const PACK_WORKERS: usize = 4;

/// One part for a worker: its pack entry, its file and staged place, its index in the
/// whole run (the order failures are told in), and its bytes. (It holds nothing of its
/// pack's stream, which goes as soon as it is decoded.)
struct Part<'p> {
    entry: PackEntry,
    file: Staged<'p>,
    order: usize,
    bytes: Vec<u8>,
}

/// A run of packs being staged: what its threads share.
struct Run<'a, 't> {
    target: &'a Target<'t>,
    failed: Failure,
    /// Files staged in the session, for the crash tests' stop point.
    done: AtomicUsize,
    /// Held while a heavy part is applied.
    heavy: Mutex<()>,
    streams: Budget,
    parts: Budget,
}

impl<'p> Run<'_, '_> {
    /// The decoder: each pack's stream in order, its parts handed to the workers.
    fn decode(&self, packs: Receiver<Ready<'p>>, to_workers: std::sync::mpsc::Sender<Part<'p>>) {
        let mut order = 0;
        for Ready {
            entries,
            mut files,
            stream,
        } in packs
        {
            let base = order;
            order += entries.len();
            // After an earlier failure, packs still queued are dropped unread (the reader waits
            // on their budget).
            if !self.failed.before(base) {
                let mut i = 0;
                let read = crate::encoding::pack::unpack(&stream, &entries, |pe, part| {
                    if self.failed.before(base + i) {
                        // An earlier part failed: its error is the one told.
                        return Err(Error::Protocol("stopped".into()));
                    }
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(part, &mut v)
                        .map_err(|e| Error::Protocol(format!("bad pack: {e}")))?;
                    // Skipped entries are read and dropped: the pack's own check wants
                    // every part read.
                    if let Some(file) = files[i].take() {
                        self.parts.take(v.len() as u64);
                        let part = Part {
                            entry: pe.clone(),
                            file,
                            order: base + i,
                            bytes: v,
                        };
                        if to_workers.send(part).is_err() {
                            return Err(Error::Protocol("the pack's workers stopped".into()));
                        }
                    }
                    i += 1;
                    Ok(())
                });
                if let Err(e) = read {
                    self.failed.set(base + i, e);
                }
            }
            self.streams.give(stream.len() as u64);
        }
    }

    /// A worker: stages parts as they come until the decoder ends.
    fn work(&self, parts: &Mutex<Receiver<Part<'p>>>) {
        loop {
            let next = parts
                .lock()
                .map_err(drop)
                .and_then(|r| r.recv().map_err(drop));
            let Ok(part) = next else {
                return;
            };
            self.stage_part(&part);
            self.parts.give(part.bytes.len() as u64);
        }
    }

    fn stage_part(&self, part: &Part<'p>) {
        let ((e, at), pe) = (&part.file, &part.entry);
        if self.failed.before(part.order) {
            return;
        }
        let _one = heavy(pe, e).then(|| self.heavy.lock());
        match self.target.stage(pe, e, at, &part.bytes) {
            Ok(()) => test_stop_point("stage", 1 + self.done.fetch_add(1, Ordering::SeqCst)),
            Err(err) => self.failed.set(part.order, err),
        }
    }
}

impl Target<'_> {
    /// Stages one part: file `e` at staged place `at`, from pack entry `pe`'s `bytes`.
    fn stage(&self, pe: &PackEntry, e: &Entry, at: &[u8], bytes: &[u8]) -> Result<()> {
        match pe.encoding {
            crate::encoding::Encoding::StoreCopy => {
                let objects = store_objects(self.objects, &pe.path, pe.len)?;
                self.dir
                    .fill_file(self.b, e, at, |_, out| copy_object(objects, e, out))
            }
            _ => self.dir.fill_file(self.b, e, at, |size, mut out| {
                pe.encoding
                    .decode_part(self.b, &pe.path, size, &mut &bytes[..], &mut out)
            }),
        }
    }
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
/// ([`imager_core::Hash::object_name`]). The staged file is checked against the image's
/// size and hash like any content, so a damaged object fails the file, never the host.
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

/// A count of bytes in flight, at most `max` (a single larger amount passes alone).
struct Budget {
    used: Mutex<u64>,
    freed: Condvar,
    max: u64,
}

impl Budget {
    fn new(max: u64) -> Budget {
        Budget {
            used: Mutex::new(0),
            freed: Condvar::new(),
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

/// Whether staging pack entry `pe` (file `e`) holds large buffers: a gzip-aware,
/// Zucchini or bitcode patch is applied in memory (the host's old file, the patch, the new content),
/// and over [`HEAVY`] bytes such parts go one at a time.
fn heavy(pe: &PackEntry, e: &Entry) -> bool {
    const HEAVY: u64 = 8 << 20;
    let size = match e.kind {
        imager_core::Kind::File { size, .. } => size,
        _ => 0,
    };
    matches!(
        pe.encoding,
        crate::encoding::Encoding::GzipDelta
            | crate::encoding::Encoding::Zucchini
            | crate::encoding::Encoding::Bitcode
    ) && size.saturating_add(pe.len) > HEAVY
}

/// The first failure of a run, by the parts' order.
struct Failure {
    first: Mutex<Option<(usize, Error)>>,
    /// The order of the first failure so far (`usize::MAX`: none).
    at: AtomicUsize,
}

impl Default for Failure {
    fn default() -> Self {
        Failure {
            first: Mutex::new(None),
            at: AtomicUsize::new(usize::MAX),
        }
    }
}

impl Failure {
    fn set(&self, i: usize, e: Error) {
        self.at.fetch_min(i, Ordering::SeqCst);
        if let Ok(mut f) = self.first.lock() {
            if f.as_ref().is_none_or(|(j, _)| i < *j) {
                *f = Some((i, e));
            }
        }
    }
    fn any(&self) -> bool {
        self.at.load(Ordering::SeqCst) != usize::MAX
    }
    /// Whether a part before the one of order `i` failed: then `i` is not worth
    /// staging. (One after it failing is no reason: `i` may fail first.)
    fn before(&self, i: usize) -> bool {
        self.at.load(Ordering::SeqCst) < i
    }
    fn into_result(self) -> Result<()> {
        match self.first.into_inner() {
            Ok(None) => Ok(()),
            Ok(Some((_, e))) => Err(e),
            Err(_) => Err(Error::Agent("a pack's worker panicked".into())),
        }
    }
}
