//! Wiring the egress broker (cordon-net) to the OS backend (cordon-sandbox) for
//! one run in `allowlist` mode: the broker is prepared on the host, the sandbox's
//! network helper opens its sockets, and a thread of this process serves them once
//! the sandbox exists.

use cordon_net::audit::HeldNotices;
use cordon_net::{BrokerConfig, Dirs, SandboxSide, Sockets};
use cordon_policy::{NetMode, Policy};
use cordon_sandbox::egress::{EndpointRequest, endpoint_channel, receive_endpoints};
use cordon_sandbox::{Additions, FileOverlay};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

/// What the sandbox needs for the policy's network mode: nothing unless it is
/// `allowlist`. With `control`, the command also inherits a stream to the broker
/// on which it may allow more domains (`cordon serve`'s agent); its descriptor
/// number is returned.
pub fn additions(policy: &Policy, control: bool) -> Result<(Additions, Option<i32>), String> {
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
    control: bool,
    held: Option<HeldNotices>,
    host_env: impl Fn(&str) -> Option<String>,
    adjust: impl FnOnce(&mut SandboxSide) -> Result<(), String>,
) -> Result<(Additions, Option<i32>), String> {
    if policy.net.value != NetMode::Allowlist {
        return Ok((Additions::default(), None));
    }
    let dirs = Dirs::from_env(&policy.home, &policy.data_dir);
    let mut egress =
        cordon_net::prepare(&policy.network, &dirs, host_env).map_err(|e| e.to_string())?;
    adjust(&mut egress.sandbox)?;
    if let Some(held) = held {
        egress.config.audit.hold_notices(held);
    }
    let (host_end, sandbox_end) =
        endpoint_channel().map_err(|e| format!("cannot make the broker's channel: {e}"))?;
    let side = egress.sandbox;
    let config = egress.config;
    let (control_host, control_sandbox) = if control {
        let (host, sandbox) = UnixStream::pair()
            .map_err(|e| format!("cannot make the broker's control stream: {e}"))?;
        (Some(host), Some(OwnedFd::from(sandbox)))
    } else {
        (None, None)
    };
    let control_fd = control_sandbox.as_ref().map(|fd| fd.as_raw_fd());
    let additions = Additions {
        endpoints: Some(EndpointRequest {
            ports: side.ports,
            local_ports: side.local_ports,
            proxy_port: side.proxy_port,
            channel: sandbox_end,
        }),
        files: side
            .files
            .into_iter()
            .map(|(source, target)| FileOverlay { source, target })
            .collect(),
        env: side.env,
        pass_fd: control_sandbox,
        exec_fd: None,
        after_clone: Some(Box::new(move || {
            start_broker(config, host_end, control_host)
        })),
    };
    Ok((additions, control_fd))
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

/// Serves the sandbox's sockets on a thread of its own, for as long as this
/// process lives. If the sockets never arrive, the sandbox has no network at all.
fn start_broker(config: BrokerConfig, channel: OwnedFd, control: Option<UnixStream>) {
    let spawned = std::thread::Builder::new()
        .name("cordon-broker".into())
        .spawn(move || {
            let endpoints = match receive_endpoints(&channel) {
                Ok(endpoints) => endpoints,
                Err(e) => {
                    // Mostly a sandbox that failed to start (its network helper
                    // opens the sockets, and its failure ends the run): printed
                    // now, this would come before the real cause.
                    *NO_SOCKETS.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                        "the egress broker never got the sandbox's sockets, the sandbox had no network: {e}"
                    ));
                    return;
                }
            };
            let sockets = Sockets {
                dns: endpoints.dns,
                listeners: endpoints.listeners,
                proxy: endpoints.proxy,
            };
            if let Err(e) = cordon_net::serve(config, sockets, control) {
                eprint!("cordon: the egress broker stopped, the sandbox has no network: {e}\r\n");
            }
        });
    if let Err(e) = spawned {
        eprint!("cordon: cannot start the egress broker, the sandbox has no network: {e}\r\n");
    }
}
