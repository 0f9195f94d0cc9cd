//! A published store: what hosts need to reach an image, as static files named by
//! hashes, for any web server (nginx, S3-compatible storage, a CDN) to serve and any
//! HTTP cache to keep forever. Hosts fetch them from their colo's mirrors
//! (`agent::fetch`) while the controller drives the push over ssh; whatever is not
//! published comes from the controller as before.
//!
//! Layout below the directory (every name is a hash of what the file holds, so a file
//! never changes once written; `L19` is the zstd level the push runs at, `L3` that of
//! whole contents, `delta::WHOLE_LEVEL`):
//! ```text
//! packs/<key>.L19.zst                 a pack: several files' contents and patches, one zstd stream
//! packs/<key>.L3.zst                  a pack mostly of whole contents (an empty host's)
//! objects/<hash>.L3.zst               one file's whole content
//! deltas/<old>-<new>.zstd.L19         a zstd patch-from delta
//! deltas/<old>-<new>.bsdiff.L19.zst   a bsdiff patch
//! deltas/<old>-<new>.gzip2.L19.zst    a gzip-aware patch (format 2)
//! deltas/<old>-<new>.zucchini.L19.zst a Zucchini patch
//! deltas/<old>-<new>.bitcode1.L19.zst a bitcode-aware patch (format 1)
//! pairs/<from>-<to>.L19.json          the index of what a host at FROM takes to reach TO
//! ```
//! For each pair the plan is the one a push makes for a clean host at FROM (`none`: an
//! empty root), through the same code (`push::plan_from`), so a host that is at
//! FROM is asked to fetch exactly these files: that plan and the files' names are the
//! push's (`push/published.rs`), which this module builds on. A pack's key names its parts (how each
//! travels, from what old content, to what new), so a pack the hosts of a colo share is
//! one file their cache fetches once. A host that drifted gets other packs for the files
//! around its drift: those are not published and come from the controller.

use crate::delta::Cache;
use crate::error::{Error, Result};
use crate::plan::Item;
use crate::push::{item_name, pack_name, plan_from, Image};
use imager::store::Store;
use imager::{Hash, Tree};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One published file of a pair's index.
#[derive(Clone, Debug, Serialize)]
pub struct Published {
    /// Its path below the published directory (`packs/...`, `objects/...`, `deltas/...`).
    pub name: String,
    /// Its size in bytes, as served (compressed).
    pub len: u64,
    /// The blake3 of its bytes, in hex: what a host checks what it fetched against.
    pub blake3: String,
    /// The files it stages, and their size once written.
    pub files: u64,
    /// Bytes of those files' contents once staged, uncompressed.
    pub content_bytes: u64,
}

/// What publishing one (from, to) pair did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PairReport {
    /// The image a host is at (`None`: an empty root).
    pub from: Option<String>,
    /// The image published, in hex.
    pub to: String,
    /// The pair's index file, below the published directory
    /// (`pairs/<from>-<to>.L<level>.json`).
    pub index: String,
    /// Files to fetch, and their bytes.
    pub blobs: u64,
    /// Bytes of those files, as served (compressed).
    pub bytes: u64,
    /// Of those, files written now and files that were there already (from an earlier
    /// publish, or another pair).
    pub written: u64,
    /// Bytes of the files written now.
    pub written_bytes: u64,
    /// Files already there, with the bytes their name promises; left as they were.
    pub present: u64,
    /// Files that change content but cannot be published (local copies, rsync deltas).
    pub not_published: u64,
}

/// What `syncer publish` did.
#[derive(Clone, Debug, Serialize)]
pub struct PublishReport {
    /// The image published: the one hosts reach with these files.
    pub image: Hash,
    /// The directory published below, for a web server to serve.
    pub dir: PathBuf,
    /// The zstd level of every file: it must be the level pushes and rollouts run at,
    /// since a host asks for names with that level in them.
    pub level: i32,
    /// One per image a host may be at, the empty root first.
    pub pairs: Vec<PairReport>,
}

/// Publishes what a host at each of `from` (and one with an empty root) needs to reach
/// `image`, below `dir`; files already there are checked, never rewritten.
pub fn publish(
    store: &Store,
    cache: &Cache,
    image: &Image,
    from: &[Hash],
    dir: &Path,
) -> Result<PublishReport> {
    let mut report = PublishReport {
        image: image.id,
        dir: dir.to_path_buf(),
        level: cache.level(),
        pairs: Vec::new(),
    };
    let mut bases: Vec<Option<Hash>> = vec![None];
    bases.extend(from.iter().filter(|f| **f != image.id).map(|f| Some(*f)));
    let mut seen = std::collections::HashSet::new();
    bases.retain(|b| seen.insert(*b));
    for base in bases {
        let tree = match base {
            Some(b) => store.read_image(&b)?,
            None => Tree::default(),
        };
        report
            .pairs
            .push(publish_pair(store, cache, image, base, &tree, dir)?);
    }
    Ok(report)
}

fn publish_pair(
    store: &Store,
    cache: &Cache,
    image: &Image,
    base: Option<Hash>,
    from: &Tree,
    dir: &Path,
) -> Result<PairReport> {
    let level = cache.level();
    let (items, packs) = plan_from(store, cache, image, from)?;
    let from_name = base.map_or("none".to_string(), |b| b.to_hex());
    let index = format!("pairs/{from_name}-{}.L{level}.json", image.id);
    let mut r = PairReport {
        from: base.map(|b| b.to_hex()),
        to: image.id.to_hex(),
        index: index.clone(),
        ..PairReport::default()
    };
    let mut listed = Vec::new();
    let mut put = |name: String, payload: &[u8], files: &[&Item]| -> Result<()> {
        let hash = Hash::of(payload);
        if write_once(dir, &name, payload, &hash)? {
            r.written += 1;
            r.written_bytes += payload.len() as u64;
        } else {
            r.present += 1;
        }
        r.blobs += 1;
        r.bytes += payload.len() as u64;
        listed.push(Published {
            name,
            len: payload.len() as u64,
            blake3: hash.to_hex(),
            files: files.len() as u64,
            content_bytes: files.iter().map(|i| i.size).sum(),
        });
        Ok(())
    };
    for p in &packs {
        let files: Vec<&Item> = p.items.iter().map(|&i| &items[i]).collect();
        put(pack_name(&p.key, p.level), &p.payload, &files)?;
    }
    let mut not_published = 0;
    for it in items.iter().filter(|it| !it.packed) {
        match item_name(it, cache) {
            Some(name) => put(name, it.payload.bytes(), &[it])?,
            None => not_published += 1,
        }
    }
    r.not_published = not_published;
    let json = serde_json::to_vec_pretty(&serde_json::json!({
        "from": r.from,
        "to": r.to,
        "level": level,
        "blobs": listed,
        "not_published": not_published,
    }))
    .map_err(|e| Error::Encode(format!("the index {index}: {e}")))?;
    // The index is the one file that may be written again (it only lists).
    let path = dir.join(&index);
    check_published(&path)?;
    create_parent(&path)?;
    imager::fsx::write_atomic(&path, &json)?;
    Ok(r)
}

/// Writes `name` below `dir` unless it is there; one that is there must hold exactly
/// `payload` (published files never change: caches keep them forever). Whether it wrote.
fn write_once(dir: &Path, name: &str, payload: &[u8], hash: &Hash) -> Result<bool> {
    let path = dir.join(name);
    check_published(&path)?;
    match imager::fsx::read_if_exists(&path)? {
        Some(old) if Hash::of(&old) == *hash => Ok(false),
        Some(_) => Err(Error::Encode(format!(
            "{}: already published with other bytes than its name promises (a published file never changes: remove it, and purge it from the caches, if it is corrupt)",
            path.display()
        ))),
        None => {
            create_parent(&path)?;
            imager::fsx::write_atomic(&path, payload)?;
            Ok(true)
        }
    }
}

/// What is at a published file's path must be a file (or nothing yet): a web server
/// serves no device or fifo, so one there is refused rather than written into (and
/// reading a fifo to compare its bytes would wait forever). A directory, socket or
/// dangling symlink is refused by [`imager::fsx::output_target`] itself.
fn check_published(path: &Path) -> Result<()> {
    match imager::fsx::output_target(path)? {
        imager::fsx::OutputTarget::Replace(_) => Ok(()),
        imager::fsx::OutputTarget::Stream { what } => Err(imager::Error::NotReplaced {
            path: path.to_path_buf(),
            what: format!("{what}, not a file a web server can serve"),
        }
        .into()),
    }
}

fn create_parent(path: &Path) -> Result<()> {
    if let Some(p) = path.parent() {
        imager::fsx::create_dir_all(p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_file_is_only_ever_a_file() {
        let d = tempfile::tempdir().unwrap();
        let at = |n: &str| d.path().join(n);
        imager::fsx::write(at("file"), b"x").unwrap();
        imager::fsx::create_dir(at("dir")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            at("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        check_published(&at("new")).unwrap();
        check_published(&at("file")).unwrap();
        for (name, what) in [
            ("dir", "a directory"),
            ("fifo", "a fifo, not a file a web server can serve"),
        ] {
            let e = check_published(&at(name)).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("refusing to replace {}: it is {what}", at(name).display())
            );
        }
        // A fifo is refused before its bytes are read to compare: that read would wait.
        let e = write_once(d.path(), "fifo", b"x", &Hash::of(b"x")).unwrap_err();
        assert!(e.to_string().starts_with("refusing to replace"), "{e}");
    }
}
