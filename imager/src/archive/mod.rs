//! Moving images in and out of the store: a deterministic tar.zst, a directory with
//! exact metadata, an ext4 filesystem image ([`disk`]) and an OCI image layout ([`oci`])
//! on the way out; tar, tar.gz and tar.zst archives, checked entry by
//! entry, on the way in.

pub mod derived;
pub mod dir;
pub mod disk;
pub mod oci;
pub mod tar_export;
pub mod tar_import;

/// The fixed zstd parameters of an export: changing any of them changes every archive's
/// bytes, so they are constants, not options.
pub const ZSTD_LEVEL: i32 = 9;
/// zstd's multi-threaded output depends on its job layout, not on how many threads run
/// it, but it differs from single-threaded output: this is fixed too.
pub const ZSTD_WORKERS: u32 = 2;
