//! The control socket: a Unix socket (mode 0600, peers checked to be root
//! or the daemon's own user) carrying one JSON request and one JSON answer
//! per connection. `webfence bans|ban|unban|status` are its clients.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::actions::enforcer::{Enforcer, EngineUpdate};
use super::lock;
use crate::detect::addr::Subject;
use crate::enforce::hooks::Facts;
use crate::enforce::ledger::{NewBan, Query};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    Status,
    Bans {
        #[serde(default)]
        history: bool,
        #[serde(default)]
        rule: Option<String>,
        #[serde(default)]
        within: Option<String>,
        #[serde(default)]
        limit: Option<usize>,
    },
    Ban {
        subjects: Vec<String>,
        #[serde(default)]
        for_s: Option<u64>,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        force: bool,
        /// Replace bans in force even when they last longer.
        #[serde(default)]
        replace: bool,
    },
    Unban {
        #[serde(default)]
        subjects: Vec<String>,
        #[serde(default)]
        all: bool,
    },
    /// Read the configuration again, as SIGHUP does.
    Reload,
}

/// What the follow loop publishes for `status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoopStatus {
    pub sources: Vec<SourceStatus>,
    pub lines: u64,
    pub malformed: u64,
    pub decisions: u64,
    pub format: Option<String>,
    pub rules: usize,
    pub started_ms: i64,
    pub dry_run: bool,
    /// What keeps the daemon from deciding on a configured log (a path
    /// that does not exist, a format it cannot recognise): while any is
    /// listed, that log is not protected.
    pub problems: Vec<String>,
    /// The last reload: when, and its outcome.
    pub last_reload: Option<ReloadOutcome>,
    /// What each rule decided since the start (across reloads).
    pub per_rule: Vec<RuleStatus>,
    /// Each guard's state, values and last action.
    pub guards: Vec<super::detectors::guards::GuardStatus>,
    /// The kernel connection limits, when configured.
    pub limits: Option<LimitsStatus>,
    /// What keeps guards, connection rules or limits from working.
    pub watch_problems: Vec<String>,
    /// How long the last round of the machine loop took.
    pub watch_ms: u64,
    /// Each notification channel's figures.
    pub notify: Vec<super::actions::notify::ChannelStatus>,
    /// Each blocklist: size, age, errors, drops.
    pub blocklists: Vec<super::actions::blocklists::BlocklistStatus>,
    /// Notification events dropped because the queue was full.
    pub notify_dropped: u64,
    /// Seconds the follower is behind the newest line written (0 when
    /// caught up).
    pub lag_seconds: f64,
    /// Bytes of rule state the engine holds.
    pub engine_bytes: u64,
    /// Recent guard episodes (the last 200), for digests.
    pub guard_episodes: Vec<crate::report::digest::Episode>,
    /// The most connections seen at once per hour (the last 48 hours):
    /// (hour start, peak, when), for digests.
    pub conn_peaks: Vec<(i64, u64, i64)>,
    /// The packet source (`[packets]`), when enabled.
    pub packets: Option<super::detectors::packets::PacketStatus>,
    /// `[farm]`, when set.
    pub farm: Option<super::actions::farm::FarmStatus>,
    /// Crawler verification (`[crawlers]`), when on.
    pub crawlers: Option<crate::detect::crawlers::CrawlerStatus>,
}

impl LoopStatus {
    /// Everything that keeps the daemon from guarding: the logs', the
    /// machine loop's, and a blocklist that never loaded (one that failed
    /// a refresh keeps its last good contents and still guards).
    pub fn all_problems(&self) -> Vec<String> {
        let lists = self
            .blocklists
            .iter()
            .filter(|b| b.loaded_ms.is_none())
            .filter_map(|b| {
                let e = b.error.as_ref()?;
                Some(format!("blocklist {} is not in force: {e}", b.name))
            });
        let packets = self.packets.as_ref().and_then(|p| {
            let e = p.error.as_ref()?;
            Some(format!(
                "packet capture is not working, LAN traffic is not watched: {e}"
            ))
        });
        self.problems
            .iter()
            .chain(&self.watch_problems)
            .cloned()
            .chain(lists)
            .chain(packets)
            .chain(self.farm.as_ref().filter(|f| f.state == "degraded").map(|f| {
                format!(
                    "farm degraded ({}): bans are enforced here and {} wait for Redis at {}",
                    f.error.as_deref().unwrap_or("Redis unreachable"),
                    f.queued,
                    f.redis
                )
            }))
            .collect()
    }

    /// The connection peak within [from, to).
    pub fn conn_peak(&self, from_ms: i64, to_ms: i64) -> Option<(u64, i64)> {
        self.conn_peaks
            .iter()
            .filter(|(_, _, at)| (from_ms..to_ms).contains(at))
            .map(|(_, n, at)| (*n, *at))
            .max_by_key(|(n, _)| *n)
    }

    /// Notes a connection count seen now.
    pub fn note_conns(&mut self, total: u64, now_ms: i64) {
        let hour = now_ms - now_ms.rem_euclid(3_600_000);
        match self.conn_peaks.last_mut() {
            Some((h, peak, at)) if *h == hour => {
                if total > *peak {
                    (*peak, *at) = (total, now_ms);
                }
            }
            _ => {
                self.conn_peaks.push((hour, total, now_ms));
                if self.conn_peaks.len() > 48 {
                    self.conn_peaks.remove(0);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LimitsStatus {
    pub max_conns: Option<u32>,
    pub new_per_second: Option<u32>,
    pub ports: Vec<u16>,
    /// Packets refused: connections over max_conns (reset), and new
    /// connections over the rate (dropped).
    pub refused_conns: u64,
    pub refused_rate: u64,
    pub in_force: bool,
}

impl LoopStatus {
    /// Counts decisions per rule (across reloads, which rebuild engines).
    pub fn count(&mut self, decisions: &[crate::detect::Decision]) {
        let now = super::actions::enforcer::wall_ms();
        self.decisions += decisions.len() as u64;
        for d in decisions {
            let i = match self.per_rule.iter().position(|r| r.rule == d.rule) {
                Some(i) => i,
                None => {
                    self.per_rule.push(RuleStatus {
                        rule: d.rule.clone(),
                        ..Default::default()
                    });
                    self.per_rule.len() - 1
                }
            };
            let r = &mut self.per_rule[i];
            r.decisions += 1;
            r.bans += u64::from(matches!(d.action, crate::detect::rules::Action::Ban));
            r.last_ms = Some(now);
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleStatus {
    pub rule: String,
    pub decisions: u64,
    pub bans: u64,
    /// Wall-clock time of its last decision.
    pub last_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    pub at_ms: i64,
    pub ok: bool,
    /// The rules loaded, or why the configuration was refused.
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub path: PathBuf,
    pub offset: u64,
    pub size: u64,
    /// Bytes written but not read yet.
    pub behind_bytes: u64,
}

#[derive(Clone)]
pub struct Shared {
    pub enforcer: Arc<Mutex<Enforcer>>,
    pub status: Arc<Mutex<LoopStatus>>,
    pub default_ban_s: u64,
    /// Asks the follow loop to reload (what SIGHUP does).
    pub request_reload: fn(),
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("another webfence daemon answers on {0}")]
    InUse(PathBuf),
    #[error("cannot create the control socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot reach the webfence daemon at {path}: {source} (is `webfence run` running? --socket names another socket)"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the daemon at {path}: {reason}")]
    Exchange { path: PathBuf, reason: String },
}

/// The longest ban accepted: beyond it the expiry (milliseconds since
/// 1970 in an i64) would wrap and the ban end before it starts.
pub const MAX_BAN_S: u64 = 100 * 365 * 86_400;

/// Unbans logged one by one; more are summed up in one line.
const BANS_LOGGED: usize = 50;

/// Biggest request read (100k addresses are about 2 MB).
const MAX_REQUEST: u64 = 64 << 20;

/// Binds the socket: refuses if a daemon answers there, replaces a stale
/// file left by a crash.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    if UnixStream::connect(path).is_ok() {
        return Err(ControlError::InUse(path.to_path_buf()));
    }
    let bind_err = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(bind_err)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(bind_err)?;
        }
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// The peer's user id, from the kernel (SO_PEERCRED).
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the buffer is a ucred of the size passed; the fd is open.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

/// Connections served at once; more are answered "busy" at once and
/// closed, so a flood of idle clients cannot exhaust threads or memory.
const MAX_CONNECTIONS: usize = 128;
/// How long a client has to send its whole request, however it drips it.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// How long an answer may take to be taken by a client that stopped reading.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// What is read of a refused client's request before the refusal is
/// written, so it sees the message rather than a broken pipe.
const REFUSED_REQUEST: usize = 64 << 10;

/// Serves requests until the process ends: each connection on its own
/// thread with deadlines, so an idle, slow or non-reading client delays
/// nobody else.
pub fn serve(listener: UnixListener, shared: Shared) {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let shared = Arc::new(shared);
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        use std::sync::atomic::Ordering::SeqCst;
        if active.fetch_add(1, SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, SeqCst);
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            answer(
                &stream,
                &failure("busy: too many control connections at once; try again".into()),
            );
            // Closing with the request unread would reset the connection
            // before the client reads the answer: take what comes quickly.
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let _ = read_request(&stream, REFUSED_REQUEST, Duration::from_millis(50));
            continue;
        }
        let (shared, done) = (shared.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("control-conn".into())
            .spawn(move || {
                connection(&stream, &shared, me);
                done.fetch_sub(1, SeqCst);
            });
        if spawned.is_err() {
            // The thread never ran: its place is free again.
            active.fetch_sub(1, SeqCst);
            tracing::warn!("cannot start a thread for a control connection");
        }
    }
}

/// One connection: the peer is checked, one request read within the
/// deadline, one answer written.
fn connection(stream: &UnixStream, shared: &Shared, me: u32) {
    let _ = stream.set_write_timeout(Some(WRITE_DEADLINE));
    let allowed = matches!(peer_uid(stream), Some(uid) if uid == 0 || uid == me);
    let limit = if allowed {
        MAX_REQUEST as usize
    } else {
        REFUSED_REQUEST
    };
    let request = read_request(stream, limit, REQUEST_DEADLINE);
    let reply = if !allowed {
        failure("permission denied: only root may control webfence".into())
    } else {
        match request {
            Ok(line) => match serde_json::from_slice::<Request>(&line) {
                Ok(req) => handle(req, shared),
                Err(e) => failure(format!("invalid request: {e}")),
            },
            Err(e) => failure(format!("cannot read the request: {e}")),
        }
    };
    answer(stream, &reply);
    if !allowed {
        // Unread bytes at close would reset the connection under the
        // refusal: let the client finish sending, briefly.
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = read_request(stream, REFUSED_REQUEST, Duration::from_secs(1));
    }
}

fn answer(mut stream: &UnixStream, reply: &Value) {
    let mut text = reply.to_string();
    text.push('\n');
    let _ = stream.write_all(text.as_bytes());
}

/// Reads one line (without its newline) within `deadline` overall, not
/// per read: a client sending a byte every few seconds is cut off too.
fn read_request(
    mut stream: &UnixStream,
    limit: usize,
    deadline: Duration,
) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind};
    let start = std::time::Instant::now();
    let mut line = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(Error::new(
                ErrorKind::TimedOut,
                format!("no complete request within {}s", deadline.as_secs()),
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue;
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(line);
        }
        let got = &buf[..n];
        if let Some(end) = memchr::memchr(b'\n', got) {
            line.extend_from_slice(&got[..end]);
            return Ok(line);
        }
        line.extend_from_slice(got);
        if line.len() > limit {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!("request over {limit} bytes"),
            ));
        }
    }
}

fn failure(error: String) -> Value {
    json!({"ok": false, "error": error})
}

fn parse_subjects(items: &[String]) -> Result<Vec<Subject>, String> {
    let mut out = Vec::with_capacity(items.len());
    for (i, s) in items.iter().enumerate() {
        let subject = s
            .parse::<Subject>()
            .map_err(|e| format!("item {}: {e}", i + 1))?;
        out.push(subject);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

pub fn handle(req: Request, shared: &Shared) -> Value {
    match req {
        Request::Status => status(shared),
        Request::Reload => {
            (shared.request_reload)();
            json!({"ok": true, "requested_ms": lock(&shared.enforcer).now()})
        }
        Request::Bans {
            history,
            rule,
            within,
            limit,
        } => {
            let within = match within.map(|w| w.parse::<Subject>()).transpose() {
                Ok(w) => w,
                Err(e) => return failure(e.to_string()),
            };
            let e = lock(&shared.enforcer);
            let q = Query {
                history,
                rule,
                within,
                limit,
            };
            match e.ledger.query(&q, e.now()) {
                Ok(bans) => {
                    let dry_run = lock(&shared.status).dry_run;
                    json!({"ok": true, "now_ms": e.now(), "dry_run": dry_run, "bans": bans})
                }
                Err(err) => failure(err.to_string()),
            }
        }
        Request::Ban {
            subjects,
            for_s,
            reason,
            force,
            replace,
        } => {
            let subjects = match parse_subjects(&subjects) {
                Ok(s) => s,
                Err(e) => return failure(e),
            };
            let for_s = for_s.unwrap_or(shared.default_ban_s).max(1);
            if for_s > MAX_BAN_S {
                return failure(format!(
                    "a ban of {for_s}s is too long: at most {MAX_BAN_S}s (100 years)"
                ));
            }
            let reason = reason.unwrap_or_else(|| "banned by hand".into());
            let mut e = lock(&shared.enforcer);
            let now = e.now();
            let in_force = match e.ledger.open_expiries(&subjects, now) {
                Ok(m) => m,
                Err(err) => return failure(err.to_string()),
            };
            let mut kept = Vec::new();
            let mut refused = Vec::new();
            let mut bans = Vec::new();
            let mut facts = Vec::new();
            for s in subjects {
                if let Some(a) = e.allow.overlapping(s).filter(|_| !force) {
                    refused.push(json!({"ip": s.to_string(), "allowlisted": a.to_string()}));
                    continue;
                }
                let expires_ms = now.saturating_add(for_s as i64 * 1000);
                // A longer ban in force stays, with its rule's evidence,
                // unless the admin says --replace.
                if let Some(&until) = in_force.get(&s).filter(|&&u| u >= expires_ms && !replace) {
                    kept.push(json!({"ip": s.to_string(), "until_ms": until}));
                    continue;
                }
                bans.push(NewBan {
                    subject: s,
                    rule: "manual".into(),
                    reason: reason.clone(),
                    evidence: None,
                    origin: "manual".into(),
                    started_ms: now,
                    expires_ms,
                });
                if e.hooks.on_ban.is_some() {
                    facts.push(Facts {
                        event: "ban".into(),
                        subject: s,
                        rule: "manual".into(),
                        action: "ban".into(),
                        duration_s: Some(for_s),
                        reason: reason.clone(),
                        sample: None,
                    });
                }
                e.notify(EngineUpdate::Banned(s, expires_ms));
            }
            match e.ban(&bans, facts) {
                Ok(applied) => {
                    tracing::info!(
                        count = bans.len(),
                        refused = refused.len(),
                        duration_s = for_s,
                        "banned by hand"
                    );
                    let dry_run = lock(&shared.status).dry_run;
                    json!({"ok": true, "banned": bans.len(), "applied": applied, "refused": refused, "kept": kept, "backend_ok": e.health.ok, "dry_run": dry_run})
                }
                Err(err) => failure(err.to_string()),
            }
        }
        Request::Unban { subjects, all } => {
            let mut e = lock(&shared.enforcer);
            let asked = match parse_subjects(&subjects) {
                Ok(s) => s,
                Err(err) => return failure(err),
            };
            let ended = if all {
                e.unban_all("unban")
            } else {
                e.unban(&asked, "unban")
            };
            match ended {
                Ok(ended) => {
                    for b in ended.iter().take(BANS_LOGGED) {
                        tracing::info!(ip = %b.subject, rule = %b.rule, "unbanned by hand");
                    }
                    if ended.len() > BANS_LOGGED {
                        tracing::info!(
                            count = ended.len(),
                            "unbanned by hand: {} more",
                            ended.len() - BANS_LOGGED
                        );
                    }
                    let names: Vec<String> = ended.iter().map(|b| b.subject.to_string()).collect();
                    // An address not banned itself may be inside a banned
                    // network: say which, or the admin thinks it is free.
                    let now = e.now();
                    let active = e.ledger.active(now).unwrap_or_default();
                    let covered: Vec<Value> = asked
                        .iter()
                        .filter(|s| !ended.iter().any(|b| b.subject == **s))
                        .flat_map(|s| {
                            active
                                .iter()
                                .filter(|b| {
                                    b.subject.prefix < s.prefix && b.subject.contains(s.bits)
                                })
                                .map(|b| json!({"ip": s.to_string(), "by": b.subject.to_string()}))
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    json!({"ok": true, "unbanned": names, "covered": covered})
                }
                Err(err) => failure(err.to_string()),
            }
        }
    }
}

pub fn status(shared: &Shared) -> Value {
    let st = lock(&shared.status).clone();
    let all_problems = st.all_problems();
    let protecting = all_problems.is_empty();
    let e = lock(&shared.enforcer);
    let now = e.now();
    let (active, recorded) = e.ledger.counts(now).unwrap_or((0, 0));
    let by_rule: serde_json::Map<String, Value> = e
        .ledger
        .active_by_rule(now)
        .unwrap_or_default()
        .into_iter()
        .map(|(rule, n)| (rule, n.into()))
        .collect();
    let (dropped, failed) = e.hooks.runner.as_ref().map_or((0, 0), |r| {
        (
            r.dropped.load(std::sync::atomic::Ordering::Relaxed),
            r.failed.load(std::sync::atomic::Ordering::Relaxed),
        )
    });
    json!({
        "ok": true,
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "now_ms": now,
        "loop": st,
        "bans": {"active": active, "recorded": recorded, "active_by_rule": by_rule},
        "healthy": e.healthy() && protecting,
        "protecting": protecting,
        "all_problems": all_problems,
        "backend": {"name": e.backend_name(), "health": e.health, "dropped": e.dropped()},
        "ledger": {"health": e.ledger_health, "pending": e.pending()},
        "hooks": {"dropped": dropped, "failed": failed},
    })
}

/// Sends one request and returns the answer (`ok` false answers too).
pub fn request(socket: &Path, req: &Request) -> Result<Value, ControlError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ControlError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    let ex = |reason: String| ControlError::Exchange {
        path: socket.to_path_buf(),
        reason,
    };
    let mut text = serde_json::to_string(req).map_err(|e| ex(e.to_string()))?;
    text.push('\n');
    // A daemon that refuses the request (permission, busy) answers and
    // closes without reading all of it: its answer says more than the
    // broken pipe the write then gets.
    let written = stream.write_all(text.as_bytes());
    let mut answer = String::new();
    let read = stream.read_to_string(&mut answer);
    if answer.trim().is_empty() {
        written.map_err(|e| ex(e.to_string()))?;
        read.map_err(|e| ex(e.to_string()))?;
    }
    serde_json::from_str(&answer).map_err(|e| ex(format!("unreadable answer: {e}")))
}
