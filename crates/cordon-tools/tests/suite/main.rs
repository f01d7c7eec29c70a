//! cordon-tools's integration tests, one test binary: each module is a file of
//! tests as before (`cargo test -p cordon-tools --test suite MODULE::` runs one).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod atomic;
mod exec;
mod files;
mod search;
