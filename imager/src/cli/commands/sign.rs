//! The signing commands: `key generate`, `sign`, `verify`.

use crate::cli::{exit::Exit, write_json, Ctx};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use imager::attest::{self, Trust};
use imager::sign::{keys, Signers, TrustPolicy};
use imager::store::Access;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub(crate) struct KeyArgs {
    #[command(subcommand)]
    cmd: KeyCmd,
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Write a new ed25519 signing key (FILE) and its public key (FILE.pub)
    #[command(after_help = crate::cli::examples::KEY)]
    Generate(GenerateArgs),
}

#[derive(Args)]
struct GenerateArgs {
    /// Where to write the private key (FILE.pub gets the public one); neither may exist
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The key's comment: who holds it (release@example.com)
    #[arg(long, default_value = "")]
    comment: String,
    /// Encrypt the key with the passphrase in this file (its first line) [default:
    /// $IMAGER_KEY_PASSPHRASE, else unencrypted]
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

/// The passphrase: `--passphrase-file` (first line), else `$IMAGER_KEY_PASSPHRASE`.
fn passphrase(file: Option<&Path>) -> Result<Option<Vec<u8>>> {
    if let Some(f) = file {
        let text = imager::fsx::read_to_string(f)?;
        let line = text.lines().next().unwrap_or("");
        if line.is_empty() {
            bail!("{}: the passphrase file is empty", f.display());
        }
        return Ok(Some(line.as_bytes().to_vec()));
    }
    Ok(std::env::var_os("IMAGER_KEY_PASSPHRASE").map(|p| p.into_encoded_bytes()))
}

pub(crate) fn key(a: KeyArgs, out: &mut dyn Write) -> Result<Exit> {
    match a.cmd {
        KeyCmd::Generate(g) => {
            let pass = passphrase(g.passphrase_file.as_deref())?;
            let public = keys::generate(&g.out, &g.comment, pass.as_deref())?;
            let line = public.to_openssh().context("encoding the public key")?;
            let who = if g.comment.is_empty() {
                "NAME@EXAMPLE"
            } else {
                &g.comment
            };
            writeln!(
                out,
                "key {} ({})",
                g.out.display(),
                keys::fingerprint(&public)
            )?;
            writeln!(out, "public key {}", keys::public_path(&g.out).display())?;
            writeln!(out, "allowed_signers line for hosts:")?;
            writeln!(
                out,
                "{who} namespaces=\"{}\" {line}",
                imager::sign::NAMESPACE
            )?;
            Ok(Exit::Success)
        }
    }
}

#[derive(Args)]
pub(crate) struct SignArgs {
    /// The image: a name, NAME~N, an ID or a unique ID prefix (8+ hex digits)
    image: String,
    /// The private key (OpenSSH ed25519, as `imager key generate` or `ssh-keygen -t
    /// ed25519` writes it)
    #[arg(long, value_name = "FILE", required_unless_present_any = ["print_statement", "add"])]
    key: Option<PathBuf>,
    /// Print the statement to sign instead, for `ssh-keygen -Y sign -n imager-image`
    /// elsewhere
    #[arg(long, conflicts_with_all = ["key", "add", "provenance"])]
    print_statement: bool,
    /// Store a signature made elsewhere: the statement and the ssh-keygen signature
    #[arg(long, num_args = 2, value_names = ["STATEMENT", "SIG"], conflicts_with_all = ["key", "provenance", "version", "allow_rollback_until"])]
    add: Vec<PathBuf>,
    /// The name the image is approved as (default: the name it was given by, or its only
    /// name)
    #[arg(long)]
    name: Option<String>,
    /// What the signature approves it for ("approved for prod")
    #[arg(long, default_value = "")]
    note: String,
    /// The signer's release number for the name: hosts order statements that both
    /// carry one by it (never taking a lower one back) instead of by their times
    #[arg(long, value_name = "N")]
    version: Option<u64>,
    /// Approve this image replacing a newer one of its name on hosts, until then
    /// (YYYY-MM-DDTHH:MM:SSZ, YYYY-MM-DD or a duration such as 14d): a rollback approval
    #[arg(long, value_name = "TIME")]
    allow_rollback_until: Option<String>,
    /// Also sign the image's build provenance (a DSSE envelope)
    #[arg(long)]
    provenance: bool,
    /// The passphrase of an encrypted --key: the first line of this file [default:
    /// $IMAGER_KEY_PASSPHRASE]
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Print what was signed, the key's fingerprint and the signature files as JSON
    #[arg(long)]
    json: bool,
}

pub(crate) fn sign(ctx: &Ctx, a: SignArgs, out: &mut dyn Write) -> Result<Exit> {
    let now = imager::sign::now();
    let rollback_until = match &a.allow_rollback_until {
        Some(t) => {
            let until = attest::parse_until(t, now)?;
            if until <= now {
                bail!("--allow-rollback-until {t}: that is not in the future");
            }
            Some(until)
        }
        None => None,
    };
    let terms = attest::Terms {
        name: a.name.clone(),
        note: a.note.clone(),
        version: a.version,
        rollback_until,
    };
    if a.print_statement {
        let store = ctx.open(Access::Read)?;
        let s = attest::statement_for(&store, &a.image, &terms)?;
        out.write_all(s.print().as_bytes())?;
        return Ok(Exit::Success);
    }
    let r = match (&a.key, a.add.as_slice()) {
        (_, [statement, sig]) => {
            let store = ctx.open(Access::Write)?;
            attest::add_signature(&store, &a.image, statement, sig)?
        }
        (Some(k), _) => {
            let pass = passphrase(a.passphrase_file.as_deref())?;
            let key = keys::load_private(k, pass.as_deref())?;
            let store = ctx.open(Access::Write)?;
            attest::sign_image(&store, &a.image, &key, &terms, a.provenance)?
        }
        _ => bail!("say how to sign: --key FILE, --add STATEMENT SIG or --print-statement"),
    };
    if a.json {
        write_json(out, &r)?;
    } else {
        r.write_text(out)?;
    }
    Ok(Exit::Success)
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// The image: a name, NAME~N, an ID or a unique ID prefix (8+ hex digits)
    image: String,
    /// A trusted public key (FILE.pub); repeatable
    #[arg(long, value_name = "FILE.pub")]
    key: Vec<PathBuf>,
    /// Trusted signers: an allowed_signers file, or a directory of them and of .pub
    /// files; repeatable
    #[arg(long, value_name = "PATH")]
    trusted: Vec<PathBuf>,
    /// Apply a trust policy (a host's trust.toml) instead
    #[arg(long, value_name = "FILE", conflicts_with_all = ["key", "trusted"])]
    policy: Option<PathBuf>,
    /// Also check the build provenance against the store (and its DSSE signature, when
    /// keys are given)
    #[arg(long)]
    provenance: bool,
    /// Print the verdict, the valid and invalid signatures and the provenance checks as JSON
    #[arg(long)]
    json: bool,
}

/// Exits 1 when the image is not verified.
pub(crate) fn verify(ctx: &Ctx, a: VerifyArgs, out: &mut dyn Write) -> Result<Exit> {
    let trust = if let Some(p) = &a.policy {
        Trust::Policy(TrustPolicy::load(p)?)
    } else if a.key.is_empty() && a.trusted.is_empty() {
        if !a.provenance {
            bail!("say whom to trust: --key FILE.pub, --trusted PATH or --policy FILE");
        }
        Trust::Nobody
    } else {
        let mut all = Signers::default();
        for p in a.key.iter().chain(&a.trusted) {
            all.0.extend(Signers::load(p)?.0);
        }
        Trust::Signers(all)
    };
    let store = ctx.open(Access::Read)?;
    let r = attest::verify_image(&store, &a.image, &trust, a.provenance)?;
    if a.json {
        write_json(out, &r)?;
    } else {
        r.write_text(out)?;
    }
    Ok(if r.ok { Exit::Success } else { Exit::Failure })
}
