//! What a push may delete (issue 23): the image owns what it holds; a host path it does
//! not hold goes only when the host's recorded image held it (the syncer put it there)
//! or when it lies under a prefix the image owns (`/usr`, `/etc`, ... by default).
//! Everything else a host made (a PostgreSQL cluster, crontabs, nginx's temp
//! directories, systemd's timer stamps, an operator's file under /srv) survives every
//! push, `syncer diff` lists it apart from drift, and `--max-delete` stops a plan that
//! deletes more than it allows before anything is written. Real binaries on `local:`
//! roots.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Image A's tree: a small system with the directories services write below, an app
/// file under /var/lib/app that only A has, and B: A with a changed config, without
/// A's app file and with a new library.
fn images(dir: &Path, store: &Path) {
    for v in ["a", "b"] {
        let d = dir.join(v);
        mini_root(&d, 1, 1000);
        sh(&format!(
            "set -e; cd '{d}'
             mkdir -p usr/lib etc var/lib/nginx var/lib/systemd var/spool/cron/crontabs var/lib/postgresql srv opt
             chmod 1730 var/spool/cron/crontabs
             printf 'lib a\\n' > usr/lib/liba.so
             printf 'config {v}\\n' > etc/app.conf",
            d = d.display()
        ));
    }
    sh(&format!(
        "set -e; mkdir -p '{a}/var/lib/app' && printf 'from image A\\n' > '{a}/var/lib/app/old-data'
         printf 'lib b\\n' > '{b}/usr/lib/libb.so'",
        a = dir.join("a").display(),
        b = dir.join("b").display()
    ));
    import(store, &dir.join("a"), "a");
    import(store, &dir.join("b"), "b");
}

/// What the host makes once it runs: a database cluster, a user's crontab, nginx's temp
/// directories with a request body in flight, a timer stamp, an operator's file, and
/// one stray file under an owned prefix.
const HOST_MADE: &[&str] = &[
    "var/lib/postgresql/15/main/PG_VERSION",
    "var/lib/postgresql/15/main/base/1/1259",
    "var/lib/postgresql/15/main/pg_wal/000000010000000000000001",
    "var/spool/cron/crontabs/alice",
    "var/lib/nginx/body/0000000001",
    "var/lib/nginx/proxy/.keep",
    "var/lib/systemd/timers/stamp-apt-daily.timer",
    "srv/operator/notes.txt",
    "opt/vendor/bin/tool",
];

fn make_host_state(root: &Path) {
    for (i, p) in HOST_MADE.iter().enumerate() {
        let f = root.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, format!("made on the host {i}\n").repeat(100 * (i + 1))).unwrap();
    }
    sh(&format!(
        "set -e; cd '{}'; chmod 600 var/spool/cron/crontabs/alice; chmod 700 var/lib/postgresql/15/main
         printf 'stray\\n' > usr/lib/stray.so",
        root.display()
    ));
}

/// Every path under `root` with its kind, mode and content hash, but the syncer's own.
fn snapshot(root: &Path, paths: &[&str]) -> BTreeMap<String, String> {
    paths
        .iter()
        .map(|p| {
            let f = root.join(p);
            let m =
                std::fs::symlink_metadata(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            use std::os::unix::fs::PermissionsExt;
            (
                p.to_string(),
                format!("{:o} {}", m.permissions().mode(), file_hash(&f).to_hex()),
            )
        })
        .collect()
}

fn drift(store: &Path, host: &str) -> (bool, String, serde_json::Value) {
    let text = run(store, &["drift", host]);
    let js = run(store, &["drift", host, "--json"]);
    (
        text.status.success() && js.status.success(),
        String::from_utf8_lossy(&text.stdout).into_owned() + &String::from_utf8_lossy(&text.stderr),
        json(&String::from_utf8_lossy(&js.stdout)),
    )
}

fn unmanaged(v: &serde_json::Value) -> Vec<String> {
    v["unmanaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["path"].as_str().unwrap().to_string())
        .collect()
}

/// Images A and B in a new store, and an empty `local:` root pushed to A: the store,
/// the root and its host spec (the directory lives as long as the first value).
fn synced_host(prefix: &str) -> (tempfile::TempDir, PathBuf, PathBuf, String) {
    let t = scratch(prefix);
    let store = t.path().join("store");
    images(t.path(), &store);
    let root = t.path().join("host");
    std::fs::create_dir(&root).unwrap();
    let host = format!("local:{}", root.display());
    push(&store, "a", &host, &[]);
    (t, store, root, host)
}

#[test]
fn a_host_keeps_what_it_made_through_pushes_a_b_a() {
    let (_t, store, root, host) = synced_host("own-aba-");
    make_host_state(&root);
    let before = snapshot(&root, HOST_MADE);

    // The dry run says what goes and why, and what stays.
    let out = run(&store, &["push", "b", &host, "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("*deleting /usr/lib/stray.so (made on the host, under an owned prefix)"),
        "{text}"
    );
    assert!(text.contains("*deleting /var/lib/app/old-data\n"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with(">fc") && l.contains(" /etc/app.conf")),
        "{text}"
    );
    for p in [
        "/var/lib/postgresql/15",
        "/var/spool/cron/crontabs/alice",
        "/var/lib/nginx/body",
        "/var/lib/nginx/proxy",
        "/var/lib/systemd/timers",
        "/srv/operator",
        "/opt/vendor",
    ] {
        assert!(
            text.contains(&format!("*unmanaged {p} (made on the host, kept")),
            "{p}:\n{text}"
        );
    }
    let r = json(&String::from_utf8_lossy(
        &run(&store, &["push", "b", &host, "--dry-run", "--json"]).stdout,
    ))["hosts"][0]
        .clone();
    let deleted: Vec<(String, bool)> = r["paths"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["change"] == "delete")
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_string(),
                p["host_made"] == true,
            )
        })
        .collect();
    assert_eq!(
        deleted,
        [
            ("/usr/lib/stray.so".to_string(), true),
            ("/var/lib/app".to_string(), false),
            ("/var/lib/app/old-data".to_string(), false)
        ]
    );

    // A -> B: what the host made is intact; the stray file under /usr and A's own file
    // are gone.
    let r = push(&store, "b", &host, &[]);
    assert_eq!(r["deleted"], 3, "{r:#}");
    assert_eq!(snapshot(&root, HOST_MADE), before);
    assert!(!root.join("usr/lib/stray.so").exists());
    assert!(!root.join("var/lib/app").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/app.conf")).unwrap(),
        "config b\n"
    );
    // No drift right after a clean push; what the host made is listed apart.
    let (clean, text, v) = drift(&store, &host);
    assert!(clean, "{text}");
    assert!(
        text.contains("made on the host outside the image's owned prefixes"),
        "{text}"
    );
    assert!(!text.contains("drift ("), "{text}");
    assert!(
        unmanaged(&v).contains(&"/var/lib/postgresql/15".to_string()),
        "{v:#}"
    );
    let status = ok(&store, &["status", &host]);
    assert!(
        status.contains("clean;") && status.contains("kept (not drift)"),
        "{status}"
    );

    // B -> A: still intact, and A's file is back.
    push(&store, "a", &host, &[]);
    assert_eq!(snapshot(&root, HOST_MADE), before);
    assert_eq!(
        std::fs::read_to_string(root.join("var/lib/app/old-data")).unwrap(),
        "from image A\n"
    );
    let (clean, text, _) = drift(&store, &host);
    assert!(clean, "{text}");

    // A file the host makes under an owned prefix is drift, and the next push removes it.
    std::fs::write(root.join("etc/stray.conf"), "x\n").unwrap();
    let (clean, text, _) = drift(&store, &host);
    assert!(
        !clean && text.contains("*deleting /etc/stray.conf"),
        "{text}"
    );
    push(&store, "a", &host, &[]);
    assert!(!root.join("etc/stray.conf").exists());
    assert_eq!(snapshot(&root, HOST_MADE), before);
}

#[test]
fn a_host_never_synced_keeps_what_it_made_and_its_dry_run_lists_what_goes() {
    let t = scratch("own-new-");
    let (dir, store) = (t.path(), t.path().join("store"));
    images(dir, &store);
    // A machine installed some other way (a copy of A), never synced, running services.
    let root = dir.join("host");
    copy_tree(&dir.join("a"), &root);
    make_host_state(&root);
    let before = snapshot(&root, HOST_MADE);
    let host = format!("local:{}", root.display());
    let r = json(&String::from_utf8_lossy(
        &run(&store, &["push", "b", &host, "--dry-run", "--json"]).stdout,
    ))["hosts"][0]
        .clone();
    let deleted: Vec<&str> = r["paths"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["change"] == "delete")
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    // Only what lies under an owned prefix: no recorded image says A's file was put
    // there by the syncer.
    assert_eq!(deleted, ["/usr/lib/stray.so"], "{r:#}");
    let kept = unmanaged(&r);
    assert!(kept.contains(&"/var/lib/app".to_string()), "{kept:?}");
    assert!(kept.contains(&"/srv/operator".to_string()), "{kept:?}");
    push(&store, "b", &host, &[]);
    assert_eq!(snapshot(&root, HOST_MADE), before);
    assert!(root.join("var/lib/app/old-data").exists());
    assert!(!root.join("usr/lib/stray.so").exists());
}

#[test]
fn a_plan_that_deletes_more_than_max_delete_writes_nothing() {
    let (_t, store, root, host) = synced_host("own-max-");
    std::fs::create_dir_all(root.join("usr/lib/strays")).unwrap();
    for i in 0..12 {
        std::fs::write(root.join(format!("usr/lib/strays/{i:02}")), "s").unwrap();
    }
    let tree_before = host_tree(&root);
    let record = std::fs::read(root.join("var/lib/syncer/image")).unwrap();
    // 12 strays, their directory and A's two paths: 15 deletes.
    for limit in ["10", "1%"] {
        let out = run(
            &store,
            &["push", "b", &host, "--max-delete", limit, "--json"],
        );
        assert!(!out.status.success());
        let r = json(&String::from_utf8_lossy(&out.stdout))["hosts"][0].clone();
        let e = r["error"].as_str().unwrap();
        assert!(e.contains("the plan deletes 15 paths of the host's"), "{e}");
        assert!(e.contains(&format!("--max-delete {limit}")), "{e}");
        assert!(e.contains("/usr/lib/strays, /usr/lib/strays/00"), "{e}");
        assert_eq!(r["outcome"], "failed before commit", "{r:#}");
        assert_eq!(r["committed"], false);
        assert!(imager::tree::text::differences(&tree_before, &host_tree(&root)).is_empty());
        assert_eq!(
            std::fs::read(root.join("var/lib/syncer/image")).unwrap(),
            record
        );
    }
    // The dry run shows the whole plan and fails as the push would.
    let out = run(
        &store,
        &["push", "b", &host, "--max-delete", "3", "--dry-run"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("*deleting /usr/lib/strays/11"), "{text}");
    assert!(text.contains("more than --max-delete 3 allows"), "{text}");
    // At the limit it goes through.
    push(&store, "b", &host, &["--max-delete", "15"]);
    assert!(!root.join("usr/lib/strays").exists());
}

/// A manifest's `owned` list travels as /usr/lib/imager/owned.txt: a prefix it adds is
/// the image's completely, and one it leaves out is the host's.
#[test]
fn an_images_owned_prefixes_decide_what_the_host_made_that_goes() {
    let t = scratch("own-list-");
    let (dir, store) = (t.path(), t.path().join("store"));
    let tree = dir.join("tree");
    mini_root(&tree, 1, 100);
    sh(&format!(
        "set -e; cd '{}'; mkdir -p usr/lib/imager opt/app opt/other
         printf '# prefixes\\n/opt/app\\n/bin\\n' > usr/lib/imager/owned.txt",
        tree.display()
    ));
    import(&store, &tree, "owns-opt-app");
    let root: PathBuf = dir.join("host");
    std::fs::create_dir(&root).unwrap();
    let host = format!("local:{}", root.display());
    push(&store, "owns-opt-app", &host, &[]);
    for p in ["opt/app/extra", "opt/other/extra", "etc/extra"] {
        std::fs::write(root.join(p), "x").unwrap();
    }
    let (clean, text, _) = drift(&store, &host);
    assert!(!clean, "{text}");
    assert!(text.contains("*deleting /opt/app/extra"), "{text}");
    // /etc is not in this image's list: the host's.
    assert!(text.contains("*unmanaged /etc/extra"), "{text}");
    assert!(text.contains("*unmanaged /opt/other/extra"), "{text}");
    push(&store, "owns-opt-app", &host, &[]);
    assert!(!root.join("opt/app/extra").exists());
    assert!(root.join("opt/other/extra").exists() && root.join("etc/extra").exists());
    let (clean, text, _) = drift(&store, &host);
    assert!(clean, "{text}");
}

/// Triggers' outputs are the host's (never drift); a trigger that needs a running
/// system is skipped on a root none runs; a first install runs none unless asked.
#[test]
fn trigger_outputs_are_no_drift_and_triggers_that_need_a_running_system_are_skipped() {
    let t = scratch("own-trig-");
    let (dir, store) = (t.path(), t.path().join("store"));
    for v in [1u32, 2] {
        let d = dir.join(format!("v{v}"));
        mini_root(&d, v, 100);
        sh(&format!(
            "set -e; cd '{}'; mkdir -p usr/lib/imager; printf 'as built\\n' > etc/app.cache
             cat > usr/lib/imager/triggers.toml <<'EOF'
[[trigger]]
name = \"regen\"
paths = [\"/etc/app.conf\"]
run = \"echo regenerated > /etc/app.cache\"
outputs = [\"/etc/app.cache\"]

[[trigger]]
name = \"reload\"
paths = [\"/etc/app.conf\"]
run = \"systemctl reload app\"
booted = true
EOF",
            d.display()
        ));
        import(&store, &d, &format!("v{v}"));
    }
    let root = dir.join("host");
    std::fs::create_dir(&root).unwrap();
    let host = format!("local:{}", root.display());
    // A first install: no trigger runs, each is reported skipped.
    let r = push(&store, "v1", &host, &[]);
    let why: Vec<&str> = r["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["skipped"].as_str().unwrap())
        .collect();
    assert_eq!(why.len(), 2, "{r:#}");
    assert!(why.iter().all(|w| w.contains("a first install")), "{r:#}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/app.cache")).unwrap(),
        "as built\n"
    );
    // An update: regen runs, reload is skipped (and said so), the push succeeds.
    let out = run(&store, &["push", "v2", &host]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("trigger reload: skipped: it needs a running system"),
        "{text}"
    );
    assert!(text.contains("trigger regen: exit 0"), "{text}");
    assert!(std::fs::read_to_string(root.join("etc/app.cache"))
        .unwrap()
        .starts_with("regenerated"));
    // The output differs from the image's: not drift.
    let (clean, text, _) = drift(&store, &host);
    assert!(clean, "{text}");
    // Asked, a first install runs them.
    let fresh = dir.join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    let r = push(
        &store,
        "v2",
        &format!("local:{}", fresh.display()),
        &["--install-triggers"],
    );
    let regen = r["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "regen")
        .unwrap()
        .clone();
    assert_eq!(regen["status"], 0, "{r:#}");
}
