//! The egress broker's stream ingress (cordon-net's `ingress::stream`, what a VM
//! guest's agent will hand its guest's connections to), driven over unix socket
//! pairs against the real upstream servers of the egress tests
//! (common/upstream.rs): a stream opens with its header (`tcp ADDRESS:PORT`,
//! `tcp NAME:PORT`, `http-proxy`, `dns`) and then carries the connection's bytes.
//! The router behind it is the one the namespace ingress uses (egress.rs and
//! egress_attacks.rs test that one inside real sandboxes), so these tests assert
//! that the same decisions hold whatever the ingress: allowed TLS reaches the
//! upstream (passed through, or terminated to swap a secret in), and every way of
//! naming a destination that is not allowed reaches nothing, which the upstream's
//! own record and the audit log show.
//!
//! The session's host control endpoint (cordon-session's `control`, the broker
//! one handler behind it) is driven here the same way, with the hostile lines a
//! compromised agent could send; serve.rs drives it from inside real sessions.
//!
//! The broker runs in this test process, as the user running the tests: there is
//! no sandbox here, so there is no per-user variant.
//!
//! `cargo test -p cordon --test egress_stream`.

use crate::common;

use common::upstream::{Upstream, test_ca};
use cordon_backend::{BackendKind, Layers};
use cordon_net::ingress::stream::{self, Opening};
use cordon_net::{Destination, Dirs, Router};
use cordon_policy::{
    DomainPattern, DomainRule, NetMode, NetworkRules, Origin, ResolveRule, SecretRule, Sourced,
    UpstreamCa,
};
use cordon_session::control::Endpoint;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream as StdStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long a stream may take to answer before the test gives up on it (a hung
/// broker is a failure, not a hung suite).
const DEADLINE: Duration = Duration::from_secs(20);

fn flag(flag: &str) -> Origin {
    Origin::Flag { flag: flag.into() }
}

/// The rules of `--allow-domain` for each of `allow`, `--resolve NAME:127.0.0.1`
/// for each upstream, `--upstream-ca` the test CA, and `--secret NAME=HOST`.
fn rules(allow: &[String], upstreams: &[&Upstream], secret: Option<(&str, &str)>) -> NetworkRules {
    NetworkRules {
        allow: allow
            .iter()
            .map(|p| DomainRule {
                pattern: DomainPattern::parse(p).unwrap(),
                preset: None,
                origin: flag("--allow-domain"),
            })
            .collect(),
        resolve: upstreams
            .iter()
            .map(|u| ResolveRule {
                host: u.name.clone(),
                addr: u.addr.ip(),
                origin: flag("--resolve"),
            })
            .collect(),
        upstream_ca: vec![UpstreamCa {
            file: test_ca().pem_path.clone(),
            origin: flag("--upstream-ca"),
        }],
        secrets: secret
            .map(|(name, host)| SecretRule {
                name: name.into(),
                hosts: vec![DomainPattern::parse(host).unwrap()],
                origin: flag("--secret"),
                value_from: None,
            })
            .into_iter()
            .collect(),
        ..NetworkRules::default()
    }
}

/// A broker prepared for `rules` as a run would be (its CA, bundle and audit log
/// in `dir`), with the secrets' values from `values`; the router, and the
/// placeholder of each secret.
fn broker(
    dir: &Path,
    rules: &NetworkRules,
    values: &[(&str, &str)],
) -> (Router, Dirs, Vec<(String, String)>) {
    let dirs = Dirs {
        data: dir.join("data"),
        cache: dir.join("cache"),
        state: dir.join("state"),
    };
    let egress = cordon_net::prepare(rules, &dirs, |name| {
        values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    })
    .expect("prepare the broker");
    let placeholders = egress
        .sandbox
        .env
        .iter()
        .filter(|(name, _)| values.iter().any(|(n, _)| n == name))
        .cloned()
        .collect();
    let router = Router::new(egress.config, egress.sandbox.ports);
    (router, dirs, placeholders)
}

/// A stream to the broker's stream ingress, opened with `opening`.
async fn open(router: &Router, opening: Opening) -> UnixStream {
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let router = router.clone();
    tokio::spawn(async move { stream::serve(&router, theirs).await });
    ours.write_all(&opening.encode().unwrap()).await.unwrap();
    ours
}

fn tcp_to(name: &str, port: u16) -> Opening {
    Opening::Connect(Destination::Name {
        name: name.into(),
        port,
    })
}

/// A TLS client trusting the certificates in `pem`.
fn tls_client(pem: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One `GET path` over TLS to `name` on `stream`, with `headers`; the whole
/// response (status line, headers, body), or why there was none.
async fn https_get(
    stream: UnixStream,
    trust: &[u8],
    name: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<String, String> {
    let exchange = async {
        let server = ServerName::try_from(name.to_string()).unwrap();
        let mut tls = tls_client(trust)
            .connect(server, stream)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {name}:{port}\r\nConnection: close\r\n");
        for (header, value) in headers {
            request.push_str(&format!("{header}: {value}\r\n"));
        }
        request.push_str("\r\n");
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        // A server that closes without close_notify still sent its response.
        let _ = tls.read_to_end(&mut response).await;
        Ok(String::from_utf8_lossy(&response).into_owned())
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .map_err(|_| "no answer in time".to_string())?
}

/// Whether the broker closed `stream` without a byte (a refusal).
async fn closed_without_a_byte(mut stream: UnixStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A DNS query for `name`'s A record.
fn dns_query(name: &str) -> Vec<u8> {
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

/// Asks the `dns` stream for `name`: its address, or `None` for NXDOMAIN.
async fn resolve(dns: &mut UnixStream, name: &str) -> Option<Ipv4Addr> {
    let query = dns_query(name);
    let mut frame = (query.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&query);
    dns.write_all(&frame).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(DEADLINE, dns.read_exact(&mut len))
        .await
        .expect("a DNS answer in time")
        .unwrap();
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    dns.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer[..2], [0x12, 0x34], "the answer to our query");
    let rcode = answer[3] & 0x0f;
    let answers = u16::from_be_bytes([answer[6], answer[7]]);
    match (rcode, answers) {
        (0, 1) => {
            let [.., a, b, c, d] = answer[..] else {
                unreachable!()
            };
            Some(Ipv4Addr::new(a, b, c, d))
        }
        (3, 0) => None,
        other => panic!("unexpected DNS answer {other:?}: {answer:?}"),
    }
}

fn hello(response: &str, name: &str) -> bool {
    response.starts_with("HTTP/1.1 200")
        && response.contains(&format!("hello from {name} over HTTP/1.1"))
}

/// Allowed TLS through the stream ingress reaches the upstream, passed through
/// untouched (the client verifies the upstream's own certificate), whichever way
/// the stream names it: by name, by the address the broker's DNS handed out, or
/// through the HTTP proxy's CONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ingress_carries_allowed_tls_by_name_address_and_proxy() {
    let web = Upstream::https("web.test");
    let dir = tempfile::tempdir().unwrap();
    let (router, _dirs, _) = broker(dir.path(), &rules(&[web.host_port()], &[&web], None), &[]);
    let trust = test_ca().pem().as_bytes().to_vec();
    let port = web.port();

    let by_name = open(&router, tcp_to("web.test", port)).await;
    let response = https_get(by_name, &trust, "web.test", port, "/", &[]).await;
    assert!(
        response.as_ref().is_ok_and(|r| hello(r, "web.test")),
        "tcp web.test:{port}: {response:?}\n{}",
        web.report()
    );

    let mut dns = open(&router, Opening::Dns).await;
    let addr = resolve(&mut dns, "web.test")
        .await
        .expect("the broker's DNS answers an allowed name");
    let by_address = open(
        &router,
        Opening::Connect(Destination::Address(SocketAddr::new(
            IpAddr::V4(addr),
            port,
        ))),
    )
    .await;
    let response = https_get(by_address, &trust, "web.test", port, "/", &[]).await;
    assert!(
        response.as_ref().is_ok_and(|r| hello(r, "web.test")),
        "tcp {addr}:{port}: {response:?}\n{}",
        web.report()
    );

    let mut proxy = open(&router, Opening::HttpProxy).await;
    proxy
        .write_all(
            format!("CONNECT web.test:{port} HTTP/1.1\r\nHost: web.test:{port}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
    let mut reply = vec![0u8; established.len()];
    tokio::time::timeout(DEADLINE, proxy.read_exact(&mut reply))
        .await
        .expect("a CONNECT reply in time")
        .unwrap();
    assert_eq!(reply, established);
    let response = https_get(proxy, &trust, "web.test", port, "/", &[]).await;
    assert!(
        response.as_ref().is_ok_and(|r| hello(r, "web.test")),
        "CONNECT web.test:{port}: {response:?}\n{}",
        web.report()
    );
    assert_eq!(web.requests().len(), 3, "{}", web.report());
}

/// Every way a stream can name a destination that is not allowed reaches
/// nothing: a name not in the allowlist (by name, through the proxy, or by DNS
/// and then an address), an allowed name on a port not allowed, literal addresses
/// (loopback without `--allow-local`, the upstream's own). The upstream's record
/// shows no connection; the audit log names each refusal. The positive control:
/// the same first stream, through a broker that allows the name, reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ingress_refuses_what_is_not_allowed_and_reaches_nothing() {
    let web = Upstream::https("web.test");
    let denied = Upstream::https("denied.test");
    let dir = tempfile::tempdir().unwrap();
    let upstreams = [&web, &denied];
    let (router, dirs, _) = broker(
        dir.path(),
        &rules(&[web.host_port()], &upstreams, None),
        &[],
    );
    let port = denied.port();

    let attempts = [
        tcp_to("denied.test", port),
        tcp_to("DENIED.test.", port),
        // web.test resolves to the same loopback address: on this port it would
        // reach the denied upstream.
        tcp_to("web.test", port),
        Opening::Connect(Destination::Address(denied.addr)),
        Opening::Connect(Destination::Address(SocketAddr::new(
            Ipv4Addr::LOCALHOST.into(),
            port,
        ))),
        Opening::Connect(Destination::Address(SocketAddr::new(
            Ipv4Addr::new(198, 18, 200, 1).into(),
            port,
        ))),
        Opening::Connect(Destination::Address(
            format!("[::1]:{port}").parse().unwrap(),
        )),
        tcp_to("127.0.0.1", port),
        tcp_to("not a name", port),
    ];
    for opening in attempts {
        let stream = open(&router, opening.clone()).await;
        assert!(
            closed_without_a_byte(stream).await,
            "{opening:?} was not refused"
        );
    }

    let mut proxy = open(&router, Opening::HttpProxy).await;
    proxy
        .write_all(format!("CONNECT denied.test:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(DEADLINE, proxy.read_to_string(&mut reply))
        .await
        .expect("a CONNECT reply in time")
        .unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 403"),
        "CONNECT denied.test: {reply}"
    );

    let mut dns = open(&router, Opening::Dns).await;
    assert_eq!(
        resolve(&mut dns, "denied.test").await,
        None,
        "DNS for denied.test"
    );

    // A stream whose header is garbage is closed.
    let (mut garbage, theirs) = UnixStream::pair().unwrap();
    let served = {
        let router = router.clone();
        tokio::spawn(async move { stream::serve(&router, theirs).await })
    };
    garbage
        .write_all(b"\xff\xffnot a header at all")
        .await
        .unwrap();
    assert!(closed_without_a_byte(garbage).await, "a malformed header");
    served.await.unwrap();

    denied.assert_untouched("a destination the stream ingress must refuse");
    let audit = std::fs::read_to_string(dirs.audit_log()).unwrap();
    for needle in [
        "\"host\":\"denied.test\"",
        "not in the allowlist",
        "this port is not allowed for the name",
        "a literal address, not a name the sandbox looked up",
        "no --allow-local service on this port",
    ] {
        assert!(
            audit.contains(needle),
            "the audit log lacks {needle}:\n{audit}"
        );
    }

    // Positive control: allowed, the same stream reaches the upstream.
    let (allowing, _, _) = broker(
        &dir.path().join("allowing"),
        &rules(&[denied.host_port()], &upstreams, None),
        &[],
    );
    let stream = open(&allowing, tcp_to("denied.test", port)).await;
    let trust = test_ca().pem().as_bytes().to_vec();
    let response = https_get(stream, &trust, "denied.test", port, "/", &[]).await;
    assert!(
        response.as_ref().is_ok_and(|r| hello(r, "denied.test")),
        "the positive control: {response:?}\n{}",
        denied.report()
    );
}

/// A secret over the stream ingress: the broker ends the client's TLS with
/// cordon's CA, swaps the secret's value in for its placeholder on the way to the
/// secret's host, and scrubs the value from what comes back (the upstream echoes
/// every header it got). The positive control is the upstream's own record: the
/// value did reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ingress_swaps_a_secret_in_over_terminated_tls() {
    let web = Upstream::echo_https("web.test");
    let dir = tempfile::tempdir().unwrap();
    let value = format!("stream-secret-{}", common::random_hex(8));
    let rules = rules(
        &[web.host_port()],
        &[&web],
        Some(("STREAM_TOKEN", "web.test")),
    );
    let (router, dirs, placeholders) = broker(dir.path(), &rules, &[("STREAM_TOKEN", &value)]);
    let placeholder = &placeholders.first().expect("the secret's placeholder").1;
    assert_ne!(placeholder, &value);
    // The CA the broker made for the secret, which the sandbox's bundle trusts.
    let cordon_ca = cordon_net::ca::CertificateAuthority::load_or_create(&dirs.data.join("ca"))
        .expect("cordon's CA")
        .cert_pem()
        .as_bytes()
        .to_vec();
    let port = web.port();

    let stream = open(&router, tcp_to("web.test", port)).await;
    let authorization = format!("Bearer {placeholder}");
    let response = https_get(
        stream,
        &cordon_ca,
        "web.test",
        port,
        "/echo",
        &[("Authorization", &authorization)],
    )
    .await
    .expect("a response through the terminating broker");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        web.saw_header("authorization", &format!("Bearer {value}")),
        "the upstream never got the secret's value:\n{}",
        web.report()
    );
    assert!(
        !response.contains(&value),
        "the secret's value came back to the client:\n{response}"
    );
}

/// The host control endpoint (cordon-session's `control`, the broker one handler
/// behind it) serving one end of a socket pair on a thread of its own, as in a
/// session; the other end, which a session's agent holds inside the sandbox, and
/// a reader of its answers (each read gives up after 10 s: a hung endpoint is a
/// failure, not a hung suite).
fn control_endpoint(broker: Option<Router>) -> (StdStream, BufReader<StdStream>) {
    let (ours, theirs) = StdStream::pair().unwrap();
    let net = Sourced::new(NetMode::Allowlist, Origin::Default);
    let endpoint = Endpoint::new(&net, BackendKind::Os, &Layers(vec![]), broker);
    std::thread::spawn(move || endpoint.serve(theirs));
    ours.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let answers = BufReader::new(ours.try_clone().unwrap());
    (ours, answers)
}

/// The next answer, as JSON.
fn answer(answers: &mut BufReader<StdStream>) -> serde_json::Value {
    let mut line = String::new();
    answers
        .read_line(&mut line)
        .expect("no answer: the endpoint is stuck or gone");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// The session's control stream (`allowDomain`, `status`) is held by the agent
/// inside the sandbox: a request line longer than the host control endpoint
/// reads (4096 bytes) is answered at once, before its end, and the rest skipped,
/// so the other end cannot make the host buffer a line without bound. The
/// positive control: a request after it is answered as usual.
#[test]
fn the_control_stream_answers_an_overlong_request_before_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _dirs, _) = broker(dir.path(), &rules(&[], &[], None), &[]);
    let (mut ours, mut answers) = control_endpoint(Some(router));
    // Far more than the limit, and no newline yet.
    ours.write_all(&vec![b'x'; 64 * 1024]).unwrap();
    let reply = answer(&mut answers);
    assert!(
        reply["error"]
            .as_str()
            .unwrap_or("")
            .contains("request too long"),
        "{reply}"
    );
    // The line goes on, ends, and the next request is answered.
    ours.write_all(&vec![b'y'; 64 * 1024]).unwrap();
    ours.write_all(b"\n{\"status\": true}\n").unwrap();
    let status = answer(&mut answers);
    assert_eq!(status["status"]["net"], "allowlist", "{status}");
}

/// Whatever the other end sends, every line gets one answer, garbage an error
/// that says what is wrong, and the endpoint goes on: lines that are not JSON
/// (binary, invalid UTF-8, cut short, nested past serde's depth), JSON that is no
/// request, requests the broker refuses. The positive control: `allowDomain`
/// after all of them is done, and `status` lists the rule with who asked.
#[test]
fn the_control_endpoint_answers_garbage_with_an_error_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _dirs, _) = broker(dir.path(), &rules(&[], &[], None), &[]);
    let (mut ours, mut answers) = control_endpoint(Some(router));
    let deep = "[".repeat(4000);
    let garbage: Vec<(&[u8], &str)> = vec![
        (b"", "not JSON"),
        (b"\r", "not JSON"),
        (b"not json", "not JSON"),
        (b"\xff\xfe\x00\x01\x1b[2J", "not JSON"),
        (b"{\"allow\": \"\xff.test\"}", "not JSON"),
        (b"{\"allow\": \"web.test\"", "not JSON"),
        (deep.as_bytes(), "not JSON"),
        (b"1e999999", "not JSON"),
        (b"[1, 2, 3]", "unknown request"),
        (b"{}", "unknown request"),
        (b"{\"allow\": 5}", "unknown request"),
        (b"{\"allow\": null}", "unknown request"),
        (b"{\"status\": false}", "unknown request"),
        (b"{\"exec\": \"touch /tmp/x\"}", "unknown request"),
        (b"{\"allow\": \"a b.test\"}", ""),
        (b"{\"allow\": \"https://web.test/path\"}", ""),
        (b"{\"allow\": \"web.test:1\"}", "no listener on port 1"),
    ];
    for (line, said) in &garbage {
        ours.write_all(line).unwrap();
        ours.write_all(b"\n").unwrap();
        let reply = answer(&mut answers);
        let error = reply["error"].as_str().unwrap_or("");
        assert!(
            !error.is_empty() && error.contains(said),
            "{:?}: {reply}",
            String::from_utf8_lossy(line)
        );
    }
    ours.write_all(b"{\"allow\": \"web.test\", \"origin\": \"the test\"}\n")
        .unwrap();
    let allowed = answer(&mut answers);
    assert_eq!(allowed, serde_json::json!({"allowed": "web.test"}));
    ours.write_all(b"{\"status\": true}\n").unwrap();
    let status = answer(&mut answers);
    assert_eq!(
        status["status"]["allowDomains"],
        serde_json::json!([{"domain": "web.test", "preset": null,
                            "origin": "this session: allowDomain, the test"}]),
        "{status}"
    );
}
