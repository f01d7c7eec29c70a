//! The TLS ClientHello: the name the client asks for (SNI) and its ALPN list.
//!
//! A cheap framing pass over the TLS records decides whether the whole ClientHello
//! has arrived (so a client trickling bytes costs a few header reads per call,
//! not a full parse); once it has, rustls's [`Acceptor`] parses it, so the broker
//! reads exactly what rustls would.

use super::Sniff;
use rustls::server::Acceptor;

/// The most bytes the broker reads looking for a ClientHello. rustls accepts a
/// handshake message of up to 64 KiB; a real ClientHello, even with
/// post-quantum key shares spanning several records, is a few KiB.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// TLS record content type: handshake.
const HANDSHAKE: u8 = 0x16;
/// TLS record content type: alert.
const ALERT: u8 = 0x15;
/// Handshake message type: ClientHello.
const CLIENT_HELLO: u8 = 1;
/// A record header: type, version (2), length (2).
const RECORD_HEADER: usize = 5;
/// The largest plaintext record payload (RFC 8446 §5.1).
const MAX_RECORD: usize = 16 * 1024;
/// rustls's limit on one handshake message, header included.
const MAX_HANDSHAKE: usize = 0xffff;

/// What the ClientHello says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// The SNI host name, normalised; `None` when the client sent none (or sent
    /// an IP address literal, which TLS does not allow and rustls ignores).
    pub server_name: Option<String>,
    /// The ALPN protocols offered, in the client's order (empty if none).
    pub alpn: Vec<Vec<u8>>,
}

/// Does a connection starting with this byte look like TLS (a handshake record)?
pub fn looks_like_tls(first_byte: u8) -> bool {
    first_byte == HANDSHAKE
}

/// Parse the ClientHello from every byte read so far on the connection.
pub fn client_hello(buf: &[u8]) -> Sniff<ClientHelloInfo> {
    let end = match hello_extent(buf) {
        Err(why) => return Sniff::Invalid(why),
        Ok(None) if buf.len() >= MAX_CLIENT_HELLO => {
            return Sniff::Invalid(format!(
                "no complete TLS ClientHello in the first {MAX_CLIENT_HELLO} bytes"
            ));
        }
        Ok(None) => return Sniff::NeedMore,
        Ok(Some(end)) if end > MAX_CLIENT_HELLO => {
            return Sniff::Invalid(format!(
                "the TLS ClientHello is over {MAX_CLIENT_HELLO} bytes"
            ));
        }
        Ok(Some(end)) => end,
    };
    let Some(mut rest) = buf.get(..end) else {
        return Sniff::NeedMore;
    };
    let mut acceptor = Acceptor::default();
    // read_tls takes at most a few KiB per call, and rustls only allows a large
    // buffer once it knows a handshake message is being joined: feed and poll.
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Sniff::Invalid(format!("invalid TLS records: {e}")),
        }
        match acceptor.accept() {
            Ok(None) => {}
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                let server_name = match hello.server_name() {
                    None => None,
                    Some(sni) => match cordon_policy::normalize_name(sni) {
                        Some(name) => Some(name),
                        None => {
                            return Sniff::Invalid(format!(
                                "invalid TLS server name {:?}",
                                sni.escape_debug().to_string()
                            ));
                        }
                    },
                };
                let alpn = hello
                    .alpn()
                    .map(|protocols| protocols.map(<[u8]>::to_vec).collect())
                    .unwrap_or_default();
                return Sniff::Done(ClientHelloInfo { server_name, alpn });
            }
            Err((e, _alert)) => return Sniff::Invalid(format!("invalid TLS ClientHello: {e}")),
        }
    }
    Sniff::Invalid("incomplete TLS ClientHello".to_string())
}

/// Walk the TLS records in `buf`: `Ok(Some(n))` when the first `n` bytes hold
/// whole records carrying a complete ClientHello message, `Ok(None)` when more
/// bytes are needed, `Err` when this is not a ClientHello.
fn hello_extent(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut pos = 0usize;
    // The first 4 bytes of the handshake stream (message type and length).
    let mut hs_header = [0u8; 4];
    let mut collected = 0usize;
    loop {
        let Some(header) = buf.get(pos..pos.saturating_add(RECORD_HEADER)) else {
            return Ok(None);
        };
        match header[0] {
            HANDSHAKE => {}
            ALERT => return Err("a TLS alert instead of a ClientHello".to_string()),
            t if pos == 0 => return Err(format!("not TLS (first byte {t:#04x})")),
            t => {
                return Err(format!(
                    "unexpected TLS record type {t} before the ClientHello ended"
                ));
            }
        }
        if header[1] != 3 {
            return Err(format!(
                "not TLS (record version {}.{})",
                header[1], header[2]
            ));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err("an empty TLS handshake record".to_string());
        }
        if len > MAX_RECORD {
            return Err(format!("a TLS record of {len} bytes (over {MAX_RECORD})"));
        }
        let start = pos + RECORD_HEADER;
        let payload = buf.get(start..).unwrap_or_default();
        let available = payload.len().min(len);
        let chunk = payload.get(..available).unwrap_or_default();
        let missing = hs_header.len().saturating_sub(collected);
        for (i, &b) in chunk.iter().take(missing).enumerate() {
            hs_header[collected + i] = b;
        }
        collected += available;
        if collected >= hs_header.len() {
            if hs_header[0] != CLIENT_HELLO {
                return Err(format!(
                    "TLS handshake message type {} instead of a ClientHello",
                    hs_header[0]
                ));
            }
            let body = usize::from(hs_header[1]) << 16
                | usize::from(hs_header[2]) << 8
                | usize::from(hs_header[3]);
            let total = body + hs_header.len();
            if total > MAX_HANDSHAKE {
                return Err(format!(
                    "a TLS ClientHello of {total} bytes (over {MAX_HANDSHAKE})"
                ));
            }
            if collected >= total {
                return Ok(if available == len {
                    Some(start + len)
                } else {
                    None
                });
            }
        }
        if available < len {
            return Ok(None);
        }
        pos = start + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A real ClientHello, as rustls's client writes it.
    fn hello_bytes(name: &str, alpn: &[&[u8]]) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    /// The same handshake bytes cut into records of at most `size` bytes.
    fn refragment(records: &[u8], size: usize) -> Vec<u8> {
        let mut payload = Vec::new();
        let mut pos = 0;
        while pos + 5 <= records.len() {
            let len = usize::from(u16::from_be_bytes([records[pos + 3], records[pos + 4]]));
            payload.extend_from_slice(&records[pos + 5..pos + 5 + len]);
            pos += 5 + len;
        }
        let mut out = Vec::new();
        for piece in payload.chunks(size) {
            out.extend_from_slice(&[0x16, 3, 1]);
            out.extend_from_slice(&(piece.len() as u16).to_be_bytes());
            out.extend_from_slice(piece);
        }
        out
    }

    #[test]
    fn real_client_hello() {
        let bytes = hello_bytes("Example.COM", &[]);
        assert!(looks_like_tls(bytes[0]));
        let info = client_hello(&bytes).done().unwrap();
        assert_eq!(info.server_name.as_deref(), Some("example.com"));
        assert!(info.alpn.is_empty());
    }

    #[test]
    fn alpn_h2() {
        let bytes = hello_bytes("api.example.com", &[b"h2", b"http/1.1"]);
        let info = client_hello(&bytes).done().unwrap();
        assert_eq!(info.server_name.as_deref(), Some("api.example.com"));
        assert_eq!(info.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[test]
    fn fed_one_byte_at_a_time() {
        let bytes = hello_bytes("example.com", &[b"h2"]);
        for n in 0..bytes.len() {
            assert_eq!(client_hello(&bytes[..n]), Sniff::NeedMore, "at {n}");
        }
        let info = client_hello(&bytes).done().unwrap();
        assert_eq!(info.server_name.as_deref(), Some("example.com"));
        assert_eq!(info.alpn, vec![b"h2".to_vec()]);
    }

    #[test]
    fn spanning_many_records() {
        let bytes = hello_bytes("example.com", &[b"h2"]);
        for size in [1, 7, 100, 512] {
            let split = refragment(&bytes, size);
            let info = client_hello(&split).done().unwrap();
            assert_eq!(info.server_name.as_deref(), Some("example.com"), "{size}");
            assert_eq!(client_hello(&split[..split.len() - 1]), Sniff::NeedMore);
        }
    }

    #[test]
    fn large_hello_over_one_record() {
        let protocols: Vec<Vec<u8>> = (0..100u8).map(|i| vec![b'a' + i % 26; 200]).collect();
        let refs: Vec<&[u8]> = protocols.iter().map(Vec::as_slice).collect();
        let bytes = hello_bytes("big.example.com", &refs);
        assert!(bytes.len() > MAX_RECORD + 5);
        let info = client_hello(&bytes).done().unwrap();
        assert_eq!(info.server_name.as_deref(), Some("big.example.com"));
        assert_eq!(info.alpn.len(), 100);
        // Bytes after the ClientHello (a following record) do not matter.
        let mut more = bytes.clone();
        more.extend_from_slice(&[0x14, 3, 3, 0, 1, 1]);
        assert!(client_hello(&more).done().is_some());
    }

    #[test]
    fn no_sni() {
        // Take a real hello and rename the server_name extension (type 0) to an
        // unknown type, keeping every length intact.
        let mut bytes = hello_bytes("example.com", &[]);
        let needle = [0u8, 0, 0, 16, 0, 14, 0, 0, 11];
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("SNI extension");
        bytes[at..at + 2].copy_from_slice(&[0xfe, 0xfe]);
        let info = client_hello(&bytes).done().unwrap();
        assert_eq!(info.server_name, None);
    }

    #[test]
    fn not_a_hello() {
        assert!(matches!(
            client_hello(b"GET / HTTP/1.1\r\n"),
            Sniff::Invalid(_)
        ));
        assert!(!looks_like_tls(b'G'));
        assert_eq!(client_hello(b""), Sniff::NeedMore);
        assert_eq!(client_hello(&[0x16, 3]), Sniff::NeedMore);
        // An alert record.
        assert!(matches!(
            client_hello(&[0x15, 3, 3, 0, 2, 2, 40]),
            Sniff::Invalid(_)
        ));
        // A handshake record carrying a ServerHello.
        assert!(matches!(
            client_hello(&[0x16, 3, 3, 0, 4, 2, 0, 0, 0]),
            Sniff::Invalid(_)
        ));
        // A ClientHello message of garbage.
        assert!(matches!(
            client_hello(&[0x16, 3, 1, 0, 6, 1, 0, 0, 2, 0xff, 0xff]),
            Sniff::Invalid(_)
        ));
        // Record version 2.
        assert!(matches!(
            client_hello(&[0x16, 2, 0, 0, 1, 1]),
            Sniff::Invalid(_)
        ));
        // Empty record, oversized record.
        assert!(matches!(
            client_hello(&[0x16, 3, 1, 0, 0]),
            Sniff::Invalid(_)
        ));
        assert!(matches!(
            client_hello(&[0x16, 3, 1, 0x48, 1]),
            Sniff::Invalid(_)
        ));
        // A ClientHello claiming 16 MiB.
        assert!(matches!(
            client_hello(&[0x16, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]),
            Sniff::Invalid(_)
        ));
        // An alert after a partial hello.
        let bytes = hello_bytes("example.com", &[]);
        let mut split = refragment(&bytes, 50);
        split.truncate(55);
        split.extend_from_slice(&[0x15, 3, 3, 0, 2, 2, 40]);
        assert!(matches!(client_hello(&split), Sniff::Invalid(_)));
    }

    #[test]
    fn over_the_bound() {
        // Many 1-byte records never completing a 60 KiB hello.
        let mut buf = vec![0x16, 3, 1, 0, 4, 1, 0, 0xf0, 0];
        while buf.len() < MAX_CLIENT_HELLO {
            buf.extend_from_slice(&[0x16, 3, 1, 0, 1, 0]);
        }
        assert!(matches!(client_hello(&buf), Sniff::Invalid(_)));
    }
}
