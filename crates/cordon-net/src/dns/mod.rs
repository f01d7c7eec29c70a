//! DNS inside the sandbox: synthetic addresses for allowed names, and the stub.

pub mod names;
pub mod stub;
