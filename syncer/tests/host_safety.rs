//! The host side on messy, real hosts: a bind mount of the root's own filesystem, a file
//! hard-linked from outside the root, symlinked /home, /var/log and /etc/ssh, too few
//! free inodes, and a commit blocked after its commit point. Each case once changed
//! something outside the root, lost the host's own data or left the host refusing every
//! session.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;

use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A small root: an app config, an app directory with data, /srv, /home, /root, /var/log.
fn small_tree(dir: &Path, v: u32) {
    let d = dir.display();
    sh(&format!(
        "set -e; mkdir -p '{d}'; cd '{d}'
         mkdir -p etc/ssh usr/lib/app srv/data/sub home root var/log var/lib
         printf 'conf\\n' > etc/app.conf && chmod 644 etc/app.conf
         printf 'motd {v}\\n' > etc/motd
         printf 'Port 22\\n' > etc/ssh/sshd_config
         printf 'data {v}\\n' > usr/lib/app/data
         printf 'image x {v}\\n' > srv/data/x && printf 'y\\n' > srv/data/sub/y
         touch -d @1700000000 etc etc/* usr/lib/app usr/lib/app/data srv srv/data srv/data/x"
    ));
}

struct Fx {
    _t: tempfile::TempDir,
    dir: PathBuf,
    store: PathBuf,
}

impl Fx {
    fn new(prefix: &str) -> Fx {
        let t = scratch(prefix);
        let dir = t.path().to_path_buf();
        let store = dir.join("store");
        for v in [1, 2] {
            small_tree(&dir.join(format!("v{v}")), v);
            import(&store, &dir.join(format!("v{v}")), &format!("v{v}"));
        }
        Fx { _t: t, dir, store }
    }

    /// A new image named `name`: v1 changed by the shell commands `change`.
    fn variant(&self, name: &str, change: &str) -> imager::Hash {
        let v = self.dir.join(name);
        copy_tree(&self.dir.join("v1"), &v);
        sh(&format!("set -e; cd '{}'; {change}", v.display()));
        import(&self.store, &v, name)
    }

    fn id(&self, name: &str) -> imager::Hash {
        id(&self.store, name)
    }

    /// A host at v1 (pushed there), as `local:` spec.
    fn host(&self, name: &str) -> (PathBuf, String) {
        let h = self.dir.join(name);
        std::fs::create_dir_all(&h).unwrap();
        let hs = format!("local:{}", h.display());
        let r = push(&self.store, "v1", &hs, &[]);
        // The syncer's own state directory is no deletion (it stays).
        assert_eq!(r["deleted"], 0, "{r:#}");
        (h, hs)
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn status(store: &Path, hs: &str) -> serde_json::Value {
    let out = run(store, &["status", hs, "--json"]);
    json(&String::from_utf8_lossy(&out.stdout))[0].clone()
}

fn kept(r: &serde_json::Value) -> Vec<(String, String)> {
    r["kept"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|k| {
                    (
                        k["path"].as_str().unwrap().to_string(),
                        k["why"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_bind_mount_of_the_roots_own_filesystem_is_never_entered_and_is_reported() {
    let f = Fx::new("safety-bind-");
    let (h, hs) = f.host("host");
    // The bind sources are on the same filesystem as the host root (same st_dev), and
    // differ from the image: other content, mode and owner, an extra file.
    let out = f.dir.join("outside");
    sh(&format!(
        "set -e; mkdir -p '{o}/data/sub'; cd '{o}'
         printf 'outside x\\n' > data/x && chmod 600 data/x && chown 1000:1000 data/x
         printf 'keep me\\n' > data/z && printf 'other y\\n' > data/sub/y
         printf 'outside motd\\n' > motd && chmod 600 motd",
        o = out.display()
    ));
    let before = host_listing(&out);
    let _m1 = Mount::bind(&out.join("data"), &h.join("srv/data"));
    let _m2 = Mount::bind(&out.join("motd"), &h.join("etc/motd"));

    let r = push(&f.store, "v2", &hs, &[]);
    assert_eq!(
        kept(&r),
        [
            ("/etc/motd".to_string(), "mount".to_string()),
            ("/srv/data".to_string(), "mount".to_string())
        ],
        "{r:#}"
    );
    assert_eq!(
        host_listing(&out),
        before,
        "the push wrote outside the root"
    );
    // Everything else arrived.
    assert_eq!(
        std::fs::read_to_string(h.join("usr/lib/app/data")).unwrap(),
        "data 2\n"
    );
    let st = status(&f.store, &hs);
    assert_eq!(st["drifted"], false, "{st:#}");
    assert_eq!(kept(&st).len(), 2, "{st:#}");
    // The text report names them too.
    let text = ok(&f.store, &["push", "v1", &hs]);
    assert!(
        text.contains("left alone: /srv/data (mount point)"),
        "{text}"
    );
    assert_eq!(
        host_listing(&out),
        before,
        "the push wrote outside the root"
    );
}

/// Path, mode, owner and content of everything below `dir`.
fn host_listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            let content = if m.is_file() {
                std::fs::read_to_string(e.path()).unwrap()
            } else {
                String::new()
            };
            format!(
                "{} {:o} {}:{} {content:?}",
                e.path().display(),
                m.mode(),
                m.uid(),
                m.gid()
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_file_hard_linked_from_outside_is_replaced_not_changed_through_and_is_drift() {
    let f = Fx::new("safety-link-");
    f.variant("v3", "chmod 600 etc/app.conf");
    let (h, hs) = f.host("host");
    let outside = f.dir.join("alias");
    std::fs::hard_link(h.join("etc/app.conf"), &outside).unwrap();
    std::fs::hard_link(h.join("etc/app.conf"), h.join("root/x")).unwrap();

    // The other names are drift: the host is not what v1 says (an inode of its own).
    let st = status(&f.store, &hs);
    assert_eq!(st["drifted"], true, "{st:#}");
    let diff = run(&f.store, &["drift", &hs]);
    let diff = String::from_utf8_lossy(&diff.stdout);
    // Same content, a new inode ('n'): the other names keep theirs.
    assert!(diff.contains(">fn...... /etc/app.conf"), "{diff}");

    push(&f.store, "v3", &hs, &[]);
    assert_host_is(&h, &f.store, &f.id("v3"));
    assert_eq!(mode(&h.join("etc/app.conf")), 0o600);
    assert_eq!(
        std::fs::metadata(h.join("etc/app.conf")).unwrap().nlink(),
        1
    );
    // The other names kept their inode, mode and content.
    assert_eq!(mode(&outside), 0o644, "the mode changed outside the root");
    assert_eq!(mode(&h.join("root/x")), 0o644, "local state changed");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "conf\n");
    assert_eq!(std::fs::metadata(&outside).unwrap().nlink(), 2);
    assert_eq!(status(&f.store, &hs)["drifted"], false);
}

#[test]
fn symlinked_home_var_log_and_etc_ssh_are_the_hosts_own_and_kept() {
    let f = Fx::new("safety-symlink-");
    let (h, hs) = f.host("host");
    let out = f.dir.join("data");
    sh(&format!(
        "set -e; mkdir -p '{o}/home/alice' '{o}/log' '{o}/ssh'
         printf 'notes\\n' > '{o}/home/alice/notes'
         printf 'boot\\n' > '{o}/log/syslog'
         printf 'KEY\\n' > '{o}/ssh/ssh_host_ed25519_key' && printf 'Port 2222\\n' > '{o}/ssh/sshd_config'
         cd '{h}' && rm -r home var/log etc/ssh
         ln -s '{o}/home' home && ln -s '{o}/log' var/log && ln -s '{o}/ssh' etc/ssh",
        o = out.display(),
        h = h.display()
    ));
    let before = host_listing(&out);
    let r = push(&f.store, "v2", &hs, &[]);
    let k = kept(&r);
    assert_eq!(
        k,
        ["/etc/ssh", "/home", "/var/log"]
            .iter()
            .map(|p| (p.to_string(), "local-state-symlink".to_string()))
            .collect::<Vec<_>>(),
        "{r:#}"
    );
    for (link, target) in [("home", "home"), ("var/log", "log"), ("etc/ssh", "ssh")] {
        assert_eq!(
            std::fs::read_link(h.join(link)).unwrap(),
            out.join(target),
            "{link} replaced"
        );
    }
    assert_eq!(host_listing(&out), before, "the host's own data changed");
    assert_eq!(
        std::fs::read_to_string(h.join("usr/lib/app/data")).unwrap(),
        "data 2\n"
    );
    assert_eq!(status(&f.store, &hs)["drifted"], false);
}

#[test]
fn too_few_inodes_fail_the_push_before_its_commit_point_and_the_host_stays_usable() {
    let f = Fx::new("safety-inodes-");
    let many = (1..=20)
        .map(|i| format!("mkdir -p new/d{i}"))
        .collect::<Vec<_>>()
        .join("; ");
    let v5 = f.variant("v5", &many);
    let h = f.dir.join("host");
    let _m = Mount::tmpfs(&h, "size=16m,nr_inodes=1000");
    let hs = format!("local:{}", h.display());
    push(&f.store, "v1", &hs, &[]);
    // Room for the files a commit writes, not for 21 new directories.
    let used = {
        let s = rustix::fs::statvfs(&h).unwrap();
        s.f_files - s.f_ffree
    };
    sh(&format!(
        "mount -o remount,nr_inodes={} '{}'",
        used + 12,
        h.display()
    ));
    let out = run(&f.store, &["push", "v5", &hs, "--json"]);
    assert!(!out.status.success());
    let v = json(&String::from_utf8_lossy(&out.stdout));
    let err = v["hosts"][0]["error"].as_str().unwrap().to_string();
    assert!(err.contains("not enough inodes"), "{err}");
    assert!(!h.join("var/lib/syncer/journal").exists(), "{err}");
    assert_host_is(&h, &f.store, &f.id("v1"));
    let st = status(&f.store, &hs);
    assert_eq!(st["ok"], true, "the host refuses sessions: {st:#}");
    assert_eq!(st["drifted"], false, "{st:#}");
    // With room again, the same push goes through.
    sh(&format!(
        "mount -o remount,nr_inodes=1000 '{}'",
        h.display()
    ));
    push(&f.store, "v5", &hs, &[]);
    assert_host_is(&h, &f.store, &v5);
}

/// Pushes `image` with the agent stopped before its first journal operation, then
/// kills it: the host is left mid-commit.
fn interrupt_commit(store: &Path, image: &str, h: &Path, hs: &str) -> serde_json::Value {
    stop_in_commit(store, image, h, hs, "kill -9")
}

/// Pushes `image` with the agent stopped (SIGSTOP) before its first journal operation,
/// after the journal is written, then runs `then` on it (`{pid}` in it names the agent);
/// returns the push's report.
fn stop_in_commit(store: &Path, image: &str, h: &Path, hs: &str, then: &str) -> serde_json::Value {
    let mut child = syncer()
        .args(["push", image, hs, "--json"])
        .env("IMAGER_STORE", store)
        .env("SYNCER_TEST_STOP_AT", "commit:1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the push ended before its commit"
        );
        let stopped = stopped_agent(h);
        if let Some(pid) = stopped {
            sh(&format!("{then} {pid}"));
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    assert!(h.join("var/lib/syncer/journal").exists());
    json(&String::from_utf8_lossy(&out.stdout))["hosts"][0].clone()
}

/// A push that stops after its commit point says so: never "failed before commit" about
/// a host whose files already changed.
#[test]
fn a_push_stopped_after_its_commit_point_says_the_host_is_in_the_middle_of_a_commit() {
    let f = Fx::new("safety-midcommit-");
    let (h, hs) = f.host("host");
    let v2 = f.id("v2");
    // Killed once the journal is written: the controller cannot know how far it got.
    let r = interrupt_commit(&f.store, "v2", &h, &hs);
    assert_eq!(r["outcome"], "stopped during its commit", "{r:#}");
    assert_eq!(r["committed"], false);
    assert_eq!(r["commit_sent"], true);
    push(&f.store, "v2", &hs, &[]);
    push(&f.store, "v1", &hs, &[]);
    // Refused at its first operation (the directory it renames into became a
    // symlink): the agent says where the commit stands.
    let r = stop_in_commit(
        &f.store,
        "v2",
        &h,
        &hs,
        &format!(
            "cd '{}/usr/lib' && mv app app.real && ln -s app.real app && kill -CONT",
            h.display()
        ),
    );
    assert_eq!(r["outcome"], "in the middle of a commit", "{r:#}");
    assert_eq!(r["committed"], false);
    assert_eq!(r["mid_commit"]["image"], v2.to_hex(), "{r:#}");
    // Those before the renames into /usr/lib/app were done; the host changed.
    let (applied, ops) = (
        r["mid_commit"]["applied"].as_u64().unwrap(),
        r["mid_commit"]["ops"].as_u64().unwrap(),
    );
    assert!(applied > 0 && applied < ops, "{r:#}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains(&format!("operation {} of {ops}", applied + 1)),
        "{r:#}"
    );
    let out = run(&f.store, &["push", "v2", &hs]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAILED (in the middle of a commit)")
            && text.contains("the next session on this host finishes the commit"),
        "{text}"
    );
}

/// A record whose manifest does not hash to its ID (one edited line) is said so, never
/// used for drift, and the next push records the image again.
#[test]
fn a_damaged_host_record_is_said_so_and_the_next_push_heals_it() {
    let f = Fx::new("safety-record-");
    let (h, hs) = f.host("host");
    let m = h.join("var/lib/syncer/image.manifest");
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, text.replacen("mode=0644", "mode=0600", 1)).unwrap();
    let st = status(&f.store, &hs);
    let e = st["error"].as_str().unwrap_or_default();
    assert!(
        e.contains("record of its image is damaged") && e.contains("does not hash to"),
        "{st:#}"
    );
    assert_eq!(st["drifted"], false, "{st:#}");
    let out = run(&f.store, &["drift", &hs]);
    assert!(!out.status.success());
    // The same image again: recognised from the tree, recorded again.
    let r = push(&f.store, "v1", &hs, &[]);
    assert!(
        r["damaged_record"].as_str().unwrap().contains("damaged"),
        "{r:#}"
    );
    assert_eq!(r["recognized"], true, "{r:#}");
    assert_eq!(status(&f.store, &hs)["drifted"], false);
    // Damaged again, and another image pushed: it goes through.
    std::fs::write(&m, "#imager-manifest v1\n").unwrap();
    push(&f.store, "v2", &hs, &[]);
    assert_host_is(&h, &f.store, &f.id("v2"));
    let st = status(&f.store, &hs);
    assert_eq!(st["drifted"], false, "{st:#}");
    assert_eq!(st["image"], f.id("v2").to_hex());
}

#[test]
fn a_commit_blocked_after_its_commit_point_says_so_and_can_be_finished_or_abandoned() {
    let f = Fx::new("safety-stuck-");
    let (h, hs) = f.host("host");
    let v2 = f.id("v2");
    // The directory the first rename goes into becomes a symlink: the agent never writes
    // through one, so every roll-forward fails until the host is fixed.
    let break_it = || {
        sh(&format!(
            "cd '{}/usr/lib' && mv app app.real && ln -s app.real app",
            h.display()
        ))
    };
    let fix_it = || {
        sh(&format!(
            "cd '{}/usr/lib' && rm app && mv app.real app",
            h.display()
        ))
    };
    interrupt_commit(&f.store, "v2", &h, &hs);
    break_it();
    for attempt in [&["push", "v2", &hs][..], &["push", "v1", &hs][..]] {
        let out = run(&f.store, attempt);
        assert!(!out.status.success());
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains(&format!("in the middle of a commit to image {v2}"))
                && text.contains("/usr/lib/app")
                && text.contains("syncer abandon-commit"),
            "{attempt:?}: {text}"
        );
    }
    let st = status(&f.store, &hs);
    assert_eq!(st["mid_commit"], true, "{st:#}");
    // Fixed, the next push finishes the commit first.
    fix_it();
    let r = push(&f.store, "v2", &hs, &[]);
    assert_eq!(r["rolled_forward"], true, "{r:#}");
    assert_host_is(&h, &f.store, &v2);

    // Or the commit is dropped, and the host repaired by the next push.
    interrupt_commit(&f.store, "v1", &h, &hs);
    break_it();
    let out = ok(&f.store, &["abandon-commit", &hs]);
    assert!(
        out.contains("dropped the unfinished commit to image"),
        "{out}"
    );
    assert!(!h.join("var/lib/syncer/journal").exists());
    let out = ok(&f.store, &["abandon-commit", &hs]);
    assert!(out.contains("no unfinished commit"), "{out}");
    push(&f.store, "v1", &hs, &[]);
    assert_host_is(&h, &f.store, &f.id("v1"));
}

/// A store in `dir` holding one image, `big`: `n` symlinks (target `x`) in directories
/// of 1,000, below `parents` nested directories with names of `name_len` bytes (the
/// longer the paths, the longer each manifest line and difference). Written through
/// imager's library: importing millions of real files would take far longer than the
/// push under test. Returns the store, the image's entries besides `/`, and the length
/// of its manifest.
fn symlink_image(dir: &Path, parents: usize, name_len: usize, n: u32) -> (PathBuf, u64, u64) {
    let store = dir.join("store");
    let mut entries = vec![imager::Entry::dir(b"/", 0o755, 1)];
    let mut top = String::new();
    for c in (b'a'..).take(parents) {
        top = format!("{top}/{}", (c as char).to_string().repeat(name_len));
        entries.push(imager::Entry::dir(top.as_bytes(), 0o755, 1));
    }
    for d in 0..n.div_ceil(1000) {
        entries.push(imager::Entry::dir(
            format!("{top}/{d:04}").as_bytes(),
            0o755,
            1,
        ));
    }
    for i in 0..n {
        let path = format!("{top}/{:04}/{:04}", i / 1000, i % 1000);
        let mut e = imager::Entry::dir(path.as_bytes(), 0o777, 1);
        e.kind = imager::Kind::Symlink {
            target: b"x".to_vec(),
        };
        entries.push(e);
    }
    let count = entries.len() as u64 - 1;
    let tree = imager::Tree::new(entries).unwrap();
    let s = imager::store::Store::open(&store, imager::store::Access::Write).unwrap();
    let id = s.write_image(&tree, &[]).unwrap();
    s.set_ref("big", &id).unwrap();
    let len = std::fs::metadata(store.join("images").join(id.to_hex()).join("manifest"))
        .unwrap()
        .len();
    (store, count, len)
}

/// A new, empty host root `dir/name`, and its `local:` spec.
fn empty_host(dir: &Path, name: &str) -> (PathBuf, String) {
    let h = dir.join(name);
    std::fs::create_dir(&h).unwrap();
    let hs = format!("local:{}", h.display());
    (h, hs)
}

/// The manifest size the agent once stopped at (256 MiB): "Destination buffer is too
/// small" at `--level 1`, minutes of compressing at the default level.
const OLD_MANIFEST_LIMIT: u64 = 256 << 20;

#[test]
fn an_image_whose_difference_list_is_larger_than_a_frame_is_pushable() {
    // 90,000 symlinks at 770-byte paths: a difference list for a host never synced of
    // about 70 MB, more than one frame holds (it travels in pieces now), and a manifest
    // of as much.
    let t = scratch("safety-large-");
    let (store, n, len) = symlink_image(t.path(), 3, 250, 90_000);
    assert!(len > syncer::protocol::MAX_FRAME as u64, "{len}");
    let (_, hs) = empty_host(t.path(), "host");
    let r = push(&store, "big", &hs, &["--dry-run", "--level", "1"]);
    assert_eq!(r["added"], n, "{}", r["error"]);
}

#[test]
fn a_two_million_entry_image_whose_manifest_is_over_256_mib_is_pushable_at_every_level() {
    // The image: two million entries, a manifest of some 278 MB. Dry runs (the
    // whole plan: manifest sent, host compared, a difference list of 2 million paths
    // back): a real push of two million entries takes many minutes in a debug build; the
    // next test commits one as large in bytes.
    let t = scratch("safety-2m-");
    let (store, n, len) = symlink_image(t.path(), 1, 90, 2_000_000);
    assert!(len > OLD_MANIFEST_LIMIT, "{len}");
    for (i, level) in [&["--level", "19"][..], &["--level", "1"][..]]
        .into_iter()
        .enumerate()
    {
        let (_, hs) = empty_host(t.path(), &format!("host{i}"));
        let mut args = vec!["--dry-run"];
        args.extend_from_slice(level);
        let r = push(&store, "big", &hs, &args);
        assert_eq!(r["added"], n, "{args:?}: {}", r["error"]);
    }
}

#[test]
fn an_image_whose_manifest_is_over_256_mib_commits_and_a_second_push_is_a_no_op() {
    // 110,000 symlinks below ten 250-byte directory names: a manifest of some 280 MB
    // and a difference list of as much, in a real push at the default level.
    let t = scratch("safety-huge-");
    let (store, n, len) = symlink_image(t.path(), 10, 250, 110_000);
    assert!(len > OLD_MANIFEST_LIMIT, "{len}");
    let (h, hs) = empty_host(t.path(), "host");
    let r = push(&store, "big", &hs, &[]);
    assert_eq!(r["added"], n, "{r:#}");
    assert_eq!(r["committed"], true, "{r:#}");
    let top: PathBuf = (b'a'..)
        .take(10)
        .map(|c| (c as char).to_string().repeat(250))
        .collect();
    for i in [0u32, 54_321, 109_999] {
        let p = h
            .join(&top)
            .join(format!("{:04}/{:04}", i / 1000, i % 1000));
        assert_eq!(std::fs::read_link(&p).unwrap(), Path::new("x"), "{i}");
    }
    assert!(!h.join(&top).join("0110").exists());
    let again = push(&store, "big", &hs, &[]);
    for k in ["added", "changed", "metadata", "deleted", "commit_ops"] {
        assert_eq!(again[k], 0, "{k}: {again:#}");
    }
}

/// The staging path is the syncer's own: a symlink or a file there is removed (never
/// what the symlink points at) instead of blocking every push and `status`.
#[test]
fn a_symlink_or_file_at_the_staging_path_is_replaced_not_followed() {
    let f = Fx::new("safety-staging-");
    let (h, hs) = f.host("host");
    let outside = f.dir.join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), "mine").unwrap();
    let staging = h.join(".syncer-staging");
    let _ = std::fs::remove_dir_all(&staging);
    std::os::unix::fs::symlink(&outside, &staging).unwrap();
    assert_eq!(status(&f.store, &hs)["drifted"], false);
    push(&f.store, "v2", &hs, &[]);
    assert_host_is(&h, &f.store, &f.id("v2"));
    assert_eq!(
        std::fs::read_to_string(outside.join("keep")).unwrap(),
        "mine"
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
    std::fs::remove_dir_all(&staging).unwrap();
    std::fs::write(&staging, "a file").unwrap();
    push(&f.store, "v1", &hs, &[]);
    assert_host_is(&h, &f.store, &f.id("v1"));
}

/// A new directory has its owner and mode from the moment it is made (staged), not
/// 0700 until the commit ends: a kill in the middle leaves nothing a service cannot read.
///
/// It is staged with what is new below it, and goes into place with one rename. One the
/// host made in the meantime (after the scan, before the commit's renames) is merged
/// into: the image's entries go in, what the host put there stays (outside the image's
/// owned prefixes, as ever).
#[test]
fn new_directories_have_their_mode_while_the_commit_runs_and_keep_what_the_host_made() {
    let f = Fx::new("safety-dirmode-");
    f.variant(
        "v3",
        "mkdir -m 0751 srv/web && mkdir -m 0755 srv/web/img && echo hi > srv/web/index \
         && echo png > srv/web/img/a.png && ln -s index srv/web/home && chown 33:33 srv/web",
    );
    let (h, hs) = f.host("host");
    let modes = f.dir.join("modes");
    // Stopped before the first operation; the directories appear, one with a file of the
    // host's; the next session finishes the commit.
    stop_in_commit(
        &f.store,
        "v3",
        &h,
        &hs,
        &format!(
            "find '{0}/.syncer-staging' -mindepth 1 -type d -printf '%m %u\\n' | sort > '{1}'; \
             mkdir -p '{0}/srv/web/img' && echo mine > '{0}/srv/web/img/mine' && kill -9",
            h.display(),
            modes.display()
        ),
    );
    assert_eq!(
        std::fs::read_to_string(&modes).unwrap(),
        "751 www-data\n755 root\n"
    );
    push(&f.store, "v3", &hs, &[]);
    let mine = h.join("srv/web/img/mine");
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "mine\n");
    // Without it (and with its directory's mtime, which the image set, put back), the
    // host is the image: modes, owners, the symlink, the files.
    let img = h.join("srv/web/img");
    let mtime = std::fs::metadata(&img).unwrap().modified().unwrap();
    std::fs::remove_file(&mine).unwrap();
    std::fs::File::open(&img)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_modified(mtime))
        .unwrap();
    assert_host_is(&h, &f.store, &f.id("v3"));
    let staged: Vec<_> = std::fs::read_dir(h.join(".syncer-staging"))
        .unwrap()
        .collect();
    assert!(staged.is_empty(), "{staged:?}");
}
