//! The deterministic tar.zst export: the same image gives the same bytes on any machine.
//!
//! Entries in image order ([`crate::tree::path_cmp`]: each directory followed by its contents); names `./path`, with a
//! trailing `/` for directories; numeric owners only (empty user and group names); ustar
//! headers, with a pax header only when needed, holding in this order `path` and
//! `linkpath` (longer than 100 bytes), `uid`/`gid` (too large for ustar), `mtime`
//! (negative or too large) and `SCHILY.xattr.<name>` for every xattr, which GNU tar reads
//! with `--xattrs`; zstd at fixed parameters (`super::ZSTD_LEVEL`).

use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use crate::store::Store;
use crate::tree::{Entry, Kind, Tree};
use std::io::Write;
use std::path::Path;
use tar::{EntryType, Header};

const USTAR_ID_MAX: u32 = 0o7777777;
const USTAR_TIME_MAX: i64 = 0o77777777777;

/// The name an entry has inside the archive.
fn tar_name(path: &[u8], is_dir: bool) -> Vec<u8> {
    let mut n = b".".to_vec();
    if path != b"/" {
        n.extend_from_slice(path);
    }
    if is_dir {
        n.push(b'/');
    }
    n
}

/// Writes `tree` as a tar stream into `out` (uncompressed).
pub fn write_tar<W: Write>(
    store: &Store,
    tree: &Tree,
    out: W,
    progress: &dyn Progress,
) -> Result<W> {
    let mut b = tar::Builder::new(out);
    progress.start("export", Some(tree.entries().len() as u64));
    let io = |e: std::io::Error| Error::io("write archive for", store.root(), e);
    for e in tree.entries() {
        let (mut h, pax) = header(e)?;
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(io)?;
        }
        h.set_cksum();
        match e.kind {
            Kind::File { hash, size } => {
                let r = store.object_reader(&hash, size)?;
                b.append(&h, r).map_err(|err| {
                    // A corrupt object surfaces as a read error: keep its message.
                    Error::Store {
                        store: store.root().to_path_buf(),
                        reason: format!("exporting {}: {err}", crate::escape::escape(&e.path)),
                    }
                })?;
            }
            _ => b.append(&h, std::io::empty()).map_err(io)?,
        }
        progress.inc(1);
    }
    progress.finish();
    b.into_inner().map_err(io)
}

/// Pax records (key, value) that go before an entry's header.
type Pax = Vec<(String, Vec<u8>)>;

fn header(e: &Entry) -> Result<(Header, Pax)> {
    let mut h = Header::new_ustar();
    let mut pax: Pax = Vec::new();
    let is_dir = e.kind == Kind::Dir;
    let name = tar_name(&e.path, is_dir);
    set_name_field(&mut h, &name, &mut pax, "path");
    let (ty, size) = match &e.kind {
        Kind::File { size, .. } => (EntryType::Regular, *size),
        Kind::Dir => (EntryType::Directory, 0),
        Kind::Symlink { target } => {
            set_link_field(&mut h, target, &mut pax);
            (EntryType::Symlink, 0)
        }
        Kind::HardLink { target } => {
            set_link_field(&mut h, &tar_name(target, false), &mut pax);
            (EntryType::Link, 0)
        }
        Kind::CharDev { .. } => (EntryType::Char, 0),
        Kind::BlockDev { .. } => (EntryType::Block, 0),
        Kind::Fifo => (EntryType::Fifo, 0),
    };
    h.set_entry_type(ty);
    h.set_size(size);
    h.set_mode(e.mode);
    for (key, v, set) in [
        ("uid", e.uid, Header::set_uid as fn(&mut Header, u64)),
        ("gid", e.gid, Header::set_gid),
    ] {
        if v > USTAR_ID_MAX {
            pax.push((key.to_string(), v.to_string().into_bytes()));
            set(&mut h, 0);
        } else {
            set(&mut h, v as u64);
        }
    }
    if (0..=USTAR_TIME_MAX).contains(&e.mtime) {
        h.set_mtime(e.mtime as u64);
    } else {
        pax.push(("mtime".into(), e.mtime.to_string().into_bytes()));
        h.set_mtime(0);
    }
    if let Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } = e.kind {
        let err = |r: std::io::Error| {
            Error::invalid(
                &e.path,
                format!("device number does not fit a tar header: {r}"),
            )
        };
        h.set_device_major(major).map_err(err)?;
        h.set_device_minor(minor).map_err(err)?;
    }
    for (n, v) in &e.xattrs {
        // Every tree is validated against this already; an archive that reads back as
        // another image must not be written even if one slipped through.
        if n.contains(&b'=') {
            return Err(Error::invalid(
                &e.path,
                format!(
                    "xattr name {} contains `=`, which a pax header cannot carry",
                    crate::escape::escape(n)
                ),
            ));
        }
        let key = format!(
            "SCHILY.xattr.{}",
            String::from_utf8(n.clone()).map_err(|_| {
                Error::invalid(
                    &e.path,
                    "xattr name is not UTF-8, which a pax header cannot carry",
                )
            })?
        );
        pax.push((key, v.clone()));
    }
    Ok((h, pax))
}

fn set_name_field(h: &mut Header, name: &[u8], pax: &mut Pax, key: &str) {
    let field = &mut h.as_old_mut().name;
    if name.len() <= field.len() {
        field[..name.len()].copy_from_slice(name);
    } else {
        let cut = field.len();
        field.copy_from_slice(&name[..cut]);
        pax.push((key.to_string(), name.to_vec()));
    }
}

fn set_link_field(h: &mut Header, target: &[u8], pax: &mut Pax) {
    let field = &mut h.as_old_mut().linkname;
    if target.len() <= field.len() {
        field[..target.len()].copy_from_slice(target);
    } else {
        let cut = field.len();
        field.copy_from_slice(&target[..cut]);
        pax.push(("linkpath".to_string(), target.to_vec()));
    }
}

/// Writes `tree` as tar.zst into `out`, with the fixed compression parameters.
pub fn write_tar_zst<W: Write>(
    store: &Store,
    tree: &Tree,
    out: W,
    progress: &dyn Progress,
) -> Result<W> {
    let what = store.root();
    let mut enc =
        zstd::stream::write::Encoder::new(out, super::ZSTD_LEVEL).ctx("start compressing", what)?;
    enc.include_checksum(true)
        .ctx("configure compression", what)?;
    enc.multithread(super::ZSTD_WORKERS)
        .ctx("configure compression", what)?;
    let enc = write_tar(store, tree, enc, progress)?;
    enc.finish().ctx("finish compressing", what)
}

/// The SHA-256 (`sha256:HEX`) of the tar.zst [`export_tar_zst`] writes for `tree`,
/// computed without writing it anywhere: what `rebuild --vary` compares between the
/// original and the rebuild.
pub fn tar_zst_digest(store: &Store, tree: &Tree, progress: &dyn Progress) -> Result<String> {
    let h = write_tar_zst(store, tree, super::Hashing::new(std::io::sink()), progress)?;
    Ok(h.digest())
}

/// Writes `tree` to `dest` as tar.zst, atomically: a temporary beside `dest`, renamed
/// into place only when complete, removed on any error.
pub fn export_tar_zst(
    store: &Store,
    tree: &Tree,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    crate::fsx::write_atomic_with(dest, |f| {
        let w = write_tar_zst(store, tree, std::io::BufWriter::new(f), progress)?;
        w.into_inner()
            .map_err(|e| Error::io("write", dest, e.into_error()))?;
        Ok(())
    })
}
