//! Small facts about the host the probes' diagnoses rely on. Cheap reads only.

use std::fs;
use std::path::Path;

/// A sysctl as an integer, e.g. `sysctl("user/max_user_namespaces")`.
pub(crate) fn sysctl(name: &str) -> Option<i64> {
    fs::read_to_string(Path::new("/proc/sys").join(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `uname -r`.
pub(crate) fn kernel_release() -> String {
    let u = rustix::system::uname();
    u.release().to_string_lossy().into_owned()
}

/// (major, minor) of the running kernel.
pub(crate) fn kernel_version() -> Option<(u32, u32)> {
    let release = kernel_release();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// "EPERM: Operation not permitted".
pub(crate) fn errno_text(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ENOSYS => "ENOSYS",
        libc::EUSERS => "EUSERS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EROFS => "EROFS",
        libc::ENODEV => "ENODEV",
        libc::ENXIO => "ENXIO",
        libc::EAGAIN => "EAGAIN",
        _ => "",
    };
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    // std's text ends with " (os error N)".
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    if name.is_empty() {
        format!("errno {errno}: {text}")
    } else {
        format!("{name}: {text}")
    }
}

/// The seccomp mode of this process from /proc/self/status (0 none, 1 strict,
/// 2 filter).
pub(crate) fn seccomp_mode() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Signs that this process runs inside a container, named ("docker", ...).
pub(crate) fn container() -> Option<String> {
    if Path::new("/.dockerenv").exists() {
        return Some("Docker".into());
    }
    if Path::new("/run/.containerenv").exists() {
        return Some("Podman".into());
    }
    if let Ok(kind) = std::env::var("container") {
        if !kind.is_empty() {
            return Some(kind);
        }
    }
    if let Ok(text) = fs::read_to_string("/proc/1/cgroup") {
        for (needle, name) in [
            ("docker", "Docker"),
            ("kubepods", "Kubernetes"),
            ("libpod", "Podman"),
            ("containerd", "containerd"),
            ("lxc", "LXC"),
        ] {
            if text.contains(needle) {
                return Some(name.into());
            }
        }
    }
    None
}

/// The active LSMs (`/sys/kernel/security/lsm`), if securityfs is readable.
pub(crate) fn active_lsms() -> Option<String> {
    fs::read_to_string("/sys/kernel/security/lsm")
        .ok()
        .map(|s| s.trim().to_string())
}

/// The `lsm=` boot parameter, if given.
pub(crate) fn boot_lsm_param() -> Option<String> {
    let cmdline = fs::read_to_string("/proc/cmdline").ok()?;
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("lsm="))
        .map(str::to_string)
}

/// Writes `value` to `path` in one write(2).
pub(crate) fn write_file(path: &str, value: &str) -> Result<(), i32> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    f.write_all(value.as_bytes())
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}
