//! Rendering replay results: decisions as a table or JSON lines, the
//! summary per rule, the effective ruleset, and `--explain`.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::text::{
    Align, Cell, Style, col, col_whole, colored, render_table_width, thousands, truncate,
};
use crate::detect::config::RuleKind;
use crate::detect::engine::{Decision, Engine, Trace, TraceKind, human_duration};
use crate::detect::rules::{Action, IpPart, Outcome, RuleSet, loc_parts};
use crate::log::time::format_rfc3339;

/// Names of the inputs, for turning a line's source index into a file.
pub struct Context<'a> {
    pub names: &'a [String],
    pub zone: Option<&'a jiff::tz::TimeZone>,
}

impl Context<'_> {
    fn time(&self, ms: i64) -> String {
        format_rfc3339(ms, self.zone)
    }

    fn file(&self, loc: u64) -> &str {
        self.names.get(loc_parts(loc).0).map_or("-", String::as_str)
    }
}

/// A whole number when it is one, so a threshold of 45 prints as 45.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// One decision as JSON, field for field (keys in alphabetical order, as
/// they always were). A struct rather than `json!`: the daemon serialises
/// every ban's evidence, and 100k bans in a second must not wait on
/// building maps.
#[derive(serde::Serialize)]
struct DecisionOut<'a> {
    action: &'a str,
    at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cidr: Option<String>,
    duration_s: Option<u64>,
    evidence: EvidenceOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    reason: &'a str,
    repeat: u32,
    rule: &'a str,
}

#[derive(serde::Serialize)]
struct EvidenceOut<'a> {
    count: Value,
    first_at: String,
    /// Only when several inputs were read; null for an unknown one.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_file: Option<Option<&'a str>>,
    first_line: u64,
    last_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_file: Option<Option<&'a str>>,
    last_line: u64,
    samples: &'a [String],
    threshold: Value,
    window_s: u64,
}

/// One decision as one JSON object (one line of `replay --json`).
pub fn decision_json(d: &Decision, cx: &Context) -> String {
    let (first_file, first_line) = loc_parts(d.evidence.first.loc);
    let (last_file, last_line) = loc_parts(d.evidence.last.loc);
    let several = cx.names.len() > 1;
    let file = |i: usize| several.then(|| cx.names.get(i).map(String::as_str));
    let subject = d.subject.to_string();
    let (ip, cidr) = if d.subject.is_host() {
        (Some(subject), None)
    } else {
        (None, Some(subject))
    };
    let out = DecisionOut {
        action: d.action.name(),
        at: cx.time(d.at),
        cidr,
        duration_s: d.duration_s,
        evidence: EvidenceOut {
            count: number(d.evidence.count),
            first_at: cx.time(d.evidence.first.at),
            first_file: file(first_file),
            first_line,
            last_at: cx.time(d.evidence.last.at),
            last_file: file(last_file),
            last_line,
            samples: &d.evidence.samples,
            threshold: number(d.evidence.threshold),
            window_s: d.evidence.window_s,
        },
        ip,
        reason: &d.reason,
        repeat: d.repeat,
        rule: &d.rule,
    };
    // Serialising plain fields and strings cannot fail.
    serde_json::to_string(&out).unwrap_or_default()
}

fn action_text(d: &Decision) -> String {
    match (&d.action, d.duration_s) {
        (Action::Ban, Some(s)) if d.repeat > 0 => {
            format!("ban {} (×{})", human_duration(s), d.repeat + 1)
        }
        (Action::Ban, Some(s)) => format!("ban {}", human_duration(s)),
        (a, _) => a.name().to_string(),
    }
}

/// Terminals narrower than this get decisions and rules as blocks of two
/// or more lines instead of one wide row each.
const NARROW: usize = 140;

/// A decision in two lines, for a narrow terminal: what happened to whom,
/// then why, cut to the width.
fn decision_block(out: &mut String, d: &Decision, cx: &Context, style: Style, width: usize) {
    let (_, line) = loc_parts(d.evidence.last.loc);
    let color = match d.action {
        Action::Ban => "31",
        _ => "33",
    };
    let _ = writeln!(
        out,
        "  {}  {}  {}  {}",
        cx.time(d.at),
        style.paint(color, &action_text(d)),
        d.subject,
        d.rule
    );
    let why = format!(
        "{}:{line}: {}",
        short_name(cx.file(d.evidence.last.loc)),
        d.reason
    );
    let _ = writeln!(
        out,
        "      {}",
        truncate(&why, width.saturating_sub(6).max(20))
    );
}

/// The decisions table.
pub fn decisions_text(out: &mut String, decisions: &[Decision], cx: &Context, style: Style) {
    if let Some(width) = style.width.filter(|w| *w < NARROW) {
        let _ = writeln!(out, "\n{}", style.paint("1;36", "Decisions"));
        if decisions.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        for d in decisions {
            decision_block(out, d, cx, style, width);
        }
        return;
    }
    let rows: Vec<Vec<Cell>> = decisions
        .iter()
        .map(|d| {
            let (_, line) = loc_parts(d.evidence.last.loc);
            let color = match d.action {
                Action::Ban => Some("31"),
                _ => Some("33"),
            };
            vec![
                cx.time(d.at).into(),
                colored(action_text(d), color),
                d.subject.to_string().into(),
                d.rule.clone().into(),
                format!("{}:{line}", short_name(cx.file(d.evidence.last.loc))).into(),
                d.reason.clone().into(),
            ]
        })
        .collect();
    let columns = [
        col("Time", Align::Left),
        col("Action", Align::Left),
        col_whole("Client"),
        col("Rule", Align::Left),
        col("Line", Align::Left),
        col("Reason", Align::Left),
    ];
    render_table_width(out, style, "Decisions", &columns, rows, 120);
}

fn short_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Per-rule totals and the run's figures.
pub fn summary_text(out: &mut String, engine: &Engine, decisions: &[Decision], style: Style) {
    let rules = engine.rules();
    let mut rows = Vec::new();
    for (i, r) in rules.rules.iter().enumerate() {
        let t = &engine.rule_totals[i];
        let n = decisions.iter().filter(|d| d.rule == r.name).count() as u64;
        rows.push(vec![
            r.name.clone().into(),
            thousands(t.requests).into(),
            colored(thousands(n), (n > 0).then_some("1")),
            r.inactive
                .clone()
                .map_or_else(
                    || outcome_text(rules, &r.outcome),
                    |w| format!("inactive: {w}"),
                )
                .into(),
        ]);
    }
    for s in &rules.scores {
        let name = format!("score:{}", s.name);
        let n = decisions.iter().filter(|d| d.rule == name).count() as u64;
        rows.push(vec![
            name.into(),
            "-".to_string().into(),
            colored(thousands(n), (n > 0).then_some("1")),
            format!(
                "above {} → {}",
                s.threshold,
                action_dur(&s.action, s.duration_s)
            )
            .into(),
        ]);
    }
    let columns = [
        col("Rule", Align::Left),
        col("Requests", Align::Right),
        col("Decisions", Align::Right),
        col("Then", Align::Left),
    ];
    render_table_width(out, style, "Rules", &columns, rows, 80);
}

fn action_dur(a: &Action, s: u64) -> String {
    match a {
        Action::Ban => format!("ban {}", human_duration(s)),
        other => other.name().to_string(),
    }
}

fn outcome_text(rules: &RuleSet, o: &Outcome) -> String {
    match o {
        Outcome::Decide { action, duration_s } => action_dur(action, *duration_s),
        Outcome::Score { score, points } => format!(
            "+{points} to score:{}",
            rules.scores.get(*score).map_or("?", |s| s.name.as_str())
        ),
    }
}

fn test_text(rules: &RuleSet, i: usize) -> String {
    let r = &rules.rules[i];
    let window = human_duration((r.window_ms / 1000) as u64);
    match r.kind {
        RuleKind::Rate => format!(
            "> {} requests per {} in {window}",
            r.limit,
            r.key.describe()
        ),
        RuleKind::Distinct => format!(
            "> {} distinct {} per {} in {window}",
            r.limit,
            r.distinct.map_or("?", |f| f.name()),
            r.key.describe()
        ),
        RuleKind::Match => "each matching request".to_string(),
        RuleKind::UnexpectedHost => "each request for a Host not in [sites]".to_string(),
        RuleKind::Connections => format!("> {} connections per {}", r.limit, r.key.describe()),
        RuleKind::Packets => format!("> {} packets per local address", r.limit),
    }
}

/// `webfence rules`: the effective ruleset.
pub fn rules_text(rules: &RuleSet, style: Style) -> String {
    let mut out = String::new();
    let files = if rules.files.is_empty() {
        "built-in rules only".to_string()
    } else {
        rules.files.join(", ")
    };
    let _ = writeln!(out, "{} {files}", style.paint("1", "Configuration:"));
    let mut rows: Vec<Vec<Cell>> = rules
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut then = outcome_text(rules, &r.outcome);
            if let Some(w) = &r.inactive {
                then = format!("{then} (inactive: {w})");
            }
            vec![
                r.name.clone().into(),
                r.kind.name().to_string().into(),
                test_text(rules, i).into(),
                then.into(),
                r.description.clone().into(),
            ]
        })
        .collect();
    for r in &rules.conn_rules {
        let per = match r.filter.group {
            Some((v4, v6)) => format!("/{v4} or /{v6}"),
            None => "client".to_string(),
        };
        let ports = if r.filter.ports.is_empty() {
            "any listening port".to_string()
        } else {
            let p: Vec<String> = r.filter.ports.iter().map(u16::to_string).collect();
            format!("ports {}", p.join(", "))
        };
        rows.push(vec![
            r.name.clone().into(),
            "connections".to_string().into(),
            format!(
                "> {} connections per {per} ({}) to {ports}",
                r.limit,
                r.states_text()
            )
            .into(),
            action_dur(&r.action, r.duration_s).into(),
            r.description.clone().into(),
        ]);
    }
    for r in &rules.packet_rules {
        rows.push(vec![
            r.name.clone().into(),
            "packets".to_string().into(),
            format!(
                "> {} packets ({}) per local address in a [packets] sample",
                r.limit,
                r.classes_text()
            )
            .into(),
            action_dur(&r.action, r.duration_s).into(),
            r.description.clone().into(),
        ]);
    }
    if let Some(width) = style.width.filter(|w| *w < 2 * NARROW) {
        // A block per rule: five columns of prose do not fit side by side.
        let _ = writeln!(out, "\n{}", style.paint("1;36", "Rules"));
        for row in &rows {
            let text = |i: usize| row.get(i).map(Cell::text).unwrap_or_default();
            let _ = writeln!(out, "  {} ({})", style.paint("1", text(0)), text(1));
            for (label, i) in [("fires on", 2), ("then", 3), ("why", 4)] {
                if !text(i).is_empty() {
                    let _ = writeln!(
                        out,
                        "    {label:<9}{}",
                        truncate(text(i), width.saturating_sub(13).max(20))
                    );
                }
            }
        }
    } else {
        let columns = [
            col("Rule", Align::Left),
            col("Kind", Align::Left),
            col("Fires on", Align::Left),
            col("Then", Align::Left),
            col("Why", Align::Left),
        ];
        render_table_width(&mut out, style, "Rules", &columns, rows, 80);
    }
    let rows: Vec<Vec<Cell>> = rules
        .scores
        .iter()
        .map(|s| {
            vec![
                s.name.clone().into(),
                format!("above {}", s.threshold).into(),
                s.decay_text.clone().into(),
                action_dur(&s.action, s.duration_s).into(),
            ]
        })
        .collect();
    let columns = [
        col("Score", Align::Left),
        col("Decides", Align::Left),
        col("Decay", Align::Left),
        col("Then", Align::Left),
    ];
    render_table_width(&mut out, style, "Scores", &columns, rows, 80);
    let e = &rules.escalation;
    let _ = writeln!(
        out,
        "\n{} each repeat ban ×{} up to {}, remembered {}",
        style.paint("1;36", "Escalation:"),
        e.factor,
        human_duration(e.max_s),
        human_duration((e.remember_ms / 1000) as u64)
    );
    let nets: Vec<String> = rules.allow.nets.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        out,
        "{} {}{}{}",
        style.paint("1;36", "Allowlist:"),
        if rules.allow.local {
            "loopback and this machine's addresses"
        } else {
            "(local addresses not included)"
        },
        if nets.is_empty() {
            String::new()
        } else {
            format!(", {}", nets.join(", "))
        },
        if rules.allow.hosts.is_empty() {
            String::new()
        } else {
            format!(
                ", hosts {} (resolved every {})",
                rules.allow.hosts.join(", "),
                human_duration(rules.allow.resolve_every_s)
            )
        }
    );
    let sites: Vec<String> = rules
        .sites
        .iter()
        .map(|s| match s {
            crate::detect::rules::SiteName::Exact(n) => String::from_utf8_lossy(n).into_owned(),
            crate::detect::rules::SiteName::Suffix(n) => format!("*{}", String::from_utf8_lossy(n)),
        })
        .collect();
    let _ = writeln!(
        out,
        "{} {}",
        style.paint("1;36", "Sites:"),
        if sites.is_empty() {
            "(none: unexpected-host rules are inactive)".to_string()
        } else {
            sites.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "{} {} MiB of per-client state",
        style.paint("1;36", "Memory cap:"),
        rules.memory_cap >> 20
    );
    out
}

/// `webfence rules --json`.
pub fn rules_json(rules: &RuleSet) -> Value {
    let list: Vec<Value> = rules
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (action, duration_s, score) = match &r.outcome {
                Outcome::Decide { action, duration_s } => (Some(action.name().to_string()), Some(*duration_s), None),
                Outcome::Score { score, points } => (
                    None,
                    None,
                    Some(json!({"name": rules.scores.get(*score).map(|s| s.name.clone()), "points": points})),
                ),
            };
            let key = match (r.key.ip, r.kind) {
                (_, RuleKind::Match | RuleKind::UnexpectedHost) => Value::Null,
                (IpPart::Net { .. } | IpPart::Ip | IpPart::None, _) => json!(r.key.describe()),
            };
            json!({
                "name": r.name,
                "kind": r.kind.name(),
                "description": r.description,
                "fires_on": test_text(rules, i),
                "key": key,
                "limit": (r.limit > 0).then_some(r.limit),
                "window_s": (r.window_ms > 0).then_some(r.window_ms / 1000),
                "action": action,
                "duration_s": duration_s,
                "score": score,
                "inactive": r.inactive,
                "file": r.file,
            })
        })
        .collect();
    let scores: Vec<Value> = rules
        .scores
        .iter()
        .map(|s| json!({"name": s.name, "threshold": s.threshold, "decay": s.decay_text, "action": s.action.name(), "duration_s": s.duration_s}))
        .collect();
    json!({
        "files": rules.files,
        "rules": list,
        "scores": scores,
        "escalation": {"factor": rules.escalation.factor, "max_s": rules.escalation.max_s, "remember_s": rules.escalation.remember_ms / 1000},
        "allowlist": {"local": rules.allow.local, "addresses": rules.allow.nets.iter().map(ToString::to_string).collect::<Vec<_>>(), "hosts": rules.allow.hosts},
        "memory_cap": rules.memory_cap,
    })
}

/// `--explain IP`: each rule's state over time for one client.
pub fn explain_text(
    ip: &str,
    engine: &Engine,
    decisions: &[Decision],
    cx: &Context,
    style: Style,
) -> String {
    let rules = engine.rules();
    let traces: &[Trace] = &engine.traces;
    let mut out = String::new();
    let _ = writeln!(out, "{} {ip}", style.paint("1;36", "Explain"));
    if traces.is_empty() {
        let _ = writeln!(out, "  no request from {ip} in the replayed logs");
        return out;
    }
    let requests = traces
        .iter()
        .map(|t| t.loc)
        .collect::<std::collections::BTreeSet<_>>();
    let (first, last) = (traces[0].at, traces[traces.len() - 1].at);
    let _ = writeln!(
        out,
        "  {} requests seen from {} to {}",
        thousands(requests.len() as u64),
        cx.time(first),
        cx.time(last)
    );
    let allowed = traces
        .iter()
        .filter(|t| t.kind == TraceKind::Allowlisted)
        .count();
    if allowed > 0 {
        let _ = writeln!(
            out,
            "  allowlisted: no rule decides against this client ({allowed} requests)"
        );
        return out;
    }
    let blocked = traces
        .iter()
        .filter(|t| matches!(t.kind, TraceKind::Blocked { .. }))
        .count();
    for (i, r) in rules.rules.iter().enumerate() {
        let mine: Vec<&Trace> = traces.iter().filter(|t| t.rule == Some(i)).collect();
        let _ = write!(
            out,
            "\n  {} ({})",
            style.paint("1", &r.name),
            test_text(rules, i)
        );
        if let Some(w) = &r.inactive {
            let _ = writeln!(out, "\n    inactive: {w}");
            continue;
        }
        let looked = mine
            .iter()
            .filter(|t| !matches!(t.kind, TraceKind::Decided { .. }))
            .count();
        if looked == 0 {
            let _ = writeln!(
                out,
                "\n    never applied: no request from this client fits the rule"
            );
            continue;
        }
        let _ = writeln!(out, "\n    looked at {} requests", thousands(looked as u64));
        let peak = mine
            .iter()
            .filter_map(|t| match t.kind {
                TraceKind::Count { count, limit } => Some((count, limit, t)),
                _ => None,
            })
            .max_by_key(|(c, _, t)| (*c, std::cmp::Reverse(t.at)));
        if let Some((count, limit, t)) = peak {
            let verdict = if count > limit {
                "over the limit"
            } else {
                "under the limit"
            };
            let _ = writeln!(
                out,
                "    peak {count} of {limit} at {} ({}:{}): {verdict}",
                cx.time(t.at),
                short_name(cx.file(t.loc)),
                loc_parts(t.loc).1
            );
        }
        for t in &mine {
            if let TraceKind::Decided { action, duration_s } = &t.kind {
                let _ = writeln!(
                    out,
                    "    {} at {} ({}:{}) → {action}{}",
                    style.paint("31", "fired"),
                    cx.time(t.at),
                    short_name(cx.file(t.loc)),
                    loc_parts(t.loc).1,
                    duration_s
                        .map(|s| format!(" {}", human_duration(s)))
                        .unwrap_or_default()
                );
            } else if t.kind == TraceKind::Matched && mine.len() <= 20 {
                let _ = writeln!(
                    out,
                    "    matched at {} ({}:{})",
                    cx.time(t.at),
                    short_name(cx.file(t.loc)),
                    loc_parts(t.loc).1
                );
            }
        }
        if !mine
            .iter()
            .any(|t| matches!(t.kind, TraceKind::Decided { .. }))
            && r.kind != RuleKind::Match
        {
            let _ = writeln!(
                out,
                "    no decision: never more than {} in the window",
                r.limit
            );
        }
    }
    for (si, s) in rules.scores.iter().enumerate() {
        let steps: Vec<&Trace> = traces
            .iter()
            .filter(|t| matches!(t.kind, TraceKind::Score { score, .. } if score == si))
            .collect();
        if steps.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n  {} (above {}, decay {})",
            style.paint("1", &format!("score:{}", s.name)),
            s.threshold,
            s.decay_text
        );
        for t in steps.iter().take(30) {
            if let TraceKind::Score { value, points, .. } = t.kind {
                let _ = writeln!(
                    out,
                    "    {} ({}:{}) +{points} → {}",
                    cx.time(t.at),
                    short_name(cx.file(t.loc)),
                    loc_parts(t.loc).1,
                    (value * 100.0).round() / 100.0
                );
            }
        }
    }
    if blocked > 0 {
        let _ = writeln!(
            out,
            "\n  {} requests arrived while banned (live, the kernel drops them)",
            thousands(blocked as u64)
        );
    }
    let mine: Vec<&Decision> = decisions
        .iter()
        .filter(|d| {
            d.subject.contains(crate::detect::addr::to_bits(
                ip.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
            ))
        })
        .collect();
    let _ = writeln!(out);
    if mine.is_empty() {
        let _ = writeln!(
            out,
            "  {} no rule decided against {ip}",
            style.paint("32", "verdict:")
        );
    } else {
        for d in mine {
            let _ = writeln!(
                out,
                "  {} {} {} by {}: {}",
                style.paint("31", "verdict:"),
                cx.time(d.at),
                action_text(d),
                d.rule,
                d.reason
            );
        }
    }
    out
}
