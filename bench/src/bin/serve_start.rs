//! bench/serve-start: what a `cordon serve` session costs to start with its egress
//! broker running and nothing allowed (the default: `allowDomain` can widen it
//! later) next to one started with `--net none` (no broker), interleaved in one
//! run. Times, per session: spawn to `ready`, the first `exec` of /bin/true, and
//! closing stdin to the exit. Prints medians and the difference.

use clap::Parser;
use cordon_bench::{Stats, find_cordon, invocation, loadavg, main_with, nproc};
use cordon_tools::client::Client;
use cordon_tools::protocol::{Exec, ExecParams};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "bench/serve-start",
    about = "`cordon serve` with its broker (the default) next to `--net none`, interleaved"
)]
struct Args {
    /// Rounds (one session of each per round).
    #[arg(long, default_value_t = 20, value_parser = cordon_bench::at_least_one::<usize>)]
    rounds: usize,
    /// The cordon binary (default: the one next to this binary).
    #[arg(long)]
    cordon: Option<PathBuf>,
}

/// Milliseconds to `ready`, to the first exec's result, and from closing stdin
/// to the exit.
struct Sample {
    ready: f64,
    exec: f64,
    close: f64,
}

fn session(cordon: &Path, work: &Path, extra: &[&str]) -> Result<Sample, String> {
    let start = Instant::now();
    let mut child = Command::new(cordon)
        .arg("serve")
        .arg("--workspace")
        .arg(work)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cordon.display()))?;
    let mut client = Client::new(
        BufReader::new(child.stdout.take().ok_or("no stdout")?),
        child.stdin.take().ok_or("no stdin")?,
    );
    client.ready().map_err(|e| e.to_string())?;
    let ready = start.elapsed().as_secs_f64() * 1000.0;
    let result = client
        .call::<Exec>(&ExecParams {
            command: "/bin/true".into(),
            ..ExecParams::default()
        })
        .map_err(|e| e.to_string())?;
    if result.exit_code != Some(0) {
        return Err(format!("exec /bin/true: {result:?}"));
    }
    let exec = start.elapsed().as_secs_f64() * 1000.0 - ready;
    let closing = Instant::now();
    drop(client.into_input());
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("cordon serve ended with {status}"));
    }
    Ok(Sample {
        ready,
        exec,
        close: closing.elapsed().as_secs_f64() * 1000.0,
    })
}

fn main() -> ExitCode {
    main_with("bench/serve-start", || {
        let args = Args::parse();
        let cordon = find_cordon(args.cordon.as_deref())?;
        let (work, made) = cordon_bench::workspace(None, "serve-start")?;
        let kinds: [(&str, &[&str]); 2] = [
            ("--net none (no broker)", &["--net", "none"]),
            ("default (broker, nothing allowed)", &[]),
        ];
        println!("{}", invocation("bench/serve-start"));
        println!(
            "cordon {}, {} CPUs, load {}",
            cordon.display(),
            nproc(),
            loadavg()
        );
        for (_, extra) in kinds {
            session(&cordon, &work, extra)?;
        }
        let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
        for round in 0..args.rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                samples[i].push(session(&cordon, &work, kinds[i].1)?);
            }
        }
        if made {
            let _ = std::fs::remove_dir_all(&work);
        }
        let stat = |i: usize, f: fn(&Sample) -> f64| {
            Stats::of(&samples[i].iter().map(f).collect::<Vec<_>>())
        };
        println!(
            "{:<36} {:>16} {:>16} {:>16}",
            "median ms (p90)", "to ready", "first exec", "close to exit"
        );
        let mut medians = [[0.0; 3]; 2];
        for (i, (name, _)) in kinds.iter().enumerate() {
            let cols = [
                stat(i, |s| s.ready),
                stat(i, |s| s.exec),
                stat(i, |s| s.close),
            ];
            for (m, c) in medians[i].iter_mut().zip(&cols) {
                *m = c.median;
            }
            println!(
                "{name:<36} {:>16} {:>16} {:>16}",
                format!("{:.1} ({:.1})", cols[0].median, cols[0].p90),
                format!("{:.2} ({:.2})", cols[1].median, cols[1].p90),
                format!("{:.1} ({:.1})", cols[2].median, cols[2].p90),
            );
        }
        println!(
            "the broker costs {:+.1} ms to ready ({:.2}x), {:+.2} ms on the first exec, {:+.1} ms at the close",
            medians[1][0] - medians[0][0],
            medians[1][0] / medians[0][0],
            medians[1][1] - medians[0][1],
            medians[1][2] - medians[0][2],
        );
        Ok(ExitCode::SUCCESS)
    })
}
