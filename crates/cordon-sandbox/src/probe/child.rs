//! Running one probe in a forked child with a deadline.

use super::Outcome;
use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
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
    // into the caller's code. It allocates, which is sound after a fork with
    // glibc's and musl's allocators (their fork handlers reset the allocator's
    // locks, whatever other threads held); see the module docs on calling
    // `run_all` single-threaded for other allocators.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(read);
        let _ = rustix::process::setpgid(None, None);
        let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
        // The caller may block signals (the KVM probe needs SIGALRM) or
        // ignore SIGCHLD (probes wait for their own children).
        crate::signals::unblock_all(&[libc::SIGCHLD]);
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
    let child = Pid::from_raw(pid);
    let _ = rustix::process::setpgid(child, child);
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
            let mut fds = [crate::sys::readable(self.read.as_fd())];
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // An interrupted poll comes back with nothing ready, as a timeout does.
            if crate::sys::poll(&mut fds, ms).is_err() {
                return self.killed("polling the probe's pipe failed");
            }
            if fds[0].revents().is_empty() {
                continue;
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
                let status = status.flatten();
                let how = match (
                    status.and_then(WaitStatus::terminating_signal),
                    status.and_then(WaitStatus::exit_status),
                ) {
                    (Some(signal), _) => format!("was killed by signal {signal}"),
                    (_, Some(code)) => format!("exited with status {code}"),
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

    /// `Some` once the child is reaped: with its status, or `None` when the
    /// kernel reaped it (the caller ignores SIGCHLD).
    fn try_reap(&self) -> Option<Option<WaitStatus>> {
        match rustix::process::waitpid(Pid::from_raw(self.pid), WaitOptions::NOHANG) {
            Ok(Some((_, status))) => Some(Some(status)),
            Err(rustix::io::Errno::CHILD) => Some(None),
            Ok(None) | Err(_) => None,
        }
    }

    /// SIGKILLs the probe's whole process group and reaps the child, giving up
    /// (leaving a zombie for init) if it is stuck in the kernel beyond 200 ms.
    fn kill(&self) {
        crate::signals::send(-self.pid, libc::SIGKILL);
        crate::signals::send(self.pid, libc::SIGKILL);
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
