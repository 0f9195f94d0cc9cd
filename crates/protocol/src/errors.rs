//! How an error crosses the wire: the `Error` message a peer stops a session with, and
//! the library's [`Error`] made from it and into it. The commit a host is in the middle
//! of ([`MidCommit`]) is declared with the error that carries it ([`crate::error`], which
//! is below the protocol); its wire form is here.

use crate::error::{Error, MidCommit, Result};
use crate::wire::{wire_struct, Dec, Enc, ListItem, Wire};
use imager_core::Hash;

wire_struct! {
    /// Why the peer stops the session.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct ErrorMessage {
        /// What went wrong, as the sender's error displays it.
        pub message: String,
        /// The agent stopped after its commit point: the host is in the middle of a
        /// commit (this session's, or one an earlier session left), which the next
        /// session finishes first.
        pub mid_commit: Option<MidCommit>,
    }
}

/// As `wire_struct!` makes it for a struct declared here: the fields in their declared
/// order (both directions name every field, so one added to [`MidCommit`] does not
/// compile until it travels).
impl Wire for MidCommit {
    const MIN: usize = <Option<Hash> as Wire>::MIN + 2 * <Option<u64> as Wire>::MIN;
    fn encode(&self, e: &mut Enc) {
        let MidCommit {
            image,
            applied,
            ops,
        } = self;
        image.encode(e);
        applied.encode(e);
        ops.encode(e);
    }
    fn decode(d: &mut Dec) -> Result<Self> {
        Ok(MidCommit {
            image: Wire::decode(d)?,
            applied: Wire::decode(d)?,
            ops: Wire::decode(d)?,
        })
    }
}
impl ListItem for MidCommit {}

impl Error {
    /// The error an agent's `Error` message stands for.
    pub fn from_agent(m: ErrorMessage) -> Error {
        match m.mid_commit {
            Some(c) => Error::MidCommit(Box::new(c), m.message),
            None => Error::Agent(m.message),
        }
    }

    /// What an agent says when it stops on this error.
    pub fn to_message(&self) -> ErrorMessage {
        ErrorMessage {
            message: self.to_string(),
            mid_commit: match self {
                Error::MidCommit(c, _) => Some((**c).clone()),
                _ => None,
            },
        }
    }
}
