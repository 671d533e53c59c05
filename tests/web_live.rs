//! `[web]`: the daemon's live dashboard, its API and event stream, and
//! the page in a real headless Chromium as the log grows.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::browser::{Browser, artifacts};
use common::{Proc, free_port};
use common::{fails_with, write};

/// A dry-run daemon following `DIR/access.log`, with `web` added to its
/// configuration; returns once its HTTP side answers.
fn start(dir: &Path, port: u16, web: &str) -> Proc {
    std::fs::write(dir.join("access.log"), "").unwrap();
    let cfg = write(
        dir,
        "w.toml",
        &format!(
            "[daemon]\nlogs = [\"{d}/access.log\"]\nformat = \"combined\"\nstate_dir = \"{d}/state\"\nsocket = \"{d}/ctl.sock\"\nbackend = \"none\"\n\
             [rules.trigger]\nkind = \"match\"\nmatch.path.exact = [\"/trigger\"]\naction = \"ban\"\n\
             [web]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n{web}\n",
            d = dir.display()
        ),
    );
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_webfence"))
        .args(["run", "-c"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(port, "/healthz", &[]).0 == 0 {
        assert!(
            Instant::now() < deadline,
            "the daemon did not listen: {}",
            std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Proc(child)
}

fn get(port: u16, path: &str, headers: &[&str]) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
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

fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

fn now_clf() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%d/%b/%Y:%H:%M:%S +0000"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn the_dashboard_needs_its_token_and_streams_events() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _d = start(dir.path(), port, "token = \"s3cret\"");
    assert_eq!(get(port, "/", &[]).0, 401);
    assert_eq!(get(port, "/api/live?token=wrong", &[]).0, 401);
    assert_eq!(get(port, "/events", &[]).0, 401);
    // The metrics and health check stay as they were.
    assert_eq!(get(port, "/healthz", &[]).0, 200);
    assert_eq!(get(port, "/metrics", &[]).0, 200);
    let (code, page) = get(port, "/?token=s3cret", &[]);
    assert_eq!(code, 200);
    assert!(page.contains("webfence live"));
    let (code, body) = get(port, "/api/live", &["Authorization: Bearer s3cret"]);
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    for key in ["site", "decisions", "bans", "guards", "conns", "protecting"] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
    // The event stream: a document within two seconds.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    write!(s, "GET /events?token=s3cret HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).contains("data: {") && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("text/event-stream"), "{text}");
    assert!(text.contains("data: {\"bans\""), "{text}");
}

#[test]
fn the_dashboard_can_ask_for_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _d = start(dir.path(), port, "user = \"admin\"\npassword = \"pw\"");
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        panic!("no listener");
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert!(
        resp.contains("WWW-Authenticate: Basic realm=\"webfence\""),
        "{resp}"
    );
    // admin:pw, and admin:px
    assert_eq!(
        get(port, "/api/live", &["Authorization: Basic YWRtaW46cHc="]).0,
        200
    );
    assert_eq!(
        get(port, "/api/live", &["Authorization: Basic YWRtaW46cHg="]).0,
        401
    );
}

#[test]
fn web_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = |name: &str, web: &str| {
        write(
            d,
            name,
            &format!(
                "[daemon]\nlogs = [\"/tmp/x.log\"]\n[metrics]\nlisten = \"127.0.0.1:9736\"\n[web]\nenabled = true\n{web}\n"
            ),
        )
    };
    let open = cfg("a.toml", "listen = \"0.0.0.0:9736\"");
    fails_with(
        &["check", "-c", open.to_str().unwrap()],
        &["a.toml", "served on the metrics listener (127.0.0.1:9736)"],
    );
    let public = write(
        d,
        "b.toml",
        "[daemon]\nlogs = [\"/tmp/x.log\"]\n[metrics]\nlisten = \"0.0.0.0:9736\"\n[web]\nenabled = true\n",
    );
    fails_with(
        &["check", "-c", public.to_str().unwrap()],
        &["b.toml", "not a loopback address", "set token"],
    );
    let half = cfg("c.toml", "user = \"admin\"");
    fails_with(
        &["check", "-c", half.to_str().unwrap()],
        &["c.toml", "needs both user and password"],
    );
    let typo = cfg("d.toml", "tokn = \"x\"");
    fails_with(
        &["check", "-c", typo.to_str().unwrap()],
        &["d.toml", "tokn"],
    );
}

#[test]
fn the_live_page_follows_the_log_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _d = start(dir.path(), port, "");
    let mut b = Browser::launch(1280, 900);
    b.navigate(&format!("http://127.0.0.1:{port}/"));
    b.wait_for("document.body.dataset.updated", Duration::from_secs(10));
    assert_eq!(
        b.eval("document.getElementById('health').textContent"),
        "protecting"
    );
    let log = dir.path().join("access.log");
    let at = now_clf();
    let mut lines: Vec<String> = (0..40)
        .map(|_| format!("192.0.2.7 - - [{at}] \"GET /page HTTP/1.1\" 200 512 \"-\" \"Mozilla/5.0 live-test\""))
        .collect();
    lines.push(format!(
        "198.51.100.9 - - [{at}] \"GET /trigger HTTP/1.1\" 404 0 \"-\" \"curl/8\""
    ));
    append(&log, &lines);
    // The page updates itself: the client, the decision and the ban show.
    b.wait_for("[...document.querySelectorAll('[data-table=clients] tbody td')].some(c => c.textContent === '192.0.2.7')", Duration::from_secs(10));
    b.wait_for("[...document.querySelectorAll('[data-table=decisions] tbody td')].some(c => c.textContent === '198.51.100.9')", Duration::from_secs(10));
    b.wait_for("[...document.querySelectorAll('[data-table=bans] tbody td')].some(c => c.textContent === '198.51.100.9')", Duration::from_secs(10));
    let m1 = b.wait_for("Number(document.querySelectorAll('#site .stat .v')[2].textContent.replace(/,/g, '')) >= 41 && document.querySelectorAll('#site .stat .v')[2].textContent", Duration::from_secs(10));
    assert_eq!(m1, "41");
    b.screenshot(&artifacts("live").join("live-1280.png"));
    assert_eq!(b.errors(), Vec::<String>::new(), "console errors");
    let requests = b.requests();
    assert!(
        requests
            .iter()
            .all(|u| u.starts_with(&format!("http://127.0.0.1:{port}/"))),
        "requests elsewhere: {requests:?}"
    );
}

/// With `[packets]` on, the live page has a LAN table fed by the samples
/// (capturing on loopback needs root: skipped without it).
#[test]
fn the_live_page_shows_the_packet_source() {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !root {
        eprintln!("skipped: capturing needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _d = start(
        dir.path(),
        port,
        "[packets]\nenabled = true\ninterface = \"lo\"\nlocal = [\"127.0.0.0/8\"]\nsample = \"1s\"\nevery = \"1s\"\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Each request is loopback traffic the next sample counts.
        let (code, body) = get(port, "/api/live", &[]);
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["packets"]["samples"].as_u64().unwrap_or(0) >= 2
            && v["packets"]["top"]
                .as_array()
                .is_some_and(|t| t.iter().any(|r| r["address"] == "127.0.0.1"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no packet sample in /api/live: {v}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut b = Browser::launch(1280, 900);
    b.navigate(&format!("http://127.0.0.1:{port}/"));
    b.wait_for(
        "[...document.querySelectorAll('[data-table=lan] tbody td')].some(c => c.textContent === '127.0.0.1')",
        Duration::from_secs(10),
    );
    assert_eq!(b.errors(), Vec::<String>::new());
}
