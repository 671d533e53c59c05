//! Counting across a web farm (`scope = "farm"` rate rules): the pure half.
//! The daemon's farm component moves the numbers through Redis; replay
//! never shares counts, so there a farm rule counts like a local one.
//!
//! # The algorithm: exact here, bucketed for the others
//!
//! Each node keeps its own exact sliding window for the key (the engine's
//! ordinary [`super::window::RateState`]), and adds what the other nodes
//! counted, as they last reported it. The others' requests are kept in
//! Redis per time bucket of `B = max(1 s, window / 10)` and per node (a
//! hash per key, field `BUCKET:NODE`), so a node can leave its own out and
//! count only buckets lying wholly inside the window.
//!
//! Every [`FLUSH`] the daemon sends each touched key's new requests (per
//! bucket) in one pipeline per node (per 2,000 keys), which adds them and
//! reads every node's buckets back: Redis sees one round trip per node per
//! 100 ms whatever the request rate, and work in proportion to the
//! clients seen in those 100 ms, not to their requests.
//!
//! A sliding-window approximation or GCRA would keep one number per key,
//! but either can count a request from before the window (the
//! approximation assumes the previous window was uniform; GCRA smooths a
//! burst into a rate), so either can ban a client that never exceeded the
//! limit. Whole buckets can only leave requests out, never add one:
//!
//! **Error bound.** With `W` the window, `B` its bucket, and `δ` the time
//! another node takes to report a request (its log read, at most one
//! [`FLUSH`], one round trip), the count a node uses at time `t` is
//!
//! ```text
//! true count in (t − W + B, t − δ]  ≤  estimate(t)  ≤  true count in (t − W, t]
//! ```
//!
//! (this node's own requests count up to `t`; node clocks in step, as NTP
//! keeps them). So a farm rule never fires on
//! a client that stayed within its limit in every window, and fires at the
//! latest when the client exceeds the limit within `W − B − δ` (9 s and a
//! fraction for a 10 s window). Increments lost while Redis is unreachable
//! only make the estimate smaller: the node then counts what it sees, as a
//! local rule would. `farm_counts_stay_within_the_bound` in the engine's
//! tests checks both sides on random traffic over several nodes.

use std::sync::Arc;

use smallvec::SmallVec;

use super::addr::Subject;
use super::window::Key;
use crate::stats::Map;

/// How often the daemon exchanges counts with the farm.
pub const FLUSH: std::time::Duration = std::time::Duration::from_millis(100);

/// The bucket of a window: a tenth of it, and never under the log's own
/// resolution of one second.
pub fn bucket_ms(window_ms: i64) -> i64 {
    (window_ms / 10).max(1000)
}

/// Buckets lying wholly within `(now - window, now]`: the first one, and
/// every later one.
pub fn first_bucket(now: i64, window_ms: i64) -> i64 {
    let b = bucket_ms(window_ms);
    (now - window_ms).div_euclid(b) + 1
}

/// Requests counted per bucket: (bucket, requests).
pub type Buckets = SmallVec<[(i64, u32); 2]>;

/// One key's requests for the farm.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub rule: u16,
    pub key: Key,
    /// Names the key across nodes: the rule, its window, the subject and
    /// the keyed field's text ("flood:10:192.0.2.7").
    pub id: Arc<str>,
    pub window_ms: i64,
    /// New requests by bucket (empty: only read the others).
    pub counts: Buckets,
}

/// What the farm answered for one key: the other nodes' buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub rule: u16,
    pub key: Key,
    pub others: Vec<(i64, u32)>,
}

#[derive(Debug, Clone)]
struct Shared {
    pending: Buckets,
    others: SmallVec<[(i64, u32); 4]>,
    id: Arc<str>,
    subject: Subject,
    last: i64,
}

/// The engine's side of shared counting.
#[derive(Debug, Default)]
pub struct FarmCounts {
    keys: Map<(u16, Key), Shared>,
    /// Keys with requests not yet sent.
    dirty: Vec<(u16, Key)>,
    /// The ids' bytes, kept as keys come and go: memory accounting runs
    /// often and must not walk every key.
    id_bytes: usize,
}

impl FarmCounts {
    /// Counts one request of a farm rule's key at `now` and returns what
    /// the other nodes counted within the window. `id` names the key for
    /// the farm; it runs only for a key not seen before.
    pub fn count(
        &mut self,
        rule: u16,
        key: Key,
        subject: Subject,
        now: i64,
        window_ms: i64,
        id: impl FnOnce() -> String,
    ) -> usize {
        let id_bytes = &mut self.id_bytes;
        let entry = self.keys.entry((rule, key)).or_insert_with(|| {
            let id: Arc<str> = id().into();
            *id_bytes += id.len();
            Shared {
                pending: Buckets::new(),
                others: SmallVec::new(),
                id,
                subject,
                last: now,
            }
        });
        entry.last = now;
        let bucket = now.div_euclid(bucket_ms(window_ms));
        if entry.pending.is_empty() {
            self.dirty.push((rule, key));
        }
        match entry.pending.last_mut() {
            Some((b, n)) if *b == bucket => *n = n.saturating_add(1),
            _ => entry.pending.push((bucket, 1)),
        }
        Self::sum(&entry.others, first_bucket(now, window_ms))
    }

    fn sum(others: &[(i64, u32)], from: i64) -> usize {
        others
            .iter()
            .filter(|(b, _)| *b >= from)
            .map(|(_, n)| *n as usize)
            .sum()
    }

    /// What the other nodes counted for a key within the window at `now`.
    pub fn others(&self, rule: u16, key: Key, now: i64, window_ms: i64) -> usize {
        self.keys
            .get(&(rule, key))
            .map_or(0, |s| Self::sum(&s.others, first_bucket(now, window_ms)))
    }

    pub fn subject(&self, rule: u16, key: Key) -> Option<Subject> {
        self.keys.get(&(rule, key)).map(|s| s.subject)
    }

    /// The requests counted since the last call, per key.
    pub fn take(&mut self, window_of: impl Fn(u16) -> i64) -> Vec<Outgoing> {
        let mut out = Vec::with_capacity(self.dirty.len());
        for (rule, key) in self.dirty.drain(..) {
            if let Some(s) = self.keys.get_mut(&(rule, key)) {
                out.push(Outgoing {
                    rule,
                    key,
                    id: s.id.clone(),
                    window_ms: window_of(rule),
                    counts: std::mem::take(&mut s.pending),
                });
            }
        }
        out
    }

    /// Takes in the other nodes' buckets for a key; whether the other
    /// nodes counted any (a key only this node sees needs no check).
    pub fn update(&mut self, reply: &Incoming) -> bool {
        match self.keys.get_mut(&(reply.rule, reply.key)) {
            Some(s) if !(s.others.is_empty() && reply.others.is_empty()) => {
                s.others = reply.others.iter().copied().collect();
                !s.others.is_empty()
            }
            _ => false,
        }
    }

    /// A decision was made on the key: what the others counted is spent.
    pub fn spent(&mut self, rule: u16, key: Key) {
        if let Some(s) = self.keys.get_mut(&(rule, key)) {
            s.others.clear();
        }
    }

    /// Drops keys quiet for longer than their window (and a bucket).
    pub fn sweep(&mut self, now: i64, window_of: impl Fn(u16) -> i64) {
        let id_bytes = &mut self.id_bytes;
        self.keys.retain(|(rule, _), s| {
            let w = window_of(*rule);
            let keep = !s.pending.is_empty() || now.saturating_sub(s.last) < w + bucket_ms(w);
            if !keep {
                *id_bytes -= s.id.len();
            }
            keep
        });
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Bytes held, roughly: slots, the ids, the buckets that spilled.
    pub fn bytes(&self) -> usize {
        self.keys.capacity() * (std::mem::size_of::<((u16, Key), Shared)>() + 1)
            + self.id_bytes
            + self.dirty.capacity() * std::mem::size_of::<(u16, Key)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_a_tenth_of_the_window_and_never_under_a_second() {
        assert_eq!(bucket_ms(10_000), 1000);
        assert_eq!(bucket_ms(60_000), 6000);
        assert_eq!(bucket_ms(3000), 1000);
    }

    #[test]
    fn only_buckets_wholly_inside_the_window_count() {
        // Window (500, 10500]: bucket 0 ([0, 1000)) sticks out, 1..=10 do not.
        assert_eq!(first_bucket(10_500, 10_000), 1);
        // Window (0, 10000]: bucket 0 starts at 0, outside.
        assert_eq!(first_bucket(10_000, 10_000), 1);
        assert_eq!(first_bucket(10_999, 10_000), 1);
        assert_eq!(first_bucket(11_000, 10_000), 2);
        // Before the epoch (tests use small times): still whole buckets.
        assert_eq!(first_bucket(0, 10_000), -9);
    }

    #[test]
    fn requests_are_sent_once_by_bucket_and_the_others_are_summed() {
        let mut f = FarmCounts::default();
        let k = (0, 7, 0);
        let s: Subject = "192.0.2.7".parse().unwrap();
        for t in [1000, 1200, 2100] {
            assert_eq!(f.count(0, k, s, t, 10_000, || "r:10:192.0.2.7".into()), 0);
        }
        let out = f.take(|_| 10_000);
        assert_eq!(out.len(), 1);
        assert_eq!(&*out[0].id, "r:10:192.0.2.7");
        assert_eq!(out[0].counts.as_slice(), &[(1, 2), (2, 1)]);
        assert!(f.take(|_| 10_000).is_empty(), "sent once");
        let nothing = Incoming {
            rule: 0,
            key: k,
            others: vec![],
        };
        assert!(!f.update(&nothing), "no other node: nothing to check");
        assert!(f.update(&Incoming {
            rule: 0,
            key: k,
            others: vec![(1, 5), (3, 4)],
        }));
        assert_eq!(f.others(0, k, 3000, 10_000), 9);
        // At 11.5 s bucket 1 ([1, 2) s) has left the window.
        assert_eq!(f.others(0, k, 11_500, 10_000), 4);
        f.spent(0, k);
        assert_eq!(f.others(0, k, 3000, 10_000), 0);
        let before = f.bytes();
        f.sweep(30_000, |_| 10_000);
        assert!(f.is_empty());
        // The id's bytes are given back (kept as a running total).
        assert_eq!(before - f.bytes(), "r:10:192.0.2.7".len());
    }
}
