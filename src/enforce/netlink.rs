//! Set elements straight to the kernel over netlink (nfnetlink), for the
//! one hot operation: putting a tick's host bans into `ban4`/`ban6`.
//!
//! Hand-written rather than a crate: the Rust nftables crates either drive
//! the `nft` binary (which is what this replaces) or bind libnftnl/libmnl,
//! which are GPL. `nft` spends about 4 µs of CPU parsing and evaluating
//! each element of a text batch (0.4 s for 100k bans); the kernel needs a
//! fraction of that. Everything else (the table, sets and rules, network
//! elements, whose intervals `nft` checks and merges, listing) still goes
//! through `nft`.
//!
//! A batch is what `nft -f` sends: BATCH_BEGIN, NEWSETELEM/DELSETELEM
//! messages, BATCH_END, in one `send`, applied by the kernel as one
//! transaction. The last element message asks for an acknowledgement, so
//! the call returns when the kernel has committed the batch or refused it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_DATA_VALUE: u16 = 1;
const NLA_F_NESTED: u16 = 1 << 15;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_CREATE: u16 = 0x400;
/// In an error reply: extended-ack attributes follow.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const HEADER: usize = 16;

/// The element list is one attribute with a 16-bit length: messages are
/// cut well below it.
const MAX_LIST_BYTES: usize = 60_000;

/// One set element: an IPv4 or IPv6 address, with a timeout for adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    key: [u8; 16],
    len: u8,
    pub timeout_ms: Option<u64>,
}

impl Element {
    pub fn new(addr: std::net::IpAddr, timeout_ms: Option<u64>) -> Element {
        let mut key = [0; 16];
        let len = match addr {
            std::net::IpAddr::V4(a) => {
                key[..4].copy_from_slice(&a.octets());
                4
            }
            std::net::IpAddr::V6(a) => {
                key.copy_from_slice(&a.octets());
                16
            }
        };
        Element {
            key,
            len,
            timeout_ms,
        }
    }

    fn encoded_len(&self) -> usize {
        // LIST_ELEM { KEY { DATA_VALUE key } [TIMEOUT u64] }
        4 + 4 + 4 + align(self.len as usize) + if self.timeout_ms.is_some() { 12 } else { 0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Delete,
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// A batch of set element changes being encoded.
pub struct Batch {
    buf: Vec<u8>,
    seq: u32,
    /// Sequence numbers of the batch's messages, BEGIN included.
    seqs: std::ops::Range<u32>,
    /// Where the last element message starts: only it asks for an
    /// acknowledgement (the kernel sends it after the commit, or an error
    /// for each message it refused and none is applied). One ack per
    /// message overflowed the receive buffer on batches of a million.
    last_msg: Option<usize>,
}

impl Batch {
    pub fn new(first_seq: u32) -> Batch {
        let mut b = Batch {
            buf: Vec::new(),
            seq: first_seq,
            seqs: first_seq..first_seq,
            last_msg: None,
        };
        let m = b.begin_msg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        b.end_msg(m);
        b
    }

    fn begin_msg(&mut self, kind: u16, flags: u16, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by end_msg
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        // struct nfgenmsg: family, version 0, resource id (big endian).
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        start
    }

    fn end_msg(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn begin_attr(&mut self, kind: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        start
    }

    fn end_attr(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        let padded = start + align(self.buf.len() - start);
        self.buf.resize(padded, 0);
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        let a = self.begin_attr(kind);
        self.buf.extend_from_slice(data);
        self.end_attr(a);
    }

    fn name_attr(&mut self, kind: u16, name: &str) {
        let a = self.begin_attr(kind);
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.end_attr(a);
    }

    /// Adds (without replacing an element that is there) or deletes
    /// `elements` of `table`'s (inet family) `set`, in as many messages as
    /// the attribute size needs.
    pub fn elements(&mut self, op: Op, table: &str, set: &str, elements: &[Element]) {
        let (kind, flags) = match op {
            Op::Add => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE),
            Op::Delete => (NFT_MSG_DELSETELEM, NLM_F_REQUEST),
        };
        let mut rest = elements;
        while !rest.is_empty() {
            let mut bytes = 0;
            let n = rest
                .iter()
                .take_while(|e| {
                    bytes += e.encoded_len();
                    bytes <= MAX_LIST_BYTES
                })
                .count()
                .max(1);
            let (now, later) = rest.split_at(n);
            rest = later;
            let m = self.begin_msg((NFNL_SUBSYS_NFTABLES << 8) | kind, flags, NFPROTO_INET, 0);
            self.name_attr(NFTA_SET_ELEM_LIST_TABLE, table);
            self.name_attr(NFTA_SET_ELEM_LIST_SET, set);
            let list = self.begin_attr(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
            for e in now {
                let item = self.begin_attr(NFTA_LIST_ELEM | NLA_F_NESTED);
                let key = self.begin_attr(NFTA_SET_ELEM_KEY | NLA_F_NESTED);
                self.attr(NFTA_DATA_VALUE, &e.key[..e.len as usize]);
                self.end_attr(key);
                if let Some(ms) = e.timeout_ms {
                    self.attr(NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
                }
                self.end_attr(item);
            }
            self.end_attr(list);
            self.end_msg(m);
            self.last_msg = Some(m);
        }
    }

    /// Whether no element change was added.
    pub fn is_empty(&self) -> bool {
        self.last_msg.is_none()
    }

    /// The bytes to send, the sequence numbers of the batch's messages
    /// (replies outside them are stale), and the one whose ack means done.
    pub fn finish(mut self) -> (Vec<u8>, std::ops::Range<u32>, Option<u32>) {
        let acked = self.last_msg.map(|at| {
            let flags = u16_at(&self.buf, at + 6).unwrap_or(0) | NLM_F_ACK;
            self.buf[at + 6..at + 8].copy_from_slice(&flags.to_ne_bytes());
            u32_at(&self.buf, at + 8).unwrap_or(0)
        });
        let m = self.begin_msg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        self.end_msg(m);
        self.seqs.end = self.seq;
        (self.buf, self.seqs, acked)
    }
}

/// A netfilter netlink socket.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn set_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a valid fd and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(rc).map(|_| ())
}

impl Socket {
    /// A socket in this process's network namespace.
    pub fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd = check(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        })?;
        // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: a valid fd and a sockaddr_nl of the size given.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })?;
        // Acks carry only the header of the message, not all of it (a
        // refused 60 kB message would otherwise come back whole), and
        // errors carry the kernel's explanation.
        set_int(&fd, libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1)?;
        // Room for an error reply per message of a huge refused batch.
        if set_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 4 << 20).is_err() {
            let _ = set_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20);
        }
        let _ = set_int(&fd, libc::SOL_NETLINK, libc::NETLINK_EXT_ACK, 1);
        let timeout = libc::timeval {
            tv_sec: 10,
            tv_usec: 0,
        };
        // SAFETY: a valid fd and a timeval of the size given.
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        })?;
        Ok(Socket { fd, seq: 1 })
    }

    /// A socket in the network namespace bound at `netns` (such as
    /// /run/netns/NAME): made on a thread that enters it, as a socket
    /// stays in the namespace it was made in.
    pub fn open_in(netns: &Path) -> io::Result<Socket> {
        let ns = std::fs::File::open(netns)?;
        std::thread::spawn(move || {
            // SAFETY: switches only this short-lived thread's namespace.
            check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) })?;
            Socket::open()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the thread opening a socket panicked")))
    }

    pub fn next_batch(&self) -> Batch {
        Batch::new(self.seq)
    }

    /// Sends a batch and waits until the kernel has acknowledged it
    /// (committed) or refused one of its messages (nothing applied).
    pub fn apply(&mut self, batch: Batch) -> io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let (bytes, seqs, acked) = batch.finish();
        let Some(acked) = acked else { return Ok(()) };
        self.seq = seqs.end;
        self.drain();
        // One send is one transaction: the socket must take it whole.
        let size = (bytes.len() + 4096).min(i32::MAX as usize) as libc::c_int;
        if set_int(&self.fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, size).is_err() {
            set_int(&self.fd, libc::SOL_SOCKET, libc::SO_SNDBUF, size)?;
        }
        // SAFETY: a valid fd and a buffer of the length given.
        let sent =
            unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 64 << 10];
        loop {
            // SAFETY: a valid fd and a buffer of the length given.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(io::Error::new(
                    e.kind(),
                    format!("waiting for the kernel to acknowledge the batch: {e}"),
                ));
            }
            for reply in replies(&buf[..n as usize]) {
                let Reply::Ack {
                    seq,
                    error,
                    message,
                } = reply
                else {
                    continue;
                };
                // Refusals of the batch itself come with the BEGIN's number.
                if !seqs.contains(&seq) {
                    continue;
                }
                if error != 0 {
                    let os = io::Error::from_raw_os_error(-error);
                    return Err(match message {
                        Some(m) => io::Error::new(os.kind(), format!("{os}: {m}")),
                        None => os,
                    });
                }
                if seq == acked {
                    return Ok(());
                }
            }
        }
    }

    /// Discards replies left over from an earlier batch that failed.
    fn drain(&self) {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: a valid fd and a buffer of the length given.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                return;
            }
        }
    }
}

#[derive(Debug, PartialEq)]
enum Reply {
    Ack {
        seq: u32,
        /// 0, or a negative errno.
        error: i32,
        message: Option<String>,
    },
    Other,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The messages in what one `recv` returned; a malformed tail is ignored.
fn replies(mut b: &[u8]) -> Vec<Reply> {
    let mut out = Vec::new();
    while b.len() >= HEADER {
        let Some(len) = u32_at(b, 0).map(|l| l as usize) else {
            break;
        };
        if len < HEADER || len > b.len() {
            break;
        }
        let msg = &b[..len];
        let kind = u16_at(msg, 4).unwrap_or(0);
        let flags = u16_at(msg, 6).unwrap_or(0);
        let seq = u32_at(msg, 8).unwrap_or(0);
        if kind == NLMSG_ERROR {
            let error = u32_at(msg, HEADER).map_or(-libc::EIO, |e| e as i32);
            let message = (flags & NLM_F_ACK_TLVS != 0)
                .then(|| {
                    // After the error: the request's header (acks are
                    // capped), then attributes.
                    let mut at = HEADER + 4 + HEADER;
                    while let (Some(alen), Some(akind)) = (u16_at(msg, at), u16_at(msg, at + 2)) {
                        let alen = alen as usize;
                        if alen < 4 || at + alen > msg.len() {
                            break;
                        }
                        if akind & !NLA_F_NESTED == NLMSGERR_ATTR_MSG {
                            let text = &msg[at + 4..at + alen];
                            let text = text.split(|&c| c == 0).next().unwrap_or(text);
                            return Some(String::from_utf8_lossy(text).into_owned());
                        }
                        at += align(alen);
                    }
                    None
                })
                .flatten();
            out.push(Reply::Ack {
                seq,
                error,
                message,
            });
        } else {
            out.push(Reply::Other);
        }
        b = &b[align(len).min(b.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_begin_elements_end_with_acks_asked_for_elements_only() {
        let mut b = Batch::new(7);
        b.elements(
            Op::Add,
            "webfence",
            "ban4",
            &[Element::new(
                "203.0.113.7".parse().unwrap(),
                Some(3_600_000),
            )],
        );
        let (bytes, seqs, acked) = b.finish();
        assert_eq!((seqs, acked), (7..10, Some(8)));
        // BEGIN: header + nfgenmsg, subsystem nftables in the resource id.
        assert_eq!(u32_at(&bytes, 0), Some(20));
        assert_eq!(u16_at(&bytes, 4), Some(NFNL_MSG_BATCH_BEGIN));
        assert_eq!(&bytes[18..20], &[0, 10]);
        let msg = &bytes[20..];
        let len = u32_at(msg, 0).unwrap() as usize;
        assert_eq!(u16_at(msg, 4), Some(0x0a0c));
        assert_eq!(
            u16_at(msg, 6),
            Some(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE)
        );
        assert_eq!(u32_at(msg, 8), Some(8));
        // 20 + table "webfence\0" (4+9 → 16) + set "ban4\0" (4+5 → 12)
        // + list (4 + elem (4 + key (4 + value 8) + timeout 12)) = 88.
        assert_eq!(len, 20 + 16 + 12 + 4 + 4 + 12 + 12);
        assert_eq!(&msg[24..33], b"webfence\0");
        assert_eq!(&msg[len - 16..len - 12], &[203, 0, 113, 7]);
        assert_eq!(&msg[len - 8..len], &3_600_000u64.to_be_bytes());
        let end = &msg[len..];
        assert_eq!(u16_at(end, 4), Some(NFNL_MSG_BATCH_END));
        assert_eq!(end.len(), 20);
    }

    #[test]
    fn big_lists_are_cut_into_messages_under_the_attribute_limit() {
        let elements: Vec<Element> = (0..10_000u32)
            .map(|i| Element::new(std::net::Ipv6Addr::from(i as u128).into(), Some(1000)))
            .collect();
        let mut b = Batch::new(1);
        b.elements(Op::Delete, "t", "ban6", &elements);
        let (bytes, seqs, acked) = b.finish();
        let mut at = 20;
        let mut seen = Vec::new();
        while at < bytes.len() - 20 {
            let len = u32_at(&bytes, at).unwrap() as usize;
            assert!(len < 65_535);
            assert_eq!(u16_at(&bytes, at + 4), Some(0x0a0e));
            seen.push((
                u32_at(&bytes, at + 8).unwrap(),
                u16_at(&bytes, at + 6).unwrap(),
            ));
            at += len;
        }
        assert!(seen.len() > 1);
        assert_eq!(seqs.len(), seen.len() + 2);
        // Only the last message asks for an ack.
        let (last, flags) = seen.pop().unwrap();
        assert_eq!((Some(last), flags & NLM_F_ACK), (acked, NLM_F_ACK));
        assert!(seen.iter().all(|(_, f)| f & NLM_F_ACK == 0));
    }

    #[test]
    fn replies_read_acks_errors_and_the_kernels_message() {
        let mut b = Vec::new();
        // An ack for 5.
        b.extend_from_slice(&36u32.to_ne_bytes());
        b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&5u32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&0i32.to_ne_bytes());
        b.extend_from_slice(&[0; 16]);
        // ENOENT for 6, with "No such set" attached.
        let text = b"No such set\0";
        let attr_len = 4 + text.len();
        let total = HEADER + 4 + HEADER + align(attr_len);
        b.extend_from_slice(&(total as u32).to_ne_bytes());
        b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        b.extend_from_slice(&NLM_F_ACK_TLVS.to_ne_bytes());
        b.extend_from_slice(&6u32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        b.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        b.extend_from_slice(text);
        b.resize(36 + total, 0);
        // A truncated tail is ignored, not read past.
        b.extend_from_slice(&[99, 0, 0]);
        assert_eq!(
            replies(&b),
            [
                Reply::Ack {
                    seq: 5,
                    error: 0,
                    message: None
                },
                Reply::Ack {
                    seq: 6,
                    error: -libc::ENOENT,
                    message: Some("No such set".into())
                }
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_replies_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = replies(&bytes);
        }
    }
}
