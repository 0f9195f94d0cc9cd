//! The agent `--install-agent` ships to hosts: the `syncer-agent` executable beside
//! this one (the agent crate alone: no builder, store or CLI inside), without its debug
//! sections.
//!
//! The copy installed on hosts has its `.debug_*` sections removed (the symbol table
//! stays, so `perf` and backtraces on a host still name functions); the debug
//! information stays in the file beside the controller, which has the same build ID, for
//! a debugger or `perf`. How an agent identifies itself (its ELF build ID) is
//! [`syncer_agent::exe`].

use imager::Hash;
use std::path::PathBuf;
use std::sync::OnceLock;
pub use syncer_agent::exe::{identity, identity_of};

/// The agent executable's file name; it is built and installed beside `syncer`.
pub const AGENT_EXE: &str = "syncer-agent";

/// The agent to install: [`AGENT_EXE`] in this program's directory.
pub fn agent_path() -> Result<PathBuf, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    Ok(exe.with_file_name(AGENT_EXE))
}

/// The identity of the agent `--install-agent` would copy (computed once per process):
/// a host whose agent says another is given this one.
pub fn agent_identity() -> Result<Hash, String> {
    static ID: OnceLock<Result<Hash, String>> = OnceLock::new();
    ID.get_or_init(|| {
        let path = agent_path()?;
        identity_of(&path).map_err(|e| missing(&path, e))
    })
    .clone()
}

/// Why the agent at `path` cannot be had, said so that the fix is plain.
fn missing(path: &std::path::Path, e: std::io::Error) -> String {
    format!(
        "cannot read the agent to install ({}): {e} (it is built and installed beside \
         syncer: `cargo build --release` makes both)",
        path.display()
    )
}

/// The executable `--install-agent` copies to hosts: the agent without its debug
/// sections (computed once per process). An executable the ELF rewriter cannot handle
/// is sent as it is: larger, but the same program.
pub fn agent_copy() -> Result<&'static [u8], String> {
    static COPY: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    COPY.get_or_init(|| {
        let path = agent_path()?;
        let exe = imager::fsx::read(&path)
            .map_err(imager::Error::into_io)
            .map_err(|e| missing(&path, e))?;
        Ok(strip_debug(&exe).unwrap_or(exe))
    })
    .as_ref()
    .map(|v| v.as_slice())
    .map_err(Clone::clone)
}

/// `exe` without its `.debug_*` sections (`strip --strip-debug`).
pub fn strip_debug(exe: &[u8]) -> Option<Vec<u8>> {
    let mut b = object::build::elf::Builder::read(exe).ok()?;
    let mut any = false;
    for s in b.sections.iter_mut() {
        if s.name.as_slice().starts_with(b".debug_") || s.name.as_slice().starts_with(b".zdebug_") {
            s.delete = true;
            any = true;
        }
    }
    if !any {
        return None;
    }
    let mut out = Vec::new();
    b.write(&mut out).ok()?;
    Some(out)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests: a panic names what failed
mod tests {
    use super::*;
    use std::path::Path;

    /// The executable of the running test.
    const SELF: &str = "/proc/self/exe";

    #[test]
    fn the_stripped_copy_keeps_the_build_id() {
        let exe = std::fs::read(SELF).expect("read self");
        let Some(small) = strip_debug(&exe) else {
            return; // a build without debug sections: nothing to strip
        };
        assert!(small.len() < exe.len());
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("copy");
        std::fs::write(&p, &small).expect("write");
        assert_eq!(
            identity_of(&p).expect("identity"),
            identity_of(Path::new(SELF)).expect("identity")
        );
    }
}
