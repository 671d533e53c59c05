//! `--html FILE` for `report` and `replay`: what each adds to the other
//! (a report needs a replay for its decisions, a replay a report for its
//! figures), and writing the file.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::detect::allow::{Allowlist, SystemHost};
use crate::detect::{Decision, RuleSet};
use crate::pipeline::{self, Analysis, Job};
use crate::report::html::{self, Inputs, RulesUsed};
use crate::report::{self, RankBy};
use crate::source::Input;

/// Where the rules came from, in the page's words.
pub(super) fn rules_used(config: &[std::path::PathBuf], set: &RuleSet) -> RulesUsed {
    let default = Path::new(crate::detect::config::DEFAULT_PATH);
    let source = if !config.is_empty() {
        config
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    } else if default.exists() {
        default.display().to_string()
    } else {
        "the built-in rules".to_string()
    };
    RulesUsed {
        source,
        rules: set.rules.len(),
    }
}

/// A log read twice (figures, then decisions) cannot come from stdin.
pub(super) fn refuse_stdin(inputs: &[Input], what: &str) -> Result<()> {
    if inputs.iter().any(|i| matches!(i, Input::Stdin)) {
        bail!("{what} reads the log twice, and stdin can be read once: name the log files");
    }
    Ok(())
}

/// The decisions a replay of the job's logs makes (the report's filters do
/// not apply: the rules see every line, as the daemon would).
pub(super) fn decisions_of(job: &Job, set: &RuleSet, quiet: bool) -> Result<Vec<Decision>> {
    let (allow, warnings) = Allowlist::build(&set.allow, &SystemHost);
    if !quiet {
        for w in &warnings {
            eprintln!("webfence: warning: {w}");
        }
    }
    let replay_job = Job {
        inputs: job.inputs.clone(),
        format: job.format.clone(),
        json_fields: job.json_fields.clone(),
        proxies: job.proxies.clone(),
        filter: Default::default(),
        threads: job.threads,
    };
    let mut out = Vec::new();
    pipeline::replay(&replay_job, set, &allow, None, |new, _| out.extend(new))?;
    Ok(out)
}

/// The report's figures for a replay's page.
pub(super) fn analysis_of(job: &Job) -> Result<Analysis> {
    Ok(pipeline::analyze(job)?)
}

pub(super) struct Page<'a> {
    pub analysis: &'a Analysis,
    pub report: &'a report::Report,
    pub names: &'a [String],
    pub zone: Option<&'a jiff::tz::TimeZone>,
    pub decisions: Option<(&'a [Decision], RulesUsed)>,
}

/// Report options for a page: the tables of the text report, the timeline
/// left to the page.
pub(super) fn options(top: usize, by: RankBy, zone: Option<jiff::tz::TimeZone>) -> report::Options {
    report::Options {
        top,
        by,
        zone,
        bucket_s: None,
        max_buckets: 48,
    }
}

/// Writes the page to `path` ('-' for stdout) through a temporary file in
/// the same directory, so a reader never sees half a page.
pub(super) fn write(path: &Path, page: Page<'_>, quiet: bool) -> Result<()> {
    let text = html::render(&Inputs {
        report: page.report,
        stats: &page.analysis.stats,
        names: page.names,
        zone: page.zone,
        decisions: page.decisions,
    });
    if path == Path::new("-") {
        return super::emit(text.as_bytes());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile_in(dir)
        .with_context(|| format!("cannot write the HTML report {}", path.display()))?;
    tmp.1
        .write_all(text.as_bytes())
        .and_then(|()| tmp.1.sync_all())
        .with_context(|| format!("cannot write the HTML report {}", path.display()))?;
    std::fs::rename(&tmp.0, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp.0);
        anyhow::Error::new(e).context(format!("cannot write the HTML report {}", path.display()))
    })?;
    if !quiet {
        eprintln!(
            "webfence: wrote {} ({})",
            path.display(),
            report::human_bytes(text.len() as u64)
        );
    }
    Ok(())
}

fn tempfile_in(dir: &Path) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!(".webfence-report-{}-{nanos}.tmp", std::process::id());
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}
