//! What the daemon tells people about: plain data, made where it happens
//! (a ban batch, a guard's check, a backend's health) and grouped later.

use serde::Serialize;

use crate::detect::addr::Subject;

/// How much an event matters, for `min_severity` filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn from_name(name: &str) -> Option<Severity> {
        Some(match name {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

/// The kinds of event, in the words `on = [...]` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A client banned (by a rule, a connection rule or a guard).
    Ban,
    /// A guard's condition became true.
    GuardFired,
    /// A guard's episode is over.
    GuardRecovered,
    /// The backend or the ledger stopped working.
    Degraded,
    /// ... and works again.
    Recovered,
    /// Something keeps a source from being read or decided on (a log
    /// missing, its format unknown, the follower far behind).
    Stalled,
    /// ... and it is read again.
    Resumed,
    /// A periodic summary.
    Digest,
}

impl Kind {
    /// The word for `on = [...]`: a resolution goes with its problem.
    pub fn category(self) -> &'static str {
        match self {
            Kind::Ban => "ban",
            Kind::GuardFired | Kind::GuardRecovered => "guard",
            Kind::Degraded | Kind::Recovered => "degraded",
            Kind::Stalled | Kind::Resumed => "stalled",
            Kind::Digest => "digest",
        }
    }

    pub const CATEGORIES: [&'static str; 5] = ["ban", "guard", "degraded", "stalled", "digest"];

    /// Whether this event ends a condition ("resolved" messages).
    pub fn resolves(self) -> bool {
        matches!(self, Kind::GuardRecovered | Kind::Recovered | Kind::Resumed)
    }
}

/// One event. Text fields that came from a log (`detail` of a ban) are
/// escaped for display when they are made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub kind: Kind,
    pub severity: Severity,
    /// Wall-clock milliseconds.
    pub at_ms: i64,
    /// The rule, guard, backend or source it is about: what `rules`
    /// filters on, and what `repeat` tells apart.
    pub about: String,
    #[serde(serialize_with = "subject_text")]
    pub subject: Option<Subject>,
    /// One line: "ban 203.0.113.7 for 1h (flood-ip)".
    pub title: String,
    /// More: the reason, a guard's values, an error.
    pub detail: String,
    pub duration_s: Option<u64>,
    /// Earlier bans of the subject (escalation).
    pub repeat: u32,
    /// Only these channels (a digest's); every channel that wants the
    /// kind when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
}

fn subject_text<S: serde::Serializer>(s: &Option<Subject>, ser: S) -> Result<S::Ok, S::Error> {
    match s {
        Some(s) => ser.collect_str(s),
        None => ser.serialize_none(),
    }
}

impl Event {
    /// A digest: its text is made of escaped parts and keeps its lines.
    pub fn digest(name: &str, at_ms: i64, subject: String, text: String, to: Vec<String>) -> Event {
        let mut e = Event::new(Kind::Digest, Severity::Info, at_ms, name, &subject, "");
        e.detail = text;
        e.to = to;
        e
    }

    /// An event with no subject; `title` and `detail` are escaped here.
    pub fn new(
        kind: Kind,
        severity: Severity,
        at_ms: i64,
        about: &str,
        title: &str,
        detail: &str,
    ) -> Event {
        let clean = |t: &str| crate::log::parse::escape_for_display(t.as_bytes());
        Event {
            kind,
            severity,
            at_ms,
            about: clean(about),
            subject: None,
            title: clean(title),
            detail: clean(detail),
            duration_s: None,
            repeat: 0,
            to: Vec::new(),
        }
    }
}
