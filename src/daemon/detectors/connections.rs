//! The connection rules as a detector: every second, the kernel's table
//! read once per distinct filter, each rule's decisions, and no decision
//! repeated for a client while the last one still stands.

use std::collections::HashMap;

use crate::daemon::sources::machine::Machine;
use crate::detect::Decision;
use crate::detect::addr::Subject;
use crate::detect::connrules::ConnRule;
use crate::detect::rules::Action;
use crate::stats::conns::ConnTable;

/// How long a `log` decision keeps a client from being logged again.
const LOG_AGAIN_MS: i64 = 60_000;

#[derive(Default)]
pub struct ConnDetector {
    pub rules: Vec<ConnRule>,
    /// (rule, subject) → until when it is not decided again.
    quiet: HashMap<(String, Subject), i64>,
    /// The most connections the last round's tables counted.
    pub last_total: Option<u64>,
}

impl ConnDetector {
    pub fn new(rules: Vec<ConnRule>) -> ConnDetector {
        ConnDetector {
            rules,
            quiet: HashMap::new(),
            last_total: None,
        }
    }

    /// One round: the decisions to enforce, and a problem if the table
    /// could not be read.
    pub fn check(
        &mut self,
        machine: &mut Machine,
        allowed: &dyn Fn(&Subject) -> bool,
        now_ms: i64,
    ) -> (Vec<Decision>, Option<String>) {
        self.quiet.retain(|_, until| *until > now_ms);
        let mut out = Vec::new();
        let mut tables: Vec<(crate::stats::conns::ConnFilter, ConnTable)> = Vec::new();
        for rule in &self.rules {
            let table = match tables.iter().find(|(f, _)| f == &rule.filter) {
                Some((_, t)) => t,
                None => match machine.conns_with(&rule.filter) {
                    Ok(t) => {
                        tables.push((rule.filter.clone(), t));
                        &tables[tables.len() - 1].1
                    }
                    Err(e) => {
                        return (
                            out,
                            Some(format!(
                                "connection rules are not checked: cannot read the connection table: {e}"
                            )),
                        );
                    }
                },
            };
            for d in rule.decide(table, allowed, now_ms) {
                let key = (rule.name.clone(), d.subject);
                if self.quiet.contains_key(&key) {
                    continue;
                }
                let hold = match d.action {
                    Action::Ban => rule.duration_s as i64 * 1000,
                    _ => LOG_AGAIN_MS,
                };
                self.quiet.insert(key, now_ms + hold);
                out.push(d);
            }
        }
        self.last_total = tables.iter().map(|(_, t)| t.total).max();
        (out, None)
    }
}
