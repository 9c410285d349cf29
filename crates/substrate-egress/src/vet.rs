//! Which addresses the proxy will connect to: never one that reaches this host, its private
//! networks or a cloud's metadata service, whatever name led to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` is refused, or `None` when the proxy may connect to it.
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => refusal_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn refusal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: [([u8; 4], u32, &str); 12] = [
        ([0, 0, 0, 0], 8, "an unspecified (\"this network\") address"),
        ([127, 0, 0, 0], 8, "a loopback address"),
        ([10, 0, 0, 0], 8, "a private (RFC 1918) address"),
        ([172, 16, 0, 0], 12, "a private (RFC 1918) address"),
        ([192, 168, 0, 0], 16, "a private (RFC 1918) address"),
        (
            [169, 254, 0, 0],
            16,
            "a link-local address (cloud metadata lives here)",
        ),
        (
            [100, 64, 0, 0],
            10,
            "a carrier-grade NAT (RFC 6598) address",
        ),
        ([192, 0, 0, 0], 24, "an IETF protocol assignment address"),
        ([198, 18, 0, 0], 15, "a benchmarking (RFC 2544) address"),
        ([224, 0, 0, 0], 4, "a multicast address"),
        ([240, 0, 0, 0], 4, "a reserved address"),
        ([255, 255, 255, 255], 32, "the broadcast address"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, why)| *why)
}

fn refusal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // Forms that embed an IPv4 address are judged by it.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refusal_v4(v4);
    }
    if seg[..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible (::a.b.c.d, deprecated).
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        return Some(refusal_v4(v4).unwrap_or("an IPv4-compatible address"));
    }
    if seg[0] == 0x0064 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        // NAT64 (64:ff9b::/96): the gateway would reach the embedded IPv4 address.
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        return refusal_v4(v4);
    }
    if seg[0] == 0x2002 {
        // 6to4 (2002:a.b.c.d::/48).
        let v4 = Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        );
        return refusal_v4(v4);
    }
    match seg[0] {
        s if s & 0xfe00 == 0xfc00 => {
            Some("a unique local (ULA) address (cloud metadata lives here)")
        }
        s if s & 0xffc0 == 0xfe80 => Some("a link-local address"),
        s if s & 0xffc0 == 0xfec0 => Some("a site-local address"),
        s if s & 0xff00 == 0xff00 => Some("a multicast address"),
        0x2001 if seg[1] == 0 => Some("a Teredo address"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        refusal(s.parse().unwrap()).is_some()
    }

    #[test]
    fn private_loopback_metadata_and_special_ranges_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "fec0::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2001:0:4136:e378::1",
        ] {
            assert!(refused(ip), "{ip} was let through");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "93.184.215.14",
            "172.32.0.1",
            "100.128.0.1",
            "203.0.113.10",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
        ] {
            assert!(!refused(ip), "{ip} was refused");
        }
    }
}
