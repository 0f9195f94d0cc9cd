//! The agent executable's command line: `serve --root DIR [--abandon-commit]`, the same
//! words as `syncer serve`, so a controller starts either the same way. Parsed by hand:
//! three words do not need an argument parser in every host's copy.

use crate::ServeOptions;
use std::ffi::OsString;
use std::path::PathBuf;

/// What the executable was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `serve`: one session on stdin/stdout.
    Serve {
        /// The host's root directory (`--root`).
        root: PathBuf,
        /// The flags after it (`--abandon-commit`).
        opts: ServeOptions,
    },
    /// `--version`: print the crate's version.
    Version,
    /// `--help`: print [`USAGE`].
    Help,
}

/// The usage text `--help` prints and a wrong command line shows.
pub const USAGE: &str = "usage: syncer-agent serve --root DIR [--abandon-commit] [--objects DIR]
The syncer's agent: serves one session on stdin/stdout for the host root DIR (started by
a controller over ssh, or as a local child process).
  --root DIR         the host's root directory
  --abandon-commit   drop an unfinished commit instead of finishing it
  --objects DIR      the controller's store objects, read for files sent as store copies
                     (given by a controller on this machine: a local: host)";

/// Parses the arguments after the program's name; the error says what is wrong.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let first = args.next();
    match first.as_ref().and_then(|a| a.to_str()) {
        Some("--version" | "-V") => return Ok(Command::Version),
        Some("--help" | "-h" | "help") => return Ok(Command::Help),
        Some("serve") => {}
        Some(other) => return Err(format!("unknown command {other:?}")),
        None if first.is_some() => return Err("a command that is not UTF-8".into()),
        None => return Err("no command given".into()),
    }
    let (mut root, mut abandon_commit, mut objects) = (None, false, None);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--root") => {
                let dir = args.next().ok_or("--root needs a directory")?;
                root = Some(PathBuf::from(dir));
            }
            Some(s) if s.starts_with("--root=") => {
                root = Some(PathBuf::from(&s["--root=".len()..]));
            }
            Some("--abandon-commit") => abandon_commit = true,
            Some("--objects") => {
                let dir = args.next().ok_or("--objects needs a directory")?;
                objects = Some(PathBuf::from(dir));
            }
            Some("--help" | "-h") => return Ok(Command::Help),
            _ => return Err(format!("unexpected argument {a:?}")),
        }
    }
    let root = root.ok_or("serve needs --root DIR")?;
    Ok(Command::Serve {
        root,
        opts: ServeOptions {
            abandon_commit,
            objects,
        },
    })
}

/// Runs the executable: parses `std::env::args_os`, serves one session on
/// stdin/stdout, prints any error on stderr. The exit code is the syncer's: 0 done, 1
/// failed, 2 a wrong command line.
pub fn main() -> std::process::ExitCode {
    let cmd = match parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("syncer-agent: {e}\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    match cmd {
        Command::Version => println!("syncer-agent {}", env!("CARGO_PKG_VERSION")),
        Command::Help => println!("{USAGE}"),
        Command::Serve { root, opts } => {
            let (stdin, stdout) = (std::io::stdin().lock(), std::io::stdout().lock());
            if let Err(e) = crate::serve(&root, &opts, stdin, stdout) {
                let causes =
                    std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source());
                let text = imager_core::error::causes_once(causes.map(|c| c.to_string()));
                eprintln!("syncer-agent: agent on {}: {text}", root.display());
                return std::process::ExitCode::from(1);
            }
        }
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn the_command_line_is_syncer_serves() {
        assert_eq!(
            parse(words(
                "serve --root /srv/h --abandon-commit --objects /s/objects"
            )),
            Ok(Command::Serve {
                root: "/srv/h".into(),
                opts: ServeOptions {
                    abandon_commit: true,
                    objects: Some("/s/objects".into()),
                }
            })
        );
        assert_eq!(
            parse(words("serve --root=/")),
            Ok(Command::Serve {
                root: "/".into(),
                opts: ServeOptions::default()
            })
        );
        assert_eq!(parse(words("--version")), Ok(Command::Version));
        assert!(parse(words("serve")).unwrap_err().contains("--root"));
        assert!(parse(words("serve --root"))
            .unwrap_err()
            .contains("directory"));
        assert!(parse(words("push x")).unwrap_err().contains("push"));
        assert!(parse(words("serve --root / --bogus")).is_err());
        assert!(parse(words("")).is_err());
    }
}
