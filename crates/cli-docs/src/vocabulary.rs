//! The options `imager` and `syncer` share, defined once so that they mean the same in
//! both (issue 27: "one vocabulary across both tools"): `--store DIR` and `-q` as global
//! options, flattened into both command lines; and [`check`], which both tools' tests
//! run over their whole command tree, for the per-command `--json` and `--dry-run` and
//! for spellings that would mean one thing in one tool and another in the other.

use std::path::PathBuf;

/// The global options of both tools: accepted before or after the subcommand.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Common {
    /// The image store [env: IMAGER_STORE; default /var/lib/imager]
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// No progress bars or progress lines, even on a terminal: only the results,
    /// warnings and errors
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// Options whose spelling is taken by the other tool for something else: `imager verify`
/// checks signatures (re-hashing a host's files is `syncer --rehash`), and a trust
/// policy file is `--policy` in both.
const NOT_OPTIONS: &[(&str, &str)] = &[
    (
        "verify",
        "`verify` is imager's signature check; re-hashing files is --rehash",
    ),
    (
        "require-signed",
        "a trust policy file is --policy in both tools",
    ),
];

/// What in `cmd`'s tree (the root of `imager` or `syncer`) breaks the shared vocabulary,
/// a line each: the global options missing or redefined, a `--json` that is not a flag
/// printing JSON, a `--dry-run` that is not a flag showing what would be done and doing
/// nothing, a visible option spelled as in [`NOT_OPTIONS`].
pub fn check(cmd: &clap::Command) -> Vec<String> {
    let mut cmd = cmd.clone();
    cmd.build();
    let mut out = Vec::new();
    let root = cmd.get_name().to_string();
    for (id, long) in [("store", "store"), ("quiet", "quiet")] {
        match cmd.get_arguments().find(|a| a.get_id() == id) {
            Some(a) if a.is_global_set() && a.get_long() == Some(long) => {}
            _ => out.push(format!("{root}: no global --{long} (cli_docs::Common)")),
        }
    }
    walk(&cmd, &root, &mut out);
    out
}

fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    for a in cmd.get_arguments() {
        let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
        let flag = matches!(a.get_action(), clap::ArgAction::SetTrue);
        let name = a.get_long().unwrap_or_default();
        let bad = match name {
            "store" | "quiet" if !a.is_global_set() => Some("redefines a global option"),
            _ if a.get_short() == Some('q') && !a.is_global_set() => {
                Some("-q is the global --quiet")
            }
            "json" if !flag || !help.starts_with("Print") || !help.contains("JSON") => {
                Some("--json is a flag that prints the report as JSON (\"Print ... JSON\")")
            }
            "dry-run" if !flag || !help.starts_with("Show") || !help.contains("nothing") => {
                Some("--dry-run is a flag that shows what would be done and changes nothing")
            }
            _ if a.is_hide_set() => None,
            _ => NOT_OPTIONS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, why)| *why),
        };
        if let Some(why) = bad {
            out.push(format!("{path}: --{name}: {why}"));
        }
    }
    for s in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        walk(s, &format!("{path} {}", s.get_name()), out);
    }
}

#[cfg(test)]
mod tests {
    use clap::{Arg, ArgAction, Command};

    fn flag(name: &'static str, help: &'static str) -> Arg {
        Arg::new(name)
            .long(name)
            .action(ArgAction::SetTrue)
            .help(help)
    }

    /// syncer's tree before issue 27: a `--store` per command, no `-q`, `--verify` for
    /// re-hashing; and a `--json` that takes a value, a `--dry-run` that does not say it
    /// changes nothing.
    #[test]
    fn what_breaks_the_vocabulary_is_named() {
        let push = Command::new("push")
            .arg(Arg::new("store").long("store").help("The image store"))
            .arg(flag("verify", "Hash every file"))
            .arg(Arg::new("json").long("json").help("Print JSON to FILE"))
            .arg(flag("dry-run", "Show the plan"));
        let old = Command::new("syncer").subcommand(push);
        let found = super::check(&old);
        for want in [
            "syncer: no global --store",
            "syncer: no global --quiet",
            "syncer push: --store: redefines",
            "syncer push: --verify:",
            "syncer push: --json:",
            "syncer push: --dry-run:",
        ] {
            assert!(
                found.iter().any(|f| f.starts_with(want)),
                "{want}: {found:?}"
            );
        }

        let push = Command::new("push")
            .arg(flag("rehash", "Hash every file").alias("verify"))
            .arg(flag("json", "Print the report as JSON"))
            .arg(flag("dry-run", "Show the plan; change nothing"));
        let new =
            <super::Common as clap::Args>::augment_args(Command::new("syncer")).subcommand(push);
        assert_eq!(super::check(&new), Vec::<String>::new());
    }
}
