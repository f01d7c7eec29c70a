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
pub mod vm;

pub use cordon_test_support::*;

/// cordon-test-support's [`cordon_test_support::for_each_user`], skipped
/// (saying why) when the suites run against the VM backend on a machine
/// without one ([`vm::skipped_for_want_of_a_vm`]; never in CI). Shadows the
/// glob import above, so every suite's `for_each_user` is this one.
pub fn for_each_user(test: &str, f: impl Fn(&Fixture)) {
    if !vm::skipped_for_want_of_a_vm(test) {
        cordon_test_support::for_each_user(test, f);
    }
}
