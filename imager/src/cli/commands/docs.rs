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
    shell: clap_complete::Shell,
}

pub(crate) fn completions(a: CompletionsArgs, out: &mut dyn Write) -> Result<Exit> {
    // Into memory first: the generators panic when a write fails, and a closed pipe
    // (`imager completions bash | head`) must be a normal exit.
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "imager", &mut script);
    out.write_all(&script)?;
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
    // `help` is a subcommand of the parser, not a command anyone needs a page for.
    let mut cli = Cli::command().disable_help_subcommand(true);
    cli.build();
    let mut pages = Vec::new();
    render(&cli, &mut pages)?;
    imager::fsx::create_dir_all(&a.dir)?;
    for (name, page) in pages {
        let path = a.dir.join(name);
        imager::fsx::write(&path, page)?;
        writeln!(out, "{}", path.display())?;
    }
    Ok(Exit::Success)
}

/// The pages of `cmd` and of each of its subcommands: (file name, roff).
fn render(cmd: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut page)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut page)?;
    }
    // clap_mangen would fill the examples into one paragraph; they are lines to copy.
    if let Some(after) = cmd.get_after_help() {
        page.extend_from_slice(examples_section(&after.to_string()).as_bytes());
    }
    if cmd.get_version().is_some() {
        man.render_version_section(&mut page)?;
    }
    pages.push((man.get_filename(), page));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        render(sub, pages)?;
    }
    Ok(())
}

/// An `Examples:` text as a man page's EXAMPLES section, line for line.
fn examples_section(text: &str) -> String {
    let mut roff = String::from(".SH EXAMPLES\n.nf\n");
    for line in text.lines().skip_while(|l| *l == "Examples:") {
        // A backslash, a dash and an apostrophe as typed, so that a copied line runs.
        let line = line
            .replace('\\', "\\e")
            .replace('-', "\\-")
            .replace('\'', "\\(aq");
        if line.starts_with('.') {
            roff.push_str("\\&");
        }
        roff.push_str(&line);
        roff.push('\n');
    }
    roff.push_str(".fi\n");
    roff
}
