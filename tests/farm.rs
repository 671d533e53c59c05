//! `[farm]` with a real `redis-server` (Debian's, started here on
//! loopback with a password): two daemons share their bans, unbans too;
//! Redis killed and restarted loses nothing and applies nothing twice; a
//! ban on an address one node allowlists is refused there; a wrong
//! password stops the start. Skipped without redis-server unless
//! WEBFENCE_REQUIRE_NETNS is set (scripts/test sets it and installs it).

mod common;

use common::{Proc, ctl_ok, free_port, status_json, until};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_webfence");
const PASSWORD: &str = "s3cret-farm";

fn available() -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("WEBFENCE_REQUIRE_NETNS").is_none(),
            "redis-server is required here"
        );
        eprintln!("skipped: needs redis-server");
    }
    ok
}

fn redis(port: u16) -> Proc {
    redis_with(port, &[])
}

/// `redis`, with more arguments.
fn redis_with(port: u16, more: &[&str]) -> Proc {
    // `more` last: it may override (`--port 0` for TLS only).
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(more)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Proc(child)
}

/// A daemon (no kernel backend) named `node`, in `dir`; `extra` comes
/// first in its configuration.
fn node(dir: &Path, node: &str, port: u16, password: &str, extra: &str) -> (Proc, PathBuf) {
    let farm = format!("redis = \"redis://:{password}@127.0.0.1:{port}/0\"\nname = \"shop\"\n");
    node_with(dir, node, extra, &farm)
}

/// `node`, with `farm` as its `[farm]` section (its `node` added).
fn node_with(dir: &Path, node: &str, extra: &str, farm: &str) -> (Proc, PathBuf) {
    let d = dir.join(node);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("access.log"), "").unwrap();
    let cfg = common::write(
        &d,
        "w.toml",
        &format!(
            "{extra}\n[daemon]\nlogs = [\"{d}/access.log\"]\nformat = \"combined\"\nstate_dir = \"{d}/state\"\nsocket = \"{d}/ctl.sock\"\nbackend = \"none\"\n\
             [farm]\n{farm}node = \"{node}\"\n",
            d = d.display()
        ),
    );
    let child = Command::new(BIN)
        .args(["run", "-c", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let sock = d.join("ctl.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !status_json(&sock)["pid"].is_number() {
        assert!(
            Instant::now() < deadline,
            "{node} did not start: {}",
            std::fs::read_to_string(d.join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (Proc(child), sock)
}

fn bans(sock: &Path) -> Vec<Value> {
    let out = Command::new(BIN)
        .args(["bans", "--json", "--socket"])
        .arg(sock)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `webfence status` as a person reads it.
fn status_text(sock: &Path) -> String {
    let out = Command::new(BIN)
        .args(["status", "--socket"])
        .arg(sock)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn has(sock: &Path, ip: &str) -> Option<Value> {
    bans(sock)
        .into_iter()
        .find(|b| b["ip"] == ip || b["subject"] == ip)
}

#[test]
fn nodes_share_bans_and_survive_redis_going_away() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = redis(port);
    let (_a, sa) = node(dir.path(), "web1", port, PASSWORD, "");
    let (_b, sb) = node(
        dir.path(),
        "web2",
        port,
        PASSWORD,
        "[allowlist]\naddresses = [\"198.51.100.0/24\"]\n",
    );

    // A ban on web1 reaches web2, with its origin and the same expiry.
    ctl_ok(
        &sa,
        &[
            "ban",
            "192.0.2.44",
            "--for",
            "2h",
            "--reason",
            "seen on web1",
        ],
    );
    let took = until("web2 has web1's ban", Duration::from_secs(5), || {
        has(&sb, "192.0.2.44").is_some()
    });
    assert!(took < Duration::from_secs(2), "{took:?}");
    let on_b = has(&sb, "192.0.2.44").unwrap();
    let on_a = has(&sa, "192.0.2.44").unwrap();
    assert_eq!(on_b["origin"], "farm:web1", "{on_b}");
    // Regression: this compared two absent fields (`expires_ms`), so it
    // held whatever the expiries were.
    assert!(on_a["expires"].is_string(), "{on_a}");
    assert_eq!(on_b["expires"], on_a["expires"]);
    assert_eq!(on_b["reason"], "seen on web1");

    // The farm's view, from Redis, names the deciding node.
    let cfg = sb.parent().unwrap().join("w.toml");
    let out = Command::new(BIN)
        .args(["bans", "--farm", "--json", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row: Value = serde_json::from_str(text.lines().next().unwrap_or("null")).unwrap();
    assert_eq!(
        (row["subject"].as_str(), row["node"].as_str()),
        (Some("192.0.2.44"), Some("web1")),
        "{text}"
    );
    let text = status_text(&sb);
    assert!(
        text.contains("farm      node web2 of 'shop' at redis://:***@127.0.0.1"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");

    // An unban on web1 is an unban on web2.
    ctl_ok(&sa, &["unban", "192.0.2.44"]);
    until("web2 lifts it", Duration::from_secs(5), || {
        has(&sb, "192.0.2.44").is_none()
    });

    // web2 allowlists 198.51.100.0/24: web1's ban of an address in it is
    // refused there (and kept on web1).
    ctl_ok(&sa, &["ban", "198.51.100.9"]);
    until("web2 refuses", Duration::from_secs(5), || {
        status_json(&sb)["loop"]["farm"]["refused"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    assert!(has(&sb, "198.51.100.9").is_none());
    assert!(has(&sa, "198.51.100.9").is_some());

    // Both see each other.
    until("heartbeats", Duration::from_secs(10), || {
        status_json(&sa)["loop"]["farm"]["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 2)
    });

    // Redis goes away: both say so, and keep banning locally.
    let _ = server.0.kill();
    let _ = server.0.wait();
    until("web1 degraded", Duration::from_secs(10), || {
        status_json(&sa)["loop"]["farm"]["state"] == "degraded"
    });
    let s = status_json(&sa);
    assert_eq!(
        s["protecting"], false,
        "a degraded farm is a problem: {s:#}"
    );
    assert!(
        s["all_problems"].to_string().contains("farm degraded"),
        "{s:#}"
    );
    ctl_ok(&sa, &["ban", "203.0.113.77", "--for", "1h"]);
    assert!(has(&sa, "203.0.113.77").is_some(), "local bans go on");
    assert!(
        status_json(&sa)["loop"]["farm"]["queued"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    );

    // Redis is back (empty: no persistence): the queued ban is published,
    // web2 applies it once, nothing else changes.
    server = redis(port);
    until("web2 gets the queued ban", Duration::from_secs(15), || {
        has(&sb, "203.0.113.77").is_some()
    });
    until("web1 connected", Duration::from_secs(10), || {
        status_json(&sa)["loop"]["farm"]["state"] == "connected"
    });
    until("web2 connected", Duration::from_secs(10), || {
        status_json(&sb)["loop"]["farm"]["state"] == "connected"
    });
    assert_eq!(status_json(&sa)["loop"]["farm"]["queued"], 0);
    let rows: Vec<Value> = bans(&sb)
        .into_iter()
        .filter(|b| b["ip"] == "203.0.113.77")
        .collect();
    assert_eq!(rows.len(), 1, "applied once: {rows:?}");
    drop(server);
}

#[test]
fn a_wrong_password_is_refused_at_the_start() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = redis(port);
    let d = dir.path();
    std::fs::write(d.join("access.log"), "").unwrap();
    let cfg = common::write(
        d,
        "w.toml",
        &format!(
            "[daemon]\nlogs = [\"{d}/access.log\"]\nformat = \"combined\"\nstate_dir = \"{d}/state\"\nsocket = \"{d}/ctl.sock\"\nbackend = \"none\"\n\
             [farm]\nredis = \"redis://:wrong@127.0.0.1:{port}/0\"\n",
            d = d.display()
        ),
    );
    let out = Command::new(BIN)
        .args(["run", "-c", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused this node's credentials"), "{err}");
    assert!(
        err.contains("redis://:***@127.0.0.1"),
        "the password is not shown: {err}"
    );
    assert!(!err.contains(":wrong@"), "{err}");
}

/// Appends `n` requests for `path` from `ip`, stamped now, to a node's log.
fn append(sock: &Path, ip: &str, path: &str, n: usize) {
    use std::io::Write;
    let log = sock.parent().unwrap().join("access.log");
    let stamp = jiff::Zoned::now()
        .strftime("%d/%b/%Y:%H:%M:%S %z")
        .to_string();
    let mut f = std::fs::OpenOptions::new().append(true).open(log).unwrap();
    let mut text = String::new();
    for _ in 0..n {
        text.push_str(&common::line(
            ip,
            &stamp,
            &format!("GET {path} HTTP/1.1"),
            200,
            512,
            "spread-bot",
        ));
        text.push('\n');
    }
    f.write_all(text.as_bytes()).unwrap();
}

const FARM_RULES: &str = "default_rules = false\n\
    [rules.farm-flood]\nkind = \"rate\"\nscope = \"farm\"\nlimit = 30\nwindow = \"10s\"\nmatch.path.prefix = [\"/farm\"]\naction = \"ban\"\nduration = \"1h\"\n\
    [rules.local-flood]\nkind = \"rate\"\nlimit = 30\nwindow = \"10s\"\nmatch.path.prefix = [\"/local\"]\naction = \"ban\"\nduration = \"1h\"\n";

/// A client spreading 45 requests over three nodes (15 each, under the
/// limit of 30 on every one) is banned by the farm rule, everywhere; the
/// same traffic against a local rule is not. Banned again later on
/// another node, the ban is twice as long: the farm's history escalates.
#[test]
fn a_flood_spread_over_the_farm_is_banned_by_a_farm_rule() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = redis(port);
    let nodes: Vec<(Proc, PathBuf)> = ["web1", "web2", "web3"]
        .iter()
        .map(|n| node(dir.path(), n, port, PASSWORD, FARM_RULES))
        .collect();
    for (_, sock) in &nodes {
        append(sock, "192.0.2.80", "/farm/item", 15);
        append(sock, "192.0.2.81", "/local/item", 15);
    }
    for (_, sock) in &nodes {
        until(
            "the farm rule bans the spread flood",
            Duration::from_secs(5),
            || has(sock, "192.0.2.80").is_some(),
        );
    }
    let bans_of: Vec<Value> = nodes
        .iter()
        .filter_map(|(_, s)| has(s, "192.0.2.80"))
        .collect();
    let decided: Vec<&Value> = bans_of.iter().filter(|b| b["origin"] == "rule").collect();
    assert_eq!(
        decided.len(),
        1,
        "decided once, applied by the others: {bans_of:?}"
    );
    let reason = decided[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("across the farm"), "{reason}");
    std::thread::sleep(Duration::from_millis(500));
    for (_, sock) in &nodes {
        assert!(
            has(sock, "192.0.2.81").is_none(),
            "a local rule counts one node"
        );
    }
    let s = status_json(&nodes[0].1);
    let counts = &s["loop"]["farm"]["counts"];
    assert!(counts["round_trips"].as_u64().unwrap_or(0) >= 1, "{s:#}");
    assert_eq!(counts["requests"], 15, "the /farm requests only: {s:#}");
    let text = status_text(&nodes[0].1);
    assert!(text.contains("farm counts: 15 requests of"), "{text}");
    assert!(text.contains("bans in force across the farm"), "{text}");

    // Lifted, then banned again on one node alone: a second ban, twice as
    // long, wherever the first was decided.
    let first = decided[0]["duration_s"].as_i64().unwrap();
    ctl_ok(&nodes[0].1, &["unban", "192.0.2.80"]);
    for (_, sock) in &nodes {
        until("lifted everywhere", Duration::from_secs(5), || {
            has(sock, "192.0.2.80").is_none()
        });
    }
    // Another node than the one that decided first (every node held the
    // ban, in order).
    let decider = bans_of.iter().position(|b| b["origin"] == "rule").unwrap();
    let second_node = &nodes[(decider + 1) % 3].1;
    append(second_node, "192.0.2.80", "/farm/again", 31);
    let deadline = Instant::now() + Duration::from_secs(5);
    while has(second_node, "192.0.2.80").is_none() {
        assert!(
            Instant::now() < deadline,
            "never banned again on {}: {}",
            second_node.display(),
            std::fs::read_to_string(second_node.parent().unwrap().join("daemon.log"))
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let again = has(second_node, "192.0.2.80").unwrap();
    assert_eq!(again["origin"], "rule", "{again}");
    assert_eq!(first, 3600);
    assert_eq!(
        again["duration_s"], 7200,
        "escalated across the farm: {again}"
    );
    assert_eq!(again["repeat"], 1, "{again}");
}

/// A node whose farm name is mistyped shares nothing; it says so in its
/// log and in `status`, naming the farms the Redis holds.
#[test]
fn a_mistyped_farm_name_is_named_in_status() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = redis(port);
    let (_a, sa) = node(dir.path(), "web1", port, PASSWORD, "");
    until("web1's heartbeat", Duration::from_secs(10), || {
        status_json(&sa)["loop"]["farm"]["nodes"]
            .as_array()
            .is_some_and(|n| !n.is_empty())
    });
    let farm = format!("redis = \"redis://:{PASSWORD}@127.0.0.1:{port}/0\"\nname = \"shopp\"\n");
    let metrics_port = free_port();
    let metrics = format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n");
    let (_b, sb) = node_with(dir.path(), "web2", &metrics, &farm);
    until("web2 looks for its farm", Duration::from_secs(10), || {
        status_json(&sb)["loop"]["farm"]["other_farms"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    });
    let text = status_text(&sb);
    assert!(
        text.contains("ALONE: no other node of 'shopp' seen; this Redis holds farm(s) shop. Is [farm] name right?"),
        "{text}"
    );
    let log = std::fs::read_to_string(sb.parent().unwrap().join("daemon.log")).unwrap();
    assert!(log.contains("no other node of farm 'shopp'"), "{log}");
    let body = scrape(metrics_port);
    assert!(body.contains("webfence_farm_alone 1"), "{body}");
    common::promtool_accepts(&body);
    // web1, in a farm with a node seen (itself), is not alone among
    // others: its farm is the only one it could mean.
    let s = status_json(&sa);
    assert_eq!(
        s["loop"]["farm"]["other_farms"],
        serde_json::json!([]),
        "{s:#}"
    );
}

/// Redis with a replica and a sentinel: the nodes find the master through
/// the sentinel, and after the master dies and the sentinel promotes the
/// replica, they find the new one and share bans again.
#[test]
fn nodes_follow_a_sentinel_failover() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mport, rport, sport) = (free_port(), free_port(), free_port());
    let mut master = redis(mport);
    let replica = redis_with(
        rport,
        &[
            "--masterauth",
            PASSWORD,
            "--replicaof",
            "127.0.0.1",
            &mport.to_string(),
        ],
    );
    let conf = common::write(
        dir.path(),
        "sentinel.conf",
        &format!(
            "port {sport}\nbind 127.0.0.1\nsentinel monitor shop-master 127.0.0.1 {mport} 1\n\
             sentinel auth-pass shop-master {PASSWORD}\nsentinel down-after-milliseconds shop-master 1000\n\
             sentinel failover-timeout shop-master 3000\n"
        ),
    );
    let _sentinel = Proc(
        Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    until("the sentinel answers", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", sport)).is_ok()
    });
    // The URL's host is not used: the sentinel names the master.
    let farm = format!(
        "redis = \"redis://:{PASSWORD}@unused.invalid:1/0\"\nname = \"shop\"\n\
         sentinel = [\"redis://127.0.0.1:{sport}\"]\nsentinel_master = \"shop-master\"\n"
    );
    let (_a, sa) = node_with(dir.path(), "web1", "", &farm);
    let (_b, sb) = node_with(dir.path(), "web2", "", &farm);
    ctl_ok(&sa, &["ban", "192.0.2.61", "--for", "1h"]);
    until("web2 has the ban", Duration::from_secs(10), || {
        has(&sb, "192.0.2.61").is_some()
    });
    let s = status_json(&sa);
    assert!(
        s["loop"]["farm"]["redis"]
            .as_str()
            .is_some_and(|r| r.contains("master 'shop-master' of sentinels redis://127.0.0.1")),
        "{s:#}"
    );

    // The master dies; the sentinel promotes the replica.
    let _ = master.0.kill();
    let _ = master.0.wait();
    ctl_ok(&sa, &["ban", "192.0.2.62", "--for", "1h"]);
    until(
        "web2 has the ban made during the failover",
        Duration::from_secs(30),
        || has(&sb, "192.0.2.62").is_some(),
    );
    for sock in [&sa, &sb] {
        until(
            "connected to the new master",
            Duration::from_secs(10),
            || status_json(sock)["loop"]["farm"]["state"] == "connected",
        );
    }
    ctl_ok(&sb, &["ban", "192.0.2.63", "--for", "1h"]);
    until("web1 has web2's ban", Duration::from_secs(10), || {
        has(&sa, "192.0.2.63").is_some()
    });
    drop(replica);
}

/// A reload that changes `[farm]` keeps the running farm and says a
/// restart is needed; its rules change at once.
#[test]
fn a_reload_keeps_the_farm_it_started_with() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = redis(port);
    let (_a, sa) = node(dir.path(), "web1", port, PASSWORD, "");
    let (_b, sb) = node(dir.path(), "web2", port, PASSWORD, "");
    let cfg = sa.parent().unwrap().join("w.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("name = \"shop\"", "name = \"elsewhere\""),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["reload", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(sa.parent().unwrap().join("daemon.log")).unwrap();
    assert!(
        log.contains("[farm] changed: it takes effect after a restart"),
        "{log}"
    );
    // Still in farm "shop": web2 gets web1's ban.
    ctl_ok(&sa, &["ban", "192.0.2.91", "--for", "1h"]);
    until("web2 has the ban", Duration::from_secs(5), || {
        has(&sb, "192.0.2.91").is_some()
    });
}

/// Makes a CA, and a certificate for `name` it signs (`server`: for
/// 127.0.0.1), with openssl; returns the CA's path.
fn certificates(dir: &Path, names: &[(&str, bool)]) -> PathBuf {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=webfence test CA",
    ]);
    for (name, server) in names {
        let ext = dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            if *server {
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
            } else {
                "extendedKeyUsage=clientAuth\n"
            },
        )
        .unwrap();
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            ext.to_str().unwrap(),
        ]);
    }
    dir.join("ca.pem")
}

/// rediss:// with a private CA and client certificates: nodes holding the
/// CA and a certificate share bans; a node without the CA does not trust
/// the server and says so (degraded, the certificate named), and a bad
/// setting is located.
#[test]
fn tls_with_a_private_ca_and_client_certificates() {
    if !available() {
        return;
    }
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("WEBFENCE_REQUIRE_NETNS").is_none(),
            "openssl is required here"
        );
        eprintln!("skipped: needs openssl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let ca = certificates(&certs, &[("server", true), ("node", false)]);
    let c = |f: &str| certs.join(f).display().to_string();
    let port = free_port();
    let _server = redis_with(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &c("server.pem"),
            "--tls-key-file",
            &c("server.key"),
            "--tls-ca-cert-file",
            &c("ca.pem"),
            "--tls-auth-clients",
            "yes",
        ],
    );
    let farm = |tls: &str| {
        format!("redis = \"rediss://:{PASSWORD}@127.0.0.1:{port}/0\"\nname = \"shop\"\n{tls}")
    };
    let full = format!(
        "tls_ca = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        ca.display(),
        c("node.pem"),
        c("node.key")
    );
    let (_a, sa) = node_with(dir.path(), "web1", "", &farm(&full));
    let (_b, sb) = node_with(dir.path(), "web2", "", &farm(&full));
    ctl_ok(&sa, &["ban", "192.0.2.71", "--for", "1h"]);
    until("web2 has the ban over TLS", Duration::from_secs(10), || {
        has(&sb, "192.0.2.71").is_some()
    });

    // No CA: the server's certificate is not trusted.
    let (_c, sc) = node_with(dir.path(), "web3", "", &farm(""));
    until("web3 degraded", Duration::from_secs(10), || {
        status_json(&sc)["loop"]["farm"]["state"] == "degraded"
    });
    let s = status_json(&sc);
    let error = s["loop"]["farm"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(error.contains("certificate"), "{s:#}");
    assert!(has(&sc, "192.0.2.71").is_none());

    // A client certificate without its key is located at the start.
    let d = dir.path().join("web4");
    std::fs::create_dir_all(&d).unwrap();
    let cfg = common::write(
        &d,
        "w.toml",
        &format!(
            "[daemon]\nlogs = [\"{d}/access.log\"]\nbackend = \"none\"\n[farm]\n{}tls_cert = \"{}\"\n",
            farm(""),
            c("node.pem"),
            d = d.display()
        ),
    );
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("w.toml:7:12: tls_cert and tls_key go together"),
        "{err}"
    );
}

/// A count key of another type (written by something else sharing the
/// Redis) spoils only itself: that client is counted on each node alone,
/// every other key across the farm as before, and `status` counts it.
#[test]
fn a_count_key_of_another_type_spoils_only_itself() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = redis(port);
    redis_cli(
        port,
        &["SET", "shop:count:farm-flood:10:192.0.2.99", "not a hash"],
    );
    let metrics_port = free_port();
    let nodes: Vec<(Proc, PathBuf)> = ["web1", "web2"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let metrics = if i == 0 {
                format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n")
            } else {
                String::new()
            };
            node(
                dir.path(),
                n,
                port,
                PASSWORD,
                &format!("{FARM_RULES}{metrics}"),
            )
        })
        .collect();
    for (_, sock) in &nodes {
        append(sock, "192.0.2.99", "/farm/item", 20);
        append(sock, "192.0.2.80", "/farm/item", 20);
    }
    for (_, sock) in &nodes {
        until("the healthy key is shared", Duration::from_secs(5), || {
            has(sock, "192.0.2.80").is_some()
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut refused = 0;
    for (_, sock) in &nodes {
        assert!(
            has(sock, "192.0.2.99").is_none(),
            "counted on each node alone"
        );
        let s = status_json(sock);
        let counts = &s["loop"]["farm"]["counts"];
        assert_eq!(counts["dropped"], 0, "{s:#}");
        assert_eq!(s["loop"]["farm"]["state"], "connected", "{s:#}");
        refused += counts["refused_keys"].as_u64().unwrap_or(0);
    }
    assert!(refused >= 2, "both nodes counted the refused key");
    let text = status_text(&nodes[0].1);
    assert!(
        text.contains("keys refused by Redis (another type: see the log)"),
        "{text}"
    );
    let log = std::fs::read_to_string(nodes[0].1.parent().unwrap().join("daemon.log")).unwrap();
    assert!(
        log.contains("Redis refused a key") && log.contains("shop:count:farm-flood:10:192.0.2.99"),
        "{log}"
    );
    // The farm's figures in /metrics (heartbeats come every 2 s).
    until("both nodes in /metrics", Duration::from_secs(10), || {
        scrape(metrics_port).contains("webfence_farm_nodes_seen 2")
    });
    let body = scrape(metrics_port);
    for name in [
        "webfence_farm_connected 1",
        "webfence_farm_count_round_trips_total ",
        "webfence_farm_count_requests_total 40",
        "webfence_farm_count_dropped_total 0",
        "webfence_farm_count_refused_keys_total ",
        "webfence_farm_nodes_seen 2",
        "webfence_farm_alone 0",
    ] {
        assert!(body.contains(name), "{name} in {body}");
    }
    common::promtool_accepts(&body);
}

/// A daemon's `/metrics`.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut http = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    http.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    http.read_to_string(&mut body).unwrap();
    body
}

/// `redis-cli` against the test's Redis.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "-a", PASSWORD, "--no-auth-warning"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Expired bans leave the hash of bans in force and subjects not banned
/// for 90 days leave the history, pruned by one node of the farm a turn;
/// what is still in force or remembered stays.
#[test]
fn one_node_prunes_what_expired() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = redis(port);
    let now = jiff::Timestamp::now().as_millisecond();
    let ban = |subject: &str, expires: i64| {
        format!(
            "{{\"op\":\"ban\",\"node\":\"web9\",\"subject\":\"{subject}\",\"rule\":\"flood\",\"started_ms\":{},\"expires_ms\":{expires}}}",
            expires - 3_600_000
        )
    };
    redis_cli(
        port,
        &[
            "HSET",
            "shop:active",
            "192.0.2.1",
            &ban("192.0.2.1", now - 1000),
            "192.0.2.2",
            &ban("192.0.2.2", now + 3_600_000),
            "192.0.2.3",
            "not json",
        ],
    );
    let old = format!("2:{}", now - 91 * 86_400_000);
    let recent = format!("1:{}", now - 86_400_000);
    redis_cli(
        port,
        &[
            "HSET",
            "shop:history",
            "192.0.2.4",
            &old,
            "192.0.2.5",
            &recent,
        ],
    );
    let (_a, _sa) = node(dir.path(), "web1", port, PASSWORD, "");
    let (_b, _sb) = node(dir.path(), "web2", port, PASSWORD, "");
    until("the prune", Duration::from_secs(10), || {
        redis_cli(port, &["HLEN", "shop:active"]) == "1"
    });
    assert_eq!(redis_cli(port, &["HKEYS", "shop:active"]), "192.0.2.2");
    until("the history pruned", Duration::from_secs(10), || {
        redis_cli(port, &["HKEYS", "shop:history"]) == "192.0.2.5"
    });
    // One node had the turn, for five minutes.
    let turn = redis_cli(port, &["GET", "shop:prune"]);
    assert!(turn == "web1" || turn == "web2", "{turn}");
    let ttl: i64 = redis_cli(port, &["PTTL", "shop:prune"]).parse().unwrap();
    assert!((200_000..=300_000).contains(&ttl), "{ttl}");
}
