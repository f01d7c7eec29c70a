//! The attack suite: one test per item of "What goes wrong in sandboxes like these"
//! (shared/notes/peers.md) that applies to the OS backend. Every test runs as root and
//! as an ordinary user (see common/mod.rs) and asserts an effect on the host: a file
//! unchanged, a secret's bytes absent from everything the sandbox printed, a listener
//! that saw no connection, no process left. Where it helps, a positive control in the
//! same test shows that the check can fail: the same attack without cordon succeeds.

use crate::common;

use common::*;
use std::fs;
use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// `cordon run OPTS -- python3 -c SCRIPT ARGS...`
fn py(fx: &Fixture, opts: &[&str], script: &str, args: &[&str]) -> Output {
    let mut argv = vec!["run"];
    argv.extend_from_slice(opts);
    argv.extend_from_slice(&["--", "python3", "-c", script]);
    argv.extend_from_slice(args);
    fx.cordon(&argv)
}

/// Python prelude: `sc(name, nr, *args)` makes a raw syscall and prints
/// `name rc=R errno=E`.
const PY_SYSCALL: &str = r#"
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(name, nr, *args):
    conv = [a if isinstance(a, (bytes, ctypes.Array)) else ctypes.c_long(a) for a in args]
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *conv)
    e = ctypes.get_errno()
    print("%s rc=%d errno=%s" % (name, r, errno.errorcode.get(e, str(e)) if r < 0 else "-"), flush=True)
    return r
"#;

/// Connects to each target given as an argument and prints `CONNECTED <target>` on
/// success: `unix:/path`, `abstract:name`, `tcp:host:port`, `udp:host:port` (prints
/// `SENT` for UDP, which has no connection to observe inside).
const PY_CONNECT: &str = r#"
import socket, sys
for t in sys.argv[1:]:
    kind, _, addr = t.partition(":")
    try:
        if kind in ("unix", "abstract"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(3)
            s.connect(addr if kind == "unix" else "\0" + addr)
            s.sendall(b"hello")
            print("CONNECTED", t, flush=True)
        elif kind == "tcp":
            host, port = addr.rsplit(":", 1)
            s = socket.create_connection((host.strip("[]"), int(port)), timeout=3)
            s.sendall(b"hello")
            print("CONNECTED", t, flush=True)
        elif kind == "udp":
            host, port = addr.rsplit(":", 1)
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.sendto(b"ping", (host.strip("[]"), int(port)))
            print("SENT", t, flush=True)
    except OSError as e:
        print("failed", t, e, flush=True)
"#;

/// Counts connections accepted within `wait` from a non-blocking listener.
fn count_accepts(mut accept: impl FnMut() -> std::io::Result<()>, wait: Duration) -> usize {
    let start = Instant::now();
    let mut n = 0;
    loop {
        match accept() {
            Ok(()) => n += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if start.elapsed() > wait {
                    return n;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn unix_accepts(l: &UnixListener, wait: Duration) -> usize {
    count_accepts(|| l.accept().map(|_| ()), wait)
}

fn tcp_accepts(l: &TcpListener, wait: Duration) -> usize {
    count_accepts(|| l.accept().map(|_| ()), wait)
}

fn udp_received(s: &UdpSocket, wait: Duration) -> usize {
    let mut buf = [0u8; 64];
    count_accepts(|| s.recv_from(&mut buf).map(|_| ()), wait)
}

/// Removes a file when dropped, also when the test panics (what the test or an escape
/// may leave outside the fixture).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A pathname unix listener at `path`, connectable by everyone (like the sockets of
/// agents and daemons that users reach).
fn unix_listener(fx: &Fixture, path: &Path) -> UnixListener {
    let l = UnixListener::bind(path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
    l.set_nonblocking(true).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o777)).unwrap();
    fx.chown(path);
    l
}

fn abstract_listener(name: &str) -> UnixListener {
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let l = UnixListener::bind_addr(&addr).expect("bind abstract socket");
    l.set_nonblocking(true).unwrap();
    l
}

/// Without cordon, the fixture's user connects to every target (positive control).
fn assert_host_connects(fx: &Fixture, targets: &[String]) {
    let mut argv = vec!["python3", "-c", PY_CONNECT];
    argv.extend(targets.iter().map(String::as_str));
    let out = run_cmd(fx.host_cmd(&argv), None, RUN_DEADLINE);
    for t in targets {
        out.assert_stdout_contains(&format!("CONNECTED {t}"));
    }
}

/// The host's own connections to `targets` reach the unix listener `l` (`control` of
/// them); the sandbox's reach it not at all.
fn assert_unix_listener_unreachable(
    fx: &Fixture,
    l: &UnixListener,
    targets: &[String],
    control: usize,
) {
    assert_host_connects(fx, targets);
    assert_eq!(
        unix_accepts(l, Duration::from_millis(500)),
        control,
        "control connections not seen"
    );
    assert_sandbox_cannot_connect(fx, &[], targets);
    assert_eq!(
        unix_accepts(l, Duration::from_millis(300)),
        0,
        "the host listener accepted a connection from the sandbox"
    );
}

/// Inside cordon (with `opts`), every connection attempt fails.
fn assert_sandbox_cannot_connect(fx: &Fixture, opts: &[&str], targets: &[String]) -> Output {
    let args: Vec<&str> = targets.iter().map(String::as_str).collect();
    let out = py(fx, opts, PY_CONNECT, &args);
    for t in targets {
        out.assert_stdout_contains(&format!("failed {t}"));
    }
    out.assert_not_printed("CONNECTED");
    out
}

/// Starts `python3 -c 'sleep 60' TOKEN` on the host as the fixture's user, with a
/// fresh TOKEN; returns the process and the token.
fn host_sleeper(fx: &Fixture) -> (Child, String) {
    let token = format!("CRDNPROC{}", random_hex(6));
    let cmd = fx.host_cmd(&["python3", "-c", "import time; time.sleep(60)", &token]);
    let child = spawn_quiet(cmd);
    let found = wait_present(&token, Duration::from_secs(5));
    assert!(!found.is_empty(), "host sleeper did not start");
    (child, token)
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Stops a host sleeper the sandbox went for, then asserts that it was still asleep
/// or running until then; `what` says what any other state would mean.
fn stop_asserting_untouched(child: Child, what: &str) {
    let state = proc_state(child.id());
    stop(child);
    assert!(
        matches!(state, Some('S') | Some('R')),
        "{what}: state {state:?}"
    );
}

/// Snapshots of what the write attacks aim at outside the workspace: `outside/file`,
/// `outside/` and `~/.bashrc`.
fn snapshot_write_targets(fx: &Fixture) -> Vec<Snapshot> {
    snapshots(&[
        &fx.outside.join("file"),
        &fx.outside,
        &fx.home.join(".bashrc"),
    ])
}

/// Kills the host processes left with any of `args` as an argument; returns them.
fn kill_leftovers(args: &[String]) -> Vec<(u32, Vec<String>)> {
    let mut left = Vec::new();
    for a in args {
        left.extend(procs_with_arg(a));
    }
    kill_all(&left);
    left
}

/// The entries of a directory, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A hook script: when the host's git runs it, it leaves `<root>/hook-ran`.
fn hook_script(fx: &Fixture) -> String {
    format!("#!/bin/sh\ntouch {}/hook-ran\n", fx.root.display())
}

/// Commits in `repo` with the host's git, as the fixture's user, without cordon.
fn host_commit(fx: &Fixture, repo: &Path) -> Output {
    fx.host_sh(&format!(
        "cd {} && git -c user.name=host -c user.email=host@example.com commit -q --allow-empty -m host-commit",
        repo.display()
    ))
}

/// Positive control of the hook checks: on the host, a hook written into a repo does
/// run on `git commit` and leaves its file.
fn assert_hook_detection_works(fx: &Fixture) {
    let repo = fx.root.join("control-repo");
    fx.mkdir(&repo);
    fx.host_sh(&format!("cd {} && git init -q", repo.display()))
        .assert_success();
    let hook = repo.join(".git/hooks/pre-commit");
    let ran = fx.root.join("control-hook-ran");
    fx.write(&hook, &format!("#!/bin/sh\ntouch {}\n", ran.display()));
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    host_commit(fx, &repo).assert_success();
    assert!(ran.exists(), "control: the host's git did not run a hook");
}

/// After an attack on the workspace's git metadata: no hook file git would run, no
/// hooksPath/fsmonitor in the config, and a real `git commit` on the host runs nothing.
fn assert_no_runnable_hook(fx: &Fixture) {
    let git = fx.work.join(".git");
    let hooks = git.join("hooks");
    if hooks.is_dir() {
        let runnable: Vec<String> = entries(&hooks)
            .into_iter()
            // git runs neither samples nor what cordon moved aside.
            .filter(|n| !n.ends_with(".sample") && !n.ends_with(".cordon-quarantine"))
            .collect();
        assert!(
            runnable.is_empty(),
            "hook files left in {}: {runnable:?}",
            hooks.display()
        );
    }
    let config = git.join("config");
    if let Ok(text) = fs::read_to_string(&config) {
        for bad in ["hookspath", "fsmonitor", "sshcommand", "pager", "editor"] {
            assert!(
                !text.to_lowercase().contains(bad),
                ".git/config gained {bad}:\n{text}"
            );
        }
    }
    if git.is_dir() {
        // Whatever the sandbox left: the host's git must run no hook from it.
        // The commit itself may fail (a half-made repository); no hook may run.
        let _ = host_commit(fx, &fx.work);
    }
    assert_not_exists(&fx.root.join("hook-ran"));
}

/// A protected path left behind as an empty placeholder is a failure when the
/// workspace had none.
fn assert_no_empty_placeholder(path: &Path) {
    if let Ok(m) = fs::symlink_metadata(path) {
        let empty = if m.is_dir() {
            entries(path).is_empty()
        } else {
            m.len() == 0
        };
        assert!(
            !empty,
            "an empty placeholder was left behind on the host: {}",
            path.display()
        );
    }
}

fn shadow_lines() -> Vec<String> {
    let mut lines = Vec::new();
    for f in ["/etc/shadow", "/etc/gshadow", "/etc/sudoers"] {
        if let Ok(text) = fs::read_to_string(f) {
            lines.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| l.len() >= 8 && !l.starts_with('#'))
                    .map(String::from),
            );
        }
    }
    lines
}

// ---------------------------------------------------------------------------------
// Writes outside the writable roots
// ---------------------------------------------------------------------------------

#[test]
fn write_home_file() {
    for_each_user("write_home_file", |fx| {
        let before = snapshots(&[
            &fx.home.join(".bashrc"),
            &fx.home.join("notes.txt"),
            &fx.home,
        ]);
        let out = fx.sh(
            "echo pwned >> ~/.bashrc; echo pwned > ~/.bashrc; touch ~/.bashrc; \
             chmod 777 ~/.bashrc; echo pwned > ~/new-file; mkdir ~/new-dir; \
             rm -f ~/notes.txt; mv ~/notes.txt ~/moved; ln -s /tmp ~/link; \
             cat ~/notes.txt; echo script-done",
        );
        out.assert_stdout_contains("plain-home-file")
            .assert_stdout_contains("script-done");
        assert_all_unchanged(&before);
        // Control: without cordon the user can write there.
        fx.host_sh("echo ok > ~/control").assert_success();
        assert!(fx.home.join("control").exists());
    });
}

#[test]
fn write_outside_dir() {
    for_each_user("write_outside_dir", |fx| {
        let before = snapshots(&[&fx.outside.join("file"), &fx.outside]);
        let o = fx.outside.display();
        let out = fx.sh(&format!(
            "echo pwned >> {o}/file; echo pwned > {o}/file; echo new > {o}/new; \
             touch {o}/file; chmod 777 {o}/file; mv {o}/file {o}/moved; rm -f {o}/file; \
             truncate -s 0 {o}/file; mkdir {o}/dir; cat {o}/file; echo script-done"
        ));
        out.assert_stdout_contains("outside-original")
            .assert_stdout_contains("script-done");
        assert_all_unchanged(&before);
        fx.host_sh(&format!("echo ok > {o}/control"))
            .assert_success();
        assert!(fx.outside.join("control").exists());
    });
}

#[test]
fn write_new_file_in_etc() {
    for_each_user("write_new_file_in_etc", |fx| {
        let name = format!("/etc/cordon-test-{}", random_hex(6));
        // Whatever happens, leave the host clean.
        let _cleanup = Defer(|| {
            let _ = fs::remove_file(&name);
            let _ = fs::remove_dir(format!("{name}.d"));
            let _ = fs::remove_file(format!("{name}.control"));
            let _ = fs::remove_file("/usr/bin/cordon-test-pwn");
        });
        let before = snapshots(&["/etc/hosts", "/etc/passwd"]);
        let out = fx.sh(&format!(
            "echo pwned > {name}; mkdir {name}.d; touch /etc/hosts /etc/passwd; \
             echo pwned > /usr/bin/cordon-test-pwn; echo script-done"
        ));
        out.assert_stdout_contains("script-done");
        assert_not_exists(Path::new(&name));
        assert_not_exists(Path::new(&format!("{name}.d")));
        assert_not_exists(Path::new("/usr/bin/cordon-test-pwn"));
        assert_all_unchanged(&before);
        if fx.user.is_root() {
            // Control: root could write /etc without cordon.
            let ctl = format!("{name}.control");
            fx.host_sh(&format!("echo ok > {ctl}")).assert_success();
            assert!(Path::new(&ctl).exists());
        }
    });
}

#[test]
fn write_via_dotdot() {
    for_each_user("write_via_dotdot", |fx| {
        fx.mkdir(&fx.work.join("sub"));
        let before = snapshot_write_targets(fx);
        let w = fx.work.display();
        let out = fx.sh(&format!(
            "cd sub && echo pwned > ../../outside/file; echo pwned > ../../outside/new; \
             echo pwned > {w}/sub/../../outside/new2; echo pwned >> {w}/./sub/../../home/.bashrc; \
             echo pwned > /proc/self/cwd/../../outside/new3; cat ../../outside/file; echo script-done"
        ));
        out.assert_stdout_contains("outside-original")
            .assert_stdout_contains("script-done");
        assert_all_unchanged(&before);
    });
}

#[test]
fn write_via_symlink_made_before_the_run() {
    for_each_user("write_via_symlink_made_before_the_run", |fx| {
        let etc_name = format!("cordon-test-{}", random_hex(6));
        let etc_path = Path::new("/etc").join(&etc_name);
        let _cleanup = RemoveOnDrop(etc_path.clone());
        fx.symlink(&fx.outside.join("file"), &fx.work.join("to-file"));
        fx.symlink(Path::new("../outside"), &fx.work.join("to-dir"));
        fx.symlink(&fx.home, &fx.work.join("to-home"));
        fx.symlink(Path::new("/etc"), &fx.work.join("to-etc"));
        let before = snapshot_write_targets(fx);
        let out = fx.sh(&format!(
            "echo pwned > to-file; echo pwned >> to-file; echo pwned > to-dir/new; \
             echo pwned > to-home/.bashrc; echo pwned > to-etc/{etc_name}; \
             cp README to-dir/copied; cat to-file; echo script-done"
        ));
        out.assert_stdout_contains("outside-original")
            .assert_stdout_contains("script-done");
        assert_all_unchanged(&before);
        assert_not_exists(&etc_path);
        // Control: without cordon, the link does lead outside.
        fx.host_sh("echo ok > to-dir/control").assert_success();
        assert!(fx.outside.join("control").exists());
    });
}

#[test]
fn write_via_symlink_made_inside() {
    for_each_user("write_via_symlink_made_inside", |fx| {
        let etc_name = format!("cordon-test-{}", random_hex(6));
        let etc_path = Path::new("/etc").join(&etc_name);
        let _cleanup = RemoveOnDrop(etc_path.clone());
        let before = snapshot_write_targets(fx);
        let o = fx.outside.display();
        // A link in the sandbox's private /tmp (on the host only if that were broken).
        let tmp_link = format!("/tmp/cordon-test-l5-{}", random_hex(6));
        let _cleanup_tmp = RemoveOnDrop(PathBuf::from(&tmp_link));
        let out = fx.sh(&format!(
            "ln -s ../outside/file l1; echo pwned > l1; echo pwned >> l1; \
             ln -s {o} l2; echo pwned > l2/new; \
             ln -s \"$HOME\" l3; echo pwned > l3/.bashrc; \
             ln -s /etc l4; echo pwned > l4/{etc_name}; \
             ln -s {o} {tmp_link}; echo pwned > {tmp_link}/new2; \
             ln -s / l6; echo pwned > l6{o}/new3; \
             cat l1; echo script-done"
        ));
        out.assert_stdout_contains("outside-original")
            .assert_stdout_contains("script-done");
        assert_all_unchanged(&before);
        assert_not_exists(&etc_path);
    });
}

#[test]
fn write_via_hard_link() {
    for_each_user("write_via_hard_link", |fx| {
        let before = snapshots(&[&fx.outside.join("file"), &fx.home.join(".bashrc")]);
        let out = fx.sh("ln ../outside/file hl1 && echo pwned >> hl1; \
             ln ~/.bashrc hl2 && echo pwned >> hl2; \
             cp -l ../outside/file hl4 && echo pwned >> hl4; echo script-done");
        out.assert_stdout_contains("script-done");
        assert_all_unchanged(&before);
        // Control: without cordon, the user can hard-link the outside file into the
        // workspace (same file system), so the attack is real.
        fx.host_sh("ln ../outside/file control-link && rm control-link")
            .assert_success();
    });
}

// ---------------------------------------------------------------------------------
// Reads of secrets
// ---------------------------------------------------------------------------------

#[test]
fn read_secrets_plain() {
    for_each_user("read_secrets_plain", |fx| {
        let mut script = String::new();
        for s in SECRETS {
            script.push_str(&format!("cat {}; ", fx.home.join(s).display()));
        }
        script.push_str(
            "ls -laR \"$HOME\"; grep -r . \"$HOME\"; find \"$HOME\" -type f -exec cat {} +; \
             tar cf - -C \"$HOME\" . 2>&1 | od -c | head -c 100000; echo script-done",
        );
        let out = fx.sh(&script);
        out.assert_stdout_contains("plain-home-file")
            .assert_stdout_contains("script-done");
        assert_absent(&out, &fx.marker);
        // Control: the same reads without cordon show every secret.
        let ctl = fx.host_sh(&script);
        for s in SECRETS {
            ctl.assert_stdout_contains(&fx.secret_content(s));
        }
    });
}

#[test]
fn read_secrets_via_dotdot() {
    for_each_user("read_secrets_via_dotdot", |fx| {
        fx.mkdir(&fx.work.join("sub"));
        let root_name = fx.root.file_name().unwrap().to_string_lossy().to_string();
        let w = fx.work.display();
        let script = format!(
            "cat ../home/.ssh/id_rsa ../home/.aws/credentials; cat {w}/../home/.netrc; \
             cd sub && cat ../../home/.git-credentials ../../../{root_name}/home/.npmrc; \
             cat /proc/self/cwd/../../home/.kube/config; cat ../../home/notes.txt; \
             grep -r . ../../home; echo script-done"
        );
        let out = fx.sh(&script);
        out.assert_stdout_contains("plain-home-file")
            .assert_stdout_contains("script-done");
        assert_absent(&out, &fx.marker);
        fx.host_sh(&script)
            .assert_stdout_contains(&fx.secret_content(".ssh/id_rsa"));
    });
}

#[test]
fn read_secret_via_symlink_made_before_the_run() {
    for_each_user("read_secret_via_symlink_made_before_the_run", |fx| {
        fx.symlink(Path::new("../home/.ssh/id_rsa"), &fx.work.join("key"));
        fx.symlink(&fx.home.join(".ssh"), &fx.work.join("sshdir"));
        fx.symlink(&fx.home.join(".aws/credentials"), &fx.work.join("aws"));
        fx.symlink(&fx.home, &fx.work.join("homedir"));
        let script = "cat key; cat sshdir/id_rsa; ls -la sshdir/; cat aws; cp key copied; \
                      cat copied; grep -r . homedir/; cat homedir/.netrc; echo script-done";
        let out = fx.sh(script);
        out.assert_stdout_contains("script-done");
        assert_absent(&out, &fx.marker);
        assert!(
            !fs::read(fx.work.join("copied"))
                .unwrap_or_default()
                .windows(fx.marker.len())
                .any(|w| w == fx.marker.as_bytes()),
            "the secret was copied into the workspace"
        );
        let _ = fs::remove_file(fx.work.join("copied"));
        fx.host_sh("cat key; cat aws")
            .assert_stdout_contains(&fx.secret_content(".ssh/id_rsa"))
            .assert_stdout_contains(&fx.secret_content(".aws/credentials"));
    });
}

#[test]
fn bind_source_swapped_for_a_symlink_is_not_followed() {
    // Another process (a sandbox running in the same workspace, say) swaps a
    // directory cordon is about to bind for a symlink to a secret, again and again:
    // the bind must never follow it.
    for_each_user("bind_source_swapped_for_a_symlink_is_not_followed", |fx| {
        let sub = fx.work.join("sub");
        let swap = fx.work.join("swap");
        fx.mkdir(&sub);
        fx.symlink(&fx.home.join(".ssh"), &swap);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (stop, sub, swap) = (stop.clone(), sub.clone(), swap.clone());
            std::thread::spawn(move || {
                let (a, b) = (cstring(&sub), cstring(&swap));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Atomically exchange the directory and the symlink.
                    // SAFETY: renameat2 reads two NUL-terminated paths alive for the
                    // call and writes no memory.
                    unsafe {
                        libc::renameat2(
                            libc::AT_FDCWD,
                            a.as_ptr(),
                            libc::AT_FDCWD,
                            b.as_ptr(),
                            libc::RENAME_EXCHANGE,
                        )
                    };
                }
            })
        };
        let sub_arg = sub.to_str().unwrap().to_string();
        let outputs: Vec<Output> = (0..40)
            .map(|_| {
                fx.sh_with(
                    &["--allow-write", &sub_arg],
                    "cat sub/id_rsa swap/id_rsa; ls sub swap; echo script-done",
                )
            })
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.join().unwrap();
        for out in &outputs {
            assert_absent(out, &fx.marker);
        }
        // Control: through the symlink, the secret is there to be had.
        fx.host_sh(&format!("cat {}/id_rsa", fx.home.join(".ssh").display()))
            .assert_stdout_contains(&fx.secret_content(".ssh/id_rsa"));
    });
}

fn cstring(path: &Path) -> std::ffi::CString {
    std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap()
}

#[test]
fn read_secret_via_symlink_made_inside() {
    for_each_user("read_secret_via_symlink_made_inside", |fx| {
        let tmp_link = format!("/tmp/cordon-test-g-{}", random_hex(6));
        let _cleanup_tmp = RemoveOnDrop(PathBuf::from(&tmp_link));
        let out = fx.sh(&format!(
            "ln -s ../home/.ssh/id_rsa k1; cat k1; ln -s \"$HOME\" h; cat h/.ssh/id_rsa h/.netrc; \
             ln -s / r; cat r\"$HOME\"/.aws/credentials; ln -s \"$HOME/.gnupg\" {tmp_link}; \
             grep -r . {tmp_link}/; cp -r \"$HOME/.ssh\" copy; cat copy/*; readlink -f k1; \
             cat h/notes.txt; echo script-done"
        ));
        out.assert_stdout_contains("plain-home-file")
            .assert_stdout_contains("script-done");
        assert_absent(&out, &fx.marker);
    });
}

#[test]
fn read_secrets_tilde_and_at_forms() {
    for_each_user("read_secrets_tilde_and_at_forms", |fx| {
        let script = "cat ~/.ssh/id_rsa ~/.aws/credentials ~/.netrc ~/.pi/agent/auth.json; \
                      cat \"@$HOME/.ssh/id_rsa\" @~/.ssh/id_rsa; \
                      python3 -c 'import os; print(open(os.path.expanduser(\"~/.ssh/id_rsa\")).read())'; \
                      node -e 'console.log(require(\"fs\").readFileSync(require(\"os\").homedir()+\"/.aws/credentials\",\"utf8\"))'; \
                      cat ~/notes.txt; echo script-done";
        let out = fx.sh(script);
        out.assert_stdout_contains("plain-home-file")
            .assert_stdout_contains("script-done");
        assert_absent(&out, &fx.marker);
        fx.host_sh(script)
            .assert_stdout_contains(&fx.secret_content(".ssh/id_rsa"))
            .assert_stdout_contains(&fx.secret_content(".aws/credentials"));
    });
}

#[test]
fn ssh_host_keys_hidden() {
    // A sandbox started by root is uid 0 on the host: root-only files such as the
    // ssh host keys are readable by mode bits alone unless the view hides them.
    let key = Path::new("/etc/ssh/ssh_host_ed25519_key");
    let _made = if running_as_root() && !key.exists() {
        fs::create_dir_all("/etc/ssh").unwrap();
        let guard = RemoveOnDrop(key.to_path_buf());
        fs::write(key, format!("CRDNHOSTKEY{}\n", random_hex(8))).unwrap();
        fs::set_permissions(key, fs::Permissions::from_mode(0o600)).unwrap();
        Some(guard)
    } else {
        None
    };
    // Control: as root the key has something to leak (None when not readable).
    let secret = fs::read_to_string(key).ok();
    if running_as_root() {
        assert!(
            secret.as_ref().is_some_and(|s| !s.trim().is_empty()),
            "control: no host key to read"
        );
    }
    for_each_user("ssh_host_keys_hidden", |fx| {
        let out = fx.sh("cat /etc/ssh/ssh_host_*_key; ls -la /etc/ssh; echo script-done");
        out.assert_stdout_contains("script-done");
        let all = out.all();
        let leaked = secret
            .iter()
            .flat_map(|s| s.lines())
            .filter(|line| line.len() >= 8)
            .any(|line| all.contains(line));
        // The message does not quote the key: it may be the host's real one.
        assert!(
            !leaked,
            "the host's ssh host key appeared in the sandbox's output"
        );
    });
}

#[test]
fn read_etc_shadow() {
    let lines = shadow_lines();
    if running_as_root() {
        // Control: the host's files do hold something to leak.
        assert!(
            !lines.is_empty(),
            "control: /etc/shadow is empty on the host"
        );
    }
    for_each_user("read_etc_shadow", |fx| {
        let out = fx.sh(
            "cat /etc/shadow /etc/gshadow /etc/sudoers; ls -la /etc/sudoers.d /etc/ssl/private; \
             cat /etc/sudoers.d/* /etc/ssl/private/*; grep -r . /etc/shadow /etc/sudoers.d; \
             cat /etc/hostname; echo script-done",
        );
        out.assert_stdout_contains("script-done");
        // On failure, name the leaked lines by number only: the message must not
        // spread the host's password hashes any further.
        let all = out.all();
        let leaked: Vec<usize> = (0..lines.len())
            .filter(|i| all.contains(lines[*i].as_str()))
            .collect();
        assert!(
            leaked.is_empty(),
            "lines {leaked:?} of the host's shadow/gshadow/sudoers appeared in the sandbox's output"
        );
    });
}

// ---------------------------------------------------------------------------------
// Protected paths inside the workspace
// ---------------------------------------------------------------------------------

/// The protected files of a workspace that has them all.
fn make_protected_files(fx: &Fixture) -> Vec<PathBuf> {
    fx.host_sh("git init -q .").assert_success();
    fx.write(
        &fx.work.join(".pi/settings.json"),
        "{\"theme\": \"dark\"}\n",
    );
    fx.write(&fx.work.join(".cordon.json"), "{}\n");
    fx.write(&fx.work.join(".vscode/tasks.json"), "{\"tasks\": []}\n");
    fx.write(&fx.work.join(".idea/x"), "idea\n");
    [
        ".git/hooks",
        ".git/config",
        ".pi",
        ".pi/settings.json",
        ".cordon.json",
        ".vscode",
        ".vscode/tasks.json",
        ".idea",
        ".idea/x",
    ]
    .iter()
    .map(|p| fx.work.join(p))
    .collect()
}

/// Shell that tries every way to plant a hook or change a protected file.
fn protected_attack_script(fx: &Fixture) -> String {
    let hook = hook_script(fx);
    let r = fx.root.display();
    format!(
        "printf '%s' '{hook}' > .git/hooks/pre-commit; chmod +x .git/hooks/pre-commit; \
         printf '%s' '{hook}' > .git/hooks/post-commit; chmod +x .git/hooks/post-commit; \
         cp .git/hooks/pre-commit.sample .git/hooks/pre-commit; \
         printf '[core]\\n\\thooksPath = /tmp\\n' >> .git/config; \
         git config core.hooksPath .githooks; git config core.fsmonitor {r}/fsmon; \
         ln .git/config cfg-link && echo '[core] pager = evil' >> cfg-link; \
         mkdir -p .pi && echo evil > .pi/settings.json; echo evil > .pi/extension.ts; \
         echo '{{\"allow_write\": [\"/\"]}}' > .cordon.json; \
         mkdir -p .vscode && echo evil > .vscode/tasks.json; echo evil > .vscode/settings.json; \
         mkdir -p .idea && echo evil > .idea/x; echo evil > .idea/workspace.xml; \
         rm -rf .git/hooks .pi .vscode .idea .cordon.json; chmod 777 .git/config .git/hooks; \
         touch .git/config .git/hooks .cordon.json; echo script-done"
    )
}

#[test]
fn protected_paths_that_exist_stay_unchanged() {
    for_each_user("protected_paths_that_exist_stay_unchanged", |fx| {
        let paths = make_protected_files(fx);
        let before = snapshots(&paths);
        let out = fx.sh(&protected_attack_script(fx));
        out.assert_stdout_contains("script-done");
        assert_all_unchanged(&before);
        assert_no_runnable_hook(fx);
        assert_hook_detection_works(fx);
    });
}

/// A protected path that is a symlink works (the run starts), and neither the link
/// nor its target can be changed: the docs promise both are protected.
#[test]
fn protected_symlinked_paths_keep_link_and_target() {
    for_each_user("protected_symlinked_paths_keep_link_and_target", |fx| {
        fx.write(&fx.work.join("realvs/tasks.json"), "{\"tasks\": []}\n");
        fx.write(&fx.work.join("real.json"), "{}\n");
        fx.symlink(Path::new("realvs"), &fx.work.join(".vscode"));
        fx.symlink(Path::new("real.json"), &fx.work.join(".cordon.json"));
        let watched = [
            fx.work.join("realvs/tasks.json"),
            fx.work.join("real.json"),
            fx.work.join("realvs"),
        ];
        let before = snapshots(&watched);
        let out = fx.sh(
            "echo evil > .vscode/tasks.json; echo evil > realvs/tasks.json; \
             echo evil > .vscode/settings.json; echo '{\"allow_write\": [\"/\"]}' > .cordon.json; \
             echo evil > real.json; rm -rf .vscode; mv .cordon.json moved.json; \
             ln -sfn /tmp .vscode; echo script-done",
        );
        out.assert_stdout_contains("script-done");
        assert_all_unchanged(&before);
        assert_eq!(
            fs::read_link(fx.work.join(".vscode")).unwrap(),
            Path::new("realvs")
        );
        assert_eq!(
            fs::read_link(fx.work.join(".cordon.json")).unwrap(),
            Path::new("real.json")
        );
        assert_not_exists(&fx.work.join("realvs/settings.json"));
        assert_not_exists(&fx.work.join("moved.json"));
        // Control: without cordon the same writes land.
        fx.host_sh("echo evil > .vscode/settings.json")
            .assert_success();
        assert!(fx.work.join("realvs/settings.json").exists());
    });
}

#[test]
fn protected_paths_that_do_not_exist_cannot_be_created() {
    for_each_user(
        "protected_paths_that_do_not_exist_cannot_be_created",
        |fx| {
            let before = entries(&fx.work);
            let hook = hook_script(fx);
            let out = fx.sh(&format!(
                "mkdir -p .pi && echo evil > .pi/settings.json; echo '{{}}' > .cordon.json; \
             mkdir -p .vscode; echo evil > .vscode/tasks.json; mkdir .idea; echo evil > .idea/x; \
             mkdir -p .git; echo '[core]' > .git/config; mkdir -p .git/hooks; \
             printf '%s' '{hook}' > .git/hooks/pre-commit; chmod +x .git/hooks/pre-commit; \
             ls -la; echo script-done"
            ));
            out.assert_stdout_contains("script-done");
            // A `.git` may be made (agents start repositories); what it holds is
            // judged when the run ends, so no hook in it runs.
            let mut after = entries(&fx.work);
            after.retain(|e| e != ".git");
            assert_eq!(
                after, before,
                "the workspace gained entries on the host (a protected file or a placeholder)\n{out}"
            );
            assert_no_runnable_hook(fx);
        },
    );
}

#[test]
fn protected_git_redirections_refused() {
    // Git also takes code-running settings from `.git/commondir` (another git dir's
    // config and hooks), `.git/config.worktree` and submodules under `.git/modules`.
    for_each_user("protected_git_redirections_refused", |fx| {
        fx.host_sh("git init -q . && git -c user.name=h -c user.email=h@example.com commit -q --allow-empty -m base")
            .assert_success();
        let hook = hook_script(fx);
        let out = fx.sh(&format!(
            "mkdir -p evil/hooks && cp -r .git/objects .git/refs .git/HEAD evil/ && cp .git/config evil/; \
             printf '%s' '{hook}' > evil/hooks/pre-commit; chmod +x evil/hooks/pre-commit; \
             echo ../evil > .git/commondir; \
             printf '[core]\\n\\thooksPath = evil/hooks\\n' > .git/config.worktree; \
             mkdir -p .git/modules/sub/hooks && printf '%s' '{hook}' > .git/modules/sub/hooks/pre-commit; \
             git -c user.name=s -c user.email=s@example.com commit -q --allow-empty -m inside && echo committed-inside; \
             echo script-done"
        ));
        out.assert_stdout_contains("script-done");
        // Git keeps working inside while the redirections are refused.
        out.assert_stdout_contains("committed-inside");
        for name in ["commondir", "config.worktree", "modules"] {
            let path = fx.work.join(".git").join(name);
            assert!(
                !path.exists(),
                "{} exists on the host after the run\n{out}",
                path.display()
            );
        }
        assert_no_runnable_hook(fx);
        assert_hook_detection_works(fx);
    });
}

#[test]
fn protected_git_init_inside_leaves_no_hook() {
    for_each_user("protected_git_init_inside_leaves_no_hook", |fx| {
        let hook = hook_script(fx);
        let out = fx.sh(&format!(
            "git init -q; echo init-rc=$?; printf '%s' '{hook}' > .git/hooks/pre-commit; \
             chmod +x .git/hooks/pre-commit; git config core.hooksPath .githooks; \
             mkdir -p .githooks; printf '%s' '{hook}' > .githooks/pre-commit; \
             chmod +x .githooks/pre-commit; echo script-done"
        ));
        out.assert_stdout_contains("script-done");
        assert_no_runnable_hook(fx);
        assert_no_empty_placeholder(&fx.work.join(".git/config"));
        assert_no_empty_placeholder(&fx.work.join(".git/hooks"));
        for p in [".pi", ".vscode", ".idea", ".cordon.json"] {
            assert_not_exists(&fx.work.join(p));
        }
        assert_hook_detection_works(fx);
    });
}

#[test]
fn protected_mkdir_git_hooks_inside_leaves_no_hook() {
    for_each_user("protected_mkdir_git_hooks_inside_leaves_no_hook", |fx| {
        let hook = hook_script(fx);
        let out = fx.sh(&format!(
            "mkdir -p .git/hooks && printf '%s' '{hook}' > .git/hooks/pre-commit && \
             chmod +x .git/hooks/pre-commit; echo '[core]' > .git/config; echo script-done"
        ));
        out.assert_stdout_contains("script-done");
        assert_no_runnable_hook(fx);
        assert_eq!(
            entries(&fx.work),
            vec![".git".to_string(), "README".to_string()],
            "placeholders or files left in the workspace\n{out}"
        );
    });
}

#[test]
fn protected_rename_parent_away_when_it_exists() {
    for_each_user("protected_rename_parent_away_when_it_exists", |fx| {
        let paths = make_protected_files(fx);
        let before = snapshots(&paths);
        let hook = hook_script(fx);
        let out = fx.sh(&format!(
            "mv .git g2 && mkdir -p .git/hooks && printf '%s' '{hook}' > .git/hooks/pre-commit \
             && chmod +x .git/hooks/pre-commit && cp -r g2/objects g2/refs g2/HEAD .git/; \
             mv .git/hooks .git/h2 && mkdir .git/hooks && printf '%s' '{hook}' > .git/hooks/pre-commit \
             && chmod +x .git/hooks/pre-commit; \
             mv .git/config .git/c2 && printf '[core]\\n\\thooksPath = /tmp\\n' > .git/config; \
             mv .pi p2 && mkdir .pi && echo evil > .pi/settings.json; \
             mv .vscode v2 && mkdir .vscode && echo evil > .vscode/tasks.json; \
             mv .idea i2 && mkdir .idea && echo evil > .idea/x; \
             mv .cordon.json c2.json && echo '{{\"allow_write\": [\"/\"]}}' > .cordon.json; \
             ls -la; echo script-done"
        ));
        out.assert_stdout_contains("script-done");
        assert_all_unchanged(&before);
        for moved in ["g2", "p2", "v2", "i2", "c2.json", ".git/h2", ".git/c2"] {
            assert_not_exists(&fx.work.join(moved));
        }
        assert_no_runnable_hook(fx);
        assert_hook_detection_works(fx);
    });
}

#[test]
fn protected_rename_parent_away_when_missing() {
    for_each_user("protected_rename_parent_away_when_missing", |fx| {
        let hook = hook_script(fx);
        let out = fx.sh(&format!(
            "mv .git g2; mkdir -p .git/hooks && printf '%s' '{hook}' > .git/hooks/pre-commit \
             && chmod +x .git/hooks/pre-commit; git init -q; \
             mv .pi p2; mkdir -p .pi && echo evil > .pi/settings.json; \
             mv .vscode v2; mkdir -p .vscode && echo evil > .vscode/tasks.json; \
             mv .idea i2; mkdir -p .idea && echo evil > .idea/x; \
             mv .cordon.json c2.json; echo '{{}}' > .cordon.json; ls -la; echo script-done"
        ));
        out.assert_stdout_contains("script-done");
        for p in [
            "g2",
            "p2",
            "v2",
            "i2",
            "c2.json",
            ".pi",
            ".vscode",
            ".idea",
            ".cordon.json",
        ] {
            assert_not_exists(&fx.work.join(p));
        }
        assert_no_runnable_hook(fx);
        assert_no_empty_placeholder(&fx.work.join(".git/config"));
        assert_no_empty_placeholder(&fx.work.join(".git/hooks"));
        assert_hook_detection_works(fx);
    });
}

// ---------------------------------------------------------------------------------
// Host sockets and the network
// ---------------------------------------------------------------------------------

#[test]
fn host_unix_socket_in_home_unreachable() {
    for_each_user("host_unix_socket_in_home_unreachable", |fx| {
        let path = fx.home.join("agent.sock");
        let l = unix_listener(fx, &path);
        let targets = vec![format!("unix:{}", path.display())];
        assert_unix_listener_unreachable(fx, &l, &targets, 1);
    });
}

#[test]
fn host_unix_socket_in_run_unreachable() {
    for_each_user("host_unix_socket_in_run_unreachable", |fx| {
        let dir = if running_as_root() {
            PathBuf::from("/run")
        } else {
            let d = PathBuf::from(format!("/run/user/{}", euid()));
            if !d.is_dir() {
                eprintln!("note: no writable directory under /run; socket-in-/run check skipped");
                return;
            }
            d
        };
        let name = format!("cordon-test-{}.sock", random_hex(6));
        let path = dir.join(&name);
        let _cleanup = RemoveOnDrop(path.clone());
        let l = unix_listener(fx, &path);
        let via_var_run = Path::new("/var/run").join(path.strip_prefix("/run").unwrap());
        let targets = vec![
            format!("unix:{}", path.display()),
            format!("unix:{}", via_var_run.display()),
        ];
        assert_unix_listener_unreachable(fx, &l, &targets, 2);
        let ls = fx.sh("ls -la /run /var/run/ /run/user; find /run /var/run/ | head -50");
        ls.assert_not_printed(&name);
    });
}

#[test]
fn host_abstract_unix_socket_unreachable() {
    for_each_user("host_abstract_unix_socket_unreachable", |fx| {
        let name = format!("cordon-test-{}", random_hex(6));
        let l = abstract_listener(&name);
        let targets = vec![format!("abstract:{name}")];
        assert_unix_listener_unreachable(fx, &l, &targets, 1);
        fx.sh("cat /proc/net/unix").assert_not_printed(&name);
    });
}

#[test]
fn host_unix_sockets_unreachable_with_net_host() {
    for_each_user("host_unix_sockets_unreachable_with_net_host", |fx| {
        let path = fx.home.join("agent.sock");
        let pl = unix_listener(fx, &path);
        let name = format!("cordon-test-{}", random_hex(6));
        let al = abstract_listener(&name);
        let targets = vec![
            format!("unix:{}", path.display()),
            format!("abstract:{name}"),
        ];
        assert_host_connects(fx, &targets);
        assert_eq!(unix_accepts(&pl, Duration::from_millis(500)), 1);
        assert_eq!(unix_accepts(&al, Duration::from_millis(200)), 1);
        if in_vm() {
            // The VM backend has no unfiltered network to give: refused, and
            // nothing runs (the sockets below stay unreached all the same).
            py(fx, &["--net", "host"], PY_CONNECT, &[])
                .assert_status(69)
                .assert_stderr_contains("--net host");
        } else {
            assert_sandbox_cannot_connect(fx, &["--net", "host"], &targets);
        }
        assert_eq!(
            unix_accepts(&pl, Duration::from_millis(300)),
            0,
            "pathname socket reached with --net host"
        );
        assert_eq!(
            unix_accepts(&al, Duration::from_millis(100)),
            0,
            "abstract socket reached with --net host"
        );
    });
}

/// The host's own non-loopback IPv4 address.
fn host_ipv4() -> Option<Ipv4Addr> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .env("PATH", PATH)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let from_ip = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next()?.parse().ok());
    from_ip.or_else(|| {
        let s = UdpSocket::bind("0.0.0.0:0").ok()?;
        s.connect("192.0.2.1:9").ok()?;
        match s.local_addr().ok()?.ip() {
            std::net::IpAddr::V4(a) if !a.is_loopback() && !a.is_unspecified() => Some(a),
            _ => None,
        }
    })
}

#[test]
fn host_tcp_and_udp_listeners_unreachable() {
    let own = host_ipv4();
    if own.is_none() {
        eprintln!("note: no non-loopback IPv4 address; only loopback is checked");
    }
    for_each_user("host_tcp_and_udp_listeners_unreachable", |fx| {
        let mut tcp = vec![TcpListener::bind("127.0.0.1:0").unwrap()];
        if let Some(a) = own {
            tcp.push(TcpListener::bind((a, 0)).unwrap());
        }
        if let Ok(l6) = TcpListener::bind("[::1]:0") {
            tcp.push(l6);
        }
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_nonblocking(true).unwrap();
        let mut targets = Vec::new();
        for l in &tcp {
            l.set_nonblocking(true).unwrap();
            targets.push(format!("tcp:{}", l.local_addr().unwrap()));
        }
        let port = tcp[0].local_addr().unwrap().port();
        targets.push(format!("tcp:localhost:{port}"));
        assert_host_connects(fx, &targets);
        for (i, l) in tcp.iter().enumerate() {
            let expect = if i == 0 { 2 } else { 1 }; // 127.0.0.1 and localhost
            assert!(
                tcp_accepts(l, Duration::from_millis(300)) >= expect.min(1),
                "control connection not seen on {}",
                targets[i]
            );
        }
        let out = assert_sandbox_cannot_connect(fx, &[], &targets);
        for l in &tcp {
            assert_eq!(
                tcp_accepts(l, Duration::from_millis(200)),
                0,
                "a host TCP listener ({}) accepted a connection from the sandbox\n{out}",
                l.local_addr().unwrap()
            );
        }
        let udp_target = format!("udp:{}", udp.local_addr().unwrap());
        py(fx, &[], PY_CONNECT, &[&udp_target]);
        assert_eq!(
            udp_received(&udp, Duration::from_millis(300)),
            0,
            "a host UDP socket received a datagram from the sandbox"
        );
    });
}

#[test]
fn cloud_metadata_unreachable() {
    for_each_user("cloud_metadata_unreachable", |fx| {
        let start = Instant::now();
        let targets = vec![
            "tcp:169.254.169.254:80".to_string(),
            "tcp:[fd00:ec2::254]:80".to_string(),
            "tcp:169.254.170.2:80".to_string(),
        ];
        let out = assert_sandbox_cannot_connect(fx, &[], &targets);
        // No route at all: refused at once, not after a timeout.
        out.assert_stdout_contains("Network is unreachable");
        assert!(
            start.elapsed() < Duration::from_secs(10) * backend_slowdown(),
            "metadata probe hung\n{out}"
        );
        fx.run(&["ip", "route"]).assert_not_printed("default");
    });
}

// ---------------------------------------------------------------------------------
// Terminal, processes, kernel interfaces
// ---------------------------------------------------------------------------------

const PY_TIOCSTI: &str = r#"
import errno, fcntl, os, sys, termios
payload = sys.argv[1].encode() + b"\n"
fds = [0, 1, 2]
try:
    fds.append(os.open("/dev/tty", os.O_RDWR))
except OSError as e:
    print("open /dev/tty:", e)
for fd in fds:
    n = 0
    for c in payload:
        try:
            fcntl.ioctl(fd, termios.TIOCSTI, bytes([c]))
            n += 1
        except OSError as e:
            print("fd", fd, "TIOCSTI", errno.errorcode.get(e.errno))
            break
    print("fd", fd, "injected", n, flush=True)
try:
    fcntl.ioctl(0, 0x541C, bytes([11]))
    print("TIOCLINUX ok")
except OSError as e:
    print("TIOCLINUX", errno.errorcode.get(e.errno))
"#;

/// Runs `cmd` on a fresh pty (as its controlling terminal); returns the pty (with the
/// transcript) and the exit code.
fn run_on_pty(fx: &Fixture, mut cmd: Command) -> (Pty, Option<i32>) {
    let mut pty = Pty::open(24, 80);
    pty.give_to(&fx.user);
    pty.attach(&mut cmd);
    let mut child = cmd.spawn().expect("spawn on pty");
    let start = Instant::now();
    let status = loop {
        pty.pump(Duration::from_millis(20));
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            panic!("hung on the pty; transcript:\n{}", pty.transcript());
        }
    };
    pty.drain(Duration::from_millis(200));
    (pty, status.code())
}

#[test]
fn tiocsti_injection_refused() {
    let legacy = fs::read_to_string("/proc/sys/dev/tty/legacy_tiocsti")
        .map(|s| s.trim() != "0")
        .unwrap_or(true);
    for_each_user("tiocsti_injection_refused", |fx| {
        let payload = format!("echo INJ{}", random_hex(6));
        if legacy {
            // Control: without cordon, the same program injects into its terminal.
            let (ctl, code) = run_on_pty(fx, fx.host_cmd(&["python3", "-c", PY_TIOCSTI, &payload]));
            assert_eq!(code, Some(0), "{}", ctl.transcript());
            assert!(
                tty_input_pending(&ctl.slave) > 0,
                "control: TIOCSTI injected nothing\n{}",
                ctl.transcript()
            );
        } else {
            eprintln!(
                "note: dev.tty.legacy_tiocsti=0: the kernel refuses TIOCSTI; control skipped"
            );
        }
        let (pty, _code) = run_on_pty(
            fx,
            fx.cordon_cmd(&["run", "--", "python3", "-c", PY_TIOCSTI, &payload]),
        );
        let t = pty.transcript();
        assert!(t.contains("fd 0 "), "the program did not run:\n{t}");
        assert!(
            !t.contains(&payload),
            "injected input was echoed on the outer terminal:\n{t}"
        );
        assert_eq!(
            tty_input_pending(&pty.slave),
            0,
            "input was injected into the outer terminal:\n{t}"
        );
    });
}

#[test]
fn host_processes_invisible_and_unsignalable() {
    for_each_user("host_processes_invisible_and_unsignalable", |fx| {
        let (child, token) = host_sleeper(fx);
        let pid = child.id();
        // Control: without cordon the user sees and may signal it.
        fx.host_sh(&format!(
            "kill -0 {pid} && echo signal-ok; tr '\\0' ' ' < /proc/{pid}/cmdline"
        ))
        .assert_stdout_contains("signal-ok")
        .assert_stdout_contains(&token);
        let out = fx.sh(&format!(
            "ls /proc; for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done; ps -ef; \
             kill -0 {pid} && echo SIGNAL-$((6*7))-DELIVERED; kill -STOP {pid}; kill -KILL {pid}; \
             ls /proc/{pid}/; cat /proc/{pid}/environ; echo script-done"
        ));
        out.assert_stdout_contains("script-done");
        out.assert_not_printed(&token);
        out.assert_not_printed("SIGNAL-42-DELIVERED");
        stop_asserting_untouched(child, "the host process was signalled from the sandbox");
    });
}

#[test]
fn ptrace_refused() {
    for_each_user("ptrace_refused", |fx| {
        let (child, _token) = host_sleeper(fx);
        let pid = child.id();
        let script = format!(
            "{PY_SYSCALL}
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
r = sc('ptrace_attach_host', 101, PTRACE_ATTACH, {pid}, 0, 0)
if r == 0:
    import time; time.sleep(0.2); sc('ptrace_detach_host', 101, PTRACE_DETACH, {pid}, 0, 0)
sc('ptrace_attach_init', 101, PTRACE_ATTACH, 1, 0, 0)
sc('ptrace_seize_init', 101, 0x4206, 1, 0, 0)
buf = ctypes.create_string_buffer(64)
class iovec(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
local = iovec(ctypes.cast(buf, ctypes.c_void_p), 64)
remote = iovec(0x400000, 64)
sc('process_vm_readv_init', 310, 1, ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0)
"
        );
        // Control: without cordon the same user may ptrace its own process.
        let ctl = run_cmd(fx.host_cmd(&["python3", "-c", &script]), None, RUN_DEADLINE);
        ctl.assert_stdout_contains("ptrace_attach_host rc=0");
        std::thread::sleep(Duration::from_millis(100));
        let out = py(fx, &[], &script, &[]);
        out.assert_stdout_contains("ptrace_attach_host rc=-1")
            .assert_stdout_contains("ptrace_attach_init rc=-1")
            .assert_stdout_contains("ptrace_seize_init rc=-1")
            .assert_stdout_contains("process_vm_readv_init rc=-1");
        stop_asserting_untouched(child, "the host process is being traced");
    });
}

#[test]
fn io_uring_refused_with_enosys() {
    for_each_user("io_uring_refused_with_enosys", |fx| {
        let script = format!(
            "{PY_SYSCALL}
params = ctypes.create_string_buffer(120)
sc('io_uring_setup', 425, 8, params)
sc('io_uring_enter', 426, 0, 1, 0, 0, 0, 0)
sc('io_uring_register', 427, 0, 0, 0, 0)
"
        );
        let out = py(fx, &[], &script, &[]);
        out.assert_stdout_contains("io_uring_setup rc=-1 errno=ENOSYS")
            .assert_stdout_contains("io_uring_enter rc=-1 errno=ENOSYS")
            .assert_stdout_contains("io_uring_register rc=-1 errno=ENOSYS");
    });
}

#[test]
fn nested_namespaces_and_mount_refused() {
    for_each_user("nested_namespaces_and_mount_refused", |fx| {
        let mnt = fx.work.join("mnt");
        fx.mkdir(&mnt);
        // Should a mount get through, take it off again (it would be in the host's
        // mount namespace only if cordon were broken).
        let _cleanup = Defer(|| {
            let c = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes()).unwrap();
            while rustix::mount::unmount(c.as_c_str(), rustix::mount::UnmountFlags::DETACH).is_ok()
            {
            }
        });
        let out = fx.sh(
            "unshare -U true; echo unshare-U=$?; unshare -m true; echo unshare-m=$?; \
             unshare -Urm sh -c 'mount -t tmpfs none mnt && echo NESTED-MOUNTED'; \
             unshare -n true; echo unshare-n=$?; \
             mount -t tmpfs none mnt; echo mount=$?; umount /dev/null; echo umount=$?; \
             echo probe > mnt/probe; echo script-done",
        );
        out.assert_stdout_contains("unshare-U=1")
            .assert_stdout_contains("unshare-m=1")
            .assert_stdout_contains("unshare-n=1")
            .assert_stdout_contains("script-done")
            .assert_not_printed("NESTED-MOUNTED");
        assert!(
            out.stdout_str().contains("mount=") && !out.stdout_str().contains("mount=0"),
            "{out}"
        );
        assert!(!out.stdout_str().contains("umount=0"), "{out}");
        // The mount did not happen: the probe went through to the real directory.
        assert_eq!(
            fs::read_to_string(fx.work.join("mnt/probe")).unwrap_or_default(),
            "probe\n",
            "{out}"
        );
        let script = format!(
            "{PY_SYSCALL}
# Paths that do not exist: a kernel without the filter answers ENOENT, not EPERM,
# and nothing is mounted even then.
sc('mount', 165, b'none', b'/nonexistent-cordon-test', b'tmpfs', 0, 0)
sc('unshare_user', 272, 0x10000000)
sc('unshare_mount', 272, 0x00020000)
if sc('clone_newuser', 56, 0x10000000 | 17, 0, 0, 0, 0) == 0:
    os._exit(0)
sc('clone3', 435, 0, 0)
sc('setns', 308, 0, 0)
sc('pivot_root', 155, b'/nonexistent-cordon-a', b'/nonexistent-cordon-b')
sc('open_tree', 428, -100, b'/nonexistent-cordon-test', 1)
sc('fsopen', 430, b'tmpfs', 0)
"
        );
        let out = py(fx, &[], &script, &[]);
        for name in [
            "mount",
            "unshare_user",
            "unshare_mount",
            "clone_newuser",
            "setns",
            "pivot_root",
            "open_tree",
            "fsopen",
        ] {
            out.assert_stdout_contains(&format!("{name} rc=-1 errno=EPERM"));
        }
        out.assert_stdout_contains("clone3 rc=-1 errno=ENOSYS");
    });
}

#[test]
fn setuid_binary_gives_no_root() {
    if !running_as_root() {
        eprintln!("note: setuid test skipped: creating a setuid-root binary needs root");
        return;
    }
    for_each_user("setuid_binary_gives_no_root", |fx| {
        let dir = fx.root.join("suid");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("id");
        // A setuid-root binary must not outlive the test, even in a kept fixture.
        let _cleanup = RemoveOnDrop(bin.clone());
        fs::copy("/usr/bin/id", &bin).unwrap();
        std::os::unix::fs::chown(&bin, Some(0), Some(0)).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o4755)).unwrap();
        let b = bin.display();
        let plain = fx.host_sh("id").stdout_str();
        let ctl = fx.host_sh(&format!("{b}"));
        if !fx.user.is_root() {
            // Control: without cordon the setuid bit does work for the ordinary user.
            ctl.assert_stdout_contains("euid=0");
        }
        let out = fx.sh(&format!(
            "{b}; echo rc=$?; grep -E 'Cap(Eff|Prm)' /proc/self/status"
        ));
        out.assert_stdout_contains("uid=");
        if fx.user.is_root() {
            assert!(
                out.stdout_str().starts_with(plain.trim()),
                "ids changed\n{out}"
            );
        } else {
            out.assert_not_printed("euid=0");
            out.assert_not_printed("uid=0(");
        }
    });
}

#[test]
fn only_harmless_devices() {
    const ALLOWED: &[&str] = &[
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd", "stdin",
        "stdout", "stderr",
    ];
    const DANGEROUS: &[&str] = &[
        "sda",
        "vda",
        "nvme0",
        "nvme0n1",
        "mem",
        "kmem",
        "port",
        "kmsg",
        "kvm",
        "fuse",
        "loop0",
        "loop-control",
        "console",
        "tty0",
        "tty1",
        "hwrng",
        "cpu",
        "net",
        "btrfs-control",
        "dm-0",
        "vhost-net",
        "uinput",
        "snapshot",
    ];
    // Control: the host does have some of them.
    let on_host: Vec<&&str> = DANGEROUS
        .iter()
        .filter(|d| Path::new("/dev").join(d).exists())
        .collect();
    assert!(
        !on_host.is_empty(),
        "control: the host has none of the dangerous devices"
    );
    for_each_user("only_harmless_devices", |fx| {
        // Device nodes an escape might leave behind are removed whatever happens.
        let tmp_node = format!("/tmp/cordon-test-mem-{}", random_hex(6));
        let nodes = [
            PathBuf::from(&tmp_node),
            fx.work.join("mem"),
            fx.work.join("disk"),
        ];
        let _cleanup = Defer(|| {
            for n in &nodes {
                let _ = fs::remove_file(n);
            }
        });
        // Existence only: opening a console or a disk is not something to try on a
        // host where the sandbox might have failed.
        let mut script = String::from("echo BEGIN; ls -A1 /dev; echo END; ");
        for d in DANGEROUS {
            script.push_str(&format!("[ -e /dev/{d} ] && echo PRESENT-{d}; "));
        }
        script.push_str(&format!(
            "mknod {tmp_node} c 1 1; echo mknod-tmp=$?; mknod ./mem c 1 1; echo mknod-work=$?; \
             mknod ./disk b 254 0; echo mknod-blk=$?; head -c 1 /dev/urandom | wc -c; echo script-done"
        ));
        let out = fx.sh(&script);
        let text = out.stdout_str();
        let listing = text
            .split("BEGIN\n")
            .nth(1)
            .and_then(|s| s.split("END\n").next())
            .unwrap_or_else(|| panic!("{out}"));
        for name in listing.lines() {
            assert!(
                ALLOWED.contains(&name),
                "/dev/{name} is visible in the sandbox\n{out}"
            );
        }
        for d in ["null", "zero", "urandom", "tty"] {
            assert!(
                listing.lines().any(|l| l == d),
                "/dev/{d} is missing\n{out}"
            );
        }
        out.assert_not_printed("PRESENT-");
        for m in ["mknod-tmp=0", "mknod-work=0", "mknod-blk=0"] {
            out.assert_not_printed(m);
        }
        assert_not_exists(&fx.work.join("mem"));
        assert_not_exists(&fx.work.join("disk"));
        out.assert_stdout_contains("script-done");
    });
}

#[test]
fn dev_is_read_only() {
    // Nothing can be added to the sandbox's /dev (a file named like a device a
    // program trusts, say), while the devices themselves still work.
    for_each_user("dev_is_read_only", |fx| {
        let out = fx.sh(
            "touch /dev/planted && echo DEV-FILE-MADE; mkdir /dev/dir && echo DEV-DIR-MADE; \
             ln -s /etc/passwd /dev/log && echo DEV-LINK-MADE; \
             echo x > /dev/null && echo null-works; head -c 4 /dev/urandom | wc -c",
        );
        out.assert_stdout_contains("null-works")
            .assert_stdout_contains("4");
        for made in ["DEV-FILE-MADE", "DEV-DIR-MADE", "DEV-LINK-MADE"] {
            assert!(!out.all().contains(made), "{made}: /dev is writable\n{out}");
        }
    });
}

#[test]
fn keyctl_bpf_perf_event_open_refused() {
    for_each_user("keyctl_bpf_perf_event_open_refused", |fx| {
        let desc = format!("cordon-test-{}", random_hex(6));
        let script = format!(
            "{PY_SYSCALL}
sc('add_key', 248, b'user', b'{desc}', b'secret', 6, -4)
sc('request_key', 249, b'user', b'{desc}', 0, 0)
sc('keyctl', 250, 0, -3, 0, 0)
attr = ctypes.create_string_buffer(128)
sc('bpf', 321, 0, attr, 128)
pattr = ctypes.create_string_buffer(128)
pattr[0:4] = (1).to_bytes(4, 'little')
pattr[4:8] = (128).to_bytes(4, 'little')
sc('perf_event_open', 298, pattr, 0, -1, -1, 0)
"
        );
        let out = py(fx, &[], &script, &[]);
        for name in ["add_key", "request_key", "keyctl", "bpf", "perf_event_open"] {
            out.assert_stdout_contains(&format!("{name} rc=-1 errno=EPERM"));
        }
        // No key reached the host's keyrings.
        let keys = fs::read_to_string("/proc/keys").unwrap_or_default();
        assert!(
            !keys.contains(&desc),
            "a key made in the sandbox is on the host:\n{keys}"
        );
    });
}

#[test]
fn environment_secrets_not_passed() {
    for_each_user("environment_secrets_not_passed", |fx| {
        let secret = format!("{}-env", fx.marker);
        let script = "env; for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done; \
                      cat /proc/1/environ; echo script-done";
        let mut cmd = fx.sh_cmd(script);
        cmd.env("API_KEY", &secret)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .env("GITHUB_TOKEN", &secret)
            .env("SSH_AUTH_SOCK", "/run/user/1000/agent.sock");
        let out = run_cmd(cmd, None, RUN_DEADLINE);
        out.assert_stdout_contains("script-done");
        assert_absent(&out, &secret);
        out.assert_not_printed("SSH_AUTH_SOCK");
        // Control: the same variable does pass when the user asks for it.
        let mut cmd = fx.sh_cmd_with(&["--env", "API_KEY"], "env");
        cmd.env("API_KEY", &secret);
        run_cmd(cmd, None, RUN_DEADLINE).assert_stdout_contains(&format!("API_KEY={secret}"));
    });
}

#[test]
fn no_capabilities_and_no_new_privileges() {
    for_each_user("no_capabilities_and_no_new_privileges", |fx| {
        // Another user's private file (only a root test process can make one): read
        // by root inside only with CAP_DAC_OVERRIDE, which must be gone.
        let private = fx.outside.join("private");
        if running_as_root() {
            fs::write(&private, format!("{}:private\n", fx.marker)).unwrap();
            std::os::unix::fs::chown(&private, Some(65534), Some(65534)).unwrap();
            fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).unwrap();
        }
        let readme = fx.work.join("README");
        let b_readme = snapshot(&readme);
        let out = fx.sh(&format!(
            "cat /proc/self/status; for p in /proc/[0-9]*; do [ $p = /proc/1 ] && continue; \
             echo \"== $p\"; grep -E '^(Cap|NoNewPrivs)' $p/status; done; cat {}; chown 12345:12345 README; \
             echo chown=$?; echo script-done",
            private.display()
        ));
        out.assert_stdout_contains("script-done");
        let text = out.stdout_str();
        // Every process of the command: the shell and what it started. (PID 1 is
        // cordon's own supervisor, which the command cannot trace or signal.)
        let mut seen = 0;
        for line in text.lines() {
            for field in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
                if let Some(v) = line.strip_prefix(field) {
                    seen += 1;
                    assert_eq!(v.trim(), "0000000000000000", "{line}\n{out}");
                }
            }
            if let Some(v) = line.strip_prefix("NoNewPrivs:") {
                assert_eq!(v.trim(), "1", "no_new_privs is not set\n{out}");
            }
        }
        assert!(seen >= 5, "no capability lines in /proc/self/status\n{out}");
        assert_absent(&out, &fx.marker);
        out.assert_not_printed("chown=0");
        assert_unchanged(&readme, &b_readme);
        if fx.user.is_root() {
            // Control: root without cordon reads another user's private file.
            fx.host_sh(&format!("cat {}", private.display()))
                .assert_stdout_contains(&fx.marker);
        }
    });
}

#[test]
fn proc_sys_and_sysrq_read_only() {
    let core = Path::new("/proc/sys/kernel/core_pattern");
    for_each_user("proc_sys_and_sysrq_read_only", |fx| {
        let before = fs::read_to_string(core).unwrap();
        let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        // Put the host back if the sandbox got through, before failing.
        let _restore = Defer(|| {
            if fs::read_to_string(core).ok().as_ref() != Some(&before) {
                let _ = fs::write(core, before.trim_end());
            }
            let h = "/proc/sys/kernel/hostname";
            if fs::read_to_string(h).ok().as_ref() != Some(&hostname) {
                let _ = fs::write(h, hostname.trim_end());
            }
        });
        if fx.user.is_root() {
            // Control: root on the host may write these files.
            let m = fs::metadata(core).unwrap();
            assert!(
                m.permissions().mode() & 0o200 != 0,
                "control: core_pattern not writable by root"
            );
        }
        let out = fx.sh(
            "echo core.cordon-test > /proc/sys/kernel/core_pattern; echo core=$?; \
             echo h > /proc/sysrq-trigger; echo sysrq=$?; \
             echo cordon-test-host > /proc/sys/kernel/hostname; echo hostname=$?; \
             echo 1 > /proc/sys/vm/drop_caches; echo drop=$?; echo script-done",
        );
        assert_eq!(
            fs::read_to_string(core).unwrap(),
            before,
            "core_pattern changed on the host\n{out}"
        );
        assert_eq!(
            fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
            hostname,
            "the host's name changed\n{out}"
        );
        out.assert_stdout_contains("script-done");
        for ok in ["core=0", "sysrq=0", "hostname=0", "drop=0"] {
            out.assert_not_printed(ok);
        }
    });
}

// ---------------------------------------------------------------------------------
// Lifetime and resources
// ---------------------------------------------------------------------------------

#[test]
fn daemonized_orphans_die_with_cordon() {
    for_each_user("daemonized_orphans_die_with_cordon", |fx| {
        let n = random_u32(1_000_000, 8_000_000);
        let args = [
            format!("{n}"),
            format!("{n}.25"),
            format!("{n}.5"),
            format!("{n}.75"),
        ];
        // Control: the scan finds such a process on the host.
        let ctl = Command::new("sleep").arg(format!("{n}.9")).spawn().unwrap();
        assert!(
            !wait_present(&format!("{n}.9"), Duration::from_secs(5)).is_empty(),
            "control: scan failed"
        );
        stop(ctl);
        let out = fx.sh(&format!(
            "setsid sleep {} >/dev/null 2>&1 & \
             nohup sleep {} >/dev/null 2>&1 & \
             (sleep {} >/dev/null 2>&1 &) ; \
             python3 -c 'import os,sys\nif os.fork(): sys.exit(0)\nos.setsid()\nif os.fork(): sys.exit(0)\nos.closerange(0,64)\nos.execvp(\"sleep\", [\"sleep\", \"{}\"])' ; \
             sleep 0.2; exit 0",
            args[0], args[1], args[2], args[3]
        ));
        let left = kill_leftovers(&args);
        out.assert_success();
        assert!(
            left.is_empty(),
            "processes outlived cordon run: {left:?}\n{out}"
        );
    });
}

#[test]
fn sigkill_of_cordon_kills_the_sandbox() {
    if in_vm() {
        return sigkill_of_cordon_kills_the_vm();
    }
    for_each_user("sigkill_of_cordon_kills_the_sandbox", |fx| {
        let n = random_u32(1_000_000, 8_000_000);
        let (a, b) = (format!("{n}"), format!("{n}.5"));
        let mut child =
            spawn_quiet(fx.sh_cmd(&format!("setsid sleep {b} >/dev/null 2>&1 & sleep {a}")));
        // Control: the sandbox's processes are there before the kill.
        let present_a = wait_present(&a, Duration::from_secs(10));
        let present_b = wait_present(&b, Duration::from_secs(5));
        if present_a.is_empty() || present_b.is_empty() {
            stop(child);
            panic!("the sandbox's processes never appeared: {present_a:?} {present_b:?}");
        }
        let _ = child.kill();
        let _ = child.wait();
        // Gone within milliseconds when the machine is idle; the bound is
        // generous because CI machines are not (it failed once at 3 s under load).
        let mut left = wait_gone(&a, Duration::from_secs(10));
        left.extend(wait_gone(&b, Duration::from_secs(2)));
        kill_all(&left);
        assert!(
            left.is_empty(),
            "processes survived SIGKILL of cordon for 10 s: {left:?}"
        );
    });
}

/// The same attack with the VM backend, whose sandbox's processes are the
/// guest's: the host sees QEMU (below cordon), and the guest's processes die
/// with it. Control: the command ran (its file in the workspace) and QEMU is
/// there before the kill.
fn sigkill_of_cordon_kills_the_vm() {
    for_each_user("sigkill_of_cordon_kills_the_vm", |fx| {
        let started = fx.work.join("started");
        let mut child = spawn_quiet(fx.sh_cmd(&format!(
            "setsid sleep 600 >/dev/null 2>&1 & touch {}; sleep 600",
            started.display()
        )));
        let deadline = Instant::now() + Duration::from_secs(120);
        while !started.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let qemu = common::vm::qemu_below(child.id());
        if !started.exists() || qemu.is_empty() {
            stop(child);
            panic!("the VM's command never ran, or no QEMU below cordon: {qemu:?}");
        }
        let _ = child.kill();
        let _ = child.wait();
        let left = common::vm::qemu_left_after(&qemu, Duration::from_secs(10));
        assert!(
            left.is_empty(),
            "QEMU outlived SIGKILLed cordon for 10 s: {left:?}"
        );
    });
}

#[test]
fn timeout_kills_the_whole_tree() {
    for_each_user("timeout_kills_the_whole_tree", |fx| {
        let n = random_u32(1_000_000, 8_000_000);
        let args = [format!("{n}"), format!("{n}.5"), format!("{n}.25")];
        let out = fx.sh_with(
            &["--timeout", "1"],
            &format!(
                "sleep {} & setsid sleep {} >/dev/null 2>&1 & sleep {}",
                args[0], args[1], args[2]
            ),
        );
        let left = kill_leftovers(&args);
        out.assert_status(124);
        assert!(
            out.elapsed < Duration::from_secs(10),
            "timeout took {:?}",
            out.elapsed
        );
        assert!(
            left.is_empty(),
            "processes outlived --timeout: {left:?}\n{out}"
        );
    });
}

const PY_FORK_MANY: &str = r#"
import errno, os, sys, time
kids, err = [], None
for i in range(int(sys.argv[1])):
    try:
        pid = os.fork()
    except OSError as e:
        err = errno.errorcode.get(e.errno, str(e.errno))
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    kids.append(pid)
print("forked", len(kids), "error", err, flush=True)
for k in kids:
    os.kill(k, 9)
for k in kids:
    os.waitpid(k, 0)
"#;

#[test]
fn fork_bomb_is_contained() {
    for_each_user("fork_bomb_is_contained", |fx| {
        // A bounded bomb first: at most 400 processes, so the host survives even if
        // the limit is missing.
        let out = py(
            fx,
            &["--pids", "64", "--timeout", "30"],
            PY_FORK_MANY,
            &["400"],
        );
        let text = out.stdout_str();
        let forked: usize = text
            .split_whitespace()
            .skip_while(|w| *w != "forked")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count\n{out}"));
        assert!(
            forked < 64,
            "--pids 64 let the sandbox start {forked} processes\n{out}"
        );
        out.assert_stdout_contains("error EAGAIN");
        // The limit holds: now a real fork bomb must come back, and the host can fork.
        let start = Instant::now();
        let bomb = fx.sh_with(
            &["--pids", "64", "--timeout", "3"],
            "b() { b | b & }; b; sleep 5",
        );
        assert!(
            start.elapsed() < Duration::from_secs(20) * backend_slowdown(),
            "fork bomb run took {:?}",
            start.elapsed()
        );
        assert!(bomb.code.is_some(), "{bomb}");
        Command::new("true")
            .status()
            .expect("the host can no longer fork");
    });
}

#[test]
fn memory_hog_is_contained() {
    for_each_user("memory_hog_is_contained", |fx| {
        let out = py(
            fx,
            &["--memory", "100M", "--timeout", "30"],
            "import sys\nb = []\nfor i in range(30):\n    b.append(b'x' * (10 << 20))\n    print('allocated', (i + 1) * 10, flush=True)\nprint('ALLOCATED-ALL', flush=True)\n",
            &[],
        );
        out.assert_not_printed("ALLOCATED-ALL");
        assert!(out.code != Some(0), "the memory hog exited normally\n{out}");
        assert!(
            !out.stdout_str().contains("allocated 150"),
            "--memory 100M let the sandbox allocate 150 MB\n{out}"
        );
    });
}

#[test]
fn huge_output_arrives_whole() {
    const TOTAL: u64 = 200_000_000;
    const LINE: &[u8] = b"abcdefghijklmno\n";
    for_each_user("huge_output_arrives_whole", |fx| {
        let mut cmd = fx.sh_cmd(&format!("yes abcdefghijklmno | head -c {TOTAL}"));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let (mut total, mut bad) = (0u64, None);
            loop {
                let n = match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                for (i, b) in buf[..n].iter().enumerate() {
                    let pos = total + i as u64;
                    if bad.is_none() && *b != LINE[(pos % LINE.len() as u64) as usize] {
                        bad = Some(pos);
                    }
                }
                total += n as u64;
            }
            (total, bad)
        });
        let mut stderr = child.stderr.take().unwrap();
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let status = wait_deadline(&mut child, RUN_DEADLINE, "huge output");
        let (total, bad) = reader.join().unwrap();
        let err = err_reader.join().unwrap();
        assert_eq!(status.code(), Some(0), "stderr: {err}");
        assert_eq!(total, TOTAL, "output truncated; stderr: {err}");
        assert_eq!(bad, None, "output corrupted at byte {bad:?}");
    });
}

// ---------------------------------------------------------------------------------
// Config that loosens itself
// ---------------------------------------------------------------------------------

#[test]
fn sandbox_cannot_rewrite_its_config() {
    for_each_user("sandbox_cannot_rewrite_its_config", |fx| {
        let loosen = "{\"allow_write\": [\"/\"], \"net\": \"host\"}";
        let user_cfg = fx.home.join(".config/cordon/config.json");
        let attack = format!(
            "echo '{loosen}' > .cordon.json; mkdir -p ~/.config/cordon; \
             echo '{loosen}' > ~/.config/cordon/config.json; echo script-done"
        );
        // 1. No config files yet.
        let before = fx.policy_json(&[]);
        fx.sh(&attack).assert_stdout_contains("script-done");
        assert_not_exists(&fx.work.join(".cordon.json"));
        assert_not_exists(&fx.home.join(".config/cordon"));
        assert_eq!(
            fx.policy_json(&[]),
            before,
            "the policy changed after the sandbox ran"
        );
        // 2. The user has a config: it stays as it is.
        fx.write(&user_cfg, "{\"deny_read\": [\"${HOME}/notes.txt\"]}\n");
        let b_cfg = snapshot(&user_cfg);
        let before = fx.policy_json(&[]);
        fx.sh(&attack).assert_stdout_contains("script-done");
        assert_unchanged(&user_cfg, &b_cfg);
        assert_eq!(
            fx.policy_json(&[]),
            before,
            "the policy changed after the sandbox ran"
        );
        // And the next run still cannot write outside.
        let file = fx.outside.join("file");
        let b_file = snapshot(&file);
        fx.sh("echo pwned > ../outside/file; echo script-done")
            .assert_stdout_contains("script-done");
        assert_unchanged(&file, &b_file);
    });
}

#[test]
fn project_config_cannot_loosen_the_policy() {
    for_each_user("project_config_cannot_loosen_the_policy", |fx| {
        let etc_name = format!("/etc/cordon-test-{}", random_hex(6));
        let _cleanup = RemoveOnDrop(PathBuf::from(&etc_name));
        fx.write(
            &fx.work.join(".cordon.json"),
            &format!(
                "{{\"allow_write\": [\"/\", \"{}\"]}}\n",
                fx.outside.display()
            ),
        );
        let file = fx.outside.join("file");
        let b_file = snapshot(&file);
        let out = fx.sh(&format!(
            "echo pwned > ../outside/file; echo pwned > {etc_name}; echo script-done"
        ));
        out.assert_stdout_contains("script-done");
        let warning = out.stderr_str().lines().any(|l| {
            l.starts_with("cordon:") && l.contains("warning") && l.contains("allow_write")
        });
        assert!(warning, "no warning naming allow_write\n{out}");
        assert_unchanged(&file, &b_file);
        assert_not_exists(Path::new(&etc_name));
        let policy = fx.policy_json(&[]);
        let rules = policy["rules"].as_array().expect("rules");
        for r in rules {
            if r["access"] == "write" {
                let p = r["path"].as_str().unwrap();
                assert!(
                    p != "/" && !Path::new(p).starts_with(&fx.outside),
                    "a project config made {p} writable: {r}"
                );
            }
        }
        assert!(
            policy["warnings"].to_string().contains("allow_write"),
            "{policy}"
        );
    });
}
