//! Notifications as a component: `[notify.NAME]` compiled (each error
//! located), and the notifier thread. Events come in through a bounded
//! queue that never blocks the one sending (a full queue drops and counts
//! the event, and says so once); each channel groups them and hands its
//! messages to a delivery thread of its own, which retries with backoff
//! and logs and counts what could not be delivered. Nothing here holds
//! up deciding or banning.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::daemon::control::LoopStatus;
use crate::daemon::lock;
use crate::detect::config::{Config, ConfigError, Sp};
use crate::notify::channel::{ChannelSpec, Transport, redact};
use crate::notify::event::{Event, Kind, Severity};
use crate::notify::group::{Group, GroupPolicy};
use crate::notify::render::render;

/// Events waiting for the notifier; past this they are dropped and counted.
const QUEUE: usize = 65_536;
/// Messages waiting for one channel's delivery.
const MESSAGES: usize = 64;
/// One delivery attempt's time limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Waits between attempts: four attempts over about 21 s.
const BACKOFF: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(4),
    Duration::from_secs(16),
];

/// Compiles every `[notify.NAME]`.
pub fn compile(config: &Config, errors: &mut Vec<ConfigError>) -> Vec<ChannelSpec> {
    let mut out = Vec::new();
    for (name, raw) in &config.notify {
        let before = errors.len();
        let mut err = |at, msg: String| errors.push(config.sources.error(at, msg));
        let text = |v: &Option<Sp<String>>| v.as_ref().map(|s| s.value.clone());
        let list = |v: &Option<Vec<Sp<String>>>| -> Vec<String> {
            v.iter().flatten().map(|s| s.value.clone()).collect()
        };
        let kind = raw.kind.as_ref().map(|k| (k.value.as_str(), k.at));
        let transport = match kind {
            Some(("mail", at)) => match (text(&raw.smtp), text(&raw.sendmail)) {
                (Some(url), None) => {
                    if let Err(e) = lettre::SmtpTransport::from_url(&url) {
                        if let Some(s) = &raw.smtp {
                            err(
                                s.at,
                                format!(
                                    "invalid smtp URL '{}': {e} (expected smtp://host:25, smtp://user:pass@host:587?tls=required or smtps://host:465)",
                                    redact(&url)
                                ),
                            );
                        }
                    }
                    Transport::Smtp { url }
                }
                (None, Some(program)) => Transport::Sendmail { program },
                (Some(_), Some(_)) => {
                    err(at, "a mail channel takes smtp or sendmail, not both".into());
                    continue;
                }
                (None, None) => {
                    err(at, "a mail channel needs smtp = \"smtp://host:25\" or sendmail = \"/usr/sbin/sendmail\"".into());
                    continue;
                }
            },
            Some(("webhook", at)) => match &raw.url {
                Some(u) => {
                    let ok = u.value.starts_with("https://") || u.value.starts_with("http://");
                    if !ok {
                        err(
                            u.at,
                            format!(
                                "invalid url '{}': expected https://... or http://...",
                                u.value
                            ),
                        );
                    }
                    let slack = match raw.format.as_ref().map(|f| (f.value.as_str(), f.at)) {
                        None | Some(("json", _)) => false,
                        Some(("slack", _)) => true,
                        Some((other, at)) => {
                            err(
                                at,
                                format!("unknown format '{other}' (expected json or slack)"),
                            );
                            false
                        }
                    };
                    let mut headers = Vec::new();
                    for (k, v) in raw.headers.iter().flatten() {
                        if k.is_empty()
                            || k.chars().any(|c| c.is_control() || c == ':' || c == ' ')
                            || v.value.chars().any(char::is_control)
                        {
                            err(
                                v.at,
                                format!(
                                    "invalid header '{k}': no spaces, colons or control characters"
                                ),
                            );
                        }
                        headers.push((k.clone(), v.value.clone()));
                    }
                    Transport::Webhook {
                        url: u.value.clone(),
                        slack,
                        headers,
                    }
                }
                None => {
                    err(at, "a webhook channel needs url = \"https://...\"".into());
                    continue;
                }
            },
            Some(("command", at)) => {
                let argv = list(&raw.command);
                if argv.first().is_none_or(|p| p.is_empty()) {
                    err(
                        at,
                        "a command channel needs command = [\"/usr/local/bin/page\", ...]".into(),
                    );
                    continue;
                }
                Transport::Command { argv }
            }
            Some((other, at)) => {
                err(
                    at,
                    format!("unknown type '{other}' (expected mail, webhook or command)"),
                );
                continue;
            }
            None => {
                err(
                    name.at,
                    format!(
                        "channel '{}' needs a type: mail, webhook or command",
                        name.value
                    ),
                );
                continue;
            }
        };
        let is_mail = matches!(
            transport,
            Transport::Smtp { .. } | Transport::Sendmail { .. }
        );
        let from = text(&raw.from).unwrap_or_default();
        let to = list(&raw.to);
        if is_mail {
            match &raw.from {
                Some(f) if f.value.parse::<lettre::Address>().is_err() => {
                    err(f.at, format!("invalid from address '{}'", f.value))
                }
                None => err(
                    name.at,
                    format!(
                        "mail channel '{}' needs from = \"webfence@example.com\"",
                        name.value
                    ),
                ),
                _ => {}
            }
            if to.is_empty() {
                err(
                    name.at,
                    format!(
                        "mail channel '{}' needs to = [\"ops@example.com\"]",
                        name.value
                    ),
                );
            }
            for t in raw.to.iter().flatten() {
                if t.value.parse::<lettre::Address>().is_err() {
                    err(t.at, format!("invalid address '{}'", t.value));
                }
            }
        }
        let mut on = Vec::new();
        for c in raw.on.iter().flatten() {
            if Kind::CATEGORIES.contains(&c.value.as_str()) {
                on.push(c.value.clone());
            } else {
                err(
                    c.at,
                    format!(
                        "unknown event '{}' (expected one of {})",
                        c.value,
                        Kind::CATEGORIES.join(", ")
                    ),
                );
            }
        }
        if raw.on.is_none() {
            on = ["ban", "guard", "degraded", "stalled"]
                .map(String::from)
                .to_vec();
        }
        let min_severity = match &raw.min_severity {
            None => Severity::Info,
            Some(s) => Severity::from_name(&s.value).unwrap_or_else(|| {
                err(
                    s.at,
                    format!(
                        "unknown severity '{}' (expected info, warning or critical)",
                        s.value
                    ),
                );
                Severity::Info
            }),
        };
        let mut ms = |v: &Option<Sp<String>>, what: &str, default_ms: i64| match v {
            None => default_ms,
            Some(d) => match crate::units::parse_duration(&d.value) {
                Ok(s) => s as i64 * 1000,
                Err(e) => {
                    err(d.at, format!("{what}: {e}"));
                    default_ms
                }
            },
        };
        let defaults = GroupPolicy::default();
        let wait_ms = ms(&raw.group_wait, "group_wait", defaults.wait_ms);
        let repeat_ms = ms(&raw.repeat, "repeat", defaults.repeat_ms);
        let threshold = match &raw.group_threshold {
            None => defaults.threshold,
            Some(t) if t.value >= 1 => t.value as usize,
            Some(t) => {
                err(
                    t.at,
                    format!("invalid group_threshold {}: expected 1 or more", t.value),
                );
                defaults.threshold
            }
        };
        if errors.len() > before {
            continue;
        }
        out.push(ChannelSpec {
            name: name.value.clone(),
            transport,
            from,
            to,
            subject: text(&raw.subject).unwrap_or_else(|| "[webfence {host}] {summary}".into()),
            on,
            rules: list(&raw.rules),
            min_severity,
            policy: GroupPolicy {
                wait_ms,
                threshold,
                repeat_ms,
            },
        });
    }
    out
}

/// A channel's figures, for `status` and the metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ChannelStatus {
    pub name: String,
    pub kind: String,
    pub events: u64,
    pub suppressed: u64,
    pub messages_sent: u64,
    pub messages_failed: u64,
    pub retries: u64,
    pub last_error: Option<String>,
    pub last_sent_ms: Option<i64>,
}

enum ToNotifier {
    Event(Event),
    Channels(Vec<ChannelSpec>),
}

/// What the rest of the daemon holds to notify: cheap to clone.
#[derive(Clone)]
pub struct NotifySender {
    tx: SyncSender<ToNotifier>,
    pub dropped: Arc<AtomicU64>,
}

impl NotifySender {
    /// Queues an event; never blocks.
    pub fn send(&self, e: Event) {
        match self.tx.try_send(ToNotifier::Event(e)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        "the notification queue is full: events are dropped and counted until it drains"
                    );
                }
            }
        }
    }

    /// New channels after a reload: what waits for the old ones is sent
    /// first.
    pub fn reconfigure(&self, channels: Vec<ChannelSpec>) {
        let _ = self.tx.send(ToNotifier::Channels(channels));
    }
}

/// This machine's name, for messages.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Starts the notifier; its figures go to `status`.
pub fn start(channels: Vec<ChannelSpec>, status: Arc<Mutex<LoopStatus>>) -> NotifySender {
    let (tx, rx) = sync_channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let host = host_name();
    let _ = std::thread::Builder::new()
        .name("notify".into())
        .spawn(move || notifier(channels, rx, status, host));
    NotifySender { tx, dropped }
}

struct Live {
    spec: ChannelSpec,
    group: Group,
    outbox: SyncSender<crate::notify::render::Message>,
    index: usize,
}

fn open(channels: Vec<ChannelSpec>, status: &Arc<Mutex<LoopStatus>>, host: &str) -> Vec<Live> {
    {
        let mut st = lock(status);
        st.notify = channels
            .iter()
            .map(|c| ChannelStatus {
                name: c.name.clone(),
                kind: c.kind().into(),
                ..ChannelStatus::default()
            })
            .collect();
    }
    channels
        .into_iter()
        .enumerate()
        .map(|(index, spec)| {
            let (outbox, inbox) = sync_channel(MESSAGES);
            let (s, st, h) = (spec.clone(), status.clone(), host.to_string());
            let _ = std::thread::Builder::new()
                .name(format!("notify-{}", spec.name))
                .spawn(move || deliver_loop(s, index, inbox, st, h));
            Live {
                spec,
                group: Group::default(),
                outbox,
                index,
            }
        })
        .collect()
}

fn notifier(
    channels: Vec<ChannelSpec>,
    rx: Receiver<ToNotifier>,
    status: Arc<Mutex<LoopStatus>>,
    host: String,
) {
    let mut live = open(channels, &status, &host);
    loop {
        let msg = rx.recv_timeout(Duration::from_millis(200));
        let now = crate::daemon::actions::enforcer::wall_ms();
        match msg {
            Ok(ToNotifier::Event(e)) => {
                for c in live.iter_mut().filter(|c| c.spec.wants(&e)) {
                    c.group.push(e.clone(), &c.spec.policy, now);
                    let mut st = lock(&status);
                    if let Some(s) = st.notify.get_mut(c.index) {
                        s.events += 1;
                        s.suppressed = c.group.suppressed;
                    }
                }
            }
            Ok(ToNotifier::Channels(new)) => {
                for c in &mut live {
                    flush(c, &host, &status);
                }
                live = open(new, &status, &host);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // Stopping: what waits is sent now.
                for c in &mut live {
                    flush(c, &host, &status);
                }
                return;
            }
        }
        for c in &mut live {
            if c.group.due(&c.spec.policy, now) {
                flush(c, &host, &status);
            }
        }
    }
}

fn flush(c: &mut Live, host: &str, status: &Arc<Mutex<LoopStatus>>) {
    if c.group.is_empty() {
        return;
    }
    let (events, overflow) = c.group.take();
    let m = render(host, &events, &overflow);
    if c.outbox.try_send(m).is_err() {
        tracing::error!(channel = %c.spec.name, "notification not sent: the channel's queue is full (its deliveries keep failing)");
        if let Some(s) = lock(status).notify.get_mut(c.index) {
            s.messages_failed += 1;
        }
    }
}

fn deliver_loop(
    spec: ChannelSpec,
    index: usize,
    inbox: Receiver<crate::notify::render::Message>,
    status: Arc<Mutex<LoopStatus>>,
    host: String,
) {
    for m in inbox {
        let mut attempt = 0;
        loop {
            match spec.deliver(&m, &host, ATTEMPT_TIMEOUT) {
                Ok(()) => {
                    tracing::info!(channel = %spec.name, "notified: {}", m.subject);
                    let mut st = lock(&status);
                    if let Some(s) = st.notify.get_mut(index) {
                        s.messages_sent += 1;
                        s.last_sent_ms = Some(crate::daemon::actions::enforcer::wall_ms());
                    }
                    break;
                }
                Err(e) => {
                    let mut st = lock(&status);
                    let s = st.notify.get_mut(index);
                    match BACKOFF.get(attempt) {
                        Some(wait) => {
                            tracing::warn!(channel = %spec.name, attempt = attempt + 1, "notification failed, retrying in {} s: {e}", wait.as_secs());
                            if let Some(s) = s {
                                s.retries += 1;
                                s.last_error = Some(e);
                            }
                            drop(st);
                            std::thread::sleep(*wait);
                            attempt += 1;
                        }
                        None => {
                            tracing::error!(channel = %spec.name, "notification not delivered after {} attempts: {e}; it was: {}", attempt + 1, m.subject);
                            if let Some(s) = s {
                                s.messages_failed += 1;
                                s.last_error = Some(e);
                            }
                            break;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_text(text: &str) -> (Vec<ChannelSpec>, String) {
        let config = Config::from_texts(vec![("n.toml".into(), text.into())]).unwrap();
        let mut errors = Vec::new();
        let c = compile(&config, &mut errors);
        (c, crate::detect::ConfigErrors(errors).to_string())
    }

    #[test]
    fn the_issue_s_channels_compile() {
        let (c, e) = compile_text(
            "[notify.ops]\ntype = \"mail\"\nsmtp = \"smtp://127.0.0.1:25\"\nfrom = \"webfence@example.com\"\nto = [\"ops@example.com\"]\non = [\"ban\", \"guard\", \"degraded\"]\ngroup_wait = \"30s\"\n\n[notify.chat]\ntype = \"webhook\"\nurl = \"https://chat.example.com/hooks/T000\"\nformat = \"slack\"\nheaders = { Authorization = \"Bearer x\" }\n",
        );
        assert!(e.is_empty(), "{e}");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].policy.wait_ms, 30_000);
        assert_eq!(c[1].kind(), "webhook");
    }

    #[test]
    fn bad_channels_are_located() {
        let (_, e) = compile_text(
            "[notify.a]\ntype = \"pager\"\n[notify.b]\ntype = \"mail\"\nsmtp = \"ftp://x\"\nfrom = \"not an address\"\nto = []\n[notify.c]\ntype = \"webhook\"\nurl = \"https://x\"\non = [\"bans\"]\nheaders = { \"X Y\" = \"1\" }\n",
        );
        for want in [
            "n.toml:2:8: unknown type 'pager'",
            "n.toml:5:8: invalid smtp URL 'ftp://x'",
            "n.toml:6:8: invalid from address 'not an address'",
            "mail channel 'b' needs to = [",
            "n.toml:11:7: unknown event 'bans'",
            "n.toml:12:21: invalid header 'X Y'",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }
}
