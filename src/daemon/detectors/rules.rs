//! The rule engine as a detector: each request from the log source is
//! classified (which rules concern it) and fed to the sequential engine;
//! the decisions it makes are taken by the runtime after each read.

use crate::detect::allow::Allowlist;
use crate::detect::rules::ClassifyScratch;
use crate::detect::{Engine, RuleSet};
use crate::enforce::ledger::Ledger;
use crate::pipeline::LiveEvent;

use super::super::sources::machine::LogFigures;

/// Malformed lines logged one by one; the rest are counted in `status`.
const MALFORMED_SHOWN: u64 = 20;

pub struct RuleDetector {
    pub set: RuleSet,
    pub allow: Allowlist,
    pub engine: Engine,
    scratch: ClassifyScratch,
    /// The format being read, for `status`.
    pub format: Option<String>,
    malformed_shown: u64,
    /// Requests seen, for the guards' `req_rate`, `status_5xx_rate`, `lag`.
    pub figures: LogFigures,
    /// Verifies clients claiming a search engine's crawler.
    pub crawlers: Option<crate::detect::crawlers::Verifier>,
    /// `[farm]`: farm rules count every node's requests (a reloaded
    /// engine shares them too).
    pub share_counts: bool,
}

impl RuleDetector {
    pub fn new(set: RuleSet, allow: Allowlist, engine: Engine, format: Option<String>) -> Self {
        RuleDetector {
            set,
            allow,
            engine,
            scratch: ClassifyScratch::default(),
            format,
            malformed_shown: 0,
            figures: LogFigures::default(),
            crawlers: None,
            share_counts: false,
        }
    }

    pub fn on(&mut self, event: LiveEvent<'_>) {
        match event {
            LiveEvent::Format(parsers) => {
                self.engine
                    .set_field_text(crate::pipeline::field_text_of(parsers.to_vec()));
            }
            LiveEvent::Request(r, line, number) => {
                self.figures.requests += 1;
                self.figures.status_5xx += u64::from((500..600).contains(&r.status));
                self.figures.newest_ms = self.figures.newest_ms.max(r.time);
                let allowed = self.allow.contains(r.client);
                let crawler = self
                    .crawlers
                    .as_ref()
                    .map_or(Default::default(), |v| v.check(r.client, r.user_agent));
                let mut ev = self
                    .set
                    .classify_with(r, allowed, crawler, &mut self.scratch);
                ev.loc = crate::detect::rules::loc(0, number);
                self.engine.feed(&ev, line);
            }
            LiveEvent::Malformed(path, number, reason) => {
                self.malformed_shown += 1;
                if self.malformed_shown <= MALFORMED_SHOWN {
                    tracing::warn!(file = %path.display(), line = number, "malformed log line: {reason}");
                }
            }
        }
    }
}

/// A rule engine that knows the ledger: bans in force are not decided
/// again, and past bans count for escalation (after a restart or reload).
pub fn seeded_engine(
    set: &RuleSet,
    ledger: &Ledger,
    now: i64,
) -> Result<Engine, crate::enforce::ledger::LedgerError> {
    let mut engine = Engine::new(set.clone());
    for b in ledger.active(now)? {
        engine.restore_ban(b.subject, b.expires_ms);
    }
    for (subject, count, last) in ledger.history(now.saturating_sub(set.escalation.remember_ms))? {
        engine.remember_bans(subject, count, last);
    }
    Ok(engine)
}
