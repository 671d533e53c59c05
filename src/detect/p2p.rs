//! Detect stage for packets: which ones are BitTorrent, from the first bytes
//! of their payload and what their flow did before. No DPI engine: five
//! shapes the protocols fix, each checked strictly.
//!
//! - BitTorrent over TCP: the handshake, `\x13BitTorrent protocol`; the rest
//!   of a flow that began with one counts too.
//! - DHT (BEP 5): a bencoded dictionary whose `y` key is `q`, `r` or `e`,
//!   with a transaction id `t`, read by a small bounded bencode walker.
//!   Each message is judged alone: clients send DHT and uTP from one UDP
//!   socket, so a flow's class cannot say which a packet is.
//! - UDP trackers (BEP 15): a connect request's magic protocol id, and the
//!   rest of that flow (announces, answers).
//! - HTTP trackers: a `GET` whose query carries `info_hash=`.
//! - uTP (BEP 29): a 20-byte header (version 1, type 0–4, a valid extension
//!   chain). Two random bytes fit that often enough (a DNS query id of
//!   0x41 0x00 does), so a header alone only makes a flow a candidate; the
//!   flow is uTP once a later packet agrees: the answer to an `ST_SYN`
//!   carries its connection id, the initiator's next packets that id + 1.
//!   The candidate packets are then counted (at most [`PENDING_MAX`]).
//!
//! Encrypted BitTorrent (MSE/PE) looks like random bytes by design: it is
//! out of reach here, and no guess is made.
//!
//! Flows are remembered in a table bounded by [`MAX_FLOWS`] (the oldest
//! half dropped when full), keyed with a seeded hasher: the keys come from
//! the network.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::net::{Packet, Proto};

/// What a packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// The BitTorrent peer protocol over TCP.
    Bittorrent,
    /// uTP: BitTorrent over UDP.
    Utp,
    /// The DHT (KRPC over UDP).
    Dht,
    /// Tracker traffic: UDP trackers and HTTP announces.
    Tracker,
    /// Anything else.
    Other,
}

impl Class {
    pub const P2P: [Class; 4] = [Class::Bittorrent, Class::Utp, Class::Dht, Class::Tracker];

    pub fn name(self) -> &'static str {
        match self {
            Class::Bittorrent => "bittorrent",
            Class::Utp => "utp",
            Class::Dht => "dht",
            Class::Tracker => "tracker",
            Class::Other => "other",
        }
    }

    pub fn from_name(s: &str) -> Option<Class> {
        Some(match s {
            "bittorrent" => Class::Bittorrent,
            "utp" => Class::Utp,
            "dht" => Class::Dht,
            "tracker" => Class::Tracker,
            "other" => Class::Other,
            _ => return None,
        })
    }
}

/// Most flows remembered.
pub const MAX_FLOWS: usize = 65_536;

/// Most packets of a uTP candidate flow held until it is confirmed.
pub const PENDING_MAX: u32 = 64;

const HANDSHAKE: &[u8] = b"\x13BitTorrent protocol";
const UDP_TRACKER_MAGIC: [u8; 8] = 0x0417_2710_1980u64.to_be_bytes();

/// A flow as seen from its first packet: (initiator, its port, the other
/// side, its port, proto). A packet the other way finds it reversed.
type FlowKey = (IpAddr, u16, IpAddr, u16, Proto);

#[derive(Debug, Clone, Copy)]
enum FlowState {
    Known(Class),
    /// A uTP `ST_SYN` (or another first header) from the initiator with
    /// this connection id; `held` packets and bytes wait for a confirmation.
    UtpCandidate {
        conn_id: u16,
        syn: bool,
        held: u32,
        held_bytes: u64,
    },
}

#[derive(Debug, Clone)]
struct Flow {
    state: FlowState,
    last_seen: u64,
}

/// What one packet turned out to be. `also` holds earlier packets of the
/// same flow that this one confirmed (uTP candidates): count them too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub class: Class,
    pub also_packets: u32,
    pub also_bytes: u64,
}

impl Verdict {
    fn of(class: Class) -> Verdict {
        Verdict {
            class,
            also_packets: 0,
            also_bytes: 0,
        }
    }
}

/// Classifies packets, remembering flows.
#[derive(Debug, Default)]
pub struct Classifier {
    flows: HashMap<FlowKey, Flow, foldhash::fast::RandomState>,
    tick: u64,
}

impl Classifier {
    pub fn new() -> Classifier {
        Classifier::default()
    }

    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    pub fn classify(&mut self, p: &Packet<'_>) -> Verdict {
        self.tick += 1;
        if p.proto == Proto::Other {
            return Verdict::of(Class::Other);
        }
        // A DHT message stands alone, and shares its UDP socket (so its
        // flow) with uTP: it is told apart before the flow's class.
        if p.proto == Proto::Udp && is_krpc(p.payload) {
            return Verdict::of(Class::Dht);
        }
        let forward: FlowKey = (p.src, p.sport, p.dst, p.dport, p.proto);
        let backward: FlowKey = (p.dst, p.dport, p.src, p.sport, p.proto);
        let (key, from_initiator) = if self.flows.contains_key(&forward) {
            (forward, true)
        } else if self.flows.contains_key(&backward) {
            (backward, false)
        } else {
            (forward, true)
        };
        let tick = self.tick;
        if let Some(flow) = self.flows.get_mut(&key) {
            flow.last_seen = tick;
            match flow.state {
                FlowState::Known(class) => return Verdict::of(class),
                FlowState::UtpCandidate {
                    conn_id,
                    syn,
                    held,
                    held_bytes,
                } => {
                    let confirmed = utp_header(p.payload).is_some_and(|h| {
                        if from_initiator {
                            // The initiator's later packets: SYN id + 1.
                            h.conn_id == conn_id.wrapping_add(u16::from(syn)) && h.kind != ST_SYN
                        } else {
                            // The answer carries the SYN's id.
                            h.conn_id == conn_id && h.kind == ST_STATE
                        }
                    });
                    if confirmed {
                        flow.state = FlowState::Known(Class::Utp);
                        return Verdict {
                            class: Class::Utp,
                            also_packets: held,
                            also_bytes: held_bytes,
                        };
                    }
                    if from_initiator && held < PENDING_MAX && utp_header(p.payload).is_some() {
                        flow.state = FlowState::UtpCandidate {
                            conn_id,
                            syn,
                            held: held + 1,
                            held_bytes: held_bytes + u64::from(p.len),
                        };
                    } else if !from_initiator || held >= PENDING_MAX {
                        // An answer that is not uTP, or too long unconfirmed.
                        flow.state = FlowState::Known(Class::Other);
                    }
                    return Verdict::of(Class::Other);
                }
            }
        }
        let (class, remember) = first_packet(p);
        match remember {
            Some(state) => self.remember(key, state),
            None if class != Class::Other => self.remember(key, FlowState::Known(class)),
            None => {}
        }
        Verdict::of(class)
    }

    fn remember(&mut self, key: FlowKey, state: FlowState) {
        if self.flows.len() >= MAX_FLOWS {
            // The least recently seen half goes: one pass, then room for
            // many more flows before the next.
            let mut ages: Vec<u64> = self.flows.values().map(|f| f.last_seen).collect();
            let mid = ages.len() / 2;
            ages.select_nth_unstable(mid);
            let cut = ages[mid];
            self.flows.retain(|_, f| f.last_seen > cut);
        }
        self.flows.insert(
            key,
            Flow {
                state,
                last_seen: self.tick,
            },
        );
    }
}

/// A flow's first packet: its class, and a state to keep when it needs one
/// (uTP candidates, and flows whose later packets inherit the class).
fn first_packet(p: &Packet<'_>) -> (Class, Option<FlowState>) {
    let payload = p.payload;
    match p.proto {
        Proto::Tcp => {
            if payload.starts_with(HANDSHAKE) {
                (Class::Bittorrent, None)
            } else if is_http_announce(payload) {
                (Class::Tracker, None)
            } else {
                (Class::Other, None)
            }
        }
        Proto::Udp => {
            if payload.len() >= 16
                && payload[..8] == UDP_TRACKER_MAGIC
                && payload[8..12] == [0, 0, 0, 0]
            {
                (Class::Tracker, None)
            } else if p.sport != 53 && p.dport != 53 && p.sport != 5353 && p.dport != 5353 {
                match utp_header(payload) {
                    Some(h) => (
                        Class::Other,
                        Some(FlowState::UtpCandidate {
                            conn_id: h.conn_id,
                            syn: h.kind == ST_SYN,
                            held: 1,
                            held_bytes: u64::from(p.len),
                        }),
                    ),
                    None => (Class::Other, None),
                }
            } else {
                (Class::Other, None)
            }
        }
        Proto::Other => (Class::Other, None),
    }
}

const ST_STATE: u8 = 2;
const ST_SYN: u8 = 4;

struct UtpHeader {
    kind: u8,
    conn_id: u16,
}

/// A uTP header: version 1, type 0–4, then the extension chain (each
/// extension: next type, length, bytes), within the payload.
fn utp_header(b: &[u8]) -> Option<UtpHeader> {
    if b.len() < 20 || b[0] & 0x0f != 1 {
        return None;
    }
    let kind = b[0] >> 4;
    if kind > 4 {
        return None;
    }
    let mut ext = b[1];
    let mut at = 20;
    let mut hops = 0;
    while ext != 0 {
        // Known extensions are 1 (selective ack) and 2 (extension bits);
        // anything else in a first header is not uTP as deployed.
        if ext > 2 || hops > 4 {
            return None;
        }
        let next = *b.get(at)?;
        let len = usize::from(*b.get(at + 1)?);
        if len == 0 || at + 2 + len > b.len() {
            return None;
        }
        ext = next;
        at += 2 + len;
        hops += 1;
    }
    // An ST_SYN carries no data; ST_STATE neither.
    if (kind == ST_SYN || kind == ST_STATE) && at != b.len() {
        return None;
    }
    Some(UtpHeader {
        kind,
        conn_id: u16::from_be_bytes([b[2], b[3]]),
    })
}

/// An HTTP tracker announce or scrape: `GET /…?…info_hash=` in the first
/// line.
fn is_http_announce(b: &[u8]) -> bool {
    let Some(rest) = b.strip_prefix(b"GET /") else {
        return false;
    };
    let line = &rest[..memchr::memchr(b'\r', rest).unwrap_or(rest.len()).min(1024)];
    memchr::memmem::find(line, b"info_hash=").is_some()
}

/// A KRPC message: a bencoded dictionary with `t` (a string) and `y` (`q`,
/// `r` or `e`), and what `y` says it carries (`q` with `a`, `r`, `e`).
fn is_krpc(b: &[u8]) -> bool {
    if b.first() != Some(&b'd') {
        return false;
    }
    let mut at = 1;
    let mut y = None;
    let (mut t, mut q, mut a, mut r, mut e) = (false, false, false, false, false);
    // Top-level keys only; values are skipped by a bounded walker.
    for _ in 0..32 {
        match b.get(at) {
            Some(b'e') => {
                return t
                    && match y {
                        Some(b'q') => q && a,
                        Some(b'r') => r,
                        Some(b'e') => e,
                        _ => false,
                    };
            }
            Some(_) => {}
            None => return false,
        }
        let Some((key, next)) = string(b, at) else {
            return false;
        };
        at = next;
        match key {
            b"y" => {
                let Some((v, next)) = string(b, at) else {
                    return false;
                };
                if v.len() != 1 {
                    return false;
                }
                y = Some(v[0]);
                at = next;
                continue;
            }
            b"t" => t = b.get(at).is_some_and(u8::is_ascii_digit),
            b"q" => q = true,
            b"a" => a = b.get(at) == Some(&b'd'),
            b"r" => r = b.get(at) == Some(&b'd'),
            b"e" => e = b.get(at) == Some(&b'l'),
            _ => {}
        }
        let Some(next) = skip(b, at, 0) else {
            return false;
        };
        at = next;
    }
    false
}

/// A bencoded string at `at`: its bytes and where it ends.
fn string(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let colon = at + memchr::memchr(b':', b.get(at..(at + 8).min(b.len()))?)?;
    let digits = &b[at..colon];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let end = colon + 1 + len;
    Some((b.get(colon + 1..end)?, end))
}

/// Skips one bencoded value; `None` when malformed or nested too deep.
fn skip(b: &[u8], at: usize, depth: u32) -> Option<usize> {
    if depth > 8 {
        return None;
    }
    match *b.get(at)? {
        b'i' => Some(at + memchr::memchr(b'e', b.get(at..)?)? + 1),
        b'l' | b'd' => {
            let mut at = at + 1;
            for _ in 0..256 {
                if *b.get(at)? == b'e' {
                    return Some(at + 1);
                }
                at = skip(b, at, depth + 1)?;
            }
            None
        }
        b'0'..=b'9' => string(b, at).map(|(_, end)| end),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{Link, build, decode};

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn class_of(
        c: &mut Classifier,
        src: &str,
        dst: &str,
        tcp: bool,
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) -> Verdict {
        let bytes = build::ip(a(src), a(dst), tcp, sport, dport, payload);
        let p = decode(Link::RawIp, &bytes).unwrap();
        c.classify(&p)
    }

    fn utp(kind: u8, ext: u8, conn_id: u16, data: &[u8]) -> Vec<u8> {
        let mut h = vec![(kind << 4) | 1, ext];
        h.extend_from_slice(&conn_id.to_be_bytes());
        h.extend_from_slice(&[0; 16]);
        h.extend_from_slice(data);
        h
    }

    #[test]
    fn a_handshake_makes_its_flow_bittorrent() {
        let mut c = Classifier::new();
        let mut hs = HANDSHAKE.to_vec();
        hs.extend_from_slice(&[0; 48]);
        assert_eq!(
            class_of(&mut c, "10.0.0.2", "203.0.113.9", true, 40000, 6881, &hs).class,
            Class::Bittorrent
        );
        // The rest of the flow, both ways.
        assert_eq!(
            class_of(
                &mut c,
                "203.0.113.9",
                "10.0.0.2",
                true,
                6881,
                40000,
                &[0, 0, 0, 1, 2]
            )
            .class,
            Class::Bittorrent
        );
        assert_eq!(
            class_of(&mut c, "10.0.0.2", "203.0.113.9", true, 40000, 6881, b"xx").class,
            Class::Bittorrent
        );
        // Another flow of the same hosts is not.
        assert_eq!(
            class_of(
                &mut c,
                "10.0.0.2",
                "203.0.113.9",
                true,
                40001,
                80,
                b"GET / HTTP/1.1\r\n"
            )
            .class,
            Class::Other
        );
    }

    #[test]
    fn dht_messages_by_their_keys() {
        let mut c = Classifier::new();
        let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
        assert_eq!(
            class_of(&mut c, "10.0.0.2", "198.51.100.1", false, 6881, 6881, ping).class,
            Class::Dht
        );
        let reply = b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re";
        assert_eq!(
            class_of(&mut c, "198.51.100.7", "10.0.0.2", false, 6881, 6881, reply).class,
            Class::Dht
        );
        let error = b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee";
        assert_eq!(
            class_of(&mut c, "198.51.100.8", "10.0.0.2", false, 1, 2, error).class,
            Class::Dht
        );
        for not in [
            &b"d1:y1:qe"[..],
            b"d1:t2:aa1:y1:qe",
            b"d1:t2:aa1:y1:xe",
            b"hello",
            b"d",
            b"d999999:",
            b"dl",
            b"d1:t2:aa1:y1:q1:q4:ping1:ai5e",
        ] {
            assert_eq!(
                class_of(&mut c, "10.0.0.3", "198.51.100.9", false, 5000, 5001, not).class,
                Class::Other,
                "{}",
                String::from_utf8_lossy(not)
            );
        }
    }

    #[test]
    fn dht_and_utp_share_a_socket() {
        // Regression: libtorrent sends both from one port; the DHT message
        // first made the whole flow DHT, and uTP was never seen.
        let mut c = Classifier::new();
        let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
        assert_eq!(
            class_of(&mut c, "10.0.0.2", "203.0.113.9", false, 7001, 6882, ping).class,
            Class::Dht
        );
        assert_eq!(
            class_of(
                &mut c,
                "10.0.0.2",
                "203.0.113.9",
                false,
                7001,
                6882,
                &utp(ST_SYN, 0, 5, &[])
            )
            .class,
            Class::Other
        );
        let v = class_of(
            &mut c,
            "203.0.113.9",
            "10.0.0.2",
            false,
            6882,
            7001,
            &utp(ST_STATE, 0, 5, &[]),
        );
        assert_eq!((v.class, v.also_packets), (Class::Utp, 1));
        assert_eq!(
            class_of(&mut c, "10.0.0.2", "203.0.113.9", false, 7001, 6882, ping).class,
            Class::Dht
        );
        assert_eq!(
            class_of(
                &mut c,
                "10.0.0.2",
                "203.0.113.9",
                false,
                7001,
                6882,
                &utp(0, 0, 6, b"data")
            )
            .class,
            Class::Utp
        );
    }

    #[test]
    fn tracker_requests() {
        let mut c = Classifier::new();
        let mut connect = UDP_TRACKER_MAGIC.to_vec();
        connect.extend_from_slice(&[0, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(
            class_of(
                &mut c,
                "10.0.0.2",
                "192.0.2.50",
                false,
                7000,
                6969,
                &connect
            )
            .class,
            Class::Tracker
        );
        // The tracker's answer and the announce that follows: the flow.
        assert_eq!(
            class_of(
                &mut c,
                "192.0.2.50",
                "10.0.0.2",
                false,
                6969,
                7000,
                &[0; 16]
            )
            .class,
            Class::Tracker
        );
        let announce = b"GET /announce?info_hash=%12%34&peer_id=-lt2080-&port=6881 HTTP/1.1\r\nHost: t\r\n\r\n";
        assert_eq!(
            class_of(&mut c, "10.0.0.2", "192.0.2.51", true, 41000, 80, announce).class,
            Class::Tracker
        );
        assert_eq!(
            class_of(
                &mut c,
                "10.0.0.2",
                "192.0.2.51",
                true,
                41001,
                80,
                b"GET /index.html?q=info HTTP/1.1\r\n"
            )
            .class,
            Class::Other
        );
    }

    #[test]
    fn utp_is_confirmed_by_its_flow() {
        let mut c = Classifier::new();
        let syn = utp(ST_SYN, 0, 1000, &[]);
        let v = class_of(&mut c, "10.0.0.2", "203.0.113.9", false, 6881, 6881, &syn);
        assert_eq!(v.class, Class::Other, "a header alone is a candidate");
        // The answer: ST_STATE with the SYN's id confirms, and the SYN is
        // counted then.
        let v = class_of(
            &mut c,
            "203.0.113.9",
            "10.0.0.2",
            false,
            6881,
            6881,
            &utp(ST_STATE, 0, 1000, &[]),
        );
        assert_eq!((v.class, v.also_packets), (Class::Utp, 1));
        let data = utp(0, 0, 1001, b"payload");
        assert_eq!(
            class_of(&mut c, "10.0.0.2", "203.0.113.9", false, 6881, 6881, &data).class,
            Class::Utp
        );
        // With a selective-ack extension.
        let mut sack = utp(0, 1, 7, &[0, 4, 1, 2, 3, 4]);
        sack.truncate(26);
        assert!(utp_header(&sack).is_some());
        assert!(utp_header(&utp(0, 9, 7, &[0, 4, 1, 2, 3, 4])).is_none());
    }

    #[test]
    fn dns_and_quic_that_look_like_utp_are_not() {
        let mut c = Classifier::new();
        // A DNS query whose id is 0x41 0x00: an ST_SYN's first two bytes.
        let mut q = vec![0x41, 0x00, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        for _ in 0..3 {
            assert_eq!(
                class_of(&mut c, "10.0.0.2", "192.0.2.53", false, 40001, 53, &q).class,
                Class::Other
            );
        }
        // The same bytes on another port: a candidate, never confirmed by
        // an answer that is not uTP.
        let v = class_of(&mut c, "10.0.0.2", "192.0.2.54", false, 40002, 5300, &q);
        assert_eq!(v.class, Class::Other);
        let answer = [
            0x41, 0x00, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 7, b'e', b'x', 0, 0, 1, 0, 1,
        ];
        assert_eq!(
            class_of(
                &mut c,
                "192.0.2.54",
                "10.0.0.2",
                false,
                5300,
                40002,
                &answer
            )
            .class,
            Class::Other
        );
        assert_eq!(
            class_of(
                &mut c,
                "10.0.0.2",
                "192.0.2.54",
                false,
                40002,
                5300,
                &utp(0, 0, 0x4101, b"x")
            )
            .class,
            Class::Other,
            "the flow is known not to be uTP"
        );
        // QUIC: a long header (0xc0..) and short headers (0x40..0x7f).
        let mut initial = vec![0xc3, 0, 0, 0, 1, 8];
        initial.extend_from_slice(&[9; 60]);
        assert_eq!(
            class_of(
                &mut c,
                "10.0.0.2",
                "192.0.2.80",
                false,
                50000,
                443,
                &initial
            )
            .class,
            Class::Other
        );
        let short = [0x41; 40];
        assert_eq!(
            class_of(&mut c, "10.0.0.2", "192.0.2.80", false, 50000, 443, &short).class,
            Class::Other
        );
        assert_eq!(
            class_of(
                &mut c,
                "192.0.2.80",
                "10.0.0.2",
                false,
                443,
                50000,
                &[0x45; 40]
            )
            .class,
            Class::Other
        );
    }

    #[test]
    fn the_flow_table_stays_bounded() {
        let mut c = Classifier::new();
        let mut hs = HANDSHAKE.to_vec();
        hs.extend_from_slice(&[0; 8]);
        for k in 0..(MAX_FLOWS as u32 + 5000) {
            let port = (k % 60000) as u16 + 1024;
            let host = format!("10.{}.{}.2", (k / 60000) % 250, (k / 250) % 250);
            class_of(&mut c, &host, "203.0.113.9", true, port, 6881, &hs);
        }
        assert!(c.flows() <= MAX_FLOWS, "{}", c.flows());
    }

    proptest::proptest! {
        #[test]
        fn any_payload_classifies_without_panic(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..120), sport in 1u16..65535, tcp: bool) {
            let mut c = Classifier::new();
            class_of(&mut c, "10.0.0.2", "203.0.113.9", tcp, sport, 6881, &payload);
            class_of(&mut c, "203.0.113.9", "10.0.0.2", tcp, 6881, sport, &payload);
            let _ = is_krpc(&payload);
        }
    }
}
