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

/// An image's view ID is computed once and read back by the next process; `cache verify`
/// counts it (not an unknown file), and a damaged one is named bad and computed again.
/// (Before: every push to a host without a record read and viewed every image.)
#[test]
fn a_view_id_is_computed_once_and_checked() {
    use super::views::view_key;
    let dir = tempfile::tempdir().unwrap();
    let key = view_key(
        &Hash::of(b"image"),
        &["/var/log/**".into()],
        &[b"/srv".to_vec()],
    );
    assert_ne!(
        key,
        view_key(&Hash::of(b"image"), &["/var/log/**".into()], &[])
    );
    let c = Cache::new(Some(dir.path().to_path_buf()), 19);
    let made = c.view_id(&key, || Ok(Hash::of(b"view"))).unwrap();
    assert_eq!(made, Hash::of(b"view"));
    let again = Cache::new(Some(dir.path().to_path_buf()), 19);
    let read = again
        .view_id(&key, || {
            Err(crate::error::Error::Protocol("made again".into()))
        })
        .unwrap();
    assert_eq!(read, made);
    let r = verify(dir.path(), None, false).unwrap();
    assert_eq!((r.unchecked, r.bad.len(), r.other.len()), (1, 0, 0));
    let file = dir.path().join(format!("view-{}", key.to_hex()));
    imager::fsx::write(&file, b"not an ID\n").unwrap();
    let r = verify(dir.path(), None, false).unwrap();
    assert_eq!(r.bad.len(), 1);
    let fixed = again.view_id(&key, || Ok(Hash::of(b"view"))).unwrap();
    assert_eq!(fixed, made);
    assert_eq!(
        imager::fsx::read_to_string(&file).unwrap(),
        format!("{}\n", made.to_hex())
    );
}

/// A manifest delta made before is found without its base's text (a host's view need
/// not be made again to answer it); one never made, or whose file is damaged, is not
/// found, and asking leaves it to be made (and a damaged file said so) once.
#[test]
fn a_known_manifest_delta_is_found_only_when_made_and_whole() {
    let dir = tempfile::tempdir().unwrap();
    let old = "#imager-manifest v1\n/ dir mode=0755\n".repeat(50);
    let new = format!("{old}/etc dir mode=0755\n");
    let (o, n) = (Hash::of(old.as_bytes()), Hash::of(new.as_bytes()));
    let c = Cache::new(Some(dir.path().to_path_buf()), 19);
    assert!(c.known_manifest_delta(&o, &n).is_none());
    // An entry is only ever made from the text its key names.
    let e = c.manifest_delta((&n, &old), (&o, &new)).unwrap_err();
    assert!(e.contains("does not hash to"), "{e}");
    // Not found is not an entry: the delta is still made when asked for.
    let made = c.manifest_delta((&o, &old), (&n, &new)).unwrap();
    assert_eq!(c.known_manifest_delta(&o, &n).as_deref(), Some(&*made));
    // Another process: from the cache's file; only at the level it was made at.
    let again = Cache::new(Some(dir.path().to_path_buf()), 19);
    assert_eq!(again.known_manifest_delta(&o, &n).as_deref(), Some(&*made));
    assert!(Cache::new(Some(dir.path().to_path_buf()), 1)
        .known_manifest_delta(&o, &n)
        .is_none());
    assert!(again.known_manifest_delta(&n, &o).is_none());
    // Damaged: not found, and made again (said once) by whoever asks for it.
    let file = imager::fsx::read_dir(dir.path())
        .unwrap()
        .into_iter()
        .map(|e| e.path())
        .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .unwrap();
    let mut bytes = imager::fsx::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    imager::fsx::write(&file, &bytes).unwrap();
    let third = Cache::new(Some(dir.path().to_path_buf()), 19);
    assert!(third.known_manifest_delta(&o, &n).is_none());
    assert!(third.dropped().is_empty());
    let remade = third.manifest_delta((&o, &old), (&n, &new)).unwrap();
    assert_eq!(remade, made);
    assert_eq!(third.dropped().len(), 1, "{:?}", third.dropped());
}
