//! find and grep against a small tree with .gitignore, hidden files, a binary file.

use crate::common;

use common::Agent;
use serde_json::{Value, json};
use std::fs;

fn tree(a: &Agent) {
    let ws = a.ws();
    let w = |p: &str, c: &[u8]| {
        let p = ws.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, c).unwrap();
    };
    w(".gitignore", b"ignored/\n*.log\n");
    w("src/main.rs", b"fn main() {\n    println!(\"Hello\");\n}\n");
    w("src/lib.rs", b"pub fn hello() {}\n// TODO: more\n");
    w("src/deep/x.rs", b"hello again\n");
    w("ignored/a.rs", b"hello ignored\n");
    w("debug.log", b"hello log\n");
    w(".hidden/h.rs", b"hello hidden\n");
    w(".env", b"hello=1\n");
    w("bin.dat", b"hello\0binary\n");
    w(".git/config", b"hello git\n");
    let notes: String = (1..=10)
        .map(|i| {
            if i == 5 {
                "the match line\n".to_string()
            } else {
                format!("line {i}\n")
            }
        })
        .collect();
    w("notes.txt", notes.as_bytes());
}

fn paths(v: &Value) -> Vec<String> {
    v["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn find_globs_and_switches() {
    let a = Agent::start();
    tree(&a);
    let r = a.ok("find", json!({ "pattern": "*.rs" }));
    assert_eq!(paths(&r), ["src/deep/x.rs", "src/lib.rs", "src/main.rs"]);
    assert_eq!(r["truncated"], false);
    let r = a.ok("find", json!({ "pattern": "src/*.rs" }));
    assert_eq!(paths(&r), ["src/lib.rs", "src/main.rs"]);
    let r = a.ok("find", json!({ "pattern": "**/*.rs" }));
    assert_eq!(paths(&r), ["src/deep/x.rs", "src/lib.rs", "src/main.rs"]);
    let r = a.ok("find", json!({ "pattern": "*.rs", "hidden": true }));
    assert_eq!(
        paths(&r),
        [".hidden/h.rs", "src/deep/x.rs", "src/lib.rs", "src/main.rs"]
    );
    let r = a.ok("find", json!({ "pattern": "*.rs", "gitignore": false }));
    assert_eq!(
        paths(&r),
        ["ignored/a.rs", "src/deep/x.rs", "src/lib.rs", "src/main.rs"]
    );
    let r = a.ok(
        "find",
        json!({ "pattern": "*", "hidden": true, "gitignore": false }),
    );
    let all = paths(&r);
    assert!(all.contains(&"debug.log".to_string()));
    assert!(all.contains(&".env".to_string()));
    assert!(!all.iter().any(|p| p.starts_with(".git/")), "{all:?}");
    // Relative to `path`; limit.
    let r = a.ok("find", json!({ "pattern": "*.rs", "path": "src" }));
    assert_eq!(paths(&r), ["deep/x.rs", "lib.rs", "main.rs"]);
    let r = a.ok("find", json!({ "pattern": "*.rs", "limit": 2 }));
    assert_eq!(paths(&r), ["src/deep/x.rs", "src/lib.rs"]);
    assert_eq!(r["truncated"], true);
    let r = a.ok("find", json!({ "pattern": "*.rs", "limit": 0 }));
    assert_eq!(paths(&r), Vec::<String>::new());
    assert_eq!(r["truncated"], true);
    let r = a.ok("find", json!({ "pattern": "*.nothing" }));
    assert_eq!(paths(&r), Vec::<String>::new());
    // Errors.
    let e = a.err("find", json!({ "pattern": "a[" }), -32602);
    assert_eq!(e["data"]["param"], "pattern");
    a.err("find", json!({}), -32602);
    a.err("find", json!({ "pattern": "*", "path": "nope" }), 2);
    let e = a.err("find", json!({ "pattern": "*", "path": "notes.txt" }), 3);
    assert_eq!(e["data"]["errno"], "ENOTDIR");
    a.close().unwrap();
}

fn hits(v: &Value) -> Vec<(String, u64, bool, String)> {
    v["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["path"].as_str().unwrap().to_string(),
                m["line"].as_u64().unwrap(),
                m.get("context").is_some_and(|c| c == true),
                m["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn h(p: &str, l: u64, c: bool, t: &str) -> (String, u64, bool, String) {
    (p.to_string(), l, c, t.to_string())
}

#[test]
fn grep_regex_literal_case_binary() {
    let a = Agent::start();
    tree(&a);
    let r = a.ok("grep", json!({ "pattern": "hel+o" }));
    assert_eq!(
        hits(&r),
        [
            h("src/deep/x.rs", 1, false, "hello again"),
            h("src/lib.rs", 1, false, "pub fn hello() {}"),
        ]
    );
    assert_eq!(r["truncated"], false);
    let r = a.ok("grep", json!({ "pattern": "hello", "ignoreCase": true }));
    assert_eq!(
        hits(&r),
        [
            h("src/deep/x.rs", 1, false, "hello again"),
            h("src/lib.rs", 1, false, "pub fn hello() {}"),
            h("src/main.rs", 2, false, "    println!(\"Hello\");"),
        ]
    );
    let r = a.ok(
        "grep",
        json!({ "pattern": "hello", "hidden": true, "gitignore": false }),
    );
    let files: Vec<String> = hits(&r).into_iter().map(|x| x.0).collect();
    assert_eq!(
        files,
        [
            ".env",
            ".hidden/h.rs",
            "debug.log",
            "ignored/a.rs",
            "src/deep/x.rs",
            "src/lib.rs"
        ]
    );
    // Literal: regex metacharacters are plain.
    let r = a.ok("grep", json!({ "pattern": "hello()", "literal": true }));
    assert_eq!(hits(&r), [h("src/lib.rs", 1, false, "pub fn hello() {}")]);
    let r = a.ok("grep", json!({ "pattern": "hello()" }));
    assert_eq!(hits(&r).len(), 2);
    // glob filter.
    let r = a.ok("grep", json!({ "pattern": "hello", "glob": "src/*.rs" }));
    assert_eq!(hits(&r), [h("src/lib.rs", 1, false, "pub fn hello() {}")]);
    let r = a.ok("grep", json!({ "pattern": "hello", "glob": "x.rs" }));
    assert_eq!(hits(&r), [h("src/deep/x.rs", 1, false, "hello again")]);
    // A file as path.
    let r = a.ok("grep", json!({ "pattern": "match", "path": "notes.txt" }));
    assert_eq!(hits(&r), [h("notes.txt", 5, false, "the match line")]);
    // A binary file is skipped, even named directly.
    let r = a.ok("grep", json!({ "pattern": "hello", "path": "bin.dat" }));
    assert_eq!(hits(&r), []);
    // Errors.
    let e = a.err("grep", json!({ "pattern": "(" }), -32602);
    assert_eq!(e["data"]["param"], "pattern");
    let e = a.err("grep", json!({ "pattern": "x", "glob": "[" }), -32602);
    assert_eq!(e["data"]["param"], "glob");
    a.err("grep", json!({ "pattern": "x", "path": "nope" }), 2);
    a.close().unwrap();
}

#[test]
fn grep_context_and_limit() {
    let a = Agent::start();
    tree(&a);
    let r = a.ok("grep", json!({ "pattern": "match", "context": 2 }));
    assert_eq!(
        hits(&r),
        [
            h("notes.txt", 3, true, "line 3"),
            h("notes.txt", 4, true, "line 4"),
            h("notes.txt", 5, false, "the match line"),
            h("notes.txt", 6, true, "line 6"),
            h("notes.txt", 7, true, "line 7"),
        ]
    );
    let r = a.ok("grep", json!({ "pattern": "line", "limit": 3 }));
    assert_eq!(
        hits(&r),
        [
            h("notes.txt", 1, false, "line 1"),
            h("notes.txt", 2, false, "line 2"),
            h("notes.txt", 3, false, "line 3"),
        ]
    );
    assert_eq!(r["truncated"], true);
    // Limit across files: sorted by path, the first files win.
    for i in 0..30 {
        fs::write(a.ws().join(format!("m{i:02}.txt")), "zz\nzz\n").unwrap();
    }
    let r = a.ok("grep", json!({ "pattern": "zz", "limit": 5 }));
    assert_eq!(
        hits(&r),
        [
            h("m00.txt", 1, false, "zz"),
            h("m00.txt", 2, false, "zz"),
            h("m01.txt", 1, false, "zz"),
            h("m01.txt", 2, false, "zz"),
            h("m02.txt", 1, false, "zz"),
        ]
    );
    assert_eq!(r["truncated"], true);
    let r = a.ok("grep", json!({ "pattern": "zz", "limit": 60 }));
    assert_eq!(hits(&r).len(), 60);
    assert_eq!(r["truncated"], false);
    a.close().unwrap();
}

#[test]
fn walks_skip_denied_subtrees() {
    // A project config that denies a directory inside the workspace.
    let d = common::dirs();
    fs::create_dir_all(d.ws.join("private")).unwrap();
    fs::write(d.ws.join("private/key.txt"), "hello secret\n").unwrap();
    fs::write(d.ws.join("pub.txt"), "hello public\n").unwrap();
    fs::write(d.ws.join(".cordon.json"), r#"{"deny_read": ["private"]}"#).unwrap();
    let policy = d.resolve();
    assert!(
        policy
            .rules
            .iter()
            .any(|r| r.access == cordon_policy::Access::Deny && r.path == d.ws.join("private"))
    );
    let a = Agent::with_policy(policy);
    let r = a.ok("grep", json!({ "pattern": "hello", "path": d.ws }));
    assert_eq!(hits(&r), [h("pub.txt", 1, false, "hello public")]);
    let r = a.ok("find", json!({ "pattern": "*.txt", "path": d.ws }));
    assert_eq!(paths(&r), ["pub.txt"]);
    let e = a.err("read", json!({ "path": d.ws.join("private/key.txt") }), 1);
    assert!(
        e["data"]["origin"]
            .as_str()
            .unwrap()
            .starts_with("project config"),
        "{e}"
    );
    a.close().unwrap();
}
