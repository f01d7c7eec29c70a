//! exec: output, status, stdin, env, cwd, timeout, cancel, concurrency, and that
//! killing reaches the whole process group.

use crate::common;

use common::{Agent, process_gone};
use serde_json::json;
use std::fs;
use std::time::{Duration, Instant};

#[test]
fn output_status_and_streams() {
    let a = Agent::start();
    let (r, out, err) = a.exec(json!({ "command": "echo hello; echo oops >&2; exit 3" }));
    assert_eq!(out, b"hello\n");
    assert_eq!(err, b"oops\n");
    assert_eq!(
        r,
        json!({ "exitCode": 3, "signal": null, "timedOut": false, "cancelled": false })
    );
    // Killed by a signal.
    let (r, _, _) = a.exec(json!({ "command": "kill -TERM $$" }));
    assert_eq!(r["exitCode"], json!(null));
    assert_eq!(r["signal"], "SIGTERM");
    // Not found.
    let (r, _, err) = a.exec(json!({ "command": "no-such-command-xyz" }));
    assert_eq!(r["exitCode"], 127);
    assert!(String::from_utf8_lossy(&err).contains("not found"));
    // Large output arrives whole and in order.
    let (r, out, _) = a.exec(json!({ "command": "seq 1 200000" }));
    assert_eq!(r["exitCode"], 0);
    let expect: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    assert_eq!(String::from_utf8(out).unwrap(), expect);
    a.close().unwrap();
}

#[test]
fn cwd_env_stdin() {
    let a = Agent::start();
    let ws = a.ws().to_path_buf();
    let (_, out, _) = a.exec(json!({ "command": "pwd" }));
    assert_eq!(String::from_utf8(out).unwrap().trim(), ws.to_str().unwrap());
    fs::create_dir(ws.join("sub")).unwrap();
    let (_, out, _) = a.exec(json!({ "command": "pwd", "cwd": "sub" }));
    assert_eq!(
        String::from_utf8(out).unwrap().trim(),
        ws.join("sub").to_str().unwrap()
    );
    // The fast path gets the cwd too.
    let (_, out, _) = a.exec(json!({ "command": "/bin/pwd", "cwd": "sub" }));
    assert_eq!(
        String::from_utf8(out).unwrap().trim(),
        ws.join("sub").to_str().unwrap()
    );
    let (_, out, _) =
        a.exec(json!({ "command": "echo $FOO-$BAR", "env": { "FOO": "x y", "BAR": "" } }));
    assert_eq!(out, b"x y-\n");
    let (_, out, _) = a.exec(json!({ "command": "env", "env": { "ZZ_FAST": "1" } }));
    assert!(String::from_utf8_lossy(&out).contains("ZZ_FAST=1\n"));
    let (_, out, _) = a.exec(json!({ "command": "cat", "stdin": "line1\nline2\n" }));
    assert_eq!(out, b"line1\nline2\n");
    // A big stdin the child does not read does not hang the request.
    let big = "x".repeat(1 << 20);
    let (r, _, _) = a.exec(json!({ "command": "true", "stdin": big }));
    assert_eq!(r["exitCode"], 0);
    let (_, out, _) = a.exec(json!({ "command": "wc -c", "stdin": big }));
    assert_eq!(
        String::from_utf8(out).unwrap().trim(),
        (1 << 20).to_string()
    );
    // Default stdin is empty, never the agent's own input.
    let t = Instant::now();
    let (_, out, _) = a.exec(json!({ "command": "cat" }));
    assert_eq!(out, b"");
    assert!(t.elapsed() < Duration::from_secs(5));
    a.err("exec", json!({ "command": "true", "cwd": "missing" }), 2);
    fs::write(ws.join("file"), "").unwrap();
    a.err("exec", json!({ "command": "true", "cwd": "file" }), 3);
    a.err("exec", json!({}), -32602);
    a.close().unwrap();
}

#[test]
fn fast_path_matches_the_shell() {
    let a = Agent::start();
    let ws = a.ws().to_path_buf();
    assert!(cordon_tools::is_direct("ls -a /", &ws));
    assert!(!cordon_tools::is_direct("echo hi", &ws));
    for cmd in [
        "ls -a",
        "/bin/echo a  b   c",
        "printenv PWD",
        "head -c 3 /etc/hostname",
        "uname",
    ] {
        let (r1, o1, e1) = a.exec(json!({ "command": cmd }));
        let (r2, o2, e2) = a.exec(json!({ "command": format!("{cmd};") }));
        assert_eq!((r1, o1, e1), (r2, o2, e2), "{cmd}");
    }
    // A script without a shebang falls back to the shell.
    fs::write(ws.join("noshebang"), "echo from-script\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(ws.join("noshebang"), fs::Permissions::from_mode(0o755)).unwrap();
    let (r, out, _) = a.exec(json!({ "command": "./noshebang" }));
    assert_eq!(r["exitCode"], 0);
    assert_eq!(out, b"from-script\n");
    a.close().unwrap();
}

/// A mask line of /proc/self/status (`SigBlk:`, `SigIgn:`) as a number.
fn signal_mask(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line[field.len()..].trim(), 16).unwrap()
}

#[test]
fn commands_start_with_no_signal_blocked_and_sigpipe_at_its_default() {
    // The agent blocks every signal around the clone and ignores SIGPIPE (Rust's
    // runtime does); the command must get neither, on both ways of starting it.
    let a = Agent::start();
    for cmd in ["cat /proc/self/status", "cat /proc/self/status;"] {
        let (r, out, _) = a.exec(json!({ "command": cmd }));
        assert_eq!(r["exitCode"], 0, "{cmd}");
        let status = String::from_utf8(out).unwrap();
        assert_eq!(signal_mask(&status, "SigBlk:"), 0, "{cmd}: {status}");
        let sigpipe = 1u64 << (libc::SIGPIPE - 1);
        assert_eq!(signal_mask(&status, "SigIgn:") & sigpipe, 0, "{cmd}");
    }
    // And SIGPIPE kills a writer to a closed pipe, as in a terminal.
    let (r, _, _) =
        a.exec(json!({ "command": "yes | head -c 1 >/dev/null; echo ${PIPESTATUS[0]}" }));
    assert_eq!(r["exitCode"], 0);
    let (_, out, _) =
        a.exec(json!({ "command": "yes | head -c 1 >/dev/null; echo ${PIPESTATUS[0]}" }));
    assert_eq!(out, b"141\n");
    a.close().unwrap();
}

#[test]
fn direct_commands_started_at_once_from_many_threads_each_get_their_own() {
    // Each start clones on a stack in its own thread's frame while the agent's
    // other threads run: 60 at once must each run their own argv, env and cwd.
    let a = Agent::start();
    let ws = a.ws().to_path_buf();
    for i in 0..6 {
        fs::create_dir(ws.join(format!("d{i}"))).unwrap();
    }
    let ids: Vec<(u64, usize)> = (0..60)
        .map(|i| {
            let params = json!({
                "command": format!("/usr/bin/env ARG={i}"),
                "cwd": format!("d{}", i % 6),
                "env": { "MINE": i.to_string() },
            });
            (a.send("exec", params), i)
        })
        .collect();
    for (id, i) in ids {
        assert_eq!(a.wait(id)["result"]["exitCode"], 0);
        let (out, _) = a.take_output(id);
        let out = String::from_utf8(out).unwrap();
        let pwd = ws.join(format!("d{}", i % 6));
        for want in [
            format!("ARG={i}\n"),
            format!("MINE={i}\n"),
            format!("PWD={}\n", pwd.display()),
        ] {
            assert!(out.contains(&want), "request {i}: no {want:?} in {out}");
        }
    }
    a.close().unwrap();
}

/// Runs `sleep 300` in the background, prints its pid, then blocks.
const WITH_GRANDCHILD: &str = "sleep 300 & echo $!; sleep 300";

fn first_line_pid(a: &Agent, id: u64) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        {
            let (out, _) = a.take_output(id);
            if !out.is_empty() {
                let s = String::from_utf8(out).unwrap();
                return s.trim().parse().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no pid printed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn timeout_kills_the_group() {
    let a = Agent::start();
    let t = Instant::now();
    let id = a.send(
        "exec",
        json!({ "command": WITH_GRANDCHILD, "timeout": 0.5 }),
    );
    let pid = first_line_pid(&a, id);
    let r = a.wait(id);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(
        r["result"],
        json!({ "exitCode": null, "signal": "SIGKILL", "timedOut": true, "cancelled": false })
    );
    assert!(
        process_gone(pid, Duration::from_secs(5)),
        "grandchild {pid} survived"
    );
    a.close().unwrap();
}

#[test]
fn cancel_kills_the_group() {
    let a = Agent::start();
    let id = a.send("exec", json!({ "command": WITH_GRANDCHILD }));
    let pid = first_line_pid(&a, id);
    let c = a.ok("cancel", json!({ "id": id }));
    assert_eq!(c["cancelled"], true);
    let r = a.wait(id);
    assert_eq!(r["result"]["cancelled"], true);
    assert_eq!(r["result"]["timedOut"], false);
    assert_eq!(r["result"]["signal"], "SIGKILL");
    assert!(
        process_gone(pid, Duration::from_secs(5)),
        "grandchild {pid} survived"
    );
    // No longer pending.
    assert_eq!(a.ok("cancel", json!({ "id": id }))["cancelled"], false);
    assert_eq!(a.ok("cancel", json!({ "id": 999_999 }))["cancelled"], false);
    assert_eq!(a.ok("cancel", json!({ "id": "nope" }))["cancelled"], false);
    a.err("cancel", json!({}), -32602);
    a.close().unwrap();
}

#[test]
fn eof_kills_running_commands() {
    let a = Agent::start();
    let id = a.send("exec", json!({ "command": WITH_GRANDCHILD }));
    let pid = first_line_pid(&a, id);
    let t = Instant::now();
    a.close().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(
        process_gone(pid, Duration::from_secs(5)),
        "grandchild {pid} survived"
    );
}

#[test]
fn background_process_does_not_hold_the_request() {
    let a = Agent::start();
    let t = Instant::now();
    let (r, out, _) = a.exec(json!({
        "command": "(sleep 1; echo late) & echo $!; echo now"
    }));
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(r["exitCode"], 0);
    let s = String::from_utf8(out).unwrap();
    let mut lines = s.lines();
    let pid: i32 = lines.next().unwrap().parse().unwrap();
    assert_eq!(lines.next(), Some("now"));
    // The background writer finishes normally (no SIGPIPE) and is not reported.
    assert!(process_gone(pid, Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(200));
    let (late, _) = a.take_output(1);
    assert!(late.is_empty());
    a.close().unwrap();
}

#[test]
fn slow_exec_does_not_block_reads() {
    let a = Agent::start();
    fs::write(a.ws().join("f"), "data").unwrap();
    let slow = a.send("exec", json!({ "command": "sleep 2" }));
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let ids: Vec<u64> = (0..50)
        .map(|_| a.send("read", json!({ "path": "f" })))
        .collect();
    for id in ids {
        assert!(a.wait(id).get("result").is_some());
    }
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(a.wait(slow)["result"]["exitCode"], 0);
    a.close().unwrap();
}

#[test]
fn many_concurrent_execs() {
    let a = Agent::start();
    let t = Instant::now();
    let ids: Vec<(u64, usize)> = (0..40)
        .map(|i| {
            (
                a.send("exec", json!({ "command": format!("sleep 0.5; echo {i}") })),
                i,
            )
        })
        .collect();
    for (id, i) in ids {
        let r = a.wait(id);
        assert_eq!(r["result"]["exitCode"], 0);
        let (out, _) = a.take_output(id);
        assert_eq!(String::from_utf8(out).unwrap(), format!("{i}\n"));
    }
    // Run together, not one after another (40 × 0.5 s).
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    a.close().unwrap();
}

#[test]
fn cancelled_non_exec_request_gets_error_4() {
    let a = Agent::start();
    // A big tree so that find takes a while.
    for i in 0..200 {
        let d = a.ws().join(format!("d{i}"));
        fs::create_dir(&d).unwrap();
        for j in 0..50 {
            fs::write(d.join(format!("f{j}")), "").unwrap();
        }
    }
    let id = a.send("find", json!({ "pattern": "*" }));
    let c = a.ok("cancel", json!({ "id": id }));
    let r = a.wait(id);
    if c["cancelled"] == true {
        assert_eq!(r["error"]["code"], 4, "{r}");
    } else {
        assert!(r.get("result").is_some());
    }
    a.close().unwrap();
}

#[test]
fn duplicate_pending_id_is_refused() {
    let a = Agent::start();
    a.send_raw("{\"jsonrpc\":\"2.0\",\"id\":\"dup\",\"method\":\"exec\",\"params\":{\"command\":\"sleep 1\"}}\n");
    std::thread::sleep(Duration::from_millis(100));
    a.send_raw(
        "{\"jsonrpc\":\"2.0\",\"id\":\"dup\",\"method\":\"exists\",\"params\":{\"path\":\".\"}}\n",
    );
    let r = a.wait_key("\"dup\"", Duration::from_secs(5));
    assert_eq!(r["error"]["code"], -32600, "{r}");
    let r = a.wait_key("\"dup\"", Duration::from_secs(5));
    assert_eq!(r["result"]["exitCode"], 0, "{r}");
    a.close().unwrap();
}

#[test]
fn endless_background_writer_does_not_hold_the_request() {
    let a = Agent::start();
    let t = Instant::now();
    let id = a.send("exec", json!({ "command": "yes & echo $! >&2" }));
    let r = a.wait(id);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(r["result"]["exitCode"], 0);
    let (_, err) = a.take_output(id);
    let pid: i32 = String::from_utf8(err).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) on the pid our own command printed.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(process_gone(pid, Duration::from_secs(5)));
    a.close().unwrap();
}
