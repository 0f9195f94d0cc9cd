//! A trust policy: which signatures an image needs before a host commits it. The same
//! file serves `imager verify --policy`, the controller's `require_signed` and, the
//! real gate, the agent on each host (`/etc/syncer/trust.toml`, local state).
//!
//! ```toml
//! allowed_signers = "allowed_signers"   # ssh-keygen's format, relative to this file
//! [[require]]                           # every requirement is met, each by its own key
//! signers = ["release-*@example.com"]   # globs over the principals (default: any signer)
//! [[require]]
//! signers = ["review-*@example.com"]
//! note = "approved for prod"            # optional: the signature's note, exactly
//! names = ["base", "web"]               # optional: the name it was signed for
//! ```
//! A policy without `[[require]]` asks for one signature by any trusted signer.
//! `health = ["systemctl is-system-running --wait"]` lists the only health-check
//! commands an agent runs for a controller on a host with this policy (none when absent):
//! a health check is a command the controller chooses, run as root, and would otherwise
//! let a controller do on the host what the signatures forbid. Likewise
//! `mirrors = ["http://cache.ams1:8080/"]`: the only HTTP mirrors it fetches content
//! from (a fetch is a request the controller points anywhere).
//! `max_age = "30d"` (see [`super::freshness::parse_duration`]): a statement signed
//! longer ago than that does not count on a host ([`TrustPolicy::check_fresh`]).

use super::{verify, Signed, Signers, Verified};
use crate::error::{Error, Result};
use crate::tree::Hash;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    allowed_signers: String,
    #[serde(default)]
    require: Vec<RequireFile>,
    #[serde(default)]
    health: Vec<String>,
    #[serde(default)]
    mirrors: Vec<String>,
    max_age: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequireFile {
    #[serde(default)]
    signers: Vec<String>,
    note: Option<String>,
    #[serde(default)]
    names: Vec<String>,
}

/// One requirement: a signature by a signer whose principal matches one of `signers`
/// (any when empty), with that note and for one of those names when they are given.
#[derive(Clone, Debug)]
pub struct Requirement {
    /// Globs over principals, as written in the policy (`release-*@example.com`).
    pub signers: Vec<String>,
    matcher: globset::GlobSet,
    /// The note the statement must carry, compared exactly; `None`: any note.
    pub note: Option<String>,
    /// The names the statement may be for; empty: any name.
    pub names: Vec<String>,
}

impl Requirement {
    fn accepts(&self, v: &Verified) -> bool {
        (self.signers.is_empty() || v.principals.iter().any(|p| self.matcher.is_match(p)))
            && self.note.as_ref().is_none_or(|n| *n == v.statement.note)
            && (self.names.is_empty() || self.names.contains(&v.statement.name))
    }

    /// In words, for messages: "a signature by release-* for base, noted \"…\"".
    pub fn describe(&self) -> String {
        let mut s = if self.signers.is_empty() {
            "a signature by a trusted signer".to_string()
        } else {
            format!("a signature by {}", self.signers.join(" or "))
        };
        if !self.names.is_empty() {
            s += &format!(" for {}", self.names.join(" or "));
        }
        if let Some(n) = &self.note {
            s += &format!(" with the note {n:?}");
        }
        s
    }
}

/// How far after a host's clock a statement may be dated and still count: clocks
/// disagree, but not by days.
pub const MAX_SKEW: i64 = 24 * 3600;

/// A loaded policy.
#[derive(Clone, Debug)]
pub struct TrustPolicy {
    /// The policy file, for messages.
    pub origin: String,
    /// The keys the policy's allowed_signers file trusts (never none).
    pub signers: Signers,
    /// What every image needs, each met by a different key; never empty (no
    /// `[[require]]` in the file means one signature by any trusted signer).
    pub require: Vec<Requirement>,
    /// The health-check commands an agent may run (exactly these strings).
    pub health: Vec<String>,
    /// The HTTP mirrors an agent fetches content from (exactly these base URLs).
    pub mirrors: Vec<String>,
    /// The oldest a statement may be on a host (seconds), and as written.
    pub max_age: Option<(i64, String)>,
    /// The blake3 of the policy file and its allowed_signers file, so two hosts' policies
    /// can be compared (`syncer status`).
    pub digest: Hash,
}

/// Which signature met which requirement.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Approval {
    /// One per requirement, in the policy's order: the requirement in words
    /// ([`Requirement::describe`]) and the signature that met it.
    pub met: Vec<(String, Verified)>,
    /// Every valid signature that meets a requirement (more than `met` when there are
    /// more than needed): the statements anti-rollback weighs.
    pub accepted: Vec<Verified>,
}

impl TrustPolicy {
    /// Parses a policy; `read` reads the allowed_signers file it names (a path relative
    /// to the policy's directory), so that an agent reads it beneath the host's root.
    pub fn parse(
        text: &str,
        origin: &str,
        read: &dyn Fn(&str) -> Result<(String, String)>,
    ) -> Result<TrustPolicy> {
        let bad = |reason: String| Error::Signature {
            file: origin.into(),
            reason,
        };
        let f: PolicyFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let (signers_text, signers_origin) = read(&f.allowed_signers)?;
        let signers = Signers::parse_allowed(&signers_text, &signers_origin)?;
        if signers.0.is_empty() {
            return Err(bad(format!("{signers_origin} lists no signer")));
        }
        let mut require = Vec::new();
        for r in f.require {
            let mut b = globset::GlobSetBuilder::new();
            for g in &r.signers {
                b.add(
                    globset::Glob::new(g)
                        .map_err(|e| bad(format!("bad signer glob {g:?}: {e}")))?,
                );
            }
            let matcher = b.build().map_err(|e| bad(e.to_string()))?;
            require.push(Requirement {
                signers: r.signers,
                matcher,
                note: r.note,
                names: r.names,
            });
        }
        if require.is_empty() {
            require.push(Requirement {
                signers: Vec::new(),
                matcher: globset::GlobSet::empty(),
                note: None,
                names: Vec::new(),
            });
        }
        let max_age = match f.max_age {
            None => None,
            Some(t) => Some((
                super::freshness::parse_duration(&t).map_err(|e| bad(format!("max_age: {e}")))?,
                t,
            )),
        };
        let mut h = blake3::Hasher::new();
        h.update(text.as_bytes());
        h.update(b"\0");
        h.update(signers_text.as_bytes());
        Ok(TrustPolicy {
            origin: origin.to_string(),
            signers,
            require,
            health: f.health,
            mirrors: f.mirrors,
            max_age,
            digest: Hash(*h.finalize().as_bytes()),
        })
    }

    /// Reads a policy file on this machine.
    pub fn load(path: &std::path::Path) -> Result<TrustPolicy> {
        let text = crate::fsx::read_to_string(path)?;
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        TrustPolicy::parse(&text, &path.display().to_string(), &|rel| {
            let p = dir.join(rel);
            Ok((crate::fsx::read_to_string(&p)?, p.display().to_string()))
        })
    }

    /// "2 requirements, 3 trusted keys".
    pub fn summary(&self) -> String {
        let n = self.require.len();
        format!(
            "{n} requirement{}, {} trusted key{}",
            if n == 1 { "" } else { "s" },
            self.signers.0.len(),
            if self.signers.0.len() == 1 { "" } else { "s" }
        )
    }

    /// Whether the signatures of `image` satisfy the policy at `now`: every requirement
    /// met by a valid signature, each by a different key. The error says, for each
    /// requirement not met, why each signature did not count. `max_age` is not applied
    /// (the controller's early check: a rollback to an image the host ran must not fail
    /// on it); hosts use [`TrustPolicy::check_fresh`].
    pub fn check(
        &self,
        image: &Hash,
        sigs: &[Signed],
        now: i64,
    ) -> std::result::Result<Approval, String> {
        self.check_aged(image, sigs, now, false)
    }

    /// The same, and a statement signed more than `max_age` before `now` does not count.
    pub fn check_fresh(
        &self,
        image: &Hash,
        sigs: &[Signed],
        now: i64,
    ) -> std::result::Result<Approval, String> {
        self.check_aged(image, sigs, now, true)
    }

    fn check_aged(
        &self,
        image: &Hash,
        sigs: &[Signed],
        now: i64,
        aged: bool,
    ) -> std::result::Result<Approval, String> {
        let mut valid = Vec::new();
        let mut invalid = Vec::new();
        for s in sigs {
            match verify(&self.signers, image, s, now) {
                // Counted, it would move the host's anti-rollback record past every
                // real release to come (a freeze), whether or not its signer's clock
                // was only wrong.
                Ok(v) if v.statement.time > now.saturating_add(MAX_SKEW) => invalid.push(format!(
                    "{}: signed {}, more than a day after this host's clock ({}): a \
                     signer's clock is wrong, or the statement would freeze the host's \
                     anti-rollback record",
                    v.origin,
                    crate::time::utc(v.statement.time),
                    crate::time::utc(now)
                )),
                Ok(v) => match self.max_age.as_ref().filter(|_| aged) {
                    Some((age, text)) if v.statement.time < now.saturating_sub(*age) => invalid
                        .push(format!(
                            "{}: signed {}, longer ago than the max_age of {text} in {}",
                            v.origin,
                            crate::time::utc(v.statement.time),
                            self.origin
                        )),
                    _ => valid.push(v),
                },
                Err(e) => invalid.push(e),
            }
        }
        if let Some(met) = assign(&self.require, &valid, 0, &mut Vec::new()) {
            return Ok(Approval {
                met: met
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (self.require[i].describe(), valid[v].clone()))
                    .collect(),
                accepted: valid
                    .iter()
                    .filter(|v| self.require.iter().any(|r| r.accepts(v)))
                    .cloned()
                    .collect(),
            });
        }
        let wants: Vec<String> = self.require.iter().map(Requirement::describe).collect();
        let mut msg = format!(
            "image {image} is not signed as {} requires ({})",
            self.origin,
            wants.join(", and ")
        );
        if sigs.is_empty() {
            msg += ": it has no signature";
        }
        for v in &valid {
            msg += &format!(
                "; {}: a valid signature by {} ({}) for {:?}, note {:?}, is not enough for the requirements left",
                v.origin,
                v.principals.join(","),
                v.fingerprint,
                v.statement.name,
                v.statement.note
            );
        }
        for e in invalid {
            msg += &format!("; {e}");
        }
        Err(msg)
    }
}

/// Gives requirement `i..` each a different key among `valid` (a small search: a
/// policy has a few requirements, an image a few signatures).
fn assign(
    req: &[Requirement],
    valid: &[Verified],
    i: usize,
    used: &mut Vec<usize>,
) -> Option<Vec<usize>> {
    if i == req.len() {
        return Some(used.clone());
    }
    for (n, v) in valid.iter().enumerate() {
        let key_taken = used.iter().any(|u| valid[*u].fingerprint == v.fingerprint);
        if key_taken || !req[i].accepts(v) {
            continue;
        }
        used.push(n);
        if let Some(done) = assign(req, valid, i + 1, used) {
            return Some(done);
        }
        used.pop();
    }
    None
}
