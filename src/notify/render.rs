//! One message from a group of events: a subject line, a plain-text body
//! (counts per rule and the first subjects, each guard and health event
//! on its line), and the same as JSON for webhooks and commands.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use serde_json::{Value, json};

use super::event::{Event, Kind};
use crate::report::text::thousands;

/// Bans listed one by one in a message; the rest are in the counts.
const BANS_LISTED: usize = 20;

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// One line, no control characters: safe for a mail header.
    pub subject: String,
    pub text: String,
    pub json: Value,
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn when(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// Renders a group for the host named `host`.
pub fn render(host: &str, events: &[Event], overflow: &HashMap<String, u64>) -> Message {
    let bans: Vec<&Event> = events.iter().filter(|e| e.kind == Kind::Ban).collect();
    let others: Vec<&Event> = events.iter().filter(|e| e.kind != Kind::Ban).collect();
    let more_bans = overflow.get("ban").copied().unwrap_or(0);
    let ban_total = bans.len() as u64 + more_bans;
    let mut per_rule: BTreeMap<&str, u64> = BTreeMap::new();
    for b in &bans {
        *per_rule.entry(b.about.as_str()).or_default() += 1;
    }
    let mut rules: Vec<(&str, u64)> = per_rule.into_iter().collect();
    rules.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));

    let subject = match (ban_total, others.as_slice()) {
        (0, [one]) => one.title.clone(),
        (0, many) => format!(
            "{} events: {}",
            many.len(),
            many.iter()
                .take(3)
                .map(|e| e.title.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ),
        (1, []) => bans[0].title.clone(),
        (n, rest) => {
            let by: Vec<String> = rules
                .iter()
                .take(3)
                .map(|(r, c)| format!("{r} {}", thousands(*c)))
                .collect();
            let extra = if rest.is_empty() {
                String::new()
            } else {
                format!(" and {} other events", rest.len())
            };
            format!(
                "{} bans ({}{}){extra}",
                thousands(n),
                by.join(", "),
                if more_bans > 0 { ", …" } else { "" }
            )
        }
    };
    let subject = one_line(&format!("[webfence {host}] {subject}"));

    let mut text = String::new();
    for e in others.iter().filter(|e| e.kind == Kind::Digest) {
        let _ = writeln!(text, "{}\n\n{}", e.title, e.detail);
    }
    for e in others.iter().filter(|e| e.kind != Kind::Digest) {
        let _ = writeln!(
            text,
            "{}  {}{}",
            when(e.at_ms),
            e.title,
            if e.detail.is_empty() {
                String::new()
            } else {
                format!("\n    {}", e.detail)
            }
        );
    }
    if ban_total > 0 {
        if !others.is_empty() {
            text.push('\n');
        }
        let _ = writeln!(text, "{} bans:", thousands(ban_total));
        for (r, c) in &rules {
            let _ = writeln!(text, "  {:>8}  {r}", thousands(*c));
        }
        if more_bans > 0 {
            let _ = writeln!(text, "  {:>8}  (more, not listed)", thousands(more_bans));
        }
        let _ = writeln!(text);
        for b in bans.iter().take(BANS_LISTED) {
            let _ = writeln!(text, "{}  {}\n    {}", when(b.at_ms), b.title, b.detail);
        }
        if bans.len() > BANS_LISTED {
            let _ = writeln!(
                text,
                "… and {} more ('webfence bans' lists every one)",
                thousands(ban_total - BANS_LISTED as u64)
            );
        }
    }
    let json = json!({
        "host": host,
        "subject": subject,
        "bans": ban_total,
        "bans_by_rule": rules.iter().map(|(r, c)| (r.to_string(), json!(c))).collect::<serde_json::Map<_, _>>(),
        "events": events,
        "not_listed": overflow,
    });
    Message {
        subject,
        text,
        json,
    }
}

/// Slack's and Mattermost's incoming-webhook body.
pub fn slack(m: &Message) -> Value {
    json!({ "text": format!("*{}*\n```\n{}```", m.subject, m.text) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::event::Severity;

    fn ban(rule: &str, ip: &str, detail: &str) -> Event {
        let mut e = Event::new(
            Kind::Ban,
            Severity::Info,
            1_700_000_000_000,
            rule,
            &format!("ban {ip} for 1h ({rule})"),
            detail,
        );
        e.subject = ip.parse().ok();
        e
    }

    #[test]
    fn a_flood_is_one_message_with_counts_per_rule() {
        let mut events: Vec<Event> = (0..30)
            .map(|i| ban("flood-ip", &format!("203.0.113.{i}"), "121 requests in 10s"))
            .collect();
        events.push(ban("scanners", "198.51.100.1", "GET /.env"));
        let overflow = HashMap::from([("ban".to_string(), 5000u64)]);
        let m = render("web1", &events, &overflow);
        assert_eq!(
            m.subject,
            "[webfence web1] 5,031 bans (flood-ip 30, scanners 1, …)"
        );
        assert!(
            m.text
                .contains("5,031 bans:\n        30  flood-ip\n         1  scanners\n"),
            "{}",
            m.text
        );
        assert!(m.text.contains("… and 5,011 more"), "{}", m.text);
        assert_eq!(m.json["bans"], 5031);
        assert_eq!(m.json["bans_by_rule"]["flood-ip"], 30);
    }

    #[test]
    fn log_text_cannot_break_a_header_or_the_body() {
        let e = ban(
            "bad-agent",
            "203.0.113.7",
            "agent \"x\r\nBcc: evil@example.com\" $(touch /tmp/pwned)",
        );
        assert!(!e.detail.contains('\r') && !e.detail.contains('\n'));
        let mut guard = Event::new(
            Kind::GuardFired,
            Severity::Warning,
            0,
            "load",
            "guard\r\nBcc: x",
            "",
        );
        guard.title.push('\n');
        let m = render("h\r\nX: y", &[e, guard], &HashMap::new());
        assert!(!m.subject.contains(['\r', '\n']), "{:?}", m.subject);
        assert!(m.text.contains("$(touch /tmp/pwned)"));
        assert!(!m.text.contains("\r\n"));
    }

    #[test]
    fn a_single_event_is_its_own_subject() {
        let e = Event::new(
            Kind::Degraded,
            Severity::Critical,
            0,
            "nftables",
            "backend nftables DEGRADED",
            "nft: permission denied",
        );
        let m = render("web1", &[e], &HashMap::new());
        assert_eq!(m.subject, "[webfence web1] backend nftables DEGRADED");
        assert!(
            slack(&m)["text"]
                .as_str()
                .unwrap()
                .starts_with("*[webfence web1]")
        );
    }
}
