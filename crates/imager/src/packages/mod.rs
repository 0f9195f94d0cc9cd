//! An image's installed packages (dpkg's status inside it) as text, JSON, or an SPDX 2.3
//! SBOM (JSON), deterministic like everything else about an image; [`cyclonedx`] is the
//! CycloneDX 1.5 form, [`describe`] what both say about each package (licence,
//! supplier, checksum, package URL), [`license`] the copyright files' licences, [`dpkg`]
//! the parsers of dpkg's files (status, versions, changelogs) that the review, the build
//! and the SBOMs share.

pub mod cyclonedx;
pub mod describe;
pub mod dpkg;
pub mod license;

use crate::error::Result;
use crate::store::Store;
use crate::tree::Kind;
use crate::Hash;
pub use describe::BuildRecords;
use dpkg::Package;

/// The packages of an image, by name.
pub fn list(store: &Store, id: &Hash) -> Result<Vec<Package>> {
    let tree = store.read_image(id)?;
    let status = match tree.get(b"/var/lib/dpkg/status").map(|e| &e.kind) {
        Some(Kind::File { hash, .. }) => {
            String::from_utf8_lossy(&store.read_object(hash)?).into_owned()
        }
        _ => return Ok(Vec::new()),
    };
    Ok(dpkg::installed(&status).into_values().collect())
}

/// The packages as `imager packages` prints them: one aligned line each of name,
/// version, architecture, source and source version.
pub fn text(pkgs: &[Package]) -> String {
    let w = pkgs.iter().map(|p| p.name.len()).max().unwrap_or(0);
    let v = pkgs.iter().map(|p| p.version.len()).max().unwrap_or(0);
    pkgs.iter()
        .map(|p| {
            format!(
                "{:w$}  {:v$}  {:6}  {} {}\n",
                p.name, p.version, p.architecture, p.source, p.source_version
            )
        })
        .collect()
}

/// An SPDX 2.3 document describing the image: a root package for the image itself
/// (`SPDXRef-Image`: its ID as the version, the tar.zst's SHA-256 as its checksum where
/// a build recorded it) that the document DESCRIBES and that CONTAINS one package per
/// dpkg package, each with its package URL (`?arch=...&distro=debian-12`), declared
/// licence, supplier and, for a built image, the .deb's SHA-256 (see [`describe`]).
/// `created` is the image's newest mtime, so the same image always gives the same
/// document.
pub fn spdx(
    store: &Store,
    id: &Hash,
    pkgs: &[Package],
    records: &BuildRecords,
) -> Result<serde_json::Value> {
    let sbom = describe::describe(store, id, pkgs, records)?;
    let packages: Vec<serde_json::Value> = std::iter::once(spdx_root(id, &sbom))
        .chain(
            sbom.packages
                .iter()
                .enumerate()
                .map(|(i, d)| spdx_package(i, d)),
        )
        .collect();
    let mut relationships = vec![serde_json::json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    relationships.extend((0..pkgs.len()).map(|i| {
        serde_json::json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": format!("SPDXRef-Package-{i}"),
        })
    }));
    let mut doc = serde_json::json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("imager image {id}"),
        "documentNamespace": format!("https://spdx.org/spdxdocs/imager-{id}"),
        "creationInfo": {
            "created": sbom.created,
            "creators": [format!("Tool: imager-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    });
    if !sbom.extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = sbom
            .extracted
            .iter()
            .map(
                |e| serde_json::json!({"licenseId": e.id, "name": e.name, "extractedText": e.text}),
            )
            .collect();
    }
    Ok(doc)
}

/// The image as an SPDX package: what the document describes.
fn spdx_root(id: &Hash, sbom: &describe::Sbom) -> serde_json::Value {
    let mut root = serde_json::json!({
        "name": format!("imager image {id}"),
        "SPDXID": "SPDXRef-Image",
        "versionInfo": id.to_hex(),
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    });
    let distro = sbom.distro.as_deref().unwrap_or("no os-release");
    root["comment"] = match &sbom.tar_sha256 {
        Some(sha) => {
            root["checksums"] = serde_json::json!([{"algorithm": "SHA256", "checksumValue": sha}]);
            format!("An imager image ({distro}): the version is its ID (BLAKE3 of its canonical manifest text), the checksum that of its deterministic tar.zst (`imager export --tar`).")
        }
        None => format!("An imager image ({distro}): the version is its ID (BLAKE3 of its canonical manifest text). No build recorded its tar.zst's digest; `imager export --tar` makes the same bytes every time."),
    }
    .into();
    root
}

/// One dpkg package as an SPDX package.
fn spdx_package(i: usize, d: &describe::Described) -> serde_json::Value {
    let p = d.package;
    let mut v = serde_json::json!({
        "name": p.name,
        "SPDXID": format!("SPDXRef-Package-{i}"),
        "versionInfo": p.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "sourceInfo": format!("built from source package {} {}", p.source, p.source_version),
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": d.licensing.as_ref().map_or("NOASSERTION", |l| l.expression.as_str()),
        "copyrightText": "NOASSERTION",
        "supplier": d.supplier.as_ref().map_or("NOASSERTION".to_string(), |s| {
            let kind = if s.organization { "Organization" } else { "Person" };
            match &s.email {
                Some(e) => format!("{kind}: {} ({e})", s.name),
                None => format!("{kind}: {}", s.name),
            }
        }),
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": d.purl,
        }],
    });
    if let Some(sha) = &d.sha256 {
        v["checksums"] = serde_json::json!([{"algorithm": "SHA256", "checksumValue": sha}]);
    }
    if let Some(note) = &d.note {
        v["comment"] = note.clone().into();
    }
    v
}

/// The SPDX document exactly as `imager packages --spdx` prints it (what a provenance
/// names by digest).
/// `records` is asked for only when the document is made now.
pub fn spdx_bytes(
    store: &Store,
    id: &Hash,
    records: impl FnOnce() -> Result<BuildRecords>,
) -> Result<Vec<u8>> {
    // The document as the build wrote it, when it did: it names the tool's version, so
    // one made again by a later imager differs, and the provenance names the build's.
    if let Some(stored) = store.image_file(id, SPDX_FILE)? {
        return Ok(stored);
    }
    spdx_made_now(store, id, &records()?)
}

/// The image's stored SPDX document (written by `imager build` beside its provenance).
pub const SPDX_FILE: &str = "spdx.json";

/// The SPDX document made from the store as it is now, by this imager.
pub fn spdx_made_now(store: &Store, id: &Hash, records: &BuildRecords) -> Result<Vec<u8>> {
    let doc = spdx(store, id, &list(store, id)?, records)?;
    let mut out =
        serde_json::to_vec_pretty(&doc).map_err(|e| crate::Error::Internal(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}
