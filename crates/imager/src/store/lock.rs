//! The store's lock: an `flock` on `STORE/lock`, shared by readers and exclusive by
//! writers. A command that has to wait for it says so, and who holds it (from the
//! kernel's `/proc/locks`), through the notice its binary set ([`on_lock_wait`]): an
//! `imager build` that blocked silently behind a long `syncer publish` looked hung.

use super::Access;
use crate::error::{IoContext, Result};
use rustix::fs::FlockOperation;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

static NOTICE: OnceLock<fn(&str)> = OnceLock::new();

/// Sets what is told, once, when opening a store has to wait for its lock (a binary
/// prints it on stderr; without a notice the wait is silent, as a library's should be).
pub fn on_lock_wait(notice: fn(&str)) {
    let _ = NOTICE.set(notice);
}

/// Takes the lock on `lock` (the file at `path`) for `access`, telling the notice first
/// when another process holds it.
pub(super) fn take(lock: &File, path: &Path, access: Access) -> Result<()> {
    let (now, wait) = match access {
        Access::Read => (
            FlockOperation::NonBlockingLockShared,
            FlockOperation::LockShared,
        ),
        Access::Write => (
            FlockOperation::NonBlockingLockExclusive,
            FlockOperation::LockExclusive,
        ),
    };
    match rustix::fs::flock(lock, now) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::WOULDBLOCK) => {}
        Err(e) => return Err(e).ctx("lock", path),
    }
    if let Some(notice) = NOTICE.get() {
        notice(&waiting(lock, path, access));
    }
    rustix::fs::flock(lock, wait).ctx("lock", path)
}

/// "waiting for the store's lock (PATH) to read: pid 123 holds it for writing (syncer
/// publish v2 --to /srv/pub)".
fn waiting(lock: &File, path: &Path, access: Access) -> String {
    let want = match access {
        Access::Read => "to read",
        Access::Write => "to write",
    };
    let holders = lock
        .metadata()
        .map(|m| {
            let text = crate::fsx::read_to_string(Path::new("/proc/locks")).unwrap_or_default();
            holders(&text, m.dev(), m.ino())
        })
        .unwrap_or_default();
    let who = if holders.is_empty() {
        "another process holds it".to_string()
    } else {
        holders
            .iter()
            .map(|(pid, write)| {
                let how = if *write { "writing" } else { "reading" };
                match command_of(*pid) {
                    Some(cmd) => format!("pid {pid} holds it for {how} ({cmd})"),
                    None => format!("pid {pid} holds it for {how}"),
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    format!(
        "waiting for the store's lock ({}) {want}: {who}",
        path.display()
    )
}

/// The processes holding an flock on the file (`dev`, `ino`) by `/proc/locks`'s lines
/// (`1: FLOCK  ADVISORY  WRITE 1234 fd:00:56789 0 EOF`), with whether each writes;
/// processes waiting (`->`) are left out.
fn holders(proc_locks: &str, dev: u64, ino: u64) -> Vec<(u32, bool)> {
    let id = format!(
        "{:02x}:{:02x}:{ino}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev)
    );
    let mut out = Vec::new();
    for line in proc_locks.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[1] == "->" || f[1] != "FLOCK" || f[5] != id {
            continue;
        }
        if let Ok(pid) = f[4].parse::<u32>() {
            if !out.iter().any(|(p, _)| *p == pid) {
                out.push((pid, f[3] == "WRITE"));
            }
        }
    }
    out
}

/// A process's command line, spaces between its arguments, at most 160 characters.
fn command_of(pid: u32) -> Option<String> {
    let raw = crate::fsx::read(Path::new(&format!("/proc/{pid}/cmdline"))).ok()?;
    let mut cmd = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    if cmd.is_empty() {
        return None;
    }
    if cmd.chars().count() > 160 {
        cmd = cmd.chars().take(157).collect::<String>() + "...";
    }
    Some(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_read_from_proc_locks() {
        let dev = rustix::fs::makedev(0xfd, 0);
        let text = "1: POSIX  ADVISORY  WRITE 10 fd:00:42 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 11 fd:00:42 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 12 fd:00:42 0 EOF\n\
                    3: FLOCK  ADVISORY  READ 13 fd:00:42 0 EOF\n\
                    4: FLOCK  ADVISORY  READ 14 fd:00:43 0 EOF\n\
                    5: FLOCK  ADVISORY  READ 15 08:01:42 0 EOF\n";
        assert_eq!(holders(text, dev, 42), vec![(11, true), (13, false)]);
    }
}
