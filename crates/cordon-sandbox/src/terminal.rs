//! The pseudo-terminal of `cordon shell`: allocated in the sandbox's own devpts,
//! relayed to cordon's terminal by the supervisor. The host terminal is put in raw
//! mode for the relay and restored by the launcher, even if the sandbox is killed.

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

impl Drop for SavedMode {
    fn drop(&mut self) {
        if let Some(mode) = &self.0 {
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSADRAIN, mode) };
        }
    }
}

pub struct Pty {
    pub master: OwnedFd,
    pub slave_path: CString,
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
            Ok(Pty { master, slave_path })
        }
    }

    /// In the command: a new session whose controlling terminal is the slave, on
    /// stdin, stdout and stderr.
    pub fn attach_slave(&self) -> io::Result<()> {
        unsafe {
            check(libc::setsid())?;
            let slave = check(libc::open(self.slave_path.as_ptr(), libc::O_RDWR))?;
            check(libc::ioctl(slave, libc::TIOCSCTTY, 0))?;
            for target in 0..3 {
                check(libc::dup2(slave, target))?;
            }
            if slave > 2 {
                libc::close(slave);
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
