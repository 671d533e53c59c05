//! Config → [`RuleSet`]: every check that serde cannot do (durations,
//! regexes, CIDRs, references between tables), each error located.

use std::collections::BTreeMap;

use super::addr::{NetSet, Subject};
use super::config::{
    Config, ConfigError, ConfigErrors, FieldName, Origin, RawMatch, RawText, RuleKind, Sp,
};
use super::matcher::{FieldMatcher, LitKind, Literal};
use super::rules::{
    Action, AllowSpec, Block, Escalation, IpPart, KeySpec, MAX_RULES, NamedAction, Outcome, Rule,
    RuleSet, Score, SiteName,
};
use crate::units;

const DEFAULT_BAN_S: u64 = 3600;
pub const DEFAULT_MEMORY_CAP: u64 = 256 << 20;

/// Patterns of one field in one decoding mode, collected over all rules.
#[derive(Default)]
struct FieldPatterns {
    literals: Vec<Literal>,
    regexes: Vec<(u32, String, Origin)>,
}

struct Compiler<'c> {
    config: &'c Config,
    sources: super::config::SourceFiles,
    errors: Vec<ConfigError>,
    fields: BTreeMap<(FieldName, bool), FieldPatterns>,
    conds: u32,
}

impl Compiler<'_> {
    fn err(&mut self, at: Origin, msg: impl Into<String>) {
        let e = self.sources.error(at, msg);
        self.errors.push(e);
    }

    /// Rule, score and action names reach hooks as {rule} and {action}
    /// placeholders and WEBFENCE_RULE, so they are kept to a safe alphabet.
    fn name(&mut self, at: Origin, what: &str, name: &str) {
        if let Some(e) = super::config::name_error(what, name, 64) {
            self.err(at, e);
        }
    }

    fn duration(&mut self, v: &Sp<String>, what: &str) -> Option<u64> {
        match units::parse_duration(&v.value) {
            Ok(s) => Some(s),
            Err(e) => {
                self.err(v.at, format!("{what}: {e}"));
                None
            }
        }
    }

    /// Expands `@file` items into the patterns they list, one per line.
    fn expand(&mut self, patterns: &[Sp<String>]) -> Vec<Sp<String>> {
        let mut out = Vec::new();
        for p in patterns {
            let Some(path) = p.value.strip_prefix('@') else {
                out.push(p.clone());
                continue;
            };
            let full = self.config.relative_path(p.at, path);
            match std::fs::read_to_string(&full) {
                Ok(text) => {
                    let file = self.sources.add(full.display().to_string(), text.clone());
                    let mut offset = 0;
                    for line in text.split_inclusive('\n') {
                        let t = line.trim();
                        if !t.is_empty() && !t.starts_with('#') {
                            let start = offset + (line.len() - line.trim_start().len());
                            out.push(Sp {
                                value: t.to_string(),
                                at: Origin {
                                    file,
                                    start,
                                    end: start + t.len(),
                                },
                            });
                        }
                        offset += line.len();
                    }
                }
                Err(e) => self.err(
                    p.at,
                    format!("cannot read pattern file '{}': {e}", full.display()),
                ),
            }
        }
        out
    }

    fn text_condition(&mut self, field: FieldName, t: &RawText) -> u32 {
        let cond = self.conds;
        self.conds += 1;
        let ignore_case = t.ignore_case.unwrap_or(false);
        let decode = t.decode.unwrap_or(false);
        let lists = [
            (LitKind::Exact, &t.exact),
            (LitKind::Prefix, &t.prefix),
            (LitKind::Suffix, &t.suffix),
            (LitKind::Contains, &t.contains),
        ];
        let mut any = false;
        for (kind, list) in lists {
            let Some(list) = list else { continue };
            for p in self.expand(&list.0) {
                if p.value.is_empty() {
                    self.err(p.at, "empty pattern: it would match every request");
                    continue;
                }
                any = true;
                self.fields
                    .entry((field, decode))
                    .or_default()
                    .literals
                    .push(Literal {
                        cond,
                        kind,
                        text: p.value.into_bytes(),
                        ignore_case,
                    });
            }
        }
        if let Some(list) = &t.regex {
            for p in self.expand(&list.0) {
                let pattern = if ignore_case {
                    format!("(?i:{})", p.value)
                } else {
                    p.value.clone()
                };
                if let Err(e) = regex::bytes::RegexBuilder::new(&pattern)
                    .size_limit(16 << 20)
                    .build()
                {
                    let msg = e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    self.err(
                        p.at,
                        format!("invalid regular expression {:?}: {msg}", p.value),
                    );
                    continue;
                }
                any = true;
                self.fields
                    .entry((field, decode))
                    .or_default()
                    .regexes
                    .push((cond, pattern, p.at));
            }
        }
        if !any && self.errors.is_empty() {
            // A test with no patterns: nothing can match; say so rather than
            // silently never firing.
            self.conds -= 1;
            return u32::MAX;
        }
        cond
    }

    fn block(&mut self, m: &RawMatch, rule_at: Origin, rule: &str) -> Block {
        let mut b = Block {
            static_files: m.static_files,
            ..Block::default()
        };
        for (field, t) in m.text_fields() {
            if let Some(t) = t {
                let c = self.text_condition(field, t);
                if c == u32::MAX {
                    self.err(
                        rule_at,
                        format!("rule '{rule}': match.{} lists no patterns", field.name()),
                    );
                } else {
                    b.conds.push(c);
                }
            }
        }
        for s in m.status.iter().flatten() {
            match parse_status(&s.value.0) {
                Some(r) => b.status.push(r),
                None => self.err(
                    s.at,
                    format!(
                        "invalid status '{}': expected 404, \"4xx\" or \"500-599\"",
                        s.value.0
                    ),
                ),
            }
        }
        if let Some(c) = &m.crawler {
            b.crawler = match c.value.as_str() {
                "fake" => Some(super::crawlers::Crawler::Fake),
                "verified" => Some(super::crawlers::Crawler::Verified),
                other => {
                    self.err(
                        c.at,
                        format!("invalid crawler '{other}': expected \"fake\" or \"verified\""),
                    );
                    None
                }
            };
        }
        if let Some(ips) = &m.ip {
            let mut set = NetSet::default();
            for ip in ips {
                match crate::log::proxy::parse_cidr(&ip.value) {
                    Some(n) => set.insert(Subject::from_net(n)),
                    None => self.err(ip.at, format!("invalid address or CIDR '{}'", ip.value)),
                }
            }
            b.ips = Some(set);
        }
        b
    }

    fn action(&mut self, a: Option<&Sp<String>>) -> Action {
        match a.map(|a| (a.value.as_str(), a.at)) {
            None | Some(("ban", _)) => Action::Ban,
            Some(("log", _)) => Action::Log,
            Some((name, at)) => {
                if !self.config.actions.contains_key(name) {
                    let known: Vec<&str> = self.config.actions.keys().map(String::as_str).collect();
                    self.err(
                        at,
                        format!(
                            "unknown action '{name}' (expected ban, log{}{})",
                            if known.is_empty() { "" } else { " or one of " },
                            known.join(", ")
                        ),
                    );
                }
                Action::Named(name.to_string())
            }
        }
    }
}

/// `kind = "connections"`: limit, key (ip or net), states, ports, and an
/// action; no score (there is no request to score).
fn packet_rule(
    c: &mut Compiler,
    name: &str,
    at: Origin,
    raw: &super::config::RawRule,
) -> Option<super::packetrules::PacketRule> {
    use super::p2p::Class;
    let limit = match &raw.limit {
        Some(l) if (1..=1_000_000_000).contains(&l.value) => l.value as u64,
        Some(l) => {
            c.err(
                l.at,
                format!("invalid limit {}: expected 1 to 1000000000", l.value),
            );
            return None;
        }
        None => {
            c.err(at, format!("rule '{name}' (packets) needs a limit: the most packets one local address may send within a sample"));
            return None;
        }
    };
    for (v, what) in [
        (raw.window.as_ref().map(|x| x.at), "window"),
        (raw.key.as_ref().map(|x| x.at), "key"),
        (raw.distinct.as_ref().map(|x| x.at), "distinct"),
        (raw.score.as_ref().map(|x| x.at), "score"),
        (raw.matches.as_ref().map(|_| at), "match"),
        (raw.unless.as_ref().map(|_| at), "unless"),
        (raw.states.as_ref().map(|_| at), "states"),
        (raw.ports.as_ref().map(|_| at), "ports"),
    ] {
        if let Some(at) = v {
            c.err(at, format!("'{what}' does not apply to packet rules (they count packets per local address within a [packets] sample, whose length is the window)"));
        }
    }
    let mut classes = Vec::new();
    for cl in raw.classes.iter().flatten() {
        match Class::from_name(&cl.value) {
            Some(k) if !classes.contains(&k) => classes.push(k),
            Some(_) => {}
            None => c.err(
                cl.at,
                format!(
                    "unknown packet class '{}' (expected bittorrent, utp, dht, tracker or other)",
                    cl.value
                ),
            ),
        }
    }
    if raw.classes.is_none() {
        classes = Class::P2P.to_vec();
    }
    let action = c.action(raw.action.as_ref());
    let duration_s = match &raw.duration {
        Some(d) => c.duration(d, "duration").unwrap_or(DEFAULT_BAN_S),
        None => DEFAULT_BAN_S,
    };
    Some(super::packetrules::PacketRule {
        name: name.to_string(),
        description: raw.description.clone().unwrap_or_default(),
        classes,
        limit,
        action,
        duration_s,
    })
}

fn connection_rule(
    c: &mut Compiler,
    name: &str,
    at: Origin,
    raw: &super::config::RawRule,
) -> Option<super::connrules::ConnRule> {
    use super::connrules::{ConnRule, parse_state};
    let limit = match &raw.limit {
        Some(l) if (1..=10_000_000).contains(&l.value) => l.value as u64,
        Some(l) => {
            c.err(
                l.at,
                format!("invalid limit {}: expected 1 to 10000000", l.value),
            );
            return None;
        }
        None => {
            c.err(at, format!("rule '{name}' (connections) needs a limit: the most connections allowed per client"));
            return None;
        }
    };
    let mut group = None;
    if let Some(k) = &raw.key {
        match k.value.as_str() {
            "ip" => {}
            "net" => {
                let v4 = prefix(c, raw.ipv4_prefix.as_ref(), 24, 32, "IPv4");
                let v6 = prefix(c, raw.ipv6_prefix.as_ref(), 64, 128, "IPv6");
                group = Some((v4, v6));
            }
            other => c.err(
                k.at,
                format!("invalid key '{other}' for a connection rule (expected ip or net)"),
            ),
        }
    }
    for (v, what) in [
        (raw.window.as_ref().map(|x| x.at), "window"),
        (raw.distinct.as_ref().map(|x| x.at), "distinct"),
        (raw.score.as_ref().map(|x| x.at), "score"),
        (raw.matches.as_ref().map(|_| at), "match"),
        (raw.unless.as_ref().map(|_| at), "unless"),
    ] {
        if let Some(at) = v {
            c.err(at, format!("'{what}' does not apply to connection rules (they count connections in the kernel's table, not requests)"));
        }
    }
    let mut states = Vec::new();
    for s in raw.states.iter().flatten() {
        match parse_state(&s.value) {
            Ok(st) => states.push(st),
            Err(e) => c.err(s.at, e.to_string()),
        }
    }
    let mut ports = Vec::new();
    for p in raw.ports.iter().flatten() {
        match u16::try_from(p.value) {
            Ok(port) if port > 0 => ports.push(port),
            _ => c.err(
                p.at,
                format!("invalid port {}: expected 1 to 65535", p.value),
            ),
        }
    }
    let action = c.action(raw.action.as_ref());
    let duration_s = match &raw.duration {
        Some(d) => c.duration(d, "duration").unwrap_or(DEFAULT_BAN_S),
        None => DEFAULT_BAN_S,
    };
    Some(ConnRule {
        name: name.to_string(),
        description: raw.description.clone().unwrap_or_default(),
        limit,
        filter: crate::stats::conns::ConnFilter {
            states: (!states.is_empty()).then_some(states),
            ports,
            group,
        },
        action,
        duration_s,
    })
}

fn parse_status(s: &str) -> Option<(u16, u16)> {
    let s = s.trim();
    if let Some((a, b)) = s.split_once('-') {
        let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        let valid = (100..=999).contains(&a) && (100..=999).contains(&b) && a <= b;
        return valid.then_some((a, b));
    }
    if s.len() == 3 && s[1..].eq_ignore_ascii_case("xx") {
        let d: u16 = s[..1].parse().ok()?;
        return (1..=9).contains(&d).then_some((d * 100, d * 100 + 99));
    }
    let n: u16 = s.parse().ok()?;
    (100..=999).contains(&n).then_some((n, n))
}

fn prefix(c: &mut Compiler, v: Option<&Sp<i64>>, default: u8, max: i64, family: &str) -> u8 {
    match v {
        None => default,
        Some(p) if (0..=max).contains(&p.value) => p.value as u8,
        Some(p) => {
            c.err(
                p.at,
                format!("invalid {family} prefix {}: expected 0 to {max}", p.value),
            );
            default
        }
    }
}

impl RuleSet {
    /// Compiles a layered configuration; every error is collected.
    pub fn compile(config: &Config) -> Result<RuleSet, ConfigErrors> {
        let mut c = Compiler {
            config,
            sources: config.sources.clone(),
            errors: Vec::new(),
            fields: BTreeMap::new(),
            conds: 0,
        };

        let mut sites = Vec::new();
        for s in &config.sites {
            let n = s.value.trim().to_ascii_lowercase();
            if n.is_empty() || n.contains(['/', ' ', '@']) {
                c.err(s.at, format!("invalid site name '{}': expected a host name such as example.com or *.example.com", s.value));
            } else if let Some(sfx) = n.strip_prefix('*') {
                sites.push(SiteName::Suffix(sfx.as_bytes().to_vec()));
            } else {
                sites.push(SiteName::Exact(n.into_bytes()));
            }
        }

        let mut scores = Vec::new();
        for (name, (at, s)) in &config.scores {
            c.name(*at, "score", name);
            let threshold = match &s.threshold {
                Some(t) if t.value > 0.0 && t.value.is_finite() => t.value,
                Some(t) => {
                    c.err(
                        t.at,
                        format!("invalid threshold {}: expected a number above 0", t.value),
                    );
                    1.0
                }
                None => {
                    c.err(*at, format!("score '{name}' has no threshold"));
                    1.0
                }
            };
            let (decay, decay_text) = match &s.decay {
                Some(d) => match units::parse_rate(&d.value) {
                    Ok(r) => (r, d.value.clone()),
                    Err(e) => {
                        c.err(d.at, e.to_string());
                        (0.0, String::new())
                    }
                },
                None => (0.0, "none".to_string()),
            };
            let action = c.action(s.action.as_ref());
            let duration_s = match &s.duration {
                Some(d) => c.duration(d, "duration").unwrap_or(DEFAULT_BAN_S),
                None => DEFAULT_BAN_S,
            };
            scores.push(Score {
                name: name.clone(),
                threshold,
                decay_per_ms: decay / 1000.0,
                decay_text,
                action,
                duration_s,
            });
        }

        let mut rules = Vec::new();
        let mut conn_rules = Vec::new();
        let mut packet_rules = Vec::new();
        for (name, raw) in &config.rules {
            if raw.enabled == Some(false) {
                continue;
            }
            let rname = name.value.clone();
            c.name(name.at, "rule", &rname);
            let Some(kind) = raw.kind.as_ref().map(|k| k.value) else {
                c.err(name.at, format!("rule '{rname}' has no kind (expected rate, distinct, match, unexpected_host, connections or packets)"));
                continue;
            };
            if kind == RuleKind::Connections {
                if let Some(r) = connection_rule(&mut c, &name.value, name.at, raw) {
                    conn_rules.push(r);
                }
                continue;
            }
            if kind == RuleKind::Packets {
                if let Some(r) = packet_rule(&mut c, &name.value, name.at, raw) {
                    packet_rules.push(r);
                }
                continue;
            }
            if let Some(cl) = raw.classes.as_ref() {
                let at = cl.first().map_or(name.at, |f| f.at);
                c.err(
                    at,
                    format!(
                        "'classes' applies to packet rules, not to {} rules",
                        kind.name()
                    ),
                );
            }
            for (v, what) in [
                (raw.states
                    .as_ref()
                    .map(|x| x.first().map_or(name.at, |f| f.at))),
                (raw.ports
                    .as_ref()
                    .map(|x| x.first().map_or(name.at, |f| f.at))),
            ]
            .into_iter()
            .zip(["states", "ports"])
            {
                if let Some(at) = v {
                    c.err(
                        at,
                        format!(
                            "'{what}' applies to connection rules, not to {} rules",
                            kind.name()
                        ),
                    );
                }
            }
            let counting = matches!(kind, RuleKind::Rate | RuleKind::Distinct);
            let mut key = KeySpec {
                ip: IpPart::Ip,
                field: None,
            };
            if let Some(k) = &raw.key {
                match KeySpec::parse(&k.value) {
                    Ok(parsed) => key = parsed,
                    Err(e) => c.err(k.at, e.to_string()),
                }
            }
            let v4 = prefix(&mut c, raw.ipv4_prefix.as_ref(), 24, 32, "IPv4");
            let v6 = prefix(&mut c, raw.ipv6_prefix.as_ref(), 64, 128, "IPv6");
            if let IpPart::Net { .. } = key.ip {
                key.ip = IpPart::Net { v4, v6 };
            }
            let (mut limit, mut window_ms) = (0, 0);
            if counting {
                match &raw.limit {
                    Some(l) if (1..=1_000_000).contains(&l.value) => limit = l.value as u64,
                    Some(l) => c.err(
                        l.at,
                        format!("invalid limit {}: expected 1 to 1000000", l.value),
                    ),
                    None => c.err(
                        name.at,
                        format!("rule '{rname}' ({}) needs a limit", kind.name()),
                    ),
                }
                match &raw.window {
                    Some(w) => window_ms = c.duration(w, "window").unwrap_or(1) as i64 * 1000,
                    None => c.err(
                        name.at,
                        format!("rule '{rname}' ({}) needs a window", kind.name()),
                    ),
                }
            } else {
                for (v, what) in [
                    (raw.limit.as_ref().map(|x| x.at), "limit"),
                    (raw.window.as_ref().map(|x| x.at), "window"),
                    (raw.key.as_ref().map(|x| x.at), "key"),
                    (raw.distinct.as_ref().map(|x| x.at), "distinct"),
                ] {
                    if let Some(at) = v {
                        c.err(
                            at,
                            format!(
                                "'{what}' applies to rate and distinct rules, not to {} rules",
                                kind.name()
                            ),
                        );
                    }
                }
            }
            let distinct = match (kind, &raw.distinct) {
                (RuleKind::Distinct, Some(d)) => Some(d.value),
                (RuleKind::Distinct, None) => {
                    c.err(name.at, format!("rule '{rname}' (distinct) needs 'distinct', the field to count, such as \"path\""));
                    None
                }
                (RuleKind::Rate, Some(d)) => {
                    c.err(
                        d.at,
                        "'distinct' applies to distinct rules, not to rate rules",
                    );
                    None
                }
                _ => None,
            };
            let when = match &raw.matches {
                Some(m) => c.block(m, name.at, &rname),
                None => Block::default(),
            };
            if kind == RuleKind::Match && raw.matches.is_none() {
                c.err(name.at, format!("rule '{rname}' (match) needs a match table, such as match.path.prefix = [\"/.env\"]"));
            }
            let unless = raw.unless.as_ref().map(|m| c.block(m, name.at, &rname));
            let outcome = match &raw.score {
                Some(points) => {
                    if let Some(a) = &raw.action {
                        c.err(
                            a.at,
                            "a rule either adds to a score or has an action, not both",
                        );
                    }
                    if let Some(d) = &raw.duration {
                        c.err(
                            d.at,
                            "'duration' belongs to the score's table when a rule adds to a score",
                        );
                    }
                    if !(points.value.is_finite() && points.value > 0.0) {
                        c.err(
                            points.at,
                            format!("invalid score {}: expected points above 0", points.value),
                        );
                    }
                    let sname = raw
                        .score_name
                        .as_ref()
                        .map_or("default", |s| s.value.as_str());
                    match scores.iter().position(|s| s.name == sname) {
                        Some(i) => Outcome::Score {
                            score: i,
                            points: points.value,
                        },
                        None => {
                            let at = raw.score_name.as_ref().map_or(points.at, |s| s.at);
                            c.err(at, format!("no score named '{sname}': add a [scores.{sname}] table with a threshold"));
                            Outcome::Score {
                                score: 0,
                                points: points.value,
                            }
                        }
                    }
                }
                None => {
                    if let Some(s) = &raw.score_name {
                        c.err(s.at, "'score_name' needs 'score', the points to add");
                    }
                    let action = c.action(raw.action.as_ref());
                    let duration_s = match &raw.duration {
                        Some(d) => c.duration(d, "duration").unwrap_or(DEFAULT_BAN_S),
                        None => DEFAULT_BAN_S,
                    };
                    Outcome::Decide { action, duration_s }
                }
            };
            let farm = match &raw.scope {
                None => false,
                Some(s) if s.value == "local" => false,
                Some(s) if s.value == "farm" && kind == RuleKind::Rate && raw.score.is_some() => {
                    c.err(
                        s.at,
                        "a farm rule decides with an action: it cannot add to a score, which is counted on each node",
                    );
                    false
                }
                Some(s) if s.value == "farm" && kind == RuleKind::Rate => true,
                Some(s) if s.value == "farm" => {
                    c.err(
                        s.at,
                        format!(
                            "scope = \"farm\" applies to rate rules, not to {} rules",
                            kind.name()
                        ),
                    );
                    false
                }
                Some(s) => {
                    c.err(
                        s.at,
                        format!(
                            "invalid scope '{}': expected \"local\" or \"farm\"",
                            s.value
                        ),
                    );
                    false
                }
            };
            let inactive = (kind == RuleKind::UnexpectedHost && sites.is_empty())
                .then(|| "no [sites] names are configured".to_string());
            rules.push(Rule {
                name: rname,
                description: raw.description.clone().unwrap_or_default(),
                kind,
                key,
                limit,
                window_ms,
                distinct,
                when,
                unless,
                outcome,
                inactive,
                farm,
                origin: name.at,
                file: config.sources.name(name.at.file).to_string(),
            });
        }
        if rules.len() > MAX_RULES {
            let at = rules[MAX_RULES].origin;
            c.err(
                at,
                format!(
                    "too many enabled rules ({}); at most {MAX_RULES}",
                    rules.len()
                ),
            );
        }

        let mut actions = Vec::new();
        for (name, (at, a)) in &config.actions {
            let command: Vec<String> = a
                .command
                .iter()
                .flatten()
                .map(|s| s.value.clone())
                .collect();
            c.name(*at, "action", name);
            if command.is_empty() {
                c.err(*at, format!("action '{name}' needs a command, such as command = [\"/usr/local/bin/notify\"]"));
            }
            if let Some((i, why)) = crate::enforce::hooks::check_argv(&command) {
                if let Some(arg) = a.command.as_ref().and_then(|c| c.get(i)) {
                    c.err(arg.at, format!("action '{name}': {why}"));
                }
            }
            actions.push(NamedAction {
                name: name.clone(),
                command,
                description: a.description.clone().unwrap_or_default(),
            });
        }

        let e = &config.escalation;
        let factor = match &e.factor {
            Some(f) if f.value >= 1.0 && f.value <= 100.0 => f.value,
            Some(f) => {
                c.err(
                    f.at,
                    format!(
                        "invalid factor {}: expected 1 (no escalation) to 100",
                        f.value
                    ),
                );
                2.0
            }
            None => 2.0,
        };
        let max_s = e
            .max
            .as_ref()
            .and_then(|m| c.duration(m, "max"))
            .unwrap_or(7 * 86_400);
        let remember = e
            .remember
            .as_ref()
            .and_then(|m| c.duration(m, "remember"))
            .unwrap_or(30 * 86_400);

        let a = &config.allowlist;
        let mut nets = Vec::new();
        for s in a.addresses.iter().flatten() {
            match crate::log::proxy::parse_cidr(&s.value) {
                Some(n) => nets.push(Subject::from_net(n)),
                None => c.err(s.at, format!("invalid address or CIDR '{}'", s.value)),
            }
        }
        let hosts: Vec<String> = a.hosts.iter().flatten().map(|h| h.value.clone()).collect();
        let resolve_every_s = a
            .resolve_every
            .as_ref()
            .and_then(|r| c.duration(r, "resolve_every"))
            .unwrap_or(600);
        let memory_cap = match &config.state.memory_cap {
            Some(m) => match units::parse_size(&m.value) {
                Ok(b) if b >= 1 << 20 => b,
                Ok(_) => {
                    c.err(
                        m.at,
                        format!("memory_cap '{}' is too small: at least 1MB", m.value),
                    );
                    DEFAULT_MEMORY_CAP
                }
                Err(e) => {
                    c.err(m.at, e.to_string());
                    DEFAULT_MEMORY_CAP
                }
            },
            None => DEFAULT_MEMORY_CAP,
        };

        let mut matchers = Vec::new();
        let fields = std::mem::take(&mut c.fields);
        for ((field, decode), pats) in fields {
            let regexes: Vec<(u32, String)> = pats
                .regexes
                .iter()
                .map(|(c, p, _)| (*c, p.clone()))
                .collect();
            match FieldMatcher::build(decode, &pats.literals, &regexes) {
                Ok(m) => matchers.push((field, m)),
                Err(e) => {
                    let at = pats.regexes.first().map_or(Origin::default(), |r| r.2);
                    c.err(
                        at,
                        format!("cannot compile the patterns of {}: {e}", field.name()),
                    );
                }
            }
        }

        let mut hashed = [false; FieldName::TEXT.len()];
        for r in &rules {
            for f in r.key.field.iter().chain(r.distinct.iter()) {
                if let Some(i) = FieldName::TEXT.iter().position(|x| x == f) {
                    hashed[i] = true;
                }
            }
        }

        let mut by_first_cond = vec![0u128; c.conds as usize];
        let mut condless = 0u128;
        for (i, r) in rules.iter().enumerate().take(super::rules::MAX_RULES) {
            match r
                .when
                .conds
                .first()
                .and_then(|&f| by_first_cond.get_mut(f as usize))
            {
                Some(mask) => *mask |= 1 << i,
                None => condless |= 1 << i,
            }
        }

        if !c.errors.is_empty() {
            return Err(ConfigErrors(c.errors));
        }
        Ok(RuleSet {
            gates: super::rules::Gates::of(&rules),
            by_first_cond,
            condless,
            rules,
            conn_rules,
            packet_rules,
            scores,
            actions,
            escalation: Escalation {
                factor,
                max_s,
                remember_ms: remember as i64 * 1000,
            },
            allow: AllowSpec {
                nets,
                hosts,
                resolve_every_s,
                local: a.local.unwrap_or(true),
            },
            memory_cap,
            sites,
            files: config.files.clone(),
            matchers,
            conds: c.conds as usize,
            hashed,
            hasher: foldhash::quality::RandomState::default(),
            id: super::rules::next_rule_set_id(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<RuleSet, ConfigErrors> {
        let config = Config::from_texts(vec![("site.toml".into(), text.into())])?;
        RuleSet::compile(&config)
    }

    #[test]
    fn builtin_ruleset_compiles() {
        let rs = RuleSet::compile(&Config::builtin()).unwrap();
        assert!(rs.rules.len() >= 10);
        let uh = rs
            .rules
            .iter()
            .find(|r| r.name == "unexpected-host")
            .unwrap();
        assert!(uh.inactive.is_some());
    }

    #[test]
    fn statuses() {
        assert_eq!(parse_status("404"), Some((404, 404)));
        assert_eq!(parse_status("4xx"), Some((400, 499)));
        assert_eq!(parse_status("500-599"), Some((500, 599)));
        assert_eq!(parse_status("599-500"), None);
        assert_eq!(parse_status("42"), None);
    }

    #[test]
    fn semantic_errors_are_all_located() {
        let err = compile(
            "[rules.a]\nkind = \"rate\"\nlimit = 0\nwindow = \"10 parsecs\"\n\n[rules.b]\nkind = \"match\"\nmatch.path.regex = [\"(unclosed\"]\n\n[rules.c]\nkind = \"rate\"\nkey = \"ip+colour\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("site.toml:3:9: invalid limit 0"), "{text}");
        assert!(
            text.contains("site.toml:4:10: window: invalid duration '10 parsecs'"),
            "{text}"
        );
        assert!(
            text.contains("site.toml:8:21: invalid regular expression \"(unclosed\""),
            "{text}"
        );
        assert!(
            text.contains("site.toml:12:7: invalid key 'ip+colour'"),
            "{text}"
        );
        assert!(text.contains("rule 'c' (rate) needs a limit"), "{text}");
    }

    #[test]
    fn references_are_checked() {
        let err = compile("[rules.a]\nkind = \"match\"\nmatch.path.prefix = [\"/x\"]\naction = \"page-me\"\n[rules.b]\nkind = \"match\"\nmatch.path.prefix = [\"/y\"]\nscore = 5\nscore_name = \"spam\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unknown action 'page-me'"), "{text}");
        assert!(text.contains("no score named 'spam'"), "{text}");
    }

    #[test]
    fn pattern_files_are_read_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bad-agents.txt"),
            "# tools\nevilbot\n\n(broken\n",
        )
        .unwrap();
        let cfg = dir.path().join("webfence.toml");
        std::fs::write(
            &cfg,
            "[rules.agents]\nkind = \"match\"\nmatch.user_agent.contains = \"@bad-agents.txt\"\n[rules.agents-re]\nkind = \"match\"\nmatch.user_agent.regex = \"@bad-agents.txt\"\n",
        )
        .unwrap();
        let err = RuleSet::compile(&Config::load(&[cfg]).unwrap()).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(err.0[0].file.ends_with("bad-agents.txt"));
        assert_eq!(err.0[0].line, 4);
    }

    #[test]
    fn names_and_action_commands_cannot_carry_shell_text() {
        let err = compile("[rules.\"a;touch x\"]\nkind = \"match\"\nmatch.path.prefix = [\"/x\"]\naction = \"notify\"\n[actions.notify]\ncommand = [\"sh\", \"-c\", \"echo {reason}\"]\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("invalid rule name 'a;touch x'"), "{text}");
        assert!(
            text.contains("action 'notify': the placeholder {reason} would put text from the logs"),
            "{text}"
        );
    }
}
