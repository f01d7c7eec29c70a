use std::io;
use std::path::PathBuf;

/// Why the sandbox could not be set up. Each variant says what failed; the CLI adds
/// the `cordon:` prefix and exit status 125.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot create the sandbox's namespaces: {source}\n  cause: {cause}\n  fix: {fix}")]
    Namespaces {
        source: io::Error,
        cause: String,
        fix: String,
    },
    #[error("cannot build the sandbox's view of {path}: {source}")]
    View { path: PathBuf, source: io::Error },
    #[error("{path}: {problem}")]
    ProtectedPath { path: PathBuf, problem: String },
    #[error("mount {} → {}: {problem}", .from.display(), .target.display())]
    Mount {
        from: PathBuf,
        target: PathBuf,
        problem: String,
    },
    #[error(
        "Landlock is not available on this kernel ({detail})\n  fix: use a kernel with Landlock (5.13+, `lsm=` including landlock), or pass --allow-degraded landlock to run with the mount view and seccomp only"
    )]
    LandlockMissing { detail: String },
    #[error("cannot set up Landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    #[error("cannot set up Landlock: the kernel refused to create a ruleset")]
    LandlockRefused,
    #[error("cannot set up Landlock: {0}")]
    LandlockRestrict(#[source] io::Error),
    #[error("cannot build the seccomp filter: a jump in it is longer than classic BPF allows")]
    SeccompTooLong,
    #[error("cannot set resource limits: {0}")]
    Limits(#[from] crate::limits::LimitsError),
    #[error("cannot set resource limits: CPU affinity: {0}")]
    Affinity(#[source] io::Error),
    #[error(
        "{flag} cannot be enforced here: {why}\n  fix: {fix}\n  or pass --allow-degraded limits to run with best effort: {best_effort}"
    )]
    UnenforceableLimit {
        flag: String,
        why: String,
        fix: String,
        best_effort: String,
    },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    /// A text that becomes a C string (an argument, a variable, a path) holds a
    /// NUL byte, which no C string can carry.
    #[error("{what} contains a NUL byte")]
    NulByte { what: String },
    #[error("the allowlist network mode needs the egress broker, which was not started")]
    NoBroker,
    /// A failure the sandbox's own processes reported before the command ran, in
    /// their words: it reaches the launcher as text over the report pipe.
    #[error("{0}")]
    Child(String),
    /// A session used beyond what the OS backend offers (one command, one
    /// control channel).
    #[error("{0}")]
    Session(&'static str),
}

impl SandboxError {
    /// The refusal to run with a limit that does not hold (see `limits::assess`).
    pub fn unenforceable_limit(a: &cordon_backend::Assessment) -> Self {
        let (why, fix, best_effort) = match &a.hold {
            cordon_backend::Hold::Unenforceable {
                why,
                fix,
                best_effort,
            } => (why.clone(), fix.clone(), best_effort.clone()),
            cordon_backend::Hold::Enforced { how } => (how.clone(), String::new(), String::new()),
        };
        SandboxError::UnenforceableLimit {
            flag: a.flag.clone(),
            why,
            fix,
            best_effort,
        }
    }

    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        SandboxError::Io {
            what: what.into(),
            source,
        }
    }
}
