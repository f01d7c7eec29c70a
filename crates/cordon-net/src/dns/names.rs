//! Synthetic addresses: the DNS stub answers every allowed name with an address of
//! its own from 198.18.0.0/15, so when the sandbox connects to one of them the
//! broker knows from the accepted socket's local address which name was meant.
//!
//! 198.18.0.0 (network) and 198.19.255.255 (broadcast of the /15) are never
//! handed out, nor 198.18.0.1, the sandbox's own address on `lo`. Addresses are
//! never reused, so a name's address never changes for the sandbox's life.

use std::collections::HashMap;
use std::net::Ipv4Addr;

/// The synthetic network, 198.18.0.0/15 (RFC 2544 benchmarking range).
pub const SYNTHETIC_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
/// The synthetic network's prefix length.
pub const SYNTHETIC_PREFIX: u8 = 15;
/// The sandbox's own address on `lo`: reserved, never a name's address.
pub const SANDBOX_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

const NET: u32 = u32::from_be_bytes(SYNTHETIC_NET.octets());
const MASK: u32 = u32::MAX << (32 - SYNTHETIC_PREFIX as u32);
/// The first address handed out.
const FIRST: u32 = NET + 2;
/// The last address handed out (the /15's broadcast address is skipped).
const LAST: u32 = NET + !MASK - 1;

/// Is `ip` in 198.18.0.0/15?
pub fn is_synthetic(ip: Ipv4Addr) -> bool {
    u32::from(ip) & MASK == NET
}

/// The names handed out so far and their addresses. Not thread-safe by itself:
/// the broker keeps it behind a mutex.
#[derive(Debug, Default, Clone)]
pub struct SyntheticNames {
    by_name: HashMap<String, Ipv4Addr>,
    /// Index `i` holds the name of `FIRST + i`.
    by_addr: Vec<String>,
}

impl SyntheticNames {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many names can be handed out in all.
    pub const CAPACITY: usize = (LAST - FIRST + 1) as usize;

    /// The address for `name` (normalised with `cordon_policy::normalize_name`
    /// first), assigning the next free one on first sight. `None` when the name
    /// is not a valid host name or the range is exhausted.
    pub fn addr_for(&mut self, name: &str) -> Option<Ipv4Addr> {
        let name = cordon_policy::normalize_name(name)?;
        if let Some(addr) = self.by_name.get(&name) {
            return Some(*addr);
        }
        let next = FIRST.checked_add(u32::try_from(self.by_addr.len()).ok()?)?;
        if next > LAST {
            return None;
        }
        let addr = Ipv4Addr::from(next);
        self.by_addr.push(name.clone());
        self.by_name.insert(name, addr);
        Some(addr)
    }

    /// The name `addr` was handed out for, if any.
    pub fn name_of(&self, addr: Ipv4Addr) -> Option<&str> {
        let n = u32::from(addr);
        if !(FIRST..=LAST).contains(&n) {
            return None;
        }
        self.by_addr.get((n - FIRST) as usize).map(String::as_str)
    }

    /// The address already handed out for `name`, without assigning one.
    pub fn get(&self, name: &str) -> Option<Ipv4Addr> {
        let name = cordon_policy::normalize_name(name)?;
        self.by_name.get(&name).copied()
    }

    /// How many names have an address.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_same_address() {
        let mut n = SyntheticNames::new();
        let a = n.addr_for("example.com").unwrap();
        assert_eq!(a, Ipv4Addr::new(198, 18, 0, 2));
        let b = n.addr_for("api.example.com").unwrap();
        assert_eq!(b, Ipv4Addr::new(198, 18, 0, 3));
        assert_eq!(n.addr_for("Example.COM.").unwrap(), a);
        assert_eq!(n.name_of(a), Some("example.com"));
        assert_eq!(n.name_of(b), Some("api.example.com"));
        assert_eq!(n.name_of(SANDBOX_ADDR), None);
        assert_eq!(n.name_of(Ipv4Addr::new(198, 18, 0, 4)), None);
        assert_eq!(n.name_of(Ipv4Addr::new(8, 8, 8, 8)), None);
        assert_eq!(n.get("api.example.com"), Some(b));
        assert_eq!(n.get("other.com"), None);
        assert_eq!(n.len(), 2);
        assert_eq!(n.addr_for("bad name"), None);
    }

    #[test]
    fn synthetic_range() {
        assert!(is_synthetic(SANDBOX_ADDR));
        assert!(is_synthetic(Ipv4Addr::new(198, 19, 255, 255)));
        assert!(!is_synthetic(Ipv4Addr::new(198, 20, 0, 0)));
        assert!(!is_synthetic(Ipv4Addr::new(198, 17, 255, 255)));
        assert_eq!(SyntheticNames::CAPACITY, (1 << 17) - 3);
    }

    #[test]
    fn exhaustion() {
        let mut n = SyntheticNames::new();
        let mut last = None;
        for i in 0..SyntheticNames::CAPACITY {
            last = n.addr_for(&format!("n{i}.example"));
            assert!(last.is_some(), "{i}");
        }
        assert_eq!(last, Some(Ipv4Addr::new(198, 19, 255, 254)));
        assert_eq!(n.addr_for("one-more.example"), None);
        // Known names still answer.
        assert_eq!(n.addr_for("n0.example"), Some(Ipv4Addr::new(198, 18, 0, 2)));
        assert_eq!(
            n.name_of(Ipv4Addr::new(198, 19, 255, 254)),
            Some(format!("n{}.example", SyntheticNames::CAPACITY - 1).as_str())
        );
    }
}
