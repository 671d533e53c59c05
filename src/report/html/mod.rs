//! `report --html` and `replay --html`: one self-contained HTML file.
//!
//! The page is a template shipped in the binary (`report.html`, with the
//! shared `page.css` and `page.js` and the report's own `report.js`) and the
//! report's data as one JSON document inside a `<script type=
//! "application/json">` element. The script draws charts as inline SVG and
//! tables from that data, with DOM text nodes only (never `innerHTML`), so a
//! log's text stays text. A Content-Security-Policy in the page forbids
//! every network request: it works from `file://` and as a mail attachment.
//!
//! Charts and tables are hand-written (about 500 lines of script): a
//! charting library small enough to vendor does less than the page needs
//! (a brush that filters other views), and a big one would be most of the
//! file's size.

use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use super::Report;
use crate::detect::Decision;
use crate::detect::addr::to_bits;
use crate::log::time::EpochMs;
use crate::stats::Stats;

const TEMPLATE: &str = include_str!("report.html");
const CSS: &str = include_str!("page.css");
const COMMON_JS: &str = include_str!("page.js");
const REPORT_JS: &str = include_str!("report.js");
const LIVE_TEMPLATE: &str = include_str!("live.html");
const LIVE_JS: &str = include_str!("live.js");

/// Most buckets of the fine timeline the page aggregates from: enough for
/// minute bars over a day and a half, small enough to stay under 100 KB.
const FINE_BUCKETS: u64 = 2000;

/// Most decisions the page lists (a replay of a flood can make millions);
/// the count of all of them is shown beside.
pub const MAX_DECISIONS: usize = 5000;

/// Where the decisions came from, for the page to say.
#[derive(Debug, Clone, Serialize)]
pub struct RulesUsed {
    /// "built-in rules" or the configuration files.
    pub source: String,
    pub rules: usize,
}

/// What a page is made from besides the report.
pub struct Inputs<'a> {
    pub report: &'a Report,
    pub stats: &'a Stats,
    /// Input names (files), for the title and decisions' evidence.
    pub names: &'a [String],
    pub zone: Option<&'a jiff::tz::TimeZone>,
    /// A replay's decisions, in log order, when rules ran.
    pub decisions: Option<(&'a [Decision], RulesUsed)>,
}

#[derive(Debug, Serialize)]
struct Page<'a> {
    title: String,
    generated: String,
    /// false: the page shows times in the viewer's zone (`--local`).
    utc: bool,
    report: &'a Report,
    timeline: Fine,
    /// Parallel to `report.ips`.
    clients: Vec<ClientExtra>,
    rules: Option<RulesUsed>,
    decisions: Vec<Value>,
    decisions_total: usize,
}

/// The timeline at the finest bucket the page may show: each row is
/// `[hits, bytes, other, 1xx, 2xx, 3xx, 4xx, 5xx]`, from `start_ms` on,
/// gaps included.
#[derive(Debug, Serialize, PartialEq)]
struct Fine {
    bucket_s: u64,
    start_ms: i64,
    rows: Vec<[u64; 8]>,
}

#[derive(Debug, Serialize)]
struct ClientExtra {
    pages: u64,
    static_hits: u64,
    first_ms: EpochMs,
    last_ms: EpochMs,
    /// Requests per minute over the time the client was seen (a minute at
    /// least).
    per_minute: f64,
    /// Indexes into `decisions` of those about this client (its address
    /// or a network holding it).
    decisions: Vec<usize>,
}

/// The page, ready to write.
pub fn render(i: &Inputs<'_>) -> String {
    let decisions = i.decisions.as_ref().map_or(&[][..], |(d, _)| d);
    let cx = super::decisions::Context {
        names: i.names,
        zone: i.zone,
    };
    let shown = &decisions[..decisions.len().min(MAX_DECISIONS)];
    let decision_values: Vec<Value> = shown
        .iter()
        .map(|d| {
            let mut v: Value = serde_json::from_str(&super::decisions::decision_json(d, &cx))
                .unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.insert("at_ms".into(), d.at.into());
            }
            v
        })
        .collect();
    let clients = i
        .report
        .ips
        .iter()
        .map(|row| client_extra(i.stats, &row.ip, shown))
        .collect();
    let title = match i.names {
        [] => "webfence report".to_string(),
        [one] => format!("webfence report: {one}"),
        [one, rest @ ..] => format!("webfence report: {one} and {} more", rest.len()),
    };
    let page = Page {
        title: title.clone(),
        generated: crate::log::time::format_rfc3339(
            jiff::Timestamp::now().as_millisecond(),
            i.zone,
        ),
        utc: i.zone.is_none(),
        report: i.report,
        timeline: fine_timeline(i.stats),
        clients,
        rules: i.decisions.as_ref().map(|(_, r)| r.clone()),
        decisions: decision_values,
        decisions_total: decisions.len(),
    };
    // Serialising plain data cannot fail.
    let data = serde_json::to_string(&page).unwrap_or_default();
    let title = escape_text(&title);
    let js = format!("{COMMON_JS}\n{REPORT_JS}");
    let data = script_safe(&data);
    fill(
        TEMPLATE,
        &[
            ("TITLE", &title),
            ("CSS", CSS),
            ("JS", &js),
            ("DATA", &data),
        ],
    )
}

/// The template with each `{{NAME}}` replaced by its value. Markers are
/// found in the template only: a value holding `{{JS}}` (a log line can)
/// stays as it is.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let extra: usize = values.iter().map(|(_, v)| v.len()).sum();
    let mut out = String::with_capacity(template.len() + extra);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open..].find("}}") else {
            break;
        };
        let name = &rest[open + 2..open + close];
        out.push_str(&rest[..open]);
        match values.iter().find(|(n, _)| *n == name) {
            Some((_, v)) => out.push_str(v),
            None => out.push_str(&rest[open..open + close + 2]),
        }
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    out
}

/// The daemon's live page (`[web]`); its data comes from `/api/live`.
pub fn live_page() -> String {
    fill(
        LIVE_TEMPLATE,
        &[("CSS", CSS), ("JS", &format!("{COMMON_JS}\n{LIVE_JS}"))],
    )
}

fn client_extra(stats: &Stats, shown_ip: &str, decisions: &[Decision]) -> ClientExtra {
    let ip: Option<IpAddr> = shown_ip.parse().ok();
    let ip = ip.unwrap_or(crate::log::parse::UNRESOLVED);
    let Some(c) = stats.clients.get(&ip) else {
        return ClientExtra {
            pages: 0,
            static_hits: 0,
            first_ms: 0,
            last_ms: 0,
            per_minute: 0.0,
            decisions: Vec::new(),
        };
    };
    let minutes = ((c.last - c.first) as f64 / 60_000.0).max(1.0);
    let bits = to_bits(ip);
    let about = if ip == crate::log::parse::UNRESOLVED {
        Vec::new()
    } else {
        decisions
            .iter()
            .enumerate()
            .filter(|(_, d)| d.subject.contains(bits))
            .map(|(k, _)| k)
            .collect()
    };
    ClientExtra {
        pages: c.pages,
        static_hits: c.hits - c.pages,
        first_ms: c.first,
        last_ms: c.last,
        per_minute: (c.hits as f64 / minutes * 100.0).round() / 100.0,
        decisions: about,
    }
}

fn fine_timeline(stats: &Stats) -> Fine {
    let (Some(first), Some(last)) = (stats.minutes.keys().min(), stats.minutes.keys().max()) else {
        return Fine {
            bucket_s: 60,
            start_ms: 0,
            rows: Vec::new(),
        };
    };
    let span_s = ((last - first + 1) * 60) as u64;
    let bucket_s = super::BUCKETS
        .iter()
        .copied()
        .find(|b| span_s.div_ceil(*b) <= FINE_BUCKETS)
        .unwrap_or_else(|| {
            let week = super::BUCKETS[super::BUCKETS.len() - 1];
            span_s.div_ceil(week).div_ceil(FINE_BUCKETS) * week
        });
    let per = (bucket_s / 60) as i64;
    let lo = first.div_euclid(per);
    let hi = last.div_euclid(per);
    let mut rows = vec![[0u64; 8]; (hi - lo + 1) as usize];
    for (minute, m) in &stats.minutes {
        let row = &mut rows[(minute.div_euclid(per) - lo) as usize];
        row[0] += m.hits;
        row[1] += m.bytes;
        for (k, n) in m.by_class.iter().enumerate() {
            row[2 + k] += n;
        }
    }
    Fine {
        bucket_s,
        start_ms: lo * per * 60_000,
        rows,
    }
}

/// JSON made safe inside a `<script>` element: no `<` at all (so neither
/// `</script>` nor `<!--` can end or change the element), and the two line
/// separators JavaScript once treated as line ends.
fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// Text for an HTML text node (the title).
fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Minute;

    #[test]
    fn script_text_cannot_close_its_element() {
        let json = serde_json::to_string("</script><script>alert(1)</script>\u{2028}").unwrap();
        let safe = script_safe(&json);
        assert!(!safe.contains('<'), "{safe}");
        let back: String = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, "</script><script>alert(1)</script>\u{2028}");
    }

    #[test]
    fn fine_timeline_fills_gaps_and_sums_classes() {
        let mut s = Stats::default();
        let m = |hits, class: usize| {
            let mut by_class = [0; 6];
            by_class[class] = hits;
            Minute {
                hits,
                bytes: hits * 10,
                by_class,
            }
        };
        s.minutes.insert(100, m(3, 2));
        s.minutes.insert(103, m(1, 4));
        let f = fine_timeline(&s);
        assert_eq!(f.bucket_s, 60);
        assert_eq!(f.start_ms, 100 * 60_000);
        assert_eq!(
            f.rows,
            vec![
                [3, 30, 0, 0, 3, 0, 0, 0],
                [0; 8],
                [0; 8],
                [1, 10, 0, 0, 0, 0, 1, 0]
            ]
        );
        // A month of minutes gets a coarser bucket, within the bound.
        s.minutes.insert(100 + 60 * 24 * 30, m(1, 5));
        let f = fine_timeline(&s);
        assert!(f.rows.len() as u64 <= FINE_BUCKETS, "{}", f.rows.len());
        assert_eq!(f.rows.iter().map(|r| r[0]).sum::<u64>(), 5);
        assert_eq!(f.rows.iter().map(|r| r[7]).sum::<u64>(), 1);
    }

    #[test]
    fn markers_are_filled_from_the_template_only() {
        let out = fill("<{{A}}|{{B}}|{{C}}>", &[("A", "{{B}}"), ("B", "b")]);
        assert_eq!(out, "<{{B}}|b|{{C}}>");
    }

    #[test]
    fn the_title_is_escaped() {
        assert_eq!(escape_text("<a&b>\""), "&lt;a&amp;b&gt;&quot;");
    }
}
