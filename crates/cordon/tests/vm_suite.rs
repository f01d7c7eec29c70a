//! The VM rerun: the attack, functional, mount, home and `/proc` suites of
//! `tests/suite` again, every `cordon` call in the VM backend (the harness's
//! `test_backend()` is `vm` in this binary; `$CORDON_TEST_BACKEND` overrides
//! it). The same source, not a copy: what holds on the OS backend must hold in
//! the guest, unchanged (issue 14's bar). Each call restores a VM from the
//! template that `cordon vm setup` makes once per user; without QEMU or a
//! kernel every test is skipped, saying why, except in CI (`$CI`), where it
//! fails. `tests/suite` holds the rest, and the VM backend's own tests.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "suite/common/mod.rs"]
mod common;

#[path = "suite/attacks.rs"]
mod attacks;
#[path = "suite/egress_attacks.rs"]
mod egress_attacks;
#[path = "suite/functional.rs"]
mod functional;
#[path = "suite/home.rs"]
mod home;
#[path = "suite/mounts.rs"]
mod mounts;
#[path = "suite/proc_masks.rs"]
mod proc_masks;
