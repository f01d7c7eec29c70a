//! Feed arbitrary bytes to the TLS ClientHello sniffer: it must never panic, and a
//! server name it reports is normalised.

#![no_main]

use cordon_net::sniff::Sniff;
use cordon_net::sniff::tls::{MAX_CLIENT_HELLO, client_hello};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match client_hello(data) {
        Sniff::Done(info) => {
            if let Some(name) = info.server_name {
                assert_eq!(
                    cordon_policy::normalize_name(&name).as_deref(),
                    Some(name.as_str())
                );
            }
        }
        Sniff::NeedMore => assert!(data.len() < MAX_CLIENT_HELLO),
        Sniff::Invalid(why) => assert!(!why.is_empty()),
    }
});
