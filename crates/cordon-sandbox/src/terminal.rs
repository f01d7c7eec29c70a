//! The pseudo-terminal of `cordon shell` and interactive `cordon pi`: allocated in
//! the sandbox's own devpts, relayed to cordon's terminal by the supervisor. The
//! host terminal is put in raw mode for the relay and restored by the launcher,
//! even if the sandbox is killed.
//!
//! Job control passes through. The supervisor leads the pty's session, and the
//! command runs in a process group of its own, the pty's foreground group: a child
//! of a process in the same session, so its group is not orphaned and a stop
//! signal stops it (the kernel discards SIGTSTP to an orphaned group, which is
//! what a session leader's group is; pi suspends with `kill(0, SIGTSTP)` and would
//! hang). When the command stops, the supervisor tells the launcher, which gives
//! the host terminal back in its own mode and stops itself as a job of the host
//! shell; when the shell continues it (`fg`), the launcher puts the terminal back
//! in raw mode and continues the command.

use crate::launch::Terminal;
use rustix::pty::OpenptFlags;
use rustix::stdio::{stdin, stdout};
use rustix::termios::{self, OptionalActions, Termios};
use std::ffi::CString;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

/// The host terminal's mode before the run; restored on drop.
pub struct SavedMode(Option<Termios>);

impl SavedMode {
    pub fn capture(terminal: Terminal) -> SavedMode {
        if terminal != Terminal::Pty {
            return SavedMode(None);
        }
        SavedMode(termios::tcgetattr(stdin()).ok())
    }
}

impl SavedMode {
    /// Puts the host terminal back in the mode it had before the run.
    pub fn restore(&self) {
        if let Some(mode) = &self.0 {
            let _ = termios::tcsetattr(stdin(), OptionalActions::Drain, mode);
        }
    }

    /// Whether there is a terminal mode to manage (a pty run on a terminal).
    pub fn is_terminal(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for SavedMode {
    fn drop(&mut self) {
        self.restore();
    }
}

/// cordon's terminal relayed by a server of the view to the command it runs
/// elsewhere (the VM backend's guest), in raw mode. Job control is the OS
/// backend's own: when the server says its command stopped (a byte on the
/// pipe whose other end [`ServedTerminal::enter`] returns), the launcher gives
/// the terminal back in its own mode and stops as a job of the host shell; on
/// `fg` it puts the terminal back in raw mode and passes SIGCONT to the server.
/// The mode comes back when this is dropped, whatever happened.
pub struct ServedTerminal {
    pub(crate) saved: SavedMode,
    pub(crate) stops: OwnedFd,
}

impl ServedTerminal {
    /// Puts cordon's terminal (its stdin) in raw mode: the terminal, and the
    /// end on which the server reports each stop of its command (a byte).
    /// `None` when stdin is no terminal.
    pub fn enter() -> io::Result<Option<(ServedTerminal, OwnedFd)>> {
        let saved = SavedMode::capture(Terminal::Pty);
        if !saved.is_terminal() {
            return Ok(None);
        }
        let (stops, report) = crate::sys::pipe()?;
        make_raw(stdin());
        Ok(Some((ServedTerminal { saved, stops }, report)))
    }
}

/// Whether this process's group is the foreground group of the terminal on stdin.
pub fn in_foreground() -> bool {
    termios::tcgetpgrp(stdin()).is_ok_and(|group| group == rustix::process::getpgrp())
}

pub struct Pty {
    pub master: OwnedFd,
    pub slave_path: CString,
    /// The slave, opened by [`Pty::lead_session`] (close-on-exec).
    slave: Option<OwnedFd>,
}

impl Pty {
    /// Opens a new pseudo-terminal pair in the current view's /dev/pts.
    pub fn open() -> io::Result<Pty> {
        let master =
            rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        rustix::pty::unlockpt(&master)?;
        let slave_path = rustix::pty::ptsname(&master, Vec::new())?;
        Ok(Pty {
            master,
            slave_path,
            slave: None,
        })
    }

    /// In the supervisor: a new session whose controlling terminal is the slave,
    /// so that the command, a process group of this session, has job control.
    pub fn lead_session(&mut self) -> io::Result<()> {
        use rustix::fs::{Mode, OFlags};
        rustix::process::setsid()?;
        let slave = rustix::fs::open(
            self.slave_path.as_c_str(),
            OFlags::RDWR | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rustix::process::ioctl_tiocsctty(&slave)?;
        self.slave = Some(slave);
        Ok(())
    }

    /// In the command, before exec (system calls only, no allocation: it shares
    /// the supervisor's memory): a process group of its own, made the terminal's
    /// foreground group, and the slave on stdin, stdout and stderr. Every signal
    /// is blocked here, so `tcsetpgrp` from a background group raises no SIGTTOU.
    pub fn attach_slave(&self) -> io::Result<()> {
        let Some(slave) = &self.slave else {
            return Err(io::Error::other("the pty has no session"));
        };
        rustix::process::setpgid(None, None)?;
        termios::tcsetpgrp(slave, rustix::process::getpid())?;
        rustix::stdio::dup2_stdin(slave)?;
        rustix::stdio::dup2_stdout(slave)?;
        rustix::stdio::dup2_stderr(slave)?;
        Ok(())
    }

    /// Gives the pty the host terminal's size (at start and on SIGWINCH).
    pub fn copy_window_size(&self) {
        if let Ok(size) = termios::tcgetwinsize(stdin()) {
            let _ = termios::tcsetwinsize(&self.master, size);
        }
    }
}

/// Puts the terminal on `fd` in raw mode so every key reaches the sandbox's pty.
pub fn make_raw(fd: BorrowedFd<'_>) {
    if let Ok(mut mode) = termios::tcgetattr(fd) {
        mode.make_raw();
        let _ = termios::tcsetattr(fd, OptionalActions::Drain, &mode);
    }
}

/// Copies what the master has ready to cordon's stdout, without waiting.
pub fn drain_ready(master: BorrowedFd<'_>) {
    loop {
        let mut fd = crate::sys::readable(master);
        if crate::sys::poll(std::slice::from_mut(&mut fd), 0).is_err()
            || !crate::sys::ready(&fd)
            || !pump(master, stdout())
        {
            return;
        }
    }
}

/// Copies what is readable on `from` to `to`. Returns false at end of input.
pub fn pump(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 16 * 1024];
    let n = match rustix::io::read(from, &mut buf) {
        Ok(0) => return false,
        Ok(n) => n,
        Err(e) => return e == rustix::io::Errno::INTR,
    };
    let mut rest = &buf[..n];
    while !rest.is_empty() {
        match rustix::io::write(to, rest) {
            Ok(0) => return false,
            Ok(w) => rest = &rest[w..],
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
    true
}
