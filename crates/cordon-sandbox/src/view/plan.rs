//! Turning a policy's path rules into an ordered list of mounts.
//!
//! The view starts as a read-only copy of the host's whole mount tree; each mount
//! here then changes one path: binds a writable root, hides a secret, pins a
//! protected path's parent. Paths in the view equal paths on the host.

use crate::error::SandboxError;
use cordon_policy::lookup::Entry;
use cordon_policy::{Access, PathRule, Policy, RuleKind, is_path_prefix};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// What one mount does to its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    /// The host path bound at the same place, read-only or writable.
    Bind { writable: bool },
    /// The host path bound onto itself, writable, only so that it becomes a mount
    /// point: a mount point cannot be renamed or removed, so the protected path
    /// below it cannot be swapped for a fresh, writable one.
    Pin,
    /// A denied directory: an empty read-only tmpfs.
    EmptyDir,
    /// A denied file: an empty read-only file.
    EmptyFile,
    /// A private, writable, initially empty tmpfs (`/tmp`).
    Scratch,
}

impl MountKind {
    /// Mounts of these kinds are a fresh tmpfs in which later mount points can be made.
    pub fn is_tmpfs(self) -> bool {
        matches!(self, MountKind::EmptyDir | MountKind::Scratch)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOp {
    pub path: PathBuf,
    pub kind: MountKind,
    pub is_dir: bool,
    /// The mount point does not exist below a tmpfs of ours and must be made there.
    pub create_mount_point: bool,
    /// Later mounts make their mount points inside this one (a tmpfs only).
    pub holds_mount_points: bool,
    /// The source is a placeholder the launcher creates after the sandbox started.
    pub placeholder: bool,
}

/// A mount of the policy (a host path shown at another path), planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    /// The path in the view whose content the target shows (cloned once the rest
    /// of the view is built, so the target shows no more than the view does).
    pub source: PathBuf,
    pub target: PathBuf,
    pub writable: bool,
    pub is_dir: bool,
    /// The target does not exist where it goes and must be made.
    pub create_mount_point: bool,
    /// The target's nearest existing ancestor, read-only in the view, which gets a
    /// tmpfs holding its entries (bound from the view) so the target can be made
    /// there; `None` when the target exists or lies in a tmpfs of ours.
    pub mirror: Option<PathBuf>,
}

/// A file whose content the launcher worked out, shown read-only at `target`.
#[derive(Clone, PartialEq, Eq)]
pub struct SyntheticFile {
    pub target: PathBuf,
    pub content: Vec<u8>,
}

impl std::fmt::Debug for SyntheticFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SyntheticFile({}, {} bytes)",
            self.target.display(),
            self.content.len()
        )
    }
}

/// The most of a settings file cordon reads to show a sanitized copy of it.
const MAX_SANITIZED_BYTES: u64 = 1024 * 1024;

/// The copies without credentials of the hidden files `policy` shows so: each read
/// on the host (a regular file, not through a symlink, at most 1 MiB) and cleaned;
/// one that cannot be read stays hidden as it is. The original's bytes are
/// overwritten once cleaned: the sandbox's first process is a copy of this one.
fn synthesize(policy: &Policy) -> Vec<SyntheticFile> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut out = Vec::new();
    for copy in &policy.sanitized {
        let Ok(file) = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&copy.path)
        else {
            continue;
        };
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            continue;
        }
        let mut raw = Vec::new();
        if file
            .take(MAX_SANITIZED_BYTES)
            .read_to_end(&mut raw)
            .is_err()
        {
            raw.fill(0);
            std::hint::black_box(&raw);
            continue;
        }
        let content = copy.sanitize(&raw).into_bytes();
        raw.fill(0);
        std::hint::black_box(&raw);
        out.push(SyntheticFile {
            target: copy.path.clone(),
            content,
        });
    }
    out
}

/// A placeholder to create on the host for a protected path that does not exist:
/// an empty file (or a `commondir` naming its own git dir), even for a directory,
/// since nothing can be made in or below a file, and a file costs ext4 a tenth of
/// what a directory does to make and remove (about 20 µs against 200).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub path: PathBuf,
}

/// The mounts to make, in order (parents before children), the placeholders to
/// create on the host for protected paths that do not exist yet, and those this
/// plan did create (and so removes).
#[derive(Debug, Default)]
pub struct ViewPlan {
    pub ops: Vec<MountOp>,
    /// Host files laid over view paths after every other mount.
    pub overlays: Vec<crate::FileOverlay>,
    /// Files made inside (read-only, in a tmpfs of their own) and laid over view
    /// paths with the overlays: the copies of hidden settings files without their
    /// credentials.
    pub synthesized: Vec<SyntheticFile>,
    pub to_create: Vec<Placeholder>,
    /// The policy's mounts, made after everything else.
    pub mounts: Vec<MountPlan>,
    pub warnings: Vec<String>,
    /// The size of the private tmpfs mounts (`/tmp`, `/dev/shm`), when a memory
    /// limit no cgroup holds bounds them; else the kernel's default.
    pub tmpfs_size: Option<u64>,
    /// The view is served to another machine (`backend::ViewServer`): mounted
    /// again at [`super::SERVED_VIEW`] without `/proc`, `/sys` and `/dev`.
    pub served: bool,
    /// Host devices in `/dev` beside the harmless ones (a server of the view's).
    pub devices: Vec<&'static str>,
}

/// Paths the view builds itself; rules below them are not applied.
const SYNTHETIC_ROOTS: [&str; 2] = ["/proc", "/dev"];

/// What a placeholder file holds, where empty would not do: a `commondir` of `.`
/// names the git dir itself, so git works as before while it is there (an empty
/// one makes git fail).
fn placeholder_content(path: &Path) -> &'static [u8] {
    match path.file_name().and_then(|n| n.to_str()) {
        Some("commondir") => b".\n",
        _ => b"",
    }
}

impl ViewPlan {
    /// Plans the view for `policy`, with a placeholder for each protected path that
    /// is missing (so it can be mounted read-only); nothing is created yet.
    pub fn prepare(
        policy: &Policy,
        overlays: Vec<crate::FileOverlay>,
    ) -> Result<ViewPlan, SandboxError> {
        let mut planner = Planner {
            policy,
            index: policy.rule_index(),
            ops: BTreeMap::new(),
            plan: ViewPlan::default(),
        };
        for scratch in &policy.scratch {
            planner.add(scratch, MountKind::Scratch, true);
        }
        for rule in &policy.rules {
            planner.plan_rule(rule)?;
        }
        planner.plan_mounts()?;
        let mut plan = planner.finish();
        plan.overlays = overlays;
        plan.synthesized = synthesize(policy);
        Ok(plan)
    }

    /// Creates the planned placeholders on the host; one that something else made
    /// meanwhile is left as it is. Which of them go, and when, is the launcher's
    /// to say: it lists them beside the root's lock before they are made
    /// (workspace_lock.rs).
    pub fn create_placeholders(&self) -> Result<(), SandboxError> {
        for placeholder in &self.to_create {
            create_placeholder(&placeholder.path)?;
        }
        Ok(())
    }
}

struct Planner<'a> {
    policy: &'a Policy,
    index: cordon_policy::RuleIndex<'a>,
    ops: BTreeMap<PathBuf, MountOp>,
    plan: ViewPlan,
}

impl Planner<'_> {
    fn plan_rule(&mut self, rule: &PathRule) -> Result<(), SandboxError> {
        if rule.path == Path::new("/") || is_synthetic(&rule.path) {
            return Ok(());
        }
        // Several rules may name the same path (a flag making a secret writable);
        // only the one that decides it counts: deny beats write beats read.
        if self.index.access_for(&rule.path) != rule.access {
            return Ok(());
        }
        let parent_access = self.parent_access(&rule.path);
        let hidden_parent = self.under_tmpfs(&rule.path);
        let meta = match fs::symlink_metadata(&rule.path) {
            Ok(m) => Some(m),
            // Missing, or below a file (a worktree's `.git`): nothing there.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                None
            }
            Err(source) => {
                return Err(SandboxError::View {
                    path: rule.path.clone(),
                    source,
                });
            }
        };
        if meta.as_ref().is_some_and(|m| m.is_symlink()) {
            // A protected path that is a symlink (`.vscode -> realvs`): its target
            // has a rule of its own (the policy protects both); the link gets an
            // empty read-only file laid on it, a mount point that the sandbox can
            // neither remove nor point elsewhere.
            if rule.kind == RuleKind::Protected
                && matches!(rule.access, Access::Read | Access::Deny)
                && parent_access == Access::Write
            {
                self.add(&rule.path, MountKind::EmptyFile, false);
                return Ok(());
            }
            return Err(SandboxError::View {
                path: rule.path.clone(),
                source: io::Error::other("became a symlink after the policy was resolved"),
            });
        }
        let is_dir = meta.as_ref().is_some_and(|m| m.is_dir());
        match (rule.access, meta.is_some()) {
            (Access::Deny, true) if parent_access != Access::Deny || hidden_parent => {
                let kind = if is_dir {
                    MountKind::EmptyDir
                } else {
                    MountKind::EmptyFile
                };
                self.add(&rule.path, kind, is_dir);
            }
            // A protected path below a read-only parent is read-only already.
            (Access::Read, _)
                if rule.kind == RuleKind::Protected && parent_access == Access::Write =>
            {
                self.protect(&rule.path)?;
            }
            (Access::Read, _) if rule.kind == RuleKind::Protected => {}
            (Access::Read, true) if parent_access != Access::Read || hidden_parent => {
                self.add(&rule.path, MountKind::Bind { writable: false }, is_dir);
            }
            (Access::Write, true) if parent_access != Access::Write || hidden_parent => {
                self.add(&rule.path, MountKind::Bind { writable: true }, is_dir);
            }
            // A hidden path that is protected too (a secret, say, in a workspace
            // that is $HOME): missing, it must not be made either.
            (Access::Deny, false) if parent_access == Access::Write && !hidden_parent => {
                self.hide_missing_protected(&rule.path)?;
            }
            (Access::Write, false) => self.plan.warnings.push(format!(
                "{} does not exist, so it is not made writable",
                rule.path.display()
            )),
            _ => {}
        }
        Ok(())
    }

    /// Makes a protected path read-only, creating it (or its first missing ancestor)
    /// as an empty placeholder on the host, and pins its existing ancestors up to the
    /// writable root so none of them can be renamed away.
    fn protect(&mut self, path: &Path) -> Result<(), SandboxError> {
        if self.covered_read_only(path) {
            return Ok(());
        }
        let root = self.writable_root_of(path);
        if cordon_policy::left_to_the_audit(path, &root) {
            return Ok(());
        }
        let mut target = path.to_path_buf();
        // The first missing component between the writable root and the path.
        for ancestor in path.ancestors().collect::<Vec<_>>().into_iter().rev() {
            if !ancestor.starts_with(&root) || ancestor == root {
                continue;
            }
            match cordon_policy::lookup::lstat(ancestor) {
                Entry::Missing => {
                    target = ancestor.to_path_buf();
                    break;
                }
                // A file on the way (a worktree's `.git`): nothing can exist below
                // it; the file itself has a rule of its own.
                Entry::Dir => {}
                _ if ancestor != path => return Ok(()),
                _ => {}
            }
        }
        let (is_dir, placeholder) = match fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_symlink() => {
                return Err(SandboxError::ProtectedPath {
                    path: target,
                    problem: "is a symlink; cordon cannot protect it".into(),
                });
            }
            Ok(meta) => (meta.is_dir(), false),
            Err(_) => {
                self.plan.to_create.push(Placeholder {
                    path: target.clone(),
                });
                (false, true)
            }
        };
        for ancestor in target.ancestors().skip(1) {
            if ancestor == root || !ancestor.starts_with(&root) {
                break;
            }
            self.add(ancestor, MountKind::Pin, true);
        }
        self.add(&target, MountKind::Bind { writable: false }, is_dir);
        if let Some(op) = self.ops.get_mut(&target) {
            op.placeholder = placeholder;
        }
        Ok(())
    }

    /// A missing path that a deny rule hides and that is protected as well: made
    /// read-only like any protected path (with a placeholder), then shown empty, so
    /// that something the host makes there meanwhile stays hidden too.
    fn hide_missing_protected(&mut self, path: &Path) -> Result<(), SandboxError> {
        let protected = self
            .policy
            .rules
            .iter()
            .any(|r| r.path == path && r.kind == RuleKind::Protected);
        if !protected {
            return Ok(());
        }
        self.protect(path)?;
        let root = self.writable_root_of(path);
        let target = (path.ancestors())
            .take_while(|a| *a != root)
            .find(|a| {
                (self.ops.get(*a)).is_some_and(|op| op.kind == MountKind::Bind { writable: false })
            })
            .map(Path::to_path_buf);
        if let Some(op) = target.and_then(|t| self.ops.get_mut(&t)) {
            op.kind = if op.is_dir {
                MountKind::EmptyDir
            } else {
                MountKind::EmptyFile
            };
        }
        Ok(())
    }

    /// Where each mount's target goes: onto an existing path, into a tmpfs of
    /// ours, or into a tmpfs mirror of its nearest existing, read-only ancestor.
    fn plan_mounts(&mut self) -> Result<(), SandboxError> {
        for m in &self.policy.mounts {
            let fail = |problem: String| SandboxError::Mount {
                from: m.source.clone(),
                target: m.target.clone(),
                problem,
            };
            let is_dir = fs::metadata(&m.source)
                .map_err(|e| fail(format!("cannot read the source: {e}")))?
                .is_dir();
            if let Some(outer) = self
                .plan
                .mounts
                .iter()
                .find(|o| m.target.starts_with(&o.target))
            {
                return Err(fail(format!(
                    "the target is inside the target of another mount ({}); mount targets cannot nest",
                    outer.target.display()
                )));
            }
            let (create_mount_point, mirror) = if self.directly_in_tmpfs(&m.target) {
                (true, None)
            } else {
                match fs::symlink_metadata(&m.target) {
                    Ok(meta) if meta.is_dir() != is_dir || meta.is_symlink() => {
                        let kind = |dir: bool| if dir { "a directory" } else { "a file" };
                        return Err(fail(format!(
                            "the source is {} but the target is not",
                            kind(is_dir)
                        )));
                    }
                    Ok(_) => (false, None),
                    Err(_) => {
                        let ancestor = m
                            .target
                            .ancestors()
                            .skip(1)
                            .find(|a| fs::symlink_metadata(a).is_ok())
                            .unwrap_or(Path::new("/"))
                            .to_path_buf();
                        if !ancestor.is_dir() {
                            return Err(fail(format!(
                                "{} is not a directory, so the target cannot be made in it",
                                ancestor.display()
                            )));
                        }
                        if self.index.access_for(&ancestor) != Access::Read {
                            return Err(fail(format!(
                                "the target does not exist, and cordon makes no directories in {}, which the sandbox may write or cannot see (hint: create the target first)",
                                ancestor.display()
                            )));
                        }
                        (true, Some(ancestor))
                    }
                }
            };
            self.plan.mounts.push(MountPlan {
                source: m.source.clone(),
                target: m.target.clone(),
                writable: m.writable,
                is_dir,
                create_mount_point,
                mirror,
            });
        }
        Ok(())
    }

    fn writable_root_of(&self, path: &Path) -> PathBuf {
        self.policy
            .rules
            .iter()
            .filter(|r| {
                r.access == Access::Write && is_path_prefix(&r.path, path) && r.path != path
            })
            .max_by_key(|r| r.path.components().count())
            .map_or_else(|| PathBuf::from("/"), |r| r.path.clone())
    }

    /// The access the path's parent has in the view.
    fn parent_access(&self, path: &Path) -> Access {
        path.parent()
            .map_or(Access::Read, |p| self.index.access_for(p))
    }

    /// Whether a read-only mount already planned covers `path` (itself or a parent).
    fn covered_read_only(&self, path: &Path) -> bool {
        self.ops.values().any(|op| {
            is_path_prefix(&op.path, path)
                && matches!(
                    op.kind,
                    MountKind::Bind { writable: false }
                        | MountKind::EmptyDir
                        | MountKind::EmptyFile
                )
        })
    }

    /// Whether the path lies below a tmpfs of ours, so the host's content is hidden
    /// there and the mount point must be created.
    fn under_tmpfs(&self, path: &Path) -> bool {
        self.ops
            .values()
            .any(|op| op.kind.is_tmpfs() && is_path_prefix(&op.path, path) && path != op.path)
    }

    /// Whether the deepest mount planned above `path` is a tmpfs of ours, so a
    /// missing `path` can be made in it. Not so below a bind in such a tmpfs (a
    /// path of a hidden home shown read-only, `~/.cargo`): that shows the host's.
    fn directly_in_tmpfs(&self, path: &Path) -> bool {
        self.ops
            .values()
            .filter(|op| is_path_prefix(&op.path, path) && path != op.path)
            .max_by_key(|op| op.path.as_os_str().len())
            .is_some_and(|op| op.kind.is_tmpfs())
    }

    fn add(&mut self, path: &Path, kind: MountKind, is_dir: bool) {
        if self
            .ops
            .get(path)
            .is_some_and(|op| op.kind != MountKind::Pin)
        {
            return; // a real mount is already planned here; it pins the path too
        }
        let create_mount_point = self.under_tmpfs(path);
        self.ops.insert(
            path.to_path_buf(),
            MountOp {
                path: path.to_path_buf(),
                kind,
                is_dir,
                create_mount_point,
                holds_mount_points: false,
                placeholder: false,
            },
        );
    }

    fn finish(mut self) -> ViewPlan {
        // BTreeMap orders paths component-wise, so every parent precedes its children.
        let mut ops: Vec<MountOp> = self.ops.into_values().collect();
        let nested: Vec<PathBuf> = ops
            .iter()
            .filter(|op| op.create_mount_point)
            .map(|op| op.path.clone())
            .collect();
        for op in &mut ops {
            op.holds_mount_points = op.kind.is_tmpfs()
                && nested
                    .iter()
                    .any(|p| is_path_prefix(&op.path, p) && p != &op.path);
        }
        self.plan.ops = ops;
        self.plan
    }
}

fn is_synthetic(path: &Path) -> bool {
    SYNTHETIC_ROOTS.iter().any(|root| path.starts_with(root))
}

/// Removes a placeholder if it is untouched: anything with other content is
/// somebody's data.
pub(crate) fn remove_placeholder(path: &Path) {
    if fs::symlink_metadata(path)
        .is_ok_and(|m| m.is_file() && is_untouched_placeholder(path, m.len()))
    {
        let _ = fs::remove_file(path);
    }
}

/// Whether a placeholder file still holds exactly what cordon put there.
fn is_untouched_placeholder(path: &Path, len: u64) -> bool {
    let expected = placeholder_content(path);
    len == expected.len() as u64
        && (expected.is_empty() || fs::read(path).is_ok_and(|c| c == expected))
}

/// Creates a placeholder, unless something appeared there meanwhile.
fn create_placeholder(path: &Path) -> Result<(), SandboxError> {
    let result = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, placeholder_content(path)));
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(SandboxError::ProtectedPath {
            path: path.to_path_buf(),
            problem: format!(
                "is a protected path that does not exist, and cordon cannot create the \
                 empty placeholder it mounts read-only there ({e}); create it yourself, \
                 or list it under \"unprotect\" in your config"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_policy::{Flags, Inputs};

    fn policy_for(workspace: &Path, home: &Path) -> Policy {
        policy_with(workspace, home, Flags::default())
    }

    fn policy_with(workspace: &Path, home: &Path, flags: Flags) -> Policy {
        cordon_policy::resolve(&Inputs {
            workspace: workspace.to_path_buf(),
            cwd: workspace.to_path_buf(),
            home: home.to_path_buf(),
            tmp: PathBuf::from("/tmp"),
            config: None,
            xdg_config_home: None,
            xdg_data_home: None,
            flags,
        })
        .unwrap()
    }

    /// What the launcher's lock does once the last sandbox left: removes each
    /// placeholder that is still untouched.
    fn remove_planned(plan: &ViewPlan) {
        for p in &plan.to_create {
            remove_placeholder(&p.path);
        }
    }

    fn op<'a>(plan: &'a ViewPlan, path: &Path) -> &'a MountOp {
        plan.ops
            .iter()
            .find(|op| op.path == path)
            .unwrap_or_else(|| panic!("no mount for {}: {:#?}", path.display(), plan.ops))
    }

    #[test]
    fn a_workspace_under_tmp_is_bound_inside_the_private_tmp() {
        let dir = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
        let home = tempfile::tempdir().unwrap();
        let work = dir.path().canonicalize().unwrap();
        let plan = ViewPlan::prepare(&policy_for(&work, home.path()), Vec::new()).unwrap();
        let tmp = op(&plan, Path::new("/tmp"));
        assert_eq!(tmp.kind, MountKind::Scratch);
        assert!(tmp.holds_mount_points);
        let bind = op(&plan, &work);
        assert_eq!(bind.kind, MountKind::Bind { writable: true });
        assert!(
            bind.create_mount_point,
            "the workspace's mount point is made in the tmpfs"
        );
        let tmp_index = plan
            .ops
            .iter()
            .position(|o| o.path == Path::new("/tmp"))
            .unwrap();
        let work_index = plan.ops.iter().position(|o| o.path == work).unwrap();
        assert!(
            tmp_index < work_index,
            "parents are mounted before children"
        );
        remove_planned(&plan);
    }

    #[test]
    fn a_missing_git_dir_gets_no_placeholder_and_is_left_to_the_audit() {
        // `git init` must work inside; what it writes is judged when the run ends.
        let dir = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let work = dir.path().canonicalize().unwrap();
        let policy = policy_for(&work, home.path());
        let plan = ViewPlan::prepare(&policy, Vec::new()).unwrap();
        let git = work.join(".git");
        assert!(plan.ops.iter().all(|o| !o.path.starts_with(&git)));
        plan.create_placeholders().unwrap();
        assert!(!git.exists());
        assert!(work.join(".pi").is_file(), "the other placeholders stay");
        let read_only = cordon_policy::read_only_during_run(&policy);
        assert!(read_only.contains(&work.join(".pi")));
        assert!(
            read_only.iter().all(|p| !p.starts_with(&git)),
            "{read_only:?}"
        );
        // With a `.git`, its protected paths are read-only during the run.
        fs::create_dir(&git).unwrap();
        let read_only = cordon_policy::read_only_during_run(&policy_for(&work, home.path()));
        assert!(read_only.contains(&git.join("config")), "{read_only:?}");
        remove_planned(&plan);
        assert!(!work.join(".pi").exists());
    }

    #[test]
    fn of_several_rules_on_one_path_the_deciding_one_is_mounted() {
        // A flag making a secret writable (through a symlink, say) loses to the
        // secret's deny: the path is hidden, not bound.
        let dir = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let work = dir.path().canonicalize().unwrap();
        let ssh = home.path().canonicalize().unwrap().join(".ssh");
        fs::create_dir(&ssh).unwrap();
        let flags = Flags {
            allow_write: vec![ssh.clone()],
            ..Flags::default()
        };
        let policy = policy_with(&work, home.path(), flags);
        assert!(
            policy
                .rules
                .iter()
                .any(|r| r.path == ssh && r.access == Access::Write)
        );
        let plan = ViewPlan::prepare(&policy, Vec::new()).unwrap();
        assert_eq!(op(&plan, &ssh).kind, MountKind::EmptyDir);
    }

    #[test]
    fn placeholders_with_content_of_someone_elses_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let work = dir.path().canonicalize().unwrap();
        let plan = ViewPlan::prepare(&policy_for(&work, home.path()), Vec::new()).unwrap();
        plan.create_placeholders().unwrap();
        fs::write(work.join(".cordon.json"), "{}").unwrap();
        fs::write(work.join(".vscode"), "{}").unwrap();
        remove_planned(&plan);
        assert!(work.join(".cordon.json").exists());
        assert!(work.join(".vscode").exists());
        assert!(!work.join(".idea").exists());
    }
}
