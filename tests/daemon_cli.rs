//! The daemon's command line without privileges: configuration errors,
//! address-file errors, an unreachable daemon, and `run --dry-run` and
//! `--backend none` driven through the control commands.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{fails_with, webfence, write};
use predicates::prelude::*;

#[test]
fn run_needs_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "w.toml", "[daemon]\nbackend = \"none\"\n");
    webfence()
        .args(["run", "-c"])
        .arg(&cfg)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "no log to follow: set [daemon] logs",
        ));
}

#[test]
fn bad_daemon_settings_are_located_by_run_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "w.toml",
        "[daemon]\nlogs = [\"/tmp/x.log\"]\nbackend = \"pf\"\non_ban = [\"bash\", \"-c\", \"notify {reason}\"]\n",
    );
    for cmd in ["run", "check"] {
        webfence()
            .args([cmd, "-c"])
            .arg(&cfg)
            .assert()
            .failure()
            .stderr(predicate::str::contains(
                "w.toml:3:11: unknown backend 'pf'",
            ))
            .stderr(predicate::str::contains(
                "w.toml:4:25: the placeholder {reason} would put text from the logs into an argument",
            ));
    }
}

#[test]
fn bad_lines_in_an_address_file_ban_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let list = write(
        dir.path(),
        "ips.txt",
        "203.0.113.7\n# a comment\n\n10.0.0.0/8  # office\nnope\n2001:db8::/300\n",
    );
    webfence()
        .args(["ban", "--socket", "/nonexistent/sock", "--file"])
        .arg(&list)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "nothing banned; some addresses are invalid",
        ))
        .stderr(predicate::str::contains(
            "ips.txt:5: 'nope' is not an IP address or CIDR",
        ))
        .stderr(predicate::str::contains(
            "ips.txt:6: '2001:db8::/300' is not an IP address or CIDR",
        ));
}

#[test]
fn an_absent_daemon_is_named() {
    // status and bans still answer from the ledger (below); the commands
    // that change something need the daemon.
    for args in [vec!["unban", "--all"], vec!["ban", "203.0.113.7"]] {
        webfence()
            .args(&args)
            .args(["--socket", "/nonexistent/webfence.sock"])
            .assert()
            .failure()
            .stderr(predicate::str::contains(
                "cannot reach the webfence daemon at /nonexistent/webfence.sock",
            ));
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "w.toml",
        &format!("[daemon]\nstate_dir = \"{}\"\n", dir.path().display()),
    );
    webfence()
        .args(["status", "--socket", "/nonexistent/webfence.sock", "-c"])
        .arg(&cfg)
        .assert()
        .code(3)
        .stdout(predicate::str::contains("webfence run is NOT RUNNING"))
        .stdout(predicate::str::contains("ledger    none at"));
    webfence()
        .args(["bans", "--socket", "/nonexistent/webfence.sock", "-c"])
        .arg(&cfg)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "the daemon is not running and there is no ledger at",
        ));
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, extra: &[&str]) -> Daemon {
    start_with(dir, "", extra)
}

/// `start`, with more configuration after the trigger rule.
fn start_with(dir: &Path, rules: &str, extra: &[&str]) -> Daemon {
    let log = dir.join("access.log");
    if !log.exists() {
        std::fs::write(&log, "").unwrap();
    }
    let cfg = write(
        dir,
        "w.toml",
        &format!(
            "[daemon]\nlogs = [\"{d}/access.log\"]\nformat = \"combined\"\nstate_dir = \"{d}/state\"\nsocket = \"{d}/ctl.sock\"\nbackend = \"none\"\n\
             [rules.trigger]\nkind = \"match\"\nmatch.path.exact = [\"/trigger\"]\naction = \"ban\"\n{rules}",
            d = dir.display()
        ),
    );
    start_config(dir, &cfg, extra)
}

/// Runs the daemon on a written configuration and waits for its socket
/// (`DIR/ctl.sock`) to answer.
fn start_config(dir: &Path, cfg: &Path, extra: &[&str]) -> Daemon {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_webfence"))
        .args(["run", "-c"])
        .arg(cfg)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    wait_daemon(dir);
    Daemon(child)
}

/// Waits until the daemon answers on `DIR/ctl.sock`.
fn wait_daemon(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while webfence()
        .arg("status")
        .arg("--socket")
        .arg(dir.join("ctl.sock"))
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ctl(dir: &Path, args: &[&str]) -> assert_cmd::assert::Assert {
    webfence()
        .args(args)
        .arg("--socket")
        .arg(dir.join("ctl.sock"))
        .assert()
}

#[test]
fn manual_bans_through_the_socket_with_the_none_backend() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let daemon = start(d, &[]);
    ctl(
        d,
        &[
            "ban",
            "203.0.113.7",
            "198.51.100.0/24",
            "--for",
            "2h",
            "--reason",
            "scraper",
        ],
    )
    .success()
    .stdout("banned 2 for 2h\n");
    // Loopback is allowlisted: refused without --force, the rest is banned.
    ctl(d, &["ban", "127.0.0.1", "203.0.113.8"])
        .failure()
        .stderr(predicate::str::contains(
            "refused 127.0.0.1: on the allowlist (",
        ));
    ctl(d, &["ban", "127.0.0.1", "--force", "--for", "1m"]).success();
    // A typed reason is shown escaped: no terminal control, no bidi trick.
    ctl(
        d,
        &["ban", "192.0.2.99", "--reason", "a\x1b[2Jb\nc\u{202e}d"],
    )
    .success();
    ctl(d, &["bans"])
        .success()
        .stdout(predicate::str::contains("a\\x1b[2Jb\\x0ac\\u{202e}d"))
        .stdout(predicate::str::contains("\x1b").not());
    ctl(d, &["unban", "192.0.2.99"]).success();
    ctl(d, &["bans"])
        .success()
        .stdout(predicate::str::contains("203.0.113.7").and(predicate::str::contains("scraper")))
        .stdout(
            predicate::str::contains("198.51.100.0/24").and(predicate::str::contains("1h 59m")),
        );
    ctl(d, &["bans", "--ip", "198.51.100.0/16", "--json"])
        .success()
        .stdout(
            predicate::str::contains("\"cidr\":\"198.51.100.0/24\"")
                .and(predicate::str::contains("203.0.113").not()),
        );
    ctl(d, &["unban", "203.0.113.7", "192.0.2.55"])
        .success()
        .stdout("unbanned 1\n")
        .stderr(predicate::str::contains("192.0.2.55 was not banned"));
    ctl(d, &["status"])
        .success()
        .stdout(predicate::str::contains("backend   none ok"))
        .stdout(predicate::str::contains("malformed; format combined\n"))
        .stdout(predicate::str::contains("bans      3 in force, 5 recorded"))
        .stdout(predicate::str::contains(
            "access.log  read 0 of 0 bytes, up to date",
        ));
    drop(daemon);

    // With the daemon down, bans are read from the ledger, saying so.
    let cfg = d.join("w.toml");
    let cfg = cfg.to_str().unwrap();
    ctl(d, &["bans", "-c", cfg])
        .success()
        .stderr(predicate::str::contains(
            "the daemon is not running; read from the ledger",
        ))
        .stdout(predicate::str::contains("203.0.113.8"));
    // History: when and how each ban ended.
    ctl(d, &["bans", "--history", "-c", cfg])
        .success()
        .stdout(predicate::str::contains("ENDED").and(predicate::str::contains("HOW")))
        .stdout(predicate::str::contains(" unban "));
    // JSON uses replay's names and RFC 3339 times.
    let out = webfence()
        .args(["bans", "--json", "--history", "-c", cfg, "--socket"])
        .arg(d.join("ctl.sock"))
        .output()
        .unwrap();
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let net = rows
        .iter()
        .find(|r| r["cidr"] == "198.51.100.0/24")
        .unwrap();
    assert_eq!(net["rule"], "manual");
    assert_eq!(net["reason"], "scraper");
    assert_eq!(net["duration_s"], 7200);
    assert!(
        net["started"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    assert!(
        rows.iter()
            .any(|r| r["ip"] == "203.0.113.7" && r["ended_by"] == "unban")
    );

    // The ledger outlives the daemon: a restart finds the bans and history.
    let _daemon = start(d, &[]);
    ctl(d, &["bans", "--history", "--json"])
        .success()
        .stdout(predicate::str::contains("\"ended_by\":\"unban\""));
    ctl(d, &["unban", "--all"]).success().stdout("unbanned 3\n");
    ctl(d, &["bans"])
        .success()
        .stderr(predicate::str::contains("no bans in force"));
}

#[test]
fn dry_run_decides_and_logs_but_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let daemon = start(d, &["--dry-run"]);
    let stamp = jiff::Zoned::now()
        .strftime("%d/%b/%Y:%H:%M:%S %z")
        .to_string();
    let line =
        format!("198.18.0.9 - - [{stamp}] \"GET /trigger HTTP/1.1\" 404 10 \"-\" \"curl\"\n");
    std::fs::write(d.join("access.log"), line).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(d.join("daemon.log")).unwrap();
        if log.contains("would ban") {
            assert!(log.contains("ip=198.18.0.9"), "{log}");
            break;
        }
        assert!(Instant::now() < deadline, "no decision logged:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    ctl(d, &["status"])
        .success()
        .stdout(predicate::str::contains("dry run: nothing is enforced"))
        .stdout(predicate::str::contains("1 would be in force (dry run)"));
    // Regression: in a dry run `bans` listed the ban like a real one and
    // `ban` said "banned".
    ctl(d, &["bans"]).success().stdout(predicate::str::contains(
        "dry run: these bans would be made",
    ));
    ctl(d, &["ban", "192.0.2.77"])
        .success()
        .stdout(predicate::str::starts_with("would ban 1 for 1h (dry run"));
    drop(daemon);
    assert!(
        !d.join("state/ledger.db").exists(),
        "a dry run wrote a ledger"
    );
    assert!(
        !d.join("state/checkpoints.json").exists(),
        "a dry run wrote checkpoints"
    );
}

fn terminate(mut daemon: Daemon) {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(daemon.0.id() as i32, libc::SIGTERM);
    }
    assert!(
        daemon.0.wait().unwrap().success(),
        "SIGTERM is a clean stop"
    );
}

fn status_json(d: &Path) -> serde_json::Value {
    let out = webfence()
        .args(["status", "--json", "--socket"])
        .arg(d.join("ctl.sock"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `webfence status` as text.
fn status_text(d: &Path) -> String {
    let out = webfence()
        .args(["status", "--socket"])
        .arg(d.join("ctl.sock"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_lines(d: &Path, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_json(d)["loop"]["lines"].as_u64() != Some(n) {
        assert!(
            Instant::now() < deadline,
            "lines read: {}, expected {n}",
            status_json(d)["loop"]["lines"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

fn lines(ips: &[&str], path: &str) -> String {
    let stamp = jiff::Zoned::now().strftime("%d/%b/%Y:%H:%M:%S %z");
    ips.iter()
        .map(|ip| format!("{ip} - - [{stamp}] \"GET {path} HTTP/1.1\" 404 10 \"-\" \"curl\"\n"))
        .collect()
}

#[test]
fn a_restart_resumes_the_logs_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log = d.join("access.log");
    std::fs::write(&log, "").unwrap();
    let daemon = start(d, &[]);
    append(&log, &lines(&["198.18.0.1", "198.18.0.2"], "/trigger"));
    append(&log, &lines(&["198.18.0.3"], "/fine"));
    wait_lines(d, 3);
    terminate(daemon);

    // Written while the daemon is down: read after the restart, once.
    append(&log, &lines(&["198.18.0.4"], "/trigger"));
    append(&log, &lines(&["198.18.0.5"], "/fine"));
    let _daemon = start(d, &[]);
    wait_lines(d, 2);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status_json(d)["loop"]["lines"], 2, "lines were read twice");
    assert!(
        std::fs::read_to_string(d.join("daemon.log"))
            .unwrap()
            .contains("resuming where the logs were left")
    );
    assert_eq!(
        banned(d, &["--history"]),
        ["\"198.18.0.1\"", "\"198.18.0.2\"", "\"198.18.0.4\""],
        "each offender banned exactly once"
    );
}

#[test]
fn many_addresses_are_banned_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _daemon = start(d, &[]);
    let list: String = (1..=300)
        .map(|i| format!("198.18.{}.{}\n", i / 200, i % 200 + 1))
        .collect();
    webfence()
        .args(["ban", "--file", "-", "--for", "10m", "--socket"])
        .arg(d.join("ctl.sock"))
        .write_stdin(format!("# from the firewall\n{list}2001:db8::/48\n"))
        .assert()
        .success()
        .stdout("banned 301 for 10m\n");
    assert_eq!(status_json(d)["bans"]["active"], 301);
}

/// Regression: the engine learnt of a lifted ban only after the lines
/// that woke the loop, so a client unbanned while the daemon slept could
/// repeat what got it banned once without being banned again.
#[test]
fn a_client_unbanned_is_judged_on_its_very_next_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The log alone in its directory: the daemon's own log lines would
    // wake the loop (inotify) and hide the bug.
    std::fs::create_dir(d.join("logs")).unwrap();
    let log = d.join("logs/access.log");
    std::fs::write(&log, "").unwrap();
    let cfg = write(
        d,
        "w.toml",
        &format!(
            "[daemon]\nlogs = [\"{l}\"]\nformat = \"combined\"\nstate_dir = \"{d}/state\"\nsocket = \"{d}/ctl.sock\"\nbackend = \"none\"\n\
             [rules.trigger]\nkind = \"match\"\nmatch.path.exact = [\"/trigger\"]\naction = \"ban\"\n",
            l = log.display(),
            d = d.display()
        ),
    );
    let _daemon = start_config(d, &cfg, &[]);
    for round in 0..3 {
        ctl(d, &["ban", "192.0.2.50"]).success();
        // The loop sleeps between lines: the ban reaches the engine.
        std::thread::sleep(Duration::from_millis(300));
        ctl(d, &["unban", "192.0.2.50"]).success();
        append(&log, &lines(&["192.0.2.50"], "/trigger"));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let bans = ctl(d, &["bans", "--json"]).success();
            let out = String::from_utf8_lossy(&bans.get_output().stdout).to_string();
            if out.contains("\"rule\":\"trigger\"") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: not banned again: {out}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ctl(d, &["unban", "192.0.2.50"]).success();
    }
}

#[test]
fn a_flood_of_bans_logs_the_first_fifty_then_one_summary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _daemon = start(d, &[]);
    let ips: Vec<String> = (1..=80).map(|i| format!("198.18.1.{i}")).collect();
    let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
    append(&d.join("access.log"), &lines(&ips, "/trigger"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_json(d)["bans"]["active"] != 80 {
        assert!(Instant::now() < deadline, "{}", status_json(d));
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(d.join("daemon.log")).unwrap();
    let each = log
        .lines()
        .filter(|l| l.contains("INFO ban: request matched"))
        .count();
    let summed: usize = log
        .lines()
        .filter_map(|l| {
            l.split("ban: ")
                .nth(1)?
                .split(" more in this batch")
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert!(summed > 0, "no summary line:\n{log}");
    assert_eq!(each + summed, 80, "{log}");
}

fn wait_log(d: &Path, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(d.join("daemon.log")).unwrap();
        if log.contains(text) {
            return log;
        }
        assert!(Instant::now() < deadline, "no '{text}' in:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hup(daemon: &Daemon) {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(daemon.0.id() as i32, libc::SIGHUP);
    }
}

/// The subjects `webfence bans --json EXTRA` lists, sorted, as JSON text.
fn banned(d: &Path, extra: &[&str]) -> Vec<String> {
    let out = webfence()
        .args(["bans", "--json"])
        .args(extra)
        .arg("--socket")
        .arg(d.join("ctl.sock"))
        .output()
        .unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v = serde_json::from_str::<serde_json::Value>(l).unwrap();
            v.get("ip").or_else(|| v.get("cidr")).unwrap().to_string()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn sighup_reloads_the_rules_and_a_bad_configuration_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let daemon = start(d, &[]);
    let cfg = d.join("w.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("\"/trigger\"", "\"/other\"")).unwrap();
    hup(&daemon);
    wait_log(d, "configuration reloaded");
    let log = d.join("access.log");
    append(&log, &lines(&["198.18.2.1"], "/trigger"));
    append(&log, &lines(&["198.18.2.2"], "/other"));
    wait_lines(d, 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while banned(d, &[]).is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        banned(d, &[]),
        ["\"198.18.2.2\""],
        "the old rule still applies"
    );

    // A broken file: refused with its location, the running rules stay.
    std::fs::write(
        &cfg,
        text.replace("kind = \"match\"", "kind = \"sometimes\""),
    )
    .unwrap();
    hup(&daemon);
    let log_text = wait_log(d, "reload refused");
    assert!(log_text.contains("w.toml:"), "{log_text}");
    append(&log, &lines(&["198.18.2.3"], "/other"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while banned(d, &[]).len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", banned(d, &[]));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(banned(d, &[]), ["\"198.18.2.2\"", "\"198.18.2.3\""]);
}

/// `status` through the socket, timed.
fn timed_status(d: &Path) -> Duration {
    let t = Instant::now();
    ctl(d, &["status"]).success();
    t.elapsed()
}

/// Idle, dripping and non-reading clients, and a thousand at once, never
/// keep `status` waiting (an audit saw 91 s with three idle connections).
#[test]
fn stuck_control_clients_do_not_block_others() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _daemon = start(d, &[]);
    let socket = d.join("ctl.sock");
    // Enough history that its answer fills the socket buffer.
    let many: String = (0..20_000)
        .map(|i| format!("10.{}.{}.{}\n", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    let list = write(d, "many.txt", &many);
    let list = list.to_str().unwrap();
    ctl(d, &["ban", "--force", "--file", list]).success();

    let idle: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    let mut drip = UnixStream::connect(&socket).unwrap();
    drip.write_all(b"{").unwrap();
    let mut deaf = UnixStream::connect(&socket).unwrap();
    deaf.write_all(b"{\"cmd\":\"bans\",\"history\":true}\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let took = timed_status(d);
        assert!(took < Duration::from_secs(3), "status took {took:?}");
        drip.write_all(b" ").unwrap();
    }

    // A thousand clients at once: each gets an answer (served, or told the
    // daemon is busy), none hangs.
    let clients: Vec<_> = (0..1000)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let mut s = UnixStream::connect(&socket).map_err(|e| format!("connect: {e}"))?;
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let _ = s.write_all(b"{\"cmd\":\"status\"}\n");
                let mut answer = String::new();
                s.read_to_string(&mut answer)
                    .map_err(|e| format!("read: {e}"))?;
                let v: serde_json::Value =
                    serde_json::from_str(&answer).map_err(|e| format!("{e}: {answer:?}"))?;
                if v["ok"] == true || v["error"].as_str().unwrap_or("").starts_with("busy") {
                    Ok(())
                } else {
                    Err(answer)
                }
            })
        })
        .collect();
    let failures: Vec<String> = clients
        .into_iter()
        .filter_map(|c| c.join().unwrap().err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let answered = 1000;
    assert_eq!(answered, 1000);
    let took = timed_status(d);
    assert!(took < Duration::from_secs(3), "status took {took:?}");

    // The drip is cut off at its deadline with an answer, not held forever.
    let mut answer = String::new();
    drip.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    drip.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("no complete request within"), "{answer}");
    drop((idle, deaf));
}

/// A client that is not root gets the daemon's refusal, not "Broken pipe".
#[test]
fn a_refused_client_reads_the_permission_message() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("WEBFENCE_REQUIRE_NETNS").is_none(),
            "the refused-client test needs root to run a client as another user"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _daemon = start(d, &[]);
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = d.join("ctl.sock");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let many: String = (0..5000)
        .map(|i| format!("10.0.{}.{}\n", i >> 8, i & 255))
        .collect();
    // A copy the unprivileged user can reach, wherever the build is.
    let bin = d.join("webfence");
    std::fs::copy(env!("CARGO_BIN_EXE_webfence"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(&bin)
        .args(["ban", "--file", "-", "--socket"])
        .arg(&socket)
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(many.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("permission denied: only root may control webfence"),
        "{err}"
    );
}

/// Regression: `for_s` = 2^63-1 from the socket wrapped, and the ban
/// expired before it started.
#[test]
fn an_absurd_duration_from_the_socket_is_refused() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _daemon = start(d, &[]);
    let mut s = std::os::unix::net::UnixStream::connect(d.join("ctl.sock")).unwrap();
    s.write_all(
        format!(
            "{{\"cmd\":\"ban\",\"subjects\":[\"192.0.2.1\"],\"for_s\":{}}}\n",
            i64::MAX
        )
        .as_bytes(),
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("too long"), "{answer}");
    ctl(d, &["bans"])
        .success()
        .stderr(predicate::str::contains("no bans in force"));
}

/// A FIFO named as a log was ignored without a word; now it is refused.
#[test]
fn a_fifo_as_a_log_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("access.log");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    webfence()
        .args(["run", "--dry-run", "--backend", "none"])
        .arg(&fifo)
        .assert()
        .failure()
        .stderr(predicate::str::contains("it is a FIFO"));
}

/// Unmounts a tmpfs when dropped.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Regression: with `state_dir` on a full 2 MB tmpfs the ledger stopped
/// while bans went on, `status` said ok, and the missed bans were never
/// recorded. Now the daemon is degraded (exit 3) while the disk is full,
/// and everything is recorded once there is space again.
#[test]
fn a_full_state_directory_degrades_and_loses_no_ban() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("WEBFENCE_REQUIRE_NETNS").is_none(),
            "the full-disk test needs root to mount a tmpfs"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = d.join("state");
    std::fs::create_dir_all(&state).unwrap();
    assert!(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(&state)
            .status()
            .unwrap()
            .success()
    );
    let _mount = Mount(state.clone());
    let daemon = start(d, &[]);
    // Fill what is left of the disk.
    let filler = state.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();
    let many: String = (0..5000)
        .map(|i| format!("10.9.{}.{}\n", i >> 8, i & 255))
        .collect();
    let list = write(d, "many.txt", &many);
    ctl(d, &["ban", "--force", "--file", list.to_str().unwrap()]).success();
    let out = webfence()
        .args(["status", "--socket"])
        .arg(d.join("ctl.sock"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("ledger    DEGRADED") && text.contains("5,000 bans in the kernel wait"),
        "{text}"
    );
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while status_json(d)["healthy"] != true {
        assert!(Instant::now() < deadline, "the ledger did not recover");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(d.join("daemon.log")).unwrap();
    assert_eq!(
        log.matches("cannot write the ledger").count(),
        1,
        "one error per episode:\n{log}"
    );
    let out = webfence()
        .args(["bans", "--json", "--socket"])
        .arg(d.join("ctl.sock"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5000);
    drop(daemon);
}

/// Regression: 0.8% of rate-rule offenders whose bursts straddled a
/// SIGKILL escaped, as the restarted daemon counted from zero. A restart
/// reads the lines before its checkpoints again to rebuild the windows.
#[test]
fn a_burst_that_straddles_a_sigkill_is_still_caught() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log = d.join("access.log");
    std::fs::write(&log, "").unwrap();
    let rules = "[rules.burst]\nkind = \"rate\"\nkey = \"ip\"\nlimit = 10\nwindow = \"5m\"\naction = \"ban\"\n";
    let mut first = start_with(d, rules, &[]);
    append(&log, &lines(&["198.18.0.5"; 7], "/page"));
    wait_lines(d, 7);
    // A checkpoint is saved within a second of reading.
    std::thread::sleep(Duration::from_millis(2500));
    let _ = first.0.kill();
    let _ = first.0.wait();
    let _second = start_with(d, rules, &[]);
    append(&log, &lines(&["198.18.0.5"; 5], "/page"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !banned(d, &[]).contains(&"\"198.18.0.5\"".to_string()) {
        assert!(Instant::now() < deadline, "the burst was not caught");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The lines read again are not counted twice in status.
    wait_lines(d, 5);
    // A rule's ban carries its decision's evidence, as replay --json has it.
    let out = webfence()
        .args(["bans", "--json", "--socket"])
        .arg(d.join("ctl.sock"))
        .output()
        .unwrap();
    let row: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(row["rule"], "burst");
    assert_eq!(row["evidence"]["threshold"], 10);
    assert!(row["evidence"]["count"].as_u64().unwrap() >= 11, "{row}");
    // Per-rule figures, and one rule's view (as fail2ban-client status JAIL).
    ctl(d, &["status"]).success().stdout(
        predicate::str::is_match(r"  burst +1 decisions +1 in force  last \d+s ago").unwrap(),
    );
    ctl(d, &["status", "burst"])
        .success()
        .stdout(predicate::str::contains("in force  1"))
        .stdout(predicate::str::contains("newest bans in force:"))
        .stdout(predicate::str::contains("198.18.0.5"));
}

/// Lines from `count` distinct clients starting at `first`, each asking
/// for /trigger (one ban each). Each is in a /16 of its own, so the
/// built-in distributed-flood rule sees no network to ban.
fn triggers(first: u32, count: u32) -> String {
    let ips: Vec<String> = (first..first + count)
        .map(|i| format!("{}.{}.0.1", 20 + i / 250, i % 250))
        .collect();
    let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    lines(&refs, "/trigger")
}

/// Every client banned exactly once: nothing lost, nothing decided twice.
fn assert_each_banned_once(d: &Path, expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let history = banned(d, &["--history"]);
        let mut distinct = history.clone();
        distinct.dedup();
        if history.len() >= expected {
            assert_eq!(distinct.len(), expected, "lost or extra clients");
            assert_eq!(history.len(), expected, "some client was banned twice");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {expected} clients banned",
            history.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn logrotate(d: &Path, mode: &str) {
    let conf = write(
        d,
        "logrotate.conf",
        &format!(
            "{}/access.log {{\n  rotate 9\n  missingok\n  {mode}\n}}\n",
            d.display()
        ),
    );
    let out = std::process::Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(d.join("logrotate.state"))
        .arg(&conf)
        .output()
        .expect("logrotate runs");
    assert!(
        out.status.success(),
        "logrotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Real logrotate in create, copytruncate and compress modes, while the
/// daemon runs and while it is stopped (SIGKILL): every line is read once.
#[test]
fn logrotate_in_every_mode_loses_and_repeats_nothing() {
    if std::process::Command::new("logrotate")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("WEBFENCE_REQUIRE_NETNS").is_none(),
            "logrotate is required here"
        );
        return;
    }
    for mode in [
        "create",
        "copytruncate",
        "create\n  compress\n  nodelaycompress",
        "copytruncate\n  compress\n  nodelaycompress",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let log = d.join("access.log");
        std::fs::write(&log, "").unwrap();
        let mut daemon = start(d, &[]);
        append(&log, &triggers(0, 200));
        wait_lines(d, 200);
        logrotate(d, mode);
        append(&log, &triggers(200, 200));
        assert_each_banned_once(d, 400);
        // Let a checkpoint be saved, write more, then die hard and rotate
        // while stopped.
        std::thread::sleep(Duration::from_millis(1500));
        append(&log, &triggers(400, 100));
        std::thread::sleep(Duration::from_millis(300));
        let _ = daemon.0.kill();
        let _ = daemon.0.wait();
        append(&log, &triggers(500, 100));
        logrotate(d, mode);
        append(&log, &triggers(600, 100));
        let _daemon = start(d, &[]);
        assert_each_banned_once(d, 700);
        let _ = mode;
    }
}

/// Regression: a configured log path with a typo started normally with
/// "no file open yet" and exit 0 from status.
#[test]
fn a_log_that_does_not_exist_is_refused_or_loud() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = write(
        d,
        "typo.toml",
        &format!(
            "[daemon]\nlogs = [\"{d}/acess.log\"]\nbackend = \"none\"\nstate_dir = \"{d}/state\"\nsocket = \"{d}/ctl.sock\"\n",
            d = d.display()
        ),
    );
    webfence()
        .args(["run", "-c"])
        .arg(&cfg)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "none of the logs to follow exists",
        ))
        .stderr(predicate::str::contains("acess.log"));
    webfence()
        .args(["check", "-c"])
        .arg(&cfg)
        .assert()
        .success()
        .stderr(predicate::str::contains("acess.log matches no file now"));
    // With --wait-for-logs it starts, and says it is not protecting.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_webfence"))
        .args(["run", "--wait-for-logs", "-c"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = webfence()
            .args(["status", "--socket"])
            .arg(d.join("ctl.sock"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("NOT PROTECTING") {
            break out;
        }
        assert!(Instant::now() < deadline, "status: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("acess.log does not exist"));
    let log = wait_log(d, "NOT PROTECTING");
    assert!(log.contains("WARN"), "{log}");
    let _ = child.kill();
    let _ = child.wait();
}

/// Regression: a log in a format nothing recognises left status "up to
/// date" with exit 0 and printed nothing at the default level.
#[test]
fn an_unrecognisable_log_format_is_loud() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log = d.join("app.log");
    std::fs::write(&log, "").unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_webfence"))
        .args(["run", "--backend", "none", "--state-dir"])
        .arg(d.join("state"))
        .arg("--socket")
        .arg(d.join("ctl.sock"))
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    append(&log, "this is not an access log\nnor is this one\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = webfence()
            .args(["status", "--socket"])
            .arg(d.join("ctl.sock"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("NOT PROTECTING") {
            assert_eq!(out.status.code(), Some(3));
            assert!(text.contains("cannot recognise the log format"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "status: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Regression: with format "auto" the first decisions waited 2-3 s after
/// start. One line that fits a format unambiguously is decided at once.
#[test]
fn the_first_line_is_decided_without_waiting_for_a_sample() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log = d.join("access.log");
    std::fs::write(&log, "").unwrap();
    let cfg = write(
        d,
        "auto.toml",
        "[daemon]\nformat = \"auto\"\n[rules.trigger]\nkind = \"match\"\nmatch.path.exact = [\"/trigger\"]\naction = \"ban\"\n",
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_webfence"))
        .args(["run", "--backend", "none", "-c"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(d.join("state"))
        .arg("--socket")
        .arg(d.join("ctl.sock"))
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    wait_log(d, "webfence run started");
    std::thread::sleep(Duration::from_millis(300));
    let written = Instant::now();
    append(&log, &lines(&["198.18.0.44"], "/trigger"));
    wait_log(d, "ip=198.18.0.44");
    let took = written.elapsed();
    assert!(took < Duration::from_millis(900), "decided after {took:?}");
    let _ = child.kill();
    let _ = child.wait();
}

/// Regression: `ban 1.2.3.4/8` banned 1.0.0.0/8 silently, `unban 1.2.3.4`
/// then said "was not banned" while it was dropped, and a second ban
/// replaced a 6h ban with a 2h one.
#[test]
fn bans_mean_what_the_admin_typed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _daemon = start(d, &[]);
    ctl(d, &["ban", "1.2.3.4/8"])
        .failure()
        .stderr(predicate::str::contains(
            "'1.2.3.4/8' has host bits set: as a network it is 1.0.0.0/8",
        ));
    ctl(d, &["ban", "1.2.3.4/8", "--normalize"])
        .success()
        .stderr(predicate::str::contains("1.2.3.4/8 taken as 1.0.0.0/8"));
    ctl(d, &["unban", "1.2.3.4"])
        .failure()
        .stderr(predicate::str::contains(
            "1.2.3.4 is not banned itself but inside the banned network 1.0.0.0/8",
        ));
    let wait_log_has = |text: &str| {
        let log = std::fs::read_to_string(d.join("daemon.log")).unwrap();
        assert!(log.contains(text), "{log}");
    };

    ctl(
        d,
        &["ban", "203.0.113.50", "--for", "6h", "--reason", "first"],
    )
    .success();
    ctl(d, &["ban", "203.0.113.50", "--for", "2h"])
        .success()
        .stdout("banned 0 for 2h\n")
        .stderr(predicate::str::contains(
            "203.0.113.50 already banned until",
        ))
        .stderr(predicate::str::contains("; kept"));
    ctl(d, &["bans", "--ip", "203.0.113.50"])
        .success()
        .stdout(predicate::str::contains("5h 59m").and(predicate::str::contains("first")));
    ctl(d, &["ban", "203.0.113.50", "--for", "2h", "--replace"])
        .success()
        .stdout("banned 1 for 2h\n");
    ctl(d, &["bans", "--ip", "203.0.113.50"])
        .success()
        .stdout(predicate::str::contains("1h 59m"));
    // The replaced ban and its reason stay in the history.
    ctl(d, &["bans", "--history", "--ip", "203.0.113.50", "--json"])
        .success()
        .stdout(
            predicate::str::contains("\"ended_by\":\"replaced\"")
                .and(predicate::str::contains("first")),
        );
    ctl(d, &["unban", "203.0.113.50"]).success();
    wait_log_has("ip=203.0.113.50");
}

/// `webfence reload` asks the daemon to reload, as `fail2ban-client
/// reload` does, and reports whether the configuration was taken.
#[test]
fn reload_reports_whether_the_configuration_was_taken() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _daemon = start(d, &[]);
    let cfg = d.join("w.toml");
    let args = ["reload", "-c", cfg.to_str().unwrap()];
    ctl(d, &args)
        .success()
        .stdout(predicate::str::starts_with("reloaded: "))
        .stdout(predicate::str::contains("rules loaded"));
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("{good}[rules.bad]\nkind = \"rate\"\nlimt = 3\n"),
    )
    .unwrap();
    ctl(d, &args)
        .failure()
        .stderr(predicate::str::contains("reload refused"))
        .stderr(predicate::str::contains("limt"));
    // The daemon still answers, with its old rules.
    ctl(d, &["status"]).success();
    // flush is refused while the daemon runs.
    ctl(d, &["flush", "-c", cfg.to_str().unwrap()])
        .failure()
        .stderr(predicate::str::contains("the daemon is running"));
}

/// The Debian package (built by scripts/package, named by WEBFENCE_DEB)
/// installs into an empty root: the binary runs, `man -w` finds its pages,
/// the completions are there, and the unit's ExecStartPre check passes on
/// the shipped configuration.
#[test]
fn the_debian_package_installs_into_a_clean_root() {
    let Some(deb) = std::env::var_os("WEBFENCE_DEB") else {
        assert!(
            std::env::var_os("WEBFENCE_REQUIRE_PACKAGE").is_none(),
            "WEBFENCE_DEB must name the package built by scripts/package"
        );
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("var/lib/dpkg/info")).unwrap();
    std::fs::create_dir_all(r.join("var/lib/dpkg/updates")).unwrap();
    std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(r.join("var/lib/dpkg/available"), "").unwrap();
    let out = std::process::Command::new("dpkg")
        .arg(format!("--root={}", r.display()))
        .args(["--force-depends", "-i"])
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = r.join("usr/bin/webfence");
    let version = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("webfence {}\n", env!("CARGO_PKG_VERSION"))
    );
    for page in [
        "webfence",
        "webfence-run",
        "webfence-ban",
        "webfence-status",
    ] {
        let man = std::process::Command::new("man")
            .arg("-M")
            .arg(r.join("usr/share/man"))
            .args(["-w", page])
            .output()
            .unwrap();
        assert!(
            man.status.success(),
            "man -w {page}: {}",
            String::from_utf8_lossy(&man.stderr)
        );
    }
    for f in [
        "usr/share/bash-completion/completions/webfence",
        "usr/share/zsh/vendor-completions/_webfence",
        "usr/share/fish/vendor_completions.d/webfence.fish",
    ] {
        assert!(r.join(f).is_file(), "{f} missing");
    }
    let unit = std::fs::read_to_string(r.join("lib/systemd/system/webfence.service")).unwrap();
    let pre = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStartPre="))
        .expect("the unit checks its configuration before starting");
    let mut words = pre.split_whitespace();
    assert_eq!(words.next(), Some("/usr/bin/webfence"));
    let check = std::process::Command::new(&bin)
        .args(words)
        .arg("-c")
        .arg(r.join("etc/webfence/webfence.toml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "ExecStartPre fails on the shipped configuration: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// A daemon follows an access log and an nginx error log side by side,
/// each in its own format: both kinds of abuse are banned.
#[test]
fn access_and_error_logs_are_followed_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let access = d.join("access.log");
    let error = d.join("error.log");
    std::fs::write(&access, "").unwrap();
    std::fs::write(&error, "").unwrap();
    let cfg = write(
        d,
        "both.toml",
        &format!(
            "[daemon]\nlogs = [\"{a}\", \"{e}\"]\nformat = \"auto\"\nbackend = \"none\"\nstate_dir = \"{d}/state\"\nsocket = \"{d}/ctl.sock\"\n\
             [rules.trigger]\nkind = \"match\"\nmatch.path.exact = [\"/trigger\"]\naction = \"ban\"\n",
            a = access.display(),
            e = error.display(),
            d = d.display()
        ),
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_webfence"))
        .args(["run", "-c"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    wait_log(d, "webfence run started");
    append(&access, &lines(&["198.18.5.1"], "/trigger"));
    let now = jiff::Zoned::now().strftime("%Y/%m/%d %H:%M:%S").to_string();
    let auth: String = (0..6)
        .map(|i| {
            format!("{now} [error] 7#7: *{i} user \"admin\": password mismatch, client: 198.18.5.2, server: _, request: \"GET /admin HTTP/1.1\", host: \"h\"\n")
        })
        .collect();
    append(&error, &auth);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let b = banned(d, &[]);
        if b.contains(&"\"198.18.5.1\"".to_string()) && b.contains(&"\"198.18.5.2\"".to_string()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "banned {b:?}\n{}",
            std::fs::read_to_string(d.join("daemon.log")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(d.join("daemon.log")).unwrap();
    assert!(
        log.contains("detected log format 'nginx_error' for"),
        "{log}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn mem_available() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

fn wait_file(path: &Path, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = std::fs::read_to_string(path).unwrap_or_default();
        if got.contains(text) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "no '{text}' in {}:\n{got}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A real condition: the test takes 2.5 GiB so `memavail` falls below the
/// guard's threshold, then gives it back. The action runs once, with the
/// value in its environment, and the recovery runs once when `until`
/// holds; nothing runs again while the machine stays calm.
#[test]
fn a_guard_acts_on_real_memory_pressure_and_recovers_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let before = mem_available();
    if before < 6 << 30 {
        eprintln!("skipped: needs 6 GiB available");
        return;
    }
    let out = d.join("guard.out");
    let rules = format!(
        "[guards.memory]\nwhen = \"memavail < {low}\"\nuntil = \"memavail > {high}\"\n\
         run = [\"sh\", \"-c\", \"echo run $WEBFENCE_EVENT $WEBFENCE_GUARD $WEBFENCE_MEMAVAIL >> {o}\"]\n\
         then = [\"sh\", \"-c\", \"echo then $WEBFENCE_EVENT >> {o}\"]\n",
        low = before - (3 << 29),
        high = before - (3 << 28),
        o = out.display()
    );
    let daemon = start_with(d, &rules, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!out.exists(), "the guard fired on a calm machine");
    let hog = vec![1u8; 5 << 29];
    let got = wait_file(&out, "run fire memory ");
    let value: u64 = got.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(value < before - (3 << 29), "{got}");
    let status = status_json(d);
    let g = &status["loop"]["guards"][0];
    assert_eq!(g["name"], "memory");
    assert_eq!(g["state"], "firing", "{g}");
    drop(hog);
    let got = wait_file(&out, "then recover");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap().lines().count(),
        2,
        "{got}"
    );
    let text = status_text(d);
    assert!(text.contains("guards    1 configured"), "{text}");
    assert!(text.contains("last then"), "{text}");
    terminate(daemon);
}

/// `for N` with a real process count: two processes named like the
/// guard's must exist for two checks; the log says when it holds and
/// when it is over, with the values.
#[test]
fn a_guard_counts_processes_by_name_for_n_checks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let probe = d.join("wfprobe");
    std::fs::copy("/bin/sleep", &probe).unwrap();
    let rules = "[guards.probes]\nwhen = \"procs(\\\"wfprobe\\\") >= 2\"\nfor = 2\n";
    let daemon = start_with(d, rules, &[]);
    let mut kids: Vec<Child> = (0..2)
        .map(|_| {
            std::process::Command::new(&probe)
                .arg("30")
                .spawn()
                .unwrap()
        })
        .collect();
    let log = wait_log(d, "guard: procs(\"wfprobe\") >= 2 holds");
    assert!(log.contains("procs(\"wfprobe\")=2"), "{log}");
    for k in &mut kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    wait_log(d, "guard: over");
    terminate(daemon);
}

#[test]
fn guards_and_limits_errors_are_located_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "w.toml",
        "[guards.load]\nwhen = \"la1 >= 10 or la5 >= six\"\nrun = [\"systemctl\", \"stop\", \"apache2\"]\n\n[limits]\nmax_conns = -1\n\n[rules.conns]\nkind = \"connections\"\nlimit = 10\nstates = [\"listen\"]\n",
    );
    fails_with(
        &[OsStr::new("check"), OsStr::new("-c"), cfg.as_os_str()],
        &[
            "w.toml:2:29: unknown quantity 'six'",
            "w.toml:6:13: invalid max_conns -1",
            "w.toml:11:11: unknown state 'listen'",
        ],
    );
}

#[test]
fn a_daemon_with_only_guards_needs_no_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = write(
        d,
        "w.toml",
        &format!(
            "default_rules = false\n[daemon]\nbackend = \"none\"\nstate_dir = \"{d}/state\"\nsocket = \"{d}/ctl.sock\"\n[guards.load]\nwhen = \"la1 > 1000\"\n",
            d = d.display()
        ),
    );
    let daemon = start_config(d, &cfg, &[]);
    assert_eq!(status_json(d)["loop"]["guards"][0]["name"], "load");
    terminate(daemon);
}

#[test]
fn conns_errors_name_the_option_and_the_choices() {
    webfence()
        .args(["conns", "--state", "estab"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "--state: unknown state 'estab' (expected one of established, syn-sent, syn-recv",
        ));
    webfence()
        .args(["conns", "--state", "listen"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "listening sockets are not connections",
        ));
    let out = webfence().args(["conns", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["clients"].is_array() && v["total"].is_u64(), "{v}");
}

/// A sysfence user's file: `import` prints the guards, and `check` (like
/// every command taking `-c`) reads it as it is.
#[test]
fn sysfence_configuration_is_imported_and_read_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        "sysfence.conf",
        "rule \"ApacheStop\" {\nla1 >= 10.00 or la5 >= 6.0\n} run '/etc/init.d/apache2 stop;'\n\nrule \"ApacheStart\" {\nla1 <=2 } run once '/etc/init.d/apache2 start;'\n",
    );
    webfence()
        .args(["import", "sysfence"])
        .arg(&conf)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "[guards.ApacheStop]\nwhen = \"la1 >= 10.00 or la5 >= 6.0\"\nrun = [\"/etc/init.d/apache2\", \"stop\"]",
        ))
        .stdout(predicate::str::contains("[guards.ApacheStart]"));
    webfence()
        .args(["check", "-c"])
        .arg(&conf)
        .assert()
        .success()
        .stdout(predicate::str::contains("2 guards"));
    let broken = write(
        dir.path(),
        "broken.conf",
        "rule \"ApacheStop\" {\nla1 >= 10.00 or la5 >= 6.0\nrun '/etc/init.d/apache2 stop;'\n",
    );
    for args in [&["import", "sysfence"][..], &["check", "-c"][..]] {
        webfence()
            .args(args)
            .arg(&broken)
            .assert()
            .failure()
            .stderr(predicate::str::contains(
                "broken.conf:3:1: 'run' inside the condition: a '}' is missing before it",
            ));
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real SMTP server on loopback (Debian's python3-aiosmtpd), storing
/// what it receives in a Maildir.
struct Smtp(Child);

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn smtp_server(maildir: &Path) -> Option<(Smtp, u16)> {
    let python = "/usr/bin/python3";
    let ok = std::process::Command::new(python)
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("WEBFENCE_REQUIRE_SMTP").is_none(),
            "python3-aiosmtpd is required here"
        );
        eprintln!("skipped: needs python3-aiosmtpd");
        return None;
    }
    let port = free_port();
    let child = std::process::Command::new(python)
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the SMTP server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((Smtp(child), port))
}

fn mails(maildir: &Path) -> Vec<String> {
    std::fs::read_dir(maildir.join("new"))
        .map(|d| {
            d.flatten()
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// A webhook receiver: every POST body, answered 200.
fn webhook_server() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut r = BufReader::new(stream);
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            keep.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (port, got)
}

/// A flood of 1,000 bans is one mail, one webhook and one program run,
/// with the counts; a request carrying CR/LF and `$(...)` stays text.
#[test]
fn a_flood_of_bans_is_one_message_per_channel() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let maildir = d.join("mail");
    let Some((_smtp, port)) = smtp_server(&maildir) else {
        return;
    };
    let (hook_port, hooks) = webhook_server();
    let paged = d.join("paged.json");
    let rules = format!(
        "[notify.ops]\ntype = \"mail\"\nsmtp = \"smtp://127.0.0.1:{port}\"\nfrom = \"webfence@example.com\"\nto = [\"ops@example.com\"]\ngroup_wait = \"2s\"\n\
         [notify.chat]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\ngroup_wait = \"2s\"\nheaders = {{ Authorization = \"Bearer t0k3n\" }}\n\
         [notify.page]\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"cat >> {p}\"]\ngroup_wait = \"2s\"\n",
        p = paged.display()
    );
    let daemon = start_with(d, &rules, &[]);
    let stamp = jiff::Zoned::now().strftime("%d/%b/%Y:%H:%M:%S %z");
    let mut flood = triggers(0, 999);
    flood.push_str(&format!(
        "198.18.7.7 - - [{stamp}] \"GET /trigger?x=\rBcc: evil@example.com $(touch {d}/pwned) HTTP/1.1\" 404 10 \"-\" \"curl\"\n",
        d = d.display()
    ));
    append(&d.join("access.log"), &flood);
    let deadline = Instant::now() + Duration::from_secs(20);
    while mails(&maildir).is_empty() || hooks.lock().unwrap().is_empty() || !paged.exists() {
        assert!(
            Instant::now() < deadline,
            "no message: {}",
            std::fs::read_to_string(d.join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing else follows the one message.
    std::thread::sleep(Duration::from_secs(3));
    let got = mails(&maildir);
    assert_eq!(got.len(), 1, "{got:?}");
    let mail = &got[0];
    let subject = mail.lines().find(|l| l.starts_with("Subject:")).unwrap();
    assert!(subject.contains("1,000 bans (trigger"), "{subject}\n{mail}");
    assert!(
        !mail
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
        "a header was injected:\n{mail}"
    );
    assert!(mail.contains("1,000 bans:"), "{mail}");
    let bodies = hooks.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let doc: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(doc["bans"], 1000);
    assert_eq!(doc["bans_by_rule"]["trigger"], 1000);
    let paged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&paged).unwrap()).unwrap();
    assert_eq!(paged["bans"], 1000);
    assert!(!d.join("pwned").exists(), "log text ran as a command");
    let st = status_json(d);
    let channels = st["loop"]["notify"].as_array().unwrap().clone();
    assert_eq!(channels.len(), 3);
    assert!(
        channels.iter().all(|c| c["messages_sent"] == 1),
        "{channels:?}"
    );
    terminate(daemon);
}

/// An SMTP server that refuses: the message is retried, then logged as
/// not delivered, and counted; bans go on meanwhile.
#[test]
fn a_failing_mail_server_is_retried_then_logged_while_bans_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let rules = format!(
        "[notify.ops]\ntype = \"mail\"\nsmtp = \"smtp://127.0.0.1:{port}\"\nfrom = \"webfence@example.com\"\nto = [\"ops@example.com\"]\ngroup_wait = \"1s\"\n"
    );
    let daemon = start_with(d, &rules, &[]);
    append(&d.join("access.log"), &triggers(0, 1));
    wait_log(d, "notification failed, retrying in 1 s");
    append(&d.join("access.log"), &triggers(1, 1));
    let deadline = Instant::now() + Duration::from_secs(10);
    while banned(d, &[]).len() < 2 {
        assert!(Instant::now() < deadline, "bans stopped while mail failed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let log = std::fs::read_to_string(d.join("daemon.log")).unwrap();
        if log.contains("notification not delivered after 4 attempts") {
            break;
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = status_json(d);
    assert!(
        st["loop"]["notify"][0]["messages_failed"].as_u64() >= Some(1),
        "{st}"
    );
    assert!(
        st["loop"]["notify"][0]["retries"].as_u64() >= Some(3),
        "{st}"
    );
    let text = status_text(d);
    assert!(
        text.contains("notify    ops (mail): 0 sent, 1 FAILED"),
        "{text}"
    );
    terminate(daemon);
}

/// Something to kill at the end of a test.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A GET on loopback: the status and body (status 0 when nothing answers).
fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let code = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    (code, body)
}

/// `/metrics` passes `promtool check metrics`, a real Prometheus scrapes
/// it and sees a counter move, and `/healthz` answers 200.
#[test]
fn metrics_are_valid_and_scraped_by_prometheus() {
    let ok = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("WEBFENCE_REQUIRE_PROMETHEUS").is_none(),
            "prometheus and promtool are required here"
        );
        eprintln!("skipped: needs prometheus");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let daemon = start_with(
        d,
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
        &[],
    );
    append(&d.join("access.log"), &triggers(0, 3));
    wait_lines(d, 3);
    let (code, body) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("webfence_lines_read_total 3"), "{body}");
    assert!(
        body.contains("webfence_bans_total{rule=\"trigger\"} 3"),
        "{body}"
    );
    // Crawler verification is on by default: its figures are there.
    assert!(body.contains("webfence_crawler_lookups_paused 0"), "{body}");
    assert!(
        body.contains("webfence_crawler_lookups_total{verdict=\"fake\"} 0"),
        "{body}"
    );
    common::promtool_accepts(&body);
    assert_eq!(http_get(port, "/healthz").0, 200);
    assert_eq!(http_get(port, "/nope").0, 404);

    let prom_port = free_port();
    let conf = write(
        d,
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: webfence\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    );
    let _prom = Killed(
        std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!("--storage.tsdb.path={}", d.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let query = |q: &str| -> Option<f64> {
        let (code, body) = http_get(prom_port, &format!("/api/v1/query?query={q}"));
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while query("webfence_lines_read_total") != Some(3.0) {
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped 3 lines"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    append(&d.join("access.log"), &triggers(3, 2));
    let deadline = Instant::now() + Duration::from_secs(30);
    while query("webfence_lines_read_total") != Some(5.0) {
        assert!(
            Instant::now() < deadline,
            "the counter did not move in Prometheus"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(query("webfence_up"), Some(1.0));
    terminate(daemon);
}

/// `webfence digest` sums up the period from the logs and the ledger; a
/// `[digest.NAME]` sends the same to its channel on the clock.
#[test]
fn digests_on_demand_and_on_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (hook_port, hooks) = webhook_server();
    let rules = format!(
        "[notify.chat]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\non = [\"guard\"]\ngroup_wait = \"1s\"\n\
         [digest.often]\nevery = \"10s\"\nchannels = [\"chat\"]\nsend_empty = true\n"
    );
    let daemon = start_with(d, &rules, &[]);
    append(&d.join("access.log"), &triggers(0, 3));
    wait_lines(d, 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while banned(d, &[]).len() < 3 {
        assert!(Instant::now() < deadline, "no bans");
        std::thread::sleep(Duration::from_millis(50));
    }
    let cfg = d.join("w.toml");
    let out = webfence()
        .args(["digest", "--since", "1h", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("digest 1h: 3 requests, 3 bans"), "{text}");
    assert!(
        text.contains("bans made, by rule\n           3  trigger"),
        "{text}"
    );
    assert!(text.contains("/trigger"), "{text}");
    let json = webfence()
        .args(["digest", "--since", "1h", "--json", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["totals"]["bans"], 3);
    assert_eq!(v["statuses"][0]["key"], "404");
    // The scheduled one: within one 10 s period and the channel's wait.
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let got = hooks.lock().unwrap().clone();
        if let Some(body) = got.iter().find(|b| b.contains("\"digest\"")) {
            let doc: serde_json::Value = serde_json::from_str(body).unwrap();
            let ev = &doc["events"][0];
            assert_eq!(ev["kind"], "digest");
            assert!(
                ev["title"].as_str().unwrap().starts_with("digest 10s:"),
                "{doc}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no digest arrived: {got:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    terminate(daemon);
}

#[test]
fn blocklist_mistakes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("access.log"), "").unwrap();
    // A [daemon] section of four lines, then the blocklists.
    let with = |name: &str, rest: &str| {
        write(
            d,
            name,
            &format!(
                "[daemon]\nlogs = [\"{l}\"]\nbackend = \"none\"\nstate_dir = \"{s}\"\n{rest}",
                l = d.join("access.log").display(),
                s = d.join("state").display()
            ),
        )
    };
    let cfg = with(
        "w.toml",
        "[blocklists.nosource]\nrefresh = \"1h\"\n[blocklists.\"bad name\"]\nsource = \"x\"\n",
    );
    fails_with(
        &[OsStr::new("check"), OsStr::new("-c"), cfg.as_os_str()],
        &[
            "w.toml:5:13: blocklist 'nosource' needs source =",
            "invalid blocklist name 'bad name'",
        ],
    );
    let ok = with(
        "ok.toml",
        "[blocklists.drop]\nsource = \"https://www.spamhaus.org/drop/drop.txt\"\n",
    );
    fails_with(
        &[OsStr::new("run"), OsStr::new("-c"), ok.as_os_str()],
        &["[blocklists] need the nftables backend (this configuration has backend = \"none\")"],
    );
}

/// Lines from `ip` with this User-Agent, to pages.
fn agent_lines(ip: &str, agent: &str, n: usize) -> String {
    let stamp = jiff::Zoned::now().strftime("%d/%b/%Y:%H:%M:%S %z");
    (0..n)
        .map(|i| {
            format!("{ip} - - [{stamp}] \"GET /page/{i} HTTP/1.1\" 200 10 \"-\" \"{agent}\"\n")
        })
        .collect()
}

/// Whether root and `unshare` are here, for the tests that give the daemon
/// its own /etc files.
fn can_unshare() -> bool {
    common::netns::ready(&[&["unshare", "--version"]], "unshare")
}

/// Runs the daemon on DIR's plain configuration (backend none) in a
/// private mount namespace where each (file, over) pair is bind-mounted:
/// the test decides what /etc/hosts and /etc/resolv.conf say.
fn start_with_etc(d: &Path, binds: &[(&Path, &str)]) -> Daemon {
    std::fs::write(d.join("access.log"), "").unwrap();
    let cfg = write(
        d,
        "w.toml",
        &format!(
            "[daemon]\nlogs = [\"{d}/access.log\"]\nformat = \"combined\"\nstate_dir = \"{d}/state\"\nsocket = \"{d}/ctl.sock\"\nbackend = \"none\"\n",
            d = d.display()
        ),
    );
    let mounts: String = binds
        .iter()
        .map(|(file, over)| format!("mount --bind {} {over} && ", file.display()))
        .collect();
    let child = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "{mounts}exec {} run -c {}",
            env!("CARGO_BIN_EXE_webfence"),
            cfg.display()
        ))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    wait_daemon(d);
    daemon
}

/// Crawler verification with a resolver the test controls: the daemon
/// runs in a private mount namespace whose /etc/hosts names a Googlebot
/// address (both ways). A verified Googlebot fetching fast is left alone
/// by the rate rules; a client claiming Googlebot from elsewhere is a
/// fake and is banned; a curl client fetching as fast is banned (so the
/// rate rule does fire).
#[test]
fn verified_crawlers_are_spared_and_fakes_are_banned() {
    if !can_unshare() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hosts = write(
        d,
        "hosts",
        "127.0.0.1 localhost\n66.249.66.1 crawl-66-249-66-1.googlebot.com\n",
    );
    let daemon = start_with_etc(d, &[(&hosts, "/etc/hosts")]);
    let google = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    let log = d.join("access.log");
    // The first request of each asks for a verdict.
    append(&log, &agent_lines("66.249.66.1", google, 1));
    append(&log, &agent_lines("203.0.113.5", google, 1));
    wait_log(d, "verified crawler: crawl-66-249-66-1.googlebot.com");
    wait_log(
        d,
        "fake crawler: claims Googlebot but 203.0.113.5 has no name",
    );
    append(&log, &agent_lines("66.249.66.1", google, 200));
    append(&log, &agent_lines("203.0.113.5", google, 2));
    append(&log, &agent_lines("198.51.100.7", "curl/8.5", 200));
    wait_lines(d, 404);
    let deadline = Instant::now() + Duration::from_secs(10);
    while banned(d, &[]).len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", banned(d, &[]));
        std::thread::sleep(Duration::from_millis(50));
    }
    let bans = banned(d, &[]);
    assert!(bans.iter().any(|b| b.contains("203.0.113.5")), "{bans:?}");
    assert!(bans.iter().any(|b| b.contains("198.51.100.7")), "{bans:?}");
    assert!(
        !bans.iter().any(|b| b.contains("66.249.66.1")),
        "the real Googlebot was banned: {bans:?}"
    );
    // What verification did is in `status`, in figures and in words.
    let crawlers = &status_json(d)["loop"]["crawlers"];
    assert_eq!(crawlers["verified"], 1, "{crawlers}");
    assert_eq!(crawlers["fake"], 1, "{crawlers}");
    assert!(crawlers["paused_until_ms"].is_null(), "{crawlers}");
    let text = status_text(d);
    assert!(
        text.contains("crawlers  1 verified, 1 fake, 0 lookups unanswered\n"),
        "{text}"
    );
    terminate(daemon);
}

/// With DNS down (a resolver on loopback that nobody answers for), the
/// daemon stops looking up claimed crawlers after 20 unanswered lookups,
/// and says so in `status`, not only in its log: meanwhile a real
/// crawler could be banned by the rate rules.
#[test]
fn a_crawler_lookup_pause_is_shown_in_status() {
    if !can_unshare() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hosts = write(d, "hosts", "127.0.0.1 localhost\n");
    let resolv = write(
        d,
        "resolv.conf",
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    );
    let daemon = start_with_etc(d, &[(&hosts, "/etc/hosts"), (&resolv, "/etc/resolv.conf")]);
    let google = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    let log = d.join("access.log");
    // One claim at a time, so that none waits in the queue when the pause
    // starts (what waits then is dropped, not looked up).
    let unanswered = || status_json(d)["loop"]["crawlers"]["unanswered"].as_u64();
    for i in 0..20 {
        append(&log, &agent_lines(&format!("198.51.100.{i}"), google, 1));
        let deadline = Instant::now() + Duration::from_secs(10);
        while unanswered() != Some(i + 1) {
            assert!(Instant::now() < deadline, "lookup {i}: {:?}", unanswered());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    wait_log(d, "crawler verification paused for 60 s");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut crawlers = status_json(d)["loop"]["crawlers"].clone();
    while crawlers["paused_until_ms"].is_null() {
        assert!(Instant::now() < deadline, "{crawlers}");
        std::thread::sleep(Duration::from_millis(50));
        crawlers = status_json(d)["loop"]["crawlers"].clone();
    }
    assert_eq!(crawlers["unanswered"], 20, "{crawlers}");
    let text = status_text(d);
    assert!(
        text.contains("crawlers  0 verified, 0 fake, 20 lookups unanswered; LOOKUPS PAUSED for "),
        "{text}"
    );
    assert!(
        text.contains("claimed crawlers are judged like any client"),
        "{text}"
    );
    terminate(daemon);
}

/// `scope = "farm"` without `[farm]` is allowed (a node may join a farm
/// later) but `check` says those rules count one node's requests; with
/// `[farm]` it says nothing; on a rule adding to a score it is an error.
#[test]
fn check_names_farm_rules_without_a_farm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("access.log"), "").unwrap();
    let daemon = format!(
        "[daemon]\nlogs = [\"{d}/access.log\"]\nbackend = \"none\"\nstate_dir = \"{d}/state\"\nsocket = \"{d}/ctl.sock\"\n",
        d = d.display()
    );
    let alone = write(
        d,
        "alone.toml",
        &format!("[rules.flood-ip]\nscope = \"farm\"\n{daemon}"),
    );
    webfence()
        .args(["check", "-c"])
        .arg(&alone)
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "rule flood-ip has scope = \"farm\" without [farm]",
        ));
    let farmed = write(
        d,
        "farmed.toml",
        &format!(
            "[rules.flood-ip]\nscope = \"farm\"\n{daemon}[farm]\nredis = \"redis://127.0.0.1:1/0\"\n"
        ),
    );
    webfence()
        .args(["check", "-c"])
        .arg(&farmed)
        .assert()
        .success()
        .stderr(predicate::str::contains("scope").not());
    let score = write(
        d,
        "score.toml",
        "default_rules = false\n[scores.default]\nthreshold = 15\ndecay = \"3/1d\"\naction = \"ban\"\nduration = \"1h\"\n\
         [rules.probe]\nkind = \"rate\"\nlimit = 5\nwindow = \"10s\"\nscope = \"farm\"\nmatch.path.prefix = [\"/x\"]\nscore = 10\n",
    );
    webfence()
        .args(["check", "-c"])
        .arg(&score)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "score.toml:11:9: a farm rule decides with an action: it cannot add to a score",
        ));
}

/// A read of more than 256 KiB goes to the rules whole and is parsed on
/// every core: every line is counted, the malformed ones said with their
/// file and line, and a ban in the middle of it decided with its line.
#[test]
fn a_large_append_is_decided_whole_with_every_line_counted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _daemon = start(d, &[]);
    let log = d.join("access.log");
    let mut text = String::new();
    for i in 0..4000u32 {
        if i == 2500 {
            text.push_str(&lines(&["192.0.2.77"], "/trigger"));
        }
        if i % 2000 == 1000 {
            text.push_str("this is not a log line\n");
        }
        // Spread over /16s: no network floods a page.
        let ip = format!("{}.{}.0.1", 11 + i % 200, i / 200);
        text.push_str(&lines(&[ip.as_str()], &format!("/page/{}", i % 7)));
    }
    assert!(text.len() > 300 << 10, "{} bytes", text.len());
    append(&log, &text);
    wait_lines(d, 4003);
    let st = status_json(d);
    assert_eq!(st["loop"]["malformed"], 2, "{st}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let bans = loop {
        let out = ctl(d, &["bans", "--json"]).success();
        let out = String::from_utf8_lossy(&out.get_output().stdout).to_string();
        if out.contains("192.0.2.77") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        bans.contains("\"ip\":\"192.0.2.77\"") && bans.contains("\"rule\":\"trigger\""),
        "{bans}"
    );
    assert_eq!(bans.lines().count(), 1, "{bans}");
    // Line 2502: 2500 lines before it, and one malformed among them.
    assert!(bans.contains("\"last_line\":2502"), "{bans}");
    let log_text = std::fs::read_to_string(d.join("daemon.log")).unwrap();
    assert!(
        log_text.contains("line=1001") && log_text.contains("line=3003"),
        "{log_text}"
    );
}
