//! The agent and transports on small synthetic trees: every kind of entry, a running
//! executable replaced, a full disk, hostile protocol input, and a real sshd.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;

use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use syncer::protocol::{Msg, MAX_FRAME, PROTOCOL_VERSION};

/// A tree with every kind of entry; `v` 2 changes content, modes, links and adds and
/// removes files.
fn make_tree(dir: &Path, v: u32) {
    let d = dir.display();
    let common = format!(
        "set -e; mkdir -p '{d}'; cd '{d}'
         mkdir -p etc usr/bin usr/local/bin var/lib/app srv/shared dev
         printf 'conf {v}\\n' > etc/app.conf
         printf 'static\\n' > etc/static.conf
         cp /bin/sleep usr/local/bin/daemon
         printf 'tool {v}\\n' > usr/bin/tool && chmod 4755 usr/bin/tool
         cp /bin/true usr/bin/pinger && setcap cap_net_raw+ep usr/bin/pinger
         printf 'linked {v}\\n' > usr/bin/h1 && ln usr/bin/h1 usr/bin/h2
         mknod dev/null c 1 3 && chmod 666 dev/null
         mkfifo var/lib/app/fifo
         ln -s ../etc/app.conf usr/bin/conf-link
         printf 'owned\\n' > var/lib/app/data && chown 1000:1000 var/lib/app/data
         chmod 2775 srv/shared && chown 0:50 srv/shared
         printf 'x\\n' > srv/shared/note && setfattr -n user.note -v 'v{v}' srv/shared/note
         mkdir -p srv/olddir/sub && printf a > srv/olddir/a && printf b > srv/olddir/sub/b
        "
    );
    sh(&common);
    if v == 2 {
        sh(&format!(
            "set -e; cd '{d}'
             printf 'appended' >> usr/local/bin/daemon
             chmod 640 etc/static.conf
             rm var/lib/app/fifo && mkdir var/lib/app/fifo
             rm usr/bin/conf-link && printf 'now a file\\n' > usr/bin/conf-link
             mkdir -p opt/new/deep && printf 'new\\n' > opt/new/deep/file
             setcap -r usr/bin/pinger
             rm -r srv/olddir && ln -s shared srv/olddir
             touch -d @1600000000 etc etc/app.conf"
        ));
    }
}

struct Fixture {
    _t: tempfile::TempDir,
    dir: PathBuf,
    store: PathBuf,
}

fn fixture(prefix: &str) -> Fixture {
    let t = scratch(prefix);
    let dir = t.path().to_path_buf();
    let store = dir.join("store");
    for v in [1, 2] {
        make_tree(&dir.join(format!("v{v}")), v);
        import(&store, &dir.join(format!("v{v}")), &format!("v{v}"));
    }
    Fixture { _t: t, dir, store }
}

#[test]
fn every_kind_of_entry_arrives_and_a_running_executable_is_replaced() {
    let f = fixture("agent-kinds-");
    let h = f.dir.join("host");
    std::fs::create_dir(&h).unwrap();
    let hs = format!("local:{}", h.display());
    let r = push(&f.store, "v1", &hs, &[]);
    // A local host's agent copies an empty root's files from the store itself.
    assert!(
        r["sent"]["store_copy"]["files"].as_u64().unwrap() > 0,
        "{r:#}"
    );
    assert_eq!(r["sent"]["whole"]["files"], 0, "{r:#}");
    assert_host_is(&h, &f.store, &id(&f.store, "v1"));
    // An empty root is no image of the store: the manifest went whole.
    assert_eq!(r["recognized"], false, "{r:#}");

    let mut daemon = Command::new(h.join("usr/local/bin/daemon"))
        .arg("60")
        .spawn()
        .unwrap();
    push(&f.store, "v2", &hs, &[]);
    assert_host_is(&h, &f.store, &id(&f.store, "v2"));
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the running executable's process died"
    );
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        std::fs::metadata(h.join("usr/bin/h1")).unwrap(),
        std::fs::metadata(h.join("usr/bin/h2")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "hard links were split");
    assert_eq!(a.mode() & 0o7777, 0o644);
    assert_eq!(
        std::fs::metadata(h.join("usr/bin/tool")).unwrap().mode() & 0o7777,
        0o4755
    );
    // And back, which removes what v2 added.
    push(&f.store, "v1", &hs, &[]);
    assert_host_is(&h, &f.store, &id(&f.store, "v1"));
    assert!(!h.join("opt").exists());
}

/// A first install onto an empty root gets the image's local-state paths (a daemon's log
/// directory, /etc/hosts); once there they are the host's: later pushes keep what the
/// host made of them, and only a path the host lost is made again.
#[test]
fn an_empty_root_gets_the_images_local_state_and_keeps_it_afterwards() {
    let t = scratch("syncer-seed-");
    let (dir, store) = (t.path().join("tree"), t.path().join("store"));
    sh(&format!(
        "set -e; mkdir -p '{d}/etc' '{d}/usr/bin' '{d}/var/log/app/old'; cd '{d}'
         printf '127.0.0.1 localhost\n' > etc/hosts
         printf 'conf\n' > etc/app.conf
         cp /bin/true usr/bin/app
         chmod 750 var/log/app && chown 0:4 var/log/app
         printf 'from the image\n' > var/log/app/old/README",
        d = dir.display()
    ));
    import_leaving_out(&store, &dir, "seeded", &[]);
    let root = t.path().join("host");
    std::fs::create_dir(&root).unwrap();
    let host = format!("local:{}", root.display());
    let r = push(&store, "seeded", &host, &[]);
    assert_eq!(r["committed"], true, "{r:#}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hosts")).unwrap(),
        "127.0.0.1 localhost\n"
    );
    let log = std::fs::metadata(root.join("var/log/app")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((log.mode() & 0o7777, log.gid()), (0o750, 4));
    assert!(root.join("var/log/app/old/README").is_file());

    // The host's own: its hosts file, its logs, a removed README stay as they are.
    std::fs::write(root.join("etc/hosts"), "10.0.0.7 web1\n").unwrap();
    std::fs::write(root.join("var/log/app/app.log"), "served\n").unwrap();
    std::fs::remove_file(root.join("var/log/app/old/README")).unwrap();
    std::fs::remove_dir(root.join("var/log/app/old")).unwrap();
    let out = run(&store, &["drift", &host, "--json"]);
    let status = json(&String::from_utf8_lossy(&out.stdout));
    let drift: Vec<&str> = status["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        drift,
        ["/var/log/app/old", "/var/log/app/old/README"],
        "{status:#}"
    );
    let r = push(&store, "seeded", &host, &[]);
    assert_eq!(r["committed"], true, "{r:#}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hosts")).unwrap(),
        "10.0.0.7 web1\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("var/log/app/app.log")).unwrap(),
        "served\n"
    );
    assert!(root.join("var/log/app/old/README").is_file());
    let out = run(&store, &["status", &host, "--json"]);
    let status = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(status[0]["differences"], 0, "{status:#}");
}

#[test]
fn a_full_disk_leaves_the_old_tree_intact_and_no_staging_behind() {
    let f = fixture("agent-full-");
    // v3: a 96 MiB file (more than the host's filesystem holds).
    let v3 = f.dir.join("v3");
    sh(&format!(
        "cp -a '{}' '{v}' && head -c 100663296 /dev/zero > '{v}/var/lib/app/big'",
        f.dir.join("v1").display(),
        v = v3.display()
    ));
    import(&f.store, &v3, "v3");
    // v4: 3,000 small files (the bytes fit; the inodes do not).
    let v4 = f.dir.join("v4");
    sh(&format!(
        "cp -a '{}' '{v}' && mkdir '{v}/many' && cd '{v}/many' && for i in $(seq 3000); do echo $i > f$i; done",
        f.dir.join("v1").display(),
        v = v4.display()
    ));
    import(&f.store, &v4, "v4");

    let h = f.dir.join("host");
    let _m = Mount::tmpfs(&h, "size=48m,nr_inodes=1000");
    let hs = format!("local:{}", h.display());
    push(&f.store, "v1", &hs, &[]);
    let v1 = id(&f.store, "v1");

    for (image, want) in [("v3", "not enough space"), ("v4", "not enough inodes")] {
        let out = run(&f.store, &["push", image, &hs, "--json"]);
        assert!(!out.status.success(), "{image} fit on a full disk?");
        let v = json(&String::from_utf8_lossy(&out.stdout));
        let err = v["hosts"][0]["error"].as_str().unwrap().to_string();
        assert!(err.contains(want), "{image}: {err}");
        assert!(
            err.contains(&h.display().to_string()),
            "error names no path: {err}"
        );
        assert_host_is(&h, &f.store, &v1);
        let staged: Vec<_> = std::fs::read_dir(h.join(".syncer-staging"))
            .unwrap()
            .collect();
        assert!(
            staged.is_empty(),
            "{image}: staging left behind: {staged:?}"
        );
        let st = json(&ok(&f.store, &["status", &hs, "--json"]));
        assert_eq!(st[0]["image"], v1.to_hex());
        assert_eq!(st[0]["drifted"], false);
    }
}

fn listing(root: &Path) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap().path().display().to_string())
        .collect()
}

#[test]
fn hostile_protocol_input_is_refused_clearly_and_writes_nothing() {
    let t = scratch("agent-proto-");
    let root = t.path().join("root");
    make_tree(&root, 1);
    let before = listing(&root);
    let hello = frame(&Msg::Hello(syncer::protocol::Hello {
        version: PROTOCOL_VERSION,
    }));
    let limit = format!("limit is {MAX_FRAME}");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "wrong version",
            frame(&Msg::Hello(syncer::protocol::Hello { version: 99 })),
            "protocol version 99",
        ),
        ("not a syncer", b"hello there\n".to_vec(), "limit"),
        (
            "bad magic",
            {
                let mut v = frame(&Msg::Hello(syncer::protocol::Hello { version: 1 }));
                v[5] = b'X';
                v
            },
            "not a syncer",
        ),
        (
            "truncated frame",
            [hello.clone(), 100u32.to_le_bytes().to_vec(), vec![5u8; 10]].concat(),
            "ended inside a frame",
        ),
        (
            "oversized length",
            [hello.clone(), u32::MAX.to_le_bytes().to_vec()].concat(),
            &limit,
        ),
        (
            "unknown message",
            [hello.clone(), 1u32.to_le_bytes().to_vec(), vec![77u8]].concat(),
            "unknown message type 77",
        ),
        (
            "content before a target",
            [
                hello.clone(),
                frame(&Msg::Put(syncer::protocol::Put {
                    path: b"/etc/passwd".to_vec(),
                    encoding: syncer::encoding::Encoding::Whole,
                    len: 0,
                })),
            ]
            .concat(),
            "Put before Stage",
        ),
    ];
    for (name, input, want) in cases {
        let (ok, stdout, stderr) = agent_with(&root, &input);
        assert!(!ok, "{name}: the agent accepted it");
        assert!(
            stderr.contains(want),
            "{name}: stderr lacks {want:?}: {stderr}"
        );
        // The controller hears why, as a frame.
        let mut c = syncer::protocol::Conn::new(&stdout[..], Vec::new());
        let mut said = None;
        while let Ok(Some(m)) = c.recv_opt() {
            if let Msg::Error(syncer::protocol::ErrorMessage {
                message,
                mid_commit: None,
            }) = m
            {
                said = Some(message);
            }
        }
        let said = said.unwrap_or_else(|| panic!("{name}: no Error frame sent"));
        assert!(said.contains(want), "{name}: {said}");
        assert_eq!(listing(&root), before, "{name}: the agent wrote something");
    }
}

#[test]
fn a_controller_refuses_an_agent_of_another_protocol_version() {
    let f = fixture("agent-oldver-");
    // A fake ssh that answers any command with a Welcome of the next version.
    let other = syncer::protocol::PROTOCOL_VERSION + 1;
    let reply = f.dir.join("welcome");
    std::fs::write(
        &reply,
        frame(&Msg::Welcome(syncer::protocol::Welcome {
            version: other,
            agent: "0.0.1".into(),
            exe: imager::Hash([0; 32]),
            image: None,
            previous: None,
            rolled_forward: false,
            abandoned: None,
            trust: None,
            damaged_record: None,
        })),
    )
    .unwrap();
    let fake = f.dir.join("fake-ssh");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\ncat '{}'\nexec cat >/dev/null\n",
            reply.display()
        ),
    )
    .unwrap();
    sh(&format!("chmod 755 '{}'", fake.display()));
    let out = run(
        &f.store,
        &[
            "push",
            "v1",
            "ssh://old-host",
            "--json",
            "-e",
            fake.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let v = json(&String::from_utf8_lossy(&out.stdout));
    let err = v["hosts"][0]["error"].as_str().unwrap();
    assert!(err.contains(&format!("protocol version {other}")), "{err}");
    assert_eq!(v["hosts"][0]["host"], "ssh://old-host");
}

#[test]
fn ssh_hosts_through_a_real_sshd_with_agent_installation() {
    let f = fixture("agent-ssh-");
    let sshd = Sshd::start(&f.dir);
    let h = f.dir.join("host");
    std::fs::create_dir(&h).unwrap();
    let hs = format!("ssh://root@127.0.0.1:{}{}", sshd.port, h.display());
    let agent = f.dir.join("remote/bin/syncer");
    let rsh = sshd.rsh();
    let common = ["-e", rsh.as_str(), "--agent", agent.to_str().unwrap()];

    // No agent there yet: a clear error that says how to fix it.
    let mut args = vec!["push", "v1", hs.as_str(), "--json"];
    args.extend(common);
    let out = run(&f.store, &args);
    assert!(!out.status.success());
    let v = json(&String::from_utf8_lossy(&out.stdout));
    let err = v["hosts"][0]["error"].as_str().unwrap();
    assert!(err.contains("--install-agent"), "{err}");
    assert!(!agent.exists());

    let mut with_install = common.to_vec();
    with_install.push("--install-agent");
    let r = push(&f.store, "v1", &hs, &with_install);
    assert_eq!(r["agent_installed"], true, "{r:#}");
    // The small agent executable beside `syncer`, the same build (the copy is stripped
    // of its debug sections: see controller.rs), not the controller.
    assert_eq!(
        syncer::selfexe::identity_of(&agent).unwrap(),
        syncer::selfexe::identity_of(Path::new(env!("CARGO_BIN_EXE_syncer-agent"))).unwrap()
    );
    let v = Command::new(&agent).arg("--version").output().unwrap();
    assert!(
        String::from_utf8_lossy(&v.stdout).starts_with("syncer-agent "),
        "{v:?}"
    );
    assert_host_is(&h, &f.store, &id(&f.store, "v1"));

    // Installed and current: used as it is.
    let r = push(&f.store, "v2", &hs, &with_install);
    assert_eq!(r["agent_installed"], false, "{r:#}");
    assert!(r["wire_sent"].as_u64().unwrap() > 0);
    assert_host_is(&h, &f.store, &id(&f.store, "v2"));
    let mut args = vec!["status", hs.as_str(), "--json"];
    args.extend(common);
    let st = json(&ok(&f.store, &args));
    assert_eq!(st[0]["image"], id(&f.store, "v2").to_hex());
    assert_eq!(st[0]["drifted"], false);
}

#[test]
fn one_session_at_a_time_per_host() {
    let f = fixture("agent-lock-");
    let h = f.dir.join("host");
    std::fs::create_dir(&h).unwrap();
    let hs = format!("local:{}", h.display());
    let mut first = syncer()
        .args(["serve", "--root"])
        .arg(&h)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = first.stdin.take().unwrap();
    stdin
        .write_all(&frame(&Msg::Hello(syncer::protocol::Hello {
            version: PROTOCOL_VERSION,
        })))
        .unwrap();
    let mut c = syncer::protocol::Conn::new(first.stdout.take().unwrap(), Vec::new());
    assert!(matches!(c.recv("welcome").unwrap(), Msg::Welcome(..)));

    let out = run(&f.store, &["push", "v1", &hs, "--json"]);
    assert!(!out.status.success());
    let v = json(&String::from_utf8_lossy(&out.stdout));
    let err = v["hosts"][0]["error"].as_str().unwrap();
    assert!(err.contains("another syncer session"), "{err}");

    drop(stdin);
    assert!(first.wait().unwrap().success());
    push(&f.store, "v1", &hs, &[]);
    assert_host_is(&h, &f.store, &id(&f.store, "v1"));
}

#[test]
fn a_file_in_a_version_the_store_never_saw_travels_as_an_rsync_delta() {
    let t = scratch("agent-rsync-");
    let dir = t.path();
    let store = dir.join("store");
    mini_root(&dir.join("v1"), 1, 400_000);
    import(&store, &dir.join("v1"), "v1");
    // v1b: v1 with its payload changed in a few places.
    copy_tree(&dir.join("v1"), &dir.join("v1b"));
    sh(&format!(
        "printf 'NEW-HEADER' | dd of='{p}' bs=1 seek=1000 conv=notrunc status=none && \
         printf 'NEW-MIDDLE' | dd of='{p}' bs=1 seek=200000 conv=notrunc status=none",
        p = dir.join("v1b/srv/payload").display()
    ));
    let v1b = import(&store, &dir.join("v1b"), "v1b");
    let h = dir.join("host");
    std::fs::create_dir(&h).unwrap();
    let hs = format!("local:{}", h.display());
    push(&store, "v1", &hs, &[]);
    // The host's copy drifts to content no image has.
    sh(&format!(
        "printf 'LOCAL-EDIT' | dd of='{}' bs=1 seek=300000 conv=notrunc status=none",
        h.join("srv/payload").display()
    ));
    // A dry run plans the same (the agent answers signature requests for it too).
    let dry = push(&store, "v1b", &hs, &["--dry-run"]);
    assert_eq!(dry["planned"]["rsync_delta"]["files"], 1, "{dry:#}");
    let r = push(&store, "v1b", &hs, &[]);
    let rd = &r["sent"]["rsync_delta"];
    assert_eq!(rd["files"], 1, "{r:#}");
    assert!(rd["bytes"].as_u64().unwrap() < 40_000, "{r:#}");
    assert_host_is(&h, &store, &v1b);
}

#[test]
fn rehash_hashes_every_file_instead_of_trusting_the_hash_cache() {
    let f = fixture("agent-rehash-");
    let h = f.dir.join("host");
    std::fs::create_dir(&h).unwrap();
    let hs = format!("local:{}", h.display());
    push(&f.store, "v1", &hs, &[]);
    let st = json(&ok(&f.store, &["status", &hs, "--json"]));
    assert_eq!(st[0]["drifted"], false);
    // A cache that lies about /etc/static.conf (as a stale one would): the stat-only
    // scan believes it, --rehash reads the file and sees it is fine.
    let cache = h.join("var/lib/syncer/hash-cache");
    let text = std::fs::read_to_string(&cache).unwrap();
    let wrong = imager::Hash::of(b"something else").to_hex();
    let lied: String = text
        .lines()
        .map(|l| {
            if l.ends_with(" /etc/static.conf") {
                let mut f: Vec<&str> = l.split(' ').collect();
                f[4] = &wrong;
                f.join(" ")
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    assert_ne!(lied, text, "no cache line for /etc/static.conf");
    std::fs::write(&cache, lied).unwrap();
    let out = run(&f.store, &["drift", &hs]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "drift (where the host differs from its image):\n  >fc...... /etc/static.conf",
        "the cache was not used"
    );
    let st = json(&ok(&f.store, &["status", &hs, "--json", "--rehash"]));
    assert_eq!(st[0]["drifted"], false, "{st:#}");
}

#[test]
fn a_corrupt_pack_is_refused_and_the_host_keeps_its_files() {
    use syncer::encoding::{bsdiff, pack, Encoding};
    use syncer::protocol::*;
    let t = scratch("agent-pack-");
    let (root, v2) = (t.path().join("root"), t.path().join("v2"));
    make_tree(&root, 1);
    make_tree(&v2, 2);
    let store = t.path().join("store");
    let id = import(&store, &v2, "v2");
    let text = imager::store::Store::open(&store, imager::store::Access::Read)
        .unwrap()
        .image_text(&id)
        .unwrap();
    let before = listing(&root);
    // Two changed files in one pack: a bsdiff patch and a whole content.
    let (conf, daemon) = ("etc/app.conf", "usr/local/bin/daemon");
    let read = |d: &Path, p: &str| std::fs::read(d.join(p)).unwrap();
    let patch = bsdiff::diff(&read(&root, daemon), &read(&v2, daemon)).unwrap();
    let both = |raw: &[u8]| {
        vec![
            PackEntry {
                path: format!("/{daemon}").into_bytes(),
                encoding: Encoding::Bsdiff,
                len: patch.len() as u64,
            },
            PackEntry {
                path: format!("/{conf}").into_bytes(),
                encoding: Encoding::Whole,
                len: (raw.len() - patch.len()) as u64,
            },
        ]
    };
    // A session with packs of (entries, stream, announced length) one after another.
    let packs = |packs: Vec<(Vec<PackEntry>, Vec<u8>, Option<u64>)>| {
        let frames = packs.into_iter().flat_map(|(entries, stream, announced)| {
            [
                frame(&Msg::Pack(Pack {
                    entries,
                    len: announced.unwrap_or(stream.len() as u64),
                    skip: Vec::new(),
                })),
                frame(&Msg::Data(Data { bytes: stream })),
            ]
        });
        session(id, &text, 2, frames.collect())
    };
    let packed = |entries: Vec<PackEntry>, stream: Vec<u8>, announced: Option<u64>| {
        packs(vec![(entries, stream, announced)])
    };
    let session =
        |raw: &[u8], stream: Vec<u8>, announced: Option<u64>| packed(both(raw), stream, announced);
    let good = [patch.clone(), read(&v2, conf)].concat();
    // One byte of the patch's added bytes flipped: it applies, to the wrong content.
    let mut wrong = good.clone();
    wrong[30] ^= 1;
    // Each file in a pack of its own: the packs are staged while the next are read.
    let apart = |raw: &[u8], second: Vec<u8>| {
        let entries = both(raw);
        let cut = entries[0].len as usize;
        vec![
            (
                vec![entries[0].clone()],
                pack::compress(&raw[..cut], 3).unwrap(),
                None,
            ),
            (vec![entries[1].clone()], second, None),
        ]
    };
    let cases = [
        (
            "a flipped patch byte",
            session(&wrong, pack::compress(&wrong, 3).unwrap(), None),
            "does not match the image",
        ),
        (
            "a damaged stream",
            {
                let mut s = pack::compress(&good, 3).unwrap();
                s.truncate(s.len() - 8);
                session(&good, s, None)
            },
            "incomplete frame",
        ),
        (
            // Refused before a byte of it is read: the agent holds a pack in memory.
            "a stream longer than an agent holds",
            session(&good, Vec::new(), Some(MAX_HELD + 1)),
            "more than an agent holds in memory",
        ),
        (
            // Only an agent a controller on its machine gave the store's objects
            // (`serve --objects`) copies from them: this one was given none.
            "a store copy to an agent given no store",
            packed(
                vec![PackEntry {
                    path: format!("/{conf}").into_bytes(),
                    encoding: Encoding::StoreCopy,
                    len: 0,
                }],
                pack::compress(&[], 3).unwrap(),
                None,
            ),
            "given no store objects",
        ),
        (
            // The first failure in the packs' order is told, whatever a later pack
            // does while the first is staged.
            "a flipped patch byte in the first pack, a damaged second",
            packs(apart(&wrong, b"not a zstd stream".to_vec())),
            "does not match the image",
        ),
        (
            "a file sent in two packs",
            packs(vec![
                apart(&good, Vec::new()).remove(0),
                apart(&good, Vec::new()).remove(0),
            ]),
            "was sent twice",
        ),
    ];
    let kept = |l: Vec<String>| -> Vec<String> {
        l.into_iter()
            .filter(|p| !p.contains(".syncer-staging") && !p.contains("var/lib/syncer"))
            .collect()
    };
    for (name, input, want) in cases {
        let (ok, _, stderr) = agent_with(&root, &input);
        assert!(!ok, "{name}: the agent accepted it");
        assert!(
            stderr.contains(want),
            "{name}: stderr lacks {want:?}: {stderr}"
        );
        assert_eq!(kept(listing(&root)), kept(before.clone()), "{name}");
        assert_eq!(read(&root, daemon), read(&t.path().join("root"), daemon));
    }
    // The same session with the right bytes stages both files, in one pack or in two:
    // it fails only at the commit, for the files no pack carried.
    let conf_len = read(&v2, conf).len();
    for input in [
        session(&good, pack::compress(&good, 3).unwrap(), None),
        packs(apart(
            &good,
            pack::compress(&good[good.len() - conf_len..], 3).unwrap(),
        )),
    ] {
        let (ok, _, stderr) = agent_with(&root, &input);
        assert!(!ok);
        assert!(
            stderr.contains("commit before the content of /opt/new/deep/file"),
            "{stderr}"
        );
    }
}
