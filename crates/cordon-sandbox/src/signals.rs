//! Signals as events: the launcher and the supervisor block the signals they care
//! about and read them from a signalfd, so waiting, forwarding and relaying a
//! terminal are one poll loop with no handlers.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

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

/// kill(2) with its conventions for `pid`: above 0 a process, below 0 the process
/// group -pid, 0 this process's own group. A target already gone is no error
/// worth reporting (the caller reaps or has reaped it), so failures are ignored;
/// a number that is not a named signal is not sent.
pub fn send(pid: libc::pid_t, signo: libc::c_int) {
    use rustix::process::{Pid, Signal};
    let Some(signal) = Signal::from_named_raw(signo) else {
        return;
    };
    let _ = match pid.cmp(&0) {
        std::cmp::Ordering::Greater => {
            Pid::from_raw(pid).map(|p| rustix::process::kill_process(p, signal))
        }
        std::cmp::Ordering::Less => pid
            .checked_neg()
            .and_then(Pid::from_raw)
            .map(|group| rustix::process::kill_process_group(group, signal)),
        std::cmp::Ordering::Equal => Some(rustix::process::kill_current_process_group(signal)),
    };
}

pub struct SignalFd {
    fd: OwnedFd,
}

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain bits, so all-zero is a valid value; sigemptyset
    // and sigaddset write only into the set they are given, a local here, and
    // sigaddset refuses (EINVAL, ignored) a number that is not a signal.
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
        // SAFETY: (rustix has no public signal-mask or signalfd API.) SIG_DFL
        // installs no handler, so no code of ours can run asynchronously; the
        // mask change is this thread's own (the launcher and the supervisor are
        // single-threaded when they call this), and `set` is a live local the
        // kernel only reads. A new signalfd is owned at once, by nobody else.
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
        // One `struct signalfd_siginfo`, read as bytes (a signalfd read returns
        // whole records or fails); its two fields of interest are 32-bit.
        use libc::signalfd_siginfo as Info;
        let mut info = [0u8; std::mem::size_of::<Info>()];
        match rustix::io::read(&self.fd, &mut info) {
            Ok(n) if n == info.len() => {
                let field = |at: usize| [info[at], info[at + 1], info[at + 2], info[at + 3]];
                Ok(Some(SignalInfo {
                    signo: u32::from_ne_bytes(field(std::mem::offset_of!(Info, ssi_signo)))
                        as libc::c_int,
                    code: i32::from_ne_bytes(field(std::mem::offset_of!(Info, ssi_code))),
                }))
            }
            Ok(_) => Err(io::Error::other("a short read from the signalfd")),
            Err(rustix::io::Errno::AGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
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
    unblock_all(&[libc::SIGPIPE]);
}

/// Unblocks every signal of this thread and gives `defaults` their default
/// disposition. No allocation: it runs in a vfork child that shares the
/// supervisor's memory, and in a forked probe child.
pub fn unblock_all(defaults: &[libc::c_int]) {
    let empty = sigset(&[]);
    // SAFETY: sigprocmask and signal are async-signal-safe system calls that
    // touch only this thread's mask and the dispositions named, reading a live
    // local set; SIG_DFL installs no handler. (rustix has no public signal-mask
    // API.)
    unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        for &signal in defaults {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
}
