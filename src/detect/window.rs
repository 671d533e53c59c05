//! Per-key state of the counting rules, and the table that holds it within
//! a memory budget.
//!
//! Windows are exact sliding windows: "limit 45 in 10 s" passes 45 requests
//! in any span shorter than 10 s and fires on the 46th. A leaky bucket would
//! need less memory but smooths bursts, so it could not be exact at the
//! threshold; the ring below costs 16 bytes per counted request and only
//! for keys that are actually busy.

use std::collections::VecDeque;

use smallvec::SmallVec;

/// One counted request: its (engine) time and line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    pub t: i64,
    pub loc: u64,
}

/// The last few log lines of a key near its threshold, kept as evidence.
/// Allocated only for keys within a few requests of firing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
// Boxed on purpose: every key carries this, and a box is 8 bytes of slot
// where a bare VecDeque is 32.
#[allow(clippy::box_collection)]
pub struct Samples(Option<Box<VecDeque<String>>>);

pub const SAMPLES: usize = 3;

impl Samples {
    pub fn push(&mut self, line: String) {
        let q = self.0.get_or_insert_with(Default::default);
        // One line matched by two rules is one sample.
        if q.back() == Some(&line) {
            return;
        }
        if q.len() == SAMPLES {
            q.pop_front();
        }
        q.push_back(line);
    }

    pub fn take(&mut self) -> Vec<String> {
        self.0
            .take()
            .map(|q| q.into_iter().collect())
            .unwrap_or_default()
    }

    pub fn heap(&self) -> usize {
        self.0.as_ref().map_or(0, |q| {
            64 + q.iter().map(|s| s.capacity() + 24).sum::<usize>()
        })
    }
}

pub trait KeyState: Default {
    /// Bytes owned outside the table slot.
    fn heap(&self) -> usize;
    /// When the key last counted a request.
    fn last_active(&self) -> i64;
}

/// Exact sliding-window counter: a key's requests within the window, oldest
/// first, in a ring that holds at most `limit + 1` of them.
///
/// Requests older than the window are dropped as new ones come. (A ring of
/// the last `limit` requests, whatever their age, was exact too, but a
/// client that ever sent `limit` requests kept all of them: 3,000 stamps,
/// 48 KB, for `flood-ip-all`, for a reader sending one request a second.
/// Those rings filled the cache; BENCHMARKS.md, "Engine: rings that
/// forget".)
#[derive(Debug, Clone, Default)]
pub struct RateState {
    // Most keys see one or two requests in a window (a page and its
    // assets, one client): those fit inline, with no allocation.
    ring: SmallVec<[Stamp; 2]>,
    /// Where the oldest request sits in `ring`, and how many there are;
    /// slots past them are free. u32: the state stays 64 bytes, and a rate
    /// rule's limit is at most 1,000,000 (`compile.rs`), so `len` (at most
    /// `limit + 1`) fits.
    head: u32,
    len: u32,
    pub samples: Samples,
}

impl RateState {
    /// The slot of the `i`-th oldest request (`i` below the ring's size).
    fn slot(&self, i: usize) -> usize {
        let j = self.head as usize + i;
        // A compare, not `%`: a division per request is measurable here.
        if j >= self.ring.len() {
            j - self.ring.len()
        } else {
            j
        }
    }

    /// The `k`-th newest request counted (1 is the newest).
    fn nth_newest(&self, k: usize) -> Option<Stamp> {
        let len = self.len as usize;
        if k == 0 || k > len {
            return None;
        }
        self.ring.get(self.slot(len - k)).copied()
    }

    /// Counts a request at `s` (times never go backwards). Returns the oldest
    /// request of the window when this one is the `limit + 1`-th within it.
    pub fn hit(&mut self, s: Stamp, limit: usize, window_ms: i64) -> Option<Stamp> {
        let max = limit.saturating_add(1);
        let spilled = self.ring.spilled();
        // One borrow of the ring as a slice for the whole step: every access
        // through the `SmallVec` asks whether it spilled, and this runs for
        // most rules on every request.
        let ring = self.ring.as_mut_slice();
        let slots = ring.len();
        let wrap = |i: usize| if i >= slots { i - slots } else { i };
        let (mut head, mut len) = (self.head as usize, self.len as usize);
        // Drop the requests that left the window.
        let before = len;
        while len > 0 {
            match ring.get(head) {
                Some(old) if s.t.saturating_sub(old.t) >= window_ms => {
                    head = wrap(head + 1);
                    len -= 1;
                }
                _ => break,
            }
        }
        let shrink = len < before && spilled && len * 4 < slots;
        let mut grow = false;
        if len < slots {
            if let Some(slot) = ring.get_mut(wrap(head + len)) {
                *slot = s;
            }
            len += 1;
        } else if len >= max {
            // At `max`, the oldest gives way.
            if let Some(slot) = ring.get_mut(head) {
                *slot = s;
            }
            head = wrap(head + 1);
        } else {
            grow = true;
        }
        (self.head, self.len) = (head as u32, len as u32);
        if grow && head == 0 {
            // Full and in order (a key's first requests): the vector's own
            // growth (capacity doubles) keeps this cheap.
            self.ring.push(s);
            self.len += 1;
        } else if grow {
            self.regrow_with(s, max);
        } else if shrink {
            self.shrink();
        }
        // At `limit + 1`, the oldest kept is the `limit + 1`-th newest: the
        // first of the requests that make the count, however long a key
        // that is not reset (a rule over all clients) stays over it.
        if self.len as usize > limit {
            self.ring.get(self.head as usize).copied()
        } else {
            None
        }
    }

    /// Adds `s` to a full, wrapped ring that may still grow (below `max`):
    /// straightens it out and doubles it (growing by one slot at a time
    /// would straighten it on every request of a client speeding up).
    fn regrow_with(&mut self, s: Stamp, max: usize) {
        let len = self.len as usize;
        self.ring.rotate_left(self.head as usize);
        self.head = 0;
        self.ring
            .resize((len * 2).min(max).max(len + 1), Stamp::default());
        if let Some(slot) = self.ring.get_mut(len) {
            *slot = s;
        }
        self.len += 1;
    }

    /// Gives back most of a ring grown for a burst that is over.
    fn shrink(&mut self) {
        let kept: SmallVec<[Stamp; 2]> = (0..self.len as usize)
            .filter_map(|i| self.ring.get(self.slot(i)).copied())
            .collect();
        self.ring = kept;
        self.head = 0;
    }

    /// Counts a request at `s` for a key that `others` more requests of
    /// other nodes share. Returns the count and the oldest request here
    /// within the window when the total exceeds `limit`.
    pub fn hit_shared(
        &mut self,
        s: Stamp,
        limit: usize,
        window_ms: i64,
        others: usize,
    ) -> Option<(usize, Stamp)> {
        if let Some(first) = self.hit(s, limit, window_ms) {
            return Some((limit + 1 + others, first));
        }
        // Over the limit together exactly when the (limit + 1 - others)-th
        // newest request here is within the window: one look on every
        // request, the walk of the ring only when it fires.
        if !self.near(s.t, limit, others.saturating_sub(1), window_ms) {
            return None;
        }
        let total = self.count(s.t, window_ms) + others;
        Some((total, self.oldest(s.t, window_ms).unwrap_or(s)))
    }

    /// The requests kept, oldest first.
    fn stamps(&self) -> impl Iterator<Item = Stamp> + '_ {
        (0..self.len as usize).filter_map(|i| self.ring.get(self.slot(i)).copied())
    }

    /// The oldest request within the window ending at `now`.
    pub fn oldest(&self, now: i64, window_ms: i64) -> Option<Stamp> {
        self.stamps()
            .filter(|s| now - s.t < window_ms)
            .min_by_key(|s| (s.t, s.loc))
    }

    /// The newest request counted.
    pub fn newest(&self) -> Option<Stamp> {
        self.nth_newest(1)
    }

    /// Requests within the window ending at `now`.
    pub fn count(&self, now: i64, window_ms: i64) -> usize {
        self.stamps().filter(|s| now - s.t < window_ms).count()
    }

    /// Within `margin` requests of firing: the `limit - margin`-th newest
    /// request is still within the window.
    pub fn near(&self, now: i64, limit: usize, margin: usize, window_ms: i64) -> bool {
        let k = limit.saturating_sub(margin).max(1);
        self.nth_newest(k).is_some_and(|s| now - s.t < window_ms)
    }

    /// At the threshold: one more request within the window would fire.
    pub fn at_limit(&self, now: i64, limit: usize, window_ms: i64) -> bool {
        self.nth_newest(limit)
            .is_some_and(|s| now - s.t < window_ms)
    }

    /// Requests kept (at most `limit + 1`, none older than the window as
    /// of the last one).
    #[cfg(test)]
    pub fn kept(&self) -> usize {
        self.len as usize
    }

    pub fn reset(&mut self) {
        *self = RateState::default();
    }
}

impl KeyState for RateState {
    fn heap(&self) -> usize {
        let ring = if self.ring.spilled() {
            self.ring.capacity() * std::mem::size_of::<Stamp>()
        } else {
            0
        };
        ring + self.samples.heap()
    }

    fn last_active(&self) -> i64 {
        self.newest().map_or(i64::MIN, |s| s.t)
    }
}

/// Distinct values of a field per key within the window, oldest first.
#[derive(Debug, Clone, Default)]
pub struct DistinctState {
    // One value inline: most keys (a client, a client's network) see one.
    seen: SmallVec<[(u64, Stamp); 1]>,
    pub samples: Samples,
}

impl DistinctState {
    /// Counts `value` at `s`; returns the distinct count and the oldest
    /// contributing request when the count exceeds `limit`.
    pub fn hit(
        &mut self,
        value: u64,
        s: Stamp,
        limit: usize,
        window_ms: i64,
    ) -> Option<(usize, Stamp)> {
        let expired = self.seen.partition_point(|(_, x)| s.t - x.t >= window_ms);
        self.seen.drain(..expired);
        if let Some(i) = self.seen.iter().position(|(v, _)| *v == value) {
            self.seen.remove(i);
        }
        self.seen.push((value, s));
        if self.seen.len() > limit {
            let n = self.seen.len();
            let first = self.seen[0].1;
            // Keys without an address keep firing for each new client while
            // over the limit; never hold more than needed to know that.
            if n > limit + 1 {
                self.seen.remove(0);
            }
            return Some((n, first));
        }
        None
    }

    pub fn count(&self, now: i64, window_ms: i64) -> usize {
        self.seen
            .iter()
            .filter(|(_, s)| now - s.t < window_ms)
            .count()
    }

    pub fn near(&self, now: i64, limit: usize, margin: usize, window_ms: i64) -> bool {
        self.seen.len() + margin >= limit && self.count(now, window_ms) + margin >= limit
    }

    pub fn at_limit(&self, now: i64, limit: usize, window_ms: i64) -> bool {
        self.count(now, window_ms) >= limit
    }

    pub fn reset(&mut self) {
        *self = DistinctState::default();
    }
}

impl KeyState for DistinctState {
    fn heap(&self) -> usize {
        let seen = if self.seen.spilled() {
            self.seen.capacity() * std::mem::size_of::<(u64, Stamp)>() + 16
        } else {
            0
        };
        seen + self.samples.heap()
    }

    fn last_active(&self) -> i64 {
        self.seen.last().map_or(i64::MIN, |(_, s)| s.t)
    }
}

/// A decaying score. Decay is computed from the time of the last change on
/// every update, so a client that keeps sending requests decays too.
#[derive(Debug, Clone, Default)]
pub struct ScoreState {
    pub value: f64,
    pub at: i64,
    pub first: Stamp,
    /// (rule, points) that built the current score, most recent last.
    pub reasons: Vec<(u16, f64)>,
    pub samples: Samples,
}

impl ScoreState {
    pub fn decayed(&self, now: i64, per_ms: f64) -> f64 {
        (self.value - (now - self.at).max(0) as f64 * per_ms).max(0.0)
    }

    /// Adds points at `s`, after decay; returns the new score.
    pub fn add(&mut self, points: f64, rule: u16, s: Stamp, per_ms: f64) -> f64 {
        let v = self.decayed(s.t, per_ms);
        if v <= 0.0 {
            self.first = s;
            self.reasons.clear();
        }
        self.value = v + points;
        self.at = s.t;
        if self.reasons.len() == 8 {
            self.reasons.remove(0);
        }
        self.reasons.push((rule, points));
        self.value
    }

    pub fn reset(&mut self) {
        *self = ScoreState::default();
    }
}

impl KeyState for ScoreState {
    fn heap(&self) -> usize {
        self.reasons.capacity() * 16 + self.samples.heap()
    }

    fn last_active(&self) -> i64 {
        self.at
    }
}

/// A key: an address (or network) and a field hash; unused parts are 0.
pub type Key = (u64, u64, u64);

pub fn key(ip: u128, field: u64) -> Key {
    ((ip >> 64) as u64, ip as u64, field)
}

/// Per-key state with its memory use tracked as it changes.
///
/// Two generations: `map` holds the keys touched since the last
/// [`Table::age`], `old` those touched in the generation before and not
/// since. Aging drops `old` whole and makes `map` the new `old`: a table
/// whose keys mostly come once (most of a busy site's clients, most
/// client-and-URL pairs) forgets them without a pass that reads every
/// entry to ask its age and erases them one by one (BENCHMARKS.md,
/// "Engine: two generations instead of sweeps").
#[derive(Debug, Clone)]
pub struct Table<S> {
    map: Slots<S>,
    old: Slots<S>,
    /// Seeded (keys come from clients); one for both generations, so a key
    /// is hashed once for both.
    hasher: foldhash::fast::RandomState,
    /// Heap of the states in both generations.
    heap: usize,
}

/// `hashbrown`'s table rather than `std`'s map: a key missing from the
/// current generation is looked up in the older one with the hash already
/// computed, and removed from it without a second probe.
type Slots<S> = hashbrown::HashTable<(Key, S)>;

impl<S> Default for Table<S> {
    fn default() -> Self {
        Table {
            map: Slots::new(),
            old: Slots::new(),
            hasher: Default::default(),
            heap: 0,
        }
    }
}

impl<S: KeyState> Table<S> {
    /// Runs `f` on the state of `k`, created empty if missing.
    // Always inlined: after an unrelated change the compiler called this
    // out of line from the engine's rule loop (closure and result through
    // the stack), and replay on the dense log went from 1.6 s to 2.1 s
    // with the same instructions and cache misses, most likely because
    // one rule's misses no longer overlapped the next's (BENCHMARKS.md,
    // "an inlining lost").
    #[inline(always)]
    pub fn with<R>(&mut self, k: Key, f: impl FnOnce(&mut S) -> R) -> R {
        use std::hash::BuildHasher;
        let hasher = &self.hasher;
        let hash = hasher.hash_one(k);
        let is_k = |e: &(Key, S)| e.0 == k;
        let s = match self.map.entry(hash, is_k, |e| hasher.hash_one(e.0)) {
            hashbrown::hash_table::Entry::Occupied(e) => &mut e.into_mut().1,
            hashbrown::hash_table::Entry::Vacant(e) => {
                // A key of the last generation comes back into this one.
                let state = match self.old.find_entry(hash, is_k) {
                    Ok(found) => found.remove().0.1,
                    Err(_) => S::default(),
                };
                &mut e.insert((k, state)).into_mut().1
            }
        };
        let before = s.heap();
        let r = f(s);
        // Saturating: an accounting slip must never become a panic.
        self.heap = (self.heap + s.heap()).saturating_sub(before);
        r
    }

    #[cfg(test)]
    pub fn get(&self, k: &Key) -> Option<&S> {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(k);
        let is_k = |e: &(Key, S)| e.0 == *k;
        (self.map.find(hash, is_k))
            .or_else(|| self.old.find(hash, is_k))
            .map(|(_, s)| s)
    }

    pub fn len(&self) -> usize {
        self.map.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty() && self.old.is_empty()
    }

    /// What the table's next growth would add: hash tables double (only
    /// the current generation grows).
    pub fn growth_bytes(&self) -> usize {
        self.map.capacity() * (std::mem::size_of::<(Key, S)>() + 1)
    }

    /// Slots (allocated, used or not) plus heap.
    pub fn bytes(&self) -> usize {
        (self.map.capacity() + self.old.capacity()) * (std::mem::size_of::<(Key, S)>() + 1)
            + self.heap
    }

    /// Gives back most of a generation's slots when it holds far fewer
    /// keys than `keys`. Four times is slack enough that a table does not
    /// shrink and grow back at every sweep; a table that once held a flood
    /// and now holds a trickle would otherwise keep the flood's slots.
    fn give_back(slots: &mut Slots<S>, keys: usize, hasher: &foldhash::fast::RandomState) {
        use std::hash::BuildHasher;
        if slots.capacity() > 4 * keys + 1024 {
            slots.shrink_to(2 * keys, |e| hasher.hash_one(e.0));
        }
    }

    /// Starts a generation: drops the keys not touched since the last
    /// call, and keeps the others until the next. Returns how many went.
    ///
    /// The caller's promise: everything touched before the last call can
    /// no longer count (its window has passed), so that dropping it
    /// changes no decision.
    pub fn age(&mut self) -> usize {
        let gone = self.old.len();
        let mut freed = 0;
        for (_, s) in self.old.drain() {
            freed += s.heap();
        }
        self.heap = self.heap.saturating_sub(freed);
        // The emptied table, with its slots, holds the next generation.
        Self::give_back(&mut self.old, self.map.len(), &self.hasher);
        std::mem::swap(&mut self.map, &mut self.old);
        gone
    }

    /// Last-active times of up to `sample` unpinned entries. Hash order is
    /// seeded, so the first entries visited are a fair random sample; the
    /// eviction cutoff is estimated from it without copying every time.
    ///
    /// Each generation gives its share of the sample: the older one holds
    /// the older entries, and a sample of the current one alone would put
    /// the cutoff too late.
    pub fn last_actives(&self, keep: impl Fn(&S) -> bool, sample: usize, out: &mut Vec<i64>) {
        let total = self.len().max(1);
        let from_old = (sample as u128 * self.old.len() as u128 / total as u128) as usize;
        for (slots, n) in [(&self.map, sample - from_old), (&self.old, from_old)] {
            out.extend(
                (slots.iter())
                    .map(|(_, s)| s)
                    .filter(|s| !keep(s))
                    .take(n)
                    .map(KeyState::last_active),
            );
        }
    }

    /// Keeps the entries `keep` approves (it may change them); one pass,
    /// in memory order. Returns how many were dropped.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut S) -> bool) -> usize {
        let before = self.len();
        let mut heap = 0;
        for slots in [&mut self.map, &mut self.old] {
            slots.retain(|(_, s)| {
                let kept = keep(s);
                if kept {
                    heap += s.heap();
                }
                kept
            });
            let keys = slots.len();
            Self::give_back(slots, keys, &self.hasher);
        }
        self.heap = heap;
        before - self.len()
    }

    /// Drops state last active at or before `cutoff`, except what `keep`
    /// pins; with `shrink`, also gives back the slots freed.
    pub fn evict(&mut self, cutoff: i64, shrink: bool, keep: impl Fn(&S) -> bool) -> usize {
        use std::hash::BuildHasher;
        let gone = self.retain(|s| keep(s) || s.last_active() > cutoff);
        // Capacity is memory too, but shrinking a table that will grow back
        // soon is wasted rehashing: only the memory cap asks for it.
        if shrink {
            for slots in [&mut self.map, &mut self.old] {
                if slots.capacity() > 2 * slots.len() + 16 {
                    let keys = slots.len();
                    slots.shrink_to(keys, |e| self.hasher.hash_one(e.0));
                }
            }
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn st(t: i64) -> Stamp {
        Stamp { t, loc: t as u64 }
    }

    #[test]
    fn rate_is_exact_at_the_threshold() {
        let mut r = RateState::default();
        for i in 0..45 {
            assert_eq!(r.hit(st(i * 100), 45, 10_000), None, "request {i}");
        }
        assert!(r.at_limit(4400, 45, 10_000));
        assert_eq!(r.hit(st(9_999), 45, 10_000), Some(st(0)));
    }

    // Regression: `near` once looked at the ring's length only, so a key that
    // had ever seen `limit` requests kept copying every line as a sample.
    #[test]
    fn near_looks_at_the_window_not_the_history() {
        let mut r = RateState::default();
        for i in 0..10 {
            r.hit(st(i), 10, 1000);
        }
        assert!(r.near(9, 10, 3, 1000));
        assert!(!r.near(60_000, 10, 3, 1000));
        let mut r = RateState::default();
        for i in 0..7 {
            r.hit(st(i), 10, 1000);
        }
        assert!(r.near(7, 10, 3, 1000));
        assert!(!r.near(5000, 10, 3, 1000));
    }

    // Regression: with a limit within the sample margin (3 or less), the
    // first request of a key subtracted past zero (a panic in debug builds).
    #[test]
    fn a_small_limit_on_an_empty_key_is_not_near() {
        let r = RateState::default();
        assert!(!r.near(0, 2, SAMPLES, 1000));
        let mut r = RateState::default();
        r.hit(st(0), 2, 1000);
        assert!(r.near(1, 2, SAMPLES, 1000));
    }

    // Regression: the ring kept the last `limit` requests whatever their
    // age, so a client that ever sent 3,000 requests held 3,000 stamps
    // (48 KB) for `flood-ip-all` while it kept coming, at any pace.
    #[test]
    fn a_slow_client_after_a_burst_keeps_only_its_window() {
        let mut r = RateState::default();
        for i in 0..3000 {
            r.hit(st(i), 3000, 60_000);
        }
        assert!(r.heap() >= 3000 * 16, "{}", r.heap());
        // Then one request a second for two windows.
        for s in 0..120 {
            r.hit(st(10_000 + s * 1000), 3000, 60_000);
        }
        assert_eq!(r.kept(), 60);
        assert!(r.heap() <= 4 * 60 * 16, "{} bytes kept", r.heap());
    }

    #[test]
    fn a_request_a_window_later_does_not_count_the_first() {
        let mut r = RateState::default();
        for _ in 0..45 {
            r.hit(st(0), 45, 10_000);
        }
        assert_eq!(r.hit(st(10_000), 45, 10_000), None);
        assert_eq!(r.count(10_000, 10_000), 1);
    }

    proptest! {
        // The ring agrees with counting every request of the window; and
        // `near` is "the (limit - margin)-th newest request is within the
        // window", however far the ring has turned.
        #[test]
        fn rate_matches_brute_force(
            gaps in proptest::collection::vec(0i64..3000, 1..300),
            limit in 1usize..20,
            margin in 0usize..22,
        ) {
            let window = 5_000;
            let mut r = RateState::default();
            let mut times: Vec<i64> = Vec::new();
            let mut t = 0;
            for g in gaps {
                t += g;
                times.push(t);
                let in_window = times.iter().filter(|&&x| t - x < window).count();
                let fired = r.hit(st(t), limit, window).is_some();
                prop_assert_eq!(fired, in_window > limit);
                let n = times.len().min(limit);
                let k = limit.saturating_sub(margin).max(1);
                let near = n + margin >= limit && n >= k && t - times[times.len() - k] < window;
                prop_assert_eq!(r.near(t, limit, margin, window), near);
                if fired {
                    r.reset();
                    times.clear();
                }
            }
        }

        // A key that is never reset (a rule over all clients keeps firing
        // while over its limit): the ring agrees with a list of every
        // request on what fires, on the first request it names, and on
        // `near`, `at_limit`, `count` and `newest`; and it keeps no request
        // older than the window, and never more than `limit + 1`.
        #[test]
        fn rate_without_resets_matches_every_request_listed(
            gaps in proptest::collection::vec(0i64..2500, 1..400),
            limit in 1usize..40,
            margin in 0usize..6,
        ) {
            let window = 5_000;
            let mut r = RateState::default();
            let mut all: Vec<Stamp> = Vec::new();
            let mut t = 0;
            for (i, g) in gaps.into_iter().enumerate() {
                t += g;
                let s = Stamp { t, loc: i as u64 };
                all.push(s);
                let within: Vec<Stamp> = all.iter().copied().filter(|x| t - x.t < window).collect();
                let expected = (within.len() > limit).then(|| within[within.len() - limit - 1]);
                prop_assert_eq!(r.hit(s, limit, window), expected);
                prop_assert_eq!(r.kept(), within.len().min(limit + 1));
                prop_assert_eq!(r.newest(), Some(s));
                prop_assert_eq!(r.count(t, window), within.len().min(limit + 1));
                let later = t + 1_000;
                let n_later = all.iter().filter(|x| later - x.t < window).count();
                prop_assert_eq!(r.at_limit(later, limit, window), n_later.min(limit + 1) >= limit);
                let k = limit.saturating_sub(margin).max(1);
                prop_assert_eq!(r.near(later, limit, margin, window), n_later.min(limit + 1) >= k);
            }
        }

        // With other nodes' requests added, the ring still agrees with
        // counting every request of the window, and says how many.
        #[test]
        fn shared_rate_matches_brute_force(
            steps in proptest::collection::vec((0i64..3000, 0usize..25), 1..300),
            limit in 1usize..20,
        ) {
            let window = 5_000;
            let mut r = RateState::default();
            let mut times: Vec<i64> = Vec::new();
            let mut t = 0;
            for (gap, others) in steps {
                t += gap;
                times.push(t);
                let in_window = times.iter().filter(|&&x| t - x < window).count();
                let fired = if others == 0 {
                    r.hit(st(t), limit, window).map(|_| limit + 1)
                } else {
                    r.hit_shared(st(t), limit, window, others).map(|(n, _)| n)
                };
                prop_assert_eq!(fired.is_some(), in_window + others > limit);
                if let Some(n) = fired {
                    prop_assert_eq!(n, in_window + others);
                    r.reset();
                    times.clear();
                }
            }
        }

        #[test]
        fn distinct_matches_brute_force(vals in proptest::collection::vec((0u64..12, 0i64..2000), 1..300), limit in 1usize..8) {
            let window = 4_000;
            let mut d = DistinctState::default();
            let mut seen: Vec<(u64, i64)> = Vec::new();
            let mut t = 0;
            for (v, g) in vals {
                t += g;
                seen.push((v, t));
                let mut distinct: Vec<u64> = seen.iter().filter(|(_, x)| t - x < window).map(|(v, _)| *v).collect();
                distinct.sort_unstable();
                distinct.dedup();
                let fired = d.hit(v, st(t), limit, window).is_some();
                prop_assert_eq!(fired, distinct.len() > limit);
                if fired {
                    d.reset();
                    seen.clear();
                }
            }
        }
    }

    #[test]
    fn scores_decay_while_the_client_keeps_coming() {
        let per_ms = 3.0 / 86_400_000.0;
        let mut s = ScoreState::default();
        assert_eq!(s.add(10.0, 0, st(0), per_ms), 10.0);
        // A day later, with requests every hour in between adding nothing.
        let v = s.add(0.0, 0, st(86_400_000), per_ms);
        assert!((v - 7.0).abs() < 1e-9, "{v}");
        assert!((s.add(9.0, 0, st(86_400_000), per_ms) - 16.0).abs() < 1e-9);
        assert_eq!(s.decayed(100 * 86_400_000, per_ms), 0.0);
    }

    // A sweep after a flood gives back most of the flood's slots, so later
    // sweeps do not walk them.
    #[test]
    fn a_sweep_after_a_flood_gives_slots_back() {
        let mut t: Table<RateState> = Table::default();
        for i in 0..100_000u64 {
            t.with(key(u128::from(i), 0), |s| s.hit(st(i as i64), 10, 1000));
        }
        let flood = t.map.capacity();
        let gone = t.retain(|s| s.last_active() >= 99_900);
        assert_eq!(gone, 99_900);
        assert!(
            t.map.capacity() < flood / 50,
            "{} of {flood}",
            t.map.capacity()
        );
        assert_eq!(t.heap, heap_recounted(&t));
    }

    fn heap_recounted<S: KeyState>(t: &Table<S>) -> usize {
        (t.map.iter().chain(t.old.iter()))
            .map(|(_, s)| s.heap())
            .sum()
    }

    #[test]
    fn aging_drops_only_keys_untouched_for_a_whole_generation() {
        let mut t: Table<RateState> = Table::default();
        let (a, b) = (key(1, 0), key(2, 0));
        // Enough requests that the rings spill: their heap is accounted.
        for i in 0..50 {
            t.with(a, |s| s.hit(st(i), 100, 1000));
            t.with(b, |s| s.hit(st(i), 100, 1000));
        }
        assert!(t.heap > 0);
        assert_eq!(t.age(), 0, "the first generation only starts");
        assert_eq!(t.len(), 2);
        t.with(a, |s| s.hit(st(60), 100, 1000));
        assert_eq!(t.age(), 1);
        assert!(t.get(&a).is_some());
        assert!(t.get(&b).is_none());
        assert_eq!(t.heap, heap_recounted(&t));
        // A key of the last generation keeps its state when it comes back.
        assert_eq!(t.with(a, |s| s.count(61, 1000)), 51);
        assert_eq!(t.age(), 0);
        assert_eq!(t.age(), 1);
        assert!(t.is_empty());
        assert_eq!(t.heap, 0);
    }

    // The table that holds the next generation gives back most of a flood's
    // slots, so a trickle after a flood does not keep them.
    #[test]
    fn a_generation_after_a_flood_gives_slots_back() {
        let mut t: Table<RateState> = Table::default();
        for i in 0..100_000u64 {
            t.with(key(u128::from(i), 0), |s| s.hit(st(i as i64), 10, 1000));
        }
        let flood = t.map.capacity();
        t.age();
        for i in 0..100u64 {
            t.with(key(u128::from(i), 1), |s| s.hit(st(200_000), 10, 1000));
        }
        assert_eq!(t.age(), 100_000);
        assert!(
            t.map.capacity() < flood / 50,
            "{} of {flood}",
            t.map.capacity()
        );
        assert_eq!(t.len(), 100);
    }

    proptest! {
        /// Against a model of two sets: a key is kept exactly when touched
        /// since the last-but-one aging, and the heap accounting matches a
        /// recount whatever the order of touches, agings and sweeps.
        #[test]
        fn generations_keep_what_was_touched_since_the_last_but_one_aging(
            ops in proptest::collection::vec((0u8..3, 0u64..12, 1usize..40), 1..120),
        ) {
            let mut t: Table<RateState> = Table::default();
            let (mut now, mut old) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
            let mut clock = 0i64;
            for (op, k, n) in ops {
                match op {
                    0 | 1 => {
                        for _ in 0..n {
                            clock += 1;
                            t.with(key(u128::from(k), 0), |s| s.hit(st(clock), 30, 1_000_000));
                        }
                        old.remove(&k);
                        now.insert(k);
                    }
                    _ => {
                        prop_assert_eq!(t.age(), old.len());
                        old = std::mem::take(&mut now);
                    }
                }
                for k in 0..12u64 {
                    let kept = now.contains(&k) || old.contains(&k);
                    prop_assert_eq!(t.get(&key(u128::from(k), 0)).is_some(), kept, "key {}", k);
                }
                prop_assert_eq!(t.len(), now.len() + old.len());
                prop_assert_eq!(t.heap, heap_recounted(&t));
            }
        }
    }

    #[test]
    fn tables_track_memory_and_evict_the_oldest() {
        let mut t: Table<RateState> = Table::default();
        for i in 0..1000u64 {
            t.with(key(u128::from(i), 0), |s| s.hit(st(i as i64), 10, 1000));
        }
        let full = t.bytes();
        assert!(full > 1000 * 16);
        let gone = t.evict(499, true, |s| s.last_active() == 3);
        assert_eq!(gone, 499);
        assert_eq!(t.len(), 501);
        assert!(t.get(&key(3, 0)).is_some());
        assert!(t.bytes() < full);
    }

    // The eviction cutoff is estimated from a sample: both generations give
    // their share, or the older entries would be missing from it.
    #[test]
    fn a_sample_of_last_actives_draws_on_both_generations() {
        let mut t: Table<RateState> = Table::default();
        for i in 0..3000u64 {
            if i == 1000 {
                t.age();
            }
            t.with(key(u128::from(i), 0), |s| s.hit(st(i as i64), 10, 1000));
        }
        let mut times = Vec::new();
        t.last_actives(|_| false, 300, &mut times);
        assert_eq!(times.len(), 300);
        let older = times.iter().filter(|&&t| t < 1000).count();
        assert_eq!(older, 100);
    }
}
