//! The host side of a sandbox run: prepare everything that can be prepared outside
//! (view plan, seccomp program, environment, argv), clone the sandbox's first
//! process into fresh namespaces, then wait for it, forwarding signals and enforcing
//! the timeout.
//!
//! Three processes take part:
//! - the launcher (this process, on the host), which outlives the sandbox;
//! - the supervisor, PID 1 of the sandbox's PID namespace, which builds the view and
//!   reaps; when it exits the kernel kills every process left in the namespace;
//! - the command, forked by the supervisor, confined, then exec'd.

use crate::confine::{landlock, seccomp::SeccompPlan};
use crate::env::build_env;
use crate::error::SandboxError;
use crate::git_excludes::GitExcludes;
use crate::signals::SignalFd;
use crate::supervisor;
use crate::sys;
use crate::view::ViewPlan;
use crate::waiter::{Waited, Waiter, kill_and_reap};
use crate::workspace_lock::RootLocks;
use cordon_policy::{NetMode, Policy};
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

pub use cordon_backend::{Command, Degraded, FileOverlay, Outcome, Terminal};

/// What the OS backend hands a run beyond its policy and command: the host's
/// neutral additions, and the mechanics that carry them (see `backend.rs`).
#[derive(Default)]
pub(crate) struct Additions {
    pub endpoints: Option<crate::egress::EndpointRequest>,
    pub files: Vec<FileOverlay>,
    /// Set after the policy's environment; the same name replaces its value.
    pub env: Vec<(String, String)>,
    /// Descriptors the command inherits, at the same numbers (every other one
    /// beyond stdio is closed at exec).
    pub pass_fds: Vec<std::os::fd::OwnedFd>,
    /// The program's file, opened on the host (`O_PATH`, close-on-exec): executed
    /// from this descriptor instead of by the command's name, so it runs even where
    /// the view does not show its path (cordon's own binary under the private
    /// `/tmp`). The descriptor is closed by the exec, and the command's
    /// `argv[0]` is still the name given.
    pub exec_fd: Option<std::os::fd::OwnedFd>,
    /// The command serves the view to another machine (`backend::ViewServer`).
    pub server: Option<Server>,
}

/// What a server of the view changes in a run (see `backend::ViewServer`; its
/// descriptors are in [`Additions::pass_fds`]).
pub(crate) struct Server {
    pub devices: Vec<&'static str>,
    pub scratch_size: Option<u64>,
    pub environment: crate::backend::TakeEnvironment,
    pub stop: crate::backend::Stop,
    pub signal: crate::backend::ForwardSignal,
    pub terminal: Option<crate::ServedTerminal>,
}

/// Everything the sandbox's processes need, computed before the clone so that the
/// children do as little as possible.
pub(crate) struct Prepared {
    pub view: ViewPlan,
    pub seccomp: SeccompPlan,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: CString,
    pub path_dirs: Vec<Vec<u8>>,
    pub uid_map: String,
    pub gid_map: String,
    pub writable: Vec<PathBuf>,
    pub landlock: bool,
    pub net: NetMode,
    /// The egress broker's sockets to open in the network namespace.
    pub egress: Option<crate::egress::EndpointRequest>,
    /// Inherited by the command (see [`Additions::pass_fds`]).
    pub pass_fds: Vec<std::os::fd::OwnedFd>,
    /// See [`Additions::exec_fd`].
    pub exec_fd: Option<std::os::fd::OwnedFd>,
    pub terminal: Terminal,
    /// How limits are enforced, chosen once per run.
    pub limits_mechanism: crate::limits::Mechanism,
    /// The file that keeps placeholders out of git inside, written once the view
    /// is built.
    pub git_excludes: Option<GitExcludes>,
    /// The limits no cgroup covers, applied as rlimits by the command.
    pub rlimits: cordon_policy::Limits,
    /// The CPUs the supervisor restricts the sandbox to when no cgroup holds
    /// `--cpus`; seccomp then refuses `sched_setaffinity`.
    pub affinity: Option<usize>,
    /// The memory limit's name and value, for the message when the sandbox's
    /// cgroup OOM-killed something.
    pub memory_flag: Option<String>,
    /// Armed with the supervisor once it exists (a server of the view's).
    pub stop: Option<crate::backend::Stop>,
    /// Where signals for the command go instead of the sandbox (a server of
    /// the view's: to the command it runs elsewhere).
    pub forward: Option<crate::backend::ForwardSignal>,
    /// The terminal a server of the view relays to its command.
    pub served_terminal: Option<crate::ServedTerminal>,
}

fn cstring(bytes: &[u8], what: &str) -> Result<CString, SandboxError> {
    CString::new(bytes).map_err(|_| SandboxError::NulByte {
        what: what.to_string(),
    })
}

impl Prepared {
    fn new(
        policy: &Policy,
        argv0: &OsStr,
        command: &Command,
        degraded: Degraded,
        additions: &mut Additions,
    ) -> Result<Prepared, SandboxError> {
        let landlock = match landlock::kernel_abi() {
            Ok(abi) if abi > 0 => true,
            _ if degraded.no_landlock => false,
            Ok(abi) => {
                return Err(SandboxError::LandlockMissing {
                    detail: format!("ABI {abi}"),
                });
            }
            Err(e) => {
                return Err(SandboxError::LandlockMissing {
                    detail: format!("landlock_create_ruleset: {e}; `cordon doctor` says why"),
                });
            }
        };
        crate::limits::validate(&policy.limits)?;
        let limits_mechanism = limits_mechanism(&policy.limits);
        let assessed = crate::limits::assess(&policy.limits, &limits_mechanism);
        if !degraded.best_effort_limits {
            if let Some(refused) = assessed.iter().find(|a| a.refuses()) {
                return Err(SandboxError::unenforceable_limit(refused));
            }
        }
        let rlimits = limits_mechanism.uncovered(&policy.limits);
        let affinity = rlimits
            .cpus
            .as_ref()
            .and_then(|c| crate::limits::affinity_cpus(c.value, crate::limits::available_cpus()));
        // Best effort for memory no cgroup holds: the private tmpfs mounts no larger.
        let tmpfs_size = rlimits.memory.as_ref().map(|m| m.value);
        let mut env = build_env(policy);
        for (name, value) in additions.env.drain(..) {
            env.retain(|(k, _)| *k != name);
            env.push((name, value));
        }
        // Plans only; the placeholders are made after the clone, so what is looked
        // up while planning may be remembered until then.
        let _snapshot = cordon_policy::lookup::memoised();
        let mut view = ViewPlan::prepare(policy, std::mem::take(&mut additions.files))?;
        view.tmpfs_size = tmpfs_size;
        let git_excludes = git_excludes(policy, &view, &env);
        env.extend(git_excludes.iter().flat_map(GitExcludes::env));
        let server = additions.server.take();
        let stop = server.as_ref().map(|s| s.stop.clone());
        let mut forward = None;
        let mut served_terminal = None;
        if let Some(server) = server {
            // The environment is the command's that the server runs, not its own.
            (server.environment)(std::mem::take(&mut env));
            view.served = true;
            view.devices = server.devices;
            view.tmpfs_size = server.scratch_size.or(view.tmpfs_size);
            forward = Some(server.signal);
            served_terminal = server.terminal;
        }
        let path_dirs = env
            .iter()
            .find_map(|(k, v)| (k == "PATH").then(|| v.clone()))
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| d.as_bytes().to_vec())
            .collect();
        let mut argv = vec![cstring(argv0.as_bytes(), "the command")?];
        for arg in &command.args {
            argv.push(cstring(arg.as_bytes(), "an argument")?);
        }
        let envp = env
            .iter()
            .map(|(k, v)| cstring(format!("{k}={v}").as_bytes(), "the environment"))
            .collect::<Result<_, _>>()?;
        let cwd = command
            .cwd
            .clone()
            .unwrap_or_else(|| policy.workspace.clone());
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        let seccomp = SeccompPlan::build(&policy.switches, affinity.is_some())?;
        Ok(Prepared {
            view,
            git_excludes,
            seccomp,
            argv,
            envp,
            cwd: cstring(cwd.as_os_str().as_bytes(), "the working directory")?,
            path_dirs,
            uid_map: format!("{uid} {uid} 1\n"),
            gid_map: format!("{gid} {gid} 1\n"),
            // The private tmpfs dirs too (a hidden home; /tmp is always writable).
            writable: (policy.writable_in_view())
                .chain(policy.scratch.iter().map(PathBuf::as_path))
                .map(PathBuf::from)
                .collect(),
            landlock,
            net: policy.net.value,
            egress: additions.endpoints.take(),
            pass_fds: std::mem::take(&mut additions.pass_fds),
            exec_fd: additions.exec_fd.take(),
            terminal: command.terminal,
            memory_flag: assessed
                .iter()
                .find(|a| a.limit == cordon_backend::LimitKind::Memory)
                .map(|a| a.flag.clone()),
            rlimits,
            affinity,
            limits_mechanism,
            stop,
            forward,
            served_terminal,
        })
    }
}

/// The git excludes for the placeholders of this run (to be made, or left by a
/// sandbox still running: protected paths that are empty files now).
fn git_excludes(policy: &Policy, view: &ViewPlan, env: &[(String, String)]) -> Option<GitExcludes> {
    use cordon_policy::{Access, RuleKind};
    let mut placeholders: Vec<PathBuf> = view.to_create.iter().map(|p| p.path.clone()).collect();
    placeholders.extend(
        (policy.rules.iter())
            .filter(|r| r.kind == RuleKind::Protected && r.access != Access::Write)
            .filter(|r| {
                std::fs::symlink_metadata(&r.path).is_ok_and(|m| m.is_file() && m.len() == 0)
            })
            .map(|r| r.path.clone()),
    );
    let roots: Vec<&std::path::Path> = policy.writable_roots().collect();
    GitExcludes::new(&placeholders, &roots, policy.scratch.first()?, env)
}

/// Limits the user asked for go to a cgroup where one can be had; the built-in
/// default (a process count) goes to an rlimit. Moving a process into a cgroup
/// waits for an RCU grace period on cgroup v1 (about 5 ms here), too much to pay
/// on every run for a default nobody chose.
pub fn limits_mechanism(limits: &cordon_policy::Limits) -> crate::limits::Mechanism {
    let explicit = |origin: &cordon_policy::Origin| *origin != cordon_policy::Origin::Default;
    let chosen = cordon_policy::Limits {
        memory: limits.memory.clone().filter(|l| explicit(&l.origin)),
        pids: limits.pids.clone().filter(|l| explicit(&l.origin)),
        cpus: limits.cpus.clone().filter(|l| explicit(&l.origin)),
    };
    if chosen == cordon_policy::Limits::default() {
        crate::limits::Mechanism::Rlimits
    } else {
        crate::limits::choose(&chosen)
    }
}

/// Runs `command` (started as `argv0`) in a new sandbox made from `policy` and
/// waits for it. `after_clone` runs in the launcher right after the clone: threads
/// may be started there and not before, since the clone copies only the calling
/// thread; its error ends the run.
///
/// Must be called from a single-threaded process: the sandbox's first process is
/// a fork of this one.
pub(crate) fn run(
    policy: &Policy,
    argv0: &OsStr,
    command: &Command,
    degraded: Degraded,
    mut additions: Additions,
    after_clone: impl FnOnce() -> Result<(), SandboxError>,
) -> Result<Outcome, SandboxError> {
    if policy.net.value == NetMode::Allowlist && additions.endpoints.is_none() {
        return Err(SandboxError::NoBroker);
    }
    let locks = RootLocks::acquire(policy.writable_roots());
    let mut prepared = Prepared::new(policy, argv0, command, degraded, &mut additions)?;
    let to_create: Vec<PathBuf> = prepared
        .view
        .to_create
        .iter()
        .map(|p| p.path.clone())
        .collect();
    locks.record(&to_create);
    let result = run_prepared(policy, &mut prepared, command.timeout, after_clone);
    // Placeholders go only from roots no other sandbox is using.
    locks.release();
    result
}

fn run_prepared(
    policy: &Policy,
    prepared: &mut Prepared,
    timeout: Option<Duration>,
    after_clone: impl FnOnce() -> Result<(), SandboxError>,
) -> Result<Outcome, SandboxError> {
    let signals =
        SignalFd::block_forwardable().map_err(|e| SandboxError::io("blocking signals", e))?;
    let saved_terminal = crate::terminal::SavedMode::capture(prepared.terminal);
    let pipe = || sys::pipe().map_err(|e| SandboxError::io("creating a pipe", e));
    let (report_read, report_write) = pipe()?;
    let (go_read, go_write) = pipe()?;

    // No CLONE_NEWNET: the supervisor makes the network namespace in parallel with
    // the view (see netns.rs).
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP;
    // SAFETY: fork_into's contract is a single-threaded caller, so that the child,
    // which copies only this thread, inherits no lock another thread held: `run`
    // requires it (see its doc), and the CLI calls it from its main thread
    // before starting any other.
    let child = unsafe { sys::fork_into(flags) }.map_err(|source| {
        let (cause, fix) =
            crate::probe::diagnose_userns_failure(source.raw_os_error().unwrap_or(0));
        SandboxError::Namespaces { source, cause, fix }
    })?;
    let Some(supervisor_pid) = child else {
        drop(report_read);
        drop(go_write);
        supervisor::main(prepared, report_write, go_read)
    };
    drop(report_write);
    drop(go_read);
    // The sandbox's end of the broker's channel: only the sandbox holds it now, so
    // the host end reads end-of-file if the sandbox ends before sending.
    drop(prepared.egress.take());
    prepared.pass_fds.clear();
    drop(prepared.exec_fd.take());
    // While the supervisor builds the view: the placeholders it will mount, made
    // here so the disk work runs on the other core, and the cgroup.
    let armed = match &prepared.stop {
        Some(stop) => stop
            .arm(supervisor_pid)
            .map_err(|e| SandboxError::io("cannot watch the sandbox (pidfd_open)", e)),
        None => Ok(()),
    };
    let cgroup = match armed
        .and_then(|()| after_clone())
        .and_then(|()| prepared.view.create_placeholders())
        .and_then(|()| confine_in_cgroup(policy, prepared, supervisor_pid))
    {
        Ok(cgroup) => cgroup,
        Err(e) => {
            kill_and_reap(supervisor_pid);
            return Err(e);
        }
    };
    // The go-ahead: the supervisor mounts the placeholders and starts the command
    // only after this byte. By then the placeholders exist and the supervisor is in
    // the sandbox's cgroup, so the command and everything it starts are too.
    let _ = rustix::io::write(&go_write, b"g");
    drop(go_write);
    let waited = Waiter {
        supervisor: supervisor_pid,
        signals: &signals,
        report: report_read,
        timeout,
        // The cgroup can be removed only once empty. Placeholders need no wait: the
        // sandbox is empty once the supervisor reported, and removing one that the
        // supervisor still has mounted detaches that mount (an RCU grace period),
        // which costs less than waiting for the supervisor's exit.
        until_reaped: cgroup.is_some(),
        pty: match &prepared.served_terminal {
            Some(served) => Some(&served.saved),
            None => (prepared.terminal == Terminal::Pty).then_some(&saved_terminal),
        },
        stops: (prepared.served_terminal.as_ref()).map(|s| std::os::fd::AsFd::as_fd(&s.stops)),
        forward: prepared.forward.as_deref(),
    }
    .wait();
    let out_of_memory = out_of_memory(cgroup.as_ref(), prepared.memory_flag.as_deref());
    drop(cgroup);
    drop(saved_terminal);
    Ok(match waited? {
        Waited::TimedOut(after) => Outcome::TimedOut(after),
        Waited::Ended { report, supervisor } => {
            let status = report.exited.or(supervisor).unwrap_or(125);
            match report.failure {
                Some((125, message)) => return Err(SandboxError::Child(message)),
                failure => {
                    let messages: Vec<String> = failure
                        .map(|(_, message)| message)
                        .into_iter()
                        .chain(out_of_memory)
                        .collect();
                    Outcome::Exited {
                        status,
                        message: (!messages.is_empty()).then(|| messages.join("\n")),
                    }
                }
            }
        }
    })
}

/// What to say when the sandbox's cgroup OOM-killed something: the command (or
/// one of its processes) died of the memory limit, not of a bug of its own.
fn out_of_memory(
    cgroup: Option<&crate::limits::SandboxCgroup>,
    memory_flag: Option<&str>,
) -> Option<String> {
    let kills = cgroup?.oom_kills().filter(|&n| n > 0)?;
    Some(cordon_backend::out_of_memory(
        memory_flag.unwrap_or("--memory"),
        kills,
    ))
}

/// Creates the sandbox's cgroup, if its limits use one, and moves the supervisor
/// into it.
fn confine_in_cgroup(
    policy: &Policy,
    prepared: &Prepared,
    supervisor_pid: libc::pid_t,
) -> Result<Option<crate::limits::SandboxCgroup>, SandboxError> {
    let name = format!("cordon-{}", std::process::id());
    let cgroup =
        crate::limits::SandboxCgroup::create(&prepared.limits_mechanism, &policy.limits, &name)?;
    if let Some(cgroup) = &cgroup {
        cgroup.add_pid(supervisor_pid)?;
    }
    Ok(cgroup)
}
