//! Feed arbitrary bytes to the stream ingress's header parser (the text after the
//! header's length): it must never panic, and a header it accepts must encode
//! back to one that parses to the same opening.

#![no_main]

use cordon_net::ingress::stream::{MAX_HEADER, Opening};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(opening) = Opening::parse(data) else {
        return;
    };
    assert!(data.len() <= MAX_HEADER);
    let header = opening.encode().expect("an accepted header encodes");
    let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
    assert_eq!(len, header.len() - 2);
    assert_eq!(Opening::parse(&header[2..]), Ok(opening));
});
