//! Writes the seed inputs that are encodings of our own formats (protocol frames, a
//! journal), so they follow the code when the format changes:
//! `cargo run --example seeds` in `fuzz/` (it writes into `corpus/`).
//! The other seeds (tar, TOML, dpkg files) are real files committed as they are.

use imager::{Entry, Hash, Kind};
use std::path::Path;
use syncer::agent::commit::{Journal, Op};
use syncer::encoding::Encoding;
use syncer::protocol::*;

fn write(dir: &Path, target: &str, name: &str, data: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("create the corpus directory");
    std::fs::write(d.join(name), data).expect("write a seed");
}

fn main() {
    let out = std::env::args().nth(1).unwrap_or_else(|| "corpus".into());
    let out = Path::new(&out);
    let file = Entry {
        path: b"/usr/bin/ping".to_vec(),
        kind: Kind::File {
            size: 9,
            hash: Hash::of(b"x"),
        },
        mode: 0o4755,
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
        xattrs: vec![(b"security.capability".to_vec(), vec![1, 0, 0, 2])],
    };
    let link = Entry {
        path: b"/bin".to_vec(),
        kind: Kind::Symlink {
            target: b"usr/bin".to_vec(),
        },
        mode: 0o777,
        ..file.clone()
    };
    let run = TriggerRun {
        name: "sshd".into(),
        status: Some(0),
        timed_out: false,
        seconds: 0.25,
        output: "reloaded\n".into(),
        skipped: None,
    };
    let stale = vec![StaleUnit {
        unit: "nginx.service".into(),
        processes: vec![StaleProcess {
            pid: 123,
            comm: "nginx".into(),
        }],
        more_processes: 1,
        files: vec![b"/usr/lib/x86_64-linux-gnu/libssl.so.3".to_vec()],
        more_files: 0,
    }];
    let manifest = "#imager-manifest v1\n/ dir mode=0755 uid=0 gid=0 mtime=0\n";
    let msgs = vec![
        (
            "hello",
            Msg::Hello(Hello {
                version: PROTOCOL_VERSION,
            }),
        ),
        (
            "welcome",
            Msg::Welcome(Welcome {
                version: PROTOCOL_VERSION,
                agent: "0.1.0".into(),
                exe: Hash::of(b"agent"),
                image: Some(Hash::of(b"old")),
                previous: None,
                rolled_forward: false,
                abandoned: None,
                trust: Some(TrustSummary {
                    summary: "1 requirement, 1 trusted key".into(),
                    digest: Some(Hash::of(b"policy")),
                }),
                damaged_record: None,
            }),
        ),
        (
            "error",
            Msg::Error(ErrorMessage {
                message: "no space left".into(),
                mid_commit: None,
            }),
        ),
        ("status", Msg::Status(Status { verify: true })),
        (
            "target",
            Msg::Target(Target {
                image: Hash::of(manifest.as_bytes()),
                manifest: ManifestData::Zstd(
                    zstd::bulk::compress(manifest.as_bytes(), 3).expect("compress"),
                ),
                local_state: Some(b"/etc/machine-id\n/var/log/**\n".to_vec()),
                triggers: b"[[trigger]]\nname = \"t\"\npaths = [\"/etc/**\"]\nrun = \"true\"\n"
                    .to_vec(),
                verify: false,
                dry_run: false,
                previous: Previous::Image(Hash::of(b"p")),
                signatures: vec![ImageSignature {
                    statement: b"imager-image-signature 1\n".to_vec(),
                    signature: b"-----BEGIN SSH SIGNATURE-----\n".to_vec(),
                }],
                owned: None,
                install_triggers: false,
            }),
        ),
        (
            "target-delta",
            Msg::Target(Target {
                image: Hash::of(b"i"),
                manifest: ManifestData::Delta {
                    base: Hash::of(b"b"),
                    delta: vec![0x28, 0xb5, 0x2f, 0xfd, 0],
                },
                local_state: None,
                triggers: Vec::new(),
                verify: true,
                dry_run: true,
                previous: Previous::None,
                signatures: Vec::new(),
                owned: None,
                install_triggers: false,
            }),
        ),
        (
            "differences",
            Msg::Differences(Differences {
                image: Some(Hash::of(b"i")),
                changes: vec![
                    Change {
                        path: b"/usr/bin/ping".to_vec(),
                        kind: ChangeKind::Content,
                        host: Some(file.clone()),
                        what: 0,
                    },
                    Change {
                        path: b"/bin".to_vec(),
                        kind: ChangeKind::Replace,
                        host: Some(link.clone()),
                        what: 0,
                    },
                    Change {
                        path: b"/new".to_vec(),
                        kind: ChangeKind::Add,
                        host: None,
                        what: 0,
                    },
                ],
                have: vec![(Hash::of(b"y"), b"/etc/y".to_vec())],
                scan: ScanStats {
                    entries: 3,
                    hashed_files: 1,
                    hashed_bytes: 9,
                    cached_files: 0,
                    seconds: 0.01,
                },
                kept: vec![
                    syncer::protocol::Kept {
                        path: b"/srv/data".to_vec(),
                        why: syncer::protocol::KeptWhy::Mount,
                    },
                    syncer::protocol::Kept {
                        path: b"/home".to_vec(),
                        why: syncer::protocol::KeptWhy::LocalStateSymlink,
                    },
                ],
                stale: stale.clone(),
                unmanaged: Vec::new(),
            }),
        ),
        // Large enough to travel compressed.
        (
            "differences-compressed",
            Msg::Differences(Differences {
                image: None,
                changes: (0..200)
                    .map(|i| Change {
                        path: format!("/p/{i}").into_bytes(),
                        kind: ChangeKind::Meta,
                        host: Some(file.clone()),
                        what: 0,
                    })
                    .collect(),
                have: Vec::new(),
                scan: ScanStats::default(),
                kept: Vec::new(),
                stale: Vec::new(),
                unmanaged: Vec::new(),
            }),
        ),
        (
            "signature-request",
            Msg::SignatureRequest(SignatureRequest {
                paths: vec![b"/usr/bin/ping".to_vec()],
            }),
        ),
        (
            "signatures",
            Msg::Signatures(Signatures {
                sigs: vec![(b"/usr/bin/ping".to_vec(), vec![7; 12])],
            }),
        ),
        ("stage", Msg::Stage(Stage { files: 2, bytes: 9 })),
        (
            "put-copy",
            Msg::Put(Put {
                path: b"/a".to_vec(),
                encoding: Encoding::LocalCopy {
                    from: b"/b".to_vec(),
                },
                len: 0,
            }),
        ),
        (
            "put-whole",
            Msg::Put(Put {
                path: b"/usr/bin/ping".to_vec(),
                encoding: Encoding::Whole,
                len: 9,
            }),
        ),
        (
            "identity",
            Msg::Identity(Identity {
                tree: Hash::of(b"tree"),
                kept: vec![b"/proc".to_vec()],
            }),
        ),
        (
            "manifest-delta",
            Msg::Manifest(Manifest {
                manifest: ManifestData::Delta {
                    base: Hash::of(b"tree"),
                    delta: vec![0x28, 0xb5, 0x2f, 0xfd],
                },
            }),
        ),
        (
            "put-bsdiff",
            Msg::Put(Put {
                path: b"/usr/bin/ping".to_vec(),
                encoding: Encoding::Bsdiff,
                len: 40,
            }),
        ),
        (
            "pack",
            Msg::Pack(Pack {
                entries: vec![
                    PackEntry {
                        path: b"/usr/bin/ping".to_vec(),
                        encoding: Encoding::Bsdiff,
                        len: 33,
                    },
                    PackEntry {
                        path: b"/etc/motd".to_vec(),
                        encoding: Encoding::Whole,
                        len: 9,
                    },
                ],
                len: 50,
                skip: Vec::new(),
            }),
        ),
        (
            "data",
            Msg::Data(Data {
                bytes: b"123456789".to_vec(),
            }),
        ),
        ("commit", Msg::Commit),
        (
            "committed",
            Msg::Committed(Committed {
                ops: 3,
                stage_seconds: 0.5,
                commit_seconds: 0.1,
            }),
        ),
        ("trigger-ran", Msg::TriggerRan(run.clone())),
        (
            "stale",
            Msg::Stale(Stale {
                units: stale.clone(),
            }),
        ),
        ("done", Msg::Done),
        ("bye", Msg::Bye),
        (
            "health",
            Msg::Health(Health {
                command: "systemctl is-system-running".into(),
                timeout: 30,
            }),
        ),
        (
            "health-result",
            Msg::HealthResult(TriggerRun {
                status: None,
                timed_out: true,
                ..run
            }),
        ),
        (
            "fetch",
            Msg::Fetch(Fetch {
                mirrors: vec!["http://cache:8080/".into(), "http://origin/pub/".into()],
                rate: 0,
                blobs: vec![
                    Blob {
                        name: "packs/k.L19.zst".into(),
                        len: 50,
                        hash: imager::Hash::of(b"pack"),
                        stages: BlobUse::Pack {
                            entries: vec![PackEntry {
                                path: b"/etc/motd".to_vec(),
                                encoding: Encoding::Whole,
                                len: 9,
                            }],
                            skip: vec![0],
                        },
                    },
                    Blob {
                        name: "objects/o.L19.zst".into(),
                        len: 9,
                        hash: imager::Hash::of(b"obj"),
                        stages: BlobUse::Put {
                            path: b"/usr/bin/ping".to_vec(),
                            encoding: Encoding::Whole,
                        },
                    },
                ],
            }),
        ),
        (
            "fetched",
            Msg::Fetched(Fetched {
                missing: vec![1],
                mirrors: vec![MirrorStats {
                    url: "http://cache:8080/".into(),
                    bytes: 50,
                    requests: 2,
                    blobs: 1,
                    cache_hits: 1,
                    not_found: 1,
                    ..MirrorStats::default()
                }],
            }),
        ),
    ];
    let mut session = Vec::new();
    for (name, m) in &msgs {
        let body = m.encode().expect("encode a seed message");
        write(out, "protocol_msg", name, &body);
        if !matches!(
            m,
            Msg::Error(..) | Msg::Differences(Differences { image: None, .. })
        ) {
            session.extend((body.len() as u32).to_le_bytes());
            session.extend(&body);
        }
    }
    write(out, "protocol_stream", "session", &session);

    let j = Journal {
        image: Hash::of(b"image"),
        ops: vec![
            Op::Mkdir(b"/opt/new".to_vec()),
            Op::Swap {
                staged: "s-3".into(),
                path: b"/etc/x".to_vec(),
                new_is_dir: true,
            },
            Op::Rename {
                staged: "s-1".into(),
                path: b"/usr/bin/a b".to_vec(),
            },
            Op::Link {
                target: b"/usr/bin/a b".to_vec(),
                path: b"/usr/bin/c".to_vec(),
            },
            Op::Meta(b"/etc/passwd".to_vec()),
            Op::Delete(b"/tmp/old\n".to_vec()),
            Op::Trash("s-3".into()),
            Op::DirMeta(b"/opt/new".to_vec()),
        ],
        changed: vec![b"/etc/x".to_vec(), b"/usr/bin/a b".to_vec()],
        previous: Previous::Image(Hash::of(b"prev")),
    };
    write(out, "journal", "journal", j.text().as_bytes());

    // A large file's records against the target's base: one changed in place, one
    // without a base.
    let base = imager_fuzz::chunked_base();
    let mut new = base.clone();
    new[1000..3000].fill(7);
    new.extend_from_slice(b"grown");
    let file_of = |data: &[u8]| {
        use std::io::Write;
        let mut f = imager::fsx::scratch_file(&std::env::temp_dir()).expect("a scratch file");
        f.write_all(data).expect("write a scratch file");
        f
    };
    let (o, n) = (file_of(&base), file_of(&new));
    for (name, old) in [("patched", Some((&o, base.len() as u64))), ("alone", None)] {
        let mut seed = (new.len() as u32).to_le_bytes().to_vec();
        syncer::encoding::chunked::encode(&n, new.len() as u64, old, 3, &mut seed)
            .expect("encode the seed");
        write(out, "chunked_records", name, &seed);
    }
}
