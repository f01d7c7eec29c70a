//! cordon's host-side session logic, as a library: what a session prepares on the
//! host before the backend runs anything, and removes after.
//!
//! Today: pi's config importer ([`pi::import`], a pure function of file contents and
//! the environment that returns a policy layer and the files to lay over pi's),
//! the table of LLM providers ([`providers`], whose hosts are the presets' own),
//! pi's run dir ([`pi::RunDir`]: made, overlaid, removed) and the URL helpers the
//! importer needs; the missing writable directories a run needs ([`host_dirs`]);
//! the session itself ([`session::HostSession`]: the backend's session, the
//! egress broker, and the host control endpoint ([`control`]) for a front end
//! that asks, as `serve` does); and one run of a command in it ([`run`]: the
//! directories, the git audit around it, the outcome and what to tell the user),
//! which `run`, `shell`, `serve` and `pi` all go through (docs/architecture.md,
//! "Session");
//! and what `cordon policy` shows of a policy ([`report`]).
//!
//! No sandbox mechanics here: the session launches through the backend.

pub mod control;
pub mod host_dirs;
pub mod inputs;
pub mod pi;
pub mod providers;
pub mod report;
pub mod run;
pub mod session;
pub mod url;

use std::path::PathBuf;

/// A session's host-side work that failed; each names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot read the current directory: {0}")]
    CurrentDir(std::io::Error),
    #[error(
        "cannot tell your home directory: HOME is unset and your user is not in /etc/passwd; set HOME"
    )]
    NoHome,
    /// A missing writable directory that cordon cannot make (the message says
    /// which, why, and the fix).
    #[error("{0}")]
    HostDir(String),
    /// The backend could not run the command.
    #[error("{0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot create pi's sessions dir {}: {source}", path.display())]
    SessionsDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make pi's config dir {}: {source}", path.display())]
    RunDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A copy of pi's config files (or their dir) could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CORDON_PI={} cannot be used: {source} (hint: point it at pi's executable, or unset it and install pi: {})", path.display(), pi::INSTALL_HINT)]
    CordonPi {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "pi is not on PATH (hint: install it with `{}`, or set CORDON_PI to its executable)",
        pi::INSTALL_HINT
    )]
    PiNotFound,
    /// Something pi needs (`what`, at `path`) is in `hidden`, which a rule hides.
    #[error("{what} ({}) is in {}, which the policy hides ({origin}), so pi cannot run inside (hint: drop that rule, or move it elsewhere)", path.display(), hidden.display())]
    NeedHidden {
        what: String,
        path: PathBuf,
        hidden: PathBuf,
        origin: String,
    },
    #[error("pi ({}) is in a path the policy hides, so it cannot run inside (hint: install pi elsewhere: {})", .0.display(), pi::INSTALL_HINT)]
    PiHidden(PathBuf),
}
