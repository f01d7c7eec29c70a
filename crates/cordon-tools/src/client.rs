//! A blocking client of the protocol ([`crate::protocol`]) for Rust callers: the
//! test harnesses and `bench/tools` talk to a `cordon serve` through it, as a host
//! would talk to an agent in a VM.
//!
//! It reads the server's lines itself, on the caller's thread, so a benchmark's
//! round trip has no thread hand-off in it; a caller that needs a deadline gives
//! it a [`Lines`] that has one.

use crate::protocol::{
    ErrorObject, ExecOutput, ExecOutputNote, Id, Message, Method, Notification, Notify, Ready,
    ReadyNote, Request, Response, Stream,
};
use serde::Serialize;
use std::io::{self, BufRead, Write};

/// Where the server's lines come from.
pub trait Lines {
    /// The next line, without its newline; an error at the end of the output.
    fn next_line(&mut self) -> io::Result<String>;
}

impl<R: BufRead> Lines for R {
    fn next_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed its output",
            ));
        }
        if line.ends_with('\n') {
            line.pop();
        }
        Ok(line)
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the server answered with an error: {0}")]
    Server(ErrorObject),
    #[error("talking to the server: {0}")]
    Io(#[from] io::Error),
    #[error("the server's answer is not what the protocol says: {0}")]
    Decode(#[from] serde_json::Error),
}

/// One session: requests out on `input`, lines in from `lines`.
pub struct Client<L, W> {
    lines: L,
    input: W,
    next_id: u64,
    /// Every notification read so far, in order (but `ready`).
    pub notifications: Vec<Notification>,
    /// Responses read while another was awaited (they come in any order).
    early: Vec<Response>,
}

impl<L: Lines, W: Write> Client<L, W> {
    pub fn new(lines: L, input: W) -> Self {
        Client {
            lines,
            input,
            next_id: 1,
            notifications: Vec::new(),
            early: Vec::new(),
        }
    }

    /// Reads the first line, which must be `ready`.
    pub fn ready(&mut self) -> Result<Ready, CallError> {
        let line = self.lines.next_line()?;
        match Message::parse(&line)? {
            Message::Notification(n) if n.method == ReadyNote::NAME => {
                Ok(serde_json::from_value(n.params)?)
            }
            _ => Err(CallError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected `ready` first, got {line}"),
            ))),
        }
    }

    /// Sends one line as it is (for requests the protocol would not make).
    pub fn send_line(&mut self, line: &str) -> io::Result<()> {
        self.input.write_all(line.as_bytes())?;
        self.input.write_all(b"\n")?;
        self.input.flush()
    }

    /// Sends request `method` with `params` (anything that serializes: a typed
    /// params struct, or JSON to try what the protocol refuses); returns its id.
    pub fn send(&mut self, method: &str, params: impl Serialize) -> io::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let request = Request::new(id, method.to_string(), params);
        let mut line = serde_json::to_vec(&request).map_err(io::Error::other)?;
        line.push(b'\n');
        self.input.write_all(&line)?;
        self.input.flush()?;
        Ok(id)
    }

    /// Reads lines until the response to `id`, keeping what comes before it.
    pub fn response(&mut self, id: u64) -> Result<Response, CallError> {
        let want = Id::from(id);
        if let Some(i) = self.early.iter().position(|r| r.id.as_ref() == Some(&want)) {
            return Ok(self.early.remove(i));
        }
        loop {
            let line = self.lines.next_line()?;
            match Message::parse(&line)? {
                Message::Notification(n) => self.notifications.push(n),
                Message::Response(r) if r.id.as_ref() == Some(&want) => return Ok(r),
                Message::Response(r) => self.early.push(r),
            }
        }
    }

    /// Calls method `M`: its result, or the server's error.
    pub fn call<M: Method>(&mut self, params: &M::Params) -> Result<M::Result, CallError> {
        let id = self.send(M::NAME, params)?;
        let result = self
            .response(id)?
            .into_result()
            .map_err(CallError::Server)?;
        Ok(serde_json::from_value(result)?)
    }

    /// What request `id` wrote to `stream` so far (its `exec.output`).
    pub fn output(&self, id: u64, stream: Stream) -> Vec<u8> {
        let want = Id::from(id);
        let mut bytes = Vec::new();
        for n in &self.notifications {
            if n.method != ExecOutputNote::NAME {
                continue;
            }
            if let Ok(o) = serde_json::from_value::<ExecOutput>(n.params.clone())
                && o.id.as_ref() == Some(&want)
                && o.stream == stream
            {
                bytes.extend_from_slice(&o.data.0);
            }
        }
        bytes
    }

    /// The input, to close it (which ends the session).
    pub fn into_input(self) -> W {
        self.input
    }
}
