//! The `syncer` command: parses the arguments and runs one subcommand (each in
//! [`cli`]), then exits with its [`cli::ExitCode`].

mod cli;

use clap::{Parser, Subcommand};
use cli::ExitCode;

#[derive(Parser)]
#[command(
    name = "syncer",
    version,
    about = "Push imager images onto hosts as file-level deltas"
)]
struct Cli {
    /// `--store` and `-q`, as imager takes them.
    #[command(flatten)]
    common: cli_docs::Common,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The agent: serve one session on stdin/stdout for the host root DIR
    #[command(after_help = cli::examples::SERVE)]
    Serve(cli::serve::ServeArgs),
    /// Make hosts equal to an image (name, name~N or ID in the store)
    Push(cli::push::PushArgs),
    /// The image each host runs and whether it drifted from it
    #[command(after_help = cli::examples::STATUS)]
    Status(cli::status::StatusArgs),
    /// Roll an image across a fleet: colo by colo, canary then waves, with health checks,
    /// failure budgets and automatic rollback of failed hosts
    #[command(after_help = cli::examples::ROLLOUT)]
    Rollout(cli::rollout::RolloutArgs),
    /// Return a colo (or the fleet) to each host's previous image, or to --to
    #[command(after_help = cli::examples::ROLLBACK)]
    Rollback(cli::rollback::RollbackArgs),
    /// Drop the unfinished commit of hosts whose roll-forward keeps failing: they keep
    /// what the commit had done and their recorded image; push an image next
    #[command(after_help = cli::examples::ABANDON_COMMIT)]
    AbandonCommit(cli::abandon_commit::AbandonCommitArgs),
    /// The controller's delta cache
    Cache {
        #[command(subcommand)]
        cmd: cli::cache::CacheCmd,
    },
    /// The paths where a host differs from the image it runs
    // `diff` before, which is still accepted: `imager diff` compares two images.
    #[command(visible_alias = "diff")]
    Drift(cli::drift::DriftArgs),
    /// Write what hosts need to reach an image as static files for HTTP mirrors (an
    /// origin any web server serves, cached per colo by nginx)
    #[command(after_help = cli::examples::PUBLISH)]
    Publish(cli::publish::PublishArgs),
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(after_help = cli::examples::COMPLETIONS)]
    Completions {
        /// The shell to print the completion script for
        #[arg(value_enum)]
        shell: cli_docs::Shell,
    },
    /// Write the man pages: syncer.1 and one syncer-COMMAND.1 per subcommand
    #[command(after_help = cli::examples::MANPAGES)]
    Manpages {
        /// The directory to write the pages into (created if missing; pages already
        /// there are replaced)
        dir: std::path::PathBuf,
    },
}

fn main() {
    imager::store::on_lock_wait(|m| eprintln!("syncer: {m}"));
    let cli = Cli::parse();
    let ctx = cli::Ctx::new(&cli.common);
    let code = match run(cli.cmd, &ctx) {
        Ok(code) => code,
        Err(e) => {
            // Not `{e:#}`: the library's errors include their source's text, and the
            // chain would repeat it ("(os error 28): ... (os error 28)").
            if !cli::is_broken_pipe(&e) {
                eprintln!(
                    "syncer: {}",
                    imager::error::causes_once(e.chain().map(|c| c.to_string()))
                );
            }
            ExitCode::of_error(&e)
        }
    };
    std::process::exit(code.code());
}

fn run(cmd: Cmd, ctx: &cli::Ctx) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Serve(a) => cli::serve::run(a),
        Cmd::Push(a) => cli::push::run(a, ctx),
        Cmd::Status(a) => cli::status::run(a, ctx),
        Cmd::Rollout(a) => cli::rollout::run(a, ctx),
        Cmd::Rollback(a) => cli::rollback::run(a, ctx),
        Cmd::AbandonCommit(a) => cli::abandon_commit::run(a, ctx),
        Cmd::Cache { cmd } => cli::cache::run(cmd, ctx),
        Cmd::Drift(a) => cli::drift::run(a, ctx),
        Cmd::Publish(a) => cli::publish::run(a, ctx),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            let script = cli_docs::completions(shell, &mut Cli::command(), "syncer");
            std::io::Write::write_all(&mut std::io::stdout().lock(), &script)?;
            Ok(ExitCode::Success)
        }
        Cmd::Manpages { dir } => {
            use clap::CommandFactory;
            imager::fsx::create_dir_all(&dir)?;
            for (name, page) in cli_docs::manpages(Cli::command())? {
                imager::fsx::write(dir.join(&name), page)?;
                println!("{}", dir.join(name).display());
            }
            Ok(ExitCode::Success)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every option and argument of every subcommand says what it is, and every
    /// subcommand's help ends with examples, as ripgrep's and fd's do.
    #[test]
    fn every_option_has_help_and_every_command_examples() {
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "syncer", &mut missing);
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }

    /// `--store`, `-q`, `--json` and `--dry-run` mean here what they mean in imager, and
    /// no option is spelled as imager spells something else (the same check runs there).
    #[test]
    fn the_options_shared_with_imager_mean_the_same() {
        let offenders = cli_docs::vocabulary::check(&super::Cli::command());
        assert!(offenders.is_empty(), "{}", offenders.join("\n"));
    }

    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if id != "help" && id != "version" && a.get_help().is_none() {
                missing.push(format!("{path}: {id} has no help"));
            }
        }
        let leaf = cmd.get_subcommands().next().is_none();
        let examples = cmd
            .get_after_help()
            .is_some_and(|h| h.to_string().contains("Examples:"));
        if leaf && path != "syncer" && !examples {
            missing.push(format!("{path}: no examples"));
        }
        // Each example parses: a renamed flag fails here, not in a user's terminal.
        let help = cmd
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        for line in help
            .lines()
            .filter(|l| l.trim_start().starts_with("syncer "))
        {
            // The command alone: up to a comment or a shell operator.
            let words = line
                .split('#')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .take_while(|w| !matches!(*w, ">" | ">>" | "|" | "&&" | ";"));
            if let Err(e) = <super::Cli as clap::Parser>::try_parse_from(words) {
                missing.push(format!("{path}: example {line:?} does not parse: {e}"));
            }
        }
        for s in cmd.get_subcommands() {
            if s.get_name() != "help" {
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
    }
}
