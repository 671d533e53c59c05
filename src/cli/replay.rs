//! `webfence replay`, `check` and `rules`.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};

use super::{CheckArgs, ReplayArgs, RulesArgs, emit, inputs, print_notes, threads, unparsable};
use crate::detect::allow::{Allowlist, SystemHost};
use crate::detect::{Config, Engine};
use crate::pipeline::{self, Job};
use crate::report::decisions::{self, Context as Cx};
use crate::report::text::thousands;
use crate::stats::Filter;

pub(super) fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let rules = args.config.load()?;
    let explain = match &args.explain {
        Some(ip) => Some(
            crate::log::proxy::parse_ip(ip.trim().as_bytes())
                .map(crate::log::proxy::canonical)
                .with_context(|| {
                    format!("invalid --explain address '{ip}': expected an IPv4 or IPv6 address")
                })?,
        ),
        None => None,
    };
    let inputs = inputs(&args.files, "replay")?;
    if args.html.is_some() {
        super::html::refuse_stdin(&inputs, "--html")?;
    }
    let job = Job {
        inputs,
        format: args.format.spec(),
        json_fields: args.format.json_fields()?,
        proxies: args.format.proxies()?,
        filter: Filter::default(),
        threads: threads(args.run.threads),
    };
    let (allow, allow_warnings) = Allowlist::build(&rules.allow, &SystemHost);
    if !args.run.quiet {
        for w in &allow_warnings {
            eprintln!("webfence: warning: {w}");
        }
    }
    let zone = args.local.then(jiff::tz::TimeZone::system);
    let started = Instant::now();

    let mut decisions = Vec::new();
    let mut write_error = None;
    let stream_json = args.json;
    let (run, engine) = pipeline::replay(&job, &rules, &allow, explain, |new, names| {
        if stream_json && !new.is_empty() && write_error.is_none() {
            let cx = Cx {
                names,
                zone: zone.as_ref(),
            };
            let mut buf = String::new();
            for d in &new {
                let _ = writeln!(buf, "{}", decisions::decision_json(d, &cx));
            }
            if let Err(e) = emit(buf.as_bytes()) {
                write_error = Some(e);
            }
        }
        decisions.extend(new);
    })?;
    if let Some(e) = write_error {
        return Err(e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    if !args.run.quiet {
        print_notes(&run.input);
    }
    if engine.totals.requests == 0 && run.input.malformed > 0 {
        eprintln!("webfence: error: {}", unparsable(&run.names, &run.input));
        return Ok(ExitCode::FAILURE);
    }
    let cx = Cx {
        names: &run.names,
        zone: zone.as_ref(),
    };
    if let Some(path) = &args.html {
        let analysis = super::html::analysis_of(&job)?;
        let page_report = crate::report::build(
            &analysis,
            &super::html::options(args.top, crate::report::RankBy::Hits, zone.clone()),
        );
        super::html::write(
            path,
            super::html::Page {
                analysis: &analysis,
                report: &page_report,
                names: &run.names,
                zone: zone.as_ref(),
                decisions: Some((
                    &decisions,
                    super::html::rules_used(&args.config.config, &rules),
                )),
            },
            args.run.quiet,
        )?;
    }
    let style = args.run.color.style(args.run.wide);
    let summary = summary_line(&run, &engine, &decisions, elapsed);
    if let Some(ip) = &args.explain {
        emit(decisions::explain_text(ip.trim(), &engine, &decisions, &cx, style).as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        if !args.run.quiet {
            eprintln!("webfence: {summary}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    decisions::decisions_text(&mut out, &decisions, &cx, style);
    decisions::summary_text(&mut out, &engine, &decisions, style);
    let summary = match style.width {
        Some(w) => crate::report::text::wrap(&summary, w),
        None => summary,
    };
    let _ = writeln!(out, "\n{summary}");
    for s in &run.input.samples {
        let _ = writeln!(out, "  malformed {}:{}: {}", s.file, s.line, s.reason);
    }
    emit(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn summary_line(
    run: &pipeline::ReplayRun,
    engine: &Engine,
    decisions: &[crate::detect::Decision],
    elapsed: f64,
) -> String {
    let bans = decisions.iter().filter(|d| d.duration_s.is_some()).count();
    let clients: std::collections::BTreeSet<_> = decisions.iter().map(|d| d.subject).collect();
    let span = match (run.first, run.last) {
        (Some(a), Some(b)) => format!(
            " covering {}",
            crate::report::text::duration((b - a).max(0) as f64 / 1000.0)
        ),
        _ => String::new(),
    };
    let rate = if elapsed > 0.0 {
        format!(
            ", {} lines/s",
            thousands((run.input.lines as f64 / elapsed) as u64)
        )
    } else {
        String::new()
    };
    let t = &engine.totals;
    format!(
        "replayed {} lines{span} in {elapsed:.2}s{rate} ({} malformed): {} decisions ({} bans) on {} clients; {} requests would have been blocked; {} allowlisted; peak state {} KiB{}",
        thousands(run.input.lines),
        thousands(run.input.malformed),
        thousands(decisions.len() as u64),
        thousands(bans as u64),
        thousands(clients.len() as u64),
        thousands(t.blocked),
        thousands(t.allowlisted),
        thousands(t.peak_state_bytes / 1024),
        if t.evicted > 0 {
            format!(", {} idle states evicted", thousands(t.evicted))
        } else {
            String::new()
        }
    )
}

pub(super) fn check(args: CheckArgs) -> Result<ExitCode> {
    let config = match Config::load_default_or(&args.config.config) {
        Ok(c) => c,
        Err(e) => return Ok(report_errors(&e)),
    };
    let daemon = crate::daemon::Settings::compile(&config);
    match crate::detect::RuleSet::compile(&config) {
        Ok(_) if daemon.is_err() => Ok(daemon
            .err()
            .map_or(ExitCode::FAILURE, |e| report_errors(&e))),
        Ok(rules) => {
            let files = if config.files.is_empty() {
                "no configuration file; the built-in rules".to_string()
            } else {
                config.files.join(", ")
            };
            let inactive = rules.rules.iter().filter(|r| r.inactive.is_some()).count();
            let machine = match &daemon {
                Ok(s) => format!(
                    ", {} guards{}",
                    s.guards.len(),
                    if s.limits.is_some() {
                        ", kernel limits"
                    } else {
                        ""
                    }
                ),
                Err(_) => String::new(),
            };
            println!(
                "{files}: ok: {} rules enabled{}, {} scores, {} actions{machine}",
                rules.rules.len() + rules.conn_rules.len() + rules.packet_rules.len(),
                if inactive > 0 {
                    format!(" ({inactive} inactive)")
                } else {
                    String::new()
                },
                rules.scores.len(),
                rules.actions.len()
            );
            if let Ok(settings) = &daemon {
                if let Some(w) =
                    crate::daemon::actions::farm::unshared_rules(&rules, settings.farm.as_ref())
                {
                    eprintln!("webfence: warning: {w}");
                }
                for log in &settings.logs {
                    if !crate::source::follow::exists(log) {
                        eprintln!(
                            "webfence: warning: [daemon] logs: {log} matches no file now; `webfence run` would not protect it"
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(mut e) => {
            if let Err(d) = daemon {
                e.0.extend(d.0);
            }
            Ok(report_errors(&e))
        }
    }
}

fn report_errors(e: &crate::detect::ConfigErrors) -> ExitCode {
    for err in &e.0 {
        eprintln!("webfence: error: {err}");
    }
    eprintln!(
        "webfence: {} error{} found",
        e.0.len(),
        if e.0.len() == 1 { "" } else { "s" }
    );
    ExitCode::FAILURE
}

pub(super) fn rules(args: RulesArgs) -> Result<ExitCode> {
    let rules = args.config.load()?;
    if args.json {
        let mut doc = serde_json::to_vec_pretty(&decisions::rules_json(&rules))
            .context("cannot encode the rules as JSON")?;
        doc.push(b'\n');
        emit(&doc)?;
    } else {
        emit(decisions::rules_text(&rules, args.color.style(args.wide)).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
