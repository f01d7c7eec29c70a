//! One session on the host: the backend's session, the egress broker its policy
//! needs, and (for a front end that asks, as `cordon serve` does) the host
//! control endpoint, held together from the start to the end. [`crate::run::run`]
//! runs its command.

use crate::SessionError;
use crate::control::Endpoint;
use cordon_backend::{Backend, BackendKind, Degraded, Layers, Session};
use cordon_net::Wired;
use cordon_policy::Policy;

/// A session of a backend, with what the host adds to it.
pub struct HostSession<'p, S> {
    pub(crate) policy: &'p Policy,
    kind: BackendKind,
    pub(crate) session: S,
    /// The broker's side of the run (none: nothing added), and what the host
    /// adds beyond it (the control endpoint, variables).
    pub(crate) egress: Wired,
}

/// Starts a session of `backend` for `policy` (which `degraded` may run without
/// the layers it names), with `egress`, the broker `cordon_net::wire` made for
/// the policy (`Wired::default()` for none).
pub fn start<'p, B: Backend>(
    backend: &'p B,
    policy: &'p Policy,
    degraded: Degraded,
    egress: Wired,
) -> Result<HostSession<'p, B::Session<'p>>, SessionError> {
    let session = backend
        .start(policy, degraded)
        .map_err(|e| SessionError::Backend(Box::new(e)))?;
    Ok(HostSession {
        policy,
        kind: backend.kind(),
        session,
        egress,
    })
}

impl<'p, S: Session> HostSession<'p, S> {
    pub fn policy(&self) -> &'p Policy {
        self.policy
    }

    /// The backend the session runs in.
    pub fn backend(&self) -> BackendKind {
        self.kind
    }

    /// The isolation layers in force, as the backend reports them.
    pub fn layers(&self) -> Layers {
        self.session.layers()
    }

    /// Gives the command run next the session's host control endpoint
    /// ([`crate::control`]), whatever the network mode: the backend makes the
    /// channel, and the endpoint serves the host's end on a thread of its own
    /// once the command has started. Returns the descriptor at which the command
    /// finds its end.
    pub fn control(&mut self) -> Result<i32, SessionError> {
        let channel =
            (self.session.control_channel()).map_err(|e| SessionError::Backend(Box::new(e)))?;
        let endpoint = Endpoint::new(
            &self.policy.net,
            self.kind,
            &self.session.layers(),
            self.egress.broker.clone(),
        );
        let host = channel.host;
        self.egress.additions.control = Some(Box::new(move || endpoint.serve(host)));
        Ok(channel.fd)
    }

    /// Sets variable `name` to `value` in the command's environment (after the
    /// policy's and the broker's).
    pub fn set_env(&mut self, name: impl Into<String>, value: impl Into<String>) {
        (self.egress.additions.env).push((name.into(), value.into()));
    }
}
