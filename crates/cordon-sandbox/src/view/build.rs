//! Building the view inside the sandbox's fresh mount namespace.
//!
//! The namespace starts as the kernel's copy of the host's mount tree; cordon edits
//! that copy in place rather than building a second tree and pivoting into it (one
//! copy of the tree instead of two, and no old root to tear down):
//! 1. make every mount private, so nothing done here propagates to the host;
//! 2. clone each host path a mount needs *before* anything is mounted over it;
//! 3. make the whole tree read-only, nosuid and nodev;
//! 4. apply the planned mounts (binds, pins, empty dirs and files, `/tmp`);
//! 5. a minimal `/dev` and a fresh `/proc` with its global knobs read-only;
//! 6. the policy's mounts (host paths shown elsewhere), each cloned from the view
//!    built so far; a target that does not exist is made in a tmpfs that mirrors
//!    its nearest existing ancestor (for `/`, that tmpfs becomes the root).
//!
//! What is mounted over stays unreachable: the sandboxed process has no capability
//! to unmount, seccomp refuses the mount syscalls, and no descriptor opened before
//! the overmounts survives into it. Destinations are opened with
//! `openat2(RESOLVE_NO_SYMLINKS)`, so a symlink swapped in on the host cannot
//! redirect a mount.

use super::plan::{MountKind, MountOp, MountPlan, SyntheticFile, ViewPlan};
use crate::error::SandboxError;
use crate::sys;
use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};
use rustix::mount::{
    self as rmount, FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags,
};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Device nodes the sandbox gets: the harmless ones (the VM backend's guest
/// gives its command the same).
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// /proc entries made read-only, the set runc and Docker make read-only plus
/// `mtrr`. A sandbox started by root is uid 0 on the host, and the files below them
/// are writable by mode bits alone: `/proc/sys/kernel/core_pattern`,
/// `/proc/sysrq-trigger`, `/proc/irq/*/smp_affinity` and
/// `/proc/irq/default_smp_affinity` (global interrupt routing), `/proc/bus/pci/*`
/// (PCI config space), `/proc/fs/*` (nfsd, xfs statistics), and
/// `/proc/dynamic_debug/control` (switches the kernel's debug messages on, on
/// kernels built with it, Debian's among them: the VM suites found it open).
pub const PROC_READ_ONLY: [&str; 7] = [
    "bus",
    "dynamic_debug",
    "fs",
    "irq",
    "mtrr",
    "sys",
    "sysrq-trigger",
];

/// /proc entries masked (covered by an empty read-only file or directory): Docker's
/// `maskedPaths`. They show the host's state across the PID namespace (timers and
/// run queues name host processes, `interrupts` counts host devices' interrupts,
/// `keys` lists keys) or hardware (`acpi`, `asound`, `scsi`, whose files also take
/// writes), or memory (`kcore`).
pub const PROC_MASKED: [&str; 10] = [
    "acpi",
    "asound",
    "interrupts",
    "kcore",
    "keys",
    "latency_stats",
    "sched_debug",
    "scsi",
    "timer_list",
    "timer_stats",
];

/// /sys paths masked (the rest of /sys is the host's, read-only): Docker's
/// `maskedPaths` there. Firmware tables and EFI variables; the energy counters of
/// powercap (RAPL), a side channel on what the host computes.
pub const SYS_MASKED: [&str; 2] = ["/sys/firmware", "/sys/devices/virtual/powercap"];

const READ_ONLY: u64 = sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;

/// Mount flags of /dev (device nodes must open there, so not nodev), /proc, and
/// the tmpfs of a denied directory.
const DEV_FLAGS: libc::c_ulong = libc::MS_NOSUID | libc::MS_NOEXEC;
const PROC_FLAGS: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
const EMPTY_DIR_FLAGS: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

fn err(path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> SandboxError {
    let path = path.as_ref().to_path_buf();
    move |source| SandboxError::View { path, source }
}

fn rustix_err(path: impl AsRef<Path>) -> impl FnOnce(rustix::io::Errno) -> SandboxError {
    let path = path.as_ref().to_path_buf();
    move |e| SandboxError::View {
        path,
        source: e.into(),
    }
}

/// Turns this process's (new, private) mount namespace into the view `plan`
/// describes. Runs in the sandbox's first process.
///
/// `placeholders_ready` is called before the first mount whose source is a
/// placeholder the launcher creates meanwhile; it returns once they exist.
pub fn enter(plan: &ViewPlan, placeholders_ready: &mut dyn FnMut()) -> Result<(), SandboxError> {
    sys::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None).map_err(err("/"))?;
    let root = open_root()?;

    let sources = clone_sources(root.as_fd(), plan)?;
    let device_names: Vec<&str> = DEVICES.iter().chain(&plan.devices).copied().collect();
    let devices = (device_names.iter())
        .map(|d| clone_tree(root.as_fd(), &Path::new("/dev").join(d), false))
        .collect::<Result<Vec<_>, _>>()?;
    let empty = empty_source()?;
    let overlays = plan
        .overlays
        .iter()
        .map(|o| clone_file_read_only(root.as_fd(), &o.source))
        .collect::<Result<Vec<_>, _>>()?;

    sys::mount_setattr_recursive(root.as_fd(), READ_ONLY, 0).map_err(err("/"))?;

    let mut read_only_tmpfs = Vec::new();
    let mut waited = false;
    for (op, source) in plan.ops.iter().zip(sources) {
        if op.placeholder && !waited {
            placeholders_ready();
            waited = true;
        }
        let source = match op.kind {
            // (A placeholder may be hidden: then it is only the mount point.)
            MountKind::EmptyFile => Some(clone_empty(empty.as_fd(), "empty", &op.path)?),
            MountKind::EmptyDir if !op.holds_mount_points => {
                Some(clone_empty(empty.as_fd(), "dir", &op.path)?)
            }
            MountKind::Bind { .. } if op.placeholder => {
                // A bind always has a source; were there none, fail, not mount nothing.
                let source = clone_source(root.as_fd(), op)?;
                Some(
                    source
                        .ok_or_else(|| err(&op.path)(io::Error::other("a bind with no source")))?,
                )
            }
            _ => source,
        };
        if op.kind == MountKind::EmptyDir && source.is_none() {
            read_only_tmpfs.push(op.path.clone());
        }
        apply(root.as_fd(), op, source, plan.tmpfs_size)?;
    }
    for (overlay, source) in plan.overlays.iter().zip(overlays) {
        let target = open_in(root.as_fd(), &overlay.target)?;
        attach_at(source.as_fd(), target.as_fd(), &overlay.target)?;
    }
    lay_synthesized(root.as_fd(), &plan.synthesized)?;
    build_dev(
        root.as_fd(),
        &device_names,
        &devices,
        plan.tmpfs_size,
        plan.served,
    )?;
    build_proc(root.as_fd(), empty.as_fd())?;
    mask_sys(root.as_fd(), empty.as_fd())?;
    for path in read_only_tmpfs {
        remount_read_only(root.as_fd(), &path, EMPTY_DIR_FLAGS)?;
    }
    make_mounts(root.as_fd(), &plan.mounts)?;
    if plan.served {
        // Of the root as it is now: a mount whose target `/` lacks made a new
        // one (a mirror of `/`, chrooted into), and serving the old would
        // serve a tree without the mount, at a place the server cannot see.
        serve_view(open_root()?.as_fd(), empty.as_fd())?;
    }
    // Closing a mount that was never attached tears it down at once (waiting for
    // an RCU grace period); left open, it goes when the supervisor exits, after
    // the command's status is reported.
    std::mem::forget(empty);
    rustix::process::chdir("/").map_err(rustix_err("/"))
}

/// The process's root directory, as a descriptor the view is built below.
fn open_root() -> Result<OwnedFd, SandboxError> {
    rfs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(rustix_err("/"))
}

/// The policy's mounts. Every source is cloned first, from the view as built so
/// far (what it hides stays hidden below the target); then the targets that exist,
/// or lie in a tmpfs of ours, get theirs; then each mirror, deepest first, so a
/// shallower mirror takes the deeper ones in. A mirror of `/` becomes the root
/// (the old root stays beneath it, out of reach), so it must come last.
fn make_mounts(root: BorrowedFd<'_>, mounts: &[MountPlan]) -> Result<(), SandboxError> {
    let sources = mounts
        .iter()
        .map(|m| {
            let tree = clone_tree(root, &m.source, true)?;
            if !m.writable {
                set_attrs(tree.as_fd(), READ_ONLY, &m.source)?;
            }
            Ok(tree)
        })
        .collect::<Result<Vec<_>, SandboxError>>()?;
    let attach = |base: BorrowedFd<'_>, inside: &Path, m: &MountPlan, source: &OwnedFd| {
        let target = open_mount_point(base, inside, m.create_mount_point, m.is_dir)?;
        attach_at(source.as_fd(), target.as_fd(), &m.target)
    };
    for (m, source) in mounts.iter().zip(&sources) {
        if m.mirror.is_none() {
            attach(root, &m.target, m, source)?;
        }
    }
    let mut mirrors: Vec<&Path> = mounts.iter().filter_map(|m| m.mirror.as_deref()).collect();
    mirrors.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mirrors.dedup();
    for dir in mirrors {
        let base = mirror(root, dir)?;
        for (m, source) in mounts.iter().zip(&sources) {
            if m.mirror.as_deref() == Some(dir) {
                let inside = Path::new("/").join(m.target.strip_prefix(dir).unwrap_or(&m.target));
                attach(base.as_fd(), &inside, m, source)?;
            }
        }
        let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | MIRROR_FLAGS;
        sys::mount(None, &fd_path(base.as_fd()), None, flags, None).map_err(err(dir))?;
        if dir == Path::new("/") {
            rustix::process::fchdir(&base).map_err(rustix_err(dir))?;
            rustix::process::chroot(".").map_err(rustix_err(dir))?;
        }
    }
    Ok(())
}

/// Mount flags of a mirror's tmpfs.
const MIRROR_FLAGS: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;

/// Covers `dir` with a tmpfs holding what it held: every directory and file bound
/// from the view (with the mounts below it), every symlink copied. Returns the
/// tmpfs, still writable so mount points can be made in it.
fn mirror(root: BorrowedFd<'_>, dir: &Path) -> Result<OwnedFd, SandboxError> {
    enum Entry {
        Tree(OwnedFd, bool),
        Link(std::ffi::CString),
    }
    let listing = open_dir_in(root, dir)?;
    let mut entries = Vec::new();
    for entry in rfs::Dir::read_from(&listing).map_err(rustix_err(dir))? {
        let entry = entry.map_err(rustix_err(dir))?;
        let name = entry.file_name().to_owned();
        if name.as_bytes() == b"." || name.as_bytes() == b".." {
            continue;
        }
        let path = dir.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        let kind = match entry.file_type() {
            rfs::FileType::Unknown => {
                rfs::statat(&listing, name.as_c_str(), rfs::AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| rfs::FileType::from_raw_mode(st.st_mode))
                    .map_err(rustix_err(&path))?
            }
            kind => kind,
        };
        let made = match kind {
            rfs::FileType::Directory | rfs::FileType::RegularFile => Entry::Tree(
                clone_tree(root, &path, true)?,
                kind == rfs::FileType::Directory,
            ),
            rfs::FileType::Symlink => Entry::Link(
                rfs::readlinkat(&listing, name.as_c_str(), Vec::new())
                    .map_err(rustix_err(&path))?,
            ),
            _ => continue,
        };
        entries.push((name, made));
    }
    let base = detached_tmpfs(
        ("mode", "0755"),
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
        dir,
    )?;
    let target = open_in(root, dir)?;
    attach_at(base.as_fd(), target.as_fd(), dir)?;
    for (name, entry) in entries {
        let path = dir.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        match entry {
            Entry::Link(to) => {
                rfs::symlinkat(to.as_c_str(), &base, name.as_c_str()).map_err(rustix_err(&path))?
            }
            Entry::Tree(tree, is_dir) => {
                let inside = Path::new("/").join(std::ffi::OsStr::from_bytes(name.as_bytes()));
                create_mount_point(base.as_fd(), &inside, is_dir)?;
                let node = open_in(base.as_fd(), &inside)?;
                attach_at(tree.as_fd(), node.as_fd(), &path)?;
            }
        }
    }
    Ok(base)
}

/// nosuid, nodev and noexec: the attributes of a tmpfs that only holds data.
const NO_EXEC_ATTRS: MountAttrFlags = MountAttrFlags::MOUNT_ATTR_NOSUID
    .union(MountAttrFlags::MOUNT_ATTR_NODEV)
    .union(MountAttrFlags::MOUNT_ATTR_NOEXEC);

/// A new tmpfs, not attached anywhere yet, with one `option = value` setting and
/// the mount attributes `attrs`; errors name `what`.
fn detached_tmpfs(
    (option, value): (&str, &str),
    attrs: MountAttrFlags,
    what: &Path,
) -> Result<OwnedFd, SandboxError> {
    let fs = rmount::fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(rustix_err(what))?;
    rmount::fsconfig_set_string(fs.as_fd(), option, value).map_err(rustix_err(what))?;
    rmount::fsconfig_create(fs.as_fd()).map_err(rustix_err(what))?;
    rmount::fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(rustix_err(what))
}

/// A detached tmpfs holding an empty file and an empty directory, read-only: the
/// source of every denied path's bind and every mask (cheaper than a tmpfs per
/// denied directory). A clone keeps the flags, so each costs one `open_tree`.
fn empty_source() -> Result<OwnedFd, SandboxError> {
    let mnt = detached_tmpfs(("size", "4k"), NO_EXEC_ATTRS, Path::new("tmpfs"))?;
    rfs::openat(
        mnt.as_fd(),
        "empty",
        OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o444),
    )
    .map_err(rustix_err("tmpfs"))?;
    rfs::mkdirat(mnt.as_fd(), "dir", Mode::from_raw_mode(0o755)).map_err(rustix_err("tmpfs"))?;
    set_attrs(mnt.as_fd(), READ_ONLY, "tmpfs")?;
    Ok(mnt)
}

/// Makes each synthesized file in a small tmpfs of its own (read-only once
/// written) and binds it over its target, which the view shows (a hidden file's
/// empty stand-in). The tmpfs is never attached itself: only the file is.
fn lay_synthesized(root: BorrowedFd<'_>, files: &[SyntheticFile]) -> Result<(), SandboxError> {
    for (i, file) in files.iter().enumerate() {
        let size = (file.content.len() as u64 + 4096).to_string();
        let mnt = detached_tmpfs(("size", size.as_str()), NO_EXEC_ATTRS, &file.target)?;
        let name = format!("f{i}");
        let fd = rfs::openat(
            mnt.as_fd(),
            name.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o444),
        )
        .map_err(rustix_err(&file.target))?;
        let mut rest = file.content.as_slice();
        while !rest.is_empty() {
            let n = rustix::io::write(&fd, rest).map_err(rustix_err(&file.target))?;
            rest = &rest[n..];
        }
        drop(fd);
        set_attrs(mnt.as_fd(), READ_ONLY, &file.target)?;
        let source = rmount::open_tree(
            mnt.as_fd(),
            name.as_str(),
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
        )
        .map_err(rustix_err(&file.target))?;
        let target = open_in(root, &file.target)?;
        attach_at(source.as_fd(), target.as_fd(), &file.target)?;
        // As with the empty source: closing the unattached mount now would wait for
        // an RCU grace period; it goes when the supervisor exits.
        std::mem::forget(mnt);
    }
    Ok(())
}

/// A bind of `name` (`empty` or `dir`) of the read-only [`empty_source`].
fn clone_empty(dir: BorrowedFd<'_>, name: &str, for_path: &Path) -> Result<OwnedFd, SandboxError> {
    rmount::open_tree(
        dir,
        name,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(rustix_err(for_path))
}

/// Clones, before anything is mounted over them, the host paths that binds take
/// (placeholders later: they do not exist yet).
fn clone_sources(
    host: BorrowedFd<'_>,
    plan: &ViewPlan,
) -> Result<Vec<Option<OwnedFd>>, SandboxError> {
    plan.ops
        .iter()
        .map(|op| {
            if op.placeholder {
                Ok(None)
            } else {
                clone_source(host, op)
            }
        })
        .collect()
}

/// The host path a bind takes, cloned with its mount flags set; `None` for mounts
/// that are not binds.
fn clone_source(host: BorrowedFd<'_>, op: &MountOp) -> Result<Option<OwnedFd>, SandboxError> {
    let attrs = match op.kind {
        MountKind::Bind { writable: false } => READ_ONLY,
        MountKind::Bind { writable: true } | MountKind::Pin => {
            sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV
        }
        _ => return Ok(None),
    };
    let tree = clone_tree(host, &op.path, true)?;
    set_attrs(tree.as_fd(), attrs, &op.path)?;
    Ok(Some(tree))
}

/// Clones the mount tree at `path`, resolved below the host's root without
/// following any symlink: a directory swapped for a symlink since the policy was
/// resolved (by a sandbox running in the same workspace, say) is refused, not
/// followed.
fn clone_tree(host: BorrowedFd<'_>, path: &Path, recursive: bool) -> Result<OwnedFd, SandboxError> {
    let node = open_in(host, path)?;
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_EMPTY_PATH;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    rmount::open_tree(node.as_fd(), "", flags).map_err(rustix_err(path))
}

/// A read-only bind of one host file.
fn clone_file_read_only(host: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, SandboxError> {
    let tree = clone_tree(host, path, false)?;
    set_attrs(tree.as_fd(), READ_ONLY, path)?;
    Ok(tree)
}

fn set_attrs(tree: BorrowedFd<'_>, attrs: u64, path: impl AsRef<Path>) -> Result<(), SandboxError> {
    sys::mount_setattr_recursive(tree, attrs, 0).map_err(err(path))
}

/// Opens `path` (absolute, as in the view) below `root` without following
/// symlinks, as an O_PATH handle.
fn open_in(root: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, SandboxError> {
    open_beneath(root, path, OFlags::PATH)
}

/// Like [`open_in`], a directory opened for reading (to create entries in it).
fn open_dir_in(root: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, SandboxError> {
    open_beneath(root, path, OFlags::RDONLY | OFlags::DIRECTORY)
}

fn open_beneath(root: BorrowedFd<'_>, path: &Path, flags: OFlags) -> Result<OwnedFd, SandboxError> {
    let relative = path.strip_prefix("/").unwrap_or(path);
    let relative = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    rfs::openat2(
        root,
        relative,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(rustix_err(path))
}

/// `/proc/self/fd/N`: a path naming exactly the inode `fd` holds, for mount(2).
fn fd_path(fd: BorrowedFd<'_>) -> CString {
    // A formatted number holds no NUL; were it to, the empty path would fail the
    // mount (ENOENT) rather than name anything.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// The options of a private, writable tmpfs (`/tmp`, `/dev/shm`).
fn scratch_options(size: Option<u64>) -> String {
    match size {
        Some(bytes) => format!("mode=1777,size={bytes}"),
        None => "mode=1777".into(),
    }
}

fn apply(
    root: BorrowedFd<'_>,
    op: &MountOp,
    source: Option<OwnedFd>,
    tmpfs_size: Option<u64>,
) -> Result<(), SandboxError> {
    let target = open_mount_point(root, &op.path, op.create_mount_point, op.is_dir)?;
    match (op.kind, source) {
        (_, Some(source)) => attach_at(source.as_fd(), target.as_fd(), &op.path),
        // A denied directory with mount points inside gets a tmpfs of its own, made
        // read-only once they exist.
        (MountKind::EmptyDir, None) => mount_tmpfs(
            &fd_path(target.as_fd()),
            "mode=0755,size=4k,nr_inodes=64",
            EMPTY_DIR_FLAGS,
        )
        .map_err(err(&op.path)),
        (MountKind::Scratch, _) => mount_tmpfs(
            &fd_path(target.as_fd()),
            &scratch_options(tmpfs_size),
            libc::MS_NOSUID | libc::MS_NODEV,
        )
        .map_err(err(&op.path)),
        (MountKind::Bind { .. } | MountKind::Pin | MountKind::EmptyFile, None) => {
            Err(SandboxError::View {
                path: op.path.clone(),
                source: io::Error::other("no source was cloned for this bind"),
            })
        }
    }
}

/// Attaches the detached mount `source` on the inode `target` holds.
fn attach_at(
    source: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    path: &Path,
) -> Result<(), SandboxError> {
    rmount::move_mount(
        source,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(rustix_err(path))
}

/// Opens the mount point `path`, made first when `create` says it may be missing
/// (in a tmpfs of ours) and it is: most are there already (the workspace's
/// protected paths where the workspace lies in the private `/tmp`), and walking
/// the path a component at a time costs an open per component.
fn open_mount_point(
    root: BorrowedFd<'_>,
    path: &Path,
    create: bool,
    is_dir: bool,
) -> Result<OwnedFd, SandboxError> {
    match open_in(root, path) {
        Err(_) if create => {
            create_mount_point(root, path, is_dir)?;
            open_in(root, path)
        }
        opened => opened,
    }
}

/// Makes a mount point inside one of our tmpfs mounts: its missing ancestors as
/// directories, the last component as a directory or an empty file.
fn create_mount_point(root: BorrowedFd<'_>, path: &Path, is_dir: bool) -> Result<(), SandboxError> {
    let mut existing = PathBuf::from("/");
    let components: Vec<_> = path
        .strip_prefix("/")
        .unwrap_or(path)
        .components()
        .collect();
    for (i, component) in components.iter().enumerate() {
        let next = existing.join(component);
        let last = i + 1 == components.len();
        if open_in(root, &next).is_err() {
            let parent = open_dir_in(root, &existing)?;
            let name = component.as_os_str();
            let made = if last && !is_dir {
                rfs::openat(
                    parent.as_fd(),
                    name,
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .map(drop)
            } else {
                rfs::mkdirat(parent.as_fd(), name, Mode::from_raw_mode(0o755))
            };
            made.map_err(rustix_err(&next))?;
        }
        existing = next;
    }
    Ok(())
}

fn mount_tmpfs(target: &std::ffi::CStr, options: &str, flags: libc::c_ulong) -> io::Result<()> {
    let options = CString::new(options)?;
    sys::mount(
        Some(c"tmpfs"),
        target,
        Some(c"tmpfs"),
        flags,
        Some(&options),
    )
}

/// Makes the mount at `path` read-only. A bind remount sets the mount's flags to
/// exactly those given, so `keep` lists the ones it already has (nosuid, ...).
/// The path is opened afresh: a handle from before the mount names what is under it.
fn remount_read_only(
    root: BorrowedFd<'_>,
    path: &Path,
    keep: libc::c_ulong,
) -> Result<(), SandboxError> {
    let target = open_in(root, path)?;
    let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | keep;
    sys::mount(None, &fd_path(target.as_fd()), None, flags, None).map_err(err(path))
}

/// Where a view that is served to another machine is mounted (again) for its
/// server: a directory of the view's own `/dev`, which the guest covers with a
/// `/dev` of its own.
pub const SERVED_VIEW: &str = "/dev/cordon-view";

/// What of `/dev` the command may write (Landlock): all of it, but in a served
/// view only its devices, `/dev/pts` and `/dev/shm`: a rule on `/dev` would
/// cover the served tree below [`SERVED_VIEW`] too, leaving its read-only parts
/// to their mount flags alone.
pub fn writable_dev(plan: &ViewPlan) -> Vec<PathBuf> {
    let dev = Path::new("/dev");
    if !plan.served {
        return vec![dev.to_path_buf()];
    }
    (DEVICES.iter().chain(&plan.devices))
        .chain(&["pts", "shm"])
        .map(|d| dev.join(d))
        .collect()
}

/// The view as a server gives it to another machine, mounted at
/// [`SERVED_VIEW`]: the whole view as built, but its `/proc`, `/sys` and `/dev`
/// empty (the guest mounts its own). The server's own `/proc` is not served: the
/// guest would reach the server's process through it (`/proc/self/mem`).
fn serve_view(root: BorrowedFd<'_>, empty: BorrowedFd<'_>) -> Result<(), SandboxError> {
    let at = Path::new(SERVED_VIEW);
    let tree = clone_tree(root, Path::new("/"), true)?;
    let target = open_in(root, at)?;
    attach_at(tree.as_fd(), target.as_fd(), at)?;
    let served = open_in(root, at)?;
    for path in ["/proc", "/sys", "/dev"] {
        mask(served.as_fd(), empty, Path::new(path))?;
    }
    Ok(())
}

/// A tmpfs `/dev` with only harmless devices (and those a server of the view
/// is given), a private devpts and `/dev/shm`; with `served`, the directory
/// [`SERVED_VIEW`].
fn build_dev(
    root: BorrowedFd<'_>,
    names: &[&str],
    devices: &[OwnedFd],
    shm_size: Option<u64>,
    served: bool,
) -> Result<(), SandboxError> {
    let dev = Path::new("/dev");
    let target = open_in(root, dev)?;
    mount_tmpfs(&fd_path(target.as_fd()), "mode=0755,size=64k", DEV_FLAGS).map_err(err(dev))?;
    let dir = open_dir_in(root, dev)?;
    for (name, source) in names.iter().zip(devices) {
        rfs::openat(
            dir.as_fd(),
            *name,
            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        )
        .map_err(rustix_err(dev.join(name)))?;
        let node = open_in(root, &dev.join(name))?;
        attach_at(source.as_fd(), node.as_fd(), &dev.join(name))?;
    }
    let served_dir = Path::new(SERVED_VIEW).file_name().filter(|_| served);
    for sub in ["pts", "shm"]
        .iter()
        .copied()
        .map(std::ffi::OsStr::new)
        .chain(served_dir)
    {
        rfs::mkdirat(dir.as_fd(), sub, Mode::from_raw_mode(0o755))
            .map_err(rustix_err(dev.join(sub)))?;
    }
    let pts = open_in(root, &dev.join("pts"))?;
    sys::mount(
        Some(c"devpts"),
        &fd_path(pts.as_fd()),
        Some(c"devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(c"newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(err("/dev/pts"))?;
    let shm = open_in(root, &dev.join("shm"))?;
    mount_tmpfs(
        &fd_path(shm.as_fd()),
        &scratch_options(shm_size),
        libc::MS_NOSUID | libc::MS_NODEV,
    )
    .map_err(err("/dev/shm"))?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        rfs::symlinkat(to, dir.as_fd(), link).map_err(rustix_err(dev.join(link)))?;
    }
    remount_read_only(root, dev, DEV_FLAGS)
}

/// A fresh procfs for the sandbox's PID namespace, its global knobs read-only and
/// the entries that show the host masked. Each read-only entry is one bind of
/// itself; each mask one clone of the shared empty file or directory.
fn build_proc(root: BorrowedFd<'_>, empty: BorrowedFd<'_>) -> Result<(), SandboxError> {
    let proc = Path::new("/proc");
    let target = open_in(root, proc)?;
    sys::mount(
        Some(c"proc"),
        &fd_path(target.as_fd()),
        Some(c"proc"),
        PROC_FLAGS,
        None,
    )
    .map_err(err(proc))?;
    for entry in PROC_READ_ONLY {
        let path = proc.join(entry);
        let Ok(node) = open_in(root, &path) else {
            continue; // not on this kernel
        };
        let tree = rmount::open_tree(
            node.as_fd(),
            "",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_EMPTY_PATH,
        )
        .map_err(rustix_err(&path))?;
        set_attrs(tree.as_fd(), READ_ONLY, &path)?;
        attach_at(tree.as_fd(), node.as_fd(), &path)?;
    }
    for entry in PROC_MASKED {
        mask(root, empty, &proc.join(entry))?;
    }
    Ok(())
}

/// Masks the /sys paths of [`SYS_MASKED`] that exist.
fn mask_sys(root: BorrowedFd<'_>, empty: BorrowedFd<'_>) -> Result<(), SandboxError> {
    for path in SYS_MASKED {
        mask(root, empty, Path::new(path))?;
    }
    Ok(())
}

/// Covers `path`, if it exists, with the shared empty file or directory (read-only).
fn mask(root: BorrowedFd<'_>, empty: BorrowedFd<'_>, path: &Path) -> Result<(), SandboxError> {
    let Ok(node) = open_in(root, path) else {
        return Ok(()); // not on this kernel, or hidden by the policy
    };
    let is_dir = rfs::fstat(&node)
        .map(|st| rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory)
        .map_err(rustix_err(path))?;
    let source = clone_empty(empty, if is_dir { "dir" } else { "empty" }, path)?;
    attach_at(source.as_fd(), node.as_fd(), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Landlock's writable roots of a served view never contain the tree served
    /// to the guest: there, the view's read-only parts stay read-only for
    /// Landlock too, not for their mount flags alone.
    #[test]
    fn a_served_view_is_not_below_a_writable_dev() {
        let mut plan = ViewPlan::default();
        assert_eq!(writable_dev(&plan), [PathBuf::from("/dev")]);
        assert!(Path::new(SERVED_VIEW).starts_with("/dev"));
        plan.served = true;
        plan.devices = vec!["kvm"];
        let roots = writable_dev(&plan);
        assert!(roots.contains(&PathBuf::from("/dev/kvm")));
        assert!(roots.contains(&PathBuf::from("/dev/null")));
        for root in &roots {
            assert!(!Path::new(SERVED_VIEW).starts_with(root), "{root:?}");
        }
    }
}
