//! Micro-benchmarks of the machine side without privileges: counting a
//! 200k-socket table per client (what `webfence conns` and connection
//! rules do after the kernel's dump), parsing sock_diag replies, and one
//! check of ten guards on a sample. Run with `cargo bench --bench
//! machine`; the kernel's side and the peers (ss, netstat, monit) are in
//! `scripts/bench-machine`.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use webfence::daemon::sources::machine::Sample;
use webfence::detect::guard::GuardState;
use webfence::detect::guard::expr::Cond;
use webfence::source::conns::{Conn, TcpState, parse_diag_msg};
use webfence::source::system::SystemSample;
use webfence::stats::conns::{ConnFilter, ConnTable};

const SOCKETS: u32 = 200_000;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("machine");
    // 100k inbound connections from 5,000 clients, and their 100k
    // outbound peers (not listening: skipped), as on a loopback flood.
    let conns: Vec<Conn> = (0..SOCKETS)
        .map(|i| {
            let inbound = i % 2 == 0;
            Conn {
                local: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                local_port: if inbound {
                    443
                } else {
                    40_000 + (i % 20_000) as u16
                },
                remote: IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + (i % 5_000))),
                remote_port: 1024 + (i % 60_000) as u16,
                state: if i % 10 == 0 {
                    TcpState::SynRecv
                } else {
                    TcpState::Established
                },
            }
        })
        .collect();
    let listening: BTreeSet<u16> = [80, 443].into();
    g.throughput(Throughput::Elements(u64::from(SOCKETS)));
    g.bench_function("count 200k sockets per client", |b| {
        b.iter(|| {
            black_box(ConnTable::build(
                &listening,
                black_box(&conns),
                &ConnFilter::default(),
            ))
        })
    });
    let mut msg = [0u8; 72];
    msg[0] = libc::AF_INET as u8;
    msg[1] = 1;
    msg[4..6].copy_from_slice(&443u16.to_be_bytes());
    msg[8..12].copy_from_slice(&[10, 0, 0, 1]);
    msg[24..28].copy_from_slice(&[11, 0, 0, 9]);
    g.bench_function("parse 200k sock_diag replies", |b| {
        b.iter(|| {
            let mut n = 0u32;
            for _ in 0..SOCKETS {
                n += u32::from(parse_diag_msg(black_box(&msg)).is_some());
            }
            n
        })
    });
    g.throughput(Throughput::Elements(10));
    let conds: Vec<Cond> = [
        "la1 >= 10 or la5 >= 6",
        "la15 > 4 and swapfree < 64M",
        "memavail < 512M",
        "memused > 30G",
        "cpu_pressure > 80",
        "io_pressure > 50 and la1 > 4",
        "procs(\"apache2\") > 150",
        "conns_syn > 2000",
        "not (req_rate < 5000)",
        "status_5xx_rate > 50 or lag > 30",
    ]
    .iter()
    .map(|t| Cond::parse(t).unwrap())
    .collect();
    let guards: Vec<webfence::detect::guard::Guard> = conds
        .into_iter()
        .enumerate()
        .map(|(i, when)| webfence::detect::guard::Guard {
            name: format!("g{i}"),
            description: String::new(),
            when_text: when.to_string(),
            when,
            for_checks: 2,
            until: None,
            action: webfence::detect::guard::GuardAction::Log,
            then: None,
            repeat_ms: None,
            timeout_ms: 60_000,
            check_every_ms: 1000,
        })
        .collect();
    let sample = Sample {
        system: Some(SystemSample {
            la1: 0.5,
            la5: 0.4,
            la15: 0.3,
            mem_total: 16 << 30,
            mem_avail: 12 << 30,
            procs: [("apache2".to_string(), 40)].into(),
            ..SystemSample::default()
        }),
        ..Sample::default()
    };
    let mut states = vec![GuardState::default(); guards.len()];
    let mut now = 0;
    g.bench_function("one check of ten guards", |b| {
        b.iter(|| {
            now += 1000;
            for (g, s) in guards.iter().zip(states.iter_mut()) {
                black_box(s.check(g, black_box(&sample), now));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
