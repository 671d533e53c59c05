//! `webfence bans|ban|unban|status`: clients of the daemon's control socket.

use std::fmt::Write as _;
use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::{BanArgs, BansArgs, SocketArgs, StatusArgs, UnbanArgs, emit};
use super::{FlushArgs, ReloadArgs};
use crate::daemon::control::{Request, request};
use crate::daemon::runtime::{load_settings, socket_path};
use crate::detect::addr::Subject;
use crate::detect::engine::{human_duration, human_span};
use crate::log::time::format_rfc3339;
use crate::report::text::{Style, thousands, truncate};

fn ask(socket: &SocketArgs, req: &Request) -> Result<Value> {
    let path = socket_path(&socket.socket, &socket.config.config)?;
    let answer = request(&path, req)?;
    if answer.get("ok").and_then(Value::as_bool) != Some(true) {
        let error = answer
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("the daemon refused the request");
        bail!("{error}");
    }
    Ok(answer)
}

fn style() -> Style {
    Style {
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        width: super::terminal_width(),
    }
}

fn num(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// A text field of an answer, made safe for a terminal: a manual ban's
/// reason is whatever was typed or sent to the socket.
fn text(v: &Value, key: &str) -> String {
    let raw = v.get(key).and_then(Value::as_str).unwrap_or("");
    crate::log::parse::escape_for_display(raw.as_bytes())
}

/// The daemon's answer, or `None` when no daemon listens on the socket.
fn ask_if_running(socket: &SocketArgs, req: &Request) -> Result<Option<Value>> {
    let path = socket_path(&socket.socket, &socket.config.config)?;
    match request(&path, req) {
        Err(crate::daemon::control::ControlError::Connect { .. }) => Ok(None),
        Err(e) => Err(e.into()),
        Ok(answer) if answer.get("ok").and_then(Value::as_bool) == Some(true) => Ok(Some(answer)),
        Ok(answer) => bail!(
            "{}",
            answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("the daemon refused the request")
        ),
    }
}

/// With the daemon down, bans come from the ledger itself, as cscli reads
/// its database: the admin can still see what is in force and why.
fn bans_from_ledger(socket: &SocketArgs, q: &crate::enforce::ledger::Query) -> Result<Value> {
    let settings = load_settings(&socket.config.config)?;
    let path = settings.state_dir.join("ledger.db");
    if !path.exists() {
        bail!(
            "the daemon is not running and there is no ledger at {} (is [daemon] state_dir right?)",
            path.display()
        );
    }
    let ledger = crate::enforce::ledger::Ledger::open_read_only(&path)?;
    let now = crate::daemon::actions::enforcer::wall_ms();
    let bans = ledger.query(q, now)?;
    eprintln!(
        "webfence: the daemon is not running; read from the ledger {}",
        path.display()
    );
    Ok(json!({"ok": true, "now_ms": now, "offline": true, "bans": bans}))
}

/// A ban as `replay --json` names a decision (`ip` or `cidr`, `rule`,
/// `reason`, `evidence`, `repeat`), with RFC 3339 times.
fn ban_json(b: &Value) -> Value {
    let subject = b.get("subject").and_then(Value::as_str).unwrap_or("");
    let time = |key: &str| {
        b.get(key)
            .and_then(Value::as_i64)
            .map(|ms| Value::String(format_rfc3339(ms, None)))
            .unwrap_or(Value::Null)
    };
    let decision: Value = b
        .get("evidence")
        .and_then(Value::as_str)
        .and_then(|e| serde_json::from_str(e).ok())
        .unwrap_or(Value::Null);
    let mut out = serde_json::Map::new();
    let key = if subject.contains('/') { "cidr" } else { "ip" };
    out.insert(key.into(), subject.into());
    for k in ["rule", "reason", "origin"] {
        out.insert(k.into(), b.get(k).cloned().unwrap_or(Value::Null));
    }
    out.insert("started".into(), time("started_ms"));
    out.insert("expires".into(), time("expires_ms"));
    out.insert("ended".into(), time("ended_ms"));
    out.insert(
        "ended_by".into(),
        b.get("ended_by").cloned().unwrap_or(Value::Null),
    );
    let duration_s = (num(b, "expires_ms") - num(b, "started_ms")).max(0) / 1000;
    out.insert("duration_s".into(), duration_s.into());
    out.insert(
        "repeat".into(),
        decision.get("repeat").cloned().unwrap_or(0.into()),
    );
    out.insert(
        "evidence".into(),
        decision.get("evidence").cloned().unwrap_or(Value::Null),
    );
    Value::Object(out)
}

pub(super) fn bans(args: BansArgs) -> Result<ExitCode> {
    if let Some(ip) = &args.ip {
        ip.parse::<Subject>()
            .map_err(|e| anyhow::anyhow!("invalid --ip: {e}"))?;
    }
    if args.farm {
        return farm_bans(&args);
    }
    let req = Request::Bans {
        history: args.history,
        rule: args.rule.clone(),
        within: args.ip.clone(),
        limit: args.limit,
    };
    let answer = match ask_if_running(&args.socket, &req)? {
        Some(a) => a,
        None => bans_from_ledger(
            &args.socket,
            &crate::enforce::ledger::Query {
                history: args.history,
                rule: args.rule.clone(),
                within: args.ip.as_deref().and_then(|i| i.parse().ok()),
                limit: args.limit,
            },
        )?,
    };
    let now = num(&answer, "now_ms");
    let bans = answer
        .get("bans")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = String::new();
    if args.json {
        for b in &bans {
            let _ = writeln!(out, "{}", ban_json(b));
        }
        emit(out.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    if bans.is_empty() {
        eprintln!(
            "webfence: {}",
            if args.history {
                "no bans recorded"
            } else {
                "no bans in force"
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let style = style();
    if answer.get("dry_run").and_then(Value::as_bool) == Some(true) {
        let _ = writeln!(
            out,
            "{}",
            style.paint(
                "1;33",
                "dry run: these bans would be made; none is enforced or recorded"
            )
        );
    }
    let header = if args.history {
        format!(
            "{:<40} {:<22} {:<25} {:<25} {:<9} {}",
            "IP", "RULE", "STARTED", "ENDED", "HOW", "REASON"
        )
    } else {
        format!(
            "{:<40} {:<22} {:<25} {:>10}  {}",
            "IP", "RULE", "STARTED", "LEFT", "REASON"
        )
    };
    let _ = writeln!(out, "{}", style.paint("1", &header));
    for b in &bans {
        let expires = num(b, "expires_ms");
        let started = format_rfc3339(num(b, "started_ms"), None);
        let repeat = ban_json(b)
            .get("repeat")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let rule = if repeat > 0 {
            format!("{} ×{}", text(b, "rule"), repeat + 1)
        } else {
            text(b, "rule")
        };
        let reason = truncate(&text(b, "reason"), 80);
        let subject = text(b, "subject");
        let ended_by = b.get("ended_by").and_then(Value::as_str);
        if args.history {
            let (ended, how) = match ended_by {
                Some(how) => (format_rfc3339(num(b, "ended_ms"), None), how.to_string()),
                None if expires > now => ("-".into(), "in force".into()),
                None => (format_rfc3339(expires, None), "expired".into()),
            };
            let _ = writeln!(
                out,
                "{subject:<40} {:<22} {started:<25} {ended:<25} {how:<9} {reason}",
                truncate(&rule, 22)
            );
        } else {
            let left = match ended_by {
                Some(how) => how.to_string(),
                None if expires > now => human_span(((expires - now) / 1000) as u64),
                None => "expired".into(),
            };
            let _ = writeln!(
                out,
                "{subject:<40} {:<22} {started:<25} {left:>10}  {reason}",
                truncate(&rule, 22)
            );
        }
    }
    emit(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// Addresses from the command line and the file, each checked; a bad line
/// is reported as FILE:LINE with its value and nothing is sent.
fn collect_subjects(args: &BanArgs) -> Result<Vec<String>> {
    let mut subjects = Vec::new();
    let mut errors = Vec::new();
    let parse = |item: &str| -> Result<String, crate::detect::addr::SubjectError> {
        let exact = Subject::parse_exact(item);
        match (exact, args.normalize) {
            (Ok(v), _) => Ok(v.to_string()),
            (Err(_), true) => {
                let v: Subject = item.parse()?;
                eprintln!("webfence: {} taken as {v}", item.trim());
                Ok(v.to_string())
            }
            (Err(e), false) => Err(e),
        }
    };
    for s in &args.subjects {
        match parse(s) {
            Ok(v) => subjects.push(v),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if let Some(file) = &args.file {
        let mut data = String::new();
        let name = if file == "-" {
            "<stdin>"
        } else {
            file.as_str()
        };
        let read = if file == "-" {
            std::io::stdin().read_to_string(&mut data)
        } else {
            std::fs::File::open(file).and_then(|mut f| f.read_to_string(&mut data))
        };
        if let Err(e) = read {
            bail!("cannot read {name}: {e}");
        }
        for (i, line) in data.lines().enumerate() {
            let item = line.split('#').next().unwrap_or("").trim();
            if item.is_empty() {
                continue;
            }
            match parse(item) {
                Ok(v) => subjects.push(v),
                Err(e) => errors.push(format!("{name}:{}: {e}", i + 1)),
            }
        }
    }
    if !errors.is_empty() {
        let shown: Vec<&String> = errors.iter().take(10).collect();
        let more = if errors.len() > 10 {
            format!("\n  … and {} more", errors.len() - 10)
        } else {
            String::new()
        };
        bail!(
            "nothing banned; {} invalid:\n  {}{more}",
            if errors.len() == 1 {
                "one address is"
            } else {
                "some addresses are"
            },
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
    if subjects.is_empty() {
        bail!("nothing to ban: name addresses or CIDRs, or --file FILE ('-' for stdin)");
    }
    Ok(subjects)
}

pub(super) fn ban(args: BanArgs) -> Result<ExitCode> {
    let subjects = collect_subjects(&args)?;
    let answer = ask(
        &args.socket,
        &Request::Ban {
            subjects,
            for_s: Some(args.duration),
            reason: args.reason.clone(),
            force: args.force,
            replace: args.replace,
        },
    )?;
    let banned = num(&answer, "banned");
    let refused = answer
        .get("refused")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for r in &refused {
        eprintln!(
            "webfence: refused {}: on the allowlist ({}); --force bans it anyway",
            text(r, "ip"),
            text(r, "allowlisted")
        );
    }
    let kept = answer
        .get("kept")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for k in &kept {
        eprintln!(
            "webfence: {} already banned until {}; kept (--replace sets the new duration)",
            text(k, "ip"),
            format_rfc3339(num(k, "until_ms"), None)
        );
    }
    let backend_ok = answer.get("backend_ok").and_then(Value::as_bool) == Some(true);
    let dry_run = answer.get("dry_run").and_then(Value::as_bool) == Some(true);
    println!(
        "{} {} for {}{}",
        if dry_run { "would ban" } else { "banned" },
        thousands(banned as u64),
        human_duration(args.duration),
        if dry_run {
            " (dry run: nothing is enforced or recorded)"
        } else if backend_ok || banned == 0 {
            ""
        } else {
            " (recorded; the backend is degraded, see `webfence status`)"
        }
    );
    Ok(if refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(super) fn unban(args: UnbanArgs) -> Result<ExitCode> {
    for s in &args.subjects {
        s.parse::<Subject>().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let answer = ask(
        &args.socket,
        &Request::Unban {
            subjects: args.subjects.clone(),
            all: args.all,
        },
    )?;
    let lifted: Vec<&str> = answer
        .get("unbanned")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !args.all {
        for s in &args.subjects {
            let canonical = s
                .parse::<Subject>()
                .map(|v| v.to_string())
                .unwrap_or_default();
            if lifted.contains(&canonical.as_str()) {
                continue;
            }
            let covering: Vec<String> = answer
                .get("covered")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|c| c.get("ip").and_then(Value::as_str) == Some(canonical.as_str()))
                .map(|c| text(c, "by"))
                .collect();
            if covering.is_empty() {
                eprintln!("webfence: {s} was not banned");
            } else {
                eprintln!(
                    "webfence: {s} is not banned itself but inside the banned network {} (unban that to lift it)",
                    covering.join(", ")
                );
            }
        }
    }
    println!("unbanned {}", thousands(lifted.len() as u64));
    Ok(if lifted.is_empty() && !args.all {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `status` with no daemon: said plainly, with what the ledger holds, and
/// exit code 3 (nothing is being protected).
fn status_offline(args: &StatusArgs) -> Result<ExitCode> {
    let path = socket_path(&args.socket.socket, &args.socket.config.config)?;
    let mut out = format!(
        "webfence run is NOT RUNNING (nothing answers on {}): no log is followed and no new ban is made; bans already in the kernel stay until they expire\n",
        path.display()
    );
    if let Ok(s) = load_settings(&args.socket.config.config) {
        let ledger = s.state_dir.join("ledger.db");
        match crate::enforce::ledger::Ledger::open_read_only(&ledger)
            .and_then(|l| l.counts(crate::daemon::actions::enforcer::wall_ms()))
        {
            Ok((active, recorded)) => {
                out.push_str(&format!(
                    "ledger    {}: {} bans in force, {} recorded\n",
                    ledger.display(),
                    thousands(active),
                    thousands(recorded)
                ));
            }
            Err(_) => out.push_str(&format!("ledger    none at {}\n", ledger.display())),
        }
    }
    if args.json {
        emit(
            format!(
                "{}\n",
                json!({"ok": false, "running": false, "healthy": false})
            )
            .as_bytes(),
        )?;
    } else {
        emit(out.as_bytes())?;
    }
    Ok(ExitCode::from(3))
}

/// `status RULE`: one rule's figures and the bans it holds in force.
fn status_of_rule(args: &StatusArgs, rule: &str, answer: &Value) -> Result<ExitCode> {
    let lp = answer.get("loop").cloned().unwrap_or_default();
    let figures = lp
        .get("per_rule")
        .and_then(Value::as_array)
        .and_then(|rules| {
            rules
                .iter()
                .find(|r| r.get("rule").and_then(Value::as_str) == Some(rule))
        })
        .cloned()
        .unwrap_or_default();
    let in_force = answer
        .get("bans")
        .and_then(|b| b.get("active_by_rule"))
        .and_then(|m| m.get(rule))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let bans = ask(
        &args.socket,
        &Request::Bans {
            history: false,
            rule: Some(rule.to_string()),
            within: None,
            limit: Some(10),
        },
    )?;
    let now = num(answer, "now_ms");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rule      {}",
        crate::log::parse::escape_for_display(rule.as_bytes())
    );
    let _ = writeln!(
        out,
        "decided   {} times since the start, {} bans",
        thousands(num(&figures, "decisions") as u64),
        thousands(num(&figures, "bans") as u64)
    );
    let _ = writeln!(out, "in force  {}", thousands(in_force as u64));
    let last = match figures.get("last_ms").and_then(Value::as_i64) {
        Some(ms) => format!(
            "{} ({} ago)",
            format_rfc3339(ms, None),
            human_span(((now - ms).max(0) / 1000) as u64)
        ),
        None => "never since the start".into(),
    };
    let _ = writeln!(out, "last      {last}");
    let list = bans
        .get("bans")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !list.is_empty() {
        let _ = writeln!(out, "newest bans in force:");
        for b in &list {
            let left = human_span(((num(b, "expires_ms") - now).max(0) / 1000) as u64);
            let _ = writeln!(
                out,
                "  {:<40} {:>9} left  {}",
                text(b, "subject"),
                left,
                truncate(&text(b, "reason"), 60)
            );
        }
    }
    emit(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn status(args: StatusArgs) -> Result<ExitCode> {
    let Some(answer) = ask_if_running(&args.socket, &Request::Status)? else {
        return status_offline(&args);
    };
    if let Some(rule) = &args.rule {
        return status_of_rule(&args, rule, &answer);
    }
    if args.json {
        emit(format!("{answer}\n").as_bytes())?;
        let healthy = answer.get("healthy").and_then(Value::as_bool) == Some(true);
        return Ok(if healthy {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        });
    }
    let style = style();
    let lp = answer.get("loop").cloned().unwrap_or_default();
    let backend = answer.get("backend").cloned().unwrap_or_default();
    let health = backend.get("health").cloned().unwrap_or_default();
    let ok = health.get("ok").and_then(Value::as_bool) == Some(true);
    let ledger = answer.get("ledger").cloned().unwrap_or_default();
    let ledger_health = ledger.get("health").cloned().unwrap_or_default();
    let ledger_ok = ledger_health.get("ok").and_then(Value::as_bool) != Some(false);
    let now = num(&answer, "now_ms");
    let mut out = String::new();
    let up = ((now - num(&lp, "started_ms")).max(0) / 1000) as u64;
    let _ = writeln!(
        out,
        "{} {} (pid {}), up {}{}",
        style.paint("1;36", "webfence run"),
        text(&answer, "version"),
        num(&answer, "pid"),
        human_span(up),
        if lp.get("dry_run").and_then(Value::as_bool) == Some(true) {
            ", dry run: nothing is enforced"
        } else {
            ""
        }
    );
    let since = format_rfc3339(num(&health, "since_ms"), None);
    let _ = writeln!(
        out,
        "backend   {} {}{}",
        text(&backend, "name"),
        if ok {
            style.paint("32", "ok")
        } else {
            style.paint("1;31", "DEGRADED")
        },
        if ok && num(&health, "failures") == 0 {
            String::new()
        } else if ok {
            format!(
                " ({} failures since the start, recovered)",
                num(&health, "failures")
            )
        } else {
            format!(
                " since {since}: {} (retrying; bans are recorded and applied when it is back)",
                text(&health, "error")
            )
        }
    );
    if let Some(d) = backend.get("dropped").filter(|d| !d.is_null()) {
        let _ = writeln!(
            out,
            "dropped   {} packets, {} by webfence's rules (at the last check)",
            thousands(num(d, "packets") as u64),
            crate::report::human_bytes(num(d, "bytes") as u64)
        );
    }
    if !ledger_ok {
        let _ = writeln!(
            out,
            "ledger    {} since {}: {} ({} bans in the kernel wait to be recorded; retrying)",
            style.paint("1;31", "DEGRADED"),
            format_rfc3339(num(&ledger_health, "since_ms"), None),
            text(&ledger_health, "error"),
            thousands(num(&ledger, "pending") as u64)
        );
    }
    let problems = lp
        .get("problems")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for p in &problems {
        let _ = writeln!(
            out,
            "logs      {} {}",
            style.paint("1;31", "NOT PROTECTING"),
            crate::log::parse::escape_for_display(p.as_str().unwrap_or("").as_bytes())
        );
    }
    let watch_problems = lp
        .get("watch_problems")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for p in &watch_problems {
        let _ = writeln!(
            out,
            "machine   {} {}",
            style.paint("1;31", "NOT PROTECTING"),
            crate::log::parse::escape_for_display(p.as_str().unwrap_or("").as_bytes())
        );
    }
    // What else keeps it from guarding (a blocklist that never loaded).
    let all: Vec<Value> = answer
        .get("all_problems")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for p in all
        .iter()
        .filter(|p| !problems.contains(p) && !watch_problems.contains(p))
    {
        let _ = writeln!(
            out,
            "lists     {} {}",
            style.paint("1;31", "NOT PROTECTING"),
            crate::log::parse::escape_for_display(p.as_str().unwrap_or("").as_bytes())
        );
    }
    let problems = all;
    let bans = answer.get("bans").cloned().unwrap_or_default();
    let dry_run = lp.get("dry_run").and_then(Value::as_bool) == Some(true);
    let _ = writeln!(
        out,
        "bans      {} {}, {} {}",
        thousands(num(&bans, "active") as u64),
        if dry_run {
            "would be in force (dry run)"
        } else {
            "in force"
        },
        thousands(num(&bans, "recorded") as u64),
        if dry_run {
            "would be recorded"
        } else {
            "recorded"
        }
    );
    let _ = writeln!(
        out,
        "rules     {} loaded; {} decisions so far",
        num(&lp, "rules"),
        thousands(num(&lp, "decisions") as u64)
    );
    let mut per_rule = lp
        .get("per_rule")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    per_rule.sort_by_key(|r| std::cmp::Reverse(num(r, "decisions")));
    let by_rule = bans.get("active_by_rule").cloned().unwrap_or_default();
    for r in per_rule.iter().take(10) {
        let name = text(r, "rule");
        let last = r
            .get("last_ms")
            .and_then(Value::as_i64)
            .map(|ms| format!("last {} ago", human_span(((now - ms).max(0) / 1000) as u64)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<24} {:>9} decisions {:>8} in force  {last}",
            truncate(&name, 24),
            thousands(num(r, "decisions") as u64),
            thousands(
                by_rule
                    .get(name.as_str())
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            ),
        );
    }
    if per_rule.len() > 10 {
        let _ = writeln!(
            out,
            "  … {} more rules decided; `webfence status RULE` for one",
            per_rule.len() - 10
        );
    }
    guards_text(&mut out, &lp, now, &style);
    let _ = writeln!(
        out,
        "lines     {} read, {} malformed; format {}",
        thousands(num(&lp, "lines") as u64),
        thousands(num(&lp, "malformed") as u64),
        lp.get("format")
            .and_then(Value::as_str)
            .unwrap_or("not known yet")
    );
    let hooks = answer.get("hooks").cloned().unwrap_or_default();
    if num(&hooks, "failed") > 0 || num(&hooks, "dropped") > 0 {
        let _ = writeln!(
            out,
            "hooks     {} failed, {} dropped (queue full)",
            num(&hooks, "failed"),
            num(&hooks, "dropped")
        );
    }
    let _ = writeln!(out, "sources");
    let sources = lp
        .get("sources")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if sources.is_empty() {
        let _ = writeln!(out, "  (no file open yet)");
    }
    for s in &sources {
        let behind = num(s, "behind_bytes") as u64;
        let _ = writeln!(
            out,
            "  {}  read {} of {} bytes, {}",
            text(s, "path"),
            thousands(num(s, "offset") as u64),
            thousands(num(s, "size") as u64),
            if behind == 0 {
                "up to date".to_string()
            } else {
                format!("{} behind", crate::report::human_bytes(behind))
            }
        );
    }
    emit(out.as_bytes())?;
    Ok(if ok && ledger_ok && problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// The guards' lines of `status`: state, the values they read, the last
/// action and how it ended; then the kernel limits and what they refused.
fn guards_text(out: &mut String, lp: &Value, now: i64, style: &Style) {
    let guards = lp
        .get("guards")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !guards.is_empty() {
        let _ = writeln!(out, "guards    {} configured", guards.len());
    }
    for g in &guards {
        let ago = |ms: i64| human_span(((now - ms).max(0) / 1000) as u64);
        let state = match g.get("state").and_then(Value::as_str) {
            Some("pending") => format!("pending {}/{}", num(g, "checks"), num(g, "for_checks")),
            Some("firing") => {
                style.paint("1;33", &format!("FIRING for {}", ago(num(g, "since_ms"))))
            }
            _ if g.get("recovering").and_then(Value::as_bool) == Some(true) => {
                "recovering".to_string()
            }
            _ => style.paint("32", "ok"),
        };
        let values: Vec<String> = g
            .get("values")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|pair| {
                let name = pair.get(0)?.as_str()?;
                Some(match pair.get(1).and_then(Value::as_f64) {
                    Some(v) => format!(
                        "{name}={}",
                        crate::daemon::actions::guard::show_named(name, v)
                    ),
                    None => format!("{name}=unknown"),
                })
            })
            .collect();
        let last = g
            .get("last_action")
            .filter(|a| !a.is_null())
            .map(|a| {
                format!(
                    "  last {} {} ago: {}",
                    text(a, "what"),
                    ago(num(a, "at_ms")),
                    a.get("outcome")
                        .and_then(Value::as_str)
                        .unwrap_or("running")
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<24} {}  {}  ({}){last}",
            truncate(&text(g, "name"), 24),
            state,
            values.join(" "),
            text(g, "when"),
        );
    }
    for b in lp
        .get("blocklists")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let ago = |key: &str| {
            b.get(key)
                .and_then(Value::as_i64)
                .map(|ms| format!("{} ago", human_span(((now - ms).max(0) / 1000) as u64)))
                .unwrap_or_else(|| "never".into())
        };
        let _ = writeln!(
            out,
            "blocklist {}: {} networks ({} entries), loaded {}, changed {}, {} packets dropped{}",
            text(&b, "name"),
            thousands(num(&b, "nets") as u64),
            thousands(num(&b, "entries") as u64),
            ago("loaded_ms"),
            ago("changed_ms"),
            thousands(num(&b, "dropped_packets") as u64),
            b.get("error")
                .and_then(Value::as_str)
                .map(|e| format!(
                    "; {} {}",
                    style.paint("1;31", "REFRESH FAILED:"),
                    crate::log::parse::escape_for_display(e.as_bytes())
                ))
                .unwrap_or_default()
        );
    }
    if let Some(c) = lp.get("crawlers").filter(|c| !c.is_null()) {
        let paused = c
            .get("paused_until_ms")
            .and_then(Value::as_i64)
            .map(|until| {
                format!(
                    "; {} for {}: DNS answers none, so claimed crawlers are judged like any client",
                    style.paint("1;33", "LOOKUPS PAUSED"),
                    human_span(((until - now).max(0) / 1000) as u64)
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "crawlers  {} verified, {} fake, {} lookups unanswered{paused}",
            thousands(num(c, "verified") as u64),
            thousands(num(c, "fake") as u64),
            thousands(num(c, "unanswered") as u64),
        );
    }
    if let Some(f) = lp.get("farm").filter(|f| !f.is_null()) {
        let nodes: Vec<String> = f
            .get("nodes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|n| {
                let name = n.get(0)?.as_str()?;
                let at = n.get(1)?.as_i64()?;
                Some(format!(
                    "{name} {} ago",
                    human_span(((now - at).max(0) / 1000) as u64)
                ))
            })
            .collect();
        let state = text(f, "state");
        let _ = writeln!(
            out,
            "farm      node {} of '{}' at {}: {}, nodes: {}; {} published, {} applied, {} refused{}{}",
            text(f, "node"),
            text(f, "farm"),
            text(f, "redis"),
            if state == "degraded" {
                style.paint("1;31", "DEGRADED")
            } else {
                state
            },
            if nodes.is_empty() {
                "none seen yet".to_string()
            } else {
                nodes.join(", ")
            },
            thousands(num(f, "published") as u64),
            thousands(num(f, "applied") as u64),
            thousands(num(f, "refused") as u64),
            if num(f, "queued") > 0 {
                format!(", {} waiting for Redis", thousands(num(f, "queued") as u64))
            } else {
                String::new()
            },
            f.get("last_lag_ms")
                .and_then(Value::as_i64)
                .map(|l| format!(", last ban {l} ms after it was published"))
                .unwrap_or_default()
        );
        let others: Vec<&str> = f
            .get("other_farms")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !others.is_empty() {
            let _ = writeln!(
                out,
                "          {}: no other node of '{}' seen; this Redis holds farm(s) {}. Is [farm] name right?",
                style.paint("1;33", "ALONE"),
                text(f, "farm"),
                others.join(", ")
            );
        }
        if let Some(n) = f.get("farm_bans").and_then(Value::as_u64) {
            let _ = writeln!(
                out,
                "          {} bans in force across the farm",
                thousands(n)
            );
        }
        if let Some(c) = f.get("counts").filter(|c| !c.is_null()) {
            let _ = writeln!(
                out,
                "          farm counts: {} requests of {} keys sent in {} round trips{}{}{}",
                thousands(num(c, "requests") as u64),
                thousands(num(c, "keys") as u64),
                thousands(num(c, "round_trips") as u64),
                c.get("last_ms")
                    .and_then(Value::as_u64)
                    .map(|ms| format!(", the last in {ms} ms"))
                    .unwrap_or_default(),
                if num(c, "dropped") > 0 {
                    format!(
                        "; {} {} requests not shared while Redis was away",
                        style.paint("1;31", "LOST:"),
                        thousands(num(c, "dropped") as u64)
                    )
                } else {
                    String::new()
                },
                if num(c, "refused_keys") > 0 {
                    format!(
                        "; {} keys refused by Redis (another type: see the log)",
                        thousands(num(c, "refused_keys") as u64)
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    if let Some(p) = lp.get("packets").filter(|p| !p.is_null()) {
        let last = p
            .get("last_sample_ms")
            .and_then(Value::as_i64)
            .map(|ms| {
                format!(
                    "last sample {} ago",
                    human_span(((now - ms).max(0) / 1000) as u64)
                )
            })
            .unwrap_or_else(|| "no sample yet".into());
        let top: Vec<String> = p
            .get("top")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|r| num(r, "p2p_packets") > 0)
            .map(|r| {
                format!(
                    "{} {} BitTorrent packets",
                    text(r, "address"),
                    thousands(num(r, "p2p_packets") as u64)
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "packets   {}: {}, {} samples, {} packets{}{}",
            text(p, "interface"),
            last,
            thousands(num(p, "samples") as u64),
            thousands(num(p, "packets") as u64),
            if top.is_empty() {
                String::new()
            } else {
                format!("; top: {}", top.join(", "))
            },
            p.get("error")
                .and_then(Value::as_str)
                .map(|e| format!(
                    "; {} {}",
                    style.paint("1;31", "CAPTURE FAILED:"),
                    crate::log::parse::escape_for_display(e.as_bytes())
                ))
                .unwrap_or_default()
        );
    }
    for c in lp
        .get("notify")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let failed = num(&c, "messages_failed");
        let _ = writeln!(
            out,
            "notify    {} ({}): {} sent, {}, {} events{}",
            text(&c, "name"),
            text(&c, "kind"),
            thousands(num(&c, "messages_sent") as u64),
            if failed > 0 {
                style.paint("1;31", &format!("{} FAILED", thousands(failed as u64)))
            } else {
                "0 failed".to_string()
            },
            thousands(num(&c, "events") as u64),
            c.get("last_error")
                .and_then(Value::as_str)
                .filter(|_| failed > 0)
                .map(|e| format!(
                    " (last: {})",
                    crate::log::parse::escape_for_display(e.as_bytes())
                ))
                .unwrap_or_default()
        );
    }
    if let Some(l) = lp.get("limits").filter(|l| !l.is_null()) {
        let mut what = Vec::new();
        if let Some(n) = l.get("max_conns").and_then(Value::as_u64) {
            what.push(format!("{n} connections"));
        }
        if let Some(n) = l.get("new_per_second").and_then(Value::as_u64) {
            what.push(format!("{n} new/s"));
        }
        let ports: Vec<String> = l
            .get("ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|p| p.to_string())
            .collect();
        let _ = writeln!(
            out,
            "limits    {} per client on ports {} {}; refused {} over the connection limit, {} over the rate",
            what.join(", "),
            if ports.is_empty() {
                "(all)".to_string()
            } else {
                ports.join(", ")
            },
            if l.get("in_force").and_then(Value::as_bool) == Some(true) {
                style.paint("32", "in force")
            } else {
                style.paint("1;31", "NOT IN FORCE")
            },
            thousands(num(l, "refused_conns") as u64),
            thousands(num(l, "refused_rate") as u64),
        );
    }
}

pub(super) fn reload(args: ReloadArgs) -> Result<ExitCode> {
    let answer = ask(&args.socket, &Request::Reload)?;
    let asked = num(&answer, "requested_ms");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = ask(&args.socket, &Request::Status)?;
        let last = status
            .get("loop")
            .and_then(|l| l.get("last_reload"))
            .cloned()
            .unwrap_or_default();
        if num(&last, "at_ms") >= asked {
            let message = text(&last, "message");
            if last.get("ok").and_then(Value::as_bool) == Some(true) {
                println!("reloaded: {message}");
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!("webfence: reload refused; the running configuration stays:\n{message}");
            return Ok(ExitCode::FAILURE);
        }
        if std::time::Instant::now() > deadline {
            bail!("the daemon did not reload within 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

pub(super) fn flush(args: FlushArgs) -> Result<ExitCode> {
    let path = socket_path(&args.socket.socket, &args.socket.config.config)?;
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        bail!(
            "the daemon is running (it answers on {}): stop it first (systemctl stop webfence), or it would put its bans back",
            path.display()
        );
    }
    let settings = load_settings(&args.socket.config.config)?;
    let name = args.backend.unwrap_or(settings.backend);
    let mut backend =
        crate::enforce::backend(&name, &settings.table, Vec::new()).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown backend '{name}' (expected one of {})",
                crate::enforce::BACKENDS.join(", ")
            )
        })?;
    let held = backend.list().map(|b| b.len()).unwrap_or(0);
    backend.teardown()?;
    println!(
        "removed webfence's {name} objects ({} bans in them); the ledger is kept in {}",
        thousands(held as u64),
        settings.state_dir.display()
    );
    if crate::enforce::blocklists::remove(&["nft".to_string()], &settings.table).is_ok()
        && !settings.blocklists.is_empty()
    {
        println!(
            "removed the blocklists (nftables table inet {})",
            crate::enforce::blocklists::table_name(&settings.table)
        );
    }
    // The kernel limits live in a table of their own, whatever the backend.
    let limits_table = crate::enforce::limits::table_name(&settings.table);
    let nft = vec!["nft".to_string()];
    let present = crate::enforce::limits::refused(&nft, &settings.table).is_ok();
    if present {
        crate::enforce::limits::remove(&nft, &settings.table)?;
        println!("removed the kernel connection limits (nftables table inet {limits_table})");
    }
    Ok(ExitCode::SUCCESS)
}

/// `bans --farm`: the farm's bans in force, as Redis holds them.
fn farm_bans(args: &BansArgs) -> Result<ExitCode> {
    let settings = load_settings(&args.socket.config.config)?;
    let Some(farm) = settings.farm else {
        anyhow::bail!(
            "no [farm] in the configuration: --farm reads the farm's bans from its Redis"
        );
    };
    let within: Option<Subject> = args.ip.as_deref().and_then(|i| i.parse().ok());
    let mut rows =
        crate::daemon::actions::farm::bans_in_force(&farm).map_err(|e| anyhow::anyhow!(e))?;
    rows.retain(|p| {
        args.rule.as_ref().is_none_or(|r| &p.rule == r)
            && within.is_none_or(|w| {
                p.subject
                    .parse::<Subject>()
                    .is_ok_and(|s| s.prefix >= w.prefix && w.contains(s.bits))
            })
    });
    if let Some(n) = args.limit {
        rows.truncate(n);
    }
    let mut out = String::new();
    if args.json {
        for p in &rows {
            let _ = writeln!(out, "{}", serde_json::to_string(p).unwrap_or_default());
        }
    } else {
        let now = crate::daemon::actions::enforcer::wall_ms();
        let _ = writeln!(
            out,
            "{:<40} {:<12} {:<24} {:>10}  reason",
            "subject", "node", "rule", "left"
        );
        for p in &rows {
            let _ = writeln!(
                out,
                "{:<40} {:<12} {:<24} {:>10}  {}",
                p.subject,
                crate::log::parse::escape_for_display(p.node.as_bytes()),
                crate::log::parse::escape_for_display(p.rule.as_bytes()),
                human_span(((p.expires_ms - now).max(0) / 1000) as u64),
                crate::log::parse::escape_for_display(p.reason.as_bytes()),
            );
        }
        let _ = writeln!(
            out,
            "{} bans in force across farm '{}' ({})",
            rows.len(),
            farm.name,
            farm.shown
        );
    }
    super::emit(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
