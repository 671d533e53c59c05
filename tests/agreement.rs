//! The report's counts against counts computed without the engine: by a
//! deliberately naive regex parser here, and by GoAccess itself.

mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::process::Command;

use common::{report_json, sample};
use serde_json::Value;

#[derive(Default, Debug, PartialEq, Eq)]
struct Naive {
    requests: u64,
    bytes: u64,
    ips: HashMap<IpAddr, (u64, u64)>,
    statuses: HashMap<u64, u64>,
}

/// Counts the sample with a plain regex, sharing no code with the engine.
fn naive_counts(text: &str) -> Naive {
    let re = regex::Regex::new(
        r#"^(\S+) \S+ \S+ \[[^\]]+\] "(?:[^"\\]|\\.)*" (\d{3}) (\d+|-) "[^"]*" "[^"]*"$"#,
    )
    .unwrap();
    let mut n = Naive::default();
    for line in text.lines() {
        let Some(c) = re.captures(line) else { continue };
        let Ok(ip) = c[1].parse::<IpAddr>() else {
            continue;
        };
        let bytes = c[3].parse::<u64>().unwrap_or(0);
        n.requests += 1;
        n.bytes += bytes;
        let e = n.ips.entry(ip).or_default();
        e.0 += 1;
        e.1 += bytes;
        *n.statuses.entry(c[2].parse().unwrap()).or_default() += 1;
    }
    n
}

fn engine_counts(doc: &Value) -> Naive {
    let mut n = Naive {
        requests: doc["summary"]["requests"].as_u64().unwrap(),
        bytes: doc["summary"]["bytes"].as_u64().unwrap(),
        ..Naive::default()
    };
    for r in doc["ips"].as_array().unwrap() {
        let ip: IpAddr = r["ip"].as_str().unwrap().parse().unwrap();
        n.ips.insert(
            ip,
            (r["hits"].as_u64().unwrap(), r["bytes"].as_u64().unwrap()),
        );
    }
    for s in doc["statuses"].as_array().unwrap() {
        n.statuses
            .insert(s["status"].as_u64().unwrap(), s["hits"].as_u64().unwrap());
    }
    n
}

#[test]
fn counts_match_an_independent_parser() {
    let text = String::from_utf8_lossy(&std::fs::read(sample()).unwrap()).into_owned();
    let want = naive_counts(&text);
    assert_eq!(
        want.requests, 2500,
        "the naive parser must see the sample's requests"
    );
    for threads in ["1", "2", "3"] {
        let doc = report_json(&[
            sample().to_str().unwrap(),
            "--top",
            "0",
            "--threads",
            threads,
        ]);
        assert_eq!(engine_counts(&doc), want, "threads={threads}");
    }
}

#[test]
fn counts_match_goaccess() {
    if Command::new("goaccess").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("WEBFENCE_REQUIRE_GOACCESS").is_none(),
            "goaccess is required here (scripts/test installs it)"
        );
        eprintln!("skipped: goaccess not installed");
        return;
    }
    // GoAccess accepts a line cut off before its closing quote, which webfence
    // rightly calls malformed; compare where the definitions agree: on the
    // sample's well-formed lines.
    let dir = tempfile::tempdir().unwrap();
    let text = String::from_utf8_lossy(&std::fs::read(sample()).unwrap()).into_owned();
    let well_formed: String = text.lines().take(2500).map(|l| format!("{l}\n")).collect();
    let log = common::write(dir.path(), "access.log", &well_formed);
    let out = dir.path().join("ga.json");
    let status = Command::new("goaccess")
        .arg(&log)
        .args([
            "--log-format=COMBINED",
            "--max-items=100000",
            "--no-global-config",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let ga: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();

    let doc = report_json(&[log.to_str().unwrap(), "--top", "0"]);
    let ours = engine_counts(&doc);
    assert_eq!(ours.requests, 2500);

    assert_eq!(
        ga["general"]["total_requests"].as_u64().unwrap()
            - ga["general"]["failed_requests"].as_u64().unwrap(),
        ours.requests
    );
    assert_eq!(ga["general"]["bandwidth"].as_u64().unwrap(), ours.bytes);

    let mut ga_ips = HashMap::new();
    for h in ga["hosts"]["data"].as_array().unwrap() {
        let ip: IpAddr = h["data"].as_str().unwrap().parse().unwrap();
        ga_ips.insert(
            ip,
            (
                h["hits"]["count"].as_u64().unwrap(),
                h["bytes"]["count"].as_u64().unwrap(),
            ),
        );
    }
    assert_eq!(ga_ips, ours.ips);

    let mut ga_statuses = HashMap::new();
    for class in ga["status_codes"]["data"].as_array().unwrap() {
        for item in class["items"].as_array().unwrap() {
            let code: u64 = item["data"].as_str().unwrap()[..3].parse().unwrap();
            ga_statuses.insert(code, item["hits"]["count"].as_u64().unwrap());
        }
    }
    assert_eq!(ga_statuses, ours.statuses);
}
