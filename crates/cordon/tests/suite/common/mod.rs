//! Shared harness of cordon's integration tests: cordon-test-support's (the users,
//! the fixtures, cordon run with a deadline against `$CORDON_TEST_BACKEND`, the
//! pseudo-terminals, the host's state), and what only this suite needs: pi, the
//! `cordon serve` client, the upstream servers and the fake model.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)] // not every suite uses every part of the harness

pub mod fake_model;
pub mod pi;
pub mod serve;
pub mod upstream;

pub use cordon_test_support::*;
