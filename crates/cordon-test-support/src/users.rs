//! Who runs cordon in a test: root, and the ordinary user `cordon-test`, which the
//! suites create (under a file lock) when they run as root.

use crate::process::PATH;
use std::fs;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::OnceLock;

/// The ordinary user the tests create when they run as root.
pub const TEST_USER: &str = "cordon-test";

/// Who runs cordon in one variant of a test.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl User {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// "root" or "user": used in fixture names and failure messages.
    pub fn label(&self) -> &'static str {
        if self.is_root() { "root" } else { "user" }
    }

    /// Whether commands for this user must switch uid/gid (the test process is root
    /// and this user is not).
    fn needs_switch(&self) -> bool {
        euid() != self.uid || egid() != self.gid
    }

    /// Applies this user's ids to a command run by the (root) test process. std
    /// clears the supplementary groups when it switches uid as root.
    pub fn apply(&self, cmd: &mut Command) {
        if self.needs_switch() {
            cmd.uid(self.uid).gid(self.gid);
        }
    }
}

pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

pub fn egid() -> u32 {
    rustix::process::getegid().as_raw()
}

pub fn running_as_root() -> bool {
    euid() == 0
}

/// The users every test runs as: root and `cordon-test` when running as root, the
/// current user otherwise.
pub fn users() -> Vec<User> {
    if running_as_root() {
        vec![
            User {
                name: "root".into(),
                uid: 0,
                gid: 0,
            },
            test_user(),
        ]
    } else {
        eprintln!("note: root variant skipped: the tests are not running as root");
        vec![current_user()]
    }
}

fn current_user() -> User {
    let uid = euid();
    let name = passwd_entries()
        .into_iter()
        .find(|(_, u, _)| *u == uid)
        .map(|(n, _, _)| n)
        .unwrap_or_else(|| format!("uid{uid}"));
    User {
        name,
        uid,
        gid: egid(),
    }
}

/// (name, uid, gid) of every line of /etc/passwd.
fn passwd_entries() -> Vec<(String, u32, u32)> {
    let text = fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((
                f.first()?.to_string(),
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect()
}

fn lookup_user(name: &str) -> Option<User> {
    passwd_entries()
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(name, uid, gid)| User { name, uid, gid })
}

/// The ordinary test user, created on first use. Safe under parallel tests and
/// parallel test binaries: creation happens under an exclusive file lock.
pub fn test_user() -> User {
    static USER: OnceLock<User> = OnceLock::new();
    USER.get_or_init(|| {
        assert!(running_as_root(), "only root can create the test user");
        if let Some(u) = lookup_user(TEST_USER) {
            return u;
        }
        let lock = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open("/tmp/.cordon-test-useradd.lock")
            .expect("open the useradd lock file");
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .expect("flock the useradd lock file");
        if lookup_user(TEST_USER).is_none() {
            let tries: [&[&str]; 2] = [
                &["--system", "--create-home", "--shell", "/bin/sh", TEST_USER],
                &["-m", TEST_USER],
            ];
            let mut errors = String::new();
            for args in tries {
                let out = Command::new("useradd")
                    .args(args)
                    .env("PATH", PATH)
                    .output()
                    .expect("run useradd");
                if out.status.success() || lookup_user(TEST_USER).is_some() {
                    break;
                }
                errors.push_str(&String::from_utf8_lossy(&out.stderr));
            }
            assert!(
                lookup_user(TEST_USER).is_some(),
                "could not create user {TEST_USER}: {errors}"
            );
        }
        drop(lock); // releases the flock
        lookup_user(TEST_USER).expect("test user exists")
    })
    .clone()
}
