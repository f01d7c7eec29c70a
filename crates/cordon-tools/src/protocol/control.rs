//! The session's control stream: what the agent inside the sandbox asks the
//! host, and what the host answers. One JSON object per line each way, one
//! request at a time. The host's side is cordon-session's `control` (the host
//! control endpoint, which every `cordon serve` session has whatever its network
//! mode); the agent's is this crate's `control`.
//!
//! - `{"allow": PATTERN, "origin": WHO}` ([`ControlRequest::AllowDomain`]):
//!   allow a domain for the rest of the session (`allowDomain`); `origin`
//!   (optional) says who asked. Answer `{"allowed": PATTERN}`, or an error.
//! - `{"status": true}` ([`ControlRequest::Status`]): what the host knows of the
//!   session ([`HostStatus`]). Answer `{"status": {...}}`.
//! - An error is `{"error": MESSAGE}` ([`ControlError`]), with `noBroker` when
//!   `allowDomain` was asked of a session that has no egress broker.
//!
//! The host reads the other end as hostile: it reads at most [`MAX_REQUEST`]
//! bytes of a line, and answers every line, even garbage, with one line.

use super::{AllowedDomain, Denial, Net};
use cordon_policy::{NetMode, Origin, Sourced};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// The longest request line the host reads, in bytes (without its newline). A
/// longer one is answered with an error at once and the rest of it skipped.
pub const MAX_REQUEST: usize = 4096;

/// A request: its key names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ControlRequest {
    /// Allow `allow` (`example.com`, `*.example.com`, optionally `:PORT`) for the
    /// rest of the session; `origin` says who asked (the host keeps one line of at
    /// most 200 characters of it).
    AllowDomain {
        allow: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
    },
    /// What the host knows of the session.
    Status { status: Yes },
}

/// `true`, and nothing else: the value of a request named by its key alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Yes;

impl Serialize for Yes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(true)
    }
}

impl<'de> Deserialize<'de> for Yes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Yes, D::Error> {
        if bool::deserialize(d)? {
            Ok(Yes)
        } else {
            Err(de::Error::invalid_value(
                de::Unexpected::Bool(false),
                &"true",
            ))
        }
    }
}

/// The host's answer to one request (or to a line that is none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ControlReply {
    /// First, so that an answer with `error` is read as one, whatever else it has.
    Error(ControlError),
    /// `allowDomain` done: the pattern as the rule now in force writes it.
    Allowed {
        allowed: String,
    },
    Status {
        status: HostStatus,
    },
}

/// Why the host did not do what was asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlError {
    /// A sentence for a human.
    pub error: String,
    /// Set when `allowDomain` was asked of a session without an egress broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_broker: Option<NoBroker>,
}

impl ControlError {
    pub fn new(error: impl Into<String>) -> ControlError {
        ControlError {
            error: error.into(),
            no_broker: None,
        }
    }
}

impl From<NoBroker> for ControlError {
    fn from(why: NoBroker) -> ControlError {
        ControlError {
            error: why.to_string(),
            no_broker: Some(why),
        }
    }
}

/// What the host knows of the session, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    /// The backend the session runs in (`os`).
    pub backend: String,
    /// The isolation layers in force, as the backend reports them.
    pub layers: serde_json::Value,
    pub net: Net,
    /// The allow rules in force, as the egress broker has them now (the
    /// policy's, then those the session added); none without a broker.
    pub allow_domains: Vec<AllowedDomain>,
    /// The broker's recent refusals, oldest first, as denials (`op` `network`,
    /// `path` `host:port` or the name a DNS question asked for); none without a
    /// broker.
    pub denials: Vec<Denial>,
    /// Why `allowDomain` cannot widen this session: absent when it can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_broker: Option<NoBroker>,
}

/// Why a session has no egress broker, so that `allowDomain` has nothing to
/// widen: the network mode, and the setting that chose it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NoBroker {
    /// `host`: every name is reachable already; `none`: the network was turned
    /// off on purpose and stays off; `allowlist`: cordon started the session
    /// without a broker (its network is then off too).
    pub net: Net,
    /// The setting that chose the mode: `--net none`, `"net": "none" of the user
    /// config`, ...
    pub set_by: String,
}

impl NoBroker {
    /// Why a session whose policy chose network mode `net` has no broker
    /// (whether or not it has one: the caller knows that).
    pub fn of(net: &Sourced<NetMode>) -> NoBroker {
        let mode = net_name(net.value);
        let set_by = match &net.origin {
            Origin::Flag { flag } => format!("{flag} {mode}"),
            origin => format!("\"net\": \"{mode}\" of the {origin}"),
        };
        NoBroker {
            net: net.value.into(),
            set_by,
        }
    }
}

impl fmt::Display for NoBroker {
    /// The reason and the fix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set_by = &self.set_by;
        match self.net {
            Net::None => write!(
                f,
                "this session's network is off by {set_by}, and stays off: a session started with its network off cannot be widened. To allow domains during a session, start one without that setting (by default a session starts with nothing allowed, and allowDomain adds names)"
            ),
            Net::Host => write!(
                f,
                "this session has the host's whole network ({set_by}): every name is already reachable, and there is no allowlist to widen. To confine a session to the names it needs, start one without that setting (by default a session starts with nothing allowed, and allowDomain adds names)"
            ),
            Net::Allowlist => write!(
                f,
                "this session has no egress broker (cordon started it without one), so it has no network to widen"
            ),
        }
    }
}

fn net_name(mode: NetMode) -> &'static str {
    match mode {
        NetMode::None => "none",
        NetMode::Host => "host",
        NetMode::Allowlist => "allowlist",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wire<T: Serialize>(t: &T) -> serde_json::Value {
        serde_json::to_value(t).unwrap()
    }

    /// `allowDomain`'s exchange is the one the broker spoke before the endpoint
    /// took the stream over: `{"allow", "origin"}` in, `{"allowed"}` or
    /// `{"error"}` out.
    #[test]
    fn the_allow_domain_exchange_keeps_its_format() {
        let request = ControlRequest::AllowDomain {
            allow: "example.com".into(),
            origin: Some("the user".into()),
        };
        assert_eq!(
            wire(&request),
            json!({"allow": "example.com", "origin": "the user"})
        );
        let bare: ControlRequest = serde_json::from_str(r#"{"allow": "x.test"}"#).unwrap();
        assert_eq!(
            bare,
            ControlRequest::AllowDomain {
                allow: "x.test".into(),
                origin: None
            }
        );
        let allowed = ControlReply::Allowed {
            allowed: "example.com".into(),
        };
        assert_eq!(wire(&allowed), json!({"allowed": "example.com"}));
        let refused = ControlReply::Error(ControlError::new("no"));
        assert_eq!(wire(&refused), json!({"error": "no"}));
        for reply in [allowed, refused] {
            let back: ControlReply = serde_json::from_value(wire(&reply)).unwrap();
            assert_eq!(back, reply);
        }
    }

    #[test]
    fn status_is_asked_with_true_only() {
        let status: ControlRequest = serde_json::from_str(r#"{"status": true}"#).unwrap();
        assert_eq!(status, ControlRequest::Status { status: Yes });
        assert_eq!(wire(&status), json!({"status": true}));
        for bad in [
            r#"{"status": false}"#,
            r#"{"status": 1}"#,
            r#"{"allow": 5}"#,
            r#"{}"#,
            r#"[]"#,
        ] {
            assert!(
                serde_json::from_str::<ControlRequest>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_status_and_a_typed_refusal_round_trip() {
        let why = NoBroker {
            net: Net::Host,
            set_by: "--net host".into(),
        };
        let status = ControlReply::Status {
            status: HostStatus {
                backend: "os".into(),
                layers: json!({"seccomp": true}),
                net: Net::Host,
                allow_domains: vec![],
                denials: vec![],
                no_broker: Some(why.clone()),
            },
        };
        let text = serde_json::to_string(&status).unwrap();
        assert!(text.contains(r#""allowDomains":[]"#), "{text}");
        assert!(text.contains(r#""noBroker":{"net":"host","setBy":"--net host"}"#));
        assert_eq!(serde_json::from_str::<ControlReply>(&text).unwrap(), status);
        let refused = ControlReply::Error(why.into());
        let back: ControlReply = serde_json::from_value(wire(&refused)).unwrap();
        assert_eq!(back, refused);
    }

    #[test]
    fn no_broker_names_the_setting_and_the_fix() {
        let flag = NoBroker::of(&Sourced::new(
            NetMode::None,
            Origin::Flag {
                flag: "--net".into(),
            },
        ));
        assert_eq!(flag.set_by, "--net none");
        let text = flag.to_string();
        assert!(text.contains("off by --net none, and stays off"), "{text}");
        assert!(text.contains("start one without that setting"), "{text}");
        let host = NoBroker {
            net: Net::Host,
            set_by: "\"net\": \"host\" of the user config".into(),
        }
        .to_string();
        assert!(host.contains("every name is already reachable"), "{host}");
        assert!(
            host.contains("\"net\": \"host\" of the user config"),
            "{host}"
        );
    }
}
