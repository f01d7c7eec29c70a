//! Mounts (a host path shown at another path inside): the checks that keep them
//! from loosening the policy.
//!
//! The sandbox takes a mount's content from its own view of the source, so a
//! mount shows no more than the view shows at the source; a read-write mount's
//! source is a writable root like an `allow_write` path (protected paths and all).
//! What is checked here: the source exists and is not hidden, a read-write source
//! is not protected, and the target neither lies in nor covers a hidden, protected
//! or writable path.

use crate::error::PolicyError;
use crate::model::{Access, Mount, PathRule, RuleKind, is_path_prefix, rule_for_in};
use std::path::Path;

/// Paths the sandbox builds itself; no mount may come from or go into them.
const SYNTHETIC: [&str; 2] = ["/proc", "/dev"];

fn refuse(mount: &Mount, problem: String) -> PolicyError {
    PolicyError::Value {
        origin: mount.origin.clone(),
        message: format!(
            "mount {} → {}: {problem}",
            mount.source.display(),
            mount.target.display()
        ),
    }
}

fn describe(rule: &PathRule) -> String {
    let what = match (rule.access, rule.kind) {
        (Access::Deny, _) => "the hidden path",
        (_, RuleKind::Protected) => "the protected path",
        (Access::Write, _) => "the writable root",
        _ => "the path",
    };
    format!("{what} {} ({})", rule.path.display(), rule.origin)
}

fn synthetic(path: &Path) -> bool {
    SYNTHETIC.iter().any(|s| path.starts_with(s))
}

/// Checks the sources against `rules` (before protected paths are derived) and
/// returns the rules the mounts add: a write rule for each read-write source, a
/// read rule for a read-only source inside a private tmpfs (`/tmp`), which hides
/// the host's copy.
pub(crate) fn source_rules(
    mounts: &[Mount],
    rules: &[PathRule],
    scratch: &[std::path::PathBuf],
) -> Result<Vec<PathRule>, PolicyError> {
    let mut added = Vec::new();
    for m in mounts {
        match std::fs::metadata(&m.source) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(refuse(m, "the source does not exist".into()));
            }
            Err(e) => return Err(refuse(m, format!("the source cannot be read: {e}"))),
        }
        if synthetic(&m.source) {
            return Err(refuse(
                m,
                "the source is in /proc or /dev, which the sandbox makes itself".into(),
            ));
        }
        let decides = rule_for_in(rules, &m.source);
        if let Some(rule) = decides.filter(|r| r.access == Access::Deny) {
            return Err(refuse(
                m,
                format!(
                    "the source lies in {}; a mount cannot show what the policy hides (hint: mount another path, or drop the rule with \"allow_read\" in your config)",
                    describe(rule)
                ),
            ));
        }
        let in_scratch = scratch.iter().any(|s| m.source.starts_with(s));
        let covered = decides.is_some_and(|r| scratch.iter().any(|s| r.path.starts_with(s)));
        let access = if m.writable {
            Some(Access::Write)
        } else if in_scratch && !covered {
            Some(Access::Read)
        } else {
            None
        };
        if let Some(access) = access {
            added.push(PathRule {
                path: m.source.clone(),
                access,
                kind: RuleKind::Plain,
                origin: m.origin.clone(),
            });
        }
    }
    Ok(added)
}

/// Checks the targets against the final `rules`, and a read-write source against
/// the protected paths; sorts the mounts parents first.
pub(crate) fn check_targets(
    mounts: &mut [Mount],
    rules: &[PathRule],
    scratch: &[std::path::PathBuf],
) -> Result<(), PolicyError> {
    for m in mounts.iter() {
        if m.writable {
            let protected = rules
                .iter()
                .find(|r| r.kind == RuleKind::Protected && is_path_prefix(&r.path, &m.source));
            if let Some(rule) = protected {
                return Err(refuse(
                    m,
                    format!("a read-write source may not be inside {}", describe(rule)),
                ));
            }
        }
        let t = &m.target;
        if t == Path::new("/") || synthetic(t) {
            return Err(refuse(
                m,
                "the target cannot be /, or in /proc or /dev".into(),
            ));
        }
        if let Some(s) = scratch.iter().find(|s| s.starts_with(t)) {
            return Err(refuse(
                m,
                format!(
                    "the target would cover the sandbox's private {}",
                    s.display()
                ),
            ));
        }
        let inside = rules.iter().find(|r| {
            is_path_prefix(&r.path, t)
                && (r.access == Access::Deny || r.kind == RuleKind::Protected)
        });
        if let Some(rule) = inside {
            return Err(refuse(m, format!("the target lies in {}", describe(rule))));
        }
        let covered = rules.iter().find(|r| {
            is_path_prefix(t, &r.path)
                && (r.access != Access::Read || r.kind == RuleKind::Protected)
        });
        if let Some(rule) = covered {
            return Err(refuse(
                m,
                format!(
                    "the target would cover {}, which must stay as the policy says (hint: choose a target that holds no such path, e.g. /data)",
                    describe(rule)
                ),
            ));
        }
    }
    mounts.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(())
}
