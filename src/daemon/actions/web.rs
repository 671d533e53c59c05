//! `[web]`: a read-only live dashboard on the metrics listener.
//!
//! - `GET /` — the page (shipped in the binary, no external resource);
//! - `GET /api/live` — one JSON document: the site's rate and the busiest
//!   clients with their 1/5/15-minute counts, recent decisions, bans in
//!   force, guards, connections and health;
//! - `GET /events` — the same document every second as Server-Sent Events.
//!
//! Nothing can be changed through it. The follow loop counts requests into
//! a `LiveStats` only while the web view is enabled, and makes a snapshot
//! (a few milliseconds with many clients) only while someone has looked in
//! the last [`VIEWER_IDLE_MS`], so an unwatched dashboard costs a counter
//! update per line.

use std::collections::VecDeque;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::daemon::control::{Shared, status};
use crate::daemon::lock;
use crate::detect::Decision;
use crate::detect::config::{Config, ConfigError};
use crate::stats::live::{LiveClock, LiveStats, View};

/// Where the dashboard listens when `[metrics]` has no address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9736";

/// Snapshots stop this long after the last page or API request.
pub const VIEWER_IDLE_MS: i64 = 10_000;

/// Most event streams open at once; more get 503 (each holds a thread).
const MAX_STREAMS: usize = 16;

/// An event stream ends after this long; the browser reconnects at once,
/// so a forgotten tab never holds a thread for ever.
const STREAM_LIFETIME: Duration = Duration::from_secs(3600);

/// Decisions the page lists, newest first.
const RECENT_DECISIONS: usize = 100;

/// Clients in a snapshot.
const CLIENT_ROWS: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSettings {
    pub listen: SocketAddr,
    pub token: Option<String>,
    /// HTTP basic authentication: user and password.
    pub basic: Option<(String, String)>,
}

/// `[web]` checked: `None` when disabled. The listener is the metrics one
/// when `[metrics] listen` is set.
pub fn compile(
    config: &Config,
    metrics: Option<SocketAddr>,
    errors: &mut Vec<ConfigError>,
) -> Option<WebSettings> {
    let (at, w) = config.web.as_ref()?;
    if w.enabled != Some(true) {
        return None;
    }
    let mut err = |at, msg: String| errors.push(config.sources.error(at, msg));
    let own = match &w.listen {
        Some(l) => match l.value.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                err(
                    l.at,
                    format!(
                        "invalid listen address '{}': expected an address and port such as {DEFAULT_LISTEN}",
                        l.value
                    ),
                );
                return None;
            }
        },
        None => None,
    };
    let listen = match (metrics, own) {
        (Some(m), Some(o)) if m != o => {
            if let Some(l) = &w.listen {
                err(
                    l.at,
                    format!(
                        "[web] is served on the metrics listener ({m}): leave out [web] listen or make it {m}"
                    ),
                );
            }
            return None;
        }
        (Some(m), _) => m,
        (None, Some(o)) => o,
        // The constant parses.
        (None, None) => DEFAULT_LISTEN.parse().ok()?,
    };
    let token = match &w.token {
        Some(t) if t.value.trim().is_empty() => {
            err(t.at, "[web] token is empty".into());
            return None;
        }
        Some(t) => Some(t.value.clone()),
        None => None,
    };
    let basic = match (&w.user, &w.password) {
        (Some(u), Some(p)) if !u.value.is_empty() && !p.value.is_empty() => {
            Some((u.value.clone(), p.value.clone()))
        }
        (None, None) => None,
        (Some(s), _) | (_, Some(s)) => {
            err(
                s.at,
                "[web] basic authentication needs both user and password, neither empty".into(),
            );
            return None;
        }
    };
    if !listen.ip().is_loopback() && token.is_none() && basic.is_none() && w.public != Some(true) {
        err(
            *at,
            format!(
                "[web] would serve the dashboard on {listen}, which is not a loopback address, to anyone: set token, or user and password, or public = true"
            ),
        );
        return None;
    }
    Some(WebSettings {
        listen,
        token,
        basic,
    })
}

/// What the follow loop and the HTTP side share.
#[derive(Debug, Default)]
pub struct WebState {
    pub settings: Mutex<Option<WebSettings>>,
    /// The latest snapshot of the site and its clients (JSON).
    site: Mutex<Value>,
    recent: Mutex<VecDeque<Value>>,
    /// Wall-clock milliseconds of the last page or API request.
    viewed_ms: AtomicI64,
    streams: AtomicUsize,
}

impl WebState {
    pub fn new(settings: Option<WebSettings>) -> Arc<WebState> {
        Arc::new(WebState {
            settings: Mutex::new(settings),
            ..WebState::default()
        })
    }

    fn enabled(&self) -> bool {
        lock(&self.settings).is_some()
    }

    fn watched(&self, now_ms: i64) -> bool {
        now_ms - self.viewed_ms.load(Ordering::Relaxed) < VIEWER_IDLE_MS
    }
}

/// The follow loop's side: requests counted, decisions kept, a snapshot
/// published each second while someone watches.
pub struct LiveView {
    pub state: Arc<WebState>,
    stats: Option<LiveStats>,
    memory_cap: u64,
    clock: LiveClock,
    last_snapshot: Option<Instant>,
}

impl LiveView {
    pub fn new(state: Arc<WebState>, memory_cap: u64) -> LiveView {
        let mut v = LiveView {
            state,
            stats: None,
            memory_cap,
            clock: LiveClock::default(),
            last_snapshot: None,
        };
        v.reconfigure();
        v
    }

    /// After a reload: counting starts or stops with `[web]`.
    pub fn reconfigure(&mut self) {
        match (self.state.enabled(), self.stats.is_some()) {
            (true, false) => self.stats = Some(LiveStats::with_memory_cap(self.memory_cap)),
            (false, true) => self.stats = None,
            _ => {}
        }
    }

    /// Whether requests are counted (`[web]` is on).
    pub fn recording(&self) -> bool {
        self.stats.is_some()
    }

    #[inline]
    pub fn record(&mut self, r: &crate::log::Request<'_>) {
        if let Some(s) = self.stats.as_mut() {
            s.record(r);
        }
    }

    pub fn decided(&mut self, decisions: &[Decision]) {
        if self.stats.is_none() || decisions.is_empty() {
            return;
        }
        let mut recent = lock(&self.state.recent);
        for d in decisions.iter().rev().take(RECENT_DECISIONS).rev() {
            if recent.len() == RECENT_DECISIONS {
                recent.pop_back();
            }
            recent.push_front(json!({
                "at_ms": d.at,
                "rule": d.rule,
                "client": d.subject.to_string(),
                "action": d.action.name(),
                "duration_s": d.duration_s,
                "reason": d.reason,
            }));
        }
    }

    /// Once a second at most, and only while watched.
    pub fn tick(&mut self, wall_ms: i64) {
        let Some(stats) = self.stats.as_ref() else {
            return;
        };
        if !self.state.watched(wall_ms)
            || self
                .last_snapshot
                .is_some_and(|t| t.elapsed() < Duration::from_millis(900))
        {
            return;
        }
        self.last_snapshot = Some(Instant::now());
        let now = self.clock.now(stats.newest());
        let snap = stats.snapshot(
            now,
            &View {
                rows: CLIENT_ROWS,
                ..View::default()
            },
        );
        *lock(&self.state.site) = serde_json::to_value(&snap).unwrap_or(Value::Null);
    }
}

/// The document `/api/live` answers and `/events` streams.
pub fn live(shared: &Shared, web: &WebState) -> Value {
    let now = super::enforcer::wall_ms();
    web.viewed_ms.store(now, Ordering::Relaxed);
    let s = status(shared);
    let bans: Vec<Value> = {
        let e = lock(&shared.enforcer);
        let now = e.now();
        let active = e.ledger.newest_active(now, 100).unwrap_or_default();
        active
            .iter()
            .map(|b| {
                json!({
                    "client": b.subject.to_string(),
                    "rule": b.rule,
                    "reason": b.reason,
                    "origin": b.origin,
                    "started_ms": b.started_ms,
                    "expires_ms": b.expires_ms,
                })
            })
            .collect()
    };
    let lp = s.get("loop").cloned().unwrap_or_default();
    json!({
        "now_ms": now,
        "site": lock(&web.site).clone(),
        "decisions": lock(&web.recent).iter().cloned().collect::<Vec<_>>(),
        "bans": bans,
        "bans_active": s["bans"]["active"],
        "protecting": s["protecting"],
        "healthy": s["healthy"],
        "problems": s["all_problems"],
        "guards": lp.get("guards").cloned().unwrap_or_default(),
        "conns": connections(),
        "packets": lp.get("packets").cloned().unwrap_or_default(),
        "lines": lp.get("lines").cloned().unwrap_or_default(),
        "lag_seconds": lp.get("lag_seconds").cloned().unwrap_or_default(),
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// The kernel's connection table, the busiest clients first.
fn connections() -> Value {
    let mut source = crate::source::conns::KernelConns::default();
    match crate::stats::conns::ConnTable::read(&mut source, &Default::default()) {
        Ok(t) => json!({
            "total": t.total,
            "established": t.established,
            "syn_recv": t.syn_recv,
            "clients": t.clients.iter().take(20).collect::<Vec<_>>(),
        }),
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// Whether the request may see the dashboard: the token (query or bearer
/// header) or basic credentials, compared in constant time.
pub fn authorized(settings: &WebSettings, query: &str, headers: &str) -> bool {
    if settings.token.is_none() && settings.basic.is_none() {
        return true;
    }
    let header = |name: &str| {
        headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    if let Some(token) = &settings.token {
        let given = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(percent_decoded)
            .or_else(|| {
                header("authorization")
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(|t| t.trim().to_string())
            });
        if given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
            return true;
        }
    }
    if let Some((user, password)) = &settings.basic
        && let Some(b64) = header("authorization").and_then(|v| v.strip_prefix("Basic "))
        && let Some(pair) = base64_decode(b64.trim())
    {
        let expected = format!("{user}:{password}");
        return same(&pair, expected.as_bytes());
    }
    false
}

fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied(), b.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            (c, ..) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64 (HTTP basic credentials); hand-written for the one
/// header rather than a crate.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    };
    let clean = text.trim_end_matches('=').as_bytes();
    if clean.len() % 4 == 1 || clean.len() > 1024 {
        return None;
    }
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (k, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * k);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    Some(out)
}

/// Answers a dashboard request; false when the path is not the
/// dashboard's (the metrics side answers it then).
pub fn answer(
    stream: &mut TcpStream,
    shared: &Shared,
    web: &Arc<WebState>,
    path: &str,
    query: &str,
    headers: &str,
) -> bool {
    let Some(settings) = lock(&web.settings).clone() else {
        return false;
    };
    if !matches!(path, "/" | "/api/live" | "/events") {
        return false;
    }
    if !authorized(&settings, query, headers) {
        let challenge = if settings.basic.is_some() {
            "WWW-Authenticate: Basic realm=\"webfence\", charset=\"UTF-8\"\r\n"
        } else {
            ""
        };
        let body = "the dashboard needs the token (?token=) or the password\n";
        let _ = write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\n{challenge}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return true;
    }
    match path {
        "/" => respond(
            stream,
            "text/html; charset=utf-8",
            &crate::report::html::live_page(),
        ),
        "/api/live" => respond(stream, "application/json", &live(shared, web).to_string()),
        _ => stream_events(stream, shared, web),
    }
    true
}

fn respond(stream: &mut TcpStream, kind: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nContent-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn stream_events(stream: &mut TcpStream, shared: &Shared, web: &Arc<WebState>) {
    if web.streams.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
        web.streams.fetch_sub(1, Ordering::SeqCst);
        let body = "too many open dashboards\n";
        let _ = write!(
            stream,
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 10\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    let started = Instant::now();
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let mut ok = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\nretry: 2000\n\n"
    )
    .is_ok();
    while ok && started.elapsed() < STREAM_LIFETIME && web.enabled() {
        let doc = live(shared, web).to_string();
        ok = write!(stream, "data: {doc}\n\n")
            .and_then(|()| stream.flush())
            .is_ok();
        std::thread::sleep(Duration::from_secs(1));
    }
    web.streams.fetch_sub(1, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(token: Option<&str>, basic: Option<(&str, &str)>) -> WebSettings {
        WebSettings {
            listen: DEFAULT_LISTEN.parse().unwrap(),
            token: token.map(String::from),
            basic: basic.map(|(u, p)| (u.into(), p.into())),
        }
    }

    #[test]
    fn a_token_in_the_query_or_a_bearer_header() {
        let s = settings(Some("s3cr3t&x"), None);
        assert!(authorized(&s, "token=s3cr3t%26x", ""));
        assert!(authorized(
            &s,
            "",
            "Host: a\r\nAuthorization: Bearer s3cr3t&x\r\n"
        ));
        assert!(!authorized(&s, "token=s3cr3t", ""));
        assert!(!authorized(&s, "", "Authorization: Bearer wrong\r\n"));
        assert!(!authorized(&s, "", ""));
        assert!(authorized(&settings(None, None), "", ""));
    }

    #[test]
    fn basic_credentials() {
        let s = settings(None, Some(("admin", "pw")));
        // "admin:pw"
        assert!(authorized(&s, "", "authorization: Basic YWRtaW46cHc=\r\n"));
        // "admin:px"
        assert!(!authorized(&s, "", "Authorization: Basic YWRtaW46cHg=\r\n"));
        assert!(!authorized(&s, "", "Authorization: Basic !!!\r\n"));
        assert_eq!(base64_decode("YWRtaW46cHc="), Some(b"admin:pw".to_vec()));
        assert_eq!(base64_decode("YQ"), Some(b"a".to_vec()));
    }
}
