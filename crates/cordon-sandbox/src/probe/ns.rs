//! Namespace probes (each runs in a probe child) and the diagnosis of a refused
//! user namespace.

use super::Outcome;
use super::host::{container, errno_text, seccomp_mode, sysctl, write_file};
use rustix::process::{Pid, Signal, WaitOptions};
use std::ffi::CStr;
use std::os::fd::AsFd;
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
    // SAFETY: unshare(2) takes no pointers. Of its flags only CLONE_FILES and
    // CLONE_FS could leave other threads disagreeing with this one about
    // descriptors or the working directory, and neither is among `all`
    // (namespace flags only); besides, the probe child is single-threaded.
    if unsafe { libc::unshare(all) } == -1 {
        let errno = crate::sys::errno();
        let e = errno_text(errno);
        if with_user && flags != libc::CLONE_NEWUSER {
            // Is it the user namespace, or the other one?
            // SAFETY: as above (a namespace flag, no pointer); the failed unshare
            // changed nothing.
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
    use rustix::mount::{MountFlags, MountPropagationFlags, OpenTreeFlags};
    // Private first: nothing below may propagate to the host.
    let private = MountPropagationFlags::REC | MountPropagationFlags::PRIVATE;
    if let Err(e) = rustix::mount::mount_change(c"/", private) {
        return mount_failure(
            "making / private (mount MS_REC|MS_PRIVATE)",
            e.raw_os_error(),
        );
    }
    let target: &CStr = if Path::new("/tmp").is_dir() {
        c"/tmp"
    } else {
        c"/"
    };
    let nosuid_nodev = MountFlags::NOSUID | MountFlags::NODEV;
    if let Err(e) = rustix::mount::mount(c"tmpfs", target, c"tmpfs", nosuid_nodev, c"size=64k") {
        return mount_failure("mounting a tmpfs", e.raw_os_error());
    }
    // open_tree(OPEN_TREE_CLONE) + mount_setattr(MOUNT_ATTR_RDONLY), as the view
    // builder does.
    let clone = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_RECURSIVE;
    let tree = match rustix::mount::open_tree(rustix::fs::CWD, target, clone) {
        Ok(tree) => tree,
        Err(e) => return mount_failure("open_tree(OPEN_TREE_CLONE)", e.raw_os_error()),
    };
    let read_only = crate::sys::MOUNT_ATTR_RDONLY;
    if let Err(e) = crate::sys::mount_setattr_recursive(tree.as_fd(), read_only, 0) {
        return mount_failure(
            "mount_setattr(MOUNT_ATTR_RDONLY)",
            e.raw_os_error().unwrap_or(libc::EIO),
        );
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
    // SAFETY: the probe child is single-threaded, so the forked grandchild
    // inherits no lock held by a thread it lacks; it makes two system calls
    // (no allocation) and `_exit`s, never returning into this code.
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
        let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
        let status = if rustix::process::getpid().is_init() {
            0
        } else {
            3
        };
        // SAFETY: _exit(2) takes no pointers and does not return; this forked
        // child must not run its parent's atexit handlers.
        unsafe { libc::_exit(status) };
    }
    let waited = rustix::process::waitpid(Pid::from_raw(pid), WaitOptions::empty());
    if matches!(waited, Ok(Some((_, status))) if status.exit_status() == Some(0)) {
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
