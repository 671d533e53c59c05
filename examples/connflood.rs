//! Opens N loopback TCP connections and holds them, for benchmarking
//! `webfence conns` against `ss` and `netstat` on a big connection table
//! (scripts/bench-machine runs it in a network namespace).
//!
//! Clients connect from 127.0.0.2, 127.0.0.3, ... (20,000 connections per
//! source address, so ephemeral ports never run out) to one listener on
//! 127.0.0.1:PORT, accepted as they come. Prints "ready N" when all are
//! established, then holds them until stdin closes.
//!
//! Usage: connflood N PORT

use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};

fn raise_fd_limit(n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit with a valid struct.
    unsafe {
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
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
    raise_fd_limit((2 * n + 1000) as u64);
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
        held
    });
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let src = Ipv4Addr::new(
            127,
            0,
            (2 + i / 20_000 / 250) as u8,
            (2 + (i / 20_000) % 250) as u8,
        );
        clients.push(connect_from(src, to).expect("connect"));
    }
    let servers = acceptor.join().expect("acceptor");
    println!("ready {}", servers.len());
    let _ = std::io::stdout().flush();
    let stdin = std::io::stdin();
    for _ in stdin.lock().lines() {}
    drop(clients);
    drop(servers);
}
