//! Running one probe in a forked child with a deadline.

use super::Outcome;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// Bigger answers are cut off (and the probe counted as failed).
const MAX_ANSWER: usize = 1 << 20;

/// A probe child that has been started.
pub(crate) struct Running {
    pid: libc::pid_t,
    read: OwnedFd,
    started: Instant,
    timeout: Duration,
}

/// Forks a child (leader of its own process group, killed if we die) that runs `f`
/// and writes its outcome as JSON to a pipe.
pub(crate) fn spawn(timeout: Duration, f: impl FnOnce() -> Outcome) -> io::Result<Running> {
    let (read, write) = crate::sys::pipe()?;
    let started = Instant::now();
    // SAFETY: the child runs `f`, writes, and leaves with _exit: it never returns
    // into the caller's code. See the module docs about allocation after fork.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(read);
        // SAFETY: plain syscalls in the child.
        unsafe {
            libc::setpgid(0, 0);
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            // The caller may block signals (the KVM probe needs SIGALRM) or
            // ignore SIGCHLD (probes wait for their own children).
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Outcome {
            ok: false,
            detail: "the probe panicked".into(),
            cause: None,
            fix: None,
        });
        let bytes = serde_json::to_vec(&outcome).unwrap_or_default();
        let mut rest: &[u8] = &bytes;
        while !rest.is_empty() {
            match rustix::io::write(&write, rest) {
                Ok(0) => break,
                Ok(n) => rest = &rest[n..],
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            }
        }
        // SAFETY: leave without running the parent's atexit handlers or destructors.
        unsafe { libc::_exit(0) };
    }
    // Also from this side, so that a kill of the group cannot miss it.
    // SAFETY: setpgid on our own child.
    unsafe { libc::setpgid(pid, pid) };
    drop(write);
    Ok(Running {
        pid,
        read,
        started,
        timeout,
    })
}

impl Running {
    /// Collects the child's outcome, or kills it at the deadline. Returns the
    /// outcome and how long the probe took.
    pub(crate) fn finish(self) -> (Outcome, Duration) {
        let deadline = self
            .started
            .checked_add(self.timeout)
            .unwrap_or(self.started + Duration::from_secs(86_400));
        let mut answer = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return self.timed_out();
            }
            let mut fds = [libc::pollfd {
                fd: self.read.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
            // SAFETY: poll on one valid fd.
            let ret = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
            if ret == 0 {
                continue;
            }
            if ret < 0 {
                if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return self.killed("polling the probe's pipe failed");
            }
            match rustix::io::read(self.read.as_fd(), &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.len() > MAX_ANSWER {
                        return self.killed("the probe's answer is too long");
                    }
                }
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => continue,
                Err(_) => return self.killed("reading the probe's pipe failed"),
            }
        }
        // EOF: the child is exiting. Reap it, but never wait past the deadline.
        let status = loop {
            if let Some(status) = self.try_reap() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                break None;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let elapsed = self.started.elapsed();
        match serde_json::from_slice::<Outcome>(&answer) {
            Ok(outcome) => (outcome, elapsed),
            Err(_) => {
                let how = match status {
                    Some(s) if libc::WIFSIGNALED(s) => {
                        format!("was killed by signal {}", libc::WTERMSIG(s))
                    }
                    Some(s) if libc::WIFEXITED(s) => {
                        format!("exited with status {}", libc::WEXITSTATUS(s))
                    }
                    _ => "ended".to_string(),
                };
                (
                    Outcome {
                        ok: false,
                        detail: format!("the probe {how} without an answer"),
                        cause: Some("the probe process crashed".into()),
                        fix: None,
                    },
                    elapsed,
                )
            }
        }
    }

    fn try_reap(&self) -> Option<libc::c_int> {
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        let ret = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if ret == -1 && crate::sys::errno() == libc::ECHILD {
            // SIGCHLD is ignored by the caller: the kernel reaped it already.
            return Some(0);
        }
        (ret == self.pid).then_some(status)
    }

    /// SIGKILLs the probe's whole process group and reaps the child, giving up
    /// (leaving a zombie for init) if it is stuck in the kernel beyond 200 ms.
    fn kill(&self) {
        // SAFETY: signals to our own child and its process group.
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
            libc::kill(self.pid, libc::SIGKILL);
        }
        let until = Instant::now() + Duration::from_millis(200);
        while self.try_reap().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    fn timed_out(self) -> (Outcome, Duration) {
        self.kill();
        let ms = self.timeout.as_millis();
        (
            Outcome {
                ok: false,
                detail: format!("timed out after {ms} ms"),
                cause: Some(format!("the probe did not answer within {ms} ms and was killed")),
                fix: Some("run `cordon doctor` again; if it keeps timing out, the kernel is stuck on this layer (check dmesg)".into()),
            },
            self.started.elapsed(),
        )
    }

    fn killed(self, why: &str) -> (Outcome, Duration) {
        self.kill();
        (
            Outcome {
                ok: false,
                detail: why.to_string(),
                cause: None,
                fix: None,
            },
            self.started.elapsed(),
        )
    }
}
