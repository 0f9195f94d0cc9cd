//! `imager packages --cyclonedx`: the image's installed packages as a CycloneDX 1.5 SBOM
//! (JSON), beside the SPDX document of [`super::spdx`]: many scanners read only
//! one of the two. The inputs are the same (dpkg's status in the image, what
//! [`super::describe`] gathers), and so is the determinism: the serial number is a UUID
//! derived from the image ID, the metadata timestamp the image's epoch (its newest
//! mtime), the components in package order, and the keys sorted (serde_json's ordered
//! maps), so one image always gives one document.
//!
//! Licences: a single SPDX id as `license.id`, any other expression as `expression`;
//! a package whose copyright file is not machine-readable gets the licence name
//! `NOASSERTION` (CycloneDX has no such value; SPDX's word says the same thing to the
//! same readers), so that every component carries a licence field.

use super::describe::{self, BuildRecords, Described};
use super::dpkg::Package;
use crate::derived;
use crate::error::Result;
use crate::store::Store;
use crate::Hash;
use serde_json::json;

/// The CycloneDX specification version the documents declare (`specVersion`).
pub const SPEC_VERSION: &str = "1.5";

/// The CycloneDX document for image `id` with packages `pkgs` (from
/// [`super::list`]): one `library` component per package, with its Debian
/// package URL (the SPDX document's) as `purl` and `bom-ref`, its licence, supplier
/// and, for a built image, the .deb's SHA-256, and its source package as properties;
/// the image itself is the metadata's `operating-system` component (its ID the version,
/// the tar.zst's SHA-256 its hash where a build recorded it), which depends on every
/// package.
pub fn cyclonedx(
    store: &Store,
    id: &Hash,
    pkgs: &[Package],
    records: &BuildRecords,
) -> Result<serde_json::Value> {
    let sbom = describe::describe(store, id, pkgs, records)?;
    let image_ref = format!("imager-image-{id}");
    let components: Vec<serde_json::Value> = sbom.packages.iter().map(component).collect();
    let mut image = json!({
        "type": "operating-system",
        "bom-ref": image_ref,
        "name": format!("imager image {id}"),
        "version": id.to_hex(),
    });
    if let Some(sha) = &sbom.tar_sha256 {
        image["hashes"] = json!([{"alg": "SHA-256", "content": sha}]);
    }
    if let Some(d) = &sbom.distro {
        image["properties"] = json!([{"name": "imager:distro", "value": d}]);
    }
    Ok(json!({
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": format!("urn:uuid:{}", derived::uuid("cyclonedx", id)),
        "version": 1,
        "metadata": {
            "timestamp": sbom.created,
            "tools": {
                "components": [{
                    "type": "application",
                    "name": "imager",
                    "version": env!("CARGO_PKG_VERSION"),
                }],
            },
            "component": image,
        },
        "components": components,
        "dependencies": [{
            "ref": image_ref,
            "dependsOn": sbom.packages.iter().map(|d| d.purl.clone()).collect::<Vec<_>>(),
        }],
    }))
}

/// One package as a CycloneDX component.
fn component(d: &Described) -> serde_json::Value {
    let p = d.package;
    let license = match &d.licensing {
        Some(l) if is_listed_id(&l.expression) => json!({"license": {"id": l.expression}}),
        Some(l) => json!({"expression": l.expression}),
        None => json!({"license": {"name": "NOASSERTION"}}),
    };
    let mut properties = vec![
        json!({ "name": "imager:architecture", "value": p.architecture }),
        json!({ "name": "imager:source-package", "value": p.source }),
        json!({ "name": "imager:source-version", "value": p.source_version }),
    ];
    if let Some(note) = &d.note {
        properties.push(json!({ "name": "imager:checksum-note", "value": note }));
    }
    let mut c = json!({
        "type": "library",
        "bom-ref": d.purl,
        "name": p.name,
        "version": p.version,
        "purl": d.purl,
        "licenses": [license],
        "properties": properties,
    });
    if let Some(s) = &d.supplier {
        let mut contact = json!({});
        if !s.organization {
            contact["name"] = s.name.clone().into();
        }
        if let Some(e) = &s.email {
            contact["email"] = e.clone().into();
        }
        c["supplier"] = json!({"name": s.name});
        if contact.as_object().is_some_and(|o| !o.is_empty()) {
            c["supplier"]["contact"] = json!([contact]);
        }
    }
    if let Some(sha) = &d.sha256 {
        c["hashes"] = json!([{"alg": "SHA-256", "content": sha}]);
    }
    c
}

/// Whether an expression is one licence on SPDX's list (what `license.id` takes).
fn is_listed_id(expr: &str) -> bool {
    !expr.contains(' ') && !expr.starts_with("LicenseRef-")
}
