//! HTTP the broker reads, plain or in TLS it terminates to swap in a secret: each
//! request's Host is checked against the name the connection was made for, secret
//! placeholders in its headers are swapped for the values (to the secret's hosts
//! only; anywhere else the request is refused), and it is forwarded on one upstream
//! connection of the same HTTP version. Bodies stream through; WebSocket upgrades
//! become a relay. The sandbox's side is any byte stream; the router
//! ([`crate::router`]) hands it over.

use crate::audit::Event;
use crate::relay::RELAY_BUFFER;
use crate::scrub::{ScrubBody, Scrubber, StreamScrub};
use crate::secrets::{self, Secret};
use crate::sniff::tls::ClientHelloInfo;
use crate::state::State;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

type Body = BoxBody<Bytes, hyper::Error>;

const H2: &[u8] = b"h2";
const HTTP1: &[u8] = b"http/1.1";

type Http1Sender = hyper::client::conn::http1::SendRequest<Incoming>;

/// One request-sending side of an upstream connection. An HTTP/1 upstream may be
/// opened only when the first request has passed its checks (`None` until then),
/// so a refused request never reaches the upstream at all.
#[derive(Clone)]
enum Sender {
    Http1(Arc<Mutex<Option<Http1Sender>>>),
    Http2(hyper::client::conn::http2::SendRequest<Incoming>),
}

/// What every request on one connection is checked against.
struct Target {
    state: Arc<State>,
    name: String,
    port: u16,
    /// The scheme's port (80 or 443), which a Host header may leave out.
    default_port: u16,
    via: &'static str,
    /// Set when a secret may go to this host: what comes back is scrubbed.
    scrubber: Option<Arc<Scrubber>>,
}

impl Target {
    fn new(state: Arc<State>, name: String, port: u16, via: &'static str) -> Arc<Target> {
        let scrubber = state.scrubber_for(&name);
        let default_port = if via == "terminated" { 443 } else { 80 };
        Arc::new(Target {
            state,
            name,
            port,
            default_port,
            via,
            scrubber,
        })
    }
}

/// Plain HTTP/1.1 from the sandbox to `name:port`; the upstream connection is
/// made for the first request that passes.
pub async fn plain<S>(state: Arc<State>, inside: S, name: String, port: u16)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let target = Target::new(state, name, port, "http");
    serve_http1(target, TokioIo::new(inside), None).await;
}

/// TLS from the sandbox, terminated with cordon's certificate for `name`, and TLS
/// again upstream, verified against the broker's roots. Both sides must speak the
/// HTTP version the upstream picks from the client's ALPN offer. When that is
/// known in advance (the client offers one version or none, or this upstream
/// picked before), the two handshakes run at once; otherwise the upstream is asked
/// first, and its choice remembered.
pub async fn terminate<S>(
    state: Arc<State>,
    inside: S,
    upstream: TcpStream,
    name: String,
    port: u16,
    hello: ClientHelloInfo,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let offered: Vec<&[u8]> = hello
        .alpn
        .iter()
        .map(Vec::as_slice)
        .filter(|p| *p == H2 || *p == HTTP1)
        .collect();
    let fail = |reason: String| state.refuse(Event::Connect, &name, Some(port), &reason);
    let Ok(server_name) = ServerName::try_from(name.clone()) else {
        return fail("not a valid TLS server name".into());
    };
    let known = match offered.as_slice() {
        [] => Some(Vec::new()),
        [only] => Some(only.to_vec()),
        _ => state.remembered_alpn(&name, port),
    };
    let handshakes = match known {
        Some(alpn) => {
            concurrent_handshakes(&state, inside, upstream, server_name, &name, port, alpn).await
        }
        None => {
            sequential_handshakes(&state, inside, upstream, server_name, &name, port, &offered)
                .await
        }
    };
    let (inside, upstream, chosen) = match handshakes {
        Ok(done) => done,
        Err(reason) => return fail(reason),
    };
    let target = Target::new(state, name, port, "terminated");
    serve(target, inside, upstream, chosen == H2).await;
}

type InsideTls<S> = tokio_rustls::server::TlsStream<S>;
type UpstreamTls = tokio_rustls::client::TlsStream<TcpStream>;

/// Both handshakes at once, for an HTTP version known beforehand (`alpn`, empty
/// for none). Fails if the upstream picks another one after all.
async fn concurrent_handshakes<S>(
    state: &State,
    inside: S,
    upstream: TcpStream,
    server_name: ServerName<'static>,
    name: &str,
    port: u16,
    alpn: Vec<u8>,
) -> Result<(InsideTls<S>, UpstreamTls, Vec<u8>), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let offer: Vec<&[u8]> = if alpn.is_empty() {
        Vec::new()
    } else {
        vec![alpn.as_slice()]
    };
    let config = state
        .server_config(name, &alpn)
        .map_err(|e| e.to_string())?;
    let client = state
        .client_config(&offer)
        .map_err(|e| format!("upstream TLS configuration: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(client);
    let (inside, upstream) = tokio::join!(
        tokio_rustls::TlsAcceptor::from(config).accept(inside),
        connector.connect(server_name, upstream)
    );
    let upstream = upstream.map_err(|e| format!("upstream TLS failed: {e}"))?;
    let inside = inside.map_err(refused_by_client)?;
    let picked = upstream.get_ref().1.alpn_protocol().unwrap_or(b"");
    let agrees = picked == alpn.as_slice() || (picked.is_empty() && alpn == HTTP1);
    if !agrees {
        state.forget_alpn(name, port);
        return Err(
            "the upstream changed the HTTP version it speaks; the next connection adapts".into(),
        );
    }
    let chosen = if alpn.is_empty() {
        HTTP1.to_vec()
    } else {
        alpn
    };
    Ok((inside, upstream, chosen))
}

/// The upstream first, offered what the client offered; then the sandbox's side
/// with the version the upstream picked (remembered for next time).
async fn sequential_handshakes<S>(
    state: &State,
    inside: S,
    upstream: TcpStream,
    server_name: ServerName<'static>,
    name: &str,
    port: u16,
    offered: &[&[u8]],
) -> Result<(InsideTls<S>, UpstreamTls, Vec<u8>), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let client = state
        .client_config(offered)
        .map_err(|e| format!("upstream TLS configuration: {e}"))?;
    let upstream = tokio_rustls::TlsConnector::from(client)
        .connect(server_name, upstream)
        .await
        .map_err(|e| format!("upstream TLS failed: {e}"))?;
    let chosen = upstream
        .get_ref()
        .1
        .alpn_protocol()
        .unwrap_or(HTTP1)
        .to_vec();
    state.remember_alpn(name, port, &chosen);
    let config = state
        .server_config(name, &chosen)
        .map_err(|e| e.to_string())?;
    let inside = tokio_rustls::TlsAcceptor::from(config)
        .accept(inside)
        .await
        .map_err(refused_by_client)?;
    Ok((inside, upstream, chosen))
}

fn refused_by_client(e: std::io::Error) -> String {
    format!("the sandbox's TLS client refused cordon's certificate: {e}")
}

async fn serve<I, U>(target: Arc<Target>, inside: I, upstream: U, http2: bool)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upstream = TokioIo::new(upstream);
    let inside = TokioIo::new(inside);
    if http2 {
        let Ok((sender, conn)) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), upstream).await
        else {
            return;
        };
        tokio::spawn(conn);
        let sender = Sender::Http2(sender);
        let service =
            hyper::service::service_fn(move |req| forward(target.clone(), sender.clone(), req));
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(inside, service)
            .await;
    } else {
        let Some(sender) = http1_handshake(upstream).await else {
            return;
        };
        serve_http1(target, inside, Some(sender)).await;
    }
}

async fn serve_http1<I>(target: Arc<Target>, inside: TokioIo<I>, upstream: Option<Http1Sender>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let sender = Sender::Http1(Arc::new(Mutex::new(upstream)));
    let service =
        hyper::service::service_fn(move |req| forward(target.clone(), sender.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(inside, service)
        .with_upgrades()
        .await;
}

async fn http1_handshake<U>(upstream: TokioIo<U>) -> Option<Http1Sender>
where
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(upstream).await.ok()?;
    tokio::spawn(conn.with_upgrades());
    Some(sender)
}

/// Checks one request and sends it upstream.
async fn forward(
    target: Arc<Target>,
    sender: Sender,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    let state = &target.state;
    if let Err((status, reason)) = check_authority(&mut req, &target) {
        state.refuse(Event::Request, &target.name, Some(target.port), &reason);
        return Ok(refusal(status, &reason));
    }
    let uri = req.uri().clone();
    let secrets: &[Secret] = &state.config.secrets;
    if let Err(refused) = secrets::swap_in_request(&uri, req.headers_mut(), &target.name, secrets) {
        let reason = format!(
            "the placeholder of secret {} in {} of a request to a host it is not for",
            refused.secret, refused.place
        );
        state.refuse(Event::Request, &target.name, Some(target.port), &reason);
        return Ok(refusal(StatusCode::FORBIDDEN, &reason));
    }
    if target.scrubber.is_some() {
        // What comes back must be readable to be scrubbed: no compression, of the
        // body or of WebSocket messages.
        req.headers_mut().insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        req.headers_mut().remove(header::SEC_WEBSOCKET_EXTENSIONS);
    }
    state.allow(
        Event::Request,
        &target.name,
        Some(target.port),
        req.method().as_str(),
        target.via,
    );
    let bodiless_request = req.method() == Method::HEAD;
    let upgrade = wants_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
    let mut response = match sender {
        Sender::Http1(sender) => {
            to_origin_form(&mut req);
            let mut sender = sender.lock().await;
            if sender.is_none() {
                let Some(upstream) = state.open_upstream(&target.name, target.port).await else {
                    return Ok(refusal(
                        StatusCode::BAD_GATEWAY,
                        "the upstream cannot be reached",
                    ));
                };
                *sender = http1_handshake(TokioIo::new(upstream)).await;
            }
            let Some(sender) = sender.as_mut() else {
                return Ok(refusal(
                    StatusCode::BAD_GATEWAY,
                    "the upstream connection failed",
                ));
            };
            sender.ready().await?;
            sender.send_request(req).await?
        }
        Sender::Http2(mut sender) => {
            sender.ready().await?;
            sender.send_request(req).await?
        }
    };
    let scrubber = target.scrubber.clone();
    if let Some(scrubber) = &scrubber {
        let bodiless = bodiless_request
            || matches!(
                response.status(),
                StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
            );
        if let Some(coding) = content_coding(&response).filter(|_| !bodiless) {
            let reason = format!(
                "the response is encoded ({coding}) although the broker asked for identity: \
                 it cannot be scrubbed of the secrets' values"
            );
            state.refuse(Event::Request, &target.name, Some(target.port), &reason);
            return Ok(refusal(StatusCode::BAD_GATEWAY, &reason));
        }
        scrubber.headers(response.headers_mut());
        let reason = response.extensions().get::<hyper::ext::ReasonPhrase>();
        if reason.is_some_and(|r| scrubber.contains(r.as_bytes())) {
            response
                .extensions_mut()
                .remove::<hyper::ext::ReasonPhrase>();
        }
    }
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(inside) = upgrade {
            let outside = hyper::upgrade::on(&mut response);
            let scrubber = scrubber.clone();
            tokio::spawn(async move {
                if let (Ok(inside), Ok(outside)) = (inside.await, outside.await) {
                    relay(TokioIo::new(inside), TokioIo::new(outside), scrubber).await;
                }
            });
        }
    }
    Ok(match scrubber {
        Some(scrubber) => response.map(|b| ScrubBody::new(b, scrubber).boxed()),
        None => response.map(|b| b.boxed()),
    })
}

/// Every request on a connection must name, wherever it names a host (its URI's
/// authority, which is HTTP/2's `:authority`; its Host header), the one host the
/// connection was allowed for (and which the TLS SNI named), and no other port.
/// A request that names none is HTTP/1.0 and gets a Host header for that host;
/// otherwise it is refused. On refusal: the status and why.
fn check_authority<B>(req: &mut Request<B>, target: &Target) -> Result<(), (StatusCode, String)> {
    let bad = |why: String| (StatusCode::BAD_REQUEST, why);
    let mut stated: Vec<(&str, String)> = Vec::new();
    if let Some(authority) = req.uri().authority() {
        stated.push(("the URL's authority", authority.as_str().to_string()));
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    if let Some(value) = hosts.next() {
        if hosts.next().is_some() {
            return Err(bad("the request has more than one Host header".into()));
        }
        let value = value
            .to_str()
            .map_err(|_| bad("the Host header is not text".into()))?;
        stated.push(("the Host header", value.trim().to_string()));
    }
    if stated.is_empty() {
        if req.version() > Version::HTTP_10 {
            return Err(bad("the request names no host (no Host header)".into()));
        }
        let host = if target.port == target.default_port {
            target.name.clone()
        } else {
            format!("{}:{}", target.name, target.port)
        };
        let value = HeaderValue::from_str(&host)
            .map_err(|_| bad(format!("{host} is not a valid Host header")))?;
        req.headers_mut().insert(header::HOST, value);
        return Ok(());
    }
    for (place, authority) in stated {
        let Some((host, port)) = crate::sniff::http::split_authority(&authority) else {
            return Err(bad(format!("{place} is not a host name: {authority:?}")));
        };
        let wrong_port = port.is_some_and(|p| p != target.port);
        if host != target.name || wrong_port {
            return Err((
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "{place} names {authority}, but the connection is for {}:{}",
                    target.name, target.port
                ),
            ));
        }
    }
    Ok(())
}

/// The content coding of a response, if it has one other than `identity`.
fn content_coding<B>(response: &Response<B>) -> Option<String> {
    let codings: Vec<String> = response
        .headers()
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    (!codings.is_empty()).then(|| codings.join(", "))
}

fn wants_upgrade<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(header::UPGRADE)
}

/// An HTTP/1 request as an origin server expects it: `GET /path`, not the
/// absolute form a proxy client sends, and without proxy-only headers.
fn to_origin_form<B>(req: &mut Request<B>) {
    if let Some(authority) = req.uri().authority() {
        // The authority was checked against the Host header, if there is one.
        if !req.headers().contains_key(header::HOST) {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                req.headers_mut().insert(header::HOST, host);
            }
        }
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        if let Ok(uri) = path.parse() {
            *req.uri_mut() = uri;
        }
    }
    req.headers_mut().remove("proxy-connection");
    req.headers_mut().remove(header::PROXY_AUTHORIZATION);
}

fn refusal(status: StatusCode, reason: &str) -> Response<Body> {
    let body = Full::new(Bytes::from(format!("cordon: refused: {reason}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

/// Copies both ways until both sides are done (an upgraded connection: a
/// WebSocket, say). With a scrubber, what comes from the upstream is scrubbed.
async fn relay<A, B>(inside: A, outside: B, scrubber: Option<Arc<Scrubber>>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(scrubber) = scrubber else {
        return crate::relay::copy(inside, outside).await;
    };
    let (mut in_read, mut in_write) = tokio::io::split(inside);
    let (mut out_read, mut out_write) = tokio::io::split(outside);
    let up = async {
        let _ = tokio::io::copy(&mut in_read, &mut out_write).await;
        let _ = out_write.shutdown().await;
    };
    let down = async {
        let mut scrub = StreamScrub::new(scrubber);
        let mut buf = vec![0u8; RELAY_BUFFER];
        loop {
            let n = match out_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = scrub.push(Bytes::copy_from_slice(buf.get(..n).unwrap_or_default()));
            if in_write.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = in_write.write_all(&scrub.finish()).await;
        let _ = in_write.shutdown().await;
    };
    tokio::join!(up, down);
}
