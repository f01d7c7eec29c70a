//! What cordon's test suites share, moved here from the suite that had it so
//! that every crate's tests (and a VM backend's rerun of the same attacks) use
//! one copy. A dev-dependency only (`publish = false`).
//!
//! - Every cordon test runs once per [`User`]: as root *and* as the ordinary user
//!   `cordon-test` (created here, under a file lock) when the tests run as root; only
//!   as the current user otherwise (the root variant is then reported as skipped).
//! - cordon is run from a world-readable copy of the binary, so the ordinary user can
//!   execute it even when the repository's target dir is private.
//! - Every test gets a fresh [`Fixture`] per user: `home/` holding secrets whose content
//!   is a random marker, `work/` (the workspace) and `outside/` (a sibling directory
//!   the user may write outside cordon), all owned by that user.
//! - Every child process is run with a deadline: a hung test is a failing test.
//! - Anything an escape could leave on the host (files in /etc, mounts, device nodes,
//!   a setuid binary, kernel settings) is removed by a [`Defer`] guard, also when the
//!   assertion fails, so a broken cordon does not damage the machine running the suite.
//! - The library suites resolve policies in a [`PolicyEnv`]: a home, a workspace
//!   and config files of their own in a temporary directory.
//!
//! Environment: `CORDON_TEST_BACKEND` names the backend every cordon run uses
//! (passed on as `CORDON_BACKEND`; default `os`); `CORDON_TEST_BIN` runs the suite
//! against another cordon binary; `CORDON_TEST_DIR` moves the fixtures (default
//! /var/tmp/cordon-tests); `CORDON_TEST_KEEP=1` keeps the fixtures of failed
//! tests for inspection.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fixture;
mod host;
mod policy_env;
mod process;
mod pty;
mod random;
mod users;

pub use fixture::{Fixture, SECRETS, base_dir, cordon_bin, for_each_user};
pub use host::{
    Defer, Snapshot, argv_of, assert_absent, assert_all_unchanged, assert_not_exists,
    assert_unchanged, kill_all, proc_state, procs_with_arg, snapshot, snapshots, wait_gone,
    wait_present,
};
pub use policy_env::PolicyEnv;
pub use process::{
    Output, PATH, RUN_DEADLINE, backend_slowdown, describe, in_vm, run_cmd, spawn_quiet,
    test_backend, wait_deadline,
};
pub use pty::{Pty, Terminal, find, tty_input_pending};
pub use random::{random_hex, random_u32};
pub use users::{TEST_USER, User, egid, euid, running_as_root, test_user, users};
