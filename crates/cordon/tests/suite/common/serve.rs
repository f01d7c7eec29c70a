//! A live `cordon serve` session for the tests, spoken to through the protocol's
//! own client ([`cordon_tools::client`]) with a deadline on every line. Responses
//! are handed to the tests as JSON, so they assert on what goes over the wire; every
//! result is also checked against its type in [`cordon_tools::protocol`].

use super::Fixture;
use cordon_tools::client::{self, Client};
use cordon_tools::protocol::{self, Stream};
use serde_json::Value;
use std::io::{self, BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// How long the server may stay silent while a line is awaited.
pub const REPLY_DEADLINE: Duration = Duration::from_secs(30);

/// The server's stdout, a line at a time, read by a thread of its own.
pub struct Lines(Receiver<String>);

impl client::Lines for Lines {
    fn next_line(&mut self) -> io::Result<String> {
        match self.0.recv_timeout(REPLY_DEADLINE) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "cordon serve said nothing for 30 s",
            )),
            Err(RecvTimeoutError::Disconnected) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "cordon serve closed its stdout",
            )),
        }
    }
}

pub struct Session {
    pub child: Child,
    client: Option<Client<Lines, ChildStdin>>,
}

impl Session {
    /// `cordon serve OPTS` of `fx`, its stderr inherited; waits for `ready`.
    pub fn start(fx: &Fixture, opts: &[&str]) -> Session {
        let mut args = vec!["serve"];
        args.extend_from_slice(opts);
        let mut cmd = fx.cordon_cmd(&args);
        cmd.stderr(Stdio::inherit());
        Session::spawn(cmd)
    }

    /// `cmd` (a `cordon serve`, its stderr as the caller set it) with its stdin and
    /// stdout piped; waits for `ready`.
    pub fn spawn(mut cmd: Command) -> Session {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("start cordon serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take().unwrap();
        let mut client = Client::new(Lines(rx), stdin);
        let ready = client.ready();
        let session = Session {
            child,
            client: Some(client),
        };
        if let Err(e) = ready {
            panic!("cordon serve did not start: {e}");
        }
        session
    }

    fn client(&mut self) -> &mut Client<Lines, ChildStdin> {
        self.client.as_mut().expect("the session's input is open")
    }

    /// Sends a request; returns its id.
    pub fn send(&mut self, method: &str, params: Value) -> u64 {
        self.client().send(method, params).expect("send a request")
    }

    /// The response to request `id`, as JSON (notifications and other responses
    /// on the way are kept).
    pub fn response(&mut self, id: u64) -> Value {
        let r = self
            .client()
            .response(id)
            .unwrap_or_else(|e| panic!("no response to {id}: {e}"));
        serde_json::to_value(r).unwrap()
    }

    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params);
        let reply = self.response(id);
        if let Some(result) = reply.get("result") {
            protocol::check_result(method, result).unwrap_or_else(|e| {
                panic!("{method}'s result is not the protocol's ({e}): {reply}")
            });
        }
        reply
    }

    /// The result of a call that must succeed.
    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        let reply = self.call(method, params.clone());
        assert!(
            reply.get("error").is_none(),
            "{method} {params} failed: {reply}"
        );
        reply["result"].clone()
    }

    /// An exec's response and its stdout.
    pub fn exec(&mut self, command: &str) -> (Value, String) {
        let id = self.send("exec", serde_json::json!({"command": command}));
        let reply = self.response(id);
        let stdout = self.client().output(id, Stream::Stdout);
        (reply, String::from_utf8_lossy(&stdout).into_owned())
    }

    /// Closes stdin, which ends the session.
    pub fn close_input(&mut self) {
        drop(self.client.take());
    }

    /// Closes stdin and waits for the server to end.
    pub fn close(mut self) -> std::process::ExitStatus {
        self.close_input();
        let deadline = Instant::now() + REPLY_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "cordon serve outlived its stdin");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
