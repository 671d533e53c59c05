//! `[farm]`: nodes of a web farm share their bans through Redis.
//!
//! Every ban or unban a node's enforcer makes (a rule's, a guard's, a
//! manual one) is published: appended to a stream (`NAME:bans`, trimmed to
//! its last [`STREAM_MAX`] entries) and, for a ban, stored in a hash of the
//! bans in force (`NAME:active`, subject → the ban, pruned of expired
//! ones). Every other node reads the stream as it grows (`XREAD BLOCK`) and
//! applies what it reads through its own enforcer, with the origin node in
//! its ledger. A node that starts reads the hash first (the bans in force),
//! then follows the stream from where the hash was read.
//!
//! Guarantees:
//! - bans keep their absolute expiry: a ban read again (a reconnect, the
//!   hash and the stream both holding it) changes nothing, and a later
//!   expiry from the deciding node wins;
//! - a published ban is checked like a manual one: never an allowlisted
//!   address, never a network wider than `min_prefix_v4` / `min_prefix_v6`,
//!   never an expiry in the past or beyond 30 days;
//! - Redis down or slow never delays a local ban: publishing happens on a
//!   thread of its own from an unbounded channel, into a queue bounded at
//!   [`QUEUE_MAX`] that is sent when Redis is back (the oldest dropped and
//!   counted past it), and the node says `farm: degraded` in `status`,
//!   `/healthz` and the log meanwhile;
//! - wrong credentials stop `webfence run` at the start with Redis's own
//!   words.
//!
//! Shared counters (`scope = "farm"` rules) are in [`counters`].

pub mod counters;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Commands;
use serde::{Deserialize, Serialize};

use super::enforcer::{Enforcer, EngineUpdate, wall_ms};
use crate::daemon::control::LoopStatus;
use crate::daemon::lock;
use crate::detect::addr::Subject;
use crate::detect::config::{Config, ConfigError};
use crate::enforce::ledger::NewBan;

/// Entries the stream keeps.
pub const STREAM_MAX: usize = 200_000;
/// Operations waiting for Redis, at most.
pub const QUEUE_MAX: usize = 100_000;
/// A published ban lasting longer than this is refused.
const MAX_BAN_MS: i64 = 30 * 86_400_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FarmSettings {
    /// The URL with its password: never shown.
    pub url: String,
    /// The URL as shown (password masked).
    pub shown: String,
    pub name: String,
    pub node: String,
    pub min_prefix_v4: u8,
    pub min_prefix_v6: u8,
    /// Sentinels' URLs, with their passwords; empty without failover.
    pub sentinels: Vec<String>,
    /// The master's name in the sentinels' configuration.
    pub sentinel_master: String,
    /// Certificates for rediss:// connections.
    pub tls: FarmTls,
}

/// Certificates for rediss:// connections (the master's and the
/// sentinels'), read when the configuration is.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct FarmTls {
    /// PEM: the CA that signed Redis's certificate; else the public roots.
    pub ca: Option<Vec<u8>>,
    /// PEM: this node's certificate and key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// Never the key's bytes, in a log or a panic message.
impl std::fmt::Debug for FarmTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FarmTls")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

/// Reads `[farm]`'s TLS files; errors are located at their setting.
fn read_tls(
    f: &crate::detect::config::RawFarm,
    url: &str,
    err: &mut impl FnMut(crate::detect::config::Origin, String),
) -> Option<FarmTls> {
    let mut read = |setting: &Option<crate::detect::config::Sp<String>>, what: &str| {
        let s = setting.as_ref()?;
        match std::fs::read(&s.value) {
            Ok(bytes) => Some(Ok(bytes)),
            Err(e) => {
                err(s.at, format!("cannot read {what} '{}': {e}", s.value));
                Some(Err(()))
            }
        }
    };
    let ca = read(&f.tls_ca, "tls_ca");
    let cert = read(&f.tls_cert, "tls_cert");
    let key = read(&f.tls_key, "tls_key");
    let any = [&f.tls_ca, &f.tls_cert, &f.tls_key]
        .into_iter()
        .flatten()
        .next();
    if let Some(first) = any
        && !url.starts_with("rediss://")
    {
        err(
            first.at,
            "tls_ca, tls_cert and tls_key are for a rediss:// URL; redis is not one".into(),
        );
        return None;
    }
    let client = match (cert, key) {
        (None, None) => None,
        (Some(Ok(c)), Some(Ok(k))) => Some((c, k)),
        (Some(Err(())), _) | (_, Some(Err(()))) => return None,
        (Some(_), None) | (None, Some(_)) => {
            let at = f.tls_cert.as_ref().or(f.tls_key.as_ref()).map(|s| s.at)?;
            err(at, "tls_cert and tls_key go together".into());
            return None;
        }
    };
    let ca = match ca {
        Some(Ok(c)) => Some(c),
        Some(Err(())) => return None,
        None => None,
    };
    Some(FarmTls { ca, client })
}

/// `[farm]` checked; `None` when absent.
pub fn compile(config: &Config, errors: &mut Vec<ConfigError>) -> Option<FarmSettings> {
    let (at, f) = config.farm.as_ref()?;
    let mut err = |at, msg: String| errors.push(config.sources.error(at, msg));
    let Some(url) = &f.redis else {
        err(
            *at,
            "[farm] needs redis = \"redis://[user:password@]host:port/db\"".into(),
        );
        return None;
    };
    if let Err(e) = redis::Client::open(url.value.as_str()) {
        err(url.at, format!("invalid redis URL: {e}"));
        return None;
    }
    let name = f
        .name
        .as_ref()
        .map_or("webfence".to_string(), |n| n.value.clone());
    if name.is_empty() || name.contains(char::is_whitespace) {
        if let Some(n) = &f.name {
            err(
                n.at,
                format!(
                    "invalid farm name '{}': one word, used as the key prefix",
                    n.value
                ),
            );
        }
        return None;
    }
    let node = f
        .node
        .as_ref()
        .map(|n| n.value.clone())
        .unwrap_or_else(super::notify::host_name);
    let mut sentinels = Vec::new();
    for sentinel in f.sentinel.iter().flatten() {
        match redis::Client::open(sentinel.value.as_str()) {
            Ok(_) => sentinels.push(sentinel.value.clone()),
            Err(e) => {
                err(sentinel.at, format!("invalid sentinel URL: {e}"));
                return None;
            }
        }
    }
    let sentinel_master = f
        .sentinel_master
        .as_ref()
        .map_or("mymaster".to_string(), |m| m.value.clone());
    let tls = read_tls(f, &url.value, &mut err)?;
    let mut shown = mask(&url.value);
    if !sentinels.is_empty() {
        let names: Vec<String> = sentinels.iter().map(|u| mask(u)).collect();
        shown = format!(
            "master '{sentinel_master}' of sentinels {} ({shown})",
            names.join(", ")
        );
    }
    Some(FarmSettings {
        sentinels,
        sentinel_master,
        tls,
        shown,
        url: url.value.clone(),
        name,
        node,
        min_prefix_v4: f.min_prefix_v4.unwrap_or(16).clamp(1, 32),
        min_prefix_v6: f.min_prefix_v6.unwrap_or(32).clamp(1, 128),
    })
}

/// What `scope = "farm"` rules do without `[farm]`, said by `check`, at
/// the start and by a reload: `None` when there is nothing to say.
pub fn unshared_rules(
    set: &crate::detect::rules::RuleSet,
    farm: Option<&FarmSettings>,
) -> Option<String> {
    if farm.is_some() {
        return None;
    }
    let names: Vec<&str> = set
        .rules
        .iter()
        .filter(|r| r.farm)
        .map(|r| r.name.as_str())
        .collect();
    let (rule, has) = match names.len() {
        0 => return None,
        1 => ("rule", "has"),
        _ => ("rules", "have"),
    };
    Some(format!(
        "{rule} {} {has} scope = \"farm\" without [farm]: counted on this node only",
        names.join(", ")
    ))
}

/// The URL with its password replaced by `***`.
fn mask(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => format!("{}***{}", &url[..s + 3], &url[at..]),
            }
        }
        _ => url.to_string(),
    }
}

/// What a node publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// "ban" or "unban".
    pub op: String,
    pub node: String,
    pub subject: String,
    #[serde(default)]
    pub rule: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub started_ms: i64,
    #[serde(default)]
    pub expires_ms: i64,
    /// Wall-clock milliseconds when published (replication lag).
    #[serde(default)]
    pub at_ms: i64,
    /// Bans of this subject remembered across the farm, this one included
    /// (escalation): 1 for a first ban.
    #[serde(default)]
    pub count: u32,
}

/// What the enforcer hands the farm.
#[derive(Debug, Clone)]
pub enum FarmOp {
    Ban(NewBan),
    Unban(Subject),
}

/// The farm's figures for `status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FarmStatus {
    pub node: String,
    pub redis: String,
    /// "connected" or "degraded".
    pub state: String,
    pub error: Option<String>,
    pub published: u64,
    pub applied: u64,
    pub refused: u64,
    pub queued: usize,
    pub dropped: u64,
    /// Milliseconds between the last applied ban's publication and its
    /// application here.
    pub last_lag_ms: Option<i64>,
    /// Nodes seen and their last heartbeat (wall ms).
    pub nodes: Vec<(String, i64)>,
    /// Bans in force across the farm, as Redis counted them last.
    pub farm_bans: Option<u64>,
    /// Shared counts, with `scope = "farm"` rules.
    pub counts: Option<counters::CountStatus>,
    /// The farm's name (the key prefix).
    pub farm: String,
    /// Other farms this Redis holds, when no other node of this one was
    /// seen: a mistyped `name` shares nothing, and says so.
    pub other_farms: Vec<String>,
}

/// Changes the farm's figures in `status`.
fn set_farm(status: &Mutex<LoopStatus>, f: impl FnOnce(&mut FarmStatus)) {
    if let Some(fs) = lock(status).farm.as_mut() {
        f(fs);
    }
}

fn keys(name: &str) -> (String, String, String) {
    (
        format!("{name}:bans"),
        format!("{name}:active"),
        format!("{name}:nodes"),
    )
}

/// The farm's ban history, for escalation: subject → "COUNT:LAST_MS".
fn history_key(name: &str) -> String {
    format!("{name}:history")
}

/// How long the farm's history keeps a subject banned no more.
const HISTORY_MS: i64 = 90 * 86_400_000;

/// How often one node of the farm drops expired bans and forgotten
/// history from Redis.
const PRUNE_EVERY: Duration = Duration::from_secs(300);

/// Deletes the fields of hash `key` whose value `gone` says so, walking it
/// with `HSCAN` (a large hash is never read in one reply).
fn prune_hash(
    c: &mut redis::Connection,
    key: &str,
    gone: impl Fn(&str) -> bool,
) -> redis::RedisResult<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
            .arg(key)
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(c)?;
        let dead: Vec<&String> = page
            .iter()
            .filter(|(_, v)| gone(v))
            .map(|(f, _)| f)
            .collect();
        if !dead.is_empty() {
            let _: () = c.hdel(key, dead)?;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(());
        }
    }
}

/// "COUNT:LAST_MS" read back; `None` for anything else.
fn parse_history(v: &str) -> Option<(u32, i64)> {
    let (n, at) = v.split_once(':')?;
    Some((n.parse().ok()?, at.parse().ok()?))
}

/// Bans remembered from the decision's evidence (its `repeat`, the earlier
/// bans its engine knew, plus this one).
fn count_of(b: &NewBan) -> u32 {
    b.evidence
        .as_deref()
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .and_then(|v| v.get("repeat")?.as_u64())
        .map_or(1, |r| (r as u32).saturating_add(1))
}

fn connect_url(url: &str, tls: &FarmTls) -> redis::RedisResult<redis::Connection> {
    let client = if url.starts_with("rediss://") && (tls.ca.is_some() || tls.client.is_some()) {
        redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: tls
                    .client
                    .as_ref()
                    .map(|(cert, key)| redis::ClientTlsConfig {
                        client_cert: cert.clone(),
                        client_key: key.clone(),
                    }),
                root_cert: tls.ca.clone(),
            },
        )?
    } else {
        redis::Client::open(url)?
    };
    let mut con = client.get_connection_with_timeout(Duration::from_secs(2))?;
    con.set_write_timeout(Some(Duration::from_secs(2)))?;
    con.set_read_timeout(Some(Duration::from_secs(2)))?;
    // A ping proves the credentials and the database.
    redis::cmd("PING").query::<String>(&mut con)?;
    Ok(con)
}

/// A connection to the farm's Redis: the URL's server, or with sentinels
/// the master they name now.
pub(super) fn connect(s: &FarmSettings) -> redis::RedisResult<redis::Connection> {
    if s.sentinels.is_empty() {
        return connect_url(&s.url, &s.tls);
    }
    connect_through_sentinels(s)
}

/// Asks each sentinel in turn for the master and connects to it with the
/// URL's credentials, database and scheme. Written here rather than with
/// the redis crate's `sentinel` client because that one connects without
/// timeouts: one black-holed sentinel would hang the farm's threads.
fn connect_through_sentinels(s: &FarmSettings) -> redis::RedisResult<redis::Connection> {
    let mut last: Option<redis::RedisError> = None;
    for sentinel in &s.sentinels {
        let answer = (|| -> redis::RedisResult<Option<(String, u16)>> {
            let mut con = connect_url(sentinel, &s.tls)?;
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&s.sentinel_master)
                .query(&mut con)
        })();
        let (host, port) = match answer {
            Ok(Some(addr)) => addr,
            Ok(None) => {
                last = Some(redis::RedisError::from((
                    redis::ErrorKind::MasterNameNotFoundBySentinel,
                    "the sentinel does not know this master",
                    format!("{} at {}", s.sentinel_master, mask(sentinel)),
                )));
                continue;
            }
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let mut con = match connect_url(&with_address(&s.url, &host, port), &s.tls) {
            Ok(c) => c,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        // Just after a failover a sentinel may still name the old master,
        // back as a replica: writing there would fail later, so not here.
        let role: redis::RedisResult<Vec<redis::Value>> = redis::cmd("ROLE").query(&mut con);
        match role.as_deref() {
            Ok([redis::Value::BulkString(r), ..]) if r.as_slice() == b"master" => {
                return Ok(con);
            }
            Ok(_) => {
                last = Some(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "the server a sentinel named is not a master",
                    format!("{host}:{port}"),
                )))
            }
            Err(_) => last = role.err(),
        }
    }
    Err(last.unwrap_or_else(|| {
        redis::RedisError::from((
            redis::ErrorKind::EmptySentinelList,
            "no sentinel configured",
        ))
    }))
}

/// The other farms in this Redis (their `NAME:nodes` hashes), at most
/// 20, looking at no more than 50,000 keys: a shared Redis may hold many.
fn other_farms(c: &mut redis::Connection, name: &str) -> redis::RedisResult<Vec<String>> {
    let mut found = std::collections::BTreeSet::new();
    let mut cursor: u64 = 0;
    for _ in 0..50 {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("*:nodes")
            .arg("COUNT")
            .arg(1000)
            .query(c)?;
        for k in keys {
            if let Some(farm) = k.strip_suffix(":nodes")
                && farm != name
                && found.len() < 20
            {
                found.insert(farm.to_string());
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(found.into_iter().collect())
}

/// `url` with its host and port replaced (user, password, database and
/// scheme kept).
fn with_address(url: &str, host: &str, port: u16) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return format!("redis://{host}:{port}");
    };
    let rest = &url[scheme_end..];
    let path_at = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..path_at];
    let creds = authority.rfind('@').map_or("", |at| &authority[..=at]);
    format!(
        "{}{creds}{host}:{port}{}",
        &url[..scheme_end],
        &rest[path_at..]
    )
}

/// At the start: wrong credentials are a configuration error, said now;
/// Redis unreachable is not (the node starts degraded and catches up).
pub fn check_credentials(s: &FarmSettings) -> Result<(), String> {
    match connect(s) {
        Ok(_) => Ok(()),
        Err(e) if is_auth(&e) => Err(format!(
            "Redis at {} refused this node's credentials: {e}",
            s.shown
        )),
        Err(_) => Ok(()),
    }
}

fn is_auth(e: &redis::RedisError) -> bool {
    let text = e.to_string();
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
        || text.contains("NOPERM")
}

pub struct Farm {
    pub settings: FarmSettings,
    pub enforcer: Arc<Mutex<Enforcer>>,
    pub status: Arc<Mutex<LoopStatus>>,
    pub stop: &'static AtomicBool,
}

impl Farm {
    /// Starts the publisher and the follower; `outbox` is what the
    /// enforcer sends.
    pub fn start(self, outbox: Receiver<FarmOp>) -> std::io::Result<()> {
        lock(&self.status).farm = Some(FarmStatus {
            node: self.settings.node.clone(),
            redis: self.settings.shown.clone(),
            farm: self.settings.name.clone(),
            state: "connecting".into(),
            ..FarmStatus::default()
        });
        let shared = Arc::new(self);
        let publisher = shared.clone();
        std::thread::Builder::new()
            .name("farm-publish".into())
            .spawn(move || publisher.publish_loop(outbox))?;
        std::thread::Builder::new()
            .name("farm-follow".into())
            .spawn(move || shared.follow_loop())?;
        Ok(())
    }

    fn set_state(&self, f: impl FnOnce(&mut FarmStatus)) {
        set_farm(&self.status, f);
    }

    fn degraded(&self, was: &mut bool, e: &redis::RedisError) {
        if !*was {
            tracing::error!(redis = %self.settings.shown, error = %e,
                "farm degraded: Redis unreachable; bans are decided and enforced here, and queued for the farm");
        }
        *was = true;
        let text = e.to_string();
        self.set_state(|f| {
            f.state = "degraded".into();
            f.error = Some(text);
        });
    }

    fn recovered(&self, was: &mut bool) {
        if *was {
            tracing::info!(redis = %self.settings.shown, "farm connected again");
        }
        *was = false;
        self.set_state(|f| {
            f.state = "connected".into();
            f.error = None;
        });
    }

    /// Sends what the enforcer decided, in order; keeps it while Redis is
    /// away.
    fn publish_loop(&self, outbox: Receiver<FarmOp>) {
        let (stream, active, nodes) = keys(&self.settings.name);
        let history = history_key(&self.settings.name);
        let mut history_sha = String::new();
        let mut queue: VecDeque<Published> = VecDeque::new();
        let mut con: Option<redis::Connection> = None;
        let mut down = false;
        // None: due now. (`Instant::now() - 60 s` panics on a machine up
        // for less than a minute.)
        let mut last_beat: Option<Instant> = None;
        // A prune soon after the start: a node back after a long stop finds
        // the expired bans gone before it counts the farm's.
        let mut last_prune: Option<Instant> = None;
        let mut looked_for_farms = false;
        while !self.stop.load(Ordering::SeqCst) {
            match outbox.recv_timeout(Duration::from_millis(500)) {
                Ok(op) => self.enqueue(&mut queue, op),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(op) = outbox.try_recv() {
                self.enqueue(&mut queue, op);
            }
            let c = match con.as_mut() {
                Some(c) => c,
                // The script is loaded on each connection: a Redis that
                // restarted has forgotten it.
                None => match connect(&self.settings).and_then(|mut c| {
                    history_sha = redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(HISTORY_SCRIPT)
                        .query(&mut c)?;
                    Ok(c)
                }) {
                    Ok(c) => con.insert(c),
                    Err(e) => {
                        self.degraded(&mut down, &e);
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                },
            };
            let result = (|| -> redis::RedisResult<()> {
                while !queue.is_empty() {
                    let batch: Vec<&Published> = queue.iter().take(1000).collect();
                    let mut pipe = redis::pipe();
                    for p in &batch {
                        let body = serde_json::to_string(p).unwrap_or_default();
                        pipe.cmd("XADD")
                            .arg(&stream)
                            .arg("MAXLEN")
                            .arg("~")
                            .arg(STREAM_MAX)
                            .arg("*")
                            .arg("b")
                            .arg(&body)
                            .ignore();
                        if p.op == "ban" {
                            pipe.hset(&active, &p.subject, &body).ignore();
                        }
                        if p.op == "ban" && p.rule != "manual" {
                            // The highest count wins: a node that knew
                            // fewer earlier bans never lowers it.
                            pipe.cmd("EVALSHA")
                                .arg(&history_sha)
                                .arg(1)
                                .arg(&history)
                                .arg(&p.subject)
                                .arg(p.count)
                                .arg(p.started_ms)
                                .ignore();
                        } else if p.op != "ban" {
                            pipe.hdel(&active, &p.subject).ignore();
                        }
                    }
                    pipe.query::<()>(c)?;
                    let n = batch.len();
                    queue.drain(..n);
                    self.set_state(|f| {
                        f.published += n as u64;
                        f.queued = queue.len();
                    });
                }
                if last_beat.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
                    last_beat = Some(Instant::now());
                    let _: () = c.hset(&nodes, &self.settings.node, wall_ms())?;
                    let seen: HashMap<String, i64> = c.hgetall(&nodes)?;
                    let mut seen: Vec<(String, i64)> = seen.into_iter().collect();
                    seen.sort();
                    let in_force: u64 = c.hlen(&active)?;
                    let alone = seen.iter().all(|(n, _)| *n == self.settings.node);
                    if alone && !looked_for_farms {
                        looked_for_farms = true;
                        let others = other_farms(c, &self.settings.name)?;
                        if !others.is_empty() {
                            tracing::warn!(
                                farm = %self.settings.name,
                                "no other node of farm '{}' in this Redis, which holds farm(s) {}: is [farm] name right? Bans are shared only within one farm",
                                self.settings.name,
                                others.join(", ")
                            );
                        }
                        self.set_state(|f| f.other_farms = others);
                    } else if !alone {
                        self.set_state(|f| f.other_farms.clear());
                    }
                    self.set_state(|f| {
                        f.nodes = seen;
                        f.farm_bans = Some(in_force);
                    });
                }
                if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    last_prune = Some(Instant::now());
                    // One node a period prunes, whichever takes the turn:
                    // every node walking both hashes each minute would
                    // multiply the work by the farm's size.
                    let turn: Option<String> = redis::cmd("SET")
                        .arg(format!("{}:prune", self.settings.name))
                        .arg(&self.settings.node)
                        .arg("NX")
                        .arg("PX")
                        .arg(PRUNE_EVERY.as_millis() as u64)
                        .query(c)?;
                    if turn.is_some() {
                        self.prune(c, &active, &history)?;
                    }
                }
                Ok(())
            })();
            match result {
                Ok(()) => self.recovered(&mut down),
                Err(e) => {
                    self.degraded(&mut down, &e);
                    con = None;
                }
            }
        }
    }

    fn enqueue(&self, queue: &mut VecDeque<Published>, op: FarmOp) {
        let now = wall_ms();
        let p = match op {
            FarmOp::Ban(b) => Published {
                count: count_of(&b),
                op: "ban".into(),
                node: self.settings.node.clone(),
                subject: b.subject.to_string(),
                rule: b.rule,
                reason: b.reason,
                started_ms: b.started_ms,
                expires_ms: b.expires_ms,
                at_ms: now,
            },
            FarmOp::Unban(s) => Published {
                op: "unban".into(),
                node: self.settings.node.clone(),
                subject: s.to_string(),
                rule: String::new(),
                reason: String::new(),
                started_ms: 0,
                expires_ms: 0,
                at_ms: now,
                count: 0,
            },
        };
        if queue.len() >= QUEUE_MAX {
            queue.pop_front();
            self.set_state(|f| f.dropped += 1);
        }
        queue.push_back(p);
        let n = queue.len();
        self.set_state(|f| f.queued = n);
    }

    /// Expired bans leave the hash of bans in force; subjects not banned
    /// for [`HISTORY_MS`] leave the history.
    fn prune(
        &self,
        c: &mut redis::Connection,
        active: &str,
        history: &str,
    ) -> redis::RedisResult<()> {
        let old = wall_ms() - HISTORY_MS;
        prune_hash(c, history, |v| {
            parse_history(v).is_none_or(|(_, at)| at < old)
        })?;
        let now = wall_ms();
        prune_hash(c, active, |v| {
            serde_json::from_str::<Published>(v).map_or(true, |p| p.expires_ms <= now)
        })
    }

    /// Applies what the other nodes publish: the bans in force first, then
    /// the stream from where they were read.
    fn follow_loop(&self) {
        let (stream, active, _) = keys(&self.settings.name);
        let mut last_id: Option<String> = None;
        let mut down = false;
        while !self.stop.load(Ordering::SeqCst) {
            let mut con = match connect(&self.settings) {
                Ok(c) => c,
                Err(e) => {
                    self.degraded(&mut down, &e);
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            };
            let _ = con.set_read_timeout(Some(Duration::from_secs(5)));
            let result = (|| -> redis::RedisResult<()> {
                // Back after an outage: if the stream no longer holds the
                // entry after the last one read (trimmed, or Redis came back
                // empty), the bans in force are read again (applying them
                // twice changes nothing).
                if let Some(id) = &last_id {
                    let head: redis::streams::StreamRangeReply =
                        con.xrange_count(&stream, "-", "+", 1)?;
                    if head
                        .ids
                        .first()
                        .is_some_and(|first| id_after(&first.id, id))
                    {
                        tracing::info!(
                            "farm: the stream moved on while this node was away; reading the bans in force again"
                        );
                        last_id = None;
                    }
                }
                if last_id.is_none() {
                    // Where the stream is now, then the bans in force: what
                    // comes after is read from the stream (a ban in both is
                    // applied once).
                    let tail: redis::streams::StreamRangeReply = c_xrevrange(&mut con, &stream)?;
                    let id = tail.ids.first().map_or("0-0".to_string(), |e| e.id.clone());
                    let all: HashMap<String, String> = con.hgetall(&active)?;
                    let snapshot: Vec<Published> = all
                        .values()
                        .filter_map(|v| serde_json::from_str(v).ok())
                        .collect();
                    let past: HashMap<String, String> =
                        con.hgetall(history_key(&self.settings.name))?;
                    self.remember(&past);
                    self.apply(&snapshot);
                    last_id = Some(id);
                }
                loop {
                    if self.stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    let from = last_id.clone().unwrap_or_else(|| "0-0".into());
                    let opts = redis::streams::StreamReadOptions::default()
                        .block(1000)
                        .count(1000);
                    let reply: Option<redis::streams::StreamReadReply> =
                        con.xread_options(&[&stream], &[&from], &opts)?;
                    let Some(reply) = reply else { continue };
                    let mut got = Vec::new();
                    for k in reply.keys {
                        for e in k.ids {
                            if let Some(body) = e.get::<String>("b")
                                && let Ok(p) = serde_json::from_str::<Published>(&body)
                            {
                                got.push(p);
                            }
                            last_id = Some(e.id);
                        }
                    }
                    self.apply(&got);
                }
            })();
            match result {
                Ok(()) => {}
                Err(e) => self.degraded(&mut down, &e),
            }
        }
    }

    /// The farm's ban history, for this node's escalation: read outside
    /// the enforcer's lock (a long history would hold bans up), handed to
    /// the engine in one go.
    fn remember(&self, past: &HashMap<String, String>) {
        let parsed: Vec<(Subject, u32, i64)> = past
            .iter()
            .filter_map(|(subject, v)| {
                let (n, at) = parse_history(v)?;
                Some((subject.parse::<Subject>().ok()?, n, at))
            })
            .collect();
        let (since, updates) = {
            let e = lock(&self.enforcer);
            (e.now() - HISTORY_MS, e.updates())
        };
        lock(&updates).extend(
            parsed
                .into_iter()
                .filter(|&(_, _, at)| at >= since)
                .map(|(s, n, at)| EngineUpdate::Remembered(s, n, at)),
        );
    }

    /// Applies other nodes' bans and unbans, checked.
    fn apply(&self, items: &[Published]) {
        let items: Vec<&Published> = items
            .iter()
            .filter(|p| p.node != self.settings.node)
            .collect();
        if items.is_empty() {
            return;
        }
        let subjects: Vec<Subject> = items
            .iter()
            .filter_map(|p| p.subject.parse().ok())
            .collect();
        let mut e = lock(&self.enforcer);
        let now = e.now();
        // What this node holds already: a few looked up, many read at once.
        let standing = e.ledger.open_expiries(&subjects, now).unwrap_or_default();
        let mut bans = Vec::new();
        let mut unbans = Vec::new();
        let (mut refused, mut lag) = (0u64, None);
        for p in items {
            let Ok(subject) = p.subject.parse::<Subject>() else {
                refused += 1;
                continue;
            };
            if let Some(why) = self.refuse(&e, subject, p, now) {
                tracing::warn!(node = %p.node, subject = %p.subject, "farm ban refused: {why}");
                refused += 1;
                continue;
            }
            if p.op == "unban" {
                unbans.push(subject);
                continue;
            }
            // Applied once, and never extended by a copy of itself.
            if standing
                .get(&subject)
                .is_some_and(|&until| until >= p.expires_ms)
                || bans
                    .iter()
                    .any(|b: &NewBan| b.subject == subject && b.expires_ms >= p.expires_ms)
            {
                continue;
            }
            lag = Some(wall_ms() - p.at_ms);
            // The rule engine learns of it: it neither decides the
            // subject again while the ban lasts, nor forgets it for
            // escalation.
            e.notify(EngineUpdate::Banned(subject, p.expires_ms));
            // Manual bans do not escalate here; they do not there either.
            if p.rule != "manual" {
                e.notify(EngineUpdate::Remembered(
                    subject,
                    p.count.max(1),
                    p.started_ms,
                ));
            }
            bans.push(NewBan {
                subject,
                rule: p.rule.clone(),
                reason: p.reason.clone(),
                evidence: None,
                origin: format!("farm:{}", p.node),
                started_ms: p.started_ms,
                expires_ms: p.expires_ms,
            });
        }
        let applied = bans.len() as u64;
        if !bans.is_empty() {
            for b in bans.iter().take(20) {
                tracing::info!(ip = %b.subject, rule = %b.rule, origin = %b.origin, "ban from the farm");
            }
            if let Err(err) = e.ban(&bans, Vec::new()) {
                tracing::error!(error = %err, "cannot record the farm's bans");
            }
        }
        if !unbans.is_empty() {
            // `unban` tells the engine itself.
            let _ = e.unban(&unbans, "farm");
        }
        drop(e);
        self.set_state(|f| {
            f.applied += applied;
            f.refused += refused;
            if lag.is_some() {
                f.last_lag_ms = lag;
            }
        });
    }

    fn refuse(&self, e: &Enforcer, subject: Subject, p: &Published, now: i64) -> Option<String> {
        if p.op != "ban" && p.op != "unban" {
            return Some(format!("unknown operation '{}'", p.op));
        }
        let family = subject.family_prefix();
        let v4 = subject.addr().is_ipv4();
        let min = if v4 {
            self.settings.min_prefix_v4
        } else {
            self.settings.min_prefix_v6
        };
        if family < min {
            return Some(format!("/{family} is wider than the farm allows (/{min})"));
        }
        if p.op == "ban" {
            if let Some(a) = e.allow.overlapping(subject) {
                return Some(format!("allowlisted here ({a})"));
            }
            if p.expires_ms <= now || p.expires_ms > now + MAX_BAN_MS {
                return Some(format!("expiry {} out of range", p.expires_ms));
            }
        }
        None
    }
}

/// Raises a subject's count in the history to ARGV[2] (never lowers it)
/// and its last ban to ARGV[3].
const HISTORY_SCRIPT: &str = r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
local n, at = 0, 0
if v then
  local sep = string.find(v, ':', 1, true)
  if sep then
    n = tonumber(string.sub(v, 1, sep - 1)) or 0
    at = tonumber(string.sub(v, sep + 1)) or 0
  end
end
n = math.max(n, tonumber(ARGV[2]))
at = math.max(at, tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d:%d', n, at))
"#;

/// Whether stream id `a` comes after `b` ("ms-seq").
fn id_after(a: &str, b: &str) -> bool {
    let parse = |s: &str| {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    parse(a) > parse(b)
}

fn c_xrevrange(
    con: &mut redis::Connection,
    stream: &str,
) -> redis::RedisResult<redis::streams::StreamRangeReply> {
    con.xrevrange_count(stream, "+", "-", 1)
}

/// The farm's bans in force, soonest to end last, for `bans --farm`.
pub fn bans_in_force(s: &FarmSettings) -> Result<Vec<Published>, String> {
    let mut con = connect(s)
        .map_err(|e| format!("cannot read the farm's bans from Redis at {}: {e}", s.shown))?;
    let (_, active, _) = keys(&s.name);
    let all: HashMap<String, String> = con
        .hgetall(&active)
        .map_err(|e| format!("cannot read the farm's bans from Redis at {}: {e}", s.shown))?;
    let now = wall_ms();
    let mut rows: Vec<Published> = all
        .values()
        .filter_map(|v| serde_json::from_str::<Published>(v).ok())
        .filter(|p| p.expires_ms > now)
        .collect();
    rows.sort_by(|a, b| {
        b.expires_ms
            .cmp(&a.expires_ms)
            .then(a.subject.cmp(&b.subject))
    });
    Ok(rows)
}

/// The sending half the enforcer holds.
pub type FarmOutbox = Sender<FarmOp>;

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_text(text: &str) -> (Option<FarmSettings>, String) {
        let config = Config::from_texts(vec![("f.toml".into(), text.into())]).unwrap();
        let mut errors = Vec::new();
        let f = compile(&config, &mut errors);
        (f, crate::detect::ConfigErrors(errors).to_string())
    }

    #[test]
    fn farm_rules_without_a_farm_are_named_once_for_all() {
        let config = Config::from_texts(vec![(
            "r.toml".into(),
            "default_rules = false\n[rules.a]\nkind = \"rate\"\nscope = \"farm\"\nlimit = 5\nwindow = \"10s\"\naction = \"ban\"\n\
             [rules.b]\nkind = \"rate\"\nscope = \"farm\"\nlimit = 5\nwindow = \"10s\"\naction = \"ban\"\n\
             [rules.c]\nkind = \"rate\"\nlimit = 5\nwindow = \"10s\"\naction = \"ban\"\n"
                .into(),
        )])
        .unwrap();
        let set = crate::detect::rules::RuleSet::compile(&config).unwrap();
        assert_eq!(
            unshared_rules(&set, None).as_deref(),
            Some("rules a, b have scope = \"farm\" without [farm]: counted on this node only")
        );
        let (farm, e) = compile_text("[farm]\nredis = \"redis://h:6379/0\"\n");
        assert!(e.is_empty(), "{e}");
        assert_eq!(unshared_rules(&set, farm.as_ref()), None);
    }

    #[test]
    fn tls_files_are_read_and_checked_where_they_are_set() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "PEM").unwrap();
        let (f, e) = compile_text(&format!(
            "[farm]\nredis = \"rediss://h:6380/0\"\ntls_ca = \"{}\"\n",
            ca.display()
        ));
        assert!(e.is_empty(), "{e}");
        let tls = f.unwrap().tls;
        assert_eq!(tls.ca.as_deref(), Some(&b"PEM"[..]));
        assert_eq!(format!("{tls:?}"), "FarmTls { ca: true, client: false }");
        let (f, e) = compile_text(&format!(
            "[farm]\nredis = \"redis://h:6379/0\"\ntls_ca = \"{}\"\n",
            ca.display()
        ));
        assert!(f.is_none());
        assert!(
            e.contains("f.toml:3:10: tls_ca, tls_cert and tls_key are for a rediss:// URL"),
            "{e}"
        );
        let (f, e) = compile_text(
            "[farm]\nredis = \"rediss://h:6380/0\"\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/nonexistent/k.pem\"\n",
        );
        assert!(f.is_none());
        assert!(
            e.contains("f.toml:3:12: cannot read tls_cert '/nonexistent/c.pem'"),
            "{e}"
        );
        assert!(
            e.contains("f.toml:4:11: cannot read tls_key '/nonexistent/k.pem'"),
            "{e}"
        );
    }

    #[test]
    fn history_reads_back_and_garbage_is_none() {
        assert_eq!(
            parse_history("3:1700000000000"),
            Some((3, 1_700_000_000_000))
        );
        assert_eq!(parse_history("3"), None);
        assert_eq!(parse_history("x:1"), None);
    }

    #[test]
    fn a_ban_counts_the_earlier_ones_its_engine_knew() {
        let mut b = NewBan {
            subject: "192.0.2.7".parse().unwrap(),
            rule: "flood".into(),
            reason: String::new(),
            evidence: Some("{\"repeat\":2}".into()),
            origin: "rule".into(),
            started_ms: 0,
            expires_ms: 1,
        };
        assert_eq!(count_of(&b), 3);
        b.evidence = None;
        assert_eq!(count_of(&b), 1, "a manual ban is a first one");
    }

    #[test]
    fn stream_ids_compare_as_numbers() {
        assert!(id_after("1700000000001-0", "1700000000000-5"));
        assert!(!id_after("10-2", "10-10"));
        assert!(id_after("100-0", "99-0"));
        assert!(!id_after("5-0", "5-0"));
    }

    #[test]
    fn a_sentinels_master_keeps_the_urls_credentials_and_database() {
        assert_eq!(
            with_address("redis://u:p@old:6379/2", "10.0.0.9", 6380),
            "redis://u:p@10.0.0.9:6380/2"
        );
        assert_eq!(
            with_address("rediss://:p@h/0?protocol=resp3", "h2", 1),
            "rediss://:p@h2:1/0?protocol=resp3"
        );
        assert_eq!(
            with_address("redis://h", "fd00::5", 7),
            "redis://[fd00::5]:7"
        );
        // A password holding '@' stays whole: the last '@' ends it.
        assert_eq!(
            with_address("redis://:a@b@h:1/0", "x", 2),
            "redis://:a@b@x:2/0"
        );
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask("redis://webfence:s3cret@10.0.0.5:6379/0"),
            "redis://webfence:***@10.0.0.5:6379/0"
        );
        assert_eq!(mask("rediss://:s3cret@h:6380"), "rediss://:***@h:6380");
        assert_eq!(mask("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn a_published_ban_reads_back() {
        let p = Published {
            op: "ban".into(),
            node: "web1".into(),
            subject: "192.0.2.7".into(),
            rule: "flood".into(),
            reason: "r".into(),
            started_ms: 1,
            expires_ms: 2,
            at_ms: 3,
            count: 2,
        };
        let back: Published = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        // Garbage from the stream is no panic, just refused.
        assert!(serde_json::from_str::<Published>("{\"op\":1}").is_err());
    }
}
