//! The guest's network through the host's egress broker, both halves.
//!
//! The guest has no network device: only its loopback, which the agent gives
//! the broker's synthetic range (a local route, as the OS backend gives its
//! network namespace), the listeners for the policy's ports, the HTTP proxy's
//! and the DNS socket on 127.0.0.1:53 where the view's `/etc/resolv.conf`
//! points (the same sockets the OS backend opens: `cordon_sandbox::open_endpoints`).
//! Each connection they take, and the DNS queries, become a stream over the
//! channel ([`crate::mux`]) opened with a header of the broker's stream ingress
//! (`cordon_net::ingress::stream`): `tcp ADDRESS:PORT` (the address the program
//! connected to), `http-proxy` or `dns`. On the host each stream is one end of a
//! socket pair whose other end goes to the broker ([`HostNet`]), which decides
//! everything as for the OS backend: allowlist, secrets, audit are one code path.

use crate::mux::{Local, Mux, MuxError, Role, Sink};
use crate::protocol::{Frame, Message};
use cordon_net::Destination;
use cordon_net::ingress::stream::Opening;
use std::io::{self, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

/// What the guest's network listens on (see [`Message::Network`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkSpec {
    pub ports: Vec<u16>,
    pub local_ports: Vec<u16>,
    pub proxy_port: Option<u16>,
}

/// The host's half: the guest's network streams, each handed to the broker as
/// one end of a socket pair, and the command's control stream, relayed to the
/// control endpoint's end. A stream of a kind the host did not ask for is
/// refused.
pub struct HostNet {
    mux: Arc<Mux>,
    broker: Option<Sender<UnixStream>>,
    control: std::sync::Mutex<Option<UnixStream>>,
}

impl HostNet {
    /// Streams whose frames go out through `sink`; none is taken yet.
    pub fn new(sink: Arc<dyn Sink>) -> HostNet {
        HostNet {
            mux: Mux::new(sink, Role::Host),
            broker: None,
            control: std::sync::Mutex::default(),
        }
    }

    /// The guest's network streams go to `broker` from now on.
    pub fn set_broker(&mut self, broker: Sender<UnixStream>) {
        self.broker = Some(broker);
    }

    /// The next command's control stream goes to `endpoint` (once).
    pub fn set_control(&mut self, endpoint: UnixStream) {
        *self.control.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(endpoint);
    }

    /// How many of the guest's streams are open.
    pub fn open_streams(&self) -> usize {
        self.mux.open_streams()
    }

    /// Takes a frame of the guest's network; any other frame is given back.
    pub fn handle(&self, frame: Frame) -> Result<Option<Frame>, MuxError> {
        match frame {
            Frame::Message(Message::StreamOpen { id, control: true }) => {
                let endpoint = (self.control.lock().unwrap_or_else(|e| e.into_inner()))
                    .take()
                    .ok_or(MuxError::NotAsked(id))?;
                let local = Local::new(endpoint).map_err(|_| MuxError::Closed)?;
                self.mux.open(id, local)?;
            }
            Frame::Message(Message::StreamOpen { id, control: false }) => {
                let broker = self.broker.as_ref().ok_or(MuxError::NotAsked(id))?;
                let (ours, theirs) = UnixStream::pair().map_err(|_| MuxError::Closed)?;
                self.mux
                    .open(id, Local::new(ours).map_err(|_| MuxError::Closed)?)?;
                // A broker that is gone closes the pair: the stream just ends.
                let _ = broker.send(theirs);
            }
            Frame::Message(Message::StreamAck { id }) => self.mux.ack(id)?,
            Frame::Stream { id, data } => self.mux.chunk(id, data)?,
            other => return Ok(Some(other)),
        }
        Ok(None)
    }
}

impl Drop for HostNet {
    fn drop(&mut self) {
        self.mux.close();
    }
}

/// How long the guest's DNS relay waits for the broker's answer.
const DNS_WAIT: Duration = Duration::from_secs(5);

/// The guest's half, in the agent: the broker's sockets opened on the guest's
/// loopback and each connection they take relayed as a stream through `mux`.
pub(crate) fn start_guest(mux: &Arc<Mux>, spec: &NetworkSpec) -> io::Result<()> {
    let proc = rustix::fs::open(
        "/proc",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok();
    let endpoints = cordon_sandbox::open_endpoints(
        &spec.ports,
        &spec.local_ports,
        spec.proxy_port,
        proc.as_ref(),
    )?;
    for (_, listener) in endpoints.listeners {
        listener.set_nonblocking(false)?;
        let mux = mux.clone();
        std::thread::spawn(move || accept(&mux, &listener, false));
    }
    if let Some(listener) = endpoints.proxy {
        listener.set_nonblocking(false)?;
        let mux = mux.clone();
        std::thread::spawn(move || accept(&mux, &listener, true));
    }
    let mux = mux.clone();
    std::thread::spawn(move || answer_dns(&mux, &endpoints.dns));
    Ok(())
}

/// Relays each connection `listener` takes as a stream: to the HTTP proxy, or
/// to where it connected (its local address). Beyond the streams the channel
/// may carry at once, a connection is closed.
fn accept(mux: &Arc<Mux>, listener: &TcpListener, proxy: bool) {
    loop {
        let Ok((stream, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let opening = match (proxy, stream.local_addr()) {
            (true, _) => Opening::HttpProxy,
            (false, Ok(to)) => Opening::Connect(Destination::Address(to)),
            (false, Err(_)) => continue,
        };
        let _ = stream.set_nodelay(true);
        if let (Ok(header), Ok(local)) = (opening.encode(), Local::new(stream)) {
            let _ = mux.open_next(local, header, false);
        }
    }
}

/// Answers the DNS queries sent to `socket`, each asked of the broker over one
/// `dns` stream (opened again if it fails), in order.
fn answer_dns(mux: &Arc<Mux>, socket: &UdpSocket) {
    let _ = socket.set_nonblocking(false);
    let mut stream: Option<UnixStream> = None;
    let mut buf = [0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if stream.is_none() {
            stream = dns_stream(mux).ok();
        }
        let Some(s) = stream.as_mut() else { continue };
        match ask(s, &buf[..n]) {
            Ok(answer) if !answer.is_empty() => {
                let _ = socket.send_to(&answer, peer);
            }
            Ok(_) => {}
            Err(_) => stream = None,
        }
    }
}

fn dns_stream(mux: &Arc<Mux>) -> io::Result<UnixStream> {
    let (ours, theirs) = UnixStream::pair()?;
    ours.set_read_timeout(Some(DNS_WAIT))?;
    let header = Opening::Dns.encode().map_err(io::Error::other)?;
    (mux.open_next(Local::new(theirs)?, header, false)).map_err(io::Error::other)?;
    Ok(ours)
}

/// One query over the `dns` stream (framed as DNS over TCP), its answer (empty:
/// nothing to answer).
fn ask(stream: &mut UnixStream, query: &[u8]) -> io::Result<Vec<u8>> {
    let len = u16::try_from(query.len()).map_err(io::Error::other)?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(query);
    stream.write_all(&frame)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer)?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn host() -> (HostNet, UnixStream) {
        let (ours, guest) = UnixStream::pair().unwrap();
        let sink: Arc<dyn Sink> = Arc::new(Mutex::new(ours));
        (HostNet::new(sink), guest)
    }

    fn open(id: u32, control: bool) -> Frame {
        Frame::Message(Message::StreamOpen { id, control })
    }

    /// Streams the host did not ask for are refused: a network stream without
    /// a network, a control stream without (or beyond) the one asked for.
    #[test]
    fn streams_not_asked_for_are_refused() {
        let (mut net, _guest) = host();
        assert_eq!(net.handle(open(1, false)), Err(MuxError::NotAsked(1)));
        assert_eq!(net.handle(open(2, true)), Err(MuxError::NotAsked(2)));
        let (endpoint, _far) = UnixStream::pair().unwrap();
        net.set_control(endpoint);
        assert_eq!(net.handle(open(3, true)), Ok(None));
        assert_eq!(net.handle(open(4, true)), Err(MuxError::NotAsked(4)));
        // Other frames are given back untouched.
        let exited = Frame::Message(Message::Exited {
            id: 1,
            status: crate::Status::Code(0),
            oom_kills: 0,
        });
        assert_eq!(net.handle(exited.clone()), Ok(Some(exited)));
    }

    /// A network stream reaches the broker with its bytes; a guest that sends
    /// beyond the window of a stream the broker does not read is refused; a
    /// chunk for a stream it never opened, or out of order, too.
    #[test]
    fn a_hostile_guests_streams_are_refused() {
        let (mut net, _guest) = host();
        let (tx, rx) = std::sync::mpsc::channel();
        net.set_broker(tx);
        assert_eq!(net.handle(open(1, false)), Ok(None));
        let mut broker = rx.recv().unwrap();
        let chunk = |id, data: &[u8]| Frame::Stream {
            id,
            data: data.to_vec(),
        };
        assert_eq!(net.handle(chunk(1, b"\0\x03dns")), Ok(None));
        let mut got = [0u8; 5];
        broker.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\0\x03dns");
        assert_eq!(net.handle(chunk(7, b"x")), Err(MuxError::NeverOpened(7)));
        assert_eq!(
            net.handle(open(1, false)),
            Err(MuxError::OutOfOrder { id: 1, last: 1 })
        );
        // The broker reads nothing more: a flood stops at the window.
        let big = vec![0u8; crate::protocol::DATA_CHUNK];
        let refused = (0..64).find_map(|_| net.handle(chunk(1, &big)).err());
        assert_eq!(refused, Some(MuxError::Overrun(1)));
        assert!(net.open_streams() <= 1);
    }
}
