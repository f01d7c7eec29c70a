//! Latency of exec end to end through the agent, in-process (ignored by default):
//! `cargo test --release -p cordon-tools --test latency -- --ignored --nocapture`

mod common;

use common::Agent;
use serde_json::json;
use std::time::{Duration, Instant};

fn median_of(a: &Agent, command: &str, n: usize, cwd: &str) -> (Duration, Duration) {
    let mut t: Vec<Duration> = (0..n)
        .map(|_| {
            let s = Instant::now();
            let (r, _, _) = a.exec(json!({ "command": command, "cwd": cwd }));
            let d = s.elapsed();
            assert_eq!(r["exitCode"], 0);
            d
        })
        .collect();
    t.sort();
    (t[n / 2], t[n * 9 / 10])
}

#[test]
#[ignore]
fn exec_true_latency() {
    let a = Agent::start();
    assert!(cordon_tools::is_direct("/bin/true", a.ws()));
    assert!(!cordon_tools::is_direct("'/bin/true'", a.ws()));
    let ws = a.ws().to_str().unwrap().to_string();
    // The agent's own directory (as in the sandbox, where it starts in the
    // workspace), and another one.
    let own = std::env::current_dir()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    median_of(&a, "/bin/true", 50, &own); // warm up
    for (label, cwd) in [("cwd = agent's cwd", &own), ("other cwd", &ws)] {
        let (fast, fast90) = median_of(&a, "/bin/true", 1000, cwd);
        let (bash, bash90) = median_of(&a, "'/bin/true'", 1000, cwd);
        println!(
            "exec /bin/true ({label}), median of 1000: fast path {fast:?} (p90 {fast90:?}), via bash {bash:?} (p90 {bash90:?})"
        );
    }
    let mut base: Vec<Duration> = (0..1000)
        .map(|_| {
            let s = Instant::now();
            std::process::Command::new("/bin/true").status().unwrap();
            s.elapsed()
        })
        .collect();
    base.sort();
    println!(
        "baseline: std::process::Command /bin/true, median of 1000: {:?}",
        base[500]
    );
    type Tweak = fn(&mut std::process::Command);
    let variants: [(&str, Tweak); 3] = [
        ("current_dir", |c| {
            c.current_dir("/");
        }),
        ("process_group", |c| {
            std::os::unix::process::CommandExt::process_group(c, 0);
        }),
        ("pipes", |c| {
            c.stdout(std::process::Stdio::piped());
        }),
    ];
    for (name, tweak) in variants {
        let mut v: Vec<Duration> = (0..300)
            .map(|_| {
                let s = Instant::now();
                let mut c = std::process::Command::new("/bin/true");
                tweak(&mut c);
                c.output().unwrap();
                s.elapsed()
            })
            .collect();
        v.sort();
        println!("  with {name}: {:?}", v[150]);
    }
    let s = Instant::now();
    for _ in 0..1000 {
        a.ok("stat", json!({ "path": "." }));
    }
    println!("stat round trip, mean of 1000: {:?}", s.elapsed() / 1000);
    a.close().unwrap();
}
