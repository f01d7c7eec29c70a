//! Connecting upstream: resolve a name on the host (or take the user's `--resolve`
//! statement), refuse private addresses after resolution so DNS rebinding cannot
//! reach them, and connect. Also the TLS client configuration the broker uses where
//! it terminates TLS.

use crate::addr::{self, AddrClass};
use crate::error::NetError;
use cordon_policy::{NetworkRules, UpstreamCa};
use rustls::pki_types::CertificateDer;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// How long a connection upstream may take before the broker gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no upstream connection was made.
#[derive(Debug)]
pub enum ConnectFailure {
    /// The name does not resolve.
    NoAddress(io::Error),
    /// Every address the name resolves to is one the sandbox may not reach.
    Private { addr: IpAddr, class: AddrClass },
    /// Every address the name resolves to is one the sandbox may not reach, the
    /// first being one of this host's own (an interface's) addresses.
    OwnAddress { addr: IpAddr },
    /// The connection itself failed or timed out.
    Failed(io::Error),
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectFailure::NoAddress(e) => write!(f, "does not resolve: {e}"),
            ConnectFailure::Private { addr, class } => {
                write!(
                    f,
                    "resolves to {addr}, {class}, which the sandbox may not reach"
                )
            }
            ConnectFailure::OwnAddress { addr } => write!(
                f,
                "resolves to {addr}, an address of this host, which the sandbox may not reach"
            ),
            ConnectFailure::Failed(e) => write!(f, "connection failed: {e}"),
        }
    }
}

/// The addresses to try for `host:port`: the `--resolve` address if the user gave
/// one (trusted whatever it is), else the host resolver's answers that are public
/// and not this host's own (unless `--allow-local` names that address and port).
pub async fn addresses(
    rules: &NetworkRules,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, ConnectFailure> {
    if let Some(ip) = rules.resolved(host) {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(ConnectFailure::NoAddress)?
        .collect();
    let mut first_refusal = None;
    let mut allowed = Vec::new();
    for a in resolved {
        match refusal(rules, a) {
            None => allowed.push(a),
            Some(why) => {
                first_refusal.get_or_insert(why);
            }
        }
    }
    match (allowed.is_empty(), first_refusal) {
        (false, _) => Ok(allowed),
        (true, Some(why)) => Err(why),
        (true, None) => Err(ConnectFailure::NoAddress(io::Error::new(
            io::ErrorKind::NotFound,
            "no addresses",
        ))),
    }
}

/// Why the host resolver's answer `a` may not be connected to, if it may not.
fn refusal(rules: &NetworkRules, a: SocketAddr) -> Option<ConnectFailure> {
    // A service the user named is reachable anyway (at 127.0.0.1:PORT inside).
    if rules.local.iter().any(|l| l.addr == a) {
        return None;
    }
    let class = addr::classify(a.ip());
    if class != AddrClass::Public {
        return Some(ConnectFailure::Private {
            addr: a.ip(),
            class,
        });
    }
    is_own_address(a.ip()).then_some(ConnectFailure::OwnAddress { addr: a.ip() })
}

/// Is `ip` one of this host's own addresses (an interface's, or any the kernel
/// routes to this host)? The kernel's routing answers: for a local destination it
/// picks the destination itself as the source address, or the loopback's (a local
/// route with a preferred source, like 127.0.0.0/8's). Fails closed: when the
/// question cannot be asked, the address counts as the host's own.
pub fn is_own_address(ip: IpAddr) -> bool {
    let any: IpAddr = match ip {
        IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let Ok(socket) = std::net::UdpSocket::bind((any, 0)) else {
        return true;
    };
    match socket.connect((ip, 9)) {
        Ok(()) => socket
            .local_addr()
            .map_or(true, |local| local.ip() == ip || local.ip().is_loopback()),
        // No route to it: not local (and no connection will get there either).
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENETUNREACH | libc::EHOSTUNREACH)
            ) =>
        {
            false
        }
        Err(_) => true,
    }
}

/// Connects to the first of `addrs` that answers.
pub async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, ConnectFailure> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, format!("{addr} timed out")),
        }
    }
    Err(ConnectFailure::Failed(last))
}

/// One `--upstream-ca` file, read and parsed once: its bytes go into the sandbox's
/// trust bundle, its certificates into the broker's roots.
pub struct UpstreamCaFile {
    pub file: PathBuf,
    pub pem: Vec<u8>,
    pub certs: Vec<CertificateDer<'static>>,
}

/// Reads and parses every `--upstream-ca` file; an unreadable file, or one with
/// no PEM certificate, is an error naming it.
pub fn read_upstream_cas(extra: &[UpstreamCa]) -> Result<Vec<UpstreamCaFile>, NetError> {
    extra
        .iter()
        .map(|ca| {
            let error = |message: String| NetError::UpstreamCa {
                file: ca.file.clone(),
                message,
            };
            let pem = std::fs::read(&ca.file).map_err(|e| error(e.to_string()))?;
            let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<_, _>>()
                .map_err(|e| error(format!("not a PEM certificate file: {e}")))?;
            if certs.is_empty() {
                return Err(error("holds no PEM certificate".into()));
            }
            Ok(UpstreamCaFile {
                file: ca.file.clone(),
                pem,
                certs,
            })
        })
        .collect()
}

/// The broker's TLS client roots: the host's trusted roots plus `--upstream-ca`.
pub fn root_store(extra: &[UpstreamCaFile]) -> Result<rustls::RootCertStore, NetError> {
    let mut roots = rustls::RootCertStore::empty();
    // Unparseable system certificates are skipped, as every TLS client does.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    for ca in extra {
        for cert in &ca.certs {
            roots.add(cert.clone()).map_err(|e| NetError::UpstreamCa {
                file: ca.file.clone(),
                message: e.to_string(),
            })?;
        }
    }
    Ok(roots)
}

/// A TLS client configuration offering `alpn` (what the sandbox's client offered
/// the broker, so both sides end up speaking the same HTTP version). Keep it for
/// reuse: its session cache makes later handshakes with the same upstream
/// resumptions. (The error, that the crypto provider supports none of rustls's
/// default protocol versions, does not happen with ring.)
pub fn client_config(
    roots: Arc<rustls::RootCertStore>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// This host's address towards the documentation range, if it has a route
    /// there (a UDP connect sends nothing).
    fn an_interface_address() -> Option<IpAddr> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        s.connect("203.0.113.9:9").ok()?;
        Some(s.local_addr().ok()?.ip()).filter(|ip| !ip.is_loopback())
    }

    #[test]
    fn own_addresses() {
        assert!(is_own_address(Ipv4Addr::LOCALHOST.into()));
        assert!(is_own_address(Ipv4Addr::new(127, 0, 0, 2).into()));
        assert!(is_own_address(std::net::Ipv6Addr::LOCALHOST.into()));
        assert!(!is_own_address(Ipv4Addr::new(203, 0, 113, 9).into()));
        match an_interface_address() {
            Some(ip) => assert!(is_own_address(ip), "{ip} is this host's"),
            None => eprintln!("note: no non-loopback interface address to check"),
        }
    }

    #[tokio::test]
    async fn own_public_address_refused_unless_allow_local_names_it() {
        let Some(ip) = an_interface_address().filter(|ip| addr::is_public(*ip)) else {
            eprintln!("note: no public-class interface address: skipped");
            return;
        };
        // The host resolver answers a literal address with itself.
        let host = ip.to_string();
        let mut rules = NetworkRules::default();
        match addresses(&rules, &host, 8080).await {
            Err(ConnectFailure::OwnAddress { addr }) => assert_eq!(addr, ip),
            other => panic!("{other:?}"),
        }
        rules.local.push(cordon_policy::LocalService {
            addr: SocketAddr::new(ip, 8080),
            origin: cordon_policy::Origin::Default,
        });
        let got = addresses(&rules, &host, 8080).await.unwrap();
        assert_eq!(got, vec![SocketAddr::new(ip, 8080)]);
        assert!(addresses(&rules, &host, 8081).await.is_err());
    }
}
