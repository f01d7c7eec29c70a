//! Starting an `exec` request's process: `clone(CLONE_VM | CLONE_VFORK)` on a
//! stack in the calling thread's own frame, then in the child only raw system
//! calls: signal dispositions, process group, stdio, working directory, exec.
//!
//! Why not `std::process::Command`: in a static binary std goes through glibc's
//! posix_spawn, whose child reads and resets all 64 signal dispositions one system
//! call at a time (each through the sandbox's seccomp filter), and whose parent
//! maps and unmaps a stack per spawn; an unmap in a process with other threads
//! running costs a TLB shootdown across CPUs. Together about 0.1 ms of an `exec`
//! of `/bin/true` (measured at 0.68 ms through std, 0.56 ms this way).
//!
//! The child shares the agent's memory until it execs, while the agent's other
//! threads go on running: it must not allocate or lock (see
//! [`cordon_spawn::clone_vfork`]). Everything it needs is
//! built beforehand in [`Spawn`], and what it reports back is one errno, written
//! to an atomic the parent reads once the child has exec'd or exited.

use std::ffi::{CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

/// The child's stack until it execs: it makes a few system calls, nothing more.
const CHILD_STACK: usize = 32 * 1024;

/// What to start.
pub struct Command<'a> {
    /// The file to execute.
    pub program: &'a Path,
    /// The arguments, the first being argv[0].
    pub args: &'a [&'a OsStr],
    /// Variables set on top of the agent's environment.
    pub env: &'a [(&'a str, &'a OsStr)],
    /// Where it starts.
    pub cwd: &'a Path,
    /// A pipe for stdin if true, else `/dev/null`.
    pub stdin_piped: bool,
}

/// A started process, in a process group of its own, with the parent's pipe ends.
pub struct Child {
    pub pid: u32,
    pub stdin: Option<OwnedFd>,
    /// Non-blocking read ends.
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Everything the child reads, built before the clone.
struct Spawn {
    program: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: CString,
    /// The fds that become 0, 1 and 2.
    stdio: [RawFd; 3],
    /// Signals whose disposition goes back to the default before exec.
    reset: &'static [libc::c_int],
    /// The errno of the step that failed, 0 while none has.
    errno: AtomicI32,
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// A pipe made with `flags` (`O_CLOEXEC`, `O_NONBLOCK`) on both ends.
pub fn pipe(flags: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), flags) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A pipe whose read end (ours) does not block; the child's end does.
fn output_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = pipe(libc::O_CLOEXEC)?;
    // SAFETY: fcntl on a descriptor we own; a fresh pipe's read end has no other flags.
    if unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok((read, write))
}

/// `/dev/null`, opened once for every child's stdin.
fn dev_null() -> io::Result<RawFd> {
    static NULL: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = NULL.get() {
        return Ok(fd.as_raw_fd());
    }
    let fd = std::fs::File::open("/dev/null")?;
    Ok(NULL.get_or_init(|| fd.into()).as_raw_fd())
}

/// SIGPIPE (Rust's runtime ignores it, and an ignored signal stays ignored across
/// exec) and every signal the agent has a handler for: a handler must not run in
/// the child, which shares the agent's memory. The agent installs its handlers
/// (std's stack-overflow ones) before it serves, so one look suffices.
fn signals_to_reset() -> &'static [libc::c_int] {
    static RESET: OnceLock<Vec<libc::c_int>> = OnceLock::new();
    RESET.get_or_init(|| {
        let mut reset = vec![libc::SIGPIPE];
        for sig in 1..=libc::SIGRTMAX() {
            // SAFETY: libc's sigaction is plain integers (the handler is a
            // sighandler_t, an address-sized integer) and a sigset: all-zero
            // bytes are a valid value.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: with a NULL new action, sigaction only writes the current
            // disposition into `old`, a live local; it changes nothing. glibc
            // refuses its own internal signals with EINVAL, which are skipped.
            let got = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } == 0;
            if got
                && sig != libc::SIGPIPE
                && old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN
            {
                reset.push(sig);
            }
        }
        reset
    })
}

/// Starts `cmd`; returns once it has exec'd, or with the error that stopped it.
pub fn spawn(cmd: &Command) -> io::Result<Child> {
    let program = cstring(cmd.program.as_os_str().as_bytes())?;
    let args = cmd
        .args
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let env = environment(cmd.env)?;
    let cwd = cstring(cmd.cwd.as_os_str().as_bytes())?;
    let (stdin_parent, stdin_child) = if cmd.stdin_piped {
        let (read, write) = pipe(libc::O_CLOEXEC)?;
        (Some(write), Some(read))
    } else {
        (None, None)
    };
    let (stdout, stdout_child) = output_pipe()?;
    let (stderr, stderr_child) = output_pipe()?;
    let stdin_fd = match &stdin_child {
        Some(fd) => fd.as_raw_fd(),
        None => dev_null()?,
    };
    let spawn = Spawn {
        program,
        argv: cordon_spawn::pointers(&args),
        envp: cordon_spawn::pointers(&env),
        cwd,
        stdio: [stdin_fd, stdout_child.as_raw_fd(), stderr_child.as_raw_fd()],
        reset: signals_to_reset(),
        errno: AtomicI32::new(0),
    };
    let pid = clone_vfork(&spawn)?;
    // The child has exec'd or exited: its ends of the pipes are its own now.
    drop((stdin_child, stdout_child, stderr_child));
    let errno = spawn.errno.load(Ordering::SeqCst);
    if errno != 0 {
        // It exited without exec'ing: reap it and report why.
        let _ = wait(pid as u32);
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok(Child {
        pid: pid as u32,
        stdin: stdin_parent,
        stdout,
        stderr,
    })
}

/// The agent's environment with `overrides` set on top, as `NAME=VALUE` strings.
fn environment(overrides: &[(&str, &OsStr)]) -> io::Result<Vec<CString>> {
    let overridden = |name: &OsStr| overrides.iter().any(|(k, _)| OsStr::new(k) == name);
    let inherited = std::env::vars_os().filter(|(k, _)| !overridden(k));
    let mut env = Vec::new();
    for (k, v) in inherited {
        env.push(cstring(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
    }
    // The last of repeated names wins, as with std's Command::env.
    for (i, (k, v)) in overrides.iter().enumerate() {
        if overrides[i + 1..].iter().all(|(later, _)| later != k) {
            env.push(cstring(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
        }
    }
    Ok(env)
}

/// Clones the child on a stack in this frame (a worker thread's stack is reused,
/// so its pages are already there) and returns its pid once it has exec'd or exited.
fn clone_vfork(spawn: &Spawn) -> io::Result<libc::pid_t> {
    let mut stack = [MaybeUninit::<u8>::uninit(); CHILD_STACK];
    // SAFETY: `child_main` makes raw system calls only, then execs or exits;
    // `spawn` lives in the caller's frame, suspended until then.
    unsafe {
        cordon_spawn::clone_vfork(
            &mut stack,
            child_main,
            spawn as *const Spawn as *mut libc::c_void,
        )
    }
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Spawn` of `clone_vfork`, whose thread is suspended
    // until this process execs or exits.
    let spawn = unsafe { &*(arg as *const Spawn) };
    let errno = exec_child(spawn);
    spawn.errno.store(errno.max(1), Ordering::SeqCst);
    // SAFETY: _exit makes no cleanup that could touch the shared memory.
    unsafe { libc::_exit(127) }
}

/// In the child: raw system calls only. Returns the errno of the failed step.
fn exec_child(spawn: &Spawn) -> libc::c_int {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: each call below is a plain system call on values built by the
    // parent; none allocates or takes a lock.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for &sig in spawn.reset {
            libc::sigaction(sig, &default, std::ptr::null_mut());
        }
        if libc::setpgid(0, 0) == -1 {
            return errno();
        }
        for (target, &fd) in spawn.stdio.iter().enumerate() {
            let target = target as RawFd;
            // dup2 onto itself would keep close-on-exec: clear it instead.
            let ok = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0) != -1
            } else {
                libc::dup2(fd, target) != -1
            };
            if !ok {
                return errno();
            }
        }
        if libc::chdir(spawn.cwd.as_ptr()) == -1 {
            return errno();
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(
            spawn.program.as_ptr(),
            spawn.argv.as_ptr(),
            spawn.envp.as_ptr(),
        );
    }
    errno()
}

/// Waits for `pid` to end and reaps it.
pub fn wait(pid: u32) -> io::Result<ExitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child, storing its status in `status`.
        if unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) } != -1 {
            return Ok(ExitStatus::from_raw(status));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
