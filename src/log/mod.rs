//! Parse stage: log formats, the line parser and timestamps. Turns a line of
//! bytes into a [`Request`] that borrows from it.

mod combined;
pub mod errorlog;
pub mod format;
pub mod json;
pub mod parse;
pub mod proxy;
pub mod request;
pub mod scan;
pub mod syslog;
pub mod time;

pub use format::{Dialect, Preset};
pub use parse::{Malformed, Parser, Scratch};
pub use proxy::TrustedProxies;
pub use request::Request;

/// How the user described the log format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatSpec {
    /// Recognise a predefined format from the first lines.
    Auto,
    Preset(Preset),
    Custom {
        dialect: Dialect,
        format: String,
        date_format: Option<String>,
        time_format: Option<String>,
    },
}

/// A format name that is neither `auto` nor a preset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown format '{0}' (expected auto, {names}; for a custom format use --nginx-format, --apache-format or --goaccess-format)",
    names = Preset::ALL.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
)]
pub struct UnknownFormat(pub String);

impl FormatSpec {
    /// A format by name: "auto" or a preset.
    pub fn from_name(text: &str) -> Result<FormatSpec, UnknownFormat> {
        if text == "auto" {
            return Ok(FormatSpec::Auto);
        }
        Preset::ALL
            .iter()
            .find(|p| p.name() == text)
            .map(|p| FormatSpec::Preset(*p))
            .ok_or_else(|| UnknownFormat(text.to_string()))
    }
}

/// The outcome of auto-detection, for the user to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub preset: Preset,
    /// The lines carry a syslog or journald prefix before the format.
    pub syslog: bool,
    pub parsed: usize,
    pub sampled: usize,
}

impl Detection {
    /// The format's name, as shown: `combined`, `syslog + combined`.
    pub fn name(&self) -> String {
        if self.syslog {
            format!("syslog + {}", self.preset.name())
        } else {
            self.preset.name().to_string()
        }
    }
}

/// How many lines auto-detection looks at.
pub const DETECT_SAMPLE: usize = 50;

/// Picks the predefined format that parses the most of the sample lines;
/// ties go to the more specific format (the order of [`Preset::ALL`]).
pub fn detect<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Option<Detection> {
    let sample: Vec<&[u8]> = lines
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.trim_ascii().is_empty())
        .take(DETECT_SAMPLE)
        .collect();
    let mut best: Option<Detection> = None;
    // Lines without a prefix first: on a tie the plain format wins.
    for syslog in [false, true] {
        for preset in Preset::ALL {
            let mut parser = Parser::preset(preset, TrustedProxies::default());
            if syslog {
                parser = parser.behind_syslog();
            }
            let mut scratch = Scratch::default();
            let parsed = sample
                .iter()
                .filter(|l| parser.parse(l, &mut scratch).is_ok())
                .count();
            if parsed > 0 && best.as_ref().is_none_or(|b| parsed > b.parsed) {
                best = Some(Detection {
                    preset,
                    syslog,
                    parsed,
                    sampled: sample.len(),
                });
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> impl Iterator<Item = &[u8]> {
        text.lines().map(str::as_bytes)
    }

    #[test]
    fn detects_each_preset() {
        let cases = [
            (
                Preset::Common,
                r#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 2326"#,
            ),
            (
                Preset::Combined,
                r#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 2326 "-" "curl/8""#,
            ),
            (
                Preset::Main,
                r#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 2326 "-" "curl/8" "198.51.100.1""#,
            ),
            (
                Preset::VhostCombined,
                r#"example.com:80 192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 2326 "-" "curl/8""#,
            ),
            (
                Preset::Json,
                r#"{"remote_addr":"192.0.2.1","time_iso8601":"2000-10-10T13:55:36-07:00","request":"GET / HTTP/1.0","status":200}"#,
            ),
        ];
        for (want, line) in cases {
            let got = detect(lines(line)).expect("detected");
            assert_eq!(got.preset, want, "{line}");
        }
    }

    #[test]
    fn majority_wins_over_a_few_odd_lines() {
        let text = "garbage\n\n192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.0\" 200 1 \"-\" \"a\"\n192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.0\" 200 1 \"-\" \"a\"\n";
        let d = detect(lines(text)).unwrap();
        assert_eq!((d.preset, d.parsed, d.sampled), (Preset::Combined, 2, 3));
    }

    #[test]
    fn nothing_recognisable() {
        assert_eq!(detect(lines("hello\nworld")), None);
        assert_eq!(detect(lines("")), None);
    }
}
