//! `imager fsck`: re-reads everything in the store and checks it against its name.

use super::Store;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::tree::{Hash, Kind};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::io::Read;

/// What `imager fsck` found: totals, and every problem it met.
#[derive(Debug, Default, serde::Serialize)]
pub struct FsckReport {
    /// Images checked (each manifest re-hashed and parsed).
    pub images: usize,
    /// Object files whose names are hashes, each re-read and re-hashed.
    pub objects: usize,
    /// Bytes read from those objects.
    pub bytes: u64,
    /// Names (refs) checked.
    pub refs: usize,
    /// Objects no image refers to (left by an interrupted import; harmless).
    pub unreferenced: usize,
    /// Everything wrong, one message each, naming the object, image or ref.
    pub problems: Vec<String>,
}

impl FsckReport {
    /// True when fsck found no problem (unreferenced objects are not one).
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report as `imager fsck` prints it for the store at `root`: each problem, then
    /// the totals.
    pub fn write_text(
        &self,
        root: &std::path::Path,
        out: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        for p in &self.problems {
            writeln!(out, "problem: {p}")?;
        }
        writeln!(
            out,
            "{}: {} images, {} names, {} objects ({} bytes, {} unreferenced), {} problems",
            root.display(),
            self.images,
            self.refs,
            self.objects,
            self.bytes,
            self.unreferenced,
            self.problems.len()
        )
    }
}

pub(super) fn run(store: &Store, progress: &dyn Progress) -> Result<FsckReport> {
    let mut r = FsckReport::default();
    let wanted = check_images(store, &mut r)?;
    check_refs(store, &mut r)?;
    let files = object_files(store)?;
    progress.start("verify objects", Some(files.len() as u64));
    let results: Vec<Checked> = files
        .par_iter()
        .map(|p| {
            progress.inc(1);
            check_object(p)
        })
        .collect();
    progress.finish();
    let mut present = HashSet::new();
    for (h, n, problem) in results {
        if let Some(h) = h {
            r.objects += 1;
            r.bytes += n;
            if let Some((size, _)) = wanted.get(&h) {
                if *size != n && problem.is_none() {
                    r.problems
                        .push(format!("object {h}: {n} bytes, images say {size}"));
                }
            } else {
                r.unreferenced += 1;
            }
            present.insert(h);
        }
        if let Some(p) = problem {
            r.problems.push(p);
        }
    }
    let mut missing: Vec<_> = wanted
        .iter()
        .filter(|(h, _)| !present.contains(h))
        .collect();
    missing.sort();
    for (h, (_, img)) in missing {
        r.problems
            .push(format!("object {h} is missing (used by image {img})"));
    }
    Ok(r)
}

/// Images: each manifest hashes to its ID and parses. Returns the objects they name,
/// each with its size and the first image that names it.
fn check_images(store: &Store, r: &mut FsckReport) -> Result<HashMap<Hash, (u64, Hash)>> {
    let mut wanted: HashMap<Hash, (u64, Hash)> = HashMap::new();
    let images = store.images()?;
    r.images = images.len();
    for id in &images {
        match store.read_image(id) {
            Ok(tree) => {
                for e in tree.entries() {
                    if let Kind::File { size, hash } = e.kind {
                        wanted.entry(hash).or_insert((size, *id));
                    }
                }
            }
            Err(e) => r.problems.push(format!("image {id}: {e}")),
        }
        // An unreadable signature file is one problem among others, not the end of fsck.
        match store.signatures(id) {
            Ok(sigs) => {
                for s in sigs {
                    if let Some(p) = signature_problem(id, &s) {
                        r.problems.push(format!("image {id}: {p}"));
                    }
                }
            }
            Err(e) => r.problems.push(format!("image {id}: signatures: {e}")),
        }
        match unpaired_signature_files(store, id) {
            Ok(problems) => r
                .problems
                .extend(problems.into_iter().map(|p| format!("image {id}: {p}"))),
            Err(e) => r.problems.push(format!("image {id}: signatures: {e}")),
        }
    }
    Ok(wanted)
}

/// A statement (`.msg`) without its signature (`.sig`), or a signature without its
/// statement: [`Store::signatures`] lists neither, so nothing else would say they are
/// there. A lone `.msg` is what an interrupted `imager sign` leaves (the statement is
/// written first); a lone `.sig` is a signature no check can use. Each is reported
/// with what to do about it.
fn unpaired_signature_files(store: &Store, id: &Hash) -> Result<Vec<String>> {
    let dir = store.image_dir(id).join("signatures");
    let Some(entries) = crate::fsx::read_dir_if_exists(&dir)? else {
        return Ok(Vec::new());
    };
    let names: HashSet<std::ffi::OsString> = entries.iter().map(|e| e.file_name()).collect();
    let mut paths: Vec<std::path::PathBuf> = entries.into_iter().map(|e| e.path()).collect();
    paths.sort();
    let mut problems = Vec::new();
    for p in paths {
        let (other, problem) = match p.extension().and_then(|x| x.to_str()) {
            Some("msg") => (
                "sig",
                "a signature statement without its signature (.sig), so it signs nothing \
                 (an interrupted `imager sign` leaves one): remove it, and sign the image \
                 again if it should carry that signature",
            ),
            Some("sig") => (
                "msg",
                "a signature without its statement (.msg), so no check can use it: \
                 restore the statement from where the signature came from, or remove it",
            ),
            _ => continue,
        };
        let pair = p.with_extension(other);
        if !pair.file_name().is_some_and(|n| names.contains(n)) {
            problems.push(format!("{}: {problem}", p.display()));
        }
    }
    Ok(problems)
}

/// A stored signature that is not a valid SSH signature, by the key it carries, over a
/// statement for its image (whom to trust is `imager verify`'s question, not fsck's).
fn signature_problem(id: &Hash, s: &crate::sign::Signed) -> Option<String> {
    crate::sign::verify_by_own_key(id, s).err()
}

/// Names: each reads, and points only at images the store has.
fn check_refs(store: &Store, r: &mut FsckReport) -> Result<()> {
    for name in store.refs()? {
        r.refs += 1;
        match store.ref_history(&name) {
            // An empty ref names nothing: every lookup of the name says "no such name".
            Ok(hist) if hist.is_empty() => r
                .problems
                .push(format!("ref {name}: empty (it names no image)")),
            Ok(hist) => {
                for h in hist.iter().filter(|h| !store.has_image(h)) {
                    r.problems
                        .push(format!("ref {name}: points at missing image {h}"));
                }
            }
            Err(e) => r.problems.push(format!("ref {name}: {e}")),
        }
    }
    Ok(())
}

/// Every file under `objects/` (two levels: fan-out directory, then the objects).
pub(super) fn object_files(store: &Store) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for fan in crate::fsx::read_dir(store.objects_dir())? {
        for e in crate::fsx::read_dir(fan.path())? {
            files.push(e.path());
        }
    }
    Ok(files)
}

/// What checking one object file found: its hash (if its name is one), the bytes read,
/// and the problem, if any.
type Checked = (Option<Hash>, u64, Option<String>);

/// Objects: the file hashes to its name.
fn check_object(p: &std::path::Path) -> Checked {
    let Some(h) = super::manage::object_hash(p) else {
        return (
            None,
            0,
            Some(format!("stray file in objects/: {}", p.display())),
        );
    };
    let mut hasher = blake3::Hasher::new();
    let mut n = 0u64;
    let res = crate::fsx::open(p)
        .map_err(Error::into_io)
        .and_then(|mut f| {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let k = f.read(&mut buf)?;
                if k == 0 {
                    return Ok(());
                }
                n += k as u64;
                hasher.update(&buf[..k]);
            }
        });
    match res {
        Err(e) => (
            Some(h),
            n,
            Some(format!("object {h}: cannot read {}: {e}", p.display())),
        ),
        Ok(()) if Hash::from(hasher.finalize()) != h => (
            Some(h),
            n,
            Some(format!(
                "object {h} is corrupt ({}): content hashes differently",
                p.display()
            )),
        ),
        Ok(()) => (Some(h), n, None),
    }
}
