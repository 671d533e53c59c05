//! The rule engine as a detector: each request from the log source is
//! classified (which rules concern it) and fed to the sequential engine;
//! the decisions it makes are taken by the runtime after each read.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::channel;

use crate::detect::allow::Allowlist;
use crate::detect::rules::{ClassifyScratch, Event};
use crate::detect::{Engine, RuleSet};
use crate::enforce::ledger::Ledger;
use crate::log::{Parser, Request, Scratch};
use crate::pipeline::{LiveEvent, LiveLines};
use crate::source::lines;

use super::super::sources::machine::LogFigures;

/// Malformed lines logged one by one; the rest are counted in `status`.
const MALFORMED_SHOWN: u64 = 20;

pub struct RuleDetector {
    pub set: RuleSet,
    pub allow: Allowlist,
    pub engine: Engine,
    scratch: ClassifyScratch,
    /// For the lines of a bulk read: this thread's parse scratch, and one
    /// pair per helper thread (kept, so their memos stay warm).
    parse_scratch: Scratch,
    helper_scratch: Vec<(Scratch, ClassifyScratch)>,
    /// The format being read, for `status`.
    pub format: Option<String>,
    malformed_shown: u64,
    /// Requests seen, for the guards' `req_rate`, `status_5xx_rate`, `lag`.
    pub figures: LogFigures,
    /// Verifies clients claiming a search engine's crawler.
    pub crawlers: Option<crate::detect::crawlers::Verifier>,
    /// `[farm]`: farm rules count every node's requests (a reloaded
    /// engine shares them too).
    pub share_counts: bool,
}

/// Counts a request's figures for the guards.
fn count(figures: &mut LogFigures, status: u16, time: i64) {
    figures.requests += 1;
    figures.status_5xx += u64::from((500..600).contains(&status));
    figures.newest_ms = figures.newest_ms.max(time);
}

/// A request from the log, for the live view as it is counted.
pub type Record<'r> = Option<&'r mut dyn FnMut(&Request<'_>)>;

impl RuleDetector {
    pub fn new(set: RuleSet, allow: Allowlist, engine: Engine, format: Option<String>) -> Self {
        let helpers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_THREADS)
            - 1;
        RuleDetector {
            set,
            allow,
            engine,
            scratch: ClassifyScratch::default(),
            parse_scratch: Scratch::default(),
            helper_scratch: (0..helpers).map(|_| Default::default()).collect(),
            format,
            malformed_shown: 0,
            figures: LogFigures::default(),
            crawlers: None,
            share_counts: false,
        }
    }

    /// Parses and classifies a backlog on `threads` threads, this one
    /// included (the default: one per core, at most four).
    pub fn set_threads(&mut self, threads: usize) {
        self.helper_scratch
            .resize_with(threads.clamp(1, MAX_THREADS) - 1, Default::default);
    }

    /// Takes one event of the log source; `record` sees each request.
    pub fn on(&mut self, event: LiveEvent<'_>, record: Record<'_>) {
        match event {
            LiveEvent::Format(parsers) => {
                self.engine
                    .set_field_text(crate::pipeline::field_text_of(parsers.to_vec()));
            }
            LiveEvent::Request(r, line, number) => {
                if let Some(record) = record {
                    record(r);
                }
                count(&mut self.figures, r.status, r.time);
                let classify = ClassifyRequest {
                    set: &self.set,
                    allow: &self.allow,
                    crawlers: self.crawlers.as_ref(),
                };
                let mut ev = classify.event(r, &mut self.scratch);
                ev.loc = crate::detect::rules::loc(0, number);
                self.engine.feed(&ev, line);
            }
            LiveEvent::Malformed(path, number, reason) => self.malformed(path, number, &reason),
            LiveEvent::Lines(lines) => self.bulk(lines, record),
        }
    }

    fn malformed(&mut self, path: &std::path::Path, number: u64, reason: &str) {
        self.malformed_shown += 1;
        if self.malformed_shown <= MALFORMED_SHOWN {
            tracing::warn!(file = %path.display(), line = number, "malformed log line: {reason}");
        }
    }

    /// A backlog: pieces are parsed and classified on this thread and the
    /// helpers, whichever is free, and fed to the engine in log order as
    /// they are ready, so the engine (one, sequential) decides exactly as
    /// line by line.
    fn bulk(&mut self, lines: LiveLines<'_>, mut record: Record<'_>) {
        let pieces = cut(lines.bytes, PIECE);
        let helpers = self
            .helper_scratch
            .len()
            .min(pieces.len().saturating_sub(1));
        let mut helper_scratch = std::mem::take(&mut self.helper_scratch);
        let next = AtomicUsize::new(0);
        let (tx, rx) = channel::<(usize, Piece)>();
        let classify = Classify {
            parser: lines.parser,
            set: &self.set,
            allow: &self.allow,
            crawlers: self.crawlers.as_ref(),
        };
        let mut number = lines.first;
        let mut malformed = Vec::new();
        std::thread::scope(|scope| {
            for scratch in helper_scratch.iter_mut().take(helpers) {
                let (tx, next, pieces, classify) = (tx.clone(), &next, &pieces, &classify);
                scope.spawn(move || {
                    // A panic here (a bug) loses no line: the pieces this
                    // thread did not deliver are classified by the caller.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(range) = pieces.get(i) else { break };
                            if tx
                                .send((i, classify.piece(lines.bytes, range.clone(), scratch)))
                                .is_err()
                            {
                                break;
                            }
                        }
                    }));
                });
            }
            drop(tx);
            let mut ready: Vec<Option<Piece>> = pieces.iter().map(|_| None).collect();
            let mut own = (
                std::mem::take(&mut self.parse_scratch),
                std::mem::take(&mut self.scratch),
            );
            let mut helpers_gone = helpers == 0;
            for fed in 0..pieces.len() {
                let piece = loop {
                    if let Some(p) = ready.get_mut(fed).and_then(Option::take) {
                        break p;
                    }
                    while let Ok((i, p)) = rx.try_recv() {
                        if let Some(slot) = ready.get_mut(i) {
                            *slot = Some(p);
                        }
                    }
                    if ready.get(fed).is_some_and(Option::is_some) {
                        continue;
                    }
                    // Not ready: classify the next piece nobody took (or,
                    // with the helpers gone, the one awaited).
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if let Some(range) = pieces.get(i) {
                        ready[i] = Some(classify.piece(lines.bytes, range.clone(), &mut own));
                        continue;
                    }
                    if helpers_gone {
                        break classify.piece(lines.bytes, pieces[fed].clone(), &mut own);
                    }
                    match rx.recv() {
                        Ok((i, p)) => {
                            if let Some(slot) = ready.get_mut(i) {
                                *slot = Some(p);
                            }
                        }
                        Err(_) => helpers_gone = true,
                    }
                };
                for mut ev in piece.events {
                    let line = lines
                        .bytes
                        .get(ev.line_start as usize..ev.line_start as usize + ev.line_len as usize)
                        .unwrap_or_default();
                    if let Some(record) = record.as_mut() {
                        // The live view counts from the request itself: parsed
                        // again here, only while someone watches.
                        if let Ok(r) = lines.parser.parse(line, &mut own.0) {
                            record(&r);
                        }
                    }
                    count(&mut self.figures, ev.status, ev.time);
                    ev.loc = crate::detect::rules::loc(0, number + ev.loc);
                    self.engine.feed(&ev, line);
                }
                malformed.extend(
                    piece
                        .malformed
                        .into_iter()
                        .map(|(nth, why)| (number + nth, why)),
                );
                number += piece.lines;
            }
            (self.parse_scratch, self.scratch) = own;
        });
        self.helper_scratch = helper_scratch;
        *lines.malformed += malformed.len() as u64;
        for (number, why) in malformed {
            self.malformed(lines.path, number, &why);
        }
    }
}

/// Threads that parse and classify a backlog, this one included.
const MAX_THREADS: usize = 4;
/// What a thread takes at a time from a bulk read: about 300 lines.
const PIECE: usize = 64 << 10;

/// A piece of a bulk read, parsed and classified. Each event's `loc` holds
/// its line's place among the piece's non-empty lines until it is fed.
struct Piece {
    events: Vec<Event>,
    malformed: Vec<(u64, String)>,
    lines: u64,
}

/// What classifying a request needs, shared by the threads of a bulk read.
struct Classify<'a> {
    parser: &'a Parser,
    set: &'a RuleSet,
    allow: &'a Allowlist,
    crawlers: Option<&'a crate::detect::crawlers::Verifier>,
}

impl Classify<'_> {
    fn piece(
        &self,
        bytes: &[u8],
        range: Range<usize>,
        scratch: &mut (Scratch, ClassifyScratch),
    ) -> Piece {
        let mut piece = Piece {
            events: Vec::new(),
            malformed: Vec::new(),
            lines: 0,
        };
        let base = bytes.as_ptr() as usize;
        let request = ClassifyRequest {
            set: self.set,
            allow: self.allow,
            crawlers: self.crawlers,
        };
        for line in lines(bytes.get(range).unwrap_or_default()).filter(|l| !l.is_empty()) {
            let nth = piece.lines;
            piece.lines += 1;
            match self.parser.parse(line, &mut scratch.0) {
                Ok(r) => {
                    let mut ev = request.event(&r, &mut scratch.1);
                    ev.loc = nth;
                    ev.line_start = (line.as_ptr() as usize - base) as u32;
                    ev.line_len = line.len() as u32;
                    piece.events.push(ev);
                }
                Err(m) => piece.malformed.push((nth, m.describe(line))),
            }
        }
        piece
    }
}

/// Classifies one request: its rules, allowlisted or not, crawler or not.
struct ClassifyRequest<'a> {
    set: &'a RuleSet,
    allow: &'a Allowlist,
    crawlers: Option<&'a crate::detect::crawlers::Verifier>,
}

impl ClassifyRequest<'_> {
    fn event(&self, r: &Request<'_>, scratch: &mut ClassifyScratch) -> Event {
        let allowed = self.allow.contains(r.client);
        let crawler = self
            .crawlers
            .map_or(Default::default(), |v| v.check(r.client, r.user_agent));
        self.set.classify_with(r, allowed, crawler, scratch)
    }
}

/// Cuts `bytes` (complete lines) into ranges of about `size` bytes that
/// end at line ends.
fn cut(bytes: &[u8], size: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        let end = match bytes.get(start + size..) {
            Some(rest) => memchr::memchr(b'\n', rest).map_or(bytes.len(), |k| start + size + k + 1),
            None => bytes.len(),
        };
        out.push(start..end);
        start = end;
    }
    out
}

/// A rule engine that knows the ledger: bans in force are not decided
/// again, and past bans count for escalation (after a restart or reload).
pub fn seeded_engine(
    set: &RuleSet,
    ledger: &Ledger,
    now: i64,
) -> Result<Engine, crate::enforce::ledger::LedgerError> {
    let mut engine = Engine::new(set.clone());
    for b in ledger.active(now)? {
        engine.restore_ban(b.subject, b.expires_ms);
    }
    for (subject, count, last) in ledger.history(now.saturating_sub(set.escalation.remember_ms))? {
        engine.remember_bans(subject, count, last);
    }
    Ok(engine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Config;
    use crate::detect::allow::SystemHost;
    use crate::log::{Preset, TrustedProxies};
    use std::fmt::Write as _;

    /// About 330 KB: a flood, a scanner, readers, a few malformed and
    /// empty lines, over a minute.
    fn log() -> Vec<u8> {
        let mut text = String::new();
        for i in 0..2400u32 {
            let s = i / 40;
            let (ip, path, status) = match i % 6 {
                0..=2 => (
                    "198.51.100.7".to_string(),
                    format!("/search?q={}", i % 9),
                    200,
                ),
                3 => ("203.0.113.9".to_string(), format!("/probe/{i}.php"), 404),
                _ => (
                    format!("192.0.2.{}", i % 40 + 1),
                    format!("/page/{}", i % 5),
                    200,
                ),
            };
            if i % 500 == 250 {
                text.push_str("this is not a log line\n\n");
            }
            let _ = writeln!(
                text,
                "{ip} - - [10/Mar/2024:10:{:02}:{:02} +0000] \"GET {path} HTTP/1.1\" {status} 512 \"-\" \"Mozilla/5.0 (X11; Linux x86_64) Firefox/124.0\"",
                s / 60,
                s % 60
            );
        }
        text.into_bytes()
    }

    fn detector(threads: usize) -> RuleDetector {
        let config = Config::from_texts(vec![("t.toml".into(), String::new())]).unwrap();
        let set = RuleSet::compile(&config).unwrap();
        let (allow, _) = Allowlist::build(&set.allow, &SystemHost);
        let engine = Engine::new(set.clone());
        let mut d = RuleDetector::new(set, allow, engine, None);
        d.set_threads(threads);
        d
    }

    /// Decisions, figures, malformed lines and requests recorded.
    type Outcome = (Vec<crate::detect::Decision>, (u64, u64, i64), u64, u64);

    fn run(bulk: bool, threads: usize, bytes: &[u8]) -> Outcome {
        let parser = Parser::preset(Preset::Combined, TrustedProxies::default());
        let mut d = detector(threads);
        let (mut malformed, mut recorded) = (0, 0);
        let path = std::path::Path::new("access.log");
        let lines = LiveLines {
            parser: &parser,
            path,
            bytes,
            first: 1,
            malformed: &mut malformed,
        };
        let mut record = |_: &Request<'_>| recorded += 1;
        if bulk {
            d.on(LiveEvent::Lines(lines), Some(&mut record));
        } else {
            lines.each(&mut Scratch::default(), &mut |e| d.on(e, Some(&mut record)));
        }
        d.engine.finish();
        let f = d.figures;
        (
            d.engine.take_decisions(),
            (f.requests, f.status_5xx, f.newest_ms),
            malformed,
            recorded,
        )
    }

    #[test]
    fn a_backlog_on_several_threads_decides_as_line_by_line() {
        let bytes = log();
        assert!(cut(&bytes, PIECE).len() >= 3, "several pieces");
        let one = run(false, 1, &bytes);
        assert!(one.0.len() >= 2, "the flood and the scanner: {:?}", one.0);
        assert_eq!(one.2, 5);
        assert_eq!(one.3, 2400);
        for threads in [1, 2, 4] {
            assert_eq!(run(true, threads, &bytes), one, "{threads} threads");
        }
    }

    #[test]
    fn pieces_end_at_line_ends_and_cover_everything() {
        let bytes = log();
        let pieces = cut(&bytes, 1000);
        assert_eq!(pieces.first().map(|r| r.start), Some(0));
        assert_eq!(pieces.last().map(|r| r.end), Some(bytes.len()));
        for w in pieces.windows(2) {
            assert_eq!(w[0].end, w[1].start);
            assert_eq!(bytes[w[0].end - 1], b'\n');
        }
        assert_eq!(cut(b"", 1000), Vec::<Range<usize>>::new());
        assert_eq!(cut(b"a\nb", 1), vec![0..2, 2..3]);
    }
}
