//! /proc and /sys inside the sandbox, entry by entry, as root and as the ordinary
//! user: the global knobs are read-only and the entries that show the host are
//! masked (the sets runc and Docker apply). A sandbox started by root is uid 0 on
//! the host, and most of these files are writable by their mode bits alone, so
//! only the mount stops a write. Each test asserts the host's value after the
//! attempt, with a positive control: the same file is writable (or the same write
//! works) outside cordon, as root. Values a control changes are put back at once,
//! and by a `Defer` if anything panics.

use crate::common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;

/// Docker's `readonlyPaths`, plus `/proc/mtrr`. Listed here, not taken from cordon,
/// so an entry cordon forgets fails the test.
const READ_ONLY: [&str; 6] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/mtrr",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Docker's `maskedPaths`.
const MASKED: [&str; 12] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Walks /proc (not the processes' own directories, nor `/proc/pressure`, whose
/// writes make a trigger that lives only as long as its descriptor and changes no
/// setting) and opens every regular file with a write bit for writing, writing
/// nothing: prints `OPENED path` for each that opens, then `SCANNED n`.
const PY_SCAN_PROC: &str = r#"
import os, stat
scanned = 0
def walk(d):
    global scanned
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return
    for n in names:
        if d == "/proc" and (n.isdigit() or n in ("self", "thread-self", "pressure")):
            continue
        p = os.path.join(d, n)
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            walk(p)
            continue
        if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o222:
            continue
        scanned += 1
        try:
            fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            continue
        os.close(fd)
        print("OPENED", p, flush=True)
walk("/proc")
print("SCANNED", scanned, flush=True)
"#;

fn opened(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("OPENED "))
        .map(str::to_string)
        .collect()
}

fn scanned(text: &str) -> usize {
    text.lines()
        .find_map(|l| l.strip_prefix("SCANNED "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The scan run by root on the host, without cordon: what an unconfined root can
/// open for writing.
fn host_scan() -> Vec<String> {
    let out = run_cmd(
        {
            let mut c = Command::new("python3");
            c.args(["-c", PY_SCAN_PROC]).env("PATH", PATH);
            c
        },
        None,
        RUN_DEADLINE,
    );
    out.assert_success();
    opened(&out.stdout_str())
}

#[test]
fn no_proc_file_opens_for_writing() {
    let host = host_scan();
    // Control: unconfined root opens files below each read-only entry that has any.
    for entry in ["/proc/irq", "/proc/sys", "/proc/bus/pci"] {
        if Path::new(entry).exists() {
            assert!(
                host.iter().any(|p| p.starts_with(entry)),
                "control: root cannot open anything below {entry} for writing on the host: {host:?}"
            );
        }
    }
    for_each_user("no_proc_file_opens_for_writing", |fx| {
        let out = fx.run(&["python3", "-c", PY_SCAN_PROC]);
        out.assert_success();
        let text = out.stdout_str();
        assert!(
            scanned(&text) > 100,
            "the scan saw too few writable-looking files to mean anything\n{out}"
        );
        let inside = opened(&text);
        assert!(
            inside.is_empty(),
            "the sandbox opened global /proc files for writing: {inside:?}"
        );
    });
}

/// The first IRQ whose affinity root can change on the host (and puts back).
fn settable_irq(to: &str) -> Option<(String, String)> {
    let mut irqs: Vec<_> = fs::read_dir("/proc/irq")
        .ok()?
        .flatten()
        .map(|e| e.path().join("smp_affinity"))
        .filter(|p| p.exists())
        .collect();
    irqs.sort();
    irqs.into_iter().find_map(|p| {
        let before = fs::read_to_string(&p).ok()?;
        if before.trim() == to || fs::write(&p, to).is_err() {
            return None;
        }
        let changed = fs::read_to_string(&p).ok()?;
        fs::write(&p, before.trim()).expect("put the IRQ's affinity back");
        (changed.trim() != before.trim()).then(|| (p.display().to_string(), before))
    })
}

#[test]
fn irq_affinity_cannot_be_changed() {
    let default = "/proc/irq/default_smp_affinity";
    if !Path::new(default).exists() || !running_as_root() {
        eprintln!("note: skipped: needs root and /proc/irq");
        return;
    }
    // Control: root outside cordon changes the default affinity (put back at once).
    let before_default = fs::read_to_string(default).unwrap();
    let to = if before_default.trim() == "1" {
        "2"
    } else {
        "1"
    };
    fs::write(default, to).expect("control: root cannot write default_smp_affinity");
    let changed = fs::read_to_string(default).unwrap();
    fs::write(default, before_default.trim()).unwrap();
    assert_ne!(
        changed, before_default,
        "control: the write changed nothing"
    );
    let irq = settable_irq(to);
    for_each_user("irq_affinity_cannot_be_changed", |fx| {
        let mut files = vec![(default.to_string(), before_default.clone())];
        files.extend(irq.clone());
        let restore = files.clone();
        let _restore = Defer(move || {
            for (path, value) in &restore {
                if fs::read_to_string(path).ok().as_ref() != Some(value) {
                    let _ = fs::write(path, value.trim());
                }
            }
        });
        let script: String = files
            .iter()
            .map(|(path, _)| format!("echo {to} > {path}; echo rc=$?; "))
            .collect();
        let out = fx.sh(&format!("{script}echo script-done"));
        for (path, value) in &files {
            assert_eq!(
                &fs::read_to_string(path).unwrap(),
                value,
                "{path} changed on the host\n{out}"
            );
        }
        out.assert_stdout_contains("script-done");
        out.assert_not_printed("rc=0");
    });
}

/// Prints `CONTENT path` for each masked path that shows anything (bytes of a
/// file, entries of a directory) and `SEEN path` for each that exists.
const PY_READ_MASKED: &str = r#"
import os, sys
for p in sys.argv[1:]:
    if not os.path.lexists(p):
        continue
    print("SEEN", p, flush=True)
    try:
        if os.path.isdir(p):
            shown = len(os.listdir(p)) > 0
        else:
            with open(p, "rb") as f:
                shown = len(f.read(4096)) > 0
    except OSError:
        shown = False
    if shown:
        print("CONTENT", p, flush=True)
"#;

#[test]
fn host_state_entries_are_masked() {
    let existing: Vec<&str> = MASKED
        .iter()
        .copied()
        .filter(|p| Path::new(p).exists())
        .collect();
    // Control: root outside cordon sees something in at least one of them.
    let mut ctl = Command::new("python3");
    ctl.args(["-c", PY_READ_MASKED])
        .args(&existing)
        .env("PATH", PATH);
    let ctl = run_cmd(ctl, None, RUN_DEADLINE);
    assert!(
        ctl.stdout_str().contains("CONTENT "),
        "control: every masked entry is empty on the host too\n{ctl}"
    );
    for_each_user("host_state_entries_are_masked", |fx| {
        let mut argv = vec!["python3", "-c", PY_READ_MASKED];
        argv.extend(existing.iter().copied());
        let out = fx.run(&argv);
        out.assert_success();
        let text = out.stdout_str();
        for path in &existing {
            assert!(
                text.contains(&format!("SEEN {path}\n")),
                "{path} is missing inside (it should be there, empty)\n{out}"
            );
            assert!(
                !text.contains(&format!("CONTENT {path}\n")),
                "{path} shows the host's content inside\n{out}"
            );
        }
    });
}

#[test]
fn every_mount_under_sys_and_the_proc_knobs_is_read_only() {
    for_each_user(
        "every_mount_under_sys_and_the_proc_knobs_is_read_only",
        |fx| {
            let out = fx.run(&["cat", "/proc/self/mountinfo"]);
            out.assert_success();
            let text = out.stdout_str();
            let mut seen = Vec::new();
            for line in text.lines() {
                let fields: Vec<&str> = line.split(' ').collect();
                let (Some(point), Some(options)) = (fields.get(4), fields.get(5)) else {
                    continue;
                };
                let covered = *point == "/sys"
                    || point.starts_with("/sys/")
                    || READ_ONLY
                        .iter()
                        .any(|r| point == r || point.starts_with(&format!("{r}/")));
                if covered {
                    seen.push(point.to_string());
                    assert!(
                        options.split(',').any(|o| o == "ro"),
                        "{point} is mounted read-write inside\n{line}"
                    );
                }
            }
            for entry in READ_ONLY {
                if Path::new(entry).exists() {
                    assert!(
                        seen.iter().any(|p| p == entry),
                        "{entry} is not a read-only mount of its own inside\n{out}"
                    );
                }
            }
        },
    );
}
