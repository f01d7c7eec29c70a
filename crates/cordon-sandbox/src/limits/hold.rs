//! Whether each requested limit holds here, and how: cordon runs only with limits
//! it enforces, unless the user accepts best effort (`--allow-degraded limits`).
//!
//! - memory: only a cgroup bounds a sandbox's total. Without one, RLIMIT_DATA is
//!   per process and misses shared mappings, tmpfs files and memfds, so the limit
//!   cannot be enforced (RLIMIT_AS would not help: it too is per process, and V8
//!   reserves far more address space than it uses).
//! - pids: a cgroup, or RLIMIT_NPROC counted in the sandbox's user namespace;
//!   the kernel does not apply that rlimit to uid 0, so root needs a cgroup.
//! - cpus: a cgroup's quota, or CPU affinity to `floor(cpus)` whole CPUs, which
//!   seccomp keeps the sandbox from changing; below one CPU only a cgroup holds.

use super::{Controller, Mechanism, survey};
use cordon_backend::{Assessment, Hold, LimitKind};
use cordon_policy::{Limits, Origin, size_text};

/// The limits of `limits` under `mechanism`, in `Controller::ALL` order. Reads the
/// cgroup survey again only when a limit does not hold (for the fix).
pub fn assess(limits: &Limits, mechanism: &Mechanism) -> Vec<Assessment> {
    let euid = rustix::process::geteuid().as_raw();
    let available = available_cpus();
    let mut fix: Option<String> = None;
    let mut fix = || fix.get_or_insert_with(|| cgroup_fix(&survey())).clone();
    let mut out = Vec::new();
    let explicit = |origin: &Origin| *origin != Origin::Default;
    if let Some(m) = &limits.memory {
        let flag = format!("--memory {}", size_text(m.value));
        let hold = if mechanism.covers(Controller::Memory) {
            Hold::Enforced {
                how: format!(
                    "{}: a total for the sandbox (page cache, tmpfs and shared memory included)",
                    cgroup_kind(mechanism, "memory.max", "memory.limit_in_bytes")
                ),
            }
        } else {
            Hold::Unenforceable {
                why: format!(
                    "no cgroup memory controller is available to uid {euid}, and nothing else bounds a \
                     sandbox's total (RLIMIT_DATA is per process and misses shared memory, tmpfs files \
                     and memfds)"
                ),
                fix: fix(),
                best_effort: format!(
                    "RLIMIT_DATA of {0} per process, /tmp and /dev/shm of {0} each; shared memory, \
                     memfds and several processes together can exceed it",
                    size_text(m.value)
                ),
            }
        };
        out.push(Assessment {
            limit: LimitKind::Memory,
            flag,
            explicit: explicit(&m.origin),
            hold,
        });
    }
    if let Some(p) = &limits.pids {
        let flag = format!("--pids {}", p.value);
        let hold = if mechanism.covers(Controller::Pids) {
            Hold::Enforced {
                how: format!(
                    "{}: a total for the sandbox",
                    cgroup_kind(mechanism, "pids.max", "pids.max")
                ),
            }
        } else if euid == 0 {
            Hold::Unenforceable {
                why: format!(
                    "{}, and the kernel does not apply RLIMIT_NPROC to uid 0 (the sandbox's \
                     user is root on the host)",
                    if explicit(&p.origin) {
                        "no cgroup pids controller is available"
                    } else {
                        "the built-in default is an rlimit"
                    }
                ),
                // The built-in default never goes to a cgroup (joining one costs
                // milliseconds on cgroup v1); a limit the user asks for does.
                fix: if explicit(&p.origin) {
                    fix()
                } else {
                    "pass --pids N (or set \"pids\" in your config): a limit you ask for goes to \
                     a cgroup where one can be had"
                        .into()
                },
                best_effort: "none: RLIMIT_NPROC is set but the kernel ignores it for root".into(),
            }
        } else {
            Hold::Enforced {
                how: "RLIMIT_NPROC: processes and threads counted in the sandbox's own user \
                      namespace (Linux 5.14+; older kernels count all of the user's)"
                    .into(),
            }
        };
        out.push(Assessment {
            limit: LimitKind::Pids,
            flag,
            explicit: explicit(&p.origin),
            hold,
        });
    }
    if let Some(c) = &limits.cpus {
        let flag = format!("--cpus {}", c.value);
        let hold = if mechanism.covers(Controller::Cpu) {
            Hold::Enforced {
                how: format!(
                    "{}: {} CPU-seconds per second, over any CPUs",
                    cgroup_kind(mechanism, "cpu.max", "cpu.cfs_quota_us"),
                    c.value
                ),
            }
        } else {
            match affinity_cpus(c.value, available) {
                None if c.value >= available as f64 => Hold::Enforced {
                    how: format!("no limit needed: this machine gives cordon {available} CPU(s)"),
                },
                Some(n) if c.value >= 1.0 => Hold::Enforced {
                    how: format!(
                        "CPU affinity to {n} whole CPU(s) (without a cgroup, {} rounds down), \
                         which seccomp keeps the sandbox from changing",
                        c.value
                    ),
                },
                _ => Hold::Unenforceable {
                    why: "a fraction of a CPU needs a cgroup cpu controller, and none is available"
                        .into(),
                    fix: fix(),
                    best_effort: "CPU affinity to 1 CPU (the sandbox cannot change it)".into(),
                },
            }
        };
        out.push(Assessment {
            limit: LimitKind::Cpu,
            flag,
            explicit: explicit(&c.origin),
            hold,
        });
    }
    out
}

/// How many CPUs the affinity fallback restricts the sandbox to for `cpus`:
/// `floor(cpus)`, at least 1; `None` when that is all the `available` ones.
pub fn affinity_cpus(cpus: f64, available: usize) -> Option<usize> {
    let whole = if cpus >= 1_000_000.0 {
        1_000_000
    } else if cpus.is_finite() && cpus >= 1.0 {
        cpus.floor() as usize
    } else {
        1
    };
    (whole < available).then_some(whole)
}

/// The CPUs this process may run on.
pub fn available_cpus() -> usize {
    rustix::thread::sched_getaffinity(None)
        .map(|s| s.count() as usize)
        .unwrap_or(1)
        .max(1)
}

fn cgroup_kind(mechanism: &Mechanism, v2_file: &str, v1_file: &str) -> String {
    match mechanism {
        Mechanism::CgroupV1 { .. } => format!("cgroup v1 {v1_file}"),
        _ => format!("cgroup v2 {v2_file}"),
    }
}

/// How to get cgroup limits on this host, for `cordon doctor` and for a refusal.
pub fn cgroup_fix(s: &super::CgroupSurvey) -> String {
    let root = s.euid == 0;
    let v1_host = s.v1.iter().any(|v| v.mount.is_some()) && s.v2.usable.is_empty();
    let systemd_user = systemd_user_manager(s.euid);
    let scope = "run cordon in a delegated systemd scope: `systemd-run --user --scope -p Delegate=yes cordon run ...` \
                 (cordon moves the scope's processes into a cordon-host/ leaf to enable the controllers)";
    if v1_host && !root {
        format!(
            "this host keeps the controllers on cgroup v1, which only root can write: run cordon as root, \
             or boot with systemd.unified_cgroup_hierarchy=1 and {scope}{}",
            if systemd_user {
                ""
            } else {
                " (no systemd user manager runs for you now)"
            }
        )
    } else if v1_host {
        "mount the cgroup v1 controllers memory, pids and cpu read-write, or boot with cgroup v2 \
         (systemd.unified_cgroup_hierarchy=1)"
            .into()
    } else if !root {
        format!(
            "{scope}, or delegate more controllers to user sessions: `sudo systemctl edit user@.service` \
             with [Service] Delegate=memory pids cpu{}",
            if systemd_user {
                ""
            } else {
                " (no systemd user manager runs for you now: log in through systemd-logind, or run cordon as root)"
            }
        )
    } else {
        "enable the controllers at the cgroup v2 root: `echo +memory +pids +cpu > /sys/fs/cgroup/cgroup.subtree_control`"
            .into()
    }
}

/// Whether a systemd user manager runs for `uid` (its private socket exists).
fn systemd_user_manager(uid: u32) -> bool {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| format!("/run/user/{uid}").into());
    dir.join("systemd/private").exists()
}

/// For `cordon doctor`: one line per kind of limit, saying how a limit of that
/// kind would hold under `mechanism` (chosen for all three).
pub fn controller_summary(mechanism: &Mechanism) -> Vec<String> {
    use cordon_policy::Sourced;
    let origin = Origin::Flag {
        flag: "doctor".into(),
    };
    let sample = Limits {
        memory: Some(Sourced::new(super::MIN_MEMORY, origin.clone())),
        pids: Some(Sourced::new(1, origin)),
        cpus: None,
    };
    let mut lines: Vec<String> = assess(&sample, mechanism)
        .into_iter()
        .map(|a| {
            let controller = Controller::from(a.limit);
            match a.hold {
                Hold::Enforced { how } => format!("{controller}: {how}"),
                Hold::Unenforceable { why, .. } => format!(
                    "{controller}: cannot be enforced ({why}); cordon refuses --{controller} unless --allow-degraded limits"
                ),
            }
        })
        .collect();
    lines.push(if mechanism.covers(Controller::Cpu) {
        "cpu: a cgroup quota, fractions included".into()
    } else {
        "cpu: CPU affinity to whole CPUs (floor(cpus)), which seccomp keeps the sandbox from changing; \
         cordon refuses --cpus below 1 unless --allow-degraded limits"
            .into()
    });
    lines
}
