//! cordon's VM backend, the foundation (issue 14): the guest's boot files
//! assembled and cached on the host ([`image`]), QEMU started with them and a
//! virtio-serial channel to cordon's own guest agent ([`vm`], [`agent`]), and the
//! framed protocol between the two ([`protocol`]). docs/vm.md says what exists and
//! what does not yet.

pub mod agent;
pub mod backend;
pub mod doctor;
pub mod image;
pub mod mux;
pub mod net;
pub mod progress;
pub mod protocol;
pub mod share;
pub mod snapshot;
pub mod vm;

pub use backend::VmBackend;
pub use image::{Extra, Image, ImageError, Kernel, Spec};
pub use progress::Progress;
pub use protocol::Status;
pub use vm::{Accel, Config, ExecRequest, Machine, Vm, VmError};
