//! Feed arbitrary bytes to the HTTP request head sniffer: it must never panic, a
//! parsed head must lie within the input, and its host must be extractable
//! without panicking.

#![no_main]

use cordon_net::sniff::Sniff;
use cordon_net::sniff::http::{MAX_HEAD, request_head, split_authority};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match request_head(data) {
        Sniff::Done(head) => {
            assert!(head.len <= data.len());
            assert!(head.len <= MAX_HEAD);
            assert!(head.version <= 1);
            if let Some((host, _port)) = head.host() {
                assert!(!host.is_empty());
            }
            let _ = split_authority(&head.target);
        }
        Sniff::NeedMore => assert!(data.len() <= MAX_HEAD),
        Sniff::Invalid(why) => assert!(!why.is_empty()),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = split_authority(text);
    }
});
