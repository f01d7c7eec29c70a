//! cordon's egress broker. It runs on the host, outside every sandbox, and is the
//! sandbox's only way out: the backend hands it sockets that live in the sandbox's
//! network (a DNS socket and TCP listeners), and it answers DNS for allowed names
//! only, checks every connection's name again (SNI or Host), refuses private
//! addresses after resolution, passes TLS through untouched or terminates it with
//! cordon's own CA where a secret must be swapped in, and logs every decision.
//!
//! Pure pieces (parsers, address classes, the DNS stub) are separate modules so
//! they can be fuzzed and tested without a network.

pub mod addr;
pub mod dns;
pub mod scrub;
pub mod secrets;
pub mod sniff;

pub mod audit;
mod broker;
pub mod ca;
mod control;
mod error;
mod prefixed;
mod proxy;
pub mod setup;
mod splice;
pub mod upstream;

pub use broker::{BrokerConfig, Sockets, serve};
pub use error::NetError;
pub use setup::{Dirs, Egress, SandboxSide, prepare};
