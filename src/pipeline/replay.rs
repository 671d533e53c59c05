//! `replay`: the rules over logs, in log time, as the daemon would have
//! applied them.
//!
//! Four stages, each on its own threads: a reader cuts the inputs into
//! chunks; workers parse and classify chunks in parallel (which rules a
//! request concerns, [`RuleSet::classify`]) and sort each chunk's requests
//! by engine shard ([`ShardPlan`], by client); the main thread puts the
//! chunks back in order and hands each to every shard with the log's clock
//! as it stood before the chunk; each shard runs an [`Engine`] over its
//! clients' requests. The main thread then merges the shards' decisions
//! back into log order, a chunk at a time, so they can be streamed out as
//! the replay goes.
//!
//! The main thread touches no request: a request's events are written by
//! the worker that classified it and read by the one shard that decides it.
//! (An earlier design stamped and split them on the main thread, a third
//! core reading every event; on two cores that pass cost more than it did.)

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{Sender, channel, sync_channel};
use std::sync::{Arc, Mutex};

use super::{
    Chunk, Job, MALFORMED_SAMPLES, MalformedSample, Partial, PipelineError, Reader, build_parser,
    field_text,
};
use crate::detect::rules::ClassifyScratch;
use crate::detect::shard::ShardPlan;
use crate::detect::{self, Decision, Engine, Event, RuleSet, allow::Allowlist};
use crate::log::{self, Parser, Scratch};
use crate::source::{Input, LineChunker, lines};

/// One chunk turned into events by a worker, handed to the shards in order.
struct Batch {
    seq: u64,
    data: Vec<u8>,
    /// Per shard, its events in log order. Each event's time is the newest
    /// time of the chunk up to it: with the log's clock before the chunk,
    /// that is the clock one engine would hold (see `shard`).
    events: Vec<Vec<Event>>,
    /// The first and last request times as logged, and the newest.
    first: Option<i64>,
    last: Option<i64>,
    newest: i64,
    malformed: u64,
    samples: Vec<(usize, MalformedSample)>,
}

/// Reusable buffers of a batch: chunk bytes, events per shard.
type Buffers = (Vec<u8>, Vec<Vec<Event>>);

/// A chunk for a worker, with its place and the buffers to fill.
type Work = (u64, Chunk, Vec<Vec<Event>>);

/// What the main thread hears from the workers and the shards.
enum Msg {
    Classified(Batch),
    /// A shard's decisions on one batch, each with its line's place in
    /// the chunk (which orders them as the log does).
    Decided {
        seq: u64,
        decisions: Vec<(u32, Decision)>,
    },
    /// A worker found no more chunks.
    WorkerDone,
    /// A worker or shard panicked (a bug): the replay stops and the panic
    /// is raised again once every thread has ended.
    Panicked(Box<dyn std::any::Any + Send>),
}

/// A batch for the shards, with the log's clock before it.
type ForShards = (Arc<Batch>, i64);

/// A batch handed to the shards and not yet finished by all of them.
struct InFlight {
    batch: Arc<Batch>,
    waiting: usize,
    decisions: Vec<(u32, Decision)>,
}

/// What a replay saw, besides the decisions it streamed.
#[derive(Debug)]
pub struct ReplayRun {
    pub input: super::InputSummary,
    /// Inputs in the order replayed (oldest first).
    pub names: Vec<String>,
    pub first: Option<i64>,
    pub last: Option<i64>,
    /// Engine shards the rules ran on.
    pub shards: usize,
}

#[allow(clippy::too_many_arguments)]
fn classify_chunk(
    parser: &Parser,
    rules: &RuleSet,
    allow: &Allowlist,
    plan: &ShardPlan,
    chunk: &Chunk,
    names: &[String],
    scratch: &mut (Scratch, ClassifyScratch),
    batch: &mut Batch,
) {
    let base = chunk.data.as_ptr() as usize;
    let mut part = Partial::default();
    batch.events.resize_with(plan.shards, Vec::new);
    batch.events.iter_mut().for_each(Vec::clear);
    for (i, line) in lines(&chunk.data).enumerate() {
        if line.is_empty() {
            continue;
        }
        let line_no = chunk.first_line + i as u64;
        match parser.parse(line, &mut scratch.0) {
            Ok(r) => {
                let mut ev = rules.classify(&r, allow.contains(r.client), &mut scratch.1);
                ev.loc = detect::rules::loc(chunk.input, line_no);
                ev.line_start = (line.as_ptr() as usize - base) as u32;
                ev.line_len = line.len() as u32;
                batch.first.get_or_insert(ev.time);
                batch.last = Some(ev.time);
                batch.newest = batch.newest.max(ev.time);
                ev.time = batch.newest;
                if let Some(shard) = batch.events.get_mut(plan.shard_of(ev.client)) {
                    shard.push(ev);
                }
            }
            Err(e) => {
                part.malformed += 1;
                part.offer_sample(chunk.input, names, line_no, || {
                    let excerpt = &line[..line.len().min(120)];
                    (e.describe(line), log::parse::escape_for_display(excerpt))
                });
            }
        }
    }
    batch.malformed = part.malformed;
    batch.samples = part.samples;
}

/// The first timestamp of an input, to replay rotated sets oldest first.
fn first_time(input: &Input, parser: &Parser) -> Option<i64> {
    let mut chunker = LineChunker::with_chunk_size(input.open().ok()?, 64 << 10);
    let mut buf = Vec::new();
    let mut scratch = Scratch::default();
    for _ in 0..4 {
        chunker.next_chunk(&mut buf).ok()??;
        if let Some(t) =
            lines(&buf).find_map(|l| parser.parse(l, &mut scratch).ok().map(|r| r.time))
        {
            return Some(t);
        }
    }
    None
}

/// Runs the rules over the inputs in log time, on `job.threads` workers
/// and as many engine shards. `on_batch` gets each chunk's decisions, in
/// log order, with the input names in replay order (to stream them out).
/// Returns what the replay saw and an engine holding the totals and
/// traces of every shard (for the summary and `--explain`).
pub fn replay(
    job: &Job,
    rules: &RuleSet,
    allow: &Allowlist,
    explain: Option<std::net::IpAddr>,
    mut on_batch: impl FnMut(Vec<Decision>, &[String]),
) -> Result<(ReplayRun, Engine), PipelineError> {
    let mut inputs = job.inputs.clone();
    let mut reader = Reader::open(&inputs)?;
    let mut names: Vec<String> = inputs.iter().map(Input::name).collect();
    let mut pending = reader.first_text();
    let (parser, detection) = build_parser(job, pending.last(), &names)?;
    let mut warnings = Vec::new();
    if inputs.len() > 1 && !inputs.iter().any(|i| matches!(i, Input::Stdin)) {
        let firsts: Vec<Option<i64>> = inputs.iter().map(|i| first_time(i, &parser)).collect();
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| firsts[i].unwrap_or(i64::MAX));
        if order.iter().enumerate().any(|(a, &b)| a != b) {
            inputs = order.iter().map(|&i| inputs[i].clone()).collect();
            names = inputs.iter().map(Input::name).collect();
            warnings.push(format!("replaying oldest first: {}", names.join(", ")));
            reader = Reader::open(&inputs)?;
            pending.clear();
        }
    }

    let threads = job.threads.max(1);
    let (plan, one_shard_why) = ShardPlan::new(rules, threads);
    if let Some(why) = one_shard_why {
        warnings.push(why);
    }
    let shard_rules = {
        let mut r = rules.clone();
        // Each shard keeps within its share of the cap (see `shard`).
        r.memory_cap = (rules.memory_cap / plan.shards as u64).max(1 << 20);
        r
    };
    let in_flight = threads * 2 + 2;
    let plan = &plan;
    let (work_tx, work_rx) = sync_channel::<Work>(in_flight);
    let (msg_tx, msg_rx) = channel::<Msg>();
    let (pool_tx, pool_rx) = channel::<Buffers>();
    for _ in 0..in_flight {
        let _ = pool_tx.send(Default::default());
    }
    // Shared by the workers only: when they have all stopped (the replay
    // broke off), the receiver goes and the reader's next send fails
    // instead of waiting for a worker forever.
    let work_rx = Arc::new(Mutex::new(work_rx));
    let mut malformed = 0;
    let mut samples: Vec<(usize, MalformedSample)> = Vec::new();
    let (mut first, mut last) = (None, None);
    let mut panicked = None;

    let (reader, engines) = std::thread::scope(|scope| {
        for _ in 0..threads {
            let (parser, names, work_rx, msg_tx) =
                (&parser, &names, Arc::clone(&work_rx), msg_tx.clone());
            scope.spawn(move || {
                let work = std::panic::AssertUnwindSafe(|| {
                    classify_worker(parser, rules, allow, plan, names, &work_rx, &msg_tx)
                });
                let _ = match std::panic::catch_unwind(work) {
                    Ok(()) => msg_tx.send(Msg::WorkerDone),
                    Err(panic) => msg_tx.send(Msg::Panicked(panic)),
                };
            });
        }
        drop(work_rx);
        let mut shard_txs = Vec::new();
        let mut shard_threads = Vec::new();
        for me in 0..plan.shards {
            let (tx, rx) = channel::<ForShards>();
            shard_txs.push(tx);
            let msg_tx = msg_tx.clone();
            let mut engine = Engine::new(shard_rules.clone());
            engine.set_field_text(field_text(parser.clone()));
            if let Some(ip) = explain {
                engine.explain(ip);
            }
            shard_threads.push(scope.spawn(move || {
                let work = std::panic::AssertUnwindSafe(|| {
                    run_shard(me, &mut engine, rx, &msg_tx);
                });
                if let Err(panic) = std::panic::catch_unwind(work) {
                    let _ = msg_tx.send(Msg::Panicked(panic));
                }
                engine.finish();
                engine
            }));
        }
        drop(msg_tx);

        // The reader runs on its own thread so reading overlaps the rest.
        let reader_thread = scope.spawn(move || {
            let mut seq = 0;
            for chunk in pending.drain(..) {
                if work_tx.send((seq, chunk, Vec::new())).is_err() {
                    return reader;
                }
                seq += 1;
            }
            while let Ok((buf, events)) = pool_rx.recv() {
                let Some(chunk) = reader.next(buf) else { break };
                if work_tx.send((seq, chunk, events)).is_err() {
                    break;
                }
                seq += 1;
            }
            reader
        });

        let mut next_seq = 0;
        let mut clock = i64::MIN;
        let mut workers_left = threads;
        let mut classified: BTreeMap<u64, Batch> = BTreeMap::new();
        let mut flying: VecDeque<InFlight> = VecDeque::new();
        while let Ok(msg) = msg_rx.recv() {
            match msg {
                Msg::Classified(batch) => {
                    classified.insert(batch.seq, batch);
                    while let Some(mut batch) = classified.remove(&next_seq) {
                        next_seq += 1;
                        let before = clock;
                        clock = clock.max(batch.newest);
                        if first.is_none() {
                            first = batch.first;
                        }
                        last = batch.last.or(last);
                        malformed += batch.malformed;
                        samples.append(&mut batch.samples);
                        let batch = Arc::new(batch);
                        for tx in &shard_txs {
                            let _ = tx.send((Arc::clone(&batch), before));
                        }
                        flying.push_back(InFlight {
                            batch,
                            waiting: plan.shards,
                            decisions: Vec::new(),
                        });
                    }
                }
                Msg::Decided { seq, decisions } => {
                    let Some(front) = flying.front().map(|f| f.batch.seq) else {
                        continue;
                    };
                    if let Some(f) = flying.get_mut(seq.wrapping_sub(front) as usize) {
                        f.waiting -= 1;
                        f.decisions.extend(decisions);
                    }
                    while flying.front().is_some_and(|f| f.waiting == 0) {
                        let Some(mut done) = flying.pop_front() else {
                            break;
                        };
                        // Stable: one request's decisions keep their order.
                        done.decisions.sort_by_key(|(i, _)| *i);
                        on_batch(done.decisions.into_iter().map(|(_, d)| d).collect(), &names);
                        if let Ok(b) = Arc::try_unwrap(done.batch) {
                            let _ = pool_tx.send((b.data, b.events));
                        }
                    }
                }
                Msg::WorkerDone => workers_left -= 1,
                Msg::Panicked(panic) => {
                    panicked = Some(panic);
                    break;
                }
            }
            if workers_left == 0 && classified.is_empty() {
                // Every batch is with the shards: let them finish.
                shard_txs.clear();
            }
        }
        // Unblocks the reader (waiting for a buffer) when the loop broke off.
        drop(pool_tx);
        drop(shard_txs);
        drop(msg_rx);
        let engines: Vec<Engine> = shard_threads
            .into_iter()
            .filter_map(|t| t.join().ok())
            .collect();
        let reader = match reader_thread.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        (reader, engines)
    });
    if let Some(panic) = panicked {
        std::panic::resume_unwind(panic);
    }
    let mut engine = Engine::new(rules.clone());
    for shard in engines {
        engine.absorb(shard);
    }
    samples.sort_by_key(|(i, s)| (*i, s.line));
    samples.truncate(MALFORMED_SAMPLES);
    warnings.extend(reader.warnings.iter().cloned());
    let run = ReplayRun {
        input: super::InputSummary {
            lines: reader.lines,
            malformed,
            samples: samples.into_iter().map(|(_, s)| s).collect(),
            format: parser.name().to_string(),
            detection,
            warnings,
        },
        names,
        first,
        last,
        shards: plan.shards,
    };
    Ok((run, engine))
}

/// A worker: parses and classifies chunks until there are none.
fn classify_worker(
    parser: &Parser,
    rules: &RuleSet,
    allow: &Allowlist,
    plan: &ShardPlan,
    names: &[String],
    work_rx: &Mutex<std::sync::mpsc::Receiver<Work>>,
    msg_tx: &Sender<Msg>,
) {
    let mut scratch = (Scratch::default(), ClassifyScratch::default());
    loop {
        let next = match work_rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((seq, chunk, events)) = next else {
            return;
        };
        let mut batch = Batch {
            seq,
            data: Vec::new(),
            events,
            first: None,
            last: None,
            newest: i64::MIN,
            malformed: 0,
            samples: Vec::new(),
        };
        classify_chunk(
            parser,
            rules,
            allow,
            plan,
            &chunk,
            names,
            &mut scratch,
            &mut batch,
        );
        batch.data = chunk.data;
        if msg_tx.send(Msg::Classified(batch)).is_err() {
            return;
        }
    }
}

/// A shard: feeds its events of each batch to its engine and reports the
/// decisions, tagged with their events' places.
fn run_shard(
    me: usize,
    engine: &mut Engine,
    batches: std::sync::mpsc::Receiver<ForShards>,
    msg_tx: &Sender<Msg>,
) {
    for (batch, clock_before) in batches {
        let mut decisions = Vec::new();
        for ev in batch.events.get(me).map_or(&[][..], Vec::as_slice) {
            let start = ev.line_start as usize;
            let line = batch
                .data
                .get(start..start + ev.line_len as usize)
                .unwrap_or(b"");
            engine.feed_at(ev, ev.time.max(clock_before), line);
            if engine.pending_decisions() > 0 {
                decisions.extend(engine.take_decisions_from(0).map(|d| (ev.line_start, d)));
            }
        }
        let seq = batch.seq;
        // Let go of the batch first: the last shard to do so lets the main
        // thread recycle its buffers.
        drop(batch);
        if msg_tx.send(Msg::Decided { seq, decisions }).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The sharded replay against the single engine it splits: same
    //! decisions, same order, same evidence.

    use super::*;
    use crate::detect::Config;
    use crate::detect::allow::SystemHost;
    use crate::log::{Preset, TrustedProxies};
    use crate::stats::Filter;
    use proptest::prelude::*;
    use std::fmt::Write as _;

    /// Who sends what, in a generated log.
    #[derive(Debug, Clone)]
    enum Actor {
        /// One address, many requests for one page, `gap_ms` apart.
        Flood { ip: u8, n: u16, gap_ms: u16 },
        /// Many addresses of one /16 on one page.
        Distributed { net: u8, clients: u16, gap_ms: u16 },
        /// One address probing distinct missing paths and secrets.
        Scanner { ip: u8, n: u8 },
        /// An IPv6 client rotating user agents.
        Rotator { ip: u8, n: u8 },
        /// Ordinary readers.
        Readers { n: u16 },
    }

    fn actor() -> impl Strategy<Value = (u32, Actor)> {
        let a = prop_oneof![
            (any::<u8>(), 40u16..400, 5u16..200).prop_map(|(ip, n, gap_ms)| Actor::Flood {
                ip,
                n,
                gap_ms
            }),
            (any::<u8>(), 60u16..250, 1u16..400).prop_map(|(net, clients, gap_ms)| {
                Actor::Distributed {
                    net,
                    clients,
                    gap_ms,
                }
            }),
            (any::<u8>(), 5u8..40).prop_map(|(ip, n)| Actor::Scanner { ip, n }),
            (any::<u8>(), 5u8..30).prop_map(|(ip, n)| Actor::Rotator { ip, n }),
            (20u16..400).prop_map(|n| Actor::Readers { n }),
        ];
        // Start within the first ten minutes of log time.
        (0u32..600_000, a)
    }

    /// (time in ms, line without the newline), unsorted.
    fn requests(actors: &[(u32, Actor)]) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        let mut push = |t: i64, ip: String, path: &str, status: u16, agent: &str| {
            out.push((t, ip, path.to_string(), status, agent.to_string()));
        };
        for (k, (start, a)) in actors.iter().enumerate() {
            let t0 = i64::from(*start);
            match a {
                Actor::Flood { ip, n, gap_ms } => {
                    for i in 0..i64::from(*n) {
                        // Odd addresses vary the query (a flood), even
                        // ones repeat one request (identical requests).
                        let path = if ip % 2 == 1 {
                            format!("/search?q={}", i % 50)
                        } else {
                            "/search".to_string()
                        };
                        push(
                            t0 + i * i64::from(*gap_ms),
                            format!("198.{ip}.100.7"),
                            &path,
                            200,
                            "curl/8",
                        );
                    }
                }
                Actor::Distributed {
                    net,
                    clients,
                    gap_ms,
                } => {
                    for i in 0..i64::from(*clients) {
                        push(
                            t0 + i * i64::from(*gap_ms),
                            format!("10.{net}.{}.{}", i / 200, i % 200 + 1),
                            "/checkout",
                            200,
                            "Mozilla/5.0",
                        );
                    }
                }
                Actor::Scanner { ip, n } => {
                    for i in 0..i64::from(*n) {
                        let path = match i % 4 {
                            0 => "/.env".to_string(),
                            1 => format!("/backup-{i}.zip"),
                            2 => "/wp-login.php".to_string(),
                            _ => format!("/old/{k}/{i}"),
                        };
                        push(
                            t0 + i * 300,
                            format!("203.{ip}.113.5"),
                            &path,
                            404,
                            "Mozilla/5.0 (X11)",
                        );
                    }
                }
                Actor::Rotator { ip, n } => {
                    for i in 0..i64::from(*n) {
                        push(
                            t0 + i * 1000,
                            format!("2001:db8:{ip:x}::{k:x}"),
                            "/product/1",
                            200,
                            &format!("agent-{i}"),
                        );
                    }
                }
                Actor::Readers { n } => {
                    for i in 0..i64::from(*n) {
                        push(
                            t0 + i * 700,
                            format!("192.0.2.{}", i % 50 + 1),
                            &format!("/page/{}", i % 7),
                            if i % 13 == 0 { 404 } else { 200 },
                            "Mozilla/5.0 (Mac)",
                        );
                    }
                }
            }
        }
        out.into_iter()
            .map(|(t, ip, path, status, agent)| {
                let (s, ms) = (t / 1000, t % 1000);
                let _ = ms;
                let line = format!(
                    "{ip} - - [10/Mar/2024:{:02}:{:02}:{:02} +0000] \"GET {path} HTTP/1.1\" {status} 12 \"-\" \"{agent}\"",
                    10 + s / 3600,
                    s / 60 % 60,
                    s % 60
                );
                (t, line)
            })
            .collect()
    }

    /// Writes the log as `files` consecutive files, each line's time nudged
    /// back by up to `jitter` seconds (servers log out of order).
    fn write_log(dir: &std::path::Path, mut reqs: Vec<(i64, String)>, files: usize, jitter: &[u8]) {
        reqs.sort_by_key(|(t, _)| *t);
        let per = reqs.len().div_ceil(files.max(1)).max(1);
        for (f, part) in reqs.chunks(per).enumerate() {
            let mut text = String::new();
            for (i, (_, line)) in part.iter().enumerate() {
                let back = jitter.get(i % jitter.len().max(1)).copied().unwrap_or(0);
                let line = if i > 0 && back > 0 {
                    nudge_back(line, i64::from(back))
                } else {
                    line.clone()
                };
                let _ = writeln!(text, "{line}");
            }
            std::fs::write(dir.join(format!("access.log.{f}")), text).unwrap();
        }
    }

    /// The line with its time `secs` earlier.
    fn nudge_back(line: &str, secs: i64) -> String {
        let (Some(a), Some(b)) = (line.find('['), line.find(" +0000]")) else {
            return line.to_string();
        };
        let time = &line[a + 13..b];
        let parts: Vec<i64> = time.split(':').filter_map(|p| p.parse().ok()).collect();
        let [h, m, s] = parts[..] else {
            return line.to_string();
        };
        let t = (h * 3600 + m * 60 + s - secs).max(0);
        format!(
            "{}{:02}:{:02}:{:02}{}",
            &line[..a + 13],
            t / 3600,
            t / 60 % 60,
            t % 60,
            &line[b..]
        )
    }

    fn rules() -> RuleSet {
        // The built-in rules, plus a log-only rule keyed on a /24 (quiet
        // periods) and a score that fires often.
        let config = Config::from_texts(vec![(
            "t.toml".into(),
            "[rules.net-burst]\nkind = \"rate\"\nkey = \"net\"\nlimit = 30\nwindow = \"10s\"\naction = \"log\"\n\
             [rules.missing]\nkind = \"rate\"\nkey = \"ip\"\nlimit = 3\nwindow = \"30s\"\nmatch.status = [404]\nscore = 6\n"
                .into(),
        )])
        .unwrap();
        RuleSet::compile(&config).unwrap()
    }

    fn job(dir: &std::path::Path, threads: usize) -> Job {
        let mut inputs: Vec<Input> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| Input::File(e.unwrap().path()))
            .collect();
        inputs.sort_by_key(Input::name);
        Job {
            inputs,
            format: crate::log::FormatSpec::Preset(Preset::Combined),
            json_fields: Default::default(),
            proxies: TrustedProxies::default(),
            filter: Filter::default(),
            threads,
        }
    }

    /// The single engine, fed every request in the replay's order.
    fn sequential(job: &Job, names: &[String], rules: &RuleSet) -> Vec<Decision> {
        let parser = Parser::preset(Preset::Combined, TrustedProxies::default());
        let (allow, _) = Allowlist::build(&rules.allow, &SystemHost);
        let mut engine = Engine::new(rules.clone());
        engine.set_field_text(field_text(parser.clone()));
        let (mut scratch, mut cs) = (Scratch::default(), ClassifyScratch::default());
        for (source, name) in names.iter().enumerate() {
            let input = job.inputs.iter().find(|i| &i.name() == name).unwrap();
            let Input::File(path) = input else { panic!() };
            let text = std::fs::read(path).unwrap();
            for (i, line) in lines(&text).enumerate() {
                let r = parser.parse(line, &mut scratch).unwrap();
                let mut ev = rules.classify(&r, allow.contains(r.client), &mut cs);
                ev.loc = detect::rules::loc(source, i as u64 + 1);
                engine.feed(&ev, line);
            }
        }
        engine.finish();
        engine.take_decisions()
    }

    fn sharded(job: &Job, rules: &RuleSet) -> (ReplayRun, Vec<Decision>) {
        let (allow, _) = Allowlist::build(&rules.allow, &SystemHost);
        let mut out = Vec::new();
        let (run, _) = replay(job, rules, &allow, None, |d, _| out.extend(d)).unwrap();
        (run, out)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn shards_decide_as_one_engine(
            actors in proptest::collection::vec(actor(), 1..12),
            files in 1usize..5,
            threads in 2usize..5,
            jitter in proptest::collection::vec(prop_oneof![4 => Just(0u8), 1 => 1u8..4], 0..40),
        ) {
            let dir = tempfile::tempdir().unwrap();
            write_log(dir.path(), requests(&actors), files, &jitter);
            let rules = rules();
            let job = job(dir.path(), threads);
            let (run, got) = sharded(&job, &rules);
            prop_assert_eq!(run.shards, threads);
            let want = sequential(&job, &run.names, &rules);
            prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                prop_assert_eq!(g, w);
            }
        }
    }

    /// A shard must count with the log's clock, not only with its own
    /// requests' times: here B's last three requests come in a new chunk
    /// (the second file) stamped earlier than A's request that ended the
    /// first one. One engine counts them at A's time; a shard that took its
    /// clock only from its chunk (C's 00:01:20) would ban B 20 s early.
    #[test]
    fn a_shard_keeps_the_log_clock_across_chunks() {
        let config = Config::from_texts(vec![(
            "t.toml".into(),
            "default_rules = false\n[rules.burst]\nkind = \"rate\"\nkey = \"ip\"\nlimit = 3\nwindow = \"30s\"\naction = \"ban\"\nduration = \"1h\"\n"
                .into(),
        )])
        .unwrap();
        let rules = RuleSet::compile(&config).unwrap();
        let plan = ShardPlan::new(&rules, 2).0;
        let a = "10.0.0.1";
        let addr =
            |ip: &str| u128::from(ip.parse::<std::net::Ipv4Addr>().unwrap().to_ipv6_mapped());
        let b = (2..=199)
            .map(|i| format!("10.0.0.{i}"))
            .find(|ip| plan.shard_of(addr(ip)) != plan.shard_of(addr(a)))
            .unwrap();
        let line = |ip: &str, mmss: &str| {
            format!(
                "{ip} - - [10/Mar/2024:00:{mmss} +0000] \"GET /x HTTP/1.1\" 200 1 \"-\" \"t\"\n"
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let first = line(&b, "01:15") + &line(a, "01:40");
        let second = line("10.0.0.200", "01:20") + &line(&b, "00:50").repeat(3);
        std::fs::write(dir.path().join("access.log.0"), first).unwrap();
        std::fs::write(dir.path().join("access.log.1"), second).unwrap();
        let job = job(dir.path(), 2);
        let (run, got) = sharded(&job, &rules);
        assert_eq!(run.shards, 2);
        let want = sequential(&job, &run.names, &rules);
        assert_eq!(want.len(), 1, "{want:?}");
        assert_eq!(got, want);
    }

    /// A fixed log where every kind of decision happens on several shards,
    /// so the property above is known to compare something.
    #[test]
    fn a_busy_log_spreads_decisions_over_shards() {
        let actors: Vec<(u32, Actor)> = vec![
            (0, Actor::Readers { n: 300 }),
            (
                1_000,
                Actor::Flood {
                    ip: 1,
                    n: 300,
                    gap_ms: 20,
                },
            ),
            (
                2_000,
                Actor::Flood {
                    ip: 2,
                    n: 300,
                    gap_ms: 20,
                },
            ),
            (
                3_000,
                Actor::Distributed {
                    net: 7,
                    clients: 200,
                    gap_ms: 50,
                },
            ),
            (4_000, Actor::Scanner { ip: 9, n: 30 }),
            (5_000, Actor::Scanner { ip: 10, n: 30 }),
            (6_000, Actor::Rotator { ip: 3, n: 20 }),
        ];
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), requests(&actors), 3, &[0, 2, 0, 1]);
        let rules = rules();
        let job = job(dir.path(), 4);
        let (run, got) = sharded(&job, &rules);
        let want = sequential(&job, &run.names, &rules);
        assert_eq!(got, want);
        let plan = ShardPlan::new(&rules, 4).0;
        let shards: std::collections::BTreeSet<usize> =
            got.iter().map(|d| plan.shard_of(d.subject.bits)).collect();
        assert!(shards.len() >= 3, "{shards:?}");
        for rule in [
            "identical-requests",
            "flood-ip",
            "distributed-flood",
            "net-burst",
            "score:default",
        ] {
            assert!(got.iter().any(|d| d.rule == rule), "no {rule} decision");
        }
    }
}
