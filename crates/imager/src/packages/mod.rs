//! An image's installed packages (dpkg's status inside it) as text, JSON, or an SPDX 2.3
//! SBOM (JSON), deterministic like everything else about an image; [`cyclonedx`] is the
//! CycloneDX 1.5 form, [`dpkg`] the parsers of dpkg's files (status, versions,
//! changelogs) that the review, the build and the SBOMs share.

pub mod cyclonedx;
pub mod dpkg;

use crate::error::Result;
use crate::store::Store;
use crate::tree::Kind;
use crate::Hash;
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

/// An SPDX 2.3 document describing the image: one package per dpkg package, with a
/// Debian package URL. `created` is the image's newest mtime, so the same image always
/// gives the same document.
pub fn spdx(store: &Store, id: &Hash, pkgs: &[Package]) -> Result<serde_json::Value> {
    let tree = store.read_image(id)?;
    let created = crate::time::utc(crate::derived::epoch(&tree));
    let packages: Vec<serde_json::Value> = pkgs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            serde_json::json!({
                "name": p.name,
                "SPDXID": format!("SPDXRef-Package-{i}"),
                "versionInfo": p.version,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "sourceInfo": format!("built from source package {} {}", p.source, p.source_version),
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": purl(p),
                }],
            })
        })
        .collect();
    let relationships: Vec<serde_json::Value> = (0..pkgs.len())
        .map(|i| {
            serde_json::json!({
                "spdxElementId": "SPDXRef-DOCUMENT",
                "relationshipType": "DESCRIBES",
                "relatedSpdxElement": format!("SPDXRef-Package-{i}"),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("imager image {id}"),
        "documentNamespace": format!("https://spdx.org/spdxdocs/imager-{id}"),
        "creationInfo": {
            "created": created,
            "creators": [format!("Tool: imager-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    }))
}

/// The SPDX document exactly as `imager packages --spdx` prints it (what a provenance
/// names by digest).
pub fn spdx_bytes(store: &Store, id: &Hash) -> Result<Vec<u8>> {
    // The document as the build wrote it, when it did: it names the tool's version, so
    // one made again by a later imager differs, and the provenance names the build's.
    if let Some(stored) = store.image_file(id, SPDX_FILE)? {
        return Ok(stored);
    }
    spdx_made_now(store, id)
}

/// The image's stored SPDX document (written by `imager build` beside its provenance).
pub const SPDX_FILE: &str = "spdx.json";

/// The SPDX document made from the store as it is now, by this imager.
pub fn spdx_made_now(store: &Store, id: &Hash) -> Result<Vec<u8>> {
    let doc = spdx(store, id, &list(store, id)?)?;
    let mut out =
        serde_json::to_vec_pretty(&doc).map_err(|e| crate::Error::Internal(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

/// The package's Debian package URL (the version's epoch colon percent-encoded).
pub fn purl(p: &Package) -> String {
    format!(
        "pkg:deb/debian/{}@{}?arch={}",
        p.name,
        p.version.replace(':', "%3A"),
        p.architecture
    )
}
