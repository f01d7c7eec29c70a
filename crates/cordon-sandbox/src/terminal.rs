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
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The host terminal's mode before the run; restored on drop.
pub struct SavedMode(Option<libc::termios>);

impl SavedMode {
    pub fn capture(terminal: Terminal) -> SavedMode {
        if terminal != Terminal::Pty {
            return SavedMode(None);
        }
        let mut mode: libc::termios = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut mode) } == 0;
        SavedMode(ok.then_some(mode))
    }
}

impl SavedMode {
    /// Puts the host terminal back in the mode it had before the run.
    pub fn restore(&self) {
        if let Some(mode) = &self.0 {
            // SAFETY: a termios captured by tcgetattr, on cordon's own stdin.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSADRAIN, mode) };
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

/// Whether this process's group is the foreground group of the terminal on stdin.
pub fn in_foreground() -> bool {
    // SAFETY: plain queries of this process's own state.
    unsafe { libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp() }
}

pub struct Pty {
    pub master: OwnedFd,
    pub slave_path: CString,
    /// The slave, opened by [`Pty::lead_session`] (close-on-exec).
    slave: Option<OwnedFd>,
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Pty {
    /// Opens a new pseudo-terminal pair in the current view's /dev/pts.
    pub fn open() -> io::Result<Pty> {
        unsafe {
            let fd = check(libc::open(
                c"/dev/ptmx".as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            ))?;
            let master = OwnedFd::from_raw_fd(fd);
            let unlock: libc::c_int = 0;
            check(libc::ioctl(fd, libc::TIOCSPTLCK, &unlock))?;
            let mut number: libc::c_uint = 0;
            check(libc::ioctl(fd, libc::TIOCGPTN, &mut number))?;
            let slave_path = CString::new(format!("/dev/pts/{number}")).expect("no NUL");
            Ok(Pty {
                master,
                slave_path,
                slave: None,
            })
        }
    }

    /// In the supervisor: a new session whose controlling terminal is the slave,
    /// so that the command, a process group of this session, has job control.
    pub fn lead_session(&mut self) -> io::Result<()> {
        // SAFETY: plain system calls; the descriptor is owned at once.
        unsafe {
            check(libc::setsid())?;
            let slave = check(libc::open(
                self.slave_path.as_ptr(),
                libc::O_RDWR | libc::O_CLOEXEC,
            ))?;
            let slave = OwnedFd::from_raw_fd(slave);
            check(libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0))?;
            self.slave = Some(slave);
        }
        Ok(())
    }

    /// In the command, before exec (raw system calls only: it shares the
    /// supervisor's memory): a process group of its own, made the terminal's
    /// foreground group, and the slave on stdin, stdout and stderr. Every signal
    /// is blocked here, so `tcsetpgrp` from a background group raises no SIGTTOU.
    pub fn attach_slave(&self) -> io::Result<()> {
        let Some(slave) = &self.slave else {
            return Err(io::Error::other("the pty has no session"));
        };
        let slave = slave.as_raw_fd();
        // SAFETY: plain system calls on descriptors this process holds.
        unsafe {
            check(libc::setpgid(0, 0))?;
            check(libc::tcsetpgrp(slave, libc::getpid()))?;
            for target in 0..3 {
                check(libc::dup2(slave, target))?;
            }
        }
        Ok(())
    }

    /// Gives the pty the host terminal's size (at start and on SIGWINCH).
    pub fn copy_window_size(&self) {
        unsafe {
            let mut size: libc::winsize = std::mem::zeroed();
            if libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut size) == 0 {
                libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size);
            }
        }
    }
}

/// Puts the host terminal in raw mode so every key reaches the sandbox's pty.
pub fn make_raw(fd: RawFd) {
    unsafe {
        let mut mode: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut mode) == 0 {
            libc::cfmakeraw(&mut mode);
            libc::tcsetattr(fd, libc::TCSADRAIN, &mode);
        }
    }
}

/// Copies what the master has ready to cordon's stdout, without waiting.
pub fn drain_ready(master: RawFd) {
    loop {
        let mut fd = crate::sys::readable(master);
        if crate::sys::poll(std::slice::from_mut(&mut fd), 0).is_err()
            || fd.revents & (libc::POLLIN | libc::POLLHUP) == 0
            || !pump(master, libc::STDOUT_FILENO)
        {
            return;
        }
    }
}

/// Copies what is readable on `from` to `to`. Returns false at end of input.
pub fn pump(from: RawFd, to: RawFd) -> bool {
    let mut buf = [0u8; 16 * 1024];
    let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return n == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
    }
    let mut rest = &buf[..n as usize];
    while !rest.is_empty() {
        let w = unsafe { libc::write(to, rest.as_ptr().cast(), rest.len()) };
        if w <= 0 {
            if w == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        rest = &rest[w as usize..];
    }
    true
}
