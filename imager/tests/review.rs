//! `imager diff` and `imager packages` on the benchmark corpus (two real bookworm roots
//! a security update apart), checked against dpkg's own view of the two trees.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;

use common::{sbom, Env};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The corpus the syncer tests use (built once into the target directory by
/// syncer/bench/corpus.sh, or `SYNCER_TEST_CORPUS`).
fn corpus() -> PathBuf {
    if let Some(d) = std::env::var_os("SYNCER_TEST_CORPUS") {
        return PathBuf::from(d);
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("corpus");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../syncer/bench/corpus.sh");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mkdir -p '{d}' && flock '{d}.lock' bash '{s}' '{d}' >&2",
            d = dir.display(),
            s = script.display()
        ))
        .status()
        .unwrap();
    assert!(st.success(), "building the corpus failed");
    dir
}

/// `name -> version` of the installed packages, as dpkg-query reads the tree's database.
fn dpkg_versions(root: &Path) -> BTreeMap<String, String> {
    sbom::dpkg_installed(root)
        .into_iter()
        .map(|(name, version, _)| (name, version))
        .collect()
}

#[test]
fn diff_of_the_corpus_pair_agrees_with_dpkg_and_with_itself() {
    let c = corpus();
    let env = Env::new();
    env.ok(&["import", c.join("A").to_str().unwrap(), "--name", "A"]);
    env.ok(&["import", c.join("B").to_str().unwrap(), "--name", "B"]);
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["diff", "A", "B", "--json"])).unwrap();

    // Package upgrades: exactly what dpkg's status files say.
    let (a, b) = (dpkg_versions(&c.join("A")), dpkg_versions(&c.join("B")));
    let want: BTreeMap<String, (String, String)> = b
        .iter()
        .filter_map(|(n, v)| {
            a.get(n)
                .filter(|old| *old != v)
                .map(|old| (n.clone(), (old.clone(), v.clone())))
        })
        .collect();
    assert!(!want.is_empty());
    let got: BTreeMap<String, (String, String)> = json["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["change"], "upgraded", "{p}");
            (
                p["name"].as_str().unwrap().to_string(),
                (
                    p["old_version"].as_str().unwrap().to_string(),
                    p["new_version"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(json["summary"]["packages_upgraded"], want.len());

    // Every upgraded package with a Debian changelog shows its new entries, newest first,
    // the first being the new version's.
    let with_log: Vec<&serde_json::Value> = json["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !p["changelog"].as_array().unwrap().is_empty())
        .collect();
    assert!(
        with_log.len() * 2 > want.len(),
        "few changelogs: {}",
        with_log.len()
    );
    for p in &with_log {
        assert_eq!(p["changelog"][0]["version"], p["source_version"], "{p}");
        let old = p["old_version"].as_str().unwrap();
        assert!(p["changelog"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["version"] != old));
    }

    // Unowned files come first and are there (dpkg's own database is nobody's file).
    let unowned: Vec<&str> = json["unowned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(unowned.contains(&"/var/lib/dpkg/status"), "{unowned:?}");
    // Files of an upgraded package are grouped under it, with their content change.
    let groups = json["by_package"].as_array().unwrap();
    let (name, _) = want.iter().next().unwrap();
    let g = groups
        .iter()
        .find(|g| g["package"] == name.as_str())
        .unwrap();
    assert!(g["files"].as_array().unwrap().iter().any(|f| f["what"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().starts_with("content "))));

    // The text report says the same: summary numbers and every upgrade.
    let text = env.ok(&["diff", "A", "B"]);
    let s = &json["summary"];
    assert!(text.contains(&format!(
        "files: {} added, {} removed, {} changed",
        s["files_added"], s["files_removed"], s["files_changed"]
    )));
    for (n, (o, v)) in &want {
        assert!(
            text.contains(&format!("  {n} {o} -> {v} (upgraded")),
            "{n} missing"
        );
    }
    let unowned_at = text.find("Files no package owns").unwrap();
    assert!(groups.iter().all(|g| {
        text.find(&format!("\nFiles of {}\n", g["package"].as_str().unwrap()))
            .is_some_and(|i| i > unowned_at)
    }));
    // Stable: the same report twice; Markdown and filters work.
    assert_eq!(text, env.ok(&["diff", "A", "B"]));
    let md = env.ok(&["diff", "A", "B", "--markdown", "--path", "/etc/**"]);
    assert!(md.starts_with("# ") && md.contains("## "), "{md}");
    let only: serde_json::Value =
        serde_json::from_str(&env.ok(&["diff", "A", "B", "--json", "--path", "/etc/**"])).unwrap();
    for f in only["unowned"].as_array().unwrap() {
        assert!(f["path"].as_str().unwrap().starts_with("/etc/"), "{f}");
    }
}

#[test]
fn text_diffs_flags_and_packages_as_text_json_and_spdx() {
    let env = Env::new();
    let root = env.path("t");
    let sh = |c: &str| {
        let st = Command::new("sh")
            .arg("-c")
            .arg(c)
            .current_dir(&root)
            .status()
            .unwrap();
        assert!(st.success(), "{c}");
    };
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    sh("printf 'port 80\\nworkers 4\\n' > etc/app.conf && printf x > usr/bin/tool && chmod 755 usr/bin/tool && cp /bin/true usr/bin/pinger");
    env.ok(&["import", root.to_str().unwrap(), "--name", "t"]);
    sh("printf 'port 8080\\nworkers 4\\n' > etc/app.conf && chmod 4755 usr/bin/tool && setcap cap_net_raw+ep usr/bin/pinger");
    env.ok(&["import", root.to_str().unwrap(), "--name", "t"]);
    let j: serde_json::Value =
        serde_json::from_str(&env.ok(&["diff", "t~1", "t", "--json"])).unwrap();
    let files = j["unowned"].as_array().unwrap();
    let get = |p: &str| files.iter().find(|f| f["path"] == p).unwrap();
    let conf = get("/etc/app.conf");
    let d = conf["diff"].as_str().unwrap();
    assert!(
        d.contains("-port 80\n") && d.contains("+port 8080\n"),
        "{d}"
    );
    assert!(get("/usr/bin/tool")["flagged"][0]
        .as_str()
        .unwrap()
        .contains("setuid"));
    assert!(get("/usr/bin/pinger")["flagged"][0]
        .as_str()
        .unwrap()
        .contains("capabilities"));

    // No dpkg database: no packages but the image's own, and the SPDX document says so
    // validly.
    assert_eq!(env.ok(&["packages", "t"]), "");
    let spdx: serde_json::Value =
        serde_json::from_str(&env.ok(&["packages", "t", "--spdx"])).unwrap();
    assert_eq!(spdx["spdxVersion"], "SPDX-2.3");
    assert_eq!(spdx["packages"].as_array().unwrap().len(), 1);
    assert_eq!(spdx["packages"][0]["SPDXID"], "SPDXRef-Image");
}

#[test]
fn packages_of_a_corpus_image_match_dpkg() {
    let c = corpus();
    let env = Env::new();
    env.ok(&["import", c.join("B").to_str().unwrap(), "--name", "B"]);
    let want = dpkg_versions(&c.join("B"));
    let j: serde_json::Value = serde_json::from_str(&env.ok(&["packages", "B", "--json"])).unwrap();
    let got: BTreeMap<String, String> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["version"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, want);
    let spdx: serde_json::Value =
        serde_json::from_str(&env.ok(&["packages", "B", "--spdx"])).unwrap();
    // The image's own package, then dpkg's.
    assert_eq!(spdx["packages"].as_array().unwrap().len(), want.len() + 1);
    assert!(spdx["packages"][1]["externalRefs"][0]["referenceLocator"]
        .as_str()
        .unwrap()
        .starts_with("pkg:deb/debian/"));
    assert_eq!(
        spdx,
        serde_json::from_str::<serde_json::Value>(&env.ok(&["packages", "B", "--spdx"])).unwrap()
    );
    let text = env.ok(&["packages", "B"]);
    assert_eq!(text.lines().count(), want.len());
}

/// The SBOMs of an imported image pass the official validators, and say what dpkg and
/// the copyright files in the tree say: every purl with arch and distro, every package a
/// licence and a supplier. Imported, the image has no lock: no package checksums, and a
/// note in each package saying why; no build recorded its tar.zst's digest either.
#[test]
fn corpus_sboms_pass_the_validators_and_agree_with_dpkg_and_the_copyright_files() {
    let c = corpus();
    let env = Env::new();
    env.ok(&["import", c.join("B").to_str().unwrap(), "--name", "B"]);
    let (spdx, cdx) = (env.path("B.spdx.json"), env.path("B.cdx.json"));
    std::fs::write(&spdx, env.ok(&["packages", "B", "--spdx"])).unwrap();
    std::fs::write(&cdx, env.ok(&["packages", "B", "--cyclonedx"])).unwrap();
    let s = sbom::Sboms::read(&spdx, &cdx);
    let by_name = s.check_against_dpkg(&c.join("B"));
    sbom::licences_follow_the_copyright_files(&by_name, &c.join("B"));
    for p in by_name.values() {
        assert!(p["checksums"].is_null(), "{p}");
        assert!(
            p["comment"]
                .as_str()
                .unwrap()
                .contains("not built from a lock"),
            "{p}"
        );
    }
    assert!(s.spdx["packages"][0]["checksums"].is_null());
    assert!(s.cyclonedx["metadata"]["component"]["hashes"].is_null());
    assert_eq!(
        by_name["libc6"]["supplier"],
        "Organization: GNU Libc Maintainers (debian-glibc@lists.debian.org)"
    );
}

#[test]
fn try_package_reports_what_a_real_deb_and_its_maintainer_scripts_did() {
    let c = corpus();
    let env = Env::new();
    env.ok(&["import", c.join("B").to_str().unwrap(), "--name", "B"]);
    // A small daemon from the Debian archive whose postinst adds a user and enables a
    // service: files no package lists.
    let debs = env.path("debs");
    std::fs::create_dir(&debs).unwrap();
    let st = Command::new("apt-get")
        .args(["download", "-q", "tinyproxy", "tinyproxy-bin"])
        .current_dir(&debs)
        .status()
        .unwrap();
    assert!(st.success(), "apt-get download failed");
    let mut args = vec!["try-package".to_string(), "B".into(), "--json".into()];
    for e in std::fs::read_dir(&debs).unwrap() {
        args.push(e.unwrap().path().display().to_string());
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let r: serde_json::Value = serde_json::from_str(&env.ok(&a)).unwrap();
    let added: Vec<&str> = r["packages"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|p| assert_eq!(p["change"], "added"))
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(added, ["tinyproxy", "tinyproxy-bin"]);
    let unowned = r["unowned"].as_array().unwrap();
    let find = |p: &str| unowned.iter().find(|f| f["path"] == p);
    // The postinst's work: a system user, an enabled unit.
    let group = find("/etc/group").expect("/etc/group changed");
    assert!(
        group["diff"].as_str().unwrap().contains("\n+tinyproxy:"),
        "{group}"
    );
    assert_eq!(
        find("/etc/systemd/system/multi-user.target.wants/tinyproxy.service").unwrap()["change"],
        "added"
    );
    // The package's own files are under it (dpkg lists /lib paths for /usr/lib files).
    let groups = r["by_package"].as_array().unwrap();
    let own = |pkg: &str| -> Vec<String> {
        groups
            .iter()
            .filter(|g| g["package"] == pkg)
            .flat_map(|g| g["files"].as_array().unwrap().iter())
            .map(|f| f["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(own("tinyproxy-bin").contains(&"/usr/bin/tinyproxy".to_string()));
    assert!(own("tinyproxy").contains(&"/usr/lib/systemd/system/tinyproxy.service".to_string()));
    // The image itself is untouched; the result is a new, unnamed image.
    assert_eq!(env.ok(&["history", "B"]).lines().count(), 1);
}
