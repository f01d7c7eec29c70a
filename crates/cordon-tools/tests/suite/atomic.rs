//! Atomic write under SIGKILL: a child process writes a big file over and over
//! through the agent and is killed at random moments; the file must always hold
//! one version in full. Plus properties of path handling.

use crate::common;

use common::{Agent, dirs};
use cordon_test_support::PolicyEnv;
use proptest::prelude::*;
use serde_json::json;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ENV: &str = "CORDON_TOOLS_WRITE_LOOP";
const A_LEN: usize = 512 << 10;
const B_LEN: usize = 1 << 20;

/// Not a test on its own: the body of the child process (does nothing unless
/// `CORDON_TOOLS_WRITE_LOOP` names a directory).
#[test]
fn helper_write_loop() {
    let Some(root) = std::env::var_os(ENV) else {
        return;
    };
    let root = PathBuf::from(root);
    let policy = cordon_policy::resolve(&PolicyEnv::inputs_in(&root)).unwrap();
    let a = std::sync::Arc::new(Agent::with_policy(policy));
    let a2 = a.clone();
    // Two writers at once, each alternating, to stress the rename too.
    std::thread::spawn(move || {
        loop {
            a2.ok(
                "write",
                json!({ "path": "big", "content": "b".repeat(B_LEN) }),
            );
            a2.ok(
                "write",
                json!({ "path": "big", "content": "a".repeat(A_LEN) }),
            );
        }
    });
    loop {
        a.ok(
            "write",
            json!({ "path": "big", "content": "b".repeat(B_LEN) }),
        );
        a.ok(
            "write",
            json!({ "path": "big", "content": "a".repeat(A_LEN) }),
        );
    }
}

fn check(data: &[u8]) -> char {
    if data.len() == A_LEN && data.iter().all(|&b| b == b'a') {
        'a'
    } else if data.len() == B_LEN && data.iter().all(|&b| b == b'b') {
        'b'
    } else {
        panic!(
            "torn file: {} bytes, starts {:?}",
            data.len(),
            String::from_utf8_lossy(&data[..data.len().min(8)])
        );
    }
}

#[test]
fn write_survives_sigkill() {
    let d = dirs();
    let file = d.ws.join("big");
    fs::write(&file, "a".repeat(A_LEN)).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let mut seen_b = 0;
    const N: usize = 20;
    for _ in 0..N {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(30 + seed % 300);
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "atomic::helper_write_loop",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV, &d.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if check(&fs::read(&file).unwrap()) == 'b' {
            seen_b += 1;
        }
    }
    eprintln!("{seen_b} of {N} kills left the new version");
    // Writes did happen between kills (else the test proves nothing).
    assert!(seen_b > 0, "the file never changed in {N} runs");
}

/// `ws` joined with `segs`, `..` popping lexically (the agent follows symlinks
/// first, but the segments below never name one).
fn lexical(ws: &Path, segs: &[&str]) -> PathBuf {
    let mut p = ws.to_path_buf();
    for c in Path::new(&segs.join("/")).components() {
        match c {
            Component::ParentDir => {
                p.pop();
            }
            Component::Normal(n) => p.push(n),
            _ => {}
        }
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any string as a path: exactly one well-formed answer, never a crash.
    #[test]
    fn any_path_string_gets_an_answer(path in any::<String>(), method in 0usize..5) {
        let a = Agent::start();
        let m = ["read", "stat", "exists", "readdir", "mkdir"][method];
        let r = a.call(m, json!({ "path": path }));
        if let Some(e) = r.get("error") {
            let code = e["code"].as_i64().unwrap();
            prop_assert!([1, 2, 3, -32602].contains(&code), "{} {:?}: {}", m, path, e);
            prop_assert!(e["message"].as_str().is_some_and(|s| !s.is_empty()));
        } else {
            prop_assert!(r.get("result").is_some());
        }
        // Still alive.
        prop_assert_eq!(&a.ok("exists", json!({ "path": "." }))["exists"], &json!(true));
        a.close().unwrap();
    }

    /// A write lands exactly where the path says, and only inside the workspace.
    #[test]
    fn writes_stay_in_the_workspace(
        segs in prop::collection::vec(prop::sample::select(vec!["a", "b", "..", ".", "c d", "é"]), 1..7)
    ) {
        let a = Agent::start();
        let ws = a.ws().to_path_buf();
        let target = lexical(&ws, &segs);
        let r = a.call("write", json!({ "path": segs.join("/"), "content": "x" }));
        if target.starts_with(&ws) && target != ws {
            prop_assert!(r.get("result").is_some(), "{:?}: {}", segs, r);
            prop_assert_eq!(fs::read_to_string(&target).unwrap(), "x");
        } else if target == ws {
            prop_assert_eq!(&r["error"]["code"], &json!(3), "{:?}: {}", segs, r);
        } else {
            prop_assert_eq!(&r["error"]["code"], &json!(1), "{:?}: {}", segs, r);
            prop_assert!(!target.exists() || target.is_dir());
        }
        a.close().unwrap();
    }
}
