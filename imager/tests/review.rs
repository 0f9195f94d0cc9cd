//! `imager diff` and `imager packages` on the benchmark corpus (two real bookworm roots
//! a security update apart), checked against dpkg's own view of the two trees.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
#[path = "review/browser.rs"]
mod browser;
mod common;

use browser::{dump_dom, file_url, read_dom, screenshot, Dom, Proxy};
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
    let sh = |c: &str| sh_in(&root, c);
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

    // Times read as dates, not epoch numbers.
    assert!(
        j["unowned"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|f| f["what"].as_array().unwrap())
            .all(|w| !w.as_str().unwrap().starts_with("mtime ")
                || w.as_str().unwrap().contains(" UTC -> ")),
        "{j:#}"
    );
    pages_on_a_terminal_only(&env);

    // No dpkg database: no packages but the image's own, and the SPDX document says so
    // validly.
    assert_eq!(env.ok(&["packages", "t"]), "");
    let spdx: serde_json::Value =
        serde_json::from_str(&env.ok(&["packages", "t", "--spdx"])).unwrap();
    assert_eq!(spdx["spdxVersion"], "SPDX-2.3");
    assert_eq!(spdx["packages"].as_array().unwrap().len(), 1);
    assert_eq!(spdx["packages"][0]["SPDXID"], "SPDXRef-Image");
}

/// Runs a shell command in `dir`, which must succeed.
fn sh_in(dir: &Path, c: &str) {
    let st = Command::new("sh")
        .arg("-c")
        .arg(c)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "{c}");
}

/// On a terminal (here `script`'s) the report goes through $PAGER, as git's does;
/// `--no-pager` and a pipe write directly.
fn pages_on_a_terminal_only(env: &Env) {
    let run = |on_tty: bool, extra: &str| {
        let imager = format!(
            "'{}' --store '{}' --quiet diff t~1 t {extra}",
            env!("CARGO_BIN_EXE_imager"),
            env.store().display()
        );
        let mut c = if on_tty {
            let mut c = Command::new("script");
            c.args(["-qec", &imager, "/dev/null"]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &imager]);
            c
        };
        let out = c
            .env("PAGER", "sed s/^/PAGED:/")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{imager}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let paged = run(true, "");
    assert!(
        paged.contains("PAGED:") && paged.contains("/etc/app.conf"),
        "{paged}"
    );
    let direct = run(true, "--no-pager");
    assert!(
        !direct.contains("PAGED:") && direct.contains("/etc/app.conf"),
        "{direct}"
    );
    assert!(!run(false, "").contains("PAGED:"));
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
    // The HTML page of the same run (the renderer diff uses), checked in the browser below.
    let page = artifacts().join("try-package.html");
    let mut args = vec![
        "try-package".to_string(),
        "B".into(),
        "--json".into(),
        "--html".into(),
        page.display().to_string(),
    ];
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
    let proxy = Proxy::start();
    let dom = read_dom(&dump_dom(&env.path("chromium"), &proxy, &file_url(&page)));
    dom_matches_json(&dom, &r, false);
    assert_eq!(proxy.page_requests(), Vec::<String>::new());
}

/// The packages a release adds on top of base in [`a_release_of_eleven_packages_reads_in_sections_that_fit_a_screen`]:
/// ELF binaries and libraries, man pages (gzip), a few configuration files.
const ELEVEN: [&str; 11] = [
    "git", "jq", "htop", "strace", "tcpdump", "rsync", "tmux", "lsof", "file", "bc", "unzip",
];

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

/// Builds `base` and `plus` (base and [`ELEVEN`]) from the repository's manifests.
fn build_base_and_plus(env: &Env) {
    let m = env.path("manifests");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&m)
        .status()
        .unwrap();
    assert!(st.success());
    let _ = std::fs::remove_file(m.join("base.lock"));
    let pkgs: Vec<String> = ELEVEN.iter().map(|p| format!("{p:?}")).collect();
    std::fs::write(
        m.join("plus.toml"),
        format!(
            "name = \"plus\"\nextends = \"base.toml\"\npackages = [{}]\n",
            pkgs.join(", ")
        ),
    )
    .unwrap();
    for f in ["base.toml", "plus.toml"] {
        let f = m.join(f);
        env.ok(&["lock", f.to_str().unwrap()]);
        env.ok(&["build", f.to_str().unwrap()]);
    }
}

/// The `Files of ...` sections of a text report: heading and lines, up to the blank line.
fn sections(text: &str) -> Vec<(String, Vec<&str>)> {
    let mut out: Vec<(String, Vec<&str>)> = Vec::new();
    let mut cur: Option<(String, Vec<&str>)> = None;
    for l in text.lines() {
        if l.starts_with("Files of ") || l == "Files no package owns" {
            out.extend(cur.take());
            cur = Some((l.trim_start_matches("Files of ").to_string(), vec![l]));
        } else if l.is_empty() {
            out.extend(cur.take());
        } else if let Some((_, lines)) = cur.as_mut() {
            lines.push(l);
        }
    }
    out.extend(cur);
    out
}

/// `(added, changed, removed)` of a JSON file list.
fn counts(files: &[serde_json::Value]) -> (u64, u64, u64) {
    let n = |k: &str| files.iter().filter(|f| f["change"] == k).count() as u64;
    (n("added"), n("changed"), n("removed"))
}

/// The issue's release: base against base plus 11 packages, about 50,000 lines in full.
/// `--stat`, the default view, the caps, `--exclude`, `--markdown` and the content views
/// all checked against the JSON report and against binutils and zcat on the same files.
#[test]
fn a_release_of_eleven_packages_reads_in_sections_that_fit_a_screen() {
    let env = Env::new();
    build_base_and_plus(&env);
    let j = json(&env.ok(&["diff", "base", "plus", "--json"]));
    let groups = j["by_package"].as_array().unwrap();
    let files_of = |p: &str| -> Vec<serde_json::Value> {
        groups
            .iter()
            .filter(|g| g["package"] == p)
            .flat_map(|g| g["files"].as_array().unwrap().clone())
            .collect()
    };

    // --stat: a row per package with the JSON's counts; totals equal to the summary.
    let stat = env.ok(&["diff", "base", "plus", "--stat"]);
    for p in ELEVEN {
        let row = stat
            .lines()
            .find(|l| l.starts_with(&format!(" {p} (added ")))
            .unwrap_or_else(|| panic!("no --stat row for {p}:\n{stat}"));
        let n: Vec<u64> = row
            .split_once(") ")
            .unwrap()
            .1
            .split_whitespace()
            .take(3)
            .map(|x| x.parse().unwrap())
            .collect();
        let (a, c, r) = counts(&files_of(p));
        assert!(a > 0, "{p} added no files");
        assert_eq!(n, [a, c, r], "{row}");
    }
    let sj = json(&env.ok(&["diff", "base", "plus", "--stat", "--json"]));
    let s = &j["summary"];
    assert_eq!(sj["total"]["added"], s["files_added"]);
    assert_eq!(sj["total"]["changed"], s["files_changed"]);
    assert_eq!(sj["total"]["removed"], s["files_removed"]);
    assert!(sj["dirs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["name"] == "/usr/bin"));
    let totals = stat.lines().last().unwrap();
    assert!(
        totals.contains(&format!("{} added", s["files_added"])) && totals.contains("packages: "),
        "{totals}"
    );

    // The default view: a section per package that fits a screen, its shown files and
    // its fold line adding up to the JSON's files.
    let text = env.ok(&["diff", "base", "plus"]);
    let full = env.ok(&["diff", "base", "plus", "--full"]);
    assert!(
        full.lines().count() > 5 * text.lines().count(),
        "default {} lines, full {}",
        text.lines().count(),
        full.lines().count()
    );
    let secs = sections(&text);
    for p in ELEVEN {
        assert!(secs.iter().any(|(n, _)| n == p), "no section for {p}");
    }
    let mut folded_any = false;
    for (name, lines) in &secs {
        assert!(
            lines.len() <= 60,
            "{name}: {} lines\n{}",
            lines.len(),
            lines.join("\n")
        );
        if name == "Files no package owns" {
            continue;
        }
        let shown = lines
            .iter()
            .filter(|l| ["  + ", "  ~ ", "  - "].iter().any(|m| l.starts_with(m)))
            .count() as u64;
        let folded: u64 = lines
            .iter()
            .filter_map(|l| l.trim_start().strip_prefix("… "))
            .filter(|l| l.contains(" more files ("))
            .map(|l| l.split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        folded_any |= folded > 0;
        let (a, c, r) = counts(&files_of(name));
        assert_eq!(shown + folded, a + c + r, "{name}:\n{}", lines.join("\n"));
    }
    assert!(folded_any, "nothing was folded:\n{text}");

    // --max-lines: cut there, the last line saying what it left out.
    let capped = env.ok(&["diff", "base", "plus", "--max-lines", "100"]);
    let cl: Vec<&str> = capped.lines().collect();
    assert_eq!(cl.len(), 100);
    assert!(
        cl[99].starts_with("… ") && cl[99].contains("more lines not shown (--max-lines 100)"),
        "{}",
        cl[99]
    );
    assert!(
        cl[99].contains("sections not shown: Files of "),
        "{}",
        cl[99]
    );

    // --exclude: the man pages are gone from the report.
    let man = |v: &serde_json::Value| {
        v["by_package"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["files"].as_array().unwrap())
            .chain(v["unowned"].as_array().unwrap())
            .filter(|f| f["path"].as_str().unwrap().starts_with("/usr/share/man/"))
            .count()
    };
    assert!(man(&j) > 10);
    let ex = json(&env.ok(&[
        "diff",
        "base",
        "plus",
        "--json",
        "--exclude",
        "/usr/share/man/**",
    ]));
    assert_eq!(man(&ex), 0);
    let ex_text = env.ok(&[
        "diff",
        "base",
        "plus",
        "--full",
        "--exclude",
        "/usr/share/man/**",
    ]);
    // (dpkg's file lists still name them, in their diffs.)
    let listed = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("  + /usr/share/man/"))
            .count()
    };
    assert!(
        listed(&full) > 10 && listed(&ex_text) == 0,
        "man pages listed"
    );

    markdown_renders(&env, &text);
    content_views_match_binutils_and_zcat(&env, &j);
}

/// `--markdown` parses as CommonMark with tables: the package table, the diffs in fenced
/// `diff` blocks, every fence closed (each section's heading is a heading, not code).
fn markdown_renders(env: &Env, text: &str) {
    use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Options, Parser, Tag};
    let md = env.ok(&["diff", "base", "plus", "--markdown"]);
    assert!(!md.contains("\\x0a"), "escaped newlines in the Markdown");
    let (mut diff_blocks, mut tables, mut h2) = (0, 0, 0);
    for e in Parser::new_ext(&md, Options::ENABLE_TABLES) {
        match e {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) if &*info == "diff" => {
                diff_blocks += 1
            }
            Event::Start(Tag::Table(_)) => tables += 1,
            Event::Start(Tag::Heading {
                level: HeadingLevel::H2,
                ..
            }) => h2 += 1,
            _ => {}
        }
    }
    assert!(
        diff_blocks > 0 && tables == 1,
        "{diff_blocks} diff blocks, {tables} tables"
    );
    // "## Packages" and one heading per section of the text view.
    assert_eq!(h2, 1 + sections(text).len());
}

/// An ELF library's view names symbols `nm -D` finds in it; a man page's view is the diff
/// of the text `zcat` gives.
fn content_views_match_binutils_and_zcat(env: &Env, j: &serde_json::Value) {
    let all: Vec<&serde_json::Value> = j["by_package"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["files"].as_array().unwrap())
        .collect();
    let object = |f: &serde_json::Value| {
        let h = f["new"]["blake3"].as_str().unwrap();
        env.store().join("objects").join(&h[..2]).join(&h[2..])
    };
    let tool = |cmd: &str, p: &Path| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{cmd} '{}'", p.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let lib = all
        .iter()
        .find(|f| f["path"].as_str().unwrap().contains("/libjq.so.") && f["new"]["kind"] == "file")
        .expect("libjq in the report");
    let view = &lib["view"];
    assert_eq!(view["kind"], "elf", "{lib:#}");
    let defined = tool("nm -D --defined-only", &object(lib));
    assert!(
        defined.lines().any(|l| l.ends_with(" jv_parse")),
        "{defined}"
    );
    let syms = view["elf"]["symbols"].as_array().unwrap();
    assert!(
        syms.iter()
            .any(|s| s["name"] == "jv_parse" && s["old"].is_null() && s["new"].as_u64() > Some(0)),
        "{view:#}"
    );
    assert!(view["elf"]["sections"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == ".text"));
    let full = env.ok(&["diff", "base", "plus", "--full", "--package", "libjq1"]);
    assert!(full.contains("+ sym jv_parse ("), "{full}");

    let page = all
        .iter()
        .find(|f| f["path"] == "/usr/share/man/man1/jq.1.gz")
        .expect("jq's man page in the report");
    assert_eq!(page["view"]["kind"], "gzip", "{page:#}");
    let d = page["view"]["diff"].as_str().unwrap();
    let text = tool("zcat", &object(page));
    let first = text.lines().find(|l| !l.is_empty()).unwrap();
    assert!(
        d.contains(&format!("\n+{first}\n")),
        "{first:?} not in\n{d}"
    );
    assert_eq!(
        d.lines()
            .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
            .count(),
        text.lines().count()
    );
}

/// Where the HTML tests keep their pages and screenshots, to look at after a run.
fn artifacts() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("html-report");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The files of a JSON report's section: the unowned files for `""`, else a package's.
fn json_files<'a>(j: &'a serde_json::Value, package: &str) -> Vec<&'a serde_json::Value> {
    if package.is_empty() {
        return j["unowned"].as_array().unwrap().iter().collect();
    }
    j["by_package"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["package"] == package)
        .flat_map(|g| g["files"].as_array().unwrap())
        .collect()
}

/// The page's DOM against the JSON of the same report: one table row per package with
/// its change; one section per package with files or changelog entries (the unowned
/// first), each counting the JSON's files, shown plus folded (`full`: all shown, with the
/// JSON's paths and changes); the summary's numbers; no filter applied.
fn dom_matches_json(dom: &Dom, j: &serde_json::Value, full: bool) {
    let rows: Vec<(String, String)> = j["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["change"].as_str().unwrap().into(),
            )
        })
        .collect();
    let got: Vec<(String, String)> = dom
        .rows
        .iter()
        .map(|(n, k, _)| (n.clone(), k.clone()))
        .collect();
    assert_eq!(got, rows, "package rows");
    for (k, v) in [
        ("files-added", "files_added"),
        ("files-changed", "files_changed"),
        ("files-removed", "files_removed"),
        ("packages-upgraded", "packages_upgraded"),
    ] {
        assert_eq!(
            dom.summary[&format!("data-{k}")],
            j["summary"][v].to_string(),
            "{k}"
        );
    }
    let mut want: Vec<String> = j["by_package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["package"].as_str().unwrap().to_string())
        .collect();
    want.extend(
        j["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| !p["changelog"].as_array().unwrap().is_empty())
            .map(|p| p["name"].as_str().unwrap().to_string()),
    );
    want.sort();
    want.dedup();
    if !j["unowned"].as_array().unwrap().is_empty() {
        want.insert(0, String::new());
    }
    let names: Vec<String> = dom.sections.iter().map(|s| s.package.clone()).collect();
    assert_eq!(names, want, "sections");
    let first = want
        .first()
        .map(|w| if w.is_empty() { "unowned" } else { "package" });
    assert_eq!(dom.sections.first().map(|s| s.kind.as_str()), first);
    for s in &dom.sections {
        let files = json_files(j, &s.package);
        assert!(
            !s.hidden && s.files.iter().all(|f| !f.2),
            "{} hidden",
            s.package
        );
        assert_eq!(s.total, files.len() as u64, "{}: data-total", s.package);
        assert_eq!(
            s.files.len() as u64 + s.folded,
            s.total,
            "{}: shown + folded",
            s.package
        );
        if full {
            assert_eq!(s.folded, 0, "{}", s.package);
            let mut a: Vec<(String, String)> = s
                .files
                .iter()
                .map(|(p, c, _)| (p.clone(), c.clone()))
                .collect();
            let mut b: Vec<(String, String)> = files
                .iter()
                .map(|f| {
                    (
                        f["path"].as_str().unwrap().into(),
                        f["change"].as_str().unwrap().into(),
                    )
                })
                .collect();
            a.sort();
            b.sort();
            assert_eq!(a, b, "{}: files", s.package);
        }
    }
    assert_eq!(dom.scripts, 1, "one script: the page's own");
}

/// The search box's filter, applied by the page's script to `#q=TEXT`: a section shows
/// when its package's name holds the text (all its files), else the files whose path
/// holds it; the table keeps the rows whose package or source holds it.
fn search_filters(dom: &Dom, j: &serde_json::Value, q: &str) {
    let has = |s: &str| s.to_lowercase().contains(&q.to_lowercase());
    let (mut shown, mut hidden) = (0, 0);
    for s in &dom.sections {
        let by_name = !s.package.is_empty() && has(&s.package);
        let want_files: Vec<&str> = json_files(j, &s.package)
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .filter(|p| by_name || has(p))
            .collect();
        let got_files: Vec<&str> = s
            .files
            .iter()
            .filter(|f| !f.2)
            .map(|f| f.0.as_str())
            .collect();
        assert_eq!(got_files, want_files, "{q:?} in {:?}", s.package);
        assert_eq!(
            s.hidden,
            !by_name && want_files.is_empty(),
            "{q:?}: section {:?}",
            s.package
        );
        if s.hidden {
            hidden += 1
        } else {
            shown += 1
        }
    }
    assert!(
        shown > 0 && hidden > 0,
        "{q:?}: {shown} sections shown, {hidden} hidden"
    );
    for p in j["packages"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let row = dom.rows.iter().find(|r| r.0 == name).unwrap();
        assert_eq!(
            row.2,
            !has(name) && !has(p["source"].as_str().unwrap()),
            "row {name}"
        );
    }
}

/// No `src`, `href`, `action` or CSS `url()` reaches outside the page; its policy allows
/// nothing but its own inline style and script.
fn self_contained(html: &str) {
    for t in browser::tags(html) {
        for a in [
            "src",
            "href",
            "action",
            "data",
            "poster",
            "srcset",
            "xlink:href",
        ] {
            if let Some(v) = t.get(a) {
                assert!(
                    v.starts_with('#') || v.starts_with("data:"),
                    "<{} {a}={v:?}>",
                    t.name
                );
            }
        }
        assert!(t.name != "link" || t.get("rel") == Some("icon"), "{t:?}");
    }
    assert!(!html.contains("url("), "a CSS url()");
    assert!(!html.contains("@import"));
    assert!(
        html.contains("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none';")
    );
}

/// The issue's test of the HTML report, on the corpus pair: opened in headless Chromium
/// (screenshot kept under CARGO_TARGET_TMPDIR/html-report), the DOM after the script ran
/// counts what `--json` counts (folded and `--full`), the search box filters, the same
/// images give the same bytes, and the browser tried no connection at all (a proxy that
/// sees a control page's one external image saw none of the report's).
#[test]
fn html_report_of_the_corpus_pair_in_headless_chromium() {
    browser::chromium();
    let c = corpus();
    let env = Env::new();
    env.ok(&["import", c.join("A").to_str().unwrap(), "--name", "A"]);
    env.ok(&["import", c.join("B").to_str().unwrap(), "--name", "B"]);
    let j = json(&env.ok(&["diff", "A", "B", "--json"]));
    let out = artifacts();
    let (page, full, again) = (
        out.join("corpus.html"),
        out.join("corpus-full.html"),
        env.path("again.html"),
    );
    assert_eq!(
        env.ok(&["diff", "A", "B", "--html", page.to_str().unwrap()]),
        ""
    );
    // --html with --json: the page and the same JSON from one run.
    let j_full = json(&env.ok(&[
        "diff",
        "A",
        "B",
        "--full",
        "--json",
        "--html",
        full.to_str().unwrap(),
    ]));
    assert_eq!(j_full, j);
    env.ok(&["diff", "A", "B", "--html", again.to_str().unwrap()]);
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(
        html,
        std::fs::read_to_string(&again).unwrap(),
        "not deterministic"
    );
    self_contained(&html);
    self_contained(&std::fs::read_to_string(&full).unwrap());

    let proxy = Proxy::start();
    let work = env.path("chromium");
    screenshot(&work, &proxy, &file_url(&page), &out.join("corpus.png"));
    dom_matches_json(
        &read_dom(&dump_dom(&work, &proxy, &file_url(&page))),
        &j,
        false,
    );
    let dom_full = read_dom(&dump_dom(&work, &proxy, &file_url(&full)));
    dom_matches_json(&dom_full, &j, true);
    // Search for the first upgraded package with files: its section, and the unowned
    // dpkg files that name it.
    let upgraded: Vec<&str> = j["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let q = j["by_package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["package"].as_str().unwrap())
        .find(|p| upgraded.contains(p))
        .unwrap();
    let searched = read_dom(&dump_dom(
        &work,
        &proxy,
        &format!("{}#q={q}", file_url(&full)),
    ));
    search_filters(&searched, &j, q);
    assert_eq!(
        proxy.page_requests(),
        Vec::<String>::new(),
        "the report made network requests"
    );

    // The proxy does see what a page fetches.
    let control = env.path("control.html");
    std::fs::write(
        &control,
        "<p>control</p><img src=\"http://imager-test.invalid/x.png\">",
    )
    .unwrap();
    dump_dom(&work, &proxy, &file_url(&control));
    let seen = proxy.page_requests();
    assert!(
        !seen.is_empty() && seen.iter().all(|h| h == "imager-test.invalid"),
        "the control page's request, seen by the proxy: {seen:?}"
    );
}

/// Paths that are HTML (a `<script>` element, an `<img onerror>`, a quote that would end
/// an attribute) and a diff of HTML lines show as text: the browser's DOM has the page's
/// one script, no attribute the names try to add, and every path exactly as `--json`
/// gives it.
#[test]
fn html_report_shows_hostile_names_as_text() {
    browser::chromium();
    let env = Env::new();
    let root = env.path("t");
    let sh = |c: &str| sh_in(&root, c);
    std::fs::create_dir_all(root.join("etc")).unwrap();
    sh("printf '<p>old</p>\\n' > etc/page.html");
    env.ok(&["import", root.to_str().unwrap(), "--name", "t"]);
    sh(
        r#"mkdir -p 'opt/<script>document.body.dataset.pwned=1<' && touch 'opt/<script>document.body.dataset.pwned=1</script>' \
        && touch 'opt/<img src=x onerror=document.body.dataset.pwned=2>' 'opt/a" data-pwned="3' "opt/b' data-pwned='4" \
        && printf '<script>document.body.dataset.pwned=5</script>\n' > etc/page.html"#,
    );
    env.ok(&["import", root.to_str().unwrap(), "--name", "t"]);
    let j = json(&env.ok(&["diff", "t~1", "t", "--json"]));
    let page = artifacts().join("hostile.html");
    env.ok(&["diff", "t~1", "t", "--html", page.to_str().unwrap()]);
    let html = std::fs::read_to_string(&page).unwrap();
    self_contained(&html);
    let proxy = Proxy::start();
    let work = env.path("chromium");
    screenshot(
        &work,
        &proxy,
        &file_url(&page),
        &artifacts().join("hostile.png"),
    );
    let dump = dump_dom(&work, &proxy, &file_url(&page));
    let dom = read_dom(&dump);
    dom_matches_json(&dom, &j, true);
    assert!(
        dom.all
            .iter()
            .all(|t| !t.attrs.contains_key("data-pwned") && t.name != "img"),
        "{dump}"
    );
    let paths: Vec<&str> = dom.sections[0].files.iter().map(|f| f.0.as_str()).collect();
    assert!(
        paths.contains(&"/opt/<script>document.body.dataset.pwned=1</script>"),
        "{paths:?}"
    );
    assert!(paths.contains(&"/opt/a\"\\x20data-pwned=\"3"), "{paths:?}");
    // The diff's HTML line is text in the new side's cell.
    assert!(
        dump.contains("&lt;script&gt;document.body.dataset.pwned=5&lt;/script&gt;"),
        "{dump}"
    );
    assert_eq!(proxy.page_requests(), Vec::<String>::new());
}
