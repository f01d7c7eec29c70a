//! `cordon doctor`'s VM section: what `--backend vm` would use here (the
//! accelerator, QEMU, the kernel), whether it can run, and what is degraded.

use crate::image::find_kernel;
use crate::snapshot;
use crate::vm::accel_from;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// What `--backend vm` would use here.
#[derive(Debug, Clone, Serialize)]
pub struct VmReport {
    /// `--backend vm` can run here (QEMU and a kernel found).
    pub ready: bool,
    /// `kvm` or `tcg`, and why.
    pub accelerator: &'static str,
    pub accelerator_why: String,
    /// QEMU's path and version, as `qemu-system-x86_64 --version` says.
    pub qemu: Option<String>,
    /// The kernel image booted, and its release.
    pub kernel: Option<String>,
    /// Whether sessions restore a template snapshot (`on ...`), or why not.
    pub snapshots: String,
    /// How the view reaches the guest: virtiofs (virtiofsd's path) or 9p, and why.
    pub share: String,
    /// What keeps `--backend vm` from running, each with its fix.
    pub problems: Vec<String>,
    /// What runs, but less well than it could.
    pub degraded: Vec<String>,
    /// How the VM backend holds `--pids`, `--memory` and `--cpus`.
    pub limits: &'static str,
}

/// How the VM backend holds the limits, whatever the host's cgroups (see
/// `VmBackend::assess_limits`; `cordon policy --backend vm` says it for a
/// policy).
const LIMITS: &str = "pids: cgroup v2 of the guest (pids.max, per command); \
    memory: cgroup v2 of the guest (memory.max, per command; the guest's /tmp no larger); \
    cpu: QEMU's sandbox, as the OS backend's";

/// Probes what the VM backend would use (each probe in a child, with a
/// deadline, as the other probes of `cordon doctor`).
/// What the VM backend would use here; `kernel` is the one the user's config
/// names (`vm_kernel`), if it names one.
pub fn report(
    kernel: Option<&std::path::Path>,
    share: Option<&cordon_policy::Sourced<cordon_policy::VmShare>>,
) -> VmReport {
    let probes = cordon_sandbox::probe::run_vm_backend(Duration::from_secs(2));
    let accel = accel_from(&probes);
    let mut problems = Vec::new();
    let mut degraded = Vec::new();
    let qemu = probes.iter().find(|l| l.id == "qemu");
    let qemu_text = match qemu {
        Some(l) if l.ok => Some(l.detail.clone()),
        Some(l) => {
            problems.push(format!(
                "{}: {}",
                l.detail,
                l.fix.as_deref().unwrap_or("install QEMU")
            ));
            None
        }
        None => {
            problems.push("QEMU was not probed".into());
            None
        }
    };
    let named = kernel.is_some();
    let kernel = match find_kernel(kernel) {
        Ok(k) => Some(format!(
            "{} ({}{})",
            k.image.display(),
            k.release.as_deref().unwrap_or("release unknown"),
            if named { ", named by vm_kernel" } else { "" }
        )),
        Err(e) => {
            problems.push(format!(
                "{e}: install one (`sudo apt-get install linux-image-amd64`)"
            ));
            None
        }
    };
    if !accel.kvm {
        degraded.push(
            "no KVM (above): QEMU emulates the CPU (TCG), isolated all the same, but a boot \
             takes seconds and code runs several times slower"
                .into(),
        );
    }
    let snapshots = match crate::backend::session_qemu() {
        Some(qemu) => snapshot_state(&qemu),
        None => "off: no QEMU".to_string(),
    };
    if let Some(why) = snapshots.strip_prefix("off: ") {
        degraded.push(format!(
            "no memory snapshots: {why}; every session boots its VM cold"
        ));
    }
    let share = match crate::share::choose(share) {
        Ok(crate::share::ShareKind::Virtiofs(virtiofsd)) => {
            format!("virtiofs ({}, in QEMU's sandbox)", virtiofsd.display())
        }
        Ok(crate::share::ShareKind::NineP) if crate::share::find_virtiofsd().is_some() => {
            format!(
                "9p (QEMU's own server, as {} says)",
                share.map_or(String::new(), |s| s.origin.to_string())
            )
        }
        Ok(crate::share::ShareKind::NineP) => {
            degraded.push(
                "no virtiofsd: the view is served over 9p, several times slower on many \
                 small files (install it: `cargo install virtiofsd`, with libseccomp-dev \
                 and libcap-ng-dev)"
                    .into(),
            );
            "9p (QEMU's own server)".to_string()
        }
        Err(e) => {
            problems.push(e);
            "none".to_string()
        }
    };
    degraded.push(
        "--net host is refused with --backend vm: the guest's network is the egress broker's \
         (allowlist), relayed over the VM's channel"
            .into(),
    );
    VmReport {
        ready: problems.is_empty(),
        accelerator: if accel.kvm { "kvm" } else { "tcg" },
        accelerator_why: accel.why.trim_start_matches("TCG: ").to_string(),
        qemu: qemu_text,
        kernel,
        snapshots,
        share,
        problems,
        degraded,
        limits: LIMITS,
    }
}

/// `on (...)` when sessions restore templates with `qemu`, else `off: why`.
pub fn snapshot_state(qemu: &Path) -> String {
    let cache = match crate::image::cache_dir() {
        Ok(dir) => dir,
        Err(e) => return format!("off: {e}"),
    };
    match snapshot::Support::of(qemu, &cache) {
        snapshot::Support::Available {
            version,
            mapped_ram,
            ..
        } => format!(
            "on (QEMU {}{}): a session restores its configuration's template, made by \
             `cordon vm setup` or the first run",
            version.short(),
            if mapped_ram { ", mapped-ram" } else { "" }
        ),
        snapshot::Support::Unavailable(why) => format!("off: {why}"),
    }
}

/// The section as `cordon doctor` prints it.
pub fn render_text(report: &VmReport) -> String {
    let mut out = String::new();
    let mark = if report.ready { '✓' } else { '✗' };
    let verdict = if report.ready {
        "--backend vm can run here"
    } else {
        "--backend vm cannot run here"
    };
    let _ = writeln!(out, "VM backend (optional): {mark} {verdict}");
    let _ = writeln!(
        out,
        "  accelerator  {} ({})",
        report.accelerator, report.accelerator_why
    );
    let none = "not found".to_string();
    let _ = writeln!(
        out,
        "  QEMU         {}",
        report.qemu.as_ref().unwrap_or(&none)
    );
    let _ = writeln!(
        out,
        "  kernel       {}",
        report.kernel.as_ref().unwrap_or(&none)
    );
    let _ = writeln!(out, "  snapshots    {}", report.snapshots);
    let _ = writeln!(out, "  file share   {}", report.share);
    let _ = writeln!(out, "  limits       {}", report.limits);
    for problem in &report.problems {
        let _ = writeln!(out, "  missing: {problem}");
    }
    for note in &report.degraded {
        let _ = writeln!(out, "  degraded: {note}");
    }
    out
}
