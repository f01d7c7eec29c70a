//! The session's control stream to the broker: one JSON object per line each way.
//! A request `{"allow": "PATTERN"}` allows a domain for the rest of the session
//! (`cordon serve`'s `allowDomain`, after the user agreed); the answer is
//! `{"allowed": "PATTERN"}` or `{"error": "..."}`. `{"refusals": true}` answers
//! `{"refusals": [...]}`, the broker's recent refusals (for `status`). Only the session's agent holds
//! the other end; nothing the sandbox runs inherits it.

use crate::audit::Event;
use crate::broker::Broker;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The longest request line read.
const MAX_LINE: usize = 4096;

pub(crate) async fn serve(broker: Arc<Broker>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let reply = if line.len() > MAX_LINE {
            json!({"error": "request too long"})
        } else {
            answer(&broker, &line)
        };
        let mut text = reply.to_string();
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn answer(broker: &Broker, line: &str) -> Value {
    let request: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return json!({"error": format!("not JSON: {e}")}),
    };
    if request.get("refusals").is_some() {
        return json!({"refusals": broker.recent_refusals()});
    }
    let Some(pattern) = request.get("allow").and_then(Value::as_str) else {
        return json!({"error": "unknown request (expected {\"allow\": PATTERN} or {\"refusals\": true})"});
    };
    match broker.allow_domain(pattern) {
        Ok(shown) => {
            broker.allow(
                Event::Dns,
                &shown,
                None,
                "allowDomain (this session)",
                "rule",
            );
            json!({"allowed": shown})
        }
        Err(e) => json!({"error": e}),
    }
}
