//! The line parser: executes a compiled format on one line of bytes.

use super::combined::{ABSENT, Shape, Spans};
use super::scan::{find_near, starts_with_short};
use std::fmt::Write as _;

use super::format::{Enclosure, FIELD_COUNT, Field, Preset, TextFormat, TimeLayout, Token};
use super::json::{self, JsonFields};
use super::proxy::{TrustedProxies, parse_ip};
use super::request::{Request, split_request_line, split_target};
use super::time::{self, Civil};

/// Lines longer than this are malformed: no real access-log line is, and it
/// bounds what one hostile line can cost.
pub const MAX_LINE: usize = 64 * 1024;

/// Why a line does not fit the format. Offsets are byte ranges in the line,
/// so nothing is allocated until a sample is actually shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed<'f> {
    pub reason: Reason<'f>,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason<'f> {
    TooLong,
    NulByte,
    Expected(&'f [u8]),
    Unterminated(Field),
    Invalid(Field),
    Missing(Field),
    NotJson,
    NoSyslogPrefix,
    NoClient,
}

impl Malformed<'_> {
    fn new(reason: Reason<'_>, start: usize, end: usize) -> Malformed<'_> {
        Malformed { reason, start, end }
    }

    /// A one-line explanation naming the column and the offending value.
    pub fn describe(&self, line: &[u8]) -> String {
        let col = self.start.saturating_add(1);
        let value = |s: usize, e: usize| {
            let e = e.min(line.len()).min(s.saturating_add(60));
            escape_for_display(line.get(s..e).unwrap_or_default())
        };
        match &self.reason {
            Reason::TooLong => format!(
                "line is {} bytes long, over the {MAX_LINE}-byte limit",
                self.end
            ),
            Reason::NulByte => format!("NUL byte at column {col}"),
            Reason::Expected(lit) => {
                let found = if self.start >= line.len() {
                    "end of line".to_string()
                } else {
                    format!("'{}'", value(self.start, self.start + 20))
                };
                format!(
                    "expected '{}' at column {col}, found {found}",
                    escape_for_display(lit)
                )
            }
            Reason::Unterminated(f) => {
                format!(
                    "{} starting at column {col} is not terminated: '{}'",
                    f.describe(),
                    value(self.start, self.end)
                )
            }
            Reason::Invalid(f) => format!(
                "invalid {} '{}' at column {col}",
                f.describe(),
                value(self.start, self.end)
            ),
            Reason::Missing(f) => format!("no {} field", f.describe()),
            Reason::NotJson => format!("not a JSON object (error at column {col})"),
            Reason::NoClient => "a server message that names no client (not a request)".to_string(),
            Reason::NoSyslogPrefix => {
                "no syslog prefix (such as 'Sep 15 10:00:01 web1 nginx[2869]: ')".to_string()
            }
        }
    }
}

/// Characters that are not control characters but change how the text
/// around them reads: bidirectional overrides and isolates (U+202E turns
/// `gpj.exe` around), marks, and invisible zero-width characters that make
/// two different strings look the same.
fn is_deceptive(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}'
    )
}

/// Renders bytes for a terminal or message: printable ASCII and valid UTF-8
/// as is; control bytes and invalid UTF-8 as `\xNN`, bidirectional and
/// zero-width characters as `\u{NNNN}`, so a log line can never inject
/// terminal escape sequences or disguise what it says.
pub fn escape_for_display(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                for byte in c.to_string().bytes() {
                    let _ = write!(out, "\\x{byte:02x}");
                }
            } else if is_deceptive(c) {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            } else {
                out.push(c);
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Kind {
    /// A text format, and its member of the combined family if it is one.
    Text(TextFormat, Option<Shape>),
    Json(Box<JsonFields>),
    /// An error log, with the zone its local times are in.
    Error(super::errorlog::ErrorDialect, Box<jiff::tz::TimeZone>),
}

/// Parses lines of one format into [`Request`]s.
#[derive(Debug, Clone)]
pub struct Parser {
    kind: Kind,
    proxies: TrustedProxies,
    name: String,
    /// Each line starts with a syslog prefix to skip.
    syslog: bool,
}

/// Per-thread reusable state: the decoded JSON document, and the last
/// timestamp parsed (consecutive lines mostly share their second, so a
/// compare of a few bytes usually replaces the parse). Use one per parser:
/// the cached timestamp is only valid for the format that parsed it.
#[derive(Debug, Default)]
pub struct Scratch {
    json: serde_json::Value,
    last_time_text: Vec<u8>,
    last_time: i64,
}

impl Parser {
    pub fn text(format: TextFormat, proxies: TrustedProxies) -> Self {
        let shape = Shape::of(&format);
        Parser {
            name: format.name.clone(),
            kind: Kind::Text(format, shape),
            proxies,
            syslog: false,
        }
    }

    pub fn json(fields: JsonFields, proxies: TrustedProxies) -> Self {
        Parser {
            name: "json".into(),
            kind: Kind::Json(Box::new(fields)),
            proxies,
            syslog: false,
        }
    }

    pub fn preset(preset: Preset, proxies: TrustedProxies) -> Self {
        use super::errorlog::ErrorDialect;
        let error = |dialect| Parser {
            name: preset.name().to_string(),
            kind: Kind::Error(
                dialect,
                Box::new(jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC)),
            ),
            proxies: proxies.clone(),
            syslog: false,
        };
        match preset {
            Preset::NginxError => return error(ErrorDialect::Nginx),
            Preset::ApacheError => return error(ErrorDialect::Apache),
            _ => {}
        }
        match preset.text_format() {
            Some(f) => Parser::text(f, proxies),
            None => Parser::json(JsonFields::default(), proxies),
        }
    }

    /// Whether this parser reads an error log.
    pub fn is_error_log(&self) -> bool {
        matches!(self.kind, Kind::Error(..))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn parse<'a>(
        &'a self,
        line: &'a [u8],
        scratch: &'a mut Scratch,
    ) -> Result<Request<'a>, Malformed<'a>> {
        if line.len() > MAX_LINE {
            return Err(Malformed::new(Reason::TooLong, 0, line.len()));
        }
        if let Some(nul) = memchr::memchr(0, line) {
            return Err(Malformed::new(Reason::NulByte, nul, nul + 1));
        }
        if !self.syslog {
            return self.parse_message(line, scratch);
        }
        let Some(skip) = super::syslog::prefix_len(line) else {
            return Err(Malformed::new(Reason::NoSyslogPrefix, 0, 0));
        };
        // Positions in errors stay those of the whole line.
        self.parse_message(&line[skip..], scratch)
            .map_err(|m| Malformed::new(m.reason, m.start + skip, m.end + skip))
    }

    /// The same format read by the general interpreter alone, without the
    /// combined family's field finder: what the finder is measured and
    /// tested against.
    #[doc(hidden)]
    pub fn without_family_finder(mut self) -> Parser {
        if let Kind::Text(_, shape) = &mut self.kind {
            *shape = None;
        }
        self
    }

    /// The same format, on lines that came through syslog or journald.
    pub fn behind_syslog(mut self) -> Parser {
        self.syslog = true;
        self.name = format!("syslog + {}", self.name);
        self
    }

    fn parse_message<'a>(
        &'a self,
        line: &'a [u8],
        scratch: &'a mut Scratch,
    ) -> Result<Request<'a>, Malformed<'a>> {
        match &self.kind {
            Kind::Text(f, shape) => {
                let spans = match shape.and_then(|s| s.spans(line)) {
                    Some(spans) => spans,
                    None => text_spans(f, line)?,
                };
                self.request_of(f, line, &spans, scratch)
            }
            Kind::Json(f) => self.parse_json(f, line, scratch),
            Kind::Error(dialect, zone) => self.parse_error(*dialect, zone, line),
        }
    }

    fn parse_error<'a>(
        &'a self,
        dialect: super::errorlog::ErrorDialect,
        zone: &jiff::tz::TimeZone,
        line: &'a [u8],
    ) -> Result<Request<'a>, Malformed<'a>> {
        use super::errorlog::ErrorLineFault as F;
        let e = super::errorlog::parse(dialect, line, zone).map_err(|f| match f {
            F::Time => Malformed::new(Reason::Invalid(Field::Time), 0, line.len().min(32)),
            F::Level => Malformed::new(Reason::Expected(b"[level]"), 0, 0),
            F::NoClient => Malformed::new(Reason::NoClient, 0, 0),
            F::Client(s, e) => Malformed::new(Reason::Invalid(Field::Client), s, e),
        })?;
        let r = split_request_line(e.request);
        Ok(Request {
            client: self.proxies.resolve(e.peer, b""),
            peer: e.peer,
            time: e.time,
            request: e.request,
            method: r.method,
            path: r.path,
            query: r.query,
            protocol: r.protocol,
            status: NO_RESPONSE,
            bytes: 0,
            referer: e.referer,
            user_agent: b"",
            host: e.host,
            forwarded_for: b"",
            request_time_us: None,
            level: e.level,
            message: e.message,
        })
    }

    /// The request a line's fields make.
    fn request_of<'a>(
        &'a self,
        f: &'a TextFormat,
        line: &'a [u8],
        spans: &Spans,
        scratch: &mut Scratch,
    ) -> Result<Request<'a>, Malformed<'a>> {
        let get = |field: Field| {
            let (s, e) = spans[field as usize];
            (s != usize::MAX).then(|| &line[s..e])
        };
        let invalid = |field: Field| {
            let (s, e) = spans[field as usize];
            Malformed::new(Reason::Invalid(field), s, e)
        };

        let client_field = get(Field::Client).unwrap_or_default();
        // A hop list: the last hop is the peer, the ones before it are
        // believed only as far as X-Forwarded-For would be.
        let (client_field, hops) = match client_field.iter().rposition(|&c| c == b',') {
            Some(k) => (client_field[k + 1..].trim_ascii(), &client_field[..k]),
            None => (client_field, &b""[..]),
        };
        let peer = parse_ip(client_field)
            .or_else(|| is_host_name(client_field).then_some(UNRESOLVED))
            .ok_or_else(|| invalid(Field::Client))?;
        let time = match get(Field::Time) {
            Some(t) if t == scratch.last_time_text.as_slice() => scratch.last_time,
            Some(t) => {
                let ms = parse_time(&f.time, t)
                    .and_then(super::time::plausible)
                    .ok_or_else(|| invalid(Field::Time))?;
                scratch.last_time_text.clear();
                scratch.last_time_text.extend_from_slice(t);
                scratch.last_time = ms;
                ms
            }
            None => {
                let mut civil = Civil::default();
                let date = get(Field::Date).unwrap_or_default();
                let tod = get(Field::TimeOfDay).unwrap_or_default();
                let (Some(dp), Some(tp)) = (&f.date_pattern, &f.time_pattern) else {
                    return Err(Malformed::new(Reason::Missing(Field::Time), 0, 0));
                };
                let from_date = dp
                    .apply(date, &mut civil)
                    .map_err(|_| invalid(Field::Date))?;
                let from_tod = tp
                    .apply(tod, &mut civil)
                    .map_err(|_| invalid(Field::TimeOfDay))?;
                from_date
                    .or(from_tod)
                    .or_else(|| civil.to_epoch_ms())
                    .and_then(super::time::plausible)
                    .ok_or_else(|| invalid(Field::Date))?
            }
        };
        let status = get(Field::Status)
            .and_then(parse_status)
            .ok_or_else(|| invalid(Field::Status))?;
        let bytes = match get(Field::Bytes) {
            Some(b) => parse_bytes(b).ok_or_else(|| invalid(Field::Bytes))?,
            None => 0,
        };
        let forwarded_for = match none_if_dash(get(Field::ForwardedFor).unwrap_or_default()) {
            b"" => hops,
            xff => xff,
        };
        let request_time_us = get(Field::DurationSecs)
            .and_then(seconds_as_us)
            .or_else(|| {
                get(Field::DurationMillis)
                    .and_then(parse_u64)
                    .map(|ms| ms.saturating_mul(1000))
            })
            .or_else(|| get(Field::DurationMicros).and_then(parse_u64));

        let raw_request = get(Field::Request);
        let (method, path, query, protocol) = match raw_request {
            Some(raw) => {
                let r = split_request_line(raw);
                (r.method, r.path, r.query, r.protocol)
            }
            None => {
                let (path, query) = match get(Field::Target) {
                    Some(t) => split_target(t),
                    None => (
                        get(Field::Path).unwrap_or_default(),
                        get(Field::Query).unwrap_or_default(),
                    ),
                };
                let method = get(Field::Method).unwrap_or_default();
                (
                    method,
                    path,
                    query,
                    get(Field::Protocol).unwrap_or_default(),
                )
            }
        };

        Ok(Request {
            client: self.proxies.resolve(peer, forwarded_for),
            peer,
            time,
            request: raw_request.unwrap_or_default(),
            method,
            path,
            query,
            protocol,
            status,
            bytes,
            referer: get(Field::Referer).unwrap_or_default(),
            user_agent: get(Field::UserAgent).unwrap_or_default(),
            host: get(Field::Host).unwrap_or_default(),
            forwarded_for,
            request_time_us,
            level: b"",
            message: b"",
        })
    }

    fn parse_json<'a>(
        &'a self,
        f: &'a JsonFields,
        line: &'a [u8],
        scratch: &'a mut Scratch,
    ) -> Result<Request<'a>, Malformed<'a>> {
        let start = line
            .iter()
            .position(|c| !c.is_ascii_whitespace())
            .unwrap_or(0);
        scratch.json = serde_json::from_slice(line).map_err(|e| {
            // serde reports 1-based columns on the (single) line.
            let col = e.column().saturating_sub(1);
            Malformed::new(Reason::NotJson, col, col + 1)
        })?;
        let doc = &scratch.json;
        if !doc.is_object() {
            return Err(Malformed::new(Reason::NotJson, start, start + 1));
        }
        let missing = |field| Malformed::new(Reason::Missing(field), 0, 0);
        let invalid = |field| Malformed::new(Reason::Invalid(field), 0, line.len());

        let peer = parse_ip(json::text(json::lookup(doc, &f.client))).ok_or_else(|| {
            if json::lookup(doc, &f.client).is_some() {
                invalid(Field::Client)
            } else {
                missing(Field::Client)
            }
        })?;
        let time = match json::lookup(doc, &f.time) {
            Some(v) => json::timestamp(v)
                .and_then(super::time::plausible)
                .ok_or_else(|| invalid(Field::Time))?,
            None => return Err(missing(Field::Time)),
        };
        let status = match json::lookup(doc, &f.status) {
            Some(v) => json::unsigned(v)
                .filter(|s| *s <= 999)
                .ok_or_else(|| invalid(Field::Status))? as u16,
            None => return Err(missing(Field::Status)),
        };
        let bytes = json::lookup(doc, &f.bytes)
            .and_then(json::unsigned)
            .unwrap_or(0);
        let forwarded_for = none_if_dash(json::text(json::lookup(doc, &f.forwarded_for)));
        let raw_request = json::text(json::lookup(doc, &f.request));
        let (method, path, query, protocol) = if raw_request.is_empty() {
            let (path, query) = split_target(json::text(json::lookup(doc, &f.uri)));
            (
                json::text(json::lookup(doc, &f.method)),
                path,
                query,
                json::text(json::lookup(doc, &f.protocol)),
            )
        } else {
            let r = split_request_line(raw_request);
            (r.method, r.path, r.query, r.protocol)
        };
        Ok(Request {
            client: self.proxies.resolve(peer, forwarded_for),
            peer,
            time,
            request: raw_request,
            method,
            path,
            query,
            protocol,
            status,
            bytes,
            referer: json::text(json::lookup(doc, &f.referer)),
            user_agent: json::text(json::lookup(doc, &f.user_agent)),
            host: json::text(json::lookup(doc, &f.host)),
            forwarded_for,
            request_time_us: json::lookup(doc, &f.request_time).and_then(json::seconds_as_us),
            level: b"",
            message: b"",
        })
    }
}

/// Where a field that is followed by the literal `next` ends.
///
/// Where each field of `line` lies, by executing the format's tokens.
fn text_spans<'a>(f: &'a TextFormat, line: &[u8]) -> Result<Spans, Malformed<'a>> {
    let mut spans = [ABSENT; FIELD_COUNT];
    let mut pos = 0;
    for (i, token) in f.tokens.iter().enumerate() {
        match token {
            Token::Literal(lit) => {
                if !starts_with_short(&line[pos..], lit) {
                    return Err(Malformed::new(Reason::Expected(lit), pos, pos + lit.len()));
                }
                pos += lit.len();
            }
            Token::SkipSpaces => {
                pos += line[pos..].iter().take_while(|&&c| c == b' ').count();
            }
            Token::Field {
                field: Field::Client,
                enclosed: Enclosure::None,
            } if matches!(f.tokens.get(i + 1), Some(Token::Literal(next)) if next.starts_with(b" ")) =>
            {
                // Some proxies write a list of hops where the client
                // goes ("10.0.0.2, 10.0.0.1, 1.2.3.4"): a comma before
                // a space means the field goes on.
                let mut end = pos;
                loop {
                    let Some(k) = find_near(b' ', &line[end..]) else {
                        end = line.len();
                        break;
                    };
                    let at = end + k;
                    if at > pos && line[at - 1] == b',' {
                        end = at + 1;
                        continue;
                    }
                    end = at;
                    break;
                }
                spans[Field::Client as usize] = (pos, end);
                pos = end;
            }
            Token::Field { field, enclosed } => {
                let end = match f.tokens.get(i + 1) {
                    Some(Token::Literal(next)) => field_end(line, pos, *field, next, *enclosed)
                        .map_err(|near_miss| match near_miss {
                            Some(at) => Malformed::new(Reason::Expected(next), at, at + next.len()),
                            None if *enclosed == Enclosure::None => {
                                Malformed::new(Reason::Expected(next), line.len(), line.len())
                            }
                            None => Malformed::new(Reason::Unterminated(*field), pos, line.len()),
                        })?,
                    Some(Token::SkipSpaces) => {
                        find_near(b' ', &line[pos..]).map_or(line.len(), |k| pos + k)
                    }
                    _ => line[pos..]
                        .iter()
                        .position(|&c| c == b' ' || c == b'\t')
                        .map_or(line.len(), |k| pos + k),
                };
                spans[*field as usize] = (pos, end);
                pos = end;
            }
        }
    }
    // Extra fields after the format's last one are tolerated: many sites
    // append timings to a standard format.
    if pos < line.len() && !matches!(line[pos], b' ' | b'\t') {
        return Err(Malformed::new(Reason::Expected(b" "), pos, line.len()));
    }

    Ok(spans)
}

/// On failure, returns where the closing byte was last seen with the rest of
/// `next` not following it (so the error can point there), if anywhere.
#[inline]
fn field_end(
    line: &[u8],
    start: usize,
    field: Field,
    next: &[u8],
    enclosed: Enclosure,
) -> Result<usize, Option<usize>> {
    let first = next[0];
    let mut from = start;
    let mut near_miss = None;
    loop {
        // Unenclosed and bracketed fields are short (an address, a status, a
        // timestamp): a plain loop finds their end sooner than `memchr`'s
        // set-up; quoted ones (request, referrer, agent) are long.
        let found = match enclosed {
            Enclosure::Quotes => memchr::memchr(first, &line[from..]),
            _ => find_near(first, &line[from..]),
        };
        let Some(rel) = found else {
            return Err(near_miss);
        };
        let at = from + rel;
        match enclosed {
            Enclosure::None => {
                // Unenclosed fields never contain a space: that is what keeps
                // one preset from swallowing another's line during detection.
                // Ignored fields may (GoAccess's `%^` skips "- frank ").
                if first != b' ' && field != Field::Ignore {
                    if let Some(k) = find_near(b' ', &line[start..at]) {
                        return Err(Some(start + k));
                    }
                }
                return if starts_with_short(&line[at..], next) {
                    Ok(at)
                } else {
                    Err(Some(at))
                };
            }
            Enclosure::Quotes if is_escaped(&line[start..at]) => {}
            _ if starts_with_short(&line[at..], next) => return Ok(at),
            _ => near_miss = Some(at),
        }
        from = at + 1;
    }
}

/// Whether the byte after `field` is escaped by an odd run of backslashes
/// (Apache writes `\"` inside quoted fields).
fn is_escaped(field: &[u8]) -> bool {
    field.iter().rev().take_while(|&&c| c == b'\\').count() % 2 == 1
}

fn parse_time(layout: &TimeLayout, b: &[u8]) -> Option<i64> {
    match layout {
        TimeLayout::Clf => time::parse_clf(b),
        TimeLayout::Iso8601 => time::parse_iso8601(b),
        TimeLayout::Epoch => time::parse_epoch(b),
        TimeLayout::Pattern(p) => {
            let mut civil = Civil::default();
            match p.apply(b, &mut civil).ok()? {
                Some(epoch) => Some(epoch),
                None => civil.to_epoch_ms(),
            }
        }
    }
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u64, |a, d| a * 10 + u64::from(d - b'0')))
}

/// A status code; `-` (a request that never got a response: the client
/// went away, or the server dropped it) is status 0, counted as its own.
fn parse_status(b: &[u8]) -> Option<u16> {
    if b == b"-" {
        return Some(NO_RESPONSE);
    }
    if b.len() > 3 {
        return None;
    }
    parse_u64(b).map(|s| s as u16)
}

/// The client of a request logged with a host name instead of an address
/// (Apache's `HostnameLookups On`): counted, never decided on, since a
/// name cannot be banned.
pub const UNRESOLVED: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// Whether a client field holds a DNS host name (`crawl-66-249-66-1.googlebot.com`).
fn is_host_name(b: &[u8]) -> bool {
    !b.is_empty()
        && b.len() <= 253
        && b.contains(&b'.')
        && b.iter().any(u8::is_ascii_alphabetic)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.'))
}

/// The status of a request logged without a response (`-`).
pub const NO_RESPONSE: u16 = 0;

/// A status as people read it: `-` for no response.
pub fn status_text(status: u16) -> String {
    if status == NO_RESPONSE {
        "-".to_string()
    } else {
        status.to_string()
    }
}

fn parse_bytes(b: &[u8]) -> Option<u64> {
    if b == b"-" { Some(0) } else { parse_u64(b) }
}

fn none_if_dash(b: &[u8]) -> &[u8] {
    if b == b"-" { b"" } else { b }
}

fn seconds_as_us(b: &[u8]) -> Option<u64> {
    time::seconds_to_us(std::str::from_utf8(b).ok()?.parse().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::format::{Dialect, compile};
    use proptest::prelude::*;
    use std::net::IpAddr;

    fn combined() -> Parser {
        Parser::preset(Preset::Combined, TrustedProxies::default())
    }

    fn ok(p: &Parser, line: &str) -> (IpAddr, i64, String, String, u16, u64, String) {
        let mut s = Scratch::default();
        let r = p
            .parse(line.as_bytes(), &mut s)
            .unwrap_or_else(|e| panic!("{}", e.describe(line.as_bytes())));
        (
            r.client,
            r.time,
            String::from_utf8_lossy(r.method).into_owned(),
            String::from_utf8_lossy(r.path).into_owned(),
            r.status,
            r.bytes,
            String::from_utf8_lossy(r.user_agent).into_owned(),
        )
    }

    fn err(p: &Parser, line: &[u8]) -> String {
        let mut s = Scratch::default();
        match p.parse(line, &mut s) {
            Ok(r) => panic!("parsed: {r:?}"),
            Err(e) => e.describe(line),
        }
    }

    const LINE: &str = r#"203.0.113.7 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif?x=1 HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)""#;

    #[test]
    fn combined_line() {
        let (ip, t, m, path, st, b, ua) = ok(&combined(), LINE);
        assert_eq!(ip.to_string(), "203.0.113.7");
        assert_eq!(t, 971_211_336_000);
        assert_eq!(
            (m.as_str(), path.as_str(), st, b),
            ("GET", "/apache_pb.gif", 200, 2326)
        );
        assert_eq!(ua, "Mozilla/4.08 [en] (Win98; I ;Nav)");
    }

    #[test]
    fn bad_requests_are_requests() {
        let p = combined();
        // Empty request, as nginx logs a connection closed before a request.
        let (_, _, m, path, st, b, _) = ok(
            &p,
            r#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "" 400 0 "-" "-""#,
        );
        assert_eq!((m.as_str(), path.as_str(), st, b), ("", "", 400, 0));
        // TLS handshake bytes sent to a plain-HTTP port, escaped by nginx.
        let (_, _, m, path, st, _, _) = ok(
            &p,
            r#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "\x16\x03\x01\x00\xA5\x01\x00\x00\xA1\x03\x03" 400 157 "-" "-""#,
        );
        assert_eq!((m.as_str(), st), ("", 400));
        assert!(path.starts_with(r"\x16\x03\x01"));
        // Unknown method and protocol.
        let (_, _, m, path, ..) = ok(
            &p,
            r#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "BREW /pot HTCPCP/1.0" 418 0 "-" "-""#,
        );
        assert_eq!((m.as_str(), path.as_str()), ("BREW", "/pot HTCPCP/1.0"));
        // Invalid UTF-8 in path and agent.
        let mut line = br#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "GET /caf"#.to_vec();
        line.extend_from_slice(b"\xe9 HTTP/1.1\" 404 0 \"-\" \"bot\xff\xfe\"");
        let mut s = Scratch::default();
        let r = p.parse(&line, &mut s).unwrap();
        assert_eq!(r.path, b"/caf\xe9");
        assert_eq!(r.user_agent, b"bot\xff\xfe");
        // Apache's escaped quote inside the user agent.
        let (.., ua) = ok(
            &p,
            r#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "-" "say \"hi\" ok""#,
        );
        assert_eq!(ua, r#"say \"hi\" ok"#);
    }

    #[test]
    fn malformed_lines_say_why_and_where() {
        let p = combined();
        let cut =
            br#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "GET /x HTTP/1.1" 200 5 "-" "Mozilla"#;
        assert!(
            err(&p, cut).contains("user agent starting at column 73 is not terminated"),
            "{}",
            err(&p, cut)
        );
        let e = err(
            &p,
            br#"192.0.2.1 - - [10/Oct/2000:25:55:36 -0700] "GET / HTTP/1.1" 200 5 "-" "-""#,
        );
        assert_eq!(
            e,
            "invalid timestamp '10/Oct/2000:25:55:36 -0700' at column 16"
        );
        let e = err(
            &p,
            br#"not-an-ip - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 5 "-" "-""#,
        );
        assert_eq!(e, "invalid client address 'not-an-ip' at column 1");
        let e = err(
            &p,
            br#"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 2x0 5 "-" "-""#,
        );
        assert_eq!(e, "invalid status '2x0' at column 61");
        let e = err(&p, b"\x00\x01\x02binary");
        assert_eq!(e, "NUL byte at column 1");
        let e = err(&p, b"\x16\x03\x01garbage");
        assert!(e.starts_with("expected ' ' at column"), "{e}");
        let long = vec![b'a'; MAX_LINE + 1];
        assert!(err(&p, &long).contains("over the 65536-byte limit"));
        let e = err(&p, b"192.0.2.1 - - [10/Oct/2000:13:55:36 -0700]");
        assert_eq!(e, "expected '] \"' at column 42, found ']'");
    }

    #[test]
    fn trailing_fields_are_tolerated_but_not_glued_garbage() {
        let p = combined();
        ok(&p, &format!("{LINE} 0.005 upstream=1"));
        err(&p, format!("{LINE}x").as_bytes());
    }

    #[test]
    fn ipv6_and_vhost_combined() {
        let p = Parser::preset(Preset::VhostCombined, TrustedProxies::default());
        let (ip, ..) = ok(
            &p,
            r#"www.example.com:443 2001:db8::1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/2.0" 200 512 "-" "curl/8""#,
        );
        assert_eq!(ip.to_string(), "2001:db8::1");
        // A combined line does not pass as vhost_combined.
        let mut s = Scratch::default();
        assert!(p.parse(LINE.as_bytes(), &mut s).is_err());
    }

    #[test]
    fn nginx_custom_format_with_extras() {
        let f = compile(
            Dialect::Nginx,
            r#"$remote_addr - $remote_user [$time_iso8601] "$request_method $request_uri $server_protocol" $status $body_bytes_sent $host "$http_user_agent" $request_time $upstream_response_time "$http_x_forwarded_for""#,
            None,
            None,
        )
        .unwrap();
        let p = Parser::text(f, TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]));
        let line = br#"10.0.0.2 - - [2000-10-10T20:55:36+00:00] "POST /login?next=/ HTTP/1.1" 302 0 shop.example "curl/8" 0.120 0.119 "198.51.100.4, 10.0.0.3""#;
        let mut s = Scratch::default();
        let r = p.parse(line, &mut s).unwrap();
        assert_eq!(r.client.to_string(), "198.51.100.4");
        assert_eq!(r.peer.to_string(), "10.0.0.2");
        assert_eq!(
            (r.method, r.path, r.query),
            (&b"POST"[..], &b"/login"[..], &b"next=/"[..])
        );
        assert_eq!(r.host, b"shop.example");
        assert_eq!(r.request_time_us, Some(120_000));
        assert_eq!(r.time, 971_211_336_000);
    }

    #[test]
    fn nginx_msec_timestamps() {
        let f = compile(
            Dialect::Nginx,
            r#"$msec $remote_addr "$request" $status $bytes_sent"#,
            None,
            None,
        )
        .unwrap();
        let p = Parser::text(f, TrustedProxies::default());
        let mut s = Scratch::default();
        let r = p
            .parse(
                br#"971211336.250 192.0.2.1 "GET / HTTP/1.1" 200 10"#,
                &mut s,
            )
            .unwrap();
        assert_eq!(r.time, 971_211_336_250);
    }

    #[test]
    fn goaccess_format_with_split_date() {
        let f = compile(
            Dialect::GoAccess,
            r#"%h %^[%d:%t %^] "%r" %s %b "%R" "%u""#,
            Some("%d/%b/%Y"),
            Some("%H:%M:%S"),
        )
        .unwrap();
        let p = Parser::text(f, TrustedProxies::default());
        // GoAccess ignores the zone here (%^), so the time is read as UTC.
        let (ip, t, ..) = ok(&p, LINE);
        assert_eq!(ip.to_string(), "203.0.113.7");
        assert_eq!(t, 971_186_136_000);
    }

    #[test]
    fn apache_custom_with_duration_and_host_header() {
        let f = compile(
            Dialect::Apache,
            r#"%{Host}i %a %l %u %t \"%r\" %>s %B %D \"%{X-Forwarded-For}i\""#,
            None,
            None,
        )
        .unwrap();
        let p = Parser::text(f, TrustedProxies::default());
        let mut s = Scratch::default();
        let r = p
            .parse(br#"example.org 192.0.2.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 10 1500 "-""#, &mut s)
            .unwrap();
        assert_eq!(r.host, b"example.org");
        assert_eq!(r.request_time_us, Some(1500));
        assert_eq!(r.forwarded_for, b"");
    }

    #[test]
    fn json_lines_nginx_and_caddy() {
        let p = Parser::preset(Preset::Json, TrustedProxies::default());
        let mut s = Scratch::default();
        let nginx = br#"{"time_iso8601":"2000-10-10T20:55:36+00:00","remote_addr":"192.0.2.1","request":"GET /a?b HTTP/1.1","status":"404","body_bytes_sent":"12","http_user_agent":"curl/8","host":"x.example"}"#;
        let r = p.parse(nginx, &mut s).unwrap();
        assert_eq!(
            (r.status, r.bytes, r.path, r.host),
            (404, 12, &b"/a"[..], &b"x.example"[..])
        );
        let caddy = br#"{"level":"info","ts":971211336.5,"logger":"http.log.access","msg":"handled request","request":{"remote_ip":"2001:db8::7","remote_port":"5","proto":"HTTP/2.0","method":"GET","host":"c.example","uri":"/p?q=1","headers":{"User-Agent":["Go-http-client/2.0"]}},"duration":0.0012,"size":77,"status":200}"#;
        let r = p.parse(caddy, &mut s).unwrap();
        assert_eq!(r.client.to_string(), "2001:db8::7");
        assert_eq!(r.time, 971_211_336_500);
        assert_eq!(
            (r.method, r.path, r.query),
            (&b"GET"[..], &b"/p"[..], &b"q=1"[..])
        );
        assert_eq!(
            (r.status, r.bytes, r.user_agent),
            (200, 77, &b"Go-http-client/2.0"[..])
        );
        assert_eq!(r.request_time_us, Some(1200));
        let e = err(&p, br#"{"remote_addr":"192.0.2.1","status":200}"#);
        assert_eq!(e, "no timestamp field");
        let e = err(
            &p,
            br#"{"remote_addr":"192.0.2.1","time":"yesterday","status":200}"#,
        );
        assert!(e.starts_with("invalid timestamp"), "{e}");
        assert!(err(&p, b"{\"a\":").starts_with("not a JSON object"));
        assert!(err(&p, b"[1,2]").starts_with("not a JSON object"));
    }

    #[test]
    fn display_escaping_neutralises_terminal_escapes() {
        assert_eq!(escape_for_display(b"a\x1b[2Jb\xff"), "a\\x1b[2Jb\\xff");
        assert_eq!(escape_for_display("café".as_bytes()), "café");
        assert_eq!(
            escape_for_display("evil\u{202e}gpj.exe\u{200b}!".as_bytes()),
            "evil\\u{202e}gpj.exe\\u{200b}!"
        );
        assert_eq!(escape_for_display(b"a\nb\rc"), "a\\x0ab\\x0dc");
    }

    fn arb_text() -> impl Strategy<Value = String> {
        // Printable text without quote or backslash, which servers escape.
        "[ -!#-\\[\\]-~]{0,40}"
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut s = Scratch::default();
            for preset in Preset::ALL {
                let p = Parser::preset(preset, TrustedProxies::default());
                if let Err(e) = p.parse(&line, &mut s) {
                    let _ = e.describe(&line);
                }
            }
        }

        #[test]
        fn mutated_lines_never_panic(cut in 0usize..200, byte in any::<u8>()) {
            let mut line = LINE.as_bytes().to_vec();
            let at = cut.min(line.len() - 1);
            line[at] = byte;
            line.truncate(at + 1 + cut % 7);
            let mut s = Scratch::default();
            if let Err(e) = combined().parse(&line, &mut s) {
                let _ = e.describe(&line);
            }
        }

        /// The combined family's span finder and the general interpreter
        /// read every line alike, errors included: lines of each member,
        /// with the pieces the finder leaves to the interpreter (hop lists,
        /// escaped quotes, tabs, trailing fields, literals out of place)
        /// and with one byte anywhere changed.
        #[test]
        fn the_family_finder_reads_lines_as_the_interpreter_does(
            preset in prop_oneof![Just(Preset::Combined), Just(Preset::Common), Just(Preset::Main), Just(Preset::HostCombined), Just(Preset::HostMain)],
            client in prop_oneof![Just("203.0.113.7"), Just("2a02:db8::7"), Just("10.0.0.2, 203.0.113.7"), Just("crawl-1.example.com"), Just("")],
            user in prop_oneof![Just("-"), Just("frank"), Just("a b"), Just("")],
            request in prop_oneof![Just("GET /a?b=1 HTTP/1.1"), Just(""), Just("GET /\\\"x HTTP/1.1"), Just("GET /\"\" HTTP/1.0"), Just("\\x16\\x03")],
            status in prop_oneof![Just("200"), Just("-"), Just("2000"), Just("20x")],
            agent in prop_oneof![Just("Mozilla/5.0 (X11)"), Just(""), Just("a\\\" b"), Just("-")],
            trailer in prop_oneof![Just(""), Just(" 0.003"), Just("\t1"), Just("x"), Just(" \"9.9.9.9\"")],
            edit in proptest::option::of((0usize..200, any::<u8>())),
        ) {
            let host = "www.example.com";
            let when = "10/Mar/2024:00:00:00 +0000";
            // `%l %u` and nginx's ` - $remote_user` read alike.
            let head = format!("{client} - {user} [{when}]");
            let head = if matches!(preset, Preset::HostCombined | Preset::HostMain) { format!("{host} {head}") } else { head };
            let tail = match preset {
                Preset::Common => String::new(),
                Preset::Main | Preset::HostMain => format!(r#" "-" "{agent}" "198.51.100.1""#),
                _ => format!(r#" "https://r.example/" "{agent}""#),
            };
            let mut line = format!(r#"{head} "{request}" {status} 512{tail}{trailer}"#).into_bytes();
            if let Some((at, byte)) = edit {
                let at = at % (line.len() + 1);
                if at == line.len() { line.push(byte) } else { line[at] = byte }
            }
            let fast = Parser::preset(preset, TrustedProxies::default());
            prop_assert!(matches!(fast.kind, Kind::Text(_, Some(_))));
            let slow = fast.clone().without_family_finder();
            let (mut a, mut b) = (Scratch::default(), Scratch::default());
            prop_assert_eq!(fast.parse(&line, &mut a), slow.parse(&line, &mut b), "{}", String::from_utf8_lossy(&line));
        }

        #[test]
        fn formatted_record_parses_back_equal(
            v4 in any::<[u8; 4]>(),
            v6 in any::<[u16; 8]>(),
            use_v6 in any::<bool>(),
            secs in 0i64..4_102_444_800,
            method in "[A-Z]{1,7}",
            path in "/[!#-~]{0,30}",
            status in 100u16..600,
            bytes in any::<u32>(),
            referer in arb_text(),
            agent in arb_text(),
        ) {
            let ip: IpAddr = if use_v6 { v6.into() } else { v4.into() };
            let ip = crate::log::proxy::canonical(ip);
            let when = jiff::Timestamp::from_second(secs).unwrap().strftime("%d/%b/%Y:%H:%M:%S +0000").to_string();
            let line = format!(r#"{ip} - - [{when}] "{method} {path} HTTP/1.1" {status} {bytes} "{referer}" "{agent}""#);
            let mut s = Scratch::default();
            let p = combined();
            let r = p.parse(line.as_bytes(), &mut s).map_err(|e| TestCaseError::fail(e.describe(line.as_bytes())))?;
            let (want_path, want_query) = split_target(path.as_bytes());
            prop_assert_eq!(r.client, ip);
            prop_assert_eq!(r.time, secs * 1000);
            prop_assert_eq!(r.method, method.as_bytes());
            prop_assert_eq!(r.path, want_path);
            prop_assert_eq!(r.query, want_query);
            prop_assert_eq!(r.status, status);
            prop_assert_eq!(r.bytes, u64::from(bytes));
            prop_assert_eq!(r.referer, referer.as_bytes());
            prop_assert_eq!(r.user_agent, agent.as_bytes());
        }
    }
}
