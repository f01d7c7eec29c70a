//! `cordon run --backend vm` for real: QEMU (TCG here) in an OS sandbox of the
//! policy, the guest's root the sandbox's view served by virtiofsd or over 9p (docs/vm.md).
//!
//! Every test asserts an effect on the host, as root and as an ordinary user,
//! with a positive control. Each `cordon run --backend vm` boots a VM (2–5 s
//! under TCG), so the checks of one boot are gathered in one script; seventeen boots
//! in all. The boot files are assembled once per user into a cache shared by
//! the tests (`$XDG_CACHE_HOME`). Skipped, saying why, without QEMU or a kernel.

use crate::common;

use common::vm::*;
use common::*;
use cordon_vm::backend::UNCONFINED_GUEST_FOR_TESTS;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn vm_sh(fx: &Fixture, opts: &[&str], script: &str) -> Output {
    run_cmd(vm_cmd(fx, opts, script), None, Duration::from_secs(120))
}

/// The guest's file system is the OS backend's view, enforced on the host:
/// the workspace writable at its host path, the home and the rest read-only, a
/// secret unreadable, whatever the guest (root, when cordon runs as root) does
/// to its own mounts and devices. The command runs unconfined here
/// ([`UNCONFINED_GUEST_FOR_TESTS`]: guest root with every capability, as after
/// an exploit of the guest's kernel) so that the layer beneath the
/// confinement is what is tested. Output streams and the exit status pass
/// through; the VM has the memory and vCPUs the policy gives it. A `--mount`
/// at a path the host lacks (so the view's root is a mirror of `/`) shows its
/// files, read-only. Over either share: virtiofs (virtiofsd beside QEMU) and
/// 9p (QEMU's own server). Positive controls: the same writes without cordon
/// succeed, and the write into the workspace does.
#[test]
fn the_guest_sees_the_policys_view_and_changes_nothing_else() {
    if let Some(why) = missing() {
        return eprintln!("skipped: {why}");
    }
    for share in shares() {
        the_guest_sees_the_view_over(share);
    }
}

fn the_guest_sees_the_view_over(share: &str) {
    for_each_user(&format!("vm-view-{share}"), |fx| {
        let name = fx.root.file_name().unwrap().to_string_lossy().into_owned();
        let etc = PathBuf::from(format!("/etc/cordon-{name}"));
        let mounted = format!("/cordon-mounted-{name}");
        let _cleanup = Defer(|| {
            let _ = fs::remove_file(&etc);
        });
        let script = format!(
            r#"
            W={work}; H={home}; O={outside}; E={etc}; M={mounted}
            echo inside > "$W/inside"
            echo "mounted: $(cat "$M/shown")"
            echo x > "$M/vm-m" && echo "WROTE $M/vm-m"
            echo "pwd=$(pwd) home=$HOME uid=$(id -u)"
            echo to-stderr >&2
            for f in "$H/vm-x" "$O/vm-x" "$E"; do echo x > "$f" && echo "WROTE $f"; done
            cat "$H/.ssh/id_rsa" "$H/.aws/credentials"
            echo "blocks=$(ls /sys/class/block | wc -l)"
            echo "cpus=$(nproc) mem=$(awk '/MemTotal/ {{print $2}}' /proc/meminfo)"
            ls /dev | grep -E '^(vd|sd|hd|nvme|mmcblk)' && echo "A DISK"
            # As guest root: a device node in the workspace (/dev/mem's numbers),
            # the view's mounts undone, the share remounted, the host's files
            # chmodded.
            mknod "$W/mem" c 1 1
            chmod 777 "$H" "$O"
            echo "rootfs=$(awk '$2 == "/" {{ fs = $3 }} END {{ print fs }}' /proc/mounts)"
            mount -o remount,rw / ; umount -l /sys ; umount -l /dev ; umount -l /proc
            # Beneath the guest's own: what the host serves there (nothing).
            [ "$(id -u)" = 0 ] && echo "served: proc=$(ls -A /proc | wc -l) sys=$(ls -A /sys | wc -l) dev=$(ls -A /dev | wc -l)"
            mkdir -p /tmp/m && {{ mount -t 9p -o trans=virtio,version=9p2000.L cordon-root /tmp/m ||
                mount -t virtiofs cordon-root /tmp/m; }} &&
                {{ echo y > "/tmp/m$O/vm-y" && echo "WROTE via remount"; cat "/tmp/m$H/.ssh/id_rsa"; }}
            for f in "$H/vm-z" "$O/vm-z" "$E"; do echo x > "$f" && echo "WROTE $f"; done
            exit 7
            "#,
            work = fx.work.display(),
            home = fx.home.display(),
            outside = fx.outside.display(),
            etc = etc.display(),
            mounted = mounted,
        );
        fx.write(&fx.outside.join("shown"), "from-outside\n");
        let mount = format!("{}:{mounted}:ro", fx.outside.display());
        let modes = [&fx.home, &fx.outside].map(|p| fs::metadata(p).unwrap().mode());
        let opts = ["--vm-memory", "384M", "--vm-cpus", "1", "--mount", &mount];
        let mut cmd = vm_cmd(fx, &opts, &script);
        cmd.env(UNCONFINED_GUEST_FOR_TESTS, "1")
            .env(cordon_vm::share::SHARE_ENV, share);
        let out = run_cmd(cmd, None, Duration::from_secs(120));
        out.assert_status(7)
            .assert_stderr_contains("the command runs unconfined in the guest");
        // The share asked for is the one served.
        out.assert_stdout_contains(&format!("rootfs={share}"));
        // Streams, working directory, environment and user: the host's.
        out.assert_stderr_contains("to-stderr");
        out.assert_stdout_contains(&format!(
            "pwd={} home={} uid={}",
            fx.work.display(),
            fx.home.display(),
            fx.user.uid
        ));
        // The positive control inside: the workspace takes the write, as the user.
        let inside = fx.work.join("inside");
        assert_eq!(fs::read_to_string(&inside).unwrap(), "inside\n", "{out}");
        assert_eq!(fs::metadata(&inside).unwrap().uid(), fx.user.uid);
        out.assert_stdout_contains("mounted: from-outside");
        // Nothing else changed on the host.
        assert!(!out.stdout_str().contains("WROTE"), "{out}");
        assert_not_exists(&PathBuf::from(&mounted));
        for name in ["vm-x", "vm-y", "vm-z", "vm-m"] {
            assert_not_exists(&fx.home.join(name));
            assert_not_exists(&fx.outside.join(name));
        }
        assert_not_exists(&etc);
        let node = fs::symlink_metadata(fx.work.join("mem"));
        assert!(
            !node.is_ok_and(|m| m.file_type().is_char_device()),
            "the guest made a device node on the host\n{out}"
        );
        let after = [&fx.home, &fx.outside].map(|p| fs::metadata(p).unwrap().mode());
        assert_eq!(modes, after, "the guest changed a host directory's mode");
        out.assert_not_printed(&fx.marker);
        out.assert_stdout_contains("blocks=0");
        if fx.user.is_root() {
            // Guest root sees the served tree beneath its own /proc, /sys and
            // /dev: empty, so never QEMU's /proc (its /proc/self/mem).
            out.assert_stdout_contains("served: proc=0 sys=0 dev=0");
        }
        // The VM's resources are the policy's (the kernel keeps some memory).
        out.assert_stdout_contains("cpus=1 mem=");
        let mem: u64 = (out.stdout_str().split("mem=").nth(1))
            .and_then(|m| m.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        assert!(
            (300 << 10..=384 << 10).contains(&mem),
            "MemTotal {mem} KiB\n{out}"
        );
        assert!(!out.stdout_str().contains("A DISK"), "{out}");
        // The positive control outside: without cordon the same writes succeed.
        let control = fx.host_sh(&format!(
            "echo x > {h}/vm-x && echo x > {o}/vm-x && cat {h}/.ssh/id_rsa",
            h = fx.home.display(),
            o = fx.outside.display()
        ));
        control.assert_success().assert_stdout_contains(&fx.marker);
        assert!(fx.home.join("vm-x").exists() && fx.outside.join("vm-x").exists());
        if fx.user.is_root() {
            fs::write(&etc, "x").expect("root writes /etc without cordon");
        }
    });
}

/// The command in the guest is confined as the OS backend confines its own:
/// no capabilities (the bounding set empty too, for any user), no_new_privs, the
/// policy's seccomp filter, its process limit (`--pids`, a cgroup of the
/// guest's), and a read-only `/dev` of the harmless devices, a read-only
/// `/proc/sys` and `/sys`. So guest root cannot undo its mounts,
/// make device nodes or write the guest kernel's settings. Positive control:
/// the same script unconfined ([`UNCONFINED_GUEST_FOR_TESTS`]) does all of it
/// as guest root, and has no filter and no process limit as any user. The
/// command starts with no signal blocked (a shell's `cmd & wait` hung when it
/// inherited the agent's blocked SIGCHLD).
#[test]
fn the_guest_command_is_confined_as_on_the_host() {
    if let Some(why) = missing() {
        return eprintln!("skipped: {why}");
    }
    // First, before anything clears the shell's mask: a background job waited
    // for (dash sleeps in sigsuspend, which needs SIGCHLD unblocked).
    const SCRIPT: &str = r#"
        sleep 1 & wait; echo background-waited
        grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp|SigBlk):' /proc/self/status | tr -d ' \t'
        mknod /dev/shm/mem c 1 1 && echo MADE-NODE
        touch /dev/planted && echo DEV-WRITTEN
        echo 1 > /proc/sys/vm/drop_caches && echo SYSCTL-WRITTEN
        mount -o remount,rw /sys && echo SYS-REMOUNTED
        echo "masked $(cat /proc/interrupts | wc -c) $(ls /sys/firmware | wc -l)"
        umount /proc/interrupts /sys/firmware
        echo "unmasked $(cat /proc/interrupts | wc -c) $(ls /sys/firmware | wc -l)"
        umount -l /proc && echo PROC-UNMOUNTED
        ls /dev | tr '\n' ' '; echo
        echo x > /dev/null && echo null-works
        python3 -c '
import os, time
kids, err = [], None
for i in range(40):
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    kids.append(pid)
print("forked", len(kids), "eagain" if err == 11 else err)
for k in kids:
    os.kill(k, 9)
    os.waitpid(k, 0)
'
    "#;
    for_each_user("vm-confined", |fx| {
        let root = fx.user.is_root();
        // --pids 16: the guest's processes are counted in the guest.
        let confined = vm_sh(fx, &["--pids", "16"], SCRIPT);
        confined.assert_success();
        let forked: usize = (confined.stdout_str().split("forked ").nth(1))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no count\n{confined}"));
        assert!(
            forked < 16,
            "--pids 16 let {forked} processes start\n{confined}"
        );
        confined.assert_stdout_contains("eagain");
        for line in [
            "background-waited",
            "SigBlk:0000000000000000",
            "CapEff:0000000000000000",
            "CapBnd:0000000000000000",
            "NoNewPrivs:1",
            "Seccomp:2",
            // The OS backend's masks, in the guest's /proc and /sys.
            "masked 0 0",
            "unmasked 0 0",
        ] {
            confined.assert_stdout_contains(line);
        }
        for made in [
            "MADE-NODE",
            "DEV-WRITTEN",
            "SYSCTL-WRITTEN",
            "SYS-REMOUNTED",
            "PROC-UNMOUNTED",
        ] {
            assert!(
                !confined.stdout_str().contains(made),
                "{made}: the confined command did it\n{confined}"
            );
        }
        confined.assert_stdout_contains("null-works");
        let stdout = confined.stdout_str();
        let devices: Vec<&str> = (stdout.lines())
            .find(|l| l.contains("urandom"))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        for device in &devices {
            assert!(
                [
                    "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd",
                    "stdin", "stdout", "stderr"
                ]
                .contains(device),
                "/dev/{device} in the guest's view\n{confined}"
            );
        }
        // The positive control: unconfined, the same script gets through (as
        // guest root) and runs without a filter.
        let mut cmd = vm_cmd(fx, &["--pids", "16"], SCRIPT);
        cmd.env(UNCONFINED_GUEST_FOR_TESTS, "1");
        let control = run_cmd(cmd, None, Duration::from_secs(120));
        control
            .assert_success()
            .assert_stdout_contains("Seccomp:0")
            .assert_stdout_contains("forked 40 None");
        if root {
            for made in ["MADE-NODE", "SYS-REMOUNTED", "PROC-UNMOUNTED"] {
                control.assert_stdout_contains(made);
            }
            // Unmasked, the guest kernel's entries are not empty.
            let unmasked = (control.stdout_str().lines())
                .find_map(|l| l.strip_prefix("unmasked "))
                .map(str::to_string)
                .unwrap_or_default();
            assert!(
                !unmasked.starts_with("0 "),
                "the control's /proc/interrupts is empty unmasked\n{control}"
            );
        }
    });
}

/// `--memory` holds in the guest, for what the command allocates, writes to
/// the guest's tmpfs `/dev/shm` and to its `/tmp` (the host's private tmpfs
/// served to it); a command killed for it gets the OS backend's message and
/// status. Positive control: without the limit, each of them gets it all.
#[test]
fn the_memory_limit_holds_in_the_guest() {
    if let Some(why) = missing() {
        return eprintln!("skipped: {why}");
    }
    // Each attack in a child the OOM killer picks first, whose files the
    // parent (already running, so needing no new memory) removes; then the
    // parent itself allocates.
    const PY: &str = r#"
import os
mib = 96
chunk = b"x" * (1 << 20)
def fill(path):
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(chunk)
        f.flush()
for name, path in [("SHM", "/dev/shm/hog"), ("TMP", "/tmp/hog")]:
    pid = os.fork()
    if pid == 0:
        try:
            open("/proc/self/oom_score_adj", "w").write("1000")
            fill(path)
        except BaseException:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    try:
        os.unlink(path)
    except OSError:
        pass
    print(name + ("-FILLED" if status == 0 else "-STOPPED"), flush=True)
b = bytearray(mib << 20)
for i in range(0, len(b), 4096):
    b[i] = 1
print("ALLOCATED", flush=True)
"#;
    let run = |fx: &Fixture, opts: &[&str]| {
        let mut args = vec!["run", "--backend", "vm"];
        args.extend_from_slice(opts);
        args.extend_from_slice(&["--", "python3", "-c", PY]);
        let mut cmd = fx.cordon_cmd(&args);
        cmd.env("XDG_CACHE_HOME", cache(fx));
        run_cmd(cmd, None, Duration::from_secs(120))
    };
    for_each_user("vm-memory", |fx| {
        let control = run(fx, &[]);
        control.assert_success();
        for done in ["SHM-FILLED", "TMP-FILLED", "ALLOCATED"] {
            control.assert_stdout_contains(done);
        }
        let limited = run(fx, &["--memory", "48M"]);
        for stopped in ["SHM-STOPPED", "TMP-STOPPED"] {
            limited.assert_stdout_contains(stopped);
        }
        limited
            .assert_not_printed("ALLOCATED")
            .assert_status(128 + libc::SIGKILL)
            .assert_stderr_contains("reached its memory limit (--memory 48M)");
        let policy = fx.cordon(&["policy", "--backend", "vm", "--memory", "48M"]);
        policy.assert_stdout_contains("memory.max of a cgroup v2 in the guest");
    });
}

/// `--vm-kernel FILE` boots the kernel named: a copy of the installed one,
/// elsewhere, boots and says its release (its modules found by the release
/// its header names); a file that is no kernel is refused before QEMU starts,
/// naming the file and the fix, with status 125.
#[test]
fn the_kernel_a_user_names_is_booted() {
    if let Some(why) = missing() {
        return eprintln!("skipped: {why}");
    }
    let user = users().pop().unwrap();
    let fx = Fixture::new(&user, "vm-kernel");
    let installed = cordon_vm::image::find_kernel(None).unwrap();
    let copy = fx.root.join("my-vmlinuz");
    fs::copy(&installed.image, &copy).unwrap();
    let garbage = fx.root.join("not-a-kernel");
    fs::write(&garbage, vec![0x5a; 64 << 10]).unwrap();
    fx.chown_tree(&fx.root);
    let copy_flag = copy.display().to_string();
    let out = vm_sh(&fx, &["--vm-kernel", &copy_flag], "uname -r");
    out.assert_success()
        .assert_stdout_contains(&installed.release.unwrap_or_default());
    let garbage_flag = garbage.display().to_string();
    let out = vm_sh(&fx, &["--vm-kernel", &garbage_flag], "echo RAN");
    out.assert_status(125)
        .assert_stderr_contains(&format!("the kernel: {garbage_flag}: neither a bzImage"))
        .assert_stderr_contains("--vm-kernel");
    out.assert_not_printed("RAN");
}

/// A signal's death is 128+N, a missing program 127, as with the OS backend;
/// `--allow-write` makes a path outside the workspace writable in the guest too;
/// a signal sent to cordon reaches the command in the guest (which traps it and
/// exits 42), and one sent while the VM boots ends the run as 128+N.
#[test]
fn exit_statuses_signals_and_allow_write_pass_through() {
    if let Some(why) = missing() {
        return eprintln!("skipped: {why}");
    }
    let user = users().pop().unwrap();
    let fx = Fixture::new(&user, "vm-status");
    let outside = fx.outside.display().to_string();
    let out = vm_sh(
        &fx,
        &["--allow-write", &outside],
        &format!("echo y > {outside}/allowed; kill -9 $$"),
    );
    out.assert_status(137);
    assert_eq!(
        fs::read_to_string(fx.outside.join("allowed")).unwrap(),
        "y\n",
        "{out}"
    );
    let out = run_cmd(
        {
            let mut cmd = fx.cordon_cmd(&["run", "--backend", "vm", "--", "no-such-program"]);
            cmd.env("XDG_CACHE_HOME", cache(&fx));
            cmd
        },
        None,
        Duration::from_secs(120),
    );
    out.assert_status(127)
        .assert_stderr_contains("no-such-program");

    let started = fx.work.join("started");
    let mut cmd = vm_cmd(
        &fx,
        &[],
        &format!(
            "trap 'echo trapped; exit 42' INT; touch {}; while :; do sleep 0.1; done",
            started.display()
        ),
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let cordon = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !started.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = rustix::process::Pid::from_raw(cordon.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let out = cordon.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(42), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "trapped\n");

    // Once QEMU runs (cordon passes signals on from then; before, SIGTERM ends
    // cordon itself, which has started nothing yet): the guest is booting, or,
    // on a fast machine, sleep already runs; 143 either way.
    let mut cmd = vm_cmd(&fx, &[], "sleep 100");
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut cordon = cmd.spawn().unwrap();
    wait_for_qemu_below(cordon.id(), Duration::from_secs(60));
    let pid = rustix::process::Pid::from_raw(cordon.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let waited = Instant::now();
    assert_eq!(cordon.wait().unwrap().code(), Some(143));
    assert!(
        waited.elapsed() < Duration::from_secs(20),
        "{:?}",
        waited.elapsed()
    );
}

/// cordon's stdin, when not a terminal, is the command's: 3 MB hashed in the
/// guest as on the host, to its end; and a shell reads its script from it
/// (`cordon shell` without a terminal).
#[test]
fn piped_stdin_reaches_the_command() {
    if let Some(why) = missing() {
        return eprintln!("skipped: {why}");
    }
    let user = users().pop().unwrap();
    let fx = Fixture::new(&user, "vm-stdin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let on_host = {
        let mut cmd = Command::new("sha256sum");
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        let copy = data.clone();
        let feeder = std::thread::spawn(move || {
            use std::io::Write;
            input.write_all(&copy).unwrap();
        });
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run_cmd(
        vm_cmd(&fx, &[], "sha256sum; wc -c"),
        Some(data),
        Duration::from_secs(120),
    );
    out.assert_success().assert_stdout_contains(&on_host);
    // All of it hashed, nothing left for wc.
    out.assert_stdout_contains("\n0\n");

    let marker = fx.work.join("from-shell");
    let mut cmd = fx.cordon_cmd(&["shell", "--backend", "vm"]);
    cmd.env("XDG_CACHE_HOME", cache(&fx))
        .env("SHELL", "/bin/sh");
    let script = format!(
        "echo in-the-vm $(id -u)\ntouch {}\nexit 3\n",
        marker.display()
    );
    let out = run_cmd(cmd, Some(script.into_bytes()), Duration::from_secs(120));
    out.assert_status(3)
        .assert_stdout_contains(&format!("in-the-vm {}", fx.user.uid));
    assert!(marker.exists(), "{out}");
}

/// `cordon serve --backend vm`: the tool server (cordon's own binary, the
/// guest agent's) runs in the guest and its tool calls see the same view: a
/// file made in the workspace appears on the host, one outside does not (the
/// same write without cordon does); `status` names the VM.
#[test]
fn serve_runs_its_tool_calls_in_the_vm() {
    if let Some(why) = missing() {
        return eprintln!("skipped: {why}");
    }
    let user = users().pop().unwrap();
    let fx = Fixture::new(&user, "vm-serve");
    let mut cmd = fx.cordon_cmd(&["serve", "--backend", "vm"]);
    cmd.env("XDG_CACHE_HOME", cache(&fx));
    let mut serve = common::serve::Session::spawn(cmd);
    let (reply, stdout) = serve.exec(&format!(
        "echo made > made; id -u; uname -r; echo x > {}/vm-serve || exit 9",
        fx.home.display()
    ));
    assert_eq!(reply["result"]["exitCode"], 9, "{reply}");
    let kernel = cordon_vm::image::find_kernel(None).unwrap();
    assert_eq!(
        stdout,
        format!("{}\n{}\n", fx.user.uid, kernel.release.unwrap_or_default())
    );
    assert_eq!(fs::read_to_string(fx.work.join("made")).unwrap(), "made\n");
    assert_not_exists(&fx.home.join("vm-serve"));
    let status = serve.ok("status", serde_json::json!({}));
    assert_eq!(status["backend"], "vm", "{status}");
    assert!(["tcg", "kvm"].contains(&status["layers"]["vm"].as_str().unwrap_or("")));
    assert!(serve.close().success());
    fx.host_sh(&format!("echo x > {}/vm-serve", fx.home.display()))
        .assert_success();
}

/// `cordon shell --backend vm` on a terminal: bash on a pseudo-terminal in the
/// guest, of the host terminal's size, Ctrl-C interrupting its foreground
/// command there, its exit status cordon's; and the host terminal's mode given
/// back afterwards (canonical, echoing).
#[test]
fn an_interactive_shell_has_a_terminal_in_the_vm() {
    if let Some(why) = missing() {
        return eprintln!("skipped: {why}");
    }
    let user = users().pop().unwrap();
    let fx = Fixture::new(&user, "vm-tty");
    fx.write(
        &fx.home.join(".bashrc"),
        "PS1='VM$ '\nunset HISTFILE PROMPT_COMMAND\nbind 'set enable-bracketed-paste off' 2>/dev/null\n",
    );
    let mut cmd = fx.cordon_cmd(&["shell", "--backend", "vm"]);
    cmd.env("XDG_CACHE_HOME", cache(&fx))
        .env("SHELL", "/bin/bash");
    let mut term = Terminal::start(cmd, &fx.user, "VM$ ", Duration::from_secs(120));
    term.line("echo $((6*7)) $(id -u); tty; stty size");
    term.expect(&format!("42 {}", fx.user.uid));
    term.expect("/dev/pts/");
    term.expect("24 80");
    term.prompt();
    term.line("sleep 100");
    std::thread::sleep(Duration::from_millis(500));
    term.pty.send(b"\x03");
    term.prompt();
    term.line("exit 5");
    let status = wait_deadline(&mut term.child, Duration::from_secs(30), "cordon shell");
    assert_eq!(status.code(), Some(5), "{}", term.transcript());
    let mode = rustix::termios::tcgetattr(&term.pty.slave).unwrap();
    use rustix::termios::LocalModes;
    assert!(
        mode.local_modes
            .contains(LocalModes::ICANON | LocalModes::ECHO),
        "the terminal was left raw"
    );
}

/// What the VM backend does not do is refused with status 69 before any VM
/// starts, never run without it: `--net host` (no unfiltered network device;
/// the guest's network is the broker's, vm_net.rs). Positive control: the OS
/// backend runs the same command.
#[test]
fn a_network_is_refused_not_left_open() {
    for_each_user("vm-net", |fx| {
        let out = fx.cordon(&[
            "run",
            "--backend",
            "vm",
            "--net",
            "host",
            "--",
            "touch",
            "ran",
        ]);
        out.assert_status(69).assert_stderr_contains(
            "cordon: the vm backend has no --net host (set by flag --net): the guest's only way \
             out is the egress broker",
        );
        assert_not_exists(&fx.work.join("ran"));
        fx.cordon(&[
            "run",
            "--backend",
            "os",
            "--net",
            "host",
            "--",
            "touch",
            "ran",
        ])
        .assert_success();
        assert!(fx.work.join("ran").exists());
    });
}

/// QEMU (`pid`) runs in an OS sandbox of cordon's: namespaces of its own,
/// seccomp, no_new_privs, no capabilities (checked against this test process,
/// which has none of these: the positive control).
fn assert_confined(pid: u32) {
    let status = |p: &str| fs::read_to_string(format!("/proc/{p}/status")).unwrap();
    let field = |text: &str, name: &str| -> String {
        (text.lines())
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let (qemu, me) = (status(&pid.to_string()), status("self"));
    assert_eq!(field(&qemu, "Seccomp:"), "2", "QEMU without seccomp");
    assert_eq!(field(&qemu, "NoNewPrivs:"), "1");
    assert_eq!(field(&qemu, "CapEff:"), "0000000000000000");
    assert_eq!(field(&qemu, "CapPrm:"), "0000000000000000");
    assert_eq!(
        field(&me, "Seccomp:"),
        "0",
        "the test process itself is confined"
    );
    for ns in ["user", "mnt", "pid", "net", "ipc"] {
        let of = |p: &str| fs::read_link(format!("/proc/{p}/ns/{ns}")).unwrap();
        assert_ne!(
            of(&pid.to_string()),
            of("self"),
            "QEMU shares the {ns} namespace"
        );
    }
}

/// The user config's `"backend": "vm"` runs every command in the VM without
/// `--backend` (the guest's kernel has cordon's `cordon.load=` on its command
/// line; the host's has not), and `cordon policy` says where that came from;
/// a project's `.cordon.json` cannot move it back to the OS backend (ignored,
/// with a warning). Positive controls: `--backend os` and `CORDON_BACKEND=os`
/// run the same command on the host's kernel. Its `"vm_share": "9p"` serves
/// the guest's root over 9p, and `--vm-share virtiofs` over virtiofs where
/// virtiofsd is installed (the default then, so the config is what chose 9p).
#[test]
fn the_user_config_chooses_the_vm() {
    if let Some(why) = missing() {
        return eprintln!("skipped: {why}");
    }
    for_each_user("vm-config-backend", |fx| {
        let config = fx.home.join(".config/cordon/config.json");
        fx.write(&config, r#"{"backend": "vm", "vm_share": "9p"}"#);
        fx.write(&fx.work.join(".cordon.json"), r#"{"backend": "os"}"#);
        let root_fs = fx.work.join("rootfs");
        let kernel_of = |args: &[&str], env: Option<(&str, &str)>| -> String {
            let mut all = vec!["run"];
            all.extend_from_slice(args);
            all.extend_from_slice(&[
                "--",
                "sh",
                "-c",
                "awk '$2 == \"/\" { fs = $3 } END { print fs }' /proc/mounts > rootfs; \
                 grep -c cordon.load= /proc/cmdline > where; true",
            ]);
            let mut cmd = fx.cordon_cmd(&all);
            cmd.env("XDG_CACHE_HOME", cache(fx));
            if let Some((name, value)) = env {
                cmd.env(name, value);
            }
            let out = run_cmd(cmd, None, Duration::from_secs(120));
            out.assert_success();
            let said = fs::read_to_string(fx.work.join("where")).unwrap();
            fs::remove_file(fx.work.join("where")).unwrap();
            match said.trim() {
                "1" => "guest".into(),
                "0" => "host".into(),
                other => panic!("grep said {other:?}\n{out}"),
            }
        };
        assert_eq!(kernel_of(&[], None), "guest");
        assert_eq!(fs::read_to_string(&root_fs).unwrap().trim(), "9p");
        if cordon_vm::share::find_virtiofsd().is_some() {
            assert_eq!(kernel_of(&["--vm-share", "virtiofs"], None), "guest");
            assert_eq!(fs::read_to_string(&root_fs).unwrap().trim(), "virtiofs");
        }
        assert_eq!(kernel_of(&["--backend", "os"], None), "host");
        assert_eq!(kernel_of(&[], Some(("CORDON_BACKEND", "os"))), "host");
        let out = fx.cordon(&["policy"]);
        out.assert_success()
            .assert_stdout_contains("backend    vm: QEMU VM on ")
            .assert_stdout_contains(&format!("← user config {}", config.display()))
            .assert_stdout_contains("vm_share   9p    ← user config")
            .assert_stdout_contains("ignored \"backend\"");
    });
}

/// A `CORDON_VM_SHARE` that names no share is refused with 125 and a message
/// naming both and the variable, before any VM starts (the command never runs); the same run
/// with `9p` runs it (the positive control), and so does the default share
/// with a `$TMPDIR` deeper than a socket's path may be long (virtiofs binds
/// its socket there: it failed once, before it named it by descriptor).
#[test]
fn a_wrong_share_setting_is_refused() {
    if let Some(why) = missing() {
        return eprintln!("skipped: {why}");
    }
    for_each_user("vm-share-setting", |fx| {
        let ran = fx.work.join("ran");
        let script = format!("touch {}", ran.display());
        let touch_with = |name: &str, value: &std::ffi::OsStr| {
            let mut cmd = vm_cmd(fx, &[], &script);
            cmd.env(name, value);
            run_cmd(cmd, None, Duration::from_secs(120))
        };
        let share = cordon_vm::share::SHARE_ENV;
        touch_with(share, "nfs".as_ref())
            .assert_status(125)
            .assert_stderr_contains("invalid value 'nfs' for '--vm-share <SHARE>'")
            .assert_stderr_contains("[possible values: 9p, virtiofs]")
            .assert_stderr_contains("(that is $CORDON_VM_SHARE: unset it");
        assert_not_exists(&ran);
        touch_with(share, "9p".as_ref()).assert_success();
        assert!(ran.exists(), "the command did not run over 9p");
        fs::remove_file(&ran).unwrap();
        let deep = fx
            .outside
            .join("a-temporary-directory-deeper-than-a-socket-path".repeat(2));
        fx.mkdir(&deep);
        touch_with("TMPDIR", deep.as_os_str()).assert_success();
        assert!(
            ran.exists(),
            "the command did not run with TMPDIR={}",
            deep.display()
        );
    });
}

/// A SIGKILL of cordon ends QEMU, virtiofsd and everything of the VM: they run in an OS
/// sandbox whose supervisor dies with cordon. Positive control: QEMU runs below
/// cordon while the command does, confined as the OS backend confines commands.
///
/// And nobody but QEMU can reach virtiofsd: while it serves, its listening
/// socket has no name on the host (cordon's `$TMPDIR`, where it was bound,
/// holds nothing), so another process, of this user or another, has no path
/// to connect to. Positive control: virtiofsd does hold a listening socket.
#[test]
fn sigkill_of_cordon_leaves_no_qemu() {
    if let Some(why) = missing() {
        return eprintln!("skipped: {why}");
    }
    for_each_user("vm-kill", |fx| {
        let started = fx.work.join("started");
        let tmp = fx.root.join("cordon-tmp");
        fx.mkdir(&tmp);
        let mut cmd = vm_cmd(fx, &[], &format!("touch {}; sleep 600", started.display()));
        cmd.env("TMPDIR", &tmp);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut cordon = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !started.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(started.exists(), "the command never ran in the VM");
        let qemu = qemu_below(cordon.id());
        assert!(!qemu.is_empty(), "no QEMU below cordon {}", cordon.id());
        // virtiofsd beside it, where installed: confined as QEMU is.
        let virtiofsd = virtiofsd_below(cordon.id());
        assert_eq!(
            virtiofsd.is_empty(),
            cordon_vm::share::find_virtiofsd().is_none(),
            "virtiofsd {virtiofsd:?} below cordon, though it is installed or not"
        );
        for p in qemu.iter().chain(&virtiofsd) {
            assert_confined(*p);
        }
        for p in &virtiofsd {
            assert!(
                listens_on_a_unix_socket(*p),
                "virtiofsd {p} holds no listening socket: the check below means nothing"
            );
        }
        let named: Vec<String> = fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path().display().to_string())
            .collect();
        assert!(
            named.is_empty(),
            "cordon left names in its TMPDIR while virtiofsd serves: {named:?}"
        );
        cordon.kill().unwrap();
        cordon.wait().unwrap();
        let left = qemu_left_after(&qemu, Duration::from_secs(10));
        assert!(left.is_empty(), "QEMU {left:?} outlived SIGKILLed cordon");
        let left = qemu_left_after(&virtiofsd, Duration::from_secs(10));
        assert!(
            left.is_empty(),
            "virtiofsd {left:?} outlived SIGKILLed cordon"
        );
    });
}

/// Whether process `pid` holds a listening Unix socket (of the host's network
/// namespace, where cordon bound virtiofsd's).
fn listens_on_a_unix_socket(pid: u32) -> bool {
    const LISTENING: &str = "01";
    let held: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    // Num RefCount Protocol Flags Type St Inode [Path]
    fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .any(|f| f.len() >= 7 && f[5] == LISTENING && held.contains(&f[6].to_string()))
}

/// `cordon vm setup` makes this cordon's boot files in the user's cache and
/// removes the cache's others (an older cordon's, an assembly cut off), leaving
/// what cordon did not make; `cordon vm status` lists them as in use, and writes
/// nothing (an empty cache stays absent). A second setup finds both cached.
#[test]
fn vm_setup_makes_the_boot_files_and_prunes_the_others() {
    if let Some(why) = missing() {
        return eprintln!("skipped: {why}");
    }
    for_each_user("vm-setup", |fx| {
        let cache_home = fx.root.join("cache-home");
        let dir = cache_home.join("cordon/vm");
        let cordon_vm = |action: &str| {
            let mut cmd = fx.cordon_cmd(&["vm", action]);
            cmd.env("XDG_CACHE_HOME", &cache_home);
            let out = run_cmd(cmd, None, Duration::from_secs(120));
            out.assert_success();
            out
        };
        fx.mkdir(&cache_home);
        fx.chown_tree(&cache_home);
        let out = cordon_vm("status");
        assert!(out.stdout_str().contains("empty"), "{out}");
        assert!(!dir.exists(), "status wrote the cache\n{out}");

        // Snapshots (QEMU >= 8.2): setup makes the default VM's template too.
        let snapshots = out.stdout_str().contains("snapshots on");
        let planted = [
            "vmlinux-0ld",
            "initramfs-0ld.cpio",
            ".vmlinux-x.tmp-1-0",
            "template-0ld-0ld.snap",
        ];
        for name in planted {
            fx.write(&dir.join(name), "from an older cordon");
        }
        fx.write(&dir.join("notes"), "the user's");
        fx.chown_tree(&cache_home);
        let out = cordon_vm("setup");
        for name in planted {
            assert!(!dir.join(name).exists(), "{name} stayed\n{out}");
            assert!(
                out.stdout_str()
                    .contains(&format!("removed: {}", dir.join(name).display())),
                "{out}"
            );
        }
        assert!(
            dir.join("notes").exists(),
            "a file cordon did not make went\n{out}"
        );
        let made: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                ["vmlinux-", "initramfs-", "template-"]
                    .iter()
                    .any(|kind| name.starts_with(kind))
            })
            .collect();
        let files = 2 + usize::from(snapshots);
        assert_eq!(made.len(), files, "{made:?}\n{out}");
        let vmlinux = made
            .iter()
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("vmlinux-")
            })
            .unwrap_or_else(|| panic!("no vmlinux in {made:?}"));
        assert!(fs::read(vmlinux).unwrap().starts_with(b"\x7fELF"), "{out}");
        for file in &made {
            assert_eq!(
                fs::metadata(file).unwrap().uid(),
                fx.user.uid,
                "{}",
                file.display()
            );
        }

        // The boot files, the template and the memo that names the boot files
        // by their inputs' identities.
        let out = cordon_vm("status");
        assert_eq!(
            out.stdout_str().matches("in use").count(),
            files + 1,
            "{out}"
        );
        assert_eq!(out.stdout_str().matches("in use  memo").count(), 1, "{out}");
        assert!(!out.stdout_str().contains(" old "), "{out}");
        let out = cordon_vm("setup");
        assert_eq!(
            out.stdout_str().matches("cached already").count(),
            files,
            "{out}"
        );
        assert!(!out.stdout_str().contains("removed"), "{out}");
    });
}
