//! `Request`: the plain record that the parse stage hands to every later stage.

use std::net::IpAddr;

use super::scan::{find_near, rfind_near};
use super::time::EpochMs;

/// One access-log line, parsed. Text fields borrow from the line (or, for JSON
/// logs, from the decoded document), so producing one allocates nothing.
///
/// Fields the format does not log are empty (`b""`) or `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The client after trusted-proxy resolution: who the report and the
    /// rules attribute the request to.
    pub client: IpAddr,
    /// The address that connected to the server, as logged.
    pub peer: IpAddr,
    pub time: EpochMs,
    /// The request line exactly as logged (`GET /a?b HTTP/1.1`, or `""`, or
    /// `\x16\x03\x01…` for a TLS handshake sent to a plain-HTTP port).
    pub request: &'a [u8],
    /// Empty when the request line has no recognisable method.
    pub method: &'a [u8],
    /// The path without its query; the raw request text when the request line
    /// could not be split, so floods of garbage still show up per "path".
    pub path: &'a [u8],
    pub query: &'a [u8],
    pub protocol: &'a [u8],
    pub status: u16,
    /// Response bytes; `-` in the log counts as 0.
    pub bytes: u64,
    pub referer: &'a [u8],
    pub user_agent: &'a [u8],
    /// Virtual host or Host header.
    pub host: &'a [u8],
    /// X-Forwarded-For as logged.
    pub forwarded_for: &'a [u8],
    pub request_time_us: Option<u64>,
    /// Error logs: the level (`error`, `warn`, `crit`…), empty for access
    /// logs.
    pub level: &'a [u8],
    /// Error logs: what the server said, with the client, request and host
    /// parts it names taken out into their own fields.
    pub message: &'a [u8],
}

/// The parts of an HTTP request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLine<'a> {
    pub method: &'a [u8],
    pub path: &'a [u8],
    pub query: &'a [u8],
    pub protocol: &'a [u8],
}

fn is_token_byte(b: u8) -> bool {
    // RFC 9110 tchar.
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Splits `METHOD SP target [SP HTTP/x]`. Anything else (empty, binary,
/// a lone word) keeps the raw text as the path and an empty method, so it is
/// still counted and visible instead of being dropped as an error.
pub fn split_request_line(raw: &[u8]) -> RequestLine<'_> {
    let unsplit = RequestLine {
        method: b"",
        path: raw,
        query: b"",
        protocol: b"",
    };
    let Some(sp) = find_near(b' ', raw) else {
        return unsplit;
    };
    let method = &raw[..sp];
    if method.is_empty() || !method.iter().all(|&b| is_token_byte(b)) {
        return unsplit;
    }
    let rest = &raw[sp + 1..];
    let (target, protocol) = match rfind_near(b' ', rest) {
        Some(i) if rest[i + 1..].starts_with(b"HTTP/") => (&rest[..i], &rest[i + 1..]),
        _ => (rest, &b""[..]),
    };
    let (path, query) = split_target(target);
    RequestLine {
        method,
        path,
        query,
        protocol,
    }
}

/// Splits a request target at the first `?`.
pub fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    match find_near(b'?', target) {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, b""),
    }
}

/// Whether a path names a static asset (stylesheet, script, image, font…),
/// which the report counts apart from pages, as GoAccess does.
pub fn is_static_path(path: &[u8]) -> bool {
    let name = match rfind_near(b'/', path) {
        Some(i) => &path[i + 1..],
        None => path,
    };
    let Some(dot) = name.iter().rposition(|&c| c == b'.') else {
        return false;
    };
    let ext = &name[dot + 1..];
    if ext.is_empty() || ext.len() > 5 {
        return false;
    }
    let mut lower = [0u8; 5];
    for (d, s) in lower.iter_mut().zip(ext) {
        *d = s.to_ascii_lowercase();
    }
    matches!(
        &lower[..ext.len()],
        b"css"
            | b"js"
            | b"mjs"
            | b"map"
            | b"png"
            | b"jpg"
            | b"jpeg"
            | b"gif"
            | b"webp"
            | b"avif"
            | b"svg"
            | b"ico"
            | b"bmp"
            | b"woff"
            | b"woff2"
            | b"ttf"
            | b"otf"
            | b"eot"
            | b"mp4"
            | b"webm"
            | b"mp3"
            | b"ogg"
            | b"wav"
            | b"pdf"
            | b"zip"
            | b"gz"
            | b"txt"
            | b"xml"
            | b"json"
            | b"swf"
            | b"flv"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_ordinary_request() {
        let r = split_request_line(b"GET /a/b?x=1&y=2 HTTP/1.1");
        assert_eq!(r.method, b"GET");
        assert_eq!(r.path, b"/a/b");
        assert_eq!(r.query, b"x=1&y=2");
        assert_eq!(r.protocol, b"HTTP/1.1");
    }

    #[test]
    fn keeps_spaces_inside_target() {
        let r = split_request_line(b"GET /a b HTTP/1.0");
        assert_eq!(r.path, b"/a b");
        assert_eq!(r.protocol, b"HTTP/1.0");
    }

    #[test]
    fn http09_and_unknown_method_are_split() {
        let r = split_request_line(b"GET /");
        assert_eq!(
            (r.method, r.path, r.protocol),
            (&b"GET"[..], &b"/"[..], &b""[..])
        );
        let r = split_request_line(b"PROPFIND /dav HTTP/1.1");
        assert_eq!(r.method, b"PROPFIND");
    }

    #[test]
    fn garbage_keeps_raw_text_as_path() {
        for raw in [
            &b""[..],
            b"\\x16\\x03\\x01\\x02\\x00\\x01",
            b"-",
            b"\xff\xfe /x",
        ] {
            let r = split_request_line(raw);
            assert_eq!(r.method, b"");
            assert_eq!(r.path, raw);
        }
    }

    #[test]
    fn static_paths() {
        assert!(is_static_path(b"/css/site.CSS"));
        assert!(is_static_path(b"/img/a.b/logo.png"));
        assert!(!is_static_path(b"/index.php"));
        assert!(!is_static_path(b"/a.css/page"));
        assert!(!is_static_path(b"/"));
        assert!(!is_static_path(b"/file."));
    }
}
