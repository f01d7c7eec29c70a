//! Reading the first bytes of a connection: a TLS ClientHello (for SNI) or an HTTP
//! request head (for Host), without consuming anything the upstream must see.
//!
//! Both sniffers take every byte read so far and are called again after each read
//! until they give [`Sniff::Done`] or [`Sniff::Invalid`]; they never keep state.

pub mod http;
pub mod tls;

/// The outcome of sniffing the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff<T> {
    /// Not enough bytes yet: read more and call again.
    NeedMore,
    /// Parsed.
    Done(T),
    /// Not this protocol, malformed, or over the size bound; the reason is for
    /// the audit log.
    Invalid(String),
}

impl<T> Sniff<T> {
    /// The parsed value, if done.
    pub fn done(self) -> Option<T> {
        match self {
            Sniff::Done(t) => Some(t),
            _ => None,
        }
    }

    pub fn is_need_more(&self) -> bool {
        matches!(self, Sniff::NeedMore)
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Sniff<U> {
        match self {
            Sniff::NeedMore => Sniff::NeedMore,
            Sniff::Done(t) => Sniff::Done(f(t)),
            Sniff::Invalid(why) => Sniff::Invalid(why),
        }
    }
}
