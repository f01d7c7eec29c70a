//! The home directory: files your machine runs or that configure cordon and pi
//! stay unchanged when a writable root holds them (the workspace is `$HOME`,
//! `--allow-write ~/.config`); secrets there cannot be created either; and the
//! hidden-home mode shows only what is named. Every test runs as root and as the
//! ordinary user, asserts the effect on the host, and shows (a positive control)
//! that the same writes do take effect without cordon.

use crate::common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};

/// Home files to attack (relative to `home/`), the existing ones first.
const EXISTING: &[&str] = &[
    ".bashrc",
    ".profile",
    ".gitconfig",
    ".config/cordon/config.json",
    ".config/git/config",
    ".pi/agent/settings.json",
    ".local/bin/tool",
];
const MISSING: &[&str] = &[
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".bash_aliases",
    ".bashrc.d/evil.sh",
    ".zshenv",
    ".zprofile",
    ".zshrc",
    ".zlogin",
    ".inputrc",
    ".config/fish/config.fish",
    ".config/autostart/evil.desktop",
    ".config/systemd/user/evil.service",
    ".config/environment.d/evil.conf",
    ".config/nvim/init.lua",
    ".local/state/cordon/audit.jsonl",
    ".local/share/direnv/allow/x",
    ".local/lib/python3/site-packages/evil.pth",
    ".pam_environment",
    ".xsession",
    ".vimrc",
    ".tmux.conf",
    ".cargo/config.toml",
    ".cargo/env",
    "bin/git",
    // Through the environment (set below): $XDG_CONFIG_HOME, $ZDOTDIR, a PATH dir.
    "xdg/cordon/config.json",
    "xdg/git/config",
    "zdot/.zshrc",
    "tools/bin/git",
];
/// Secrets removed from the fixture: they must not be made inside either.
const MISSING_SECRETS: &[&str] = &[
    ".azure/accessTokens.json",
    ".terraformrc",
    ".vault-token",
    ".config/containers/auth.json",
    ".ssh2-not-a-secret-control",
];

/// What the sandbox tries on each path: append to it, or make it (and its parents).
fn plant_script(home: &Path, rels: &[&str]) -> String {
    let mut s = String::new();
    for rel in rels {
        let p = home.join(rel);
        let p = p.display();
        s.push_str(&format!(
            "mkdir -p \"$(dirname '{p}')\" 2>/dev/null; echo pwned >> '{p}' 2>/dev/null; "
        ));
    }
    s
}

/// `cordon run --workspace HOME ...` with $XDG_CONFIG_HOME, $ZDOTDIR and a PATH
/// directory of the fixture's home.
fn home_cmd(fx: &Fixture, opts: &[&str], script: &str) -> std::process::Command {
    let home = fx.home.to_str().unwrap();
    let mut all = vec!["--workspace", home];
    all.extend_from_slice(opts);
    let mut cmd = fx.sh_cmd_with(&all, script);
    home_env(fx, &mut cmd);
    cmd
}

fn home_env(fx: &Fixture, cmd: &mut std::process::Command) {
    cmd.env("XDG_CONFIG_HOME", fx.home.join("xdg"))
        .env("ZDOTDIR", fx.home.join("zdot"))
        .env(
            "PATH",
            format!("{}:{PATH}", fx.home.join("tools/bin").display()),
        );
}

fn make_existing(fx: &Fixture) {
    for rel in EXISTING {
        fx.write(&fx.home.join(rel), &format!("# the user's {rel}\n"));
    }
    fx.write(
        &fx.home.join(".config/cordon/config.json"),
        "{\"net\": \"none\"}\n",
    );
}

fn paths(fx: &Fixture, rels: &[&str]) -> Vec<PathBuf> {
    rels.iter().map(|r| fx.home.join(r)).collect()
}

#[test]
fn home_start_up_files_stay_unchanged_when_the_workspace_is_home() {
    for_each_user(
        "home_start_up_files_stay_unchanged_when_the_workspace_is_home",
        |fx| {
            make_existing(fx);
            let all: Vec<&str> = EXISTING.iter().chain(MISSING).copied().collect();
            let before = snapshots(&paths(fx, &all));
            let script = format!(
                "{} rm -rf ~/.bashrc ~/.config/cordon; mv ~/.config ~/.config.old; \
                 mkdir -p ~/.config/cordon && echo '{{\"net\": \"host\"}}' > ~/.config/cordon/config.json; \
                 echo ordinary > ~/ordinary.txt; echo script-done",
                plant_script(&fx.home, &all)
            );
            let out = run_cmd(home_cmd(fx, &[], &script), None, RUN_DEADLINE);
            out.assert_stdout_contains("script-done");
            assert_all_unchanged(&before);
            out.assert_stderr_contains("is your home directory");
            assert!(
                !fx.home.join(".config.old").exists(),
                "~/.config was renamed"
            );
            // The next run is not loosened.
            let policy = fx.policy_json(&[]);
            assert_eq!(policy["net"]["value"], "none", "{policy}");
            // Through cordon, an ordinary file in the home workspace is written.
            assert_eq!(
                fs::read_to_string(fx.home.join("ordinary.txt")).unwrap(),
                "ordinary\n"
            );
            // Control: without cordon, the same writes change or make every file.
            let mut ctl = fx.host_sh_cmd(&plant_script(&fx.home, &all));
            home_env(fx, &mut ctl);
            run_cmd(ctl, None, RUN_DEADLINE).assert_success();
            for rel in &all {
                let now = fs::read_to_string(fx.home.join(rel)).unwrap_or_default();
                assert!(now.contains("pwned"), "control: {rel} was not written");
            }
        },
    );
}

#[test]
fn allow_write_of_config_keeps_cordon_and_git_config() {
    for_each_user("allow_write_of_config_keeps_cordon_and_git_config", |fx| {
        make_existing(fx);
        let targets = [
            ".config/cordon/config.json",
            ".config/git/config",
            ".config/fish/config.fish",
            ".config/systemd/user/evil.service",
        ];
        let before = snapshots(&paths(fx, &targets));
        let config = fx.home.join(".config");
        let script = format!(
            "{} echo ok > {}/other-tool.conf; echo script-done",
            plant_script(&fx.home, &targets),
            config.display()
        );
        let out = fx.sh_with(&["--allow-write", config.to_str().unwrap()], &script);
        out.assert_stdout_contains("script-done");
        assert_all_unchanged(&before);
        // Control: the writable root itself is writable through cordon...
        assert_eq!(
            fs::read_to_string(config.join("other-tool.conf")).unwrap(),
            "ok\n"
        );
        // ...and the protected files are writable without it.
        fx.host_sh(&plant_script(&fx.home, &targets))
            .assert_success();
        for rel in targets {
            assert!(
                fs::read_to_string(fx.home.join(rel))
                    .unwrap()
                    .contains("pwned"),
                "control: {rel}"
            );
        }
    });
}

#[test]
fn secrets_in_a_home_workspace_stay_hidden_and_cannot_be_created() {
    for_each_user(
        "secrets_in_a_home_workspace_stay_hidden_and_cannot_be_created",
        |fx| {
            // The fixture makes every secret: these ones are removed first.
            for rel in [
                ".azure",
                ".terraformrc",
                ".vault-token",
                ".config/containers",
            ] {
                let p = fx.home.join(rel);
                let _ = fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p));
            }
            let secrets = &MISSING_SECRETS[..MISSING_SECRETS.len() - 1];
            let control = fx.home.join(MISSING_SECRETS[MISSING_SECRETS.len() - 1]);
            let existing = [".ssh", ".kube", ".aws"];
            let before = snapshots(&paths(fx, &existing));
            // The first directory of each that does not exist yet.
            let first_missing: Vec<PathBuf> = secrets
                .iter()
                .map(|rel| {
                    let p = fx.home.join(rel);
                    p.ancestors()
                        .filter(|a| a.starts_with(&fx.home) && !a.exists())
                        .last()
                        .unwrap()
                        .to_path_buf()
                })
                .collect();
            let script = format!(
                "{} echo evil >> ~/.ssh/authorized_keys; echo 'Host *' >> ~/.ssh/config; \
                 echo evil > ~/.kube/config; echo '[default]' >> ~/.aws/config; \
                 cat ~/.ssh/id_rsa ~/.aws/credentials; echo script-done",
                plant_script(&fx.home, MISSING_SECRETS)
            );
            let out = run_cmd(home_cmd(fx, &[], &script), None, RUN_DEADLINE);
            out.assert_stdout_contains("script-done");
            assert_absent(&out, &fx.marker);
            // Neither they nor their placeholders (removed after the run) are left.
            for p in &first_missing {
                assert_not_exists(p);
            }
            assert_all_unchanged(&before);
            // Control: an ordinary new file is made through cordon, and the secrets
            // are made without it.
            assert!(control.exists(), "the control file was not made");
            fx.host_sh(&plant_script(&fx.home, secrets))
                .assert_success();
            for rel in secrets {
                assert!(fx.home.join(rel).exists(), "control: {rel}");
            }
        },
    );
}

#[test]
fn a_symlinked_dotfile_in_a_home_workspace_keeps_link_and_target() {
    for_each_user(
        "a_symlinked_dotfile_in_a_home_workspace_keeps_link_and_target",
        |fx| {
            fs::remove_file(fx.home.join(".bashrc")).unwrap();
            fx.write(&fx.home.join("dotfiles/bashrc"), "# managed\n");
            fx.symlink(Path::new("dotfiles/bashrc"), &fx.home.join(".bashrc"));
            let before = snapshots(&[fx.home.join(".bashrc"), fx.home.join("dotfiles/bashrc")]);
            let script = "rm ~/.bashrc; echo pwned > ~/.bashrc; echo pwned > ~/dotfiles/bashrc; \
                      ln -sf /tmp/x ~/.bashrc; echo script-done";
            let out = run_cmd(home_cmd(fx, &[], script), None, RUN_DEADLINE);
            out.assert_stdout_contains("script-done");
            assert_all_unchanged(&before);
            assert_eq!(
                fs::read_link(fx.home.join(".bashrc")).unwrap(),
                Path::new("dotfiles/bashrc")
            );
            // With the link unprotected in the user's config, the link is the
            // sandbox's to replace (the control that the attack is real).
            fx.write(
                &fx.home.join("xdg/cordon/config.json"),
                "{\"unprotect\": [\"~/.bashrc\", \"~/dotfiles/bashrc\"]}",
            );
            let out = run_cmd(home_cmd(fx, &[], script), None, RUN_DEADLINE);
            out.assert_stdout_contains("script-done");
            assert!(
                fs::symlink_metadata(fx.home.join(".bashrc")).is_ok_and(|m| !m.is_symlink()
                    || fs::read_link(fx.home.join(".bashrc")).unwrap()
                        != Path::new("dotfiles/bashrc")),
                "control: the unprotected link was not replaced\n{out}"
            );
        },
    );
}

#[test]
fn an_ordinary_workspace_gets_no_home_placeholders() {
    for_each_user("an_ordinary_workspace_gets_no_home_placeholders", |fx| {
        let before = entries_of(&fx.home);
        let mut cmd = fx.sh_cmd("ls -A ~ > /dev/null; echo script-done");
        home_env(fx, &mut cmd);
        let out = run_cmd(cmd, None, RUN_DEADLINE);
        out.assert_stdout_contains("script-done");
        assert!(
            !out.stderr_str().contains("home directory"),
            "warned for an ordinary workspace\n{out}"
        );
        let policy = fx.policy_json(&[]);
        let protected_in_home = policy["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "protected")
            .filter(|r| Path::new(r["path"].as_str().unwrap()).starts_with(&fx.home))
            .count();
        assert_eq!(protected_in_home, 0, "{policy}");
        // (But cordon's cache dir, which holds the managed caches: caches.rs.)
        let mut after = entries_of(&fx.home);
        after.retain(|e| e != ".cache" || before.contains(e));
        assert_eq!(after, before);
    });
}

fn entries_of(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------
// The hidden home
// ---------------------------------------------------------------------------------

/// A toolchain in the home directory: a program, and a secret beside it.
fn make_toolchain(fx: &Fixture) {
    let tool = fx.home.join(".cargo/bin/hometool");
    fx.write(&tool, "#!/bin/sh\necho hometool-ran\n");
    let mut perms = fs::metadata(&tool).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    fs::set_permissions(&tool, perms).unwrap();
    fx.write(
        &fx.home.join(".cargo/credentials.toml"),
        &fx.secret_content(".cargo/credentials.toml"),
    );
}

const HIDDEN_SCRIPT: &str = "cat ~/notes.txt; ls -A ~; ~/.cargo/bin/hometool; \
    cat ~/.cargo/credentials.toml; grep -r . ~ 2>/dev/null; \
    echo scratch > ~/scratch.txt && cat ~/scratch.txt; echo script-done";

#[test]
fn hide_home_shows_only_the_workspace_and_named_paths() {
    for_each_user("hide_home_shows_only_the_workspace_and_named_paths", |fx| {
        make_toolchain(fx);
        let proj = fx.home.join("proj");
        fx.mkdir(&proj);
        let cargo = fx.home.join(".cargo");
        let out = fx.sh_with(
            &[
                "--workspace",
                proj.to_str().unwrap(),
                "--hide-home",
                "--home-visible",
                cargo.to_str().unwrap(),
            ],
            &format!("{HIDDEN_SCRIPT}; echo kept > {}/out.txt", proj.display()),
        );
        out.assert_stdout_contains("script-done")
            .assert_stdout_contains("hometool-ran")
            .assert_stdout_contains("scratch");
        assert_absent(&out, &fx.marker);
        assert!(
            !out.stdout_str().contains("plain-home-file"),
            "a home file was readable\n{out}"
        );
        // What the sandbox wrote in the hidden home stayed there; the workspace kept
        // its file.
        assert_not_exists(&fx.home.join("scratch.txt"));
        assert_eq!(fs::read_to_string(proj.join("out.txt")).unwrap(), "kept\n");
        // Control: without --hide-home, the home file is there to read.
        let out = fx.sh_with(&["--workspace", proj.to_str().unwrap()], HIDDEN_SCRIPT);
        out.assert_stdout_contains("plain-home-file");
    });
}

#[test]
fn a_project_config_may_hide_home_but_not_show_paths() {
    for_each_user("a_project_config_may_hide_home_but_not_show_paths", |fx| {
        make_toolchain(fx);
        fx.write(
            &fx.work.join(".cordon.json"),
            "{\"hide_home\": true, \"home_visible\": [\"~/.cargo\", \"~\"]}",
        );
        let out = fx.sh(HIDDEN_SCRIPT);
        out.assert_stdout_contains("script-done")
            .assert_stderr_contains("ignored \"home_visible\"");
        assert!(!out.stdout_str().contains("hometool-ran"), "{out}");
        assert!(!out.stdout_str().contains("plain-home-file"), "{out}");
        assert_absent(&out, &fx.marker);
        let policy = fx.policy_json(&[]);
        assert_eq!(policy["home_hidden"]["value"], fx.home.to_str().unwrap());
        assert_eq!(policy["home_hidden"]["origin"]["kind"], "project_config");
        // Control: the user's config does show the toolchain.
        fx.write(
            &fx.home.join(".config/cordon/config.json"),
            "{\"home_visible\": [\"~/.cargo\"]}",
        );
        let out = fx.sh(HIDDEN_SCRIPT);
        out.assert_stdout_contains("hometool-ran");
        assert_absent(&out, &fx.marker);
    });
}

#[test]
fn hide_home_with_home_as_the_workspace_is_an_error() {
    for_each_user("hide_home_with_home_as_the_workspace_is_an_error", |fx| {
        let out = fx.sh_with(
            &["--workspace", fx.home.to_str().unwrap(), "--hide-home"],
            "echo script-done",
        );
        out.assert_status(125)
            .assert_stderr_contains("cannot hide the home directory");
        assert!(!out.stdout_str().contains("script-done"));
    });
}
