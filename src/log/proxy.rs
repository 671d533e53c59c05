//! The real client behind trusted reverse proxies.

use std::net::IpAddr;

use ipnet::IpNet;

/// Networks whose connections are proxies we trust to append the address they
/// saw to `X-Forwarded-For`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The address a request is attributed to.
    ///
    /// Only when the peer is trusted is `X-Forwarded-For` consulted, and then
    /// from the right: each trusted proxy appended the address it saw, so the
    /// right-most entry that is not itself a trusted proxy is the client.
    /// Entries to its left were written by the client and prove nothing. An
    /// entry that is not an address ends the walk at the last trusted hop.
    pub fn resolve(&self, peer: IpAddr, forwarded_for: &[u8]) -> IpAddr {
        if self.nets.is_empty() || forwarded_for.is_empty() || !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for entry in forwarded_for.rsplit(|&b| b == b',') {
            let Some(ip) = parse_forwarded_entry(entry) else {
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }
}

/// An address or CIDR (`203.0.113.7`, `203.0.113.0/24`, `2001:db8::/32`);
/// a bare address is a /32 or /128, host bits are cleared.
pub fn parse_cidr(text: &str) -> Option<IpNet> {
    let t = text.trim();
    t.parse::<IpNet>()
        .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
        .ok()
        .map(|n| n.trunc())
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, logged by dual-stack
/// listeners) are the IPv4 client; treat them as such everywhere.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// Parses a client address from log bytes.
pub fn parse_ip(b: &[u8]) -> Option<IpAddr> {
    if b.is_empty() || b.len() > 45 {
        return None;
    }
    // IPv4 first: it fails within a few bytes on anything else, and most
    // clients are IPv4, so most lines need no scan for a colon.
    if let Some(v4) = parse_ipv4(b) {
        return Some(IpAddr::V4(v4));
    }
    if !b.contains(&b':') {
        return None;
    }
    if let Some(v6) = parse_plain_ipv6(b) {
        return Some(canonical(IpAddr::V6(v6)));
    }
    let s = std::str::from_utf8(b).ok()?;
    s.parse::<IpAddr>().ok().map(canonical)
}

/// Dotted-quad IPv4, as strict as `std` (no leading zeros, no missing
/// octets). Hand-written because this runs once per log line and `std`'s
/// general parser costs several times more than this loop.
fn parse_ipv4(b: &[u8]) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut part = 0;
    let (mut value, mut digits) = (0u32, 0);
    for (i, &c) in b.iter().enumerate() {
        if c == b'.' {
            if digits == 0 || part == 3 {
                return None;
            }
            octets[part] = value as u8;
            part += 1;
            (value, digits) = (0, 0);
        } else if c.is_ascii_digit() {
            if digits == 3 || (digits == 1 && b[i - 1] == b'0') {
                return None;
            }
            value = value * 10 + u32::from(c - b'0');
            if value > 255 {
                return None;
            }
            digits += 1;
        } else {
            return None;
        }
    }
    if part != 3 || digits == 0 {
        return None;
    }
    octets[3] = value as u8;
    Some(octets.into())
}

/// The common spelling of an IPv6 address: hex groups of one to four
/// digits, at most one `::`. `None` means "not this spelling", and `std`
/// decides (embedded IPv4, anything invalid), so this only ever accepts
/// what `std` accepts. Hand-written for the same reason as [`parse_ipv4`]:
/// a quarter of a busy site's clients may be IPv6.
fn parse_plain_ipv6(b: &[u8]) -> Option<std::net::Ipv6Addr> {
    let mut groups = [0u16; 8];
    let mut n = 0;
    // Where `::` stands, as a count of the groups before it.
    let mut gap: Option<usize> = None;
    let mut i = 0;
    if b.starts_with(b"::") {
        gap = Some(0);
        i = 2;
        if i == b.len() {
            return Some(std::net::Ipv6Addr::UNSPECIFIED);
        }
    }
    loop {
        let (mut value, mut digits) = (0u16, 0);
        while let Some(d) = b.get(i).and_then(|&c| (c as char).to_digit(16)) {
            if digits == 4 {
                return None;
            }
            value = (value << 4) | d as u16;
            digits += 1;
            i += 1;
        }
        if digits == 0 || n == 8 {
            return None;
        }
        groups[n] = value;
        n += 1;
        match (b.get(i), b.get(i + 1)) {
            (None, _) => break,
            (Some(b':'), Some(b':')) if gap.is_none() => {
                gap = Some(n);
                i += 2;
                if i == b.len() {
                    break;
                }
            }
            (Some(b':'), Some(_)) => i += 1,
            _ => return None,
        }
    }
    let groups = match gap {
        None if n == 8 => groups,
        None => return None,
        Some(at) if n < 8 => {
            let mut full = [0u16; 8];
            full[..at].copy_from_slice(&groups[..at]);
            full[8 - (n - at)..].copy_from_slice(&groups[at..n]);
            full
        }
        Some(_) => return None,
    };
    Some(groups.into())
}

fn parse_forwarded_entry(entry: &[u8]) -> Option<IpAddr> {
    let e = entry.trim_ascii();
    if let Some(ip) = parse_ip(e) {
        return Some(ip);
    }
    // `[2001:db8::1]:443` and `192.0.2.1:8080` also occur.
    let host = if let Some(rest) = e.strip_prefix(b"[") {
        &rest[..memchr::memchr(b']', rest)?]
    } else {
        &e[..memchr::memrchr(b':', e)?]
    };
    parse_ip(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn plain_ipv6_accepts_only_what_std_accepts(
            text in proptest::collection::vec(prop_oneof![Just(':'), Just('0'), Just('f'), Just('.'), Just('1'), Just('A'), Just('g')], 0..45)
        ) {
            let text: String = text.into_iter().collect();
            if let Some(ip) = parse_plain_ipv6(text.as_bytes()) {
                prop_assert_eq!(Some(ip), text.parse().ok(), "{}", text);
            }
        }

        #[test]
        fn plain_ipv6_reads_every_address_std_writes(ip in any::<std::net::Ipv6Addr>()) {
            let text = ip.to_string();
            if !text.contains('.') {
                prop_assert_eq!(parse_plain_ipv6(text.as_bytes()), Some(ip));
            }
        }
    }

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_xff_says() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(p.resolve(ip("203.0.113.9"), b"1.2.3.4"), ip("203.0.113.9"));
    }

    #[test]
    fn rightmost_untrusted_entry_wins_not_the_spoofable_leftmost() {
        let p = proxies(&["10.0.0.0/8"]);
        // The client forged "1.1.1.1"; our proxy 10.0.0.5 appended what it saw.
        let got = p.resolve(ip("10.0.0.1"), b"1.1.1.1, 198.51.100.7, 10.0.0.5");
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn all_trusted_falls_back_to_leftmost_trusted() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            p.resolve(ip("10.0.0.1"), b"10.0.0.9, 10.0.0.5"),
            ip("10.0.0.9")
        );
    }

    #[test]
    fn garbage_entry_stops_at_last_trusted_hop() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            p.resolve(ip("10.0.0.1"), b"unknown, 10.0.0.5"),
            ip("10.0.0.5")
        );
        assert_eq!(p.resolve(ip("10.0.0.1"), b"-"), ip("10.0.0.1"));
    }

    #[test]
    fn fast_ipv4_agrees_with_std() {
        for s in [
            "0.0.0.0",
            "255.255.255.255",
            "1.2.3.4",
            "10.0.0.01",
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "1..2.3",
            ".1.2.3",
            "1.2.3.",
            "a.b.c.d",
            "1.2.3.4 ",
            "001.2.3.4",
            "1.2.3.1000",
        ] {
            assert_eq!(parse_ip(s.as_bytes()), s.parse::<IpAddr>().ok(), "{s}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_ip_agrees_with_std(s in "[0-9.:a-f]{0,20}") {
            proptest::prop_assert_eq!(parse_ip(s.as_bytes()), s.parse::<IpAddr>().ok().map(canonical));
        }

        /// Near-addresses: four groups of zero to four digits (leading
        /// zeros, 256 to 9999, empty octets), a dot too many or too few,
        /// a stray byte anywhere (a space, a slash, a high byte).
        #[test]
        fn ipv4_agrees_with_std_on_near_addresses(
            groups in proptest::collection::vec(
                proptest::prop_oneof!["0|[1-9][0-9]?|1[0-9]{2}|2[0-5][0-9]", "[0-9]{0,4}"],
                3..6,
            ),
            stray in proptest::option::of((0usize..20, proptest::sample::select(vec![b' ', b'/', b'-', b'.', 0xc3, 0x80, b'0', b'9']))),
        ) {
            let mut text = groups.join(".").into_bytes();
            if let Some((at, byte)) = stray {
                text.insert(at.min(text.len()), byte);
            }
            let by_std = std::str::from_utf8(&text).ok().and_then(|s| s.parse::<std::net::Ipv4Addr>().ok());
            proptest::prop_assert_eq!(parse_ipv4(&text), by_std, "{}", String::from_utf8_lossy(&text));
        }

        #[test]
        fn ipv4_reads_every_address_std_writes(ip in any::<std::net::Ipv4Addr>()) {
            proptest::prop_assert_eq!(parse_ipv4(ip.to_string().as_bytes()), Some(ip));
        }
    }

    #[test]
    fn ports_brackets_and_mapped_addresses() {
        let p = proxies(&["10.0.0.0/8", "2001:db8::/32"]);
        assert_eq!(
            p.resolve(ip("10.0.0.1"), b"[2001:db9::1]:443"),
            ip("2001:db9::1")
        );
        assert_eq!(
            p.resolve(ip("10.0.0.1"), b"192.0.2.1:8080"),
            ip("192.0.2.1")
        );
        assert_eq!(
            p.resolve(ip("::ffff:10.0.0.1"), b"192.0.2.1"),
            ip("192.0.2.1")
        );
        assert_eq!(parse_ip(b"::ffff:192.0.2.1"), Some(ip("192.0.2.1")));
    }
}
