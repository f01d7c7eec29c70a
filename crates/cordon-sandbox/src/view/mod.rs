//! The sandbox's view of the filesystem: planned on the host from the policy
//! ([`plan`]), built inside the new mount namespace ([`build`]).

pub mod build;
pub mod plan;

pub use build::{SERVED_VIEW, writable_dev};
pub use plan::{MountKind, MountOp, MountPlan, SyntheticFile, ViewPlan};
