//! What `imager sign` and `imager verify` do, as library calls with their reports: a
//! stored image (and its build provenance) signed, its signatures checked against a
//! trust policy. The signatures themselves, as data and checks, are [`crate::sign`].

use crate::build::provenance;
use crate::error::{Error, Result};
use crate::sign::{keys, sign, Signers, Statement, TrustPolicy, Verified};
use crate::store::Store;
use crate::tree::Hash;
use std::io::Write;
use std::path::PathBuf;

/// What `imager sign` stored.
#[derive(Debug, serde::Serialize)]
pub struct SignReport {
    /// The signed image's id, in hex.
    pub image: String,
    /// The signing key's fingerprint, `SHA256:…` as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// What was signed: the image, the name it is approved as, the note, the time.
    pub statement: Statement,
    /// The `.sig` file; its statement is the `.msg` beside it.
    pub signature: PathBuf,
    /// The DSSE envelope, when the provenance was signed too.
    pub provenance_envelope: Option<PathBuf>,
}

impl SignReport {
    /// Prints what was signed, by which key, and where the signature files are.
    pub fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "signed image {} as {:?} by {}",
            self.image, self.statement.name, self.fingerprint
        )?;
        writeln!(out, "signature {}", self.signature.display())?;
        if let Some(e) = &self.provenance_envelope {
            writeln!(out, "provenance envelope {}", e.display())?;
        }
        Ok(())
    }
}

/// What a signer approves an image for: the statement's fields but the image and time.
#[derive(Clone, Debug, Default)]
pub struct Terms {
    /// The name (default: see `name_for`).
    pub name: Option<String>,
    /// What the signature approves the image for (`--note`): free text on one line,
    /// possibly empty ("approved for prod").
    pub note: String,
    /// `--version`: the signer's monotonic number for the name.
    pub version: Option<u64>,
    /// `--allow-rollback-until`: the image may replace a newer one until then.
    pub rollback_until: Option<i64>,
}

impl Terms {
    fn statement(&self, store: &Store, spec: &str, id: Hash) -> Result<Statement> {
        let name = name_for(store, spec, &id, self.name.as_deref())?;
        Statement::check_fields(&name, &self.note).map_err(Error::Usage)?;
        Ok(Statement {
            image: id,
            name,
            note: self.note.clone(),
            time: crate::sign::now(),
            version: self.version,
            rollback_until: self.rollback_until,
        })
    }
}

/// `--allow-rollback-until`: a time (`2026-12-20T00:00:00Z`), a day (`2026-12-20`, its
/// start, UTC) or a duration from `now` (`14d`).
pub fn parse_until(text: &str, now: i64) -> Result<i64> {
    crate::sign::statement::parse_utc(text)
        .or_else(|| crate::sign::statement::parse_utc(&format!("{text}T00:00:00Z")))
        .or_else(|| {
            crate::sign::freshness::parse_duration(text)
                .ok()
                .and_then(|d| now.checked_add(d))
        })
        .ok_or_else(|| {
            Error::Usage(format!(
                "bad time {text:?}: give YYYY-MM-DDTHH:MM:SSZ, YYYY-MM-DD or a duration such as 14d"
            ))
        })
}

/// The name an image is signed for: `--name`, else the name the image was asked for by
/// (when it is one), else its only name in the store.
fn name_for(store: &Store, spec: &str, id: &Hash, name: Option<&str>) -> Result<String> {
    if let Some(n) = name {
        return Ok(n.to_string());
    }
    let names = store.names_of(id)?;
    if names.iter().any(|n| n == spec) {
        return Ok(spec.to_string());
    }
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::Usage(format!(
            "image {id} has no name in the store: say what it is approved as with --name"
        ))),
        many => Err(Error::Usage(format!(
            "image {id} has several names ({}): say which with --name",
            many.join(", ")
        ))),
    }
}

/// The statement `imager sign --print-statement` prints, to be signed elsewhere with
/// `ssh-keygen -Y sign -n imager-image` (a reviewer's machine, a hardware key).
pub fn statement_for(store: &Store, spec: &str, terms: &Terms) -> Result<Statement> {
    let id = store.resolve(spec)?;
    store.image_text(&id)?;
    terms.statement(store, spec, id)
}

/// `imager sign --add STATEMENT SIG`: stores a signature made elsewhere, once it is
/// checked to be a valid SSH signature (by the key it carries) over a statement for this
/// image. Whether that key is trusted is for `verify` and the hosts to say.
pub fn add_signature(
    store: &Store,
    spec: &str,
    statement: &std::path::Path,
    signature: &std::path::Path,
) -> Result<SignReport> {
    let id = store.resolve(spec)?;
    let signed = crate::sign::Signed {
        statement: crate::fsx::read(statement)?,
        signature: crate::fsx::read(signature)?,
        origin: signature.display().to_string(),
    };
    let v = crate::sign::verify_by_own_key(&id, &signed).map_err(|e| Error::Signature {
        file: statement.to_path_buf(),
        reason: format!("not added: {e}"),
    })?;
    let path = store.add_signature(&id, &signed)?;
    Ok(SignReport {
        image: id.to_hex(),
        fingerprint: v.fingerprint,
        statement: v.statement,
        signature: path,
        provenance_envelope: None,
    })
}

/// `imager sign`: signs the image (and, with `with_provenance`, its provenance) and
/// stores the signature beside it.
pub fn sign_image(
    store: &Store,
    spec: &str,
    key: &ssh_key::PrivateKey,
    terms: &Terms,
    with_provenance: bool,
) -> Result<SignReport> {
    let id = store.resolve(spec)?;
    // The ID is the manifest's hash: check it before vouching for it.
    store.image_text(&id)?;
    let statement = terms.statement(store, spec, id)?;
    let signed = sign(key, &statement)?;
    // The envelope first: an image without provenance fails before anything is stored.
    let envelope = with_provenance
        .then(|| provenance::sign(store, &id, key))
        .transpose()?;
    let path = store.add_signature(&id, &signed)?;
    let provenance_envelope = match envelope {
        Some(env) => Some(store.add_image_file(&id, provenance::ENVELOPE, &env)?),
        None => None,
    };
    Ok(SignReport {
        image: id.to_hex(),
        fingerprint: keys::fingerprint(key.public_key()),
        statement,
        signature: path,
        provenance_envelope,
    })
}

/// Whom `imager verify` trusts.
pub enum Trust {
    /// Public keys, allowed_signers files, or directories of them: one valid signature
    /// by any of them is enough.
    Signers(Signers),
    /// A trust policy, as a host applies it.
    Policy(TrustPolicy),
    /// No one: only the provenance's content is checked.
    Nobody,
}

/// What `imager verify` found.
#[derive(Debug, serde::Serialize)]
pub struct VerifyReport {
    /// The image checked, its id in hex.
    pub image: String,
    /// The signatures that check out against the given signers, with what they approve.
    pub valid: Vec<Verified>,
    /// Signatures that do not count, each with the reason.
    pub invalid: Vec<String>,
    /// With a policy: which signature met which requirement, or why it is not met.
    pub policy: Option<std::result::Result<crate::sign::policy::Approval, String>>,
    /// What each provenance check found; None when provenance was not asked for.
    pub provenance: Option<Vec<provenance::Check>>,
    /// The verdict: the signatures (the policy, when one was given; else at least one valid
    /// signature, when signers were given) and every provenance check hold.
    pub ok: bool,
}

/// `imager verify`.
pub fn verify_image(
    store: &Store,
    spec: &str,
    trust: &Trust,
    with_provenance: bool,
) -> Result<VerifyReport> {
    let id = store.resolve(spec)?;
    store.image_text(&id)?;
    let sigs = store.signatures(&id)?;
    let now = crate::sign::now();
    let signers = match trust {
        Trust::Signers(s) => Some(s),
        Trust::Policy(p) => Some(&p.signers),
        Trust::Nobody => None,
    };
    let (mut valid, mut invalid) = (Vec::new(), Vec::new());
    if let Some(signers) = signers {
        for s in &sigs {
            match crate::sign::verify(signers, &id, s, now) {
                Ok(v) => valid.push(v),
                Err(e) => invalid.push(e),
            }
        }
    }
    let policy = match trust {
        // What a host with this policy would say (its max_age included).
        Trust::Policy(p) => Some(p.check_fresh(&id, &sigs, now)),
        _ => None,
    };
    let provenance = if with_provenance {
        Some(provenance::verify(store, &id, signers)?)
    } else {
        None
    };
    let sigs_ok = match (trust, &policy) {
        (_, Some(p)) => p.is_ok(),
        (Trust::Signers(_), None) => !valid.is_empty(),
        _ => true,
    };
    let prov_ok = provenance
        .as_ref()
        .is_none_or(|c| c.iter().all(|c| c.problem.is_none()));
    Ok(VerifyReport {
        image: id.to_hex(),
        valid,
        invalid,
        policy,
        provenance,
        ok: sigs_ok && prov_ok,
    })
}

impl VerifyReport {
    /// Prints each signature, counted or not, the policy's verdict, the provenance checks
    /// and the overall verdict (`verified` or `NOT verified`).
    pub fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "image {}", self.image)?;
        for v in &self.valid {
            writeln!(
                out,
                "good signature by {} ({}) for {:?}, note {:?}, signed {}{}{}: {}",
                v.principals.join(","),
                v.fingerprint,
                v.statement.name,
                v.statement.note,
                crate::time::utc(v.statement.time),
                v.statement
                    .version
                    .map(|n| format!(", version {n}"))
                    .unwrap_or_default(),
                v.statement
                    .rollback_until
                    .map(|t| format!(
                        ", approves rolling back to it until {}",
                        crate::time::utc(t)
                    ))
                    .unwrap_or_default(),
                v.origin
            )?;
        }
        for e in &self.invalid {
            writeln!(out, "not counted: {e}")?;
        }
        match &self.policy {
            Some(Ok(a)) => {
                for (req, v) in &a.met {
                    writeln!(
                        out,
                        "policy: {req}: met by {} ({})",
                        v.principals.join(","),
                        v.fingerprint
                    )?;
                }
            }
            Some(Err(e)) => writeln!(out, "policy not met: {e}")?,
            None => {}
        }
        for c in self.provenance.iter().flatten() {
            match &c.problem {
                None => writeln!(out, "provenance: {}: ok", c.what)?,
                Some(p) => writeln!(out, "provenance: {}: WRONG: {p}", c.what)?,
            }
        }
        writeln!(out, "{}", if self.ok { "verified" } else { "NOT verified" })
    }
}
