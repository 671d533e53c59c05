//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub mod browser;
pub mod netns;

pub fn webfence() -> Command {
    let mut cmd = Command::cargo_bin("webfence").expect("binary built");
    // A width from the environment would change the layouts tests read.
    cmd.env_remove("NO_COLOR")
        .env_remove("COLUMNS")
        .env("TZ", "UTC");
    cmd
}

/// Runs webfence with `args` and asserts it fails with each of `wants`
/// in its standard error.
pub fn fails_with<S: AsRef<std::ffi::OsStr>>(args: &[S], wants: &[&str]) {
    let out = webfence().args(args).output().expect("webfence runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it succeeded:\n{err}");
    for w in wants {
        assert!(err.contains(w), "missing {w:?} in:\n{err}");
    }
}

/// Runs webfence with `args`, asserts it succeeds, and returns its
/// standard output and standard error.
pub fn succeeds<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (String, String) {
    let out = webfence().args(args).output().expect("webfence runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "webfence failed:\n{err}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), err)
}

pub fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/access.log")
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test log");
    p
}

/// Runs `webfence report ARGS --json` and returns the parsed document.
pub fn report_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    all.push("--json");
    let (out, _) = succeeds(&all);
    serde_json::from_str(&out).expect("valid JSON")
}

/// A combined-format line.
pub fn line(ip: &str, time: &str, request: &str, status: u16, bytes: u64, agent: &str) -> String {
    format!(r#"{ip} - - [{time}] "{request}" {status} {bytes} "-" "{agent}""#)
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// A child process killed and reaped when the test ends, however it ends.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running daemon's `status --json` on `sock` (null when it does not
/// answer).
pub fn status_json(sock: &Path) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webfence"))
        .args(["status", "--json", "--socket"])
        .arg(sock)
        .output()
        .expect("webfence runs");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// A control command (`ban`, `unban`...) on `sock`, which must succeed.
pub fn ctl_ok(sock: &Path, args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webfence"))
        .args(args)
        .arg("--socket")
        .arg(sock)
        .output()
        .expect("webfence runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `f` holds, at most `within`; how long it took.
pub fn until(
    what: &str,
    within: std::time::Duration,
    mut f: impl FnMut() -> bool,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    while !f() {
        assert!(started.elapsed() < within, "never: {what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    started.elapsed()
}

/// Asserts that `promtool check metrics` accepts a `/metrics` body (the
/// part after the HTTP headers, when they are there). Skipped without
/// promtool, unless WEBFENCE_REQUIRE_PROMETHEUS says it must be here.
pub fn promtool_accepts(response: &str) {
    use std::io::Write;
    let body = response.split_once("\r\n\r\n").map_or(response, |x| x.1);
    let spawned = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut check) = spawned else {
        assert!(
            std::env::var_os("WEBFENCE_REQUIRE_PROMETHEUS").is_none(),
            "promtool is required here"
        );
        eprintln!("promtool check skipped: no promtool");
        return;
    };
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
