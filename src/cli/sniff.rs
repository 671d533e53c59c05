//! `webfence sniff`: who on the network is torrenting, from an interface
//! for a while or from a saved capture.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{SniffArgs, emit};
use crate::detect::p2p::Classifier;
use crate::net::decode;
use crate::report::human_bytes;
use crate::report::text::thousands;
use crate::source::packets::bpf::{MAX_SKIPPED, Skip};
use crate::source::packets::{self, Frame, afpacket};
use crate::stats::lan::{LanStats, Locals};

/// What one sniff saw, for printing.
#[derive(Debug, serde::Serialize)]
struct Outcome {
    source: String,
    /// How a live capture read packets: "ring" (TPACKET_V3) or "recvfrom".
    #[serde(skip_serializing_if = "Option::is_none")]
    capture: Option<&'static str>,
    seconds: f64,
    packets: u64,
    undecodable: u64,
    kernel_dropped: u64,
    local: Vec<String>,
    skipped_ports: SkippedPorts,
    addresses: Vec<crate::stats::lan::LocalRow>,
}

#[derive(Debug, serde::Serialize)]
struct SkippedPorts {
    tcp: Vec<u16>,
    udp: Vec<u16>,
}

pub(super) fn sniff(args: SniffArgs) -> Result<ExitCode> {
    let locals = if args.local.is_empty() {
        Locals::private()
    } else {
        let mut nets = Vec::new();
        for l in &args.local {
            for part in l.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let net: ipnet::IpNet = part
                    .parse()
                    .or_else(|_| part.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .with_context(|| {
                        format!("invalid --local '{part}': expected a CIDR such as 192.168.1.0/24")
                    })?;
                nets.push(net);
            }
        }
        Locals::new(nets)
    };
    let skip = if args.all_ports {
        Skip {
            tcp: vec![],
            udp: vec![],
        }
    } else {
        let mut s = Skip::default();
        for (list, ports) in [(&mut s.tcp, &args.skip_tcp), (&mut s.udp, &args.skip_udp)] {
            if !ports.is_empty() {
                *list = ports.clone();
            }
        }
        s
    };
    if skip.tcp.len() > MAX_SKIPPED || skip.udp.len() > MAX_SKIPPED {
        bail!("at most {MAX_SKIPPED} ports can be skipped per protocol");
    }
    let mut classifier = Classifier::new();
    let mut stats = LanStats::default();
    let mut undecodable = 0u64;
    // Saved captures hold the web and SSH traffic a live capture's kernel
    // filter skips: the same ports are skipped here (a no-op live), on the
    // one decode of each frame.
    let mut on = |f: &Frame<'_>| match decode(f.link, f.data) {
        Some(p) if skip.skips(&p) => {}
        Some(p) => {
            let v = classifier.classify(&p);
            stats.record(&locals, &p, v);
        }
        None => undecodable += 1,
    };
    let started = Instant::now();
    let mut how = None;
    let (source, kernel_dropped, first_last) = match &args.read {
        Some(path) => {
            let mut first = None;
            let mut last = None;
            let summary = packets::read_file(path, &mut |f| {
                first.get_or_insert(f.time_ms);
                last = Some(f.time_ms);
                on(f);
            })?;
            if summary.skipped_links > 0 && !args.quiet {
                eprintln!(
                    "webfence: note: {} packets of interfaces with a link type not read here were skipped",
                    summary.skipped_links
                );
            }
            (path.display().to_string(), 0, first.zip(last))
        }
        None => {
            let iface = match &args.interface {
                Some(i) => i.clone(),
                None => afpacket::default_interface().context(
                    "no default route to take the interface from: name one with -i (ip link lists them)",
                )?,
            };
            let mut capture = afpacket::Capture::open(&iface, &skip)?;
            how = Some(if capture.uses_ring() {
                "ring"
            } else {
                "recvfrom"
            });
            if !args.quiet {
                eprintln!(
                    "webfence: capturing on {iface} for {}",
                    crate::report::text::duration(args.duration as f64)
                );
            }
            install_interrupt();
            let stop = || INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst);
            capture.run(
                Instant::now() + Duration::from_secs(args.duration),
                &stop,
                &mut on,
            )?;
            let k = capture.stats();
            (iface, k.dropped, None)
        }
    };
    let seconds = match first_last {
        Some((a, b)) => (b - a).max(0) as f64 / 1000.0,
        None => started.elapsed().as_secs_f64(),
    };
    let outcome = Outcome {
        source,
        capture: how,
        seconds,
        packets: stats.packets,
        undecodable,
        kernel_dropped,
        local: locals.nets().iter().map(ToString::to_string).collect(),
        skipped_ports: SkippedPorts {
            tcp: skip.tcp.clone(),
            udp: skip.udp.clone(),
        },
        addresses: stats.rows(args.top),
    };
    if args.json {
        let mut doc = serde_json::to_vec_pretty(&outcome).context("cannot encode JSON")?;
        doc.push(b'\n');
        emit(&doc)?;
    } else {
        emit(text(&outcome).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn text(o: &Outcome) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} packets in {:.1} s{}{}",
        o.source,
        thousands(o.packets),
        o.seconds,
        if o.kernel_dropped > 0 {
            format!(
                ", {} dropped by the kernel (the reader was too slow)",
                thousands(o.kernel_dropped)
            )
        } else {
            String::new()
        },
        if o.undecodable > 0 {
            format!(", {} not IP or cut short", thousands(o.undecodable))
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "local: {}; skipped: TCP {:?}, UDP {:?}",
        o.local.join(", "),
        o.skipped_ports.tcp,
        o.skipped_ports.udp
    );
    if o.addresses.is_empty() {
        let _ = writeln!(out, "\nno packet of a local address");
        return out;
    }
    let _ = writeln!(
        out,
        "\n{:<40} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>10} {:>10}",
        "local address",
        "bittorrent",
        "bytes",
        "tcp",
        "utp",
        "dht",
        "tracker",
        "peers",
        "all pkts",
        "all bytes"
    );
    for r in &o.addresses {
        let _ = writeln!(
            out,
            "{:<40} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>10} {:>10}",
            r.address,
            thousands(r.p2p_packets),
            human_bytes(r.p2p_bytes),
            thousands(r.bittorrent.packets),
            thousands(r.utp.packets),
            thousands(r.dht.packets),
            thousands(r.tracker.packets),
            format!("{}{}", r.p2p_peers, if r.peers_capped { "+" } else { "" }),
            thousands(r.all_packets),
            human_bytes(r.all_bytes),
        );
    }
    out
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Ctrl-C ends the capture early and still prints what it saw.
fn install_interrupt() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
}
