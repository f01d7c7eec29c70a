//! The router: given one byte stream from the sandbox and where it was meant to
//! go, decides against the broker's state and carries what it allows; given a DNS
//! query, answers it. It does not know how the stream arrived: an ingress
//! ([`crate::ingress`]) accepts connections in its own way (sockets in a network
//! namespace, streams over a VM's channel) and hands each over with its
//! destination.
//!
//! A connection's first bytes decide how it is carried: TLS is passed through
//! untouched (the SNI must name the destination) or terminated where a secret may
//! be swapped in ([`crate::http`]); plain HTTP is read request by request; anything
//! else is relayed raw, on a port the user named only. Untouched bytes between two
//! TCP sockets move with splice(2) ([`crate::relay`]).

use crate::audit::{Event, rule_reason};
use crate::dns::names::is_synthetic;
use crate::dns::stub;
use crate::prefixed::Prefixed;
use crate::sniff::{self, Sniff};
use crate::state::{AllowDomainError, BrokerConfig, Refusal, State, verdict_reason};
use crate::upstream;
use cordon_policy::{DomainRule, Verdict, normalize_name};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the broker waits for a connection's first bytes before it decides
/// the protocol: on 80 and 443 a client speaks first; on a port the user named
/// explicitly, a silent client may be waiting for the server (SSH, SMTP...).
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
const SILENT_CLIENT_TIMEOUT: Duration = Duration::from_millis(500);

/// A byte stream from the sandbox: one connection.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket this stream is, if it is one: what the router relays
    /// untouched then moves with splice(2), never copied into the broker.
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl Connection for TcpStream {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl Connection for tokio::net::UnixStream {}
impl Connection for tokio::io::DuplexStream {}

/// Where a connection from the sandbox was meant to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An address and port the sandbox connected to: one of the synthetic
    /// addresses the DNS stub handed out (meaning the name it was handed out
    /// for), or 127.0.0.1 (an `--allow-local` service on that port). Any other
    /// address is refused: the sandbox reaches names, not addresses.
    Address(SocketAddr),
    /// A name and port, as an HTTP proxy's `CONNECT` names them.
    Name { name: String, port: u16 },
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Address(addr) => write!(f, "{addr}"),
            Destination::Name { name, port } => write!(f, "{name}:{port}"),
        }
    }
}

/// The broker's decisions and carrying, for streams from any ingress. Cheap to
/// clone: every clone shares one state.
#[derive(Clone)]
pub struct Router {
    state: Arc<State>,
}

/// What a connection's first bytes say it is.
enum Protocol {
    Tls(sniff::tls::ClientHelloInfo),
    Http,
    /// Neither, or nothing said in time.
    Other,
}

impl Router {
    /// A router deciding with `config`. `ports` are the ports the sandbox can
    /// connect on (an ingress's listeners): a domain allowed later in the session
    /// can use no other.
    pub fn new(config: BrokerConfig, ports: Vec<u16>) -> Router {
        Router {
            state: Arc::new(State::new(config, ports)),
        }
    }

    pub(crate) fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Answers one DNS query (the bytes of a datagram): allowed names get a
    /// synthetic address, refused ones NXDOMAIN (and a line in the audit log).
    /// `None`: nothing to send back (not even a DNS header, or a response).
    pub fn dns(&self, query: &[u8]) -> Option<Vec<u8>> {
        stub::answer(query, |name| self.state.lookup(name)).map(|reply| reply.bytes)
    }

    /// Allows `pattern` (`example.com`, `*.example.com`, optionally `:PORT`) for
    /// the rest of the session, on the ports the sandbox had listeners on from the
    /// start; `reason` (who asked) becomes the rule's origin and goes into the audit
    /// log. Returns the rule as written. The session's host control endpoint
    /// calls this for `allowDomain` (cordon-session's `control`).
    pub fn allow_domain(&self, pattern: &str, reason: String) -> Result<String, AllowDomainError> {
        self.state.allow_domain(pattern, reason)
    }

    /// The allow rules in force now: the policy's, then those the session added,
    /// in the order they were added.
    pub fn allow_rules(&self) -> Vec<DomainRule> {
        self.state.rules().allow.clone()
    }

    /// The broker's recent refusals, oldest first (the last 50).
    pub fn recent_refusals(&self) -> Vec<Refusal> {
        self.state.recent_refusals()
    }

    /// Carries `stream`, a connection meant for `to`, for as long as it lasts, or
    /// refuses it (closes it, with the reason in the audit log).
    pub async fn route<S: Connection>(&self, stream: S, to: Destination) {
        match to {
            Destination::Address(addr) => self.address(stream, addr).await,
            Destination::Name { name, port } => match normalize_name(&name) {
                Some(name) => self.named(stream, name, port, Vec::new()).await,
                None => self
                    .state
                    .refuse(Event::Connect, &name, Some(port), "not a name"),
            },
        }
    }

    /// A connection to one of the sandbox's addresses.
    async fn address<S: Connection>(&self, stream: S, addr: SocketAddr) {
        let port = addr.port();
        let name = match addr.ip() {
            IpAddr::V4(ip) if is_synthetic(ip) => self.state.name_of(ip),
            IpAddr::V4(ip) if ip.is_loopback() => return self.local_service(stream, port).await,
            _ => None,
        };
        match name {
            Some(name) => self.named(stream, name, port, Vec::new()).await,
            None => self.state.refuse(
                Event::Connect,
                &addr.ip().to_string(),
                Some(port),
                "a literal address, not a name the sandbox looked up",
            ),
        }
    }

    /// A connection to `--allow-local`'s service on `port`, if there is one.
    async fn local_service<S: Connection>(&self, stream: S, port: u16) {
        let host = "127.0.0.1";
        let rules = self.state.rules();
        let Some(service) = rules.local.iter().find(|l| l.addr.port() == port) else {
            self.state.refuse(
                Event::Connect,
                host,
                Some(port),
                "no --allow-local service on this port",
            );
            return;
        };
        let addr: SocketAddr = service.addr;
        match upstream::connect(&[addr]).await {
            Ok(upstream) => {
                self.state.allow(
                    Event::Connect,
                    host,
                    Some(port),
                    &rule_reason(format!("local {addr}"), None, &service.origin),
                    "local",
                );
                relay(stream, upstream).await;
            }
            Err(e) => self
                .state
                .refuse(Event::Connect, host, Some(port), &e.to_string()),
        }
    }

    /// A connection meant for `name:port` (a normalised name), with `prefix`
    /// already read from it.
    pub(crate) async fn named<S: Connection>(
        &self,
        mut stream: S,
        name: String,
        port: u16,
        prefix: Vec<u8>,
    ) {
        let state = &self.state;
        let rules = state.rules();
        let allowed_by = match rules.verdict(&name, port) {
            Verdict::Allowed(rule) => {
                rule_reason(&rule.pattern, rule.preset.as_deref(), &rule.origin)
            }
            _ => {
                let reason = verdict_reason(&rules, &name, Some(port));
                state.refuse(Event::Connect, &name, Some(port), &reason);
                return;
            }
        };
        drop(rules);
        let secrets = !state.secrets_for(&name).is_empty();
        let explicit_port = port != 80 && port != 443;
        // A name a secret is scoped to is spoken to over HTTP(S), whose client
        // speaks first: waited for as on a web port, so that a slow client (a
        // VM guest under emulation) is not taken for a silent one and relayed
        // untouched, its placeholder never swapped.
        let (bytes, protocol) = read_protocol(&mut stream, prefix, explicit_port && !secrets).await;
        let via = match &protocol {
            Protocol::Tls(hello) => {
                if let Some(sni) = &hello.server_name {
                    if *sni != name {
                        let reason =
                            format!("TLS names {sni}, not {name}, the name the sandbox looked up");
                        state.refuse(Event::Connect, &name, Some(port), &reason);
                        return;
                    }
                }
                if secrets && state.config.ca.is_some() {
                    "terminated"
                } else {
                    "passthrough"
                }
            }
            Protocol::Http => "http",
            Protocol::Other if explicit_port => "raw",
            Protocol::Other => {
                state.refuse(
                    Event::Connect,
                    &name,
                    Some(port),
                    "neither TLS nor HTTP on a web port",
                );
                return;
            }
        };
        if let Protocol::Http = protocol {
            // Upstream only once a request has passed its checks.
            state.allow(Event::Connect, &name, Some(port), &allowed_by, via);
            let stream = Prefixed::new(bytes, stream);
            return crate::http::plain(state.clone(), stream, name, port).await;
        }
        let Some(mut upstream) = state.open_upstream(&name, port).await else {
            return;
        };
        state.allow(Event::Connect, &name, Some(port), &allowed_by, via);
        match protocol {
            Protocol::Tls(hello) if via == "terminated" => {
                let stream = Prefixed::new(bytes, stream);
                crate::http::terminate(state.clone(), stream, upstream, name, port, hello).await
            }
            _ => {
                // What the client said first, then the rest untouched.
                if upstream.write_all(&bytes).await.is_ok() {
                    relay(stream, upstream).await;
                }
            }
        }
    }
}

/// Relays `stream` and `upstream` untouched both ways: with splice(2) when the
/// stream is a TCP socket, else by copying.
async fn relay<S: Connection>(stream: S, upstream: TcpStream) {
    match stream.tcp() {
        Some(tcp) => {
            let _ = crate::relay::splice_tcp(tcp, &upstream).await;
        }
        None => crate::relay::copy(stream, upstream).await,
    }
}

/// Reads until the first bytes say TLS (a whole ClientHello) or HTTP (a whole
/// request head), or until they say neither. Returns every byte read.
async fn read_protocol<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut buf: Vec<u8>,
    explicit_port: bool,
) -> (Vec<u8>, Protocol) {
    let first_wait = if explicit_port {
        SILENT_CLIENT_TIMEOUT
    } else {
        SNIFF_TIMEOUT
    };
    let deadline = tokio::time::Instant::now() + SNIFF_TIMEOUT;
    loop {
        if let Some(protocol) = classify(&buf) {
            return (buf, protocol);
        }
        let wait = if buf.is_empty() {
            first_wait
        } else {
            SNIFF_TIMEOUT
        };
        let until = deadline.min(tokio::time::Instant::now() + wait);
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(until, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return (buf, Protocol::Other),
        }
    }
}

/// `None` while more bytes are needed.
fn classify(buf: &[u8]) -> Option<Protocol> {
    let first = *buf.first()?;
    if sniff::tls::looks_like_tls(first) {
        return match sniff::tls::client_hello(buf) {
            Sniff::NeedMore => None,
            Sniff::Done(hello) => Some(Protocol::Tls(hello)),
            Sniff::Invalid(_) => Some(Protocol::Other),
        };
    }
    match sniff::http::request_head(buf) {
        Sniff::NeedMore => None,
        Sniff::Done(_) => Some(Protocol::Http),
        Sniff::Invalid(_) => Some(Protocol::Other),
    }
}
