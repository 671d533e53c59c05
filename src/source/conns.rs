//! The kernel's TCP connection table: every socket with its addresses and
//! state, read through netlink sock_diag (one dump per address family,
//! fast with hundreds of thousands of sockets), or from /proc/net/tcp and
//! tcp6 when netlink is not available (old kernels, some containers).
//!
//! sock_diag is hand-written (like `enforce/netlink.rs`): a dump is one
//! fixed 56-byte request and replies of a fixed 72-byte struct, read in
//! place from one receive buffer; the netlink crates allocate a message
//! tree per socket, which at 100k sockets is most of the cost.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// TCP states as the kernel numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
}

impl TcpState {
    pub const ALL: [TcpState; 11] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
    ];

    pub fn from_kernel(n: u8) -> Option<TcpState> {
        Some(match n {
            1 => TcpState::Established,
            2 => TcpState::SynSent,
            // 12 is TCP_NEW_SYN_RECV, a request socket: half-open all the same.
            3 | 12 => TcpState::SynRecv,
            4 => TcpState::FinWait1,
            5 => TcpState::FinWait2,
            6 => TcpState::TimeWait,
            7 => TcpState::Close,
            8 => TcpState::CloseWait,
            9 => TcpState::LastAck,
            10 => TcpState::Listen,
            11 => TcpState::Closing,
            _ => return None,
        })
    }

    fn kernel(self) -> u8 {
        match self {
            TcpState::Established => 1,
            TcpState::SynSent => 2,
            TcpState::SynRecv => 3,
            TcpState::FinWait1 => 4,
            TcpState::FinWait2 => 5,
            TcpState::TimeWait => 6,
            TcpState::Close => 7,
            TcpState::CloseWait => 8,
            TcpState::LastAck => 9,
            TcpState::Listen => 10,
            TcpState::Closing => 11,
        }
    }

    /// The name `ss` uses.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "established",
            TcpState::SynSent => "syn-sent",
            TcpState::SynRecv => "syn-recv",
            TcpState::FinWait1 => "fin-wait-1",
            TcpState::FinWait2 => "fin-wait-2",
            TcpState::TimeWait => "time-wait",
            TcpState::Close => "close",
            TcpState::CloseWait => "close-wait",
            TcpState::LastAck => "last-ack",
            TcpState::Listen => "listen",
            TcpState::Closing => "closing",
        }
    }

    pub fn from_name(name: &str) -> Option<TcpState> {
        let n = name.to_ascii_lowercase().replace('_', "-");
        TcpState::ALL.into_iter().find(|s| s.name() == n)
    }
}

/// A set of states, as the kernel's bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct States(pub u32);

impl States {
    pub fn of(states: &[TcpState]) -> States {
        let mut m = 0u32;
        for s in states {
            m |= 1 << s.kernel();
            if *s == TcpState::SynRecv {
                m |= 1 << 12;
            }
        }
        States(m)
    }

    pub fn contains(self, s: TcpState) -> bool {
        self.0 & (1 << s.kernel()) != 0
    }

    /// Every state but TIME_WAIT (closed on our side, holds no resources
    /// a client could use against us) and LISTEN.
    pub fn live() -> States {
        States::of(
            &TcpState::ALL
                .into_iter()
                .filter(|s| !matches!(s, TcpState::TimeWait | TcpState::Listen))
                .collect::<Vec<_>>(),
        )
    }
}

/// One socket. IPv4-mapped IPv6 addresses are given as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    pub state: TcpState,
}

/// How the table was read, for the report's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Netlink,
    Proc,
}

/// Reads the table; a fake in tests of what uses it.
pub trait ConnSource: Send {
    /// Calls `each` for every TCP socket in `states`; returns how it read.
    fn dump(&mut self, states: States, each: &mut dyn FnMut(&Conn)) -> io::Result<Via>;
}

/// The kernel: netlink first, /proc when netlink fails.
#[derive(Default)]
pub struct KernelConns {
    /// Skip netlink (`webfence conns --proc`, and to compare the two).
    pub proc_only: bool,
}

impl ConnSource for KernelConns {
    fn dump(&mut self, states: States, each: &mut dyn FnMut(&Conn)) -> io::Result<Via> {
        if !self.proc_only {
            match netlink_dump(states, each) {
                Ok(()) => return Ok(Via::Netlink),
                Err(e) => {
                    tracing::debug!("sock_diag unavailable ({e}); reading /proc/net/tcp");
                }
            }
        }
        proc_dump(Path::new("/proc/net"), states, each)?;
        Ok(Via::Proc)
    }
}

fn plain(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const DIAG_MSG_LEN: usize = 72;

fn netlink_dump(states: States, each: &mut dyn FnMut(&Conn)) -> io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut buf = vec![0u8; 256 << 10];
    for (seq, family) in [(1u32, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        let mut req = [0u8; 16 + 56];
        req[0..4].copy_from_slice(&(72u32).to_ne_bytes());
        req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&seq.to_ne_bytes());
        req[16] = family;
        req[17] = libc::IPPROTO_TCP as u8;
        req[20..24].copy_from_slice(&states.0.to_ne_bytes());
        // SAFETY: req is a valid buffer of its length.
        let sent = unsafe {
            libc::send(
                sock.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        'recv: loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut rest = &buf[..n as usize];
            if rest.is_empty() {
                break;
            }
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                if len < 16 || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a truncated sock_diag reply",
                    ));
                }
                let body = &rest[16..len];
                match kind {
                    NLMSG_DONE => break 'recv,
                    NLMSG_ERROR => {
                        let code = body
                            .get(0..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(-libc::EIO);
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                    }
                    SOCK_DIAG_BY_FAMILY => {
                        if let Some(c) = parse_diag_msg(body) {
                            each(&c);
                        }
                    }
                    _ => {}
                }
                let step = (len + 3) & !3;
                rest = rest.get(step..).unwrap_or(&[]);
            }
        }
    }
    Ok(())
}

/// One `inet_diag_msg`: family, state, then the socket id (ports and
/// addresses in network order).
pub fn parse_diag_msg(b: &[u8]) -> Option<Conn> {
    if b.len() < DIAG_MSG_LEN {
        return None;
    }
    let state = TcpState::from_kernel(b[1])?;
    let sport = u16::from_be_bytes([b[4], b[5]]);
    let dport = u16::from_be_bytes([b[6], b[7]]);
    let addr = |at: usize| -> Option<IpAddr> {
        match b[0] as libc::c_int {
            libc::AF_INET => {
                let o: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
                Some(IpAddr::V4(Ipv4Addr::from(o)))
            }
            libc::AF_INET6 => {
                let o: [u8; 16] = b.get(at..at + 16)?.try_into().ok()?;
                Some(plain(IpAddr::V6(Ipv6Addr::from(o))))
            }
            _ => None,
        }
    };
    Some(Conn {
        local: addr(8)?,
        local_port: sport,
        remote: addr(24)?,
        remote_port: dport,
        state,
    })
}

/// /proc/net/tcp and tcp6 under `dir`.
pub fn proc_dump(dir: &Path, states: States, each: &mut dyn FnMut(&Conn)) -> io::Result<()> {
    let mut any = false;
    let mut last_err = None;
    for file in ["tcp", "tcp6"] {
        match std::fs::read_to_string(dir.join(file)) {
            Ok(text) => {
                any = true;
                for line in text.lines().skip(1) {
                    if let Some(c) = parse_proc_line(line) {
                        if states.contains(c.state) {
                            each(&c);
                        }
                    }
                }
            }
            Err(e) => last_err = Some(e),
        }
    }
    match (any, last_err) {
        (false, Some(e)) => Err(e),
        _ => Ok(()),
    }
}

/// `  0: 0100007F:0050 0100007F:A2C4 01 ...`: addresses are the kernel's
/// network-order words printed as native-endian hex.
pub fn parse_proc_line(line: &str) -> Option<Conn> {
    let mut f = line.split_ascii_whitespace();
    let _slot = f.next()?;
    let (local, local_port) = proc_addr(f.next()?)?;
    let (remote, remote_port) = proc_addr(f.next()?)?;
    let state = TcpState::from_kernel(u8::from_str_radix(f.next()?, 16).ok()?)?;
    Some(Conn {
        local,
        local_port,
        remote,
        remote_port,
        state,
    })
}

fn proc_addr(field: &str) -> Option<(IpAddr, u16)> {
    let (hex, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    let addr = match hex.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut o = [0u8; 16];
            for i in 0..4 {
                o[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            plain(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => return None,
    };
    Some((addr, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_lines_parse_on_this_machine_s_endianness() {
        let v4 = format!(
            "   0: {:08X}:0050 {:08X}:A2C4 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 10 0 0 10 -1",
            u32::from_ne_bytes([127, 0, 0, 1]),
            u32::from_ne_bytes([203, 0, 113, 7])
        );
        let c = parse_proc_line(&v4).unwrap();
        assert_eq!(c.local, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(c.local_port, 80);
        assert_eq!(c.remote, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(c.remote_port, 0xA2C4);
        assert_eq!(c.state, TcpState::Established);
        // ::ffff:198.51.100.2 is shown as IPv4.
        let mapped: [u8; 16] = "::ffff:198.51.100.2".parse::<Ipv6Addr>().unwrap().octets();
        let hex: String = mapped
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect();
        let v6 = format!("   1: {hex}:01BB {hex}:1234 03 0 0 0");
        let c = parse_proc_line(&v6).unwrap();
        assert_eq!(c.local, "198.51.100.2".parse::<IpAddr>().unwrap());
        assert_eq!(c.state, TcpState::SynRecv);
        assert!(parse_proc_line("sl local rem st").is_none());
        assert!(parse_proc_line("0: ZZ:0050 00:00 01").is_none());
    }

    #[test]
    fn diag_messages_parse_and_short_ones_are_refused() {
        let mut m = [0u8; DIAG_MSG_LEN];
        m[0] = libc::AF_INET as u8;
        m[1] = 12;
        m[4..6].copy_from_slice(&443u16.to_be_bytes());
        m[6..8].copy_from_slice(&5555u16.to_be_bytes());
        m[8..12].copy_from_slice(&[10, 0, 0, 1]);
        m[24..28].copy_from_slice(&[10, 0, 0, 9]);
        let c = parse_diag_msg(&m).unwrap();
        assert_eq!(c.state, TcpState::SynRecv);
        assert_eq!((c.local_port, c.remote_port), (443, 5555));
        assert_eq!(c.remote, "10.0.0.9".parse::<IpAddr>().unwrap());
        assert!(parse_diag_msg(&m[..40]).is_none());
        m[0] = 99;
        assert!(parse_diag_msg(&m).is_none());
    }

    #[test]
    fn netlink_and_proc_see_the_same_listening_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let states = States::of(&[TcpState::Listen]);
        let mut found = Vec::new();
        for proc_only in [false, true] {
            let mut seen = false;
            KernelConns { proc_only }
                .dump(states, &mut |c| seen |= c.local_port == port)
                .unwrap();
            found.push(seen);
        }
        assert_eq!(found, vec![true, true]);
    }

    #[test]
    fn state_names_round_trip() {
        for s in TcpState::ALL {
            assert_eq!(TcpState::from_name(s.name()), Some(s));
        }
        assert_eq!(TcpState::from_name("SYN_RECV"), Some(TcpState::SynRecv));
        assert!(!States::live().contains(TcpState::TimeWait));
        assert!(States::live().contains(TcpState::SynRecv));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100), s in "\\PC{0,80}") {
            let _ = parse_diag_msg(&b);
            let _ = parse_proc_line(&s);
        }
    }
}
