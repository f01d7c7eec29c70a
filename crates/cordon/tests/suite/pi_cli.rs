//! End-to-end test of `cordon pi`: the real pi inside the sandbox, a scripted fake
//! model served over HTTPS (the test CA) and reached inside by name
//! (`--resolve fake.test:127.0.0.1 --upstream-ca CA`), its key named in
//! `models.json` (`"apiKey": "$FAKE_KEY"`) and given in cordon's environment.
//!
//! pi: the newest 1.x, and 0.87 for the main test (common/pi.rs:
//! `$CORDON_TEST_PI1_PREFIX` and `$CORDON_TEST_PI_PREFIX`, else installed with npm and
//! made readable by all; each checked to be the version it stands for).
//!
//! Both tests run as root and as the ordinary test user ([`for_each_user`]): the
//! fixture (models.json, auth.json, the sessions dir, the workspace, the launcher) is
//! that user's; pi's install, node and the test CA are readable by every user, and
//! the fake model listens on 127.0.0.1 for whoever connects.

use crate::common;

use common::fake_model::FakeModel;
use common::pi::{Pi, both, pi1};
use common::upstream::test_ca;
use common::*;
use serde_json::json;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PI_DEADLINE: Duration = Duration::from_secs(240);
/// The real key: only the fake model may ever see it.
const REAL_KEY: &str = "real-secret-xyz-4711";

/// pi's session dir name for a working directory.
fn session_subdir(cwd: &Path) -> String {
    let s = cwd.to_string_lossy();
    format!(
        "--{}--",
        s.trim_start_matches('/').replace(['/', '\\', ':'], "-")
    )
}

/// A launcher that runs `pi` with its node, as `fx`'s user.
fn launcher(fx: &Fixture, pi: &Pi) -> PathBuf {
    let launcher = fx.root.join("bin/pi");
    fx.write(
        &launcher,
        &format!(
            "#!/bin/sh\nexec {} {} \"$@\"\n",
            pi.node.display(),
            pi.cli.display()
        ),
    );
    fs::set_permissions(&launcher, fs::Permissions::from_mode(0o755)).unwrap();
    launcher
}

/// A models.json provider entry for the fake model at `base_url`.
fn provider(base_url: &str, api_key: &str, model: &str) -> serde_json::Value {
    json!({
        "baseUrl": base_url,
        "api": "openai-completions",
        "apiKey": api_key,
        "compat": {"supportsDeveloperRole": false, "supportsReasoningEffort": false},
        "models": [{"id": model, "reasoning": false, "input": ["text"],
                    "contextWindow": 32000, "maxTokens": 1024}]
    })
}

/// `cordon pi OPTIONS -- --provider P --model M --tools bash --mode json PI_ARGS... go`.
fn pi_cmd(
    fx: &Fixture,
    launcher: &Path,
    options: &[&str],
    provider: &str,
    pi_args: &[&str],
) -> Command {
    let mut args = vec!["pi"];
    args.extend_from_slice(options);
    args.extend_from_slice(&["--", "--provider", provider, "--model", "fake-model"]);
    args.extend_from_slice(&["--tools", "bash", "--mode", "json"]);
    args.extend_from_slice(pi_args);
    args.push("go");
    let mut cmd = fx.cordon_cmd(&args);
    cmd.env("PI_OFFLINE", "1").env("CORDON_PI", launcher);
    cmd
}

#[test]
fn pi_runs_inside_with_its_keys_outside() {
    for (version, pi) in both() {
        for_each_user(&format!("pi-cli-{version}"), |fx| {
            let launcher = launcher(fx, pi);
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
            // The user config's pi section: a read-only and a read-write mount, limits.
            let datasets = fx.root.join("datasets");
            let results_dir = fx.root.join("results");
            fx.write(&datasets.join("f"), "dataset-original\n");
            fx.mkdir(&results_dir);
            fx.write(
                &fx.home.join(".config/cordon/config.json"),
                &json!({"pi": {"memory": "2G", "mount": [
                {"source": datasets, "target": "/data", "mode": "ro"},
                {"source": results_dir, "target": "/results", "mode": "rw"}]}})
                .to_string(),
            );
            let script = vec![
            (
                "c1".to_string(),
                "echo ENV-BEGIN; env; echo ENVIRON-BEGIN; for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done 2>&1; \
                 echo FILES-BEGIN; cat ~/.pi/agent/models.json ~/.pi/agent/auth.json 2>&1; \
                 S=real-se; echo SCAN-BEGIN; grep -rl \"${S}cret-xyz\" ~ /tmp \"$PWD\" /etc 2>/dev/null; echo SCAN-DONE"
                    .to_string(),
            ),
            (
                "c2".to_string(),
                format!(
                    "echo made-inside > inside.txt && echo ok-inside; echo bad > {}/escaped.txt; echo rc=$?; \
                     echo bad > ~/.pi/agent/models.json; echo bad > ~/.pi/agent/settings.json; \
                     echo '{{}}' > $PI_CODING_AGENT_DIR/models.json; echo cfg=$?; \
                     cat /data/f; echo bad > /data/f; echo ro=$?; echo from-pi > /results/r && echo rw-ok; \
                     ls ~/.pi/agent/sessions/*/",
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
            let fake_url = format!("https://fake.test:{}/v1", model.port);
            fx.write(
                &agent.join("models.json"),
                &serde_json::to_string_pretty(&json!({"providers": {
                    "fake": provider(&fake_url, "$FAKE_KEY", "fake-model"),
                    "other": provider("https://other.test/v1", &literal, "other-model"),
                }}))
                .unwrap(),
            );

            fx.write(&agent.join("settings.json"), "{}\n");
            fx.write(
                &agent.join("auth.json"),
                &json!({"anthropic": {"type": "api_key", "key": auth_key}}).to_string(),
            );
            let config_dir_before = snapshots(&[
                agent.join("models.json"),
                agent.join("settings.json"),
                agent.join("auth.json"),
                datasets.join("f"),
            ]);

            let ca = test_ca().path_str();
            // The pi section's 2G memory limit holds only where a cgroup does (root
            // here); for the ordinary user it is best effort, accepted by name, and
            // node must run under it (RLIMIT_DATA, not RLIMIT_AS).
            let options = [
                "--resolve",
                "fake.test:127.0.0.1",
                "--upstream-ca",
                &ca,
                "--allow-degraded",
                "limits",
            ];
            let mut cmd = pi_cmd(fx, &launcher, &options, "fake", &[]);
            cmd.env("FAKE_KEY", REAL_KEY);
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
            // pi's config dir is read-only (but sessions/), also through the run's dir.
            assert!(!c2.contains("cfg=0"), "{c2}");
            assert_all_unchanged(&config_dir_before);
            // The pi section's mounts: /data read-only, /results written on the host.
            assert!(
                c2.contains("dataset-original") && !c2.contains("ro=0"),
                "{c2}"
            );
            assert!(c2.contains("rw-ok"), "{c2}");
            let r = results_dir.join("r");
            assert_eq!(
                fs::read_to_string(&r).unwrap_or_default(),
                "from-pi\n",
                "{c2}"
            );
            let meta = fs::metadata(&r).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (fx.user.uid, fx.user.gid));
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
}

/// Keys that are not one whole `$NAME` (a literal holding `$`, text mixed with a
/// variable) and every field of an OAuth login (idToken, ...) never enter: not in
/// the environment of any process inside, not in any file in reach (the run's
/// config dir included); the upstream still gets the key pi would send.
#[test]
fn keys_with_dollars_and_oauth_fields_stay_outside() {
    let pi = pi1();
    for_each_user("pi-cli-keys", |fx| {
        let launcher = launcher(fx, pi);
        let agent = fx.home.join(".pi/agent");
        let (half1, half2) = (format!("PIK{}", random_hex(4)), random_hex(4));
        let tag = format!("{half1}{half2}");
        let part = "partvalue";
        // pi sends `<tag>LIT$A-partvalue` for this.
        let api_key = format!("{tag}LIT$$A-${{FAKE_PART}}");
        let sent = format!("Bearer {tag}LIT$A-{part}");
        let script = vec![(
            "k1".to_string(),
            "bash".to_string(),
            json!({"command": format!(
                "env; for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done 2>&1; \
                 cat $PI_CODING_AGENT_DIR/models.json $PI_CODING_AGENT_DIR/auth.json \
                     ~/.pi/agent/models.json ~/.pi/agent/auth.json; \
                 H={half1}; echo SCAN-BEGIN; grep -rl \"${{H}}{half2}\" ~ /tmp \"$PWD\" /etc \
                     $PI_CODING_AGENT_DIR/ 2>/dev/null; echo SCAN-DONE")}),
        )];
        let model = FakeModel::https("fake.test", script);
        let url = format!("https://fake.test:{}/v1", model.port);
        fx.write(
            &agent.join("models.json"),
            &json!({"providers": {"fake": provider(&url, &api_key, "fake-model")}}).to_string(),
        );
        fx.write(
            &agent.join("auth.json"),
            &json!({
                "anthropic": {"type": "oauth", "access": format!("{tag}ACC"),
                              "refresh": format!("{tag}REF"), "idToken": format!("{tag}IDT"),
                              "expires": 99_999_999_999_999u64},
                "openai": {"type": "api_key", "key": format!("{tag}K$$EY")},
            })
            .to_string(),
        );
        // The positive control: the keys are there on the host, readable by the user.
        let host = fx.host_sh(&format!(
            "cat {0}/models.json {0}/auth.json",
            agent.display()
        ));
        host.assert_success();
        for key in ["LIT$$A", "IDT", "K$$EY"] {
            assert!(host.stdout_str().contains(&format!("{tag}{key}")), "{host}");
        }
        let ca = test_ca().path_str();
        let options = ["--resolve", "fake.test:127.0.0.1", "--upstream-ca", &ca];
        let mut cmd = pi_cmd(fx, &launcher, &options, "fake", &[]);
        cmd.env("FAKE_PART", part);
        let out = run_cmd(cmd, None, PI_DEADLINE);
        let log = model.log.lock().unwrap();
        let context = format!("{out}\nmodel bodies:\n{}", log.bodies.join("\n"));
        out.assert_success();
        assert!(
            log.bodies.len() >= 2,
            "pi did not run the script\n{context}"
        );
        // The upstream gets the key pi would send outside, on every request.
        for a in &log.authorizations {
            assert_eq!(a, &sent, "{context}");
        }
        let k1 = log
            .results
            .iter()
            .find(|(id, _)| id == "k1")
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("no k1\n{context}"));
        assert!(
            k1.contains("cordon-secret-"),
            "the copies hold placeholders: {k1}"
        );
        let scan = k1
            .split("SCAN-BEGIN\n")
            .nth(1)
            .and_then(|rest| rest.split("SCAN-DONE").next())
            .unwrap_or_else(|| panic!("no scan\n{k1}"));
        assert_eq!(scan.trim(), "", "files holding a key inside\n{k1}");
        // Nothing of any key: not in what the tool printed, pi's output or the
        // requests (the bodies carry the tool results).
        let everything = format!("{}\n{}", out.all(), log.bodies.join("\n"));
        assert!(!everything.contains(&tag), "a key leaked\n{context}");
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

/// `cordon policy --pi` says truly where each key's value is: a variable a
/// provider names with `$NAME` is the host's; a literal key is in pi's
/// models.json, under a name cordon made up. A bare `NAME` is a literal to pi
/// (0.87 and 1.x send it as text), so the variable of that name is no secret,
/// though it is set. No value is shown.
#[test]
fn policy_says_where_each_key_is_from() {
    for_each_user("pi-policy-keys", |fx| {
        let agent = fx.home.join(".pi/agent");
        fx.write(
            &agent.join("models.json"),
            &json!({"providers": {
                "env": {"baseUrl": "https://env.example/v1", "apiKey": "$PI_TEST_ENV_KEY"},
                "bare": {"baseUrl": "https://bare.example/v1", "apiKey": "PI_TEST_BARE_KEY"},
                "lit": {"baseUrl": "https://lit.example/v1", "apiKey": "sk-lit$$x"},
            }})
            .to_string(),
        );
        let mut cmd = fx.cordon_cmd(&["policy", "--pi"]);
        cmd.env("PI_TEST_ENV_KEY", "env-value-4711")
            .env("PI_TEST_BARE_KEY", "bare-value-4711");
        let out = run_cmd(cmd, None, RUN_DEADLINE);
        out.assert_success()
            .assert_stdout_contains(
                "secret  PI_TEST_ENV_KEY (from the host's $PI_TEST_ENV_KEY; inside, a placeholder) sent only to env.example",
            )
            .assert_stdout_contains(
                "secret  CORDON_PI_MODELS_BARE (from pi's models.json; inside, a placeholder) sent only to bare.example",
            )
            .assert_stdout_contains(
                "secret  CORDON_PI_MODELS_LIT (from pi's models.json; inside, a placeholder) sent only to lit.example",
            );
        let text = out.stdout_str();
        assert!(!text.contains("PI_TEST_BARE_KEY"), "{out}");
        assert!(!text.contains("from the host's $CORDON_PI"), "{out}");
        for value in ["env-value-4711", "bare-value-4711", "sk-lit"] {
            assert!(!out.all().contains(value), "{value}: {out}");
        }
    });
}

#[test]
fn the_runs_config_dir_is_removed_however_the_run_ends() {
    for_each_user("pi-cleanup", |fx| {
        // A stand-in for pi: what is tested happens before and after it runs.
        let bin = fx.root.join("bin");
        let fake_pi = bin.join("pi");
        fx.write(&fake_pi, "#!/bin/sh\nexit 0\n");
        fs::set_permissions(&fake_pi, fs::Permissions::from_mode(0o755)).unwrap();
        let no_certs = fx.root.join("no-certs.pem");
        fx.write(&no_certs, "");
        let (bin, no_certs) = (bin.display().to_string(), no_certs.display().to_string());
        let cache = fx.home.join(".cache/cordon/pi");
        for (options, status, says) in [
            // The policy fails.
            (vec!["--memory", "lots"], 125, "memory"),
            // pi lies in a path the policy hides.
            (vec!["--deny-read", bin.as_str()], 125, "the policy hides"),
            // The egress broker cannot start.
            (
                vec!["--allow-domain", "example.com", "--upstream-ca", &no_certs],
                125,
                "no PEM certificate",
            ),
            // The run ends as it should.
            (vec![], 0, ""),
        ] {
            let mut args = vec!["pi"];
            args.extend_from_slice(&options);
            args.extend_from_slice(&["--", "--version"]);
            let mut cmd = fx.cordon_cmd(&args);
            cmd.env("CORDON_PI", &fake_pi);
            let out = run_cmd(cmd, None, RUN_DEADLINE);
            out.assert_status(status);
            out.assert_stderr_contains(says);
            // The run got as far as making its dirs.
            assert!(cache.is_dir(), "{options:?}: no {}\n{out}", cache.display());
            let left: Vec<_> = fs::read_dir(&cache)
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .filter(|n| n.to_string_lossy().starts_with("agent-"))
                .collect();
            assert!(
                left.is_empty(),
                "{options:?} left {left:?} in {}",
                cache.display()
            );
        }
    });
}

#[test]
fn a_run_removes_the_dirs_of_runs_that_died_without_cleaning_up() {
    for_each_user("pi-stale", |fx| {
        let fake_pi = fx.root.join("bin/pi");
        fx.write(&fake_pi, "#!/bin/sh\nexit 0\n");
        fs::set_permissions(&fake_pi, fs::Permissions::from_mode(0o755)).unwrap();
        // What a cordon pi killed by SIGKILL leaves: its run's config dir, named
        // by a PID no process has now.
        let mut exited = std::process::Command::new("true").spawn().unwrap();
        let dead = exited.id();
        exited.wait().unwrap();
        let cache = fx.home.join(".cache/cordon/pi");
        let stale = cache.join(format!("agent-{dead}"));
        fx.write(&stale.join("settings.json.lock/pid"), "1");
        // PID 1 is alive: its dir is not cordon's to judge.
        let alive = cache.join("agent-1");
        fx.mkdir(&alive);
        let mut cmd = fx.cordon_cmd(&["pi", "--", "--version"]);
        cmd.env("CORDON_PI", &fake_pi);
        let out = run_cmd(cmd, None, RUN_DEADLINE);
        out.assert_status(0);
        assert!(!stale.exists(), "{} is left\n{out}", stale.display());
        assert!(alive.is_dir(), "a live PID's dir was removed");
    });
}

#[test]
fn pi_continues_a_session_written_on_the_host() {
    let pi = pi1();
    for_each_user("pi-continue", |fx| {
        let launcher = launcher(fx, pi);
        let work = fx.work.canonicalize().unwrap();
        let agent = fx.home.join(".pi/agent");
        let sessions = agent.join("sessions").join(session_subdir(&work));
        let id = "11111111-1111-4111-8111-111111111111";
        let file = sessions.join(format!("2020-01-01T00-00-00-000Z_{id}.jsonl"));
        let said = format!("HOST-SESSION-{}", random_hex(6));
        let lines = [
            json!({"type": "session", "version": 3, "id": id,
                   "timestamp": "2020-01-01T00:00:00.000Z", "cwd": work}),
            json!({"type": "message", "id": "a0000001", "parentId": null,
                   "timestamp": "2020-01-01T00:00:01.000Z",
                   "message": {"role": "user", "content": [{"type": "text", "text": said}],
                               "timestamp": 1577836801000u64}}),
        ];
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        fx.write(&file, &text);
        let model = FakeModel::https("fake.test", Vec::new());
        let url = format!("https://fake.test:{}/v1", model.port);
        fx.write(
            &agent.join("models.json"),
            &json!({"providers": {"fake": provider(&url, "$FAKE_KEY", "fake-model")}}).to_string(),
        );
        let ca = test_ca().path_str();
        let options = ["--resolve", "fake.test:127.0.0.1", "--upstream-ca", &ca];
        let mut cmd = pi_cmd(fx, &launcher, &options, "fake", &["-c"]);
        cmd.env("FAKE_KEY", REAL_KEY);
        let out = run_cmd(cmd, None, PI_DEADLINE);
        out.assert_success();
        let log = model.log.lock().unwrap();
        // pi inside found the session written on the host and sent it on.
        assert!(
            log.bodies.first().is_some_and(|b| b.contains(&said)),
            "{out}\n{:?}",
            log.bodies
        );
        // And what it added is in the same file on the host.
        let after = fs::read_to_string(&file).unwrap();
        assert!(
            after.starts_with(&text) && after.contains("All done."),
            "{after}"
        );
    });
}

#[test]
fn a_local_provider_is_reached_only_with_allow_local() {
    let pi = pi1();
    for_each_user("pi-local", |fx| {
        let launcher = launcher(fx, pi);
        let agent = fx.home.join(".pi/agent");
        let script = vec![(
            "l1".to_string(),
            "bash".to_string(),
            json!({"command": "echo local-ran"}),
        )];
        let model = FakeModel::http(script);
        let addr = format!("127.0.0.1:{}", model.port);
        // As pi's users write it: localhost, which inside is 127.0.0.1 too.
        let url = format!("http://localhost:{}/v1", model.port);
        fx.write(
            &agent.join("models.json"),
            &json!({"providers": {"local": provider(&url, "local-key", "fake-model")}}).to_string(),
        );
        fx.write(
            &agent.join("settings.json"),
            r#"{"retry": {"enabled": false}}"#,
        );
        // Not allowed: one warning naming the flag, and nothing reaches the model.
        let cmd = pi_cmd(fx, &launcher, &["--timeout", "60"], "local", &[]);
        let out = run_cmd(cmd, None, PI_DEADLINE);
        let hint = format!("pass --allow-local localhost:{}", model.port);
        out.assert_stderr_contains(&format!(
            "pi's provider \"local\" (models.json) is at localhost:{}",
            model.port
        ));
        out.assert_stderr_contains(&hint);
        assert_eq!(
            out.stderr_str().matches("warning: pi's provider").count(),
            1,
            "{out}"
        );
        assert!(model.log.lock().unwrap().bodies.is_empty(), "{out}");
        // Allowed: pi inside reaches it, with its key as it is (no name to scope it to).
        let cmd = pi_cmd(fx, &launcher, &["--allow-local", &addr], "local", &[]);
        let out = run_cmd(cmd, None, PI_DEADLINE);
        out.assert_success();
        assert!(!out.stderr_str().contains("pi's provider"), "{out}");
        let log = model.log.lock().unwrap();
        assert!(log.bodies.len() >= 2, "{out}");
        assert!(
            log.authorizations.iter().all(|a| a == "Bearer local-key"),
            "{out}"
        );
        assert!(log.bodies.last().unwrap().contains("local-ran"), "{out}");
    });
}

/// `cordon pi --backend vm`: the whole of pi (1.x) runs in the guest (its
/// bash tool's PID 1 is cordon's agent), talks to the fake model by name
/// through the host's broker, which swaps the placeholder for the real key
/// (the model receives the key, the guest holds only the placeholder, pi's
/// output never shows the key). As root and as the test user.
#[test]
fn pi_runs_in_the_vm_with_its_keys_outside() {
    if let Some(why) = common::vm::missing() {
        return eprintln!("skipped: {why}");
    }
    let pi = pi1();
    for_each_user("pi-cli-vm", |fx| {
        let launcher = launcher(fx, pi);
        let agent = fx.home.join(".pi/agent");
        let script = vec![(
            "c1".to_string(),
            "bash".to_string(),
            json!({"command": "echo BOOTED=$(grep -o 'cordon[.]load=' /proc/cmdline); echo KEY=$FAKE_KEY"}),
        )];
        let model = FakeModel::https("fake.test", script);
        let fake_url = format!("https://fake.test:{}/v1", model.port);
        fx.write(
            &agent.join("models.json"),
            &json!({"providers": {"fake": provider(&fake_url, "$FAKE_KEY", "fake-model")}})
                .to_string(),
        );
        fx.write(&agent.join("settings.json"), "{}\n");
        fx.write(&agent.join("auth.json"), "{}\n");
        let ca = test_ca().path_str();
        let options = [
            "--backend",
            "vm",
            "--resolve",
            "fake.test:127.0.0.1",
            "--upstream-ca",
            &ca,
        ];
        let mut cmd = pi_cmd(fx, &launcher, &options, "fake", &[]);
        cmd.env("FAKE_KEY", REAL_KEY)
            .env("XDG_CACHE_HOME", common::vm::cache(fx));
        let out = run_cmd(cmd, None, PI_DEADLINE);
        let log = model.log.lock().unwrap();
        let context = format!(
            "{out}\nmodel bodies:\n{}",
            log.bodies.last().cloned().unwrap_or_default()
        );
        out.assert_success();
        assert!(log.bodies.len() >= 2, "pi did not finish\n{context}");
        for a in &log.authorizations {
            assert_eq!(a, &format!("Bearer {REAL_KEY}"), "{context}");
        }
        let results: std::collections::HashMap<_, _> = log.results.iter().cloned().collect();
        let c1 = results
            .get("c1")
            .unwrap_or_else(|| panic!("no c1\n{context}"));
        // The kernel cordon booted (its command line names the agent's modules).
        assert!(c1.contains("BOOTED=cordon.load="), "{c1}");
        assert!(c1.contains("KEY=cordon-secret-fake-key-"), "{c1}");
        let everything = format!("{}\n{}", out.all(), log.bodies.join("\n"));
        assert!(!everything.contains(REAL_KEY), "the key leaked\n{context}");
    });
}
