//! This program's own executable, as an agent on a host: how it identifies itself.
//!
//! An agent tells the controller which build it is, so that `--install-agent` replaces an
//! outdated one. Hashing the whole executable at every session cost a read of all of it
//! (tens of MB with debug info, all of it resident before any work); the ELF build ID
//! (`.note.gnu.build-id`, a hash the linker computes over the whole output) says the same
//! in 20 bytes read from the program headers, and it survives stripping, so the stripped
//! copy on a host and the controller's own binary with its debug info have the same
//! identity. Without a build ID the executable is hashed, streamed through a small
//! buffer.

use imager_core::Hash;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;

/// The executable of the running process.
const SELF: &str = "/proc/self/exe";

/// This build's identity (see the module comment); all zeros if the executable cannot
/// be read at all.
pub fn identity() -> Hash {
    static ID: OnceLock<Hash> = OnceLock::new();
    *ID.get_or_init(|| identity_of(Path::new(SELF)).unwrap_or(Hash([0; 32])))
}

/// The identity of the executable at `path`: from its build ID, else its streamed hash.
pub fn identity_of(path: &Path) -> std::io::Result<Hash> {
    let f = imager_core::fsx::open(path).map_err(imager_core::Error::into_io)?;
    if let Some(id) = build_id(&f) {
        let mut h = blake3::Hasher::new();
        h.update(b"elf build-id\0");
        h.update(&id);
        return Ok(Hash(*h.finalize().as_bytes()));
    }
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut f = f;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Hash(*h.finalize().as_bytes()))
}

/// Bytes `[off, off + len)` of `f`, or `None` past its end.
fn read_at(f: &std::fs::File, off: u64, len: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, off).ok()?;
    Some(b)
}

/// The GNU build ID of a 64-bit little-endian ELF file (x86_64, aarch64), read from its
/// program headers' PT_NOTE segments only.
fn build_id(f: &std::fs::File) -> Option<Vec<u8>> {
    let u16_at = |b: &[u8], o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |b: &[u8], o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |b: &[u8], o: usize| Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?));
    let eh = read_at(f, 0, 64)?;
    // ELFCLASS64, ELFDATA2LSB.
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let phoff = u64_at(&eh, 32)?;
    let phentsize = u16_at(&eh, 54)? as usize;
    let phnum = u16_at(&eh, 56)? as usize;
    if phentsize < 56 || phnum > 256 {
        return None;
    }
    let ph = read_at(f, phoff, phentsize * phnum)?;
    for i in 0..phnum {
        let p = &ph[i * phentsize..];
        const PT_NOTE: u32 = 4;
        if u32_at(p, 0)? != PT_NOTE {
            continue;
        }
        let (off, size) = (u64_at(p, 8)?, u64_at(p, 32)?);
        if size > 1 << 16 {
            continue;
        }
        let notes = read_at(f, off, size as usize)?;
        let mut at = 0usize;
        while at + 12 <= notes.len() {
            let namesz = u32_at(&notes, at)? as usize;
            let descsz = u32_at(&notes, at + 4)? as usize;
            let kind = u32_at(&notes, at + 8)?;
            let name_at = at + 12;
            let desc_at = name_at + namesz.div_ceil(4) * 4;
            let end = desc_at + descsz.div_ceil(4) * 4;
            const NT_GNU_BUILD_ID: u32 = 3;
            if kind == NT_GNU_BUILD_ID && notes.get(name_at..name_at + namesz)? == b"GNU\0" {
                let id = notes.get(desc_at..desc_at + descsz)?;
                return (!id.is_empty()).then(|| id.to_vec());
            }
            at = end;
        }
    }
    None
}
