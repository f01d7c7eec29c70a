//! The network part of a resolved policy: which names the egress broker lets
//! through, which host services it forwards, which secrets it swaps in, and the
//! user's own statements about where names live.
//!
//! Names are compared lowercase, without a trailing dot.

use crate::error::DomainError;
use crate::model::Origin;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// The ports a domain pattern without `:PORT` allows.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// The name under which `--allow-local` services are reachable inside, besides the
/// sandbox's own loopback address with the same port.
pub const LOCAL_SERVICE_NAME: &str = "host.cordon.internal";

/// A domain pattern: `example.com` (that name only) or `*.example.com` (names
/// below it, not the name itself), with an optional port (else 80 and 443).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DomainPattern {
    /// Lowercase, no trailing dot; for a wildcard, the suffix after `*.`.
    pub name: String,
    pub wildcard: bool,
    pub port: Option<u16>,
}

impl DomainPattern {
    /// Parse `example.com`, `*.example.com`, `example.com:8443`, or a URL of
    /// http or https, which stands for its host and port (`https://example.com`
    /// is `example.com:443`, `http://example.com:8080/` is `example.com:8080`). A
    /// URL with a path, query or user is refused: cordon allows hosts, not parts of
    /// them. The error says what is wrong with the pattern, for the caller to
    /// prefix with its origin.
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let text = text.trim();
        if let Some((scheme, rest)) = text.split_once("://") {
            return Self::parse_url(text, scheme, rest);
        }
        Self::parse_host_port(text, text)
    }

    /// `SCHEME://HOST[:PORT][/]`: the scheme gives the port unless one is written.
    fn parse_url(text: &str, scheme: &str, rest: &str) -> Result<Self, DomainError> {
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(DomainError::Scheme(text.to_string())),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if !tail.is_empty() && tail != "/" {
            return Err(DomainError::Path {
                input: text.to_string(),
                scheme: scheme.to_string(),
                authority: authority.to_string(),
            });
        }
        if authority.contains('@') {
            return Err(DomainError::UserInfo(text.to_string()));
        }
        let mut pattern = Self::parse_host_port(text, authority)?;
        pattern.port.get_or_insert(default_port);
        Ok(pattern)
    }

    /// `HOST[:PORT]` of `text`.
    fn parse_host_port(text: &str, host_port: &str) -> Result<Self, DomainError> {
        let (host, port) = match host_port.rsplit_once(':') {
            Some((h, p)) => {
                let port: u16 =
                    p.parse()
                        .ok()
                        .filter(|&p| p != 0)
                        .ok_or_else(|| DomainError::Port {
                            input: text.to_string(),
                            port: p.to_string(),
                        })?;
                (h, Some(port))
            }
            None => (host_port, None),
        };
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        let name = normalize_name(name).ok_or_else(|| DomainError::Name(text.to_string()))?;
        if name.parse::<std::net::Ipv4Addr>().is_ok() {
            return Err(DomainError::IpAddress(text.to_string()));
        }
        Ok(DomainPattern {
            name,
            wildcard,
            port,
        })
    }

    /// Does the pattern cover `host` (normalised) regardless of port?
    pub fn matches_name(&self, host: &str) -> bool {
        if self.wildcard {
            host.len() > self.name.len() + 1
                && host.ends_with(&self.name)
                && host.as_bytes()[host.len() - self.name.len() - 1] == b'.'
        } else {
            host == self.name
        }
    }

    /// Does the pattern cover `host:port`?
    pub fn matches(&self, host: &str, port: u16) -> bool {
        self.matches_name(host) && self.ports().contains(&port)
    }

    /// The ports this pattern allows.
    pub fn ports(&self) -> Vec<u16> {
        match self.port {
            Some(p) => vec![p],
            None => DEFAULT_PORTS.to_vec(),
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// Lowercase a DNS name and drop one trailing dot; `None` if it is not a valid
/// host name (empty labels, labels over 63 bytes, characters other than letters,
/// digits, `-` and `_`, or over 253 bytes).
pub fn normalize_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then_some(name)
}

/// An allow or deny rule for domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRule {
    pub pattern: DomainPattern,
    /// The preset this rule came from (`--allow-preset NAME`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    pub origin: Origin,
}

/// One service on the host that the sandbox may reach (`--allow-local HOST:PORT`):
/// inside, at `127.0.0.1:PORT` and at [`LOCAL_SERVICE_NAME`]`:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalService {
    /// Where the broker connects on the host.
    pub addr: SocketAddr,
    pub origin: Origin,
}

/// `--secret NAME=HOST[,HOST...]`: the host environment variable NAME, swapped in
/// for its placeholder in request headers to these hosts only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRule {
    pub name: String,
    pub hosts: Vec<DomainPattern>,
    pub origin: Origin,
    /// Where the value is when it is not the host's variable NAME (a credential
    /// `cordon pi` read from pi's files, under a name it made up): `None` for
    /// every secret of a flag or a config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<String>,
}

/// `--resolve HOST:ADDR`: the user's statement that HOST lives at ADDR. Trusted,
/// even for a private address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveRule {
    /// Normalised name.
    pub host: String,
    pub addr: IpAddr,
    pub origin: Origin,
}

/// An extra trust root for the broker's upstream TLS (`--upstream-ca FILE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamCa {
    /// Absolute path of a PEM file.
    pub file: PathBuf,
    pub origin: Origin,
}

/// What the broker decides for a name and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Allowed by this rule.
    Allowed(&'a DomainRule),
    /// Matched an allow rule but also this deny rule (deny wins).
    Denied(&'a DomainRule),
    /// No allow rule covers it.
    NotAllowed,
}

/// The network rules of a policy. Used only when the mode is `allowlist`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRules {
    pub allow: Vec<DomainRule>,
    pub deny: Vec<DomainRule>,
    pub local: Vec<LocalService>,
    pub secrets: Vec<SecretRule>,
    pub resolve: Vec<ResolveRule>,
    pub upstream_ca: Vec<UpstreamCa>,
}

impl NetworkRules {
    /// Anything that makes the broker worth starting: an allowed domain or a local
    /// service. (`allowlist` is chosen automatically then.)
    pub fn allows_anything(&self) -> bool {
        !self.allow.is_empty() || !self.local.is_empty()
    }

    /// The verdict for `host:port` (`host` normalised). Deny wins over allow; a
    /// deny rule without a port denies every port.
    pub fn verdict(&self, host: &str, port: u16) -> Verdict<'_> {
        if let Some(d) = self
            .deny
            .iter()
            .find(|d| d.pattern.matches_name(host) && d.pattern.port.is_none_or(|p| p == port))
        {
            return Verdict::Denied(d);
        }
        match self.allow.iter().find(|a| a.pattern.matches(host, port)) {
            Some(a) => Verdict::Allowed(a),
            None => Verdict::NotAllowed,
        }
    }

    /// May the DNS stub answer for `host` (some port allowed, none denied for all)?
    pub fn name_allowed(&self, host: &str) -> bool {
        let denied_all = self
            .deny
            .iter()
            .any(|d| d.pattern.port.is_none() && d.pattern.matches_name(host));
        !denied_all && self.allow.iter().any(|a| a.pattern.matches_name(host))
    }

    /// Every port some allow rule or local service opens, sorted, no duplicates.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .allow
            .iter()
            .flat_map(|a| a.pattern.ports())
            .chain(self.local.iter().map(|l| l.addr.port()))
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// The address `--resolve` gives for `host`, if any.
    pub fn resolved(&self, host: &str) -> Option<IpAddr> {
        self.resolve.iter().find(|r| r.host == host).map(|r| r.addr)
    }

    /// The secrets scoped to `host`.
    pub fn secrets_for<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a SecretRule> {
        self.secrets
            .iter()
            .filter(move |s| s.hosts.iter().any(|h| h.matches_name(host)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_and_match() {
        let p = DomainPattern::parse("*.Example.com.").unwrap();
        assert!(p.wildcard && p.name == "example.com" && p.port.is_none());
        assert!(p.matches("api.example.com", 443));
        assert!(!p.matches("example.com", 443));
        assert!(!p.matches("badexample.com", 443));
        assert!(!p.matches("api.example.com", 22));
        let q = DomainPattern::parse("example.com:8443").unwrap();
        assert!(q.matches("example.com", 8443) && !q.matches("example.com", 443));
        for bad in [
            "",
            "*.",
            "exa mple.com",
            "example.com:0",
            "example.com:x",
            "1.2.3.4",
            "a..b",
        ] {
            assert!(DomainPattern::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn urls_stand_for_their_host_and_port() {
        for (url, want) in [
            ("http://example.com", "example.com:80"),
            ("https://example.com", "example.com:443"),
            ("HTTPS://API.Example.com/", "api.example.com:443"),
            ("http://example.com:8080", "example.com:8080"),
            ("https://*.example.com/", "*.example.com:443"),
        ] {
            let p = DomainPattern::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(p.to_string(), want, "{url}");
        }
        for (bad, says) in [
            ("http://example.com/api", "not paths"),
            ("https://example.com?q=1", "not paths"),
            ("https://example.com#x", "not paths"),
            ("https://user:pw@example.com", "without a user"),
            ("ftp://example.com", "only http:// and https://"),
            ("http://", "invalid domain pattern"),
            ("http://1.2.3.4", "not a domain"),
            ("http://example.com:0", "invalid port"),
        ] {
            let e = DomainPattern::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains(bad), "{bad}: the error names the pattern: {e}");
        }
    }

    #[test]
    fn deny_wins_over_allow() {
        let rule = |p: &str| DomainRule {
            pattern: DomainPattern::parse(p).unwrap(),
            preset: None,
            origin: Origin::Default,
        };
        let rules = NetworkRules {
            allow: vec![rule("*.example.com")],
            deny: vec![rule("evil.example.com")],
            ..Default::default()
        };
        assert!(matches!(
            rules.verdict("api.example.com", 443),
            Verdict::Allowed(_)
        ));
        assert!(matches!(
            rules.verdict("evil.example.com", 443),
            Verdict::Denied(_)
        ));
        assert!(matches!(
            rules.verdict("other.org", 443),
            Verdict::NotAllowed
        ));
        assert!(rules.name_allowed("api.example.com"));
        assert!(!rules.name_allowed("evil.example.com"));
        assert_eq!(rules.ports(), vec![80, 443]);
    }
}
