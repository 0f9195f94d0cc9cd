#![allow(clippy::disallowed_methods)] // tests set up and read files directly

use super::*;

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn extends_adds_lists_and_overrides_scalars() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "base.toml", "name = \"base\"\npackages = [\"openssh-server\", \"gzip\"]\n[source]\nsuite = \"bookworm\"\n[strip]\ndocs = true\nexclude = [\"/usr/share/lintian/*\"]\n[[trigger]]\nname = \"sshd\"\npaths = [\"/etc/ssh/**\"]\nrun = \"true\"\n");
    let app = write(d.path(), "app.toml", "name = \"app\"\nextends = \"base.toml\"\npackages = [\"python3\", \"gzip=1.12-1\"]\n[strip]\nexclude = [\"/usr/share/bug/*\"]\n[[hook]]\nname = \"h\"\nrun = \"true\"\n");
    let m = load(&app).unwrap();
    assert_eq!(m.name, "app");
    assert_eq!(m.source.suite, "bookworm");
    let names: Vec<String> = m.packages.iter().map(|p| p.to_string()).collect();
    assert_eq!(names, ["gzip=1.12-1", "openssh-server", "python3"]);
    assert!(m.strip.docs);
    assert_eq!(
        m.strip.exclude,
        ["/usr/share/lintian/*", "/usr/share/bug/*"]
    );
    assert_eq!(m.triggers.len(), 1);
    assert_eq!(m.hooks.len(), 1);
    assert_eq!(m.files.len(), 2);
    assert!(m.local_state.iter().any(|l| l == "/etc/machine-id"));
}

#[test]
fn errors_name_the_file_line_and_key() {
    let d = tempfile::tempdir().unwrap();
    // (file, body, what the error must say)
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "m.toml",
            "name = \"x\"\n\n[source]\nsuit = \"bookworm\"\n",
            &["m.toml:4:", "suit"],
        ),
        (
            "t.toml",
            "name = \"x\"\npackages = \"gzip\"\n",
            &["t.toml:2:"],
        ),
        (
            "g.toml",
            "name = \"x\"\n[strip]\nexclude = [\"/usr/[share\"]\n",
            &["g.toml:3:", "/usr/[share"],
        ),
        (
            "v.toml",
            "name = \"x\"\n[source]\nmirrors = \"hots\"\n",
            &["v.toml:3:", "hots"],
        ),
        (
            "r.toml",
            "name = \"x\"\n[source]\nvariant = \"tiny\"\n",
            &["r.toml:3:", "tiny"],
        ),
        (
            "l.toml",
            "name = \"x\"\n[[local]]\ndir = \"file:no-such-dir\"\n",
            &["l.toml:3:", "local.dir", "no-such-dir"],
        ),
    ];
    for (file, body, expect) in cases {
        let e = load(&write(d.path(), file, body)).unwrap_err().to_string();
        for x in *expect {
            assert!(e.contains(x), "{file}: {x:?} not in {e}");
        }
    }
}

#[test]
fn a_flattened_manifest_reads_back_the_same() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("ov")).unwrap();
    std::fs::write(d.path().join("ov/f"), "x").unwrap();
    std::fs::create_dir_all(d.path().join("debs")).unwrap();
    write(d.path(), "base.toml", "name = \"base\"\npackages = [\"gzip\"]\nepoch = 5\n[source]\nvariant = \"important\"\nmirrors = [\"http://a/debian\", { url = \"http://b/sec\", suites = [\"bookworm-security\"], components = [\"main\", \"contrib\"] }]\n[strip]\ndocs = true\nlocales = [\"en\"]\nkeep = [\"/usr/share/doc/x/*\"]\n[[trigger]]\nname = \"t\"\npaths = [\"/etc/**\"]\nrun = \"true\"\norder = 3\n");
    let app = write(d.path(), "app.toml", "name = \"app\"\nextends = \"base.toml\"\npackages = [\"jq=1.6-2.1\"]\n[[overlay]]\nsrc = \"ov\"\ndest = \"/opt/ov\"\nowner = 7\nmode = 0o640\n[[hook]]\nname = \"h\"\nrun = \"echo hi\"\ntimeout = 9\n[[local]]\ndir = \"debs\"\n[[local]]\ndir = \"./debs/\"\n");
    let m = load(&app).unwrap();
    let flat = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(flat.path().join("overlays/0")).unwrap();
    std::fs::create_dir_all(flat.path().join("local/0")).unwrap();
    // Named twice, one directory.
    assert_eq!(
        m.local_debs,
        [d.path().canonicalize().unwrap().join("debs")]
    );
    std::fs::write(
        flat.path().join("local-state.txt"),
        m.local_state.join("\n"),
    )
    .unwrap();
    let back = load(&write(flat.path(), "flat.toml", &m.flattened().unwrap())).unwrap();
    assert_eq!(back.settings_text(), m.settings_text());
    assert_eq!(
        back.overlays[0].src,
        flat.path().canonicalize().unwrap().join("overlays/0")
    );
    assert_eq!(
        back.local_debs,
        [flat.path().canonicalize().unwrap().join("local/0")]
    );
}

#[test]
fn first_boot_is_on_unless_a_manifest_or_its_parent_turns_it_off() {
    let d = tempfile::tempdir().unwrap();
    let on = write(d.path(), "on.toml", "name = \"on\"\n");
    assert!(load(&on).unwrap().first_boot);
    assert!(!load(&on)
        .unwrap()
        .flattened()
        .unwrap()
        .contains("first_boot"));
    write(d.path(), "off.toml", "name = \"off\"\nfirst_boot = false\n");
    let child = write(
        d.path(),
        "child.toml",
        "name = \"child\"\nextends = \"off.toml\"\n",
    );
    let m = load(&child).unwrap();
    assert!(!m.first_boot);
    assert!(m.flattened().unwrap().contains("first_boot = false"));
    std::fs::write(d.path().join("local-state.txt"), m.local_state.join("\n")).unwrap();
    let back = write(d.path(), "flat.toml", &m.flattened().unwrap());
    assert!(!load(&back).unwrap().first_boot);
}

#[test]
fn cycles_and_missing_parents_are_errors() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "a.toml", "name = \"a\"\nextends = \"b.toml\"\n");
    let b = write(d.path(), "b.toml", "name = \"b\"\nextends = \"a.toml\"\n");
    let e = load(&b).unwrap_err().to_string();
    assert!(e.contains("cycle") && e.contains("a.toml"), "{e}");
    let c = write(
        d.path(),
        "c.toml",
        "name = \"c\"\n\nextends = \"nope.toml\"\n",
    );
    let e = load(&c).unwrap_err().to_string();
    assert!(e.contains("c.toml:3:") && e.contains("nope.toml"), "{e}");
}

#[test]
fn explicit_mirrors_and_pins() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "m.toml", "name = \"m\"\npackages = [\"libc6=2.36-9+deb12u4\"]\n[source]\nmirrors = [\"http://snapshot.debian.org/archive/debian/20250520T000000Z\", { url = \"http://deb.debian.org/debian-security\", suites = [\"bookworm-security\"] }]\n");
    let m = load(&p).unwrap();
    match &m.source.mirrors {
        Mirrors::List(l) => {
            assert_eq!(l.len(), 2);
            assert_eq!(l[1].suites, ["bookworm-security"]);
        }
        Mirrors::Host => panic!("expected a list"),
    }
    assert_eq!(m.packages[0].version.as_deref(), Some("2.36-9+deb12u4"));
    let bad = write(
        d.path(),
        "b.toml",
        "name = \"m\"\npackages = [\"Bad Name\"]\n",
    );
    assert!(load(&bad).unwrap_err().to_string().contains("b.toml:2:"));
}
