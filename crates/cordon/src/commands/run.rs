//! `cordon run` and `cordon shell`.

use crate::cli::{DegradedLayer, RunOptions};
use cordon_backend::{Backend, Command, Degraded, Outcome, Program, Session, Terminal};
use cordon_net::Wired;
use cordon_policy::{Access, Flags, Inputs, Origin, Policy};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Exit status when `--timeout` expired (DESIGN.md).
const TIMED_OUT: u8 = 124;

pub fn run(
    backend: &impl Backend,
    options: &RunOptions,
    command: Vec<OsString>,
) -> Result<u8, String> {
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
    execute(backend, options, command)
}

pub fn shell(backend: &impl Backend, options: &RunOptions) -> Result<u8, String> {
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
    execute(backend, options, command)
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

/// The current directory when it lies inside the workspace (it has the same path
/// inside the sandbox), else the workspace.
fn working_directory(policy: &Policy) -> Option<PathBuf> {
    std::env::current_dir()
        .and_then(|d| d.canonicalize())
        .ok()
        .filter(|d| d.starts_with(&policy.workspace))
}

fn execute(backend: &impl Backend, options: &RunOptions, command: Command) -> Result<u8, String> {
    let policy = resolve_policy(options)?;
    let additions = super::egress::additions(&policy, None)?;
    execute_in(
        options,
        &policy,
        start(backend, options, &policy)?,
        command,
        additions,
    )
}

/// The layers the user agreed to run without (`--allow-degraded`).
pub fn degraded(options: &RunOptions) -> Degraded {
    Degraded {
        no_landlock: options.allow_degraded.contains(&DegradedLayer::Landlock),
        best_effort_limits: options.allow_degraded.contains(&DegradedLayer::Limits),
    }
}

/// Starts a session of `backend` for `policy`.
pub fn start<'p, B: Backend>(
    backend: &'p B,
    options: &RunOptions,
    policy: &'p Policy,
) -> Result<B::Session<'p>, String> {
    backend
        .start(policy, degraded(options))
        .map_err(|e| e.to_string())
}

/// Runs `command` in `session` (made from `policy`) with the additions of its
/// egress broker (none when it has none), ends the session, and maps the outcome
/// to cordon's exit status.
pub fn execute_in(
    options: &RunOptions,
    policy: &Policy,
    mut session: impl Session,
    mut command: Command,
    egress: Wired,
) -> Result<u8, String> {
    let Wired {
        additions,
        status: broker,
    } = egress;
    for warning in &policy.warnings {
        eprintln!("cordon: warning: {warning}");
    }
    for made in super::writable::ensure(policy)? {
        eprintln!("cordon: {made}");
    }
    if command.cwd.is_none() {
        command.cwd = working_directory(policy);
    }
    if command.timeout.is_none() {
        command.timeout = policy.timeout.as_ref().map(|t| t.value);
    }
    if degraded(options).best_effort_limits {
        let mechanism = cordon_sandbox::limits_mechanism(&policy.limits);
        for limit in cordon_sandbox::limits::assess(&policy.limits, &mechanism) {
            if let cordon_sandbox::limits::Hold::Unenforceable { best_effort, .. } = &limit.hold {
                if limit.explicit {
                    eprintln!(
                        "cordon: warning: {} does not hold here, best effort only (--allow-degraded limits): {best_effort}",
                        limit.flag
                    );
                }
            }
        }
    }
    let read_only = cordon_sandbox::view::read_only_during_run(policy);
    let roots = audited_roots(policy);
    // Recorded before the sandbox starts: if this run is killed before its audit,
    // the next run on these roots audits from here.
    let pending =
        cordon_gitguard::pending::Pending::begin(&roots, SystemTime::now() - COARSE_CLOCK);
    let outcome = session.exec(&command, additions);
    let ended = session.end();
    let outcome = outcome.and_then(|outcome| ended.map(|()| outcome));
    audit_git(&roots, &read_only, pending.since());
    pending.done();
    let outcome = outcome.map_err(|e| e.to_string())?;
    if let Some(failure) = broker.startup_failure() {
        eprintln!("cordon: {failure}");
    }
    match outcome {
        Outcome::Exited { status, message } => {
            if let Some(message) = message {
                eprintln!("cordon: {message}");
            }
            if status != 0 {
                cache_hint(policy, &command);
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

/// After a failed command that names a package manager whose cache is read-only
/// inside (one cordon does not manage): why, and what to do.
fn cache_hint(policy: &Policy, command: &Command) {
    let Program::Named(program) = &command.program else {
        return;
    };
    let words: Vec<String> = std::iter::once(program)
        .chain(&command.args)
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    if let Some(hint) = cordon_policy::caches::hint(&policy.caches, &policy.home, &words) {
        for line in hint.lines() {
            eprintln!("cordon: hint: {line}");
        }
    }
}

/// How far a file's change time may lag the clock: the kernel stamps files with a
/// coarse clock, so a file written just after the run began can look older.
const COARSE_CLOCK: Duration = Duration::from_secs(1);

/// The writable roots the git audit walks. The managed caches are the sandboxes'
/// own: no host tool uses them.
fn audited_roots(policy: &Policy) -> Vec<PathBuf> {
    (policy.rules.iter())
        .filter(|r| r.access == Access::Write && !matches!(r.origin, Origin::Cache { .. }))
        .map(|r| r.path.clone())
        .collect()
}

/// Neutralises what the run left in its writable roots that would make the host's
/// git run code (cordon-gitguard), and says what it did.
fn audit_git(roots: &[PathBuf], read_only: &[PathBuf], since: SystemTime) {
    let report = cordon_gitguard::audit(&cordon_gitguard::Audit {
        roots,
        read_only,
        since,
    });
    for finding in &report.neutralised {
        eprintln!("cordon: {finding}");
    }
    for problem in &report.unchecked {
        eprintln!("cordon: warning: {problem}");
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
    let cwd =
        std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    let inputs = Inputs {
        workspace: options.workspace.clone().unwrap_or_else(|| cwd.clone()),
        cwd,
        home: home_dir()?,
        tmp: std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from),
        config: options.config.clone(),
        xdg_config_home: std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from),
        xdg_data_home: std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
        flags: Flags {
            pi,
            ..options.flags.clone()
        },
    };
    cordon_policy::resolve(&inputs).map_err(|e| e.to_string())
}

/// $HOME, else the invoking user's entry in /etc/passwd. (Not getpwuid: cordon is
/// a static binary, and glibc's NSS modules cannot be loaded into one reliably.)
pub fn home_dir() -> Result<PathBuf, String> {
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let uid = rustix::process::geteuid().as_raw().to_string();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.len() >= 7 && fields[2] == uid).then(|| PathBuf::from(fields[5]))
            })
        })
        .filter(|home| home.is_absolute())
        .ok_or_else(|| "cannot tell your home directory: HOME is unset and your user is not in /etc/passwd; set HOME".to_string())
}
