//! Build provenance: an in-toto Statement (v1) with a SLSA provenance (v1) predicate,
//! written by `imager build` beside the image (`provenance.json`), and its DSSE envelope
//! (`provenance.dsse.json`), which `imager sign --provenance` adds signatures to.
//!
//! The subjects are the image (its ID, a blake3), its deterministic tar.zst and its
//! SPDX document (sha256 of what `imager export --tar` and `imager packages --spdx`
//! write). The resolved dependencies are what the build stored to be rebuilt from (the
//! flattened manifest, the lock, the local-state list, the overlays) with their digests,
//! the manifest files and lock it was given, and every .deb by URL (a local one by its
//! `file://` path) and sha256.
//! [`verify`] checks each of them against the store.

use super::{BUILD_LOCAL_STATE, BUILD_LOCK, BUILD_MANIFEST};
use crate::error::{Error, Result};
use crate::sign::{keys, Signers};
use crate::store::Store;
use crate::tree::Hash;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The image file holding the provenance statement (in-toto JSON).
pub const PROVENANCE: &str = "provenance.json";
/// The image file holding the statement's DSSE envelope, with its signatures.
pub const ENVELOPE: &str = "provenance.dsse.json";
/// The DSSE payload type of the envelope: an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The statement's `_type`.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The statement's `predicateType`: SLSA provenance v1.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// The build type: what the external parameters mean (a manifest path and name).
pub const BUILD_TYPE: &str =
    "https://github.com/imager-syncer/imager/blob/main/README.md#signed-images-and-provenance";

/// The stored files a provenance names by digest (and [`verify`] re-hashes).
const STORED: [&str; 3] = [BUILD_MANIFEST, BUILD_LOCK, BUILD_LOCAL_STATE];

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// What a build knows once its image is stored.
pub struct Facts<'a> {
    /// The image's name (the manifest's): names the subjects (`NAME.tar.zst`, ...).
    pub name: &'a str,
    /// The manifest files as given (the one built first, then what it extends).
    pub manifest_files: &'a [std::path::PathBuf],
    /// The lock file the build was given (`M.lock` beside the first manifest file).
    pub lock_file: &'a std::path::Path,
    /// `SOURCE_DATE_EPOCH` the build used, seconds since the epoch (UTC).
    pub epoch: i64,
    /// The image normalisation followed (`--previous`); None when there was none.
    pub previous: Option<Hash>,
    /// The image the build stored its overlays as; None when the recipe has none.
    pub overlays: Option<Hash>,
    /// `(name=version:arch, URL, sha256)` of every .deb installed.
    pub debs: Vec<(String, String, String)>,
    /// When the build started, seconds since the epoch (UTC).
    pub started: i64,
    /// When the image was stored, seconds since the epoch (UTC).
    pub finished: i64,
}

/// The sha256 of the image's tar.zst, made now.
fn tar_digest(store: &Store, id: &Hash) -> Result<String> {
    let tree = store.read_image(id)?;
    let tar = crate::archive::tar_export::tar_zst_digest(store, &tree, &crate::progress::Quiet)?;
    Ok(tar.trim_start_matches("sha256:").to_string())
}

/// The sha256 digests of the image's tar.zst and SPDX document.
fn derived_digests(store: &Store, id: &Hash) -> Result<(String, String)> {
    let tar = tar_digest(store, id)?;
    let spdx = crate::packages::spdx_bytes(store, id, || sbom_records(store, id))?;
    Ok((tar, sha256(&spdx)))
}

/// What the build recorded about a stored image for its SBOMs: the .debs' sha256 from
/// the stored lock, the tar.zst's from the provenance; empty for an image no build
/// stored. A stored lock that does not parse is an error, not an SBOM without checksums.
pub fn sbom_records(store: &Store, id: &Hash) -> Result<crate::packages::BuildRecords> {
    let mut r = crate::packages::BuildRecords::default();
    if let Some(lock) = store.image_file(id, BUILD_LOCK)? {
        let shown = store
            .root()
            .join("images")
            .join(id.to_hex())
            .join(BUILD_LOCK);
        let lk = super::lock::Lock::parse(
            &String::from_utf8_lossy(&lock),
            &shown.display().to_string(),
        )?;
        r.locked = true;
        r.debs = lk
            .packages
            .into_iter()
            .map(|p| ((p.name, p.version, p.arch), p.sha256))
            .collect();
    }
    if let Some(st) = store.image_file(id, PROVENANCE)? {
        let v: Value = serde_json::from_slice(&st).unwrap_or(Value::Null);
        r.tar_sha256 = v["subject"][1]["digest"]["sha256"]
            .as_str()
            .map(str::to_string);
    }
    Ok(r)
}

/// The provenance statement of a stored image, as JSON bytes.
pub fn statement(store: &Store, id: &Hash, f: &Facts) -> Result<Vec<u8>> {
    // The tar.zst first: the SPDX document names its digest.
    let tar = tar_digest(store, id)?;
    let records = crate::packages::BuildRecords {
        tar_sha256: Some(tar.clone()),
        ..sbom_records(store, id)?
    };
    let doc = crate::packages::spdx_made_now(store, id, &records)?;
    store.add_image_file(id, crate::packages::SPDX_FILE, &doc)?;
    let spdx = sha256(&doc);
    let utc = crate::time::utc;
    let mut deps = Vec::new();
    for name in STORED {
        if let Some(data) = store.image_file(id, name)? {
            deps.push(json!({"name": name, "digest": {"sha256": sha256(&data)}}));
        }
    }
    if let Some(o) = f.overlays {
        deps.push(json!({"name": "overlays", "digest": {"blake3": o.to_hex()}}));
    }
    for p in f
        .manifest_files
        .iter()
        .map(|p| p.as_path())
        .chain([f.lock_file])
    {
        let data = crate::fsx::read(p)?;
        // An absolute `file://` URI: the path as given may be relative to wherever the
        // build ran, which a reader of the statement cannot know.
        let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        deps.push(
            json!({"uri": format!("file://{}", abs.display()), "digest": {"sha256": sha256(&data)}}),
        );
    }
    for (name, url, sha) in &f.debs {
        deps.push(json!({"uri": url, "name": name, "digest": {"sha256": sha}}));
    }
    let v = json!({
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": f.name, "digest": {"blake3": id.to_hex()}},
            {"name": format!("{}.tar.zst", f.name), "digest": {"sha256": tar}},
            {"name": format!("{}.spdx.json", f.name), "digest": {"sha256": spdx}},
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "manifest": f.manifest_files.first().map(|p| p.display().to_string()),
                    "name": f.name,
                },
                "internalParameters": {
                    "epoch": f.epoch,
                    "previous": f.previous.map(|p| p.to_hex()),
                },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": "https://github.com/imager-syncer/imager",
                    "version": {"imager": env!("CARGO_PKG_VERSION")},
                },
                "metadata": {
                    "invocationId": format!("{}@{}", id.to_hex(), f.started),
                    "startedOn": utc(f.started),
                    "finishedOn": utc(f.finished),
                },
            },
        },
    });
    let mut out = serde_json::to_vec_pretty(&v).map_err(|e| Error::Internal(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

/// DSSE's pre-authentication encoding of a payload.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The image's DSSE envelope with one more signature by `key` (a new envelope over the
/// stored statement when there is none). A key that signed already is signed again.
pub fn sign(store: &Store, id: &Hash, key: &ssh_key::PrivateKey) -> Result<Vec<u8>> {
    let payload = store
        .image_file(id, PROVENANCE)?
        .ok_or_else(|| Error::Signature {
            file: store
                .root()
                .join("images")
                .join(id.to_hex())
                .join(PROVENANCE),
            reason: "the image has no provenance (only `imager build` writes one)".into(),
        })?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let kp = key
        .key_data()
        .ed25519()
        .ok_or_else(|| Error::Internal("not an ed25519 key".into()))?;
    let sk = ed25519_dalek::SigningKey::from_bytes(&kp.private.to_bytes());
    use ed25519_dalek::Signer as _;
    let sig = sk.sign(&pae(PAYLOAD_TYPE, &payload));
    let keyid = keys::fingerprint(key.public_key());
    let mut sigs: Vec<Value> = match store.image_file(id, ENVELOPE)? {
        Some(old) => {
            let e: Value = serde_json::from_slice(&old)
                .map_err(|e| envelope_error(store, id, e.to_string()))?;
            e["signatures"].as_array().cloned().unwrap_or_default()
        }
        None => Vec::new(),
    };
    sigs.retain(|s| s["keyid"] != keyid.as_str());
    sigs.push(json!({"keyid": keyid, "sig": b64.encode(sig.to_bytes())}));
    let env = json!({
        "payloadType": PAYLOAD_TYPE,
        "payload": b64.encode(&payload),
        "signatures": sigs,
    });
    let mut out = serde_json::to_vec_pretty(&env).map_err(|e| Error::Internal(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

fn envelope_error(store: &Store, id: &Hash, reason: String) -> Error {
    Error::Signature {
        file: store.root().join("images").join(id.to_hex()).join(ENVELOPE),
        reason,
    }
}

/// One check of [`verify`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    /// What was checked (`stored build.lock`, `overlays`, `packages`, `subject: ...`).
    pub what: String,
    /// `None`: it holds; else what is wrong.
    pub problem: Option<String>,
}

/// Checks an image's provenance against the store: the subjects (the image ID, and the
/// tar.zst and SPDX document made again now), the stored build files, the overlays and
/// the lock's .debs; and, with `signers`, that the DSSE envelope over exactly this
/// statement carries a valid signature by one of them.
pub fn verify(store: &Store, id: &Hash, signers: Option<&Signers>) -> Result<Vec<Check>> {
    let file = store
        .root()
        .join("images")
        .join(id.to_hex())
        .join(PROVENANCE);
    let payload = store
        .image_file(id, PROVENANCE)?
        .ok_or_else(|| Error::Signature {
            file: file.clone(),
            reason: "the image has no provenance (only `imager build` writes one)".into(),
        })?;
    let st: Value = serde_json::from_slice(&payload).map_err(|e| Error::Signature {
        file: file.clone(),
        reason: format!("not JSON: {e}"),
    })?;
    let mut checks = Vec::new();
    let mut check = |what: String, problem: Option<String>| checks.push(Check { what, problem });
    let is = |v: &Value, want: &str, what: &str| -> Option<String> {
        (v.as_str() != Some(want)).then(|| format!("{what} is {v}, not {want:?}"))
    };
    check(
        "statement type".into(),
        is(&st["_type"], STATEMENT_TYPE, "_type"),
    );
    check(
        "predicate type".into(),
        is(&st["predicateType"], PREDICATE_TYPE, "predicateType"),
    );
    for c in subject_checks(store, id, &st)? {
        check(c.what, c.problem);
    }
    let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let named = |n: &str| {
        deps.iter()
            .find(|d| d["name"] == n && d.get("uri").is_none())
    };
    for name in STORED {
        let stored = store.image_file(id, name)?;
        let problem = match (named(name), stored) {
            (None, None) => continue,
            (Some(_), None) => Some("the provenance names it; the store has none".to_string()),
            (None, Some(_)) => {
                Some("the store has it; the provenance does not name it".to_string())
            }
            (Some(d), Some(data)) => {
                let got = sha256(&data);
                (d["digest"]["sha256"].as_str() != Some(got.as_str())).then(|| {
                    format!(
                        "changed since the build: sha256 {got}, the provenance says {}",
                        d["digest"]["sha256"]
                    )
                })
            }
        };
        check(format!("stored {name}"), problem);
    }
    if let Some(d) = named("overlays") {
        let problem = match d["digest"]["blake3"].as_str().and_then(Hash::from_hex) {
            Some(o) if store.has_image(&o) => None,
            Some(o) => Some(format!("overlay image {o} is not in the store")),
            None => Some(format!("bad digest {}", d["digest"])),
        };
        check("overlays".into(), problem);
    }
    if let Some(lock) = store.image_file(id, BUILD_LOCK)? {
        check("packages".into(), debs_problem(&lock, &deps));
    }
    if let Some(signers) = signers {
        check(
            "signature".into(),
            envelope_problem(store, id, &payload, signers).err(),
        );
    }
    Ok(checks)
}

/// The statement's subjects against the store's: the image ID, and its tar.zst and SPDX
/// document made again now.
fn subject_checks(store: &Store, id: &Hash, st: &Value) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    let subjects = st["subject"].as_array().cloned().unwrap_or_default();
    let (tar, spdx) = derived_digests(store, id)?;
    let want = [
        ("blake3", id.to_hex(), "the image ID"),
        ("sha256", tar, "the tar.zst"),
        ("sha256", spdx, "the SPDX document"),
    ];
    for (i, (alg, digest, what)) in want.into_iter().enumerate() {
        let got = subjects
            .get(i)
            .map(|s| s["digest"][alg].clone())
            .unwrap_or(Value::Null);
        out.push(Check {
            what: format!("subject: {what}"),
            problem: (got.as_str() != Some(digest.as_str()))
                .then(|| format!("the provenance says {got}, the store's is {digest}")),
        });
    }
    Ok(out)
}

/// Whether the .debs the provenance lists are those of the stored lock.
fn debs_problem(lock: &[u8], deps: &[Value]) -> Option<String> {
    let text = String::from_utf8_lossy(lock);
    let lk = match super::lock::Lock::parse(&text, "the stored lock") {
        Ok(l) => l,
        Err(e) => return Some(e.to_string()),
    };
    let mut want: Vec<(String, String)> = lk
        .packages
        .iter()
        .map(|p| {
            (
                format!("{}={}:{}", p.name, p.version, p.arch),
                p.sha256.clone(),
            )
        })
        .collect();
    let mut got: Vec<(String, String)> = deps
        .iter()
        // A .deb is the entry with both a URI and a name (a local one's URI is `file:`
        // too, like the manifest files', which have no name).
        .filter(|d| d["uri"].is_string() && d["name"].is_string())
        .map(|d| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (s(&d["name"]), s(&d["digest"]["sha256"]))
        })
        .collect();
    want.sort();
    got.sort();
    if want == got {
        return None;
    }
    let only = |a: &[(String, String)], b: &[(String, String)]| -> Vec<String> {
        a.iter()
            .filter(|x| !b.contains(x))
            .map(|x| x.0.clone())
            .take(5)
            .collect()
    };
    Some(format!(
        "the .debs differ from the stored lock: the lock alone has {:?}, the provenance alone {:?}",
        only(&want, &got),
        only(&got, &want)
    ))
}

/// Whether the envelope carries this statement and a valid signature by a trusted key.
fn envelope_problem(
    store: &Store,
    id: &Hash,
    payload: &[u8],
    signers: &Signers,
) -> std::result::Result<(), String> {
    let env = store
        .image_file(id, ENVELOPE)
        .map_err(|e| e.to_string())?
        .ok_or("the provenance is not signed (no DSSE envelope)")?;
    let env: Value =
        serde_json::from_slice(&env).map_err(|e| format!("{ENVELOPE} is not JSON: {e}"))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = env["payload"]
        .as_str()
        .and_then(|p| b64.decode(p).ok())
        .ok_or(format!("{ENVELOPE} has no base64 payload"))?;
    if body != payload {
        return Err(format!(
            "{ENVELOPE} signs another statement than {PROVENANCE}"
        ));
    }
    if env["payloadType"] != PAYLOAD_TYPE {
        return Err(format!(
            "{ENVELOPE} has payload type {}, not {PAYLOAD_TYPE}",
            env["payloadType"]
        ));
    }
    let msg = pae(PAYLOAD_TYPE, &body);
    let now = crate::sign::now();
    let mut why = Vec::new();
    for s in env["signatures"].as_array().into_iter().flatten() {
        let keyid = s["keyid"].as_str().unwrap_or_default();
        let Some(sig) = s["sig"].as_str().and_then(|x| b64.decode(x).ok()) else {
            why.push(format!("{keyid}: the signature is not base64"));
            continue;
        };
        // A key may have several lines (an expired one beside its renewal): any line
        // valid now will do.
        let lines: Vec<_> = signers
            .0
            .iter()
            .filter(|t| keys::fingerprint(&t.key) == keyid)
            .collect();
        let Some(first) = lines.first() else {
            why.push(format!("{keyid}: not a trusted key"));
            continue;
        };
        let Some(signer) = lines.iter().find(|t| t.refusal(now).is_none()) else {
            let r = first.refusal(now).unwrap_or_default();
            why.push(format!("{keyid}: {r}"));
            continue;
        };
        let ok = signer.key.key_data().ed25519().is_some_and(|pk| {
            let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&pk.0) else {
                return false;
            };
            let Ok(sig) = ed25519_dalek::Signature::from_slice(&sig) else {
                return false;
            };
            vk.verify_strict(&msg, &sig).is_ok()
        });
        if ok {
            return Ok(());
        }
        why.push(format!("{keyid}: the signature does not match"));
    }
    if why.is_empty() {
        why.push("it has no signatures".into());
    }
    Err(format!(
        "no valid signature by a trusted key: {}",
        why.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::Access;

    /// A key renewed in allowed_signers (an expired line, then a valid one) still
    /// verifies the envelope; with the expired line alone it does not, and says why.
    #[test]
    fn a_key_listed_twice_counts_by_its_line_valid_now() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), Access::Write).unwrap();
        let id = store.write_image(&crate::Tree::default(), &[]).unwrap();
        let payload = b"{\"_type\": \"x\"}\n";
        store.add_image_file(&id, PROVENANCE, payload).unwrap();
        let k = dir.path().join("release");
        let public = keys::generate(&k, "release@example.com", None).unwrap();
        let key = keys::load_private(&k, None).unwrap();
        let env = sign(&store, &id, &key).unwrap();
        store.add_image_file(&id, ENVELOPE, &env).unwrap();
        let line = public.to_openssh().unwrap();
        let expired = format!("release@example.com valid-before=\"20000101Z\" {line}\n");
        let renewed = format!("{expired}release@example.com {line}\n");
        let signers = Signers::parse_allowed(&renewed, "allowed_signers").unwrap();
        assert_eq!(envelope_problem(&store, &id, payload, &signers), Ok(()));
        let signers = Signers::parse_allowed(&expired, "allowed_signers").unwrap();
        let e = envelope_problem(&store, &id, payload, &signers).unwrap_err();
        assert!(e.contains("expired"), "{e}");
    }
}
