//! A web farm end to end with real parts: three web nodes, each in its own
//! network namespace with its own nginx and its own daemon banning through
//! nftables, share a real `redis-server` over a LAN (a bridge in a fourth
//! namespace, where Redis runs); clients in two more namespaces reach the
//! nodes as they would behind a load balancer. What is checked is the
//! kernel: a client's packets dropped, or not, on each node. Needs root,
//! ip, nft, nginx and redis-server; skipped without them unless
//! WEBFENCE_REQUIRE_NETNS is set (scripts/test sets it).

mod common;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::netns::{http_get, nft_set, sh, steps};
use common::{Proc, ctl_ok, status_json, until};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_webfence");
const PASSWORD: &str = "farm-e2e";
const REDIS_PORT: u16 = 6379;
const REDIS_IP: &str = "10.233.0.200";
const NODES: usize = 3;

fn available() -> bool {
    common::netns::ready(
        &[
            &["nft", "--version"],
            &["ip", "-V"],
            &["nginx", "-v"],
            &["redis-server", "--version"],
        ],
        "ip, nft, nginx and redis-server",
    )
}

/// The LAN: namespace `lan` holds the bridge and Redis (10.233.0.200);
/// node N is 10.233.0.N, client J is 10.233.0.(100+J).
struct Lan {
    lan: String,
    nodes: Vec<String>,
    clients: Vec<String>,
}

impl Lan {
    fn new() -> Lan {
        let id = std::process::id() % 100_000;
        let lan = Lan {
            lan: format!("wfl{id}"),
            nodes: (1..=NODES).map(|n| format!("wfn{n}-{id}")).collect(),
            clients: (1..=2).map(|j| format!("wfc{j}-{id}")).collect(),
        };
        let l = &lan.lan;
        steps(&[
            format!("ip netns add {l}"),
            format!("ip -n {l} link set lo up"),
            format!("ip -n {l} link add br0 type bridge"),
            format!("ip -n {l} addr add {REDIS_IP}/24 dev br0"),
            format!("ip -n {l} link set br0 up"),
        ]);
        let members = lan
            .nodes
            .iter()
            .enumerate()
            .map(|(i, ns)| (ns, format!("n{}", i + 1), i + 1))
            .chain(
                lan.clients
                    .iter()
                    .enumerate()
                    .map(|(j, ns)| (ns, format!("c{}", j + 1), 101 + j)),
            );
        for (ns, port, host) in members {
            steps(&[
                format!("ip netns add {ns}"),
                format!("ip -n {l} link add {port} type veth peer name eth0 netns {ns}"),
                format!("ip -n {l} link set {port} master br0"),
                format!("ip -n {l} link set {port} up"),
                format!("ip -n {ns} addr add 10.233.0.{host}/24 dev eth0"),
                format!("ip -n {ns} link set eth0 up"),
                format!("ip -n {ns} link set lo up"),
            ]);
        }
        lan
    }

    fn node_addr(n: usize) -> SocketAddr {
        format!("10.233.0.{}:80", n + 1).parse().unwrap()
    }

    fn exec(ns: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]);
        cmd
    }

    /// The addresses in node `n`'s nftables ban set, with the seconds left.
    fn banned_on(&self, n: usize) -> Vec<(String, u64)> {
        nft_set(&self.nodes[n], "ban4")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain(&self.clients) {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        let _ = sh(&["ip", "netns", "del", &self.lan]);
    }
}

fn redis(lan: &Lan) -> Proc {
    let child = Lan::exec(&lan.lan)
        .args([
            "redis-server",
            "--port",
            &REDIS_PORT.to_string(),
            "--bind",
            REDIS_IP,
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let redis_at: SocketAddr = format!("{REDIS_IP}:{REDIS_PORT}").parse().unwrap();
    until("redis-server", Duration::from_secs(10), || {
        common::netns::inside(&lan.lan, move || {
            std::net::TcpStream::connect_timeout(&redis_at, Duration::from_millis(200)).ok()
        })
        .is_some()
    });
    Proc(child)
}

fn nginx(ns: &str, dir: &Path) -> Proc {
    Proc(common::netns::start_nginx(ns, dir))
}

/// The node's configuration: a local rule on /hammer, a farm rule on
/// /spread that no node reaches alone (12 requests each of 3 nodes; the
/// limit is 30).
fn config(dir: &Path, node: &str) -> PathBuf {
    let path = dir.join("webfence.toml");
    std::fs::write(
        &path,
        format!(
            "default_rules = false\n\
             [daemon]\nlogs = [\"{d}/access.log\"]\nstate_dir = \"{d}/state\"\nsocket = \"{d}/state/ctl.sock\"\nretry = \"1s\"\ncheck_every = \"1s\"\n\
             [farm]\nredis = \"redis://:{PASSWORD}@{REDIS_IP}:{REDIS_PORT}/0\"\nname = \"e2e\"\nnode = \"{node}\"\n\
             [rules.hammer]\nkind = \"rate\"\nlimit = 10\nwindow = \"2s\"\nmatch.path.prefix = [\"/hammer\"]\naction = \"ban\"\nduration = \"1h\"\n\
             [rules.spread]\nkind = \"rate\"\nscope = \"farm\"\nlimit = 30\nwindow = \"20s\"\nmatch.path.prefix = [\"/spread\"]\naction = \"ban\"\nduration = \"1h\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    path
}

struct Node {
    dir: PathBuf,
    ns: String,
    _nginx: Proc,
    daemon: Option<Proc>,
    starts: usize,
}

impl Node {
    fn start(lan: &Lan, root: &Path, n: usize) -> Node {
        let dir = root.join(format!("web{}", n + 1));
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let ns = lan.nodes[n].clone();
        let nginx = nginx(&ns, &dir);
        let mut node = Node {
            dir,
            ns,
            _nginx: nginx,
            daemon: None,
            starts: 0,
        };
        node.run();
        node
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("state/ctl.sock")
    }

    fn run(&mut self) {
        self.starts += 1;
        let cfg = config(&self.dir, &self.dir.file_name().unwrap().to_string_lossy());
        let log = File::create(self.dir.join(format!("daemon{}.log", self.starts))).unwrap();
        let child = Lan::exec(&self.ns)
            .args([BIN, "run", "-c", &cfg.display().to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(Proc(child));
        let socket = self.socket();
        until("the daemon's socket", Duration::from_secs(10), || {
            status_json(&socket)["ok"] == true
        });
    }

    /// SIGKILL: no chance to say goodbye.
    fn crash(&mut self) {
        if let Some(mut p) = self.daemon.take() {
            let _ = p.0.kill();
            let _ = p.0.wait();
        }
    }

    fn logs(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.join(format!("daemon{i}.log"))).unwrap_or_default()
            })
            .collect()
    }
}

/// The ledger's rows for `ip` (`bans --json`, with `--history` for ended
/// ones too).
fn rows(socket: &Path, ip: &str, history: bool) -> Vec<Value> {
    let mut args = vec!["bans", "--json"];
    if history {
        args.push("--history");
    }
    let out = Command::new(BIN)
        .args(&args)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|b| b["ip"] == ip)
        .collect()
}

#[test]
fn a_farm_of_three_shares_bans_and_counts_in_the_kernel() {
    if !available() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let lan = Lan::new();
    let mut server = redis(&lan);
    let mut nodes: Vec<Node> = (0..NODES)
        .map(|n| Node::start(&lan, root.path(), n))
        .collect();
    let [hammerer, spreader] = [&lan.clients[0], &lan.clients[1]];
    for n in 0..NODES {
        until("nginx", Duration::from_secs(10), || {
            http_get(spreader, Lan::node_addr(n), "/") == Some(200)
        });
    }
    until(
        "every node sees the others",
        Duration::from_secs(10),
        || {
            nodes.iter().all(|node| {
                status_json(&node.socket())["loop"]["farm"]["nodes"]
                    .as_array()
                    .is_some_and(|a| a.len() == NODES)
            })
        },
    );

    // 1. A ban decided on node 1 drops the client's packets on 2 and 3.
    let mut served = 0;
    while http_get(hammerer, Lan::node_addr(0), "/hammer") == Some(200) {
        served += 1;
        assert!(served < 2000, "the hammering client was never banned");
    }
    let took = until("the ban on nodes 2 and 3", Duration::from_secs(5), || {
        (1..NODES).all(|n| lan.banned_on(n).iter().any(|(ip, _)| ip == "10.233.0.101"))
    });
    for (n, node) in nodes.iter().enumerate().skip(1) {
        assert_eq!(
            http_get(hammerer, Lan::node_addr(n), "/"),
            None,
            "node {} still serves the client banned on node 1",
            n + 1
        );
        let row = &rows(&node.socket(), "10.233.0.101", false)[0];
        assert_eq!(row["origin"], "farm:web1", "{row}");
        assert_eq!(row["rule"], "hammer", "{row}");
    }
    eprintln!(
        "node 1's ban in nodes 2 and 3's kernels within {took:?} of node 1 dropping the client"
    );
    // The other client is served everywhere.
    for n in 0..NODES {
        assert_eq!(http_get(spreader, Lan::node_addr(n), "/"), Some(200));
    }

    // 2. A flood spread evenly over the nodes, under each one's limit, is
    // banned by the farm rule: its packets are dropped everywhere.
    for _ in 0..12 {
        for n in 0..NODES {
            assert_eq!(
                http_get(spreader, Lan::node_addr(n), "/spread"),
                Some(200),
                "banned before 31 requests"
            );
        }
    }
    until(
        "the spread flood banned on every node",
        Duration::from_secs(5),
        || (0..NODES).all(|n| lan.banned_on(n).iter().any(|(ip, _)| ip == "10.233.0.102")),
    );
    for n in 0..NODES {
        assert_eq!(http_get(spreader, Lan::node_addr(n), "/"), None);
    }
    let decided: Vec<Value> = nodes
        .iter()
        .flat_map(|node| rows(&node.socket(), "10.233.0.102", false))
        .filter(|b| b["origin"] == "rule")
        .collect();
    assert_eq!(decided.len(), 1, "decided once: {decided:?}");
    assert!(
        decided[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("across the farm")),
        "{decided:?}"
    );

    // 3. Node 3 crashes; a ban made meanwhile on node 1 is in its kernel
    // once it is back, with the same expiry, recorded once.
    nodes[2].crash();
    ctl_ok(&nodes[0].socket(), &["ban", "198.18.7.1", "--for", "1h"]);
    std::thread::sleep(Duration::from_millis(1500));
    nodes[2].run();
    until("node 3 catches up", Duration::from_secs(10), || {
        lan.banned_on(2).iter().any(|(ip, _)| ip == "198.18.7.1")
    });
    let on_1 = &rows(&nodes[0].socket(), "198.18.7.1", false)[0];
    let on_3 = rows(&nodes[2].socket(), "198.18.7.1", true);
    assert_eq!(on_3.len(), 1, "applied once: {on_3:?}");
    assert_eq!(on_3[0]["expires"], on_1["expires"], "not extended");
    let left = lan.banned_on(2);
    let secs = left.iter().find(|(ip, _)| ip == "198.18.7.1").unwrap().1;
    assert!(
        (3500..=3600).contains(&secs),
        "{secs} s left in node 3's kernel"
    );
    // Node 3's kernel still drops the earlier bans, reconciled from its
    // ledger and the farm.
    for ip in ["10.233.0.101", "10.233.0.102"] {
        assert!(left.iter().any(|(i, _)| i == ip), "{ip} in {left:?}");
    }

    // 4. Redis dies: node 2 goes on banning locally; Redis comes back
    // empty and every node gets what was queued, once.
    let _ = server.0.kill();
    let _ = server.0.wait();
    until("node 2 degraded", Duration::from_secs(10), || {
        status_json(&nodes[1].socket())["loop"]["farm"]["state"] == "degraded"
    });
    ctl_ok(&nodes[1].socket(), &["ban", "198.18.7.2", "--for", "1h"]);
    assert!(lan.banned_on(1).iter().any(|(ip, _)| ip == "198.18.7.2"));
    server = redis(&lan);
    until(
        "nodes 1 and 3 get the queued ban",
        Duration::from_secs(20),
        || {
            [0, 2]
                .iter()
                .all(|&n| lan.banned_on(n).iter().any(|(ip, _)| ip == "198.18.7.2"))
        },
    );
    for n in [0, 2] {
        let r = rows(&nodes[n].socket(), "198.18.7.2", true);
        assert_eq!(r.len(), 1, "node {}: {r:?}", n + 1);
    }
    for node in &nodes {
        let log = node.logs();
        assert!(!log.contains("panicked"), "{log}");
    }
    drop(server);
}
