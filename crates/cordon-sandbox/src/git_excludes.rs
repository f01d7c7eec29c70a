//! Keeps cordon's placeholders out of git inside the sandbox: they are cordon's,
//! not the project's, so `git status` must not list them and `git add -A` must not
//! commit them (the host's `git status` would then show them deleted).
//!
//! Git reads one global excludes file (`core.excludesFile`, by default
//! `$XDG_CONFIG_HOME/git/ignore`). Inside, it is a file in the sandbox's private
//! `/tmp` holding the user's own excludes and one anchored pattern per placeholder,
//! named by `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_0`/`GIT_CONFIG_VALUE_0` in the
//! command's environment. The host's repository and config are not touched.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The file's name in the sandbox's `/tmp`.
const FILE_NAME: &str = ".cordon-git-excludes";

/// The most of the user's own excludes file that is copied.
const MAX_USER_EXCLUDES: u64 = 1024 * 1024;

/// What to write inside and what to add to the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitExcludes {
    /// Where the file goes inside (in the private `/tmp`).
    pub path: PathBuf,
    pub content: Vec<u8>,
}

impl GitExcludes {
    /// The excludes for `placeholders` (each below one of `roots`), or `None` when
    /// there are none or the environment already sets git config (the user's
    /// `GIT_CONFIG_COUNT` is theirs; a second one would replace it).
    pub fn new(
        placeholders: &[PathBuf],
        roots: &[&Path],
        scratch: &Path,
        env: &[(String, String)],
    ) -> Option<GitExcludes> {
        if placeholders.is_empty() || env.iter().any(|(k, _)| k == "GIT_CONFIG_COUNT") {
            return None;
        }
        let home = env
            .iter()
            .find_map(|(k, v)| (k == "HOME").then(|| PathBuf::from(v)));
        let xdg = env
            .iter()
            .find_map(|(k, v)| (k == "XDG_CONFIG_HOME").then(|| PathBuf::from(v)));
        let mut content = user_excludes(home.as_deref(), xdg.as_deref());
        if !content.is_empty() && !content.ends_with(b"\n") {
            content.push(b'\n');
        }
        content.extend_from_slice(b"# cordon's placeholders for protected paths\n");
        for p in placeholders {
            for pattern in patterns(p, roots) {
                content.extend_from_slice(pattern.as_os_str().as_bytes());
                content.push(b'\n');
            }
        }
        Some(GitExcludes {
            path: scratch.join(FILE_NAME),
            content,
        })
    }

    /// The environment that points git at the file.
    pub fn env(&self) -> [(String, String); 3] {
        [
            ("GIT_CONFIG_COUNT".into(), "1".into()),
            ("GIT_CONFIG_KEY_0".into(), "core.excludesFile".into()),
            (
                "GIT_CONFIG_VALUE_0".into(),
                self.path.to_string_lossy().into_owned(),
            ),
        ]
    }

    /// Writes the file (in the sandbox, once the view is built). A failure only
    /// means git shows the placeholders.
    pub fn write(&self) {
        let _ = fs::write(&self.path, &self.content);
    }
}

/// Anchored patterns naming `placeholder` from the top of each repository a git
/// inside could see it in: the one its writable root is in (found by a `.git` at
/// or above the root), and one made later at the root itself.
fn patterns(placeholder: &Path, roots: &[&Path]) -> Vec<PathBuf> {
    let mut tops: Vec<&Path> = Vec::new();
    if let Some(root) = roots
        .iter()
        .filter(|r| placeholder.starts_with(r) && placeholder != **r)
        .max_by_key(|r| r.as_os_str().len())
    {
        tops.push(root);
        if let Some(outer) = placeholder
            .ancestors()
            .skip(1)
            .find(|a| cordon_policy::lookup::lstat(&a.join(".git")).exists())
        {
            tops.push(outer);
        }
    }
    tops.dedup();
    tops.iter()
        .filter_map(|top| placeholder.strip_prefix(top).ok())
        .map(|rel| Path::new("/").join(rel))
        .collect()
}

/// The user's global excludes: `core.excludesFile` of the global config, else
/// `$XDG_CONFIG_HOME/git/ignore` (git's default).
fn user_excludes(home: Option<&Path>, xdg: Option<&Path>) -> Vec<u8> {
    let xdg = xdg
        .map(Path::to_path_buf)
        .or_else(|| home.map(|h| h.join(".config")));
    let configs = [
        xdg.as_ref().map(|x| x.join("git/config")),
        home.map(|h| h.join(".gitconfig")),
    ];
    // Git reads the XDG file first; the later file wins.
    let mut file = xdg.as_ref().map(|x| x.join("git/ignore"));
    for config in configs.iter().flatten() {
        let Ok(text) = fs::read_to_string(config) else {
            continue;
        };
        let Ok(entries) = cordon_gitguard::config::parse(&text) else {
            continue;
        };
        for e in entries {
            if e.section == "core" && e.subsection.is_none() && e.key == "excludesfile" {
                if let Some(v) = e.value {
                    file = Some(expand_tilde(&v, home));
                }
            }
        }
    }
    let Some(file) = file else {
        return Vec::new();
    };
    use std::io::Read;
    fs::File::open(file)
        .and_then(|f| {
            let mut bytes = Vec::new();
            f.take(MAX_USER_EXCLUDES).read_to_end(&mut bytes)?;
            Ok(bytes)
        })
        .unwrap_or_default()
}

fn expand_tilde(value: &str, home: Option<&Path>) -> PathBuf {
    match (value.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_name_the_placeholder_from_each_repository_top() {
        let t = tempfile::tempdir().unwrap();
        let outer = t.path().canonicalize().unwrap();
        fs::create_dir(outer.join(".git")).unwrap();
        let ws = outer.join("ws");
        fs::create_dir(&ws).unwrap();
        let p = patterns(&ws.join(".vscode"), &[&ws]);
        assert_eq!(p, [PathBuf::from("/.vscode"), PathBuf::from("/ws/.vscode")]);
    }

    #[test]
    fn the_users_own_excludes_come_first_and_a_users_git_config_env_wins() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().canonicalize().unwrap();
        fs::write(
            home.join(".gitconfig"),
            "[core]\n\texcludesFile = ~/.ignore-mine\n",
        )
        .unwrap();
        fs::write(home.join(".ignore-mine"), "*.log").unwrap();
        let env = vec![("HOME".to_string(), home.display().to_string())];
        let ws = home.join("ws");
        let ex = GitExcludes::new(&[ws.join(".pi")], &[&ws], Path::new("/tmp"), &env).unwrap();
        let text = String::from_utf8(ex.content).unwrap();
        assert!(text.starts_with("*.log\n"), "{text}");
        assert!(text.ends_with("/.pi\n"), "{text}");
        let mut env = env;
        env.push(("GIT_CONFIG_COUNT".into(), "1".into()));
        assert!(GitExcludes::new(&[ws.join(".pi")], &[&ws], Path::new("/tmp"), &env).is_none());
    }
}
