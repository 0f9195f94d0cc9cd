//! What differs at one path, item by item, as `rsync --itemize-changes` says it: the
//! bits of [`crate::Change::what`] and their letters.
//!
//! ```text
//! YXcstpogx PATH
//! ```
//! `Y` is what happens: `>` content arrives, `c` the path is created (`+` in every
//! column), `.` only metadata changes, `*` a message (`*deleting`); `X` the kind (`f`
//! file, `d` directory, `L` symlink, `D` device, `S` fifo, `h` hard link); then `c`
//! content, `s` size, `t` mtime, `p` mode, `o` owner, `g` group, `x` xattrs, each `.`
//! when it is the same. A kind that changes says `R` in the `c` column (replaced).

use imager_core::{Entry, Kind};

/// Both are files and their content differs (`c`).
pub const CONTENT: u32 = 1;
/// Both are files and their sizes differ (`s`).
pub const SIZE: u32 = 1 << 1;
/// The modification time differs (`t`).
pub const MTIME: u32 = 1 << 2;
/// The permission bits differ (`p`).
pub const MODE: u32 = 1 << 3;
/// The owning user differs (`o`).
pub const OWNER: u32 = 1 << 4;
/// The owning group differs (`g`).
pub const GROUP: u32 = 1 << 5;
/// The extended attributes differ (`x`).
pub const XATTRS: u32 = 1 << 6;
/// The kind, a symlink's target, a device's number or a hard link's target differs.
pub const REPLACED: u32 = 1 << 7;
/// Another name outside the scan shares the inode: the path gets a new one.
pub const SHARED: u32 = 1 << 8;
/// A delete of a path the host made (not the recorded image's), under a prefix the
/// image owns.
pub const UNMANAGED: u32 = 1 << 9;
/// The kind letter's code sits above the flags.
const KIND_SHIFT: u32 = 24;

/// The letter of an entry's kind.
pub fn kind_letter(k: &Kind) -> char {
    match k {
        Kind::File { .. } => 'f',
        Kind::Dir => 'd',
        Kind::Symlink { .. } => 'L',
        Kind::CharDev { .. } | Kind::BlockDev { .. } => 'D',
        Kind::Fifo => 'S',
        Kind::HardLink { .. } => 'h',
    }
}

const KINDS: [char; 6] = ['f', 'd', 'L', 'D', 'S', 'h'];

/// `flags` with the kind letter of `kind` (the image's entry, or the host's for a
/// delete).
pub fn with_kind(flags: u32, kind: &Kind) -> u32 {
    let letter = kind_letter(kind);
    let code = KINDS.iter().position(|&c| c == letter).unwrap_or(0) as u32 + 1;
    flags | (code << KIND_SHIFT)
}

/// The flags for how host entry `h` differs from image entry `t` (same path).
pub fn between(t: &Entry, h: &Entry) -> u32 {
    let mut f = 0;
    match (&t.kind, &h.kind) {
        (Kind::File { hash: a, size: s }, Kind::File { hash: b, size: r }) => {
            if a != b {
                f |= CONTENT;
            }
            if s != r {
                f |= SIZE;
            }
        }
        (a, b) if a != b => f |= REPLACED,
        _ => {}
    }
    if t.mtime != h.mtime && !t.is_hardlink() {
        f |= MTIME;
    }
    if t.mode != h.mode && !t.is_hardlink() {
        f |= MODE;
    }
    if t.uid != h.uid && !t.is_hardlink() {
        f |= OWNER;
    }
    if t.gid != h.gid && !t.is_hardlink() {
        f |= GROUP;
    }
    if t.xattrs != h.xattrs && !t.is_hardlink() {
        f |= XATTRS;
    }
    with_kind(f, &t.kind)
}

/// The 9-letter column of a change (`YXcstpogx`), as in the module comment.
pub fn letters(kind: crate::ChangeKind, what: u32) -> String {
    use crate::ChangeKind as C;
    let code = (what >> KIND_SHIFT) as usize;
    let x = code
        .checked_sub(1)
        .and_then(|i| KINDS.get(i))
        .copied()
        .unwrap_or('?');
    match kind {
        C::Add => format!("c{x}+++++++"),
        C::Delete => "*deleting".to_string(),
        _ => {
            let y = if what & (CONTENT | REPLACED | SHARED) != 0 && x == 'f' {
                '>'
            } else if what & (REPLACED | SHARED) != 0 {
                'c'
            } else {
                '.'
            };
            let col = |bit: u32, c: char| if what & bit != 0 { c } else { '.' };
            let content = if what & REPLACED != 0 {
                'R'
            } else if what & SHARED != 0 {
                'n'
            } else {
                col(CONTENT, 'c')
            };
            format!(
                "{y}{x}{content}{}{}{}{}{}{}",
                col(SIZE, 's'),
                col(MTIME, 't'),
                col(MODE, 'p'),
                col(OWNER, 'o'),
                col(GROUP, 'g'),
                col(XATTRS, 'x')
            )
        }
    }
}

/// The legend, for `--help`.
pub const LEGEND: &str = "Itemised changes (as rsync --itemize-changes): YXcstpogx PATH. \
Y: '>' content arrives, 'c' created or replaced, '.' metadata only, '*' a message \
(*deleting; *unmanaged: made on the host, kept). X: f file, d directory, L symlink, \
D device, S fifo, h hard link. Then c content, s size, t mtime, p mode, o owner, \
g group, x xattrs ('.' when the same; 'R' in the c column: another kind, symlink or \
link target; 'n' a new inode, other names share the old one).";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChangeKind;
    use imager_core::Hash;

    fn file(content: &[u8], mode: u32, mtime: i64) -> Entry {
        Entry {
            path: b"/f".to_vec(),
            kind: Kind::File {
                size: content.len() as u64,
                hash: Hash::of(content),
            },
            mode,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: vec![],
        }
    }

    #[test]
    fn columns_say_what_differs() {
        let t = file(b"new!", 0o644, 1);
        assert_eq!(
            letters(ChangeKind::Content, between(&t, &file(b"old", 0o644, 2))),
            ">fcst...."
        );
        assert_eq!(
            letters(ChangeKind::Meta, between(&t, &file(b"new!", 0o600, 1))),
            ".f...p..."
        );
        assert_eq!(
            letters(ChangeKind::Add, with_kind(0, &Kind::Dir)),
            "cd+++++++"
        );
        assert_eq!(
            letters(ChangeKind::Delete, with_kind(0, &Kind::Fifo)),
            "*deleting"
        );
        let mut l = t.clone();
        l.kind = Kind::Symlink {
            target: b"x".to_vec(),
        };
        assert_eq!(letters(ChangeKind::Replace, between(&l, &t)), "cLR......");
    }
}
