//! Error logs as a second source: nginx's (`2024/01/01 12:00:00 [error]
//! 1234#0: *5 message, client: 1.2.3.4, server: …, request: "GET / HTTP/1.1",
//! host: "…"`) and Apache 2.2/2.4's (`[Mon Jan 01 12:00:00.123456 2024]
//! [module:level] [pid N] [client 1.2.3.4:5678] AH01618: message`). A line
//! becomes a request-like record: client, time, level, message, and the
//! request and host where the line names them, so the same rules, reports
//! and daemon read it. Lines about no client (startup, signals) are not
//! requests: they are counted apart, as malformed, with that reason.
//! Hand-written on bytes like the access-log parser; both formats write
//! local time without an offset, read in the machine's time zone.

use std::net::IpAddr;

use super::request::split_request_line;
use super::time::{Civil, EpochMs, month_abbrev, plausible};

/// Which server wrote the error log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorDialect {
    Nginx,
    Apache,
}

/// What an error-log line says, before the client is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorLine<'a> {
    pub time: EpochMs,
    pub level: &'a [u8],
    pub peer: IpAddr,
    pub message: &'a [u8],
    pub request: &'a [u8],
    pub host: &'a [u8],
    pub referer: &'a [u8],
}

/// Why a line is not an error-log record; the offset of the trouble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorLineFault {
    /// No time stamp in the server's layout at the start.
    Time,
    /// No `[level]`.
    Level,
    /// A server message that names no client.
    NoClient,
    /// A client that is not an address.
    Client(usize, usize),
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Local civil time to epoch milliseconds in the machine's zone.
fn local_ms(c: Civil, zone: &jiff::tz::TimeZone) -> Option<EpochMs> {
    let dt = jiff::civil::DateTime::new(
        i16::try_from(c.year).ok()?,
        i8::try_from(c.month).ok()?,
        i8::try_from(c.day).ok()?,
        i8::try_from(c.hour).ok()?,
        i8::try_from(c.minute).ok()?,
        i8::try_from(c.second.min(59)).ok()?,
        i32::try_from(c.millis).ok()? * 1_000_000,
    )
    .ok()?;
    let ms = dt.to_zoned(zone.clone()).ok()?.timestamp().as_millisecond();
    plausible(ms)
}

/// Parses one error-log line.
pub fn parse<'a>(
    dialect: ErrorDialect,
    line: &'a [u8],
    zone: &jiff::tz::TimeZone,
) -> Result<ErrorLine<'a>, ErrorLineFault> {
    match dialect {
        ErrorDialect::Nginx => nginx(line, zone),
        ErrorDialect::Apache => apache(line, zone),
    }
}

/// `2024/01/01 12:00:00 [error] 1234#0: *5 message, client: …`.
fn nginx<'a>(line: &'a [u8], zone: &jiff::tz::TimeZone) -> Result<ErrorLine<'a>, ErrorLineFault> {
    let head = line.get(..20).ok_or(ErrorLineFault::Time)?;
    let shape = head.iter().enumerate().all(|(i, c)| match i {
        4 | 7 => *c == b'/',
        10 => *c == b' ',
        13 | 16 => *c == b':',
        19 => *c == b' ',
        _ => c.is_ascii_digit(),
    });
    if !shape {
        return Err(ErrorLineFault::Time);
    }
    let civil = Civil {
        year: i64::from(digits(&head[0..4]).ok_or(ErrorLineFault::Time)?),
        month: digits(&head[5..7]).ok_or(ErrorLineFault::Time)?,
        day: digits(&head[8..10]).ok_or(ErrorLineFault::Time)?,
        hour: digits(&head[11..13]).ok_or(ErrorLineFault::Time)?,
        minute: digits(&head[14..16]).ok_or(ErrorLineFault::Time)?,
        second: digits(&head[17..19]).ok_or(ErrorLineFault::Time)?,
        ..Civil::default()
    };
    let time = local_ms(civil, zone).ok_or(ErrorLineFault::Time)?;
    let rest = &line[20..];
    let rest = rest.strip_prefix(b"[").ok_or(ErrorLineFault::Level)?;
    let close = memchr::memchr(b']', rest).ok_or(ErrorLineFault::Level)?;
    let level = &rest[..close];
    let mut at = 20 + 1 + close + 1;
    // "1234#0: " then an optional "*5 " connection number.
    if let Some(k) = memchr::memmem::find(&line[at..], b": ") {
        if line[at..at + k]
            .trim_ascii()
            .iter()
            .all(|c| c.is_ascii_digit() || *c == b'#')
        {
            at += k + 2;
        }
    }
    let body = &line[at..];
    let body = match body.strip_prefix(b"*") {
        Some(b) => {
            let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
            b[n..].strip_prefix(b" ").unwrap_or(&b[n..])
        }
        None => body,
    };
    let body_start = line.len() - body.len();
    let Some(k) = memchr::memmem::find(body, b", client: ") else {
        return Err(ErrorLineFault::NoClient);
    };
    let message = &body[..k];
    let tail_start = body_start + k + 2;
    let mut fields = NginxTail {
        rest: &line[tail_start..],
        offset: tail_start,
    };
    let (mut peer, mut request, mut host, mut referer) = (None, &b""[..], &b""[..], &b""[..]);
    while let Some((key, value, start, end)) = fields.next() {
        match key {
            b"client" => {
                peer =
                    Some(super::proxy::parse_ip(value).ok_or(ErrorLineFault::Client(start, end))?)
            }
            b"request" => request = value,
            b"host" => host = value,
            b"referrer" => referer = value,
            _ => {}
        }
    }
    Ok(ErrorLine {
        time,
        level,
        peer: peer.ok_or(ErrorLineFault::NoClient)?,
        message,
        request,
        host,
        referer,
    })
}

/// The `key: value, key: "value"` tail of an nginx error line.
struct NginxTail<'a> {
    rest: &'a [u8],
    offset: usize,
}

impl<'a> NginxTail<'a> {
    /// (key, value, value start, value end) in the whole line.
    fn next(&mut self) -> Option<(&'a [u8], &'a [u8], usize, usize)> {
        let colon = memchr::memmem::find(self.rest, b": ")?;
        let key = &self.rest[..colon];
        let after = &self.rest[colon + 2..];
        let base = self.offset + colon + 2;
        let (value, start, used) = if let Some(quoted) = after.strip_prefix(b"\"") {
            // Up to the closing quote that ends the value (nginx escapes
            // quotes inside as \x22).
            let end = memchr::memchr(b'"', quoted).unwrap_or(quoted.len());
            (&quoted[..end], base + 1, (end + 2).min(after.len()))
        } else {
            let end = memchr::memmem::find(after, b", ").unwrap_or(after.len());
            (&after[..end], base, end)
        };
        let consumed = colon + 2 + used;
        let rest = &self.rest[consumed.min(self.rest.len())..];
        let skip = if rest.starts_with(b", ") { 2 } else { 0 };
        self.rest = &rest[skip..];
        self.offset += consumed + skip;
        Some((key, value, start, start + value.len()))
    }
}

/// `[Mon Jan 01 12:00:00.123456 2024] [module:level] [pid N] [client IP:port] message`
/// (2.4) or `[Mon Jan 01 12:00:00 2024] [error] [client IP] message` (2.2).
fn apache<'a>(line: &'a [u8], zone: &jiff::tz::TimeZone) -> Result<ErrorLine<'a>, ErrorLineFault> {
    let rest = line.strip_prefix(b"[").ok_or(ErrorLineFault::Time)?;
    let close = memchr::memchr(b']', rest).ok_or(ErrorLineFault::Time)?;
    let stamp = &rest[..close];
    // "Mon Jan 01 12:00:00[.ffffff] 2024"
    let parts: Vec<&[u8]> = stamp
        .split(|&b| b == b' ')
        .filter(|p| !p.is_empty())
        .collect();
    let [_, month, day, clock, year] = parts[..] else {
        return Err(ErrorLineFault::Time);
    };
    let (hms, frac) = match memchr::memchr(b'.', clock) {
        Some(p) => (&clock[..p], &clock[p + 1..]),
        None => (clock, &b""[..]),
    };
    let hms: Vec<&[u8]> = hms.split(|&b| b == b':').collect();
    let [h, m, s] = hms[..] else {
        return Err(ErrorLineFault::Time);
    };
    let civil = Civil {
        year: i64::from(digits(year).ok_or(ErrorLineFault::Time)?),
        month: month_abbrev(month).ok_or(ErrorLineFault::Time)?,
        day: digits(day).ok_or(ErrorLineFault::Time)?,
        hour: digits(h).ok_or(ErrorLineFault::Time)?,
        minute: digits(m).ok_or(ErrorLineFault::Time)?,
        second: digits(s).ok_or(ErrorLineFault::Time)?,
        millis: frac.get(..3).and_then(digits).unwrap_or(0),
        ..Civil::default()
    };
    let time = local_ms(civil, zone).ok_or(ErrorLineFault::Time)?;
    let mut at = 1 + close + 1;
    let mut level: &[u8] = b"";
    let mut peer = None;
    // The bracketed fields, in order: [module:level] or [level], [pid …],
    // [client …]; the message follows.
    while line.get(at) == Some(&b' ') && line.get(at + 1) == Some(&b'[') {
        let open = at + 2;
        let mut end = open + memchr::memchr(b']', &line[open..]).ok_or(ErrorLineFault::Level)?;
        if line[open..].starts_with(b"client [") {
            // A bracketed IPv6 address: the field closes after it.
            end = end + 1 + memchr::memchr(b']', &line[end + 1..]).ok_or(ErrorLineFault::Level)?;
        }
        let field = &line[open..end];
        if let Some(client) = field.strip_prefix(b"client ") {
            // "1.2.3.4:5678", "[2001:db8::1]:5678" or a bare address.
            let addr = super::proxy::parse_ip(client)
                .or_else(|| {
                    let p = memchr::memrchr(b':', client)?;
                    let host = &client[..p];
                    let host = host
                        .strip_prefix(b"[")
                        .and_then(|h| h.strip_suffix(b"]"))
                        .unwrap_or(host);
                    super::proxy::parse_ip(host)
                })
                .ok_or(ErrorLineFault::Client(open + 7, end))?;
            peer = Some(addr);
        } else if !field.starts_with(b"pid ") && level.is_empty() {
            level = match memchr::memrchr(b':', field) {
                Some(p) => &field[p + 1..],
                None => field,
            };
        }
        at = end + 1;
    }
    if level.is_empty() {
        return Err(ErrorLineFault::Level);
    }
    let peer = peer.ok_or(ErrorLineFault::NoClient)?;
    let message = line[at..].trim_ascii_start();
    // ", referer: URL" closes many Apache messages.
    let (message, referer) = match memchr::memmem::rfind(message, b", referer: ") {
        Some(p) => (&message[..p], &message[p + 11..]),
        None => (message, &b""[..]),
    };
    Ok(ErrorLine {
        time,
        level,
        peer,
        message,
        request: b"",
        host: b"",
        referer,
    })
}

/// The request line an error names, split, for the path fields.
pub fn request_parts(request: &[u8]) -> super::request::RequestLine<'_> {
    split_request_line(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::UTC
    }

    #[test]
    fn nginx_lines_become_records() {
        let line = br#"2024/01/01 12:00:00 [error] 1234#0: *5 open() "/var/www/x.php" failed (2: No such file or directory), client: 198.51.100.7, server: example.com, request: "GET /x.php HTTP/1.1", host: "example.com", referrer: "http://a.example/""#;
        let r = parse(ErrorDialect::Nginx, line, &utc()).unwrap();
        assert_eq!(r.level, b"error");
        assert_eq!(r.peer.to_string(), "198.51.100.7");
        assert_eq!(
            r.message,
            br#"open() "/var/www/x.php" failed (2: No such file or directory)"#
        );
        assert_eq!(r.request, b"GET /x.php HTTP/1.1");
        assert_eq!(r.host, b"example.com");
        assert_eq!(r.referer, b"http://a.example/");
        assert_eq!(r.time, 1_704_110_400_000);
        let auth = br#"2024/01/01 12:00:01 [error] 77#77: *9 user "admin": password mismatch, client: 2001:db8::5, server: _, request: "GET /admin HTTP/1.1", host: "h""#;
        let r = parse(ErrorDialect::Nginx, auth, &utc()).unwrap();
        assert_eq!(r.message, br#"user "admin": password mismatch"#);
        assert_eq!(r.peer.to_string(), "2001:db8::5");
        let startup = b"2024/01/01 12:00:00 [notice] 1#1: using the \"epoll\" event method";
        assert_eq!(
            parse(ErrorDialect::Nginx, startup, &utc()),
            Err(ErrorLineFault::NoClient)
        );
    }

    #[test]
    fn apache_lines_of_both_versions_become_records() {
        let v24 = b"[Mon Jan 01 12:00:00.123456 2024] [auth_basic:error] [pid 1234:tid 5678] [client 198.51.100.8:51234] AH01618: user bob not found: /private, referer: http://x.example/";
        let r = parse(ErrorDialect::Apache, v24, &utc()).unwrap();
        assert_eq!(r.level, b"error");
        assert_eq!(r.peer.to_string(), "198.51.100.8");
        assert_eq!(r.message, b"AH01618: user bob not found: /private");
        assert_eq!(r.referer, b"http://x.example/");
        assert_eq!(r.time, 1_704_110_400_123);
        let v22 = b"[Mon Jan 01 12:00:00 2024] [error] [client 198.51.100.9] File does not exist: /var/www/wp-login.php";
        let r = parse(ErrorDialect::Apache, v22, &utc()).unwrap();
        assert_eq!(r.level, b"error");
        assert_eq!(r.message, b"File does not exist: /var/www/wp-login.php");
        let v6 = b"[Mon Jan 01 12:00:00 2024] [core:info] [pid 9] [client [2001:db8::9]:443] AH00128: File does not exist";
        assert_eq!(
            parse(ErrorDialect::Apache, v6, &utc())
                .unwrap()
                .peer
                .to_string(),
            "2001:db8::9"
        );
        let no_client = b"[Mon Jan 01 12:00:00 2024] [mpm_event:notice] [pid 1] AH00489: Apache/2.4.57 configured";
        assert_eq!(
            parse(ErrorDialect::Apache, no_client, &utc()),
            Err(ErrorLineFault::NoClient)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = parse(ErrorDialect::Nginx, &b, &utc());
            let _ = parse(ErrorDialect::Apache, &b, &utc());
        }
    }
}
