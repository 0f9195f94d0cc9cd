use super::*;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = read_dir(dir)
        .unwrap()
        .iter()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn an_atomic_write_replaces_the_file_and_leaves_no_temporary() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("state.json");
    write_atomic(&p, b"one").unwrap();
    write_atomic(&p, b"two").unwrap();
    assert_eq!(read(&p).unwrap(), b"two");
    assert_eq!(names(d.path()), ["state.json"]);
}

/// `imager normalize` makes its scratch file in the tree it normalises: the tree must
/// not see it, by name or by its directory's mtime.
#[test]
fn a_scratch_file_leaves_no_name_and_no_mtime_change() {
    use std::os::unix::fs::FileExt;
    let d = tempfile::tempdir().unwrap();
    rustix::fs::utimensat(
        rustix::fs::CWD,
        d.path(),
        &timestamps(1000),
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    let f = scratch_file(d.path()).unwrap();
    f.write_all_at(b"kept", 3).unwrap();
    let mut back = [0; 4];
    f.read_exact_at(&mut back, 3).unwrap();
    assert_eq!(&back, b"kept");
    assert!(names(d.path()).is_empty());
    drop(f);
    let m = std::fs::metadata(d.path()).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::mtime(&m), 1000);
}

#[test]
fn a_failed_atomic_write_keeps_the_old_file_and_removes_the_temporary() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("cache");
    write_atomic(&p, b"old").unwrap();
    let e = write_atomic_with(&p, |f| {
        f.write_all(b"half").ctx("write", &p)?;
        Err(crate::Error::Internal("the producer failed".into()))
    })
    .unwrap_err();
    assert!(e.to_string().contains("the producer failed"), "{e}");
    assert_eq!(read(&p).unwrap(), b"old");
    assert_eq!(names(d.path()), ["cache"]);
    // A directory that does not exist: the error names the temporary it could not make.
    let e = write_atomic(&d.path().join("no/such/file"), b"x").unwrap_err();
    assert!(e.to_string().starts_with("failed to create "), "{e}");
}

fn mkfifo(p: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

fn refusal(r: Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(e @ crate::Error::NotReplaced { .. }) => e.to_string(),
        r => panic!("not refused: {r:?}"),
    }
}

#[test]
fn an_output_path_is_replaced_written_into_or_refused_by_what_it_is() {
    let d = tempfile::tempdir().unwrap();
    let at = |n: &str| d.path().join(n);
    let (file, dir, fifo) = (at("file"), at("dir"), at("fifo"));
    write(&file, b"old").unwrap();
    create_dir(&dir).unwrap();
    mkfifo(&fifo);
    let sock = std::os::unix::net::UnixListener::bind(at("sock")).unwrap();
    for (link, target) in [
        ("to-file", "file"),
        ("to-dir", "dir"),
        ("to-fifo", "fifo"),
        ("to-nothing", "gone"),
    ] {
        symlink(target, &at(link)).unwrap();
    }
    symlink("/dev/null", &at("to-null")).unwrap();

    // Files, and nothing yet: replaced; through a symlink, the file it resolves to.
    let new = at("new");
    assert_eq!(output_target(&new).unwrap(), OutputTarget::Replace(new));
    assert_eq!(
        output_target(&file).unwrap(),
        OutputTarget::Replace(file.clone())
    );
    assert_eq!(
        output_target(&at("to-file")).unwrap(),
        OutputTarget::Replace(canonicalize(&file).unwrap())
    );
    // Devices and fifos, directly or through a symlink: written in place.
    let device = OutputTarget::Stream {
        what: "a character device",
    };
    let pipe = OutputTarget::Stream { what: "a fifo" };
    assert_eq!(output_target(Path::new("/dev/null")).unwrap(), device);
    assert_eq!(output_target(&at("to-null")).unwrap(), device);
    assert_eq!(output_target(&fifo).unwrap(), pipe);
    assert_eq!(output_target(&at("to-fifo")).unwrap(), pipe);
    // Anything else: refused, saying what it is.
    let shown = |n: &str| at(n).display().to_string();
    for (name, what) in [
        ("dir", "a directory".to_string()),
        ("to-dir", "a symlink to a directory".into()),
        ("sock", "a socket".into()),
        (
            "to-nothing",
            "a symlink to gone, which does not exist".into(),
        ),
    ] {
        assert_eq!(
            refusal(output_target(&at(name))),
            format!("refusing to replace {}: it is {what}", shown(name))
        );
    }
    // Making a block device needs root (CAP_MKNOD); without it that case is untested.
    let block = at("block");
    let made = rustix::fs::mknodat(
        rustix::fs::CWD,
        &block,
        rustix::fs::FileType::BlockDevice,
        rustix::fs::Mode::from_raw_mode(0o600),
        rustix::fs::makedev(7, 200),
    );
    if made.is_ok() {
        assert!(refusal(output_target(&block))
            .ends_with("it is a block device (write to a file, then copy that with dd)"));
    }

    // A directory output: nothing yet or a directory, through a symlink the one it
    // points to; anything else refused.
    assert_eq!(output_dir(&at("new")).unwrap(), at("new"));
    assert_eq!(output_dir(&dir).unwrap(), dir);
    assert_eq!(
        output_dir(&at("to-dir")).unwrap(),
        canonicalize(&dir).unwrap()
    );
    assert_eq!(
        refusal(output_dir(&file)),
        format!(
            "refusing to replace {}: it is a regular file (a directory is expected)",
            shown("file")
        )
    );
    for name in ["fifo", "to-file", "to-nothing", "sock"] {
        refusal(output_dir(&at(name)));
    }
    drop(sock);
}

#[test]
fn an_atomic_write_through_a_symlink_keeps_the_link_and_into_a_fifo_writes_in_place() {
    let d = tempfile::tempdir().unwrap();
    let (file, link, fifo) = (
        d.path().join("file"),
        d.path().join("link"),
        d.path().join("fifo"),
    );
    write(&file, b"old").unwrap();
    symlink("file", &link).unwrap();
    write_atomic(&link, b"new").unwrap();
    assert!(symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(read(&file).unwrap(), b"new");
    assert_eq!(names(d.path()), ["file", "link"]);

    // The reader is a thread (a writer waits for the pipe to be read); the test holds
    // a write end of its own until write_atomic returns, so the reader sees the end
    // then, also when write_atomic never opened the fifo: nothing can wait forever.
    mkfifo(&fifo);
    use std::os::unix::fs::OpenOptionsExt;
    let mut r = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(&fifo)
        .unwrap();
    let w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    rustix::fs::fcntl_setfl(&r, rustix::fs::OFlags::empty()).unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        got
    });
    let wrote = write_atomic(&fifo, b"through the pipe");
    drop(w);
    assert_eq!(reader.join().unwrap(), b"through the pipe");
    wrote.unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(symlink_metadata(&fifo).unwrap().file_type().is_fifo());
}

/// A cache entry read is marked used when its mark is older than `fresh` and the caller
/// takes its content, and left as it is otherwise (a read per push marks it once in a
/// while). Both marks are a day old, and `fresh` zero (always stale) or the longest
/// duration (never stale): nothing depends on how long the test takes.
#[test]
fn a_read_marks_the_file_used_only_when_its_mark_is_stale() {
    use std::time::{Duration, SystemTime};
    let d = tempfile::tempdir().unwrap();
    let (old, recent) = (d.path().join("old"), d.path().join("recent"));
    let (always, never) = (Duration::ZERO, Duration::MAX);
    let set = |p: &Path, t: SystemTime| {
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_modified(t).unwrap();
    };
    let mtime = |p: &Path| symlink_metadata(p).unwrap().modified().unwrap();
    let day_ago = SystemTime::now() - Duration::from_secs(86_400);
    for p in [&old, &recent] {
        write(p, b"entry").unwrap();
        set(p, day_ago);
    }
    let valid = |d: &[u8]| d == b"entry";
    assert_eq!(read_and_mark_used(&old, always, valid).unwrap(), b"entry");
    assert_eq!(read_and_mark_used(&recent, never, valid).unwrap(), b"entry");
    assert!(
        mtime(&old) > day_ago,
        "a mark older than `fresh` was not renewed"
    );
    assert_eq!(
        mtime(&recent),
        day_ago,
        "a mark within `fresh` was rewritten"
    );
    // What the caller finds damaged is not marked: a prune may take it.
    set(&old, day_ago);
    assert_eq!(
        read_and_mark_used(&old, always, |_| false).unwrap(),
        b"entry"
    );
    assert_eq!(mtime(&old), day_ago, "a damaged entry was marked used");
    assert!(read_and_mark_used(&d.path().join("missing"), always, valid).is_err());
}
