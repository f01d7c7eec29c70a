//! The session's host control endpoint: the host's end of the control channel
//! the command of a session gets (`cordon serve`'s agent), whatever the network
//! mode. It reads the requests of [`cordon_tools::protocol::control`] and
//! dispatches them to their handlers: `allowDomain` to the egress broker when the
//! session has one (else a typed answer, [`NoBroker`], naming why and the fix),
//! `status` to what the host knows (the network mode, the rules and refusals as
//! the broker has them now, the backend and its layers). Host exec is to be one
//! more handler here.
//!
//! The other end is inside the sandbox, so every byte from it is read as hostile:
//! at most [`MAX_REQUEST`] bytes of a line are held (a longer one is answered at
//! once and the rest skipped as it comes), every line gets one answer, garbage an
//! error, and nothing it sends ends the endpoint but the end of the stream.

use cordon_backend::{BackendKind, Layers};
use cordon_net::{Refusal, Router};
use cordon_policy::{NetMode, Sourced};
use cordon_tools::protocol::control::{
    ControlError, ControlReply, ControlRequest, HostStatus, MAX_REQUEST, NoBroker,
};
use cordon_tools::protocol::{Denial, Net};
use std::io::{self, BufRead, BufReader, Read, Write};

/// The longest `origin` of an `allowDomain` kept (characters).
const MAX_ORIGIN: usize = 200;

/// One session's endpoint: what it answers with.
pub struct Endpoint {
    backend: BackendKind,
    layers: serde_json::Value,
    net: Net,
    /// The handler of `allowDomain` and of the network part of `status`; or why
    /// the session has none.
    broker: Result<Router, NoBroker>,
}

impl Endpoint {
    /// The endpoint of a session in `backend` with `layers` in force, whose
    /// policy chose network mode `net`, with `broker` when it has one.
    pub fn new(
        net: &Sourced<NetMode>,
        backend: BackendKind,
        layers: &Layers,
        broker: Option<Router>,
    ) -> Endpoint {
        Endpoint {
            backend,
            // Layers always serialize (a list of names and numbers).
            layers: serde_json::to_value(layers).unwrap_or_default(),
            net: net.value.into(),
            broker: broker.ok_or_else(|| NoBroker::of(net)),
        }
    }

    /// Answers the requests on `stream`, a line each, until its other end closes
    /// (or reading or writing it fails).
    pub fn serve<S: Read + Write>(&self, stream: S) {
        let mut read = BufReader::new(stream);
        let mut line = Vec::with_capacity(256);
        loop {
            let Ok(got) = read_line(&mut read, &mut line) else {
                return;
            };
            let reply = match got {
                Line::End => return,
                Line::TooLong => ControlReply::Error(ControlError::new(format!(
                    "request too long (at most {MAX_REQUEST} bytes)"
                ))),
                Line::Whole => self.answer(&line),
            };
            if send(read.get_mut(), &reply).is_err() {
                return;
            }
            if got == Line::TooLong && !skip_line(&mut read) {
                return;
            }
        }
    }

    /// The answer to one line.
    fn answer(&self, line: &[u8]) -> ControlReply {
        match parse(line) {
            Ok(ControlRequest::AllowDomain { allow, origin }) => {
                self.allow_domain(&allow, origin.as_deref())
            }
            Ok(ControlRequest::Status { .. }) => ControlReply::Status {
                status: self.status(),
            },
            Err(e) => ControlReply::Error(e),
        }
    }

    fn allow_domain(&self, pattern: &str, origin: Option<&str>) -> ControlReply {
        let broker = match &self.broker {
            Ok(broker) => broker,
            Err(why) => return ControlReply::Error(why.clone().into()),
        };
        match broker.allow_domain(pattern, origin_reason(origin)) {
            Ok(allowed) => ControlReply::Allowed { allowed },
            Err(e) => ControlReply::Error(ControlError::new(e.to_string())),
        }
    }

    fn status(&self) -> HostStatus {
        let broker = self.broker.as_ref().ok();
        HostStatus {
            backend: self.backend.name().to_string(),
            layers: self.layers.clone(),
            net: self.net,
            allow_domains: (broker.into_iter())
                .flat_map(Router::allow_rules)
                .map(|rule| (&rule).into())
                .collect(),
            denials: (broker.into_iter())
                .flat_map(Router::recent_refusals)
                .map(network_denial)
                .collect(),
            no_broker: self.broker.as_ref().err().cloned(),
        }
    }
}

/// How a line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// The end of the stream, before any byte of a line.
    End,
    /// A line (or the stream's last bytes), without its newline.
    Whole,
    /// More than [`MAX_REQUEST`] bytes and no newline yet: the rest is unread.
    TooLong,
}

/// Reads a line into `line`, holding at most [`MAX_REQUEST`] bytes of it and
/// the newline, so the other end cannot make the host buffer without bound.
fn read_line<R: BufRead>(read: &mut R, line: &mut Vec<u8>) -> io::Result<Line> {
    line.clear();
    let limit = MAX_REQUEST as u64 + 1;
    if Read::take(&mut *read, limit).read_until(b'\n', line)? == 0 {
        return Ok(Line::End);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Line::Whole);
    }
    Ok(if line.len() > MAX_REQUEST {
        Line::TooLong
    } else {
        Line::Whole
    })
}

/// Skips the rest of a line, a buffer at a time; false at the end of the stream.
fn skip_line<R: BufRead>(read: &mut R) -> bool {
    loop {
        let chunk = match read.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        if chunk.is_empty() {
            return false;
        }
        match chunk.iter().position(|b| *b == b'\n') {
            Some(end) => {
                read.consume(end + 1);
                return true;
            }
            None => {
                let all = chunk.len();
                read.consume(all);
            }
        }
    }
}

/// A request, or the error that answers a line that is none.
fn parse(line: &[u8]) -> Result<ControlRequest, ControlError> {
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| ControlError::new(format!("not JSON: {e}")))?;
    serde_json::from_value(value).map_err(|_| {
        ControlError::new(
            r#"unknown request (expected {"allow": PATTERN, "origin": WHO} or {"status": true})"#,
        )
    })
}

fn send<W: Write>(write: &mut W, reply: &ControlReply) -> io::Result<()> {
    let mut text = serde_json::to_vec(reply).map_err(io::Error::other)?;
    text.push(b'\n');
    write.write_all(&text)?;
    write.flush()
}

/// A refusal of the broker as `status` lists it among the denials.
fn network_denial(refusal: Refusal) -> Denial {
    let path = match refusal.port {
        Some(port) => format!("{}:{port}", refusal.host),
        None => refusal.host,
    };
    Denial::at(refusal.time, "network".into(), path, refusal.reason)
}

/// The origin of a rule `allowDomain` added: the method, and who asked when the
/// client said so (one line, control characters dropped, at most [`MAX_ORIGIN`]
/// characters).
fn origin_reason(origin: Option<&str>) -> String {
    let who: String = origin
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_ORIGIN)
        .collect();
    let who = who.trim();
    if who.is_empty() {
        "allowDomain".to_string()
    } else {
        format!("allowDomain, {who}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_is_one_short_line() {
        assert_eq!(origin_reason(None), "allowDomain");
        assert_eq!(origin_reason(Some("  ")), "allowDomain");
        assert_eq!(
            origin_reason(Some("the user agreed\n\u{1b}[2Jin pi")),
            "allowDomain, the user agreed[2Jin pi"
        );
        let long = "x".repeat(1000);
        assert_eq!(
            origin_reason(Some(&long)).len(),
            "allowDomain, ".len() + 200
        );
    }

    #[test]
    fn a_line_holds_at_most_the_limit() {
        let mut line = Vec::new();
        let exact = [vec![b'a'; MAX_REQUEST], b"\nnext".to_vec()].concat();
        let mut read = &exact[..];
        assert_eq!(read_line(&mut read, &mut line).unwrap(), Line::Whole);
        assert_eq!(line.len(), MAX_REQUEST);
        assert_eq!(read_line(&mut read, &mut line).unwrap(), Line::Whole);
        assert_eq!(line, b"next");
        assert_eq!(read_line(&mut read, &mut line).unwrap(), Line::End);

        let over = [vec![b'a'; MAX_REQUEST + 1], b"\n{}\n".to_vec()].concat();
        let mut read = &over[..];
        assert_eq!(read_line(&mut read, &mut line).unwrap(), Line::TooLong);
        assert_eq!(line.len(), MAX_REQUEST + 1);
        assert!(skip_line(&mut read));
        assert_eq!(read_line(&mut read, &mut line).unwrap(), Line::Whole);
        assert_eq!(line, b"{}");
        let mut unended = &[b'a'; 10_000][..];
        assert_eq!(read_line(&mut unended, &mut line).unwrap(), Line::TooLong);
        assert!(!skip_line(&mut unended));
    }
}
