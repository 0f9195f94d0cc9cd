//! Signing keys and the signers a verifier trusts. Keys are OpenSSH ed25519 keys, the
//! files `ssh-keygen -t ed25519` writes (and `imager key generate` writes the same);
//! the trusted signers are an `allowed_signers` file, the format `ssh-keygen -Y verify`
//! reads (ssh-keygen(1), "ALLOWED SIGNERS"), or public key files.

use super::statement::civil_seconds;
use super::NAMESPACE;
use crate::error::{Error, Result};
use crate::fsx;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};
use std::path::{Path, PathBuf};

fn bad(file: &Path, reason: impl Into<String>) -> Error {
    Error::Signature {
        file: file.to_path_buf(),
        reason: reason.into(),
    }
}

/// Writes a new ed25519 key pair: `out` (the private key, mode 0600, encrypted when a
/// passphrase is given) and `out.pub`. Refuses to overwrite either.
pub fn generate(out: &Path, comment: &str, passphrase: Option<&[u8]>) -> Result<PublicKey> {
    let pub_path = public_path(out);
    for p in [out, &pub_path] {
        if fsx::symlink_metadata(p).is_ok() {
            return Err(bad(p, "already exists; a key is never overwritten"));
        }
    }
    let mut rng = ssh_key::rand_core::OsRng;
    let mut key = PrivateKey::random(&mut rng, Algorithm::Ed25519)
        .map_err(|e| bad(out, format!("cannot generate a key: {e}")))?;
    key.set_comment(comment);
    if let Some(p) = passphrase {
        key = key
            .encrypt(&mut rng, p)
            .map_err(|e| bad(out, format!("cannot encrypt the key: {e}")))?;
    }
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| bad(out, format!("cannot encode the key: {e}")))?;
    let public = key.public_key().clone();
    let pub_text = public
        .to_openssh()
        .map_err(|e| bad(&pub_path, format!("cannot encode the key: {e}")))?;
    write_new(out, text.as_bytes(), 0o600)?;
    write_new(&pub_path, format!("{pub_text}\n").as_bytes(), 0o644)?;
    Ok(public)
}

/// `KEY.pub` beside `KEY`.
pub fn public_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true).mode(mode);
    let mut f = fsx::open_with(&opts, path, "create")?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("write", path, e))
}

/// Reads a private key, decrypting it with `passphrase` when it is encrypted.
pub fn load_private(path: &Path, passphrase: Option<&[u8]>) -> Result<PrivateKey> {
    let text = fsx::read_to_string(path)?;
    let key = PrivateKey::from_openssh(text.trim())
        .map_err(|e| bad(path, format!("not an OpenSSH private key: {e}")))?;
    let key = if key.is_encrypted() {
        let p = passphrase.ok_or_else(|| {
            bad(
                path,
                "the key is encrypted: give its passphrase (--passphrase-file or $IMAGER_KEY_PASSPHRASE)",
            )
        })?;
        key.decrypt(p)
            .map_err(|_| bad(path, "wrong passphrase (the key does not decrypt)"))?
    } else {
        key
    };
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(bad(
            path,
            format!("a {} key: imager signs with ed25519 keys", key.algorithm()),
        ));
    }
    Ok(key)
}

/// The fingerprint people compare: `SHA256:…`, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// One trusted signer: a key, the principals (names) it signs as, and the limits its
/// `allowed_signers` line sets.
#[derive(Clone, Debug)]
pub struct Signer {
    /// The public key whose signatures are trusted.
    pub key: PublicKey,
    /// The names the key signs as (the line's comma-separated first field; a public key
    /// file's comment or stem): what a policy's signer globs match.
    pub principals: Vec<String>,
    /// `namespaces="…"`: the namespaces the key may sign in (empty: any).
    pub namespaces: Vec<String>,
    /// `valid-after` / `valid-before`, in seconds since the epoch.
    pub valid_after: Option<i64>,
    /// The first moment (seconds since the epoch) the key's signatures no longer count;
    /// `None`: no end.
    pub valid_before: Option<i64>,
    /// Where the line is, for messages: `FILE:LINE`.
    pub origin: String,
}

impl Signer {
    /// Why the key may not sign images at `now` (`None`: it may).
    pub fn refusal(&self, now: i64) -> Option<String> {
        if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == NAMESPACE) {
            return Some(format!(
                "{} limits the key to namespaces {:?}, not {NAMESPACE}",
                self.origin, self.namespaces
            ));
        }
        if let Some(t) = self.valid_before.filter(|t| now >= *t) {
            return Some(format!(
                "the key expired at {} ({})",
                crate::time::utc(t),
                self.origin
            ));
        }
        if let Some(t) = self.valid_after.filter(|t| now < *t) {
            return Some(format!(
                "the key is not valid before {} ({})",
                crate::time::utc(t),
                self.origin
            ));
        }
        None
    }
}

/// The signers a verifier trusts.
#[derive(Clone, Debug, Default)]
pub struct Signers(pub Vec<Signer>);

impl Signers {
    /// `--trusted PATH` and `--key FILE.pub`: an allowed_signers file, a public key file
    /// (`*.pub`: its principal is its comment, else the file's stem), or a directory of
    /// either.
    pub fn load(path: &Path) -> Result<Signers> {
        let mut out = Signers::default();
        if fsx::metadata(path)?.is_dir() {
            let mut files: Vec<PathBuf> = Vec::new();
            for e in fsx::read_dir(path)? {
                let p = e.path();
                if fsx::is_file(&p)? {
                    files.push(p);
                }
            }
            files.sort();
            for f in files {
                out.0.extend(Signers::load_file(&f)?.0);
            }
        } else {
            out = Signers::load_file(path)?;
        }
        if out.0.is_empty() {
            return Err(bad(path, "holds no key"));
        }
        Ok(out)
    }

    fn load_file(path: &Path) -> Result<Signers> {
        let text = fsx::read_to_string(path)?;
        let first = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'));
        match first {
            Some(l) if l.starts_with("ssh-") || l.starts_with("ecdsa-") => {
                let key = PublicKey::from_openssh(l)
                    .map_err(|e| bad(path, format!("not an OpenSSH public key: {e}")))?;
                let name = match key.comment() {
                    "" => path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    c => c.to_string(),
                };
                Ok(Signers(vec![Signer {
                    key,
                    principals: vec![name],
                    namespaces: Vec::new(),
                    valid_after: None,
                    valid_before: None,
                    origin: path.display().to_string(),
                }]))
            }
            _ => Signers::parse_allowed(&text, &path.display().to_string()),
        }
    }

    /// Parses an allowed_signers text: `principals [options] keytype base64 [comment]`.
    /// Times in `valid-after`/`valid-before` are read as UTC (ssh-keygen reads them as
    /// local time unless they end in `Z`: write the `Z` and both agree).
    pub fn parse_allowed(text: &str, shown: &str) -> Result<Signers> {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let origin = format!("{shown}:{}", n + 1);
            let fail = |reason: String| Error::Signature {
                file: PathBuf::from(&origin),
                reason,
            };
            out.push(parse_allowed_line(line, origin.clone()).map_err(fail)?);
        }
        Ok(Signers(out))
    }

    /// The signers holding `key`.
    pub fn with_key<'a>(
        &'a self,
        key: &'a ssh_key::public::KeyData,
    ) -> impl Iterator<Item = &'a Signer> {
        self.0.iter().filter(move |s| s.key.key_data() == key)
    }
}

/// Splits off the next field of an allowed_signers line: a run without spaces, where
/// double quotes protect spaces (options such as `namespaces="a,b"`).
fn next_field(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ' ' | '\t' if !quoted => return Some((&s[..i], &s[i..])),
            _ => {}
        }
    }
    Some((s, ""))
}

fn parse_allowed_line(line: &str, origin: String) -> std::result::Result<Signer, String> {
    let (principals, rest) = next_field(line).ok_or("an empty line")?;
    let (mut field, mut rest) = next_field(rest).ok_or("no key after the principals")?;
    let mut signer = Signer {
        key: PublicKey::from(ssh_key::public::Ed25519PublicKey([0; 32])),
        principals: principals.split(',').map(String::from).collect(),
        namespaces: Vec::new(),
        valid_after: None,
        valid_before: None,
        origin,
    };
    if !field.starts_with("ssh-") && !field.starts_with("ecdsa-") && !field.starts_with("sk-") {
        for opt in split_options(field) {
            let (k, v) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v.trim_matches('"'))),
                None => (opt, None),
            };
            match (k.to_ascii_lowercase().as_str(), v) {
                ("namespaces", Some(v)) => {
                    signer.namespaces = v.split(',').map(String::from).collect()
                }
                ("valid-after", Some(v)) => signer.valid_after = Some(ssh_time(v)?),
                ("valid-before", Some(v)) => signer.valid_before = Some(ssh_time(v)?),
                ("cert-authority", None) => {
                    return Err(
                        "cert-authority lines are not supported: list the signing keys themselves"
                            .into(),
                    )
                }
                _ => return Err(format!("unknown option {opt:?}")),
            }
        }
        (field, rest) = next_field(rest).ok_or("no key after the options")?;
    }
    let (blob, rest) = next_field(rest).ok_or(format!("no key data after {field:?}"))?;
    let text = format!("{field} {blob} {}", rest.trim());
    signer.key = PublicKey::from_openssh(text.trim())
        .map_err(|e| format!("not an OpenSSH public key: {e}"))?;
    Ok(signer)
}

/// Options are comma-separated, and commas inside quotes belong to the value.
fn split_options(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// ssh-keygen's `YYYYMMDD[HHMM[SS]][Z]`.
fn ssh_time(v: &str) -> std::result::Result<i64, String> {
    let d = v.strip_suffix('Z').unwrap_or(v);
    let ok = matches!(d.len(), 8 | 12 | 14) && d.bytes().all(|c| c.is_ascii_digit());
    let n = |r: std::ops::Range<usize>| d.get(r).and_then(|t| t.parse::<i64>().ok()).unwrap_or(0);
    let t = ok
        .then(|| civil_seconds(n(0..4), n(4..6), n(6..8), n(8..10), n(10..12), n(12..14)))
        .flatten();
    t.ok_or_else(|| format!("bad time {v:?}: use YYYYMMDD[HHMM[SS]][Z]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        let k = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519).unwrap();
        k.public_key().to_openssh().unwrap()
    }

    #[test]
    fn allowed_signers_lines_with_options_and_comments() {
        let key = key();
        let text = format!(
            "# release keys\nrelease@corp,ops@corp namespaces=\"imager-image,file\",valid-before=\"20270101Z\" {key}\n\nreviewer@corp {key} a comment\n"
        );
        let s = Signers::parse_allowed(&text, "allowed").unwrap();
        assert_eq!(s.0.len(), 2);
        assert_eq!(s.0[0].principals, ["release@corp", "ops@corp"]);
        assert_eq!(s.0[0].namespaces, ["imager-image", "file"]);
        assert_eq!(s.0[0].valid_before, civil_seconds(2027, 1, 1, 0, 0, 0));
        assert_eq!(s.0[0].origin, "allowed:2");
        assert!(s.0[0].refusal(0).is_none());
        let late = civil_seconds(2027, 6, 1, 0, 0, 0).unwrap();
        assert!(s.0[0].refusal(late).unwrap().contains("expired"));
        assert_eq!(s.0[1].principals, ["reviewer@corp"]);
    }

    #[test]
    fn bad_allowed_signers_lines_name_the_line() {
        let key = key();
        for (line, says) in [
            (format!("a@b cert-authority {key}"), "cert-authority"),
            (format!("a@b frobnicate {key}"), "unknown option"),
            (
                "a@b ssh-ed25519 AAAAnotbase64".to_string(),
                "not an OpenSSH public key",
            ),
            (format!("a@b valid-before=\"2027\" {key}"), "bad time"),
            ("a@b".to_string(), "no key"),
        ] {
            let e = Signers::parse_allowed(&format!("\n{line}\n"), "f").unwrap_err();
            let e = e.to_string();
            assert!(e.contains("f:2") && e.contains(says), "{e} (wanted {says})");
        }
    }
}
