//! cordon's OS backend: turns a resolved [`cordon_policy::Policy`] into an isolated
//! place to run processes, with Linux namespaces, a mount view, Landlock and seccomp.
//!
//! - [`view`]: the filesystem as the sandbox sees it (planned on the host, built inside);
//! - [`confine`]: the layers on the sandboxed process itself (capabilities, Landlock, seccomp);
//! - [`launch`]: the host side of a run; `supervisor` is PID 1 inside; `command` the last
//!   steps before exec;
//! - [`probe`]: what this machine supports (`cordon doctor`); [`limits`]: memory, pids, CPU;

mod command;
pub mod confine;
pub mod egress;
mod env;
mod error;
mod git_excludes;
pub mod launch;
pub mod limits;
mod netns;
pub mod probe;
mod report;
mod signals;
mod supervisor;
mod sys;
mod terminal;
pub mod view;
mod waiter;
mod workspace_lock;

pub use error::SandboxError;
pub use launch::{
    Additions, Command, Degraded, FileOverlay, Outcome, Terminal, limits_mechanism, run,
};
