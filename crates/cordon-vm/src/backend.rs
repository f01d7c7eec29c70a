//! The VM backend behind cordon-backend's neutral interface (`--backend vm`).
//!
//! A session runs its command in a QEMU guest whose file system is the OS
//! backend's view of the same policy: QEMU runs *inside* an OS sandbox of that
//! policy (namespaces, the mount view, Landlock, seccomp, limits; see
//! `cordon_sandbox::ViewServer`) and serves the view to the guest over 9p, where
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

use crate::image;
use crate::net::NetworkSpec;
use crate::protocol::TtySize;
use crate::vm::{
    AccelChoice, Channel, Config, ExecRequest, NotReady, QemuIo, Tail, choose_accel, drain,
    host_tsc_khz, qemu_args, tail_text,
};
use crate::{Status, VmError};
use cordon_backend::{
    Additions, Backend, BackendKind, Command, ControlChannel, Degraded, Ingress, Layer, Layers,
    LimitsAssessment, Outcome, Program, Session, Terminal,
};
use cordon_policy::{NetMode, Policy};
use cordon_sandbox::{OsBackend, SERVED_VIEW, Stop, ViewServer};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

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
#[derive(Debug, Default)]
pub struct VmBackend {
    os: OsBackend,
    /// The accelerator, probed once.
    accel: OnceLock<AccelChoice>,
}

impl VmBackend {
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

    /// The limits hold on QEMU's sandbox, as the OS backend holds them.
    fn assess_limits(&self, policy: &Policy) -> LimitsAssessment {
        self.os.assess_limits(policy)
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
        check_memory(policy)?;
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
/// 11 MiB resident after boot, a 64 MiB translation cache under TCG) and the
/// sandbox's private tmpfs mounts.
const QEMU_OVERHEAD: u64 = 128 << 20;

/// `--memory` limits QEMU's sandbox, which holds the guest's memory: one below
/// the VM's memory plus QEMU's own is refused before anything runs, rather
/// than QEMU killed once the guest uses its memory.
fn check_memory(policy: &Policy) -> Result<(), VmError> {
    let vm = &policy.vm.memory;
    match &policy.limits.memory {
        Some(limit) if limit.value < vm.value.saturating_add(QEMU_OVERHEAD) => {
            Err(VmError::MemoryBelowVm {
                limit_mib: limit.value >> 20,
                limit_origin: format!("set by {}", limit.origin),
                vm_mib: vm.value >> 20,
                vm_origin: format!("set by {}", vm.origin),
                overhead_mib: QEMU_OVERHEAD >> 20,
            })
        }
        _ => Ok(()),
    }
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
        let network = match egress {
            Some(egress) => {
                let spec = NetworkSpec {
                    ports: egress.ports,
                    local_ports: egress.local_ports,
                    proxy_port: egress.proxy_port,
                };
                Some((spec, egress.serve))
            }
            None if self.policy.net.value == NetMode::Allowlist => {
                return Err(VmError::Network(
                    "the allowlist mode needs the egress broker, which was not given".into(),
                ));
            }
            None => None,
        };
        // The control channel's server, and the stream the guest's end goes to.
        let control = match (control, self.control.take()) {
            (Some(serve), Some(endpoint)) => Some((serve, endpoint)),
            (None, _) => None,
            (Some(_), None) => {
                return Err(VmError::Request(
                    "a control channel's server without the channel".into(),
                ));
            }
        };
        let (serve_control, control) = match control {
            Some((serve, endpoint)) => (Some(serve), Some(endpoint)),
            None => (None, None),
        };
        let mut argv = vec![program];
        for arg in &command.args {
            argv.push(utf8(arg, "an argument")?);
        }
        let cwd = command.cwd.as_deref().unwrap_or(&self.policy.workspace);
        let cwd = utf8(cwd.as_os_str(), "the working directory")?;

        let config = Config::for_policy(&self.policy.vm);
        let qemu = find_program(&config.qemu)
            .ok_or_else(|| VmError::QemuMissing(config.qemu.display().to_string()))?;
        let image = image::assemble(&image::session_spec()?)?;
        let open = |path: &Path| -> Result<OwnedFd, VmError> {
            std::fs::File::open(path)
                .map(OwnedFd::from)
                .map_err(|e| VmError::Image(image::ImageError::Io(path.to_path_buf(), e)))
        };
        // Handed to QEMU as descriptors: the view need not show the cache.
        let (kernel, initrd) = (open(&image.vmlinux)?, open(&image.initramfs)?);
        let accel = self.backend.accel().clone();
        let (channel_host, channel_guest) = UnixStream::pair()?;
        let (console_host, console_guest) = UnixStream::pair()?;
        let fd_path = |fd: &OwnedFd| format!("/proc/self/fd/{}", fd.as_raw_fd());
        let io = QemuIo {
            kernel: fd_path(&kernel),
            initrd: fd_path(&initrd),
            channel_fd: channel_guest.as_raw_fd(),
            console_fd: Some(console_guest.as_raw_fd()),
            share: Some(SERVED_VIEW.to_string()),
        };
        let args = qemu_args(&config, &io, accel.kvm, host_tsc_khz());

        let environment: Environment = Arc::default();
        let stop = Stop::default();
        let tail = Arc::new(Mutex::new(Tail::default()));
        let (done, result) = mpsc::channel();
        let channel = Channel::new(channel_host)?;
        let signaller = channel.signaller();
        // A signal before the command started (or after it ended) ends the VM.
        let interrupted = Arc::new(AtomicI32::new(0));
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
        let (broker, streams) = mpsc::channel();
        let (network, serve_broker) = match network {
            Some((spec, serve)) => (Some((spec, broker)), Some(serve)),
            None => (None, None),
        };
        let host = Host {
            network,
            control,
            channel,
            console: console_host,
            environment: environment.clone(),
            stop: stop.clone(),
            tail: tail.clone(),
            argv,
            cwd,
            tty,
            boot_timeout: config.boot_timeout,
        };
        // With a terminal, every key goes to the guest's (Ctrl-C included, which
        // its line discipline turns into SIGINT there); the mode comes back
        // when this returns, whatever happened.
        let _raw = tty.map(|_| RawMode::enter());
        // QEMU's sandbox has no network at all, whatever the guest's: the
        // guest's connections leave through the channel.
        let mut qemu_policy = self.policy.clone();
        qemu_policy.net.value = NetMode::None;
        let mut os = self.backend.os.start(&qemu_policy, self.degraded)?;
        os.serve_view(ViewServer {
            fds: vec![channel_guest.into(), console_guest.into(), kernel, initrd],
            devices: if accel.kvm { vec!["kvm"] } else { Vec::new() },
            environment: Box::new(move |env| {
                *environment.lock().unwrap_or_else(|e| e.into_inner()) = Some(env);
            }),
            serve: Box::new(move || {
                // Threads only now: QEMU's sandbox is made by a fork of this
                // process, which must be single-threaded until then.
                if let Some(serve) = serve_broker {
                    std::thread::spawn(move || serve(Ok(Ingress::Streams(streams))));
                }
                if let Some(serve) = serve_control {
                    std::thread::spawn(serve);
                }
                let _ = done.send(host.run());
            }),
            stop,
            signal: Box::new(forward),
        });
        let qemu_command = Command {
            program: Program::Named(qemu.into_os_string()),
            args: args.into_iter().map(OsString::from).collect(),
            cwd: Some(PathBuf::from("/")),
            terminal: Terminal::Inherit,
            timeout: command.timeout,
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
            Ok(status) => Ok(Outcome::Exited {
                status: status.shell_code(),
                message: None,
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

    fn end(self) -> Result<(), VmError> {
        // The VM ended with its command (its QEMU's sandbox is gone).
        Ok(())
    }
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
    /// Where the command's control stream goes (the control endpoint's end).
    control: Option<UnixStream>,
    channel: Channel,
    console: UnixStream,
    /// The command's environment, set before QEMU's sandbox starts.
    environment: Environment,
    stop: Stop,
    tail: Arc<Mutex<Tail>>,
    argv: Vec<String>,
    cwd: String,
    tty: Option<TtySize>,
    boot_timeout: Duration,
}

impl Host {
    /// Waits for the agent, runs the command with its output on this process's
    /// stdout and stderr, then powers the VM off (or kills QEMU's sandbox).
    fn run(self) -> Result<Status, VmError> {
        let Host {
            network,
            control,
            channel,
            console,
            environment,
            stop,
            tail,
            argv,
            cwd,
            tty,
            boot_timeout,
        } = self;
        drain(console, tail.clone());
        let mut channel = channel;
        if let Err(not_ready) = channel.ready(boot_timeout) {
            stop.stop();
            return Err(VmError::Boot {
                why: match not_ready {
                    NotReady::Closed => CLOSED.to_string(),
                    NotReady::Failed(why) => why,
                },
                console: tail_text(&tail),
            });
        }
        if let Some((spec, broker)) = network {
            if let Err(e) = channel.network(&spec, broker) {
                stop.stop();
                return Err(e);
            }
        }
        if let Some(endpoint) = control {
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
        };
        // A terminal is passed on only to the guest's terminal; else /dev/null
        // (a command would read what the user types after it).
        let stdin = std::io::stdin();
        let input: Option<crate::vm::Input> = if stdin.is_terminal() && tty.is_none() {
            None
        } else {
            Some(Box::new(stdin))
        };
        // Not locked for the command's duration: the broker prints its
        // refusals to stderr meanwhile, and would wait for the lock.
        let result = channel.exec(
            &request,
            input,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        );
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let usable = matches!(result, Ok(_) | Err(VmError::ExecFailed { .. }));
        // The guest syncs its file system and powers off; QEMU's sandbox is
        // killed if it does not, or if the guest broke the protocol.
        if !usable || !channel.close(POWER_OFF_WAIT) {
            stop.stop();
        }
        result
    }
}

/// The size of the terminal on cordon's stdin, if it is one.
fn host_tty_size() -> Option<TtySize> {
    let size = rustix::termios::tcgetwinsize(rustix::stdio::stdin()).ok()?;
    Some(TtySize {
        rows: size.ws_row,
        cols: size.ws_col,
    })
}

/// cordon's terminal in raw mode, for as long as this lives.
struct RawMode(Option<rustix::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
        let stdin = rustix::stdio::stdin();
        let saved = tcgetattr(stdin).ok();
        if let Some(mode) = &saved {
            let mut raw = mode.clone();
            raw.make_raw();
            let _ = tcsetattr(stdin, OptionalActions::Drain, &raw);
        }
        RawMode(saved)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(mode) = &self.0 {
            let stdin = rustix::stdio::stdin();
            let _ =
                rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Drain, mode);
        }
    }
}

/// `name` as UTF-8, which the protocol carries (JSON strings).
fn utf8(name: &std::ffi::OsStr, what: &str) -> Result<String, VmError> {
    name.to_str()
        .map(str::to_string)
        .ok_or_else(|| VmError::Request(format!("{what} is not UTF-8: {}", name.to_string_lossy())))
}

/// `program` if it is a path, else found in this process's `PATH`.
fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
