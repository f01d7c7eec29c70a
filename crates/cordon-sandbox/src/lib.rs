//! cordon's OS backend: turns a resolved [`cordon_policy::Policy`] into an isolated
//! place to run processes, with Linux namespaces, a mount view, Landlock and seccomp.
//!
//! - [`view`]: the filesystem as the sandbox sees it (planned on the host, built inside);
//! - [`confine`]: the layers on the sandboxed process itself (capabilities, Landlock, seccomp);
//! - [`OsBackend`]: cordon-backend's [`Backend`](cordon_backend::Backend) for this
//!   backend; `launch` is the host side of a run, `supervisor` PID 1 inside,
//!   `command` the last steps before exec;
//! - [`probe`]: what this machine supports (`cordon doctor`); [`limits`]: memory, pids, CPU;

mod backend;
mod command;
pub mod confine;
mod egress;
mod env;
mod error;
mod git_excludes;
mod launch;
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

pub use backend::{ForwardSignal, OsBackend, OsSession, SERVED_VIEW, Stop, ViewServer};
pub use egress::{DNS_ADDR, Endpoints, SANDBOX_NET, open_endpoints};
pub use error::SandboxError;
pub use netns::loopback_up;
pub use terminal::ServedTerminal;
// The view plans the overlays (view/plan.rs).
pub(crate) use launch::FileOverlay;
