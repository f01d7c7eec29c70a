//! bench/pi-start: `cordon pi -- --version` next to `pi --version`, interleaved in
//! one run: medians, the overhead and the ratio (target: at most 1.1×).

use clap::Parser;
use cordon_bench::{Stats, exit_code, find_cordon, invocation, loadavg, main_with, verdict};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// The target of issue 5: cordon pi starts within 10% of pi itself.
const TARGET: f64 = 1.1;

#[derive(Parser)]
#[command(about = "`cordon pi -- --version` next to `pi --version`, interleaved")]
struct Args {
    /// Rounds (one of each per round).
    #[arg(long, default_value_t = 20, value_parser = cordon_bench::at_least_one::<usize>)]
    rounds: usize,
    /// The cordon binary (default: the one next to this binary).
    #[arg(long)]
    cordon: Option<PathBuf>,
    /// pi's executable (default: $CORDON_PI, else pi on PATH).
    #[arg(long)]
    pi: Option<PathBuf>,
    /// Exit 1 when the target is missed.
    #[arg(long)]
    strict: bool,
}

fn time(cmd: &mut Command) -> Result<f64, String> {
    let start = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| e.to_string())?;
    let took = start.elapsed().as_secs_f64() * 1000.0;
    if !status.success() {
        return Err(format!("{cmd:?} failed: {status}"));
    }
    Ok(took)
}

fn main() -> ExitCode {
    main_with("bench/pi-start", || {
        let args = Args::parse();
        let cordon = find_cordon(args.cordon.as_deref())?;
        let pi = args
            .pi
            .or_else(|| std::env::var_os("CORDON_PI").map(PathBuf::from))
            .or_else(|| cordon_bench::find_in_path(&["pi"]))
            .ok_or("no pi: install it (npm install -g @earendil-works/pi-coding-agent), or pass --pi PATH")?;
        let (work, made) = cordon_bench::workspace(None, "pi-start")?;
        let bare = || {
            let mut c = Command::new(&pi);
            c.arg("--version").current_dir(&work);
            c
        };
        let sandboxed = || {
            let mut c = Command::new(&cordon);
            c.args(["pi", "--", "--version"])
                .env("CORDON_PI", &pi)
                .current_dir(&work);
            c
        };
        println!("{}", invocation("bench/pi-start"));
        println!(
            "pi {}, cordon {}, load {}",
            pi.display(),
            cordon.display(),
            loadavg()
        );
        // Warm the page cache for both.
        time(&mut bare())?;
        time(&mut sandboxed())?;
        let (mut b, mut s) = (Vec::new(), Vec::new());
        for round in 0..args.rounds {
            if round % 2 == 0 {
                b.push(time(&mut bare())?);
                s.push(time(&mut sandboxed())?);
            } else {
                s.push(time(&mut sandboxed())?);
                b.push(time(&mut bare())?);
            }
        }
        if made {
            let _ = std::fs::remove_dir_all(&work);
        }
        let (b, s) = (Stats::of(&b), Stats::of(&s));
        let ratio = s.median / b.median;
        println!("{:<28} {:>9} {:>9} {:>9}", "", "min ms", "median", "p90");
        for (name, st) in [("pi --version", b), ("cordon pi -- --version", s)] {
            println!(
                "{name:<28} {:>9.1} {:>9.1} {:>9.1}",
                st.min, st.median, st.p90
            );
        }
        let pass = ratio <= TARGET;
        println!(
            "overhead {:.1} ms; ratio {ratio:.3} (target <= {TARGET}): {}",
            s.median - b.median,
            verdict(pass)
        );
        Ok(exit_code(args.strict, !pass))
    })
}
