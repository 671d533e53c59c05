//! Blocklists as a component: `[blocklists.NAME]` compiled, and a thread
//! that loads each list (a file, or a URL fetched with If-None-Match and
//! If-Modified-Since and kept under the state directory, so a restart
//! starts from the last copy), swaps it into the kernel in one
//! transaction, and refreshes it on schedule. A list that fails to fetch
//! or parse keeps its last good contents, and `status` says why.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;

use crate::daemon::control::LoopStatus;
use crate::daemon::lock;
use crate::detect::config::{Config, ConfigError};
use crate::enforce::blocklists;
use crate::source::blocklist::{ParsedList, parse};

/// A compiled `[blocklists.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BlocklistSpec {
    pub name: String,
    pub source: String,
    pub refresh_ms: i64,
    pub description: String,
}

impl BlocklistSpec {
    fn is_url(&self) -> bool {
        self.source.starts_with("http://") || self.source.starts_with("https://")
    }
}

pub fn compile(config: &Config, errors: &mut Vec<ConfigError>) -> Vec<BlocklistSpec> {
    let mut out = Vec::new();
    for (name, raw) in &config.blocklists {
        if raw.enabled == Some(false) {
            continue;
        }
        let mut err = |at, msg: String| errors.push(config.sources.error(at, msg));
        let n = &name.value;
        if let Some(e) = crate::detect::config::name_error("blocklist", n, 32) {
            err(name.at, e);
            continue;
        }
        let Some(source) = &raw.source else {
            err(
                name.at,
                format!("blocklist '{n}' needs source = \"/path/to/list\" or \"https://...\""),
            );
            continue;
        };
        let url = source.value.starts_with("http://") || source.value.starts_with("https://");
        let path = if url {
            source.value.clone()
        } else {
            config
                .relative_path(source.at, &source.value)
                .display()
                .to_string()
        };
        let refresh_ms = match &raw.refresh {
            Some(r) => match crate::units::parse_duration(&r.value) {
                Ok(s) => s as i64 * 1000,
                Err(e) => {
                    err(r.at, format!("refresh: {e}"));
                    continue;
                }
            },
            None if url => 3_600_000,
            None => 60_000,
        };
        out.push(BlocklistSpec {
            name: n.clone(),
            source: path,
            refresh_ms,
            description: raw.description.clone().unwrap_or_default(),
        });
    }
    out
}

/// One list's figures, for `status` and the metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BlocklistStatus {
    pub name: String,
    pub source: String,
    /// Networks in the kernel (merged).
    pub nets: usize,
    /// Entries in the list as read.
    pub entries: usize,
    /// When the contents in the kernel were loaded.
    pub loaded_ms: Option<i64>,
    /// When the list last changed at its source (Last-Modified, or the
    /// file's modification time).
    pub changed_ms: Option<i64>,
    pub last_check_ms: Option<i64>,
    /// Why the last refresh failed; the last good contents stay.
    pub error: Option<String>,
    pub dropped_packets: u64,
    /// Lines that were not addresses in the last good copy.
    pub bad_lines: usize,
}

/// What a URL list's cache remembers for conditional requests.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Meta {
    etag: Option<String>,
    last_modified: Option<String>,
    changed_ms: Option<i64>,
}

struct Live {
    spec: BlocklistSpec,
    meta: Meta,
    mtime: Option<std::time::SystemTime>,
    next_ms: i64,
    status: BlocklistStatus,
}

pub struct Blocklists {
    pub nft: Vec<String>,
    pub table: String,
    pub cache: PathBuf,
    pub status: Arc<Mutex<LoopStatus>>,
    /// Whether the kernel is touched (the nftables backend, no dry run).
    pub enforce: bool,
}

/// The biggest list body accepted from a URL.
const MAX_BODY: u64 = 64 << 20;

fn now_ms() -> i64 {
    crate::daemon::actions::enforcer::wall_ms()
}

impl Blocklists {
    /// Runs until the inbox closes; each message is the new set of lists
    /// (at start and on reload) with the allowlist to exempt.
    pub fn run(self, inbox: Receiver<(Vec<BlocklistSpec>, Vec<IpNet>)>) {
        let mut lists: Vec<Live> = Vec::new();
        loop {
            match inbox.recv_timeout(Duration::from_secs(1)) {
                Ok((specs, allow)) => lists = self.setup(specs, &allow),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = now_ms();
            for l in &mut lists {
                if now >= l.next_ms {
                    l.next_ms = now + l.spec.refresh_ms;
                    self.refresh(l, now);
                }
                if self.enforce {
                    if let Ok(n) = blocklists::dropped(&self.nft, &self.table, &l.spec.name) {
                        l.status.dropped_packets = n;
                    }
                }
            }
            lock(&self.status).blocklists = lists.iter().map(|l| l.status.clone()).collect();
        }
    }

    fn setup(&self, specs: Vec<BlocklistSpec>, allow: &[IpNet]) -> Vec<Live> {
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        if self.enforce {
            let r = if names.is_empty() {
                blocklists::remove(&self.nft, &self.table)
            } else {
                blocklists::setup(&self.nft, &self.table, &names, allow)
            };
            if let Err(e) = r {
                tracing::error!("cannot set up the blocklists' table: {e}");
            }
        }
        specs
            .into_iter()
            .map(|spec| Live {
                meta: self.read_meta(&spec.name),
                status: BlocklistStatus {
                    name: spec.name.clone(),
                    source: crate::notify::channel::redact(&spec.source),
                    ..BlocklistStatus::default()
                },
                spec,
                mtime: None,
                next_ms: 0,
            })
            .collect()
    }

    fn cache_file(&self, name: &str, ext: &str) -> PathBuf {
        self.cache.join(format!("{name}.{ext}"))
    }

    fn read_meta(&self, name: &str) -> Meta {
        std::fs::read_to_string(self.cache_file(name, "meta"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Reads the list again if it changed; loads it when it did.
    fn refresh(&self, l: &mut Live, now: i64) {
        l.status.last_check_ms = Some(now);
        let mut fetched = None;
        let text = if l.spec.is_url() {
            match self.fetch(l) {
                Ok(Some((text, meta))) => {
                    fetched = Some(meta);
                    Some(text)
                }
                // Not modified: on a first load (after a restart) the
                // cached copy is loaded.
                Ok(None) if l.status.loaded_ms.is_none() => {
                    std::fs::read_to_string(self.cache_file(&l.spec.name, "list")).ok()
                }
                Ok(None) => {
                    l.status.error = None;
                    None
                }
                Err(e) => {
                    self.failed(l, e);
                    // Start from the last copy rather than nothing.
                    if l.status.loaded_ms.is_none() {
                        std::fs::read_to_string(self.cache_file(&l.spec.name, "list")).ok()
                    } else {
                        None
                    }
                }
            }
        } else {
            let path = Path::new(&l.spec.source);
            match std::fs::metadata(path).and_then(|m| m.modified()) {
                Ok(m) if Some(m) == l.mtime => None,
                Ok(m) => match std::fs::read_to_string(path) {
                    Ok(t) => {
                        l.mtime = Some(m);
                        l.meta.changed_ms = m
                            .duration_since(std::time::UNIX_EPOCH)
                            .ok()
                            .map(|d| d.as_millis() as i64);
                        Some(t)
                    }
                    Err(e) => {
                        self.failed(l, format!("cannot read {}: {e}", path.display()));
                        None
                    }
                },
                Err(e) => {
                    self.failed(l, format!("cannot read {}: {e}", path.display()));
                    None
                }
            }
        };
        if let Some(text) = text {
            let parsed = parse(&text);
            if let Some(why) = parsed.looks_wrong() {
                self.failed(l, format!("{}: {why}", l.status.source));
                return;
            }
            if let Some(meta) = fetched {
                // Kept only once it proved to be a list: a broken fetch
                // never replaces the copy a restart would start from.
                l.meta = meta;
                let _ = std::fs::create_dir_all(&self.cache);
                let _ = std::fs::write(self.cache_file(&l.spec.name, "list"), &text);
                if let Ok(m) = serde_json::to_string(&l.meta) {
                    let _ = std::fs::write(self.cache_file(&l.spec.name, "meta"), m);
                }
            }
            self.install(l, &parsed, now);
        }
    }

    fn failed(&self, l: &mut Live, e: String) {
        if l.status.error.as_ref() != Some(&e) {
            tracing::error!(blocklist = %l.spec.name, "refresh failed, the last good contents stay: {e}");
        }
        l.status.error = Some(e);
    }

    fn install(&self, l: &mut Live, parsed: &ParsedList, now: i64) {
        let started = std::time::Instant::now();
        if self.enforce {
            if let Err(e) = blocklists::load(&self.nft, &self.table, &l.spec.name, &parsed.nets) {
                self.failed(l, format!("cannot load it into the kernel: {e}"));
                return;
            }
        }
        for (line, text) in &parsed.too_wide {
            tracing::warn!(blocklist = %l.spec.name, line, "entry '{text}' is wider than /8 (/16 for IPv6): left out");
        }
        tracing::info!(
            blocklist = %l.spec.name,
            entries = parsed.entries,
            nets = parsed.nets.len(),
            bad_lines = parsed.bad_total,
            ms = started.elapsed().as_millis() as u64,
            "blocklist loaded"
        );
        l.status.nets = parsed.nets.len();
        l.status.entries = parsed.entries;
        l.status.bad_lines = parsed.bad_total;
        l.status.loaded_ms = Some(now);
        l.status.changed_ms = l.meta.changed_ms;
        l.status.error = None;
    }

    /// Fetches a URL list: its text and validators when it changed, None
    /// when not.
    fn fetch(&self, l: &Live) -> Result<Option<(String, Meta)>, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent.get(&l.spec.source);
        // Without a cached copy, a conditional request could leave nothing.
        if self.cache_file(&l.spec.name, "list").exists() {
            if let Some(e) = &l.meta.etag {
                req = req.header("If-None-Match", e);
            }
            if let Some(m) = &l.meta.last_modified {
                req = req.header("If-Modified-Since", m);
            }
        }
        let url = crate::notify::channel::redact(&l.spec.source);
        let mut resp = req.call().map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status().as_u16();
        if status == 304 {
            return Ok(None);
        }
        if status != 200 {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let etag = header("etag");
        let last_modified = header("last-modified");
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let meta = Meta {
            changed_ms: last_modified
                .as_deref()
                .and_then(|m| jiff::fmt::rfc2822::parse(m).ok())
                .map(|z| z.timestamp().as_millisecond())
                .or(Some(now_ms())),
            etag,
            last_modified,
        };
        Ok(Some((text, meta)))
    }
}
