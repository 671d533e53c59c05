//! The nftables backend: a table of its own (`inet webfence` by default)
//! with a set per family for addresses and one for networks, each element
//! with its own timeout, so the kernel lifts a ban on time even if webfence
//! is dead, and a drop rule early in the input hook. A batch of changes is
//! one `nft -f -` transaction: all of it applies, or none.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Backend, BanEntry, Dropped, EnforceError, KernelBan, netlink, run};
use crate::detect::addr::{Subject, is_v4, to_bits};

/// The sets, by (IPv4?, network?).
fn set_name(subject: &Subject) -> &'static str {
    match (is_v4(subject.bits), subject.is_host()) {
        (true, true) => "ban4",
        (true, false) => "ban4net",
        (false, true) => "ban6",
        (false, false) => "ban6net",
    }
}

const SETS: [&str; 4] = ["ban4", "ban4net", "ban6", "ban6net"];

pub struct Nft {
    /// The program and leading arguments, e.g. `["nft"]`, or
    /// `["ip", "netns", "exec", "ns1", "nft"]` in tests.
    pub command: Vec<String>,
    pub table: String,
    /// What the drop rules had dropped at the last full read of the table.
    dropped: Option<Dropped>,
    /// Where the netlink socket is made (tests: the namespace `command`
    /// enters); None for this process's namespace.
    netns: Option<PathBuf>,
    /// Host bans go to the kernel over netlink; None until first needed,
    /// and again after a failure.
    socket: Option<netlink::Socket>,
}

impl Nft {
    pub fn new(command: Vec<String>, table: &str) -> Nft {
        Nft {
            command,
            table: table.to_string(),
            dropped: None,
            netns: None,
            socket: None,
        }
    }

    /// Makes the netlink socket in the namespace bound at `path`.
    pub fn in_netns(mut self, path: &Path) -> Nft {
        self.netns = Some(path.to_path_buf());
        self
    }

    /// Host bans (fresh ones as plain adds, renewals as add, delete, add)
    /// as one netlink batch.
    fn apply_hosts(&mut self, fresh: &[BanEntry], renew: &[BanEntry]) -> std::io::Result<()> {
        let socket = match &mut self.socket {
            Some(s) => s,
            None => self.socket.insert(match &self.netns {
                Some(ns) => netlink::Socket::open_in(ns)?,
                None => netlink::Socket::open()?,
            }),
        };
        let mut batch = socket.next_batch();
        let element = |b: &BanEntry, timed: bool| {
            netlink::Element::new(
                b.subject.addr(),
                timed.then_some(b.timeout_s.max(1).saturating_mul(1000)),
            )
        };
        for set in ["ban4", "ban6"] {
            let in_set = |b: &&BanEntry| set_name(&b.subject) == set;
            let pick = |list: &[BanEntry], timed: bool| -> Vec<netlink::Element> {
                list.iter()
                    .filter(in_set)
                    .map(|b| element(b, timed))
                    .collect()
            };
            let (fresh, plain, timed) = (pick(fresh, true), pick(renew, false), pick(renew, true));
            batch.elements(netlink::Op::Add, &self.table, set, &fresh);
            batch.elements(netlink::Op::Add, &self.table, set, &plain);
            batch.elements(netlink::Op::Delete, &self.table, set, &plain);
            batch.elements(netlink::Op::Add, &self.table, set, &timed);
        }
        let res = socket.apply(batch);
        if res.is_err() {
            self.socket = None;
        }
        res
    }

    fn nft(&self, args: &[&str], input: Option<&str>) -> Result<String, EnforceError> {
        let mut argv = self.command.clone();
        argv.extend(args.iter().map(|s| s.to_string()));
        run(&argv, input)
    }

    /// The table, sets and rules, as one script.
    pub fn setup_script(&self) -> String {
        let t = &self.table;
        format!(
            "add table inet {t}\n\
             add set inet {t} ban4 {{ type ipv4_addr; flags timeout; }}\n\
             add set inet {t} ban4net {{ type ipv4_addr; flags interval, timeout; }}\n\
             add set inet {t} ban6 {{ type ipv6_addr; flags timeout; }}\n\
             add set inet {t} ban6net {{ type ipv6_addr; flags interval, timeout; }}\n\
             add counter inet {t} dropped4\n\
             add counter inet {t} dropped6\n\
             add chain inet {t} input {{ type filter hook input priority -200; policy accept; }}\n\
             flush chain inet {t} input\n\
             add rule inet {t} input ip saddr @ban4 counter name dropped4 drop\n\
             add rule inet {t} input ip saddr @ban4net counter name dropped4 drop\n\
             add rule inet {t} input ip6 saddr @ban6 counter name dropped6 drop\n\
             add rule inet {t} input ip6 saddr @ban6net counter name dropped6 drop\n"
        )
    }

    /// One transaction for a batch. nftables has no "add or update": an
    /// element is added (so it exists), deleted, then added again with its
    /// timeout, which renews an existing ban and never fails on a missing
    /// one; removals likewise add then delete.
    pub fn apply_script(&self, add: &[BanEntry], remove: &[Subject]) -> String {
        let t = &self.table;
        let mut out = String::new();
        for set in SETS {
            let adds: Vec<&BanEntry> = add.iter().filter(|b| set_name(&b.subject) == set).collect();
            let removes: Vec<&Subject> = remove.iter().filter(|s| set_name(s) == set).collect();
            let all: Vec<String> = adds
                .iter()
                .map(|b| b.subject.to_string())
                .chain(removes.iter().map(|s| s.to_string()))
                .collect();
            if all.is_empty() {
                continue;
            }
            let _ = writeln!(out, "add element inet {t} {set} {{ {} }}", all.join(", "));
            let _ = writeln!(
                out,
                "delete element inet {t} {set} {{ {} }}",
                all.join(", ")
            );
            if !adds.is_empty() {
                let with_timeouts: Vec<String> = adds
                    .iter()
                    .map(|b| format!("{} timeout {}s", b.subject, b.timeout_s.max(1)))
                    .collect();
                let _ = writeln!(
                    out,
                    "add element inet {t} {set} {{ {} }}",
                    with_timeouts.join(", ")
                );
            }
        }
        out
    }
}

/// Plain `add element` with timeouts, per set: for bans with no element in
/// the kernel, a third of the work of the renewing script.
fn fresh_script(table: &str, fresh: &[BanEntry]) -> String {
    let mut out = String::new();
    for set in SETS {
        let items: Vec<String> = fresh
            .iter()
            .filter(|b| set_name(&b.subject) == set)
            .map(|b| format!("{} timeout {}s", b.subject, b.timeout_s.max(1)))
            .collect();
        if !items.is_empty() {
            let _ = writeln!(
                out,
                "add element inet {table} {set} {{ {} }}",
                items.join(", ")
            );
        }
    }
    out
}

fn parse_elem(v: &Value) -> Option<KernelBan> {
    let e = v.get("elem")?;
    let subject = match e.get("val")? {
        Value::String(s) => Subject::host(to_bits(s.parse().ok()?)),
        other => {
            let p = other.get("prefix")?;
            let addr: std::net::IpAddr = p.get("addr")?.as_str()?.parse().ok()?;
            let len = p.get("len")?.as_u64()?;
            Subject::from_net(ipnet::IpNet::new(addr, len as u8).ok()?)
        }
    };
    Some(KernelBan {
        subject,
        expires_s: e.get("expires").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// What webfence's table holds: the bans in its sets, and the sets that a
/// drop rule in its input chain refers to.
#[derive(Debug, Default)]
struct TableState {
    bans: Vec<KernelBan>,
    guarded: Vec<&'static str>,
    /// Packets and bytes the drop rules dropped (their named counters).
    dropped: Dropped,
}

fn parse_table(json: &str) -> Result<TableState, EnforceError> {
    let doc: Value = serde_json::from_str(json).map_err(|e| EnforceError::Output {
        program: "nft".into(),
        reason: e.to_string(),
    })?;
    let mut state = TableState::default();
    let items = doc.get("nftables").and_then(Value::as_array);
    for item in items.into_iter().flatten() {
        if let Some(counter) = item.get("counter") {
            let n = |k: &str| counter.get(k).and_then(Value::as_u64).unwrap_or(0);
            state.dropped.packets += n("packets");
            state.dropped.bytes += n("bytes");
        } else if let Some(set) = item.get("set") {
            let elems = set.get("elem").and_then(Value::as_array);
            state
                .bans
                .extend(elems.into_iter().flatten().filter_map(parse_elem));
        } else if let Some(rule) = item.get("rule") {
            if rule.get("chain").and_then(Value::as_str) != Some("input") {
                continue;
            }
            let expr = rule.get("expr").and_then(Value::as_array);
            let exprs = expr.map(Vec::as_slice).unwrap_or_default();
            let drops = exprs.iter().any(|e| e.get("drop").is_some());
            let set = exprs.iter().find_map(|e| {
                let right = e.get("match")?.get("right")?.as_str()?;
                SETS.iter()
                    .copied()
                    .find(|s| right.strip_prefix('@') == Some(*s))
            });
            if let (true, Some(set)) = (drops, set) {
                state.guarded.push(set);
            }
        }
    }
    state.bans.sort();
    Ok(state)
}

impl Nft {
    fn read_table(&mut self) -> Result<TableState, EnforceError> {
        let json = self.nft(&["-j", "list", "table", "inet", &self.table], None)?;
        parse_table(&json)
    }
}

impl Backend for Nft {
    fn name(&self) -> &str {
        "nftables"
    }

    fn setup(&mut self) -> Result<(), EnforceError> {
        let script = self.setup_script();
        self.nft(&["-f", "-"], Some(&script)).map(|_| ())
    }

    fn apply(&mut self, add: &[BanEntry], remove: &[Subject]) -> Result<(), EnforceError> {
        let script = self.apply_script(add, remove);
        if script.is_empty() {
            return Ok(());
        }
        self.nft(&["-f", "-"], Some(&script)).map(|_| ())
    }

    fn apply_new(&mut self, fresh: &[BanEntry], renew: &[BanEntry]) -> Result<(), EnforceError> {
        // Network bans need nft's interval handling; a tick with any goes
        // to nft whole, so it stays one transaction.
        if fresh.iter().chain(renew).all(|b| b.subject.is_host()) {
            match self.apply_hosts(fresh, renew) {
                Ok(()) => return Ok(()),
                // The batch was not applied (the kernel takes all or
                // nothing); nft gets it and, if it fails too, says why.
                Err(e) => tracing::debug!(error = %e, "netlink batch failed; trying nft"),
            }
        }
        let mut script = fresh_script(&self.table, fresh);
        script.push_str(&self.apply_script(renew, &[]));
        if script.is_empty() {
            return Ok(());
        }
        self.nft(&["-f", "-"], Some(&script)).map(|_| ())
    }

    fn list(&mut self) -> Result<Vec<KernelBan>, EnforceError> {
        Ok(self.read_table()?.bans)
    }

    /// One read of the whole table (nft reads every element for any
    /// listing anyway, so a separate rules check would cost as much).
    fn check(&mut self) -> Result<(), EnforceError> {
        self.inspect().map(|_| ())
    }

    /// `nft list chains` reads no set elements: a few milliseconds
    /// whatever the number of bans (listing the table takes a second per
    /// 100k).
    fn quick_check(&mut self) -> Result<(), EnforceError> {
        let json = self.nft(&["-j", "list", "chains", "inet"], None)?;
        let doc: Value = serde_json::from_str(&json).map_err(|e| EnforceError::Output {
            program: "nft".into(),
            reason: e.to_string(),
        })?;
        let items = doc.get("nftables").and_then(Value::as_array);
        let present = items.into_iter().flatten().any(|item| {
            item.get("chain").is_some_and(|c| {
                c.get("table").and_then(Value::as_str) == Some(self.table.as_str())
                    && c.get("name").and_then(Value::as_str) == Some("input")
            })
        });
        if present {
            Ok(())
        } else {
            Err(EnforceError::Output {
                program: "nft".into(),
                reason: format!(
                    "the table inet {} or its input chain is gone (deleted behind webfence's back?)",
                    self.table
                ),
            })
        }
    }

    fn dropped(&self) -> Option<Dropped> {
        self.dropped
    }

    fn inspect(&mut self) -> Result<Vec<KernelBan>, EnforceError> {
        let table = self.read_table()?;
        self.dropped = Some(table.dropped);
        let missing: Vec<&str> = SETS
            .iter()
            .copied()
            .filter(|set| !table.guarded.contains(set))
            .collect();
        if !missing.is_empty() {
            return Err(EnforceError::Output {
                program: "nft".into(),
                reason: format!(
                    "the drop rules for {} are missing from chain inet {} input (flushed behind webfence's back?)",
                    missing.join(", "),
                    self.table
                ),
            });
        }
        Ok(table.bans)
    }

    fn teardown(&mut self) -> Result<(), EnforceError> {
        let script = format!(
            "add table inet {t}\ndelete table inet {t}\n",
            t = self.table
        );
        self.nft(&["-f", "-"], Some(&script)).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> Subject {
        Subject::host(to_bits(s.parse().unwrap()))
    }

    #[test]
    fn one_transaction_per_batch_by_family() {
        let n = Nft::new(vec!["nft".into()], "webfence");
        let s = n.apply_script(
            &[
                BanEntry {
                    subject: host("203.0.113.7"),
                    timeout_s: 3600,
                },
                BanEntry {
                    subject: Subject::from_net("10.20.0.0/16".parse().unwrap()),
                    timeout_s: 600,
                },
                BanEntry {
                    subject: host("2001:db8::1"),
                    timeout_s: 60,
                },
            ],
            &[host("198.51.100.1")],
        );
        assert_eq!(
            s,
            "add element inet webfence ban4 { 203.0.113.7, 198.51.100.1 }\n\
             delete element inet webfence ban4 { 203.0.113.7, 198.51.100.1 }\n\
             add element inet webfence ban4 { 203.0.113.7 timeout 3600s }\n\
             add element inet webfence ban4net { 10.20.0.0/16 }\n\
             delete element inet webfence ban4net { 10.20.0.0/16 }\n\
             add element inet webfence ban4net { 10.20.0.0/16 timeout 600s }\n\
             add element inet webfence ban6 { 2001:db8::1 }\n\
             delete element inet webfence ban6 { 2001:db8::1 }\n\
             add element inet webfence ban6 { 2001:db8::1 timeout 60s }\n"
        );
        assert!(n.apply_script(&[], &[]).is_empty());
        assert_eq!(
            fresh_script(
                "webfence",
                &[
                    BanEntry {
                        subject: host("203.0.113.7"),
                        timeout_s: 60
                    },
                    BanEntry {
                        subject: host("203.0.113.8"),
                        timeout_s: 0
                    }
                ]
            ),
            "add element inet webfence ban4 { 203.0.113.7 timeout 60s, 203.0.113.8 timeout 1s }\n"
        );
    }

    #[test]
    fn parses_the_sets_as_nft_prints_them() {
        let v: Value = serde_json::from_str(r#"{"elem": {"val": {"prefix": {"addr": "10.20.0.0", "len": 16}}, "timeout": 600, "expires": 599}}"#).unwrap();
        assert_eq!(parse_elem(&v).unwrap().subject.to_string(), "10.20.0.0/16");
        let v: Value = serde_json::from_str(
            r#"{"elem": {"val": "203.0.113.7", "timeout": 3600, "expires": 3599}}"#,
        )
        .unwrap();
        assert_eq!(
            parse_elem(&v),
            Some(KernelBan {
                subject: host("203.0.113.7"),
                expires_s: 3599
            })
        );
    }
}
