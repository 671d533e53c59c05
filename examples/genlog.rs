//! Generates a realistic combined-format access log for benchmarks, tests and
//! the shipped sample: tens of thousands of IPv4 and IPv6 clients with a
//! heavy-tailed distribution, pages and static files, real user agents,
//! scanners, bad requests, and a few floods.
//!
//! Usage: cargo run --release --example genlog -- LINES [SEED] [distinct-v6] > access.log
//! (GENLOG_START=EPOCH_SECONDS GENLOG_SPAN=SECONDS move the time range.)
//!
//! With `distinct-v6`, every line comes from a new random IPv6 client,
//! all within ten minutes: the worst case for per-client state (a DDoS from
//! a huge pool), used by the memory-cap benchmark.
//!
//! Deterministic for a given LINES and SEED. Uses its own small PRNG so the
//! project needs no `rand` dependency for it.

use std::io::{BufWriter, Write};

/// SplitMix64: tiny, fast, good enough for synthetic data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Heavy-tailed index in 0..n: a few clients make most requests.
    fn zipfish(&mut self, n: u64) -> u64 {
        ((n as f64) * self.unit().powi(4)) as u64
    }
}

const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "curl/8.5.0",
    "python-requests/2.31.0",
    "Go-http-client/1.1",
];

const SCANNER_AGENTS: &[&str] = &[
    "sqlmap/1.7.2#stable (https://sqlmap.org)",
    "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:007086)",
    "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
    "Mozilla/5.0 zgrab/0.x",
];

const PAGES: &[&str] = &[
    "/",
    "/about",
    "/contact",
    "/blog",
    "/pricing",
    "/login",
    "/cart",
    "/checkout",
];
const STATIC: &[&str] = &[
    "/static/css/site.css",
    "/static/js/app.js",
    "/static/js/vendor.js",
    "/favicon.ico",
    "/static/fonts/inter.woff2",
];
const PROBES: &[&str] = &[
    "/.env",
    "/.git/config",
    "/wp-login.php",
    "/xmlrpc.php",
    "/phpmyadmin/index.php",
    "/pma/scripts/setup.php",
    "/shell.php",
    "/cgi-bin/luci",
    "/index.php?id=1%27%20OR%201=1--",
    "/../../etc/passwd",
];
const REFERRERS: &[&str] = &[
    "https://www.google.com/",
    "https://example.com/",
    "https://example.com/blog",
    "https://duckduckgo.com/",
];

fn ip(rng_index: u64, v6: bool) -> String {
    // Spread clients over realistic-looking, documentation-free ranges.
    let h = rng_index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    if v6 {
        format!(
            "2a02:{:x}:{:x}::{:x}",
            (h >> 16) & 0xffff,
            (h >> 32) & 0xffff,
            h & 0xffff
        )
    } else {
        format!(
            "{}.{}.{}.{}",
            11 + (h >> 56) % 200,
            (h >> 40) & 0xff,
            (h >> 24) & 0xff,
            1 + (h & 0xff) % 254
        )
    }
}

/// One request per client, each client a random address in 2000::/3.
fn distinct_v6(lines: u64, rng: &mut Rng) {
    let start = 1_710_028_800i64;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    let (mut last_t, mut when) = (i64::MIN, String::new());
    for n in 0..lines {
        let t = start + (n as i64 * 600) / lines.max(1) as i64;
        if t != last_t {
            last_t = t;
            when = jiff::Timestamp::from_second(t).map_or_else(
                |_| String::new(),
                |ts| ts.strftime("%d/%b/%Y:%H:%M:%S +0000").to_string(),
            );
        }
        let hi = (rng.next() >> 3) | (1 << 61);
        let lo = rng.next();
        let addr = std::net::Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo));
        let page = rng.below(500);
        if writeln!(
            out,
            "{addr} - - [{when}] \"GET /page/{page} HTTP/1.1\" 200 5120 \"-\" \"{}\"",
            AGENTS[(lo % AGENTS.len() as u64) as usize]
        )
        .is_err()
        {
            return;
        }
    }
    let _ = out.flush();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let lines: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(42);
    let mut rng = Rng(seed);
    if args.next().as_deref() == Some("distinct-v6") {
        distinct_v6(lines, &mut rng);
        return;
    }
    let clients = 50_000u64;
    // Six hours of traffic starting 2024-03-10 00:00:00 UTC, unless
    // GENLOG_START (epoch seconds) and GENLOG_SPAN (seconds) say otherwise:
    // scripts/bench-top writes a log whose times follow the wall clock.
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<i64>().ok());
    let start = env("GENLOG_START").unwrap_or(1_710_028_800);
    let span = env("GENLOG_SPAN").unwrap_or(6 * 3600).max(1);
    let floods = [
        (ip(7_000_001, false), "/search?q=cheap"),
        (ip(7_000_002, false), "/wp-login.php"),
        (ip(7_000_003, true), "/"),
    ];

    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    let (mut last_t, mut when) = (i64::MIN, String::new());
    for n in 0..lines {
        let t = start + (n as i64 * span) / lines as i64;
        if t != last_t {
            last_t = t;
            when = jiff::Timestamp::from_second(t).map_or_else(
                |_| String::new(),
                |ts| ts.strftime("%d/%b/%Y:%H:%M:%S +0000").to_string(),
            );
        }
        let roll = rng.below(1000);
        let (client, request, status, bytes, referer, agent): (
            String,
            String,
            u16,
            u64,
            &str,
            &str,
        ) = if roll < 60 {
            // Floods: three clients hammering one URL each.
            let (c, path) = &floods[(n % 3) as usize];
            let status = if path.contains("wp-login") { 404 } else { 200 };
            (
                c.clone(),
                format!("GET {path} HTTP/1.1"),
                status,
                5120,
                "-",
                "python-requests/2.31.0",
            )
        } else if roll < 75 {
            // Scanners.
            let c = ip(100_000 + rng.below(300), rng.below(5) == 0);
            let path = PROBES[rng.below(PROBES.len() as u64) as usize];
            (
                c,
                format!("GET {path} HTTP/1.1"),
                404,
                153,
                "-",
                SCANNER_AGENTS[rng.below(SCANNER_AGENTS.len() as u64) as usize],
            )
        } else if roll < 77 {
            // Bad requests as nginx logs them.
            let c = ip(rng.zipfish(clients), false);
            let req = if rng.below(2) == 0 {
                String::new()
            } else {
                r"\x16\x03\x01\x02\x00\x01\x00\x01\xFC\x03\x03".to_string()
            };
            (c, req, 400, 157, "-", "-")
        } else {
            let idx = rng.zipfish(clients);
            let c = ip(idx, idx % 5 == 0);
            let agent = AGENTS[(idx % AGENTS.len() as u64) as usize];
            let referer = if rng.below(3) == 0 {
                "-"
            } else {
                REFERRERS[rng.below(REFERRERS.len() as u64) as usize]
            };
            let kind = rng.below(100);
            let (path, status, bytes) = if kind < 45 {
                let p = STATIC[rng.below(STATIC.len() as u64) as usize].to_string();
                let st = if rng.below(4) == 0 { 304 } else { 200 };
                (
                    p,
                    st,
                    if st == 304 {
                        0
                    } else {
                        2_000 + rng.below(200_000)
                    },
                )
            } else if kind < 50 {
                (
                    format!("/img/products/{}.jpg", rng.zipfish(5_000)),
                    200,
                    20_000 + rng.below(300_000),
                )
            } else if kind < 70 {
                (
                    format!("/product/{}", rng.zipfish(20_000)),
                    200,
                    8_000 + rng.below(40_000),
                )
            } else if kind < 80 {
                (
                    format!(
                        "/search?q=item{}&page={}",
                        rng.below(10_000),
                        1 + rng.below(5)
                    ),
                    200,
                    6_000 + rng.below(20_000),
                )
            } else if kind < 88 {
                (
                    PAGES[rng.below(PAGES.len() as u64) as usize].to_string(),
                    200,
                    4_000 + rng.below(30_000),
                )
            } else if kind < 94 {
                (
                    format!("/api/v1/items/{}", rng.below(50_000)),
                    200,
                    300 + rng.below(3_000),
                )
            } else if kind < 97 {
                (
                    format!("/blog/post-{}", rng.below(400)),
                    if rng.below(10) == 0 { 301 } else { 200 },
                    12_000,
                )
            } else if kind < 99 {
                (format!("/old/page-{}.html", rng.below(2_000)), 404, 153)
            } else {
                (
                    "/checkout".to_string(),
                    if rng.below(2) == 0 { 500 } else { 503 },
                    512,
                )
            };
            let method = if path == "/checkout" || (path == "/login" && rng.below(2) == 0) {
                "POST"
            } else {
                "GET"
            };
            (
                c,
                format!("{method} {path} HTTP/1.1"),
                status,
                bytes,
                referer,
                agent,
            )
        };
        let _ = writeln!(
            out,
            r#"{client} - - [{when}] "{request}" {status} {bytes} "{referer}" "{agent}""#
        );
    }
    let _ = out.flush();
}
