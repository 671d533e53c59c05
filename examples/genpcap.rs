//! Writes a pcap of mixed LAN traffic for the packet benchmarks: BitTorrent
//! TCP flows (a handshake, then piece messages), uTP flows (SYN, STATE,
//! DATA), DHT queries and answers, UDP tracker connects, beside web,
//! DNS, SSH-like and QUIC-like traffic that is not BitTorrent. About a
//! fifth of the packets are BitTorrent of some kind.
//!
//! Usage: cargo run --release --example genpcap -- PACKETS OUT.pcap [SEED]
//!
//! Deterministic for a given PACKETS and SEED.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use pcap_file::pcap::{PcapPacket, PcapWriter};
use webfence::net::build;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn lan(r: &mut Rng) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2 + r.below(200) as u8))
}

fn remote(r: &mut Rng) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        198,
        18 + r.below(2) as u8,
        r.below(256) as u8,
        1 + r.below(250) as u8,
    ))
}

fn utp(kind: u8, conn: u16, data: &[u8]) -> Vec<u8> {
    let mut h = vec![(kind << 4) | 1, 0];
    h.extend_from_slice(&conn.to_be_bytes());
    h.extend_from_slice(&[0; 16]);
    h.extend_from_slice(data);
    h
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(n), Some(out)) = (args.get(1).and_then(|a| a.parse::<u64>().ok()), args.get(2))
    else {
        eprintln!("usage: genpcap PACKETS OUT.pcap [SEED]");
        std::process::exit(2);
    };
    let mut r = Rng(args.get(3).and_then(|s| s.parse().ok()).unwrap_or(7));
    let file = std::io::BufWriter::new(std::fs::File::create(out).expect("create the pcap"));
    let mut w = PcapWriter::new(file).expect("pcap header");
    let mut written = 0u64;
    let mut truth = [0u64; 5];
    let mut t = Duration::from_secs(1_700_000_000);
    let put = |w: &mut PcapWriter<_>, ip: Vec<u8>, t: Duration| {
        let f = build::ethernet(&ip);
        w.write_packet(&PcapPacket {
            timestamp: t,
            orig_len: f.len() as u32,
            data: Cow::Owned(f),
        })
        .expect("write a packet");
    };
    while written < n {
        t += Duration::from_micros(r.below(200));
        let (a, b) = (lan(&mut r), remote(&mut r));
        let (pa, pb) = (1024 + r.below(60000) as u16, 1024 + r.below(60000) as u16);
        let kind = r.below(20);
        let burst: Vec<Vec<u8>> = match kind {
            // BitTorrent over TCP: handshake both ways, then pieces.
            0 | 1 => {
                let mut hs = b"\x13BitTorrent protocol".to_vec();
                hs.extend(r.bytes(48));
                let mut v = vec![
                    build::ip(a, b, true, pa, 6881, &hs),
                    build::ip(b, a, true, 6881, pa, &hs),
                ];
                for _ in 0..8 {
                    v.push(build::ip(b, a, true, 6881, pa, &r.bytes(1400)));
                    v.push(build::ip(a, b, true, pa, 6881, &[0, 0, 0, 13, 6]));
                }
                v
            }
            // uTP: SYN, STATE, data.
            2 => {
                let c = r.below(65535) as u16;
                let mut v = vec![
                    build::ip(a, b, false, pa, pb, &utp(4, c, &[])),
                    build::ip(b, a, false, pb, pa, &utp(2, c, &[])),
                ];
                for _ in 0..6 {
                    v.push(build::ip(
                        a,
                        b,
                        false,
                        pa,
                        pb,
                        &utp(0, c.wrapping_add(1), &r.bytes(1000)),
                    ));
                }
                v
            }
            // DHT queries and answers.
            3 => vec![
                build::ip(
                    a,
                    b,
                    false,
                    pa,
                    6881,
                    b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
                ),
                build::ip(
                    b,
                    a,
                    false,
                    6881,
                    pa,
                    b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
                ),
            ],
            // A UDP tracker connect.
            4 => {
                let mut c = 0x0417_2710_1980u64.to_be_bytes().to_vec();
                c.extend_from_slice(&[0, 0, 0, 0]);
                c.extend(r.bytes(4));
                vec![
                    build::ip(a, b, false, pa, 6969, &c),
                    build::ip(b, a, false, 6969, pa, &r.bytes(16)),
                ]
            }
            // DNS.
            5..=7 => {
                let mut q = r.bytes(2);
                q.extend_from_slice(b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01");
                let mut ans = q.clone();
                ans[2] = 0x81;
                vec![
                    build::ip(a, b, false, pa, 53, &q),
                    build::ip(b, a, false, 53, pa, &ans),
                ]
            }
            // QUIC-like.
            8..=10 => {
                let mut v = Vec::new();
                for k in 0..4 {
                    let mut d = r.bytes(1200);
                    d[0] = if k == 0 { 0xc3 } else { 0x40 | (d[0] & 0x3f) };
                    v.push(build::ip(a, b, false, pa, 443, &d));
                }
                v
            }
            // SSH-like and other TCP.
            11..=13 => (0..6)
                .map(|_| build::ip(a, b, true, pa, 2222, &r.bytes(200)))
                .collect(),
            // Web.
            _ => {
                let mut v = vec![build::ip(
                    a,
                    b,
                    true,
                    pa,
                    80,
                    b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n",
                )];
                for _ in 0..6 {
                    v.push(build::ip(b, a, true, 80, pa, &r.bytes(1400)));
                }
                v
            }
        };
        let class = match kind {
            0 | 1 => 0,
            2 => 1,
            3 => 2,
            4 => 3,
            _ => 4,
        };
        for ip in burst {
            if written == n {
                break;
            }
            put(&mut w, ip, t);
            written += 1;
            truth[class] += 1;
        }
    }
    // What each packet is, to check a classifier against.
    eprintln!(
        "genpcap: {n} packets: bittorrent {}, utp {}, dht {}, tracker {}, other {}",
        truth[0], truth[1], truth[2], truth[3], truth[4]
    );
}
