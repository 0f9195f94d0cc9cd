//! Outputs are never replaced behind the user's back (issue 23, item 6): an export onto
//! something that is not a regular file writes into it where that means something (a
//! character device, a fifo) and is refused otherwise, and what was there stays what it
//! was. The atomic temp-and-rename write used to replace whatever the path named, so
//! `export --tar /dev/null` (as root) left the machine a 74 MB regular `/dev/null`.
//! Runs the real binary as root (it writes `/dev/null`, makes fifos and devices).

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // tests set up and read files directly
mod common;
use common::{need, s, sh, Env};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A small tree imported as `t`: what is written where is the point here, not what.
fn sample_image(env: &Env) {
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    sh(
        "mkdir -p a/b && echo hello > a/f && ln -s ../f a/b/link && mkfifo a/fifo",
        &src,
    );
    env.id(&["import", s(&src), "--name", "t"]);
}

/// Reads, in a thread, everything written into a new fifo at `path` while `write` runs;
/// the fifo's writer waits for its bytes to be read, so the reader must run alongside.
/// The test holds a write end of its own until `write` has returned, so the reader sees
/// the end only then, whether `write` opened the fifo or failed before it did: nothing
/// waits on time, and a failing export cannot leave the reader waiting forever.
fn read_fifo_while(path: &Path, write: impl FnOnce()) -> Vec<u8> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    // Opening the read end without waiting (no writer yet), then our own write end.
    let mut r = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .unwrap();
    let w = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    rustix::fs::fcntl_setfl(&r, rustix::fs::OFlags::empty()).unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        got
    });
    write();
    drop(w);
    let got = reader.join().unwrap();
    assert!(
        std::fs::symlink_metadata(path)
            .unwrap()
            .file_type()
            .is_fifo(),
        "{} is no longer a fifo",
        path.display()
    );
    got
}

/// The names in `dir`, sorted (a temporary left behind would show).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Puts the machine's `/dev/null` back (character device 1:3, mode 0666) should an
/// export have replaced it, so that a regression fails this test and not every other
/// program on the machine.
struct RestoreDevNull;

impl Drop for RestoreDevNull {
    fn drop(&mut self) {
        let intact = std::fs::symlink_metadata("/dev/null")
            .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == rustix::fs::makedev(1, 3));
        if !intact {
            let _ = std::fs::remove_file("/dev/null");
            let _ = std::process::Command::new("mknod")
                .args(["-m", "0666", "/dev/null", "c", "1", "3"])
                .status();
        }
    }
}

#[test]
fn export_tar_to_dev_null_leaves_dev_null_the_device() {
    let env = Env::new();
    sample_image(&env);
    let _restore = RestoreDevNull;
    let before = std::fs::symlink_metadata("/dev/null").unwrap();
    env.ok(&["export", "t", "--tar", "/dev/null"]);
    let after = std::fs::symlink_metadata("/dev/null").unwrap();
    assert!(
        after.file_type().is_char_device(),
        "/dev/null was replaced: {after:?}"
    );
    assert_eq!(
        (after.rdev(), after.mode(), after.ino()),
        (before.rdev(), before.mode(), before.ino())
    );
    // No temporary left in /dev either (other names come and go: loop devices).
    let left: Vec<String> = names(Path::new("/dev"))
        .into_iter()
        .filter(|n| n.starts_with(".null"))
        .collect();
    assert!(left.is_empty(), "left in /dev: {left:?}");
}

#[test]
fn export_tar_into_a_fifo_gives_its_reader_the_bytes_of_a_file_export() {
    let env = Env::new();
    sample_image(&env);
    let file = env.path("t.tar.zst");
    env.ok(&["export", "t", "--tar", s(&file)]);
    let fifo = env.path("fifo");
    let got = read_fifo_while(&fifo, || {
        env.ok(&["export", "t", "--tar", s(&fifo)]);
    });
    assert!(
        got == std::fs::read(&file).unwrap(),
        "the fifo got other bytes"
    );
    assert_eq!(names(env.dir.path()), ["fifo", "src", "store", "t.tar.zst"]);
}

/// For the `--disk` tests: the bytes of an export to a file (what a device or fifo must
/// get), and an empty directory to be the export's `$TMPDIR`: an image for a device or
/// fifo is staged there (its own directory may be `/dev`), and must not stay.
struct DiskCase {
    want: Vec<u8>,
    tmp: PathBuf,
}

impl DiskCase {
    fn new(env: &Env) -> DiskCase {
        need("mke2fs", "e2fsprogs");
        sample_image(env);
        let file = env.path("t.img");
        env.ok(&["export", "t", "--disk", s(&file)]);
        let tmp = env.path("tmp");
        std::fs::create_dir(&tmp).unwrap();
        DiskCase {
            want: std::fs::read(&file).unwrap(),
            tmp,
        }
    }

    /// `export t --disk DEST`, which must succeed: its stdout and stderr.
    fn export(&self, env: &Env, dest: &str) -> (Vec<u8>, String) {
        let out = env
            .command(&["export", "t", "--disk", dest])
            .env("TMPDIR", &self.tmp)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "export --disk {dest}: {err}");
        (out.stdout, err)
    }

    /// `got` (what `dest` got) must be the image, and nothing may stay in `$TMPDIR`.
    fn check(&self, got: &[u8], dest: &str) {
        // Not assert_eq: a difference in 80 MB would print all of them.
        assert!(
            got == self.want,
            "{dest} got {} bytes, other than the {} of the file export",
            got.len(),
            self.want.len()
        );
        let left = names(&self.tmp);
        assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    }
}

#[test]
fn export_disk_into_a_fifo_gives_its_reader_the_bytes_of_a_file_export() {
    let env = Env::new();
    let case = DiskCase::new(&env);
    let fifo = env.path("fifo");
    let got = read_fifo_while(&fifo, || {
        case.export(&env, s(&fifo));
    });
    case.check(&got, "the fifo");
    assert_eq!(
        names(env.dir.path()),
        ["fifo", "src", "store", "t.img", "tmp"]
    );
}

#[test]
fn export_disk_to_dev_stdout_writes_the_image_alone_there() {
    let env = Env::new();
    let case = DiskCase::new(&env);
    // Standard output is a pipe here, /dev/stdout a symlink to it.
    let (got, err) = case.export(&env, "/dev/stdout");
    case.check(&got, "standard output");
    // The summary went to standard error, not into the image.
    assert!(err.contains("/dev/stdout: ext4, UUID "), "{err}");
}

#[test]
fn export_oci_onto_a_symlink_keeps_the_link_and_fills_the_directory_it_points_to() {
    let env = Env::new();
    sample_image(&env);
    let direct = env.path("direct");
    env.ok(&["export", "t", "--oci", s(&direct)]);

    // A symlink to an empty directory: the layout goes there, the link stays.
    let (real, link) = (env.path("real"), env.path("link"));
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink("real", &link).unwrap();
    env.ok(&["export", "t", "--oci", s(&link)]);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("real"));
    let layout = |d: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v = Vec::new();
        for e in walkdir::WalkDir::new(d).sort_by_file_name() {
            let e = e.unwrap();
            if e.file_type().is_file() {
                let rel = e.path().strip_prefix(d).unwrap();
                v.push((s(rel).to_string(), std::fs::read(e.path()).unwrap()));
            }
        }
        v
    };
    let want = layout(&direct);
    assert!(!want.is_empty());
    assert!(layout(&real) == want, "the layout through the link differs");

    // A symlink to a file, or to nothing: refused, and left as it was.
    std::fs::write(env.path("file"), b"keep").unwrap();
    std::os::unix::fs::symlink("file", env.path("to-file")).unwrap();
    std::os::unix::fs::symlink("gone", env.path("to-nothing")).unwrap();
    for (name, what) in [
        (
            "to-file",
            "it is a symlink to a regular file (a directory is expected)",
        ),
        (
            "to-nothing",
            "it is a symlink to gone, which does not exist",
        ),
    ] {
        let p = env.path(name);
        let err = env.fails(&["export", "t", "--oci", s(&p)]);
        assert!(
            err.contains(&format!("refusing to replace {}: {what}", p.display())),
            "{err}"
        );
        assert!(std::fs::symlink_metadata(&p)
            .unwrap()
            .file_type()
            .is_symlink());
    }
    assert_eq!(std::fs::read(env.path("file")).unwrap(), b"keep");
    assert!(!env.path("gone").exists());
    // A symlink to a directory that is not empty: refused as the directory itself is.
    let err = env.fails(&["export", "t", "--oci", s(&link)]);
    assert!(err.contains("not empty"), "{err}");
    assert!(layout(&real) == want);
    assert_eq!(
        names(env.dir.path()),
        [
            "direct",
            "file",
            "link",
            "real",
            "src",
            "store",
            "to-file",
            "to-nothing"
        ]
    );
}

#[test]
fn export_tar_onto_a_directory_is_refused_and_the_directory_untouched() {
    let env = Env::new();
    sample_image(&env);
    let dir = env.path("out.tar.zst");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("inside"), b"keep").unwrap();
    let err = env.fails(&["export", "t", "--tar", s(&dir)]);
    assert!(
        err.contains(&format!(
            "refusing to replace {}: it is a directory",
            dir.display()
        )),
        "{err}"
    );
    assert!(std::fs::symlink_metadata(&dir).unwrap().is_dir());
    assert_eq!(names(&dir), ["inside"]);
    assert_eq!(std::fs::read(dir.join("inside")).unwrap(), b"keep");
    assert_eq!(names(env.dir.path()), ["out.tar.zst", "src", "store"]);
}

#[test]
fn key_generate_onto_a_device_or_fifo_is_refused_and_replaces_nothing() {
    let env = Env::new();
    let _restore = RestoreDevNull;
    let err = env.fails(&["key", "generate", "--out", "/dev/null"]);
    assert!(err.contains("/dev/null: already exists"), "{err}");
    assert!(std::fs::symlink_metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    let fifo = env.path("fifo");
    let got = read_fifo_while(&fifo, || {
        let err = env.fails(&["key", "generate", "--out", s(&fifo)]);
        assert!(err.contains("already exists"), "{err}");
    });
    assert!(got.is_empty());
    assert_eq!(names(env.dir.path()), ["fifo"]);
}
