//! One sandbox's cgroup(s), from creation to removal: the directories made under
//! the parents [`super::choose`] picked from the survey ([`super::survey`]), the
//! limits written into them, the sandbox's processes added, and on drop every
//! process left killed and the directories removed.

use super::survey::{HOST_LEAF, ROOT_PARENT, is_real_v2_root, read_words};
use super::{Controller, LimitsError, Mechanism, V1Dir, validate};
use cordon_policy::Limits;
use rustix::process::{Pid, PidfdFlags, Signal};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The CFS period cordon writes (100 ms, the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

// Writing cgroup files.

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    // One write(2): cgroup files take one value per write.
    f.write_all(value.as_bytes())
}

fn write_checked(path: PathBuf, value: &str, action: &'static str) -> Result<(), LimitsError> {
    write_file(&path, value).map_err(|e| LimitsError::io(action, path, e))
}

fn read_pids(path: &Path) -> io::Result<Vec<libc::pid_t>> {
    Ok(fs::read_to_string(path)?
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect())
}

fn mkdir(path: &Path) -> io::Result<()> {
    fs::create_dir(path)
}

/// Creates `path` unless it already exists.
fn ensure_dir(path: &Path) -> Result<(), LimitsError> {
    match mkdir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(LimitsError::io("create", path, e)),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Enables `controllers` in `dir`'s `cgroup.subtree_control`. If `dir` holds
/// processes and `evacuate`, first moves them all into the leaf `dir/cordon-host`:
/// the "no internal processes" rule forbids domain controllers (memory) for the
/// children of a populated cgroup, and enabling only threaded ones (pids, cpu)
/// would succeed but turn the children into invalid domains that cannot hold
/// processes (EOPNOTSUPP). So the evacuation comes first, whatever the kernel
/// would accept.
fn enable_controllers(
    dir: &Path,
    controllers: &[Controller],
    evacuate: bool,
) -> Result<(), LimitsError> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = read_words(&control);
    let missing: Vec<Controller> = controllers
        .iter()
        .copied()
        .filter(|c| !enabled.iter().any(|w| w == c.name()))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if evacuate && !is_real_v2_root(dir) {
        evacuate_into_leaf(dir)?;
    }
    let line = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    write_checked(control, &line, "enable controllers in")
}

/// Moves every process of `dir` into `dir/cordon-host`.
fn evacuate_into_leaf(dir: &Path) -> Result<(), LimitsError> {
    let procs = dir.join("cgroup.procs");
    let mut pids = read_pids(&procs).map_err(|e| LimitsError::io("read", procs.clone(), e))?;
    if pids.is_empty() {
        return Ok(());
    }
    let leaf = dir.join(HOST_LEAF);
    ensure_dir(&leaf)?;
    let leaf_procs = leaf.join("cgroup.procs");
    // New processes may appear while moving (a fork in flight): repeat.
    for _ in 0..20 {
        for pid in &pids {
            match write_file(&leaf_procs, &pid.to_string()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(LimitsError::io("move a process into", leaf_procs, e)),
            }
        }
        pids = read_pids(&procs).map_err(|e| LimitsError::io("read", procs.clone(), e))?;
        if pids.is_empty() {
            break;
        }
    }
    Ok(())
}

/// The cgroup(s) of one sandbox. Dropping it SIGKILLs every process left in it and
/// removes the directories.
#[derive(Debug)]
pub struct SandboxCgroup {
    v2: bool,
    /// The sandbox's cgroup directories: one for v2, one per hierarchy for v1.
    dirs: Vec<PathBuf>,
}

impl SandboxCgroup {
    /// Creates the sandbox's cgroup(s) named `name` under `mechanism`'s parents and
    /// writes the limits. `Ok(None)` for the mechanisms without cgroups. Call it in
    /// the host-side parent before the sandbox's first process may fork.
    pub fn create(
        mechanism: &Mechanism,
        limits: &Limits,
        name: &str,
    ) -> Result<Option<SandboxCgroup>, LimitsError> {
        validate(limits)?;
        if !valid_name(name) {
            return Err(LimitsError::InvalidName(name.to_string()));
        }
        match mechanism {
            Mechanism::None | Mechanism::Rlimits => Ok(None),
            Mechanism::CgroupV2 {
                dir, controllers, ..
            } => Self::create_v2(dir, controllers, limits, name).map(Some),
            Mechanism::CgroupV1 { dirs, .. } => Self::create_v1(dirs, limits, name).map(Some),
        }
    }

    fn create_v2(
        parent: &Path,
        controllers: &[Controller],
        limits: &Limits,
        name: &str,
    ) -> Result<SandboxCgroup, LimitsError> {
        if let Some(grand) = parent
            .parent()
            .filter(|g| is_real_v2_root(g) && parent.file_name().is_some_and(|n| n == ROOT_PARENT))
        {
            // Root's case: <root>/cordon, created on first use.
            enable_controllers(grand, controllers, false)?;
            ensure_dir(parent)?;
        }
        enable_controllers(parent, controllers, true)?;
        let dir = parent.join(name);
        make_fresh(&dir)?;
        let cg = SandboxCgroup {
            v2: true,
            dirs: vec![dir.clone()],
        };
        for c in Controller::ALL {
            if controllers.contains(&c) {
                write_limit(&dir, c, limits, true)?;
            }
        }
        Ok(cg)
    }

    fn create_v1(
        dirs: &[V1Dir],
        limits: &Limits,
        name: &str,
    ) -> Result<SandboxCgroup, LimitsError> {
        let mut cg = SandboxCgroup {
            v2: false,
            dirs: Vec::new(),
        };
        for V1Dir {
            controller,
            dir: parent,
        } in dirs
        {
            let dir = parent.join(name);
            make_fresh(&dir)?;
            cg.dirs.push(dir.clone());
            write_limit(&dir, *controller, limits, false)?;
        }
        Ok(cg)
    }

    /// Moves process `pid` (all its threads) into the sandbox's cgroup(s).
    pub fn add_pid(&self, pid: libc::pid_t) -> Result<(), LimitsError> {
        for dir in &self.dirs {
            write_checked(
                dir.join("cgroup.procs"),
                &pid.to_string(),
                "add a process to",
            )?;
        }
        Ok(())
    }

    /// The sandbox's cgroup directories (one for v2, one per controller for v1).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The processes currently in the sandbox's cgroup(s).
    pub fn pids(&self) -> Vec<libc::pid_t> {
        let mut all: Vec<libc::pid_t> = self
            .dirs
            .iter()
            .flat_map(|d| read_pids(&d.join("cgroup.procs")).unwrap_or_default())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// How many times the kernel's OOM killer fired in the sandbox, when known
    /// (`memory.events` on v2, `memory.oom_control` on v1).
    pub fn oom_kills(&self) -> Option<u64> {
        for dir in &self.dirs {
            for file in ["memory.events", "memory.oom_control"] {
                if let Some(kills) = fs::read_to_string(dir.join(file))
                    .ok()
                    .and_then(|text| oom_kill_count(&text))
                {
                    return Some(kills);
                }
            }
        }
        None
    }

    /// SIGKILLs every process in the sandbox's cgroup(s) until none is left
    /// (`cgroup.kill` on v2 when the kernel has it, 5.14+).
    pub fn kill_all(&self) -> Result<(), LimitsError> {
        if self.v2 {
            if let Some(dir) = self.dirs.first() {
                let kill = dir.join("cgroup.kill");
                if kill.exists() {
                    let _ = write_file(&kill, "1");
                }
            }
        }
        let started = Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(5) {
                return Err(LimitsError::Unkillable(self.dirs[0].clone()));
            }
            self.kill_listed(&pids);
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// SIGKILLs `pids`, guarding against pid reuse: a pidfd pins each process
    /// first, and only those still listed in the cgroup afterwards are signalled.
    fn kill_listed(&self, pids: &[libc::pid_t]) {
        let pinned: Vec<(Pid, Option<std::os::fd::OwnedFd>)> = pids
            .iter()
            .filter_map(|&pid| Pid::from_raw(pid))
            .map(|pid| {
                (
                    pid,
                    rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok(),
                )
            })
            .collect();
        let still = self.pids();
        for (pid, pidfd) in pinned {
            if still.contains(&pid.as_raw_pid()) {
                let _ = match pidfd {
                    Some(pidfd) => rustix::process::pidfd_send_signal(pidfd, Signal::KILL),
                    // No pidfd support (kernel < 5.3): plain kill.
                    None => rustix::process::kill_process(pid, Signal::KILL),
                };
            }
        }
    }

    /// Kills what remains and removes the directories (retrying while the kernel
    /// finishes tearing the processes down).
    fn destroy(&mut self) -> Result<(), LimitsError> {
        let killed = self.kill_all();
        let mut result = killed;
        for dir in self.dirs.drain(..) {
            let started = Instant::now();
            loop {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY)
                            && started.elapsed() < Duration::from_secs(2) =>
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => {
                        if result.is_ok() {
                            result = Err(LimitsError::io("remove", dir, e));
                        }
                        break;
                    }
                }
            }
        }
        result
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        let _ = self.destroy();
    }
}

/// Writes `limits`' value for `controller` (if it has one) into the sandbox's cgroup
/// `dir`: a cgroup v2 directory when `v2`, else one of the controller's v1 hierarchy.
fn write_limit(
    dir: &Path,
    controller: Controller,
    limits: &Limits,
    v2: bool,
) -> Result<(), LimitsError> {
    match controller {
        Controller::Memory => {
            let Some(m) = &limits.memory else {
                return Ok(());
            };
            let v = m.value.to_string();
            if v2 {
                write_checked(dir.join("memory.max"), &v, "set memory.max in")?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write_checked(swap, "0", "set memory.swap.max in")?;
                }
            } else {
                write_checked(
                    dir.join("memory.limit_in_bytes"),
                    &v,
                    "set memory.limit_in_bytes in",
                )?;
                // memsw (memory + swap) must be >= the memory limit: set after it.
                let memsw = dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write_checked(memsw, &v, "set memory.memsw.limit_in_bytes in")?;
                }
            }
        }
        Controller::Pids => {
            if let Some(p) = &limits.pids {
                write_checked(
                    dir.join("pids.max"),
                    &p.value.to_string(),
                    "set pids.max in",
                )?;
            }
        }
        Controller::Cpu => {
            let Some(c) = &limits.cpus else {
                return Ok(());
            };
            let quota = cpu_quota_us(c.value);
            if v2 {
                let value = match quota {
                    Some(q) => format!("{q} {CPU_PERIOD_US}"),
                    None => format!("max {CPU_PERIOD_US}"),
                };
                write_checked(dir.join("cpu.max"), &value, "set cpu.max in")?;
            } else if let Some(q) = quota {
                write_checked(
                    dir.join("cpu.cfs_period_us"),
                    &CPU_PERIOD_US.to_string(),
                    "set cpu.cfs_period_us in",
                )?;
                write_checked(
                    dir.join("cpu.cfs_quota_us"),
                    &q.to_string(),
                    "set cpu.cfs_quota_us in",
                )?;
            }
        }
    }
    Ok(())
}

/// Creates `dir`; a leftover one from a crashed run (same name, so the same pid)
/// is removed first if it is empty.
fn make_fresh(dir: &Path) -> Result<(), LimitsError> {
    match mkdir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let procs = read_pids(&dir.join("cgroup.procs")).unwrap_or_default();
            if !procs.is_empty() || fs::remove_dir(dir).is_err() {
                return Err(LimitsError::Exists(dir.to_path_buf()));
            }
            mkdir(dir).map_err(|e| LimitsError::io("create", dir, e))
        }
        Err(e) => Err(LimitsError::io("create", dir, e)),
    }
}

/// CFS quota in µs per 100 ms period for `cpus`; `None` means no limit (so many
/// CPUs that the quota would exceed what this machine has).
fn cpu_quota_us(cpus: f64) -> Option<u64> {
    let online = rustix::thread::sched_getaffinity(None)
        .map(|s| s.count() as f64)
        .unwrap_or(1.0)
        .max(1.0);
    let possible = fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| {
            s.trim()
                .rsplit(['-', ','])
                .next()
                .and_then(|n| n.parse::<f64>().ok())
        })
        .map(|n| n + 1.0)
        .unwrap_or(online)
        .max(online);
    if cpus >= possible {
        return None;
    }
    Some(((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000))
}

/// The `oom_kill` count of a cgroup's `memory.events` (v2) or
/// `memory.oom_control` (v1), if the text has one.
pub fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}
