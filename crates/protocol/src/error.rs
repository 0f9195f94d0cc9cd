//! The error type of the controller and the agent (controller-only variants such as
//! `Inventory` and `RolloutState` live here too, for one type across the syncer).
//! Filesystem errors come from imager's own type (they carry the path and the action);
//! protocol errors say what was malformed; errors an agent reports travel back as text
//! and are shown with the host's name by the caller.
//! Nearly every other module uses this one, so it uses none of them: how an error
//! crosses the wire (the `Error` message, [`Error::from_agent`], [`Error::to_message`])
//! is the protocol's.

use imager_core::Hash;

/// A result whose error is, by default, this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a session, on either side: its variant says whose fault it is and
/// what a caller may do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed (the error names the path and the action).
    #[error(transparent)]
    Fs(#[from] imager_core::Error),

    /// The peer sent something this side cannot accept (bad frame, version, message).
    #[error("protocol error: {0}")]
    Protocol(String),

    /// The connection ended or failed while a message was expected or being sent.
    #[error("connection: {0}")]
    Connection(String),

    /// The session ended and the agent's process (or ssh) exited: `text` says what was
    /// going on, its status and its stderr; `code` is its exit code (255: ssh itself
    /// failed; 126/127: the remote shell could not run the agent), for callers to act on
    /// without reading the text.
    #[error("connection: {text}")]
    AgentExited {
        /// What was going on, the exit status and the process's stderr.
        text: String,
        /// The exit code (`None`: killed by a signal).
        code: Option<i32>,
    },

    /// The agent reported a failure.
    #[error("{0}")]
    Agent(String),

    /// The host is in the middle of a commit that stopped after its commit point (the
    /// message says what blocks it and the ways out).
    #[error("{1}")]
    MidCommit(Box<MidCommit>, String),

    /// A host spec that names no host (`ssh://...`, `local:/abs/path`).
    #[error("{0}")]
    HostSpec(String),

    /// The controller could not encode what a host needs (a manifest, a delta).
    #[error("{0}")]
    Encode(String),

    /// This program could not find or prepare itself as the agent to install.
    #[error("{0}")]
    SelfExe(String),

    /// An inventory file is unreadable or wrong (the message names the file and line).
    #[error("{0}")]
    Inventory(String),

    /// A rollout's saved state is unreadable, unwritable or of another rollout.
    #[error("{0}")]
    RolloutState(String),

    /// A rollback cannot be done as asked (the host records no previous image).
    #[error("{0}")]
    Rollback(String),

    /// An image the controller's `require_signed` policy does not accept.
    #[error("{0}")]
    Unsigned(String),

    /// A plan the controller will not carry out (it deletes more than `--max-delete`).
    #[error("{0}")]
    Refused(String),
}

impl Error {
    /// An [`Error::Protocol`] saying `m`: what the peer sent that this side cannot accept.
    pub fn protocol(m: impl Into<String>) -> Error {
        Error::Protocol(m.into())
    }
}

/// A commit a host is in the middle of: what [`Error::MidCommit`] carries, an agent's
/// `Error` message says (its wire form is the protocol's) and a push's report shows.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MidCommit {
    /// The image it commits to (`None`: its journal cannot be read).
    #[serde(serialize_with = "hex_opt")]
    pub image: Option<Hash>,
    /// Operations of its journal done, and in all (`None`: not known).
    pub applied: Option<u64>,
    /// Operations in its journal in all (`None`: not known).
    pub ops: Option<u64>,
}

/// Serializes an optional image ID as hex.
fn hex_opt<S: serde::Serializer>(h: &Option<Hash>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match h {
        Some(h) => s.serialize_str(&h.to_hex()),
        None => s.serialize_none(),
    }
}

impl Error {
    /// A failure to read or write the session's stream (the agent's stdin/stdout, ssh's
    /// pipe). Only `Conn` says this: there is no `From<io::Error>`, so an I/O error
    /// elsewhere cannot pass for a connection failure; it names its path through
    /// imager's `Io` error.
    pub fn connection(e: std::io::Error) -> Error {
        Error::Connection(e.to_string())
    }
}
