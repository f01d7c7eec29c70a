//! The sandbox's own network namespace (`--net none|allowlist`), made in parallel with the
//! view: creating a network namespace and bringing its loopback up takes about as
//! long as building the whole mount view, and the machine has a core to spare
//! while the supervisor mounts. So the supervisor forks a helper that does it, goes
//! on building the view, then joins the helper's namespace with `setns` (through a
//! pidfd) and lets the helper exit. The helper lives in the sandbox's user
//! namespace, so the namespace it makes is owned by it, and the supervisor may
//! join it. When no core is free (every one busy, by /proc/loadavg's count of
//! runnable threads), the supervisor makes the namespace itself after the view
//! instead: the helper would wait for the scheduler twice, which costs more than
//! the work it hides. For `allowlist`, whichever makes the namespace also opens
//! the egress broker's sockets in it and sends them to the host (see `egress.rs`).

use crate::egress::{self, EndpointRequest};
use crate::sys;
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};
use rustix::thread::{ThreadNameSpaceType, UnshareFlags};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// The sandbox's network namespace in the making; `join` moves the caller into it.
pub enum NetworkMaker<'a> {
    /// A helper process makes it while the supervisor builds the view.
    Helper {
        helper: libc::pid_t,
        ready: OwnedFd,
        release: OwnedFd,
    },
    /// The supervisor makes it itself when it joins: no core is free to make it
    /// in parallel, and a helper would only add two hand-offs, each waiting for
    /// the scheduler (on a machine with every core busy, 1.6 ms where making it
    /// inline costs 0.6).
    Inline {
        endpoints: Option<&'a EndpointRequest>,
        proc: Option<OwnedFd>,
    },
}

const READY: u8 = b'R';

impl<'a> NetworkMaker<'a> {
    /// Forks the helper when a core is free to run it, else leaves the work to
    /// [`NetworkMaker::join`]. Call from the single-threaded supervisor, before the
    /// view is built (the broker's sockets need the host's `/proc`).
    pub fn start(endpoints: Option<&'a EndpointRequest>) -> io::Result<NetworkMaker<'a>> {
        let proc = match endpoints {
            Some(_) => Some(egress::detached_proc()?),
            None => None,
        };
        if !a_core_is_free() {
            return Ok(NetworkMaker::Inline { endpoints, proc });
        }
        let (ready_read, ready_write) = sys::pipe()?;
        let (release_read, release_write) = sys::pipe()?;
        // SAFETY: fork_into's contract: the supervisor, the only caller, is
        // single-threaded, so the helper inherits no lock held by a thread it
        // lacks; the helper ends in `_exit` without returning here.
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
                Ok(NetworkMaker::Helper {
                    helper,
                    ready: ready_read,
                    release: release_write,
                })
            }
        }
    }

    /// Waits for the helper's namespace, joins it, and lets the helper go; or
    /// makes the namespace here.
    pub fn join(self) -> io::Result<()> {
        let (helper, ready, release) = match self {
            NetworkMaker::Helper {
                helper,
                ready,
                release,
            } => (helper, ready, release),
            NetworkMaker::Inline { endpoints, proc } => {
                let made = make_network(endpoints, proc.as_ref());
                // See `start`: a detached mount's close waits for RCU.
                std::mem::forget(proc);
                return made;
            }
        };
        let mut report = [0u8; 5];
        let n = rustix::io::read(&ready, &mut report).map_err(io::Error::from)?;
        let joined = match report[..n] {
            [READY] => join_namespace_of(helper),
            [b'E', a, b, c, d] => Err(io::Error::from_raw_os_error(i32::from_le_bytes([
                a, b, c, d,
            ]))),
            _ => Err(io::Error::other("the network helper died")),
        };
        drop(release);
        if let Some(helper) = Pid::from_raw(helper) {
            let _ = rustix::process::waitpid(Some(helper), WaitOptions::empty());
        }
        joined
    }
}

/// Whether a core is free to run the helper now: no more runnable threads on the
/// machine (the 4th field of /proc/loadavg) than cores this process may use, the
/// supervisor and the launcher (busy making placeholders, then waiting) included.
/// Read once per run; an unreadable answer says yes (the helper, as before).
fn a_core_is_free() -> bool {
    let cores = rustix::thread::sched_getaffinity(None)
        .map(|set| set.count() as usize)
        .unwrap_or(1);
    let Ok(loadavg) = std::fs::read_to_string("/proc/loadavg") else {
        return true;
    };
    let runnable = loadavg
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split('/').next())
        .and_then(|n| n.parse::<usize>().ok());
    runnable.is_none_or(|running| running <= cores)
}

/// A new network namespace for the calling process, its loopback up and, for
/// `allowlist`, the broker's sockets opened in it and sent to the host.
fn make_network(endpoints: Option<&EndpointRequest>, proc: Option<&OwnedFd>) -> io::Result<()> {
    // SAFETY: rustix marks unshare unsafe for UnshareFlags::FILES, which would
    // leave other threads with descriptors this one no longer shares; only a
    // new network namespace is asked for here, in a single-threaded process.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }?;
    loopback_up()?;
    endpoints.map_or(Ok(()), |e| egress::open_and_send(e, proc))
}

fn join_namespace_of(pid: libc::pid_t) -> io::Result<()> {
    let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::other("no network helper"))?;
    let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty())?;
    rustix::thread::move_into_thread_name_spaces(pidfd.as_fd(), ThreadNameSpaceType::NETWORK)?;
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
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    let made = make_network(endpoints, proc.as_ref());
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
    // SAFETY: _exit(2) takes no pointers and does not return; it skips the
    // atexit handlers and stdio buffers of the supervisor this helper was forked
    // from, which are not the helper's to run or flush. (rustix has no stable
    // exit call.)
    unsafe { libc::_exit(0) }
}

/// Brings up `lo` in the current network namespace.
pub fn loopback_up() -> io::Result<()> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let sock = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is a C struct of integers, byte arrays and a union of them,
    // for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads one `struct ifreq` through the pointer, a live
    // local with a NUL-terminated name, and writes nothing back; the socket is
    // owned for the call. (rustix wraps no interface ioctls.)
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
