//! The formats other tools consume, checked with those tools: an ext4 filesystem image
//! (e2fsck, a loop mount), an OCI image layout (skopeo, through a docker-registry the
//! test starts on 127.0.0.1) and a CycloneDX SBOM beside the SPDX one. Each export is
//! made twice and must be byte-identical; what the tools read back must be the image
//! (its ID, which covers owners, modes, xattrs, devices and hard links). Needs root and
//! the Debian packages e2fsprogs, skopeo and docker-registry (the README's set-up).

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;
use common::{need, s, sample_tree, sh, Env};
use imager::progress::Quiet;
use imager::store::{Access, Store};
use imager::Hash;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The sample tree imported into the env's store: (store path, ID).
fn sample_image(env: &Env) -> Hash {
    sample_tree(&env.path("src"));
    // The root owned by someone else too: root_owner must follow the image.
    // mke2fs makes the root itself: its owner, mode, mtime and xattrs must follow the image.
    sh(
        "chown 123:456 src && chmod 0750 src && setfattr -n user.root -v r src && touch -d @1400000000 src",
        env.dir.path(),
    );
    let id = env.id(&["import", s(&env.path("src")), "--name", "t"]);
    Hash::from_hex(&id).unwrap()
}

/// The env's store, read-only: drop it before running the binary on it (an import waits
/// for a reader's lock).
fn store(env: &Env) -> Store {
    Store::open(&env.store(), Access::Read).unwrap()
}

/// A read-only loop mount, unmounted when dropped (also when the test fails).
struct LoopMount(PathBuf);

impl LoopMount {
    fn new(img: &Path, at: &Path) -> LoopMount {
        std::fs::create_dir_all(at).unwrap();
        sh(
            &format!("mount -o loop,ro {} {}", s(img), s(at)),
            Path::new("/"),
        );
        LoopMount(at.to_path_buf())
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_image_is_byte_identical_and_mounts_as_exactly_the_image() {
    need("mke2fs", "e2fsprogs");
    let env = Env::new();
    let id = sample_image(&env);
    let st = store(&env);
    let (a, b) = (env.path("a.img"), env.path("b.img"));
    let first = imager::export_disk(&st, &id, &a, &Quiet).unwrap();
    imager::export_disk(&st, &id, &b, &Quiet).unwrap();
    drop(st); // the imports below lock the store
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "two disk exports differ"
    );
    // Nothing but the two images is left beside them.
    let mut names: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".img") || n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(names, ["a.img", "b.img"]);

    sh(&format!("fsck.ext4 -fn {}", s(&a)), Path::new("/"));
    let uuid = sh(&format!("blkid -o value -s UUID {}", s(&a)), Path::new("/"));
    assert_eq!(String::from_utf8_lossy(&uuid.stdout).trim(), first.uuid);

    let mnt = env.path("mnt");
    let m = LoopMount::new(&a, &mnt);
    // Every change and access time is the image's epoch, not the time of the export
    // (two exports in one second would not show it).
    for t in ["%C@", "%A@"] {
        let times = sh(&format!("find . -printf '{t}\\n' | sort -u"), &m.0);
        assert_eq!(
            String::from_utf8_lossy(&times.stdout).trim(),
            format!("{}.0000000000", first.epoch),
            "{t}"
        );
    }
    // Read back with imager's own directory import: the same image, lost+found aside.
    let back = env.id(&[
        "import",
        s(&mnt),
        "--exclude",
        "/lost+found",
        "--name",
        "back",
    ]);
    if back != id.to_hex() {
        let old = env.ok(&["show", "t", "--manifest"]);
        let new = env.ok(&["show", "back", "--manifest"]);
        let diff: Vec<String> = similar::TextDiff::from_lines(&old, &new)
            .unified_diff()
            .to_string()
            .lines()
            .take(60)
            .map(String::from)
            .collect();
        panic!(
            "the mounted filesystem is not the image:\n{}",
            diff.join("\n")
        );
    }
    let caps = sh("getcap a/hl", &m.0);
    assert!(String::from_utf8_lossy(&caps.stdout).contains("cap_net_raw=ep"));
}

#[test]
fn disk_export_into_a_missing_directory_fails_with_the_path_and_leaves_nothing() {
    let env = Env::new();
    let id = sample_image(&env);
    let dest = env.path("nope/x.img");
    let err = imager::export_disk(&store(&env), &id, &dest, &Quiet)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
    assert!(!env.path("nope").exists());
}

/// docker-registry serving from a temporary directory on a free port of 127.0.0.1,
/// killed when dropped (also when the test fails).
struct Registry {
    child: Child,
    port: u16,
}

impl Registry {
    fn start(env: &Env) -> Registry {
        need("docker-registry", "docker-registry");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = env.path("registry.yml");
        std::fs::write(
            &conf,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                s(&env.path("registry"))
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut r = Registry { child, port };
        // Ready when it accepts connections, however long a loaded machine takes; a
        // registry that exits is a failure.
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return r;
            }
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!("docker-registry exited: {status}");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn skopeo(args: &[&str]) -> String {
    need("skopeo", "skopeo");
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every file below `dir` with its bytes, by relative path.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
            (rel, std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

fn json_file(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn oci_layout_is_identical_on_every_export_and_goes_through_a_registry() {
    let env = Env::new();
    let id = sample_image(&env);
    let st = store(&env);
    let (one, two) = (env.path("one"), env.path("two"));
    let e1 = imager::export_oci(&st, &id, &one, "v1", &Quiet).unwrap();
    std::fs::create_dir(&two).unwrap(); // an empty directory is fine too
    let e2 = imager::export_oci(&st, &id, &two, "v1", &Quiet).unwrap();
    assert_eq!(e1.manifest, e2.manifest);
    assert!(files(&one) == files(&two), "two OCI exports differ");
    assert!(imager::export_oci(&st, &id, &one, "v1", &Quiet)
        .unwrap_err()
        .to_string()
        .contains("not empty"));
    drop(st);

    // The layer is the deterministic tar: its diff_id is the tar export's SHA-256.
    env.ok(&["export", "t", "--tar", s(&env.path("t.tar.zst"))]);
    let tar = sh("zstd -qdc t.tar.zst | sha256sum", env.dir.path());
    let tar = String::from_utf8_lossy(&tar.stdout);
    assert_eq!(e1.diff_id, format!("sha256:{}", &tar[..64]));

    let local = skopeo(&["inspect", &format!("oci:{}:v1", s(&one))]);
    let local: serde_json::Value = serde_json::from_str(&local).unwrap();
    assert_eq!(local["Labels"]["io.imager.image-id"], id.to_hex());
    assert_eq!(local["Layers"][0], e1.layer);

    let reg = Registry::start(&env);
    let remote = format!("docker://127.0.0.1:{}/imager/t:v1", reg.port);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", s(&one)),
        &remote,
    ]);
    let inspected = skopeo(&["inspect", "--tls-verify=false", &remote]);
    let inspected: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(inspected["Digest"], e1.manifest, "{inspected}");
    assert_eq!(inspected["Labels"]["io.imager.image-id"], id.to_hex());
    assert_eq!(inspected["Os"], "linux");
    let pulled = env.path("pulled");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &remote,
        &format!("oci:{}:back", s(&pulled)),
    ]);

    // The pulled layout's layer, imported, is the image.
    let index = json_file(&pulled.join("index.json"));
    let manifest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(manifest, e1.manifest);
    let blob = |d: &str| {
        pulled
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest = json_file(&blob(&manifest));
    assert_eq!(manifest["annotations"]["io.imager.image-id"], id.to_hex());
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(
        env.id(&["import", s(&blob(layer))]),
        id.to_hex(),
        "the pulled layer is not the image"
    );
    let config = json_file(&blob(manifest["config"]["digest"].as_str().unwrap()));
    assert_eq!(config["rootfs"]["diff_ids"][0], e1.diff_id);
}

/// An image with a dpkg status of three packages: an epoch in a version, a multi-arch
/// library installed for two architectures, and one not installed.
fn image_with_packages(env: &Env) -> Hash {
    let root = env.path("pk");
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    let status = "Package: libc6\nStatus: install ok installed\nMaintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>\nArchitecture: amd64\nMulti-Arch: same\nVersion: 2.36-9+deb12u4\nSource: glibc\n\n\
Package: libc6\nStatus: install ok installed\nArchitecture: i386\nMulti-Arch: same\nVersion: 2.36-9+deb12u4\nSource: glibc\n\n\
Package: perl-base\nStatus: install ok installed\nMaintainer: Niko Tyni <ntyni@debian.org>\nArchitecture: amd64\nVersion: 1:5.36.0-7\nSource: perl (5.36.0-7)\n\n\
Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0\n";
    std::fs::write(root.join("var/lib/dpkg/status"), status).unwrap();
    // The release through Debian's symlink; one DEP-5 copyright file, one in prose.
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("usr/lib/os-release"),
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nID=debian\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
    for (pkg, text) in [
        ("perl-base", "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: Larry Wall\nLicense: GPL-1+ or Artistic\n"),
        ("libc6", "This is the Debian prepackaged version of the GNU C Library.\n"),
    ] {
        std::fs::create_dir_all(root.join("usr/share/doc").join(pkg)).unwrap();
        std::fs::write(root.join("usr/share/doc").join(pkg).join("copyright"), text).unwrap();
    }
    sh("find . -exec touch -h -d @1700000000 {} +", &root);
    Hash::from_hex(&env.id(&["import", s(&root)])).unwrap()
}

#[test]
fn cyclonedx_is_deterministic_and_lists_what_spdx_lists() {
    use imager::sbom;
    let env = Env::new();
    let id = image_with_packages(&env);
    let st = store(&env);
    let pkgs = sbom::list(&st, &id).unwrap();
    // Imported, not built: nothing recorded.
    let records = sbom::records(&st, &id).unwrap();
    assert!(!records.locked && records.tar_sha256.is_none());
    let doc = sbom::cyclonedx(&st, &id, &pkgs, &records).unwrap();
    let again = sbom::cyclonedx(&st, &id, &sbom::list(&st, &id).unwrap(), &records).unwrap();
    assert_eq!(
        serde_json::to_vec_pretty(&doc).unwrap(),
        serde_json::to_vec_pretty(&again).unwrap()
    );
    assert_eq!(doc["bomFormat"], "CycloneDX");
    assert_eq!(doc["specVersion"], "1.5");
    assert_eq!(doc["version"], 1);
    let serial = doc["serialNumber"].as_str().unwrap();
    let uuid = serial.strip_prefix("urn:uuid:").unwrap();
    assert!(
        uuid.len() == 36 && &uuid[14..15] == "5" && "89ab".contains(&uuid[19..20]),
        "{serial}"
    );
    let spdx = sbom::spdx(&st, &id, &pkgs, &records).unwrap();
    assert_eq!(
        doc["metadata"]["timestamp"],
        spdx["creationInfo"]["created"]
    );
    assert_eq!(doc["metadata"]["timestamp"], "2023-11-14T22:13:20Z");
    assert_eq!(doc["metadata"]["component"]["version"], id.to_hex());

    let purls = |v: &serde_json::Value, list: &str, key: &dyn Fn(&serde_json::Value) -> String| {
        let mut p: Vec<String> = v[list].as_array().unwrap().iter().map(key).collect();
        p.sort();
        p
    };
    let cdx = purls(&doc, "components", &|c| {
        c["purl"].as_str().unwrap().to_string()
    });
    let spdx_root = spdx["packages"][0].clone();
    assert_eq!(spdx_root["SPDXID"], "SPDXRef-Image");
    assert_eq!(spdx_root["versionInfo"], id.to_hex());
    let mut spdx = spdx;
    spdx["packages"].as_array_mut().unwrap().remove(0);
    let sp = purls(&spdx, "packages", &|p| {
        p["externalRefs"][0]["referenceLocator"]
            .as_str()
            .unwrap()
            .to_string()
    });
    assert_eq!(cdx, sp);
    assert_eq!(
        cdx,
        [
            "pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64&distro=debian-12",
            "pkg:deb/debian/libc6@2.36-9+deb12u4?arch=i386&distro=debian-12",
            "pkg:deb/debian/perl-base@1%3A5.36.0-7?arch=amd64&distro=debian-12",
        ]
    );
    let perl = doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "perl-base")
        .unwrap();
    assert_eq!(perl["version"], "1:5.36.0-7");
    assert_eq!(perl["properties"][1]["value"], "perl");
    // Licences from the copyright files: DEP-5 as an expression, prose as no assertion.
    let expr = "GPL-1.0-or-later OR Artistic-1.0-Perl";
    assert_eq!(perl["licenses"][0]["expression"], expr);
    assert_eq!(perl["supplier"]["name"], "Niko Tyni");
    let spdx_pkg = |name: &str| {
        spdx["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(spdx_pkg("perl-base")["licenseDeclared"], expr);
    assert_eq!(
        spdx_pkg("perl-base")["supplier"],
        "Person: Niko Tyni (ntyni@debian.org)"
    );
    assert_eq!(spdx_pkg("libc6")["licenseDeclared"], "NOASSERTION");
    assert_eq!(
        spdx_pkg("libc6")["supplier"],
        "Organization: GNU Libc Maintainers (debian-glibc@lists.debian.org)"
    );
    let libc = &doc["components"][0];
    assert_eq!(libc["licenses"][0]["license"]["name"], "NOASSERTION");
    // No lock: no checksums anywhere, a note instead.
    assert!(doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["hashes"].is_null()));
    assert!(spdx_pkg("libc6")["comment"]
        .as_str()
        .unwrap()
        .contains("not built from a lock"));
    assert_eq!(
        doc["dependencies"][0]["dependsOn"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}
