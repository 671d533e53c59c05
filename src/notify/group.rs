//! Grouping, so nobody is flooded: a channel collects events for
//! `group_wait` after the first one (or until `group_threshold` are
//! waiting) and sends them as one message; the same ongoing condition is
//! not notified again within `repeat`, and its resolution always is.
//! Pure: the caller gives the time.

use std::collections::HashMap;

use super::event::{Event, Kind};

#[derive(Debug, Clone, PartialEq)]
pub struct GroupPolicy {
    pub wait_ms: i64,
    /// Send at once when this many are waiting.
    pub threshold: usize,
    /// Within this, the same condition (kind, about) is not sent again.
    pub repeat_ms: i64,
}

impl Default for GroupPolicy {
    fn default() -> Self {
        GroupPolicy {
            wait_ms: 30_000,
            threshold: 1000,
            repeat_ms: 3_600_000,
        }
    }
}

/// The events kept for one message, at most this many; the rest are
/// counted (a flood of 100k bans is one message with counts, and the
/// first of them listed).
const KEPT: usize = 2000;

#[derive(Debug, Default)]
pub struct Group {
    pending: Vec<Event>,
    /// Events beyond `KEPT` in this group, by category, only counted.
    pub overflow: HashMap<String, u64>,
    first_ms: Option<i64>,
    last_sent: HashMap<(Kind, String), i64>,
    /// Events not sent because the same condition was sent recently.
    pub suppressed: u64,
}

impl Group {
    /// Adds an event (or suppresses a repeat of an ongoing condition).
    pub fn push(&mut self, e: Event, policy: &GroupPolicy, now_ms: i64) {
        // Bans are each their own news; conditions repeat.
        if e.kind != Kind::Ban && !e.kind.resolves() {
            let key = (e.kind, e.about.clone());
            if let Some(at) = self.last_sent.get(&key) {
                if now_ms - at < policy.repeat_ms {
                    self.suppressed += 1;
                    return;
                }
            }
            self.last_sent.insert(key, now_ms);
        }
        if e.kind.resolves() {
            // A resolution re-arms its condition.
            let opened = match e.kind {
                Kind::GuardRecovered => Kind::GuardFired,
                Kind::Recovered => Kind::Degraded,
                _ => Kind::Stalled,
            };
            self.last_sent.remove(&(opened, e.about.clone()));
        }
        self.first_ms.get_or_insert(now_ms);
        if self.pending.len() < KEPT {
            self.pending.push(e);
        } else {
            *self
                .overflow
                .entry(e.kind.category().to_string())
                .or_default() += 1;
        }
    }

    /// Whether a message is due.
    pub fn due(&self, policy: &GroupPolicy, now_ms: i64) -> bool {
        match self.first_ms {
            None => false,
            Some(first) => {
                now_ms - first >= policy.wait_ms
                    || self.pending.len() + self.overflow.values().sum::<u64>() as usize
                        >= policy.threshold
            }
        }
    }

    /// The events of one message, and how many more were only counted.
    pub fn take(&mut self) -> (Vec<Event>, HashMap<String, u64>) {
        self.first_ms = None;
        (
            std::mem::take(&mut self.pending),
            std::mem::take(&mut self.overflow),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.first_ms.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::event::Severity;

    fn ev(kind: Kind, about: &str) -> Event {
        Event::new(kind, Severity::Warning, 0, about, "t", "d")
    }

    #[test]
    fn events_wait_together_and_a_threshold_sends_early() {
        let p = GroupPolicy {
            wait_ms: 30_000,
            threshold: 3,
            repeat_ms: 60_000,
        };
        let mut g = Group::default();
        g.push(ev(Kind::Ban, "r"), &p, 0);
        g.push(ev(Kind::Ban, "r"), &p, 1000);
        assert!(!g.due(&p, 29_999));
        assert!(g.due(&p, 30_000));
        g.push(ev(Kind::Ban, "r"), &p, 2000);
        assert!(g.due(&p, 2000));
        let (events, _) = g.take();
        assert_eq!(events.len(), 3);
        assert!(g.is_empty() && !g.due(&p, 100_000));
    }

    #[test]
    fn an_ongoing_condition_is_not_repeated_but_its_resolution_is_sent() {
        let p = GroupPolicy {
            wait_ms: 0,
            threshold: 100,
            repeat_ms: 60_000,
        };
        let mut g = Group::default();
        g.push(ev(Kind::GuardFired, "load"), &p, 0);
        g.push(ev(Kind::GuardFired, "load"), &p, 10_000);
        g.push(ev(Kind::GuardFired, "memory"), &p, 10_000);
        assert_eq!(g.suppressed, 1);
        g.push(ev(Kind::GuardRecovered, "load"), &p, 20_000);
        // Recovered: the next episode is news again.
        g.push(ev(Kind::GuardFired, "load"), &p, 30_000);
        let (events, _) = g.take();
        assert_eq!(events.len(), 4);
        g.push(ev(Kind::GuardFired, "load"), &p, 95_000);
        assert_eq!(g.suppressed, 1, "a minute after the last one it is sent");
    }

    #[test]
    fn a_flood_keeps_a_bounded_list_and_counts_the_rest() {
        let p = GroupPolicy::default();
        let mut g = Group::default();
        for _ in 0..(KEPT + 500) {
            g.push(ev(Kind::Ban, "flood"), &p, 0);
        }
        let (events, overflow) = g.take();
        assert_eq!(events.len(), KEPT);
        assert_eq!(overflow["ban"], 500);
    }
}
