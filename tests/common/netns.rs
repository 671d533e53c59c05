//! Network namespaces for the end-to-end tests: commands run in them, and
//! HTTP requests made from inside one.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Runs `argv`, quietly: whether it succeeded.
pub fn sh(argv: &[&str]) -> bool {
    Command::new(argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a namespace test can run here: root, and every probe (a
/// command run quietly) succeeds. Otherwise the test is skipped, and says
/// so, unless WEBFENCE_REQUIRE_NETNS is set (scripts/test sets it, having
/// installed `needs`): then it fails.
pub fn ready(probes: &[&[&str]], needs: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let ok = root && probes.iter().all(|p| sh(p));
    if !ok {
        assert!(
            std::env::var_os("WEBFENCE_REQUIRE_NETNS").is_none(),
            "root, {needs} are required here"
        );
        eprintln!("skipped: needs root, {needs}");
    }
    ok
}

/// Runs each space-separated command line, panicking at the first that
/// fails.
pub fn steps(lines: &[String]) {
    for step in lines {
        let argv: Vec<&str> = step.split(' ').collect();
        assert!(sh(&argv), "setup failed: {step}");
    }
}

/// `f` on a thread moved into namespace `ns` (`/run/netns/NS`).
pub fn inside<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Option<T> + Send + 'static,
) -> Option<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(path).ok()?;
        // SAFETY: setns on this thread only, with an open namespace fd.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        f()
    })
    .join()
    .ok()
    .flatten()
}

/// One HTTP/1.0 request for `path` from inside namespace `ns`: the status,
/// or None when the server cannot be reached (a ban drops the SYN).
pub fn http_get(ns: &str, to: SocketAddr, path: &str) -> Option<u16> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: test\r\nUser-Agent: e2e\r\n\r\n");
    inside(ns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_millis(400)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        s.write_all(request.as_bytes()).ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        resp.split(' ').nth(1)?.parse().ok()
    })
}

/// The elements of nftables set `inet webfence SET` in namespace `ns`,
/// with the seconds each has left (0 without a timeout).
pub fn nft_set(ns: &str, set: &str) -> Vec<(String, u64)> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "-j", "list", "set", "inet", "webfence", set,
        ])
        .output();
    let doc: Value = out
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or(Value::Null);
    let mut found = Vec::new();
    for item in doc["nftables"].as_array().cloned().unwrap_or_default() {
        for e in item["set"]["elem"].as_array().cloned().unwrap_or_default() {
            let val = e["elem"]["val"].as_str().unwrap_or("").to_string();
            found.push((val, e["elem"]["expires"].as_u64().unwrap_or(0)));
        }
    }
    found
}

/// A real nginx in namespace `ns`, serving 200 on port 80 (IPv4 and IPv6)
/// and writing its combined access log to `DIR/access.log` (emptied
/// first); its configuration, pid and temporary files live in `dir`.
pub fn start_nginx(ns: &str, dir: &std::path::Path) -> std::process::Child {
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log {d}/access.log combined;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  server {{\n    listen 80;\n    listen [::]:80;\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
            d = dir.display()
        ),
    )
    .expect("write nginx.conf");
    std::fs::write(dir.join("access.log"), "").expect("create access.log");
    Command::new("ip")
        .args(["netns", "exec", ns, "nginx", "-p"])
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts")
}
