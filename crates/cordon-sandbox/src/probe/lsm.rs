//! Landlock and seccomp probes (each runs in a probe child).

use super::Outcome;
use super::host::{
    active_lsms, boot_lsm_param, container, errno_text, kernel_release, kernel_version,
    seccomp_mode,
};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

const LANDLOCK_ACCESS_FS_READ_FILE: u64 = 1 << 2;

/// What each Landlock ABI adds, for the detail line.
fn abi_features(abi: i64) -> &'static str {
    match abi {
        1 => "filesystem access",
        2 => "filesystem access, cross-directory rename/link",
        3 => "filesystem access, rename/link, truncate",
        4 => "filesystem, truncate, TCP bind/connect",
        5 => "filesystem, truncate, TCP, device ioctl",
        6 => "filesystem, truncate, TCP, device ioctl, signal and abstract-socket scoping",
        _ => "filesystem, truncate, TCP, device ioctl, IPC scoping, audit logging",
    }
}

/// Landlock: the ABI version, then a ruleset that must really deny a read.
pub(crate) fn landlock() -> Outcome {
    let abi = match crate::confine::landlock::kernel_abi() {
        Ok(abi) => i64::from(abi),
        Err(error) => return landlock_missing(error.raw_os_error().unwrap_or(libc::ENOSYS)),
    };
    // Enforce a ruleset that handles READ_FILE with no rule: reading must fail.
    let attr: u64 = LANDLOCK_ACCESS_FS_READ_FILE;
    // SAFETY: the kernel reads the 8 bytes given as the size from `&attr`, a live
    // u64 (the first field of struct landlock_ruleset_attr, handled_access_fs:
    // the whole struct for ABI 1, and a valid prefix for later ones); it writes
    // nothing through it.
    let ruleset = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const u64,
            std::mem::size_of::<u64>(),
            0 as libc::c_uint,
        )
    };
    if ruleset < 0 {
        let e = errno_text(crate::sys::errno());
        return Outcome::fail(
            format!("Landlock ABI {abi}, but creating a ruleset failed: {e}"),
            format!("landlock_create_ruleset with a filesystem rule failed ({e})"),
            "check `dmesg`",
        );
    }
    // SAFETY: landlock_create_ruleset succeeded, so `ruleset` is a new open
    // descriptor that nothing else owns.
    let ruleset = unsafe { OwnedFd::from_raw_fd(ruleset as libc::c_int) };
    let _ = rustix::thread::set_no_new_privs(true);
    // The same call the supervisor makes, so doctor tests what runs.
    if let Err(error) = crate::confine::landlock::restrict_self(ruleset.as_fd()) {
        let e = errno_text(error.raw_os_error().unwrap_or(libc::EIO));
        return Outcome::fail(
            format!("Landlock ABI {abi}, but landlock_restrict_self failed: {e}"),
            format!(
                "enforcing a Landlock ruleset is refused ({e}): a seccomp filter, or too many stacked rulesets (16 max)"
            ),
            "run cordon outside the sandbox or container it is in",
        );
    }
    let denied = std::fs::File::open("/proc/self/exe").is_err();
    if !denied {
        return Outcome::fail(
            format!("Landlock ABI {abi} reports success but did not deny a read"),
            "the Landlock ruleset is not enforced",
            "report this to cordon with `cordon doctor --json`",
        );
    }
    Outcome::ok(format!(
        "ABI {abi} ({}); enforcement checked",
        abi_features(abi)
    ))
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_003E);
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_00B7);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: Option<u32> = None;

/// seccomp: with no_new_privs, install a filter making getppid fail with errno
/// 77, and check that it does.
pub(crate) fn seccomp() -> Outcome {
    const ERRNO: u32 = 77;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u16, k: u32, jt: u8, jf: u8| libc::sock_filter { code, jt, jf, k };
    let ld_w_abs = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let mut filter = Vec::new();
    if let Some(arch) = AUDIT_ARCH {
        filter.push(stmt(ld_w_abs, 4)); // seccomp_data.arch
        filter.push(jump(jeq, arch, 1, 0));
        filter.push(stmt(ret, RET_ALLOW));
    }
    filter.push(stmt(ld_w_abs, 0)); // seccomp_data.nr
    filter.push(jump(jeq, libc::SYS_getppid as u32, 0, 1));
    filter.push(stmt(ret, RET_ERRNO | ERRNO));
    filter.push(stmt(ret, RET_ALLOW));
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    let before = seccomp_mode();
    if let Err(error) = rustix::thread::set_no_new_privs(true) {
        let e = errno_text(error.raw_os_error());
        return Outcome::fail(
            format!("prctl(PR_SET_NO_NEW_PRIVS) failed: {e}"),
            "the kernel refuses no_new_privs",
            "use a kernel from this decade (3.5+)",
        );
    }
    // SAFETY: seccomp(SET_MODE_FILTER) and its older prctl form read `prog`, a
    // live local pointing at `filter.len()` instructions of `filter`, which
    // outlives the call; the kernel copies the program and keeps no pointer.
    // Installing the filter on this probe child is the point of the probe.
    let (ret, errno) = unsafe {
        let mut ret = libc::syscall(
            libc::SYS_seccomp,
            1 as libc::c_uint, /* SET_MODE_FILTER */
            0 as libc::c_uint,
            &prog,
        );
        let mut errno = crate::sys::errno();
        if ret == -1 && errno == libc::ENOSYS {
            ret = libc::prctl(
                libc::PR_SET_SECCOMP,
                2 as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            ) as libc::c_long;
            errno = crate::sys::errno();
        }
        (ret, errno)
    };
    if ret == -1 {
        let e = errno_text(errno);
        let (cause, fix) = match errno {
            libc::EINVAL | libc::ENOSYS => (
                format!("the kernel is built without seccomp filters (CONFIG_SECCOMP_FILTER) ({e})"),
                "use a kernel built with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y (every mainstream distribution kernel)".to_string(),
            ),
            _ => (
                format!("installing a seccomp filter was refused ({e})"),
                "run cordon outside the sandbox or container it is in".to_string(),
            ),
        };
        return Outcome::fail(format!("seccomp(SET_MODE_FILTER) failed: {e}"), cause, fix);
    }
    // SAFETY: getppid takes no arguments and touches no memory; made raw so that
    // it surely reaches the kernel and the filter, which should refuse it.
    let r = unsafe { libc::syscall(libc::SYS_getppid) };
    if r != -1 || crate::sys::errno() != ERRNO as i32 {
        return Outcome::fail(
            "a seccomp filter was installed but did not act",
            "the seccomp filter is not enforced",
            "report this to cordon with `cordon doctor --json`",
        );
    }
    let stacked = if before == Some(2) {
        " (stacked on a filter already present: this process runs under another sandbox or container)"
    } else {
        ""
    };
    Outcome::ok(format!(
        "filter mode with no_new_privs works; enforcement checked{stacked}"
    ))
}

/// Why Landlock is missing, from the errno of the ABI query, with the fix.
fn landlock_missing(errno: i32) -> Outcome {
    let e = errno_text(errno);
    let kernel = kernel_release();
    let old = kernel_version().is_some_and(|v| v < (5, 13));
    let lsms = active_lsms()
        .map(|l| format!("active LSMs: {l}"))
        .or_else(|| boot_lsm_param().map(|l| format!("boot parameter lsm={l}")))
        .unwrap_or_else(|| "no lsm= boot parameter".into());
    let (cause, fix) = match errno {
        libc::ENOSYS if old => (
            format!("Linux {kernel} predates Landlock (5.13)"),
            "upgrade to Linux 5.13 or later (6.7+ for network rules)".to_string(),
        ),
        libc::ENOSYS => (
            format!("the kernel ({kernel}) is built without Landlock (CONFIG_SECURITY_LANDLOCK), or a seccomp filter hides the syscall"),
            "use a kernel built with CONFIG_SECURITY_LANDLOCK=y (most distribution kernels since 2022)".to_string(),
        ),
        libc::EOPNOTSUPP => (
            format!("Landlock is built into the kernel but not enabled at boot ({lsms}): the lsm= list lacks landlock"),
            "add landlock to the kernel's lsm= boot parameter, keeping the others, e.g. in /etc/default/grub: \
             GRUB_CMDLINE_LINUX=\"lsm=landlock,lockdown,yama,integrity,apparmor,bpf\" (start from `cat /sys/kernel/security/lsm`), \
             then `sudo update-grub` and reboot"
                .to_string(),
        ),
        libc::EPERM | libc::EACCES => (
            format!(
                "a seccomp filter forbids landlock_create_ruleset ({e}){}",
                container().map(|c| format!(": running in a container ({c})")).unwrap_or_default()
            ),
            "run cordon on the host, or give the container a seccomp profile that allows the landlock_* syscalls (Docker 25+ does)".to_string(),
        ),
        _ => (format!("landlock_create_ruleset failed: {e}"), "check `dmesg`".to_string()),
    };
    Outcome::fail(
        format!("landlock_create_ruleset(VERSION) failed: {e}"),
        cause,
        fix,
    )
}
