//! The sandbox's end of the egress broker: sockets made inside the sandbox's
//! network namespace and handed to the broker on the host.
//!
//! Rather than a relay inside the sandbox forwarding each connection over a
//! channel, the network helper (see `netns.rs`) opens the DNS socket and the TCP
//! listeners in the new namespace and sends the descriptors to the host over a
//! unix socket pair. The broker then accepts connections on them directly: a
//! socket keeps the namespace it was made in, whoever holds it. Nothing runs inside
//! for the network, and each connection costs no extra hop.
//!
//! The namespace's loopback also carries [`SANDBOX_NET`], a local route for the
//! whole synthetic range the broker's DNS stub hands out, so a connection to any of
//! those addresses lands on the listeners, whose local address tells the broker
//! which name was meant.

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// The sandbox's own address and the synthetic range around it (198.18.0.0/15,
/// reserved for benchmarking, so no real host is hidden by it).
pub const SANDBOX_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 0, 1), 15);

/// Where the DNS stub listens inside.
pub const DNS_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 53);

/// What the broker needs opened inside the sandbox's network namespace.
#[derive(Debug)]
pub struct EndpointRequest {
    /// TCP ports to listen on, for the synthetic addresses.
    pub ports: Vec<u16>,
    /// Those of `ports` that also take connections to 127.0.0.1 (`--allow-local`).
    pub local_ports: Vec<u16>,
    /// A port on the sandbox's 127.0.0.1 for programs that want an HTTP proxy.
    pub proxy_port: Option<u16>,
    /// The sandbox's end of the channel made by [`endpoint_channel`].
    pub channel: OwnedFd,
}

/// A connected pair: the first end stays on the host, the second goes into the
/// sandbox (in an [`EndpointRequest`]).
pub fn endpoint_channel() -> io::Result<(OwnedFd, OwnedFd)> {
    let (host, sandbox) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    Ok((host, sandbox))
}

const TAG_DNS: u8 = b'D';
const TAG_LISTENER: u8 = b'L';
const TAG_PROXY: u8 = b'P';
/// The most descriptors one run sends: a bound on the ports a policy can open.
const MAX_ENDPOINTS: usize = 64;

/// The broker's sockets, open in a network namespace whose loopback carries
/// [`SANDBOX_NET`]: the DNS socket on [`DNS_ADDR`], a (non-blocking) listener
/// on `0.0.0.0:port` for each port, taking only connections to the synthetic
/// addresses (and to 127.0.0.1 for an `--allow-local` port), and the HTTP
/// proxy's on `127.0.0.1:port`.
#[derive(Debug)]
pub struct Endpoints {
    pub dns: UdpSocket,
    pub listeners: Vec<(u16, TcpListener)>,
    pub proxy: Option<TcpListener>,
}

/// In the current network namespace, as its owner: gives loopback the synthetic
/// range and opens the broker's sockets for `ports` (those of `local_ports` also
/// on 127.0.0.1) and the proxy's `proxy_port`. `proc`, a `/proc` of this
/// namespace, makes a dropped connection fail fast. The OS backend sends them to
/// the host; the VM backend's guest agent relays their connections itself.
pub fn open_endpoints(
    ports: &[u16],
    local_ports: &[u16],
    proxy_port: Option<u16>,
    proc: Option<&OwnedFd>,
) -> io::Result<Endpoints> {
    add_sandbox_address()?;
    if let Some(proc) = proc {
        fail_dropped_connections_fast(proc);
    }
    let dns = UdpSocket::bind(DNS_ADDR)?;
    let mut listeners = Vec::new();
    for &port in ports {
        let listener = listen(Ipv4Addr::UNSPECIFIED, port)?;
        only_from_names(&listener, local_ports.contains(&port))?;
        listeners.push((port, listener));
    }
    let proxy = proxy_port
        .map(|port| listen(Ipv4Addr::LOCALHOST, port))
        .transpose()?;
    Ok(Endpoints {
        dns,
        listeners,
        proxy,
    })
}

/// In the new network namespace, as its owner: opens the sockets `request` asks
/// for ([`open_endpoints`]) and sends them over its channel.
pub(crate) fn open_and_send(request: &EndpointRequest, proc: Option<&OwnedFd>) -> io::Result<()> {
    let endpoints = open_endpoints(
        &request.ports,
        &request.local_ports,
        request.proxy_port,
        proc,
    )?;
    let mut tags = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    fds.push(endpoints.dns.into());
    tags.push([TAG_DNS, 0, 0]);
    for (port, listener) in endpoints.listeners {
        fds.push(listener.into());
        let [a, b] = port.to_le_bytes();
        tags.push([TAG_LISTENER, a, b]);
    }
    if let (Some(port), Some(listener)) = (request.proxy_port, endpoints.proxy) {
        fds.push(listener.into());
        let [a, b] = port.to_le_bytes();
        tags.push([TAG_PROXY, a, b]);
    }
    if fds.len() > MAX_ENDPOINTS {
        return Err(io::Error::other("too many ports to listen on"));
    }
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_ENDPOINTS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(io::Error::other("control buffer too small"));
    }
    let data = tags.concat();
    rustix::net::sendmsg(
        &request.channel,
        &[IoSlice::new(&data)],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

/// A non-blocking listener on `addr:port` with a deep accept queue: std's bind
/// listens with a backlog of 128, which a burst of connections from the sandbox
/// overflows (a dropped SYN costs the client a second).
fn listen(addr: Ipv4Addr, port: u16) -> io::Result<TcpListener> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let context = |e: rustix::io::Errno| {
        let e = io::Error::from(e);
        io::Error::new(
            e.kind(),
            format!("cannot listen on {addr}:{port} in the sandbox: {e}"),
        )
    };
    let socket = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(context)?;
    rustix::net::sockopt::set_socket_reuseaddr(&socket, true).map_err(context)?;
    rustix::net::bind(&socket, &SocketAddrV4::new(addr, port)).map_err(context)?;
    rustix::net::listen(&socket, LISTEN_BACKLOG).map_err(context)?;
    Ok(TcpListener::from(socket))
}

/// The accept queue of each listener (the kernel caps it at net.core.somaxconn,
/// 4096 by default in a new network namespace).
const LISTEN_BACKLOG: i32 = 4096;

/// A connection the listeners' filter drops would otherwise retry its SYN for two
/// minutes; nothing in this namespace is further than its loopback, so one retry
/// is plenty (a refused connect then fails after about 3 s). The setting is the
/// namespace's own, writable by its owner. `proc` is a detached copy of /proc
/// (see [`detached_proc`]); best effort.
fn fail_dropped_connections_fast(proc: &OwnedFd) {
    if let Ok(file) = rustix::fs::openat(
        proc,
        "sys/net/ipv4/tcp_syn_retries",
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        let _ = rustix::io::write(&file, b"1");
    }
}

/// A private copy of the /proc mount, taken before the view makes the tree
/// read-only (in parallel with the network helper), so the helper can still set
/// its namespace's sysctls through it. Sysctls under `net/` are those of the
/// network namespace of whoever opens them.
pub(crate) fn detached_proc() -> io::Result<OwnedFd> {
    Ok(rustix::mount::open_tree(
        rustix::fs::CWD,
        "/proc",
        rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
            | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?)
}

/// Makes a wildcard listener take only connections to the synthetic addresses
/// (and to 127.0.0.1 when `loopback`): a socket filter drops every other SYN, so
/// a connection to a literal address, 127.0.0.1:443 say, is never established.
fn only_from_names(listener: &TcpListener, loopback: bool) -> io::Result<()> {
    // For TCP the filter sees the packet from its transport header; SKF_NET_OFF
    // reaches back to the IP header, whose destination address is at offset 16.
    const SKF_NET_OFF: i32 = -0x100000;
    let (net, prefix) = SANDBOX_NET;
    let mask = u32::MAX << (32 - u32::from(prefix));
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let load_destination = op(
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        0,
        0,
        (SKF_NET_OFF + 16) as u32,
    );
    let accept = op(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX);
    let drop = op(libc::BPF_RET | libc::BPF_K, 0, 0, 0);
    let loopback_address = if loopback {
        u32::from(Ipv4Addr::LOCALHOST)
    } else {
        0
    };
    let program = [
        load_destination,
        // 127.0.0.1 (only if `loopback`; 0.0.0.0 never arrives) → accept.
        op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            3,
            0,
            loopback_address,
        ),
        op(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, 0, 0, mask),
        // In the synthetic range → accept, else drop.
        op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            1,
            0,
            u32::from(net) & mask,
        ),
        drop,
        accept,
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: setsockopt reads `size_of::<sock_fprog>()` bytes from `&fprog`, a
    // live local, and the kernel copies the `program.len()` instructions it
    // points at (`program` outlives the call; the `*mut` is only the C type,
    // nothing is written through it). The listener is borrowed, so open.
    // (rustix has no SO_ATTACH_FILTER.)
    let ret = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(listener),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// On the host: waits for the sandbox's sockets, all living in its network
/// namespace: the DNS socket bound to [`DNS_ADDR`], one listener per requested
/// port bound to `0.0.0.0:port`, the HTTP proxy's bound to `127.0.0.1:proxy_port`.
/// End of file (the helper died before sending) is an error.
pub fn receive_endpoints(channel: &OwnedFd) -> io::Result<cordon_backend::Ingress> {
    let mut data = [0u8; 3 * MAX_ENDPOINTS];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_ENDPOINTS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        match rustix::net::recvmsg(
            channel,
            &mut [IoSliceMut::new(&mut data)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if received.bytes == 0 {
        return Err(io::Error::other(
            "the sandbox's network helper ended before opening the broker's sockets",
        ));
    }
    let tags = data[..received.bytes].chunks_exact(3);
    if tags.len() != fds.len() {
        return Err(io::Error::other(
            "the sandbox sent a malformed list of sockets",
        ));
    }
    let mut dns = None;
    let mut listeners = Vec::new();
    let mut proxy = None;
    for (tag, fd) in tags.zip(fds) {
        let port = u16::from_le_bytes([tag[1], tag[2]]);
        match tag[0] {
            TAG_DNS => dns = Some(UdpSocket::from(fd)),
            TAG_LISTENER => listeners.push((port, TcpListener::from(fd))),
            TAG_PROXY => proxy = Some(TcpListener::from(fd)),
            _ => return Err(io::Error::other("the sandbox sent an unknown socket")),
        }
    }
    let dns = dns.ok_or_else(|| io::Error::other("the sandbox sent no DNS socket"))?;
    dns.set_nonblocking(true)?;
    Ok(cordon_backend::Ingress::Sockets {
        dns,
        listeners,
        proxy,
    })
}

/// Adds [`SANDBOX_NET`] to `lo`. On a loopback device the prefix route of an
/// address is a *local* route, so every address in the range is the sandbox's own
/// and the wildcard listeners accept connections to any of them.
fn add_sandbox_address() -> io::Result<()> {
    let (addr, prefix) = SANDBOX_NET;
    let mask = u32::MAX << (32 - u32::from(prefix));
    let sock = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )?;
    let set = |request: libc::c_ulong, value: Ipv4Addr| -> io::Result<()> {
        // SAFETY: all-zero is a valid ifreq (integers, byte arrays, unions of
        // them). `ifru_addr` sits at offset 16 of a union aligned for its `ifmap`
        // member (unsigned longs), so it is aligned for the sockaddr_in written
        // through it, which fits in its 16 bytes. SIOCSIFADDR/SIOCSIFNETMASK read
        // that one live ifreq and write nothing back; `sock` is owned, so open.
        // (rustix wraps no interface ioctls.)
        unsafe {
            let mut req: libc::ifreq = std::mem::zeroed();
            for (dst, src) in req.ifr_name.iter_mut().zip(b"lo:cordon\0") {
                *dst = *src as libc::c_char;
            }
            let sin = &mut req.ifr_ifru.ifru_addr as *mut libc::sockaddr as *mut libc::sockaddr_in;
            (*sin).sin_family = libc::AF_INET as libc::sa_family_t;
            (*sin).sin_addr.s_addr = u32::from(value).to_be();
            if libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&sock), request, &req) == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    set(libc::SIOCSIFADDR, addr)?;
    set(libc::SIOCSIFNETMASK, Ipv4Addr::from(mask))
}
