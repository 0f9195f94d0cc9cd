//! `imager lock` and `imager build` on the repository's real manifests: real Debian
//! packages from the mirrors this machine's apt uses, installed by mmdebstrap as root.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;
#[path = "../../tests/support/nspawn.rs"]
mod nspawn;

use common::{sbom, Env};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A copy of `manifests/` (locks are written beside the manifests; the repository's own
/// stay untouched).
fn manifests(env: &Env) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    let dst = env.path("manifests");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&dst)
        .status()
        .unwrap();
    assert!(st.success());
    let _ = std::fs::remove_file(dst.join("base.lock"));
    let _ = std::fs::remove_file(dst.join("python-app.lock"));
    dst
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

fn chroot(root: &Path, cmd: &str) -> String {
    let out = Command::new("chroot")
        .arg(root)
        .args(["/bin/sh", "-c", cmd])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chroot {cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn base_builds_reproducibly_and_leaves_a_clean_truthful_image() {
    let env = Env::new();
    let m = manifests(&env);
    let base = m.join("base.toml");
    let base = base.to_str().unwrap();
    let lock = env.ok(&["lock", base]);
    assert!(lock.contains("packages"), "{lock}");
    let first = json(&env.ok(&["build", base, "--json"]));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let second = json(&env.ok(&["build", base, "--json"]));
    assert_eq!(first["id"], second["id"], "two builds of base differ");
    assert_eq!(
        second["download"]["downloaded"], 0,
        "the second build should use the cache"
    );
    // The second started from the install cache; the rebuild below (no cache) proves
    // that a copy of it gives what a clean install gives.
    assert_eq!(first["install"]["cache"], "miss", "{first:#}");
    assert_eq!(second["install"]["cache"], "hit", "{second:#}");
    let id = first["id"].as_str().unwrap();
    // Nothing of the build's own directories is in the image (mmdebstrap's mount point
    // for the repository was left behind: a new path, so a new ID, every build).
    let listing = env.ok(&["ls", id]);
    assert!(
        !listing.contains("imager-test-"),
        "the store's path is in the image"
    );
    // The same image again: the name does not grow a second history entry.
    assert_eq!(env.ok(&["history", "base"]).lines().count(), 1);

    let (a, b) = (env.path("a.tar.zst"), env.path("b.tar.zst"));
    env.ok(&["export", "base", "--tar", a.to_str().unwrap()]);
    env.ok(&["export", id, "--tar", b.to_str().unwrap()]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    // What the build stored with the image is enough to build it again.
    let rebuilt = env.ok(&["rebuild", id]);
    assert!(rebuilt.contains("rebuilt bit for bit"), "{rebuilt}");
    let pk = env.ok(&["build-info", "base", "--what", "packages"]);
    assert!(
        pk.lines()
            .any(|l| l.starts_with("openssh-server ") && l.ends_with(" openssh")),
        "{pk}"
    );

    provenance_names_what_the_store_holds(&env, id, &a, &m);

    let root = env.path("root");
    env.ok(&["export", id, "--dir", root.to_str().unwrap()]);
    sboms_carry_the_lock_and_the_tar(&env, id, &root, &m.join("base.lock"), &a);
    first_boot_shows_in_imager_diff(&env, id, &root);
    // dpkg's database agrees with the disk, stripped files included.
    assert_eq!(chroot(&root, "dpkg --verify"), "");
    assert!(chroot(&root, "dpkg -S /usr/bin/ssh").starts_with("openssh-client: /usr/bin/ssh"));
    assert!(chroot(&root, "dpkg -l openssh-server").contains("ii  openssh-server"));
    let listed = chroot(&root, "dpkg -L openssh-server");
    assert!(
        !listed.contains("/usr/share/man/man8/sshd.8.gz")
            || root.join("usr/share/man/man8/sshd.8.gz").exists()
    );

    // Strip rules: docs gone but copyright files, English man pages only, listed locales.
    let docs: Vec<String> = walk(&root.join("usr/share/doc"))
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        !docs.is_empty() && docs.iter().all(|p| p.ends_with("/copyright")),
        "{docs:?}"
    );
    assert!(root.join("usr/share/man/man8/sshd.8.gz").exists());
    assert!(!root.join("usr/share/man/de").exists() && !root.join("usr/share/man/fr").exists());
    assert!(walk(&root.join("usr/share/info"))
        .iter()
        .all(|p| p.is_dir()));
    for l in std::fs::read_dir(root.join("usr/share/locale")).unwrap() {
        let n = l.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            n == "locale.alias" || n.starts_with("en"),
            "locale {n} kept"
        );
    }

    // Machine and local state.
    assert_eq!(
        std::fs::metadata(root.join("etc/machine-id"))
            .unwrap()
            .len(),
        0
    );
    let keys: Vec<_> = std::fs::read_dir(root.join("etc/ssh"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ssh_host_"))
        .collect();
    assert!(keys.is_empty(), "host keys in the image: {keys:?}");
    for d in [
        "var/log",
        "tmp",
        "var/tmp",
        "var/lib/apt/lists",
        "var/cache/apt/archives",
    ] {
        // apt's empty lock files may stay: they carry nothing of the build machine.
        let files: Vec<_> = walk(&root.join(d))
            .into_iter()
            .filter(|p| !p.is_dir())
            .filter(|p| !(p.ends_with("lock") && std::fs::metadata(p).unwrap().len() == 0))
            .collect();
        assert!(files.is_empty(), "{d} holds {files:?}");
    }
    for f in [
        "etc/resolv.conf",
        "etc/hostname",
        "var/cache/ldconfig/aux-cache",
        "var/lib/dpkg/status-old",
    ] {
        assert!(
            std::fs::symlink_metadata(root.join(f)).is_err(),
            "{f} is in the image"
        );
    }
    let epoch_day = first["epoch"].as_i64().unwrap() / 86400;
    let shadow = std::fs::read_to_string(root.join("etc/shadow")).unwrap();
    assert!(
        shadow.lines().all(|l| l
            .split(':')
            .nth(2)
            .is_none_or(|d| d.is_empty() || d == epoch_day.to_string())),
        "{shadow}"
    );
    let sources = std::fs::read_to_string(root.join("etc/apt/sources.list")).unwrap();
    assert!(
        sources.starts_with("deb http") && !sources.contains("file:"),
        "{sources}"
    );

    // The syncer's inputs travel in the image.
    let triggers = std::fs::read_to_string(root.join("usr/lib/imager/triggers.toml")).unwrap();
    assert!(
        triggers.contains("reload-sshd") && triggers.contains("/etc/ssh/sshd_config"),
        "{triggers}"
    );
    let ls = std::fs::read_to_string(root.join("usr/lib/imager/local-state.txt")).unwrap();
    assert!(ls.contains("/etc/machine-id"));

    boots_clean_with_keys_of_its_own(&env, id, &root);
}

/// The build's in-toto statement names the image, its tar.zst (the export `tar`) and SPDX
/// document, the manifest and lock it was built from and every .deb; `verify
/// --provenance` re-checks each against the store and the DSSE signature `sign
/// --provenance` adds; a stored lock, manifest or statement changed afterwards is caught.
fn provenance_names_what_the_store_holds(env: &Env, id: &str, tar: &Path, m: &Path) {
    let sha256 = |p: &Path| {
        let out = Command::new("sha256sum").arg(p).output().unwrap();
        String::from_utf8_lossy(&out.stdout)[..64].to_string()
    };
    let st = json(&env.ok(&["build-info", id, "--what", "provenance"]));
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(st["subject"][0]["digest"]["blake3"], id);
    assert_eq!(
        st["subject"][1]["digest"]["sha256"],
        sha256(tar).as_str(),
        "{st:#}"
    );
    let spdx = env.path("base.spdx.json");
    std::fs::write(&spdx, env.ok(&["packages", id, "--spdx"])).unwrap();
    assert_eq!(st["subject"][2]["digest"]["sha256"], sha256(&spdx).as_str());
    let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let lock = m.join("base.lock");
    let lock_dep = deps
        .iter()
        // An absolute file:// URI, whatever path the build was given.
        .find(|d| d["uri"] == format!("file://{}", std::path::absolute(&lock).unwrap().display()))
        .unwrap_or_else(|| panic!("no lock in {deps:#?}"));
    assert_eq!(lock_dep["digest"]["sha256"], sha256(&lock).as_str());
    let locked = std::fs::read_to_string(&lock).unwrap();
    let debs = deps
        .iter()
        .filter(|d| d["uri"].as_str().is_some_and(|u| u.ends_with(".deb")));
    assert_eq!(
        debs.count(),
        locked.lines().filter(|l| l.starts_with("package ")).count()
    );
    let started = st["predicate"]["runDetails"]["metadata"]["startedOn"]
        .as_str()
        .unwrap();
    assert!(started.len() == 20 && started.ends_with('Z'), "{started}");

    let out = env.ok(&["verify", id, "--provenance"]);
    assert!(
        out.contains("provenance: subject: the tar.zst: ok")
            && out.ends_with(
                "verified
"
            ),
        "{out}"
    );
    let k = env.path("release");
    env.ok(&["key", "generate", "--out", k.to_str().unwrap()]);
    env.ok(&["sign", id, "--key", k.to_str().unwrap(), "--provenance"]);
    let pubkey = format!("{}.pub", k.display());
    let out = env.ok(&["verify", id, "--key", &pubkey, "--provenance"]);
    assert!(out.contains("provenance: signature: ok"), "{out}");
    let env_json = json(&env.ok(&["build-info", id, "--what", "provenance-envelope"]));
    assert_eq!(env_json["payloadType"], "application/vnd.in-toto+json");

    let dir = env.store().join("images").join(id);
    for (file, says) in [
        (
            "build.lock",
            "stored build.lock: WRONG: changed since the build",
        ),
        (
            "build-manifest.toml",
            "stored build-manifest.toml: WRONG: changed since the build",
        ),
        (
            "provenance.json",
            "signs another statement than provenance.json",
        ),
        // The SPDX document is the build's (a later imager names another tool version
        // in one made again, and must not fail the provenance for it).
        ("spdx.json", "provenance: subject: the SPDX document: WRONG"),
    ] {
        let p = dir.join(file);
        let good = std::fs::read(&p).unwrap();
        // A comment line for the TOML files; another start time for the statement.
        let bad = String::from_utf8(good.clone()).unwrap().replacen(
            "\"startedOn\": \"2",
            "\"startedOn\": \"1",
            1,
        );
        let bad = if file == "provenance.json" {
            bad
        } else if file == "spdx.json" {
            bad.replacen("imager-", "imager-upgraded-", 1)
        } else {
            format!("# edited\n{bad}")
        };
        assert_ne!(bad.as_bytes(), &good[..]);
        std::fs::write(&p, &bad).unwrap();
        let out = env.run(&["verify", id, "--key", &pubkey, "--provenance"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && text.contains(says),
            "{file}: {text}"
        );
        std::fs::write(&p, &good).unwrap();
    }
    env.ok(&["verify", id, "--key", &pubkey, "--provenance"]);
}

/// The SBOMs of a built image pass the official validators and agree with dpkg in the
/// exported tree and with the copyright files; every package's checksum is its .deb's
/// sha256 in the lock, and the image's is its tar.zst's (the exported file's).
fn sboms_carry_the_lock_and_the_tar(env: &Env, id: &str, root: &Path, lock: &Path, tar: &Path) {
    let (spdx, cdx) = (env.path("sbom.spdx.json"), env.path("sbom.cdx.json"));
    std::fs::write(&spdx, env.ok(&["packages", id, "--spdx"])).unwrap();
    std::fs::write(&cdx, env.ok(&["packages", id, "--cyclonedx"])).unwrap();
    let s = sbom::Sboms::read(&spdx, &cdx);
    let by_name = s.check_against_dpkg(root);
    sbom::licences_follow_the_copyright_files(&by_name, root);
    let locked = sbom::locked_debs(lock);
    let mut spdx_sums = std::collections::BTreeMap::new();
    for p in by_name.values() {
        let purl = p["externalRefs"][0]["referenceLocator"].as_str().unwrap();
        let key = (
            p["name"].as_str().unwrap().to_string(),
            p["versionInfo"].as_str().unwrap().to_string(),
            sbom::purl_arch(purl),
        );
        assert_eq!(p["checksums"][0]["algorithm"], "SHA256", "{p}");
        let sum = p["checksums"][0]["checksumValue"].as_str().unwrap();
        assert_eq!(Some(sum), locked.get(&key).map(String::as_str), "{key:?}");
        spdx_sums.insert(purl.to_string(), sum.to_string());
    }
    for c in s.cyclonedx["components"].as_array().unwrap() {
        assert_eq!(c["hashes"][0]["alg"], "SHA-256", "{c}");
        assert_eq!(
            c["hashes"][0]["content"],
            spdx_sums[c["purl"].as_str().unwrap()]
        );
    }
    let out = Command::new("sha256sum").arg(tar).output().unwrap();
    let tar_sha = String::from_utf8_lossy(&out.stdout)[..64].to_string();
    let (a, b) = s.tar_digests();
    assert_eq!(
        (a.as_str(), b.as_str()),
        (Some(&tar_sha[..]), Some(&tar_sha[..]))
    );
}

/// A reviewer sees the first-boot mechanism: `imager diff` from the same tree without it
/// (the export imported again, leaving its files out: no second build) lists exactly its
/// files, added and owned by no package.
fn first_boot_shows_in_imager_diff(env: &Env, id: &str, root: &Path) {
    let files = [
        "/usr/lib/imager/firstboot",
        "/usr/lib/systemd/system/imager-firstboot.service",
        "/usr/lib/systemd/system/ssh.service.wants/imager-firstboot.service",
        "/usr/lib/systemd/system/ssh.socket.wants/imager-firstboot.service",
    ];
    let mut args = vec!["import", root.to_str().unwrap(), "--name", "no-first-boot"];
    for f in &files {
        args.extend(["--exclude", f]);
    }
    env.ok(&args);
    let d = json(&env.ok(&["diff", "no-first-boot", id, "--json"]));
    let unowned = d["unowned"].as_array().unwrap();
    let mut added: Vec<&str> = unowned
        .iter()
        .inspect(|f| assert_eq!(f["change"], "added", "{f:#}"))
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    added.sort();
    assert_eq!(added, files, "{d:#}");
    assert!(d["by_package"].as_array().unwrap().is_empty(), "{d:#}");
    let text = env.ok(&["diff", "no-first-boot", id]);
    assert!(text.contains("/usr/lib/imager/firstboot"), "{text}");
}

/// Two machines booted from the image (systemd as PID 1) come up `running`, sshd
/// answering with host keys each made at its first boot, a resolv.conf that boot made,
/// and different machine-ids.
fn boots_clean_with_keys_of_its_own(env: &Env, id: &str, root: &Path) {
    // The first-boot mechanism is part of the image, for reviewers to see.
    let listed = env.ok(&["ls", id, "/usr/lib/systemd/system/ssh.service.wants"]);
    assert!(listed.contains("imager-firstboot.service"), "{listed}");
    assert!(env
        .ok(&["ls", id, "/usr/lib/imager/firstboot"])
        .contains("0755"));
    let machines: Vec<nspawn::Machine> = ["imgboot-a", "imgboot-b"]
        .iter()
        .map(|n| nspawn::Machine::boot(root, n, &env.path(&format!("{n}.log"))))
        .collect();
    let mut seen = Vec::new();
    for m in &machines {
        m.assert_running();
        let scan = m.in_netns("ssh-keyscan", &["-T", "20", "127.0.0.1"]);
        let keys: Vec<String> = String::from_utf8_lossy(&scan.stdout)
            .lines()
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .filter(|l| !l.is_empty())
            .collect();
        assert!(
            keys.iter().any(|k| k.starts_with("ssh-ed25519 ")),
            "{}: sshd gave no ed25519 key: {scan:?}",
            m.name
        );
        // The build removed resolv.conf; the first boot made a placeholder (nspawn runs
        // with --resolv-conf=off, so this is the image's, not the host's).
        let resolv = m.ok("cat /etc/resolv.conf");
        assert!(
            resolv.contains("first boot") && !resolv.contains("nameserver "),
            "{}: /etc/resolv.conf {resolv:?}",
            m.name
        );
        let machine_id = m.ok("cat /etc/machine-id").trim().to_string();
        assert_eq!(
            machine_id.len(),
            32,
            "{}: machine-id {machine_id:?}",
            m.name
        );
        seen.push((keys, machine_id));
    }
    assert_ne!(seen[0].0, seen[1].0, "two machines got the same host keys");
    assert_ne!(seen[0].1, seen[1].1, "two machines got the same machine-id");
}

fn walk(p: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(|e| e.ok())
        .map(|e| e.into_path())
        .collect()
}

#[test]
fn hooks_with_timestamp_pycs_and_named_gzip_stay_reproducible() {
    let env = Env::new();
    let m = manifests(&env);
    let app = m.join("python-app.toml");
    let app = app.to_str().unwrap();
    // No lock yet: the build says how to make one, and --update-lock makes it.
    let e = env.fails(&["build", app]);
    assert!(
        e.contains("imager lock") && e.contains("python-app.lock"),
        "{e}"
    );
    let first = json(&env.ok(&["build", app, "--update-lock", "--json"]));
    assert!(m.join("python-app.lock").is_file());
    std::thread::sleep(std::time::Duration::from_secs(2));
    let second = json(&env.ok(&["build", app, "--json"]));
    assert_eq!(first["id"], second["id"], "two builds of python-app differ");
    assert_eq!(second["install"]["cache"], "hit", "{second:#}");
    // The hook's outputs really were made reproducible by the rules, not by luck.
    assert!(first["normalize"]["pyc"].as_u64().unwrap() >= 1, "{first}");
    assert!(first["normalize"]["gzip"].as_u64().unwrap() >= 1, "{first}");

    let root = env.path("root");
    env.ok(&["export", "python-app", "--dir", root.to_str().unwrap()]);
    assert_eq!(
        std::fs::metadata(root.join("opt/app/app.py"))
            .unwrap()
            .len(),
        404
    );
    // Python takes the normalised pyc as valid: it loads it rather than recompiling.
    let v = chroot(
        &root,
        "cd / && python3 -v -c 'import sys; sys.path.insert(0, \"/opt/app\"); import app' 2>&1",
    );
    assert!(
        v.contains("code object from '/opt/app/__pycache__/app.cpython-311.pyc'"),
        "{v}"
    );
    // Overlays keep their owner and mode; the gzip stays valid.
    assert!(chroot(&root, "stat -c '%a %u' /etc/systemd/system/app.service").starts_with("644 0"));
    assert_eq!(
        chroot(&root, "gzip -dc /opt/app/CHANGES.gz"),
        "1.0: first release\n"
    );

    overlay_and_hook_changes_start_from_the_install_cache(&env, &m, app, &first);
    builder_environment_does_not_reach_the_image(&env, &m);

    // A stale lock is refused until it is updated.
    let text = std::fs::read_to_string(app)
        .unwrap()
        .replace("\"python3-requests\"", "\"python3-requests\", \"jq\"");
    std::fs::write(app, text).unwrap();
    let e = env.fails(&["build", app]);
    assert!(
        e.contains("no longer matches") && e.contains("--update-lock"),
        "{e}"
    );
    // Another package set is installed afresh, and kept beside the first.
    let more = json(&env.ok(&["build", app, "--update-lock", "--json"]));
    assert_eq!(more["install"]["cache"], "miss", "{more:#}");
    assert!(env
        .ok(&["ls", more["id"].as_str().unwrap(), "/usr/bin/jq"])
        .contains("/usr/bin/jq"));
    let (old, new) = (&first["install"]["key"], &more["install"]["key"]);
    assert_ne!(old, new);
    for k in [old, new] {
        assert!(env
            .store()
            .join("build-cache")
            .join(k.as_str().unwrap())
            .join("entry.json")
            .is_file());
    }
    // gc keeps the entries unless asked, and then empties the cache.
    let kept = json(&env.ok(&["gc", "--json"]));
    assert!(
        kept["build_cache"]["kept"].as_u64().unwrap() >= 2,
        "{kept:#}"
    );
    let dry = json(&env.ok(&["gc", "--build-cache", "--dry-run", "--json"]));
    assert_eq!(dry["build_cache"]["removed"], kept["build_cache"]["kept"]);
    assert!(env
        .store()
        .join("build-cache")
        .join(new.as_str().unwrap())
        .exists());
    let gone = json(&env.ok(&["gc", "--build-cache", "--json"]));
    assert_eq!(gone["build_cache"]["removed"], kept["build_cache"]["kept"]);
    assert_eq!(
        std::fs::read_dir(env.store().join("build-cache"))
            .unwrap()
            .count(),
        0
    );

    // A failing hook: its name and output are shown, and --keep-failed keeps the chroot.
    let bad = m.join("bad-hook.toml");
    std::fs::write(&bad, "name = \"bad-hook\"\nextends = \"base.toml\"\n[[hook]]\nname = \"explode\"\nrun = \"echo the-hook-said-this >&2; exit 3\"\n").unwrap();
    let e = env.fails(&[
        "build",
        bad.to_str().unwrap(),
        "--update-lock",
        "--keep-failed",
    ]);
    assert!(
        e.contains("hook \"explode\"")
            && e.contains("the-hook-said-this")
            && e.contains("bad-hook.toml"),
        "{e}"
    );
    let kept = e
        .lines()
        .find_map(|l| l.split("kept in ").nth(1))
        .map(|s| s.trim_end_matches(')').to_string());
    let kept = kept.unwrap_or_else(|| panic!("no kept directory in {e}"));
    assert!(Path::new(&kept).join("root/usr/bin/dpkg").exists());
    std::fs::remove_dir_all(&kept).unwrap();

    // A hook of one of mmdebstrap's phases fails the same way, naming its phase.
    let early = m.join("bad-early.toml");
    std::fs::write(&early, "name = \"bad-early\"\nextends = \"base.toml\"\n[[hook]]\nname = \"explode-early\"\nphase = \"essential\"\nrun = \"echo said-early >&2; exit 4\"\n").unwrap();
    let e = env.fails(&["build", early.to_str().unwrap(), "--update-lock"]);
    assert!(
        e.contains("hook \"explode-early\" (essential phase) of")
            && e.contains("bad-early.toml")
            && e.contains("said-early")
            && e.contains("failed (exit 4)"),
        "{e}"
    );
}

/// The engineer's loop: an overlay file changed, then a hook; both builds start from the
/// install cache. Then the entry is damaged: the next build finds it, installs again
/// from the .debs and gets the same ID, so a build from the cache is a clean build's.
fn overlay_and_hook_changes_start_from_the_install_cache(
    env: &Env,
    m: &Path,
    app: &str,
    clean: &serde_json::Value,
) {
    let changes = m.join("overlays/python-app/opt/app/CHANGES");
    let text = std::fs::read_to_string(&changes).unwrap() + "1.1: from the install cache\n";
    std::fs::write(&changes, text).unwrap();
    let ov = json(&env.ok(&["build", app, "--no-provenance", "--json"]));
    assert_eq!(ov["install"]["cache"], "hit", "{ov:#}");
    assert_ne!(
        ov["id"], clean["id"],
        "the overlay change is not in the image"
    );
    // Without its provenance until a build of the same image writes it.
    let ov_id = ov["id"].as_str().unwrap();
    let e = env.fails(&["build-info", ov_id, "--what", "provenance"]);
    assert!(e.contains("--no-provenance"), "{e}");
    let ov2 = json(&env.ok(&["build", app, "--json"]));
    assert_eq!(ov2["id"], ov["id"]);
    assert!(env
        .ok(&["build-info", ov_id, "--what", "provenance"])
        .contains("in-toto"));

    let manifest = std::fs::read_to_string(app).unwrap();
    let hooked = manifest.replace(
        "gzip -k -9 /opt/app/CHANGES",
        "gzip -k -9 /opt/app/CHANGES && echo hooked > /opt/app/hooked",
    );
    assert_ne!(hooked, manifest);
    std::fs::write(app, hooked).unwrap();
    let hk = json(&env.ok(&["build", app, "--json"]));
    assert_eq!(hk["install"]["cache"], "hit", "{hk:#}");
    // Each build gave its tree back; the next brought it back to the entry with rsync.
    assert_eq!(hk["install"]["restored"], "synced", "{hk:#}");
    let id = hk["id"].as_str().unwrap();
    assert!(env
        .ok(&["ls", id, "/opt/app/hooked"])
        .contains("/opt/app/hooked"));
    assert_eq!(hk["install"]["key"], clean["install"]["key"]);

    let key = hk["install"]["key"].as_str().unwrap();
    let victim = env
        .store()
        .join("build-cache")
        .join(key)
        .join("root/usr/bin/dpkg");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&victim)
        .unwrap();
    std::io::Write::write_all(&mut f, b"damage").unwrap();
    drop(f);
    let again = json(&env.ok(&["build", app, "--json"]));
    assert_eq!(again["install"]["cache"], "miss", "{again:#}");
    let note = again["install"]["note"].as_str().unwrap_or_default();
    assert!(note.contains("damaged") && note.contains(key), "{again:#}");
    assert_eq!(again["id"], hk["id"], "a clean install gives another image");
    // Put back as it was, for what follows.
    std::fs::write(app, manifest).unwrap();
}

/// A manifest with an overlay (sources checked out group-writable, as under umask 0002,
/// and without a `mode`), a hook that makes files, a hook at each of mmdebstrap's phases
/// noting what existed when it ran, and a trigger, rebuilt with every variation of
/// `rebuild --vary`: the same image ID, and the varied rebuild's own tar.zst export has
/// the bytes of the original's.
fn builder_environment_does_not_reach_the_image(env: &Env, m: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let ov = m.join("vary-overlay");
    std::fs::create_dir_all(ov.join("bin")).unwrap();
    std::fs::write(ov.join("bin/hello"), "#!/bin/sh\necho hello\n").unwrap();
    std::fs::write(ov.join("motd"), "built by imager\n").unwrap();
    for (p, mode) in [("bin/hello", 0o775), ("motd", 0o664), ("bin", 0o775)] {
        std::fs::set_permissions(ov.join(p), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let manifest = m.join("vary.toml");
    std::fs::write(
        &manifest,
        r#"name = "vary"
extends = "base.toml"

[[overlay]]
src = "vary-overlay"
dest = "/opt/vary"

[[hook]]
name = "make-files"
run = "echo made > /etc/made-by-hook && mkdir -p /var/lib/made-by-hook && date +%Z > /var/lib/made-by-hook/zone"

# One hook per phase of mmdebstrap's, each noting what existed when it ran.
[[hook]]
name = "at-setup"
phase = "setup"
run = 'mkdir -p var/lib/phases && { test -e usr/bin/dpkg && echo dpkg || echo no-dpkg; echo "$IMAGER_HOOK $TZ"; } > var/lib/phases/setup'

[[hook]]
name = "at-extract"
phase = "extract"
run = 'seen() { for p in base-files nginx-light; do dpkg -s $p >/dev/null 2>&1 && echo $p || echo no-$p; done; test -e /opt/vary/motd && echo overlay || echo no-overlay; }; { test -x /usr/bin/dpkg && echo dpkg; seen; } > /var/lib/phases/extract'

[[hook]]
name = "at-essential"
phase = "essential"
run = 'for p in base-files nginx-light; do dpkg -s $p >/dev/null 2>&1 && echo $p || echo no-$p; done > /var/lib/phases/essential'

[[hook]]
name = "at-customize"
phase = "customize"
run = '{ for p in base-files nginx-light; do dpkg -s $p >/dev/null 2>&1 && echo $p || echo no-$p; done; test -e /opt/vary/motd && echo overlay || echo no-overlay; } > /var/lib/phases/customize'

[[trigger]]
name = "say"
paths = ["/opt/vary/**"]
run = "true"
"#,
    )
    .unwrap();
    let manifest = manifest.to_str().unwrap();
    let built = json(&env.ok(&["build", manifest, "--update-lock", "--json"]));
    let id = built["id"].as_str().unwrap();
    let ls = env.ok(&["ls", id, "/opt/vary"]);
    assert!(
        ls.contains("/opt/vary/bin/hello file mode=0755")
            && ls.contains("/opt/vary/motd file mode=0644"),
        "overlay modes follow the executable bit only:\n{ls}"
    );
    // Each phase's hook ran at its moment (the default one after the overlays).
    let root = env.path("vary-root");
    env.ok(&["export", id, "--dir", root.to_str().unwrap()]);
    let phase = |p: &str| std::fs::read_to_string(root.join("var/lib/phases").join(p)).unwrap();
    assert_eq!(phase("setup"), "no-dpkg\nat-setup UTC\n");
    assert_eq!(
        phase("extract"),
        "dpkg\nno-base-files\nno-nginx-light\nno-overlay\n"
    );
    assert_eq!(phase("essential"), "base-files\nno-nginx-light\n");
    assert_eq!(phase("customize"), "base-files\nnginx-light\nno-overlay\n");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/made-by-hook")).unwrap(),
        "made\n"
    );
    let r = json(&env.ok(&["rebuild", id, "--vary", "all", "--json"]));
    assert_eq!(r["identical"], true, "varied rebuild differs: {r:#}");
    assert_eq!(r["rebuilt"].as_str(), Some(id));
    let varied = r["varied"].as_array().unwrap();
    assert_eq!(varied.len(), 11, "{varied:?}");
    // The tarballs: the child exported its own result, in the varied environment and
    // from its own copy of the store, and this must be the digest of the original's.
    let (orig_tar, rebuilt_tar) = (
        r["original_tar_sha256"].as_str().unwrap(),
        r["rebuilt_tar_sha256"].as_str().unwrap(),
    );
    assert!(orig_tar.starts_with("sha256:"), "{r:#}");
    assert_eq!(
        orig_tar, rebuilt_tar,
        "varied rebuild's tarball differs: {r:#}"
    );
    assert_eq!(r["tar_identical"], true, "{r:#}");
    // ... and that digest is of what `imager export --tar` writes.
    let a = env.path("vary-a.tar.zst");
    env.ok(&["export", id, "--tar", a.to_str().unwrap()]);
    let sum = std::process::Command::new("sha256sum")
        .arg(&a)
        .output()
        .unwrap();
    let sum = String::from_utf8(sum.stdout).unwrap();
    assert_eq!(
        Some(orig_tar.trim_start_matches("sha256:")),
        sum.split_whitespace().next(),
        "the reported digest is not the export's"
    );
}

#[test]
fn bad_manifests_fail_with_clear_errors() {
    let env = Env::new();
    let m = env.path("m");
    std::fs::create_dir_all(&m).unwrap();
    let w = |name: &str, body: &str| {
        let p = m.join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    };
    w("a.toml", "name = \"a\"\nextends = \"b.toml\"\n");
    // (file, body, command, what the error must name)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "unknown.toml",
            "name = \"x\"\npackages = [\"gzip\"]\n\n[strip]\ndoc = true\n",
            "lock",
            &["unknown.toml:5", "doc"],
        ),
        (
            "b.toml",
            "name = \"b\"\nextends = \"a.toml\"\n",
            "build",
            &["cycle", "a.toml", "b.toml"],
        ),
        (
            "orphan.toml",
            "name = \"o\"\nextends = \"nowhere.toml\"\n",
            "lock",
            &["orphan.toml:2", "nowhere.toml"],
        ),
        (
            "nopkg.toml",
            "name = \"n\"\npackages = [\"gzip\", \"no-such-package-anywhere\"]\n",
            "lock",
            &["nopkg.toml", "no-such-package-anywhere"],
        ),
        (
            "gone.toml",
            "name = \"g\"\npackages = [\"gzip=0.0-no-such-version\"]\n",
            "lock",
            &["gone.toml", "0.0-no-such-version"],
        ),
        (
            "mirror.toml",
            "name = \"m\"\n[source]\nmirrors = [\"http://127.0.0.1:9/debian\"]\n",
            "lock",
            &["mirror.toml", "127.0.0.1:9"],
        ),
    ];
    for (file, body, cmd, expect) in cases {
        let e = env.fails(&[cmd, &w(file, body)]);
        for x in *expect {
            assert!(e.contains(x), "{file}: {x:?} not in:\n{e}");
        }
    }

    // A version the mirror no longer has: the build names the package and the way out.
    let ok = w(
        "vanished.toml",
        "name = \"v\"\n[source]\nvariant = \"essential\"\n",
    );
    env.ok(&["lock", &ok]);
    let lock = m.join("vanished.lock");
    let text = std::fs::read_to_string(&lock).unwrap();
    let gzip = text
        .lines()
        .find(|l| l.starts_with("package gzip "))
        .unwrap();
    let f: Vec<&str> = gzip.split(' ').collect();
    let gone = format!(
        "{} pool/main/g/gzip/gzip_0.0-vanished_{}.deb {}",
        f[..5].join(" "),
        f[3],
        f[6..].join(" ")
    );
    std::fs::write(&lock, text.replace(gzip, &gone)).unwrap();
    let e = env.fails(&["build", &ok]);
    assert!(
        e.contains("cannot download gzip")
            && e.contains("gzip_0.0-vanished")
            && e.contains("imager lock"),
        "{e}"
    );
}

/// A team's own .deb from a directory beside the manifest (`[[local]]`): resolved with
/// the mirror's packages (its dependency comes from there) and locked by its sha256; the
/// same file name with other bytes then fails the lock check, naming the file, both
/// digests and the way out, and `--update-lock` takes the new one: installed, named in
/// the provenance by its file, and rebuilt from the store alone. Two builds: the lock is
/// checked before anything is installed.
#[test]
fn local_debs_are_locked_by_hash_and_installed() {
    let env = Env::new();
    let m = env.path("m");
    let debs = m.join("debs");
    std::fs::create_dir_all(&debs).unwrap();
    let deb = debs.join("hello-team_1.0_all.deb");
    let make_deb = |greeting: &str| {
        let pkg = env.path("pkg");
        let _ = std::fs::remove_dir_all(&pkg);
        std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
        std::fs::create_dir_all(pkg.join("usr/share/hello-team")).unwrap();
        std::fs::write(
            pkg.join("DEBIAN/control"),
            "Package: hello-team\nVersion: 1.0\nArchitecture: all\nMaintainer: Team <team@example.org>\n\
             Depends: libc6, jq\nDescription: the team's own package\n",
        )
        .unwrap();
        std::fs::write(pkg.join("usr/share/hello-team/greeting"), greeting).unwrap();
        let out = Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&pkg)
            .arg(&deb)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let out = Command::new("sha256sum").arg(&deb).output().unwrap();
        String::from_utf8_lossy(&out.stdout)[..64].to_string()
    };
    let locked = |sha: &str| {
        let lock = std::fs::read_to_string(m.join("team.lock")).unwrap();
        let line = "package hello-team 1.0 all local:0 hello-team_1.0_all.deb ";
        assert!(
            lock.contains("\nlocal debs\n")
                && lock
                    .lines()
                    .any(|l| l.starts_with(line) && l.ends_with(sha)),
            "{lock}"
        );
        lock
    };
    let sha = make_deb("v1\n");
    let manifest = m.join("team.toml");
    // The essential set is the smallest build; jq is in no variant's base set.
    std::fs::write(
        &manifest,
        "name = \"team\"\npackages = [\"hello-team\"]\n[source]\nvariant = \"essential\"\n\
         [[local]]\ndir = \"debs\"\n",
    )
    .unwrap();
    let man = manifest.to_str().unwrap();
    env.ok(&["lock", man]);
    let lock = locked(&sha);
    assert!(
        lock.lines()
            .any(|l| l.starts_with("package jq ") && !l.contains(" local:")),
        "{lock}"
    );

    // Same name, other bytes: the lock check names the file, both digests, the way out.
    let sha2 = make_deb("v2\n");
    assert_ne!(sha, sha2);
    let e = env.fails(&["build", man]);
    let file = deb.canonicalize().unwrap();
    for x in [
        file.to_str().unwrap(),
        "changed since the lock was made",
        &sha,
        &sha2,
        "imager lock",
        "--update-lock",
    ] {
        assert!(e.contains(x), "{x:?} not in:\n{e}");
    }
    let built = json(&env.ok(&["build", man, "--update-lock", "--json"]));
    assert_eq!(built["lock_updated"], true, "{built}");
    assert_eq!(built["download"]["local"], 1, "{built}");
    locked(&sha2);
    let id = built["id"].as_str().unwrap();
    let root = env.path("root");
    env.ok(&["export", id, "--dir", root.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(root.join("usr/share/hello-team/greeting")).unwrap(),
        "v2\n"
    );
    assert!(chroot(&root, "dpkg -s hello-team").contains("Status: install ok installed"));
    assert!(chroot(&root, "jq --version").starts_with("jq-"));

    // The provenance names it by its file, not by a URL of a mirror that never had it,
    // and its own check counts it among the lock's .debs.
    let st = json(&env.ok(&["build-info", id, "--what", "provenance"]));
    let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let d = deps
        .iter()
        .find(|d| d["name"] == "hello-team=1.0:all")
        .unwrap_or_else(|| panic!("no local .deb in {deps:#?}"));
    let uri = format!("file://{}", file.display());
    assert_eq!(d["uri"].as_str(), Some(uri.as_str()), "{d}");
    assert_eq!(d["digest"]["sha256"].as_str(), Some(sha2.as_str()), "{d}");
    let out = env.ok(&["verify", id, "--provenance"]);
    assert!(out.contains("provenance: packages: ok"), "{out}");

    // Rebuilt from what the store holds: the directory is not needed.
    std::fs::remove_dir_all(&debs).unwrap();
    let rebuilt = env.ok(&["rebuild", id]);
    assert!(rebuilt.contains("rebuilt bit for bit"), "{rebuilt}");
}
