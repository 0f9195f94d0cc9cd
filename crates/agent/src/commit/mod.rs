//! The commit: staged content moved into place by renames, recorded first in a journal
//! so that an agent killed at any point, or a dropped connection, is rolled forward the
//! next time an agent starts on the host.
//!
//! Every operation is idempotent and checks what is there before acting (a rename whose
//! staged file is gone was done; a swap whose path already has the new kind was done),
//! so replaying a journal from the start after any crash converges on the image. Order:
//! new directories and replacements in path order (parents first), hard links, in-place
//! metadata, deletes deepest first, leftovers of swaps, directory metadata deepest first.
//! A file is at every moment either its old or its new version: content only ever
//! arrives by `rename` or `renameat2(RENAME_EXCHANGE)`.

use super::fsops::{self, is_dir, remove_tree_at, stat_at};
use super::state::{self, StateDir};
use crate::error::{Error, Result};
use crate::protocol::Previous;
use imager_core::error::IoContext;
use imager_core::safe_dir::Beneath;
use imager_core::tree::escape::{escape, unescape};
use imager_core::{Hash, Tree};
use rustix::fs::{AtFlags, RenameFlags};
use rustix::io::Errno;
use std::os::fd::OwnedFd;

/// Where content is staged, relative to the root: on the root's filesystem, so that the
/// commit's renames stay on it.
pub const STAGING: &[u8] = b"/.syncer-staging";
const HEADER: &str = "#syncer-journal v1";

mod plan;
pub use plan::plan_ops;

/// One step of a commit, one line of its journal; each can be replayed after a crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A new directory (0700 until `DirMeta`). Only in journals of earlier agents: new
    /// directories are staged and renamed now.
    Mkdir(Vec<u8>),
    /// Exchange a staged entry with the host's entry of the other kind (directory versus
    /// anything else); `new_is_dir` tells which side is new, so a replay can tell it was done.
    Swap {
        /// The entry's name in the staging directory.
        staged: String,
        /// The host path it goes to, relative to the root.
        path: Vec<u8>,
        /// Whether the staged (new) entry is the directory.
        new_is_dir: bool,
    },
    /// Rename a staged entry into place, over what the path holds unless one of the two is
    /// a directory (that is a `Swap`).
    Rename {
        /// The entry's name in the staging directory.
        staged: String,
        /// The host path it goes to, relative to the root.
        path: Vec<u8>,
    },
    /// Make `path` a hard link to `target` (through a temporary name, so that it is
    /// replaced at once).
    Link {
        /// The path linked to, relative to the root: already in place when this runs.
        target: Vec<u8>,
        /// The new name, relative to the root.
        path: Vec<u8>,
    },
    /// Set the owner, mode, mtime and xattrs of a path that is not a directory to the
    /// image's.
    Meta(Vec<u8>),
    /// Delete a path; one already gone is done, and a directory that still holds
    /// something (local state, a mount) stays.
    Delete(Vec<u8>),
    /// Remove what a swap left in the staging directory (the host's old entry).
    Trash(String),
    /// Set a directory's metadata to the image's, deepest first, after everything below it
    /// has changed (which moves its mtime).
    DirMeta(Vec<u8>),
}

impl Op {
    fn line(&self) -> String {
        match self {
            Op::Mkdir(p) => format!("mkdir {}", escape(p)),
            Op::Swap {
                staged,
                path,
                new_is_dir,
            } => format!(
                "swap {staged} {} {}",
                if *new_is_dir { "dir" } else { "nondir" },
                escape(path)
            ),
            Op::Rename { staged, path } => format!("rename {staged} {}", escape(path)),
            Op::Link { target, path } => format!("link {} {}", escape(target), escape(path)),
            Op::Meta(p) => format!("meta {}", escape(p)),
            Op::Delete(p) => format!("delete {}", escape(p)),
            Op::Trash(s) => format!("trash {s}"),
            Op::DirMeta(p) => format!("dirmeta {}", escape(p)),
        }
    }

    fn parse(line: &str) -> std::result::Result<Op, String> {
        let w: Vec<&str> = line.split(' ').collect();
        let p = |s: &str| unescape(s);
        let staged = |s: &str| -> std::result::Result<String, String> {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                Ok(s.to_string())
            } else {
                Err(format!("bad staged name {s:?}"))
            }
        };
        Ok(match w.as_slice() {
            ["mkdir", a] => Op::Mkdir(p(a)?),
            ["swap", s, k, a] => Op::Swap {
                staged: staged(s)?,
                path: p(a)?,
                new_is_dir: *k == "dir",
            },
            ["rename", s, a] => Op::Rename {
                staged: staged(s)?,
                path: p(a)?,
            },
            ["link", t, a] => Op::Link {
                target: p(t)?,
                path: p(a)?,
            },
            ["meta", a] => Op::Meta(p(a)?),
            ["delete", a] => Op::Delete(p(a)?),
            ["trash", s] => Op::Trash(staged(s)?),
            ["dirmeta", a] => Op::DirMeta(p(a)?),
            _ => return Err(format!("unknown journal line {line:?}")),
        })
    }
}

/// A commit as written before its first operation (the commit point) and replayed by
/// [`roll_forward`] until it is done.
pub struct Journal {
    /// The image the commit brings the host to.
    pub image: Hash,
    /// The operations, in the order they run.
    pub ops: Vec<Op>,
    /// Every path the commit changes (for triggers).
    pub changed: Vec<Vec<u8>>,
    /// What to record as the host's previous image: the usual rule (the image it had),
    /// or what a rollback restores.
    pub previous: Previous,
}

impl Journal {
    /// The journal file's text: header line with the image, then `previous`, the `changed`
    /// paths and one line per operation.
    pub fn text(&self) -> String {
        let mut s = format!("{HEADER} image={}\n", self.image);
        match self.previous {
            Previous::Keep => {}
            Previous::None => s.push_str("previous none\n"),
            Previous::Image(h) => s.push_str(&format!("previous {h}\n")),
        }
        for c in &self.changed {
            s.push_str("changed ");
            s.push_str(&escape(c));
            s.push('\n');
        }
        for o in &self.ops {
            s.push_str(&o.line());
            s.push('\n');
        }
        s
    }

    /// A journal from its file's text; the error says which line is wrong.
    pub fn parse(text: &str) -> std::result::Result<Journal, String> {
        let mut lines = text.lines();
        let head = lines.next().unwrap_or("");
        let image = head
            .strip_prefix(HEADER)
            .and_then(|r| r.strip_prefix(" image="))
            .and_then(Hash::from_hex)
            .ok_or_else(|| format!("bad journal header {head:?}"))?;
        let mut j = Journal {
            image,
            ops: Vec::new(),
            changed: Vec::new(),
            previous: Previous::Keep,
        };
        for l in lines {
            if let Some(p) = l.strip_prefix("previous ") {
                j.previous = match p {
                    "none" => Previous::None,
                    h => Previous::Image(
                        Hash::from_hex(h).ok_or_else(|| format!("bad previous image {h:?}"))?,
                    ),
                };
            } else if let Some(c) = l.strip_prefix("changed ") {
                j.changed.push(unescape(c)?);
            } else {
                j.ops.push(Op::parse(l)?);
            }
        }
        Ok(j)
    }
}

/// A failed operation of a commit past its commit point.
#[derive(Debug)]
pub struct OpFailed {
    /// 1-based, of `j.ops.len()`.
    pub index: usize,
    /// The operation's journal line (or what failed after them), for the message.
    pub line: String,
    /// Why it failed.
    pub error: Error,
}

impl OpFailed {
    /// A failure after the operations: flushing them or recording the new image.
    pub fn recording(error: Error) -> OpFailed {
        OpFailed {
            index: 0,
            line: "flush and record the new image, after every operation".into(),
            error,
        }
    }
}

/// How every error of a host stuck in a commit begins (status reports such a host as
/// mid-commit, not unreachable).
pub const MID_COMMIT: &str = "the host is in the middle of a commit";

/// The error for a host left in the middle of a commit: what it is committing to, what
/// blocks it, and the two ways out.
pub fn stuck(b: &Beneath, j: &Journal, f: OpFailed) -> Error {
    let step = if f.index == 0 {
        format!("the step after its {} operations", j.ops.len())
    } else {
        format!("operation {} of {}", f.index, j.ops.len())
    };
    let ops = j.ops.len() as u64;
    let at = crate::protocol::MidCommit {
        image: Some(j.image),
        // Every operation before the one that failed was done.
        applied: Some(if f.index == 0 {
            ops
        } else {
            f.index as u64 - 1
        }),
        ops: Some(ops),
    };
    Error::MidCommit(
        Box::new(at),
        format!(
            "{MID_COMMIT} to image {} (journal {}): {step} ({}) failed: {}. Every session \
         tries to finish the commit first; fix the cause and push again, or drop the \
         unfinished commit with `syncer abandon-commit HOST` (the host keeps what the \
         commit had done) and push an image",
            j.image,
            b.display(state::DIR).join(state::JOURNAL).display(),
            f.line,
            f.error
        ),
    )
}

/// Carries out the journal's operations (idempotently).
pub fn apply(
    b: &Beneath,
    staging: &OwnedFd,
    image: &Tree,
    j: &Journal,
) -> std::result::Result<(), OpFailed> {
    for (i, op) in j.ops.iter().enumerate() {
        super::test_stop_point("commit", i + 1);
        apply_op(b, staging, image, op).map_err(|error| OpFailed {
            index: i + 1,
            line: op.line(),
            error,
        })?;
    }
    Ok(())
}

fn apply_op(b: &Beneath, staging: &OwnedFd, image: &Tree, op: &Op) -> Result<()> {
    let entry = |p: &[u8]| {
        image.get(p).ok_or_else(|| {
            Error::Agent(format!("journal names {} which the image lacks", escape(p)))
        })
    };
    let staging_shown = b.display(STAGING);
    match op {
        Op::Mkdir(p) => mkdir(b, p)?,
        Op::Swap {
            staged,
            path,
            new_is_dir,
        } => {
            if stat_at(staging, staged.as_bytes()).is_none() {
                return Ok(());
            }
            let (parent, name) = b.parent(path)?;
            match stat_at(&parent, name) {
                Some(st) if is_dir(&st) == *new_is_dir => return Ok(()),
                Some(_) => rustix::fs::renameat_with(
                    staging,
                    staged.as_str(),
                    &parent,
                    name,
                    RenameFlags::EXCHANGE,
                )
                .ctx("exchange into place", b.display(path))?,
                None => rustix::fs::renameat(staging, staged.as_str(), &parent, name)
                    .ctx("rename into place", b.display(path))?,
            }
        }
        Op::Rename { staged, path } => {
            let Some(sst) = stat_at(staging, staged.as_bytes()) else {
                return Ok(());
            };
            let (parent, name) = b.parent(path)?;
            // A new directory that something made meanwhile (and may have filled): it
            // is there, as the old `mkdir` accepted; what was staged inside the staged
            // one goes into it.
            if is_dir(&sst) && stat_at(&parent, name).is_some_and(|s| is_dir(&s)) {
                return merge_dir(
                    (staging, staged.as_bytes(), &staging_shown.join(staged)),
                    (&parent, name, &b.display(path)),
                );
            }
            rustix::fs::renameat(staging, staged.as_str(), &parent, name)
                .ctx("rename into place", b.display(path))?;
        }
        Op::Link { target, path } => link(b, staging, target, path)?,
        Op::Meta(p) => fsops::set_meta(b, entry(p)?)?,
        Op::Delete(p) => delete(b, p)?,
        Op::Trash(s) => remove_tree_at(staging, s.as_bytes(), &staging_shown.join(s))?,
        Op::DirMeta(p) => fsops::set_meta(b, entry(p)?)?,
    }
    Ok(())
}

/// Moves what staged directory `from` holds into host directory `to` (one made since
/// the scan), merging the directories both have, then removes `from`. A replay after a
/// crash moves what is left. Each side is (parent's handle, name, path shown).
fn merge_dir(
    (from_parent, from, from_shown): (&OwnedFd, &[u8], &std::path::Path),
    (to_parent, to, to_shown): (&OwnedFd, &[u8], &std::path::Path),
) -> Result<()> {
    let src = fsops::open_dir_at(from_parent, from, from_shown)?;
    let dst = fsops::open_dir_at(to_parent, to, to_shown)?;
    for n in fsops::names_in(&src, from_shown)? {
        let (from_n, to_n) = (
            from_shown.join(imager_core::fsx::bytes_path(&n)),
            to_shown.join(imager_core::fsx::bytes_path(&n)),
        );
        let both_dirs = stat_at(&src, &n).is_some_and(|s| is_dir(&s))
            && stat_at(&dst, &n).is_some_and(|s| is_dir(&s));
        if both_dirs {
            merge_dir((&src, &n, &from_n), (&dst, &n, &to_n))?;
        } else {
            rustix::fs::renameat(&src, n.as_slice(), &dst, n.as_slice())
                .ctx("rename into place", &to_n)?;
        }
    }
    rustix::fs::unlinkat(from_parent, from, AtFlags::REMOVEDIR).ctx("remove", from_shown)?;
    Ok(())
}

/// The `mkdir` operation, as replay needs it: a directory already there (from a first
/// try) counts as made.
fn mkdir(b: &Beneath, p: &[u8]) -> Result<()> {
    let (parent, name) = b.parent(p)?;
    match rustix::fs::mkdirat(&parent, name, rustix::fs::Mode::from_raw_mode(0o700)) {
        Ok(()) => {}
        Err(Errno::EXIST) if stat_at(&parent, name).is_some_and(|s| is_dir(&s)) => {}
        Err(e) => {
            return Err(e)
                .ctx("create directory", b.display(p))
                .map_err(Into::into)
        }
    }
    Ok(())
}

/// The `delete` operation, as replay needs it: what is already gone counts as deleted,
/// and a directory that still holds something stays.
fn delete(b: &Beneath, p: &[u8]) -> Result<()> {
    // A parent that is gone or no longer a directory: done (replay after a
    // swap, or what a swap carried away).
    let (parent, name) = match b.parent(p) {
        Ok(x) => x,
        Err(e) if fsops::is_gone(&e) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let Some(st) = stat_at(&parent, name) else {
        return Ok(());
    };
    let flags = if is_dir(&st) {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    match rustix::fs::unlinkat(&parent, name, flags) {
        // A directory that still holds local state (or a mount) stays.
        Ok(()) | Err(Errno::NOENT) | Err(Errno::NOTEMPTY) | Err(Errno::BUSY) => {}
        Err(e) => return Err(e).ctx("remove", b.display(p)).map_err(Into::into),
    }
    Ok(())
}

fn link(b: &Beneath, staging: &OwnedFd, target: &[u8], path: &[u8]) -> Result<()> {
    let (tparent, tname) = b.parent(target)?;
    let (parent, name) = b.parent(path)?;
    let want = stat_at(&tparent, tname)
        .ok_or_else(|| Error::Agent(format!("hard link target {} is missing", escape(target))))?;
    if let Some(st) = stat_at(&parent, name) {
        if st.st_ino == want.st_ino && st.st_dev == want.st_dev {
            return Ok(());
        }
    }
    let tmp = "link-tmp";
    let _ = rustix::fs::unlinkat(staging, tmp, AtFlags::empty());
    rustix::fs::linkat(&tparent, tname, staging, tmp, AtFlags::empty())
        .ctx("create hard link", b.display(path))?;
    match stat_at(&parent, name) {
        Some(st) if is_dir(&st) => {
            rustix::fs::renameat_with(staging, tmp, &parent, name, RenameFlags::EXCHANGE)
                .ctx("exchange into place", b.display(path))?;
            remove_tree_at(staging, tmp.as_bytes(), &b.display(STAGING).join(tmp))?;
        }
        _ => rustix::fs::renameat(staging, tmp, &parent, name)
            .ctx("rename into place", b.display(path))?,
    }
    Ok(())
}

/// After the operations: the target becomes the host's image, its triggers are queued,
/// the journal goes. In this order, so a crash at any step replays to the same end.
pub fn finish(st: &StateDir, j: &Journal) -> Result<()> {
    let mut pending = st
        .read_text(state::PENDING_TRIGGERS)?
        .map(|t| t.lines().map(String::from).collect::<Vec<_>>())
        .unwrap_or_default();
    pending.extend(j.changed.iter().map(|p| escape(p)));
    pending.sort();
    pending.dedup();
    let mut text = pending.join("\n");
    text.push('\n');
    st.write(state::PENDING_TRIGGERS, text.as_bytes())?;
    for (from, to) in [
        (state::TARGET, state::MANIFEST),
        (state::TARGET_LOCAL_STATE, state::LOCAL_STATE),
        (state::TARGET_TRIGGERS, state::TRIGGERS),
        (state::TARGET_OWNED, state::OWNED),
        (state::TARGET_ACCEPTED, state::ACCEPTED),
    ] {
        if st.read(from)?.is_some() {
            st.rename(from, to)?;
        }
    }
    match (j.previous, st.image()?) {
        (Previous::Image(p), _) => st.write(state::PREVIOUS, format!("{p}\n").as_bytes())?,
        (Previous::None, _) => st.remove(state::PREVIOUS)?,
        (Previous::Keep, Some(old)) if old != j.image => {
            st.write(state::PREVIOUS, format!("{old}\n").as_bytes())?
        }
        _ => {}
    }
    st.write(state::IMAGE, format!("{}\n", j.image).as_bytes())?;
    st.remove(state::JOURNAL)
}

/// Finishes a commit an earlier agent left half-done. Returns whether there was one.
pub fn roll_forward(b: &Beneath, st: &StateDir) -> Result<bool> {
    let Some(text) = st.read_text(state::JOURNAL)? else {
        return Ok(false);
    };
    let journal_shown = b.display(state::DIR).join(state::JOURNAL);
    let j = Journal::parse(&text).map_err(|r| {
        Error::MidCommit(
            Box::new(crate::protocol::MidCommit {
                image: None,
                applied: None,
                ops: None,
            }),
            format!(
                "{MID_COMMIT} whose journal {} cannot be read ({r}); \
                 drop it with `syncer abandon-commit HOST` and push an image",
                journal_shown.display()
            ),
        )
    })?;
    let blocked = |why: String| {
        Error::MidCommit(
            Box::new(crate::protocol::MidCommit {
                image: Some(j.image),
                applied: None,
                ops: Some(j.ops.len() as u64),
            }),
            format!(
                "{MID_COMMIT} to image {} (journal {}), which cannot \
                 be finished: {why}; drop it with `syncer abandon-commit HOST` and push an image",
                j.image,
                journal_shown.display()
            ),
        )
    };
    let manifest = st
        .read_text(state::TARGET)?
        .or(st.read_text(state::MANIFEST)?);
    let manifest = manifest.ok_or_else(|| blocked("its target manifest is missing".into()))?;
    if imager_core::tree::text::id_of(&manifest) != j.image {
        return Err(blocked(
            "its target manifest does not match its image ID".into(),
        ));
    }
    let image = imager_core::tree::text::parse(&manifest, "the journal's target manifest")
        .map_err(|e| blocked(e.to_string()))?;
    let staging = fsops::ensure_dir(b, STAGING).map_err(|e| {
        stuck(
            b,
            &j,
            OpFailed {
                index: 0,
                line: "open the staging directory".into(),
                error: e.into(),
            },
        )
    })?;
    apply(b, &staging, &image, &j).map_err(|f| stuck(b, &j, f))?;
    imager_core::fsx::syncfs(&staging, &b.display(STAGING))
        .map_err(Error::from)
        .and_then(|_| finish(st, &j))
        .map_err(|e| stuck(b, &j, OpFailed::recording(e)))?;
    Ok(true)
}

/// Drops an unfinished commit: the journal and its target files go, the staged entries
/// with them; the host keeps what the commit had done and its recorded image (the next
/// push compares the real tree, so it repairs the rest). Returns the image the commit
/// was going to.
pub fn abandon(st: &StateDir) -> Result<Option<Hash>> {
    let Some(text) = st.read(state::JOURNAL)? else {
        return Ok(None);
    };
    let image = String::from_utf8_lossy(&text)
        .lines()
        .next()
        .and_then(|h| h.strip_prefix(HEADER))
        .and_then(|r| r.strip_prefix(" image="))
        .and_then(Hash::from_hex);
    // The journal first: once it is gone, nothing refers to the target files.
    st.remove(state::JOURNAL)?;
    for f in [
        state::TARGET,
        state::TARGET_LOCAL_STATE,
        state::TARGET_TRIGGERS,
        state::TARGET_OWNED,
        state::TARGET_ACCEPTED,
    ] {
        st.remove(f)?;
    }
    // A journal too damaged to name its image was abandoned all the same.
    Ok(Some(image.unwrap_or(Hash([0; 32]))))
}
