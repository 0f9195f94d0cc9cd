//! `imager rm` and `imager gc`: what may go (the rules are in the parent's comment), then
//! the store's removal steps in their safe order: names, images, objects, .debs.

use super::{needed_by, Needs};
use crate::build::debs::cache_dir;
use crate::error::{Error, Result};
use crate::fsx;
use crate::store::{RefChange, Store, Swept};
use crate::tree::Hash;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;

/// How `imager rm` removes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RmOptions {
    /// Remove images a name points at (the name goes too) or a record needs.
    pub force: bool,
    /// Then free the objects no remaining image uses (`imager gc`).
    pub gc: bool,
}

/// What `imager rm` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct RmReport {
    /// The images removed, in hex.
    pub removed: Vec<String>,
    /// The names removed or whose history lost entries.
    pub names: Vec<RefChange>,
    /// Records left naming a removed image (`--force`): what will no longer work.
    pub warnings: Vec<String>,
    /// The sweep `--gc` ran, if it did.
    pub gc: Option<GcReport>,
}

/// `imager rm IMAGE...`: removes the images' records, all or none: every image is
/// resolved and checked before anything is removed. Their objects stay until a sweep.
pub fn rm(store: &Store, specs: &[String], o: RmOptions) -> Result<RmReport> {
    let mut gone = BTreeSet::new();
    for s in specs {
        gone.insert(store.resolve(s)?);
    }
    let names = store.names_by_image()?;
    let needs = needed_by(store, &store.images()?)?;
    let mut refusals = Vec::new();
    let mut warnings = Vec::new();
    for id in &gone {
        let now: Vec<&String> = names
            .get(id)
            .into_iter()
            .flatten()
            .filter(|n| !n.contains('~'))
            .collect();
        if !now.is_empty() && !o.force {
            refusals.push(format!(
                "image {id}: the name {} points at it (rm --force removes the name too)",
                join(&now)
            ));
        }
        for (user, why) in needs.get(id).into_iter().flatten() {
            if gone.contains(user) {
                continue;
            }
            if o.force {
                warnings.push(format!("image {user} needed removed image {id}: {why}"));
            } else {
                refusals.push(format!(
                    "image {id}: image {user} needs it ({why}); remove both, or rm --force"
                ));
            }
        }
    }
    if !refusals.is_empty() {
        return Err(Error::Store {
            store: store.root().to_path_buf(),
            reason: format!("nothing removed: {}", refusals.join("; ")),
        });
    }
    let gone_set: HashSet<Hash> = gone.iter().copied().collect();
    let changes = store.forget(&gone_set, false)?;
    for id in &gone {
        store.remove_image(id)?;
    }
    let gc = if o.gc {
        Some(gc(store, &GcOptions::default())?)
    } else {
        None
    };
    Ok(RmReport {
        removed: gone.iter().map(|h| h.to_hex()).collect(),
        names: changes,
        warnings,
        gc,
    })
}

fn join(names: &[&String]) -> String {
    names
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `imager gc` removes besides unused objects.
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    /// Remove the images older than the N most recent entries of every name's history.
    pub keep: Option<usize>,
    /// Remove the images in no name's history.
    pub unnamed: bool,
    /// Remove the cached .debs no remaining image's lock lists.
    pub debs: bool,
    /// Empty the install cache (without it, only leftovers of interrupted builds go).
    pub build_cache: bool,
    /// Say what would go; remove nothing.
    pub dry_run: bool,
}

/// The .debs of the store's cache a sweep looked at.
#[derive(Debug, Default, serde::Serialize)]
pub struct DebsReport {
    /// .debs removed (or, on a dry run with `--debs`, that would be).
    pub removed: usize,
    /// Their bytes.
    pub removed_bytes: u64,
    /// .debs no remaining image's lock lists, kept (no `--debs`).
    pub unused_kept: usize,
    /// Their bytes.
    pub unused_kept_bytes: u64,
}

/// What `imager gc` did (or, with `dry_run`, would do).
#[derive(Debug, Default, serde::Serialize)]
pub struct GcReport {
    /// True when nothing was removed.
    pub dry_run: bool,
    /// Images removed by `--keep` / `--unnamed`, in hex.
    pub images: Vec<String>,
    /// Images the rules would have removed but a kept image's record needs, in hex.
    pub kept_needed: Vec<String>,
    /// Names whose history lost entries (their images were removed).
    pub names: Vec<RefChange>,
    /// Objects no remaining image uses.
    pub objects: Swept,
    /// The .deb cache.
    pub debs: DebsReport,
    /// The install cache (`build-cache/`).
    pub build_cache: crate::build::cache::Trimmed,
    /// Bytes freed: objects, .debs and install cache entries.
    pub bytes_freed: u64,
}

/// `imager gc`: removes the images the options select, then the objects no remaining
/// image uses, then (with `debs`) the .debs no remaining image's lock lists. What the
/// remaining images use is read before anything is removed, so a damaged manifest stops
/// the run while the store is whole.
pub fn gc(store: &Store, o: &GcOptions) -> Result<GcReport> {
    let images = store.images()?;
    let needs = needed_by(store, &images)?;
    let (doomed, kept_needed) = doomed(store, &images, o, &needs)?;
    let remaining: Vec<Hash> = images
        .iter()
        .filter(|h| !doomed.contains(h))
        .copied()
        .collect();
    let live = store.objects_of(&remaining)?;
    let wanted_debs = debs_listed(store, &remaining)?;
    let names = store.forget(&doomed.iter().copied().collect(), o.dry_run)?;
    if !o.dry_run {
        for id in &doomed {
            store.remove_image(id)?;
        }
    }
    let objects = store.sweep_objects(&live, o.dry_run)?;
    let debs = sweep_debs(store, &wanted_debs, o)?;
    let limit = if o.build_cache { 0 } else { u64::MAX };
    let build_cache = crate::build::cache::trim(store, limit, None, o.dry_run)?;
    Ok(GcReport {
        dry_run: o.dry_run,
        images: doomed.iter().map(|h| h.to_hex()).collect(),
        kept_needed: kept_needed.iter().map(|h| h.to_hex()).collect(),
        names,
        bytes_freed: objects.bytes + debs.removed_bytes + build_cache.removed_bytes,
        objects,
        debs,
        build_cache,
    })
}

/// The images `--keep` / `--unnamed` remove, and those they would but a kept image's
/// record needs.
fn doomed(
    store: &Store,
    images: &[Hash],
    o: &GcOptions,
    needs: &HashMap<Hash, Needs>,
) -> Result<(BTreeSet<Hash>, BTreeSet<Hash>)> {
    if o.keep.is_none() && !o.unnamed {
        return Ok(Default::default());
    }
    let mut in_history = HashSet::new();
    let mut kept = HashSet::new();
    for name in store.refs()? {
        // A ref that cannot be read might hold what must be kept: stop.
        let hist = store.ref_history(&name)?;
        let recent = o.keep.unwrap_or(1).max(1);
        kept.extend(hist.iter().rev().take(recent).copied());
        in_history.extend(hist);
    }
    let mut doomed: BTreeSet<Hash> = images
        .iter()
        .filter(|h| !kept.contains(h))
        .filter(|h| {
            if in_history.contains(h) {
                o.keep.is_some()
            } else {
                o.unnamed
            }
        })
        .copied()
        .collect();
    // What a kept image needs is kept, and what that needs in turn.
    let mut kept_needed = BTreeSet::new();
    loop {
        let rescued: Vec<Hash> = doomed
            .iter()
            .filter(|h| {
                needs
                    .get(h)
                    .is_some_and(|users| users.iter().any(|(u, _)| !doomed.contains(u)))
            })
            .copied()
            .collect();
        if rescued.is_empty() {
            return Ok((doomed, kept_needed));
        }
        for h in rescued {
            doomed.remove(&h);
            kept_needed.insert(h);
        }
    }
}

/// The sha256 of every .deb the images' stored locks list (any 64-digit hex word of
/// `build.lock`: taking a word too many keeps a .deb, never removes one).
fn debs_listed(store: &Store, images: &[Hash]) -> Result<HashSet<String>> {
    let mut out = HashSet::new();
    for id in images {
        if let Some(lock) = store.image_file(id, crate::build::BUILD_LOCK)? {
            let text = String::from_utf8_lossy(&lock);
            out.extend(
                text.split_whitespace()
                    .filter(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
                    .map(|w| w.to_ascii_lowercase()),
            );
        }
    }
    Ok(out)
}

/// Counts the cached .debs not in `wanted`, and removes them with `--debs`. Only files
/// named `<sha256>.deb` are looked at: anything else there is not the cache's.
fn sweep_debs(store: &Store, wanted: &HashSet<String>, o: &GcOptions) -> Result<DebsReport> {
    let mut r = DebsReport::default();
    let Some(entries) = fsx::read_dir_if_exists(cache_dir(store))? else {
        return Ok(r);
    };
    for e in entries {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(sha) = name.strip_suffix(".deb") else {
            continue;
        };
        if sha.len() != 64 || wanted.contains(sha) || !fsx::is_file(&p)? {
            continue;
        }
        let len = fsx::metadata(&p)?.len();
        if o.debs {
            if !o.dry_run {
                fsx::remove_file(&p)?;
            }
            r.removed += 1;
            r.removed_bytes += len;
        } else {
            r.unused_kept += 1;
            r.unused_kept_bytes += len;
        }
    }
    Ok(r)
}

fn write_names(names: &[RefChange], would: &str, out: &mut dyn Write) -> std::io::Result<()> {
    for c in names {
        if c.removed {
            writeln!(
                out,
                "{would}removed name {} (its image was removed)",
                c.name
            )?;
        }
        if c.dropped > 0 {
            writeln!(
                out,
                "{would}dropped {} entr{} of removed images from the history of {}",
                c.dropped,
                if c.dropped == 1 { "y" } else { "ies" },
                c.name
            )?;
        }
    }
    Ok(())
}

impl RmReport {
    /// One line per image and name, the warnings, and what is left to free.
    pub fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        for id in &self.removed {
            writeln!(out, "removed image {id}")?;
        }
        write_names(&self.names, "", out)?;
        for w in &self.warnings {
            writeln!(out, "warning: {w}")?;
        }
        match &self.gc {
            Some(g) => g.write_text(out),
            None => writeln!(
                out,
                "removed the image records only: `imager gc` frees the objects no image uses"
            ),
        }
    }
}

impl GcReport {
    /// What went (or would), then the totals.
    pub fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let would = if self.dry_run { "would have " } else { "" };
        for id in &self.images {
            writeln!(out, "{would}removed image {id}")?;
        }
        for id in &self.kept_needed {
            writeln!(out, "kept image {id}: a kept image's build record needs it")?;
        }
        write_names(&self.names, would, out)?;
        let d = &self.debs;
        if d.unused_kept > 0 {
            writeln!(
                out,
                "kept {} cached .debs ({}) that no image's lock lists (gc --debs removes them)",
                d.unused_kept,
                crate::units::bytes(d.unused_kept_bytes)
            )?;
        }
        let c = &self.build_cache;
        if c.kept > 0 {
            writeln!(
                out,
                "kept {} install cache entr{} ({}) (gc --build-cache removes them)",
                c.kept,
                if c.kept == 1 { "y" } else { "ies" },
                crate::units::bytes(c.kept_bytes)
            )?;
        }
        writeln!(
            out,
            "{}: {} images, {} objects ({}), {} .debs ({}), {} install cache entries ({}); {} {}",
            if self.dry_run {
                "would remove"
            } else {
                "removed"
            },
            self.images.len(),
            self.objects.objects,
            crate::units::bytes(self.objects.bytes),
            d.removed,
            crate::units::bytes(d.removed_bytes),
            c.removed,
            crate::units::bytes(c.removed_bytes),
            crate::units::bytes(self.bytes_freed),
            if self.dry_run {
                "would be freed"
            } else {
                "freed"
            },
        )
    }
}
