//! Functional tests: what users and scripts rely on when nothing is attacking —
//! exit statuses, signals, stdin/stdout/stderr, the terminal of `cordon shell`, file
//! ownership, git, python and node inside, large outputs, the flags and
//! `cordon policy --json`. Tests that depend on who runs cordon run as root and as an
//! ordinary user (see common/mod.rs).

use crate::common;

use common::*;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// Polls until `path` exists, at most `within`.
fn wait_for_file(path: &Path, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    path.exists()
}

// ---------------------------------------------------------------------------------
// Exit statuses
// ---------------------------------------------------------------------------------

#[test]
fn exit_status_of_the_command_passes_through() {
    for_each_user("exit_status_of_the_command_passes_through", |fx| {
        fx.run(&["true"]).assert_status(0);
        fx.run(&["false"]).assert_status(1);
        fx.sh("exit 3").assert_status(3);
        fx.sh("exit 255").assert_status(255);
    });
}

#[test]
fn death_by_signal_gives_128_plus_n() {
    for_each_user("death_by_signal_gives_128_plus_n", |fx| {
        fx.sh("kill -TERM $$").assert_status(143);
        fx.sh("kill -KILL $$").assert_status(137);
        fx.sh("kill -INT $$").assert_status(130);
        fx.sh("kill -SEGV $$").assert_status(139);
    });
}

#[test]
fn timeout_gives_124_and_a_message() {
    for_each_user("timeout_gives_124_and_a_message", |fx| {
        let out = fx.cordon(&["run", "--timeout", "0.5", "--", "sleep", "30"]);
        out.assert_status(124);
        assert!(out.elapsed < Duration::from_secs(10), "{out}");
        assert!(out.stderr_str().starts_with("cordon:"), "{out}");
        // A command that finishes in time keeps its own status.
        fx.cordon(&["run", "--timeout", "30", "--", "sh", "-c", "exit 5"])
            .assert_status(5);
    });
}

#[test]
fn not_executable_gives_126() {
    for_each_user("not_executable_gives_126", |fx| {
        fx.write(&fx.work.join("script.sh"), "#!/bin/sh\necho ran\n");
        fs::set_permissions(fx.work.join("script.sh"), fs::Permissions::from_mode(0o644)).unwrap();
        let out = fx.run(&["./script.sh"]);
        out.assert_status(126).assert_not_printed("ran\n");
        fx.mkdir(&fx.work.join("adir"));
        fx.run(&["./adir"]).assert_status(126);
        // Control: with the bit set it runs.
        fs::set_permissions(fx.work.join("script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fx.run(&["./script.sh"])
            .assert_success()
            .assert_stdout_contains("ran");
    });
}

#[test]
fn not_found_gives_127() {
    for_each_user("not_found_gives_127", |fx| {
        fx.run(&["cordon-no-such-command-xyz"]).assert_status(127);
        fx.run(&["/nonexistent/bin/tool"]).assert_status(127);
        fx.sh("cordon-no-such-command-xyz").assert_status(127);
    });
}

#[test]
fn unknown_flag_gives_125_with_a_cordon_message() {
    if common::vm::skipped_for_want_of_a_vm("unknown_flag_gives_125") {
        return;
    }
    let fx = Fixture::new(&users()[0], "unknown_flag_gives_125");
    let mut failures = Vec::new();
    for args in [
        vec!["run", "--no-such-flag", "--", "touch", "ran"],
        vec!["run", "--net", "bogus", "--", "touch", "ran"],
        vec!["run", "--timeout", "soon", "--", "touch", "ran"],
        vec!["shell", "--no-such-flag"],
        vec!["policy", "--no-such-flag"],
    ] {
        let out = fx.cordon(&args);
        if out.code != Some(125) || !out.stderr_str().starts_with("cordon:") {
            failures.push(format!(
                "`cordon {}`: exit {:?}, stderr {:?} (expected 125 and a message starting `cordon:`)",
                args.join(" "),
                out.code,
                out.stderr_str().lines().next().unwrap_or_default()
            ));
        }
        assert_not_exists(&fx.work.join("ran"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bad_values_and_missing_workspace_give_125() {
    for_each_user("bad_values_and_missing_workspace_give_125", |fx| {
        for args in [
            vec!["run", "--workspace", "/nonexistent/cordon-ws", "--", "true"],
            vec!["run", "--memory", "lots", "--", "true"],
            vec!["run", "--pids", "0", "--", "true"],
        ] {
            let out = fx.cordon(&args);
            out.assert_status(125);
            assert!(out.stderr_str().starts_with("cordon:"), "{out}");
        }
        fx.write(&fx.work.join(".cordon.json"), "{\"no_such_field\": 1}\n");
        let out = fx.run(&["touch", "ran"]);
        out.assert_status(125)
            .assert_stderr_contains("no_such_field");
        assert_not_exists(&fx.work.join("ran"));
    });
}

// ---------------------------------------------------------------------------------
// Signals and standard streams
// ---------------------------------------------------------------------------------

fn spawn_trapping(fx: &Fixture, signal: &str) -> Child {
    let script = format!(
        "trap 'echo got-{signal} > got.txt; exit 0' {signal}; touch ready; \
         while :; do sleep 0.05; done"
    );
    spawn_quiet(fx.sh_cmd(&script))
}

#[test]
fn sigterm_and_sigint_reach_the_command() {
    for_each_user("sigterm_and_sigint_reach_the_command", |fx| {
        for (name, sig) in [("TERM", libc::SIGTERM), ("INT", libc::SIGINT)] {
            let _ = fs::remove_file(fx.work.join("ready"));
            let _ = fs::remove_file(fx.work.join("got.txt"));
            let mut child = spawn_trapping(fx, name);
            if !wait_for_file(&fx.work.join("ready"), WAIT) {
                let _ = child.kill();
                panic!("the command never started");
            }
            // SAFETY: kill(2) takes no pointers; the target is this test's child.
            unsafe {
                libc::kill(child.id() as i32, sig);
            }
            let status = wait_deadline(&mut child, WAIT, "cordon after a signal");
            let got = fs::read_to_string(fx.work.join("got.txt")).unwrap_or_default();
            assert_eq!(
                got,
                format!("got-{name}\n"),
                "SIG{name} did not reach the command"
            );
            assert_eq!(status.code(), Some(0), "SIG{name}: status {status:?}");
        }
    });
}

#[test]
fn stdin_passes_through() {
    for_each_user("stdin_passes_through", |fx| {
        let out = run_cmd(
            fx.cordon_cmd(&["run", "--", "cat"]),
            Some(b"data\n".to_vec()),
            RUN_DEADLINE,
        );
        out.assert_success();
        assert_eq!(out.stdout, b"data\n");
        // Several megabytes, binary, in and out again.
        let big: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let out = run_cmd(
            fx.cordon_cmd(&["run", "--", "cat"]),
            Some(big.clone()),
            RUN_DEADLINE,
        );
        out.assert_success();
        assert!(
            out.stdout == big,
            "stdin came back altered ({} bytes)",
            out.stdout.len()
        );
        // End of input reaches the command.
        let out = run_cmd(
            fx.cordon_cmd(&["run", "--", "wc", "-l"]),
            Some(b"a\nb\nc\n".to_vec()),
            RUN_DEADLINE,
        );
        assert_eq!(out.stdout_str().trim(), "3");
    });
}

#[test]
fn stdout_and_stderr_stay_separate() {
    for_each_user("stdout_and_stderr_stay_separate", |fx| {
        let out = fx.sh("echo to-out; echo to-err >&2; echo more-out");
        out.assert_success();
        assert_eq!(out.stdout_str(), "to-out\nmore-out\n");
        assert_eq!(out.stderr_str(), "to-err\n");
    });
}

#[test]
fn large_output_on_both_streams() {
    for_each_user("large_output_on_both_streams", |fx| {
        let out = fx.sh(
            "head -c 20000000 /dev/zero | tr '\\0' a & head -c 5000000 /dev/zero | tr '\\0' b >&2; wait",
        );
        out.assert_success();
        assert_eq!(out.stdout.len(), 20_000_000, "stdout length");
        assert_eq!(out.stderr.len(), 5_000_000, "stderr length");
        assert!(out.stdout.iter().all(|b| *b == b'a'), "stdout corrupted");
        assert!(out.stderr.iter().all(|b| *b == b'b'), "stderr corrupted");
    });
}

// ---------------------------------------------------------------------------------
// The workspace
// ---------------------------------------------------------------------------------

#[test]
fn files_created_belong_to_the_invoking_user() {
    for_each_user("files_created_belong_to_the_invoking_user", |fx| {
        fx.sh("echo x > file; mkdir -p a/b; touch a/b/c; ln -s file link")
            .assert_success();
        for p in ["file", "a", "a/b", "a/b/c", "link"] {
            let m = fs::symlink_metadata(fx.work.join(p)).unwrap();
            assert_eq!(
                (m.uid(), m.gid()),
                (fx.user.uid, fx.user.gid),
                "{p} is owned by {}:{} on the host, not by the invoking user",
                m.uid(),
                m.gid()
            );
        }
        // Inside, the user sees its own ids.
        let out = fx.run(&["id", "-u"]);
        assert_eq!(out.stdout_str().trim(), fx.user.uid.to_string(), "{out}");
    });
}

#[test]
fn workspace_under_tmp_works() {
    if common::vm::skipped_for_want_of_a_vm("workspace_under_tmp_works") {
        return;
    }
    for user in users() {
        let fx = Fixture::new_in(&user, "workspace_under_tmp_works", Path::new("/tmp"));
        fx.write(&fx.work.join("from-host"), "host-data\n");
        let out = fx.sh(&format!(
            "cat from-host; echo sandbox-data > from-sandbox; cat {}/outside/file; echo LS; ls -A {}",
            fx.root.display(),
            fx.root.display()
        ));
        out.assert_success().assert_stdout_contains("host-data");
        assert_eq!(
            fs::read_to_string(fx.work.join("from-sandbox")).unwrap_or_default(),
            "sandbox-data\n",
            "[{}] the sandbox's write did not reach the workspace under /tmp\n{out}",
            user.label()
        );
        // The private /tmp still hides the rest of the host's /tmp: the workspace's
        // sibling outside/ is not there.
        let listing = out.stdout_str();
        let listing = listing.split("LS\n").nth(1).unwrap_or_default();
        assert!(
            listing.lines().any(|l| l == "work") && !listing.lines().any(|l| l == "outside"),
            "[{}] the host's /tmp shows through\n{out}",
            user.label()
        );
        out.assert_not_printed("outside-original");
        // And --workspace given explicitly from elsewhere works too.
        let mut cmd = fx.sh_cmd_with(
            &["--workspace", fx.work.to_str().unwrap()],
            "pwd; echo x > explicit",
        );
        cmd.current_dir(&fx.work);
        run_cmd(cmd, None, RUN_DEADLINE).assert_success();
        assert!(fx.work.join("explicit").exists());
    }
}

#[test]
fn command_starts_in_the_current_directory_inside_the_workspace() {
    for_each_user(
        "command_starts_in_the_current_directory_inside_the_workspace",
        |fx| {
            let sub = fx.work.join("sub");
            fx.mkdir(&sub);
            let work = fx.work.to_str().unwrap();
            let mut cmd = fx.sh_cmd_with(&["--workspace", work], "pwd");
            cmd.current_dir(&sub);
            run_cmd(cmd, None, RUN_DEADLINE)
                .assert_success()
                .assert_stdout_contains(&format!("{}\n", sub.display()));
            // From outside the workspace, the command starts in the workspace.
            let mut cmd = fx.sh_cmd_with(&["--workspace", work], "pwd");
            cmd.current_dir(&fx.root);
            run_cmd(cmd, None, RUN_DEADLINE)
                .assert_success()
                .assert_stdout_contains(&format!("{work}\n"));
        },
    );
}

#[test]
fn the_sandbox_has_its_own_loopback() {
    // `--net none` means no network but the sandbox's own loopback, IPv4 and IPv6:
    // a test server inside is reachable from inside.
    for_each_user("the_sandbox_has_its_own_loopback", |fx| {
        let script = concat!(
            "import socket\n",
            "for family, host in ((socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')):\n",
            "    server = socket.socket(family); server.bind((host, 0)); server.listen()\n",
            "    client = socket.create_connection((host, server.getsockname()[1]))\n",
            "    peer, _ = server.accept(); client.sendall(b'ping'); print(host, peer.recv(4).decode())\n",
        );
        let out = fx.sh(&format!("python3 -c \"{script}\""));
        out.assert_success()
            .assert_stdout_contains("127.0.0.1 ping")
            .assert_stdout_contains("::1 ping");
    });
}

#[test]
fn works_when_started_with_sigchld_ignored() {
    // An ignored SIGCHLD survives exec; with it the kernel reaps children itself
    // and sends no signal. cordon must still see its sandbox end.
    for_each_user("works_when_started_with_sigchld_ignored", |fx| {
        let mut cmd = fx.sh_cmd("sleep 0.1; exit 3");
        // SAFETY: the closure runs in the forked child before exec and makes one
        // async-signal-safe call that installs no handler.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::signal(libc::SIGCHLD, libc::SIG_IGN);
                Ok(())
            });
        }
        let out = run_cmd(cmd, None, RUN_DEADLINE);
        out.assert_status(3);
    });
}

#[test]
fn read_only_flag_makes_the_workspace_read_only() {
    for_each_user("read_only_flag_makes_the_workspace_read_only", |fx| {
        let readme = fx.work.join("README");
        let before = snapshot(&readme);
        let out = fx.sh_with(
            &["--read-only"],
            "cat README; echo x > new; echo x >> README; echo done",
        );
        out.assert_stdout_contains("workspace-file")
            .assert_stdout_contains("done");
        assert_not_exists(&fx.work.join("new"));
        assert_unchanged(&readme, &before);
        // Control: without the flag the same write works.
        fx.sh("echo x > new").assert_success();
        assert!(fx.work.join("new").exists());
    });
}

#[test]
fn allow_write_flag_makes_another_dir_writable() {
    for_each_user("allow_write_flag_makes_another_dir_writable", |fx| {
        let o = fx.outside.display().to_string();
        // Without the flag: refused.
        fx.sh(&format!("echo no > {o}/new"));
        assert_not_exists(&fx.outside.join("new"));
        fx.sh_with(&["--allow-write", &o], &format!("echo yes > {o}/new"))
            .assert_success();
        assert_eq!(fs::read_to_string(fx.outside.join("new")).unwrap(), "yes\n");
        let m = fs::metadata(fx.outside.join("new")).unwrap();
        assert_eq!(m.uid(), fx.user.uid);
    });
}

#[test]
fn deny_read_flag_hides_a_file_and_a_dir() {
    for_each_user("deny_read_flag_hides_a_file_and_a_dir", |fx| {
        fx.write(
            &fx.work.join("secret.txt"),
            &format!("{}:work-secret\n", fx.marker),
        );
        fx.write(
            &fx.outside.join("private/key"),
            &format!("{}:outside-key\n", fx.marker),
        );
        let o = fx.outside.display().to_string();
        let script = format!("cat secret.txt; cat {o}/private/key; ls -la {o}/private; echo done");
        // Control: visible without the flag.
        fx.sh(&script).assert_stdout_contains(&fx.marker);
        let secret = fx.work.join("secret.txt");
        let before = snapshot(&secret);
        let out = fx.sh_with(
            &[
                "--deny-read",
                "secret.txt",
                "--deny-read",
                &format!("{o}/private"),
            ],
            &script,
        );
        out.assert_stdout_contains("done");
        assert_absent(&out, &fx.marker);
        assert_unchanged(&secret, &before);
    });
}

#[test]
fn env_flag_passes_variables() {
    for_each_user("env_flag_passes_variables", |fx| {
        let mut cmd = fx.sh_cmd_with(
            &["--env", "FOO=bar", "--env", "FROM_HOST"],
            "echo FOO=$FOO; echo FROM_HOST=$FROM_HOST; echo NOT_PASSED=$NOT_PASSED; echo HOME=$HOME",
        );
        cmd.env("FROM_HOST", "host-value")
            .env("NOT_PASSED", "hidden-value");
        let out = run_cmd(cmd, None, RUN_DEADLINE);
        out.assert_success()
            .assert_stdout_contains("FOO=bar\n")
            .assert_stdout_contains("FROM_HOST=host-value\n")
            .assert_stdout_contains("NOT_PASSED=\n")
            .assert_stdout_contains(&format!("HOME={}\n", fx.home.display()));
        out.assert_not_printed("hidden-value");
    });
}

// ---------------------------------------------------------------------------------
// Tools inside
// ---------------------------------------------------------------------------------

#[test]
fn git_works_inside() {
    for_each_user("git_works_inside", |fx| {
        fx.host_sh(
            "git init -q . && git -c user.name=host -c user.email=host@example.com \
             commit -q --allow-empty -m from-host",
        )
        .assert_success();
        let out = fx.cordon(&[
            "run",
            "--env",
            "GIT_AUTHOR_NAME=Sandbox",
            "--env",
            "GIT_AUTHOR_EMAIL=sandbox@example.com",
            "--env",
            "GIT_COMMITTER_NAME=Sandbox",
            "--env",
            "GIT_COMMITTER_EMAIL=sandbox@example.com",
            "--",
            "sh",
            "-c",
            "echo hello > hello.txt && git add hello.txt && git commit -q -m from-sandbox && \
             git -c user.name=X -c user.email=x@example.com commit -q --allow-empty -m second && \
             git log --oneline && git status --short && git branch work && git checkout -q work",
        ]);
        out.assert_success()
            .assert_stdout_contains("from-sandbox")
            .assert_stdout_contains("from-host");
        // The host's git sees the commits the sandbox made.
        let log =
            fx.host_sh("git log --format=%an:%s master 2>/dev/null || git log --format=%an:%s");
        log.assert_stdout_contains("Sandbox:from-sandbox")
            .assert_stdout_contains("second");
        fx.host_sh("git rev-parse --abbrev-ref HEAD")
            .assert_stdout_contains("work");
    });
}

#[test]
fn python_and_node_run_inside() {
    for_each_user("python_and_node_run_inside", |fx| {
        let out = fx.run(&[
            "python3",
            "-c",
            "import json, os, subprocess, sys; open('py.txt', 'w').write(str(6 * 7)); \
             print(json.dumps({'ok': True}), subprocess.run(['true']).returncode)",
        ]);
        out.assert_success()
            .assert_stdout_contains("{\"ok\": true} 0");
        assert_eq!(fs::read_to_string(fx.work.join("py.txt")).unwrap(), "42");
        let out = fx.run(&[
            "node",
            "-e",
            "const fs = require('fs'); fs.writeFileSync('node.txt', String(6 * 7)); \
             console.log(require('child_process').execSync('echo child').toString().trim(), process.version)",
        ]);
        out.assert_success().assert_stdout_contains("child v");
        assert_eq!(fs::read_to_string(fx.work.join("node.txt")).unwrap(), "42");
    });
}

// ---------------------------------------------------------------------------------
// cordon policy
// ---------------------------------------------------------------------------------

fn rule_for<'a>(policy: &'a serde_json::Value, path: &Path) -> Vec<&'a serde_json::Value> {
    policy["rules"]
        .as_array()
        .expect("rules is an array")
        .iter()
        .filter(|r| r["path"].as_str() == Some(path.to_str().unwrap()))
        .collect()
}

#[test]
fn home_comes_from_the_password_file_when_home_is_unset() {
    for_each_user(
        "home_comes_from_the_password_file_when_home_is_unset",
        |fx| {
            let mut getent = Command::new("getent");
            getent.args(["passwd", &fx.user.uid.to_string()]);
            let entry = run_cmd(getent, None, RUN_DEADLINE);
            let entry = String::from_utf8_lossy(&entry.stdout).into_owned();
            let expected = entry.split(':').nth(5).unwrap_or("").to_string();
            assert!(
                expected.starts_with('/'),
                "control: no home in the password file for uid {}",
                fx.user.uid
            );
            let mut cmd = fx.cordon_cmd(&["policy", "--json"]);
            cmd.env_remove("HOME").current_dir(&fx.work);
            let out = run_cmd(cmd, None, RUN_DEADLINE);
            out.assert_success();
            let policy: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("policy JSON");
            assert_eq!(
                policy["home"].as_str(),
                Some(expected.as_str()),
                "{policy:#}"
            );
        },
    );
}

#[test]
fn policy_json_lists_rules_with_origins() {
    for_each_user("policy_json_lists_rules_with_origins", |fx| {
        let user_cfg = fx.home.join(".config/cordon/config.json");
        fx.write(&user_cfg, "{\"deny_read\": [\"${HOME}/notes.txt\"]}\n");
        fx.write(
            &fx.work.join(".cordon.json"),
            "{\"deny_read\": [\"private\"]}\n",
        );
        let o = fx.outside.display().to_string();
        let p = fx.policy_json(&["--allow-write", &o, "--env", "FOO=bar"]);
        let rules = p["rules"].as_array().expect("rules");
        assert!(!rules.is_empty());
        for r in rules {
            assert!(
                r["path"].is_string() && r["access"].is_string() && r["origin"]["kind"].is_string(),
                "malformed rule {r}"
            );
        }
        assert_eq!(p["workspace"].as_str(), fx.work.to_str(), "{p}");
        let origin_of = |path: &Path, access: &str| -> String {
            rule_for(&p, path)
                .into_iter()
                .find(|r| r["access"] == access)
                .map(|r| r["origin"]["kind"].as_str().unwrap().to_string())
                .unwrap_or_else(|| panic!("no {access} rule for {}\n{p:#}", path.display()))
        };
        assert_eq!(origin_of(&fx.work, "write"), "default");
        assert_eq!(origin_of(Path::new("/"), "read"), "default");
        assert_eq!(origin_of(&fx.home.join(".ssh"), "deny"), "default");
        assert_eq!(origin_of(&fx.outside, "write"), "flag");
        assert_eq!(origin_of(&fx.home.join("notes.txt"), "deny"), "user_config");
        assert_eq!(
            origin_of(&fx.work.join("private"), "deny"),
            "project_config"
        );
        assert_eq!(origin_of(&fx.work.join(".git/hooks"), "read"), "default");
        let text = p.to_string();
        assert!(
            text.contains(user_cfg.to_str().unwrap()),
            "the user config file is not named\n{p:#}"
        );
        assert!(text.contains("FOO"), "--env FOO is not listed\n{p:#}");
        // The human-readable form names the origins as well.
        let human = fx.cordon(&["policy", "--allow-write", &o]);
        human.assert_success().assert_stdout_contains(&o);
    });
}

// ---------------------------------------------------------------------------------
// cordon shell, through a pseudo-terminal
// ---------------------------------------------------------------------------------

const PROMPT: &str = "SBX$ ";

/// `cordon shell` (bash) on a pseudo-terminal, as `fx`'s user.
struct Shell(Terminal);

impl std::ops::Deref for Shell {
    type Target = Terminal;
    fn deref(&self) -> &Terminal {
        &self.0
    }
}

impl std::ops::DerefMut for Shell {
    fn deref_mut(&mut self) -> &mut Terminal {
        &mut self.0
    }
}

impl Shell {
    fn start(fx: &Fixture) -> Shell {
        fx.write(
            &fx.home.join(".bashrc"),
            "PS1='SBX$ '\nunset HISTFILE PROMPT_COMMAND\nbind 'set enable-bracketed-paste off' 2>/dev/null\n",
        );
        let mut cmd = fx.cordon_cmd(&["shell"]);
        cmd.env("SHELL", "/bin/bash");
        Shell(Terminal::start(cmd, &fx.user, PROMPT, WAIT))
    }

    /// Enters `text`, waits for `output`, then for the next prompt.
    fn run(&mut self, text: &str, output: &str) {
        self.line(text);
        self.expect(output);
        self.prompt();
    }

    /// Starts `sleep N` (N random) in the foreground and waits until the host sees
    /// it; returns N, as the word to look for among the host's processes, and the
    /// sleep's pid.
    fn start_sleep(&mut self) -> (String, u32) {
        let n = random_u32(100_000, 800_000).to_string();
        if in_vm() {
            // The guest's processes are not the host's: the shell says when the
            // sleep starts (the quotes keep the typed line from matching), and
            // the checks below ask the guest (`sleep_state`). No pid.
            self.line(&format!("echo SLEEP-''STARTS; sleep {n}"));
            self.expect("SLEEP-STARTS");
            std::thread::sleep(Duration::from_secs(2));
            return (n, 0);
        }
        self.line(&format!("sleep {n}"));
        let found = wait_present(&n, WAIT);
        assert!(
            !found.is_empty(),
            "sleep never started:\n{}",
            self.pty.transcript()
        );
        let pid = found[0].0;
        (n, pid)
    }

    /// With the VM backend, the state of the guest's `sleep` processes as `ps`
    /// in this shell sees them (`T` stopped), or `NONE` when there are none.
    fn sleep_state(&mut self) -> String {
        self.line("echo STATE-$(ps -C sleep -o stat= | tr -d ' \\n' | grep . || echo NONE)-END");
        let at = self.pos;
        self.expect("-END");
        self.prompt();
        let text = self.pty.transcript()[at..].to_string();
        text.rsplit("STATE-")
            .next()
            .and_then(|t| t.split("-END").next())
            .unwrap_or("")
            .to_string()
    }

    /// Waits for cordon to exit, reading the terminal meanwhile.
    fn wait(mut self) -> (Option<i32>, String) {
        let start = Instant::now();
        loop {
            self.pty.pump(Duration::from_millis(20));
            if let Some(st) = self.child.try_wait().unwrap() {
                self.pty.drain(Duration::from_millis(100));
                return (st.code(), self.pty.transcript());
            }
            if start.elapsed() > WAIT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "cordon shell did not exit; transcript:\n{}",
                    self.pty.transcript()
                );
            }
        }
    }
}

#[test]
fn shell_runs_commands_and_exits_with_status() {
    for_each_user("shell_runs_commands_and_exits_with_status", |fx| {
        let mut sh = Shell::start(fx);
        sh.run("echo $((6*7))", "\r\n42\r\n");
        // A real terminal inside, and the workspace as the current directory.
        sh.line("tty; test -t 0 && echo IS-A-TTY; pwd");
        sh.expect("/dev/pts/");
        sh.expect("IS-A-TTY");
        sh.expect(&fx.work.display().to_string());
        sh.prompt();
        sh.line("exit 7");
        let (code, transcript) = sh.wait();
        assert_eq!(code, Some(7), "transcript:\n{transcript}");
        assert!(
            !transcript.contains("no job control"),
            "job control is off:\n{transcript}"
        );
    });
}

#[test]
fn shell_ctrl_c_interrupts_the_foreground_command() {
    for_each_user("shell_ctrl_c_interrupts_the_foreground_command", |fx| {
        let mut sh = Shell::start(fx);
        let (n, _pid) = sh.start_sleep();
        let start = Instant::now();
        sh.pty.send(b"\x03");
        sh.prompt();
        if in_vm() {
            assert_eq!(
                sh.sleep_state(),
                "NONE",
                "Ctrl-C did not end sleep in the VM"
            );
        } else {
            let left = wait_gone(&n, Duration::from_secs(2));
            kill_all(&left);
            assert!(left.is_empty(), "Ctrl-C did not end sleep: {left:?}");
            assert!(start.elapsed() < Duration::from_secs(5));
        }
        // The shell itself survived and still works.
        sh.run("echo after-$((2+3))", "after-5");
        sh.line("exit 0");
        let (code, transcript) = sh.wait();
        assert_eq!(code, Some(0), "{transcript}");
    });
}

#[test]
fn shell_ctrl_z_suspends_and_job_control_works() {
    for_each_user("shell_ctrl_z_suspends_and_job_control_works", |fx| {
        let mut sh = Shell::start(fx);
        let (n, pid) = sh.start_sleep();
        sh.pty.send(b"\x1a");
        sh.expect("Stopped");
        sh.prompt();
        // Really stopped on the host (in the guest, with the VM backend).
        if in_vm() {
            let state = sh.sleep_state();
            assert!(
                state.starts_with('T'),
                "sleep is not stopped: state {state}"
            );
        } else {
            let state = proc_state(pid);
            assert!(
                matches!(state, Some('T')),
                "sleep is not stopped: state {state:?}"
            );
        }
        sh.line("jobs");
        sh.expect("Stopped");
        sh.expect(&format!("sleep {n}"));
        sh.prompt();
        sh.line("kill %1");
        sh.prompt();
        if in_vm() {
            // Ended: gone, or a zombie bash has not reaped yet (it reaps at a
            // later prompt; a zombie has no command line, so the host's check
            // below counts it as gone too).
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut state = sh.sleep_state();
            while !(state == "NONE" || state == "Z") && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                state = sh.sleep_state();
            }
            assert!(
                state == "NONE" || state == "Z",
                "kill %1 did not end the job: state {state}"
            );
        } else {
            let left = wait_gone(&n, Duration::from_secs(3));
            kill_all(&left);
            assert!(left.is_empty(), "kill %1 did not end the job: {left:?}");
        }
        // bash's job table can lag the kill (the job, already a zombie, is still
        // listed as stopped, even to `wait`); bash then refuses the first exit
        // with "There are stopped jobs" and leaves on a second, as it tells users.
        sh.line("exit 0");
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline && sh.child.try_wait().unwrap().is_none() {
            sh.pty.pump(Duration::from_millis(20));
            if sh.pty.transcript()[sh.pos..].contains("There are stopped jobs") {
                sh.line("exit 0");
                break;
            }
        }
        let (code, transcript) = sh.wait();
        assert!(code.is_some(), "{transcript}");
    });
}

#[test]
fn shell_ends_when_its_terminal_goes_away() {
    for_each_user("shell_ends_when_its_terminal_goes_away", |fx| {
        let mut sh = Shell::start(fx);
        let (n, _) = sh.start_sleep();
        // With the VM backend the shell's processes are the guest's: they end
        // with QEMU.
        let qemu = if in_vm() {
            common::vm::qemu_below(sh.child.id())
        } else {
            Vec::new()
        };
        assert!(!in_vm() || !qemu.is_empty(), "no QEMU below cordon shell");
        // Close the terminal, as when its window is closed: the kernel hangs it up.
        let master = std::mem::replace(
            &mut sh.pty.master,
            std::fs::File::open("/dev/null").unwrap().into(),
        );
        drop(master);
        let start = Instant::now();
        let status = loop {
            if let Some(status) = sh.child.try_wait().unwrap() {
                break Some(status);
            }
            if start.elapsed() > WAIT {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.is_some(), "cordon shell outlived its terminal");
        let mut left = wait_gone(&n, Duration::from_secs(3));
        let qemu_left = common::vm::qemu_left_after(&qemu, Duration::from_secs(10));
        left.extend(qemu_left.into_iter().map(|p| (p, vec!["qemu".to_string()])));
        kill_all(&left);
        assert!(
            left.is_empty(),
            "processes of the shell outlived its terminal: {left:?}"
        );
    });
}

#[test]
fn shell_sees_window_resizes() {
    for_each_user("shell_sees_window_resizes", |fx| {
        let mut sh = Shell::start(fx);
        sh.run("stty size", "24 80");
        let ws = libc::winsize {
            ws_row: 33,
            ws_col: 111,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize, a live local, and writes nothing.
        let rc = unsafe { libc::ioctl(sh.pty.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
        // The kernel signals the foreground group; send it to cordon's group as well,
        // as a terminal emulator does.
        // SAFETY: kill(2) takes no pointers; the target is this test's child's group.
        unsafe {
            libc::kill(-(sh.child.id() as i32), libc::SIGWINCH);
        }
        std::thread::sleep(Duration::from_millis(100));
        sh.run(
            "stty size; echo cols=$(tput cols 2>/dev/null || echo none)",
            "33 111",
        );
        sh.line("exit 0");
        let (code, transcript) = sh.wait();
        assert_eq!(code, Some(0), "{transcript}");
    });
}
