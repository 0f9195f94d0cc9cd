//! The wire format, pinned: one instance of every message (and of every inner variant:
//! manifest forms, content sources, change kinds, kept reasons, entry kinds, the previous
//! image's three forms, a trigger's status, stale-process listings, packs) encoded and compared
//! with bytes captured from protocol version 11 (4 plus image signatures in `Target` and
//! the host's trust policy in `Welcome` made 5; the raw local-state file in `Target`,
//! `Fetch`/`Fetched` for content from HTTP mirrors and the entries a `Pack` skips, 6;
//! the owned-prefix file and `install_triggers` in `Target`, what differs per `Change`,
//! the host's unmanaged paths in `Differences`, a skipped trigger, a damaged record in
//! `Welcome` and the commit an `Error` leaves a host in the middle of, 7; the chunked
//! content of large files, 8; gzip-aware and Zucchini deltas as content sources, 9;
//! store copies for `local:` hosts' agents, 10; bitcode-aware deltas, 11).
//! A refactor of the codec must leave every constant here unchanged;
//! a deliberate change of the format bumps `PROTOCOL_VERSION` and these bytes with it.

use imager::{Entry, Hash, Kind};
use syncer::encoding::Encoding;
use syncer::protocol::*;

fn entry(path: &str, kind: Kind) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        kind,
        mode: 0o100644,
        uid: 1,
        gid: 2,
        mtime: -3,
        xattrs: vec![(b"user.a".to_vec(), b"v".to_vec())],
    }
}

fn run(status: Option<i32>) -> TriggerRun {
    TriggerRun {
        name: "ldconfig".into(),
        status,
        timed_out: status.is_none(),
        seconds: 1.25,
        output: "out".into(),
        skipped: None,
    }
}

/// Two units still running replaced files, one with more than it lists.
fn stale_units() -> Vec<StaleUnit> {
    vec![
        StaleUnit {
            unit: "nginx.service".into(),
            processes: vec![
                StaleProcess {
                    pid: 123,
                    comm: "nginx".into(),
                },
                StaleProcess {
                    pid: 124,
                    comm: "nginx".into(),
                },
            ],
            more_processes: 0,
            files: vec![b"/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0.11.2".to_vec()],
            more_files: 0,
        },
        StaleUnit {
            unit: "(no unit)".into(),
            processes: vec![StaleProcess {
                pid: 1,
                comm: "init".into(),
            }],
            more_processes: 3,
            files: vec![b"/sbin/init".to_vec(), b"/usr/lib/a\xff".to_vec()],
            more_files: 7,
        },
    ]
}

/// Every message and inner variant, named.
fn messages() -> Vec<(&'static str, Msg)> {
    let h = |s: &[u8]| Hash::of(s);
    let kinds = vec![
        Kind::File {
            size: 7,
            hash: h(b"f"),
        },
        Kind::Dir,
        Kind::Symlink {
            target: b"../t".to_vec(),
        },
        Kind::HardLink {
            target: b"/a/b".to_vec(),
        },
        Kind::CharDev { major: 1, minor: 3 },
        Kind::BlockDev { major: 8, minor: 0 },
        Kind::Fifo,
    ];
    let change_kinds = [
        ChangeKind::Add,
        ChangeKind::Content,
        ChangeKind::Replace,
        ChangeKind::Meta,
        ChangeKind::Delete,
    ];
    let mut changes: Vec<Change> = kinds
        .into_iter()
        .enumerate()
        .map(|(i, k)| Change {
            path: format!("/e{i}").into_bytes(),
            kind: change_kinds[i % 5],
            what: syncer::protocol::item::with_kind(i as u32 * 37, &k),
            host: Some(entry(&format!("/e{i}"), k)),
        })
        .collect();
    for (i, k) in change_kinds.iter().enumerate() {
        changes.push(Change {
            path: format!("/c{i}").into_bytes(),
            kind: *k,
            host: None,
            what: 0,
        });
    }
    let target = |manifest, previous| {
        Msg::Target(Target {
            image: h(b"img"),
            manifest,
            local_state: Some(b"/var/lib/**\n/home\n".to_vec()),
            triggers: b"[t]\n".to_vec(),
            verify: true,
            dry_run: false,
            previous,
            signatures: vec![ImageSignature {
                statement: b"imager-image-signature 1\n".to_vec(),
                signature: b"-----BEGIN SSH SIGNATURE-----\n".to_vec(),
            }],
            owned: Some(b"/usr\n/etc\n".to_vec()),
            install_triggers: true,
        })
    };
    let put = |encoding| {
        Msg::Put(Put {
            path: b"/usr/bin/x".to_vec(),
            encoding,
            len: 12,
        })
    };
    vec![
        ("hello", Msg::Hello(Hello { version: 4 })),
        (
            "welcome",
            Msg::Welcome(Welcome {
                version: 3,
                agent: "0.1.0".into(),
                exe: h(b"exe"),
                image: Some(h(b"i")),
                previous: None,
                rolled_forward: true,
                abandoned: Some(h(b"ab")),
                trust: Some(TrustSummary {
                    summary: "1 requirement, 2 trusted keys".into(),
                    digest: Some(h(b"policy")),
                }),
                damaged_record: Some("the manifest does not hash to the image".into()),
            }),
        ),
        (
            "welcome-no-trust",
            Msg::Welcome(Welcome {
                version: 5,
                agent: "0.1.0".into(),
                exe: h(b"exe"),
                image: None,
                previous: None,
                rolled_forward: false,
                abandoned: None,
                trust: None,
                damaged_record: None,
            }),
        ),
        (
            "error",
            Msg::Error(ErrorMessage {
                message: "boom é".into(),
                mid_commit: None,
            }),
        ),
        (
            "error-mid-commit",
            Msg::Error(ErrorMessage {
                message: "the host is in the middle of a commit".into(),
                mid_commit: Some(MidCommit {
                    image: Some(h(b"img")),
                    applied: Some(3011),
                    ops: Some(3098),
                }),
            }),
        ),
        ("status", Msg::Status(Status { verify: true })),
        (
            "target-zstd-keep",
            target(ManifestData::Zstd(vec![1, 2, 3]), Previous::Keep),
        ),
        (
            "target-delta-none",
            target(
                ManifestData::Delta {
                    base: h(b"base"),
                    delta: vec![9, 8],
                },
                Previous::None,
            ),
        ),
        (
            "target-recorded-image",
            target(ManifestData::Recorded, Previous::Image(h(b"prev"))),
        ),
        ("target-ask", target(ManifestData::Ask, Previous::Keep)),
        (
            "identity",
            Msg::Identity(Identity {
                tree: h(b"tree"),
                kept: vec![b"/proc".to_vec()],
            }),
        ),
        (
            "manifest-delta",
            Msg::Manifest(Manifest {
                manifest: ManifestData::Delta {
                    base: h(b"tree"),
                    delta: vec![9, 8],
                },
            }),
        ),
        (
            "differences",
            Msg::Differences(Differences {
                image: Some(h(b"i")),
                changes,
                have: vec![(h(b"c"), b"/have".to_vec())],
                scan: ScanStats {
                    entries: 1,
                    hashed_files: 2,
                    hashed_bytes: 3,
                    cached_files: 4,
                    seconds: 0.5,
                },
                kept: vec![
                    Kept {
                        path: b"/srv".to_vec(),
                        why: KeptWhy::Mount,
                    },
                    Kept {
                        path: b"/home".to_vec(),
                        why: KeptWhy::LocalStateSymlink,
                    },
                ],
                stale: stale_units(),
                unmanaged: vec![Unmanaged {
                    path: b"/var/lib/postgresql".to_vec(),
                    entries: 1234,
                }],
            }),
        ),
        (
            "differences-empty",
            Msg::Differences(Differences {
                image: None,
                changes: Vec::new(),
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
                paths: vec![b"/a".to_vec(), b"/b\xff".to_vec()],
            }),
        ),
        (
            "signatures",
            Msg::Signatures(Signatures {
                sigs: vec![(b"/a".to_vec(), vec![0, 1, 2])],
            }),
        ),
        (
            "stage",
            Msg::Stage(Stage {
                files: 3,
                bytes: 99,
            }),
        ),
        (
            "put-local-copy",
            put(Encoding::LocalCopy {
                from: b"/other".to_vec(),
            }),
        ),
        ("put-whole", put(Encoding::Whole)),
        ("put-zstd-delta", put(Encoding::ZstdDelta)),
        ("put-rsync-delta", put(Encoding::RsyncDelta)),
        ("put-bsdiff", put(Encoding::Bsdiff)),
        ("put-chunked", put(Encoding::Chunked)),
        (
            "pack",
            Msg::Pack(Pack {
                entries: vec![
                    PackEntry {
                        path: b"/usr/bin/x".to_vec(),
                        encoding: Encoding::Bsdiff,
                        len: 300,
                    },
                    PackEntry {
                        path: b"/etc/y".to_vec(),
                        encoding: Encoding::Whole,
                        len: 4,
                    },
                ],
                len: 99,
                skip: vec![1],
            }),
        ),
        (
            "data",
            Msg::Data(Data {
                bytes: b"content".to_vec(),
            }),
        ),
        ("commit", Msg::Commit),
        (
            "committed",
            Msg::Committed(Committed {
                ops: 5,
                stage_seconds: 0.25,
                commit_seconds: 2.0,
            }),
        ),
        ("trigger-ran-exit", Msg::TriggerRan(run(Some(-1)))),
        ("trigger-ran-killed", Msg::TriggerRan(run(None))),
        (
            "trigger-ran-skipped",
            Msg::TriggerRan(TriggerRun {
                skipped: Some("needs a running system".into()),
                ..run(None)
            }),
        ),
        ("done", Msg::Done),
        ("bye", Msg::Bye),
        (
            "health",
            Msg::Health(Health {
                command: "true".into(),
                timeout: 30,
            }),
        ),
        ("health-result", Msg::HealthResult(run(Some(0)))),
        (
            "stale",
            Msg::Stale(Stale {
                units: stale_units(),
            }),
        ),
        ("stale-none", Msg::Stale(Stale { units: Vec::new() })),
        (
            // Larger than the compression threshold: the body is zstd (level 3).
            "error-compressed",
            Msg::Error(ErrorMessage {
                message: "abcdefgh".repeat(1000),
                mid_commit: None,
            }),
        ),
        (
            // File content is never compressed, however large.
            "data-large",
            Msg::Data(Data {
                bytes: vec![7; 5000],
            }),
        ),
        (
            "fetch",
            Msg::Fetch(Fetch {
                mirrors: vec!["http://cache/".into(), "http://origin/p/".into()],
                rate: 1000,
                blobs: vec![
                    Blob {
                        name: "packs/k.L19.zst".into(),
                        len: 99,
                        hash: h(b"pack"),
                        stages: BlobUse::Pack {
                            entries: vec![PackEntry {
                                path: b"/etc/y".to_vec(),
                                encoding: Encoding::Whole,
                                len: 4,
                            }],
                            skip: Vec::new(),
                        },
                    },
                    Blob {
                        name: "objects/o.L19.zst".into(),
                        len: 7,
                        hash: h(b"obj"),
                        stages: BlobUse::Put {
                            path: b"/usr/bin/x".to_vec(),
                            encoding: Encoding::Bsdiff,
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
                    url: "http://cache/".into(),
                    bytes: 99,
                    requests: 3,
                    blobs: 1,
                    cache_hits: 1,
                    cache_misses: 1,
                    not_found: 1,
                    errors: 0,
                    corrupt: 0,
                    resumed: 1,
                    last_error: "x".into(),
                }],
            }),
        ),
        ("put-gzip-delta", put(Encoding::GzipDelta)),
        ("put-zucchini", put(Encoding::Zucchini)),
        ("put-store-copy", put(Encoding::StoreCopy)),
        ("put-bitcode", put(Encoding::Bitcode)),
        (
            "pack-gzip-delta",
            Msg::Pack(Pack {
                entries: vec![
                    PackEntry {
                        path: b"/usr/share/doc/x/changelog.Debian.gz".to_vec(),
                        encoding: Encoding::GzipDelta,
                        len: 300,
                    },
                    PackEntry {
                        path: b"/usr/lib/x.so".to_vec(),
                        encoding: Encoding::Zucchini,
                        len: 200,
                    },
                ],
                len: 99,
                skip: Vec::new(),
            }),
        ),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The frame body (tag and fields) of each message; long ones by their blake3.
const GOLDEN: &[(&str, &str)] = &[
    ("hello", "0153594e4304000000"),
    ("welcome", "020300000005000000302e312e30688a43b46456beef9ceeee13d03f76e80566ef73bf11dd299dd900ce331a10f601e9c0ba08015769a0c4354594b96ce0dfbf27c9eb534a2f8378508985f732ff6d0001012dc99999a6aaef3f20349d2ed4057a2b54419545dabb809e6381de1bad8337e2011d0000003120726571756972656d656e742c20322074727573746564206b65797301ff096070fb25d5456f50000af78f1c92fda605bdb7bc3d1e7d1cc0091204e61c0127000000746865206d616e696665737420646f6573206e6f74206861736820746f2074686520696d616765"),
    ("welcome-no-trust", "020500000005000000302e312e30688a43b46456beef9ceeee13d03f76e80566ef73bf11dd299dd900ce331a10f6000000000000"),
    ("error", "0307000000626f6f6d20c3a900"),
    ("error-mid-commit", "032500000074686520686f737420697320696e20746865206d6964646c65206f66206120636f6d6d69740101bff0a0fd4bb2db301741c4c9cbfced1085e2051e6009edb12b004330fa7f511101c30b000000000000011a0c000000000000"),
    ("status", "0401"),
    ("target-zstd-keep", "05bff0a0fd4bb2db301741c4c9cbfced1085e2051e6009edb12b004330fa7f5111000300000001020301120000002f7661722f6c69622f2a2a0a2f686f6d650a040000005b745d0a0100000100000019000000696d616765722d696d6167652d7369676e617475726520310a1e0000002d2d2d2d2d424547494e20535348205349474e41545552452d2d2d2d2d0a010a0000002f7573720a2f6574630a01"),
    ("target-delta-none", "05bff0a0fd4bb2db301741c4c9cbfced1085e2051e6009edb12b004330fa7f511101de8f3fcf327eb911b2c368e011e0ffdee22fed456b4f4508337018ba46a0639d02000000090801120000002f7661722f6c69622f2a2a0a2f686f6d650a040000005b745d0a0100010100000019000000696d616765722d696d6167652d7369676e617475726520310a1e0000002d2d2d2d2d424547494e20535348205349474e41545552452d2d2d2d2d0a010a0000002f7573720a2f6574630a01"),
    ("target-recorded-image", "05bff0a0fd4bb2db301741c4c9cbfced1085e2051e6009edb12b004330fa7f51110201120000002f7661722f6c69622f2a2a0a2f686f6d650a040000005b745d0a010002a11cb032790dba2f14af21a5eeeabe59468e99c3b2e78e632919462fe3d76bbb0100000019000000696d616765722d696d6167652d7369676e617475726520310a1e0000002d2d2d2d2d424547494e20535348205349474e41545552452d2d2d2d2d0a010a0000002f7573720a2f6574630a01"),
    ("target-ask", "05bff0a0fd4bb2db301741c4c9cbfced1085e2051e6009edb12b004330fa7f51110301120000002f7661722f6c69622f2a2a0a2f686f6d650a040000005b745d0a0100000100000019000000696d616765722d696d6167652d7369676e617475726520310a1e0000002d2d2d2d2d424547494e20535348205349474e41545552452d2d2d2d2d0a010a0000002f7573720a2f6574630a01"),
    ("identity", "156baa6c9f461fe834a9da0ebb62e0f6fb8c11988a58cbc51b8da8040aea19bc3a01000000050000002f70726f63"),
    ("manifest-delta", "16016baa6c9f461fe834a9da0ebb62e0f6fb8c11988a58cbc51b8da8040aea19bc3a020000000908"),
    ("differences", "0601e9c0ba08015769a0c4354594b96ce0dfbf27c9eb534a2f8378508985f732ff6d0c000000030000002f65300001030000002f65300007000000000000009ab388bedc43eaf44150107d17ad090f6b1c34610f5740778ddb95d9f06576eea48100000100000002000000fdffffffffffffff0100000006000000757365722e61010000007600000001030000002f65310101030000002f653101a48100000100000002000000fdffffffffffffff0100000006000000757365722e61010000007625000002030000002f65320201030000002f653202040000002e2e2f74a48100000100000002000000fdffffffffffffff0100000006000000757365722e6101000000764a000003030000002f65330301030000002f653303040000002f612f62a48100000100000002000000fdffffffffffffff0100000006000000757365722e6101000000766f000006030000002f65340401030000002f6534040100000003000000a48100000100000002000000fdffffffffffffff0100000006000000757365722e61010000007694000004030000002f65350001030000002f6535050800000000000000a48100000100000002000000fdffffffffffffff0100000006000000757365722e610100000076b9000004030000002f65360101030000002f653606a48100000100000002000000fdffffffffffffff0100000006000000757365722e610100000076de000005030000002f6330000000000000030000002f6331010000000000030000002f6332020000000000030000002f6333030000000000030000002f633404000000000001000000ea7aa1fc9efdbe106dbb70369a75e9671fa29d52bd55536711bf197477b8f021050000002f686176650100000000000000020000000000000003000000000000000400000000000000000000000000e03f02000000040000002f73727600050000002f686f6d6501020000000d0000006e67696e782e73657276696365020000007b000000050000006e67696e787c000000050000006e67696e780000000000000000010000002e0000002f7573722f6c69622f7838365f36342d6c696e75782d676e752f6c696270637265322d382e736f2e302e31312e32000000000000000009000000286e6f20756e697429010000000100000004000000696e69740300000000000000020000000a0000002f7362696e2f696e69740b0000002f7573722f6c69622f61ff070000000000000001000000130000002f7661722f6c69622f706f737467726573716cd204000000000000"),
    ("differences-empty", "0600000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"),
    ("signature-request", "0702000000020000002f61030000002f62ff"),
    ("signatures", "0801000000020000002f6103000000000102"),
    ("stage", "0903000000000000006300000000000000"),
    ("put-local-copy", "0a0a0000002f7573722f62696e2f7800060000002f6f746865720c00000000000000"),
    ("put-whole", "0a0a0000002f7573722f62696e2f78010c00000000000000"),
    ("put-zstd-delta", "0a0a0000002f7573722f62696e2f78020c00000000000000"),
    ("put-rsync-delta", "0a0a0000002f7573722f62696e2f78030c00000000000000"),
    ("put-bsdiff", "0a0a0000002f7573722f62696e2f78040c00000000000000"),
    ("put-chunked", "0a0a0000002f7573722f62696e2f78050c00000000000000"),
    ("pack", "14020000000a0000002f7573722f62696e2f78042c01000000000000060000002f6574632f7901040000000000000063000000000000000100000001000000"),
    ("data", "0b636f6e74656e74"),
    ("commit", "0c"),
    ("committed", "0d0500000000000000000000000000d03f0000000000000040"),
    ("trigger-ran-exit", "0e080000006c64636f6e66696701ffffffff00000000000000f43f030000006f757400"),
    ("trigger-ran-killed", "0e080000006c64636f6e6669670001000000000000f43f030000006f757400"),
    ("trigger-ran-skipped", "0e080000006c64636f6e6669670001000000000000f43f030000006f757401160000006e6565647320612072756e6e696e672073797374656d"),
    ("done", "0f"),
    ("bye", "10"),
    ("health", "1104000000747275651e00000000000000"),
    ("health-result", "12080000006c64636f6e666967010000000000000000000000f43f030000006f757400"),
    ("stale", "13020000000d0000006e67696e782e73657276696365020000007b000000050000006e67696e787c000000050000006e67696e780000000000000000010000002e0000002f7573722f6c69622f7838365f36342d6c696e75782d676e752f6c696270637265322d382e736f2e302e31312e32000000000000000009000000286e6f20756e697429010000000100000004000000696e69740300000000000000020000000a0000002f7362696e2f696e69740b0000002f7573722f6c69622f61ff0700000000000000"),
    ("stale-none", "1300000000"),
    ("error-compressed", "8328b52ffd60451ead000068401f0000616263646566676800010035bfbe2401"),
    ("data-large", "5001 bytes, blake3 4ba26e266f59f262a92152f3ab9d03596c3484d1d1515ce4088760fa34961869"),
    ("fetch", "17020000000d000000687474703a2f2f63616368652f10000000687474703a2f2f6f726967696e2f702fe803000000000000020000000f0000007061636b732f6b2e4c31392e7a73746300000000000000fd6ad1c2e792f4cb1c7af9be82806a548fffa613a25fed9338903ee8d793b86c0001000000060000002f6574632f7901040000000000000000000000110000006f626a656374732f6f2e4c31392e7a737407000000000000008b2c74304e187f7aff6960d04b1cfc953a6bc027b4d356a6786a3410744df5e0010a0000002f7573722f62696e2f7804"),
    ("fetched", "180100000001000000010000000d000000687474703a2f2f63616368652f6300000000000000030000000000000001000000000000000100000000000000010000000000000001000000000000000000000000000000000000000000000001000000000000000100000078"),
    ("put-gzip-delta", "0a0a0000002f7573722f62696e2f78060c00000000000000"),
    ("put-zucchini", "0a0a0000002f7573722f62696e2f78070c00000000000000"),
    ("put-store-copy", "0a0a0000002f7573722f62696e2f78080c00000000000000"),
    ("put-bitcode", "0a0a0000002f7573722f62696e2f78090c00000000000000"),
    ("pack-gzip-delta", "1402000000240000002f7573722f73686172652f646f632f782f6368616e67656c6f672e44656269616e2e677a062c010000000000000d0000002f7573722f6c69622f782e736f07c800000000000000630000000000000000000000"),
];

/// What a body is pinned as: its hex when short, else its length and blake3.
fn pinned(body: &[u8]) -> String {
    if body.len() <= 1400 {
        hex(body)
    } else {
        format!("{} bytes, blake3 {}", body.len(), Hash::of(body))
    }
}

#[test]
fn every_message_encodes_to_the_bytes_of_protocol_version_11() {
    assert_eq!(PROTOCOL_VERSION, 11);
    let mut wrong = Vec::new();
    let mut all = String::new();
    let msgs = messages();
    for (i, (name, m)) in msgs.iter().enumerate() {
        let body = m.encode().expect("encode");
        let got = pinned(&body);
        all.push_str(&format!("    (\"{name}\", \"{got}\"),\n"));
        if GOLDEN.get(i) != Some(&(*name, got.as_str())) {
            wrong.push(*name);
        }
        // And it decodes back to itself.
        assert_eq!(&Msg::decode(&body).expect("decode"), m, "{name}");
    }
    assert!(
        wrong.is_empty() && msgs.len() == GOLDEN.len(),
        "changed: {wrong:?}; now:\n{all}"
    );
}

/// A message larger than a piece, sent through `Conn::send`: its frames (`Part`, then
/// `PartEnd`, each piece compressed on its own) pinned by their sizes and blake3.
#[test]
fn a_message_in_pieces_keeps_its_frames() {
    let changes: Vec<Change> = (0..120_000u32)
        .map(|i| Change {
            path: format!("/{}/{i:08}", "p".repeat(150)).into_bytes(),
            kind: ChangeKind::Add,
            host: None,
            what: 0,
        })
        .collect();
    let m = Msg::Differences(Differences {
        image: None,
        changes,
        have: Vec::new(),
        scan: ScanStats::default(),
        kept: Vec::new(),
        stale: Vec::new(),
        unmanaged: Vec::new(),
    });
    let mut wire = Vec::new();
    let mut c = Conn::new(&[][..], &mut wire);
    c.send(&m).expect("send");
    c.send(&Msg::Bye).expect("send");
    // Each frame: length, tag byte.
    let mut frames = Vec::new();
    let mut rest = &wire[..];
    while !rest.is_empty() {
        let n = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        frames.push(format!("{n}:{:02x}", rest[4]));
        rest = &rest[4 + n..];
    }
    let got = format!("{} {}", frames.join(","), Hash::of(&wire));
    assert_eq!(got, PIECES, "the frames of a message in pieces changed");
    let mut r = Conn::new(&wire[..], std::io::sink());
    assert_eq!(r.recv("big").expect("recv"), m);
    assert_eq!(r.recv("bye").expect("recv"), Msg::Bye);
}

const PIECES: &str =
    "128501:9e,29775:9f,1:10 0ad9920c5df34b4a3958447725011b02ffbebf82ea3c34bccfdc779efef35f3e";
