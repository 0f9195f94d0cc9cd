//! Property: any tree (odd names, hard links, symlinks, devices, fifos, xattrs,
//! capabilities, setuid, long names, old and far-future mtimes) survives
//! import -> export (tar.zst and directory) -> import with the same image ID.
//! The trees are made on disk by this test with plain system calls, not by imager.
//! (Xattr names with `=` are left out: tar cannot carry them, and the export says so.)

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
use imager::ops::{self, ExportTarget, ImportOptions, ImportSource as Source};
use imager::progress::Quiet;
use imager::store::{Access, Store};
use imager::tree::scan::Excludes;
use proptest::prelude::*;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
enum Node {
    File {
        data: Vec<u8>,
        mode: u32,
        cap: bool,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// A hard link to the n-th file made so far (if any).
    HardLink {
        nth: usize,
    },
    Char {
        major: u32,
        minor: u32,
    },
    Block {
        major: u32,
        minor: u32,
    },
    Fifo {
        mode: u32,
    },
}

#[derive(Clone, Debug)]
struct Spec {
    /// Index of an earlier directory to create this node in (0 = root).
    parent: usize,
    name: Vec<u8>,
    node: Node,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattr: Option<(String, Vec<u8>)>,
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z]{1,8}".prop_map(|s| s.into_bytes()),
        // Spaces, newlines, backslashes, `=`, non-UTF-8 bytes.
        proptest::collection::vec(
            prop_oneof![
                Just(b' '),
                Just(b'\n'),
                Just(b'\\'),
                Just(b'='),
                Just(0xffu8),
                Just(0x80u8),
                b'a'..=b'z'
            ],
            1..12
        ),
        // Names that push paths past tar's 100-byte field.
        (100usize..200).prop_map(|n| vec![b'x'; n]),
    ]
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

fn node() -> impl Strategy<Value = Node> {
    let perm = prop_oneof![
        Just(0o644u32),
        Just(0o755),
        Just(0o4755),
        Just(0o2750),
        Just(0o1777),
        Just(0o600),
        Just(0o000)
    ];
    prop_oneof![
        4 => (proptest::collection::vec(any::<u8>(), 0..300), perm.clone(), any::<bool>()).prop_map(|(data, mode, cap)| Node::File { data, mode, cap }),
        3 => perm.clone().prop_map(|m| Node::Dir { mode: m | 0o700 }),
        2 => proptest::collection::vec(1u8..=255, 1..150).prop_map(|target| Node::Symlink { target: target.into_iter().map(|b| if b == b'/' { b'/' } else { b }).collect() }),
        2 => (0usize..5).prop_map(|nth| Node::HardLink { nth }),
        1 => (1u32..300, 0u32..300).prop_map(|(major, minor)| Node::Char { major, minor }),
        1 => (1u32..300, 0u32..300).prop_map(|(major, minor)| Node::Block { major, minor }),
        1 => perm.prop_map(|mode| Node::Fifo { mode }),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0usize..8,
        name(),
        node(),
        prop_oneof![Just(0u32), Just(1000), Just(65534), Just(3_000_000)],
        prop_oneof![Just(0u32), Just(100), Just(4_000_000)],
        prop_oneof![
            Just(0i64),
            Just(1_700_000_000),
            Just(-86_400),
            Just(9_000_000_000),
            0i64..2_000_000_000
        ],
        proptest::option::of((
            "user\\.[a-z.]{1,10}",
            proptest::collection::vec(any::<u8>(), 0..40),
        )),
    )
        .prop_map(|(parent, name, node, uid, gid, mtime, xattr)| Spec {
            parent,
            name,
            node,
            uid,
            gid,
            mtime,
            xattr,
        })
}

fn os(b: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(b))
}

/// A valid VFS_CAP_REVISION_2 capability: cap_net_raw, effective.
const CAP_NET_RAW: [u8; 20] = [
    0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn build(root: &Path, specs: &[Spec]) {
    use rustix::fs::{FileType, Mode, XattrFlags};
    let mut dirs: Vec<PathBuf> = vec![root.to_path_buf()];
    let mut files: Vec<PathBuf> = Vec::new();
    let mut dir_meta: Vec<(PathBuf, i64)> = Vec::new();
    for sp in specs {
        let parent = dirs[sp.parent % dirs.len()].clone();
        let p = parent.join(os(&sp.name));
        if std::fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        let owner = || std::os::unix::fs::lchown(&p, Some(sp.uid), Some(sp.gid)).unwrap();
        let chmod = |m: u32| rustix::fs::chmod(&p, Mode::from_raw_mode(m)).unwrap();
        match &sp.node {
            Node::File { data, mode, cap } => {
                std::fs::write(&p, data).unwrap();
                owner();
                chmod(*mode);
                if *cap {
                    rustix::fs::lsetxattr(
                        &p,
                        "security.capability",
                        &CAP_NET_RAW,
                        XattrFlags::empty(),
                    )
                    .unwrap();
                }
                files.push(p.clone());
            }
            Node::Dir { mode } => {
                std::fs::create_dir(&p).unwrap();
                owner();
                chmod(*mode);
                dirs.push(p.clone());
            }
            Node::Symlink { target } => {
                std::os::unix::fs::symlink(os(target), &p).unwrap();
                owner();
            }
            Node::HardLink { nth } => match files.get(*nth) {
                Some(f) => {
                    std::fs::hard_link(f, &p).unwrap();
                    continue; // the inode's metadata is the first name's
                }
                None => continue,
            },
            Node::Char { major, minor } | Node::Block { major, minor } => {
                let ft = if matches!(sp.node, Node::Char { .. }) {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &p,
                    ft,
                    Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(*major, *minor),
                )
                .unwrap();
                owner();
            }
            Node::Fifo { mode } => {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &p,
                    FileType::Fifo,
                    Mode::from_raw_mode(0o600),
                    0,
                )
                .unwrap();
                owner();
                chmod(*mode);
            }
        }
        if let Some((n, v)) = &sp.xattr {
            // Linux allows user.* xattrs on regular files and directories only.
            if matches!(sp.node, Node::File { .. } | Node::Dir { .. }) {
                rustix::fs::lsetxattr(&p, n.as_str(), v, XattrFlags::empty()).unwrap();
            }
        }
        let ts = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: sp.mtime,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: sp.mtime,
                tv_nsec: 0,
            },
        };
        if matches!(sp.node, Node::Dir { .. }) {
            dir_meta.push((p.clone(), sp.mtime));
        } else {
            rustix::fs::utimensat(
                rustix::fs::CWD,
                &p,
                &ts,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
        }
    }
    // Directory mtimes last: creating children changes them.
    for (p, m) in dir_meta.iter().rev() {
        let t = rustix::fs::Timespec {
            tv_sec: *m,
            tv_nsec: 0,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            p,
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
    }
}

fn import(store: &Store, src: Source) -> String {
    let opts = ImportOptions {
        name: None,
        normalize: None,
        excludes: Excludes::default(),
        extra: Vec::new(),
    };
    ops::import(store, &src, &opts, &Quiet).expect("import").id
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip_to_the_same_id(specs in proptest::collection::vec(spec(), 1..40)) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tree");
        std::fs::create_dir(&root).unwrap();
        build(&root, &specs);
        let store = Store::open(&tmp.path().join("store"), Access::Write).unwrap();
        let id = import(&store, Source::Dir(root.clone()));
        let (hashed, _, _) = ops::hash_dir(&root, None, &Excludes::default(), &Quiet).unwrap();
        prop_assert_eq!(&hashed.to_hex(), &id);

        let h = imager::Hash::from_hex(&id).unwrap();
        let tar = tmp.path().join("t.tar.zst");
        ops::export(&store, &h, &ExportTarget::TarZst(tar.clone()), &Quiet).unwrap();
        prop_assert_eq!(&import(&store, Source::Archive(tar)), &id);

        let out = tmp.path().join("out");
        ops::export(&store, &h, &ExportTarget::Dir(out.clone()), &Quiet).unwrap();
        prop_assert_eq!(&import(&store, Source::Dir(out)), &id);
    }
}
