//! Typed errors. Every message names the place the problem came from (a file with
//! line and column, or a flag) so the CLI can print it as is after `cordon: `.

use crate::model::Origin;
use std::path::{Path, PathBuf};

/// Why a policy could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A config file exists but could not be read.
    #[error("cannot read config file {}: {source}", .file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `--config FILE` names a file that does not exist.
    #[error("config file {} does not exist (hint: check the path given with --config)", .file.display())]
    ConfigNotFound { file: PathBuf },

    /// A config file is not a regular file (a directory, a FIFO, a device, ...).
    #[error("config file {} is not a regular file", .file.display())]
    NotAFile { file: PathBuf },

    /// A config file is larger than [`crate::MAX_CONFIG_BYTES`].
    #[error("config file {} is too large (more than {limit} bytes)", .file.display())]
    TooLarge { file: PathBuf, limit: u64 },

    /// The file is not valid JSON.
    #[error("{}: {message}", location(.file, *.line, *.column))]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// Valid JSON, but a value has the wrong type or an invalid value.
    #[error("{}: {message}", location(.file, *.line, *.column))]
    Invalid {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// A key the schema does not know (most often a typo).
    #[error(
        "{}: unknown field {field:?}{} (known fields: {})",
        location(.file, *.line, *.column),
        suggestion_text(.suggestion),
        .known.join(", ")
    )]
    UnknownField {
        file: PathBuf,
        field: String,
        line: usize,
        column: usize,
        /// The known field closest to `field`, when one is close.
        suggestion: Option<&'static str>,
        /// Every known field, for the message.
        known: &'static [&'static str],
    },

    /// A value from a config file or a flag is unusable: an unknown `${VAR}`, an
    /// empty path, a malformed `--env`, an out-of-range limit.
    #[error("{origin}: {message}")]
    Value { origin: Origin, message: String },

    /// The workspace is missing, not a directory, or not allowed.
    #[error("workspace {}: {reason}", .path.display())]
    Workspace { path: PathBuf, reason: String },

    /// A path cordon must protect cannot be.
    #[error("cannot protect {}: {reason}", .path.display())]
    Protect { path: PathBuf, reason: String },

    /// An input from the environment (`$HOME`, the current directory, ...) is unusable.
    #[error("{what} {}: {reason}", .path.display())]
    Environment {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

fn location(file: &Path, line: usize, column: usize) -> String {
    if line == 0 {
        file.display().to_string()
    } else {
        format!("{}: line {line}, column {column}", file.display())
    }
}

fn suggestion_text(s: &Option<&'static str>) -> String {
    match s {
        Some(s) => format!(", did you mean {s:?}?"),
        None => String::new(),
    }
}

/// Why a value (a flag's argument, a config entry) is unusable: which kind of
/// value, the input as written, and what is wrong with it. The message names the
/// value and says what was expected; the caller adds where it came from (a flag,
/// a config file's field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    #[error(
        "invalid size {input:?}: {problem} (expected a number with an optional unit K, M, G or T, e.g. 512M, 1.5G, 2GiB)"
    )]
    Size { input: String, problem: SizeProblem },
    #[error("invalid environment variable {input:?}: {problem}")]
    Env { input: String, problem: EnvProblem },
    #[error("invalid local service {input:?}: {problem}")]
    LocalService {
        input: String,
        problem: LocalServiceProblem,
    },
    #[error("invalid secret {input:?}: {problem}")]
    Secret {
        input: String,
        problem: SecretProblem,
    },
    #[error("invalid resolve entry {input:?}: {problem}")]
    Resolve {
        input: String,
        problem: ResolveProblem,
    },
    #[error("invalid mount {input:?}: {problem}")]
    Mount {
        input: String,
        problem: MountProblem,
    },
    /// A domain pattern (`--allow-domain`, `--deny-domain`, a preset's or a
    /// secret's host).
    #[error("{0}")]
    Domain(#[from] DomainError),
    #[error(
        "unknown preset {name:?} (known presets: {})",
        crate::presets::preset_names()
    )]
    UnknownPreset { name: String },
}

/// What is wrong with a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeProblem {
    #[error("empty")]
    Empty,
    #[error("no number")]
    NoNumber,
    #[error("a digit must come before the decimal point")]
    NoIntegerPart,
    #[error("malformed number")]
    Malformed,
    #[error("unknown unit {0:?}")]
    UnknownUnit(String),
    #[error("too large")]
    TooLarge,
    #[error("a size in bytes must be a whole number")]
    FractionalBytes,
}

/// What is wrong with a `NAME[=VALUE]` environment entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvProblem {
    #[error("the name is empty (expected NAME or NAME=VALUE)")]
    EmptyName,
    #[error("contains a NUL byte")]
    Nul,
    #[error("the name contains whitespace (expected NAME or NAME=VALUE)")]
    WhitespaceInName,
}

const LOCAL_HINT: &str = "expected HOST:PORT, e.g. 127.0.0.1:11434, localhost:8080 or [::1]:8080";

/// What is wrong with an `--allow-local` service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalServiceProblem {
    #[error("only an http:// or https:// URL stands for a service ({LOCAL_HINT})")]
    Scheme,
    #[error("cordon forwards a whole port, so write the URL without a path or user ({LOCAL_HINT})")]
    PathOrUser,
    #[error("no port ({LOCAL_HINT})")]
    NoPort,
    #[error("invalid port {0:?} ({LOCAL_HINT})")]
    Port(String),
    #[error("{0:?} is not an IPv6 address ({LOCAL_HINT})")]
    NotIpv6(String),
    #[error("write an IPv6 address in brackets, e.g. [::1]:8080")]
    Ipv6WithoutBrackets,
    #[error("{0:?} is not an IP address or localhost ({LOCAL_HINT})")]
    NotAnAddress(String),
    #[error("{0} is not the address of one host ({LOCAL_HINT})")]
    NotOneHost(std::net::IpAddr),
}

const SECRET_HINT: &str = "expected NAME=HOST[,HOST...], e.g. ANTHROPIC_API_KEY=api.anthropic.com";

/// What is wrong with a `--secret NAME=HOST[,HOST...]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretProblem {
    #[error("no hosts ({SECRET_HINT})")]
    NoHosts,
    #[error(
        "{0:?} is not an environment variable name (letters, digits and _, not starting with a digit; {SECRET_HINT})"
    )]
    NotAName(String),
    #[error("an empty host ({SECRET_HINT})")]
    EmptyHost,
    #[error("{0}")]
    Host(DomainError),
    #[error("{0:?} has a port; a secret is scoped to hosts, on every port the allowlist opens")]
    HostWithPort(String),
}

const RESOLVE_HINT: &str = "expected HOST:ADDR, e.g. git.internal:10.0.0.5 or db.local:[fd00::5]";

/// What is wrong with a `--resolve HOST:ADDR`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveProblem {
    #[error("no address ({RESOLVE_HINT})")]
    NoAddress,
    #[error("{0:?} is not a host name ({RESOLVE_HINT})")]
    NotAHost(String),
    #[error("leave out the port; the address applies to every port ({RESOLVE_HINT})")]
    Port,
    #[error("{0:?} is not an IP address ({RESOLVE_HINT})")]
    NotAnAddress(String),
    #[error("brackets are for IPv6 addresses ({RESOLVE_HINT})")]
    BracketedIpv4,
}

/// What is wrong with a mount (`SOURCE:TARGET[:ro|rw]`, or its object form).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountProblem {
    #[error("expected SOURCE:TARGET[:ro|rw], e.g. ~/datasets:/data:ro")]
    Shape,
    #[error("the source and the target must not be empty")]
    EmptyPath,
    #[error("the target {0:?} must be an absolute path inside the sandbox, e.g. /data")]
    RelativeTarget(String),
}

/// Why a domain pattern is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error(
        "invalid domain pattern {0:?}: only http:// and https:// URLs stand for a host and port; write NAME:PORT, e.g. example.com:8443"
    )]
    Scheme(String),
    #[error(
        "invalid domain pattern {input:?}: cordon allows whole hosts, not paths; write {scheme}://{authority} (or {authority}), which allows every path of it"
    )]
    Path {
        input: String,
        scheme: String,
        authority: String,
    },
    #[error("invalid domain pattern {0:?}: a pattern names a host, without a user or password")]
    UserInfo(String),
    #[error("invalid port {port:?} in {input:?}: must be 1-65535")]
    Port { input: String, port: String },
    #[error(
        "invalid domain pattern {0:?}: write a name such as example.com or *.example.com, with an optional :PORT"
    )]
    Name(String),
    #[error(
        "invalid domain pattern {0:?}: an IP address is not a domain (hint: name the host, and use --resolve NAME:ADDR if DNS does not know it)"
    )]
    IpAddress(String),
}
