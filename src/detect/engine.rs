//! The stateful half of detection: one [`Event`] at a time, in time order,
//! turned into [`Decision`]s. Replay drives it with log time; the daemon
//! will drive it live. It does no I/O.

use serde::Serialize;

use super::addr::{NetSet, Subject, from_bits, mask};
use super::config::{FieldName, RuleKind};
use super::farmcount::{FarmCounts, Incoming, Outgoing};
use super::rules::{Action, Event, IpPart, Outcome, Rule, RuleSet};
use super::window::{DistinctState, KeyState, RateState, SAMPLES, ScoreState, Stamp, Table, key};
use crate::stats::Map;

/// A log line that contributed to a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub loc: u64,
    pub at: i64,
}

impl From<Stamp> for Mark {
    fn from(s: Stamp) -> Mark {
        Mark {
            loc: s.loc,
            at: s.t,
        }
    }
}

/// Why a decision was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// Requests, distinct values or score points that crossed the threshold.
    pub count: f64,
    /// The window (rate, distinct); for scores, the decay period; 0 for
    /// single-request matches.
    pub window_s: u64,
    pub threshold: f64,
    pub first: Mark,
    pub last: Mark,
    /// A few of the contributing log lines, most recent last.
    pub samples: Vec<String>,
}

impl Evidence {
    /// A counting rule's evidence: `count` over its limit within its window.
    fn counted(rule: &Rule, count: f64, first: Stamp, last: Stamp, samples: Vec<String>) -> Self {
        Evidence {
            count,
            window_s: (rule.window_ms / 1000) as u64,
            threshold: rule.limit as f64,
            first: first.into(),
            last: last.into(),
            samples,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub rule: String,
    pub subject: Subject,
    pub action: Action,
    /// For bans: the duration after escalation.
    pub duration_s: Option<u64>,
    /// Log time of the request that crossed the threshold.
    pub at: i64,
    pub reason: String,
    /// Earlier bans of this subject still remembered (0 for a first ban).
    pub repeat: u32,
    pub evidence: Evidence,
}

/// Per-rule totals for the replay summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuleTotals {
    /// Requests the rule looked at.
    pub requests: u64,
    pub decisions: u64,
    pub bans: u64,
}

/// Engine-wide totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub requests: u64,
    /// Requests from clients banned at the time: live, the kernel would
    /// have dropped them, so no rule sees them.
    pub blocked: u64,
    pub allowlisted: u64,
    pub evicted: u64,
    /// Highest memory the state reached, in bytes.
    pub peak_state_bytes: u64,
}

/// What `--explain` records for one client.
#[derive(Debug, Clone, PartialEq)]
pub enum TraceKind {
    /// A counting rule's count after this request.
    Count {
        count: u64,
        limit: u64,
    },
    Matched,
    /// A score after this request's points.
    Score {
        score: usize,
        value: f64,
        points: f64,
    },
    Decided {
        action: String,
        duration_s: Option<u64>,
    },
    Blocked {
        by: Subject,
    },
    Allowlisted,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub at: i64,
    pub loc: u64,
    /// Rule index; `None` for score, block and allowlist entries.
    pub rule: Option<usize>,
    pub kind: TraceKind,
}

/// Turns a log line into a field's text, for reasons ("46 requests for
/// /search"); the caller knows the log format, the engine does not.
pub type FieldText = Box<dyn FnMut(&[u8], FieldName) -> Option<String> + Send>;

enum RuleState {
    Rate(Table<RateState>),
    Distinct(Table<DistinctState>),
    Stateless,
}

struct Ban {
    until: i64,
}

/// How often (in requests) to check the memory budget: often enough that
/// growth in between is a small part of any sensible cap.
const BUDGET_CHECK_EVERY: u64 = 256;

pub struct Engine {
    rules: RuleSet,
    state: Vec<RuleState>,
    scores: Vec<Table<ScoreState>>,
    bans: Map<Subject, Ban>,
    /// Banned networks, for containment lookups.
    banned_nets: NetSet,
    /// (bans so far, time of the last) per subject, for escalation.
    history: Map<Subject, (u32, i64)>,
    /// Repeated non-ban decisions on one subject stay quiet until then.
    quiet: Map<(u16, Subject), i64>,
    now: i64,
    pub totals: Totals,
    pub rule_totals: Vec<RuleTotals>,
    decisions: Vec<Decision>,
    explain: Option<u128>,
    pub traces: Vec<Trace>,
    field_text: FieldText,
    since_check: u64,
    /// When each rule's (then score's) table was last swept of state
    /// older than its window.
    swept: Vec<i64>,
    swept_misc: i64,
    /// Bans decided so far; tells `feed` when to look for a new one.
    bans_made: u64,
    /// `scope = "farm"` rules' shared counts, when the daemon shares them.
    farm: Option<FarmCounts>,
}

/// Whether a table is due a sweep: once a window has passed since the
/// last one (but not more often than every 10 s of log time). Everything a
/// sweep keeps was then active within the last two windows, so a sweep
/// costs in proportion to the keys added since the one before, and a table
/// holds about two windows' worth of keys. Sweeping a 10-second table only
/// every five minutes, as before, let it hold thirty windows' worth: on the
/// benchmark log the tables outgrew the cache and every sweep shrank them
/// and every minute grew them back (BENCHMARKS.md, "Replay: sweeps, a
/// pass less, and an inlining lost"). Never more often than once a window:
/// a sweep drops a rule table's older generation unread
/// ([`Table::age`]), which is right only because it is a window old.
fn sweep_due(now: i64, window_ms: i64, last: i64) -> bool {
    now.saturating_sub(last) >= window_ms.max(10_000)
}

/// What `--explain` records for a counting rule after a request.
fn count_trace(stamp: Stamp, rule: usize, count: u64, limit: usize) -> Trace {
    Trace {
        at: stamp.t,
        loc: stamp.loc,
        rule: Some(rule),
        kind: TraceKind::Count {
            count,
            limit: limit as u64,
        },
    }
}

/// Names a farm rule's key across nodes: the rule, its window (nodes
/// configured differently count apart rather than mix), the subject and
/// the keyed field's text, cut to 256 bytes.
fn farm_id(rule: &Rule, subject: Subject, field_text: &mut FieldText, line: &[u8]) -> String {
    let mut id = format!("{}:{}:{subject}", rule.name, rule.window_ms / 1000);
    if let Some(f) = rule.key.field {
        let text = field_text(line, f).unwrap_or_default();
        let mut cut = text.len().min(256);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        id.push(':');
        id.push_str(&text[..cut]);
    }
    id
}

fn display_line(line: &[u8]) -> String {
    let cut = &line[..line.len().min(300)];
    crate::log::parse::escape_for_display(cut)
}

fn plural(n: f64, what: &str) -> String {
    if n == 1.0 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

pub fn human_duration(s: u64) -> String {
    match s {
        0 => "0s".into(),
        s if s % 604_800 == 0 => format!("{}w", s / 604_800),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A span of time as people read it: its two largest units, rounded down
/// ("5h 59m", "59m 52s", "3d 4h", "42s").
pub fn human_span(s: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let Some(i) = UNITS.iter().position(|&(u, _)| s >= u) else {
        return "0s".into();
    };
    let (big, big_name) = UNITS[i];
    let mut out = format!("{}{big_name}", s / big);
    if let Some(&(small, small_name)) = UNITS.get(i + 1) {
        let rest = s % big / small;
        if rest > 0 {
            out.push_str(&format!(" {rest}{small_name}"));
        }
    }
    out
}

impl Engine {
    pub fn new(rules: RuleSet) -> Engine {
        let state = rules
            .rules
            .iter()
            .map(|r| match r.kind {
                RuleKind::Rate => RuleState::Rate(Table::default()),
                RuleKind::Distinct => RuleState::Distinct(Table::default()),
                _ => RuleState::Stateless,
            })
            .collect();
        let scores = rules.scores.iter().map(|_| Table::default()).collect();
        let rule_totals = vec![RuleTotals::default(); rules.rules.len()];
        let rules_len = rules.rules.len() + rules.scores.len();
        Engine {
            rules,
            state,
            scores,
            bans: Map::default(),
            banned_nets: NetSet::default(),
            history: Map::default(),
            quiet: Map::default(),
            now: i64::MIN,
            totals: Totals::default(),
            rule_totals,
            decisions: Vec::new(),
            explain: None,
            traces: Vec::new(),
            field_text: Box::new(|_, _| None),
            since_check: 0,
            swept: vec![i64::MIN; rules_len],
            swept_misc: i64::MIN,
            bans_made: 0,
            farm: None,
        }
    }

    /// Farm rules count every node's requests from now on: the caller
    /// moves [`Engine::take_farm_counts`] to the farm and its answers to
    /// [`Engine::farm_update`].
    pub fn share_counts(&mut self) {
        if self.rules.rules.iter().any(|r| r.farm) {
            self.farm = Some(FarmCounts::default());
        }
    }

    /// Whether farm rules count every node's requests.
    pub fn shares_counts(&self) -> bool {
        self.farm.is_some()
    }

    /// The farm rules' requests counted since the last call, per key.
    pub fn take_farm_counts(&mut self) -> Vec<Outgoing> {
        let rules = &self.rules.rules;
        match self.farm.as_mut() {
            Some(f) => f.take(|r| rules.get(r as usize).map_or(0, |r| r.window_ms)),
            None => Vec::new(),
        }
    }

    /// Takes in what the other nodes counted. A key now over its limit is
    /// decided here, without waiting for its next request: a flood spread
    /// over the farm may send none to this node.
    pub fn farm_update(&mut self, replies: &[Incoming]) {
        let Some(farm) = self.farm.as_mut() else {
            return;
        };
        let mut check = Vec::new();
        for r in replies {
            if farm.update(r) {
                check.push((r.rule, r.key));
            }
        }
        for (rule, key) in check {
            self.farm_check(rule, key);
        }
    }

    fn farm_check(&mut self, rule: u16, k: super::window::Key) {
        let i = rule as usize;
        let (Some(farm), Some(spec)) = (self.farm.as_ref(), self.rules.rules.get(i)) else {
            return;
        };
        let (limit, window, now) = (spec.limit as usize, spec.window_ms, self.now);
        let others = farm.others(rule, k, now, window);
        let Some(subject) = farm.subject(rule, k) else {
            return;
        };
        // A key shared by every client (a path) decides on the client of a
        // request, so only a request here can.
        if spec.key.ip == IpPart::None || others == 0 || self.ban_of(subject.bits).is_some() {
            return;
        }
        let RuleState::Rate(table) = &mut self.state[i] else {
            return;
        };
        let fired = table.with(k, |s| {
            let local = s.count(now, window);
            (local + others > limit).then(|| {
                let first = s.oldest(now, window).unwrap_or(Stamp { t: now, loc: 0 });
                let last = s.newest().unwrap_or(first);
                let samples = s.samples.take();
                s.reset();
                (local, first, last, samples)
            })
        });
        let Some((local, first, last, samples)) = fired else {
            return;
        };
        self.farm_fire(i, k, subject, local, others, first, last, samples);
    }

    /// A farm rule's decision: `local` requests here and `others` on the
    /// other nodes within the window.
    #[allow(clippy::too_many_arguments)]
    fn farm_fire(
        &mut self,
        i: usize,
        k: super::window::Key,
        subject: Subject,
        local: usize,
        others: usize,
        first: Stamp,
        last: Stamp,
        samples: Vec<String>,
    ) {
        if let Some(f) = self.farm.as_mut() {
            f.spent(i as u16, k);
        }
        let rule = self.rules.rules[i].clone();
        let Outcome::Decide { action, duration_s } = rule.outcome.clone() else {
            return;
        };
        let count = (local + others) as f64;
        let reason = format!(
            "{} across the farm, {local} of them here",
            self.reason(&rule, count, &[], subject)
        );
        let evidence = Evidence::counted(&rule, count, first, last, samples);
        self.decide(
            i as u16, rule.name, subject, action, duration_s, reason, evidence, last.loc,
        );
    }

    /// How to get a field's text from a log line, for reasons; known once
    /// the log format is.
    pub fn set_field_text(&mut self, f: FieldText) {
        self.field_text = f;
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Records every step of the rules for one client.
    pub fn explain(&mut self, client: std::net::IpAddr) {
        self.explain = Some(super::addr::to_bits(client));
    }

    pub fn take_decisions(&mut self) -> Vec<Decision> {
        std::mem::take(&mut self.decisions)
    }

    /// Decisions taken and not yet taken out.
    pub fn pending_decisions(&self) -> usize {
        self.decisions.len()
    }

    /// Takes the decisions from the `from`-th on.
    pub fn take_decisions_from(&mut self, from: usize) -> std::vec::Drain<'_, Decision> {
        self.decisions.drain(from.min(self.decisions.len())..)
    }

    /// Adds a shard's counts and traces to this engine's (see
    /// [`super::shard`]). Peaks add up: shards hold their state at once.
    pub fn absorb(&mut self, shard: Engine) {
        let (t, s) = (&mut self.totals, shard.totals);
        t.requests += s.requests;
        t.blocked += s.blocked;
        t.allowlisted += s.allowlisted;
        t.evicted += s.evicted;
        t.peak_state_bytes += s.peak_state_bytes;
        for (mine, theirs) in self.rule_totals.iter_mut().zip(shard.rule_totals) {
            mine.requests += theirs.requests;
            mine.decisions += theirs.decisions;
            mine.bans += theirs.bans;
        }
        self.traces.extend(shard.traces);
        self.decisions.extend(shard.decisions);
        self.now = self.now.max(shard.now);
    }

    /// Subjects banned at the engine's current time.
    pub fn active_bans(&self) -> usize {
        self.bans.values().filter(|b| b.until > self.now).count()
    }

    /// Puts back a ban decided earlier (by a daemon before a restart, or by
    /// hand), so the engine neither decides it again nor extends it.
    pub fn restore_ban(&mut self, subject: Subject, until_ms: i64) {
        self.bans.insert(subject, Ban { until: until_ms });
        if !subject.is_host() {
            self.banned_nets.insert(subject);
        }
    }

    /// Remembers past bans of a subject, for escalation after a restart.
    pub fn remember_bans(&mut self, subject: Subject, count: u32, last_ms: i64) {
        let e = self.history.entry(subject).or_insert((0, i64::MIN));
        e.0 = e.0.max(count);
        e.1 = e.1.max(last_ms);
    }

    /// Takes over what another engine decided: its bans and escalation
    /// history. A reload builds a new engine while decisions of the old
    /// one may still be on their way to the ledger; without this the new
    /// engine would decide them again (and hooks would run twice).
    pub fn carry_over(&mut self, old: &Engine) {
        for (subject, ban) in &old.bans {
            if ban.until > old.now && self.bans.get(subject).is_none_or(|b| b.until < ban.until) {
                self.restore_ban(*subject, ban.until);
            }
        }
        for (subject, &(count, last)) in &old.history {
            self.remember_bans(*subject, count, last);
        }
    }

    /// Forgets a ban lifted by hand, so new abuse is decided afresh.
    pub fn lift_ban(&mut self, subject: Subject) {
        if self.bans.remove(&subject).is_some() && !subject.is_host() {
            self.banned_nets.remove(subject);
        }
    }

    fn traced(&self, client: u128) -> bool {
        self.explain == Some(client)
    }

    fn trace(&mut self, ev: &Event, rule: Option<usize>, kind: TraceKind) {
        self.traces.push(Trace {
            at: self.now,
            loc: ev.loc,
            rule,
            kind,
        });
    }

    /// The ban covering `client` now, if any.
    fn ban_of(&self, client: u128) -> Option<Subject> {
        // Bans of single addresses are the common case: one probe. Networks
        // are looked up by prefix length only when some are banned.
        let host = Subject::host(client);
        if let Some(b) = self.bans.get(&host) {
            return (b.until > self.now).then_some(host);
        }
        if self.banned_nets.is_empty() {
            return None;
        }
        let s = self.banned_nets.find(client)?;
        self.bans.get(&s).filter(|b| b.until > self.now).map(|_| s)
    }

    /// Feeds one request; `line` is its log line, for samples.
    pub fn feed(&mut self, ev: &Event, line: &[u8]) {
        self.feed_at(ev, ev.time, line);
    }

    /// Feeds one request with the clock of the whole log at it, for an
    /// engine that sees only some of the log's requests (a replay shard).
    pub fn feed_at(&mut self, ev: &Event, clock: i64, line: &[u8]) {
        self.now = self.now.max(clock);
        self.totals.requests += 1;
        if ev.allowed {
            self.totals.allowlisted += 1;
            if self.traced(ev.client) {
                self.trace(ev, None, TraceKind::Allowlisted);
            }
            return;
        }
        if let Some(by) = self.ban_of(ev.client) {
            self.totals.blocked += 1;
            if self.traced(ev.client) {
                self.trace(ev, None, TraceKind::Blocked { by });
            }
            return;
        }
        let mut hits = ev.hits;
        let bans_before = self.bans_made;
        while hits != 0 {
            let i = hits.trailing_zeros() as usize;
            hits &= hits - 1;
            self.apply(i, ev, line);
            // A ban from an earlier rule stops the later ones: live, the
            // request after this one would not arrive.
            if self.bans_made != bans_before && self.ban_of(ev.client).is_some() {
                break;
            }
        }
        self.since_check += 1;
        if self.since_check >= BUDGET_CHECK_EVERY {
            self.since_check = 0;
            self.housekeeping();
        }
    }

    fn rule_key(rule: &Rule, ev: &Event) -> (super::window::Key, Option<Subject>) {
        let field = rule.key.field.map_or(0, |f| RuleSet::field_hash(ev, f));
        match rule.key.ip {
            IpPart::Ip => (key(ev.client, field), Some(Subject::host(ev.client))),
            IpPart::Net { v4, v6 } => {
                let s = Subject::net(ev.client, v4, v6);
                (key(s.bits, field), Some(s))
            }
            IpPart::None => (key(0, field), None),
        }
    }

    fn apply(&mut self, i: usize, ev: &Event, line: &[u8]) {
        let Some(rule) = self.rules.rules.get(i) else {
            return;
        };
        self.rule_totals[i].requests += 1;
        let stamp = Stamp {
            t: self.now,
            loc: ev.loc,
        };
        let limit = rule.limit as usize;
        let window = rule.window_ms;
        let (k, keyed_subject) = Self::rule_key(rule, ev);
        let traced = self.traced(ev.client);
        // What the other nodes counted, for a farm rule when counts are
        // shared (see `farmcount`).
        let others = match (self.farm.as_mut(), rule.farm) {
            (Some(farm), true) => {
                let subject = keyed_subject.unwrap_or(Subject::host(ev.client));
                let field_text = &mut self.field_text;
                farm.count(i as u16, k, subject, stamp.t, window, || {
                    farm_id(rule, subject, field_text, line)
                })
            }
            _ => 0,
        };
        // (count, first contributing request, samples) when the rule fires.
        let fired: Option<(f64, Stamp, Vec<String>)> = match &mut self.state[i] {
            RuleState::Rate(table) => table.with(k, |s| {
                if stamp.t.saturating_sub(s.last_active()) >= window {
                    // What a sweep would have dropped: start afresh, so
                    // decisions do not depend on when sweeps ran.
                    s.reset();
                }
                if s.near(
                    stamp.t,
                    limit.saturating_sub(others).max(1),
                    SAMPLES,
                    window,
                ) {
                    s.samples.push(display_line(line));
                }
                let fired = if others == 0 {
                    s.hit(stamp, limit, window).map(|first| (limit + 1, first))
                } else {
                    s.hit_shared(stamp, limit, window, others)
                };
                let out = fired.map(|(n, first)| {
                    let samples = s.samples.take();
                    if keyed_subject.is_some() {
                        s.reset();
                    }
                    (n as f64, first, samples)
                });
                if traced {
                    let count = match &out {
                        Some(o) => o.0 as u64,
                        None => (s.count(stamp.t, window) + others) as u64,
                    };
                    self.traces.push(count_trace(stamp, i, count, limit));
                }
                out
            }),
            RuleState::Distinct(table) => {
                let value = RuleSet::field_hash(ev, rule.distinct.unwrap_or(FieldName::Path));
                table.with(k, |s| {
                    if stamp.t.saturating_sub(s.last_active()) >= window {
                        s.reset();
                    }
                    if s.near(stamp.t, limit, SAMPLES, window) {
                        s.samples.push(display_line(line));
                    }
                    let out = s.hit(value, stamp, limit, window).map(|(n, first)| {
                        let samples = s.samples.take();
                        if keyed_subject.is_some() {
                            s.reset();
                        }
                        (n as f64, first, samples)
                    });
                    if traced {
                        let count = out
                            .as_ref()
                            .map_or(s.count(stamp.t, window) as u64, |o| o.0 as u64);
                        self.traces.push(count_trace(stamp, i, count, limit));
                    }
                    out
                })
            }
            RuleState::Stateless => {
                if traced {
                    self.traces.push(Trace {
                        at: stamp.t,
                        loc: ev.loc,
                        rule: Some(i),
                        kind: TraceKind::Matched,
                    });
                }
                Some((1.0, stamp, vec![display_line(line)]))
            }
        };
        let Some((count, first, samples)) = fired else {
            return;
        };
        let subject = keyed_subject.unwrap_or(Subject::host(ev.client));
        if others > 0
            && let Some(f) = self.farm.as_mut()
        {
            f.spent(i as u16, k);
        }
        match rule.outcome.clone() {
            Outcome::Score { score, points } => self.add_score(score, points, i, ev, line),
            Outcome::Decide { action, duration_s } => {
                let rule = self.rules.rules[i].clone();
                let mut reason = self.reason(&rule, count, line, subject);
                if others > 0 {
                    reason.push_str(&format!(
                        " across the farm, {} of them here",
                        count as usize - others
                    ));
                }
                let evidence = Evidence::counted(&rule, count, first, stamp, samples);
                let name = rule.name.clone();
                self.decide(
                    i as u16, name, subject, action, duration_s, reason, evidence, ev.loc,
                );
            }
        }
    }

    fn reason(&mut self, rule: &Rule, count: f64, line: &[u8], subject: Subject) -> String {
        let window = human_duration((rule.window_ms / 1000) as u64);
        let about = match rule.key.field {
            Some(f) => (self.field_text)(line, f)
                .map(|t| format!(" for {} {t}", f.name().replace('_', "-")))
                .unwrap_or_default(),
            None => String::new(),
        };
        match rule.kind {
            RuleKind::Rate => format!(
                "{} in {window}{about} (limit {})",
                plural(count, "request"),
                rule.limit
            ),
            RuleKind::Distinct => {
                let what = match rule.distinct {
                    Some(FieldName::Ip) => "client".to_string(),
                    Some(f) => f.name().replace('_', " "),
                    None => "value".to_string(),
                };
                let from = if subject.is_host() {
                    String::new()
                } else {
                    format!(" of {subject}")
                };
                format!(
                    "{} distinct {what}s{from} in {window}{about} (limit {})",
                    count, rule.limit
                )
            }
            RuleKind::Match => {
                let req = (self.field_text)(line, FieldName::Target).unwrap_or_default();
                format!("request matched: {req}")
            }
            RuleKind::UnexpectedHost => {
                let host = (self.field_text)(line, FieldName::Host).unwrap_or_default();
                format!("unexpected Host {host:?}")
            }
            // Connection rules decide in `connrules`, never from a request.
            // Connection and packet rules are decided apart, never here.
            RuleKind::Connections => format!("{count} connections (limit {})", rule.limit),
            RuleKind::Packets => format!("{count} packets (limit {})", rule.limit),
        }
    }

    fn add_score(&mut self, score: usize, points: f64, rule: usize, ev: &Event, line: &[u8]) {
        let Some(spec) = self.rules.scores.get(score).cloned() else {
            return;
        };
        let stamp = Stamp {
            t: self.now,
            loc: ev.loc,
        };
        let Some(table) = self.scores.get_mut(score) else {
            return;
        };
        let (value, state) = table.with(key(ev.client, 0), |s| {
            if spec.decay_per_ms > 0.0 && s.decayed(stamp.t, spec.decay_per_ms) <= 0.0 {
                // What a sweep would have dropped (see `apply`).
                s.reset();
            }
            s.samples.push(display_line(line));
            let v = s.add(points, rule as u16, stamp, spec.decay_per_ms);
            let snapshot = (v > spec.threshold).then(|| {
                let out = (s.first, s.reasons.clone(), s.samples.take());
                s.reset();
                out
            });
            (v, snapshot)
        });
        if self.traced(ev.client) {
            self.trace(
                ev,
                None,
                TraceKind::Score {
                    score,
                    value,
                    points,
                },
            );
        }
        let Some((first, reasons, samples)) = state else {
            return;
        };
        let parts: Vec<String> = reasons
            .iter()
            .map(|(r, p)| {
                let name = self
                    .rules
                    .rules
                    .get(*r as usize)
                    .map_or("?", |r| r.name.as_str());
                format!("{name} +{p}")
            })
            .collect();
        let reason = format!(
            "score {} above {} ({}; decay {})",
            (value * 100.0).round() / 100.0,
            spec.threshold,
            parts.join(", "),
            spec.decay_text
        );
        let window_s = if spec.decay_per_ms > 0.0 {
            (spec.threshold / spec.decay_per_ms / 1000.0).round() as u64
        } else {
            0
        };
        let evidence = Evidence {
            count: (value * 100.0).round() / 100.0,
            window_s,
            threshold: spec.threshold,
            first: first.into(),
            last: stamp.into(),
            samples,
        };
        let rule_id = (self.rules.rules.len() + score) as u16;
        self.decide(
            rule_id,
            format!("score:{}", spec.name),
            Subject::host(ev.client),
            spec.action.clone(),
            spec.duration_s,
            reason,
            evidence,
            ev.loc,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        rule_id: u16,
        rule: String,
        subject: Subject,
        action: Action,
        base_s: u64,
        reason: String,
        evidence: Evidence,
        loc: u64,
    ) {
        if let Some(t) = self.rule_totals.get_mut(rule_id as usize) {
            t.decisions += 1;
        }
        let mut duration_s = None;
        let mut repeat = 0;
        if action == Action::Ban {
            let esc = &self.rules.escalation;
            let (n, last) = self.history.get(&subject).copied().unwrap_or((0, i64::MIN));
            repeat = if self.now.saturating_sub(last) < esc.remember_ms {
                n
            } else {
                0
            };
            let factor = esc.factor.powi(repeat.min(64) as i32);
            let secs = ((base_s as f64) * factor).min(esc.max_s.max(base_s) as f64) as u64;
            duration_s = Some(secs);
            self.history.insert(subject, (repeat + 1, self.now));
            self.bans_made += 1;
            self.bans.insert(
                subject,
                Ban {
                    until: self.now.saturating_add(secs as i64 * 1000),
                },
            );
            if !subject.is_host() {
                self.banned_nets.insert(subject);
            }
            if let Some(t) = self.rule_totals.get_mut(rule_id as usize) {
                t.bans += 1;
            }
        } else {
            // Log-only and named actions: one decision per subject and rule
            // per window, not one per request while over the limit.
            let quiet_ms = self
                .rules
                .rules
                .get(rule_id as usize)
                .map_or(60_000, |r| r.window_ms.max(60_000));
            let k = (rule_id, subject);
            if self.quiet.get(&k).is_some_and(|&until| until > self.now) {
                if let Some(t) = self.rule_totals.get_mut(rule_id as usize) {
                    t.decisions -= 1;
                }
                return;
            }
            self.quiet.insert(k, self.now + quiet_ms);
        }
        if self.explain.is_some_and(|c| subject.contains(c)) {
            let rule_index = Some(rule_id as usize).filter(|&r| r < self.rules.rules.len());
            self.traces.push(Trace {
                at: self.now,
                loc,
                rule: rule_index,
                kind: TraceKind::Decided {
                    action: action.name().to_string(),
                    duration_s,
                },
            });
        }
        self.decisions.push(Decision {
            rule,
            subject,
            action,
            duration_s,
            at: self.now,
            reason,
            repeat,
            evidence,
        });
    }

    /// Bytes of state held now.
    pub fn state_bytes(&self) -> usize {
        let tables: usize = self
            .state
            .iter()
            .map(|s| match s {
                RuleState::Rate(t) => t.bytes(),
                RuleState::Distinct(t) => t.bytes(),
                RuleState::Stateless => 0,
            })
            .sum();
        let scores: usize = self.scores.iter().map(Table::bytes).sum();
        let slot = |n: usize, each: usize| n * (each + 1);
        tables
            + scores
            + slot(self.bans.capacity(), 48)
            + slot(self.history.capacity(), 48)
            + slot(self.quiet.capacity(), 48)
            + self.farm.as_ref().map_or(0, FarmCounts::bytes)
    }

    fn growth(&self) -> usize {
        let tables = self.state.iter().map(|s| match s {
            RuleState::Rate(t) => t.growth_bytes(),
            RuleState::Distinct(t) => t.growth_bytes(),
            RuleState::Stateless => 0,
        });
        tables
            .chain(self.scores.iter().map(Table::growth_bytes))
            .sum()
    }

    /// Expires bans and quiet periods; keeps state under the memory cap.
    fn housekeeping(&mut self) {
        let now = self.now;
        if self.bans.values().any(|b| b.until <= now) {
            let expired: Vec<Subject> = self
                .bans
                .iter()
                .filter(|(_, b)| b.until <= now)
                .map(|(s, _)| *s)
                .collect();
            for s in expired {
                self.bans.remove(&s);
                self.banned_nets.remove(s);
            }
        }
        if now.saturating_sub(self.swept_misc) >= 30_000 {
            self.swept_misc = now;
            self.quiet.retain(|_, until| *until > now);
            let remember = self.rules.escalation.remember_ms;
            self.history
                .retain(|_, (_, last)| now.saturating_sub(*last) < remember);
            let rules = &self.rules.rules;
            if let Some(f) = self.farm.as_mut() {
                f.sweep(now, |r| rules.get(r as usize).map_or(0, |r| r.window_ms));
            }
        }

        self.sweep();
        let bytes = self.state_bytes();
        self.totals.peak_state_bytes = self.totals.peak_state_bytes.max(bytes as u64);
        // The accounting sees slots and allocations, not the allocator's
        // slack or the moment a table holds both its old and new slots while
        // it grows: keep the accounted state to half the cap so the process
        // stays within it (BENCHMARKS.md measures this).
        let cap = self.rules.memory_cap as usize / 2;
        // Evict before the tables' next doubling could cross the cap (they
        // tend to grow together: one client touches several rules).
        if bytes + self.growth() <= cap {
            return;
        }
        self.evict(bytes, cap);
    }

    /// Drops state that can no longer fire: nothing within its window, or a
    /// score decayed to zero. Memory then follows the clients active now.
    /// What is dropped would be reset when touched again (see `apply`), so
    /// when sweeps run changes no decision, only memory and time.
    fn sweep(&mut self) {
        let now = self.now;
        let n_rules = self.rules.rules.len();
        for (i, st) in self.state.iter_mut().enumerate() {
            let window = self.rules.rules[i].window_ms;
            if matches!(st, RuleState::Stateless) || !sweep_due(now, window, self.swept[i]) {
                continue;
            }
            // Everything touched before the last sweep is at least a
            // window old (`sweep_due`): a new generation drops it.
            match st {
                RuleState::Rate(t) => t.age(),
                RuleState::Distinct(t) => t.age(),
                RuleState::Stateless => 0,
            };
            self.swept[i] = now;
        }
        for (i, t) in self.scores.iter_mut().enumerate() {
            let per_ms = self.rules.scores[i].decay_per_ms;
            let at = n_rules + i;
            if per_ms <= 0.0 || !sweep_due(now, 60_000, self.swept[at]) {
                continue;
            }
            t.evict(i64::MAX, false, |s| s.decayed(now, per_ms) > 0.0);
            self.swept[at] = now;
        }
    }

    /// Drops the least recently active idle state until well under the cap.
    /// State at its threshold and banned clients' bans are never dropped.
    fn evict(&mut self, bytes: usize, cap: usize) {
        let now = self.now;
        let rules = &self.rules.rules;
        let mut times = Vec::new();
        const SAMPLE: usize = 8192;
        for (i, st) in self.state.iter().enumerate() {
            let (limit, window) = (rules[i].limit as usize, rules[i].window_ms);
            match st {
                RuleState::Rate(t) => {
                    t.last_actives(|s| s.at_limit(now, limit, window), SAMPLE, &mut times)
                }
                RuleState::Distinct(t) => {
                    t.last_actives(|s| s.at_limit(now, limit, window), SAMPLE, &mut times)
                }
                RuleState::Stateless => {}
            }
        }
        for (i, t) in self.scores.iter().enumerate() {
            let s = &self.rules.scores[i];
            t.last_actives(
                |x| x.decayed(now, s.decay_per_ms) >= s.threshold * 0.5,
                SAMPLE,
                &mut times,
            );
        }
        if times.is_empty() {
            return;
        }
        // Aim for a third of the cap: eviction then runs rarely, and the
        // tables can still double their slots without crossing the cap.
        let excess = bytes.saturating_sub(cap / 3) as f64 / bytes.max(1) as f64;
        let n = ((times.len() as f64 * excess).ceil() as usize).clamp(1, times.len());
        let (_, cutoff, _) = times.select_nth_unstable(n - 1);
        let cutoff = *cutoff;
        let mut evicted = 0;
        for (i, st) in self.state.iter_mut().enumerate() {
            let (limit, window) = (rules[i].limit as usize, rules[i].window_ms);
            evicted += match st {
                RuleState::Rate(t) => t.evict(cutoff, true, |s| s.at_limit(now, limit, window)),
                RuleState::Distinct(t) => t.evict(cutoff, true, |s| s.at_limit(now, limit, window)),
                RuleState::Stateless => 0,
            };
        }
        for (i, t) in self.scores.iter_mut().enumerate() {
            let s = &self.rules.scores[i];
            evicted += t.evict(cutoff, true, |x| {
                x.decayed(now, s.decay_per_ms) >= s.threshold * 0.5
            });
        }
        self.totals.evicted += evicted as u64;
    }

    /// Call at the end of input: records the final peak.
    pub fn finish(&mut self) {
        let bytes = self.state_bytes() as u64;
        self.totals.peak_state_bytes = self.totals.peak_state_bytes.max(bytes);
    }

    /// The address of a subject for display.
    pub fn subject_ip(s: &Subject) -> std::net::IpAddr {
        from_bits(mask(s.bits, s.prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Config;
    use crate::detect::rules::ClassifyScratch;
    use crate::log::{Parser, Preset, Scratch, TrustedProxies};

    fn feed_lines(engine: &mut Engine, ips: &[&str], second: u32) {
        let parser = Parser::preset(Preset::Combined, TrustedProxies::default());
        let mut scratch = Scratch::default();
        let mut cs = ClassifyScratch::default();
        for ip in ips {
            let line = format!(
                "{ip} - - [10/Mar/2024:10:00:{second:02} +0000] \"GET /trigger HTTP/1.1\" 404 1 \"-\" \"curl\""
            );
            let r = parser.parse(line.as_bytes(), &mut scratch).unwrap();
            let ev = engine.rules.classify(&r, false, &mut cs);
            engine.feed(&ev, line.as_bytes());
        }
    }

    /// The rule set of one configuration text.
    fn rules_of(text: &str) -> RuleSet {
        let config = Config::from_texts(vec![("t.toml".into(), text.into())]).unwrap();
        RuleSet::compile(&config).unwrap()
    }

    /// A score that decayed to nothing starts afresh when points come
    /// again, its old samples gone, whether or not a sweep ran in between
    /// (none does here: three requests): decisions do not depend on when
    /// sweeps run, which the shards rely on.
    #[test]
    fn a_decayed_score_keeps_no_stale_samples() {
        let mut engine = Engine::new(rules_of(
            "default_rules = false\n[rules.trigger]\nkind = \"match\"\nmatch.path.exact = [\"/trigger\"]\nscore = 10\n[scores.default]\nthreshold = 15\ndecay = \"10/1m\"\naction = \"ban\"\nduration = \"1h\"\n",
        ));
        feed_lines(&mut engine, &["192.0.2.1"], 0);
        let parser = Parser::preset(Preset::Combined, TrustedProxies::default());
        let (mut scratch, mut cs) = (Scratch::default(), ClassifyScratch::default());
        for agent in ["later-1", "later-2"] {
            let line = format!(
                "192.0.2.1 - - [10/Mar/2024:11:00:00 +0000] \"GET /trigger HTTP/1.1\" 404 1 \"-\" \"{agent}\""
            );
            let r = parser.parse(line.as_bytes(), &mut scratch).unwrap();
            let ev = engine.rules.classify(&r, false, &mut cs);
            engine.feed(&ev, line.as_bytes());
        }
        let d = engine.take_decisions();
        assert_eq!(d.len(), 1);
        let samples = &d[0].evidence.samples;
        assert_eq!(samples.len(), 2, "{samples:?}");
        assert!(samples.iter().all(|s| s.contains("later-")), "{samples:?}");
    }

    /// A client's count carries over the sweeps that run between its
    /// requests: a sweep starts a new generation of the rule's table, and
    /// a key of the last one comes back with its state.
    #[test]
    fn a_count_spanning_a_sweep_fires_at_its_threshold() {
        let mut engine = Engine::new(rules_of(
            "default_rules = false\n[rules.slow]\nkind = \"rate\"\nkey = \"ip\"\nlimit = 5\nwindow = \"1m\"\naction = \"ban\"\nduration = \"1h\"\n",
        ));
        let mut fired = Vec::new();
        for second in [0, 10, 20, 30, 40, 50] {
            feed_lines(&mut engine, &["192.0.2.1"], second);
            fired.extend(
                engine
                    .take_decisions()
                    .into_iter()
                    .map(|d| (second, d.subject)),
            );
            // Enough other clients, once each, for housekeeping (and a
            // sweep) to run.
            let others: Vec<String> = (0..300)
                .map(|i| format!("10.{second}.{}.{}", i / 250, i % 250 + 1))
                .collect();
            let others: Vec<&str> = others.iter().map(String::as_str).collect();
            feed_lines(&mut engine, &others, second);
            assert!(engine.take_decisions().is_empty());
        }
        let client: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            fired,
            vec![(50, Subject::host(crate::detect::addr::to_bits(client)))]
        );
    }

    /// What Redis holds for farm counts, as the daemon keeps it there: per
    /// key, per bucket and node, the requests counted.
    #[derive(Default)]
    struct MemoryFarm {
        counts: std::collections::HashMap<String, std::collections::HashMap<(i64, usize), u32>>,
    }

    impl MemoryFarm {
        fn exchange(&mut self, node: usize, out: Vec<Outgoing>) -> Vec<Incoming> {
            out.into_iter()
                .map(|o| {
                    let key = self.counts.entry(o.id.to_string()).or_default();
                    for (b, n) in o.counts {
                        *key.entry((b, node)).or_default() += n;
                    }
                    let mut others: std::collections::BTreeMap<i64, u32> = Default::default();
                    for (&(b, m), &n) in key.iter() {
                        if m != node {
                            *others.entry(b).or_default() += n;
                        }
                    }
                    Incoming {
                        rule: o.rule,
                        key: o.key,
                        others: others.into_iter().collect(),
                    }
                })
                .collect()
        }
    }

    fn request(ip: &str, second: i64, agent: &str) -> String {
        format!(
            "{ip} - - [10/Mar/2024:10:{:02}:{:02} +0000] \"GET /p HTTP/1.1\" 200 1 \"-\" \"{agent}\"",
            second / 60,
            second % 60
        )
    }

    fn farm_engines(nodes: usize, limit: u64) -> Vec<Engine> {
        let set = rules_of(&format!(
            "default_rules = false\n[rules.flood]\nkind = \"rate\"\nscope = \"farm\"\nlimit = {limit}\nwindow = \"10s\"\naction = \"ban\"\nduration = \"1h\"\n"
        ));
        (0..nodes)
            .map(|_| {
                let mut e = Engine::new(set.clone());
                e.share_counts();
                e
            })
            .collect()
    }

    /// The farm counts' error bound (see `farmcount`), on random traffic
    /// over three nodes with an exchange every 100 ms: a ban is never made
    /// for a client within its limit over the last window, all nodes
    /// together; and once every node has exchanged, a client over the
    /// limit within the window's whole buckets is banned.
    #[test]
    fn farm_counts_stay_within_the_bound() {
        use proptest::prelude::*;
        const NODES: usize = 3;
        const LIMIT: u64 = 60;
        const WINDOW_MS: i64 = 10_000;
        let parser = Parser::preset(Preset::Combined, TrustedProxies::default());
        let config = ProptestConfig {
            cases: 24,
            ..ProptestConfig::default()
        };
        proptest!(config, |(rates in proptest::collection::vec(0u32..16, 10), seed in any::<u64>())| {
            let mut rng = seed | 1;
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut engines = farm_engines(NODES, LIMIT);
            let mut farm = MemoryFarm::default();
            let (mut scratch, mut cs) = (Scratch::default(), ClassifyScratch::default());
            let zero = request("192.0.2.1", 0, "sim");
            let base = parser.parse(zero.as_bytes(), &mut scratch).unwrap().time;
            // Every request's time, per client, over all nodes.
            let mut sent: Vec<Vec<i64>> = vec![Vec::new(); rates.len()];
            let mut banned = vec![false; rates.len()];
            let true_count = |times: &[i64], from_excl: i64, to: i64| {
                times.iter().filter(|&&t| t > from_excl && t <= to).count() as u64
            };
            for round in 0..400i64 {
                let second = round / 10;
                let now = base + second * 1000;
                let mut touched = vec![false; rates.len()];
                for (c, &rate) in rates.iter().enumerate() {
                    // `rate` requests a second on average, in bursts.
                    if banned[c] || next() % 10 >= u64::from(rate.min(10)) {
                        continue;
                    }
                    touched[c] = true;
                    for _ in 0..(1 + next() % 3) {
                        let node = (next() % NODES as u64) as usize;
                        let line = request(&format!("192.0.2.{}", c + 1), second, "sim");
                        let r = parser.parse(line.as_bytes(), &mut scratch).unwrap();
                        let ev = engines[node].rules.classify(&r, false, &mut cs);
                        engines[node].feed(&ev, line.as_bytes());
                        sent[c].push(now);
                    }
                }
                let mut decided = Vec::new();
                for (node, engine) in engines.iter_mut().enumerate() {
                    decided.extend(engine.take_decisions());
                    let replies = farm.exchange(node, engine.take_farm_counts());
                    engine.farm_update(&replies);
                    decided.extend(engine.take_decisions());
                }
                for d in decided {
                    let c = (d.subject.to_string().rsplit('.').next().unwrap().parse::<usize>().unwrap()) - 1;
                    // Never over the limit: the true count across the farm
                    // within the window exceeds it.
                    let t = true_count(&sent[c], d.at - WINDOW_MS, d.at);
                    prop_assert!(t > LIMIT, "client {c} banned at {} with {t} requests in the window: {}", d.at, d.reason);
                    banned[c] = true;
                    for e in engines.iter_mut() {
                        e.restore_ban(d.subject, d.at + 3_600_000);
                    }
                }
                // Never late: whole buckets over the limit are a ban. Log
                // times are whole seconds and buckets of a 10 s window one
                // second: the window's whole buckets start a second in.
                let from = now - WINDOW_MS + 1000;
                for c in 0..rates.len() {
                    if touched[c] && !banned[c] {
                        let t = true_count(&sent[c], from - 1, now);
                        prop_assert!(t <= LIMIT, "client {c} sent {t} requests since {from} and is not banned");
                    }
                }
            }
        });
    }

    /// The sum over the farm is what bans a flood that no node alone sees
    /// over the limit, and the reason says so.
    #[test]
    fn a_flood_spread_over_nodes_is_banned_by_the_farm_count() {
        let mut engines = farm_engines(3, 30);
        let mut farm = MemoryFarm::default();
        let parser = Parser::preset(Preset::Combined, TrustedProxies::default());
        let (mut scratch, mut cs) = (Scratch::default(), ClassifyScratch::default());
        let mut decided = Vec::new();
        for i in 0..36 {
            let node = i % 3;
            let line = request("198.51.100.9", 1, "spread");
            let r = parser.parse(line.as_bytes(), &mut scratch).unwrap();
            let ev = engines[node].rules.classify(&r, false, &mut cs);
            engines[node].feed(&ev, line.as_bytes());
        }
        for (node, e) in engines.iter_mut().enumerate() {
            assert!(
                e.take_decisions().is_empty(),
                "12 requests: under the limit here"
            );
            let replies = farm.exchange(node, e.take_farm_counts());
            e.farm_update(&replies);
            decided.extend(e.take_decisions());
        }
        assert_eq!(decided.len(), 1, "{decided:?}");
        let d = &decided[0];
        assert_eq!(d.subject.to_string(), "198.51.100.9");
        assert_eq!(d.evidence.count, 36.0);
        assert!(
            d.reason.contains("across the farm, 12 of them here"),
            "{}",
            d.reason
        );
        assert_eq!(
            d.evidence.samples.len(),
            0,
            "no request here was near the limit alone"
        );
        // Without shared counts the same rule counts each node alone.
        let mut alone = farm_engines(1, 30);
        for _ in 0..12 {
            let line = request("198.51.100.9", 1, "spread");
            let r = parser.parse(line.as_bytes(), &mut scratch).unwrap();
            let ev = alone[0].rules.classify(&r, false, &mut cs);
            alone[0].feed(&ev, line.as_bytes());
        }
        assert!(alone[0].take_decisions().is_empty());
    }

    #[test]
    fn tables_are_swept_once_a_window_and_at_most_every_ten_seconds() {
        let last = 1_000_000;
        assert!(!sweep_due(1_059_999, 60_000, last));
        assert!(sweep_due(1_060_000, 60_000, last));
        // Short windows: every 10 s of log time.
        assert!(!sweep_due(1_009_999, 1_000, last));
        assert!(sweep_due(1_010_000, 1_000, last));
        // A table never swept is due at once.
        assert!(sweep_due(0, 10_000, i64::MIN));
    }

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(human_span(0), "0s");
        assert_eq!(human_span(42), "42s");
        assert_eq!(human_span(3592), "59m 52s");
        assert_eq!(human_span(86_399), "23h 59m");
        assert_eq!(human_span(3600), "1h");
        assert_eq!(human_span(273_600), "3d 4h");
    }

    /// Regression: 600 reloads under load recorded 11 bans twice, as the
    /// rebuilt engine did not know decisions still queued for the ledger.
    #[test]
    fn an_engine_that_carries_over_does_not_decide_again() {
        let set = rules_of(
            "default_rules = false\n[rules.trigger]\nkind = \"match\"\nmatch.path.exact = [\"/trigger\"]\naction = \"ban\"\n",
        );
        let mut old = Engine::new(set.clone());
        feed_lines(&mut old, &["192.0.2.1"], 0);
        assert_eq!(old.take_decisions().len(), 1);

        let mut fresh = Engine::new(set.clone());
        feed_lines(&mut fresh, &["192.0.2.1"], 1);
        assert_eq!(fresh.take_decisions().len(), 1, "without carry-over");

        let mut rebuilt = Engine::new(set);
        rebuilt.carry_over(&old);
        feed_lines(&mut rebuilt, &["192.0.2.1", "192.0.2.2"], 1);
        let again: Vec<String> = rebuilt
            .take_decisions()
            .iter()
            .map(|d| d.subject.to_string())
            .collect();
        assert_eq!(again, ["192.0.2.2"]);
    }
}
