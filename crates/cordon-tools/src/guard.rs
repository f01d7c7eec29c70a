//! Path resolution and the policy check in front of every file operation, and the
//! ring of recent denials that `status` reports.

use crate::error::ToolError;
use cordon_policy::{Access, PathRule, Policy};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The longest path accepted (bytes), like Linux's PATH_MAX.
pub const MAX_PATH: usize = 4096;
/// How many denials `status` keeps.
pub const DENIALS_KEPT: usize = 50;

pub struct Guard {
    pub policy: Policy,
    denials: Mutex<VecDeque<Value>>,
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
            policy,
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

    /// Refuses `path` (canonical) if its rule does not grant `need`.
    pub fn check(&self, op: &'static str, path: &Path, need: Need) -> Result<(), ToolError> {
        let Some(rule) = self.policy.rule_for(path) else {
            return Ok(());
        };
        // A scratch directory (a private tmpfs such as /tmp) is writable, unless a
        // rule at least as deep decides (e.g. a workspace inside /tmp).
        let depth = rule.path.components().count();
        if self
            .policy
            .scratch
            .iter()
            .any(|s| path.starts_with(s) && s.components().count() > depth)
        {
            return Ok(());
        }
        let what = match (rule.access, need) {
            (Access::Deny, _) => "denied",
            (Access::Read, Need::Write) => "read-only",
            _ => return Ok(()),
        };
        Err(self.deny(op, what, path, rule))
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
        d.push_back(json!({ "time": now_rfc3339(), "op": op, "path": path, "rule": rule }));
    }

    pub fn denials(&self) -> Vec<Value> {
        let d = self.denials.lock().unwrap_or_else(|e| e.into_inner());
        d.iter().cloned().collect()
    }

    /// Whether any deny rule lies strictly under `root` (then a walk must check
    /// each entry).
    pub fn denies_under(&self, root: &Path) -> bool {
        self.policy
            .rules
            .iter()
            .any(|r| r.access == Access::Deny && r.path.starts_with(root) && r.path != root)
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

/// Now, as `2024-05-01T12:34:56.789Z`.
pub fn now_rfc3339() -> String {
    rfc3339(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// A time since the Unix epoch, as `2024-05-01T12:34:56.789Z`.
pub fn rfc3339(d: std::time::Duration) -> String {
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
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
