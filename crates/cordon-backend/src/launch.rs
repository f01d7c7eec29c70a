//! What to run, what the host adds to it, and how it ended.

use std::ffi::OsString;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// The program a [`Command`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A path in the sandbox's view, or a name looked up on the sandbox's PATH.
    Named(OsString),
    /// This very cordon binary, whether or not the sandbox's view shows its path
    /// (`cordon serve`'s agent runs from it). It is started under its host path.
    Cordon,
}

/// How the command's terminal is arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    /// The command shares cordon's stdin, stdout and stderr.
    Inherit,
    /// A pseudo-terminal inside the sandbox, relayed to cordon's own terminal
    /// (which must be one): job control, Ctrl-C/Ctrl-Z and resizes work inside.
    Pty,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Command {
    pub program: Program,
    pub args: Vec<OsString>,
    /// Working directory inside the sandbox; the workspace if `None`.
    pub cwd: Option<PathBuf>,
    pub terminal: Terminal,
    /// Every process of the session is killed after this long.
    pub timeout: Option<Duration>,
}

/// A host file laid read-only over a path of the view (which may be a symlink:
/// the file then sits on the link itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOverlay {
    /// Absolute, canonical path of the file on the host.
    pub source: PathBuf,
    /// Absolute path in the view, whose parent directories are no symlinks.
    pub target: PathBuf,
}

/// What the host adds to a command beyond its policy.
#[derive(Default)]
pub struct Additions {
    /// Files laid over the view.
    pub files: Vec<FileOverlay>,
    /// Set after the policy's environment; the same name replaces its value.
    pub env: Vec<(String, String)>,
    /// The egress broker's side, for the `allowlist` network mode (which refuses
    /// to run without it).
    pub egress: Option<Egress>,
    /// Who serves the host's end of the command's control channel (see
    /// [`ServeControl`]), when the command has one.
    pub control: Option<ServeControl>,
}

/// Serves the host's end of a command's control channel
/// ([`Session::control_channel`]): called once, on a thread of its own, once the
/// command has started (never before: a backend may need to be alone in its
/// process until then); it returns when the command's end closes.
///
/// [`Session::control_channel`]: crate::Session::control_channel
pub type ServeControl = Box<dyn FnOnce() + Send>;

/// Serves the sandbox's network on the host (see [`Egress::serve`]).
pub type ServeEgress = Box<dyn FnOnce(std::io::Result<Ingress>) + Send>;

/// The sandbox's network in the `allowlist` mode: what the backend opens inside,
/// and who serves it on the host (the egress broker).
pub struct Egress {
    /// TCP ports that the names the broker's DNS answers take connections on.
    pub ports: Vec<u16>,
    /// Those of `ports` that also take connections to the sandbox's 127.0.0.1
    /// (`--allow-local`).
    pub local_ports: Vec<u16>,
    /// A port on the sandbox's 127.0.0.1 for programs that want an HTTP proxy.
    pub proxy_port: Option<u16>,
    /// Called once, on a thread of its own, when the sandbox's network exists:
    /// with its [`Ingress`], or with why it never came (the sandbox then has no
    /// network at all). It may serve for as long as this process lives.
    pub serve: ServeEgress,
}

/// How the sandbox's connections and DNS queries reach the broker.
#[derive(Debug)]
pub enum Ingress {
    /// Sockets open in the sandbox's own network, which the broker accepts on and
    /// reads from directly (the OS backend: made in the sandbox's network
    /// namespace; nothing relays inside).
    Sockets {
        /// UDP, where the sandbox's resolver sends its queries.
        dns: UdpSocket,
        /// One listener per port of [`Egress::ports`].
        listeners: Vec<(u16, TcpListener)>,
        /// The HTTP proxy's listener ([`Egress::proxy_port`]).
        proxy: Option<TcpListener>,
    },
    /// Byte streams, each opening with a header that names where it was meant
    /// to go (the broker's stream ingress), each one end of a socket pair, for
    /// as long as the sender lives (the VM backend: its guest's agent relays
    /// the guest's connections and DNS queries over the VM's channel).
    Streams(std::sync::mpsc::Receiver<UnixStream>),
}

/// A stream between the host and a command (see [`Session::control_channel`]).
///
/// [`Session::control_channel`]: crate::Session::control_channel
#[derive(Debug)]
pub struct ControlChannel {
    /// The host's end.
    pub host: UnixStream,
    /// The descriptor number at which the command inherits its end.
    pub fd: i32,
}

/// Layers the user explicitly agreed to run without (`--allow-degraded`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Degraded {
    /// Run without Landlock on a kernel that lacks it.
    pub no_landlock: bool,
    /// Run with limits that do not hold here, enforced as far as they go, rather
    /// than refuse.
    pub best_effort_limits: bool,
}

/// How the command ended, already mapped to the exit statuses of DESIGN.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command's own exit status, or 128+N if it died of signal N, or 126/127
    /// when it could not be executed; with cordon's message when there is one.
    Exited {
        status: i32,
        message: Option<String>,
    },
    /// The timeout expired; every process of the session was killed.
    TimedOut(Duration),
}
