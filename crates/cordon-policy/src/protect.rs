//! Protected paths inside a writable root, including the real git directory of a
//! git worktree (whose `.git` is a file pointing elsewhere).

use crate::defaults::{GIT_DIR_PROTECTED, PROTECTED};
use crate::model::{Access, Policy, RuleKind, is_path_prefix};
use crate::paths::canonicalize_lenient;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The most cordon reads of a `.git` or `commondir` file (they hold one path).
const MAX_POINTER_BYTES: u64 = 64 * 1024;

/// The paths to protect inside the writable root `root` (canonical). Each protected
/// location is returned as written under the root and, when a symlink inside the
/// root leads elsewhere, also as its canonical target, so that neither the link
/// nor the target can be changed. Problems with a `.git` file become warnings.
pub(crate) fn protected_paths(root: &Path, warnings: &mut Vec<String>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut add = |p: PathBuf| {
        let c = canonicalize_lenient(&p);
        if c != p {
            out.push(c);
        }
        out.push(p);
    };
    if cordon_gitguard::looks_like_git_dir(root) {
        // A git dir made writable (a worktree's main `.git`, as the README advises):
        // its own settings files, and those of its linked worktrees, stay read-only.
        for name in GIT_DIR_PROTECTED {
            add(root.join(name));
        }
        for worktree in fs::read_dir(root.join("worktrees"))
            .into_iter()
            .flatten()
            .flatten()
        {
            add(worktree.path().join("config.worktree"));
            add(worktree.path().join("commondir"));
        }
        return out;
    }
    for name in PROTECTED {
        add(root.join(name));
    }
    // Code the repository's own (protected) config names inside the root: a
    // relative `core.hooksPath` (husky's `.husky/_`), an fsmonitor script.
    for path in code_named_by(&root.join(".git/config"), root) {
        add(path);
    }
    let dotgit = root.join(".git");
    if fs::metadata(&dotgit).map(|m| m.is_file()).unwrap_or(false) {
        // A worktree (or submodule): `.git` names the real git dir. Protect the
        // pointer itself so it cannot be aimed at a directory the sandbox controls.
        add(dotgit.clone());
        match read_pointer(&dotgit).and_then(|s| parse_gitdir(&s)) {
            Ok(gitdir) => {
                let gitdir = canonicalize_lenient(&root.join(gitdir));
                add(gitdir.join("config"));
                add(gitdir.join("config.worktree"));
                add(gitdir.join("hooks"));
                let commondir = gitdir.join("commondir");
                add(commondir.clone());
                if fs::symlink_metadata(&commondir).is_ok() {
                    match read_pointer(&commondir).and_then(|s| {
                        let t = s.trim_end_matches(['\n', '\r']);
                        if t.trim().is_empty() {
                            Err("it is empty".to_string())
                        } else {
                            Ok(PathBuf::from(t))
                        }
                    }) {
                        Ok(common) => {
                            let common = canonicalize_lenient(&gitdir.join(common));
                            add(common.join("hooks"));
                            add(common.join("config"));
                            add(common.join("modules"));
                        }
                        Err(why) => warnings.push(format!(
                            "cannot use {} to protect the worktree's main git directory: {why}",
                            commondir.display()
                        )),
                    }
                }
            }
            Err(why) => warnings.push(format!(
                "cannot find the git directory named by {}: {why}; only the paths under {} are protected",
                dotgit.display(),
                root.display()
            )),
        }
    }
    out
}

/// The paths inside `root` that the git config `config` runs code from:
/// `core.hooksPath` (relative to the root, as git takes it) and a `core.fsmonitor`
/// that names a file rather than `true`/`false`.
fn code_named_by(config: &Path, root: &Path) -> Vec<PathBuf> {
    let Ok(text) = read_pointer(config) else {
        return Vec::new();
    };
    let Ok(entries) = cordon_gitguard::config::parse(&text) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|e| e.section == "core" && e.subsection.is_none())
        .filter_map(|e| match (e.key.as_str(), e.value.as_deref()) {
            ("hookspath", Some(v)) => Some(v),
            ("fsmonitor", Some(v))
                if !v.contains(char::is_whitespace)
                    && !matches!(
                        v.to_ascii_lowercase().as_str(),
                        "true" | "false" | "yes" | "no" | "on" | "off" | "1" | "0" | ""
                    ) =>
            {
                Some(v)
            }
            _ => None,
        })
        .filter(|v| !v.starts_with('~'))
        .map(|v| crate::paths::normalize_lexical(&root.join(v)))
        .filter(|p| p.starts_with(root) && p != root)
        .collect()
}

/// Read a small pointer file (`.git`, `commondir`) as UTF-8 text.
fn read_pointer(path: &Path) -> Result<String, String> {
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("it is not a regular file".to_string());
    }
    let f = fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    f.take(MAX_POINTER_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())
}

/// Parse the content of a `.git` file: `gitdir: <path>`.
fn parse_gitdir(content: &str) -> Result<PathBuf, String> {
    let line = content.lines().next().unwrap_or("");
    let Some(rest) = line.strip_prefix("gitdir:") else {
        return Err("it does not start with \"gitdir:\"".to_string());
    };
    let path = rest.trim();
    if path.is_empty() || path.contains('\0') {
        return Err("the gitdir path is empty or invalid".to_string());
    }
    Ok(PathBuf::from(path))
}

/// Whether the protected path `path` of the writable root `root` gets no
/// placeholder: one below a `.git` that does not exist. The sandbox may then make
/// a repository there (`git init`), and what it writes in it is judged when the
/// run ends (cordon-gitguard), as in any repository it makes.
pub fn left_to_the_audit(path: &Path, root: &Path) -> bool {
    path.ancestors()
        .take_while(|a| *a != root && a.starts_with(root))
        .any(|a| a.file_name() == Some(".git".as_ref()) && fs::symlink_metadata(a).is_err())
}

/// The protected paths that stay read-only during a run of `policy` (existing, or
/// held by a placeholder), as the run begins: what the sandbox cannot have written.
pub fn read_only_during_run(policy: &Policy) -> Vec<PathBuf> {
    policy
        .rules
        .iter()
        .filter(|r| r.kind == RuleKind::Protected && r.access != Access::Write)
        .filter(|r| {
            let root = policy
                .writable_roots()
                .filter(|w| is_path_prefix(w, &r.path) && *w != r.path)
                .max_by_key(|w| w.components().count());
            root.is_none_or(|root| !left_to_the_audit(&r.path, root))
        })
        .map(|r| r.path.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon_tmp() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let p = fs::canonicalize(t.path()).unwrap();
        (t, p)
    }

    #[test]
    fn plain_root() {
        let (_t, root) = canon_tmp();
        let mut w = Vec::new();
        let p = protected_paths(&root, &mut w);
        assert!(w.is_empty());
        for name in PROTECTED {
            assert!(p.contains(&root.join(name)), "{name}");
        }
        assert_eq!(p.len(), PROTECTED.len());
    }

    #[test]
    fn symlinked_protected_path_protects_link_and_target() {
        let (_t, root) = canon_tmp();
        fs::create_dir(root.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join(".vscode")).unwrap();
        let p = protected_paths(&root, &mut Vec::new());
        assert!(p.contains(&root.join(".vscode")));
        assert!(p.contains(&root.join("elsewhere")));
    }

    #[test]
    fn worktree() {
        let (_t, base) = canon_tmp();
        let main = base.join("main");
        let wt_gitdir = main.join(".git/worktrees/feat");
        fs::create_dir_all(&wt_gitdir).unwrap();
        fs::write(wt_gitdir.join("commondir"), "../..\n").unwrap();
        let wt = base.join("feat");
        fs::create_dir(&wt).unwrap();
        fs::write(
            wt.join(".git"),
            format!("gitdir: {}\n", wt_gitdir.display()),
        )
        .unwrap();
        let mut w = Vec::new();
        let p = protected_paths(&wt, &mut w);
        assert!(w.is_empty(), "{w:?}");
        assert!(p.contains(&wt.join(".git")));
        assert!(p.contains(&wt_gitdir.join("config")));
        assert!(p.contains(&wt_gitdir.join("hooks")));
        assert!(p.contains(&main.join(".git/hooks")));
        assert!(p.contains(&main.join(".git/config")));
    }

    #[test]
    fn relative_gitdir_without_commondir() {
        let (_t, root) = canon_tmp();
        fs::create_dir_all(root.join("modules/sub")).unwrap();
        let sub = root.join("sub");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join(".git"), "gitdir: ../modules/sub").unwrap();
        let p = protected_paths(&sub, &mut Vec::new());
        assert!(p.contains(&root.join("modules/sub/config")));
        assert!(p.contains(&root.join("modules/sub/hooks")));
    }

    #[test]
    fn malformed_git_files_warn() {
        for content in ["", "nonsense", "gitdir:   ", "gitdir: a\0b"] {
            let (_t, root) = canon_tmp();
            fs::write(root.join(".git"), content).unwrap();
            let mut w = Vec::new();
            let p = protected_paths(&root, &mut w);
            assert_eq!(w.len(), 1, "{content:?}: {w:?}");
            assert!(w[0].contains(".git"), "{}", w[0]);
            assert!(p.contains(&root.join(".git/hooks")));
        }
        let (_t, root) = canon_tmp();
        fs::write(root.join(".git"), [0xff, 0xfe]).unwrap();
        let mut w = Vec::new();
        protected_paths(&root, &mut w);
        assert!(w[0].contains("not UTF-8"), "{w:?}");
        // An empty commondir.
        let (_t, root) = canon_tmp();
        fs::create_dir(root.join("gd")).unwrap();
        fs::write(root.join("gd/commondir"), "\n").unwrap();
        fs::write(root.join(".git"), "gitdir: gd").unwrap();
        let mut w = Vec::new();
        protected_paths(&root, &mut w);
        assert!(w.len() == 1 && w[0].contains("commondir"), "{w:?}");
    }

    #[test]
    fn a_git_dir_made_writable_keeps_its_own_settings_read_only() {
        let (_t, base) = canon_tmp();
        let gitdir = base.join("main/.git");
        fs::create_dir_all(gitdir.join("objects")).unwrap();
        fs::create_dir_all(gitdir.join("refs")).unwrap();
        fs::create_dir_all(gitdir.join("worktrees/feat")).unwrap();
        fs::write(gitdir.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        let p = protected_paths(&gitdir, &mut Vec::new());
        for name in GIT_DIR_PROTECTED {
            assert!(p.contains(&gitdir.join(name)), "{name}: {p:?}");
        }
        assert!(p.contains(&gitdir.join("worktrees/feat/commondir")));
        assert!(p.contains(&gitdir.join("worktrees/feat/config.worktree")));
        assert!(
            !p.iter().any(|x| x.starts_with(gitdir.join(".git"))),
            "{p:?}"
        );
    }

    #[test]
    fn code_the_repository_config_names_inside_the_root_is_protected() {
        let (_t, root) = canon_tmp();
        fs::create_dir(root.join(".git")).unwrap();
        fs::write(
            root.join(".git/config"),
            "[core]\n\thooksPath = .husky/_\n\tfsmonitor = scripts/fsmon.sh\n",
        )
        .unwrap();
        let p = protected_paths(&root, &mut Vec::new());
        assert!(p.contains(&root.join(".husky/_")), "{p:?}");
        assert!(p.contains(&root.join("scripts/fsmon.sh")), "{p:?}");
        // Outside the root, or the built-in fsmonitor: nothing more.
        fs::write(
            root.join(".git/config"),
            "[core]\n\thooksPath = ../elsewhere\n\tfsmonitor = true\n",
        )
        .unwrap();
        assert_eq!(
            protected_paths(&root, &mut Vec::new()).len(),
            PROTECTED.len()
        );
    }

    #[test]
    fn parse() {
        assert_eq!(parse_gitdir("gitdir: /a/b\n").unwrap(), Path::new("/a/b"));
        assert_eq!(parse_gitdir("gitdir:rel").unwrap(), Path::new("rel"));
        assert!(parse_gitdir("gitdir /a").is_err());
    }
}
