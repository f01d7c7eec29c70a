//! `bench/spawn`: the cost of starting a sandbox.
//!
//! Runs `cordon run -- /bin/true`, a bare fork+exec of `/bin/true` and an equivalent
//! bubblewrap command (user, pid, net, ipc, uts and mount namespaces, read-only
//! root, writable workspace, private /tmp) interleaved round-robin in one run, so
//! noise on the machine hits all three alike, and prints min/median/p90 of each,
//! the overhead over bare exec (median - bare median) and the ratio
//! cordon overhead / bubblewrap overhead against the target (at most 0.5).
//!
//! It then starts `cordon run -- sleep 2` and, while it runs, measures the resident
//! memory of cordon's own processes (the launcher on the host and the supervisor,
//! PID 1 of the sandbox; not the command) against the target (under 5 MiB).
//!
//! The standard library, clap and the bench's own library (src/lib.rs).

use clap::{ArgAction, Parser};
use cordon_bench::{
    Stats, at_least_one, busy_window, cpu_model, exit_code, find_cordon, find_in_path, invocation,
    kernel, kib_field, loadavg, machine_ticks, main_with, noisy, nproc, percent, read, verdict,
    workspace,
};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// cordon's overhead over bare exec may be at most this fraction of bubblewrap's.
const RATIO_TARGET: f64 = 0.5;
/// cordon's own processes together must stay under this (KiB).
const MEMORY_TARGET_KIB: u64 = 5 * 1024;

/// Times `cordon run -- /bin/true` next to a bare fork+exec of /bin/true and an
/// equivalent bubblewrap command, interleaved in one run, and measures the memory of
/// cordon's own processes during a run.
#[derive(Parser)]
#[command(name = "bench/spawn", bin_name = "bench/spawn")]
struct Options {
    /// timed rounds; each round runs every contender once (default 300)
    #[arg(long, value_name = "N", default_value = "300", hide_default_value = true, value_parser = at_least_one::<usize>)]
    iterations: usize,
    /// untimed rounds first (default 20)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 20,
        hide_default_value = true
    )]
    warmup: usize,
    /// the cordon binary (default: next to this binary, target/release/cordon)
    #[arg(long, value_name = "PATH")]
    cordon: Option<PathBuf>,
    /// the bubblewrap binary (default: bwrap from PATH)
    #[arg(long, value_name = "PATH")]
    bwrap: Option<PathBuf>,
    /// the workspace both sandboxes get (default: a fresh directory under the cargo
    /// target directory; not under /tmp)
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// skip the memory measurement
    #[arg(long = "no-memory", action = ArgAction::SetFalse)]
    memory: bool,
    /// print the results as one JSON object instead of text
    #[arg(long)]
    json: bool,
    /// exit with status 1 if a target is missed
    #[arg(long)]
    strict: bool,
    /// keep one core busy during the rounds (a thread of this process spinning),
    /// to measure every contender under load
    #[arg(long = "busy-core")]
    busy_core: bool,
}

// ---------------------------------------------------------------------------
// Contenders and timing

struct Contender {
    name: &'static str,
    argv: Vec<OsString>,
}

impl Contender {
    fn new(name: &'static str, argv: Vec<OsString>) -> Contender {
        Contender { name, argv }
    }

    fn command(&self, cwd: &Path) -> Command {
        let mut command = Command::new(&self.argv[0]);
        command
            .args(&self.argv[1..])
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// The command line as a shell would show it.
    fn display(&self) -> String {
        self.argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs once, untimed, and explains a failure with the command's stderr.
    fn check(&self, cwd: &Path) -> Result<(), String> {
        let output = self
            .command(cwd)
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot start `{}`: {e}", self.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let stderr = stderr.trim();
            Err(format!(
                "`{}` failed ({}){}{}",
                self.display(),
                output.status,
                if stderr.is_empty() { "" } else { ": " },
                stderr
            ))
        }
    }

    /// One spawn + wait, timed from just before the spawn to just after the wait.
    fn time(&self, cwd: &Path) -> Result<Duration, String> {
        let mut command = self.command(cwd);
        let start = Instant::now();
        let status = command
            .status()
            .map_err(|e| format!("cannot start `{}`: {e}", self.display()))?;
        let elapsed = start.elapsed();
        if !status.success() {
            return Err(format!(
                "`{}` failed during the run: {status}",
                self.display()
            ));
        }
        Ok(elapsed)
    }
}

struct Summary {
    name: &'static str,
    command: String,
    min_ms: f64,
    median_ms: f64,
    p90_ms: f64,
    overhead_ms: f64,
}

fn summarize(contender: &Contender, samples: &[f64], bare_median: Option<f64>) -> Summary {
    let stats = Stats::of(samples);
    Summary {
        name: contender.name,
        command: contender.display(),
        min_ms: stats.min,
        median_ms: stats.median,
        p90_ms: stats.p90,
        overhead_ms: stats.median - bare_median.unwrap_or(stats.median),
    }
}

// ---------------------------------------------------------------------------
// The machine, and how busy it was

struct Machine {
    nproc: usize,
    kernel: String,
    cpu: String,
    load_start: String,
    load_end: String,
    uid: String,
    /// How busy the machine was (percent of all CPUs) in a quiet second just before
    /// the warm-up and just after the timed run, while the benchmark ran nothing.
    busy_before_pct: Option<f64>,
    busy_after_pct: Option<f64>,
    /// CPU used during the timed run by other user-space processes that lived through
    /// it, and by the children they reaped meanwhile (a build or a test suite in
    /// another terminal, say), percent of all CPUs. Kernel threads are left out: they
    /// also do the sandboxes' own teardown (namespace cleanup).
    others_during_pct: Option<f64>,
}

fn machine() -> Machine {
    let uid = read("/proc/self/status")
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|u| u.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .unwrap_or_else(|| "?".into());
    Machine {
        nproc: nproc(),
        kernel: kernel(),
        cpu: cpu_model(),
        load_start: loadavg(),
        load_end: String::new(),
        uid,
        busy_before_pct: None,
        busy_after_pct: None,
        others_during_pct: None,
    }
}

/// CPU ticks of every user-space process except this one, by (pid, start time) so
/// a reused pid does not count: its own (utime + stime) and that of the children it
/// reaped (cutime + cstime), so the short-lived processes of a build or a test
/// suite count through their long-lived parent.
fn user_process_ticks() -> std::collections::HashMap<(u32, u64), u64> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let me = std::process::id();
    let mut out = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let stat = read(format!("/proc/{pid}/stat"));
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        // Fields from 3 (state) on; proc(5): flags is 9, utime 14, stime 15, cutime 16,
        // cstime 17, starttime 22.
        let f: Vec<u64> = stat[close + 1..]
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let (Some(&flags), Some(&start)) = (f.get(6), f.get(19)) else {
            continue;
        };
        if flags & PF_KTHREAD == 0 {
            out.insert((pid, start), f[11..15].iter().sum());
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Memory of cordon's own processes

struct ProcessMemory {
    role: String,
    pid: u32,
    comm: String,
    rss_kib: u64,
    hwm_kib: u64,
    pss_kib: Option<u64>,
}

struct MemoryReport {
    processes: Vec<ProcessMemory>,
    command_pid: u32,
    pss_error: Option<String>,
}

impl MemoryReport {
    fn total_rss(&self) -> u64 {
        self.processes.iter().map(|p| p.rss_kib).sum()
    }
    fn total_pss(&self) -> Option<u64> {
        self.processes.iter().map(|p| p.pss_kib).sum()
    }
    /// PSS when it could be read (see the printed explanation), else RSS.
    fn judged(&self) -> (&'static str, u64) {
        match self.total_pss() {
            Some(pss) => ("PSS", pss),
            None => ("RSS", self.total_rss()),
        }
    }
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path().join("children");
        out.extend(
            read(path)
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

fn comm(pid: u32) -> String {
    read(format!("/proc/{pid}/comm")).trim().to_string()
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    kib_field(&read(format!("/proc/{pid}/status")), field)
}

fn pss_kib(pid: u32) -> Result<u64, String> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .map_err(|e| format!("/proc/{pid}/smaps_rollup: {e}"))?;
    rollup
        .lines()
        .find_map(|l| {
            l.strip_prefix("Pss:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| format!("/proc/{pid}/smaps_rollup has no Pss line"))
}

/// The launcher and every descendant of it except the command (and what the
/// command started), with the command's pid.
fn cordon_tree(launcher: u32, command_comm: &str) -> (Vec<(String, u32)>, Option<u32>) {
    let mut own = vec![("launcher (host)".to_string(), launcher)];
    let mut command = None;
    let mut queue = vec![(launcher, 0usize)];
    while let Some((pid, depth)) = queue.pop() {
        for child in children(pid) {
            if comm(child) == command_comm {
                command = Some(child);
                continue;
            }
            let role = if depth == 0 {
                "supervisor (sandbox PID 1)".to_string()
            } else {
                format!("other cordon process (depth {})", depth + 1)
            };
            own.push((role, child));
            queue.push((child, depth + 1));
        }
    }
    (own, command)
}

fn measure_memory(cordon: &Path, workspace: &Path) -> Result<MemoryReport, String> {
    let mut child = Command::new(cordon)
        .args(["run", "--", "sleep", "2"])
        .current_dir(workspace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start cordon: {e}"))?;
    let launcher = child.id();
    let deadline = Instant::now() + Duration::from_millis(1500);
    let result = loop {
        let (own, command) = cordon_tree(launcher, "sleep");
        if let Some(command_pid) = command {
            // Let the supervisor settle into its wait loop, then sample.
            std::thread::sleep(Duration::from_millis(200));
            let (own, _) = cordon_tree(launcher, "sleep");
            let mut processes = Vec::new();
            let mut pss_error = None;
            for (role, pid) in own {
                let pss = match pss_kib(pid) {
                    Ok(pss) => Some(pss),
                    Err(e) => {
                        pss_error.get_or_insert(e);
                        None
                    }
                };
                processes.push(ProcessMemory {
                    role,
                    pid,
                    comm: comm(pid),
                    rss_kib: status_kib(pid, "VmRSS").unwrap_or(0),
                    hwm_kib: status_kib(pid, "VmHWM").unwrap_or(0),
                    pss_kib: pss,
                });
            }
            break Ok(MemoryReport {
                processes,
                command_pid,
                pss_error,
            });
        }
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = own;
            break Err("the sandboxed `sleep 2` did not appear within 1.5 s".to_string());
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let output = child
        .wait_with_output()
        .map_err(|e| format!("waiting for cordon: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cordon run -- sleep 2` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    result
}

// ---------------------------------------------------------------------------
// Output

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "null".into()
    }
}

fn json_opt<T: std::fmt::Display>(x: Option<T>) -> String {
    x.map_or("null".into(), |v| v.to_string())
}

struct Results {
    invocation: String,
    machine: Machine,
    cordon: PathBuf,
    bwrap_version: Option<String>,
    bwrap_error: Option<String>,
    workspace: PathBuf,
    iterations: usize,
    warmup: usize,
    /// Whether a core was kept busy during the timed rounds (`--busy-core`).
    busy_core: bool,
    wall: Duration,
    summaries: Vec<Summary>,
    memory: Option<Result<MemoryReport, String>>,
}

impl Results {
    fn get(&self, name: &str) -> Option<&Summary> {
        self.summaries.iter().find(|s| s.name == name)
    }

    /// cordon overhead / bwrap overhead, when bwrap ran.
    fn ratio(&self) -> Option<f64> {
        let cordon = self.get("cordon")?.overhead_ms;
        let bwrap = self.get("bwrap")?.overhead_ms;
        Some(if bwrap > 0.0 {
            cordon / bwrap
        } else {
            f64::INFINITY
        })
    }

    fn ratio_pass(&self) -> Option<bool> {
        self.ratio().map(|r| r <= RATIO_TARGET)
    }

    fn memory_pass(&self) -> Option<bool> {
        match &self.memory {
            Some(Ok(m)) => Some(m.judged().1 < MEMORY_TARGET_KIB),
            _ => None,
        }
    }

    /// Whether other work on the machine made these numbers noisy.
    fn noisy(&self) -> bool {
        let m = &self.machine;
        noisy(&[m.busy_before_pct, m.busy_after_pct, m.others_during_pct])
    }

    fn text(&self) -> String {
        let m = &self.machine;
        let mut o = String::new();
        let _ = writeln!(o, "bench/spawn: the cost of starting a sandbox");
        let _ = writeln!(o, "command:    {}", self.invocation);
        let _ = writeln!(
            o,
            "machine:    {} CPUs (nproc), {}, {}",
            m.nproc, m.kernel, m.cpu
        );
        let _ = writeln!(o, "user:       uid {}", m.uid);
        let _ = writeln!(o, "cordon:     {}", self.cordon.display());
        let _ = writeln!(
            o,
            "bwrap:      {}",
            self.bwrap_version
                .as_deref()
                .unwrap_or("not usable (see below)")
        );
        let _ = writeln!(o, "workspace:  {}", self.workspace.display());
        let _ = writeln!(
            o,
            "rounds:     {} timed + {} warm-up, interleaved round-robin ({}), {:.1} s{}",
            self.iterations,
            self.warmup,
            self.summaries
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", "),
            self.wall.as_secs_f64(),
            if self.busy_core {
                "; beside a busy core (--busy-core)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            o,
            "quiet:      machine {} busy in 1 s before the run, {} after; other processes {} during it",
            percent(m.busy_before_pct),
            percent(m.busy_after_pct),
            percent(m.others_during_pct)
        );
        let _ = writeln!(
            o,
            "            (load average {} at start, {} at end)",
            m.load_start, m.load_end
        );
        if self.noisy() {
            let _ = writeln!(
                o,
                "            NOTE: other work on the machine (above 10% {}); the numbers may be noisy",
                [
                    ("before", m.busy_before_pct),
                    ("during", m.others_during_pct),
                    ("after", m.busy_after_pct)
                ]
                .iter()
                .filter(|(_, p)| noisy(&[*p]))
                .map(|(w, _)| *w)
                .collect::<Vec<_>>()
                .join(", ")
            );
        }
        let _ = writeln!(o);
        for s in &self.summaries {
            let _ = writeln!(o, "  {:<7} {}", s.name, s.command);
        }
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "  {:<7} {:>9} {:>9} {:>9} {:>15}",
            "", "min ms", "median ms", "p90 ms", "overhead ms"
        );
        for s in &self.summaries {
            let overhead = if s.name == "bare" {
                "-".to_string()
            } else {
                format!("{:.3}", s.overhead_ms)
            };
            let _ = writeln!(
                o,
                "  {:<7} {:>9.3} {:>9.3} {:>9.3} {:>15}",
                s.name, s.min_ms, s.median_ms, s.p90_ms, overhead
            );
        }
        let _ = writeln!(o, "  (overhead = median - bare median)");
        let _ = writeln!(o);
        match (self.ratio(), &self.bwrap_error) {
            (Some(r), _) => {
                let _ = writeln!(
                    o,
                    "spawn:  cordon overhead / bwrap overhead = {:.3} / {:.3} = {:.2}   target <= {RATIO_TARGET}   {}",
                    self.get("cordon").map_or(0.0, |s| s.overhead_ms),
                    self.get("bwrap").map_or(0.0, |s| s.overhead_ms),
                    r,
                    verdict(r <= RATIO_TARGET)
                );
            }
            (None, Some(e)) => {
                let _ = writeln!(o, "spawn:  no ratio: bubblewrap could not run: {e}");
            }
            (None, None) => {
                let _ = writeln!(o, "spawn:  no ratio");
            }
        }
        match &self.memory {
            None => {}
            Some(Err(e)) => {
                let _ = writeln!(o, "memory: not measured: {e}");
            }
            Some(Ok(mem)) => {
                let _ = writeln!(o);
                let _ = writeln!(
                    o,
                    "memory of cordon's own processes during `cordon run -- sleep 2` (the command, pid {}, excluded):",
                    mem.command_pid
                );
                let _ = writeln!(
                    o,
                    "  {:<28} {:>7} {:<8} {:>9} {:>9} {:>13}",
                    "process", "pid", "comm", "RSS KiB", "PSS KiB", "peak RSS KiB"
                );
                for p in &mem.processes {
                    let _ = writeln!(
                        o,
                        "  {:<28} {:>7} {:<8} {:>9} {:>9} {:>13}",
                        p.role,
                        p.pid,
                        p.comm,
                        p.rss_kib,
                        p.pss_kib.map_or("n/a".into(), |v| v.to_string()),
                        p.hwm_kib
                    );
                }
                let total_pss = mem.total_pss();
                let _ = writeln!(
                    o,
                    "  {:<28} {:>7} {:<8} {:>9} {:>9}",
                    "total",
                    "",
                    "",
                    mem.total_rss(),
                    total_pss.map_or("n/a".into(), |v| v.to_string())
                );
                let (on, kib) = mem.judged();
                let by_rss = if on == "PSS" {
                    format!(
                        "; by RSS: {:.2} MiB, {}",
                        mem.total_rss() as f64 / 1024.0,
                        verdict(mem.total_rss() < MEMORY_TARGET_KIB)
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    o,
                    "memory: total {on} {:.2} MiB   target < 5 MiB   {}   (judged on {on}{by_rss})",
                    kib as f64 / 1024.0,
                    verdict(kib < MEMORY_TARGET_KIB),
                );
                match &mem.pss_error {
                    None => {
                        let _ = writeln!(
                            o,
                            "        PSS counts each shared page divided among the processes sharing it; the supervisor is a\n        fork of the launcher, so RSS counts their shared copy-on-write pages (and libc) twice."
                        );
                    }
                    Some(e) => {
                        let _ = writeln!(
                            o,
                            "        PSS unreadable ({e}; the supervisor is not dumpable, so its smaps need root), judged on RSS"
                        );
                    }
                }
            }
        }
        o
    }

    fn json(&self) -> String {
        let m = &self.machine;
        let mut o = String::from("{\n");
        let _ = writeln!(o, "  \"command\": {},", json_str(&self.invocation));
        let _ = writeln!(
            o,
            "  \"machine\": {{\"nproc\": {}, \"kernel\": {}, \"cpu\": {}, \"uid\": {}, \"load_start\": {}, \"load_end\": {}, \"busy_before_pct\": {}, \"busy_after_pct\": {}, \"others_during_pct\": {}}},",
            m.nproc,
            json_str(&m.kernel),
            json_str(&m.cpu),
            json_str(&m.uid),
            json_str(&m.load_start),
            json_str(&m.load_end),
            m.busy_before_pct.map_or("null".into(), json_num),
            m.busy_after_pct.map_or("null".into(), json_num),
            m.others_during_pct.map_or("null".into(), json_num)
        );
        let _ = writeln!(o, "  \"noisy\": {},", self.noisy());
        let _ = writeln!(
            o,
            "  \"cordon\": {},",
            json_str(&self.cordon.to_string_lossy())
        );
        let _ = writeln!(
            o,
            "  \"bwrap_version\": {},",
            self.bwrap_version
                .as_deref()
                .map_or("null".into(), json_str)
        );
        let _ = writeln!(
            o,
            "  \"bwrap_error\": {},",
            self.bwrap_error.as_deref().map_or("null".into(), json_str)
        );
        let _ = writeln!(
            o,
            "  \"workspace\": {},",
            json_str(&self.workspace.to_string_lossy())
        );
        let _ = writeln!(o, "  \"iterations\": {},", self.iterations);
        let _ = writeln!(o, "  \"busy_core\": {},", self.busy_core);
        let _ = writeln!(o, "  \"warmup\": {},", self.warmup);
        let _ = writeln!(o, "  \"wall_s\": {},", json_num(self.wall.as_secs_f64()));
        o.push_str("  \"contenders\": [\n");
        let rows: Vec<String> = self
            .summaries
            .iter()
            .map(|s| {
                format!(
                    "    {{\"name\": {}, \"command\": {}, \"min_ms\": {}, \"median_ms\": {}, \"p90_ms\": {}, \"overhead_ms\": {}}}",
                    json_str(s.name),
                    json_str(&s.command),
                    json_num(s.min_ms),
                    json_num(s.median_ms),
                    json_num(s.p90_ms),
                    json_num(s.overhead_ms)
                )
            })
            .collect();
        o.push_str(&rows.join(",\n"));
        o.push_str("\n  ],\n");
        let _ = writeln!(
            o,
            "  \"spawn\": {{\"ratio\": {}, \"target\": {RATIO_TARGET}, \"pass\": {}}},",
            self.ratio().map_or("null".into(), json_num),
            json_opt(self.ratio_pass())
        );
        match &self.memory {
            None => o.push_str("  \"memory\": null\n"),
            Some(Err(e)) => {
                let _ = writeln!(o, "  \"memory\": {{\"error\": {}}}", json_str(e));
            }
            Some(Ok(mem)) => {
                let procs: Vec<String> = mem
                    .processes
                    .iter()
                    .map(|p| {
                        format!(
                            "{{\"role\": {}, \"pid\": {}, \"comm\": {}, \"rss_kib\": {}, \"pss_kib\": {}, \"peak_rss_kib\": {}}}",
                            json_str(&p.role),
                            p.pid,
                            json_str(&p.comm),
                            p.rss_kib,
                            json_opt(p.pss_kib),
                            p.hwm_kib
                        )
                    })
                    .collect();
                let (on, kib) = mem.judged();
                let _ = writeln!(
                    o,
                    "  \"memory\": {{\"processes\": [{}], \"total_rss_kib\": {}, \"total_pss_kib\": {}, \"judged_on\": {}, \"judged_kib\": {}, \"target_kib\": {MEMORY_TARGET_KIB}, \"pass\": {}, \"pass_by_rss\": {}, \"pss_error\": {}}}",
                    procs.join(", "),
                    mem.total_rss(),
                    json_opt(mem.total_pss()),
                    json_str(on),
                    kib,
                    kib < MEMORY_TARGET_KIB,
                    mem.total_rss() < MEMORY_TARGET_KIB,
                    mem.pss_error.as_deref().map_or("null".into(), json_str)
                );
            }
        }
        o.push_str("}\n");
        o
    }
}

// ---------------------------------------------------------------------------

fn main() -> ExitCode {
    main_with("bench/spawn", real_main)
}

fn real_main() -> Result<ExitCode, String> {
    let options = Options::parse();
    let cordon = find_cordon(options.cordon.as_deref())?;
    let (workspace, made_workspace) = workspace(options.workspace.as_deref(), "spawn")?;
    let result = bench(&options, cordon, &workspace);
    if made_workspace {
        let _ = std::fs::remove_dir_all(&workspace);
    }
    let results = result?;
    if options.json {
        print!("{}", results.json());
    } else {
        print!("{}", results.text());
    }
    let missed = results.ratio_pass() == Some(false) || results.memory_pass() == Some(false);
    Ok(exit_code(options.strict, missed))
}

fn bench(options: &Options, cordon: PathBuf, workspace: &Path) -> Result<Results, String> {
    let ws = workspace.as_os_str().to_os_string();
    let bare = Contender::new("bare", vec!["/bin/true".into()]);
    let cordon_c = Contender::new(
        "cordon",
        vec![
            cordon.clone().into(),
            "run".into(),
            "--".into(),
            "/bin/true".into(),
        ],
    );

    // bubblewrap: the same isolation as cordon's default (user, pid, net, ipc, uts
    // and mount namespaces; read-only root; writable workspace; private /tmp).
    let mut bwrap_error = None;
    let mut bwrap_version = None;
    let bwrap_path = options.bwrap.clone().or_else(|| find_in_path(&["bwrap"]));
    let bwrap = match bwrap_path {
        None => {
            bwrap_error = Some(
                "bwrap not found in PATH (install bubblewrap, e.g. `apt-get install -y bubblewrap`)"
                    .to_string(),
            );
            None
        }
        Some(path) => {
            let mut argv: Vec<OsString> = vec![path.clone().into()];
            argv.extend(
                [
                    "--unshare-user",
                    "--unshare-pid",
                    "--unshare-net",
                    "--unshare-ipc",
                    "--unshare-uts",
                    "--die-with-parent",
                    "--new-session",
                    "--ro-bind",
                    "/",
                    "/",
                    "--dev",
                    "/dev",
                    "--proc",
                    "/proc",
                    "--tmpfs",
                    "/tmp",
                    "--bind",
                ]
                .map(OsString::from),
            );
            argv.extend([
                ws.clone(),
                ws.clone(),
                "--chdir".into(),
                ws.clone(),
                "/bin/true".into(),
            ]);
            let c = Contender::new("bwrap", argv);
            match c.check(workspace) {
                Ok(()) => {
                    bwrap_version = Command::new(&path)
                        .arg("--version")
                        .output()
                        .ok()
                        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
                    Some(c)
                }
                Err(e) => {
                    bwrap_error = Some(e);
                    None
                }
            }
        }
    };
    if let Some(e) = &bwrap_error {
        eprintln!("bench/spawn: bubblewrap is left out: {e}");
    }

    bare.check(workspace)?;
    cordon_c.check(workspace)?;
    // The least any fresh-namespace sandbox must do (src/bin/floor.rs), built next
    // to this binary: a yardstick, not a peer.
    let floor = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("floor")))
        .filter(|path| path.exists())
        .map(|path| Contender::new("floor", vec![path.into(), ws.clone()]))
        .filter(|c| match c.check(workspace) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("bench/spawn: the floor yardstick is left out: {e}");
                false
            }
        });

    let mut contenders = vec![&bare];
    if let Some(b) = &bwrap {
        contenders.push(b);
    }
    contenders.push(&cordon_c);
    if let Some(f) = &floor {
        contenders.push(f);
    }

    // A quiet second first: how busy is the machine without us?
    let mut machine = machine();
    machine.busy_before_pct = busy_window(Duration::from_secs(1));

    for _ in 0..options.warmup {
        for c in &contenders {
            c.time(workspace)?;
        }
    }

    let spinner = options.busy_core.then(Spinner::start);
    let others_before = user_process_ticks();
    let ticks_before = machine_ticks();
    let start = Instant::now();
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(options.iterations); contenders.len()];
    for _ in 0..options.iterations {
        for (c, s) in contenders.iter().zip(samples.iter_mut()) {
            s.push(c.time(workspace)?.as_secs_f64() * 1e3);
        }
    }
    let wall = start.elapsed();
    drop(spinner);
    if let (Some((_, total0)), Some((_, total1))) = (ticks_before, machine_ticks()) {
        let others: u64 = user_process_ticks()
            .iter()
            .filter_map(|(k, after)| Some(after.saturating_sub(*others_before.get(k)?)))
            .sum();
        let total = total1.saturating_sub(total0).max(1);
        // A parent that reaps a long-running child during the run is charged all of
        // the child's time at once: an overestimate, hence the cap.
        machine.others_during_pct = Some((100.0 * others as f64 / total as f64).min(100.0));
    }
    // Let the last sandboxes' teardown finish, then a quiet second again.
    std::thread::sleep(Duration::from_millis(200));
    machine.busy_after_pct = busy_window(Duration::from_secs(1));
    machine.load_end = loadavg();

    let bare_median = summarize(&bare, &samples[0], None).median_ms;
    let summaries = contenders
        .iter()
        .zip(&samples)
        .map(|(c, s)| summarize(c, s, Some(bare_median)))
        .collect();

    let memory = options.memory.then(|| measure_memory(&cordon, workspace));

    Ok(Results {
        invocation: invocation("bench/spawn"),
        machine,
        cordon,
        bwrap_version,
        bwrap_error,
        workspace: workspace.to_path_buf(),
        iterations: options.iterations,
        warmup: options.warmup,
        busy_core: options.busy_core,
        wall,
        summaries,
        memory,
    })
}

/// A thread spinning on one core until dropped (`--busy-core`).
struct Spinner {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spinner {
    fn start() -> Spinner {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut x: u64 = 1;
            while !flag.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        });
        Spinner {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
