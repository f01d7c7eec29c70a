//! `bench/egress`: HTTPS through cordon's egress broker against direct, on loopback.
//!
//! Starts an HTTPS server of its own on 127.0.0.1 (HTTP/1.1 with keep-alive, a
//! certificate for `bench.test` from a CA made at start) and runs the client
//! (src/bin/egress_client.rs) three ways, interleaved round-robin in one run so
//! that noise on the machine hits all three alike:
//!
//! - direct: on the host, to 127.0.0.1:PORT;
//! - passthrough: inside `cordon run --allow-domain bench.test:PORT --resolve
//!   bench.test:127.0.0.1 --upstream-ca CA`, to bench.test:PORT; the broker relays
//!   the TLS bytes untouched;
//! - terminated: the same with `--secret BENCH_TOKEN=bench.test`: the broker ends
//!   the client's TLS with cordon's CA, swaps the secret into the `Authorization`
//!   header the client sends, opens its own TLS to the server, and scrubs the
//!   secret's value from everything that comes back (every byte of the download is
//!   scanned).
//!
//! A fourth, `relay`, is a yardstick, not judged: the client on the host through a
//! bare tokio relay in this process (copy_bidirectional, the broker's buffer size),
//! the least any user-space hop costs on this machine.
//!
//! It measures the throughput of one large download (1 GiB), the latency of small
//! requests on new connections and on one keep-alive connection, and 1,000
//! connections open at once, each doing one request; during those it samples the
//! memory of the `cordon` process it started (the launcher, whose threads run the
//! broker). It prints medians, ratios to direct, the added latency, and PASS/FAIL
//! against the targets of the egress issue.

use bytes::Bytes;
use clap::Parser;
use cordon_bench::{
    at_least_one, cpu_model, exit_code, find_binary, find_cordon, invocation, kernel, kib_field,
    loadavg, main_with, median, min_max, nproc, percentile, raise_nofile, read, verdict, workspace,
};
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Passthrough throughput must be at least this fraction of direct.
const THROUGHPUT_TARGET: f64 = 0.80;
/// The broker may add at most this much to a request's median latency (ms).
const LATENCY_TARGET_MS: f64 = 0.5;
/// The name the sandbox reaches the server by.
const NAME: &str = "bench.test";
/// What the server streams a large body from, slice after slice.
const CHUNK: usize = 256 * 1024;
/// The relay yardstick's buffers, as the broker's (cordon-net's RELAY_BUFFER).
const RELAY_BUFFER: usize = 64 * 1024;

/// HTTPS through cordon's egress broker against direct, on loopback, in one run:
/// throughput of one large download with TLS passed through and with TLS terminated
/// (a secret swapped in), the median latency the broker adds to a request (on a new
/// connection and on a keep-alive one), and many connections at once, with the memory
/// of the broker (the cordon process) under that load.
#[derive(Parser)]
#[command(
    name = "bench/egress",
    bin_name = "bench/egress",
    after_help = "\
Modes: direct (the client on the host, to 127.0.0.1); relay (a yardstick, not
judged: the client on the host through a bare tokio relay in this process, the
least a user-space hop costs here); passthrough (the client in `cordon run`, TLS
relayed untouched); terminated (the same with --secret, so the broker ends TLS with
cordon's CA, swaps the secret into the client's Authorization header and
re-encrypts). Targets: passthrough throughput >= 80% of direct; median added
latency <= 0.5 ms; no error with all the connections at once."
)]
struct Options {
    /// the download's size, e.g. 1G, 256M, 1000000 (default 1G)
    #[arg(long, value_name = "SIZE", default_value = "1G", hide_default_value = true, value_parser = size_arg)]
    bytes: u64,
    /// rounds of each measurement; each round runs every mode once, interleaved
    /// (default 3)
    #[arg(long, value_name = "N", default_value = "3", hide_default_value = true, value_parser = at_least_one::<usize>)]
    rounds: usize,
    /// small requests of each kind per round, for the latency (default 200)
    #[arg(long, value_name = "K", default_value = "200", hide_default_value = true, value_parser = at_least_one::<usize>)]
    requests: usize,
    /// connections open at once (default 1000)
    #[arg(long, value_name = "C", default_value = "1000", hide_default_value = true, value_parser = at_least_one::<usize>)]
    concurrency: usize,
    /// rounds of the concurrency measurement (default: --rounds)
    #[arg(long, value_name = "N", value_parser = at_least_one::<usize>)]
    concurrency_rounds: Option<usize>,
    /// the cordon binary (default: next to this binary)
    #[arg(long, value_name = "PATH")]
    cordon: Option<PathBuf>,
    /// the client binary (default: egress_client next to this binary)
    #[arg(long, value_name = "PATH")]
    client: Option<PathBuf>,
    /// the sandbox's workspace, where the CA file goes too (default: a fresh directory
    /// under the cargo target directory; not under /tmp, which is private inside)
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// print the results as one JSON object instead of text
    #[arg(long)]
    json: bool,
    /// exit with status 1 if a target is missed
    #[arg(long)]
    strict: bool,
}

/// The value of `--bytes`: a size like 1G or 256M, not 0.
fn size_arg(s: &str) -> Result<u64, String> {
    parse_size(s)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("needs a size like 1G or 256M, got {s:?}"))
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    let lower = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (digits, unit) = match lower.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => lower.split_at(i),
        None => (lower, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

// ---------------------------------------------------------------------------
// The server

/// What reached the server, by the `Authorization` header requests carried.
#[derive(Default)]
struct Stats {
    connections: AtomicU64,
    requests: AtomicU64,
    /// `Bearer <the real token>`: direct, passed through, or swapped in by the broker.
    real_token: AtomicU64,
    /// A cordon placeholder reached the server: the swap did not happen.
    placeholder: AtomicU64,
    /// No header, or something else.
    other: AtomicU64,
    bytes: AtomicU64,
}

#[derive(Clone, Copy, Default)]
struct StatsSnapshot {
    connections: u64,
    requests: u64,
    real_token: u64,
    placeholder: u64,
    other: u64,
    bytes: u64,
}

impl Stats {
    fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections: self.connections.load(Relaxed),
            requests: self.requests.load(Relaxed),
            real_token: self.real_token.load(Relaxed),
            placeholder: self.placeholder.load(Relaxed),
            other: self.other.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
        }
    }
}

impl std::ops::Sub for StatsSnapshot {
    type Output = StatsSnapshot;
    fn sub(self, o: StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            connections: self.connections - o.connections,
            requests: self.requests - o.requests,
            real_token: self.real_token - o.real_token,
            placeholder: self.placeholder - o.placeholder,
            other: self.other - o.other,
            bytes: self.bytes - o.bytes,
        }
    }
}

impl std::ops::AddAssign for StatsSnapshot {
    fn add_assign(&mut self, o: StatsSnapshot) {
        self.connections += o.connections;
        self.requests += o.requests;
        self.real_token += o.real_token;
        self.placeholder += o.placeholder;
        self.other += o.other;
        self.bytes += o.bytes;
    }
}

/// A body of `left` bytes, sent as slices of one shared buffer (no copy).
struct Payload {
    left: u64,
    chunk: Bytes,
}

impl Body for Payload {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

struct ServerState {
    stats: Stats,
    bearer: String,
    large: Bytes,
}

fn respond(state: &ServerState, request: &Request<Incoming>) -> Response<Payload> {
    let s = &state.stats;
    s.requests.fetch_add(1, Relaxed);
    match request.headers().get(AUTHORIZATION).map(|v| v.as_bytes()) {
        Some(v) if v == state.bearer.as_bytes() => s.real_token.fetch_add(1, Relaxed),
        Some(v) if v.windows(14).any(|w| w == b"cordon-secret-") => {
            s.placeholder.fetch_add(1, Relaxed)
        }
        _ => s.other.fetch_add(1, Relaxed),
    };
    let (status, body) = match request.uri().path() {
        "/small" => (
            StatusCode::OK,
            Payload {
                left: 3,
                chunk: Bytes::from_static(b"ok\n"),
            },
        ),
        "/bytes" => {
            let n = request
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("n=")))
                .and_then(|n| n.parse::<u64>().ok());
            match n {
                Some(n) => (
                    StatusCode::OK,
                    Payload {
                        left: n,
                        chunk: state.large.clone(),
                    },
                ),
                None => (
                    StatusCode::BAD_REQUEST,
                    Payload {
                        left: 0,
                        chunk: Bytes::new(),
                    },
                ),
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            Payload {
                left: 0,
                chunk: Bytes::new(),
            },
        ),
    };
    s.bytes.fetch_add(body.left, Relaxed);
    let length = http::HeaderValue::from(body.left);
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_LENGTH, length);
    headers.insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    response
}

struct Server {
    port: u16,
    relay_port: u16,
    ca_path: PathBuf,
    state: Arc<ServerState>,
    /// Serves on its worker threads for as long as it lives.
    _runtime: tokio::runtime::Runtime,
}

fn make_tls(dir: &Path) -> Result<(Arc<rustls::ServerConfig>, PathBuf), String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let e = |e: rcgen::Error| e.to_string();
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.distinguished_name
        .push(DnType::CommonName, "cordon bench/egress CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(e)?;
    let ca_pem = ca.self_signed(&ca_key).map_err(e)?.pem();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec![NAME.to_string()]).map_err(e)?;
    leaf.distinguished_name.push(DnType::CommonName, NAME);
    leaf.is_ca = IsCa::NoCa;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().map_err(e)?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(e)?;

    let ca_path = dir.join("bench-ca.pem");
    std::fs::write(&ca_path, &ca_pem).map_err(|e| format!("{}: {e}", ca_path.display()))?;
    std::fs::set_permissions(&ca_path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("{}: {e}", ca_path.display()))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf_cert.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
        )
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), ca_path))
}

/// A listener on a free port of 127.0.0.1 (backlog 4096), and its port.
fn listen(runtime: &tokio::runtime::Runtime) -> Result<(tokio::net::TcpListener, u16), String> {
    let listener = runtime
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(([127, 0, 0, 1], 0).into())?;
            socket.listen(4096)
        })
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    Ok((listener, port))
}

fn start_server(dir: &Path, token: &str) -> Result<Server, String> {
    let (tls, ca_path) = make_tls(dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench-server")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    let (listener, port) = listen(&runtime)?;
    let (relay, relay_port) = listen(&runtime)?;
    runtime.spawn(async move {
        loop {
            let Ok((inside, _)) = relay.accept().await else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            tokio::spawn(async move {
                let Ok(upstream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                    return;
                };
                let (mut a, mut b) = (inside, upstream);
                let _ = a.set_nodelay(true);
                let _ = b.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional_with_sizes(
                    &mut a,
                    &mut b,
                    RELAY_BUFFER,
                    RELAY_BUFFER,
                )
                .await;
            });
        }
    });
    let state = Arc::new(ServerState {
        stats: Stats::default(),
        bearer: format!("Bearer {token}"),
        large: Bytes::from(vec![b'x'; CHUNK]),
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let st = state.clone();
    runtime.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                // Out of descriptors, say: let some close.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            st.stats.connections.fetch_add(1, Relaxed);
            let acceptor = acceptor.clone();
            let st = st.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |request: Request<Incoming>| {
                    let response = respond(&st, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(Server {
        port,
        relay_port,
        ca_path,
        state,
        _runtime: runtime,
    })
}

// ---------------------------------------------------------------------------
// Modes and client runs

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Direct,
    /// A yardstick, not judged: the client on the host through a bare relay in
    /// this process (tokio's copy_bidirectional with the broker's buffer size), so
    /// the cost of any user-space hop on this machine shows next to the broker's.
    Relay,
    Passthrough,
    Terminated,
}

const MODES: [Mode; 4] = [
    Mode::Direct,
    Mode::Relay,
    Mode::Passthrough,
    Mode::Terminated,
];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Relay => "relay",
            Mode::Passthrough => "passthrough",
            Mode::Terminated => "terminated",
        }
    }
    /// Held to the targets: the broker's two paths.
    fn judged(self) -> bool {
        matches!(self, Mode::Passthrough | Mode::Terminated)
    }
    fn index(self) -> usize {
        self as usize
    }
}

struct Setup {
    cordon: PathBuf,
    client: PathBuf,
    workspace: PathBuf,
    ca: PathBuf,
    port: u16,
    relay_port: u16,
    token: String,
}

impl Setup {
    fn command(&self, mode: Mode, phase: &[String]) -> Command {
        let mut command;
        let ca = self.ca.as_os_str().to_os_string();
        let port = self.port;
        if matches!(mode, Mode::Direct | Mode::Relay) {
            let port = if mode == Mode::Relay {
                self.relay_port
            } else {
                port
            };
            command = Command::new(&self.client);
            command.args(["--connect", &format!("127.0.0.1:{port}"), "--sni", NAME]);
            command.arg("--ca").arg(&ca);
        } else {
            command = Command::new(&self.cordon);
            command
                .arg("run")
                .arg("--workspace")
                .arg(&self.workspace)
                .args(["--allow-domain", &format!("{NAME}:{port}")])
                .args(["--resolve", &format!("{NAME}:127.0.0.1")])
                .arg("--upstream-ca")
                .arg(&ca);
            if mode == Mode::Terminated {
                command.args(["--secret", &format!("BENCH_TOKEN={NAME}")]);
            } else {
                // The same header through the untouched TLS, for the same request size.
                command.args(["--env", "BENCH_TOKEN"]);
            }
            command.arg("--").arg(&self.client).args([
                "--connect",
                &format!("{NAME}:{port}"),
                "--sni",
                NAME,
            ]);
            if mode == Mode::Terminated {
                // The sandbox's bundle: the host's roots, the --upstream-ca roots and
                // cordon's own CA, which signs what the broker presents.
                command.args(["--ca-env", "SSL_CERT_FILE"]);
            } else {
                command.arg("--ca").arg(&ca);
            }
        }
        command
            .args(phase)
            .env("BENCH_TOKEN", &self.token)
            .current_dir(&self.workspace)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }
}

fn display(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The memory of one process, in KiB.
#[derive(Clone, Copy, Default)]
struct MemSample {
    rss: u64,
    pss: u64,
    hwm: u64,
}

fn mem_sample(pid: u32) -> Option<MemSample> {
    let status = read(format!("/proc/{pid}/status"));
    let rollup = read(format!("/proc/{pid}/smaps_rollup"));
    Some(MemSample {
        rss: kib_field(&status, "VmRSS")?,
        pss: kib_field(&rollup, "Pss")?,
        hwm: kib_field(&status, "VmHWM")?,
    })
}

/// Threads of `pid` whose name starts with `prefix`.
fn threads_named(pid: u32, prefix: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter(|t| read(t.path().join("comm")).starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

/// The broker's memory during one concurrency run: the `cordon` launcher process.
#[derive(Clone, Copy, Default)]
struct BrokerMemory {
    pid: u32,
    /// Broker threads seen in that process (a check that it is the right one).
    broker_threads: usize,
    /// Before the client opened any connection.
    idle: MemSample,
    /// While all connections were open.
    at_peak: MemSample,
    /// The highest seen while sampling (every 10 ms) and the kernel's high-water mark.
    max_rss: u64,
    max_pss: u64,
    hwm: u64,
}

struct RunOutput {
    result: Value,
    memory: Option<BrokerMemory>,
    server: StatsSnapshot,
}

fn run_client(
    setup: &Setup,
    server: &Server,
    mode: Mode,
    phase: &[String],
    sample_memory: bool,
    limit: Duration,
) -> Result<RunOutput, String> {
    let mut command = setup.command(mode, phase);
    let shown = display(&command);
    let before = server.state.stats.snapshot();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start `{shown}`: {e}"))?;
    let pid = child.id();
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(format!("`{shown}` has no stdout or stderr pipe"));
    };
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut memory = sample_memory.then(|| BrokerMemory {
        pid,
        ..Default::default()
    });
    let mut result = None;
    let start = Instant::now();
    let tick = Duration::from_millis(if sample_memory { 10 } else { 100 });
    let mut next_sample = Instant::now();
    loop {
        match rx.recv_timeout(next_sample.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some(m) = memory.as_mut() {
                    match line.as_str() {
                        "ready" => {
                            if let Some(s) = mem_sample(pid) {
                                m.idle = s;
                            }
                            m.broker_threads = threads_named(pid, "cordon-broker");
                        }
                        "peak" => {
                            if let Some(s) = mem_sample(pid) {
                                m.at_peak = s;
                            }
                        }
                        _ => {}
                    }
                }
                if line.starts_with('{') {
                    result = Some(line);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next_sample {
            if let Some(m) = memory.as_mut()
                && let Some(s) = mem_sample(pid)
            {
                m.max_rss = m.max_rss.max(s.rss);
                m.max_pss = m.max_pss.max(s.pss);
                m.hwm = m.hwm.max(s.hwm);
            }
            next_sample = Instant::now() + tick;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("`{shown}` took longer than {limit:?}; killed"));
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for `{shown}`: {e}"))?;
    let stderr = errors.join().unwrap_or_default();
    let stderr = stderr.trim();
    if !status.success() {
        return Err(format!(
            "`{shown}` failed ({status}){}{stderr}",
            if stderr.is_empty() { "" } else { ":\n" }
        ));
    }
    let result = result.ok_or_else(|| format!("`{shown}` printed no result; stderr: {stderr}"))?;
    let result: Value = serde_json::from_str(&result)
        .map_err(|e| format!("`{shown}` printed a bad result ({e}): {result}"))?;
    Ok(RunOutput {
        result,
        memory,
        server: server.state.stats.snapshot() - before,
    })
}

// ---------------------------------------------------------------------------
// Statistics

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The run

#[derive(Default)]
struct PerMode {
    throughput_mib_s: Vec<f64>,
    new_connection_us: Vec<f64>,
    keep_alive_us: Vec<f64>,
    concurrent: Vec<Value>,
    memory: Vec<BrokerMemory>,
    server: StatsSnapshot,
    tls: String,
}

struct Results {
    invocation: String,
    nproc: usize,
    kernel: String,
    cpu: String,
    load_start: String,
    load_end: String,
    cordon: PathBuf,
    port: u16,
    options: Options,
    wall: Duration,
    modes: [PerMode; 4],
}

/// One measurement: the client's arguments for it, run for some rounds.
struct Phase {
    /// For the progress lines.
    what: &'static str,
    /// The client's arguments.
    args: [String; 4],
    rounds: usize,
    /// How long one client run may take.
    limit: Duration,
    /// Sample the broker's memory during the judged modes' runs.
    memory: bool,
}

/// Runs `phase`: each round runs every mode once, the order rotating from round to
/// round; `record` files each run's result under its mode, with what reached the
/// server.
fn run_phase(
    setup: &Setup,
    server: &Server,
    phase: &Phase,
    quiet: bool,
    modes: &mut [PerMode; 4],
    record: impl Fn(&mut PerMode, RunOutput),
) -> Result<(), String> {
    for round in 0..phase.rounds {
        if !quiet {
            eprintln!(
                "bench/egress: {} round {}/{}",
                phase.what,
                round + 1,
                phase.rounds
            );
        }
        for i in 0..MODES.len() {
            let mode = MODES[(round + i) % MODES.len()];
            let out = run_client(
                setup,
                server,
                mode,
                &phase.args,
                phase.memory && mode.judged(),
                phase.limit,
            )?;
            let m = &mut modes[mode.index()];
            m.server += out.server;
            record(m, out);
        }
    }
    Ok(())
}

fn bench(
    options: Options,
    cordon: PathBuf,
    client: PathBuf,
    workspace: &Path,
) -> Result<Results, String> {
    raise_nofile();
    let token = format!("bench-token-{:x}", std::process::id() as u64 * 0x9e37_79b9);
    let server = start_server(workspace, &token)?;
    let setup = Setup {
        cordon: cordon.clone(),
        client,
        workspace: workspace.to_path_buf(),
        ca: server.ca_path.clone(),
        port: server.port,
        relay_port: server.relay_port,
        token,
    };
    let mut modes: [PerMode; 4] = Default::default();
    let load_start = loadavg();
    let start = Instant::now();

    // A quick check of every mode first, so a broken setup fails with its reason.
    for mode in MODES {
        let check = ["--mode", "latency", "--count", "2", "--warmup", "0"].map(String::from);
        run_client(
            &setup,
            &server,
            mode,
            &check,
            false,
            Duration::from_secs(60),
        )
        .map_err(|e| format!("the {} check failed: {e}", mode.name()))?;
    }

    let client_args =
        |mode: &str, name: &str, value: String| ["--mode".into(), mode.into(), name.into(), value];
    let quiet = options.json;
    let throughput = Phase {
        what: "throughput",
        args: client_args("throughput", "--bytes", options.bytes.to_string()),
        rounds: options.rounds,
        limit: Duration::from_secs(1800),
        memory: false,
    };
    run_phase(&setup, &server, &throughput, quiet, &mut modes, |m, out| {
        m.throughput_mib_s
            .push(out.result["mib_per_s"].as_f64().unwrap_or(f64::NAN));
        m.tls = format!(
            "{} {}",
            out.result["protocol"].as_str().unwrap_or("?"),
            out.result["cipher"].as_str().unwrap_or("?")
        );
    })?;

    let latency = Phase {
        what: "latency",
        args: client_args("latency", "--count", options.requests.to_string()),
        rounds: options.rounds,
        limit: Duration::from_secs(600),
        memory: false,
    };
    run_phase(&setup, &server, &latency, quiet, &mut modes, |m, out| {
        m.new_connection_us
            .extend(numbers(&out.result["new_connection_us"]));
        m.keep_alive_us
            .extend(numbers(&out.result["keep_alive_us"]));
    })?;

    let concurrent = Phase {
        what: "concurrency",
        args: client_args(
            "concurrent",
            "--connections",
            options.concurrency.to_string(),
        ),
        rounds: options.concurrency_rounds.unwrap_or(options.rounds),
        limit: Duration::from_secs(600),
        memory: true,
    };
    run_phase(&setup, &server, &concurrent, quiet, &mut modes, |m, out| {
        m.concurrent.push(out.result);
        m.memory.extend(out.memory);
    })?;

    Ok(Results {
        invocation: invocation("bench/egress"),
        nproc: nproc(),
        kernel: kernel(),
        cpu: cpu_model(),
        load_start,
        load_end: loadavg(),
        cordon,
        port: server.port,
        options,
        wall: start.elapsed(),
        modes,
    })
}

// ---------------------------------------------------------------------------
// Output

struct Concurrency {
    runs: usize,
    errors: u64,
    first_error: Option<String>,
    open_all_s: f64,
    wall_s: f64,
    connect_ms_median: f64,
    connect_ms_max: f64,
    connect_over_1s: u64,
}

impl PerMode {
    fn throughput(&self) -> f64 {
        median(&self.throughput_mib_s)
    }
    fn new_ms(&self) -> f64 {
        median(&self.new_connection_us) / 1e3
    }
    fn keep_ms(&self) -> f64 {
        median(&self.keep_alive_us) / 1e3
    }
    fn concurrency(&self) -> Concurrency {
        let errors = self
            .concurrent
            .iter()
            .map(|r| r["errors"].as_u64().unwrap_or(u64::MAX))
            .sum();
        let first_error = self
            .concurrent
            .iter()
            .find_map(|r| r["first_error"].as_str().map(String::from));
        let field = |k: &str| {
            median(
                &self
                    .concurrent
                    .iter()
                    .filter_map(|r| r[k].as_f64())
                    .collect::<Vec<_>>(),
            )
        };
        Concurrency {
            runs: self.concurrent.len(),
            errors,
            first_error,
            open_all_s: field("open_all_s"),
            wall_s: field("wall_s"),
            connect_ms_median: field("connect_ms_median"),
            connect_ms_max: min_max(
                &self
                    .concurrent
                    .iter()
                    .filter_map(|r| r["connect_ms_max"].as_f64())
                    .collect::<Vec<_>>(),
            )
            .1,
            connect_over_1s: self
                .concurrent
                .iter()
                .filter_map(|r| r["connect_over_1s"].as_u64())
                .sum(),
        }
    }
    /// The run with the highest PSS at its peak.
    fn worst_memory(&self) -> Option<BrokerMemory> {
        self.memory.iter().copied().max_by_key(|m| m.max_pss)
    }
}

impl Results {
    fn m(&self, mode: Mode) -> &PerMode {
        &self.modes[mode.index()]
    }
    fn ratio(&self, mode: Mode) -> f64 {
        self.m(mode).throughput() / self.m(Mode::Direct).throughput()
    }
    fn added_new_ms(&self, mode: Mode) -> f64 {
        self.m(mode).new_ms() - self.m(Mode::Direct).new_ms()
    }
    fn added_keep_ms(&self, mode: Mode) -> f64 {
        self.m(mode).keep_ms() - self.m(Mode::Direct).keep_ms()
    }
    /// Every judged target: (what, pass).
    fn verdicts(&self) -> Vec<(String, bool)> {
        let mut v = vec![(
            "passthrough throughput >= 80% of direct".to_string(),
            self.ratio(Mode::Passthrough) >= THROUGHPUT_TARGET,
        )];
        for mode in [Mode::Passthrough, Mode::Terminated] {
            v.push((
                format!("{} added latency, new connection <= 0.5 ms", mode.name()),
                self.added_new_ms(mode) <= LATENCY_TARGET_MS,
            ));
            v.push((
                format!("{} added latency, keep-alive <= 0.5 ms", mode.name()),
                self.added_keep_ms(mode) <= LATENCY_TARGET_MS,
            ));
            v.push((
                format!(
                    "{} {} concurrent connections, no error",
                    mode.name(),
                    self.options.concurrency
                ),
                self.m(mode).concurrency().errors == 0,
            ));
        }
        v
    }

    fn text(&self) -> String {
        let mut o = String::new();
        let opt = &self.options;
        let _ = writeln!(
            o,
            "bench/egress: HTTPS through cordon's egress broker against direct, on loopback, in one run"
        );
        let _ = writeln!(
            o,
            "machine: {} CPUs, {}, {}; load {} -> {}",
            self.nproc, self.kernel, self.cpu, self.load_start, self.load_end
        );
        let _ = writeln!(
            o,
            "cordon: {}; server: https://{NAME}:{} on 127.0.0.1 (HTTP/1.1, {})",
            self.cordon.display(),
            self.port,
            self.m(Mode::Direct).tls
        );
        let _ = writeln!(
            o,
            "modes, interleaved round-robin: direct (host -> 127.0.0.1), relay (yardstick: host -> a bare tokio relay\n  in the bench -> server), passthrough (cordon run, TLS relayed), terminated (cordon run --secret: TLS ended with cordon's CA, secret swapped in, re-encrypted; client sees {})",
            self.m(Mode::Terminated).tls
        );
        let _ = writeln!(o, "wall time {:.1} s", self.wall.as_secs_f64());

        let _ = writeln!(
            o,
            "\nthroughput: one {} download over one connection, {} rounds (MiB/s)",
            size(opt.bytes),
            opt.rounds
        );
        let _ = writeln!(
            o,
            "  {:<12} {:>9} {:>9} {:>9} {:>9}   target",
            "mode", "median", "min", "max", "/direct"
        );
        for mode in MODES {
            let m = self.m(mode);
            let (lo, hi) = min_max(&m.throughput_mib_s);
            let target = match mode {
                Mode::Direct => String::new(),
                Mode::Relay => "(yardstick)".into(),
                Mode::Passthrough => format!(
                    ">= {:.2}  {}",
                    THROUGHPUT_TARGET,
                    verdict(self.ratio(mode) >= THROUGHPUT_TARGET)
                ),
                Mode::Terminated => "(none)".into(),
            };
            let _ = writeln!(
                o,
                "  {:<12} {:>9.1} {:>9.1} {:>9.1} {:>9.3}   {}",
                mode.name(),
                m.throughput(),
                lo,
                hi,
                self.ratio(mode),
                target
            );
        }

        let _ = writeln!(
            o,
            "\nlatency per small request, {} rounds x {} requests of each kind (ms; added = median - direct's median)",
            opt.rounds, opt.requests
        );
        let _ = writeln!(
            o,
            "  {:<12} | new connection (connect + TLS handshake + GET)  | keep-alive connection (GET)",
            ""
        );
        let _ = writeln!(
            o,
            "  {:<12} | {:>7} {:>7} {:>8} {:>6}            | {:>7} {:>7} {:>8} {:>6}",
            "mode", "median", "p90", "added", "", "median", "p90", "added", ""
        );
        for mode in MODES {
            let m = self.m(mode);
            let judge = |added: f64| {
                if !mode.judged() {
                    String::new()
                } else {
                    verdict(added <= LATENCY_TARGET_MS).to_string()
                }
            };
            let added = |a: f64| {
                if !mode.judged() {
                    String::new()
                } else {
                    format!("{a:+.3}")
                }
            };
            let _ = writeln!(
                o,
                "  {:<12} | {:>7.3} {:>7.3} {:>8} {:>6}            | {:>7.3} {:>7.3} {:>8} {:>6}",
                mode.name(),
                m.new_ms(),
                percentile(&m.new_connection_us, 90.0) / 1e3,
                added(self.added_new_ms(mode)),
                judge(self.added_new_ms(mode)),
                m.keep_ms(),
                percentile(&m.keep_alive_us, 90.0) / 1e3,
                added(self.added_keep_ms(mode)),
                judge(self.added_keep_ms(mode)),
            );
        }
        let _ = writeln!(o, "  target: added median <= {LATENCY_TARGET_MS} ms");

        let _ = writeln!(
            o,
            "\nconcurrency: {} connections opened at once, each connect + TLS + one GET, all held open until every one is done",
            opt.concurrency
        );
        let _ = writeln!(
            o,
            "  {:<12} {:>5} {:>7} {:>13} {:>13} | {:>11} {:>11} {:>11}   target: no error",
            "mode",
            "runs",
            "errors",
            "all open (s)",
            "all done (s)",
            "connect med",
            "connect max",
            "connect >1s"
        );
        for mode in MODES {
            let c = self.m(mode).concurrency();
            let _ = writeln!(
                o,
                "  {:<12} {:>5} {:>7} {:>13.3} {:>13.3} | {:>8.1} ms {:>8.1} ms {:>11}   {}",
                mode.name(),
                c.runs,
                c.errors,
                c.open_all_s,
                c.wall_s,
                c.connect_ms_median,
                c.connect_ms_max,
                c.connect_over_1s,
                if !mode.judged() {
                    String::new()
                } else {
                    verdict(c.errors == 0).to_string()
                }
            );
            if let Some(e) = c.first_error {
                let _ = writeln!(o, "      first error: {e}");
            }
        }
        let _ = writeln!(
            o,
            "  all open: until every connection finished its TLS handshake; connect: one connection's TCP connect alone; a second\n  or more means its SYN was dropped and sent again (a full accept queue: the listener's backlog, `ss -ltn` Send-Q)"
        );

        let _ = writeln!(
            o,
            "\nbroker memory: the cordon process (the launcher; its cordon-broker threads run the broker), sampled every 10 ms\nduring the {}-connection run (KiB; the run with the highest PSS)",
            opt.concurrency
        );
        let _ = writeln!(
            o,
            "  {:<12} {:>8} {:>7} | {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} {:>9}",
            "mode",
            "pid",
            "threads",
            "idle RSS",
            "idle PSS",
            "peak RSS",
            "peak PSS",
            "max RSS",
            "max PSS",
            "VmHWM"
        );
        for mode in [Mode::Passthrough, Mode::Terminated] {
            if let Some(mem) = self.m(mode).worst_memory() {
                let _ = writeln!(
                    o,
                    "  {:<12} {:>8} {:>7} | {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} {:>9}",
                    mode.name(),
                    mem.pid,
                    mem.broker_threads,
                    mem.idle.rss,
                    mem.idle.pss,
                    mem.at_peak.rss,
                    mem.at_peak.pss,
                    mem.max_rss,
                    mem.max_pss,
                    mem.hwm
                );
                let per =
                    (mem.max_pss.saturating_sub(mem.idle.pss)) as f64 / opt.concurrency as f64;
                let _ = writeln!(
                    o,
                    "  {:<12} {:.1} KiB of PSS per connection above idle ({:.1} MiB at most)",
                    "",
                    per,
                    mem.max_pss as f64 / 1024.0
                );
            }
        }
        let _ = writeln!(
            o,
            "  idle: before the client connected; peak: while all connections were open; threads: cordon-broker threads seen"
        );

        let _ = writeln!(
            o,
            "\nwhat reached the server (Authorization: Bearer <token>)"
        );
        for mode in MODES {
            let s = self.m(mode).server;
            let _ = writeln!(
                o,
                "  {:<12} {:>7} connections {:>7} requests: {:>7} with the real token, {} with a placeholder, {} other",
                mode.name(),
                s.connections,
                s.requests,
                s.real_token,
                s.placeholder,
                s.other
            );
        }

        let verdicts = self.verdicts();
        let passed = verdicts.iter().filter(|(_, p)| *p).count();
        let _ = writeln!(o, "\ntargets: {passed} of {} met", verdicts.len());
        for (what, pass) in verdicts {
            let _ = writeln!(o, "  {}  {what}", verdict(pass));
        }
        o
    }

    fn json(&self) -> String {
        let modes: Vec<Value> = MODES
            .iter()
            .map(|&mode| {
                let m = self.m(mode);
                let c = m.concurrency();
                json!({
                    "mode": mode.name(),
                    "tls": m.tls,
                    "throughput_mib_s": m.throughput_mib_s,
                    "throughput_median_mib_s": m.throughput(),
                    "throughput_ratio": self.ratio(mode),
                    "new_connection_ms": {"median": m.new_ms(), "p90": percentile(&m.new_connection_us, 90.0) / 1e3, "added": self.added_new_ms(mode)},
                    "keep_alive_ms": {"median": m.keep_ms(), "p90": percentile(&m.keep_alive_us, 90.0) / 1e3, "added": self.added_keep_ms(mode)},
                    "concurrency": {"runs": c.runs, "errors": c.errors, "first_error": c.first_error, "open_all_s": c.open_all_s, "wall_s": c.wall_s, "connect_ms_median": c.connect_ms_median, "connect_ms_max": c.connect_ms_max, "connect_over_1s": c.connect_over_1s},
                    "broker_memory_kib": m.memory.iter().map(|mem| json!({
                        "pid": mem.pid, "broker_threads": mem.broker_threads,
                        "idle_rss": mem.idle.rss, "idle_pss": mem.idle.pss,
                        "peak_rss": mem.at_peak.rss, "peak_pss": mem.at_peak.pss,
                        "max_rss": mem.max_rss, "max_pss": mem.max_pss, "hwm": mem.hwm,
                    })).collect::<Vec<_>>(),
                    "server": {"connections": m.server.connections, "requests": m.server.requests, "real_token": m.server.real_token, "placeholder": m.server.placeholder, "other": m.server.other, "bytes": m.server.bytes},
                })
            })
            .collect();
        let verdicts: Vec<Value> = self
            .verdicts()
            .into_iter()
            .map(|(what, pass)| json!({"target": what, "pass": pass}))
            .collect();
        let out = json!({
            "command": self.invocation,
            "machine": {"nproc": self.nproc, "kernel": self.kernel, "cpu": self.cpu, "load_start": self.load_start, "load_end": self.load_end},
            "cordon": self.cordon.to_string_lossy(),
            "bytes": self.options.bytes,
            "rounds": self.options.rounds,
            "requests": self.options.requests,
            "concurrency": self.options.concurrency,
            "wall_s": self.wall.as_secs_f64(),
            "modes": modes,
            "targets": verdicts,
        });
        format!("{out}\n")
    }
}

fn size(bytes: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} B")
}

// ---------------------------------------------------------------------------

fn main() -> ExitCode {
    main_with("bench/egress", real_main)
}

fn real_main() -> Result<ExitCode, String> {
    let options = Options::parse();
    let cordon = find_cordon(options.cordon.as_deref())?;
    let client = find_binary(
        options.client.as_deref(),
        "egress_client",
        "build it with `cargo build --release -p cordon-bench` or pass --client PATH",
    )?;
    let (workspace, made) = workspace(options.workspace.as_deref(), "egress")?;
    let json = options.json;
    let strict = options.strict;
    let result = bench(options, cordon, client, &workspace);
    if made {
        let _ = std::fs::remove_dir_all(&workspace);
    } else {
        let _ = std::fs::remove_file(workspace.join("bench-ca.pem"));
    }
    let results = result?;
    print!("{}", if json { results.json() } else { results.text() });
    let missed = results.verdicts().iter().any(|(_, pass)| !pass);
    Ok(exit_code(strict, missed))
}
