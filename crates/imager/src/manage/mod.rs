//! Store management: `imager list`, `tag`, `rm` and `gc`. Without them unnamed images
//! piled up (every build of an afternoon, the overlays each build stores, every archive
//! `diff` imported) with no way to see or free them.
//!
//! The store knows how to remove safely ([`crate::store`]: names first, then the image
//! by rename into `tmp/`, objects last); this module decides what may go, which needs
//! what only the build knows: an image's build record names other images it needs (the
//! `--previous` image whose mtimes it kept, the image its overlays were stored as; both
//! in `build-info.json` and in `provenance.json`), and its stored lock names the .debs
//! it was built from.
//!
//! The rules:
//! - `rm` refuses an image a name points at now, or that a remaining image's record
//!   needs, naming both, unless `--force`. With `--force`, a name pointing at a removed
//!   image is removed with it (never turned back to an older image, which would change
//!   what the name deploys without anyone asking); a record left naming a removed image
//!   is reported. An image only in a name's past (`name~N`) goes without `--force`, and
//!   its entry leaves the history.
//! - `gc` removes objects no remaining image uses. With `--keep N` it first removes the
//!   images that are in some name's history but in none of the N most recent entries of
//!   any name's history (a name's current image is always kept); with `--unnamed`, the
//!   images in no name's history at all. Either way an image a kept image's record needs
//!   is kept (and reported). `.deb`s no remaining image's lock lists are reported and
//!   kept (a lock not yet built may want them) unless `--debs`.

mod remove;

pub use remove::{gc, rm, GcOptions, GcReport, RmOptions, RmReport};

use crate::build::{provenance::PROVENANCE, BUILD_INFO};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::tree::Hash;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;

/// One image as `imager list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    /// The image ID, in hex.
    pub id: String,
    /// The names pointing at it now.
    pub names: Vec<String>,
    /// `name~N` for each name that pointed at it N images ago.
    pub past_names: Vec<String>,
    /// Bytes of its distinct objects; None when its manifest cannot be read (`fsck`
    /// says why).
    pub bytes: Option<u64>,
    /// When it was stored (its manifest's mtime), seconds since the epoch.
    pub stored_unix: i64,
    /// The same, as `YYYY-MM-DDTHH:MM:SSZ`.
    pub stored: String,
    /// Whether it carries a signature (`imager sign`).
    pub signed: bool,
}

/// Every image of the store, newest first (by when stored, then by ID, so that the
/// order is the same every time).
pub fn list(store: &Store) -> Result<Vec<Listed>> {
    let mut names = store.names_by_image()?;
    let mut out = Vec::new();
    for id in store.images()? {
        let (past, now): (Vec<String>, Vec<String>) = names
            .remove(&id)
            .unwrap_or_default()
            .into_iter()
            .partition(|n| n.contains('~'));
        let stored_unix = store.stored_at(&id)?;
        out.push(Listed {
            id: id.to_hex(),
            names: now,
            past_names: past,
            // One damaged image must not hide the others from the list.
            bytes: store.image_bytes(&id).ok(),
            stored_unix,
            stored: crate::time::utc(stored_unix),
            signed: store.is_signed(&id).unwrap_or(false),
        });
    }
    out.sort_by(|a, b| b.stored_unix.cmp(&a.stored_unix).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Writes the list as aligned columns under a header; IDs cut to 12 hex digits unless
/// `full`.
pub fn write_list(items: &[Listed], full: bool, out: &mut dyn Write) -> std::io::Result<()> {
    let rows: Vec<[String; 5]> = items
        .iter()
        .map(|l| {
            let mut names = l.names.clone();
            names.extend(l.past_names.iter().cloned());
            [
                if full {
                    l.id.clone()
                } else {
                    l.id[..12].to_string()
                },
                l.bytes.map_or_else(|| "?".into(), crate::units::bytes),
                l.stored.replace('T', " ").trim_end_matches('Z').to_string(),
                if l.signed { "yes" } else { "no" }.into(),
                if names.is_empty() {
                    "-".into()
                } else {
                    names.join(",")
                },
            ]
        })
        .collect();
    let header = ["ID", "SIZE", "STORED (UTC)", "SIGNED", "NAMES"].map(String::from);
    let mut width = [0usize; 4];
    for r in std::iter::once(&header).chain(&rows) {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        // Sizes line up on the right, the rest on the left; the last column is not padded.
        writeln!(
            out,
            "{:<w0$}  {:>w1$}  {:<w2$}  {:<w3$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3]
        )?;
    }
    Ok(())
}

/// What `imager tag` did.
#[derive(Debug, serde::Serialize)]
pub struct Tagged {
    /// The name.
    pub name: String,
    /// The image it points at now, in hex.
    pub id: String,
    /// The image it pointed at before (now `name~1`), if any.
    pub previous: Option<String>,
    /// False when the name already pointed at the image (nothing was written).
    pub changed: bool,
}

/// `imager tag IMAGE NAME`: points NAME at IMAGE (a name, `name~N`, an ID or an ID
/// prefix), adding to its history as naming at import or build does.
pub fn tag(store: &Store, image: &str, name: &str) -> Result<Tagged> {
    let id = store.resolve(image)?;
    let before = store.ref_history(name)?.last().copied();
    store.set_ref(name, &id)?;
    Ok(Tagged {
        name: name.to_string(),
        id: id.to_hex(),
        previous: before.filter(|b| *b != id).map(|b| b.to_hex()),
        changed: before != Some(id),
    })
}

impl Tagged {
    /// `NAME -> ID (was OLD, now NAME~1)`.
    pub fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        match (&self.previous, self.changed) {
            (_, false) => writeln!(out, "{} already points at {}", self.name, self.id),
            (Some(p), true) => writeln!(
                out,
                "{} -> {} (was {p}, now {}~1)",
                self.name, self.id, self.name
            ),
            (None, true) => writeln!(out, "{} -> {}", self.name, self.id),
        }
    }
}

/// Why an image needs another: (the image needed, what for).
type Needs = Vec<(Hash, &'static str)>;

const FOR_PREVIOUS: &str =
    "its build kept that image's mtimes (--previous); `imager rebuild` needs it";
const FOR_OVERLAYS: &str =
    "its build stored its overlays as that image; `imager rebuild` and `imager verify` need it";

/// The images `id`'s records name (see the module comment). A record that cannot be
/// parsed stops the caller: what it needs cannot be known, and guessing "nothing" could
/// remove what it needs.
fn needs_of(store: &Store, id: &Hash) -> Result<Needs> {
    let json = |name: &str| -> Result<Option<Value>> {
        let Some(bytes) = store.image_file(id, name)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Store {
                store: store.root().to_path_buf(),
                reason: format!(
                    "image {id}: {name} is not JSON ({e}), so what it needs is unknown"
                ),
            })
    };
    let hash = |v: &Value| v.as_str().and_then(Hash::from_hex);
    let mut out = Vec::new();
    if let Some(info) = json(BUILD_INFO)? {
        out.extend(hash(&info["previous"]).map(|h| (h, FOR_PREVIOUS)));
        out.extend(hash(&info["overlays"]).map(|h| (h, FOR_OVERLAYS)));
    }
    if let Some(p) = json(PROVENANCE)? {
        let def = &p["predicate"]["buildDefinition"];
        out.extend(hash(&def["internalParameters"]["previous"]).map(|h| (h, FOR_PREVIOUS)));
        if let Some(deps) = def["resolvedDependencies"].as_array() {
            let overlays = deps.iter().filter(|d| d["name"] == "overlays");
            out.extend(
                overlays.filter_map(|d| hash(&d["digest"]["blake3"]).map(|h| (h, FOR_OVERLAYS))),
            );
        }
    }
    out.sort();
    out.dedup();
    out.retain(|(h, _)| h != id);
    Ok(out)
}

/// For each image some other image's record needs: who needs it and why.
fn needed_by(store: &Store, images: &[Hash]) -> Result<HashMap<Hash, Needs>> {
    let mut out: HashMap<Hash, Needs> = HashMap::new();
    for user in images {
        for (needed, why) in needs_of(store, user)? {
            out.entry(needed).or_default().push((*user, why));
        }
    }
    Ok(out)
}
