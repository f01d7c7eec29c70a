//! Random markers and names, from /dev/urandom.

use std::fs;
use std::io::Read;

/// A random hex string (from /dev/urandom).
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random number in `lo..lo+span`, for unique `sleep` arguments.
pub fn random_u32(lo: u32, span: u32) -> u32 {
    let h = random_hex(4);
    lo + u32::from_str_radix(&h, 16).unwrap() % span
}
