//! Access-log lines that came through syslog or journald carry a prefix
//! before the server's own line: RFC 3164 (`Sep 15 10:00:01 web1
//! nginx[2869]: `, optionally with `<PRI>`), the ISO-dated form rsyslog
//! writes (`2024-09-15T10:00:01.123+00:00 web1 nginx[2869]: `) and RFC 5424
//! (`<190>1 2024-09-15T10:00:01Z web1 nginx 2869 - - `). Hand-written on
//! bytes: it runs once per line, ahead of the parser, and a regex per line
//! would cost more than the parse.

/// The length of the syslog prefix at the start of `line`, if it has one.
pub fn prefix_len(line: &[u8]) -> Option<usize> {
    let (pri, rest) = match line.strip_prefix(b"<") {
        Some(after) => {
            let close = memchr::memchr(b'>', &after[..after.len().min(4)])?;
            if close == 0 || !after[..close].iter().all(u8::is_ascii_digit) {
                return None;
            }
            (close + 2, &after[close + 1..])
        }
        None => (0, line),
    };
    if let Some(after_version) = rest.strip_prefix(b"1 ") {
        return rfc5424(after_version).map(|n| pri + 2 + n);
    }
    let stamp = bsd_timestamp(rest).or_else(|| iso_timestamp(rest))?;
    // HOST TAG: — the tag ends at the first ": ".
    let after_stamp = &rest[stamp..];
    let host = word(after_stamp)?;
    let tag_start = stamp + host + 1;
    let tag_area = &rest[tag_start..];
    let colon = memchr::memmem::find(&tag_area[..tag_area.len().min(64)], b": ")?;
    if tag_area[..colon].contains(&b' ') {
        return None;
    }
    Some(pri + tag_start + colon + 2)
}

/// `Sep 15 10:00:01 ` (day space-padded or not): its length.
fn bsd_timestamp(b: &[u8]) -> Option<usize> {
    let b = b.get(..16)?;
    let month = b[..3].iter().all(u8::is_ascii_alphabetic) && b[3] == b' ';
    let day = (b[4] == b' ' || b[4].is_ascii_digit()) && b[5].is_ascii_digit() && b[6] == b' ';
    let time = b[7..15].iter().enumerate().all(|(i, c)| {
        if i == 2 || i == 5 {
            *c == b':'
        } else {
            c.is_ascii_digit()
        }
    });
    (month && day && time && b[15] == b' ').then_some(16)
}

/// `2024-09-15T10:00:01[.frac][Z|±hh:mm] `: its length.
fn iso_timestamp(b: &[u8]) -> Option<usize> {
    let head = b.get(..19)?;
    let shape = head.iter().enumerate().all(|(i, c)| match i {
        4 | 7 => *c == b'-',
        10 => *c == b'T',
        13 | 16 => *c == b':',
        _ => c.is_ascii_digit(),
    });
    if !shape {
        return None;
    }
    let end = memchr::memchr(b' ', b)?;
    Some(end + 1)
}

/// The length of the word at the start of `b`, which a space must follow.
fn word(b: &[u8]) -> Option<usize> {
    let end = memchr::memchr(b' ', b)?;
    (end > 0).then_some(end)
}

/// After `<PRI>1 `: TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD, then the
/// message. Structured data is `-` or `[…]` groups (quoted values may hold
/// spaces and escaped brackets).
fn rfc5424(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    for _ in 0..5 {
        at += word(&b[at..])? + 1;
    }
    let sd = &b[at..];
    if sd.starts_with(b"- ") {
        return Some(at + 2);
    }
    let mut i = 0;
    let mut quoted = false;
    while i < sd.len() {
        match sd[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b' ' if !quoted && i > 0 && sd[i - 1] == b']' => return Some(at + i + 1),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rest(line: &str) -> Option<&str> {
        prefix_len(line.as_bytes()).map(|n| &line[n..])
    }

    #[test]
    fn every_prefix_shape_is_stripped() {
        let msg = r#"1.2.3.4 - - [15/Sep/2024:10:00:01 +0000] "GET / HTTP/1.1" 200 5 "-" "x""#;
        for prefix in [
            "Sep 15 10:00:01 web1 nginx[2869]: ",
            "Sep  5 10:00:01 web1 nginx: ",
            "<190>Sep 15 10:00:01 web1 nginx[2869]: ",
            "2024-09-15T10:00:01.123456+00:00 web1 nginx[2869]: ",
            "<190>1 2024-09-15T10:00:01Z web1 nginx 2869 - - ",
            "<190>1 2024-09-15T10:00:01Z web1 nginx 2869 ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application x\"] ",
        ] {
            assert_eq!(rest(&format!("{prefix}{msg}")), Some(msg), "{prefix}");
        }
    }

    #[test]
    fn plain_access_lines_have_no_prefix() {
        for line in [
            r#"1.2.3.4 - - [15/Sep/2024:10:00:01 +0000] "GET / HTTP/1.1" 200 5"#,
            r#"example.com 1.2.3.4 - - [15/Sep/2024:10:00:01 +0000] "GET / HTTP/1.1" 200 5"#,
            "",
            "<",
            "<999999>",
            "Sep 15",
        ] {
            assert_eq!(prefix_len(line.as_bytes()), None, "{line}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            if let Some(n) = prefix_len(&b) {
                proptest::prop_assert!(n <= b.len());
            }
        }
    }
}
