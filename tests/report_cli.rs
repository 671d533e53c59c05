//! `webfence report` from the outside: outputs, filters, formats, errors.

mod common;

use std::io::{Read, Write};
use std::process::Stdio;

use common::{line, report_json, sample, webfence, write};
use predicates::prelude::*;
use serde_json::Value;

const T0: &str = "10/Oct/2000:13:55:36 +0000";

fn hits_sorted_desc(list: &Value) -> bool {
    let hits: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["hits"].as_u64().unwrap())
        .collect();
    hits.windows(2).all(|w| w[0] >= w[1])
}

#[test]
fn table_output_on_the_sample() {
    webfence()
        .args(["report", "--color", "never"])
        .arg(sample())
        .assert()
        .success()
        .stderr(predicate::str::contains("detected log format 'combined'"))
        .stdout(predicate::str::contains("Summary"))
        .stdout(predicate::str::contains("Requests          2,500"))
        .stdout(predicate::str::contains("Malformed lines   2"))
        .stdout(predicate::str::contains("Top clients (by hits)"))
        .stdout(predicate::str::contains("Status codes"))
        .stdout(predicate::str::contains("Top paths"))
        .stdout(predicate::str::contains("Top static files"))
        .stdout(predicate::str::contains("Top 404 paths"))
        .stdout(predicate::str::contains("User agents"))
        .stdout(predicate::str::contains("Referrers"))
        .stdout(predicate::str::contains("Methods"))
        .stdout(predicate::str::contains("Timeline (per"))
        .stdout(predicate::str::contains("Peak rate"))
        .stdout(predicate::str::contains(
            "access.log:2501: user agent starting at column",
        ))
        .stdout(predicate::str::contains(
            "access.log:2502: NUL byte at column 4",
        ))
        .stdout(predicate::str::contains("\x1b[").not());
}

#[test]
fn color_only_when_asked_or_on_a_terminal() {
    webfence()
        .args(["report", "--color", "always"])
        .arg(sample())
        .assert()
        .success()
        .stdout(predicate::str::contains("\x1b[1;36mSummary"));
    // Not a terminal: plain.
    webfence()
        .arg("report")
        .arg(sample())
        .assert()
        .success()
        .stdout(predicate::str::contains("\x1b[").not());
}

#[test]
fn json_has_the_documented_shape() {
    let doc = report_json(&[sample().to_str().unwrap()]);
    let s = &doc["summary"];
    for key in [
        "requests",
        "malformed",
        "unique_ips",
        "bytes",
        "first",
        "last",
    ] {
        assert!(!s[key].is_null(), "summary.{key} missing");
    }
    assert_eq!(s["requests"], 2500);
    assert_eq!(s["malformed"], 2);
    assert_eq!(s["first"], "2024-03-10T00:00:00Z");
    for (list, key) in [
        ("ips", "ip"),
        ("statuses", "status"),
        ("paths", "path"),
        ("user_agents", "user_agent"),
        ("hosts", "host"),
    ] {
        let l = &doc[list];
        assert!(l.is_array(), "{list} missing");
        assert!(hits_sorted_desc(l), "{list} not sorted by hits");
        assert!(
            l.as_array().unwrap().len() <= 10,
            "{list} not bounded by --top"
        );
        if let Some(first) = l.as_array().unwrap().first() {
            assert!(
                !first[key].is_null() && first["hits"].is_u64(),
                "{list}[0] lacks {key}/hits"
            );
        }
    }
    let timeline = doc["timeline"].as_array().unwrap();
    assert!(!timeline.is_empty());
    assert!(timeline[0]["start"].is_string() && timeline[0]["hits"].is_u64());
    let starts: Vec<&str> = timeline
        .iter()
        .map(|b| b["start"].as_str().unwrap())
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "timeline is chronological"
    );
    let total: u64 = timeline.iter().map(|b| b["hits"].as_u64().unwrap()).sum();
    assert_eq!(total, 2500);
}

#[test]
fn top_bounds_lists_and_zero_means_all() {
    let doc = report_json(&[sample().to_str().unwrap(), "--top", "3"]);
    assert_eq!(doc["ips"].as_array().unwrap().len(), 3);
    let all = report_json(&[sample().to_str().unwrap(), "--top", "0"]);
    assert_eq!(
        all["ips"].as_array().unwrap().len() as u64,
        all["summary"]["unique_ips"].as_u64().unwrap()
    );
}

#[test]
fn by_bytes_ranks_by_bytes() {
    let doc = report_json(&[sample().to_str().unwrap(), "--by", "bytes"]);
    let bytes: Vec<u64> = doc["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["bytes"].as_u64().unwrap())
        .collect();
    assert!(bytes.windows(2).all(|w| w[0] >= w[1]), "{bytes:?}");
}

#[test]
fn csv_tables() {
    webfence()
        .args(["report", "--csv", "ips", "--top", "2"])
        .arg(sample())
        .assert()
        .success()
        .stdout(predicate::str::starts_with(
            "ip,hits,percent,bytes,status_4xx,status_5xx,first,last\n",
        ))
        .stdout(predicate::function(|s: &str| s.lines().count() == 3));
    webfence()
        .args(["report", "--csv", "user_agents", "--top", "0"])
        .arg(sample())
        .assert()
        .success()
        .stdout(predicate::str::starts_with("user_agent,hits,bytes,percent\n"))
        // Fields with commas are quoted.
        .stdout(predicate::str::contains("\n\"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\",339,"));
    webfence()
        .args(["report", "--csv", "bogus"])
        .arg(sample())
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "invalid value 'bogus' for '--csv <TABLE>'",
        ));
    webfence()
        .args(["report", "--csv", "ips", "--json"])
        .arg(sample())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
}

#[test]
fn stdin_dash_and_implicit_pipe() {
    let text = std::fs::read(sample()).unwrap();
    for args in [vec!["report", "-", "--json"], vec!["report", "--json"]] {
        let out = webfence()
            .args(&args)
            .write_stdin(text.clone())
            .output()
            .unwrap();
        assert!(out.status.success());
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["summary"]["requests"], 2500);
    }
}

#[test]
fn rotated_set_with_gzip_makes_one_report() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "access.log",
        &format!(
            "{}\n",
            line("192.0.2.1", T0, "GET / HTTP/1.1", 200, 10, "a")
        ),
    );
    let b = write(
        dir.path(),
        "access.log.1",
        &format!(
            "{}\n",
            line("192.0.2.1", T0, "GET /x HTTP/1.1", 404, 5, "a")
        ),
    );
    let gz_path = dir.path().join("access.log.2.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for _ in 0..3 {
        writeln!(
            enc,
            "{}",
            line("198.51.100.9", T0, "GET / HTTP/1.1", 200, 100, "b")
        )
        .unwrap();
    }
    std::fs::write(&gz_path, enc.finish().unwrap()).unwrap();
    let doc = report_json(&[
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        gz_path.to_str().unwrap(),
    ]);
    assert_eq!(doc["summary"]["requests"], 5);
    assert_eq!(doc["summary"]["bytes"], 315);
    assert_eq!(doc["ips"][0]["ip"], "198.51.100.9");
    assert_eq!(doc["ips"][0]["hits"], 3);
}

#[test]
fn truncated_gzip_warns_and_keeps_what_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for i in 0..2000 {
        writeln!(
            enc,
            "{}",
            line(
                &format!("192.0.2.{}", i % 200),
                T0,
                "GET / HTTP/1.1",
                200,
                1,
                "ua"
            )
        )
        .unwrap();
    }
    let bytes = enc.finish().unwrap();
    let p = dir.path().join("cut.gz");
    std::fs::write(&p, &bytes[..bytes.len() - 30]).unwrap();
    let out = webfence()
        .args(["report", "--json"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cut.gz: read failed after line"),
        "{stderr}"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["summary"]["requests"].as_u64().unwrap() > 1000);
    assert_eq!(doc["warnings"].as_array().unwrap().len(), 1);
}

#[test]
fn filters() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        line(
            "192.0.2.1",
            "10/Oct/2000:13:00:00 +0000",
            "GET /api/a HTTP/1.1",
            200,
            10,
            "a",
        ),
        line(
            "192.0.2.2",
            "10/Oct/2000:14:00:00 +0000",
            "GET /api/b HTTP/1.1",
            404,
            10,
            "a",
        ),
        line(
            "2001:db8::1",
            "10/Oct/2000:15:00:00 +0000",
            "GET /home HTTP/1.1",
            503,
            10,
            "a",
        ),
        line(
            "198.51.100.1",
            "10/Oct/2000:16:00:00 +0000",
            "GET /home HTTP/1.1",
            200,
            10,
            "a",
        ),
    ];
    let p = write(dir.path(), "a.log", &(lines.join("\n") + "\n"));
    let p = p.to_str().unwrap();
    let count = |extra: &[&str]| {
        let mut args = vec![p];
        args.extend_from_slice(extra);
        let doc = report_json(&args);
        (
            doc["summary"]["requests"].as_u64().unwrap(),
            doc["summary"]["filtered"].as_u64().unwrap(),
        )
    };
    assert_eq!(count(&["--ip", "192.0.2.0/24"]), (2, 2));
    assert_eq!(count(&["--ip", "!192.0.2.0/24"]), (2, 2));
    assert_eq!(
        count(&["--ip", "2001:db8::/32", "--ip", "198.51.100.1"]),
        (2, 2)
    );
    assert_eq!(count(&["--status", "4xx"]), (1, 3));
    assert_eq!(count(&["--status", "500-599,404"]), (2, 2));
    assert_eq!(count(&["--path", "^/api/"]), (2, 2));
    assert_eq!(
        count(&[
            "--since",
            "2000-10-10 14:00",
            "--until",
            "2000-10-10T16:00:00Z"
        ]),
        (2, 2)
    );
    // Nothing left after filtering is not an error.
    assert_eq!(count(&["--status", "302"]), (0, 4));
}

#[test]
fn host_filter_on_vhost_logs() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "shop.example.com:443 192.0.2.1 - - [{T0}] \"GET / HTTP/1.1\" 200 1 \"-\" \"a\"\nblog.example.org:80 192.0.2.2 - - [{T0}] \"GET / HTTP/1.1\" 200 1 \"-\" \"a\"\n"
    );
    let p = write(dir.path(), "v.log", &text);
    let doc = report_json(&[p.to_str().unwrap(), "--host", "*.example.com"]);
    assert_eq!(doc["summary"]["requests"], 1);
    assert_eq!(doc["hosts"][0]["host"], "shop.example.com");
}

#[test]
fn custom_formats_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    // nginx with X-Forwarded-For behind a trusted proxy.
    let p = write(
        dir.path(),
        "n.log",
        &format!(
            "10.0.0.5 - - [{T0}] \"GET / HTTP/1.1\" 200 1 \"-\" \"a\" \"6.6.6.6, 203.0.113.7\"\n10.0.0.5 - - [{T0}] \"GET / HTTP/1.1\" 200 1 \"-\" \"a\" \"203.0.113.7\"\n"
        ),
    );
    let doc = report_json(&[
        p.to_str().unwrap(),
        "--nginx-format",
        r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for""#,
        "--trusted-proxy",
        "10.0.0.0/8",
    ]);
    assert_eq!(doc["ips"][0]["ip"], "203.0.113.7");
    assert_eq!(doc["ips"][0]["hits"], 2);
    // Apache LogFormat pasted with its escaped quotes.
    let doc = report_json(&[
        sample().to_str().unwrap(),
        "--apache-format",
        r#"%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-agent}i\""#,
    ]);
    assert_eq!(doc["summary"]["requests"], 2500);
    // GoAccess log-format with its date and time formats.
    let doc = report_json(&[
        sample().to_str().unwrap(),
        "--goaccess-format",
        r#"%h %^[%d:%t %^] "%r" %s %b "%R" "%u""#,
        "--date-format",
        "%d/%b/%Y",
        "--time-format",
        "%H:%M:%S",
    ]);
    assert_eq!(doc["summary"]["requests"], 2500);
    // Caddy JSON, auto-detected.
    let caddy = r#"{"level":"info","ts":1710028800.25,"msg":"handled request","request":{"remote_ip":"2001:db8::9","method":"GET","host":"c.example","uri":"/x?y=1","headers":{"User-Agent":["curl/8"]}},"size":10,"status":200}"#;
    let p = write(dir.path(), "caddy.log", &format!("{caddy}\n{caddy}\n"));
    let doc = report_json(&[p.to_str().unwrap()]);
    assert_eq!(doc["summary"]["format"], "json");
    assert_eq!(doc["ips"][0]["ip"], "2001:db8::9");
    assert_eq!(doc["paths"][0]["path"], "/x");
    assert_eq!(doc["hosts"][0]["host"], "c.example");
    // JSON with renamed fields.
    let p = write(
        dir.path(),
        "custom.json",
        "{\"peer\":\"192.0.2.8\",\"when\":1710028800,\"code\":204}\n",
    );
    let doc = report_json(&[
        p.to_str().unwrap(),
        "--format",
        "json",
        "--json-field",
        "client=peer",
        "--json-field",
        "time=when",
        "--json-field",
        "status=code",
    ]);
    assert_eq!(doc["statuses"][0]["status"], 204);
}

#[test]
fn local_times_follow_tz() {
    let out = webfence()
        .env("TZ", "Asia/Tokyo")
        .args(["report", "--json", "--local"])
        .arg(sample())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["summary"]["first"], "2024-03-10T09:00:00+09:00");
}

#[test]
fn log_text_cannot_inject_terminal_escapes() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "evil.log",
        &format!(
            "{}\n",
            line(
                "192.0.2.1",
                T0,
                "GET /\x1b[2J HTTP/1.1",
                200,
                1,
                "x\x1b]0;pwned\x07"
            )
        ),
    );
    webfence()
        .args(["report", "--color", "never"])
        .arg(&p)
        .assert()
        .success()
        .stdout(predicate::str::contains("\\x1b[2J"))
        .stdout(predicate::str::contains("\x1b").not())
        .stdout(predicate::str::contains("\x07").not());
}

/// Bidirectional overrides and zero-width characters are shown as escapes
/// (a path could otherwise read backwards), and a User-Agent that a
/// spreadsheet would run as a formula is written as text in CSV.
#[test]
fn disguising_text_and_formulas_are_neutralised() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "evil.log",
        &format!(
            "{}\n",
            line(
                "192.0.2.1",
                T0,
                "GET /inv\u{202e}gpj.exe HTTP/1.1",
                200,
                1,
                "=cmd|' /C calc'!A0\u{200b}"
            )
        ),
    );
    webfence()
        .args(["report", "--color", "never"])
        .arg(&p)
        .assert()
        .success()
        .stdout(predicate::str::contains("/inv\\u{202e}gpj.exe"))
        .stdout(predicate::str::contains("\u{202e}").not())
        .stdout(predicate::str::contains("\u{200b}").not());
    webfence()
        .args(["report", "--csv", "user_agents"])
        .arg(&p)
        .assert()
        .success()
        .stdout(predicate::str::contains("'=cmd|"))
        .stdout(predicate::str::contains("\n=cmd").not());
}

/// Regression: a line dated 10^18 ms beside a 2024 line asked for 66 GB
/// and aborted; a 9999 date made a 416,211-row timeline. Absurd times are
/// malformed, and the timeline stays short whatever the span.
#[test]
fn absurd_timestamps_are_malformed_and_timelines_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let good = line(
        "192.0.2.1",
        "10/Mar/2024:00:00:00 +0000",
        "GET / HTTP/1.1",
        200,
        1,
        "x",
    );
    let far = line(
        "192.0.2.2",
        "10/Mar/9999:00:00:00 +0000",
        "GET / HTTP/1.1",
        200,
        1,
        "x",
    );
    let old = line(
        "192.0.2.3",
        "01/Jan/1971:00:00:00 +0000",
        "GET / HTTP/1.1",
        200,
        1,
        "x",
    );
    let p = write(dir.path(), "far.log", &format!("{good}\n{far}\n{old}\n"));
    let doc = report_json(&[p.to_str().unwrap(), "--format", "combined"]);
    assert_eq!(doc["summary"]["requests"], 2);
    assert_eq!(doc["summary"]["malformed"], 1);
    let rows = doc["timeline"].as_array().unwrap().len();
    assert!(rows <= 1441, "{rows} timeline rows");
    let p = write(
        dir.path(),
        "far.json",
        "{\"remote_addr\":\"192.0.2.8\",\"time\":1710028800,\"status\":200}\n{\"remote_addr\":\"192.0.2.9\",\"time\":1000000000000000000,\"status\":200}\n",
    );
    let doc = report_json(&[p.to_str().unwrap(), "--format", "json"]);
    assert_eq!(doc["summary"]["requests"], 1);
    assert_eq!(doc["summary"]["malformed"], 1);
}

#[test]
fn closed_pipe_ends_quietly() {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("webfence"))
        .args(["report", "--top", "0", "--color", "never"])
        .arg(sample())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{stderr}");
}

// ---- error messages -------------------------------------------------------

#[test]
fn missing_file_is_named() {
    webfence()
        .args(["report", "/nonexistent/access.log"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "webfence: error: cannot open /nonexistent/access.log: No such file or directory",
        ));
}

#[test]
fn directory_is_refused() {
    webfence()
        .args(["report", "/tmp"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "cannot open /tmp: it is a directory\n",
        ))
        // Regression: the cause was said twice.
        .stderr(predicate::str::contains("directory: it is a directory").not());
}

#[test]
fn no_parsable_line_fails_with_examples() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "bad.log",
        &format!(
            "{}\nhello\n",
            line(
                "192.0.2.1",
                "99/Oct/2000:13:55:36 +0000",
                "GET /",
                200,
                1,
                "a"
            )
        ),
    );
    webfence()
        .args(["report", "--format", "combined"])
        .arg(&p)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no line of"))
        .stderr(predicate::str::contains(
            "bad.log:1: invalid timestamp '99/Oct/2000:13:55:36 +0000' at column 16",
        ))
        .stderr(predicate::str::contains(
            "bad.log:2: expected ' ' at column 6, found end of line",
        ));
}

#[test]
fn unrecognisable_format_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "odd.log", "this is not\nan access log\n");
    webfence()
        .arg("report")
        .arg(&p)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "cannot recognise the log format of",
        ))
        .stderr(predicate::str::contains(
            "line 1: as combined: expected ' [' at column 12, found end of line",
        ))
        .stderr(predicate::str::contains(
            "hint: give the format with --format",
        ));
}

#[test]
fn empty_input_is_an_empty_report() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "empty.log", "");
    let doc = report_json(&[p.to_str().unwrap()]);
    assert_eq!(doc["summary"]["requests"], 0);
    assert!(doc["summary"]["first"].is_null());
    // Regression: the text said "Format combined" for an empty file.
    webfence()
        .args(["report", "--color", "never"])
        .arg(&p)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "Input             empty: no line to report",
        ))
        .stdout(predicate::str::contains("Format").not());
}

/// Regression: on a log spanning one second the peak rate (its minute's
/// hits / 60) was below the mean rate.
#[test]
fn the_peak_rate_is_never_below_the_mean() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..10)
        .map(|i| {
            format!(
                "{}\n",
                line(&format!("192.0.2.{i}"), T0, "GET / HTTP/1.1", 200, 1, "x")
            )
        })
        .collect();
    let p = write(dir.path(), "burst.log", &text);
    let doc = report_json(&[p.to_str().unwrap()]);
    let (mean, peak) = (
        doc["summary"]["mean_rps"].as_f64().unwrap(),
        doc["summary"]["peak_rps"].as_f64().unwrap(),
    );
    assert!(peak >= mean, "peak {peak} < mean {mean}");
}

#[test]
fn bad_option_values_are_named() {
    let cases: &[(&[&str], &str)] = &[
        (&["--status", "4yy"], "invalid --status '4yy'"),
        (&["--ip", "300.0.0.1"], "invalid --ip '300.0.0.1'"),
        (
            &["--since", "yesterday"],
            "--since: invalid time 'yesterday'",
        ),
        (&["--until", "soon"], "--until: invalid time 'soon'"),
        (&["--path", "("], "invalid --path regex '('"),
        (
            &["--trusted-proxy", "proxy.lan"],
            "invalid --trusted-proxy 'proxy.lan'",
        ),
        (
            &["--json-field", "client"],
            "invalid --json-field 'client': expected FIELD=KEY",
        ),
        (&["--json-field", "ip=x"], "unknown JSON field 'ip'"),
        (
            &["--nginx-format", "$request $status"],
            "it logs no client address",
        ),
        (&["--goaccess-format", "%h %Z"], "unknown specifier '%Z'"),
    ];
    for (args, want) in cases {
        webfence()
            .arg("report")
            .arg(sample())
            .args(*args)
            .assert()
            .code(1)
            .stderr(predicate::str::contains(*want));
    }
    let clap_cases: &[(&[&str], &str)] = &[
        (&["--format", "apache"], "unknown format 'apache'"),
        (&["--bucket", "5y"], "unknown unit 'y'"),
        (&["--by", "time"], "invalid value 'time' for '--by"),
        (
            &["--format", "combined", "--nginx-format", "$remote_addr"],
            "cannot be used with",
        ),
        (&["--date-format", "%d"], "--goaccess-format"),
    ];
    for (args, want) in clap_cases {
        webfence()
            .arg("report")
            .arg(sample())
            .args(*args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(*want));
    }
}

/// Formats real servers write: the host first without a port, a syslog or
/// journald prefix (RFC 3164, ISO, RFC 5424), status `-`, a hop list in
/// the client field, a host name as the client, and Traefik's JSON.
#[test]
fn formats_servers_really_write() {
    let dir = tempfile::tempdir().unwrap();
    let combined = |ip: &str, status: &str| {
        format!(r#"{ip} - - [10/Mar/2024:10:00:00 +0000] "GET /a HTTP/1.1" {status} 5 "-" "x""#)
    };
    let cases: &[(&str, String, &str)] = &[
        (
            "host_combined",
            format!("example.com {}\n", combined("192.0.2.1", "200")),
            "192.0.2.1",
        ),
        (
            "host_main",
            format!("example.com {} \"-\"\n", combined("192.0.2.2", "200")),
            "192.0.2.2",
        ),
        (
            "syslog + combined",
            format!(
                "Sep 15 10:00:01 web1 nginx[2869]: {}\n",
                combined("192.0.2.3", "200")
            ),
            "192.0.2.3",
        ),
        (
            "syslog + combined",
            format!(
                "<190>1 2024-03-10T10:00:00Z web1 nginx 2869 - - {}\n",
                combined("192.0.2.4", "200")
            ),
            "192.0.2.4",
        ),
        (
            "syslog + host_combined",
            format!(
                "2024-03-10T10:00:00.5+00:00 web1 nginx[1]: shop.example {}\n",
                combined("192.0.2.5", "200")
            ),
            "192.0.2.5",
        ),
    ];
    for (i, (format, text, ip)) in cases.iter().enumerate() {
        let p = write(dir.path(), &format!("f{i}.log"), text);
        let doc = report_json(&[p.to_str().unwrap()]);
        assert_eq!(doc["summary"]["format"], *format, "{text}");
        assert_eq!(doc["summary"]["malformed"], 0, "{text}");
        assert_eq!(doc["ips"][0]["ip"], *ip, "{text}");
    }

    // Status '-': a request that got no response is its own status.
    let p = write(
        dir.path(),
        "dash.log",
        &format!("{}\n", combined("192.0.2.6", "-")),
    );
    let doc = report_json(&[p.to_str().unwrap(), "--format", "combined"]);
    assert_eq!(doc["summary"]["malformed"], 0);
    assert_eq!(doc["statuses"][0]["status"], 0);
    webfence()
        .args(["report", "--color", "never", "--format", "combined"])
        .arg(&p)
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"(?m)^  -  +1 ").unwrap());

    // A hop list in the client field goes through the trusted proxies.
    let p = write(
        dir.path(),
        "hops.log",
        &format!("{}\n", combined("203.0.113.9, 10.0.0.1", "200")),
    );
    let doc = report_json(&[p.to_str().unwrap(), "--format", "combined"]);
    assert_eq!(doc["ips"][0]["ip"], "10.0.0.1");
    let doc = report_json(&[
        p.to_str().unwrap(),
        "--format",
        "combined",
        "--trusted-proxy",
        "10.0.0.0/8",
    ]);
    assert_eq!(doc["ips"][0]["ip"], "203.0.113.9");

    // HostnameLookups On: counted, as an unresolved client.
    let p = write(
        dir.path(),
        "names.log",
        &format!("{}\n", combined("crawl-66-249-66-1.googlebot.com", "200")),
    );
    let doc = report_json(&[p.to_str().unwrap(), "--format", "combined"]);
    assert_eq!(doc["summary"]["malformed"], 0);
    assert_eq!(doc["ips"][0]["ip"], "(host names, unresolved)");

    // Traefik's JSON access log, detected and mapped.
    let traefik = r#"{"ClientHost":"192.0.2.9","DownstreamContentSize":612,"DownstreamStatus":404,"Duration":1234567,"RequestHost":"shop.example","RequestMethod":"GET","RequestPath":"/wp-login.php?x=1","RequestProtocol":"HTTP/1.1","StartUTC":"2024-03-10T10:00:00.123456789Z","request_User-Agent":"curl/8.0"}"#;
    let p = write(dir.path(), "traefik.log", &format!("{traefik}\n"));
    let doc = report_json(&[p.to_str().unwrap()]);
    assert_eq!(doc["ips"][0]["ip"], "192.0.2.9");
    assert_eq!(doc["paths"][0]["path"], "/wp-login.php");
    assert_eq!(doc["statuses"][0]["status"], 404);
    assert_eq!(doc["hosts"][0]["host"], "shop.example");
    assert_eq!(doc["user_agents"][0]["user_agent"], "curl/8.0");
}
