//! Reading a tar, tar.gz or tar.zst into pending entries, content going straight into
//! the store as it streams.
//!
//! Nothing here writes to a filesystem tree, so an archive cannot make us write outside
//! anything; but an image must not carry what an unpacker would turn into an escape, so
//! absolute names, `..`, entries under a symlink (checked by [`crate::tree::validate`]),
//! hard links to anything not earlier in the archive, and duplicate names are refused,
//! each with the entry's name. Extension headers are read by us, not by the `tar` crate,
//! so that their sizes are bounded before anything is allocated. An archive that ends
//! without its end-of-archive blocks, or a compressed stream that is cut short, is an
//! error: a truncated archive would otherwise import as a smaller, valid-looking tree.
//! Owners and xattr names no host could be given are refused at their entry
//! ([`crate::tree::check_applicable`]). Memory stays bounded whatever the archive
//! expands to: content streams into the store, and what normalisation may rewrite is held
//! in memory only up to [`HOLD_LIMIT`] in all, then spilled to files. A member larger
//! than [`IN_MEMORY_LIMIT`] streams into the store as it is, and the normalisation report
//! lists it.

use crate::error::{Error, Result};
use crate::escape::{escape, escape_message};
use crate::ingest::IN_MEMORY_LIMIT;
use crate::normalize::{gzip, pyc};
use crate::store::Txn;
use crate::tree::scan::{Content, Pending};
use crate::tree::{entry_path, Entry, Hash, Kind, MAX_PATH, SYMLINK_MODE};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::rc::Rc;
use tar::EntryType;

/// Largest regular file accepted (a size field can claim up to 8 EiB).
pub const MAX_FILE_SIZE: u64 = 1 << 40;
/// Largest pax extended header (xattrs included) and GNU long name.
const MAX_PAX: u64 = 1 << 20;
const MAX_LONG_NAME: u64 = MAX_PATH as u64 + 1;
/// Normalisation candidates held in memory at once, in all; the rest wait in spill files.
/// A Debian root's gzip and pyc files come to about 35 MB, so real imports stay in memory.
pub const HOLD_LIMIT: u64 = 128 << 20;

/// Remembers whether the underlying stream reached its end.
struct EofTracker<R> {
    inner: R,
    eof: Rc<Cell<bool>>,
}

impl<R: Read> Read for EofTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof.set(true);
        }
        Ok(n)
    }
}

/// Options for reading an archive.
pub struct ArchiveReadOptions<'a> {
    /// Keep gzip and pyc files in memory so normalisation can rewrite them.
    pub keep_candidates: bool,
    /// Paths left out of the tree, with everything below a directory that matches.
    pub excludes: &'a crate::tree::scan::Excludes,
}

/// Reads an archive; `name` is how errors refer to it.
pub fn read_archive(
    src: impl Read,
    name: &str,
    txn: &Txn,
    opts: &ArchiveReadOptions,
) -> Result<Vec<Pending>> {
    let mut src = BufReader::with_capacity(1 << 20, src);
    let head = src
        .fill_buf()
        .map_err(|e| Error::io("read", name, e))?
        .to_vec();
    let inner: Box<dyn Read> = if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(src)
                .map_err(|e| Error::io("decompress", name, e))?,
        )
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(src))
    } else {
        Box::new(src)
    };
    let eof = Rc::new(Cell::new(false));
    read_tar(
        EofTracker {
            inner,
            eof: eof.clone(),
        },
        &eof,
        name,
        txn,
        opts,
    )
}

fn read_tar<R: Read>(
    src: EofTracker<R>,
    eof: &Rc<Cell<bool>>,
    name: &str,
    txn: &Txn,
    opts: &ArchiveReadOptions,
) -> Result<Vec<Pending>> {
    let mut r = TarReader {
        name,
        txn,
        opts,
        out: Vec::new(),
        seen: HashMap::new(),
        pax: None,
        long_name: None,
        long_link: None,
        last_path: b"(start of archive)".to_vec(),
        held: 0,
    };
    let mut ar = tar::Archive::new(src);
    let entries = ar
        .entries()
        .map_err(|e| r.io_bad(&r.last_path, e))?
        .raw(true);
    for item in entries {
        let ent = item.map_err(|e| r.io_bad(&r.last_path, e))?;
        r.entry(ent)?;
    }
    if eof.get() {
        return Err(r.bad(
            &r.last_path,
            "the archive ends without its end-of-archive marker (truncated?)".into(),
        ));
    }
    // Drain what follows the end marker so a compressed stream's end (and checksum) is checked.
    let mut rest = ar.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| {
        r.bad(
            &r.last_path,
            format!(
                "after the end of the archive: {}",
                escape_message(&e.to_string())
            ),
        )
    })?;
    if !r.seen.contains_key(&b"/"[..]) {
        // `tar -C dir -cf x.tar file…` has no entry for the root; it is a plain directory.
        r.out.push(Pending {
            entry: Entry::dir(b"/", 0o755, 0),
            content: None,
        });
    }
    Ok(r.out)
}

/// One pass over an archive's entries: what has been read so far, and the extension
/// headers waiting for the entry they describe.
struct TarReader<'a> {
    /// How errors name the archive.
    name: &'a str,
    txn: &'a Txn<'a>,
    opts: &'a ArchiveReadOptions<'a>,
    out: Vec<Pending>,
    /// Path -> index in `out`, for duplicates and hard link targets.
    seen: HashMap<Vec<u8>, usize>,
    pax: Option<Vec<u8>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    /// The last entry's name, for errors about what follows it.
    last_path: Vec<u8>,
    /// Bytes of normalisation candidates held in memory so far (see `HOLD_LIMIT`).
    held: u64,
}

impl TarReader<'_> {
    fn bad(&self, path: &[u8], reason: String) -> Error {
        Error::Archive {
            archive: self.name.to_string(),
            path: escape(path),
            reason,
        }
    }

    /// The tar crate's messages quote the header bytes they choke on (and the entry's
    /// name, unescaped): never pass those raw to a terminal.
    fn io_bad(&self, path: &[u8], e: std::io::Error) -> Error {
        self.bad(
            path,
            format!(
                "cannot read the archive: {}",
                escape_message(&e.to_string())
            ),
        )
    }

    fn entry<T: Read>(&mut self, mut ent: tar::Entry<'_, T>) -> Result<()> {
        let h = ent.header().clone();
        let ty = h.entry_type();
        let declared = h
            .entry_size()
            .map_err(|e| self.io_bad(&self.last_path, e))?;
        if self.extension(&mut ent, ty, declared)? {
            return Ok(());
        }
        let mut p = self.take_pax()?;
        let (raw_name, raw_link) = self.names(&h, &mut p);
        self.last_path = raw_name.clone();
        if raw_name.first() == Some(&b'/') {
            return Err(self.bad(
                &raw_name,
                "absolute path (refused; archives for images use ./ names)".into(),
            ));
        }
        let path = entry_path(&raw_name).map_err(|r| self.bad(&raw_name, r))?;
        if self.opts.excludes.covers(&path) {
            return Ok(()); // its content is skipped unread
        }
        if let Some(s) = p.size {
            if s != declared {
                return Err(self.bad(
                    &raw_name,
                    format!("pax size {s} differs from the header's {declared}"),
                ));
            }
        }
        let mut entry = self.metadata(&h, p, path, &raw_name)?;
        crate::tree::check_applicable(&entry).map_err(|r| self.bad(&raw_name, r))?;
        let is_old_dir = ty == EntryType::Regular && raw_name.ends_with(b"/");
        let mut content = None;
        entry.kind = match ty {
            _ if is_old_dir => Kind::Dir,
            EntryType::Regular | EntryType::Continuous => {
                let (kind, c) = self.file(&mut ent, declared, &entry.path, &raw_name)?;
                content = Some(c);
                kind
            }
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => {
                let t = raw_link
                    .ok_or_else(|| self.bad(&raw_name, "symlink without a target".into()))?;
                entry.mode = SYMLINK_MODE;
                Kind::Symlink { target: t }
            }
            EntryType::Link => {
                let t = raw_link
                    .ok_or_else(|| self.bad(&raw_name, "hard link without a target".into()))?;
                Kind::HardLink {
                    target: self.hard_link_target(&raw_name, &t)?,
                }
            }
            EntryType::Char => {
                let (major, minor) = self.device(&h, &raw_name)?;
                Kind::CharDev { major, minor }
            }
            EntryType::Block => {
                let (major, minor) = self.device(&h, &raw_name)?;
                Kind::BlockDev { major, minor }
            }
            EntryType::Fifo => Kind::Fifo,
            other => {
                return Err(self.bad(
                    &raw_name,
                    format!("unsupported tar entry type {:?}", other.as_byte() as char),
                ))
            }
        };
        self.record(entry, content, &raw_name)
    }

    /// The entry's path and link target as the archive spells them: a pax header's, a GNU
    /// long name's, else the header's own.
    fn names(&mut self, h: &tar::Header, p: &mut PaxFields) -> (Vec<u8>, Option<Vec<u8>>) {
        let raw_name = p
            .path
            .take()
            .or(self.long_name.take())
            .unwrap_or_else(|| h.path_bytes().into_owned());
        let raw_link = p
            .linkpath
            .take()
            .or(self.long_link.take())
            .or_else(|| h.link_name_bytes().map(|c| c.into_owned()));
        (raw_name, raw_link)
    }

    /// Reads an extension header (bounded, then whole) and keeps it for the next entry;
    /// false if this is not one.
    fn extension<T: Read>(
        &mut self,
        ent: &mut tar::Entry<'_, T>,
        ty: EntryType,
        declared: u64,
    ) -> Result<bool> {
        let limit = match ty {
            EntryType::XHeader | EntryType::XGlobalHeader => MAX_PAX,
            EntryType::GNULongName | EntryType::GNULongLink => MAX_LONG_NAME,
            _ => return Ok(false),
        };
        if declared > limit {
            return Err(self.bad(
                &self.last_path,
                format!("an extension header after it declares {declared} bytes (limit {limit})"),
            ));
        }
        let mut data = Vec::with_capacity(declared as usize);
        ent.read_to_end(&mut data)
            .map_err(|e| self.io_bad(&self.last_path, e))?;
        match ty {
            EntryType::XHeader => self.pax = Some(data),
            EntryType::XGlobalHeader => {} // archive comments (git archive); nothing we use
            EntryType::GNULongName => self.long_name = Some(strip_nul(data)),
            _ => self.long_link = Some(strip_nul(data)),
        }
        Ok(true)
    }

    /// The pax header waiting for this entry, parsed (empty if there is none).
    fn take_pax(&mut self) -> Result<PaxFields> {
        match self.pax.take() {
            None => Ok(PaxFields::default()),
            Some(d) => parse_pax(&d).map_err(|r| {
                self.bad(
                    &self.last_path,
                    format!("bad pax header before the next entry: {r}"),
                )
            }),
        }
    }

    /// The entry's mode, owner, mtime and xattrs (pax fields over the header's); its
    /// kind is left for the caller.
    fn metadata(
        &self,
        h: &tar::Header,
        p: PaxFields,
        path: Vec<u8>,
        raw_name: &[u8],
    ) -> Result<Entry> {
        let mode_bits = h.mode().map_err(|e| self.io_bad(raw_name, e))? & crate::tree::MODE_MASK;
        let uid = match p.uid {
            Some(u) => u,
            None => h.uid().map_err(|e| self.io_bad(raw_name, e))?,
        };
        let gid = match p.gid {
            Some(g) => g,
            None => h.gid().map_err(|e| self.io_bad(raw_name, e))?,
        };
        let mtime = match p.mtime {
            Some(m) => m,
            None => h.mtime().map_err(|e| self.io_bad(raw_name, e))? as i64,
        };
        let to_u32 = |v: u64, what: &str| {
            u32::try_from(v).map_err(|_| self.bad(raw_name, format!("{what} {v} out of range")))
        };
        Ok(Entry {
            path,
            kind: Kind::Dir,
            mode: mode_bits,
            uid: to_u32(uid, "uid")?,
            gid: to_u32(gid, "gid")?,
            mtime,
            xattrs: p.xattrs,
        })
    }

    /// A regular file: its size checked, its content streamed into the store or kept.
    fn file(
        &mut self,
        ent: &mut impl Read,
        declared: u64,
        path: &[u8],
        raw_name: &[u8],
    ) -> Result<(Kind, Content)> {
        if declared > MAX_FILE_SIZE {
            return Err(self.bad(
                raw_name,
                format!("declares {declared} bytes, more than the limit of {MAX_FILE_SIZE}"),
            ));
        }
        let (hash, c) = read_content(ent, declared, path, self.txn, self.opts, &mut self.held)
            .map_err(|e| match e {
                Error::Io { source, .. } => self.io_bad(raw_name, source),
                other => other,
            })?;
        Ok((
            Kind::File {
                size: declared,
                hash,
            },
            c,
        ))
    }

    /// What a hard link to `t` links to: a file earlier in the archive (or what an
    /// earlier hard link to one links to), never anything outside it.
    fn hard_link_target(&self, raw_name: &[u8], t: &[u8]) -> Result<Vec<u8>> {
        if t.first() == Some(&b'/') {
            return Err(self.bad(
                raw_name,
                format!(
                    "hard link to absolute path {} (outside the archive)",
                    escape(t)
                ),
            ));
        }
        let tp = entry_path(t)
            .map_err(|r| self.bad(raw_name, format!("hard link target {}: {r}", escape(t))))?;
        match self.seen.get(&tp).map(|&i| &self.out[i].entry) {
            Some(Entry {
                kind: Kind::File { .. },
                path,
                ..
            }) => Ok(path.clone()),
            Some(Entry {
                kind: Kind::HardLink { target },
                ..
            }) => Ok(target.clone()),
            Some(other) => Err(self.bad(
                raw_name,
                format!(
                    "hard link to {} which is a {}",
                    escape(&tp),
                    other.kind.name()
                ),
            )),
            None => Err(self.bad(
                raw_name,
                format!(
                    "hard link to {} which is not earlier in the archive (outside it)",
                    escape(&tp)
                ),
            )),
        }
    }

    fn device(&self, h: &tar::Header, raw_name: &[u8]) -> Result<(u32, u32)> {
        let major = h
            .device_major()
            .map_err(|e| self.io_bad(raw_name, e))?
            .unwrap_or(0);
        let minor = h
            .device_minor()
            .map_err(|e| self.io_bad(raw_name, e))?
            .unwrap_or(0);
        Ok((major, minor))
    }

    /// Adds the entry; a path seen before is refused, unless it is the same directory
    /// listed again (tar -r, some tools), which is harmless.
    fn record(&mut self, entry: Entry, content: Option<Content>, raw_name: &[u8]) -> Result<()> {
        if let Some(&i) = self.seen.get(&entry.path) {
            if !(self.out[i].entry == entry && entry.kind == Kind::Dir) {
                return Err(self.bad(raw_name, "the archive has this path twice".into()));
            }
            return Ok(());
        }
        self.seen.insert(entry.path.clone(), self.out.len());
        self.out.push(Pending { entry, content });
        Ok(())
    }
}

fn strip_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// Streams a file's content into the store, or keeps it aside if normalisation may
/// rewrite it: in memory while the candidates held total at most [`HOLD_LIMIT`] bytes
/// (`held`), in a spill file of the transaction after that. A small archive can expand
/// to any number of large gzip-looking members; held in memory until the ingest, they
/// once took 1.45 GB for a 43 KB archive.
fn read_content(
    r: &mut impl Read,
    size: u64,
    path: &[u8],
    txn: &Txn,
    opts: &ArchiveReadOptions,
    held: &mut u64,
) -> Result<(Hash, Content)> {
    let what = escape(path);
    let mut head = [0u8; 3];
    let k = (size as usize).min(3);
    r.read_exact(&mut head[..k])
        .map_err(|e| Error::io("read content of", &what, e))?;
    let ruled = opts.keep_candidates && (pyc::is_pyc(path) || gzip::looks_like_gzip(&head[..k]));
    let candidate = ruled && size <= IN_MEMORY_LIMIT;
    let mut rest = std::io::Cursor::new(head[..k].to_vec()).chain(r);
    if candidate && *held + size > HOLD_LIMIT {
        // The ingest hashes it (after normalising): no hash yet.
        let spilled = txn.spill(&mut rest, size, &what)?;
        return Ok((Hash([0; 32]), Content::Disk(spilled)));
    }
    if candidate {
        let mut data = Vec::with_capacity(size as usize);
        rest.take(size)
            .read_to_end(&mut data)
            .map_err(|e| Error::io("read content of", &what, e))?;
        if data.len() as u64 != size {
            return Err(Error::io(
                "read content of",
                &what,
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        *held += size;
        return Ok((Hash::of(&data), Content::Bytes(data)));
    }
    let h = txn.put_reader(rest, size, &what)?;
    // Too large to hold for a rule: stored as it is, and the ingest reports it.
    if ruled {
        return Ok((h, Content::KnownTooLarge(head)));
    }
    Ok((h, Content::Known))
}

#[derive(Default)]
struct PaxFields {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<i64>,
    size: Option<u64>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The records of a pax extended header: `LEN key=value\n`, LEN counting the whole
/// record. Parsed by length, since values (paths, binary xattrs) may hold newlines; the
/// `tar` crate's parser splits on newlines and would misread them.
fn pax_records(data: &[u8]) -> impl Iterator<Item = std::result::Result<(&[u8], &[u8]), String>> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let sp = rest
                .iter()
                .take(20)
                .position(|&b| b == b' ')
                .ok_or("record without a length")?;
            let len: usize = std::str::from_utf8(&rest[..sp])
                .ok()
                .and_then(|l| l.parse().ok())
                .ok_or("record length is not a number")?;
            let rec = rest
                .get(..len)
                .filter(|r| len > sp + 1 && r.last() == Some(&b'\n'))
                .ok_or("record length does not match its content")?;
            let kv = &rec[sp + 1..len - 1];
            let eq = kv
                .iter()
                .position(|&b| b == b'=')
                .ok_or("record without `=`")?;
            rest = &rest[len..];
            Ok((&kv[..eq], &kv[eq + 1..]))
        })();
        if parsed.is_err() {
            rest = &[];
        }
        Some(parsed.map_err(|e: &str| e.to_string()))
    })
}

fn parse_pax(data: &[u8]) -> std::result::Result<PaxFields, String> {
    let mut f = PaxFields::default();
    for rec in pax_records(data) {
        let (k, v) = rec?;
        let num = |v: &[u8]| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| format!("{} is not a number", escape(k)))
        };
        match k {
            b"path" => f.path = Some(v.to_vec()),
            b"linkpath" => f.linkpath = Some(v.to_vec()),
            b"uid" => f.uid = Some(num(v)?),
            b"gid" => f.gid = Some(num(v)?),
            b"size" => f.size = Some(num(v)?),
            b"mtime" => {
                // Seconds, possibly with a fraction, possibly negative: the whole seconds.
                let s = std::str::from_utf8(v).map_err(|_| "mtime is not text")?;
                let (int, frac) = s.split_once('.').unwrap_or((s, ""));
                let mut m = int
                    .parse::<i64>()
                    .map_err(|_| format!("mtime {s:?} is not a number"))?;
                if int.starts_with('-') && frac.bytes().any(|b| b != b'0') {
                    m -= 1; // floor, for negative times with a fraction
                }
                f.mtime = Some(m);
            }
            _ if k.starts_with(b"SCHILY.xattr.") => f.xattrs.push((k[13..].to_vec(), v.to_vec())),
            _ if k.starts_with(b"GNU.sparse.") => {
                return Err("sparse files are not supported".into())
            }
            _ => {} // atime, ctime, comments, charset: not part of an image
        }
    }
    f.xattrs.sort();
    f.xattrs.dedup_by(|a, b| a.0 == b.0);
    Ok(f)
}
