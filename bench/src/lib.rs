//! What the bench drivers (`bench/spawn`, `bench/egress`, `bench/tools`) share:
//! their command-line helpers, statistics, finding the binaries they run, the
//! description of the machine and how busy it was, and small output helpers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

// ---------------------------------------------------------------------------
// The command line

/// A clap value parser for a count that must be at least 1: a whole number,
/// and 0 is taken as 1.
pub fn at_least_one<T: std::str::FromStr + Ord + From<u8>>(s: &str) -> Result<T, String> {
    s.parse::<T>()
        .map(|n| n.max(T::from(1)))
        .map_err(|_| format!("needs a number, got {s:?}"))
}

/// The command line as given: `name` and then every argument.
pub fn invocation(name: &str) -> String {
    let mut s = String::from(name);
    for a in std::env::args().skip(1) {
        s.push(' ');
        s.push_str(&a);
    }
    s
}

/// Runs a driver's body: its exit code, or its error on stderr as `name: error`
/// and exit status 2.
pub fn main_with(name: &str, body: impl FnOnce() -> Result<ExitCode, String>) -> ExitCode {
    match body() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::from(2)
        }
    }
}

/// Exit status 1 when `--strict` was given and a target was missed, else success.
pub fn exit_code(strict: bool, missed: bool) -> ExitCode {
    if strict && missed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

// ---------------------------------------------------------------------------
// Statistics

/// The samples sorted, smallest first.
fn sorted(samples: &[f64]) -> Vec<f64> {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s
}

/// The median (the mean of the middle two of an even count); NaN when empty.
pub fn median(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let s = sorted(samples);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile `p` (0 to 100); NaN when empty.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let s = sorted(samples);
    let n = s.len();
    s[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1]
}

/// The smallest and the largest sample (infinities when empty).
pub fn min_max(samples: &[f64]) -> (f64, f64) {
    samples
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// The minimum, median and 90th percentile (nearest rank) of some samples.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub min: f64,
    pub median: f64,
    pub p90: f64,
}

impl Stats {
    /// The summary of `samples` (NaN everywhere when empty).
    pub fn of(samples: &[f64]) -> Stats {
        if samples.is_empty() {
            return Stats {
                min: f64::NAN,
                median: f64::NAN,
                p90: f64::NAN,
            };
        }
        Stats {
            min: min_max(samples).0,
            median: median(samples),
            p90: percentile(samples, 90.0),
        }
    }
}

// ---------------------------------------------------------------------------
// The binaries a driver runs

/// `name` in the directory of this binary (cargo builds them all side by side),
/// if it is a file there.
pub fn next_to_me(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.join(name);
    path.is_file().then_some(path)
}

/// The binary `given` on the command line or else `name` next to this binary,
/// made absolute; `hint` says how to get it when there is none.
pub fn find_binary(given: Option<&Path>, name: &str, hint: &str) -> Result<PathBuf, String> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => {
            next_to_me(name).ok_or_else(|| format!("no {name} binary next to this one; {hint}"))?
        }
    };
    std::fs::canonicalize(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The cordon binary: `--cordon PATH` or the one next to this binary, made absolute.
pub fn find_cordon(given: Option<&Path>) -> Result<PathBuf, String> {
    find_binary(
        given,
        "cordon",
        "build it with `cargo build --release -p cordon` or pass --cordon PATH",
    )
}

/// The first of `names` found in a directory of $PATH.
pub fn find_in_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The workspace a sandbox gets: `given` made absolute, or a fresh directory
/// `bench-NAME-workspace-PID` (readable by everyone) under the cargo target
/// directory (this binary lives in <target>/[<triple>/]release), or under
/// $HOME/.cache if that is below /tmp (private inside a sandbox, and covered by
/// bubblewrap's `--tmpfs /tmp`). The flag says whether it was made here (for the
/// caller to remove).
pub fn workspace(given: Option<&Path>, name: &str) -> Result<(PathBuf, bool), String> {
    match given {
        Some(w) => Ok((
            std::fs::canonicalize(w).map_err(|e| format!("{}: {e}", w.display()))?,
            false,
        )),
        None => Ok((
            fresh_workspace(name).map_err(|e| format!("cannot create a workspace: {e}"))?,
            true,
        )),
    }
}

fn fresh_workspace(name: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe()?;
    let mut base = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    if base.starts_with("/tmp") {
        base = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into())).join(".cache");
    }
    let dir = base.join(format!("bench-{name}-workspace-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// Raises the soft limit on open descriptors to the hard limit; returns the
/// soft limit in force afterwards (0 if it cannot be read).
pub fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            }
        }
    }
    limit.rlim_cur
}

// ---------------------------------------------------------------------------
// The machine, and how busy it was

/// A file's text, or "" when it cannot be read (for /proc files).
pub fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The number of a `Field:   123 kB` line of a /proc file's `text` (KiB).
pub fn kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(':')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg has them.
pub fn loadavg() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The number of CPUs this process may use (nproc).
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The kernel's release, e.g. `6.8.0-45-generic`.
pub fn kernel_release() -> String {
    read("/proc/sys/kernel/osrelease").trim().to_string()
}

/// `Linux <release> <architecture>`.
pub fn kernel() -> String {
    format!("Linux {} {}", kernel_release(), std::env::consts::ARCH)
}

/// The CPU's model name from /proc/cpuinfo, or `unknown`.
pub fn cpu_model() -> String {
    read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// (busy, total) clock ticks of all CPUs from /proc/stat; steal time is left out
/// of both (on a VM it is the host's business, not this machine's).
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = read("/proc/stat");
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(7) // user nice system idle iowait irq softirq
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total - idle, total))
}

/// Percent of all CPUs busy during `window`, while this process only sleeps.
pub fn busy_window(window: Duration) -> Option<f64> {
    let (busy0, total0) = machine_ticks()?;
    std::thread::sleep(window);
    let (busy1, total1) = machine_ticks()?;
    let total = total1.checked_sub(total0)?.max(1);
    Some(100.0 * busy1.saturating_sub(busy0) as f64 / total as f64)
}

/// Above this percent of all CPUs busy with other work, the numbers are noisy.
pub const NOISY_PCT: f64 = 10.0;

/// Whether any of these busy percentages is above [`NOISY_PCT`].
pub fn noisy(busy: &[Option<f64>]) -> bool {
    busy.iter().any(|p| p.is_some_and(|p| p > NOISY_PCT))
}

// ---------------------------------------------------------------------------
// Output

/// `PASS` or `FAIL`.
pub fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

/// A percentage as `12%`, or `?` when unknown.
pub fn percent(p: Option<f64>) -> String {
    p.map_or("?".into(), |p| format!("{p:.0}%"))
}
