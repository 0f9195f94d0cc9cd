//! Every protocol message, with arbitrary contents (paths as any bytes, any text, finite
//! floats), survives encode → decode and `Conn::send` → `Conn::recv` unchanged.

use imager::{Entry, Hash, Kind};
use proptest::prelude::*;
use syncer::encoding::Encoding;
use syncer::protocol::*;

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..24)
}

fn hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}

fn text() -> impl Strategy<Value = String> {
    any::<String>()
}

fn seconds() -> impl Strategy<Value = f64> {
    -1e12f64..1e12
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (any::<u64>(), hash()).prop_map(|(size, hash)| Kind::File { size, hash }),
        Just(Kind::Dir),
        bytes().prop_map(|target| Kind::Symlink { target }),
        bytes().prop_map(|target| Kind::HardLink { target }),
        (any::<u32>(), any::<u32>()).prop_map(|(major, minor)| Kind::CharDev { major, minor }),
        (any::<u32>(), any::<u32>()).prop_map(|(major, minor)| Kind::BlockDev { major, minor }),
        Just(Kind::Fifo),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        bytes(),
        kind(),
        any::<(u32, u32, u32, i64)>(),
        prop::collection::vec((bytes(), bytes()), 0..3),
    )
        .prop_map(|(path, kind, (mode, uid, gid, mtime), xattrs)| Entry {
            path,
            kind,
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
}

fn change_kind() -> impl Strategy<Value = ChangeKind> {
    prop_oneof![
        Just(ChangeKind::Add),
        Just(ChangeKind::Content),
        Just(ChangeKind::Replace),
        Just(ChangeKind::Meta),
        Just(ChangeKind::Delete),
    ]
}

fn run() -> impl Strategy<Value = TriggerRun> {
    (
        text(),
        any::<Option<i32>>(),
        any::<bool>(),
        seconds(),
        text(),
    )
        .prop_map(|(name, status, timed_out, seconds, output)| TriggerRun {
            name,
            status,
            timed_out,
            seconds,
            output,
            skipped: None,
        })
}

fn manifest() -> impl Strategy<Value = ManifestData> {
    prop_oneof![
        bytes().prop_map(ManifestData::Zstd),
        (hash(), bytes()).prop_map(|(base, delta)| ManifestData::Delta { base, delta }),
        Just(ManifestData::Recorded),
        Just(ManifestData::Ask),
    ]
}

fn previous() -> impl Strategy<Value = Previous> {
    prop_oneof![
        Just(Previous::Keep),
        Just(Previous::None),
        hash().prop_map(Previous::Image),
    ]
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![
        bytes().prop_map(|from| Encoding::LocalCopy { from }),
        Just(Encoding::Whole),
        Just(Encoding::ZstdDelta),
        Just(Encoding::RsyncDelta),
        Just(Encoding::Bsdiff),
    ]
}

fn stale_units() -> impl Strategy<Value = Vec<StaleUnit>> {
    let process = (any::<u32>(), text()).prop_map(|(pid, comm)| StaleProcess { pid, comm });
    let unit = (
        text(),
        prop::collection::vec(process, 0..4),
        any::<u64>(),
        prop::collection::vec(bytes(), 0..4),
        any::<u64>(),
    )
        .prop_map(
            |(unit, processes, more_processes, files, more_files)| StaleUnit {
                unit,
                processes,
                more_processes,
                files,
                more_files,
            },
        );
    prop::collection::vec(unit, 0..3)
}

fn differences() -> impl Strategy<Value = Differences> {
    let change =
        (bytes(), change_kind(), prop::option::of(entry())).prop_map(|(path, kind, host)| Change {
            path,
            kind,
            host,
            what: 0,
        });
    let kept = (
        bytes(),
        prop_oneof![Just(KeptWhy::Mount), Just(KeptWhy::LocalStateSymlink)],
    )
        .prop_map(|(path, why)| Kept { path, why });
    let scan =
        (any::<(u64, u64, u64, u64)>(), seconds()).prop_map(|((a, b, c, d), seconds)| ScanStats {
            entries: a,
            hashed_files: b,
            hashed_bytes: c,
            cached_files: d,
            seconds,
        });
    (
        prop::option::of(hash()),
        prop::collection::vec(change, 0..6),
        prop::collection::vec((hash(), bytes()), 0..3),
        scan,
        prop::collection::vec(kept, 0..3),
        stale_units(),
    )
        .prop_map(|(image, changes, have, scan, kept, stale)| Differences {
            image,
            changes,
            have,
            scan,
            kept,
            stale,
            unmanaged: Vec::new(),
        })
}

fn pack_entries() -> impl Strategy<Value = Vec<PackEntry>> {
    prop::collection::vec(
        (bytes(), encoding(), any::<u64>()).prop_map(|(path, encoding, len)| PackEntry {
            path,
            encoding,
            len,
        }),
        0..4,
    )
}

fn target() -> impl Strategy<Value = Target> {
    (
        hash(),
        manifest(),
        prop::option::of(bytes()),
        bytes(),
        any::<(bool, bool)>(),
        previous(),
        prop::collection::vec(
            (bytes(), bytes()).prop_map(|(statement, signature)| ImageSignature {
                statement,
                signature,
            }),
            0..3,
        ),
    )
        .prop_map(
            |(image, manifest, local_state, triggers, (verify, dry_run), previous, signatures)| {
                Target {
                    image,
                    manifest,
                    local_state,
                    triggers,
                    verify,
                    dry_run,
                    previous,
                    signatures,
                    owned: None,
                    install_triggers: false,
                }
            },
        )
}

fn welcome() -> impl Strategy<Value = Welcome> {
    (
        any::<u32>(),
        text(),
        hash(),
        prop::option::of(hash()),
        prop::option::of(hash()),
        any::<bool>(),
        prop::option::of(hash()),
        prop::option::of(
            (text(), prop::option::of(hash()))
                .prop_map(|(summary, digest)| TrustSummary { summary, digest }),
        ),
    )
        .prop_map(
            |(version, agent, exe, image, previous, rolled_forward, abandoned, trust)| Welcome {
                version,
                agent,
                exe,
                image,
                previous,
                rolled_forward,
                abandoned,
                trust,
                damaged_record: None,
            },
        )
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        any::<u32>().prop_map(|version| Msg::Hello(Hello { version })),
        welcome().prop_map(Msg::Welcome),
        text().prop_map(|message| Msg::Error(ErrorMessage {
            message,
            mid_commit: None,
        })),
        any::<bool>().prop_map(|verify| Msg::Status(Status { verify })),
        target().prop_map(Msg::Target),
        differences().prop_map(Msg::Differences),
        prop::collection::vec(bytes(), 0..4)
            .prop_map(|paths| Msg::SignatureRequest(SignatureRequest { paths })),
        prop::collection::vec((bytes(), bytes()), 0..4)
            .prop_map(|sigs| Msg::Signatures(Signatures { sigs })),
        any::<(u64, u64)>().prop_map(|(files, bytes)| Msg::Stage(Stage { files, bytes })),
        (bytes(), encoding(), any::<u64>()).prop_map(|(path, encoding, len)| Msg::Put(Put {
            path,
            encoding,
            len
        })),
        // Large enough, at times, to be over the compression threshold (never compressed).
        prop::collection::vec(any::<u8>(), 0..6000).prop_map(|bytes| Msg::Data(Data { bytes })),
        Just(Msg::Commit),
        (any::<u64>(), seconds(), seconds()).prop_map(|(ops, stage_seconds, commit_seconds)| {
            Msg::Committed(Committed {
                ops,
                stage_seconds,
                commit_seconds,
            })
        }),
        run().prop_map(Msg::TriggerRan),
        Just(Msg::Done),
        Just(Msg::Bye),
        (text(), any::<u64>())
            .prop_map(|(command, timeout)| Msg::Health(Health { command, timeout })),
        run().prop_map(Msg::HealthResult),
        stale_units().prop_map(|units| Msg::Stale(Stale { units })),
        (hash(), prop::collection::vec(bytes(), 0..3))
            .prop_map(|(tree, kept)| Msg::Identity(Identity { tree, kept })),
        manifest().prop_map(|manifest| Msg::Manifest(Manifest { manifest })),
        (
            prop::collection::vec(text(), 0..3),
            any::<u64>(),
            prop::collection::vec(
                (
                    text(),
                    any::<u64>(),
                    hash(),
                    prop_oneof![
                        (pack_entries(), prop::collection::vec(any::<u32>(), 0..3))
                            .prop_map(|(entries, skip)| BlobUse::Pack { entries, skip }),
                        (bytes(), encoding())
                            .prop_map(|(path, encoding)| BlobUse::Put { path, encoding }),
                    ],
                ),
                0..3
            ),
        )
            .prop_map(|(mirrors, rate, blobs)| Msg::Fetch(Fetch {
                mirrors,
                rate,
                blobs: blobs
                    .into_iter()
                    .map(|(name, len, hash, stages)| Blob {
                        name,
                        len,
                        hash,
                        stages
                    })
                    .collect(),
            })),
        (
            prop::collection::vec(any::<u32>(), 0..4),
            prop::collection::vec((text(), any::<[u64; 9]>(), text()), 0..3),
        )
            .prop_map(|(missing, mirrors)| Msg::Fetched(Fetched {
                missing,
                mirrors: mirrors
                    .into_iter()
                    .map(|(url, n, last_error)| MirrorStats {
                        url,
                        bytes: n[0],
                        requests: n[1],
                        blobs: n[2],
                        cache_hits: n[3],
                        cache_misses: n[4],
                        not_found: n[5],
                        errors: n[6],
                        corrupt: n[7],
                        resumed: n[8],
                        last_error,
                    })
                    .collect(),
            })),
        (
            pack_entries(),
            any::<u64>(),
            prop::collection::vec(any::<u32>(), 0..3)
        )
            .prop_map(|(entries, len, skip)| Msg::Pack(Pack { entries, len, skip })),
    ]
}

/// Fails to compile when a message is added without a strategy above.
fn covered(m: &Msg) {
    match m {
        Msg::Hello(_)
        | Msg::Welcome(_)
        | Msg::Error(_)
        | Msg::Status(_)
        | Msg::Target(_)
        | Msg::Differences(_)
        | Msg::SignatureRequest(_)
        | Msg::Signatures(_)
        | Msg::Stage(_)
        | Msg::Put(_)
        | Msg::Data(_)
        | Msg::Commit
        | Msg::Committed(_)
        | Msg::TriggerRan(_)
        | Msg::Done
        | Msg::Bye
        | Msg::Health(_)
        | Msg::HealthResult(_)
        | Msg::Stale(_)
        | Msg::Pack(_)
        | Msg::Identity(_)
        | Msg::Manifest(_)
        | Msg::Fetch(_)
        | Msg::Fetched(_) => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_message_round_trips(m in msg()) {
        covered(&m);
        let body = m.encode().expect("encode");
        prop_assert_eq!(&Msg::decode(&body).expect("decode"), &m);

        let mut wire = Vec::new();
        let mut c = Conn::new(&[][..], &mut wire);
        c.send(&m).expect("send");
        c.send(&Msg::Bye).expect("send");
        let sent = c.sent;
        prop_assert_eq!(sent, wire.len() as u64);
        let mut r = Conn::new(&wire[..], std::io::sink());
        prop_assert_eq!(r.recv("m").expect("recv"), m);
        prop_assert_eq!(r.recv("bye").expect("recv"), Msg::Bye);
        prop_assert!(r.recv_opt().expect("end").is_none());
        prop_assert_eq!(r.received, sent);
    }
}
