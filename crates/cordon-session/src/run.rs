//! One run of a command in a backend's session, with what the host does around
//! it: the missing writable directories made first, a record of the run's start
//! for the git audit (so a run killed before its audit is audited by the next),
//! the command's defaults (its working directory, the policy's timeout), the
//! backend's session run and ended, the git audit of every writable root after,
//! and what to tell the user. The front end prints the [`Notice`]s and maps the
//! [`Outcome`] to an exit status.

use crate::SessionError;
use crate::session::HostSession;
use cordon_backend::{Command, Outcome, Program, Session};
use cordon_net::Wired;
use cordon_policy::{Access, Origin, Policy};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Something a run tells its user, in the order it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Worth a look, but the run goes on (`cordon: warning: ...`).
    Warning(String),
    /// What cordon did or found (`cordon: ...`).
    Note(String),
    /// What to do about a failure (`cordon: hint: ...`), one line each.
    Hint(String),
}

/// Runs `command` in `session` with what the host adds (the egress broker's
/// side, the control endpoint, variables), ends the session, and audits what the
/// run left for the host's git. `notify` hears everything to tell the user.
pub fn run<S: Session>(
    session: HostSession<'_, S>,
    mut command: Command,
    notify: &mut dyn FnMut(Notice),
) -> Result<Outcome, SessionError> {
    let HostSession {
        policy,
        mut session,
        egress: Wired {
            additions,
            status: broker,
            ..
        },
        ..
    } = session;
    for warning in &policy.warnings {
        notify(Notice::Warning(warning.clone()));
    }
    for made in crate::host_dirs::ensure(policy)? {
        notify(Notice::Note(made));
    }
    if command.cwd.is_none() {
        command.cwd = working_directory(policy);
    }
    if command.timeout.is_none() {
        command.timeout = policy.timeout.as_ref().map(|t| t.value);
    }
    let read_only = cordon_policy::read_only_during_run(policy);
    let roots = audited_roots(policy);
    // Recorded before the sandbox starts: if this run is killed before its audit,
    // the next run on these roots audits from here.
    let pending =
        cordon_gitguard::pending::Pending::begin(&roots, SystemTime::now() - COARSE_CLOCK);
    let outcome = session.exec(&command, additions);
    let ended = session.end();
    let outcome = outcome.and_then(|outcome| ended.map(|()| outcome));
    audit_git(&roots, &read_only, pending.since(), notify);
    pending.done();
    let outcome = outcome.map_err(|e| SessionError::Backend(Box::new(e)))?;
    if let Some(failure) = broker.startup_failure() {
        notify(Notice::Note(failure));
    }
    if let Outcome::Exited { status, .. } = &outcome {
        if *status != 0 {
            cache_hint(policy, &command, notify);
        }
    }
    Ok(outcome)
}

/// The current directory when it lies inside the workspace (it has the same path
/// inside the sandbox), else the workspace.
fn working_directory(policy: &Policy) -> Option<PathBuf> {
    std::env::current_dir()
        .and_then(|d| d.canonicalize())
        .ok()
        .filter(|d| d.starts_with(&policy.workspace))
}

/// After a failed command that names a package manager whose cache is read-only
/// inside (one cordon does not manage): why, and what to do.
fn cache_hint(policy: &Policy, command: &Command, notify: &mut dyn FnMut(Notice)) {
    let Program::Named(program) = &command.program else {
        return;
    };
    let words: Vec<String> = std::iter::once(program)
        .chain(&command.args)
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    if let Some(hint) = cordon_policy::caches::hint(&policy.caches, &policy.home, &words) {
        for line in hint.lines() {
            notify(Notice::Hint(line.to_string()));
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
fn audit_git(
    roots: &[PathBuf],
    read_only: &[PathBuf],
    since: SystemTime,
    notify: &mut dyn FnMut(Notice),
) {
    let listings = cordon_gitguard::pending::user_dir();
    let report = cordon_gitguard::audit(&cordon_gitguard::Audit {
        roots,
        read_only,
        since,
        listings: listings.as_deref(),
    });
    for finding in report.neutralised {
        notify(Notice::Note(finding.to_string()));
    }
    for problem in report.unchecked {
        notify(Notice::Warning(problem.to_string()));
    }
}
