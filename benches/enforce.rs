//! Micro-benchmarks of the enforcement path without the kernel: encoding a
//! netlink batch of host bans, and recording bans in the ledger (SQLite on
//! a temporary file). Run with `cargo bench --bench enforce`; the kernel's
//! side is measured by `scripts/bench-daemon`, in namespaces, as root.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use webfence::detect::addr::{Subject, to_bits};
use webfence::enforce::ledger::{Ledger, NewBan};
use webfence::enforce::netlink::{Batch, Element, Op};

const BANS: u32 = 10_000;

fn addr(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("enforce");
    g.throughput(Throughput::Elements(u64::from(BANS)));
    let elements: Vec<Element> = (0..BANS)
        .map(|i| Element::new(addr(i), Some(3_600_000)))
        .collect();
    g.bench_function("netlink batch of 10k host bans", |b| {
        b.iter(|| {
            let mut batch = Batch::new(1);
            batch.elements(Op::Add, "webfence", "ban4", black_box(&elements));
            black_box(batch.finish())
        })
    });
    let bans: Vec<NewBan> = (0..BANS)
        .map(|i| NewBan {
            subject: Subject::host(to_bits(addr(i))),
            rule: "flood-ip".into(),
            reason: "121 requests in 10s (limit 120)".into(),
            // About the size of a real decision's evidence.
            evidence: Some(format!(
                "{{\"evidence\":{{\"samples\":[\"{}\"]}}}}",
                "x".repeat(380)
            )),
            origin: "rule".into(),
            started_ms: 1_700_000_000_000,
            expires_ms: 1_700_003_600_000,
        })
        .collect();
    g.bench_function("ledger records 10k bans", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
                let ledger = Ledger::open(&dir.path().join("ledger.db"))
                    .unwrap_or_else(|e| panic!("ledger: {e}"));
                (dir, ledger)
            },
            // Returned, so closing the database (a checkpoint) happens
            // outside the measurement.
            |(dir, mut ledger)| {
                let renewed = ledger.renewals(&bans).unwrap_or_default();
                let done = ledger.record(&bans, &renewed);
                black_box(done.is_ok());
                (dir, ledger)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
