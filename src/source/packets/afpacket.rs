//! Live capture from an interface: an `AF_PACKET` `SOCK_DGRAM` socket (the
//! kernel strips the link header, so every interface type reads alike)
//! with the capture filter of `bpf.rs` attached. Packets arrive in a
//! `TPACKET_V3` ring shared with the kernel (blocks of many packets, no
//! system call per packet; a block is handed over when full or after
//! 100 ms); where the ring cannot be set up, one `recvfrom` per packet
//! with a receive timeout does the same, slower. Both end on time on a
//! quiet interface.
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
    ring: Option<Ring>,
}

/// The `TPACKET_V3` ring: `BLOCKS` blocks of `BLOCK_SIZE` bytes, mapped.
struct Ring {
    base: *mut u8,
    len: usize,
    next: usize,
}

// The mapping belongs to the capture that owns it; it moves with it.
unsafe impl Send for Ring {}

const BLOCK_SIZE: usize = 1 << 20;
const BLOCKS: usize = 8;
/// Room for a snapped packet and its headers (a multiple of 16).
const FRAME_SIZE: usize = 2048;
const TPACKET_V3: libc::c_int = 2;
// Offsets in `struct tpacket_block_desc` (its header is 8-aligned) and
// `struct tpacket3_hdr`, as <linux/if_packet.h> lays them out.
const BLOCK_STATUS: usize = 8;
const BLOCK_NUM_PKTS: usize = 12;
const BLOCK_FIRST: usize = 16;
const PKT_NEXT: usize = 0;
const PKT_SEC: usize = 4;
const PKT_NSEC: usize = 8;
const PKT_SNAPLEN: usize = 12;
const PKT_NET: usize = 26;
/// `TPACKET_ALIGN(sizeof(struct tpacket3_hdr))`: where `sockaddr_ll` is.
const PKT_SLL: usize = 48;
/// `sll_pkttype` within `sockaddr_ll`.
const SLL_PKTTYPE: usize = 10;

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `Ring::map`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

impl Ring {
    /// Sets the socket up for a ring and maps it; `None` where the kernel
    /// refuses (the caller falls back to `recvfrom`).
    fn map(fd: libc::c_int) -> Option<Ring> {
        let version = TPACKET_V3;
        // SAFETY: an int option of the stated size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_VERSION,
                (&version as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return None;
        }
        let req = libc::tpacket_req3 {
            tp_block_size: BLOCK_SIZE as u32,
            tp_block_nr: BLOCKS as u32,
            tp_frame_size: FRAME_SIZE as u32,
            tp_frame_nr: (BLOCK_SIZE * BLOCKS / FRAME_SIZE) as u32,
            // A block is handed over after this many ms even when not full.
            tp_retire_blk_tov: 100,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        // SAFETY: a tpacket_req3 of the stated size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_RX_RING,
                (&req as *const libc::tpacket_req3).cast(),
                std::mem::size_of::<libc::tpacket_req3>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return None;
        }
        let len = BLOCK_SIZE * BLOCKS;
        // SAFETY: mapping the ring the kernel just made for this socket.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        Some(Ring {
            base: base.cast(),
            len,
            next: 0,
        })
    }

    fn read_u16(&self, at: usize) -> u16 {
        debug_assert!(at + 2 <= self.len);
        // SAFETY: as `read_u32`.
        unsafe { std::ptr::read_volatile(self.base.add(at).cast::<u16>()) }
    }

    /// A u32 the kernel may change under us.
    fn read_u32(&self, at: usize) -> u32 {
        debug_assert!(at + 4 <= self.len);
        // SAFETY: within the mapping (offsets come from the kernel's block
        // headers, checked against the block below); volatile because the
        // kernel writes it.
        unsafe { std::ptr::read_volatile(self.base.add(at).cast::<u32>()) }
    }
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
        // WEBFENCE_CAPTURE=recvfrom skips the ring: to compare the two, and
        // a way out should a kernel's ring misbehave.
        let ring = if std::env::var_os("WEBFENCE_CAPTURE").is_some_and(|v| v == "recvfrom") {
            None
        } else {
            Ring::map(fd.as_raw_fd())
        };
        let mut c = Capture {
            fd,
            iface: iface.to_string(),
            loopback: iface == "lo",
            ring,
        };
        // Counters start now.
        let _ = c.stats();
        Ok(c)
    }

    /// Whether packets come through the shared ring (or one system call
    /// each).
    pub fn uses_ring(&self) -> bool {
        self.ring.is_some()
    }

    /// Hands out packets until `until` (or `stop` says so); returns how
    /// many were handed out.
    pub fn run(
        &mut self,
        until: Instant,
        stop: &dyn Fn() -> bool,
        on: &mut dyn FnMut(&Frame<'_>),
    ) -> Result<u64, CaptureError> {
        if self.ring.is_some() {
            self.run_ring(until, stop, on)
        } else {
            self.run_recv(until, stop, on)
        }
    }

    fn run_ring(
        &mut self,
        until: Instant,
        stop: &dyn Fn() -> bool,
        on: &mut dyn FnMut(&Frame<'_>),
    ) -> Result<u64, CaptureError> {
        let fd = self.fd.as_raw_fd();
        let loopback = self.loopback;
        let Some(ring) = self.ring.as_mut() else {
            return Ok(0);
        };
        let mut n = 0u64;
        while Instant::now() < until && !stop() {
            let block = ring.next * BLOCK_SIZE;
            if ring.read_u32(block + BLOCK_STATUS) & libc::TP_STATUS_USER == 0 {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN | libc::POLLERR,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 100) };
                continue;
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            let count = ring.read_u32(block + BLOCK_NUM_PKTS);
            let mut at = ring.read_u32(block + BLOCK_FIRST) as usize;
            for _ in 0..count {
                // A packet's header and data must lie inside its block;
                // anything else (never seen) ends the block.
                if at < 32 || at + PKT_SLL + 16 > BLOCK_SIZE {
                    break;
                }
                let p = block + at;
                let net = usize::from(ring.read_u16(p + PKT_NET));
                let snap = ring.read_u32(p + PKT_SNAPLEN) as usize;
                let next = ring.read_u32(p + PKT_NEXT) as usize;
                // SAFETY: reading one byte inside the block.
                let pkttype =
                    unsafe { std::ptr::read_volatile(ring.base.add(p + PKT_SLL + SLL_PKTTYPE)) };
                if at + net + snap <= BLOCK_SIZE && !(loopback && pkttype == libc::PACKET_OUTGOING)
                {
                    let time_ms = i64::from(ring.read_u32(p + PKT_SEC)) * 1000
                        + i64::from(ring.read_u32(p + PKT_NSEC)) / 1_000_000;
                    // SAFETY: inside the block, checked above; the kernel
                    // does not touch a block while it is the user's.
                    let data = unsafe { std::slice::from_raw_parts(ring.base.add(p + net), snap) };
                    n += 1;
                    on(&Frame {
                        time_ms,
                        link: Link::RawIp,
                        data,
                    });
                }
                if next == 0 {
                    break;
                }
                at += next;
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            // SAFETY: handing the block back: a u32 inside the mapping.
            unsafe {
                std::ptr::write_volatile(
                    ring.base.add(block + BLOCK_STATUS).cast::<u32>(),
                    libc::TP_STATUS_KERNEL,
                );
            }
            ring.next = (ring.next + 1) % BLOCKS;
        }
        Ok(n)
    }

    fn run_recv(
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
