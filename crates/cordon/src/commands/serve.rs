//! `cordon serve`: one sandbox session serving tool operations over JSON-RPC on
//! stdin/stdout (docs/serve.md). The sandbox's command is this very binary in its
//! hidden `__agent` mode, so every operation runs inside the sandbox, confined like
//! any command; the policy travels to it as JSON in one environment variable,
//! which the agent removes before it runs anything.

use super::run::{execute_in, resolve_policy};
use crate::cli::RunOptions;
use cordon_policy::{NetMode, Origin, Policy, Sourced};
use cordon_sandbox::{Command, Terminal};
use cordon_tools::AgentConfig;
use std::ffi::OsString;
use std::os::unix::fs::OpenOptionsExt;

/// The variable that carries the agent's configuration into the sandbox.
const AGENT_CONFIG: &str = "CORDON_AGENT_CONFIG";

pub fn serve(options: &RunOptions) -> Result<u8, String> {
    let policy = widenable(resolve_policy(options)?);
    let exe = std::env::current_exe().unwrap_or_else(|_| "cordon".into());
    let egress = super::egress::additions(&policy, true)?;
    let (mut additions, control_fd) = (egress.additions, egress.control_fd);
    // The agent is this very binary, run from a descriptor of it: its path need
    // not be visible inside (it may lie in /tmp, which the sandbox replaces, or in
    // a directory the policy hides). Close-on-exec: the exec closes it, so the
    // agent and what it starts never hold it.
    let own_binary = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open("/proc/self/exe")
        .map_err(|e| format!("cannot open cordon's own binary (/proc/self/exe): {e}"))?;
    additions.exec_fd = Some(own_binary.into());
    let config = AgentConfig {
        policy: policy.clone(),
        layers: layers(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        control_fd,
    };
    let config = serde_json::to_string(&config).map_err(|e| e.to_string())?;
    let command = Command {
        program: exe.into_os_string(),
        args: vec![OsString::from("__agent")],
        // The workspace, where execs run by default.
        cwd: Some(policy.workspace.clone()),
        terminal: Terminal::Inherit,
    };
    additions.env.push((AGENT_CONFIG.to_string(), config));
    execute_in(options, &policy, command, additions, &egress.status)
}

/// A session whose network is off only because nothing was allowed (no `--net`,
/// no `"net"` in a config) starts in `allowlist` mode with nothing allowed: the
/// same closed network (DNS answers no name, every connection is refused), but
/// with its broker running, so `allowDomain` can add names when the user agrees.
/// An explicit `none` stays `none`: that session never gets a network.
fn widenable(mut policy: Policy) -> Policy {
    if policy.net.value == NetMode::None && policy.net.origin == Origin::Default {
        policy.net = Sourced::new(NetMode::Allowlist, Origin::Default);
    }
    policy
}

/// The layers every `serve` sandbox has (cordon refuses to start without them),
/// for the `status` method.
fn layers() -> serde_json::Value {
    let landlock = cordon_sandbox::confine::landlock::kernel_abi().unwrap_or(0);
    serde_json::json!({
        "namespaces": ["user", "mount", "pid", "net", "ipc", "uts", "cgroup"],
        "landlock": landlock,
        "seccomp": true,
        "capabilities": "none",
        "no_new_privs": true,
    })
}

/// Inside the sandbox: serve requests on stdin/stdout until stdin closes.
pub fn agent() -> Result<u8, String> {
    let config = std::env::var(AGENT_CONFIG).map_err(|_| {
        "__agent is cordon's own mode inside a `cordon serve` sandbox; run `cordon serve` instead".to_string()
    })?;
    // SAFETY: single-threaded here; nothing else reads the environment yet.
    unsafe { std::env::remove_var(AGENT_CONFIG) };
    // Not dumpable: the commands the agent starts run as the same user, and must
    // not ptrace it or reach its descriptors (the broker's control stream) through
    // /proc. Their exec makes them dumpable again, as usual.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let config: AgentConfig =
        serde_json::from_str(&config).map_err(|e| format!("bad agent configuration: {e}"))?;
    let stdin = std::io::BufReader::new(std::io::stdin());
    cordon_tools::serve(config, stdin, std::io::stdout()).map_err(|e| format!("serve: {e}"))?;
    Ok(0)
}
