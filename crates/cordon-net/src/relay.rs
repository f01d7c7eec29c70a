//! Relaying a connection untouched (TLS passed through, raw TCP). Between two TCP
//! sockets with splice(2): the bytes go socket → pipe → socket inside the kernel,
//! never copied into the broker; on a busy machine this is most of the difference
//! between a relay and a direct connection. Between anything else (a stream from
//! the stream ingress, an upgraded HTTP connection) by copying, with
//! [`RELAY_BUFFER`]-sized buffers.

use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
use std::io;
use std::os::fd::OwnedFd;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

/// Buffer size for relaying bodies and tunnels by copying.
pub(crate) const RELAY_BUFFER: usize = 64 * 1024;

/// Bytes moved per splice: the pipe's default capacity.
const CHUNK: usize = 64 * 1024;

/// Copies both ways until both directions are done, then shuts both write sides.
pub(crate) async fn copy<A, B>(mut a: A, mut b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let _ =
        tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, RELAY_BUFFER, RELAY_BUFFER).await;
    let _ = a.shutdown().await;
    let _ = b.shutdown().await;
}

/// Splices both ways until both directions are done; each end's write side is
/// shut down when the other end has no more to send.
pub(crate) async fn splice_tcp(a: &TcpStream, b: &TcpStream) -> io::Result<()> {
    let (up, down) = tokio::join!(one_way(a, b), one_way(b, a));
    up.and(down)
}

async fn one_way(from: &TcpStream, to: &TcpStream) -> io::Result<()> {
    let (pipe_read, pipe_write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    let result = pump(from, to, &pipe_read, &pipe_write).await;
    // The other side learns that this direction ended (or failed).
    let _ = rustix::net::shutdown(to, rustix::net::Shutdown::Write);
    result
}

async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    pipe_read: &OwnedFd,
    pipe_write: &OwnedFd,
) -> io::Result<()> {
    let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
    loop {
        let filled = from
            .async_io(Interest::READABLE, || {
                Ok(splice(from, None, pipe_write, None, CHUNK, flags)?)
            })
            .await?;
        if filled == 0 {
            return Ok(());
        }
        let mut left = filled;
        while left > 0 {
            left -= to
                .async_io(Interest::WRITABLE, || {
                    Ok(splice(pipe_read, None, to, None, left, flags)?)
                })
                .await?;
        }
    }
}
