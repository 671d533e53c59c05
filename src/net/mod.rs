//! Parse stage for packets: a captured frame's link, IP and TCP/UDP headers
//! read in place into a [`Packet`] that borrows its payload. No allocation;
//! anything short or inconsistent is `None` (counted by the caller), never
//! a panic: the bytes come from the network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How a frame starts, as pcap link types name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// DLT_EN10MB: a 14-byte Ethernet header (VLAN tags skipped).
    Ethernet,
    /// DLT_RAW / LINKTYPE_IPV4 / LINKTYPE_IPV6: the IP header first.
    RawIp,
    /// DLT_LINUX_SLL: Linux "cooked" capture, 16 bytes.
    LinuxSll,
    /// DLT_LINUX_SLL2: 20 bytes.
    LinuxSll2,
    /// DLT_NULL / DLT_LOOP: a 4-byte address family.
    Null,
}

impl Link {
    /// From a pcap link-type number; `None` for one not read here.
    pub fn from_linktype(n: u32) -> Option<Link> {
        Some(match n {
            1 => Link::Ethernet,
            12 | 101 | 228 | 229 => Link::RawIp,
            113 => Link::LinuxSll,
            276 => Link::LinuxSll2,
            0 | 108 => Link::Null,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    /// Any other IP protocol (ICMP, GRE…) or a later fragment.
    Other,
}

/// One IP packet, as much as the classifier needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Proto,
    /// 0 when not TCP or UDP.
    pub sport: u16,
    pub dport: u16,
    /// The IP packet's length on the wire (from its header, not the
    /// captured part).
    pub len: u32,
    /// TCP or UDP payload, as far as it was captured.
    pub payload: &'a [u8],
}

/// The IP packet inside a frame of `link`.
pub fn decode(link: Link, frame: &[u8]) -> Option<Packet<'_>> {
    let ip = match link {
        Link::RawIp => frame,
        Link::Ethernet => {
            let mut ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
            let mut at = 14;
            // 802.1Q and 802.1ad tags, at most two.
            for _ in 0..2 {
                if ethertype == 0x8100 || ethertype == 0x88a8 {
                    ethertype = u16::from_be_bytes([*frame.get(at + 2)?, *frame.get(at + 3)?]);
                    at += 4;
                }
            }
            if ethertype != 0x0800 && ethertype != 0x86dd {
                return None;
            }
            frame.get(at..)?
        }
        Link::LinuxSll => frame.get(16..)?,
        Link::LinuxSll2 => frame.get(20..)?,
        Link::Null => frame.get(4..)?,
    };
    ip_packet(ip)
}

/// An IPv4 or IPv6 packet (the version nibble decides).
pub fn ip_packet(ip: &[u8]) -> Option<Packet<'_>> {
    match ip.first()? >> 4 {
        4 => v4(ip),
        6 => v6(ip),
        _ => None,
    }
}

fn v4(ip: &[u8]) -> Option<Packet<'_>> {
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ihl < 20 || ip.len() < ihl {
        return None;
    }
    let len = u32::from(u16::from_be_bytes([ip[2], ip[3]]));
    let src = IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
    let fragment_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    let proto = if fragment_offset != 0 { 0 } else { ip[9] };
    // The captured part may stop before the header's length says.
    let end = (len as usize).clamp(ihl, ip.len());
    transport(src, dst, proto, len, &ip[ihl..end])
}

fn v6(ip: &[u8]) -> Option<Packet<'_>> {
    if ip.len() < 40 {
        return None;
    }
    let len = u32::from(u16::from_be_bytes([ip[4], ip[5]])) + 40;
    let addr = |at: usize| -> Option<IpAddr> {
        let b: [u8; 16] = ip.get(at..at + 16)?.try_into().ok()?;
        Some(IpAddr::V6(Ipv6Addr::from(b)))
    };
    let (src, dst) = (addr(8)?, addr(24)?);
    let mut next = ip[6];
    let mut at = 40;
    // Hop-by-hop, routing and destination options: skipped; a fragment
    // header ends the walk (only a first fragment has ports).
    for _ in 0..4 {
        match next {
            0 | 43 | 60 => {
                next = *ip.get(at)?;
                at += (usize::from(*ip.get(at + 1)?) + 1) * 8;
            }
            44 => {
                let offset = u16::from_be_bytes([*ip.get(at + 2)?, *ip.get(at + 3)?]) >> 3;
                next = if offset == 0 { *ip.get(at)? } else { 0 };
                at += 8;
            }
            _ => break,
        }
    }
    let end = (len as usize).clamp(at.min(ip.len()), ip.len());
    transport(src, dst, next, len, ip.get(at..end).unwrap_or(&[]))
}

fn transport(src: IpAddr, dst: IpAddr, proto: u8, len: u32, rest: &[u8]) -> Option<Packet<'_>> {
    let port = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*rest.get(at)?, *rest.get(at + 1)?]))
    };
    let (proto, sport, dport, payload) = match proto {
        6 => {
            let offset = usize::from(*rest.get(12)? >> 4) * 4;
            if offset < 20 {
                return None;
            }
            (
                Proto::Tcp,
                port(0)?,
                port(2)?,
                rest.get(offset..).unwrap_or(&[]),
            )
        }
        17 => (Proto::Udp, port(0)?, port(2)?, rest.get(8..).unwrap_or(&[])),
        _ => (Proto::Other, 0, 0, &[][..]),
    };
    Some(Packet {
        src,
        dst,
        proto,
        sport,
        dport,
        len,
        payload,
    })
}

/// Packets built for tests (here and in the integration tests, which
/// write captures): an IPv4 or IPv6 header and a TCP or UDP one before
/// `payload`.
#[doc(hidden)]
pub mod build {
    use std::net::IpAddr;

    pub fn ip(
        src: IpAddr,
        dst: IpAddr,
        tcp: bool,
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&sport.to_be_bytes());
        l4.extend_from_slice(&dport.to_be_bytes());
        if tcp {
            l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        } else {
            l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        l4.extend_from_slice(payload);
        let proto = if tcp { 6 } else { 17 };
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut p = vec![0x45, 0];
                p.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
                p.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(&l4);
                p
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut p = vec![0x60, 0, 0, 0];
                p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                p.extend_from_slice(&[proto, 64]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(&l4);
                p
            }
            _ => panic!("mixed families"),
        }
    }

    /// The same in an Ethernet frame.
    pub fn ethernet(ip: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        f.extend_from_slice(if ip.first().is_some_and(|b| b >> 4 == 6) {
            &[0x86, 0xdd]
        } else {
            &[0x08, 0x00]
        });
        f.extend_from_slice(ip);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tcp_and_udp_over_both_families_and_links() {
        let p = build::ip(a("10.0.0.2"), a("203.0.113.9"), true, 51413, 6881, b"hello");
        let got = decode(Link::RawIp, &p).unwrap();
        assert_eq!(
            (got.proto, got.sport, got.dport, got.payload),
            (Proto::Tcp, 51413, 6881, &b"hello"[..])
        );
        assert_eq!(got.len as usize, p.len());
        let e = build::ethernet(&p);
        assert_eq!(decode(Link::Ethernet, &e), Some(got));
        let u = build::ip(a("fd00::2"), a("2001:db8::9"), false, 6881, 6881, b"d1:ad");
        let frame = build::ethernet(&u);
        let got = decode(Link::Ethernet, &frame).unwrap();
        assert_eq!(
            (got.src, got.proto, got.payload),
            (a("fd00::2"), Proto::Udp, &b"d1:ad"[..])
        );
    }

    #[test]
    fn short_or_strange_bytes_are_none_never_a_panic() {
        let p = build::ip(a("10.0.0.2"), a("10.0.0.3"), true, 1, 2, b"x");
        for cut in 0..p.len() {
            let _ = decode(Link::RawIp, &p[..cut]);
            let _ = decode(Link::Ethernet, &build::ethernet(&p[..cut]));
        }
        assert_eq!(decode(Link::RawIp, &[]), None);
        assert_eq!(decode(Link::RawIp, &[0x45; 19]), None);
        // A TCP data offset under 20 bytes.
        let mut bad = p.clone();
        bad[20 + 12] = 0x10;
        assert_eq!(decode(Link::RawIp, &bad), None);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            for link in [Link::Ethernet, Link::RawIp, Link::LinuxSll, Link::LinuxSll2, Link::Null] {
                let _ = decode(link, &bytes);
            }
        }
    }
}
