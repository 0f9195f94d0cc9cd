//! Shell completions and man pages made from a clap command line's own definitions, so
//! that `--help`, the completions and the pages cannot disagree: what `imager
//! completions`/`manpages` and `syncer completions`/`manpages` print and write; and the
//! options both tools share ([`vocabulary`]).

pub mod vocabulary;

pub use clap_complete::Shell;
pub use vocabulary::Common;

/// The completion script of `cmd` (the program `name`) for `shell`, in memory: the
/// generators panic when a write fails, and a closed pipe (`completions bash | head`)
/// must be a normal exit for the caller.
pub fn completions(shell: Shell, cmd: &mut clap::Command, name: &str) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, cmd, name.to_string(), &mut script);
    script
}

/// The man pages of `cmd` and of each of its subcommands: (file name, roff), `help`
/// left out (a subcommand of the parser, not a command anyone needs a page for).
pub fn manpages(cmd: clap::Command) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    render(&cmd, &mut pages)?;
    Ok(pages)
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
