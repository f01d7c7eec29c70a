//! Path handling: variable expansion, making paths absolute, and canonicalisation
//! that also works for paths that do not exist yet.

use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};

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

pub(crate) use crate::lookup::canonicalize_lenient;

/// Expand, make absolute against `base`, and canonicalise one path from a config
/// file or a flag.
pub(crate) fn resolve_path(raw: &str, base: &Path, vars: &Vars) -> Result<PathBuf, String> {
    let p = expand(raw, vars)?;
    Ok(canonicalize_lenient(&base.join(p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
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
    fn memoised_lookups_agree_with_fresh_ones() {
        let t = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(t.path()).unwrap();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/f"), "x").unwrap();
        symlink(root.join("a"), root.join("l")).unwrap();
        symlink("a/b", root.join("rel")).unwrap();
        let paths = [
            "a/b/c/d",
            "a/b",
            "l/b/x",
            "missing/x",
            "a/../l",
            "rel/../f",
            "a/f/x",
            "l",
            "rel/..",
        ];
        let fresh: Vec<PathBuf> = paths
            .iter()
            .map(|p| canonicalize_lenient(&root.join(p)))
            .collect();
        let memo = crate::lookup::memoised();
        for _ in 0..2 {
            for (p, want) in paths.iter().zip(&fresh) {
                assert_eq!(&canonicalize_lenient(&root.join(p)), want, "{p}");
            }
        }
        // Existing paths come out as realpath(3) has them.
        for p in ["l/b", "rel/..", "a/f"] {
            assert_eq!(
                canonicalize_lenient(&root.join(p)),
                fs::canonicalize(root.join(p)).unwrap(),
                "{p}"
            );
        }
        // A snapshot while memoised; looked at afresh once the guard is gone.
        fs::create_dir(root.join("missing")).unwrap();
        symlink(root.join("a/b"), root.join("missing/x")).unwrap();
        assert_eq!(
            canonicalize_lenient(&root.join("missing/x")),
            root.join("missing/x")
        );
        drop(memo);
        assert_eq!(
            canonicalize_lenient(&root.join("missing/x")),
            root.join("a/b")
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
