//! How each file's content travels to a host, decided ([`choose`]) and encoded
//! ([`encode_all`]: deltas from the cache, packs) before anything is sent; the same for
//! a push and for what is published.

use super::report::HostReport;
use super::Image;
use crate::delta::Cache;
use crate::encoding::{rsync_delta, Encoding};
use crate::error::{Error, Result};
use crate::plan::{self, BuiltPack, Item, Wanted};
use crate::protocol::{Change, ChangeKind, SignatureRequest, Signatures};
use imager::store::Store;
use imager::tree::escape::escape;
use imager::{Hash, Kind, Tree};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

/// Files smaller than this are sent whole rather than as an rsync delta (the signature
/// round trip costs more than it saves).
const MIN_RSYNC: u64 = 16 << 10;

/// The host's differences, the contents it holds already and whether its agent takes
/// store copies: what a plan starts from.
pub(super) type Differing<'a> = (&'a [Change], &'a [(Hash, Vec<u8>)], bool);

/// A plan's content: every file's item, the packs made (or reused), and the groups of
/// items whose packs are still to be made (when the plan was asked to leave them for
/// the sending: [`plan::make_pack`] each as the one before it goes out).
pub(crate) struct Planned {
    pub items: Vec<Item>,
    pub packs: Vec<BuiltPack>,
    pub pending: Vec<Vec<usize>>,
}

/// Decides how each file's content travels ([`choose`]) from the host's differences
/// and the contents it has, asks the host for the rsync signatures that needs, and
/// encodes every file (deltas from the cache; `shared` packs reused where they fit),
/// leaving the packs still to be made to the sending when `later`.
pub(super) fn plan(
    s: &mut super::Planning,
    store: &Store,
    image: &Image,
    cache: &Cache,
    (changes, have, store_copy): Differing,
    (shared, later): (&[plan::Shared], bool),
    r: &mut HostReport,
) -> Result<Planned> {
    for c in changes {
        match c.kind {
            ChangeKind::Add => r.added += 1,
            ChangeKind::Content | ChangeKind::Replace => r.changed += 1,
            ChangeKind::Meta => r.metadata += 1,
            ChangeKind::Delete => r.deleted += 1,
        }
    }
    let choices = choose(changes, &image.tree, have, store_copy, |h| {
        store.has_object(h)
    });
    let sigs = signatures(s, &choices)?;
    let planned = encode_all(store, cache, &sigs, choices, shared, later)?;
    for it in planned.items.iter().filter(|it| !it.packed) {
        let k = r.planned.of(&it.encoding);
        k.files += 1;
        k.bytes += it.payload.len();
        k.content_bytes += it.size;
    }
    for p in &planned.packs {
        count_pack(r, p, &planned.items);
    }
    Ok(planned)
}

/// Counts a pack into the report's plan (when it is made: a pack made while the one
/// before it is sent counts as it comes).
pub(super) fn count_pack(r: &mut HostReport, p: &BuiltPack, items: &[Item]) {
    for (&i, bytes) in p.items.iter().zip(pack_shares(p, items)) {
        let k = r.planned.of(&items[i].encoding);
        k.files += 1;
        k.bytes += bytes;
        k.content_bytes += items[i].size;
    }
    r.packs.packs += 1;
    r.packs.files += p.items.len() as u64;
    r.packs.raw_bytes += p.raw;
    r.packs.bytes += p.payload.len() as u64;
}

/// Every file encoded as chosen, packed where packs take them (first the `shared` ones
/// that fit, [`plan::reuse`]), the rest finished alone: the same for a host and for
/// [`crate::publish`], so what is published for a host at an image is byte for byte
/// what a push to it would send. With `later`, the new packs are left to be made
/// ([`Planned::pending`]).
pub(crate) fn encode_all(
    store: &Store,
    cache: &Cache,
    sigs: &HashMap<Vec<u8>, Vec<u8>>,
    choices: Vec<Choice>,
    shared: &[plan::Shared],
    later: bool,
) -> Result<Planned> {
    // Largest first, each thread taking the next as it is free (`par_bridge` pulls in
    // order): the plan of a cold cache ends when its longest file does (a 7 MB
    // interpreter's bsdiff and Zucchini take seconds), so that one must not start last.
    let n = choices.len();
    let mut order: Vec<(usize, Choice)> = choices.into_iter().enumerate().collect();
    order.sort_by_key(|(_, c)| std::cmp::Reverse(c.size));
    let mut done: Vec<(usize, Item)> = order
        .into_iter()
        .par_bridge()
        .map(|(i, c)| encode(store, cache, sigs, c).map(|it| (i, it)))
        .collect::<Result<_>>()?;
    done.sort_unstable_by_key(|(i, _)| *i);
    debug_assert_eq!(done.len(), n);
    let mut items: Vec<Item> = done.into_iter().map(|(_, it)| it).collect();
    let mut packs = plan::reuse(&mut items, shared);
    let mut pending = plan::groups(&mut items);
    plan::finish_alone(store, cache, &mut items)?;
    if !later {
        for g in pending.drain(..) {
            packs.push(plan::make_pack(
                store,
                cache,
                &items,
                (g, plan::Making::Before),
            )?);
        }
    }
    Ok(Planned {
        items,
        packs,
        pending,
    })
}

/// Each packed file's share of its pack's bytes on the wire: in proportion to its part
/// compressed alone where that is known (a patch; whole content with a whole candidate),
/// else to its raw length. By raw length alone a gzip-aware patch, whose raw form is
/// mostly the zeros of a text delta, would be charged several times what it costs.
pub(super) fn pack_shares(p: &BuiltPack, items: &[Item]) -> Vec<u64> {
    // Skipped entries' bytes go to the files taken (they travel for them).
    let weights: Vec<u64> = p
        .entries
        .iter()
        .enumerate()
        .filter(|(k, _)| !p.skip.contains(&(*k as u32)))
        .zip(&p.items)
        .map(|((_, e), &i)| {
            let it = &items[i];
            match (
                it.payload.len(),
                it.candidates.as_ref().and_then(|c| c.whole),
            ) {
                (0, Some(w)) if it.encoding == Encoding::Whole => w,
                (0, _) => e.len,
                (n, _) => n,
            }
        })
        .collect();
    plan::apportion(p.payload.len() as u64, &weights)
}

/// How one file's content may travel, decided before anything is encoded.
type Choice = Wanted;

/// How the content of each changed file of `tree` travels: a local copy when the host
/// holds it already (`have`), a store copy of a new file when the host's agent reads the
/// store's objects itself (`store_copy`: a `local:` host), chunked when it is large (against the host's old version
/// when the store holds that: [`crate::encoding::chunked`]), a zstd delta from the host's old version when the store holds that (`in_store`),
/// an rsync delta when it does not and the file is large enough to be worth the
/// signature round trip, else whole. Metadata changes, deletions and non-files carry no
/// content.
pub(crate) fn choose(
    changes: &[Change],
    tree: &Tree,
    have: &[(Hash, Vec<u8>)],
    store_copy: bool,
    in_store: impl Fn(&Hash) -> bool,
) -> Vec<Choice> {
    let have: HashMap<Hash, &Vec<u8>> = have.iter().map(|(h, p)| (*h, p)).collect();
    let mut out = Vec::new();
    for c in changes {
        if matches!(c.kind, ChangeKind::Meta | ChangeKind::Delete) {
            continue;
        }
        let Some(Kind::File { hash, size }) = tree.get(&c.path).map(|e| &e.kind) else {
            continue;
        };
        let old = match (&c.kind, c.host.as_ref().map(|h| &h.kind)) {
            (ChangeKind::Content, Some(Kind::File { hash, size })) => Some((*hash, *size)),
            _ => None,
        };
        let (encoding, base) = if let Some(p) = have.get(hash) {
            (Encoding::LocalCopy { from: (*p).clone() }, None)
        } else if store_copy && old.is_none() && in_store(hash) {
            // What would travel whole (a new path, a first install) is copied from the
            // store by the host's agent; changed files keep their deltas, computed once
            // and cached, which cost the agent less than the copy and hash of the whole.
            (Encoding::StoreCopy, None)
        } else if *size > crate::encoding::chunked::LARGE {
            (Encoding::Chunked, old.filter(|(o, _)| in_store(o)))
        } else if let Some(o) = old.filter(|(o, _)| in_store(o)) {
            (Encoding::ZstdDelta, Some(o))
        } else if old.is_some() && *size >= MIN_RSYNC {
            (Encoding::RsyncDelta, None)
        } else {
            (Encoding::Whole, None)
        };
        out.push(Choice {
            path: c.path.clone(),
            hash: *hash,
            size: *size,
            encoding,
            base,
        });
    }
    out
}

/// The host's rsync signatures of the files that travel as rsync deltas (one round
/// trip, none when there are no such files).
fn signatures(s: &mut super::Planning, choices: &[Choice]) -> Result<HashMap<Vec<u8>, Vec<u8>>> {
    let paths: Vec<Vec<u8>> = choices
        .iter()
        .filter(|c| c.encoding == Encoding::RsyncDelta)
        .map(|c| c.path.clone())
        .collect();
    let mut sigs: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    if !paths.is_empty() {
        let Signatures { sigs: v } = s.signatures(SignatureRequest { paths })?;
        sigs.extend(v);
    }
    Ok(sigs)
}

/// One file's encoded content as chosen (a delta only when smaller than the whole).
fn encode(
    store: &Store,
    cache: &Cache,
    sigs: &HashMap<Vec<u8>, Vec<u8>>,
    w: Choice,
) -> Result<Item> {
    plan::encode(store, cache, w, |w| match &w.encoding {
        Encoding::RsyncDelta => {
            let sig = sigs
                .get(&w.path)
                .ok_or_else(|| Error::Protocol(format!("no signature for {}", escape(&w.path))))?;
            let new = store.read_object(&w.hash)?;
            let d = rsync_delta::encode(sig, &new, cache.level())
                .map(Arc::new)
                .map_err(|m| Error::Encode(format!("encoding {}: {m}", escape(&w.path))))?;
            let whole = || {
                cache
                    .whole(store, &w.hash)
                    .map_err(|m| Error::Encode(format!("encoding {}: {m}", escape(&w.path))))
            };
            // An rsync delta, or the whole file when that is smaller.
            smaller(d, Encoding::RsyncDelta, w.size, whole)
        }
        // A local copy: nothing travels but the path.
        e => Ok((e.clone(), Arc::new(Vec::new()))),
    })
}

/// A delta, unless the whole file compressed is smaller (checked only when the delta is
/// not clearly small).
fn smaller(
    d: Arc<Vec<u8>>,
    kind: Encoding,
    size: u64,
    whole: impl FnOnce() -> Result<Arc<Vec<u8>>>,
) -> Result<(Encoding, Arc<Vec<u8>>)> {
    if (d.len() as u64) * 4 < size {
        return Ok((kind, d));
    }
    let w = whole()?;
    Ok(if w.len() <= d.len() {
        (Encoding::Whole, w)
    } else {
        (kind, d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use imager::Entry;

    fn file(path: &str, size: u64, content: &[u8]) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind: Kind::File {
                size,
                hash: Hash::of(content),
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        }
    }

    fn change(path: &str, kind: ChangeKind, host: Option<Entry>) -> Change {
        Change {
            path: path.as_bytes().to_vec(),
            kind,
            host,
            what: 0,
        }
    }

    #[test]
    fn each_file_travels_the_cheapest_way_its_host_and_the_store_allow() {
        let big = 1 << 20;
        let root = Entry {
            path: b"/".to_vec(),
            kind: Kind::Dir,
            mode: 0o755,
            ..file("/", 0, b"")
        };
        let tree = Tree::new(vec![
            root,
            file("/copied", 10, b"held"),
            file("/delta", big, b"new-d"),
            file("/huge", 5 << 30, b"new-h"),
            file("/large", (64 << 20) + 1, b"new-l"),
            file("/meta", 3, b"m"),
            file("/rsync", big, b"new-r"),
            file("/small", 100, b"new-s"),
        ])
        .expect("tree");
        let old = |p: &str, c: &[u8]| Some(file(p, big, c));
        let changes = vec![
            change("/copied", ChangeKind::Add, None),
            change("/delta", ChangeKind::Content, old("/delta", b"old-d")),
            change("/huge", ChangeKind::Content, old("/huge", b"old-h")),
            change("/large", ChangeKind::Content, old("/large", b"old-l")),
            change("/meta", ChangeKind::Meta, None),
            change("/rsync", ChangeKind::Content, old("/rsync", b"old-r")),
            change("/small", ChangeKind::Content, old("/small", b"old-s")),
            change("/gone", ChangeKind::Delete, None),
        ];
        let have = vec![(Hash::of(b"held"), b"/elsewhere".to_vec())];
        // The store holds the old versions of /delta and /huge only.
        let stored = [Hash::of(b"old-d"), Hash::of(b"old-h")];
        let got: Vec<(String, Encoding, Option<Hash>)> =
            choose(&changes, &tree, &have, false, |h| stored.contains(h))
                .into_iter()
                .map(|c| (escape(&c.path), c.encoding, c.base.map(|(h, _)| h)))
                .collect();
        assert_eq!(
            got,
            vec![
                (
                    "/copied".into(),
                    Encoding::LocalCopy {
                        from: b"/elsewhere".to_vec()
                    },
                    None
                ),
                (
                    "/delta".into(),
                    Encoding::ZstdDelta,
                    Some(Hash::of(b"old-d"))
                ),
                // Larger than an agent holds in memory: chunked, against the old
                // version the store has, or alone when it has none.
                ("/huge".into(), Encoding::Chunked, Some(Hash::of(b"old-h"))),
                ("/large".into(), Encoding::Chunked, None),
                ("/rsync".into(), Encoding::RsyncDelta, None),
                // Too small for the signature round trip to pay.
                ("/small".into(), Encoding::Whole, None),
            ]
        );
    }

    #[test]
    fn a_delta_travels_only_when_smaller_than_the_whole_file() {
        let bytes = |n: usize| Arc::new(vec![0u8; n]);
        let never = || -> Result<Arc<Vec<u8>>> { panic!("the whole file was not needed") };
        // Clearly small: the whole file is not even compressed.
        let (e, d) = smaller(bytes(10), Encoding::ZstdDelta, 1000, never).expect("smaller");
        assert_eq!((e, d.len()), (Encoding::ZstdDelta, 10));
        // Not clearly small, and the whole is smaller: whole.
        let (e, d) =
            smaller(bytes(600), Encoding::RsyncDelta, 1000, || Ok(bytes(500))).expect("smaller");
        assert_eq!((e, d.len()), (Encoding::Whole, 500));
        // Not clearly small, but smaller than the whole: the delta.
        let (e, d) =
            smaller(bytes(600), Encoding::RsyncDelta, 1000, || Ok(bytes(700))).expect("smaller");
        assert_eq!((e, d.len()), (Encoding::RsyncDelta, 600));
    }
}
