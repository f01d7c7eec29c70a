//! Whether the policy's resource limits hold in a backend's sessions, and how, in
//! terms that name no mechanism type: `cordon policy` prints it, `cordon run
//! --allow-degraded limits` warns with it, and a backend refuses to start with an
//! explicit limit that does not hold (unless the user accepts best effort).
//!
//! How a limit holds is the backend's to say, as text (the OS backend: a cgroup,
//! an rlimit, CPU affinity); what the front ends act on is typed: which limit,
//! whether it holds, whether the user asked for it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A resource limit of the policy (a field of `cordon_policy::Limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// `--memory`
    Memory,
    /// `--pids`
    Pids,
    /// `--cpus`
    Cpu,
}

impl LimitKind {
    /// The policy's setting this limit is: its config key (`memory`, `pids`,
    /// `cpus`), as `cordon_policy::SettingRow::key` names it.
    pub fn setting(self) -> &'static str {
        match self {
            LimitKind::Memory => "memory",
            LimitKind::Pids => "pids",
            LimitKind::Cpu => "cpus",
        }
    }
}

/// How one limit holds in a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "holds", rename_all = "snake_case")]
pub enum Hold {
    /// Enforced, as `how` says.
    Enforced { how: String },
    /// Not enforceable here: why, how to make it so, and what the backend does
    /// instead when the user accepts best effort.
    Unenforceable {
        why: String,
        fix: String,
        best_effort: String,
    },
}

/// One requested limit and whether it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    /// Which limit (`"controller"` in `cordon policy --json`).
    #[serde(rename = "controller")]
    pub limit: LimitKind,
    /// The limit as a flag: `--memory 64M`, `--pids 100`, `--cpus 1.5`.
    pub flag: String,
    /// Asked for by a flag or a config file (not a built-in default).
    pub explicit: bool,
    #[serde(flatten)]
    pub hold: Hold,
}

impl Assessment {
    pub fn holds(&self) -> bool {
        matches!(self.hold, Hold::Enforced { .. })
    }

    /// Refused unless the user accepts best effort: an explicit limit that does
    /// not hold. (A default that does not hold is reported, not refused.)
    pub fn refuses(&self) -> bool {
        self.explicit && !self.holds()
    }

    /// One line: `--memory 64M: <how>` or `--memory 64M: NOT enforced: <why>`.
    pub fn line(&self) -> String {
        match &self.hold {
            Hold::Enforced { how } => format!("{}: {how}", self.flag),
            Hold::Unenforceable { why, .. } => format!("{}: NOT enforced here: {why}", self.flag),
        }
    }
}

impl fmt::Display for Assessment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line())
    }
}

/// What [`Backend::assess_limits`](crate::Backend::assess_limits) answers: how
/// the backend would enforce the policy's limits, in one line, and each
/// requested limit's [`Assessment`], in [`LimitKind`] order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LimitsAssessment {
    pub mechanism: String,
    pub limits: Vec<Assessment>,
}

impl LimitsAssessment {
    /// The assessment of the limit the policy's setting `key` sets (`memory`,
    /// `pids`, `cpus`), if the policy asks for it.
    pub fn for_setting(&self, key: &str) -> Option<&Assessment> {
        self.limits.iter().find(|a| a.limit.setting() == key)
    }

    /// The limits a session would run without unless the user accepts best
    /// effort (`--allow-degraded limits`), each with what it then gets instead.
    pub fn best_effort(&self) -> impl Iterator<Item = (&Assessment, &str)> {
        self.limits
            .iter()
            .filter(|a| a.refuses())
            .filter_map(|a| match &a.hold {
                Hold::Unenforceable { best_effort, .. } => Some((a, best_effort.as_str())),
                Hold::Enforced { .. } => None,
            })
    }
}

/// What to say when the kernel killed `kills` processes of a sandbox for its
/// memory limit (`flag`: `--memory 64M`): the command (or one of its
/// processes) died of the limit, not of a bug of its own.
pub fn out_of_memory(flag: &str, kills: u64) -> String {
    format!(
        "the sandbox reached its memory limit ({flag}): the kernel killed {kills} process{} in it \
         (raise the limit to give it more)",
        if kills == 1 { "" } else { "es" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assessment(limit: LimitKind, explicit: bool, holds: bool) -> Assessment {
        Assessment {
            limit,
            flag: format!("--{} 1", limit.setting()),
            explicit,
            hold: if holds {
                Hold::Enforced { how: "how".into() }
            } else {
                Hold::Unenforceable {
                    why: "why".into(),
                    fix: "fix".into(),
                    best_effort: format!("instead for {}", limit.setting()),
                }
            },
        }
    }

    #[test]
    fn the_json_keeps_cordon_policys_field_names() {
        let a = assessment(LimitKind::Cpu, true, false);
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["controller"], "cpu");
        assert_eq!(v["holds"], "unenforceable");
        assert_eq!(v["best_effort"], "instead for cpus");
        assert_eq!(v["explicit"], true);
        let v = serde_json::to_value(assessment(LimitKind::Memory, false, true)).unwrap();
        assert_eq!(
            (&v["controller"], &v["holds"]),
            (&"memory".into(), &"enforced".into())
        );
    }

    #[test]
    fn best_effort_is_the_explicit_limits_that_do_not_hold() {
        let all = LimitsAssessment {
            mechanism: "m".into(),
            limits: vec![
                assessment(LimitKind::Memory, true, false),
                assessment(LimitKind::Pids, false, false),
                assessment(LimitKind::Cpu, true, true),
            ],
        };
        let flags: Vec<(&str, &str)> = all
            .best_effort()
            .map(|(a, instead)| (a.flag.as_str(), instead))
            .collect();
        assert_eq!(flags, [("--memory 1", "instead for memory")]);
        assert!(all.for_setting("pids").is_some_and(|a| !a.refuses()));
        assert_eq!(
            all.for_setting("cpus").map(|a| a.limit),
            Some(LimitKind::Cpu)
        );
    }
}
