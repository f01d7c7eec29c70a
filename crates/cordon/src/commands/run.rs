//! `cordon run` and `cordon shell`.

use super::Failure;
use crate::cli::{DegradedLayer, RunOptions};
use cordon_backend::{Backend, Command, Degraded, Outcome, Program, Session, Terminal};
use cordon_net::Wired;
use cordon_policy::{Flags, Policy};
use cordon_session::run::Notice;
use cordon_session::session::HostSession;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Exit status when `--timeout` expired (DESIGN.md).
const TIMED_OUT: u8 = 124;

pub fn run(
    backend: &impl Backend,
    options: &RunOptions,
    policy: &Policy,
    command: Vec<OsString>,
) -> Result<u8, Failure> {
    let mut words = command.into_iter();
    let program = words
        .next()
        .ok_or("no command given; usage: cordon run [OPTIONS] -- COMMAND [ARGS...]")?;
    let command = Command {
        program: Program::Named(program),
        args: words.collect(),
        cwd: None,
        terminal: Terminal::Inherit,
        timeout: None,
    };
    execute(backend, options, policy, command)
}

pub fn shell(backend: &impl Backend, options: &RunOptions, policy: &Policy) -> Result<u8, Failure> {
    let interactive = std::io::stdin().is_terminal();
    let command = Command {
        program: Program::Named(user_shell().into_os_string()),
        args: Vec::new(),
        cwd: None,
        terminal: if interactive {
            Terminal::Pty
        } else {
            Terminal::Inherit
        },
        timeout: None,
    };
    execute(backend, options, policy, command)
}

/// $SHELL if it exists, else bash, else sh.
fn user_shell() -> PathBuf {
    std::env::var_os("SHELL")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/bin/bash", "/bin/sh"].map(PathBuf::from))
        .find(|p| p.is_absolute() && p.exists())
        .unwrap_or_else(|| PathBuf::from("/bin/sh"))
}

fn execute(
    backend: &impl Backend,
    options: &RunOptions,
    policy: &Policy,
    command: Command,
) -> Result<u8, Failure> {
    let egress = super::egress::additions(policy)?;
    execute_in(
        backend,
        options,
        start(backend, options, policy, egress)?,
        command,
    )
}

/// The layers the user agreed to run without (`--allow-degraded`).
pub fn degraded(options: &RunOptions) -> Degraded {
    Degraded {
        no_landlock: options.allow_degraded.contains(&DegradedLayer::Landlock),
        best_effort_limits: options.allow_degraded.contains(&DegradedLayer::Limits),
    }
}

/// Starts a session of `backend` for `policy`, with `egress`, its broker.
pub fn start<'p, B: Backend>(
    backend: &'p B,
    options: &RunOptions,
    policy: &'p Policy,
    egress: Wired,
) -> Result<HostSession<'p, B::Session<'p>>, Failure> {
    Ok(cordon_session::session::start(
        backend,
        policy,
        degraded(options),
        egress,
    )?)
}

/// Runs `command` in `session` (cordon-session's run), prints what the run
/// says, and maps the outcome to cordon's exit status.
pub fn execute_in(
    backend: &impl Backend,
    options: &RunOptions,
    session: HostSession<'_, impl Session>,
    command: Command,
) -> Result<u8, Failure> {
    if degraded(options).best_effort_limits {
        warn_best_effort_limits(backend, session.policy());
    }
    let outcome = cordon_session::run::run(session, command, &mut print_notice)?;
    match outcome {
        Outcome::Exited { status, message } => {
            if let Some(message) = message {
                eprintln!("cordon: {message}");
            }
            Ok(status.clamp(0, 255) as u8)
        }
        Outcome::TimedOut(after) => {
            eprintln!(
                "cordon: timed out after {}s (--timeout); every process of the sandbox was killed",
                after.as_secs_f64()
            );
            Ok(TIMED_OUT)
        }
    }
}

fn print_notice(notice: Notice) {
    match notice {
        Notice::Warning(w) => eprintln!("cordon: warning: {w}"),
        Notice::Note(n) => eprintln!("cordon: {n}"),
        Notice::Hint(h) => eprintln!("cordon: hint: {h}"),
    }
}

/// With `--allow-degraded limits`: each limit asked for that does not hold here.
fn warn_best_effort_limits(backend: &impl Backend, policy: &Policy) {
    for (limit, best_effort) in backend.assess_limits(policy).best_effort() {
        eprintln!(
            "cordon: warning: {} does not hold here, best effort only (--allow-degraded limits): {best_effort}",
            limit.flag
        );
    }
}

/// Resolves the policy from the options, the environment and the config files.
pub fn resolve_policy(options: &RunOptions) -> Result<Policy, String> {
    resolve_policy_with(options, None)
}

/// [`resolve_policy`] for `cordon pi`, with the rules it adds.
pub fn resolve_policy_with(
    options: &RunOptions,
    pi: Option<cordon_policy::PiMode>,
) -> Result<Policy, String> {
    let flags = Flags {
        pi,
        ..options.flags.clone()
    };
    let inputs =
        cordon_session::inputs::from_env(options.workspace.clone(), options.config.clone(), flags)
            .map_err(|e| e.to_string())?;
    cordon_policy::resolve(&inputs).map_err(|e| e.to_string())
}

/// $HOME, else the invoking user's entry in /etc/passwd.
pub fn home_dir() -> Result<PathBuf, String> {
    cordon_session::inputs::home_dir().map_err(|e| e.to_string())
}
