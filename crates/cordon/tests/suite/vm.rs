//! The VM backend's foundation booted for real (crates/cordon-vm, docs/vm.md): the
//! cordon binary is the guest's `/init` (`cordon __vm-agent`), QEMU boots Debian's
//! kernel by PVH, and commands run through the agent over virtio-serial.
//!
//! Two boots in all (CI time): one on microvm (q35 on QEMU 10, where microvm
//! does not boot Debian's 6.1 under TCG here), one on the q35 fallback whose host
//! process is then SIGKILLed. Skipped, saying why, without QEMU
//! (`apt-get install qemu-system-x86`), a kernel (`apt-get install
//! linux-image-amd64`) or a static busybox (`apt-get install busybox-static`).

use cordon_vm::{Accel, Config, ExecRequest, Extra, Machine, Spec, Status, Vm, VmError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The boot files, or why the test cannot run here (something not installed).
fn image() -> Result<cordon_vm::Image, String> {
    let qemu_found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("qemu-system-x86_64").is_file()));
    if !qemu_found {
        return Err("no qemu-system-x86_64 in PATH (apt-get install qemu-system-x86)".into());
    }
    let kernel = cordon_vm::image::find_kernel(None).map_err(|e| format!("{e}"))?;
    let busybox = Path::new("/bin/busybox");
    let static_busybox = std::fs::read(busybox).is_ok_and(|b| is_static(&b));
    if !static_busybox {
        return Err("no static /bin/busybox (apt-get install busybox-static)".into());
    }
    let spec = Spec {
        kernel,
        agent: PathBuf::from(env!("CARGO_BIN_EXE_cordon")),
        extras: vec![Extra {
            host: busybox.into(),
            guest: "/bin/busybox".into(),
        }],
        // Kept between runs: the vmlinux is unpacked once.
        cache: Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm-cache"),
    };
    // Not a reason to skip: a failure.
    Ok(cordon_vm::image::assemble(&spec).expect("assembling the image"))
}

/// An ELF executable without a PT_INTERP program header (no dynamic loader).
fn is_static(elf: &[u8]) -> bool {
    let u = |at: usize, n: usize| -> Option<usize> {
        Some(
            elf.get(at..at + n)?
                .iter()
                .rev()
                .fold(0usize, |a, &b| (a << 8) | b as usize),
        )
    };
    let (Some(phoff), Some(size), Some(num)) = (u(0x20, 8), u(0x36, 2), u(0x38, 2)) else {
        return false;
    };
    elf.starts_with(b"\x7fELF") && (0..num).all(|i| u(phoff + i * size, 4).is_some_and(|t| t != 3))
}

fn config(machine: Machine) -> Config {
    Config {
        // TCG unless the probe finds KVM at hardware speed (PVM here: TCG).
        accel: Accel::Auto,
        machine,
        memory_mib: 256,
        cpus: 1,
        ..Config::default()
    }
}

fn run(vm: &mut Vm, argv: &[&str]) -> Result<(Status, String, String), VmError> {
    let request = ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![("PATH".into(), "/bin".into())],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        tty: None,
        confine: None,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = vm.exec(&request, None, &mut out, &mut err)?;
    Ok((
        status,
        String::from_utf8_lossy(&out).into(),
        String::from_utf8_lossy(&err).into(),
    ))
}

fn alive(pid: u32) -> bool {
    // Gone, or a zombie nobody reaped yet (dead all the same).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// microvm, but on QEMU 10 or newer, where Debian's 6.1 does not boot on it
/// under TCG here (docs/vm.md, Snapshots): the backend's machine, q35.
fn first_machine() -> Machine {
    let says = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    match cordon_vm::snapshot::QemuVersion::parse(&says) {
        Some(v) if v.major >= 10 => {
            eprintln!("QEMU {}: q35 instead of microvm", v.short());
            Config::default().machine
        }
        _ => Machine::Microvm,
    }
}

#[test]
fn microvm_boots_and_runs_commands_through_the_agent() {
    let image = match image() {
        Ok(i) => i,
        Err(why) => return eprintln!("skipped: {why}"),
    };
    let mut vm = Vm::boot(&config(first_machine()), &image).expect("boot");
    eprintln!("booted in {:?} ({})", vm.boot_time, vm.accel.why);
    let qemu = vm.qemu_pid();

    let (status, out, err) = run(&mut vm, &["/bin/busybox", "echo", "hi"]).unwrap();
    assert_eq!(
        (status, out.as_str(), err.as_str()),
        (Status::Code(0), "hi\n", "")
    );

    // Both streams, a non-zero status, the environment given and nothing else, PID 1
    // being the agent: the command really ran in the guest.
    let (status, out, err) = run(
        &mut vm,
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "echo \"$PATH|$HOME\"; cat /proc/1/cmdline | tr '\\0' ' ' >&2; exit 3",
        ],
    )
    .unwrap();
    assert_eq!(status, Status::Code(3));
    assert_eq!(out, "/bin|\n");
    assert_eq!(err, "/init __vm-agent ");

    // A command in a session of its own (setsid, as a terminal's shell is) is
    // reaped too: the agent waits for any child, not its own group's only.
    let (status, _, _) = run(
        &mut vm,
        &[
            "/bin/busybox",
            "setsid",
            "/bin/busybox",
            "sh",
            "-c",
            "exit 3",
        ],
    )
    .unwrap();
    assert_eq!(status, Status::Code(3));

    // Killed by a signal.
    let (status, _, _) = run(&mut vm, &["/bin/busybox", "sh", "-c", "kill -9 $$"]).unwrap();
    assert_eq!(status, Status::Signal(9));

    // A program that does not exist: an error, and the VM still serves.
    match run(&mut vm, &["/no/such/program"]) {
        Err(VmError::ExecFailed { status, error }) => {
            assert_eq!(status, 127);
            assert!(error.contains("/no/such/program"), "{error}");
        }
        other => panic!("expected ExecFailed, got {other:?}"),
    }
    // More output than one frame carries, in order.
    let (status, out, _) = run(&mut vm, &["/bin/busybox", "seq", "1", "40000"]).unwrap();
    assert_eq!(status, Status::Code(0));
    let expected: String = (1..=40000).map(|i| format!("{i}\n")).collect();
    assert!(expected.len() > cordon_vm::protocol::DATA_CHUNK);
    assert!(
        out == expected,
        "seq output differs ({} bytes, expected {})",
        out.len(),
        expected.len()
    );

    assert!(alive(qemu));
    drop(vm);
    assert!(!alive(qemu), "QEMU {qemu} outlived its Vm");
}

/// Run by `q35_fallback_boots_and_qemu_dies_with_a_killed_host` in a child
/// process: boots, runs a command, prints QEMU's pid, then waits to be killed.
#[test]
#[ignore = "a helper: runs only inside the test below"]
fn helper_boot_q35_and_wait() {
    if std::env::var_os("CORDON_VM_TEST_HELPER").is_none() {
        return;
    }
    let image = image().expect("the parent checked");
    let mut vm = Vm::boot(&config(Machine::Q35), &image).expect("boot q35");
    let (status, out, _) = run(&mut vm, &["/bin/busybox", "echo", "hi"]).unwrap();
    println!("result {status:?} {}", out.trim());
    println!("qemu {}", vm.qemu_pid());
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn q35_fallback_boots_and_qemu_dies_with_a_killed_host() {
    if let Err(why) = image() {
        return eprintln!("skipped: {why}");
    }
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "vm::helper_boot_q35_and_wait",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CORDON_VM_TEST_HELPER", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut result = None;
    let mut qemu = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        // libtest prints "test NAME ... " before the test's own output, on its line.
        if let Some((_, r)) = line.split_once("result ") {
            result = Some(r.to_string());
        }
        if let Some((_, p)) = line.split_once("qemu ") {
            qemu = Some(p.trim().parse::<u32>().unwrap());
            break;
        }
    }
    let Some(qemu) = qemu else {
        let _ = child.kill();
        panic!("the helper did not boot: {:?}", child.wait());
    };
    assert_eq!(result.as_deref(), Some("Code(0) hi"));
    // Positive control: QEMU runs while its host process does.
    assert!(alive(qemu), "QEMU {qemu} is not running");
    let exe = std::fs::read_link(format!("/proc/{qemu}/exe")).unwrap();
    assert!(
        exe.to_string_lossy().contains("qemu-system-x86_64"),
        "{exe:?}"
    );

    // QEMU frozen first: the agent powers the guest off when its channel closes,
    // which would end QEMU too, but only with a cooperating guest. What is tested
    // is that the host's death kills QEMU whatever the guest does.
    let qemu_pid = rustix::process::Pid::from_raw(qemu as i32).unwrap();
    rustix::process::kill_process(qemu_pid, rustix::process::Signal::STOP).unwrap();
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(qemu) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survived = alive(qemu);
    if survived {
        let _ = rustix::process::kill_process(qemu_pid, rustix::process::Signal::KILL);
    }
    assert!(!survived, "QEMU {qemu} outlived the SIGKILLed host process");
}
