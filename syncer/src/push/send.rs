//! Sending a push's content: first what the host can fetch from the mirrors of a
//! published store ([`fetch`]), then the rest from the controller, lone files and packs
//! in `Data` frames ([`send_items`]; without mirrors each pack is made while the one
//! before it goes out), counting what went out by way of sending.

use super::content::{count_pack, pack_shares};
use super::published;
use super::report::{ByKind, HostReport};
use super::{Observer, Staging};
use crate::delta::Cache;
use crate::encoding::pack::{self, PackEntry};
use crate::encoding::Encoding;
use crate::error::{Error, Result};
use crate::plan::{BuiltPack, Item};
use crate::protocol::{BlobUse, Pack, Put, CHUNK};
use imager::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};

/// What the controller sends itself: the packs and lone items no mirror gave.
pub(super) struct Left<'a> {
    packs: Vec<&'a BuiltPack>,
    alone: Vec<&'a Item>,
}

impl<'a> Left<'a> {
    pub(super) fn all(items: &'a [Item], packs: &'a [BuiltPack]) -> Left<'a> {
        Left {
            packs: packs.iter().collect(),
            alone: items.iter().filter(|it| !it.packed).collect(),
        }
    }
}

/// Asks the host to fetch every published blob of the plan from `mirrors` (packs by
/// their key, lone files by what they are: [`crate::publish`] names both the same way),
/// records what it got, and leaves the rest to the controller.
pub(super) fn fetch<'a>(
    s: &mut Staging,
    all: Left<'a>,
    mirrors: &[String],
    rate: u64,
    cache: &Cache,
    r: &mut HostReport,
) -> Result<Left<'a>> {
    let mut left = Left {
        packs: Vec::new(),
        alone: Vec::new(),
    };
    // Each blob's pack or item, in the order of `blobs`.
    let mut which: Vec<std::result::Result<&BuiltPack, &Item>> = Vec::new();
    let mut blobs = Vec::new();
    for p in all.packs {
        blobs.push(crate::protocol::Blob {
            name: published::pack_name(&p.key, p.level),
            len: p.payload.len() as u64,
            hash: Hash::of(&p.payload),
            stages: BlobUse::Pack {
                entries: p.entries.clone(),
                skip: p.skip.clone(),
            },
        });
        which.push(Ok(p));
    }
    for it in all.alone {
        let Some(name) = published::item_name(it, cache) else {
            left.alone.push(it);
            continue;
        };
        blobs.push(crate::protocol::Blob {
            name,
            len: it.payload.len(),
            hash: Hash::of(it.payload.bytes()),
            stages: BlobUse::Put {
                path: it.path.clone(),
                encoding: it.encoding.clone(),
            },
        });
        which.push(Err(it));
    }
    if blobs.is_empty() {
        return Ok(left);
    }
    let answer = s.fetch(crate::protocol::Fetch {
        mirrors: mirrors.to_vec(),
        rate,
        blobs,
    })?;
    let missing: std::collections::HashSet<u32> = answer.missing.iter().copied().collect();
    if missing.iter().any(|&m| m as usize >= which.len()) {
        return Err(Error::Protocol(
            "Fetched names a blob that was not asked for".into(),
        ));
    }
    r.content.blobs = which.len() as u64;
    r.content.blobs_missing = missing.len() as u64;
    for (n, w) in which.into_iter().enumerate() {
        match (missing.contains(&(n as u32)), w) {
            (true, Ok(p)) => left.packs.push(p),
            (true, Err(it)) => left.alone.push(it),
            (false, Ok(p)) => r.content.mirrors_bytes += p.payload.len() as u64,
            (false, Err(it)) => r.content.mirrors_bytes += it.payload.len(),
        }
    }
    r.content.mirrors = answer.mirrors;
    Ok(left)
}

/// Packs made while the ones before them are sent (`Planned::pending`), each with the
/// raw bytes of its group, by which the progress counts it until it is made.
pub(super) struct Later<'a> {
    pub packs: &'a mut dyn Iterator<Item = Result<BuiltPack>>,
    pub raw: u64,
    /// Where each is kept once it is sent (while the next is made).
    pub cache: &'a Cache,
}

/// The packs made beside the sending, as they come; `starved` is set when the sending
/// had to wait for one after the first (the link takes bytes faster than they are
/// made): the maker's next pack of whole contents is made fast ([`crate::plan::FAST_LEVEL`]).
pub(super) struct Made<'a> {
    pub rx: Receiver<Result<BuiltPack>>,
    pub starved: &'a AtomicBool,
    pub first: bool,
}

impl Iterator for Made<'_> {
    type Item = Result<BuiltPack>;

    fn next(&mut self) -> Option<Result<BuiltPack>> {
        let got = match self.rx.try_recv() {
            Ok(p) => Some(p),
            Err(TryRecvError::Disconnected) => None,
            Err(TryRecvError::Empty) => {
                if !self.first {
                    self.starved.store(true, Ordering::Relaxed);
                }
                self.rx.recv().ok()
            }
        };
        self.first = false;
        got
    }
}

/// Sends what is `left` to the host (`Stage` was sent; `items` are what packs index),
/// then each pack made `later` as it comes (counted into the report's plan then),
/// counting into the report's `sent` what went out (all of it unless this fails). The
/// commit is the caller's next step.
pub(super) fn send_items(
    s: &mut Staging,
    items: &[Item],
    left: &Left,
    later: Later,
    (host, obs): (&str, &dyn Observer),
    r: &mut HostReport,
) -> Result<()> {
    let mut progress = Progress {
        host,
        obs,
        total: later.raw
            + left.alone.iter().map(|i| i.payload.len()).sum::<u64>()
            + left
                .packs
                .iter()
                .map(|p| p.payload.len() as u64)
                .sum::<u64>(),
        done: 0,
    };
    let (copies, alone): (Vec<&Item>, Vec<&Item>) = left
        .alone
        .iter()
        .partition(|it| it.encoding == Encoding::StoreCopy);
    send_store_copies(s, &copies, &mut r.sent)?;
    // Lone files first: the first pack to be made is made meanwhile.
    for it in alone {
        s.put(Put {
            path: it.path.clone(),
            encoding: it.encoding.clone(),
            len: it.payload.len(),
        })?;
        it.payload.for_each_piece(CHUNK, |chunk| {
            s.data(chunk.to_vec())?;
            r.sent.of(&it.encoding).bytes += chunk.len() as u64;
            progress.add(chunk.len() as u64);
            Ok(())
        })?;
        let k = r.sent.of(&it.encoding);
        k.files += 1;
        k.content_bytes += it.size;
    }
    for p in &left.packs {
        send_pack(s, p, items, &mut progress, &mut r.sent)?;
    }
    for p in later.packs {
        let p = p?;
        count_pack(r, &p, items);
        progress.total = (progress.total + p.payload.len() as u64).saturating_sub(p.raw);
        send_pack(s, &p, items, &mut progress, &mut r.sent)?;
        if p.unkept {
            later.cache.keep_pack(&p.key, p.level, &p.payload);
        }
    }
    Ok(())
}

/// The bytes sent of those to send, as the observer is told them.
struct Progress<'a> {
    host: &'a str,
    obs: &'a dyn Observer,
    total: u64,
    done: u64,
}

impl Progress<'_> {
    fn add(&mut self, n: u64) {
        self.done += n;
        self.obs
            .bytes(self.host, self.total.max(self.done), self.done);
    }
}

/// Sends one pack, each chunk's bytes counted to the packed files in order, each up to
/// its share.
fn send_pack(
    s: &mut Staging,
    p: &BuiltPack,
    items: &[Item],
    progress: &mut Progress,
    sent: &mut ByKind,
) -> Result<()> {
    s.pack(crate::protocol::Pack {
        entries: p.entries.clone(),
        skip: p.skip.clone(),
        len: p.payload.len() as u64,
    })?;
    let shares = pack_shares(p, items);
    let mut owed = p.items.iter().zip(shares).peekable();
    let mut left_of_first = owed.peek().map_or(0, |(_, b)| *b);
    for chunk in p.payload.chunks(CHUNK) {
        s.data(chunk.to_vec())?;
        progress.add(chunk.len() as u64);
        let mut n = chunk.len() as u64;
        while n > 0 {
            let Some((&i, _)) = owed.peek() else { break };
            let take = n.min(left_of_first);
            sent.of(&items[i].encoding).bytes += take;
            (n, left_of_first) = (n - take, left_of_first - take);
            if left_of_first == 0 {
                owed.next();
                left_of_first = owed.peek().map_or(0, |(_, b)| *b);
            }
        }
    }
    for &i in &p.items {
        let k = sent.of(&items[i].encoding);
        k.files += 1;
        k.content_bytes += items[i].size;
    }
    Ok(())
}

/// Store copies per pack: the agent's workers share out a pack's files, and a pack's
/// list of paths stays a small message.
const STORE_COPIES_PER_PACK: usize = 4096;

/// Sends a `local:` host's store copies as packs whose parts are empty (the agent copies
/// each file from the store's objects on the pack's workers, in parallel, where lone
/// `Put`s would be staged one after another).
fn send_store_copies(s: &mut Staging, copies: &[&Item], sent: &mut ByKind) -> Result<()> {
    if copies.is_empty() {
        return Ok(());
    }
    let empty = pack::compress(&[], 1).map_err(Error::Encode)?;
    for batch in copies.chunks(STORE_COPIES_PER_PACK) {
        s.pack(Pack {
            entries: batch
                .iter()
                .map(|it| PackEntry {
                    path: it.path.clone(),
                    encoding: Encoding::StoreCopy,
                    len: 0,
                })
                .collect(),
            skip: Vec::new(),
            len: empty.len() as u64,
        })?;
        s.data(empty.clone())?;
        let k = sent.of(&Encoding::StoreCopy);
        k.bytes += empty.len() as u64;
        k.files += batch.len() as u64;
        k.content_bytes += batch.iter().map(|it| it.size).sum::<u64>();
    }
    Ok(())
}
