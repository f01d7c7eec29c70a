//! Wiring the egress broker (cordon-net) to a backend for one run in `allowlist`
//! mode: the broker is prepared on the host, the backend opens the sandbox's side
//! of the network, and the broker serves its [`Ingress`] on the thread the backend
//! starts once the sandbox exists.

use cordon_backend::{Additions, Egress, FileOverlay, Ingress};
use cordon_net::audit::HeldNotices;
use cordon_net::{BrokerConfig, Dirs, SandboxSide, Sockets};
use cordon_policy::{NetMode, Policy};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

/// What the sandbox needs for the policy's network mode: nothing unless it is
/// `allowlist`. With `control` (the host's end of the session's control channel,
/// `cordon serve`'s), the broker also takes requests to allow more domains there.
pub fn additions(policy: &Policy, control: Option<UnixStream>) -> Result<Additions, String> {
    additions_with(
        policy,
        control,
        None,
        |name| std::env::var(name).ok(),
        |_| Ok(()),
    )
}

/// [`additions`] with the secrets' values read by `host_env`, and `adjust` given
/// the sandbox's side once the placeholders exist (to lay files holding them over
/// the view, or drop variables). With `held`, the broker's refusal notices are
/// held there instead of printed (a full-screen program owns the terminal).
pub fn additions_with(
    policy: &Policy,
    control: Option<UnixStream>,
    held: Option<HeldNotices>,
    host_env: impl Fn(&str) -> Option<String>,
    adjust: impl FnOnce(&mut SandboxSide) -> Result<(), String>,
) -> Result<Additions, String> {
    if policy.net.value != NetMode::Allowlist {
        return Ok(Additions::default());
    }
    let dirs = Dirs::from_env(&policy.home, &policy.data_dir);
    let mut egress =
        cordon_net::prepare(&policy.network, &dirs, host_env).map_err(|e| e.to_string())?;
    adjust(&mut egress.sandbox)?;
    if let Some(held) = held {
        egress.config.audit.hold_notices(held);
    }
    let side = egress.sandbox;
    let config = egress.config;
    Ok(Additions {
        files: side
            .files
            .into_iter()
            .map(|(source, target)| FileOverlay { source, target })
            .collect(),
        env: side.env,
        egress: Some(Egress {
            ports: side.ports,
            local_ports: side.local_ports,
            proxy_port: side.proxy_port,
            serve: Box::new(move |ingress| serve(config, ingress, control)),
        }),
    })
}

/// Why the broker never got the sandbox's sockets, if it did not: said by
/// [`startup_failure`] only once the run is known to have started.
static NO_SOCKETS: Mutex<Option<String>> = Mutex::new(None);

/// Why the broker of a sandbox that did run never got its sockets (the sandbox
/// then had no network). A sandbox that failed to start never sends them: its
/// own error says why, and this is not worth a word.
pub fn startup_failure() -> Option<String> {
    NO_SOCKETS.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Serves the sandbox's network (on the thread the backend gives it), for as long
/// as this process lives. If it never came, the sandbox has no network at all.
fn serve(config: BrokerConfig, ingress: std::io::Result<Ingress>, control: Option<UnixStream>) {
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
            // sockets, and its failure ends the run): printed now, this would come
            // before the real cause.
            *NO_SOCKETS.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                "the egress broker never got the sandbox's sockets, the sandbox had no network: {e}"
            ));
            return;
        }
    };
    if let Err(e) = cordon_net::serve(config, sockets, control) {
        eprint!("cordon: the egress broker stopped, the sandbox has no network: {e}\r\n");
    }
}
