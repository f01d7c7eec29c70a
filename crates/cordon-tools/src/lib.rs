//! cordon's tool agent: the process behind `cordon serve` that runs inside the
//! sandbox and answers the JSON-RPC protocol of docs/serve.md (exec, cancel, read,
//! write, stat, exists, readdir, mkdir, find, grep, status).
//!
//! The sandbox's view already confines every file operation; on top of it the agent
//! checks each path against the [`Policy`](cordon_policy::Policy) so that a denied
//! path gets an error naming the rule rather than an empty file.

pub mod client;
mod control;
mod error;
mod exec;
mod fsops;
mod guard;
mod params;
pub mod protocol;
mod search;
mod server;
mod spawn;
mod workers;

pub use error::ToolError;
pub use fsops::MAX_READ;
pub use server::{MAX_LINE, MAX_PENDING};

use serde::{Deserialize, Serialize};

/// What the host hands the agent (as JSON in `CORDON_AGENT_CONFIG`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentConfig {
    /// The session's resolved policy.
    pub policy: cordon_policy::Policy,
    /// The backend the session runs in, as `ready` and `status` name it (`os`).
    pub backend: String,
    /// The isolation layers the backend reports in force; passed through to `status`.
    pub layers: serde_json::Value,
    /// cordon's version, sent in `ready`.
    pub version: String,
    /// The descriptor of the control stream to the host's control endpoint
    /// (`allowDomain`, the host's part of `status`; see
    /// [`protocol::control`]). `cordon serve` always gives one.
    #[serde(default)]
    pub control_fd: Option<i32>,
}

/// Serves requests from `input` (one JSON object per line) to `output`: sends
/// `ready`, then answers requests concurrently until `input` reaches EOF, when the
/// process groups of running commands are killed. Returns an error only when
/// reading `input` fails.
///
/// A panic is not caught: the process running the agent must end on one (release
/// builds have `panic = "abort"`; `cordon __agent` installs a hook that aborts in
/// every build). Requests share state (pending ids, the reading thread, the
/// output), so a request that panicked midway could leave the session answering
/// wrongly or not at all; an ended agent ends the session instead, which the
/// client sees and reports (pi's extension fails every tool until restarted), and
/// nothing ever runs outside the sandbox because of it. Catching the unwind would
/// also be dead code in the shipped binary, which aborts: one behaviour in every
/// build, the one users get.
pub fn serve<R, W>(config: AgentConfig, input: R, output: W) -> std::io::Result<()>
where
    R: std::io::BufRead + Send + 'static,
    W: std::io::Write + Send + 'static,
{
    server::serve(config, input, output)
}

/// Whether `command` would skip the shell (exposed for benchmarks and tests).
#[doc(hidden)]
pub fn is_direct(command: &str, cwd: &std::path::Path) -> bool {
    exec::direct_argv(command, std::env::var_os("PATH").as_deref(), cwd).is_some()
}
