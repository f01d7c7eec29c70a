//! A shared lock per workspace, held by every sandbox using it, so that the last
//! one out (and only it) removes the placeholders cordon made for protected paths.
//! Removing a placeholder while another sandbox still has it mounted would detach
//! that sandbox's protection.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub struct WorkspaceLock {
    file: Option<File>,
}

fn lock_path(workspace: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    workspace.hash(&mut hasher);
    let uid = rustix::process::geteuid().as_raw();
    let dir = std::env::var_os("XDG_RUNTIME_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    dir.join(format!("cordon-{uid}-{:016x}.lock", hasher.finish()))
}

impl WorkspaceLock {
    /// Takes a shared lock; if the lock file cannot be made, the lock is absent and
    /// `is_sole_user` answers false (placeholders are then left, which is safe).
    pub fn acquire(workspace: &Path) -> WorkspaceLock {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(lock_path(workspace))
            .ok()
            .filter(|f| unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH) } == 0);
        WorkspaceLock { file }
    }

    /// Upgrades to an exclusive lock without waiting: true if no other sandbox holds
    /// this workspace's lock.
    pub fn is_sole_user(&self) -> bool {
        self.file.as_ref().is_some_and(
            |f| unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0,
        )
    }
}
