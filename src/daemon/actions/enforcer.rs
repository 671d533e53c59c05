//! The enforcer: the ledger, the backend and the hooks behind one lock,
//! shared by the follow loop (rule decisions) and the control socket
//! (manual bans). Every change goes to the ledger first, then to the
//! kernel; when the backend fails the ledger still records, the state is
//! reported as degraded, and `maintain` retries and reconciles.

use crate::detect::addr::Subject;
use crate::detect::allow::Allowlist;
use crate::enforce::hooks::{Facts, HookRunner, Invocation};
use crate::enforce::ledger::{Ledger, LedgerBan, LedgerError, NewBan};
use crate::enforce::{Backend, BanEntry, EnforceError};
use crate::notify::{Event, Kind, Severity};

/// Wall-clock milliseconds; a trait object so tests can move time.
pub type Clock = Box<dyn Fn() -> i64 + Send>;

pub fn wall_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Health {
    pub ok: bool,
    /// The last failure, while degraded.
    pub error: Option<String>,
    /// When the current state began.
    pub since_ms: i64,
    pub failures: u64,
}

impl Health {
    /// Records a failure; true when it starts an episode (to be said once).
    fn fail(&mut self, now_ms: i64, error: String) -> bool {
        let starts = self.ok;
        self.failures += 1;
        if starts {
            self.since_ms = now_ms;
        }
        self.ok = false;
        self.error = Some(error);
        starts
    }

    /// Back to ok; true when it ends an episode.
    fn restore(&mut self, now_ms: i64) -> bool {
        let ends = !self.ok;
        self.ok = true;
        self.error = None;
        self.since_ms = now_ms;
        ends
    }
}

/// Changes the rule engine must learn from outside (the control socket).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EngineUpdate {
    Banned(Subject, i64),
    Lifted(Subject),
    /// Bans remembered for escalation (count, last): the farm's.
    Remembered(Subject, u32, i64),
}

/// Engine updates waiting for the follow loop.
pub type Updates = std::sync::Arc<std::sync::Mutex<Vec<EngineUpdate>>>;

/// The updates waiting, taken.
pub fn take_updates(updates: &Updates) -> Vec<EngineUpdate> {
    std::mem::take(&mut *crate::daemon::lock(updates))
}

/// What reconciliation changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub added: usize,
    pub removed: usize,
    /// Kernel bans the ledger had no record of, now recorded.
    pub adopted: usize,
}

pub struct Hooks {
    pub runner: Option<HookRunner>,
    pub on_ban: Option<Vec<String>>,
    pub on_unban: Option<Vec<String>>,
    pub kill_connections: bool,
    /// Where events for the notification channels go.
    pub notify: Option<super::notify::NotifySender>,
}

pub struct Enforcer {
    pub ledger: Ledger,
    /// How long each batch took (ledger and kernel), for the metrics.
    pub batch_seconds: prometheus_client::metrics::histogram::Histogram,
    backend: Box<dyn Backend + Send>,
    pub health: Health,
    /// Whether the ledger takes writes. A full or read-only state directory
    /// makes the daemon degraded, not blind: bans go on into the kernel
    /// and wait in `pending` until they can be recorded.
    pub ledger_health: Health,
    /// Bans in force that the ledger could not record yet, oldest first.
    pending: Vec<NewBan>,
    last_ledger_attempt_ms: i64,
    pub hooks: Hooks,
    pub allow: Allowlist,
    /// `[farm]`: where this node's own bans and unbans go to be published.
    pub farm: Option<super::farm::FarmOutbox>,
    /// Shared with the follow loop, which drains it without waiting for
    /// the enforcer's lock (held through a big batch).
    updates: Updates,
    /// Subjects whose bans expired lately, and when.
    recently_expired: crate::stats::Map<Subject, i64>,
    clock: Clock,
    retry_ms: i64,
    check_ms: i64,
    last_attempt_ms: i64,
    last_expiry_ms: i64,
    last_quick_ms: i64,
}

/// How often the backend's table is looked for (`Backend::quick_check`).
const QUICK_CHECK_EVERY_MS: i64 = 1000;

/// How often the ledger is searched for bans whose time is up.
const EXPIRE_EVERY_MS: i64 = 100;

/// Whole seconds left until `expires_ms`, at least 1. Rounded down, so
/// the kernel lifts a ban no later than the ledger closes it.
fn remaining_s(expires_ms: i64, now_ms: i64) -> u64 {
    ((expires_ms - now_ms) / 1000).max(1) as u64
}

/// Bans kept in memory while the ledger cannot take them.
const MAX_PENDING: usize = 1_000_000;

/// How long a ban found in a kernel without timeouts (null routes) and
/// not in the ledger is kept.
const ADOPTED_UNTIMED_S: u64 = 3600;

/// Batches at least this big go to the ledger and the kernel at once.
const PARALLEL_BATCH: usize = 1000;

/// How long after the ledger closes an expired ban its element may still
/// be in the kernel (a ban applied with under a second left gets one).
const RECENT_EXPIRY_MS: i64 = 2000;

/// `ss -K` arguments for up to this many subjects at once.
const KILL_BATCH: usize = 64;

impl Enforcer {
    pub fn new(
        ledger: Ledger,
        backend: Box<dyn Backend + Send>,
        hooks: Hooks,
        allow: Allowlist,
        clock: Clock,
        retry_s: u64,
        check_every_s: u64,
    ) -> Enforcer {
        let now = clock();
        Enforcer {
            batch_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0005, 4.0, 9),
            ),
            ledger,
            backend,
            health: Health {
                ok: false,
                error: Some("not set up yet".into()),
                since_ms: now,
                failures: 0,
            },
            ledger_health: Health {
                ok: true,
                error: None,
                since_ms: now,
                failures: 0,
            },
            pending: Vec::new(),
            last_ledger_attempt_ms: i64::MIN,
            hooks,
            allow,
            farm: None,
            updates: Updates::default(),
            recently_expired: Default::default(),
            clock,
            retry_ms: retry_s as i64 * 1000,
            check_ms: check_every_s as i64 * 1000,
            last_attempt_ms: i64::MIN,
            last_expiry_ms: i64::MIN,
            last_quick_ms: i64::MIN,
        }
    }

    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Tells the rule engine about a change it did not decide.
    pub fn notify(&self, update: EngineUpdate) {
        crate::daemon::lock(&self.updates).push(update);
    }

    /// Where the engine finds its updates.
    pub fn updates(&self) -> Updates {
        self.updates.clone()
    }

    pub fn backend_name(&self) -> &str {
        self.backend.name()
    }

    /// What the kernel rules dropped, as of the last health check.
    pub fn dropped(&self) -> Option<crate::enforce::Dropped> {
        self.backend.dropped()
    }

    fn degrade(&mut self, e: &EnforceError) {
        let now = self.now();
        if self.health.fail(now, e.to_string()) {
            tracing::error!(backend = self.backend.name(), error = %e,
                "backend failed; running degraded: bans are recorded in the ledger and applied when it is back");
            self.tell(
                Kind::Degraded,
                Severity::Critical,
                format!(
                    "backend {} DEGRADED: bans are recorded but not enforced",
                    self.backend.name()
                ),
                e.to_string(),
            );
        }
    }

    fn recover(&mut self, r: Reconciled) {
        let now = self.now();
        // The first reconcile at start is not a recovery.
        let after_failure = self.health.failures > 0;
        if self.health.restore(now) {
            if after_failure {
                self.tell(
                    Kind::Recovered,
                    Severity::Info,
                    format!(
                        "backend {} recovered: bans are enforced again",
                        self.backend.name()
                    ),
                    format!("{} bans put back in the kernel", r.added),
                );
            }
            tracing::info!(
                backend = self.backend.name(),
                added = r.added,
                adopted = r.adopted,
                "backend ready; kernel reconciled with the ledger"
            );
        }
    }

    /// Tells the notification channels about a health change; `about` is
    /// the backend's name or "ledger".
    fn tell(&self, kind: Kind, severity: Severity, title: String, detail: String) {
        if let Some(n) = &self.hooks.notify {
            let about = if title.starts_with("ledger") {
                "ledger"
            } else {
                self.backend.name()
            };
            n.send(Event::new(
                kind,
                severity,
                self.now(),
                about,
                &title,
                &detail,
            ));
        }
    }

    /// Bans waiting to be recorded.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether everything is enforced and recorded.
    pub fn healthy(&self) -> bool {
        self.health.ok && self.ledger_health.ok
    }

    /// A ledger write failed: said once per episode, not once per batch
    /// (a full disk under a flood would write thousands of lines).
    fn ledger_failed(&mut self, e: &LedgerError) {
        let now = self.now();
        if self.ledger_health.fail(now, e.to_string()) {
            tracing::error!(error = %e,
                "cannot write the ledger; running degraded: bans still go into the kernel and are kept in memory until they can be recorded");
            self.tell(
                Kind::Degraded,
                Severity::Critical,
                "ledger DEGRADED: bans are enforced but not recorded".into(),
                e.to_string(),
            );
        }
    }

    fn ledger_recovered(&mut self, recorded: usize) {
        let now = self.now();
        if self.ledger_health.restore(now) {
            self.tell(
                Kind::Recovered,
                Severity::Info,
                "ledger recovered: bans are recorded again".into(),
                format!("{recorded} bans held in memory recorded"),
            );
            tracing::info!(
                recorded,
                "the ledger takes writes again; bans held in memory are recorded"
            );
        }
    }

    /// Keeps bans the ledger refused, to record them later. Past the bound
    /// the oldest go: they stay in the kernel, and a reconcile adopts them
    /// from there.
    fn hold(&mut self, bans: &[NewBan]) {
        self.pending.extend_from_slice(bans);
        if self.pending.len() > MAX_PENDING {
            let over = self.pending.len() - MAX_PENDING;
            self.pending.drain(..over);
        }
    }

    /// Records what waits, if the ledger takes it now.
    fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let now = self.now();
        self.last_ledger_attempt_ms = now;
        let pending = std::mem::take(&mut self.pending);
        let renewed = self
            .ledger
            .renewals(&pending)
            .unwrap_or_else(|_| vec![true; pending.len()]);
        match self.ledger.record(&pending, &renewed) {
            Ok(()) => self.ledger_recovered(pending.len()),
            Err(e) => {
                self.ledger_failed(&e);
                self.pending = pending;
            }
        }
    }

    /// Sets the backend up and makes the kernel match the ledger: re-adds
    /// what is missing (with the time that is left, never more), removes
    /// what should not be there.
    pub fn reconcile(&mut self) -> Result<Reconciled, EnforceError> {
        self.last_attempt_ms = self.now();
        let res = self.try_reconcile();
        match &res {
            Ok(r) => self.recover(*r),
            Err(e) => self.degrade(e),
        }
        res
    }

    fn try_reconcile(&mut self) -> Result<Reconciled, EnforceError> {
        self.backend.setup()?;
        let now = self.now();
        let want = self.ledger.active(now).map_err(|e| EnforceError::Output {
            program: "ledger".into(),
            reason: e.to_string(),
        })?;
        if !self.backend.reconciles() {
            return Ok(Reconciled::default());
        }
        let kernel = self.backend.list()?;
        let timed = self.backend.expires_itself();
        let held: crate::stats::Map<Subject, u64> =
            kernel.iter().map(|k| (k.subject, k.expires_s)).collect();
        let want: Vec<(Subject, i64)> = want
            .iter()
            .map(|b| (b.subject, b.expires_ms))
            .chain(
                self.pending
                    .iter()
                    .filter(|b| b.expires_ms > now)
                    .map(|b| (b.subject, b.expires_ms)),
            )
            .collect();
        let wanted: crate::stats::Map<Subject, i64> = want.iter().copied().collect();
        // A ban in webfence's table that the ledger does not know was put
        // there by webfence (a batch whose record failed or was cut off by
        // a crash) or by the admin: either way it is kept and recorded,
        // with the time the kernel gives it (an hour where the backend has
        // no timeouts). Removing it would let the abuse through.
        let adopt: Vec<NewBan> = kernel
            .iter()
            .filter(|k| !wanted.contains_key(&k.subject))
            .map(|k| {
                let left_s = if timed && k.expires_s > 0 {
                    k.expires_s
                } else {
                    ADOPTED_UNTIMED_S
                };
                NewBan {
                    subject: k.subject,
                    rule: "kernel".into(),
                    reason: "found in webfence's kernel set without a ledger record".into(),
                    evidence: None,
                    origin: "kernel".into(),
                    started_ms: now,
                    expires_ms: now.saturating_add(left_s as i64 * 1000),
                }
            })
            .collect();
        if !adopt.is_empty() {
            let renewed = vec![false; adopt.len()];
            match self.ledger.record(&adopt, &renewed) {
                Ok(()) => tracing::warn!(
                    count = adopt.len(),
                    "bans in the kernel had no ledger record; recorded them with the time they have left"
                ),
                Err(e) => {
                    self.ledger_failed(&e);
                    self.hold(&adopt);
                }
            }
        }
        let add: Vec<BanEntry> = want
            .iter()
            .filter(|&&(subject, expires_ms)| match held.get(&subject) {
                None => true,
                // Held longer than the ledger allows: put the right timeout.
                Some(&left) => timed && left > remaining_s(expires_ms, now) + 2,
            })
            .map(|&(subject, expires_ms)| BanEntry {
                subject,
                timeout_s: remaining_s(expires_ms, now),
            })
            .collect();
        self.backend.apply(&add, &[])?;
        Ok(Reconciled {
            added: add.len(),
            removed: 0,
            adopted: adopt.len(),
        })
    }

    /// Called often: expires bans; when degraded, retries and reconciles
    /// every `retry`; when healthy, checks the backend every `check_every`.
    pub fn maintain(&mut self) {
        let now = self.now();
        if now.saturating_sub(self.last_expiry_ms) >= EXPIRE_EVERY_MS {
            self.last_expiry_ms = now;
            self.expire();
        }
        if !self.pending.is_empty()
            && now.saturating_sub(self.last_ledger_attempt_ms) >= self.retry_ms
        {
            self.flush_pending();
        }
        if self.health.ok && now.saturating_sub(self.last_quick_ms) >= QUICK_CHECK_EVERY_MS {
            self.last_quick_ms = now;
            if let Err(e) = self.backend.quick_check() {
                self.degrade(&e);
                self.last_attempt_ms = now;
                let _ = self.reconcile();
                return;
            }
        }
        let wait = if self.health.ok {
            self.check_ms
        } else {
            self.retry_ms
        };
        if now.saturating_sub(self.last_attempt_ms) < wait {
            return;
        }
        self.last_attempt_ms = now;
        if !self.health.ok {
            let _ = self.reconcile();
        } else {
            self.verify();
        }
    }

    /// The periodic check: the backend's rules must be in place and every
    /// ban the ledger holds must be in the kernel. A set or chain flushed
    /// behind webfence's back is said and repaired, not left unenforced.
    fn verify(&mut self) {
        let held = match self.backend.inspect() {
            Ok(held) => held,
            Err(e) => {
                self.degrade(&e);
                let _ = self.reconcile();
                return;
            }
        };
        if !self.backend.reconciles() {
            return;
        }
        let now = self.now();
        let Ok(active) = self.ledger.active(now) else {
            return;
        };
        let in_kernel: std::collections::HashSet<Subject, foldhash::fast::RandomState> =
            held.iter().map(|k| k.subject).collect();
        // A ban that runs out within the next seconds may already be gone.
        let missing = active
            .iter()
            .map(|b| (b.subject, b.expires_ms))
            .chain(self.pending.iter().map(|b| (b.subject, b.expires_ms)))
            .filter(|(s, expires_ms)| *expires_ms > now + 2000 && !in_kernel.contains(s))
            .count();
        if missing > 0 {
            let e = EnforceError::Output {
                program: self.backend.name().to_string(),
                reason: format!(
                    "{missing} bans were missing from the kernel (removed behind webfence's back?)"
                ),
            };
            self.degrade(&e);
            let _ = self.reconcile();
        }
    }

    /// Records and applies bans; `facts` (one per ban) feed the hooks.
    /// Returns how many were applied to the kernel now.
    pub fn ban(&mut self, bans: &[NewBan], facts: Vec<Facts>) -> Result<usize, LedgerError> {
        if bans.is_empty() {
            return Ok(0);
        }
        let started = std::time::Instant::now();
        // The farm hears of this node's own bans (not of those it read from
        // the farm), on a channel that never blocks.
        if let Some(tx) = &self.farm {
            for b in bans.iter().filter(|b| !b.origin.starts_with("farm:")) {
                let _ = tx.send(super::farm::FarmOp::Ban(b.clone()));
            }
        }
        let now = self.now();
        self.recently_expired
            .retain(|_, &mut at| now.saturating_sub(at) < RECENT_EXPIRY_MS);
        let renewed = match self.ledger.renewals(bans) {
            Ok(mut r) => {
                // A ban the ledger has just closed may still be in the
                // kernel for a moment: a plain add would leave its old,
                // spent timeout in place, so renew it.
                for (again, b) in r.iter_mut().zip(bans) {
                    *again |= self.recently_expired.contains_key(&b.subject);
                }
                r
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the ledger's open bans");
                vec![true; bans.len()]
            }
        };
        let (mut fresh, mut renew) = (Vec::new(), Vec::new());
        for (b, &again) in bans.iter().zip(&renewed) {
            let entry = BanEntry {
                subject: b.subject,
                timeout_s: remaining_s(b.expires_ms, now),
            };
            if again {
                renew.push(entry)
            } else {
                fresh.push(entry)
            }
        }
        let to_kernel = self.health.ok;
        let (mut ledger_time, mut kernel_time) = Default::default();
        let (recorded, applied) = if bans.len() >= PARALLEL_BATCH && to_kernel {
            // Both sides of a big batch take hundreds of milliseconds, so
            // they run at once. A crash in between can leave bans of this
            // batch in the kernel that the ledger never recorded; the
            // restart removes them, which is what a crash before the batch
            // would have meant: no recorded ban is lost either way.
            let (ledger, backend) = (&mut self.ledger, &mut self.backend);
            std::thread::scope(|scope| {
                let kernel = scope.spawn(|| {
                    let t = std::time::Instant::now();
                    (backend.apply_new(&fresh, &renew), t.elapsed())
                });
                let t = std::time::Instant::now();
                let recorded = ledger.record(bans, &renewed);
                ledger_time = t.elapsed();
                let applied = match kernel.join() {
                    Ok((applied, took)) => {
                        kernel_time = took;
                        applied
                    }
                    Err(_) => Err(EnforceError::Output {
                        program: "backend".into(),
                        reason: "the thread applying bans panicked".into(),
                    }),
                };
                (recorded, Some(applied))
            })
        } else {
            let t = std::time::Instant::now();
            let recorded = self.ledger.record(bans, &renewed);
            ledger_time = t.elapsed();
            let t = std::time::Instant::now();
            let applied = to_kernel.then(|| self.backend.apply_new(&fresh, &renew));
            kernel_time = t.elapsed();
            (recorded, applied)
        };
        match &recorded {
            // The kernel has the bans either way; the record waits in
            // memory and is written when the ledger takes it.
            Err(e) => {
                self.ledger_failed(e);
                self.hold(bans);
            }
            Ok(()) if !self.ledger_health.ok => self.flush_pending(),
            Ok(()) => {}
        }
        let applied = match applied {
            Some(Ok(())) => bans.len(),
            Some(Err(e)) => {
                self.degrade(&e);
                0
            }
            None => 0,
        };
        self.batch_seconds.observe(started.elapsed().as_secs_f64());
        tracing::debug!(
            bans = bans.len(),
            renewed = renew.len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            ledger_ms = ledger_time.as_secs_f64() * 1e3,
            kernel_ms = kernel_time.as_secs_f64() * 1e3,
            "batch applied"
        );
        if self.hooks.kill_connections {
            self.kill(bans.iter().map(|b| b.subject));
        }
        if let Some(argv) = &self.hooks.on_ban {
            for f in &facts {
                let inv = f.invocation(argv);
                self.submit(inv);
            }
        }
        Ok(applied)
    }

    fn submit(&self, inv: Invocation) {
        if let Some(r) = &self.hooks.runner {
            r.submit(inv);
        }
    }

    fn kill(&self, subjects: impl Iterator<Item = Subject>) {
        let subjects: Vec<Subject> = subjects.collect();
        for chunk in subjects.chunks(KILL_BATCH) {
            let mut argv = vec!["ss".to_string(), "-K".to_string()];
            for (i, s) in chunk.iter().enumerate() {
                if i > 0 {
                    argv.push("or".into());
                }
                argv.push("dst".into());
                argv.push(s.to_string());
            }
            self.submit(Invocation {
                argv,
                env: Vec::new(),
            });
        }
    }

    /// Ends bans before their time; returns the ones that were in force.
    pub fn unban(&mut self, subjects: &[Subject], by: &str) -> Result<Vec<LedgerBan>, LedgerError> {
        let now = self.now();
        let ended = self.ledger.end(subjects, by, now)?;
        if let Some(tx) = self.farm.as_ref().filter(|_| by != "farm") {
            for b in &ended {
                let _ = tx.send(super::farm::FarmOp::Unban(b.subject));
            }
        }
        self.lift(&ended, by);
        Ok(ended)
    }

    pub fn unban_all(&mut self, by: &str) -> Result<Vec<LedgerBan>, LedgerError> {
        let now = self.now();
        let all: Vec<Subject> = self.ledger.active(now)?.iter().map(|b| b.subject).collect();
        self.unban(&all, by)
    }

    fn lift(&mut self, ended: &[LedgerBan], why: &str) {
        if ended.is_empty() {
            return;
        }
        let subjects: Vec<Subject> = ended.iter().map(|b| b.subject).collect();
        let needs_kernel = why != "expired" || !self.backend.expires_itself();
        if self.health.ok && needs_kernel {
            if let Err(e) = self.backend.apply(&[], &subjects) {
                self.degrade(&e);
            }
        }
        crate::daemon::lock(&self.updates)
            .extend(subjects.iter().map(|s| EngineUpdate::Lifted(*s)));
        if let Some(argv) = self.hooks.on_unban.clone() {
            for b in ended {
                let f = Facts {
                    event: "unban".into(),
                    subject: b.subject,
                    rule: b.rule.clone(),
                    action: why.into(),
                    duration_s: None,
                    reason: b.reason.clone(),
                    sample: None,
                };
                self.submit(f.invocation(&argv));
            }
        }
    }

    /// Ends bans whose time is up.
    pub fn expire(&mut self) -> usize {
        let now = self.now();
        let due = match self.ledger.due(now) {
            Ok(d) if d.is_empty() => return 0,
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the ledger");
                return 0;
            }
        };
        let subjects: Vec<Subject> = due.iter().map(|b| b.subject).collect();
        match self.ledger.end(&subjects, "expired", now) {
            Ok(ended) => {
                for b in &ended {
                    tracing::info!(ip = %b.subject, rule = %b.rule, "ban expired");
                    self.recently_expired.insert(b.subject, now);
                }
                self.lift(&ended, "expired");
                ended.len()
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record expired bans");
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::enforce::KernelBan;

    /// The kernel as a map of subject to seconds left, and every batch the
    /// enforcer sent, as (fresh, renewed, removed) subjects.
    #[derive(Default)]
    struct FakeKernel {
        held: std::collections::BTreeMap<String, u64>,
        batches: Vec<(Vec<String>, Vec<String>, Vec<String>)>,
        broken: bool,
    }

    struct Fake(Arc<Mutex<FakeKernel>>);

    fn names(entries: &[BanEntry]) -> Vec<String> {
        entries.iter().map(|b| b.subject.to_string()).collect()
    }

    impl Fake {
        fn fail_if_broken(k: &FakeKernel) -> Result<(), EnforceError> {
            if k.broken {
                return Err(EnforceError::Output {
                    program: "fake".into(),
                    reason: "broken".into(),
                });
            }
            Ok(())
        }
    }

    impl Backend for Fake {
        fn name(&self) -> &str {
            "fake"
        }
        fn setup(&mut self) -> Result<(), EnforceError> {
            Fake::fail_if_broken(&self.0.lock().unwrap())
        }
        fn apply(&mut self, add: &[BanEntry], remove: &[Subject]) -> Result<(), EnforceError> {
            self.apply_new(&[], add)?;
            let mut k = self.0.lock().unwrap();
            let removed: Vec<String> = remove.iter().map(|s| s.to_string()).collect();
            for r in &removed {
                k.held.remove(r);
            }
            k.batches.push((Vec::new(), Vec::new(), removed));
            Ok(())
        }
        fn apply_new(
            &mut self,
            fresh: &[BanEntry],
            renew: &[BanEntry],
        ) -> Result<(), EnforceError> {
            let mut k = self.0.lock().unwrap();
            Fake::fail_if_broken(&k)?;
            for b in fresh.iter().chain(renew) {
                k.held.insert(b.subject.to_string(), b.timeout_s);
            }
            if !fresh.is_empty() || !renew.is_empty() {
                k.batches.push((names(fresh), names(renew), Vec::new()));
            }
            Ok(())
        }
        fn list(&mut self) -> Result<Vec<KernelBan>, EnforceError> {
            let k = self.0.lock().unwrap();
            Fake::fail_if_broken(&k)?;
            Ok(k.held
                .iter()
                .map(|(s, &left)| KernelBan {
                    subject: s.parse().unwrap(),
                    expires_s: left,
                })
                .collect())
        }
        fn teardown(&mut self) -> Result<(), EnforceError> {
            Ok(())
        }
    }

    struct Setup {
        enforcer: Enforcer,
        kernel: Arc<Mutex<FakeKernel>>,
        clock: Arc<AtomicI64>,
        _dir: tempfile::TempDir,
    }

    const T0: i64 = 1_700_000_000_000;

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("ledger.db")).unwrap();
        let kernel = Arc::new(Mutex::new(FakeKernel::default()));
        let clock = Arc::new(AtomicI64::new(T0));
        let c = clock.clone();
        let hooks = Hooks {
            runner: None,
            on_ban: None,
            on_unban: None,
            kill_connections: false,
            notify: None,
        };
        let mut enforcer = Enforcer::new(
            ledger,
            Box::new(Fake(kernel.clone())),
            hooks,
            Allowlist::default(),
            Box::new(move || c.load(Ordering::SeqCst)),
            5,
            30,
        );
        enforcer.reconcile().unwrap();
        Setup {
            enforcer,
            kernel,
            clock,
            _dir: dir,
        }
    }

    fn new_ban(subject: &str, now: i64, secs: i64) -> NewBan {
        NewBan {
            subject: subject.parse().unwrap(),
            rule: "flood".into(),
            reason: "test".into(),
            evidence: None,
            origin: "rule".into(),
            started_ms: now,
            expires_ms: now + secs * 1000,
        }
    }

    fn held(s: &Setup) -> Vec<(String, u64)> {
        let k = s.kernel.lock().unwrap();
        k.held.iter().map(|(a, &t)| (a.clone(), t)).collect()
    }

    #[test]
    fn reconcile_restores_missing_bans_without_extending_them_and_adopts_strangers() {
        let mut s = setup();
        s.enforcer
            .ban(&[new_ban("203.0.113.1", T0, 60)], Vec::new())
            .unwrap();
        {
            let mut k = s.kernel.lock().unwrap();
            k.held.clear();
            k.held.insert("198.18.0.1".into(), 3600);
        }
        s.clock.store(T0 + 20_500, Ordering::SeqCst);
        let r = s.enforcer.reconcile().unwrap();
        assert_eq!(
            r,
            Reconciled {
                added: 1,
                removed: 0,
                adopted: 1,
            }
        );
        // 39.5 s were left: the kernel gets 39, never more than the ledger.
        assert_eq!(
            held(&s),
            [
                ("198.18.0.1".to_string(), 3600),
                ("203.0.113.1".to_string(), 39)
            ]
        );
        // The stranger is recorded with the time the kernel gave it.
        let now = T0 + 20_500;
        let active = s.enforcer.ledger.active(now).unwrap();
        let adopted = active
            .iter()
            .find(|b| b.subject.to_string() == "198.18.0.1")
            .unwrap();
        assert_eq!(
            (adopted.origin.as_str(), adopted.expires_ms),
            ("kernel", now + 3_600_000)
        );
    }

    /// Regression: with the state directory full, the ledger stopped while
    /// the kernel went on, status said ok, and a restart's reconcile
    /// removed the unrecorded bans from the kernel.
    #[test]
    fn a_ledger_that_refuses_writes_degrades_keeps_bans_and_records_them_later() {
        let mut s = setup();
        s.enforcer.ledger.refuse_writes(true).unwrap();
        let applied = s
            .enforcer
            .ban(
                &[
                    new_ban("203.0.113.7", T0, 600),
                    new_ban("203.0.113.8", T0, 600),
                ],
                Vec::new(),
            )
            .unwrap();
        assert_eq!(applied, 2, "the kernel gets the bans anyway");
        assert!(!s.enforcer.ledger_health.ok && !s.enforcer.healthy());
        assert_eq!(s.enforcer.pending(), 2);
        // A reconcile meanwhile (backend retry, restart of the backend)
        // keeps them in the kernel.
        s.enforcer.reconcile().unwrap();
        assert_eq!(held(&s).len(), 2);
        // Still refused: they wait.
        s.clock.store(T0 + 6000, Ordering::SeqCst);
        s.enforcer.maintain();
        assert_eq!(s.enforcer.pending(), 2);
        // Space is back: the next retry records them with their evidence.
        s.enforcer.ledger.refuse_writes(false).unwrap();
        s.clock.store(T0 + 12_000, Ordering::SeqCst);
        s.enforcer.maintain();
        assert_eq!(s.enforcer.pending(), 0);
        assert!(s.enforcer.healthy());
        let active = s.enforcer.ledger.active(T0 + 12_000).unwrap();
        assert_eq!(active.len(), 2);
        assert!(
            active
                .iter()
                .all(|b| b.rule == "flood" && b.expires_ms == T0 + 600_000)
        );
    }

    #[test]
    fn a_failing_backend_degrades_records_and_catches_up_on_retry() {
        let mut s = setup();
        s.kernel.lock().unwrap().broken = true;
        let applied = s
            .enforcer
            .ban(&[new_ban("203.0.113.2", T0, 600)], Vec::new())
            .unwrap();
        assert_eq!(applied, 0);
        assert!(!s.enforcer.health.ok);
        assert_eq!(s.enforcer.ledger.active(T0).unwrap().len(), 1);
        s.kernel.lock().unwrap().broken = false;
        // Not before the retry interval (5 s) has passed.
        s.clock.store(T0 + 1000, Ordering::SeqCst);
        s.enforcer.maintain();
        assert!(held(&s).is_empty());
        s.clock.store(T0 + 6000, Ordering::SeqCst);
        s.enforcer.maintain();
        assert!(s.enforcer.health.ok);
        assert_eq!(held(&s), [("203.0.113.2".to_string(), 594)]);
    }

    /// Regression: a ban decided just after the ledger closed an expired
    /// one went in as a plain add, which leaves the old element's spent
    /// timeout in place on kernels that do not refresh it.
    #[test]
    fn a_ban_right_after_an_expiry_is_sent_as_a_renewal() {
        let mut s = setup();
        s.enforcer
            .ban(&[new_ban("203.0.113.3", T0, 10)], Vec::new())
            .unwrap();
        s.clock.store(T0 + 10_050, Ordering::SeqCst);
        assert_eq!(s.enforcer.expire(), 1);
        let now = T0 + 10_100;
        s.clock.store(now, Ordering::SeqCst);
        s.enforcer
            .ban(
                &[
                    new_ban("203.0.113.3", now, 60),
                    new_ban("203.0.113.4", now, 60),
                ],
                Vec::new(),
            )
            .unwrap();
        let last = s.kernel.lock().unwrap().batches.last().cloned().unwrap();
        assert_eq!(last.0, ["203.0.113.4"]);
        assert_eq!(last.1, ["203.0.113.3"]);
        // Long after the expiry, a new ban is fresh again.
        s.clock.store(now + 60_000, Ordering::SeqCst);
        assert_eq!(s.enforcer.expire(), 2);
        let later = now + 63_000;
        s.clock.store(later, Ordering::SeqCst);
        s.enforcer
            .ban(&[new_ban("203.0.113.3", later, 60)], Vec::new())
            .unwrap();
        let last = s.kernel.lock().unwrap().batches.last().cloned().unwrap();
        assert_eq!(last.0, ["203.0.113.3"]);
    }

    #[test]
    fn a_big_batch_reaches_both_the_ledger_and_the_kernel() {
        let mut s = setup();
        let bans: Vec<NewBan> = (0..PARALLEL_BATCH as u32 + 10)
            .map(|i| {
                new_ban(
                    &std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string(),
                    T0,
                    60,
                )
            })
            .collect();
        let applied = s.enforcer.ban(&bans, Vec::new()).unwrap();
        assert_eq!(applied, bans.len());
        assert_eq!(held(&s).len(), bans.len());
        assert_eq!(
            s.enforcer.ledger.counts(T0).unwrap(),
            (bans.len() as u64, bans.len() as u64)
        );
        // Banning them all again renews every one.
        s.enforcer.ban(&bans, Vec::new()).unwrap();
        let last = s.kernel.lock().unwrap().batches.last().cloned().unwrap();
        assert_eq!((last.0.len(), last.1.len()), (0, bans.len()));
        assert_eq!(s.enforcer.ledger.counts(T0).unwrap().0, bans.len() as u64);
    }

    #[test]
    fn unbans_reach_the_kernel_but_expiries_are_left_to_it() {
        let mut s = setup();
        s.enforcer
            .ban(
                &[
                    new_ban("203.0.113.5", T0, 10),
                    new_ban("203.0.113.6", T0, 60),
                ],
                Vec::new(),
            )
            .unwrap();
        let ended = s
            .enforcer
            .unban(&["203.0.113.6".parse().unwrap()], "unban")
            .unwrap();
        assert_eq!(ended.len(), 1);
        assert_eq!(held(&s), [("203.0.113.5".to_string(), 10)]);
        s.clock.store(T0 + 11_000, Ordering::SeqCst);
        assert_eq!(s.enforcer.expire(), 1);
        // The fake kernel has no clock: the element stays, as the kernel's
        // own timeout is what lifts it.
        assert_eq!(held(&s).len(), 1);
        assert_eq!(
            take_updates(&s.enforcer.updates()),
            [
                EngineUpdate::Lifted("203.0.113.6".parse().unwrap()),
                EngineUpdate::Lifted("203.0.113.5".parse().unwrap())
            ]
        );
    }
}
