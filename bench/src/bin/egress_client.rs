//! `egress_client`: the client half of `bench/egress` (src/bin/egress.rs).
//!
//! Runs one measurement against the bench's HTTPS server, either on the host
//! ("direct", `--connect 127.0.0.1:PORT`) or inside `cordon run` ("broker",
//! `--connect bench.test:PORT`, resolved by the sandbox's DNS to the broker), and
//! prints its result as one JSON line on stdout:
//!
//! - `--mode throughput`: one connection, `GET /bytes?n=N`, timed from the request
//!   to the last body byte (the handshake is left out);
//! - `--mode latency`: K requests for `/small`, each on a new connection (connect +
//!   TLS handshake + request + response), then K on one keep-alive connection; every
//!   sample in microseconds;
//! - `--mode concurrent`: C connections opened at once, each doing one request for
//!   `/small`, all held open until every one has finished; errors by stage and the
//!   wall time. Prints `ready` before it starts and `peak` while all are open (then
//!   holds them `--hold-ms`), for the driver to sample the broker's memory.
//!
//! The proxy variables (HTTPS_PROXY...) are ignored: it connects to the name
//! itself. HTTP/1.1 only (ALPN `http/1.1`); TLS session resumption is off, so every
//! new connection is a full handshake. It sends `Authorization: Bearer
//! $BENCH_TOKEN` when that is set, so that the broker's secret swap runs.

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use cordon_bench::{at_least_one, percentile, raise_nofile};
use http::header::{AUTHORIZATION, HOST};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::json;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

/// The client half of bench/egress; prints one JSON line.
#[derive(Parser)]
#[command(name = "egress_client")]
struct Args {
    /// where to connect (a name is resolved once, at start)
    #[arg(long, value_name = "HOST:PORT", required = true)]
    connect: String,
    /// the TLS server name and the Host header's name
    #[arg(long, value_name = "NAME", required = true)]
    sni: String,
    /// trust the CA certificates in FILE (PEM)
    #[arg(long, value_name = "FILE")]
    ca: Option<String>,
    /// trust the CA certificates in the file named by $VAR
    #[arg(long, value_name = "VAR")]
    ca_env: Option<String>,
    /// throughput, latency or concurrent
    #[arg(
        long,
        value_name = "MODE",
        value_enum,
        required = true,
        hide_possible_values = true
    )]
    mode: Mode,
    /// throughput: bytes to download (default 1073741824)
    #[arg(long, value_name = "N", default_value_t = 1 << 30, hide_default_value = true)]
    bytes: u64,
    /// latency: requests of each kind (default 200)
    #[arg(long, value_name = "K", default_value = "200", hide_default_value = true, value_parser = at_least_one::<usize>)]
    count: usize,
    /// latency: untimed requests of each kind first (default 5)
    #[arg(long, value_name = "N", default_value_t = 5, hide_default_value = true)]
    warmup: usize,
    /// concurrent: connections at once (default 1000)
    #[arg(long, value_name = "C", default_value = "1000", hide_default_value = true, value_parser = at_least_one::<usize>)]
    connections: usize,
    /// concurrent: how long to hold them all open (default 300)
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 300,
        hide_default_value = true
    )]
    hold_ms: u64,
    /// per connection step (default 30)
    #[arg(long, value_name = "S", default_value = "30", hide_default_value = true, value_parser = at_least_one::<u64>)]
    timeout_s: u64,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Mode {
    Throughput,
    Latency,
    Concurrent,
}

/// Everything one connection needs.
struct Ctx {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    host_header: String,
    authorization: Option<String>,
    connector: TlsConnector,
    step: Duration,
}

/// Where a request failed.
#[derive(Clone, Copy, Debug)]
enum Stage {
    Connect,
    Tls,
    Http,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Tls => "tls",
            Stage::Http => "http",
        }
    }
}

type Failure = (Stage, String);

struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    /// How long the TCP connect took.
    connect: Duration,
    protocol: String,
    cipher: String,
}

async fn step<T, E: std::fmt::Display>(
    ctx: &Ctx,
    stage: Stage,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, Failure> {
    match timeout(ctx.step, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((stage, e.to_string())),
        Err(_) => Err((stage, format!("timed out after {:?}", ctx.step))),
    }
}

async fn open(ctx: &Ctx) -> Result<Conn, Failure> {
    let begun = Instant::now();
    let tcp = step(ctx, Stage::Connect, TcpStream::connect(ctx.addr)).await?;
    let connect = begun.elapsed();
    let _ = tcp.set_nodelay(true);
    let tls = step(
        ctx,
        Stage::Tls,
        ctx.connector.connect(ctx.server_name.clone(), tcp),
    )
    .await?;
    let (protocol, cipher) = {
        let c = tls.get_ref().1;
        (
            c.protocol_version()
                .map_or("?".into(), |v| format!("{v:?}")),
            c.negotiated_cipher_suite()
                .map_or("?".into(), |s| format!("{:?}", s.suite())),
        )
    };
    let (sender, connection) = step(
        ctx,
        Stage::Http,
        hyper::client::conn::http1::handshake(TokioIo::new(tls)),
    )
    .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Conn {
        sender,
        connect,
        protocol,
        cipher,
    })
}

/// One GET on `conn`; returns the body's length.
async fn get(
    ctx: &Ctx,
    conn: &mut Conn,
    path: &str,
    body_timeout: Duration,
) -> Result<u64, Failure> {
    step(ctx, Stage::Http, conn.sender.ready()).await?;
    let mut request = http::Request::get(path).header(HOST, &ctx.host_header);
    if let Some(auth) = &ctx.authorization {
        request = request.header(AUTHORIZATION, auth);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| (Stage::Http, e.to_string()))?;
    let response = step(ctx, Stage::Http, conn.sender.send_request(request)).await?;
    if !response.status().is_success() {
        return Err((Stage::Http, format!("status {}", response.status())));
    }
    let mut body = response.into_body();
    let mut n = 0u64;
    let read = async {
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                n += data.len() as u64;
            }
        }
        Ok::<_, hyper::Error>(())
    };
    match timeout(body_timeout, read).await {
        Ok(Ok(())) => Ok(n),
        Ok(Err(e)) => Err((Stage::Http, format!("body: {e}"))),
        Err(_) => Err((
            Stage::Http,
            format!("body timed out after {body_timeout:?}"),
        )),
    }
}

fn fail((stage, e): Failure) -> String {
    format!("{}: {e}", stage.name())
}

fn micros(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 10.0
}

async fn throughput(ctx: &Ctx, bytes: u64) -> Result<serde_json::Value, String> {
    let handshake_start = Instant::now();
    let mut conn = open(ctx).await.map_err(fail)?;
    let handshake = handshake_start.elapsed();
    let start = Instant::now();
    let n = get(
        ctx,
        &mut conn,
        &format!("/bytes?n={bytes}"),
        Duration::from_secs(3600),
    )
    .await
    .map_err(fail)?;
    let secs = start.elapsed().as_secs_f64();
    if n != bytes {
        return Err(format!("got {n} bytes, asked for {bytes}"));
    }
    Ok(json!({
        "mode": "throughput",
        "bytes": n,
        "secs": secs,
        "mib_per_s": n as f64 / secs / (1024.0 * 1024.0),
        "handshake_us": micros(handshake),
        "protocol": conn.protocol,
        "cipher": conn.cipher,
    }))
}

async fn latency(ctx: &Ctx, count: usize, warmup: usize) -> Result<serde_json::Value, String> {
    let small = Duration::from_secs(30);
    let mut new_conn = Vec::with_capacity(count);
    let mut protocol = String::new();
    let mut cipher = String::new();
    for i in 0..warmup + count {
        let start = Instant::now();
        let mut conn = open(ctx).await.map_err(fail)?;
        get(ctx, &mut conn, "/small", small).await.map_err(fail)?;
        let elapsed = start.elapsed();
        if i >= warmup {
            new_conn.push(micros(elapsed));
        }
        protocol = std::mem::take(&mut conn.protocol);
        cipher = std::mem::take(&mut conn.cipher);
    }
    let mut keep_alive = Vec::with_capacity(count);
    let mut conn = open(ctx).await.map_err(fail)?;
    for i in 0..warmup + count {
        let start = Instant::now();
        get(ctx, &mut conn, "/small", small).await.map_err(fail)?;
        let elapsed = start.elapsed();
        if i >= warmup {
            keep_alive.push(micros(elapsed));
        }
    }
    Ok(json!({
        "mode": "latency",
        "new_connection_us": new_conn,
        "keep_alive_us": keep_alive,
        "protocol": protocol,
        "cipher": cipher,
    }))
}

async fn concurrent(
    ctx: Arc<Ctx>,
    connections: usize,
    hold: Duration,
) -> Result<serde_json::Value, String> {
    say("ready");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let opened = Arc::new(Barrier::new(connections + 1));
    let answered = Arc::new(Barrier::new(connections + 1));
    let (release, released) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let ctx = ctx.clone();
        let opened = opened.clone();
        let answered = answered.clone();
        let mut released = released.clone();
        tasks.push(tokio::spawn(async move {
            let conn = open(&ctx).await;
            let connect_time = conn.as_ref().ok().map(|c| c.connect);
            opened.wait().await;
            let outcome = match conn {
                Ok(mut conn) => get(&ctx, &mut conn, "/small", ctx.step).await.map(|_| conn),
                Err(e) => Err(e),
            };
            answered.wait().await;
            let _ = released.wait_for(|r| *r).await;
            (connect_time, outcome.map(drop))
        }));
    }
    opened.wait().await;
    let open_all = start.elapsed();
    answered.wait().await;
    let wall = start.elapsed();
    say("peak");
    tokio::time::sleep(hold).await;
    let _ = release.send(true);
    let mut errors = std::collections::BTreeMap::<&str, u64>::new();
    let mut first_error = None;
    let mut ok = 0u64;
    let mut connect_ms = Vec::with_capacity(connections);
    for task in tasks {
        let outcome = task.await.map(|(connect_time, outcome)| {
            connect_ms.extend(connect_time.map(|t| t.as_secs_f64() * 1e3));
            outcome
        });
        match outcome {
            Ok(Ok(())) => ok += 1,
            Ok(Err((stage, e))) => {
                *errors.entry(stage.name()).or_default() += 1;
                first_error.get_or_insert(format!("{}: {e}", stage.name()));
            }
            Err(e) => {
                *errors.entry("task").or_default() += 1;
                first_error.get_or_insert(format!("task: {e}"));
            }
        }
    }
    Ok(json!({
        "mode": "concurrent",
        "connections": connections,
        "ok": ok,
        "errors": connections as u64 - ok,
        "errors_by_stage": errors,
        "first_error": first_error,
        "open_all_s": open_all.as_secs_f64(),
        // How long each TCP connect took (to the broker, inside): a second or
        // more means the SYN was dropped (a full accept queue) and sent again.
        "connect_ms_median": percentile_or_0(&connect_ms, 50.0),
        "connect_ms_max": percentile_or_0(&connect_ms, 100.0),
        "connect_over_1s": connect_ms.iter().filter(|&&ms| ms >= 1000.0).count(),
        "wall_s": wall.as_secs_f64(),
    }))
}

/// Nearest-rank percentile (0 when empty).
fn percentile_or_0(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        0.0
    } else {
        percentile(samples, p)
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn client_config(args: &Args) -> Result<rustls::ClientConfig, String> {
    let path = match (&args.ca, &args.ca_env) {
        (Some(path), _) => path.clone(),
        (None, Some(var)) => std::env::var(var).map_err(|_| format!("${var} is not set"))?,
        (None, None) => return Err("--ca or --ca-env is required".into()),
    };
    let pem = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("{path}: {e}"))?;
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!("{path}: no usable CA certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    let nofile = raise_nofile();
    let addr = tokio::net::lookup_host(&args.connect)
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", args.connect))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| format!("{} has no IPv4 address", args.connect))?;
    let port = addr.port();
    let server_name = ServerName::try_from(args.sni.clone()).map_err(|e| e.to_string())?;
    let ctx = Arc::new(Ctx {
        addr,
        server_name,
        host_header: format!("{}:{port}", args.sni),
        authorization: std::env::var("BENCH_TOKEN")
            .ok()
            .map(|t| format!("Bearer {t}")),
        connector: TlsConnector::from(Arc::new(client_config(&args)?)),
        step: Duration::from_secs(args.timeout_s),
    });
    let mut result = match args.mode {
        Mode::Throughput => throughput(&ctx, args.bytes).await?,
        Mode::Latency => latency(&ctx, args.count, args.warmup).await?,
        Mode::Concurrent => {
            concurrent(
                ctx.clone(),
                args.connections,
                Duration::from_millis(args.hold_ms),
            )
            .await?
        }
    };
    result["addr"] = json!(addr.to_string());
    result["nofile"] = json!(nofile);
    Ok(result)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("egress_client: cannot start tokio: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(result) => {
            say(&result.to_string());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("egress_client: {e}");
            ExitCode::FAILURE
        }
    }
}
