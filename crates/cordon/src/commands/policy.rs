//! `cordon policy`: the resolved policy, every rule with where it came from
//! (cordon-session's `report`), under the backend `--backend` names.

use super::run::{degraded, home_dir, resolve_policy_with};
use crate::cli::RunOptions;
use cordon_backend::Backend;
use cordon_policy::Policy;
use cordon_session::pi::PiSetup;
use cordon_session::report::Report;

/// The policy to show; `pi`: the one `cordon pi` would run with (nothing is
/// made on the host), with what pi needs.
pub fn resolve(options: &RunOptions, pi: bool) -> Result<(Policy, Option<PiSetup>), String> {
    let setup = if pi {
        Some(PiSetup::gather(&home_dir()?, false).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let mut policy = resolve_policy_with(options, setup.as_ref().map(PiSetup::mode))?;
    if let Some(setup) = &setup {
        policy.warnings.extend(setup.warnings(&policy));
    }
    Ok((policy, setup))
}

/// Prints `policy` as `backend` runs it (`setup`: `cordon policy --pi`).
pub fn show(
    backend: &impl Backend,
    options: &RunOptions,
    policy: &Policy,
    setup: Option<&PiSetup>,
    json: bool,
) -> Result<u8, String> {
    let report = Report {
        policy,
        backend: backend.kind(),
        layers: &backend.layers(policy, degraded(options)),
        limits: &backend.assess_limits(policy),
        pi: setup.is_some(),
    };
    if json {
        let value = report.json().map_err(|e| e.to_string())?;
        let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", report.text());
    }
    Ok(0)
}
