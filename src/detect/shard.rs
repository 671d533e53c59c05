//! Splitting the engine by client, so that replay runs it on several
//! threads with no locks and decides exactly as one engine would.
//!
//! Every piece of engine state belongs to one subject: a client, or a
//! network of clients when a rule keys on `net` (the distributed-flood
//! rule counts per /16 and /48). Scores, bans, escalation history and quiet
//! periods are per subject too. So when clients are split by the widest
//! network any rule keys on, each shard holds all the state any of its
//! requests can touch, and a shard fed its own requests in log order makes
//! the decisions the single engine would make for them. Two things are not
//! per subject, and the driver supplies them:
//!
//! - the engine's clock (the newest log time seen, which windows and bans
//!   are measured against): the driver stamps each event with the clock of
//!   the whole log before handing it to a shard;
//! - the order of decisions: each is tagged with its request's place in the
//!   log, and the driver merges them back into that order.
//!
//! What remains different is only what the memory cap does: each shard
//! keeps within its share of the cap, so when the cap is reached, the
//! least recently active state is chosen per shard rather than over all.
//!
//! A rule keyed on something all clients share (`key = "path"`, `key =
//! "host"`) counts across shards; with such a rule the engine runs as one
//! shard. Farm counters (shared through Redis) are the daemon's, never
//! replay's.

use super::addr::{is_v4, mask};
use super::config::RuleKind;
use super::rules::{IpPart, RuleSet};

/// How clients are split among shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardPlan {
    /// Bits of the address that decide the shard: the widest network any
    /// rule keys on (a prefix length over the 128-bit form for IPv4).
    v4_prefix: u8,
    v6_prefix: u8,
    pub shards: usize,
}

impl ShardPlan {
    /// Splits into `shards` (at least one) when the rules allow it; else
    /// one shard and why.
    pub fn new(rules: &RuleSet, shards: usize) -> (ShardPlan, Option<String>) {
        let (mut v4, mut v6) = (32u8, 128u8);
        let mut global = None;
        for rule in &rules.rules {
            if rule.inactive.is_some() || rule.kind == RuleKind::Connections {
                continue;
            }
            match rule.key.ip {
                IpPart::Ip => {}
                IpPart::Net { v4: a, v6: b } => {
                    v4 = v4.min(a);
                    v6 = v6.min(b);
                }
                IpPart::None => {
                    global.get_or_insert_with(|| (rule.name.clone(), rule.key.describe()));
                }
            }
        }
        let plan = |shards| ShardPlan {
            v4_prefix: 96 + v4.min(32),
            v6_prefix: v6,
            shards,
        };
        match global {
            Some((name, key)) if shards > 1 => (
                plan(1),
                Some(format!(
                    "rule '{name}' counts across all clients (key = \"{key}\"): the rules run on one thread"
                )),
            ),
            _ => (plan(shards.max(1)), None),
        }
    }

    /// The shard of a client.
    pub fn shard_of(&self, client: u128) -> usize {
        if self.shards == 1 {
            return 0;
        }
        let prefix = if is_v4(client) {
            self.v4_prefix
        } else {
            self.v6_prefix
        };
        let net = mask(client, prefix);
        // Fibonacci hashing of the folded network, then a multiply-shift to
        // the shard count: no division per request. Only balance depends on
        // it (a skewed log makes one shard busier, never a wrong decision),
        // so an unseeded mix is enough.
        let folded = (net as u64) ^ ((net >> 64) as u64).rotate_left(29);
        let mixed = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        ((mixed * self.shards as u64) >> 32) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Config;
    use crate::detect::addr::to_bits;

    fn rules(text: &str) -> RuleSet {
        let config = Config::from_texts(vec![("t.toml".into(), text.into())]).unwrap();
        RuleSet::compile(&config).unwrap()
    }

    fn ip(s: &str) -> u128 {
        to_bits(s.parse().unwrap())
    }

    #[test]
    fn a_network_a_rule_keys_on_stays_in_one_shard() {
        let (plan, why) = ShardPlan::new(&rules(""), 4);
        assert_eq!(why, None);
        assert_eq!(plan.shards, 4);
        // The built-in distributed-flood rule keys on /16 and /48.
        let a = plan.shard_of(ip("198.51.0.1"));
        for other in ["198.51.255.254", "198.51.7.9"] {
            assert_eq!(plan.shard_of(ip(other)), a, "{other}");
        }
        let b = plan.shard_of(ip("2001:db8:1::1"));
        assert_eq!(plan.shard_of(ip("2001:db8:1:ffff::9")), b);
        // And different networks spread over the shards.
        let used: std::collections::BTreeSet<usize> = (0..64u32)
            .map(|i| plan.shard_of(ip(&format!("10.{i}.0.1"))))
            .collect();
        assert_eq!(used.len(), 4);
    }

    #[test]
    fn a_rule_over_all_clients_keeps_one_shard() {
        let (plan, why) = ShardPlan::new(
            &rules(
                "[rules.hot-path]\nkind = \"rate\"\nkey = \"path\"\nlimit = 5\nwindow = \"1s\"\naction = \"log\"\n",
            ),
            2,
        );
        assert_eq!(plan.shards, 1);
        let why = why.unwrap();
        assert!(
            why.contains("'hot-path'") && why.contains("key = \"path\""),
            "{why}"
        );
        assert_eq!(plan.shard_of(ip("192.0.2.1")), 0);
    }
}
