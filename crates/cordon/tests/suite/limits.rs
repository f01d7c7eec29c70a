//! Resource limits hold, or cordon refuses to start: it never claims a limit it
//! does not enforce. Each test reads what `cordon policy --json` claims for the
//! limit, then attacks it as root and as the ordinary user: a claimed limit must
//! stop every attack; an unclaimed one must make `cordon run` refuse before the
//! command runs (a marker it would write in the workspace stays absent on the
//! host), unless `--allow-degraded limits` accepts best effort. Positive controls:
//! the same attacks get through without the limit, and a process outside cordon
//! can widen its own CPU affinity.

use crate::common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

/// What `cordon policy --json` says of the limit for `controller` under `opts`:
/// `Some(true)` enforced, `Some(false)` not, `None` not listed. A cordon that does
/// not say (`limits_enforcement` missing: an older one) claims every limit it runs
/// with.
fn claimed(fx: &Fixture, opts: &[&str], controller: &str) -> Option<bool> {
    let policy = fx.policy_json(opts);
    let Some(assessed) = policy["limits_enforcement"].as_array() else {
        return Some(true);
    };
    assessed
        .iter()
        .find(|a| a["controller"] == controller)
        .map(|a| a["holds"] == "enforced")
}

/// Memory attacks, each in a child of its own (an OOM kill takes only that one),
/// each taking `sys.argv[1]` MiB: a shared anonymous mapping, files in /tmp and
/// /dev/shm, a memfd, and the same spread over 6 processes that each stay under
/// a per-process limit. Prints `DONE name` for each that got all of it. Touches
/// `sys.argv[2]` first: the marker that the command ran.
const PY_MEMORY_ATTACKS: &str = r#"
import mmap, os, sys
mib = int(sys.argv[1])
open(sys.argv[2], "w").write("ran\n")
chunk = b"x" * (1 << 20)
def fill(f):
    for _ in range(mib):
        f.write(chunk)
    f.flush()
def shared():
    m = mmap.mmap(-1, mib << 20, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    for i in range(0, mib << 20, 4096):
        m[i] = 1
def tmp():
    with open("/tmp/hog", "wb") as f:
        fill(f)
def shm():
    with open("/dev/shm/hog", "wb") as f:
        fill(f)
def memfd():
    fd = os.memfd_create("hog")
    with os.fdopen(fd, "wb") as f:
        fill(f)
def spread():
    # Every child holds its share until all have it (or one died trying).
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    kids = []
    for _ in range(6):
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            os.close(go_w)
            b = bytearray(((mib + 5) // 6) << 20)
            for i in range(0, len(b), 4096):
                b[i] = 1
            os.write(ready_w, b"k")
            os.close(ready_w)
            os.read(go_r, 1)
            os._exit(0)
        kids.append(pid)
    os.close(ready_w)
    os.close(go_r)
    got = 0
    while got < 6:
        d = os.read(ready_r, 6)
        if not d:
            break
        got += len(d)
    os.close(go_w)
    for k in kids:
        os.waitpid(k, 0)
    if got != 6:
        os._exit(1)
for name, attack in [("shared", shared), ("tmp", tmp), ("shm", shm), ("memfd", memfd), ("spread", spread)]:
    pid = os.fork()
    if pid == 0:
        try:
            # The attacker goes first when a cgroup's OOM killer picks a victim.
            open("/proc/self/oom_score_adj", "w").write("1000")
            attack()
        except BaseException:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    for leftover in ("/tmp/hog", "/dev/shm/hog"):
        try:
            os.unlink(leftover)
        except OSError:
            pass
    print(("DONE " if status == 0 else "STOPPED ") + name, status, flush=True)
print("ATTACKS-OVER", flush=True)
"#;

const ATTACKS: [&str; 5] = ["shared", "tmp", "shm", "memfd", "spread"];

fn memory_attacks(fx: &Fixture, opts: &[&str], marker: &Path) -> Output {
    let mut argv = vec!["run"];
    argv.extend_from_slice(opts);
    let marker = marker.display().to_string();
    argv.extend_from_slice(&["--", "python3", "-c", PY_MEMORY_ATTACKS, "256", &marker]);
    fx.cordon(&argv)
}

fn done(out: &Output) -> Vec<&'static str> {
    let text = out.stdout_str();
    ATTACKS
        .iter()
        .copied()
        .filter(|a| text.lines().any(|l| l.starts_with(&format!("DONE {a} "))))
        .collect()
}

#[test]
fn memory_limit_holds_or_cordon_refuses() {
    for_each_user("memory_limit_holds_or_cordon_refuses", |fx| {
        let marker = fx.work.join("ran");
        // Control: without a limit, every attack gets its 256 MiB.
        let control = memory_attacks(fx, &[], &marker);
        control.assert_success();
        assert_eq!(done(&control), ATTACKS, "control: {control}");
        fs::remove_file(&marker).unwrap();

        let limit = ["--memory", "64M"];
        let out = memory_attacks(fx, &limit, &marker);
        match claimed(fx, &limit, "memory") {
            Some(true) => {
                assert!(marker.exists(), "the command did not run\n{out}");
                out.assert_stdout_contains("ATTACKS-OVER");
                assert!(
                    done(&out).is_empty(),
                    "--memory 64M is claimed but let through {:?}\n{out}",
                    done(&out)
                );
            }
            Some(false) => {
                out.assert_status(125);
                out.assert_stderr_contains("--memory 64M cannot be enforced here");
                out.assert_stderr_contains("fix: ");
                out.assert_stderr_contains("--allow-degraded limits");
                assert!(
                    !marker.exists(),
                    "cordon refused --memory but ran the command\n{out}"
                );
            }
            None => panic!("policy --json does not list the memory limit"),
        }
    });
}

#[test]
fn best_effort_memory_is_named_and_bounds_the_tmpfs() {
    for_each_user("best_effort_memory_is_named_and_bounds_the_tmpfs", |fx| {
        let marker = fx.work.join("ran");
        let opts = ["--memory", "64M", "--allow-degraded", "limits"];
        let out = memory_attacks(fx, &opts, &marker);
        out.assert_success();
        assert!(marker.exists(), "the command did not run\n{out}");
        let got = done(&out);
        if claimed(fx, &opts, "memory") == Some(true) {
            assert!(got.is_empty(), "the limit let through {got:?}\n{out}");
            out.assert_not_printed("best effort");
        } else {
            out.assert_stderr_contains("--memory 64M does not hold here, best effort only");
            // What best effort does bound: the private tmpfs mounts.
            for bounded in ["tmp", "shm"] {
                assert!(
                    !got.contains(&bounded),
                    "best effort let 256 MiB into {bounded}\n{out}"
                );
            }
        }
    });
}

#[test]
fn memory_limit_death_is_reported() {
    for_each_user("memory_limit_death_is_reported", |fx| {
        let opts = ["--memory", "64M"];
        let hog = "b = bytearray(256 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('ALLOCATED')";
        let mut argv = vec!["run"];
        argv.extend_from_slice(&opts);
        argv.extend_from_slice(&["--", "python3", "-c", hog]);
        let out = fx.cordon(&argv);
        out.assert_not_printed("ALLOCATED");
        if claimed(fx, &opts, "memory") == Some(true) {
            assert_eq!(out.signal, None, "{out}");
            out.assert_status(128 + libc::SIGKILL);
            out.assert_stderr_contains("reached its memory limit (--memory 64M)");
        } else {
            out.assert_status(125);
            out.assert_stderr_contains("cannot be enforced here");
        }
    });
}

/// Widens its CPU affinity to every CPU, prints what it got, then sleeps with a
/// unique argument so the host can look at it.
const PY_WIDEN: &str = r#"
import os, sys
everything = set(range(os.cpu_count()))
try:
    os.sched_setaffinity(0, everything)
    print("WIDENED", flush=True)
except OSError as e:
    print("REFUSED", e.errno, flush=True)
print("AFFINITY", sorted(os.sched_getaffinity(0)), flush=True)
os.execvp("sleep", ["sleep", sys.argv[1]])
"#;

/// The CPUs process `pid` may run on, from the host.
fn cpus_allowed(pid: u32) -> usize {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    list.split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

/// The CPU quota of process `pid`'s cgroup in CPUs (`None`: no quota), from the
/// host: cgroup v1's `cpu` hierarchy or cgroup v2's `cpu.max`.
fn cpu_quota(pid: u32) -> Option<f64> {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "cpu") {
            let dir = Path::new("/sys/fs/cgroup/cpu").join(path.trim_start_matches('/'));
            let quota: i64 = fs::read_to_string(dir.join("cpu.cfs_quota_us"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let period: i64 = fs::read_to_string(dir.join("cpu.cfs_period_us"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            if quota > 0 {
                return Some(quota as f64 / period as f64);
            }
        } else if controllers.is_empty() {
            for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                let file = Path::new(root)
                    .join(path.trim_start_matches('/'))
                    .join("cpu.max");
                if let Ok(text) = fs::read_to_string(file) {
                    let mut words = text.split_whitespace();
                    if let (Some(q), Some(p)) = (words.next(), words.next()) {
                        if let (Ok(q), Ok(p)) = (q.parse::<f64>(), p.parse::<f64>()) {
                            return Some(q / p);
                        }
                    }
                }
            }
        }
    }
    None
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs PY_WIDEN under `opts` and returns, seen from the host once it sleeps, the
/// number of CPUs the command may run on and its cgroup's CPU quota. In the
/// VM backend, the command is the guest's: QEMU's, whose vCPU threads run it.
fn widened(fx: &Fixture, opts: &[&str]) -> (usize, Option<f64>) {
    let word = format!("{}.{}", random_u32(1_000_000, 8_000_000), 5);
    let mut argv = vec!["run"];
    argv.extend_from_slice(opts);
    argv.extend_from_slice(&["--", "python3", "-c", PY_WIDEN, &word]);
    let child = spawn_quiet(fx.cordon_cmd(&argv));
    if in_vm() {
        let qemu = common::vm::wait_for_qemu_below(child.id(), Duration::from_secs(20));
        let Some(&pid) = qemu.first() else {
            stop(child);
            panic!("no QEMU below cordon");
        };
        let seen = (cpus_allowed(pid), cpu_quota(pid));
        stop(child);
        common::vm::qemu_left_after(&qemu, Duration::from_secs(10));
        return seen;
    }
    // The command itself (cordon's own command line holds the word too).
    let mut command = None;
    for _ in 0..400 {
        command = procs_with_arg(&word)
            .into_iter()
            .find(|(_, argv)| argv[0] == "sleep");
        if command.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some((pid, _)) = command else {
        stop(child);
        panic!("the sandboxed command never appeared");
    };
    let seen = (cpus_allowed(pid), cpu_quota(pid));
    stop(child);
    kill_all(&wait_gone(&word, Duration::from_secs(3)));
    seen
}

#[test]
fn cpu_limit_holds_after_sched_setaffinity_or_cordon_refuses() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("note: skipped: one CPU, nothing to widen to");
        return;
    }
    // Control: outside cordon, a process pinned to one CPU widens its affinity.
    let mut ctl = Command::new("python3");
    ctl.env("PATH", PATH).args([
        "-c",
        "import os\nos.sched_setaffinity(0, {0})\nos.sched_setaffinity(0, set(range(os.cpu_count())))\nprint(len(os.sched_getaffinity(0)))",
    ]);
    let ctl = run_cmd(ctl, None, RUN_DEADLINE);
    assert_eq!(
        ctl.stdout_str().trim(),
        cpus.to_string(),
        "control: affinity cannot be widened outside cordon\n{ctl}"
    );
    for_each_user(
        "cpu_limit_holds_after_sched_setaffinity_or_cordon_refuses",
        |fx| {
            for limit in ["1", "0.5"] {
                let opts = ["--cpus", limit];
                let value: f64 = limit.parse().unwrap();
                if claimed(fx, &opts, "cpu") == Some(true) {
                    let (allowed, quota) = widened(fx, &opts);
                    assert!(
                        allowed as f64 <= value || quota.is_some_and(|q| q <= value),
                        "--cpus {limit} is claimed but does not hold after sched_setaffinity: \
                     the command may run on {allowed} CPUs, cgroup quota {quota:?}"
                    );
                } else {
                    let marker = fx.work.join("ran");
                    let out = fx.sh_with(&opts, &format!("touch {}", marker.display()));
                    out.assert_status(125);
                    out.assert_stderr_contains(&format!("--cpus {limit} cannot be enforced here"));
                    assert!(
                        !marker.exists(),
                        "cordon refused --cpus but ran the command\n{out}"
                    );
                }
            }
        },
    );
}

#[test]
fn doctor_says_how_each_limit_holds() {
    for_each_user("doctor_says_how_each_limit_holds", |fx| {
        let out = fx.cordon(&["doctor"]);
        for kind in ["memory: ", "pids: ", "cpu: "] {
            out.assert_stdout_contains(kind);
        }
        // The policy's claim and the doctor's agree on memory.
        let holds = claimed(fx, &["--memory", "1G"], "memory") == Some(true);
        if holds {
            out.assert_stdout_contains("memory: cgroup");
        } else {
            out.assert_stdout_contains("memory: cannot be enforced");
        }
    });
}
