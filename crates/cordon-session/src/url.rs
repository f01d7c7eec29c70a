//! The little of a URL cordon reads from pi's config: its host and port, and the
//! same URL at another host. (Not the `url` crate: WHATWG parsing would drop a
//! default port the policy keeps, and IDNA tables are much more than this needs.)

/// `https://host:port/path` → (host, port if given). The host is lowercased (an
/// IPv6 address is given without brackets); `None` when there is no `://` or the
/// port is not a number.
pub fn url_host(url: &str) -> Option<(String, Option<u16>)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        let port = authority[end + 1..]
            .strip_prefix(':')
            .and_then(|p| p.parse().ok());
        return Some((authority[1..end].to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_ascii_lowercase(), Some(p.parse().ok()?))),
        None => Some((authority.to_ascii_lowercase(), None)),
    }
}

/// `url` with its host `host` replaced by `new` (the first occurrence after the
/// scheme, brackets of an IPv6 address included).
pub fn with_host(url: &str, host: &str, new: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let written = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let at = rest.to_ascii_lowercase().find(&written)?;
    Some(format!(
        "{scheme}://{}{new}{}",
        &rest[..at],
        &rest[at + written.len()..]
    ))
}

/// A host on this machine or a literal address: reached with `--allow-local`, no
/// name to scope a secret to.
pub fn is_local(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports() {
        assert_eq!(
            url_host("https://Fake.test:8443/v1"),
            Some(("fake.test".into(), Some(8443)))
        );
        assert_eq!(
            url_host("https://api.example.com/v1"),
            Some(("api.example.com".into(), None))
        );
        assert_eq!(
            url_host("http://user:pw@h.example:80?q#f"),
            Some(("h.example".into(), Some(80)))
        );
        assert_eq!(
            url_host("http://[::1]:11434/v1"),
            Some(("::1".into(), Some(11434)))
        );
        assert_eq!(url_host("https://h.example:port/"), None);
        assert_eq!(url_host("h.example/v1"), None);
        assert!(is_local("127.0.0.1") && is_local("localhost") && is_local("::1"));
        assert!(!is_local("a.b"));
    }

    #[test]
    fn host_replaced() {
        assert_eq!(
            with_host("http://LocalHost:11434/v1", "localhost", "127.0.0.1"),
            Some("http://127.0.0.1:11434/v1".into())
        );
        assert_eq!(
            with_host("http://[::1]:8080/x", "::1", "127.0.0.1"),
            Some("http://127.0.0.1:8080/x".into())
        );
        assert_eq!(with_host("nourl", "a", "b"), None);
    }
}
