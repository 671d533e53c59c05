//! Rolling statistics for a live view: per client, requests in the last 1, 5
//! and 15 minutes (like load averages) and right now; for the site, requests
//! and bytes per second, the status mix, and the top paths, hosts and user
//! agents of the last minutes. Memory stays bounded: clients idle for 15
//! minutes expire, and each per-minute table of paths/hosts/agents is
//! capped (the excess counts as "(other)").
//!
//! Time is log time: [`LiveStats::record`] is fed requests, and
//! [`LiveStats::snapshot`] is asked at "now", which the caller derives from
//! the newest log time and the wall clock.

use super::Map;
use crate::detect::addr::{Subject, from_bits, to_bits};
use crate::log::Request;

/// Seconds of per-second site history.
pub const SECONDS: usize = 900;
const MINUTES: usize = 15;
/// Seconds that make "now" for per-client rates.
const NOW_WINDOW: i64 = 10;
/// Seconds of per-client history: a client's "1 min" is its last 60
/// seconds, counted the way the header counts the site's, so the two
/// agree (calendar minutes did not, across a minute boundary).
const CLIENT_SECONDS: i64 = 60;
/// Distinct keys kept per minute per table.
const MAX_KEYS_PER_MINUTE: usize = 20_000;
const OTHER: &[u8] = b"(other)";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SecondBucket {
    sec: i64,
    requests: u32,
    bytes: u64,
    /// By status class: 1xx..5xx, then anything else.
    status: [u32; 6],
}

fn status_class(status: u16) -> usize {
    match status / 100 {
        c @ 1..=5 => c as usize - 1,
        _ => 5,
    }
}

/// One client's recent activity.
#[derive(Debug, Clone)]
struct ClientLive {
    /// Requests per minute, ring indexed by minute % 15, valid back from `minute`.
    minutes: [u32; MINUTES],
    minute: i64,
    /// Requests per second for the last `CLIENT_SECONDS` seconds.
    seconds: [u16; CLIENT_SECONDS as usize],
    second: i64,
    bytes: u64,
    /// Most requested paths (space-saving sketch of 4).
    paths: Vec<(Box<[u8]>, u32)>,
    agent: Box<[u8]>,
}

impl Default for ClientLive {
    // Arrays longer than 32 have no derived Default.
    fn default() -> Self {
        ClientLive {
            minutes: [0; MINUTES],
            minute: 0,
            seconds: [0; CLIENT_SECONDS as usize],
            second: 0,
            bytes: 0,
            paths: Vec::new(),
            agent: Box::default(),
        }
    }
}

fn shift<const N: usize, T: Copy + Default>(ring: &mut [T; N], from: i64, to: i64) {
    let steps = (to - from).clamp(0, N as i64);
    for k in 1..=steps {
        ring[((from + k).rem_euclid(N as i64)) as usize] = T::default();
    }
}

impl ClientLive {
    fn advance(&mut self, sec: i64) {
        let minute = sec.div_euclid(60);
        if minute > self.minute {
            shift(&mut self.minutes, self.minute, minute);
            self.minute = minute;
        }
        if sec > self.second {
            shift(&mut self.seconds, self.second, sec);
            self.second = sec;
        }
    }

    fn record(&mut self, sec: i64, r: &Request<'_>) {
        self.advance(sec);
        let m = &mut self.minutes[(self.minute.rem_euclid(MINUTES as i64)) as usize];
        *m = m.saturating_add(1);
        let s = &mut self.seconds[(self.second.rem_euclid(CLIENT_SECONDS)) as usize];
        *s = s.saturating_add(1);
        self.bytes += r.bytes;
        // Space-saving: a new path replaces the least counted one, keeping
        // its count, so a path requested often cannot be missed.
        if let Some((_, n)) = self.paths.iter_mut().find(|(p, _)| **p == *r.path) {
            *n += 1;
        } else if self.paths.len() < 4 {
            self.paths.push((r.path.into(), 1));
        } else if let Some(min) = self.paths.iter_mut().min_by_key(|(_, n)| *n) {
            *min = (r.path.into(), min.1 + 1);
        }
        if *self.agent != *r.user_agent {
            self.agent = r.user_agent.into();
        }
    }

    /// Requests in the last `n` minutes (the current one included).
    fn last_minutes(&self, now_minute: i64, n: usize) -> u64 {
        (0..n as i64)
            .map(|k| now_minute - k)
            .filter(|m| *m <= self.minute && self.minute - m < MINUTES as i64)
            .map(|m| u64::from(self.minutes[(m.rem_euclid(MINUTES as i64)) as usize]))
            .sum()
    }

    /// Requests in the `n` seconds up to `now_sec` (at most
    /// `CLIENT_SECONDS`).
    fn last_seconds(&self, now_sec: i64, n: i64) -> u64 {
        (0..n.min(CLIENT_SECONDS))
            .map(|k| now_sec - k)
            .filter(|s| *s <= self.second && self.second - s < CLIENT_SECONDS)
            .map(|s| u64::from(self.seconds[(s.rem_euclid(CLIENT_SECONDS)) as usize]))
            .sum()
    }

    fn per_second_now(&self, now_sec: i64) -> f64 {
        self.last_seconds(now_sec, NOW_WINDOW) as f64 / NOW_WINDOW as f64
    }
}

/// Key counts for one minute, capped.
#[derive(Debug, Clone, Default)]
struct MinuteTally {
    minute: i64,
    counts: Map<Box<[u8]>, u64>,
}

impl MinuteTally {
    fn add(&mut self, key: &[u8]) {
        if let Some(n) = self.counts.get_mut(key) {
            *n += 1;
        } else if self.counts.len() < MAX_KEYS_PER_MINUTE {
            self.counts.insert(key.into(), 1);
        } else {
            *self.counts.entry(OTHER.into()).or_insert(0) += 1;
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Tally5 {
    minutes: Vec<MinuteTally>,
}

impl Tally5 {
    fn add(&mut self, minute: i64, key: &[u8]) {
        if self.minutes.last().is_none_or(|m| m.minute != minute) {
            self.minutes.retain(|m| minute - m.minute < 5);
            self.minutes.push(MinuteTally {
                minute,
                counts: Map::default(),
            });
        }
        if let Some(m) = self.minutes.last_mut() {
            m.add(key);
        }
    }

    /// The `n` most counted keys of the last 5 minutes that contain
    /// `filter` (lower case; empty for all), filtered before the cut.
    fn top(&self, now_minute: i64, n: usize, filter: &str) -> Vec<(String, u64)> {
        let mut all: Map<&[u8], u64> = Map::default();
        let mut lower = Vec::new();
        for m in self.minutes.iter().filter(|m| now_minute - m.minute < 5) {
            for (k, v) in &m.counts {
                if !filter.is_empty() {
                    lower.clear();
                    lower.extend(k.iter().map(u8::to_ascii_lowercase));
                    if memchr::memmem::find(&lower, filter.as_bytes()).is_none() {
                        continue;
                    }
                }
                *all.entry(&**k).or_insert(0) += v;
            }
        }
        let mut v: Vec<(&[u8], u64)> = all.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.truncate(n);
        v.into_iter()
            .map(|(k, n)| (crate::log::parse::escape_for_display(k), n))
            .collect()
    }
}

/// Log time "now": the newest log second, moved on by the wall clock while
/// nothing new arrives, so rates fall to zero when traffic stops.
#[derive(Debug, Clone)]
pub struct LiveClock {
    newest: i64,
    seen_at: std::time::Instant,
}

impl Default for LiveClock {
    fn default() -> Self {
        LiveClock {
            newest: i64::MIN,
            seen_at: std::time::Instant::now(),
        }
    }
}

impl LiveClock {
    pub fn now(&mut self, newest: i64) -> i64 {
        if newest > self.newest {
            self.newest = newest;
            self.seen_at = std::time::Instant::now();
        }
        self.newest + self.seen_at.elapsed().as_secs() as i64
    }
}

/// A client row of a snapshot.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClientRow {
    /// An address, or a network when grouped.
    pub client: String,
    pub per_second: f64,
    pub last_1m: u64,
    pub last_5m: u64,
    pub last_15m: u64,
    /// Share of the site's requests in the last 5 minutes.
    pub percent: f64,
    pub top_path: String,
    pub user_agent: String,
}

/// What a live view shows at one moment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Snapshot {
    pub now: i64,
    /// Site requests per second over the last `NOW_WINDOW` seconds.
    pub per_second: f64,
    /// Requests in each of the last 60 seconds, oldest first (a sparkline).
    pub history: Vec<u64>,
    pub last_1m: u64,
    pub last_5m: u64,
    pub last_15m: u64,
    /// Bytes per second over the last minute.
    pub bytes_per_second: f64,
    /// Requests by status class over the last 5 minutes: 1xx..5xx, other.
    pub status: [u64; 6],
    pub clients: Vec<ClientRow>,
    pub paths: Vec<(String, u64)>,
    pub hosts: Vec<(String, u64)>,
    pub user_agents: Vec<(String, u64)>,
    pub statuses: Vec<(u16, u64)>,
    pub active_clients: usize,
    /// Clients dropped (least recently seen first) to stay under the
    /// memory cap, since the start.
    pub evicted_clients: u64,
}

/// How to sort and group client rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    #[default]
    Now,
    Last1m,
    Last5m,
    Last15m,
}

#[derive(Debug, Clone, Default)]
pub struct View {
    pub sort: SortBy,
    /// Group clients by /24 (IPv4) and /64 (IPv6).
    pub group: bool,
    /// Only clients, paths and agents containing this text.
    pub filter: String,
    pub rows: usize,
}

/// What one client costs, estimated: its record, its slot in the table,
/// and typical path and User-Agent text. Conservative, so the cap holds.
const CLIENT_BYTES: u64 = 400;

#[derive(Debug, Clone, Default)]
pub struct LiveStats {
    seconds: Vec<SecondBucket>,
    newest: i64,
    clients: Map<u128, ClientLive>,
    /// Most clients kept (from the memory cap); 0 for no cap.
    max_clients: usize,
    evicted: u64,
    paths: Tally5,
    hosts: Tally5,
    agents: Tally5,
    statuses: Tally5,
    last_expiry: i64,
}

impl LiveStats {
    pub fn new() -> Self {
        LiveStats {
            seconds: vec![SecondBucket::default(); SECONDS],
            ..LiveStats::default()
        }
    }

    /// Live statistics whose per-client state stays under `bytes` (the
    /// rule engine's `[state] memory_cap`): past it, the least recently
    /// seen clients are dropped and counted. A flood of millions of random
    /// IPv6 addresses otherwise grows without bound.
    pub fn with_memory_cap(bytes: u64) -> Self {
        LiveStats {
            max_clients: (bytes / CLIENT_BYTES).max(1000) as usize,
            ..LiveStats::new()
        }
    }

    /// Drops the tenth of clients seen least recently: one scan per tenth
    /// of the cap in new clients, so eviction costs O(1) per request.
    fn evict(&mut self) {
        let keep = self.max_clients - self.max_clients / 10;
        let mut seen: Vec<i64> = self.clients.values().map(|c| c.second).collect();
        let cut = seen.len() - keep;
        let (_, &mut cutoff, _) = seen.select_nth_unstable(cut);
        let before = self.clients.len();
        self.clients.retain(|_, c| c.second > cutoff);
        // Ties at the cutoff all went; whatever went is counted.
        self.evicted += (before - self.clients.len()) as u64;
    }

    /// Counts one request, at its log time.
    pub fn record(&mut self, r: &Request<'_>) {
        if self.seconds.is_empty() {
            self.seconds = vec![SecondBucket::default(); SECONDS];
        }
        let sec = r.time.div_euclid(1000);
        self.newest = self.newest.max(sec);
        let b = &mut self.seconds[sec.rem_euclid(SECONDS as i64) as usize];
        if b.sec != sec {
            if sec < b.sec {
                // Older than the ring holds: too late to count.
                return;
            }
            *b = SecondBucket {
                sec,
                ..SecondBucket::default()
            };
        }
        b.requests += 1;
        b.bytes += r.bytes;
        b.status[status_class(r.status)] += 1;
        let minute = sec.div_euclid(60);
        self.clients
            .entry(to_bits(r.client))
            .or_default()
            .record(sec, r);
        if self.max_clients > 0 && self.clients.len() > self.max_clients {
            self.evict();
        }
        self.paths.add(minute, r.path);
        if !r.host.is_empty() {
            self.hosts.add(minute, r.host);
        }
        self.agents.add(minute, r.user_agent);
        let mut code = [0u8; 3];
        let s = r.status.min(999);
        code[0] = b'0' + (s / 100) as u8;
        code[1] = b'0' + (s / 10 % 10) as u8;
        code[2] = b'0' + (s % 10) as u8;
        self.statuses.add(minute, &code);
        if sec - self.last_expiry >= 60 {
            self.last_expiry = sec;
            self.clients
                .retain(|_, c| sec - c.second < (MINUTES as i64) * 60);
        }
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// The newest log second seen.
    pub fn newest(&self) -> i64 {
        self.newest
    }

    fn bucket(&self, sec: i64) -> Option<&SecondBucket> {
        self.seconds
            .get(sec.rem_euclid(SECONDS as i64) as usize)
            .filter(|b| b.sec == sec)
    }

    fn sum(&self, now: i64, secs: i64, f: impl Fn(&SecondBucket) -> u64) -> u64 {
        (0..secs).filter_map(|k| self.bucket(now - k)).map(f).sum()
    }

    /// When the filter is one client's address: the paths it asked for
    /// most (what the admin who typed it wants to see), with counts.
    fn client_paths(&self, filter: &str) -> Option<Vec<(String, u64)>> {
        let ip: std::net::IpAddr = filter.trim().parse().ok()?;
        let c = self.clients.get(&to_bits(ip))?;
        let mut paths: Vec<(String, u64)> = c
            .paths
            .iter()
            .map(|(p, n)| (crate::log::parse::escape_for_display(p), u64::from(*n)))
            .collect();
        paths.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Some(paths)
    }

    /// The view at log second `now`.
    pub fn snapshot(&self, now: i64, view: &View) -> Snapshot {
        let now_minute = now.div_euclid(60);
        let last_5m = self.sum(now, 300, |b| u64::from(b.requests));
        let mut status = [0u64; 6];
        for k in 0..300 {
            if let Some(b) = self.bucket(now - k) {
                for (i, n) in b.status.iter().enumerate() {
                    status[i] += u64::from(*n);
                }
            }
        }
        let filter = view.filter.to_ascii_lowercase();
        // Numbers first, for every active client; text (which allocates)
        // only for the rows shown, unless a filter needs it.
        struct Acc<'a> {
            first: (u128, &'a ClientLive),
            subject: Subject,
            per_second: f64,
            last_1m: u64,
            last_5m: u64,
            last_15m: u64,
        }
        let top_path = |c: &ClientLive| {
            c.paths
                .iter()
                .max_by_key(|(_, n)| *n)
                .map(|(p, _)| crate::log::parse::escape_for_display(p))
                .unwrap_or_default()
        };
        let name_of = |ip: u128, subject: Subject| {
            if subject.is_host() {
                from_bits(ip).to_string()
            } else {
                subject.to_string()
            }
        };
        let mut lower = Vec::new();
        let mut contains = |text: &[u8]| {
            lower.clear();
            lower.extend(text.iter().map(u8::to_ascii_lowercase));
            memchr::memmem::find(&lower, filter.as_bytes()).is_some()
        };
        let mut acc: Map<(u128, u8), Acc> = Map::default();
        for (ip, c) in &self.clients {
            let l15 = c.last_minutes(now_minute, 15);
            if l15 == 0 {
                continue;
            }
            let subject = if view.group {
                Subject::net(*ip, 24, 64)
            } else {
                Subject::host(*ip)
            };
            if !filter.is_empty()
                && !contains(name_of(*ip, subject).as_bytes())
                && !c.paths.iter().any(|(p, _)| contains(p))
                && !contains(&c.agent)
            {
                continue;
            }
            let a = acc.entry((subject.bits, subject.prefix)).or_insert(Acc {
                first: (*ip, c),
                subject,
                per_second: 0.0,
                last_1m: 0,
                last_5m: 0,
                last_15m: 0,
            });
            a.per_second += c.per_second_now(now);
            a.last_1m += c.last_seconds(now, 60);
            a.last_5m += c.last_minutes(now_minute, 5);
            a.last_15m += l15;
        }
        let mut ranked: Vec<Acc> = acc.into_values().collect();
        let key = |a: &Acc| match view.sort {
            SortBy::Now => (a.per_second * 1000.0) as u64,
            SortBy::Last1m => a.last_1m,
            SortBy::Last5m => a.last_5m,
            SortBy::Last15m => a.last_15m,
        };
        ranked.sort_by(|a, b| {
            key(b)
                .cmp(&key(a))
                .then(b.last_15m.cmp(&a.last_15m))
                .then(a.subject.cmp(&b.subject))
        });
        let active = ranked.len();
        ranked.truncate(view.rows.max(1));
        let clients: Vec<ClientRow> = ranked
            .iter()
            .map(|a| ClientRow {
                client: name_of(a.first.0, a.subject),
                per_second: a.per_second,
                last_1m: a.last_1m,
                last_5m: a.last_5m,
                last_15m: a.last_15m,
                percent: if last_5m > 0 {
                    a.last_5m as f64 * 100.0 / last_5m as f64
                } else {
                    0.0
                },
                top_path: top_path(a.first.1),
                user_agent: crate::log::parse::escape_for_display(&a.first.1.agent),
            })
            .collect();
        let statuses = self
            .statuses
            .top(now_minute, 20, "")
            .into_iter()
            .filter_map(|(k, n)| k.parse::<u16>().ok().map(|s| (s, n)))
            .collect();

        Snapshot {
            now,
            per_second: self.sum(now, NOW_WINDOW, |b| u64::from(b.requests)) as f64
                / NOW_WINDOW as f64,
            history: (0..60)
                .rev()
                .map(|k| self.bucket(now - k).map_or(0, |b| u64::from(b.requests)))
                .collect(),
            last_1m: self.sum(now, 60, |b| u64::from(b.requests)),
            last_5m,
            last_15m: self.sum(now, 900, |b| u64::from(b.requests)),
            bytes_per_second: self.sum(now, 60, |b| b.bytes) as f64 / 60.0,
            status,
            clients,
            paths: match self.client_paths(&view.filter) {
                Some(paths) => paths,
                None => self.paths.top(now_minute, view.rows.max(1), &filter),
            },
            hosts: self.hosts.top(now_minute, view.rows.max(1), &filter),
            user_agents: self.agents.top(now_minute, view.rows.max(1), &filter),
            statuses,
            active_clients: active,
            evicted_clients: self.evicted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Parser, Preset, Scratch, TrustedProxies};

    fn feed(s: &mut LiveStats, line: &str) {
        let p = Parser::preset(Preset::Combined, TrustedProxies::default());
        let mut scratch = Scratch::default();
        let r = p.parse(line.as_bytes(), &mut scratch).unwrap();
        s.record(&r);
    }

    fn line(ip: &str, sec: i64, path: &str) -> String {
        let t = jiff::Timestamp::from_second(sec)
            .unwrap()
            .strftime("%d/%b/%Y:%H:%M:%S +0000");
        format!(r#"{ip} - - [{t}] "GET {path} HTTP/1.1" 200 100 "-" "UA {ip}""#)
    }

    const T: i64 = 1_714_557_600;

    #[test]
    fn windows_like_load_averages() {
        let mut s = LiveStats::new();
        // 203.0.113.1: one request a minute for 15 minutes, then 50 in the
        // last 10 s; 203.0.113.2: 3 requests 10 minutes ago.
        for m in 0..15 {
            feed(&mut s, &line("203.0.113.1", T + m * 60, "/slow"));
        }
        for k in 0..50 {
            feed(&mut s, &line("203.0.113.1", T + 890 + k / 5, "/hammer"));
        }
        for _ in 0..3 {
            feed(&mut s, &line("203.0.113.2", T + 300, "/x"));
        }
        let snap = s.snapshot(
            T + 899,
            &View {
                rows: 10,
                ..View::default()
            },
        );
        let c = &snap.clients[0];
        assert_eq!(c.client, "203.0.113.1");
        assert_eq!(c.per_second, 5.0);
        assert_eq!(c.last_1m, 51);
        assert_eq!(c.last_5m, 55);
        assert_eq!(c.last_15m, 65);
        assert_eq!(c.top_path, "/hammer");
        assert_eq!(snap.clients[1].last_5m, 0);
        assert_eq!(snap.clients[1].last_15m, 3);
        assert_eq!(snap.last_15m, 68);
        assert_eq!(snap.history.iter().sum::<u64>(), 51);
        assert_eq!(snap.status[1], 55);
        // Later, everything has aged out.
        let later = s.snapshot(
            T + 899 + 3600,
            &View {
                rows: 10,
                ..View::default()
            },
        );
        assert!(later.clients.is_empty());
        assert_eq!(later.last_15m, 0);
    }

    #[test]
    fn grouping_sorting_and_filtering() {
        let mut s = LiveStats::new();
        for i in 0..20 {
            feed(&mut s, &line(&format!("198.51.100.{i}"), T, "/a"));
        }
        for _ in 0..5 {
            feed(&mut s, &line("203.0.113.9", T, "/b"));
        }
        let v = View {
            rows: 5,
            group: true,
            ..View::default()
        };
        let snap = s.snapshot(T, &v);
        assert_eq!(snap.clients[0].client, "198.51.100.0/24");
        assert_eq!(snap.clients[0].last_1m, 20);
        let v = View {
            rows: 5,
            filter: "/B".into(),
            ..View::default()
        };
        let snap = s.snapshot(T, &v);
        assert_eq!(snap.clients.len(), 1);
        assert_eq!(snap.paths, vec![("/b".to_string(), 5)]);
    }

    // Regression: the filter used to apply after the top-N cut, so a rare
    // path never showed however precisely it was asked for.
    #[test]
    fn filters_apply_before_the_top_cut() {
        let mut s = LiveStats::new();
        for i in 0..50 {
            for _ in 0..3 {
                feed(&mut s, &line("203.0.113.1", T, &format!("/busy{i}")));
            }
        }
        feed(&mut s, &line("203.0.113.2", T, "/rare-marker"));
        let v = View {
            rows: 5,
            filter: "marker".into(),
            ..View::default()
        };
        let snap = s.snapshot(T, &v);
        assert_eq!(snap.paths, vec![("/rare-marker".to_string(), 1)]);
        assert_eq!(snap.clients.len(), 1);
        assert_eq!(snap.clients[0].client, "203.0.113.2");
    }

    #[test]
    fn idle_clients_expire() {
        let mut s = LiveStats::new();
        for i in 0..100 {
            feed(&mut s, &line(&format!("10.0.0.{i}"), T, "/"));
        }
        feed(&mut s, &line("10.0.1.1", T + 16 * 60, "/"));
        assert_eq!(s.clients(), 1);
    }

    /// Regression: a flooder's "1 min" counted the calendar minute while
    /// the header counted the last 60 seconds, so across a minute boundary
    /// they disagreed.
    #[test]
    fn a_flooders_minute_agrees_with_the_header() {
        let mut s = LiveStats::new();
        let start = T - T.rem_euclid(60) + 50;
        for k in 0..20 {
            for _ in 0..3 {
                feed(&mut s, &line("203.0.113.9", start + k, "/x"));
            }
        }
        let snap = s.snapshot(
            start + 19,
            &View {
                rows: 1,
                ..View::default()
            },
        );
        assert_eq!(snap.last_1m, 60);
        assert_eq!(snap.clients[0].last_1m, snap.last_1m);
    }

    /// The filter set to an address shows that client's paths.
    #[test]
    fn an_address_filter_shows_the_clients_paths() {
        let mut s = LiveStats::new();
        feed(&mut s, &line("198.51.100.7", T, "/wp-login.php"));
        feed(&mut s, &line("198.51.100.7", T, "/wp-login.php"));
        feed(&mut s, &line("198.51.100.7", T, "/xmlrpc.php"));
        feed(&mut s, &line("192.0.2.1", T, "/"));
        let view = View {
            rows: 10,
            filter: "198.51.100.7".into(),
            ..View::default()
        };
        let snap = s.snapshot(T, &view);
        assert_eq!(
            snap.paths,
            vec![
                ("/wp-login.php".to_string(), 2),
                ("/xmlrpc.php".to_string(), 1)
            ]
        );
    }

    /// Regression: `top` took 2.16 GB for 10M random IPv6 clients. Past
    /// the cap the least recently seen go, are counted, and the busiest
    /// client of the moment is kept.
    #[test]
    fn clients_stay_under_the_memory_cap() {
        let cap = 1000 * CLIENT_BYTES;
        let mut s = LiveStats::with_memory_cap(cap);
        for i in 0..20_000u32 {
            let ip = format!("2001:db8::{:x}:{:x}", i >> 16, i & 0xffff);
            feed(&mut s, &line(&ip, T + i64::from(i / 100), "/"));
            if i % 10 == 0 {
                feed(
                    &mut s,
                    &line("203.0.113.9", T + i64::from(i / 100), "/flood"),
                );
            }
            assert!(s.clients() <= 1000, "{} clients", s.clients());
        }
        let snap = s.snapshot(
            T + 200,
            &View {
                rows: 1,
                ..View::default()
            },
        );
        assert!(snap.evicted_clients >= 19_000, "{}", snap.evicted_clients);
        assert_eq!(snap.clients[0].client, "203.0.113.9");
    }
}
