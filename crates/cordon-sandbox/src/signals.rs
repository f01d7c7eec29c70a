//! Signals as events: the launcher and the supervisor block the signals they care
//! about and read them from a signalfd, so waiting, forwarding and relaying a
//! terminal are one poll loop with no handlers.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Signals passed on to the sandboxed command when cordon receives them.
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

pub struct SignalInfo {
    pub signo: libc::c_int,
    pub code: i32,
}

/// Whether a signal cordon received should be passed on to the sandbox. Signals
/// sent by a process (kill, sigqueue) are. Signals the kernel generates for a
/// terminal's foreground process group (Ctrl-C, Ctrl-\) are not: they reach the
/// whole group, the sandboxed command included, so forwarding would deliver them
/// twice. A hangup is, though: the kernel sends it to the session leader only.
pub fn forwardable(info: &SignalInfo) -> bool {
    info.code <= 0 || info.signo == libc::SIGHUP
}

pub struct SignalFd {
    fd: OwnedFd,
}

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

impl SignalFd {
    /// Blocks SIGCHLD, SIGWINCH, SIGCONT and the forwarded signals, and reads them
    /// from a signalfd instead. Children inherit the mask: the command unblocks all.
    /// (A blocked SIGCONT still continues a stopped process; read from the
    /// signalfd, it tells that this happened.)
    ///
    /// SIGCHLD goes back to its default disposition first: a parent that ignored
    /// it passes that on across exec, and with SIGCHLD ignored the kernel reaps
    /// children itself and sends no signal, so cordon would wait forever.
    pub fn block_forwardable() -> io::Result<SignalFd> {
        let mut all = FORWARDED.to_vec();
        all.extend([libc::SIGCHLD, libc::SIGWINCH, libc::SIGCONT]);
        let set = sigset(&all);
        unsafe {
            libc::signal(libc::SIGCHLD, libc::SIG_DFL);
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) == -1 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(SignalFd {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    /// Reads one pending signal, if any (non-blocking).
    pub fn read(&self) -> io::Result<Option<SignalInfo>> {
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n == -1 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(e)
            };
        }
        Ok(Some(SignalInfo {
            signo: info.ssi_signo as libc::c_int,
            code: info.ssi_code,
        }))
    }
}

impl AsFd for SignalFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// In the command, just before exec: nothing blocked, SIGPIPE back to its default
/// (Rust's runtime ignores it, and ignored signals survive exec).
pub fn reset_for_exec() {
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
