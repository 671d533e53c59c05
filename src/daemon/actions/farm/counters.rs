//! Shared counts (`scope = "farm"` rules) through Redis: the I/O half of
//! [`crate::detect::farmcount`], which documents the algorithm and its
//! error bound.
//!
//! The follow loop hands this thread each [`FLUSH`]'s counts; the thread
//! sends them in one script call per [`CHUNK`] keys (one round trip for
//! most flushes) and hands back the other nodes' buckets. Redis keeps a
//! hash per key (`NAME:count:ID`), field `BUCKET:NODE`, expiring a window
//! and a bucket after its last request; the script drops buckets that
//! left the window as it goes.
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

/// Keys per script call: a call blocks Redis while it runs, so a flood of
/// distinct clients is sent in slices of a few milliseconds each.
pub const CHUNK: usize = 2000;

/// Adds this node's requests to each key and answers with the other
/// nodes' buckets still in the window, dropping older ones.
///
/// ARGV: node, then per key: expiry (ms), first bucket kept, pairs, and
/// `pairs` times (bucket, requests). Answer per key: a flat list of
/// (bucket, requests) of the other nodes, summed per bucket.
const SCRIPT: &str = r#"
local node = ARGV[1]
local a = 2
local out = {}
for i, key in ipairs(KEYS) do
  local ttl = ARGV[a]
  local keep = tonumber(ARGV[a + 1])
  local pairs_n = tonumber(ARGV[a + 2])
  a = a + 3
  local fresh = false
  for _ = 1, pairs_n do
    local n = tonumber(ARGV[a + 1])
    if redis.call('HINCRBY', key, ARGV[a] .. ':' .. node, n) == n then
      fresh = true
    end
    a = a + 2
  end
  -- A new bucket moves the expiry on; a bucket's later requests need
  -- not (it covers the window and two buckets from the bucket's start).
  if fresh then
    redis.call('PEXPIRE', key, ttl)
  end
  local all = redis.call('HGETALL', key)
  local sums = {}
  local order = {}
  for j = 1, #all, 2 do
    local field = all[j]
    local sep = string.find(field, ':', 1, true)
    local bucket = sep and tonumber(string.sub(field, 1, sep - 1))
    if not bucket or bucket < keep then
      redis.call('HDEL', key, field)
    elseif string.sub(field, sep + 1) ~= node then
      if not sums[bucket] then
        sums[bucket] = 0
        order[#order + 1] = bucket
      end
      sums[bucket] = sums[bucket] + tonumber(all[j + 1])
    end
  end
  local r = {}
  for _, b in ipairs(order) do
    r[#r + 1] = b
    r[#r + 1] = sums[b]
  end
  out[i] = r
end
return out
"#;

/// Counting's figures for `status` and the metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CountStatus {
    /// Script calls made (round trips).
    pub round_trips: u64,
    /// Keys sent.
    pub keys: u64,
    /// Requests sent.
    pub requests: u64,
    /// Requests not sent because Redis was away.
    pub dropped: u64,
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
        let script = redis::Script::new(SCRIPT);
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
            let result = batch.chunks(CHUNK).try_for_each(|chunk| {
                calls += 1;
                let answer = invoke(&script, c, &prefix, &self.settings.node, chunk)?;
                replies.extend(chunk.iter().zip(answer).map(|(o, flat)| Incoming {
                    rule: o.rule,
                    key: o.key,
                    others: pairs(&flat),
                }));
                Ok::<(), redis::RedisError>(())
            });
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

/// One script call for a slice of keys.
fn invoke(
    script: &redis::Script,
    con: &mut redis::Connection,
    prefix: &str,
    node: &str,
    chunk: &[Outgoing],
) -> redis::RedisResult<Vec<Vec<i64>>> {
    let mut call = script.prepare_invoke();
    call.arg(node);
    for o in chunk {
        let b = bucket_ms(o.window_ms);
        // The newest bucket sent decides what is still in the window.
        let newest = o.counts.iter().map(|(b, _)| *b).max().unwrap_or(0);
        let keep = first_bucket((newest + 1) * b - 1, o.window_ms);
        call.key(format!("{prefix}{}", o.id))
            .arg(o.window_ms + 2 * b)
            .arg(keep)
            .arg(o.counts.len());
        for (bucket, n) in &o.counts {
            call.arg(*bucket).arg(*n);
        }
    }
    call.invoke(con)
}

/// (bucket, requests) pairs from the script's flat answer; anything odd
/// is left out, never a panic.
fn pairs(flat: &[i64]) -> Vec<(i64, u32)> {
    flat.chunks_exact(2)
        .map(|p| (p[0], u32::try_from(p[1].max(0)).unwrap_or(u32::MAX)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_as_pairs() {
        assert_eq!(pairs(&[5, 3, 6, 1]), vec![(5, 3), (6, 1)]);
        assert_eq!(pairs(&[5, 3, 6]), vec![(5, 3)], "a cut answer");
        // A negative count (a hand-edited key) counts nothing.
        assert_eq!(pairs(&[5, -1]), vec![(5, 0)]);
        assert_eq!(pairs(&[5, 1 << 40]), vec![(5, u32::MAX)]);
    }
}
