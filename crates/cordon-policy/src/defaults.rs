//! cordon's built-in defaults: the first layer of every policy.

use crate::model::{Access, EnvVar, Origin, PathRule, RuleKind};
use crate::paths::canonicalize_lenient;
use std::path::{Path, PathBuf};

/// Environment variables passed through from the invoking environment by default.
pub const DEFAULT_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "LC_COLLATE",
    "LC_NUMERIC",
    "LC_TIME",
    "TERM",
    "COLORTERM",
    "TZ",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "NO_COLOR",
    "FORCE_COLOR",
    "COLUMNS",
    "LINES",
];

/// Secrets under the home directory, denied by default (relative to `$HOME`): the
/// credential stores of common developer tools. docs/config.md says what each holds.
pub const HOME_SECRETS: &[&str] = &[
    // ssh, gpg.
    ".ssh",
    ".gnupg",
    // Clouds and their orchestration tools.
    ".aws",
    ".config/gcloud",
    ".azure",
    ".oci",
    ".kube",
    ".docker/config.json",
    ".config/containers/auth.json",
    ".terraform.d/credentials.tfrc.json",
    ".terraformrc",
    ".vault-token",
    ".aliyun",
    ".config/scw",
    ".config/openstack",
    ".config/doctl",
    ".config/hcloud",
    ".config/linode-cli",
    ".pulumi/credentials.json",
    ".minikube",
    ".tsh",
    ".talos",
    ".cloudflared",
    ".wrangler",
    ".config/.wrangler",
    ".fly",
    ".config/netlify",
    ".local/share/com.vercel.cli",
    ".config/helm/repositories.yaml",
    ".config/helm/registry",
    ".config/ngrok",
    ".ngrok2",
    ".config/stripe",
    ".sentryclirc",
    // git hosts and HTTP logins.
    ".config/gh",
    ".config/hub",
    ".config/glab-cli",
    ".config/tea",
    ".netrc",
    ".git-credentials",
    ".config/git/credentials",
    ".git-credential-cache",
    ".cache/git/credential",
    // Package registries.
    ".npmrc",
    ".yarnrc",
    ".yarnrc.yml",
    ".bunfig.toml",
    ".config/configstore",
    ".cargo/credentials.toml",
    ".cargo/credentials",
    ".pypirc",
    ".config/pypoetry/auth.toml",
    ".config/pip/pip.conf",
    ".pip/pip.conf",
    ".gem/credentials",
    ".m2/settings.xml",
    ".m2/settings-security.xml",
    ".gradle/gradle.properties",
    ".composer/auth.json",
    ".config/composer/auth.json",
    // Storage and databases.
    ".config/rclone",
    ".s3cfg",
    ".boto",
    ".pgpass",
    ".my.cnf",
    ".databrickscfg",
    ".snowflake",
    ".dbt/profiles.yml",
    ".mc",
    ".kaggle",
    ".huggingface",
    ".cache/huggingface/token",
    ".cache/huggingface/stored_tokens",
    // Password managers and keyrings.
    ".config/op",
    ".1password",
    ".password-store",
    ".config/gopass",
    ".local/share/gopass",
    ".local/share/keyrings",
    ".local/share/kwalletd",
    ".local/share/python_keyring",
    ".config/sops/age",
    ".config/age",
    ".pki",
    // Browser profiles (cookies, saved passwords).
    ".mozilla",
    ".config/google-chrome",
    ".config/chromium",
    ".config/BraveSoftware",
    ".config/microsoft-edge",
    ".config/vivaldi",
    ".config/opera",
    "snap/firefox",
    "snap/chromium",
    ".var/app/org.mozilla.firefox",
    ".var/app/com.google.Chrome",
    ".var/app/org.chromium.Chromium",
    ".thunderbird",
    // Shell and REPL histories (tokens typed on command lines).
    ".bash_history",
    ".zsh_history",
    ".zhistory",
    ".local/share/fish/fish_history",
    ".python_history",
    ".node_repl_history",
    ".psql_history",
    ".mysql_history",
    ".sqlite_history",
    ".rediscli_history",
    ".ipython/profile_default/history.sqlite",
    ".local/share/atuin",
    // Coding agents' logins.
    ".pi/agent/auth.json",
    ".claude/.credentials.json",
    ".codex/auth.json",
    ".gemini/oauth_creds.json",
    ".config/github-copilot",
    ".claude.json",
    // cordon's own cache and data (the broker's CA key).
    ".cache/cordon",
    ".local/share/cordon",
];

/// System secrets, denied by default. A sandbox started by root is uid 0 on the
/// host (its files must belong to the invoking user), so root-only files are
/// readable by mode bits alone: these are the ones that matter.
pub const SYSTEM_SECRETS: &[&str] = &[
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssl/private",
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_dsa_key",
];

/// Directories hidden by default because they hold sockets (ssh-agent, docker, dbus).
pub const HIDDEN_DIRS: &[&str] = &["/run", "/var/run"];

/// Paths inside every writable root that stay read-only (relative to the root).
/// Besides hooks and config, git reads code-running settings from
/// `.git/config.worktree`, from another directory named by `.git/commondir`, and
/// from each submodule's git dir under `.git/modules` (`git status` recurses).
pub const PROTECTED: &[&str] = &[
    ".git/hooks",
    ".git/config",
    ".git/config.worktree",
    ".git/commondir",
    ".git/modules",
    ".pi",
    ".cordon.json",
    ".vscode",
    ".idea",
];

/// The settings files of a git dir that is itself a writable root (relative to it).
pub const GIT_DIR_PROTECTED: &[&str] =
    &["hooks", "config", "config.worktree", "commondir", "modules"];

/// The default process limit.
pub const DEFAULT_PIDS: u64 = 4096;

/// The private tmpfs every sandbox gets.
pub const SCRATCH: &str = "/tmp";

fn rule(path: &Path, access: Access, kind: RuleKind) -> PathRule {
    PathRule {
        path: canonicalize_lenient(path),
        access,
        kind,
        origin: Origin::Default,
    }
}

/// cordon's own data directory, where it keeps the egress broker's CA key:
/// `$XDG_DATA_HOME/cordon` when `$XDG_DATA_HOME` is set and absolute, else
/// `~/.local/share/cordon`. Hidden from every sandbox (a secret).
pub fn cordon_data_dir(home: &Path, xdg_data_home: Option<&Path>) -> PathBuf {
    match xdg_data_home {
        Some(x) if x.is_absolute() => x.join("cordon"),
        _ => home.join(".local/share/cordon"),
    }
}

/// The default path rules, except the workspace's (which depends on `read_only`) and
/// the protected paths (which depend on all writable roots). `home` is canonical.
/// `xdg_data_home` is `$XDG_DATA_HOME`: cordon's data directory beneath it is
/// hidden too (the one under `home` always is, in [`HOME_SECRETS`]).
pub(crate) fn default_rules(home: &Path, xdg_data_home: Option<&Path>) -> Vec<PathRule> {
    let mut rules = vec![rule(Path::new("/"), Access::Read, RuleKind::Plain)];
    for d in HIDDEN_DIRS {
        rules.push(rule(Path::new(d), Access::Deny, RuleKind::Plain));
    }
    for s in HOME_SECRETS {
        rules.push(PathRule {
            path: canonicalize_lenient(&home.join(s)),
            access: Access::Deny,
            kind: RuleKind::Secret,
            origin: Origin::Default,
        });
    }
    let data = cordon_data_dir(home, xdg_data_home);
    if !data.starts_with(home.join(".local/share/cordon")) {
        rules.push(rule(&data, Access::Deny, RuleKind::Secret));
    }
    for s in SYSTEM_SECRETS {
        rules.push(rule(Path::new(s), Access::Deny, RuleKind::Secret));
    }
    rules
}

/// The default environment: names only, values from the invoking environment.
pub(crate) fn default_env() -> Vec<EnvVar> {
    DEFAULT_ENV
        .iter()
        .map(|n| EnvVar {
            name: (*n).to_string(),
            value: None,
            origin: Origin::Default,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_absolute_and_cover_root() {
        let rules = default_rules(Path::new("/nonexistent-home/u"), None);
        assert_eq!(rules[0].path, Path::new("/"));
        assert_eq!(rules[0].access, Access::Read);
        assert!(rules.iter().all(|r| r.path.is_absolute()));
        assert!(
            rules
                .iter()
                .any(|r| r.path == Path::new("/nonexistent-home/u/.ssh")
                    && r.kind == RuleKind::Secret
                    && r.access == Access::Deny)
        );
        assert!(
            rules
                .iter()
                .any(|r| r.path == Path::new("/etc/shadow") && r.kind == RuleKind::Secret)
        );
        assert_eq!(
            rules.iter().filter(|r| r.kind == RuleKind::Secret).count(),
            HOME_SECRETS.len() + SYSTEM_SECRETS.len()
        );
    }

    #[test]
    fn cordon_data_dir_is_a_secret() {
        let home = Path::new("/nonexistent-home/u");
        assert_eq!(
            cordon_data_dir(home, None),
            Path::new("/nonexistent-home/u/.local/share/cordon")
        );
        assert_eq!(
            cordon_data_dir(home, Some(Path::new("rel"))),
            Path::new("/nonexistent-home/u/.local/share/cordon")
        );
        assert_eq!(
            cordon_data_dir(home, Some(Path::new("/nonexistent-data"))),
            Path::new("/nonexistent-data/cordon")
        );
        let secret = |rules: &[PathRule], p: &str| {
            rules.iter().any(|r| {
                r.path == Path::new(p) && r.kind == RuleKind::Secret && r.access == Access::Deny
            })
        };
        let rules = default_rules(home, None);
        assert!(secret(&rules, "/nonexistent-home/u/.local/share/cordon"));
        // With $XDG_DATA_HOME, both: the home one costs nothing.
        let rules = default_rules(home, Some(Path::new("/nonexistent-data")));
        assert!(secret(&rules, "/nonexistent-home/u/.local/share/cordon"));
        assert!(secret(&rules, "/nonexistent-data/cordon"));
        let rules = default_rules(home, Some(Path::new("/nonexistent-home/u/.local/share")));
        assert_eq!(
            rules.iter().filter(|r| r.kind == RuleKind::Secret).count(),
            HOME_SECRETS.len() + SYSTEM_SECRETS.len()
        );
    }

    #[test]
    fn env_is_names_only() {
        let env = default_env();
        assert_eq!(env.len(), DEFAULT_ENV.len());
        assert!(
            env.iter()
                .all(|e| e.value.is_none() && e.origin == Origin::Default)
        );
        assert!(env.iter().any(|e| e.name == "PATH"));
    }
}
