//! The image's manifest as a `Target` sends it: whole, a delta against the manifest the
//! host records (or its own tree's), or the recorded one; inflated within the agent's
//! limit and checked to be the image's, as are the files sent beside it.

use super::state::{self, StateDir};
use crate::error::{Error, Result};
use crate::protocol::ManifestData;
use imager_core::{Hash, Tree};
use std::io::Read;

/// Whether `sent` is the content of the image's file `path` (`None`: the image has none).
pub(super) fn image_file_is(tree: &Tree, path: &str, sent: Option<&[u8]>) -> Result<()> {
    let want = match tree.get(path.as_bytes()).map(|e| &e.kind) {
        Some(imager_core::Kind::File { hash, .. }) => Some(*hash),
        _ => None,
    };
    if want == sent.map(Hash::of) {
        return Ok(());
    }
    Err(Error::Protocol(format!(
        "the {path} sent is not the image's ({})",
        match want {
            Some(h) => format!("the image's hashes to {h}"),
            None => "the image has none".into(),
        }
    )))
}

/// Largest manifest text an agent accepts: the largest an image may have, which imager
/// refuses to store beyond (one number for both, in imager's contract).
pub const MAX_MANIFEST: usize = imager_core::contract::MAX_MANIFEST;
// A manifest at the limit fits one message (it travels compressed, so it needs less).
const _: () = assert!(crate::protocol::MAX_MESSAGE >= MAX_MANIFEST);

/// The manifest `m` makes (a delta against the recorded manifest, or against `own`, the
/// host's own tree's, when that is its base), checked to be image `image`'s.
pub(super) fn checked_manifest(
    st: &StateDir,
    m: ManifestData,
    image: &Hash,
    own: Option<&str>,
) -> Result<String> {
    let text = manifest_text(st, m, own)?;
    if imager_core::tree::text::id_of(&text) != *image {
        return Err(Error::Protocol(format!(
            "the manifest sent does not hash to image {image}"
        )));
    }
    Ok(text)
}

fn manifest_text(st: &StateDir, m: ManifestData, own: Option<&str>) -> Result<String> {
    let bytes = match m {
        ManifestData::Ask => return Err(Error::Protocol("asked for its identity twice".into())),
        ManifestData::Delta { base, delta }
            if own.is_some_and(|t| imager_core::tree::text::id_of(t) == base) =>
        {
            let old = own.unwrap_or_default();
            crate::encoding::zstd_delta::apply(old.as_bytes(), &delta, MAX_MANIFEST + 1)
                .map_err(|r| Error::Protocol(format!("manifest delta: {r}")))?
        }
        ManifestData::Recorded => st.read(state::MANIFEST)?.ok_or_else(|| {
            Error::Protocol("told to use a recorded manifest this host lacks".into())
        })?,
        ManifestData::Zstd(z) => inflate_manifest(&z, MAX_MANIFEST)?,
        ManifestData::Delta { base, delta } => {
            let old = st
                .read_text(state::MANIFEST)?
                .filter(|t| imager_core::tree::text::id_of(t) == base)
                .ok_or_else(|| {
                    Error::Protocol(format!(
                        "manifest delta against {base}, which this host lacks"
                    ))
                })?;
            // The frame says the size it makes: one over the limit is refused with it.
            if let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(&delta) {
                check_manifest(n, MAX_MANIFEST)?;
            }
            crate::encoding::zstd_delta::apply(old.as_bytes(), &delta, MAX_MANIFEST + 1)
                .map_err(|r| Error::Protocol(format!("manifest delta: {r}")))?
        }
    };
    check_manifest(bytes.len() as u64, MAX_MANIFEST)?;
    String::from_utf8(bytes).map_err(|_| Error::Protocol("the manifest is not UTF-8".into()))
}

/// A compressed manifest, inflated up to `limit` bytes. Streamed, so that memory follows
/// the manifest's real size, not the limit; one larger is refused with its size when
/// the frame says it (the controller's encoder writes it), before anything is inflated.
fn inflate_manifest(z: &[u8], limit: usize) -> Result<Vec<u8>> {
    if let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(z) {
        check_manifest(n, limit)?;
    }
    let mut out = Vec::new();
    let d = zstd::stream::read::Decoder::new(z)
        .map_err(|e| Error::Protocol(format!("compressed manifest: {e}")))?;
    std::io::Read::read_to_end(&mut d.take(limit as u64 + 1), &mut out)
        .map_err(|e| Error::Protocol(format!("compressed manifest: {e}")))?;
    if out.len() > limit {
        return Err(Error::Protocol(format!(
            "the image's manifest is more than this agent's limit of {limit} bytes \
             (imager's MAX_MANIFEST: about seven million entries)"
        )));
    }
    Ok(out)
}

/// A manifest of `len` bytes is refused beyond `limit`, naming both.
fn check_manifest(len: u64, limit: usize) -> Result<()> {
    if len > limit as u64 {
        return Err(Error::Protocol(format!(
            "the image's manifest is {len} bytes, more than this agent's limit of {limit} \
             bytes (imager's MAX_MANIFEST: about seven million entries)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_over_the_agents_limit_is_refused_naming_its_size_and_the_limit() {
        // A small limit stands for MAX_MANIFEST (a GiB manifest is too heavy here).
        let text = "/x symlink uid=0 gid=0 mtime=1 target=y\n".repeat(250);
        let n = text.len();
        // The controller's form: the frame says its size, refused before inflating.
        let z = zstd::bulk::compress(text.as_bytes(), 3).expect("compress");
        assert_eq!(
            inflate_manifest(&z, n).expect("at the limit"),
            text.as_bytes()
        );
        let e = inflate_manifest(&z, n - 1).expect_err("over the limit");
        assert!(
            e.to_string().contains(&format!(
                "is {n} bytes, more than this agent's limit of {}",
                n - 1
            )),
            "{e}"
        );
        // A stream that does not say its size: inflated up to the limit, then refused.
        let z = zstd::stream::encode_all(text.as_bytes(), 3).expect("compress");
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&z).ok().flatten(),
            None
        );
        assert_eq!(
            inflate_manifest(&z, n).expect("at the limit"),
            text.as_bytes()
        );
        let e = inflate_manifest(&z, n - 1).expect_err("over the limit");
        assert!(
            e.to_string()
                .contains(&format!("more than this agent's limit of {} bytes", n - 1)),
            "{e}"
        );
    }
}
