//! The broker wired to a backend: what a run in `allowlist` mode adds to its
//! sandbox (the trust bundle and placeholders, the ports to open inside), in the
//! backend-neutral terms of `cordon-backend`, and the broker serving whatever
//! [`Ingress`] the backend hands it once the sandbox exists, on the thread the
//! backend gives it. The front ends only say what they need (held notices, an
//! adjustment of the sandbox's side: see [`for_policy`]); the session's host
//! control endpoint reaches the broker through [`Wired::broker`].
//!
//! [`for_policy`]: crate::setup::for_policy

use crate::ingress::namespace::{BrokerStatus, Sockets, serve};
use crate::router::Router;
use crate::setup::Egress;
use cordon_backend::{Additions, FileOverlay, Ingress};

/// A run's broker, wired: what the sandbox gets, and whether the broker served.
#[derive(Default)]
pub struct Wired {
    pub additions: Additions,
    /// Ask once the run has started (see [`BrokerStatus::startup_failure`]).
    pub status: BrokerStatus,
    /// The broker's decisions, shared with the thread that serves the sandbox's
    /// network: what the session's host control endpoint asks (`allowDomain`,
    /// the rules in force, the recent refusals). None without a broker.
    pub broker: Option<Router>,
}

/// Wires `egress` (none: no broker, nothing added) to a backend. The broker's
/// state is made here, on the calling thread, before the sandbox exists; its
/// serving starts on the backend's thread once the sandbox's network does.
pub fn wire(egress: Option<Egress>) -> Wired {
    let Some(Egress { config, sandbox }) = egress else {
        return Wired::default();
    };
    let status = BrokerStatus::default();
    let broker_status = status.clone();
    // A domain allowed later can use only the ports the sandbox listens on.
    let router = Router::new(config, sandbox.ports.clone());
    let serving = router.clone();
    let additions = Additions {
        files: (sandbox.files.into_iter())
            .map(|(source, target)| FileOverlay { source, target })
            .collect(),
        env: sandbox.env,
        egress: Some(cordon_backend::Egress {
            ports: sandbox.ports,
            local_ports: sandbox.local_ports,
            proxy_port: sandbox.proxy_port,
            serve: Box::new(move |ingress| serve_ingress(serving, ingress, &broker_status)),
        }),
        control: None,
    };
    Wired {
        additions,
        status,
        broker: Some(router),
    }
}

/// Serves the sandbox's network for as long as this process lives. If it never
/// came, the sandbox has no network at all, and `status` says why.
fn serve_ingress(router: Router, ingress: std::io::Result<Ingress>, status: &BrokerStatus) {
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
        Ok(Ingress::Streams(streams)) => {
            if let Err(e) = crate::ingress::stream::serve_all(router, streams) {
                eprint!("cordon: the egress broker stopped, the sandbox has no network: {e}\r\n");
            }
            return;
        }
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
    if let Err(e) = serve(router, sockets) {
        eprint!("cordon: the egress broker stopped, the sandbox has no network: {e}\r\n");
    }
}
