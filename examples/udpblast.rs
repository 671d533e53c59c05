//! Sends UDP datagrams as fast as one thread can, for a bounded time and
//! count: the "busy interface" of the packet benchmarks. Run it in a
//! network namespace of the benchmark's own.
//!
//! Usage: udpblast DEST_IP:PORT SECONDS MAX_PACKETS [SIZE]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let parsed = (
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(2).and_then(|a| a.parse::<u64>().ok()),
        args.get(3).and_then(|a| a.parse::<u64>().ok()),
    );
    let (Some(dest), Some(secs), Some(max)) = parsed else {
        eprintln!("usage: udpblast DEST_IP:PORT SECONDS MAX_PACKETS [SIZE]");
        std::process::exit(2);
    };
    let size: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(200);
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    let payload = vec![0x5au8; size];
    let end = Instant::now() + Duration::from_secs(secs);
    let mut sent = 0u64;
    while sent < max {
        // The clock is read every 1024 sends: cheap, and bounded anyway.
        if sent % 1024 == 0 && Instant::now() >= end {
            break;
        }
        if sock.send_to(&payload, dest).is_ok() {
            sent += 1;
        }
    }
    println!("{sent}");
}
