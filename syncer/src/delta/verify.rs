//! `syncer cache verify`: every entry of a delta cache checked, its checksum and what
//! decoding it gives; `--repair` removes what is wrong.

use super::{check_decodes, entry_payload, parse_entry_name, views, What};
use imager::store::Store;
use imager::Hash;
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One cache file that `verify` found wrong.
#[derive(Clone, Debug, Serialize)]
pub struct BadEntry {
    /// Its path, in the cache directory.
    pub file: PathBuf,
    /// What is wrong with it, in words: unreadable, a bad checksum, or what decoding it
    /// gave.
    pub problem: String,
    /// Whether `--repair` removed it.
    pub removed: bool,
}

/// What [`verify`] found in a cache directory.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// The cache directory checked.
    pub dir: PathBuf,
    /// Entries decoded and found to make the content their name says.
    pub good: u64,
    /// Entries whose checksum holds but whose base is no longer in the store, so they
    /// could not be decoded (they are used only for hosts that have that base), and
    /// packs, which decode but whose parts only their maker and the hosts check.
    pub unchecked: u64,
    /// Entries that are damaged or decode to the wrong content, in file name order.
    pub bad: Vec<BadEntry>,
    /// Files that are no cache entry (left alone), and leftover temporary files.
    pub other: Vec<PathBuf>,
}

/// What [`verify`] makes of one file of a cache directory, so the files can be checked
/// in parallel and the report then built in their order.
enum Found {
    Good,
    Unchecked,
    Bad(String),
    Other,
    Temp,
}

/// The base an entry was made against, from `store` (an object or an image's text), so
/// the entry can be decoded; `None` when the store does not have it.
fn entry_base(store: Option<&Store>, h: &Hash) -> Option<Vec<u8>> {
    let s = store?;
    if s.has_object(h) {
        s.read_object(h).ok()
    } else if s.has_image(h) {
        s.image_text(h).ok().map(String::into_bytes)
    } else {
        None
    }
}

/// Checks one file of a cache directory for [`verify`]: its name, its checksum, and
/// (when its base is in `store`) that it decodes to the content its name says.
fn check_entry(f: &Path, store: Option<&Store>) -> Found {
    let name = f
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((what, old, new)) = parse_entry_name(&name) else {
        let temp = name.starts_with('.') && name.contains(".zst.tmp");
        return match views::check(&name, f) {
            Some(true) => Found::Unchecked,
            Some(false) => Found::Bad("not a view ID".into()),
            None if temp => Found::Temp,
            None => Found::Other,
        };
    };
    let data = match imager::fsx::read(f).map_err(imager::Error::into_io) {
        Ok(d) => d,
        Err(e) => return Found::Bad(format!("cannot read it: {e}")),
    };
    let payload = match entry_payload(&data) {
        Ok(p) => p,
        Err(why) => return Found::Bad(why),
    };
    let b = match old {
        Some(o) => match entry_base(store, &o) {
            Some(b) => Some(b),
            None => return Found::Unchecked,
        },
        None => None,
    };
    match check_decodes(what, b.as_deref(), payload, &new) {
        Ok(()) if what == What::Pack => Found::Unchecked,
        Ok(()) => Found::Good,
        Err(why) => Found::Bad(why),
    }
}

/// Checks every entry of the cache directory `dir`: its checksum, then (with its base
/// from `store`) that it decodes to the content its name says. With `repair`, removes the
/// bad entries and leftover temporary files (a push recomputes what it needs).
pub fn verify(dir: &Path, store: Option<&Store>, repair: bool) -> std::io::Result<VerifyReport> {
    let mut files: Vec<PathBuf> = Vec::new();
    for e in imager::fsx::read_dir(dir).map_err(imager::Error::into_io)? {
        files.push(e.path());
    }
    files.sort();
    let found: Vec<(PathBuf, Found)> = files
        .into_par_iter()
        .map(|f| {
            let found = check_entry(&f, store);
            (f, found)
        })
        .collect();
    let mut r = VerifyReport {
        dir: dir.to_path_buf(),
        ..Default::default()
    };
    for (f, found) in found {
        match found {
            Found::Good => r.good += 1,
            Found::Unchecked => r.unchecked += 1,
            Found::Bad(problem) => {
                let removed = repair && imager::fsx::remove_file(&f).is_ok();
                r.bad.push(BadEntry {
                    file: f,
                    problem,
                    removed,
                });
            }
            Found::Temp => {
                if !(repair && imager::fsx::remove_file(&f).is_ok()) {
                    r.other.push(f);
                }
            }
            Found::Other => r.other.push(f),
        }
    }
    Ok(r)
}
