//! Resource limits for a sandbox: memory, number of processes, CPU.
//!
//! Three mechanisms, best first (see `docs/doctor.md`):
//!
//! 1. **cgroup v2**, where a subtree is delegated to the invoking user (or the user
//!    is root on a cgroup v2 host): one fresh cgroup per sandbox with `memory.max`,
//!    `memory.swap.max`, `pids.max`, `cpu.max`.
//! 2. **cgroup v1**, where the v1 controllers are writable (root on a v1 host):
//!    one fresh cgroup per controller hierarchy.
//! 3. **rlimits** otherwise, set in the sandboxed process just before exec:
//!    `RLIMIT_NPROC` (per user namespace), and CPU affinity to `floor(cpus)` CPUs
//!    (set by the supervisor; seccomp then refuses `sched_setaffinity`).
//!
//! A cgroup mechanism may cover only some of the requested limits (a controller not
//! delegated); the rest fall back to rlimits: pass [`Mechanism::uncovered`] to
//! [`apply_rlimits`]. Not every limit holds that way (memory never does): [`assess`]
//! says which holds how, and cordon refuses to run with one that does not unless
//! the user accepts best effort.
//!
//! The flow for `cordon run`: [`choose`] (cheap: a few reads), then in the host-side
//! parent [`SandboxCgroup::create`], [`SandboxCgroup::add_pid`] for the sandbox's
//! first process right after the clone, and in that process (inside its user
//! namespace) [`apply_rlimits`] before exec. Dropping the `SandboxCgroup` kills
//! whatever is left in it and removes it.

mod cgroup;
mod hold;
mod survey;

#[cfg(test)]
mod tests;

pub use cgroup::{SandboxCgroup, oom_kill_count};
pub use hold::{affinity_cpus, assess, available_cpus, cgroup_fix, controller_summary};
pub use survey::{CgroupSurvey, V1Survey, V2Survey, survey};

use cordon_backend::LimitKind;
use cordon_policy::{Limits, Sourced};
use rustix::io::Errno;
use rustix::process::{Resource, Rlimit};
use rustix::thread::CpuSet;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::path::PathBuf;

/// The cgroup controllers cordon uses, one per kind of limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Controller {
    /// `--memory`
    Memory,
    /// `--pids`
    Pids,
    /// `--cpus`
    Cpu,
}

impl Controller {
    pub const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

    /// The controller's name in `cgroup.controllers` and in v1 mount options.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }

    /// What the rlimits fallback does for this controller's limit.
    fn rlimit_fallback(self) -> &'static str {
        match self {
            Controller::Memory => "none holds (best effort: RLIMIT_DATA per process)",
            Controller::Pids => "RLIMIT_NPROC per user namespace",
            Controller::Cpu => "CPU affinity to floor(cpus) CPUs",
        }
    }
}

/// The controller that enforces a limit of the policy.
impl From<LimitKind> for Controller {
    fn from(limit: LimitKind) -> Controller {
        match limit {
            LimitKind::Memory => Controller::Memory,
            LimitKind::Pids => Controller::Pids,
            LimitKind::Cpu => Controller::Cpu,
        }
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The controllers `limits` needs, in `Controller::ALL` order.
pub fn needed(limits: &Limits) -> Vec<Controller> {
    let mut out = Vec::new();
    if limits.memory.is_some() {
        out.push(Controller::Memory);
    }
    if limits.pids.is_some() {
        out.push(Controller::Pids);
    }
    if limits.cpus.is_some() {
        out.push(Controller::Cpu);
    }
    out
}

/// A v1 hierarchy directory under which a sandbox's cgroup for `controller` goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Dir {
    pub controller: Controller,
    pub dir: PathBuf,
}

/// How a sandbox's limits are enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mechanism {
    /// No limit was requested.
    None,
    /// One cgroup v2 per sandbox, created under `dir`.
    CgroupV2 {
        /// The parent of the sandboxes' cgroups.
        dir: PathBuf,
        /// The requested controllers this cgroup enforces.
        controllers: Vec<Controller>,
        /// The requested controllers left to rlimits (not delegated).
        fallback: Vec<Controller>,
        /// `dir` still holds processes and lacks the controllers in its
        /// `cgroup.subtree_control`: creating the first sandbox moves those
        /// processes (cordon's own) into the leaf `dir/cordon-host` first, as the
        /// "no internal processes" rule requires.
        evacuate: bool,
    },
    /// One cgroup per v1 hierarchy (`dirs`: one parent per controller).
    CgroupV1 {
        dirs: Vec<V1Dir>,
        /// The requested controllers left to rlimits.
        fallback: Vec<Controller>,
    },
    /// No usable cgroup: everything through [`apply_rlimits`].
    Rlimits,
}

impl Mechanism {
    /// One line for `cordon policy` and `cordon doctor`.
    pub fn describe(&self) -> String {
        let fallback_text = |fallback: &[Controller]| {
            if fallback.is_empty() {
                String::new()
            } else {
                let parts: Vec<String> = fallback
                    .iter()
                    .map(|c| format!("{c}: {}", c.rlimit_fallback()))
                    .collect();
                format!("; rlimits for the rest ({})", parts.join(", "))
            }
        };
        match self {
            Mechanism::None => "none (no limit requested)".to_string(),
            Mechanism::CgroupV2 {
                dir,
                controllers,
                fallback,
                evacuate,
            } => {
                let names: Vec<&str> = controllers.iter().map(|c| c.name()).collect();
                format!(
                    "cgroup v2 at {}/<sandbox> ({}){}{}",
                    dir.display(),
                    names.join(", "),
                    if *evacuate {
                        "; cordon moves itself into cordon-host/ there to enable the controllers"
                    } else {
                        ""
                    },
                    fallback_text(fallback)
                )
            }
            Mechanism::CgroupV1 { dirs, fallback } => {
                let parts: Vec<String> = dirs
                    .iter()
                    .map(|d| format!("{} at {}/<sandbox>", d.controller, d.dir.display()))
                    .collect();
                format!(
                    "cgroup v1 ({}){}",
                    parts.join(", "),
                    fallback_text(fallback)
                )
            }
            Mechanism::Rlimits => format!(
                "no cgroup: rlimits ({})",
                Controller::ALL
                    .iter()
                    .map(|c| format!("{c}: {}", c.rlimit_fallback()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The controllers a cgroup enforces under this mechanism.
    pub fn controllers(&self) -> Vec<Controller> {
        match self {
            Mechanism::CgroupV2 { controllers, .. } => controllers.clone(),
            Mechanism::CgroupV1 { dirs, .. } => dirs.iter().map(|d| d.controller).collect(),
            Mechanism::None | Mechanism::Rlimits => Vec::new(),
        }
    }

    /// True if a cgroup enforces `controller`'s limit.
    pub fn covers(&self, controller: Controller) -> bool {
        self.controllers().contains(&controller)
    }

    /// The part of `limits` no cgroup enforces: what [`apply_rlimits`] should set.
    /// Passing the whole `limits` to `apply_rlimits` is also safe (the rlimits then
    /// back up the cgroup), but doubles `RLIMIT_DATA` as a per-process cap.
    pub fn uncovered(&self, limits: &Limits) -> Limits {
        Limits {
            memory: limits
                .memory
                .clone()
                .filter(|_| !self.covers(Controller::Memory)),
            pids: limits
                .pids
                .clone()
                .filter(|_| !self.covers(Controller::Pids)),
            cpus: limits
                .cpus
                .clone()
                .filter(|_| !self.covers(Controller::Cpu)),
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// What can go wrong setting limits.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("invalid {what} limit {value}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "invalid cgroup name {0:?}: use 1 to 200 characters from [A-Za-z0-9._-], not \".\" or \"..\""
    )]
    InvalidName(String),
    #[error("cgroup {0} already exists and is in use")]
    Exists(PathBuf),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("processes remain in {0} after repeated SIGKILL")]
    Unkillable(PathBuf),
}

impl LimitsError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LimitsError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// The smallest memory limit accepted: below it not even a shell starts.
pub const MIN_MEMORY: u64 = 1 << 20;
/// The smallest CPU share accepted: cgroups' minimum quota is 1 ms per 100 ms.
pub const MIN_CPUS: f64 = 0.01;

/// Checks the numbers; `create` and `apply_rlimits` refuse what this refuses.
pub fn validate(limits: &Limits) -> Result<(), LimitsError> {
    if let Some(Sourced { value, .. }) = &limits.memory {
        if *value < MIN_MEMORY {
            return Err(LimitsError::Invalid {
                what: "memory",
                value: value.to_string(),
                reason: "must be at least 1 MiB",
            });
        }
    }
    if let Some(Sourced { value, .. }) = &limits.pids {
        if *value == 0 {
            return Err(LimitsError::Invalid {
                what: "pids",
                value: value.to_string(),
                reason: "must be at least 1",
            });
        }
    }
    if let Some(Sourced { value, .. }) = &limits.cpus {
        if !cpus_valid(*value) {
            return Err(LimitsError::Invalid {
                what: "cpus",
                value: value.to_string(),
                reason: "must be a finite number of at least 0.01",
            });
        }
    }
    Ok(())
}

fn cpus_valid(cpus: f64) -> bool {
    cpus.is_finite() && cpus >= MIN_CPUS
}

/// Picks the mechanism for `limits` on this host. Cheap: reads a few files under
/// /proc and /sys/fs/cgroup, no fork, no write. Called on every `cordon run`.
pub fn choose(limits: &Limits) -> Mechanism {
    let needed = needed(limits);
    if needed.is_empty() {
        return Mechanism::None;
    }
    choose_from(&survey(), &needed)
}

/// [`choose`] on an existing survey, for the controllers in `needed`.
pub fn choose_from(survey: &CgroupSurvey, needed: &[Controller]) -> Mechanism {
    if needed.is_empty() {
        return Mechanism::None;
    }
    let v2: Vec<Controller> = match &survey.v2.dir {
        Some(_) => needed
            .iter()
            .copied()
            .filter(|c| survey.v2.usable.contains(c))
            .collect(),
        None => Vec::new(),
    };
    let v1: Vec<V1Dir> = needed
        .iter()
        .filter_map(|c| {
            survey
                .v1
                .iter()
                .find(|s| s.controller == *c && s.usable)
                .and_then(|s| {
                    s.dir.clone().map(|dir| V1Dir {
                        controller: *c,
                        dir,
                    })
                })
        })
        .collect();
    let rest = |covered: &[Controller]| -> Vec<Controller> {
        needed
            .iter()
            .copied()
            .filter(|c| !covered.contains(c))
            .collect()
    };
    let use_v2 = !v2.is_empty() && (v2.len() == needed.len() || v2.len() >= v1.len());
    if use_v2 {
        let fallback = rest(&v2);
        return Mechanism::CgroupV2 {
            dir: survey.v2.dir.clone().unwrap_or_default(),
            controllers: v2,
            fallback,
            evacuate: survey.v2.evacuate,
        };
    }
    if !v1.is_empty() {
        let covered: Vec<Controller> = v1.iter().map(|d| d.controller).collect();
        return Mechanism::CgroupV1 {
            fallback: rest(&covered),
            dirs: v1,
        };
    }
    Mechanism::Rlimits
}

/// Sets the rlimit side of `limits` on the calling process: call it in the
/// sandbox's process after it has entered its user namespace, just before exec.
/// Checks every number; CPU affinity is [`restrict_affinity`]'s (the supervisor
/// sets it before seccomp refuses `sched_setaffinity`).
///
/// Async-signal-safe: no allocation, no locks; only getrlimit/setrlimit
/// (rustix's direct syscalls).
///
/// - memory → `RLIMIT_DATA` (soft = hard = the limit), best effort only: it counts
///   private writable mappings and the heap of one process, not shared mappings,
///   tmpfs files or memfds, nor several processes together ([`assess`] calls that
///   not enforced). Not `RLIMIT_AS`: V8, the JVM, Go and sanitizers reserve huge
///   address ranges up front (V8's pointer cage alone is 4 GiB+) without using
///   them, so an address-space cap breaks them long before they use the memory,
///   and it would be per process all the same.
/// - pids → `RLIMIT_NPROC`. Since Linux 5.14 the count is per user namespace
///   (ucounts), so inside the sandbox's own user namespace it counts the sandbox's
///   processes, not all of the user's. It is NOT enforced for uid 0 on the host
///   (a sandbox started by root), nor for holders of CAP_SYS_ADMIN or
///   CAP_SYS_RESOURCE there: that is why root needs cgroups.
///
/// Limits are only ever lowered: a hard limit already below the request is kept.
pub fn apply_rlimits(limits: &Limits) -> Result<(), Errno> {
    if let Some(Sourced { value, .. }) = &limits.memory {
        if *value < MIN_MEMORY {
            return Err(Errno::INVAL);
        }
        lower_rlimit(Resource::Data, *value)?;
    }
    if let Some(Sourced { value, .. }) = &limits.pids {
        if *value == 0 {
            return Err(Errno::INVAL);
        }
        lower_rlimit(Resource::Nproc, *value)?;
    }
    if let Some(Sourced { value, .. }) = &limits.cpus {
        if !cpus_valid(*value) {
            return Err(Errno::INVAL);
        }
    }
    Ok(())
}

fn lower_rlimit(resource: Resource, value: u64) -> Result<(), Errno> {
    let cur = rustix::process::getrlimit(resource);
    let new = match cur.maximum {
        Some(max) => value.min(max),
        None => value,
    };
    rustix::process::setrlimit(
        resource,
        Rlimit {
            current: Some(new),
            maximum: Some(new),
        },
    )
}

/// Restricts the calling thread (and so its future children) to the first
/// `count` CPUs it may currently run on ([`affinity_cpus`] says how many).
pub fn restrict_affinity(count: usize) -> Result<(), Errno> {
    let set = rustix::thread::sched_getaffinity(None)?;
    if count >= set.count() as usize {
        return Ok(());
    }
    let mut new = CpuSet::new();
    let mut taken = 0;
    for cpu in 0..CpuSet::MAX_CPU {
        if taken == count {
            break;
        }
        if set.is_set(cpu) {
            new.set(cpu);
            taken += 1;
        }
    }
    rustix::thread::sched_setaffinity(None, &new)
}
