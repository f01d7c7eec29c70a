//! The JSON-RPC loop: one request per line in, whole lines out behind one lock.
//!
//! Leader and followers: one thread at a time reads requests. A request that needs
//! a thread (all but `cancel` and `status`) runs on the thread that read it, which
//! first hands the reading on to another (an idle one from `workers.rs`, or a new
//! one). Waking that thread is then off the request's path: on a two-core VM the
//! wake-up of a thread handed a job was about 0.07 ms of an `exec` of `/bin/true`.

use crate::error::ToolError;
use crate::guard::Guard;
use crate::params;
use crate::protocol::Notify as _;
use crate::protocol::{
    self, AllowDomain, CancelParams, CancelResult, Exec, Exists, Find, Grep, Id, Method, Mkdir,
    Notification, Read, Readdir, Ready, ReadyNote, Response, Stat, StatusPolicy, StatusResult,
    Write as WriteFile, control::HostStatus,
};
use crate::workers::Workers;
use crate::{AgentConfig, exec, fsops, search};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, OwnedFd};
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
    /// Sends one message as one line. The protocol's types always serialize (their
    /// maps have string keys, their paths are strings).
    pub fn send<T: Serialize>(&self, message: &T) {
        let mut line = serde_json::to_vec(message).unwrap_or_default();
        line.push(b'\n');
        let mut w = lock(&self.w);
        // A closed output is not fatal: the session ends when input closes.
        let _ = w.write_all(&line).and_then(|()| w.flush());
    }

    /// Sends notification `method` (a [`protocol::Notify::NAME`]).
    pub fn notify<P: Serialize>(&self, method: &'static str, params: P) {
        self.send(&Notification::new(method, params));
    }
}

/// A method's result, of whichever type, to be sent once the request is done.
trait Answer: Send {
    fn send(&self, out: &Out, id: Option<Id>);
}

impl<T: Serialize + Send> Answer for T {
    fn send(&self, out: &Out, id: Option<Id>) {
        out.send(&Response::ok(id, self));
    }
}

/// Runs method `M` on `params` parsed into its type.
fn call<M: Method>(
    params: Option<Value>,
    run: impl FnOnce(M::Params) -> Result<M::Result, ToolError>,
) -> Result<Box<dyn Answer>, ToolError>
where
    M::Result: Send + 'static,
{
    let answer = run(params::parse(params)?)?;
    Ok(Box::new(answer))
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
    /// The control stream to the host (`allowDomain`, `status`), if the agent
    /// was given one.
    control: Option<crate::control::Control>,
    /// Pending requests by their id.
    pending: Mutex<HashMap<Id, Arc<Token>>>,
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
        ReadyNote::NAME,
        Ready {
            version: config.version,
            backend: st.backend.clone(),
            workspace: st.guard.policy.workspace.to_string_lossy().into_owned(),
        },
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
                    None,
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

fn reply_err(out: &Out, id: Option<Id>, e: &ToolError) {
    out.send(&Response::<()>::err(id, e.to_object()));
}

/// Answers what is answered inline; returns a request that needs a thread.
fn handle_line(st: &State, line: &[u8]) -> Option<Request> {
    let text = line.strip_suffix(b"\r").unwrap_or(line);
    if text.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let mut req: Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) => return refused(&st.out, None, &ToolError::Parse(e.to_string())),
    };
    let Some(obj) = req.as_object_mut() else {
        return refused(
            &st.out,
            None,
            &ToolError::InvalidRequest(
                "a request must be a JSON object (batches are not supported)".into(),
            ),
        );
    };
    // A request without an id is a notification: run it, answer nothing.
    let notify_only = !obj.contains_key("id");
    let reply_id = match obj.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(Id::Number(n)),
        Some(Value::String(s)) => Some(Id::String(s)),
        Some(_) => {
            return refused(
                &st.out,
                None,
                &ToolError::InvalidRequest("id must be a number, a string or null".into()),
            );
        }
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return refused(
            &st.out,
            reply_id,
            &ToolError::InvalidRequest("jsonrpc must be \"2.0\"".into()),
        );
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        _ => {
            return refused(
                &st.out,
                reply_id,
                &ToolError::InvalidRequest("method must be a string".into()),
            );
        }
    };
    let params = obj.remove("params");

    // Cheap requests answer inline, in order.
    if method == protocol::Cancel::NAME || method == protocol::Status::NAME {
        let answer = if method == protocol::Cancel::NAME {
            call::<protocol::Cancel>(params, |p| Ok(cancel(st, &p)))
        } else {
            call::<protocol::Status>(params, |_| Ok(status(st)))
        };
        if !notify_only {
            respond(&st.out, reply_id, answer);
        }
        return None;
    }
    if !protocol::METHODS.contains(&method.as_str()) {
        if !notify_only {
            reply_err(&st.out, reply_id, &ToolError::MethodNotFound(method));
        }
        return None;
    }
    let key = if notify_only { None } else { reply_id.clone() };
    let token = Arc::new(Token::default());
    {
        let mut pending = lock(&st.pending);
        if pending.len() >= MAX_PENDING {
            drop(pending);
            if !notify_only {
                let e = ToolError::errno("request", std::path::Path::new(&method), libc::EAGAIN);
                reply_err(&st.out, reply_id, &e);
            }
            return None;
        }
        if let Some(k) = &key {
            if pending.contains_key(k) {
                drop(pending);
                return refused(
                    &st.out,
                    reply_id,
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

fn refused(out: &Out, id: Option<Id>, e: &ToolError) -> Option<Request> {
    reply_err(out, id, e);
    None
}

/// A request that needs a thread: counted in `running`, and in `pending` if it
/// has an id.
struct Request {
    method: String,
    params: Option<Value>,
    reply_id: Option<Id>,
    /// Its key in `pending`.
    key: Option<Id>,
    token: Arc<Token>,
    notify_only: bool,
}

impl Request {
    fn run(self, st: &State) {
        let method = &self.method;
        // No catch_unwind: a panic is a bug, and it ends the agent's process, so
        // the session ends and the client fails closed (see `serve` in lib.rs).
        let r = dispatch(st, method, self.reply_id.as_ref(), self.params, &self.token);
        // Remove from pending and read the cancel flag together, so a cancel
        // that answered true always sees its effect.
        let cancelled = {
            let mut pending = lock(&st.pending);
            if let Some(k) = &self.key {
                pending.remove(k);
            }
            self.token.is_cancelled()
        };
        let r = if cancelled && method != Exec::NAME {
            let id = self.reply_id.as_ref().map(Id::to_string);
            Err(ToolError::Cancelled(format!(
                "{method} request {}",
                id.as_deref().unwrap_or("null")
            )))
        } else {
            r
        };
        if !self.notify_only {
            respond(&st.out, self.reply_id, r);
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
                self.reply_id,
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

fn respond(out: &Out, id: Option<Id>, r: Result<Box<dyn Answer>, ToolError>) {
    match r {
        Ok(answer) => answer.send(out, id),
        Err(e) => reply_err(out, id, &e),
    }
}

fn dispatch(
    st: &State,
    method: &str,
    id: Option<&Id>,
    params: Option<Value>,
    token: &Token,
) -> Result<Box<dyn Answer>, ToolError> {
    let g = &st.guard;
    match method {
        Exec::NAME => call::<Exec>(params, |p| exec::exec(g, &st.out, id, &p, token)),
        Read::NAME => call::<Read>(params, |p| fsops::read(g, &p)),
        WriteFile::NAME => call::<WriteFile>(params, |p| fsops::write(g, p)),
        Stat::NAME => call::<Stat>(params, |p| fsops::stat(g, &p)),
        Exists::NAME => call::<Exists>(params, |p| fsops::exists(g, &p)),
        Readdir::NAME => call::<Readdir>(params, |p| fsops::readdir(g, &p)),
        Mkdir::NAME => call::<Mkdir>(params, |p| fsops::mkdir(g, &p)),
        Find::NAME => call::<Find>(params, |p| search::find(g, &p, token)),
        Grep::NAME => call::<Grep>(params, |p| search::grep(g, &p, token)),
        AllowDomain::NAME => call::<AllowDomain>(params, |p| match &st.control {
            Some(control) => control.allow_domain(&p),
            None => Err(crate::control::no_control(&p)),
        }),
        other => Err(ToolError::MethodNotFound(other.to_string())),
    }
}

fn cancel(st: &State, p: &CancelParams) -> CancelResult {
    let pending = lock(&st.pending);
    let found = match pending.get(&p.id) {
        Some(t) => {
            t.cancel();
            true
        }
        None => false,
    };
    CancelResult { cancelled: found }
}

fn status(st: &State) -> StatusResult {
    let policy = &st.guard.policy;
    let lossy = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let host = (st.control.as_ref())
        .and_then(crate::control::Control::host_status)
        .unwrap_or_else(|| told(st));
    // The agent's own and the broker's, oldest first (times are comparable text).
    let mut denials = st.guard.denials();
    denials.extend(host.denials);
    denials.sort_by(|a, b| a.time.cmp(&b.time));
    let writable = policy
        .writable_in_view()
        .chain(policy.scratch.iter().map(|s| s.as_path()))
        .map(lossy)
        .collect();
    let denied = policy
        .rules
        .iter()
        .filter(|r| r.access == cordon_policy::Access::Deny)
        .map(|r| lossy(&r.path))
        .collect();
    StatusResult {
        backend: host.backend,
        layers: host.layers,
        policy: StatusPolicy {
            workspace: lossy(&policy.workspace),
            net: host.net,
            allow_domains: host.allow_domains,
            writable,
            denied,
            read_only: policy.access_for(&policy.workspace) != cordon_policy::Access::Write,
        },
        denials,
    }
}

/// The host's part of `status` as the agent was told it at its start, for an
/// agent without a control stream (or whose host did not answer): the policy's
/// allow rules (none unless the mode is `allowlist`), and no broker refusals.
fn told(st: &State) -> HostStatus {
    let policy = &st.guard.policy;
    let allow_domains = if policy.net.value == cordon_policy::NetMode::Allowlist {
        policy.network.allow.iter().map(Into::into).collect()
    } else {
        Vec::new()
    };
    HostStatus {
        backend: st.backend.clone(),
        layers: st.layers.clone(),
        net: policy.net.value.into(),
        allow_domains,
        denials: Vec::new(),
        no_broker: None,
    }
}
