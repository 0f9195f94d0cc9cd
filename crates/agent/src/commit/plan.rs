//! A commit's plan: the journal's operations for a host's changes towards an image, in
//! the order the commit applies them (see the parent module), each path's new entry
//! taken from where it was staged, protected paths refused.

use super::{Journal, Op};
use crate::error::{Error, Result};
use crate::protocol::{Change, ChangeKind, Previous};
use crate::stage::{Names, Staged};
use imager_core::tree::escape::escape;
use imager_core::tree::{parent, path_cmp};
use imager_core::{Hash, Kind, Tree};
use std::collections::{BTreeSet, HashSet};

/// The journal for `changes` towards `image`. `staged` says where each path's new entry
/// was staged (files, nodes, directories): an entry inside a new directory's tree has no
/// operation of its own, it goes into place with the directory.
pub fn plan_ops(
    id: Hash,
    image: &Tree,
    changes: &[Change],
    staged: &Names,
    protected: &HashSet<Vec<u8>>,
) -> Result<Journal> {
    let mut steps = Steps::new(staged, protected);
    for c in changes {
        steps.add(image, c)?;
    }
    Ok(Journal {
        image: id,
        ops: steps.into_ops(image),
        changed: changes.iter().map(|c| c.path.clone()).collect(),
        previous: Previous::Keep,
    })
}

/// A journal's operations gathered change by change into the steps they run in (the
/// order in the module comment).
struct Steps<'a> {
    staged: &'a Names,
    protected: &'a HashSet<Vec<u8>>,
    first: Vec<Op>,
    links: Vec<Op>,
    metas: Vec<Op>,
    deletes: Vec<Op>,
    trash: Vec<Op>,
    /// Host directories replaced by something else.
    gone: Vec<Vec<u8>>,
    /// Directories whose metadata is set again at the end.
    dirs: BTreeSet<Vec<u8>>,
}

impl<'a> Steps<'a> {
    fn new(staged: &'a Names, protected: &'a HashSet<Vec<u8>>) -> Self {
        Steps {
            staged,
            protected,
            first: Vec::new(),
            links: Vec::new(),
            metas: Vec::new(),
            deletes: Vec::new(),
            trash: Vec::new(),
            gone: Vec::new(),
            // The root always: making the staging directory the first time moved its mtime.
            dirs: [b"/".to_vec()].into_iter().collect(),
        }
    }

    /// Where `p`'s new entry was staged; a commit before it was sent is the controller's
    /// error.
    fn need(&self, p: &[u8]) -> Result<Staged> {
        self.staged.of(p).ok_or_else(|| {
            Error::Protocol(format!(
                "commit before the content of {} was sent",
                escape(p)
            ))
        })
    }

    /// A host directory that holds local state is never replaced.
    fn refuse_protected(&self, path: &[u8], by: &str) -> Result<()> {
        if self.protected.contains(path) {
            return Err(Error::Agent(format!(
                "cannot replace directory {} by {by}: it holds local state or files the \
                 host made (move them, or add the path to the image's owned prefixes)",
                escape(path)
            )));
        }
        Ok(())
    }

    fn add(&mut self, image: &Tree, c: &Change) -> Result<()> {
        if let Some(p) = parent(&c.path) {
            self.dirs.insert(p.to_vec());
        }
        if c.kind == ChangeKind::Delete {
            self.deletes.push(Op::Delete(c.path.clone()));
            return Ok(());
        }
        let t = image.get(&c.path).ok_or_else(|| {
            Error::Protocol(format!(
                "change for {} which the image lacks",
                escape(&c.path)
            ))
        })?;
        let host_is_dir = matches!(c.host.as_ref().map(|h| &h.kind), Some(Kind::Dir));
        match (c.kind, &t.kind) {
            (ChangeKind::Meta, Kind::Dir) => {
                self.dirs.insert(c.path.clone());
            }
            (ChangeKind::Meta, _) => self.metas.push(Op::Meta(c.path.clone())),
            (_, Kind::HardLink { target }) => {
                if host_is_dir {
                    self.refuse_protected(&c.path, "a hard link")?;
                    self.gone.push(c.path.clone());
                }
                self.links.push(Op::Link {
                    target: target.clone(),
                    path: c.path.clone(),
                })
            }
            // Made in staging before the journal (so a full inode table fails the push
            // before the commit point, not half-way through it), renamed into place.
            (ChangeKind::Add, Kind::Dir) => {
                self.rename(&c.path)?;
                self.dirs.insert(c.path.clone());
            }
            (_, Kind::Dir) => {
                self.swap(&c.path, true)?;
                self.dirs.insert(c.path.clone());
            }
            _ if host_is_dir => {
                self.refuse_protected(&c.path, &format!("a {}", t.kind.name()))?;
                self.swap(&c.path, false)?;
                self.gone.push(c.path.clone());
            }
            _ => self.rename(&c.path)?,
        }
        Ok(())
    }

    fn rename(&mut self, path: &[u8]) -> Result<()> {
        if let Staged::Top(staged) = self.need(path)? {
            self.first.push(Op::Rename {
                staged,
                path: path.to_vec(),
            });
        }
        Ok(())
    }

    /// Exchanges the staged entry with the host's of the other kind; the host's old entry
    /// is trashed afterwards.
    fn swap(&mut self, path: &[u8], new_is_dir: bool) -> Result<()> {
        // (A path inside a new directory has nothing on the host to swap with.)
        let Staged::Top(s) = self.need(path)? else {
            return Err(Error::Protocol(format!(
                "{} is new below a new directory, and the host has it",
                escape(path)
            )));
        };
        self.first.push(Op::Swap {
            staged: s.clone(),
            path: path.to_vec(),
            new_is_dir,
        });
        self.trash.push(Op::Trash(s));
        Ok(())
    }

    fn into_ops(self, image: &Tree) -> Vec<Op> {
        let gone = self.gone;
        let mut deletes = self.deletes;
        // What was below a directory swapped away goes with it (the trash step): deleting
        // it by path would go through the entry that replaced the directory.
        deletes.retain(|d| match d {
            Op::Delete(p) => !gone.iter().any(|g| imager_core::tree::is_below(p, g)),
            _ => true,
        });
        deletes.reverse();
        // Only directories the image has get its metadata back.
        let mut dirmeta: Vec<Vec<u8>> = self
            .dirs
            .into_iter()
            .filter(|d| matches!(image.get(d).map(|e| &e.kind), Some(Kind::Dir)))
            .collect();
        dirmeta.sort_by(|a, b| path_cmp(b, a));
        let mut ops = self.first;
        ops.extend(self.links);
        ops.extend(self.metas);
        ops.extend(deletes);
        ops.extend(self.trash);
        ops.extend(dirmeta.into_iter().map(Op::DirMeta));
        ops
    }
}
