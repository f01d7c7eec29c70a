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
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};

/// The longest request line read.
const MAX_LINE: usize = 4096;
/// The longest `origin` kept (characters).
const MAX_ORIGIN: usize = 200;

pub(crate) async fn serve<S: AsyncRead + AsyncWrite>(broker: &State, stream: S) {
    let (read, mut write) = tokio::io::split(stream);
    let mut read = BufReader::new(read);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        // At most MAX_LINE bytes and the newline are held: a longer line is
        // answered at once and the rest of it skipped as it comes, so the other
        // end cannot make the broker buffer without bound.
        match (&mut read)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let too_long = line.last() != Some(&b'\n') && line.len() > MAX_LINE;
        let reply = if too_long {
            json!({"error": "request too long"})
        } else {
            answer(
                broker,
                String::from_utf8_lossy(&line).trim_end_matches('\n'),
            )
        };
        let mut text = reply.to_string();
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            return;
        }
        if too_long && !skip_line(&mut read).await {
            return;
        }
    }
}

/// Skips the rest of a line, a buffer at a time; false at the end of the stream.
async fn skip_line<R: AsyncBufRead + Unpin>(read: &mut R) -> bool {
    loop {
        let Ok(chunk) = read.fill_buf().await else {
            return false;
        };
        if chunk.is_empty() {
            return false;
        }
        match chunk.iter().position(|b| *b == b'\n') {
            Some(end) => {
                read.consume(end + 1);
                return true;
            }
            None => {
                let all = chunk.len();
                read.consume(all);
            }
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
