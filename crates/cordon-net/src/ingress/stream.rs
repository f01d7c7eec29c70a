//! The stream ingress: connections that reach the host as byte streams, each
//! opened with a header that says what it is. This is how a VM guest's agent
//! hands the broker its guest's connections, each a stream multiplexed over the
//! VM's virtio-serial channel (`cordon_vm::net`), since no socket of the guest's
//! network exists on the host; the host gives each to [`serve_all`] as one end
//! of a socket pair.
//!
//! A stream starts with its header: two bytes, the length of what follows (big
//! endian, at most [`MAX_HEADER`]), then that many bytes of UTF-8, one of:
//!
//! - `tcp ADDRESS:PORT`: a TCP connection the sandbox made to `ADDRESS` (IPv4, or
//!   IPv6 in brackets), one of the synthetic addresses the broker's DNS handed out
//!   or 127.0.0.1 (an `--allow-local` service);
//! - `tcp NAME:PORT`: a TCP connection meant for the name `NAME`;
//! - `http-proxy`: a connection to the sandbox's HTTP proxy;
//! - `dns`: DNS queries.
//!
//! After a `tcp` or `http-proxy` header the stream carries the connection's bytes
//! both ways, exactly as the sandbox's program sent and receives them, and is
//! closed when the broker refuses it (the reason goes to the audit log, as for any
//! refusal) or when the connection ends. After `dns` the stream carries queries,
//! each framed as in DNS over TCP (two bytes of length, then the message); each
//! gets an answer framed the same way, in order, an empty one when there is
//! nothing to answer (a datagram that is not a query).
//!
//! Every decision is the router's ([`crate::router`]), the same as for the
//! namespace ingress: a header decides nothing but where the stream was meant to
//! go. The parser never panics on input; a stream whose header is malformed, too
//! long, or late is closed.

use super::http_proxy;
use crate::error::NetError;
use crate::router::{Connection, Destination, Router};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The longest header: a name of 253 bytes and a port with room to spare.
pub const MAX_HEADER: usize = 512;

/// How long a stream may take to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a stream is, as its header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// A TCP connection meant for this destination.
    Connect(Destination),
    /// A connection to the sandbox's HTTP proxy.
    HttpProxy,
    /// DNS queries, framed.
    Dns,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    #[error("the header is {0} bytes long, more than {MAX_HEADER}")]
    TooLong(usize),
    #[error("the header is not UTF-8")]
    NotUtf8,
    #[error("unknown stream kind {0:?} (expected tcp, http-proxy or dns)")]
    UnknownKind(String),
    #[error("{0:?} is not ADDRESS:PORT or NAME:PORT")]
    BadDestination(String),
}

impl Opening {
    /// The header that opens a stream of this kind, its length included.
    pub fn encode(&self) -> Result<Vec<u8>, HeaderError> {
        let text = match self {
            Opening::Connect(Destination::Address(addr)) => format!("tcp {addr}"),
            Opening::Connect(Destination::Name { name, port }) => format!("tcp {name}:{port}"),
            Opening::HttpProxy => "http-proxy".to_string(),
            Opening::Dns => "dns".to_string(),
        };
        let len = u16::try_from(text.len())
            .ok()
            .filter(|&len| usize::from(len) <= MAX_HEADER)
            .ok_or(HeaderError::TooLong(text.len()))?;
        let mut header = len.to_be_bytes().to_vec();
        header.extend_from_slice(text.as_bytes());
        Ok(header)
    }

    /// The opening a header's text (what follows its length) says.
    pub fn parse(text: &[u8]) -> Result<Opening, HeaderError> {
        if text.len() > MAX_HEADER {
            return Err(HeaderError::TooLong(text.len()));
        }
        let text = std::str::from_utf8(text).map_err(|_| HeaderError::NotUtf8)?;
        match text.split_once(' ') {
            None if text == "http-proxy" => Ok(Opening::HttpProxy),
            None if text == "dns" => Ok(Opening::Dns),
            Some(("tcp", destination)) => destination_of(destination).map(Opening::Connect),
            _ => Err(HeaderError::UnknownKind(
                text.split(' ').next().unwrap_or_default().to_string(),
            )),
        }
    }
}

/// `ADDRESS:PORT` (an IP address, IPv6 in brackets) or `NAME:PORT`.
fn destination_of(text: &str) -> Result<Destination, HeaderError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(Destination::Address(addr));
    }
    let bad = || HeaderError::BadDestination(text.to_string());
    let (name, port_text) = text.rsplit_once(':').ok_or_else(bad)?;
    // Written as a port is: digits, no sign, no leading zero.
    let port: u16 = port_text.parse().map_err(|_| bad())?;
    if port.to_string() != port_text {
        return Err(bad());
    }
    if name.is_empty() || name.contains([':', '[', ']']) || name.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    Ok(Destination::Name {
        name: name.to_string(),
        port,
    })
}

/// Runs `router`'s broker on a runtime of its own, serving each stream that
/// `streams` yields (one end of a socket pair, see [`serve`]), until its sender
/// is gone. Returns early only if the runtime cannot be made.
pub fn serve_all(
    router: Router,
    streams: std::sync::mpsc::Receiver<std::os::unix::net::UnixStream>,
) -> Result<(), NetError> {
    let runtime = super::namespace::runtime()?;
    let _entered = runtime.enter();
    for stream in streams {
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let Ok(stream) = tokio::net::UnixStream::from_std(stream) else {
            continue;
        };
        let router = router.clone();
        runtime.spawn(async move { serve(&router, stream).await });
    }
    Ok(())
}

/// Serves one stream: reads its header, then hands it to the router (or to the
/// HTTP proxy, or answers its DNS queries) until it ends.
pub async fn serve<S: Connection>(router: &Router, mut stream: S) {
    let opening = match tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut stream)).await {
        Ok(Some(opening)) => opening,
        _ => return,
    };
    match opening {
        Opening::Connect(to) => router.route(stream, to).await,
        Opening::HttpProxy => http_proxy::serve(router, stream).await,
        Opening::Dns => answer_dns(router, stream).await,
    }
}

/// The header, read to its last byte and no further; `None` if it is malformed
/// or the stream ends first.
async fn read_header<S: Connection>(stream: &mut S) -> Option<Opening> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.ok()?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_HEADER {
        return None;
    }
    let mut text = vec![0u8; len];
    stream.read_exact(&mut text).await.ok()?;
    Opening::parse(&text).ok()
}

/// Answers framed DNS queries until the stream ends.
async fn answer_dns<S: Connection>(router: &Router, mut stream: S) {
    let mut query = vec![0u8; usize::from(u16::MAX)];
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let len = usize::from(u16::from_be_bytes(len));
        let Some(query) = query.get_mut(..len) else {
            return;
        };
        if stream.read_exact(query).await.is_err() {
            return;
        }
        let answer = router.dns(query).unwrap_or_default();
        // The stub's replies are at most a datagram's size.
        let Ok(answer_len) = u16::try_from(answer.len()) else {
            return;
        };
        let mut frame = answer_len.to_be_bytes().to_vec();
        frame.extend_from_slice(&answer);
        if stream.write_all(&frame).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Opening, HeaderError> {
        Opening::parse(text.as_bytes())
    }

    #[test]
    fn headers_round_trip() {
        for opening in [
            Opening::Connect(Destination::Address("198.18.0.7:443".parse().unwrap())),
            Opening::Connect(Destination::Address("[::1]:22".parse().unwrap())),
            Opening::Connect(Destination::Name {
                name: "api.example.com".into(),
                port: 8443,
            }),
            Opening::HttpProxy,
            Opening::Dns,
        ] {
            let header = opening.encode().unwrap();
            let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
            assert_eq!(len, header.len() - 2);
            assert_eq!(Opening::parse(&header[2..]), Ok(opening));
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(
            parse("udp 1.2.3.4:53"),
            Err(HeaderError::UnknownKind("udp".into()))
        );
        assert_eq!(parse(""), Err(HeaderError::UnknownKind("".into())));
        assert_eq!(parse("dns "), Err(HeaderError::UnknownKind("dns".into())));
        for bad in [
            "tcp ",
            "tcp example.com",
            "tcp example.com:",
            "tcp example.com:65536",
            "tcp example.com:+443",
            "tcp example.com:0443",
            "tcp :443",
            "tcp ::1:443",
            "tcp [::1]x:443",
            "tcp a b:443",
        ] {
            assert!(
                matches!(parse(bad), Err(HeaderError::BadDestination(_))),
                "{bad}: {:?}",
                parse(bad)
            );
        }
        assert_eq!(Opening::parse(&[0xff, 0xfe]), Err(HeaderError::NotUtf8));
        let long = format!("tcp {}:443", "a".repeat(MAX_HEADER));
        assert!(matches!(parse(&long), Err(HeaderError::TooLong(_))));
        let name = "a".repeat(MAX_HEADER);
        let opening = Opening::Connect(Destination::Name { name, port: 1 });
        assert!(matches!(opening.encode(), Err(HeaderError::TooLong(_))));
    }
}
