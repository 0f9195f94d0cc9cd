//! Fuzz target: trees built from structured input must print, parse, encode and journal
//! back to themselves (see imager_fuzz::tree_roundtrip). Entries are made valid by
//! construction (each under an earlier directory, hard links to earlier files) so the
//! fuzzer spends its time on names, targets and xattrs rather than on refused trees.
#![no_main]
use arbitrary::Arbitrary;
use imager::{Entry, Hash, Kind};

#[derive(Arbitrary, Debug)]
enum K {
    File { size: u64, hash: [u8; 32] },
    Dir,
    Symlink(Vec<u8>),
    HardLink(u8),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Arbitrary, Debug)]
struct E {
    parent: u8,
    name: Vec<u8>,
    kind: K,
    mode: u16,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn build(root_mtime: i64, list: Vec<E>) -> Vec<Entry> {
    let mut out = vec![Entry::dir(b"/", 0o755, root_mtime)];
    let mut dirs: Vec<Vec<u8>> = vec![b"/".to_vec()];
    let mut files: Vec<Vec<u8>> = Vec::new();
    for e in list {
        let parent = &dirs[e.parent as usize % dirs.len()];
        let mut name: Vec<u8> = e
            .name
            .iter()
            .take(255)
            .map(|&b| match b {
                b'/' => b'_',
                0 => 1,
                b => b,
            })
            .collect();
        if name.is_empty() || name == b"." || name == b".." {
            name.insert(0, b'n');
        }
        let mut path = if parent == b"/" {
            Vec::new()
        } else {
            parent.clone()
        };
        path.push(b'/');
        path.extend(name);
        let mut mode = e.mode as u32 & 0o7777;
        let kind = match e.kind {
            K::File { size, hash } => {
                files.push(path.clone());
                Kind::File {
                    size,
                    hash: Hash(hash),
                }
            }
            K::Dir => {
                dirs.push(path.clone());
                Kind::Dir
            }
            K::Symlink(mut t) => {
                t.retain(|&b| b != 0);
                t.truncate(4096);
                if t.is_empty() {
                    t.push(b'x');
                }
                mode = 0o777;
                Kind::Symlink { target: t }
            }
            K::HardLink(i) if !files.is_empty() => Kind::HardLink {
                target: files[i as usize % files.len()].clone(),
            },
            K::HardLink(_) | K::Fifo => Kind::Fifo,
            K::Char(major, minor) => Kind::CharDev { major, minor },
            K::Block(major, minor) => Kind::BlockDev { major, minor },
        };
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = e
            .xattrs
            .into_iter()
            .filter(|(n, _)| !n.is_empty() && n.len() <= 255 && !n.contains(&0))
            .collect();
        xattrs.sort();
        xattrs.dedup_by(|a, b| a.0 == b.0);
        let mut entry = Entry {
            path,
            kind,
            mode,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime,
            xattrs,
        };
        if let Kind::HardLink { target } = &entry.kind {
            // A hard link shares its target's metadata (the text does not repeat it).
            let t = out
                .iter()
                .find(|x| &x.path == target)
                .expect("the target was pushed");
            entry.mode = t.mode;
            entry.uid = t.uid;
            entry.gid = t.gid;
            entry.mtime = t.mtime;
            entry.xattrs = t.xattrs.clone();
        }
        out.push(entry);
    }
    out
}

libfuzzer_sys::fuzz_target!(|input: (i64, Vec<E>)| {
    imager_fuzz::tree_roundtrip(build(input.0, input.1))
});
