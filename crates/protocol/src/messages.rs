//! Every message of the protocol as a named payload struct whose declaration is its
//! codec (fields travel in declared order), the inner types they carry, and the one
//! table ([`messages!`]) that gives each message its tag, its name and its decoder.
//! The `Error` message is in `errors.rs`, with the conversions of the library's error;
//! a pack's entries ([`PackEntry`]) and [`Encoding`] are declared, codec included, with
//! what they describe in [`crate::encoding`].

use super::errors::ErrorMessage;
use super::fetch::{Fetch, Fetched};
use crate::encoding::pack::PackEntry;
use crate::encoding::Encoding;
use crate::error::{Error, Result};
use crate::wire::{wire_enum, wire_struct, Dec, Enc, Wire};
use imager_core::{Entry, Hash};
use serde::Serialize;

/// The first bytes of every session: the `Hello`'s magic.
pub const MAGIC: &[u8; 4] = b"SYNC";

/// The controller's first message. Its layout never changes (magic, then version), so a
/// peer of another version gets a clear error instead of garbage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The controller's [`crate::PROTOCOL_VERSION`]: the agent refuses any other.
    pub version: u32,
}

impl Wire for Hello {
    const MIN: usize = 8;
    fn encode(&self, e: &mut Enc) {
        e.raw(MAGIC);
        self.version.encode(e);
    }
    fn decode(d: &mut Dec) -> Result<Self> {
        if d.take(4)? != MAGIC {
            return Err(Error::protocol(
                "the peer is not a syncer (bad magic in its first message)",
            ));
        }
        Ok(Hello {
            version: Wire::decode(d)?,
        })
    }
}

wire_struct! {
    /// The agent's answer to a `Hello`: who it is and what the host runs.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Welcome {
        /// The agent's [`crate::PROTOCOL_VERSION`].
        pub version: u32,
        /// The agent's crate version (its build is `exe`).
        pub agent: String,
        /// Which build the agent is: a blake3 of its executable's ELF build ID (of the
        /// whole file without one), which the controller compares with its own to tell
        /// an outdated agent.
        pub exe: Hash,
        /// The image the host was last synced to, and the one before it.
        pub image: Option<Hash>,
        /// The image the host records as its previous one, which a rollback puts back
        /// (`None`: it records none).
        pub previous: Option<Hash>,
        /// A commit interrupted earlier that this session finished first.
        pub rolled_forward: bool,
        /// An unfinished commit (to this image) the agent was told to drop.
        pub abandoned: Option<Hash>,
        /// The host's trust policy (`/etc/syncer/trust.toml`): what it demands, or why
        /// it cannot be used (then the host refuses every image); `None`: no policy.
        pub trust: Option<TrustSummary>,
        /// Why the host's record of its image is not trusted (its manifest does not hash
        /// to its ID): `image` is then `None`.
        pub damaged_record: Option<String>,
    }
}

wire_struct! {
    /// A host's trust policy, as the agent read it.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct TrustSummary {
        /// "2 requirements, 3 trusted keys", or why the policy cannot be used.
        pub summary: String,
        /// The blake3 of the policy and its allowed_signers file (`None`: unusable).
        pub digest: Option<Hash>,
    }
}

impl ImageSignature {
    /// The signatures as [`imager_trust`] checks them, named "signature N" and `of`
    /// (for messages).
    pub fn signed(sigs: &[ImageSignature], of: &str) -> Vec<imager_trust::Signed> {
        sigs.iter()
            .enumerate()
            .map(|(i, s)| imager_trust::Signed {
                statement: s.statement.clone(),
                signature: s.signature.clone(),
                origin: format!("signature {}{of}", i + 1),
            })
            .collect()
    }
}

impl TrustSummary {
    /// For reports: the summary and the policy's digest ("2 requirements, 3 trusted
    /// keys; policy 1a2b3c4d").
    pub fn describe(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}; policy {}", self.summary, &d.to_hex()[..8]),
            None => self.summary.clone(),
        }
    }
}

wire_struct! {
    /// One signature of an image (`imager sign`): the statement and the SSH signature
    /// over it, as stored beside the image.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct ImageSignature {
        /// The signed statement, as `imager sign` wrote it.
        pub statement: Vec<u8>,
        /// The SSH signature over `statement`.
        pub signature: Vec<u8>,
    }
}

wire_struct! {
    /// How does the host differ from the image it was last synced to?
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Status {
        /// Hash every file instead of trusting the host's hash cache.
        pub verify: bool,
    }
}

/// The image manifest as sent to an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestData {
    /// zstd-compressed (once per image, at a high level, by the controller).
    Zstd(Vec<u8>),
    /// A zstd delta from the manifest of the image the agent says it has.
    Delta {
        /// The ID of the manifest the delta applies to: the host's recorded image, or (in a
        /// `Manifest`) the view of its own tree it sent as `Identity`.
        base: Hash,
        /// The manifest as a zstd delta with the base's manifest text as reference.
        delta: Vec<u8>,
    },
    /// The image the agent says it has: it holds the manifest already.
    Recorded,
    /// Not yet (a host that records no image): the agent scans, answers with the ID of
    /// its own tree (`Identity`), and a `Manifest` follows, a delta against that tree's
    /// manifest when it is one the controller knows.
    Ask,
}

wire_enum!(ManifestData, "manifest form" {
    0 => ManifestData::Zstd(z),
    1 => ManifestData::Delta { base, delta },
    2 => ManifestData::Recorded,
    3 => ManifestData::Ask,
});

/// What a commit records as the host's previous image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Previous {
    /// The usual rule: the image the host had (when it changes).
    #[default]
    Keep,
    /// No previous image (a rollback to a host that had none).
    None,
    /// This image (a rollback puts back what the host had recorded).
    Image(Hash),
}

impl Previous {
    /// Record exactly `image` (none when `None`), whatever the host had.
    pub fn set(image: Option<Hash>) -> Previous {
        image.map_or(Previous::None, Previous::Image)
    }
}

wire_enum!(Previous, "previous form" {
    0 => Previous::Keep,
    1 => Previous::None,
    2 => Previous::Image(h),
});

wire_struct! {
    /// The image to compare the host with (and, unless a dry run, to push).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Target {
        /// The image's ID (the hash of its manifest).
        pub image: Hash,
        /// The image's manifest, in whichever form is cheapest for this host.
        pub manifest: ManifestData,
        /// The image's /usr/lib/imager/local-state.txt as it is (`None` when it has none:
        /// the built-in list applies). The agent checks it, and `triggers`, against the
        /// manifest's hashes: neither is the controller's to choose.
        pub local_state: Option<Vec<u8>>,
        /// The image's /usr/lib/imager/triggers.toml (empty when it has none).
        pub triggers: Vec<u8>,
        /// Hash every file instead of trusting the host's hash cache.
        pub verify: bool,
        /// Only look: write nothing on the host, not even the hash cache.
        pub dry_run: bool,
        /// What to record as the host's previous image.
        pub previous: Previous,
        /// The image's signatures: a host with a trust policy commits only an image
        /// they satisfy, and checks before it writes anything.
        pub signatures: Vec<ImageSignature>,
        /// The image's /usr/lib/imager/owned.txt as it is (`None`: the built-in list),
        /// checked like `local_state`: the prefixes below which the push deletes what
        /// the host made.
        pub owned: Option<Vec<u8>>,
        /// Run the triggers on a first install too (by default a push onto a root that
        /// holds none of the image's paths runs none).
        pub install_triggers: bool,
    }
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

wire_enum!(ChangeKind, "change kind" {
    0 => ChangeKind::Add,
    1 => ChangeKind::Content,
    2 => ChangeKind::Replace,
    3 => ChangeKind::Meta,
    4 => ChangeKind::Delete,
});

impl ChangeKind {
    /// The one-letter code of a status report: `A`dd, `M` content, `R`eplace, `m`eta,
    /// `D`elete.
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

wire_struct! {
    /// How one path on the host differs from the image (one line of a status or push
    /// report).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Change {
        /// The path, relative to the root, as raw bytes.
        pub path: Vec<u8>,
        /// What must happen to the host's path.
        pub kind: ChangeKind,
        /// The host's entry at the path (with its content hash), if it has one.
        pub host: Option<Entry>,
        /// What differs, item by item ([`super::item`]), for itemised reports.
        pub what: u32,
    }
}

wire_struct! {
    /// A path the host made that the image lacks and does not own (outside its owned
    /// prefixes, never in the host's recorded image): kept by every push, with all that
    /// is below it. Only the outermost such paths are listed.
    #[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
    pub struct Unmanaged {
        /// The outermost such path, relative to the root.
        #[serde(serialize_with = "crate::escaped")]
        pub path: Vec<u8>,
        /// Entries it holds, itself included.
        pub entries: u64,
    }
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

wire_enum!(KeptWhy, "kept reason" {
    0 => KeptWhy::Mount,
    1 => KeptWhy::LocalStateSymlink,
});

wire_struct! {
    /// A host path the scan found and every push leaves alone.
    #[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
    pub struct Kept {
        /// The path, relative to the root.
        #[serde(serialize_with = "crate::escaped")]
        pub path: Vec<u8>,
        /// Why every push leaves it alone.
        pub why: KeptWhy,
    }
}

/// Serializes a path as the project's escaped text.
pub fn escaped<S: serde::Serializer>(p: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&imager_core::tree::escape::escape(p))
}

/// Serializes a list of paths as the project's escaped text.
pub fn escaped_all<S: serde::Serializer>(
    ps: &[Vec<u8>],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(ps.iter().map(|p| imager_core::tree::escape::escape(p)))
}

wire_struct! {
    /// What a scan took.
    #[derive(Clone, Debug, Default, PartialEq, Serialize)]
    pub struct ScanStats {
        /// Entries the scan found (kept paths and sockets not counted).
        pub entries: u64,
        /// Files whose content was read and hashed (not in the hash cache, or `verify`).
        pub hashed_files: u64,
        /// Bytes read to hash those files.
        pub hashed_bytes: u64,
        /// Files whose hash came from the host's hash cache, unread.
        pub cached_files: u64,
        /// Wall-clock time of the scan, in seconds.
        pub seconds: f64,
    }
}

wire_struct! {
    /// How the host differs from an image (the answer to `Status` and `Target`).
    #[derive(Clone, Debug, PartialEq)]
    pub struct Differences {
        /// The image the host records (`None`: it records none).
        pub image: Option<Hash>,
        /// Each path that differs (in the answer to `Target`, `host` is given only for a
        /// `Content` change: the base of a delta).
        pub changes: Vec<Change>,
        /// For content the image needs: a host path that already holds it.
        pub have: Vec<(Hash, Vec<u8>)>,
        /// What the scan of the host took.
        pub scan: ScanStats,
        /// Mount points and local-state symlinks the scan left alone.
        pub kept: Vec<Kept>,
        /// Processes still running files that were replaced (the answer to `Status`;
        /// empty in the answer to `Target`, which comes before anything is replaced).
        pub stale: Vec<StaleUnit>,
        /// What the host made that the image lacks and does not own: kept, not drift.
        pub unmanaged: Vec<Unmanaged>,
    }
}

wire_struct! {
    /// The host files to send rsync signatures of (bases of rsync deltas).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct SignatureRequest {
        /// Paths relative to the root: each must be a file the `Target` found changed in
        /// content.
        pub paths: Vec<Vec<u8>>,
    }
}

wire_struct! {
    /// (path, signature) for each path asked.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Signatures {
        /// One (path, rsync signature of the host's file) per path asked, in the order
        /// asked.
        pub sigs: Vec<(Vec<u8>, Vec<u8>)>,
    }
}

wire_struct! {
    /// Content follows: this many files, this many bytes once written.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Stage {
        /// Files whose content will be staged.
        pub files: u64,
        /// Their size once written, in bytes: the agent checks the host has room for it.
        pub bytes: u64,
    }
}

wire_struct! {
    /// One file's content: `len` bytes of its encoding follow in `Data` messages.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Put {
        /// The file's path in the image, relative to the root.
        pub path: Vec<u8>,
        /// How the content that follows is encoded.
        pub encoding: Encoding,
        /// Bytes of the encoding that follow in `Data` messages (not the file's size).
        pub len: u64,
    }
}

wire_struct! {
    /// The agent's answer to a `Target` whose manifest is `Ask`: the ID of its own
    /// tree's host view (`compare::host_view`), and the paths it left alone.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Identity {
        /// The ID of the host's tree view: the hash of that manifest's text.
        pub tree: Hash,
        /// The paths the scan left alone (mount points, local-state symlinks).
        pub kept: Vec<Vec<u8>>,
    }
}

wire_struct! {
    /// The manifest of a `Target` sent with `Ask`; a `Delta` may have the host's own
    /// tree (its `Identity`) as base.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Manifest {
        /// The image's manifest: whole, or a `Delta` against the host's view or its
        /// recorded image.
        pub manifest: ManifestData,
    }
}

wire_struct! {
    /// Several files' content as one zstd stream (`crate::encoding::pack`): `len` bytes
    /// follow in `Data` messages, holding the entries' parts in order.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Pack {
        /// The files the stream holds, in the order of their parts.
        pub entries: Vec<PackEntry>,
        /// Bytes of the stream that follow in `Data` messages.
        pub len: u64,
        /// Entries (indexes) the host does not take: their parts are read and dropped.
        /// A pack published for hosts at an image serves a host that drifted from it
        /// in a few files; those come on their own.
        pub skip: Vec<u32>,
    }
}

/// A chunk of a file's encoded content: the rest of its frame, never compressed again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Data {
    /// The chunk, at most [`crate::CHUNK`] bytes.
    pub bytes: Vec<u8>,
}

impl Wire for Data {
    const MIN: usize = 0;
    fn encode(&self, e: &mut Enc) {
        e.raw(&self.bytes);
    }
    fn decode(d: &mut Dec) -> Result<Self> {
        Ok(Data {
            bytes: d.rest().to_vec(),
        })
    }
}

wire_struct! {
    /// What the agent did with a commit.
    #[derive(Clone, Debug, Default, PartialEq, Serialize)]
    pub struct Committed {
        /// Operations in the commit's journal (0: the host was already at the image).
        pub ops: u64,
        /// Seconds the agent staged for, from the `Stage` message to everything staged
        /// flushed: decoding and writing the content, the nodes it makes itself, a
        /// sync. (Agents before 2026-12-07 counted from the commit's request only.)
        pub stage_seconds: f64,
        /// Seconds from the end of staging to the recorded commit (journal written and
        /// applied).
        pub commit_seconds: f64,
    }
}

wire_struct! {
    /// The outcome of one trigger.
    #[derive(Clone, Debug, PartialEq, serde::Serialize)]
    pub struct TriggerRun {
        /// The trigger's name in the image's triggers.toml (`health` for a health check).
        pub name: String,
        /// Exit status; `None` if it was killed (timeout or signal).
        pub status: Option<i32>,
        /// Whether it was killed for running past its timeout.
        pub timed_out: bool,
        /// How long it ran, in seconds.
        pub seconds: f64,
        /// Its stdout and stderr, one after the other (64 KiB at most in all), or why it
        /// could not be started.
        pub output: String,
        /// Not run, and why (a trigger that needs a running system, on a root that
        /// is not one): neither a success nor a failure.
        pub skipped: Option<String>,
    }
}

impl TriggerRun {
    /// Whether it ran and failed (exited non-zero, was killed or timed out).
    pub fn failed(&self) -> bool {
        self.skipped.is_none() && self.status != Some(0)
    }
}

wire_struct! {
    /// A process that still maps a replaced file.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
    pub struct StaleProcess {
        /// Its process ID on the host.
        pub pid: u32,
        /// Its name (`/proc/PID/comm`).
        pub comm: String,
    }
}

wire_struct! {
    /// A systemd unit (or the agent's `stale::NO_UNIT`) whose processes still map
    /// files that were replaced since they started: restarting it loads the new ones.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
    pub struct StaleUnit {
        /// The unit's name (`nginx.service`).
        pub unit: String,
        /// By pid, at most the agent's `stale::MAX_LISTED`.
        pub processes: Vec<StaleProcess>,
        /// Processes beyond those listed.
        pub more_processes: u64,
        /// Root-relative, sorted, at most the agent's `stale::MAX_LISTED`.
        #[serde(serialize_with = "crate::escaped_all")]
        pub files: Vec<Vec<u8>>,
        /// Files beyond those listed.
        pub more_files: u64,
    }
}

wire_struct! {
    /// After a commit's triggers: the processes that still run replaced files.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct Stale {
        /// One per unit (or the processes under no unit) that runs replaced files.
        pub units: Vec<StaleUnit>,
    }
}

wire_struct! {
    /// Run a health check on the host (after a push), as a trigger would be run.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Health {
        /// The command, run by the agent as a trigger's command is.
        pub command: String,
        /// Seconds it may run before it is killed (the agent keeps it within 1 s to 7
        /// days).
        pub timeout: u64,
    }
}

/// The message table: `tag => Variant(Payload)` (or a bare `Variant` for a message
/// without fields) makes the [`Msg`] enum, its tags, its names and its decoder.
macro_rules! messages {
    ( $( $(#[$m:meta])* $tag:literal => $v:ident $( ( $p:ty ) )? ),* $(,)? ) => {
        /// A message of the protocol (module docs: the session it belongs to).
        #[derive(Clone, Debug, PartialEq)]
        pub enum Msg {
            $( $(#[$m])* $v $( ($p) )? ),*
        }

        impl Msg {
            /// The message's name (the variant's), as errors and the per-message byte
            /// counts show it.
            pub fn name(&self) -> &'static str {
                match self {
                    $( messages!(@pat $v $( $p )?) => stringify!($v), )*
                }
            }

            pub(super) fn tag(&self) -> u8 {
                match self {
                    $( messages!(@pat $v $( $p )?) => $tag, )*
                }
            }

            /// The fields, in the payload's own codec.
            pub(super) fn encode_fields(&self, e: &mut Enc) {
                match self {
                    $( messages!(@bind p $v $( $p )?) => {
                        $( let _: &$p = p; p.encode(e); )?
                    } )*
                }
            }

            /// A message from its tag (without the compression bit) and its fields,
            /// all of them.
            pub(super) fn decode_fields(tag: u8, fields: &[u8]) -> Result<Msg> {
                let mut d = Dec(fields);
                let msg = match tag {
                    $( $tag => Msg::$v $( (<$p as Wire>::decode(&mut d)?) )?, )*
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
    };
    (@pat $v:ident) => { Msg::$v };
    (@pat $v:ident $p:ty) => { Msg::$v(_) };
    (@bind $b:ident $v:ident) => { Msg::$v };
    (@bind $b:ident $v:ident $p:ty) => { Msg::$v($b) };
}

messages! {
    /// Controller → agent, first in every session: the protocol version.
    1 => Hello(Hello),
    /// Agent → controller: the answer to `Hello`.
    2 => Welcome(Welcome),
    /// Agent → controller: it stops the session, and why (in place of the answer
    /// expected).
    3 => Error(ErrorMessage),
    /// Controller → agent: how does the host differ from its recorded image?
    4 => Status(Status),
    /// Controller → agent: the image to compare the host with, and to push.
    5 => Target(Target),
    /// Agent → controller: the answer to `Status` and `Target`.
    6 => Differences(Differences),
    /// Controller → agent: which host files to send rsync signatures of.
    7 => SignatureRequest(SignatureRequest),
    /// Agent → controller: the answer to `SignatureRequest`.
    8 => Signatures(Signatures),
    /// Controller → agent: content follows (the agent checks it has room).
    9 => Stage(Stage),
    /// Controller → agent: one file's content follows in `Data` messages.
    10 => Put(Put),
    /// Controller → agent: the next chunk of the `Put` or `Pack` before it.
    11 => Data(Data),
    /// Controller → agent: everything is staged; commit it, then run the triggers.
    12 => Commit,
    /// Agent → controller: the commit is done and recorded.
    13 => Committed(Committed),
    /// Agent → controller: one trigger after the commit ran (or was skipped).
    14 => TriggerRan(TriggerRun),
    /// Agent → controller: the last answer to a `Commit` (triggers and `Stale` sent).
    15 => Done,
    /// Controller → agent: the session ends; the agent exits.
    16 => Bye,
    /// Controller → agent: run a health check.
    17 => Health(Health),
    /// Agent → controller: the health check's outcome.
    18 => HealthResult(TriggerRun),
    /// Agent → controller, after a commit's triggers: what still runs replaced files.
    19 => Stale(Stale),
    /// Controller → agent: several files' content follows in `Data` messages.
    20 => Pack(Pack),
    /// Agent → controller: the answer to a `Target` whose manifest is `Ask`.
    21 => Identity(Identity),
    /// Controller → agent: the manifest an `Ask` left out of the `Target`.
    22 => Manifest(Manifest),
    /// Controller → agent: fetch content from HTTP mirrors.
    23 => Fetch(Fetch),
    /// Agent → controller: the answer to `Fetch`.
    24 => Fetched(Fetched),
}
