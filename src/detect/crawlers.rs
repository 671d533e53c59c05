//! Verified crawlers: a client whose User-Agent claims a search engine's
//! crawler is checked the way the search engines document it: the
//! address's reverse DNS name must end in one of the crawler's domains,
//! and that name must resolve forward to the same address. A verified
//! crawler is exempt from rate and distinct rules (it fetches a lot, and
//! that is its job); a client that claims to be one and is not is a fake,
//! which `match.crawler = "fake"` rules catch.
//!
//! Lookups never run on the hot path: the daemon asks a [`Verifier`],
//! which answers from its cache or queues the address for a resolver
//! thread and answers Unknown meanwhile (the request is judged like any
//! other). The resolver is an interface; tests give their own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What is known of a client claiming to be a crawler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Crawler {
    /// Not claimed, or not verified yet.
    #[default]
    Unknown,
    Verified,
    Fake,
}

/// A crawler webfence verifies: the User-Agent token it goes by, and the
/// domains its addresses' names end in, as each operator documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub name: &'static str,
    /// Lower-case substring of the User-Agent.
    pub token: &'static str,
    /// Reverse DNS suffixes (with the leading dot).
    pub domains: &'static [&'static str],
}

/// Written for this project from each operator's documentation on
/// verifying its crawler by reverse and forward DNS.
pub const KNOWN: &[Known] = &[
    // Google: "Verifying Googlebot and other Google crawlers".
    Known {
        name: "Googlebot",
        token: "googlebot",
        domains: &[".googlebot.com", ".google.com", ".googleusercontent.com"],
    },
    // Google's other crawlers (AdsBot, Mediapartners, Storebot) verify alike.
    Known {
        name: "Google crawler",
        token: "adsbot-google",
        domains: &[".googlebot.com", ".google.com"],
    },
    // Microsoft: "Verifying Bingbot".
    Known {
        name: "Bingbot",
        token: "bingbot",
        domains: &[".search.msn.com"],
    },
    // Apple: "About Applebot".
    Known {
        name: "Applebot",
        token: "applebot",
        domains: &[".applebot.apple.com"],
    },
    // Yandex: "How to check that a robot belongs to Yandex".
    Known {
        name: "YandexBot",
        token: "yandexbot",
        domains: &[".yandex.ru", ".yandex.net", ".yandex.com"],
    },
    // Baidu: its help pages on Baiduspider.
    Known {
        name: "Baiduspider",
        token: "baiduspider",
        domains: &[".crawl.baidu.com", ".crawl.baidu.jp"],
    },
    // DuckDuckBot is left out on purpose: DuckDuckGo publishes addresses,
    // not names, so an honest DuckDuckBot would fail this check.
    // Huawei's Petal Search.
    Known {
        name: "PetalBot",
        token: "petalbot",
        domains: &[".petalsearch.com"],
    },
];

/// Which known crawler a User-Agent claims, if any. Every request the
/// daemon reads asks, so the tokens are found in one case-insensitive
/// pass (an automaton built once), not one scan per token.
pub fn claimed(user_agent: &[u8]) -> Option<&'static Known> {
    static TOKENS: std::sync::OnceLock<Option<aho_corasick::AhoCorasick>> =
        std::sync::OnceLock::new();
    let ac = TOKENS.get_or_init(|| {
        aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(KNOWN.iter().map(|k| k.token))
            .ok()
    });
    let m = ac.as_ref()?.find(user_agent)?;
    KNOWN.get(m.pattern().as_usize())
}

/// A lookup that failed: the name does not exist, or DNS could not say
/// (a timeout, a server failure), which proves nothing either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    Missing(String),
    Unsure(String),
}

/// DNS as the verification needs it; the system's in the daemon, a fake
/// in tests.
pub trait Resolver: Send {
    /// The names the address maps back to (PTR).
    fn reverse(&self, ip: IpAddr) -> Result<Vec<String>, LookupError>;
    /// The addresses a name resolves to.
    fn forward(&self, name: &str) -> Result<Vec<IpAddr>, String>;
}

/// The system resolver (getnameinfo, getaddrinfo): /etc/hosts and DNS as
/// nsswitch says.
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn reverse(&self, ip: IpAddr) -> Result<Vec<String>, LookupError> {
        let sa: std::net::SocketAddr = (ip, 0).into();
        let (storage, len) = sockaddr(&sa);
        let mut host = [0 as libc::c_char; 1025];
        // SAFETY: storage holds a valid sockaddr of `len` bytes; host is a
        // writable buffer of its length; NI_NAMEREQD fails rather than
        // returning the address as text.
        let rc = unsafe {
            libc::getnameinfo(
                (&storage as *const libc::sockaddr_storage).cast(),
                len,
                host.as_mut_ptr(),
                host.len() as libc::socklen_t,
                std::ptr::null_mut(),
                0,
                libc::NI_NAMEREQD,
            )
        };
        if rc == libc::EAI_AGAIN || rc == libc::EAI_FAIL || rc == libc::EAI_SYSTEM {
            return Err(LookupError::Unsure(format!(
                "DNS could not say who {ip} is (getnameinfo {rc})"
            )));
        }
        if rc != 0 {
            return Err(LookupError::Missing(format!("{ip} has no name")));
        }
        // SAFETY: getnameinfo wrote a NUL-terminated string into host.
        let name = unsafe { std::ffi::CStr::from_ptr(host.as_ptr()) };
        Ok(vec![name.to_string_lossy().into_owned()])
    }

    fn forward(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        use std::net::ToSocketAddrs;
        (name, 0)
            .to_socket_addrs()
            .map(|it| it.map(|a| a.ip()).collect())
            .map_err(|e| format!("{name}: {e}"))
    }
}

fn sockaddr(sa: &std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: a zeroed sockaddr_storage is valid; the family's struct is
    // written into its start.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match sa {
        std::net::SocketAddr::V4(a) => {
            let s = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), s) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(a) => {
            let s = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), s) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// The outcome of one verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The crawler's name for the address.
    Verified(String),
    /// Why it is not the crawler it claims to be.
    Fake(String),
    /// DNS did not answer: try again later, judge it like anyone meanwhile.
    Unsure(String),
}

/// Verifies one claim.
pub fn verify(ip: IpAddr, k: &Known, resolver: &dyn Resolver) -> Verdict {
    match verify_inner(ip, k, resolver) {
        Ok(name) => Verdict::Verified(name),
        Err(LookupError::Missing(why)) => Verdict::Fake(why),
        Err(LookupError::Unsure(why)) => Verdict::Unsure(why),
    }
}

fn verify_inner(ip: IpAddr, k: &Known, resolver: &dyn Resolver) -> Result<String, LookupError> {
    let names = resolver.reverse(ip).map_err(|e| match e {
        LookupError::Missing(m) => LookupError::Missing(format!("claims {} but {m}", k.name)),
        unsure => unsure,
    })?;
    let Some(name) = names.into_iter().find(|n| {
        let n = n.trim_end_matches('.').to_ascii_lowercase();
        k.domains.iter().any(|d| n.ends_with(d))
    }) else {
        return Err(LookupError::Missing(format!(
            "claims {} but its name is not under {}",
            k.name,
            k.domains.join(", ")
        )));
    };
    let back = resolver.forward(name.trim_end_matches('.')).map_err(|e| {
        LookupError::Missing(format!(
            "claims {} but {name} does not resolve: {e}",
            k.name
        ))
    })?;
    if back.contains(&ip) {
        Ok(name)
    } else {
        Err(LookupError::Missing(format!(
            "claims {} but {name} does not resolve back to {ip}",
            k.name
        )))
    }
}

/// How long a verdict is kept.
const VERIFIED_MS: i64 = 24 * 3_600_000;
const FAKE_MS: i64 = 3_600_000;
const UNSURE_MS: i64 = 300_000;
/// Lookups waiting; past this, claims stay Unknown until there is room.
const QUEUE: usize = 1024;
/// Verdicts kept; past this the cache starts afresh (a flood of fake
/// claims from random addresses must not grow it without bound).
const CACHE: usize = 100_000;

/// Lookups in a row that DNS could not answer before lookups pause: DNS
/// is down, and every new claimed crawler would cost a failing lookup.
const UNSURE_IN_A_ROW: u32 = 20;
/// How long lookups pause then (claims stay Unknown: judged like anyone).
const PAUSE_MS: i64 = 60_000;

#[derive(Default)]
struct Cache {
    verdicts: HashMap<IpAddr, (Crawler, i64, String)>,
    pending: std::collections::HashSet<IpAddr>,
    /// No new lookups before this wall time (ms).
    paused_until: i64,
    /// Lookups made, by outcome (for `status`; `paused_until_ms` unused).
    made: CrawlerStatus,
}

/// What `status` and the metrics show of crawler verification.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CrawlerStatus {
    /// Lookups since the start that confirmed a claimed crawler.
    pub verified: u64,
    /// Lookups that found a claim false.
    pub fake: u64,
    /// Lookups DNS did not answer.
    pub unanswered: u64,
    /// While DNS answers none, lookups pause until then (wall time, ms):
    /// meanwhile a claimed crawler is judged like any client, so rate
    /// rules may ban a real one.
    pub paused_until_ms: Option<i64>,
}

/// Verdicts for the daemon: answers at once from the cache; unknown
/// claims go to the resolver thread.
#[derive(Clone)]
pub struct Verifier {
    cache: Arc<Mutex<Cache>>,
    tx: SyncSender<(IpAddr, &'static Known)>,
}

impl Verifier {
    pub fn start(resolver: Box<dyn Resolver>) -> Verifier {
        let (tx, rx) = sync_channel(QUEUE);
        let cache = Arc::new(Mutex::new(Cache::default()));
        let c = cache.clone();
        let _ = std::thread::Builder::new()
            .name("crawlers".into())
            .spawn(move || resolve_all(rx, resolver, c));
        Verifier { cache, tx }
    }

    /// What is known now of a client whose User-Agent is `ua`.
    pub fn check(&self, ip: IpAddr, ua: &[u8]) -> Crawler {
        let Some(k) = claimed(ua) else {
            return Crawler::Unknown;
        };
        let now_ms = wall_ms();
        let mut c = lock(&self.cache);
        if let Some((v, until, _)) = c.verdicts.get(&ip) {
            if *until > now_ms {
                return *v;
            }
        }
        if c.paused_until > now_ms {
            return Crawler::Unknown;
        }
        if c.pending.insert(ip) {
            match self.tx.try_send((ip, k)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    c.pending.remove(&ip);
                }
            }
        }
        Crawler::Unknown
    }

    /// Lookups so far, and the pause if one is on.
    pub fn status(&self) -> CrawlerStatus {
        let c = lock(&self.cache);
        CrawlerStatus {
            paused_until_ms: (c.paused_until > wall_ms()).then_some(c.paused_until),
            ..c.made.clone()
        }
    }

    /// The verdict and its reason, once known (for logs and tests).
    pub fn verdict(&self, ip: IpAddr) -> Option<(Crawler, String)> {
        let c = lock(&self.cache);
        c.verdicts.get(&ip).map(|(v, _, why)| (*v, why.clone()))
    }
}

/// Verdicts expire in wall-clock time (DNS answers do), not log time.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The cache is shared with the resolver thread; a panic there must not
/// stop the daemon's checks, so a poisoned lock is taken as is.
fn lock(m: &Mutex<Cache>) -> std::sync::MutexGuard<'_, Cache> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Verdicts of one kind logged one by one before they are only counted: a
/// botnet posing as Googlebot from thousands of addresses, or DNS down,
/// would otherwise write a line per address.
const LOGGED_EACH: u64 = 10;
/// How often what was only counted is said, in one line.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Keeps one kind of verdict loud without a line per address.
#[derive(Debug)]
struct Quiet {
    said: u64,
    held: u64,
    since: Instant,
}

#[derive(Debug, PartialEq, Eq)]
enum Say {
    /// Log this one.
    Each,
    /// Counted, to be said later.
    Held,
}

impl Quiet {
    fn new(now: Instant) -> Quiet {
        Quiet {
            said: 0,
            held: 0,
            since: now,
        }
    }

    fn note(&mut self) -> Say {
        if self.said < LOGGED_EACH {
            self.said += 1;
            return Say::Each;
        }
        self.held += 1;
        Say::Held
    }

    /// How many were held since the last summary, once a summary is due.
    fn due(&mut self, now: Instant) -> Option<u64> {
        if self.held == 0 || now.duration_since(self.since) < SUMMARY_EVERY {
            return None;
        }
        self.since = now;
        Some(std::mem::take(&mut self.held))
    }
}

fn resolve_all(
    rx: Receiver<(IpAddr, &'static Known)>,
    resolver: Box<dyn Resolver>,
    cache: Arc<Mutex<Cache>>,
) {
    let (mut fakes, mut unsure) = (Quiet::new(Instant::now()), Quiet::new(Instant::now()));
    let mut unsure_in_a_row = 0;
    loop {
        let next = rx.recv_timeout(SUMMARY_EVERY);
        let now = Instant::now();
        if let Some(n) = fakes.due(now) {
            tracing::info!("{n} more fake crawlers in the last minute (not logged one by one)");
        }
        if let Some(n) = unsure.due(now) {
            tracing::warn!(
                "{n} more claimed crawlers could not be verified in the last minute (not logged one by one): DNS may be failing"
            );
        }
        let (ip, k) = match next {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let (v, ttl, why) = match verify(ip, k, resolver.as_ref()) {
            Verdict::Verified(name) => {
                tracing::info!(%ip, crawler = k.name, "verified crawler: {name}");
                (Crawler::Verified, VERIFIED_MS, name)
            }
            Verdict::Fake(why) => {
                if fakes.note() == Say::Each {
                    tracing::info!(%ip, "fake crawler: {why}");
                }
                (Crawler::Fake, FAKE_MS, why)
            }
            Verdict::Unsure(why) => {
                if unsure.note() == Say::Each {
                    tracing::warn!(%ip, crawler = k.name, "crawler not verified yet: {why}");
                }
                (Crawler::Unknown, UNSURE_MS, why)
            }
        };
        let now = wall_ms();
        let mut c = lock(&cache);
        match v {
            Crawler::Verified => c.made.verified += 1,
            Crawler::Fake => c.made.fake += 1,
            Crawler::Unknown => c.made.unanswered += 1,
        }
        if v == Crawler::Unknown {
            unsure_in_a_row += 1;
        } else {
            unsure_in_a_row = 0;
        }
        if unsure_in_a_row >= UNSURE_IN_A_ROW {
            unsure_in_a_row = 0;
            c.paused_until = now + PAUSE_MS;
            // What was queued meanwhile is dropped, not looked up.
            c.pending.clear();
            while rx.try_recv().is_ok() {}
            tracing::warn!(
                "crawler verification paused for {} s: DNS answered none of the last {UNSURE_IN_A_ROW} lookups; claimed crawlers are judged like any client meanwhile",
                PAUSE_MS / 1000
            );
        }
        if c.verdicts.len() >= CACHE {
            c.verdicts.clear();
        }
        c.pending.remove(&ip);
        c.verdicts.insert(ip, (v, now + ttl, why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_verdicts_is_logged_as_a_few_lines_and_a_count() {
        let start = Instant::now();
        let mut q = Quiet::new(start);
        let said = (0..5000).filter(|_| q.note() == Say::Each).count();
        assert_eq!(said, LOGGED_EACH as usize);
        assert_eq!(
            q.due(start + Duration::from_secs(30)),
            None,
            "not before a minute"
        );
        let later = start + SUMMARY_EVERY;
        assert_eq!(q.due(later), Some(5000 - LOGGED_EACH));
        // Said once; nothing new, nothing more to say.
        assert_eq!(q.due(later + SUMMARY_EVERY), None);
        q.note();
        assert_eq!(q.due(later + SUMMARY_EVERY), Some(1));
    }

    struct Fake(HashMap<IpAddr, String>, HashMap<String, Vec<IpAddr>>);
    impl Resolver for Fake {
        fn reverse(&self, ip: IpAddr) -> Result<Vec<String>, LookupError> {
            if ip == "192.0.2.99".parse::<IpAddr>().unwrap() {
                return Err(LookupError::Unsure("timeout".into()));
            }
            self.0
                .get(&ip)
                .map(|n| vec![n.clone()])
                .ok_or_else(|| LookupError::Missing(format!("{ip} has no name")))
        }
        fn forward(&self, name: &str) -> Result<Vec<IpAddr>, String> {
            self.1.get(name).cloned().ok_or_else(|| "no address".into())
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reverse_then_forward_as_the_search_engines_document() {
        let google =
            claimed(b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
                .unwrap();
        let r = Fake(
            [
                (
                    ip("66.249.66.1"),
                    "crawl-66-249-66-1.googlebot.com".to_string(),
                ),
                (ip("203.0.113.5"), "host.example.net".to_string()),
                (
                    ip("198.51.100.9"),
                    "evil.googlebot.com.example.net".to_string(),
                ),
                (ip("192.0.2.44"), "crawl-1.googlebot.com".to_string()),
            ]
            .into(),
            [
                (
                    "crawl-66-249-66-1.googlebot.com".to_string(),
                    vec![ip("66.249.66.1")],
                ),
                ("crawl-1.googlebot.com".to_string(), vec![ip("66.249.66.2")]),
            ]
            .into(),
        );
        let fake = |a: &str| match verify(ip(a), google, &r) {
            Verdict::Fake(why) => why,
            other => panic!("{a}: {other:?}"),
        };
        assert_eq!(
            verify(ip("66.249.66.1"), google, &r),
            Verdict::Verified("crawl-66-249-66-1.googlebot.com".to_string())
        );
        assert!(fake("203.0.113.5").contains("not under .googlebot.com"));
        assert!(
            fake("198.51.100.9").contains("not under"),
            "a suffix must be the domain's"
        );
        // A PTR anyone can set: the forward lookup gives it away.
        assert!(fake("192.0.2.44").contains("does not resolve back"));
        assert!(fake("10.9.9.9").contains("has no name"));
        // DNS that does not answer proves nothing.
        assert!(matches!(
            verify(ip("192.0.2.99"), google, &r),
            Verdict::Unsure(_)
        ));
    }

    #[test]
    fn claims_are_found_in_any_case_and_others_are_left_alone() {
        assert_eq!(
            claimed(b"Mozilla/5.0 (compatible; bingbot/2.0)")
                .unwrap()
                .name,
            "Bingbot"
        );
        assert_eq!(claimed(b"GOOGLEBOT").unwrap().name, "Googlebot");
        assert!(claimed(b"Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0").is_none());
        assert!(claimed(b"").is_none());
    }

    /// DNS down: a resolver that never answers, and counts its lookups.
    struct Down(Arc<std::sync::atomic::AtomicUsize>);
    impl Resolver for Down {
        fn reverse(&self, _: IpAddr) -> Result<Vec<String>, LookupError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(LookupError::Unsure("getnameinfo -3".into()))
        }
        fn forward(&self, _: &str) -> Result<Vec<IpAddr>, String> {
            Err("no answer".into())
        }
    }

    #[test]
    fn lookups_pause_while_dns_answers_none() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let v = Verifier::start(Box::new(Down(calls.clone())));
        let lookups = || calls.load(std::sync::atomic::Ordering::SeqCst);
        let claim = |i: u32| {
            v.check(
                IpAddr::from([198, 51, (i >> 8) as u8, i as u8]),
                b"Googlebot/2.1",
            )
        };
        // One at a time, so that none waits in the queue.
        for i in 0..UNSURE_IN_A_ROW {
            assert_eq!(claim(i), Crawler::Unknown);
            let deadline = Instant::now() + Duration::from_secs(5);
            while lookups() <= i as usize {
                assert!(Instant::now() < deadline, "lookup {i} not made");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while lock(&v.cache).paused_until == 0 {
            assert!(Instant::now() < deadline, "not paused");
            std::thread::sleep(Duration::from_millis(1));
        }
        for i in 100..400 {
            assert_eq!(claim(i), Crawler::Unknown);
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            lookups(),
            UNSURE_IN_A_ROW as usize,
            "no lookup while paused"
        );
        // Said where the admin looks, not only in the log.
        let st = v.status();
        assert_eq!(st.unanswered, u64::from(UNSURE_IN_A_ROW));
        assert_eq!((st.verified, st.fake), (0, 0));
        assert!(st.paused_until_ms.is_some_and(|t| t > wall_ms()), "{st:?}");
        // The pause ends: lookups start again.
        lock(&v.cache).paused_until = wall_ms() - 1;
        assert_eq!(v.status().paused_until_ms, None);
        claim(1000);
        let deadline = Instant::now() + Duration::from_secs(5);
        while lookups() == UNSURE_IN_A_ROW as usize {
            assert!(Instant::now() < deadline, "no lookup after the pause");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_verifier_answers_unknown_then_the_verdict() {
        let r = Fake(
            [(ip("66.249.66.1"), "crawl.googlebot.com".to_string())].into(),
            [("crawl.googlebot.com".to_string(), vec![ip("66.249.66.1")])].into(),
        );
        let v = Verifier::start(Box::new(r));
        let ua = b"Googlebot/2.1";
        assert_eq!(v.check(ip("66.249.66.1"), ua), Crawler::Unknown);
        assert_eq!(v.check(ip("203.0.113.5"), ua), Crawler::Unknown);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while v.verdict(ip("203.0.113.5")).is_none() || v.verdict(ip("66.249.66.1")).is_none() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(v.check(ip("66.249.66.1"), ua), Crawler::Verified);
        assert_eq!(v.check(ip("203.0.113.5"), ua), Crawler::Fake);
        assert_eq!(v.check(ip("203.0.113.5"), b"curl/8"), Crawler::Unknown);
        let st = v.status();
        assert_eq!((st.verified, st.fake, st.unanswered), (1, 1, 0));
        assert_eq!(st.paused_until_ms, None);
    }
}
