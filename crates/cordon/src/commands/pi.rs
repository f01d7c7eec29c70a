//! `cordon pi`: the whole pi agent inside the sandbox, its credentials outside.
//! What pi needs on the host, its credentials and the rules for them are
//! cordon-session's ([`PiSetup`]); this runs it and reports.

use super::Failure;
use super::run::{execute_in, home_dir, resolve_policy_with, start};
use crate::cli::RunOptions;
use cordon_backend::{Backend, Command, FileOverlay, Program, Terminal};
use cordon_net::SandboxSide;
use cordon_session::pi::{PiSetup, find_pi};
use std::ffi::OsString;
use std::io::IsTerminal;

/// What a placeholder is where no broker makes one (no broker, or no such name):
/// a value no host accepts.
const UNAVAILABLE: &str = "cordon-secret-unavailable";

/// What `cordon pi` found before choosing a backend: pi, what it needs on the
/// host, and the policy (whose `backend` is where pi runs).
pub struct Prepared {
    program: std::path::PathBuf,
    setup: PiSetup,
    pub policy: cordon_policy::Policy,
}

/// Finds pi and gathers what it needs; resolves the policy `cordon pi` runs with.
pub fn prepare(options: &RunOptions) -> Result<Prepared, Failure> {
    let program = find_pi().map_err(|e| e.to_string())?;
    let setup = PiSetup::gather(&home_dir()?, true).map_err(|e| e.to_string())?;
    let policy = resolve_policy_with(options, Some(setup.mode()))?;
    Ok(Prepared {
        program,
        setup,
        policy,
    })
}

pub fn pi(
    backend: &impl Backend,
    options: &RunOptions,
    prepared: &Prepared,
    args: Vec<OsString>,
) -> Result<u8, Failure> {
    let Prepared {
        program,
        setup,
        policy,
    } = prepared;
    for warning in setup.warnings(policy) {
        eprintln!("cordon: warning: {warning}");
    }
    setup.check(policy, program).map_err(|e| e.to_string())?;

    let import = setup.import();
    // A secret of pi's files has its value there; the others are the host's.
    let values = |name: &str| {
        import
            .value(name)
            .map(str::to_string)
            .or_else(|| std::env::var(name).ok())
    };
    let synthetic = import.synthetic();
    let interactive = std::io::stdin().is_terminal();
    // pi's screen is on the terminal cordon's stderr shares: a refusal printed
    // during the run would be drawn over it, so the refusals wait for its end.
    let held = (interactive && std::io::stderr().is_terminal())
        .then(cordon_net::audit::HeldNotices::default);
    let mut overlays = None;
    let mut egress = super::egress::additions_with(policy, held.clone(), values, |side| {
        let placeholder =
            |name: &str| side_value(side, name).unwrap_or_else(|| UNAVAILABLE.to_string());
        overlays = Some(setup.overlays(&placeholder).map_err(|e| e.to_string())?);
        // The names cordon made up are for the copies, not pi's environment.
        side.env.retain(|(name, _)| !synthetic.contains(name));
        Ok(())
    })?;
    let overlays = match overlays {
        Some(o) => o,
        // No broker (--net none or host): the files still must not show the keys.
        None => setup
            .overlays(&|_| UNAVAILABLE.to_string())
            .map_err(|e| e.to_string())?,
    };
    egress
        .additions
        .files
        .extend(overlays.into_iter().map(|o| FileOverlay {
            source: o.source,
            target: o.target,
        }));

    let command = Command {
        program: Program::Named(program.clone().into_os_string()),
        args,
        cwd: None,
        terminal: if interactive {
            Terminal::Pty
        } else {
            Terminal::Inherit
        },
        timeout: None,
    };
    let session = start(backend, options, policy, egress)?;
    let status = execute_in(backend, options, session, command);
    if let Some(held) = held {
        let refused = held.take();
        if !refused.is_empty() {
            let log = cordon_net::Dirs::from_env(&policy.home, &policy.data_dir).audit_log();
            eprintln!(
                "cordon: while pi ran, {}; each decision is in the audit log {}",
                refused.join("; "),
                log.display()
            );
        }
    }
    status
}

fn side_value(side: &SandboxSide, name: &str) -> Option<String> {
    side.env
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}
