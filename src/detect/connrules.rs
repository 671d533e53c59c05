//! Connection rules (`kind = "connections"`): more than `limit` concurrent
//! connections from one client (or one /24, /64) to this machine's
//! listening ports is a decision, with the counts by state and port as its
//! evidence. They read the kernel's table, not the logs, so a slow-loris
//! that never finishes a request is seen.

use super::addr::Subject;
use super::engine::{Decision, Evidence, Mark};
use super::rules::Action;
use crate::source::conns::TcpState;
use crate::stats::conns::{ClientConns, ConnFilter, ConnTable};

/// A compiled connection rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnRule {
    pub name: String,
    pub description: String,
    /// The most connections allowed; one more is a decision.
    pub limit: u64,
    pub filter: ConnFilter,
    pub action: Action,
    pub duration_s: u64,
}

/// Plain words for one client's connections: "42 connections (established
/// 40, syn-recv 2) on ports 443×40 80×2".
pub fn describe(c: &ClientConns) -> String {
    let mut states = Vec::new();
    for (n, name) in [
        (c.established, "established"),
        (c.syn_recv, "syn-recv"),
        (c.other, "other"),
    ] {
        if n > 0 {
            states.push(format!("{name} {n}"));
        }
    }
    let ports: Vec<String> = c
        .ports
        .iter()
        .take(5)
        .map(|p| format!("{}×{}", p.port, p.conns))
        .collect();
    format!(
        "{} connections ({}) on ports {}",
        c.total,
        states.join(", "),
        ports.join(" ")
    )
}

impl ConnRule {
    /// The decisions over one table (read with this rule's filter), for
    /// clients not allowlisted; `now_ms` stamps them.
    pub fn decide(
        &self,
        table: &ConnTable,
        allowed: &dyn Fn(&Subject) -> bool,
        now_ms: i64,
    ) -> Vec<Decision> {
        table
            .clients
            .iter()
            .take_while(|c| c.total > self.limit)
            .filter(|c| !allowed(&c.client))
            .map(|c| {
                let what = describe(c);
                Decision {
                    rule: self.name.clone(),
                    subject: c.client,
                    action: self.action.clone(),
                    duration_s: matches!(self.action, Action::Ban).then_some(self.duration_s),
                    at: now_ms,
                    reason: format!("{what}, more than {}", self.limit),
                    repeat: 0,
                    evidence: Evidence {
                        count: c.total as f64,
                        window_s: 0,
                        threshold: self.limit as f64,
                        first: Mark { loc: 0, at: now_ms },
                        last: Mark { loc: 0, at: now_ms },
                        samples: vec![what],
                    },
                }
            })
            .collect()
    }

    /// States this rule counts, for `rules`.
    pub fn states_text(&self) -> String {
        match &self.filter.states {
            None => "every state but time-wait".into(),
            Some(s) => s.iter().map(|s| s.name()).collect::<Vec<_>>().join(", "),
        }
    }
}

/// A connection state no rule can name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state '{0}' (expected one of {states})", states = rule_states())]
pub struct UnknownState(pub String);

fn rule_states() -> String {
    (TcpState::ALL.iter())
        .filter(|s| **s != TcpState::Listen)
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The states a rule may name.
pub fn parse_state(name: &str) -> Result<TcpState, UnknownState> {
    match TcpState::from_name(name) {
        Some(TcpState::Listen) | None => Err(UnknownState(name.to_string())),
        Some(s) => Ok(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::conns::Conn;

    #[test]
    fn clients_over_the_limit_are_decided_with_their_counts() {
        let mut conns = Vec::new();
        for (client, n) in [("192.0.2.1", 5), ("192.0.2.2", 3), ("10.9.9.9", 9)] {
            for _ in 0..n {
                conns.push(Conn {
                    local: "10.0.0.1".parse().unwrap(),
                    local_port: 443,
                    remote: client.parse().unwrap(),
                    remote_port: 1,
                    state: TcpState::Established,
                });
            }
        }
        let rule = ConnRule {
            name: "too-many-conns".into(),
            description: String::new(),
            limit: 4,
            filter: ConnFilter::default(),
            action: Action::Ban,
            duration_s: 600,
        };
        let t = ConnTable::build(&[443].into(), &conns, &rule.filter);
        let allow = |s: &Subject| s.to_string() == "10.9.9.9";
        let d = rule.decide(&t, &allow, 1000);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].subject.to_string(), "192.0.2.1");
        assert_eq!(d[0].duration_s, Some(600));
        assert_eq!(
            d[0].reason,
            "5 connections (established 5) on ports 443×5, more than 4"
        );
    }
}
