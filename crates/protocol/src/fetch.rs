//! The messages of a fetch from HTTP mirrors (`Fetch`, answered by `Fetched`) and the
//! blobs they name: how a host takes published content instead of the controller's
//! stream. Part of [`crate`]'s message set; the tag table is in `messages.rs`.

use crate::encoding::pack::PackEntry;
use crate::encoding::Encoding;
use crate::wire::{wire_enum, wire_struct};
use imager_core::Hash;
use serde::Serialize;

wire_struct! {
    /// Fetch content from HTTP mirrors instead of the controller's stream (sent after
    /// `Stage`): each blob from the first mirror that has it, checked by its length and
    /// hash before it is staged. Answered by `Fetched`; what no mirror gave follows from
    /// the controller as `Pack`/`Put` messages.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Fetch {
        /// Base URLs, in order (the colo's cache first, then the origin), each ending in `/`.
        pub mirrors: Vec<String>,
        /// Bytes per second for these fetches (0: no limit).
        pub rate: u64,
        /// The blobs to fetch and what each stages; `Fetched` names them by index.
        pub blobs: Vec<Blob>,
    }
}

wire_struct! {
    /// One published file (`crate::publish`): its name below a mirror's URL, its length
    /// and blake3, and what it stages.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Blob {
        /// Its name below each mirror's base URL.
        pub name: String,
        /// Its length in bytes, checked before its hash.
        pub len: u64,
        /// The blake3 of its bytes.
        pub hash: Hash,
        /// What its bytes stage once checked.
        pub stages: BlobUse,
    }
}

/// What a fetched blob is: a pack's stream (its entries, and those the host skips, as
/// in a `Pack`) or one file's encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobUse {
    /// A pack's zstd stream, as a `Pack` message's `Data` would carry it.
    Pack {
        /// The files the stream holds, in the order of their parts.
        entries: Vec<PackEntry>,
        /// Entries (indexes) the host does not take: their parts are read and dropped.
        skip: Vec<u32>,
    },
    /// One file's encoded content, as a `Put`'s `Data` would carry it.
    Put {
        /// The file's path in the image, relative to the root.
        path: Vec<u8>,
        /// How the blob's bytes are encoded.
        encoding: Encoding,
    },
}

wire_enum!(BlobUse, "blob use" {
    0 => BlobUse::Pack { entries, skip },
    1 => BlobUse::Put { path, encoding },
});

wire_struct! {
    /// The answer to a `Fetch`: the blobs (indexes) no mirror gave, and each mirror's
    /// account.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct Fetched {
        /// Indexes into the `Fetch`'s blobs that no mirror gave: the controller sends
        /// those.
        pub missing: Vec<u32>,
        /// One account per mirror, in the `Fetch`'s order.
        pub mirrors: Vec<MirrorStats>,
    }
}

wire_struct! {
    /// What one mirror gave a host during a `Fetch`.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
    pub struct MirrorStats {
        /// The mirror's base URL, as the `Fetch` gave it.
        pub url: String,
        /// Bytes received (those of blobs that failed their check included).
        pub bytes: u64,
        /// HTTP requests made to it (a resumed blob takes several).
        pub requests: u64,
        /// Blobs it gave that passed their check.
        pub blobs: u64,
        /// Responses its cache served (`X-Cache-Status: HIT`), and those it had to fetch.
        pub cache_hits: u64,
        /// Responses its cache had to fetch first (any other `X-Cache-Status`).
        pub cache_misses: u64,
        /// Blobs it does not have (404), connection or HTTP errors, and blobs whose bytes
        /// were wrong (length or hash): each sends the blob to the next mirror.
        pub not_found: u64,
        /// Connection or HTTP errors other than a 404.
        pub errors: u64,
        /// Blobs whose length or hash was wrong.
        pub corrupt: u64,
        /// Requests that resumed an interrupted transfer with a Range.
        pub resumed: u64,
        /// The last error, for the report.
        pub last_error: String,
    }
}
