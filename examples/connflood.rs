//! Opens N loopback TCP connections and holds them, for benchmarking
//! `webfence conns` against `ss` and `netstat` on a big connection table
//! (scripts/bench-machine runs it in a network namespace).
//!
//! Clients connect from 127.0.1.(2 + INDEX) to one listener on
//! 127.0.0.1:PORT, accepted as they come. Prints "ready N" when all are
//! established, then holds them until killed. A process may hold only so
//! many descriptors (two per connection here), so the bench script runs
//! several, each with its own INDEX and PORT.
//!
//! Usage: connflood N PORT INDEX

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};

/// Raises the soft descriptor limit to the hard one.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A socket bound to `src` connected to `to`: std has no bind-then-connect.
fn connect_from(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor owned right away.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as u16;
        a.sin_addr.s_addr = u32::from_ne_bytes(src.octets());
        if libc::bind(
            fd,
            (&a as *const libc::sockaddr_in).cast(),
            std::mem::size_of_val(&a) as u32,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let SocketAddr::V4(to4) = to else {
            return Err(std::io::Error::other("IPv4 only"));
        };
        let mut b: libc::sockaddr_in = std::mem::zeroed();
        b.sin_family = libc::AF_INET as u16;
        b.sin_port = to4.port().to_be();
        b.sin_addr.s_addr = u32::from_ne_bytes(to4.ip().octets());
        if libc::connect(
            fd,
            (&b as *const libc::sockaddr_in).cast(),
            std::mem::size_of_val(&b) as u32,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let port: u16 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(8080);
    let index: u8 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(0);
    raise_fd_limit();
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("listen");
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    let acceptor = std::thread::spawn(move || {
        let mut held = Vec::with_capacity(n);
        while held.len() < n {
            match listener.accept() {
                Ok((s, _)) => held.push(s),
                Err(e) => panic!("accept: {e}"),
            }
        }
        // The listener stays open: connections count as inbound to a
        // listening port only while something listens on it.
        (listener, held)
    });
    let mut clients = Vec::with_capacity(n);
    let src = Ipv4Addr::new(127, 0, 1, 2u8.saturating_add(index));
    for _ in 0..n {
        clients.push(connect_from(src, to).expect("connect"));
    }
    let servers = acceptor.join().expect("acceptor");
    println!("ready {}", servers.1.len());
    let _ = std::io::stdout().flush();
    // Held until killed.
    loop {
        std::thread::park();
    }
}
