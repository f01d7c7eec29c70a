//! `cordon policy`: the resolved policy, every rule with where it came from.

use super::run::resolve_policy;
use crate::cli::RunOptions;
use cordon_policy::Policy;
use std::fmt::Write;

pub fn show(options: &RunOptions, json: bool) -> Result<u8, String> {
    let policy = resolve_policy(options)?;
    let limits = cordon_sandbox::limits_mechanism(&policy.limits);
    if json {
        let mut value = serde_json::to_value(&policy).map_err(|e| e.to_string())?;
        value["limits_mechanism"] = serde_json::Value::String(limits.describe());
        println!(
            "{}",
            serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", render(&policy, &limits.describe()));
    }
    Ok(0)
}

fn render(policy: &Policy, limits_mechanism: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "workspace  {}", policy.workspace.display());
    let _ = writeln!(out, "home       {}", policy.home.display());
    let _ = writeln!(
        out,
        "\nfilesystem (longest matching prefix wins; on a tie deny > write > read)"
    );
    for rule in &policy.rules {
        let kind = match rule.kind {
            cordon_policy::RuleKind::Plain => "",
            cordon_policy::RuleKind::Protected => " (protected)",
            cordon_policy::RuleKind::Secret => " (secret)",
        };
        let _ = writeln!(
            out,
            "  {:<6} {}{kind}    ← {}",
            rule.access.to_string(),
            rule.path.display(),
            rule.origin
        );
    }
    for scratch in &policy.scratch {
        let _ = writeln!(
            out,
            "  {:<6} {}    ← private tmpfs",
            "tmpfs",
            scratch.display()
        );
    }
    let _ = writeln!(
        out,
        "\nnetwork    {:?}    ← {}",
        policy.net.value, policy.net.origin
    );
    let _ = writeln!(out, "\nenvironment");
    for var in &policy.env {
        match &var.value {
            Some(value) => {
                let _ = writeln!(out, "  {}={value}    ← {}", var.name, var.origin);
            }
            None => {
                let _ = writeln!(out, "  {}    ← {}", var.name, var.origin);
            }
        }
    }
    let _ = writeln!(out, "\nlimits     enforced by {limits_mechanism}");
    let show = |name: &str, value: Option<String>, origin: Option<&cordon_policy::Origin>| {
        format!(
            "  {name:<7}{}{}\n",
            value.unwrap_or_else(|| "unlimited".into()),
            origin.map(|o| format!("    ← {o}")).unwrap_or_default()
        )
    };
    out += &show(
        "memory",
        policy
            .limits
            .memory
            .as_ref()
            .map(|m| format!("{} bytes", m.value)),
        policy.limits.memory.as_ref().map(|m| &m.origin),
    );
    out += &show(
        "pids",
        policy.limits.pids.as_ref().map(|m| m.value.to_string()),
        policy.limits.pids.as_ref().map(|m| &m.origin),
    );
    out += &show(
        "cpus",
        policy.limits.cpus.as_ref().map(|m| m.value.to_string()),
        policy.limits.cpus.as_ref().map(|m| &m.origin),
    );
    if let Some(timeout) = &policy.timeout {
        let _ = writeln!(
            out,
            "\ntimeout    {}s    ← {}",
            timeout.value.as_secs_f64(),
            timeout.origin
        );
    }
    let _ = writeln!(
        out,
        "\nswitches   nested_userns={} unix_sockets={}",
        policy.switches.nested_userns.value, policy.switches.unix_sockets.value
    );
    for warning in &policy.warnings {
        let _ = writeln!(out, "\nwarning: {warning}");
    }
    out
}
