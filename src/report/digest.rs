//! The digest: one period in a few lines, compared to the period before
//! (requests and bandwidth, the busiest clients with their rates, top
//! paths and statuses, bans made and lifted by rule, guard episodes, the
//! connection peak). Built from the same analysis as `webfence report`
//! and the ledger; plain data that renders as text or JSON.

use std::fmt::Write;

use serde::Serialize;

use super::text::thousands;
use super::{Report, human_bytes};

/// A guard's episode, as the daemon remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Episode {
    pub guard: String,
    pub fired_ms: i64,
    /// None while it lasts.
    pub over_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Client {
    pub ip: String,
    pub requests: u64,
    /// Requests per second over the period.
    pub rate: f64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Count {
    pub key: String,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub bytes: u64,
    pub bans: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Digest {
    pub host: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub totals: Totals,
    /// The period before, as long.
    pub previous: Option<Totals>,
    pub clients: Vec<Client>,
    pub paths: Vec<Count>,
    pub statuses: Vec<Count>,
    pub bans_made: Vec<Count>,
    pub bans_ended: Vec<Count>,
    pub guards: Vec<Episode>,
    /// The most connections seen at once in the period, and when.
    pub conn_peak: Option<(u64, i64)>,
}

/// Rows per table in a digest.
pub const ROWS: usize = 5;

fn counts(v: Vec<(String, u64)>) -> Vec<Count> {
    v.into_iter()
        .map(|(key, count)| Count { key, count })
        .collect()
}

impl Digest {
    /// From a report of the period (built with its rows bounded), the
    /// ledger's bans made and ended in it, and what the daemon knows.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        host: &str,
        from_ms: i64,
        to_ms: i64,
        report: &Report,
        previous: Option<Totals>,
        bans_made: Vec<(String, u64)>,
        bans_ended: Vec<(String, u64)>,
        guards: Vec<Episode>,
        conn_peak: Option<(u64, i64)>,
    ) -> Digest {
        let secs = ((to_ms - from_ms) as f64 / 1000.0).max(1.0);
        Digest {
            host: host.to_string(),
            from_ms,
            to_ms,
            totals: Totals {
                requests: report.summary.requests,
                bytes: report.summary.bytes,
                bans: bans_made.iter().map(|(_, n)| n).sum(),
            },
            previous,
            clients: report
                .ips
                .iter()
                .take(ROWS)
                .map(|r| Client {
                    ip: r.ip.clone(),
                    requests: r.hits,
                    rate: r.hits as f64 / secs,
                    bytes: r.bytes,
                })
                .collect(),
            paths: report
                .paths
                .rows
                .iter()
                .take(ROWS)
                .map(|r| Count {
                    key: r.key.clone(),
                    count: r.hits,
                })
                .collect(),
            statuses: report
                .statuses
                .iter()
                .map(|s| Count {
                    key: crate::log::parse::status_text(s.status),
                    count: s.hits,
                })
                .collect(),
            bans_made: counts(bans_made),
            bans_ended: counts(bans_ended),
            guards,
            conn_peak,
        }
    }

    /// Nothing happened: no request, no ban, no guard.
    pub fn is_empty(&self) -> bool {
        self.totals.requests == 0
            && self.totals.bans == 0
            && self.guards.is_empty()
            && self.bans_ended.is_empty()
    }

    pub fn subject(&self) -> String {
        format!(
            "digest {}: {} requests, {} bans",
            span(self.to_ms - self.from_ms),
            thousands(self.totals.requests),
            thousands(self.totals.bans)
        )
    }

    /// The digest as text, a few lines per part.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let time = |ms: i64| {
            jiff::Timestamp::from_millisecond(ms)
                .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_default()
        };
        let _ = writeln!(
            out,
            "{} from {} to {}",
            self.host,
            time(self.from_ms),
            time(self.to_ms)
        );
        let change = |now: u64, before: Option<u64>| match before {
            Some(0) | None => String::new(),
            Some(b) => format!(
                " ({:+.0}% on the period before)",
                (now as f64 - b as f64) * 100.0 / b as f64
            ),
        };
        let p = self.previous;
        let _ = writeln!(
            out,
            "requests  {}{}\nbandwidth {}{}\nbans      {}{}",
            thousands(self.totals.requests),
            change(self.totals.requests, p.map(|t| t.requests)),
            human_bytes(self.totals.bytes),
            change(self.totals.bytes, p.map(|t| t.bytes)),
            thousands(self.totals.bans),
            change(self.totals.bans, p.map(|t| t.bans)),
        );
        if let Some((n, at)) = self.conn_peak {
            let _ = writeln!(out, "conns     peak {} at {}", thousands(n), time(at));
        }
        if !self.clients.is_empty() {
            let _ = writeln!(out, "\nbusiest clients");
            for c in &self.clients {
                let _ = writeln!(
                    out,
                    "  {:>10}  {:>8.2}/s  {:>10}  {}",
                    thousands(c.requests),
                    c.rate,
                    human_bytes(c.bytes),
                    c.ip
                );
            }
        }
        for (title, rows) in [
            ("top paths", &self.paths),
            ("statuses", &self.statuses),
            ("bans made, by rule", &self.bans_made),
            ("bans ended, by rule", &self.bans_ended),
        ] {
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{title}");
            for r in rows {
                let _ = writeln!(out, "  {:>10}  {}", thousands(r.count), r.key);
            }
        }
        if !self.guards.is_empty() {
            let _ = writeln!(out, "\nguard episodes");
            for g in &self.guards {
                let _ = writeln!(
                    out,
                    "  {}  {} {}",
                    time(g.fired_ms),
                    g.guard,
                    match g.over_ms {
                        Some(o) => format!("for {}", span(o - g.fired_ms)),
                        None => "still firing".to_string(),
                    }
                );
            }
        }
        out
    }
}

fn span(ms: i64) -> String {
    crate::detect::engine::human_duration((ms.max(0) / 1000) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_compares_with_the_period_before_and_lists_episodes() {
        let report = crate::report::build(
            &Default::default(),
            &crate::report::Options {
                top: ROWS,
                by: crate::report::RankBy::Hits,
                zone: None,
                bucket_s: None,
                max_buckets: 1,
            },
        );
        let mut d = Digest::build(
            "web1",
            0,
            3_600_000,
            &report,
            Some(Totals {
                requests: 0,
                bytes: 0,
                bans: 2,
            }),
            vec![("flood-ip".into(), 3)],
            vec![("flood-ip".into(), 1)],
            vec![
                Episode {
                    guard: "load".into(),
                    fired_ms: 60_000,
                    over_ms: Some(660_000),
                },
                Episode {
                    guard: "memory".into(),
                    fired_ms: 120_000,
                    over_ms: None,
                },
            ],
            Some((812, 90_000)),
        );
        let text = d.text();
        assert!(
            text.contains("bans      3 (+50% on the period before)"),
            "{text}"
        );
        assert!(
            text.contains("conns     peak 812 at 1970-01-01 00:01 UTC"),
            "{text}"
        );
        assert!(
            text.contains("bans made, by rule\n           3  flood-ip"),
            "{text}"
        );
        assert!(text.contains("load for 10m"), "{text}");
        assert!(text.contains("memory still firing"), "{text}");
        assert_eq!(d.subject(), "digest 1h: 0 requests, 3 bans");
        assert!(!d.is_empty());
        d.totals.bans = 0;
        d.guards.clear();
        d.bans_ended.clear();
        assert!(d.is_empty());
    }
}
