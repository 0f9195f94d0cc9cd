//! Exporting an image as an ext4 filesystem image, so that machines can be installed or
//! booted from it (`dd` it onto a partition, attach it to a VM, loop-mount it).
//!
//! Why ext4 through e2fsprogs' `mke2fs -d`, not erofs: a host booted from the image
//! writes to its root (package upgrades, logs, local state that pushes keep); erofs is
//! read-only and would need an overlay set up by the initramfs. Every kernel and boot
//! loader reads ext4; `mke2fs -d` copies hard links, xattrs (security.capability and
//! ACLs included), device nodes, fifos, owners and modes from a directory, and the
//! knobs to make its output reproducible exist: `-U` (UUID, which also seeds the
//! metadata checksums), `-E hash_seed=` (directory hashes) and `E2FSPROGS_FAKE_TIME`
//! (every time mke2fs itself stamps). `mke2fs -d` walks directories sorted by name
//! (scandir, alphasort: run under `LC_ALL=C`), so inode numbers follow the tree.
//!
//! What it does not fix, this module does: inode change and access times come from the
//! staged copy (the time of the export), so after mke2fs every inode in use gets the
//! image's epoch as its ctime and atime through `debugfs` (an image has no atimes); the features and layout come from a
//! `mke2fs.conf` written here, not the host's `/etc/mke2fs.conf`, and the tools run with
//! an empty environment. The tree is staged into a directory beside the output with
//! [`super::dir::export_dir`] and scanned back before mke2fs sees it, so that anything
//! the host's filesystem adds (an SELinux label, an inherited default ACL) stops the
//! export instead of reaching the image. The same image and e2fsprogs version give the
//! same bytes; the result is written atomically (a temporary beside it, renamed). A
//! target that is a character device or a fifo (`/dev/null`, a pipe into `dd` or `ssh`)
//! gets the finished image's bytes written into it instead, staged in `$TMPDIR`
//! (`/dev` is no place for a tree); anything else that is not a file is refused
//! ([`crate::fsx::output_target`]).

use crate::derived;
use crate::error::{Error, IoContext, Result};
use crate::fsx::{self, OutputTarget};
use crate::progress::Progress;
use crate::store::Store;
use crate::tree::{Hash, Kind, Tree};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Block and inode sizes: fixed, so the size of the tree alone decides the layout.
const BLOCK: u64 = 4096;
const INODE_SIZE: u64 = 256;
/// The first inode mke2fs gives to a file (1 to 10 are reserved, 11 is lost+found).
const RESERVED_INODES: u64 = 11;

/// ext4 as Debian 12 makes it (its `/etc/mke2fs.conf`): without `orphan_file` and
/// `metadata_csum_seed`, which the GRUB of Debian 12 cannot read.
const MKE2FS_CONF: &str = "[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
\treserved_ratio = 5.0
\tlazy_itable_init = false
\tlazy_journal_init = false

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

/// What an export made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiskExport {
    /// The filesystem's UUID (derived from the image ID).
    pub uuid: String,
    /// Size of the filesystem (and of the file, which is sparse) in bytes.
    pub bytes: u64,
    /// Inodes the filesystem was made with: the tree's plus headroom.
    pub inodes: u64,
    /// The time in every superblock and inode change time field.
    pub epoch: i64,
}

/// The filesystem's geometry, from the tree alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub blocks: u64,
    pub inodes: u64,
    pub journal_mib: u64,
}

/// Sizes the filesystem: the blocks the content, directories, long symlinks and xattrs
/// need, plus inode tables, journal and per-group metadata, plus headroom for the host
/// that boots it (a quarter of the content, at least 64 MiB) and 5% reserved for root.
pub fn geometry(tree: &Tree) -> Geometry {
    let blocks_of = |bytes: u64| bytes.div_ceil(BLOCK);
    let mut data = 0u64;
    let mut inodes = RESERVED_INODES;
    // Directory entry bytes per directory (8 bytes + name, 4-aligned; `.` and `..`).
    let mut dir_bytes: std::collections::HashMap<&[u8], u64> = Default::default();
    for e in tree.entries() {
        if let Some(p) = crate::tree::parent(&e.path) {
            let name = crate::tree::file_name(&e.path).len() as u64;
            *dir_bytes.entry(p).or_insert(24) += (8 + name).next_multiple_of(4);
        }
        if e.is_hardlink() {
            continue;
        }
        inodes += 1;
        match &e.kind {
            // One extent block per 128 MiB covers fragmentation mke2fs may cause.
            Kind::File { size, .. } => data += blocks_of(*size) + size / (128 << 20),
            Kind::Symlink { target } if target.len() >= 60 => data += 1,
            _ => {}
        }
        // What does not fit in the inode (about 100 bytes) takes a block.
        let xattr: u64 = e
            .xattrs
            .iter()
            .map(|(n, v)| 16 + n.len() as u64 + v.len() as u64)
            .sum();
        if xattr > 96 {
            data += blocks_of(xattr);
        }
    }
    // A directory over one block gets an htree: index blocks, and leaves 3/4 full.
    data += dir_bytes
        .values()
        .map(|&b| {
            if b <= BLOCK {
                1
            } else {
                blocks_of(b * 4 / 3) + 1
            }
        })
        .sum::<u64>();
    let inodes = inodes + (inodes / 4).max(4096);
    let journal_mib = if data * BLOCK < (1 << 30) { 16 } else { 64 };
    let headroom = (data / 4).max((64 << 20) / BLOCK);
    let itable = blocks_of(inodes * INODE_SIZE);
    let used = data + itable + journal_mib * (1 << 20) / BLOCK + headroom;
    // Per 32768-block group: bitmaps, descriptors, backup superblocks, resize reserve.
    let meta = (used / 32768 + 1) * 64;
    let blocks = (used + meta) * 105 / 100;
    Geometry {
        blocks,
        inodes,
        journal_mib,
    }
}

/// Removes the work directory and, unless kept, the temporary output when dropped, so a
/// failure anywhere leaves nothing behind.
pub(crate) struct Scratch {
    pub work: PathBuf,
    pub tmp: PathBuf,
    pub keep_tmp: bool,
}

impl Scratch {
    /// `.NAME.export-PID` (a directory) and `.NAME.tmp-PID` beside `dest`.
    pub(crate) fn beside(dest: &Path) -> Result<Scratch> {
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Scratch::in_dir(dir, dest)
    }

    /// The same names in `dir`, for a target whose own directory is no place to stage
    /// in (a device's `/dev`).
    pub(crate) fn in_dir(dir: &Path, dest: &Path) -> Result<Scratch> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Export {
                target: dest.to_path_buf(),
                reason: "the target has no file name".into(),
            })?;
        let pid = std::process::id();
        let s = Scratch {
            work: dir.join(format!(".{name}.export-{pid}")),
            tmp: dir.join(format!(".{name}.tmp-{pid}")),
            keep_tmp: false,
        };
        // Leftovers of a crashed export with this PID would make create fail.
        s.clean();
        // Not create_dir_all: a missing target directory is the caller's mistake.
        fsx::create_dir(&s.work)?;
        Ok(s)
    }

    fn clean(&self) {
        let _ = fsx::remove_dir_all(&self.work);
        if !self.keep_tmp {
            let _ = fsx::remove_dir_all(&self.tmp);
            let _ = fsx::remove_file(&self.tmp);
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.clean();
    }
}

/// Runs an external tool with an empty environment but for `PATH` (plus the sbin
/// directories e2fsprogs lives in), `LC_ALL=C` and `TZ=UTC`, and `env`; a tool that
/// is missing or fails is an [`Error::Export`] naming it, its package and its stderr.
pub(crate) fn run_tool(
    cmd: &mut Command,
    package: &str,
    env: &[(&str, String)],
    target: &Path,
) -> Result<Output> {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env_clear()
        .env("PATH", format!("{path}:/usr/sbin:/sbin:/usr/bin:/bin"))
        .env("LC_ALL", "C")
        .env("TZ", "UTC");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let err = |reason: String| Error::Export {
        target: target.to_path_buf(),
        reason,
    };
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            err(format!("{tool} not found: install {package}"))
        } else {
            err(format!("could not run {tool}: {e}"))
        }
    })?;
    if !out.status.success() {
        return Err(err(format!(
            "{tool} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// `imager export IMAGE --disk OUT.img`: the image as an ext4 filesystem image at `dest`.
pub fn export_disk(
    store: &Store,
    id: &Hash,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<DiskExport> {
    // Decided before any work, so a refusal costs nothing; a file is staged beside the
    // file that is replaced (a symlink's target), on its filesystem, for the rename.
    let out = fsx::output_target(dest)?;
    let tree = store.read_image(id)?;
    let scratch = match &out {
        OutputTarget::Replace(file) => Scratch::beside(file)?,
        OutputTarget::Stream { .. } => Scratch::in_dir(&std::env::temp_dir(), dest)?,
    };
    let root = scratch.work.join("root");
    super::dir::export_dir(store, &tree, &root, progress)?;
    check_staged(&root, id, dest, progress)?;

    let conf = scratch.work.join("mke2fs.conf");
    fsx::write(&conf, MKE2FS_CONF)?;
    let g = geometry(&tree);
    // e2fsprogs takes no time before 1970.
    let epoch = derived::epoch(&tree).max(0);
    let uuid = derived::uuid("ext4", id);
    let env = [
        ("MKE2FS_CONFIG", conf.display().to_string()),
        ("E2FSPROGS_FAKE_TIME", epoch.to_string()),
    ];
    progress.start("mke2fs", None);
    let root_entry = &tree.entries()[0];
    run_tool(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-T", "default"])
            .args(["-b", &BLOCK.to_string(), "-I", &INODE_SIZE.to_string()])
            .args(["-N", &g.inodes.to_string(), "-U", &uuid])
            .args(["-J", &format!("size={}", g.journal_mib)])
            .arg("-E")
            .arg(format!(
                "hash_seed={uuid},root_owner={}:{},lazy_itable_init=0,lazy_journal_init=0",
                root_entry.uid, root_entry.gid
            ))
            .arg("-d")
            .arg(&root)
            .arg(&scratch.tmp)
            .arg(g.blocks.to_string()),
        "e2fsprogs",
        &env,
        dest,
    )?;
    set_change_times(&scratch, root_entry, epoch, &env, dest)?;
    progress.finish();
    match &out {
        OutputTarget::Replace(file) => {
            let f = fsx::open(&scratch.tmp)?;
            f.sync_all().ctx("flush", &scratch.tmp)?;
            fsx::rename(&scratch.tmp, file)?;
        }
        OutputTarget::Stream { .. } => {
            let mut image = fsx::open(&scratch.tmp)?;
            let mut w = fsx::open_stream(dest)?;
            std::io::copy(&mut image, &mut w).ctx("write", dest)?;
        }
    }
    Ok(DiskExport {
        uuid,
        bytes: g.blocks * BLOCK,
        inodes: g.inodes,
        epoch,
    })
}

/// The staged directory must be exactly the image: a label or ACL the host's filesystem
/// added would otherwise go into the filesystem image.
fn check_staged(root: &Path, id: &Hash, dest: &Path, progress: &dyn Progress) -> Result<()> {
    let excludes = crate::tree::scan::Excludes::default();
    let (staged, _, _) = crate::ingest::hash_dir(root, None, &excludes, progress)?;
    if staged != *id {
        return Err(Error::Export {
            target: dest.to_path_buf(),
            reason: format!(
                "the tree staged in {} reads back as image {staged}, not {id}: its filesystem \
                 adds or drops metadata (SELinux labels, default ACLs, missing xattr support); \
                 write the image into another directory (for a device or fifo, set \
                 TMPDIR to one)",
                root.display()
            ),
        });
    }
    Ok(())
}

/// Gives every inode in use the epoch as its change and access time (mke2fs copied the
/// staged copy's: the export's time, and reading the copy back moved access times) and
/// the root its mode and mtime, through two debugfs runs: which inodes are in use, then set them. Inodes
/// are named by number, so no path needs quoting for debugfs's command parser.
fn set_change_times(
    scratch: &Scratch,
    root: &crate::Entry,
    epoch: i64,
    env: &[(&str, String)],
    dest: &Path,
) -> Result<()> {
    let out = run_tool(
        Command::new("dumpe2fs").arg("-h").arg(&scratch.tmp),
        "e2fsprogs",
        env,
        dest,
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let count: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Inode count:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::Export {
            target: dest.to_path_buf(),
            reason: "dumpe2fs printed no inode count".into(),
        })?;
    let probe = scratch.work.join("testi.cmd");
    let cmds: String = (1..=count).map(|i| format!("testi <{i}>\n")).collect();
    fsx::write(&probe, cmds)?;
    let out = run_tool(
        Command::new("debugfs")
            .arg("-f")
            .arg(&probe)
            .arg(&scratch.tmp),
        "e2fsprogs",
        env,
        dest,
    )?;
    // "Inode 12 is marked in use" / "Inode 13 is not in use".
    let in_use: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.ends_with("is marked in use"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        // 1 and 3 to 10 are reserved and empty; 7 and 8 (resize, journal) carry mke2fs's
        // own time already.
        .filter(|&i| i == 2 || i >= RESERVED_INODES)
        .collect();
    let set = scratch.work.join("ctime.cmd");
    // `@` marks seconds: debugfs reads a bare number as a date first (YYYYMMDD...), so
    // 1796221081 (December 2026) became July 2340.
    let mut cmds: String = in_use
        .iter()
        .map(|i| format!("sif <{i}> ctime @{epoch}\nsif <{i}> atime @{epoch}\n"))
        .collect();
    // mke2fs gives the root its own mode and times, not the source directory's.
    cmds.push_str(&format!(
        "sif <2> mode 0{:o}\nsif <2> mtime @{}\n",
        0o040000 | root.mode,
        root.mtime.max(0)
    ));
    fsx::write(&set, cmds)?;
    let out = run_tool(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&set)
            .arg(&scratch.tmp),
        "e2fsprogs",
        env,
        dest,
    )?;
    // debugfs reports a failed command on stderr and still exits 0.
    let errs = String::from_utf8_lossy(&out.stderr);
    if let Some(l) = errs.lines().find(|l| !l.starts_with("debugfs ")) {
        return Err(Error::Export {
            target: dest.to_path_buf(),
            reason: format!("debugfs could not set change times: {l}"),
        });
    }
    Ok(())
}
