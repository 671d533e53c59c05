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

/// Changes the rule engine must learn from outside (the control socket).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EngineUpdate {
    Banned(Subject, i64),
    Lifted(Subject),
}

/// What reconciliation changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub added: usize,
    pub removed: usize,
}

pub struct Hooks {
    pub runner: Option<HookRunner>,
    pub on_ban: Option<Vec<String>>,
    pub on_unban: Option<Vec<String>>,
    pub kill_connections: bool,
}

pub struct Enforcer {
    pub ledger: Ledger,
    backend: Box<dyn Backend + Send>,
    pub health: Health,
    pub hooks: Hooks,
    pub allow: Allowlist,
    pub updates: Vec<EngineUpdate>,
    clock: Clock,
    retry_ms: i64,
    check_ms: i64,
    last_attempt_ms: i64,
    last_expiry_ms: i64,
}

/// How often the ledger is searched for bans whose time is up.
const EXPIRE_EVERY_MS: i64 = 100;

/// Seconds left until `expires_ms`, at least 1.
fn remaining_s(expires_ms: i64, now_ms: i64) -> u64 {
    ((expires_ms - now_ms + 999) / 1000).max(1) as u64
}

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
            ledger,
            backend,
            health: Health {
                ok: false,
                error: Some("not set up yet".into()),
                since_ms: now,
                failures: 0,
            },
            hooks,
            allow,
            updates: Vec::new(),
            clock,
            retry_ms: retry_s as i64 * 1000,
            check_ms: check_every_s as i64 * 1000,
            last_attempt_ms: i64::MIN,
            last_expiry_ms: i64::MIN,
        }
    }

    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    pub fn backend_name(&self) -> &str {
        self.backend.name()
    }

    fn degrade(&mut self, e: &EnforceError) {
        self.health.failures += 1;
        if self.health.ok {
            tracing::error!(backend = self.backend.name(), error = %e,
                "backend failed; running degraded: bans are recorded in the ledger and applied when it is back");
            self.health.since_ms = self.now();
        }
        self.health.ok = false;
        self.health.error = Some(e.to_string());
    }

    fn recover(&mut self, r: Reconciled) {
        if !self.health.ok {
            tracing::info!(
                backend = self.backend.name(),
                added = r.added,
                removed = r.removed,
                "backend ready; kernel reconciled with the ledger"
            );
        }
        self.health = Health {
            ok: true,
            error: None,
            since_ms: self.now(),
            failures: self.health.failures,
        };
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
        let wanted: crate::stats::Map<Subject, i64> =
            want.iter().map(|b| (b.subject, b.expires_ms)).collect();
        let add: Vec<BanEntry> = want
            .iter()
            .filter(|b| match held.get(&b.subject) {
                None => true,
                // Held longer than the ledger allows: put the right timeout.
                Some(&left) => timed && left > remaining_s(b.expires_ms, now) + 2,
            })
            .map(|b| BanEntry {
                subject: b.subject,
                timeout_s: remaining_s(b.expires_ms, now),
            })
            .collect();
        let remove: Vec<Subject> = kernel
            .iter()
            .map(|k| k.subject)
            .filter(|s| !wanted.contains_key(s))
            .collect();
        self.backend.apply(&add, &remove)?;
        Ok(Reconciled {
            added: add.len(),
            removed: remove.len(),
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
        } else if let Err(e) = self.backend.check() {
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
        let recorded = self.ledger.record(bans);
        let ledger_time = started.elapsed();
        let renewed = match &recorded {
            Ok(r) => r.clone(),
            Err(e) => {
                // The kernel still gets the bans: losing the record is
                // better than letting the abuse through.
                tracing::error!(error = %e, "cannot record bans in the ledger");
                vec![true; bans.len()]
            }
        };
        let now = self.now();
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
        let mut applied = 0;
        if self.health.ok {
            match self.backend.apply_new(&fresh, &renew) {
                Ok(()) => applied = bans.len(),
                Err(e) => self.degrade(&e),
            }
        }
        tracing::debug!(
            bans = bans.len(),
            renewed = renew.len(),
            ledger_ms = ledger_time.as_secs_f64() * 1e3,
            kernel_ms = (started.elapsed() - ledger_time).as_secs_f64() * 1e3,
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
        recorded.map(|_| applied)
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
        self.updates
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
