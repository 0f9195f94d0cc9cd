//! `imager packages --cyclonedx`: the image's installed packages as a CycloneDX 1.5 SBOM
//! (JSON), beside the SPDX document of [`super::spdx`]: many scanners read only
//! one of the two. The inputs are the same (dpkg's status in the image), and so is the
//! determinism: the serial number is a UUID derived from the image ID, the metadata
//! timestamp the image's epoch (its newest mtime), the components in package order, and
//! the keys sorted (serde_json's ordered maps), so one image always gives one document.

use super::dpkg::Package;
use super::purl;
use crate::derived;
use crate::error::Result;
use crate::store::Store;
use crate::Hash;
use serde_json::json;

/// The CycloneDX specification version the documents declare (`specVersion`).
pub const SPEC_VERSION: &str = "1.5";

/// The CycloneDX document for image `id` with packages `pkgs` (from
/// [`super::list`]): one `library` component per package, with its Debian
/// package URL (the SPDX document's) as `purl` and `bom-ref`, and its source package as
/// properties; the image itself is the metadata's `operating-system` component, which
/// depends on every package.
pub fn cyclonedx(store: &Store, id: &Hash, pkgs: &[Package]) -> Result<serde_json::Value> {
    let tree = store.read_image(id)?;
    let timestamp = crate::time::utc(derived::epoch(&tree));
    let image_ref = format!("imager-image-{id}");
    let components: Vec<serde_json::Value> = pkgs
        .iter()
        .map(|p| {
            json!({
                "type": "library",
                "bom-ref": purl(p),
                "name": p.name,
                "version": p.version,
                "purl": purl(p),
                "properties": [
                    { "name": "imager:architecture", "value": p.architecture },
                    { "name": "imager:source-package", "value": p.source },
                    { "name": "imager:source-version", "value": p.source_version },
                ],
            })
        })
        .collect();
    Ok(json!({
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": format!("urn:uuid:{}", derived::uuid("cyclonedx", id)),
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": {
                "components": [{
                    "type": "application",
                    "name": "imager",
                    "version": env!("CARGO_PKG_VERSION"),
                }],
            },
            "component": {
                "type": "operating-system",
                "bom-ref": image_ref,
                "name": format!("imager image {id}"),
                "version": id.to_hex(),
            },
        },
        "components": components,
        "dependencies": [{
            "ref": image_ref,
            "dependsOn": pkgs.iter().map(purl).collect::<Vec<_>>(),
        }],
    }))
}
