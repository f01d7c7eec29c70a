//! cordon's backend boundary: what every backend offers, in types that name no
//! mechanism of any one of them.
//!
//! A backend turns a resolved [`Policy`] into an isolated place to run processes.
//! The front ends (`cordon run`, `shell`, `serve`, `pi`) drive it through
//! [`Backend`] and [`Session`] only:
//!
//! 1. [`Backend::start`] starts a session for a policy;
//! 2. [`Session::control_channel`] (optional) makes a stream between the host and
//!    the command (the host control endpoint of `cordon serve`'s agent), served on
//!    the host by [`Additions::control`];
//! 3. [`Session::exec`] runs a [`Command`] in it, with what the host adds
//!    ([`Additions`]: files, environment, the egress broker's side, the control
//!    channel's server), and waits for
//!    its [`Outcome`];
//! 4. [`Session::end`] ends the session.
//!
//! [`Backend::layers`] and [`Session::layers`] say which isolation [`Layers`] are in
//! force: `cordon serve` reports them, and `cordon policy` prints them.
//! [`Backend::assess_limits`] says whether each resource limit of the policy holds
//! ([`LimitsAssessment`]): `cordon policy` prints it, and `cordon run
//! --allow-degraded limits` warns with it.
//!
//! The OS backend (`cordon_sandbox::OsBackend`: namespaces, the mount view,
//! Landlock, seccomp) implements this, and the VM backend (`cordon_vm::VmBackend`:
//! QEMU in an OS sandbox, the guest's root that sandbox's view). Nothing here is Linux-specific beyond std's socket types.

mod launch;
mod layers;
mod limits;

pub use launch::{
    Additions, Command, ControlChannel, Degraded, Egress, FileOverlay, Ingress, Outcome, Program,
    ServeControl, ServeEgress, Terminal,
};
pub use layers::{Layer, Layers, Namespace};
pub use limits::{Assessment, Hold, LimitKind, LimitsAssessment, out_of_memory};

use cordon_policy::Policy;

/// The backends cordon has (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Linux namespaces, a mount view, Landlock, seccomp (cordon-sandbox).
    #[default]
    Os,
    /// A QEMU VM whose file system is the OS backend's view (cordon-vm).
    Vm,
}

impl BackendKind {
    /// The name `--backend` takes and `cordon serve` reports.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Os => "os",
            BackendKind::Vm => "vm",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A place to run processes under a policy.
pub trait Backend {
    /// One session: the isolated place, for as long as it lives.
    type Session<'p>: Session<Error = Self::Error>
    where
        Self: 'p;
    type Error: std::error::Error + Send + Sync + 'static;

    fn kind(&self) -> BackendKind;

    /// The layers a session of `policy` has in force (the same as
    /// [`Session::layers`] of one started with these arguments), without starting
    /// one.
    fn layers(&self, policy: &Policy, degraded: Degraded) -> Layers;

    /// Whether each resource limit of `policy` would hold in a session, and how;
    /// without starting one. A session refuses an explicit limit that does not
    /// hold unless [`Degraded::best_effort_limits`].
    fn assess_limits(&self, policy: &Policy) -> LimitsAssessment;

    /// Starts a session for `policy`, which must outlive it. `degraded` names the
    /// layers the user agreed to run without; any other missing layer is a refusal
    /// (here or at [`Session::exec`]), never a session without it.
    fn start<'p>(
        &'p self,
        policy: &'p Policy,
        degraded: Degraded,
    ) -> Result<Self::Session<'p>, Self::Error>;
}

/// A started session of a [`Backend`].
pub trait Session {
    type Error: std::error::Error + Send + Sync + 'static;

    /// The isolation layers in force for what runs in this session.
    fn layers(&self) -> Layers;

    /// A stream between the host and the next command [`exec`](Session::exec)
    /// runs: the host keeps [`ControlChannel::host`]; the command finds its end at
    /// descriptor [`ControlChannel::fd`]. At most one per command.
    fn control_channel(&mut self) -> Result<ControlChannel, Self::Error>;

    /// Runs `command` in the session with `additions`, and waits for its end.
    ///
    /// Streams: the command's stdin, stdout and stderr are this process's, or
    /// with [`Terminal::Pty`] a pseudo-terminal inside relayed to this process's
    /// terminal. Signals: those sent to this process (SIGINT, SIGTERM, SIGHUP,
    /// SIGQUIT, SIGUSR1, SIGUSR2) are passed on to the command; they are how a
    /// caller cancels it. Timeout: after [`Command::timeout`] every process of
    /// the session is killed ([`Outcome::TimedOut`]).
    fn exec(&mut self, command: &Command, additions: Additions) -> Result<Outcome, Self::Error>;

    /// Ends the session: nothing of it runs afterwards.
    fn end(self) -> Result<(), Self::Error>;
}
