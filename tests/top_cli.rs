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
