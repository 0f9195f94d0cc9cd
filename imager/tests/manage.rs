//! `imager list`, `tag`, `rm` and `gc` on a store of imported directories: what list
//! shows, that tag appends to a name's history, that rm refuses what a name or another
//! image's record needs, that gc frees exactly the objects only removed images used, and
//! that a removal killed at any of its stop points leaves a store fsck passes.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;

use common::{s, Env};
use std::process::{Command, Stdio};

/// Writes files (`path`, content) into a new directory `rel` of the test and imports it,
/// named if `name` is given; returns the image ID.
fn import(env: &Env, rel: &str, files: &[(&str, &str)], name: Option<&str>) -> String {
    let dir = env.path(rel);
    for (p, content) in files {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    let mut args = vec!["import", s(&dir)];
    if let Some(n) = name {
        args.extend(["--name", n]);
    }
    env.id(&args)
}

/// Image `a` (named `web`) and unnamed image `b`, which share one object ("shared\n",
/// 7 bytes; `b` holds it twice) and each have their own: `a` one of 7 bytes, `b` two of
/// 7 bytes.
fn two_images(env: &Env) -> (String, String) {
    let a = import(
        env,
        "a",
        &[("x", "only a\n"), ("same", "shared\n")],
        Some("web"),
    );
    let b = [
        ("y", "only b\n"),
        ("z", "also b\n"),
        ("same", "shared\n"),
        ("again", "shared\n"),
    ];
    (a, import(env, "b", &b, None))
}

fn listed(env: &Env) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    v.as_array().unwrap().clone()
}

fn entry<'a>(list: &'a [serde_json::Value], id: &str) -> &'a serde_json::Value {
    list.iter().find(|e| e["id"] == id).unwrap()
}

fn object_count(env: &Env) -> usize {
    walkdir::WalkDir::new(env.store().join("objects"))
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .count()
}

fn fsck_passes(env: &Env) {
    let out = env.ok(&["fsck"]);
    assert!(out.contains(" 0 problems"), "{out}");
}

/// What `imager export --tar` writes for the image, hashed.
fn tar_digest(env: &Env, image: &str) -> String {
    let p = env.path("digest.tar.zst");
    env.ok(&["export", image, "--tar", s(&p)]);
    blake3::hash(&std::fs::read(p).unwrap())
        .to_hex()
        .to_string()
}

/// Records in image `user`'s build record that it needs `needed` (its `--previous`), as
/// `imager build` stores it: an import stores no build record, and a build needs root,
/// mmdebstrap and a mirror.
fn record_previous(env: &Env, user: &str, needed: &str) {
    let info = serde_json::json!({"manifest": "demo", "previous": needed, "overlays": null});
    let p = env
        .store()
        .join("images")
        .join(user)
        .join("build-info.json");
    std::fs::write(p, serde_json::to_vec_pretty(&info).unwrap()).unwrap();
}

#[test]
fn list_shows_ids_names_sizes_and_signatures() {
    let env = Env::new();
    let (a, b) = two_images(&env);
    let key = env.path("release");
    env.ok(&["key", "generate", "--out", s(&key)]);
    env.ok(&["sign", "web", "--key", s(&key)]);

    let text = env.ok(&["list"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("ID ") && lines[0].contains("SIZE") && lines[0].contains("SIGNED")
    );
    let row_a = lines.iter().find(|l| l.starts_with(&a[..12])).unwrap();
    let row_b = lines.iter().find(|l| l.starts_with(&b[..12])).unwrap();
    assert!(!row_a.contains(&a[..13]), "short IDs by default: {text}");
    // Distinct objects: "shared\n" counts once in b.
    assert!(
        row_a.contains("14 B") && row_a.contains(" yes ") && row_a.ends_with("web"),
        "{text}"
    );
    assert!(
        row_b.contains("21 B") && row_b.contains(" no ") && row_b.ends_with('-'),
        "{text}"
    );
    // Aligned: every column starts at the header's offset.
    let at = lines[0].find("SIGNED").unwrap();
    assert!(
        lines.iter().all(|l| l[at..].starts_with(['S', 'y', 'n'])),
        "{text}"
    );
    assert!(env.ok(&["list", "--full"]).contains(&a));

    let list = listed(&env);
    assert_eq!(list.len(), 2);
    let (ja, jb) = (entry(&list, &a), entry(&list, &b));
    assert_eq!(ja["names"], serde_json::json!(["web"]));
    assert_eq!(
        (ja["bytes"].as_u64(), ja["signed"].as_bool()),
        (Some(14), Some(true))
    );
    assert_eq!(
        (jb["bytes"].as_u64(), jb["signed"].as_bool()),
        (Some(21), Some(false))
    );
    assert!(ja["stored"].as_str().unwrap().ends_with('Z'));
    let times: Vec<i64> = list
        .iter()
        .map(|e| e["stored_unix"].as_i64().unwrap())
        .collect();
    assert!(times[0] >= times[1], "newest first: {list:?}");
}

#[test]
fn list_into_a_closed_pipe_ends_quietly() {
    let env = Env::new();
    for i in 0..3 {
        import(&env, &format!("d{i}"), &[("f", &i.to_string())], None);
    }
    for json in [false, true] {
        let mut imager = env.command(&["list"]);
        if json {
            imager.arg("--json");
        }
        // A pipe whose reader is closed before imager starts: its first write fails
        // with EPIPE, whatever the timing.
        let out = Command::new("python3")
            .arg("-c")
            .arg(
                "import os, subprocess, sys\n\
                 r, w = os.pipe()\n\
                 os.close(r)\n\
                 sys.exit(subprocess.run(sys.argv[1:], stdout=w).returncode)",
            )
            .arg(imager.get_program())
            .args(imager.get_args())
            .output()
            .unwrap();
        assert!(out.status.success(), "{:?}", out.status);
        assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    }
}

#[test]
fn tag_points_a_name_and_keeps_its_history() {
    let env = Env::new();
    let a = import(&env, "a", &[("f", "a")], Some("web"));
    let b = import(&env, "b", &[("f", "b")], None);
    let out = env.ok(&["tag", &b[..10], "web"]);
    assert!(out.contains("web -> ") && out.contains("web~1"), "{out}");
    let list = listed(&env);
    assert_eq!(entry(&list, &b)["names"], serde_json::json!(["web"]));
    assert_eq!(entry(&list, &a)["past_names"], serde_json::json!(["web~1"]));
    assert_eq!(env.ok(&["history", "web"]).lines().count(), 2);
    // A name or NAME~N resolves as everywhere else; pointing at the same image again
    // writes nothing.
    env.ok(&["tag", "web~1", "old"]);
    assert!(env.ok(&["tag", &a, "old"]).contains("already points"));
    assert!(env.ok(&["list"]).contains("old,web~1"));
    let e = env.fails(&["tag", "nope", "x"]);
    assert!(e.contains("nope"), "{e}");
    fsck_passes(&env);
}

#[test]
fn rm_refuses_a_named_or_needed_image_and_says_why() {
    let env = Env::new();
    let a = import(&env, "a", &[("f", "a")], Some("web"));
    let b = import(&env, "b", &[("f", "b")], None);
    let c = import(&env, "c", &[("f", "c")], None);
    record_previous(&env, &c, &b);

    let e = env.fails(&["rm", "web"]);
    assert!(
        e.contains(&a) && e.contains("web points at it") && e.contains("nothing removed"),
        "{e}"
    );
    let e = env.fails(&["rm", &b[..12]]);
    assert!(
        e.contains(&b) && e.contains(&format!("image {c} needs it")),
        "{e}"
    );
    // All or nothing: one refusal keeps the other image too.
    let e = env.fails(&["rm", &c, "web"]);
    assert!(e.contains("web"), "{e}");
    assert_eq!(listed(&env).len(), 3);
    // The needer goes with it: allowed.
    let out = env.ok(&["rm", &b, &c]);
    assert!(
        out.contains(&format!("removed image {b}")) && out.contains("imager gc"),
        "{out}"
    );

    let d = import(&env, "d", &[("f", "d")], None);
    let e2 = import(&env, "e", &[("f", "e")], None);
    record_previous(&env, &e2, &d);
    let out = env.ok(&["rm", "--force", &d]);
    assert!(
        out.contains(&format!("warning: image {e2} needed removed image {d}")),
        "{out}"
    );
    let out = env.ok(&["rm", "--force", "web"]);
    assert!(
        out.contains(&format!("removed image {a}")) && out.contains("removed name web"),
        "{out}"
    );
    assert!(!env.store().join("refs/web").exists());
    let e = env.fails(&["show", "web"]);
    assert!(e.contains("no such name"), "{e}");
    fsck_passes(&env);
}

#[test]
fn rm_then_gc_frees_exactly_what_only_the_removed_image_used() {
    let env = Env::new();
    let (a, b) = two_images(&env);
    let before = tar_digest(&env, &a);
    assert_eq!(object_count(&env), 4);

    env.ok(&["rm", &b]);
    assert_eq!(object_count(&env), 4, "rm removes the record only");
    let dry = env.ok(&["gc", "--dry-run"]);
    assert!(
        dry.contains("would remove: 0 images, 2 objects (14 B)"),
        "{dry}"
    );
    assert_eq!(object_count(&env), 4, "--dry-run removes nothing");

    let r: serde_json::Value = serde_json::from_str(&env.ok(&["gc", "--json"])).unwrap();
    assert_eq!(r["objects"]["objects"], 2);
    assert_eq!(r["bytes_freed"], 14);
    assert_eq!(object_count(&env), 2);
    assert_eq!(tar_digest(&env, &a), before);
    fsck_passes(&env);
    // Nothing left to free.
    assert!(env.ok(&["gc"]).contains("removed: 0 images, 0 objects"));
    // A damaged ref stops what would rewrite refs (it might name what goes), not a sweep.
    std::fs::write(env.store().join("refs/broken"), "not an image id\n").unwrap();
    env.ok(&["gc"]);
    let e = env.fails(&["gc", "--keep", "1"]);
    assert!(e.contains("refs/broken:1"), "{e}");
    std::fs::remove_file(env.store().join("refs/broken")).unwrap();

    // rm --gc does both.
    let c = import(&env, "c", &[("z", "only c\n")], None);
    let out = env.ok(&["rm", "--gc", &c]);
    assert!(out.contains("removed: 0 images, 1 objects"), "{out}");
    assert_eq!(object_count(&env), 2);
    fsck_passes(&env);
}

#[test]
fn gc_keep_1_keeps_each_name_current_image_and_what_it_needs() {
    let env = Env::new();
    let v1 = import(&env, "v1", &[("f", "1")], Some("web"));
    let v2 = import(&env, "v2", &[("f", "2")], Some("web"));
    let v3 = import(&env, "v3", &[("f", "3")], Some("web"));
    let unnamed = import(&env, "u", &[("f", "u")], None);
    record_previous(&env, &v3, &v2);

    let dry = env.ok(&["gc", "--keep", "1", "--dry-run"]);
    assert!(
        dry.contains(&format!("would have removed image {v1}")),
        "{dry}"
    );
    assert_eq!(listed(&env).len(), 4);

    let out = env.ok(&["gc", "--keep", "1"]);
    assert!(out.contains(&format!("removed image {v1}")), "{out}");
    assert!(
        out.contains(&format!(
            "kept image {v2}: a kept image's build record needs it"
        )),
        "{out}"
    );
    let ids: Vec<String> = listed(&env)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&v3) && ids.contains(&v2) && ids.contains(&unnamed) && !ids.contains(&v1));
    assert_eq!(env.ok(&["history", "web"]).lines().count(), 2);
    assert!(env.ok(&["show", "web", "--json"]).contains(&v3));
    fsck_passes(&env);

    // Unnamed images go only when asked for.
    env.ok(&["gc", "--unnamed"]);
    assert_eq!(listed(&env).len(), 2);
    fsck_passes(&env);
}

/// Runs imager with `IMAGER_TEST_STOP_AT=at`, waits until it has stopped itself there
/// (state `T`), and kills it as a crash would.
fn killed_at(env: &Env, at: &str, args: &[&str]) {
    let mut child = env
        .command(args)
        .env("IMAGER_TEST_STOP_AT", at)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stat = format!("/proc/{}/stat", child.id());
    loop {
        let st = std::fs::read_to_string(&stat).unwrap();
        if st
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('T'))
        {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "imager {args:?} ended before {at}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_removal_killed_at_any_stop_point_leaves_a_store_fsck_passes() {
    let env = Env::new();
    let (a, b) = two_images(&env);
    let before = tar_digest(&env, &a);

    // Killed with b renamed into tmp/, not yet deleted.
    killed_at(&env, "rm:1", &["rm", &b]);
    assert!(env.store().join("tmp").join(format!("rm-{b}")).exists());
    fsck_passes(&env);
    assert_eq!(listed(&env).len(), 1);

    // Killed after the first of b's two objects went.
    killed_at(&env, "sweep:1", &["gc"]);
    assert!(
        !env.store().join("tmp").join(format!("rm-{b}")).exists(),
        "the open cleared tmp/"
    );
    assert_eq!(object_count(&env), 3);
    fsck_passes(&env);

    assert!(env.ok(&["gc"]).contains("1 objects"));
    assert_eq!(object_count(&env), 2);
    assert_eq!(tar_digest(&env, &a), before);
    fsck_passes(&env);
    // The store still takes writes.
    let c = import(&env, "c", &[("z", "also b\n")], Some("web"));
    assert!(env.ok(&["show", "web", "--json"]).contains(&c));
    fsck_passes(&env);
}
