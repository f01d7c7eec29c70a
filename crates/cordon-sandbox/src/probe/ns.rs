//! Namespace probes (each runs in a probe child) and the diagnosis of a refused
//! user namespace.

use super::Outcome;
use super::host::{container, errno_text, seccomp_mode, sysctl, write_file};
use std::ffi::CStr;
use std::path::Path;

const APPARMOR_FIX: &str = "give cordon an AppArmor profile that allows user namespaces: write /etc/apparmor.d/cordon containing\n\
    abi <abi/4.0>,\n\
    include <tunables/global>\n\
    profile cordon /usr/local/bin/cordon flags=(unconfined) {\n\
      userns,\n\
    }\n\
(with cordon's real path), then `sudo apparmor_parser -r /etc/apparmor.d/cordon`; \
or allow it for every program: `sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0` \
(persist in /etc/sysctl.d/60-userns.conf)";

fn apparmor_restricts() -> bool {
    !rustix::process::geteuid().is_root()
        && sysctl("kernel/apparmor_restrict_unprivileged_userns") == Some(1)
}

fn apparmor_cause(what: &str) -> String {
    format!(
        "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1, \
         the default since Ubuntu 23.10/24.04): {what}"
    )
}

/// Why creating a user namespace failed with `errno`, and how to fix it: for the
/// backend when its own clone fails. Cheap: reads a few sysctls and files, no
/// fork.
pub fn diagnose_userns_failure(errno: i32) -> (String, String) {
    let root = rustix::process::geteuid().is_root();
    let e = errno_text(errno);
    if apparmor_restricts() {
        return (
            apparmor_cause(&format!("creating or using the namespace failed with {e}")),
            APPARMOR_FIX.to_string(),
        );
    }
    if sysctl("user/max_user_namespaces") == Some(0) {
        return (
            format!("user namespaces are disabled: user.max_user_namespaces=0 ({e})"),
            "`sudo sysctl user.max_user_namespaces=15000` and persist it in /etc/sysctl.d/60-userns.conf".into(),
        );
    }
    if !root && sysctl("kernel/unprivileged_userns_clone") == Some(0) {
        return (
            format!(
                "unprivileged user namespaces are disabled: kernel.unprivileged_userns_clone=0 (Debian's and some older kernels' switch) ({e})"
            ),
            "`sudo sysctl kernel.unprivileged_userns_clone=1` and persist it in /etc/sysctl.d/60-userns.conf".into(),
        );
    }
    if !root && sysctl("kernel/userns_restrict") == Some(1) {
        return (
            format!(
                "unprivileged user namespaces are disabled: kernel.userns_restrict=1 (linux-hardened) ({e})"
            ),
            "`sudo sysctl kernel.userns_restrict=0`".into(),
        );
    }
    match errno {
        libc::ENOSPC => {
            let max = sysctl("user/max_user_namespaces")
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into());
            (
                format!(
                    "too many user namespaces: the per-user limit user.max_user_namespaces={max} is used up, or namespaces are nested 32 deep ({e})"
                ),
                "raise the limit: `sudo sysctl user.max_user_namespaces=15000`; if cordon runs inside another sandbox, run it outside".into(),
            )
        }
        libc::EUSERS => (
            format!("user namespaces are nested too deep (32 levels) ({e})"),
            "run cordon outside the sandbox or container it is in".into(),
        ),
        libc::EINVAL if !Path::new("/proc/self/ns/user").exists() => (
            format!("the kernel is built without user namespaces (CONFIG_USER_NS) ({e})"),
            "use a kernel with CONFIG_USER_NS=y (every mainstream distribution kernel has it)"
                .into(),
        ),
        libc::EINVAL => (
            format!(
                "the kernel refused CLONE_NEWUSER ({e}): the caller is multi-threaded or chrooted, which user namespaces forbid"
            ),
            "run cordon from a single-threaded process outside a chroot".into(),
        ),
        libc::ENOMEM => (
            format!("out of memory, or the pid/user namespace limits are exhausted ({e})"),
            "retry; check `sysctl user` limits and free memory".into(),
        ),
        libc::EPERM | libc::EACCES => {
            if let Some(kind) = container() {
                let seccomp = if seccomp_mode() == Some(2) {
                    " and a seccomp filter is active"
                } else {
                    ""
                };
                (
                    format!(
                        "running inside a container ({kind}){seccomp}: its seccomp profile or missing capabilities forbid creating namespaces ({e})"
                    ),
                    "run cordon on the host; or start the container with `--security-opt seccomp=unconfined` \
                     (plus `--security-opt apparmor=unconfined` on AppArmor hosts), or with a seccomp profile that allows \
                     unshare/clone with CLONE_NEWUSER"
                        .into(),
                )
            } else if seccomp_mode() == Some(2) {
                (
                    format!("a seccomp filter on this process forbids creating namespaces ({e})"),
                    "run cordon outside the sandbox, container or service manager that installed the filter \
                     (systemd: RestrictNamespaces=, SystemCallFilter=)"
                        .into(),
                )
            } else {
                (
                    format!(
                        "creating a user namespace was refused ({e}) by a security policy: an LSM (SELinux, AppArmor), a sysctl, or because the process is chrooted"
                    ),
                    "run `cordon doctor` for details; check `dmesg` for a denial naming cordon"
                        .into(),
                )
            }
        }
        _ => (
            format!("creating a user namespace failed: {e}"),
            "run `cordon doctor` for details".into(),
        ),
    }
}

/// Why writing the uid/gid maps of a fresh user namespace failed.
fn diagnose_map_failure(file: &str, errno: i32) -> (String, String) {
    let e = errno_text(errno);
    if apparmor_restricts() {
        return (
            apparmor_cause(&format!(
                "the namespace is created but without capabilities, so writing {file} fails with {e}"
            )),
            APPARMOR_FIX.to_string(),
        );
    }
    (
        format!(
            "the new user namespace grants no capabilities: writing {file} failed with {e} (an LSM policy such as AppArmor or SELinux denies them)"
        ),
        "check `dmesg` for an LSM denial and allow user namespaces for cordon".into(),
    )
}

/// Unshares `flags` (plus CLONE_NEWUSER for an ordinary user, with uid/gid maps
/// written as the backend does). Err: the outcome to report.
fn enter(flags: libc::c_int, what: &str) -> Result<bool, Outcome> {
    let root = rustix::process::geteuid().is_root();
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let with_user = !root || flags == libc::CLONE_NEWUSER;
    let all = flags | if with_user { libc::CLONE_NEWUSER } else { 0 };
    let shown = if with_user && flags != libc::CLONE_NEWUSER {
        format!("CLONE_NEWUSER|{what}")
    } else {
        what.to_string()
    };
    // SAFETY: unshare in the single-threaded probe child.
    if unsafe { libc::unshare(all) } == -1 {
        let errno = crate::sys::errno();
        let e = errno_text(errno);
        if with_user && flags != libc::CLONE_NEWUSER {
            // Is it the user namespace, or the other one?
            // SAFETY: as above; the failed unshare changed nothing.
            if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 {
                return Err(Outcome::fail(
                    format!("unshare({shown}) failed: {e}"),
                    format!(
                        "a user namespace can be created, but a {what} inside it is refused ({e}): a seccomp filter or LSM forbids it"
                    ),
                    "run cordon outside the container or service that restricts namespaces; check `dmesg`",
                ));
            }
        }
        if with_user {
            let (cause, fix) = diagnose_userns_failure(errno);
            return Err(Outcome::fail(
                format!("unshare({shown}) failed: {e}"),
                cause,
                fix,
            ));
        }
        let cause = match container() {
            Some(kind) => format!(
                "running as root inside a container ({kind}) without CAP_SYS_ADMIN or with a seccomp profile that forbids {what} ({e})"
            ),
            None => format!(
                "unshare({what}) was refused ({e}) by a security policy or a missing capability"
            ),
        };
        return Err(Outcome::fail(
            format!("unshare({shown}) failed: {e}"),
            cause,
            "run cordon on the host, or start the container with `--security-opt seccomp=unconfined` and CAP_SYS_ADMIN",
        ));
    }
    if with_user {
        if let Err(errno) = write_file("/proc/self/setgroups", "deny") {
            if errno != libc::ENOENT {
                let (cause, fix) = diagnose_map_failure("/proc/self/setgroups", errno);
                return Err(Outcome::fail(
                    format!(
                        "unshare({shown}) worked, writing /proc/self/setgroups failed: {}",
                        errno_text(errno)
                    ),
                    cause,
                    fix,
                ));
            }
        }
        for (file, id) in [("/proc/self/uid_map", uid), ("/proc/self/gid_map", gid)] {
            if let Err(errno) = write_file(file, &format!("0 {id} 1\n")) {
                let (cause, fix) = diagnose_map_failure(file, errno);
                return Err(Outcome::fail(
                    format!(
                        "unshare({shown}) worked, writing {file} failed: {}",
                        errno_text(errno)
                    ),
                    cause,
                    fix,
                ));
            }
        }
    }
    Ok(with_user)
}

/// The user namespace probe: unshare(CLONE_NEWUSER) and write the maps.
pub(crate) fn userns() -> Outcome {
    if let Err(o) = enter(libc::CLONE_NEWUSER, "CLONE_NEWUSER") {
        return o;
    }
    let max = sysctl("user/max_user_namespaces")
        .map(|n| format!(", user.max_user_namespaces={n}"))
        .unwrap_or_default();
    Outcome::ok(format!("unshare(CLONE_NEWUSER) and uid/gid maps work{max}"))
}

fn mount_failure(what: &str, errno: i32) -> Outcome {
    let e = errno_text(errno);
    let (cause, fix) = if apparmor_restricts() {
        (
            apparmor_cause(&format!("{what} in the new namespace failed with {e}")),
            APPARMOR_FIX.to_string(),
        )
    } else if errno == libc::ENOSYS {
        (
            format!("the kernel lacks the new mount API ({what}: {e}); cordon needs Linux 5.12+"),
            "upgrade the kernel to 5.12 or later".to_string(),
        )
    } else {
        (
            format!("{what} is refused inside the new mount namespace ({e}): a seccomp filter (Docker's default profile forbids mount) or an LSM"),
            "run cordon on the host, or start the container with `--security-opt seccomp=unconfined --security-opt apparmor=unconfined`".to_string(),
        )
    };
    Outcome::fail(format!("{what} failed: {e}"), cause, fix)
}

/// The mount namespace probe: unshare, make / private, mount a tmpfs, and clone
/// a tree read-only with the new mount API (what the view builder does).
pub(crate) fn mountns() -> Outcome {
    let with_user = match enter(libc::CLONE_NEWNS, "CLONE_NEWNS") {
        Ok(u) => u,
        Err(o) => return o,
    };
    let none = c"none";
    let root = c"/";
    // Private first: nothing below may propagate to the host.
    // SAFETY: mount(2) with valid C strings.
    if unsafe {
        libc::mount(
            none.as_ptr(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    } == -1
    {
        return mount_failure(
            "making / private (mount MS_REC|MS_PRIVATE)",
            crate::sys::errno(),
        );
    }
    let target: &CStr = if Path::new("/tmp").is_dir() {
        c"/tmp"
    } else {
        c"/"
    };
    // SAFETY: as above; the namespace is private to this child.
    if unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"size=64k".as_ptr().cast(),
        )
    } == -1
    {
        return mount_failure("mounting a tmpfs", crate::sys::errno());
    }
    // open_tree(OPEN_TREE_CLONE) + mount_setattr(MOUNT_ATTR_RDONLY).
    const OPEN_TREE_CLONE: libc::c_ulong = 1;
    const AT_RECURSIVE: libc::c_ulong = 0x8000;
    // SAFETY: open_tree with a valid path; returns an fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            target.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_ulong | AT_RECURSIVE,
        )
    };
    if fd < 0 {
        return mount_failure("open_tree(OPEN_TREE_CLONE)", crate::sys::errno());
    }
    #[repr(C)]
    struct MountAttr {
        set: u64,
        clear: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        set: 1, // MOUNT_ATTR_RDONLY
        clear: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr on the detached tree fd, with a correctly sized struct.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd as libc::c_int,
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH as libc::c_ulong) | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    let errno = crate::sys::errno();
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd as libc::c_int) };
    if ret == -1 {
        return mount_failure("mount_setattr(MOUNT_ATTR_RDONLY)", errno);
    }
    Outcome::ok(format!(
        "unshare({}CLONE_NEWNS), private propagation, tmpfs, open_tree + mount_setattr work",
        if with_user { "CLONE_NEWUSER|" } else { "" }
    ))
}

/// The pid namespace probe: unshare, then fork: the child must be pid 1.
pub(crate) fn pidns() -> Outcome {
    let with_user = match enter(libc::CLONE_NEWPID, "CLONE_NEWPID") {
        Ok(u) => u,
        Err(o) => return o,
    };
    // SAFETY: fork in the single-threaded probe child; the grandchild only exits.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        let e = errno_text(crate::sys::errno());
        return Outcome::fail(
            format!("fork into the new pid namespace failed: {e}"),
            format!("the first process of a new pid namespace could not be created ({e})"),
            "check `sysctl kernel.pid_max` and `ulimit -u`",
        );
    }
    if pid == 0 {
        // SAFETY: plain syscalls; _exit without unwinding.
        unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            libc::_exit(if libc::getpid() == 1 { 0 } else { 3 });
        }
    }
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Outcome::ok(format!(
            "unshare({}CLONE_NEWPID) works; its first process is pid 1",
            if with_user { "CLONE_NEWUSER|" } else { "" }
        ))
    } else {
        Outcome::fail(
            "the first process of the new pid namespace is not pid 1",
            "unexpected kernel behaviour",
            "report this to cordon with `cordon doctor --json`",
        )
    }
}

/// The network namespace probe: unshare, then bring up loopback (CAP_NET_ADMIN
/// inside).
pub(crate) fn netns() -> Outcome {
    let with_user = match enter(libc::CLONE_NEWNET, "CLONE_NEWNET") {
        Ok(u) => u,
        Err(o) => return o,
    };
    // The same call the sandbox makes (netns.rs), so doctor tests what runs.
    let (ret, errno) = match crate::netns::loopback_up() {
        Ok(()) => (0, 0),
        Err(e) => (-1, e.raw_os_error().unwrap_or(libc::EIO)),
    };
    if ret == -1 {
        let e = errno_text(errno);
        let (cause, fix) = if apparmor_restricts() {
            (
                apparmor_cause(&format!("bringing up loopback failed with {e}")),
                APPARMOR_FIX.to_string(),
            )
        } else {
            (
                format!("loopback cannot be brought up in the new network namespace ({e})"),
                "check `dmesg` for an LSM denial".to_string(),
            )
        };
        return Outcome::fail(format!("bringing up lo failed: {e}"), cause, fix);
    }
    Outcome::ok(format!(
        "unshare({}CLONE_NEWNET) works; loopback comes up",
        if with_user { "CLONE_NEWUSER|" } else { "" }
    ))
}
