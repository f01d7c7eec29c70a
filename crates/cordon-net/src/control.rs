//! The session's control stream to the broker: one JSON object per line each way.
//!
//! - `{"allow": "PATTERN", "origin": "WHO"}` allows a domain for the rest of the
//!   session (`cordon serve`'s `allowDomain`, after the user agreed); `origin`
//!   (optional) says who asked, and goes into the rule's origin and the audit log.
//!   The answer is `{"allowed": "PATTERN"}` or `{"error": "..."}`.
//! - `{"refusals": true}` answers `{"refusals": [...]}`, the broker's recent
//!   refusals (for `status`).
//! - `{"rules": true}` answers `{"allow": [{"domain", "preset", "origin"}]}`, the
//!   allow rules in force: the policy's and the session's (for `status`).
//!
//! Only the session's agent holds the other end; nothing the sandbox runs inherits it.

use crate::state::State;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// The longest request line read.
const MAX_LINE: usize = 4096;
/// The longest `origin` kept (characters).
const MAX_ORIGIN: usize = 200;

pub(crate) async fn serve<S: AsyncRead + AsyncWrite>(broker: &State, stream: S) {
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let reply = if line.len() > MAX_LINE {
            json!({"error": "request too long"})
        } else {
            answer(broker, &line)
        };
        let mut text = reply.to_string();
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn answer(broker: &State, line: &str) -> Value {
    let request: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return json!({"error": format!("not JSON: {e}")}),
    };
    if request.get("refusals").is_some() {
        return json!({"refusals": broker.recent_refusals()});
    }
    if request.get("rules").is_some() {
        return json!({"allow": broker.allowed_domains()});
    }
    let Some(pattern) = request.get("allow").and_then(Value::as_str) else {
        return json!({"error": "unknown request (expected {\"allow\": PATTERN}, {\"refusals\": true} or {\"rules\": true})"});
    };
    let origin = request.get("origin").and_then(Value::as_str);
    match broker.allow_domain(pattern, origin_reason(origin)) {
        Ok(shown) => json!({"allowed": shown}),
        Err(e) => json!({"error": e}),
    }
}

/// The origin of a rule `allowDomain` added: the method, and who asked when the
/// client said so (one line, control characters dropped, at most [`MAX_ORIGIN`]
/// characters).
fn origin_reason(origin: Option<&str>) -> String {
    let who: String = origin
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_ORIGIN)
        .collect();
    let who = who.trim();
    if who.is_empty() {
        "allowDomain".to_string()
    } else {
        format!("allowDomain, {who}")
    }
}

#[cfg(test)]
mod tests {
    use super::origin_reason;

    #[test]
    fn the_origin_is_one_short_line() {
        assert_eq!(origin_reason(None), "allowDomain");
        assert_eq!(origin_reason(Some("  ")), "allowDomain");
        assert_eq!(
            origin_reason(Some("the user agreed\n\u{1b}[2Jin pi")),
            "allowDomain, the user agreed[2Jin pi"
        );
        let long = "x".repeat(1000);
        assert_eq!(
            origin_reason(Some(&long)).len(),
            "allowDomain, ".len() + 200
        );
    }
}
