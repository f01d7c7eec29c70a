//! The egress broker for a run in `allowlist` mode: prepared by cordon-net
//! (`cordon_net::for_policy`), wired to the sandbox by the OS backend
//! (`cordon_sandbox::egress::broker_additions`). Only the mapping of the command's
//! needs (a control stream, held notices, an adjustment of the sandbox's side)
//! is here.

use cordon_net::SandboxSide;
use cordon_net::audit::HeldNotices;
use cordon_policy::Policy;
use cordon_sandbox::egress::{BrokerAdditions, broker_additions};

/// What the sandbox needs for the policy's network mode: nothing unless it is
/// `allowlist`. With `control`, the command also inherits a stream to the broker
/// on which it may allow more domains (`cordon serve`'s agent).
pub fn additions(policy: &Policy, control: bool) -> Result<BrokerAdditions, String> {
    additions_with(
        policy,
        control,
        None,
        |name| std::env::var(name).ok(),
        |_| Ok(()),
    )
}

/// [`additions`] with the secrets' values read by `host_env`, and `adjust` given
/// the sandbox's side once the placeholders exist (to lay files holding them over
/// the view, or drop variables). With `held`, the broker's refusal notices are
/// held there instead of printed (a full-screen program owns the terminal).
pub fn additions_with(
    policy: &Policy,
    control: bool,
    held: Option<HeldNotices>,
    host_env: impl Fn(&str) -> Option<String>,
    adjust: impl FnOnce(&mut SandboxSide) -> Result<(), String>,
) -> Result<BrokerAdditions, String> {
    let Some(mut egress) = cordon_net::for_policy(policy, host_env).map_err(|e| e.to_string())?
    else {
        return Ok(BrokerAdditions::default());
    };
    adjust(&mut egress.sandbox)?;
    if let Some(held) = held {
        egress.config.audit.hold_notices(held);
    }
    broker_additions(egress, control).map_err(|e| e.to_string())
}
