//! Missing writable roots (`--allow-write ~/.cache/pip` on a machine that never
//! ran pip): cordon makes one when it lies in the user's home directory and every
//! directory from the home down to it is the user's; anything else is a clear
//! error naming the path, the rule and the fix. Before this, a missing root ended
//! in a puzzling failure to place the protected-path placeholders inside it.

use cordon_policy::{Access, PathRule, Policy};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

/// Makes every missing writable root the policy names, or says why it cannot.
/// Returns the directories made, for the caller to mention.
pub fn ensure(policy: &Policy) -> Result<Vec<String>, String> {
    let mut made = Vec::new();
    for rule in policy.rules.iter().filter(|r| r.access == Access::Write) {
        match std::fs::symlink_metadata(&rule.path) {
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", rule.path.display())),
        }
        create(rule, &policy.home)?;
        made.push(format!(
            "made the missing writable directory {} ({})",
            rule.path.display(),
            rule.origin
        ));
    }
    Ok(made)
}

/// Creates `rule.path` below `home`, one component at a time, each opened
/// without following a symlink and checked to be the caller's.
fn create(rule: &PathRule, home: &Path) -> Result<(), String> {
    let path = &rule.path;
    let fix = format!(
        "create it yourself (mkdir -p {}) or drop the rule",
        path.display()
    );
    let refuse = |why: String| {
        Err(format!(
            "{}: the writable path ({}) does not exist, and {why}; {fix}",
            path.display(),
            rule.origin
        ))
    };
    let Some(below) = path
        .strip_prefix(home)
        .ok()
        .filter(|b| !b.as_os_str().is_empty())
    else {
        return refuse(format!(
            "cordon makes a missing one only inside your home directory ({})",
            home.display()
        ));
    };
    let me = rustix::process::geteuid();
    let mut dir = match rustix::fs::open(home, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            return refuse(format!(
                "your home directory {} cannot be opened: {e}",
                home.display()
            ));
        }
    };
    let mut here = home.to_path_buf();
    for part in below.components() {
        if let Err(why) = owned_by(&dir, me, &here) {
            return refuse(why);
        }
        let Component::Normal(name) = part else {
            return refuse(format!("{} is not a plain path", path.display()));
        };
        here.push(name);
        dir = match open_or_make(&dir, name) {
            Ok(next) => next,
            Err(e) => return refuse(format!("cordon cannot make {}: {e}", here.display())),
        };
    }
    owned_by(&dir, me, &here).or_else(refuse)
}

/// Opens directory `name` in `dir`, making it first if it is missing (mode 0777
/// less the umask, as `mkdir` does); never follows a symlink.
fn open_or_make(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Err(Errno::NOENT) => match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o777)) {
            Ok(()) | Err(Errno::EXIST) => rustix::fs::openat(dir, name, flags, Mode::empty()),
            Err(e) => Err(e),
        },
        other => other,
    }
}

/// The directory open at `dir` (at `here`) belongs to the caller.
fn owned_by(dir: &OwnedFd, me: rustix::process::Uid, here: &Path) -> Result<(), String> {
    let stat = rustix::fs::fstat(dir).map_err(|e| format!("{}: {e}", here.display()))?;
    if stat.st_uid == me.as_raw() {
        Ok(())
    } else {
        Err(format!(
            "cordon makes a missing one only where every directory from your home down is yours, but {} belongs to uid {}",
            here.display(),
            stat.st_uid
        ))
    }
}
