//! The OS backend behind cordon-backend's neutral interface.
//!
//! A session here is one sandbox, made by the clone that starts its one command
//! ([`launch`](crate::launch)), and gone when that command's supervisor exits: the
//! kernel then kills whatever is left in its PID namespace. So [`OsSession::exec`]
//! runs once per session, and [`OsSession::end`] has nothing left to do. Starting
//! a session costs nothing: it does no system call, so a `cordon run` pays only for
//! the launch itself.
//!
//! The mechanics stay here: the egress broker's sockets travel from the sandbox's
//! network namespace over a socket pair (SCM_RIGHTS), the control channel is a
//! descriptor the command inherits, cordon's own binary runs from an `O_PATH`
//! descriptor, and the threads of the broker and of the control channel's server
//! start only after the clone (which copies the calling thread alone).

use crate::error::SandboxError;
use crate::launch::{self, Additions as Mechanics};
use cordon_backend::{
    Additions, Backend, BackendKind, Command, ControlChannel, Degraded, Egress, Layer, Layers,
    LimitsAssessment, Namespace, Outcome, Program, Session,
};
use cordon_policy::{NetMode, Policy};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

/// Linux namespaces, the mount view, Landlock, seccomp and limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsBackend;

impl Backend for OsBackend {
    type Session<'p> = OsSession<'p>;
    type Error = SandboxError;

    fn kind(&self) -> BackendKind {
        BackendKind::Os
    }

    fn layers(&self, policy: &Policy, degraded: Degraded) -> Layers {
        layers(policy, degraded)
    }

    /// The mechanism a run would choose ([`launch::limits_mechanism`]) and how
    /// each limit holds under it ([`crate::limits::assess`]): what `launch`
    /// refuses by.
    fn assess_limits(&self, policy: &Policy) -> LimitsAssessment {
        let mechanism = launch::limits_mechanism(&policy.limits);
        LimitsAssessment {
            limits: crate::limits::assess(&policy.limits, &mechanism),
            mechanism: mechanism.describe(),
        }
    }

    fn start<'p>(
        &'p self,
        policy: &'p Policy,
        degraded: Degraded,
    ) -> Result<OsSession<'p>, SandboxError> {
        Ok(OsSession {
            policy,
            degraded,
            control: None,
            server: None,
            ran: false,
        })
    }
}

/// The layers every sandbox of `policy` has: a sandbox without one of them is
/// never started (`launch` refuses), but for Landlock with `--allow-degraded
/// landlock`.
fn layers(policy: &Policy, _degraded: Degraded) -> Layers {
    use Namespace::*;
    // Made by the clone (launch.rs), and the network namespace by the supervisor
    // unless the network is the host's.
    let namespaces = if policy.net.value == NetMode::Host {
        vec![User, Mount, Pid, Ipc, Uts, Cgroup]
    } else {
        vec![User, Mount, Pid, Net, Ipc, Uts, Cgroup]
    };
    let mut layers = vec![Layer::Namespaces(namespaces)];
    // The same test as launch.rs: Landlock is applied when the kernel has an ABI.
    if let Ok(abi) = crate::confine::landlock::kernel_abi() {
        if abi > 0 {
            layers.push(Layer::Landlock { abi: abi as u32 });
        }
    }
    layers.extend([Layer::Seccomp, Layer::NoCapabilities, Layer::NoNewPrivs]);
    Layers(layers)
}

/// One sandbox, for one command.
pub struct OsSession<'p> {
    policy: &'p Policy,
    degraded: Degraded,
    /// The sandbox's end of the control channel: inherited by the command.
    control: Option<OwnedFd>,
    /// Set when the command serves the view to another machine (QEMU).
    server: Option<ViewServer>,
    ran: bool,
}

/// A command of another backend that serves the sandbox's view to a party it
/// trusts less than itself: QEMU, whose file share gives its guest the view as
/// the VM's file system (crates/cordon-vm). Given to [`OsSession::serve_view`]
/// before [`Session::exec`]; the policy, the view and every layer stay as for
/// any command, but:
/// - the view is also mounted at [`SERVED_VIEW`], with `/proc`, `/sys` and
///   `/dev` empty there: that is the tree to serve. The command's own `/proc`
///   (which QEMU's 9p server and virtiofsd need, for `/proc/self/fd`) stays out of it, so the
///   guest never reaches the server's process (`/proc/self/mem`), nor the
///   host's `/sys`;
/// - the command inherits [`ViewServer::fds`] at their numbers, and finds the
///   host devices [`ViewServer::devices`] in `/dev` beside the harmless ones;
/// - it runs with an empty environment: the one the policy gives a command (its
///   variables, the additions', git's excludes) goes to
///   [`ViewServer::environment`], for the command the server runs elsewhere;
/// - [`ViewServer::serve`] runs on a thread of its own once the sandbox exists,
///   and [`ViewServer::stop`] ends the sandbox from any thread;
/// - the signals cordon passes on to a command (SIGINT, SIGTERM, ...), and
///   SIGWINCH, go to [`ViewServer::signal`], for the command the server runs,
///   not to the server.
pub struct ViewServer {
    /// Descriptors the command inherits, at the same numbers.
    pub fds: Vec<OwnedFd>,
    /// Names in the host's `/dev` the command gets too (`kvm`).
    pub devices: Vec<&'static str>,
    /// The most each private tmpfs of the view (`/tmp`, a hidden home) may
    /// hold, in bytes: what the server's guest writes there is the host's
    /// memory, outside the guest's own limit.
    pub scratch_size: Option<u64>,
    /// Called once, before the command starts, with the environment a command
    /// of this policy gets.
    pub environment: TakeEnvironment,
    /// Called once, on a thread of its own, right after the sandbox is made
    /// (the command may not have started yet).
    pub serve: Box<dyn FnOnce() + Send>,
    pub stop: Stop,
    /// Given each signal cordon passes on to the command (on the thread that
    /// waits for the sandbox); with a terminal, SIGCONT and SIGWINCH too.
    pub signal: ForwardSignal,
    /// cordon's terminal, when the server relays it to its command.
    pub terminal: Option<crate::ServedTerminal>,
}

/// Takes a signal for the command a server of the view runs (see
/// [`ViewServer::signal`]).
pub type ForwardSignal = Box<dyn Fn(i32) + Send + Sync>;

/// Takes the environment a command of the policy gets (see
/// [`ViewServer::environment`]).
pub type TakeEnvironment = Box<dyn FnOnce(Vec<(String, String)>) + Send>;

/// Where a server of the view finds the tree it serves (see [`ViewServer`]).
pub const SERVED_VIEW: &str = crate::view::SERVED_VIEW;

/// Ends a sandbox from any thread: SIGKILL to its supervisor, PID 1 of its PID
/// namespace, whose end takes every process of the sandbox along. Armed once the
/// sandbox exists (through a pidfd, so a reused pid is never hit); before that,
/// and after the sandbox ended, [`Stop::stop`] does nothing.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<Mutex<Option<OwnedFd>>>);

impl Stop {
    /// Kills the sandbox if it runs; says whether it was armed.
    pub fn stop(&self) -> bool {
        let armed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match armed.as_ref() {
            Some(pidfd) => {
                let _ = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
                true
            }
            None => false,
        }
    }

    /// Arms the switch for the sandbox whose supervisor is `pid`.
    pub(crate) fn arm(&self, pid: libc::pid_t) -> std::io::Result<()> {
        let pid = rustix::process::Pid::from_raw(pid)
            .ok_or_else(|| std::io::Error::other("no supervisor pid"))?;
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(pidfd);
        Ok(())
    }
}

impl OsSession<'_> {
    /// Runs the next command as a server of the view (see [`ViewServer`]).
    pub fn serve_view(&mut self, server: ViewServer) {
        self.server = Some(server);
    }
}

impl Session for OsSession<'_> {
    type Error = SandboxError;

    fn layers(&self) -> Layers {
        layers(self.policy, self.degraded)
    }

    fn control_channel(&mut self) -> Result<ControlChannel, SandboxError> {
        if self.control.is_some() {
            return Err(SandboxError::Session(
                "the OS backend gives a command one control channel, which this one has",
            ));
        }
        let (host, sandbox) = UnixStream::pair()
            .map_err(|e| SandboxError::io("cannot make the control channel", e))?;
        let fd = sandbox.as_raw_fd();
        self.control = Some(sandbox.into());
        Ok(ControlChannel { host, fd })
    }

    fn exec(&mut self, command: &Command, additions: Additions) -> Result<Outcome, SandboxError> {
        if std::mem::replace(&mut self.ran, true) {
            return Err(SandboxError::Session(
                "the OS backend runs one command per session, and this one has run",
            ));
        }
        let own: OsString;
        let (argv0, exec_fd) = match &command.program {
            Program::Named(name) => (name.as_os_str(), None),
            Program::Cordon => {
                let (name, file) = own_binary()?;
                own = name;
                (own.as_os_str(), Some(file))
            }
        };
        let Additions {
            files,
            env,
            egress,
            control,
        } = additions;
        let mut mechanics = Mechanics {
            endpoints: None,
            files,
            env,
            pass_fds: self.control.take().into_iter().collect(),
            exec_fd,
            server: None,
        };
        let mut serve_view = None;
        if let Some(server) = self.server.take() {
            mechanics.pass_fds.extend(server.fds);
            mechanics.server = Some(crate::launch::Server {
                devices: server.devices,
                scratch_size: server.scratch_size,
                environment: server.environment,
                stop: server.stop,
                signal: server.signal,
                terminal: server.terminal,
            });
            serve_view = Some(server.serve);
        }
        // The broker's side: the channel its sockets come over, and who serves them.
        let broker = match egress {
            None => None,
            Some(Egress {
                ports,
                local_ports,
                proxy_port,
                serve,
            }) => {
                let (host_end, sandbox_end) = crate::egress::endpoint_channel()
                    .map_err(|e| SandboxError::io("cannot make the egress broker's channel", e))?;
                mechanics.endpoints = Some(crate::egress::EndpointRequest {
                    ports,
                    local_ports,
                    proxy_port,
                    channel: sandbox_end,
                });
                Some((host_end, serve))
            }
        };
        launch::run(
            self.policy,
            argv0,
            command,
            self.degraded,
            mechanics,
            move || {
                if let Some((host_end, serve)) = broker {
                    // Waits for the sockets the sandbox's network helper opens,
                    // then serves them, for as long as this process lives.
                    spawn("cordon-broker", "the egress broker", move || {
                        serve(crate::egress::receive_endpoints(&host_end))
                    })?;
                }
                if let Some(control) = control {
                    spawn("cordon-control", "the host control endpoint", control)?;
                }
                if let Some(serve) = serve_view {
                    spawn("cordon-view-server", "the view server's host side", serve)?;
                }
                Ok(())
            },
        )
    }

    fn end(self) -> Result<(), SandboxError> {
        // The sandbox ended with its command's supervisor.
        Ok(())
    }
}

/// Starts `what` on a thread of its own named `name` (after the clone only).
fn spawn(name: &str, what: &str, run: impl FnOnce() + Send + 'static) -> Result<(), SandboxError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(run)
        .map(drop)
        .map_err(|e| SandboxError::io(format!("cannot start {what}"), e))
}

/// cordon's own binary, as the name it is started under and a descriptor to exec
/// (close-on-exec: the exec closes it, so the command and what it starts never
/// hold it).
fn own_binary() -> Result<(OsString, OwnedFd), SandboxError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open("/proc/self/exe")
        .map_err(|e| SandboxError::io("cannot open cordon's own binary (/proc/self/exe)", e))?;
    let name = std::env::current_exe().unwrap_or_else(|_| "cordon".into());
    Ok((name.into_os_string(), file.into()))
}
