//! After a sandbox ends: finds what it left in its writable roots that would make
//! the host's git run code, and neutralises it.
//!
//! Protected paths keep the workspace's own git settings read-only while a sandbox
//! runs, but git reaches further than fixed names: nested repositories,
//! submodules made inside, gitfiles (`.git` files naming another git dir),
//! `commondir` redirects, and a bare repository at any level (a directory holding
//! `HEAD`, `objects` and `refs`). So once the sandbox has ended, cordon walks each
//! writable root, finds every git dir that a host git started anywhere in it could
//! use, and judges the settings files there that the run may have written (a
//! directory whose entries did not change since the last audit is not read
//! again, only looked at: see [`listing`]):
//!
//! - a `config` or `config.worktree` holding a setting outside the allowlist of
//!   [`config::is_safe`] (or not parsing) is moved aside to `NAME.cordon-quarantine`
//!   and replaced by a copy holding only the safe settings;
//! - a hook (an entry of `hooks/` not ending in `.sample`) is renamed to
//!   `NAME.cordon-quarantine`, which git never runs.
//!
//! "May have written" is judged by change times, which the sandbox cannot set: a
//! file is judged when it, or a directory between its writable root and it, changed
//! after the run began (a renamed directory brings old files along, but its own
//! change time is new). A git dir whose `HEAD`, `objects`, `refs` or `commondir`
//! changed may have just become a git dir around old files, or been pointed
//! elsewhere: all of its settings files are judged, as are those of a git dir that
//! a changed gitfile, `.git` symlink or `commondir` leads to. Paths that stayed
//! read-only during the run (protected paths) are not judged: they are the user's.

pub mod config;
pub mod listing;
pub mod pending;

use listing::{DotGit, Freshness, Listing, Listings};

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The most of a settings or pointer file cordon reads; a larger config is judged
/// unsafe whole.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The suffix of what cordon moved aside.
pub const QUARANTINE_SUFFIX: &str = ".cordon-quarantine";

/// What to audit.
#[derive(Debug, Clone)]
pub struct Audit<'a> {
    /// The writable roots of the run, canonical.
    pub roots: &'a [PathBuf],
    /// Paths that stayed read-only during the run, with everything below them.
    pub read_only: &'a [PathBuf],
    /// When the run began (a little before, so coarse file times still compare
    /// as later).
    pub since: SystemTime,
    /// Where the listings of each root's directories are kept between audits
    /// (see [`listing`]); `None`: every directory is read.
    pub listings: Option<&'a Path>,
}

/// One thing neutralised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The settings file or hook, where git would read it.
    pub path: PathBuf,
    /// The settings that could run code, by name (empty for a hook, or for a
    /// config that did not parse).
    pub settings: Vec<String>,
    /// Why the whole file went, when it did not parse.
    pub unreadable: Option<String>,
    /// Where the original now is.
    pub kept_at: PathBuf,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display();
        let kept = self.kept_at.display();
        if let Some(why) = &self.unreadable {
            write!(
                f,
                "neutralised {path}: the sandbox wrote a git config there that cordon cannot check ({why}); it is now empty, and the original is at {kept}"
            )
        } else if self.settings.is_empty() {
            write!(
                f,
                "neutralised the git hook {path}, which the sandbox wrote: it is now {kept}, which git does not run"
            )
        } else {
            write!(
                f,
                "neutralised {} in {path}, which the sandbox wrote and the host's git would run; the other settings stay, and the original is at {kept} (read it before restoring anything)",
                self.settings.join(", ")
            )
        }
    }
}

/// What the audit did and what it could not check.
#[derive(Debug, Default)]
pub struct Report {
    pub neutralised: Vec<Finding>,
    /// Places that could not be checked, each with the reason.
    pub unchecked: Vec<String>,
    /// How many directories were walked, and how many of them were not read
    /// because their listing from the last audit still held.
    pub walked: usize,
    pub remembered: usize,
}

/// Audits every writable root; see the module's documentation.
pub fn audit(request: &Audit) -> Report {
    let mut auditor = Auditor {
        request,
        since: since_key(request.since),
        seen: HashSet::new(),
        change_times: HashMap::new(),
        report: Report::default(),
    };
    let mut roots: Vec<&PathBuf> = request.roots.iter().collect();
    roots.sort();
    roots.dedup();
    for (i, root) in roots.iter().enumerate() {
        // A root inside another is walked with it.
        if roots[..i].iter().any(|outer| root.starts_with(outer)) {
            continue;
        }
        let file = request
            .listings
            .map(|dir| dir.join(format!("listings-{}", pending::stem(root))));
        let mut listings = file.as_deref().map(Listings::load).unwrap_or_default();
        auditor.walk(root, &mut listings);
        if let Some(file) = &file {
            // Lost, the next audit reads every directory: slower, as safe.
            let _ = listings.save(file);
        }
    }
    auditor.report
}

/// A time as (seconds, nanoseconds) since the epoch, as `ctime` is kept.
fn since_key(t: SystemTime) -> (i64, i64) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            i64::from(d.subsec_nanos()),
        ),
        Err(_) => (0, 0),
    }
}

struct Auditor<'a> {
    request: &'a Audit<'a>,
    since: (i64, i64),
    /// Git dirs already judged (canonical), with whether fully.
    seen: HashSet<(PathBuf, bool)>,
    /// Per device: whether its file system keeps change times that listings
    /// can be checked against ([`listing::trusts_change_times`]).
    change_times: HashMap<u64, bool>,
    report: Report,
}

impl Auditor<'_> {
    fn root_of(&self, path: &Path) -> Option<&Path> {
        self.request
            .roots
            .iter()
            .filter(|r| path.starts_with(r))
            .max_by_key(|r| r.components().count())
            .map(PathBuf::as_path)
    }

    fn is_read_only(&self, path: &Path) -> bool {
        self.request.read_only.iter().any(|p| path.starts_with(p))
    }

    fn changed(&self, meta: &fs::Metadata) -> bool {
        (meta.ctime(), meta.ctime_nsec()) >= self.since
    }

    /// Whether `path` (not following a last symlink) or a directory between its
    /// writable root and it changed during the run.
    fn possibly_changed(&self, path: &Path) -> bool {
        let Some(root) = self.root_of(path) else {
            return false;
        };
        let mut at = Some(path);
        while let Some(p) = at {
            if p == root {
                break;
            }
            match fs::symlink_metadata(p) {
                Ok(m) if self.changed(&m) => return true,
                Ok(_) => {}
                // Vanished or unreadable: treat as changed, so it is judged.
                Err(_) => return true,
            }
            at = p.parent();
        }
        false
    }

    /// Visits every directory below `root` (not following symlinks), looking for
    /// the ways git finds a repository: a `.git` entry, or a directory that is a
    /// git dir itself. A directory that did not change since `listings` had it
    /// is not read again.
    fn walk(&mut self, root: &Path, listings: &mut Listings) {
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Some((listing, freshness)) = self.list(&dir, listings) else {
                continue;
            };
            self.report.walked += 1;
            self.report.remembered += usize::from(freshness == Freshness::Remembered);
            if let Some(kind) = listing.dot_git {
                self.dot_git(&dir, &dir.join(".git"), kind);
            }
            let is_git_dir = listing.has_head && looks_like_git_dir(&dir);
            // A `.git` directory is judged even before it is a git dir: a later
            // `HEAD` would make it one around what it holds.
            if is_git_dir || dir.file_name() == Some(".git".as_ref()) {
                self.judge_git_dir(&dir, false);
            }
            for name in &listing.subdirs {
                // A git dir's objects hold no repositories, and are many.
                if is_git_dir && name == "objects" {
                    continue;
                }
                stack.push(dir.join(name));
            }
            listings.keep(dir, listing, freshness);
        }
    }

    /// The entries of `dir` the walk needs: remembered if it did not change,
    /// else read now (and how far to trust them later, for [`Listings::keep`]).
    fn list(&mut self, dir: &Path, listings: &mut Listings) -> Option<(Listing, Freshness)> {
        // Looked at before it is read: a change while it is read then moves its
        // change time past the one kept, and the next audit reads it again.
        let meta = match fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_dir() => meta,
            Ok(_) => return None,
            Err(e) => {
                self.unreadable_dir(dir, &e);
                return None;
            }
        };
        let trusted = *(self.change_times)
            .entry(meta.dev())
            .or_insert_with(|| listing::trusts_change_times(dir));
        if trusted {
            if let Some(listing) = listings.remembered(dir, &meta) {
                return Some((listing, Freshness::Remembered));
            }
        }
        let read_at = SystemTime::now();
        match fs::read_dir(dir).or_else(|e| self.make_readable(dir, e)) {
            Ok(entries) => Some((
                Listing::read(&meta, entries),
                if trusted {
                    Freshness::Read(read_at)
                } else {
                    Freshness::Untrusted
                },
            )),
            Err(e) => {
                self.unreadable_dir(dir, &e);
                None
            }
        }
    }

    /// A directory of the user's that the user cannot list: the sandbox may have
    /// taken the read bit away after planting a repository in it, which the
    /// user's git still reaches by name. It gets the bits back to be walked.
    fn make_readable(&mut self, dir: &Path, error: io::Error) -> io::Result<fs::ReadDir> {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::symlink_metadata(dir)?;
        let ours = meta.uid() == rustix::process::geteuid().as_raw();
        if error.kind() != io::ErrorKind::PermissionDenied || !ours || !meta.is_dir() {
            return Err(error);
        }
        let mode = meta.permissions().mode() | 0o700;
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
        self.report.unchecked.push(format!(
            "{}: was not readable by you; cordon gave you read access back to check it for git settings",
            dir.display()
        ));
        fs::read_dir(dir)
    }

    fn unreadable_dir(&mut self, dir: &Path, error: &io::Error) {
        if error.kind() == io::ErrorKind::NotFound {
            return;
        }
        // The sandbox could have made a directory it owns unreadable after
        // planting a repository in it; say so rather than pass over it.
        let ours =
            fs::symlink_metadata(dir).is_ok_and(|m| m.uid() == rustix::process::geteuid().as_raw());
        if ours {
            self.report.unchecked.push(format!(
                "{}: {error}; cordon could not check it for git settings the sandbox may have planted (make it readable, then look at any .git inside before running git there)",
                dir.display()
            ));
        }
    }

    /// A `.git` entry in `dir`: a git dir, or a file or symlink naming one.
    fn dot_git(&mut self, dir: &Path, path: &Path, kind: DotGit) {
        if kind == DotGit::Dir {
            return; // the walk reaches it, and it holds HEAD if git would use it
        }
        let new_pointer = self.possibly_changed(path);
        let target = if kind == DotGit::Symlink {
            fs::canonicalize(path).ok()
        } else {
            read_small(path)
                .ok()
                .and_then(|text| parse_gitfile(&text))
                .and_then(|t| fs::canonicalize(dir.join(t)).ok())
        };
        if let Some(target) = target {
            if self.root_of(&target).is_some() && looks_like_git_dir(&target) {
                self.judge_git_dir(&target, new_pointer);
            }
        }
    }

    /// Judges a git dir's settings files; all of them if `fully`, else those that
    /// may have changed. A `commondir` leads to more settings.
    fn judge_git_dir(&mut self, gitdir: &Path, fully: bool) {
        let gitdir = fs::canonicalize(gitdir).unwrap_or_else(|_| gitdir.to_path_buf());
        let fully = fully
            || ["HEAD", "objects", "refs", "commondir"]
                .iter()
                .any(|n| self.changed_if_present(&gitdir.join(n)));
        if !self.seen.insert((gitdir.clone(), fully)) {
            return;
        }
        self.judge_config(&gitdir.join("config"), fully);
        self.judge_config(&gitdir.join("config.worktree"), fully);
        self.judge_hooks(&gitdir.join("hooks"), fully);
        let commondir = gitdir.join("commondir");
        if self.is_read_only(&commondir) {
            return;
        }
        let common = read_small(&commondir)
            .ok()
            .map(|t| t.trim_end_matches(['\n', '\r']).to_string())
            .filter(|t| !t.is_empty())
            .and_then(|t| fs::canonicalize(gitdir.join(t)).ok());
        if let Some(common) = common.filter(|c| *c != gitdir && self.root_of(c).is_some()) {
            let fully = fully || self.possibly_changed(&commondir);
            if self.seen.insert((common.clone(), fully)) {
                self.judge_config(&common.join("config"), fully);
                self.judge_hooks(&common.join("hooks"), fully);
            }
        }
    }

    fn changed_if_present(&self, path: &Path) -> bool {
        fs::symlink_metadata(path).is_ok() && self.possibly_changed(path)
    }

    fn judge_config(&mut self, path: &Path, fully: bool) {
        if self.is_read_only(path) || fs::symlink_metadata(path).is_err() {
            return;
        }
        if !fully && !self.possibly_changed(path) {
            return;
        }
        let (keep, settings, unreadable) = match read_small(path) {
            Err(why) => (Vec::new(), Vec::new(), Some(why)),
            Ok(text) => match config::parse(&text) {
                Err(e) => (
                    Vec::new(),
                    Vec::new(),
                    Some(format!("line {}: {}", e.line, e.problem)),
                ),
                Ok(entries) => {
                    let (keep, drop): (Vec<_>, Vec<_>) =
                        entries.into_iter().partition(config::is_safe);
                    if drop.is_empty() {
                        return;
                    }
                    let mut names: Vec<String> = drop.iter().map(config::Entry::name).collect();
                    names.dedup();
                    (keep, names, None)
                }
            },
        };
        let Some(kept_at) = self.move_aside(path) else {
            return;
        };
        if let Err(e) = write_new(path, config::render(&keep).as_bytes()) {
            self.report.unchecked.push(format!(
                "{}: cannot write the safe settings back ({e}); they are in {}",
                path.display(),
                kept_at.display()
            ));
        }
        self.report.neutralised.push(Finding {
            path: path.to_path_buf(),
            settings,
            unreadable,
            kept_at,
        });
    }

    fn judge_hooks(&mut self, hooks: &Path, fully: bool) {
        if self.is_read_only(hooks) {
            return;
        }
        let Ok(meta) = fs::symlink_metadata(hooks) else {
            return;
        };
        let fully = fully || self.possibly_changed(hooks);
        if !meta.is_dir() {
            // A symlink or file in place of the hooks dir: git follows a symlink.
            if fully {
                self.neutralise_hook(hooks);
            }
            return;
        }
        let Ok(entries) = fs::read_dir(hooks) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".sample") || name.ends_with(QUARANTINE_SUFFIX) {
                continue;
            }
            let path = entry.path();
            if fully || self.possibly_changed(&path) {
                self.neutralise_hook(&path);
            }
        }
    }

    fn neutralise_hook(&mut self, path: &Path) {
        if let Some(kept_at) = self.move_aside(path) {
            self.report.neutralised.push(Finding {
                path: path.to_path_buf(),
                settings: Vec::new(),
                unreadable: None,
                kept_at,
            });
        }
    }

    /// Renames `path` to a free `NAME.cordon-quarantine[-N]` beside it.
    fn move_aside(&mut self, path: &Path) -> Option<PathBuf> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return None;
        };
        let mut last_error = None;
        for n in 0..100 {
            let mut aside = name.to_os_string();
            aside.push(QUARANTINE_SUFFIX);
            if n > 0 {
                aside.push(format!("-{n}"));
            }
            let aside = dir.join(aside);
            match rustix::fs::renameat_with(
                rustix::fs::CWD,
                path,
                rustix::fs::CWD,
                &aside,
                rustix::fs::RenameFlags::NOREPLACE,
            ) {
                Ok(()) => return Some(aside),
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => {
                    last_error = Some(io::Error::from(e));
                    break;
                }
            }
        }
        self.report.unchecked.push(format!(
            "{}: holds git settings that run programs, and cordon cannot move it aside ({}); remove it before running git there",
            path.display(),
            last_error.map_or_else(|| "no free name".to_string(), |e| e.to_string())
        ));
        None
    }
}

/// Whether git would take `dir` for a git dir: a `HEAD`, and `objects` and `refs`
/// here or in the directory its `commondir` names (git's `is_git_directory`).
pub fn looks_like_git_dir(dir: &Path) -> bool {
    if fs::symlink_metadata(dir.join("HEAD")).is_err() {
        return false;
    }
    let has_store = |d: &Path| d.join("objects").is_dir() && d.join("refs").exists();
    if has_store(dir) {
        return true;
    }
    read_small(&dir.join("commondir"))
        .ok()
        .map(|t| dir.join(t.trim_end_matches(['\n', '\r'])))
        .is_some_and(|common| has_store(&common))
}

/// The git dir a `.git` file names (`gitdir: PATH`).
fn parse_gitfile(text: &str) -> Option<PathBuf> {
    let path = text.lines().next()?.strip_prefix("gitdir:")?.trim();
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// Reads a small text file, following symlinks as git does.
fn read_small(path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Looked at before opening: opening a FIFO would wait for a writer forever.
    if !fs::metadata(path).map_err(|e| e.to_string())?.is_file() {
        return Err("it is not a regular file".into());
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_nonblock())
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("it is larger than {MAX_FILE_BYTES} bytes"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".into())
}

/// `O_NONBLOCK`: a file swapped for a FIFO between the check and the open does not
/// block the open.
fn libc_nonblock() -> i32 {
    rustix::fs::OFlags::NONBLOCK.bits() as i32
}

fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?
        .write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    fn repo(root: &Path, rel: &str, config: &str) -> PathBuf {
        let gitdir = root.join(rel);
        fs::create_dir_all(gitdir.join("objects")).unwrap();
        fs::create_dir_all(gitdir.join("refs")).unwrap();
        fs::write(gitdir.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        fs::write(gitdir.join("config"), config).unwrap();
        gitdir
    }

    fn audit_since(root: &Path, since: SystemTime) -> Report {
        audit(&Audit {
            roots: &[root.to_path_buf()],
            read_only: &[],
            since,
            listings: None,
        })
    }

    const PAGER: &str = "[core]\n\tpager = touch /tmp/x\n";

    #[test]
    fn what_changed_before_the_run_is_left_alone() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let gitdir = repo(&root, "vendor/lib/.git", PAGER);
        let report = audit_since(&root, SystemTime::now() + Duration::from_secs(5));
        assert!(report.neutralised.is_empty(), "{report:?}");
        assert_eq!(fs::read_to_string(gitdir.join("config")).unwrap(), PAGER);
        // Written during the run: neutralised, the original kept.
        let report = audit_since(&root, SystemTime::now() - Duration::from_secs(5));
        assert_eq!(report.neutralised.len(), 1, "{report:?}");
        assert_eq!(report.neutralised[0].settings, ["core.pager"]);
        assert!(
            !fs::read_to_string(gitdir.join("config"))
                .unwrap()
                .contains("pager")
        );
        assert_eq!(
            fs::read_to_string(gitdir.join("config.cordon-quarantine")).unwrap(),
            PAGER
        );
    }

    /// The listings of an audit let the next one skip reading directories that
    /// did not change, and it still finds what a run planted below them: a hook
    /// and an in-place config rewrite in a repository deep in an unchanged tree,
    /// and a repository made in an old directory.
    #[test]
    fn kept_listings_miss_nothing_planted_below_unchanged_directories() {
        let t = tempfile::tempdir().unwrap();
        let kept = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let gitdir = repo(&root, "a/b/c/repo/.git", "[core]\n\tbare = false\n");
        fs::create_dir_all(root.join("a/b/old")).unwrap();
        for i in 0..20 {
            fs::create_dir_all(root.join(format!("a/filler{i}/x"))).unwrap();
        }
        // Listings are kept only of directories still for RACY_MARGIN.
        std::thread::sleep(listing::RACY_MARGIN + Duration::from_millis(100));
        let audit_kept = |since| {
            audit(&Audit {
                roots: std::slice::from_ref(&root),
                read_only: &[],
                since,
                listings: Some(kept.path()),
            })
        };
        let first = audit_kept(SystemTime::now());
        assert!(first.neutralised.is_empty(), "{first:?}");
        assert_eq!(first.remembered, 0, "{first:?}");
        // The run.
        let since = SystemTime::now() - Duration::from_secs(1);
        fs::create_dir(gitdir.join("hooks")).unwrap();
        fs::write(gitdir.join("hooks/pre-commit"), "#!/bin/sh\ntouch /tmp/x\n").unwrap();
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(gitdir.join("config"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, PAGER.as_bytes()))
            .unwrap();
        let planted = repo(&root, "a/b/old/.git", PAGER);
        let second = audit_kept(since);
        // The positive control: most directories were not read again.
        assert!(
            second.remembered * 2 > second.walked,
            "the listings were not used: {second:?}"
        );
        let mut found: Vec<&Path> = second
            .neutralised
            .iter()
            .map(|f| f.path.as_path())
            .collect();
        found.sort();
        let mut expected = vec![
            planted.join("config"),
            gitdir.join("config"),
            gitdir.join("hooks/pre-commit"),
        ];
        expected.sort();
        assert_eq!(found, expected, "{second:?}");
        // And without listings, the same walk finds the same (nothing left now).
        let third = audit_since(&root, since);
        assert!(third.neutralised.is_empty(), "{third:?}");
    }

    #[test]
    fn a_fifo_for_a_config_does_not_hang_the_audit() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let gitdir = repo(&root, ".git", "");
        fs::remove_file(gitdir.join("config")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            gitdir.join("config"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            0,
        )
        .unwrap();
        let report = audit_since(&root, SystemTime::now() - Duration::from_secs(5));
        assert_eq!(report.neutralised.len(), 1, "{report:?}");
        assert!(report.neutralised[0].unreadable.is_some());
    }

    #[test]
    fn a_directory_made_unreadable_is_walked_all_the_same() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let gitdir = repo(&root, "d/.git", PAGER);
        let d = root.join("d");
        fs::set_permissions(&d, fs::Permissions::from_mode(0o100)).unwrap();
        let report = audit_since(&root, SystemTime::now() - Duration::from_secs(5));
        if rustix::process::geteuid().is_root() {
            // Root reads it anyway.
            assert!(report.unchecked.is_empty(), "{report:?}");
        } else {
            assert_eq!(report.unchecked.len(), 1, "{report:?}");
        }
        assert_eq!(report.neutralised.len(), 1, "{report:?}");
        assert!(gitdir.join("config.cordon-quarantine").exists());
    }
}
