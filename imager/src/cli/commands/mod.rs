//! One module per group of subcommands, one function per subcommand, each over its own
//! arguments struct (cargo's `src/bin/cargo/commands/`).

pub(crate) mod build;
pub(crate) mod docs;
pub(crate) mod export;
pub(crate) mod import;
pub(crate) mod inspect;
pub(crate) mod manage;
pub(crate) mod normalize;
pub(crate) mod review;
pub(crate) mod sign;
