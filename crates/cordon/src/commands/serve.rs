//! `cordon serve`: one sandbox session serving tool operations over JSON-RPC on
//! stdin/stdout (docs/serve.md). The sandbox's command is this very binary in its
//! hidden `__agent` mode, so every operation runs inside the sandbox, confined like
//! any command; the policy travels to it as JSON in one environment variable,
//! which the agent removes before it runs anything.

use super::Failure;
use super::run::{execute_in, resolve_policy, start};
use crate::cli::RunOptions;
use cordon_backend::{Backend, Command, Program, Terminal};
use cordon_policy::{NetMode, Origin, Policy, Sourced};
use cordon_tools::AgentConfig;
use std::ffi::OsString;

/// The variable that carries the agent's configuration into the sandbox.
const AGENT_CONFIG: &str = "CORDON_AGENT_CONFIG";

/// The policy `cordon serve` runs with: the options' own, made widenable.
pub fn policy(options: &RunOptions) -> Result<Policy, String> {
    Ok(widenable(resolve_policy(options)?))
}

pub fn serve(backend: &impl Backend, options: &RunOptions, policy: &Policy) -> Result<u8, Failure> {
    let egress = super::egress::additions(policy)?;
    let mut session = start(backend, options, policy, egress)?;
    // The agent's stream to the host control endpoint (allowDomain, status),
    // whatever the network mode.
    let control_fd = Some(session.control()?);
    let config = AgentConfig {
        policy: policy.clone(),
        backend: session.backend().name().to_string(),
        // What `status` reports: the backend's own list for this session.
        layers: serde_json::to_value(session.layers()).map_err(|e| e.to_string())?,
        version: env!("CARGO_PKG_VERSION").to_string(),
        control_fd,
    };
    let config = serde_json::to_string(&config).map_err(|e| e.to_string())?;
    session.set_env(AGENT_CONFIG, config);
    let command = Command {
        // The agent is this very binary: its path need not be visible inside (it
        // may lie in /tmp, which the sandbox replaces, or in a directory the
        // policy hides).
        program: Program::Cordon,
        args: vec![OsString::from("__agent")],
        // The workspace, where execs run by default.
        cwd: Some(policy.workspace.clone()),
        terminal: Terminal::Inherit,
        timeout: None,
    };
    execute_in(backend, options, session, command)
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

/// Inside the sandbox: serve requests on stdin/stdout until stdin closes.
pub fn agent() -> Result<u8, String> {
    let config = std::env::var(AGENT_CONFIG).map_err(|_| {
        "__agent is cordon's own mode inside a `cordon serve` sandbox; run `cordon serve` instead".to_string()
    })?;
    // SAFETY: single-threaded here; nothing else reads the environment yet.
    unsafe { std::env::remove_var(AGENT_CONFIG) };
    // A panic is a bug: it ends the agent, in every build (release builds abort
    // anyway, by `panic = "abort"`), never one request with the rest going on.
    // The session then ends and the client fails closed (cordon_tools::serve).
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
    // Not dumpable: the commands the agent starts run as the same user, and must
    // not ptrace it or reach its descriptors (the control stream) through
    // /proc. Their exec makes them dumpable again, as usual.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let config: AgentConfig =
        serde_json::from_str(&config).map_err(|e| format!("bad agent configuration: {e}"))?;
    let stdin = std::io::BufReader::new(std::io::stdin());
    cordon_tools::serve(config, stdin, std::io::stdout()).map_err(|e| format!("serve: {e}"))?;
    Ok(0)
}
