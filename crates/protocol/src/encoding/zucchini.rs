//! An executable-aware delta: Zucchini (Chromium's executable differ, Courgette's
//! successor, which Android's update_engine uses for libraries and kernel modules),
//! for an ELF file whose old version the host has. A patched library moves its code, and
//! every relative call and jump across the move changes; Zucchini disassembles both
//! versions, matches what references what, and diffs with those references resolved, so
//! the patch carries the change, not its consequences (on the benchmark corpus, a third
//! smaller than bsdiff's patches of the same executables).
//!
//! The raw patch is Zucchini's own format (it records the old and new files' sizes and
//! CRC-32s, which its apply checks); it travels zstd-compressed on its own or raw in a
//! pack, as bsdiff's. Zucchini works in memory: the agent holds the host's file, the
//! patch and the result, each refused past [`MAX_FILE`] before it is read or made (the
//! controller makes no larger patch), and Zucchini's own tables beside them.

/// The largest old or new file Zucchini is computed for and applied to: its generation
/// takes some 30 bytes of memory per byte of the files, and larger executables are rare
/// enough that bsdiff serves them.
pub const MAX_FILE: u64 = 48 << 20;

/// Makes Zucchini compute its whole-file CRC-32s with crc32fast (zlib's CRC-32, as it
/// requires), once per process, before its first patch is made or applied.
fn fast_crc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| zucchini::set_crc32(Some(crc32fast::hash)));
}

/// Old and new files of more than this many bytes together get their patch made one at a
/// time.
const SERIAL_FROM: usize = 16 << 20;

/// Whether `b` is an ELF file (what Zucchini is used for here).
pub fn is_elf(b: &[u8]) -> bool {
    b.starts_with(b"\x7fELF")
}

/// The controller's side: the raw patch from ELF file `old` to ELF file `new`, proved to
/// make `new`, or why there is none.
pub fn diff(old: &[u8], new: &[u8]) -> std::result::Result<Vec<u8>, String> {
    if !is_elf(old) || !is_elf(new) {
        return Err("Zucchini is used for ELF files only".into());
    }
    if old.len().max(new.len()) as u64 > MAX_FILE {
        return Err(format!(
            "over the {MAX_FILE}-byte limit of Zucchini patches"
        ));
    }
    fast_crc();
    // Generation takes some 30 bytes of memory per byte of the files: large ones are
    // made one at a time, so that the controller's memory does not grow with its cores
    // (as large files' chunked encodings, for the same reason).
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = (old.len() + new.len() > SERIAL_FROM)
        .then(|| ONE.lock().unwrap_or_else(|p| p.into_inner()));
    let raw = zucchini::generate(old, new).map_err(|e| format!("Zucchini: {e}"))?;
    if raw.len() as u64 > MAX_FILE {
        return Err(format!("the patch is over the {MAX_FILE}-byte limit"));
    }
    if patched(old, &raw, new.len() as u64)? != new {
        return Err("the Zucchini patch just made does not make its file".into());
    }
    Ok(raw)
}

/// The content raw patch `raw` makes from `old`, of at most `limit` bytes.
pub fn patched(old: &[u8], raw: &[u8], limit: u64) -> std::result::Result<Vec<u8>, String> {
    fast_crc();
    let limit = usize::try_from(limit.min(MAX_FILE)).unwrap_or(usize::MAX);
    zucchini::apply_bounded(old, raw, limit).map_err(|e| format!("Zucchini: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two builds of "a program": this test binary, and the same with a block of its
    /// code region shifted by an inserted run of bytes (every reference across it moves).
    fn sample() -> (Vec<u8>, Vec<u8>) {
        let old = imager_core::fsx::read(std::path::Path::new("/proc/self/exe"))
            .expect("read the test binary");
        let old = old[..old.len().min(4 << 20)].to_vec();
        let mut new = old.clone();
        let at = new.len() / 3;
        new.splice(at..at, std::iter::repeat_n(0x90u8, 64));
        (old, new)
    }

    #[test]
    fn a_patch_round_trips_and_damage_or_a_wrong_size_is_refused() {
        let (old, new) = sample();
        let raw = diff(&old, &new).expect("diff");
        assert_eq!(patched(&old, &raw, new.len() as u64).expect("apply"), new);
        assert!(patched(&old, &raw, new.len() as u64 - 1).is_err());
        let mut bad = raw.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x10;
        assert!(patched(&old, &bad, new.len() as u64).map_or(true, |o| o != new));
        assert!(patched(&old[..old.len() - 1], &raw, new.len() as u64).is_err());
        assert!(diff(b"not an executable", &new).is_err());
    }
}
