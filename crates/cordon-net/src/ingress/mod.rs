//! How connections from the sandbox reach the broker. Each ingress accepts them in
//! its own way and hands each one to the router ([`crate::router`]) with where it
//! was meant to go; every decision is the router's, the same whatever the ingress.
//!
//! - [`namespace`]: sockets made inside the sandbox's network namespace (the OS
//!   backend); a connection's local address is its destination, and TCP to TCP
//!   is relayed with splice(2).
//! - [`stream`]: byte streams that each open with a header naming their
//!   destination (a VM guest's agent, multiplexing its guest's connections over
//!   one channel).
//!
//! Both may hand a connection to the sandbox's HTTP proxy ([`http_proxy`]).

pub mod http_proxy;
pub mod namespace;
pub mod stream;
