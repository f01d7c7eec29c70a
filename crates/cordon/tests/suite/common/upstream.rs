//! Real upstream servers for the egress tests (egress.rs): plain HTTP/1.1, HTTPS
//! with a test CA (ALPN h2 + http/1.1, or h2 only), server-sent events, a WebSocket
//! echo, a git smart-HTTP server (`git http-backend` run as CGI), a raw TCP listener
//! and a UDP socket. Each runs on its own thread with its own tokio runtime, on a
//! random port, and records what reached it (connections accepted, request heads,
//! WebSocket messages, raw bytes, datagrams), so that a test asserts effects on the
//! host: "the upstream saw nothing", "it saw `authorization: Bearer VALUE`".
//!
//! Every HTTP server ([`Upstream::http`], [`Upstream::https`], [`Upstream::h2_only`],
//! [`Upstream::git`]) answers:
//! - `GET /`: `hello from NAME over HTTP/1.1` (or `HTTP/2.0`, the version negotiated);
//! - `GET /events?n=N`: a `text/event-stream` of N events `data: event I`. Event 0
//!   goes out at once; the others only after a request to `/ack` (or, failing that,
//!   after [`SSE_ACK_WAIT`], preceded by `data: no ack`). A client that reads event 0
//!   while the body is still open and then calls `/ack` proves that the path streams:
//!   a proxy that buffers the body holds event 0 until the body ends, so the ack can
//!   only come too late, and the server records the stream as unacknowledged;
//! - `GET /ack`: opens the gate of one waiting event stream;
//! - `GET /ws` with `Upgrade: websocket`: echoes text and binary messages, recording them;
//! - on a git server, `/repo.git/...`: the bare repository, through `git http-backend`.
//!
//! No response ever contains what the request carried (headers, body): a secret the
//! broker swapped in must not travel back into the sandbox through the test's own
//! echo. The one exception is on purpose: the echo servers ([`Upstream::echo_http`],
//! [`Upstream::echo_https`]) answer `GET /echo` with every request header twice,
//! as a response header `x-echo-NAME: VALUE` and as a body line `NAME: VALUE`; with
//! `?split=1` the body goes out in two writes 200 ms apart, cut in the middle of the
//! `authorization` value; with `?gzip=1` it is gzip-encoded whatever the request's
//! `Accept-Encoding` says (as a server that ignores it would).
#![allow(dead_code)] // each test crate uses a different part

use super::{PATH, cordon_bin, random_hex, random_u32};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::convert::Infallible;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// How long an event stream waits for `/ack` before it gives up and sends the rest.
pub const SSE_ACK_WAIT: Duration = Duration::from_secs(20);

/// How long [`Upstream::assert_untouched`] waits for late arrivals.
pub const SETTLE: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------
// The test CA
// ---------------------------------------------------------------------------------

/// A certificate authority made for this test process. Its certificate is in a file
/// every user can read ([`TestCa::pem_path`]), to pass with `--upstream-ca`.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
    /// The CA certificate (PEM).
    pub pem_path: PathBuf,
}

/// The test process's CA (made on first use).
pub fn test_ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(TestCa::new)
}

impl TestCa {
    fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("cordon egress test CA {}", random_hex(4)),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("generate the CA key");
        let pem = params.self_signed(&key).expect("self-sign the CA").pem();
        // Next to the world-readable copy of cordon: readable by the ordinary test
        // user, removed with that directory once this process is gone.
        let dir = cordon_bin().parent().unwrap().to_path_buf();
        let pem_path = dir.join(format!("test-ca-{}.pem", random_hex(4)));
        fs::write(&pem_path, &pem).expect("write the test CA");
        fs::set_permissions(&pem_path, fs::Permissions::from_mode(0o644)).unwrap();
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            pem,
            pem_path,
        }
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The CA file's path as a string, for `--upstream-ca`.
    pub fn path_str(&self) -> String {
        self.pem_path.display().to_string()
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by the CA.
    pub fn leaf(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf names");
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].to_string());
        params.is_ca = IsCa::NoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("generate a leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign a leaf");
        (
            cert.der().clone(),
            PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
    }

    /// A rustls server config presenting a leaf for `names`, offering `alpn`.
    pub fn server_config(&self, names: &[&str], alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let (cert, key) = self.leaf(names);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server certificate");
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

// ---------------------------------------------------------------------------------
// What a server saw
// ---------------------------------------------------------------------------------

/// One request head as the upstream received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// `HTTP/1.1`, `HTTP/2.0`, ...
    pub version: String,
    /// Lowercase names, in order; for HTTP/2 the authority comes as `:authority`.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Log {
    connections: AtomicUsize,
    requests: Mutex<Vec<Seen>>,
    /// WebSocket messages, raw TCP bytes (one entry per connection), datagrams.
    messages: Mutex<Vec<Vec<u8>>>,
    sse_acked: AtomicUsize,
    sse_unacked: AtomicUsize,
    /// Whether `/echo` answers.
    echo: std::sync::atomic::AtomicBool,
}

// ---------------------------------------------------------------------------------
// The servers
// ---------------------------------------------------------------------------------

/// A running server. Stops when dropped.
pub struct Upstream {
    /// The name tests use for it inside (`web.test`); the server itself listens on
    /// an address, not a name.
    pub name: String,
    pub addr: SocketAddr,
    /// `http`, `https`, `tcp` or `udp`.
    pub scheme: &'static str,
    /// On a git server: the content of `README` in the served repository.
    pub repo_marker: Option<String>,
    log: Arc<Log>,
    stop: Option<oneshot::Sender<()>>,
    _dir: Option<tempfile::TempDir>,
}

struct App {
    name: String,
    tls: Option<Arc<rustls::ServerConfig>>,
    h2_only: bool,
    git_root: Option<PathBuf>,
    gate: Semaphore,
    log: Arc<Log>,
}

type Resp = Response<BoxBody<Bytes, Infallible>>;

fn loopback() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
}

impl Upstream {
    /// Plain HTTP/1.1 (and h2c with prior knowledge) on 127.0.0.1.
    pub fn http(name: &str) -> Upstream {
        Self::http_server(name, None, false, None)
    }

    /// [`Upstream::http`] on port 80 of a loopback address of its own
    /// (127.X.Y.Z, random): a name allowed during a session (`allowDomain`) is
    /// reachable on 80 and 443 only. Binding port 80 needs root.
    pub fn http_on_port_80(name: &str) -> Upstream {
        let ip = Ipv4Addr::new(
            127,
            random_u32(1, 254) as u8,
            random_u32(0, 256) as u8,
            random_u32(1, 254) as u8,
        );
        Self::http_server_at(name, SocketAddr::new(IpAddr::V4(ip), 80))
    }

    /// [`Upstream::http`] that also answers `/echo` (see the module's documentation).
    pub fn echo_http(name: &str) -> Upstream {
        let up = Self::http_server(name, None, false, None);
        up.set_echo();
        up
    }

    /// [`Upstream::https`] that also answers `/echo`.
    pub fn echo_https(name: &str) -> Upstream {
        let up = Self::https(name);
        up.set_echo();
        up
    }

    fn set_echo(&self) {
        self.log.echo.store(true, SeqCst);
    }

    /// HTTPS with a leaf of the [`test_ca`] for `name`, ALPN h2 and http/1.1.
    pub fn https(name: &str) -> Upstream {
        let tls = test_ca().server_config(&[name, "127.0.0.1"], &[b"h2", b"http/1.1"]);
        Self::http_server(name, Some(tls), false, None)
    }

    /// HTTPS that speaks HTTP/2 only (ALPN h2 alone): a client that gets an answer
    /// has spoken HTTP/2 end to end.
    pub fn h2_only(name: &str) -> Upstream {
        let tls = test_ca().server_config(&[name, "127.0.0.1"], &[b"h2"]);
        Self::http_server(name, Some(tls), true, None)
    }

    /// HTTPS serving a bare git repository at `/repo.git` (smart HTTP, clone only),
    /// whose one commit holds `README` with [`Upstream::repo_marker`].
    pub fn git(name: &str) -> Upstream {
        let dir = tempfile::tempdir().expect("temp dir for the git server");
        let marker = format!("git-content-{}", random_hex(8));
        make_bare_repo(dir.path(), &marker);
        let tls = test_ca().server_config(&[name, "127.0.0.1"], &[b"h2", b"http/1.1"]);
        let mut up = Self::http_server(name, Some(tls), false, Some(dir.path().to_path_buf()));
        up.repo_marker = Some(marker);
        up._dir = Some(dir);
        up
    }

    /// A TCP listener on `ip` (random port) that accepts, counts and records what
    /// arrives, and answers nothing.
    pub fn raw_tcp(ip: IpAddr) -> Upstream {
        let listener = std::net::TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind raw tcp");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Log::default());
        let l = log.clone();
        Self::spawn("raw", addr, "tcp", log, async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                l.connections.fetch_add(1, SeqCst);
                let l = l.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut limited = (&mut s).take(65536);
                    let read = limited.read_to_end(&mut buf);
                    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
                    l.messages.lock().unwrap().push(buf);
                });
            }
        })
    }

    /// A UDP socket on `ip` (random port) that counts and records datagrams.
    pub fn udp(ip: IpAddr) -> Upstream {
        let sock = std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind udp");
        sock.set_nonblocking(true).unwrap();
        let addr = sock.local_addr().unwrap();
        let log = Arc::new(Log::default());
        let l = log.clone();
        Self::spawn("udp", addr, "udp", log, async move {
            let sock = tokio::net::UdpSocket::from_std(sock).unwrap();
            let mut buf = vec![0u8; 65536];
            loop {
                if let Ok((n, _)) = sock.recv_from(&mut buf).await {
                    l.connections.fetch_add(1, SeqCst);
                    l.messages.lock().unwrap().push(buf[..n].to_vec());
                }
            }
        })
    }

    fn http_server(
        name: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
        h2_only: bool,
        git_root: Option<PathBuf>,
    ) -> Upstream {
        let listener = std::net::TcpListener::bind(loopback()).expect("bind http");
        Self::serve_http(name, listener, tls, h2_only, git_root)
    }

    fn http_server_at(name: &str, addr: SocketAddr) -> Upstream {
        let listener = std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("bind {addr} (the test needs root for port 80): {e}"));
        Self::serve_http(name, listener, None, false, None)
    }

    fn serve_http(
        name: &str,
        listener: std::net::TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        h2_only: bool,
        git_root: Option<PathBuf>,
    ) -> Upstream {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Log::default());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let app = Arc::new(App {
            name: name.to_string(),
            tls,
            h2_only,
            git_root,
            gate: Semaphore::new(0),
            log: log.clone(),
        });
        Self::spawn(name, addr, scheme, log, async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                app.log.connections.fetch_add(1, SeqCst);
                let app = app.clone();
                tokio::spawn(async move {
                    match app.tls.clone() {
                        Some(cfg) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                            if let Ok(tls) = acceptor.accept(stream).await {
                                serve_conn(tls, app).await;
                            }
                        }
                        None => serve_conn(stream, app).await,
                    }
                });
            }
        })
    }

    /// Runs `serve` on a thread of its own with a current-thread runtime, until the
    /// returned handle is dropped.
    fn spawn(
        name: &str,
        addr: SocketAddr,
        scheme: &'static str,
        log: Arc<Log>,
        serve: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Upstream {
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("upstream {name}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async move {
                    tokio::select! {
                        _ = stopped => {}
                        _ = serve => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn the server thread");
        Upstream {
            name: name.to_string(),
            addr,
            scheme,
            repo_marker: None,
            log,
            stop: Some(stop),
            _dir: None,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `NAME:PORT`.
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.name, self.port())
    }

    /// `SCHEME://NAME:PORT/PATH` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.host_port())
    }

    /// The cordon flags that make the name reachable inside:
    /// `--allow-domain NAME:PORT --resolve NAME:ADDR`.
    pub fn allow_flags(&self) -> Vec<String> {
        vec![
            "--allow-domain".into(),
            self.host_port(),
            "--resolve".into(),
            format!("{}:{}", self.name, self.addr.ip()),
        ]
    }

    /// Connections accepted (datagrams received, for UDP).
    pub fn connections(&self) -> usize {
        self.log.connections.load(SeqCst)
    }

    /// Request heads received so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.log.requests.lock().unwrap().clone()
    }

    /// WebSocket messages, raw TCP bytes or datagrams received so far.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        self.log.messages.lock().unwrap().clone()
    }

    /// Whether some request carried header `name` with exactly `value`.
    pub fn saw_header(&self, name: &str, value: &str) -> bool {
        self.requests().iter().any(|r| {
            r.headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value)
        })
    }

    /// Whether `needle` appears anywhere in what reached this server: a request
    /// line, a header, a message.
    pub fn saw_bytes(&self, needle: &str) -> bool {
        let heads = self.requests().iter().any(|r| {
            r.target.contains(needle)
                || r.headers
                    .iter()
                    .any(|(n, v)| n.contains(needle) || v.contains(needle))
        });
        heads
            || self
                .messages()
                .iter()
                .any(|m| super::find(m, needle.as_bytes()).is_some())
    }

    /// Event streams whose `/ack` came in time, and those that gave up waiting.
    pub fn sse_outcomes(&self) -> (usize, usize) {
        (
            self.log.sse_acked.load(SeqCst),
            self.log.sse_unacked.load(SeqCst),
        )
    }

    /// Waits until at least `n` connections arrived, at most `within`; returns the count.
    pub fn wait_connections(&self, n: usize, within: Duration) -> usize {
        let start = Instant::now();
        while self.connections() < n && start.elapsed() < within {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.connections()
    }

    /// A summary of what the server saw, for failure messages.
    pub fn report(&self) -> String {
        let mut s = format!(
            "{} {} ({}): {} connection(s)",
            self.scheme,
            self.name,
            self.addr,
            self.connections()
        );
        for r in self.requests() {
            s.push_str(&format!("\n  {} {} {}", r.method, r.target, r.version));
            for (n, v) in &r.headers {
                s.push_str(&format!("\n    {n}: {v}"));
            }
        }
        for m in self.messages() {
            s.push_str(&format!("\n  message {:?}", String::from_utf8_lossy(&m)));
        }
        s
    }

    /// Asserts (after [`SETTLE`], for late arrivals) that nothing reached the server:
    /// no connection, no request, no datagram. `why` says what a failure means.
    pub fn assert_untouched(&self, why: &str) {
        std::thread::sleep(SETTLE);
        assert!(
            self.connections() == 0 && self.requests().is_empty() && self.messages().is_empty(),
            "{why}: the upstream was reached\n{}",
            self.report()
        );
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve_conn<I>(io: I, app: Arc<App>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_app = app.clone();
    let svc = hyper::service::service_fn(move |req| {
        let app = svc_app.clone();
        async move { Ok::<_, Infallible>(app.handle(req).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if app.h2_only {
        builder = builder.http2_only();
    }
    let _ = builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await;
}

fn text(status: StatusCode, body: String) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap()
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

impl App {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        let mut headers: Vec<(String, String)> = Vec::new();
        if let Some(a) = req.uri().authority() {
            headers.push((":authority".into(), a.to_string()));
        }
        for (n, v) in req.headers() {
            headers.push((
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ));
        }
        let version = format!("{:?}", req.version());
        self.log.requests.lock().unwrap().push(Seen {
            method: req.method().to_string(),
            target: req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            version: version.clone(),
            headers,
        });
        let path = req.uri().path().to_string();
        if let Some(root) = &self.git_root
            && path.starts_with("/repo.git/")
        {
            return git_cgi(root.clone(), req).await;
        }
        match path.as_str() {
            "/" => text(
                StatusCode::OK,
                format!("hello from {} over {version}\n", self.name),
            ),
            "/events" => {
                let n = query_param(&req, "n")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(5);
                self.events(n)
            }
            "/ack" => {
                self.gate.add_permits(1);
                text(StatusCode::OK, "ack\n".into())
            }
            "/ws" => self.websocket(req),
            "/echo" if self.log.echo.load(SeqCst) => echo(&req),
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }

    /// The event stream described in the module's documentation.
    fn events(self: &Arc<Self>, n: usize) -> Resp {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let app = self.clone();
        tokio::spawn(async move {
            let event = |i: usize| Bytes::from(format!("data: event {i}\n\n"));
            if tx.send(event(0)).await.is_err() {
                return;
            }
            let acked = matches!(
                tokio::time::timeout(SSE_ACK_WAIT, app.gate.acquire()).await,
                Ok(Ok(_))
            );
            if acked {
                app.gate.forget_permits(1);
                app.log.sse_acked.fetch_add(1, SeqCst);
            } else {
                app.log.sse_unacked.fetch_add(1, SeqCst);
                let _ = tx.send(Bytes::from_static(b"data: no ack\n\n")).await;
            }
            for i in 1..n {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if tx.send(event(i)).await.is_err() {
                    return;
                }
            }
        });
        Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(ChanBody(rx).boxed())
            .unwrap()
    }

    fn websocket(self: &Arc<Self>, mut req: Request<Incoming>) -> Resp {
        let upgrade = req
            .headers()
            .get("upgrade")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let Some(key) = req
            .headers()
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
        else {
            return text(StatusCode::BAD_REQUEST, "not a websocket request\n".into());
        };
        if !upgrade {
            return text(StatusCode::BAD_REQUEST, "not a websocket request\n".into());
        }
        let on_upgrade = hyper::upgrade::on(&mut req);
        let log = self.log.clone();
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let _ = ws_echo(TokioIo::new(upgraded), &log).await;
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", ws_accept(&key))
            .body(Full::new(Bytes::new()).boxed())
            .unwrap()
    }
}

/// The `/echo` answer described in the module's documentation.
fn echo(req: &Request<Incoming>) -> Resp {
    let mut resp = Response::builder().header("content-type", "text/plain");
    let mut body = Vec::new();
    let mut cut = None;
    for (n, v) in req.headers() {
        resp = resp.header(format!("x-echo-{n}"), v.clone());
        body.extend_from_slice(format!("{n}: ").as_bytes());
        if n == "authorization" {
            cut = Some(body.len() + v.len() / 2);
        }
        body.extend_from_slice(v.as_bytes());
        body.push(b'\n');
    }
    if query_param(req, "gzip").is_some() {
        return resp
            .header("content-encoding", "gzip")
            .body(Full::new(Bytes::from(gzip_stored(&body))).boxed())
            .unwrap();
    }
    match cut.filter(|_| query_param(req, "split").is_some()) {
        Some(cut) => {
            let (tx, rx) = mpsc::channel::<Bytes>(2);
            let second = Bytes::copy_from_slice(&body[cut..]);
            body.truncate(cut);
            tokio::spawn(async move {
                if tx.send(Bytes::from(body)).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = tx.send(second).await;
                }
            });
            resp.body(ChanBody(rx).boxed()).unwrap()
        }
        None => resp.body(Full::new(Bytes::from(body)).boxed()).unwrap(),
    }
}

/// `data` as a gzip member of stored (uncompressed) deflate blocks.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut chunks = data.chunks(0xffff).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    out.extend_from_slice(&(!crc).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// A response body fed by a channel: each message goes out as soon as it is sent.
struct ChanBody(mpsc::Receiver<Bytes>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

// ---------------------------------------------------------------------------------
// WebSocket (RFC 6455), just enough for an echo of small unfragmented messages
// ---------------------------------------------------------------------------------

/// `Sec-WebSocket-Accept` for a client's key.
pub fn ws_accept(key: &str) -> String {
    const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{GUID}").as_bytes(),
    );
    base64(digest.as_ref())
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

async fn ws_echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, log: &Log) -> std::io::Result<()> {
    loop {
        let mut head = [0u8; 2];
        s.read_exact(&mut head).await?;
        let opcode = head[0] & 0x0f;
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7f {
            126 => u64::from(s.read_u16().await?),
            127 => s.read_u64().await?,
            n => u64::from(n),
        };
        let mut mask = [0u8; 4];
        if masked {
            s.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; len.min(1 << 20) as usize];
        s.read_exact(&mut payload).await?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        match opcode {
            0x1 | 0x2 => {
                log.messages.lock().unwrap().push(payload.clone());
                s.write_all(&ws_frame(opcode, &payload)).await?;
            }
            0x8 => {
                s.write_all(&ws_frame(0x8, &payload)).await?;
                return s.flush().await;
            }
            0x9 => s.write_all(&ws_frame(0xA, &payload)).await?,
            _ => {}
        }
        s.flush().await?;
    }
}

// ---------------------------------------------------------------------------------
// git smart HTTP
// ---------------------------------------------------------------------------------

/// `git` with no user or system configuration.
fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `dir/repo.git`: a bare repository whose one commit holds `README` = `marker`.
fn make_bare_repo(dir: &Path, marker: &str) {
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    git(&src, &["init", "-q", "-b", "main"]);
    fs::write(src.join("README"), format!("{marker}\n")).unwrap();
    git(&src, &["add", "README"]);
    git(
        &src,
        &[
            "-c",
            "user.name=cordon test",
            "-c",
            "user.email=test@cordon.invalid",
            "commit",
            "-q",
            "-m",
            "the one commit",
        ],
    );
    git(dir, &["clone", "-q", "--bare", "src", "repo.git"]);
}

async fn git_cgi(root: PathBuf, req: Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::BAD_REQUEST, "bad body\n".into()),
    };
    tokio::task::spawn_blocking(move || http_backend(&root, &parts, &body))
        .await
        .unwrap_or_else(|e| text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")))
}

/// Runs `git http-backend` as a CGI program for one request.
fn http_backend(root: &Path, parts: &http::request::Parts, body: &[u8]) -> Resp {
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", root)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1");
    for (n, v) in &parts.headers {
        let Ok(v) = v.to_str() else { continue };
        if n == http::header::CONTENT_TYPE {
            cmd.env("CONTENT_TYPE", v);
        }
        let var = format!("HTTP_{}", n.as_str().to_ascii_uppercase().replace('-', "_"));
        cmd.env(var, v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    let mut stdin = child.stdin.take().unwrap();
    let input = body.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for git http-backend");
    let _ = writer.join();
    let raw = out.stdout;
    let (head, rest) = match super::find(&raw, b"\r\n\r\n") {
        Some(i) => (&raw[..i], &raw[i + 4..]),
        None => match super::find(&raw, b"\n\n") {
            Some(i) => (&raw[..i], &raw[i + 2..]),
            None => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "git http-backend said nothing: {}\n",
                        String::from_utf8_lossy(&out.stderr)
                    ),
                );
            }
        },
    };
    let mut resp = Response::builder();
    for line in String::from_utf8_lossy(head).lines() {
        let Some((n, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if n.eq_ignore_ascii_case("status") {
            let code = v.split_whitespace().next().and_then(|c| c.parse().ok());
            resp = resp.status(code.unwrap_or(500));
        } else {
            resp = resp.header(n.trim(), v);
        }
    }
    resp.body(Full::new(Bytes::copy_from_slice(rest)).boxed())
        .unwrap_or_else(|e| text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")))
}
