//! Reading the first bytes of a connection: a TLS ClientHello (for SNI) or an HTTP
//! request head (for Host), without consuming anything the upstream must see.

pub mod http;
pub mod tls;
