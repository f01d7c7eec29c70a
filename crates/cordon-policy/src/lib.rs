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
mod model;
mod mounts;
mod network;
mod paths;
pub mod presets;
mod protect;
pub mod sanitize;
mod values;

pub use caches::{CacheUse, Caches, ManagedCache, UnmanagedCache};
pub use config::{ConfigFile, ConfigNet, MAX_CONFIG_BYTES, default_user_config, parse_config};
pub use error::{
    DomainError, EnvProblem, LocalServiceProblem, MountProblem, PolicyError, ResolveProblem,
    SecretProblem, SizeProblem, ValueError,
};
pub use fields::KNOWN_FIELDS;
pub use home::{CONFIG_PROTECTED, HOME_PROTECTED, pi_agent_dir};
pub use model::*;
pub use network::*;
pub use presets::{PRESETS, preset};
pub use sanitize::{SanitizeFormat, SanitizedCopy};
pub use values::{
    MountSpec, parse_env_arg, parse_local_service, parse_mount_arg, parse_resolve_arg,
    parse_secret_arg, parse_size, valid_env_name,
};

use std::path::PathBuf;

/// Command-line flags that shape the policy. Names mirror the CLI flags exactly.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--allow-write PATH` (repeatable). Relative paths are relative to `cwd`.
    pub allow_write: Vec<PathBuf>,
    /// `--deny-read PATH` (repeatable).
    pub deny_read: Vec<PathBuf>,
    /// `--read-only`: the workspace too.
    pub read_only: bool,
    /// `--hide-home`: the home directory is an empty private tmpfs inside.
    pub hide_home: bool,
    /// `--home-visible PATH` (repeatable): stays visible, read-only, with
    /// `hide_home`. Relative paths are relative to `cwd`.
    pub home_visible: Vec<PathBuf>,
    /// `--env NAME[=VALUE]` (repeatable), unparsed.
    pub env: Vec<String>,
    /// `--timeout SECONDS`.
    pub timeout: Option<f64>,
    /// `--net none|host|allowlist`. Unset: `allowlist` when anything is allowed
    /// (a domain, a preset or a local service), else the config's or `none`.
    pub net: Option<NetMode>,
    /// `--allow-domain PATTERN` (repeatable), unparsed: `example.com`,
    /// `*.example.com`, with an optional `:PORT` (else 80 and 443).
    pub allow_domain: Vec<String>,
    /// `--deny-domain PATTERN` (repeatable), unparsed. Deny wins over allow.
    pub deny_domain: Vec<String>,
    /// `--allow-preset NAME` (repeatable): a named host set ([`PRESETS`]).
    pub allow_preset: Vec<String>,
    /// `--allow-local HOST:PORT` (repeatable), unparsed.
    pub allow_local: Vec<String>,
    /// `--secret NAME=HOST[,HOST...]` (repeatable), unparsed.
    pub secret: Vec<String>,
    /// `--resolve HOST:ADDR` (repeatable), unparsed.
    pub resolve: Vec<String>,
    /// `--upstream-ca FILE` (repeatable). Relative paths are relative to `cwd`.
    pub upstream_ca: Vec<PathBuf>,
    /// `--memory SIZE`, unparsed (e.g. `512M`).
    pub memory: Option<String>,
    /// `--pids N`.
    pub pids: Option<u64>,
    /// `--cpus N`.
    pub cpus: Option<f64>,
    /// `--mount SOURCE:TARGET[:ro|rw]` (repeatable), unparsed. Relative sources are
    /// relative to `cwd`.
    pub mount: Vec<String>,
    /// Set by `cordon pi`: the `pi` sections of the config files apply, and these
    /// rules are added.
    pub pi: Option<PiMode>,
}

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
    layer::resolve(inputs)
}
