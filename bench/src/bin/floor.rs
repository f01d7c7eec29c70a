//! `floor WORKSPACE`: the least a fresh-namespace sandbox must do to run
//! `/bin/true`, as a yardstick for bench/spawn. It clones into new user, mount,
//! pid, net, ipc and uts namespaces, maps the uid, makes the whole tree read-only,
//! binds the workspace writable, mounts a fresh /proc and a /tmp tmpfs, brings the
//! loopback up, then forks and execs. No policy, no seccomp, no Landlock, no /dev,
//! no hidden secrets or protected paths: what cordon spends above this is the price
//! of those. Every step is checked; a failure exits with status 1 and says which.

use std::ffi::CString;
use std::io;

fn cstr(s: &str) -> CString {
    // Paths here are literals or a command-line argument, which holds no NUL;
    // were there one, the empty path would make the step fail and say so.
    CString::new(s).unwrap_or_default()
}

fn check(what: &str, ret: libc::c_long) -> libc::c_long {
    if ret < 0 {
        eprintln!("floor: {what}: {}", io::Error::last_os_error());
        // SAFETY: _exit takes no pointers and does not return; in a forked child
        // it must not run the parent's atexit handlers.
        unsafe { libc::_exit(1) };
    }
    ret
}

fn write_file(path: &str, data: &str) {
    // SAFETY: open reads a NUL-terminated path alive for the call; write reads
    // `data.len()` bytes of `data`; the descriptor is this function's own.
    unsafe {
        let fd = check(
            path,
            libc::open(cstr(path).as_ptr(), libc::O_WRONLY) as libc::c_long,
        );
        check(
            path,
            libc::write(fd as i32, data.as_ptr().cast(), data.len()) as libc::c_long,
        );
        libc::close(fd as i32);
    }
}

fn mount(source: &str, target: &str, fstype: Option<&str>, flags: libc::c_ulong) {
    let fstype = fstype.map(cstr);
    // SAFETY: every pointer is NULL or a NUL-terminated string alive for the
    // call, which mount(2) only reads.
    let ret = unsafe {
        libc::mount(
            cstr(source).as_ptr(),
            cstr(target).as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    check(target, ret as libc::c_long);
}

#[repr(C)]
struct MountAttr {
    set: u64,
    clear: u64,
    propagation: u64,
    userns: u64,
}

/// Inside the new namespaces: the view, the loopback, then the command.
///
/// # Safety
/// Call only in the single-threaded child of the clone in `main`: it replaces
/// that process's mounts and ends in exec or `_exit`.
unsafe fn sandbox(workspace: &str, uid: u32, gid: u32) -> ! {
    // SAFETY: the raw calls below take NUL-terminated strings (CStrings alive
    // for each call), live locals for the structs the kernel reads (mount_attr,
    // ifreq) or writes (the wait status), and descriptors this process opened;
    // the child of the fork only execs or _exits.
    unsafe {
        write_file("/proc/self/setgroups", "deny");
        write_file("/proc/self/uid_map", &format!("{uid} {uid} 1"));
        write_file("/proc/self/gid_map", &format!("{gid} {gid} 1"));
        check(
            "make / private",
            libc::mount(
                std::ptr::null(),
                cstr("/").as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) as libc::c_long,
        );
        // OPEN_TREE_CLONE | AT_RECURSIVE, before / is made read-only.
        let tree = check(
            "open_tree",
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                cstr(workspace).as_ptr(),
                1u32 | libc::AT_RECURSIVE as u32 | libc::O_CLOEXEC as u32,
            ),
        );
        let root = check(
            "open /",
            libc::open(cstr("/").as_ptr(), libc::O_PATH | libc::O_CLOEXEC) as libc::c_long,
        );
        let read_only = MountAttr {
            set: 0x7,
            clear: 0,
            propagation: 0,
            userns: 0,
        }; // RDONLY|NOSUID|NODEV
        check(
            "mount_setattr",
            libc::syscall(
                libc::SYS_mount_setattr,
                root,
                cstr("").as_ptr(),
                (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as u32,
                &read_only,
                std::mem::size_of::<MountAttr>(),
            ),
        );
        check(
            "move_mount",
            libc::syscall(
                libc::SYS_move_mount,
                tree,
                cstr("").as_ptr(),
                libc::AT_FDCWD,
                cstr(workspace).as_ptr(),
                0x4u32,
            ),
        ); // F_EMPTY_PATH
        mount(
            "tmpfs",
            "/tmp",
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
        );
        mount(
            "proc",
            "/proc",
            Some("proc"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        );
        let sock = check(
            "socket",
            libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) as libc::c_long,
        );
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        req.ifr_ifru.ifru_flags = libc::IFF_UP as libc::c_short;
        check(
            "loopback up",
            libc::ioctl(sock as i32, libc::SIOCSIFFLAGS, &req) as libc::c_long,
        );
        let child = check("fork", libc::fork() as libc::c_long);
        if child == 0 {
            let program = cstr("/bin/true");
            let argv = [program.as_ptr(), std::ptr::null()];
            libc::execv(program.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
        let mut status = 0;
        libc::waitpid(child as i32, &mut status, 0);
        libc::_exit(libc::WEXITSTATUS(status))
    }
}

fn main() {
    let Some(workspace) = std::env::args().nth(1) else {
        eprintln!("usage: floor WORKSPACE");
        std::process::exit(2);
    };
    // SAFETY: this program is single-threaded, so the child of a stackless clone
    // (a fork with new namespaces) may run `sandbox`, which ends in exec or
    // _exit; the NULL pointer arguments ask the kernel to write nothing, and the
    // wait status is a live local.
    unsafe {
        let (uid, gid) = (libc::geteuid(), libc::getegid());
        let flags = libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::SIGCHLD;
        let pid = check(
            "clone",
            libc::syscall(
                libc::SYS_clone,
                flags as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            ),
        );
        if pid == 0 {
            sandbox(&workspace, uid, gid);
        }
        let mut status = 0;
        libc::waitpid(pid as i32, &mut status, 0);
        std::process::exit(libc::WEXITSTATUS(status));
    }
}
