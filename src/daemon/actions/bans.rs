//! Bans and named actions from decisions (the rule engine's, the
//! connection rules', the guards'): one batch goes to the ledger and the
//! kernel together, named actions run as hooks.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use super::enforcer::Enforcer;
use crate::daemon::lock;
use crate::detect::rules::Action;
use crate::detect::{Decision, RuleSet};
use crate::enforce::hooks::Facts;
use crate::enforce::ledger::NewBan;
use crate::notify::{Event, Kind, Severity};
use crate::report::decisions::{Context as DecisionContext, decision_json};
use crate::source::follow;

/// Bans logged one by one in a batch; a flood of thousands gets one line
/// for the rest (journald would rate-limit them anyway, and the ledger has
/// every one with its evidence).
const BANS_LOGGED_PER_BATCH: usize = 50;

/// One batch: every ban decided since the last wake-up goes to the ledger
/// and the kernel together; named actions run as hooks.
pub fn enforce(
    e: &mut Enforcer,
    decisions: &[Decision],
    set: &RuleSet,
    names: &[String],
    dry_run: bool,
    origin: &str,
) {
    if decisions.is_empty() {
        return;
    }
    let now = e.now();
    let cx = DecisionContext { names, zone: None };
    let mut bans = Vec::new();
    let mut facts = Vec::new();
    for d in decisions {
        let sample = d.evidence.samples.last().cloned();
        let what = if dry_run { "would " } else { "" };
        match &d.action {
            Action::Ban => {
                let secs = d.duration_s.unwrap_or(3600);
                if bans.len() < BANS_LOGGED_PER_BATCH {
                    tracing::info!(ip = %d.subject, rule = %d.rule, duration_s = secs, repeat = d.repeat,
                        "{what}ban: {}", d.reason);
                }
                if let Some(n) = &e.hooks.notify {
                    let mut ev = Event::new(
                        Kind::Ban,
                        Severity::Info,
                        now,
                        &d.rule,
                        &format!(
                            "{what}ban {} for {} ({}){}",
                            d.subject,
                            crate::detect::engine::human_duration(secs),
                            d.rule,
                            if d.repeat > 0 {
                                format!(", repeat {}", d.repeat)
                            } else {
                                String::new()
                            }
                        ),
                        &d.reason,
                    );
                    ev.subject = Some(d.subject);
                    ev.duration_s = Some(secs);
                    ev.repeat = d.repeat;
                    n.send(ev);
                }
                bans.push(NewBan {
                    subject: d.subject,
                    rule: d.rule.clone(),
                    reason: d.reason.clone(),
                    evidence: Some(decision_json(d, &cx)),
                    origin: origin.into(),
                    started_ms: now,
                    expires_ms: now.saturating_add(secs as i64 * 1000),
                });
                if e.hooks.on_ban.is_some() {
                    facts.push(Facts {
                        event: "ban".into(),
                        subject: d.subject,
                        rule: d.rule.clone(),
                        action: "ban".into(),
                        duration_s: Some(secs),
                        reason: d.reason.clone(),
                        sample,
                    });
                }
            }
            Action::Log => {
                tracing::info!(ip = %d.subject, rule = %d.rule, "log: {}", d.reason);
            }
            Action::Named(name) => {
                tracing::info!(ip = %d.subject, rule = %d.rule, action = %name, "{what}run action: {}", d.reason);
                let command = set
                    .actions
                    .iter()
                    .find(|a| &a.name == name)
                    .map(|a| a.command.clone());
                if let (Some(argv), Some(runner)) = (command, &e.hooks.runner) {
                    let f = Facts {
                        event: name.clone(),
                        subject: d.subject,
                        rule: d.rule.clone(),
                        action: name.clone(),
                        duration_s: d.duration_s,
                        reason: d.reason.clone(),
                        sample,
                    };
                    runner.submit(f.invocation(&argv));
                }
            }
        }
    }
    if bans.len() > BANS_LOGGED_PER_BATCH {
        tracing::info!(
            bans = bans.len(),
            "{}ban: {} more in this batch ('webfence bans' lists every one)",
            if dry_run { "would " } else { "" },
            bans.len() - BANS_LOGGED_PER_BATCH
        );
    }
    // A ledger failure is the enforcer's to report (once) and retry.
    let _ = e.ban(&bans, facts);
}

/// What the follow loop hands the enforcer thread, in order.
pub enum ToEnforcer {
    Decisions(Vec<Decision>),
    /// A reloaded ruleset (its named actions).
    Rules(Box<RuleSet>),
    /// Where the logs were read to when the decisions before this were
    /// sent.
    Checkpoints(Vec<follow::Checkpoint>),
}

/// Batches waiting for the enforcer before the follow loop waits.
pub const ENFORCER_QUEUE: usize = 4;
/// How often the enforcer expires bans and checks the backend when no
/// batch arrives.
const MAINTAIN_EVERY: Duration = Duration::from_millis(100);

/// The enforcer thread: applies each batch (everything queued at once, as
/// one transaction, when it fell behind), saves checkpoints after the
/// decisions before them, and keeps the backend maintained.
pub fn enforcer_loop(
    enforcer: &Mutex<Enforcer>,
    inbox: &std::sync::mpsc::Receiver<ToEnforcer>,
    mut set: RuleSet,
    names: &[String],
    dry_run: bool,
    checkpoint_path: Option<PathBuf>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let save = |cps: &[follow::Checkpoint]| {
        if let Some(path) = &checkpoint_path {
            if let Err(e) = follow::save_checkpoints(path, cps) {
                tracing::error!(file = %path.display(), error = %e, "cannot save checkpoints");
            }
        }
    };
    loop {
        let first = match inbox.recv_timeout(MAINTAIN_EVERY) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut decisions = Vec::new();
        let mut checkpoints = None;
        let mut next = first;
        while let Some(m) = next.take() {
            match m {
                ToEnforcer::Decisions(mut d) => decisions.append(&mut d),
                ToEnforcer::Rules(r) => {
                    // Decisions made under the old rules go out with the
                    // old actions first.
                    {
                        let mut e = lock(enforcer);
                        enforce(&mut e, &decisions, &set, names, dry_run, "rule");
                    }
                    decisions.clear();
                    set = *r;
                }
                ToEnforcer::Checkpoints(c) => {
                    // Later decisions wait for the next round, so these
                    // checkpoints are saved after exactly what preceded them.
                    checkpoints = Some(c);
                    break;
                }
            }
            next = inbox.try_recv().ok();
        }
        let unrecorded = {
            let mut e = lock(enforcer);
            enforce(&mut e, &decisions, &set, names, dry_run, "rule");
            e.maintain();
            e.pending()
        };
        // While bans wait in memory for the ledger, the logs are not marked
        // read past them: a crash then re-reads and decides them again.
        if let Some(c) = checkpoints.filter(|_| unrecorded == 0) {
            save(&c);
        }
    }
}
