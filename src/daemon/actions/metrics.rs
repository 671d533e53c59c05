//! Prometheus metrics and a health check over HTTP (`[metrics] listen`):
//! `GET /metrics` in the text exposition format (encoded by the official
//! `prometheus-client` crate from the same figures `webfence status`
//! shows, served in the classic 0.0.4 form that `promtool` checks),
//! `GET /healthz` 200 when healthy and 503 when not.
//!
//! The HTTP side is hand-written: two fixed read-only endpoints, one
//! request per connection with a deadline, on an address the admin
//! chooses (loopback by default); an HTTP server crate would bring an
//! async runtime for that.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;

use super::web::WebState;
use crate::daemon::control::{Shared, status};
use crate::daemon::lock;

#[cfg(test)]
mod tests {
    #[test]
    fn counters_are_named_by_their_series_in_the_classic_format() {
        let om = "# HELP x_lines Lines.\n# TYPE x_lines counter\nx_lines_total 3\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n# EOF\n";
        assert_eq!(
            super::classic(om),
            "# HELP x_lines_total Lines.\n# TYPE x_lines_total counter\nx_lines_total 3\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n"
        );
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuardLabel {
    guard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BansLabel {
    backend: String,
    family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListLabel {
    list: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: String,
}

fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// A counter holding `value` (the daemon's own running totals).
fn counter(value: u64) -> Counter<u64, AtomicU64> {
    let c = Counter::<u64, AtomicU64>::default();
    c.inc_by(value);
    c
}

fn gauge(value: i64) -> Gauge {
    let g = Gauge::default();
    g.set(value);
    g
}

/// The metrics text, from one status snapshot.
pub fn render(shared: &Shared) -> String {
    let s = status(shared);
    let lp = s.get("loop").cloned().unwrap_or_default();
    let mut r = Registry::with_prefix("webfence");

    r.register("up", "1 while the daemon runs", gauge(1));
    let healthy = s.get("healthy").and_then(Value::as_bool) == Some(true);
    r.register(
        "healthy",
        "1 when every log is read and every ban enforced and recorded",
        gauge(i64::from(healthy)),
    );
    r.register("lines_read", "Log lines read", counter(num(&lp, "lines")));
    r.register(
        "lines_malformed",
        "Log lines that could not be parsed",
        counter(num(&lp, "malformed")),
    );
    let behind = Family::<SourceLabel, Gauge>::default();
    let offset = Family::<SourceLabel, Gauge>::default();
    for src in lp
        .get("sources")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let label = SourceLabel {
            source: src.get("path").and_then(Value::as_str).unwrap_or("").into(),
        };
        behind
            .get_or_create(&label)
            .set(num(&src, "behind_bytes") as i64);
        offset.get_or_create(&label).set(num(&src, "offset") as i64);
    }
    r.register(
        "source_behind_bytes",
        "Bytes written to a followed log and not read yet",
        behind,
    );
    r.register(
        "source_read_bytes",
        "Where the follower is in a followed log",
        offset,
    );
    let lag = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    lag.set(lp.get("lag_seconds").and_then(Value::as_f64).unwrap_or(0.0));
    r.register(
        "follow_lag_seconds",
        "How far behind the newest line the follower is",
        lag,
    );

    let decisions = Family::<RuleLabel, Counter>::default();
    let bans = Family::<RuleLabel, Counter>::default();
    for rule in lp
        .get("per_rule")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let label = RuleLabel {
            rule: rule
                .get("rule")
                .and_then(Value::as_str)
                .unwrap_or("")
                .into(),
        };
        decisions
            .get_or_create(&label)
            .inc_by(num(&rule, "decisions"));
        bans.get_or_create(&label).inc_by(num(&rule, "bans"));
    }
    r.register("decisions", "Decisions made, by rule", decisions);
    r.register("bans", "Bans decided, by rule", bans);

    let (active, dropped, backend, batch, engine_ok) = {
        let e = lock(&shared.enforcer);
        let now = e.now();
        let (v4, v6) = e.ledger.active_by_family(now).unwrap_or((0, 0));
        (
            (v4 as i64, v6 as i64),
            e.dropped(),
            e.backend_name().to_string(),
            e.batch_seconds.clone(),
            e.health.ok,
        )
    };
    let in_force = Family::<BansLabel, Gauge>::default();
    for (family, n) in [("ipv4", active.0), ("ipv6", active.1)] {
        in_force
            .get_or_create(&BansLabel {
                backend: backend.clone(),
                family: family.into(),
            })
            .set(n);
    }
    r.register(
        "bans_in_force",
        "Bans in force, by backend and family",
        in_force,
    );
    r.register(
        "backend_healthy",
        "1 while the kernel backend works",
        gauge(i64::from(engine_ok)),
    );
    r.register(
        "ban_batch_seconds",
        "Time to record and apply one batch of bans",
        batch,
    );
    if let Some(d) = dropped {
        r.register(
            "dropped_packets",
            "Packets dropped by webfence's kernel rules",
            counter(d.packets),
        );
        r.register(
            "dropped_bytes",
            "Bytes dropped by webfence's kernel rules",
            counter(d.bytes),
        );
    }

    let firing = Family::<GuardLabel, Gauge>::default();
    for g in lp
        .get("guards")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let label = GuardLabel {
            guard: g.get("name").and_then(Value::as_str).unwrap_or("").into(),
        };
        let on = g.get("state").and_then(Value::as_str) == Some("firing");
        firing.get_or_create(&label).set(i64::from(on));
    }
    r.register("guard_firing", "1 while a guard's condition holds", firing);
    if let Some(l) = lp.get("limits").filter(|l| !l.is_null()) {
        let refused = Family::<LimitLabel, Counter>::default();
        refused
            .get_or_create(&LimitLabel {
                limit: "max_conns".into(),
            })
            .inc_by(num(l, "refused_conns"));
        refused
            .get_or_create(&LimitLabel {
                limit: "new_per_second".into(),
            })
            .inc_by(num(l, "refused_rate"));
        r.register(
            "limit_refused_packets",
            "Packets the kernel connection limits refused",
            refused,
        );
    }

    let list_nets = Family::<ListLabel, Gauge>::default();
    let list_dropped = Family::<ListLabel, Counter>::default();
    let list_ok = Family::<ListLabel, Gauge>::default();
    for b in lp
        .get("blocklists")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let label = ListLabel {
            list: b.get("name").and_then(Value::as_str).unwrap_or("").into(),
        };
        list_nets.get_or_create(&label).set(num(&b, "nets") as i64);
        list_dropped
            .get_or_create(&label)
            .inc_by(num(&b, "dropped_packets"));
        list_ok
            .get_or_create(&label)
            .set(i64::from(b.get("error").is_none_or(Value::is_null)));
    }
    r.register(
        "blocklist_networks",
        "Networks of a blocklist in the kernel",
        list_nets,
    );
    r.register(
        "blocklist_dropped_packets",
        "Packets a blocklist dropped",
        list_dropped,
    );
    r.register(
        "blocklist_fresh",
        "1 when the blocklist's last refresh worked",
        list_ok,
    );

    if let Some(c) = lp.get("crawlers").filter(|c| !c.is_null()) {
        let lookups = Family::<VerdictLabel, Counter>::default();
        for verdict in ["verified", "fake", "unanswered"] {
            lookups
                .get_or_create(&VerdictLabel {
                    verdict: verdict.into(),
                })
                .inc_by(num(c, verdict));
        }
        r.register(
            "crawler_lookups",
            "Reverse-DNS checks of claimed crawlers, by outcome",
            lookups,
        );
        let paused = c.get("paused_until_ms").is_some_and(|p| !p.is_null());
        r.register(
            "crawler_lookups_paused",
            "1 while DNS answers none and claimed crawlers are judged like any client",
            gauge(i64::from(paused)),
        );
    }

    let deliveries = Family::<ChannelLabel, Counter>::default();
    for c in lp
        .get("notify")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let name: String = c.get("name").and_then(Value::as_str).unwrap_or("").into();
        for (result, key) in [("sent", "messages_sent"), ("failed", "messages_failed")] {
            deliveries
                .get_or_create(&ChannelLabel {
                    channel: name.clone(),
                    result: result.into(),
                })
                .inc_by(num(&c, key));
        }
    }
    r.register(
        "notifications",
        "Notification messages, by channel and result",
        deliveries,
    );
    r.register(
        "notification_events_dropped",
        "Events dropped because the notification queue was full",
        counter(num(&lp, "notify_dropped")),
    );
    let hooks = s.get("hooks").cloned().unwrap_or_default();
    r.register(
        "hook_failures",
        "Hook programs that failed or were killed",
        counter(num(&hooks, "failed")),
    );
    r.register(
        "hooks_dropped",
        "Hook runs dropped because their queue was full",
        counter(num(&hooks, "dropped")),
    );
    if let Some(f) = lp.get("farm").filter(|f| !f.is_null()) {
        r.register(
            "farm_connected",
            "1 while Redis takes and gives this node's farm bans",
            gauge(i64::from(
                f.get("state").and_then(Value::as_str) == Some("connected"),
            )),
        );
        r.register(
            "farm_bans_published",
            "Bans and unbans this node published to the farm",
            counter(num(f, "published")),
        );
        r.register(
            "farm_bans_applied",
            "Bans from other nodes applied here",
            counter(num(f, "applied")),
        );
        r.register(
            "farm_bans_refused",
            "Bans from other nodes refused here (allowlist, prefix, expiry)",
            counter(num(f, "refused")),
        );
        r.register(
            "farm_queued",
            "Bans and unbans waiting for Redis",
            gauge(num(f, "queued") as i64),
        );
        r.register(
            "farm_nodes_seen",
            "Nodes of this farm with a heartbeat in Redis, this one included",
            gauge(
                f.get("nodes")
                    .and_then(Value::as_array)
                    .map_or(0, |n| n.len() as i64),
            ),
        );
        r.register(
            "farm_alone",
            "1 while no other node of this farm is seen and the Redis holds other farms (a mistyped name?)",
            gauge(i64::from(
                f.get("other_farms")
                    .and_then(Value::as_array)
                    .is_some_and(|o| !o.is_empty()),
            )),
        );
        if let Some(n) = f.get("farm_bans").and_then(Value::as_i64) {
            r.register(
                "farm_bans_in_force",
                "Bans in force across the farm, as Redis holds them",
                gauge(n),
            );
        }
        if let Some(c) = f.get("counts").filter(|c| !c.is_null()) {
            r.register(
                "farm_count_round_trips",
                "Calls that sent this node's farm-rule counts to Redis",
                counter(num(c, "round_trips")),
            );
            r.register(
                "farm_count_requests",
                "Requests of farm rules counted into Redis",
                counter(num(c, "requests")),
            );
            r.register(
                "farm_count_dropped",
                "Requests of farm rules not shared because Redis was away",
                counter(num(c, "dropped")),
            );
            r.register(
                "farm_count_refused_keys",
                "Farm-rule keys Redis answered with an error (another type), counted on this node alone",
                counter(num(c, "refused_keys")),
            );
        }
    }
    if let Some(p) = lp.get("packets").filter(|p| !p.is_null()) {
        r.register(
            "packets_captured",
            "Packets the packet source captured (after the kernel filter)",
            counter(num(p, "packets")),
        );
        r.register(
            "packet_samples",
            "Packet samples taken",
            counter(num(p, "samples")),
        );
        r.register(
            "packet_capture_working",
            "1 while the packet source's last sample worked",
            gauge(i64::from(p.get("error").is_none_or(Value::is_null))),
        );
    }
    r.register(
        "engine_state_bytes",
        "Memory held by the rules' counting state",
        gauge(num(&lp, "engine_bytes") as i64),
    );

    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &r);
    classic(&out)
}

/// OpenMetrics text as Prometheus's classic text format (0.0.4), which
/// every scraper and `promtool check metrics` read: a counter's HELP and
/// TYPE name its `_total` series, and there is no `# EOF`.
fn classic(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len() + 256);
    for line in open_metrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{p}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Most requests answered at once; past it a connection waits in the
/// kernel's backlog (each event stream of the dashboard holds one).
const MAX_CONNECTIONS: usize = 32;

/// Serves the endpoints (and the dashboard, when `[web]` is on) until the
/// process ends, a thread per connection.
pub fn serve(listener: TcpListener, shared: Shared, web: Arc<WebState>) {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming().flatten() {
        while busy.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            std::thread::sleep(Duration::from_millis(20));
        }
        busy.fetch_add(1, Ordering::SeqCst);
        let (shared, web, busy) = (shared.clone(), web.clone(), busy.clone());
        let spawned = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                answer(stream, &shared, &web);
                busy.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            tracing::warn!("cannot start a thread for an HTTP request");
        }
    }
}

/// Binds the address (errors name it).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}

fn answer(mut stream: TcpStream, shared: &Shared, web: &Arc<WebState>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 2048];
    let mut got = 0;
    // The request line and headers, up to the blank line (or 2 KiB).
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got += n;
                if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let head = String::from_utf8_lossy(&buf[..got]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    if method == "GET" && super::web::answer(&mut stream, shared, web, path, query, &head) {
        return;
    }
    let (code, kind, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(shared),
        ),
        ("GET", "/healthz") => {
            let s = status(shared);
            if s.get("healthy").and_then(Value::as_bool) == Some(true) {
                ("200 OK", "text/plain", "ok\n".to_string())
            } else {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    "degraded\n".to_string(),
                )
            }
        }
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "/metrics or /healthz\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {code}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
