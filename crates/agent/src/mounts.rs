//! Mount points beneath a host's root. `st_dev` alone misses a bind mount of a directory
//! of the root's own filesystem (container volumes, systemd `BindPaths=`, `/srv` bound
//! from `/data`): it has the same device, and a push that entered it would change files
//! outside the root (and fail with `EXDEV` on a rename into it). So mount points come
//! from the kernel's own list, `/proc/self/mountinfo`, and single directories are checked
//! by mount ID (`statx(STATX_MNT_ID)`) where a removal could cross into one.

use imager_core::fsx;
use rustix::fs::{AtFlags, StatxFlags};
use std::os::fd::AsFd;
use std::path::Path;

/// Every mount point strictly beneath `root`, as entry paths (`/srv/data`), from this
/// process's mount table. Mount points of files (a bind-mounted `/etc/resolv.conf`)
/// are listed too.
pub fn beneath(root: &Path) -> crate::Result<Vec<Vec<u8>>> {
    let real = fsx::canonicalize(root)?;
    let table = fsx::read("/proc/self/mountinfo".as_ref())?;
    Ok(parse_beneath(&table, fsx::path_bytes(&real)))
}

/// The mount points in a `mountinfo` text that lie beneath `root` (an absolute path).
fn parse_beneath(table: &[u8], root: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for line in table.split(|&c| c == b'\n') {
        // id parent major:minor root mount-point options ...
        let Some(point) = line.split(|&c| c == b' ').nth(4) else {
            continue;
        };
        let point = unescape_octal(point);
        let rel = if root == b"/" {
            Some(point.as_slice())
        } else {
            point
                .strip_prefix(root)
                .filter(|r| r.first() == Some(&b'/'))
        };
        if let Some(rel) = rel.filter(|r| r.len() > 1) {
            out.push(rel.to_vec());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape_octal(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 4 <= s.len() {
            let o = &s[i + 1..i + 4];
            if o.iter().all(|c| (b'0'..=b'7').contains(c)) {
                out.push((o[0] - b'0') * 64 + (o[1] - b'0') * 8 + (o[2] - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// The mount ID of `name` in `dir` (not following a symlink), where the kernel has it.
pub fn mount_id(dir: impl AsFd, name: &[u8]) -> Option<u64> {
    let st = rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::MNT_ID).ok()?;
    (st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_beneath_a_root_are_read_from_mountinfo() {
        let table = b"22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
            30 22 8:1 /data/srv /host/root/srv rw - ext4 /dev/sda1 rw\n\
            31 22 8:1 /x /host/root/etc/resolv.conf rw - ext4 /dev/sda1 rw\n\
            32 22 0:5 / /host/root/my\\040dir rw - tmpfs tmpfs rw\n\
            33 22 0:6 / /host/rootless rw - tmpfs tmpfs rw\n\
            34 22 0:7 / /host/root rw - tmpfs tmpfs rw\n";
        assert_eq!(
            parse_beneath(table, b"/host/root"),
            vec![
                b"/etc/resolv.conf".to_vec(),
                b"/my dir".to_vec(),
                b"/srv".to_vec()
            ]
        );
    }
}
