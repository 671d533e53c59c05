//! The machine loop: a thread of its own that, every check, reads the
//! machine source (only what is due), steps the guards, runs the
//! connection rules, carries out their decisions, keeps the kernel limits
//! in place, and publishes their state for `status`. It never waits for a
//! program a guard started, and it takes the enforcer's lock only to ban.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::actions::bans::enforce;
use super::actions::enforcer::{Enforcer, EngineUpdate, wall_ms};
use super::actions::guard::GuardActions;
use super::actions::limits::KernelLimits;
use super::control::LoopStatus;
use super::detectors::connections::ConnDetector;
use super::detectors::guards::{GuardStatus, Guards};
use super::lock;
use super::sources::machine::Machine;
use crate::detect::RuleSet;
use crate::detect::addr::Subject;
use crate::detect::allow::Allowlist;
use crate::detect::guard::Guard;
use crate::detect::guard::expr::Vars;
use crate::enforce::limits::Limits;

/// How often the loop wakes to reap programs and see what is due.
const TICK: Duration = Duration::from_millis(100);
/// How often connection rules read the table.
const CONN_RULES_EVERY_MS: i64 = 1000;

/// A new configuration for the loop (at start and on reload).
pub struct WatchConfig {
    pub guards: Vec<Guard>,
    pub set: RuleSet,
    pub limits: Option<Limits>,
    pub allow: Allowlist,
    /// For digests: the logs, their format, the state directory.
    pub settings: super::Settings,
}

/// Keeps the guard episodes digests report (the last 200).
fn note_episode(
    st: &mut super::control::LoopStatus,
    guard: &str,
    step: crate::detect::guard::Step,
    now_ms: i64,
) {
    use crate::detect::guard::Step;
    match step {
        Step::Fire => {
            st.guard_episodes.push(crate::report::digest::Episode {
                guard: guard.to_string(),
                fired_ms: now_ms,
                over_ms: None,
            });
            if st.guard_episodes.len() > 200 {
                st.guard_episodes.remove(0);
            }
        }
        Step::Recover => {
            if let Some(e) = st
                .guard_episodes
                .iter_mut()
                .rev()
                .find(|e| e.guard == guard && e.over_ms.is_none())
            {
                e.over_ms = Some(now_ms);
            }
        }
        _ => {}
    }
}

/// The values one guard read at a check, by name.
type GuardValues = Vec<(String, Option<f64>)>;

/// What the machine loop keeps between rounds.
pub struct State {
    guards: Guards,
    actions: GuardActions,
    conns: ConnDetector,
    set: RuleSet,
    allow: Allowlist,
    last_conn_rules: Option<i64>,
    last_limits: i64,
    /// The last round that failed, and when: shown for five minutes.
    failed_round: Option<(String, i64)>,
    settings: super::Settings,
    /// Each digest and when it is due next.
    digests: Vec<(super::actions::digest::DigestSpec, i64)>,
}

/// When a digest of period `every` is next due: on the clock's multiples
/// of it (hourly digests on the hour, daily ones at midnight UTC).
fn next_due(now_ms: i64, every_ms: i64) -> i64 {
    (now_ms.div_euclid(every_ms) + 1) * every_ms
}

fn schedule(
    settings: &super::Settings,
    now_ms: i64,
) -> Vec<(super::actions::digest::DigestSpec, i64)> {
    settings
        .digests
        .iter()
        .map(|d| (d.clone(), next_due(now_ms, d.every_ms)))
        .collect()
}

pub struct Watch {
    pub machine: Machine,
    pub enforcer: Arc<Mutex<Enforcer>>,
    pub status: Arc<Mutex<LoopStatus>>,
    pub names: Vec<String>,
    pub dry_run: bool,
    pub limits: KernelLimits,
    /// How often the limits are checked (the backend's `check_every`).
    pub check_every_ms: i64,
    pub notify: Option<super::actions::notify::NotifySender>,
}

/// Keeps the state of guards that did not change across a reload, so a
/// reload in the middle of an episode does not run the action again.
fn carry(
    old: &Guards,
    old_actions: GuardActions,
    new: Vec<Guard>,
    dry_run: bool,
) -> (Guards, GuardActions) {
    let mut guards = Guards::new(new);
    let mut actions = GuardActions::new(guards.list.len(), dry_run);
    let mut old_slots: Vec<Option<_>> = old_actions.slots.into_iter().map(Some).collect();
    for (i, (g, state, last)) in guards.list.iter_mut().enumerate() {
        if let Some(j) = old.list.iter().position(|(o, ..)| o == g) {
            *state = old.list[j].1.clone();
            *last = old.list[j].2;
            if let Some(slot) = old_slots.get_mut(j).and_then(Option::take) {
                actions.slots[i] = slot;
            }
        }
    }
    (guards, actions)
}

impl Watch {
    /// Takes the first configuration: the guards are in `status` and the
    /// kernel limits in place when this returns, before the loop runs.
    pub fn prepare(&mut self, first: WatchConfig) -> State {
        let guards = Guards::new(first.guards);
        let mut actions = GuardActions::new(guards.list.len(), self.dry_run);
        actions.notify = self.notify.clone();
        let st = State {
            guards,
            actions,
            conns: ConnDetector::new(first.set.conn_rules.clone()),
            set: first.set,
            allow: first.allow,
            last_conn_rules: None,
            last_limits: wall_ms(),
            failed_round: None,
            digests: schedule(&first.settings, wall_ms()),
            settings: first.settings,
        };
        self.publish_guards(&st.guards, &st.actions, None);
        if !self.dry_run {
            self.limits.set(first.limits, &st.allow);
        }
        st
    }

    /// Runs until `inbox` is closed. A round that panics (a bug: nothing
    /// read from the machine may panic) is logged and shown in `status`,
    /// and the next round runs: guards must not stop silently.
    pub fn run(mut self, mut st: State, inbox: Receiver<WatchConfig>) {
        loop {
            match inbox.recv_timeout(TICK) {
                Ok(c) => {
                    let actions =
                        std::mem::replace(&mut st.actions, GuardActions::new(0, self.dry_run));
                    (st.guards, st.actions) = carry(&st.guards, actions, c.guards, self.dry_run);
                    st.actions.notify = self.notify.clone();
                    st.conns = ConnDetector::new(c.set.conn_rules.clone());
                    st.set = c.set;
                    st.allow = c.allow;
                    st.digests = schedule(&c.settings, wall_ms());
                    st.settings = c.settings;
                    if !self.dry_run {
                        self.limits.set(c.limits, &st.allow);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let round =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.round(&mut st)));
            if let Err(panic) = round {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(
                    "a round of the machine loop failed (a bug, please report it): {why}"
                );
                st.failed_round = Some((
                    format!("a round of guards and connection rules failed: {why}"),
                    wall_ms(),
                ));
            }
        }
    }

    /// One round: what is due is read, checked and acted on.
    fn round(&mut self, st: &mut State) {
        let started = Instant::now();
        let now = wall_ms();
        let allow = &st.allow;
        let allowed = |s: &Subject| allow.overlapping(*s).is_some();
        let mut decisions = Vec::new();
        let mut rule_decisions = Vec::new();
        let mut problems = Vec::new();

        let due = st.guards.due(now);
        if !due.is_empty() {
            let needs = st.guards.needs(&due);
            let (sample, p) = self.machine.sample(&needs, now);
            problems.extend(p);
            for i in due {
                let step = st.guards.check(i, &sample, now);
                if let Some((g, ..)) = st.guards.list.get(i) {
                    decisions.extend(st.actions.carry_out(i, g, step, &sample, &allowed, now));
                    note_episode(&mut lock(&self.status), &g.name, step, now);
                }
            }
            if let Some(t) = &sample.conns {
                lock(&self.status).note_conns(t.total, now);
            }
            let values: Vec<GuardValues> = st
                .guards
                .list
                .iter()
                .map(|(g, ..)| g.vars().iter().map(|v| (v.name(), sample.get(v))).collect())
                .collect();
            self.publish_guards(&st.guards, &st.actions, Some(values));
        }
        let list: Vec<&Guard> = st.guards.list.iter().map(|(g, ..)| g).collect();
        st.actions.poll(&list, now);

        if !st.conns.rules.is_empty()
            && st
                .last_conn_rules
                .is_none_or(|l| now - l >= CONN_RULES_EVERY_MS)
        {
            st.last_conn_rules = Some(now);
            let (d, p) = st.conns.check(&mut self.machine, &allowed, now);
            rule_decisions = d;
            problems.extend(p);
            if let Some(total) = st.conns.last_total {
                lock(&self.status).note_conns(total, now);
            }
        }
        if !decisions.is_empty() || !rule_decisions.is_empty() {
            let mut e = lock(&self.enforcer);
            enforce(
                &mut e,
                &decisions,
                &st.set,
                &self.names,
                self.dry_run,
                "guard",
            );
            enforce(
                &mut e,
                &rule_decisions,
                &st.set,
                &self.names,
                self.dry_run,
                "rule",
            );
            for d in decisions.iter().chain(&rule_decisions) {
                if let (Some(s), crate::detect::rules::Action::Ban) = (d.duration_s, &d.action) {
                    e.notify(EngineUpdate::Banned(d.subject, now + s as i64 * 1000));
                }
            }
        }
        for (spec, due) in &mut st.digests {
            if now >= *due {
                let to = *due;
                *due = next_due(now, spec.every_ms);
                self.send_digest(spec.clone(), &st.settings, to - spec.every_ms, to);
            }
        }
        if !self.dry_run && now - st.last_limits >= self.check_every_ms {
            st.last_limits = now;
            self.limits.check();
        }
        if let Some(p) = &self.limits.problem {
            problems.push(p.clone());
        }
        match &st.failed_round {
            Some((_, at)) if now - at > 300_000 => st.failed_round = None,
            Some((p, _)) => problems.push(p.clone()),
            None => {}
        }
        let mut status = lock(&self.status);
        status.count(&decisions);
        status.count(&rule_decisions);
        status.watch_problems = problems;
        status.limits = self
            .limits
            .limits
            .as_ref()
            .map(|l| super::control::LimitsStatus {
                max_conns: l.max_conns,
                new_per_second: l.new_per_second,
                ports: l.ports.clone(),
                refused_conns: self.limits.refused.conns,
                refused_rate: self.limits.refused.rate,
                in_force: self.limits.problem.is_none(),
            });
        status.watch_ms = started.elapsed().as_micros() as u64 / 1000;
    }

    /// Builds a digest on a thread of its own (it reads the logs) and
    /// sends it to its channels.
    fn send_digest(
        &self,
        spec: super::actions::digest::DigestSpec,
        settings: &super::Settings,
        from: i64,
        to: i64,
    ) {
        let (episodes, peak) = {
            let st = lock(&self.status);
            (st.guard_episodes.clone(), st.conn_peak(from, to))
        };
        let settings = settings.clone();
        let notify = self.notify.clone();
        let ledger = settings.state_dir.join("ledger.db");
        let _ = std::thread::Builder::new()
            .name("digest".into())
            .spawn(move || {
                match super::actions::digest::gather(&settings, Some(&ledger), from, to, episodes, peak) {
                    Ok(d) if d.is_empty() && !spec.send_empty => {
                        tracing::info!(digest = %spec.name, "nothing happened in the period: no digest sent");
                    }
                    Ok(d) => {
                        tracing::info!(digest = %spec.name, "digest: {}", d.subject());
                        if let Some(n) = notify {
                            n.send(crate::notify::Event::digest(&spec.name, to, d.subject(), d.text(), spec.channels.clone()));
                        }
                    }
                    Err(e) => tracing::error!(digest = %spec.name, "cannot build the digest: {e:#}"),
                }
            });
    }

    fn publish_guards(
        &self,
        guards: &Guards,
        actions: &GuardActions,
        values: Option<Vec<GuardValues>>,
    ) {
        let mut st = lock(&self.status);
        let old = std::mem::take(&mut st.guards);
        st.guards = guards
            .list
            .iter()
            .enumerate()
            .map(|(i, (g, state, last))| GuardStatus {
                name: g.name.clone(),
                when: g.when_text.clone(),
                for_checks: g.for_checks,
                phase: state.phase,
                values: values
                    .as_ref()
                    .and_then(|v| v.get(i).cloned())
                    .or_else(|| {
                        old.iter()
                            .find(|o| o.name == g.name)
                            .map(|o| o.values.clone())
                    })
                    .unwrap_or_default(),
                last_check_ms: *last,
                last_action: actions.slots.get(i).and_then(|s| s.last.clone()),
                recovering: actions.slots.get(i).is_some_and(|s| s.recovering()),
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::guard::expr::Cond;
    use crate::detect::guard::{GuardAction, Phase};

    fn guard(name: &str, when: &str) -> Guard {
        Guard {
            name: name.into(),
            description: String::new(),
            when: Cond::parse(when).unwrap(),
            when_text: when.into(),
            for_checks: 1,
            until: None,
            action: GuardAction::Log,
            then: None,
            repeat_ms: None,
            timeout_ms: 1000,
            check_every_ms: 1000,
        }
    }

    /// A reload in the middle of an episode does not fire an unchanged
    /// guard again; a changed one starts afresh.
    #[test]
    fn a_reload_keeps_the_state_of_unchanged_guards() {
        let mut old = Guards::new(vec![
            guard("load", "la1 > 5"),
            guard("mem", "memavail < 1G"),
        ]);
        for (_, st, _) in &mut old.list {
            st.phase = Phase::Firing {
                since_ms: 1,
                last_fired_ms: 1,
            };
        }
        let (new, actions) = carry(
            &old,
            GuardActions::new(2, false),
            vec![guard("mem", "memavail < 2G"), guard("load", "la1 > 5")],
            false,
        );
        assert_eq!(actions.slots.len(), 2);
        assert_eq!(new.list[0].0.name, "mem");
        assert_eq!(
            new.list[0].1.phase,
            Phase::Ok,
            "a changed guard starts afresh"
        );
        assert!(matches!(new.list[1].1.phase, Phase::Firing { .. }));
    }
}
