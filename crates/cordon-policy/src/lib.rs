//! cordon's policy: the one place that reads config. [`resolve`] layers the built-in
//! defaults, the user's config, command-line flags and the project's config (which
//! may only tighten) into a [`Policy`] whose paths are absolute and canonical.
//!
//! The crate is pure apart from reading config files (and a worktree's `.git`
//! pointer) and canonicalising paths.

pub mod caches;
mod config;
pub mod defaults;
mod error;
mod fields;
mod home;
mod layer;
pub mod lookup;
mod model;
mod mounts;
mod network;
mod paths;
pub mod presets;
mod protect;
pub mod settings;
pub use protect::{left_to_the_audit, read_only_during_run};
pub mod sanitize;
mod tighten;
mod values;

pub use caches::{CacheUse, Caches, ManagedCache, UnmanagedCache};
pub use config::{
    ConfigFile, ConfigNet, MAX_CONFIG_BYTES, default_user_config, known_fields, parse_config,
};
pub use error::{
    DomainError, EnvProblem, LocalServiceProblem, MountProblem, PolicyError, ResolveProblem,
    SecretProblem, SizeProblem, ValueError,
};
pub use home::{CONFIG_PROTECTED, HOME_PROTECTED, pi_agent_dir};
pub use model::*;
pub use network::*;
pub use presets::{PRESETS, preset};
pub use sanitize::{SanitizeFormat, SanitizedCopy};
pub use settings::{Limits, SettingGroup, SettingRow, VmResources};
pub use values::{
    MountSpec, parse_env_arg, parse_local_service, parse_mount_arg, parse_resolve_arg,
    parse_secret_arg, parse_size, size_text, valid_env_name,
};

use std::path::PathBuf;

settings::with_settings!(settings::settings! { @flags
/// The command-line flags that shape the policy, declared once: with the `cli`
/// feature this struct is also their clap definition (parsing, `--help`, shell
/// completions), so the doc comments below are the flags' help text. Relative
/// paths are relative to `Inputs::cwd`; values marked unparsed are parsed by
/// `resolve`, which names the flag in its error. The settings' flags (`--memory`,
/// `--pids`, ...) come last, from the table in [`settings`].
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct Flags {
    /// Where the sandbox runs: os (Linux namespaces, a mount view, Landlock and
    /// seccomp); vm (a QEMU VM seeing the same view; its network only through the
    /// egress broker, no --net host). Default: $CORDON_BACKEND, else the user
    /// config's "backend", else os.
    #[cfg_attr(
        feature = "cli",
        arg(long, value_enum, value_name = "BACKEND", env = "CORDON_BACKEND")
    )]
    pub backend: Option<BackendChoice>,
    /// Make PATH writable too (repeatable). A missing PATH in your home directory
    /// is made (every directory from the home down must be yours).
    #[cfg_attr(feature = "cli", arg(long = "allow-write", value_name = "PATH"))]
    pub allow_write: Vec<PathBuf>,
    /// Hide PATH from the sandbox (repeatable).
    #[cfg_attr(feature = "cli", arg(long = "deny-read", value_name = "PATH"))]
    pub deny_read: Vec<PathBuf>,
    /// Make the workspace read-only too.
    #[cfg_attr(feature = "cli", arg(long = "read-only"))]
    pub read_only: bool,
    /// Hide your home directory: inside, it is an empty private tmpfs but for the
    /// workspace, the writable roots and the --home-visible paths.
    #[cfg_attr(feature = "cli", arg(long = "hide-home"))]
    pub hide_home: bool,
    /// With --hide-home: keep PATH in your home directory visible, read-only, e.g.
    /// ~/.cargo or ~/.nvm for the tools on PATH there (repeatable).
    #[cfg_attr(feature = "cli", arg(long = "home-visible", value_name = "PATH"))]
    pub home_visible: Vec<PathBuf>,
    /// Pass one environment variable in: NAME takes cordon's value, NAME=VALUE sets it (repeatable).
    #[cfg_attr(feature = "cli", arg(long, value_name = "NAME[=VALUE]"))]
    pub env: Vec<String>,
    /// Kill the whole sandbox after SECONDS (exit status 124).
    #[cfg_attr(feature = "cli", arg(long, value_name = "SECONDS"))]
    pub timeout: Option<f64>,
    /// Network: none (the default), allowlist (through cordon's broker; chosen
    /// automatically when a domain, preset or local service is allowed), or host.
    #[cfg_attr(feature = "cli", arg(long, value_enum, value_name = "MODE"))]
    pub net: Option<NetMode>,
    /// Let the sandbox reach a domain: example.com, or *.example.com (names below
    /// it, not itself), with an optional :PORT (else 80 and 443); or a URL, for its
    /// host and port (https://example.com is example.com:443) (repeatable).
    #[cfg_attr(feature = "cli", arg(long = "allow-domain", value_name = "PATTERN"))]
    pub allow_domain: Vec<String>,
    /// Refuse a domain even when allowed (same patterns; deny wins) (repeatable).
    #[cfg_attr(feature = "cli", arg(long = "deny-domain", value_name = "PATTERN"))]
    pub deny_domain: Vec<String>,
    /// Allow a named set of hosts: anthropic, openai, gemini, github-copilot,
    /// openrouter, github, npm, pypi, crates (repeatable; see docs/config.md).
    #[cfg_attr(feature = "cli", arg(long = "allow-preset", value_name = "NAME"))]
    pub allow_preset: Vec<String>,
    /// Let the sandbox reach one service on this machine, e.g. 127.0.0.1:11434 or
    /// http://localhost:11434; inside it is at 127.0.0.1:PORT and
    /// host.cordon.internal:PORT (repeatable).
    #[cfg_attr(feature = "cli", arg(long = "allow-local", value_name = "HOST:PORT"))]
    pub allow_local: Vec<String>,
    /// Pass the secret in environment variable NAME by placeholder: the broker puts
    /// the real value only into request headers sent to these hosts (repeatable).
    #[cfg_attr(feature = "cli", arg(long, value_name = "NAME=HOST[,HOST...]"))]
    pub secret: Vec<String>,
    /// Resolve HOST to ADDR (like curl's --resolve, without a port); trusted even
    /// for a private address (repeatable).
    #[cfg_attr(feature = "cli", arg(long, value_name = "HOST:ADDR"))]
    pub resolve: Vec<String>,
    /// Also trust the CA certificates in this PEM file for the broker's upstream
    /// TLS (repeatable).
    #[cfg_attr(feature = "cli", arg(long = "upstream-ca", value_name = "FILE"))]
    pub upstream_ca: Vec<PathBuf>,
    /// Show a host path at another path inside: SOURCE:TARGET, read-only, or
    /// SOURCE:TARGET:rw (repeatable). A missing TARGET is made inside.
    #[cfg_attr(feature = "cli", arg(long, value_name = "SOURCE:TARGET[:ro|rw]"))]
    pub mount: Vec<String>,
    /// The kernel the VM boots (--backend vm): a bzImage such as
    /// /boot/vmlinuz-VERSION or an ELF vmlinux (default: the newest installed
    /// kernel with its modules).
    #[cfg_attr(feature = "cli", arg(long = "vm-kernel", value_name = "FILE"))]
    pub vm_kernel: Option<PathBuf>,
    /// How the VM's guest sees the view (--backend vm): virtiofs (virtiofsd
    /// beside QEMU) or 9p (QEMU's own server). Default: $CORDON_VM_SHARE, else
    /// the user config's "vm_share", else virtiofs where virtiofsd is
    /// installed, else 9p.
    #[cfg_attr(
        feature = "cli",
        arg(long = "vm-share", value_enum, value_name = "SHARE", env = "CORDON_VM_SHARE")
    )]
    pub vm_share: Option<VmShare>,
    /// Set by `cordon pi`, not a flag: the `pi` sections of the config files
    /// apply, and these rules are added.
    #[cfg_attr(feature = "cli", arg(skip))]
    pub pi: Option<PiMode>,
}
});

/// What `cordon pi` adds to the policy, layered after the built-in defaults and
/// before the user's config. Each entry carries the reason shown as its origin.
#[derive(Debug, Clone, Default)]
pub struct PiMode {
    /// Absolute paths made writable (pi's sessions dir, its per-run config dir).
    pub allow_write: Vec<(PathBuf, String)>,
    /// Absolute paths shown read-only, even below a directory the sandbox
    /// replaces (pi's install or config dir under `/tmp`). Like `allow_read`, they
    /// never take write access away; unlike it, they remove no deny below them.
    pub allow_read: Vec<(PathBuf, String)>,
    /// Absolute paths hidden (`auth.json`).
    pub deny_read: Vec<(PathBuf, String)>,
    /// Absolute paths that stay visible when the home directory is hidden (pi's
    /// config dir).
    pub home_visible: Vec<(PathBuf, String)>,
    /// `NAME=VALUE` environment entries.
    pub env: Vec<(String, String)>,
    /// Domain patterns of pi's providers.
    pub allow_domain: Vec<(String, String)>,
    /// Secrets for pi's keys.
    pub secret: Vec<PiSecret>,
}

/// A secret `cordon pi` adds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PiSecret {
    /// `NAME=HOST[,HOST...]`, as `--secret` takes it.
    pub arg: String,
    /// Where the value is, when it is not the host's variable NAME (a value from
    /// pi's files, under a name cordon made up).
    pub value_from: Option<String>,
    /// Why, shown as its origin.
    pub reason: String,
}

/// Everything `resolve` needs from the invoking environment.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// `--workspace DIR`, else the current directory. Need not be canonical.
    pub workspace: PathBuf,
    /// The current directory, for relative flag paths.
    pub cwd: PathBuf,
    /// `$HOME`.
    pub home: PathBuf,
    /// `$TMPDIR`, else `/tmp`.
    pub tmp: PathBuf,
    /// `--config FILE` (must exist), or `None` for the default user config path
    /// (`$XDG_CONFIG_HOME/cordon/config.json`, else `~/.config/cordon/config.json`;
    /// missing is fine).
    pub config: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME`, if set.
    pub xdg_config_home: Option<PathBuf>,
    /// `$XDG_DATA_HOME`, if set: where cordon's data directory is (see
    /// [`Policy::data_dir`]), and what the home rules take it to be. Read once,
    /// here, so the directory the policy hides is the one the broker uses.
    pub xdg_data_home: Option<PathBuf>,
    pub flags: Flags,
}

/// Resolve the policy for one run: built-in defaults, then the user's config, then
/// `inputs.flags`, then the workspace's `.cordon.json` (tighten-only; loosening
/// fields become [`Policy::warnings`]), then the protected paths of every writable
/// root and the home files a writable root holds. Reads the config files and the
/// environment variables that move home files (`XDG_*`, `ZDOTDIR`,
/// `PI_CODING_AGENT_DIR`, `GIT_CONFIG_GLOBAL`, `PATH`); never panics.
pub fn resolve(inputs: &Inputs) -> Result<Policy, PolicyError> {
    let _snapshot = lookup::memoised();
    layer::resolve(inputs)
}
