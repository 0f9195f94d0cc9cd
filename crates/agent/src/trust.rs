//! The host's trust policy: `ROOT/etc/syncer/trust.toml` ([`imager_trust::policy`]) and
//! the allowed_signers file it names, read beneath the root when a session starts. A
//! host with a policy commits only an image whose signatures satisfy it, checked here,
//! on the host, against the image ID whose manifest the agent hashes itself: a
//! controller cannot skip it. `/etc/syncer` is the agent's own (like its state
//! directory): no push changes or removes it, whatever local-state list it sends.
//!
//! Anti-rollback ([`imager_trust::freshness`]) is checked here too, against the record
//! in the state directory (`accepted`): an image whose statements are all older than the
//! newest this host accepted for their names is refused unless a signer approved the
//! rollback, and a policy's `max_age` refuses stale statements. Two images are taken
//! again whatever their age: the one the host runs (a repair of drift is no rollback)
//! and the one it ran before its last commit, by the agent's own record (what a
//! rollout's automatic rollback, or `syncer rollback`, puts back). Not the `previous`
//! image the controller may set (`Previous::Image`): that one is the controller's word.
//! The record moves only when a commit of an accepted image finishes (staged as
//! `target.accepted` before the commit point, put in place with the image), never on a
//! dry run.

use super::state::{self, StateDir};
use crate::error::{Error, Result};
use crate::protocol::{ImageSignature, TrustSummary};
use imager_core::safe_dir::Beneath;
use imager_core::Hash;
use imager_trust::freshness::Newest;
use imager_trust::TrustPolicy;
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use std::os::fd::OwnedFd;
use std::path::Path;

/// The agent's configuration directory, relative to the root: no push touches it.
pub const DIR: &[u8] = b"/etc/syncer";
/// The policy's file name in [`DIR`].
pub const POLICY: &str = "trust.toml";
/// The most signatures a `Target` may carry.
pub const MAX_SIGNATURES: usize = 256;

/// What the host's policy is.
pub enum HostTrust {
    /// No `/etc/syncer/trust.toml`: every image is accepted (as before policies).
    None,
    /// A usable policy: only images whose signatures satisfy it are committed.
    Policy(Box<TrustPolicy>),
    /// The policy exists but cannot be used: every image is refused until it is fixed.
    Broken(String),
}

impl HostTrust {
    /// Reads the policy beneath the root `b`: a policy that exists but cannot be read, or
    /// whose directory is unsafe, is `Broken`.
    pub fn load(b: &Beneath) -> HostTrust {
        match load(b) {
            Ok(None) => HostTrust::None,
            Ok(Some(p)) => HostTrust::Policy(Box::new(p)),
            Err(e) => HostTrust::Broken(e.to_string()),
        }
    }

    /// For the `Welcome`.
    pub fn summary(&self) -> Option<TrustSummary> {
        match self {
            HostTrust::None => None,
            HostTrust::Policy(p) => Some(TrustSummary {
                summary: p.summary(),
                digest: Some(p.digest),
            }),
            HostTrust::Broken(e) => Some(TrustSummary {
                summary: format!("unusable, every image is refused: {e}"),
                digest: None,
            }),
        }
    }

    /// Whether the controller may run `command` as a health check: any command on a host
    /// without a policy, only those the policy lists on a host with one.
    pub fn allows_health(&self, command: &str) -> std::result::Result<(), String> {
        match self {
            HostTrust::None => Ok(()),
            HostTrust::Broken(e) => Err(format!(
                "refusing the health command {command:?}: the host's trust policy cannot be used: {e}"
            )),
            HostTrust::Policy(p) if p.health.iter().any(|h| h == command) => Ok(()),
            HostTrust::Policy(p) => Err(format!(
                "refusing the health command {command:?}: {} does not list it in `health`",
                p.origin
            )),
        }
    }

    /// Why the host does not fetch from `mirror` (`None`: it does). A `Fetch` makes the
    /// host send HTTP requests where the controller says: on a host with a policy, only
    /// to the mirrors it lists (a controller limited to the protocol must not reach the
    /// host's network through it).
    pub fn mirror_refusal(&self, mirror: &str) -> Option<String> {
        match self {
            HostTrust::None => None,
            HostTrust::Broken(e) => Some(format!(
                "not fetched from: the host's trust policy cannot be used: {e}"
            )),
            HostTrust::Policy(p) if p.mirrors.iter().any(|m| m == mirror) => None,
            HostTrust::Policy(p) => Some(format!(
                "not fetched from: {} does not list it in `mirrors`",
                p.origin
            )),
        }
    }

    /// Whether the host may take `image` with these signatures: `Some(record)` on a
    /// host with a policy, the anti-rollback record to keep once it is committed.
    pub fn check(
        &self,
        image: &Hash,
        sigs: &[ImageSignature],
        st: &StateDir,
    ) -> Result<Option<Newest>> {
        // Each is an ed25519 verification: a controller must not make the host do
        // millions (a real image has a builder's and a reviewer's or two).
        if sigs.len() > MAX_SIGNATURES {
            return Err(Error::Protocol(format!(
                "image {image} comes with {} signatures, more than the {MAX_SIGNATURES} an agent checks",
                sigs.len()
            )));
        }
        let p = match self {
            HostTrust::None => return Ok(None),
            HostTrust::Broken(e) => {
                return Err(Error::Agent(format!(
                    "refusing image {image}: the host's trust policy cannot be used: {e}"
                )))
            }
            HostTrust::Policy(p) => p,
        };
        let refusing = |e: String| Error::Agent(format!("refusing the push: {e}"));
        let shown = st.shown(state::ACCEPTED).display().to_string();
        let newest = match st.read_text(state::ACCEPTED)? {
            None => Newest::default(),
            Some(text) => Newest::parse(&text).map_err(|e| {
                refusing(format!(
                    "the host's anti-rollback record {shown} cannot be read ({e}); restore it, \
                     or remove it to accept any image its policy accepts and start it again"
                ))
            })?,
        };
        let signed = ImageSignature::signed(sigs, " sent");
        let now = imager_trust::now();
        let before = st.image()?;
        // The host's own images: the one it runs and the one it ran just before.
        let own = before == Some(*image) || newest.way_back == Some(*image);
        let approval = if own {
            p.check(image, &signed, now)
        } else {
            p.check_fresh(image, &signed, now)
        }
        .map_err(refusing)?;
        if !own {
            if let Some(why) = newest.refusal(image, &approval.accepted, now, &shown) {
                return Err(refusing(why));
            }
        }
        Ok(Some(newest.after(image, &approval.accepted, before)))
    }
}

/// Before a commit point: the record to put in place when the commit finishes (none: a
/// host without a policy keeps the one it has). Not flushed: the caller flushes the
/// state directory before the journal is written.
pub fn stage_record(st: &StateDir, record: Option<&Newest>) -> Result<()> {
    match record {
        Some(r) => st.write_unsynced(state::TARGET_ACCEPTED, r.print().as_bytes()),
        None => st.remove(state::TARGET_ACCEPTED),
    }
}

fn load(b: &Beneath) -> Result<Option<TrustPolicy>> {
    let dir = match b.open_dir(DIR) {
        Ok(d) => d,
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let shown = b.display(DIR).join(POLICY);
    let refused =
        |file: &Path, reason: String| Error::Agent(format!("{}: {reason}", file.display()));
    let Some(text) = read_strict(&dir, POLICY, &shown).map_err(|r| refused(&shown, r))? else {
        return Ok(None);
    };
    // Only a policy's directory is judged (as sshd judges the directories of an
    // `authorized_keys` that exists): without a policy the host accepts every image
    // whoever can write here.
    check_dir(&dir, &b.display(DIR)).map_err(|r| refused(&b.display(DIR), r))?;
    let text = String::from_utf8(text)
        .map_err(|_| Error::Agent(format!("{} is not UTF-8", shown.display())))?;
    let read = |rel: &str| -> imager_core::Result<(String, String)> {
        let path = format!("{}/{rel}", String::from_utf8_lossy(DIR));
        let shown = b.display(path.as_bytes());
        let missing = |reason: &str| imager_core::Error::Signature {
            file: shown.clone(),
            reason: reason.into(),
        };
        if rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
            return Err(missing("must be a path below /etc/syncer"));
        }
        let (parent, name) = b.parent(path.as_bytes())?;
        let name = String::from_utf8_lossy(name).into_owned();
        if let Some(parent_path) = imager_core::tree::parent(path.as_bytes()) {
            let parent_shown = b.display(parent_path);
            check_dir(&parent, &parent_shown).map_err(|r| imager_core::Error::Signature {
                file: parent_shown.clone(),
                reason: r,
            })?;
        }
        let data = read_strict(&parent, &name, &shown)
            .map_err(|r| missing(&r))?
            .ok_or_else(|| missing("does not exist (the trust policy names it)"))?;
        let text = String::from_utf8(data).map_err(|_| missing("is not UTF-8"))?;
        Ok((text, shown.display().to_string()))
    };
    Ok(Some(TrustPolicy::parse(
        &text,
        &shown.display().to_string(),
        &read,
    )?))
}

/// Whether a policy file or directory with this owner and mode may decide what the host
/// accepts, as sshd's `StrictModes` judges `authorized_keys`: anyone else who can write
/// it could trust their own key, so a policy they can change is no policy. Owned by root
/// or by the agent's own user (an agent run as a service user owns its `/etc/syncer`),
/// and writable by no group or other. The reason names the fix.
fn strict_owner_mode(st: &rustix::fs::Stat, shown: &Path) -> std::result::Result<(), String> {
    let me = rustix::process::geteuid().as_raw();
    let uid = st.st_uid;
    if uid != 0 && uid != me {
        return Err(format!(
            "is owned by uid {uid}, not by root or the agent's user (uid {me}), so that user \
             could change what this host trusts; run `chown root {}`",
            shown.display()
        ));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "is writable by its group or by everyone (mode {mode:04o}), so others could \
             change what this host trusts; run `chmod go-w {}`",
            shown.display()
        ));
    }
    Ok(())
}

/// Refuses a policy directory others could write (they could swap the files in it).
fn check_dir(dir: &OwnedFd, shown: &Path) -> std::result::Result<(), String> {
    let st = rustix::fs::fstat(dir).map_err(|e| format!("cannot inspect it: {e}"))?;
    strict_owner_mode(&st, shown)
}

/// Reads a policy file (`None` if it does not exist), refusing anything but a regular
/// file with a safe owner and mode. `O_NONBLOCK` because a FIFO in its place would block
/// the agent in `open` forever (a session that never starts); the type is checked with
/// `fstat` on the opened file, so nothing can swap it between the check and the read.
fn read_strict(
    dir: &OwnedFd,
    name: &str,
    shown: &Path,
) -> std::result::Result<Option<Vec<u8>>, String> {
    let fd = match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => {
            return Err(format!(
                "is a symbolic link; the trust policy must be a regular file: replace it with the file itself ({})",
                shown.display()
            ))
        }
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("cannot inspect it: {e}"))?;
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => None,
        FileType::Fifo => Some("a FIFO"),
        FileType::Directory => Some("a directory"),
        FileType::Socket => Some("a socket"),
        FileType::CharacterDevice | FileType::BlockDevice => Some("a device"),
        _ => Some("not a regular file"),
    };
    if let Some(kind) = kind {
        return Err(format!(
            "is {kind}; a trust policy file must be a regular file: replace it with one"
        ));
    }
    strict_owner_mode(&st, shown)?;
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut v)
        .map_err(|e| format!("cannot read it: {e}"))?;
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn policy(extra: &str) -> HostTrust {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("k");
        let public = imager_trust::keys::generate(&k, "r@example.com", None).unwrap();
        let signers = format!("r@example.com {}\n", public.to_openssh().unwrap());
        let text = format!("allowed_signers = \"allowed_signers\"\n{extra}");
        let read = |_: &str| Ok((signers.clone(), "allowed_signers".to_string()));
        HostTrust::Policy(Box::new(
            TrustPolicy::parse(&text, "/etc/syncer/trust.toml", &read).unwrap(),
        ))
    }

    /// Without a policy any mirror and health command goes; with one, only those it
    /// lists, exactly; with a broken one, none.
    #[test]
    fn a_policy_limits_health_commands_and_mirrors_to_its_lists() {
        assert_eq!(HostTrust::None.mirror_refusal("http://x/"), None);
        assert!(HostTrust::None.allows_health("anything").is_ok());
        let p = policy("health = [\"true\"]\nmirrors = [\"http://cache:8080/\"]\n");
        assert_eq!(p.mirror_refusal("http://cache:8080/"), None);
        let why = p.mirror_refusal("http://169.254.169.254/").unwrap();
        assert!(
            why.contains("trust.toml does not list it in `mirrors`"),
            "{why}"
        );
        assert!(p.allows_health("true").is_ok());
        assert!(p.allows_health("true; id").is_err());
        let none = policy("");
        assert!(none.mirror_refusal("http://cache:8080/").is_some());
        assert!(none.allows_health("true").is_err());
        let broken = HostTrust::Broken("bad TOML".into());
        assert!(broken.mirror_refusal("http://cache:8080/").is_some());
        assert!(broken.allows_health("true").is_err());
    }
}
