//! `webfence sniff` with real traffic between network namespaces: two real
//! BitTorrent peers (python3-libtorrent) over TCP, then over uTP, with the
//! DHT on, beside ordinary traffic (HTTP, DNS, SSH-like TCP, QUIC-like
//! UDP) that must not be taken for BitTorrent. Needs root, ip and Debian's
//! python3-libtorrent; skipped without them unless WEBFENCE_REQUIRE_NETNS
//! is set (scripts/test sets it and installs them).

mod common;

use common::Proc;
use common::netns::sh;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_webfence");

fn available() -> bool {
    common::netns::ready(
        &[
            &["ip", "-V"],
            &["/usr/bin/python3", "-c", "import libtorrent"],
        ],
        "ip and python3-libtorrent",
    )
}

/// A gateway namespace routing between three others, each on its own veth
/// pair: N is 10.233.N.2, the gateway's side (device `cN`) 10.233.N.1.
/// 1 and 2 are the LAN; 3 is "the internet".
struct Star {
    gw: String,
    hosts: [String; 3],
}

impl Star {
    fn new(tag: &str) -> Star {
        let id = format!("{tag}{}", std::process::id() % 100_000);
        let star = Star {
            gw: format!("wsg{id}"),
            hosts: [1, 2, 3].map(|n| format!("wsh{n}{id}")),
        };
        let g = star.gw.as_str();
        assert!(sh(&["ip", "netns", "add", g]));
        assert!(sh(&["ip", "-n", g, "link", "set", "lo", "up"]));
        assert!(sh(&[
            "ip",
            "netns",
            "exec",
            g,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1"
        ]));
        for (i, h) in star.hosts.iter().enumerate() {
            let n = i + 1;
            for step in [
                format!("ip netns add {h}"),
                format!("ip -n {g} link add c{n} type veth peer name eth0 netns {h}"),
                format!("ip -n {g} addr add 10.233.{n}.1/24 dev c{n}"),
                format!("ip -n {h} addr add 10.233.{n}.2/24 dev eth0"),
                format!("ip -n {g} link set c{n} up"),
                format!("ip -n {h} link set eth0 up"),
                format!("ip -n {h} link set lo up"),
                format!("ip -n {h} route add default via 10.233.{n}.1"),
            ] {
                let argv: Vec<&str> = step.split(' ').collect();
                assert!(sh(&argv), "setup failed: {step}");
            }
        }
        star
    }

    fn run(&self, ns: &str, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).args(argv);
        cmd
    }
}

impl Drop for Star {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = sh(&["ip", "netns", "del", h]);
        }
        let _ = sh(&["ip", "netns", "del", &self.gw]);
    }
}

/// Kills a process when the test ends early.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: signalling our own child; a no-op once it has exited.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// Starts a helper script and waits for it to print `ready`.
fn start(mut cmd: Command) -> (Proc, BufReader<std::process::ChildStdout>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the helper did not start");
    (Proc(child), out)
}

/// Reads lines until one equals `want` (or the output ends).
fn wait_line(out: &mut BufReader<std::process::ChildStdout>, want: &str) -> bool {
    let mut line = String::new();
    while out.read_line(&mut line).unwrap_or(0) > 0 {
        if line.trim() == want {
            return true;
        }
        line.clear();
    }
    false
}

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/packets")
        .join(name)
        .display()
        .to_string()
}

/// One transfer between a seeder in host 3 and a leecher in host 1.
fn transfer(star: &Star, dir: &Path, mode: &str, port: u16) {
    let folder = dir.join(mode);
    std::fs::create_dir_all(&folder).unwrap();
    let f = folder.to_str().unwrap();
    let port = port.to_string();
    let (_seed, _) = start(star.run(
        &star.hosts[2],
        &[
            "/usr/bin/python3",
            &script("peer.py"),
            "seed",
            f,
            "10.233.3.2",
            &port,
            mode,
            "20",
        ],
    ));
    let (_leech, mut out) = start(star.run(
        &star.hosts[0],
        &[
            "/usr/bin/python3",
            &script("peer.py"),
            "leech",
            f,
            "10.233.1.2",
            "7001",
            mode,
            "8",
            "10.233.3.2",
            &port,
        ],
    ));
    assert!(
        wait_line(&mut out, "complete"),
        "the {mode} download did not complete"
    );
}

#[test]
fn torrenting_address_tops_the_list_and_ordinary_traffic_is_not_bittorrent() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let star = Star::new("s");
    let (_server, _) = start(star.run(
        &star.hosts[2],
        &[
            "/usr/bin/python3",
            &script("traffic.py"),
            "serve",
            "10.233.3.2",
        ],
    ));
    // The capture on the gateway's "internet" side.
    let sniff = star
        .run(
            &star.gw,
            &[
                BIN,
                "sniff",
                "-i",
                "c3",
                "--for",
                "60s",
                "--local",
                "10.233.1.0/24,10.233.2.0/24",
                "--json",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sniff = sniff;
    let _guard = KillOnDrop(sniff.id() as i32);
    let mut err = BufReader::new(sniff.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("capturing on c3"), "{line}");

    let started = Instant::now();
    let mut talk = star
        .run(
            &star.hosts[1],
            &[
                "/usr/bin/python3",
                &script("traffic.py"),
                "talk",
                "10.233.3.2",
                "30",
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    transfer(&star, dir.path(), "tcp", 6881);
    transfer(&star, dir.path(), "utp", 6882);
    assert!(
        talk.wait().unwrap().success(),
        "the ordinary traffic failed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "too slow for the capture"
    );
    // Ctrl-C ends the capture early, and it still prints what it saw.
    // SAFETY: signalling our own child (`ip netns exec` execs webfence).
    unsafe { libc::kill(sniff.id() as i32, libc::SIGINT) };
    let out = sniff.wait_with_output().unwrap();
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = doc["addresses"].as_array().unwrap();
    let row = |ip: &str| {
        rows.iter()
            .find(|r| r["address"] == ip)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let torrenter = row("10.233.1.2");
    let ordinary = row("10.233.2.2");
    assert_eq!(rows[0]["address"], "10.233.1.2", "{doc:#}");
    for class in ["bittorrent", "utp", "dht"] {
        assert!(
            torrenter[class]["packets"].as_u64().unwrap_or(0) > 0,
            "no {class} packets: {torrenter:#}"
        );
    }
    assert!(
        torrenter["bittorrent"]["packets"].as_u64().unwrap() > 100,
        "{torrenter:#}"
    );
    assert!(
        torrenter["utp"]["packets"].as_u64().unwrap() > 100,
        "{torrenter:#}"
    );
    assert_eq!(torrenter["p2p_peers"], 1, "one remote peer: {torrenter:#}");
    assert_eq!(
        ordinary["p2p_packets"], 0,
        "ordinary traffic taken for BitTorrent: {ordinary:#}"
    );
    assert!(
        ordinary["all_packets"].as_u64().unwrap_or(0) > 200,
        "{ordinary:#}"
    );
    // SSH (2222 here is not skipped) and DNS were seen, not skipped.
    assert_eq!(
        doc["skipped_ports"]["tcp"],
        serde_json::json!([22, 80, 443])
    );
}

/// The daemon's packet source on the gateway: a packet rule null-routes
/// the torrenting address through the `route` backend; the ordinary one
/// keeps its route; `status` shows both.
#[test]
fn a_packet_rule_null_routes_the_torrenting_address() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let star = Star::new("r");
    let (_server, _) = start(star.run(
        &star.hosts[2],
        &[
            "/usr/bin/python3",
            &script("traffic.py"),
            "serve",
            "10.233.3.2",
        ],
    ));
    std::fs::write(d.join("access.log"), "").unwrap();
    let cfg = common::write(
        d,
        "w.toml",
        &format!(
            "default_rules = false\n[daemon]\nlogs = [\"{d}/access.log\"]\nformat = \"combined\"\nstate_dir = \"{d}/state\"\nsocket = \"{d}/ctl.sock\"\nbackend = \"route\"\n\
             [packets]\nenabled = true\ninterface = \"c3\"\nlocal = [\"10.233.1.0/24\", \"10.233.2.0/24\"]\nsample = \"2s\"\nevery = \"2s\"\n\
             report_to = [\"lan\"]\nreport_over = 50\n\
             [rules.lan-torrent]\nkind = \"packets\"\nclasses = [\"bittorrent\", \"utp\", \"dht\"]\nlimit = 100\nduration = \"1h\"\n\
             [notify.lan]\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"cat >> {d}/notified.json\"]\ngroup_wait = \"1s\"\n",
            d = d.display()
        ),
    );
    // This daemon reads packets one system call each (the fallback where
    // a ring cannot be set up); the sniff test above uses the ring.
    let daemon = star
        .run(&star.gw, &[BIN, "run", "-c", cfg.to_str().unwrap()])
        .env("WEBFENCE_CAPTURE", "recvfrom")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let _daemon = Proc(daemon);
    let status = || -> Value {
        let out = Command::new(BIN)
            .args(["status", "--json", "--socket"])
            .arg(d.join("ctl.sock"))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while status()["loop"]["packets"]["samples"].as_u64().unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "no sample: {}",
            std::fs::read_to_string(d.join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut talk = star
        .run(
            &star.hosts[1],
            &[
                "/usr/bin/python3",
                &script("traffic.py"),
                "talk",
                "10.233.3.2",
                "30",
            ],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    transfer(&star, d, "tcp", 6881);
    assert!(talk.wait().unwrap().success());
    let blackholes = || {
        let out = Command::new("ip")
            .args(["-n", &star.gw, "route", "show", "type", "blackhole"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !blackholes().contains("10.233.1.2") {
        assert!(
            Instant::now() < deadline,
            "no null route: {}\n{}",
            blackholes(),
            std::fs::read_to_string(d.join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !blackholes().contains("10.233.2.2"),
        "the ordinary address was null-routed"
    );
    let s = status();
    assert_eq!(s["bans"]["active_by_rule"]["lan-torrent"], 1, "{s:#}");
    assert!(s["all_problems"].as_array().unwrap().is_empty(), "{s:#}");
    let log = std::fs::read_to_string(d.join("daemon.log")).unwrap_or_default();
    assert!(log.contains("lan-torrent"), "{log}");
    // The "LAN abusers" list reached its channel, naming the address.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let sent = std::fs::read_to_string(d.join("notified.json")).unwrap_or_default();
        if sent.contains("LAN abusers on c3") && sent.contains("10.233.1.2: ") {
            assert!(!sent.contains("10.233.2.2: "), "{sent}");
            break;
        }
        assert!(Instant::now() < deadline, "no LAN abusers message: {sent}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The text status names the source and the torrenting address.
    let out = Command::new(BIN)
        .args(["status", "--socket"])
        .arg(d.join("ctl.sock"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("packets   c3: last sample"), "{text}");
    assert!(text.contains("10.233.1.2"), "{text}");
}

/// A capture that cannot start (the interface does not exist) is loud:
/// in `status`, where the daemon is NOT PROTECTING, and in the log.
#[test]
fn a_failing_capture_is_a_problem_in_status() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !root {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("access.log"), "").unwrap();
    let cfg = common::write(
        d,
        "w.toml",
        &format!(
            "[daemon]\nlogs = [\"{d}/access.log\"]\nformat = \"combined\"\nstate_dir = \"{d}/state\"\nsocket = \"{d}/ctl.sock\"\nbackend = \"none\"\n\
             [packets]\nenabled = true\ninterface = \"nosuchif9\"\nsample = \"1s\"\nevery = \"1s\"\n",
            d = d.display()
        ),
    );
    let daemon = Command::new(BIN)
        .args(["run", "-c", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let _daemon = Proc(daemon);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new(BIN)
            .args(["status", "--socket"])
            .arg(d.join("ctl.sock"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("CAPTURE FAILED") {
            assert_eq!(out.status.code(), Some(3), "{text}");
            assert!(text.contains("no such interface: nosuchif9"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no capture problem shown: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(d.join("daemon.log")).unwrap_or_default();
    assert!(log.contains("packet capture failed"), "{log}");
}
