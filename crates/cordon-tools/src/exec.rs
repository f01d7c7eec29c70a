//! `exec`: a command in its own process group, output streamed as notifications.

use crate::error::ToolError;
use crate::guard::{Guard, Need};
use crate::protocol::{
    ExecOutput, ExecOutputNote, ExecParams, ExecResult, Id, Notify as _, Stream,
};
use crate::server::{Out, Token};
use crate::spawn;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The longest timeout accepted, in seconds (about 31 years).
const MAX_TIMEOUT: f64 = 1e9;
/// Bytes read from a pipe at a time.
const CHUNK: usize = 64 * 1024;

/// Every bash builtin and reserved word: a command starting with one goes to bash.
const SHELL_WORDS: &[&str] = &[
    ".",
    ":",
    "[",
    "[[",
    "]]",
    "{",
    "}",
    "!",
    "alias",
    "bg",
    "bind",
    "break",
    "builtin",
    "caller",
    "case",
    "cd",
    "command",
    "compgen",
    "complete",
    "compopt",
    "continue",
    "coproc",
    "declare",
    "dirs",
    "disown",
    "do",
    "done",
    "echo",
    "elif",
    "else",
    "enable",
    "esac",
    "eval",
    "exec",
    "exit",
    "export",
    "false",
    "fc",
    "fg",
    "fi",
    "for",
    "function",
    "getopts",
    "hash",
    "help",
    "history",
    "if",
    "in",
    "jobs",
    "kill",
    "let",
    "local",
    "logout",
    "mapfile",
    "popd",
    "printf",
    "pushd",
    "pwd",
    "read",
    "readarray",
    "readonly",
    "return",
    "select",
    "set",
    "shift",
    "shopt",
    "source",
    "suspend",
    "test",
    "then",
    "time",
    "times",
    "trap",
    "true",
    "type",
    "typeset",
    "ulimit",
    "umask",
    "unalias",
    "unset",
    "until",
    "wait",
    "while",
];

/// `/bin/bash`, else `/bin/sh`.
fn shell() -> &'static Path {
    static SHELL: OnceLock<PathBuf> = OnceLock::new();
    SHELL.get_or_init(|| {
        if Path::new("/bin/bash").exists() {
            PathBuf::from("/bin/bash")
        } else {
            PathBuf::from("/bin/sh")
        }
    })
}

/// The program and arguments of a command simple enough to run without a shell:
/// only `[A-Za-z0-9_./:=+,@%-]` and spaces, a first word that is no shell builtin or
/// keyword nor an assignment, found as an executable (by PATH, or as a path).
pub fn direct_argv<'a>(
    command: &'a str,
    path_var: Option<&OsStr>,
    cwd: &Path,
) -> Option<(PathBuf, Vec<&'a str>)> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b" _./:=+,@%-".contains(&b);
    if !command.bytes().all(ok) {
        return None;
    }
    let words: Vec<&str> = command.split(' ').filter(|w| !w.is_empty()).collect();
    let first = *words.first()?;
    if SHELL_WORDS.contains(&first) || first.contains('=') {
        return None;
    }
    let program = if first.contains('/') {
        let p = cwd.join(first);
        is_executable(&p).then_some(p)?
    } else {
        let path_var = path_var?;
        let mut found = None;
        for dir in path_var.as_bytes().split(|&b| b == b':') {
            // An empty or relative PATH entry depends on the shell's cwd handling.
            if dir.first() != Some(&b'/') {
                return None;
            }
            let p = Path::new(OsStr::from_bytes(dir)).join(first);
            if is_executable(&p) {
                found = Some(p);
                break;
            }
        }
        found?
    };
    Some((program, words))
}

fn is_executable(p: &Path) -> bool {
    let Ok(md) = std::fs::metadata(p) else {
        return false;
    };
    if !md.is_file() {
        return false;
    }
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGIO => "SIGIO",
        libc::SIGPWR => "SIGPWR",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("SIG{sig}"),
    };
    name.to_string()
}

fn set_nonblocking(fd: RawFd, on: bool) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl >= 0 {
            let fl = if on {
                fl | libc::O_NONBLOCK
            } else {
                fl & !libc::O_NONBLOCK
            };
            libc::fcntl(fd, libc::F_SETFL, fl);
        }
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; a non-negative result is a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        None
    } else {
        // SAFETY: a fresh descriptor we own.
        Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
}

fn kill_group(pgid: u32) {
    // SAFETY: a plain kill(2); the group leader is not reaped yet, so the id is ours.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
    }
}

/// One output stream of the child.
struct Output {
    stream: Stream,
    file: Option<File>,
}

impl Output {
    /// Reads what is available now (one chunk, or with `all` what the pipe holds
    /// at this moment, so a process left writing cannot keep us here) and forwards
    /// it. Closes the stream at EOF.
    fn pump(&mut self, out: &Out, id: Option<&Id>, buf: &mut [u8], all: bool) {
        let mut budget = usize::MAX;
        if all {
            let mut n: libc::c_int = 0;
            // SAFETY: FIONREAD stores the pipe's byte count in n.
            if unsafe { libc::ioctl(self.raw(), libc::FIONREAD, &mut n) } == 0 {
                budget = n.max(0) as usize;
            }
        }
        while let Some(f) = self.file.as_mut() {
            let want = buf.len().min(budget.max(1));
            match f.read(&mut buf[..want]) {
                Ok(0) => self.file = None,
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    out.notify(
                        ExecOutputNote::NAME,
                        ExecOutput {
                            id: id.cloned(),
                            stream: self.stream,
                            data: buf[..n].into(),
                        },
                    );
                    if !all || budget == 0 {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => self.file = None,
            }
        }
    }

    fn raw(&self) -> RawFd {
        self.file.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// Reads and discards the rest in the background, so a process left running
    /// that still writes gets no SIGPIPE.
    fn discard(&mut self) {
        if let Some(mut f) = self.file.take() {
            set_nonblocking(f.as_raw_fd(), false);
            let _ = std::thread::Builder::new()
                .name("exec-drain".into())
                .spawn(move || {
                    let mut buf = vec![0u8; CHUNK];
                    while matches!(f.read(&mut buf), Ok(n) if n > 0) {}
                });
        }
    }
}

enum End {
    Exited,
    TimedOut,
    Cancelled,
}

pub fn exec(
    g: &Guard,
    out: &Out,
    id: Option<&Id>,
    p: &ExecParams,
    token: &Token,
) -> Result<ExecResult, ToolError> {
    const OP: &str = "exec";
    let command = p.command.as_str();
    let cwd = match &p.cwd {
        Some(c) => g.resolve(OP, "cwd", c, Need::Read)?,
        None => g.policy.workspace.clone(),
    };
    match std::fs::metadata(&cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(ToolError::errno(OP, &cwd, libc::ENOTDIR)),
        Err(e) => return Err(ToolError::io(OP, &cwd, e)),
    }
    let env = &p.env;
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(ToolError::invalid(
                "env",
                format!(
                    "{k:?} is not a valid variable (name without '=' or NUL, value without NUL)"
                ),
            ));
        }
    }
    let timeout = match p.timeout {
        None => None,
        Some(t) if t > 0.0 && t <= MAX_TIMEOUT => Some(Duration::from_secs_f64(t)),
        Some(_) => {
            return Err(ToolError::invalid(
                "timeout",
                format!("must be a number of seconds above 0 and at most {MAX_TIMEOUT}"),
            ));
        }
    };
    let stdin = p.stdin.as_deref().filter(|s| !s.is_empty());

    let path_var: Option<OsString> = env
        .iter()
        .rev()
        .find(|(k, _)| *k == "PATH")
        .map(|(_, v)| OsString::from(v))
        .or_else(|| std::env::var_os("PATH"));
    let mut vars: Vec<(&str, &OsStr)> = vec![("PWD", cwd.as_os_str())];
    vars.extend(env.iter().map(|(k, v)| (k.as_str(), OsStr::new(v))));
    let start = |program: &Path, args: &[&OsStr]| {
        spawn::spawn(&spawn::Command {
            program,
            args,
            env: &vars,
            cwd: &cwd,
            stdin_piped: stdin.is_some(),
        })
    };
    let by_shell = || {
        start(
            shell(),
            &[shell().as_os_str(), OsStr::new("-c"), OsStr::new(command)],
        )
    };
    let spawned = match direct_argv(command, path_var.as_deref(), &cwd) {
        Some((program, words)) => {
            let args: Vec<&OsStr> = words.iter().map(OsStr::new).collect();
            start(&program, &args).or_else(|_| by_shell())
        }
        None => by_shell(),
    };
    let child = spawned.map_err(|e| ToolError::io(OP, shell(), e))?;
    run(out, id, token, child, stdin, timeout)
}

fn run(
    out: &Out,
    id: Option<&Id>,
    token: &Token,
    child: spawn::Child,
    stdin: Option<&str>,
    timeout: Option<Duration>,
) -> Result<ExecResult, ToolError> {
    let pid = child.pid;
    let internal = |e: io::Error| ToolError::Internal(format!("exec: {e}"));
    if let (Some(w), Some(data)) = (child.stdin, stdin) {
        let mut w = File::from(w);
        let data = data.to_owned();
        let _ = std::thread::Builder::new()
            .name("exec-stdin".into())
            .spawn(move || {
                use std::io::Write;
                let _ = w.write_all(data.as_bytes());
            });
    }
    let mut streams = [
        Output {
            stream: Stream::Stdout,
            file: Some(File::from(child.stdout)),
        },
        Output {
            stream: Stream::Stderr,
            file: Some(File::from(child.stderr)),
        },
    ];
    // Both ends non-blocking: a cancel's write must never wait.
    let (wake_rd, wake_wr) = spawn::pipe(libc::O_CLOEXEC | libc::O_NONBLOCK).map_err(internal)?;
    let wake_wr = Arc::new(wake_wr);
    token.set_wake(Some(wake_wr.clone()));
    // The child's exit: a pidfd, else a thread that waits without reaping.
    let pidfd = pidfd_open(pid);
    let exited = Arc::new(AtomicBool::new(false));
    if pidfd.is_none() {
        let (exited, wake) = (exited.clone(), wake_wr.clone());
        std::thread::Builder::new()
            .name("exec-wait".into())
            .spawn(move || {
                // SAFETY: waitid with WNOWAIT leaves the child for spawn::wait to reap.
                unsafe {
                    let mut info: libc::siginfo_t = std::mem::zeroed();
                    while libc::waitid(
                        libc::P_PID,
                        pid as libc::id_t,
                        &mut info,
                        libc::WEXITED | libc::WNOWAIT,
                    ) == -1
                        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
                    {
                    }
                }
                exited.store(true, Ordering::SeqCst);
                // SAFETY: a one-byte write to our pipe.
                unsafe { libc::write(wake.as_raw_fd(), b"x".as_ptr().cast(), 1) };
            })
            .map_err(internal)?;
    }
    drop(wake_wr);

    let deadline = timeout.map(|t| Instant::now() + t);
    let mut buf = vec![0u8; CHUNK];
    let end = loop {
        if token.is_cancelled() {
            break End::Cancelled;
        }
        if exited.load(Ordering::SeqCst) {
            break End::Exited;
        }
        let wait_ms: i32 = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break End::TimedOut;
                }
                left.as_millis().saturating_add(1).min(i32::MAX as u128) as i32
            }
        };
        let mut fds = [
            poll_fd(streams[0].raw()),
            poll_fd(streams[1].raw()),
            poll_fd(wake_rd.as_raw_fd()),
            poll_fd(pidfd.as_ref().map_or(-1, |f| f.as_raw_fd())),
        ];
        // SAFETY: fds is a valid array of pollfd; negative fds are ignored.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            kill_group(pid);
            let _ = spawn::wait(pid);
            return Err(internal(e));
        }
        if fds[3].revents != 0 {
            break End::Exited;
        }
        if fds[2].revents != 0 {
            let mut b = [0u8; 64];
            // SAFETY: reading into a local buffer from our own pipe.
            unsafe { libc::read(wake_rd.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
        }
        for (i, s) in streams.iter_mut().enumerate() {
            if fds[i].revents != 0 {
                s.pump(out, id, &mut buf, false);
            }
        }
    };
    if !matches!(end, End::Exited) {
        kill_group(pid);
    }
    let status = spawn::wait(pid);
    token.set_wake(None);
    for s in streams.iter_mut() {
        s.pump(out, id, &mut buf, true);
        s.discard();
    }
    let status = status.map_err(internal)?;
    let (timed_out, cancelled) = match end {
        End::Exited => (false, false),
        End::TimedOut => (true, false),
        End::Cancelled => (false, true),
    };
    Ok(ExecResult {
        exit_code: status.code(),
        signal: status.signal().map(signal_name),
        timed_out,
        cancelled,
    })
}

fn poll_fd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_selection() {
        let path = OsStr::new("/usr/bin:/bin");
        let cwd = Path::new("/");
        assert!(direct_argv("/bin/true", Some(path), cwd).is_some());
        let (p, w) = direct_argv("ls -la /tmp", Some(path), cwd).unwrap();
        assert!(p.ends_with("ls"));
        assert_eq!(w, ["ls", "-la", "/tmp"]);
        for c in [
            "echo hi",
            "cd /",
            "true",
            "ls *",
            "ls > x",
            "ls | cat",
            "ls; ls",
            "ls && ls",
            "FOO=1 ls",
            "ls $HOME",
            "ls 'a b'",
            "ls ~",
            "ls\tx",
            "",
            "   ",
            "no-such-cmd-xyz",
            "ls #c",
            "ls\nrm x",
            "exec ls",
            ". x",
            "ls `id`",
            "ls {a,b}",
        ] {
            assert!(direct_argv(c, Some(path), cwd).is_none(), "{c:?}");
        }
        assert!(direct_argv("ls", Some(OsStr::new("relative:/bin")), cwd).is_none());
        assert!(direct_argv("ls", None, cwd).is_none());
    }
}
