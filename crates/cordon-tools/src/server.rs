//! The JSON-RPC loop: one request per line in, whole lines out behind one lock.
//!
//! Leader and followers: one thread at a time reads requests. A request that needs
//! a thread (all but `cancel` and `status`) runs on the thread that read it, which
//! first hands the reading on to another (an idle one from `workers.rs`, or a new
//! one). Waking that thread is then off the request's path: on a two-core VM the
//! wake-up of a thread handed a job was about 0.07 ms of an `exec` of `/bin/true`.

use crate::error::ToolError;
use crate::guard::Guard;
use crate::params::Params;
use crate::workers::Workers;
use crate::{AgentConfig, exec, fsops, search};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The longest request line accepted (a `write` carries the whole file).
pub const MAX_LINE: usize = 256 << 20;
/// Most requests in flight at once; more get error 3 (EAGAIN).
pub const MAX_PENDING: usize = 1024;
/// How long `serve` waits at EOF for cancelled requests to finish.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The output channel: whole lines, one writer at a time.
pub struct Out {
    w: Mutex<Box<dyn Write + Send>>,
}

impl Out {
    pub fn send(&self, v: &Value) {
        let mut line = serde_json::to_vec(v).unwrap_or_default();
        line.push(b'\n');
        let mut w = lock(&self.w);
        // A closed output is not fatal: the session ends when input closes.
        let _ = w.write_all(&line).and_then(|()| w.flush());
    }

    pub fn notify(&self, method: &str, params: Value) {
        self.send(&json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }
}

/// Cancellation of one request; an `exec` registers a pipe to be woken through.
#[derive(Default)]
pub struct Token {
    cancelled: AtomicBool,
    wake: Mutex<Option<Arc<OwnedFd>>>,
}

impl Token {
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if let Some(fd) = lock(&self.wake).as_ref() {
            // SAFETY: a one-byte write to a pipe we own (non-blocking).
            unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        }
    }

    pub fn set_wake(&self, fd: Option<Arc<OwnedFd>>) {
        *lock(&self.wake) = fd;
    }
}

struct State {
    guard: Guard,
    out: Out,
    backend: String,
    layers: Value,
    /// The egress broker's control stream, if the session has a broker.
    control: Option<crate::control::Control>,
    /// Pending requests by the JSON text of their id.
    pending: Mutex<HashMap<String, Arc<Token>>>,
    /// Requests in flight (threads running), with a condvar for the end.
    running: Mutex<usize>,
    idle: Condvar,
    workers: Workers,
    /// The requests; read by the leader only.
    input: Mutex<Box<dyn BufRead + Send>>,
    /// How the input ended, once it has.
    end: Mutex<Option<std::io::Result<()>>>,
    ended: Condvar,
}

/// Runs the agent: `ready`, then requests until `input` ends.
pub fn serve<R, W>(config: AgentConfig, input: R, output: W) -> std::io::Result<()>
where
    R: BufRead + Send + 'static,
    W: Write + Send + 'static,
{
    let st = Arc::new(State {
        guard: Guard::new(config.policy),
        out: Out {
            w: Mutex::new(Box::new(output)),
        },
        backend: config.backend,
        layers: config.layers,
        control: config.control_fd.and_then(crate::control::Control::adopt),
        pending: Mutex::new(HashMap::new()),
        running: Mutex::new(0),
        idle: Condvar::new(),
        workers: Workers::new(),
        input: Mutex::new(Box::new(input)),
        end: Mutex::new(None),
        ended: Condvar::new(),
    });
    st.out.notify(
        "ready",
        json!({
            "version": config.version,
            "backend": st.backend,
            "workspace": st.guard.policy.workspace,
        }),
    );
    // This thread stays free to end the session; the reading starts on another.
    let first = st.clone();
    st.workers.run(move || lead(&first))?;
    let result = {
        let mut end = lock(&st.end);
        loop {
            match end.take() {
                Some(r) => break r,
                None => end = st.ended.wait(end).unwrap_or_else(|e| e.into_inner()),
            }
        }
    };
    // End: cancel everything still running (kills exec process groups), then
    // give the handlers a moment to finish.
    for t in lock(&st.pending).values() {
        t.cancel();
    }
    let mut n = lock(&st.running);
    let deadline = std::time::Instant::now() + DRAIN_WAIT;
    while *n > 0 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        n = st
            .idle
            .wait_timeout(n, left)
            .map_or_else(|e| e.into_inner().0, |r| r.0);
    }
    result
}

/// Reads requests until one needs a thread: hands the reading on to another
/// thread and runs that request here. At the end of input, records how it ended.
fn lead(st: &Arc<State>) {
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = read_line(&mut *lock(&st.input), &mut line);
        match read {
            Ok(Line::Eof) => return finish(st, Ok(())),
            Err(e) => return finish(st, Err(e)),
            Ok(Line::TooLong) => {
                reply_err(
                    &st.out,
                    &Value::Null,
                    &ToolError::InvalidRequest(format!("the line is longer than {MAX_LINE} bytes")),
                );
            }
            Ok(Line::Ok) => {
                let Some(request) = handle_line(st, &line) else {
                    continue;
                };
                let next = st.clone();
                match st.workers.run(move || lead(&next)) {
                    Ok(()) => return request.run(st),
                    // No thread to read on: refuse this one and go on reading here.
                    Err(e) => request.refuse(st, &e),
                }
            }
        }
    }
}

fn finish(st: &State, how: std::io::Result<()>) {
    *lock(&st.end) = Some(how);
    st.ended.notify_all();
}

enum Line {
    Ok,
    Eof,
    TooLong,
}

/// Reads one line into `buf` (without the newline), refusing more than MAX_LINE.
fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<Line> {
    let mut too_long = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(if too_long {
                Line::TooLong
            } else if buf.is_empty() {
                Line::Eof
            } else {
                Line::Ok
            });
        }
        let (chunk, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..i], i + 1),
            None => (avail, avail.len()),
        };
        let found = done > chunk.len();
        if !too_long {
            if buf.len() + chunk.len() > MAX_LINE {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        r.consume(done);
        if found {
            return Ok(if too_long { Line::TooLong } else { Line::Ok });
        }
    }
}

fn reply_err(out: &Out, id: &Value, e: &ToolError) {
    out.send(&json!({ "jsonrpc": "2.0", "id": id, "error": e.to_json() }));
}

/// Answers what is answered inline; returns a request that needs a thread.
fn handle_line(st: &State, line: &[u8]) -> Option<Request> {
    let text = line.strip_suffix(b"\r").unwrap_or(line);
    if text.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let mut req: Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) => return refused(&st.out, &Value::Null, &ToolError::Parse(e.to_string())),
    };
    let Some(obj) = req.as_object_mut() else {
        return refused(
            &st.out,
            &Value::Null,
            &ToolError::InvalidRequest(
                "a request must be a JSON object (batches are not supported)".into(),
            ),
        );
    };
    // A request without an id is a notification: run it, answer nothing.
    let id = obj.remove("id");
    let reply_id = id.clone().unwrap_or(Value::Null);
    if !matches!(
        id,
        None | Some(Value::Null | Value::Number(_) | Value::String(_))
    ) {
        return refused(
            &st.out,
            &Value::Null,
            &ToolError::InvalidRequest("id must be a number, a string or null".into()),
        );
    }
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return refused(
            &st.out,
            &reply_id,
            &ToolError::InvalidRequest("jsonrpc must be \"2.0\"".into()),
        );
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        _ => {
            return refused(
                &st.out,
                &reply_id,
                &ToolError::InvalidRequest("method must be a string".into()),
            );
        }
    };
    let params = obj.remove("params");
    let notify_only = id.is_none();

    // Cheap requests answer inline, in order.
    if method == "cancel" || method == "status" {
        let r = Params::new(params.as_ref()).and_then(|p| {
            if method == "cancel" {
                cancel(st, &p)
            } else {
                Ok(status(st))
            }
        });
        if !notify_only {
            respond(&st.out, &reply_id, r);
        }
        return None;
    }
    if !is_method(&method) {
        if !notify_only {
            reply_err(&st.out, &reply_id, &ToolError::MethodNotFound(method));
        }
        return None;
    }
    let key = (!notify_only && !reply_id.is_null()).then(|| reply_id.to_string());
    let token = Arc::new(Token::default());
    {
        let mut pending = lock(&st.pending);
        if pending.len() >= MAX_PENDING {
            drop(pending);
            if !notify_only {
                let e = ToolError::errno("request", std::path::Path::new(&method), libc::EAGAIN);
                reply_err(&st.out, &reply_id, &e);
            }
            return None;
        }
        if let Some(k) = &key {
            if pending.contains_key(k) {
                drop(pending);
                return refused(
                    &st.out,
                    &reply_id,
                    &ToolError::InvalidRequest(format!(
                        "id {k} is already in use by a pending request"
                    )),
                );
            }
            pending.insert(k.clone(), token.clone());
        }
    }
    *lock(&st.running) += 1;
    Some(Request {
        method,
        params,
        reply_id,
        key,
        token,
        notify_only,
    })
}

fn refused(out: &Out, id: &Value, e: &ToolError) -> Option<Request> {
    reply_err(out, id, e);
    None
}

/// A request that needs a thread: counted in `running`, and in `pending` if it
/// has an id.
struct Request {
    method: String,
    params: Option<Value>,
    reply_id: Value,
    /// Its key in `pending`.
    key: Option<String>,
    token: Arc<Token>,
    notify_only: bool,
}

impl Request {
    fn run(self, st: &State) {
        let method = &self.method;
        let r = catch_unwind(AssertUnwindSafe(|| {
            let p = Params::new(self.params.as_ref())?;
            dispatch(st, method, &self.reply_id, &p, &self.token)
        }))
        .unwrap_or_else(|_| Err(ToolError::Internal(format!("{method} panicked"))));
        // Remove from pending and read the cancel flag together, so a cancel
        // that answered true always sees its effect.
        let cancelled = {
            let mut pending = lock(&st.pending);
            if let Some(k) = &self.key {
                pending.remove(k);
            }
            self.token.is_cancelled()
        };
        let r = if cancelled && method != "exec" {
            Err(ToolError::Cancelled(format!(
                "{method} request {}",
                self.reply_id
            )))
        } else {
            r
        };
        if !self.notify_only {
            respond(&st.out, &self.reply_id, r);
        }
        st.done();
    }

    /// Answers that it cannot run, for want of a thread to read on meanwhile.
    fn refuse(self, st: &State, e: &std::io::Error) {
        if let Some(k) = self.key.as_ref() {
            lock(&st.pending).remove(k);
        }
        st.done();
        if !self.notify_only {
            reply_err(
                &st.out,
                &self.reply_id,
                &ToolError::Internal(format!("cannot start a thread: {e}")),
            );
        }
    }
}

impl State {
    /// One request fewer running.
    fn done(&self) {
        let mut n = lock(&self.running);
        *n -= 1;
        self.idle.notify_all();
    }
}

fn respond(out: &Out, id: &Value, r: Result<Value, ToolError>) {
    match r {
        Ok(v) => out.send(&json!({ "jsonrpc": "2.0", "id": id, "result": v })),
        Err(e) => reply_err(out, id, &e),
    }
}

fn is_method(m: &str) -> bool {
    matches!(
        m,
        "exec"
            | "read"
            | "write"
            | "stat"
            | "exists"
            | "readdir"
            | "mkdir"
            | "find"
            | "grep"
            | "allowDomain"
    )
}

fn dispatch(
    st: &State,
    method: &str,
    id: &Value,
    p: &Params,
    token: &Token,
) -> Result<Value, ToolError> {
    let g = &st.guard;
    match method {
        "exec" => exec::exec(g, &st.out, id, p, token),
        "read" => fsops::read(g, p),
        "write" => fsops::write(g, p),
        "stat" => fsops::stat(g, p),
        "exists" => fsops::exists(g, p),
        "readdir" => fsops::readdir(g, p),
        "mkdir" => fsops::mkdir(g, p),
        "find" => search::find(g, p, token),
        "grep" => search::grep(g, p, token),
        "allowDomain" => crate::control::allow_domain(
            st.control.as_ref(),
            &g.policy,
            p.str("domain")?,
            p.opt_str("origin")?,
        ),
        other => Err(ToolError::MethodNotFound(other.to_string())),
    }
}

fn cancel(st: &State, p: &Params) -> Result<Value, ToolError> {
    let id = p
        .raw("id")
        .ok_or_else(|| ToolError::invalid("id", "is required"))?;
    if !matches!(id, Value::Number(_) | Value::String(_)) {
        return Err(ToolError::invalid("id", "must be a number or a string"));
    }
    let pending = lock(&st.pending);
    let found = match pending.get(&id.to_string()) {
        Some(t) => {
            t.cancel();
            true
        }
        None => false,
    };
    Ok(json!({ "cancelled": found }))
}

fn status(st: &State) -> Value {
    let policy = &st.guard.policy;
    // The agent's own and the broker's, oldest first (times are comparable text).
    let mut denials = st.guard.denials();
    denials.extend(crate::control::network_denials(st.control.as_ref()));
    denials.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
    let writable: Vec<_> = policy
        .writable_in_view()
        .chain(policy.scratch.iter().map(|s| s.as_path()))
        .collect();
    let denied: Vec<_> = policy
        .rules
        .iter()
        .filter(|r| r.access == cordon_policy::Access::Deny)
        .map(|r| &r.path)
        .collect();
    json!({
        "backend": st.backend,
        "layers": st.layers,
        "policy": {
            "workspace": policy.workspace,
            "net": policy.net.value,
            "allowDomains": crate::control::allowed_domains(st.control.as_ref(), policy),
            "writable": writable,
            "denied": denied,
            "readOnly": policy.access_for(&policy.workspace) != cordon_policy::Access::Write,
        },
        "denials": denials,
    })
}
