//! What both SBOMs say about an image's packages beyond dpkg's status, gathered once:
//! the distribution (`/etc/os-release`, for the package URLs' `distro` qualifier that
//! scanners match Debian's advisories on), each package's licence (its copyright file,
//! see [`super::license`]), supplier (its `Maintainer`) and the sha256 of the .deb it was
//! installed from (the build's lock, when the image was built here).
//!
//! A package gets a checksum only from a lock: the SBOM formats mean the checksum of the
//! package file, and nothing inside an image is that file. dpkg's `*.md5sums` are MD5s
//! of the files as shipped (conffiles may have changed since, normalisation rewrites
//! gzip headers), so a checksum made from them would name no file anyone can check; a
//! package without one says why in a note instead.

use super::dpkg::Package;
use super::license::{self, Extracted, Licensing};
use crate::error::Result;
use crate::store::Store;
use crate::tree::{Hash, Kind, Tree};
use std::collections::BTreeMap;

/// What a build recorded about an image that its SBOMs carry; empty for an image that
/// was imported rather than built.
#[derive(Clone, Debug, Default)]
pub struct BuildRecords {
    /// Whether the image has a stored lock (`debs` is then every .deb it was built from).
    pub locked: bool,
    /// SHA-256 (lowercase hex) of each .deb by (name, version, architecture).
    pub debs: BTreeMap<(String, String, String), String>,
    /// SHA-256 (lowercase hex) of the image's tar.zst, when a build recorded it.
    pub tar_sha256: Option<String>,
}

/// A package's supplier: its `Maintainer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Supplier {
    /// The name before the address.
    pub name: String,
    /// The address, when there is a plausible one.
    pub email: Option<String>,
    /// A team or list rather than a person (by its name or its list address).
    pub organization: bool,
}

/// One package as the SBOMs describe it.
pub struct Described<'a> {
    /// dpkg's view of it.
    pub package: &'a Package,
    /// Its package URL, with the `distro` qualifier when the image names its release.
    pub purl: String,
    /// Its licence; None when its copyright file is not machine-readable or missing.
    pub licensing: Option<Licensing>,
    /// Its `Maintainer`, when it has one.
    pub supplier: Option<Supplier>,
    /// The .deb's SHA-256 from the build's lock.
    pub sha256: Option<String>,
    /// Why there is no checksum, when there is none.
    pub note: Option<String>,
}

/// Everything the two documents are made from.
pub struct Sbom<'a> {
    /// The document's time: the image's epoch, as UTC text.
    pub created: String,
    /// The packages, in the order given.
    pub packages: Vec<Described<'a>>,
    /// Every `LicenseRef-` the packages use, by id (one id, one text).
    pub extracted: Vec<Extracted>,
    /// The tar.zst's SHA-256 when known.
    pub tar_sha256: Option<String>,
    /// `ID-VERSION_ID` (`debian-12`) of the image's os-release, when it has one.
    pub distro: Option<String>,
}

/// Gathers what the documents say about image `id` with packages `pkgs`.
pub fn describe<'a>(
    store: &Store,
    id: &Hash,
    pkgs: &'a [Package],
    records: &BuildRecords,
) -> Result<Sbom<'a>> {
    let tree = store.read_image(id)?;
    let os = os_release(store, &tree)?;
    let get = |k: &str| os.get(k).filter(|v| !v.is_empty());
    let namespace = get("ID")
        .filter(|v| {
            v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        .map_or("debian", |v| v.as_str());
    let distro = get("VERSION_ID")
        .or_else(|| get("VERSION_CODENAME"))
        .map(|v| format!("{namespace}-{v}"));
    let mut extracted: BTreeMap<String, Extracted> = BTreeMap::new();
    let mut packages = Vec::new();
    for p in pkgs {
        let licensing = licensing(store, &tree, p)?.map(|l| unify(l, &mut extracted));
        let (sha256, note) = checksum(p, records);
        packages.push(Described {
            package: p,
            purl: purl_in(p, namespace, distro.as_deref()),
            licensing,
            supplier: p.maintainer.as_deref().and_then(supplier),
            sha256,
            note,
        });
    }
    Ok(Sbom {
        created: crate::time::utc(crate::derived::epoch(&tree)),
        packages,
        extracted: extracted.into_values().collect(),
        tar_sha256: records.tar_sha256.clone(),
        distro,
    })
}

fn checksum(p: &Package, records: &BuildRecords) -> (Option<String>, Option<String>) {
    let key = (p.name.clone(), p.version.clone(), p.architecture.clone());
    match records.debs.get(&key) {
        Some(s) => (Some(s.clone()), None),
        None if records.locked => (None, Some("no checksum: the build's lock does not list this package".into())),
        None => (None, Some("no checksum: the image was not built from a lock here, so the .deb it was installed from is not known".into())),
    }
}

/// The package URL: `pkg:deb/NAMESPACE/NAME@VERSION?arch=ARCH&distro=DISTRO`, the
/// qualifiers in key order as the purl specification wants them.
pub fn purl_in(p: &Package, namespace: &str, distro: Option<&str>) -> String {
    let mut s = format!(
        "pkg:deb/{namespace}/{}@{}?arch={}",
        p.name,
        p.version.replace(':', "%3A"),
        p.architecture
    );
    if let Some(d) = distro {
        s += &format!("&distro={d}");
    }
    s
}

/// Takes a package's licence refs into the document's: a ref whose id another package
/// gave another text becomes `ID-` and 8 hex digits of its text's SHA-256, in the
/// expression too.
fn unify(mut l: Licensing, doc: &mut BTreeMap<String, Extracted>) -> Licensing {
    for r in &mut l.refs {
        if doc.get(&r.id).is_some_and(|d| d.text != r.text) {
            use sha2::Digest;
            let new = format!(
                "{}-{}",
                r.id,
                &hex::encode(sha2::Sha256::digest(r.text.as_bytes()))[..8]
            );
            l.expression = l
                .expression
                .split(' ')
                .map(|t| {
                    let bare = t.trim_matches(['(', ')']);
                    if bare == r.id {
                        t.replace(bare, &new)
                    } else {
                        t.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            r.id = new;
        }
        doc.entry(r.id.clone()).or_insert_with(|| r.clone());
    }
    l
}

/// Largest copyright file read (glibc's, the longest in Debian, is about 100 KiB).
const MAX_COPYRIGHT: u64 = 4 << 20;

fn licensing(store: &Store, tree: &Tree, p: &Package) -> Result<Option<Licensing>> {
    let path = format!("/usr/share/doc/{}/copyright", p.name);
    let Some((hash, size)) = file_in(tree, &path) else {
        return Ok(None);
    };
    if size > MAX_COPYRIGHT {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&store.read_object(&hash)?).into_owned();
    Ok(license::from_copyright(&text, &path))
}

/// `KEY=value` of the image's os-release (`/etc/os-release`, else
/// `/usr/lib/os-release`), quotes removed; empty when it has none.
fn os_release(store: &Store, tree: &Tree) -> Result<BTreeMap<String, String>> {
    let found = file_in(tree, "/etc/os-release").or_else(|| file_in(tree, "/usr/lib/os-release"));
    let Some((hash, _)) = found.filter(|(_, size)| *size < 1 << 16) else {
        return Ok(BTreeMap::new());
    };
    let text = String::from_utf8_lossy(&store.read_object(&hash)?).into_owned();
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect())
}

/// The content of the file at `path` in the image, following symlinks as the
/// running system would (`/etc/os-release` → `../usr/lib/os-release`, a package's doc
/// directory linked to another's), at most 16 of them; None when it is not a file.
pub fn file_in(tree: &Tree, path: &str) -> Option<(Hash, u64)> {
    let mut todo: Vec<String> = path.rsplit('/').map(str::to_string).collect();
    let mut cur = String::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                cur.truncate(cur.rfind('/').unwrap_or(0));
                continue;
            }
            _ => {}
        }
        let next = format!("{cur}/{c}");
        match &tree.get(next.as_bytes())?.kind {
            Kind::Symlink { target } => {
                hops += 1;
                let t = std::str::from_utf8(target).ok()?;
                if hops > 16 {
                    return None;
                }
                if t.starts_with('/') {
                    cur.clear();
                }
                todo.extend(t.rsplit('/').map(str::to_string));
            }
            _ => cur = next,
        }
    }
    let e = tree.get(cur.as_bytes())?;
    let e = match &e.kind {
        Kind::HardLink { target } => tree.get(target)?,
        _ => e,
    };
    match &e.kind {
        Kind::File { hash, size } => Some((*hash, *size)),
        _ => None,
    }
}

/// `Name <address>` as a supplier; teams and lists (`... Team`, `... Maintainers`, an
/// address at `lists.`) are organizations, anyone else a person.
pub fn supplier(maintainer: &str) -> Option<Supplier> {
    let (name, email) = match maintainer.split_once('<') {
        Some((n, rest)) => (n, rest.split_once('>').map(|(e, _)| e.trim())),
        None => (maintainer, None),
    };
    // SPDX's actor text ends the name at a parenthesis.
    let name: String = name.trim().replace(['(', ')'], "");
    if name.is_empty() {
        return None;
    }
    let email = email
        .filter(|e| e.contains('@') && !e.contains(char::is_whitespace))
        .map(str::to_string);
    let lower = name.to_ascii_lowercase();
    let organization = [
        "team",
        "maintainers",
        "developers",
        "group",
        "project",
        "packagers",
    ]
    .iter()
    .any(|w| lower.split_whitespace().any(|x| x == *w))
        || email.as_deref().is_some_and(|e| e.contains("@lists."));
    Some(Supplier {
        name,
        email,
        organization,
    })
}
