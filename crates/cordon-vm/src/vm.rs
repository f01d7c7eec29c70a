//! The host side of a VM: QEMU started with cordon's kernel and initramfs, the
//! channel to the guest agent, and commands run through it.
//!
//! QEMU gets one end of a socket pair as the chardev of a virtio-serial port (no
//! socket in the file system, nothing another process can connect to), no network
//! device, no disk, and its own seccomp filter (`-sandbox on`). It dies with the
//! host side: [`Vm`]'s drop kills it, and it has `PR_SET_PDEATHSIG` = SIGKILL, so
//! a SIGKILL of cordon takes QEMU along. The death signal follows the *thread*
//! that started QEMU: boot the VM on a thread that lives as long as the [`Vm`].
//!
//! Every frame from the guest is hostile (see [`crate::protocol`]): sizes are
//! bounded, garbage is an error, a frame for a request that is not open is an
//! error, output goes to the caller's sinks as it arrives (one frame at a time,
//! so a slow sink slows the guest instead of growing the host's memory), and after
//! any violation the VM is refused further use.

use crate::agent;
use crate::image::{Image, ImageError};
use crate::mux::{Credit, Sink};
use crate::net::{HostNet, NetworkSpec};
use crate::protocol::{self, Frame, FrameError, FrameReader, Message, Status};
use crate::share::{ShareFs, ShareKind};
use cordon_policy::VmResources;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which accelerator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// KVM when the probe of `cordon doctor` finds that it runs ordinary guests at
    /// hardware speed, else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// The machine type QEMU emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// `microvm`: no PCI, no firmware; virtio over MMIO. With `pic=off` and the
    /// kernel's `tsc_early_khz=` (both always set): without them it crashes 3–6
    /// boots in 8 under TCG.
    Microvm,
    /// `q35`: the fallback, with virtio over PCI.
    Q35,
}

impl Machine {
    /// The modules the guest loads at boot for its channel.
    pub fn boot_modules(self) -> &'static [&'static str] {
        match self {
            Machine::Microvm => &["virtio_mmio", "virtio_console"],
            Machine::Q35 => &["virtio_pci", "virtio_console"],
        }
    }
}

/// How to start the VM.
#[derive(Debug, Clone)]
pub struct Config {
    /// The QEMU binary (`qemu-system-x86_64`, looked up in `PATH`; Debian's
    /// `qemu-system-x86_64-microvm` is KVM-only).
    pub qemu: PathBuf,
    pub accel: Accel,
    pub machine: Machine,
    pub memory_mib: u32,
    pub cpus: u32,
    /// How long QEMU may take from start to the agent's `Ready`.
    pub boot_timeout: Duration,
    /// How the host's view reaches the guest: 9p unless the backend chose
    /// otherwise for its session ([`crate::share::choose`]).
    pub share: ShareKind,
}

impl Config {
    /// The VM a policy asks for: its memory and vCPUs (`--vm-memory`,
    /// `--vm-cpus`, or `vm_memory` and `vm_cpus` in a config), on microvm with
    /// the accelerator the probe chooses.
    pub fn for_policy(vm: &VmResources) -> Config {
        Config {
            qemu: PathBuf::from("qemu-system-x86_64"),
            accel: Accel::Auto,
            // q35: on QEMU 10 (bookworm-backports, which snapshots need),
            // Debian's 6.1 on microvm hangs under TCG after "ACPI: Core
            // revision" (waiting for a timer tick) in most boots here under
            // load, with or without its i8254; q35 boots as fast (2.06 s).
            machine: Machine::Q35,
            // The policy holds whole MiB, at most 1 TiB, and at most 64 vCPUs.
            memory_mib: u32::try_from(vm.memory.value >> 20).unwrap_or(u32::MAX),
            cpus: u32::try_from(vm.cpus.value).unwrap_or(u32::MAX),
            boot_timeout: Duration::from_secs(60),
            share: ShareKind::NineP,
        }
    }
}

impl Default for Config {
    /// The policy's built-in resources (1 GiB and 2 vCPUs, what real builds
    /// need), microvm, accelerator chosen by the probe.
    fn default() -> Self {
        Config::for_policy(&VmResources::defaults())
    }
}

/// What can go wrong on the host side of a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{0} not found: install QEMU (`apt-get install qemu-system-x86`)")]
    QemuMissing(String),
    #[error("starting {0}: {1}")]
    Spawn(String, #[source] io::Error),
    #[error("the VM did not boot: {why}{}", console_note(.console))]
    Boot { why: String, console: String },
    #[error("the VM ended{}", console_note(.0))]
    Ended(String),
    #[error("the guest agent broke the protocol: {0}; the VM is no longer used")]
    Protocol(String),
    #[error("the VM's template snapshot {} did not restore: {why}", template.display())]
    Restore { template: PathBuf, why: String },
    #[error("the VM was given up after an earlier error")]
    Broken,
    #[error("the command could not start in the VM: {error}")]
    ExecFailed {
        /// 127: not found; 126: not executable; 125: anything else.
        status: i32,
        error: String,
    },
    #[error("the command's request is invalid: {0}")]
    Request(String),
    /// The VM's settings from the environment are wrong (the message says how
    /// to fix them).
    #[error("{0}")]
    Settings(String),
    #[error("the channel to the VM: {0}")]
    Io(#[from] io::Error),
    #[error("the vm backend does not do {0} yet; use --backend os")]
    Unsupported(String),
    #[error(
        "the vm backend has no --net {mode} (set by {origin}): the guest's only way out is \
         the egress broker, never an unfiltered network device; use --net allowlist with \
         --allow-domain, or --backend os"
    )]
    NoNetwork { mode: String, origin: String },
    #[error("the guest's network could not be made: {0}")]
    Network(String),
    #[error(transparent)]
    Sandbox(#[from] cordon_sandbox::SandboxError),
}

impl VmError {
    /// Whether this is something the VM backend does not do (yet), refused
    /// before anything ran, rather than a failure while doing it.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, VmError::Unsupported(_) | VmError::NoNetwork { .. })
    }
}

fn console_note(console: &str) -> String {
    let tail = console.trim();
    if tail.is_empty() {
        String::new()
    } else {
        format!("; the end of its console:\n{tail}")
    }
}

/// A command to run in the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    /// The user and group it runs as in the guest.
    pub uid: u32,
    pub gid: u32,
    /// A pseudo-terminal of this size in the guest instead of pipes.
    pub tty: Option<crate::protocol::TtySize>,
    /// How the agent confines the command (see [`crate::protocol::Confine`]).
    pub confine: Option<crate::protocol::Confine>,
}

/// The accelerator in use and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    pub kvm: bool,
    pub why: String,
}

/// Chooses the accelerator for `accel`: `Auto` asks the KVM probe of `cordon
/// doctor` (a timed guest loop: PVM, where ordinary guests crawl, is refused).
pub fn choose_accel(accel: Accel) -> AccelChoice {
    match accel {
        Accel::Kvm => AccelChoice {
            kvm: true,
            why: "KVM requested".into(),
        },
        Accel::Tcg => AccelChoice {
            kvm: false,
            why: "TCG requested".into(),
        },
        Accel::Auto => accel_from(&cordon_sandbox::probe::run_vm_backend(Duration::from_secs(
            2,
        ))),
    }
}

/// The accelerator the probes of `cordon doctor`'s VM section choose: KVM when
/// it runs ordinary guests at hardware speed, else TCG, and why.
pub fn accel_from(probes: &[cordon_sandbox::probe::Layer]) -> AccelChoice {
    match probes.iter().find(|l| l.id == "kvm") {
        Some(l) if l.ok => AccelChoice {
            kvm: true,
            why: l.detail.clone(),
        },
        Some(l) => AccelChoice {
            kvm: false,
            why: format!("TCG: {}", l.cause.as_deref().unwrap_or(&l.detail)),
        },
        None => AccelChoice {
            kvm: false,
            why: "TCG: no KVM probe".into(),
        },
    }
}

/// The host's TSC frequency in kHz: from the hypervisor's timing leaf when the
/// host is itself a guest that has one, else measured against CLOCK_MONOTONIC.
/// Under TCG and KVM the guest's TSC runs at this rate; microvm has no other
/// clock to calibrate it against.
#[cfg(target_arch = "x86_64")]
pub fn host_tsc_khz() -> u64 {
    announced_tsc_khz().unwrap_or_else(measure_tsc_khz)
}

/// The host's TSC frequency as [`host_tsc_khz`] finds it, a measurement
/// remembered in `cache` for the host's boot: a template's kernel command line
/// holds it, and a measurement differs a little every time.
#[cfg(target_arch = "x86_64")]
pub fn remembered_tsc_khz(cache: &std::path::Path) -> u64 {
    if let Some(khz) = announced_tsc_khz() {
        return khz;
    }
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let file = cache.join("host-tsc");
    if let Some(khz) = std::fs::read_to_string(&file).ok().and_then(|text| {
        let (seen, khz) = text.trim_end().rsplit_once(' ')?;
        (seen == boot.trim()).then(|| khz.parse().ok())?
    }) {
        return khz;
    }
    let khz = measure_tsc_khz();
    if cache.is_dir() {
        let _ = crate::image::write_atomic(&file, |w| write!(w, "{} {khz}", boot.trim()));
    }
    khz
}

/// The TSC frequency the hypervisor announces (its timing leaf), when the host
/// is a guest that has one.
#[cfg(target_arch = "x86_64")]
fn announced_tsc_khz() -> Option<u64> {
    use std::arch::x86_64::__cpuid;
    // CPUID leaf 1, ECX bit 31: running under a hypervisor.
    let hypervisor = __cpuid(1).ecx & (1 << 31) != 0;
    if hypervisor && __cpuid(0x4000_0000).eax >= 0x4000_0010 {
        let khz = u64::from(__cpuid(0x4000_0010).eax);
        if khz > 0 {
            return Some(khz);
        }
    }
    None
}

/// The TSC's frequency measured against CLOCK_MONOTONIC.
#[cfg(target_arch = "x86_64")]
fn measure_tsc_khz() -> u64 {
    use std::arch::x86_64::_rdtsc;
    // Measure: TSC ticks over 5 ms, each end bracketed by clock reads so a
    // preemption between them is seen (and the sample retried).
    let stamp = || {
        for _ in 0..10 {
            let a = Instant::now();
            // SAFETY: rdtsc only reads the time-stamp counter.
            let t = unsafe { _rdtsc() };
            let b = Instant::now();
            if b - a < Duration::from_micros(20) {
                return (a + (b - a) / 2, t);
            }
        }
        let a = Instant::now();
        // SAFETY: as above.
        (a, unsafe { _rdtsc() })
    };
    let (t0, c0) = stamp();
    std::thread::sleep(Duration::from_millis(5));
    let (t1, c1) = stamp();
    let ns = (t1 - t0).as_nanos().max(1) as u64;
    c1.wrapping_sub(c0).saturating_mul(1_000_000) / ns
}

/// The share that becomes the guest's root (its mount tag).
pub const ROOT_TAG: &str = "cordon-root";

/// What the guest is told of its root share (the kernel command line's
/// [`agent::ROOT_OPTION`], `Resume`'s `root`): its file system and tag.
pub fn root_share(fs: ShareFs) -> String {
    match fs {
        ShareFs::NineP => format!("9p:{ROOT_TAG}"),
        ShareFs::Virtiofs => format!("virtiofs:{ROOT_TAG}"),
    }
}

/// The modules the guest loads to mount its root share.
fn share_modules(fs: ShareFs) -> [&'static str; 2] {
    match fs {
        ShareFs::NineP => ["9pnet_virtio", "9p"],
        ShareFs::Virtiofs => ["fuse", "virtiofs"],
    }
}

/// When the guest mounts the share [`ROOT_TAG`] as its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// No share.
    None,
    /// At boot (a cold boot).
    AtBoot(ShareFs),
    /// When the host says (`Resume`): the modules are loaded and the device is
    /// present, unmounted, as a template snapshot needs it (9p blocks
    /// migration while mounted).
    OnResume(ShareFs),
}

/// The kernel command line of the guest: the channel's modules, and the share's
/// as `share` says.
pub fn kernel_cmdline(machine: Machine, tsc_khz: u64, share: Share) -> String {
    let mut modules: Vec<&str> = machine.boot_modules().to_vec();
    let mut root = String::new();
    match share {
        Share::None => {}
        Share::AtBoot(kind) => {
            modules.extend(share_modules(kind));
            root = format!(" {}{}", agent::ROOT_OPTION, root_share(kind));
        }
        Share::OnResume(kind) => modules.extend(share_modules(kind)),
    }
    format!(
        "console=ttyS0 quiet panic=-1 tsc_early_khz={tsc_khz} {}{}{root} -- {}",
        agent::LOAD_OPTION,
        modules.join(","),
        agent::SUBCOMMAND
    )
}

/// Where QEMU's pieces come from and go to.
#[derive(Debug, Clone)]
pub struct QemuIo {
    /// The kernel and the initramfs, as QEMU opens them.
    pub kernel: String,
    pub initrd: String,
    /// The channel to the agent: a socket QEMU inherits at this descriptor.
    pub channel_fd: i32,
    /// The serial console: a socket QEMU inherits at this descriptor, or (None)
    /// QEMU's stdout.
    pub console_fd: Option<i32>,
    /// The host's directory served to the guest as its root (read and write
    /// as its server may: what the server may not, the guest may not).
    pub share: Option<ShareIo>,
    /// Whether the guest mounts the share at boot, or on `Resume`.
    pub mount_share_at_boot: bool,
    /// A template snapshot made or restored (see [`crate::snapshot`]).
    pub snapshot: Option<SnapshotIo>,
}

/// How the root share reaches QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareIo {
    /// QEMU serves this directory over 9p itself.
    NineP { path: String },
    /// virtiofsd serves it; QEMU speaks vhost-user to it on the socket it
    /// inherits at this descriptor (connected).
    Virtiofs { chardev_fd: i32 },
}

impl ShareIo {
    fn fs(&self) -> ShareFs {
        match self {
            ShareIo::NineP { .. } => ShareFs::NineP,
            ShareIo::Virtiofs { .. } => ShareFs::Virtiofs,
        }
    }
}

/// QEMU's pieces for a template snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotIo {
    /// QEMU's monitor (QMP): a socket QEMU inherits at this descriptor.
    pub qmp_fd: i32,
    /// The template, inherited at this descriptor: write-only to make it,
    /// read-only to restore it (QEMU's fd set hands it out by mode).
    pub template_fd: i32,
    /// Restore the template (`-incoming`) instead of booting.
    pub restore: bool,
    /// The `mapped-ram` capability (QEMU ≥ 9.0), on both sides.
    pub mapped_ram: bool,
}

/// What names a template's configuration: QEMU's arguments for `config` in a
/// template's layout, the descriptors and the boot files' paths left out
/// (the template's name has the boot files' own keys).
pub fn template_layout(config: &Config, kvm: bool, tsc_khz: u64, mapped_ram: bool) -> Vec<String> {
    let share = match config.share {
        ShareKind::NineP => ShareIo::NineP {
            path: "share".into(),
        },
        ShareKind::Virtiofs(_) => ShareIo::Virtiofs { chardev_fd: 0 },
    };
    let io = QemuIo {
        kernel: "kernel".into(),
        initrd: "initrd".into(),
        channel_fd: 0,
        console_fd: Some(0),
        share: Some(share),
        mount_share_at_boot: false,
        snapshot: Some(SnapshotIo {
            qmp_fd: 0,
            template_fd: 0,
            restore: false,
            mapped_ram,
        }),
    };
    let mut layout = qemu_args(config, &io, kvm, tsc_khz);
    layout.insert(0, config.qemu.display().to_string());
    layout
}

/// QEMU's arguments for `config` and `io`.
pub fn qemu_args(config: &Config, io: &QemuIo, kvm: bool, tsc_khz: u64) -> Vec<String> {
    let (machine, virtio) = match config.machine {
        Machine::Microvm => ("microvm,pic=off", "device"),
        Machine::Q35 => ("q35", "pci"),
    };
    let memory = config.memory_mib.to_string();
    // virtiofsd maps the guest's RAM: shared memory, not QEMU's private.
    let virtiofs = matches!(io.share, Some(ShareIo::Virtiofs { .. }));
    let machine = if virtiofs {
        format!("{machine},memory-backend=ram")
    } else {
        machine.to_string()
    };
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&["-M", &machine]);
    if virtiofs {
        let ram = format!("memory-backend-memfd,id=ram,size={memory}M,share=on");
        push(&["-object", &ram]);
    }
    if kvm {
        push(&["-accel", "kvm", "-cpu", "host"]);
    } else {
        // A 64 MiB translation cache instead of the default's gigabyte of address space.
        push(&["-accel", "tcg,tb-size=64"]);
    }
    let cpus = config.cpus.max(1).to_string();
    push(&["-m", &memory, "-smp", &cpus]);
    // QEMU's own seccomp filter.
    push(&[
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    ]);
    // No network device of any kind.
    push(&["-nic", "none"]);
    // The console, which the host drains into a bounded tail.
    let console = match io.console_fd {
        Some(fd) => format!("socket,id=con,fd={fd}"),
        None => "stdio,id=con,signal=off".to_string(),
    };
    push(&["-chardev", &console, "-serial", "chardev:con"]);
    let chan = format!("socket,id=chan,fd={}", io.channel_fd);
    let port = format!("virtserialport,chardev=chan,name={}", agent::PORT_NAME);
    let bus = format!("virtio-serial-{virtio}");
    push(&["-device", &bus, "-chardev", &chan, "-device", &port]);
    match &io.share {
        None => {}
        Some(ShareIo::NineP { path }) => {
            // security_model=none: files are made as QEMU's user, and the guest's
            // chown of them is ignored; multidevs=remap: the view spans several
            // file systems, whose inode numbers could collide in the guest.
            let path = path.replace(',', ",,");
            let fsdev = format!("local,id=root,path={path},security_model=none,multidevs=remap");
            let device = format!("virtio-9p-{virtio},fsdev=root,mount_tag={ROOT_TAG}");
            push(&["-fsdev", &fsdev, "-device", &device]);
        }
        Some(ShareIo::Virtiofs { chardev_fd }) => {
            let chardev = format!("socket,id=fs,fd={chardev_fd}");
            let device = format!("vhost-user-fs-{virtio},chardev=fs,tag={ROOT_TAG}");
            push(&["-chardev", &chardev, "-device", &device]);
        }
    }
    if let Some(snapshot) = &io.snapshot {
        let qmp = format!("socket,id=qmp,fd={}", snapshot.qmp_fd);
        push(&["-chardev", &qmp, "-mon", "chardev=qmp,mode=control"]);
        let fd = format!("fd={},set={}", snapshot.template_fd, crate::snapshot::FDSET);
        push(&["-add-fd", &fd]);
        if snapshot.mapped_ram {
            push(&["-global", "migration.mapped-ram=on"]);
        }
        if snapshot.restore {
            let uri = format!("file:/dev/fdset/{}", crate::snapshot::FDSET);
            push(&["-incoming", &uri]);
        }
    }
    let share = match (io.share.as_ref().map(ShareIo::fs), io.mount_share_at_boot) {
        (None, _) => Share::None,
        (Some(kind), true) => Share::AtBoot(kind),
        (Some(kind), false) => Share::OnResume(kind),
    };
    let cmdline = kernel_cmdline(config.machine, tsc_khz, share);
    push(&[
        "-kernel", &io.kernel, "-initrd", &io.initrd, "-append", &cmdline,
    ]);
    a
}

/// The last bytes QEMU wrote (console and its own messages), at most [`TAIL`].
#[derive(Default)]
pub(crate) struct Tail(Vec<u8>);

/// How much of QEMU's output is kept for error messages.
const TAIL: usize = 8 << 10;

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        if self.0.len() > TAIL {
            let cut = self.0.len() - TAIL;
            self.0.drain(..cut);
        }
    }
}

/// Copies what `from` yields into `tail` on a thread of its own, until its end.
pub(crate) fn drain(mut from: impl Read + Send + 'static, tail: Arc<Mutex<Tail>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(&buf[..n]);
        }
    });
}

/// The text of `tail`, once the drains caught up with what QEMU wrote last.
pub(crate) fn tail_text(tail: &Mutex<Tail>) -> String {
    std::thread::sleep(Duration::from_millis(20));
    let t = tail.lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&t.0).into_owned()
}

/// Why the agent never said it was ready.
#[derive(Debug)]
pub enum NotReady {
    /// The channel closed: QEMU exited, or the guest powered off.
    Closed,
    /// Anything else, said.
    Failed(String),
}

/// The host's end of the channel to the guest agent: requests one at a time,
/// every frame checked against the request that is open.
pub struct Channel {
    reader: FrameReader<UnixStream>,
    writer: Signaller,
    next_id: u32,
    broken: bool,
    /// The guest's streams, once [`Channel::network`] or [`Channel::control`]
    /// asked for some.
    net: Option<HostNet>,
    /// The descriptor of the next command's control stream, if it has one.
    control_fd: Option<i32>,
    /// How many processes of the last command the guest killed for its
    /// memory limit.
    oom_kills: u32,
}

/// The channel's writing end, shared: requests go out through it, and signals
/// for the request that is open, from any thread ([`Channel::signaller`]).
#[derive(Clone)]
pub struct Signaller(Arc<Mutex<Writer>>);

struct Writer {
    stream: UnixStream,
    /// The request whose command signals go to.
    open: Option<u32>,
}

impl Signaller {
    fn new(stream: UnixStream) -> Signaller {
        Signaller(Arc::new(Mutex::new(Writer { stream, open: None })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `signal` to the command of the request that is open (the agent
    /// delivers it once the command started); false when none is open.
    pub fn send(&self, signal: i32) -> bool {
        let mut writer = self.lock();
        let Some(id) = writer.open else {
            return false;
        };
        protocol::write_message(&mut writer.stream, &Message::Signal { id, signal }).is_ok()
    }

    /// Gives the terminal of the request that is open a new size; false when
    /// none is open.
    pub fn resize(&self, size: crate::protocol::TtySize) -> bool {
        let mut writer = self.lock();
        let Some(id) = writer.open else {
            return false;
        };
        protocol::write_message(&mut writer.stream, &Message::Resize { id, size }).is_ok()
    }
}

impl Sink for Signaller {
    fn message(&self, message: &Message) -> io::Result<()> {
        protocol::write_message(&mut self.lock().stream, message)
    }

    fn chunk(&self, id: u32, data: &[u8]) -> io::Result<()> {
        protocol::write_data(&mut self.lock().stream, protocol::KIND_STREAM, id, data)
    }
}

impl Channel {
    pub fn new(stream: UnixStream) -> io::Result<Channel> {
        Ok(Channel {
            writer: Signaller::new(stream.try_clone()?),
            reader: FrameReader::new(stream, protocol::MAX_FRAME),
            next_id: 1,
            broken: false,
            net: None,
            control_fd: None,
            oom_kills: 0,
        })
    }

    /// How many processes of the last command the guest kernel killed for
    /// its memory limit (0 for a command without one).
    pub fn oom_kills(&self) -> u32 {
        self.oom_kills
    }

    /// Who sends signals to the command of the request that is open.
    pub fn signaller(&self) -> Signaller {
        self.writer.clone()
    }

    /// Waits at most `timeout` for the agent's `Ready` in the protocol's version.
    pub fn ready(&mut self, timeout: Duration) -> Result<(), NotReady> {
        let result = match self.next_within(timeout)? {
            Frame::Message(Message::Ready { version }) if version == protocol::VERSION => Ok(()),
            Frame::Message(Message::Ready { version }) => Err(NotReady::Failed(format!(
                "the agent speaks protocol {version}, not {}",
                protocol::VERSION
            ))),
            other => Err(NotReady::Failed(format!(
                "the agent's first frame was not Ready: {}",
                describe(&other)
            ))),
        };
        self.broken = result.is_err();
        result
    }

    /// Makes a clone of a template unique and current, waiting at most
    /// `timeout` for the agent (see [`Message::Resume`]): fresh host randomness
    /// for its RNG, the host's clock, and the share `root` mounted.
    pub fn resume(&mut self, root: Option<&str>, timeout: Duration) -> Result<(), NotReady> {
        let seed = crate::snapshot::seed().map_err(NotReady::Failed)?;
        let (secs, nanos) = crate::snapshot::now();
        let resume = Message::Resume {
            seed,
            secs,
            nanos,
            root: root.map(str::to_string),
        };
        let sent = protocol::write_message(&mut self.writer.lock().stream, &resume);
        let result = match sent {
            Err(_) => Err(NotReady::Closed),
            Ok(()) => match self.next_within(timeout)? {
                Frame::Message(Message::Resumed { error: None }) => Ok(()),
                Frame::Message(Message::Resumed { error: Some(mut e) }) => {
                    truncate(&mut e, 4096);
                    Err(NotReady::Failed(format!("the guest could not resume: {e}")))
                }
                other => Err(NotReady::Failed(format!(
                    "the agent did not answer Resume: {}",
                    describe(&other)
                ))),
            },
        };
        self.broken = result.is_err();
        result
    }

    /// The next frame, waiting at most `timeout`; the channel is broken after
    /// an error.
    fn next_within(&mut self, timeout: Duration) -> Result<Frame, NotReady> {
        let set = |reader: &FrameReader<UnixStream>, t| {
            reader
                .get_ref()
                .set_read_timeout(t)
                .map_err(|e| NotReady::Failed(e.to_string()))
        };
        set(&self.reader, Some(timeout))?;
        let result = match self.reader.read_frame() {
            Ok(frame) => Ok(frame),
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(NotReady::Failed(format!(
                    "no answer from the agent within {} s",
                    timeout.as_secs()
                )))
            }
            Err(FrameError::Closed) => Err(NotReady::Closed),
            Err(e) => Err(NotReady::Failed(e.to_string())),
        };
        set(&self.reader, None)?;
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    /// Gives the guest its network (see [`crate::net`]): the agent opens the
    /// broker's sockets on its loopback, and each stream it opens is handed to
    /// `broker` as one end of a socket pair. Before the first request.
    pub fn network(
        &mut self,
        spec: &NetworkSpec,
        broker: std::sync::mpsc::Sender<UnixStream>,
    ) -> Result<(), VmError> {
        if self.broken {
            return Err(VmError::Broken);
        }
        let message = Message::Network {
            ports: spec.ports.clone(),
            local_ports: spec.local_ports.clone(),
            proxy_port: spec.proxy_port,
        };
        protocol::write_message(&mut self.writer.lock().stream, &message)?;
        let answer = match self.reader.read_frame() {
            Ok(Frame::Message(Message::NetworkReady { error: None })) => Ok(()),
            Ok(Frame::Message(Message::NetworkReady { error: Some(mut e) })) => {
                truncate(&mut e, 4096);
                Err(VmError::Network(e))
            }
            Ok(other) => Err(VmError::Protocol(format!(
                "an unexpected frame {}",
                describe(&other)
            ))),
            Err(FrameError::Closed) => Err(VmError::Ended(String::new())),
            Err(e) => Err(VmError::Protocol(e.to_string())),
        };
        if answer.is_err() {
            self.broken = true;
        } else {
            self.streams().set_broker(broker);
        }
        answer
    }

    /// The next command gets a stream to the host at its descriptor `fd`
    /// (the host's control endpoint), carried over the channel to `endpoint`.
    pub fn control(&mut self, fd: i32, endpoint: UnixStream) {
        self.streams().set_control(endpoint);
        self.control_fd = Some(fd);
    }

    fn streams(&mut self) -> &mut HostNet {
        let writer = &self.writer;
        self.net.get_or_insert_with(|| {
            let sink: Arc<dyn Sink> = Arc::new(writer.clone());
            HostNet::new(sink)
        })
    }

    /// Runs `request` in the guest: its stdin read from `stdin` (else
    /// `/dev/null`) on a thread of its own, its output written to `stdout` and
    /// `stderr` as it arrives, its status returned. After an error other than
    /// [`VmError::ExecFailed`] the channel refuses further use.
    ///
    /// A command with a terminal that stops itself (job control) is reported
    /// to `on_stop`, whose caller continues it (a SIGCONT through the
    /// [`Signaller`]) when it sees fit; without one it is continued at once.
    pub fn exec(
        &mut self,
        request: &ExecRequest,
        stdin: Option<Input>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
        on_stop: Option<&dyn Fn()>,
    ) -> Result<Status, VmError> {
        if self.broken {
            return Err(VmError::Broken);
        }
        if request.argv.is_empty() {
            return Err(VmError::Request("an empty argv".into()));
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let streams = Streams {
            stdin,
            stdout,
            stderr,
            on_stop,
        };
        let channel = Ends {
            reader: &mut self.reader,
            writer: &self.writer,
            net: self.net.as_ref(),
            control_fd: self.control_fd.take(),
        };
        let result = exchange(channel, id, request, streams);
        self.oom_kills = result.as_ref().map_or(0, |&(_, kills)| kills);
        let result = result.map(|(status, _)| status);
        // Anything but a command that could not start leaves the stream
        // mid-request, or the guest lying: nothing it says later can be matched
        // to a request with confidence.
        if !matches!(result, Ok(_) | Err(VmError::ExecFailed { .. })) {
            self.broken = true;
        }
        result
    }

    /// Tells the agent there is nothing more (it syncs and powers the VM off),
    /// and waits at most `within` for the channel's end (QEMU has exited).
    /// Says whether it ended.
    pub fn close(self, within: Duration) -> bool {
        let _ = (self.writer.lock().stream).shutdown(std::net::Shutdown::Write);
        let stream = self.reader.get_ref();
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                return false;
            }
            match { stream }.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

/// A running VM with its agent ready, QEMU a child of this process (the
/// foundation's direct launch, which the tests and bench/vm use; the backend
/// runs QEMU in an OS sandbox, see [`crate::backend`]).
pub struct Vm {
    qemu: Child,
    channel: Channel,
    tail: Arc<Mutex<Tail>>,
    /// The accelerator and why.
    pub accel: AccelChoice,
    /// From starting QEMU to the agent's `Ready`.
    pub boot_time: Duration,
}

impl Vm {
    /// Starts QEMU on `image` and waits for the agent's `Ready`.
    pub fn boot(config: &Config, image: &Image) -> Result<Vm, VmError> {
        let accel = choose_accel(config.accel);
        let tsc_khz = host_tsc_khz();
        let (host_end, guest_end) = UnixStream::pair()?;
        let io = QemuIo {
            kernel: image.vmlinux.to_string_lossy().into_owned(),
            initrd: image.initramfs.to_string_lossy().into_owned(),
            channel_fd: guest_end.as_raw_fd(),
            console_fd: None,
            share: None,
            mount_share_at_boot: false,
            snapshot: None,
        };
        let args = qemu_args(config, &io, accel.kvm, tsc_khz);
        let start = Instant::now();
        let mut command = Command::new(&config.qemu);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let parent = rustix::process::getpid();
        let guest_fd = guest_end.as_raw_fd();
        // SAFETY: the closure runs in the child between fork and exec and calls
        // only async-signal-safe system calls (fcntl, prctl, getppid).
        unsafe {
            command.pre_exec(move || {
                // QEMU inherits the channel (created close-on-exec).
                let fd = std::os::fd::BorrowedFd::borrow_raw(guest_fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))?;
                if rustix::process::getppid() != Some(parent) {
                    // The parent died before the death signal was armed.
                    return Err(io::Error::other("cordon exited"));
                }
                Ok(())
            });
        }
        let mut qemu = command.spawn().map_err(|e| {
            let name = config.qemu.display().to_string();
            if e.kind() == io::ErrorKind::NotFound {
                VmError::QemuMissing(name)
            } else {
                VmError::Spawn(name, e)
            }
        })?;
        drop(guest_end);
        let tail = Arc::new(Mutex::new(Tail::default()));
        if let Some(out) = qemu.stdout.take() {
            drain(out, tail.clone());
        }
        if let Some(err) = qemu.stderr.take() {
            drain(err, tail.clone());
        }
        let mut vm = Vm {
            qemu,
            channel: Channel::new(host_end)?,
            tail,
            accel,
            boot_time: Duration::ZERO,
        };
        if let Err(not_ready) = vm.channel.ready(config.boot_timeout) {
            let why = match not_ready {
                NotReady::Closed => {
                    let status = vm.qemu.wait().map(|s| s.to_string()).unwrap_or_default();
                    format!("QEMU exited ({status})")
                }
                NotReady::Failed(why) => why,
            };
            vm.stop();
            return Err(VmError::Boot {
                why,
                console: vm.console_tail(),
            });
        }
        vm.boot_time = start.elapsed();
        Ok(vm)
    }

    /// The end of QEMU's output (console and errors), for messages.
    pub fn console_tail(&self) -> String {
        tail_text(&self.tail)
    }

    /// QEMU's process id.
    pub fn qemu_pid(&self) -> u32 {
        self.qemu.id()
    }

    /// Runs `request` in the guest (see [`Channel::exec`]), its stdin read
    /// from `stdin` (else `/dev/null`); after an error other than
    /// [`VmError::ExecFailed`] QEMU is killed.
    pub fn exec(
        &mut self,
        request: &ExecRequest,
        stdin: Option<Input>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<Status, VmError> {
        let result = match self.channel.exec(request, stdin, stdout, stderr, None) {
            Err(VmError::Ended(_)) => Err(VmError::Ended(self.console_tail())),
            other => other,
        };
        if !matches!(result, Ok(_) | Err(VmError::ExecFailed { .. })) {
            self.stop();
        }
        result
    }

    /// Kills QEMU (the guest has nothing to save) and reaps it.
    fn stop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

/// A command's standard input on the host.
pub type Input = Box<dyn Read + Send>;

/// Where a command's streams come from and go to.
struct Streams<'a> {
    stdin: Option<Input>,
    stdout: &'a mut dyn Write,
    stderr: &'a mut dyn Write,
    /// Told when a terminal's command stopped itself (see [`Channel::exec`]).
    on_stop: Option<&'a dyn Fn()>,
}

/// Sends what `from` yields as stdin chunks of request `id`, within the window,
/// then an empty chunk (its end); stops when the request is no longer open.
fn send_stdin(mut from: Input, id: u32, writer: &Signaller, credit: &Credit) {
    let mut buf = vec![0u8; protocol::DATA_CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        // The end of the input needs no credit (the agent has room for it).
        if n > 0 && !credit.take() {
            return;
        }
        let mut w = writer.lock();
        if w.open != Some(id)
            || protocol::write_data(&mut w.stream, protocol::KIND_STDIN, id, &buf[..n]).is_err()
            || n == 0
        {
            return;
        }
    }
}

/// The channel's ends a request uses: frames of the guest's network (if it has
/// one) are the network's, whatever request is open.
struct Ends<'a, R> {
    reader: &'a mut FrameReader<R>,
    writer: &'a Signaller,
    net: Option<&'a HostNet>,
    /// The command's control stream's descriptor, if it has one.
    control_fd: Option<i32>,
}

/// One request over the channel: `Exec` sent, then the guest's frames read until
/// its `Exited`, each checked against the request that is open; the stdin
/// chunks, if any, sent meanwhile from a thread of their own.
fn exchange<R: Read>(
    channel: Ends<'_, R>,
    id: u32,
    request: &ExecRequest,
    streams: Streams<'_>,
) -> Result<(Status, u32), VmError> {
    let Streams {
        stdin,
        stdout,
        stderr,
        on_stop,
    } = streams;
    let Ends {
        reader,
        writer,
        net,
        control_fd,
    } = channel;
    {
        let mut w = writer.lock();
        protocol::write_message(
            &mut w.stream,
            &Message::Exec {
                id,
                argv: request.argv.clone(),
                env: request.env.clone(),
                cwd: request.cwd.clone(),
                uid: request.uid,
                gid: request.gid,
                stdin: stdin.is_some(),
                tty: request.tty,
                control_fd,
                confine: request.confine,
            },
        )?;
        w.open = Some(id);
    }
    let credit = stdin.map(|input| {
        let credit = Arc::new(Credit::new(protocol::STDIN_WINDOW));
        let (writer, sending) = (writer.clone(), credit.clone());
        // Not joined: it may wait on an input that never ends (a terminal).
        std::thread::spawn(move || send_stdin(input, id, &writer, &sending));
        credit
    });
    // Nobody to hand the terminal back to: the command goes on at once.
    let continue_at_once = || {
        let signal = Message::Signal {
            id,
            signal: libc::SIGCONT,
        };
        let _ = protocol::write_message(&mut writer.lock().stream, &signal);
    };
    let stopped = match (on_stop, request.tty) {
        (_, None) => None,
        (Some(on_stop), Some(_)) => Some(on_stop),
        (None, Some(_)) => Some(&continue_at_once as &dyn Fn()),
    };
    let result = receive(
        reader,
        net,
        id,
        credit.as_deref(),
        (stdout, stderr),
        stopped,
    );
    writer.lock().open = None;
    if let Some(credit) = credit {
        credit.end();
    }
    result
}

/// The guest's frames for request `id`, read until its `Exited`: its status
/// and its count of processes killed for the memory limit.
///
/// `stopped` is told of each stop of a command with a terminal; a stop of one
/// without (`None`) is a lie.
fn receive<R: Read>(
    reader: &mut FrameReader<R>,
    net: Option<&HostNet>,
    id: u32,
    credit: Option<&Credit>,
    (stdout, stderr): (&mut dyn Write, &mut dyn Write),
    stopped: Option<&dyn Fn()>,
) -> Result<(Status, u32), VmError> {
    let mut started = false;
    loop {
        let frame = match reader.read_frame() {
            Ok(f) => f,
            Err(FrameError::Closed) => return Err(VmError::Ended(String::new())),
            Err(FrameError::Io(e)) => return Err(VmError::Io(e)),
            Err(e) => return Err(VmError::Protocol(e.to_string())),
        };
        let frame = match net {
            None => frame,
            Some(net) => match net.handle(frame) {
                Ok(Some(frame)) => frame,
                Ok(None) => continue,
                Err(e) => return Err(VmError::Protocol(e.to_string())),
            },
        };
        let foreign = |other: u32| {
            VmError::Protocol(format!(
                "a frame for request {other}, while only {id} is open"
            ))
        };
        match frame {
            Frame::Message(Message::Started { id: got, .. }) if got == id => {
                if started {
                    return Err(VmError::Protocol(format!("request {id} started twice")));
                }
                started = true;
            }
            Frame::Message(Message::Failed {
                id: got,
                error,
                status,
            }) if got == id && !started => {
                if !(125..=127).contains(&status) {
                    return Err(VmError::Protocol(format!(
                        "an impossible status {status} for a command that did not start"
                    )));
                }
                let mut error = error;
                truncate(&mut error, 4096);
                return Err(VmError::ExecFailed { status, error });
            }
            Frame::Message(Message::Exited {
                id: got,
                status,
                oom_kills,
            }) if got == id && started => {
                let valid = match status {
                    Status::Code(c) => (0..=255).contains(&c),
                    Status::Signal(s) => (1..=64).contains(&s),
                };
                if !valid {
                    return Err(VmError::Protocol(format!(
                        "an impossible exit status {status:?}"
                    )));
                }
                return Ok((status, oom_kills));
            }
            Frame::Message(Message::Stopped { id: got }) if got == id && started => {
                let Some(stopped) = stopped else {
                    return Err(VmError::Protocol(format!(
                        "a stop of request {id}, which has no terminal"
                    )));
                };
                stopped();
            }
            Frame::Message(Message::StdinAck { id: got }) if got == id => {
                if !credit.is_some_and(Credit::acknowledged) {
                    return Err(VmError::Protocol(format!(
                        "a stdin acknowledgement request {id} was not owed"
                    )));
                }
            }
            // Flushed frame by frame: a prompt without a newline must not wait in
            // a line buffer (Rust's stdout) for the rest of its line.
            Frame::Stdout { id: got, data } if got == id && started => {
                stdout.write_all(&data)?;
                stdout.flush()?;
            }
            Frame::Stderr { id: got, data } if got == id && started => {
                stderr.write_all(&data)?;
                stderr.flush()?;
            }
            Frame::Message(
                Message::Started { id: got, .. }
                | Message::Failed { id: got, .. }
                | Message::Exited { id: got, .. }
                | Message::Stopped { id: got }
                | Message::StdinAck { id: got },
            )
            | Frame::Stdout { id: got, .. }
            | Frame::Stderr { id: got, .. }
                if got != id =>
            {
                return Err(foreign(got));
            }
            other => {
                return Err(VmError::Protocol(format!(
                    "an unexpected frame {}",
                    describe(&other)
                )));
            }
        }
    }
}

fn describe(frame: &Frame) -> String {
    match frame {
        Frame::Message(m) => {
            let mut s = format!("{m:?}");
            truncate(&mut s, 200);
            s
        }
        Frame::Stdout { id, data } => {
            format!("stdout of request {id} ({} bytes) out of order", data.len())
        }
        Frame::Stderr { id, data } => {
            format!("stderr of request {id} ({} bytes) out of order", data.len())
        }
        Frame::Stdin { id, data } => {
            format!(
                "stdin of request {id} ({} bytes) from the guest",
                data.len()
            )
        }
        Frame::Stream { id, data } => {
            format!(
                "a chunk of stream {id} ({} bytes) without a network",
                data.len()
            )
        }
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{KIND_MESSAGE, KIND_STDERR, KIND_STDOUT, write_data, write_message};

    #[test]
    fn the_vm_gets_the_policys_memory_and_vcpus() {
        let default = Config::default();
        assert_eq!((default.memory_mib, default.cpus), (1024, 2));
        let origin = cordon_policy::Origin::Default;
        let vm = VmResources {
            memory: cordon_policy::Sourced::new(3 << 29, origin.clone()),
            cpus: cordon_policy::Sourced::new(4, origin),
        };
        let config = Config::for_policy(&vm);
        assert_eq!((config.memory_mib, config.cpus), (1536, 4));
        assert_eq!(config.machine, Machine::Q35);
    }

    fn request() -> ExecRequest {
        ExecRequest {
            argv: vec!["/bin/true".into()],
            env: vec![],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            tty: None,
            confine: None,
        }
    }

    /// Runs request 5 against a fake agent that sends `script` (raw bytes).
    fn against(script: Vec<u8>) -> (Result<Status, VmError>, Vec<u8>, Vec<u8>) {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let agent = std::thread::spawn(move || {
            let mut r = FrameReader::new(guest.try_clone().unwrap(), protocol::MAX_FRAME);
            let exec = r.read_frame().unwrap();
            assert!(matches!(exec, Frame::Message(Message::Exec { id: 5, .. })));
            let _ = guest.write_all(&script);
        });
        let mut reader = FrameReader::new(host.try_clone().unwrap(), protocol::MAX_FRAME);
        let writer = Signaller::new(host);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let streams = Streams {
            stdin: None,
            stdout: &mut out,
            stderr: &mut err,
            on_stop: None,
        };
        let ends = Ends {
            reader: &mut reader,
            writer: &writer,
            net: None,
            control_fd: None,
        };
        let result = exchange(ends, 5, &request(), streams).map(|(status, _)| status);
        agent.join().unwrap();
        (result, out, err)
    }

    fn msg(m: Message) -> Vec<u8> {
        let mut v = Vec::new();
        write_message(&mut v, &m).unwrap();
        v
    }

    fn data(kind: u8, id: u32, d: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_data(&mut v, kind, id, d).unwrap();
        v
    }

    #[test]
    fn an_honest_guest() {
        let script = [
            msg(Message::Started { id: 5, pid: 9 }),
            data(KIND_STDOUT, 5, b"out"),
            data(KIND_STDERR, 5, b"err"),
            msg(Message::Exited {
                id: 5,
                status: Status::Code(4),
                oom_kills: 0,
            }),
        ]
        .concat();
        let (result, out, err) = against(script);
        assert_eq!(result.unwrap(), Status::Code(4));
        assert_eq!((&out[..], &err[..]), (&b"out"[..], &b"err"[..]));
        let (result, _, _) = against(msg(Message::Failed {
            id: 5,
            error: "nope".into(),
            status: 127,
        }));
        assert!(
            matches!(result, Err(VmError::ExecFailed { status: 127, error }) if error == "nope")
        );
    }

    /// `resume` sends fresh randomness (never the same twice), the host's clock
    /// and the share, and takes only `Resumed` without an error as its answer.
    #[test]
    fn resume_takes_only_a_clean_resumed() {
        let mut seeds = Vec::new();
        let cases: Vec<(Vec<u8>, bool)> = vec![
            (msg(Message::Resumed { error: None }), true),
            (
                msg(Message::Resumed {
                    error: Some("no 9p".into()),
                }),
                false,
            ),
            (msg(Message::Ready { version: 2 }), false),
            (
                msg(Message::Exited {
                    id: 1,
                    status: Status::Code(0),
                    oom_kills: 0,
                }),
                false,
            ),
            (b"\x00\x00\x00\x05\x00junk".to_vec(), false),
            (Vec::new(), false),
        ];
        for (script, ok) in cases {
            let (host, mut guest) = UnixStream::pair().unwrap();
            let agent = std::thread::spawn(move || {
                let mut r = FrameReader::new(guest.try_clone().unwrap(), protocol::MAX_FRAME);
                let frame = r.read_frame().unwrap();
                let _ = guest.write_all(&script);
                frame
            });
            let mut channel = Channel::new(host).unwrap();
            let result = channel.resume(Some(ROOT_TAG), Duration::from_secs(5));
            let Frame::Message(Message::Resume {
                seed, secs, root, ..
            }) = agent.join().unwrap()
            else {
                panic!("not a Resume");
            };
            let (now, _) = crate::snapshot::now();
            assert!((now - secs).abs() <= 5);
            assert_eq!(root.as_deref(), Some(ROOT_TAG));
            assert_eq!(seed.len(), 128);
            seeds.push(seed);
            assert_eq!(result.is_ok(), ok, "{result:?}");
            assert_eq!(channel.broken, !ok);
        }
        seeds.sort();
        seeds.dedup();
        assert_eq!(seeds.len(), 6, "a seed was sent twice");
    }

    /// A terminal's command that stops is continued at once when nobody takes
    /// the stop (SIGCONT to it), and reported to whoever does.
    #[test]
    fn a_stopped_terminal_command_is_continued_or_reported() {
        for handled in [false, true] {
            let (host, mut guest) = UnixStream::pair().unwrap();
            let agent = std::thread::spawn(move || {
                let mut r = FrameReader::new(guest.try_clone().unwrap(), protocol::MAX_FRAME);
                assert!(matches!(
                    r.read_frame().unwrap(),
                    Frame::Message(Message::Exec { id: 5, .. })
                ));
                let stopped = [
                    msg(Message::Started { id: 5, pid: 9 }),
                    msg(Message::Stopped { id: 5 }),
                ];
                guest.write_all(&stopped.concat()).unwrap();
                let continued = (!handled).then(|| r.read_frame().unwrap());
                let exited = msg(Message::Exited {
                    id: 5,
                    status: Status::Code(0),
                    oom_kills: 0,
                });
                guest.write_all(&exited).unwrap();
                continued
            });
            let mut reader = FrameReader::new(host.try_clone().unwrap(), protocol::MAX_FRAME);
            let writer = Signaller::new(host);
            let stops = std::sync::atomic::AtomicU32::new(0);
            let on_stop = || {
                stops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            };
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let streams = Streams {
                stdin: None,
                stdout: &mut out,
                stderr: &mut err,
                on_stop: handled.then_some(&on_stop as &dyn Fn()),
            };
            let ends = Ends {
                reader: &mut reader,
                writer: &writer,
                net: None,
                control_fd: None,
            };
            let mut request = request();
            request.tty = Some(crate::protocol::TtySize { rows: 24, cols: 80 });
            let result = exchange(ends, 5, &request, streams);
            let continued = agent.join().unwrap();
            assert!(matches!(result, Ok((Status::Code(0), 0))), "{result:?}");
            if handled {
                assert_eq!(stops.load(std::sync::atomic::Ordering::SeqCst), 1);
            } else {
                assert!(
                    matches!(
                        continued,
                        Some(Frame::Message(Message::Signal {
                            id: 5,
                            signal: libc::SIGCONT
                        }))
                    ),
                    "{continued:?}"
                );
            }
        }
    }

    #[test]
    fn a_lying_guest_is_refused() {
        let started = msg(Message::Started { id: 5, pid: 9 });
        let exited = |id, status| {
            msg(Message::Exited {
                id,
                status,
                oom_kills: 0,
            })
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "an exit status for another request",
                [started.clone(), exited(6, Status::Code(0))].concat(),
            ),
            (
                "output of another request",
                [started.clone(), data(KIND_STDOUT, 4, b"x")].concat(),
            ),
            ("output before Started", data(KIND_STDOUT, 5, b"x")),
            (
                "a stop of a command without a terminal",
                [started.clone(), msg(Message::Stopped { id: 5 })].concat(),
            ),
            (
                "a stop of another request",
                [started.clone(), msg(Message::Stopped { id: 6 })].concat(),
            ),
            ("Exited before Started", exited(5, Status::Code(0))),
            ("Started twice", [started.clone(), started.clone()].concat()),
            (
                "Failed after Started",
                [
                    started.clone(),
                    msg(Message::Failed {
                        id: 5,
                        error: "x".into(),
                        status: 127,
                    }),
                ]
                .concat(),
            ),
            (
                "an impossible code",
                [started.clone(), exited(5, Status::Code(256))].concat(),
            ),
            (
                "an impossible signal",
                [started.clone(), exited(5, Status::Signal(0))].concat(),
            ),
            (
                "Ready again",
                [started.clone(), msg(Message::Ready { version: 1 })].concat(),
            ),
            (
                "an Exec from the guest",
                msg(Message::Exec {
                    id: 5,
                    argv: vec![],
                    env: vec![],
                    cwd: "/".into(),
                    uid: 0,
                    gid: 0,
                    stdin: false,
                    tty: None,
                    control_fd: None,
                    confine: None,
                }),
            ),
            (
                "a stdin acknowledgement that was not owed (no stdin)",
                [started.clone(), msg(Message::StdinAck { id: 5 })].concat(),
            ),
            (
                "stdin from the guest",
                [started.clone(), data(protocol::KIND_STDIN, 5, b"x")].concat(),
            ),
            (
                "a Signal from the guest",
                [started.clone(), msg(Message::Signal { id: 5, signal: 2 })].concat(),
            ),
            (
                "an impossible status for a command that did not start",
                msg(Message::Failed {
                    id: 5,
                    error: "x".into(),
                    status: 0,
                }),
            ),
            (
                "an oversized frame",
                [
                    started.clone(),
                    (protocol::MAX_FRAME + 1).to_be_bytes().to_vec(),
                ]
                .concat(),
            ),
            (
                "a stream without a network",
                [
                    started.clone(),
                    msg(Message::StreamOpen {
                        id: 1,
                        control: false,
                    }),
                ]
                .concat(),
            ),
            (
                "a stream's chunk without a network",
                [started.clone(), data(protocol::KIND_STREAM, 1, b"x")].concat(),
            ),
            ("garbage", b"\x00\x00\x00\x05\x00junk".to_vec()),
            ("an unknown kind", vec![0, 0, 0, 1, 7]),
            (
                "JSON of another shape",
                [vec![0, 0, 0, 3, KIND_MESSAGE], b"{}".to_vec()].concat(),
            ),
        ];
        for (what, script) in cases {
            let (result, _, _) = against(script);
            assert!(
                matches!(result, Err(VmError::Protocol(_))),
                "{what}: {result:?}"
            );
        }
        // The guest hanging up mid-request.
        let (result, _, _) = against(started);
        assert!(matches!(result, Err(VmError::Ended(_))), "{result:?}");
    }
}
