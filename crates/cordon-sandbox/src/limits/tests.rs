//! Tests against the real kernel: cgroups as root (skipped otherwise), rlimits in
//! forked children.

use super::*;
use cordon_policy::{Origin, Sourced};
use std::time::{Duration, Instant};

fn limits(memory: Option<u64>, pids: Option<u64>, cpus: Option<f64>) -> Limits {
    Limits {
        memory: memory.map(|v| Sourced::new(v, Origin::Default)),
        pids: pids.map(|v| Sourced::new(v, Origin::Default)),
        cpus: cpus.map(|v| Sourced::new(v, Origin::Default)),
    }
}

/// A forked child that waits for a byte on a pipe (so the parent can put it in
/// a cgroup first), then runs `f` and exits with its result.
struct Child {
    pid: libc::pid_t,
    go: i32,
}

impl Child {
    fn start(f: impl FnOnce() -> i32) -> Child {
        let mut fds = [0; 2];
        // SAFETY: test helper; the child only makes syscalls, then _exit.
        unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                libc::close(fds[1]);
                let mut b = [0u8; 1];
                libc::read(fds[0], b.as_mut_ptr().cast(), 1);
                let code = f();
                libc::_exit(code);
            }
            libc::close(fds[0]);
            Child { pid, go: fds[1] }
        }
    }

    fn go(&self) {
        // SAFETY: writing one byte to our pipe.
        unsafe {
            libc::write(self.go, b"g".as_ptr().cast(), 1);
            libc::close(self.go);
        }
    }

    /// Waits (up to `limit`) and returns the raw wait status and CPU time used.
    fn wait(&self, limit: Duration) -> (i32, Duration) {
        let until = Instant::now() + limit;
        loop {
            let mut status = 0;
            // SAFETY: wait4 on our child with a valid rusage out-pointer.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: wait4 writes one int and one rusage, both live locals.
            let r = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut ru) };
            if r == self.pid {
                let cpu = Duration::from_micros(
                    (ru.ru_utime.tv_sec * 1_000_000
                        + ru.ru_utime.tv_usec
                        + ru.ru_stime.tv_sec * 1_000_000
                        + ru.ru_stime.tv_usec) as u64,
                );
                return (status, cpu);
            }
            if Instant::now() > until {
                // SAFETY: killing our own child.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                panic!("child {} did not finish within {limit:?}", self.pid);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn exit_code(status: i32) -> Option<i32> {
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

fn signal(status: i32) -> Option<i32> {
    libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
}

/// A private anonymous read-write mapping of `size` bytes (`MAP_FAILED` if refused).
fn map_anonymous(size: usize) -> *mut libc::c_void {
    // SAFETY: a new mapping at an address of the kernel's choosing; nothing existing
    // is touched.
    unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    }
}

/// Forks up to `max` children that pause; returns how many forks succeeded.
/// (The children die with the cgroup or when the test kills the group.)
fn count_forks(max: i32) -> i32 {
    let mut ok = 0;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    for _ in 0..max {
        // SAFETY: fork; the child only pauses (it is killed later).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            break;
        }
        if pid == 0 {
            // SAFETY: in the forked child of a test: prctl, getppid and pause take
            // no pointers, and _exit ends it without running the parent's atexit
            // handlers.
            unsafe {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                // The parent may have died before PDEATHSIG was armed.
                if libc::getppid() != parent {
                    libc::_exit(0);
                }
                libc::pause();
                libc::_exit(0);
            }
        }
        ok += 1;
    }
    ok
}

fn cgroup_for(l: &Limits, tag: &str) -> Option<SandboxCgroup> {
    let mechanism = choose(l);
    if mechanism.controllers().len() != needed(l).len() {
        eprintln!(
            "skipped: no writable cgroup covers {:?} for uid {} (root is needed on a cgroup v1 host): {}",
            needed(l),
            rustix::process::geteuid().as_raw(),
            mechanism.describe()
        );
        return None;
    }
    let name = format!("cordon-test-{tag}-{}", std::process::id());
    match SandboxCgroup::create(&mechanism, l, &name) {
        Ok(Some(cg)) => Some(cg),
        other => panic!("create under {mechanism:?} failed: {other:?}"),
    }
}

#[test]
fn no_limits_means_no_mechanism() {
    assert_eq!(choose(&Limits::default()), Mechanism::None);
    assert!(
        SandboxCgroup::create(&Mechanism::None, &Limits::default(), "x")
            .unwrap()
            .is_none()
    );
    assert!(apply_rlimits(&Limits::default()).is_ok());
}

#[test]
fn bad_numbers_are_errors_not_panics() {
    for l in [
        limits(Some(0), None, None),
        limits(None, Some(0), None),
        limits(None, None, Some(f64::NAN)),
        limits(None, None, Some(f64::INFINITY)),
        limits(None, None, Some(-1.0)),
        limits(None, None, Some(0.0)),
    ] {
        assert!(validate(&l).is_err(), "{l:?}");
        assert_eq!(apply_rlimits(&l), Err(Errno::INVAL), "{l:?}");
        let m = choose(&l);
        assert!(matches!(
            SandboxCgroup::create(&m, &l, "bad"),
            Err(LimitsError::Invalid { .. })
        ));
    }
    let ok = limits(Some(u64::MAX), Some(u64::MAX), Some(1e300));
    assert!(validate(&ok).is_ok());
    for name in ["", ".", "..", "a/b", "x\0y", &"n".repeat(300)] {
        let m = Mechanism::CgroupV2 {
            dir: "/nonexistent".into(),
            controllers: vec![Controller::Pids],
            fallback: vec![],
            evacuate: false,
        };
        assert!(matches!(
            SandboxCgroup::create(&m, &limits(None, Some(3), None), name),
            Err(LimitsError::InvalidName(_))
        ));
    }
}

#[test]
fn choose_prefers_full_coverage_and_reports_fallback() {
    let mut s = CgroupSurvey {
        euid: 1000,
        v2: V2Survey {
            mount: Some("/sys/fs/cgroup".into()),
            own: Some("/sys/fs/cgroup/u".into()),
            dir: Some("/sys/fs/cgroup/u".into()),
            usable: vec![Controller::Memory, Controller::Pids],
            evacuate: true,
            problem: None,
        },
        v1: Controller::ALL
            .iter()
            .map(|&c| V1Survey {
                controller: c,
                mount: None,
                dir: None,
                usable: false,
                problem: None,
            })
            .collect(),
    };
    let all = Controller::ALL;
    match choose_from(&s, &all) {
        Mechanism::CgroupV2 {
            controllers,
            fallback,
            ..
        } => {
            assert_eq!(controllers, vec![Controller::Memory, Controller::Pids]);
            assert_eq!(fallback, vec![Controller::Cpu]);
        }
        m => panic!("{m:?}"),
    }
    let m = choose_from(&s, &all);
    let un = m.uncovered(&limits(Some(1 << 30), Some(10), Some(1.5)));
    assert!(un.memory.is_none() && un.pids.is_none() && un.cpus.is_some());
    assert!(
        m.describe().contains("rlimits for the rest"),
        "{}",
        m.describe()
    );
    // v1 covering everything beats partial v2.
    for v in &mut s.v1 {
        v.usable = true;
        v.dir = Some(format!("/sys/fs/cgroup/{}", v.controller).into());
    }
    assert!(
        matches!(choose_from(&s, &all), Mechanism::CgroupV1 { ref fallback, .. } if fallback.is_empty())
    );
    // Nothing usable: rlimits.
    s.v2.dir = None;
    for v in &mut s.v1 {
        v.usable = false;
    }
    assert_eq!(choose_from(&s, &all), Mechanism::Rlimits);
    assert!(
        Mechanism::Rlimits
            .describe()
            .starts_with("no cgroup: rlimits")
    );
}

#[test]
fn survey_is_consistent_here() {
    let s = survey();
    eprintln!("{}", serde_json::to_string_pretty(&s).unwrap());
    assert_eq!(s.v1.len(), 3);
    if let Some(dir) = &s.v2.dir {
        assert!(dir.starts_with(s.v2.mount.as_ref().unwrap()));
    }
    eprintln!(
        "mechanism for all limits: {}",
        choose(&limits(Some(1 << 30), Some(100), Some(1.5))).describe()
    );
}

#[test]
fn cgroup_pids_limit_stops_the_fifth_process() {
    let l = limits(None, Some(5), None);
    let Some(cg) = cgroup_for(&l, "pids") else {
        return;
    };
    let child = Child::start(|| count_forks(10));
    cg.add_pid(child.pid).unwrap();
    assert_eq!(cg.pids(), vec![child.pid]);
    child.go();
    let (status, _) = child.wait(Duration::from_secs(10));
    // The child is 1 of 5: four forks succeed, the fifth fails with EAGAIN.
    assert_eq!(exit_code(status), Some(4), "status {status:#x}");
    let dirs = cg.dirs().to_vec();
    drop(cg);
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[test]
fn cgroup_memory_limit_kills_a_hog() {
    let l = limits(Some(32 << 20), None, None);
    let Some(cg) = cgroup_for(&l, "mem") else {
        return;
    };
    let child = Child::start(|| {
        const SIZE: usize = 256 << 20;
        let p = map_anonymous(SIZE);
        if p == libc::MAP_FAILED {
            return 2;
        }
        // SAFETY: touch the memory just mapped, in the child.
        unsafe {
            let mut i = 0;
            while i < SIZE {
                *(p as *mut u8).add(i) = 1;
                i += 4096;
            }
        }
        0 // touched it all: the limit did not bite
    });
    cg.add_pid(child.pid).unwrap();
    child.go();
    let (status, _) = child.wait(Duration::from_secs(20));
    assert!(
        signal(status) == Some(libc::SIGKILL) || exit_code(status) == Some(2),
        "the hog survived: status {status:#x}"
    );
    eprintln!("oom kills: {:?}", cg.oom_kills());
}

#[test]
fn cgroup_cpu_limit_throttles() {
    let l = limits(None, None, Some(0.2));
    let Some(cg) = cgroup_for(&l, "cpu") else {
        return;
    };
    let wall = Duration::from_millis(600);
    let child = Child::start(move || {
        let start = Instant::now();
        let mut x: u64 = 0;
        while start.elapsed() < wall {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            std::hint::black_box(x);
        }
        0
    });
    cg.add_pid(child.pid).unwrap();
    child.go();
    let (status, cpu) = child.wait(Duration::from_secs(10));
    assert_eq!(exit_code(status), Some(0));
    // 0.2 CPU over 0.6 s is ~120 ms; unthrottled it would be ~600 ms.
    assert!(
        cpu < Duration::from_millis(300),
        "used {cpu:?} of CPU in {wall:?}"
    );
    eprintln!("cpu used under 0.2 CPUs in {wall:?}: {cpu:?}");
}

#[test]
fn drop_kills_everything_and_removes_the_cgroup() {
    let l = limits(Some(256 << 20), Some(50), Some(1.0));
    let Some(cg) = cgroup_for(&l, "drop") else {
        return;
    };
    let child = Child::start(|| {
        count_forks(3);
        // SAFETY: wait forever; killed by the drop.
        unsafe { libc::pause() };
        0
    });
    cg.add_pid(child.pid).unwrap();
    child.go();
    let until = Instant::now() + Duration::from_secs(5);
    while cg.pids().len() < 4 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(cg.pids().len(), 4);
    let dirs = cg.dirs().to_vec();
    let t = Instant::now();
    drop(cg);
    eprintln!("drop took {:?}", t.elapsed());
    let (status, _) = child.wait(Duration::from_secs(5));
    assert_eq!(signal(status), Some(libc::SIGKILL));
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[test]
fn rlimit_data_refuses_a_big_allocation() {
    let child = Child::start(|| {
        if apply_rlimits(&limits(Some(64 << 20), None, None)).is_err() {
            return 10;
        }
        if map_anonymous(256 << 20) != libc::MAP_FAILED {
            return 11;
        }
        // A small one still works.
        if map_anonymous(8 << 20) == libc::MAP_FAILED {
            12
        } else {
            0
        }
    });
    child.go();
    let (status, _) = child.wait(Duration::from_secs(10));
    assert_eq!(exit_code(status), Some(0), "status {status:#x}");
}

#[test]
fn rlimit_nproc_counts_per_user_namespace() {
    let child = Child::start(|| {
        // SAFETY: syscalls in the child.
        unsafe {
            if libc::geteuid() == 0 {
                // Global root is exempt from RLIMIT_NPROC: become nobody.
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(65534) != 0
                    || libc::setuid(65534) != 0
                {
                    return 20;
                }
            }
            // The sandbox's own user namespace: the count starts at this process.
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return 21;
            }
        }
        if apply_rlimits(&limits(None, Some(4), None)).is_err() {
            return 22;
        }
        // The paused children die with this process (PDEATHSIG).
        count_forks(10)
    });
    child.go();
    let (status, _) = child.wait(Duration::from_secs(10));
    // This process is 1 of 4: three forks succeed.
    assert_eq!(exit_code(status), Some(3), "status {status:#x}");
}

#[test]
fn rlimit_cpus_sets_affinity_to_whole_cpus_rounded_down() {
    assert_eq!(affinity_cpus(1.5, 4), Some(1));
    assert_eq!(affinity_cpus(2.0, 4), Some(2));
    assert_eq!(affinity_cpus(0.5, 4), Some(1), "best effort below one CPU");
    assert_eq!(affinity_cpus(4.0, 4), None, "all of them: no restriction");
    assert_eq!(affinity_cpus(1e300, 4), None);
    let child = Child::start(|| {
        let before = rustix::thread::sched_getaffinity(None)
            .map(|s| s.count())
            .unwrap_or(0);
        if restrict_affinity(1).is_err() {
            return 30;
        }
        let after = rustix::thread::sched_getaffinity(None)
            .map(|s| s.count())
            .unwrap_or(0);
        if after == 1 || (before <= 1 && after == before) {
            0
        } else {
            31
        }
    });
    child.go();
    let (status, _) = child.wait(Duration::from_secs(10));
    assert_eq!(exit_code(status), Some(0), "status {status:#x}");
}

#[test]
fn memory_without_a_cgroup_is_never_claimed() {
    let explicit = |memory: Option<u64>, pids: Option<u64>, cpus: Option<f64>| {
        let flag = Origin::Flag {
            flag: "--memory".into(),
        };
        Limits {
            memory: memory.map(|v| Sourced::new(v, flag.clone())),
            pids: pids.map(|v| Sourced::new(v, flag.clone())),
            cpus: cpus.map(|v| Sourced::new(v, flag.clone())),
        }
    };
    let l = explicit(Some(64 << 20), Some(100), Some(0.5));
    let rlimits = assess(&l, &Mechanism::Rlimits);
    let memory = &rlimits[0];
    assert_eq!(memory.flag, "--memory 64M");
    assert!(memory.refuses(), "{memory:?}");
    assert!(
        rlimits[2].refuses(),
        "half a CPU without a cgroup: {:?}",
        rlimits[2]
    );
    // Under a cgroup covering everything, every limit holds.
    let v1 = Mechanism::CgroupV1 {
        dirs: Controller::ALL
            .iter()
            .map(|&c| V1Dir {
                controller: c,
                dir: "/x".into(),
            })
            .collect(),
        fallback: vec![],
    };
    assert!(
        assess(&l, &v1)
            .iter()
            .all(cordon_backend::Assessment::holds)
    );
    // A default that does not hold is reported, not refused.
    let default = limits(Some(64 << 20), None, None);
    assert!(!assess(&default, &Mechanism::Rlimits)[0].refuses());
}
