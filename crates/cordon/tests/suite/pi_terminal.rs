//! Interactive `cordon pi` on a terminal, driven through a pseudo-terminal with a
//! real interactive shell on it (bash, with job control), as a user types:
//!
//! - Ctrl+Z: pi suspends itself with `kill(0, SIGTSTP)` and waits for SIGCONT. The
//!   shell must get its prompt back with the job stopped, and `fg` must continue
//!   pi. The stand-in here suspends itself the same way (`kill -TSTP 0`), and the
//!   real pi 1.x is driven by its Ctrl+Z key.
//! - pi's own `PI_*` settings reach pi; cordon's refusals do not write over pi's
//!   screen: they wait for pi to end and come as one summary line.
//!
//! Every test runs as root and as the ordinary test user ([`for_each_user`]).

use crate::common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PROMPT: &str = "HOST$ ";
const WAIT: Duration = Duration::from_secs(30);

/// An interactive bash on a pseudo-terminal of the test's, as `fx`'s user.
fn host_shell(fx: &Fixture) -> Terminal {
    let inputrc = fx.root.join("inputrc");
    fx.write(&inputrc, "set enable-bracketed-paste off\n");
    let mut cmd = fx.host_cmd(&["/bin/bash", "--norc", "--noprofile", "-i"]);
    cmd.env("PS1", PROMPT).env("INPUTRC", &inputrc);
    Terminal::start(cmd, &fx.user, PROMPT, WAIT)
}

/// An executable script at `fx.root/bin/NAME`.
fn script(fx: &Fixture, name: &str, body: &str) -> PathBuf {
    let path = fx.root.join("bin").join(name);
    fx.write(&path, body);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Polls until every host process with `word` in its argv is in state `state`.
fn wait_state(word: &str, state: char) -> Vec<(u32, Option<char>)> {
    let start = Instant::now();
    loop {
        let procs: Vec<(u32, Option<char>)> = procs_with_arg(word)
            .into_iter()
            .map(|(pid, _)| (pid, proc_state(pid)))
            .collect();
        let done = !procs.is_empty() && procs.iter().all(|(_, s)| *s == Some(state));
        if done || start.elapsed() > WAIT {
            return procs;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The stand-in for pi: suspends itself as pi does on Ctrl+Z (SIGTSTP to its own
/// process group), then reads a line once continued.
const SUSPENDING_PI: &str = "#!/bin/sh\n\
    echo STANDIN-START\n\
    kill -TSTP 0\n\
    echo STANDIN-RESUMED\n\
    read line\n\
    echo \"GOT:$line\"\n";

#[test]
fn ctrl_z_gives_the_shell_its_prompt_and_fg_resumes_pi() {
    for_each_user(
        "ctrl_z_gives_the_shell_its_prompt_and_fg_resumes_pi",
        |fx| {
            let pi = script(fx, "pi", SUSPENDING_PI);
            let mut sh = host_shell(fx);
            let marker = format!("job-{}", random_hex(6));
            sh.line(&format!(
                "CORDON_PI={} {} pi -- {marker}",
                pi.display(),
                cordon_bin().display()
            ));
            sh.expect("STANDIN-START");
            // pi stopped itself: the shell has the terminal again, with cordon's job
            // stopped, and reads what is typed.
            sh.expect("Stopped");
            sh.prompt();
            let stopped = wait_state(&marker, 'T');
            assert!(
                !stopped.is_empty() && stopped.iter().all(|(_, s)| *s == Some('T')),
                "cordon and pi are not all stopped on the host: {stopped:?}\n{}",
                sh.transcript()
            );
            sh.line("jobs -l; echo HOST-SIDE-$((40+2))");
            sh.expect("Stopped");
            sh.expect("HOST-SIDE-42");
            sh.prompt();
            assert!(
                !sh.transcript().contains("STANDIN-RESUMED"),
                "pi went on while stopped:\n{}",
                sh.transcript()
            );
            // `fg`: pi continues, in the foreground, reading the terminal.
            sh.line("fg");
            sh.expect("STANDIN-RESUMED");
            sh.line("typed-after-fg");
            sh.expect("GOT:typed-after-fg");
            sh.prompt();
            sh.line("echo EXIT:$?");
            sh.expect("EXIT:0");
            sh.prompt();
            let left = wait_gone(&marker, Duration::from_secs(5));
            kill_all(&left);
            assert!(left.is_empty(), "processes left: {left:?}");
        },
    );
}

/// Continued in the background (`bg`), pi must not take the terminal from the
/// shell: cordon stops again, as a program that needs its terminal does.
#[test]
fn bg_stops_pi_again_until_fg() {
    for_each_user("bg_stops_pi_again_until_fg", |fx| {
        let pi = script(fx, "pi", SUSPENDING_PI);
        let mut sh = host_shell(fx);
        let marker = format!("job-{}", random_hex(6));
        sh.line(&format!(
            "CORDON_PI={} {} pi -- {marker}",
            pi.display(),
            cordon_bin().display()
        ));
        sh.expect("STANDIN-START");
        sh.expect("Stopped");
        sh.prompt();
        sh.line("bg");
        sh.prompt();
        // Stopped again, and the terminal is still the shell's.
        let stopped = wait_state(&marker, 'T');
        assert!(
            stopped.iter().all(|(_, s)| *s == Some('T')),
            "not stopped after bg: {stopped:?}\n{}",
            sh.transcript()
        );
        sh.line("echo STILL-MINE");
        sh.expect("STILL-MINE");
        sh.prompt();
        sh.line("fg");
        sh.expect("STANDIN-RESUMED");
        sh.line("x");
        sh.expect("GOT:x");
        sh.prompt();
        let left = wait_gone(&marker, Duration::from_secs(5));
        kill_all(&left);
        assert!(left.is_empty(), "processes left: {left:?}");
    });
}

/// A refusal of the egress broker during an interactive run is not drawn over
/// pi's screen: it waits for pi's end, then comes as one line naming the host,
/// the hint and the audit log.
#[test]
fn refusals_wait_for_pi_to_end_and_come_as_one_line() {
    for_each_user("refusals_wait_for_pi_to_end_and_come_as_one_line", |fx| {
        let host = format!("refused-{}.example", random_hex(4));
        let pi = script(
            fx,
            "pi",
            &format!(
                "#!/bin/sh\n\
                 echo STANDIN-START\n\
                 curl -s --max-time 10 https://{host}/ >/dev/null\n\
                 echo STANDIN-DONE\n"
            ),
        );
        let mut sh = host_shell(fx);
        sh.line(&format!(
            "CORDON_PI={} {} pi --allow-domain allowed.example",
            pi.display(),
            cordon_bin().display()
        ));
        sh.expect("STANDIN-START");
        let start = sh.pos;
        sh.expect("STANDIN-DONE");
        let during = String::from_utf8_lossy(&sh.pty.seen[start..sh.pos]).into_owned();
        assert!(
            !during.contains("refused"),
            "a refusal was printed over pi's screen:\n{}",
            sh.transcript()
        );
        sh.expect(&format!(
            "cordon: while pi ran, network: refused {host}:443: not in the allowlist; to allow it: --allow-domain {host}; each decision is in the audit log "
        ));
        sh.prompt();
    });
}

/// pi's own settings (PI_OFFLINE: no downloads of fd and rg, no version check)
/// reach pi; a PI_ variable that is not one of them (it could hold anything, a
/// key) does not.
#[test]
fn pi_settings_reach_pi_and_nothing_else_named_pi() {
    for_each_user("pi_settings_reach_pi_and_nothing_else_named_pi", |fx| {
        let pi = script(fx, "pi", "#!/bin/sh\nenv | grep '^PI_' | sort\n");
        let mut cmd = fx.cordon_cmd(&["pi"]);
        cmd.env("CORDON_PI", &pi)
            .env("PI_OFFLINE", "1")
            .env("PI_SKIP_VERSION_CHECK", "1")
            .env("PI_TELEMETRY", "0")
            .env("PI_API_KEY", &fx.marker);
        let out = run_cmd(cmd, None, RUN_DEADLINE);
        out.assert_success()
            .assert_stdout_contains("PI_OFFLINE=1\n")
            .assert_stdout_contains("PI_SKIP_VERSION_CHECK=1\n")
            .assert_stdout_contains("PI_TELEMETRY=0\n");
        assert_absent(&out, &fx.marker);
    });
}

/// The real pi 1.x (common/pi.rs): its Ctrl+Z key stops cordon as a job of the shell, `fg` brings
/// pi's screen back, and pi then quits on Ctrl+C twice with status 0.
#[test]
fn real_pi_ctrl_z_and_fg() {
    let prefix = common::pi::pi1().prefix.clone();
    let bin = prefix.join("node_modules/.bin");
    for_each_user("real_pi_ctrl_z_and_fg", |fx| {
        let mut sh = host_shell(fx);
        sh.line(&format!(
            "PATH={}:$PATH PI_OFFLINE=1 {} pi",
            bin.display(),
            cordon_bin().display()
        ));
        // pi has drawn its screen (the end of a synchronized update).
        sh.expect("\x1b[?2026l");
        std::thread::sleep(Duration::from_millis(500));
        sh.pty.send(b"\x1a");
        sh.expect("Stopped");
        sh.prompt();
        sh.line("echo HOST-SIDE-$((40+2))");
        sh.expect("HOST-SIDE-42");
        sh.prompt();
        sh.line("fg");
        sh.expect("\x1b[?2026l");
        std::thread::sleep(Duration::from_millis(500));
        sh.pty.send(b"\x03");
        std::thread::sleep(Duration::from_millis(200));
        sh.pty.send(b"\x03");
        sh.prompt();
        sh.line("echo EXIT:$?");
        sh.expect("EXIT:0");
        sh.prompt();
    });
}
