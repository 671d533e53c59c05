//! The nftables backend against the real kernel, in throwaway network
//! namespaces joined by a veth pair: a banned client's packets are dropped,
//! an unbanned one's are not, and a ban expires on time without webfence.
//! Needs root, `ip` and `nft`; skipped without them unless
//! WEBFENCE_REQUIRE_NETNS is set (scripts/test sets it and installs them).

use std::time::Duration;

use webfence::detect::addr::{Subject, to_bits};
use webfence::enforce::nft::Nft;
use webfence::enforce::{Backend, BanEntry};

mod common;

use common::netns::{sh, steps};

fn available() -> bool {
    common::netns::ready(
        &[&["nft", "--version"], &["ip", "-V"], &["ping", "-V"]],
        "nft, ip and ping",
    )
}

/// Two namespaces joined by a veth pair; removed on drop.
struct Net {
    server: String,
    client: String,
}

impl Net {
    fn new(tag: &str) -> Net {
        let id = format!("{}{}", tag, std::process::id() % 100_000);
        let net = Net {
            server: format!("wfs{id}"),
            client: format!("wfc{id}"),
        };
        let (s, c) = (net.server.as_str(), net.client.as_str());
        steps(&[
            format!("ip netns add {s}"),
            format!("ip netns add {c}"),
            format!("ip -n {s} link add eth0 type veth peer name eth0 netns {c}"),
            format!("ip -n {s} addr add 10.231.0.1/24 dev eth0"),
            format!("ip -n {c} addr add 10.231.0.2/24 dev eth0"),
            format!("ip -n {s} addr add fd00:231::1/64 dev eth0 nodad"),
            format!("ip -n {c} addr add fd00:231::2/64 dev eth0 nodad"),
            format!("ip -n {s} link set eth0 up"),
            format!("ip -n {c} link set eth0 up"),
            format!("ip -n {s} link set lo up"),
            format!("ip -n {c} link set lo up"),
        ]);
        net
    }

    /// Whether the client reaches the server.
    fn ping(&self, to: &str) -> bool {
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.client,
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            to,
        ])
    }

    fn nft(&self) -> Nft {
        Nft::new(
            ["ip", "netns", "exec", &self.server, "nft"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            "webfence",
        )
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.server]);
        let _ = sh(&["ip", "netns", "del", &self.client]);
    }
}

fn host(s: &str) -> Subject {
    Subject::host(to_bits(s.parse().unwrap()))
}

#[test]
fn bans_drop_packets_and_expire_in_the_kernel() {
    if !available() {
        eprintln!("skipped: needs root, nft, ip and ping");
        return;
    }
    let net = Net::new("a");
    let mut nft = net.nft();
    exercise(&mut nft, &net);
    // After a teardown, set up anew: empty.
    nft.setup().unwrap();
    assert!(nft.list().unwrap().is_empty());

    // A network ban, then a short ban the kernel lifts by itself.
    nft.apply(
        &[BanEntry {
            subject: Subject::from_net("10.231.0.0/24".parse().unwrap()),
            timeout_s: 3600,
        }],
        &[],
    )
    .unwrap();
    assert!(!net.ping("10.231.0.1"));
    nft.apply(&[], &[Subject::from_net("10.231.0.0/24".parse().unwrap())])
        .unwrap();
    nft.apply(
        &[BanEntry {
            subject: host("10.231.0.2"),
            timeout_s: 2,
        }],
        &[],
    )
    .unwrap();
    assert!(!net.ping("10.231.0.1"));
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        net.ping("10.231.0.1"),
        "the kernel did not lift the ban on time"
    );

    // Renewing a ban replaces its timeout.
    nft.apply(
        &[BanEntry {
            subject: host("10.231.0.2"),
            timeout_s: 5,
        }],
        &[],
    )
    .unwrap();
    nft.apply(
        &[BanEntry {
            subject: host("10.231.0.2"),
            timeout_s: 7200,
        }],
        &[],
    )
    .unwrap();
    let bans = nft.list().unwrap();
    assert!(bans[0].expires_s > 7000, "{bans:?}");

    nft.teardown().unwrap();
    nft.teardown().unwrap(); // idempotent
    assert!(net.ping("10.231.0.1"));
}

#[test]
fn many_bans_in_one_transaction() {
    if !available() {
        eprintln!("skipped: needs root, nft, ip and ping");
        return;
    }
    let net = Net::new("b");
    let mut nft = net.nft();
    nft.setup().unwrap();
    let bans: Vec<BanEntry> = (0..10_000u32)
        .map(|i| BanEntry {
            subject: Subject::host(to_bits(std::net::IpAddr::V4(std::net::Ipv4Addr::from(
                0x0a00_0000 + i,
            )))),
            timeout_s: 600,
        })
        .collect();
    nft.apply(&bans, &[]).unwrap();
    assert_eq!(nft.list().unwrap().len(), 10_000);
}

/// Ban, list, unban and tear down through any backend, against the kernel.
fn exercise(backend: &mut dyn Backend, net: &Net) {
    backend.setup().unwrap();
    backend.setup().unwrap(); // idempotent
    assert!(net.ping("10.231.0.1") && net.ping("fd00:231::1"));
    backend
        .apply(
            &[
                BanEntry {
                    subject: host("10.231.0.2"),
                    timeout_s: 3600,
                },
                BanEntry {
                    subject: host("fd00:231::2"),
                    timeout_s: 3600,
                },
            ],
            &[],
        )
        .unwrap();
    assert!(
        !net.ping("10.231.0.1"),
        "{}: IPv4 ban let traffic through",
        backend.name()
    );
    assert!(
        !net.ping("fd00:231::1"),
        "{}: IPv6 ban let traffic through",
        backend.name()
    );
    backend.check().unwrap();
    let listed: Vec<String> = backend
        .list()
        .unwrap()
        .iter()
        .map(|b| b.subject.to_string())
        .collect();
    assert_eq!(
        listed,
        vec!["10.231.0.2", "fd00:231::2"],
        "{}",
        backend.name()
    );
    backend
        .apply(
            &[],
            &[host("10.231.0.2"), host("fd00:231::2"), host("10.231.0.99")],
        )
        .unwrap();
    assert!(
        net.ping("10.231.0.1") && net.ping("fd00:231::1"),
        "{}: unban",
        backend.name()
    );
    backend
        .apply(
            &[BanEntry {
                subject: Subject::from_net("10.231.0.0/28".parse().unwrap()),
                timeout_s: 3600,
            }],
            &[],
        )
        .unwrap();
    assert!(!net.ping("10.231.0.1"), "{}: network ban", backend.name());
    backend.teardown().unwrap();
    assert!(net.ping("10.231.0.1"), "{}: teardown", backend.name());
}

fn prefix(ns: &str) -> Vec<String> {
    ["ip", "netns", "exec", ns]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn ipset_backend_bans_and_expires_in_the_kernel() {
    if !available() {
        eprintln!("skipped: needs root, nft, ip and ping");
        return;
    }
    let has_ipset = sh(&["ipset", "--version"]) && sh(&["iptables", "--version"]);
    if !has_ipset {
        assert!(
            std::env::var_os("WEBFENCE_REQUIRE_NETNS").is_none(),
            "ipset and iptables are required here"
        );
        eprintln!("skipped: needs ipset and iptables");
        return;
    }
    let net = Net::new("i");
    let mut ipset = webfence::enforce::ipset::Ipset::new(prefix(&net.server), "wftest");
    exercise(&mut ipset, &net);
    // Timeouts belong to the kernel.
    ipset.setup().unwrap();
    ipset
        .apply(
            &[BanEntry {
                subject: host("10.231.0.2"),
                timeout_s: 2,
            }],
            &[],
        )
        .unwrap();
    assert!(!net.ping("10.231.0.1"));
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        net.ping("10.231.0.1"),
        "the ipset timeout did not lift the ban"
    );
}

#[test]
fn route_backend_null_routes() {
    if !available() {
        eprintln!("skipped: needs root, nft, ip and ping");
        return;
    }
    let net = Net::new("r");
    let mut route = webfence::enforce::route::Route::new(prefix(&net.server));
    exercise(&mut route, &net);
}

#[test]
fn host_bans_go_over_netlink_renew_and_apply_all_or_nothing() {
    if !available() {
        eprintln!("skipped: needs root, nft, ip and ping");
        return;
    }
    let net = Net::new("n");
    net.nft().setup().unwrap();
    let ns = std::path::PathBuf::from(format!("/run/netns/{}", net.server));
    // No nft at all: only the netlink path can put these bans in place.
    let mut direct = Nft::new(vec!["/nonexistent/nft".into()], "webfence").in_netns(&ns);
    let entry = |s: &str, timeout_s| BanEntry {
        subject: host(s),
        timeout_s,
    };
    direct
        .apply_new(&[entry("10.231.0.2", 5), entry("fd00:231::2", 3600)], &[])
        .unwrap();
    assert!(
        !net.ping("10.231.0.1"),
        "banned IPv4 client still gets through"
    );
    assert!(
        !net.ping("fd00:231::1"),
        "banned IPv6 client still gets through"
    );
    // A renewal replaces the timeout (add, delete, add in one batch).
    direct.apply_new(&[], &[entry("10.231.0.2", 7200)]).unwrap();
    let mut listed = net.nft().list().unwrap();
    listed.sort();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].subject, host("10.231.0.2"));
    assert!(listed[0].expires_s > 7000, "{listed:?}");
    assert!(listed[1].expires_s > 3500, "{listed:?}");

    // 30,000 bans in one batch, both families.
    let many: Vec<BanEntry> = (0..30_000u32)
        .map(|i| BanEntry {
            subject: if i % 3 == 0 {
                Subject::host(to_bits(
                    std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | i as u128).into(),
                ))
            } else {
                Subject::host(to_bits(std::net::Ipv4Addr::from(0x0b00_0000 + i).into()))
            },
            timeout_s: 600,
        })
        .collect();
    direct.apply_new(&many, &[]).unwrap();
    assert_eq!(net.nft().list().unwrap().len(), 30_002);

    // A batch the kernel refuses (deleting what is not there) changes
    // nothing, and the error says why.
    let mut socket = webfence::enforce::netlink::Socket::open_in(&ns).unwrap();
    let mut batch = socket.next_batch();
    use webfence::enforce::netlink::{Element, Op};
    batch.elements(
        Op::Add,
        "webfence",
        "ban4",
        &[Element::new("198.18.0.1".parse().unwrap(), Some(60_000))],
    );
    batch.elements(
        Op::Delete,
        "webfence",
        "ban4",
        &[Element::new("198.18.0.2".parse().unwrap(), None)],
    );
    let err = socket.apply(batch).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    assert_eq!(net.nft().list().unwrap().len(), 30_002);

    // The table gone: the error is reported, and once it is back the
    // socket is made anew and works.
    assert!(sh(&[
        "ip",
        "netns",
        "exec",
        &net.server,
        "nft",
        "delete",
        "table",
        "inet",
        "webfence"
    ]));
    assert!(direct.apply_new(&[entry("10.231.0.3", 60)], &[]).is_err());
    net.nft().setup().unwrap();
    direct.apply_new(&[entry("10.231.0.3", 60)], &[]).unwrap();
    assert_eq!(net.nft().list().unwrap().len(), 1);
}
