//! The SBOMs checked as scanners use them: both documents through the official
//! validators (`pyspdxtools` of spdx-tools, cyclonedx-python-lib's strict JSON schema
//! validator for CycloneDX 1.5, installed from PyPI once into a venv in the target
//! directory), and their packages against dpkg's own view of the exported tree.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The validators' versions: pinned, so a new release cannot change a test's verdict.
const PIP_PACKAGES: &str = "spdx-tools==0.8.5 cyclonedx-python-lib[json-validation]==11.12.0";

/// The venv's `bin/`, made once (under a lock: tests run in parallel).
fn validators() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sbom-validators");
    let d = dir.display();
    let script = format!(
        "set -e; exec 9>'{d}.lock'; flock 9; \
         if [ ! -f '{d}/installed' ]; then rm -rf '{d}'; python3 -m venv '{d}'; \
         '{d}/bin/pip' install -q {PIP_PACKAGES} >&2; touch '{d}/installed'; fi"
    );
    let st = Command::new("sh").arg("-c").arg(&script).status().unwrap();
    assert!(
        st.success(),
        "installing the SBOM validators failed: {script}"
    );
    dir.join("bin")
}

const CYCLONEDX_CHECK: &str = "
import sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
err = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())
if err is not None:
    print(err)
    sys.exit(1)
";

/// Runs both official validators; panics with what they said.
pub fn validate(spdx: &Path, cyclonedx: &Path) {
    let bin = validators();
    let out = Command::new(bin.join("pyspdxtools"))
        .arg("-i")
        .arg(spdx)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyspdxtools rejects {}:\n{}{}",
        spdx.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin.join("python"))
        .args(["-c", CYCLONEDX_CHECK])
        .arg(cyclonedx)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the CycloneDX 1.5 validator rejects {}:\n{}{}",
        cyclonedx.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `(name, version, architecture)` of the packages dpkg's database in `root` has
/// installed, as `dpkg-query` reads it.
pub fn dpkg_installed(root: &Path) -> Vec<(String, String, String)> {
    let out = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args([
            "-W",
            "-f",
            "${db:Status-Abbrev} ${Package} ${Version} ${Architecture}\n",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("ii"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].to_string(), f[2].to_string(), f[3].to_string())
        })
        .collect()
}

/// The package URLs dpkg's database in `root` implies for `distro`, each with arch.
pub fn dpkg_purls(root: &Path, distro: &str) -> BTreeSet<String> {
    dpkg_installed(root)
        .into_iter()
        .map(|(name, version, arch)| {
            format!(
                "pkg:deb/debian/{name}@{}?arch={arch}&distro={distro}",
                version.replace(':', "%3A")
            )
        })
        .collect()
}

/// The two documents of one image, parsed, with the checks every SBOM must pass.
pub struct Sboms {
    pub spdx: serde_json::Value,
    pub cyclonedx: serde_json::Value,
}

impl Sboms {
    /// Validates the two files and parses them.
    pub fn read(spdx: &Path, cyclonedx: &Path) -> Sboms {
        validate(spdx, cyclonedx);
        let parse = |p: &Path| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        Sboms {
            spdx: parse(spdx),
            cyclonedx: parse(cyclonedx),
        }
    }

    /// The SPDX packages but the image's root one.
    pub fn spdx_packages(&self) -> Vec<&serde_json::Value> {
        let all = self.spdx["packages"].as_array().unwrap();
        assert_eq!(all[0]["SPDXID"], "SPDXRef-Image", "the root comes first");
        all[1..].iter().collect()
    }

    /// Checks what a scanner needs of every package in both documents against dpkg's
    /// database in `root`: the same purls (arch and distro qualifiers), a licence and a
    /// supplier each; the image as the root. Returns the SPDX packages by name.
    pub fn check_against_dpkg(&self, root: &Path) -> BTreeMap<String, serde_json::Value> {
        let want = dpkg_purls(root, "debian-12");
        assert!(want.len() > 50, "{want:?}");
        let pkgs = self.spdx_packages();
        let spdx: BTreeSet<String> = pkgs
            .iter()
            .map(|p| {
                assert_ne!(p["licenseDeclared"], serde_json::Value::Null, "{p}");
                assert_eq!(p["licenseConcluded"], "NOASSERTION");
                let s = p["supplier"].as_str().unwrap();
                assert!(
                    s.starts_with("Person: ") || s.starts_with("Organization: "),
                    "{p}"
                );
                p["externalRefs"][0]["referenceLocator"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(spdx, want, "SPDX purls against dpkg-query");
        let comps = self.cyclonedx["components"].as_array().unwrap();
        let cdx: BTreeSet<String> = comps
            .iter()
            .map(|c| {
                assert_eq!(c["licenses"].as_array().unwrap().len(), 1, "{c}");
                assert!(c["supplier"]["name"].is_string(), "{c}");
                c["purl"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(cdx, want, "CycloneDX purls against dpkg-query");
        // The image is the root: the document describes it, it contains every package.
        let rels = self.spdx["relationships"].as_array().unwrap();
        let count = |t: &str, from: &str| {
            rels.iter()
                .filter(|r| r["relationshipType"] == t && r["spdxElementId"] == from)
                .count()
        };
        assert_eq!(count("DESCRIBES", "SPDXRef-DOCUMENT"), 1);
        assert_eq!(count("CONTAINS", "SPDXRef-Image"), want.len());
        assert_eq!(
            self.cyclonedx["metadata"]["component"]["type"],
            "operating-system"
        );
        pkgs.into_iter()
            .map(|p| (p["name"].as_str().unwrap().to_string(), p.clone()))
            .collect()
    }

    /// The image's tar.zst digest as each document gives it.
    pub fn tar_digests(&self) -> (serde_json::Value, serde_json::Value) {
        let root = &self.spdx["packages"][0];
        assert_eq!(root["checksums"][0]["algorithm"], "SHA256");
        let c = &self.cyclonedx["metadata"]["component"]["hashes"][0];
        assert_eq!(c["alg"], "SHA-256");
        (
            root["checksums"][0]["checksumValue"].clone(),
            c["content"].clone(),
        )
    }
}

/// The `License:` of the `Files: *` paragraph of a DEP-5 copyright file, read here
/// independently of imager's parser.
pub fn files_star_licence(copyright: &Path) -> Option<String> {
    let text = std::fs::read_to_string(copyright).unwrap();
    let para = text.split("\n\n").find(|p| p.starts_with("Files: *\n"))?;
    para.lines()
        .find_map(|l| l.strip_prefix("License: "))
        .map(|l| l.trim().to_string())
}

/// Each package's declared licence against its copyright file in `root`: a DEP-5 file
/// gives an expression, any other file (or none) NOASSERTION; bash's `Files: *` is
/// GPL-3+, the expression's first term GPL-3.0-or-later; most packages resolve to SPDX
/// ids. `by_name` is [`Sboms::check_against_dpkg`]'s.
pub fn licences_follow_the_copyright_files(
    by_name: &BTreeMap<String, serde_json::Value>,
    root: &Path,
) {
    let mut listed = 0;
    for (name, p) in by_name {
        let declared = p["licenseDeclared"].as_str().unwrap();
        let file = root.join("usr/share/doc").join(name).join("copyright");
        let dep5 = std::fs::read_to_string(&file).is_ok_and(|t| t.starts_with("Format:"));
        assert_eq!(declared != "NOASSERTION", dep5, "{name}: {declared}");
        let first = declared.split(" AND ").next().unwrap();
        if dep5 && !first.starts_with("LicenseRef-") && !first.starts_with('(') {
            listed += 1;
        }
    }
    assert!(listed * 2 > by_name.len(), "{listed} of {}", by_name.len());
    let bash = by_name["bash"]["licenseDeclared"].as_str().unwrap();
    let star = files_star_licence(&root.join("usr/share/doc/bash/copyright"));
    assert_eq!(star.as_deref(), Some("GPL-3+"));
    assert!(bash.starts_with("GPL-3.0-or-later AND "), "{bash}");
}

/// `(name, version, arch) -> sha256` of a lock file's `package` lines.
pub fn locked_debs(lock: &Path) -> BTreeMap<(String, String, String), String> {
    std::fs::read_to_string(lock)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("package "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            ((f[0].into(), f[1].into(), f[2].into()), f[6].into())
        })
        .collect()
}

/// The `arch` qualifier of a package URL.
pub fn purl_arch(purl: &str) -> String {
    let q = purl.split_once('?').unwrap().1;
    q.split('&')
        .find_map(|kv| kv.strip_prefix("arch="))
        .unwrap()
        .to_string()
}
