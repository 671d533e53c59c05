//! `webfence top` as a person uses it: follow a log, append to it, and see
//! the hammering client at the top within two refreshes.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

fn now_clf() -> String {
    jiff::Timestamp::now()
        .strftime("%d/%b/%Y:%H:%M:%S +0000")
        .to_string()
}

#[test]
fn the_hammering_client_is_on_top_within_two_refreshes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    // Old lines: not shown, top starts at the end.
    std::fs::write(
        &log,
        format!(
            "192.0.2.200 - - [{}] \"GET /old HTTP/1.1\" 200 1 \"-\" \"old\"\n",
            now_clf()
        ),
    )
    .unwrap();
    let pattern = dir.path().join("*.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_webfence"))
        .args([
            "top",
            pattern.to_str().unwrap(),
            "--count",
            "4",
            "--interval",
            "1",
            "--color",
            "never",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    // Wait for the first refresh, then hammer.
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let mut text = String::new();
    for i in 0..300 {
        text.push_str(&format!(
            "203.0.113.66 - - [{}] \"GET /search?q={i} HTTP/1.1\" 200 512 \"-\" \"EvilBot/1.0\"\n",
            now_clf()
        ));
    }
    for i in 0..5 {
        text.push_str(&format!(
            "198.51.100.7 - - [{}] \"GET /page{i} HTTP/1.1\" 200 512 \"-\" \"Firefox\"\n",
            now_clf()
        ));
    }
    f.write_all(text.as_bytes()).unwrap();
    drop(f);
    let mut rest = String::new();
    for line in reader.lines() {
        rest.push_str(&line.unwrap());
        rest.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(first.contains("waiting for new lines"), "{first}");
    // Within the next two snapshots, the flood's client tops the table.
    let snapshots: Vec<&str> = rest
        .split("webfence top ")
        .filter(|s| s.contains("CLIENT"))
        .collect();
    assert!(!snapshots.is_empty(), "{rest}");
    let top_row = snapshots[0].lines().nth(3).unwrap_or("");
    assert!(top_row.trim_start().starts_with("203.0.113.66"), "{rest}");
    assert!(top_row.contains("EvilBot"), "{rest}");
    assert!(
        !rest.contains("192.0.2.200"),
        "old lines were counted: {rest}"
    );
}

#[test]
fn top_needs_a_file() {
    common::webfence()
        .arg("top")
        .assert()
        .failure()
        .stderr(predicates::str::contains("no log to follow"));
}

/// Runs tmux with `args`; None when tmux is missing (and not required).
/// Regression: `top` on a path that does not exist waited forever saying
/// "0 files followed".
#[test]
fn top_names_a_file_that_does_not_exist() {
    common::webfence()
        .args(["top", "--plain", "/nonexistent/acces.log"])
        .timeout(std::time::Duration::from_secs(10))
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "/nonexistent/acces.log does not exist (--wait waits for it to appear)",
        ));
    // With --wait, it waits (and a bounded count ends it).
    common::webfence()
        .args([
            "top",
            "--plain",
            "--wait",
            "--count",
            "1",
            "--interval",
            "1",
        ])
        .arg("/nonexistent/acces.log")
        .timeout(std::time::Duration::from_secs(10))
        .assert()
        .success();
}

fn tmux(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("tmux").args(args).output() {
        Ok(o) => Some(o),
        Err(_) if std::env::var_os("WEBFENCE_REQUIRE_TMUX").is_none() => None,
        Err(e) => panic!("tmux is required here: {e}"),
    }
}

/// The dashboard, driven like a person at an 80x24 terminal: start it,
/// append a flood to the log, read the screen.
#[test]
fn the_dashboard_in_a_real_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let session = format!("webfence-test-{}", std::process::id());
    let cmd = format!(
        "{} top {} --interval 1; echo EXITED $?; sleep 30",
        env!("CARGO_BIN_EXE_webfence"),
        log.display()
    );
    let Some(started) = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "80",
        "-y",
        "24",
        &cmd,
    ]) else {
        eprintln!("tmux not installed: skipped");
        return;
    };
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let capture = || {
        let out = tmux(&["capture-pane", "-p", "-t", &session]).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Append only once the dashboard is up (and so following the log).
    for _ in 0..100 {
        if capture().contains("Req/s") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let mut text = String::new();
    for i in 0..400 {
        text.push_str(&format!(
            "203.0.113.66 - - [{}] \"GET /search?q={i} HTTP/1.1\" 200 512 \"-\" \"EvilBot/1.0\"\n",
            now_clf()
        ));
    }
    for i in 0..20 {
        text.push_str(&format!(
            "198.51.100.{i} - - [{}] \"GET /page HTTP/1.1\" 200 512 \"-\" \"Firefox\"\n",
            now_clf()
        ));
    }
    f.write_all(text.as_bytes()).unwrap();
    drop(f);
    // Within two refreshes the hammering client is the first row.
    let mut screen = String::new();
    let mut found = false;
    // Two refreshes (1 s each) and the 100 ms poll, with a little slack.
    for _ in 0..30 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        screen = capture();
        let first_row = screen.lines().find(|l| l.contains("Req/s")).and_then(|_| {
            let mut it = screen.lines().skip_while(|l| !l.contains("Req/s"));
            it.nth(1)
        });
        if first_row.is_some_and(|r| r.contains("203.0.113.66")) {
            found = true;
            break;
        }
    }
    // Keys: help opens, q closes it, q quits and the shell gets the terminal back.
    let _ = tmux(&["send-keys", "-t", &session, "?"]);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let help = capture();
    let _ = tmux(&["send-keys", "-t", &session, "x"]);
    let _ = tmux(&["send-keys", "-t", &session, "q"]);
    std::thread::sleep(std::time::Duration::from_millis(600));
    let after = capture();
    let _ = tmux(&["kill-session", "-t", &session]);
    assert!(
        found,
        "hammering client not on top within two refreshes:\n{screen}"
    );
    assert!(
        screen.lines().count() <= 24 && screen.contains("webfence top"),
        "{screen}"
    );
    assert!(help.contains("switch panel"), "{help}");
    assert!(after.contains("EXITED 0"), "did not quit cleanly:\n{after}");
    assert!(
        !after.contains("Req/s"),
        "the terminal was not restored:\n{after}"
    );
}
