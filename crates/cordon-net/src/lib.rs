//! cordon's egress broker. It runs on the host, outside every sandbox, and is the
//! sandbox's only way out: it answers DNS for allowed names only, checks every
//! connection's name again (SNI or Host), refuses private addresses after
//! resolution, passes TLS through untouched or terminates it with cordon's own CA
//! where a secret must be swapped in, and logs every decision.
//!
//! Its layers, each importing only those below it:
//! - `state` (private): what the broker decides with and remembers;
//! - `http` (private): HTTP it reads, plain or in TLS it terminates;
//! - [`router`]: one byte stream plus its destination in, the decision and the
//!   carrying out; DNS queries as bytes in, answers out;
//! - [`ingress`]: how streams reach the router: sockets in the sandbox's network
//!   namespace ([`ingress::namespace`], the OS backend), or streams that each
//!   open with a header naming their destination ([`ingress::stream`], for a VM
//!   guest's agent);
//! - [`wiring`]: the broker as a backend's `Additions` (cordon-backend's
//!   neutral types), serving the ingress the backend hands it.
//!
//! The session's control stream is not the broker's: the host control endpoint
//! (cordon-session's `control`) reads it and asks the broker through its
//! [`Router`] ([`Router::allow_domain`], [`Router::allow_rules`],
//! [`Router::recent_refusals`]).
//!
//! Pure pieces (parsers, address classes, the DNS stub) are separate modules so
//! they can be fuzzed and tested without a network.

pub mod addr;
pub mod dns;
pub mod scrub;
pub mod secrets;
pub mod sniff;

pub mod audit;
pub mod ca;
mod error;
mod http;
pub mod ingress;
mod prefixed;
mod relay;
pub mod router;
pub mod setup;
mod state;
pub mod upstream;
pub mod wiring;

pub use error::NetError;
pub use ingress::namespace::{BrokerStatus, Sockets, serve};
pub use router::{Connection, Destination, Router};
pub use setup::{Dirs, Egress, SandboxSide, for_policy, prepare};
pub use state::{AllowDomainError, BrokerConfig, Refusal};
pub use wiring::{Wired, wire};
