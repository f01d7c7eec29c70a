//! The agent's end of the session's control stream to the host
//! ([`crate::protocol::control`]): `allowDomain` and the host's part of `status`
//! go through it. The host answers whatever the network mode; only this agent
//! holds its end (handed in as a descriptor, closed on exec so no command
//! inherits it). The user's consent to a new domain is the client's business
//! (pi's extension asks first).

use crate::error::ToolError;
use crate::protocol::control::{ControlReply, ControlRequest, HostStatus, Yes};
use crate::protocol::{AllowDomainParams, AllowDomainResult};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

pub struct Control {
    /// One request at a time: the protocol is a line each way.
    stream: Mutex<BufReader<UnixStream>>,
}

impl Control {
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

    /// One request, one answer.
    fn ask(&self, request: &ControlRequest) -> std::io::Result<ControlReply> {
        let mut stream = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
        line.push(b'\n');
        stream.get_mut().write_all(&line)?;
        let mut reply = String::new();
        if stream.read_line(&mut reply)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        serde_json::from_str(&reply).map_err(std::io::Error::other)
    }

    /// What the host knows of the session; `None` if it did not answer.
    pub fn host_status(&self) -> Option<HostStatus> {
        match self.ask(&ControlRequest::Status { status: Yes }) {
            Ok(ControlReply::Status { status }) => Some(status),
            _ => None,
        }
    }

    /// Allows `p.domain` for the rest of the session; `p.origin` says who asked
    /// (the audit log and the rule's origin name it). A session without an egress
    /// broker answers why it has none and what would give it one.
    pub fn allow_domain(&self, p: &AllowDomainParams) -> Result<AllowDomainResult, ToolError> {
        let domain = p.domain.as_str();
        let request = ControlRequest::AllowDomain {
            allow: p.domain.clone(),
            origin: p.origin.clone(),
        };
        let refused = |why: &str| ToolError::Broker(format!("allowDomain {domain}: {why}"));
        match self.ask(&request) {
            Ok(ControlReply::Allowed { allowed }) => Ok(AllowDomainResult { allowed }),
            Ok(ControlReply::Error(e)) => Err(refused(&e.error)),
            Ok(ControlReply::Status { .. }) => Err(refused("the host answered another request")),
            Err(e) => Err(refused(&format!("the host did not answer: {e}"))),
        }
    }
}

/// `allowDomain` of an agent that has no control stream (one not started by
/// `cordon serve`).
pub fn no_control(p: &AllowDomainParams) -> ToolError {
    ToolError::Broker(format!(
        "allowDomain {}: this agent has no control stream to the host (it runs outside a `cordon serve` session), so nothing can widen its network",
        p.domain
    ))
}
