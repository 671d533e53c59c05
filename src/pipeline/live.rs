//! Parsing log bytes as they are appended, for `top` and `run`.

use super::{Job, parser_for_sample};
use crate::log::{self, FormatSpec, Parser, Scratch};
use crate::source::lines;

/// What [`LiveParser`] hands out, in order.
pub enum LiveEvent<'a> {
    /// A file's format was chosen (from its first lines); comes before its
    /// requests. Every format chosen so far, one parser each.
    Format(&'a [Parser]),
    /// A parsed request, its line and that line's number in this run.
    Request(&'a log::Request<'a>, &'a [u8], u64),
    /// A line that did not fit: the file, the line's number, why.
    Malformed(&'a std::path::Path, u64, String),
    /// A large read of one file, handed whole (only with
    /// [`LiveParser::bulk_from`] set): the caller parses it, in parallel if
    /// it can, and counts what did not fit.
    Lines(LiveLines<'a>),
}

/// Complete lines of one file with their parser, for a caller that takes
/// a backlog on several threads (the daemon's rules).
pub struct LiveLines<'a> {
    pub parser: &'a Parser,
    pub path: &'a std::path::Path,
    pub bytes: &'a [u8],
    /// The run's number of the first non-empty line of `bytes`; the
    /// others follow, empty lines not counted.
    pub first: u64,
    /// Where the caller adds the lines that did not fit.
    pub malformed: &'a mut u64,
}

impl LiveLines<'_> {
    /// The lines one by one, as [`LiveParser`] hands out a small read;
    /// also for a caller with nothing to gain from taking them whole.
    /// Returns how many lines there were.
    pub fn each(self, scratch: &mut Scratch, on: &mut dyn FnMut(LiveEvent<'_>)) -> u64 {
        let mut count = 0;
        for (number, line) in (self.first..).zip(lines(self.bytes).filter(|l| !l.is_empty())) {
            count += 1;
            match self.parser.parse(line, scratch) {
                Ok(r) => on(LiveEvent::Request(&r, line, number)),
                Err(m) => {
                    *self.malformed += 1;
                    on(LiveEvent::Malformed(self.path, number, m.describe(line)));
                }
            }
        }
        count
    }
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
    /// Reads of at least this many bytes go out whole, as
    /// [`LiveEvent::Lines`]; smaller ones line by line, so that one line
    /// is decided on before the next is parsed.
    pub bulk_from: Option<usize>,
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
            bulk_from: None,
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
        let lines = LiveLines {
            parser,
            path: &f.path,
            bytes,
            first: self.lines + 1,
            malformed: &mut self.malformed,
        };
        if self.bulk_from.is_some_and(|min| bytes.len() >= min) {
            self.lines += super::lines(bytes).filter(|l| !l.is_empty()).count() as u64;
            on(LiveEvent::Lines(lines));
        } else {
            self.lines += lines.each(&mut self.scratch, on);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Preset, TrustedProxies};

    fn job() -> Job {
        Job {
            inputs: Vec::new(),
            format: FormatSpec::Preset(Preset::Combined),
            json_fields: Default::default(),
            proxies: TrustedProxies::default(),
            filter: Default::default(),
            threads: 1,
        }
    }

    const LINE: &str =
        "192.0.2.1 - - [10/Mar/2024:10:00:00 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"x\"\n";

    #[test]
    fn a_large_read_goes_out_whole_and_numbering_goes_on_after_it() {
        let mut p = LiveParser::new(job());
        p.bulk_from = Some(LINE.len() * 2);
        let path = std::path::Path::new("a.log");
        let big = format!("{LINE}\n{LINE}not a line\n");
        let mut seen = Vec::new();
        p.feed(path, big.as_bytes(), &mut |e| match e {
            LiveEvent::Lines(l) => {
                seen.push(format!("lines from {}", l.first));
                l.each(&mut Scratch::default(), &mut |e| match e {
                    LiveEvent::Request(_, _, n) => seen.push(format!("request {n}")),
                    LiveEvent::Malformed(_, n, _) => seen.push(format!("malformed {n}")),
                    _ => {}
                });
            }
            LiveEvent::Format(_) => {}
            _ => seen.push("line by line".into()),
        });
        p.feed(path, LINE.as_bytes(), &mut |e| {
            if let LiveEvent::Request(_, _, n) = e {
                seen.push(format!("small read: request {n}"));
            }
        });
        assert_eq!(
            seen,
            [
                "lines from 1",
                "request 1",
                "request 2",
                "malformed 3",
                "small read: request 4"
            ]
        );
        assert_eq!((p.lines, p.malformed), (4, 1));
    }
}
