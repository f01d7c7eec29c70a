//! A shared lock per workspace, held by every sandbox using it, so that the last
//! one out (and only it) removes the placeholders cordon made for protected paths.
//! Removing a placeholder while another sandbox still has it mounted would detach
//! that sandbox's protection.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub struct WorkspaceLock {
    file: Option<File>,
}

/// The lock file's path, named by a hash of the workspace's path. The hash must
/// not change between cordon builds (std's DefaultHasher may), or two builds
/// would take different locks for one workspace: FNV-1a, 64 bits.
fn lock_path(workspace: &Path) -> PathBuf {
    let hash = workspace
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    let uid = rustix::process::geteuid().as_raw();
    let dir = std::env::var_os("XDG_RUNTIME_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    dir.join(format!("cordon-{uid}-{hash:016x}.lock"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_name_is_a_fixed_function_of_the_path() {
        // FNV-1a of "/w": fixed, so every cordon build agrees on the file.
        let name = lock_path(Path::new("/w"));
        let name = name.file_name().unwrap().to_str().unwrap();
        assert!(name.ends_with("-07d65107b49cb3cb.lock"), "{name}");
        assert_ne!(lock_path(Path::new("/w")), lock_path(Path::new("/x")));
    }
}
