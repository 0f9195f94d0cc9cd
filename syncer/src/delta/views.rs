//! The IDs of images' host views, kept in the cache directory as `view-KEY` (the ID in
//! hex): a host that records no image says the ID of its tree's view, and the controller
//! looks for the image with that view among every image the store's names point or
//! pointed at. Without these it read and viewed each of them on every such push (some
//! 30 ms an image of the benchmark corpus's size).

use super::Cache;
use imager::Hash;

/// The start of a view entry's file name.
const PREFIX: &str = "view-";

/// What makes a view: the image, the local-state globs it is taken under and the paths
/// the host kept ([`crate::compare::host_view`]), as one hash.
pub fn view_key(image: &Hash, local_state: &[String], kept: &[Vec<u8>]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"syncer host view v1\0");
    h.update(&image.0);
    for g in local_state {
        h.update(&(g.len() as u64).to_le_bytes());
        h.update(g.as_bytes());
    }
    h.update(b"\0kept\0");
    for k in kept {
        h.update(&(k.len() as u64).to_le_bytes());
        h.update(k);
    }
    Hash::from(h.finalize())
}

impl Cache {
    /// The view ID kept under `key` ([`view_key`]), else `compute`d and kept. Only a
    /// shortcut: the view a match names is made again and checked before it is used.
    pub fn view_id(
        &self,
        key: &Hash,
        compute: impl FnOnce() -> crate::error::Result<Hash>,
    ) -> crate::error::Result<Hash> {
        let file = self
            .dir
            .as_ref()
            .map(|d| d.join(format!("{PREFIX}{}", key.to_hex())));
        if let Some(f) = &file {
            if let Some(id) = read_view(f) {
                // Used: `cache prune` keeps what pushes used last, as for any entry.
                let _ = imager::fsx::touch(f);
                return Ok(id);
            }
        }
        let id = compute()?;
        if let Some(f) = &file {
            // Not kept: the next push computes it again.
            let _ = super::write_entry(f, &[format!("{}\n", id.to_hex()).as_bytes()]);
        }
        Ok(id)
    }
}

/// The ID a view entry holds, if it holds one.
fn read_view(file: &std::path::Path) -> Option<Hash> {
    let text = imager::fsx::read_to_string(file).ok()?;
    Hash::from_hex(text.trim_end_matches('\n'))
}

/// Whether `name` is a view entry's file name.
pub(super) fn is_view(name: &str) -> bool {
    name.strip_prefix(PREFIX).and_then(Hash::from_hex).is_some()
}

/// Whether `name` is a view entry's file name, and then whether it holds an ID.
pub(super) fn check(name: &str, file: &std::path::Path) -> Option<bool> {
    is_view(name).then(|| read_view(file).is_some())
}
