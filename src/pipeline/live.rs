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
