//! The DNS stub the sandbox talks to (127.0.0.1:53 in its network namespace).
//!
//! It answers only from the broker's verdict: an allowed name gets its synthetic
//! address (A only; other types get an empty NOERROR so the name is not hidden
//! and clients fall back to IPv4); anything else is NXDOMAIN. It never forwards
//! a query, so DNS cannot be used as a channel out of the sandbox.

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::net::Ipv4Addr;

/// The TTL of synthetic answers, in seconds: short, so a policy change or a
/// restarted broker is seen quickly.
pub const TTL: u32 = 5;

/// The largest reply the stub sends (plain DNS over UDP, no EDNS).
pub const MAX_REPLY: usize = 512;

/// The DNS header's length.
const HEADER_LEN: usize = 12;

/// What the broker says for a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Allowed: this (synthetic) address.
    Address(Ipv4Addr),
    /// Not allowed: the stub answers NXDOMAIN.
    Refused,
}

/// A reply to send back, and what the query was about (for the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubReply {
    /// The reply datagram, at most [`MAX_REPLY`] bytes.
    pub bytes: Vec<u8>,
    /// The queried name, normalised; `None` when the query had no usable name.
    pub name: Option<String>,
    /// The query type (`"A"`, `"AAAA"`, `"TYPE65280"`, ...), if a question was read.
    pub qtype: Option<String>,
    /// True for NOERROR (with or without an answer); false for NXDOMAIN,
    /// REFUSED, FORMERR and NOTIMP.
    pub answered: bool,
}

/// The resolv.conf for inside the sandbox: the stub on 127.0.0.1:53.
pub fn resolv_conf() -> &'static str {
    "nameserver 127.0.0.1\noptions ndots:1 timeout:2 attempts:2\n"
}

/// Answer one DNS query datagram. `lookup` is called with the normalised name, at
/// most once, and only for a well-formed class-IN query of a valid host name.
///
/// Returns `None` (send nothing) when there is not even a 12-byte header, or when
/// the datagram is a response rather than a query (answering responses could
/// start a loop). Otherwise always a reply: FORMERR for anything unparseable or
/// with other than one question, NOTIMP for an opcode other than QUERY, REFUSED
/// for a class other than IN, NXDOMAIN for an invalid or refused name.
pub fn answer(query: &[u8], mut lookup: impl FnMut(&str) -> Lookup) -> Option<StubReply> {
    let header: &[u8; HEADER_LEN] = query.get(..HEADER_LEN)?.try_into().ok()?;
    let id = u16::from_be_bytes([header[0], header[1]]);
    let is_response = header[2] & 0x80 != 0;
    let opcode = (header[2] >> 3) & 0x0f;
    let rd = header[2] & 0x01 != 0;
    if is_response {
        return None;
    }
    let bare = |rcode: ResponseCode| StubReply {
        bytes: bare_reply(id, opcode, rd, rcode),
        name: None,
        qtype: None,
        answered: false,
    };
    if opcode != u8::from(OpCode::Query) {
        return Some(bare(ResponseCode::NotImp));
    }
    let Ok(message) = Message::from_vec(query) else {
        return Some(bare(ResponseCode::FormErr));
    };
    let [question] = message.queries() else {
        return Some(bare(ResponseCode::FormErr));
    };
    let qtype = type_name(question.query_type());
    let mut reply = StubReply {
        bytes: Vec::new(),
        name: None,
        qtype: Some(qtype),
        answered: false,
    };
    if question.query_class() != DNSClass::IN {
        reply.bytes = build(id, rd, question, ResponseCode::Refused, None);
        return Some(reply);
    }
    let Some(name) = host_name(question.name()) else {
        reply.bytes = build(id, rd, question, ResponseCode::NXDomain, None);
        return Some(reply);
    };
    let verdict = lookup(&name);
    reply.name = Some(name);
    reply.bytes = match verdict {
        Lookup::Refused => build(id, rd, question, ResponseCode::NXDomain, None),
        Lookup::Address(addr) => {
            reply.answered = true;
            let addr = (question.query_type() == RecordType::A).then_some(addr);
            build(id, rd, question, ResponseCode::NoError, addr)
        }
    };
    Some(reply)
}

/// The normalised host name of a DNS name, if every label is letters, digits,
/// `-` or `_` (so no label can hide a dot or anything else odd).
fn host_name(name: &Name) -> Option<String> {
    let mut text = String::new();
    for label in name.iter() {
        if label.is_empty()
            || !label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return None;
        }
        if !text.is_empty() {
            text.push('.');
        }
        // Checked ASCII above.
        text.extend(label.iter().map(|&b| char::from(b)));
    }
    cordon_policy::normalize_name(&text)
}

/// A record type's name, `TYPEnnn` (RFC 3597) for unknown ones.
fn type_name(t: RecordType) -> String {
    match t {
        RecordType::Unknown(n) => format!("TYPE{n}"),
        t => t.to_string(),
    }
}

/// A reply mirroring the question, with an A record if `addr` is given.
fn build(
    id: u16,
    rd: bool,
    question: &Query,
    rcode: ResponseCode,
    addr: Option<Ipv4Addr>,
) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(rd)
        .set_recursion_available(true)
        .set_response_code(rcode)
        .add_query(question.clone());
    if let Some(addr) = addr {
        m.add_answer(Record::from_rdata(
            question.name().clone(),
            TTL,
            RData::A(A(addr)),
        ));
    }
    match m.to_vec() {
        Ok(bytes) if bytes.len() <= MAX_REPLY => bytes,
        // Cannot happen for one question (a name is at most 255 bytes) and one
        // A record, but never send something oversized or nothing at all.
        _ => bare_reply(id, 0, rd, ResponseCode::ServFail),
    }
}

/// A header-only reply (no question), built by hand so it cannot fail.
fn bare_reply(id: u16, opcode: u8, rd: bool, rcode: ResponseCode) -> Vec<u8> {
    let mut bytes = vec![0u8; HEADER_LEN];
    bytes[..2].copy_from_slice(&id.to_be_bytes());
    bytes[2] = 0x80 | ((opcode & 0x0f) << 3) | u8::from(rd);
    // RA, and the 4-bit response code.
    bytes[3] = 0x80 | (u16::from(rcode) & 0x0f) as u8;
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn query(id: u16, name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn allow_example(name: &str) -> Lookup {
        if name == "example.com" || name.ends_with(".example.com") {
            Lookup::Address(Ipv4Addr::new(198, 18, 0, 2))
        } else {
            Lookup::Refused
        }
    }

    fn parse(r: &StubReply) -> Message {
        assert!(r.bytes.len() <= MAX_REPLY);
        Message::from_vec(&r.bytes).unwrap()
    }

    #[test]
    fn a_record_for_allowed_name() {
        let q = query(0x1234, "Example.COM.", RecordType::A);
        let mut seen = Vec::new();
        let r = answer(&q, |n| {
            seen.push(n.to_string());
            allow_example(n)
        })
        .unwrap();
        assert_eq!(seen, ["example.com"]);
        assert!(r.answered);
        assert_eq!(r.name.as_deref(), Some("example.com"));
        assert_eq!(r.qtype.as_deref(), Some("A"));
        let m = parse(&r);
        assert_eq!(m.id(), 0x1234);
        assert_eq!(m.message_type(), MessageType::Response);
        assert!(m.recursion_desired() && m.recursion_available());
        assert_eq!(m.response_code(), ResponseCode::NoError);
        // The question is mirrored exactly, case included.
        assert_eq!(m.queries().len(), 1);
        assert_eq!(m.queries()[0].name().to_string(), "Example.COM.");
        assert_eq!(m.queries()[0].query_type(), RecordType::A);
        assert_eq!(m.answers().len(), 1);
        let a = &m.answers()[0];
        assert_eq!(a.ttl(), TTL);
        assert_eq!(a.data(), &RData::A(A(Ipv4Addr::new(198, 18, 0, 2))));
    }

    #[test]
    fn rd_flag_mirrored() {
        let mut q = query(7, "example.com.", RecordType::A);
        q[2] &= !0x01;
        let m = parse(&answer(&q, allow_example).unwrap());
        assert!(!m.recursion_desired());
        assert_eq!(m.id(), 7);
    }

    #[test]
    fn aaaa_and_txt_are_empty_noerror() {
        for (t, name) in [(RecordType::AAAA, "AAAA"), (RecordType::TXT, "TXT")] {
            let q = query(9, "api.example.com.", t);
            let r = answer(&q, allow_example).unwrap();
            assert!(r.answered);
            assert_eq!(r.qtype.as_deref(), Some(name));
            let m = parse(&r);
            assert_eq!(m.response_code(), ResponseCode::NoError);
            assert!(m.answers().is_empty());
            assert_eq!(m.queries()[0].query_type(), t);
        }
        let q = query(9, "api.example.com.", RecordType::Unknown(65280));
        let r = answer(&q, allow_example).unwrap();
        assert_eq!(r.qtype.as_deref(), Some("TYPE65280"));
    }

    #[test]
    fn refused_name_is_nxdomain() {
        for t in [RecordType::A, RecordType::AAAA] {
            let r = answer(&query(1, "evil.org.", t), allow_example).unwrap();
            assert!(!r.answered);
            assert_eq!(r.name.as_deref(), Some("evil.org"));
            let m = parse(&r);
            assert_eq!(m.response_code(), ResponseCode::NXDomain);
            assert!(m.answers().is_empty());
            assert_eq!(m.queries().len(), 1);
        }
    }

    #[test]
    fn invalid_name_is_nxdomain_without_lookup() {
        let mut m = Message::new();
        let name = Name::from_labels(vec![&b"a b"[..], &b"com"[..]]).unwrap();
        m.set_id(3).add_query(Query::query(name, RecordType::A));
        let q = m.to_vec().unwrap();
        let r = answer(&q, |_| panic!("lookup called")).unwrap();
        assert!(!r.answered && r.name.is_none());
        assert_eq!(parse(&r).response_code(), ResponseCode::NXDomain);
        // A label with a dot inside.
        let mut m = Message::new();
        let name = Name::from_labels(vec![&b"example.com"[..], &b"evil"[..]]).unwrap();
        m.set_id(3).add_query(Query::query(name, RecordType::A));
        let r = answer(&m.to_vec().unwrap(), |_| panic!("lookup called")).unwrap();
        assert_eq!(parse(&r).response_code(), ResponseCode::NXDomain);
        // The root.
        let r = answer(&query(3, ".", RecordType::NS), |_| panic!("lookup called")).unwrap();
        assert_eq!(parse(&r).response_code(), ResponseCode::NXDomain);
    }

    #[test]
    fn formerr_and_notimp() {
        // Too short for a header: nothing.
        assert!(answer(&[1, 2, 3], allow_example).is_none());
        assert!(answer(&[], allow_example).is_none());
        // A header claiming a question that is not there.
        let mut q = vec![0xab, 0xcd, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let r = answer(&q, allow_example).unwrap();
        assert!(!r.answered && r.qtype.is_none());
        let m = parse(&r);
        assert_eq!(m.id(), 0xabcd);
        assert_eq!(m.response_code(), ResponseCode::FormErr);
        assert!(m.recursion_desired());
        // No question at all.
        q[5] = 0;
        let m = parse(&answer(&q, allow_example).unwrap());
        assert_eq!(m.response_code(), ResponseCode::FormErr);
        // Two questions.
        let mut m = Message::new();
        m.set_id(5)
            .add_query(Query::query(
                Name::from_str("example.com.").unwrap(),
                RecordType::A,
            ))
            .add_query(Query::query(
                Name::from_str("a.example.com.").unwrap(),
                RecordType::A,
            ));
        let m = parse(&answer(&m.to_vec().unwrap(), allow_example).unwrap());
        assert_eq!(m.response_code(), ResponseCode::FormErr);
        assert_eq!(m.id(), 5);
        // Opcode STATUS (2) and UPDATE (5).
        for op in [2u8, 5] {
            let mut q = query(6, "example.com.", RecordType::A);
            q[2] = (q[2] & !0x78) | (op << 3);
            let r = answer(&q, |_| panic!("lookup called")).unwrap();
            assert_eq!(r.bytes[2] & 0x78, op << 3);
            assert_eq!(r.bytes[3] & 0x0f, 4, "NOTIMP");
            assert_eq!(&r.bytes[..2], &[0, 6]);
        }
    }

    #[test]
    fn responses_are_ignored() {
        let mut q = query(1, "example.com.", RecordType::A);
        q[2] |= 0x80;
        assert!(answer(&q, allow_example).is_none());
    }

    #[test]
    fn other_class_refused() {
        let mut m = Message::new();
        let mut question = Query::query(Name::from_str("version.bind.").unwrap(), RecordType::TXT);
        question.set_query_class(DNSClass::CH);
        m.set_id(8).add_query(question);
        let r = answer(&m.to_vec().unwrap(), |_| panic!("lookup called")).unwrap();
        assert!(!r.answered);
        assert_eq!(parse(&r).response_code(), ResponseCode::Refused);
    }

    #[test]
    fn longest_name_fits() {
        let label = "a".repeat(63);
        let name = format!("{label}.{label}.{label}.{}.", "b".repeat(61));
        let q = query(2, &name, RecordType::A);
        let r = answer(&q, |_| Lookup::Address(Ipv4Addr::new(198, 18, 0, 9))).unwrap();
        assert!(r.answered);
        let m = parse(&r);
        assert_eq!(m.answers().len(), 1);
    }

    #[test]
    fn resolv_conf_points_at_stub() {
        assert!(resolv_conf().starts_with("nameserver 127.0.0.1\n"));
        assert!(resolv_conf().contains("options ndots:1 timeout:2 attempts:2"));
    }
}
