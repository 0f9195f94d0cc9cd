//! imager: reproducible, content-hashed images of Linux root filesystems.
//!
//! The model is [`tree`] (what an image is and its canonical text); [`store`] keeps
//! images and their content; [`mod@ingest`] turns a scanned or imported tree into a stored,
//! normalised image; [`ops`] is what the commands do, as library functions; [`contract`]
//! is what an image promises the syncer. The `imager` command is another crate
//! (`imager-cli`, in the repository's `imager/`), a thin layer over [`ops`], [`build`]
//! and [`review`]: this library has no argument parser and no progress bars.
//!
//! The modules below the public ones (the archive formats, the build, normalisation,
//! the review) are the crate's own: callers get what the `pub use` block lists, and
//! the fuzz targets reach the parsers of outside bytes through [`fuzzing`].
//!
//! The modules are layered: each uses only modules listed before it here (no cycle;
//! `.ci/module-cycles` checks it). Below them, in their own crates: `imager-core`
//! ([`escape`], [`error`], [`time`], [`tree`], [`fsx`], [`safe_dir`], [`contract`]) and
//! `imager-trust` ([`sign`], signatures as data and checks). Here: [`progress`];
//! [`store`]; `derived`, `deb822`, `normalize`; [`mod@ingest`]; `packages`; `archive`;
//! [`import`]; [`build`]; [`manage`]; [`review`]; [`attest`]; [`ops`].
#![warn(missing_docs)]

// What callers build on: the syncer keeps a host's tree in step with an image through
// these (a tree and its text, the store, safe filesystem access, the image contract).
pub mod attest;
// The model and filesystem layer (imager-core) and the signatures (imager-trust), under
// the names they had when they lived here, so callers keep their paths.
pub use imager_core::{contract, error, escape, fsx, safe_dir, time, tree, units};
pub use imager_trust as sign;
pub mod import;
pub mod ingest;
pub mod manage;
pub mod ops;
pub mod progress;
pub mod store;

pub(crate) mod archive;
pub mod build;
pub(crate) mod deb822;
pub(crate) mod derived;
pub mod normalize;
pub mod packages;
pub mod review;

pub use archive::disk::{export_disk, DiskExport};
pub use archive::oci::{export_oci, OciExport};
pub use contract::{Trigger, TriggerFile};
pub use error::{Error, IoContext, Result};
pub use ingest::{ingest, HashOnly, Ingested, StoreSink};
pub use normalize::{MtimePolicy, Options as NormalizeOptions, Report as NormalizeReport};
pub use ops::{ExportTarget, ImportOptions, ImportSource, Imported, Shown};
pub use progress::{Progress, Quiet};
pub use store::{Access, Store};
pub use tree::scan::Excludes;
pub use tree::{Entry, Hash, Kind, Stats, Tree};

/// An image's installed packages and its software bills of materials (SPDX 2.3,
/// CycloneDX 1.5), all deterministic: the same image gives the same bytes.
pub mod sbom {
    pub use crate::build::provenance::sbom_records as records;
    pub use crate::packages::cyclonedx::cyclonedx;
    pub use crate::packages::dpkg::Package;
    pub use crate::packages::license::from_copyright as licence_of_copyright;
    pub use crate::packages::{list, spdx, BuildRecords};
}

/// The parsers of outside bytes, for the fuzz targets in `fuzz/`: not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::archive::{tar_export, tar_import};
    pub use crate::build::dpkg::installed as dpkg_installed_in;
    pub use crate::build::recipe::load as load_manifest;
    pub use crate::deb822::{parse as parse_deb822, parse_release_date};
    pub use crate::packages::dpkg::{
        changelog_entries, compare_versions, entries_between, installed as dpkg_status,
    };
}
