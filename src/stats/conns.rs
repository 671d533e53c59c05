//! Connections to this machine's listening ports, per client (or per /24
//! and /64): what `webfence conns`, the guards' `conns*` values and the
//! connection rules read. Built from one dump of the kernel's table.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::detect::addr::{Subject, to_bits};
use crate::source::conns::{Conn, ConnSource, States, TcpState, Via};

/// One client's (or network's) connections.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientConns {
    /// The address, or the network when grouped.
    #[serde(serialize_with = "as_text")]
    pub client: Subject,
    pub total: u64,
    pub established: u64,
    pub syn_recv: u64,
    /// Every other state counted (closing, waits).
    pub other: u64,
    /// Connections per local port, busiest first.
    pub ports: Vec<PortCount>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PortCount {
    pub port: u16,
    pub conns: u64,
}

fn as_text<S: serde::Serializer>(s: &Subject, ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_str(s)
}

/// What one dump found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConnTable {
    pub via: Option<Via>,
    /// Local ports something listens on.
    pub listening: Vec<u16>,
    pub total: u64,
    pub established: u64,
    pub syn_recv: u64,
    /// Every client, busiest first.
    pub clients: Vec<ClientConns>,
}

/// Which connections count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnFilter {
    /// Only these states (default: every state but TIME_WAIT).
    pub states: Option<Vec<TcpState>>,
    /// Only these local ports (default: every listening port).
    pub ports: Vec<u16>,
    /// Group clients by network: (IPv4 prefix, IPv6 prefix).
    pub group: Option<(u8, u8)>,
}

impl ConnFilter {
    fn mask(&self) -> States {
        match &self.states {
            Some(s) => States::of(s),
            None => States::live(),
        }
    }
}

#[derive(Default)]
struct Acc {
    total: u64,
    established: u64,
    syn_recv: u64,
    other: u64,
    ports: BTreeMap<u16, u64>,
}

impl ConnTable {
    /// Dumps the table once for listening ports, once for the rest.
    pub fn read(source: &mut dyn ConnSource, filter: &ConnFilter) -> std::io::Result<ConnTable> {
        let mut listening = BTreeSet::new();
        source.dump(States::of(&[TcpState::Listen]), &mut |c| {
            listening.insert(c.local_port);
        })?;
        let mut conns = Vec::new();
        let via = source.dump(filter.mask(), &mut |c| {
            if c.state != TcpState::Listen {
                conns.push(*c);
            }
        })?;
        let mut t = ConnTable::build(&listening, &conns, filter);
        t.via = Some(via);
        Ok(t)
    }

    /// Counts inbound connections: those whose local port is listening.
    pub fn build(listening: &BTreeSet<u16>, conns: &[Conn], filter: &ConnFilter) -> ConnTable {
        let mut per: super::Map<u128, Acc> = super::Map::default();
        let mut t = ConnTable {
            listening: listening.iter().copied().collect(),
            ..ConnTable::default()
        };
        for c in conns {
            if !listening.contains(&c.local_port)
                || (!filter.ports.is_empty() && !filter.ports.contains(&c.local_port))
            {
                continue;
            }
            let subject = client_key(c.remote, filter.group);
            let a = per.entry(subject).or_default();
            a.total += 1;
            t.total += 1;
            match c.state {
                TcpState::Established => {
                    a.established += 1;
                    t.established += 1;
                }
                TcpState::SynRecv => {
                    a.syn_recv += 1;
                    t.syn_recv += 1;
                }
                _ => a.other += 1,
            }
            *a.ports.entry(c.local_port).or_default() += 1;
        }
        t.clients = per
            .into_iter()
            .map(|(bits, a)| {
                let mut ports: Vec<PortCount> = a
                    .ports
                    .into_iter()
                    .map(|(port, conns)| PortCount { port, conns })
                    .collect();
                ports.sort_by(|x, y| y.conns.cmp(&x.conns).then(x.port.cmp(&y.port)));
                ClientConns {
                    client: match filter.group {
                        Some((v4, v6)) => Subject::net(bits, v4, v6),
                        None => Subject::host(bits),
                    },
                    total: a.total,
                    established: a.established,
                    syn_recv: a.syn_recv,
                    other: a.other,
                    ports,
                }
            })
            .collect();
        // Ties in address order (IPv4 before IPv6): stable output without
        // formatting addresses in the comparison.
        t.clients
            .sort_unstable_by(|a, b| b.total.cmp(&a.total).then(a.client.cmp(&b.client)));
        t
    }

    /// The busiest client's connections.
    pub fn max_per_client(&self) -> u64 {
        self.clients.first().map_or(0, |c| c.total)
    }
}

fn client_key(addr: IpAddr, group: Option<(u8, u8)>) -> u128 {
    let bits = to_bits(addr);
    match group {
        Some((v4, v6)) => Subject::net(bits, v4, v6).bits,
        None => bits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(remote: &str, port: u16, state: TcpState) -> Conn {
        Conn {
            local: "10.0.0.1".parse().unwrap(),
            local_port: port,
            remote: remote.parse().unwrap(),
            remote_port: 40000,
            state,
        }
    }

    #[test]
    fn inbound_connections_are_counted_per_client_busiest_first() {
        let listening: BTreeSet<u16> = [80, 443].into();
        let conns = vec![
            conn("192.0.2.1", 443, TcpState::Established),
            conn("192.0.2.1", 443, TcpState::Established),
            conn("192.0.2.1", 80, TcpState::SynRecv),
            conn("192.0.2.2", 80, TcpState::Established),
            conn("192.0.2.3", 80, TcpState::CloseWait),
            // Outbound: our ephemeral port, nobody listens on it.
            conn("198.51.100.1", 51000, TcpState::Established),
        ];
        let t = ConnTable::build(&listening, &conns, &ConnFilter::default());
        assert_eq!((t.total, t.established, t.syn_recv), (5, 3, 1));
        assert_eq!(t.clients.len(), 3);
        let top = &t.clients[0];
        assert_eq!(top.client.to_string(), "192.0.2.1");
        assert_eq!((top.total, top.established, top.syn_recv), (3, 2, 1));
        assert_eq!(
            top.ports,
            vec![
                PortCount {
                    port: 443,
                    conns: 2
                },
                PortCount { port: 80, conns: 1 }
            ]
        );
        assert_eq!(t.max_per_client(), 3);
        assert_eq!(t.clients[2].other, 1);

        let grouped = ConnTable::build(
            &listening,
            &conns,
            &ConnFilter {
                group: Some((24, 64)),
                ports: vec![80],
                ..ConnFilter::default()
            },
        );
        assert_eq!(grouped.clients.len(), 1);
        assert_eq!(grouped.clients[0].client.to_string(), "192.0.2.0/24");
        assert_eq!(grouped.clients[0].total, 3);
    }
}
