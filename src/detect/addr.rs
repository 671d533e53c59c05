//! Addresses as plain `u128` (IPv4 mapped into `::ffff:0:0/96`), so that
//! keys, masks and sets of networks are integer operations.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::stats::Map;

const V4_MAPPED: u128 = 0xffff_0000_0000;

pub fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => V4_MAPPED | u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => V4_MAPPED | u128::from(u32::from(v4)),
            None => u128::from(v6),
        },
    }
}

pub fn is_v4(bits: u128) -> bool {
    bits >> 32 == V4_MAPPED >> 32
}

pub fn from_bits(bits: u128) -> IpAddr {
    if is_v4(bits) {
        IpAddr::V4(Ipv4Addr::from(bits as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(bits))
    }
}

/// Keeps the first `prefix` bits of the 128-bit form.
pub fn mask(bits: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p if p >= 128 => bits,
        p => bits & (!0u128 << (128 - u32::from(p))),
    }
}

/// An address or network, as bans and decisions name them. `prefix` counts
/// bits of the 128-bit form: an IPv4 /24 is 120.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject {
    pub bits: u128,
    pub prefix: u8,
}

impl Subject {
    pub fn host(bits: u128) -> Subject {
        Subject { bits, prefix: 128 }
    }

    /// The network of `bits` with an IPv4 or IPv6 prefix length.
    pub fn net(bits: u128, v4_prefix: u8, v6_prefix: u8) -> Subject {
        let prefix = if is_v4(bits) {
            96 + v4_prefix.min(32)
        } else {
            v6_prefix.min(128)
        };
        Subject {
            bits: mask(bits, prefix),
            prefix,
        }
    }

    pub fn from_net(net: IpNet) -> Subject {
        let bits = to_bits(net.network());
        let prefix = match net {
            IpNet::V4(n) => 96 + n.prefix_len(),
            IpNet::V6(n) => n.prefix_len(),
        };
        Subject {
            bits: mask(bits, prefix),
            prefix,
        }
    }

    /// The address or network as an `IpNet` (an address as /32 or /128).
    pub fn to_net(&self) -> IpNet {
        IpNet::new(self.addr(), self.family_prefix()).unwrap_or_else(|_| IpNet::from(self.addr()))
    }

    pub fn is_host(&self) -> bool {
        self.prefix == 128
    }

    pub fn contains(&self, bits: u128) -> bool {
        mask(bits, self.prefix) == self.bits
    }

    pub fn addr(&self) -> IpAddr {
        from_bits(self.bits)
    }

    /// The prefix length as the address family writes it.
    pub fn family_prefix(&self) -> u8 {
        if is_v4(self.bits) && self.prefix >= 96 {
            self.prefix - 96
        } else {
            self.prefix
        }
    }
}

/// Why a typed address or network was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("'{0}' is not an IP address or CIDR")]
    NotAnAddress(String),
    #[error(
        "'{text}' has host bits set: as a network it is {network} (--normalize bans that; or give the address alone)"
    )]
    HostBits { text: String, network: IpNet },
}

/// An address or a CIDR, as an admin types it: "203.0.113.7",
/// "2001:db8::/32", "10.0.0.0/8". Host bits of a CIDR are ignored.
impl std::str::FromStr for Subject {
    type Err = SubjectError;
    fn from_str(s: &str) -> Result<Subject, SubjectError> {
        let t = s.trim();
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Ok(Subject::host(to_bits(ip)));
        }
        t.parse::<IpNet>()
            .map(Subject::from_net)
            .map_err(|_| SubjectError::NotAnAddress(t.to_string()))
    }
}

impl Subject {
    /// Parses an address or CIDR as typed, refusing a CIDR with host bits
    /// set (`1.2.3.4/8`): the admin may have meant the address, or a
    /// narrower network. The error names the network it would mean.
    pub fn parse_exact(s: &str) -> Result<Subject, SubjectError> {
        let subject: Subject = s.parse()?;
        let t = s.trim();
        if let Ok(net) = t.parse::<IpNet>() {
            if net.trunc() != net {
                return Err(SubjectError::HostBits {
                    text: t.to_string(),
                    network: net.trunc(),
                });
            }
        }
        Ok(subject)
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr())
        } else {
            write!(f, "{}/{}", self.addr(), self.family_prefix())
        }
    }
}

/// A set of addresses and networks with lookups in one hash probe per
/// distinct prefix length in use (a handful in practice), whatever the
/// number of entries.
///
/// Each prefix length also keeps a 64-bit filter: one bit per entry, at a
/// place a multiply of the masked address picks. An address whose bit is
/// clear is not in that length's table, found with no probe. The
/// allowlist is asked about every request and holds a few entries (the
/// loopback network, the machine's own addresses) at two lengths: two
/// probes a request became two tests of a bit (BENCHMARKS.md, "a filter
/// before the allowlist's probes"). Bits are not cleared when entries go
/// (another entry may share one): a stale bit costs a probe, never a
/// wrong answer.
#[derive(Debug, Clone, Default)]
pub struct NetSet {
    by_prefix: Vec<ByPrefix>,
    len: usize,
}

#[derive(Debug, Clone)]
struct ByPrefix {
    prefix: u8,
    filter: u64,
    entries: Map<u128, ()>,
}

/// The filter bit of a masked address: an unseeded mix is enough, as a
/// collision (even one an attacker chose) costs a probe, never an answer.
fn filter_bit(masked: u128) -> u64 {
    let folded = (masked as u64) ^ ((masked >> 64) as u64).rotate_left(17);
    1 << (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58)
}

impl NetSet {
    pub fn insert(&mut self, s: Subject) {
        let at = match self.by_prefix.iter().position(|b| b.prefix == s.prefix) {
            Some(i) => i,
            None => {
                self.by_prefix.push(ByPrefix {
                    prefix: s.prefix,
                    filter: 0,
                    entries: Map::default(),
                });
                // Longest prefix first: the most specific match is found first.
                self.by_prefix.sort_by_key(|b| std::cmp::Reverse(b.prefix));
                self.by_prefix
                    .iter()
                    .position(|b| b.prefix == s.prefix)
                    .unwrap_or(0)
            }
        };
        if let Some(b) = self.by_prefix.get_mut(at) {
            b.filter |= filter_bit(s.bits);
            if b.entries.insert(s.bits, ()).is_none() {
                self.len += 1;
            }
        }
    }

    pub fn remove(&mut self, s: Subject) {
        if let Some(b) = self.by_prefix.iter_mut().find(|b| b.prefix == s.prefix) {
            if b.entries.remove(&s.bits).is_some() {
                self.len -= 1;
            }
        }
        self.by_prefix.retain(|b| !b.entries.is_empty());
    }

    /// The most specific entry containing `bits`.
    pub fn find(&self, bits: u128) -> Option<Subject> {
        self.by_prefix.iter().find_map(|b| {
            let key = mask(bits, b.prefix);
            (b.filter & filter_bit(key) != 0 && b.entries.contains_key(&key)).then_some(Subject {
                bits: key,
                prefix: b.prefix,
            })
        })
    }

    pub fn contains(&self, bits: u128) -> bool {
        self.find(bits).is_some()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> impl Iterator<Item = Subject> + '_ {
        self.by_prefix.iter().flat_map(|b| {
            b.entries.keys().map(move |&bits| Subject {
                bits,
                prefix: b.prefix,
            })
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> u128 {
        to_bits(s.parse().unwrap())
    }

    #[test]
    fn v4_and_mapped_are_one_address() {
        assert_eq!(ip("1.2.3.4"), ip("::ffff:1.2.3.4"));
        assert!(is_v4(ip("1.2.3.4")));
        assert!(!is_v4(ip("2001:db8::1")));
        assert_eq!(from_bits(ip("1.2.3.4")).to_string(), "1.2.3.4");
    }

    #[test]
    fn subjects_print_as_written() {
        assert_eq!(
            Subject::net(ip("10.1.2.3"), 16, 64).to_string(),
            "10.1.0.0/16"
        );
        assert_eq!(
            Subject::net(ip("2001:db8:1:2:3::4"), 24, 64).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(Subject::host(ip("10.1.2.3")).to_string(), "10.1.2.3");
        let n = Subject::from_net("192.0.2.0/24".parse().unwrap());
        assert_eq!(n, Subject::net(ip("192.0.2.77"), 24, 64));
    }

    #[test]
    fn netset_finds_the_most_specific() {
        let mut s = NetSet::default();
        s.insert(Subject::from_net("10.0.0.0/8".parse().unwrap()));
        s.insert(Subject::host(ip("10.1.2.3")));
        assert_eq!(s.find(ip("10.1.2.3")), Some(Subject::host(ip("10.1.2.3"))));
        assert_eq!(
            s.find(ip("10.9.9.9")).map(|x| x.to_string()).as_deref(),
            Some("10.0.0.0/8")
        );
        assert!(!s.contains(ip("11.0.0.1")));
        assert_eq!(s.len(), 2);
        s.remove(Subject::from_net("10.0.0.0/8".parse().unwrap()));
        assert!(!s.contains(ip("10.9.9.9")));
        assert_eq!(s.len(), 1);
    }

    proptest! {
        // The filter in front of each prefix length's table never hides an
        // entry: `find` agrees with a search of every entry, the most
        // specific first, after inserts and removals.
        #[test]
        fn netset_finds_what_a_search_of_every_entry_finds(
            entries in proptest::collection::vec((any::<u32>(), prop_oneof![Just(8u8), Just(16), Just(24), Just(32)]), 1..60),
            removed in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
            probes in proptest::collection::vec(any::<u32>(), 1..60),
        ) {
            let subject = |a: u32, p: u8| Subject::net(to_bits(IpAddr::V4(Ipv4Addr::from(a))), p, 128);
            let mut set = NetSet::default();
            let mut all: Vec<Subject> = entries.iter().map(|&(a, p)| subject(a, p)).collect();
            for s in &all {
                set.insert(*s);
            }
            for i in removed {
                if all.is_empty() {
                    break;
                }
                let s = all[i.index(all.len())];
                set.remove(s);
                all.retain(|x| *x != s);
            }
            // Probe the entries themselves, their neighbours, and others.
            let mut asked: Vec<u32> = probes;
            asked.extend(entries.iter().flat_map(|&(a, _)| [a, a ^ 1, a ^ 0x100]));
            for a in asked {
                let bits = to_bits(IpAddr::V4(Ipv4Addr::from(a)));
                let expected = all
                    .iter()
                    .filter(|s| s.contains(bits))
                    .max_by_key(|s| s.prefix)
                    .copied();
                prop_assert_eq!(set.find(bits), expected);
            }
        }

        #[test]
        fn netset_agrees_with_ipnet(a: u32, b: u32, p in 0u8..=32) {
            let net = ipnet::Ipv4Net::new(Ipv4Addr::from(a), p).unwrap().trunc();
            let mut s = NetSet::default();
            s.insert(Subject::from_net(IpNet::V4(net)));
            prop_assert_eq!(s.contains(to_bits(IpAddr::V4(Ipv4Addr::from(b)))), net.contains(&Ipv4Addr::from(b)));
        }
    }
}
