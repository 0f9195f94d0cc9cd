//! `imager completions` and `imager manpages`: shell completions and man pages made from
//! the same clap definitions as `--help`, so that the three cannot disagree.

use crate::cli::{exit::Exit, Cli};
use anyhow::Result;
use clap::{Args, CommandFactory};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to print the completion script for
    #[arg(value_enum)]
    shell: cli_docs::Shell,
}

pub(crate) fn completions(a: CompletionsArgs, out: &mut dyn Write) -> Result<Exit> {
    out.write_all(&cli_docs::completions(
        a.shell,
        &mut Cli::command(),
        "imager",
    ))?;
    Ok(Exit::Success)
}

#[derive(Args)]
pub(crate) struct ManpagesArgs {
    /// The directory to write imager.1 and imager-COMMAND.1 into (created if missing;
    /// pages already there are replaced)
    dir: PathBuf,
}

/// Prints the path of each page it wrote.
pub(crate) fn manpages(a: ManpagesArgs, out: &mut dyn Write) -> Result<Exit> {
    let pages = cli_docs::manpages(Cli::command())?;
    imager::fsx::create_dir_all(&a.dir)?;
    for (name, page) in pages {
        let path = a.dir.join(name);
        imager::fsx::write(&path, page)?;
        writeln!(out, "{}", path.display())?;
    }
    Ok(Exit::Success)
}
