//! syncer: pushes imager images onto live hosts as file-level deltas.
//!
//! The controller ([`push`]) reaches each host's agent ([`agent`], `syncer serve`) over
//! a [`transport`] (ssh or a local child process) and speaks the [`protocol`]. The agent
//! scans the host and [`compare`]s it with the image; the controller decides how each
//! file travels ([`plan`], [`encoding`]: local copy, zstd delta, rsync delta, bsdiff or
//! whole, many files in one pack; encodings cached in [`delta`]); the agent
//! stages everything, then commits through a journal and runs the image's triggers.
//!
//! The crates below this one, bottom-up: `imager-core` (the model, safe filesystem
//! access), `imager-trust` (signatures), `imager` (the store; the builder, which the
//! controller does not call), `syncer-protocol` ([`error`], [`ratelimit`], [`hostfs`],
//! the field codec, [`encoding`], [`protocol`], [`compare`]), `syncer-agent` ([`agent`]).
//! This crate is the controller. Its modules are layered: each uses only modules listed
//! before it here (no cycle; `.ci/module-cycles` checks it). [`progress`], [`selfexe`];
//! [`payload`]; [`deletes`]; [`delta`]; [`plan`]; [`transport`]; [`push`];
//! [`publish`]; [`rollout`]; [`render`].

#![warn(missing_docs)]

pub mod deletes;
pub mod delta;
pub mod payload;
pub mod plan;
pub mod progress;
pub mod publish;
pub mod push;
pub mod render;
pub mod rollout;
pub mod selfexe;
pub mod transport;

// The host side and the wire, each its own crate (syncer-agent, syncer-protocol), under
// the names they had when they lived here, so callers keep their paths.
pub use syncer_agent as agent;
pub use syncer_protocol as protocol;
pub use syncer_protocol::{compare, encoding, error, hostfs, ratelimit};

pub use error::{Error, Result};
