//! imager: reproducible, content-hashed images of Linux root filesystems.
//!
//! The model is [`tree`] (what an image is and its canonical text); [`store`] keeps
//! images and their content; [`archive`] moves images in and out as tar.zst and
//! directories; [`normalize`] and [`ingest`] turn a built tree into a reproducible image.
//! The `imager` binary is a thin layer over [`ops`], which is what commands do.

pub mod archive;
pub mod build;
#[doc(hidden)]
pub mod cli;
pub mod contract;
pub mod deb822;
pub mod error;
pub mod fsx;
pub mod ingest;
pub mod normalize;
pub mod ops;
pub mod progress;
pub mod review;
pub mod safe_dir;
pub mod store;
pub mod tree;

pub use error::{Error, Result};
pub use tree::{Entry, Hash, Kind, Tree};
