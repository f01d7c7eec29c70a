//! Everyday use of the command line, as a new user meets it: a command without
//! `--`, pi's own flags, URLs where a domain is asked for, shell completions, a
//! writable cache directory that does not exist yet, the audit log's reasons and
//! what `cordon doctor` advises. Each test runs as root and as the ordinary user
//! (common::for_each_user) and checks the effect on the host: the file the
//! command wrote, what the upstream server saw, the audit log.
//!
//! `cargo test -p cordon --test cli` (as root for both variants).

use crate::common;

use common::upstream::Upstream;
use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// The `cordon:` lines of stderr.
fn cordon_lines(out: &Output) -> Vec<String> {
    out.stderr_str()
        .lines()
        .filter(|l| l.starts_with("cordon:"))
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------
// The command line (item 14)
// ---------------------------------------------------------------------------------

#[test]
fn run_takes_the_command_without_a_separator() {
    for_each_user("cli-run-no-separator", |fx| {
        // As docker and podman do: cordon's options, then the command.
        let out = fx.cordon(&[
            "run",
            "--env",
            "GREETING=hello",
            "sh",
            "-c",
            "echo \"$GREETING\" > made.txt; ls -la",
        ]);
        out.assert_success().assert_stdout_contains("README");
        let made = fx.work.join("made.txt");
        assert_eq!(fs::read_to_string(&made).unwrap(), "hello\n", "{out}");
        assert_eq!(fs::metadata(&made).unwrap().uid(), fx.user.uid, "{out}");
        // After the command's first word, flags are the command's, cordon's too.
        let out = fx.cordon(&[
            "run",
            "sh",
            "-c",
            "echo \"$@\" > args.txt",
            "sh",
            "--memory",
            "-x",
        ]);
        out.assert_success();
        assert_eq!(
            fs::read_to_string(fx.work.join("args.txt")).unwrap(),
            "--memory -x\n",
            "{out}"
        );
        // `--` still works, and a misspelt option of cordon's is an error, not a command.
        fx.cordon(&["run", "--", "sh", "-c", "touch dashed"])
            .assert_success();
        assert!(fx.work.join("dashed").exists());
        let out = fx.cordon(&["run", "--memroy", "1G", "sh", "-c", "touch typo"]);
        out.assert_status(125).assert_stderr_contains("--memroy");
        assert_not_exists(&fx.work.join("typo"));
    });
}

#[test]
fn pi_gets_its_own_arguments() {
    for_each_user("cli-pi-args", |fx| {
        // pi itself is a script that writes the arguments it got into the workspace.
        let pi = fx.root.join("bin/pi");
        fx.write(
            &pi,
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s|' \"$a\"; done > \"$PWD/pi-args\"\n",
        );
        fs::set_permissions(&pi, fs::Permissions::from_mode(0o755)).unwrap();
        let got = |args: &[&str]| {
            let _ = fs::remove_file(fx.work.join("pi-args"));
            let mut all = vec!["pi"];
            all.extend_from_slice(args);
            let mut cmd = fx.cordon_cmd(&all);
            cmd.env("CORDON_PI", &pi);
            let out = run_cmd(cmd, None, RUN_DEADLINE);
            out.assert_success();
            fs::read_to_string(fx.work.join("pi-args"))
                .unwrap_or_else(|e| panic!("pi did not run: {e}\n{out}"))
        };
        assert_eq!(
            got(&["--provider", "fake", "--model", "m", "-c", "fix it"]),
            "--provider|fake|--model|m|-c|fix it|"
        );
        // cordon's own options before pi's keep working; after them, all is pi's.
        assert_eq!(
            got(&["--timeout", "600", "--provider", "fake", "--timeout", "x"]),
            "--provider|fake|--timeout|x|"
        );
        // `--` gives pi even a flag cordon has.
        assert_eq!(got(&["--", "--help"]), "--help|");
        assert_eq!(got(&[]), "");
    });
}

/// `cordon policy --backend vm` shows the VM's layers. (What `--backend vm`
/// runs boots a VM: vm_backend.rs, vm_net.rs.)
#[test]
fn policy_shows_the_vm_layers() {
    for_each_user("cli-backend-vm", |fx| {
        let out = fx.cordon(&["policy", "--backend", "vm"]);
        out.assert_success()
            .assert_stdout_contains("backend    vm: QEMU VM on ")
            .assert_stdout_contains("; namespaces user, mount, pid, net");
    });
}

#[test]
fn allow_domain_takes_a_url() {
    for_each_user("cli-allow-domain-url", |fx| {
        let web = Upstream::http("web.test");
        let url = format!("http://web.test:{}/", web.port());
        let resolve = format!("web.test:{}", web.addr.ip());
        let out = fx.sh_with(
            &["--allow-domain", &url, "--resolve", &resolve],
            &format!("curl -sS -m 20 {}", web.url("/via-url")),
        );
        out.assert_success();
        assert!(
            web.requests().iter().any(|r| r.target == "/via-url"),
            "the upstream saw no request\n{out}\n{}",
            web.report()
        );
        // The scheme gives the port; `cordon policy` shows what the URL stands for.
        let policy = fx.policy_json(&[
            "--allow-domain",
            "http://example.com",
            "--allow-domain",
            "https://*.example.org/",
        ]);
        let allowed: Vec<String> = policy["network"]["allow"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let p = &r["pattern"];
                let wild = if p["wildcard"] == true { "*." } else { "" };
                format!("{wild}{}:{}", p["name"].as_str().unwrap(), p["port"])
            })
            .collect();
        assert_eq!(allowed, ["example.com:80", "*.example.org:443"]);
        // A path would suggest a narrower rule than cordon can make: refused.
        let out = fx.cordon(&["run", "--allow-domain", "https://example.com/api", "true"]);
        out.assert_status(125)
            .assert_stderr_contains("not paths")
            .assert_stderr_contains("https://example.com");
    });
}

/// The VM's resources come from the flags and configs like any setting, and
/// `cordon policy` shows them (with `--json`, under `vm`), whatever the backend.
#[test]
fn policy_shows_the_vms_resources() {
    for_each_user("cli-vm-resources", |fx| {
        let text = fx.cordon(&["policy"]);
        text.assert_success()
            .assert_stdout_contains("\nvm         the VM's resources, for --backend vm\n")
            .assert_stdout_contains(
                "\n  memory 1G    ← built-in default\n  cpus   2    ← built-in default\n",
            );
        fx.write(
            &fx.work.join(".cordon.json"),
            r#"{"vm_cpus": 1, "vm_memory": "8G"}"#,
        );
        let policy = fx.policy_json(&["--vm-memory", "2G", "--vm-cpus", "4"]);
        assert_eq!(policy["vm"]["memory"]["value"], 2u64 << 30);
        assert_eq!(policy["vm"]["memory"]["origin"]["flag"], "--vm-memory");
        // The project's config lowered the vCPUs and could not raise the memory.
        assert_eq!(policy["vm"]["cpus"]["value"], 1);
        assert_eq!(policy["vm"]["cpus"]["origin"]["kind"], "project_config");
        let warnings = policy["warnings"].to_string();
        assert!(warnings.contains("ignored \\\"vm_memory\\\""), "{warnings}");
        // Out of bounds: cordon's own failure, naming the flag.
        fx.cordon(&["policy", "--vm-cpus", "0"])
            .assert_status(125)
            .assert_stderr_contains("flag --vm-cpus: invalid vm_cpus 0: must be from 1 to 64");
    });
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef cordon"),
        ("fish", "complete -c cordon"),
    ] {
        let out = run_cmd(
            {
                let mut c = std::process::Command::new(cordon_bin());
                c.args(["completions", shell]);
                c
            },
            None,
            RUN_DEADLINE,
        );
        out.assert_success().assert_stdout_contains(marker);
        for word in ["allow-write", "allow-domain", "doctor", "policy"] {
            out.assert_stdout_contains(word);
        }
    }
    // bash loads it and completes cordon's subcommands.
    let script = format!(
        "source <({} completions bash) && COMP_WORDS=(cordon po) COMP_CWORD=1 && \
         _cordon cordon po cordon && echo \"${{COMPREPLY[@]}}\"",
        cordon_bin().display()
    );
    let mut bash = std::process::Command::new("bash");
    bash.args(["-c", &script]).env("PATH", PATH);
    let out = run_cmd(bash, None, RUN_DEADLINE);
    out.assert_success().assert_stdout_contains("policy");
}

// ---------------------------------------------------------------------------------
// A writable path that does not exist (item 5)
// ---------------------------------------------------------------------------------

#[test]
fn missing_writable_dir_in_home_is_made() {
    for_each_user("cli-allow-write-missing", |fx| {
        // From a flag, and from the README's own config example.
        let npm = fx.home.join(".npm");
        let pip = fx.home.join(".cache/pip");
        assert_not_exists(&npm);
        // A fresh user's home, without ~/.cache (the harness makes one).
        fs::remove_dir_all(fx.home.join(".cache")).unwrap();
        let config = fx.home.join(".config/cordon/config.json");
        fx.write(&config, r#"{"allow_write": ["${HOME}/.cache/pip"]}"#);
        let npm_s = npm.to_str().unwrap();
        let out = fx.sh_with(
            &["--allow-write", npm_s],
            "echo npm > \"$HOME/.npm/f\" && echo pip > \"$HOME/.cache/pip/f\"",
        );
        out.assert_success();
        for (dir, content) in [(&npm, "npm\n"), (&pip, "pip\n")] {
            assert_eq!(fs::read_to_string(dir.join("f")).unwrap(), content, "{out}");
            assert_eq!(fs::metadata(dir).unwrap().uid(), fx.user.uid, "{out}");
        }
        assert_eq!(
            fs::metadata(fx.home.join(".cache")).unwrap().uid(),
            fx.user.uid
        );
        // It says what it made, once: the next run finds it.
        out.assert_stderr_contains("made the missing writable directory");
        let again = fx.sh_with(&["--allow-write", npm_s], "true");
        again
            .assert_success()
            .assert_not_printed("made the missing");
    });
}

#[test]
fn missing_writable_dir_elsewhere_is_refused_clearly() {
    for_each_user("cli-allow-write-elsewhere", |fx| {
        // Outside the home: never made. With the network on, so that the egress
        // broker is started too: its note must not come first (or at all).
        let elsewhere = fx.outside.join("new/dir");
        let out = fx.sh_with(
            &[
                "--allow-write",
                elsewhere.to_str().unwrap(),
                "--allow-domain",
                "example.com",
            ],
            "touch ran",
        );
        out.assert_status(125);
        let lines = cordon_lines(&out);
        assert_eq!(lines.len(), 1, "one cordon: line, the cause\n{out}");
        for needle in [
            elsewhere.to_str().unwrap(),
            "does not exist",
            "flag --allow-write",
            "mkdir -p",
        ] {
            assert!(lines[0].contains(needle), "{needle:?} missing\n{out}");
        }
        out.assert_not_printed("broker")
            .assert_not_printed(".cordon.json");
        assert_not_exists(&fx.outside.join("new"));
        assert_not_exists(&fx.work.join("ran"));

        // In the home, but below a directory that is not the user's.
        let foreign = fx.home.join("foreign");
        fs::create_dir(&foreign).unwrap();
        let other = if fx.user.is_root() { 65534 } else { 0 };
        std::os::unix::fs::chown(&foreign, Some(other), Some(other)).unwrap();
        fs::set_permissions(&foreign, fs::Permissions::from_mode(0o777)).unwrap();
        let below = foreign.join("cache");
        let out = fx.sh_with(&["--allow-write", below.to_str().unwrap()], "touch ran");
        out.assert_status(125)
            .assert_stderr_contains(&format!("belongs to uid {other}"))
            .assert_stderr_contains("mkdir -p");
        assert_not_exists(&below);
        assert_not_exists(&fx.work.join("ran"));
    });
}

#[test]
fn a_sandbox_that_fails_to_start_says_only_why() {
    // The class behind item 5's red herring: any failure between the start of the
    // egress broker and the start of the command. Here: a writable root where
    // nobody, root included, can place the protected-path placeholders (sysfs).
    // The broker's note used to race the cause: a few tries.
    for_each_user("cli-start-failure", |fx| {
        for _ in 0..5 {
            let out = fx.sh_with(
                &[
                    "--allow-write",
                    "/sys/kernel/mm",
                    "--allow-domain",
                    "example.com",
                ],
                "touch ran",
            );
            out.assert_status(125);
            let lines = cordon_lines(&out);
            assert_eq!(lines.len(), 1, "one cordon: line, the cause\n{out}");
            assert!(lines[0].contains("/sys/kernel/mm/.cordon.json"), "{out}");
            out.assert_not_printed("broker");
            assert_not_exists(&fx.work.join("ran"));
        }
    });
}

// ---------------------------------------------------------------------------------
// The audit log names where a rule came from (item 10)
// ---------------------------------------------------------------------------------

/// The audit log's records about `host`.
fn audit_records(fx: &Fixture, host: &str) -> Vec<serde_json::Value> {
    let log =
        fs::read_to_string(fx.home.join(".local/state/cordon/audit.jsonl")).expect("the audit log");
    log.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|r| r["host"] == host && r["event"] != "request")
        .collect()
}

#[test]
fn audit_log_names_the_rules_origin() {
    for_each_user("cli-audit-origin", |fx| {
        let web = Upstream::http("web.test");
        let config = fx.home.join(".config/cordon/config.json");
        let rule = format!("web.test:{}", web.port());
        fx.write(
            &config,
            &serde_json::json!({"allow_domain": [rule], "deny_domain": ["bad.npmjs.org"]})
                .to_string(),
        );
        let ip = web.addr.ip().to_string();
        let opts = [
            "--allow-preset",
            "npm",
            "--allow-domain",
            "bad.npmjs.org",
            "--resolve",
            &format!("registry.npmjs.org:{ip}"),
            "--resolve",
            &format!("bad.npmjs.org:{ip}"),
            "--resolve",
            &format!("web.test:{ip}"),
        ];
        // registry.npmjs.org:80 need not answer: the broker decides (and logs)
        // before it connects.
        let out = fx.sh_with(
            &opts,
            &format!(
                "curl -sS -m 20 {}; curl -sS -m 10 http://registry.npmjs.org/x; curl -sS -m 10 http://bad.npmjs.org/x; true",
                web.url("/")
            ),
        );
        out.assert_stdout_contains("hello from web.test");
        let reason = |host: &str, allowed: bool| -> String {
            let records = audit_records(fx, host);
            records
                .iter()
                .find(|r| r["allowed"] == allowed)
                .and_then(|r| r["reason"].as_str())
                .unwrap_or_else(|| panic!("no decision about {host} in\n{records:#?}\n{out}"))
                .to_string()
        };
        let config_s = config.display().to_string();
        // A preset's host: the preset and its flag, not an --allow-domain nobody gave.
        assert_eq!(
            reason("registry.npmjs.org", true),
            "registry.npmjs.org (preset npm) ← flag --allow-preset"
        );
        assert_eq!(
            reason("web.test", true),
            format!("{rule} ← user config {config_s}")
        );
        assert_eq!(
            reason("bad.npmjs.org", false),
            format!("denied by bad.npmjs.org ← user config {config_s}")
        );
        // The same words as `cordon policy`.
        let mut args = vec!["policy"];
        args.extend_from_slice(&opts);
        let policy = fx.cordon(&args);
        policy.assert_success();
        let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let listed = flat(&policy.stdout_str());
        for r in [reason("registry.npmjs.org", true), reason("web.test", true)] {
            assert!(listed.contains(&flat(&r)), "{r:?} not as in\n{policy}");
        }
    });
}

// ---------------------------------------------------------------------------------
// cordon doctor (item 7)
// ---------------------------------------------------------------------------------

/// Every `cordon SUBCOMMAND --flag...` quoted (in backticks) in `text` exists.
fn assert_commands_exist(text: &str) {
    for quoted in text.split('`').skip(1).step_by(2) {
        let words: Vec<&str> = quoted.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            if *w != "cordon" {
                continue;
            }
            let Some(sub) = words.get(i + 1) else {
                continue;
            };
            let help = std::process::Command::new(cordon_bin())
                .args([sub, "--help"])
                .output()
                .unwrap();
            assert!(
                help.status.success(),
                "`cordon {sub}` does not exist:\n{text}"
            );
            let help = String::from_utf8_lossy(&help.stdout).into_owned();
            for flag in words[i + 2..].iter().filter(|f| f.starts_with("--")) {
                let name = flag.split('=').next().unwrap();
                assert!(
                    help.contains(name),
                    "`cordon {sub} {name}` does not exist:\n{text}"
                );
            }
        }
    }
}

/// The OS backend's layers, then the VM backend's section: the accelerator,
/// QEMU as `qemu-system-x86_64 --version` says it, the kernel file (which
/// exists), what is degraded; or, without QEMU, that `--backend vm` cannot run
/// and why. Every `cordon ...` it names exists.
#[test]
fn doctor_names_what_each_backend_would_use() {
    let qemu_says = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let first = text.lines().next().unwrap_or("").to_string();
            first
                .trim_start_matches("QEMU emulator version ")
                .to_string()
        });
    for_each_user("cli-doctor", |fx| {
        let text = fx.cordon(&["doctor"]);
        let json = fx.cordon(&["doctor", "--json"]);
        for out in [&text, &json] {
            assert!(matches!(out.code, Some(0 | 1)), "{out}");
            assert_commands_exist(&out.stdout_str());
        }
        let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        let ids: Vec<&str> = report["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "userns", "mountns", "pidns", "netns", "landlock", "seccomp", "cgroups"
            ]
        );
        let vm = &report["vm"];
        text.assert_stdout_contains("VM backend (optional): ");
        assert!(
            ["kvm", "tcg"].contains(&vm["accelerator"].as_str().unwrap()),
            "{vm}"
        );
        // Snapshots with QEMU 8.2 or newer; else degraded, saying why.
        let degraded = vm["degraded"].to_string();
        let snapshots = vm["snapshots"].as_str().unwrap();
        let major: Option<(u32, u32)> = qemu_says.as_deref().and_then(|v| {
            let mut parts = v.split(['.', ' ']).map(|p| p.parse().ok());
            Some((parts.next()??, parts.next()??))
        });
        if major.is_some_and(|v| v >= (8, 2)) {
            assert!(snapshots.starts_with("on (QEMU "), "{vm}");
            text.assert_stdout_contains("  snapshots    on (QEMU ");
        } else {
            assert!(snapshots.starts_with("off: "), "{vm}");
            assert!(degraded.contains("no memory snapshots"), "{vm}");
        }
        match &qemu_says {
            Some(version) => {
                let qemu = vm["qemu"].as_str().unwrap();
                assert!(qemu.ends_with(version.as_str()), "{qemu} vs {version}");
                text.assert_stdout_contains(&format!("  QEMU         {qemu}"));
            }
            None => {
                assert_eq!(vm["ready"], false, "{vm}");
                assert!(vm["problems"].to_string().contains("qemu-system-x86_64"));
            }
        }
        if let Some(kernel) = vm["kernel"].as_str() {
            let path = kernel.split(' ').next().unwrap();
            assert!(Path::new(path).is_file(), "{kernel}");
        }
        if vm["ready"] == true {
            text.assert_stdout_contains("✓ --backend vm can run here");
        }
    });
}
