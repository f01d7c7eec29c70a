//! The few raw system calls that neither rustix nor the standard library wrap
//! (clone without a stack, mount_setattr, seccomp with flags; mount(2) with
//! every argument optional), and thin helpers over rustix for the rest. Each wrapper does one
//! call and returns `io::Result`.

use rustix::event::{PollFd, PollFlags};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// fork(2) with namespace flags: a raw `clone` with no new stack, so the child
/// continues here like after fork. Returns `Some(pid)` in the parent, `None` in the
/// child.
///
/// # Safety
/// The caller must be single-threaded: the child gets a copy of this one thread
/// only, and must not rely on locks other threads could have held.
pub unsafe fn fork_into(flags: libc::c_int) -> io::Result<Option<libc::pid_t>> {
    let flags = (flags | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: clone with a NULL stack gives the child a copy-on-write copy of
    // this address space, as fork does, so neither process can corrupt the
    // other's memory; the pointer arguments are NULL because no
    // CLONE_*TID/PIDFD flag is passed that would make the kernel write through
    // them. What remains unsafe (locks another thread held at the fork) is the
    // caller's obligation, stated above.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match check(ret)? {
        0 => Ok(None),
        pid => Ok(Some(pid as libc::pid_t)),
    }
}

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(2) on the mount tree at `fd` (with `AT_EMPTY_PATH`), recursively.
pub fn mount_setattr_recursive(fd: BorrowedFd<'_>, set: u64, clear: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the kernel reads `size_of::<MountAttr>()` bytes from `&attr`, a
    // live `repr(C)` struct with exactly the layout of `struct mount_attr`
    // (version 0, 32 bytes), and the empty path is a NUL-terminated literal; it
    // writes through neither. `fd` is borrowed, so it stays open for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(ret).map(drop)
}

/// mount(2) with plain C strings; `None` passes NULL.
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is NULL or a NUL-terminated string borrowed for the
    // duration of the call, which mount(2) only reads. (rustix splits mount(2)
    // by operation: `mount` always passes a source and a type, `mount_change`
    // and `mount_remount` pass NULL ones; this one wrapper serves view/build.rs's
    // every kind of call.)
    let ret = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    };
    check(ret as libc::c_long).map(drop)
}

/// Writes all of `data` to the file at `path` (for /proc files: one write call).
pub fn write_file(path: &CStr, data: &[u8]) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
    match rustix::io::write(&fd, data)? {
        n if n == data.len() => Ok(()),
        _ => Err(io::Error::new(io::ErrorKind::WriteZero, "short write")),
    }
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_SPEC_ALLOW, prog)`.
///
/// SPEC_ALLOW keeps the kernel from forcing the Speculative Store Bypass mitigation on
/// every sandboxed process, which costs speed and protects only in-process sandboxes
/// (JIT sandboxes), not a process boundary like ours.
pub fn install_seccomp(program: &[libc::sock_filter]) -> io::Result<()> {
    const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
    const SECCOMP_FILTER_FLAG_SPEC_ALLOW: libc::c_uint = 1 << 2;
    let prog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `program.len()` instructions borrowed for the
    // call; the kernel copies them (it does not write through the `*mut`, which
    // is only the C type) and keeps no pointer after returning. The filter's
    // effect on this process is the point of the call, not a memory hazard.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            &prog as *const libc::sock_fprog,
        )
    };
    check(ret).map(drop)
}

/// A `pollfd` that waits for `fd` to become readable (or hung up).
pub fn readable(fd: BorrowedFd<'_>) -> PollFd<'_> {
    PollFd::from_borrowed_fd(fd, PollFlags::IN)
}

/// Whether poll found `fd` readable or hung up.
pub fn ready(fd: &PollFd<'_>) -> bool {
    fd.revents().intersects(PollFlags::IN | PollFlags::HUP)
}

/// poll(2) with a timeout in milliseconds (-1: none). An interrupted call returns
/// with nothing ready, so callers loop as they would after a timeout.
pub fn poll(fds: &mut [PollFd<'_>], timeout_ms: i32) -> io::Result<()> {
    let timeout = u64::try_from(timeout_ms)
        .ok()
        .map(|ms| rustix::event::Timespec {
            tv_sec: (ms / 1000) as i64,
            tv_nsec: ((ms % 1000) * 1_000_000) as i64,
        });
    match rustix::event::poll(fds, timeout.as_ref()) {
        Err(rustix::io::Errno::INTR) => {
            fds.iter_mut().for_each(PollFd::clear_revents);
            Ok(())
        }
        result => result.map(drop).map_err(io::Error::from),
    }
}

/// A pipe whose ends are closed on exec: `(read, write)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(io::Error::from)
}

/// The errno of the last failed call, as a positive integer.
pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
