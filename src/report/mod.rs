//! Report stage: turns aggregated [`Stats`] into sorted, bounded tables
//! (plain data), then renders them as terminal tables, JSON or CSV.

pub mod conns;
pub mod csv;
pub mod decisions;
pub mod digest;
pub mod html;
pub mod text;

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq};

use crate::log::parse::escape_for_display;
use crate::log::request::is_static_path;
use crate::log::time::format_rfc3339;
use crate::pipeline::{Analysis, MalformedSample};
use crate::stats::{Counter, Tally};

/// What lists are ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RankBy {
    Hits,
    Bytes,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Rows per table; 0 keeps all.
    pub top: usize,
    pub by: RankBy,
    /// Show times in this zone instead of UTC.
    pub zone: Option<jiff::tz::TimeZone>,
    /// Timeline bucket in seconds; `None` picks one from the time span.
    pub bucket_s: Option<u64>,
    /// Most buckets an automatic timeline may have.
    pub max_buckets: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub requests: u64,
    pub malformed: u64,
    /// Parsed lines excluded by the filters.
    pub filtered: u64,
    pub lines: u64,
    pub unique_ips: u64,
    pub unique_paths: u64,
    pub unique_user_agents: u64,
    pub bytes: u64,
    pub first: Option<String>,
    pub last: Option<String>,
    pub span_s: f64,
    pub mean_rps: f64,
    /// The busiest minute's rate.
    pub peak_rps: f64,
    pub peak_minute: Option<String>,
    pub format: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct IpRow {
    pub ip: String,
    pub hits: u64,
    pub percent: f64,
    pub bytes: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub first: String,
    pub last: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    pub status: u16,
    pub hits: u64,
    pub percent: f64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    pub start: String,
    pub hits: u64,
    pub bytes: u64,
}

/// A row of a table keyed by text (path, agent, host, …).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: String,
    pub hits: u64,
    pub bytes: u64,
    pub percent: f64,
}

/// Rows plus the name their key goes by in JSON and CSV (`path`, `host`…).
#[derive(Debug, Clone)]
pub struct Table {
    pub key_name: &'static str,
    pub rows: Vec<Row>,
}

impl Serialize for Table {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Named<'a>(&'static str, &'a Row);
        impl Serialize for Named<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(4))?;
                m.serialize_entry(self.0, &self.1.key)?;
                m.serialize_entry("hits", &self.1.hits)?;
                m.serialize_entry("bytes", &self.1.bytes)?;
                m.serialize_entry("percent", &self.1.percent)?;
                m.end()
            }
        }
        let mut seq = s.serialize_seq(Some(self.rows.len()))?;
        for row in &self.rows {
            seq.serialize_element(&Named(self.key_name, row))?;
        }
        seq.end()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub summary: Summary,
    pub ips: Vec<IpRow>,
    pub statuses: Vec<StatusRow>,
    /// Pages: paths that are not static files.
    pub paths: Table,
    pub static_files: Table,
    pub not_found: Table,
    pub user_agents: Table,
    pub hosts: Table,
    pub referrers: Table,
    pub methods: Table,
    /// Error logs: levels and message kinds (empty for access logs).
    pub levels: Table,
    pub error_messages: Table,
    pub timeline_bucket_s: u64,
    pub timeline: Vec<Bucket>,
    pub malformed_samples: Vec<MalformedSample>,
    pub warnings: Vec<String>,
}

/// Most rows a timeline with a user-chosen bucket may have.
const MAX_REQUESTED_BUCKETS: u64 = 100_000;

/// Timeline bucket sizes an automatic timeline chooses from, in seconds.
const BUCKETS: [u64; 12] = [
    60, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400, 604_800,
];

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 10_000.0 / whole as f64).round() / 100.0
    }
}

fn rank(by: RankBy, a: (u64, u64), b: (u64, u64)) -> Ordering {
    let (ha, ba) = a;
    let (hb, bb) = b;
    match by {
        RankBy::Hits => hb.cmp(&ha).then(bb.cmp(&ba)),
        RankBy::Bytes => bb.cmp(&ba).then(hb.cmp(&ha)),
    }
}

/// Sorts and keeps the best `top` (all when 0), selecting first so that a
/// table of a million keys is not fully sorted to show ten of them.
fn top_n<T>(mut items: Vec<T>, top: usize, cmp: impl Fn(&T, &T) -> Ordering) -> Vec<T> {
    if top > 0 && items.len() > top {
        items.select_nth_unstable_by(top - 1, &cmp);
        items.truncate(top);
    }
    items.sort_by(cmp);
    items
}

fn table(tally: &Tally, key_name: &'static str, total: u64, o: &Options) -> Table {
    table_of(tally.iter().collect(), key_name, total, o)
}

fn table_of(rows: Vec<(&[u8], Counter)>, key_name: &'static str, total: u64, o: &Options) -> Table {
    let rows = top_n(rows, o.top, |a, b| {
        rank(o.by, (a.1.hits, a.1.bytes), (b.1.hits, b.1.bytes)).then(a.0.cmp(b.0))
    });
    Table {
        key_name,
        rows: rows
            .into_iter()
            .map(|(k, c)| Row {
                key: escape_for_display(k),
                hits: c.hits,
                bytes: c.bytes,
                percent: percent(c.hits, total),
            })
            .collect(),
    }
}

pub fn build(a: &Analysis, o: &Options) -> Report {
    let s = &a.stats;
    let zone = o.zone.as_ref();
    let time = |ms: i64| format_rfc3339(ms, zone);
    let total = s.requests;
    // One pass over the paths (tens of thousands on a busy log) for both
    // tables.
    let (static_files, pages): (Vec<(&[u8], Counter)>, Vec<_>) =
        s.paths.iter().partition(|(p, _)| is_static_path(p));

    let span_ms = match (s.first, s.last) {
        (Some(f), Some(l)) => l - f,
        _ => 0,
    };
    let span_s = span_ms as f64 / 1000.0;
    let peak = s
        .minutes
        .iter()
        .max_by(|a, b| a.1.hits.cmp(&b.1.hits).then(b.0.cmp(a.0)))
        .map(|(m, c)| (*m, c.hits));

    let ips: Vec<_> = s.clients.iter().collect();
    let ips = top_n(ips, o.top, |a, b| {
        rank(o.by, (a.1.hits, a.1.bytes), (b.1.hits, b.1.bytes)).then(a.0.cmp(b.0))
    });
    let statuses: Vec<_> = s.statuses.iter().collect();
    let statuses = top_n(statuses, o.top, |a, b| {
        rank(o.by, (a.1.hits, a.1.bytes), (b.1.hits, b.1.bytes)).then(a.0.cmp(b.0))
    });

    let (timeline_bucket_s, timeline) = timeline(s, o);
    let mean_rps = if total == 0 {
        0.0
    } else {
        (total as f64 / span_s.max(1.0) * 100.0).round() / 100.0
    };

    Report {
        summary: Summary {
            requests: total,
            malformed: a.input.malformed,
            filtered: s.filtered,
            lines: a.input.lines,
            unique_ips: s.clients.len() as u64,
            unique_paths: s.paths.len() as u64,
            unique_user_agents: s.user_agents.len() as u64,
            bytes: s.bytes,
            first: s.first.map(time),
            last: s.last.map(time),
            span_s,
            mean_rps,
            // A log shorter than a minute has its whole traffic in its
            // peak minute: the rate over the span is the peak then.
            peak_rps: peak
                .map_or(0.0, |(_, h)| (h as f64 / 60.0 * 100.0).round() / 100.0)
                .max(mean_rps),
            peak_minute: peak.map(|(m, _)| time(m * 60_000)),
            format: a.input.format.clone(),
        },
        ips: ips
            .into_iter()
            .map(|(ip, c)| IpRow {
                ip: if *ip == crate::log::parse::UNRESOLVED {
                    "(host names, unresolved)".to_string()
                } else {
                    ip.to_string()
                },
                hits: c.hits,
                percent: percent(c.hits, total),
                bytes: c.bytes,
                status_4xx: c.status_4xx,
                status_5xx: c.status_5xx,
                first: time(c.first),
                last: time(c.last),
            })
            .collect(),
        statuses: statuses
            .into_iter()
            .map(|(st, c)| StatusRow {
                status: *st,
                hits: c.hits,
                percent: percent(c.hits, total),
                bytes: c.bytes,
            })
            .collect(),
        paths: table_of(pages, "path", total, o),
        static_files: table_of(static_files, "path", total, o),
        not_found: table(&s.not_found, "path", total, o),
        user_agents: table(&s.user_agents, "user_agent", total, o),
        hosts: table(&s.hosts, "host", total, o),
        referrers: table(&s.referrers, "referrer", total, o),
        methods: table(&s.methods, "method", total, o),
        levels: table(&s.levels, "level", total, o),
        error_messages: table(&s.messages, "message", total, o),
        timeline_bucket_s,
        timeline,
        malformed_samples: a.input.samples.clone(),
        warnings: a.input.warnings.clone(),
    }
}

/// The timeline, gaps filled with zeros so that bars read as time.
fn timeline(s: &crate::stats::Stats, o: &Options) -> (u64, Vec<Bucket>) {
    let (Some(first), Some(last)) = (s.minutes.keys().min(), s.minutes.keys().max()) else {
        return (o.bucket_s.unwrap_or(60), Vec::new());
    };
    let span_s = ((last - first + 1) * 60) as u64;
    // Past the largest listed size, whole weeks: the row count stays
    // bounded whatever the span.
    let automatic = || {
        BUCKETS
            .iter()
            .copied()
            .find(|b| span_s.div_ceil(*b) <= o.max_buckets)
            .unwrap_or_else(|| {
                let week = BUCKETS[BUCKETS.len() - 1];
                span_s.div_ceil(week).div_ceil(o.max_buckets.max(1)) * week
            })
    };
    // A requested bucket that would make an absurd number of rows (1m over a
    // log whose timestamps span decades) gives way to the automatic choice.
    let bucket_s = match o.bucket_s {
        Some(b) if span_s.div_ceil(b.max(1)) <= MAX_REQUESTED_BUCKETS => b.max(60),
        _ => automatic(),
    };
    let bucket_min = (bucket_s / 60).max(1) as i64;
    let mut grouped: BTreeMap<i64, Counter> = BTreeMap::new();
    for (minute, c) in &s.minutes {
        let e = grouped.entry(minute.div_euclid(bucket_min)).or_default();
        e.hits += c.hits;
        e.bytes += c.bytes;
    }
    let (lo, hi) = (first.div_euclid(bucket_min), last.div_euclid(bucket_min));
    let zone = o.zone.as_ref();
    let buckets = (lo..=hi)
        .map(|b| {
            let c = grouped.get(&b).copied().unwrap_or_default();
            Bucket {
                start: format_rfc3339(b * bucket_min * 60_000, zone),
                hits: c.hits,
                bytes: c.bytes,
            }
        })
        .collect();
    (bucket_s, buckets)
}

/// Human-readable byte counts (binary units, as GoAccess shows them).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_n_keeps_the_best_in_order() {
        let v = vec![5, 1, 9, 3, 7];
        assert_eq!(top_n(v.clone(), 3, |a, b| b.cmp(a)), vec![9, 7, 5]);
        assert_eq!(top_n(v, 0, |a, b| b.cmp(a)), vec![9, 7, 5, 3, 1]);
    }

    #[test]
    fn requested_bucket_cannot_explode_the_timeline() {
        // Regression: `--bucket 1m` over a log spanning 1970..2024 meant
        // millions of rows.
        let one = || crate::stats::Minute {
            hits: 1,
            ..Default::default()
        };
        let mut s = crate::stats::Stats::default();
        s.minutes.insert(0, one());
        s.minutes.insert(28_000_000, one());
        let o = Options {
            top: 10,
            by: RankBy::Hits,
            zone: None,
            bucket_s: Some(60),
            max_buckets: 48,
        };
        let (bucket, rows) = timeline(&s, &o);
        assert!(
            bucket % 604_800 == 0 && rows.len() as u64 <= o.max_buckets + 1,
            "{bucket}: {} rows",
            rows.len()
        );
        assert!(rows.len() < 3000, "{}", rows.len());
        let small = Options {
            bucket_s: Some(300),
            ..o
        };
        s.minutes.remove(&28_000_000);
        s.minutes.insert(10, one());
        assert_eq!(timeline(&s, &small).0, 300);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn table_serializes_with_its_key_name() {
        let t = Table {
            key_name: "host",
            rows: vec![Row {
                key: "a".into(),
                hits: 2,
                bytes: 3,
                percent: 50.0,
            }],
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"[{"host":"a","hits":2,"bytes":3,"percent":50.0}]"#
        );
    }
}
