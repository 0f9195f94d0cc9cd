//! syncer: pushes imager images onto live hosts as file-level deltas.
//!
//! The controller ([`push`]) reaches each host's agent ([`agent`], `syncer serve`) over
//! a [`transport`] (ssh or a local child process) and speaks the [`protocol`]. The agent
//! scans the host and [`compare`]s it with the image; the controller decides how each
//! file travels ([`plan`], [`encoding`]: local copy, zstd delta, rsync delta, bsdiff or
//! whole, many files in one pack; encodings cached in [`delta`]); the agent
//! stages everything, then commits through a journal and runs the image's triggers.
//!
//! The modules are layered: each uses only modules listed before it here (no cycle;
//! `.ci/module-cycles` checks it). [`error`]; [`progress`], [`ratelimit`], [`selfexe`];
//! [`hostfs`] (reading host files); `wire` (the field codec); [`payload`]; [`encoding`];
//! [`protocol`]; [`compare`]; [`deletes`]; [`delta`]; [`plan`]; [`agent`];
//! [`transport`]; [`push`]; [`publish`]; [`rollout`]; [`render`].

pub mod agent;
pub mod compare;
pub mod deletes;
pub mod delta;
pub mod encoding;
pub mod error;
pub mod hostfs;
pub mod payload;
pub mod plan;
pub mod progress;
pub mod protocol;
pub mod publish;
pub mod push;
pub mod ratelimit;
pub mod render;
pub mod rollout;
pub mod selfexe;
pub mod transport;
pub(crate) mod wire;

pub use error::{Error, Result};
