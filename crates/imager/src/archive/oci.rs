//! Exporting an image as an OCI image layout (a directory with `oci-layout`,
//! `index.json` and `blobs/sha256/`), so that images go into any registry and through the
//! tools built around registries (`skopeo copy oci:DIR:TAG docker://...`).
//!
//! One layer: the deterministic tar of [`super::tar_export::write_tar`], gzip-compressed
//! (`application/vnd.oci.image.layer.v1.tar+gzip`, which every registry and runtime
//! takes; zstd layers are not read by older ones). The gzip stream is flate2's, pure
//! Rust at the version Cargo.lock pins, single-threaded, with a header of mtime 0, no
//! file name and OS 255, so its bytes depend on the tar alone. The config's
//! `rootfs.diff_ids` is the SHA-256 of the uncompressed tar, its `created` the image's
//! epoch; the image ID is the `io.imager.image-id` annotation of the manifest and a
//! label of the config. JSON is written compact with sorted keys (serde_json's
//! ordered maps), so every digest is the same on every export of the same image. The
//! reference name (`org.opencontainers.image.ref.name`) is only in `index.json`: it does
//! not change the manifest's digest.
//!
//! The directory is made beside the target and renamed into place when complete; the
//! target must not exist or be an empty directory. A symlink to an empty directory is
//! kept: the layout goes into the directory it points to (as `export --dir` does), made
//! beside that one, so the rename stays on its filesystem. Anything else at the target
//! (a file, a symlink to one or to nothing) is refused, never replaced
//! ([`crate::fsx::output_dir`]).

use super::disk::Scratch;
use super::Hashing;
use crate::derived;
use crate::error::{Error, IoContext, Result};
use crate::fsx;
use crate::progress::Progress;
use crate::store::Store;
use crate::tree::Hash;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::Path;

pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The annotation (manifest) and label (config) that carry the image ID.
pub const IMAGE_ID_KEY: &str = "io.imager.image-id";
/// The gzip level of the layer: part of its bytes, so a constant.
const GZIP_LEVEL: u32 = 6;

/// What an export made: the digests (`sha256:...`) and sizes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OciExport {
    /// Digest of the image manifest blob, the one the index names.
    pub manifest: String,
    /// Digest of the config blob.
    pub config: String,
    /// Digest of the layer blob (the gzip-compressed tar).
    pub layer: String,
    /// SHA-256 of the uncompressed layer (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    /// Bytes of the layer after gzip compression.
    pub layer_bytes: u64,
    /// Bytes of the uncompressed tar.
    pub tar_bytes: u64,
    /// The OCI architecture (`amd64`, `arm64`, `386`), from the image's dpkg when it has one.
    pub architecture: String,
}

/// `imager export IMAGE --oci DIR`: the image as an OCI image layout at `dest`, its
/// manifest named `ref_name` in the index (skopeo's `oci:DIR:REF`).
pub fn export_oci(
    store: &Store,
    id: &Hash,
    dest: &Path,
    ref_name: &str,
    progress: &dyn Progress,
) -> Result<OciExport> {
    // For a symlink to a directory, the directory it points to.
    let layout = fsx::output_dir(dest)?;
    check_target(&layout)?;
    let tree = store.read_image(id)?;
    let architecture = architecture(store, id)?;
    let created = crate::time::utc(derived::epoch(&tree));
    let scratch = Scratch::beside(&layout)?;
    let blobs = scratch.work.join("blobs").join("sha256");
    crate::fsx::create_dir_all(&blobs)?;

    let (layer, diff_id, layer_bytes, tar_bytes) = write_layer(store, &tree, &blobs, progress)?;
    let config = json!({
        "created": created,
        "architecture": architecture,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Labels": { IMAGE_ID_KEY: id.to_hex() },
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": created, "created_by": format!("imager export --oci (image {id})") }],
    });
    let (config_digest, config_size) = write_blob(&blobs, &config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": { "mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size },
        "layers": [{ "mediaType": LAYER_MEDIA_TYPE, "digest": layer, "size": layer_bytes }],
        "annotations": {
            IMAGE_ID_KEY: id.to_hex(),
            "org.opencontainers.image.created": created,
        },
    });
    let (manifest_digest, manifest_size) = write_blob(&blobs, &manifest)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": { "architecture": architecture, "os": "linux" },
            "annotations": { "org.opencontainers.image.ref.name": ref_name },
        }],
    });
    write_json(&scratch.work.join("index.json"), &index)?;
    write_json(
        &scratch.work.join("oci-layout"),
        &json!({ "imageLayoutVersion": "1.0.0" }),
    )?;
    // rename(2) replaces an empty directory, and only an empty one.
    crate::fsx::rename(&scratch.work, &layout)?;
    Ok(OciExport {
        manifest: manifest_digest,
        config: config_digest,
        layer,
        diff_id,
        layer_bytes,
        tar_bytes,
        architecture,
    })
}

fn check_target(dest: &Path) -> Result<()> {
    match fsx::read_dir(dest).map(|entries| !entries.is_empty()) {
        Ok(true) => Err(Error::Export {
            target: dest.to_path_buf(),
            reason: "the directory is not empty; export into a new or empty directory".into(),
        }),
        Ok(false) => Ok(()),
        Err(e) => match e.into_io() {
            e if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            e => Err(Error::io("open directory", dest, e)),
        },
    }
}

/// The gzip layer into `blobs`, named by its digest: (digest, diff_id, size, tar size).
fn write_layer(
    store: &Store,
    tree: &crate::Tree,
    blobs: &Path,
    progress: &dyn Progress,
) -> Result<(String, String, u64, u64)> {
    let tmp = blobs.join("layer.tmp");
    let f = fsx::create(&tmp)?;
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(
            Hashing::new(std::io::BufWriter::new(f)),
            flate2::Compression::new(GZIP_LEVEL),
        );
    let tar = super::tar_export::write_tar(store, tree, Hashing::new(gz), progress)?;
    let diff_id = tar.digest();
    let compressed = tar.inner.finish().ctx("compress", &tmp)?;
    let digest = compressed.digest();
    let f = compressed
        .inner
        .into_inner()
        .map_err(|e| Error::io("write", &tmp, e.into_error()))?;
    f.sync_all().ctx("flush", &tmp)?;
    crate::fsx::rename(&tmp, &blobs.join(hex_of(&digest)))?;
    Ok((digest, diff_id, compressed.len, tar.len))
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<Vec<u8>> {
    let bytes = serde_json::to_vec(v).map_err(|e| Error::Export {
        target: path.to_path_buf(),
        reason: format!("could not serialise JSON: {e}"),
    })?;
    fsx::write(path, &bytes)?;
    Ok(bytes)
}

/// A JSON blob named by its digest: (digest, size).
fn write_blob(blobs: &Path, v: &serde_json::Value) -> Result<(String, u64)> {
    let tmp = blobs.join("blob.tmp");
    let bytes = write_json(&tmp, v)?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    crate::fsx::rename(&tmp, &blobs.join(hex_of(&digest)))?;
    Ok((digest, bytes.len() as u64))
}

/// The OCI architecture of the image: that of its `dpkg` package (else of the first
/// package not `all`), so it comes from the image; a tree without dpkg gets the
/// architecture imager was built for.
fn architecture(store: &Store, id: &Hash) -> Result<String> {
    let pkgs = crate::packages::list(store, id)?;
    let deb = pkgs
        .iter()
        .find(|p| p.name == "dpkg")
        .or_else(|| pkgs.iter().find(|p| p.architecture != "all"))
        .map(|p| p.architecture.as_str());
    let oci = match deb {
        Some("i386") => "386",
        Some("armhf" | "armel") => "arm",
        Some("ppc64el") => "ppc64le",
        Some("mips64el") => "mips64le",
        Some(a) => a,
        None => match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            a => a,
        },
    };
    Ok(oci.to_string())
}
