//! Path handling: variable expansion, making paths absolute, and canonicalisation
//! that also works for paths that do not exist yet.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// How many symlinks [`canonicalize_lenient`] follows before it gives up (the
/// kernel's limit).
const MAX_SYMLINK_HOPS: usize = 40;

/// Values of the variables a path may use.
#[derive(Debug, Clone)]
pub(crate) struct Vars {
    pub workspace: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
}

/// The variables a path may use, for error messages.
pub(crate) const KNOWN_VARS: &str = "${WORKSPACE}, ${HOME}, ${TMP}, ${TMPDIR}";

/// Expand `${WORKSPACE}`, `${HOME}`, `${TMP}` (alias `${TMPDIR}`) and a leading `~/`
/// (or a lone `~`). The result may still be relative.
pub(crate) fn expand(raw: &str, vars: &Vars) -> Result<PathBuf, String> {
    if raw.is_empty() {
        return Err("empty path".to_string());
    }
    if raw.contains('\0') {
        return Err(format!("path {raw:?} contains a NUL byte"));
    }
    let mut out = OsString::new();
    let mut rest = raw;
    if raw == "~" {
        out.push(&vars.home);
        rest = "";
    } else if let Some(r) = raw.strip_prefix("~/") {
        out.push(&vars.home);
        out.push("/");
        rest = r;
    }
    while let Some(i) = rest.find("${") {
        out.push(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!(
                "path {raw:?}: unterminated \"${{\" (known variables: {KNOWN_VARS})"
            ));
        };
        let value: &OsStr = match &after[..end] {
            "WORKSPACE" => vars.workspace.as_os_str(),
            "HOME" => vars.home.as_os_str(),
            "TMP" | "TMPDIR" => vars.tmp.as_os_str(),
            other => {
                return Err(format!(
                    "path {raw:?}: unknown variable ${{{other}}} (known variables: {KNOWN_VARS})"
                ));
            }
        };
        out.push(value);
        rest = &after[end + 1..];
    }
    out.push(rest);
    Ok(PathBuf::from(out))
}

/// Resolve `.` and `..` without looking at the filesystem. `path` must be absolute;
/// `..` at the root stays at the root.
pub(crate) fn normalize_lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Canonicalise an absolute path, also when it (or part of it) does not exist.
///
/// An existing path goes through [`fs::canonicalize`]. Otherwise the path is walked
/// component by component from `/`: existing symlinks are followed (also dangling
/// ones, so a rule written through a symlink lands on its target), and from the
/// first missing component on, `.` and `..` are resolved lexically. Never fails:
/// an unreadable component or a symlink loop ends the following of links, and the
/// rest is appended as written.
pub(crate) fn canonicalize_lenient(path: &Path) -> PathBuf {
    if let Ok(c) = fs::canonicalize(path) {
        return c;
    }
    // Components still to visit, last one first.
    let mut todo: Vec<OsString> = Vec::new();
    push_components(&mut todo, path);
    let mut out = PathBuf::from("/");
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c == "." {
            continue;
        }
        if c == ".." {
            out.pop();
            continue;
        }
        let candidate = out.join(&c);
        let is_link = fs::symlink_metadata(&candidate)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if is_link && hops < MAX_SYMLINK_HOPS {
            if let Ok(target) = fs::read_link(&candidate) {
                hops += 1;
                if target.is_absolute() {
                    out = PathBuf::from("/");
                }
                push_components(&mut todo, &target);
                continue;
            }
        }
        out = candidate;
    }
    out
}

/// [`canonicalize_lenient`] of `path` below the canonical directory `base`, cheaply
/// for the common case: one `lstat` per existing component up to the first missing
/// one, after which the rest is as written. A symlink, `.` or `..` on the way
/// hands the whole path to [`canonicalize_lenient`]. For the many home paths
/// cordon checks on every run, most of which do not exist.
///
/// Each component is looked up once for all the paths asked: the eighty secrets
/// and protected files of a home share a few directories (`~/.config` alone is
/// on the way to thirty of them).
pub(crate) struct Below<'a> {
    base: &'a Path,
    /// What `lstat` said of each component looked up so far.
    seen: std::collections::HashMap<PathBuf, Seen>,
}

/// What a path component is, as far as canonicalising goes.
#[derive(Clone, Copy, PartialEq)]
enum Seen {
    Missing,
    Symlink,
    Other,
}

impl<'a> Below<'a> {
    pub(crate) fn new(base: &'a Path) -> Below<'a> {
        Below {
            base,
            seen: std::collections::HashMap::new(),
        }
    }

    pub(crate) fn canonicalize(&mut self, path: &Path) -> PathBuf {
        let Ok(rest) = path.strip_prefix(self.base) else {
            return canonicalize_lenient(path);
        };
        let mut at = self.base.to_path_buf();
        for c in rest.components() {
            let Component::Normal(name) = c else {
                return canonicalize_lenient(path);
            };
            at.push(name);
            let kind = match self.seen.get(&at) {
                Some(kind) => *kind,
                None => {
                    let kind = match fs::symlink_metadata(&at) {
                        Ok(m) if m.file_type().is_symlink() => Seen::Symlink,
                        Ok(_) => Seen::Other,
                        Err(_) => Seen::Missing,
                    };
                    self.seen.insert(at.clone(), kind);
                    kind
                }
            };
            match kind {
                Seen::Symlink => return canonicalize_lenient(path),
                Seen::Other => {}
                Seen::Missing => return path.to_path_buf(),
            }
        }
        at
    }
}

/// Push `path`'s components onto `todo` so that the first one is popped first.
fn push_components(todo: &mut Vec<OsString>, path: &Path) {
    let start = todo.len();
    for c in path.components() {
        match c {
            Component::Normal(n) => todo.push(n.to_os_string()),
            Component::ParentDir => todo.push("..".into()),
            Component::CurDir => todo.push(".".into()),
            Component::RootDir | Component::Prefix(_) => {}
        }
    }
    todo[start..].reverse();
}

/// Expand, make absolute against `base`, and canonicalise one path from a config
/// file or a flag.
pub(crate) fn resolve_path(raw: &str, base: &Path, vars: &Vars) -> Result<PathBuf, String> {
    let p = expand(raw, vars)?;
    Ok(canonicalize_lenient(&base.join(p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn vars() -> Vars {
        Vars {
            workspace: "/w".into(),
            home: "/home/u".into(),
            tmp: "/tmp".into(),
        }
    }

    #[test]
    fn expansion() {
        let v = vars();
        let ok = |s: &str| expand(s, &v).unwrap();
        assert_eq!(ok("${WORKSPACE}/../out"), Path::new("/w/../out"));
        assert_eq!(ok("${HOME}/.ssh"), Path::new("/home/u/.ssh"));
        assert_eq!(ok("${TMP}/x"), Path::new("/tmp/x"));
        assert_eq!(ok("${TMPDIR}/x"), Path::new("/tmp/x"));
        assert_eq!(ok("~/.aws"), Path::new("/home/u/.aws"));
        assert_eq!(ok("~"), Path::new("/home/u"));
        assert_eq!(ok("~user/x"), Path::new("~user/x"));
        assert_eq!(ok("a/~/b"), Path::new("a/~/b"));
        assert_eq!(ok("$HOME/x"), Path::new("$HOME/x"));
        assert_eq!(ok("a${HOME}b"), Path::new("a/home/ub"));
        assert_eq!(ok("secrets/"), Path::new("secrets"));
    }

    #[test]
    fn expansion_errors() {
        let v = vars();
        let err = |s: &str| expand(s, &v).unwrap_err();
        assert!(err("${USER}/x").contains("unknown variable ${USER}"));
        assert!(err("${}").contains("unknown variable ${}"));
        assert!(err("${HOME").contains("unterminated"));
        assert!(err("").contains("empty path"));
        assert!(err("a\0b").contains("NUL"));
    }

    #[test]
    fn lexical() {
        assert_eq!(
            normalize_lexical(Path::new("/a/./b/../c")),
            Path::new("/a/c")
        );
        assert_eq!(normalize_lexical(Path::new("/../..")), Path::new("/"));
        assert_eq!(normalize_lexical(Path::new("/")), Path::new("/"));
    }

    #[test]
    fn canonical_existing_and_missing() {
        let t = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(t.path()).unwrap();
        fs::create_dir(root.join("real")).unwrap();
        symlink(root.join("real"), root.join("link")).unwrap();
        // Existing, through a symlink.
        assert_eq!(canonicalize_lenient(&root.join("link")), root.join("real"));
        // Missing, beneath a symlink.
        assert_eq!(
            canonicalize_lenient(&root.join("link/missing/x")),
            root.join("real/missing/x")
        );
        // `..` after a missing component is lexical; `..` after a symlink is physical.
        assert_eq!(
            canonicalize_lenient(&root.join("missing/../real/./y")),
            root.join("real/y")
        );
        fs::create_dir(root.join("real/sub")).unwrap();
        symlink(root.join("real/sub"), root.join("sublink")).unwrap();
        assert_eq!(
            canonicalize_lenient(&root.join("sublink/../nothere")),
            root.join("real/nothere")
        );
        // A dangling symlink, absolute and relative, lands on its target.
        symlink(root.join("real/later"), root.join("dangling")).unwrap();
        assert_eq!(
            canonicalize_lenient(&root.join("dangling")),
            root.join("real/later")
        );
        symlink("real/later2", root.join("dangling_rel")).unwrap();
        assert_eq!(
            canonicalize_lenient(&root.join("dangling_rel/z")),
            root.join("real/later2/z")
        );
        // A loop does not hang and does not panic.
        symlink(root.join("loop_b"), root.join("loop_a")).unwrap();
        symlink(root.join("loop_a"), root.join("loop_b")).unwrap();
        let p = canonicalize_lenient(&root.join("loop_a/x"));
        assert!(p.starts_with(&root), "{}", p.display());
        // A file used as a directory.
        fs::write(root.join("file"), "").unwrap();
        assert_eq!(
            canonicalize_lenient(&root.join("file/x")),
            root.join("file/x")
        );
    }

    #[test]
    fn canonical_below_a_base() {
        let t = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(t.path()).unwrap();
        fs::create_dir_all(root.join("a/b")).unwrap();
        symlink(root.join("a"), root.join("l")).unwrap();
        for p in ["a/b/c/d", "a/b", "l/b/x", "missing/x", "a/../l"] {
            let p = root.join(p);
            assert_eq!(
                Below::new(&root).canonicalize(&p),
                canonicalize_lenient(&p),
                "{p:?}"
            );
        }
        assert_eq!(
            Below::new(Path::new("/nonexistent-base")).canonicalize(&root.join("l")),
            root.join("a")
        );
    }

    #[test]
    fn resolve_relative_against_base() {
        let t = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(t.path()).unwrap();
        let v = Vars {
            workspace: root.clone(),
            home: root.join("home"),
            tmp: "/tmp".into(),
        };
        assert_eq!(resolve_path("sub/../x", &root, &v).unwrap(), root.join("x"));
        assert_eq!(
            resolve_path("/abs/./p", &root, &v).unwrap(),
            Path::new("/abs/p")
        );
        assert_eq!(
            resolve_path("~/k", Path::new("/elsewhere"), &v).unwrap(),
            root.join("home/k")
        );
    }
}
