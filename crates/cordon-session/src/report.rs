//! `cordon policy`'s report: the resolved policy with where each rule and value
//! came from, the backend's layers, and whether each resource limit holds there
//! (as text, and as `--json`). Pure: it prints nothing and reads nothing; the
//! front end gathers what it shows.

use cordon_backend::{BackendKind, Hold, Layers, LimitsAssessment};
use cordon_policy::{LOCAL_SERVICE_NAME, NetMode, Origin, Policy, SettingGroup, SettingRow};
use std::fmt::Write;

/// What `cordon policy` shows.
pub struct Report<'a> {
    pub policy: &'a Policy,
    pub backend: BackendKind,
    /// The layers a session of the policy has in force ([`cordon_backend::Backend::layers`]).
    pub layers: &'a Layers,
    /// [`cordon_backend::Backend::assess_limits`] of the policy.
    pub limits: &'a LimitsAssessment,
    /// The policy of `cordon pi` (`--pi`).
    pub pi: bool,
}

impl Report<'_> {
    /// The report as text, one section a part of the policy.
    pub fn text(&self) -> String {
        let backend = format!("{}: {}", self.backend, self.layers);
        render(self.policy, &backend, self.limits)
    }

    /// The report as JSON: the policy, with the backend and its layers, how limits
    /// are enforced, and `"mode": "pi"` for `--pi`.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        use serde_json::Value;
        let mut value = serde_json::to_value(self.policy)?;
        value["backend"] = Value::String(self.backend.name().into());
        value["layers"] = serde_json::to_value(self.layers)?;
        value["limits_mechanism"] = Value::String(self.limits.mechanism.clone());
        value["limits_enforcement"] = serde_json::to_value(&self.limits.limits)?;
        if self.pi {
            value["mode"] = Value::String("pi".into());
        }
        Ok(value)
    }
}

/// The managed caches, those left alone (with why), and the sanitized copies.
fn render_caches(out: &mut String, policy: &Policy) {
    let caches = &policy.caches;
    if !caches.managed.is_empty() || !caches.unmanaged.is_empty() {
        let _ = writeln!(
            out,
            "\ncaches (each tool's cache of its own inside; the host's own stay read-only)"
        );
    }
    for c in &caches.managed {
        let how = match &c.uses {
            cordon_policy::CacheUse::Env { name } => format!("{name}={}", c.dir.display()),
            cordon_policy::CacheUse::Mount { target } => {
                format!("{} → {}", c.dir.display(), target.display())
            }
        };
        let _ = writeln!(out, "  {:<6} {how}", c.tool);
    }
    for c in &caches.unmanaged {
        let _ = writeln!(
            out,
            "  {:<6} {} not managed: {}",
            c.tool,
            c.path.display(),
            c.why
        );
    }
    for s in &policy.sanitized {
        let _ = writeln!(
            out,
            "\nshown without credentials\n  {}    ← built-in default: a copy without tokens, passwords and per-registry settings",
            s.path.display()
        );
    }
}

/// The whole text: a header, then one section a part of the policy.
fn render(policy: &Policy, backend: &str, limits: &LimitsAssessment) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "workspace  {}", policy.workspace.display());
    let _ = writeln!(out, "home       {}", policy.home.display());
    let _ = writeln!(out, "backend    {backend}    ← {}", policy.backend.origin);
    render_filesystem(&mut out, policy);
    render_mounts(&mut out, policy);
    render_caches(&mut out, policy);
    render_network(&mut out, policy);
    render_env(&mut out, policy);
    for group in policy.settings() {
        render_settings(&mut out, &group, limits);
    }
    if let Some(kernel) = &policy.vm_kernel {
        render_scalar(
            &mut out,
            "vm_kernel",
            kernel.value.display(),
            &kernel.origin,
        );
    }
    if let Some(share) = &policy.vm_share {
        render_scalar(&mut out, "vm_share", share.value.name(), &share.origin);
    }
    if let Some(timeout) = &policy.timeout {
        let seconds = format!("{}s", timeout.value.as_secs_f64());
        render_scalar(&mut out, "timeout", seconds, &timeout.origin);
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

/// A setting of one value, in a paragraph of its own: `KEY  VALUE    ← ORIGIN`.
fn render_scalar(out: &mut String, key: &str, value: impl std::fmt::Display, origin: &Origin) {
    let _ = writeln!(out, "\n{key:<10} {value}    ← {origin}");
}

/// The path rules, then the private tmpfs directories.
fn render_filesystem(out: &mut String, policy: &Policy) {
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
        let why = match &policy.home_hidden {
            Some(h) if h.value == *scratch => format!("home hidden: private tmpfs ({})", h.origin),
            _ => "private tmpfs".to_string(),
        };
        let _ = writeln!(out, "  {:<6} {}    ← {why}", "tmpfs", scratch.display());
    }
}

/// The mounts, when there are any.
fn render_mounts(out: &mut String, policy: &Policy) {
    if policy.mounts.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nmounts (the target shows what the sandbox sees at the source)"
    );
    for m in &policy.mounts {
        let _ = writeln!(
            out,
            "  {:<6} {} → {}    ← {}",
            if m.writable { "rw" } else { "ro" },
            m.source.display(),
            m.target.display(),
            m.origin
        );
    }
}

/// The variables passed in, with their values where the policy sets one.
fn render_env(out: &mut String, policy: &Policy) {
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
}

/// A group of settings (the policy's fields `limits`, `vm`); for the limits,
/// how the backend enforces them and whether each holds.
fn render_settings(out: &mut String, group: &SettingGroup, assessed: &LimitsAssessment) {
    let caption = if group.name == "limits" {
        assessed.mechanism.as_str()
    } else {
        group.caption
    };
    let _ = writeln!(out, "\n{:<10} {caption}", group.name);
    for row in &group.rows {
        render_setting(out, row, "unlimited");
        if let Some(limit) = assessed.for_setting(row.key) {
            render_hold(out, limit);
        }
    }
}

/// One setting: its name, its value (`none` when it has none) and its origin.
fn render_setting(out: &mut String, row: &SettingRow, none: &str) {
    let value = row.value.as_deref().unwrap_or(none);
    let origin = row.origin.map(|o| format!("    ← {o}")).unwrap_or_default();
    let _ = writeln!(out, "  {:<7}{value}{origin}", row.name);
}

/// Whether one limit holds, and if not, what cordon does about it.
fn render_hold(out: &mut String, limit: &cordon_backend::Assessment) {
    match &limit.hold {
        Hold::Enforced { how } => {
            let _ = writeln!(out, "         holds: {how}");
        }
        Hold::Unenforceable {
            why,
            fix,
            best_effort,
        } => {
            let refusal = if limit.explicit {
                "cordon refuses to run with it unless you pass --allow-degraded limits"
            } else {
                "a built-in default, so cordon runs all the same"
            };
            let _ = writeln!(out, "         NOT enforced here: {why}");
            let _ = writeln!(out, "         {refusal}; best effort: {best_effort}");
            let _ = writeln!(out, "         fix: {fix}");
        }
    }
}

fn net_mode_name(mode: NetMode) -> &'static str {
    match mode {
        NetMode::None => "none",
        NetMode::Host => "host",
        NetMode::Allowlist => "allowlist",
    }
}

/// The network mode and, when there are any, the broker's rules. Secrets are
/// listed by name and hosts only: their values are never read here.
fn render_network(out: &mut String, policy: &Policy) {
    let mode = policy.net.value;
    let what = match mode {
        NetMode::None => "only the sandbox's own loopback",
        NetMode::Host => "no network isolation",
        NetMode::Allowlist => "out only through cordon's egress broker, to what is allowed below",
    };
    let _ = writeln!(
        out,
        "\nnetwork    {} ({what})    ← {}",
        net_mode_name(mode),
        policy.net.origin
    );
    let n = &policy.network;
    let empty = n.allow.is_empty()
        && n.deny.is_empty()
        && n.local.is_empty()
        && n.secrets.is_empty()
        && n.resolve.is_empty()
        && n.upstream_ca.is_empty();
    if empty {
        if mode == NetMode::Allowlist {
            let _ = writeln!(out, "  nothing is allowed: every connection is refused");
        }
        return;
    }
    if mode != NetMode::Allowlist {
        let _ = writeln!(
            out,
            "  (the rules below are not used: they apply only with --net allowlist)"
        );
    }
    for rule in &n.allow {
        let preset = rule
            .preset
            .as_ref()
            .map(|p| format!(" (preset {p})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<7} {}{preset}    ← {}",
            "allow", rule.pattern, rule.origin
        );
    }
    for rule in &n.deny {
        let _ = writeln!(out, "  {:<7} {}    ← {}", "deny", rule.pattern, rule.origin);
    }
    for local in &n.local {
        let port = local.addr.port();
        let _ = writeln!(
            out,
            "  {:<7} {} (inside: 127.0.0.1:{port} and {LOCAL_SERVICE_NAME}:{port})    ← {}",
            "local", local.addr, local.origin
        );
    }
    for secret in &n.secrets {
        let hosts: Vec<String> = secret.hosts.iter().map(ToString::to_string).collect();
        let from = match &secret.value_from {
            Some(from) => from.clone(),
            None => format!("the host's ${}", secret.name),
        };
        let _ = writeln!(
            out,
            "  {:<7} {} (from {from}; inside, a placeholder) sent only to {}    ← {}",
            "secret",
            secret.name,
            hosts.join(", "),
            secret.origin
        );
    }
    for entry in &n.resolve {
        let _ = writeln!(
            out,
            "  {:<7} {} → {}    ← {}",
            "resolve", entry.host, entry.addr, entry.origin
        );
    }
    for ca in &n.upstream_ca {
        let _ = writeln!(
            out,
            "  {:<7} {} (extra upstream trust root)    ← {}",
            "ca",
            ca.file.display(),
            ca.origin
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_policy::{DomainPattern, DomainRule, LocalService, Origin, SecretRule, Sourced};

    fn policy() -> Policy {
        cordon_test_support::PolicyEnv::new().resolve()
    }

    fn rlimits() -> LimitsAssessment {
        LimitsAssessment {
            mechanism: "rlimits".into(),
            limits: Vec::new(),
        }
    }

    #[test]
    fn network_section_lists_rules_but_never_secret_values() {
        let mut p = policy();
        let o = Origin::Flag {
            flag: "--allow-preset".into(),
        };
        p.net = Sourced::new(NetMode::Allowlist, o.clone());
        p.network.allow.push(DomainRule {
            pattern: DomainPattern::parse("pypi.org").unwrap(),
            preset: Some("pypi".into()),
            origin: o.clone(),
        });
        p.network.local.push(LocalService {
            addr: "127.0.0.1:11434".parse().unwrap(),
            origin: o.clone(),
        });
        p.network.secrets.push(SecretRule {
            name: "CORDON_TEST_SECRET".into(),
            hosts: vec![DomainPattern::parse("*.example.com").unwrap()],
            origin: o,
            value_from: None,
        });
        // A key `cordon pi` read from pi's files: not the host's variable.
        p.network.secrets.push(SecretRule {
            name: "CORDON_PI_MODELS_LIT".into(),
            hosts: vec![DomainPattern::parse("lit.example").unwrap()],
            origin: Origin::Pi {
                reason: "provider \"lit\" in models.json".into(),
            },
            value_from: Some("pi's models.json".into()),
        });
        let text = render(&p, "os: seccomp", &rlimits());
        assert!(
            text.contains("network    allowlist (out only through"),
            "{text}"
        );
        assert!(
            text.contains("allow   pypi.org (preset pypi)    ← flag --allow-preset"),
            "{text}"
        );
        assert!(
            text.contains("(inside: 127.0.0.1:11434 and host.cordon.internal:11434)"),
            "{text}"
        );
        assert!(
            text.contains("secret  CORDON_TEST_SECRET (from the host's $CORDON_TEST_SECRET; inside, a placeholder) sent only to *.example.com"),
            "{text}"
        );
        assert!(
            text.contains("secret  CORDON_PI_MODELS_LIT (from pi's models.json; inside, a placeholder) sent only to lit.example"),
            "{text}"
        );
        assert!(!text.contains("$CORDON_PI_MODELS_LIT"), "{text}");
        assert!(!text.contains("not used"), "{text}");
        p.net = Sourced::new(NetMode::None, Origin::Default);
        let text = render(&p, "os: seccomp", &rlimits());
        assert!(text.contains("network    none (only"), "{text}");
        assert!(text.contains("not used"), "{text}");
    }
}
