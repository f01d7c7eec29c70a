//! The HTTP proxy inside the sandbox (`HTTP_PROXY`, `HTTPS_PROXY`), for programs
//! that prefer a proxy: `CONNECT host:port` opens a tunnel that is then handled
//! exactly like a transparent connection to that name; a request in absolute form
//! (`GET http://host/...`) is plain HTTP to that host. Any ingress may hand a
//! stream to it (the namespace's proxy listener, a stream opened with
//! `http-proxy`).

use crate::audit::Event;
use crate::router::{Connection, Router};
use crate::sniff::{self, Sniff};
use cordon_policy::normalize_name;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one connection to the HTTP proxy: reads its request head, refuses it
/// (403, with the reason) or hands the connection to the router for the name the
/// head names.
pub async fn serve<S: Connection>(router: &Router, mut stream: S) {
    let state = router.state();
    let Some((buf, head)) = read_head(&mut stream).await else {
        return;
    };
    let connect = head.method.eq_ignore_ascii_case("CONNECT");
    let Some((host, port)) = head.host() else {
        let _ = stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
            .await;
        return;
    };
    let port = port.unwrap_or(if connect { 443 } else { 80 });
    let Some(name) = normalize_name(&host) else {
        state.refuse(Event::Connect, &host, Some(port), "not a name");
        let _ = stream
            .write_all(b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n")
            .await;
        return;
    };
    if !matches!(
        state.rules().verdict(&name, port),
        cordon_policy::Verdict::Allowed(_)
    ) {
        let reason = crate::state::verdict_reason(&state.rules(), &name, Some(port));
        state.refuse(Event::Connect, &name, Some(port), &reason);
        let body = format!("cordon: refused {name}:{port}: {reason}\n");
        let reply = format!(
            "HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
        return;
    }
    if connect {
        if stream
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        let rest = buf[head.len..].to_vec();
        router.named(stream, name, port, rest).await;
    } else {
        router.named(stream, name, port, buf).await;
    }
}

async fn read_head<S: Connection>(stream: &mut S) -> Option<(Vec<u8>, sniff::http::RequestHead)> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
    loop {
        let mut chunk = [0u8; 4096];
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return None,
        };
        buf.extend_from_slice(&chunk[..n]);
        match sniff::http::request_head(&buf) {
            Sniff::NeedMore => continue,
            Sniff::Done(head) => return Some((buf, head)),
            Sniff::Invalid(_) => {
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                    .await;
                return None;
            }
        }
    }
}
