//! Address classes: which upstream addresses the broker may connect to.
//!
//! After resolving a name upstream, the broker refuses every address that is not
//! [`AddrClass::Public`] (unless the user named it with `--resolve` or
//! `--allow-local`). IPv6 forms that embed an IPv4 address (mapped, compatible,
//! NAT64, 6to4) are classified by the embedded address, so `::ffff:127.0.0.1` is
//! loopback and `64:ff9b::a9fe:a9fe` is the cloud metadata service.
//!
//! The documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
//! 2001:db8::/32, 3fff::/20) count as public on purpose: nothing routes them on
//! the internet, so refusing them protects nothing, and cordon's integration
//! test network uses them as real upstream addresses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What kind of address an IP is, as far as egress is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrClass {
    /// Reachable on the internet (including the documentation ranges).
    Public,
    /// `0.0.0.0` or `::` (Linux connects these to the local host).
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`; also the deprecated IPv6
    /// site-local `fec0::/10`.
    Private,
    /// `169.254/16`, `fe80::/10`.
    LinkLocal,
    /// `100.64/10`, carrier-grade NAT.
    SharedCgnat,
    /// A cloud provider's instance metadata service: `169.254.169.254`,
    /// `169.254.170.2` (ECS task credentials), `fd00:ec2::254`,
    /// `100.100.100.200` (Alibaba), `192.0.0.192` (Oracle).
    CloudMetadata,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Anything else not routed on the internet: the rest of `0/8`, `192.0.0/24`,
    /// `240/4`, IPv6 outside `2000::/3`, discard-only, Teredo, ORCHID,
    /// local-use NAT64.
    Reserved,
    /// `198.18/15` (cordon's own synthetic range inside the sandbox) and
    /// `2001:2::/48`.
    Benchmarking,
    /// `fc00::/7`.
    UniqueLocal,
}

impl AddrClass {
    /// A short name, for logs and JSON (`"public"`, `"loopback"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AddrClass::Public => "public",
            AddrClass::Unspecified => "unspecified",
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private",
            AddrClass::LinkLocal => "link-local",
            AddrClass::SharedCgnat => "shared-cgnat",
            AddrClass::CloudMetadata => "cloud-metadata",
            AddrClass::Multicast => "multicast",
            AddrClass::Broadcast => "broadcast",
            AddrClass::Reserved => "reserved",
            AddrClass::Benchmarking => "benchmarking",
            AddrClass::UniqueLocal => "unique-local",
        }
    }
}

impl fmt::Display for AddrClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddrClass::Public => "a public address",
            AddrClass::Unspecified => "the unspecified address",
            AddrClass::Loopback => "a loopback address",
            AddrClass::Private => "a private address",
            AddrClass::LinkLocal => "a link-local address",
            AddrClass::SharedCgnat => "a shared (carrier-grade NAT) address",
            AddrClass::CloudMetadata => "a cloud metadata service address",
            AddrClass::Multicast => "a multicast address",
            AddrClass::Broadcast => "the broadcast address",
            AddrClass::Reserved => "a reserved address",
            AddrClass::Benchmarking => "a benchmarking address (cordon's synthetic range)",
            AddrClass::UniqueLocal => "a unique local address",
        })
    }
}

/// The class of `ip`.
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// True only for [`AddrClass::Public`].
pub fn is_public(ip: IpAddr) -> bool {
    classify(ip) == AddrClass::Public
}

/// Does `ip` lie in `net/prefix`?
fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix.min(32))
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

/// Does `ip` lie in `net/prefix`?
fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix.min(128))
    };
    u128::from(ip) & mask == u128::from(net) & mask
}

/// The class of an IPv4 address.
pub fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    let o = ip.octets();
    if ip == Ipv4Addr::UNSPECIFIED {
        return AddrClass::Unspecified;
    }
    if ip == Ipv4Addr::BROADCAST {
        return AddrClass::Broadcast;
    }
    // Metadata services first: they sit inside other special ranges.
    if matches!(
        o,
        [169, 254, 169, 254] | [169, 254, 170, 2] | [100, 100, 100, 200] | [192, 0, 0, 192]
    ) {
        return AddrClass::CloudMetadata;
    }
    let table: &[([u8; 4], u32, AddrClass)] = &[
        ([0, 0, 0, 0], 8, AddrClass::Reserved),
        ([10, 0, 0, 0], 8, AddrClass::Private),
        ([100, 64, 0, 0], 10, AddrClass::SharedCgnat),
        ([127, 0, 0, 0], 8, AddrClass::Loopback),
        ([169, 254, 0, 0], 16, AddrClass::LinkLocal),
        ([172, 16, 0, 0], 12, AddrClass::Private),
        // 192.0.2.0/24 is documentation (public here, see the module comment),
        // but 192.0.0.0/24 is the IETF protocol assignments block.
        ([192, 0, 0, 0], 24, AddrClass::Reserved),
        ([192, 168, 0, 0], 16, AddrClass::Private),
        ([198, 18, 0, 0], 15, AddrClass::Benchmarking),
        ([224, 0, 0, 0], 4, AddrClass::Multicast),
        ([240, 0, 0, 0], 4, AddrClass::Reserved),
    ];
    table
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map_or(AddrClass::Public, |(_, _, class)| *class)
}

/// The IPv4 address an IPv6 address embeds, for the forms that route to it:
/// IPv4-mapped `::ffff:a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d`,
/// IPv4-compatible `::a.b.c.d` (not `::` or `::1`), NAT64 `64:ff9b::a.b.c.d` and
/// 6to4 `2002:AABB:CCDD::/48`.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    let seg = ip.segments();
    if bits >> 32 == 0xffff || bits >> 32 == 0xffff_0000 {
        return Some(low32);
    }
    if bits >> 32 == 0 && bits > 1 {
        return Some(low32);
    }
    if in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return Some(low32);
    }
    if seg[0] == 0x2002 {
        return Some(Ipv4Addr::from(((seg[1] as u32) << 16) | seg[2] as u32));
    }
    None
}

/// The class of an IPv6 address.
pub fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    if ip == Ipv6Addr::UNSPECIFIED {
        return AddrClass::Unspecified;
    }
    if ip == Ipv6Addr::LOCALHOST {
        return AddrClass::Loopback;
    }
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return AddrClass::CloudMetadata;
    }
    let v6 = |s: [u16; 3]| Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0);
    let table: &[([u16; 3], u32, AddrClass)] = &[
        ([0xfe80, 0, 0], 10, AddrClass::LinkLocal),
        ([0xfec0, 0, 0], 10, AddrClass::Private),
        ([0xfc00, 0, 0], 7, AddrClass::UniqueLocal),
        ([0xff00, 0, 0], 8, AddrClass::Multicast),
        // Discard-only.
        ([0x0100, 0, 0], 64, AddrClass::Reserved),
        // Local-use NAT64 (RFC 8215): translates to private networks.
        ([0x64, 0xff9b, 1], 48, AddrClass::Reserved),
        // Teredo: tunnels to an obfuscated IPv4 address.
        ([0x2001, 0, 0], 32, AddrClass::Reserved),
        ([0x2001, 2, 0], 48, AddrClass::Benchmarking),
        // ORCHID and ORCHIDv2: identifiers, not locators.
        ([0x2001, 0x10, 0], 28, AddrClass::Reserved),
        ([0x2001, 0x20, 0], 28, AddrClass::Reserved),
        // 2001:db8::/32 and 3fff::/20 are documentation: public here.
    ];
    if let Some((_, _, class)) = table
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, v6(*net), *prefix))
    {
        return *class;
    }
    // Global unicast is 2000::/3; nothing outside it is routed on the internet.
    if in_v6(ip, v6([0x2000, 0, 0]), 3) {
        AddrClass::Public
    } else {
        AddrClass::Reserved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddrClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn ipv4_ranges() {
        use AddrClass::*;
        let cases = [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Reserved),
            ("10.0.0.1", Private),
            ("10.255.255.255", Private),
            ("11.0.0.1", Public),
            ("100.63.255.255", Public),
            ("100.64.0.1", SharedCgnat),
            ("100.127.255.255", SharedCgnat),
            ("100.128.0.0", Public),
            ("100.100.100.200", CloudMetadata),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("169.254.1.1", LinkLocal),
            ("169.254.169.254", CloudMetadata),
            ("169.254.170.2", CloudMetadata),
            ("172.15.255.255", Public),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("172.32.0.0", Public),
            ("192.0.0.1", Reserved),
            ("192.0.0.192", CloudMetadata),
            ("192.0.2.1", Public),
            ("198.51.100.7", Public),
            ("203.0.113.9", Public),
            ("192.168.1.1", Private),
            ("198.17.255.255", Public),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.255", Benchmarking),
            ("198.20.0.0", Public),
            ("224.0.0.1", Multicast),
            ("239.255.255.255", Multicast),
            ("240.0.0.1", Reserved),
            ("255.255.255.254", Reserved),
            ("255.255.255.255", Broadcast),
            ("1.1.1.1", Public),
            ("8.8.8.8", Public),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), want, "{ip}");
            assert_eq!(is_public(ip.parse().unwrap()), want == Public, "{ip}");
        }
    }

    #[test]
    fn ipv6_ranges() {
        use AddrClass::*;
        let cases = [
            ("::", Unspecified),
            ("::1", Loopback),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", Private),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("fd00:ec2::254", CloudMetadata),
            ("ff02::1", Multicast),
            ("2001:db8::1", Public),
            ("3fff::1", Public),
            ("2606:4700::1111", Public),
            ("2001:4860:4860::8888", Public),
            ("2001::1", Reserved),
            ("2001:2::1", Benchmarking),
            ("2001:10::1", Reserved),
            ("100::1", Reserved),
            ("64:ff9b:1::1", Reserved),
            ("4000::1", Reserved),
            ("1::1", Reserved),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn ipv6_embedding_ipv4() {
        use AddrClass::*;
        let cases = [
            // Mapped.
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.1.2.3", Private),
            ("::ffff:169.254.169.254", CloudMetadata),
            ("::ffff:8.8.8.8", Public),
            ("::ffff:0.0.0.0", Unspecified),
            // Translated.
            ("::ffff:0:192.168.0.1", Private),
            // Compatible.
            ("::127.0.0.1", Loopback),
            ("::10.0.0.1", Private),
            ("::8.8.8.8", Public),
            ("::0.0.0.2", Reserved),
            // NAT64.
            ("64:ff9b::127.0.0.1", Loopback),
            ("64:ff9b::a9fe:a9fe", CloudMetadata),
            ("64:ff9b::c0a8:101", Private),
            ("64:ff9b::808:808", Public),
            // 6to4.
            ("2002:7f00:1::1", Loopback),
            ("2002:a9fe:a9fe::", CloudMetadata),
            ("2002:ac10:1::5", Private),
            ("2002:808:808::1", Public),
            ("2002:c612:1::", Benchmarking),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), want, "{ip}");
        }
        assert_eq!(
            embedded_v4("64:ff9b::1.2.3.4".parse().unwrap()),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(embedded_v4("2606:4700::1".parse().unwrap()), None);
    }

    #[test]
    fn display_reasons() {
        assert_eq!(AddrClass::Private.to_string(), "a private address");
        assert_eq!(
            class("169.254.169.254").to_string(),
            "a cloud metadata service address"
        );
        assert_eq!(AddrClass::Loopback.as_str(), "loopback");
    }
}
