//! Exit statuses, fd's `exit_codes.rs` style: one enum, and the one place an error
//! becomes a status and a message.
//!
//! The table both tools share (syncer's `cli::ExitCode`): 0 is success (a closed pipe
//! counts: `imager ls x | head`), 1 a failure, 2 a command asked wrongly: a command line
//! clap rejects, and the library's `Error::Usage` (misuse found after parsing: a bad
//! `--exclude` glob, a missing `.deb`), as syncer's usage errors; 130 is left to the
//! signal (imager stops where Ctrl-C finds it).

use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    Success = 0,
    Failure = 1,
    Usage = 2,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// A command line clap rejected (or `--help`, `--version`): clap prints it.
pub(crate) fn usage(e: clap::Error) -> Exit {
    // Printing is best effort: with stdout closed there is nowhere to say so.
    let _ = e.print();
    if e.use_stderr() {
        Exit::Usage
    } else {
        Exit::Success
    }
}

/// Prints `e` as `imager: error: ...` and says which status it means.
pub(crate) fn report(e: &anyhow::Error) -> Exit {
    let status = of(e);
    if status != Exit::Success {
        eprintln!("imager: error: {}", message(e));
    }
    status
}

/// The status an error means.
fn of(e: &anyhow::Error) -> Exit {
    let broken_pipe = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    let usage = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<imager::Error>(),
            Some(imager::Error::Usage(_))
        )
    });
    if broken_pipe {
        Exit::Success
    } else if usage {
        Exit::Usage
    } else {
        Exit::Failure
    }
}

/// The error's causes, each once (the library's errors already include their source's
/// text), with no control character of outside input left to reach a terminal.
fn message(e: &anyhow::Error) -> String {
    let msg = imager::error::causes_once(e.chain().map(|c| c.to_string()));
    let lines: Vec<String> = msg
        .split('\n')
        .map(imager::escape::escape_message)
        .collect();
    lines.join("\n")
}
