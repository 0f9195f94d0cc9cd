//! ProdNG's package review: install .debs into a throwaway copy of an image and report
//! everything that changed, including what maintainer scripts did outside the packages'
//! own file lists (those paths show up as owned by no package).
//!
//! The copy is an exact export of the image in `STORE/build/`; `dpkg -i` runs chrooted in
//! it under `unshare` (no network, own PID/IPC/UTS/mount namespaces) with a policy-rc.d
//! that stops services from starting, as build hooks run. The result is imported as an
//! unnamed image and compared with the original by [`super::diff`].

use super::{diff, Filter, Report};
use crate::build::chroot::run_hooks;
use crate::build::recipe::Hook;
use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use crate::store::{Access, Store};
use crate::Hash;
use std::path::{Path, PathBuf};

/// Where the .debs are put inside the copy (removed before the snapshot).
const DROP: &str = "tmp/imager-try-package";

/// Installs `debs` into a copy of `image` and reports the difference. `store_root` is
/// opened for writing only to store the result.
pub fn try_packages(
    store_root: &Path,
    image: &Hash,
    debs: &[PathBuf],
    filter: &Filter,
    progress: &dyn Progress,
) -> Result<Report> {
    if debs.is_empty() {
        return Err(Error::Usage("give at least one .deb".into()));
    }
    for d in debs {
        if !crate::fsx::is_file(d)? {
            return Err(Error::Usage(format!("{} is not a file", d.display())));
        }
    }
    let work =
        store_root
            .join("build")
            .join(format!("try-{}-{}", image.short(), std::process::id()));
    let _ = crate::fsx::remove_dir_all(&work);
    crate::fsx::create_dir_all(&work)?;
    let r = run(store_root, image, debs, filter, progress, &work);
    let _ = crate::fsx::remove_dir_all(&work);
    r
}

fn run(
    store_root: &Path,
    image: &Hash,
    debs: &[PathBuf],
    filter: &Filter,
    progress: &dyn Progress,
    work: &Path,
) -> Result<Report> {
    let root = work.join("root");
    let epoch = {
        let store = Store::open(store_root, Access::Read)?;
        let tree = store.read_image(image)?;
        crate::archive::dir::export_dir(&store, &tree, &root, progress)?;
        tree.entries().iter().map(|e| e.mtime).max().unwrap_or(0)
    };
    let drop_dir = root.join(DROP);
    crate::fsx::create_dir_all(&drop_dir)?;
    let mut names = Vec::new();
    for (i, d) in debs.iter().enumerate() {
        let name = format!("{i}.deb");
        crate::fsx::copy(d, &drop_dir.join(&name))?;
        names.push(format!("/{DROP}/{name}"));
    }
    let log = work.join("dpkg.log");
    let hook = Hook {
        name: "try-package".into(),
        run: format!("dpkg -i {}", names.join(" ")),
        timeout: 600,
        phase: crate::build::recipe::HookPhase::Final,
    };
    let shown = debs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    run_hooks(&root, &[hook], epoch, &log, Path::new(&shown))?;
    crate::fsx::remove_dir_all(&drop_dir)?;
    // The drop directory's parent (/tmp) had its mtime moved by it: put it back.
    let store = Store::open(store_root, Access::Write)?;
    let before = store.read_image(image)?;
    if let Some(e) = before.get(b"/tmp") {
        let fd = crate::safe_dir::Beneath::open(&root)?.open_dir(b"/tmp")?;
        rustix::fs::futimens(&fd, &crate::fsx::timestamps(e.mtime))
            .ctx("set mtime of", root.join("tmp"))?;
    }
    let imported = crate::import::import(
        &store,
        &crate::import::ImportSource::Dir(root.clone()),
        &crate::import::ImportOptions::plain(),
        progress,
    )?;
    let after = Hash::from_hex(&imported.id)
        .ok_or_else(|| Error::Internal("the import gave no image ID".into()))?;
    diff(&store, image, &after, filter)
}
