//! The survey: which cgroups this machine lets this process use (mounts, its own
//! cgroup, ownership, delegated controllers), for [`super::choose`] and `cordon
//! doctor`. Reads only; making and removing one sandbox's cgroup is
//! [`super::cgroup`]'s.

use super::Controller;
use serde::{Deserialize, Serialize};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The leaf cordon moves its own processes into when it must enable controllers
/// in a delegated cgroup that still holds them.
pub const HOST_LEAF: &str = "cordon-host";
/// Under a cgroup v2 root owned by root, sandboxes go in `<root>/cordon/`.
pub const ROOT_PARENT: &str = "cordon";

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
    rustix::fs::access(path, rustix::fs::Access::WRITE_OK).is_ok()
}

fn owner(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| m.uid())
}

pub(super) fn read_words(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

fn names(cs: &[Controller]) -> String {
    cs.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
}

/// The real root of a v2 hierarchy has no `cgroup.type` (and no limit files).
pub(super) fn is_real_v2_root(dir: &Path) -> bool {
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
