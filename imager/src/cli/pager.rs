//! The pager, as git runs one: when standard output is a terminal, a report goes through
//! `$PAGER` (run by `sh -c`), else `less`, with `LESS=FRX` unless LESS is set (quit if
//! it fits a screen, keep colours, leave the screen as it was). `--no-pager`, a `PAGER`
//! of `cat` or an empty one, or output to a pipe or a file, write directly. Spawned here
//! rather than through a crate: it is a dozen lines, and none of the pager crates is
//! better kept than that.

use anyhow::Result;
use std::io::{ErrorKind, IsTerminal, Write};
use std::process::{Child, Command, Stdio};

/// Writes `text` to the pager when `allowed` and standard output is a terminal, else to
/// `out`. The reader quitting the pager early is not an error.
pub(crate) fn write_paged(out: &mut dyn Write, text: &str, allowed: bool) -> Result<()> {
    if allowed && std::io::stdout().is_terminal() {
        if let Some(mut child) = spawn() {
            let wrote = child.stdin.take().map(|mut i| i.write_all(text.as_bytes()));
            // stdin is closed (dropped) above: the pager sees the end and waits for the reader.
            child.wait()?;
            return match wrote {
                Some(Err(e)) if e.kind() != ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            };
        }
    }
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// The pager, started with a pipe to its input; None to write directly (no pager wanted,
/// or it could not be started).
fn spawn() -> Option<Child> {
    let pager = match std::env::var("PAGER") {
        Ok(p) if p.trim().is_empty() || p.trim() == "cat" => return None,
        Ok(p) => p,
        Err(_) => "less".to_string(),
    };
    let mut c = Command::new("sh");
    c.arg("-c").arg(&pager).stdin(Stdio::piped());
    if std::env::var_os("LESS").is_none() {
        c.env("LESS", "FRX");
    }
    if std::env::var_os("LV").is_none() {
        c.env("LV", "-c");
    }
    c.spawn().ok()
}
