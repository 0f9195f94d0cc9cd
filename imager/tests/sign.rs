//! `imager key generate`, `sign` and `verify` on a stored image, checked against OpenSSH's
//! own `ssh-keygen -Y verify` and `-Y sign`, and every kind of bad input: malformed and
//! foreign signatures, wrong namespaces, unknown and expired keys, encrypted keys, trust
//! policies with several requirements. (Provenance needs a real build: `build.rs`.)
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;

use common::{s, sample_tree, sh, Env};
use std::path::{Path, PathBuf};

/// A store with the sample tree as image `demo`; returns its ID.
fn demo(env: &Env) -> String {
    let src = env.path("src");
    sample_tree(&src);
    env.id(&["import", s(&src), "--name", "demo"])
}

fn key(env: &Env, name: &str) -> PathBuf {
    let k = env.path(name);
    let out = env.ok(&[
        "key",
        "generate",
        "--out",
        s(&k),
        "--comment",
        &format!("{name}@example.com"),
    ]);
    assert!(
        out.contains("SHA256:") && out.contains("namespaces=\"imager-image\""),
        "{out}"
    );
    k
}

/// `PRINCIPAL [OPTIONS] KEY` as an allowed_signers line.
fn allowed(principal: &str, key: &Path, options: &str) -> String {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    let public = std::fs::read_to_string(PathBuf::from(p)).unwrap();
    format!("{principal} {options}{}\n", public.trim())
}

fn sigs(env: &Env, id: &str) -> Vec<PathBuf> {
    let d = env.store().join("images").join(id).join("signatures");
    let mut v: Vec<PathBuf> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sig"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_signature_verifies_with_imager_and_with_ssh_keygen() {
    let env = Env::new();
    let id = demo(&env);
    let release = key(&env, "release");
    let out = env.ok(&[
        "sign",
        "demo",
        "--key",
        s(&release),
        "--note",
        "approved for prod",
    ]);
    assert!(
        out.contains(&format!("signed image {id} as \"demo\"")),
        "{out}"
    );
    let out = env.ok(&["verify", "demo", "--key", &format!("{}.pub", s(&release))]);
    assert!(
        out.contains("good signature by release@example.com")
            && out.contains("note \"approved for prod\"")
            && out.ends_with("verified\n"),
        "{out}"
    );

    // The same files, checked by OpenSSH alone.
    let sig = &sigs(&env, &id)[0];
    let msg = sig.with_extension("msg");
    std::fs::write(
        env.path("allowed"),
        allowed(
            "release@example.com",
            &release,
            "namespaces=\"imager-image\" ",
        ),
    )
    .unwrap();
    let out = sh(
        &format!(
            "ssh-keygen -Y verify -f allowed -I release@example.com -n imager-image -s '{}' < '{}'",
            s(sig),
            s(&msg)
        ),
        env.dir.path(),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Good \"imager-image\" signature"));
    let statement = std::fs::read_to_string(&msg).unwrap();
    assert!(
        statement.starts_with(&format!(
            "imager-image-signature 1\nimage {id}\nname demo\nnote approved for prod\ntime "
        )),
        "{statement}"
    );
    // In another namespace, OpenSSH refuses it too.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ssh-keygen -Y verify -f allowed -I release@example.com -n file -s '{}' < '{}'",
            s(sig),
            s(&msg)
        ))
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());

    // A reviewer signs with ssh-keygen on their own machine, from a key ssh-keygen made.
    sh(
        "ssh-keygen -q -t ed25519 -N '' -C reviewer@example.com -f reviewer",
        env.dir.path(),
    );
    let st = env.ok(&["sign", "demo", "--print-statement", "--note", "reviewed"]);
    std::fs::write(env.path("review.msg"), &st).unwrap();
    sh(
        "ssh-keygen -q -Y sign -f reviewer -n imager-image review.msg",
        env.dir.path(),
    );
    let out = env.ok(&[
        "sign",
        "demo",
        "--add",
        s(&env.path("review.msg")),
        s(&env.path("review.msg.sig")),
    ]);
    assert!(out.contains("signed image"), "{out}");
    assert_eq!(sigs(&env, &id).len(), 2);
    // Trusted: a directory of public keys (a .pub's principal is its comment).
    let keys = env.path("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(format!("{}.pub", s(&release)), keys.join("release.pub")).unwrap();
    std::fs::copy(env.path("reviewer.pub"), keys.join("reviewer.pub")).unwrap();
    let out = env.ok(&["verify", "demo", "--trusted", s(&keys), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let who: Vec<&str> = v["valid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["principals"][0].as_str().unwrap())
        .collect();
    assert!(
        who.contains(&"release@example.com") && who.contains(&"reviewer@example.com"),
        "{v:#}"
    );
    assert_eq!(v["ok"], true);

    // A trust policy with two requirements, each met by its own key.
    std::fs::write(
        env.path("allowed2"),
        allowed("release@example.com", &release, "")
            + &allowed("review-bob@example.com", &env.path("reviewer"), ""),
    )
    .unwrap();
    let policy = env.path("trust.toml");
    std::fs::write(&policy, "allowed_signers = \"allowed2\"\n[[require]]\nsigners = [\"release@*\"]\n[[require]]\nsigners = [\"review-*\"]\nnote = \"reviewed\"\n").unwrap();
    let out = env.ok(&["verify", "demo", "--policy", s(&policy)]);
    assert!(
        out.contains("met by review-bob@example.com") && out.contains("met by release@example.com"),
        "{out}"
    );
    // The same key for both roles does not make two people.
    std::fs::write(
        env.path("allowed2"),
        allowed("release@example.com,review-eve@example.com", &release, ""),
    )
    .unwrap();
    let e = env.run(&["verify", "demo", "--policy", s(&policy)]);
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stdout).contains("policy not met"));
}

#[test]
fn bad_signatures_keys_and_policies_are_refused_naming_the_file() {
    let env = Env::new();
    let id = demo(&env);
    let release = key(&env, "release");
    let pubkey = format!("{}.pub", s(&release));
    env.ok(&["sign", "demo", "--key", s(&release)]);

    // Signing the provenance of an image that has none fails, and stores nothing.
    let e = env.fails(&["sign", "demo", "--key", s(&release), "--provenance"]);
    assert!(e.contains("has no provenance"), "{e}");
    assert_eq!(sigs(&env, &id).len(), 1);

    // Nobody to trust.
    let e = env.fails(&["verify", "demo"]);
    assert!(e.contains("say whom to trust"), "{e}");
    // A key that did not sign it.
    let other = key(&env, "other");
    let out = env.run(&["verify", "demo", "--key", &format!("{}.pub", s(&other))]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("a key that is not trusted") && text.contains("NOT verified"),
        "{text}"
    );
    // An expired key.
    std::fs::write(
        env.path("expired"),
        allowed(
            "release@example.com",
            &release,
            "valid-before=\"20200101Z\" ",
        ),
    )
    .unwrap();
    let out = env.run(&["verify", "demo", "--trusted", s(&env.path("expired"))]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && text.contains("the key expired at 2020-01-01T00:00:00Z"),
        "{text}"
    );
    // A key limited to another namespace.
    std::fs::write(
        env.path("ns"),
        allowed("release@example.com", &release, "namespaces=\"git\" "),
    )
    .unwrap();
    let out = env.run(&["verify", "demo", "--trusted", s(&env.path("ns"))]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("limits the key to namespaces [\"git\"]"));
    // A malformed allowed_signers file: the file and line.
    std::fs::write(
        env.path("broken"),
        "# ok\nrelease@example.com ssh-ed25519 AAAAnot-base64\n",
    )
    .unwrap();
    let e = env.fails(&["verify", "demo", "--trusted", s(&env.path("broken"))]);
    assert!(
        e.contains(&format!("{}:2", s(&env.path("broken"))))
            && e.contains("not an OpenSSH public key"),
        "{e}"
    );

    // A stored statement edited after signing.
    let sig = sigs(&env, &id)[0].clone();
    let msg = sig.with_extension("msg");
    let good = std::fs::read_to_string(&msg).unwrap();
    std::fs::write(&msg, good.replace("note ", "note approved for prod")).unwrap();
    let out = env.run(&["verify", "demo", "--key", &pubkey]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success()
            && text.contains("does not match its statement")
            && text.contains(s(&sig)),
        "{text}"
    );
    std::fs::write(&msg, &good).unwrap();
    // A stored signature file that is not one.
    let pem = std::fs::read(&sig).unwrap();
    std::fs::write(
        &sig,
        b"-----BEGIN SSH SIGNATURE-----\ngarbage\n-----END SSH SIGNATURE-----\n",
    )
    .unwrap();
    let out = env.run(&["verify", "demo", "--key", &pubkey]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && text.contains(&format!("{}: not an SSH signature", s(&sig))),
        "{text}"
    );
    let out = env.run(&["fsck"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success()
            && text.contains(&format!("image {id}: {}: not an SSH signature", s(&sig))),
        "{text}"
    );
    std::fs::write(&sig, &pem).unwrap();
    env.ok(&["verify", "demo", "--key", &pubkey]);

    // Signatures brought from elsewhere: another namespace, another image, not a signature.
    let st = env.ok(&["sign", "demo", "--print-statement"]);
    std::fs::write(env.path("s.msg"), &st).unwrap();
    let (msg, sig_file) = (env.path("s.msg"), env.path("s.msg.sig"));
    let ssh_sign = |namespace: &str| {
        let _ = std::fs::remove_file(&sig_file);
        let cmd = format!(
            "ssh-keygen -q -Y sign -f '{}' -n {namespace} s.msg",
            s(&release)
        );
        sh(&cmd, env.dir.path());
    };
    let add = |image: &str| env.fails(&["sign", image, "--add", s(&msg), s(&sig_file)]);
    ssh_sign("file");
    let e = add("demo");
    assert!(
        e.contains("signed in namespace \"file\", not \"imager-image\""),
        "{e}"
    );
    let src2 = env.path("src2");
    std::fs::create_dir(&src2).unwrap();
    std::fs::write(src2.join("f"), "other").unwrap();
    let other_id = env.id(&["import", s(&src2), "--name", "other"]);
    ssh_sign("imager-image");
    let e = add("other");
    assert!(
        e.contains(&format!("the statement is for image {id}, not {other_id}"))
            && e.contains("not added"),
        "{e}"
    );
    let e = env.fails(&[
        "sign",
        "demo",
        "--add",
        s(&env.path("s.msg")),
        s(&env.path("s.msg")),
    ]);
    assert!(
        e.contains(&format!("{}: not an SSH signature", s(&env.path("s.msg")))),
        "{e}"
    );

    // Keys: an encrypted one needs its passphrase; a key is never overwritten.
    std::fs::write(env.path("pass"), "correct horse\n").unwrap();
    let enc = env.path("enc");
    env.ok(&[
        "key",
        "generate",
        "--out",
        s(&enc),
        "--passphrase-file",
        s(&env.path("pass")),
    ]);
    let e = env.fails(&["sign", "demo", "--key", s(&enc)]);
    assert!(
        e.contains(s(&enc)) && e.contains("the key is encrypted"),
        "{e}"
    );
    std::fs::write(env.path("wrong"), "battery staple\n").unwrap();
    let e = env.fails(&[
        "sign",
        "demo",
        "--key",
        s(&enc),
        "--passphrase-file",
        s(&env.path("wrong")),
    ]);
    assert!(e.contains("wrong passphrase"), "{e}");
    env.ok(&[
        "sign",
        "demo",
        "--key",
        s(&enc),
        "--passphrase-file",
        s(&env.path("pass")),
    ]);
    let e = env.fails(&["key", "generate", "--out", s(&enc)]);
    assert!(e.contains("already exists"), "{e}");
    let e = env.fails(&["sign", "demo", "--key", &pubkey]);
    assert!(
        e.contains(&pubkey) && e.contains("not an OpenSSH private key"),
        "{e}"
    );
    // A malformed policy.
    std::fs::write(env.path("p.toml"), "allowed_signers = \"missing\"\n").unwrap();
    let e = env.fails(&["verify", "demo", "--policy", s(&env.path("p.toml"))]);
    assert!(e.contains("missing"), "{e}");
    std::fs::write(env.path("p.toml"), "allowed_signer = \"x\"\n").unwrap();
    let e = env.fails(&["verify", "demo", "--policy", s(&env.path("p.toml"))]);
    assert!(
        e.contains(s(&env.path("p.toml"))) && e.contains("unknown field"),
        "{e}"
    );
    // fsck still passes with signatures stored.
    env.ok(&["fsck"]);
}

/// `--version` and `--allow-rollback-until` become the statement's optional lines (read
/// by hosts' anti-rollback), `imager verify` shows them, and an approval that would
/// already have expired is refused; a policy's `max_age` is applied by `verify --policy`.
#[test]
fn a_statement_carries_the_version_and_rollback_approval_asked_for() {
    let env = Env::new();
    demo(&env);
    let release = key(&env, "release");
    let st = env.ok(&[
        "sign",
        "demo",
        "--print-statement",
        "--version",
        "3",
        "--allow-rollback-until",
        "2099-01-02",
    ]);
    assert!(
        st.ends_with("\nversion 3\nrollback-until 2099-01-02T00:00:00Z\n"),
        "{st}"
    );
    let until = |t: &str| {
        env.fails(&[
            "sign",
            "demo",
            "--key",
            s(&release),
            "--allow-rollback-until",
            t,
        ])
    };
    let e = until("2020-01-01T00:00:00Z");
    assert!(e.contains("not in the future"), "{e}");
    let e = until("soon");
    assert!(e.contains("bad time \"soon\""), "{e}");
    env.ok(&[
        "sign",
        "demo",
        "--key",
        s(&release),
        "--version",
        "3",
        "--allow-rollback-until",
        "14d",
    ]);
    let out = env.ok(&["verify", "demo", "--key", &format!("{}.pub", s(&release))]);
    assert!(
        out.contains(", version 3, approves rolling back to it until "),
        "{out}"
    );
    std::fs::write(
        env.path("allowed"),
        allowed("release@example.com", &release, ""),
    )
    .unwrap();
    let policy = env.path("trust.toml");
    std::fs::write(&policy, "allowed_signers = \"allowed\"\nmax_age = \"1w\"\n").unwrap();
    env.ok(&["verify", "demo", "--policy", s(&policy)]);
    std::fs::write(
        &policy,
        "allowed_signers = \"allowed\"\nmax_age = \"soon\"\n",
    )
    .unwrap();
    let e = env.run(&["verify", "demo", "--policy", s(&policy)]);
    assert!(!e.status.success());
    let text = String::from_utf8_lossy(&e.stderr);
    assert!(text.contains("max_age: bad duration \"soon\""), "{text}");
}

/// A statement (`.msg`) stored without its signature (`.sig`), as an interrupted `sign`
/// leaves it, or a signature without its statement: `signatures()` skips both, so fsck
/// is what says they are there, naming the file and what to do.
#[test]
fn fsck_reports_a_statement_or_signature_stored_without_its_pair() {
    let env = Env::new();
    let id = demo(&env);
    let release = key(&env, "release");
    env.ok(&["sign", "demo", "--key", s(&release)]);
    env.ok(&["fsck"]);
    let sig = sigs(&env, &id).remove(0);
    let msg = sig.with_extension("msg");

    let saved = std::fs::read(&sig).unwrap();
    std::fs::remove_file(&sig).unwrap();
    let out = env.run(&["fsck"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success()
            && text.contains(&format!(
                "image {id}: {}: a signature statement without its signature",
                s(&msg)
            ))
            && text.contains("remove it")
            && text.contains("1 problems"),
        "{text}"
    );
    std::fs::write(&sig, &saved).unwrap();
    env.ok(&["fsck"]);

    std::fs::remove_file(&msg).unwrap();
    let out = env.run(&["fsck"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success()
            && text.contains(&format!(
                "image {id}: {}: a signature without its statement",
                s(&sig)
            )),
        "{text}"
    );
}
