//! The VM backend behind cordon-backend's neutral interface (`--backend vm`).
//!
//! A session runs its command in a QEMU guest whose file system is the OS
//! backend's view of the same policy: QEMU runs *inside* an OS sandbox of that
//! policy (namespaces, the mount view, Landlock, seccomp, limits; see
//! `cordon_sandbox::ViewServer`) and serves the view to the guest (virtiofsd
//! beside it where installed, else QEMU's own 9p; see [`crate::share`]), where
//! cordon's agent makes it the guest's root. So the workspace is writable at its
//! host path, the rest of the host read-only, denied paths absent, protected
//! paths read-only, and that is enforced on the host, on QEMU: guest root changes
//! nothing of it. QEMU adds its own seccomp filter (`-sandbox on`); an escape
//! from the guest lands in a cordon sandbox.
//!
//! The guest has no network device. In the `allowlist` mode its agent gives
//! its loopback the broker's sockets and relays each connection and its DNS
//! over the channel to the session's egress broker on the host (see
//! [`crate::net`]); QEMU's own sandbox has no network at all. `--net host` is
//! refused, never run with an unfiltered device. A command's control channel
//! (`cordon serve`'s tool server to the host control endpoint) is a stream of
//! its own over the channel, at descriptor [`GUEST_CONTROL_FD`] in the guest.
//!
//! Life of a session: [`VmSession::exec`] assembles the boot files (cached),
//! starts the OS sandbox whose command is QEMU, and on a thread of its own
//! waits for the agent, runs the command with this process's stdin (unless a
//! terminal), streams its output to this process's stdout and stderr, then
//! closes the channel (the agent syncs and powers off).
//! QEMU dies with the sandbox, and the sandbox with cordon (its supervisor has
//! the parent-death signal SIGKILL).

use crate::image::{self, Image};
use crate::net::NetworkSpec;
use crate::progress::Progress;
use crate::protocol::{Confine, TtySize};
use crate::share::{self, ShareKind};
use crate::snapshot::{self, PendingTemplate};
use crate::vm::{
    AccelChoice, Channel, Config, ExecRequest, NotReady, QemuIo, ShareIo, SnapshotIo, Tail,
    choose_accel, drain, qemu_args, remembered_tsc_khz, root_share, tail_text, template_layout,
};
use crate::{Status, VmError};
use cordon_backend::{
    Additions, Backend, BackendKind, Command, ControlChannel, Degraded, FileOverlay, Ingress,
    Layer, Layers, LimitsAssessment, Outcome, Program, Session, Terminal,
};
use cordon_policy::{NetMode, Policy};
use cordon_sandbox::{OsBackend, SERVED_VIEW, ServedTerminal, Stop, ViewServer};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// This cordon binary as a command in the guest sees it (see `Program::Cordon`):
/// the agent's own executable, which the process the agent forks still is when
/// it execs this path.
const GUEST_CORDON: &str = "/proc/self/exe";

/// The descriptor at which a command in the guest finds its control channel.
pub const GUEST_CONTROL_FD: i32 = 3;

/// How long the host waits, once the command ended, for the guest to power off
/// before it kills QEMU.
const POWER_OFF_WAIT: Duration = Duration::from_secs(10);

/// QEMU in an OS sandbox, the guest's root the sandbox's view.
#[derive(Default)]
pub struct VmBackend {
    os: OsBackend,
    /// The accelerator, probed once.
    accel: OnceLock<AccelChoice>,
    /// Told the steps of a first run (the boot files, the template).
    progress: Option<Arc<dyn Progress>>,
}

impl std::fmt::Debug for VmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmBackend")
            .field("accel", &self.accel)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl VmBackend {
    /// A backend that tells `progress` what a first run makes.
    pub fn with_progress(progress: Arc<dyn Progress>) -> VmBackend {
        VmBackend {
            progress: Some(progress),
            ..VmBackend::default()
        }
    }

    /// The accelerator sessions use (the probe of `cordon doctor`, run once).
    pub fn accel(&self) -> &AccelChoice {
        self.accel
            .get_or_init(|| choose_accel(crate::vm::Accel::Auto))
    }
}

impl Backend for VmBackend {
    type Session<'p> = VmSession<'p>;
    type Error = VmError;

    fn kind(&self) -> BackendKind {
        BackendKind::Vm
    }

    /// The VM, then the layers of the OS sandbox QEMU runs in.
    fn layers(&self, policy: &Policy, degraded: Degraded) -> Layers {
        let mut layers = vec![Layer::Vm {
            kvm: self.accel().kvm,
        }];
        layers.extend(self.os.layers(policy, degraded).0);
        Layers(layers)
    }

    /// CPUs hold on QEMU's sandbox, as the OS backend holds them (the guest's
    /// are inside); processes and memory are counted in the guest, by a
    /// cgroup of its own (QEMU's sandbox does not see the guest's processes,
    /// and holds all of the guest's memory), and QEMU's sandbox holds the
    /// guest, QEMU and the guest's `/tmp` where the host can limit it (see
    /// [`qemu_memory`]).
    fn assess_limits(&self, policy: &Policy) -> LimitsAssessment {
        let mut assessed = self.os.assess_limits(policy);
        assessed.mechanism = format!(
            "QEMU's sandbox: {}; the guest's processes: a cgroup v2 of the guest's",
            assessed.mechanism
        );
        for limit in &mut assessed.limits {
            let how = match (limit.limit, &limit.hold) {
                (cordon_backend::LimitKind::Pids, _) => {
                    "pids.max of a cgroup v2 in the guest: the command's processes and threads"
                        .to_string()
                }
                (cordon_backend::LimitKind::Memory, host) => {
                    let host = match host {
                        cordon_backend::Hold::Enforced { how } => {
                            format!("QEMU's sandbox is limited too ({how})")
                        }
                        cordon_backend::Hold::Unenforceable { .. } => {
                            "the host cannot limit QEMU's sandbox here, but the guest's memory \
                             is fixed (--vm-memory)"
                                .to_string()
                        }
                    };
                    format!(
                        "memory.max of a cgroup v2 in the guest: what the command's processes \
                         allocate, /dev/shm and memfds included; the guest's /tmp is a tmpfs \
                         on the host no larger than the limit; {host}"
                    )
                }
                _ => continue,
            };
            limit.hold = cordon_backend::Hold::Enforced { how };
        }
        assessed
    }

    fn start<'p>(
        &'p self,
        policy: &'p Policy,
        degraded: Degraded,
    ) -> Result<VmSession<'p>, VmError> {
        if policy.net.value == NetMode::Host {
            // The mode as --net spells it.
            let mode = serde_json::to_value(policy.net.value).unwrap_or_default();
            return Err(VmError::NoNetwork {
                mode: mode.as_str().unwrap_or("?").to_string(),
                origin: policy.net.origin.to_string(),
            });
        }
        Ok(VmSession {
            backend: self,
            policy,
            degraded,
            ran: false,
            control: None,
        })
    }
}

/// What QEMU's sandbox holds beyond the guest's memory: QEMU itself (about
/// 11 MiB resident after boot, a 64 MiB translation cache under TCG).
const QEMU_OVERHEAD: u64 = 128 << 20;

/// The memory limit of QEMU's sandbox under a `--memory` of `limit`: the
/// command's limit holds in the guest (see [`Confine::memory`]); on the host
/// QEMU holds the guest's memory and its own, and the view's private tmpfs
/// mounts (the guest's `/tmp`), each no larger than `limit`, are in it too.
/// Where the host cannot limit it, the limit holds all the same: the guest's
/// memory is fixed and those tmpfs mounts are sized; the host's limit is a
/// second layer, for a QEMU the guest took over.
fn qemu_memory(policy: &Policy, limit: u64) -> u64 {
    policy
        .vm
        .memory
        .value
        .saturating_add(QEMU_OVERHEAD)
        .saturating_add(limit)
}

/// Whether the host limits the memory of an OS sandbox of `policy` (cgroups
/// it may write); `true` without a memory limit. It surveys the cgroups: only
/// for a policy that has one.
fn host_limits_memory(os: &OsBackend, policy: &Policy) -> bool {
    os.assess_limits(policy)
        .for_setting("memory")
        .is_none_or(|a| a.holds())
}

/// One VM, for one command.
pub struct VmSession<'p> {
    backend: &'p VmBackend,
    policy: &'p Policy,
    degraded: Degraded,
    ran: bool,
    /// The host's side of the guest's end of the next command's control
    /// channel (see [`Session::control_channel`]).
    control: Option<UnixStream>,
}

impl Session for VmSession<'_> {
    type Error = VmError;

    fn layers(&self) -> Layers {
        self.backend.layers(self.policy, self.degraded)
    }

    /// A socket pair: the caller's end is the host's; the other is carried
    /// to the command over the VM's channel, at [`GUEST_CONTROL_FD`].
    fn control_channel(&mut self) -> Result<ControlChannel, VmError> {
        if self.control.is_some() {
            return Err(VmError::Request(
                "a command gets one control channel, which this one has".into(),
            ));
        }
        let (host, guest) = UnixStream::pair()?;
        self.control = Some(guest);
        Ok(ControlChannel {
            host,
            fd: GUEST_CONTROL_FD,
        })
    }

    fn exec(&mut self, command: &Command, additions: Additions) -> Result<Outcome, VmError> {
        if std::mem::replace(&mut self.ran, true) {
            return Err(VmError::Unsupported(
                "a second command in one session".into(),
            ));
        }
        let Additions {
            files,
            env,
            egress,
            control,
        } = additions;
        let program = match &command.program {
            Program::Named(name) => utf8(name, "the command")?,
            // In the guest, the agent's own binary (this cordon, the initramfs's
            // /init), which the view need not show: a magic link that the chroot
            // into the view does not hide.
            Program::Cordon => GUEST_CORDON.to_string(),
        };
        // A terminal in the guest of the size of cordon's own, which must be one.
        let tty = match command.terminal {
            Terminal::Inherit => None,
            Terminal::Pty => Some(host_tty_size().ok_or_else(|| {
                VmError::Request("a terminal was asked for, but stdin is not one".into())
            })?),
        };
        // The guest's network: the broker serves the streams the host side
        // hands it (see `Host::run`).
        let (network, serve_broker) = match egress {
            Some(egress) => {
                let spec = NetworkSpec {
                    ports: egress.ports,
                    local_ports: egress.local_ports,
                    proxy_port: egress.proxy_port,
                };
                (Some(spec), Some(egress.serve))
            }
            None if self.policy.net.value == NetMode::Allowlist => {
                return Err(VmError::Network(
                    "the allowlist mode needs the egress broker, which was not given".into(),
                ));
            }
            None => (None, None),
        };
        // The control channel's server, and the stream the guest's end goes to.
        let (serve_control, control) = match (control, self.control.take()) {
            (Some(serve), Some(endpoint)) => (Some(serve), Some(endpoint)),
            (None, _) => (None, None),
            (Some(_), None) => {
                return Err(VmError::Request(
                    "a control channel's server without the channel".into(),
                ));
            }
        };
        // The broker and the control channel's server serve every start of the
        // VM (a template that does not restore is followed by a cold boot), so
        // they are started once, with the first QEMU.
        let (broker, streams) = mpsc::channel();
        let servers: StartServers = Box::new(move || {
            if let Some(serve) = serve_broker {
                std::thread::spawn(move || serve(Ok(Ingress::Streams(streams))));
            }
            if let Some(serve) = serve_control {
                std::thread::spawn(serve);
            }
        });
        let services = Services {
            network: network.map(|spec| (spec, broker)),
            control: Arc::new(Mutex::new(control)),
            servers: Arc::new(Mutex::new(Some(servers))),
        };
        let mut argv = vec![program];
        for arg in &command.args {
            argv.push(utf8(arg, "an argument")?);
        }
        let cwd = command.cwd.as_deref().unwrap_or(&self.policy.workspace);
        let cwd = utf8(cwd.as_os_str(), "the working directory")?;

        let config = Config {
            // virtiofs without a virtiofsd is refused, not served over 9p.
            share: share::choose(self.policy.vm_share.as_ref()).map_err(VmError::Settings)?,
            ..Config::for_policy(&self.policy.vm)
        };
        let qemu = find_program(&config.qemu)
            .ok_or_else(|| VmError::QemuMissing(config.qemu.display().to_string()))?;
        let kernel = self.policy.vm_kernel.as_ref().map(|k| k.value.as_path());
        let spec = image::session_spec(kernel)?;
        let progress = FirstRun(self.backend.progress.clone());
        let image = match image::find(&spec)? {
            Some(image) => image,
            None => {
                // Made first: the snapshot probe keeps QEMU's version there.
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&spec.cache)
                    .map_err(|e| VmError::Image(image::ImageError::Io(spec.cache.clone(), e)))?;
                let templates = matches!(
                    snapshot::Support::of(&qemu, &spec.cache),
                    snapshot::Support::Available { .. }
                );
                progress.begin(1 + usize::from(templates));
                progress.step(
                    "the VM's kernel and initramfs (once; `cordon vm setup` makes them ahead)",
                );
                // A failure clears the bar before it is said.
                let image = image::assemble(&spec).inspect_err(|_| progress.finish())?;
                for (path, cached) in [
                    (&image.vmlinux, image.vmlinux_cached),
                    (&image.initramfs, image.initramfs_cached),
                ] {
                    if !cached {
                        progress.println(&format!("made: {}", path.display()));
                    }
                }
                // A new cordon or kernel: what went unused for long goes.
                let templates = snapshot::templates_of(&image, &qemu, &spec.cache);
                let keep = image::cache::Current {
                    image: Some(&image),
                    templates: templates.as_deref(),
                };
                let stale = image::cache::prune_stale(&spec.cache, keep, image::cache::STALE_AFTER);
                for gone in stale.unwrap_or_default() {
                    progress.println(&format!(
                        "removed: {} ({}, unused for 30 days)",
                        gone.path.display(),
                        gone.kind
                    ));
                }
                image
            }
        };
        for used in [&image.vmlinux, &image.initramfs]
            .into_iter()
            .chain(&image.memo)
        {
            image::cache::mark_used(used);
        }
        let accel = self.backend.accel().clone();
        let tsc_khz = remembered_tsc_khz(&spec.cache);
        let mut start = plan(&config, &qemu, &spec.cache, &image, &accel, tsc_khz);
        if matches!(start, Start::Make { .. }) {
            progress.begin(1);
            progress.step("the template snapshot (a boot of this VM, kept for the next runs)");
        }
        let vm = Launch {
            config,
            qemu,
            image,
            accel,
            tsc_khz,
            argv,
            cwd,
            tty,
            timeout: command.timeout,
            services,
            progress,
        };
        loop {
            match self.launch(&vm, start, files.clone(), env.clone()) {
                // A template that does not restore (cut short, damaged, of
                // another QEMU build) is made again by a cold boot, once.
                Err(VmError::Restore { template, why }) => {
                    eprintln!(
                        "cordon: the VM's template snapshot {} did not restore ({why}); \
                         booting cold and making it again",
                        template.display()
                    );
                    let _ = std::fs::remove_file(&template);
                    start = match plan(
                        &vm.config,
                        &vm.qemu,
                        &spec.cache,
                        &vm.image,
                        &vm.accel,
                        vm.tsc_khz,
                    ) {
                        Start::Restore { .. } => Start::Cold,
                        other => other,
                    };
                    if matches!(start, Start::Make { .. }) {
                        vm.progress.begin(1);
                        vm.progress.step("the template snapshot, made again");
                    }
                }
                other => return other,
            }
        }
    }

    fn end(self) -> Result<(), VmError> {
        // The VM ended with its command (its QEMU's sandbox is gone).
        Ok(())
    }
}

/// How a session's VM starts.
enum Start {
    /// Booted, the share mounted at boot: no snapshots here.
    Cold,
    /// Booted in a template's layout, saved into `template` once its agent is
    /// ready, then continued.
    Make {
        template: PendingTemplate,
        mapped_ram: bool,
    },
    /// Restored from `template`.
    Restore { template: PathBuf, mapped_ram: bool },
}

/// How this session's VM starts: from its configuration's template when QEMU
/// can take snapshots and the template exists, making it when it does not.
fn plan(
    config: &Config,
    qemu: &Path,
    cache: &Path,
    image: &Image,
    accel: &AccelChoice,
    tsc_khz: u64,
) -> Start {
    let snapshot::Support::Available {
        version,
        mapped_ram,
        identity,
    } = snapshot::Support::of(qemu, cache)
    else {
        return Start::Cold;
    };
    let layout = template_layout(config, accel.kvm, tsc_khz, mapped_ram);
    let template = snapshot::template_path(cache, image, &identity, &version, &layout);
    if template.is_file() {
        image::cache::mark_used(&template);
        return Start::Restore {
            template,
            mapped_ram,
        };
    }
    match PendingTemplate::create(&template) {
        Ok(template) => Start::Make {
            template,
            mapped_ram,
        },
        Err(_) => Start::Cold,
    }
}

/// What every start of a session's VM shares.
struct Launch {
    config: Config,
    qemu: PathBuf,
    image: Image,
    accel: AccelChoice,
    tsc_khz: u64,
    argv: Vec<String>,
    cwd: String,
    tty: Option<TtySize>,
    timeout: Option<Duration>,
    services: Services,
    /// Told when what a first run makes is made.
    progress: FirstRun,
}

/// The steps of a first run, told to the backend's [`Progress`] if it has one;
/// finished when dropped, too (a session that failed clears its bar).
#[derive(Clone, Default)]
struct FirstRun(Option<Arc<dyn Progress>>);

impl FirstRun {
    /// At least `steps` more steps follow (a template after the boot files
    /// was counted with them).
    fn begin(&self, steps: usize) {
        if let Some(p) = &self.0 {
            p.begin(steps);
        }
    }

    fn step(&self, what: &str) {
        if let Some(p) = &self.0 {
            p.step(what);
        }
    }

    fn println(&self, line: &str) {
        if let Some(p) = &self.0 {
            p.println(line);
        }
    }

    fn finish(&self) {
        if let Some(p) = &self.0 {
            p.finish();
        }
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        self.progress.finish();
    }
}

/// The host's services a session's guest reaches over its channel, shared by
/// every start of its VM.
struct Services {
    /// The guest's network and where its streams go (the broker).
    network: Option<(NetworkSpec, mpsc::Sender<UnixStream>)>,
    /// The control endpoint's end, taken by the start that runs the command.
    control: Arc<Mutex<Option<UnixStream>>>,
    /// Starts the broker and the control channel's server; taken by the first
    /// QEMU that runs.
    servers: Arc<Mutex<Option<StartServers>>>,
}

/// Starts the host's servers of a session's guest (see [`Services`]).
type StartServers = Box<dyn FnOnce() + Send>;

impl VmSession<'_> {
    /// Starts QEMU in an OS sandbox of the policy as `start` says, and runs the
    /// command in its guest.
    fn launch(
        &self,
        vm: &Launch,
        start: Start,
        files: Vec<FileOverlay>,
        env: Vec<(String, String)>,
    ) -> Result<Outcome, VmError> {
        let open = |path: &Path| -> Result<OwnedFd, VmError> {
            std::fs::File::open(path)
                .map(OwnedFd::from)
                .map_err(|e| VmError::Image(image::ImageError::Io(path.to_path_buf(), e)))
        };
        // Handed to QEMU as descriptors: the view need not show the cache.
        let (kernel, initrd) = (open(&vm.image.vmlinux)?, open(&vm.image.initramfs)?);
        let (channel_host, channel_guest) = UnixStream::pair()?;
        let (console_host, console_guest) = UnixStream::pair()?;
        let fd_path = |fd: &OwnedFd| format!("/proc/self/fd/{}", fd.as_raw_fd());
        let mut io = QemuIo {
            kernel: fd_path(&kernel),
            initrd: fd_path(&initrd),
            channel_fd: channel_guest.as_raw_fd(),
            console_fd: Some(console_guest.as_raw_fd()),
            share: None,
            mount_share_at_boot: matches!(start, Start::Cold),
            snapshot: None,
        };
        let mut fds: Vec<OwnedFd> =
            vec![channel_guest.into(), console_guest.into(), kernel, initrd];
        // The root share: served by QEMU (9p), or by virtiofsd, which
        // `__vm-host` starts beside QEMU in its sandbox (see `crate::share`).
        let mut host_args: Vec<String> = Vec::new();
        match &vm.config.share {
            ShareKind::NineP => {
                io.share = Some(ShareIo::NineP {
                    path: SERVED_VIEW.to_string(),
                });
            }
            ShareKind::Virtiofs(virtiofsd) => {
                let share = share::virtiofs_fds(virtiofsd).map_err(|e| {
                    VmError::Spawn(format!("virtiofsd ({})", virtiofsd.display()), e)
                })?;
                io.share = Some(ShareIo::Virtiofs {
                    chardev_fd: share.qemu_end.as_raw_fd(),
                });
                host_args = vec![
                    share::HOST_SUBCOMMAND.into(),
                    "--virtiofsd-fd".into(),
                    share.binary.as_raw_fd().to_string(),
                    "--listen-fd".into(),
                    share.listener.as_raw_fd().to_string(),
                    "--".into(),
                    utf8(vm.qemu.as_os_str(), "QEMU's path")?,
                ];
                fds.extend([share.binary, share.listener, share.qemu_end]);
            }
        }
        // The template (written, or read) and QEMU's monitor, for a template's layout.
        let (phase, template) = match start {
            Start::Cold => (Phase::Cold, None),
            Start::Make {
                template,
                mapped_ram,
            } => {
                let fd = template.descriptor()?;
                (Phase::Make(template), Some((fd, false, mapped_ram)))
            }
            Start::Restore {
                template,
                mapped_ram,
            } => {
                let fd = open(&template)?;
                (Phase::Restore(template), Some((fd, true, mapped_ram)))
            }
        };
        let mut qmp = None;
        if let Some((fd, restore, mapped_ram)) = template {
            let (host, guest) = UnixStream::pair()?;
            io.snapshot = Some(SnapshotIo {
                qmp_fd: guest.as_raw_fd(),
                template_fd: fd.as_raw_fd(),
                restore,
                mapped_ram,
            });
            fds.extend([guest.into(), fd]);
            qmp = Some(host);
        }
        let args = qemu_args(&vm.config, &io, vm.accel.kvm, vm.tsc_khz);

        let environment: Environment = Arc::default();
        let stop = Stop::default();
        let tail = Arc::new(Mutex::new(Tail::default()));
        let (done, result) = mpsc::channel();
        let channel = Channel::new(channel_host)?;
        let signaller = channel.signaller();
        // A signal before the command started (or after it ended) ends the VM.
        let interrupted = Arc::new(AtomicI32::new(0));
        let tty = vm.tty;
        let forward = {
            let (interrupted, stop) = (interrupted.clone(), stop.clone());
            move |signal: i32| {
                if signal == libc::SIGWINCH {
                    // The guest's terminal follows cordon's; without one, nothing.
                    if let (Some(_), Some(size)) = (tty, host_tty_size()) {
                        signaller.resize(size);
                    }
                } else if !signaller.send(signal) {
                    interrupted.store(signal, Ordering::SeqCst);
                    stop.stop();
                }
            }
        };
        // With a terminal, every key goes to the guest's (Ctrl-C included, which
        // its line discipline turns into SIGINT there); the mode comes back
        // when the run ends, whatever happened, and while the command is
        // stopped (job control: the guest reports its stops on `stops`).
        let (terminal, stops) = match tty {
            Some(_) => ServedTerminal::enter()
                .map_err(VmError::Io)?
                .map_or((None, None), |(terminal, stops)| {
                    (Some(terminal), Some(stops))
                }),
            None => (None, None),
        };
        let host = Host {
            network: vm.services.network.clone(),
            control: vm.services.control.clone(),
            channel,
            console: console_host,
            qmp,
            phase,
            environment: environment.clone(),
            stop: stop.clone(),
            tail: tail.clone(),
            argv: vm.argv.clone(),
            cwd: vm.cwd.clone(),
            tty,
            root: root_share(vm.config.share.fs()),
            stops,
            confine: command_confinement(self.policy),
            progress: vm.progress.clone(),
            boot_timeout: vm.config.boot_timeout,
        };
        // QEMU's sandbox has no network at all, whatever the guest's: the
        // guest's connections leave through the channel.
        let mut qemu_policy = self.policy.clone();
        qemu_policy.net.value = NetMode::None;
        // The process limit is the guest's (see `assess_limits`); QEMU's
        // threads get the built-in default's room, whatever the command's.
        qemu_policy.limits.pids = Some(cordon_policy::Sourced::new(
            cordon_policy::defaults::DEFAULT_PIDS,
            cordon_policy::Origin::Default,
        ));
        // Memory: the command's limit holds in the guest; QEMU's sandbox
        // holds the guest, QEMU and the guest's `/tmp` (see `qemu_memory`).
        let scratch_size = self.policy.limits.memory.as_ref().map(|m| m.value);
        if let Some(memory) = &mut qemu_policy.limits.memory {
            memory.value = qemu_memory(self.policy, memory.value);
        }
        if qemu_policy.limits.memory.is_some()
            && !host_limits_memory(&self.backend.os, &qemu_policy)
        {
            qemu_policy.limits.memory = None;
        }
        let mut os = self.backend.os.start(&qemu_policy, self.degraded)?;
        let servers = vm.services.servers.clone();
        os.serve_view(ViewServer {
            fds,
            scratch_size,
            devices: if vm.accel.kvm {
                vec!["kvm"]
            } else {
                Vec::new()
            },
            environment: Box::new(move |env| {
                *environment.lock().unwrap_or_else(|e| e.into_inner()) = Some(env);
            }),
            serve: Box::new(move || {
                // Threads only now: QEMU's sandbox is made by a fork of this
                // process, which must be single-threaded until then.
                if let Some(start) = lock(&servers).take() {
                    start();
                }
                let _ = done.send(host.run());
            }),
            stop,
            signal: Box::new(forward),
            terminal,
        });
        // QEMU, or cordon's `__vm-host` that starts virtiofsd and becomes QEMU.
        let qemu_command = Command {
            program: if host_args.is_empty() {
                Program::Named(vm.qemu.clone().into_os_string())
            } else {
                Program::Cordon
            },
            args: (host_args.into_iter().chain(args))
                .map(OsString::from)
                .collect(),
            cwd: Some(PathBuf::from("/")),
            terminal: Terminal::Inherit,
            timeout: vm.timeout,
        };
        let outcome = os.exec(
            &qemu_command,
            Additions {
                files,
                env,
                egress: None,
                control: None,
            },
        )?;
        os.end()?;
        let qemu_status = match outcome {
            Outcome::TimedOut(after) => return Ok(Outcome::TimedOut(after)),
            Outcome::Exited { status, message } => (status, message),
        };
        // The host side ends once QEMU is gone (its channel closes); it was never
        // started if the sandbox failed before QEMU ran.
        let ran = result.recv().map_err(|_| VmError::Boot {
            why: format!("QEMU's sandbox ended with status {}", qemu_status.0),
            console: qemu_status.1.clone().unwrap_or_default(),
        })?;
        let interrupted = interrupted.load(Ordering::SeqCst);
        match ran {
            // The VM ended by a signal to cordon before its command ran: the
            // status a command killed by it would have.
            Err(_) if interrupted != 0 => Ok(Outcome::Exited {
                status: 128 + interrupted,
                message: None,
            }),
            Ok((status, oom_kills)) => Ok(Outcome::Exited {
                status: status.shell_code(),
                // A count without a limit is a guest's lie, not a kill.
                message: (oom_kills > 0 && self.policy.limits.memory.is_some()).then(|| {
                    let limits = self.backend.assess_limits(self.policy);
                    let flag = limits.for_setting("memory").map(|a| a.flag.as_str());
                    cordon_backend::out_of_memory(flag.unwrap_or("--memory"), oom_kills.into())
                }),
            }),
            Err(VmError::ExecFailed { status, error }) => Ok(Outcome::Exited {
                status,
                message: Some(error),
            }),
            Err(VmError::Boot { why, console }) => Err(VmError::Boot {
                why: match qemu_status {
                    (status, _) if why == CLOSED => format!("QEMU exited with status {status}"),
                    _ => why,
                },
                console,
            }),
            Err(VmError::Ended(_)) => Err(VmError::Ended(tail_text(&tail))),
            Err(e) => Err(e),
        }
    }
}

/// How long QEMU's monitor may take to answer.
const QMP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long saving a template may take (0.5 s for a 256 MiB guest here).
const SAVE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a clone may take from `cont` to its agent's `Resumed` (under 0.1 s
/// here): a template that loads but does not run fails within it.
const RESUME_TIMEOUT: Duration = Duration::from_secs(15);

/// Set, each run prints how long its VM took to get ready and to run the
/// command (stderr; what bench/vm reads).
pub const TIMINGS_ENV: &str = "CORDON_VM_TIMINGS";

/// The template's part of a session's start, on the host side.
enum Phase {
    Cold,
    Make(PendingTemplate),
    Restore(PathBuf),
}

/// What a boot that ended before the agent was ready says, replaced by QEMU's
/// status once known.
const CLOSED: &str = "QEMU exited";

/// The command's environment, handed over by QEMU's sandbox before it starts.
type Environment = Arc<Mutex<Option<Vec<(String, String)>>>>;

/// The host side of one session's VM, run on a thread of its own once QEMU's
/// sandbox exists.
struct Host {
    /// The guest's network and where its streams go (the broker).
    network: Option<(NetworkSpec, mpsc::Sender<UnixStream>)>,
    /// Where the command's control stream goes (the control endpoint's end),
    /// taken once the agent is ready.
    control: Arc<Mutex<Option<UnixStream>>>,
    channel: Channel,
    console: UnixStream,
    /// QEMU's monitor, in a template's layout.
    qmp: Option<UnixStream>,
    phase: Phase,
    /// The command's environment, set before QEMU's sandbox starts.
    environment: Environment,
    stop: Stop,
    tail: Arc<Mutex<Tail>>,
    argv: Vec<String>,
    cwd: String,
    tty: Option<TtySize>,
    /// The root share, as the guest mounts it on `Resume` ([`root_share`]).
    root: String,
    /// Where a stop of the command (job control) is reported to the waiter
    /// of QEMU's sandbox, with a terminal (a byte each).
    stops: Option<OwnedFd>,
    /// The command's confinement in the guest, the policy's (`None` only in a
    /// debug build's test of the layer beneath it).
    confine: Option<Confine>,
    /// Finished before the command's output.
    progress: FirstRun,
    boot_timeout: Duration,
}

impl Host {
    /// Waits for the agent, runs the command with its output on this process's
    /// stdout and stderr, then powers the VM off (or kills QEMU's sandbox).
    fn run(self) -> Result<(Status, u32), VmError> {
        let Host {
            network,
            control,
            channel,
            console,
            qmp,
            phase,
            environment,
            stop,
            tail,
            argv,
            cwd,
            tty,
            root,
            stops,
            confine,
            progress,
            boot_timeout,
        } = self;
        drain(console, tail.clone());
        let mut channel = channel;
        let started = Instant::now();
        let failed = |not_ready: NotReady| {
            stop.stop();
            VmError::Boot {
                why: match not_ready {
                    NotReady::Closed => CLOSED.to_string(),
                    NotReady::Failed(why) => why,
                },
                console: tail_text(&tail),
            }
        };
        let qmp = || {
            let stream = qmp.ok_or_else(|| NotReady::Failed("no QEMU monitor".into()))?;
            snapshot::Qmp::connect(stream, QMP_TIMEOUT).map_err(NotReady::Failed)
        };
        // When each step of a restore ended, for the timings.
        let mut steps: Vec<(&str, Duration)> = Vec::new();
        let how = match phase {
            Phase::Cold => "cold",
            Phase::Make(_) => "booted (making the template)",
            Phase::Restore(_) => "restored",
        };
        match phase {
            Phase::Cold => channel.ready(boot_timeout).map_err(failed)?,
            Phase::Make(template) => {
                channel.ready(boot_timeout).map_err(failed)?;
                let mut qmp = qmp().map_err(failed)?;
                // A template that could not be saved is only a slower next start.
                let saved = qmp.save(SAVE_TIMEOUT).and_then(|()| {
                    template
                        .commit()
                        .map_err(|e| format!("keeping the template: {e}"))
                });
                if let Err(why) = saved {
                    eprintln!("cordon: the VM's template snapshot was not saved: {why}");
                }
                qmp.cont().map_err(NotReady::Failed).map_err(failed)?;
                channel
                    .resume(Some(&root), RESUME_TIMEOUT)
                    .map_err(failed)?;
            }
            Phase::Restore(template) => {
                let restored = qmp()
                    .and_then(|mut qmp| {
                        steps.push(("QEMU's monitor up", started.elapsed()));
                        qmp.cont_once_loaded(RESUME_TIMEOUT)
                            .map_err(NotReady::Failed)
                    })
                    .and_then(|()| {
                        steps.push(("loaded and continued", started.elapsed()));
                        channel.resume(Some(&root), RESUME_TIMEOUT)
                    });
                if let Err(not_ready) = restored {
                    stop.stop();
                    let why = match not_ready {
                        NotReady::Closed => "QEMU exited".to_string(),
                        NotReady::Failed(why) => why,
                    };
                    let tail = tail_text(&tail);
                    let last = tail.trim().lines().last().unwrap_or("").to_string();
                    return Err(VmError::Restore {
                        template,
                        why: if last.is_empty() {
                            why
                        } else {
                            format!("{why}: {last}")
                        },
                    });
                }
            }
        }
        let ready = started.elapsed();
        if let Some((spec, broker)) = network {
            if let Err(e) = channel.network(&spec, broker) {
                stop.stop();
                return Err(e);
            }
        }
        if let Some(endpoint) = lock(&control).take() {
            channel.control(GUEST_CONTROL_FD, endpoint);
        }
        let env = (environment.lock().unwrap_or_else(|e| e.into_inner()))
            .take()
            .unwrap_or_default();
        let request = ExecRequest {
            argv,
            env,
            cwd,
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            tty,
            confine,
        };
        // A terminal is passed on only to the guest's terminal; else /dev/null
        // (a command would read what the user types after it).
        let stdin = std::io::stdin();
        let input: Option<crate::vm::Input> = if stdin.is_terminal() && tty.is_none() {
            None
        } else {
            Some(Box::new(stdin))
        };
        progress.finish();
        // Not locked for the command's duration: the broker prints its
        // refusals to stderr meanwhile, and would wait for the lock.
        let report_stop = || {
            if let Some(stops) = &stops {
                let _ = rustix::io::write(stops, b"s");
            }
        };
        let result = channel.exec(
            &request,
            input,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
            stops.as_ref().map(|_| &report_stop as &dyn Fn()),
        );
        let _ = std::io::Write::flush(&mut std::io::stdout());
        if std::env::var_os(TIMINGS_ENV).is_some() {
            let steps: Vec<String> = (steps.iter())
                .map(|(what, at)| format!("{what} at {}", at.as_millis()))
                .collect();
            eprintln!(
                "cordon: vm timings: {} to the agent ready{} {} ms{}, command {} ms",
                how,
                if how == "cold" {
                    ""
                } else {
                    " and the share mounted"
                },
                ready.as_millis(),
                if steps.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", steps.join(", "))
                },
                (started.elapsed() - ready).as_millis()
            );
        }
        let usable = matches!(result, Ok(_) | Err(VmError::ExecFailed { .. }));
        let oom_kills = channel.oom_kills();
        // The guest syncs its file system and powers off; QEMU's sandbox is
        // killed if it does not, or if the guest broke the protocol.
        if !usable || !channel.close(POWER_OFF_WAIT) {
            stop.stop();
        }
        result.map(|status| (status, oom_kills))
    }
}

/// The environment variable with which a *debug* build runs the guest's
/// command as unconfined guest root would run (all capabilities, no filter):
/// how the tests reach the layer beneath the confinement, the host's view,
/// which must hold against guest root as well. A release build ignores it.
pub const UNCONFINED_GUEST_FOR_TESTS: &str = "CORDON_TEST_UNCONFINED_GUEST";

/// How the agent confines the command: as the policy's switches say.
fn command_confinement(policy: &Policy) -> Option<Confine> {
    if cfg!(debug_assertions) && std::env::var_os(UNCONFINED_GUEST_FOR_TESTS).is_some() {
        eprintln!(
            "cordon: debug build, {UNCONFINED_GUEST_FOR_TESTS} set: the command runs unconfined in the guest"
        );
        return None;
    }
    Some(Confine {
        nested_userns: policy.switches.nested_userns.value,
        unix_sockets: policy.switches.unix_sockets.value,
        pids: policy.limits.pids.as_ref().map(|p| p.value),
        memory: policy.limits.memory.as_ref().map(|m| m.value),
    })
}

/// The size of the terminal on cordon's stdin, if it is one.
fn host_tty_size() -> Option<TtySize> {
    let size = rustix::termios::tcgetwinsize(rustix::stdio::stdin()).ok()?;
    Some(TtySize {
        rows: size.ws_row,
        cols: size.ws_col,
    })
}

/// `name` as UTF-8, which the protocol carries (JSON strings).
fn utf8(name: &std::ffi::OsStr, what: &str) -> Result<String, VmError> {
    name.to_str()
        .map(str::to_string)
        .ok_or_else(|| VmError::Request(format!("{what} is not UTF-8: {}", name.to_string_lossy())))
}

/// The QEMU binary sessions run (`qemu-system-x86_64` in `PATH`), if found.
pub fn session_qemu() -> Option<PathBuf> {
    find_program(&Config::default().qemu)
}

/// `program` if it is a path, else found in this process's `PATH`.
fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    search_path(program, |p| p.is_file())
}

/// The first `PATH` entry of this process's holding `name` that `found`
/// accepts.
pub(crate) fn search_path(name: &Path, found: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| found(p))
}

/// A mutex's value, whatever a thread that panicked holding it left.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
