//! Live capture from an interface: an `AF_PACKET` `SOCK_DGRAM` socket (the
//! kernel strips the link header, so every interface type reads alike)
//! with the capture filter of `bpf.rs` attached, read with a receive
//! timeout so a capture ends on time on a quiet interface.
//!
//! Hand-written over `libc` rather than libpcap bindings: libpcap is a C
//! library to link and install, the socket is a dozen calls, and the
//! kernel's own filter and snap length keep the copy bounded.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::bpf::{self, Insn, Skip};
use super::{CaptureError, Frame};
use crate::net::Link;

/// Kernel counters for the socket (`PACKET_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Packets the filter kept.
    pub received: u64,
    /// Packets dropped because this reader was too slow.
    pub dropped: u64,
}

pub struct Capture {
    fd: OwnedFd,
    iface: String,
    /// Direction of loopback packets seen twice (sent and received).
    loopback: bool,
}

/// The interface of the default route, from `/proc/net/route` and
/// `/proc/net/ipv6_route`; `None` when there is none.
pub fn default_interface() -> Option<String> {
    let v4 = std::fs::read_to_string("/proc/net/route").ok()?;
    v4.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"00000000") && f.get(7) == Some(&"00000000"))
                .then(|| f[0].to_string())
        })
        .next()
}

impl Capture {
    /// Opens a capture on `iface` ("any" for every interface).
    pub fn open(iface: &str, skip: &Skip) -> Result<Capture, CaptureError> {
        let sock_err = |source| CaptureError::Socket {
            iface: iface.to_string(),
            source,
        };
        let index = if iface == "any" {
            0
        } else {
            let name = std::ffi::CString::new(iface)
                .map_err(|_| CaptureError::NoInterface(iface.to_string()))?;
            // SAFETY: a valid NUL-terminated string.
            let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if i == 0 {
                return Err(CaptureError::NoInterface(iface.to_string()));
            }
            i as i32
        };
        let all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket creation; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from(all),
            )
        };
        if raw < 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EPERM) {
                CaptureError::Permission
            } else {
                sock_err(e)
            });
        }
        // SAFETY: `raw` is a socket this function owns from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // The filter before the bind, so no unfiltered packet is queued.
        let prog: Vec<Insn> = bpf::program(skip);
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `Insn` has `sock_filter`'s layout (repr(C), same fields);
        // the kernel copies the program during the call.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&fprog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(sock_err(std::io::Error::last_os_error()));
        }
        // SAFETY: zeroed sockaddr_ll is valid; the fields set are plain.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = all;
        addr.sll_ifindex = index;
        // SAFETY: a valid address of the stated size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(sock_err(std::io::Error::last_os_error()));
        }
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: a valid timeval of the stated size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        let mut c = Capture {
            fd,
            iface: iface.to_string(),
            loopback: iface == "lo",
        };
        // Counters start now.
        let _ = c.stats();
        Ok(c)
    }

    /// Hands out packets until `until` (or `stop` says so); returns how
    /// many were handed out.
    pub fn run(
        &mut self,
        until: Instant,
        stop: &dyn Fn() -> bool,
        on: &mut dyn FnMut(&Frame<'_>),
    ) -> Result<u64, CaptureError> {
        let mut buf = vec![0u8; bpf::SNAPLEN as usize];
        let mut n = 0u64;
        while Instant::now() < until && !stop() {
            // SAFETY: zeroed sockaddr_ll is valid for the kernel to fill.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: the buffer and address are valid for their lengths.
            let got = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if got < 0 {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted => continue,
                    _ => {
                        return Err(CaptureError::Socket {
                            iface: self.iface.clone(),
                            source: e,
                        });
                    }
                }
            }
            // On loopback each packet passes twice, sent and received:
            // the sent copy is skipped.
            if self.loopback && from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            n += 1;
            let time_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            on(&Frame {
                time_ms,
                link: Link::RawIp,
                data: &buf[..got as usize],
            });
        }
        Ok(n)
    }

    /// Kernel counters since the last call.
    pub fn stats(&mut self) -> KernelStats {
        let mut s = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: a valid tpacket_stats of the stated size.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut s as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return KernelStats::default();
        }
        KernelStats {
            received: u64::from(s.tp_packets),
            dropped: u64::from(s.tp_drops),
        }
    }

    /// A capture of `duration` on `iface`, the whole of it.
    pub fn sample(
        &mut self,
        duration: Duration,
        on: &mut dyn FnMut(&Frame<'_>),
    ) -> Result<u64, CaptureError> {
        self.run(Instant::now() + duration, &|| false, on)
    }
}
