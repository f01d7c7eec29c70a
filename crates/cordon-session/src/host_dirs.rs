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
/// Returns the directories made, for the caller to mention. The managed caches'
/// directories are made first, without a word: they are cordon's.
pub fn ensure(policy: &Policy) -> Result<Vec<String>, crate::SessionError> {
    ensure_all(policy).map_err(crate::SessionError::HostDir)
}

fn ensure_all(policy: &Policy) -> Result<Vec<String>, String> {
    ensure_caches(policy)?;
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

/// Makes the managed caches' directories (the workspace's cache dir and each
/// tool's in it) below your cache directory, as [`create`] makes a writable root.
fn ensure_caches(policy: &Policy) -> Result<(), String> {
    let caches = &policy.caches;
    let (Some(dir), Some(base)) = (&caches.dir, &caches.base) else {
        return Ok(());
    };
    // Below the home directory, from the home down (~/.cache may be missing).
    let base = if base.starts_with(&policy.home) {
        policy.home.as_path()
    } else {
        base.as_path()
    };
    let dirs = std::iter::once(dir).chain(caches.managed.iter().map(|c| &c.dir));
    for path in dirs {
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        make_below(base, path).map_err(|why| {
            format!(
                "cannot make the managed cache directory {}: {why} (hint: make it yourself, or turn the managed caches off with \"caches\": false in ~/.config/cordon/config.json)",
                path.display()
            )
        })?;
    }
    make_mount_points(caches);
    Ok(())
}

/// Makes the missing directories a managed cache is bound over (`~/.cargo/git`
/// before cargo's first git dependency), empty, as the tool itself would make
/// them. Without one the view shows the target inside a tmpfs copy of its
/// parent (a mount per entry of `~/.cargo`, on every run). Best effort: where
/// the parent is not the user's, the copy it is.
fn make_mount_points(caches: &cordon_policy::Caches) {
    for cache in &caches.managed {
        let cordon_policy::CacheUse::Mount { target } = &cache.uses else {
            continue;
        };
        let Some(parent) = target.parent() else {
            continue;
        };
        if std::fs::symlink_metadata(target).is_err()
            && std::fs::symlink_metadata(parent).is_ok_and(|m| m.is_dir())
        {
            let _ = make_below(parent, target);
        }
    }
}

/// Creates `rule.path` below `home`, one component at a time, each opened
/// without following a symlink and checked to be the caller's.
fn create(rule: &PathRule, home: &Path) -> Result<(), String> {
    let path = &rule.path;
    make_below(home, path).map_err(|why| {
        format!(
            "{}: the writable path ({}) does not exist, and {why}; create it yourself (mkdir -p {}) or drop the rule",
            path.display(),
            rule.origin,
            path.display()
        )
    })
}

/// Creates `path` below the existing directory `base`, one component at a time,
/// each opened without following a symlink and checked to be the caller's; the
/// error says why not.
fn make_below(base: &Path, path: &Path) -> Result<(), String> {
    let Some(below) = path
        .strip_prefix(base)
        .ok()
        .filter(|b| !b.as_os_str().is_empty())
    else {
        return Err(format!(
            "cordon makes a missing one only inside your home directory ({})",
            base.display()
        ));
    };
    let me = rustix::process::geteuid();
    let mut dir = rustix::fs::open(base, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| format!("{} cannot be opened: {e}", base.display()))?;
    let mut here = base.to_path_buf();
    for part in below.components() {
        owned_by(&dir, me, &here)?;
        let Component::Normal(name) = part else {
            return Err(format!("{} is not a plain path", path.display()));
        };
        here.push(name);
        dir = open_or_make(&dir, name)
            .map_err(|e| format!("cordon cannot make {}: {e}", here.display()))?;
    }
    owned_by(&dir, me, &here)
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
