//! The namespace ingress: sockets a backend made inside the sandbox's own network
//! namespace (a DNS socket on its 127.0.0.1:53, TCP listeners on the ports the
//! policy needs, the HTTP proxy listener) and handed to the broker on the host. A
//! socket keeps the namespace it was made in, whoever holds it, so the broker
//! accepts the sandbox's connections directly. A connection's local address is
//! where the sandbox connected to, its destination.
//!
//! The accepted sockets are TCP, like the broker's upstream connections: what the
//! router relays untouched then moves with splice(2).

use super::http_proxy;
use crate::error::NetError;
use crate::router::{Destination, Router};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// The sockets the broker serves; they live in the sandbox's network namespace.
pub struct Sockets {
    pub dns: std::net::UdpSocket,
    pub listeners: Vec<(u16, std::net::TcpListener)>,
    pub proxy: Option<std::net::TcpListener>,
}

/// Runs `router`'s broker on a runtime of its own, serving `sockets`, until the
/// process exits. Returns only if the runtime cannot be made or a socket cannot
/// be registered with it.
pub fn serve(router: Router, sockets: Sockets) -> Result<(), NetError> {
    runtime()?.block_on(async move {
        let dns = UdpSocket::from_std(sockets.dns).map_err(NetError::Runtime)?;
        tokio::spawn(answer_dns(router.clone(), dns));
        for (_, listener) in sockets.listeners {
            let listener = TcpListener::from_std(listener).map_err(NetError::Runtime)?;
            tokio::spawn(accept(router.clone(), listener, Listener::Transparent));
        }
        if let Some(listener) = sockets.proxy {
            let listener = TcpListener::from_std(listener).map_err(NetError::Runtime)?;
            tokio::spawn(accept(router.clone(), listener, Listener::Proxy));
        }
        std::future::pending::<Result<(), NetError>>().await
    })
}

/// The broker's runtime (two workers), with the descriptor limit raised.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, NetError> {
    raise_descriptor_limit();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cordon-broker")
        .enable_all()
        .build()
        .map_err(NetError::Runtime)
}

/// Whether a broker that was started got to serve (see [`crate::wiring`]).
#[derive(Clone, Default)]
pub struct BrokerStatus(Arc<Mutex<Option<String>>>);

impl BrokerStatus {
    /// Records why the broker never served.
    pub(crate) fn failed(&self, why: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// Why the broker of a sandbox that did run never got its sockets (the
    /// sandbox then had no network), once. Ask only once the sandbox is known to
    /// have started: one that failed to start never sends them, and its own error
    /// says why.
    pub fn startup_failure(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Each relayed connection holds two descriptors; the usual soft limit of 1024
/// would cap the sandbox at about 500 connections. The hard limit is ours to take
/// (this runs after the sandbox was cloned, so the sandbox keeps its own limit).
fn raise_descriptor_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(max)) = (limit.current, limit.maximum) {
        if current < max {
            limit.current = Some(max);
            let _ = setrlimit(Resource::Nofile, limit);
        }
    }
}

async fn answer_dns(router: Router, socket: UdpSocket) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(reply) = router.dns(&buf[..n]) {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

/// What a listener takes connections for.
#[derive(Clone, Copy)]
enum Listener {
    /// Connections to the sandbox's addresses: each one's local address.
    Transparent,
    /// The HTTP proxy listener.
    Proxy,
}

async fn accept(router: Router, listener: TcpListener, kind: Listener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let router = router.clone();
                tokio::spawn(async move {
                    match kind {
                        Listener::Transparent => transparent(&router, stream).await,
                        Listener::Proxy => http_proxy::serve(&router, stream).await,
                    }
                });
            }
            // Out of descriptors, most likely: wait for some to close.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// A connection to one of the sandbox's addresses: its local address names the
/// destination.
async fn transparent(router: &Router, stream: TcpStream) {
    if let Ok(local) = stream.local_addr() {
        router.route(stream, Destination::Address(local)).await;
    }
}
