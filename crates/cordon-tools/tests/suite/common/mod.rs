//! A harness: the agent in-process on the host, fed through channels, with a
//! policy resolved for a temporary workspace and home.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use cordon_policy::Policy;
use cordon_test_support::PolicyEnv;
use cordon_tools::protocol::{
    self, ExecOutput, ExecOutputNote, Message, Notify as _, Request, Stream,
};
use cordon_tools::{AgentConfig, serve};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A [`PolicyEnv`] whose home holds a secret, `~/.ssh/id_ed25519`.
pub fn dirs() -> PolicyEnv {
    let d = PolicyEnv::new();
    fs::create_dir_all(d.home.join(".ssh")).unwrap();
    fs::write(d.home.join(".ssh/id_ed25519"), "secret").unwrap();
    d
}

/// Bytes in through a channel; EOF when the sender is dropped.
pub struct ChanReader {
    rx: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChanReader {
    pub fn new(rx: Receiver<Vec<u8>>) -> ChanReader {
        ChanReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Lines out, each parsed and sent whole to a channel. A line that is not a
/// message of the protocol fails the test.
pub struct LineWriter {
    tx: Sender<Message>,
    buf: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        while let Some(i) = self.buf.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            let m = Message::parse(&text)
                .unwrap_or_else(|e| panic!("output line is not a protocol message ({e}): {text}"));
            let _ = self.tx.send(m);
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Inbox {
    responses: HashMap<String, Value>,
    stdout: HashMap<String, Vec<u8>>,
    stderr: HashMap<String, Vec<u8>>,
    /// Notifications other than exec.output, and responses with a null id.
    other: Vec<Value>,
}

pub struct Agent {
    tx: Mutex<Option<Sender<Vec<u8>>>>,
    inbox: Arc<(Mutex<Inbox>, Condvar)>,
    next: AtomicU64,
    server: Mutex<Option<JoinHandle<io::Result<()>>>>,
    pub dirs: Option<PolicyEnv>,
}

pub fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

impl Agent {
    pub fn start() -> Agent {
        let dirs = dirs();
        let mut a = Agent::with_policy(dirs.resolve());
        a.dirs = Some(dirs);
        a
    }

    pub fn with_policy(policy: Policy) -> Agent {
        let (in_tx, in_rx) = channel::<Vec<u8>>();
        let (out_tx, out_rx) = channel::<Message>();
        let config = AgentConfig {
            policy,
            backend: "os".into(),
            layers: json!({ "userns": true, "landlock": 7, "seccomp": true }),
            version: "9.9.9-test".into(),
            control_fd: None,
        };
        let server = std::thread::spawn(move || {
            serve(
                config,
                BufReader::new(ChanReader::new(in_rx)),
                LineWriter {
                    tx: out_tx,
                    buf: Vec::new(),
                },
            )
        });
        let inbox: Arc<(Mutex<Inbox>, Condvar)> = Arc::default();
        let ib = inbox.clone();
        std::thread::spawn(move || {
            for message in out_rx {
                let (m, cv) = &*ib;
                let mut i = m.lock().unwrap();
                match message {
                    Message::Notification(n) => {
                        protocol::check_notification(&n.method, &n.params).unwrap_or_else(|e| {
                            panic!("{} not as the protocol says: {e}", n.method)
                        });
                        if n.method == ExecOutputNote::NAME {
                            let o: ExecOutput = serde_json::from_value(n.params).unwrap();
                            let id = o.id.map_or_else(|| "null".into(), |id| id.to_string());
                            let map = match o.stream {
                                Stream::Stdout => &mut i.stdout,
                                Stream::Stderr => &mut i.stderr,
                            };
                            map.entry(id).or_default().extend_from_slice(&o.data.0);
                        } else {
                            i.other.push(serde_json::to_value(n).unwrap());
                        }
                    }
                    Message::Response(r) => match &r.id {
                        Some(id) => {
                            let id = id.to_string();
                            let v = serde_json::to_value(r).unwrap();
                            assert!(
                                i.responses.insert(id, v).is_none(),
                                "two responses for one id"
                            );
                        }
                        None => i.other.push(serde_json::to_value(r).unwrap()),
                    },
                }
                cv.notify_all();
            }
        });
        Agent {
            tx: Mutex::new(Some(in_tx)),
            inbox,
            next: AtomicU64::new(1),
            server: Mutex::new(Some(server)),
            dirs: None,
        }
    }

    pub fn ws(&self) -> &Path {
        &self.dirs.as_ref().unwrap().ws
    }

    pub fn home(&self) -> &Path {
        &self.dirs.as_ref().unwrap().home
    }

    pub fn root(&self) -> &Path {
        &self.dirs.as_ref().unwrap().root
    }

    pub fn send_raw(&self, line: &str) {
        let tx = self.tx.lock().unwrap();
        tx.as_ref().unwrap().send(line.as_bytes().to_vec()).unwrap();
    }

    /// Sends a request and returns its id (as a JSON number).
    pub fn send(&self, method: &str, params: Value) -> u64 {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let line = serde_json::to_string(&Request::new(id, method.to_string(), params)).unwrap();
        self.send_raw(&format!("{line}\n"));
        id
    }

    /// Waits for the response to `id` (a JSON text such as `7` or `"x"`).
    pub fn wait_key(&self, key: &str, timeout: Duration) -> Value {
        let (m, cv) = &*self.inbox;
        let deadline = Instant::now() + timeout;
        let mut i = m.lock().unwrap();
        loop {
            if let Some(v) = i.responses.remove(key) {
                return v;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no response to {key} within {timeout:?}");
            i = cv.wait_timeout(i, left).unwrap().0;
        }
    }

    pub fn wait(&self, id: u64) -> Value {
        self.wait_key(&id.to_string(), Duration::from_secs(30))
    }

    /// The next notification or null-id response, waiting up to `timeout`.
    pub fn next_other(&self, timeout: Duration) -> Option<Value> {
        let (m, cv) = &*self.inbox;
        let deadline = Instant::now() + timeout;
        let mut i = m.lock().unwrap();
        loop {
            if !i.other.is_empty() {
                return Some(i.other.remove(0));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            i = cv.wait_timeout(i, left).unwrap().0;
        }
    }

    pub fn call(&self, method: &str, params: Value) -> Value {
        let id = self.send(method, params);
        self.wait(id)
    }

    /// The result of a call that must succeed.
    pub fn ok(&self, method: &str, params: Value) -> Value {
        let r = self.call(method, params.clone());
        assert!(r.get("error").is_none(), "{method} {params} failed: {r}");
        protocol::check_result(method, &r["result"])
            .unwrap_or_else(|e| panic!("{method}'s result is not as the protocol says ({e}): {r}"));
        r["result"].clone()
    }

    /// The error of a call that must fail with `code`.
    pub fn err(&self, method: &str, params: Value, code: i64) -> Value {
        let r = self.call(method, params.clone());
        let e = r
            .get("error")
            .unwrap_or_else(|| panic!("{method} {params} succeeded: {r}"))
            .clone();
        assert_eq!(e["code"], code, "{method} {params}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| m.len() > 5), "{e}");
        e
    }

    /// exec: (result, stdout, stderr).
    pub fn exec(&self, params: Value) -> (Value, Vec<u8>, Vec<u8>) {
        let id = self.send("exec", params);
        let r = self.wait(id);
        assert!(r.get("error").is_none(), "exec failed: {r}");
        protocol::check_result("exec", &r["result"]).unwrap();
        let (out, err) = self.take_output(id);
        (r["result"].clone(), out, err)
    }

    pub fn take_output(&self, id: u64) -> (Vec<u8>, Vec<u8>) {
        let mut i = self.inbox.0.lock().unwrap();
        let k = id.to_string();
        (
            i.stdout.remove(&k).unwrap_or_default(),
            i.stderr.remove(&k).unwrap_or_default(),
        )
    }

    /// Closes the input and waits for `serve` to return.
    pub fn close(&self) -> io::Result<()> {
        self.tx.lock().unwrap().take();
        let h = self.server.lock().unwrap().take().unwrap();
        h.join().unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(mut t) = self.tx.lock() {
            t.take();
        }
    }
}

/// Whether process `pid` is gone (or a zombie), waiting up to `timeout`.
pub fn process_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"));
        match stat {
            Err(_) => return true,
            Ok(s) => {
                // The state follows the command name in parentheses.
                let state = s
                    .rsplit_once(')')
                    .and_then(|(_, r)| r.trim().chars().next());
                if state == Some('Z') || state == Some('X') {
                    return true;
                }
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
