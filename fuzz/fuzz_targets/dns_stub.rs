//! Feed arbitrary datagrams to the DNS stub with a lookup that allows names of even
//! length: it must never panic, and every reply must parse back and fit 512 bytes.

#![no_main]

use cordon_net::dns::stub::{Lookup, MAX_REPLY, answer};
use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    let mut calls = 0;
    let reply = answer(data, |name| {
        calls += 1;
        assert_eq!(
            cordon_policy::normalize_name(name).as_deref(),
            Some(name),
            "lookup gets normalised names"
        );
        if name.len() % 2 == 0 {
            Lookup::Address(Ipv4Addr::new(198, 18, 0, 2))
        } else {
            Lookup::Refused
        }
    });
    assert!(calls <= 1);
    if data.len() < 12 {
        assert!(reply.is_none());
    }
    if let Some(reply) = reply {
        assert!(
            reply.bytes.len() <= MAX_REPLY,
            "{} bytes",
            reply.bytes.len()
        );
        let m = Message::from_vec(&reply.bytes).expect("a reply parses");
        assert_eq!(m.message_type(), MessageType::Response);
        assert_eq!(m.id(), u16::from_be_bytes([data[0], data[1]]));
        assert!(m.answers().len() <= 1);
        if !m.answers().is_empty() {
            assert!(reply.answered);
        }
    }
});
