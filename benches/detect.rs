//! Micro-benchmarks of detection with the built-in ruleset: the stateless
//! part (classify, on the parse workers), the stateful part (the engine,
//! one thread), the whole replay on one thread and on two (parse workers
//! and engine shards), and the daemon's rules taking a large read line by
//! line or whole on every core. Run with `cargo bench --bench detect`;
//! figures go into BENCHMARKS.md.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use webfence::daemon::detectors::rules::RuleDetector;
use webfence::detect::allow::{Allowlist, SystemHost};
use webfence::detect::rules::{ClassifyScratch, Event};
use webfence::detect::{Config, Engine, RuleSet};
use webfence::log::{FormatSpec, Parser, Preset, Scratch, TrustedProxies};
use webfence::pipeline::{self, Job, LiveEvent, LiveLines};
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

    // The daemon's rules on one large read (the sample 4 times over, about
    // 10,000 lines): line by line, as before, and whole on 1 and 2 threads.
    let text = include_bytes!("../examples/access.log").repeat(4);
    let lines_in = text.split(|&b| b == b'\n').count() as u64;
    let mut g = c.benchmark_group("daemon rules");
    g.sample_size(20);
    g.throughput(Throughput::Elements(lines_in));
    let detector = |threads| {
        let engine = Engine::new(rules.clone());
        let mut d = RuleDetector::new(rules.clone(), allow.clone(), engine, None);
        d.set_threads(threads);
        d
    };
    let read = |d: &mut RuleDetector, whole: bool| {
        let mut malformed = 0;
        let lines = LiveLines {
            parser: &parser,
            path: std::path::Path::new("access.log"),
            bytes: &text,
            first: 1,
            malformed: &mut malformed,
        };
        if whole {
            d.on(LiveEvent::Lines(lines), None);
        } else {
            lines.each(&mut Scratch::default(), &mut |e| d.on(e, None));
        }
        black_box(d.engine.take_decisions().len())
    };
    g.bench_function("10k lines, line by line", |b| {
        b.iter_batched(
            || detector(1),
            |mut d| read(&mut d, false),
            BatchSize::LargeInput,
        )
    });
    for threads in [1, 2] {
        g.bench_function(format!("10k lines, whole, {threads} thread(s)"), |b| {
            b.iter_batched(
                || detector(threads),
                |mut d| read(&mut d, true),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
