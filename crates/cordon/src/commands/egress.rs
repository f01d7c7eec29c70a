//! The egress broker of a run in `allowlist` mode: prepared and wired to the
//! backend by cordon-net (`for_policy`, `wire`); only the mapping of the
//! command's needs (held notices, an adjustment of the sandbox's side) is here.

use cordon_net::audit::HeldNotices;
use cordon_net::{SandboxSide, Wired};
use cordon_policy::Policy;

/// What the sandbox needs for the policy's network mode: nothing unless it is
/// `allowlist`.
pub fn additions(policy: &Policy) -> Result<Wired, String> {
    additions_with(policy, None, |name| std::env::var(name).ok(), |_| Ok(()))
}

/// [`additions`] with the secrets' values read by `host_env`, and `adjust` given
/// the sandbox's side once the placeholders exist (to lay files holding them over
/// the view, or drop variables). With `held`, the broker's refusal notices are
/// held there instead of printed (a full-screen program owns the terminal).
pub fn additions_with(
    policy: &Policy,
    held: Option<HeldNotices>,
    host_env: impl Fn(&str) -> Option<String>,
    adjust: impl FnOnce(&mut SandboxSide) -> Result<(), String>,
) -> Result<Wired, String> {
    let mut egress = cordon_net::for_policy(policy, host_env).map_err(|e| e.to_string())?;
    if let Some(egress) = &mut egress {
        adjust(&mut egress.sandbox)?;
        if let Some(held) = held {
            egress.config.audit.hold_notices(held);
        }
    }
    Ok(cordon_net::wire(egress))
}
