//! Landlock as a second layer under the mount view: the whole tree readable, only
//! the writable roots (plus the sandbox's own /tmp, /dev and /proc) writable, and
//! signals and abstract unix sockets scoped to the sandbox.

use crate::error::SandboxError;
use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, PathBeneath, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope, path_beneath_rules,
};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

/// The newest ABI cordon knows; older kernels get what they support.
const TARGET_ABI: ABI = ABI::V6;

/// Landlock's ABI version on this kernel; the error says why there is none
/// (EOPNOTSUPP: built in but disabled at boot; ENOSYS: not built in).
pub fn kernel_abi() -> std::io::Result<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with the VERSION flag, landlock_create_ruleset must be given a
    // NULL attribute pointer and size 0: it reads no memory and creates no
    // descriptor, it only returns the ABI version.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret as i32)
    }
}

/// Enforces the ruleset `fd` on the calling process (no_new_privs must be set).
/// A raw system call, so that it can run between clone and exec.
pub fn restrict_self(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: landlock_restrict_self takes a descriptor, borrowed and so open for
    // the call, and flags; it reads and writes no memory of this process.
    // (Neither rustix nor the landlock crate offers it for a ruleset built
    // earlier and enforced later.)
    let ret = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd.as_raw_fd(), 0u32) };
    if ret == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Builds the ruleset (paths are opened in the current root, so call this inside
/// the view); the sandboxed process enforces it with `restrict_self`. `program`,
/// a file opened outside the view (see `Additions::exec_fd`), may be read and
/// executed, and nothing else beside it. Writable: `writable`, `/tmp`, `/proc`
/// and `dev` (`/dev`, or parts of it: `view::writable_dev`).
///
/// `inherited` are the descriptors the command inherits: each regular file
/// among them may be opened again through `/proc/self/fd` with the access it
/// was opened with (QEMU opens its kernel by that path). Without this rule the
/// reopening fails wherever the view's root is not the host's (a `--mount`
/// target the host lacks): Landlock checks the file's path on the host, which
/// no rule of the view covers.
pub fn build(
    writable: &[PathBuf],
    dev: Vec<PathBuf>,
    program: Option<BorrowedFd<'_>>,
    inherited: &[OwnedFd],
) -> Result<OwnedFd, SandboxError> {
    let fail = SandboxError::Landlock;
    let mut roots: Vec<PathBuf> = writable.to_vec();
    roots.extend(["/tmp", "/proc"].map(PathBuf::from));
    roots.extend(dev);
    Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .map_err(fail)?
        .scope(Scope::Signal | Scope::AbstractUnixSocket)
        .map_err(fail)?
        .create()
        .map_err(fail)?
        .add_rules(path_beneath_rules(["/"], AccessFs::from_read(TARGET_ABI)))
        .map_err(fail)?
        .add_rules(path_beneath_rules(roots, AccessFs::from_all(TARGET_ABI)))
        .map_err(fail)?
        .add_rules(inherited.iter().filter_map(|fd| {
            let access = inherited_file_access(fd.as_fd())?;
            Some(Ok::<_, landlock::RulesetError>(PathBeneath::new(
                fd.as_fd(),
                access,
            )))
        }))
        .map_err(fail)?
        .add_rules(program.map(|fd| {
            Ok::<_, landlock::RulesetError>(PathBeneath::new(
                fd,
                AccessFs::Execute | AccessFs::ReadFile,
            ))
        }))
        .map_err(fail)
        .and_then(|ruleset| Option::<OwnedFd>::from(ruleset).ok_or(SandboxError::LandlockRefused))
}

/// The access an inherited descriptor gives to its file when opened again: its
/// own open mode, or `None` if it is not a regular file (a socket, a pipe).
fn inherited_file_access(fd: BorrowedFd<'_>) -> Option<landlock::BitFlags<AccessFs>> {
    use rustix::fs::{FileType, OFlags};
    let stat = rustix::fs::fstat(fd).ok()?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return None;
    }
    let flags = rustix::fs::fcntl_getfl(fd).ok()?;
    Some(if flags.contains(OFlags::RDWR) {
        AccessFs::ReadFile | AccessFs::WriteFile
    } else if flags.contains(OFlags::WRONLY) {
        AccessFs::WriteFile.into()
    } else if stat.st_mode & 0o111 != 0 {
        // A program handed over to be run (the VM's virtiofsd): executing
        // it gives nothing that reading it and running a copy would not.
        AccessFs::ReadFile | AccessFs::Execute
    } else {
        AccessFs::ReadFile.into()
    })
}
