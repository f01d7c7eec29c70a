//! End-to-end test of `cordon pi`: the real pi inside the sandbox, a scripted fake
//! model served over HTTPS (the test CA) and reached inside by name
//! (`--resolve fake.test:127.0.0.1 --upstream-ca CA`), its key named in
//! `models.json` (`"apiKey": "$FAKE_KEY"`) and given in cordon's environment.
//!
//! pi: `$CORDON_TEST_PI_PREFIX` (an npm prefix holding
//! `node_modules/@earendil-works/pi-coding-agent`), else `npm install`ed once into
//! `<target>/tmp/pi-e2e/` (as in pi.rs) and made readable by all.
//!
//! Both tests run as root and as the ordinary test user ([`for_each_user`]): the
//! fixture (models.json, auth.json, the sessions dir, the workspace, the launcher) is
//! that user's; pi's install, node and the test CA are readable by every user, and
//! the fake model listens on 127.0.0.1 for whoever connects.

mod common;

use common::fake_model::FakeModel;
use common::upstream::test_ca;
use common::*;
use serde_json::json;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PI_SPEC: &str = "@earendil-works/pi-coding-agent@0.87";
const PI_DEADLINE: Duration = Duration::from_secs(240);
/// The real key: only the fake model may ever see it.
const REAL_KEY: &str = "real-secret-xyz-4711";

/// The pi CLI script (dist/bundle/cli.js), installed if need be.
fn pi_cli() -> PathBuf {
    let (prefix, install) = match std::env::var_os("CORDON_TEST_PI_PREFIX") {
        Some(p) => (PathBuf::from(p), false),
        None => (Path::new(env!("CARGO_TARGET_TMPDIR")).join("pi-e2e"), true),
    };
    let cli = prefix.join("node_modules/@earendil-works/pi-coding-agent/dist/bundle/cli.js");
    if install {
        fs::create_dir_all(&prefix).unwrap();
        let lock = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(prefix.join(".install.lock"))
            .unwrap();
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        if !cli.is_file() {
            let out = Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--prefix"])
                .arg(&prefix)
                .arg(PI_SPEC)
                .env("PATH", PATH)
                .output()
                .expect("run npm");
            assert!(
                out.status.success() && cli.is_file(),
                "npm install {PI_SPEC} failed (set CORDON_TEST_PI_PREFIX to an npm prefix that has it): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Command::new("chmod")
                .args(["-R", "a+rX"])
                .arg(&prefix)
                .status()
                .unwrap();
        }
    }
    assert!(cli.is_file(), "pi is not installed at {}", cli.display());
    cli
}

/// The node to run pi with: the one on PATH, which pi needs at version 22 or later.
fn node() -> PathBuf {
    let node = PATH
        .split(':')
        .map(|d| Path::new(d).join("node"))
        .find(|p| p.is_file())
        .expect("node on PATH");
    let v = Command::new(&node).arg("--version").output().unwrap();
    let major: u32 = String::from_utf8_lossy(&v.stdout)
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 22,
        "pi needs node >= 22; {} is {major}",
        node.display()
    );
    node
}

/// pi's session dir name for a working directory.
fn session_subdir(cwd: &Path) -> String {
    let s = cwd.to_string_lossy();
    format!(
        "--{}--",
        s.trim_start_matches('/').replace(['/', '\\', ':'], "-")
    )
}

#[test]
fn pi_runs_inside_with_its_keys_outside() {
    let cli = pi_cli();
    for_each_user("pi-cli", |fx| {
        // A launcher that runs pi with the node this test checked.
        let launcher = fx.root.join("bin/pi");
        fx.write(
            &launcher,
            &format!(
                "#!/bin/sh\nexec {} {} \"$@\"\n",
                node().display(),
                cli.display()
            ),
        );
        fs::set_permissions(&launcher, fs::Permissions::from_mode(0o755)).unwrap();

        let work = fx.work.canonicalize().unwrap();
        let agent = fx.home.join(".pi/agent");
        let sessions = agent.join("sessions").join(session_subdir(&work));
        // A session written on the host beforehand.
        let old_session = "2020-01-01T00-00-00-000Z_00000000-0000-4000-8000-000000000000.jsonl";
        fx.write(
            &sessions.join(old_session),
            &format!(
                "{}\n",
                json!({"type": "session", "version": 3, "id": "00000000-0000-4000-8000-000000000000",
                    "timestamp": "2020-01-01T00:00:00.000Z", "cwd": work})
            ),
        );
        let literal = format!("LITERAL{}", fx.marker);
        let auth_key = format!("AUTHKEY{}", fx.marker);
        let script = vec![
            (
                "c1".to_string(),
                "echo ENV-BEGIN; env; echo ENVIRON-BEGIN; for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done; \
                 echo FILES-BEGIN; cat ~/.pi/agent/models.json ~/.pi/agent/auth.json; \
                 S=real-se; echo SCAN-BEGIN; grep -rl \"${S}cret-xyz\" ~ /tmp \"$PWD\" /etc 2>/dev/null; echo SCAN-DONE"
                    .to_string(),
            ),
            (
                "c2".to_string(),
                format!(
                    "echo made-inside > inside.txt && echo ok-inside; echo bad > {}/escaped.txt; echo rc=$?; ls ~/.pi/agent/sessions/*/",
                    fx.outside.display()
                ),
            ),
        ];
        let script = script
            .into_iter()
            .map(|(id, command)| (id, "bash".to_string(), json!({ "command": command })))
            .collect();
        let model = FakeModel::https("fake.test", script);
        // The model's provider, its key by variable; another with a literal key; a key
        // that pi stored with /login.
        fx.write(
            &agent.join("models.json"),
            &serde_json::to_string_pretty(&json!({"providers": {
                "fake": {
                    "baseUrl": format!("https://fake.test:{}/v1", model.port),
                    "api": "openai-completions",
                    "apiKey": "$FAKE_KEY",
                    "compat": {"supportsDeveloperRole": false, "supportsReasoningEffort": false},
                    "models": [{"id": "fake-model", "reasoning": false, "input": ["text"],
                                "contextWindow": 32000, "maxTokens": 1024}]},
                "other": {
                    "baseUrl": "https://other.test/v1",
                    "api": "openai-completions",
                    "apiKey": literal,
                    "models": [{"id": "other-model", "reasoning": false, "input": ["text"],
                                "contextWindow": 32000, "maxTokens": 1024}]}
            }}))
            .unwrap(),
        );
        fx.write(
            &agent.join("auth.json"),
            &json!({"anthropic": {"type": "api_key", "key": auth_key}}).to_string(),
        );

        let ca = test_ca().path_str();
        let mut cmd = fx.cordon_cmd(&[
            "pi",
            "--resolve",
            "fake.test:127.0.0.1",
            "--upstream-ca",
            &ca,
            "--",
            "--provider",
            "fake",
            "--model",
            "fake-model",
            "--tools",
            "bash",
            "--mode",
            "json",
            "go",
        ]);
        cmd.env("FAKE_KEY", REAL_KEY)
            .env("PI_OFFLINE", "1")
            .env("CORDON_PI", &launcher);
        let out = run_cmd(cmd, None, PI_DEADLINE);
        let log = model.log.lock().unwrap();
        let context = format!(
            "{out}\nmodel bodies:\n{}",
            log.bodies.last().cloned().unwrap_or_default()
        );
        out.assert_success();
        assert!(
            log.bodies.len() >= 3,
            "pi did not finish the script\n{context}"
        );
        // The server receives the real key, on every request.
        for a in &log.authorizations {
            assert_eq!(a, &format!("Bearer {REAL_KEY}"), "{context}");
        }
        let results: std::collections::HashMap<_, _> = log.results.iter().cloned().collect();
        let c1 = results
            .get("c1")
            .unwrap_or_else(|| panic!("no c1\n{context}"));
        let c2 = results
            .get("c2")
            .unwrap_or_else(|| panic!("no c2\n{context}"));
        // Inside: placeholders only.
        assert!(c1.contains("FAKE_KEY=cordon-secret-fake-key-"), "{c1}");
        // Every file in reach (home, the config dir, /tmp, the workspace, /etc).
        let scan = c1
            .split("SCAN-BEGIN\n")
            .nth(1)
            .and_then(|rest| rest.split("SCAN-DONE").next())
            .unwrap_or_else(|| panic!("no scan\n{c1}"));
        assert_eq!(scan.trim(), "", "files holding the real key inside");
        assert!(
            c1.contains("cordon-secret-cordon-pi-models-other-"),
            "models.json copy: {c1}"
        );
        // Nothing of the real keys, anywhere: pi's output, the tool results, the requests.
        let everything = format!("{}\n{}", out.all(), log.bodies.join("\n"));
        for secret in [REAL_KEY, "real-secret-xyz", &fx.marker] {
            assert!(!everything.contains(secret), "{secret} leaked\n{context}");
        }
        // The workspace is writable, the rest is not.
        assert_eq!(
            fs::read_to_string(work.join("inside.txt")).unwrap_or_default(),
            "made-inside\n",
            "{c2}"
        );
        assert!(!fx.outside.join("escaped.txt").exists(), "{c2}");
        // The positive control: without cordon, this user may write there.
        let probe = fx.outside.join("host-probe.txt");
        fx.host_sh(&format!("echo probe > {}", probe.display()))
            .assert_success();
        assert!(probe.is_file(), "the user cannot write {}", probe.display());
        assert!(c2.contains("ok-inside") && !c2.contains("rc=0"), "{c2}");
        // The session made on the host is listed inside; the one pi wrote is on the host.
        assert!(c2.contains(old_session), "{c2}");
        let written: Vec<String> = fs::read_dir(&sessions)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != old_session && n.ends_with(".jsonl"))
            .collect();
        assert_eq!(
            written.len(),
            1,
            "sessions on the host: {written:?}\n{context}"
        );
        let session = fs::read_to_string(sessions.join(&written[0])).unwrap();
        assert!(
            session.contains("made-inside") || session.contains("ok-inside"),
            "{session}"
        );
        assert!(!session.contains(REAL_KEY));
    });
}

#[test]
fn missing_pi_says_how_to_install_it() {
    for_each_user("pi-missing", |fx| {
        let mut cmd = fx.cordon_cmd(&["pi", "--", "--version"]);
        cmd.env("PATH", "/nonexistent");
        let out = run_cmd(cmd, None, RUN_DEADLINE);
        out.assert_status(125);
        out.assert_stderr_contains("npm install -g @earendil-works/pi-coding-agent");
    });
}
