//! Carrying what the broker allows: HTTP it reads (plain, or TLS it terminates to
//! swap in a secret), and the HTTP proxy listener for programs that want one.
//! TLS to hosts without secrets, and raw TCP, are relayed untouched by
//! [`crate::broker`].

pub mod connect;
pub mod http;
