//! The launcher's wait for the sandbox: forwarding signals sent to cordon, reading
//! the report pipe, and killing the whole sandbox (its PID 1) on timeout.
//!
//! The wait ends as soon as the supervisor reports the command's status: by then
//! every process that ran sandboxed code has been killed and reaped, and only the
//! supervisor is left, tearing down the namespaces on its way out (a few tenths of
//! a millisecond nobody needs to wait for). When the sandbox has a cgroup, the
//! wait goes on until the supervisor is reaped, so that the cgroup can be removed.

use crate::error::SandboxError;
use crate::report::Report;
use crate::signals::{self, SignalFd, SignalInfo, forwardable};
use crate::sys;
use crate::terminal::{self, SavedMode};
use rustix::process::{Pid, WaitOptions, WaitStatus};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

pub enum Waited {
    /// What the sandbox reported, and the supervisor's own status if it was reaped.
    Ended {
        report: Report,
        supervisor: Option<i32>,
    },
    TimedOut(Duration),
}

pub struct Waiter<'a> {
    pub supervisor: libc::pid_t,
    pub signals: &'a SignalFd,
    pub report: OwnedFd,
    pub timeout: Option<Duration>,
    /// Wait until the supervisor is reaped even after it reported.
    pub until_reaped: bool,
    /// With a pty: the host terminal's own mode, given back while the command is
    /// stopped (job control, see terminal.rs).
    pub pty: Option<&'a SavedMode>,
    /// Where the signals cordon passes on go instead of the supervisor (a
    /// server of the view: to the command it runs elsewhere).
    pub forward: Option<&'a (dyn Fn(i32) + Send + Sync)>,
    /// A server of the view's reports that the command it relays cordon's
    /// terminal to stopped (a byte each; see `terminal::ServedTerminal`).
    pub stops: Option<BorrowedFd<'a>>,
}

impl Waiter<'_> {
    pub fn wait(self) -> Result<Waited, SandboxError> {
        let fail = |e: io::Error| SandboxError::io("waiting for the sandbox", e);
        let deadline = self.timeout.map(|t| (Instant::now() + t, t));
        let mut bytes = Vec::new();
        let mut report_open = true;
        let mut stops_handled = 0;
        let mut stops_open = true;
        loop {
            if let Some(status) = try_reap(self.supervisor).map_err(fail)? {
                if report_open {
                    read_to_end(&self.report, &mut bytes);
                }
                return Ok(Waited::Ended {
                    report: Report::parse(&bytes),
                    supervisor: Some(status),
                });
            }
            if !self.until_reaped && Report::parse(&bytes).exited.is_some() {
                return Ok(Waited::Ended {
                    report: Report::parse(&bytes),
                    supervisor: None,
                });
            }
            let wait_for = deadline.map(|(at, _)| at.saturating_duration_since(Instant::now()));
            if let (Some(Duration::ZERO), Some((_, timeout))) = (wait_for, deadline) {
                kill_and_reap(self.supervisor);
                return Ok(Waited::TimedOut(timeout));
            }
            // The signals, the server's stops, the report: the report last,
            // left out once closed. (Without stops, their slot holds the
            // signals again.)
            let stops = self.stops.filter(|_| stops_open);
            let mut fds = [
                sys::readable(self.signals.as_fd()),
                sys::readable(stops.unwrap_or(self.signals.as_fd())),
                sys::readable(self.report.as_fd()),
            ];
            let ms = wait_for.map_or(-1, |t| t.as_millis().clamp(1, i32::MAX as u128) as i32);
            let count = if report_open { 3 } else { 2 };
            sys::poll(&mut fds[..count], ms).map_err(fail)?;
            if let Some(stops) = stops.filter(|_| !fds[1].revents().is_empty()) {
                let mut ignored = Vec::new();
                stops_open = read_some(stops, &mut ignored);
                if !ignored.is_empty() {
                    self.stop_with_the_command().map_err(fail)?;
                }
            }
            if report_open && !fds[2].revents().is_empty() {
                report_open = read_some(&self.report, &mut bytes);
                let stops = Report::parse(&bytes).stops;
                if stops > stops_handled {
                    stops_handled = stops;
                    self.stop_with_the_command().map_err(fail)?;
                }
            }
            while let Some(info) = self.signals.read().map_err(fail)? {
                self.pass_on(&info);
            }
        }
    }

    /// Passes a signal cordon received on to the sandbox: those sent to cordon;
    /// with a pty also a resize and a continue, which the kernel sends to cordon's
    /// group only (the supervisor leads a session of its own).
    fn pass_on(&self, info: &SignalInfo) {
        let pass = match info.signo {
            libc::SIGCHLD => false,
            // A server of the view decides what a resize means for its command.
            libc::SIGWINCH => self.pty.is_some() || self.forward.is_some(),
            libc::SIGCONT => self.pty.is_some(),
            _ => forwardable(info),
        };
        match self.forward {
            Some(forward) if pass => forward(info.signo),
            None if pass => signals::send(self.supervisor, info.signo),
            _ => {}
        }
    }

    /// The command stopped itself (Ctrl+Z in pi): hand the terminal back to the
    /// host shell in its own mode and stop as its job, as the command would have
    /// without cordon; once continued in the foreground, take the terminal back
    /// and continue the command. Continued in the background (`bg`), stop again,
    /// as a program that needs the terminal does (SIGTTOU).
    fn stop_with_the_command(&self) -> io::Result<()> {
        let Some(saved) = self.pty.filter(|s| s.is_terminal()) else {
            // No terminal to hand back: continue the command at once.
            self.continue_command();
            return Ok(());
        };
        saved.restore();
        let mut signal = libc::SIGTSTP;
        loop {
            // Stops this whole job, as the terminal's Ctrl+Z would. The kernel
            // discards it if the job cannot stop (an orphaned process group, or
            // the signal ignored): then no SIGCONT follows.
            signals::send(0, signal);
            let mut continued = false;
            while let Some(info) = self.signals.read()? {
                if info.signo == libc::SIGCONT {
                    continued = true;
                } else {
                    self.pass_on(&info);
                }
            }
            if !continued || terminal::in_foreground() {
                break;
            }
            signal = libc::SIGTTOU;
        }
        if terminal::in_foreground() {
            terminal::make_raw(rustix::stdio::stdin());
        }
        self.continue_command();
        Ok(())
    }

    /// Continues the stopped command: the sandbox's, or the server's.
    fn continue_command(&self) {
        match self.forward {
            Some(forward) => forward(libc::SIGCONT),
            None => signals::send(self.supervisor, libc::SIGCONT),
        }
    }
}

/// Reads what is available; false at end of file.
fn read_some(fd: impl AsFd, bytes: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    match rustix::io::read(fd, &mut buf) {
        Ok(0) => false,
        Ok(n) => {
            bytes.extend_from_slice(&buf[..n]);
            true
        }
        Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => true,
        Err(_) => false,
    }
}

/// After the supervisor is gone every writer is closed, so this ends.
fn read_to_end(fd: &OwnedFd, bytes: &mut Vec<u8>) {
    while read_some(fd, bytes) {}
}

/// Exit status of `pid` if it has ended, mapped to 128+N for a signal.
fn try_reap(pid: libc::pid_t) -> io::Result<Option<i32>> {
    let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::other("no supervisor to wait for"))?;
    let waited = rustix::process::waitpid(Some(pid), WaitOptions::NOHANG)?;
    Ok(waited.map(|(_, status)| decode_status(status)))
}

/// A wait status as an exit status: the code, or 128+N for signal N.
pub fn decode_status(status: WaitStatus) -> i32 {
    if let Some(code) = status.exit_status() {
        code
    } else if let Some(signal) = status.terminating_signal() {
        128 + signal
    } else {
        125
    }
}

pub fn kill_and_reap(pid: libc::pid_t) {
    signals::send(pid, libc::SIGKILL);
    if let Some(pid) = Pid::from_raw(pid) {
        let _ = rustix::process::waitpid(Some(pid), WaitOptions::empty());
    }
}
