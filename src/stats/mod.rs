//! Analyze stage: aggregate requests into counts. Each worker thread owns a
//! [`Stats`] and they are merged at the end, so the hot path takes no lock.

pub mod conns;
pub mod filter;
pub mod lan;
pub mod live;

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

pub use filter::Filter;

use crate::log::Request;
use crate::log::time::EpochMs;

/// Attacker-chosen keys (IPs, paths, agents) are hashed with a per-process
/// random seed so nobody can craft collisions that degrade the tables.
pub type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

fn new_map<K, V>() -> Map<K, V> {
    Map::with_hasher(foldhash::fast::RandomState::default())
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub hits: u64,
    pub bytes: u64,
}

impl Counter {
    fn add(&mut self, bytes: u64) {
        self.hits += 1;
        self.bytes += bytes;
    }

    fn merge(&mut self, other: Counter) {
        self.hits += other.hits;
        self.bytes += other.bytes;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientStats {
    pub hits: u64,
    pub bytes: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// Requests for pages (paths that are not static files): a browser
    /// fetches assets beside its pages, most bots fetch pages only.
    pub pages: u64,
    pub first: EpochMs,
    pub last: EpochMs,
}

impl ClientStats {
    fn merge(&mut self, o: ClientStats) {
        self.hits += o.hits;
        self.bytes += o.bytes;
        self.pages += o.pages;
        self.status_4xx += o.status_4xx;
        self.status_5xx += o.status_5xx;
        self.first = self.first.min(o.first);
        self.last = self.last.max(o.last);
    }
}

/// One minute of traffic: requests, bytes and requests by status class
/// (`by_class[1..=5]` for 1xx..5xx, `by_class[0]` for anything else).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Minute {
    pub hits: u64,
    pub bytes: u64,
    pub by_class: [u64; 6],
}

impl Minute {
    #[inline]
    fn add(&mut self, bytes: u64, status: u16) {
        self.hits += 1;
        self.bytes += bytes;
        self.by_class[status_class(status)] += 1;
    }

    pub fn merge(&mut self, o: Minute) {
        self.hits += o.hits;
        self.bytes += o.bytes;
        for (a, b) in self.by_class.iter_mut().zip(o.by_class) {
            *a += b;
        }
    }
}

/// 1..=5 for 1xx..5xx, 0 for anything else (status `-`, 600+).
#[inline]
pub fn status_class(status: u16) -> usize {
    match status / 100 {
        c @ 1..=5 => c as usize,
        _ => 0,
    }
}

/// Hit and byte counts per distinct byte-string key. Looking up an existing
/// key allocates nothing; only a key's first occurrence is copied.
#[derive(Debug, Clone)]
pub struct Tally {
    map: Map<Box<[u8]>, Counter>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally { map: new_map() }
    }
}

impl Tally {
    #[inline]
    pub fn add(&mut self, key: &[u8], bytes: u64) {
        match self.map.get_mut(key) {
            Some(c) => c.add(bytes),
            None => {
                self.map.insert(key.into(), Counter { hits: 1, bytes });
            }
        }
    }

    pub fn merge(&mut self, other: Tally) {
        merge_maps(&mut self.map, other.map, Counter::merge);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Counter)> {
        self.map.iter().map(|(k, v)| (&**k, *v))
    }
}

fn merge_maps<K: Eq + Hash, V>(into: &mut Map<K, V>, from: Map<K, V>, merge: impl Fn(&mut V, V)) {
    // Fold the smaller map into the larger one.
    let (mut big, small) = if into.len() >= from.len() {
        (std::mem::replace(into, new_map()), from)
    } else {
        (from, std::mem::replace(into, new_map()))
    };
    for (k, v) in small {
        match big.get_mut(&k) {
            Some(existing) => merge(existing, v),
            None => {
                big.insert(k, v);
            }
        }
    }
    *into = big;
}

/// Everything a report shows, aggregated. Memory grows with the number of
/// distinct keys (clients, paths, agents, minutes), never with lines.
#[derive(Debug, Clone)]
pub struct Stats {
    pub requests: u64,
    pub bytes: u64,
    /// Parsed lines that the filters excluded.
    pub filtered: u64,
    pub first: Option<EpochMs>,
    pub last: Option<EpochMs>,
    pub clients: Map<IpAddr, ClientStats>,
    pub statuses: Map<u16, Counter>,
    pub paths: Tally,
    pub not_found: Tally,
    pub user_agents: Tally,
    pub hosts: Tally,
    pub referrers: Tally,
    pub methods: Tally,
    /// Error logs: records per level.
    pub levels: Tally,
    /// Error logs: records per kind of message (variable parts folded).
    pub messages: Tally,
    /// Counts per minute since the epoch.
    pub minutes: Map<i64, Minute>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            requests: 0,
            bytes: 0,
            filtered: 0,
            first: None,
            last: None,
            clients: new_map(),
            statuses: new_map(),
            paths: Tally::default(),
            not_found: Tally::default(),
            user_agents: Tally::default(),
            hosts: Tally::default(),
            referrers: Tally::default(),
            methods: Tally::default(),
            levels: Tally::default(),
            messages: Tally::default(),
            minutes: new_map(),
        }
    }
}

impl Stats {
    #[inline]
    pub fn record(&mut self, r: &Request<'_>) {
        let bytes = r.bytes;
        self.requests += 1;
        self.bytes += bytes;
        self.first = Some(self.first.map_or(r.time, |f| f.min(r.time)));
        self.last = Some(self.last.map_or(r.time, |l| l.max(r.time)));

        let class = r.status / 100;
        let c = self.clients.entry(r.client).or_insert(ClientStats {
            hits: 0,
            bytes: 0,
            status_4xx: 0,
            status_5xx: 0,
            pages: 0,
            first: r.time,
            last: r.time,
        });
        c.hits += 1;
        c.bytes += bytes;
        c.status_4xx += u64::from(class == 4);
        c.status_5xx += u64::from(class == 5);
        c.pages += u64::from(!crate::log::request::is_static_path(r.path));
        c.first = c.first.min(r.time);
        c.last = c.last.max(r.time);

        self.statuses.entry(r.status).or_default().add(bytes);
        self.paths.add(r.path, bytes);
        if r.status == 404 {
            self.not_found.add(r.path, bytes);
        }
        self.user_agents.add(r.user_agent, bytes);
        if !r.host.is_empty() {
            self.hosts.add(r.host, bytes);
        }
        if !r.referer.is_empty() && r.referer != b"-" {
            self.referrers.add(r.referer, bytes);
        }
        self.methods.add(r.method, bytes);
        if !r.level.is_empty() {
            self.levels.add(r.level, bytes);
            // Error lines only, a small share of any log: the folded copy
            // is allocated per line.
            self.messages.add(&fold_message(r.message), bytes);
        }
        self.minutes
            .entry(r.time.div_euclid(60_000))
            .or_default()
            .add(bytes, r.status);
    }

    pub fn merge(&mut self, o: Stats) {
        self.requests += o.requests;
        self.bytes += o.bytes;
        self.filtered += o.filtered;
        self.first = pick_opt(self.first, o.first, i64::min);
        self.last = pick_opt(self.last, o.last, i64::max);
        let Stats {
            clients,
            statuses,
            paths,
            not_found,
            user_agents,
            hosts,
            referrers,
            methods,
            levels,
            messages,
            minutes,
            ..
        } = self;
        // The tables of clients and of paths are the big ones (tens of
        // thousands of keys each on a busy log), and the workers' last
        // merge runs after every one of them has finished, on one core:
        // merge them on two (BENCHMARKS.md, "report: the last merge on two
        // cores"). Small merges are not worth a thread.
        let on_two_threads = clients.len().min(o.clients.len()) + paths.len().min(o.paths.len())
            > PARALLEL_MERGE_KEYS;
        let merge_clients = || {
            merge_maps(clients, o.clients, ClientStats::merge);
            merge_maps(minutes, o.minutes, Minute::merge);
            merge_maps(statuses, o.statuses, Counter::merge);
        };
        let merge_tallies = || {
            paths.merge(o.paths);
            not_found.merge(o.not_found);
            user_agents.merge(o.user_agents);
            hosts.merge(o.hosts);
            referrers.merge(o.referrers);
            methods.merge(o.methods);
            levels.merge(o.levels);
            messages.merge(o.messages);
        };
        if on_two_threads {
            std::thread::scope(|scope| {
                scope.spawn(merge_clients);
                merge_tallies();
            });
        } else {
            merge_clients();
            merge_tallies();
        }
    }
}

/// Keys in the smaller of two merged tables (clients and paths) above
/// which the merge takes a second thread: a thread costs tens of
/// microseconds, a thousand keys about as much.
const PARALLEL_MERGE_KEYS: usize = 4096;

/// An error message with its variable parts folded, so that one kind of
/// message counts as one: quoted text becomes `"…"`, paths `/…`, numbers
/// `N` (`open() "/var/www/a.php" failed (2: No such file or directory)`
/// and the same for `/b.php` are one kind).
pub fn fold_message(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len().min(120));
    let mut i = 0;
    while i < message.len() && out.len() < 200 {
        let b = message[i];
        if b == b'"' {
            let end =
                memchr::memchr(b'"', &message[i + 1..]).map_or(message.len(), |k| i + 1 + k + 1);
            out.extend_from_slice("\"…\"".as_bytes());
            i = end;
        } else if b == b'/' && (i == 0 || message[i - 1] == b' ') {
            let end = message[i..]
                .iter()
                .position(|&c| c == b' ' || c == b',')
                .map_or(message.len(), |k| i + k);
            out.extend_from_slice("/…".as_bytes());
            i = end;
        } else if b.is_ascii_digit() {
            while i < message.len() && message[i].is_ascii_digit() {
                i += 1;
            }
            out.push(b'N');
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

fn pick_opt(a: Option<i64>, b: Option<i64>, pick: fn(i64, i64) -> i64) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(pick(a, b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Parser, Preset, Scratch, TrustedProxies};

    fn stats_of(lines: &[&str]) -> Stats {
        let p = Parser::preset(Preset::Combined, TrustedProxies::default());
        let mut s = Scratch::default();
        let mut st = Stats::default();
        for l in lines {
            st.record(&p.parse(l.as_bytes(), &mut s).unwrap());
        }
        st
    }

    #[test]
    fn error_messages_fold_into_kinds() {
        let a = fold_message(br#"open() "/var/www/a.php" failed (2: No such file or directory)"#);
        let b = fold_message(br#"open() "/var/www/b/c.php" failed (2: No such file or directory)"#);
        assert_eq!(a, b);
        assert_eq!(
            String::from_utf8(a).unwrap(),
            "open() \"…\" failed (N: No such file or directory)"
        );
        assert_eq!(
            fold_message(b"AH01618: user bob not found: /private"),
            "AHN: user bob not found: /…".as_bytes()
        );
    }

    const A: &str =
        r#"192.0.2.1 - - [10/Oct/2000:13:55:36 +0000] "GET /a HTTP/1.1" 200 100 "-" "ua1""#;
    const B: &str = r#"192.0.2.2 - - [10/Oct/2000:13:56:10 +0000] "GET /missing HTTP/1.1" 404 10 "http://r/" "ua2""#;
    const C: &str =
        r#"192.0.2.1 - - [10/Oct/2000:13:54:00 +0000] "POST /a HTTP/1.1" 503 1 "-" "ua1""#;

    #[test]
    fn records_every_table() {
        let st = stats_of(&[A, B, C]);
        assert_eq!((st.requests, st.bytes), (3, 111));
        let c = st.clients[&"192.0.2.1".parse::<IpAddr>().unwrap()];
        assert_eq!(
            (c.hits, c.bytes, c.status_4xx, c.status_5xx),
            (2, 101, 0, 1)
        );
        assert!(c.first < c.last);
        assert_eq!(st.statuses[&404], Counter { hits: 1, bytes: 10 });
        assert_eq!(st.not_found.len(), 1);
        assert_eq!(st.referrers.len(), 1);
        assert_eq!(st.methods.len(), 2);
        assert_eq!(st.minutes.len(), 3);
        let m = st.minutes.values().fold(Minute::default(), |mut a, m| {
            a.merge(*m);
            a
        });
        assert_eq!(m.by_class, [0, 0, 1, 0, 1, 1]);
        assert_eq!((c.pages, st.clients.len()), (2, 2));
    }

    fn assert_same(left: &Stats, all: &Stats) {
        assert_eq!(left.requests, all.requests);
        assert_eq!(left.bytes, all.bytes);
        assert_eq!((left.first, left.last), (all.first, all.last));
        assert_eq!(left.clients, all.clients);
        assert_eq!(left.statuses, all.statuses);
        let sorted = |t: &Tally| {
            let mut v: Vec<_> = t.iter().map(|(k, c)| (k.to_vec(), c)).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        for (l, a) in [
            (&left.paths, &all.paths),
            (&left.not_found, &all.not_found),
            (&left.user_agents, &all.user_agents),
            (&left.referrers, &all.referrers),
            (&left.methods, &all.methods),
        ] {
            assert_eq!(sorted(l), sorted(a));
        }
        assert_eq!(left.minutes, all.minutes);
    }

    #[test]
    fn merge_equals_sequential() {
        let all = stats_of(&[A, B, C, A]);
        let mut left = stats_of(&[A, B]);
        left.merge(stats_of(&[C, A]));
        assert_same(&left, &all);
    }

    // Tables past `PARALLEL_MERGE_KEYS` are merged on two threads: the
    // same result as one.
    #[test]
    fn a_big_merge_on_two_threads_equals_sequential() {
        let lines: Vec<String> = (0..12_000u32)
            .map(|i| {
                let status = if i % 7 == 0 { 404 } else { 200 };
                format!(
                    r#"10.{}.{}.{} - - [10/Oct/2000:13:{:02}:{:02} +0000] "GET /p/{} HTTP/1.1" {status} {} "http://r/{}" "ua{}""#,
                    i % 3,
                    (i / 3) % 250,
                    i % 200 + 1,
                    i / 600 % 60,
                    i % 60,
                    i % 5000,
                    i % 900,
                    i % 40,
                    i % 13,
                )
            })
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let all = stats_of(&refs);
        let (a, b) = refs.split_at(refs.len() / 2);
        let mut left = stats_of(a);
        let right = stats_of(b);
        assert!(
            left.clients.len().min(right.clients.len()) + left.paths.len().min(right.paths.len())
                > PARALLEL_MERGE_KEYS
        );
        left.merge(right);
        assert_same(&left, &all);
    }
}
