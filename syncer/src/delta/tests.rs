//! The delta cache's entries: one per level, in memory and on disk.

use super::*;

/// A pack made at two levels (a push made it fast, another asks for it at the whole
/// contents' level) is two entries, in memory and on disk, each found by its level.
#[test]
fn a_pack_at_two_levels_is_two_entries() {
    let dir = tempfile::tempdir().unwrap();
    let key = Hash::of(b"parts");
    let c = Cache::new(Some(dir.path().to_path_buf()), 19);
    assert!(!c.has_pack(&key, WHOLE_LEVEL));
    let l3 = c.pack(&key, WHOLE_LEVEL, |_| Ok(b"at 3".to_vec())).unwrap();
    let l1 = c.pack(&key, 1, |_| Ok(b"at 1".to_vec())).unwrap();
    assert_eq!((&l3[..], &l1[..]), (&b"at 3"[..], &b"at 1"[..]));
    assert!(c.has_pack(&key, WHOLE_LEVEL) && c.has_pack(&key, 1));
    assert!(!c.has_pack(&Hash::of(b"other"), WHOLE_LEVEL));
    // Another process: from the cache's files.
    let again = Cache::new(Some(dir.path().to_path_buf()), 19);
    assert!(again.has_pack(&key, 1) && !again.has_pack(&key, 2));
    let read = again.pack(&key, 1, |_| Err("made again".into())).unwrap();
    assert_eq!(&read[..], b"at 1");
}
