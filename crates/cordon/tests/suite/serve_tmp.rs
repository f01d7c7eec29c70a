//! cordon itself under `/tmp` (a CI job's download, a `target/` of a checkout in
//! /tmp): the sandbox's /tmp is private, so its path is not visible inside.
//! `cordon serve` must still start its agent (it runs it from a descriptor of its
//! own binary, which no process of the sandbox keeps), and `cordon run` must work.
//!
//! Every test runs as root and as the ordinary test user ([`for_each_user`]).

use crate::common;

use common::serve::Session;
use common::*;
use serde_json::Value;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A copy of the cordon under test in a fresh directory under /tmp, owned by
/// `fx`'s user; removed with the returned guard.
fn cordon_in_tmp(fx: &Fixture) -> (PathBuf, Defer<impl FnMut()>) {
    let dir = Path::new("/tmp").join(format!("cordon-bin-{}", random_hex(6)));
    fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("cordon");
    // Copied by cp, not in this process: a write descriptor open here would be
    // inherited by a child that another test thread forks meanwhile, and running
    // the copy would fail with ETXTBSY until that child execs.
    let copied = Command::new("cp")
        .arg(cordon_bin())
        .arg(&bin)
        .status()
        .unwrap();
    assert!(
        copied.success(),
        "cp the cordon binary to {}",
        bin.display()
    );
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    fx.chown(&dir);
    fx.chown(&bin);
    let remove = dir.clone();
    (
        bin,
        Defer(move || {
            let _ = fs::remove_dir_all(&remove);
        }),
    )
}

/// `cmd` (made by the fixture) with `bin` as its program instead: the same
/// arguments, environment, directory and user.
fn with_program(fx: &Fixture, cmd: &Command, bin: &Path) -> Command {
    let mut full = Command::new(bin);
    full.args(cmd.get_args())
        .env_clear()
        .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .current_dir(&fx.work);
    fx.user.apply(&mut full);
    full
}

/// Runs one `exec` of `command` through `cordon serve` started from `bin`;
/// `during` looks at the host after the exec, while the session still lives.
/// Returns the exec's result, its stdout, and cordon's stderr.
fn serve_exec(
    fx: &Fixture,
    bin: &Path,
    command: &str,
    during: impl FnOnce(u32),
) -> (Value, String, String) {
    let mut cmd = with_program(fx, &fx.cordon_cmd(&["serve"]), bin);
    cmd.stderr(Stdio::piped());
    let mut s = Session::spawn(cmd);
    let (reply, out) = s.exec(command);
    during(s.child.id());
    s.close_input();
    wait_deadline(&mut s.child, RUN_DEADLINE, "cordon serve");
    let mut stderr = String::new();
    let _ = s.child.stderr.take().unwrap().read_to_string(&mut stderr);
    (reply["result"].clone(), out, stderr)
}

/// Where each descriptor of host process `pid` points.
fn fd_targets(pid: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn serve_starts_its_agent_with_cordon_under_tmp() {
    for_each_user("serve_starts_its_agent_with_cordon_under_tmp", |fx| {
        let (bin, _guard) = cordon_in_tmp(fx);
        let bin_text = bin.display().to_string();
        let mut agent_fds = Vec::new();
        let (result, out, stderr) = serve_exec(
            fx,
            &bin,
            "for f in /proc/self/fd/*; do readlink \"$f\"; done; echo READY",
            |serve| {
                // The agent (argv: the binary, `__agent`) holds no descriptor of
                // the binary it was started from. In the VM the agent is the
                // guest's: QEMU, its host side, holds none either.
                if in_vm() {
                    for qemu in common::vm::qemu_below(serve) {
                        agent_fds.push((qemu, fd_targets(qemu)));
                    }
                }
                for (pid, argv) in procs_with_arg("__agent") {
                    if argv.first() == Some(&bin_text) {
                        agent_fds.push((pid, fd_targets(pid)));
                    }
                }
            },
        );
        assert_eq!(
            result["exitCode"], 0,
            "{result}\nstdout: {out}\nstderr: {stderr}"
        );
        assert!(out.contains("READY"), "{out}");
        assert!(
            !out.contains(&bin_text),
            "the command holds a descriptor of cordon's binary:\n{out}"
        );
        assert!(!agent_fds.is_empty(), "no agent found on the host");
        for (pid, fds) in &agent_fds {
            assert!(
                !fds.iter().any(|t| t == &bin_text),
                "the agent {pid} keeps a descriptor of cordon's binary: {fds:?}"
            );
        }
    });
}

#[test]
fn run_works_with_cordon_under_tmp() {
    for_each_user("run_works_with_cordon_under_tmp", |fx| {
        let (bin, _guard) = cordon_in_tmp(fx);
        let cmd = with_program(
            fx,
            &fx.sh_cmd("echo ran-inside; test -e /tmp/cordon-bin-* || echo tmp-private"),
            &bin,
        );
        let out = run_cmd(cmd, None, RUN_DEADLINE);
        out.assert_success()
            .assert_stdout_contains("ran-inside")
            .assert_stdout_contains("tmp-private");
    });
}
