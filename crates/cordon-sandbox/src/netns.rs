//! The sandbox's own network namespace (`--net none|allowlist`), made in parallel with the
//! view: creating a network namespace and bringing its loopback up takes about as
//! long as building the whole mount view, and the machine has a core to spare
//! while the supervisor mounts. So the supervisor forks a helper that does it, goes
//! on building the view, then joins the helper's namespace with `setns` (through a
//! pidfd) and lets the helper exit. The helper lives in the sandbox's user
//! namespace, so the namespace it makes is owned by it, and the supervisor may
//! join it. For `allowlist`, the helper also opens the egress broker's sockets in
//! the namespace and sends them to the host (see `egress.rs`).

use crate::egress::{self, EndpointRequest};
use crate::sys;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A helper making the network namespace; `join` moves the caller into it.
pub struct NetworkMaker {
    helper: libc::pid_t,
    ready: OwnedFd,
    release: OwnedFd,
}

const READY: u8 = b'R';

impl NetworkMaker {
    /// Forks the helper. Call from the single-threaded supervisor.
    pub fn start(endpoints: Option<&EndpointRequest>) -> io::Result<NetworkMaker> {
        let proc = match endpoints {
            Some(_) => Some(egress::detached_proc()?),
            None => None,
        };
        let (ready_read, ready_write) = sys::pipe()?;
        let (release_read, release_write) = sys::pipe()?;
        // SAFETY: the supervisor is single-threaded.
        match unsafe { sys::fork_into(0) }? {
            None => {
                drop(ready_read);
                drop(release_write);
                helper(ready_write, release_read, endpoints, proc)
            }
            Some(helper) => {
                // Closing a detached mount waits for an RCU grace period; this
                // one goes when the supervisor exits.
                std::mem::forget(proc);
                Ok(NetworkMaker {
                    helper,
                    ready: ready_read,
                    release: release_write,
                })
            }
        }
    }

    /// Waits for the namespace, joins it, and lets the helper go.
    pub fn join(self) -> io::Result<()> {
        let mut report = [0u8; 5];
        let n = rustix::io::read(&self.ready, &mut report).map_err(io::Error::from)?;
        let joined = match report[..n] {
            [READY] => join_namespace_of(self.helper),
            [b'E', a, b, c, d] => Err(io::Error::from_raw_os_error(i32::from_le_bytes([
                a, b, c, d,
            ]))),
            _ => Err(io::Error::other("the network helper died")),
        };
        drop(self.release);
        let mut status = 0;
        unsafe { libc::waitpid(self.helper, &mut status, 0) };
        joined
    }
}

fn join_namespace_of(pid: libc::pid_t) -> io::Result<()> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if unsafe { libc::setns(pidfd.as_raw_fd(), libc::CLONE_NEWNET) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The helper: a new network namespace with its loopback up, kept alive until the
/// supervisor has joined it (end of file on `release`).
fn helper(
    ready: OwnedFd,
    release: OwnedFd,
    endpoints: Option<&EndpointRequest>,
    proc: Option<OwnedFd>,
) -> ! {
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let made = if unsafe { libc::unshare(libc::CLONE_NEWNET) } == -1 {
        Err(io::Error::last_os_error())
    } else {
        loopback_up()
            .and_then(|()| endpoints.map_or(Ok(()), |e| egress::open_and_send(e, proc.as_ref())))
    };
    let _ = match made {
        Ok(()) => rustix::io::write(&ready, &[READY]),
        Err(e) => {
            let code = e.raw_os_error().unwrap_or(libc::EIO).to_le_bytes();
            rustix::io::write(&ready, &[b'E', code[0], code[1], code[2], code[3]])
        }
    };
    let mut byte = [0u8; 1];
    while matches!(
        rustix::io::read(&release, &mut byte),
        Err(rustix::io::Errno::INTR)
    ) {}
    unsafe { libc::_exit(0) }
}

/// Brings up `lo` in the current network namespace.
pub(crate) fn loopback_up() -> io::Result<()> {
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock == -1 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        let ret = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
        let err = io::Error::last_os_error();
        libc::close(sock);
        if ret == -1 { Err(err) } else { Ok(()) }
    }
}
