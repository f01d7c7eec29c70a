//! Secrets: the sandbox only ever sees a placeholder; the broker swaps it for the
//! real value in request headers to the hosts the secret is scoped to, and
//! refuses a request that carries a placeholder anywhere else (the URL, a header
//! name, a header to another host, the body), so the agent learns at once that
//! the secret is not usable there.

use cordon_policy::DomainPattern;
use http::{HeaderMap, HeaderValue, Uri};
use std::fmt;

/// What every placeholder starts with.
pub const PLACEHOLDER_PREFIX: &str = "cordon-secret-";

/// One secret: its real value, its placeholder, and the hosts it may go to.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// The environment variable's name (`GITHUB_TOKEN`).
    pub name: String,
    /// The real value. Never logged (the `Debug` impl hides it).
    pub value: String,
    /// What the sandbox sees instead of the value.
    pub placeholder: String,
    /// The hosts the value may be sent to (ports are not considered).
    pub hosts: Vec<DomainPattern>,
}

impl Secret {
    /// A secret with a fresh random placeholder.
    pub fn new(name: String, value: String, hosts: Vec<DomainPattern>) -> Self {
        let placeholder = placeholder(&name);
        Secret {
            name,
            value,
            placeholder,
            hosts,
        }
    }

    /// May the value go to `host` (any port)? The name is normalised first; an
    /// invalid name is never in scope.
    pub fn scoped_to(&self, host: &str) -> bool {
        let Some(host) = cordon_policy::normalize_name(host) else {
            return false;
        };
        self.hosts.iter().any(|h| h.matches_name(&host))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("value", &"[hidden]")
            .field("placeholder", &self.placeholder)
            .field("hosts", &self.hosts)
            .finish()
    }
}

/// A fresh placeholder for the secret `name`: `cordon-secret-` + the name
/// lowercased with `_` (and anything else not a letter or digit) as `-`, then
/// `-` and 32 hex digits (128 bits from the kernel's random source).
pub fn placeholder(name: &str) -> String {
    let mut text = String::from(PLACEHOLDER_PREFIX);
    text.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        }
    }));
    text.push('-');
    for b in random_bytes() {
        text.push_str(&format!("{b:02x}"));
    }
    text
}

/// 16 unguessable bytes: getrandom(2), else /dev/urandom, else std's randomly
/// keyed SipHash (itself seeded from the kernel, so this last fallback is only
/// for a kernel without getrandom and without /dev).
fn random_bytes() -> [u8; 16] {
    let mut buf = [0u8; 16];
    let mut filled = 0usize;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe the writable tail of `buf`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
        } else if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {
            continue;
        } else {
            break;
        }
    }
    if filled == buf.len() {
        return buf;
    }
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        if f.read_exact(&mut buf).is_ok() {
            return buf;
        }
    }
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for (i, half) in buf.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_usize(i);
        h.write_u32(std::process::id());
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    buf
}

/// Why a request carrying a placeholder was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The secret's name.
    pub secret: String,
    /// Where its placeholder was: `"the URL"`, `"a header name"`, `"a header
    /// value"` or `"the body"`.
    pub place: &'static str,
    /// The header's name, when `place` is a header.
    pub header: Option<String>,
    pub reason: RefusalReason,
}

/// The reason behind a [`Refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// Placeholders are swapped in header values only.
    NotSwappedThere,
    /// The secret is not scoped to the request's host.
    NotScoped,
    /// The header value with the secret swapped in would not be a valid header
    /// value (the secret contains a control character).
    InvalidValue,
}

impl Refusal {
    /// The placeholder of `secret` was found in a request body.
    pub fn in_body(secret: &str) -> Self {
        Refusal {
            secret: secret.to_string(),
            place: "the body",
            header: None,
            reason: RefusalReason::NotSwappedThere,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the placeholder of secret {} in ", self.secret)?;
        match &self.header {
            Some(h) => write!(f, "header {h}")?,
            None => f.write_str(self.place)?,
        }
        f.write_str(match self.reason {
            RefusalReason::NotSwappedThere => ": secrets are swapped in request header values only",
            RefusalReason::NotScoped => ": the secret is not for this host",
            RefusalReason::InvalidValue => ": the secret's value is not valid in an HTTP header",
        })
    }
}

impl std::error::Error for Refusal {}

/// The first secret (in order) whose placeholder occurs in `hay`.
fn find_placeholder<'a>(hay: &[u8], secrets: &'a [Secret]) -> Option<&'a Secret> {
    secrets
        .iter()
        .find(|s| contains(hay, s.placeholder.as_bytes()))
}

/// Does `hay` contain `needle` (never for an empty needle)?
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// The first position of `needle` in `hay` (never for an empty needle).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut start = 0;
    while let Some(off) = hay.get(start..)?.iter().position(|&b| b == first) {
        let at = start + off;
        if hay.get(at + 1..at + needle.len()) == Some(rest) {
            return Some(at);
        }
        start = at + 1;
    }
    None
}

/// Replace every placeholder in `value` with its secret's value, in one pass
/// (a swapped-in value is never scanned again). `None` if nothing was swapped.
fn substitute(value: &[u8], secrets: &[&Secret]) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::with_capacity(value.len());
    let mut swaps = 0;
    let mut i = 0;
    while i < value.len() {
        let rest = value.get(i..).unwrap_or_default();
        let hit = secrets
            .iter()
            .filter(|s| !s.placeholder.is_empty())
            .find(|s| rest.starts_with(s.placeholder.as_bytes()));
        match (hit, rest.first()) {
            (Some(s), _) => {
                out.extend_from_slice(s.value.as_bytes());
                i += s.placeholder.len();
                swaps += 1;
            }
            (None, Some(&b)) => {
                out.push(b);
                i += 1;
            }
            (None, None) => break,
        }
    }
    (swaps > 0).then_some((out, swaps))
}

/// Swap placeholders for values in the headers of a request to `host`.
///
/// Refused (and the headers left as they were) if a placeholder appears in the
/// URI or a header name, or in a header value when its secret is not scoped to
/// `host`, or when the swapped value would not be a valid header value. Swapped
/// values are marked sensitive (HTTP/2 never indexes them). Returns the number
/// of placeholders replaced.
pub fn swap_in_request(
    uri: &Uri,
    headers: &mut HeaderMap,
    host: &str,
    secrets: &[Secret],
) -> Result<usize, Refusal> {
    let refusal = |s: &Secret, place, header: Option<&str>, reason| Refusal {
        secret: s.name.clone(),
        place,
        header: header.map(str::to_string),
        reason,
    };
    if let Some(s) = find_placeholder(uri.to_string().as_bytes(), secrets) {
        return Err(refusal(s, "the URL", None, RefusalReason::NotSwappedThere));
    }
    // First check everything, then change anything.
    let mut planned = Vec::new();
    for (index, (name, value)) in headers.iter().enumerate() {
        if let Some(s) = find_placeholder(name.as_str().as_bytes(), secrets) {
            return Err(refusal(
                s,
                "a header name",
                Some(name.as_str()),
                RefusalReason::NotSwappedThere,
            ));
        }
        let present: Vec<&Secret> = secrets
            .iter()
            .filter(|s| contains(value.as_bytes(), s.placeholder.as_bytes()))
            .collect();
        if present.is_empty() {
            continue;
        }
        if let Some(s) = present.iter().find(|s| !s.scoped_to(host)) {
            return Err(refusal(
                s,
                "a header value",
                Some(name.as_str()),
                RefusalReason::NotScoped,
            ));
        }
        let Some((bytes, swaps)) = substitute(value.as_bytes(), &present) else {
            continue;
        };
        let Ok(mut new) = HeaderValue::from_bytes(&bytes) else {
            let Some(first) = present.first() else {
                continue;
            };
            return Err(refusal(
                first,
                "a header value",
                Some(name.as_str()),
                RefusalReason::InvalidValue,
            ));
        };
        new.set_sensitive(true);
        planned.push((index, new, swaps));
    }
    let mut total = 0;
    let mut planned = planned.into_iter().peekable();
    for (index, (_, value)) in headers.iter_mut().enumerate() {
        if let Some((_, new, swaps)) = planned.next_if(|(i, _, _)| *i == index) {
            *value = new;
            total += swaps;
        }
    }
    Ok(total)
}

/// Detects a placeholder anywhere in a streamed body, across chunk boundaries,
/// keeping only the last (longest placeholder - 1) bytes between chunks.
#[derive(Debug, Clone)]
pub struct BodyScanner {
    /// (secret name, placeholder bytes), empty placeholders left out.
    needles: Vec<(String, Vec<u8>)>,
    /// The tail of what was fed so far.
    tail: Vec<u8>,
    keep: usize,
}

impl BodyScanner {
    pub fn new(secrets: &[Secret]) -> Self {
        let needles: Vec<(String, Vec<u8>)> = secrets
            .iter()
            .filter(|s| !s.placeholder.is_empty())
            .map(|s| (s.name.clone(), s.placeholder.as_bytes().to_vec()))
            .collect();
        let keep = needles.iter().map(|(_, p)| p.len() - 1).max().unwrap_or(0);
        BodyScanner {
            needles,
            tail: Vec::new(),
            keep,
        }
    }

    /// Feed the next chunk: the name of a secret whose placeholder it completes,
    /// if any.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<&str> {
        if self.needles.is_empty() {
            return None;
        }
        // A placeholder straddling the boundary: the tail plus the chunk's start.
        let head = chunk.get(..chunk.len().min(self.keep)).unwrap_or(chunk);
        let mut seam = std::mem::take(&mut self.tail);
        let seam_start = seam.len();
        seam.extend_from_slice(head);
        let hit = self
            .needles
            .iter()
            .position(|(_, p)| contains(&seam, p) || contains(chunk, p));
        // Keep the last `keep` bytes of everything fed so far.
        if chunk.len() >= self.keep {
            self.tail = chunk
                .get(chunk.len() - self.keep..)
                .unwrap_or_default()
                .to_vec();
        } else {
            seam.truncate(seam_start);
            seam.extend_from_slice(chunk);
            let drop = seam.len().saturating_sub(self.keep);
            seam.drain(..drop);
            self.tail = seam;
        }
        hit.and_then(|i| self.needles.get(i))
            .map(|(name, _)| name.as_str())
    }
}

/// `text` with every secret's value replaced by `[NAME]`, for logs. Longer
/// values are replaced first, so a value containing another is hidden whole.
pub fn redact(text: &str, secrets: &[Secret]) -> String {
    let mut order: Vec<&Secret> = secrets.iter().filter(|s| !s.value.is_empty()).collect();
    order.sort_by_key(|s| std::cmp::Reverse(s.value.len()));
    let mut out = text.to_string();
    for s in order {
        if out.contains(&s.value) {
            out = out.replace(&s.value, &format!("[{}]", s.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{AUTHORIZATION, HeaderName};

    fn secret(name: &str, value: &str, hosts: &[&str]) -> Secret {
        Secret::new(
            name.to_string(),
            value.to_string(),
            hosts
                .iter()
                .map(|h| DomainPattern::parse(h).unwrap())
                .collect(),
        )
    }

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn placeholders_are_unique_and_well_formed() {
        let a = placeholder("GITHUB_TOKEN");
        let b = placeholder("GITHUB_TOKEN");
        assert_ne!(a, b);
        let rest = a.strip_prefix("cordon-secret-github-token-").unwrap();
        assert_eq!(rest.len(), 32);
        assert!(
            rest.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert!(HeaderValue::from_str(&a).is_ok());
        assert!(placeholder("weird name/ü").starts_with("cordon-secret-weird-name---"));
        let s = secret("TOKEN", "hunter2", &["api.example.com"]);
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn scope() {
        let s = secret("T", "v", &["*.example.com", "api.other.org:8443"]);
        assert!(s.scoped_to("a.example.com"));
        assert!(s.scoped_to("A.Example.com."));
        assert!(!s.scoped_to("example.com"));
        assert!(s.scoped_to("api.other.org"));
        assert!(!s.scoped_to("evil.org"));
        assert!(!s.scoped_to("bad name"));
    }

    #[test]
    fn swaps_scoped_header() {
        let gh = secret("GH", "ghp_real", &["api.github.com"]);
        let other = secret("OTHER", "o-real", &["other.org"]);
        let secrets = vec![gh.clone(), other];
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            format!("Bearer {0} {0}", gh.placeholder).parse().unwrap(),
        );
        headers.append("x-plain", "nothing here".parse().unwrap());
        headers.append("x-multi", "a".parse().unwrap());
        headers.append("x-multi", gh.placeholder.parse().unwrap());
        let n = swap_in_request(&uri("/user"), &mut headers, "api.github.com", &secrets).unwrap();
        assert_eq!(n, 3);
        assert_eq!(headers[AUTHORIZATION], "Bearer ghp_real ghp_real");
        assert!(headers[AUTHORIZATION].is_sensitive());
        assert_eq!(headers["x-plain"], "nothing here");
        let multi: Vec<_> = headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "ghp_real"]);
        // Nothing to swap.
        let mut plain = HeaderMap::new();
        plain.insert("accept", "*/*".parse().unwrap());
        assert_eq!(
            swap_in_request(&uri("/"), &mut plain, "x.org", &secrets),
            Ok(0)
        );
    }

    #[test]
    fn refuses_unscoped_header() {
        let gh = secret("GH", "ghp_real", &["api.github.com"]);
        let mut headers = HeaderMap::new();
        headers.insert("x-ok", "fine".parse().unwrap());
        headers.insert(AUTHORIZATION, gh.placeholder.parse().unwrap());
        let before = headers.clone();
        let err = swap_in_request(&uri("/"), &mut headers, "evil.org", &[gh]).unwrap_err();
        assert_eq!(err.secret, "GH");
        assert_eq!(err.place, "a header value");
        assert_eq!(err.header.as_deref(), Some("authorization"));
        assert_eq!(err.reason, RefusalReason::NotScoped);
        assert_eq!(headers, before);
        assert!(err.to_string().contains("header authorization"));
    }

    #[test]
    fn refuses_in_url_and_header_name() {
        let gh = secret("GH", "ghp_real", &["api.github.com"]);
        let secrets = [gh.clone()];
        let mut headers = HeaderMap::new();
        let u = uri(&format!("https://api.github.com/x?t={}", gh.placeholder));
        let err = swap_in_request(&u, &mut headers, "api.github.com", &secrets).unwrap_err();
        assert_eq!(
            (err.place, err.reason),
            ("the URL", RefusalReason::NotSwappedThere)
        );
        let u = uri(&format!("/{}/x", gh.placeholder));
        assert!(swap_in_request(&u, &mut headers, "api.github.com", &secrets).is_err());

        let name = HeaderName::from_bytes(format!("x-{}", gh.placeholder).as_bytes()).unwrap();
        headers.insert(name, "v".parse().unwrap());
        let err = swap_in_request(&uri("/"), &mut headers, "api.github.com", &secrets).unwrap_err();
        assert_eq!(err.place, "a header name");
    }

    #[test]
    fn refuses_invalid_value() {
        let s = secret("NL", "line\nbreak", &["example.com"]);
        let mut headers = HeaderMap::new();
        headers.insert("x-token", s.placeholder.parse().unwrap());
        let err = swap_in_request(&uri("/"), &mut headers, "example.com", &[s]).unwrap_err();
        assert_eq!(err.reason, RefusalReason::InvalidValue);
    }

    #[test]
    fn swapped_value_is_not_rescanned() {
        let b = secret("B", "b-real", &["example.com"]);
        // A's value is B's placeholder: it must go out verbatim, not as B's value.
        let a = secret("A", &b.placeholder, &["example.com"]);
        let mut headers = HeaderMap::new();
        headers.insert("x", a.placeholder.parse().unwrap());
        let n = swap_in_request(&uri("/"), &mut headers, "example.com", &[a, b.clone()]).unwrap();
        assert_eq!(n, 1);
        assert_eq!(headers["x"], b.placeholder.as_str());
    }

    #[test]
    fn body_scanner_across_chunks() {
        let s = secret("TOKEN", "v", &["example.com"]);
        let t = secret("OTHER_ONE", "w", &["example.com"]);
        let p = s.placeholder.clone().into_bytes();
        let body = [b"prefix ".as_slice(), &p, b" suffix"].concat();
        // Every way of cutting the body in two, and in 1-byte chunks.
        for cut in 0..=body.len() {
            let mut sc = BodyScanner::new(&[t.clone(), s.clone()]);
            let first = sc.feed(&body[..cut]).map(str::to_string);
            let second = sc.feed(&body[cut..]).map(str::to_string);
            assert!(
                first.as_deref() == Some("TOKEN") || second.as_deref() == Some("TOKEN"),
                "cut {cut}"
            );
        }
        let mut sc = BodyScanner::new(std::slice::from_ref(&s));
        let hits: Vec<_> = body
            .iter()
            .filter_map(|b| sc.feed(std::slice::from_ref(b)).map(str::to_string))
            .collect();
        assert_eq!(hits, ["TOKEN"]);
        // Three chunks, placeholder spread over all of them.
        let mut sc = BodyScanner::new(std::slice::from_ref(&s));
        assert_eq!(sc.feed(&p[..5]), None);
        assert_eq!(sc.feed(&p[5..20]), None);
        assert_eq!(sc.feed(&p[20..]), Some("TOKEN"));
        // No placeholder, or a near miss.
        let mut sc = BodyScanner::new(std::slice::from_ref(&s));
        assert_eq!(sc.feed(&p[..p.len() - 1]), None);
        assert_eq!(sc.feed(b"x"), None);
        assert_eq!(sc.feed(&vec![b'a'; 100_000]), None);
        let mut none = BodyScanner::new(&[]);
        assert_eq!(none.feed(&p), None);
    }

    #[test]
    fn refusal_in_body() {
        let r = Refusal::in_body("TOKEN");
        assert_eq!(r.place, "the body");
        assert!(r.to_string().contains("the body"));
    }

    #[test]
    fn redacts_values() {
        let a = secret("A", "abc", &["example.com"]);
        let ab = secret("AB", "abcdef", &["example.com"]);
        let empty = secret("E", "", &["example.com"]);
        assert_eq!(
            redact("x abcdef y abc z", &[a, ab, empty]),
            "x [AB] y [A] z"
        );
    }
}
