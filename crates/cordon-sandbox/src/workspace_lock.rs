//! Shared locks on writable roots, held by every sandbox of the user that mounts
//! placeholders in them, so that the last one out (and only it) removes the
//! placeholders. Removing a placeholder while another sandbox still has it mounted
//! would detach that sandbox's mount, and with it the protection.
//!
//! - One lock per canonical writable root and user, whatever the environment: the
//!   lock files live in `/dev/shm/cordon-UID/` (`/tmp/cordon-UID/` where `/dev/shm` is
//!   not a tmpfs), a fixed place (not `$TMPDIR` or
//!   `$XDG_RUNTIME_DIR`, which differ between two terminals of one user), that no
//!   sandbox sees (its `/tmp` is its own), so no sandbox can hold a lock itself.
//! - Each root's placeholders are recorded in a list beside its lock before they
//!   are made, so those a killed run leaves behind are removed by the next run that
//!   finds itself the root's only user.

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// The locks of one run, one per writable root.
pub struct RootLocks {
    held: Vec<RootLock>,
}

struct RootLock {
    root: PathBuf,
    lock: File,
    list: PathBuf,
}

/// The directory of the user's lock files (shared with the git audit's run
/// records); `None` if it cannot be had safely (then nothing is locked, and
/// placeholders are left, which is safe).
fn lock_dir() -> Option<PathBuf> {
    cordon_gitguard::pending::user_dir()
}

impl RootLocks {
    /// Takes a shared lock on each root. A root found with no other user first has
    /// the placeholders a killed run left there removed.
    pub fn acquire<'a>(roots: impl Iterator<Item = &'a Path>) -> RootLocks {
        let Some(dir) = lock_dir() else {
            return RootLocks { held: Vec::new() };
        };
        let mut held = Vec::new();
        for root in roots {
            let stem = cordon_gitguard::pending::stem(root);
            let Ok(lock) = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(dir.join(format!("{stem}.lock")))
            else {
                continue;
            };
            let lock = RootLock {
                root: root.to_path_buf(),
                lock,
                list: dir.join(format!("{stem}.placeholders")),
            };
            if flock(lock.lock.as_fd(), FlockOperation::NonBlockingLockExclusive).is_ok() {
                lock.remove_listed();
            }
            // From exclusive to shared (or a first shared lock): waits only while
            // another run holds it exclusively, which is as long as its cleanup.
            if flock(lock.lock.as_fd(), FlockOperation::LockShared).is_ok() {
                held.push(lock);
            }
        }
        RootLocks { held }
    }

    /// Records placeholders about to be made, each in the list of the deepest
    /// locked root holding it.
    pub fn record(&self, placeholders: &[PathBuf]) {
        for lock in &self.held {
            let mine: Vec<&PathBuf> = placeholders
                .iter()
                .filter(|p| self.owner(p).is_some_and(|o| o.root == lock.root))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let mut text = Vec::new();
            for p in mine {
                text.extend_from_slice(p.as_os_str().as_bytes());
                text.push(b'\n');
            }
            // One write with O_APPEND: lines of concurrent runs do not interleave.
            let _ = fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&lock.list)
                .and_then(|mut f| f.write_all(&text));
        }
    }

    fn owner(&self, path: &Path) -> Option<&RootLock> {
        self.held
            .iter()
            .filter(|l| path.starts_with(&l.root) && path != l.root)
            .max_by_key(|l| l.root.components().count())
    }

    /// Ends the run's use of its roots: in each root no other sandbox uses, the
    /// listed placeholders are removed.
    pub fn release(self) {
        for lock in &self.held {
            if flock(lock.lock.as_fd(), FlockOperation::NonBlockingLockExclusive).is_ok() {
                lock.remove_listed();
            }
        }
    }
}

impl RootLock {
    /// Removes the untouched placeholders of the list, then empties it. Called with
    /// the exclusive lock held.
    fn remove_listed(&self) {
        let Ok(text) = fs::read(&self.list) else {
            return;
        };
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let path = Path::new(std::ffi::OsStr::from_bytes(line));
            // Only below this root: the list is cordon's, but checked all the same.
            if path.starts_with(&self.root) && path != self.root {
                crate::view::plan::remove_placeholder(path);
            }
        }
        let _ = fs::remove_file(&self.list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_user_removes_placeholders_and_a_killed_runs_are_removed_next_time() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let placeholder = root.join(".vscode");
        let a = RootLocks::acquire([root.as_path()].into_iter());
        let b = RootLocks::acquire([root.as_path()].into_iter());
        a.record(std::slice::from_ref(&placeholder));
        fs::write(&placeholder, b"").unwrap();
        a.release();
        assert!(placeholder.exists(), "b still uses the root");
        // b is killed: its lock goes with its process, its list stays.
        drop(b);
        assert!(placeholder.exists());
        let c = RootLocks::acquire([root.as_path()].into_iter());
        assert!(!placeholder.exists(), "the next sole user removes it");
        c.release();
    }
}
