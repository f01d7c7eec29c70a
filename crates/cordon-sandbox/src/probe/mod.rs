//! `cordon doctor`: which isolation layers this host offers, and for each missing
//! one, why and how to fix it. See `docs/doctor.md`.
//!
//! Every probe runs in a forked child (its own process group) that reports one
//! JSON [`Outcome`] through a pipe; the parent polls the pipe with a deadline and
//! SIGKILLs the group on expiry, so `doctor` never hangs. The children are spawned
//! together and run concurrently.
//!
//! Call [`run_all`] from a single-threaded process if you can: the children
//! allocate (safe with glibc and musl, whose fork resets the allocator's locks,
//! but not with every allocator).

mod child;
mod host;
mod kvm;
mod lsm;
mod ns;

#[cfg(test)]
mod tests;

pub use ns::diagnose_userns_failure;

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// One isolation layer and what the probe found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// Stable identifier for scripts: `userns`, `mountns`, `pidns`, `netns`,
    /// `landlock`, `seccomp`, `cgroups` (and `kvm`, `qemu` of [`run_vm_backend`]).
    pub id: String,
    /// Human name.
    pub name: String,
    /// The layer works.
    pub ok: bool,
    /// cordon (its default OS backend) refuses to run without this layer.
    pub required: bool,
    /// What was found (versions, paths, mechanism).
    pub detail: String,
    /// Why the layer is missing, when it is.
    pub cause: Option<String>,
    /// How to fix it, when it is missing.
    pub fix: Option<String>,
    /// How long the probe took.
    pub elapsed_ms: u64,
}

impl Layer {
    /// A layer cordon needs that does not work here.
    pub fn is_missing_required(&self) -> bool {
        self.required && !self.ok
    }
}

/// Everything `cordon doctor` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Every required layer works.
    pub ok: bool,
    /// `uname -r`.
    pub kernel: String,
    /// Effective uid the probes ran as.
    pub uid: u32,
    /// Wall time of the whole report.
    pub elapsed_ms: u64,
    pub layers: Vec<Layer>,
}

impl Report {
    /// The layer with this id.
    pub fn layer(&self, id: &str) -> Option<&Layer> {
        self.layers.iter().find(|l| l.id == id)
    }

    /// The required layers that are missing.
    pub fn missing_required(&self) -> impl Iterator<Item = &Layer> {
        self.layers.iter().filter(|l| l.is_missing_required())
    }
}

/// What a probe child reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub ok: bool,
    pub detail: String,
    pub cause: Option<String>,
    pub fix: Option<String>,
}

impl Outcome {
    pub fn ok(detail: impl Into<String>) -> Outcome {
        Outcome {
            ok: true,
            detail: detail.into(),
            cause: None,
            fix: None,
        }
    }

    pub fn fail(
        detail: impl Into<String>,
        cause: impl Into<String>,
        fix: impl Into<String>,
    ) -> Outcome {
        Outcome {
            ok: false,
            detail: detail.into(),
            cause: Some(cause.into()),
            fix: Some(fix.into()),
        }
    }
}

/// One probe: identity, and the function its child runs.
struct Probe {
    id: &'static str,
    name: &'static str,
    required: bool,
    run: Box<dyn FnOnce() -> Outcome>,
}

/// What `cordon doctor` checks: the layers of the OS backend, the one backend
/// this release has.
fn probes() -> Vec<Probe> {
    vec![
        Probe {
            id: "userns",
            name: "user namespace",
            required: true,
            run: Box::new(ns::userns),
        },
        Probe {
            id: "mountns",
            name: "mount namespace",
            required: true,
            run: Box::new(ns::mountns),
        },
        Probe {
            id: "pidns",
            name: "pid namespace",
            required: true,
            run: Box::new(ns::pidns),
        },
        Probe {
            id: "netns",
            name: "network namespace",
            required: true,
            run: Box::new(ns::netns),
        },
        Probe {
            id: "landlock",
            name: "Landlock",
            required: true,
            run: Box::new(lsm::landlock),
        },
        Probe {
            id: "seccomp",
            name: "seccomp",
            required: true,
            run: Box::new(lsm::seccomp),
        },
        Probe {
            id: "cgroups",
            name: "resource limits",
            required: false,
            run: Box::new(cgroups),
        },
    ]
}

/// What a VM backend would need: KVM that runs ordinary guests at hardware
/// speed, and QEMU. Not part of `cordon doctor`'s report: this release has no VM
/// backend, and advice for one would name what does not exist.
fn vm_backend_probes(timeout: Duration) -> Vec<Probe> {
    // The KVM speed test interrupts itself well before the probe's deadline.
    let kvm_budget = (timeout / 4).min(kvm::BUDGET);
    vec![
        Probe {
            id: "kvm",
            name: "KVM",
            required: false,
            run: Box::new(move || kvm::kvm(kvm_budget)),
        },
        Probe {
            id: "qemu",
            name: "QEMU",
            required: false,
            run: Box::new(kvm::qemu),
        },
    ]
}

/// Runs every probe of `cordon doctor`, concurrently, each in a child killed
/// after `timeout_per_probe`. Never hangs longer than about that.
pub fn run_all(timeout_per_probe: Duration) -> Report {
    let started = Instant::now();
    let layers = run_probes(probes(), timeout_per_probe);
    Report {
        ok: !layers.iter().any(Layer::is_missing_required),
        kernel: host::kernel_release(),
        uid: rustix::process::geteuid().as_raw(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        layers,
    }
}

/// The probes a VM backend will need (KVM at hardware speed, QEMU), run as
/// [`run_all`] runs its own; none is required by anything in this release.
pub fn run_vm_backend(timeout_per_probe: Duration) -> Vec<Layer> {
    run_probes(vm_backend_probes(timeout_per_probe), timeout_per_probe)
}

fn run_probes(probes: Vec<Probe>, timeout_per_probe: Duration) -> Vec<Layer> {
    let running: Vec<_> = probes
        .into_iter()
        .map(|p| {
            let child = child::spawn(timeout_per_probe, p.run);
            (p.id, p.name, p.required, child)
        })
        .collect();
    running
        .into_iter()
        .map(|(id, name, required, child)| {
            let (outcome, elapsed) = match child {
                Ok(c) => c.finish(),
                Err(e) => (
                    Outcome::fail(
                        format!("cannot start the probe: {e}"),
                        "fork or pipe failed (out of processes or file descriptors?)",
                        "retry; check `ulimit -u` and `ulimit -n`",
                    ),
                    Duration::ZERO,
                ),
            };
            Layer {
                id: id.into(),
                name: name.into(),
                ok: outcome.ok,
                required,
                detail: outcome.detail,
                cause: outcome.cause,
                fix: outcome.fix,
                elapsed_ms: elapsed.as_millis() as u64,
            }
        })
        .collect()
}

/// The cgroups probe: which controllers cordon can use, where, and the mechanism
/// it will pick for `--memory --pids --cpus`.
fn cgroups() -> Outcome {
    use crate::limits::{Controller, Mechanism, choose_from, survey};
    let s = survey();
    let mechanism = choose_from(&s, &Controller::ALL);
    let mut detail = String::new();
    match (&s.v2.mount, &s.v2.dir) {
        (None, _) => detail.push_str("cgroup v2: not mounted"),
        (Some(_), Some(dir)) if !s.v2.usable.is_empty() => {
            let names: Vec<&str> = s.v2.usable.iter().map(|c| c.name()).collect();
            let _ = write!(
                detail,
                "cgroup v2: {} usable under {}",
                names.join(", "),
                dir.display()
            );
        }
        (Some(m), _) => {
            let why =
                s.v2.problem
                    .clone()
                    .unwrap_or_else(|| format!("no controller usable at {}", m.display()));
            let _ = write!(detail, "cgroup v2: {why}");
        }
    }
    let v1: Vec<String> =
        s.v1.iter()
            .filter(|v| v.usable)
            .filter_map(|v| {
                v.dir
                    .as_ref()
                    .map(|d| format!("{} at {}", v.controller, d.display()))
            })
            .collect();
    if v1.is_empty() {
        let mounted = s.v1.iter().any(|v| v.mount.is_some());
        detail.push_str(if mounted {
            "\ncgroup v1: not writable"
        } else {
            "\ncgroup v1: not mounted"
        });
    } else {
        let _ = write!(detail, "\ncgroup v1: {} (writable)", v1.join(", "));
    }
    let _ = write!(detail, "\nlimits will use: {}", mechanism.describe());
    for line in crate::limits::controller_summary(&mechanism) {
        let _ = write!(detail, "\n  {line}");
    }
    let all_cgroup = match &mechanism {
        Mechanism::CgroupV2 { fallback, .. } | Mechanism::CgroupV1 { fallback, .. } => {
            fallback.is_empty()
        }
        _ => false,
    };
    if all_cgroup {
        return Outcome::ok(detail);
    }
    let mut causes: Vec<String> = Vec::new();
    if let Some(p) = &s.v2.problem {
        causes.push(format!("cgroup v2: {p}"));
    }
    let v1_problems: Vec<String> =
        s.v1.iter()
            .filter(|v| !v.usable && v.mount.is_some())
            .filter_map(|v| v.problem.clone())
            .collect();
    if !v1_problems.is_empty() {
        causes.push(format!("cgroup v1: {}", v1_problems.join("; ")));
    }
    if causes.is_empty() {
        causes.push("no cgroup hierarchy offers memory, pids and cpu to this user".into());
    }
    let fix = crate::limits::cgroup_fix(&s);
    Outcome {
        ok: false,
        detail,
        cause: Some(causes.join("\n")),
        fix: Some(fix),
    }
}

/// A readable table: one line per layer with ✓/✗, then causes and fixes indented.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cordon doctor: Linux {}, uid {}, {} ms",
        report.kernel, report.uid, report.elapsed_ms
    );
    let width = report
        .layers
        .iter()
        .map(|l| l.name.chars().count())
        .max()
        .unwrap_or(0);
    for l in &report.layers {
        let mark = if l.ok { "✓" } else { "✗" };
        let need = if l.required { "required" } else { "optional" };
        let mut lines = l.detail.lines();
        let first = lines.next().unwrap_or("");
        let _ = writeln!(out, "  {mark} {:<width$}  {need}  {first}", l.name);
        let indent = " ".repeat(4 + width + 2 + need.len() + 2);
        for more in lines {
            let _ = writeln!(out, "{indent}{more}");
        }
        for (label, text) in [("cause", &l.cause), ("fix", &l.fix)] {
            if let Some(text) = text {
                let mut lines = text.lines();
                let _ = writeln!(out, "      {label:<5}: {}", lines.next().unwrap_or(""));
                for more in lines {
                    let _ = writeln!(out, "             {more}");
                }
            }
        }
    }
    let missing: Vec<&str> = report.missing_required().map(|l| l.name.as_str()).collect();
    if missing.is_empty() {
        let _ = writeln!(out, "All required layers work: cordon can run here.");
    } else {
        let _ = writeln!(
            out,
            "Missing required layers: {}. cordon refuses to run until they are fixed (or an explicit degraded mode is chosen).",
            missing.join(", ")
        );
    }
    out
}
