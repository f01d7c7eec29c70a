//! The resolved policy: what a backend receives. Every path here is absolute and
//! canonical, every variable expanded; nothing in this module reads files.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a rule or setting came from, so `cordon policy` can say why it is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// cordon's built-in defaults.
    Default,
    /// The user's own config file (trusted).
    UserConfig { file: PathBuf },
    /// The workspace's `.cordon.json` (untrusted: may only tighten).
    ProjectConfig { file: PathBuf },
    /// A command-line flag, e.g. `--allow-write`.
    Flag { flag: String },
    /// The `pi` section of the user's config (used by `cordon pi` only).
    UserPiConfig { file: PathBuf },
    /// The `pi` section of the workspace's `.cordon.json` (may only tighten).
    ProjectPiConfig { file: PathBuf },
    /// Added by `cordon pi` itself: pi's config dir, its providers and their keys.
    Pi { reason: String },
    /// A managed cache ([`crate::caches`]): a tool's cache of its own inside.
    Cache { tool: String },
    /// Added while a session ran (`cordon serve`'s `allowDomain`), with who asked
    /// (e.g. the user's consent through pi's extension).
    Session { reason: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("built-in default"),
            Origin::UserConfig { file } => write!(f, "user config {}", file.display()),
            Origin::ProjectConfig { file } => write!(f, "project config {}", file.display()),
            Origin::Flag { flag } => write!(f, "flag {flag}"),
            Origin::UserPiConfig { file } => {
                write!(f, "user config {}, \"pi\" section", file.display())
            }
            Origin::ProjectPiConfig { file } => {
                write!(f, "project config {}, \"pi\" section", file.display())
            }
            Origin::Pi { reason } => write!(f, "cordon pi: {reason}"),
            Origin::Cache { tool } => write!(f, "built-in default: managed cache ({tool})"),
            Origin::Session { reason } => write!(f, "this session: {reason}"),
        }
    }
}

/// What a path rule grants. Ordered so that on a tie, the stricter wins:
/// `Deny > Write > Read` in precedence, which `Access::tie_break` implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Absent from the view: an empty directory or an empty file.
    Deny,
    /// Visible, read-only.
    Read,
    /// Visible, read-write.
    Write,
}

impl Access {
    /// Precedence on a tie (same path): deny beats write beats read.
    pub fn precedence(self) -> u8 {
        match self {
            Access::Deny => 2,
            Access::Write => 1,
            Access::Read => 0,
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Deny => "deny",
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

/// Why a rule exists, beyond its origin: the semantics DESIGN.md promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// An ordinary rule: applied if the path exists, skipped if it does not.
    Plain,
    /// A protected path inside a writable root (`.git/hooks`, `.pi/`, ...): read-only
    /// even before it exists, and its parents up to the writable root cannot be renamed.
    Protected,
    /// A secret: denied by default.
    Secret,
}

/// One path rule. The longest matching prefix wins; on a tie, `Access::precedence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRule {
    pub path: PathBuf,
    pub access: Access,
    pub kind: RuleKind,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum NetMode {
    /// Only the sandbox's own loopback.
    None,
    /// No network isolation (explicit opt-in).
    Host,
    /// Out only through cordon's egress broker, to the allowed domains (chosen
    /// automatically when anything is allowed).
    Allowlist,
}

/// Where the sandbox runs: `--backend`, `$CORDON_BACKEND`, or the user config's
/// `backend`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// Linux namespaces, a mount view, Landlock and seccomp.
    #[default]
    Os,
    /// A QEMU VM (KVM, else TCG) whose file system is the OS backend's view,
    /// QEMU itself in an OS sandbox; its network only through the egress broker.
    Vm,
}

/// How the VM's guest sees the view (`--vm-share`, `$CORDON_VM_SHARE`, the
/// user config's `vm_share`); unset, virtiofs where virtiofsd is installed,
/// else 9p.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum VmShare {
    /// QEMU's own 9p server.
    #[serde(rename = "9p")]
    #[cfg_attr(feature = "cli", value(name = "9p"))]
    NineP,
    /// virtiofsd beside QEMU, in its sandbox.
    #[serde(rename = "virtiofs")]
    Virtiofs,
}

impl VmShare {
    /// As the flag and the config write it.
    pub fn name(self) -> &'static str {
        match self {
            VmShare::NineP => "9p",
            VmShare::Virtiofs => "virtiofs",
        }
    }
}

/// A value with the place it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sourced<T> {
    pub value: T,
    pub origin: Origin,
}

impl<T> Sourced<T> {
    pub fn new(value: T, origin: Origin) -> Self {
        Sourced { value, origin }
    }
}

/// An environment variable passed into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    /// `None`: take the value from the invoking environment, if set there.
    pub value: Option<String>,
    pub origin: Origin,
}

/// Switches that loosen the seccomp filter for programs that need it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Switches {
    /// Allow creating user namespaces (and mount syscalls in them) inside the sandbox.
    pub nested_userns: Sourced<bool>,
    /// Allow creating AF_UNIX sockets (socketpair always works). Host sockets in
    /// visible directories become connectable: see docs.
    pub unix_sockets: Sourced<bool>,
}

/// A host path shown at another path inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute, canonical host path; what the view shows there is what the
    /// target shows (so a mount never reveals what the view hides).
    pub source: PathBuf,
    /// Absolute path inside the sandbox.
    pub target: PathBuf,
    /// Read-write (its source is then a writable root as well).
    pub writable: bool,
    pub origin: Origin,
}

/// The whole resolved policy for one workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Canonical absolute path of the workspace.
    pub workspace: PathBuf,
    /// The home directory used for `${HOME}` and the default secrets.
    pub home: PathBuf,
    /// cordon's own data directory (the egress broker's CA key): denied to the
    /// sandbox, and where the broker keeps its key (`cordon_data_dir` of `home`
    /// and [`Inputs::xdg_data_home`](crate::Inputs::xdg_data_home)).
    #[serde(default)]
    pub data_dir: PathBuf,
    /// Rules sorted by path (shortest first); `/` always has a rule.
    pub rules: Vec<PathRule>,
    /// Private, writable, empty tmpfs directories (always includes `/tmp`; the home
    /// directory too when it is hidden).
    pub scratch: Vec<PathBuf>,
    /// The home directory, when `hide_home` hides it (it is then in `scratch`), and
    /// who asked for that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_hidden: Option<Sourced<PathBuf>>,
    /// Host paths shown at other paths, in target order (parents first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Where the sandbox runs, and who chose it.
    pub backend: Sourced<BackendChoice>,
    pub net: Sourced<NetMode>,
    /// What the egress broker allows; used when `net` is `Allowlist`.
    pub network: crate::NetworkRules,
    pub env: Vec<EnvVar>,
    pub limits: crate::settings::Limits,
    pub vm: crate::settings::VmResources,
    /// The kernel the VM boots, when someone named one (else the newest
    /// installed), and who did.
    pub vm_kernel: Option<Sourced<PathBuf>>,
    /// The VM's file share, when someone chose one (else virtiofs where
    /// virtiofsd is installed, else 9p), and who did.
    pub vm_share: Option<Sourced<VmShare>>,
    pub timeout: Option<Sourced<Duration>>,
    pub switches: Switches,
    /// The tools' caches cordon provides (and those it leaves alone, with why).
    #[serde(default)]
    pub caches: crate::caches::Caches,
    /// Hidden files shown inside as copies without their credentials (`~/.npmrc`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sanitized: Vec<crate::sanitize::SanitizedCopy>,
    /// Warnings produced while resolving (loosening project fields ignored, ...).
    pub warnings: Vec<String>,
}

/// The rule among `rules` that decides `path`: the longest matching prefix, ties
/// broken by [`Access::precedence`]. The one implementation of that logic;
/// [`Policy::rule_for`] calls it, and resolution uses it on partial rule lists.
pub fn rule_for_in<'a>(rules: &'a [PathRule], path: &Path) -> Option<&'a PathRule> {
    // Of the rules whose path is a prefix of `path`, the longer in bytes is the
    // deeper. Bytes, not components: a run plans with a hundred rules and asks
    // this a few hundred times, and comparing components costs ten times as much.
    rules
        .iter()
        .filter(|r| is_path_prefix(&r.path, path))
        .max_by_key(|r| (r.path.as_os_str().len(), r.access.precedence()))
}

/// [`rule_for_in`] answered by path lookups instead of a scan: the rule deciding
/// each path of a rule list, found by looking up the path and then each of its
/// ancestors (a dozen hash lookups) rather than comparing it with every rule. A
/// view is planned with a hundred rules and a few hundred questions; the scan was
/// a tenth of the planning's time.
pub struct RuleIndex<'a> {
    rules: &'a [PathRule],
    /// Each path that has a rule, with the rule that decides it: the one of
    /// highest precedence, the last of those on a tie (as [`rule_for_in`] picks).
    by_path: std::collections::HashMap<&'a [u8], usize>,
}

impl<'a> RuleIndex<'a> {
    pub fn new(rules: &'a [PathRule]) -> RuleIndex<'a> {
        use std::os::unix::ffi::OsStrExt;
        let mut by_path = std::collections::HashMap::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            by_path
                .entry(rule.path.as_os_str().as_bytes())
                .and_modify(|best: &mut usize| {
                    if rule.access.precedence() >= rules[*best].access.precedence() {
                        *best = i;
                    }
                })
                .or_insert(i);
        }
        RuleIndex { rules, by_path }
    }

    /// What [`rule_for_in`] answers for these rules; `path` absolute and normalised.
    pub fn rule_for(&self, path: &Path) -> Option<&'a PathRule> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_os_str().as_bytes();
        let mut end = bytes.len();
        loop {
            if let Some(&i) = self.by_path.get(&bytes[..end]) {
                return Some(&self.rules[i]);
            }
            end = match bytes[..end].iter().rposition(|&b| b == b'/') {
                // The parent is `/` itself, tried last.
                Some(0) if end > 1 => 1,
                Some(0) | None => return None,
                Some(slash) => slash,
            };
        }
    }

    /// The access `path` gets (Read when no rule matches).
    pub fn access_for(&self, path: &Path) -> Access {
        self.rule_for(path).map_or(Access::Read, |r| r.access)
    }
}

/// Whether `prefix` is `path` or one of its ancestors, for absolute, normalised
/// paths (no `.`, `..`, repeated or trailing `/`): what `Path::starts_with` says,
/// compared as bytes.
/// The order of [`Path`]'s `cmp` (component by component) for normalised absolute
/// paths, compared as bytes with `/` below every other byte: ten times quicker,
/// and a directory still comes right before what it holds.
pub fn path_order(a: &Path, b: &Path) -> std::cmp::Ordering {
    use std::os::unix::ffi::OsStrExt;
    let key = |&c: &u8| if c == b'/' { 0 } else { u16::from(c) + 1 };
    let (a, b) = (a.as_os_str().as_bytes(), b.as_os_str().as_bytes());
    a.iter().map(key).cmp(b.iter().map(key))
}

pub fn is_path_prefix(prefix: &Path, path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (prefix, path) = (prefix.as_os_str().as_bytes(), path.as_os_str().as_bytes());
    path.starts_with(prefix)
        && (path.len() == prefix.len() || prefix.ends_with(b"/") || path[prefix.len()] == b'/')
}

impl Policy {
    /// The rule that decides `path`: the longest matching prefix, ties broken by
    /// precedence. `path` must be absolute and normalised.
    pub fn rule_for(&self, path: &Path) -> Option<&PathRule> {
        rule_for_in(&self.rules, path)
    }

    /// The rules indexed by path, for asking [`Policy::rule_for`] many times.
    pub fn rule_index(&self) -> RuleIndex<'_> {
        RuleIndex::new(&self.rules)
    }

    /// The access `path` gets (Read when no rule matches, which cannot happen for a
    /// resolved policy since `/` always has a rule).
    pub fn access_for(&self, path: &Path) -> Access {
        self.rule_for(path).map_or(Access::Read, |r| r.access)
    }

    /// Roots the sandbox may write to (rules with `Write` access).
    pub fn writable_roots(&self) -> impl Iterator<Item = &Path> {
        self.rules
            .iter()
            .filter(|r| r.access == Access::Write)
            .map(|r| r.path.as_path())
    }

    /// The paths the sandbox may write below, as seen inside: the writable roots
    /// and the targets of read-write mounts.
    pub fn writable_in_view(&self) -> impl Iterator<Item = &Path> {
        self.writable_roots().chain(
            self.mounts
                .iter()
                .filter(|m| m.writable)
                .map(|m| m.target.as_path()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_prefix_is_what_path_starts_with_says() {
        for (prefix, path) in [
            ("/", "/"),
            ("/", "/a"),
            ("/a", "/a"),
            ("/a", "/a/b"),
            ("/a", "/ab"),
            ("/a/b", "/a"),
            ("/a/b", "/a/bc/d"),
            ("/a/bc", "/a/bc/d"),
        ] {
            let (prefix, path) = (Path::new(prefix), Path::new(path));
            assert_eq!(
                is_path_prefix(prefix, path),
                path.starts_with(prefix),
                "{prefix:?} {path:?}"
            );
        }
    }

    /// The index answers what the scan answers, for every rule list drawn from a
    /// small universe of paths (nested, siblings sharing a prefix, `/`) and
    /// accesses, including several rules on one path and no rule on `/`.
    /// `path_order` is `Path::cmp` on every pair of a universe of normalised paths
    /// chosen to tell component order from byte order (`/a/b`, `/a-b`, `/a.b`).
    #[test]
    fn path_order_is_the_component_order() {
        let paths = [
            "/",
            "/a",
            "/a/b",
            "/a-b",
            "/a.b",
            "/a/b/c",
            "/a/b-c",
            "/ab",
            "/a b",
            "/z",
            "/a/\u{e9}",
        ];
        for a in paths {
            for b in paths {
                let (a, b) = (Path::new(a), Path::new(b));
                assert_eq!(path_order(a, b), a.cmp(b), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn the_rule_index_agrees_with_the_scan() {
        let paths = ["/", "/a", "/a/b", "/a/bc", "/ab", "/a/b/c/d", "/x/y"];
        let accesses = [Access::Read, Access::Write, Access::Deny];
        let queries = [
            "/",
            "/a",
            "/a/b",
            "/a/b/c",
            "/a/b/c/d/e",
            "/a/bc",
            "/a/bcd",
            "/ab",
            "/abc",
            "/x",
            "/x/y/z",
            "/q",
        ];
        // A deterministic walk through many lists (a linear congruential sequence).
        let mut seed: u64 = 7;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        for _ in 0..2000 {
            let rules: Vec<PathRule> = (0..next(9))
                .map(|i| PathRule {
                    path: PathBuf::from(paths[next(paths.len())]),
                    access: accesses[next(accesses.len())],
                    kind: if i % 2 == 0 {
                        RuleKind::Plain
                    } else {
                        RuleKind::Protected
                    },
                    origin: Origin::Default,
                })
                .collect();
            let index = RuleIndex::new(&rules);
            for q in queries {
                let q = Path::new(q);
                let (scan, indexed) = (rule_for_in(&rules, q), index.rule_for(q));
                assert!(
                    scan.map(|r| r as *const PathRule) == indexed.map(|r| r as *const PathRule),
                    "{q:?} in {rules:?}: scan {scan:?}, index {indexed:?}"
                );
            }
        }
    }
}
