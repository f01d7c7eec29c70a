//! The protocol and the file methods: happy paths, errors, policy denials.

use crate::common;

use common::{Agent, b64, unb64};
use serde_json::{Value, json};
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::time::Duration;

#[test]
fn ready_comes_first() {
    let a = Agent::start();
    let r = a.next_other(Duration::from_secs(5)).unwrap();
    assert_eq!(r["method"], "ready");
    assert_eq!(r["params"]["version"], "9.9.9-test");
    assert_eq!(r["params"]["backend"], "os");
    assert_eq!(r["params"]["workspace"], json!(a.ws()));
    a.close().unwrap();
}

#[test]
fn protocol_errors() {
    let a = Agent::start();
    a.next_other(Duration::from_secs(5)).unwrap(); // ready
    a.send_raw("this is not json\n");
    let r = a.next_other(Duration::from_secs(5)).unwrap();
    assert_eq!(r["error"]["code"], -32700);
    assert_eq!(r["id"], Value::Null);
    a.send_raw("[1,2]\n");
    assert_eq!(
        a.next_other(Duration::from_secs(5)).unwrap()["error"]["code"],
        -32600
    );
    a.send_raw("{\"id\":3,\"method\":\"read\"}\n");
    let r = a.wait(3);
    assert_eq!(r["error"]["code"], -32600);
    a.send_raw("{\"jsonrpc\":\"2.0\",\"id\":{\"x\":1},\"method\":\"read\"}\n");
    assert_eq!(
        a.next_other(Duration::from_secs(5)).unwrap()["error"]["code"],
        -32600
    );
    a.err("no.such.method", json!({}), -32601);
    a.err("ready", json!({}), -32601);
    let e = a.err("read", json!([1]), -32602);
    assert_eq!(e["data"]["param"], "params");
    let e = a.err("read", json!({}), -32602);
    assert_eq!(e["data"]["param"], "path");
    let e = a.err("read", json!({ "path": 5 }), -32602);
    assert_eq!(e["data"]["param"], "path");
    let e = a.err("read", json!({ "path": "a\u{0}b" }), -32602);
    assert_eq!(e["data"]["param"], "path");
    let e = a.err("read", json!({ "path": "x", "offset": -1 }), -32602);
    assert_eq!(e["data"]["param"], "offset");
    let e = a.err("exec", json!({ "command": "true", "timeout": -1 }), -32602);
    assert_eq!(e["data"]["param"], "timeout");
    let e = a.err(
        "exec",
        json!({ "command": "true", "env": { "A=B": "x" } }),
        -32602,
    );
    assert_eq!(e["data"]["param"], "env");
    // A string id is echoed back as a string.
    a.send_raw(
        "{\"jsonrpc\":\"2.0\",\"id\":\"s1\",\"method\":\"exists\",\"params\":{\"path\":\".\"}}\n",
    );
    let r = a.wait_key("\"s1\"", Duration::from_secs(5));
    assert_eq!(r["id"], "s1");
    assert_eq!(r["result"]["exists"], true);
    // A notification (no id) gets no answer; blank lines are ignored.
    a.send_raw("{\"jsonrpc\":\"2.0\",\"method\":\"exists\",\"params\":{\"path\":\".\"}}\n\n  \n");
    a.send_raw("{\"jsonrpc\":\"2.0\",\"method\":\"nope\"}\r\n");
    assert!(a.next_other(Duration::from_millis(300)).is_none());
    // Still serving.
    assert_eq!(a.ok("exists", json!({ "path": "." }))["exists"], true);
    a.close().unwrap();
}

#[test]
fn read_happy_and_errors() {
    let a = Agent::start();
    let ws = a.ws().to_path_buf();
    fs::write(ws.join("a.txt"), "hello world").unwrap();
    let r = a.ok("read", json!({ "path": "a.txt" }));
    assert_eq!(unb64(r["data"].as_str().unwrap()), b"hello world");
    assert_eq!(r["size"], 11);
    assert_eq!(r["mime"], Value::Null);
    let r = a.ok(
        "read",
        json!({ "path": ws.join("a.txt"), "offset": 6, "limit": 3 }),
    );
    assert_eq!(unb64(r["data"].as_str().unwrap()), b"wor");
    assert_eq!(r["size"], 11);
    let r = a.ok("read", json!({ "path": "a.txt", "offset": 100 }));
    assert_eq!(r["data"], "");
    // Images by magic bytes.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&[0; 20]);
    fs::write(ws.join("x.bin"), &png).unwrap();
    assert_eq!(
        a.ok("read", json!({ "path": "x.bin" }))["mime"],
        "image/png"
    );
    fs::write(ws.join("j"), b"\xff\xd8\xff\xe0rest").unwrap();
    assert_eq!(
        a.ok("read", json!({ "path": "j", "offset": 2 }))["mime"],
        "image/jpeg"
    );
    fs::write(ws.join("g"), b"GIF89a....").unwrap();
    assert_eq!(a.ok("read", json!({ "path": "g" }))["mime"], "image/gif");
    fs::write(ws.join("w"), b"RIFF\0\0\0\0WEBPVP8 ").unwrap();
    assert_eq!(a.ok("read", json!({ "path": "w" }))["mime"], "image/webp");
    // Errors.
    let e = a.err("read", json!({ "path": "." }), 3);
    assert_eq!(e["data"]["errno"], "EISDIR");
    let e = a.err("read", json!({ "path": "missing.txt" }), 2);
    assert_eq!(e["data"]["path"], json!(ws.join("missing.txt")));
    a.err("read", json!({ "path": "a.txt/x" }), 3);
    let e = a.err(
        "read",
        json!({ "path": "a.txt", "limit": (64u64 << 20) + 1 }),
        -32602,
    );
    assert_eq!(e["data"]["param"], "limit");
    // A file from /proc (size 0) reads to its end.
    let r = a.ok("read", json!({ "path": "/proc/self/stat" }));
    assert!(!unb64(r["data"].as_str().unwrap()).is_empty());
    a.close().unwrap();
}

#[test]
fn read_through_symlink_to_secret_is_denied() {
    let a = Agent::start();
    let ws = a.ws().to_path_buf();
    let key = a.home().join(".ssh/id_ed25519");
    let e = a.err("read", json!({ "path": key }), 1);
    assert_eq!(e["data"]["path"], json!(key));
    assert_eq!(
        e["data"]["rule"],
        format!("deny {}", a.home().join(".ssh").display())
    );
    assert_eq!(e["data"]["origin"], "built-in default");
    assert!(e["message"].as_str().unwrap().contains(".ssh"), "{e}");
    symlink(&key, ws.join("innocent")).unwrap();
    let e = a.err("read", json!({ "path": "innocent" }), 1);
    assert_eq!(e["data"]["path"], json!(key));
    a.err("readdir", json!({ "path": a.home().join(".ssh") }), 1);
    a.err(
        "exists",
        json!({ "path": a.home().join(".ssh/missing") }),
        1,
    );
    a.err("stat", json!({ "path": key }), 1);
    a.err(
        "grep",
        json!({ "pattern": "x", "path": a.home().join(".ssh") }),
        1,
    );
    a.err(
        "find",
        json!({ "pattern": "*", "path": a.home().join(".ssh") }),
        1,
    );
    a.err(
        "exec",
        json!({ "command": "true", "cwd": a.home().join(".ssh") }),
        1,
    );
    a.close().unwrap();
}

#[test]
fn write_happy() {
    let a = Agent::start();
    let ws = a.ws().to_path_buf();
    let r = a.ok(
        "write",
        json!({ "path": "new/deep/f.txt", "content": "héllo" }),
    );
    assert_eq!(r["bytes"], 6);
    assert_eq!(
        fs::read_to_string(ws.join("new/deep/f.txt")).unwrap(),
        "héllo"
    );
    let r = a.ok(
        "write",
        json!({ "path": "bin.dat", "data": b64(&[0, 1, 2, 255]) }),
    );
    assert_eq!(r["bytes"], 4);
    assert_eq!(fs::read(ws.join("bin.dat")).unwrap(), [0, 1, 2, 255]);
    // Keeps the mode of an existing file.
    fs::write(ws.join("script.sh"), "old").unwrap();
    fs::set_permissions(ws.join("script.sh"), fs::Permissions::from_mode(0o751)).unwrap();
    a.ok("write", json!({ "path": "script.sh", "content": "new" }));
    let md = fs::metadata(ws.join("script.sh")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o751);
    assert_eq!(fs::read_to_string(ws.join("script.sh")).unwrap(), "new");
    // Through a symlink: the target changes, the link stays.
    symlink(ws.join("script.sh"), ws.join("link")).unwrap();
    a.ok("write", json!({ "path": "link", "content": "via link" }));
    assert!(
        fs::symlink_metadata(ws.join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::read_to_string(ws.join("script.sh")).unwrap(),
        "via link"
    );
    // Empty content; no temporary files left behind.
    a.ok("write", json!({ "path": "empty", "content": "" }));
    assert_eq!(fs::read(ws.join("empty")).unwrap().len(), 0);
    let leftovers: Vec<_> = fs::read_dir(&ws)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".cordon-"))
        .collect();
    assert!(leftovers.is_empty());
    // Errors.
    let e = a.err("write", json!({ "path": "x" }), -32602);
    assert_eq!(e["data"]["param"], "content");
    let e = a.err("write", json!({ "path": "x", "data": "!!!" }), -32602);
    assert_eq!(e["data"]["param"], "data");
    a.err(
        "write",
        json!({ "path": "x", "data": "", "content": "" }),
        -32602,
    );
    let e = a.err("write", json!({ "path": "new", "content": "x" }), 3);
    assert_eq!(e["data"]["errno"], "EISDIR");
    a.err("write", json!({ "path": "bin.dat/sub", "content": "x" }), 3);
    a.close().unwrap();
}

#[test]
fn write_denials_name_the_rule() {
    let a = Agent::start();
    let ws = a.ws().to_path_buf();
    // Outside every writable root: read-only by the "/" default.
    let outside = a.root().join("outside.txt");
    let e = a.err("write", json!({ "path": outside, "content": "x" }), 1);
    assert_eq!(e["data"]["rule"], "read /");
    assert_eq!(e["data"]["origin"], "built-in default");
    assert!(e["message"].as_str().unwrap().contains("read-only"), "{e}");
    assert!(!outside.exists());
    a.err("write", json!({ "path": "/etc/hosts", "content": "x" }), 1);
    a.err("mkdir", json!({ "path": a.root().join("d") }), 1);
    // Protected paths inside the workspace, even before they exist.
    for p in [".git/hooks/pre-commit", ".pi/extensions/x.ts", ".pi/x"] {
        let e = a.err("write", json!({ "path": p, "content": "evil" }), 1);
        assert!(
            e["data"]["rule"].as_str().unwrap().starts_with("read "),
            "{e}"
        );
        assert!(!ws.join(p).exists(), "{p}");
    }
    a.err("mkdir", json!({ "path": ".pi" }), 1);
    a.err("mkdir", json!({ "path": ".git/hooks" }), 1);
    // A relative path that climbs out of the workspace.
    a.err("write", json!({ "path": "../outside2", "content": "x" }), 1);
    // A symlink in the workspace pointing out does not launder the write.
    symlink(a.root(), ws.join("up")).unwrap();
    a.err("write", json!({ "path": "up/outside3", "content": "x" }), 1);
    // Secrets: denied for write too.
    let e = a.err(
        "write",
        json!({ "path": a.home().join(".ssh/authorized_keys"), "content": "k" }),
        1,
    );
    assert!(e["data"]["rule"].as_str().unwrap().starts_with("deny "));
    // All recorded for status, newest last.
    let s = a.ok("status", json!({}));
    let d = s["denials"].as_array().unwrap();
    assert!(d.len() >= 8, "{s}");
    let last = d.last().unwrap();
    assert_eq!(last["op"], "write");
    assert_eq!(last["path"], json!(a.home().join(".ssh/authorized_keys")));
    assert!(last["time"].as_str().unwrap().ends_with('Z'));
    a.close().unwrap();
}

#[test]
fn denial_ring_keeps_the_last_50() {
    let a = Agent::start();
    for i in 0..60 {
        a.err(
            "write",
            json!({ "path": format!("/etc/x{i}"), "content": "" }),
            1,
        );
    }
    let s = a.ok("status", json!(null));
    let d = s["denials"].as_array().unwrap();
    assert_eq!(d.len(), 50);
    assert_eq!(d[0]["path"], "/etc/x10");
    assert_eq!(d[49]["path"], "/etc/x59");
    a.close().unwrap();
}

/// Errors and denials about a path whose name is not UTF-8 (reached through a
/// symlink with a UTF-8 name) are answered, the path sent lossily, and the
/// session goes on: such a path once made the agent panic while building the
/// error's data (a JSON value of a non-UTF-8 path), which ends the session.
#[test]
fn errors_about_paths_that_are_not_utf8_are_answered() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let a = Agent::start();
    let ws = a.ws().to_path_buf();
    let bad = OsStr::from_bytes(b"key-\xff\xfe");
    let secret = a.home().join(".ssh").join(bad);
    fs::write(&secret, "secret").unwrap();
    symlink(&secret, ws.join("to-secret")).unwrap();
    symlink(ws.join(bad), ws.join("to-missing")).unwrap();
    // Denied (1), with the rule; not found (2); both name the path lossily.
    let e = a.err("read", json!({ "path": "to-secret" }), 1);
    let shown = e["data"]["path"].as_str().unwrap().to_string();
    assert!(shown.ends_with("key-\u{fffd}\u{fffd}"), "{e}");
    assert!(e["data"]["rule"].as_str().unwrap().contains(".ssh"), "{e}");
    let e = a.err("read", json!({ "path": "to-missing" }), 2);
    assert!(
        e["data"]["path"]
            .as_str()
            .unwrap()
            .ends_with("key-\u{fffd}\u{fffd}"),
        "{e}"
    );
    // The denial is recorded, and status still answers.
    let s = a.ok("status", json!({}));
    assert!(
        s["denials"].to_string().contains("key-\u{fffd}\u{fffd}"),
        "{s}"
    );
    assert_eq!(a.ok("exists", json!({ "path": "." }))["exists"], true);
    a.close().unwrap();
}

#[test]
fn stat_exists_readdir_mkdir() {
    let a = Agent::start();
    let ws = a.ws().to_path_buf();
    fs::write(ws.join("f"), "12345").unwrap();
    fs::create_dir(ws.join("d")).unwrap();
    symlink("f", ws.join("l")).unwrap();
    symlink("nowhere", ws.join("dangling")).unwrap();
    let s = a.ok("stat", json!({ "path": "f" }));
    assert_eq!(s["type"], "file");
    assert_eq!(s["size"], 5);
    assert!(s["mtimeMs"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(s["mode"].as_u64().unwrap() & 0o170000, 0o100000);
    assert_eq!(a.ok("stat", json!({ "path": "d" }))["type"], "dir");
    assert_eq!(a.ok("stat", json!({ "path": "l" }))["type"], "symlink");
    assert_eq!(
        a.ok("stat", json!({ "path": "dangling" }))["type"],
        "symlink"
    );
    assert_eq!(
        a.ok("stat", json!({ "path": "/dev/null" }))["type"],
        "other"
    );
    a.err("stat", json!({ "path": "nope" }), 2);
    assert_eq!(a.ok("exists", json!({ "path": "f" }))["exists"], true);
    assert_eq!(a.ok("exists", json!({ "path": "l" }))["exists"], true);
    assert_eq!(
        a.ok("exists", json!({ "path": "dangling" }))["exists"],
        false
    );
    assert_eq!(
        a.ok("exists", json!({ "path": "nope/deeper" }))["exists"],
        false
    );
    assert_eq!(a.ok("exists", json!({ "path": "f/x" }))["exists"], false);
    let r = a.ok("readdir", json!({ "path": "." }));
    assert_eq!(
        r["entries"],
        json!([
            { "name": "d", "type": "dir" },
            { "name": "dangling", "type": "symlink" },
            { "name": "f", "type": "file" },
            { "name": "l", "type": "symlink" },
        ])
    );
    a.err("readdir", json!({ "path": "nope" }), 2);
    let e = a.err("readdir", json!({ "path": "f" }), 3);
    assert_eq!(e["data"]["errno"], "ENOTDIR");
    assert_eq!(a.ok("mkdir", json!({ "path": "m/n/o" })), json!({}));
    assert!(ws.join("m/n/o").is_dir());
    a.ok("mkdir", json!({ "path": "m/n/o" }));
    let e = a.err("mkdir", json!({ "path": "m/n/o", "recursive": false }), 3);
    assert_eq!(e["data"]["errno"], "EEXIST");
    a.err("mkdir", json!({ "path": "p/q", "recursive": false }), 2);
    a.ok("mkdir", json!({ "path": "p", "recursive": false }));
    let e = a.err("mkdir", json!({ "path": "f" }), 3);
    assert_eq!(e["data"]["errno"], "ENOTDIR");
    a.close().unwrap();
}

#[test]
fn status_summarises_the_policy() {
    let a = Agent::start();
    let s = a.ok("status", json!({}));
    assert_eq!(s["backend"], "os");
    assert_eq!(s["layers"]["landlock"], 7);
    assert_eq!(s["policy"]["workspace"], json!(a.ws()));
    assert_eq!(s["policy"]["net"], "none");
    assert_eq!(s["policy"]["readOnly"], false);
    let w: Vec<&str> = s["policy"]["writable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(w.contains(&a.ws().to_str().unwrap()), "{s}");
    let ssh = a.home().join(".ssh");
    assert!(
        s["policy"]["denied"]
            .as_array()
            .unwrap()
            .contains(&json!(ssh)),
        "{s}"
    );
    assert_eq!(s["denials"], json!([]));
    a.close().unwrap();
}

#[test]
fn read_only_workspace() {
    let d = common::dirs();
    let policy = d
        .resolve_with(cordon_policy::Flags {
            read_only: true,
            ..Default::default()
        })
        .unwrap();
    let a = Agent::with_policy(policy);
    assert_eq!(a.ok("status", json!({}))["policy"]["readOnly"], true);
    let e = a.err("write", json!({ "path": d.ws.join("x"), "content": "" }), 1);
    assert!(e["message"].as_str().unwrap().contains("read-only"));
    a.close().unwrap();
}
