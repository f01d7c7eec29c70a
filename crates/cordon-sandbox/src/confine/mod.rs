//! The layers applied to the sandboxed process itself, after the view is built:
//! capabilities, Landlock and seccomp.

pub mod caps;
pub mod landlock;
pub mod seccomp;
