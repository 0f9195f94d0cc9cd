//! What an image *is*: one entry per path with its kind and metadata, in path order
//! ([`path_cmp`]), plus the rules a valid tree obeys. Every other part (scan, store, archives,
//! normalisation, the syncer) builds or reads this one model.

/// The escaping of paths in the manifest text (its own module: errors print paths with it).
pub use crate::escape;
pub mod scan;
pub mod text;

use crate::error::{Error, Result};
use std::cmp::Ordering;
use std::fmt;

/// The blake3 hash of a file's content; also the name of its object in the store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The blake3 hash of `data` (for a file, its whole content).
    pub fn of(data: &[u8]) -> Hash {
        Hash(*blake3::hash(data).as_bytes())
    }

    /// 64 lowercase hex digits: the form manifests and object names use.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Where a store keeps the object of this content, relative to its `objects/`
    /// directory: `ab/cdef…` (a fan-out directory of the first two hex digits). The
    /// store and a `local:` host's agent, which copies objects itself, both read it so.
    pub fn object_name(&self) -> std::path::PathBuf {
        let hex = self.to_hex();
        std::path::Path::new(&hex[..2]).join(&hex[2..])
    }

    /// The first 12 hex digits, as reports and messages show an image ID.
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(12);
        s
    }

    /// Parses [`Hash::to_hex`]'s form; `None` for anything else, uppercase digits included
    /// (one spelling per hash).
    pub fn from_hex(s: &str) -> Option<Hash> {
        if s.len() != 64 || s.bytes().any(|c| c.is_ascii_uppercase()) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Hash(out))
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Self {
        Hash(*h.as_bytes())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A hash in reports and saved state is its hex text, as everywhere else it is shown.
impl serde::Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Hash, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Hash::from_hex(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("not a hash (64 lowercase hex digits): {s:?}"))
        })
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

/// What kind of filesystem object an entry is, with the data that only that kind has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File {
        /// Its length in bytes.
        size: u64,
        /// The hash of its content, which names its object in the store.
        hash: Hash,
    },
    /// A directory.
    Dir,
    /// A symbolic link; its mode is always [`SYMLINK_MODE`].
    Symlink {
        /// What the link points to, raw bytes as stored in the link (relative or
        /// absolute; not resolved, need not exist). Non-empty, no NUL, at most
        /// [`MAX_PATH`] bytes.
        target: Vec<u8>,
    },
    /// Another name for an earlier `File` entry (same inode): it has no metadata of its
    /// own, the target's applies.
    HardLink {
        /// The entry path of that file (`/usr/bin/x`), which comes before this entry in
        /// path order.
        target: Vec<u8>,
    },
    /// A character device node.
    CharDev {
        /// The device's major number (its driver).
        major: u32,
        /// The device's minor number (which device of that driver).
        minor: u32,
    },
    /// A block device node.
    BlockDev {
        /// The device's major number (its driver).
        major: u32,
        /// The device's minor number (which device of that driver).
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

impl Kind {
    /// The kind's word in the manifest text and in messages (`file`, `dir`, `char`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Kind::File { .. } => "file",
            Kind::Dir => "dir",
            Kind::Symlink { .. } => "symlink",
            Kind::HardLink { .. } => "hardlink",
            Kind::CharDev { .. } => "char",
            Kind::BlockDev { .. } => "block",
            Kind::Fifo => "fifo",
        }
    }
}

/// Permission bits an entry may carry: rwx for all three, setuid, setgid, sticky.
pub const MODE_MASK: u32 = 0o7777;
/// Linux cannot change a symlink's mode; it is always this.
pub const SYMLINK_MODE: u32 = 0o777;
/// Longest path and link target accepted (Linux PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Longest single name (Linux NAME_MAX).
pub const MAX_NAME: usize = 255;
/// Xattr limits of Linux (XATTR_NAME_MAX, XATTR_SIZE_MAX).
pub const MAX_XATTR_NAME: usize = 255;
/// Largest xattr value in bytes (XATTR_SIZE_MAX, 64 KiB).
pub const MAX_XATTR_VALUE: usize = 65536;
/// uid and gid `(uid_t)-1`: chown(2) reads it as "leave unchanged", so no host can be
/// given an entry owned by it (an export or push would "succeed" with whatever owner the
/// file had, and drift forever).
pub const UNAPPLICABLE_ID: u32 = u32::MAX;

/// Why an entry could not be materialised exactly, if it could not: an owner of
/// [`UNAPPLICABLE_ID`], or an xattr name with `=` (a tar's pax key
/// `SCHILY.xattr.NAME=VALUE` ends at the first `=`, so such a name would read back as
/// another attribute). Every tree is checked ([`validate`]); importers also check each
/// entry as they make it, to stop before reading the rest.
pub fn check_applicable(e: &Entry) -> std::result::Result<(), String> {
    for (what, id) in [("uid", e.uid), ("gid", e.gid)] {
        if id == UNAPPLICABLE_ID {
            return Err(format!(
                "{what} {id} is (uid_t)-1, which chown reads as \"leave unchanged\": no host can be given it"
            ));
        }
    }
    if let Some((name, _)) = e.xattrs.iter().find(|(n, _)| n.contains(&b'=')) {
        return Err(format!(
            "xattr name {} contains `=`, which a tar archive cannot carry (refused)",
            escape::escape(name)
        ));
    }
    Ok(())
}

/// One path of an image and everything about it that the image fixes: kind, content,
/// owner, mode, mtime and xattrs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `/` for the root, `/etc/passwd` otherwise: raw bytes, no `.`/`..`/empty components.
    pub path: Vec<u8>,
    /// What the entry is, with its content or target.
    pub kind: Kind,
    /// Permission bits (`MODE_MASK`); the file type is in `kind`.
    pub mode: u32,
    /// The numeric owner (never [`UNAPPLICABLE_ID`]); names are not part of an image.
    pub uid: u32,
    /// The numeric group (never [`UNAPPLICABLE_ID`]).
    pub gid: u32,
    /// Seconds since the epoch; sub-second parts are not part of an image.
    pub mtime: i64,
    /// Sorted by name, names unique.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// A directory entry (tests, and the root an archive may leave implicit).
    pub fn dir(path: &[u8], mode: u32, mtime: i64) -> Entry {
        Entry {
            path: path.to_vec(),
            kind: Kind::Dir,
            mode,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: Vec::new(),
        }
    }

    /// Everything but the mtime is equal: the ProdNG rule's "content and metadata unchanged".
    pub fn same_but_mtime(&self, other: &Entry) -> bool {
        self.path == other.path
            && self.kind == other.kind
            && self.mode == other.mode
            && self.uid == other.uid
            && self.gid == other.gid
            && self.xattrs == other.xattrs
    }

    /// Whether this is another name for an earlier file ([`Kind::HardLink`]).
    pub fn is_hardlink(&self) -> bool {
        matches!(self.kind, Kind::HardLink { .. })
    }
}

/// A validated image tree: entries in path order ([`path_cmp`]), root first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    entries: Vec<Entry>,
}

impl Tree {
    /// Sorts and validates `entries` (see [`validate`]).
    pub fn new(mut entries: Vec<Entry>) -> Result<Tree> {
        entries.sort_by(|a, b| path_cmp(&a.path, &b.path));
        validate(&entries)?;
        Ok(Tree { entries })
    }

    /// All entries, in path order, root first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entries, in path order, given up by the tree.
    pub fn into_entries(self) -> Vec<Entry> {
        self.entries
    }

    /// The entry at `path` (entry form, `/etc/passwd`), if the tree has one.
    pub fn get(&self, path: &[u8]) -> Option<&Entry> {
        self.index_of(path).map(|i| &self.entries[i])
    }

    /// The position of `path`'s entry in [`Tree::entries`] (a binary search), if the tree
    /// has one.
    pub fn index_of(&self, path: &[u8]) -> Option<usize> {
        self.entries
            .binary_search_by(|e| path_cmp(&e.path, path))
            .ok()
    }

    /// The entry and everything below it, in order (`path` `/` gives the whole tree).
    pub fn subtree<'a>(&'a self, path: &'a [u8]) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(move |e| path == b"/" || e.path == path || is_below(&e.path, path))
    }

    /// Totals for `imager show`.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for e in &self.entries {
            match &e.kind {
                Kind::File { size, .. } => {
                    s.files += 1;
                    s.bytes += size;
                }
                Kind::Dir => s.dirs += 1,
                Kind::Symlink { .. } => s.symlinks += 1,
                Kind::HardLink { .. } => s.hardlinks += 1,
                Kind::CharDev { .. } | Kind::BlockDev { .. } => s.devices += 1,
                Kind::Fifo => s.fifos += 1,
            }
            if !e.xattrs.is_empty() {
                s.with_xattrs += 1;
            }
        }
        let mut hashes: Vec<Hash> = self
            .entries
            .iter()
            .filter_map(|e| match e.kind {
                Kind::File { hash, .. } => Some(hash),
                _ => None,
            })
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        s.objects = hashes.len() as u64;
        s
    }

    /// The distinct content hashes with their sizes.
    pub fn objects(&self) -> Vec<(Hash, u64)> {
        let mut v: Vec<(Hash, u64)> = self
            .entries
            .iter()
            .filter_map(|e| match e.kind {
                Kind::File { hash, size } => Some((hash, size)),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Counts over a tree ([`Tree::stats`]): entries by kind, and content sizes.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Regular file entries (hard links not included).
    pub files: u64,
    /// Directory entries, the root included.
    pub dirs: u64,
    /// Symlink entries.
    pub symlinks: u64,
    /// Hard link entries (the names beyond a file's first).
    pub hardlinks: u64,
    /// Character and block device entries together.
    pub devices: u64,
    /// Named pipe entries.
    pub fifos: u64,
    /// Entries of any kind with at least one xattr.
    pub with_xattrs: u64,
    /// The sum of the regular files' sizes, in bytes: every file counts, even one whose
    /// content another file has; hard links do not count again.
    pub bytes: u64,
    /// Distinct contents (hashes), which is how many objects the store holds for the tree.
    pub objects: u64,
}

/// The order of entries in an image: byte order, except that `/` sorts before every
/// other byte. That is a depth-first walk with each directory's names in byte order, so
/// everything below a directory comes right after it (`/etc/python3`, its children, then
/// `/etc/python3.11`). Tar extractors finish a directory when they meet a path outside
/// it, so this order is what lets GNU tar restore directory mtimes exactly. Paths hold
/// no NUL byte, so mapping `/` to 0 is exact.
pub fn path_cmp(a: &[u8], b: &[u8]) -> Ordering {
    // The first differing byte decides (`/` sorts first; paths hold no NUL, so the
    // mapping is one to one). The common prefix is skipped by whole blocks: paths in a
    // tree share long prefixes, and sorting and searching compare them constantly.
    const BLOCK: usize = 32;
    let key = |c: u8| if c == b'/' { 0 } else { c };
    let mut i = a
        .chunks(BLOCK)
        .zip(b.chunks(BLOCK))
        .take_while(|(x, y)| x == y)
        .count()
        * BLOCK;
    while i < a.len() && i < b.len() && a[i] == b[i] {
        i += 1;
    }
    match (a.get(i), b.get(i)) {
        (Some(&x), Some(&y)) => key(x).cmp(&key(y)),
        (x, y) => x.is_some().cmp(&y.is_some()),
    }
}

/// True when `path` is strictly below directory `dir` (both in entry form).
pub fn is_below(path: &[u8], dir: &[u8]) -> bool {
    if dir == b"/" {
        return path != b"/";
    }
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// The parent directory of an entry path (`None` for the root).
pub fn parent(path: &[u8]) -> Option<&[u8]> {
    if path == b"/" {
        return None;
    }
    let i = path.iter().rposition(|&b| b == b'/')?;
    Some(if i == 0 { b"/" } else { &path[..i] })
}

/// The last component of an entry path.
pub fn file_name(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Joins a relative path (components separated by `/`, no leading slash) onto `/`,
/// checking every component; the form every importer turns its names into.
pub fn entry_path(rel: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(rel.len() + 1);
    for comp in rel.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err("path has a `..` component".into()),
            c => {
                if c.contains(&0) {
                    return Err("path has a NUL byte".into());
                }
                out.push(b'/');
                out.extend_from_slice(c);
            }
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

fn check_path(p: &[u8]) -> std::result::Result<(), String> {
    if p == b"/" {
        return Ok(());
    }
    if p.first() != Some(&b'/') {
        return Err("path does not start with /".into());
    }
    if p.len() > MAX_PATH {
        return Err(format!("path longer than {MAX_PATH} bytes"));
    }
    for comp in p[1..].split(|&b| b == b'/') {
        match comp {
            b"" => return Err("empty path component".into()),
            b"." | b".." => return Err("`.` or `..` path component".into()),
            c if c.len() > MAX_NAME => return Err(format!("name longer than {MAX_NAME} bytes")),
            c if c.contains(&0) => return Err("NUL byte in path".into()),
            _ => {}
        }
    }
    Ok(())
}

/// A hard link's rule: its target is an earlier regular file of the tree (entry `i` is
/// the link).
fn check_hard_link(entries: &[Entry], i: usize, e: &Entry, target: &[u8]) -> Result<()> {
    let j = entries
        .binary_search_by(|x| path_cmp(&x.path, target))
        .map_err(|_| {
            Error::invalid(
                &e.path,
                format!(
                    "hard link to {} which is not in the tree",
                    escape::escape(target)
                ),
            )
        })?;
    if j >= i || !matches!(entries[j].kind, Kind::File { .. }) {
        return Err(Error::invalid(
            &e.path,
            format!(
                "hard link target {} is not an earlier regular file",
                escape::escape(target)
            ),
        ));
    }
    Ok(())
}

/// An entry's xattrs: names non-empty, short and without NUL, values at most 64 KiB,
/// sorted by name without duplicates (one canonical form, which the image ID relies on).
fn check_xattrs(e: &Entry) -> Result<()> {
    for (k, (name, value)) in e.xattrs.iter().enumerate() {
        if name.is_empty() || name.len() > MAX_XATTR_NAME || name.contains(&0) {
            return Err(Error::invalid(
                &e.path,
                "xattr name empty, too long or with NUL",
            ));
        }
        if value.len() > MAX_XATTR_VALUE {
            return Err(Error::invalid(&e.path, "xattr value larger than 64 KiB"));
        }
        if k > 0 && e.xattrs[k - 1].0 >= *name {
            return Err(Error::invalid(&e.path, "xattrs not sorted or duplicated"));
        }
    }
    Ok(())
}

/// The rules every tree obeys, whatever produced it. `entries` must be sorted.
///
/// Parents come before children and must be directories: this is what makes "an entry
/// under a symlink" impossible in an image, so nothing that materialises an image can be
/// led through a link.
pub fn validate(entries: &[Entry]) -> Result<()> {
    let root = entries
        .first()
        .ok_or_else(|| Error::invalid(b"/", "the tree is empty (no root directory)"))?;
    if root.path != b"/" || root.kind != Kind::Dir {
        return Err(Error::invalid(b"/", "the root must be a directory"));
    }
    // Directory paths in a set: a sorted Vec probed by binary search.
    let mut dirs: Vec<&[u8]> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        check_path(&e.path).map_err(|r| Error::invalid(&e.path, r))?;
        if i > 0 && path_cmp(&entries[i - 1].path, &e.path) != Ordering::Less {
            return Err(Error::invalid(&e.path, "duplicate path"));
        }
        if let Some(p) = parent(&e.path) {
            if dirs.binary_search_by(|d| path_cmp(d, p)).is_err() {
                let reason = match entries.binary_search_by(|x| path_cmp(&x.path, p)) {
                    Ok(j) => format!(
                        "its parent {} is a {}, not a directory",
                        escape::escape(p),
                        entries[j].kind.name()
                    ),
                    Err(_) => format!("its parent directory {} is missing", escape::escape(p)),
                };
                return Err(Error::invalid(&e.path, reason));
            }
        }
        check_applicable(e).map_err(|r| Error::invalid(&e.path, r))?;
        if e.mode & !MODE_MASK != 0 {
            return Err(Error::invalid(
                &e.path,
                format!("mode {:o} has bits beyond 7777", e.mode),
            ));
        }
        match &e.kind {
            Kind::Dir => {
                // Sorted insert keeps `dirs` sorted: byte order of dirs is entry order,
                // and entries arrive sorted.
                dirs.push(&e.path);
            }
            Kind::Symlink { target } => {
                if target.is_empty() || target.len() > MAX_PATH || target.contains(&0) {
                    return Err(Error::invalid(
                        &e.path,
                        "symlink target empty, too long or with NUL",
                    ));
                }
                if e.mode != SYMLINK_MODE {
                    return Err(Error::invalid(&e.path, "a symlink's mode is always 0777"));
                }
            }
            Kind::HardLink { target } => check_hard_link(entries, i, e, target)?,
            _ => {}
        }
        check_xattrs(e)?;
    }
    // `dirs` was filled in entry order, which is sorted order, so binary search held.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports and saved rollout state carry hashes as hex text, and refuse text that is
    /// not one (uppercase, short, not hex), naming it.
    #[test]
    fn a_hash_is_its_hex_text_in_json() {
        let h = Hash::of(b"x");
        let text = serde_json::to_string(&h).unwrap();
        assert_eq!(text, format!("\"{}\"", h.to_hex()));
        assert_eq!(serde_json::from_str::<Hash>(&text).unwrap(), h);
        assert_eq!(h.short(), h.to_hex()[..12]);
        for bad in [
            format!("\"{}\"", h.to_hex().to_uppercase()),
            "\"abc\"".to_string(),
            format!("\"{}\"", "g".repeat(64)),
            "42".to_string(),
        ] {
            let e = serde_json::from_str::<Hash>(&bad).unwrap_err().to_string();
            assert!(
                e.contains("not a hash") || e.contains("invalid type"),
                "{bad}: {e}"
            );
        }
    }

    proptest::proptest! {
        /// The block-skipping comparison orders paths as the plain one does.
        #[test]
        fn path_cmp_is_the_byte_order_with_slash_first(
            prefix in proptest::collection::vec(proptest::sample::select(vec![b'/', b'a', b'.', b'z', 0xff]), 0..80),
            a in proptest::collection::vec(1u8..=255, 0..40),
            b in proptest::collection::vec(1u8..=255, 0..40),
        ) {
            let key = |c: &u8| if *c == b'/' { 0 } else { *c };
            let (a, b) = ([&prefix[..], &a].concat(), [&prefix[..], &b].concat());
            proptest::prop_assert_eq!(path_cmp(&a, &b), a.iter().map(key).cmp(b.iter().map(key)));
        }
    }

    fn dir(p: &str) -> Entry {
        Entry::dir(p.as_bytes(), 0o755, 0)
    }

    #[test]
    fn entry_under_a_symlink_is_refused() {
        let mut l = dir("/lib");
        l.kind = Kind::Symlink {
            target: b"usr/lib".to_vec(),
        };
        l.mode = SYMLINK_MODE;
        let err = Tree::new(vec![dir("/"), l, dir("/lib/x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("/lib/x") && err.contains("symlink"), "{err}");
    }

    #[test]
    fn entry_paths_are_checked() {
        assert_eq!(entry_path(b"./a//b/").unwrap(), b"/a/b");
        assert_eq!(entry_path(b"./").unwrap(), b"/");
        assert!(entry_path(b"a/../../etc").is_err());
        assert_eq!(parent(b"/a"), Some(&b"/"[..]));
        assert_eq!(parent(b"/a/b"), Some(&b"/a"[..]));
        assert!(is_below(b"/a/b", b"/a") && !is_below(b"/ab", b"/a"));
    }
}
