//! The command line: subcommands and the run options they share. The option names
//! are an interface users' scripts rely on; keep them.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "cordon",
    version,
    about = "A sandbox for AI coding agents: one project to work in, nothing else.",
    long_about = "A sandbox for AI coding agents: one project to work in, nothing else.\n\n\
                  cordon runs commands with the workspace writable, the rest of the host \
                  read-only, secrets hidden, no network and no way out.\n\
                  Exit status: the command's own; 128+N if it died of signal N; 124 on \
                  timeout; 125 if cordon itself failed; 126 not executable; 127 not found; \
                  69 if the chosen --backend does not do what was asked (yet)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Subcommand, Debug)]
pub enum Commands {
    /// Run one command sandboxed in the workspace and exit with its status.
    ///
    /// cordon's options come first; the first word that is not one of them starts
    /// the command, and everything after it is the command's (`cordon run ls -la`).
    /// `--` before the command works too.
    Run(RunArgs),
    /// Open your shell ($SHELL, else bash, else sh) sandboxed in the workspace.
    Shell {
        #[command(flatten)]
        options: RunOptions,
    },
    /// Run pi (the coding agent) inside the sandbox in the workspace, with a full
    /// terminal. pi's config dir is read-only but for its sessions/, auth.json is
    /// hidden, and every LLM key pi would use stays outside: inside are
    /// placeholders the broker swaps for the keys in requests to their providers,
    /// which are allowed on the network (docs/pi.md). pi is found on PATH, or at
    /// $CORDON_PI.
    ///
    /// cordon's options come first; from the first argument that is not one of
    /// them on, everything goes to pi (`cordon pi --memory 2G --provider x -c`):
    /// pi's own flags, and any word. `--` hands everything after it to pi, also a
    /// flag cordon has too (`cordon pi -- --help`).
    Pi {
        #[command(flatten)]
        options: RunOptions,
        /// pi's own arguments: everything from the first argument that is not one
        /// of cordon's options on (or after `--`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "PI_ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Serve tool operations (exec, read, write, find, grep, ...) in one sandbox
    /// session, as JSON-RPC 2.0 lines on stdin/stdout (docs/serve.md). The session
    /// ends when stdin closes.
    Serve {
        #[command(flatten)]
        options: RunOptions,
    },
    /// Internal: the tool agent inside a `serve` sandbox.
    #[command(name = "__agent", hide = true)]
    Agent,
    /// Internal: the guest agent, PID 1 of cordon's VM (crates/cordon-vm).
    #[command(name = "__vm-agent", hide = true)]
    VmAgent,
    /// Internal: starts virtiofsd and becomes QEMU, in QEMU's sandbox
    /// (crates/cordon-vm/src/share.rs).
    #[command(name = "__vm-host", hide = true)]
    VmHost {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Report which isolation layers work on this machine, and how to fix missing ones.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the shell completion script for bash, zsh or fish.
    ///
    /// bash: `cordon completions bash > ~/.local/share/bash-completion/completions/cordon`;
    /// zsh: into a file `_cordon` in a directory of $fpath; fish:
    /// `cordon completions fish > ~/.config/fish/completions/cordon.fish`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the resolved policy for the workspace: every rule and where it came from.
    Policy {
        #[command(flatten)]
        options: RunOptions,
        /// Print the policy as JSON.
        #[arg(long)]
        json: bool,
        /// The policy of `cordon pi`: with the "pi" sections of the configs, and
        /// the config dir, providers and keys (by name) that pi mode adds.
        #[arg(long)]
        pi: bool,
    },
    /// The VM backend's boot files (a kernel and an initramfs, cached per cordon
    /// binary and kernel under ~/.cache/cordon/vm) and template snapshots.
    Vm {
        #[command(subcommand)]
        action: VmAction,
    },
}

/// `cordon vm`'s actions.
#[derive(Subcommand, Debug)]
pub enum VmAction {
    /// Make the boot files of this cordon and the newest installed kernel and,
    /// with QEMU 8.2 or newer, the default VM's template snapshot (a first
    /// `--backend vm` run makes them too), and remove the cache's others.
    Setup,
    /// Show the cache: each file, its size, whether this cordon uses it, and
    /// whether sessions restore templates.
    Status,
}

/// `cordon run`'s arguments.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub options: RunOptions,
    /// The command and its arguments: everything from the first word that is
    /// not one of cordon's options on.
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// Parses the command line. `cordon run` is parsed with only its own subcommand
/// built: building every subcommand's arguments took most of clap's time, a
/// twentieth of a `cordon run -- true`. Anything but a clean `run` (help, an
/// error, another subcommand) goes to the whole parser, so what is printed is
/// the same.
pub fn parse(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    if args.get(1).is_some_and(|a| a == "run") {
        let run_only = clap::Command::new("cordon")
            .subcommand(RunArgs::augment_args(clap::Command::new("run")));
        if let Ok(matches) = run_only.try_get_matches_from(&args) {
            if let Ok(command) = Commands::from_arg_matches(&matches) {
                return Ok(Cli { command });
            }
        }
    }
    let matches = Cli::command().try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

/// The policy flags as the environment sets them, with none on the command
/// line (`$CORDON_VM_SHARE`, `$CORDON_BACKEND`): for the commands without
/// them (`cordon vm setup`, `cordon doctor`), from the flags' one definition.
pub fn flags_from_env() -> Result<cordon_policy::Flags, String> {
    use clap::{Args, FromArgMatches};
    let command = cordon_policy::Flags::augment_args(clap::Command::new("cordon"));
    command
        .try_get_matches_from(["cordon"])
        .and_then(|matches| cordon_policy::Flags::from_arg_matches(&matches))
        .map_err(|e| usage_error(&e))
}

/// A usage error's text, without clap's `error: `. A bad value that came from
/// an environment variable says so: clap names only the flag it stands for.
pub fn usage_error(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let rendered = e.render().to_string();
    let mut text = rendered
        .trim_start_matches("error: ")
        .trim_end()
        .to_string();
    if e.kind() != ErrorKind::InvalidValue {
        return text;
    }
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return text;
    };
    let long = arg
        .split([' ', '='])
        .next()
        .and_then(|a| a.strip_prefix("--"));
    let var = long.and_then(|long| env_of(&<Cli as clap::CommandFactory>::command(), long));
    if let Some(var) = var.filter(|var| std::env::var_os(var).is_some_and(|v| v == value.as_str()))
    {
        let note = format!("  (that is ${var}: unset it, or set it to one of the values above)");
        let help = text.find("\n\nFor more information").unwrap_or(text.len());
        text.insert_str(help, &format!("\n{note}"));
    }
    text
}

/// The environment variable behind flag `--long`, in `command` or a subcommand.
fn env_of(command: &clap::Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
        .or_else(|| command.get_subcommands().find_map(|s| env_of(s, long)))
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum DegradedLayer {
    /// Run without Landlock on kernels that lack it (the mount view and seccomp still apply).
    Landlock,
    /// Run with resource limits this host cannot enforce (--memory without a
    /// cgroup, say), applied as far as they go, rather than refuse.
    Limits,
}

/// Options shared by `run`, `shell`, `pi`, `serve` and `policy`.
#[derive(Args, Debug, Clone)]
pub struct RunOptions {
    /// The project directory the sandbox may write (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Use this user config instead of ~/.config/cordon/config.json.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The flags that shape the policy, declared once in cordon-policy.
    #[command(flatten)]
    pub flags: cordon_policy::Flags,
    /// Run without a layer this kernel lacks (named, explicit; never implied).
    #[arg(long = "allow-degraded", value_enum, value_name = "LAYER")]
    pub allow_degraded: Vec<DegradedLayer>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Commands, clap::Error> {
        Cli::try_parse_from(std::iter::once("cordon").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    fn words(v: &[OsString]) -> Vec<&str> {
        v.iter().map(|w| w.to_str().unwrap()).collect()
    }

    #[test]
    fn run_takes_the_command_from_the_first_word_that_is_not_an_option() {
        for (args, want, memory) in [
            (&["run", "ls"][..], &["ls"][..], None),
            (
                &["run", "ls", "-la", "--color"],
                &["ls", "-la", "--color"],
                None,
            ),
            (&["run", "--", "ls", "-la"], &["ls", "-la"], None),
            (
                &["run", "--memory", "1G", "sh", "-c", "echo --memory"],
                &["sh", "-c", "echo --memory"],
                Some("1G"),
            ),
            // After the command's first word, cordon's own flags are the command's.
            (
                &["run", "env", "--memory", "2G"],
                &["env", "--memory", "2G"],
                None,
            ),
        ] {
            let Commands::Run(RunArgs { options, command }) = parse(args).unwrap() else {
                panic!("not run: {args:?}");
            };
            assert_eq!(words(&command), want, "{args:?}");
            assert_eq!(options.flags.memory.as_deref(), memory, "{args:?}");
        }
        // A misspelt option of cordon's is an error, not a command.
        let err = parse(&["run", "--memroy", "1G", "ls"]).unwrap_err();
        assert!(err.to_string().contains("--memroy"), "{err}");
        assert!(parse(&["run"]).is_err());
    }

    #[test]
    fn pi_gets_every_argument_from_the_first_that_is_not_cordons() {
        for (args, want, memory) in [
            (&["pi"][..], &[][..], None),
            (&["pi", "--provider", "fake"], &["--provider", "fake"], None),
            (&["pi", "-c"], &["-c"], None),
            (
                &[
                    "pi",
                    "--memory",
                    "2G",
                    "--provider",
                    "fake",
                    "--memory",
                    "x",
                ],
                &["--provider", "fake", "--memory", "x"],
                Some("2G"),
            ),
            (&["pi", "fix the bug"], &["fix the bug"], None),
            (&["pi", "--", "--help"], &["--help"], None),
            (
                &["pi", "--memory", "2G", "--", "--memory", "1G"],
                &["--memory", "1G"],
                Some("2G"),
            ),
        ] {
            let Commands::Pi { options, args: pi } = parse(args).unwrap() else {
                panic!("not pi: {args:?}");
            };
            assert_eq!(words(&pi), want, "{args:?}");
            assert_eq!(options.flags.memory.as_deref(), memory, "{args:?}");
        }
    }

    /// The quick parse of `cordon run` gives what the whole parser gives, and leaves
    /// help, versions and errors to it.
    #[test]
    fn run_parses_the_same_with_its_subcommand_alone() {
        let whole = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("cordon").chain(args.iter().copied()))
        };
        let quick = |args: &[&str]| {
            super::parse(
                std::iter::once("cordon")
                    .chain(args.iter().copied())
                    .map(OsString::from)
                    .collect(),
            )
        };
        for args in [
            &["run", "ls"][..],
            &["run", "--", "ls", "-la"],
            &[
                "run",
                "--memory",
                "1G",
                "--net",
                "allowlist",
                "--allow-domain",
                "x.org",
                "sh",
            ],
            &[
                "run",
                "--allow-write",
                "/tmp/a",
                "--allow-write",
                "/tmp/b",
                "--workspace",
                "/w",
                "env",
                "--memory",
                "2G",
            ],
            &[
                "run",
                "--backend",
                "vm",
                "--allow-degraded",
                "limits",
                "true",
            ],
            &[
                "run",
                "--timeout",
                "5",
                "--read-only",
                "--env",
                "A=b",
                "true",
            ],
        ] {
            assert_eq!(
                format!("{:?}", quick(args).unwrap()),
                format!("{:?}", whole(args).unwrap()),
                "{args:?}"
            );
        }
        for args in [
            &["run"][..],
            &["run", "--help"],
            &["run", "-h"],
            &["run", "--memroy", "1G", "ls"],
            &["run", "--version"],
            &["--help"],
            &["--version"],
            &["policy", "--json"],
        ] {
            let (q, w) = (quick(args), whole(args));
            match (q, w) {
                (Ok(q), Ok(w)) => assert_eq!(format!("{q:?}"), format!("{w:?}"), "{args:?}"),
                (Err(q), Err(w)) => {
                    assert_eq!(q.kind(), w.kind(), "{args:?}");
                    assert_eq!(q.render().to_string(), w.render().to_string(), "{args:?}");
                }
                (q, w) => panic!("{args:?}: quick {q:?}, whole {w:?}"),
            }
        }
    }

    #[test]
    fn completions_for_each_shell() {
        for shell in ["bash", "zsh", "fish"] {
            assert!(matches!(
                parse(&["completions", shell]),
                Ok(Commands::Completions { .. })
            ));
        }
        assert!(parse(&["completions", "tcsh"]).is_err());
    }
}
