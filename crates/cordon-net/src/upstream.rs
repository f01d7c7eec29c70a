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
            ConnectFailure::Failed(e) => write!(f, "connection failed: {e}"),
        }
    }
}

/// The addresses to try for `host:port`: the `--resolve` address if the user gave
/// one (trusted whatever it is), else the host resolver's public answers.
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
    let public: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|a| addr::is_public(a.ip()))
        .collect();
    match (public.is_empty(), resolved.first()) {
        (false, _) => Ok(public),
        (true, Some(first)) => Err(ConnectFailure::Private {
            addr: first.ip(),
            class: addr::classify(first.ip()),
        }),
        (true, None) => Err(ConnectFailure::NoAddress(io::Error::new(
            io::ErrorKind::NotFound,
            "no addresses",
        ))),
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
/// resumptions.
pub fn client_config(
    roots: Arc<rustls::RootCertStore>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}
