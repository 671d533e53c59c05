//! Micro-benchmarks of detection with the built-in ruleset: the stateless
//! part (classify, on the parse workers), the stateful part (the engine,
//! one thread), and the whole replay on one thread and on two (parse
//! workers and engine shards). Run with `cargo bench --bench detect`;
//! figures go into BENCHMARKS.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use webfence::detect::allow::{Allowlist, SystemHost};
use webfence::detect::rules::{ClassifyScratch, Event};
use webfence::detect::{Config, Engine, RuleSet};
use webfence::log::{FormatSpec, Parser, Preset, Scratch, TrustedProxies};
use webfence::pipeline::{self, Job};
use webfence::source::Input;

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

    // The sample 40 times over (100k lines): enough for the threads to
    // matter, small enough for criterion's repetitions.
    let Ok(dir) = tempfile::tempdir() else {
        panic!("a temporary directory");
    };
    let log = dir.path().join("access.log");
    let text = include_bytes!("../examples/access.log").repeat(40);
    if std::fs::write(&log, &text).is_err() {
        panic!("cannot write {}", log.display());
    }
    let (allow, _) = Allowlist::build(&rules.allow, &SystemHost);
    let mut g = c.benchmark_group("replay");
    g.sample_size(10);
    g.throughput(Throughput::Elements(
        text.split(|&b| b == b'\n').count() as u64
    ));
    for threads in [1, 2] {
        let job = Job {
            inputs: vec![Input::File(log.clone())],
            format: FormatSpec::Preset(Preset::Combined),
            json_fields: Default::default(),
            proxies: TrustedProxies::default(),
            filter: Default::default(),
            threads,
        };
        g.bench_function(format!("100k lines, {threads} thread(s)"), |b| {
            b.iter(|| {
                let mut n = 0;
                let run = pipeline::replay(&job, &rules, &allow, None, |d, _| n += d.len());
                black_box((run.is_ok(), n))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
