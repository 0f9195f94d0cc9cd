//! Signed images through push, rollback and rollout: a host with a trust policy
//! (`/etc/syncer/trust.toml`) takes only images signed as it demands, checked by its
//! agent before anything is written; the controller's `require_signed` fails before the
//! first host. Keys are real ed25519 SSH keys; one host is reached through a real sshd.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;

use common::*;
use imager::attest;
use imager::sign::keys;
use imager::store::{Access, Store};
use imager::Hash;
use std::path::{Path, PathBuf};

/// A key pair in `dir` named `name` (the private key; `.pub` beside it).
fn key(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    keys::generate(&p, &format!("{name}@example.com"), None).unwrap();
    p
}

fn sign(store: &Path, image: &str, key: &Path, note: &str) {
    let s = Store::open(store, Access::Write).unwrap();
    let k = keys::load_private(key, None).unwrap();
    let terms = attest::Terms {
        note: note.into(),
        ..Default::default()
    };
    attest::sign_image(&s, image, &k, &terms, false).unwrap();
}

/// Signs `image` as "app" with a statement of the test's choosing: its time (a
/// backdated signature stands for one made long ago, so no test sleeps), `version` and
/// `rollback-until`.
fn sign_at(
    store: &Path,
    image: &Hash,
    key: &Path,
    time: i64,
    version: Option<u64>,
    rollback_until: Option<i64>,
) {
    let s = Store::open(store, Access::Write).unwrap();
    let k = keys::load_private(key, None).unwrap();
    let statement = imager::sign::Statement {
        image: *image,
        name: "app".into(),
        note: String::new(),
        time,
        version,
        rollback_until,
    };
    s.add_signature(image, &imager::sign::sign(&k, &statement).unwrap())
        .unwrap();
}

const DAY: i64 = 86400;

/// A `local:` host at `dir/host` whose policy trusts `release` (with `policy`'s lines).
fn host_with_policy(dir: &Path, policy: &str, release: &Path) -> (PathBuf, String) {
    let root = dir.join("host");
    std::fs::create_dir(&root).unwrap();
    install_policy(
        &root,
        policy,
        &[allowed("release@example.com", release, "")],
    );
    let host = format!("local:{}", root.display());
    (root, host)
}

fn utc(t: i64) -> String {
    imager::sign::statement::format_utc(t)
}

/// An allowed_signers line for `key` as `principal`.
fn allowed(principal: &str, key: &Path, options: &str) -> String {
    let public = std::fs::read_to_string(keys::public_path(key)).unwrap();
    format!("{principal} {options}{}", public.trim())
}

/// Installs a trust policy on a host root.
fn install_policy(root: &Path, policy: &str, signers: &[String]) {
    let d = root.join("etc/syncer");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("allowed_signers"), signers.join("\n") + "\n").unwrap();
    std::fs::write(
        d.join("trust.toml"),
        format!("allowed_signers = \"allowed_signers\"\n{policy}"),
    )
    .unwrap();
}

/// A small image tree, version `v`.
fn tree(dir: &Path, v: u32) {
    sh(&format!(
        "set -e; mkdir -p '{d}/etc' '{d}/usr/bin' '{d}/srv' '{d}/var/lib'; printf 'v{v}\\n' > '{d}/etc/app.conf'
         cp /bin/true '{d}/usr/bin/tool'; head -c {n} /dev/urandom > '{d}/srv/data'",
        d = dir.display(),
        n = 1000 * v
    ));
}

/// Every path below `root` with its content hash or link target: what "nothing was
/// written" is checked against.
fn snapshot(root: &Path) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let md = e.path().symlink_metadata().unwrap();
            let what = if md.is_file() {
                file_hash(e.path()).to_string()
            } else {
                format!(
                    "{:o}",
                    std::os::unix::fs::PermissionsExt::mode(&md.permissions())
                )
            };
            format!("{} {what}", e.path().display())
        })
        .collect()
}

/// A push that must fail: its error (the host's report or the command's stderr).
fn refused(store: &Path, image: &str, host: &str, extra: &[&str]) -> String {
    let mut args = vec!["push", image, host, "--json"];
    args.extend_from_slice(extra);
    let out = run(store, &args);
    assert!(!out.status.success(), "push {image} to {host} was accepted");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err = serde_json::from_str::<serde_json::Value>(&stdout)
        .ok()
        .and_then(|v| v["hosts"][0]["error"].as_str().map(String::from));
    err.unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_host_with_a_policy_commits_only_images_signed_as_it_demands() {
    let t = scratch("trust-host-");
    let dir = t.path();
    let store = dir.join("store");
    for v in 1..=3 {
        tree(&dir.join(format!("t{v}")), v);
    }
    let a = import(&store, &dir.join("t1"), "app");
    let release = key(dir, "release");
    let rogue = key(dir, "rogue");
    let reviewer = key(dir, "reviewer");

    // A host synced to an unsigned image before it had a policy.
    let root = dir.join("host");
    std::fs::create_dir(&root).unwrap();
    push(&store, "app", &format!("local:{}", root.display()), &[]);
    let host = format!("local:{}", root.display());
    let st = ok(&store, &["status", &host]);
    assert!(st.contains("trust policy: none"), "{st}");

    install_policy(&root, "", &[allowed("release@example.com", &release, "")]);
    let st = ok(&store, &["status", &host]);
    assert!(
        st.contains("trust policy: 1 requirement, 1 trusted key; policy "),
        "{st}"
    );

    // Unsigned: refused before anything is written.
    let b = import(&store, &dir.join("t2"), "app");
    let before = snapshot(&root);
    let e = refused(&store, "app", &host, &[]);
    assert!(
        e.contains(&format!("image {b} is not signed as"))
            && e.contains("etc/syncer/trust.toml requires")
            && e.contains("it has no signature"),
        "{e}"
    );
    assert_eq!(snapshot(&root), before, "a refused push wrote on the host");

    // Signed by a key the host does not trust: refused, and says by whom.
    sign(&store, "app", &rogue, "");
    let e = refused(&store, "app", &host, &[]);
    assert!(
        e.contains("a key that is not trusted") && e.contains("SHA256:"),
        "{e}"
    );
    assert_eq!(snapshot(&root), before);

    // Signed by the release key: committed.
    sign(&store, "app", &release, "approved for prod");
    let r = push(&store, "app", &host, &[]);
    assert_eq!(r["image_after"], b.to_hex());
    assert_host_is(&root, &store, &b);

    // Back to the unsigned image it had: refused, with what is missing.
    let inv = dir.join("fleet.toml");
    std::fs::write(
        &inv,
        format!("[policy]\npause = \"none\"\n[[colo]]\nname = \"one\"\nhosts = [\"{host}\"]\n"),
    )
    .unwrap();
    let out = run(
        &store,
        &["rollback", "--inventory", inv.to_str().unwrap(), "--json"],
    );
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("refusing the push: image {a} is not signed as")),
        "{text}"
    );
    assert_host_is(&root, &store, &b);

    // Two requirements: a release signature and, by another key, a reviewer's.
    install_policy(
        &root,
        "[[require]]\nsigners = [\"release@*\"]\n[[require]]\nsigners = [\"review-*\"]\nnote = \"approved for prod\"\n",
        &[
            allowed("release@example.com", &release, ""),
            allowed("review-ann@example.com", &reviewer, ""),
        ],
    );
    let c = import(&store, &dir.join("t3"), "app");
    sign(&store, "app", &release, "approved for prod");
    let e = refused(&store, "app", &host, &[]);
    assert!(
        e.contains("a signature by review-* with the note \"approved for prod\"")
            && e.contains("a valid signature by release@example.com"),
        "{e}"
    );
    sign(&store, "app", &reviewer, "just looking");
    let e = refused(&store, "app", &host, &[]);
    assert!(e.contains("note \"just looking\""), "{e}");
    sign(&store, "app", &reviewer, "approved for prod");
    push(&store, "app", &host, &[]);
    assert_host_is(&root, &store, &c);

    // A policy that cannot be read refuses everything, and status says so.
    std::fs::write(root.join("etc/syncer/trust.toml"), "allowed_signers = 7\n").unwrap();
    let st = ok(&store, &["status", &host]);
    assert!(
        st.contains("trust policy: unusable, every image is refused"),
        "{st}"
    );
    let e = refused(&store, "app~1", &host, &[]);
    assert!(
        e.contains("trust policy cannot be used") && e.contains("trust.toml"),
        "{e}"
    );
    assert_host_is(&root, &store, &c);
}

#[test]
fn no_push_changes_the_hosts_policy_whatever_the_image_and_its_local_state_list() {
    let t = scratch("trust-own-");
    let dir = t.path();
    let store = dir.join("store");
    let src = dir.join("t");
    tree(&src, 1);
    // The image brings a policy of its own that trusts anyone, and a local-state list
    // that does not protect /etc/syncer.
    std::fs::create_dir_all(src.join("etc/syncer")).unwrap();
    std::fs::write(
        src.join("etc/syncer/trust.toml"),
        "# trusts nobody's rules\n",
    )
    .unwrap();
    std::fs::create_dir_all(src.join("usr/lib/imager")).unwrap();
    std::fs::write(src.join("usr/lib/imager/local-state.txt"), "/var/log/**\n").unwrap();
    import_leaving_out(&store, &src, "app", &[]);
    let release = key(dir, "release");
    sign(&store, "app", &release, "");
    let root = dir.join("host");
    std::fs::create_dir(&root).unwrap();
    install_policy(&root, "", &[allowed("release@example.com", &release, "")]);
    let before = snapshot(&root.join("etc/syncer"));
    push(&store, "app", &format!("local:{}", root.display()), &[]);
    assert_eq!(snapshot(&root.join("etc/syncer")), before);
    assert!(root.join("etc/app.conf").exists());
}

#[test]
fn an_agent_refuses_a_manifest_that_is_not_the_signed_image() {
    use syncer::protocol::*;
    let t = scratch("trust-forged-");
    let dir = t.path();
    let store = dir.join("store");
    tree(&dir.join("t1"), 1);
    tree(&dir.join("t2"), 2);
    let signed = import(&store, &dir.join("t1"), "good");
    let other = import(&store, &dir.join("t2"), "evil");
    let release = key(dir, "release");
    sign(&store, "good", &release, "");
    let root = dir.join("host");
    std::fs::create_dir(&root).unwrap();
    install_policy(&root, "", &[allowed("release@example.com", &release, "")]);
    let s = Store::open(&store, Access::Read).unwrap();
    let sigs: Vec<ImageSignature> = s
        .signatures(&signed)
        .unwrap()
        .into_iter()
        .map(|x| ImageSignature {
            statement: x.statement,
            signature: x.signature,
        })
        .collect();
    let evil_text = s.image_text(&other).unwrap();
    let good_text = s.image_text(&signed).unwrap();
    // A controller's session: the image it claims, the manifest it sends, the
    // local-state file and triggers beside it, and the signed image's signatures.
    let session = |image, text: &str, local_state: Option<&[u8]>, triggers: &[u8]| {
        [
            frame(&Msg::Hello(Hello {
                version: PROTOCOL_VERSION,
            })),
            frame(&Msg::Target(Target {
                image,
                manifest: ManifestData::Zstd(zstd::bulk::compress(text.as_bytes(), 3).unwrap()),
                local_state: local_state.map(|l| l.to_vec()),
                triggers: triggers.to_vec(),
                verify: false,
                dry_run: false,
                previous: Previous::Keep,
                signatures: sigs.clone(),
                owned: None,
                install_triggers: false,
            })),
        ]
        .concat()
    };
    let before = snapshot(&root);
    let other_image = format!("the statement is for image {signed}, not {other}");
    let cases = [
        // The signed image's ID with another manifest.
        (
            session(signed, &evil_text, None, b""),
            "does not hash to image",
        ),
        // The signatures of one image presented for another.
        (session(other, &evil_text, None, b""), other_image.as_str()),
        // The signed image with triggers of the controller's own (run as root after
        // the commit) or a local-state list that would keep the host's old /usr.
        (
            session(
                signed,
                &good_text,
                None,
                b"[[trigger]]\nname = \"x\"\nrun = \"id\"\n",
            ),
            "the /usr/lib/imager/triggers.toml sent is not the image's (the image has none)",
        ),
        (
            session(signed, &good_text, Some(b"/usr/**\n"), b""),
            "the /usr/lib/imager/local-state.txt sent is not the image's",
        ),
    ];
    for (input, want) in &cases {
        let (ok, _, stderr) = agent_with(&root, input);
        assert!(!ok, "the agent took it ({want})");
        assert!(stderr.contains(want), "wanted {want:?}: {stderr}");
        assert_eq!(snapshot(&root), before);
    }
    // A host with a state directory scans while the manifest is parsed and the side
    // files checked: the same refusals, and still nothing written.
    std::fs::create_dir_all(root.join("var/lib/syncer")).unwrap();
    let before = snapshot(&root);
    for (input, want) in &cases[2..] {
        let (ok, _, stderr) = agent_with(&root, input);
        assert!(!ok, "the agent took it ({want})");
        assert!(stderr.contains(want), "wanted {want:?}: {stderr}");
        assert_eq!(snapshot(&root), before);
    }
    // More signatures than an agent checks: refused before any is verified.
    let many: Vec<_> = std::iter::repeat_n(sigs[0].clone(), 257).collect();
    let input = [
        frame(&Msg::Hello(Hello {
            version: PROTOCOL_VERSION,
        })),
        frame(&Msg::Target(Target {
            image: signed,
            manifest: ManifestData::Zstd(zstd::bulk::compress(good_text.as_bytes(), 3).unwrap()),
            local_state: None,
            triggers: Vec::new(),
            verify: false,
            dry_run: false,
            previous: Previous::Keep,
            signatures: many,
            owned: None,
            install_triggers: false,
        })),
    ]
    .concat();
    let (ok, _, stderr) = agent_with(&root, &input);
    assert!(!ok);
    assert!(
        stderr.contains("comes with 257 signatures, more than the 256"),
        "{stderr}"
    );
    assert_eq!(snapshot(&root), before);
    // What the image really holds passes the checks (the session then ends before a
    // commit: the agent has made its state directory, nothing else).
    let (ok, _, stderr) = agent_with(&root, &session(signed, &good_text, None, b""));
    assert!(ok, "{stderr}");
    let before = snapshot(&root);

    // In the controller's own store: the manifest file edited, the ID kept.
    let manifest = store.join("images").join(signed.to_hex()).join("manifest");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str(&evil_text.lines().last().unwrap().replace("data", "datb"));
    text.push('\n');
    std::fs::write(&manifest, text).unwrap();
    let e = refused(&store, "good", &format!("local:{}", root.display()), &[]);
    assert!(e.contains("corrupt"), "{e}");
    assert_eq!(snapshot(&root), before);
}

#[test]
fn a_rollout_that_requires_signatures_fails_before_its_first_host() {
    let t = scratch("trust-rollout-");
    let dir = t.path();
    let store = dir.join("store");
    tree(&dir.join("t1"), 1);
    import(&store, &dir.join("t1"), "app");
    let release = key(dir, "release");
    std::fs::write(
        dir.join("allowed_signers"),
        allowed(
            "release@example.com",
            &release,
            "namespaces=\"imager-image\" ",
        ) + "\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("release-trust.toml"),
        "allowed_signers = \"allowed_signers\"\n",
    )
    .unwrap();
    // Two local hosts and one over ssh, each with the same policy.
    let sshd = Sshd::start(dir);
    let mut hosts = Vec::new();
    let mut roots = Vec::new();
    for i in 0..3 {
        let root = dir.join(format!("h{i}"));
        std::fs::create_dir(&root).unwrap();
        install_policy(&root, "", &[allowed("release@example.com", &release, "")]);
        hosts.push(if i == 2 {
            format!("ssh://root@127.0.0.1:{}{}", sshd.port, root.display())
        } else {
            format!("local:{}", root.display())
        });
        roots.push(root);
    }
    let list: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    let inv = dir.join("fleet.toml");
    std::fs::write(
        &inv,
        format!(
            "[policy]\npause = \"none\"\ncanary = 1\nrequire_signed = \"release-trust.toml\"\n\
             [[colo]]\nname = \"one\"\nhosts = [{}]\n",
            list.join(", ")
        ),
    )
    .unwrap();
    let rsh = sshd.rsh();
    let conn = ["-e", rsh.as_str(), "--agent", env!("CARGO_BIN_EXE_syncer")];
    let mut args = vec![
        "rollout",
        "app",
        "--inventory",
        inv.to_str().unwrap(),
        "--yes",
        "--json",
    ];
    args.extend(conn);
    let before: Vec<_> = roots.iter().map(|r| snapshot(r)).collect();
    let out = run(&store, &args);
    assert!(!out.status.success(), "an unsigned image was rolled out");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("colo one: not rolled out: image")
            && stderr.contains("release-trust.toml requires"),
        "{stderr}"
    );
    let after: Vec<_> = roots.iter().map(|r| snapshot(r)).collect();
    assert_eq!(after, before, "a host was touched");

    // Signed: every host takes it, the ssh one included (the signatures travel in the
    // session), and the report says each host's policy.
    sign(&store, "app", &release, "");
    let out = ok(&store, &args);
    let report = json(&out);
    let id = id(&store, "app");
    for r in &roots {
        assert_host_is(r, &store, &id);
    }
    let trusts: Vec<_> = report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["trust"].as_str().unwrap_or("none").to_string())
        .collect();
    assert!(
        trusts
            .iter()
            .all(|t| t.starts_with("1 requirement, 1 trusted key")),
        "{report:#}"
    );

    // A health check is a root command of the controller's choosing: a host with a
    // policy runs only those its `health` list holds. The canary's policy lists none, so
    // its check fails with the reason, it is rolled back, and the rollout stops there.
    // (A root with a shell: a `local:` host's check runs chrooted into it.)
    mini_root(&dir.join("t2"), 2, 5000);
    import(&store, &dir.join("t2"), "app");
    sign(&store, "app", &release, "");
    let check = "test -f /etc/app.conf";
    let policy = format!("health = [\"{check}\"]\n");
    for r in &roots[1..] {
        install_policy(r, &policy, &[allowed("release@example.com", &release, "")]);
    }
    let text = std::fs::read_to_string(&inv).unwrap();
    std::fs::write(
        &inv,
        text.replace(
            "[[colo]]",
            &format!("[policy.health]\ncommand = \"{check}\"\ntimeout = 10\nretries = 1\n[[colo]]"),
        ),
    )
    .unwrap();
    let out = run(&store, &args);
    assert!(
        !out.status.success(),
        "a health check the canary refuses passed"
    );
    let report = json(&String::from_utf8_lossy(&out.stdout));
    let canary = report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == hosts[0].as_str())
        .unwrap();
    let error = canary["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("refusing the health command \"{check}\""))
            && error.contains("does not list it in `health`"),
        "{report:#}"
    );
    assert_host_is(&roots[0], &store, &id);
    // Listed on the canary too: the check runs everywhere and the image lands.
    install_policy(
        &roots[0],
        &policy,
        &[allowed("release@example.com", &release, "")],
    );
    ok(&store, &args);
    let v2 = self::id(&store, "app");
    for r in &roots {
        assert_host_is(r, &store, &v2);
    }

    // An image with an empty triggers file (no triggers) is the image's own file too.
    // A Fetch makes the host send HTTP requests where the controller says: a host whose
    // policy lists no mirror asks none, and takes the content from the controller.
    mini_root(&dir.join("t3"), 3, 5000);
    std::fs::create_dir_all(dir.join("t3/usr/lib/imager")).unwrap();
    std::fs::write(dir.join("t3/usr/lib/imager/triggers.toml"), "").unwrap();
    import(&store, &dir.join("t3"), "app");
    sign(&store, "app", &release, "");
    let h = push(
        &store,
        "app",
        &hosts[0],
        &["--mirror", "http://169.254.169.254/latest/"],
    );
    let m = &h["content"]["mirrors"][0];
    assert_eq!(m["requests"], 0, "{h:#}");
    assert!(
        m["last_error"]
            .as_str()
            .unwrap()
            .contains("trust.toml does not list it in `mirrors`"),
        "{h:#}"
    );
    assert_eq!(
        h["content"]["blobs_missing"], h["content"]["blobs"],
        "{h:#}"
    );
    assert_host_is(&roots[0], &store, &self::id(&store, "app"));
}

/// TUF's rollback attack: a controller limited to the protocol puts back an image
/// approved long ago (known-vulnerable, say) over the newer one the host took. The host
/// remembers the newest statement it accepted per name and refuses older ones, unless a
/// signer approved that rollback, and only until the approval expires. A dry run gets
/// the same answers and moves nothing.
#[test]
fn an_older_signed_image_is_refused_after_a_newer_one_unless_a_signer_approves_the_rollback() {
    let t = scratch("trust-rollback-");
    let dir = t.path();
    let store = dir.join("store");
    for v in 1..=3 {
        tree(&dir.join(format!("t{v}")), v);
    }
    let old = import(&store, &dir.join("t1"), "app");
    let new = import(&store, &dir.join("t2"), "app");
    let release = key(dir, "release");
    let now = imager::sign::now();
    let (old_time, new_time) = (now - 540 * DAY, now - DAY);
    sign_at(&store, &old, &release, old_time, None, None);
    sign_at(&store, &new, &release, new_time, None, None);
    let (root, host) = host_with_policy(dir, "", &release);

    push(&store, &new.to_hex(), &host, &[]);
    assert_host_is(&root, &store, &new);
    // The image signed 18 months earlier: refused, naming both, and nothing written.
    // Even when the host's `previous` names it: a push may set that (`Previous::Image`),
    // so it is the controller's word, not the host's.
    std::fs::write(
        root.join("var/lib/syncer/image.previous"),
        format!("{old}\n"),
    )
    .unwrap();
    let before = snapshot(&root);
    for extra in [&["--dry-run"][..], &[]] {
        let e = refused(&store, &old.to_hex(), &host, extra);
        assert!(
            e.contains(&format!(
                "image {old} is older than what this host has accepted"
            )) && e.contains(&format!(
                "for \"app\" its newest statement is signed {}",
                utc(old_time)
            )) && e.contains(&format!("accepted image {new} signed {}", utc(new_time)))
                && e.contains("var/lib/syncer/accepted")
                && e.contains("--allow-rollback-until"),
            "{extra:?}: {e}"
        );
        assert_eq!(snapshot(&root), before, "a refused push wrote on the host");
    }
    let record = root.join("var/lib/syncer/accepted");
    let accepted = std::fs::read_to_string(&record).unwrap();
    assert!(
        accepted.contains(&format!("newest app {} - {new}", utc(new_time))),
        "{accepted}"
    );

    // A dry run of a newer image is accepted but moves nothing.
    let newer = import(&store, &dir.join("t3"), "app");
    sign_at(&store, &newer, &release, now, None, None);
    push(&store, &newer.to_hex(), &host, &["--dry-run"]);
    assert_eq!(std::fs::read_to_string(&record).unwrap(), accepted);
    assert_host_is(&root, &store, &new);

    // A rollback approval that has expired does not count, and the refusal says so.
    sign_at(
        &store,
        &old,
        &release,
        now - 2 * 3600,
        None,
        Some(now - 3600),
    );
    let e = refused(&store, &old.to_hex(), &host, &[]);
    assert!(
        e.contains("its rollback approval by release@example.com")
            && e.contains(&format!("expired {}", utc(now - 3600))),
        "{e}"
    );
    assert_eq!(snapshot(&root), before);

    // One that has not: the old image goes on, and the record still names the newest.
    sign_at(&store, &old, &release, now, None, Some(now + DAY));
    push(&store, &old.to_hex(), &host, &[]);
    assert_host_is(&root, &store, &old);
    let after = std::fs::read_to_string(&record).unwrap();
    assert!(
        after.contains(&format!("newest app {} - {new}", utc(new_time)))
            && after.contains(&format!("way-back {new}")),
        "{after}"
    );
}

/// A signer's `version` orders statements that both carry one, whatever their times
/// say; a policy's `max_age` refuses a statement signed longer ago than that.
#[test]
fn versions_order_statements_before_times_and_max_age_refuses_stale_ones() {
    let t = scratch("trust-version-");
    let dir = t.path();
    let store = dir.join("store");
    for v in 1..=4 {
        tree(&dir.join(format!("t{v}")), v);
    }
    let release = key(dir, "release");
    let now = imager::sign::now();
    let v5 = import(&store, &dir.join("t1"), "app");
    sign_at(&store, &v5, &release, now - 10 * DAY, Some(5), None);
    let v4 = import(&store, &dir.join("t2"), "app");
    sign_at(&store, &v4, &release, now - DAY, Some(4), None);
    let v6 = import(&store, &dir.join("t3"), "app");
    sign_at(&store, &v6, &release, now - 20 * DAY, Some(6), None);
    let (root, host) = host_with_policy(dir, "", &release);
    push(&store, &v5.to_hex(), &host, &[]);

    // Signed later, but a lower version.
    let e = refused(&store, &v4.to_hex(), &host, &[]);
    assert!(
        e.contains(&format!("image {v4} is older"))
            && e.contains(&format!("signed {} (version 4)", utc(now - DAY)))
            && e.contains(&format!(
                "accepted image {v5} signed {} (version 5)",
                utc(now - 10 * DAY)
            )),
        "{e}"
    );
    // Signed earlier, but a higher version.
    push(&store, &v6.to_hex(), &host, &[]);
    assert_host_is(&root, &store, &v6);

    // At most 30 days old: a newer version signed 40 days ago is refused, by the age.
    install_policy(
        &root,
        "max_age = \"30d\"\n",
        &[allowed("release@example.com", &release, "")],
    );
    let v7 = import(&store, &dir.join("t4"), "app");
    sign_at(&store, &v7, &release, now - 40 * DAY, Some(7), None);
    let e = refused(&store, &v7.to_hex(), &host, &[]);
    assert!(
        e.contains(&format!(
            "signed {}, longer ago than the max_age of 30d in",
            utc(now - 40 * DAY)
        )) && e.contains("trust.toml"),
        "{e}"
    );
    sign_at(&store, &v7, &release, now, Some(7), None);
    push(&store, &v7.to_hex(), &host, &[]);
    assert_host_is(&root, &store, &v7);

    // An agent that dies right after its commit point: the record moves when the next
    // session finishes the commit, with the image (staged as target.accepted).
    let record = root.join("var/lib/syncer/accepted");
    tree(&dir.join("t5"), 5);
    let v8 = import(&store, &dir.join("t5"), "app");
    sign_at(&store, &v8, &release, now, Some(8), None);
    let out = syncer()
        .args(["push", &v8.to_hex(), &host, "--json"])
        .env("IMAGER_STORE", &store)
        .env("SYNCER_TEST_CRASH_AFTER_JOURNAL", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = std::fs::read_to_string(&record).unwrap();
    assert!(text.contains(&format!(" 7 {v7}\n")), "{text}");
    let r = push(&store, &v8.to_hex(), &host, &[]);
    assert_eq!(r["rolled_forward"], true, "{r:#}");
    assert_host_is(&root, &store, &v8);
    let text = std::fs::read_to_string(&record).unwrap();
    assert!(text.contains(&format!(" 8 {v8}\n")), "{text}");
    // (v7 is the image it ran just before: the way back. v6 is older than that.)
    let e = refused(&store, &v6.to_hex(), &host, &[]);
    assert!(
        e.contains("(version 6)") && e.contains("(version 8)"),
        "{e}"
    );
}

/// A rollout's automatic rollback puts back the image the host ran just before, though
/// it is older than the failed one and older than the policy's `max_age`: the agent's
/// own record of that image (not the controller's `previous`) lets it through.
#[test]
fn a_failed_canary_is_rolled_back_to_its_older_image_on_a_host_with_a_policy() {
    let t = scratch("trust-canary-");
    let dir = t.path();
    let store = dir.join("store");
    mini_root(&dir.join("t1"), 1, 5000);
    mini_root(&dir.join("t2"), 2, 5000);
    let release = key(dir, "release");
    let now = imager::sign::now();
    let old = import(&store, &dir.join("t1"), "app");
    sign_at(&store, &old, &release, now - 40 * DAY, Some(1), None);
    let (root, host) = host_with_policy(dir, "", &release);
    let signers = [allowed("release@example.com", &release, "")];
    push(&store, "app", &host, &[]);
    // Then the policy gains a max_age the old image's statement is past, and lists the
    // health check (which fails: the new image lacks the file).
    let check = "test -f /etc/missing";
    install_policy(
        &root,
        &format!("max_age = \"30d\"\nhealth = [\"{check}\"]\n"),
        &signers,
    );
    let new = import(&store, &dir.join("t2"), "app");
    sign_at(&store, &new, &release, now, Some(2), None);
    let inv = dir.join("fleet.toml");
    std::fs::write(
        &inv,
        format!(
            "[policy]\npause = \"none\"\ncanary = 1\n[policy.health]\ncommand = \"{check}\"\n\
             timeout = 10\nretries = 1\n[[colo]]\nname = \"one\"\nhosts = [\"{host}\"]\n"
        ),
    )
    .unwrap();
    let out = run(
        &store,
        &[
            "rollout",
            "app",
            "--inventory",
            inv.to_str().unwrap(),
            "--yes",
            "--json",
        ],
    );
    assert!(!out.status.success(), "a failing health check passed");
    let report = json(&String::from_utf8_lossy(&out.stdout));
    let h = &report["hosts"][0];
    assert_eq!(h["rollback"]["ok"], true, "{report:#}");
    assert_eq!(h["rollback"]["image"], old.to_hex(), "{report:#}");
    assert_host_is(&root, &store, &old);
    // Only that image: the record still names the newer one (so an image older than the
    // old one would need an approval), and the way back is now the failed one.
    let accepted = std::fs::read_to_string(root.join("var/lib/syncer/accepted")).unwrap();
    assert!(
        accepted.contains(&format!("newest app {} 2 {new}", utc(now)))
            && accepted.contains(&format!("way-back {new}")),
        "{accepted}"
    );
}

/// `syncer status`'s answer (stdout then stderr), waited for until it exits. An agent
/// stuck opening a FIFO in place of its policy would hang before its `Welcome`; the
/// controller's own handshake timeout (`SYNCER_HANDSHAKE_TIMEOUT`) ends that, and the
/// answer then says the agent never greeted instead of naming the policy, which fails
/// the assertions on it.
fn status_within(store: &Path, host: &str) -> String {
    let out = syncer()
        .args(["status", host])
        .env("IMAGER_STORE", store)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// As sshd's StrictModes: a policy file or directory others can write is no policy (they
/// could trust their own key), so the host refuses every image and says how to fix it;
/// a FIFO in place of `trust.toml` is refused instead of blocking the agent in `open`.
#[test]
fn a_policy_others_can_write_or_not_a_regular_file_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let t = scratch("trust-modes-");
    let dir = t.path();
    let store = dir.join("store");
    tree(&dir.join("t1"), 1);
    import(&store, &dir.join("t1"), "app");
    let release = key(dir, "release");
    let (root, host) = host_with_policy(dir, "", &release);
    let etc = root.join("etc/syncer");
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    chmod(&etc.join("trust.toml"), 0o644);
    chmod(&etc.join("allowed_signers"), 0o644);
    chmod(&etc, 0o755);
    let st = status_within(&store, &host);
    assert!(st.contains("trust policy: 1 requirement"), "{st}");

    for (path, mode) in [
        (etc.join("trust.toml"), 0o666),
        (etc.join("trust.toml"), 0o664),
        (etc.join("allowed_signers"), 0o646),
        (etc.clone(), 0o777),
    ] {
        let old = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        chmod(&path, mode);
        let st = status_within(&store, &host);
        assert!(
            st.contains("trust policy: unusable, every image is refused")
                && st.contains(&format!("chmod go-w {}", path.display())),
            "{} at {mode:o}: {st}",
            path.display()
        );
        let e = refused(&store, "app", &host, &[]);
        assert!(e.contains("trust policy cannot be used"), "{e}");
        chmod(&path, old);
    }

    // Owned by another user (only root may give a file away).
    if rustix::process::geteuid().is_root() {
        let policy = etc.join("trust.toml");
        std::os::unix::fs::chown(&policy, Some(12345), None).unwrap();
        let st = status_within(&store, &host);
        assert!(
            st.contains("trust policy: unusable, every image is refused")
                && st.contains("owned by uid 12345")
                && st.contains(&format!("chown root {}", policy.display())),
            "{st}"
        );
        std::os::unix::fs::chown(&policy, Some(0), None).unwrap();
    }

    std::fs::remove_file(etc.join("trust.toml")).unwrap();
    sh(&format!(
        "mkfifo -m 600 '{}'",
        etc.join("trust.toml").display()
    ));
    let st = status_within(&store, &host);
    assert!(
        st.contains("trust policy: unusable, every image is refused") && st.contains("is a FIFO"),
        "{st}"
    );

    // Without a policy there is nothing to protect: an open /etc/syncer is no error.
    std::fs::remove_file(etc.join("trust.toml")).unwrap();
    chmod(&etc, 0o777);
    let st = status_within(&store, &host);
    assert!(st.contains("trust policy: none"), "{st}");
}

/// TUF's freeze attack by a statement from the future: counted, it would move the
/// host's anti-rollback record past every real release to come. A statement dated more
/// than a day after the host's clock does not count, and the record never holds one.
#[test]
fn a_statement_dated_in_the_future_does_not_count() {
    let t = scratch("trust-future-");
    let dir = t.path();
    let store = dir.join("store");
    for v in 1..=2 {
        tree(&dir.join(format!("t{v}")), v);
    }
    let future = import(&store, &dir.join("t1"), "app");
    let release = key(dir, "release");
    let now = imager::sign::now();
    sign_at(&store, &future, &release, now + 30 * DAY, None, None);
    let (root, host) = host_with_policy(dir, "", &release);
    let e = refused(&store, &future.to_hex(), &host, &[]);
    assert!(
        e.contains(&format!(
            "signed {}, more than a day after this host's clock",
            utc(now + 30 * DAY)
        )) && e.contains("freeze"),
        "{e}"
    );
    assert!(!root.join("var/lib/syncer/accepted").exists());
    // Today's release goes on, and the record holds its time, not the future one.
    let today = import(&store, &dir.join("t2"), "app");
    sign_at(&store, &today, &release, now, None, None);
    push(&store, &today.to_hex(), &host, &[]);
    let record = std::fs::read_to_string(root.join("var/lib/syncer/accepted")).unwrap();
    assert!(
        record.contains(&format!("newest app {} - {today}", utc(now))),
        "{record}"
    );
}
