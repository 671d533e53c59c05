//! `report --html` and `replay --html`: the file, then the page in a real
//! headless Chromium (scripts/test installs it).

mod common;

use std::path::Path;
use std::time::Duration;

use common::browser::{Browser, artifacts};
use common::{fails_with, line, succeeds, webfence, write};

const EVIL_AGENT: &str = "<script>window.pwned=1</script><img src=x onerror=window.pwned=2>";

/// Three hours: an hour of A (30 requests), an hour of B (60, of which 20
/// are 404s) and an hour of C (10, with a User-Agent holding markup).
fn three_hours(dir: &Path) -> std::path::PathBuf {
    let mut lines = Vec::new();
    for k in 0..30 {
        lines.push(line(
            "192.0.2.10",
            &format!("10/Oct/2024:10:{:02}:00 +0000", k * 2),
            "GET /index.html HTTP/1.1",
            200,
            1200,
            "Mozilla/5.0 A",
        ));
    }
    for k in 0..60 {
        let (path, status) = if k % 3 == 0 {
            ("/wp-login.php", 404)
        } else {
            ("/style.css", 200)
        };
        lines.push(line(
            "198.51.100.20",
            &format!("10/Oct/2024:11:{k:02}:00 +0000"),
            &format!("GET {path} HTTP/1.1"),
            status,
            500,
            "Mozilla/5.0 B",
        ));
    }
    for k in 0..10 {
        lines.push(line(
            "203.0.113.30",
            &format!("10/Oct/2024:12:{:02}:30 +0000", k * 5),
            "GET /about HTTP/1.1",
            200,
            2000,
            EVIL_AGENT,
        ));
    }
    write(dir, "three.log", &(lines.join("\n") + "\n"))
}

fn page_of(args: &[&str], dir: &Path) -> (std::path::PathBuf, String) {
    let out = dir.join("report.html");
    let mut all: Vec<&str> = args.to_vec();
    let o = out.to_str().unwrap().to_string();
    all.extend_from_slice(&["--html", &o]);
    let (stdout, stderr) = succeeds(&all);
    assert!(
        stdout.is_empty(),
        "the text report is not printed with --html: {stdout}"
    );
    assert!(stderr.contains("wrote"), "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    (out, text)
}

#[test]
fn the_file_is_self_contained_and_log_text_cannot_escape_its_script() {
    let dir = tempfile::tempdir().unwrap();
    let log = three_hours(dir.path());
    let (_, html) = page_of(&["report", log.to_str().unwrap(), "--no-rules"], dir.path());
    assert!(html.starts_with("<!doctype html>"));
    // Nothing fetched: no external reference at all, and a policy that
    // forbids any.
    for external in ["src=\"http", "href=\"http://", "@import", "url("] {
        assert!(!html.contains(external), "{external}");
    }
    assert!(html.contains("default-src 'none'"));
    // The agent is in the data, escaped: exactly two script elements.
    assert_eq!(
        html.matches("<script").count(),
        2,
        "a log line opened a script element"
    );
    assert!(html.contains("\\u003cscript>window.pwned=1\\u003c/script>"));
}

#[test]
fn html_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = three_hours(dir.path());
    let missing = dir.path().join("no/such/dir/r.html");
    fails_with(
        &[
            "report",
            log.to_str().unwrap(),
            "--html",
            missing.to_str().unwrap(),
        ],
        &["cannot write the HTML report", "no/such/dir/r.html"],
    );
    // Decisions need the log twice.
    let out = webfence()
        .args(["replay", "--html", "x.html", "-"])
        .write_stdin("")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stdin can be read once"));
    let out = webfence()
        .args(["report", "--html", "x.html", "--rules", "-"])
        .write_stdin("")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("stdin can be read once"));
}

#[test]
fn html_to_stdout_and_beside_json() {
    let dir = tempfile::tempdir().unwrap();
    let log = three_hours(dir.path());
    let (out, _) = succeeds(&["report", log.to_str().unwrap(), "--html", "-", "--quiet"]);
    assert!(out.starts_with("<!doctype html>") && out.trim_end().ends_with("</html>"));
    let page = dir.path().join("p.html");
    let (json, _) = succeeds(&[
        "report",
        log.to_str().unwrap(),
        "--json",
        "--html",
        page.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["summary"]["requests"], 100);
    assert!(page.exists());
}

fn load(b: &mut Browser, file: &Path, hash: &str) {
    // A new fragment alone is no new load: start from a blank page.
    b.navigate("about:blank");
    b.navigate(&format!("file://{}{hash}", file.display()));
    b.wait_for(
        "document.body.dataset.ready === '1'",
        Duration::from_secs(20),
    );
}

fn card(b: &mut Browser, label: &str) -> String {
    b.eval(&format!(
        "[...document.querySelectorAll('#summary .stat')].find(s => s.querySelector('.k').textContent === {label:?}).querySelector('.v').textContent"
    ))
    .as_str()
    .unwrap_or_default()
    .to_string()
}

fn client_rows(b: &mut Browser) -> Vec<String> {
    let v = b.eval("[...document.querySelectorAll('[data-table=clients] tbody tr')].map(r => r.cells[0].textContent)");
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_report_in_a_browser_shows_the_figures_and_filters_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = three_hours(dir.path());
    let (page, _) = page_of(&["report", log.to_str().unwrap(), "--rules"], dir.path());
    let shots = artifacts("report");
    let mut b = Browser::launch(1280, 800);
    load(&mut b, &page, "");
    assert_eq!(card(&mut b, "requests"), "100");
    assert_eq!(card(&mut b, "clients"), "3");
    assert_eq!(card(&mut b, "4xx"), "20 (20.00 %)");
    assert_eq!(
        client_rows(&mut b),
        ["198.51.100.20", "192.0.2.10", "203.0.113.30"]
    );
    // B asks for pages (the 404s) and assets; A for pages only.
    let looks = b.eval("[...document.querySelectorAll('[data-table=clients] tbody tr')].map(r => r.cells[7].textContent)");
    assert_eq!(
        looks,
        serde_json::json!(["loads assets", "pages only", "pages only"])
    );
    // The agent with markup is text on the page, and ran nothing.
    let agents = b.eval("[...document.querySelectorAll('[data-table=user_agents] tbody tr td:first-child')].map(c => c.textContent)");
    assert!(
        agents.as_array().unwrap().iter().any(|a| a == EVIL_AGENT),
        "{agents}"
    );
    assert_eq!(b.eval("typeof window.pwned"), "undefined");
    assert_eq!(b.eval("document.querySelectorAll('img').length"), 0);
    b.screenshot(&shots.join("report-1280.png"));

    // The range by its fields: the second hour only.
    b.eval("(() => { const f = document.getElementById('from'), t = document.getElementById('to'); f.value = '2024-10-10 11:00'; t.value = '2024-10-10 12:00'; t.dispatchEvent(new Event('change')); })()");
    assert_eq!(card(&mut b, "requests"), "60");
    assert_eq!(card(&mut b, "4xx"), "20 (33.33 %)");
    assert_eq!(client_rows(&mut b), ["198.51.100.20"]);
    assert!(
        b.eval("location.hash")
            .as_str()
            .unwrap()
            .starts_with("#from=")
    );
    b.screenshot(&shots.join("report-range.png"));

    // The same range from the URL, as a shared link opens it.
    load(
        &mut b,
        &page,
        &format!("#from={}&to={}", 1728558000000u64, 1728561600000u64),
    );
    assert_eq!(card(&mut b, "requests"), "60");
    // Back to the whole log, then a drag across the chart's first third
    // (the first hour) with the mouse.
    b.eval("document.getElementById('reset').click()");
    assert_eq!(card(&mut b, "requests"), "100");
    let bx = b.eval("(() => { const r = document.querySelector('#timeline-chart svg').getBoundingClientRect(); window.scrollTo(0, r.top + scrollY - 100); const q = document.querySelector('#timeline-chart svg').getBoundingClientRect(); return [q.left, q.top, q.width, q.height]; })()");
    let v: Vec<f64> = bx
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    // The plot starts 56 px in (of the drawn width); drag from there over
    // a quarter of the plot, which holds the first hour's bars.
    let left = v[0]
        + 60.0 * v[2]
            / b.eval("document.querySelector('#timeline-chart svg').viewBox.baseVal.width")
                .as_f64()
                .unwrap();
    let y = v[1] + v[3] / 2.0;
    b.drag((left, y), (left + (v[2] - 60.0) * 0.25, y));
    let requests: u64 = card(&mut b, "requests").replace(',', "").parse().unwrap();
    assert!(requests > 0 && requests < 100, "{requests}");
    assert!(
        !b.eval("document.getElementById('from').value")
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert_eq!(client_rows(&mut b), ["192.0.2.10"]);

    // Sorting by a column, and a table's own filter.
    b.eval("document.getElementById('reset').click()");
    b.eval("[...document.querySelectorAll('[data-table=clients] th')].find(h => h.textContent === 'bytes').click()");
    assert_eq!(client_rows(&mut b)[0], "192.0.2.10");
    b.eval("(() => { const i = document.querySelector('[data-table=clients] input'); i.value = '203.0'; i.dispatchEvent(new Event('input')); })()");
    assert_eq!(client_rows(&mut b), ["203.0.113.30"]);

    assert_eq!(b.errors(), Vec::<String>::new(), "console errors");
    let requests = b.requests();
    assert!(
        requests.iter().all(|u| u.starts_with("file://")),
        "the page made requests: {requests:?}"
    );
}

#[test]
fn the_report_reads_on_a_phone_and_in_the_dark() {
    let dir = tempfile::tempdir().unwrap();
    let log = three_hours(dir.path());
    let (page, _) = page_of(&["report", log.to_str().unwrap(), "--no-rules"], dir.path());
    let shots = artifacts("report");
    let mut b = Browser::launch(390, 844);
    b.call(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true}),
    );
    b.call(
        "Emulation.setEmulatedMedia",
        serde_json::json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
    );
    load(&mut b, &page, "");
    assert_eq!(card(&mut b, "requests"), "100");
    // Nothing wider than the screen but the tables' own scrolling boxes.
    let width = b
        .eval("document.documentElement.scrollWidth")
        .as_f64()
        .unwrap();
    assert!(
        width <= 391.0,
        "the page is {width} px wide on a 390 px screen"
    );
    let bg = b.eval("getComputedStyle(document.body).backgroundColor");
    assert_eq!(bg, "rgb(21, 23, 26)", "dark scheme");
    b.screenshot(&shots.join("report-phone-dark.png"));
    // Printed: no controls, tables whole.
    b.call(
        "Emulation.setEmulatedMedia",
        serde_json::json!({"media": "print"}),
    );
    assert_eq!(
        b.eval("getComputedStyle(document.querySelector('.controls')).display"),
        "none"
    );
    assert_eq!(
        b.eval("getComputedStyle(document.querySelector('.tablewrap')).overflowY"),
        "visible"
    );
    assert_eq!(b.errors(), Vec::<String>::new());
}

#[test]
fn a_replay_page_lists_decisions_with_their_evidence() {
    let dir = tempfile::tempdir().unwrap();
    // A flood: one client, 400 requests in 40 s.
    let lines: Vec<String> = (0..400)
        .map(|k| {
            line(
                "192.0.2.99",
                &format!("10/Oct/2024:10:00:{:02} +0000", k / 10),
                "GET /search?q=x HTTP/1.1",
                200,
                100,
                "curl/8.0",
            )
        })
        .collect();
    let log = write(dir.path(), "flood.log", &(lines.join("\n") + "\n"));
    let page = dir.path().join("replay.html");
    let (stdout, _) = succeeds(&[
        "replay",
        log.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    assert!(
        stdout.contains("192.0.2.99"),
        "the replay still prints its table: {stdout}"
    );
    let mut b = Browser::launch(1280, 800);
    load(&mut b, &page, "");
    let rows = b.eval("[...document.querySelectorAll('[data-table=decisions] tbody tr')].map(r => [...r.cells].map(c => c.textContent))");
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty(), "no decisions shown");
    let first = rows[0].as_array().unwrap();
    assert_eq!(first[2], "192.0.2.99");
    assert!(first[3].as_str().unwrap().starts_with("ban"), "{first:?}");
    assert!(
        first[5].as_str().unwrap().contains("threshold"),
        "evidence: {first:?}"
    );
    // The client's row names its decisions.
    let tags =
        b.eval("document.querySelector('[data-table=clients] tbody tr').cells[12].textContent");
    assert!(tags.as_str().unwrap().contains("ban"), "{tags}");
    b.screenshot(&artifacts("report").join("replay.png"));
    assert_eq!(b.errors(), Vec::<String>::new());
}

#[test]
fn a_page_with_no_request_left_still_draws() {
    let dir = tempfile::tempdir().unwrap();
    let log = three_hours(dir.path());
    let (page, _) = page_of(
        &[
            "report",
            log.to_str().unwrap(),
            "--no-rules",
            "--since",
            "2030-01-01",
        ],
        dir.path(),
    );
    let mut b = Browser::launch(1280, 800);
    load(&mut b, &page, "");
    assert_eq!(card(&mut b, "requests"), "0");
    assert_eq!(
        b.eval("document.getElementById('timeline-chart').textContent"),
        "no requests"
    );
    assert_eq!(b.errors(), Vec::<String>::new());
}
