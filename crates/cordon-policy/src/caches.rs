//! Managed caches: package managers get a cache of their own inside, kept between
//! runs, and the host's own caches stay read-only.
//!
//! The sandbox may not write `~/.npm`, `~/.cache/pip` or `~/.cargo/registry`: the
//! host's tools install from them, so a sandbox that wrote there could plant what
//! the host installs next. Instead, each workspace gets a directory of cordon's,
//! `$XDG_CACHE_HOME/cordon/caches/<workspace>` (else `~/.cache/cordon/caches/...`),
//! writable inside, and each tool is pointed at its part of it: npm and pip by
//! their cache variable, cargo by binding the directory over `~/.cargo/registry`
//! and `~/.cargo/git` (its `CARGO_HOME` also holds its config and installed
//! programs, which stay as they are). One directory per workspace, so a sandbox
//! can plant nothing in another project's installs that it could not plant in
//! its own files anyway. The other workspaces' caches stay hidden.
//!
//! A tool is left alone when its own cache is already writable or hidden inside
//! (a rule of yours), when you set its variable yourself, when `"caches": false`
//! turns the managed caches off, and when cordon cannot show the cache there
//! (`~/.cargo/registry` a symlink, say); [`Caches::unmanaged`] says why, and
//! [`hint`] turns that into advice after a failed command.

use crate::model::{
    Access, EnvVar, Mount, Origin, PathRule, RuleKind, Sourced, is_path_prefix, rule_for_in,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The longest name a workspace's cache directory may have: a workspace whose
/// path is longer gets no managed caches (names are the whole path, so two
/// workspaces never share one).
const MAX_KEY_BYTES: usize = 200;

/// How a managed cache reaches its tool inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CacheUse {
    /// The tool's cache variable names the directory.
    Env { name: String },
    /// The directory is bound read-write at the tool's own cache path.
    Mount { target: PathBuf },
}

/// A tool's cache that cordon provides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedCache {
    pub tool: String,
    /// On the host (and at the same path inside), in the workspace's cache dir.
    pub dir: PathBuf,
    #[serde(rename = "use")]
    pub uses: CacheUse,
}

/// A tool's cache that cordon leaves as the rest of the policy has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmanagedCache {
    pub tool: String,
    /// The tool's own cache path.
    pub path: PathBuf,
    /// Whether the tool can write it inside (a rule of yours made it writable).
    pub writable: bool,
    pub why: String,
}

/// The managed caches of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caches {
    /// The workspace's cache dir, when any cache is managed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// The directory the cache dir is made below (your cache directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed: Vec<ManagedCache>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmanaged: Vec<UnmanagedCache>,
}

/// The programs that name a tool on a command line (for [`hint`]).
struct Tool {
    name: &'static str,
    programs: &'static [&'static str],
}

const NPM: Tool = Tool {
    name: "npm",
    programs: &["npm", "npx"],
};
const PIP: Tool = Tool {
    name: "pip",
    programs: &["pip", "pip3"],
};
const CARGO: Tool = Tool {
    name: "cargo",
    programs: &["cargo"],
};

/// Tools whose cache cordon does not manage: the hint names the variable that
/// moves the cache (each `(variable, path below $HOME)`).
const HINT_ONLY: &[(Tool, &[(&str, &str)])] = &[
    (
        Tool {
            name: "yarn",
            programs: &["yarn"],
        },
        &[("YARN_CACHE_FOLDER", ".cache/yarn")],
    ),
    (
        Tool {
            name: "go",
            programs: &["go"],
        },
        &[("GOMODCACHE", "go/pkg/mod"), ("GOCACHE", ".cache/go-build")],
    ),
    (
        Tool {
            name: "uv",
            programs: &["uv", "uvx"],
        },
        &[("UV_CACHE_DIR", ".cache/uv")],
    ),
];

/// The name of a workspace's cache dir: its path without the leading `/`, each
/// `/` written `+`, and every byte but ASCII letters, digits, `.`, `_` and `-`
/// written `%XX`, so that two workspaces never get the same name; `None` when
/// that is longer than [`MAX_KEY_BYTES`].
pub fn workspace_key(workspace: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = workspace.as_os_str().as_bytes();
    let bytes = bytes.strip_prefix(b"/").unwrap_or(bytes);
    let mut key = String::new();
    for &b in bytes {
        match b {
            b'/' => key.push('+'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'-' => key.push(b as char),
            _ => key.push_str(&format!("%{b:02X}")),
        }
    }
    // "", "." and ".." are no names of their own (the workspace `/`, `/.`...).
    if key.is_empty() || key.starts_with('.') {
        key.insert(0, '+');
    }
    (key.len() <= MAX_KEY_BYTES).then_some(key)
}

/// What [`plan`] needs of the policy under construction.
pub(crate) struct Inputs<'a> {
    pub home: &'a Path,
    pub workspace: &'a Path,
    /// `$XDG_CACHE_HOME` as set (absolute only counts).
    pub xdg_cache_home: Option<&'a Path>,
    /// Whether managed caches are on, and who said so.
    pub enabled: &'a Sourced<bool>,
    /// The final path rules (sorted, protected paths included).
    pub rules: &'a [PathRule],
    pub env: &'a [EnvVar],
    pub mounts: &'a [Mount],
    pub scratch: &'a [PathBuf],
}

/// What the managed caches add to the policy.
pub(crate) struct Plan {
    pub caches: Caches,
    pub rules: Vec<PathRule>,
    pub env: Vec<EnvVar>,
    pub mounts: Vec<Mount>,
}

fn origin(tool: &str) -> Origin {
    Origin::Cache {
        tool: tool.to_string(),
    }
}

impl Plan {
    /// `tool`'s cache is `cache`, named to the tool by the variable `var`.
    fn manage_by_env(&mut self, tool: &Tool, var: &str, cache: PathBuf) {
        self.env.push(EnvVar {
            name: var.to_string(),
            value: Some(cache.to_string_lossy().into_owned()),
            origin: origin(tool.name),
        });
        self.caches.managed.push(ManagedCache {
            tool: tool.name.to_string(),
            dir: cache,
            uses: CacheUse::Env {
                name: var.to_string(),
            },
        });
    }
}

/// The managed caches for a policy whose rules are otherwise final.
pub(crate) fn plan(i: &Inputs<'_>) -> Plan {
    let base = match i.xdg_cache_home {
        Some(x) if x.is_absolute() => x.to_path_buf(),
        _ => i.home.join(".cache"),
    };
    let root = crate::paths::canonicalize_lenient(&base.join("cordon/caches"));
    let mut plan = plan_managed(i, base, &root);
    hide_other_caches(&mut plan, i.rules, root);
    plan
}

/// The other workspaces' cache dirs (all of `root` but this run's) stay hidden,
/// whether this run manages caches or not (they are off, or a rule decides each
/// tool's cache): a project's config, which may do either, must not show them.
/// Below ~/.cache/cordon, a secret, they are hidden anyway; not so under another
/// $XDG_CACHE_HOME, or where your config shows ~/.cache/cordon.
fn hide_other_caches(plan: &mut Plan, rules: &[PathRule], root: PathBuf) {
    if rule_for_in(rules, &root).is_none_or(|r| r.access != Access::Deny) {
        plan.rules.push(PathRule {
            path: root,
            access: Access::Deny,
            kind: RuleKind::Plain,
            origin: Origin::Default,
        });
    }
}

/// The caches this run manages in its cache dir below `root`.
fn plan_managed(i: &Inputs<'_>, base: PathBuf, root: &Path) -> Plan {
    let mut plan = Plan {
        caches: Caches::default(),
        rules: Vec::new(),
        env: Vec::new(),
        mounts: Vec::new(),
    };
    let home = i.home;
    let npm_cache = home.join(".npm");
    let pip_cache = home.join(".cache/pip");
    let cargo_home = home.join(".cargo");
    let cargo_targets = [cargo_home.join("registry"), cargo_home.join("git")];
    let leave = |plan: &mut Plan, tool: &Tool, path: &Path, why: String| {
        let writable = rule_for_in(i.rules, path).is_some_and(|r| r.access == Access::Write);
        plan.caches.unmanaged.push(UnmanagedCache {
            tool: tool.name.to_string(),
            path: path.to_path_buf(),
            writable,
            why,
        });
    };
    let all: [(&Tool, &Path); 4] = [
        (&NPM, &npm_cache),
        (&PIP, &pip_cache),
        (&CARGO, &cargo_targets[0]),
        (&CARGO, &cargo_targets[1]),
    ];
    if !i.enabled.value {
        for (tool, path) in all {
            let why = format!(
                "managed caches are off (\"caches\": false, {})",
                i.enabled.origin
            );
            leave(&mut plan, tool, path, why);
        }
        return plan;
    }
    let Some(key) = workspace_key(i.workspace) else {
        for (tool, path) in all {
            let why = format!(
                "the workspace's path is too long to name its cache dir (more than {MAX_KEY_BYTES} bytes)"
            );
            leave(&mut plan, tool, path, why);
        }
        return plan;
    };
    let dir = root.join(&key);

    // A cache path the policy already decides otherwise is left to that rule.
    let decided = |path: &Path| -> Option<String> {
        let r = rule_for_in(i.rules, path)?;
        match r.access {
            Access::Read if r.kind != RuleKind::Protected => None,
            Access::Read => Some(format!("{} is protected ({})", r.path.display(), r.origin)),
            Access::Write => Some(format!(
                "{} is writable ({}), so the tool uses it as it is",
                r.path.display(),
                r.origin
            )),
            Access::Deny => Some(format!("{} is hidden ({})", r.path.display(), r.origin)),
        }
    };
    let set_by_you = |name: &str| -> Option<String> {
        i.env
            .iter()
            .find(|e| e.name == name)
            .map(|e| format!("{name} is set inside ({}), so the tool uses that", e.origin))
    };
    for (tool, path, var, sub) in [
        (&NPM, &npm_cache, "npm_config_cache", "npm"),
        (&PIP, &pip_cache, "PIP_CACHE_DIR", "pip"),
    ] {
        if let Some(why) = set_by_you(var).or_else(|| decided(path)) {
            leave(&mut plan, tool, path, why);
            continue;
        }
        plan.manage_by_env(tool, var, dir.join(sub));
    }

    // cargo: CARGO_HOME holds its config and installed programs too, so the cache
    // is bound over its `registry` and `git` where ~/.cargo exists; where it does
    // not, nothing of the user's is there, and CARGO_HOME names a managed one.
    match (
        set_by_you("CARGO_HOME"),
        std::fs::symlink_metadata(&cargo_home),
    ) {
        (Some(why), _) => {
            for t in &cargo_targets {
                leave(&mut plan, &CARGO, t, why.clone());
            }
        }
        (None, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(why) = decided(&cargo_home) {
                for t in &cargo_targets {
                    leave(&mut plan, &CARGO, t, why.clone());
                }
                return finish(plan, dir, base);
            }
            plan.manage_by_env(&CARGO, "CARGO_HOME", dir.join("cargo"));
        }
        (None, Ok(m)) if m.is_dir() => {
            for target in &cargo_targets {
                if let Some(why) = cargo_target_problem(i, target, decided(target)) {
                    leave(&mut plan, &CARGO, target, why);
                    continue;
                }
                let name = target.file_name().unwrap_or_default();
                let source = dir.join("cargo").join(name);
                let mount = Mount {
                    source: source.clone(),
                    target: target.clone(),
                    writable: true,
                    origin: origin(CARGO.name),
                };
                if let Err(e) = crate::mounts::check_targets(
                    std::slice::from_mut(&mut mount.clone()),
                    i.rules,
                    i.scratch,
                ) {
                    leave(&mut plan, &CARGO, target, e.to_string());
                    continue;
                }
                plan.mounts.push(mount);
                plan.caches.managed.push(ManagedCache {
                    tool: CARGO.name.into(),
                    dir: source,
                    uses: CacheUse::Mount {
                        target: target.clone(),
                    },
                });
            }
        }
        (None, _) => {
            for t in &cargo_targets {
                let why = format!(
                    "{} is not a directory (a symlink?), and cordon binds the cache only into a real one",
                    cargo_home.display()
                );
                leave(&mut plan, &CARGO, t, why);
            }
        }
    }

    finish(plan, dir, base)
}

/// Adds the rule for the cache dir `dir` when any cache is managed.
fn finish(mut plan: Plan, dir: PathBuf, base: PathBuf) -> Plan {
    if !plan.caches.managed.is_empty() {
        let mut tools: Vec<&str> = plan
            .caches
            .managed
            .iter()
            .map(|c| c.tool.as_str())
            .collect();
        tools.dedup();
        plan.rules.push(PathRule {
            path: dir.clone(),
            access: Access::Write,
            kind: RuleKind::Plain,
            origin: origin(&tools.join(", ")),
        });
        plan.caches.dir = Some(dir);
        plan.caches.base = Some(base);
    }
    plan
}

/// Why cargo's `registry` or `git` cannot take the managed cache: the policy
/// decides it otherwise, it is no plain directory, or a mount of yours is there.
fn cargo_target_problem(i: &Inputs<'_>, target: &Path, decided: Option<String>) -> Option<String> {
    if decided.is_some() {
        return decided;
    }
    match std::fs::symlink_metadata(target) {
        Ok(m) if !m.is_dir() || m.file_type().is_symlink() => {
            return Some(format!(
                "{} is not a directory (a symlink?), and cordon binds the cache only onto a real one",
                target.display()
            ));
        }
        _ => {}
    }
    i.mounts
        .iter()
        .find(|m| is_path_prefix(&m.target, target) || is_path_prefix(target, &m.target))
        .map(|m| {
            format!(
                "your mount at {} ({}) is there",
                m.target.display(),
                m.origin
            )
        })
}

/// Advice for a command that failed, when it names a tool (as the program or a
/// word of an argument: `npm`, `sh -c "pip install x"`) whose cache is read-only
/// inside: why cordon does not manage it, and what to do. `None` otherwise.
pub fn hint(caches: &Caches, home: &Path, words: &[String]) -> Option<String> {
    let named = |tool: &Tool| {
        words.iter().any(|w| {
            w.split(|c: char| c.is_whitespace() || c == ';' || c == '&' || c == '|')
                .filter_map(|t| t.rsplit('/').next())
                .any(|t| tool.programs.contains(&t))
        })
    };
    let mut out = Vec::new();
    for tool in [&NPM, &PIP, &CARGO] {
        if !named(tool) {
            continue;
        }
        for u in caches.unmanaged.iter().filter(|u| u.tool == tool.name) {
            if !u.writable {
                out.push(format!(
                    "{}'s cache {} is read-only inside, and cordon gives {} no cache of its own here: {}. `cordon policy` lists the managed caches; --allow-write {} would instead let the sandbox change what your own {} installs",
                    tool.name,
                    u.path.display(),
                    tool.name,
                    u.why,
                    u.path.display(),
                    tool.name
                ));
            }
        }
    }
    for (tool, vars) in HINT_ONLY {
        if !named(tool) {
            continue;
        }
        let paths: Vec<String> = vars
            .iter()
            .map(|(_, p)| home.join(p).display().to_string())
            .collect();
        let moves: Vec<String> = vars
            .iter()
            .map(|(v, p)| {
                format!(
                    "--env {v}=$PWD/.cache/{}",
                    p.rsplit('/').next().unwrap_or(p)
                )
            })
            .collect();
        out.push(format!(
            "{}'s cache ({}) is read-only inside, and cordon manages no cache for {}: if it failed to write there, give it one in the workspace ({}), not --allow-write, which would let the sandbox change what your own {} installs",
            tool.name,
            paths.join(", "),
            tool.name,
            moves.join(" "),
            tool.name
        ));
    }
    (!out.is_empty()).then(|| out.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_whole_path() {
        let k = |p: &str| workspace_key(Path::new(p));
        assert_eq!(k("/home/u/proj").as_deref(), Some("home+u+proj"));
        assert_eq!(k("/home/u/a b+c%").as_deref(), Some("home+u+a%20b%2Bc%25"));
        // Distinct paths, distinct keys.
        assert_ne!(k("/a/b+c"), k("/a/b/c"));
        assert_ne!(k("/a+b"), k("/a/b"));
        assert_eq!(k("/").as_deref(), Some("+"));
        assert_eq!(k("/.x").as_deref(), Some("+.x"));
        assert!(k(&format!("/{}", "a".repeat(MAX_KEY_BYTES))).is_some());
        assert_eq!(k(&format!("/{}", "a".repeat(MAX_KEY_BYTES + 1))), None);
    }

    #[test]
    fn hints_name_the_tool_on_the_command_line() {
        let caches = Caches {
            unmanaged: vec![UnmanagedCache {
                tool: "npm".into(),
                path: "/h/.npm".into(),
                writable: false,
                why: "managed caches are off".into(),
            }],
            ..Caches::default()
        };
        let w = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let home = Path::new("/h");
        let h = hint(&caches, home, &w(&["sh", "-c", "cd x && npm install"])).unwrap();
        assert!(h.contains("npm's cache /h/.npm is read-only"), "{h}");
        assert!(hint(&caches, home, &w(&["/usr/bin/npx", "x"])).is_some());
        assert!(hint(&caches, home, &w(&["pip", "install"])).is_none());
        assert!(hint(&caches, home, &w(&["npm-check"])).is_none());
        let h = hint(&caches, home, &w(&["go", "build"])).unwrap();
        assert!(
            h.contains("GOMODCACHE=") && h.contains("/h/go/pkg/mod"),
            "{h}"
        );
    }
}
