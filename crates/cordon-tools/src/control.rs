//! `allowDomain`: the session's request to the egress broker, on the host, to
//! allow one more domain. The broker listens on a stream whose other end only this
//! agent holds (handed in as a descriptor, closed on exec so no command inherits
//! it). The user's consent is the client's business (pi's extension asks first).

use crate::error::ToolError;
use crate::protocol::{AllowDomainParams, AllowDomainResult, AllowedDomain, Denial};
use cordon_policy::{NetMode, Origin, Policy};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

pub struct Control {
    /// One request at a time: the protocol is a line each way.
    stream: Mutex<BufReader<UnixStream>>,
}

impl Control {
    /// One request, one answer.
    fn ask(&self, request: &Value) -> std::io::Result<Value> {
        let mut stream = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        let mut line = request.to_string();
        line.push('\n');
        stream.get_mut().write_all(line.as_bytes())?;
        let mut reply = String::new();
        stream.read_line(&mut reply)?;
        serde_json::from_str(&reply).map_err(std::io::Error::other)
    }

    /// Takes ownership of descriptor `fd` (made close-on-exec here).
    pub fn adopt(fd: i32) -> Option<Control> {
        if fd < 3 {
            return None;
        }
        // SAFETY: the launcher passed this descriptor to this process for this use.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        Some(Control {
            stream: Mutex::new(BufReader::new(UnixStream::from(owned))),
        })
    }
}

/// The broker's recent refusals, as denial records like the agent's own
/// (`{time, op: "network", path: "host:port", rule: reason}`); none without a broker.
pub fn network_denials(control: Option<&Control>) -> Vec<Denial> {
    let Some(control) = control else {
        return Vec::new();
    };
    let Ok(reply) = control.ask(&json!({ "refusals": true })) else {
        return Vec::new();
    };
    let refusals = reply
        .get("refusals")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    refusals
        .iter()
        .map(|r| {
            let secs = r["time"].as_f64().unwrap_or(0.0).max(0.0);
            let host = r["host"].as_str().unwrap_or("?");
            let target = match r["port"].as_u64() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_string(),
            };
            Denial {
                time: crate::guard::rfc3339(std::time::Duration::from_secs_f64(secs)),
                op: "network".into(),
                path: target,
                rule: r["reason"].as_str().unwrap_or("?").to_string(),
            }
        })
        .collect()
}

/// The allow rules in force, as `{"domain", "preset", "origin"}`: the broker's
/// (the policy's and those this session added), else the policy's (none: without a
/// broker the network is off, or the host's).
pub fn allowed_domains(control: Option<&Control>, policy: &Policy) -> Vec<AllowedDomain> {
    if let Some(mut reply) = control.and_then(|c| c.ask(&json!({ "rules": true })).ok())
        && let Ok(allow) = serde_json::from_value(reply["allow"].take())
    {
        return allow;
    }
    if policy.net.value != NetMode::Allowlist {
        return Vec::new();
    }
    policy
        .network
        .allow
        .iter()
        .map(|r| AllowedDomain {
            domain: r.pattern.to_string(),
            preset: r.preset.clone(),
            origin: r.origin.to_string(),
        })
        .collect()
}

/// Allows `domain` for the rest of the session through the broker; `origin` says
/// who asked (the audit log and the rule's origin name it). Without a broker, the
/// error says why the session has none and what would give it one.
pub fn allow_domain(
    control: Option<&Control>,
    policy: &Policy,
    p: &AllowDomainParams,
) -> Result<AllowDomainResult, ToolError> {
    let domain = p.domain.as_str();
    let control = control.ok_or_else(|| ToolError::Broker(no_broker(policy, domain)))?;
    let mut request = json!({ "allow": domain });
    if let Some(origin) = &p.origin {
        request["origin"] = json!(origin);
    }
    let reply = control.ask(&request).map_err(|e| {
        ToolError::Broker(format!(
            "allowDomain: the egress broker did not answer: {e}"
        ))
    })?;
    match (reply.get("allowed"), reply.get("error")) {
        (Some(allowed), _) => Ok(AllowDomainResult {
            allowed: allowed.as_str().unwrap_or(domain).to_string(),
        }),
        (_, Some(error)) => Err(ToolError::Broker(format!(
            "allowDomain {domain}: {}",
            error.as_str().unwrap_or("refused")
        ))),
        _ => Err(ToolError::Broker(
            "allowDomain: an empty answer from the broker".into(),
        )),
    }
}

/// Why a session has no broker to widen, naming the setting that made it so.
fn no_broker(policy: &Policy, domain: &str) -> String {
    let origin = &policy.net.origin;
    let mode = net_name(policy.net.value);
    let set_by = match origin {
        Origin::Flag { flag } => format!("{flag} {mode}"),
        _ => format!("\"net\": \"{mode}\" of the {origin}"),
    };
    match policy.net.value {
        NetMode::None => format!(
            "allowDomain {domain}: this session's network is off by {set_by}, and stays off: a session started with --net none cannot be widened. To allow domains during a session, start it without --net none (the default starts with nothing allowed and lets allowDomain add names)"
        ),
        NetMode::Host => format!(
            "allowDomain {domain}: this session has the host's whole network ({set_by}): there is no allowlist to widen"
        ),
        NetMode::Allowlist => format!(
            "allowDomain {domain}: this session has no egress broker (cordon started it without one), so it has no network to widen"
        ),
    }
}

fn net_name(mode: NetMode) -> &'static str {
    match mode {
        NetMode::None => "none",
        NetMode::Host => "host",
        NetMode::Allowlist => "allowlist",
    }
}
