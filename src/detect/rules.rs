//! Compiled rules, and the per-request work that needs no state: which rules
//! a request concerns ([`RuleSet::classify`]). That part runs in parallel on
//! the parse workers; the stateful part ([`super::engine`]) then sees one
//! small [`Event`] per request.

use foldhash::quality::RandomState;
use std::hash::BuildHasher;

use super::addr::{NetSet, Subject, to_bits};
use super::config::{FieldName, Origin, RuleKind};
use super::matcher::{CondBits, FieldMatcher, normalize_path, percent_decode};
use crate::log::Request;
use crate::log::request::is_static_path;

/// At most this many enabled rules: which rules a request concerns is a
/// 128-bit mask, which keeps events small and fixed-size.
pub const MAX_RULES: usize = 128;

/// What a rule counts per.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpPart {
    None,
    Ip,
    Net { v4: u8, v6: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub ip: IpPart,
    pub field: Option<FieldName>,
}

/// A rule's `key` that names no address part and no field, or one twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid key '{0}': expected ip, net, a field (path, target, query, host, user_agent, referer, method, protocol) or ip+FIELD / net+FIELD"
)]
pub struct InvalidKey(pub String);

impl KeySpec {
    pub fn parse(text: &str) -> Result<KeySpec, InvalidKey> {
        let err = || InvalidKey(text.to_string());
        let mut ip = IpPart::None;
        let mut field = None;
        for part in text.split('+').map(str::trim) {
            match part {
                "ip" if ip == IpPart::None => ip = IpPart::Ip,
                "net" if ip == IpPart::None => ip = IpPart::Net { v4: 24, v6: 64 },
                f => match FieldName::from_name(f) {
                    Some(f) if f != FieldName::Ip && field.is_none() => field = Some(f),
                    _ => return Err(err()),
                },
            }
        }
        if ip == IpPart::None && field.is_none() {
            return Err(err());
        }
        Ok(KeySpec { ip, field })
    }

    pub fn describe(&self) -> String {
        let ip = match self.ip {
            IpPart::None => None,
            IpPart::Ip => Some("ip".to_string()),
            IpPart::Net { v4, v6 } => Some(format!("net(/{v4}, /{v6})")),
        };
        match (ip, self.field) {
            (Some(i), Some(f)) => format!("{i}+{}", f.name()),
            (Some(i), None) => i,
            (None, Some(f)) => f.name().to_string(),
            (None, None) => "-".to_string(),
        }
    }
}

/// What a decision does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Ban,
    Log,
    Named(String),
}

impl Action {
    pub fn name(&self) -> &str {
        match self {
            Action::Ban => "ban",
            Action::Log => "log",
            Action::Named(n) => n,
        }
    }
}

/// What firing a rule leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Decide { action: Action, duration_s: u64 },
    Score { score: usize, points: f64 },
}

/// Conditions on one request, compiled.
#[derive(Debug, Clone, Default)]
pub struct Block {
    /// Field conditions (ids into the field matchers); all must hold.
    pub conds: Vec<u32>,
    pub status: Vec<(u16, u16)>,
    pub ips: Option<NetSet>,
    pub static_files: Option<bool>,
    pub crawler: Option<super::crawlers::Crawler>,
}

impl Block {
    fn holds(
        &self,
        bits: &CondBits,
        status: u16,
        client: u128,
        is_static: bool,
        crawler: super::crawlers::Crawler,
    ) -> bool {
        self.crawler.is_none_or(|want| want == crawler)
            && self.conds.iter().all(|&c| bits.get(c))
            && (self.status.is_empty()
                || self.status.iter().any(|&(a, b)| (a..=b).contains(&status)))
            && self.ips.as_ref().is_none_or(|s| s.contains(client))
            && self.static_files.is_none_or(|want| want == is_static)
    }
}

/// Status codes the gates keep a mask for; a request with another
/// status (nginx logs three digits, so only a garbled line) is checked
/// rule by rule.
const GATED_STATUSES: usize = 1000;

/// What a request's status, kind of file and crawler claim rule out, as
/// masks over the rules, and which rules these masks and the first
/// condition decide whole. A request is a candidate for a dozen rules with
/// no pattern (rates and distinct counts); the masks settle them with a
/// few ANDs where a walk through each rule's conditions took a sixth of
/// classification's instructions.
#[derive(Debug, Clone, Default)]
pub(super) struct Gates {
    /// Per status code, the rules whose `when` admits it.
    by_status: Vec<u128>,
    /// Indexed by `is_static`.
    by_static: [u128; 2],
    /// Indexed by [`crawler_slot`].
    by_crawler: [u128; 3],
    /// Rules that can hit at all (not `inactive`).
    active: u128,
    /// Rules the masks decide with their first condition: at most one
    /// field condition, no addresses, no `unless`, not `unexpected_host`.
    settled: u128,
    /// Rate and distinct rules, which a verified crawler does not feed.
    counting: u128,
}

impl Gates {
    pub(super) fn of(rules: &[Rule]) -> Gates {
        let mut g = Gates {
            by_status: vec![0; GATED_STATUSES],
            ..Gates::default()
        };
        use super::crawlers::Crawler;
        for (i, rule) in rules.iter().enumerate().take(MAX_RULES) {
            let bit = 1u128 << i;
            let when = &rule.when;
            for (status, mask) in g.by_status.iter_mut().enumerate() {
                let status = status as u16;
                if when.status.is_empty()
                    || when.status.iter().any(|&(a, b)| (a..=b).contains(&status))
                {
                    *mask |= bit;
                }
            }
            for (is_static, mask) in g.by_static.iter_mut().enumerate() {
                if when
                    .static_files
                    .is_none_or(|want| want == (is_static == 1))
                {
                    *mask |= bit;
                }
            }
            for crawler in [Crawler::Unknown, Crawler::Verified, Crawler::Fake] {
                if when.crawler.is_none_or(|want| want == crawler) {
                    g.by_crawler[crawler_slot(crawler)] |= bit;
                }
            }
            if rule.inactive.is_none() {
                g.active |= bit;
            }
            if when.conds.len() <= 1
                && when.ips.is_none()
                && rule.unless.is_none()
                && rule.kind != RuleKind::UnexpectedHost
            {
                g.settled |= bit;
            }
            if matches!(rule.kind, RuleKind::Rate | RuleKind::Distinct) {
                g.counting |= bit;
            }
        }
        g
    }

    /// The rules a request with these traits may concern.
    fn admit(&self, status: u16, is_static: bool, crawler: super::crawlers::Crawler) -> u128 {
        let by_status = match self.by_status.get(status as usize) {
            Some(&mask) => mask,
            // Left to the walk: not settled here.
            None => u128::MAX,
        };
        let mut mask = self.active
            & by_status
            & self.by_static[usize::from(is_static)]
            & self.by_crawler[crawler_slot(crawler)];
        if crawler == super::crawlers::Crawler::Verified {
            mask &= !self.counting;
        }
        mask
    }

    /// The rules [`Gates::admit`] settles for this status.
    fn settled(&self, status: u16) -> u128 {
        if (status as usize) < self.by_status.len() {
            self.settled
        } else {
            0
        }
    }
}

/// A crawler verdict's place in [`Gates::by_crawler`]: a match, so that a
/// new verdict cannot compile without a place of its own.
fn crawler_slot(crawler: super::crawlers::Crawler) -> usize {
    use super::crawlers::Crawler;
    match crawler {
        Crawler::Unknown => 0,
        Crawler::Verified => 1,
        Crawler::Fake => 2,
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub description: String,
    pub kind: RuleKind,
    pub key: KeySpec,
    /// Most requests or distinct values allowed in the window.
    pub limit: u64,
    pub window_ms: i64,
    pub distinct: Option<FieldName>,
    pub when: Block,
    pub unless: Option<Block>,
    pub outcome: Outcome,
    /// Why a rule does nothing (unexpected_host without [sites]).
    pub inactive: Option<String>,
    /// `scope = "farm"`: counted across the farm's nodes when the daemon
    /// shares counts (see [`super::farmcount`]); counted here otherwise.
    pub farm: bool,
    pub origin: Origin,
    pub file: String,
}

#[derive(Debug, Clone)]
pub struct Score {
    pub name: String,
    pub threshold: f64,
    /// Points lost per millisecond.
    pub decay_per_ms: f64,
    pub decay_text: String,
    pub action: Action,
    pub duration_s: u64,
}

#[derive(Debug, Clone)]
pub struct Escalation {
    pub factor: f64,
    pub max_s: u64,
    pub remember_ms: i64,
}

#[derive(Debug, Clone)]
pub struct AllowSpec {
    pub nets: Vec<Subject>,
    pub hosts: Vec<String>,
    pub resolve_every_s: u64,
    pub local: bool,
}

#[derive(Debug, Clone)]
pub struct NamedAction {
    pub name: String,
    pub command: Vec<String>,
    pub description: String,
}

/// One `[sites] names` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteName {
    Exact(Vec<u8>),
    /// `*.example.com`: the suffix `.example.com`.
    Suffix(Vec<u8>),
}

/// Everything the engine needs, compiled and checked.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// `kind = "connections"`: run by the daemon over the kernel's
    /// connection table, not over requests.
    pub conn_rules: Vec<super::connrules::ConnRule>,
    /// `kind = "packets"` rules, decided on `[packets]` samples.
    pub packet_rules: Vec<super::packetrules::PacketRule>,
    pub scores: Vec<Score>,
    pub actions: Vec<NamedAction>,
    pub escalation: Escalation,
    pub allow: AllowSpec,
    pub memory_cap: u64,
    pub sites: Vec<SiteName>,
    pub files: Vec<String>,
    pub(super) matchers: Vec<(FieldName, FieldMatcher)>,
    pub(super) conds: usize,
    /// Fields whose hash some rule keys on or counts.
    pub(super) hashed: [bool; FieldName::TEXT.len()],
    /// Per condition, the rules whose first condition it is; and the rules
    /// with none. A request is checked against these rules only: most
    /// rules look for patterns most requests do not have.
    pub(super) by_first_cond: Vec<u128>,
    pub(super) condless: u128,
    pub(super) gates: Gates,
    pub(super) hasher: RandomState,
    /// Which compilation this is (clones share it): a worker's memo of
    /// field values is only good for the rule set it was filled for.
    pub(super) id: u64,
}

/// A new [`RuleSet::id`].
pub(super) fn next_rule_set_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A request reduced to what the stateful engine needs; plain data, so a
/// chunk's worth is one reusable vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub time: i64,
    /// Which line: source index in the top 16 bits, line number below.
    pub loc: u64,
    pub client: u128,
    pub status: u16,
    pub allowed: bool,
    /// Bit i: rule i concerns this request.
    pub hits: u128,
    /// Seeded hashes of the text fields, in `FieldName::TEXT` order; only
    /// those some rule needs are computed.
    pub fields: [u64; FieldName::TEXT.len()],
    /// The line within its chunk, for samples.
    pub line_start: u32,
    pub line_len: u32,
}

pub fn loc(source: usize, line: u64) -> u64 {
    ((source as u64) << 48) | (line & ((1 << 48) - 1))
}

pub fn loc_parts(loc: u64) -> (usize, u64) {
    ((loc >> 48) as usize, loc & ((1 << 48) - 1))
}

/// Where a text field's hash sits in [`Event::fields`]. `TEXT` lists the
/// fields in declaration order after `Ip`, so this is arithmetic, not a
/// search (it runs several times per request; a test holds the order).
fn text_index(f: FieldName) -> usize {
    (f as usize).saturating_sub(1)
}

/// The text of a field of a request.
pub fn field_text<'a>(r: &Request<'a>, f: FieldName, target: &'a [u8]) -> &'a [u8] {
    match f {
        FieldName::Ip => b"",
        FieldName::Path => r.path,
        FieldName::Query => r.query,
        FieldName::Target => target,
        FieldName::Method => r.method,
        FieldName::Host => r.host,
        FieldName::UserAgent => r.user_agent,
        FieldName::Referer => r.referer,
        FieldName::Protocol => r.protocol,
        FieldName::Message => r.message,
        FieldName::Level => r.level,
    }
}

/// The request target (path and query) as sent: the middle of the request line.
pub fn target_of<'a>(r: &Request<'a>) -> &'a [u8] {
    let raw = r.request;
    if r.method.is_empty() {
        return r.path;
    }
    let rest = raw.get(r.method.len()..).unwrap_or(b"").trim_ascii_start();
    match rest.iter().rposition(|&b| b == b' ') {
        Some(p) if !r.protocol.is_empty() => rest[..p].trim_ascii_end(),
        _ => rest,
    }
}

/// Reusable per-thread buffers for [`RuleSet::classify`].
#[derive(Debug, Default)]
pub struct ClassifyScratch {
    bits: CondBits,
    /// One per field matcher, filled for the rule set `memo_for`.
    memo: Vec<super::memo::Memo>,
    memo_for: u64,
    decoded: (Vec<u8>, Vec<u8>),
    normalized: Vec<u8>,
    lower: Vec<u8>,
}

fn host_without_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match memchr::memchr(b']', host) {
            Some(p) => &host[..=p],
            None => host,
        };
    }
    match memchr::memrchr(b':', host) {
        // One colon: a port. Several: a bare IPv6 literal.
        Some(p) if memchr::memchr(b':', &host[..p]).is_none() => &host[..p],
        _ => host,
    }
}

impl RuleSet {
    pub fn site_matches(&self, host: &[u8]) -> bool {
        let h = host_without_port(host);
        let h = h.strip_suffix(b".").unwrap_or(h);
        self.sites.iter().any(|s| match s {
            SiteName::Exact(n) => h.eq_ignore_ascii_case(n),
            SiteName::Suffix(sfx) => {
                h.len() > sfx.len() && h[h.len() - sfx.len()..].eq_ignore_ascii_case(sfx)
            }
        })
    }

    pub fn hash(&self, bytes: &[u8]) -> u64 {
        self.hasher.hash_one(bytes)
    }

    /// Which rules concern `r`, and the hashes the engine keys on.
    pub fn classify(&self, r: &Request<'_>, allowed: bool, scratch: &mut ClassifyScratch) -> Event {
        self.classify_with(r, allowed, super::crawlers::Crawler::Unknown, scratch)
    }

    /// Classifies knowing whether the client is a verified or a fake
    /// crawler: a verified one is left out of rate and distinct rules.
    pub fn classify_with(
        &self,
        r: &Request<'_>,
        allowed: bool,
        crawler: super::crawlers::Crawler,
        scratch: &mut ClassifyScratch,
    ) -> Event {
        let target = target_of(r);
        let client = to_bits(r.client);
        let is_static = is_static_path(r.path);
        if scratch.bits.words() != self.conds.div_ceil(64).max(1) {
            scratch.bits = CondBits::with_len(self.conds);
        } else {
            scratch.bits.clear();
        }
        // A reload brings a new rule set: what the memo remembers (which
        // conditions, by id) belongs to the old one.
        if scratch.memo_for != self.id || scratch.memo.len() != self.matchers.len() {
            use super::memo::{FEW, FEW_ENTRY, MANY, MANY_ENTRY, Memo};
            scratch.memo_for = self.id;
            scratch.memo = (self.matchers.iter())
                .map(|(f, _)| match f {
                    FieldName::Path | FieldName::Target | FieldName::Query => {
                        Memo::new(MANY, MANY_ENTRY)
                    }
                    _ => Memo::new(FEW, FEW_ENTRY),
                })
                .collect();
        }
        // Seeded hashes of the raw fields, computed once for the memo and
        // the engine's keys.
        let mut hashes = [None; FieldName::TEXT.len()];
        for ((field, m), memo) in self.matchers.iter().zip(scratch.memo.iter_mut()) {
            let raw = field_text(r, *field, target);
            if raw.is_empty() {
                for &c in &m.on_empty {
                    scratch.bits.set(c);
                }
                continue;
            }
            let hash = *hashes[text_index(*field)].get_or_insert_with(|| self.hash(raw));
            if memo.recall(hash, raw, |c| scratch.bits.set(c)) {
                continue;
            }
            let value = raw;
            let value = if m.decode {
                let decoded = percent_decode(value, &mut scratch.decoded);
                // A decoded path is matched as the server resolves it.
                if *field == FieldName::Path {
                    normalize_path(decoded, &mut scratch.normalized)
                } else {
                    decoded
                }
            } else {
                value
            };
            m.scan(value, &mut scratch.bits, &mut scratch.lower);
            let found: smallvec::SmallVec<[u32; 4]> = m
                .conds
                .iter()
                .copied()
                .filter(|&c| scratch.bits.get(c))
                .collect();
            memo.put(hash, raw, &found);
        }
        let mut candidates = self.condless;
        for c in scratch.bits.ones() {
            candidates |= self.by_first_cond.get(c as usize).copied().unwrap_or(0);
        }
        candidates &= self.gates.admit(r.status, is_static, crawler);
        let settled = self.gates.settled(r.status);
        let mut hits = candidates & settled;
        let mut unsettled = candidates & !settled;
        while unsettled != 0 {
            let i = unsettled.trailing_zeros() as usize;
            unsettled &= unsettled - 1;
            let Some(rule) = self.rules.get(i) else {
                break;
            };
            if self.rule_holds(rule, r, &scratch.bits, client, is_static, crawler) {
                hits |= 1 << i;
            }
        }
        let mut fields = [0u64; FieldName::TEXT.len()];
        if hits != 0 {
            for (i, f) in FieldName::TEXT.iter().enumerate() {
                if self.hashed[i] {
                    fields[i] = hashes[i].unwrap_or_else(|| self.hash(field_text(r, *f, target)));
                }
            }
        }
        Event {
            time: r.time,
            loc: 0,
            client,
            status: r.status,
            allowed,
            hits,
            fields,
            line_start: 0,
            line_len: 0,
        }
    }

    /// Whether a rule concerns a request, condition by condition: for the
    /// rules the gates do not settle.
    fn rule_holds(
        &self,
        rule: &Rule,
        r: &Request<'_>,
        bits: &CondBits,
        client: u128,
        is_static: bool,
        crawler: super::crawlers::Crawler,
    ) -> bool {
        rule.inactive.is_none()
            && !(rule.kind == RuleKind::UnexpectedHost
                && (r.host.is_empty() || self.site_matches(r.host)))
            && rule.when.holds(bits, r.status, client, is_static, crawler)
            && !(rule.unless.as_ref())
                .is_some_and(|u| u.holds(bits, r.status, client, is_static, crawler))
            && !(crawler == super::crawlers::Crawler::Verified
                && matches!(rule.kind, RuleKind::Rate | RuleKind::Distinct))
    }

    pub fn field_hash(ev: &Event, f: FieldName) -> u64 {
        if f == FieldName::Ip {
            // Distinct clients: the address itself, folded.
            return (ev.client as u64) ^ ((ev.client >> 64) as u64).rotate_left(17);
        }
        ev.fields[text_index(f)]
    }

    pub fn score_index(&self, name: &str) -> Option<usize> {
        self.scores.iter().position(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a scratch kept across a reload (the daemon keeps its
    /// detector's) answered from the memo of the old rules, so a pattern
    /// added by the reload went unseen on values met before it.
    #[test]
    fn a_reload_does_not_answer_from_the_old_rules_memo() {
        let compile = |pattern: &str| {
            let text = format!(
                "default_rules = false\n[rules.probe]\nkind = \"match\"\nmatch.path.exact = [\"{pattern}\"]\naction = \"log\"\n"
            );
            let config = crate::detect::Config::from_texts(vec![("t.toml".into(), text)]).unwrap();
            RuleSet::compile(&config).unwrap()
        };
        let old = compile("/old");
        let mut new = compile("/new");
        // The same hasher, so only the rule set's identity tells them apart.
        new.hasher = old.hasher.clone();
        let parser = crate::log::Parser::preset(crate::log::Preset::Combined, Default::default());
        let line =
            b"192.0.2.1 - - [10/Mar/2024:10:00:00 +0000] \"GET /new HTTP/1.1\" 200 1 \"-\" \"x\"";
        let mut scratch = crate::log::Scratch::default();
        let r = parser.parse(line, &mut scratch).unwrap();
        let mut cs = ClassifyScratch::default();
        assert_eq!(old.classify(&r, false, &mut cs).hits, 0);
        assert_eq!(new.classify(&r, false, &mut cs).hits, 1);
    }

    /// Every rule checked in turn, condition by condition: what the
    /// candidates and the gates must agree with.
    fn hits_rule_by_rule(
        set: &RuleSet,
        r: &Request<'_>,
        bits: &CondBits,
        crawler: super::super::crawlers::Crawler,
    ) -> u128 {
        let (client, is_static) = (to_bits(r.client), is_static_path(r.path));
        (set.rules.iter().enumerate())
            .filter(|(_, rule)| set.rule_holds(rule, r, bits, client, is_static, crawler))
            .fold(0, |hits, (i, _)| hits | 1 << i)
    }

    /// The built-in rules, and rules that stretch the gates: status ranges,
    /// addresses, `unless`, two conditions, static files only, verified
    /// crawlers, an unexpected host.
    const GATED: &str = r#"
[sites]
names = ["example.org", "*.example.net"]
[rules.teapots]
kind = "rate"
key = "ip"
limit = 5
window = "10s"
match.status = ["4xx", "100-199", 999]
match.ip = ["192.0.2.0/24", "2001:db8::/32"]
[rules.static-posts]
kind = "rate"
key = "ip"
limit = 5
window = "10s"
match.static = true
match.method.exact = ["POST"]
[rules.two-conditions]
kind = "match"
match.method.exact = ["GET"]
match.user_agent.contains = ["curl"]
action = "log"
[rules.unless-ok]
kind = "match"
match.path.prefix = ["/a"]
unless.status = [200]
action = "log"
[rules.verified-only]
kind = "match"
match.crawler = "verified"
action = "log"
"#;

    proptest::proptest! {
        #[test]
        fn the_gates_decide_as_every_rule_checked_in_turn(
            status in proptest::prop_oneof![
                proptest::sample::select(vec![200u16, 206, 301, 304, 400, 401, 403, 404, 405, 500, 999]),
                0u16..1100,
                proptest::prelude::any::<u16>(),
            ],
            method in proptest::sample::select(vec!["GET", "POST", "HEAD"]),
            path in proptest::sample::select(vec![
                "/", "/a.css", "/a?x=1", "/wp-login.php", "/login", "/..%2f..%2fetc/passwd",
                "/cgi-bin/x.sh", "/img/logo.png?v=2", "/a/b",
            ]),
            agent in proptest::sample::select(vec![
                "Mozilla/5.0", "sqlmap/1.7", "Googlebot/2.1", "curl/8.0", "-",
            ]),
            client in proptest::sample::select(vec![
                "192.0.2.1", "198.51.100.7", "2001:db8::1", "2001:db9::1", "10.1.2.3",
            ]),
            host in proptest::sample::select(vec!["", "example.org", "www.example.net", "evil.test"]),
            crawler in proptest::sample::select(vec![
                super::super::crawlers::Crawler::Unknown,
                super::super::crawlers::Crawler::Verified,
                super::super::crawlers::Crawler::Fake,
            ]),
        ) {
            static SET: std::sync::OnceLock<RuleSet> = std::sync::OnceLock::new();
            let set = SET.get_or_init(|| {
                let config = crate::detect::Config::from_texts(vec![("t.toml".into(), GATED.into())])
                    .expect("the test's rules parse");
                RuleSet::compile(&config).expect("the test's rules compile")
            });
            let parser = crate::log::Parser::preset(crate::log::Preset::Combined, Default::default());
            let line = format!(
                "{client} - - [10/Mar/2024:10:00:00 +0000] \"{method} {path} HTTP/1.1\" 200 1 \"-\" \"{agent}\""
            );
            let mut scratch = crate::log::Scratch::default();
            let mut r = parser.parse(line.as_bytes(), &mut scratch).expect("the test's line parses");
            r.status = status;
            r.host = host.as_bytes();
            let mut cs = ClassifyScratch::default();
            let hits = set.classify_with(&r, false, crawler, &mut cs).hits;
            proptest::prop_assert_eq!(hits, hits_rule_by_rule(set, &r, &cs.bits, crawler));
        }
    }

    #[test]
    fn text_fields_are_indexed_in_their_declared_order() {
        for (i, f) in FieldName::TEXT.iter().enumerate() {
            assert_eq!(text_index(*f), i, "{f:?}");
        }
    }
}
