//! `webfence top`: follow logs and show who is hammering the server now.
//!
//! Collection (follower + parser + [`LiveStats`]) is kept apart from
//! drawing: a snapshot is plain data, rendered here as compact text.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::dashboard::{Dash, DecisionRow, Machine, draw, handle_key};
use super::{TopArgs, emit, threads};
use crate::pipeline::{self, Job, LiveEvent, LiveParser};
use crate::report::human_bytes;
use crate::report::text::{Style, thousands};
use crate::source::Input;
use crate::source::follow::{FollowOptions, Follower};
use crate::source::wake::Waker;
use crate::stats::Filter;
use crate::stats::live::{LiveClock, LiveStats, Snapshot, SortBy, View};

/// Turns appended bytes into counted requests and live rule decisions.
struct Collector {
    live: LiveParser,
    stats: LiveStats,
    rules: Rules,
}

/// The rule engine, run on the live lines: what the rules would decide now.
struct Rules {
    set: crate::detect::RuleSet,
    allow: crate::detect::allow::Allowlist,
    engine: crate::detect::Engine,
    scratch: crate::detect::rules::ClassifyScratch,
    /// The most recent decisions, newest last.
    recent: std::collections::VecDeque<crate::detect::Decision>,
}

const RECENT_DECISIONS: usize = 200;

impl Rules {
    fn on(&mut self, stats: &mut LiveStats, event: LiveEvent<'_>) {
        match event {
            LiveEvent::Format(parsers) => self
                .engine
                .set_field_text(pipeline::field_text_of(parsers.to_vec())),
            LiveEvent::Request(r, line, number) => {
                stats.record(r);
                let allowed = self.allow.contains(r.client);
                let mut ev = self.set.classify(r, allowed, &mut self.scratch);
                ev.loc = crate::detect::rules::loc(0, number);
                self.engine.feed(&ev, line);
                for d in self.engine.take_decisions() {
                    if self.recent.len() == RECENT_DECISIONS {
                        self.recent.pop_front();
                    }
                    self.recent.push_back(d);
                }
            }
            LiveEvent::Malformed(..) => {}
            // `top` reads line by line (no `bulk_from`); taken so anyway.
            LiveEvent::Lines(lines) => {
                let mut scratch = crate::log::Scratch::default();
                lines.each(&mut scratch, &mut |e| self.on(stats, e));
            }
        }
    }
}

impl Collector {
    fn feed(&mut self, path: &Path, bytes: &[u8]) {
        let (rules, stats) = (&mut self.rules, &mut self.stats);
        self.live.feed(path, bytes, &mut |e| rules.on(stats, e));
    }

    /// Before enough lines came for detection, count what there is.
    fn flush_sample(&mut self) {
        let (rules, stats) = (&mut self.rules, &mut self.stats);
        self.live.flush_sample(&mut |e| rules.on(stats, e));
    }

    /// Decisions as display rows, newest first.
    fn decision_rows(&self) -> Vec<DecisionRow> {
        self.rules
            .recent
            .iter()
            .rev()
            .map(|d| DecisionRow {
                at: crate::log::time::format_rfc3339(d.at, None),
                action: match d.duration_s {
                    Some(s) => format!(
                        "{} {}",
                        d.action.name(),
                        crate::detect::engine::human_duration(s)
                    ),
                    None => d.action.name().to_string(),
                },
                client: d.subject.to_string(),
                rule: d.rule.clone(),
                reason: d.reason.clone(),
                count: d.evidence.count as u64,
            })
            .collect()
    }
}

fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    values
        .iter()
        .map(|&v| {
            if v == 0 {
                ' '
            } else {
                BARS[((v * 7) / max) as usize]
            }
        })
        .collect()
}

use crate::report::text::truncate as cut;

/// The compact text snapshot of `--plain` (and of a pipe).
pub fn render_plain(s: &Snapshot, style: Style) -> String {
    let mut out = String::new();
    let when = crate::log::time::format_rfc3339(s.now * 1000, None);
    let st = &s.status;
    let _ = writeln!(
        out,
        "{} {when}  {:.1} req/s  1m {}  5m {}  15m {}  {}/s  2xx {} 3xx {} 4xx {} 5xx {}  clients {}",
        style.paint("1;36", "webfence top"),
        s.per_second,
        thousands(s.last_1m),
        thousands(s.last_5m),
        thousands(s.last_15m),
        human_bytes(s.bytes_per_second as u64),
        thousands(st[1]),
        thousands(st[2]),
        thousands(st[3]),
        thousands(st[4]),
        thousands(s.active_clients as u64),
    );
    if s.evicted_clients > 0 {
        let _ = writeln!(
            out,
            "  {} clients seen least recently were dropped to stay under [state] memory_cap",
            thousands(s.evicted_clients)
        );
    }
    let _ = writeln!(out, "  last 60 s |{}|", sparkline(&s.history));
    let _ = writeln!(
        out,
        "  {}",
        style.paint(
            "1",
            &format!(
                "{:<40} {:>7} {:>6} {:>7} {:>7} {:>6}  {}",
                "CLIENT", "REQ/S", "1M", "5M", "15M", "%", "TOP PATH / USER AGENT"
            )
        )
    );
    for c in &s.clients {
        let _ = writeln!(
            out,
            "  {:<40} {:>7.1} {:>6} {:>7} {:>7} {:>5.1}%  {}  {}",
            cut(&c.client, 40),
            c.per_second,
            thousands(c.last_1m),
            thousands(c.last_5m),
            thousands(c.last_15m),
            c.percent,
            cut(&c.top_path, 40),
            cut(&c.user_agent, 40)
        );
    }
    let list = |title: &str, rows: &[(String, u64)], out: &mut String| {
        let items: Vec<String> = rows
            .iter()
            .take(5)
            .map(|(k, n)| format!("{} {}", cut(k, 40), thousands(*n)))
            .collect();
        if !items.is_empty() {
            let _ = writeln!(out, "  {title}: {}", items.join(" · "));
        }
    };
    list("paths (5m)", &s.paths, &mut out);
    list("hosts (5m)", &s.hosts, &mut out);
    let statuses: Vec<(String, u64)> = s
        .statuses
        .iter()
        .map(|(c, n)| (crate::log::parse::status_text(*c), *n))
        .collect();
    list("statuses (5m)", &statuses, &mut out);
    list("agents (5m)", &s.user_agents, &mut out);
    out
}

pub(super) fn top(args: TopArgs) -> Result<ExitCode> {
    if args.files.is_empty() {
        anyhow::bail!(
            "no log to follow: name files or globs, such as 'webfence top /var/log/nginx/*access.log'"
        );
    }
    // A path that does not exist is most often a typo: said at once rather
    // than waited on forever ("0 files followed").
    for f in &args.files {
        let literal = !f.contains(['*', '?', '[']);
        if literal && !args.wait && !std::path::Path::new(f).exists() {
            anyhow::bail!("{f} does not exist (--wait waits for it to appear)");
        }
        if let Some(kind) = crate::source::follow::not_a_file(std::path::Path::new(f)) {
            anyhow::bail!("cannot follow {f}: it is {kind}");
        }
    }
    let job = Job {
        inputs: args.files.iter().map(|f| Input::from_arg(f)).collect(),
        format: args.format.spec(),
        json_fields: args.format.json_fields()?,
        proxies: args.format.proxies()?,
        filter: Filter::default(),
        threads: threads(None),
    };
    let options = FollowOptions {
        from_start: args.from_start,
        ..FollowOptions::default()
    };
    let mut follower = Follower::new(args.files.clone(), options);
    let mut waker = Waker::new(&follower.directories());
    let set = args.config.load()?;
    let (allow, allow_warnings) =
        crate::detect::allow::Allowlist::build(&set.allow, &crate::detect::allow::SystemHost);
    for w in allow_warnings {
        eprintln!("webfence: warning: {w}");
    }
    let collector_cap = set.memory_cap;
    let mut collector = Collector {
        rules: Rules {
            engine: crate::detect::Engine::new(set.clone()),
            set,
            allow,
            scratch: Default::default(),
            recent: Default::default(),
        },
        live: LiveParser::new(job),
        stats: LiveStats::with_memory_cap(collector_cap),
    };
    let mut clock = LiveClock::default();
    let view = View {
        sort: SortBy::Now,
        group: args.group,
        filter: args.filter.clone().unwrap_or_default(),
        rows: args.rows,
    };
    let style = args.color.style(true);
    let interval = Duration::from_secs(args.interval.max(1));
    let mut shown = 0u64;
    use std::io::IsTerminal;
    if !args.plain && std::io::stdout().is_terminal() && std::io::stdin().is_terminal() {
        let mut dash = Dash {
            group: args.group,
            filter: view.filter.clone(),
            ..Dash::default()
        };
        let mut terminal = ratatui::try_init()?;
        let result = dashboard(
            &mut terminal,
            &mut follower,
            &mut collector,
            &mut clock,
            &mut dash,
            &args,
            interval,
        );
        ratatui::restore();
        for n in collector.live.notes.drain(..) {
            eprintln!("webfence: {n}");
        }
        return result;
    }
    loop {
        let deadline = Instant::now() + interval;
        loop {
            follower.poll(Instant::now(), &mut |path, bytes| {
                collector.feed(path, bytes)
            });
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            waker.watch(&follower.directories());
            waker.wait(left.min(Duration::from_millis(250)));
        }
        collector.flush_sample();
        for w in follower.warnings.drain(..) {
            eprintln!("webfence: warning: {w}");
        }
        for n in collector.live.notes.drain(..) {
            eprintln!("webfence: {n}");
        }
        let mut text = if collector.live.lines == 0 {
            let files: Vec<String> = follower
                .progress()
                .iter()
                .map(|p| p.0.display().to_string())
                .collect();
            format!(
                "webfence top: waiting for new lines ({} file{} followed{}{})\n",
                files.len(),
                if files.len() == 1 { "" } else { "s" },
                if files.is_empty() { "" } else { ": " },
                files.join(", ")
            )
        } else {
            let now = clock.now(collector.stats.newest());
            let mut t = render_plain(&collector.stats.snapshot(now, &view), style);
            let rows = collector.decision_rows();
            if !rows.is_empty() {
                let _ = writeln!(
                    t,
                    "  decisions the rules would take ({} so far, newest first):",
                    rows.len()
                );
                for d in rows.iter().take(5) {
                    let _ = writeln!(
                        t,
                        "    {}  {:<8} {:<24} {:<20} {}",
                        d.at,
                        d.action,
                        d.client,
                        d.rule,
                        cut(&d.reason, 60)
                    );
                }
            }
            t
        };
        text.push('\n');
        emit(text.as_bytes())?;
        shown += 1;
        if args.count.is_some_and(|n| shown >= n) {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// The interactive loop: collect continuously, redraw every interval and
/// on every key.
fn dashboard(
    terminal: &mut ratatui::DefaultTerminal,
    follower: &mut Follower,
    collector: &mut Collector,
    clock: &mut LiveClock,
    dash: &mut Dash,
    args: &TopArgs,
    interval: Duration,
) -> Result<ExitCode> {
    use ratatui::crossterm::event::{self, Event, KeyEventKind};
    let mut last_draw: Option<Instant> = None;
    let mut snap: Option<Snapshot> = None;
    let mut dirty = true;
    let mut frames = 0u64;
    loop {
        follower.poll(Instant::now(), &mut |path, bytes| {
            collector.feed(path, bytes)
        });
        follower.warnings.clear();
        let due = last_draw.is_none_or(|t| t.elapsed() >= interval);
        if due || dirty {
            collector.flush_sample();
            if !dash.paused || snap.is_none() {
                let view = View {
                    sort: dash.sort,
                    group: dash.group,
                    filter: dash.filter.clone(),
                    rows: 200,
                };
                let now = clock.now(collector.stats.newest());
                snap = Some(collector.stats.snapshot(now, &view));
            }
            let files = follower.progress().len();
            let sources = format!(
                "{files} file{} followed, {} lines{}",
                if files == 1 { "" } else { "s" },
                thousands(collector.live.lines),
                if collector.live.malformed > 0 {
                    format!(", {} malformed", thousands(collector.live.malformed))
                } else {
                    String::new()
                }
            );
            let mut machine = Machine::read();
            machine.conns = crate::stats::conns::ConnTable::read(
                &mut crate::source::conns::KernelConns::default(),
                &crate::stats::conns::ConnFilter::default(),
            )
            .ok();
            let decisions = collector.decision_rows();
            dash.clamp_decisions(decisions.len());
            if let Some(s) = &snap {
                terminal.draw(|f| draw(f, s, dash, &machine, &sources, &decisions))?;
            }
            if due {
                last_draw = Some(Instant::now());
                frames += 1;
            }
            dirty = false;
            if args.count.is_some_and(|n| frames >= n) {
                return Ok(ExitCode::SUCCESS);
            }
        }
        if event::poll(Duration::from_millis(100))? {
            match event::read()? {
                Event::Key(k) if k.kind == KeyEventKind::Press => {
                    if handle_key(dash, k) {
                        return Ok(ExitCode::SUCCESS);
                    }
                    dirty = true;
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_to_the_max() {
        assert_eq!(sparkline(&[0, 1, 7, 14]), " ▁▄█");
    }
}
