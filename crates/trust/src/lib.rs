//! imager-trust: image signatures, who approved an image, for what. A signature is an SSH signature
//! (`ssh-keygen -Y sign`, namespace [`NAMESPACE`]) over a [`Statement`] naming the
//! image ID, so that anyone can check one with OpenSSH alone. Signatures live in the
//! store beside the image (imager's `Store::add_signature`) and travel with it
//! on a push; [`policy`] is what a host demands of them; the build's provenance
//! (imager's `build::provenance`) is signed as a DSSE envelope; [`freshness`] is anti-rollback (the
//! newest statement a host accepted per name, rollback approvals, `max_age`).
//!
//! Why SSH signatures and not minisign: every host and operator machine already has
//! `ssh-keygen`, release engineers already hold ed25519 SSH keys (and hardware tokens
//! that make them), and `allowed_signers` gives each key names, a namespace and a
//! validity window, which is what a host's trust policy needs.

#![warn(missing_docs)]

// The model and the filesystem, under the names the modules use.
use imager_core::{error, fsx, time, tree, Error, Result};

pub mod freshness;
pub mod keys;
pub mod policy;
pub mod statement;

pub use keys::{Signer, Signers};
pub use policy::TrustPolicy;
pub use statement::Statement;

use crate::tree::Hash;
use ssh_key::{HashAlg, LineEnding, PrivateKey, SshSig};

/// The SSH signature namespace of image statements (`ssh-keygen -Y … -n imager-image`).
pub const NAMESPACE: &str = "imager-image";

/// One signature as stored and sent: the statement's bytes and the armoured SSH
/// signature over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// The statement's text ([`Statement::print`]), exactly the bytes signed.
    pub statement: Vec<u8>,
    /// The signature in `ssh-keygen -Y sign`'s armoured form (`-----BEGIN SSH SIGNATURE-----`).
    pub signature: Vec<u8>,
    /// Where it came from, for messages (a store path, or "signature N" on a host).
    pub origin: String,
}

/// Signs `statement` with `key`.
pub fn sign(key: &PrivateKey, statement: &Statement) -> crate::Result<Signed> {
    let text = statement.print();
    let sig = key
        .sign(NAMESPACE, HashAlg::Sha512, text.as_bytes())
        .map_err(|e| crate::Error::Internal(format!("cannot sign: {e}")))?;
    let pem = sig
        .to_pem(LineEnding::LF)
        .map_err(|e| crate::Error::Internal(format!("cannot encode a signature: {e}")))?;
    Ok(Signed {
        statement: text.into_bytes(),
        signature: pem.into_bytes(),
        origin: String::new(),
    })
}

/// A signature that checked out: by whom, and what it says.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Verified {
    /// The signing key's fingerprint, `SHA256:…` as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The names the trusted signer's line gives the key (what policies match).
    pub principals: Vec<String>,
    /// The statement as parsed, for the image checked.
    pub statement: Statement,
    /// Where the signature came from, for messages (the [`Signed::origin`]).
    pub origin: String,
}

/// Checks one signature of `image` against `signers` at time `now` (seconds since the
/// epoch). The error is why it does not count, in words that name the signature.
pub fn verify(
    signers: &Signers,
    image: &Hash,
    s: &Signed,
    now: i64,
) -> std::result::Result<Verified, String> {
    let why = |reason: String| format!("{}: {reason}", s.origin);
    let pem = std::str::from_utf8(&s.signature).map_err(|_| why("not UTF-8".into()))?;
    let sig =
        SshSig::from_pem(pem.trim()).map_err(|e| why(format!("not an SSH signature ({e})")))?;
    if sig.namespace() != NAMESPACE {
        return Err(why(format!(
            "signed in namespace {:?}, not {NAMESPACE:?}",
            sig.namespace()
        )));
    }
    let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256).to_string();
    let mut refusals = Vec::new();
    let mut signer = None;
    for candidate in signers.with_key(sig.public_key()) {
        match candidate.refusal(now) {
            Some(r) => refusals.push(r),
            None => {
                signer = Some(candidate);
                break;
            }
        }
    }
    let signer = match signer {
        Some(s) => s,
        None if refusals.is_empty() => {
            return Err(why(format!(
                "signed by {fingerprint}, a key that is not trusted"
            )))
        }
        None => {
            return Err(why(format!(
                "signed by {fingerprint}: {}",
                refusals.join("; ")
            )))
        }
    };
    signer
        .key
        .verify(NAMESPACE, &s.statement, &sig)
        .map_err(|_| {
            why(format!(
                "the signature by {fingerprint} does not match its statement"
            ))
        })?;
    let statement = Statement::parse(&s.statement).map_err(why)?;
    if statement.image != *image {
        return Err(why(format!(
            "the statement is for image {}, not {image}",
            statement.image
        )));
    }
    Ok(Verified {
        fingerprint,
        principals: signer.principals.clone(),
        statement,
        origin: s.origin.clone(),
    })
}

/// Checks that `s` is a valid signature over a statement for `image` by the key it
/// carries, whoever that is: what `imager sign --add` and `imager fsck` ask (whom to
/// trust is for `verify` and the hosts).
pub fn verify_by_own_key(image: &Hash, s: &Signed) -> std::result::Result<Verified, String> {
    let pem = std::str::from_utf8(&s.signature).map_err(|_| format!("{}: not UTF-8", s.origin))?;
    let sig = SshSig::from_pem(pem.trim())
        .map_err(|e| format!("{}: not an SSH signature ({e})", s.origin))?;
    let own = Signers(vec![Signer {
        key: ssh_key::PublicKey::from(sig.public_key().clone()),
        principals: vec!["(its own key)".into()],
        namespaces: Vec::new(),
        valid_after: None,
        valid_before: None,
        origin: s.origin.clone(),
    }]);
    verify(&own, image, s, now())
}

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
