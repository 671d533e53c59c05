//! Source stage: where log bytes come from (files, gzip files, stdin), cut
//! into chunks that hold only complete lines, each chunk knowing the number
//! of its first line.

pub mod blocklist;
pub mod conns;
pub mod follow;
pub mod packets;
pub mod system;
pub mod wake;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;

use crate::log::parse::MAX_LINE;

/// Bytes per chunk handed to a parser thread: large enough that per-chunk
/// costs vanish, small enough that a few in flight keep memory low.
pub const CHUNK_SIZE: usize = 1 << 20;

/// A named input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    File(PathBuf),
    Stdin,
}

impl Input {
    pub fn from_arg(arg: &str) -> Input {
        if arg == "-" {
            Input::Stdin
        } else {
            Input::File(PathBuf::from(arg))
        }
    }

    pub fn name(&self) -> String {
        match self {
            Input::File(p) => p.display().to_string(),
            Input::Stdin => "<stdin>".to_string(),
        }
    }

    /// Opens the input; gzip is recognised by its magic bytes, not the name,
    /// so `access.log.2.gz` and a renamed compressed file both work.
    pub fn open(&self) -> Result<Box<dyn Read + Send>, SourceError> {
        let err = |source| SourceError::Open {
            name: self.name(),
            source,
        };
        let mut reader: BufReader<Box<dyn Read + Send>> = match self {
            Input::File(p) => {
                if p.is_dir() {
                    return Err(err(io::Error::other("it is a directory")));
                }
                BufReader::with_capacity(64 * 1024, Box::new(File::open(p).map_err(err)?))
            }
            Input::Stdin => BufReader::with_capacity(64 * 1024, Box::new(io::stdin())),
        };
        let head = reader.fill_buf().map_err(err)?;
        if head.starts_with(&[0x1f, 0x8b]) {
            Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
        } else {
            Ok(Box::new(reader))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open {name}: {source}")]
    Open { name: String, source: io::Error },
    #[error("{name}: read failed after line {line}: {source}")]
    Read {
        name: String,
        line: u64,
        source: io::Error,
    },
}

/// Cuts a byte stream into chunks of complete lines.
///
/// A line longer than a whole chunk is cut down to `MAX_LINE + 1` bytes
/// (enough for the parser to reject it as too long) and the rest of it is
/// skipped, so a hostile endless line costs bounded memory and still counts
/// as exactly one line. The last line may lack its newline.
pub struct LineChunker<R> {
    reader: R,
    carry: Vec<u8>,
    next_line: u64,
    eof: bool,
    /// A read error met after some bytes of a chunk were read: those bytes
    /// are handed out first, the error on the next call.
    pending_error: Option<io::Error>,
    chunk_size: usize,
}

impl<R: Read> LineChunker<R> {
    pub fn new(reader: R) -> Self {
        Self::with_chunk_size(reader, CHUNK_SIZE)
    }

    /// Smaller chunks, for tests of chunk boundaries. Lines longer than a
    /// chunk are only detected reliably when `chunk_size > MAX_LINE`.
    pub fn with_chunk_size(reader: R, chunk_size: usize) -> Self {
        LineChunker {
            reader,
            carry: Vec::new(),
            next_line: 1,
            eof: false,
            pending_error: None,
            chunk_size,
        }
    }

    /// The number of the first line not yet handed out.
    pub fn next_line(&self) -> u64 {
        self.next_line
    }

    /// Fills `buf` with the next lines; returns the number of the first one,
    /// or `None` at the end of the stream.
    pub fn next_chunk(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<u64>> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        buf.clear();
        buf.append(&mut self.carry);
        while !self.eof && buf.len() < self.chunk_size {
            let want = self.chunk_size - buf.len();
            buf.reserve(want);
            // Into the spare capacity: zeroing the chunk before each read,
            // as `resize` does, wrote every byte of the log twice.
            match (&mut self.reader).take(want as u64).read_to_end(buf) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if buf.is_empty() {
                        return Err(e);
                    }
                    self.pending_error = Some(e);
                    self.eof = true;
                }
            }
        }
        if buf.is_empty() {
            return Ok(None);
        }
        if !self.eof {
            match memchr::memrchr(b'\n', buf) {
                Some(i) => {
                    self.carry.extend_from_slice(&buf[i + 1..]);
                    buf.truncate(i + 1);
                }
                None => {
                    buf.truncate(MAX_LINE + 1);
                    buf.push(b'\n');
                    self.skip_rest_of_line()?;
                }
            }
        }
        let mut lines = memchr::memchr_iter(b'\n', buf).count() as u64;
        if buf.last() != Some(&b'\n') {
            lines += 1;
        }
        let first = self.next_line;
        self.next_line += lines;
        Ok(Some(first))
    }

    fn skip_rest_of_line(&mut self) -> io::Result<()> {
        let mut scratch = vec![0u8; 64 * 1024];
        loop {
            let n = match self.reader.read(&mut scratch) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if let Some(i) = memchr::memchr(b'\n', &scratch[..n]) {
                self.carry.extend_from_slice(&scratch[i + 1..n]);
                return Ok(());
            }
        }
    }
}

/// Iterates the lines of a chunk, without their `\n` or `\r\n`.
pub fn lines(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = chunk;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &b""[..]),
        };
        rest = next;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A reader that hands out at most `step` bytes per call, like a pipe.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn collect(data: &[u8], step: usize) -> Vec<(u64, Vec<u8>)> {
        collect_sized(data, step, CHUNK_SIZE)
    }

    fn collect_sized(data: &[u8], step: usize, chunk_size: usize) -> Vec<(u64, Vec<u8>)> {
        let mut c = LineChunker::with_chunk_size(Trickle { data, step }, chunk_size);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(first) = c.next_chunk(&mut buf).unwrap() {
            for (i, line) in lines(&buf).enumerate() {
                out.push((first + i as u64, line.to_vec()));
            }
        }
        out
    }

    #[test]
    fn numbers_lines_across_chunks_and_keeps_last_partial_line() {
        let data = b"a\r\nbb\n\nccc";
        let got = collect(data, 2);
        let want: Vec<(u64, Vec<u8>)> = vec![
            (1, b"a".to_vec()),
            (2, b"bb".to_vec()),
            (3, b"".to_vec()),
            (4, b"ccc".to_vec()),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn endless_line_is_cut_and_counted_once() {
        let mut data = b"first\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', CHUNK_SIZE * 3));
        data.extend_from_slice(b"\nlast\n");
        let got = collect(&data, 100_000);
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].0, 2);
        assert_eq!(got[1].1.len(), MAX_LINE + 1);
        assert_eq!(got[2], (3, b"last".to_vec()));
    }

    /// Yields its data, then fails.
    struct FailsAfter<'a>(&'a [u8]);

    impl Read for FailsAfter<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("corrupt"));
            }
            let n = out.len().min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn read_error_keeps_the_lines_read_before_it() {
        // Regression: a truncated .gz lost the whole chunk decoded before the error.
        let mut c = LineChunker::new(FailsAfter(b"a\nb\npartial"));
        let mut buf = Vec::new();
        assert_eq!(c.next_chunk(&mut buf).unwrap(), Some(1));
        assert_eq!(
            lines(&buf).collect::<Vec<_>>(),
            vec![&b"a"[..], b"b", b"partial"]
        );
        assert_eq!(c.next_chunk(&mut buf).unwrap_err().to_string(), "corrupt");
        assert_eq!(c.next_line(), 4);
    }

    #[test]
    fn gzip_is_recognised_by_content() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rotated.1");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"one\ntwo\n").unwrap();
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        let mut text = String::new();
        Input::File(path)
            .open()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "one\ntwo\n");
    }

    #[test]
    fn open_errors_name_the_input() {
        let e = Input::File("/nonexistent/access.log".into())
            .open()
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .starts_with("cannot open /nonexistent/access.log: "),
            "{e}"
        );
        let e = Input::File("/".into()).open().err().unwrap();
        assert_eq!(e.to_string(), "cannot open /: it is a directory");
    }

    proptest! {
        #[test]
        fn lines_out_equal_lines_in(
            lines_in in proptest::collection::vec("[a-z ]{0,50}", 0..200),
            step in 1usize..300,
            chunk_size in 64usize..512,
        ) {
            let data = lines_in.iter().map(|l| format!("{l}\n")).collect::<String>();
            let got = collect_sized(data.as_bytes(), step, chunk_size);
            let want: Vec<(u64, Vec<u8>)> = lines_in.iter().enumerate().map(|(i, l)| (i as u64 + 1, l.as_bytes().to_vec())).collect();
            prop_assert_eq!(got, want);
        }
    }
}
