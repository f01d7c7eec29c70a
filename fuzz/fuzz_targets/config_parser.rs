//! Feed arbitrary bytes to the config parser: it must never panic, every error must
//! render, and an accepted config must survive a serialise/parse round trip.

#![no_main]

use cordon_policy::{parse_config, parse_env_arg, parse_size};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let file = Path::new("/fuzz/.cordon.json");
    match parse_config(data, file) {
        Ok(config) => {
            let json = serde_json::to_vec(&config).expect("a parsed config serialises");
            let again = parse_config(&json, file).expect("a serialised config parses");
            // Floats may lose their last bit through text; everything else must match.
            assert_eq!(again.allow_write, config.allow_write);
            assert_eq!(again.allow_read, config.allow_read);
            assert_eq!(again.deny_read, config.deny_read);
            assert_eq!(again.unprotect, config.unprotect);
            assert_eq!(again.env, config.env);
            assert_eq!(again.net, config.net);
            assert_eq!(again.memory, config.memory);
            assert_eq!(again.pids, config.pids);
            assert_eq!(again.read_only, config.read_only);
            for e in &config.env {
                let _ = parse_env_arg(e);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("/fuzz/.cordon.json"), "{msg}");
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_size(s);
        let _ = parse_env_arg(s);
    }
});
