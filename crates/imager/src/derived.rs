//! Values the exports to other formats need and that must come from the image alone, so
//! that every export of one image is byte-identical: its epoch (the time stamped into
//! filesystem superblocks, OCI configs and SBOMs) and UUIDs (filesystem UUID, hash seed,
//! SBOM serial number), each derived from the image ID.

use crate::tree::{Hash, Tree};

/// The image's epoch: its newest mtime (the SPDX and CycloneDX documents' creation time).
pub fn epoch(tree: &Tree) -> i64 {
    tree.entries().iter().map(|e| e.mtime).max().unwrap_or(0)
}

/// A UUID derived from the image ID for one use (`domain`): different uses get different
/// UUIDs, the same use of the same image always the same one. It carries the RFC 9562
/// version-5 (name-based) and variant bits, hashed with SHA-256 instead of SHA-1: the
/// CycloneDX 1.5 schema accepts only versions 1 to 5.
pub fn uuid(domain: &str, id: &Hash) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"imager ");
    h.update(domain.as_bytes());
    h.update(b" ");
    h.update(id.to_hex().as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_have_the_version_and_variant_bits_and_differ_by_use() {
        let id = crate::Hash::of(b"x");
        let a = super::uuid("ext4", &id);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "5");
        assert!("89ab".contains(&a[19..20]), "{a}");
        assert_ne!(a, super::uuid("cyclonedx", &id));
        assert_eq!(a, super::uuid("ext4", &id));
    }
}
