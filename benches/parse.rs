//! Micro-benchmarks of the hot path: one line parsed, one line recorded.
//! Run with `cargo bench --bench parse`; figures go into BENCHMARKS.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use webfence::log::{Parser, Preset, Scratch, TrustedProxies};
use webfence::stats::Stats;

const LINES: &[&str] = &[
    r#"203.0.113.7 - - [10/Mar/2024:00:00:00 +0000] "GET /product/1234 HTTP/1.1" 200 37062 "https://example.com/" "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36""#,
    r#"2a02:43bb:6a97::32f9 - - [10/Mar/2024:00:00:01 +0000] "GET /static/css/site.css HTTP/1.1" 304 0 "-" "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0""#,
    r#"198.51.100.4 - - [10/Mar/2024:00:00:02 +0000] "" 400 157 "-" "-""#,
];

fn bench(c: &mut Criterion) {
    let parser = Parser::preset(Preset::Combined, TrustedProxies::default());
    let bytes: usize = LINES.iter().map(|l| l.len()).sum();
    let mut g = c.benchmark_group("combined");
    g.throughput(Throughput::Bytes(bytes as u64));
    // The general interpreter on the same lines, measured in the same run:
    // the machine is noisy, the ratio is what to read.
    let interpreted = parser.clone().without_family_finder();
    for (name, p) in [
        ("parse 3 lines", &parser),
        ("parse 3 lines, interpreter only", &interpreted),
    ] {
        g.bench_function(name, |b| {
            let mut scratch = Scratch::default();
            b.iter(|| {
                for l in LINES {
                    black_box(p.parse(black_box(l.as_bytes()), &mut scratch).is_ok());
                }
            })
        });
    }
    g.bench_function("parse+record 3 lines", |b| {
        let mut scratch = Scratch::default();
        let mut stats = Stats::default();
        b.iter(|| {
            for l in LINES {
                if let Ok(r) = parser.parse(black_box(l.as_bytes()), &mut scratch) {
                    stats.record(&r);
                }
            }
        })
    });
    g.finish();

    // The shipped sample's lines: varied enough that branches are not
    // learnt by heart as on three lines.
    let sample = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/access.log"))
        .unwrap_or_default();
    let sample: Vec<&[u8]> = sample
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut g = c.benchmark_group("sample");
    g.throughput(Throughput::Elements(sample.len() as u64));
    for (name, p) in [("finder", &parser), ("interpreter only", &interpreted)] {
        g.bench_function(format!("parse, {name}"), |b| {
            let mut scratch = Scratch::default();
            b.iter(|| {
                for l in &sample {
                    black_box(p.parse(black_box(l), &mut scratch).is_ok());
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
