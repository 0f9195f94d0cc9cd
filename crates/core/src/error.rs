//! The library's error type and its policy.
//!
//! Policy: every error that comes from the filesystem names the path and the action
//! (`failed to read /x: ...`), every error about bad input names the input (the archive,
//! the manifest line, the path inside the tree) and what was wrong with it. Library code
//! returns `Error`; the binary adds the command's context with `anyhow`. An error that
//! would make a result wrong stops the operation before anything is written to the store
//! or the target directory; nothing is ever left half-written under its final name.

use std::io;
use std::path::PathBuf;

/// A result whose error is the library's [`Error`] unless another is named.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the library, each variant carrying what its message names
/// (the path and action, the input and what was wrong with it).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem call failed; `action` is a verb phrase such as "read" or "create directory".
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// What was being done, said after "failed to".
        action: &'static str,
        /// The file or directory the call was about.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The tree (from a directory, an archive or a manifest) is not a valid image.
    #[error("invalid tree at {path}: {reason}")]
    InvalidTree {
        /// The path inside the tree, escaped ([`crate::escape::escape`]); `/` for the
        /// tree as a whole.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A manifest text could not be parsed.
    #[error("{source_name}:{line}: {reason}")]
    Manifest {
        /// Where the text came from, as the user would name it (usually its file's path).
        source_name: String,
        /// The 1-based line the problem is on; 0 when it is not on one line.
        line: usize,
        /// What is wrong there.
        reason: String,
    },

    /// An archive being imported is malformed or unsafe.
    #[error("{archive}: {path}: {reason}")]
    Archive {
        /// The archive's name as the user gave it.
        archive: String,
        /// The member's path inside the archive, escaped.
        path: String,
        /// What is wrong with that member.
        reason: String,
    },

    /// The store is damaged or an object/image is not what its name says.
    #[error("store {}: {reason}", store.display())]
    Store {
        /// The store's root directory.
        store: PathBuf,
        /// What is damaged or wrong.
        reason: String,
    },

    /// An export to another format (a filesystem image, an OCI layout) could not be
    /// made: the tool it runs failed, or the target cannot take it.
    #[error("export to {}: {reason}", target.display())]
    Export {
        /// The file or directory being exported to.
        target: PathBuf,
        /// Why it could not be made.
        reason: String,
    },

    /// An output path names something that is not a file to replace and not a stream
    /// to write into (a directory, a socket, a block device, a dangling symlink): it is
    /// left as it is. `what` says what it is ("a directory").
    #[error("refusing to replace {}: it is {what}", path.display())]
    NotReplaced {
        /// The output path, left untouched.
        path: PathBuf,
        /// What the path is instead of a file ("a directory").
        what: String,
    },

    /// A name, `name~N` or ID that does not resolve to an image.
    #[error("no image {spec:?} in store {}: {reason}", store.display())]
    NotFound {
        /// The name, `name~N` or ID as the user gave it.
        spec: String,
        /// The root of the store it was looked up in.
        store: PathBuf,
        /// Why it does not resolve ("no image with that ID").
        reason: String,
    },

    /// An outside program (apt, mmdebstrap, dpkg-deb, a hook) failed: `program` names it
    /// as the user knows it, `detail` says how it failed, with its last words.
    #[error("{program} {detail}")]
    Command {
        /// The program as the user knows it.
        program: String,
        /// How it failed, with the last of its output; follows `program` in the message.
        detail: String,
    },

    /// A build cannot go on: its lock is stale or missing, a package cannot be had, an
    /// overlay cannot be copied, the result differs from the lock.
    #[error("{0}")]
    Build(String),

    /// A build failed and its work directory was kept (`--keep-failed`) to inspect.
    #[error("{source}\n(the failed build is kept in {})", dir.display())]
    KeptFailed {
        /// The error the build failed with.
        source: Box<Error>,
        /// The build's work directory, kept for inspection.
        dir: PathBuf,
    },

    /// A directory walk failed part way (walkdir's error names the path).
    #[error("walking {}: {source}", root.display())]
    Walk {
        /// The directory the walk started from.
        root: PathBuf,
        /// walkdir's error, which names the path it failed at.
        #[source]
        source: walkdir::Error,
    },

    /// A signature, key or trust policy file that cannot be used (the reason says why).
    #[error("{}: {reason}", file.display())]
    Signature {
        /// The signature, key or policy file.
        file: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },

    /// Something imager itself produced is not what it should be (a serialiser failed, an
    /// ID it just made does not parse): a bug, not bad input.
    #[error("{0}")]
    Internal(String),

    /// The caller asked for something that cannot be done as asked.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// An [`Error::Io`]: `action` is a verb phrase said after "failed to" ("read",
    /// "create directory"), `path` the file it was about.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// An [`Error::InvalidTree`] about `path` (raw bytes, a path inside the tree), which
    /// it escapes for the message.
    pub fn invalid(path: &[u8], reason: impl Into<String>) -> Self {
        Error::InvalidTree {
            path: crate::escape::escape(path),
            reason: reason.into(),
        }
    }

    /// The same I/O error said with another verb phrase (`read object` for `read`), for
    /// a caller whose path alone would not say what the file is; other errors unchanged.
    pub fn doing(self, action: &'static str) -> Self {
        match self {
            Error::Io { path, source, .. } => Error::Io {
                action,
                path,
                source,
            },
            e => e,
        }
    }

    /// The underlying I/O error (without the path and action), for a message that names
    /// the path its own way; any other error as an I/O error of kind `Other`.
    pub fn into_io(self) -> io::Error {
        match self {
            Error::Io { source, .. } => source,
            e => io::Error::other(e),
        }
    }

    /// The underlying I/O error kind, if this is an I/O error (used to tell "disk full"
    /// or "permission denied" apart in callers that react to them).
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// An error and its causes as one line of text, each cause said once: a library error
/// already includes its source's text (`failed to write /x: No space left on device (os
/// error 28)`) and also exposes it as its `source()`, so printing the whole chain
/// (anyhow's `{:#}`) would repeat "(os error 28)". A cause whose text the message
/// already holds is left out. Both binaries print their errors through this.
pub fn causes_once(causes: impl IntoIterator<Item = String>) -> String {
    let mut msg = String::new();
    for s in causes {
        if s.is_empty() || msg.contains(&s) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&s);
    }
    msg
}

/// Adds the action and path to a `std::io::Result`, cargo-util style.
pub trait IoContext<T> {
    /// The result, its error turned into an [`Error::Io`] that says `action` (a verb
    /// phrase such as "read") and `path`.
    fn ctx(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn ctx(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "No space left on device (os error 28): ... (os error 28)": the I/O error's text
    /// comes once, whether printed alone or under a context that wraps it.
    #[test]
    fn an_io_error_under_a_context_says_its_os_error_once() {
        let e = Error::io("write", "/store/x", io::Error::from_raw_os_error(28));
        let e = anyhow::Error::new(e).context("importing /src");
        let shown = causes_once(e.chain().map(|c| c.to_string()));
        assert_eq!(shown.matches("os error 28").count(), 1, "{shown}");
        assert!(
            shown.starts_with("importing /src: failed to write /store/x: "),
            "{shown}"
        );
        // What anyhow's `{:#}` says: the repetition this is for.
        assert_eq!(format!("{e:#}").matches("os error 28").count(), 2);
    }
}
