//! cordon-policy's integration tests, one test binary: each module is a file of
//! tests as before (`cargo test -p cordon-policy --test suite MODULE::` runs one).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pi_and_mounts;
mod resolve;
mod tighten;
