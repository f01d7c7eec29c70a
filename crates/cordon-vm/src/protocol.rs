//! The protocol between the host and cordon's guest agent, over one virtio-serial
//! port.
//!
//! A frame is a 4-byte big-endian length `n` and then `n` bytes of body. The body's
//! first byte is its kind:
//! - [`KIND_MESSAGE`]: a JSON [`Message`] (control: exec, started, exited, ...);
//! - [`KIND_STDOUT`], [`KIND_STDERR`]: output of a running command, a 4-byte
//!   big-endian request id and then raw bytes (no JSON for bulk data);
//! - [`KIND_STDIN`]: host → guest, a command's input, the same way;
//! - [`KIND_STREAM`]: a chunk of one of the guest's network streams (see
//!   [`crate::mux`]), a 4-byte big-endian stream id and then raw bytes.
//!
//! Both sides read with [`FrameReader`], which treats every frame as hostile: a
//! length above its limit is rejected before anything is allocated, a length of 0,
//! an unknown kind, a data frame too short for its id, and JSON that is not exactly
//! a [`Message`] (unknown fields and variants included) are errors, and the reader
//! never holds more than one frame. The host's limit is [`MAX_FRAME`]; the agent
//! sends output in chunks of at most [`DATA_CHUNK`] bytes.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// The protocol's version, sent by the agent in [`Message::Ready`]; the host
/// refuses another.
pub const VERSION: u32 = 4;

/// The largest frame body either side accepts (1 MiB).
pub const MAX_FRAME: u32 = 1 << 20;

/// The largest output chunk the agent puts in one data frame (64 KiB).
pub const DATA_CHUNK: usize = 64 << 10;

/// A JSON [`Message`].
pub const KIND_MESSAGE: u8 = 0;
/// A chunk of a command's standard output.
pub const KIND_STDOUT: u8 = 1;
/// A chunk of a command's standard error.
pub const KIND_STDERR: u8 = 2;
/// Host → guest: a chunk of a command's standard input; an empty one ends it.
pub const KIND_STDIN: u8 = 3;

/// Both ways: a chunk of a network stream of the guest ([`crate::mux`]); an
/// empty one ends that direction of the stream.
pub const KIND_STREAM: u8 = 4;

/// How many stdin chunks the host may have sent that the agent has not
/// acknowledged (`stdin_ack`, once written to the command): what the agent
/// holds for a command that reads slowly is bounded by this many chunks.
pub const STDIN_WINDOW: u32 = 4;

/// Control messages, both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// Guest → host: the agent is up and reads requests.
    Ready {
        /// [`VERSION`] of the agent.
        version: u32,
    },
    /// Host → guest: run a command.
    Exec {
        /// Chosen by the host, unique among the requests it has open.
        id: u32,
        /// The program (looked up in `PATH` of `env` when it has no slash) and its
        /// arguments; not empty.
        argv: Vec<String>,
        /// The whole environment of the command (nothing inherited from the agent).
        env: Vec<(String, String)>,
        /// The working directory.
        cwd: String,
        /// The user and group it runs as (no supplementary groups).
        uid: u32,
        gid: u32,
        /// The host sends the command's stdin ([`KIND_STDIN`] chunks); else it
        /// is `/dev/null`.
        stdin: bool,
        /// A pseudo-terminal of this size for the command's stdin, stdout and
        /// stderr (its output then comes as stdout), its session's controlling
        /// terminal; else pipes.
        #[serde(default)]
        tty: Option<TtySize>,
        /// A stream to the host at this descriptor of the command (the host's
        /// control endpoint): the agent opens it as a stream of its own
        /// (`StreamOpen` with `control`).
        #[serde(default)]
        control_fd: Option<i32>,
        /// Confine the command as the OS backend confines its own: see
        /// [`Confine`]. `None`: run it with the agent's privileges (the
        /// foundation's tests and benches).
        #[serde(default)]
        confine: Option<Confine>,
    },
    /// Host → guest: the terminal of request `id` has a new size.
    Resize { id: u32, size: TtySize },
    /// Guest → host: a stdin chunk of request `id` was written to the command
    /// (or dropped, the command having closed its stdin): the host may send one
    /// more.
    StdinAck { id: u32 },
    /// Host → guest: send `signal` to the command of request `id` (one the
    /// host passes on: SIGINT, SIGTERM, ...); one that arrives before the
    /// command started is sent as soon as it has.
    Signal { id: u32, signal: i32 },
    /// Guest → host: the command of request `id` started as `pid` in the guest.
    Started { id: u32, pid: u32 },
    /// Guest → host: the command of request `id`, which has a terminal, stopped
    /// itself (job control: Ctrl+Z, or a program's own `kill(0, SIGTSTP)`). The
    /// host hands its terminal back to its shell and continues the command with
    /// a `Signal` of SIGCONT once continued itself in the foreground.
    Stopped { id: u32 },
    /// Guest → host: the command of request `id` could not start: `status` 127
    /// when the program was not found, 126 when it cannot be executed, 125 when
    /// anything else failed (its working directory).
    Failed { id: u32, error: String, status: i32 },
    /// Guest → host: the command of request `id` ended; every output chunk of it
    /// was sent before.
    /// `oom_kills`: the processes of its cgroup the guest kernel killed for
    /// its memory limit (see [`Confine::memory`]), for the host to say so.
    Exited {
        id: u32,
        status: Status,
        #[serde(default)]
        oom_kills: u32,
    },
    /// Host → guest, once, before any `Exec`, in a VM restored from a template
    /// snapshot (or booted to make one): every clone shares the template's
    /// random state and clock, so the agent credits `seed` (hex, fresh host
    /// random bytes, at most [`MAX_SEED`]) to the kernel's RNG and reseeds it,
    /// sets the wall clock to `secs`.`nanos` (the host's, since the epoch),
    /// then mounts the share `root` (a mount tag) as its root.
    Resume {
        seed: String,
        secs: i64,
        nanos: u32,
        root: Option<String>,
    },
    /// Guest → host: the `Resume` is done, or `error` says what failed.
    Resumed {
        #[serde(default)]
        error: Option<String>,
    },
    /// Host → guest, before any `Exec`: give the guest its network through the
    /// host's egress broker: listeners for the broker's synthetic addresses on
    /// `ports` (and on 127.0.0.1 for `local_ports`), the HTTP proxy on
    /// 127.0.0.1:`proxy_port`, DNS on 127.0.0.1:53; each connection and the DNS
    /// queries a stream to the host ([`crate::mux`]).
    Network {
        ports: Vec<u16>,
        local_ports: Vec<u16>,
        proxy_port: Option<u16>,
    },
    /// Guest → host: the answer to `Network`: up, or why not.
    NetworkReady { error: Option<String> },
    /// Guest → host: the guest opened stream `id` (each id greater than every
    /// one before); its first bytes are a header of the broker's stream ingress
    /// (`cordon_net::ingress::stream`) naming where it was meant to go.
    StreamOpen {
        id: u32,
        /// The command's control stream (see `Exec`'s `control_fd`), carried
        /// to the host's control endpoint; else a network stream, whose first
        /// bytes name where it was meant to go.
        #[serde(default)]
        control: bool,
    },
    /// Both ways: a chunk of stream `id` was delivered; the peer may send one
    /// more (at most [`crate::mux::STREAM_WINDOW`] unacknowledged).
    StreamAck { id: u32 },
}

/// The most random bytes a [`Message::Resume`] carries.
pub const MAX_SEED: usize = 256;

/// How the agent confines a command in the guest, as the OS backend confines
/// its command on the host (`cordon_sandbox::confine`): every capability
/// dropped (for guest root: the bounding set, securebits locked),
/// no_new_privs, the seccomp filter of the policy's switches, and its
/// process limit. The
/// guest's kernel is the command's to attack otherwise, and a hole in it is
/// one step closer to QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confine {
    /// The policy's `nested_userns` switch.
    pub nested_userns: bool,
    /// The policy's `unix_sockets` switch.
    pub unix_sockets: bool,
    /// The policy's process limit (`--pids`): the command and everything it
    /// starts in a cgroup of the guest with this `pids.max` (the guest's
    /// processes are not QEMU's: the host's limit cannot count them).
    #[serde(default)]
    pub pids: Option<u64>,
    /// The policy's memory limit (`--memory`), in bytes: that cgroup's
    /// `memory.max` (and no swap). It counts what the command's processes
    /// allocate in the guest, its tmpfs `/dev/shm` and memfds included.
    #[serde(default)]
    pub memory: Option<u64>,
}

/// A terminal's size, in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Status {
    /// It exited with this code (0–255).
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Status {
    /// The shell's convention: the code, or 128 + the signal.
    pub fn shell_code(self) -> i32 {
        match self {
            Status::Code(c) => c,
            Status::Signal(s) => 128 + s,
        }
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Message(Message),
    Stdout { id: u32, data: Vec<u8> },
    Stderr { id: u32, data: Vec<u8> },
    Stdin { id: u32, data: Vec<u8> },
    Stream { id: u32, data: Vec<u8> },
}

/// Why a frame was refused. After any of these the stream is out of step and is
/// given up.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the channel closed")]
    Closed,
    #[error("the channel closed in the middle of a frame")]
    Truncated,
    #[error("a frame of {len} bytes is larger than the limit of {max}")]
    Oversized { len: u32, max: u32 },
    #[error("an empty frame")]
    Empty,
    #[error("a frame of unknown kind {0}")]
    UnknownKind(u8),
    #[error("a data frame of {0} bytes is too short for its request id")]
    ShortData(usize),
    #[error("a malformed message: {0}")]
    Malformed(String),
    #[error("reading the channel: {0}")]
    Io(#[from] io::Error),
}

/// Reads frames from a byte stream, one at a time, at most `max` bytes each.
pub struct FrameReader<R> {
    inner: R,
    max: u32,
}

impl<R: Read> FrameReader<R> {
    /// A reader accepting frames of up to `max` bytes (at most [`MAX_FRAME`]).
    pub fn new(inner: R, max: u32) -> Self {
        FrameReader {
            inner,
            max: max.min(MAX_FRAME),
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The next frame. The body is allocated only once its length is known to be
    /// within the limit, and only as it arrives (a liar announcing the limit and
    /// sending nothing costs nothing).
    pub fn read_frame(&mut self) -> Result<Frame, FrameError> {
        let mut header = [0u8; 4];
        match read_full(&mut self.inner, &mut header)? {
            0 => return Err(FrameError::Closed),
            4 => {}
            _ => return Err(FrameError::Truncated),
        }
        let len = u32::from_be_bytes(header);
        if len > self.max {
            return Err(FrameError::Oversized { len, max: self.max });
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        let mut body = Vec::new();
        let got = (&mut self.inner)
            .take(u64::from(len))
            .read_to_end(&mut body)?;
        if got != len as usize {
            return Err(FrameError::Truncated);
        }
        decode(body)
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn decode(mut body: Vec<u8>) -> Result<Frame, FrameError> {
    match body[0] {
        KIND_MESSAGE => serde_json::from_slice(&body[1..])
            .map(Frame::Message)
            .map_err(|e| FrameError::Malformed(e.to_string())),
        kind @ (KIND_STDOUT | KIND_STDERR | KIND_STDIN | KIND_STREAM) => {
            if body.len() < 5 {
                return Err(FrameError::ShortData(body.len()));
            }
            let id = u32::from_be_bytes([body[1], body[2], body[3], body[4]]);
            body.drain(..5);
            Ok(match kind {
                KIND_STDOUT => Frame::Stdout { id, data: body },
                KIND_STDERR => Frame::Stderr { id, data: body },
                KIND_STDIN => Frame::Stdin { id, data: body },
                _ => Frame::Stream { id, data: body },
            })
        }
        other => Err(FrameError::UnknownKind(other)),
    }
}

/// Writes one message frame.
pub fn write_message(w: &mut impl Write, message: &Message) -> io::Result<()> {
    let json = serde_json::to_vec(message).map_err(io::Error::other)?;
    write_body(w, KIND_MESSAGE, None, &json)
}

/// Writes one data frame (`kind` [`KIND_STDOUT`], [`KIND_STDERR`], [`KIND_STDIN`]
/// or [`KIND_STREAM`]); `data` must
/// be at most [`DATA_CHUNK`] bytes.
pub fn write_data(w: &mut impl Write, kind: u8, id: u32, data: &[u8]) -> io::Result<()> {
    if data.len() > DATA_CHUNK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "data frame above DATA_CHUNK",
        ));
    }
    write_body(w, kind, Some(id), data)
}

fn write_body(w: &mut impl Write, kind: u8, id: Option<u32>, data: &[u8]) -> io::Result<()> {
    let len = 1 + id.map_or(0, |_| 4) + data.len();
    let len = u32::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame above MAX_FRAME"))?;
    let mut frame = Vec::with_capacity(4 + len as usize);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.push(kind);
    if let Some(id) = id {
        frame.extend_from_slice(&id.to_be_bytes());
    }
    frame.extend_from_slice(data);
    // One write per frame: frames from several threads never interleave when the
    // writer is shared under a lock.
    w.write_all(&frame)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &[u8]) -> FrameReader<&[u8]> {
        FrameReader::new(bytes, MAX_FRAME)
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        let exec = Message::Exec {
            id: 7,
            argv: vec!["/bin/busybox".into(), "echo".into(), "hi".into()],
            env: vec![("PATH".into(), "/bin".into())],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            stdin: true,
            tty: Some(TtySize { rows: 24, cols: 80 }),
            control_fd: Some(3),
            confine: Some(Confine {
                nested_userns: false,
                unix_sockets: true,
                pids: Some(64),
                memory: Some(64 << 20),
            }),
        };
        write_message(&mut buf, &exec).unwrap();
        write_data(&mut buf, KIND_STDIN, 7, b"in").unwrap();
        write_data(&mut buf, KIND_STDIN, 7, b"").unwrap();
        write_data(&mut buf, KIND_STDERR, 7, b"oops\n").unwrap();
        let exited = Message::Exited {
            id: 7,
            status: Status::Signal(9),
            oom_kills: 2,
        };
        write_message(&mut buf, &exited).unwrap();
        let mut r = reader(&buf);
        assert_eq!(r.read_frame().unwrap(), Frame::Message(exec));
        let stdin = |data: &[u8]| Frame::Stdin {
            id: 7,
            data: data.to_vec(),
        };
        assert_eq!(r.read_frame().unwrap(), stdin(b"in"));
        // The end of the input: a chunk with no bytes.
        assert_eq!(r.read_frame().unwrap(), stdin(b""));
        assert_eq!(
            r.read_frame().unwrap(),
            Frame::Stderr {
                id: 7,
                data: b"oops\n".to_vec()
            }
        );
        assert_eq!(r.read_frame().unwrap(), Frame::Message(exited));
        assert!(matches!(r.read_frame(), Err(FrameError::Closed)));
    }

    #[test]
    fn oversized_frame_rejected_before_reading_it() {
        // Announces 4 GiB - 1 and sends nothing more: refused from the header alone.
        let mut r = reader(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            r.read_frame(),
            Err(FrameError::Oversized {
                len: u32::MAX,
                max: MAX_FRAME
            })
        ));
        // One byte over the limit, the body present: still refused.
        let mut big = (MAX_FRAME + 1).to_be_bytes().to_vec();
        big.resize(4 + MAX_FRAME as usize + 1, 0);
        assert!(matches!(
            reader(&big).read_frame(),
            Err(FrameError::Oversized { .. })
        ));
        // A smaller limit of the reader's own applies too.
        let frame = framed(&[KIND_STDOUT, 0, 0, 0, 1, b'x', b'y']);
        let mut small = FrameReader::new(&frame[..], 4);
        assert!(matches!(
            small.read_frame(),
            Err(FrameError::Oversized { len: 7, max: 4 })
        ));
        // The limit itself is accepted.
        let mut exact = vec![KIND_STDOUT, 0, 0, 0, 1];
        exact.resize(MAX_FRAME as usize, b'a');
        let f = framed(&exact);
        assert!(matches!(
            reader(&f).read_frame(),
            Ok(Frame::Stdout { id: 1, data }) if data.len() == MAX_FRAME as usize - 5
        ));
    }

    #[test]
    fn garbage_rejected() {
        // Printable noise: a huge length.
        assert!(matches!(
            reader(b"hello world").read_frame(),
            Err(FrameError::Oversized { .. })
        ));
        assert!(matches!(
            reader(&framed(&[])).read_frame(),
            Err(FrameError::Empty)
        ));
        assert!(matches!(
            reader(&framed(&[9, 1, 2])).read_frame(),
            Err(FrameError::UnknownKind(9))
        ));
        assert!(matches!(
            reader(&framed(&[KIND_STDOUT, 0, 0])).read_frame(),
            Err(FrameError::ShortData(3))
        ));
        for json in [
            &b"not json"[..],
            br#"{"type":"exited","id":1}"#,
            br#"{"type":"exited","id":1,"status":{"code":0},"extra":1}"#,
            br#"{"type":"reboot_host"}"#,
            br#"{"type":"ready","version":-1}"#,
            br#"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["#,
        ] {
            let mut body = vec![KIND_MESSAGE];
            body.extend_from_slice(json);
            assert!(
                matches!(
                    reader(&framed(&body)).read_frame(),
                    Err(FrameError::Malformed(_))
                ),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
        // A header cut short, a body cut short.
        assert!(matches!(
            reader(&[0, 0]).read_frame(),
            Err(FrameError::Truncated)
        ));
        assert!(matches!(
            reader(&[0, 0, 0, 9, KIND_STDOUT]).read_frame(),
            Err(FrameError::Truncated)
        ));
    }

    #[test]
    fn writer_refuses_oversized_data() {
        let mut buf = Vec::new();
        assert!(write_data(&mut buf, KIND_STDOUT, 1, &vec![0; DATA_CHUNK + 1]).is_err());
        assert!(buf.is_empty());
    }
}
