//! Analyze stage for packets: per local address, packets, bytes and remote
//! peers by class ("LAN abusers": who on the network is torrenting).
//! Memory is bounded: at most [`MAX_LOCALS`] addresses, and remote peers
//! counted exactly up to [`MAX_PEERS`] per address and class, then as "at
//! least".

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::detect::p2p::{Class, Verdict};
use crate::net::Packet;

pub const MAX_LOCALS: usize = 65_536;
pub const MAX_PEERS: usize = 4096;

type Hasher = foldhash::fast::RandomState;

/// Which addresses are "local".
#[derive(Debug, Clone)]
pub struct Locals {
    nets: Vec<IpNet>,
}

impl Locals {
    pub fn new(nets: Vec<IpNet>) -> Locals {
        Locals { nets }
    }

    /// The private ranges: RFC 1918, CGNAT (RFC 6598) and IPv6 ULA.
    pub fn private() -> Locals {
        let nets = [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "fc00::/7",
        ]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
        Locals { nets }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClassCount {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default)]
struct Local {
    total: ClassCount,
    by_class: [ClassCount; 5],
    peers: [HashSet<IpAddr, Hasher>; 4],
    peers_capped: [bool; 4],
}

/// One row of the result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalRow {
    pub address: String,
    /// BitTorrent packets of every kind.
    pub p2p_packets: u64,
    pub p2p_bytes: u64,
    pub bittorrent: ClassCount,
    pub utp: ClassCount,
    pub dht: ClassCount,
    pub tracker: ClassCount,
    /// Distinct remote addresses it exchanged BitTorrent packets with.
    pub p2p_peers: u64,
    /// true when `p2p_peers` hit the count's bound: at least that many.
    pub peers_capped: bool,
    pub all_packets: u64,
    pub all_bytes: u64,
}

#[derive(Debug, Default)]
pub struct LanStats {
    locals: HashMap<IpAddr, Local, Hasher>,
    pub packets: u64,
    pub bytes: u64,
    /// Packets of no local address (both ends remote).
    pub foreign: u64,
    /// Local addresses not counted because the table was full.
    pub dropped_locals: u64,
}

fn index(c: Class) -> usize {
    match c {
        Class::Bittorrent => 0,
        Class::Utp => 1,
        Class::Dht => 2,
        Class::Tracker => 3,
        Class::Other => 4,
    }
}

impl LanStats {
    pub fn record(&mut self, locals: &Locals, p: &Packet<'_>, v: Verdict) {
        self.packets += 1;
        self.bytes += u64::from(p.len);
        let mut any = false;
        for (local, remote) in [(p.src, p.dst), (p.dst, p.src)] {
            if !locals.contains(local) {
                continue;
            }
            any = true;
            if !self.locals.contains_key(&local) && self.locals.len() >= MAX_LOCALS {
                self.dropped_locals += 1;
                continue;
            }
            let l = self.locals.entry(local).or_default();
            l.total.packets += 1;
            l.total.bytes += u64::from(p.len);
            let k = index(v.class);
            let c = &mut l.by_class[k];
            c.packets += 1 + u64::from(v.also_packets);
            c.bytes += u64::from(p.len) + v.also_bytes;
            if k < 4 {
                if l.peers[k].len() < MAX_PEERS {
                    l.peers[k].insert(remote);
                } else if !l.peers[k].contains(&remote) {
                    l.peers_capped[k] = true;
                }
            }
        }
        if !any {
            self.foreign += 1;
        }
    }

    /// Local addresses, the most BitTorrent packets first (then all
    /// packets); `top` rows (0 for all).
    pub fn rows(&self, top: usize) -> Vec<LocalRow> {
        let mut rows: Vec<LocalRow> = self
            .locals
            .iter()
            .map(|(ip, l)| {
                let mut peers: HashSet<IpAddr, Hasher> = HashSet::default();
                for set in &l.peers {
                    peers.extend(set.iter().copied());
                }
                let p2p = &l.by_class[..4];
                LocalRow {
                    address: ip.to_string(),
                    p2p_packets: p2p.iter().map(|c| c.packets).sum(),
                    p2p_bytes: p2p.iter().map(|c| c.bytes).sum(),
                    bittorrent: l.by_class[0].clone(),
                    utp: l.by_class[1].clone(),
                    dht: l.by_class[2].clone(),
                    tracker: l.by_class[3].clone(),
                    p2p_peers: peers.len() as u64,
                    peers_capped: l.peers_capped.iter().any(|c| *c),
                    all_packets: l.total.packets,
                    all_bytes: l.total.bytes,
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            b.p2p_packets
                .cmp(&a.p2p_packets)
                .then(b.all_packets.cmp(&a.all_packets))
                .then(a.address.cmp(&b.address))
        });
        if top > 0 {
            rows.truncate(top);
        }
        rows
    }

    /// Packets of `classes` from one local address (rules read this).
    pub fn count(&self, ip: IpAddr, classes: &[Class]) -> u64 {
        self.locals.get(&ip).map_or(0, |l| {
            classes.iter().map(|c| l.by_class[index(*c)].packets).sum()
        })
    }

    pub fn locals(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.locals.keys().copied()
    }
}

/// `n` DHT pings from `local` (in 10.0.0.0/24) to one remote peer, counted:
/// a sample for the tests of what reads these counts.
#[cfg(test)]
pub(crate) fn dht_sample(local: &str, n: u16) -> LanStats {
    use crate::detect::p2p::Classifier;
    use crate::net::{Link, build, decode};
    let locals = Locals::new(vec!["10.0.0.0/24".parse().unwrap()]);
    let mut s = LanStats::default();
    let mut c = Classifier::new();
    let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
    for k in 0..n {
        let bytes = build::ip(
            local.parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
            false,
            6881,
            1000 + k,
            ping,
        );
        let p = decode(Link::RawIp, &bytes).unwrap();
        let v = c.classify(&p);
        s.record(&locals, &p, v);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::p2p::Classifier;
    use crate::net::{Link, build, decode};

    #[test]
    fn counts_per_local_address_and_peers() {
        let locals = Locals::new(vec!["10.0.0.0/24".parse().unwrap()]);
        let mut s = LanStats::default();
        let mut c = Classifier::new();
        let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
        for peer in ["198.51.100.1", "198.51.100.2", "198.51.100.2"] {
            let bytes = build::ip(
                "10.0.0.5".parse().unwrap(),
                peer.parse().unwrap(),
                false,
                6881,
                6881,
                ping,
            );
            let p = decode(Link::RawIp, &bytes).unwrap();
            let v = c.classify(&p);
            s.record(&locals, &p, v);
        }
        let bytes = build::ip(
            "10.0.0.6".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
            true,
            5000,
            22,
            b"SSH-2.0",
        );
        let p = decode(Link::RawIp, &bytes).unwrap();
        let v = c.classify(&p);
        s.record(&locals, &p, v);
        let rows = s.rows(0);
        assert_eq!(rows[0].address, "10.0.0.5");
        assert_eq!(
            (rows[0].dht.packets, rows[0].p2p_peers, rows[0].all_packets),
            (3, 2, 3)
        );
        assert_eq!(
            (
                rows[1].address.as_str(),
                rows[1].p2p_packets,
                rows[1].all_packets
            ),
            ("10.0.0.6", 0, 1)
        );
        assert_eq!(
            s.count("10.0.0.5".parse().unwrap(), &[Class::Dht, Class::Utp]),
            3
        );
        assert!(Locals::private().contains("192.168.1.9".parse().unwrap()));
        assert!(!Locals::private().contains("8.8.8.8".parse().unwrap()));
    }
}
