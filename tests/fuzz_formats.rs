//! Mutation fuzzing of every log format webfence reads: real lines of each
//! format are cut, spliced, overwritten with hostile bytes and duplicated,
//! then parsed, described, classified by the built-in rules and escaped.
//! Nothing may panic, and what parses must hold up: a plausible time, a
//! status below 1000, display text free of control characters. CI runs a
//! few hundred cases per format; `scripts/fuzz` runs far more
//! (PROPTEST_CASES).

use proptest::prelude::*;
use webfence::detect::rules::ClassifyScratch;
use webfence::detect::{Config, RuleSet};
use webfence::log::format::{Dialect, compile};
use webfence::log::parse::escape_for_display;
use webfence::log::{Parser, Preset, Scratch, TrustedProxies};

/// One real line per format, and the parser for it.
fn corpus() -> Vec<(Parser, &'static str)> {
    let proxies = || TrustedProxies::default();
    let custom = |dialect, spec: &str, d: Option<&str>, t: Option<&str>| {
        Parser::text(
            compile(dialect, spec, d, t).expect("format compiles"),
            proxies(),
        )
    };
    vec![
        (
            Parser::preset(Preset::Combined, proxies()),
            r#"203.0.113.7 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif?x=1 HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)""#,
        ),
        (
            Parser::preset(Preset::HostMain, proxies()),
            r#"shop.example 203.0.113.7, 10.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" - 0 "-" "x" "198.51.100.1""#,
        ),
        (
            Parser::preset(Preset::Combined, proxies()).behind_syslog(),
            r#"<190>1 2024-05-01T10:00:00Z web1 nginx 2869 - [a b="c d"] crawl-1.example.com - - [01/May/2024:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "x""#,
        ),
        (
            Parser::preset(Preset::NginxError, proxies()),
            r#"2024/01/01 12:00:00 [error] 1234#0: *5 open() "/var/www/x.php" failed (2: No such file or directory), client: 198.51.100.7, server: example.com, request: "GET /x.php HTTP/1.1", host: "example.com""#,
        ),
        (
            Parser::preset(Preset::ApacheError, proxies()),
            r#"[Mon Jan 01 12:00:00.123456 2024] [auth_basic:error] [pid 1234:tid 5678] [client [2001:db8::9]:443] AH01618: user bob not found: /private, referer: http://x.example/"#,
        ),
        (
            Parser::preset(Preset::Common, proxies()),
            r#"2001:db8::1 - - [10/Oct/2000:13:55:36 +0000] "POST /login HTTP/1.1" 401 12"#,
        ),
        (
            Parser::preset(Preset::VhostCombined, proxies()),
            r#"www.example.com:443 198.51.100.4 - - [01/May/2024:10:00:00 +0200] "GET /wp-login.php HTTP/2.0" 404 153 "-" "curl/8.0""#,
        ),
        (
            Parser::preset(Preset::Main, proxies()),
            r#"10.0.0.1 - - [01/May/2024:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "Go-http-client/1.1" "192.0.2.9, 10.0.0.2""#,
        ),
        (
            Parser::preset(Preset::Json, proxies()),
            r#"{"remote_addr":"192.0.2.1","time":"2024-05-01T10:00:00+00:00","request":"GET /x?y=1 HTTP/1.1","status":200,"body_bytes_sent":10,"http_user_agent":"a","http_host":"h"}"#,
        ),
        (
            Parser::preset(Preset::Json, proxies()),
            r#"{"level":"info","ts":1710028800.25,"msg":"handled request","request":{"remote_ip":"2001:db8::9","method":"GET","host":"c.example","uri":"/x?y=1","headers":{"User-Agent":["curl/8"]}},"size":10,"status":200}"#,
        ),
        (
            custom(
                Dialect::Nginx,
                "$remote_addr [$time_iso8601] \"$request\" $status $body_bytes_sent $request_time \"$http_user_agent\"",
                None,
                None,
            ),
            r#"192.0.2.3 [2024-05-01T10:00:00+02:00] "GET /a HTTP/1.1" 200 99 0.012 "Mozilla/5.0""#,
        ),
        (
            custom(
                Dialect::Nginx,
                "$msec $remote_addr \"$request\" $status",
                None,
                None,
            ),
            r#"1714557600.123 192.0.2.4 "GET /b HTTP/1.1" 304"#,
        ),
        (
            custom(
                Dialect::Apache,
                r#"%v %h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-agent}i\" %D"#,
                None,
                None,
            ),
            r#"shop.example 192.0.2.5 - - [01/May/2024:10:00:00 +0000] "GET /c HTTP/1.1" 500 - "-" "bot" 1234"#,
        ),
        (
            custom(
                Dialect::GoAccess,
                r#"%h %^[%d:%t %^] "%r" %s %b "%R" "%u""#,
                Some("%d/%b/%Y"),
                Some("%H:%M:%S"),
            ),
            r#"192.0.2.6 - - [01/May/2024:10:00:00 +0000] "GET /d HTTP/1.1" 200 1 "-" "ua""#,
        ),
    ]
}

/// Bytes an attacker likes to send: NUL, ESC, quotes, brackets, newlines,
/// invalid UTF-8, a bidi override, digits that overflow.
const HOSTILE: &[&[u8]] = &[
    b"\0",
    b"\x1b[2J",
    b"\"",
    b"[",
    b"]",
    b"\n",
    b"\r",
    b"\xff\xfe",
    "\u{202e}".as_bytes(),
    b"99999999999999999999999",
    b"-",
    b"%00",
    b"{",
    b"}",
    b"\\",
    b" ",
    b"\t",
];

#[derive(Debug, Clone)]
enum Mutation {
    Cut(usize),
    Remove(usize, usize),
    Insert(usize, usize),
    Overwrite(usize, u8),
    Duplicate(usize, usize),
    Splice(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0usize..400).prop_map(Mutation::Cut),
        (0usize..400, 1usize..40).prop_map(|(a, n)| Mutation::Remove(a, n)),
        (0usize..400, 0..HOSTILE.len()).prop_map(|(a, h)| Mutation::Insert(a, h)),
        (0usize..400, any::<u8>()).prop_map(|(a, b)| Mutation::Overwrite(a, b)),
        (0usize..400, 1usize..60).prop_map(|(a, n)| Mutation::Duplicate(a, n)),
        (0usize..400, 0usize..10).prop_map(|(a, other)| Mutation::Splice(a, other)),
    ]
}

fn apply(line: &mut Vec<u8>, m: &Mutation, corpus: &[(Parser, &str)]) {
    let len = line.len();
    let at = |a: usize| if len == 0 { 0 } else { a % (len + 1) };
    match *m {
        Mutation::Cut(a) => line.truncate(at(a)),
        Mutation::Remove(a, n) => {
            let a = at(a);
            let end = (a + n).min(line.len());
            line.drain(a..end);
        }
        Mutation::Insert(a, h) => {
            let a = at(a);
            line.splice(a..a, HOSTILE[h].iter().copied());
        }
        Mutation::Overwrite(a, b) => {
            if len > 0 {
                line[a % len] = b;
            }
        }
        Mutation::Duplicate(a, n) => {
            let a = at(a);
            let end = (a + n).min(line.len());
            let piece = line[a..end].to_vec();
            line.splice(a..a, piece);
        }
        Mutation::Splice(a, other) => {
            let a = at(a);
            let donor = corpus[other % corpus.len()].1.as_bytes();
            line.truncate(a);
            line.extend_from_slice(&donor[donor.len() / 2..]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_lines_of_every_format_never_panic(
        which in 0usize..14,
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        static SHARED: std::sync::OnceLock<(Vec<(Parser, &'static str)>, RuleSet)> =
            std::sync::OnceLock::new();
        let (corpus, rules) = SHARED.get_or_init(|| {
            let Ok(rules) = RuleSet::compile(&Config::builtin()) else {
                panic!("the built-in rules compile");
            };
            (corpus(), rules)
        });
        let (parser, original) = &corpus[which % corpus.len()];
        let mut line = original.as_bytes().to_vec();
        for m in &mutations {
            apply(&mut line, m, corpus);
        }
        // Every format is tried on every mutant: a line may reach a
        // parser that was chosen for another format.
        for (p, _) in std::iter::once((parser, original)).chain(corpus.iter().map(|(p, l)| (p, l))) {
            let mut scratch = Scratch::default();
            match p.parse(&line, &mut scratch) {
                Ok(r) => {
                    prop_assert!((0..4_102_444_800_000).contains(&r.time), "time {}", r.time);
                    prop_assert!(r.status < 1000);
                    for text in [r.path, r.user_agent, r.referer, r.host, r.request] {
                        let shown = escape_for_display(text);
                        prop_assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
                    }
                    let _ = rules.classify(&r, false, &mut ClassifyScratch::default());
                }
                Err(e) => {
                    let said = e.describe(&line);
                    prop_assert!(!said.chars().any(|c| c.is_control() && c != '\n'), "{said:?}");
                }
            }
        }
    }
}
