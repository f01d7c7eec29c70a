//! The home directory: the files in it that the host runs or that configure
//! cordon and pi (protected where they fall inside a writable root), and the
//! hidden-home mode (`hide_home`: `$HOME` an empty private tmpfs inside, but for
//! the workspace and the paths named in `home_visible`).
//!
//! Unlike [`crate::defaults::PROTECTED`] (names relative to every writable root),
//! these are host paths: they are protected only when a writable root holds them
//! (the workspace is `$HOME` or `/`, `--allow-write ~/.config`, ...), so an
//! ordinary workspace gets no placeholders from them.

use crate::model::{Access, PathRule, rule_for_in};
use crate::paths::{canonicalize_lenient, normalize_lexical};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Files and directories below `$HOME` that a host program runs, sources or takes
/// settings that run code from (relative to `$HOME`). docs/config.md says why each
/// is here.
pub const HOME_PROTECTED: &[&str] = &[
    // Shell start-up files: bash, sh/dash, zsh (also under $ZDOTDIR), and what
    // the distributions' default rc files source.
    ".profile",
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".bash_aliases",
    ".bashrc.d",
    ".zshenv",
    ".zprofile",
    ".zshrc",
    ".zlogin",
    ".zlogout",
    // readline: a key binding can type a command line into every bash.
    ".inputrc",
    // Directories that the default ~/.profile puts on PATH.
    "bin",
    ".local/bin",
    // Python's user site-packages (a `.pth` file there runs code in every python).
    ".local/lib",
    // git's global config (core.fsmonitor, core.hooksPath, aliases, ...).
    ".gitconfig",
    // pi's own dir (settings, extensions, the agent dir below).
    ".pi",
    // Session start-up: environment (LD_PRELOAD), X session scripts.
    ".pam_environment",
    ".xprofile",
    ".xsession",
    ".xsessionrc",
    ".xinitrc",
    // Editors' start-up files, which run code when the editor opens.
    ".vimrc",
    ".vim",
    ".emacs",
    ".emacs.d",
    // tmux's config (run-shell).
    ".tmux.conf",
    // cargo's global config (build.rustc-wrapper, ...) and rustup's env script
    // that ~/.profile sources.
    ".cargo/config.toml",
    ".cargo/config",
    ".cargo/env",
];

/// Directories below the config directory (`$XDG_CONFIG_HOME`, and `~/.config`
/// whether or not it is set) that configure cordon or run code.
pub const CONFIG_PROTECTED: &[&str] = &[
    // cordon's own config: "net": "host", "unprotect", ... would loosen the next run.
    "cordon",
    // git's XDG config (same as ~/.gitconfig) and its attributes and ignore files.
    "git",
    // fish's config.fish and conf.d/.
    "fish",
    // Desktop autostart entries and systemd user units: run at the next login.
    "autostart",
    "systemd",
    // The session's environment (systemd's environment.d: LD_PRELOAD, PATH).
    "environment.d",
    // neovim's init.lua and plugins.
    "nvim",
    "tmux",
    // direnv's config (its allow list is under the data directory).
    "direnv",
];

/// The host environment the home rules depend on.
#[derive(Debug, Clone, Default)]
pub(crate) struct HomeEnv {
    pub xdg_config_home: Option<PathBuf>,
    pub xdg_data_home: Option<PathBuf>,
    pub xdg_state_home: Option<PathBuf>,
    pub xdg_cache_home: Option<PathBuf>,
    /// zsh's start-up file directory.
    pub zdotdir: Option<PathBuf>,
    /// pi's config dir as set (`~` and relative paths allowed).
    pub pi_agent_dir: Option<PathBuf>,
    /// git's global config file, when moved.
    pub git_config_global: Option<PathBuf>,
    /// The entries of `$PATH`.
    pub path: Vec<PathBuf>,
}

impl HomeEnv {
    /// Read from an environment (`var` returns a variable's value, empty = unset).
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> HomeEnv {
        let get = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        HomeEnv {
            xdg_config_home: get("XDG_CONFIG_HOME"),
            xdg_data_home: get("XDG_DATA_HOME"),
            xdg_state_home: get("XDG_STATE_HOME"),
            xdg_cache_home: get("XDG_CACHE_HOME"),
            zdotdir: get("ZDOTDIR"),
            pi_agent_dir: get("PI_CODING_AGENT_DIR"),
            git_config_global: get("GIT_CONFIG_GLOBAL"),
            path: var("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        }
    }
}

/// pi's config dir: `custom` (`$PI_CODING_AGENT_DIR`; a leading `~` is `home`, a
/// relative path is relative to `cwd`), else `~/.pi/agent`.
pub fn pi_agent_dir(home: &Path, custom: Option<&Path>, cwd: &Path) -> PathBuf {
    let Some(custom) = custom else {
        return home.join(".pi/agent");
    };
    match custom.strip_prefix("~") {
        Ok(rest) => home.join(rest),
        Err(_) => normalize_lexical(&cwd.join(custom)),
    }
}

/// An XDG base directory: the variable's value when absolute, else `default`
/// below `home`.
fn xdg(value: Option<&Path>, home: &Path, default: &str) -> PathBuf {
    match value {
        Some(v) if v.is_absolute() => v.to_path_buf(),
        _ => home.join(default),
    }
}

/// Every home path to protect where a writable root holds it (absolute, not yet
/// canonical), each once. `home` is canonical.
pub(crate) fn candidates(home: &Path, env: &HomeEnv, cwd: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut add = |p: PathBuf| {
        if seen.insert(p.clone()) {
            out.push(p);
        }
    };
    for rel in HOME_PROTECTED {
        add(home.join(rel));
    }
    let config = xdg(env.xdg_config_home.as_deref(), home, ".config");
    for base in [home.join(".config"), config] {
        for rel in CONFIG_PROTECTED {
            add(base.join(rel));
        }
    }
    if let Some(z) = env.zdotdir.as_deref().filter(|z| z.is_absolute()) {
        for rc in [".zshenv", ".zprofile", ".zshrc", ".zlogin", ".zlogout"] {
            add(z.join(rc));
        }
    }
    // cordon's state (the audit log), data (the CA key, also a secret) and cache
    // (pi's run dirs, the bundle the sandbox trusts) directories.
    for (value, default) in [
        (&env.xdg_state_home, ".local/state"),
        (&env.xdg_data_home, ".local/share"),
        (&env.xdg_cache_home, ".cache"),
    ] {
        add(home.join(default).join("cordon"));
        add(xdg(value.as_deref(), home, default).join("cordon"));
    }
    // direnv's allow list: an entry there lets a planted .envrc run.
    add(xdg(env.xdg_data_home.as_deref(), home, ".local/share").join("direnv"));
    add(pi_agent_dir(home, env.pi_agent_dir.as_deref(), cwd));
    if let Some(g) = env.git_config_global.as_deref() {
        add(normalize_lexical(&cwd.join(g)));
    }
    out
}

/// The directories of `$PATH` to protect: absolute entries inside a writable root,
/// except those inside a workspace that does not hold `$HOME` (a project's own
/// `node_modules/.bin` or virtualenv, which the agent may write like the rest of
/// the project).
pub(crate) fn path_dirs(env: &HomeEnv, workspace: &Path, home: &Path) -> Vec<PathBuf> {
    let project = !home.starts_with(workspace);
    env.path
        .iter()
        .filter(|d| d.is_absolute())
        .map(|d| normalize_lexical(d))
        .filter(|d| !(project && canonicalize_lenient(d).starts_with(workspace)))
        .collect()
}

/// Why a home path inside a writable root cannot be protected.
#[derive(Debug)]
pub(crate) struct Unprotectable {
    pub path: PathBuf,
    pub link: PathBuf,
    pub root: PathBuf,
}

/// The paths among `candidates` to protect, given the writable `roots` and the
/// rules so far: each candidate a root holds, as written and, when a symlink
/// leads elsewhere, as its canonical target. A candidate reached through a symlink
/// in `home` (canonical) that the sandbox may write cannot be protected (the
/// sandbox could replace the link): that is an error, unless the user unprotected
/// the path.
pub(crate) fn protected_in_roots(
    candidates: &[PathBuf],
    home: &Path,
    roots: &[PathBuf],
    rules: &[PathRule],
    unprotect: &[PathBuf],
) -> Result<Vec<PathBuf>, Unprotectable> {
    let mut out = Vec::new();
    for p in candidates {
        if unprotect.contains(p) {
            continue;
        }
        let c = canonicalize_lenient(p);
        if let Some(root) = roots.iter().find(|r| p.starts_with(r)) {
            match first_link_below(p, root) {
                // The file itself is a symlink (a dotfile manager's `.bashrc ->
                // dotfiles/bashrc`): the view lays an empty read-only file on the
                // link, so it can be neither removed nor repointed, and its target
                // is protected below.
                Some(link) if link == *p => out.push(p.clone()),
                // A symlink of yours on the way, which the sandbox could replace.
                Some(link) if link.starts_with(home) && link != home => {
                    let writable =
                        rule_for_in(rules, &link).is_some_and(|r| r.access == Access::Write);
                    if writable && !unprotect.contains(&c) {
                        return Err(Unprotectable {
                            path: p.clone(),
                            link,
                            root: root.clone(),
                        });
                    }
                }
                // A system symlink (`/bin` to `/usr/bin`, with `/` writable): only its
                // owner can replace it; the target is protected below.
                Some(_) => {}
                None => out.push(p.clone()),
            }
        }
        if c != *p && roots.iter().any(|r| c.starts_with(r)) && !unprotect.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

/// The first component of `path` below `root` that is a symlink.
fn first_link_below(path: &Path, root: &Path) -> Option<PathBuf> {
    let rest = path.strip_prefix(root).ok()?;
    let mut at = root.to_path_buf();
    for c in rest.components() {
        at.push(c);
        match crate::lookup::lstat(&at) {
            crate::lookup::Entry::Symlink(_) => return Some(at),
            crate::lookup::Entry::Missing => return None,
            _ => {}
        }
    }
    None
}

/// The warning for a writable root that holds `$HOME` (the workspace is `$HOME`
/// or `/`, or `--allow-write` names one of them), if any.
pub(crate) fn home_root_warning(root: &Path, workspace: &Path, home: &Path) -> Option<String> {
    if !home.starts_with(root) {
        return None;
    }
    let what = if root == workspace {
        "the workspace"
    } else {
        "the writable root"
    };
    let which = if root == home {
        "is your home directory"
    } else {
        "holds your home directory"
    };
    Some(format!(
        "{what} {} {which}: the sandbox may change every file in it but the protected start-up files and the hidden secrets (`cordon policy` lists them), and caches and tools there that your machine runs are not all known to cordon (hint: use a project directory as the workspace)",
        root.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Origin, RuleKind};

    fn env_of(pairs: &[(&str, &str)]) -> HomeEnv {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HomeEnv::from_vars(|n| {
            pairs
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn candidates_follow_the_environment() {
        let home = Path::new("/nonexistent-home/u");
        let cwd = Path::new("/nonexistent-cwd");
        let plain = candidates(home, &HomeEnv::default(), cwd);
        for p in [
            ".bashrc",
            ".zshenv",
            ".config/cordon",
            ".config/git",
            ".config/fish",
            ".gitconfig",
            ".local/state/cordon",
            ".local/share/cordon",
            ".cache/cordon",
            ".pi/agent",
            ".local/bin",
        ] {
            assert!(plain.contains(&home.join(p)), "{p}");
        }
        let env = env_of(&[
            ("XDG_CONFIG_HOME", "/nonexistent-x/config"),
            ("XDG_STATE_HOME", "/nonexistent-x/state"),
            ("XDG_DATA_HOME", "relative/is/ignored"),
            ("ZDOTDIR", "/nonexistent-x/zsh"),
            ("PI_CODING_AGENT_DIR", "~/pi-conf"),
            ("GIT_CONFIG_GLOBAL", "gitconf"),
            ("PATH", "/usr/bin::rel:/nonexistent-home/u/tools/bin"),
        ]);
        let c = candidates(home, &env, cwd);
        for p in [
            "/nonexistent-x/config/cordon",
            "/nonexistent-x/config/git",
            "/nonexistent-home/u/.config/cordon",
            "/nonexistent-x/state/cordon",
            "/nonexistent-home/u/.local/share/cordon",
            "/nonexistent-x/zsh/.zshrc",
            "/nonexistent-home/u/pi-conf",
            "/nonexistent-cwd/gitconf",
        ] {
            assert!(c.contains(&PathBuf::from(p)), "{p}: {c:?}");
        }
        assert!(!c.iter().any(|p| p.starts_with("relative")));
        let ws = Path::new("/nonexistent-home/u/proj");
        assert_eq!(
            path_dirs(&env, ws, home),
            [
                PathBuf::from("/usr/bin"),
                PathBuf::from("/nonexistent-home/u/tools/bin")
            ]
        );
        // A project's own bin dir on PATH stays the project's.
        let env = env_of(&[("PATH", "/nonexistent-home/u/proj/node_modules/.bin")]);
        assert!(path_dirs(&env, ws, home).is_empty());
        assert_eq!(path_dirs(&env, home, home).len(), 1);
    }

    #[test]
    fn pi_agent_dir_forms() {
        let home = Path::new("/h");
        let cwd = Path::new("/c");
        assert_eq!(pi_agent_dir(home, None, cwd), Path::new("/h/.pi/agent"));
        assert_eq!(
            pi_agent_dir(home, Some(Path::new("~/x")), cwd),
            Path::new("/h/x")
        );
        assert_eq!(pi_agent_dir(home, Some(Path::new("~")), cwd), home);
        assert_eq!(
            pi_agent_dir(home, Some(Path::new("a/../b")), cwd),
            Path::new("/c/b")
        );
        assert_eq!(
            pi_agent_dir(home, Some(Path::new("/abs")), cwd),
            Path::new("/abs")
        );
    }

    fn write_rule(p: &Path) -> PathRule {
        PathRule {
            path: p.to_path_buf(),
            access: Access::Write,
            kind: RuleKind::Plain,
            origin: Origin::Default,
        }
    }

    #[test]
    fn only_inside_roots_and_symlinks_refused() {
        let t = tempfile::tempdir().unwrap();
        let home = std::fs::canonicalize(t.path()).unwrap();
        std::fs::create_dir_all(home.join("dotfiles")).unwrap();
        std::fs::create_dir_all(home.join("proj")).unwrap();
        std::os::unix::fs::symlink(home.join("dotfiles/bashrc"), home.join(".bashrc")).unwrap();
        let cands = vec![home.join(".bashrc"), home.join(".zshrc")];
        // An ordinary workspace holds none of them.
        let roots = vec![home.join("proj")];
        let rules = vec![write_rule(&home.join("proj"))];
        assert!(
            protected_in_roots(&cands, &home, &roots, &rules, &[])
                .unwrap()
                .is_empty()
        );
        // $HOME as the workspace: the symlinked .bashrc is protected, link and
        // target (the view lays an empty read-only file on the link).
        let roots = vec![home.clone()];
        let rules = vec![write_rule(&home)];
        let p = protected_in_roots(&cands, &home, &roots, &rules, &[]).unwrap();
        assert_eq!(
            p,
            vec![
                home.join(".bashrc"),
                home.join("dotfiles/bashrc"),
                home.join(".zshrc")
            ]
        );
        // A symlinked directory on the way cannot be: the sandbox could replace it.
        std::fs::create_dir_all(home.join("dotfiles/config/git")).unwrap();
        std::os::unix::fs::symlink(home.join("dotfiles/config"), home.join(".config")).unwrap();
        let cands = vec![home.join(".config/git/config")];
        let e = protected_in_roots(&cands, &home, &roots, &rules, &[]).unwrap_err();
        assert_eq!(e.link, home.join(".config"));
        // Unless unprotected.
        let p = protected_in_roots(
            &cands,
            &home,
            &roots,
            &rules,
            &[home.join(".config/git/config")],
        )
        .unwrap();
        assert!(p.is_empty(), "{p:?}");
        let cands = vec![home.join(".bashrc"), home.join(".zshrc")];
        // A root that holds only the link's target protects the target.
        let roots = vec![home.join("dotfiles")];
        let rules = vec![write_rule(&home.join("dotfiles"))];
        let p = protected_in_roots(&cands, &home, &roots, &rules, &[]).unwrap();
        assert_eq!(p, vec![home.join("dotfiles/bashrc")]);
    }

    #[test]
    fn warning_names_home_and_root() {
        let home = Path::new("/home/u");
        assert!(home_root_warning(Path::new("/home/u/p"), Path::new("/home/u/p"), home).is_none());
        let w = home_root_warning(home, home, home).unwrap();
        assert!(
            w.starts_with("the workspace /home/u is your home directory"),
            "{w}"
        );
        let w = home_root_warning(Path::new("/"), Path::new("/home/u/p"), home).unwrap();
        assert!(w.starts_with("the writable root / holds your home"), "{w}");
    }
}
