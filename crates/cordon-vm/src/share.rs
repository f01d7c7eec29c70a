//! How the host's view of the policy reaches the guest as its root: served by
//! virtiofsd over vhost-user where it is installed, else by QEMU's own 9p
//! server. Either server runs in QEMU's OS sandbox and serves the view that
//! sandbox was built with (`SERVED_VIEW`): what the guest may see or change is
//! what the host's view holds, enforced on the host.
//!
//! Why virtiofs first: under TCG here it is 20× faster than 9p on `ls -lR`
//! and 2.9× on reading many small files (`bench/vm --only shares`; docs/vm.md
//! has the figures). 9p stays the fallback: it needs nothing beyond QEMU, and
//! is faster for one large sequential read.
//!
//! virtiofsd is a second process in QEMU's sandbox: cordon's own binary runs
//! there first (`__vm-host`), starts virtiofsd on the listening socket it was
//! given, and becomes QEMU. virtiofsd runs as the sandbox's user, without
//! capabilities, under cordon's seccomp filter and (but for root: see
//! [`virtiofsd_args`]) its own (`--sandbox none`: the sandbox is cordon's); it
//! ends with the sandbox, as QEMU does.

use cordon_policy::{Sourced, VmShare};
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// How the view is served to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareKind {
    /// QEMU's 9p server (`virtio-9p`).
    NineP,
    /// virtiofsd, this binary, over vhost-user (`vhost-user-fs`); the guest's
    /// RAM is shared memory (a memfd) for it.
    Virtiofs(PathBuf),
}

impl ShareKind {
    /// The guest's file system for it.
    pub fn fs(&self) -> ShareFs {
        match self {
            ShareKind::NineP => ShareFs::NineP,
            ShareKind::Virtiofs(_) => ShareFs::Virtiofs,
        }
    }
}

/// The file system the guest mounts its root share with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareFs {
    NineP,
    Virtiofs,
}

/// Chooses the share: the policy's `vm_share` (`--vm-share`,
/// `$CORDON_VM_SHARE`, the user config's) where someone chose one, else
/// virtiofs where virtiofsd is found, else 9p. virtiofs chosen without a
/// virtiofsd is refused, naming the fix, never served over 9p instead.
pub fn choose(chosen: Option<&Sourced<VmShare>>) -> Result<ShareKind, String> {
    match chosen.map(|c| c.value) {
        Some(VmShare::NineP) => Ok(ShareKind::NineP),
        Some(VmShare::Virtiofs) => find_virtiofsd().map(ShareKind::Virtiofs).ok_or_else(|| {
            format!(
                "the VM's file share is virtiofs ({}), but no virtiofsd was found (in \
                 PATH, or {}): install it (`cargo install virtiofsd`), or choose 9p \
                 (--vm-share 9p)",
                chosen.map_or(String::new(), |c| c.origin.to_string()),
                SYSTEM_VIRTIOFSD.join(", ")
            )
        }),
        None => Ok(find_virtiofsd().map_or(ShareKind::NineP, ShareKind::Virtiofs)),
    }
}

/// The environment variable that chooses the file share of the VM backend,
/// as `--vm-share` does (see [`choose`]).
pub const SHARE_ENV: &str = "CORDON_VM_SHARE";

/// Where distributions install virtiofsd outside `PATH`.
const SYSTEM_VIRTIOFSD: [&str; 2] = ["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"];

/// virtiofsd in `PATH`, else where distributions put it.
pub fn find_virtiofsd() -> Option<PathBuf> {
    let in_path = crate::backend::search_path(Path::new("virtiofsd"), |p| {
        p.is_absolute() && is_executable(p)
    });
    in_path.or_else(|| {
        SYSTEM_VIRTIOFSD
            .iter()
            .map(PathBuf::from)
            .find(|p| is_executable(p))
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The descriptors of a virtiofs share for one QEMU.
pub struct VirtiofsFds {
    /// virtiofsd's binary, opened read-only: `__vm-host` runs it from this
    /// descriptor, so the view need not show its path.
    pub binary: OwnedFd,
    /// The listening socket virtiofsd takes its one connection from.
    pub listener: OwnedFd,
    /// QEMU's end, connected to `listener` already.
    pub qemu_end: OwnedFd,
}

/// Opens virtiofsd and a connected socket pair for it and QEMU. The listening
/// socket is bound in a directory only this user may enter, connected to at
/// once, and its name removed: nobody else can be virtiofsd's peer, which
/// serves the view to whoever connects first.
pub fn virtiofs_fds(virtiofsd: &Path) -> io::Result<VirtiofsFds> {
    use std::os::unix::fs::DirBuilderExt;
    use std::os::unix::net::{UnixListener, UnixStream};
    let binary = OwnedFd::from(std::fs::File::open(virtiofsd)?);
    let dir = std::env::temp_dir().join(format!(
        "cordon-virtiofs-{}-{:016x}",
        std::process::id(),
        rand_u64()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    // Named through a descriptor of the directory: a socket's path may have
    // at most 107 bytes, which a deep $TMPDIR would pass.
    let made = std::fs::File::open(&dir).and_then(|held| {
        let socket = PathBuf::from(format!("/proc/self/fd/{}/socket", held.as_raw_fd()));
        let made = UnixListener::bind(&socket)
            .and_then(|listener| Ok((UnixStream::connect(&socket)?, listener)));
        let _ = std::fs::remove_file(&socket);
        made
    });
    let _ = std::fs::remove_dir(&dir);
    let (qemu_end, listener) = made?;
    Ok(VirtiofsFds {
        binary,
        listener: listener.into(),
        qemu_end: qemu_end.into(),
    })
}

/// A random number for a name nobody else should pick.
fn rand_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u64::from_ne_bytes(bytes)
}

/// The hidden subcommand that starts virtiofsd and becomes QEMU, in QEMU's
/// sandbox: `cordon __vm-host --virtiofsd-fd N --listen-fd M -- QEMU ARGS...`.
pub const HOST_SUBCOMMAND: &str = "__vm-host";

/// virtiofsd's arguments, serving `dir` on the listening socket at `listen_fd`;
/// `as_root`: the sandbox's user is root (a host user root, in the sandbox's
/// user namespace, without capabilities).
pub fn virtiofsd_args(listen_fd: i32, dir: &str, as_root: bool) -> Vec<String> {
    let mut args = vec![
        format!("--fd={listen_fd}"),
        format!("--shared-dir={dir}"),
        // The sandbox is cordon's: virtiofsd makes no namespace of its own.
        "--sandbox=none".into(),
        // No capability to open by file handle; descriptors, as 9p keeps.
        "--inode-file-handles=never".into(),
        // The sandbox's limit stays (virtiofsd would raise its own).
        "--rlimit-nofile=0".into(),
        "--cache=auto".into(),
        "--log-level=error".into(),
    ];
    if as_root {
        args.extend([
            // As root virtiofsd would keep the capabilities it uses to act as
            // each request's user: the sandbox has none to give, and every
            // request comes as this one user anyway.
            "--modcaps=-chown:-dac_override:-fowner:-fsetid:-setgid:-setuid:-mknod:-setfcap".into(),
            // Dropping them, libcap-ng reads `/proc/self/exe` with readlink(2),
            // which virtiofsd's own filter (installed first) kills it for. Its
            // filter is left out as root only: cordon's filter of QEMU's
            // sandbox still holds virtiofsd.
            "--seccomp=none".into(),
        ]);
    }
    args
}

/// `cordon __vm-host`: starts virtiofsd from the descriptor `--virtiofsd-fd`
/// with the listening socket `--listen-fd`, then becomes QEMU (the program and
/// arguments after `--`). Returns only on failure, with 125.
pub fn host_main(args: &[OsString]) -> u8 {
    match run_host(args) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("cordon: {HOST_SUBCOMMAND}: {e}");
            125
        }
    }
}

enum Never {}

fn run_host(args: &[OsString]) -> Result<Never, String> {
    let (ours, qemu) = match args.iter().position(|a| a == "--") {
        Some(at) => (&args[..at], &args[at + 1..]),
        None => return Err("no `--` before QEMU's command".into()),
    };
    let fd = |name: &str| -> Result<i32, String> {
        let at = ours.iter().position(|a| a == name);
        at.and_then(|at| ours.get(at + 1))
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|fd| *fd > 2)
            .ok_or_else(|| format!("{name} needs a descriptor number above 2"))
    };
    let (virtiofsd, listen) = (fd("--virtiofsd-fd")?, fd("--listen-fd")?);
    let Some((program, qemu_args)) = qemu.split_first() else {
        return Err("no QEMU command after `--`".into());
    };
    // By its descriptor: the view need not show virtiofsd's path.
    let binary = format!("/proc/self/fd/{virtiofsd}");
    std::process::Command::new(&binary)
        .arg0("virtiofsd")
        .args(virtiofsd_args(
            listen,
            cordon_sandbox::SERVED_VIEW,
            rustix::process::geteuid().is_root(),
        ))
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting virtiofsd: {e}"))?;
    // QEMU holds neither: only virtiofsd listens, and only it runs its binary.
    for fd in [virtiofsd, listen] {
        // SAFETY: closes descriptors this process was handed for virtiofsd,
        // which nothing here uses any more.
        unsafe { libc::close(fd) };
    }
    let e = std::process::Command::new(program).args(qemu_args).exec();
    Err(format!("starting {}: {e}", program.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_refuses_what_it_does_not_understand() {
        let args = |s: &str| -> Vec<OsString> { s.split(' ').map(OsString::from).collect() };
        for bad in [
            "--virtiofsd-fd 5 --listen-fd 6",
            "--virtiofsd-fd 5 -- qemu",
            "--virtiofsd-fd 2 --listen-fd 6 -- qemu",
            "--virtiofsd-fd x --listen-fd 6 -- qemu",
            "--virtiofsd-fd 5 --listen-fd 6 --",
        ] {
            assert!(run_host(&args(bad)).is_err(), "{bad}");
        }
    }
}
