//! Finding usable cgroups (the survey) and making one per sandbox.

use super::{Controller, LimitsError, Mechanism, V1Dir, validate};
use cordon_policy::Limits;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The leaf cordon moves its own processes into when it must enable controllers
/// in a delegated cgroup that still holds them.
pub const HOST_LEAF: &str = "cordon-host";
/// Under a cgroup v2 root owned by root, sandboxes go in `<root>/cordon/`.
pub const ROOT_PARENT: &str = "cordon";
/// The CFS period cordon writes (100 ms, the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// What the cgroup v2 hierarchy offers this process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V2Survey {
    /// Where cgroup2 is mounted.
    pub mount: Option<PathBuf>,
    /// This process's own cgroup.
    pub own: Option<PathBuf>,
    /// Where sandbox cgroups would be created (when writable).
    pub dir: Option<PathBuf>,
    /// Controllers among memory/pids/cpu that sandboxes under `dir` can use.
    pub usable: Vec<Controller>,
    /// See [`Mechanism::CgroupV2`]'s `evacuate`.
    pub evacuate: bool,
    /// Why v2 is unusable, or why some controllers are missing.
    pub problem: Option<String>,
}

/// What one cgroup v1 controller hierarchy offers this process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Survey {
    pub controller: Controller,
    /// Where the hierarchy holding this controller is mounted.
    pub mount: Option<PathBuf>,
    /// This process's cgroup in that hierarchy: sandboxes go beneath it.
    pub dir: Option<PathBuf>,
    pub usable: bool,
    pub problem: Option<String>,
}

/// Everything [`super::choose`] and `cordon doctor` need to know about cgroups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupSurvey {
    pub euid: u32,
    pub v2: V2Survey,
    /// One entry per controller, in `Controller::ALL` order.
    pub v1: Vec<V1Survey>,
}

/// One line of /proc/self/mountinfo, the fields cordon needs.
struct MountEntry {
    root: PathBuf,
    mount_point: PathBuf,
    fstype: String,
    super_opts: String,
}

fn unescape_mountinfo(field: &str) -> PathBuf {
    // Octal escapes: \040 space, \011 tab, \012 newline, \134 backslash.
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

fn mounts() -> Vec<MountEntry> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?.to_string();
            let _source = right.next()?;
            let super_opts = right.next().unwrap_or("").to_string();
            Some(MountEntry {
                root: unescape_mountinfo(left.get(3)?),
                mount_point: unescape_mountinfo(left.get(4)?),
                fstype,
                super_opts,
            })
        })
        .collect()
}

/// /proc/self/cgroup: (controllers, path) per hierarchy; v2 has empty controllers.
fn own_cgroups() -> Vec<(String, String)> {
    let Ok(text) = fs::read_to_string("/proc/self/cgroup") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?.to_string();
            let path = parts.next()?.to_string();
            Some((controllers, path))
        })
        .collect()
}

/// The directory of cgroup `path` (as in /proc/self/cgroup) in a mount of the
/// hierarchy whose root is `mount_root`.
fn resolve(mount: &MountEntry, path: &str) -> Option<PathBuf> {
    let path = Path::new(path);
    let rel = path.strip_prefix(&mount.root).ok()?;
    Some(if rel.as_os_str().is_empty() {
        mount.mount_point.clone()
    } else {
        mount.mount_point.join(rel)
    })
}

fn writable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) on a NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

fn owner(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| m.uid())
}

fn read_words(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

fn names(cs: &[Controller]) -> String {
    cs.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
}

/// The real root of a v2 hierarchy has no `cgroup.type` (and no limit files).
fn is_real_v2_root(dir: &Path) -> bool {
    !dir.join("cgroup.type").exists()
}

/// Surveys cgroup v2 and v1 for this process. Reads only.
pub fn survey() -> CgroupSurvey {
    let euid = rustix::process::geteuid().as_raw();
    let mounts = mounts();
    let own = own_cgroups();
    let v1: Vec<V1Survey> = Controller::ALL
        .iter()
        .map(|&c| survey_v1(c, &mounts, &own, euid))
        .collect();
    let v2 = survey_v2(&mounts, &own, euid, &v1);
    CgroupSurvey { euid, v2, v1 }
}

fn survey_v1(
    controller: Controller,
    mounts: &[MountEntry],
    own: &[(String, String)],
    euid: u32,
) -> V1Survey {
    let has = |list: &str| list.split(',').any(|w| w == controller.name());
    let mut s = V1Survey {
        controller,
        mount: None,
        dir: None,
        usable: false,
        problem: None,
    };
    let Some(mount) = mounts
        .iter()
        .find(|m| m.fstype == "cgroup" && has(&m.super_opts))
    else {
        s.problem = Some(format!(
            "no cgroup v1 hierarchy has the {controller} controller"
        ));
        return s;
    };
    s.mount = Some(mount.mount_point.clone());
    let Some((_, path)) = own.iter().find(|(list, _)| has(list)) else {
        s.problem = Some(format!("/proc/self/cgroup has no {controller} line"));
        return s;
    };
    let Some(dir) = resolve(mount, path) else {
        s.problem = Some(format!(
            "this process's {controller} cgroup {path} is outside the mounted subtree {}",
            mount.root.display()
        ));
        return s;
    };
    let file = match controller {
        Controller::Memory => "memory.limit_in_bytes",
        Controller::Pids => "pids.max",
        Controller::Cpu => "cpu.cfs_quota_us",
    };
    s.dir = Some(dir.clone());
    if !dir.join(file).exists() && !dir.join("cgroup.procs").exists() {
        s.problem = Some(format!("{} is missing", dir.display()));
    } else if !writable(&dir) {
        s.problem = Some(match owner(&dir) {
            Some(o) if o != euid => format!(
                "{} is owned by uid {o}, not writable by uid {euid}",
                dir.display()
            ),
            _ => format!("{} is not writable (read-only mount?)", dir.display()),
        });
    } else {
        s.usable = true;
    }
    s
}

fn survey_v2(
    mounts: &[MountEntry],
    own: &[(String, String)],
    euid: u32,
    v1: &[V1Survey],
) -> V2Survey {
    let mut s = V2Survey {
        mount: None,
        own: None,
        dir: None,
        usable: Vec::new(),
        evacuate: false,
        problem: None,
    };
    let Some(mount) = mounts.iter().find(|m| m.fstype == "cgroup2") else {
        s.problem = Some("no cgroup2 filesystem is mounted (a cgroup v1-only host)".into());
        return s;
    };
    s.mount = Some(mount.mount_point.clone());
    let Some((_, path)) = own.iter().find(|(list, _)| list.is_empty()) else {
        s.problem = Some("/proc/self/cgroup has no cgroup v2 (0::) line".into());
        return s;
    };
    let Some(own_dir) = resolve(mount, path) else {
        s.problem = Some(format!(
            "this process's cgroup {path} is outside the mounted subtree {}",
            mount.root.display()
        ));
        return s;
    };
    s.own = Some(own_dir.clone());
    let on_v1: Vec<Controller> = v1
        .iter()
        .filter(|v| v.mount.is_some())
        .map(|v| v.controller)
        .collect();

    // Root on a host whose v2 root is mounted: a dedicated `cordon/` under the root.
    // Everyone else: their own (delegated) cgroup, or its parent once cordon moved
    // itself into `cordon-host/`.
    let root_case =
        euid == 0 && is_real_v2_root(&mount.mount_point) && writable(&mount.mount_point);
    let base = if root_case {
        mount.mount_point.clone()
    } else if own_dir.file_name().is_some_and(|n| n == HOST_LEAF) {
        own_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or(own_dir.clone())
    } else {
        own_dir.clone()
    };
    let available: Vec<Controller> = {
        let words = read_words(&base.join("cgroup.controllers"));
        Controller::ALL
            .iter()
            .copied()
            .filter(|c| words.iter().any(|w| w == c.name()))
            .collect()
    };
    let missing: Vec<Controller> = Controller::ALL
        .iter()
        .copied()
        .filter(|c| !available.contains(c))
        .collect();
    let missing_problem = |base: &Path| -> Option<String> {
        if missing.is_empty() {
            return None;
        }
        let v1_held: Vec<Controller> = missing
            .iter()
            .copied()
            .filter(|c| on_v1.contains(c))
            .collect();
        Some(if !v1_held.is_empty() && v1_held.len() == missing.len() {
            format!(
                "{} not available in {} (bound to cgroup v1 hierarchies)",
                names(&missing),
                base.display()
            )
        } else {
            format!(
                "{} not available in {} (its parent does not delegate them)",
                names(&missing),
                base.display()
            )
        })
    };
    if root_case {
        s.dir = Some(base.join(ROOT_PARENT));
        s.usable = available;
        s.problem = missing_problem(&base);
        return s;
    }
    let files_writable = writable(&base)
        && writable(&base.join("cgroup.procs"))
        && writable(&base.join("cgroup.subtree_control"));
    if !files_writable {
        let who = match owner(&base) {
            Some(o) if o != euid => format!("owned by uid {o}"),
            _ => "not writable".to_string(),
        };
        let mut problem = format!("{} is not delegated to uid {euid} ({who})", base.display());
        if let Some(extra) = missing_problem(&base) {
            problem.push_str("; ");
            problem.push_str(&extra);
        }
        s.problem = Some(problem);
        return s;
    }
    if is_real_v2_root(&base) {
        // Writable real root as non-root: odd, but the rule exemption applies.
        s.dir = Some(base.join(ROOT_PARENT));
    } else {
        let enabled = read_words(&base.join("cgroup.subtree_control"));
        s.evacuate = available
            .iter()
            .any(|c| !enabled.iter().any(|w| w == c.name()));
        s.dir = Some(base.clone());
    }
    s.usable = available;
    s.problem = missing_problem(&base);
    s
}

// ---------------------------------------------------------------------------
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
                if let Ok(text) = fs::read_to_string(dir.join(file)) {
                    for line in text.lines() {
                        if let Some(n) = line.strip_prefix("oom_kill ") {
                            return n.trim().parse().ok();
                        }
                    }
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
        let fds: Vec<(libc::pid_t, Option<i32>)> = pids
            .iter()
            .map(|&pid| {
                // SAFETY: pidfd_open(2) returns a new fd or -1.
                let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
                (pid, (fd >= 0).then_some(fd as i32))
            })
            .collect();
        let still = self.pids();
        for (pid, fd) in fds {
            if still.contains(&pid) {
                match fd {
                    // SAFETY: signal through the pidfd; then close it.
                    Some(fd) => unsafe {
                        libc::syscall(
                            libc::SYS_pidfd_send_signal,
                            fd,
                            libc::SIGKILL,
                            std::ptr::null::<libc::siginfo_t>(),
                            0,
                        );
                    },
                    // No pidfd support (kernel < 5.3): plain kill.
                    None => unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    },
                }
            }
            if let Some(fd) = fd {
                // SAFETY: closing the fd opened above.
                unsafe { libc::close(fd) };
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
