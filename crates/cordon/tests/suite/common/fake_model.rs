//! A scripted fake model for the pi tests (pi.rs, pi_cli.rs): an OpenAI-compatible
//! chat-completions server answering with server-sent events, over plain HTTP
//! ([`FakeModel::http`]) or over HTTPS with the test CA ([`FakeModel::https`]), on
//! 127.0.0.1 at a random port, on its own thread with its own tokio runtime.
//!
//! The scripted answer ([`scripted`]): answer N is the N-th tool call of the script
//! (N = the tool results the request carries), then a final text. Every request is
//! recorded in the [`ModelLog`]: its body, its `Authorization` header and the tool
//! results it carries. [`FakeModel::serve`] takes any other answer function.
#![allow(dead_code)] // each test crate uses a different part

use super::upstream::test_ca;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};

/// One scripted tool call: (id, tool name, arguments).
pub type ToolCall = (String, String, Value);

/// What the fake model received.
#[derive(Default)]
pub struct ModelLog {
    /// Every request body, for failure messages and leak checks.
    pub bodies: Vec<String>,
    /// The `Authorization` header of every request ("" when absent).
    pub authorizations: Vec<String>,
    /// The tool results of the latest request, in call order: (tool_call_id, text).
    pub results: Vec<(String, String)>,
}

/// The answer function: the request's `Authorization` header and body, the log to
/// record into; returns the event-stream body.
pub type Answer = dyn Fn(&str, &[u8], &mut ModelLog) -> String + Send + Sync;

/// A running fake model; it stops when dropped.
pub struct FakeModel {
    pub port: u16,
    pub log: Arc<Mutex<ModelLog>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The text of a message's content (a string, or the text parts of an array).
pub fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| p.get("text").and_then(Value::as_str).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

/// One server-sent event holding a chat completion chunk.
pub fn sse_chunk(delta: Value, finish: Option<&str>) -> String {
    let chunk = json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    format!("data: {chunk}\n\n")
}

/// The scripted answer: records the request, then sends the next tool call of
/// `calls` (or, once all have their results, a final text).
pub fn scripted(calls: &[ToolCall], auth: &str, body: &[u8], log: &mut ModelLog) -> String {
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    log.bodies.push(String::from_utf8_lossy(body).into_owned());
    log.authorizations.push(auth.to_string());
    log.results.clear();
    for m in req["messages"].as_array().into_iter().flatten() {
        if m["role"] == "tool" {
            let id = m["tool_call_id"].as_str().unwrap_or("").to_string();
            log.results.push((id, text_of(&m["content"])));
        }
    }
    let mut out = match calls.get(log.results.len()) {
        Some((id, name, args)) => {
            sse_chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "index": 0, "id": id, "type": "function",
                    "function": {"name": name, "arguments": args.to_string()},
                }]}),
                None,
            ) + &sse_chunk(json!({}), Some("tool_calls"))
        }
        None => {
            sse_chunk(json!({"role": "assistant", "content": "All done."}), None)
                + &sse_chunk(json!({}), Some("stop"))
        }
    };
    out += "data: [DONE]\n\n";
    out
}

impl FakeModel {
    /// The scripted model over plain HTTP.
    pub fn http(calls: Vec<ToolCall>) -> FakeModel {
        FakeModel::serve(None, move |auth, body, log| {
            scripted(&calls, auth, body, log)
        })
    }

    /// The scripted model over HTTPS, with a certificate of the test CA for `name`.
    pub fn https(name: &str, calls: Vec<ToolCall>) -> FakeModel {
        let tls = test_ca().server_config(&[name], &[b"http/1.1"]);
        FakeModel::serve(Some(tls), move |auth, body, log| {
            scripted(&calls, auth, body, log)
        })
    }

    /// The tool results of the latest request and every request body, as one text.
    pub fn all_text(&self) -> String {
        let log = self.log.lock().unwrap();
        let mut s: Vec<String> = log.results.iter().map(|(_, t)| t.clone()).collect();
        s.extend(log.bodies.iter().cloned());
        s.join("\n")
    }

    /// A model answering `/…/chat/completions` with `answer` (over TLS with `tls`, else
    /// plain HTTP) and everything else with 404.
    pub fn serve(
        tls: Option<Arc<rustls::ServerConfig>>,
        answer: impl Fn(&str, &[u8], &mut ModelLog) -> String + Send + Sync + 'static,
    ) -> FakeModel {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake model");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let tls = tls.map(tokio_rustls::TlsAcceptor::from);
        let log = Arc::new(Mutex::new(ModelLog::default()));
        let answer: Arc<Answer> = Arc::new(answer);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let serve = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let (tls, log, answer) = (tls.clone(), log2.clone(), answer.clone());
                        tokio::spawn(async move {
                            match tls {
                                Some(tls) => {
                                    if let Ok(stream) = tls.accept(tcp).await {
                                        connection(stream, log, answer).await;
                                    }
                                }
                                None => connection(tcp, log, answer).await,
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = stopped => {}
                    _ = serve => {}
                }
            });
        });
        FakeModel {
            port,
            log,
            _stop: stop,
        }
    }
}

/// Serves one HTTP/1.1 connection.
async fn connection<S>(stream: S, log: Arc<Mutex<ModelLog>>, answer: Arc<Answer>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (log, answer) = (log.clone(), answer.clone());
        async move {
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let chat = req.uri().path().ends_with("/chat/completions");
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let resp = if chat {
                let events = answer(&auth, &body, &mut log.lock().unwrap());
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "text/event-stream")
                    .header("cache-control", "no-cache")
                    .body(Full::new(Bytes::from(events)))
                    .unwrap()
            } else {
                Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(Full::new(Bytes::from_static(b"not found\n")))
                    .unwrap()
            };
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}
