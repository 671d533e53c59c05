//! Measures the time from a log line being written to the kernel dropping
//! that client's packets (scripts/bench-daemon drives it).
//!
//! A client thread (in the client network namespace) sends a UDP datagram
//! every 200 µs from the trial's source address; a server thread (in the
//! server namespace) notes when each source was last heard. For each
//! trial: wait until the source gets through, append one offending log
//! line, then wait until the source has been silent for 300 ms. The latency
//! is the last datagram heard minus the moment the line was written.
//!
//! Usage: banlatency SERVER_NS CLIENT_NS SERVER_IP LOG TRIALS SOURCE...
//! (one source address per trial, already on the client's interface).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).expect("namespace exists");
    // SAFETY: switches only this thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 7 {
        eprintln!("usage: banlatency SERVER_NS CLIENT_NS SERVER_IP LOG TRIALS SOURCE...");
        std::process::exit(2);
    }
    let (server_ns, client_ns) = (args[1].clone(), args[2].clone());
    let server: IpAddr = args[3].parse().expect("server ip");
    let log = args[4].clone();
    let trials: usize = args[5].parse().expect("trials");
    let sources: Vec<IpAddr> = args[6..]
        .iter()
        .map(|s| s.parse().expect("source ip"))
        .collect();
    let target = SocketAddr::new(server, 9999);

    let heard: Arc<Mutex<HashMap<IpAddr, Instant>>> = Arc::default();
    let h = heard.clone();
    let ns = server_ns.clone();
    std::thread::spawn(move || {
        enter(&ns);
        let sock = UdpSocket::bind(target).expect("bind server");
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = sock.recv_from(&mut buf) {
            h.lock().unwrap().insert(from.ip(), Instant::now());
        }
    });
    let current: Arc<Mutex<Option<IpAddr>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (c, s) = (current.clone(), stop.clone());
    std::thread::spawn(move || {
        enter(&client_ns);
        let mut sockets: HashMap<IpAddr, UdpSocket> = HashMap::new();
        while !s.load(Ordering::Relaxed) {
            let src = *c.lock().unwrap();
            if let Some(src) = src {
                let sock = sockets.entry(src).or_insert_with(|| {
                    UdpSocket::bind(SocketAddr::new(src, 0)).expect("bind source")
                });
                let _ = sock.send_to(b"probe", target);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    });

    let mut file = OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open log");
    let mut latencies = Vec::new();
    let mut missed = 0;
    for &src in sources.iter().take(trials) {
        *current.lock().unwrap() = Some(src);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !heard.lock().unwrap().contains_key(&src) {
            assert!(Instant::now() < deadline, "{src} never got through");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        let stamp = jiff::Zoned::now()
            .strftime("%d/%b/%Y:%H:%M:%S %z")
            .to_string();
        let line =
            format!("{src} - - [{stamp}] \"GET /trigger HTTP/1.1\" 404 10 \"-\" \"bench\"\n");
        let written = Instant::now();
        file.write_all(line.as_bytes()).expect("append");
        let give_up = written + Duration::from_secs(10);
        loop {
            std::thread::sleep(Duration::from_millis(5));
            let last = heard.lock().unwrap()[&src];
            if last.elapsed() > Duration::from_millis(300) {
                latencies.push(last.saturating_duration_since(written).as_secs_f64() * 1e3);
                break;
            }
            if Instant::now() > give_up {
                missed += 1;
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        latencies[((latencies.len() as f64 - 1.0) * q).round() as usize]
    };
    println!(
        "trials {} banned {} missed {missed}  median {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        trials.min(sources.len()),
        latencies.len(),
        pick(0.5),
        pick(0.9),
        pick(0.99),
        pick(1.0)
    );
}
