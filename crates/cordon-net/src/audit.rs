//! The audit log: every decision of the broker as one JSON object per line, and,
//! the first time a host is refused, one `cordon:` line on stderr naming the flag
//! that would allow it.

use serde::Serialize;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// What the broker was deciding about.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A DNS question.
    Dns,
    /// A TCP connection.
    Connect,
    /// One HTTP request on a connection the broker reads.
    Request,
    /// A domain allowed while the session ran (`allowDomain`): `host` is the
    /// pattern, `reason` names who asked.
    AllowDomain,
}

/// One line of the audit log.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub event: Event,
    pub host: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub allowed: bool,
    /// Why: the rule that allowed or denied it with its origin ([`rule_reason`]),
    /// or the reason it was refused.
    pub reason: &'a str,
    /// How an allowed connection is carried: passthrough, terminated, http, raw, local.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<&'a str>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: f64,
    sandbox: u32,
    #[serde(flatten)]
    record: &'a Record<'a>,
}

/// Refusal notices held back instead of printed, while a full-screen program
/// (pi's) owns the terminal cordon's stderr is on: a line there would be drawn
/// over its screen. The caller prints them after the run ([`HeldNotices::take`]).
#[derive(Clone, Debug, Default)]
pub struct HeldNotices(Arc<Mutex<Vec<String>>>);

impl HeldNotices {
    /// The notices held so far (each without the `cordon: ` prefix), emptied.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Where records go. Writing is best effort: a full disk must not stop the
/// sandbox's network, so failures to write are ignored after the file was opened.
pub struct Audit {
    file: Option<Mutex<File>>,
    notices: bool,
    noticed: Mutex<HashSet<String>>,
    held: Option<HeldNotices>,
}

impl Audit {
    /// Appends to `path` (made with its directory if missing), and prints a
    /// notice on stderr for the first refusal of each host when `notices`.
    pub fn open(path: &Path, notices: bool) -> std::io::Result<Audit> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Audit {
            file: Some(Mutex::new(file)),
            notices,
            noticed: Mutex::new(HashSet::new()),
            held: None,
        })
    }

    /// An audit that only prints notices (for tests and benchmarks).
    pub fn notices_only() -> Audit {
        Audit {
            file: None,
            notices: true,
            noticed: Mutex::new(HashSet::new()),
            held: None,
        }
    }

    /// Holds the notices in `held` from now on instead of printing them.
    pub fn hold_notices(&mut self, held: HeldNotices) {
        self.held = Some(held);
    }

    pub fn record(&self, record: &Record<'_>) {
        if let Some(file) = &self.file {
            let time = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let line = Line {
                time,
                sandbox: std::process::id(),
                record,
            };
            if let Ok(mut text) = serde_json::to_vec(&line) {
                text.push(b'\n');
                let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
                let _ = file.write_all(&text);
            }
        }
        if !record.allowed && self.notices {
            self.notice(record);
        }
    }

    fn notice(&self, record: &Record<'_>) {
        let mut noticed = self.noticed.lock().unwrap_or_else(|e| e.into_inner());
        if !noticed.insert(record.host.to_string()) {
            return;
        }
        let what = match record.port {
            Some(port) => format!("{}:{port}", record.host),
            None => record.host.to_string(),
        };
        let line = format!(
            "network: refused {what}: {}; {}",
            record.reason,
            hint(record)
        );
        match &self.held {
            Some(held) => held.0.lock().unwrap_or_else(|e| e.into_inner()).push(line),
            // \r too: with `cordon shell` the terminal may be in raw mode.
            None => eprint!("cordon: {line}\r\n"),
        }
    }
}

/// A rule as an audit reason: what it matches, its preset, and where it came
/// from, as `cordon policy` lists it (`registry.npmjs.org (preset npm) ← flag
/// --allow-preset`), so the log names the flag or config line to change.
pub fn rule_reason(
    what: impl std::fmt::Display,
    preset: Option<&str>,
    origin: &cordon_policy::Origin,
) -> String {
    match preset {
        Some(preset) => format!("{what} (preset {preset}) ← {origin}"),
        None => format!("{what} ← {origin}"),
    }
}

/// The flag that would have allowed what `record` refused.
fn hint(record: &Record<'_>) -> String {
    if record.reason.contains("an address of this host") {
        return format!(
            "to reach a service on this host: --allow-local ADDR:{}",
            record.port.unwrap_or(0)
        );
    }
    if record.reason.starts_with("denied by ") {
        return "a deny rule wins over every allow: drop that rule to reach it".into();
    }
    if record.reason.contains("--allow-local") {
        return format!(
            "to reach a service on the host: --allow-local 127.0.0.1:{}",
            record.port.unwrap_or(0)
        );
    }
    if record.reason.contains("connection failed") || record.reason.contains("does not resolve") {
        return "the host cannot reach it either".into();
    }
    if record.reason.contains("may not reach") {
        return format!(
            "if you trust it, state its address with --resolve {}:ADDR",
            record.host
        );
    }
    if record.reason.contains("address") {
        return "name the host and allow it with --allow-domain NAME".into();
    }
    match record.port {
        Some(port) if port != 80 && port != 443 => {
            format!("to allow it: --allow-domain {}:{port}", record.host)
        }
        _ => format!("to allow it: --allow-domain {}", record.host),
    }
}
