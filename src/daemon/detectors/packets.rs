//! `[packets]` compiled, and its rules run over one sample's counts:
//! "more than 500 BitTorrent packets in a 10-second sample from one local
//! address" → a decision like any rule's (a ban is a null route with the
//! `route` backend).
//!
//! A sample is a tumbling window: counts start from zero each sample, so a
//! burst that straddles two continuous samples counts in both halves.

use ipnet::IpNet;
use serde::Serialize;

use crate::detect::Decision;
use crate::detect::addr::{Subject, to_bits};
use crate::detect::config::{Config, ConfigError};
use crate::detect::engine::{Evidence, Mark};
use crate::detect::p2p::Class;
use crate::detect::rules::Action;
use crate::source::packets::bpf::{MAX_SKIPPED, Skip};
use crate::stats::lan::{LanStats, LocalRow};

#[derive(Debug, Clone, PartialEq)]
pub struct PacketRule {
    pub name: String,
    pub classes: Vec<Class>,
    pub limit: u64,
    /// Ban or log.
    pub ban: bool,
    pub duration_s: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PacketSettings {
    /// None: the default route's interface, found when a sample starts.
    pub interface: Option<String>,
    /// Empty: the private ranges.
    pub locals: Vec<IpNet>,
    pub sample_s: u64,
    pub every_s: u64,
    pub skip: Skip,
    pub report_to: Vec<String>,
    pub report_over: u64,
    pub rules: Vec<PacketRule>,
}

/// `[packets]` checked; `None` when disabled.
pub fn compile(
    config: &Config,
    channels: &[String],
    errors: &mut Vec<ConfigError>,
) -> Option<PacketSettings> {
    let (at, p) = config.packets.as_ref()?;
    if p.enabled != Some(true) {
        return None;
    }
    let before = errors.len();
    let mut err = |at, msg: String| errors.push(config.sources.error(at, msg));
    let duration =
        |v: &Option<crate::detect::config::Sp<String>>,
         default: u64,
         err: &mut dyn FnMut(crate::detect::config::Origin, String)| match v {
            Some(d) => crate::units::parse_duration(&d.value).unwrap_or_else(|e| {
                err(d.at, format!("invalid duration '{}': {e}", d.value));
                default
            }),
            None => default,
        };
    let sample_s = duration(&p.sample, 10, &mut err).max(1);
    let every_s = duration(&p.every, 300, &mut err).max(1);
    if every_s < sample_s {
        err(
            *at,
            format!(
                "[packets] every ({every_s} s) is shorter than sample ({sample_s} s): a sample cannot start before the last one ends"
            ),
        );
    }
    let mut locals = Vec::new();
    for l in p.local.iter().flatten() {
        match l
            .value
            .parse::<IpNet>()
            .or_else(|_| l.value.parse::<std::net::IpAddr>().map(IpNet::from))
        {
            Ok(n) => locals.push(n),
            Err(_) => err(
                l.at,
                format!(
                    "invalid local network '{}': expected a CIDR such as 192.168.1.0/24",
                    l.value
                ),
            ),
        }
    }
    let mut skip = Skip::default();
    if let Some(t) = &p.skip_tcp {
        skip.tcp = t.clone();
    }
    if let Some(u) = &p.skip_udp {
        skip.udp = u.clone();
    }
    if skip.tcp.len() > MAX_SKIPPED || skip.udp.len() > MAX_SKIPPED {
        err(
            *at,
            format!("[packets] skips at most {MAX_SKIPPED} ports per protocol"),
        );
    }
    let mut report_to = Vec::new();
    for c in p.report_to.iter().flatten() {
        if channels.contains(&c.value) {
            report_to.push(c.value.clone());
        } else {
            err(
                c.at,
                format!(
                    "no [notify.{}] channel to report to (channels: {})",
                    c.value,
                    channels.join(", ")
                ),
            );
        }
    }
    let mut rules = Vec::new();
    for (name, r) in p.rules.iter().flatten() {
        if let Some(k) = &r.kind
            && k.value != "rate"
        {
            err(
                k.at,
                format!(
                    "packet rule '{name}': kind '{}' is not known here (packet rules are \"rate\")",
                    k.value
                ),
            );
        }
        let mut classes = Vec::new();
        for c in r.classes.iter().flatten() {
            match Class::from_name(&c.value) {
                Some(class) => classes.push(class),
                None => err(
                    c.at,
                    format!(
                        "packet rule '{name}': unknown class '{}' (expected bittorrent, utp, dht, tracker or other)",
                        c.value
                    ),
                ),
            }
        }
        if r.classes.is_none() {
            classes = Class::P2P.to_vec();
        }
        let Some(limit) = &r.limit else {
            err(
                *at,
                format!("packet rule '{name}' needs a limit (packets within one sample)"),
            );
            continue;
        };
        let ban = match r.action.as_ref().map(|a| a.value.as_str()) {
            None | Some("ban") => true,
            Some("log") => false,
            Some(other) => {
                if let Some(a) = &r.action {
                    err(
                        a.at,
                        format!(
                            "packet rule '{name}': action '{other}' is not known here (ban or log)"
                        ),
                    );
                }
                true
            }
        };
        rules.push(PacketRule {
            name: name.clone(),
            classes,
            limit: limit.value,
            ban,
            duration_s: duration(&r.duration, 3600, &mut err),
        });
    }
    (errors.len() == before).then_some(PacketSettings {
        interface: p.interface.as_ref().map(|i| i.value.clone()),
        locals,
        sample_s,
        every_s,
        skip,
        report_to,
        report_over: p.report_over.unwrap_or(100),
        rules,
    })
}

/// What the daemon shows of the packet source in `status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PacketStatus {
    pub interface: String,
    pub last_sample_ms: Option<i64>,
    pub samples: u64,
    pub packets: u64,
    pub kernel_dropped: u64,
    /// The last sample's busiest local addresses by BitTorrent packets.
    pub top: Vec<LocalRow>,
    /// Why the last sample failed, if it did.
    pub error: Option<String>,
}

/// The decisions one sample's counts make.
pub fn decide(rules: &[PacketRule], stats: &LanStats, sample_s: u64, at_ms: i64) -> Vec<Decision> {
    let mut out = Vec::new();
    let mut locals: Vec<_> = stats.locals().collect();
    locals.sort();
    for ip in locals {
        for r in rules {
            let count = stats.count(ip, &r.classes);
            if count <= r.limit {
                continue;
            }
            let names: Vec<&str> = r.classes.iter().map(|c| c.name()).collect();
            out.push(Decision {
                rule: r.name.clone(),
                subject: Subject::host(to_bits(ip)),
                action: if r.ban { Action::Ban } else { Action::Log },
                duration_s: r.ban.then_some(r.duration_s),
                at: at_ms,
                reason: format!(
                    "{count} packets ({}) in a {sample_s} s sample, above {}",
                    names.join(", "),
                    r.limit
                ),
                repeat: 0,
                evidence: Evidence {
                    count: count as f64,
                    window_s: sample_s,
                    threshold: r.limit as f64,
                    first: Mark {
                        loc: 0,
                        at: at_ms - sample_s as i64 * 1000,
                    },
                    last: Mark { loc: 0, at: at_ms },
                    samples: Vec::new(),
                },
            });
        }
    }
    out
}

/// The "LAN abusers" list: addresses with `over` BitTorrent packets or
/// more, as text.
pub fn abusers_text(
    rows: &[LocalRow],
    over: u64,
    interface: &str,
    sample_s: u64,
) -> Option<String> {
    let listed: Vec<&LocalRow> = rows.iter().filter(|r| r.p2p_packets >= over).collect();
    if listed.is_empty() {
        return None;
    }
    let mut t = format!("BitTorrent on {interface} in a {sample_s} s sample:\n");
    for r in listed {
        t.push_str(&format!(
            "  {}: {} packets ({} bittorrent, {} utp, {} dht, {} tracker), {} remote peers, {} packets in all\n",
            r.address, r.p2p_packets, r.bittorrent.packets, r.utp.packets, r.dht.packets, r.tracker.packets, r.p2p_peers, r.all_packets
        ));
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::p2p::Classifier;
    use crate::net::{Link, build, decode};
    use crate::stats::lan::Locals;

    #[test]
    fn a_rule_over_its_limit_decides_once_per_address() {
        let locals = Locals::new(vec!["10.0.0.0/24".parse().unwrap()]);
        let mut s = LanStats::default();
        let mut c = Classifier::new();
        let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
        for k in 0..30u16 {
            let bytes = build::ip(
                "10.0.0.5".parse().unwrap(),
                "198.51.100.1".parse().unwrap(),
                false,
                6881,
                1000 + k,
                ping,
            );
            let p = decode(Link::RawIp, &bytes).unwrap();
            let v = c.classify(&p);
            s.record(&locals, &p, v);
        }
        let rules = vec![
            PacketRule {
                name: "torrent".into(),
                classes: Class::P2P.to_vec(),
                limit: 20,
                ban: true,
                duration_s: 3600,
            },
            PacketRule {
                name: "utp-only".into(),
                classes: vec![Class::Utp],
                limit: 20,
                ban: true,
                duration_s: 60,
            },
        ];
        let d = decide(&rules, &s, 10, 5_000);
        assert_eq!(d.len(), 1);
        assert_eq!(
            (
                d[0].rule.as_str(),
                d[0].subject.to_string().as_str(),
                d[0].duration_s
            ),
            ("torrent", "10.0.0.5", Some(3600))
        );
        assert!(
            d[0].reason
                .starts_with("30 packets (bittorrent, utp, dht, tracker) in a 10 s sample"),
            "{}",
            d[0].reason
        );
        let text = abusers_text(&s.rows(0), 10, "eth1", 10).unwrap();
        assert!(text.contains("10.0.0.5: 30 packets"), "{text}");
        assert_eq!(abusers_text(&s.rows(0), 31, "eth1", 10), None);
    }
}
