//! Feed arbitrary bytes to a session's host control endpoint as the stream from
//! inside the sandbox (`cordon_session::control::Endpoint::serve`), with and
//! without an egress broker behind it: it must never panic, answer every line
//! at most once (a line longer than the limit once, its rest skipped), and every
//! answer must be one line of JSON.

#![no_main]

use cordon_backend::{BackendKind, Layers};
use cordon_net::{BrokerConfig, Router};
use cordon_policy::{NetMode, NetworkRules, Origin, Sourced};
use cordon_session::control::Endpoint;
use libfuzzer_sys::fuzz_target;
use std::io::{self, Read, Write};

/// The sandbox's end: reads come from the fuzzer's bytes, writes are kept.
struct Channel<'a> {
    from_sandbox: &'a [u8],
    to_sandbox: Vec<u8>,
}

impl Read for Channel<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.from_sandbox.read(buf)
    }
}

impl Write for Channel<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.to_sandbox.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, from_sandbox)) = data.split_first() else {
        return;
    };
    let broker = (mode & 1 == 1)
        .then(|| Router::new(BrokerConfig::deciding(NetworkRules::default()), vec![443]));
    let net = if broker.is_some() {
        NetMode::Allowlist
    } else {
        NetMode::None
    };
    let endpoint = Endpoint::new(
        &Sourced::new(net, Origin::Default),
        BackendKind::Os,
        &Layers::default(),
        broker,
    );
    let mut channel = Channel {
        from_sandbox,
        to_sandbox: Vec::new(),
    };
    endpoint.serve(&mut channel);
    let lines = from_sandbox.split(|b| *b == b'\n').count();
    let answers: Vec<&[u8]> = channel.to_sandbox.split(|b| *b == b'\n').collect();
    // Every answer ends with a newline, so the last piece is empty.
    assert_eq!(
        answers.last(),
        Some(&&[][..]),
        "an answer without its newline"
    );
    let answers = &answers[..answers.len() - 1];
    assert!(
        answers.len() <= lines,
        "{} answers to {lines} lines",
        answers.len()
    );
    for answer in answers {
        serde_json::from_slice::<serde_json::Value>(answer).expect("an answer is JSON");
    }
});
