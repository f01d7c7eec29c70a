//! Tighten-only: what a project's config (`.cordon.json` and its `pi` section)
//! may do to the policy. It comes with the repository, so whoever wrote the
//! repository wrote it: each of its values is taken only where it tightens the
//! policy that the defaults, the user's config and the flags made, and is
//! otherwise ignored with a warning naming the field and where it belongs.
//!
//! The decisions are pure functions of the current value and the project's
//! ([`Decision`]); `layer.rs` applies them and words the warnings. The property
//! tests below check each decision; `tests/suite/tighten.rs` checks the whole:
//! no project config ever loosens a resolved policy.

use crate::config::ConfigFile;
use crate::model::NetMode;

/// Where a field a project config may not set belongs instead.
pub(crate) const USER_CONFIG_HINT: &str = "put it in ~/.config/cordon/config.json";

/// What becomes of a value a project config sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Taken: it tightens the policy.
    Take,
    /// Nothing changes and nothing is said: the current value already, or a
    /// value that neither tightens nor loosens (`"read_only": false`).
    Keep,
    /// Ignored with a warning: it would loosen the policy.
    Ignore,
}

/// A limit (`memory`, `pids`, `cpus`, the timeout, the VM's resources): a
/// lower one is tighter, and none at all (`current` is `None`) is the loosest.
/// Values that do not compare (a NaN) are ignored.
pub(crate) fn lower<T: PartialOrd>(current: Option<&T>, proposed: &T) -> Decision {
    match current {
        None => Decision::Take,
        Some(current) if proposed < current => Decision::Take,
        Some(current) if proposed == current => Decision::Keep,
        Some(_) => Decision::Ignore,
    }
}

/// A switch that loosens the policy when on (`nested_userns`, `unix_sockets`,
/// the managed caches): a project may turn it off, never on.
pub(crate) fn only_off(current: bool, proposed: bool) -> Decision {
    match (current, proposed) {
        (true, false) => Decision::Take,
        (false, true) => Decision::Ignore,
        _ => Decision::Keep,
    }
}

/// A switch that tightens the policy when on (`read_only`, `hide_home`): a
/// project may turn it on; `false` says nothing.
pub(crate) fn only_on(current: bool, proposed: bool) -> Decision {
    if proposed && !current {
        Decision::Take
    } else {
        Decision::Keep
    }
}

/// How much a network mode lets out: `none` < `allowlist` < `host`.
pub(crate) fn openness(mode: NetMode) -> u8 {
    match mode {
        NetMode::None => 0,
        NetMode::Allowlist => 1,
        NetMode::Host => 2,
    }
}

/// The network mode: one no more open than the current one is taken. `none`
/// where nothing set a mode (`explicit` is false) is taken too: it makes the
/// network off on purpose, which a session then keeps (`cordon serve` would
/// otherwise start its broker, to let the user allow names later).
pub(crate) fn net(current: NetMode, explicit: bool, proposed: NetMode) -> Decision {
    let keeps_off = proposed == NetMode::None && current == NetMode::None && !explicit;
    if openness(proposed) < openness(current) || keeps_off {
        Decision::Take
    } else if openness(proposed) > openness(current) {
        Decision::Ignore
    } else {
        Decision::Keep
    }
}

/// `USER_CONFIG_HINT`, or the flag that does the same.
pub(crate) fn user_config_or(flag: &str) -> String {
    format!("{USER_CONFIG_HINT} or pass {flag}")
}

/// The fields of `c` that only ever loosen the policy, each with where it
/// belongs instead: a project config's are ignored whole (an empty list says
/// nothing).
pub(crate) fn loosening_fields(c: &ConfigFile) -> Vec<(&'static str, String)> {
    let because = |why: &str, flag: &str| format!("it would {why}; {}", user_config_or(flag));
    [
        (
            "allow_write",
            c.allow_write.is_empty(),
            user_config_or("--allow-write"),
        ),
        (
            "allow_read",
            c.allow_read.is_empty(),
            USER_CONFIG_HINT.into(),
        ),
        ("unprotect", c.unprotect.is_empty(), USER_CONFIG_HINT.into()),
        (
            "home_visible",
            c.home_visible.is_empty(),
            because("show parts of your home directory", "--home-visible"),
        ),
        (
            "env",
            c.env.is_empty(),
            because("pass host environment variables in", "--env"),
        ),
        (
            "allow_domain",
            c.allow_domain.is_empty(),
            user_config_or("--allow-domain"),
        ),
        (
            "allow_preset",
            c.allow_preset.is_empty(),
            user_config_or("--allow-preset"),
        ),
        (
            "allow_local",
            c.allow_local.is_empty(),
            because("open services on your machine", "--allow-local"),
        ),
        (
            "secret",
            c.secret.is_empty(),
            because("send host secrets out", "--secret"),
        ),
        (
            "resolve",
            c.resolve.is_empty(),
            format!(
                "it could point an allowed name at a private address; {}",
                user_config_or("--resolve")
            ),
        ),
        (
            "mount",
            c.mount.is_empty(),
            because("show host paths elsewhere in the sandbox", "--mount"),
        ),
        (
            "upstream_ca",
            c.upstream_ca.is_empty(),
            because("make the broker trust other certificates", "--upstream-ca"),
        ),
        (
            "backend",
            c.backend.is_none(),
            because("choose where the sandbox runs", "--backend"),
        ),
        (
            "vm_share",
            c.vm_share.is_none(),
            because("choose how the VM's guest sees the view", "--vm-share"),
        ),
        (
            "vm_kernel",
            c.vm_kernel.is_none(),
            because(
                "choose the kernel that confines the VM's command",
                "--vm-kernel",
            ),
        ),
    ]
    .into_iter()
    .filter(|(_, empty, _)| !empty)
    .map(|(field, _, hint)| (field, hint))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The value after a decision: the project's if taken, else the current one.
    fn after<T: Clone>(current: Option<T>, proposed: T, d: Decision) -> Option<T> {
        if d == Decision::Take {
            Some(proposed)
        } else {
            current
        }
    }

    fn mode() -> impl Strategy<Value = NetMode> {
        prop_oneof![
            Just(NetMode::None),
            Just(NetMode::Allowlist),
            Just(NetMode::Host)
        ]
    }

    proptest! {
        #[test]
        fn a_limit_never_rises(current in proptest::option::of(any::<u64>()), proposed in any::<u64>()) {
            let d = lower(current.as_ref(), &proposed);
            let now = after(current, proposed, d);
            match (current, now) {
                (Some(before), Some(now)) => prop_assert!(now <= before),
                (Some(_), None) => prop_assert!(false, "a limit was removed"),
                (None, _) => {}
            }
            prop_assert_eq!(d == Decision::Ignore, current.is_some_and(|c| proposed > c));
        }

        #[test]
        fn a_fractional_limit_never_rises(
            current in proptest::option::of(any::<f64>()),
            proposed in any::<f64>(),
        ) {
            let d = lower(current.as_ref(), &proposed);
            if let (Some(before), Some(now)) = (current, after(current, proposed, d)) {
                prop_assert!(now <= before || now.to_bits() == before.to_bits(), "{before} -> {now}");
            }
        }

        #[test]
        fn a_loosening_switch_is_never_turned_on(current in any::<bool>(), proposed in any::<bool>()) {
            let d = only_off(current, proposed);
            let now = after(Some(current), proposed, d).unwrap_or(current);
            prop_assert!(now <= current);
            prop_assert_eq!(d == Decision::Ignore, proposed && !current);
        }

        #[test]
        fn a_tightening_switch_is_never_turned_off(current in any::<bool>(), proposed in any::<bool>()) {
            let d = only_on(current, proposed);
            let now = after(Some(current), proposed, d).unwrap_or(current);
            prop_assert!(now >= current);
            prop_assert_ne!(d, Decision::Ignore);
        }

        #[test]
        fn the_network_never_opens(current in mode(), explicit in any::<bool>(), proposed in mode()) {
            let d = net(current, explicit, proposed);
            let now = after(Some(current), proposed, d).unwrap_or(current);
            prop_assert!(openness(now) <= openness(current));
            prop_assert_eq!(d == Decision::Ignore, openness(proposed) > openness(current));
        }
    }

    #[test]
    fn every_loosening_field_is_named_only_when_set() {
        assert!(loosening_fields(&ConfigFile::default()).is_empty());
        let c: ConfigFile = serde_json::from_str(
            r#"{"allow_write": ["x"], "env": ["A"], "deny_read": ["y"], "mount": ["/a:/b"]}"#,
        )
        .unwrap();
        let named: Vec<&str> = loosening_fields(&c).into_iter().map(|(f, _)| f).collect();
        assert_eq!(named, ["allow_write", "env", "mount"]);
    }
}
