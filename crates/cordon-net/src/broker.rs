//! The broker itself: serves the sockets a backend made in the sandbox's network
//! (a DNS socket, transparent listeners, the HTTP proxy listener), decides every
//! name and connection against the policy, and carries what it allows.

use crate::audit::{Audit, Event, Record, rule_reason};
use crate::ca::CertificateAuthority;
use crate::dns::names::{SyntheticNames, is_synthetic};
use crate::dns::stub::{self, Lookup};
use crate::error::NetError;
use crate::proxy;
use crate::secrets::Secret;
use crate::sniff::{self, Sniff};
use crate::upstream;
use cordon_policy::{LOCAL_SERVICE_NAME, NetworkRules, Verdict};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Everything the broker decides with, made on the host before the sandbox starts.
pub struct BrokerConfig {
    pub rules: NetworkRules,
    /// Secrets with their real values and placeholders.
    pub secrets: Vec<Secret>,
    /// Present when some secret needs TLS terminated.
    pub ca: Option<CertificateAuthority>,
    /// Roots for the broker's own upstream TLS (host roots plus `--upstream-ca`);
    /// used only where it terminates TLS, so empty when `ca` is `None`.
    pub roots: Arc<rustls::RootCertStore>,
    pub audit: Audit,
}

/// The sockets the broker serves; they live in the sandbox's network namespace.
pub struct Sockets {
    pub dns: std::net::UdpSocket,
    pub listeners: Vec<(u16, std::net::TcpListener)>,
    pub proxy: Option<std::net::TcpListener>,
}

/// How long the broker waits for a connection's first bytes before it decides
/// the protocol: on 80 and 443 a client speaks first; on a port the user named
/// explicitly, a silent client may be waiting for the server (SSH, SMTP...).
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
const SILENT_CLIENT_TIMEOUT: Duration = Duration::from_millis(500);
/// How many refusals the broker keeps for `status`.
const RECENT_REFUSALS: usize = 50;
/// Socket buffer size for relaying bodies and tunnels.
pub(crate) const RELAY_BUFFER: usize = 64 * 1024;

pub(crate) struct Broker {
    pub config: BrokerConfig,
    /// The rules in force: the policy's, plus what the session allowed since
    /// (replaced whole on a change, so a connection decides on one snapshot).
    rules: std::sync::RwLock<Arc<NetworkRules>>,
    /// The ports the sandbox has listeners on: a rule added later can use no other.
    ports: Vec<u16>,
    names: Mutex<SyntheticNames>,
    server_configs: Mutex<std::collections::HashMap<String, Arc<rustls::ServerConfig>>>,
    /// The last [`RECENT_REFUSALS`] refusals.
    refusals: Mutex<std::collections::VecDeque<serde_json::Value>>,
    /// The HTTP version (ALPN) each terminated upstream picked last, by name and port.
    alpn_memory: Mutex<std::collections::HashMap<(String, u16), Vec<u8>>>,
    /// Masks the secrets' values in what comes back from a host they may go to
    /// (`None` without secrets).
    scrubber: Option<Arc<crate::scrub::Scrubber>>,
    /// Upstream TLS configurations by ALPN offer, kept for their session caches.
    client_configs: Mutex<std::collections::HashMap<Vec<Vec<u8>>, Arc<rustls::ClientConfig>>>,
}

/// Runs the broker on a runtime of its own until the process exits. Returns only
/// if the runtime cannot be made or a socket cannot be registered with it.
/// `control`, if given, is a stream on which the session may ask for more names
/// (see [`control`]).
pub fn serve(
    config: BrokerConfig,
    sockets: Sockets,
    control: Option<std::os::unix::net::UnixStream>,
) -> Result<(), NetError> {
    raise_descriptor_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cordon-broker")
        .enable_all()
        .build()
        .map_err(NetError::Runtime)?;
    let ports = sockets.listeners.iter().map(|(port, _)| *port).collect();
    let scrubber = crate::scrub::Scrubber::new(&config.secrets).map(Arc::new);
    let broker = Arc::new(Broker {
        scrubber,
        rules: std::sync::RwLock::new(Arc::new(config.rules.clone())),
        ports,
        config,
        names: Mutex::new(SyntheticNames::new()),
        server_configs: Mutex::new(Default::default()),
        client_configs: Mutex::new(Default::default()),
        alpn_memory: Mutex::new(Default::default()),
        refusals: Mutex::new(Default::default()),
    });
    runtime.block_on(async move {
        let dns = UdpSocket::from_std(sockets.dns).map_err(NetError::Runtime)?;
        tokio::spawn(answer_dns(broker.clone(), dns));
        for (port, listener) in sockets.listeners {
            let listener = TcpListener::from_std(listener).map_err(NetError::Runtime)?;
            tokio::spawn(accept(broker.clone(), listener, Some(port)));
        }
        if let Some(listener) = sockets.proxy {
            let listener = TcpListener::from_std(listener).map_err(NetError::Runtime)?;
            tokio::spawn(accept(broker.clone(), listener, None));
        }
        if let Some(control) = control {
            control.set_nonblocking(true).map_err(NetError::Runtime)?;
            let control = tokio::net::UnixStream::from_std(control).map_err(NetError::Runtime)?;
            tokio::spawn(crate::control::serve(broker.clone(), control));
        }
        std::future::pending::<Result<(), NetError>>().await
    })
}

/// Each relayed connection holds two descriptors; the usual soft limit of 1024
/// would cap the sandbox at about 500 connections. The hard limit is ours to take
/// (this runs after the sandbox was cloned, so the sandbox keeps its own limit).
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

async fn answer_dns(broker: Arc<Broker>, socket: UdpSocket) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(reply) = stub::answer(&buf[..n], |name| broker.lookup(name)) {
            let _ = socket.send_to(&reply.bytes, peer).await;
        }
    }
}

/// `port` is the listener's port; `None` for the HTTP proxy listener.
async fn accept(broker: Arc<Broker>, listener: TcpListener, port: Option<u16>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let broker = broker.clone();
                tokio::spawn(async move {
                    match port {
                        Some(port) => broker.transparent(stream, port).await,
                        None => proxy::connect::serve(broker, stream).await,
                    }
                });
            }
            // Out of descriptors, most likely: wait for some to close.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// What a connection's first bytes say it is.
enum Protocol {
    Tls(sniff::tls::ClientHelloInfo),
    Http,
    /// Neither, or nothing said in time.
    Other,
}

impl Broker {
    /// The rules in force now.
    pub(crate) fn rules(&self) -> Arc<NetworkRules> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Allows `pattern` for the rest of the session, the rule's origin saying who
    /// asked (`reason`), and logs the widening. Returns the rule as written.
    pub(crate) fn allow_domain(&self, pattern: &str, reason: String) -> Result<String, String> {
        let pattern = cordon_policy::DomainPattern::parse(pattern).map_err(|e| e.to_string())?;
        if let Some(port) = pattern
            .ports()
            .into_iter()
            .find(|p| !self.ports.contains(p))
        {
            return Err(format!(
                "the sandbox has no listener on port {port}: a port can only be allowed when the session starts (pass --allow-domain {pattern})"
            ));
        }
        let shown = pattern.to_string();
        let origin = cordon_policy::Origin::Session { reason };
        let logged = rule_reason(&shown, None, &origin);
        {
            let mut rules = self.rules.write().unwrap_or_else(|e| e.into_inner());
            let mut next = NetworkRules::clone(&rules);
            next.allow.push(cordon_policy::DomainRule {
                pattern,
                preset: None,
                origin,
            });
            *rules = Arc::new(next);
        }
        self.config.audit.record(&Record {
            event: Event::AllowDomain,
            host: &shown,
            port: None,
            allowed: true,
            reason: &logged,
            via: None,
        });
        Ok(shown)
    }

    /// The allow rules in force (the policy's and the session's), as
    /// `{"domain", "preset", "origin"}`, in the order they were added.
    pub(crate) fn allowed_domains(&self) -> Vec<serde_json::Value> {
        self.rules()
            .allow
            .iter()
            .map(|r| {
                serde_json::json!({
                    "domain": r.pattern.to_string(),
                    "preset": r.preset,
                    "origin": r.origin.to_string(),
                })
            })
            .collect()
    }

    /// The DNS stub's question: is `name` allowed, and at which address?
    fn lookup(&self, name: &str) -> Lookup {
        let rules = &*self.rules();
        if name == LOCAL_SERVICE_NAME && !rules.local.is_empty() {
            return Lookup::Address(Ipv4Addr::LOCALHOST);
        }
        if !rules.name_allowed(name) {
            self.refuse(Event::Dns, name, None, &verdict_reason(rules, name, None));
            return Lookup::Refused;
        }
        let addr = self
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .addr_for(name);
        match addr {
            Some(addr) => Lookup::Address(addr),
            None => Lookup::Refused,
        }
    }

    /// Logs a refusal (and, the first time for the host, tells the user).
    pub(crate) fn refuse(&self, event: Event, host: &str, port: Option<u16>, reason: &str) {
        let record = Record {
            event,
            host,
            port,
            allowed: false,
            reason,
            via: None,
        };
        self.config.audit.record(&record);
        let mut recent = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_REFUSALS {
            recent.pop_front();
        }
        recent.push_back(serde_json::json!({
            "time": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            "op": record.event,
            "host": host,
            "port": port,
            "reason": reason,
        }));
    }

    /// The last refusals, oldest first (for the session's `status`).
    pub(crate) fn recent_refusals(&self) -> Vec<serde_json::Value> {
        let recent = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().cloned().collect()
    }

    /// Logs what was allowed, by which rule, and how it is carried.
    pub(crate) fn allow(
        &self,
        event: Event,
        host: &str,
        port: Option<u16>,
        reason: &str,
        via: &str,
    ) {
        self.config.audit.record(&Record {
            event,
            host,
            port,
            allowed: true,
            reason,
            via: Some(via),
        });
    }

    /// A connection to one of the sandbox's addresses on a listener's port.
    async fn transparent(self: Arc<Self>, stream: TcpStream, port: u16) {
        let Ok(local) = stream.local_addr() else {
            return;
        };
        let name = match local.ip() {
            IpAddr::V4(ip) if is_synthetic(ip) => self
                .names
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .name_of(ip)
                .map(str::to_string),
            IpAddr::V4(ip) if ip.is_loopback() => return self.local_service(stream, port).await,
            _ => None,
        };
        match name {
            Some(name) => self.named(stream, name, port, Vec::new()).await,
            None => self.refuse(
                Event::Connect,
                &local.ip().to_string(),
                Some(port),
                "a literal address, not a name the sandbox looked up",
            ),
        }
    }

    /// A connection to `--allow-local`'s service on `port`, if there is one.
    async fn local_service(self: Arc<Self>, stream: TcpStream, port: u16) {
        let host = "127.0.0.1";
        let rules = self.rules();
        let Some(service) = rules.local.iter().find(|l| l.addr.port() == port) else {
            self.refuse(
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
                self.allow(
                    Event::Connect,
                    host,
                    Some(port),
                    &rule_reason(format!("local {addr}"), None, &service.origin),
                    "local",
                );
                let _ = crate::splice::relay(&stream, &upstream).await;
            }
            Err(e) => self.refuse(Event::Connect, host, Some(port), &e.to_string()),
        }
    }

    /// A connection meant for `name:port`, with `prefix` already read from it.
    pub(crate) async fn named(
        self: Arc<Self>,
        mut stream: TcpStream,
        name: String,
        port: u16,
        prefix: Vec<u8>,
    ) {
        let rules = self.rules();
        let allowed_by = match rules.verdict(&name, port) {
            Verdict::Allowed(rule) => {
                rule_reason(&rule.pattern, rule.preset.as_deref(), &rule.origin)
            }
            _ => {
                let reason = verdict_reason(&rules, &name, Some(port));
                self.refuse(Event::Connect, &name, Some(port), &reason);
                return;
            }
        };
        drop(rules);
        let explicit_port = port != 80 && port != 443;
        let (bytes, protocol) = read_protocol(&mut stream, prefix, explicit_port).await;
        let secrets = !self.secrets_for(&name).is_empty();
        let via = match &protocol {
            Protocol::Tls(hello) => {
                if let Some(sni) = &hello.server_name {
                    if *sni != name {
                        let reason =
                            format!("TLS names {sni}, not {name}, the name the sandbox looked up");
                        self.refuse(Event::Connect, &name, Some(port), &reason);
                        return;
                    }
                }
                if secrets && self.config.ca.is_some() {
                    "terminated"
                } else {
                    "passthrough"
                }
            }
            Protocol::Http => "http",
            Protocol::Other if explicit_port => "raw",
            Protocol::Other => {
                self.refuse(
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
            self.allow(Event::Connect, &name, Some(port), &allowed_by, via);
            let stream = crate::prefixed::Prefixed::new(bytes, stream);
            return proxy::http::plain(self.clone(), stream, name, port).await;
        }
        let Some(mut upstream) = self.open_upstream(&name, port).await else {
            return;
        };
        self.allow(Event::Connect, &name, Some(port), &allowed_by, via);
        match protocol {
            Protocol::Tls(hello) if via == "terminated" => {
                let stream = crate::prefixed::Prefixed::new(bytes, stream);
                proxy::http::terminate(self.clone(), stream, upstream, name, port, hello).await
            }
            _ => {
                // What the client said first, then the kernel moves the rest.
                if upstream.write_all(&bytes).await.is_ok() {
                    let _ = crate::splice::relay(&stream, &upstream).await;
                }
            }
        }
    }

    /// Resolves and connects, recording why not when it cannot.
    pub(crate) async fn open_upstream(&self, name: &str, port: u16) -> Option<TcpStream> {
        let rules = self.rules();
        let result = match upstream::addresses(&rules, name, port).await {
            Ok(addrs) => upstream::connect(&addrs).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(stream) => Some(stream),
            Err(e) => {
                self.refuse(Event::Connect, name, Some(port), &e.to_string());
                None
            }
        }
    }

    pub(crate) fn secrets_for(&self, host: &str) -> Vec<&Secret> {
        self.config
            .secrets
            .iter()
            .filter(|s| s.scoped_to(host))
            .collect()
    }

    /// The scrubber for what comes back from `host`: every secret's value, when
    /// some secret may go there (any secret's, since one host may be in several
    /// scopes); `None` when none may.
    pub(crate) fn scrubber_for(&self, host: &str) -> Option<Arc<crate::scrub::Scrubber>> {
        if self.secrets_for(host).is_empty() {
            return None;
        }
        self.scrubber.clone()
    }

    pub(crate) fn remembered_alpn(&self, name: &str, port: u16) -> Option<Vec<u8>> {
        let memory = self.alpn_memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.get(&(name.to_string(), port)).cloned()
    }

    pub(crate) fn remember_alpn(&self, name: &str, port: u16, alpn: &[u8]) {
        let mut memory = self.alpn_memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.insert((name.to_string(), port), alpn.to_vec());
    }

    pub(crate) fn forget_alpn(&self, name: &str, port: u16) {
        let mut memory = self.alpn_memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.remove(&(name.to_string(), port));
    }

    /// The upstream TLS configuration offering `alpn`.
    pub(crate) fn client_config(
        &self,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        let key: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let mut configs = self
            .client_configs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(config) = configs.get(&key) {
            return Ok(config.clone());
        }
        let config = upstream::client_config(self.config.roots.clone(), alpn)?;
        configs.insert(key, config.clone());
        Ok(config)
    }

    /// The TLS server configuration for `name`: cordon's certificate for it.
    pub(crate) fn server_config(
        &self,
        name: &str,
        alpn: &[u8],
    ) -> Result<Arc<rustls::ServerConfig>, NetError> {
        let key = format!("{name}\0{}", String::from_utf8_lossy(alpn));
        let mut configs = self
            .server_configs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(config) = configs.get(&key) {
            return Ok(config.clone());
        }
        let ca = self
            .config
            .ca
            .as_ref()
            .ok_or_else(|| NetError::Tls("no CA".into()))?;
        let leaf = ca.leaf(name)?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(FixedCert(leaf)));
        if !alpn.is_empty() {
            config.alpn_protocols = vec![alpn.to_vec()];
        }
        let config = Arc::new(config);
        configs.insert(key, config.clone());
        Ok(config)
    }
}

#[derive(Debug)]
struct FixedCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedCert {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Why `name` (on `port`, or on any port for DNS) is not allowed, naming the rule.
pub(crate) fn verdict_reason(rules: &NetworkRules, name: &str, port: Option<u16>) -> String {
    let verdict = match port {
        Some(port) => rules.verdict(name, port),
        None => rules
            .deny
            .iter()
            .find(|d| d.pattern.port.is_none() && d.pattern.matches_name(name))
            .map_or(Verdict::NotAllowed, Verdict::Denied),
    };
    match verdict {
        Verdict::Denied(rule) => {
            format!(
                "denied by {}",
                rule_reason(&rule.pattern, rule.preset.as_deref(), &rule.origin)
            )
        }
        Verdict::NotAllowed if port.is_some() && rules.name_allowed(name) => {
            "this port is not allowed for the name".into()
        }
        _ => "not in the allowlist".into(),
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
