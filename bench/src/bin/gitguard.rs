//! bench/gitguard: what the git audit (cordon-gitguard, run when every sandbox
//! ends) costs on a real source tree, next to `find TREE -name .git` (the
//! cheapest tool that looks at every directory for git dirs) and a bare in-process
//! directory walk (the floor: every walk reads each directory once), interleaved
//! in one run. Nothing in the tree changed after `since`, so the audit judges and
//! changes nothing: this is the cost every run pays. The audit runs twice a
//! round: as a first run on the tree pays it (every directory read), and with the
//! listings the last audit kept (what every later run pays; see
//! cordon-gitguard's `listing`).

use clap::Parser;
use cordon_bench::{Stats, invocation, main_with, median};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Instant, SystemTime};

#[derive(Parser)]
#[command(about = "The git audit's cost on a tree, next to find and a bare walk")]
struct Args {
    /// The tree to audit (default: the tree bench/tools builds, else this
    /// repository's crates/).
    #[arg(long)]
    tree: Option<PathBuf>,
    /// Rounds of each.
    #[arg(long, default_value_t = 30, value_parser = cordon_bench::at_least_one::<usize>)]
    rounds: usize,
}

fn bare_walk(root: &Path) -> usize {
    let mut dirs = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        dirs += 1;
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    dirs
}

fn ms(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

fn main() -> ExitCode {
    main_with("bench/gitguard", || {
        let args = Args::parse();
        let tree = match args.tree {
            Some(t) => t,
            None => {
                let built = PathBuf::from("/var/tmp/cordon-bench-tools/tree");
                if built.is_dir() {
                    built
                } else {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates")
                }
            }
        };
        let tree = tree
            .canonicalize()
            .map_err(|e| format!("{}: {e}", tree.display()))?;
        println!("{}", invocation("bench/gitguard"));
        println!(
            "tree: {} ({} directories)",
            tree.display(),
            bare_walk(&tree)
        );
        let roots = [tree.clone()];
        let since = SystemTime::now();
        let kept = std::env::temp_dir().join(format!("bench-gitguard-{}", std::process::id()));
        std::fs::create_dir_all(&kept).map_err(|e| format!("{}: {e}", kept.display()))?;
        let audit_with = |listings: Option<&Path>| {
            let report = cordon_gitguard::audit(&cordon_gitguard::Audit {
                roots: &roots,
                read_only: &[],
                since,
                listings,
            });
            assert!(report.neutralised.is_empty());
        };
        audit_with(Some(&kept));
        let (mut audit, mut warm, mut find, mut walk) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            audit.push(ms(|| audit_with(None)));
            warm.push(ms(|| audit_with(Some(&kept))));
            find.push(ms(|| {
                let _ = Command::new("find")
                    .arg(&tree)
                    .args(["-name", ".git"])
                    .stdout(Stdio::null())
                    .status();
            }));
            walk.push(ms(|| {
                bare_walk(&tree);
            }));
        }
        let show = |name: &str, s: &[f64]| {
            let st = Stats::of(s);
            println!(
                "{name:<28} median {:8.2} ms  min {:8.2}  p90 {:8.2}",
                st.median, st.min, st.p90
            );
        };
        let _ = std::fs::remove_dir_all(&kept);
        show("cordon-gitguard audit", &audit);
        show("  with the kept listings", &warm);
        show("find TREE -name .git", &find);
        show("bare walk (floor)", &walk);
        println!(
            "ratio audit/find: {:.2}   audit/bare walk: {:.2}   with listings/bare walk: {:.2}",
            median(&audit) / median(&find),
            median(&audit) / median(&walk),
            median(&warm) / median(&walk)
        );
        Ok(ExitCode::SUCCESS)
    })
}
