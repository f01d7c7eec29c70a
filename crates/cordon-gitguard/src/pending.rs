//! Runs whose audit is still to come. A run that is killed (SIGKILL, a crash, the
//! machine going down) never reaches its audit; what it wrote must still be judged.
//! So each run records when it began, per writable root, in a file of its own, and
//! removes it once its audit is done. The next run of the user on that root takes
//! the earliest start of the records whose run is gone as the start of its own
//! audit, and removes them after it.
//!
//! The records live in `/dev/shm/cordon-UID/pending-STEM/PID`, or under `/tmp`
//! where `/dev/shm` is not a tmpfs (see [`user_dir`]): a fixed place for the user,
//! whatever `TMPDIR`, that no sandbox sees; STEM a hash of the root. They do not
//! outlive a reboot (`/dev/shm` is memory, and most systems empty `/tmp` at boot),
//! so a run cut short by the machine going down is not audited by the next one.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The user's directory of cordon's run records (and of the root locks of
/// cordon-sandbox); `None` if it cannot be had safely (someone else's, or a
/// symlink). In `/dev/shm` where that is a tmpfs, else in `/tmp`: each run makes
/// and removes a record and a placeholder list there, and on a disk file system
/// (`/tmp` on ext4, Debian's default) each of those waits for the journal, a
/// tenth of a millisecond or more on every run. Both are fixed places, the same
/// whatever the environment, and no sandbox sees either (its `/dev` and `/tmp` are
/// its own).
pub fn user_dir() -> Option<PathBuf> {
    let uid = rustix::process::geteuid().as_raw();
    let base = if is_tmpfs(Path::new("/dev/shm")) {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dir = PathBuf::from(format!("{base}/cordon-{uid}"));
    let _ = fs::DirBuilder::new().mode(0o700).create(&dir);
    let meta = fs::symlink_metadata(&dir).ok()?;
    (meta.is_dir() && meta.uid() == uid && meta.mode() & 0o022 == 0).then_some(dir)
}

/// Whether `dir` is a directory on a tmpfs (memory, no journal).
// f_type's C type differs between architectures (a long here), hence the cast.
#[allow(clippy::unnecessary_cast)]
fn is_tmpfs(dir: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir())
        && rustix::fs::statfs(dir).is_ok_and(|s| s.f_type as i64 == TMPFS_MAGIC)
}

/// A root's file name stem: a hash of its path that must not change between
/// cordon builds (std's DefaultHasher may): FNV-1a, 64 bits.
pub fn stem(root: &Path) -> String {
    let hash = root
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("{hash:016x}")
}

/// This run's records, one per root.
pub struct Pending {
    mine: Vec<PathBuf>,
    /// Records of runs that are gone, judged with this run's audit.
    orphans: Vec<PathBuf>,
    since: SystemTime,
}

impl Pending {
    /// Records that a run on `roots` began at `since`, and finds the records of
    /// runs on them that ended without their audit.
    pub fn begin(roots: &[PathBuf], since: SystemTime) -> Pending {
        let mut pending = Pending {
            mine: Vec::new(),
            orphans: Vec::new(),
            since,
        };
        let Some(dir) = user_dir() else {
            return pending;
        };
        let pid = std::process::id();
        let nanos = since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        for root in roots {
            // A directory per root, so a run reads only the records of its roots.
            let records = dir.join(format!("pending-{}", stem(root)));
            let _ = fs::DirBuilder::new().mode(0o700).create(&records);
            for entry in fs::read_dir(&records).into_iter().flatten().flatten() {
                let gone = (entry.file_name().to_str())
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|p| p != pid && !Path::new("/proc").join(p.to_string()).exists());
                if !gone {
                    continue;
                }
                if let Some(t) = fs::read_to_string(entry.path())
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                {
                    let t = UNIX_EPOCH + Duration::from_nanos(t);
                    pending.since = pending.since.min(t);
                }
                pending.orphans.push(entry.path());
            }
            let mine = records.join(pid.to_string());
            if fs::write(&mine, nanos.to_string()).is_ok() {
                pending.mine.push(mine);
            }
        }
        pending
    }

    /// From when the audit must judge: this run's start, or the earliest start of
    /// a run that ended without its audit.
    pub fn since(&self) -> SystemTime {
        self.since
    }

    /// The audit is done: this run's records and the orphans it covered go.
    pub fn done(self) {
        for path in self.mine.iter().chain(&self.orphans) {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stem_is_a_fixed_function_of_the_path() {
        // FNV-1a of "/w": fixed, so every cordon build agrees on the file.
        assert_eq!(stem(Path::new("/w")), "07d65107b49cb3cb");
        assert_ne!(stem(Path::new("/w")), stem(Path::new("/x")));
    }

    #[test]
    fn a_run_gone_without_its_audit_moves_the_next_runs_start_back() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let dir = user_dir().unwrap();
        let early = UNIX_EPOCH + Duration::from_secs(1_000_000);
        // A record of a run whose process is gone (pid beyond pid_max).
        let records = dir.join(format!("pending-{}", stem(&root)));
        fs::create_dir_all(&records).unwrap();
        let orphan = records.join("4194999");
        fs::write(&orphan, "1000000000000000").unwrap();
        let now = SystemTime::now();
        let p = Pending::begin(std::slice::from_ref(&root), now);
        assert_eq!(p.since(), early);
        p.done();
        assert!(!orphan.exists());
        // With none left, a run's own start counts.
        let p = Pending::begin(std::slice::from_ref(&root), now);
        assert_eq!(p.since(), now);
        p.done();
    }
}
