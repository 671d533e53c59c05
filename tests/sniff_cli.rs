//! `webfence sniff -r`: saved captures (pcap and pcapng) built here from
//! crafted packets, and every error the command can give.

mod common;

use std::borrow::Cow;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use common::{fails_with, succeeds, webfence, write};
use pcap_file::pcap::{PcapPacket, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
use serde_json::Value;
use webfence::net::build;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A LAN's few seconds: .10 greets a BitTorrent peer and talks DHT; .11
/// asks DNS, browses the web (port 80, skipped) and sends a QUIC-like
/// datagram; a packet between two remote hosts belongs to nobody.
fn frames() -> Vec<Vec<u8>> {
    let mut hs = b"\x13BitTorrent protocol".to_vec();
    hs.extend_from_slice(&[0; 48]);
    let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
    let mut dns = vec![0x41, 0x00, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    dns.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    let v = [
        build::ip(
            ip("192.168.1.10"),
            ip("203.0.113.9"),
            true,
            40000,
            6881,
            &hs,
        ),
        build::ip(
            ip("203.0.113.9"),
            ip("192.168.1.10"),
            true,
            6881,
            40000,
            &hs,
        ),
        build::ip(
            ip("192.168.1.10"),
            ip("203.0.113.9"),
            true,
            40000,
            6881,
            &[0, 0, 0, 1, 2],
        ),
        build::ip(
            ip("192.168.1.10"),
            ip("198.51.100.4"),
            false,
            6881,
            6881,
            ping,
        ),
        build::ip(ip("192.168.1.11"), ip("192.0.2.53"), false, 40001, 53, &dns),
        build::ip(
            ip("192.168.1.11"),
            ip("192.0.2.80"),
            true,
            40002,
            80,
            b"GET /announce?info_hash=x HTTP/1.1\r\n",
        ),
        build::ip(
            ip("192.168.1.11"),
            ip("192.0.2.81"),
            false,
            50000,
            4433,
            &[0x41; 40],
        ),
        build::ip(ip("198.51.100.1"), ip("198.51.100.2"), false, 1, 2, b"x"),
    ];
    v.iter().map(|p| build::ethernet(p)).collect()
}

fn pcap(path: &Path) {
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    for (k, f) in frames().iter().enumerate() {
        w.write_packet(&PcapPacket::new(
            Duration::from_millis(1_700_000_000_000 + k as u64 * 100),
            f.len() as u32,
            f,
        ))
        .unwrap();
    }
}

fn pcapng(path: &Path) {
    let mut w = PcapNgWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: pcap_file::DataLink::ETHERNET,
        snaplen: 65535,
        options: vec![],
    })
    .unwrap();
    for (k, f) in frames().iter().enumerate() {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_millis(1_700_000_000_000 + k as u64 * 100),
            original_len: f.len() as u32,
            data: Cow::Borrowed(f),
            options: vec![],
        })
        .unwrap();
    }
}

fn rows(doc: &Value) -> Vec<(String, u64, u64, u64)> {
    doc["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap().to_string(),
                r["bittorrent"]["packets"].as_u64().unwrap(),
                r["dht"]["packets"].as_u64().unwrap(),
                r["all_packets"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn saved_captures_rank_the_torrenting_address_first() {
    let dir = tempfile::tempdir().unwrap();
    for (name, make) in [("c.pcap", pcap as fn(&Path)), ("c.pcapng", pcapng)] {
        let path = dir.path().join(name);
        make(&path);
        let (out, _) = succeeds(&["sniff", "-r", path.to_str().unwrap(), "--json"]);
        let doc: Value = serde_json::from_str(&out).unwrap();
        // Port 80 skipped as a live capture would; the rest counted.
        assert_eq!(
            rows(&doc),
            vec![
                ("192.168.1.10".into(), 3, 1, 4),
                ("192.168.1.11".into(), 0, 0, 2)
            ],
            "{name}: {doc:#}"
        );
        assert_eq!(doc["addresses"][0]["p2p_peers"], 2);
        assert_eq!(doc["seconds"], 0.7);
        // Every port: the HTTP announce on port 80 is a tracker.
        let (out, _) = succeeds(&[
            "sniff",
            "-r",
            path.to_str().unwrap(),
            "--json",
            "--all-ports",
            "--local",
            "192.168.1.11",
        ]);
        let doc: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(doc["addresses"][0]["tracker"]["packets"], 1, "{doc:#}");
        assert_eq!(doc["addresses"].as_array().unwrap().len(), 1);
    }
    // The table.
    let path = dir.path().join("c.pcap");
    let (out, _) = succeeds(&["sniff", "-r", path.to_str().unwrap()]);
    assert!(out.contains("local address"), "{out}");
    let first = out.lines().find(|l| l.starts_with("192.168.1.")).unwrap();
    assert!(first.starts_with("192.168.1.10 "), "{out}");
}

#[test]
fn sniff_errors_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = write(d, "notes.txt", "hello, this is not a capture\n");
    fails_with(
        &["sniff", "-r", text.to_str().unwrap()],
        &["notes.txt is not a pcap or pcapng capture", "68 65 6c 6c"],
    );
    fails_with(
        &["sniff", "-r", "/nonexistent/x.pcap"],
        &["cannot open /nonexistent/x.pcap"],
    );
    // A capture cut in the middle of its third packet: named, and the
    // two before it counted.
    let whole = d.join("whole.pcap");
    pcap(&whole);
    let bytes = std::fs::read(&whole).unwrap();
    let first_two: usize = 24 + frames()[..2].iter().map(|f| 16 + f.len()).sum::<usize>();
    let cut = write(d, "cut.pcap", "");
    std::fs::write(&cut, &bytes[..first_two + 20]).unwrap();
    fails_with(
        &["sniff", "-r", cut.to_str().unwrap()],
        &["cut.pcap: packet 3", "the 2 packets before it are counted"],
    );
    fails_with(
        &[
            "sniff",
            "-r",
            whole.to_str().unwrap(),
            "--local",
            "192.168.1/24",
        ],
        &["invalid --local '192.168.1/24'"],
    );
    fails_with(
        &["sniff", "-i", "nosuchif0", "--for", "1s"],
        &["no such interface: nosuchif0"],
    );
}

#[test]
fn capturing_without_cap_net_raw_says_what_it_needs() {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !root {
        eprintln!("skipped: needs root to drop to an unprivileged user");
        return;
    }
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_webfence"))
        .args(["sniff", "-i", "lo", "--for", "1s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("capturing packets needs CAP_NET_RAW"), "{err}");
}

#[test]
fn packet_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "p.toml",
        "[daemon]\nlogs = [\"/tmp/x.log\"]\n[packets]\nenabled = true\nsample = \"10m\"\nevery = \"5m\"\nlocal = [\"10.0.0/8\"]\nreport_to = [\"nowhere\"]\n\
         [rules.a]\nkind = \"packets\"\nclasses = [\"bittorent\"]\nlimit = 5\n[rules.b]\nkind = \"packets\"\naction = \"ban\"\n\
         [rules.c]\nkind = \"packets\"\nlimit = 5\nwindow = \"10s\"\n[rules.d]\nkind = \"rate\"\nlimit = 5\nwindow = \"10s\"\nclasses = [\"dht\"]\n",
    );
    fails_with(
        &["check", "-c", cfg.to_str().unwrap()],
        &[
            "p.toml",
            "unknown packet class 'bittorent'",
            "rule 'b' (packets) needs a limit",
            "'window' does not apply to packet rules",
            "'classes' applies to packet rules, not to rate rules",
        ],
    );
    // Regression: a bad duration said "invalid duration 'x'" twice.
    let bad = write(
        dir.path(),
        "d.toml",
        "[daemon]\nlogs = [\"/tmp/x.log\"]\n[packets]\nenabled = true\nsample = \"x\"\n",
    );
    let out = webfence()
        .args(["check", "-c", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "d.toml:5:10: sample: invalid duration 'x': 'x' does not start with a number;"
        ),
        "{err}"
    );
    assert_eq!(err.matches("invalid duration").count(), 1, "{err}");
    // The source's own settings (checked once the rules are right).
    let src = write(
        dir.path(),
        "s.toml",
        "[daemon]\nlogs = [\"/tmp/x.log\"]\n[packets]\nenabled = true\nsample = \"10m\"\nevery = \"5m\"\nlocal = [\"10.0.0/8\"]\nreport_to = [\"nowhere\"]\n",
    );
    fails_with(
        &["check", "-c", src.to_str().unwrap()],
        &[
            "s.toml",
            "every (300 s) is shorter than sample (600 s)",
            "invalid local network '10.0.0/8'",
            "no [notify.nowhere] channel",
        ],
    );
    let typo = write(
        dir.path(),
        "t.toml",
        "[packets]\nenabled = true\nsampel = \"5s\"\n",
    );
    fails_with(
        &["check", "-c", typo.to_str().unwrap()],
        &[
            "t.toml:3:1",
            "unknown key 'sampel' (did you mean 'sample'?)",
        ],
    );
    // A packet rule is listed with the others.
    let ok = write(
        dir.path(),
        "ok.toml",
        "[rules.lan-torrent]\nkind = \"packets\"\nlimit = 500\nduration = \"1h\"\n",
    );
    let (out, _) = succeeds(&["rules", "-c", ok.to_str().unwrap(), "--wide"]);
    assert!(
        out.contains("lan-torrent")
            && out.contains("> 500 packets (bittorrent, utp, dht, tracker) per local address"),
        "{out}"
    );
}
