//! Runs sources → parse → analyze over a set of inputs.
//!
//! One reader thread cuts the inputs into chunks of complete lines; worker
//! threads parse and aggregate chunks into their own [`Stats`], merged at the
//! end. Chunk buffers circulate through a fixed pool, which bounds memory
//! (a few MiB in flight) whatever the size of the input and recycles the
//! buffers instead of allocating per chunk.

mod live;
mod replay;

pub use live::{LiveEvent, LiveLines, LiveParser};
pub use replay::{ReplayRun, replay};

use std::io::Read;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};

use crate::detect;
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

/// What reading the inputs met, whatever was done with the lines
/// (`report`'s analysis and `replay` share it).
#[derive(Debug, Default)]
pub struct InputSummary {
    pub lines: u64,
    pub malformed: u64,
    pub samples: Vec<MalformedSample>,
    /// The format used, by name.
    pub format: String,
    pub detection: Option<Detection>,
    /// Problems that did not stop the run (a truncated .gz, say).
    pub warnings: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Analysis {
    pub stats: Stats,
    pub input: InputSummary,
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
        input: InputSummary {
            lines: reader.lines,
            malformed: total.malformed,
            samples: total.samples.into_iter().map(|(_, s)| s).collect(),
            format: parser.name().to_string(),
            detection,
            warnings: reader.warnings,
        },
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
