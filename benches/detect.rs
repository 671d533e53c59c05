//! Micro-benchmarks of detection with the built-in ruleset: the stateless
//! part (classify, on the parse workers) and the stateful part (the engine,
//! one thread). Run with `cargo bench --bench detect`; figures go into
//! BENCHMARKS.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use webfence::detect::rules::{ClassifyScratch, Event};
use webfence::detect::{Config, Engine, RuleSet};
use webfence::log::{Parser, Preset, Scratch, TrustedProxies};

fn sample_lines() -> Vec<String> {
    // The sample ends with two malformed lines, one not UTF-8.
    let text = include_bytes!("../examples/access.log");
    String::from_utf8_lossy(text)
        .lines()
        .take(2500)
        .map(str::to_string)
        .collect()
}

fn bench(c: &mut Criterion) {
    let Ok(rules) = RuleSet::compile(&Config::builtin()) else {
        panic!("the built-in rules compile");
    };
    let parser = Parser::preset(Preset::Combined, TrustedProxies::default());
    let lines = sample_lines();
    let mut g = c.benchmark_group("detect");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("classify 2500 lines", |b| {
        let mut scratch = Scratch::default();
        let mut cs = ClassifyScratch::default();
        b.iter(|| {
            for l in &lines {
                if let Ok(r) = parser.parse(l.as_bytes(), &mut scratch) {
                    black_box(rules.classify(&r, false, &mut cs));
                }
            }
        })
    });
    let mut scratch = Scratch::default();
    let mut cs = ClassifyScratch::default();
    let mut events: Vec<Event> = Vec::new();
    for l in &lines {
        if let Ok(r) = parser.parse(l.as_bytes(), &mut scratch) {
            events.push(rules.classify(&r, false, &mut cs));
        }
    }
    g.bench_function("engine 2500 events", |b| {
        let mut engine = Engine::new(rules.clone());
        let mut shift = 0i64;
        b.iter(|| {
            // Later rounds move on in time, as a live log would.
            shift += 7 * 3600 * 1000;
            let shift = shift;
            for ev in &events {
                let mut e = *ev;
                e.time += shift;
                engine.feed(&e, b"");
            }
            black_box(engine.take_decisions());
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
