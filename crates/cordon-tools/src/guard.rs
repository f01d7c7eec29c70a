//! Path resolution and the policy check in front of every file operation, and the
//! ring of recent denials that `status` reports.

use crate::error::ToolError;
use crate::protocol::Denial;
use cordon_policy::{Access, Mount, PathRule, Policy, RuleKind};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The longest path accepted (bytes), like Linux's PATH_MAX.
pub const MAX_PATH: usize = 4096;
/// How many denials `status` keeps.
pub const DENIALS_KEPT: usize = 50;

pub struct Guard {
    /// Shared with walks, whose filters outlive a borrow.
    pub policy: Arc<Policy>,
    denials: Mutex<VecDeque<Denial>>,
}

/// What an operation needs of a path.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anything but a deny rule.
    Read,
    /// A write rule.
    Write,
}

impl Guard {
    pub fn new(policy: Policy) -> Guard {
        Guard {
            policy: Arc::new(policy),
            denials: Mutex::new(VecDeque::new()),
        }
    }

    /// `raw` made absolute (relative to the workspace), checked for length.
    pub fn absolute(&self, param: &str, raw: &str) -> Result<PathBuf, ToolError> {
        if raw.is_empty() {
            return Err(ToolError::invalid(param, "must not be empty"));
        }
        if raw.len() > MAX_PATH {
            return Err(ToolError::invalid(
                param,
                format!("is longer than {MAX_PATH} bytes"),
            ));
        }
        let p = Path::new(raw);
        Ok(if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.policy.workspace.join(p)
        })
    }

    /// The canonical form of `raw` (following every symlink; a missing tail is
    /// appended to its nearest existing ancestor), checked against the policy.
    pub fn resolve(
        &self,
        op: &'static str,
        param: &str,
        raw: &str,
        need: Need,
    ) -> Result<PathBuf, ToolError> {
        let abs = self.absolute(param, raw)?;
        let canon = canonical(&abs).map_err(|e| ToolError::io(op, &abs, e))?;
        self.check(op, &canon, need)?;
        Ok(canon)
    }

    /// Like `resolve` but the final component is not followed (for `stat`): the
    /// canonical parent joined with the last name.
    pub fn resolve_nofollow(
        &self,
        op: &'static str,
        param: &str,
        raw: &str,
    ) -> Result<PathBuf, ToolError> {
        let abs = self.absolute(param, raw)?;
        let mut comps = abs.components();
        let last = comps.next_back();
        let path = match last {
            Some(Component::Normal(name)) => {
                let parent = canonical(comps.as_path()).map_err(|e| ToolError::io(op, &abs, e))?;
                parent.join(name)
            }
            _ => canonical(&abs).map_err(|e| ToolError::io(op, &abs, e))?,
        };
        self.check(op, &path, Need::Read)?;
        Ok(path)
    }

    /// Refuses `path` (canonical, as seen inside) if what the view grants there
    /// falls short of `need` (see [`verdict`]).
    pub fn check(&self, op: &'static str, path: &Path, need: Need) -> Result<(), ToolError> {
        let Some(v) = verdict(&self.policy, path) else {
            return Ok(());
        };
        let what = match (v.access, need) {
            (Access::Deny, _) => "denied",
            (Access::Read, Need::Write) => "read-only",
            _ => return Ok(()),
        };
        Err(self.deny(op, what, path, &v.rule))
    }

    fn deny(
        &self,
        op: &'static str,
        what: &'static str,
        path: &Path,
        rule: &PathRule,
    ) -> ToolError {
        let rule_s = format!("{} {}", rule.access, rule.path.display());
        self.record(op, path, &rule_s);
        ToolError::Denied {
            op,
            what,
            path: path.to_path_buf(),
            rule: rule_s,
            origin: rule.origin.to_string(),
        }
    }

    fn record(&self, op: &str, path: &Path, rule: &str) {
        let mut d = self.denials.lock().unwrap_or_else(|e| e.into_inner());
        if d.len() >= DENIALS_KEPT {
            d.pop_front();
        }
        d.push_back(Denial::at(
            SystemTime::now(),
            op.to_string(),
            lossy(path.as_os_str()),
            rule.to_string(),
        ));
    }

    pub fn denials(&self) -> Vec<Denial> {
        let d = self.denials.lock().unwrap_or_else(|e| e.into_inner());
        d.iter().cloned().collect()
    }

    /// Whether any denied path lies strictly under `root` (then a walk must check
    /// each entry), mount targets included.
    pub fn denies_under(&self, root: &Path) -> bool {
        let denies_in = |dir: &Path| {
            self.policy
                .rules
                .iter()
                .any(|r| r.access == Access::Deny && r.path.starts_with(dir) && r.path != dir)
        };
        denies_in(&through_mount(&self.policy, root).0)
            || self
                .policy
                .mounts
                .iter()
                .any(|m| m.target.starts_with(root) && m.target != root && denies_in(&m.source))
    }
}

/// Whether `path` is one of cordon's placeholders: a protected path that held
/// nothing when the run began, now an empty read-only file. Listings leave them
/// out: they are cordon's, not the project's (reading one by name still works).
pub fn is_placeholder(policy: &Policy, path: &Path) -> bool {
    policy
        .rules
        .iter()
        .any(|r| r.kind == RuleKind::Protected && r.access != Access::Write && r.path == path)
        && std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0)
}

/// What the sandbox's view grants at a path, and the rule that decides it.
pub struct Verdict<'a> {
    pub access: Access,
    pub rule: Cow<'a, PathRule>,
}

/// What the view grants at `path` (canonical, as seen inside), as exec inside
/// meets it: the deciding rule's access, except that a private scratch directory
/// (`/tmp`) is writable unless a rule at least as deep decides (a workspace in
/// /tmp, say). Below a mount's target, the path is judged as the same place
/// below its source (what the view hides or protects there stays so), and a
/// read-only mount grants read, by a rule naming its target, where the source
/// is not hidden. `None`
/// when no rule matches (never for a resolved policy: `/` has one).
pub fn verdict<'a>(policy: &'a Policy, path: &Path) -> Option<Verdict<'a>> {
    let (host, mount) = through_mount(policy, path);
    let rule = policy.rule_for(&host)?;
    let depth = rule.path.components().count();
    let in_scratch = policy
        .scratch
        .iter()
        .any(|s| host.starts_with(s) && s.components().count() > depth);
    let access = if in_scratch {
        Access::Write
    } else {
        rule.access
    };
    Some(match mount {
        Some(m) if !m.writable && access != Access::Deny => Verdict {
            access: Access::Read,
            rule: Cow::Owned(PathRule {
                path: m.target.clone(),
                access: Access::Read,
                kind: RuleKind::Plain,
                origin: m.origin.clone(),
            }),
        },
        _ => Verdict {
            access,
            rule: Cow::Borrowed(rule),
        },
    })
}

/// `path` (as seen inside) as the host path whose rules decide it: below a
/// mount's target, the same place below its source (the view shows the source
/// there as the view has it); elsewhere itself. With the mount, if any.
fn through_mount<'a>(policy: &'a Policy, path: &'a Path) -> (Cow<'a, Path>, Option<&'a Mount>) {
    let mount = policy
        .mounts
        .iter()
        .filter(|m| path.starts_with(&m.target))
        .max_by_key(|m| m.target.components().count());
    match mount.and_then(|m| Some((m, path.strip_prefix(&m.target).ok()?))) {
        Some((m, rest)) if rest.as_os_str().is_empty() => (Cow::Borrowed(&m.source), Some(m)),
        Some((m, rest)) => (Cow::Owned(m.source.join(rest)), Some(m)),
        None => (Cow::Borrowed(path), None),
    }
}

/// `fs::canonicalize`, except that a missing tail is appended (lexically) to the
/// canonical form of its nearest existing ancestor. `..` in a missing tail pops.
/// A dangling symlink in the tail is followed to where it points, so a link to a
/// denied file (absent from the view) is judged by its target, not by its name.
pub fn canonical(p: &Path) -> io::Result<PathBuf> {
    canonical_within(p, 0)
}

/// Symlinks followed at most, as the kernel does (ELOOP beyond).
const MAX_LINKS: u32 = 40;

fn canonical_within(p: &Path, links: u32) -> io::Result<PathBuf> {
    if links > MAX_LINKS {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let e = match std::fs::canonicalize(p) {
        Ok(c) => return Ok(c),
        Err(e) if is_missing(&e) => e,
        Err(e) => return Err(e),
    };
    // Find the longest existing prefix.
    let comps: Vec<Component> = p.components().collect();
    let mut n = comps.len();
    let base = loop {
        if n == 0 {
            return Err(e);
        }
        n -= 1;
        let prefix: PathBuf = comps[..n].iter().collect();
        if prefix.as_os_str().is_empty() {
            return Err(e);
        }
        match std::fs::canonicalize(&prefix) {
            Ok(c) => break c,
            Err(e2) if is_missing(&e2) => continue,
            Err(e2) => return Err(e2),
        }
    };
    let mut out = base;
    for (i, c) in comps[n..].iter().enumerate() {
        match c {
            Component::Normal(name) => {
                out.push(name);
                if let Ok(target) = std::fs::read_link(&out) {
                    let dir = out.parent().map(Path::to_path_buf).unwrap_or_default();
                    let mut next = dir.join(target);
                    for rest in &comps[n + i + 1..] {
                        next.push(rest);
                    }
                    return canonical_within(&next, links + 1);
                }
            }
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(e),
        }
    }
    Ok(out)
}

/// Whether a path does not exist: nothing by that name, or a file where a
/// directory on the way should be (a protected path's placeholder is a file, and
/// what lies below it is judged by the rule that protects it).
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// A path as UTF-8 for JSON (lossy for the rare non-UTF-8 name).
pub fn lossy(p: &OsStr) -> String {
    String::from_utf8_lossy(p.as_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_test_support::PolicyEnv;

    /// A workspace, a home with a secret, and `data/` (a repository with a file
    /// and a hidden `secret`) to mount, in a [`PolicyEnv`] (under /var/tmp, not in
    /// /tmp, a scratch dir of the policy).
    struct Mounted {
        env: PolicyEnv,
        ws: PathBuf,
        home: PathBuf,
        data: PathBuf,
    }

    impl Mounted {
        fn new() -> Mounted {
            let env = PolicyEnv::new();
            let (ws, home, data) = (env.ws.clone(), env.home.clone(), env.root.join("data"));
            for d in [&home.join(".ssh"), &data.join(".git/hooks")] {
                std::fs::create_dir_all(d).unwrap();
            }
            std::fs::write(home.join(".ssh/id_ed25519"), "secret").unwrap();
            std::fs::write(data.join("f"), "data").unwrap();
            std::fs::write(data.join("secret"), "hidden").unwrap();
            Mounted {
                env,
                ws,
                home,
                data,
            }
        }

        /// The guard of a policy with these `--mount` flags, `data/secret` hidden.
        fn guard(&self, mounts: &[String]) -> Guard {
            let flags = cordon_policy::Flags {
                mount: mounts.to_vec(),
                deny_read: vec![self.data.join("secret")],
                ..Default::default()
            };
            Guard::new(self.env.resolve_with(flags).unwrap())
        }
    }

    /// The error of a refused check: (what, rule, origin).
    fn refused(g: &Guard, path: &str, need: Need) -> (&'static str, String, String) {
        match g.check("test", Path::new(path), need) {
            Err(ToolError::Denied {
                what, rule, origin, ..
            }) => (what, rule, origin),
            other => panic!("{path} not refused: {other:?}"),
        }
    }

    fn allowed(g: &Guard, path: &str, need: Need) {
        if let Err(e) = g.check("test", Path::new(path), need) {
            panic!("{path} refused: {e}");
        }
    }

    #[test]
    fn a_read_write_target_is_judged_by_its_source() {
        let m = Mounted::new();
        let g = m.guard(&[format!("{}:/cordon-data:rw", m.data.display())]);
        // Host rules alone make /cordon-data read-only; the mount makes it writable.
        allowed(&g, "/cordon-data", Need::Write);
        allowed(&g, "/cordon-data/new/file", Need::Write);
        allowed(&g, "/cordon-data/f", Need::Read);
        // What is protected or hidden at the source is so at the target.
        let hooks = m.data.join(".git/hooks");
        let (what, rule, _) = refused(&g, "/cordon-data/.git/hooks/pre-commit", Need::Write);
        assert_eq!(
            (what, rule),
            ("read-only", format!("read {}", hooks.display()))
        );
        let config = refused(&g, "/cordon-data/.git/config", Need::Write);
        assert_eq!(config.0, "read-only");
        let secret = m.data.join("secret");
        let (what, rule, origin) = refused(&g, "/cordon-data/secret", Need::Read);
        assert_eq!(
            (what, rule, origin.as_str()),
            (
                "denied",
                format!("deny {}", secret.display()),
                "flag --deny-read"
            )
        );
        // A name that merely begins like the target is not below it.
        refused(&g, "/cordon-database/x", Need::Write);
        // The source keeps its own rules at its own path.
        allowed(&g, &format!("{}/new", m.data.display()), Need::Write);
    }

    #[test]
    fn a_read_only_target_grants_read_at_most_naming_the_mount() {
        let m = Mounted::new();
        let sub = m.ws.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        let g = m.guard(&[
            // In /tmp, a scratch dir the guard would let be written.
            format!("{}:/tmp/cordon-data", m.data.display()),
            // A writable source (in the workspace), shown read-only.
            format!("{}:/cordon-sub:ro", sub.display()),
            format!("{}:/cordon-home", m.home.display()),
        ]);
        for (path, target) in [
            ("/tmp/cordon-data/f", "/tmp/cordon-data"),
            ("/tmp/cordon-data/new", "/tmp/cordon-data"),
            ("/cordon-sub/x", "/cordon-sub"),
        ] {
            let (what, rule, origin) = refused(&g, path, Need::Write);
            assert_eq!(
                (what, rule, origin.as_str()),
                ("read-only", format!("read {target}"), "flag --mount")
            );
            allowed(&g, path, Need::Read);
        }
        allowed(&g, "/tmp/other", Need::Write);
        allowed(&g, &format!("{}/x", sub.display()), Need::Write);
        let (what, rule, _) = refused(&g, "/tmp/cordon-data/secret", Need::Read);
        assert_eq!(what, "denied");
        assert!(rule.ends_with("/data/secret"), "{rule}");
        let (what, rule, origin) = refused(&g, "/cordon-home/.ssh/id_ed25519", Need::Read);
        assert_eq!(what, "denied");
        assert_eq!(rule, format!("deny {}", m.home.join(".ssh").display()));
        assert_eq!(origin, "built-in default");
    }

    #[test]
    fn walks_see_the_denied_paths_below_targets() {
        let m = Mounted::new();
        let clean = m.ws.join("clean");
        std::fs::create_dir_all(&clean).unwrap();
        let g = m.guard(&[
            format!("{}:/cordon-data:rw", m.data.display()),
            format!("{}:/cordon-clean", clean.display()),
        ]);
        assert!(g.denies_under(Path::new("/cordon-data")));
        assert!(g.denies_under(Path::new("/cordon-data/")));
        assert!(g.denies_under(Path::new("/")));
        assert!(!g.denies_under(Path::new("/cordon-clean")));
        assert!(!g.denies_under(Path::new("/cordon-data/.git")));
    }

    #[test]
    fn canonical_missing_tail() {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        assert_eq!(canonical(&root.join("a/b/../c")).unwrap(), root.join("a/c"));
        assert_eq!(canonical(&root.join("./x")).unwrap(), root.join("x"));
        std::os::unix::fs::symlink(&root, root.join("l")).unwrap();
        assert_eq!(canonical(&root.join("l/new")).unwrap(), root.join("new"));
    }
}
