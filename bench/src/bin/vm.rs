//! bench/vm: cold boot to the first exec through cordon's guest agent, next to the
//! same kernel booted bare by QEMU with a one-line init (`busybox sh -c 'echo ok;
//! poweroff -f'`), interleaved in one run; then the exec round trip through the
//! agent, and the channel's round trip (a line echoed by `cat` in the guest;
//! target ≤ 0.25 ms). Same QEMU, machine (microvm, pic=off, tsc_early_khz), accelerator,
//! memory and vCPUs for both. Target: agent / bare ≤ 1.2.
//!
//! Then the whole backend as a user runs it: `cordon run --backend vm -- true`
//! (QEMU in its OS sandbox, the guest's root the view over virtiofs or 9p), next to the
//! direct boot and to `cordon run --backend os -- true`.
//!
//! Last, snapshots: the same run restored from its template against booted
//! cold (`CORDON_VM_SNAPSHOTS=off`), interleaved, with the backend's own
//! timings (`CORDON_VM_TIMINGS`): restore → share mounted → first exec (target
//! ≤ 0.35 s under TCG) and the ratio; then QEMU's and cordon's host memory per
//! restored session.
//!
//! Then the file shares: `find` over 10,000 small files, reading each, and one
//! 100 MiB read, over virtiofs (where virtiofsd is installed) and 9p
//! interleaved, a VM each, beside `find` in the guest's own tmpfs. Targets:
//! virtiofs `find` ≤ 6× the tmpfs and ≥ 9× faster than 9p; the large read
//! ≥ 180 MB/s.
//!
//! Last, the network through the egress broker: curl in the guest downloads
//! `--net-mb` MB from an HTTP server on the host's loopback by name
//! (`--allow-domain bench.test:PORT --resolve bench.test:127.0.0.1`), three
//! times per run, next to the same with `--backend os`, interleaved; the
//! throughput is curl's own (size over its transfer time, the boot excluded).
//! Target: vm / os ≥ 0.5.
//!
//! The agent's time counts everything a session pays with a warm cache: finding
//! the kernel, hashing the inputs of the cached vmlinux and initramfs, choosing
//! the accelerator (the KVM probe), starting QEMU, the boot, loading the modules,
//! the agent's `Ready`, and `busybox echo hi` run to its exit status.

use clap::Parser;
use cordon_bench::{Stats, at_least_one, find_cordon, invocation, loadavg, main_with, median};
use cordon_vm::image::{self, Extra, Spec};
use cordon_vm::vm::{self, Accel, AccelChoice, Config, ExecRequest, Machine, Vm};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "bench/vm",
    about = "cordon's VM boot next to a bare boot of the same kernel"
)]
struct Args {
    /// boots of each kind, interleaved (default 5)
    #[arg(long, default_value_t = 5, value_parser = at_least_one::<usize>)]
    rounds: usize,
    /// exec round trips measured after one boot (default 50)
    #[arg(long, default_value_t = 50, value_parser = at_least_one::<usize>)]
    execs: usize,
    /// the cordon binary (default: next to this binary, target/release/cordon)
    #[arg(long, value_name = "PATH")]
    cordon: Option<PathBuf>,
    /// the kernel (default: the newest /boot/vmlinuz-* with its modules)
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// guest memory in MiB (default 256)
    #[arg(long, default_value_t = 256)]
    memory: u32,
    /// MB each download through the broker carries (default 64)
    #[arg(long, default_value_t = 64, value_parser = at_least_one::<usize>)]
    net_mb: usize,
    /// exit with status 1 if a ratio misses its target
    #[arg(long)]
    strict: bool,
    /// run only this section (default: all, about 12 minutes under TCG)
    #[arg(long, value_enum, value_name = "SECTION")]
    only: Option<Section>,
}

/// The sections of the bench, in the order a whole run takes them.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// cold boots against the bare kernel, the exec round trip, whole runs
    Boot,
    /// throughput through the egress broker
    Net,
    /// restored sessions against cold ones, and their memory
    Snapshots,
    /// virtiofs against 9p
    Shares,
}

const TARGET_RATIO: f64 = 1.2;

/// The channel's round trip (ms).
const CHANNEL_TARGET_MS: f64 = 0.25;

/// The guest's throughput through the broker over the OS backend's.
const NET_TARGET_RATIO: f64 = 0.5;

fn main() -> ExitCode {
    main_with("bench/vm", || {
        let args = Args::parse();
        run(&args)
    })
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let cordon = find_cordon(args.cordon.as_deref())?;
    let memory = format!("{}M", args.memory);
    let accel = vm::choose_accel(Accel::Auto);
    println!("bench/vm: {}", invocation("bench/vm"));
    println!(
        "machine: {} CPUs, load {}; QEMU {}; accelerator: {}",
        cordon_bench::nproc(),
        loadavg(),
        qemu_version(),
        accel.why
    );
    let wants = |section: Section| args.only.is_none_or(|only| only == section);
    let pass = !wants(Section::Boot) || boots(args, &cordon, &memory, &accel)?;
    let net_pass = !wants(Section::Net)
        || in_workspace("vm", |workspace| network(args, &cordon, workspace, &memory))?;
    let restore_pass = !wants(Section::Snapshots)
        || in_workspace("vm-snapshots", |workspace| {
            snapshots(args, &cordon, workspace)
        })?;
    let share_pass = !wants(Section::Shares)
        || in_workspace("vm-shares", |workspace| shares(args, &cordon, workspace))?;
    Ok(cordon_bench::exit_code(
        args.strict,
        !pass || !net_pass || !restore_pass || !share_pass,
    ))
}

/// Runs `f` in a fresh workspace named `name`, removed afterwards.
fn in_workspace<T>(name: &str, f: impl FnOnce(&Path) -> Result<T, String>) -> Result<T, String> {
    let (workspace, made) = cordon_bench::workspace(None, name)?;
    let result = f(&workspace);
    if made {
        let _ = std::fs::remove_dir_all(&workspace);
    }
    result
}

/// Cold boots against the bare kernel, the exec round trip, and whole runs of
/// both backends; says whether the boot ratio met its target.
fn boots(args: &Args, cordon: &Path, memory: &str, accel: &AccelChoice) -> Result<bool, String> {
    let cordon = cordon.to_path_buf();
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        return Err("no /bin/busybox (apt-get install busybox-static)".into());
    }
    let spec = || -> Result<Spec, String> {
        Ok(Spec {
            kernel: image::find_kernel(args.kernel.as_deref()).map_err(|e| e.to_string())?,
            agent: cordon.clone(),
            extras: vec![Extra {
                host: busybox.into(),
                guest: "/bin/busybox".into(),
            }],
            cache: image::cache_dir().map_err(|e| e.to_string())?,
        })
    };
    // Warm the cache (the first assembly unpacks the kernel).
    let t = Instant::now();
    let first = image::assemble(&spec()?).map_err(|e| e.to_string())?;
    let first_ms = ms(t.elapsed());
    let bare_initramfs = bare_initramfs(&first.initramfs, busybox)?;
    // The backend's machine (q35: Debian's 6.1 on QEMU 10's microvm hangs
    // under TCG here, see Config::for_policy).
    let config = Config {
        accel: Accel::Auto,
        memory_mib: args.memory,
        cpus: 1,
        ..Config::default()
    };
    let tsc = vm::host_tsc_khz();
    println!(
        "kernel: {}, vmlinux {} MB; initramfs {} MB (agent {}); first assembly {first_ms:.0} ms{}",
        spec()?.kernel.image.display(),
        size_mb(&first.vmlinux),
        size_mb(&first.initramfs),
        cordon.display(),
        if first.vmlinux_cached {
            " (vmlinux cached)"
        } else {
            ""
        }
    );

    let (mut bare, mut agent, mut assemble, mut boot, mut exec1) =
        (vec![], vec![], vec![], vec![], vec![]);
    for round in 0..args.rounds {
        // Bare first in even rounds, agent first in odd ones.
        for which in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            if which == 0 {
                bare.push(bare_boot(
                    &config,
                    &first.vmlinux,
                    &bare_initramfs,
                    accel.kvm,
                    tsc,
                )?);
            } else {
                let t = Instant::now();
                let image = image::assemble(&spec()?).map_err(|e| e.to_string())?;
                let t_image = t.elapsed();
                let mut vm = Vm::boot(&config, &image).map_err(|e| e.to_string())?;
                let t_boot = t.elapsed();
                let mut out = Vec::new();
                let status = vm
                    .exec(&echo(), None, &mut out, &mut std::io::sink())
                    .map_err(|e| e.to_string())?;
                let total = t.elapsed();
                if status.shell_code() != 0 || out != b"hi\n" {
                    return Err(format!("the first exec returned {status:?} {out:?}"));
                }
                agent.push(ms(total));
                assemble.push(ms(t_image));
                boot.push(ms(t_boot - t_image));
                exec1.push(ms(total - t_boot));
            }
        }
    }
    let (b, a) = (Stats::of(&bare), Stats::of(&agent));
    let ratio = a.median / b.median;
    println!(
        "\ncold boot, {} rounds interleaved (ms: median, min, p90):",
        args.rounds
    );
    println!(
        "  bare kernel, one-line init  {:7.0} {:7.0} {:7.0}",
        b.median, b.min, b.p90
    );
    println!(
        "  cordon agent, first exec    {:7.0} {:7.0} {:7.0}",
        a.median, a.min, a.p90
    );
    println!(
        "    of which: image (cache hit) {:.0}, QEMU start to Ready {:.0} (incl. the accelerator probe), first exec {:.0}",
        median(&assemble),
        median(&boot),
        median(&exec1)
    );
    let pass = ratio <= TARGET_RATIO;
    println!(
        "  ratio agent/bare: {ratio:.2} (target <= {TARGET_RATIO}) {}",
        cordon_bench::verdict(pass)
    );

    // The exec round trip on one booted VM.
    let image = image::assemble(&spec()?).map_err(|e| e.to_string())?;
    let mut vm = Vm::boot(&config, &image).map_err(|e| e.to_string())?;
    let mut trips = Vec::new();
    for _ in 0..args.execs + 3 {
        let t = Instant::now();
        let request = ExecRequest {
            argv: vec!["/bin/busybox".into(), "true".into()],
            ..echo()
        };
        vm.exec(&request, None, &mut std::io::sink(), &mut std::io::sink())
            .map_err(|e| e.to_string())?;
        trips.push(ms(t.elapsed()));
    }
    let trips = &trips[3..];
    let s = Stats::of(trips);
    println!(
        "\nexec round trip (`busybox true`, {} after 3 warm-up): median {:.1} ms, min {:.1}, p90 {:.1} (target <= 10)",
        trips.len(),
        s.median,
        s.min,
        s.p90
    );
    let echoes = echo_round_trips(&mut vm, args.execs * 4)?;
    let e = Stats::of(&echoes[10..]);
    println!(
        "channel round trip (32 bytes to `busybox cat` and back, {} after 10 warm-up): median {:.3} ms, min {:.3}, p90 {:.3} (target <= {CHANNEL_TARGET_MS}) {}",
        echoes.len() - 10,
        e.median,
        e.min,
        e.p90,
        cordon_bench::verdict(e.median <= CHANNEL_TARGET_MS)
    );
    drop(vm);

    // The whole backend, as a user runs it: `cordon run --backend vm -- true`
    // (policy, boot files, QEMU in its OS sandbox, the 9p root, the command, the
    // power-off), next to the direct boot above and to the OS backend.
    let (workspace, made) = cordon_bench::workspace(None, "vm")?;
    let timed = |backend: &str| -> Result<f64, String> {
        let t = Instant::now();
        let status = Command::new(&cordon)
            .args(["run", "--backend", backend, "--vm-memory", memory])
            .args(["--vm-cpus", "1", "--", "true"])
            .current_dir(&workspace)
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("{}: {e}", cordon.display()))?;
        if !status.success() {
            return Err(format!("cordon run --backend {backend} -- true: {status}"));
        }
        Ok(ms(t.elapsed()))
    };
    let (mut vm_runs, mut os_runs) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        vm_runs.push(timed("vm")?);
        os_runs.push(timed("os")?);
    }
    let (v, o) = (Stats::of(&vm_runs), Stats::of(&os_runs));
    println!(
        "\n`cordon run --backend vm -- true`, whole run, {} rounds (ms: median, min, p90):",
        args.rounds
    );
    println!(
        "  --backend vm                {:7.0} {:7.0} {:7.0}  ({:.2}x the direct agent boot above)",
        v.median,
        v.min,
        v.p90,
        v.median / a.median
    );
    println!(
        "  --backend os                {:7.1} {:7.1} {:7.1}",
        o.median, o.min, o.p90
    );
    if made {
        let _ = std::fs::remove_dir_all(&workspace);
    }
    Ok(pass)
}

/// virtiofs `find` over the tree at most this many times the guest's tmpfs.
const SHARE_FIND_TMPFS_RATIO: f64 = 6.0;
/// ... and at least this many times faster than 9p.
const SHARE_FIND_9P_RATIO: f64 = 9.0;
/// One large file read through virtiofs, MB/s at least.
const SHARE_READ_MBPS: f64 = 180.0;

/// What the guest times in the share bench: find, read every file, the large
/// read, find in its tmpfs, ls -lR.
const STEPS: usize = 5;

/// The tree of many small files: directories of files.
const TREE_DIRS: usize = 100;
const TREE_FILES: usize = 100;
/// The one large file, MiB.
const BIG_MIB: usize = 100;

/// The file shares side by side: in one VM per round and share (cold guest
/// caches, warm host caches), `find` over 10,000 small files of the workspace,
/// reading each of them, reading one 100 MiB file, `find` over a copy of
/// the tree in the guest's own tmpfs (`/dev/shm`), and `ls -lR` of the tree
/// (a stat of each file); virtiofs (where virtiofsd
/// is installed) and 9p (`CORDON_VM_SHARE`) interleaved. Says whether virtiofs
/// met its targets (true when it is not installed: nothing to hold).
fn shares(args: &Args, cordon: &Path, workspace: &Path) -> Result<bool, String> {
    let tree = workspace.join("tree");
    for d in 0..TREE_DIRS {
        let dir = tree.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for f in 0..TREE_FILES {
            std::fs::write(
                dir.join(format!("f{f}")),
                format!("file {d}/{f}\n").repeat(8),
            )
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    let big = workspace.join("big");
    std::fs::write(&big, vec![7u8; BIG_MIB << 20])
        .map_err(|e| format!("{}: {e}", big.display()))?;
    // Microseconds of each step, printed by the guest.
    let script = "t() { date +%s%N; }; a=$(t); find tree | wc -l > /dev/null; b=$(t); \
        find tree -type f -exec cat {} + > /dev/null; c=$(t); cat big > /dev/null; d=$(t); \
        cp -r tree /dev/shm/t; e=$(t); find /dev/shm/t | wc -l > /dev/null; f=$(t); \
        ls -lR tree > /dev/null; g=$(t); \
        echo \"steps $(( (b-a)/1000 )) $(( (c-b)/1000 )) $(( (d-c)/1000 )) $(( (f-e)/1000 )) \
        $(( (g-f)/1000 ))\"";
    let mut kinds = vec!["9p"];
    if cordon_vm::share::find_virtiofsd().is_some() {
        kinds.insert(0, "virtiofs");
    }
    let run = |kind: &str| -> Result<[f64; STEPS], String> {
        let out = Command::new(cordon)
            .args([
                "run",
                "--backend",
                "vm",
                "--vm-memory",
                "512M",
                "--vm-cpus",
                "1",
            ])
            .args(["--", "sh", "-c", script])
            .current_dir(workspace)
            .env(cordon_vm::share::SHARE_ENV, kind)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", cordon.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let steps: Vec<f64> = (stdout.lines())
            .find_map(|l| l.strip_prefix("steps "))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        match <[f64; STEPS]>::try_from(steps) {
            Ok(steps) if out.status.success() => Ok(steps.map(|us| us / 1000.0)),
            _ => Err(format!(
                "the share bench over {kind}: {}{stdout}",
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    };
    // Warm the host's caches and the templates of both shares.
    for kind in &kinds {
        run(kind)?;
    }
    let rounds = args.rounds.min(3);
    let mut results: Vec<(&str, Vec<[f64; STEPS]>)> =
        kinds.iter().map(|k| (*k, Vec::new())).collect();
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..kinds.len()).collect()
        } else {
            (0..kinds.len()).rev().collect()
        };
        for i in order {
            let steps = run(results[i].0)?;
            results[i].1.push(steps);
        }
    }
    println!(
        "\nfile shares: {} small files, one {BIG_MIB} MiB file, {rounds} rounds interleaved, a VM \
         each (ms, median):",
        TREE_DIRS * TREE_FILES
    );
    let med =
        |runs: &[[f64; STEPS]], i: usize| median(&runs.iter().map(|r| r[i]).collect::<Vec<_>>());
    for (kind, runs) in &results {
        println!(
            "  {kind:<9} find {:7.0} | read every file {:7.0} | read {BIG_MIB} MiB {:6.0} ({:.0} MB/s) \
             | find in the guest's tmpfs {:5.0} | ls -lR {:6.0}",
            med(runs, 0),
            med(runs, 1),
            med(runs, 2),
            (BIG_MIB as f64 * 1.048_576) / (med(runs, 2) / 1000.0),
            med(runs, 3),
            med(runs, 4)
        );
    }
    let [(first, fs), ..] = results.as_slice() else {
        return Ok(true);
    };
    if *first != "virtiofs" {
        println!("  virtiofs: not measured (no virtiofsd installed)");
        return Ok(true);
    }
    let ninep = &results[1].1;
    let vs_tmpfs = med(fs, 0) / med(fs, 3);
    let vs_9p = med(ninep, 0) / med(fs, 0);
    let read_mbps = (BIG_MIB as f64 * 1.048_576) / (med(fs, 2) / 1000.0);
    let pass = vs_tmpfs <= SHARE_FIND_TMPFS_RATIO
        && vs_9p >= SHARE_FIND_9P_RATIO
        && read_mbps >= SHARE_READ_MBPS;
    println!(
        "  virtiofs find: {vs_tmpfs:.1}x the guest's tmpfs (target <= {SHARE_FIND_TMPFS_RATIO}), \
         {vs_9p:.1}x faster than 9p (target >= {SHARE_FIND_9P_RATIO}); read every file {:.1}x and \
         ls -lR {:.1}x faster than 9p; {BIG_MIB} MiB read {read_mbps:.0} MB/s (target >= \
         {SHARE_READ_MBPS}) {}",
        med(ninep, 1) / med(fs, 1),
        med(ninep, 4) / med(fs, 4),
        cordon_bench::verdict(pass)
    );
    Ok(pass)
}

/// Downloads through the broker per run.
const DOWNLOADS: usize = 3;

/// The throughput of downloads through the egress broker, `--backend vm`
/// next to `--backend os` (MB/s, curl's figure); whether the ratio meets its
/// target.
fn network(args: &Args, cordon: &Path, workspace: &Path, memory: &str) -> Result<bool, String> {
    let bytes = args.net_mb << 20;
    let port = serve_bytes(bytes)?;
    let url = format!("http://bench.test:{port}/");
    let script = format!(
        "for i in $(seq {DOWNLOADS}); do curl -sS --noproxy '*' -o /dev/null \
         -w '%{{size_download}} %{{time_total}}\n' {url} || exit 1; done"
    );
    let allow = format!("bench.test:{port}");
    let run = |backend: &str| -> Result<Vec<f64>, String> {
        let out = Command::new(cordon)
            .args(["run", "--backend", backend, "--vm-memory", memory])
            .args(["--vm-cpus", "1", "--allow-domain", &allow])
            .args([
                "--resolve",
                "bench.test:127.0.0.1",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .current_dir(workspace)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", cordon.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "the download with --backend {backend} failed ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        text.lines()
            .map(|l| {
                let mut f = l.split_whitespace().map(str::parse::<f64>);
                match (f.next(), f.next()) {
                    (Some(Ok(size)), Some(Ok(secs))) if size as usize == bytes && secs > 0.0 => {
                        Ok(size / secs / 1e6)
                    }
                    _ => Err(format!(
                        "an incomplete download with --backend {backend}: {l}"
                    )),
                }
            })
            .collect()
    };
    let (mut vm_mbs, mut os_mbs) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        for backend in if round % 2 == 0 {
            ["vm", "os"]
        } else {
            ["os", "vm"]
        } {
            let speeds = run(backend)?;
            if backend == "vm" {
                vm_mbs.extend(speeds);
            } else {
                os_mbs.extend(speeds);
            }
        }
    }
    let (v, o) = (Stats::of(&vm_mbs), Stats::of(&os_mbs));
    let ratio = v.median / o.median;
    println!(
        "
through the egress broker: curl downloads {} MB by name, {DOWNLOADS} per run, {} runs each, interleaved (MB/s: median, min, p90):",
        args.net_mb, args.rounds
    );
    println!(
        "  --backend vm (guest stream) {:7.1} {:7.1} {:7.1}",
        v.median, v.min, v.p90
    );
    println!(
        "  --backend os (namespace)    {:7.1} {:7.1} {:7.1}",
        o.median, o.min, o.p90
    );
    let pass = ratio >= NET_TARGET_RATIO;
    println!(
        "  ratio vm/os: {ratio:.2} (target >= {NET_TARGET_RATIO}) {}",
        cordon_bench::verdict(pass)
    );
    Ok(pass)
}

/// The target of a restore to the first exec under TCG (ms).
const TARGET_RESTORE_MS: f64 = 350.0;

/// `cordon run --backend vm -- true` restored from its template against the
/// same booted cold (`CORDON_VM_SNAPSHOTS=off`), interleaved: the whole run,
/// and the backend's own timings (QEMU's sandbox made to the agent ready with
/// the share mounted, then the command); then QEMU's and cordon's host memory
/// while a restored session runs. Says whether the restore met its target.
fn snapshots(args: &Args, cordon: &Path, workspace: &Path) -> Result<bool, String> {
    let memory = format!("{}M", args.memory);
    let command = |snapshots: bool, argv: &[&str]| {
        let mut cmd = Command::new(cordon);
        cmd.args(["run", "--backend", "vm", "--vm-memory", &memory])
            .args(["--vm-cpus", "1", "--"])
            .args(argv)
            .current_dir(workspace)
            .env("CORDON_VM_TIMINGS", "1")
            .stdin(Stdio::null());
        if !snapshots {
            cmd.env("CORDON_VM_SNAPSHOTS", "off");
        }
        cmd
    };
    // (whole run, ready, command) in ms, and how the VM started.
    let timed = |snapshots: bool| -> Result<(f64, f64, f64, String), String> {
        let t = Instant::now();
        let out = command(snapshots, &["true"])
            .output()
            .map_err(|e| format!("{}: {e}", cordon.display()))?;
        let whole = ms(t.elapsed());
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!("cordon run --backend vm -- true: {stderr}"));
        }
        let line = stderr
            .lines()
            .find_map(|l| l.strip_prefix("cordon: vm timings: "))
            .ok_or_else(|| format!("no timings from cordon: {stderr}"))?;
        let number = |after: &str| -> Option<f64> {
            let rest = line.split(after).nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        };
        let how = line
            .split(" to the agent")
            .next()
            .unwrap_or("?")
            .to_string();
        match (number("mounted "), number("ready "), number("command ")) {
            (Some(ready), _, Some(cmd)) | (None, Some(ready), Some(cmd)) => {
                Ok((whole, ready, cmd, how))
            }
            _ => Err(format!("unreadable timings: {line}")),
        }
    };
    // The template, made if missing.
    let (_, _, _, first) = timed(true)?;
    let (mut restored, mut cold) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        for snapshots in if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        } {
            let (whole, ready, cmd, how) = timed(snapshots)?;
            let expected = if snapshots { "restored" } else { "cold" };
            if how != expected {
                return Err(format!("a run meant to be {expected} was {how}"));
            }
            let into = if snapshots { &mut restored } else { &mut cold };
            into.push((whole, ready, cmd, ready + cmd));
        }
    }
    let column = |runs: &[(f64, f64, f64, f64)], pick: fn(&(f64, f64, f64, f64)) -> f64| {
        Stats::of(&runs.iter().map(pick).collect::<Vec<_>>())
    };
    println!(
        "
snapshots: `cordon run --backend vm -- true`, restored vs cold, {} rounds interleaved \
         (first run: {first}; ms: median, min, p90):",
        args.rounds
    );
    for (name, runs) in [("restored", &restored), ("cold", &cold)] {
        let whole = column(runs, |r| r.0);
        let ready = column(runs, |r| r.1);
        let cmd = column(runs, |r| r.2);
        let first = column(runs, |r| r.3);
        println!(
            "  {name:<9} whole run {:6.0} {:6.0} {:6.0} | to ready{} {:5.0} | first exec {:5.0} | \
             together {:5.0} {:5.0} {:5.0}",
            whole.median,
            whole.min,
            whole.p90,
            if name == "cold" {
                " (boot)"
            } else {
                " + share"
            },
            ready.median,
            cmd.median,
            first.median,
            first.min,
            first.p90
        );
    }
    let r = column(&restored, |r| r.3).median;
    let c = column(&cold, |r| r.3).median;
    let wr = column(&restored, |r| r.0).median;
    let wc = column(&cold, |r| r.0).median;
    let pass = r <= TARGET_RESTORE_MS;
    println!(
        "  restore -> share mounted -> first exec: {r:.0} ms (target <= {TARGET_RESTORE_MS:.0} under TCG) {}; \
         cold/restored {:.1}x (to first exec), {:.1}x (whole run)",
        cordon_bench::verdict(pass),
        c / r,
        wc / wr
    );

    // Memory of a restored session: QEMU and cordon's own processes (cordon,
    // the sandbox's supervisor), resident, while the command sleeps.
    let mut child = command(true, &["sleep", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", cordon.display()))?;
    std::thread::sleep(Duration::from_millis(2500));
    let (mut qemu_kib, mut virtiofsd_kib, mut host_kib) = (0, 0, 0);
    let tree = descendants(child.id());
    for (pid, exe) in &tree {
        if exe.contains("qemu-system") {
            qemu_kib += rss_kib(*pid, false);
        } else if exe.ends_with("/virtiofsd") {
            // Its own pages: the guest's RAM it maps is QEMU's, counted there.
            virtiofsd_kib += rss_kib(*pid, true);
        } else {
            host_kib += rss_kib(*pid, false);
        }
    }
    let _ = child.wait();
    println!(
        "  memory per restored session ({} MiB guest, resident): QEMU {:.0} MiB, virtiofsd {:.0} \
         MiB (without the guest's RAM it maps), cordon's host processes {:.0} MiB ({} \
         processes), together {:.0} MiB",
        args.memory,
        qemu_kib as f64 / 1024.0,
        virtiofsd_kib as f64 / 1024.0,
        host_kib as f64 / 1024.0,
        tree.len(),
        (qemu_kib + virtiofsd_kib + host_kib) as f64 / 1024.0
    );
    Ok(pass)
}

/// `pid` and its descendants, with their executables.
fn descendants(pid: u32) -> Vec<(u32, String)> {
    let parent_of = |p: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut tree = vec![pid];
    let mut grew = true;
    while grew {
        grew = false;
        for &p in &all {
            if !tree.contains(&p) && parent_of(p).is_some_and(|q| tree.contains(&q)) {
                tree.push(p);
                grew = true;
            }
        }
    }
    tree.into_iter()
        .map(|p| {
            let exe = std::fs::read_link(format!("/proc/{p}/exe"))
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            (p, exe)
        })
        .collect()
}

/// The resident memory of `pid` (KiB; 0 once gone); `own`: without the shared
/// memory it maps (`RssShmem`).
fn rss_kib(pid: u32, own: bool) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        (status.lines())
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    if own {
        field("VmRSS:").saturating_sub(field("RssShmem:"))
    } else {
        field("VmRSS:")
    }
}

/// An HTTP server on 127.0.0.1 (a random port, for as long as this process
/// lives) answering every request with `bytes` bytes.
fn serve_bytes(bytes: usize) -> Result<u16, String> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let header = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n"
                );
                let chunk = vec![b'x'; 256 << 10];
                let mut left = bytes;
                let _ = stream.write_all(header.as_bytes());
                while left > 0 {
                    let n = left.min(chunk.len());
                    if stream.write_all(&chunk[..n]).is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    Ok(port)
}

/// The channel's round trip as an interactive command feels it: 32 bytes
/// written to `cat`'s stdin in the guest come back on its stdout (host →
/// virtio-serial → agent → pipe → cat → pipe → agent → virtio-serial → host),
/// one line at a time, `rounds` times (ms each).
fn echo_round_trips(vm: &mut Vm, rounds: usize) -> Result<Vec<f64>, String> {
    use std::sync::mpsc;
    /// cat's stdin: each line the timer sends, then the end when it hangs up.
    struct Lines(mpsc::Receiver<Vec<u8>>, std::io::Cursor<Vec<u8>>);
    impl std::io::Read for Lines {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.1.position() as usize == self.1.get_ref().len() {
                match self.0.recv() {
                    Ok(line) => self.1 = std::io::Cursor::new(line),
                    Err(_) => return Ok(0),
                }
            }
            self.1.read(buf)
        }
    }
    /// cat's stdout: tells the timer how many bytes came back.
    struct Echoed(mpsc::Sender<usize>);
    impl std::io::Write for Echoed {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.send(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    const LINE: usize = 32;
    let (send_line, lines) = mpsc::channel::<Vec<u8>>();
    let (echoed, came_back) = mpsc::channel::<usize>();
    let timer = std::thread::spawn(move || {
        let mut trips = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            let mut line = vec![b'x'; LINE - 1];
            line.push(b'\n');
            if send_line.send(line).is_err() {
                break;
            }
            let mut got = 0;
            while got < LINE {
                match came_back.recv_timeout(Duration::from_secs(10)) {
                    Ok(n) => got += n,
                    Err(_) => return trips,
                }
            }
            trips.push(ms(t.elapsed()));
        }
        trips // dropping `send_line` ends cat's stdin
    });
    let request = ExecRequest {
        argv: vec!["/bin/busybox".into(), "cat".into()],
        ..echo()
    };
    let stdin = Lines(lines, std::io::Cursor::new(Vec::new()));
    vm.exec(
        &request,
        Some(Box::new(stdin)),
        &mut Echoed(echoed),
        &mut std::io::sink(),
    )
    .map_err(|e| e.to_string())?;
    let trips = timer.join().map_err(|_| "the echo timer panicked")?;
    if trips.len() < rounds {
        return Err(format!(
            "cat echoed {} of {rounds} lines within 10 s each",
            trips.len()
        ));
    }
    Ok(trips)
}

fn echo() -> ExecRequest {
    ExecRequest {
        argv: vec!["/bin/busybox".into(), "echo".into(), "hi".into()],
        env: vec![("PATH".into(), "/bin".into())],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        tty: None,
        confine: None,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn size_mb(p: &Path) -> String {
    std::fs::metadata(p)
        .map(|m| format!("{:.1}", m.len() as f64 / 1e6))
        .unwrap_or_else(|_| "?".into())
}

fn qemu_version() -> String {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.trim_start_matches("QEMU emulator version ").to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// An initramfs with busybox alone, next to the agent's in the cache.
fn bare_initramfs(agent_initramfs: &Path, busybox: &Path) -> Result<PathBuf, String> {
    let path = agent_initramfs.with_file_name("bench-bare.cpio");
    let data = std::fs::read(busybox).map_err(|e| e.to_string())?;
    let mut w = image::cpio::Writer::new(Vec::new());
    (|| {
        w.dir("dev", 0o755)?;
        w.char_device("dev/console", 0o600, 5, 1)?;
        w.dir("bin", 0o755)?;
        w.file("bin/busybox", 0o755, &data)
    })()
    .map_err(|e| e.to_string())?;
    std::fs::write(&path, w.finish().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    Ok(path)
}

/// QEMU start to `ok` on the console of the bare kernel (ms).
fn bare_boot(
    config: &Config,
    vmlinux: &Path,
    initramfs: &Path,
    kvm: bool,
    tsc: u64,
) -> Result<f64, String> {
    let accel = if kvm { "kvm" } else { "tcg,tb-size=64" };
    let append = format!(
        "console=ttyS0 quiet panic=-1 tsc_early_khz={tsc} rdinit=/bin/busybox -- sh -c \"echo ok; /bin/busybox poweroff -f\""
    );
    let t = Instant::now();
    let mut child = Command::new(&config.qemu)
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-M",
            match config.machine {
                Machine::Microvm => "microvm,pic=off",
                Machine::Q35 => "q35",
            },
        ])
        .args([
            "-accel",
            accel,
            "-m",
            &config.memory_mib.to_string(),
            "-smp",
            "1",
        ])
        .args([
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
            "-nic",
            "none",
        ])
        .args([
            "-chardev",
            "stdio,id=con,signal=off",
            "-serial",
            "chardev:con",
        ])
        .args([
            "-kernel".as_ref(),
            vmlinux.as_os_str(),
            "-initrd".as_ref(),
            initramfs.as_os_str(),
        ])
        .args(["-append", &append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("qemu-system-x86_64: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut seen = None;
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        if line.trim_end() == "ok" {
            seen = Some(ms(t.elapsed()));
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen.ok_or_else(|| "the bare kernel never printed ok".to_string())
}
