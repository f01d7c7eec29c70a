//! cordon's integration suites, one test binary (one link of the static cordon
//! harness instead of one per suite): each module is a suite of its own, as the
//! README lists them, and `cargo test --test suite attacks::` runs one.
//! Every suite runs against the backend `$CORDON_TEST_BACKEND` names (default
//! `os`; see common/mod.rs).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod attacks;
mod caches;
mod cli;
mod docs;
mod egress;
mod egress_attacks;
mod egress_stream;
mod functional;
mod git_host;
mod home;
mod install;
mod limits;
mod mounts;
mod pi;
mod pi_cli;
mod pi_terminal;
mod pi_tmp;
mod proc_masks;
mod serve;
mod serve_tmp;
mod vm;
mod vm_backend;
mod vm_net;
mod vm_snapshot;
