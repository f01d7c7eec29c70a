//! The broker wired to a backend: what a run in `allowlist` mode adds to its
//! sandbox (the trust bundle and placeholders, the ports to open inside), in the
//! backend-neutral terms of `cordon-backend`, and the broker serving whatever
//! [`Ingress`] the backend hands it once the sandbox exists, on the thread the
//! backend gives it. The front ends only say what they need (a control stream,
//! held notices, an adjustment of the sandbox's side: see [`for_policy`]).
//!
//! [`for_policy`]: crate::setup::for_policy

use crate::ingress::namespace::{BrokerStatus, Sockets, serve};
use crate::setup::Egress;
use crate::state::BrokerConfig;
use cordon_backend::{Additions, FileOverlay, Ingress};
use std::os::unix::net::UnixStream;

/// A run's broker, wired: what the sandbox gets, and whether the broker served.
#[derive(Default)]
pub struct Wired {
    pub additions: Additions,
    /// Ask once the run has started (see [`BrokerStatus::startup_failure`]).
    pub status: BrokerStatus,
}

/// Wires `egress` (none: no broker, nothing added) to a backend. With `control`
/// (the host's end of the session's control channel), the broker also takes
/// requests to allow more names there.
pub fn wire(egress: Option<Egress>, control: Option<UnixStream>) -> Wired {
    let Some(Egress { config, sandbox }) = egress else {
        return Wired::default();
    };
    let status = BrokerStatus::default();
    let broker_status = status.clone();
    let additions = Additions {
        files: (sandbox.files.into_iter())
            .map(|(source, target)| FileOverlay { source, target })
            .collect(),
        env: sandbox.env,
        egress: Some(cordon_backend::Egress {
            ports: sandbox.ports,
            local_ports: sandbox.local_ports,
            proxy_port: sandbox.proxy_port,
            serve: Box::new(move |ingress| serve_ingress(config, ingress, control, &broker_status)),
        }),
        control: None,
    };
    Wired { additions, status }
}

/// Serves the sandbox's network for as long as this process lives. If it never
/// came, the sandbox has no network at all, and `status` says why.
fn serve_ingress(
    config: BrokerConfig,
    ingress: std::io::Result<Ingress>,
    control: Option<UnixStream>,
    status: &BrokerStatus,
) {
    let sockets = match ingress {
        Ok(Ingress::Sockets {
            dns,
            listeners,
            proxy,
        }) => Sockets {
            dns,
            listeners,
            proxy,
        },
        Err(e) => {
            // Mostly a sandbox that failed to start (its network helper opens the
            // sockets, and its failure ends the run): said now, this would come
            // before the real cause.
            status.failed(format!(
                "the egress broker never got the sandbox's sockets, the sandbox had no network: {e}"
            ));
            return;
        }
    };
    if let Err(e) = serve(config, sockets, control) {
        eprint!("cordon: the egress broker stopped, the sandbox has no network: {e}\r\n");
    }
}
