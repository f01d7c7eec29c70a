//! cordon's tool agent: the process behind `cordon serve` that runs inside the
//! sandbox and answers the JSON-RPC protocol of docs/serve.md (exec, cancel, read,
//! write, stat, exists, readdir, mkdir, find, grep, status).
//!
//! The sandbox's view already confines every file operation; on top of it the agent
//! checks each path against the [`Policy`](cordon_policy::Policy) so that a denied
//! path gets an error naming the rule rather than an empty file.

mod control;
mod error;
mod exec;
mod fsops;
mod guard;
mod params;
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
    /// The backend the session runs in (`os`); sent in `ready` and `status`.
    pub backend: String,
    /// The isolation layers the host's backend reports in force; passed through
    /// to `status`.
    pub layers: serde_json::Value,
    /// cordon's version, sent in `ready`.
    pub version: String,
    /// The descriptor of the control stream to the egress broker (`allowDomain`),
    /// when the session has one.
    #[serde(default)]
    pub control_fd: Option<i32>,
}

/// Serves requests from `input` (one JSON object per line) to `output`: sends
/// `ready`, then answers requests concurrently until `input` reaches EOF, when the
/// process groups of running commands are killed. Returns an error only when
/// reading `input` fails.
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
