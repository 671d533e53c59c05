//! The configuration file: TOML, layered, every key documented, unknown keys
//! rejected.
//!
//! Several files merge in order, on top of the built-in ruleset (unless a file
//! says `default_rules = false`): scalar settings are overridden, lists of
//! addresses and site names are appended, and a `[rules.NAME]` table patches
//! the rule of the same name field by field (a whole `match` or `unless`
//! table is replaced), so a site's file can retune or disable one built-in
//! rule without copying the others.
//!
//! Every value keeps where it came from ([`Sp`]), so that errors found later,
//! when rules are compiled, still point at file, line and column.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// Read when no `-c` is given and the file exists.
pub const DEFAULT_PATH: &str = "/etc/webfence/webfence.toml";

/// The built-in ruleset; its comments explain each threshold.
pub const BUILTIN_RULES: &str = include_str!("default.toml");
const BUILTIN_NAME: &str = "<built-in rules>";

/// Where a value was written: file index into [`SourceFiles`] and byte span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Origin {
    pub file: usize,
    pub start: usize,
    pub end: usize,
}

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Sp<T> {
    pub value: T,
    pub at: Origin,
}

thread_local! {
    // Serde gives a Deserialize impl no context, so the file being read is
    // passed this way to stamp every Sp with it.
    static CURRENT_FILE: Cell<usize> = const { Cell::new(0) };
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sp<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = toml::Spanned::<T>::deserialize(d)?;
        let span = spanned.span();
        Ok(Sp {
            value: spanned.into_inner(),
            at: Origin {
                file: CURRENT_FILE.with(Cell::get),
                start: span.start,
                end: span.end,
            },
        })
    }
}

/// The texts of the files read, kept to turn spans into lines and columns.
#[derive(Debug, Clone, Default)]
pub struct SourceFiles {
    files: Vec<(String, String)>,
}

impl SourceFiles {
    pub fn add(&mut self, name: String, text: String) -> usize {
        self.files.push((name, text));
        self.files.len() - 1
    }

    pub fn name(&self, file: usize) -> &str {
        self.files.get(file).map_or("<config>", |f| f.0.as_str())
    }

    pub fn path(&self, file: usize) -> Option<&Path> {
        self.files
            .get(file)
            .filter(|f| f.0 != BUILTIN_NAME)
            .map(|f| Path::new(&f.0))
    }

    /// One-based line and column (in characters) of a byte offset.
    pub fn locate(&self, at: Origin) -> (usize, usize) {
        let Some((_, text)) = self.files.get(at.file) else {
            return (0, 0);
        };
        let upto = &text.as_bytes()[..at.start.min(text.len())];
        let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = upto.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let col = String::from_utf8_lossy(&upto[line_start..]).chars().count() + 1;
        (line, col)
    }

    /// The source text at `at`, shortened for an error message.
    pub fn excerpt(&self, at: Origin) -> String {
        let Some((_, text)) = self.files.get(at.file) else {
            return String::new();
        };
        let s = text.get(at.start..at.end.min(text.len())).unwrap_or("");
        let s = s.lines().next().unwrap_or("");
        if s.chars().count() > 80 {
            format!("{}…", s.chars().take(80).collect::<String>())
        } else {
            s.to_string()
        }
    }

    pub fn error(&self, at: Origin, message: impl Into<String>) -> ConfigError {
        let (line, column) = self.locate(at);
        ConfigError {
            file: self.name(at.file).to_string(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// One problem in a configuration file: `file:line:column: message`, or
/// `file: message` where no place in it is to blame (it cannot be read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.located())]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl ConfigError {
    fn located(&self) -> String {
        if self.line == 0 {
            format!("{}: {}", self.file, self.message)
        } else {
            format!(
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// Every problem found; reported all at once so a file is fixed in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A string, or a list of strings; `"@PATH"` items name pattern files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patterns(pub Vec<Sp<String>>);

impl<'de> Deserialize<'de> for Patterns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        enum OneOrMany {
            One(String),
            Many(Vec<Sp<String>>),
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a string or a list of strings (\"@/path/file\" reads patterns from a file)",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                // Each item keeps its own span, so a bad regex in a list is
                // pointed at exactly.
                while let Some(item) = seq.next_element::<Sp<String>>()? {
                    out.push(item);
                }
                Ok(OneOrMany::Many(out))
            }
        }
        impl<'de> Deserialize<'de> for OneOrMany {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(V)
            }
        }
        let whole = Sp::<OneOrMany>::deserialize(d)?;
        Ok(match whole.value {
            OneOrMany::One(s) => Patterns(vec![Sp {
                value: s,
                at: whole.at,
            }]),
            OneOrMany::Many(v) => Patterns(v),
        })
    }
}

/// A status pattern, written as a number (`404`) or a string (`"4xx"`,
/// `"500-599"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusText(pub String);

impl<'de> Deserialize<'de> for StatusText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StatusText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a status such as 404, \"4xx\" or \"500-599\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusText, E> {
                Ok(StatusText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusText, E> {
                Ok(StatusText(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusText, E> {
                Ok(StatusText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// What kind of test a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// More than `limit` requests per key within `window` (a sliding window).
    Rate,
    /// More than `limit` distinct values of `distinct` per key within `window`.
    Distinct,
    /// Every request that fits `match` (and not `unless`).
    Match,
    /// Every request whose Host is not one of `[sites] names`.
    UnexpectedHost,
    /// More than `limit` concurrent connections per key (ip or net) in the
    /// kernel's table, optionally only in `states` and to `ports`.
    Connections,
    /// More than `limit` packets of `classes` from one local address within
    /// one `[packets]` sample.
    Packets,
}

impl RuleKind {
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::Rate => "rate",
            RuleKind::Distinct => "distinct",
            RuleKind::Match => "match",
            RuleKind::UnexpectedHost => "unexpected_host",
            RuleKind::Connections => "connections",
            RuleKind::Packets => "packets",
        }
    }
}

/// A request field that rules can test, key on or count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldName {
    Ip,
    Path,
    Query,
    /// Path and query, as requested.
    Target,
    Method,
    Host,
    UserAgent,
    Referer,
    Protocol,
    /// An error log's message.
    Message,
    /// An error log's level.
    Level,
}

impl FieldName {
    pub const TEXT: [FieldName; 10] = [
        FieldName::Path,
        FieldName::Query,
        FieldName::Target,
        FieldName::Method,
        FieldName::Host,
        FieldName::UserAgent,
        FieldName::Referer,
        FieldName::Protocol,
        FieldName::Message,
        FieldName::Level,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FieldName::Ip => "ip",
            FieldName::Path => "path",
            FieldName::Query => "query",
            FieldName::Target => "target",
            FieldName::Method => "method",
            FieldName::Host => "host",
            FieldName::UserAgent => "user_agent",
            FieldName::Referer => "referer",
            FieldName::Protocol => "protocol",
            FieldName::Message => "message",
            FieldName::Level => "level",
        }
    }

    pub fn from_name(name: &str) -> Option<FieldName> {
        [FieldName::Ip]
            .into_iter()
            .chain(FieldName::TEXT)
            .find(|f| f.name() == name)
    }
}

/// Tests on one text field. Within a field the lists are alternatives (any
/// one pattern matching is enough); all literal patterns of all rules on a
/// field are searched in one pass.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawText {
    /// The whole value equals one of these.
    pub exact: Option<Patterns>,
    /// The value starts with one of these.
    pub prefix: Option<Patterns>,
    /// The value ends with one of these.
    pub suffix: Option<Patterns>,
    /// The value contains one of these.
    pub contains: Option<Patterns>,
    /// Regular expressions (Rust syntax, linear time, unanchored).
    pub regex: Option<Patterns>,
    /// Compare ASCII letters without regard to case.
    pub ignore_case: Option<bool>,
    /// Percent-decode the value first (twice, against double encoding), so
    /// `%2e%2e%2f` is tested as `../`.
    pub decode: Option<bool>,
}

/// Conditions on a request; all given conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub path: Option<RawText>,
    pub query: Option<RawText>,
    pub target: Option<RawText>,
    pub method: Option<RawText>,
    pub host: Option<RawText>,
    pub user_agent: Option<RawText>,
    pub referer: Option<RawText>,
    pub protocol: Option<RawText>,
    /// Error logs: the message (`"password mismatch"`, `"AH01618"`…).
    pub message: Option<RawText>,
    /// Error logs: the level (`error`, `warn`…).
    pub level: Option<RawText>,
    /// Statuses: 404, "4xx", "500-599".
    pub status: Option<Vec<Sp<StatusText>>>,
    /// Client addresses or CIDRs.
    pub ip: Option<Vec<Sp<String>>>,
    /// true: only static files (by extension); false: only pages.
    #[serde(rename = "static")]
    pub static_files: Option<bool>,
    /// "fake": the User-Agent claims a search engine's crawler and the
    /// address does not verify; "verified": it does (the daemon checks by
    /// reverse and forward DNS; replay cannot and never matches either).
    pub crawler: Option<Sp<String>>,
}

impl RawMatch {
    pub fn text_fields(&self) -> [(FieldName, Option<&RawText>); 10] {
        [
            (FieldName::Path, self.path.as_ref()),
            (FieldName::Query, self.query.as_ref()),
            (FieldName::Target, self.target.as_ref()),
            (FieldName::Method, self.method.as_ref()),
            (FieldName::Host, self.host.as_ref()),
            (FieldName::UserAgent, self.user_agent.as_ref()),
            (FieldName::Referer, self.referer.as_ref()),
            (FieldName::Protocol, self.protocol.as_ref()),
            (FieldName::Message, self.message.as_ref()),
            (FieldName::Level, self.level.as_ref()),
        ]
    }
}

/// `[rules.NAME]`: one rule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// false turns the rule off (a built-in one too) without deleting it.
    pub enabled: Option<bool>,
    /// Free text shown by `webfence rules`.
    pub description: Option<String>,
    /// rate, distinct, match or unexpected_host.
    pub kind: Option<Sp<RuleKind>>,
    /// What is counted per: ip, net (the client's /24 or /64), a field
    /// (path, target, host, user_agent…), or ip+FIELD / net+FIELD.
    pub key: Option<Sp<String>>,
    /// The most requests (rate) or distinct values (distinct) allowed in the
    /// window; one more is a decision.
    pub limit: Option<Sp<i64>>,
    /// The sliding window, e.g. "10s", "1m".
    pub window: Option<Sp<String>>,
    /// For distinct rules: the field whose distinct values are counted.
    pub distinct: Option<Sp<FieldName>>,
    /// Prefix length of `net` for IPv4 clients (default 24).
    pub ipv4_prefix: Option<Sp<i64>>,
    /// Prefix length of `net` for IPv6 clients (default 64).
    pub ipv6_prefix: Option<Sp<i64>>,
    /// Which requests the rule looks at (all when absent).
    #[serde(rename = "match")]
    pub matches: Option<RawMatch>,
    /// Requests to leave out even when `match` fits.
    pub unless: Option<RawMatch>,
    /// ban, log, or the name of an `[actions.NAME]` table.
    pub action: Option<Sp<String>>,
    /// How long a ban lasts before escalation, e.g. "1h" (default 1h).
    pub duration: Option<Sp<String>>,
    /// Instead of an action: add these points to the client's score.
    pub score: Option<Sp<f64>>,
    /// Which score the points go to (default "default").
    pub score_name: Option<Sp<String>>,
    /// Connection rules: only connections in these TCP states (default:
    /// every state but time-wait), such as ["established"].
    pub states: Option<Vec<Sp<String>>>,
    /// Connection rules: only connections to these local ports (default:
    /// every listening port).
    pub ports: Option<Vec<Sp<i64>>>,
    /// Packet rules: the classes counted (bittorrent, utp, dht, tracker,
    /// other; default the first four).
    pub classes: Option<Vec<Sp<String>>>,
    /// Rate rules: "local" (default) counts this node's requests; "farm"
    /// counts every node's, through `[farm]`'s Redis.
    pub scope: Option<Sp<String>>,
}

impl RawRule {
    fn layer(&mut self, o: RawRule) {
        macro_rules! take {
            ($($f:ident),*) => { $( if o.$f.is_some() { self.$f = o.$f; } )* };
        }
        take!(
            enabled,
            description,
            kind,
            key,
            limit,
            window,
            distinct,
            ipv4_prefix,
            ipv6_prefix,
            matches,
            unless,
            action,
            duration,
            score,
            score_name,
            states,
            ports,
            classes,
            scope
        );
    }
}

/// `[scores.NAME]`: a decaying per-client score.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScore {
    /// A score above this is a decision.
    pub threshold: Option<Sp<f64>>,
    /// How fast points fade, POINTS/DURATION: "3/1d" (mod_security's
    /// deprecatevar 3/86400). Decay applies however busy the client is.
    pub decay: Option<Sp<String>>,
    /// ban, log, or an `[actions.NAME]` name (default ban).
    pub action: Option<Sp<String>>,
    /// Ban duration before escalation (default 1h).
    pub duration: Option<Sp<String>>,
}

/// `[actions.NAME]`: a program the daemon runs for decisions naming it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAction {
    /// Program and arguments; facts arrive as environment variables
    /// (WEBFENCE_IP, WEBFENCE_RULE…), never through a shell.
    pub command: Option<Vec<Sp<String>>>,
    /// Free text shown by `webfence rules`.
    pub description: Option<String>,
}

/// `[sites]`: the names this server answers to.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSites {
    /// Host names, exact or `*.example.com`; other Hosts are unexpected.
    pub names: Option<Vec<Sp<String>>>,
}

/// `[allowlist]`: clients never decided against.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllowlist {
    /// Addresses and CIDRs.
    pub addresses: Option<Vec<Sp<String>>>,
    /// Host names, resolved at start and every `resolve_every` (an admin on
    /// a dynamic address).
    pub hosts: Option<Vec<Sp<String>>>,
    /// How often to resolve `hosts` again (default 10m).
    pub resolve_every: Option<Sp<String>>,
    /// Also allow loopback and this machine's own addresses (default true).
    pub local: Option<bool>,
}

/// `[state]`: memory bounds of the rule engine.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// Most memory for per-client state, e.g. "256MB" (the default). Beyond
    /// it, the least recently active idle state is dropped; state over a
    /// threshold and banned clients are kept.
    pub memory_cap: Option<Sp<String>>,
}

/// `[escalation]`: longer bans for repeat offenders.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEscalation {
    /// Each new ban lasts this many times the previous one (default 2; 1
    /// turns escalation off).
    pub factor: Option<Sp<f64>>,
    /// The longest a ban can grow to (default 1w).
    pub max: Option<Sp<String>>,
    /// How long past bans are remembered (default 30d).
    pub remember: Option<Sp<String>>,
}

/// `[daemon]`: what `webfence run` follows and how it enforces. Every field
/// is optional; a later file overrides an earlier one field by field.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    /// Access logs to follow: files or globs ("/var/log/nginx/*access.log").
    /// Files that appear later are followed too.
    pub logs: Option<Vec<Sp<String>>>,
    /// Log format: "auto" (the default), "combined", "common",
    /// "vhost_combined", "main" or "json".
    pub format: Option<Sp<String>>,
    /// A custom nginx `log_format` string instead of `format`.
    pub nginx_format: Option<Sp<String>>,
    /// A custom Apache `LogFormat` string instead of `format`.
    pub apache_format: Option<Sp<String>>,
    /// Reverse proxies (addresses or CIDRs) whose X-Forwarded-For is believed.
    pub trusted_proxies: Option<Vec<Sp<String>>>,
    /// Where bans go: "nftables" (the default), "ipset", "route" or "none".
    pub backend: Option<Sp<String>>,
    /// The nftables table (inet family) or the ipset name prefix webfence
    /// owns (default "webfence").
    pub table: Option<Sp<String>>,
    /// Directory of the ledger and the log checkpoints (default
    /// /var/lib/webfence).
    pub state_dir: Option<Sp<String>>,
    /// The control socket, root only (default /run/webfence/webfence.sock).
    pub socket: Option<Sp<String>>,
    /// Also cut a banned client's established connections with `ss -K`, so
    /// an open keep-alive connection does not outlive the ban (default
    /// false).
    pub kill_connections: Option<bool>,
    /// Program and arguments run on every ban. Placeholders {ip}, {rule},
    /// {action}, {duration} and {event} are replaced inside single
    /// arguments; these and the text facts (reason, a sample log line) are
    /// in WEBFENCE_* environment variables. Never run through a shell, and
    /// text from logs never fills an argument ({reason} is refused).
    pub on_ban: Option<Vec<Sp<String>>>,
    /// Likewise, run when a ban is lifted (by hand or on expiry).
    pub on_unban: Option<Vec<Sp<String>>>,
    /// How often to retry a failing backend (default 5s).
    pub retry: Option<Sp<String>>,
    /// How often to check that the backend's table and rules are still in
    /// place (default 30s; with nft 1.0 every check reads the whole
    /// ruleset, which costs about half a CPU-second per 100k bans).
    pub check_every: Option<Sp<String>>,
}

impl RawDaemon {
    fn layer(&mut self, o: RawDaemon) {
        macro_rules! take {
            ($($f:ident),*) => { $( if o.$f.is_some() { self.$f = o.$f; } )* };
        }
        take!(
            logs,
            format,
            nginx_format,
            apache_format,
            trusted_proxies,
            backend,
            table,
            state_dir,
            socket,
            kill_connections,
            on_ban,
            on_unban,
            retry,
            check_every
        );
    }
}

/// `[guards.NAME]`: a condition over the machine's state, an action when
/// it becomes true, and a recovery when it is over.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    /// false turns the guard off without deleting it.
    pub enabled: Option<bool>,
    /// Free text shown by `status`.
    pub description: Option<String>,
    /// The condition, such as "la1 >= 10 or la5 >= 6" (sysfence's names).
    pub when: Option<Sp<String>>,
    /// Consecutive true checks before it fires (default 1).
    #[serde(rename = "for")]
    pub for_checks: Option<Sp<i64>>,
    /// What "over" means (default: `when` is false).
    pub until: Option<Sp<String>>,
    /// The program to run when it fires: an argument vector, no shell.
    pub run: Option<Vec<Sp<String>>>,
    /// The program to run once when it is over.
    pub then: Option<Vec<Sp<String>>>,
    /// Run again this often while `when` holds (default: once per episode).
    pub repeat: Option<Sp<String>>,
    /// How long `run` or `then` may take before it is killed (default 60s).
    pub timeout: Option<Sp<String>>,
    /// How often the condition is checked (default 1s).
    pub check_every: Option<Sp<String>>,
    /// "run" (the default with `run`), "log" (the default without), or
    /// "ban": ban the clients with the most connections.
    pub action: Option<Sp<String>>,
    /// With action = "ban": at most this many clients (default 10).
    pub ban_top: Option<Sp<i64>>,
    /// With action = "ban": only clients with at least this many
    /// connections (default 20).
    pub ban_min_conns: Option<Sp<i64>>,
    /// With action = "ban": how long (default 1h).
    pub duration: Option<Sp<String>>,
}

/// `[limits]`: per-client connection limits the kernel enforces in
/// webfence's own nftables table, before any log line exists.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Concurrent connections per client address; past it a new
    /// connection is refused with a TCP reset.
    pub max_conns: Option<Sp<i64>>,
    /// New connections per second per client address; past it (and the
    /// burst) new connections are dropped.
    pub new_per_second: Option<Sp<i64>>,
    /// New connections allowed at once above the rate (default: the rate).
    pub burst: Option<Sp<i64>>,
    /// Local TCP ports limited (default 80 and 443).
    pub ports: Option<Vec<Sp<i64>>>,
    /// Addresses and networks never limited, besides `[allowlist]
    /// addresses`.
    pub exempt: Option<Vec<Sp<String>>>,
}

/// `[notify.NAME]`: a channel that tells people (mail, webhook, program).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// mail, webhook or command.
    #[serde(rename = "type")]
    pub kind: Option<Sp<String>>,
    /// Mail: the SMTP server, smtp://[user:pass@]host[:port] (STARTTLS when
    /// offered; ?tls=required to insist) or smtps://host (implicit TLS).
    pub smtp: Option<Sp<String>>,
    /// Mail: the sendmail program instead of SMTP.
    pub sendmail: Option<Sp<String>>,
    /// Mail: the sender address.
    pub from: Option<Sp<String>>,
    /// Mail: the recipients.
    pub to: Option<Vec<Sp<String>>>,
    /// Mail: the subject, with {host} and {summary}.
    pub subject: Option<Sp<String>>,
    /// Webhook: where to POST.
    pub url: Option<Sp<String>>,
    /// Webhook: "json" (the default) or "slack" (also Mattermost).
    pub format: Option<Sp<String>>,
    /// Webhook: extra headers, such as Authorization.
    pub headers: Option<BTreeMap<String, Sp<String>>>,
    /// Command: the program and its arguments; the message is on stdin.
    pub command: Option<Vec<Sp<String>>>,
    /// Which events: ban, guard, degraded, stalled, digest (default: all
    /// but digest).
    pub on: Option<Vec<Sp<String>>>,
    /// Only bans and guard events about these rules or guards.
    pub rules: Option<Vec<Sp<String>>>,
    /// info, warning or critical (default info).
    pub min_severity: Option<Sp<String>>,
    /// How long events are collected into one message (default 30s).
    pub group_wait: Option<Sp<String>>,
    /// Send at once when this many events wait (default 1000).
    pub group_threshold: Option<Sp<i64>>,
    /// The same ongoing condition is not sent again within this (default 1h).
    pub repeat: Option<Sp<String>>,
}

/// `[digest.NAME]`: a periodic summary sent to notification channels.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDigest {
    /// The period, such as "1h" or "1d" (at least 10s).
    pub every: Option<Sp<String>>,
    /// The `[notify.NAME]` channels it goes to (default: all).
    pub channels: Option<Vec<Sp<String>>>,
    /// Also send a digest of a period where nothing happened.
    pub send_empty: Option<bool>,
}

/// `[blocklists.NAME]`: a list of known-bad addresses dropped by the
/// kernel.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBlocklist {
    /// A file, or an http(s):// URL (fetched with conditional requests).
    pub source: Option<Sp<String>>,
    /// How often it is read again (default 1h for a URL, 1m for a file,
    /// whose change is seen by its modification time).
    pub refresh: Option<Sp<String>>,
    /// false turns it off without deleting it.
    pub enabled: Option<bool>,
    /// Free text shown by `status`.
    pub description: Option<String>,
}

/// `[crawlers]`: verifying clients that claim a search engine's crawler.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCrawlers {
    /// Check claims by reverse and forward DNS (default true): verified
    /// crawlers are left out of rate rules, fakes match `crawler = "fake"`.
    pub verify: Option<bool>,
}

/// `[metrics]`: Prometheus metrics and a health check over HTTP.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Address and port, such as "127.0.0.1:9736".
    pub listen: Option<Sp<String>>,
}

/// `[web]`: a read-only live dashboard at `/`, with `/api/live` and
/// `/events` (Server-Sent Events), on the metrics listener.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeb {
    /// Serve the dashboard (default false).
    pub enabled: Option<bool>,
    /// Address and port when `[metrics]` has none (default
    /// "127.0.0.1:9736"); the same as `[metrics] listen` otherwise.
    pub listen: Option<Sp<String>>,
    /// A bearer token the page and API ask for (`?token=` or
    /// `Authorization: Bearer`).
    pub token: Option<Sp<String>>,
    /// HTTP basic authentication: user name…
    pub user: Option<Sp<String>>,
    /// …and password.
    pub password: Option<Sp<String>>,
    /// Serve on an address other than loopback with no token or password
    /// (default false: refused).
    pub public: Option<bool>,
}

/// `[packets]`: a packet source on a schedule, whose counts per local
/// address `kind = "packets"` rules decide on ("LAN abusers").
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPackets {
    /// Capture packets (default false). Needs CAP_NET_RAW.
    pub enabled: Option<bool>,
    /// Interface to capture on ("any" for all; default: the default
    /// route's).
    pub interface: Option<Sp<String>>,
    /// Local networks whose addresses are counted and may be acted on
    /// (default: the private ranges).
    pub local: Option<Vec<Sp<String>>>,
    /// How long each sample captures (default "10s").
    pub sample: Option<Sp<String>>,
    /// How often a sample starts (default "5m"); the same as `sample` for
    /// a continuous capture.
    pub every: Option<Sp<String>>,
    /// TCP ports skipped in the kernel (default 22, 80, 443).
    pub skip_tcp: Option<Vec<u16>>,
    /// UDP ports skipped in the kernel (default 443).
    pub skip_udp: Option<Vec<u16>>,
    /// Notify channels that get the "LAN abusers" list after a sample in
    /// which an address sent `report_over` BitTorrent packets or more.
    pub report_to: Option<Vec<Sp<String>>>,
    /// Default 100.
    pub report_over: Option<u64>,
}

/// `[farm]`: nodes share their bans through Redis.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFarm {
    /// redis://[user:password@]host[:port][/db], or rediss:// for TLS.
    /// With `sentinel`, its user, password, database and scheme are used
    /// for the master the sentinels name; its host and port are not.
    pub redis: Option<Sp<String>>,
    /// Sentinels to ask for the master (`redis://host:26379`, with
    /// `user:password@` when they need it), for failover: a node asks
    /// them again whenever its connection to the master breaks.
    pub sentinel: Option<Vec<Sp<String>>>,
    /// The master's name in the sentinels' configuration (default
    /// "mymaster").
    pub sentinel_master: Option<Sp<String>>,
    /// With rediss:// URLs: a PEM file of the CA that signed Redis's
    /// certificate, for a private CA (default: the public roots).
    pub tls_ca: Option<Sp<String>>,
    /// With rediss:// URLs: this node's certificate (PEM), for a Redis that
    /// asks clients for one (`tls-auth-clients`); needs `tls_key`.
    pub tls_cert: Option<Sp<String>>,
    /// The key of `tls_cert` (PEM).
    pub tls_key: Option<Sp<String>>,
    /// Key prefix, so several farms can share one Redis (default
    /// "webfence").
    pub name: Option<Sp<String>>,
    /// This node's name (default: the host name).
    pub node: Option<Sp<String>>,
    /// The widest IPv4 network a ban read from the farm may cover (default
    /// 16): a poisoned stream cannot ban 0.0.0.0/0.
    pub min_prefix_v4: Option<u8>,
    /// The same for IPv6 (default 32).
    pub min_prefix_v6: Option<u8>,
}

/// Every file, layered.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub sources: SourceFiles,
    /// false: start from no rules instead of the built-in ruleset.
    pub default_rules: Option<Sp<bool>>,
    pub sites: Vec<Sp<String>>,
    pub allowlist: RawAllowlist,
    pub state: RawState,
    pub escalation: RawEscalation,
    pub daemon: RawDaemon,
    pub scores: BTreeMap<String, (Origin, RawScore)>,
    pub actions: BTreeMap<String, (Origin, RawAction)>,
    /// In the order first defined; a later file replaces a guard whole.
    pub guards: Vec<(Sp<String>, RawGuard)>,
    pub limits: Option<(Origin, RawLimits)>,
    /// A later file replaces a channel whole.
    pub notify: Vec<(Sp<String>, RawNotify)>,
    pub metrics: Option<(Origin, RawMetrics)>,
    pub web: Option<(Origin, RawWeb)>,
    pub packets: Option<(Origin, RawPackets)>,
    pub farm: Option<(Origin, RawFarm)>,
    pub digests: Vec<(Sp<String>, RawDigest)>,
    pub blocklists: Vec<(Sp<String>, RawBlocklist)>,
    pub crawlers: RawCrawlers,
    /// In the order first defined.
    pub rules: Vec<(Sp<String>, RawRule)>,
    /// The files read, for `webfence check` and `status`.
    pub files: Vec<String>,
}

const SECTIONS: &str = "default_rules, sites, allowlist, state, escalation, daemon, scores, actions, rules, guards, limits, notify, metrics, web, packets, farm, digest, blocklists, crawlers";

fn de_error(
    sources: &SourceFiles,
    file: usize,
    fallback: &std::ops::Range<usize>,
    e: toml::de::Error,
) -> ConfigError {
    let span = e.span().unwrap_or_else(|| fallback.clone());
    sources.error(
        Origin {
            file,
            start: span.start,
            end: span.end,
        },
        plain_words(&e.message().trim_end().replace('\n', " ")),
    )
}

/// serde speaks Rust ("expected a sequence", "expected i64", "unknown
/// field `limt`, expected one of ..."); an admin reads TOML. This says the
/// same in TOML's words and suggests the nearest known key for a typo.
fn plain_words(message: &str) -> String {
    let mut m = message.to_string();
    for (rust, toml) in [
        (
            "expected a sequence",
            "expected a list like [\"/var/log/nginx/access.log\"]",
        ),
        ("invalid type: sequence", "invalid type: a list"),
        ("invalid type: map", "invalid type: a table"),
        ("expected a map", "expected a table"),
        ("expected struct", "expected a table"),
        ("expected i64", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected usize", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("invalid type: integer", "invalid type: a number"),
        ("invalid type: floating point", "invalid type: a number"),
        ("invalid type: string", "invalid type: text"),
        ("expected a string", "expected text in quotes"),
    ] {
        m = m.replace(rust, toml);
    }
    if let Some(rest) = m.strip_prefix("unknown field `") {
        if let Some((key, known)) = rest.split_once("`, expected ") {
            let candidates: Vec<&str> = known
                .trim_start_matches("one of ")
                .split(", ")
                .map(|k| k.trim_matches('`'))
                .collect();
            let mut out = format!("unknown key '{key}'");
            if let Some(near) = nearest(key, &candidates) {
                out.push_str(&format!(" (did you mean '{near}'?)"));
            }
            out.push_str(&format!("; known keys: {}", candidates.join(", ")));
            return out;
        }
    }
    m
}

/// Why a name from the configuration (a rule's, a guard's, a list's)
/// cannot be used, if it cannot: names reach hooks, environment variables
/// and kernel object names, so they are kept to a safe alphabet.
pub fn name_error(what: &str, name: &str, max: usize) -> Option<String> {
    let safe = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    (!safe).then(|| {
        format!(
            "invalid {what} name '{}': use up to {max} letters, digits, '-', '_' or '.'",
            crate::log::parse::escape_for_display(name.as_bytes())
        )
    })
}

/// The known key a typo most likely meant: within two edits (one for
/// short keys), else none.
pub fn nearest<'a>(typo: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = if typo.len() <= 4 { 1 } else { 2 };
    known
        .iter()
        // Transpositions count as one edit: "deamon" is one swap away.
        .map(|k| (strsim::damerau_levenshtein(typo, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn section<T: for<'de> Deserialize<'de>>(
    value: toml::Spanned<DeValue<'_>>,
    sources: &SourceFiles,
    file: usize,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let span = value.span();
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(de_error(sources, file, &span, e));
            None
        }
    }
}

/// A table of named sub-tables (`[rules.NAME]`, `[scores.NAME]`), each
/// deserialized on its own so one bad rule does not hide the next.
fn named<T: for<'de> Deserialize<'de>>(
    value: toml::Spanned<DeValue<'_>>,
    sources: &SourceFiles,
    file: usize,
    errors: &mut Vec<ConfigError>,
) -> Vec<(Sp<String>, T)> {
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        errors.push(sources.error(
            Origin {
                file,
                start: span.start,
                end: span.end,
            },
            "expected a table of named entries, such as [rules.my-rule]",
        ));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in table {
        let ks = key.span();
        let name = Sp {
            value: key.into_inner().to_string(),
            at: Origin {
                file,
                start: ks.start,
                end: ks.end,
            },
        };
        if let Some(v) = section::<T>(value, sources, file, errors) {
            out.push((name, v));
        }
    }
    out.sort_by_key(|(n, _)| n.at.start);
    out
}

impl Config {
    /// Reads one file's text and layers it on top.
    fn layer_text(&mut self, name: String, text: String, errors: &mut Vec<ConfigError>) {
        // A sysfence configuration is read as the guards it means.
        let (name, text) = if super::guard::sysfence::looks_like_sysfence(&text) {
            match super::guard::sysfence::to_toml(&name, &text) {
                Ok(toml) => (format!("{name} (read as sysfence rules)"), toml),
                Err(es) => {
                    for e in es {
                        errors.push(ConfigError {
                            file: name.clone(),
                            line: e.line,
                            column: e.column,
                            message: e.message,
                        });
                    }
                    return;
                }
            }
        } else {
            (name, text)
        };
        let file = self.sources.add(name.clone(), text);
        self.files.push(name);
        CURRENT_FILE.with(|c| c.set(file));
        let sources = self.sources.clone();
        let text = match sources.files.get(file) {
            Some((_, t)) => t.as_str(),
            None => return,
        };
        let (root, parse_errors) = DeTable::parse_recoverable(text);
        for e in parse_errors {
            errors.push(de_error(&sources, file, &(0..0), e));
        }
        for (key, value) in root.into_inner() {
            let ks = key.span();
            let at = Origin {
                file,
                start: ks.start,
                end: ks.end,
            };
            match key.get_ref().as_ref() {
                "default_rules" => {
                    if let Some(b) = section::<Sp<bool>>(value, &sources, file, errors) {
                        self.default_rules = Some(b);
                    }
                }
                "sites" => {
                    if let Some(s) = section::<RawSites>(value, &sources, file, errors) {
                        self.sites.extend(s.names.unwrap_or_default());
                    }
                }
                "allowlist" => {
                    if let Some(a) = section::<RawAllowlist>(value, &sources, file, errors) {
                        let cur = &mut self.allowlist;
                        if let Some(v) = a.addresses {
                            cur.addresses.get_or_insert_with(Vec::new).extend(v);
                        }
                        if let Some(v) = a.hosts {
                            cur.hosts.get_or_insert_with(Vec::new).extend(v);
                        }
                        if a.resolve_every.is_some() {
                            cur.resolve_every = a.resolve_every;
                        }
                        if a.local.is_some() {
                            cur.local = a.local;
                        }
                    }
                }
                "state" => {
                    if let Some(s) = section::<RawState>(value, &sources, file, errors) {
                        if s.memory_cap.is_some() {
                            self.state.memory_cap = s.memory_cap;
                        }
                    }
                }
                "escalation" => {
                    if let Some(s) = section::<RawEscalation>(value, &sources, file, errors) {
                        let cur = &mut self.escalation;
                        if s.factor.is_some() {
                            cur.factor = s.factor;
                        }
                        if s.max.is_some() {
                            cur.max = s.max;
                        }
                        if s.remember.is_some() {
                            cur.remember = s.remember;
                        }
                    }
                }
                "daemon" => {
                    if let Some(d) = section::<RawDaemon>(value, &sources, file, errors) {
                        self.daemon.layer(d);
                    }
                }
                "scores" => {
                    for (name, s) in named::<RawScore>(value, &sources, file, errors) {
                        let entry = self
                            .scores
                            .entry(name.value)
                            .or_insert_with(|| (name.at, RawScore::default()));
                        let cur = &mut entry.1;
                        if s.threshold.is_some() {
                            cur.threshold = s.threshold;
                        }
                        if s.decay.is_some() {
                            cur.decay = s.decay;
                        }
                        if s.action.is_some() {
                            cur.action = s.action;
                        }
                        if s.duration.is_some() {
                            cur.duration = s.duration;
                        }
                    }
                }
                "actions" => {
                    for (name, a) in named::<RawAction>(value, &sources, file, errors) {
                        self.actions.insert(name.value, (name.at, a));
                    }
                }
                "guards" => {
                    for (name, g) in named::<RawGuard>(value, &sources, file, errors) {
                        match self.guards.iter_mut().find(|(n, _)| n.value == name.value) {
                            Some(cur) => *cur = (name, g),
                            None => self.guards.push((name, g)),
                        }
                    }
                }
                "notify" => {
                    for (name, n) in named::<RawNotify>(value, &sources, file, errors) {
                        match self.notify.iter_mut().find(|(x, _)| x.value == name.value) {
                            Some(cur) => *cur = (name, n),
                            None => self.notify.push((name, n)),
                        }
                    }
                }
                "crawlers" => {
                    if let Some(c) = section::<RawCrawlers>(value, &sources, file, errors) {
                        if c.verify.is_some() {
                            self.crawlers.verify = c.verify;
                        }
                    }
                }
                "blocklists" => {
                    for (name, n) in named::<RawBlocklist>(value, &sources, file, errors) {
                        match self
                            .blocklists
                            .iter_mut()
                            .find(|(x, _)| x.value == name.value)
                        {
                            Some(cur) => *cur = (name, n),
                            None => self.blocklists.push((name, n)),
                        }
                    }
                }
                "digest" => {
                    for (name, n) in named::<RawDigest>(value, &sources, file, errors) {
                        match self.digests.iter_mut().find(|(x, _)| x.value == name.value) {
                            Some(cur) => *cur = (name, n),
                            None => self.digests.push((name, n)),
                        }
                    }
                }
                "metrics" => {
                    if let Some(m) = section::<RawMetrics>(value, &sources, file, errors) {
                        self.metrics = Some((at, m));
                    }
                }
                "web" => {
                    if let Some(w) = section::<RawWeb>(value, &sources, file, errors) {
                        self.web = Some((at, w));
                    }
                }
                "packets" => {
                    if let Some(p) = section::<RawPackets>(value, &sources, file, errors) {
                        self.packets = Some((at, p));
                    }
                }
                "farm" => {
                    if let Some(f) = section::<RawFarm>(value, &sources, file, errors) {
                        self.farm = Some((at, f));
                    }
                }
                "limits" => {
                    if let Some(l) = section::<RawLimits>(value, &sources, file, errors) {
                        self.limits = Some((at, l));
                    }
                }
                "rules" => {
                    for (name, r) in named::<RawRule>(value, &sources, file, errors) {
                        match self.rules.iter_mut().find(|(n, _)| n.value == name.value) {
                            Some((_, cur)) => cur.layer(r),
                            None => self.rules.push((name, r)),
                        }
                    }
                }
                other => {
                    let known: Vec<&str> = SECTIONS.split(", ").collect();
                    let hint = nearest(other, &known)
                        .map(|k| format!("did you mean '{k}'? "))
                        .unwrap_or_default();
                    errors.push(sources.error(
                        at,
                        format!("unknown key '{other}' ({hint}expected one of {SECTIONS})"),
                    ))
                }
            }
        }
    }

    /// Layers files in order on top of the built-in ruleset.
    pub fn load(paths: &[PathBuf]) -> Result<Config, ConfigErrors> {
        let mut texts = Vec::new();
        let mut errors = Vec::new();
        for p in paths {
            match std::fs::read_to_string(p) {
                Ok(t) => texts.push((p.display().to_string(), t)),
                Err(e) => errors.push(ConfigError {
                    file: p.display().to_string(),
                    line: 0,
                    column: 0,
                    message: format!("cannot read the configuration: {e}"),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Self::from_texts(texts)
    }

    /// Layers named texts in order on top of the built-in ruleset.
    pub fn from_texts(texts: Vec<(String, String)>) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let mut user = Config::default();
        for (name, text) in texts {
            user.layer_text(name, text, &mut errors);
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        if user.default_rules.as_ref().is_some_and(|b| !b.value) {
            return Ok(user);
        }
        // Re-read on top of the built-in rules so the built-in file is layer 0.
        let mut config = Config::default();
        config.layer_text(
            BUILTIN_NAME.to_string(),
            BUILTIN_RULES.to_string(),
            &mut errors,
        );
        config.files.clear();
        let Config { sources, .. } = user;
        for i in 0..sources.files.len() {
            let (name, text) = sources.files[i].clone();
            config.layer_text(name, text, &mut errors);
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// The built-in ruleset alone.
    pub fn builtin() -> Config {
        Self::from_texts(Vec::new()).unwrap_or_default()
    }

    /// `-c` files, or the default path when it exists, or the built-in rules.
    pub fn load_default_or(paths: &[PathBuf]) -> Result<Config, ConfigErrors> {
        if !paths.is_empty() {
            return Self::load(paths);
        }
        let default = Path::new(DEFAULT_PATH);
        if default.exists() {
            Self::load(&[default.to_path_buf()])
        } else {
            Ok(Self::builtin())
        }
    }

    /// Resolves a pattern file path relative to the config file naming it.
    pub fn relative_path(&self, at: Origin, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        match self.sources.path(at.file).and_then(Path::parent) {
            Some(dir) => dir.join(p),
            None => p.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigErrors> {
        Config::from_texts(vec![("site.toml".into(), text.into())])
    }

    #[test]
    fn builtin_rules_parse() {
        let c = Config::builtin();
        assert!(c.rules.len() >= 8, "{:?}", c.rules.len());
        assert!(c.rules.iter().any(|(n, _)| n.value == "identical-requests"));
    }

    #[test]
    fn unknown_keys_are_errors_with_line_and_column() {
        let err = load("[rules.x]\nkind = \"rate\"\nlimt = 45\n").unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        let e = &err.0[0];
        assert_eq!((e.file.as_str(), e.line, e.column), ("site.toml", 3, 1));
        assert!(
            e.message
                .contains("unknown key 'limt' (did you mean 'limit'?)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn every_bad_rule_is_reported() {
        let err = load(
            "bogus = 1\n[rules.a]\nkind = \"rat\"\n[rules.b]\nlimit = \"many\"\n[state]\nmemory_cap = 3\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = err.0.iter().map(|e| e.line).collect();
        assert_eq!(lines.len(), 4, "{err}");
        for want in [1, 3, 5, 7] {
            assert!(lines.contains(&want), "line {want} missing from {err}");
        }
        assert!(err.to_string().contains("unknown key 'bogus'"));
        assert!(err.to_string().contains("rat"));
    }

    #[test]
    fn syntax_errors_are_located() {
        let err = load("[rules.a]\nkind = rate\n").unwrap_err();
        assert_eq!(err.0[0].line, 2, "{err}");
    }

    #[test]
    fn later_files_patch_rules_field_by_field() {
        let c = Config::from_texts(vec![
            (
                "a.toml".into(),
                "[rules.x]\nkind = \"rate\"\nlimit = 5\nwindow = \"10s\"\n".into(),
            ),
            (
                "b.toml".into(),
                "[rules.x]\nlimit = 7\n[rules.identical-requests]\nenabled = false\n".into(),
            ),
        ])
        .unwrap();
        let (_, x) = c.rules.iter().find(|(n, _)| n.value == "x").unwrap();
        assert_eq!(x.limit.as_ref().unwrap().value, 7);
        assert_eq!(x.window.as_ref().unwrap().value, "10s");
        let (_, ir) = c
            .rules
            .iter()
            .find(|(n, _)| n.value == "identical-requests")
            .unwrap();
        assert_eq!(ir.enabled, Some(false));
        assert_eq!(c.files, vec!["a.toml", "b.toml"]);
    }

    #[test]
    fn default_rules_can_be_dropped() {
        let c = load("default_rules = false\n[rules.only]\nkind = \"match\"\n").unwrap();
        assert_eq!(c.rules.len(), 1);
    }

    #[test]
    fn patterns_take_a_string_or_a_list() {
        let c = load(
            "default_rules = false\n[rules.m]\nkind = \"match\"\nmatch.path.prefix = \"/a\"\nmatch.user_agent.contains = [\"x\", \"y\"]\n",
        )
        .unwrap();
        let m = c.rules[0].1.matches.as_ref().unwrap();
        assert_eq!(m.path.as_ref().unwrap().prefix.as_ref().unwrap().0.len(), 1);
        assert_eq!(
            m.user_agent
                .as_ref()
                .unwrap()
                .contains
                .as_ref()
                .unwrap()
                .0
                .len(),
            2
        );
    }

    #[test]
    fn spans_point_at_values() {
        let c =
            load("default_rules = false\n[rules.m]\nkind = \"rate\"\nwindow = \"ten\"\n").unwrap();
        let w = c.rules[0].1.window.as_ref().unwrap();
        assert_eq!(c.sources.locate(w.at), (4, 10));
        assert_eq!(c.sources.excerpt(w.at), "\"ten\"");
    }
}
