//! Shared counts (`scope = "farm"` rules) through Redis: the I/O half of
//! [`crate::detect::farmcount`], which documents the algorithm and its
//! error bound.
//!
//! The follow loop hands this thread each [`FLUSH`]'s counts; the thread
//! sends them in one pipeline per [`CHUNK`] keys (one round trip for most
//! flushes) and hands back the other nodes' buckets. Redis keeps a hash
//! per key (`NAME:count:ID`), field `BUCKET:NODE`, expiring a window and
//! two buckets after its last request; buckets that left the window are
//! dropped with the key's next increments.
//!
//! The follow loop never waits for Redis: counts queue on a channel, and
//! those that queued while the previous call ran go in the next one. When
//! Redis is away they are dropped (counted in `status`): the farm's counts
//! then lack them, which can only make a farm rule later, never wrong, and
//! each node still counts its own requests exactly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{FarmSettings, connect, set_farm};
use crate::daemon::control::LoopStatus;
use crate::detect::farmcount::{Incoming, Outgoing, bucket_ms, first_bucket};

pub use crate::detect::farmcount::FLUSH;

/// Keys per pipeline: a flood of distinct clients is sent in slices, each
/// read back before the next is written, so neither side buffers a whole
/// flush.
pub const CHUNK: usize = 2000;

/// Counting's figures for `status` and the metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CountStatus {
    /// Pipelines sent (round trips).
    pub round_trips: u64,
    /// Keys sent.
    pub keys: u64,
    /// Requests sent.
    pub requests: u64,
    /// Requests not sent because Redis was away.
    pub dropped: u64,
    /// Keys Redis answered with an error (a key of another type, written
    /// by something else): counted here without the other nodes.
    pub refused_keys: u64,
    /// Milliseconds the last call took.
    pub last_ms: Option<u64>,
}

pub struct Counters {
    pub settings: FarmSettings,
    pub status: Arc<Mutex<LoopStatus>>,
    pub stop: &'static AtomicBool,
}

/// Both ends the follow loop holds.
pub struct CountLink {
    pub to_farm: Sender<Vec<Outgoing>>,
    pub from_farm: Receiver<Vec<Incoming>>,
}

impl Counters {
    pub fn start(self) -> std::io::Result<CountLink> {
        let (to_farm, inbox) = std::sync::mpsc::channel();
        let (outbox, from_farm) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("farm-count".into())
            .spawn(move || self.run(inbox, outbox))?;
        Ok(CountLink { to_farm, from_farm })
    }

    fn run(self, inbox: Receiver<Vec<Outgoing>>, outbox: Sender<Vec<Incoming>>) {
        let mut stale = Stale::default();
        let mut said_refused: Option<std::time::Instant> = None;
        let prefix = format!("{}:count:", self.settings.name);
        let mut con: Option<redis::Connection> = None;
        let mut down = false;
        while !self.stop.load(Ordering::SeqCst) {
            let mut batch = match inbox.recv_timeout(Duration::from_millis(500)) {
                Ok(b) => b,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            while let Ok(more) = inbox.try_recv() {
                batch.extend(more);
            }
            let requests: u64 = batch
                .iter()
                .flat_map(|o| o.counts.iter())
                .map(|(_, n)| u64::from(*n))
                .sum();
            let c = match con.as_mut() {
                Some(c) => c,
                None => match connect(&self.settings) {
                    Ok(c) => con.insert(c),
                    Err(e) => {
                        self.lost(&mut down, requests, &e);
                        continue;
                    }
                },
            };
            let started = std::time::Instant::now();
            let mut replies = Vec::with_capacity(batch.len());
            let mut calls = 0;
            let mut refused = Vec::new();
            let result = batch.chunks(CHUNK).try_for_each(|chunk| {
                calls += 1;
                let answer = send(c, &prefix, &self.settings.node, chunk, &mut stale)?;
                replies.extend(chunk.iter().zip(answer).map(|(o, fields)| {
                    let fields = fields.unwrap_or_else(|e| {
                        refused.push((o.id.clone(), e));
                        Vec::new()
                    });
                    let keep = keep_of(o);
                    note_stale(&mut stale, &o.id, &fields, keep);
                    Incoming {
                        rule: o.rule,
                        key: o.key,
                        others: others(&fields, &self.settings.node, keep),
                    }
                }));
                Ok::<(), redis::RedisError>(())
            });
            // Said once a minute at most: the key comes back every flush.
            if let Some((id, e)) = refused.first()
                && said_refused
                    .is_none_or(|at: std::time::Instant| at.elapsed() >= Duration::from_secs(60))
            {
                said_refused = Some(std::time::Instant::now());
                tracing::warn!(key = %format!("{prefix}{id}"), error = %e, more = refused.len() - 1,
                    "farm counts: Redis refused a key; it counts this node's requests only");
            }
            match result {
                Ok(()) => {
                    if down {
                        tracing::info!("farm counts reach Redis again");
                    }
                    down = false;
                    let took = started.elapsed().as_millis() as u64;
                    set_farm(&self.status, |f| {
                        let s = f.counts.get_or_insert_with(Default::default);
                        s.round_trips += calls;
                        s.keys += batch.len() as u64;
                        s.requests += requests;
                        s.refused_keys += refused.len() as u64;
                        s.last_ms = Some(took);
                    });
                    if outbox.send(replies).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    con = None;
                    self.lost(&mut down, requests, &e);
                }
            }
        }
    }

    fn lost(&self, down: &mut bool, requests: u64, e: &redis::RedisError) {
        if !*down {
            tracing::error!(redis = %self.settings.shown, error = %e,
                "farm counts cannot reach Redis: farm rules count this node's requests only until it is back");
        }
        *down = true;
        set_farm(&self.status, |f| {
            f.counts.get_or_insert_with(Default::default).dropped += requests;
        });
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One pipeline for a slice of keys: per key, the buckets that left the
/// window last time dropped, this node's requests added (`HINCRBY` on
/// `BUCKET:NODE`), the expiry moved on (a window and two buckets), and
/// every node's fields read back. Plain commands rather than a Lua
/// script: Redis spent a third more CPU per key running the same steps in
/// Lua (BENCHMARKS.md).
fn send(
    con: &mut redis::Connection,
    prefix: &str,
    node: &str,
    chunk: &[Outgoing],
    stale: &mut Stale,
) -> redis::RedisResult<Vec<redis::RedisResult<Fields>>> {
    let mut pipe = redis::pipe();
    // One key's error (a key of another type) is that key's alone.
    pipe.ignore_errors();
    for o in chunk {
        let key = format!("{prefix}{}", o.id);
        if let Some(old) = stale.remove(&o.id) {
            pipe.hdel(&key, old).ignore();
        }
        for (bucket, n) in &o.counts {
            pipe.hincr(&key, format!("{bucket}:{node}"), *n).ignore();
        }
        pipe.pexpire(&key, o.window_ms + 2 * bucket_ms(o.window_ms))
            .ignore();
        pipe.hgetall(&key);
    }
    pipe.query(con)
}

/// A key's fields as Redis answers them: `BUCKET:NODE` and requests, as
/// bytes (whatever wrote them, nothing here fails to read them).
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A field's bucket, if it is `BUCKET:NODE`.
fn bucket_of(field: &[u8]) -> Option<(i64, &[u8])> {
    let colon = field.iter().position(|&b| b == b':')?;
    let bucket = std::str::from_utf8(&field[..colon]).ok()?.parse().ok()?;
    Some((bucket, &field[colon + 1..]))
}

/// Fields of buckets that left the window, per key id, dropped with the
/// key's next increments (a key sent no more expires whole).
type Stale = std::collections::HashMap<Arc<str>, Vec<Vec<u8>>, foldhash::fast::RandomState>;

/// Keys with stale fields remembered, at most: past it they are forgotten
/// (their keys expire anyway).
const STALE_MAX: usize = 200_000;

/// Notes the fields of buckets before `keep` for the key's next call.
fn note_stale(stale: &mut Stale, id: &Arc<str>, fields: &[(Vec<u8>, Vec<u8>)], keep: i64) {
    let old: Vec<Vec<u8>> = fields
        .iter()
        .filter(|(f, _)| bucket_of(f).is_none_or(|(b, _)| b < keep))
        .map(|(f, _)| f.clone())
        .collect();
    if old.is_empty() {
        return;
    }
    if stale.len() >= STALE_MAX {
        stale.clear();
    }
    stale.insert(id.clone(), old);
}

/// The first bucket still in the window: the newest bucket sent decides.
fn keep_of(o: &Outgoing) -> i64 {
    let b = bucket_ms(o.window_ms);
    let newest = o.counts.iter().map(|(b, _)| *b).max().unwrap_or(0);
    first_bucket((newest + 1) * b - 1, o.window_ms)
}

/// The other nodes' requests per bucket from a key's fields (`BUCKET:NODE`,
/// requests), buckets from `keep` on, summed per bucket in bucket order.
/// Anything odd (a hand-edited key) is left out, never a panic; a
/// negative count counts nothing.
fn others(fields: &[(Vec<u8>, Vec<u8>)], node: &str, keep: i64) -> Vec<(i64, u32)> {
    let mut sums: Vec<(i64, u32)> = Vec::new();
    for (field, n) in fields {
        let Some((bucket, from)) = bucket_of(field) else {
            continue;
        };
        if from == node.as_bytes() || bucket < keep {
            continue;
        }
        let Some(n) = std::str::from_utf8(n)
            .ok()
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        let n = u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        match sums.iter_mut().find(|(b, _)| *b == bucket) {
            Some((_, sum)) => *sum = sum.saturating_add(n),
            None => sums.push((bucket, n)),
        }
    }
    sums.sort_unstable();
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_that_left_the_window_are_dropped_next_time() {
        let id: Arc<str> = "flood:10:192.0.2.7".into();
        let fields: Fields = [("4:web1", 2), ("5:web2", 1), ("junk", 1)]
            .iter()
            .map(|(f, n)| (f.as_bytes().to_vec(), n.to_string().into_bytes()))
            .collect();
        let mut stale = Stale::default();
        note_stale(&mut stale, &id, &fields, 5);
        // Every node's old buckets, and what no node could have written.
        assert_eq!(stale[&id], vec![b"4:web1".to_vec(), b"junk".to_vec()]);
        note_stale(&mut stale, &id, &fields[1..2], 5);
        assert_eq!(stale[&id].len(), 2, "nothing stale: the last note stays");
    }

    #[test]
    fn the_other_nodes_fields_are_summed_by_bucket() {
        let f = |v: &[(&str, i64)]| -> Fields {
            v.iter()
                .map(|(k, n)| (k.as_bytes().to_vec(), n.to_string().into_bytes()))
                .collect()
        };
        let fields = f(&[
            ("6:web2", 1),
            ("5:web1", 9),
            ("5:web2", 3),
            ("5:web3", 2),
            ("4:web2", 7),
        ]);
        assert_eq!(
            others(&fields, "web1", 5),
            vec![(5, 5), (6, 1)],
            "its own and older buckets left out"
        );
        // A node name holding ':' is the part after the first one.
        assert_eq!(others(&f(&[("5:a:b", 2)]), "a:b", 0), vec![]);
        // Hand-edited or damaged fields: skipped, clamped, never a panic.
        let mut odd = f(&[
            ("x:web2", 4),
            ("web2", 4),
            ("5:web2", -1),
            ("6:web2", 1 << 40),
        ]);
        odd.push((b"7:web2".to_vec(), b"many".to_vec()));
        odd.push((vec![0xff, b':', b'w'], b"1".to_vec()));
        assert_eq!(others(&odd, "web1", 0), vec![(5, 0), (6, u32::MAX)]);
    }
}
