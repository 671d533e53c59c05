//! Ban propagation across a farm: bans made on node A (through its control
//! socket) and the time until node B's ledger holds each (B records and
//! applies a farm ban in one step). Then 100,000 bans at once.
//!
//! Usage: farmlatency A.sock B.sock [N]     (default N = 200)

use std::path::Path;
use std::time::{Duration, Instant};

use webfence::daemon::control::{Request, request};

fn has(sock: &Path, subject: &str) -> bool {
    let r = request(
        sock,
        &Request::Bans {
            history: false,
            rule: None,
            within: Some(subject.to_string()),
            limit: Some(1),
        },
    );
    r.ok()
        .and_then(|v| {
            v.get("bans")
                .and_then(|b| b.as_array())
                .map(|a| !a.is_empty())
        })
        .unwrap_or(false)
}

fn applied(sock: &Path) -> u64 {
    request(sock, &Request::Status)
        .ok()
        .and_then(|v| v["loop"]["farm"]["applied"].as_u64())
        .unwrap_or(0)
}

fn ban(sock: &Path, subjects: Vec<String>) {
    let r = request(
        sock,
        &Request::Ban {
            subjects,
            for_s: Some(3600),
            reason: Some("farmlatency".into()),
            force: false,
            replace: false,
        },
    );
    assert!(r.is_ok_and(|v| v["ok"] == true), "the ban was refused");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(a), Some(b)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: farmlatency A.sock B.sock [N]");
        std::process::exit(2);
    };
    let (a, b) = (Path::new(a), Path::new(b));
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut took = Vec::with_capacity(n);
    for k in 0..n {
        let subject = format!("198.18.{}.{}", k / 250, 1 + k % 250);
        let t = Instant::now();
        ban(a, vec![subject.clone()]);
        while !has(b, &subject) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{subject} never reached B"
            );
        }
        took.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    let at = |q: f64| took[((took.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "one ban at a time, {n} bans: median {:.1} ms, p99 {:.1} ms, max {:.1} ms (A's ban request included)",
        at(0.5),
        at(0.99),
        at(1.0)
    );

    let before = applied(b);
    let many: Vec<String> = (0..100_000u32)
        .map(|k| format!("10.{}.{}.{}", k / 62_500, k / 250 % 250, 1 + k % 250))
        .collect();
    let distinct: std::collections::BTreeSet<&String> = many.iter().collect();
    let want = distinct.len() as u64;
    let t = Instant::now();
    ban(a, many.clone());
    let on_a = t.elapsed();
    while applied(b) < before + want {
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "B applied {} of {want}",
            applied(b) - before
        );
        // Each status reads the ledger under the enforcer's lock: polled
        // gently, so as not to slow what is measured.
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "{want} bans at once: A recorded them in {:.2} s, B had applied all {:.2} s after the request",
        on_a.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
}
