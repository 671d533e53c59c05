//! The capture filter: a classic BPF program the kernel runs on each packet
//! before copying it, so what cannot matter (web and SSH traffic, non-IP
//! frames) costs no copy, and what is kept is copied only up to
//! [`SNAPLEN`] bytes (enough for every header the classifier reads).
//!
//! Hand-assembled because libpcap's compiler is a C library this binary
//! does not link; the program is small and fixed, and [`run`] executes it
//! in tests so it is checked without privileges.
//!
//! It reads packets from the network header on (an `AF_PACKET`
//! `SOCK_DGRAM` socket), the ethertype from the kernel's ancillary
//! `SKF_AD_PROTOCOL` field.

/// Bytes of a packet the kernel copies: IPv6 with extension headers, TCP
/// with options, and the first 200 bytes of payload.
pub const SNAPLEN: u32 = 384;

/// One instruction, laid out as `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const H: u16 = 0x08;
const B: u16 = 0x10;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MSH: u16 = 0xa0;
const IMM: u16 = 0x00;
const JEQ: u16 = 0x10;
const JSET: u16 = 0x40;
/// `SKF_AD_OFF + SKF_AD_PROTOCOL`: the ethertype, in host order.
const AD_PROTOCOL: u32 = 0xffff_f000;

/// Most ports skipped per protocol: every jump of the program then fits
/// its 8-bit offset.
pub const MAX_SKIPPED: usize = 48;

/// Ports whose TCP and UDP traffic is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub tcp: Vec<u16>,
    pub udp: Vec<u16>,
}

impl Default for Skip {
    /// Web (80, 443, and QUIC on UDP 443) and SSH, as the write-up skips.
    fn default() -> Skip {
        Skip {
            tcp: vec![22, 80, 443],
            udp: vec![443],
        }
    }
}

impl Skip {
    /// Whether the filter drops this packet (for captures read from a
    /// file, which no kernel filtered).
    pub fn skips(&self, p: &crate::net::Packet<'_>) -> bool {
        let ports = match p.proto {
            crate::net::Proto::Tcp => &self.tcp,
            crate::net::Proto::Udp => &self.udp,
            crate::net::Proto::Other => return false,
        };
        ports.contains(&p.sport) || ports.contains(&p.dport)
    }
}

enum Op {
    Stmt(u16, u32),
    /// A conditional jump to labels (true, false); "" is the next one.
    Jump(u16, u32, &'static str, &'static str),
    Label(&'static str),
}

/// The program: IPv4 and IPv6 kept (snapped), everything else dropped,
/// skipped ports dropped in either direction (a later fragment, whose
/// ports are not there, is kept).
pub fn program(skip: &Skip) -> Vec<Insn> {
    let mut ops = vec![
        Op::Stmt(LD | H | ABS, AD_PROTOCOL),
        Op::Jump(JEQ, 0x0800, "v4", ""),
        Op::Jump(JEQ, 0x86dd, "v6", "drop"),
        Op::Label("v4"),
        Op::Stmt(LD | H | ABS, 6),
        Op::Jump(JSET, 0x1fff, "accept", ""),
        Op::Stmt(LDX | B | MSH, 0),
        Op::Stmt(LD | B | ABS, 9),
        Op::Jump(JEQ, 6, "tcp", ""),
        Op::Jump(JEQ, 17, "udp", "accept"),
        Op::Label("v6"),
        Op::Stmt(LDX | IMM, 40),
        Op::Stmt(LD | B | ABS, 6),
        Op::Jump(JEQ, 6, "tcp", ""),
        Op::Jump(JEQ, 17, "udp", "accept"),
    ];
    for (label, ports) in [("tcp", &skip.tcp), ("udp", &skip.udp)] {
        ops.push(Op::Label(label));
        for offset in [0, 2] {
            ops.push(Op::Stmt(LD | H | IND, offset));
            for p in ports {
                ops.push(Op::Jump(JEQ, u32::from(*p), "drop", ""));
            }
        }
        ops.push(Op::Stmt(RET, SNAPLEN));
    }
    ops.push(Op::Label("accept"));
    ops.push(Op::Stmt(RET, SNAPLEN));
    ops.push(Op::Label("drop"));
    ops.push(Op::Stmt(RET, 0));
    assemble(&ops)
}

fn assemble(ops: &[Op]) -> Vec<Insn> {
    // Where each label lands, counting instructions only.
    let mut at = std::collections::HashMap::new();
    let mut n = 0usize;
    for op in ops {
        match op {
            Op::Label(l) => {
                at.insert(*l, n);
            }
            _ => n += 1,
        }
    }
    let mut out = Vec::with_capacity(n);
    for op in ops {
        let pc = out.len();
        let off = |l: &str| -> u8 {
            if l.is_empty() {
                0
            } else {
                // Labels are ahead and near: the program is fixed and small
                // (tested below).
                u8::try_from(at[l] - pc - 1).unwrap_or(u8::MAX)
            }
        };
        match op {
            Op::Stmt(code, k) => out.push(Insn {
                code: *code,
                jt: 0,
                jf: 0,
                k: *k,
            }),
            Op::Jump(cond, k, t, f) => out.push(Insn {
                code: JMP | cond,
                jt: off(t),
                jf: off(f),
                k: *k,
            }),
            Op::Label(_) => {}
        }
    }
    out
}

/// Runs a program over a packet (network header first) with `ethertype`,
/// as the kernel would: the bytes to keep, 0 to drop. Only what
/// [`program`] uses is implemented; a load past the end drops, as in the
/// kernel.
pub fn run(prog: &[Insn], ethertype: u16, packet: &[u8]) -> u32 {
    let (mut a, mut x) = (0u32, 0u32);
    let mut pc = 0usize;
    let byte = |i: usize| packet.get(i).copied();
    let half = |i: usize| Some(u16::from_be_bytes([byte(i)?, byte(i + 1)?]));
    while let Some(i) = prog.get(pc) {
        pc += 1;
        match i.code {
            c if c == LD | H | ABS && i.k == AD_PROTOCOL => a = u32::from(ethertype),
            c if c == LD | H | ABS => match half(i.k as usize) {
                Some(v) => a = u32::from(v),
                None => return 0,
            },
            c if c == LD | B | ABS => match byte(i.k as usize) {
                Some(v) => a = u32::from(v),
                None => return 0,
            },
            c if c == LD | H | IND => match half(x as usize + i.k as usize) {
                Some(v) => a = u32::from(v),
                None => return 0,
            },
            c if c == LDX | B | MSH => match byte(i.k as usize) {
                Some(v) => x = u32::from(v & 0x0f) * 4,
                None => return 0,
            },
            c if c == LDX | IMM => x = i.k,
            c if c == JMP | JEQ || c == JMP | JSET => {
                let taken = if c == JMP | JEQ {
                    a == i.k
                } else {
                    a & i.k != 0
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            RET => return i.k,
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::build;

    fn verdict(src: &str, dst: &str, tcp: bool, sport: u16, dport: u16) -> u32 {
        let p = build::ip(
            src.parse().unwrap(),
            dst.parse().unwrap(),
            tcp,
            sport,
            dport,
            b"x",
        );
        let ethertype = if p[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
        run(&program(&Skip::default()), ethertype, &p)
    }

    #[test]
    fn web_and_ssh_are_dropped_the_rest_is_snapped() {
        for (tcp, sport, dport) in [
            (true, 40000, 80),
            (true, 443, 40000),
            (true, 22, 5000),
            (false, 50000, 443),
        ] {
            assert_eq!(
                verdict("10.0.0.2", "192.0.2.1", tcp, sport, dport),
                0,
                "{tcp} {sport} {dport}"
            );
            assert_eq!(
                verdict("fd00::2", "2001:db8::1", tcp, sport, dport),
                0,
                "v6 {tcp} {sport} {dport}"
            );
        }
        for (tcp, sport, dport) in [
            (true, 40000, 6881),
            (false, 6881, 6881),
            (false, 40000, 53),
            (true, 40000, 8080),
        ] {
            assert_eq!(verdict("10.0.0.2", "192.0.2.1", tcp, sport, dport), SNAPLEN);
            assert_eq!(
                verdict("fd00::2", "2001:db8::1", tcp, sport, dport),
                SNAPLEN
            );
        }
        // ARP and friends are dropped; ICMP kept (the totals count it).
        assert_eq!(run(&program(&Skip::default()), 0x0806, &[0; 28]), 0);
        let mut icmp = build::ip(
            "10.0.0.2".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
            false,
            0,
            0,
            b"",
        );
        icmp[9] = 1;
        assert_eq!(run(&program(&Skip::default()), 0x0800, &icmp), SNAPLEN);
    }

    #[test]
    fn ports_follow_ip_options_and_fragments_are_kept() {
        let mut p = build::ip(
            "10.0.0.2".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
            true,
            40000,
            80,
            b"x",
        );
        // Four bytes of IP options: the ports move.
        p[0] = 0x46;
        p.splice(20..20, [1, 1, 1, 1]);
        assert_eq!(run(&program(&Skip::default()), 0x0800, &p), 0);
        // A later fragment has no ports to look at: kept.
        p[6] = 0x00;
        p[7] = 0x10;
        assert_eq!(run(&program(&Skip::default()), 0x0800, &p), SNAPLEN);
        // Nothing skipped: port 80 kept.
        let none = Skip {
            tcp: vec![],
            udp: vec![],
        };
        let q = build::ip(
            "10.0.0.2".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
            true,
            40000,
            80,
            b"x",
        );
        assert_eq!(run(&program(&none), 0x0800, &q), SNAPLEN);
    }

    #[test]
    fn skips_agrees_with_the_program() {
        let skip = Skip::default();
        for (tcp, sport, dport) in [
            (true, 40000, 80),
            (true, 22, 5000),
            (false, 50000, 443),
            (true, 40000, 6881),
            (false, 53, 40000),
        ] {
            let p = build::ip(
                "10.0.0.2".parse().unwrap(),
                "192.0.2.1".parse().unwrap(),
                tcp,
                sport,
                dport,
                b"x",
            );
            let packet = crate::net::decode(crate::net::Link::RawIp, &p).unwrap();
            assert_eq!(
                skip.skips(&packet),
                run(&program(&skip), 0x0800, &p) == 0,
                "{tcp} {sport} {dport}"
            );
        }
    }

    #[test]
    fn jumps_fit_with_many_ports() {
        let many = Skip {
            tcp: (1..=40).collect(),
            udp: (1..=40).collect(),
        };
        let prog = program(&many);
        assert!(prog.iter().all(|i| i.jt < u8::MAX && i.jf < u8::MAX));
        let p = |dport| {
            build::ip(
                "10.0.0.2".parse().unwrap(),
                "192.0.2.1".parse().unwrap(),
                true,
                40000,
                dport,
                b"x",
            )
        };
        assert_eq!(run(&prog, 0x0800, &p(6881)), SNAPLEN);
        assert_eq!(run(&prog, 0x0800, &p(40)), 0);
    }
}
