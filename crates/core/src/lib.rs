//! imager-core: what an image is, and safe access to the filesystem that holds one.
//!
//! The model is [`tree`] (hashes, entries, a tree and its canonical text); [`contract`]
//! is what an image promises the syncer (its `/usr/lib/imager` files, triggers, the
//! host-local state a push keeps); [`fsx`] and [`safe_dir`] are the only ways the
//! workspace touches files (every error names the action and the path, [`error`]).
//! Both the imager (builder, store) and a host's agent stand on this crate and nothing
//! below it, which is what keeps the agent small.
//!
//! The modules are layered: each uses only modules listed before it here (no cycle;
//! `.ci/module-cycles` checks it). [`escape`], [`error`], [`time`], [`units`]; [`tree`]; [`fsx`],
//! [`safe_dir`]; [`contract`].

#![warn(missing_docs)]

pub mod contract;
pub mod error;
pub mod escape;
pub mod fsx;
pub mod safe_dir;
pub mod time;
pub mod tree;
pub mod units;

pub use contract::{Trigger, TriggerFile};
pub use error::{Error, IoContext, Result};
pub use tree::scan::Excludes;
pub use tree::{Entry, Hash, Kind, Stats, Tree};
