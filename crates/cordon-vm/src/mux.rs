//! The guest's network streams over the channel, the same code at both ends.
//!
//! The guest's agent opens a stream for each connection a guest program makes
//! to one of the broker's addresses (and one for its DNS queries): it says
//! [`Message::StreamOpen`] with an id greater than every one before, then sends
//! the stream's bytes as [`KIND_STREAM`] chunks, the first of them a header of
//! the broker's stream ingress. The host gives each stream to the broker; the
//! broker's bytes come back the same way. Each side relays a stream between the
//! channel and a local socket (the guest program's TCP connection; on the host
//! one end of a socket pair whose other end the broker serves) with two threads:
//! one reads the socket and sends chunks, one writes the chunks it receives to
//! the socket and acknowledges each ([`Message::StreamAck`]).
//!
//! Flow control is a window per stream and direction: at most [`STREAM_WINDOW`]
//! chunks of at most [`DATA_CHUNK`] bytes unacknowledged, so a stream whose
//! reader never reads holds at most that much at the receiving end (and the
//! sender's socket fills, which stops its writer). A chunk beyond the window,
//! data for a stream that is not open or already ended, an acknowledgement that
//! was not owed, an id out of order and more than [`MAX_STREAMS`] streams at once
//! are [`MuxError`]s: the host then gives up the VM. An empty chunk ends its
//! direction (the receiver shuts down the socket's writing side); a stream is
//! gone once both directions ended.

use crate::protocol::{self, DATA_CHUNK, KIND_STREAM, Message};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// How many chunks of a stream one side may have sent that the other has not
/// acknowledged.
pub const STREAM_WINDOW: u32 = 4;

/// How many streams may be open at once.
pub const MAX_STREAMS: usize = 64;

/// Why a frame of the guest's network was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MuxError {
    #[error("stream {0} was never opened")]
    NeverOpened(u32),
    #[error("stream {id} was opened out of order (after {last})")]
    OutOfOrder { id: u32, last: u32 },
    #[error("more than {MAX_STREAMS} streams at once")]
    TooMany,
    #[error("stream {0} sent beyond its window")]
    Overrun(u32),
    #[error("data for stream {0} after its end")]
    AfterEnd(u32),
    #[error("an acknowledgement for stream {0} that was not owed")]
    NotOwed(u32),
    #[error("stream {0} was not asked for")]
    NotAsked(u32),
    #[error("the channel is closed")]
    Closed,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many chunks one side may still send before the other acknowledges one,
/// and whether the stream (or request) ended. Also the host's window for a
/// command's stdin.
pub struct Credit {
    state: Mutex<(u32, bool)>,
    changed: Condvar,
    window: u32,
}

impl Credit {
    /// A full window of `window` chunks.
    pub fn new(window: u32) -> Credit {
        Credit {
            state: Mutex::new((window, false)),
            changed: Condvar::new(),
            window,
        }
    }

    /// One chunk acknowledged; false if more were acknowledged than were sent.
    pub fn acknowledged(&self) -> bool {
        let mut state = lock(&self.state);
        if state.0 >= self.window {
            return false;
        }
        state.0 += 1;
        self.changed.notify_all();
        true
    }

    /// Nothing more is sent: whoever waits in [`Credit::take`] stops.
    pub fn end(&self) {
        lock(&self.state).1 = true;
        self.changed.notify_all();
    }

    /// Takes one credit, waiting for it; false once ended.
    pub fn take(&self) -> bool {
        let mut state = lock(&self.state);
        loop {
            if state.1 {
                return false;
            }
            if state.0 > 0 {
                state.0 -= 1;
                return true;
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Where a mux's frames go: the channel's writing end (one write per frame, so
/// frames from several threads never interleave).
pub trait Sink: Send + Sync + 'static {
    fn message(&self, message: &Message) -> io::Result<()>;
    /// A [`KIND_STREAM`] chunk of at most [`DATA_CHUNK`] bytes.
    fn chunk(&self, id: u32, data: &[u8]) -> io::Result<()>;
}

impl<W: Write + Send + 'static> Sink for Mutex<W> {
    fn message(&self, message: &Message) -> io::Result<()> {
        protocol::write_message(&mut *lock(self), message)
    }

    fn chunk(&self, id: u32, data: &[u8]) -> io::Result<()> {
        protocol::write_data(&mut *lock(self), KIND_STREAM, id, data)
    }
}

/// A socket one end of a stream is relayed to.
pub trait Socket: Read + Write + Send + Sync + Sized + 'static {
    fn try_clone(&self) -> io::Result<Self>;
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
}

impl Socket for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        TcpStream::shutdown(self, how)
    }
}

impl Socket for UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        UnixStream::try_clone(self)
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        UnixStream::shutdown(self, how)
    }
}

/// The local end of a stream: its socket, as a reading and a writing half.
pub struct Local {
    read: Box<dyn Read + Send>,
    write: Box<dyn Write + Send>,
    shutdown: Arc<dyn Fn(Shutdown) + Send + Sync>,
}

impl Local {
    pub fn new<S: Socket>(socket: S) -> io::Result<Local> {
        let write = socket.try_clone()?;
        let control = socket.try_clone()?;
        Ok(Local {
            read: Box::new(socket),
            write: Box::new(write),
            shutdown: Arc::new(move |how| {
                let _ = control.shutdown(how);
            }),
        })
    }
}

/// Which end of the channel a [`Mux`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The guest's agent, which opens the streams.
    Guest,
    /// The host, which takes them.
    Host,
}

/// One end of the channel's streams.
pub struct Mux {
    sink: Arc<dyn Sink>,
    role: Role,
    table: Mutex<Table>,
    /// Held while an id is chosen and its `StreamOpen` sent: the peer sees them
    /// in order.
    opening: Mutex<()>,
}

#[derive(Default)]
struct Table {
    streams: HashMap<u32, Entry>,
    /// The greatest id opened so far.
    last: u32,
    closed: bool,
}

struct Entry {
    /// The chunks to write to the local socket (at most the window and the end).
    input: SyncSender<Vec<u8>>,
    /// The chunks the local socket's bytes may still be sent as.
    credit: Arc<Credit>,
    shutdown: Arc<dyn Fn(Shutdown) + Send + Sync>,
    /// This side sent its end.
    sent_end: bool,
    /// The peer sent its end.
    got_end: bool,
}

impl Mux {
    pub fn new(sink: Arc<dyn Sink>, role: Role) -> Arc<Mux> {
        Arc::new(Mux {
            sink,
            role,
            table: Mutex::default(),
            opening: Mutex::default(),
        })
    }

    /// How many streams are open.
    pub fn open_streams(&self) -> usize {
        lock(&self.table).streams.len()
    }

    /// The guest: opens the next stream for `local`, says so, and relays it;
    /// `header` is sent first (the broker's stream header). A `control`
    /// stream goes to the host's control endpoint instead.
    pub fn open_next(
        self: &Arc<Self>,
        local: Local,
        header: Vec<u8>,
        control: bool,
    ) -> Result<u32, MuxError> {
        let _opening = lock(&self.opening);
        let id = {
            let table = lock(&self.table);
            table.last.checked_add(1).ok_or(MuxError::TooMany)?
        };
        let (credit, input) = self.insert(id, &local)?;
        if (self.sink.message(&Message::StreamOpen { id, control })).is_err() {
            self.close();
            return Err(MuxError::Closed);
        }
        self.relay(id, local, credit, input, header);
        Ok(id)
    }

    /// The host: the guest opened stream `id`, relayed to `local`.
    pub fn open(self: &Arc<Self>, id: u32, local: Local) -> Result<(), MuxError> {
        let (credit, input) = self.insert(id, &local)?;
        self.relay(id, local, credit, input, Vec::new());
        Ok(())
    }

    fn insert(&self, id: u32, local: &Local) -> Result<(Arc<Credit>, Receiver<Vec<u8>>), MuxError> {
        let mut table = lock(&self.table);
        if table.closed {
            return Err(MuxError::Closed);
        }
        if id <= table.last {
            return Err(MuxError::OutOfOrder {
                id,
                last: table.last,
            });
        }
        if table.streams.len() >= MAX_STREAMS {
            return Err(MuxError::TooMany);
        }
        table.last = id;
        // Room for the window and the end, which is not acknowledged.
        let (tx, rx) = sync_channel(STREAM_WINDOW as usize + 1);
        let credit = Arc::new(Credit::new(STREAM_WINDOW));
        table.streams.insert(
            id,
            Entry {
                input: tx,
                credit: credit.clone(),
                shutdown: local.shutdown.clone(),
                sent_end: false,
                got_end: false,
            },
        );
        Ok((credit, rx))
    }

    fn relay(
        self: &Arc<Self>,
        id: u32,
        local: Local,
        credit: Arc<Credit>,
        input: Receiver<Vec<u8>>,
        header: Vec<u8>,
    ) {
        let Local {
            read,
            write,
            shutdown,
        } = local;
        let mux = self.clone();
        std::thread::spawn(move || mux.send_from(id, read, &credit, header));
        let mux = self.clone();
        std::thread::spawn(move || mux.write_to(id, input, write, &*shutdown));
    }

    /// A chunk of stream `id` from the peer (an empty one: its end).
    pub fn chunk(&self, id: u32, data: Vec<u8>) -> Result<(), MuxError> {
        let mut table = lock(&self.table);
        let last = table.last;
        let Some(entry) = table.streams.get_mut(&id) else {
            return Err(if id <= last {
                MuxError::AfterEnd(id)
            } else {
                MuxError::NeverOpened(id)
            });
        };
        if entry.got_end {
            return Err(MuxError::AfterEnd(id));
        }
        let end = data.is_empty();
        match entry.input.try_send(data) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(MuxError::Overrun(id)),
            // The writer is gone (the channel closing): nothing to deliver to.
            Err(TrySendError::Disconnected(_)) => {}
        }
        if end {
            entry.got_end = true;
            if entry.sent_end {
                table.streams.remove(&id);
            }
        }
        Ok(())
    }

    /// The peer acknowledged a chunk of stream `id`. One for a stream that just
    /// ended is fine (its acknowledgements may trail its end).
    pub fn ack(&self, id: u32) -> Result<(), MuxError> {
        let table = lock(&self.table);
        match table.streams.get(&id) {
            Some(entry) if !entry.credit.acknowledged() => Err(MuxError::NotOwed(id)),
            Some(_) => Ok(()),
            None if id <= table.last && id > 0 => Ok(()),
            None => Err(MuxError::NeverOpened(id)),
        }
    }

    /// The channel is gone: every stream ends, its socket shut down.
    pub fn close(&self) {
        let mut table = lock(&self.table);
        table.closed = true;
        for (_, entry) in table.streams.drain() {
            entry.credit.end();
            (entry.shutdown)(Shutdown::Both);
        }
    }

    /// This side sent the end of stream `id`.
    fn sent_end(&self, id: u32) {
        let mut table = lock(&self.table);
        if let Some(entry) = table.streams.get_mut(&id) {
            entry.sent_end = true;
            if entry.got_end {
                table.streams.remove(&id);
            }
        }
    }

    /// Sends what `read` yields as chunks of stream `id` within its window,
    /// `first` before it, then the end.
    fn send_from(&self, id: u32, mut read: Box<dyn Read + Send>, credit: &Credit, first: Vec<u8>) {
        let mut buf = first;
        if buf.is_empty() || buf.len() > DATA_CHUNK {
            buf.clear();
        } else if !credit.take() || self.sink.chunk(id, &buf).is_err() {
            return;
        }
        buf.resize(DATA_CHUNK, 0);
        loop {
            let n = match read.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            if n == 0 {
                break;
            }
            if !credit.take() || self.sink.chunk(id, &buf[..n]).is_err() {
                return;
            }
        }
        // Both ends count a stream until it ended both ways, and the host
        // refuses more than MAX_STREAMS: the guest counts its end as sent once
        // it went out (before any later `StreamOpen`), the host before it goes
        // out (before the guest can see it and open the next one), so the
        // host never counts more than the guest.
        if self.role == Role::Host {
            self.sent_end(id);
        }
        if self.sink.chunk(id, &[]).is_ok() && self.role == Role::Guest {
            self.sent_end(id);
        }
    }

    /// Writes the peer's chunks of stream `id` to `write`, acknowledging each
    /// (written, or dropped once the socket failed, which is then shut down so
    /// its reader ends the other direction too); the end shuts down its
    /// writing side.
    fn write_to(
        &self,
        id: u32,
        input: Receiver<Vec<u8>>,
        mut write: Box<dyn Write + Send>,
        shutdown: &(dyn Fn(Shutdown) + Send + Sync),
    ) {
        let mut open = true;
        for chunk in input {
            if chunk.is_empty() {
                shutdown(Shutdown::Write);
                return;
            }
            if open && write.write_all(&chunk).is_err() {
                open = false;
                shutdown(Shutdown::Both);
            }
            if self.sink.message(&Message::StreamAck { id }).is_err() {
                break;
            }
        }
        shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Frame, FrameReader};
    use std::time::Duration;

    /// A sink that records what it is given.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Frame>>);

    impl Sink for Recorder {
        fn message(&self, message: &Message) -> io::Result<()> {
            lock(&self.0).push(Frame::Message(message.clone()));
            Ok(())
        }
        fn chunk(&self, id: u32, data: &[u8]) -> io::Result<()> {
            lock(&self.0).push(Frame::Stream {
                id,
                data: data.to_vec(),
            });
            Ok(())
        }
    }

    fn pair() -> (Local, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Local::new(a).unwrap(), b)
    }

    #[test]
    fn a_hostile_peer_is_refused() {
        let mux = Mux::new(Arc::new(Recorder::default()), Role::Host);
        assert_eq!(mux.chunk(1, b"x".to_vec()), Err(MuxError::NeverOpened(1)));
        assert_eq!(mux.ack(1), Err(MuxError::NeverOpened(1)));
        let (local, _far) = pair();
        mux.open(5, local).unwrap();
        // Ids go up only.
        let (local, _far2) = pair();
        assert_eq!(
            mux.open(5, local),
            Err(MuxError::OutOfOrder { id: 5, last: 5 })
        );
        let (local, _far3) = pair();
        assert_eq!(
            mux.open(3, local),
            Err(MuxError::OutOfOrder { id: 3, last: 5 })
        );
        // Nothing was sent on stream 5 yet: no acknowledgement is owed.
        assert_eq!(mux.ack(5), Err(MuxError::NotOwed(5)));
        // The end, then data after it.
        mux.chunk(5, Vec::new()).unwrap();
        assert_eq!(mux.chunk(5, b"x".to_vec()), Err(MuxError::AfterEnd(5)));
        assert_eq!(mux.chunk(9, b"x".to_vec()), Err(MuxError::NeverOpened(9)));
    }

    /// A peer that sends beyond the window while the local socket is not read:
    /// refused at the window, and no more than the window is held.
    #[test]
    fn a_flood_is_refused_at_the_window() {
        let mux = Mux::new(Arc::new(Recorder::default()), Role::Host);
        let (a, far) = UnixStream::pair().unwrap();
        // A tiny socket buffer, which the first chunk fills.
        rustix::net::sockopt::set_socket_send_buffer_size(&a, 4096).unwrap();
        mux.open(1, Local::new(a).unwrap()).unwrap();
        let chunk = vec![7u8; DATA_CHUNK];
        let mut refused = None;
        for i in 0..100 {
            if let Err(e) = mux.chunk(1, chunk.clone()) {
                refused = Some((i, e));
                break;
            }
        }
        let (sent, error) = refused.expect("a flood beyond the window was taken");
        assert_eq!(error, MuxError::Overrun(1));
        // The writer holds one chunk, the queue the rest of the window and one.
        assert!(sent <= STREAM_WINDOW as usize + 2, "{sent} chunks taken");
        drop(far);
    }

    /// Two muxes, a guest's and a host's, joined by a socket pair as the
    /// channel: a stream's bytes go both ways in order, and its end closes both
    /// sockets.
    #[test]
    fn a_stream_round_trips() {
        let (g, h) = UnixStream::pair().unwrap();
        let guest = Mux::new(Arc::new(Mutex::new(g.try_clone().unwrap())), Role::Guest);
        let host = Mux::new(Arc::new(Mutex::new(h.try_clone().unwrap())), Role::Host);
        let pump = |mux: Arc<Mux>,
                    from: UnixStream,
                    accept: Option<std::sync::mpsc::Sender<UnixStream>>| {
            std::thread::spawn(move || {
                let mut reader = FrameReader::new(from, protocol::MAX_FRAME);
                while let Ok(frame) = reader.read_frame() {
                    match frame {
                        Frame::Message(Message::StreamOpen { id, .. }) => {
                            let (local, far) = pair();
                            mux.open(id, local).unwrap();
                            accept.as_ref().unwrap().send(far).unwrap();
                        }
                        Frame::Message(Message::StreamAck { id }) => mux.ack(id).unwrap(),
                        Frame::Stream { id, data } => mux.chunk(id, data).unwrap(),
                        other => panic!("{other:?}"),
                    }
                }
            })
        };
        let (tx, rx) = std::sync::mpsc::channel();
        pump(host.clone(), h, Some(tx));
        pump(guest.clone(), g, None);
        // Many small exchanges on one stream, as DNS makes: every answer comes
        // back (the windows refill).
        let (local, mut dns) = pair();
        guest.open_next(local, b"DNS".to_vec(), false).unwrap();
        let mut resolver = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        resolver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        dns.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = [0u8; 3];
        resolver.read_exact(&mut head).unwrap();
        for i in 0..20u8 {
            dns.write_all(&[i]).unwrap();
            let mut q = [0u8; 1];
            resolver.read_exact(&mut q).unwrap();
            resolver.write_all(&[q[0] + 1]).unwrap();
            let mut a = [0u8; 1];
            dns.read_exact(&mut a).unwrap();
            assert_eq!(a[0], i + 1);
        }
        drop((dns, resolver));
        let (local, mut program) = pair();
        guest.open_next(local, b"HEAD".to_vec(), false).unwrap();
        let mut broker = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let big: Vec<u8> = (0..3 * DATA_CHUNK + 17).map(|i| i as u8).collect();
        let sent = big.clone();
        let writer = std::thread::spawn(move || {
            program.write_all(&sent).unwrap();
            program.shutdown(Shutdown::Write).unwrap();
            let mut back = Vec::new();
            program.read_to_end(&mut back).unwrap();
            back
        });
        let mut got = Vec::new();
        broker.read_to_end(&mut got).unwrap();
        assert_eq!(&got[..4], b"HEAD");
        assert_eq!(&got[4..], &big[..]);
        broker.write_all(b"answer").unwrap();
        broker.shutdown(Shutdown::Write).unwrap();
        assert_eq!(writer.join().unwrap(), b"answer");
        // Both directions ended: the stream is gone at both ends.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while (guest.open_streams(), host.open_streams()) != (0, 0) {
            assert!(std::time::Instant::now() < deadline, "streams left open");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
