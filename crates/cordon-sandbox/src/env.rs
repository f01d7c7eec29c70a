//! The sandbox's environment: the policy's allowlist, filled from cordon's own
//! environment where the policy names a variable without a value.

use cordon_policy::Policy;

/// `(name, value)` pairs, in policy order, each name once (the last setting wins).
pub fn build_env(policy: &Policy) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for var in &policy.env {
        let value = match &var.value {
            Some(v) => Some(v.clone()),
            None => std::env::var(&var.name).ok(),
        };
        env.retain(|(k, _)| k != &var.name);
        if let Some(value) = value {
            env.push((var.name.clone(), value));
        }
    }
    env.retain(|(k, _)| k != "CORDON_SANDBOX");
    env.push(("CORDON_SANDBOX".into(), "1".into()));
    env
}
