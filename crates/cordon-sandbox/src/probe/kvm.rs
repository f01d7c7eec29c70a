//! KVM and QEMU probes (each runs in a probe child).
//!
//! "Can KVM run an ordinary guest?" is not answered by opening /dev/kvm: under
//! PVM (the `kvm_pvm` module, a paravirtual hypervisor used inside nested cloud
//! sandboxes) /dev/kvm opens, every ioctl works, a real-mode or long-mode guest
//! of a few instructions even runs correctly — but guest kernel-mode (CPL 0) code
//! is emulated instruction by instruction, ~1000x slower than hardware
//! virtualization, so an ordinary Linux guest appears to hang in its
//! decompressor. The probe therefore times a tight loop in a 64-bit CPL-0 guest:
//! with hardware virtualization 2 million iterations take about a millisecond;
//! emulated they take seconds. A SIGALRM interrupts KVM_RUN at the budget.

use super::Outcome;
use super::host::errno_text;
use std::path::Path;
use std::time::Duration;

/// The longest the speed test may run (hardware needs ~1 ms).
pub(crate) const BUDGET: Duration = Duration::from_millis(40);

/// Iterations of `dec ecx; jnz` in the guest.
const LOOPS: u32 = 2_000_000;

fn vendor_module() -> Option<&'static str> {
    ["kvm_intel", "kvm_amd", "kvm_pvm"]
        .into_iter()
        .find(|m| Path::new("/sys/module").join(m).exists())
}

fn cpu_has_virt() -> Option<bool> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = info.lines().find(|l| l.starts_with("flags"))?;
    Some(flags.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

const TCG_NOTE: &str = "without KVM a VM would run on QEMU's TCG: slower, still isolated; the OS backend does not use KVM";

/// The KVM probe: open /dev/kvm, then time a guest loop (x86-64).
pub(crate) fn kvm(budget: Duration) -> Outcome {
    use rustix::fs::{Mode, OFlags};
    let device = rustix::fs::open(c"/dev/kvm", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty());
    let device = match device {
        Ok(device) => device,
        Err(error) => return open_failure(error.raw_os_error()),
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&device);
    // SAFETY: KVM_GET_API_VERSION on the descriptor opened above, which
    // `device` keeps open; it reads and writes no memory. Its argument must be
    // 0 (the kernel answers EINVAL to anything else), so it is passed: ioctl is
    // variadic, and a call without it leaves whatever a register holds.
    let api = unsafe { libc::ioctl(fd, 0xAE00, 0) };
    if api != 12 {
        return Outcome::fail(
            format!("/dev/kvm opens but reports API version {api}, not 12"),
            "an unsupported KVM implementation",
            TCG_NOTE,
        );
    }
    speed_test(fd, budget)
}

/// Why /dev/kvm cannot be opened (`errno` of the open), and what to do.
fn open_failure(errno: i32) -> Outcome {
    let e = errno_text(errno);
    let uid = rustix::process::geteuid().as_raw();
    match errno {
        libc::ENOENT | libc::ENXIO | libc::ENODEV => {
            let why = match (vendor_module(), cpu_has_virt()) {
                (None, Some(false)) => {
                    "the CPU exposes no vmx/svm flag (on a cloud VM: nested virtualization is off)"
                }
                (None, _) => "no KVM module is loaded",
                (Some(_), _) => "the KVM module is loaded but the device node is missing",
            };
            Outcome::fail(
                format!("/dev/kvm: {e}"),
                format!("/dev/kvm does not exist: {why}"),
                format!(
                    "enable VT-x/AMD-V in the firmware and `sudo modprobe kvm_intel` (or kvm_amd); on a cloud VM enable nested virtualization; {TCG_NOTE}"
                ),
            )
        }
        libc::EACCES | libc::EPERM => {
            let (mode, group) = device_owner();
            Outcome::fail(
                format!("/dev/kvm: {e}"),
                format!("/dev/kvm ({mode}, group {group}) is not accessible to uid {uid}"),
                format!(
                    "`sudo usermod -aG kvm $USER` and log in again (if /dev/kvm is group kvm, mode 0660; else add the udev rule \
                         KERNEL==\"kvm\", GROUP=\"kvm\", MODE=\"0660\"); {TCG_NOTE}"
                ),
            )
        }
        _ => Outcome::fail(
            format!("/dev/kvm: {e}"),
            format!("opening /dev/kvm failed ({e})"),
            TCG_NOTE,
        ),
    }
}

fn device_owner() -> (String, String) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata("/dev/kvm") else {
        return ("?".into(), "?".into());
    };
    let gid = meta.gid();
    let group = std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let _ = f.next();
                (f.next()?.parse::<u32>().ok()? == gid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| gid.to_string());
    (format!("mode {:04o}", meta.mode() & 0o7777), group)
}

#[cfg(not(target_arch = "x86_64"))]
fn speed_test(_fd: i32, _budget: Duration) -> Outcome {
    Outcome::ok("/dev/kvm opens, API 12 (guest speed not tested on this architecture)")
}

#[cfg(target_arch = "x86_64")]
fn speed_test(kvm: i32, budget: Duration) -> Outcome {
    match x86::run_loop(kvm, budget) {
        Err((step, errno)) => {
            let e = errno_text(errno);
            Outcome::fail(
                format!("/dev/kvm opens, but {step} failed: {e}"),
                format!("KVM cannot run a minimal guest ({step}: {e})"),
                TCG_NOTE,
            )
        }
        Ok(run) => {
            let ms = run.elapsed.as_secs_f64() * 1e3;
            let rate = (run.done as f64 * 2.0) / run.elapsed.as_secs_f64().max(1e-9) / 1e6;
            if run.done == LOOPS as u64 && run.elapsed <= budget {
                Outcome::ok(format!(
                    "/dev/kvm works; a 64-bit guest ran {LOOPS} kernel-mode loop iterations in {ms:.1} ms (hardware speed){}",
                    vendor_module()
                        .map(|m| format!(", module {m}"))
                        .unwrap_or_default()
                ))
            } else {
                let pvm = vendor_module() == Some("kvm_pvm");
                let cause = if pvm {
                    "KVM here is PVM (module kvm_pvm), a paravirtual hypervisor for nested cloud sandboxes: it runs only \
                     PVM-enabled guest kernels natively and emulates an ordinary guest's kernel code instruction by instruction, \
                     so an ordinary Linux guest crawls (it looks hung)"
                        .to_string()
                } else {
                    "KVM emulates guest kernel code instead of running it on hardware virtualization, so an ordinary Linux guest \
                     crawls (it looks hung)"
                        .to_string()
                };
                Outcome::fail(
                    format!(
                        "/dev/kvm opens and runs guests, but guest kernel code runs at ~{rate:.1} M instructions/s \
                         ({} of {LOOPS} loop iterations in {ms:.0} ms; hardware does them in ~1 ms): not usable for ordinary guests",
                        run.done
                    ),
                    cause,
                    format!(
                        "for KVM speed, run on a host (or a cloud VM with nested virtualization) whose CPU exposes vmx/svm \
                         with kvm_intel/kvm_amd ({TCG_NOTE})"
                    ),
                )
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::LOOPS;
    use std::time::{Duration, Instant};

    const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
    const KVM_GET_VCPU_MMAP_SIZE: libc::c_ulong = 0xAE04;
    const KVM_GET_SUPPORTED_CPUID: libc::c_ulong = 0xC008_AE05;
    const KVM_CREATE_VCPU: libc::c_ulong = 0xAE41;
    const KVM_SET_USER_MEMORY_REGION: libc::c_ulong = 0x4020_AE46;
    const KVM_SET_TSS_ADDR: libc::c_ulong = 0xAE47;
    const KVM_RUN: libc::c_ulong = 0xAE80;
    const KVM_GET_REGS: libc::c_ulong = 0x8090_AE81;
    const KVM_SET_REGS: libc::c_ulong = 0x4090_AE82;
    const KVM_GET_SREGS: libc::c_ulong = 0x8138_AE83;
    const KVM_SET_SREGS: libc::c_ulong = 0x4138_AE84;
    const KVM_SET_CPUID2: libc::c_ulong = 0x4008_AE90;

    const KVM_EXIT_IO: u32 = 2;
    const KVM_EXIT_HLT: u32 = 5;

    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Regs {
        rax: u64,
        rbx: u64,
        rcx: u64,
        rdx: u64,
        rsi: u64,
        rdi: u64,
        rsp: u64,
        rbp: u64,
        r: [u64; 8],
        rip: u64,
        rflags: u64,
    }

    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Segment {
        base: u64,
        limit: u32,
        selector: u16,
        type_: u8,
        present: u8,
        dpl: u8,
        db: u8,
        s: u8,
        l: u8,
        g: u8,
        avl: u8,
        unusable: u8,
        padding: u8,
    }

    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Dtable {
        base: u64,
        limit: u16,
        padding: [u16; 3],
    }

    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Sregs {
        cs: Segment,
        ds: Segment,
        es: Segment,
        fs: Segment,
        gs: Segment,
        ss: Segment,
        tr: Segment,
        ldt: Segment,
        gdt: Dtable,
        idt: Dtable,
        cr0: u64,
        cr2: u64,
        cr3: u64,
        cr4: u64,
        cr8: u64,
        efer: u64,
        apic_base: u64,
        interrupt_bitmap: [u64; 4],
    }

    #[repr(C)]
    struct MemoryRegion {
        slot: u32,
        flags: u32,
        guest_phys_addr: u64,
        memory_size: u64,
        userspace_addr: u64,
    }

    const CPUID_ENTRIES: usize = 256;

    #[repr(C)]
    struct Cpuid {
        nent: u32,
        padding: u32,
        entries: [[u32; 10]; CPUID_ENTRIES],
    }

    pub(super) struct LoopRun {
        pub done: u64,
        pub elapsed: Duration,
    }

    /// Closes an fd / unmaps a region on every return path.
    struct Fd(i32);
    impl Drop for Fd {
        fn drop(&mut self) {
            // SAFETY: the guard is made only from a descriptor a KVM ioctl just
            // returned, and owns it alone; it is closed once, here.
            unsafe { libc::close(self.0) };
        }
    }
    struct Map(*mut libc::c_void, usize);
    impl Drop for Map {
        fn drop(&mut self) {
            // SAFETY: the guard holds exactly the address and length of a
            // mapping `map` made, and nothing of this process dereferences it
            // after the guard is dropped. A VM still open sees the unmap through
            // KVM's MMU notifier: the guest loses the memory, this process is
            // not left with a dangling pointer.
            unsafe { libc::munmap(self.0, self.1) };
        }
    }

    /// A new read-write mapping of `len` bytes (mmap(2) with `flags`, of `fd`);
    /// `what` names it when that fails.
    fn map(len: usize, flags: libc::c_int, fd: i32, what: &'static str) -> Result<Map, Step> {
        // SAFETY: with a NULL address and no MAP_FIXED the kernel picks free
        // addresses, so no existing memory is replaced; nothing is read.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err((what, crate::sys::errno()));
        }
        Ok(Map(addr, len))
    }

    /// Sets the one-shot real-time timer to fire after `value` (a zero `value`
    /// disarms it).
    fn set_alarm(value: libc::timeval) {
        let timer = libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            it_value: value,
        };
        // SAFETY: setitimer reads one itimerval, a live local, and is told
        // (NULL) not to write the old value.
        unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };
    }

    extern "C" fn on_alarm(_: libc::c_int) {}

    type Step = (&'static str, i32);

    fn check(ret: libc::c_int, step: &'static str) -> Result<libc::c_int, Step> {
        if ret < 0 {
            Err((step, crate::sys::errno()))
        } else {
            Ok(ret)
        }
    }

    /// Runs `mov ecx, LOOPS; 1: dec ecx; jnz 1b; out 0x3f8, al; hlt` in a 64-bit
    /// CPL-0 guest with identity-mapped 2 MiB page, interrupted at `budget`.
    pub(super) fn run_loop(kvm: i32, budget: Duration) -> Result<LoopRun, Step> {
        const MEM: usize = 0x20_0000;
        const CODE: usize = 0x8000;
        // SAFETY: raw KVM ioctls on fds this function owns, with #[repr(C)]
        // structs matching <linux/kvm.h> (x86-64), and guest memory it mapped.
        unsafe {
            let vm = Fd(check(libc::ioctl(kvm, KVM_CREATE_VM, 0), "KVM_CREATE_VM")?);
            // Harmless where unneeded; required on Intel for real mode.
            libc::ioctl(vm.0, KVM_SET_TSS_ADDR, 0xfffb_d000u64);
            let mem = map(
                MEM,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                "mmap of guest memory",
            )?;
            let base = mem.0 as *mut u8;
            // Page tables: PML4 at 0x1000 -> PDPT at 0x2000 -> PD at 0x3000 with
            // one 2 MiB page at 0 (present, writable, PS).
            let pml4 = base.add(0x1000) as *mut u64;
            let pdpt = base.add(0x2000) as *mut u64;
            let pd = base.add(0x3000) as *mut u64;
            *pml4 = 0x2000 | 3;
            *pdpt = 0x3000 | 3;
            *pd = 0x83;
            let n = LOOPS.to_le_bytes();
            let code: [u8; 16] = [
                0xb9, n[0], n[1], n[2], n[3], // mov ecx, LOOPS
                0xff, 0xc9, // dec ecx
                0x75, 0xfc, // jnz -4
                0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
                0xee, // out dx, al
                0xf4, // hlt
                0xf4,
            ];
            std::ptr::copy_nonoverlapping(code.as_ptr(), base.add(CODE), code.len());
            let region = MemoryRegion {
                slot: 0,
                flags: 0,
                guest_phys_addr: 0,
                memory_size: MEM as u64,
                userspace_addr: base as u64,
            };
            check(
                libc::ioctl(vm.0, KVM_SET_USER_MEMORY_REGION, &region),
                "KVM_SET_USER_MEMORY_REGION",
            )?;
            let vcpu = Fd(check(
                libc::ioctl(vm.0, KVM_CREATE_VCPU, 0),
                "KVM_CREATE_VCPU",
            )?);
            let run_size = check(
                libc::ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0),
                "KVM_GET_VCPU_MMAP_SIZE",
            )? as usize;
            let run = map(run_size, libc::MAP_SHARED, vcpu.0, "mmap of kvm_run")?;
            // Long mode needs CPUID to advertise it.
            let mut cpuid: Box<Cpuid> = Box::new(Cpuid {
                nent: CPUID_ENTRIES as u32,
                padding: 0,
                entries: [[0; 10]; CPUID_ENTRIES],
            });
            check(
                libc::ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &mut *cpuid as *mut Cpuid),
                "KVM_GET_SUPPORTED_CPUID",
            )?;
            check(
                libc::ioctl(vcpu.0, KVM_SET_CPUID2, &*cpuid as *const Cpuid),
                "KVM_SET_CPUID2",
            )?;
            let mut sregs = Sregs::default();
            check(
                libc::ioctl(vcpu.0, KVM_GET_SREGS, &mut sregs),
                "KVM_GET_SREGS",
            )?;
            let code_seg = Segment {
                base: 0,
                limit: 0xffff_ffff,
                selector: 8,
                type_: 11,
                present: 1,
                dpl: 0,
                db: 0,
                s: 1,
                l: 1,
                g: 1,
                ..Segment::default()
            };
            let data_seg = Segment {
                selector: 16,
                type_: 3,
                l: 0,
                db: 1,
                ..code_seg
            };
            sregs.cs = code_seg;
            sregs.ds = data_seg;
            sregs.es = data_seg;
            sregs.fs = data_seg;
            sregs.gs = data_seg;
            sregs.ss = data_seg;
            sregs.cr3 = 0x1000;
            sregs.cr4 = 1 << 5; // PAE
            sregs.cr0 = 1 | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 31); // PE ET NE WP PG
            sregs.efer = (1 << 8) | (1 << 10); // LME LMA
            check(
                libc::ioctl(vcpu.0, KVM_SET_SREGS, &sregs),
                "KVM_SET_SREGS (64-bit mode)",
            )?;
            let regs = Regs {
                rip: CODE as u64,
                rflags: 2,
                rsp: 0x10_0000,
                ..Regs::default()
            };
            check(libc::ioctl(vcpu.0, KVM_SET_REGS, &regs), "KVM_SET_REGS")?;

            // SIGALRM without SA_RESTART: KVM_RUN returns EINTR at the budget.
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
            let alarm = libc::timeval {
                tv_sec: budget.as_secs() as libc::time_t,
                tv_usec: budget.subsec_micros().max(1) as libc::suseconds_t,
            };
            let started = Instant::now();
            set_alarm(alarm);
            let exit_reason = (run.0 as *const u8).add(8) as *const u32;
            let mut done = None;
            for _ in 0..16 {
                if libc::ioctl(vcpu.0, KVM_RUN, 0) < 0 {
                    let errno = crate::sys::errno();
                    if errno == libc::EINTR {
                        break;
                    }
                    return Err(("KVM_RUN", errno));
                }
                match std::ptr::read_volatile(exit_reason) {
                    KVM_EXIT_IO => continue,
                    KVM_EXIT_HLT => {
                        done = Some(LOOPS as u64);
                        break;
                    }
                    other => return Err((exit_name(other), libc::EIO)),
                }
            }
            let elapsed = started.elapsed();
            set_alarm(libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            });
            let done = match done {
                Some(d) => d,
                None => {
                    let mut now = Regs::default();
                    check(libc::ioctl(vcpu.0, KVM_GET_REGS, &mut now), "KVM_GET_REGS")?;
                    (LOOPS as u64).saturating_sub(now.rcx & 0xffff_ffff)
                }
            };
            Ok(LoopRun { done, elapsed })
        }
    }

    fn exit_name(reason: u32) -> &'static str {
        match reason {
            0 => "the guest (unknown exit)",
            8 => "the guest (shutdown: triple fault)",
            9 => "the guest (entry failed)",
            17 => "the guest (internal error)",
            _ => "the guest (unexpected exit)",
        }
    }
}

/// The QEMU probe: qemu-system-x86_64 on PATH and its version.
pub(crate) fn qemu() -> Outcome {
    let name = "qemu-system-x86_64";
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
    });
    let Some(path) = found else {
        return Outcome::fail(
            format!("{name} not found on PATH"),
            "QEMU is not installed (the OS backend does not use it)",
            "Debian/Ubuntu: `sudo apt-get install qemu-system-x86`; Fedora: `sudo dnf install qemu-system-x86-core`; Arch: `sudo pacman -S qemu-system-x86`",
        );
    };
    let output = std::process::Command::new(&path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match output {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let first = text.lines().next().unwrap_or("").trim();
            let version = first
                .strip_prefix("QEMU emulator version ")
                .unwrap_or(first);
            Outcome::ok(format!("{} {version}", path.display()))
        }
        Ok(out) => Outcome::fail(
            format!("{} --version failed ({})", path.display(), out.status),
            "the QEMU binary does not run (missing libraries?)",
            "reinstall QEMU: `sudo apt-get install --reinstall qemu-system-x86`",
        ),
        Err(e) => Outcome::fail(
            format!("cannot run {}: {e}", path.display()),
            "the QEMU binary does not run",
            "reinstall QEMU: `sudo apt-get install --reinstall qemu-system-x86`",
        ),
    }
}

fn is_executable(path: &Path) -> bool {
    path.is_file() && rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok()
}
