//! Runs sources → parse → analyze over a set of inputs.
//!
//! One reader thread cuts the inputs into chunks of complete lines; worker
//! threads parse and aggregate chunks into their own [`Stats`], merged at the
//! end. Chunk buffers circulate through a fixed pool, which bounds memory
//! (a few MiB in flight) whatever the size of the input and recycles the
//! buffers instead of allocating per chunk.

use std::io::Read;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};

use crate::detect::{self, Engine, Event, RuleSet, allow::Allowlist, rules::ClassifyScratch};
use crate::log::json::JsonFields;
use crate::log::{self, Detection, FormatSpec, Parser, Scratch, TrustedProxies, format};
use crate::source::{Input, LineChunker, SourceError, lines};
use crate::stats::{Filter, Stats};

/// How many malformed lines are kept as examples.
pub const MALFORMED_SAMPLES: usize = 5;

/// What to analyze and how.
#[derive(Debug, Clone)]
pub struct Job {
    pub inputs: Vec<Input>,
    pub format: FormatSpec,
    pub json_fields: JsonFields,
    pub proxies: TrustedProxies,
    pub filter: Filter,
    pub threads: usize,
}

/// A line that did not fit the format.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MalformedSample {
    pub file: String,
    pub line: u64,
    pub reason: String,
    /// The start of the line, escaped for display.
    pub text: String,
}

#[derive(Debug, Default)]
pub struct Analysis {
    pub stats: Stats,
    pub lines: u64,
    pub malformed: u64,
    pub samples: Vec<MalformedSample>,
    /// The format used, by name.
    pub format: String,
    pub detection: Option<Detection>,
    /// Problems that did not stop the run (a truncated .gz, say).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Format(#[from] format::FormatError),
    #[error(
        "cannot recognise the log format of {input}: none of json, vhost_combined, host_main, host_combined, main, combined or common fits its first lines\n  line {line}: {reason}\n  hint: give the format with --format, --nginx-format, --apache-format or --goaccess-format"
    )]
    Undetected {
        input: String,
        line: u64,
        reason: String,
    },
}

struct Chunk {
    input: usize,
    first_line: u64,
    data: Vec<u8>,
}

/// Reads every input in order, chunk by chunk.
struct Reader {
    inputs: Vec<(String, LineChunker<Box<dyn Read + Send>>)>,
    current: usize,
    warnings: Vec<String>,
    lines: u64,
}

impl Reader {
    fn open(inputs: &[Input]) -> Result<Self, SourceError> {
        // Open everything first so a typo in the last file name fails at once.
        let mut opened = Vec::with_capacity(inputs.len());
        for input in inputs {
            opened.push((input.name(), LineChunker::new(input.open()?)));
        }
        Ok(Reader {
            inputs: opened,
            current: 0,
            warnings: Vec::new(),
            lines: 0,
        })
    }

    /// Reads up to the first chunk with a non-blank line, which decides the
    /// format; the chunks read are returned to be processed first.
    fn first_text(&mut self) -> Vec<Chunk> {
        let mut pending = Vec::new();
        while let Some(chunk) = self.next(Vec::new()) {
            let has_text = lines(&chunk.data).any(|l| !l.trim_ascii().is_empty());
            pending.push(chunk);
            if has_text {
                break;
            }
        }
        pending
    }

    fn next(&mut self, mut buf: Vec<u8>) -> Option<Chunk> {
        while let Some((name, chunker)) = self.inputs.get_mut(self.current) {
            match chunker.next_chunk(&mut buf) {
                Ok(Some(first_line)) => {
                    return Some(Chunk {
                        input: self.current,
                        first_line,
                        data: buf,
                    });
                }
                Ok(None) => {}
                Err(source) => {
                    let err = SourceError::Read {
                        name: name.clone(),
                        line: chunker.next_line() - 1,
                        source,
                    };
                    self.warnings
                        .push(format!("{err}; the lines before it are counted"));
                }
            }
            self.lines += self.inputs[self.current].1.next_line() - 1;
            self.current += 1;
        }
        None
    }
}

/// Per-worker results.
#[derive(Default)]
struct Partial {
    stats: Stats,
    malformed: u64,
    samples: Vec<(usize, MalformedSample)>,
}

impl Partial {
    /// Keeps the earliest malformed lines; describes a line only when it is kept.
    fn offer_sample(
        &mut self,
        input: usize,
        names: &[String],
        line_no: u64,
        describe: impl FnOnce() -> (String, String),
    ) {
        let key = (input, line_no);
        if self.samples.len() >= MALFORMED_SAMPLES
            && self.samples.last().is_some_and(|(i, s)| (*i, s.line) < key)
        {
            return;
        }
        let (reason, text) = describe();
        let sample = MalformedSample {
            file: names.get(input).cloned().unwrap_or_default(),
            line: line_no,
            reason,
            text,
        };
        let at = self.samples.partition_point(|(i, s)| (*i, s.line) < key);
        self.samples.insert(at, (input, sample));
        self.samples.truncate(MALFORMED_SAMPLES);
    }

    fn merge(&mut self, o: Partial) {
        self.stats.merge(o.stats);
        self.malformed += o.malformed;
        self.samples.extend(o.samples);
        self.samples.sort_by_key(|(i, s)| (*i, s.line));
        self.samples.truncate(MALFORMED_SAMPLES);
    }
}

fn process_chunk(
    parser: &Parser,
    filter: &Filter,
    chunk: &Chunk,
    names: &[String],
    scratch: &mut Scratch,
    out: &mut Partial,
) {
    let filtering = !filter.is_empty();
    for (i, line) in lines(&chunk.data).enumerate() {
        if line.is_empty() {
            continue;
        }
        match parser.parse(line, scratch) {
            Ok(r) => {
                if filtering && !filter.matches(&r) {
                    out.stats.filtered += 1;
                } else {
                    out.stats.record(&r);
                }
            }
            Err(e) => {
                out.malformed += 1;
                out.offer_sample(chunk.input, names, chunk.first_line + i as u64, || {
                    let excerpt = &line[..line.len().min(120)];
                    (e.describe(line), log::parse::escape_for_display(excerpt))
                });
            }
        }
    }
}

fn build_parser(
    job: &Job,
    first_lines: Option<&Chunk>,
    names: &[String],
) -> Result<(Parser, Option<Detection>), PipelineError> {
    let proxies = job.proxies.clone();
    match &job.format {
        FormatSpec::Preset(log::Preset::Json) => {
            Ok((Parser::json(job.json_fields.clone(), proxies), None))
        }
        FormatSpec::Preset(p) => Ok((Parser::preset(*p, proxies), None)),
        FormatSpec::Custom {
            dialect,
            format,
            date_format,
            time_format,
        } => {
            let f = format::compile(
                *dialect,
                format,
                date_format.as_deref(),
                time_format.as_deref(),
            )?;
            Ok((Parser::text(f, proxies), None))
        }
        FormatSpec::Auto => {
            let Some(chunk) = first_lines else {
                // No input at all: any parser will do.
                return Ok((Parser::preset(log::Preset::Combined, proxies), None));
            };
            match log::detect(lines(&chunk.data)) {
                Some(d) => {
                    let parser = if d.preset == log::Preset::Json {
                        Parser::json(job.json_fields.clone(), proxies)
                    } else {
                        Parser::preset(d.preset, proxies)
                    };
                    let parser = if d.syslog {
                        parser.behind_syslog()
                    } else {
                        parser
                    };
                    Ok((parser, Some(d)))
                }
                None => {
                    let combined = Parser::preset(log::Preset::Combined, TrustedProxies::default());
                    let mut scratch = Scratch::default();
                    let (n, line) = lines(&chunk.data)
                        .enumerate()
                        .find(|(_, l)| !l.is_empty())
                        .unwrap_or((0, &b""[..]));
                    let reason = match combined.parse(line, &mut scratch) {
                        Err(e) => format!("as combined: {}", e.describe(line)),
                        Ok(_) => "unrecognised".to_string(),
                    };
                    Err(PipelineError::Undetected {
                        input: names.get(chunk.input).cloned().unwrap_or_default(),
                        line: chunk.first_line + n as u64,
                        reason,
                    })
                }
            }
        }
    }
}

/// The parser for a job whose first lines are `sample` (complete lines):
/// what auto-detection would choose on them, or the format asked for.
pub fn parser_for_sample(
    job: &Job,
    sample: &[u8],
    name: &str,
) -> Result<(Parser, Option<Detection>), PipelineError> {
    let chunk = Chunk {
        input: 0,
        first_line: 1,
        data: sample.to_vec(),
    };
    build_parser(job, Some(&chunk), &[name.to_string()])
}

/// Runs the job to completion.
pub fn analyze(job: &Job) -> Result<Analysis, PipelineError> {
    let mut reader = Reader::open(&job.inputs)?;
    let names: Vec<String> = job.inputs.iter().map(Input::name).collect();
    let threads = job.threads.max(1);

    let mut pending = reader.first_text();
    let (parser, detection) = build_parser(job, pending.last(), &names)?;

    let in_flight = threads * 2 + 2;
    let (work_tx, work_rx): (SyncSender<Chunk>, Receiver<Chunk>) = sync_channel(in_flight);
    let (pool_tx, pool_rx) = channel::<Vec<u8>>();
    for _ in 0..in_flight {
        let _ = pool_tx.send(Vec::new());
    }
    let work_rx = Mutex::new(work_rx);

    let mut total = Partial::default();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (parser, filter, names, work_rx, pool_tx) =
                    (&parser, &job.filter, &names, &work_rx, pool_tx.clone());
                scope.spawn(move || {
                    let mut part = Partial::default();
                    let mut scratch = Scratch::default();
                    loop {
                        let next = match work_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => break,
                        };
                        let Ok(chunk) = next else { break };
                        process_chunk(parser, filter, &chunk, names, &mut scratch, &mut part);
                        let _ = pool_tx.send(chunk.data);
                    }
                    part
                })
            })
            .collect();
        drop(pool_tx);

        for chunk in pending.drain(..) {
            if work_tx.send(chunk).is_err() {
                break;
            }
        }
        while let Ok(buf) = pool_rx.recv() {
            let Some(chunk) = reader.next(buf) else { break };
            if work_tx.send(chunk).is_err() {
                break;
            }
        }
        drop(work_tx);
        for w in workers {
            // A worker only panics on a bug; surface it rather than hide it.
            match w.join() {
                Ok(part) => total.merge(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });

    Ok(Analysis {
        stats: total.stats,
        lines: reader.lines,
        malformed: total.malformed,
        samples: total.samples.into_iter().map(|(_, s)| s).collect(),
        format: parser.name().to_string(),
        detection,
        warnings: reader.warnings,
    })
}

/// One chunk turned into events by a worker, handed to the engine in order.
struct Batch {
    seq: u64,
    data: Vec<u8>,
    events: Vec<Event>,
    malformed: u64,
    samples: Vec<(usize, MalformedSample)>,
}

/// What a replay saw, besides the decisions it streamed.
#[derive(Debug)]
pub struct ReplayRun {
    pub lines: u64,
    pub malformed: u64,
    pub samples: Vec<MalformedSample>,
    pub format: String,
    pub detection: Option<Detection>,
    pub warnings: Vec<String>,
    /// Inputs in the order replayed (oldest first).
    pub names: Vec<String>,
    pub first: Option<i64>,
    pub last: Option<i64>,
}

fn classify_chunk(
    parser: &Parser,
    rules: &RuleSet,
    allow: &Allowlist,
    chunk: &Chunk,
    names: &[String],
    scratch: &mut (Scratch, ClassifyScratch),
    batch: &mut Batch,
) {
    let base = chunk.data.as_ptr() as usize;
    let mut part = Partial::default();
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
                batch.events.push(ev);
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

/// Runs the rules over the inputs in log time. Workers parse and classify
/// chunks in parallel; `engine` sees the events in input order, and
/// `on_batch` is called after each chunk with the input names in replay
/// order (to stream decisions out).
pub fn replay(
    job: &Job,
    rules: &RuleSet,
    allow: &Allowlist,
    engine: &mut Engine,
    mut on_batch: impl FnMut(&mut Engine, &[String]),
) -> Result<ReplayRun, PipelineError> {
    let mut inputs = job.inputs.clone();
    let mut reader = Reader::open(&inputs)?;
    let mut names: Vec<String> = inputs.iter().map(Input::name).collect();
    let mut pending = reader.first_text();
    let (parser, detection) = build_parser(job, pending.last(), &names)?;
    engine.set_field_text(field_text(parser.clone()));
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
    let in_flight = threads * 2 + 2;
    let (work_tx, work_rx) = sync_channel::<(u64, Chunk, Vec<Event>)>(in_flight);
    let (done_tx, done_rx) = channel::<Batch>();
    let (pool_tx, pool_rx) = channel::<(Vec<u8>, Vec<Event>)>();
    for _ in 0..in_flight {
        let _ = pool_tx.send((Vec::new(), Vec::new()));
    }
    let work_rx = Mutex::new(work_rx);
    let mut malformed = 0;
    let mut samples: Vec<(usize, MalformedSample)> = Vec::new();
    let (mut first, mut last) = (None, None);

    let reader = std::thread::scope(|scope| {
        for _ in 0..threads {
            let (parser, names, work_rx, done_tx) = (&parser, &names, &work_rx, done_tx.clone());
            scope.spawn(move || {
                let mut scratch = (Scratch::default(), ClassifyScratch::default());
                loop {
                    let next = match work_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => break,
                    };
                    let Ok((seq, chunk, mut events)) = next else {
                        break;
                    };
                    events.clear();
                    let mut batch = Batch {
                        seq,
                        data: Vec::new(),
                        events,
                        malformed: 0,
                        samples: Vec::new(),
                    };
                    classify_chunk(
                        parser,
                        rules,
                        allow,
                        &chunk,
                        names,
                        &mut scratch,
                        &mut batch,
                    );
                    batch.data = chunk.data;
                    if done_tx.send(batch).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);

        // The reader runs on its own thread so reading overlaps the engine.
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
        let mut waiting: std::collections::BTreeMap<u64, Batch> = Default::default();
        while let Ok(batch) = done_rx.recv() {
            waiting.insert(batch.seq, batch);
            while let Some(batch) = waiting.remove(&next_seq) {
                next_seq += 1;
                for ev in &batch.events {
                    let start = ev.line_start as usize;
                    let line = batch
                        .data
                        .get(start..start + ev.line_len as usize)
                        .unwrap_or(b"");
                    engine.feed(ev, line);
                    first.get_or_insert(ev.time);
                    last = Some(ev.time);
                }
                malformed += batch.malformed;
                samples.extend(batch.samples);
                on_batch(engine, &names);
                let _ = pool_tx.send((batch.data, batch.events));
            }
        }
        drop(pool_tx);
        match reader_thread.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    engine.finish();
    samples.sort_by_key(|(i, s)| (*i, s.line));
    samples.truncate(MALFORMED_SAMPLES);
    warnings.extend(reader.warnings.iter().cloned());
    Ok(ReplayRun {
        lines: reader.lines,
        malformed,
        samples: samples.into_iter().map(|(_, s)| s).collect(),
        format: parser.name().to_string(),
        detection,
        warnings,
        names,
        first,
        last,
    })
}

/// A [`FieldText`] for the engine: re-parses a line (only when a decision
/// needs words for its reason) and returns a field for display.
pub fn field_text(parser: Parser) -> detect::engine::FieldText {
    field_text_of(vec![parser])
}

/// `field_text` over several formats (access and error logs followed
/// together): the first parser that reads the line gives the text.
pub fn field_text_of(parsers: Vec<Parser>) -> detect::engine::FieldText {
    let mut scratch = Scratch::default();
    Box::new(move |line, field| {
        // Reasons are rare: parsing the line twice costs nothing that shows.
        let i = parsers
            .iter()
            .position(|p| p.parse(line, &mut scratch).is_ok())?;
        let r = parsers[i].parse(line, &mut scratch).ok()?;
        let target = detect::rules::target_of(&r);
        let text = detect::rules::field_text(&r, field, target);
        Some(log::parse::escape_for_display(&text[..text.len().min(200)]))
    })
}

/// What [`LiveParser`] hands out, in order.
pub enum LiveEvent<'a> {
    /// A file's format was chosen (from its first lines); comes before its
    /// requests. Every format chosen so far, one parser each.
    Format(&'a [Parser]),
    /// A parsed request, its line and that line's number in this run.
    Request(&'a log::Request<'a>, &'a [u8], u64),
    /// A line that did not fit: the file, the line's number, why.
    Malformed(&'a std::path::Path, u64, String),
}

/// Parses log bytes as they are appended (`top`, `run`). Each file has a
/// format of its own, so access and error logs are followed side by side.
/// With `--format auto` a file's parser is chosen from a sample of its
/// first lines, held until there are enough (or a second has passed).
pub struct LiveParser {
    job: Job,
    files: Vec<LiveFile>,
    scratch: Scratch,
    pub lines: u64,
    pub malformed: u64,
    /// Format detection notes and errors, for the caller to show.
    pub notes: Vec<String>,
    /// Why no format could be chosen for a file, while none could: its
    /// lines are not being decided on.
    pub format_error: Option<String>,
}

/// One followed file's format, or the lines waiting for it.
struct LiveFile {
    path: std::path::PathBuf,
    parser: Option<Parser>,
    pending: Vec<u8>,
    /// When the oldest line waiting for the format arrived.
    pending_since: Option<std::time::Instant>,
}

/// Lines (or bytes) after which the format is guessed even if some of
/// them fit no known format.
const SAMPLE_LINES: usize = 20;
const SAMPLE_BYTES: usize = 64 << 10;

impl LiveParser {
    pub fn new(job: Job) -> LiveParser {
        LiveParser {
            job,
            files: Vec::new(),
            scratch: Scratch::default(),
            lines: 0,
            malformed: 0,
            notes: Vec::new(),
            format_error: None,
        }
    }

    /// How long the longest-waiting lines have waited for a format.
    pub fn waiting_for(&self) -> Option<std::time::Duration> {
        self.files
            .iter()
            .filter_map(|f| f.pending_since.map(|t| t.elapsed()))
            .max()
    }

    /// Whether some file's format is known.
    pub fn format_known(&self) -> bool {
        self.files.iter().any(|f| f.parser.is_some())
    }

    /// The parsers chosen so far, one per format.
    pub fn parsers(&self) -> Vec<Parser> {
        let mut out: Vec<Parser> = Vec::new();
        for p in self.files.iter().filter_map(|f| f.parser.as_ref()) {
            if !out.iter().any(|o| o.name() == p.name()) {
                out.push(p.clone());
            }
        }
        out
    }

    fn file(&mut self, path: &std::path::Path) -> usize {
        match self.files.iter().position(|f| f.path == path) {
            Some(i) => i,
            None => {
                self.files.push(LiveFile {
                    path: path.to_path_buf(),
                    parser: None,
                    pending: Vec::new(),
                    pending_since: None,
                });
                self.files.len() - 1
            }
        }
    }

    /// Feeds complete lines read from `path`.
    pub fn feed(
        &mut self,
        path: &std::path::Path,
        bytes: &[u8],
        on: &mut dyn FnMut(LiveEvent<'_>),
    ) {
        if bytes.is_empty() {
            return;
        }
        let i = self.file(path);
        if self.files[i].parser.is_some() {
            self.parse(i, bytes, on);
            return;
        }
        let f = &mut self.files[i];
        f.pending.extend_from_slice(bytes);
        f.pending_since.get_or_insert_with(std::time::Instant::now);
        // Only auto-detection needs a sample; a named format starts at
        // once, and so does auto-detection when every line so far fits one
        // format (the most specific that fits wins): a daemon's first
        // decision must not wait for twenty lines.
        let auto = matches!(self.job.format, FormatSpec::Auto);
        if auto && f.pending.len() < SAMPLE_BYTES {
            let sample_lines = lines(&f.pending).filter(|l| !l.is_empty()).count();
            let all_fit =
                crate::log::detect(lines(&f.pending)).is_some_and(|d| d.parsed == d.sampled);
            if sample_lines < SAMPLE_LINES && !all_fit {
                return;
            }
        }
        self.choose(i, on);
    }

    /// Chooses the formats of the files waiting, from what has come so
    /// far, however little: called when lines have waited long enough.
    pub fn flush_sample(&mut self, on: &mut dyn FnMut(LiveEvent<'_>)) {
        for i in 0..self.files.len() {
            if self.files[i].parser.is_none() && !self.files[i].pending.is_empty() {
                self.choose(i, on);
            }
        }
    }

    fn choose(&mut self, i: usize, on: &mut dyn FnMut(LiveEvent<'_>)) {
        let f = &mut self.files[i];
        let name = f.path.display().to_string();
        match parser_for_sample(&self.job, &f.pending, &name) {
            Ok((p, d)) => {
                if let Some(d) = d {
                    self.notes.push(if self.files.len() > 1 {
                        format!("detected log format '{}' for {name}", d.name())
                    } else {
                        format!("detected log format '{}'", d.name())
                    });
                }
                let f = &mut self.files[i];
                f.parser = Some(p);
                f.pending_since = None;
                let pending = std::mem::take(&mut f.pending);
                self.format_error = None;
                on(LiveEvent::Format(&self.parsers()));
                self.parse(i, &pending, on);
            }
            Err(e) => {
                self.notes.push(e.to_string());
                self.format_error = Some(e.to_string());
                f.pending.clear();
                f.pending_since = None;
            }
        }
    }

    fn parse(&mut self, i: usize, bytes: &[u8], on: &mut dyn FnMut(LiveEvent<'_>)) {
        let f = &self.files[i];
        let Some(parser) = &f.parser else { return };
        for line in lines(bytes) {
            if line.is_empty() {
                continue;
            }
            self.lines += 1;
            match parser.parse(line, &mut self.scratch) {
                Ok(r) => on(LiveEvent::Request(&r, line, self.lines)),
                Err(m) => {
                    self.malformed += 1;
                    on(LiveEvent::Malformed(&f.path, self.lines, m.describe(line)));
                }
            }
        }
    }
}
