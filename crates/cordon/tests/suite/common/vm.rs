//! What the suites share about the VM backend: whether it can run here, the
//! boot files' cache, `cordon run --backend vm`, and the host processes (QEMU,
//! virtiofsd) a VM session leaves below cordon.

use super::*;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Whether a test must not run for want of a VM: the suites run against the VM
/// backend ([`in_vm`]) and this machine lacks QEMU or a kernel ([`missing`]).
/// Then the test is skipped, saying why; but never in CI (`$CI` set), where a
/// rerun that quietly ran nothing would pass for one that held.
pub fn skipped_for_want_of_a_vm(test: &str) -> bool {
    if !in_vm() {
        return false;
    }
    let Some(why) = missing() else {
        return false;
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: the suites run against the VM backend, which cannot run here: {why}"
    );
    eprintln!("skipped {test}: the VM backend cannot run here: {why}");
    true
}

/// Why the VM backend cannot run here, if it cannot (something not installed).
pub fn missing() -> Option<String> {
    let qemu = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("qemu-system-x86_64").is_file()));
    if !qemu {
        return Some("no qemu-system-x86_64 in PATH (apt-get install qemu-system-x86)".into());
    }
    cordon_vm::image::find_kernel(None)
        .err()
        .map(|e| format!("{e} (apt-get install linux-image-amd64)"))
}

/// The file shares to test: virtiofs where virtiofsd is installed (what a
/// session uses then), and 9p, its fallback, always.
pub fn shares() -> Vec<&'static str> {
    let mut shares = Vec::new();
    if cordon_vm::share::find_virtiofsd().is_some() {
        shares.push("virtiofs");
    }
    shares.push("9p");
    shares
}

/// The boot files' cache of `fx`'s user, shared by the tests (one vmlinux
/// unpacked per user, not per test).
pub fn cache(fx: &Fixture) -> PathBuf {
    let dir = base_dir().join(format!("vm-cache-{}", fx.user.label()));
    fs::create_dir_all(&dir).unwrap();
    if !fx.user.is_root() {
        let chown = Command::new("chown")
            .arg(format!("{}:{}", fx.user.uid, fx.user.gid))
            .arg(&dir)
            .status();
        assert!(chown.is_ok_and(|s| s.success()));
    }
    dir
}

/// `cordon run --backend vm OPTS -- sh -c SCRIPT` as `fx`'s user.
pub fn vm_cmd(fx: &Fixture, opts: &[&str], script: &str) -> Command {
    let mut args = vec!["run", "--backend", "vm"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let mut cmd = fx.cordon_cmd(&args);
    cmd.env("XDG_CACHE_HOME", cache(fx));
    cmd
}

/// The QEMU processes below `pid` once there are some, waiting at most
/// `within` (empty if none appeared).
pub fn wait_for_qemu_below(pid: u32, within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let qemu = qemu_below(pid);
        if !qemu.is_empty() || Instant::now() >= deadline {
            return qemu;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Which of the QEMU processes `qemu` are still there (not gone or a zombie)
/// after waiting `within` for them to end; those are killed (SIGKILL), so that
/// a failure leaks nothing into other tests.
pub fn qemu_left_after(qemu: &[u32], within: Duration) -> Vec<u32> {
    let gone = |p: &u32| proc_state(*p).is_none_or(|s| s == 'Z');
    let deadline = Instant::now() + within;
    while !qemu.iter().all(gone) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<u32> = qemu.iter().copied().filter(|p| !gone(p)).collect();
    for p in &left {
        if let Some(pid) = rustix::process::Pid::from_raw(*p as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    left
}

/// The pids of `pid`'s descendants whose program is QEMU running a VM (not the
/// `qemu-system-x86_64 --version` of the accelerator's probe).
pub fn qemu_below(pid: u32) -> Vec<u32> {
    descendants_where(pid, |p| {
        fs::read_link(format!("/proc/{p}/exe"))
            .is_ok_and(|exe| exe.to_string_lossy().contains("qemu-system"))
            && argv_of(p).iter().any(|a| a == "-kernel")
    })
}

/// The pids of `pid`'s descendants that run virtiofsd.
pub fn virtiofsd_below(pid: u32) -> Vec<u32> {
    descendants_where(pid, |p| {
        fs::read_link(format!("/proc/{p}/exe"))
            .is_ok_and(|exe| exe.file_name().is_some_and(|n| n == "virtiofsd"))
    })
}

/// The pids of `pid`'s descendants (16 levels at most) for which `wanted` holds.
fn descendants_where(pid: u32, wanted: impl Fn(u32) -> bool) -> Vec<u32> {
    let parent_of = |p: u32| -> Option<u32> {
        let stat = fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let mut up = parent_of(p);
        let mut below = false;
        for _ in 0..16 {
            match up {
                Some(q) if q == pid => {
                    below = true;
                    break;
                }
                Some(q) if q > 1 => up = parent_of(q),
                _ => break,
            }
        }
        if below && wanted(p) {
            found.push(p);
        }
    }
    found
}
