//! End-to-end tests of the pi extension (integrations/pi) with the real pi from the
//! npm registry, driven by a scripted fake model.
//!
//! - pi: the newest 1.x and 0.87 (common/pi.rs: `$CORDON_TEST_PI1_PREFIX` and
//!   `$CORDON_TEST_PI_PREFIX`, else installed with npm; each checked to be the
//!   version it stands for). Every test of the extension's tools, commands and `!`
//!   commands runs against both; MCP, which 0.87 lacks, against 1.x.
//! - The fake model ([`FakeModel`]) speaks OpenAI chat completions with server-sent
//!   events: answer N is the N-th scripted tool call (N = the tool results the request
//!   carries), then a final text; it records every tool result pi sends back.
//! - pi runs as `pi --provider fake --model fake-model --no-session -e
//!   <repo>/integrations/pi --mode json "go"` in the fixture's workspace with HOME =
//!   the fixture's home (whose `.ssh/id_ed25519` holds the secret marker), once as root
//!   and once as the ordinary test user (see common/mod.rs).
//! - `CORDON_TEST_PI_DUMP=1` prints every tool call's result.
//! - The user's own `!` commands and the extension's commands are driven through
//!   `--mode rpc` (`{"type":"bash"}`, `{"type":"prompt"}`), which goes through the
//!   extension's `user_bash` handler and its dialogs (`extension_ui_request`).

use crate::common;

use common::fake_model::FakeModel;
use common::pi::{Pi, both, pi1};
use common::upstream::Upstream;
use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest one pi drive may take.
const PI_DEADLINE: Duration = Duration::from_secs(240);

/// The extension under test.
fn extension_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../integrations/pi")
        .canonicalize()
        .expect("integrations/pi exists")
}

// ---------------------------------------------------------------------------------
// Driving pi
// ---------------------------------------------------------------------------------

/// The agent dir (PI_CODING_AGENT_DIR) of one drive: models.json naming the fake model.
fn agent_dir(fx: &Fixture, port: u16) -> PathBuf {
    agent_dir_at(fx, &fx.root.join(format!("agent-{}", random_hex(4))), port)
}

/// [`agent_dir`] at `dir`.
fn agent_dir_at(fx: &Fixture, dir: &Path, port: u16) -> PathBuf {
    let dir = dir.to_path_buf();
    let models = json!({"providers": {"fake": {
        "baseUrl": format!("http://127.0.0.1:{port}/v1"),
        "api": "openai-completions",
        "apiKey": "x",
        "compat": {"supportsDeveloperRole": false, "supportsReasoningEffort": false},
        "models": [{"id": "fake-model", "reasoning": false, "input": ["text"],
                    "contextWindow": 32000, "maxTokens": 1024}],
    }}});
    fx.write(
        &dir.join("models.json"),
        &serde_json::to_string_pretty(&models).unwrap(),
    );
    dir
}

/// `pi ... --mode MODE` as the fixture's user in its workspace, HOME = its home.
fn pi_cmd(
    fx: &Fixture,
    pi: &Pi,
    agent: &Path,
    cordon_bin: &Path,
    mode: &str,
    prompt: Option<&str>,
) -> Command {
    pi_cmd_with(fx, pi, &[extension_dir()], agent, cordon_bin, mode, prompt)
}

/// [`pi_cmd`] with pi `pi` and the extensions `extensions` (none: pi alone).
fn pi_cmd_with(
    fx: &Fixture,
    pi: &Pi,
    extensions: &[PathBuf],
    agent: &Path,
    cordon_bin: &Path,
    mode: &str,
    prompt: Option<&str>,
) -> Command {
    let node = pi.node.to_string_lossy().into_owned();
    let cli = pi.cli.to_string_lossy().into_owned();
    let mut cmd = fx.host_cmd(&[&node, &cli]);
    cmd.args([
        "--provider",
        "fake",
        "--model",
        "fake-model",
        "--no-session",
    ])
    .args(extensions.iter().flat_map(|e| [Path::new("-e"), e]))
    .args([
        "--tools",
        "read,bash,edit,write,grep,find,ls",
        "--mode",
        mode,
    ])
    .env("PI_CODING_AGENT_DIR", agent)
    .env("PI_OFFLINE", "1")
    .env("CORDON_BIN", cordon_bin);
    if let Some(p) = prompt {
        cmd.arg(p);
    }
    cmd
}

/// What pi's JSON event stream says about one tool call.
#[derive(Debug, Clone)]
struct ToolEnd {
    name: String,
    is_error: bool,
    text: String,
}

fn tool_ends(out: &Output) -> HashMap<String, ToolEnd> {
    let mut ends = HashMap::new();
    for line in out.stdout_str().lines() {
        let Ok(ev) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if ev.get("type").and_then(Value::as_str) != Some("tool_execution_end") {
            continue;
        }
        let id = ev["toolCallId"].as_str().unwrap_or("").to_string();
        let text = ev["result"]["content"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        ends.insert(
            id,
            ToolEnd {
                name: ev["toolName"].as_str().unwrap_or("").to_string(),
                is_error: ev["isError"].as_bool().unwrap_or(false),
                text,
            },
        );
    }
    ends
}

/// One scripted drive: the tool calls, then pi's output and what the model saw.
struct Drive {
    out: Output,
    model: FakeModel,
    ends: HashMap<String, ToolEnd>,
}

impl Drive {
    fn run(fx: &Fixture, pi: &Pi, calls: &[(&str, &str, Value)], cordon: &Path) -> Drive {
        let agent = fx.root.join(format!("agent-{}", random_hex(4)));
        Drive::run_with(fx, calls, cordon, pi, &[extension_dir()], &agent, |_| {})
    }

    /// [`Drive::run`] with pi `pi`, the extensions `extensions`, pi's config dir
    /// at `agent`, to which `configure` adds before pi starts.
    fn run_with(
        fx: &Fixture,
        calls: &[(&str, &str, Value)],
        cordon: &Path,
        pi: &Pi,
        extensions: &[PathBuf],
        agent: &Path,
        configure: impl Fn(&Path),
    ) -> Drive {
        let script = calls
            .iter()
            .map(|(id, name, args)| (id.to_string(), name.to_string(), args.clone()))
            .collect();
        let model = FakeModel::http(script);
        let agent = agent_dir_at(fx, agent, model.port);
        configure(&agent);
        let cmd = pi_cmd_with(fx, pi, extensions, &agent, cordon, "json", Some("go"));
        let out = run_cmd(cmd, None, PI_DEADLINE);
        let ends = tool_ends(&out);
        if std::env::var_os("CORDON_TEST_PI_DUMP").is_some() {
            for (id, _, _) in calls {
                if let Some(e) = ends.get(*id) {
                    eprintln!(
                        "[{}] {id} ({}) error={}: {}",
                        fx.user.label(),
                        e.name,
                        e.is_error,
                        e.text
                    );
                }
            }
        }
        Drive { out, model, ends }
    }

    fn context(&self) -> String {
        format!("{}", self.out)
    }

    fn end(&self, id: &str) -> &ToolEnd {
        self.ends.get(id).unwrap_or_else(|| {
            panic!(
                "pi ran no tool call {id:?} (its result never came)\n{}",
                self.context()
            )
        })
    }

    /// The call succeeded; returns its result text.
    fn ok(&self, id: &str) -> String {
        let e = self.end(id);
        assert!(
            !e.is_error,
            "tool call {id} ({}) failed: {}\n{}",
            e.name,
            e.text,
            self.context()
        );
        e.text.clone()
    }

    /// The call failed; returns its error text.
    fn err(&self, id: &str) -> String {
        let e = self.end(id);
        assert!(
            e.is_error,
            "tool call {id} ({}) succeeded but must fail: {}\n{}",
            e.name,
            e.text,
            self.context()
        );
        e.text.clone()
    }

    /// The marker appears nowhere: not in pi's output, not in what the model received.
    fn assert_no_marker(&self, marker: &str) {
        assert_absent(&self.out, marker);
        assert!(
            !self.model.all_text().contains(marker),
            "secret marker {marker} reached the model\n{}",
            self.context()
        );
    }
}

/// A host listener that records whether anything connected.
struct Listener {
    sock: TcpListener,
    port: u16,
}

impl Listener {
    fn new() -> Listener {
        let sock = TcpListener::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let port = sock.local_addr().unwrap().port();
        Listener { sock, port }
    }
    /// Whether something connected (and is waiting to be accepted).
    fn touched(&self) -> bool {
        self.sock.accept().is_ok()
    }
    fn assert_untouched(&self) {
        std::thread::sleep(Duration::from_millis(200));
        match self.sock.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!(
                "the host listener on port {} got a connection from {peer}",
                self.port
            ),
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn secret(fx: &Fixture) -> PathBuf {
    fx.home.join(".ssh/id_ed25519")
}

/// Puts the fixture's own secret key and a workspace that invites every attack.
fn prepare(fx: &Fixture) {
    fx.write(&secret(fx), &fx.secret_content(".ssh/id_ed25519"));
    fx.write(&fx.work.join("src/lib.rs"), "pub fn needle_fn() {}\n");
    fx.mkdir(&fx.work.join(".git/hooks"));
    fx.write(&fx.work.join(".git/HEAD"), "ref: refs/heads/main\n");
    fx.write(
        &fx.work.join(".git/config"),
        "[core]\n\trepositoryformatversion = 0\n",
    );
    fx.symlink(&secret(fx), &fx.work.join("key"));
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

/// Every tool through cordon: the allowed effects land in the workspace; secrets,
/// writes outside the workspace, to .pi/ and .git/hooks, and the network are refused,
/// with no trace on the host.
#[test]
fn pi_tools_run_in_the_sandbox() {
    for (version, pi) in both() {
        for_each_user(&format!("pi-tools-{version}"), |fx| {
            prepare(fx);
            let net = Listener::new();
            let home = fx.home.to_string_lossy().into_owned();
            let outside = fx.outside.to_string_lossy().into_owned();
            let key = secret(fx).to_string_lossy().into_owned();
            let secret_before = snapshot(&secret(fx));
            let calls: Vec<(&str, &str, Value)> = vec![
                // Allowed effects.
                (
                    "write1",
                    "write",
                    json!({"path": "notes/new.txt", "content": "hello from pi\nsecond line\n"}),
                ),
                (
                    "edit1",
                    "edit",
                    json!({"path": "notes/new.txt", "edits": [{"oldText": "second line", "newText": "edited line"}]}),
                ),
                ("read1", "read", json!({"path": "notes/new.txt"})),
                ("ls1", "ls", json!({"path": "."})),
                ("find1", "find", json!({"pattern": "*.rs"})),
                ("grep1", "grep", json!({"pattern": "needle_fn"})),
                (
                    "bash1",
                    "bash",
                    json!({"command": "echo made-by-bash > bash.txt && echo bash-ok"}),
                ),
                // Secrets: plain, through a symlink, in the @ and ~ forms.
                ("sec_plain", "read", json!({"path": key})),
                ("sec_link", "read", json!({"path": "key"})),
                ("sec_at", "read", json!({"path": "@~/.ssh/id_ed25519"})),
                ("sec_tilde", "read", json!({"path": "~/.ssh/id_ed25519"})),
                (
                    "sec_grep",
                    "grep",
                    json!({"pattern": "CRDNMARK", "path": format!("{home}/.ssh")}),
                ),
                ("sec_grep_ws", "grep", json!({"pattern": "CRDNMARK"})),
                (
                    "sec_bash",
                    "bash",
                    json!({"command": "cat ~/.ssh/id_ed25519 key; cat ~/.ssh/id_ed25519 key | base64"}),
                ),
                // Writes outside the workspace and to protected paths.
                (
                    "w_home",
                    "write",
                    json!({"path": format!("{home}/evil"), "content": "evil\n"}),
                ),
                (
                    "w_outside",
                    "write",
                    json!({"path": format!("{outside}/evil"), "content": "evil\n"}),
                ),
                (
                    "w_pi",
                    "write",
                    json!({"path": ".pi/x", "content": "evil\n"}),
                ),
                (
                    "w_hook",
                    "write",
                    json!({"path": ".git/hooks/post-checkout", "content": "#!/bin/sh\ntouch /tmp/pwned\n"}),
                ),
                (
                    "e_gitcfg",
                    "edit",
                    json!({"path": ".git/config", "edits": [{"oldText": "repositoryformatversion = 0", "newText": "repositoryformatversion = 0\n\tfsmonitor = touch /tmp/pwned"}]}),
                ),
                (
                    "b_hook",
                    "bash",
                    json!({"command": "echo evil > .git/hooks/pre-commit"}),
                ),
                (
                    "b_home",
                    "bash",
                    json!({"command": format!("echo evil > {home}/evil2")}),
                ),
                (
                    "b_pi",
                    "bash",
                    json!({"command": "mkdir -p .pi/extensions && echo evil > .pi/extensions/x.ts"}),
                ),
                // The network.
                (
                    "net",
                    "bash",
                    json!({"command": format!("curl -sS -m 5 http://127.0.0.1:{}/ && echo NET-OK", net.port)}),
                ),
            ];
            let d = Drive::run(fx, pi, &calls, &cordon_bin());

            // Allowed effects landed in the workspace.
            d.ok("write1");
            d.ok("edit1");
            assert_eq!(
                fs::read_to_string(fx.work.join("notes/new.txt")).unwrap_or_default(),
                "hello from pi\nedited line\n",
                "write+edit did not land in the workspace\n{}",
                d.context()
            );
            assert!(d.ok("read1").contains("edited line"), "{}", d.context());
            let ls = d.ok("ls1");
            assert!(
                ls.contains("notes/") && ls.contains("README"),
                "ls: {ls}\n{}",
                d.context()
            );
            assert!(d.ok("find1").contains("src/lib.rs"), "{}", d.context());
            assert!(
                d.ok("grep1")
                    .contains("src/lib.rs:1: pub fn needle_fn() {}"),
                "{}",
                d.context()
            );
            assert!(d.ok("bash1").contains("bash-ok"), "{}", d.context());
            assert_eq!(
                fs::read_to_string(fx.work.join("bash.txt")).unwrap_or_default(),
                "made-by-bash\n"
            );

            // Secrets: nothing containing the marker, anywhere.
            d.assert_no_marker(&fx.marker);
            for id in ["sec_plain", "sec_link", "sec_at", "sec_tilde"] {
                let e = d.end(id);
                assert!(
                    e.is_error || !e.text.contains(&fx.marker),
                    "{id} read the secret: {}",
                    e.text
                );
            }
            assert_unchanged(&secret(fx), &secret_before);

            // Writes outside the workspace and to protected paths failed, without trace.
            for id in [
                "w_home",
                "w_outside",
                "w_pi",
                "w_hook",
                "e_gitcfg",
                "b_hook",
                "b_home",
                "b_pi",
            ] {
                d.err(id);
            }
            for p in [
                fx.home.join("evil"),
                fx.home.join("evil2"),
                fx.outside.join("evil"),
                fx.work.join(".pi"),
                fx.work.join(".git/hooks/post-checkout"),
                fx.work.join(".git/hooks/pre-commit"),
                PathBuf::from("/tmp/pwned"),
            ] {
                assert_not_exists(&p);
            }
            assert!(
                !fs::read_to_string(fx.work.join(".git/config"))
                    .unwrap()
                    .contains("fsmonitor"),
                ".git/config was changed"
            );

            // The network: refused, and the host listener saw nothing.
            let n = d.err("net");
            assert!(!n.contains("NET-OK"), "{n}");
            net.assert_untouched();
        });
    }
}

/// The same drive with cordon missing: every tool fails closed with a message that
/// names cordon and says how to fix it; nothing lands anywhere.
#[test]
fn pi_tools_fail_closed_without_cordon() {
    for (version, pi) in both() {
        for_each_user(&format!("pi-failclosed-{version}"), |fx| {
            prepare(fx);
            let token = format!("failclosed-{}", random_hex(6));
            let trace = fx.outside.join(&token);
            let trace_s = trace.to_string_lossy().into_owned();
            let work_before = snapshots(&[
                fx.work.clone(),
                fx.work.join("README"),
                fx.work.join("src"),
                fx.work.join("src/lib.rs"),
            ]);
            let calls: Vec<(&str, &str, Value)> = vec![
                (
                    "write",
                    "write",
                    json!({"path": "new.txt", "content": "x\n"}),
                ),
                (
                    "edit",
                    "edit",
                    json!({"path": "README", "edits": [{"oldText": "workspace-file", "newText": "changed"}]}),
                ),
                ("read", "read", json!({"path": "README"})),
                ("ls", "ls", json!({"path": "."})),
                ("find", "find", json!({"pattern": "*.rs"})),
                ("grep", "grep", json!({"pattern": "needle_fn"})),
                (
                    "bash",
                    "bash",
                    json!({"command": format!("touch {trace_s} {token}; echo ran-on-host")}),
                ),
                ("secret", "read", json!({"path": "~/.ssh/id_ed25519"})),
            ];
            let missing = fx.root.join("no-such-dir/cordon");
            let d = Drive::run(fx, pi, &calls, &missing);
            for (id, _, _) in &calls {
                let text = d.err(id);
                assert!(
                    text.contains("cordon") && text.contains("CORDON_BIN"),
                    "tool call {id} failed without saying that cordon is missing and how to fix it: {text}\n{}",
                    d.context()
                );
                assert!(!text.contains("ran-on-host"), "{text}");
            }
            assert_all_unchanged(&work_before);
            assert_not_exists(&fx.work.join("new.txt"));
            assert_not_exists(&trace);
            assert_not_exists(&fx.work.join(&token));
            d.assert_no_marker(&fx.marker);
            assert!(
                fs::read_to_string(fx.work.join("README"))
                    .unwrap()
                    .contains("workspace-file"),
                "README changed"
            );
        });
    }
}

// ---------------------------------------------------------------------------------
// The user's own `!` commands (user_bash), through --mode rpc
// ---------------------------------------------------------------------------------

/// Runs pi in RPC mode, sends `{"type":"bash"}` for each command, and returns each
/// response's `data` (output, exitCode, ...) plus everything pi printed.
fn rpc_bash(fx: &Fixture, pi: &Pi, cordon: &Path, commands: &[&str]) -> (Vec<Value>, String) {
    let reqs: Vec<Value> = commands
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"id": format!("b{i}"), "type": "bash", "command": c}))
        .collect();
    rpc(fx, pi, cordon, &reqs)
}

/// Runs pi in RPC mode, sends each request (with an `id`) and waits for its response;
/// returns the responses and everything pi printed.
fn rpc(fx: &Fixture, pi: &Pi, cordon: &Path, requests: &[Value]) -> (Vec<Value>, String) {
    rpc_with(fx, pi, cordon, &[], requests, |_, _| None)
}

/// [`rpc`] with `pi_args` added to pi's command line, and the user's side of the
/// extension's dialogs: `answer(id, request)` is given each `extension_ui_request`
/// that waits for an answer, while the request `id` is in flight, and returns the
/// fields of the `extension_ui_response` (`{"confirmed": true}`), if any.
fn rpc_with(
    fx: &Fixture,
    pi: &Pi,
    cordon: &Path,
    pi_args: &[&str],
    requests: &[Value],
    answer: impl Fn(&str, &Value) -> Option<Value>,
) -> (Vec<Value>, String) {
    let model = FakeModel::http(vec![]);
    let agent = agent_dir(fx, model.port);
    let mut cmd = pi_cmd(fx, pi, &agent, cordon, "rpc", None);
    cmd.args(pi_args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = describe(&cmd);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut transcript = String::new();
    let mut results = Vec::new();
    let start = Instant::now();
    for req in requests {
        let id = req["id"]
            .as_str()
            .expect("rpc requests carry an id")
            .to_string();
        writeln!(stdin, "{req}").expect("write to pi's stdin");
        stdin.flush().unwrap();
        loop {
            let left = PI_DEADLINE.saturating_sub(start.elapsed());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!("pi (rpc) gave no answer to {req} in time; transcript:\n{transcript}");
                }
            };
            transcript.push_str(&line);
            transcript.push('\n');
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["type"] == "response" && v["id"] == id.as_str() {
                results.push(v.clone());
                break;
            }
            let dialog = ["confirm", "input", "select", "editor"];
            if v["type"] == "extension_ui_request"
                && dialog.contains(&v["method"].as_str().unwrap_or(""))
                && let Some(mut reply) = answer(&id, &v)
            {
                reply["type"] = json!("extension_ui_response");
                reply["id"] = v["id"].clone();
                writeln!(stdin, "{reply}").expect("write to pi's stdin");
                stdin.flush().unwrap();
            }
        }
    }
    drop(stdin);
    let status = wait_deadline(&mut child, Duration::from_secs(30), &what);
    let stderr = err_thread.join().unwrap_or_default();
    transcript.push_str(&format!("--- exit {status:?}\n--- stderr:\n{stderr}"));
    (results, transcript)
}

/// The user's `!` commands run in the sandbox too.
#[test]
fn pi_user_bash_runs_in_the_sandbox() {
    for (version, pi) in both() {
        for_each_user(&format!("pi-userbash-{version}"), |fx| {
            prepare(fx);
            let home = fx.home.to_string_lossy().into_owned();
            let (res, transcript) = rpc_bash(
                fx,
                pi,
                &cordon_bin(),
                &[
                    "echo from-user > user.txt && echo user-ok",
                    "cat ~/.ssh/id_ed25519 key",
                    &format!("echo evil > {home}/evil-user"),
                ],
            );
            let data = |i: usize| res[i]["data"].clone();
            assert!(
                data(0)["output"].as_str().unwrap_or("").contains("user-ok"),
                "{transcript}"
            );
            assert_eq!(data(0)["exitCode"], 0, "{transcript}");
            assert_eq!(
                fs::read_to_string(fx.work.join("user.txt")).unwrap_or_default(),
                "from-user\n",
                "{transcript}"
            );
            assert!(
                !transcript.contains(&fx.marker),
                "secret leaked through !cmd:\n{transcript}"
            );
            assert_ne!(data(2)["exitCode"], 0, "{transcript}");
            assert_not_exists(&fx.home.join("evil-user"));
        });
    }
}

/// With cordon missing, `!` commands print why and run nothing.
#[test]
fn pi_user_bash_fails_closed_without_cordon() {
    for (version, pi) in both() {
        for_each_user(&format!("pi-userbash-closed-{version}"), |fx| {
            prepare(fx);
            let trace = fx.outside.join(format!("userbash-{}", random_hex(6)));
            let (res, transcript) = rpc_bash(
                fx,
                pi,
                &fx.root.join("no-such-dir/cordon"),
                &[&format!("touch {}; echo ran-on-host", trace.display())],
            );
            let d = &res[0]["data"];
            let out = d["output"].as_str().unwrap_or("");
            assert!(
                out.contains("cordon") && out.contains("CORDON_BIN"),
                "{transcript}"
            );
            assert!(!out.contains("ran-on-host"), "{transcript}");
            assert_ne!(d["exitCode"], 0, "{transcript}");
            assert_not_exists(&trace);
        });
    }
}

/// /sandbox-status shows the backend, the layers, the policy and the denials.
#[test]
fn pi_sandbox_status_command() {
    for (version, pi) in both() {
        for_each_user(&format!("pi-status-{version}"), |fx| {
            prepare(fx);
            let (_, transcript) = rpc(
                fx,
                pi,
                &cordon_bin(),
                &[json!({"id": "s1", "type": "prompt", "message": "/sandbox-status"})],
            );
            let work = fx.work.to_string_lossy().into_owned();
            let backend = if in_vm() { "vm backend" } else { "os backend" };
            for needle in [
                backend,
                "layers:",
                &format!("workspace: {work}"),
                "network: allowlist",
                "allowed domains: none",
                "denied:",
                "recent denials",
            ] {
                assert!(
                    transcript.contains(needle),
                    "/sandbox-status lacks {needle:?}:\n{transcript}"
                );
            }
        });
    }
}

/// `--sandbox-backend vm` runs the extension's tools in cordon's VM (the
/// guest's kernel command line has cordon's options), `--sandbox-backend os`
/// on the host's kernel (the positive control, whatever `$CORDON_BACKEND`
/// says), and a name that is no backend refuses to start, naming both.
#[test]
fn pi_sandbox_backend_flag_chooses_where_the_tools_run() {
    if let Some(why) = common::vm::missing() {
        return eprintln!("skipped: {why}");
    }
    let pi = pi1();
    for_each_user("pi-backend-flag", |fx| {
        prepare(fx);
        let probe = json!({"id": "probe", "type": "bash",
                           "command": "echo kernel-has-cordon=$(grep -c cordon.load= /proc/cmdline)"});
        let ask = |backend: &str| {
            rpc_with(
                fx,
                pi,
                &cordon_bin(),
                &["--sandbox-backend", backend],
                std::slice::from_ref(&probe),
                |_, _| None,
            )
        };
        for (backend, expected) in [("vm", "kernel-has-cordon=1"), ("os", "kernel-has-cordon=0")] {
            let (res, transcript) = ask(backend);
            let output = res[0]["data"]["output"].as_str().unwrap_or("");
            assert!(
                output.contains(expected),
                "--sandbox-backend {backend}: {output}\n{transcript}"
            );
        }
        let (res, transcript) = ask("docker");
        assert!(
            transcript.contains("--sandbox-backend docker is no backend of cordon's")
                && transcript.contains("say os or vm"),
            "{transcript}"
        );
        let output = res[0]["data"]["output"].as_str().unwrap_or("");
        assert!(!output.contains("kernel-has-cordon"), "{output}");
    });
}

/// `/sandbox-allow-domain` in a session with cordon's defaults (nothing allowed,
/// no `--net`): the user says no, and the name stays unreachable; the user says
/// yes, and the sandbox reaches it at once, without a restart; `/sandbox-status`
/// lists it as allowed in this session, and the audit log records the widening
/// with the user's consent through the extension as its origin.
#[test]
fn pi_allow_domain_widens_a_default_session_when_the_user_agrees() {
    for (version, pi) in both() {
        for_each_user(&format!("pi-allow-domain-{version}"), |fx| {
            let up = Upstream::http_on_port_80("web.test");
            let config = fx.root.join("cordon-config.json");
            fx.write(
                &config,
                &json!({"resolve": [format!("web.test:{}", up.addr.ip())]}).to_string(),
            );
            let config = config.to_string_lossy().into_owned();
            let fetch = |id: &str| {
                json!({"id": id, "type": "bash",
                       "command": "curl -fsS -m 5 http://web.test/ && echo FETCHED"})
            };
            let allow = |id: &str| json!({"id": id, "type": "prompt", "message": "/sandbox-allow-domain web.test"});
            let (res, transcript) = rpc_with(
                fx,
                pi,
                &cordon_bin(),
                &["--sandbox-config", &config],
                &[
                    fetch("before"),
                    allow("declined"),
                    fetch("after-no"),
                    allow("agreed"),
                    fetch("after-yes"),
                    json!({"id": "status", "type": "prompt", "message": "/sandbox-status"}),
                ],
                |id, request| {
                    (request["method"] == "confirm").then(|| json!({"confirmed": id == "agreed"}))
                },
            );
            let output = |i: usize| res[i]["data"]["output"].as_str().unwrap_or("").to_string();
            assert!(!output(0).contains("FETCHED"), "{transcript}");
            assert!(
                transcript.contains("web.test stays blocked"),
                "{transcript}"
            );
            assert!(!output(2).contains("FETCHED"), "{transcript}");
            assert!(
                transcript.contains("the sandbox may now reach web.test"),
                "{transcript}"
            );
            assert!(
                output(4).contains("hello from web.test") && output(4).contains("FETCHED"),
                "{transcript}"
            );
            // One request reached the upstream: the one after the user agreed.
            assert_eq!(up.requests().len(), 1, "{}\n{transcript}", up.report());
            assert!(
                transcript.contains("allowed domains: web.test (this session)"),
                "{transcript}"
            );
            let log = fs::read_to_string(fx.home.join(".local/state/cordon/audit.jsonl"))
                .unwrap_or_default();
            let widened: Vec<Value> = log
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|l| l["event"] == "allow_domain")
                .collect();
            assert_eq!(widened.len(), 1, "{log}");
            assert_eq!(widened[0]["host"], "web.test", "{log}");
            assert!(
                widened[0]["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("the user agreed in pi (/sandbox-allow-domain)"),
                "{log}"
            );
        });
    }
}

/// pi's interactive start lists the extension as `cordon` (the directory of its
/// entry point), not as `pi` (the directory of the checkout).
#[test]
fn pi_lists_the_extension_as_cordon() {
    for (version, pi) in both() {
        for_each_user(&format!("pi-name-{version}"), |fx| {
            let model = FakeModel::http(vec![]);
            let agent = agent_dir(fx, model.port);
            let pty = Pty::open(40, 120);
            pty.give_to(&fx.user);
            let mut pty = pty;
            let node = pi.node.to_string_lossy().into_owned();
            let cli = pi.cli.to_string_lossy().into_owned();
            let mut cmd =
                fx.host_cmd(&[&node, &cli, "--provider", "fake", "--model", "fake-model"]);
            cmd.arg("-e")
                .arg(extension_dir())
                .env("PI_CODING_AGENT_DIR", &agent)
                .env("PI_OFFLINE", "1")
                .env("TERM", "xterm-256color")
                .env("CORDON_BIN", cordon_bin());
            pty.attach(&mut cmd);
            let mut child = cmd.spawn().expect("spawn pi");
            let _reap = Defer(|| {
                let _ = child.kill();
                let _ = child.wait();
            });
            let at = pty.expect_from(0, "[Extensions]", Duration::from_secs(60));
            // The section's first entry, up to where `cordon` appears (the test
            // times out, naming what it saw, when it never does).
            let end = pty.expect_from(at, "cordon", Duration::from_secs(10));
            let section = strip_ansi(&String::from_utf8_lossy(&pty.seen[at..end]));
            // The screen pads lines with spaces: the first word is the entry.
            let first = section.split_whitespace().next().unwrap_or("");
            assert_eq!(
                first, "cordon",
                "{version}: the extension is listed as {first:?}"
            );
        });
    }
}

/// `text` without its terminal escape sequences (CSI, OSC).
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' || (c == '\x1b' && chars.peek() == Some(&'\\')) {
                        chars.next_if_eq(&'\\');
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// pi's config dir, wherever PI_CODING_AGENT_DIR puts it
// ---------------------------------------------------------------------------------

/// pi's config dir as `PI_CODING_AGENT_DIR` names it (every drive here sets it):
/// its credential files (auth.json, models.json, mcp.json, mcp-auth.json) are not
/// readable by any tool, with pi 0.87 and 1.x; when the dir lies in the workspace,
/// the whole dir is hidden and cannot be written (pi would load what the agent put
/// there, on the host, next time).
#[test]
fn pi_config_dir_credentials_stay_hidden() {
    for_each_user("pi-agentdir", |fx| {
        for (version, pi) in both() {
            for in_workspace in [false, true] {
                let tag = format!("AGENTSECRET{}", random_hex(8));
                let agent = if in_workspace {
                    fx.work.join(format!("pi-agent-{}", random_hex(4)))
                } else {
                    fx.root.join(format!("agent-{}", random_hex(4)))
                };
                let a = agent.to_string_lossy().into_owned();
                let calls: Vec<(&str, &str, Value)> = vec![
                    (
                        "cat",
                        "bash",
                        json!({"command": format!(
                            "cat {a}/auth.json {a}/models.json {a}/mcp.json {a}/mcp-auth.json; \
                             grep -rh 'AGENTSECRET[0-9a-f]' {a} ~; echo cat-done")}),
                    ),
                    (
                        "read-auth",
                        "read",
                        json!({"path": format!("{a}/auth.json")}),
                    ),
                    (
                        "read-models",
                        "read",
                        json!({"path": format!("{a}/models.json")}),
                    ),
                    (
                        "grep",
                        "grep",
                        json!({"pattern": "AGENTSECRET[0-9a-f]+", "path": a.clone()}),
                    ),
                    (
                        "plant",
                        "bash",
                        json!({"command": format!(
                            "mkdir -p {a}/extensions; echo 'export default () => {{}}' > {a}/extensions/evil.ts; \
                             echo '{{}}' > {a}/settings.json; echo plant-done")}),
                    ),
                    (
                        "write",
                        "write",
                        json!({"path": format!("{a}/extensions/evil2.ts"), "content": "x"}),
                    ),
                ];
                let d = Drive::run_with(
                    fx,
                    &calls,
                    &cordon_bin(),
                    pi,
                    &[extension_dir()],
                    &agent,
                    |agent| {
                        fx.write(
                            &agent.join("auth.json"),
                            &json!({"anthropic": {"type": "api_key", "key": format!("{tag}A")}})
                                .to_string(),
                        );
                        let models = agent.join("models.json");
                        let mut m: Value =
                            serde_json::from_str(&fs::read_to_string(&models).unwrap()).unwrap();
                        m["providers"]["lit"] = m["providers"]["fake"].clone();
                        m["providers"]["lit"]["apiKey"] = json!(format!("{tag}M"));
                        fx.write(&models, &m.to_string());
                        fx.write(
                            &agent.join("mcp.json"),
                            &json!({"mcpServers": {"s": {"command": "true", "enabled": false,
                                    "env": {"TOKEN": format!("{tag}C")}}}})
                            .to_string(),
                        );
                        fx.write(
                            &agent.join("mcp-auth.json"),
                            &format!("{{\"t\":\"{tag}O\"}}"),
                        );
                        fx.write(
                            &agent.join("settings.json"),
                            "{\"retry\": {\"enabled\": false}}",
                        );
                    },
                );
                let what = format!("pi {version}, config dir {a}");
                // The positive control: the files are there, readable by the user.
                let host = fx.host_sh(&format!(
                    "cat {a}/auth.json {a}/models.json {a}/mcp.json {a}/mcp-auth.json"
                ));
                for suffix in ["A", "M", "C", "O"] {
                    assert!(
                        host.stdout_str().contains(&format!("{tag}{suffix}")),
                        "{what}: {host}"
                    );
                }
                assert!(d.ok("cat").contains("cat-done"), "{what}\n{}", d.context());
                assert!(
                    d.ok("plant").contains("plant-done"),
                    "{what}\n{}",
                    d.context()
                );
                // Nothing of them reached the model or pi's output.
                assert_absent(&d.out, &tag);
                assert!(
                    !d.model.all_text().contains(&tag),
                    "{what}: a credential of pi's config dir reached the model\n{}",
                    d.context()
                );
                // Nothing was planted in the config dir.
                assert_not_exists(&agent.join("extensions/evil.ts"));
                assert_not_exists(&agent.join("extensions/evil2.ts"));
                assert_eq!(
                    fs::read_to_string(agent.join("settings.json")).unwrap(),
                    "{\"retry\": {\"enabled\": false}}",
                    "{what}"
                );
                // The positive control: without cordon, the user can write there.
                let probe = agent.join("extensions/probe.ts");
                fx.host_sh(&format!(
                    "mkdir -p {a}/extensions && echo x > {}",
                    probe.display()
                ))
                .assert_success();
                assert!(
                    probe.is_file(),
                    "{what}: the user cannot write {}",
                    probe.display()
                );
            }
        }
    });
}

// ---------------------------------------------------------------------------------
// MCP servers (pi 1.x)
// ---------------------------------------------------------------------------------

/// pi 1.x starts MCP stdio servers (of mcp.json, and those an extension registers)
/// as host processes. With cordon's extension each runs inside a sandbox: what it
/// writes outside the workspace never lands, what it writes in the workspace does
/// (it ran); an HTTP server, which pi would reach from the host, is not connected.
#[test]
fn pi_mcp_servers_run_in_the_sandbox() {
    let pi = pi1();
    for_each_user("pi-mcp", |fx| {
        let net = Listener::new();
        let server = |name: &str| {
            let host = fx.outside.join(format!("{name}-host"));
            let inside = fx.work.join(format!("{name}-inside"));
            let script = format!(
                "hostname > {}; echo ran > {}",
                host.display(),
                inside.display()
            );
            (
                host,
                inside,
                json!({"command": "sh", "args": ["-c", script], "exposure": "direct"}),
            )
        };
        let (file_host, file_inside, file_server) = server("mcp-json");
        let (reg_host, reg_inside, reg_server) = server("registered");
        // Another extension that registers a server.
        let reg_ext = fx.root.join("reg-ext/index.ts");
        fx.write(
            &reg_ext,
            &format!(
                "export default function (pi: any) {{ pi.registerMcpServer(\"reg\", {reg_server}); }}\n"
            ),
        );
        let mcp = json!({"mcpServers": {
            "file": file_server,
            "remote": {"url": format!("http://127.0.0.1:{}/mcp", net.port), "exposure": "direct"},
        }});
        let configure = |agent: &Path| fx.write(&agent.join("mcp.json"), &mcp.to_string());
        let agent = fx.root.join(format!("agent-{}", random_hex(4)));

        // The positive control: pi alone starts both on the host and connects out.
        let d = Drive::run_with(
            fx,
            &[],
            &cordon_bin(),
            pi,
            std::slice::from_ref(&reg_ext),
            &agent,
            configure,
        );
        for (f, what) in [(&file_host, "mcp.json's"), (&reg_host, "the registered")] {
            assert!(
                f.is_file(),
                "without cordon, pi did not start {what} server on the host\n{}",
                d.context()
            );
        }
        assert!(
            net.touched(),
            "without cordon, pi did not connect to the HTTP server"
        );
        for f in [&file_host, &file_inside, &reg_host, &reg_inside] {
            let _ = fs::remove_file(f);
        }

        // With cordon: inside.
        let agent = fx.root.join(format!("agent-{}", random_hex(4)));
        let exts = [extension_dir(), reg_ext.clone()];
        let d = Drive::run_with(fx, &[], &cordon_bin(), pi, &exts, &agent, configure);
        for (host, inside) in [(&file_host, &file_inside), (&reg_host, &reg_inside)] {
            assert_not_exists(host);
            assert_eq!(
                fs::read_to_string(inside).unwrap_or_default(),
                "ran\n",
                "the server did not run inside the sandbox\n{}",
                d.context()
            );
        }
        net.assert_untouched();

        // With cordon missing: no server runs anywhere.
        for f in [&file_inside, &reg_inside] {
            let _ = fs::remove_file(f);
        }
        let agent = fx.root.join(format!("agent-{}", random_hex(4)));
        let missing = fx.root.join("no-such-dir/cordon");
        let d = Drive::run_with(fx, &[], &missing, pi, &exts, &agent, configure);
        for f in [&file_host, &file_inside, &reg_host, &reg_inside] {
            assert!(
                !f.exists(),
                "{} exists with cordon missing\n{}",
                f.display(),
                d.context()
            );
        }
        net.assert_untouched();
    });
}
