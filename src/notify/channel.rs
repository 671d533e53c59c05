//! Where messages go: mail (SMTP with STARTTLS, implicit TLS and
//! authentication through `lettre`, or the local sendmail program), a
//! webhook (JSON POST through `ureq`, HTTPS verified, Slack/Mattermost
//! body on request), or a program (argument vector, no shell, the message
//! as JSON on stdin). Each attempt has a time limit.

use std::io::Write;
use std::time::Duration;

use super::event::{Event, Severity};
use super::group::GroupPolicy;
use super::render::{Message, slack};

#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// `smtp://[user:pass@]host[:port][?tls=required|opportunistic]`, or
    /// `smtps://...` for implicit TLS (lettre's URL form).
    Smtp {
        url: String,
    },
    Sendmail {
        program: String,
    },
    Webhook {
        url: String,
        slack: bool,
        headers: Vec<(String, String)>,
    },
    Command {
        argv: Vec<String>,
    },
}

/// A compiled `[notify.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSpec {
    pub name: String,
    pub transport: Transport,
    pub from: String,
    pub to: Vec<String>,
    /// With `{host}` and `{summary}`.
    pub subject: String,
    /// Event categories sent (ban, guard, degraded, stalled, digest).
    pub on: Vec<String>,
    /// Only events about these rules or guards (all when empty).
    pub rules: Vec<String>,
    pub min_severity: Severity,
    pub policy: GroupPolicy,
}

impl ChannelSpec {
    /// Whether this channel takes the event.
    pub fn wants(&self, e: &Event) -> bool {
        if !e.to.is_empty() {
            return e.to.contains(&self.name);
        }
        self.on.iter().any(|c| c == e.kind.category())
            && e.severity >= self.min_severity
            && (self.rules.is_empty()
                || e.kind.category() != "ban" && e.kind.category() != "guard"
                || self.rules.iter().any(|r| r == &e.about))
    }

    pub fn kind(&self) -> &'static str {
        match self.transport {
            Transport::Smtp { .. } | Transport::Sendmail { .. } => "mail",
            Transport::Webhook { .. } => "webhook",
            Transport::Command { .. } => "command",
        }
    }

    /// One delivery attempt.
    pub fn deliver(&self, m: &Message, host: &str, timeout: Duration) -> Result<(), String> {
        match &self.transport {
            Transport::Smtp { .. } | Transport::Sendmail { .. } => self.mail(m, host, timeout),
            Transport::Webhook {
                url,
                slack: as_slack,
                headers,
            } => {
                let body = if *as_slack { slack(m) } else { m.json.clone() };
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(timeout))
                    .build()
                    .into();
                let mut req = agent.post(url).header("Content-Type", "application/json");
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                req.send(body.to_string().as_bytes())
                    .map(|_| ())
                    .map_err(|e| format!("POST {}: {e}", redact(url)))
            }
            Transport::Command { argv } => run_with_stdin(argv, &m.json.to_string(), timeout),
        }
    }

    fn mail(&self, m: &Message, host: &str, timeout: Duration) -> Result<(), String> {
        use lettre::Transport as _;
        use lettre::message::header::ContentType;
        let summary = m
            .subject
            .strip_prefix(&format!("[webfence {host}] "))
            .unwrap_or(&m.subject);
        let subject = self
            .subject
            .replace("{host}", host)
            .replace("{summary}", summary);
        // No control character reaches a header, whatever the template.
        let subject: String = subject.chars().filter(|c| !c.is_control()).collect();
        let mut b = lettre::Message::builder()
            .from(
                self.from
                    .parse()
                    .map_err(|e| format!("from '{}': {e}", self.from))?,
            )
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            b = b.to(to.parse().map_err(|e| format!("to '{to}': {e}"))?);
        }
        let email = b.body(m.text.clone()).map_err(|e| e.to_string())?;
        match &self.transport {
            Transport::Smtp { url } => {
                let t = lettre::SmtpTransport::from_url(url)
                    .map_err(|e| format!("{}: {e}", redact(url)))?
                    .timeout(Some(timeout))
                    .build();
                t.send(&email)
                    .map(|_| ())
                    .map_err(|e| format!("{}: {e}", redact(url)))
            }
            Transport::Sendmail { program } => lettre::SendmailTransport::new_with_command(program)
                .send(&email)
                .map_err(|e| format!("{program}: {e}")),
            _ => Ok(()),
        }
    }
}

/// A URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Runs a program with `input` on stdin, to completion or `timeout`.
fn run_with_stdin(argv: &[String], input: &str, timeout: Duration) -> Result<(), String> {
    let program = argv.first().ok_or("no program")?;
    let mut child = std::process::Command::new(program)
        .args(&argv[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A program that does not read is its own business; its exit
        // status says the rest.
        let _ = stdin.write_all(input.as_bytes());
    }
    crate::enforce::hooks::wait_with_limit(&mut child, program, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::event::Kind;

    fn spec(transport: Transport) -> ChannelSpec {
        ChannelSpec {
            name: "t".into(),
            transport,
            from: "webfence@example.com".into(),
            to: vec!["ops@example.com".into()],
            subject: "[webfence {host}] {summary}".into(),
            on: vec!["ban".into(), "guard".into()],
            rules: vec!["flood-ip".into()],
            min_severity: Severity::Info,
            policy: GroupPolicy::default(),
        }
    }

    #[test]
    fn filters_by_category_rule_and_severity() {
        let s = spec(Transport::Command {
            argv: vec!["true".into()],
        });
        let ev = |kind, about: &str| Event::new(kind, Severity::Warning, 0, about, "t", "");
        assert!(s.wants(&ev(Kind::Ban, "flood-ip")));
        assert!(!s.wants(&ev(Kind::Ban, "scanners")));
        assert!(!s.wants(&ev(Kind::Degraded, "nftables")));
        let mut strict = s.clone();
        strict.min_severity = Severity::Critical;
        assert!(!strict.wants(&ev(Kind::Ban, "flood-ip")));
    }

    #[test]
    fn a_command_gets_the_message_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got.json");
        let s = spec(Transport::Command {
            argv: vec!["sh".into(), "-c".into(), format!("cat > {}", out.display())],
        });
        let m = crate::notify::render::render("h", &[], &Default::default());
        s.deliver(&m, "h", Duration::from_secs(5)).unwrap();
        let got: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(got["host"], "h");
        let slow = spec(Transport::Command {
            argv: vec!["sleep".into(), "5".into()],
        });
        let e = slow
            .deliver(&m, "h", Duration::from_millis(100))
            .unwrap_err();
        assert!(e.contains("was killed"), "{e}");
    }

    #[test]
    fn passwords_stay_out_of_errors() {
        assert_eq!(
            redact("smtp://user:secret@mail.example.com:587"),
            "smtp://…@mail.example.com:587"
        );
        assert_eq!(
            redact("https://hooks.example.com/T0"),
            "https://hooks.example.com/T0"
        );
    }
}
