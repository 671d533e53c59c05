//! Packet rules (`kind = "packets"`): more than `limit` packets of some
//! classes (bittorrent, utp, dht, tracker, other) from one local address
//! within one `[packets]` sample. Like connection rules, they are compiled
//! with the other rules and decided apart: on a sample's counts, not on
//! requests.
//!
//! A sample is a tumbling window: counts start from zero each sample, so a
//! burst that straddles two continuous samples counts in both halves.

use super::Decision;
use super::addr::{Subject, to_bits};
use super::engine::{Evidence, Mark};
use super::p2p::Class;
use super::rules::Action;
use crate::stats::lan::LanStats;

#[derive(Debug, Clone, PartialEq)]
pub struct PacketRule {
    pub name: String,
    pub description: String,
    pub classes: Vec<Class>,
    pub limit: u64,
    pub action: Action,
    pub duration_s: u64,
}

impl PacketRule {
    pub fn classes_text(&self) -> String {
        let names: Vec<&str> = self.classes.iter().map(|c| c.name()).collect();
        names.join(", ")
    }
}

/// The decisions one sample's counts make, addresses in order.
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
            let ban = matches!(r.action, Action::Ban);
            out.push(Decision {
                rule: r.name.clone(),
                subject: Subject::host(to_bits(ip)),
                action: r.action.clone(),
                duration_s: ban.then_some(r.duration_s),
                at: at_ms,
                reason: format!(
                    "{count} packets ({}) in a {sample_s} s sample, above {}",
                    r.classes_text(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::lan::dht_sample;

    #[test]
    fn a_rule_over_its_limit_decides_once_per_address() {
        let s = dht_sample("10.0.0.5", 30);
        let rule = |name: &str, classes: Vec<Class>, action| PacketRule {
            name: name.into(),
            description: String::new(),
            classes,
            limit: 20,
            action,
            duration_s: 3600,
        };
        let rules = vec![
            rule("torrent", Class::P2P.to_vec(), Action::Ban),
            rule("utp-only", vec![Class::Utp], Action::Ban),
            rule("watch", vec![Class::Dht], Action::Log),
        ];
        let d = decide(&rules, &s, 10, 5_000);
        assert_eq!(d.len(), 2);
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
        assert_eq!((d[1].rule.as_str(), d[1].duration_s), ("watch", None));
    }
}
