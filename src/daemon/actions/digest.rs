//! Digests as a component: `[digest.NAME]` compiled, the periodic
//! schedule (a digest every `every`, built on a thread of its own so the
//! machine loop never waits for it), and `gather`, which `webfence digest`
//! uses too: the followed logs analysed over the period (and the period
//! before, for the comparison), the ledger's bans made and ended.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::daemon::Settings;
use crate::detect::config::{Config, ConfigError};
use crate::enforce::ledger::Ledger;
use crate::pipeline::{self, Job};
use crate::report::digest::{Digest, Episode, ROWS, Totals};
use crate::source::Input;
use crate::stats::Filter;

/// A compiled `[digest.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestSpec {
    pub name: String,
    pub every_ms: i64,
    /// Channels it goes to (all channels when empty).
    pub channels: Vec<String>,
    /// Send a digest of a quiet period too.
    pub send_empty: bool,
}

pub fn compile(
    config: &Config,
    channels: &[String],
    errors: &mut Vec<ConfigError>,
) -> Vec<DigestSpec> {
    let mut out = Vec::new();
    for (name, raw) in &config.digests {
        let mut err = |at, msg: String| errors.push(config.sources.error(at, msg));
        let every_ms = match &raw.every {
            Some(e) => match crate::units::parse_duration(&e.value) {
                Ok(s) if s >= 10 => s as i64 * 1000,
                Ok(_) => {
                    err(e.at, "every: a digest period is at least 10s".into());
                    continue;
                }
                Err(x) => {
                    err(e.at, format!("every: {x}"));
                    continue;
                }
            },
            None => {
                err(
                    name.at,
                    format!(
                        "digest '{}' needs every = \"1h\" (or 5m, 1d, ...)",
                        name.value
                    ),
                );
                continue;
            }
        };
        let mut to = Vec::new();
        for c in raw.channels.iter().flatten() {
            if channels.contains(&c.value) {
                to.push(c.value.clone());
            } else {
                err(
                    c.at,
                    format!(
                        "no channel named '{}': add a [notify.{}] table",
                        c.value, c.value
                    ),
                );
            }
        }
        out.push(DigestSpec {
            name: name.value.clone(),
            every_ms,
            channels: to,
            send_empty: raw.send_empty.unwrap_or(false),
        });
    }
    out
}

/// The files a digest reads: each log that exists now, and its rotated
/// sibling (`.1`, `.1.gz`), so a period that spans a rotation is whole.
fn files(logs: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for pattern in logs {
        for p in glob::glob(pattern).into_iter().flatten().flatten() {
            if !p.is_file() {
                continue;
            }
            for sibling in [".1.gz", ".1"] {
                let mut s = p.clone().into_os_string();
                s.push(sibling);
                let s = PathBuf::from(s);
                if s.is_file() && !out.contains(&s) {
                    out.push(s);
                }
            }
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// A digest's tables: a few rows, no timeline.
fn options() -> crate::report::Options {
    crate::report::Options {
        top: ROWS,
        by: crate::report::RankBy::Hits,
        zone: None,
        bucket_s: None,
        max_buckets: 1,
    }
}

fn analyse(
    settings: &Settings,
    inputs: &[PathBuf],
    from_ms: i64,
    to_ms: i64,
) -> Result<crate::report::Report> {
    let mut filter = Filter::default();
    filter.since = Some(from_ms);
    filter.until = Some(to_ms);
    let job = Job {
        inputs: inputs.iter().map(|p| Input::File(p.clone())).collect(),
        format: settings.format.clone(),
        json_fields: Default::default(),
        proxies: settings.proxies.clone(),
        filter,
        threads: 1,
    };
    let analysis = pipeline::analyze(&job).context("cannot read the logs for the digest")?;
    Ok(crate::report::build(&analysis, &options()))
}

/// Builds the digest of [from, to): the logs, the ledger at `ledger`
/// (when it exists), and the daemon's guard episodes and connection peak.
pub fn gather(
    settings: &Settings,
    ledger: Option<&Path>,
    from_ms: i64,
    to_ms: i64,
    episodes: Vec<Episode>,
    conn_peak: Option<(u64, i64)>,
) -> Result<Digest> {
    let inputs = files(&settings.logs);
    let period = to_ms - from_ms;
    let (report, before) = if inputs.is_empty() {
        (None, None)
    } else {
        (
            Some(analyse(settings, &inputs, from_ms, to_ms)?),
            Some(analyse(settings, &inputs, from_ms - period, from_ms)?),
        )
    };
    let ledger = match ledger.filter(|p| p.exists()) {
        Some(p) => Some(Ledger::open(p)?),
        None => None,
    };
    let (made, ended) = match &ledger {
        Some(l) => l.period_by_rule(from_ms, to_ms)?,
        None => (Vec::new(), Vec::new()),
    };
    let previous_bans = match &ledger {
        Some(l) => l
            .period_by_rule(from_ms - period, from_ms)?
            .0
            .iter()
            .map(|(_, n)| n)
            .sum(),
        None => 0,
    };
    let empty = crate::report::build(&Default::default(), &options());
    let report = report.unwrap_or(empty);
    let previous = before.map(|b| Totals {
        requests: b.summary.requests,
        bytes: b.summary.bytes,
        bans: previous_bans,
    });
    let episodes = episodes
        .into_iter()
        .filter(|e| e.fired_ms < to_ms && e.over_ms.is_none_or(|o| o >= from_ms))
        .collect();
    Ok(Digest::build(
        &super::notify::host_name(),
        from_ms,
        to_ms,
        &report,
        previous,
        made,
        ended,
        episodes,
        conn_peak,
    ))
}
