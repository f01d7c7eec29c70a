//! The HTTP/1 request head: the host the request is for (from an absolute-form or
//! CONNECT target, else the Host header).

use super::Sniff;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The most bytes a request head may take.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a request head may have.
pub const MAX_HEADERS: usize = 128;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent (origin-form `/path`, absolute-form
    /// `http://host/path`, authority-form `host:port` for CONNECT, or `*`).
    pub target: String,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Bytes of the head, including the final empty line.
    pub len: usize,
}

impl RequestHead {
    /// The host the request is for, normalised (a DNS name lowercased without a
    /// trailing dot, or an IP address in its canonical text without brackets),
    /// with the port if one was given.
    ///
    /// For CONNECT, the authority-form target; for an absolute-form target, its
    /// authority; otherwise the Host header. `None` when that is missing or
    /// malformed, when there is more than one Host header (RFC 9112 §3.2: such a
    /// request must be rejected), when a target's authority carries user info,
    /// or when the target's authority and a Host header name different hosts
    /// (the upstream might believe either, so the broker must refuse).
    pub fn host(&self) -> Option<(String, Option<u16>)> {
        let mut hosts = self.header_values("host");
        let header = match (hosts.next(), hosts.next()) {
            (None, _) => None,
            (Some(value), None) => Some(split_authority(std::str::from_utf8(value).ok()?.trim())?),
            (Some(_), Some(_)) => return None,
        };
        let from_target = if self.method.eq_ignore_ascii_case("CONNECT") {
            Some(split_authority(&self.target)?)
        } else if self.target.starts_with('/') || self.target == "*" {
            None
        } else {
            Some(split_authority(absolute_authority(&self.target)?)?)
        };
        match (from_target, header) {
            (Some(t), Some(h)) if t.0 != h.0 => None,
            (Some(t), _) => Some(t),
            (None, h) => h,
        }
    }

    /// The values of the header fields named `name` (case-insensitive), in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of the header field `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// The authority of an absolute-form target `scheme://authority[/path][?query]`.
fn absolute_authority(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest.get(..end)
}

/// Split `host`, `host:port` or `[v6]:port` into a normalised host and the port.
/// `None` for an empty or invalid host, user info (`user@host`), or a port that
/// is empty, not all digits, 0 or over 65535.
pub fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    if authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = v6.parse().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (ip.to_string(), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let host = match host.parse::<Ipv4Addr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => cordon_policy::normalize_name(host)?,
        };
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p)?),
    };
    Some((host, port))
}

/// A port: 1 to 5 ASCII digits, 1-65535 (no sign, unlike `str::parse`).
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&p| p != 0)
}

/// Parse the request head from every byte read so far on the connection.
pub fn request_head(buf: &[u8]) -> Sniff<RequestHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                Sniff::Invalid(format!("no complete HTTP request head in {MAX_HEAD} bytes"))
            } else {
                Sniff::NeedMore
            }
        }
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => Sniff::Invalid(format!(
            "an HTTP request head of {len} bytes (over {MAX_HEAD})"
        )),
        Ok(httparse::Status::Complete(len)) => {
            let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
            else {
                return Sniff::Invalid("an incomplete HTTP request line".to_string());
            };
            Sniff::Done(RequestHead {
                method: method.to_string(),
                target: target.to_string(),
                version,
                headers: req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect(),
                len: len.min(buf.len()),
            })
        }
        Err(httparse::Error::TooManyHeaders) => Sniff::Invalid(format!(
            "an HTTP request with over {MAX_HEADERS} header fields"
        )),
        Err(e) => Sniff::Invalid(format!("not an HTTP/1 request: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> RequestHead {
        match request_head(text.as_bytes()) {
            Sniff::Done(h) => h,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    fn host(text: &str) -> Option<(String, Option<u16>)> {
        head(text).host()
    }

    fn h(name: &str, port: Option<u16>) -> Option<(String, Option<u16>)> {
        Some((name.to_string(), port))
    }

    #[test]
    fn origin_form_uses_host_header() {
        let text = "GET /x?y HTTP/1.1\r\nHost: Example.COM.\r\nAccept: */*\r\n\r\nbody";
        let hd = head(text);
        assert_eq!(hd.method, "GET");
        assert_eq!(hd.target, "/x?y");
        assert_eq!(hd.version, 1);
        assert_eq!(hd.len, text.len() - 4);
        assert_eq!(hd.headers.len(), 2);
        assert_eq!(hd.header("ACCEPT"), Some(&b"*/*"[..]));
        assert_eq!(hd.host(), h("example.com", None));
        assert_eq!(
            host("GET / HTTP/1.1\r\nhost: example.com:8080\r\n\r\n"),
            h("example.com", Some(8080))
        );
        assert_eq!(
            host("OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n"),
            h("example.com", None)
        );
    }

    #[test]
    fn missing_or_bad_host() {
        assert_eq!(host("GET / HTTP/1.0\r\n\r\n"), None);
        assert_eq!(host("GET / HTTP/1.1\r\nHost: \r\n\r\n"), None);
        assert_eq!(host("GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n"), None);
        assert_eq!(host("GET / HTTP/1.1\r\nHost: example.com:0\r\n\r\n"), None);
        assert_eq!(
            host("GET / HTTP/1.1\r\nHost: example.com:+80\r\n\r\n"),
            None
        );
        assert_eq!(
            host("GET / HTTP/1.1\r\nHost: user@example.com\r\n\r\n"),
            None
        );
        assert_eq!(host("GET x HTTP/1.1\r\nHost: example.com\r\n\r\n"), None);
    }

    #[test]
    fn duplicate_host() {
        assert_eq!(
            host("GET / HTTP/1.1\r\nHost: a.example.com\r\nHost: b.example.com\r\n\r\n"),
            None
        );
        assert_eq!(
            host("GET / HTTP/1.1\r\nHost: a.example.com\r\nHOST: a.example.com\r\n\r\n"),
            None
        );
    }

    #[test]
    fn absolute_form() {
        assert_eq!(
            host("GET http://Example.com:8080/path?q HTTP/1.1\r\n\r\n"),
            h("example.com", Some(8080))
        );
        assert_eq!(
            host("GET https://example.com?q HTTP/1.1\r\nHost: example.com\r\n\r\n"),
            h("example.com", None)
        );
        // The authority wins only if the Host header agrees.
        assert_eq!(
            host("GET http://example.com/ HTTP/1.1\r\nHost: evil.org\r\n\r\n"),
            None
        );
        // User info is refused.
        assert_eq!(
            host("GET http://example.com@evil.org/ HTTP/1.1\r\n\r\n"),
            None
        );
        assert_eq!(host("GET http:///x HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn connect() {
        let hd = head("CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n");
        assert_eq!(hd.method, "CONNECT");
        assert_eq!(hd.host(), h("api.example.com", Some(443)));
        assert_eq!(
            host("CONNECT api.example.com:443 HTTP/1.1\r\n\r\n"),
            h("api.example.com", Some(443))
        );
        assert_eq!(
            host("CONNECT api.example.com:443 HTTP/1.1\r\nHost: evil.org:443\r\n\r\n"),
            None
        );
        assert_eq!(
            host("CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n"),
            h("2001:db8::1", Some(443))
        );
        assert_eq!(host("CONNECT http://x/ HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn partial_and_invalid() {
        assert_eq!(request_head(b""), Sniff::NeedMore);
        assert_eq!(request_head(b"GET / HTTP/1.1\r\nHost: a"), Sniff::NeedMore);
        assert_eq!(request_head(b"GET / HTTP/1.1\r\n\r"), Sniff::NeedMore);
        assert!(matches!(request_head(b"\x16\x03\x01"), Sniff::Invalid(_)));
        assert!(matches!(
            request_head(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"),
            Sniff::Invalid(_)
        ));
        // Over the bound without an end.
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD + 1, b'a');
        assert!(matches!(request_head(&long), Sniff::Invalid(_)));
        // Complete but over the bound.
        long.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(request_head(&long), Sniff::Invalid(_)));
        // Too many headers.
        let mut many = "GET / HTTP/1.1\r\n".to_string();
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        assert!(matches!(request_head(many.as_bytes()), Sniff::Invalid(_)));
    }

    #[test]
    fn fed_one_byte_at_a_time() {
        let text = b"POST /api HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\nabc";
        let end = text.len() - 3;
        for n in 0..end {
            assert_eq!(request_head(&text[..n]), Sniff::NeedMore, "at {n}");
        }
        for n in end..=text.len() {
            let hd = request_head(&text[..n]).done().unwrap();
            assert_eq!(hd.len, end);
        }
    }

    #[test]
    fn authorities() {
        assert_eq!(split_authority("Example.com"), h("example.com", None));
        assert_eq!(
            split_authority("example.com:443"),
            h("example.com", Some(443))
        );
        assert_eq!(split_authority("1.2.3.4:80"), h("1.2.3.4", Some(80)));
        assert_eq!(split_authority("[::1]:8080"), h("::1", Some(8080)));
        assert_eq!(split_authority("[2001:DB8::1]"), h("2001:db8::1", None));
        for bad in [
            "",
            ":80",
            "example.com:",
            "example.com:65536",
            "example.com:8a",
            "::1",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[fe80::1%eth0]:80",
            "a@b",
            "a:1:2",
        ] {
            assert_eq!(split_authority(bad), None, "{bad:?}");
        }
    }
}
