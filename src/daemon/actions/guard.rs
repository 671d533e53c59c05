//! Carries out what a guard's check decided: run its program (one at a
//! time per guard, never blocking the others), run its recovery exactly
//! once per episode (after the action if that is still running), ban the
//! busiest clients, or only log.

use std::time::Duration;

use super::commands::{Ended, Running};
use crate::daemon::detectors::guards::LastAction;
use crate::daemon::sources::machine::Sample;
use crate::detect::Decision;
use crate::detect::addr::Subject;
use crate::detect::connrules::describe;
use crate::detect::engine::{Evidence, Mark};
use crate::detect::guard::expr::Vars;
use crate::detect::guard::{Guard, GuardAction, Step};
use crate::detect::rules::Action;
use crate::enforce::hooks::Invocation;
use crate::notify::{Event, Kind, Severity};

#[derive(Default)]
pub struct Slot {
    running: Option<(Running, &'static str)>,
    /// A recovery waiting for the action to end, with its environment.
    queued_then: Option<Vec<(String, String)>>,
    pub last: Option<LastAction>,
}

impl Slot {
    pub fn recovering(&self) -> bool {
        self.queued_then.is_some() || matches!(self.running, Some((_, "then")))
    }
}

pub struct GuardActions {
    pub slots: Vec<Slot>,
    pub dry_run: bool,
    /// Where fired and recovered guards are told.
    pub notify: Option<super::notify::NotifySender>,
}

/// The values a guard read, as `name=value` for the log.
fn values_text(g: &Guard, s: &Sample) -> String {
    g.vars()
        .iter()
        .map(|v| match s.get(v) {
            Some(x) => format!("{}={}", v.name(), show_named(&v.name(), x)),
            None => format!("{}=unknown", v.name()),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Numbers as an admin reads them: whole numbers plain, sizes in bytes
/// stay bytes, fractions with two decimals.
pub fn show_value(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x:.2}")
    }
}

/// A value as an admin reads it: memory and swap in K, M, G.
pub fn show_named(name: &str, x: f64) -> String {
    if name.starts_with("mem") && name != "mem_pressure" || name.starts_with("swap") {
        crate::report::human_bytes(x.max(0.0) as u64)
    } else {
        show_value(x)
    }
}

/// What a guard's programs see: who they are for, what happened, and the
/// value of every quantity it reads.
fn environment(g: &Guard, event: &str, s: &Sample) -> Vec<(String, String)> {
    let vars = g.vars();
    let mut env = vec![
        ("WEBFENCE_GUARD".to_string(), g.name.clone()),
        ("WEBFENCE_EVENT".to_string(), event.to_string()),
        ("WEBFENCE_CONDITION".to_string(), g.when_text.clone()),
        (
            "WEBFENCE_VALUE".to_string(),
            vars.first()
                .and_then(|v| s.get(v))
                .map(show_value)
                .unwrap_or_default(),
        ),
    ];
    for v in &vars {
        if let Some(x) = s.get(v) {
            env.push((v.env_name(), show_value(x)));
        }
    }
    env
}

impl GuardActions {
    pub fn new(n: usize, dry_run: bool) -> GuardActions {
        GuardActions {
            slots: (0..n).map(|_| Slot::default()).collect(),
            dry_run,
            notify: None,
        }
    }

    fn start(
        &mut self,
        i: usize,
        g: &Guard,
        what: &'static str,
        argv: &[String],
        env: Vec<(String, String)>,
        now_ms: i64,
    ) {
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        if self.dry_run {
            tracing::info!(guard = %g.name, "would {what}: {}", argv.join(" "));
            slot.last = Some(LastAction {
                what: what.into(),
                at_ms: now_ms,
                outcome: Some("dry run: not started".into()),
                ok: None,
            });
            return;
        }
        let limit = Duration::from_millis(g.timeout_ms.max(1) as u64);
        let inv = Invocation {
            argv: argv.to_vec(),
            env,
        };
        match Running::spawn(&inv, limit) {
            Ok(r) => {
                tracing::info!(guard = %g.name, "{what}: {}", argv.join(" "));
                slot.running = Some((r, what));
                slot.last = Some(LastAction {
                    what: what.into(),
                    at_ms: now_ms,
                    outcome: None,
                    ok: None,
                });
            }
            Err(e) => {
                tracing::error!(guard = %g.name, "{what} failed: {e}");
                slot.last = Some(LastAction {
                    what: what.into(),
                    at_ms: now_ms,
                    outcome: Some(e),
                    ok: Some(false),
                });
            }
        }
    }

    fn tell(
        &self,
        g: &Guard,
        kind: Kind,
        severity: Severity,
        title: String,
        detail: String,
        now_ms: i64,
    ) {
        if let Some(n) = &self.notify {
            n.send(Event::new(kind, severity, now_ms, &g.name, &title, &detail));
        }
    }

    /// Acts on one check's step; returns the bans a `ban` guard decided.
    pub fn carry_out(
        &mut self,
        i: usize,
        g: &Guard,
        step: Step,
        sample: &Sample,
        allowed: &dyn Fn(&Subject) -> bool,
        now_ms: i64,
    ) -> Vec<Decision> {
        match step {
            Step::Nothing => Vec::new(),
            Step::Fire | Step::Repeat => {
                let event = if step == Step::Fire { "fire" } else { "repeat" };
                tracing::warn!(guard = %g.name, event, "guard: {} holds ({})", g.when_text, values_text(g, sample));
                self.tell(
                    g,
                    Kind::GuardFired,
                    Severity::Warning,
                    format!("guard {}: {} holds", g.name, g.when_text),
                    values_text(g, sample),
                    now_ms,
                );
                match &g.action {
                    GuardAction::Log => {
                        if let Some(slot) = self.slots.get_mut(i) {
                            slot.last = Some(LastAction {
                                what: "log".into(),
                                at_ms: now_ms,
                                outcome: Some("logged".into()),
                                ok: Some(true),
                            });
                        }
                        Vec::new()
                    }
                    GuardAction::Run(argv) => {
                        let busy = self
                            .slots
                            .get(i)
                            .and_then(|s| s.running.as_ref())
                            .map(|(r, _)| r.program.clone());
                        match busy {
                            Some(p) => {
                                tracing::warn!(guard = %g.name, "{p} from the last run is still running: not started again")
                            }
                            None => {
                                let env = environment(g, event, sample);
                                self.start(i, g, "run", argv, env, now_ms);
                            }
                        }
                        Vec::new()
                    }
                    GuardAction::BanBusiest {
                        top,
                        min_conns,
                        duration_s,
                    } => {
                        let bans =
                            busiest(g, sample, *top, *min_conns, *duration_s, allowed, now_ms);
                        if let Some(slot) = self.slots.get_mut(i) {
                            slot.last = Some(LastAction {
                                what: "ban".into(),
                                at_ms: now_ms,
                                outcome: Some(format!("{} clients banned", bans.len())),
                                ok: Some(true),
                            });
                        }
                        bans
                    }
                }
            }
            Step::Recover => {
                tracing::info!(guard = %g.name, "guard: over ({})", values_text(g, sample));
                self.tell(
                    g,
                    Kind::GuardRecovered,
                    Severity::Info,
                    format!("guard {} is over", g.name),
                    values_text(g, sample),
                    now_ms,
                );
                if let Some(then) = &g.then {
                    let env = environment(g, "recover", sample);
                    let busy = self.slots.get(i).is_some_and(|s| s.running.is_some());
                    if busy {
                        // Exactly once, after the action it recovers from.
                        if let Some(slot) = self.slots.get_mut(i) {
                            slot.queued_then = Some(env);
                        }
                    } else {
                        self.start(i, g, "then", then, env, now_ms);
                    }
                }
                Vec::new()
            }
        }
    }

    /// Reaps programs that ended and starts recoveries that waited.
    pub fn poll(&mut self, guards: &[&Guard], now_ms: i64) {
        for i in 0..self.slots.len() {
            let Some(g) = guards.get(i) else { continue };
            let ended: Option<(Ended, &str)> = match self.slots[i].running.as_mut() {
                Some((r, what)) => r.poll().map(|e| (e, *what)),
                None => None,
            };
            if let Some((e, what)) = ended {
                let slot = &mut self.slots[i];
                slot.running = None;
                if e.success() {
                    tracing::info!(guard = %g.name, ms = e.ms, "{what} done: {}", e.describe());
                } else {
                    tracing::error!(guard = %g.name, ms = e.ms, "{what} failed: {}", e.describe());
                }
                if let Some(last) = slot.last.as_mut() {
                    last.ok = Some(e.success());
                    last.outcome = Some(e.describe());
                }
                if let (Some(env), Some(then)) = (slot.queued_then.take(), &g.then) {
                    self.start(i, g, "then", then, env, now_ms);
                }
            }
        }
    }

    /// Whether guard `i` has a program running.
    pub fn busy(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|s| s.running.is_some())
    }
}

/// The clients with the most connections, at least `min_conns` each.
fn busiest(
    g: &Guard,
    sample: &Sample,
    top: usize,
    min_conns: u64,
    duration_s: u64,
    allowed: &dyn Fn(&Subject) -> bool,
    now_ms: i64,
) -> Vec<Decision> {
    let Some(table) = &sample.conns else {
        tracing::error!(guard = %g.name, "cannot ban the busiest clients: the connection table could not be read");
        return Vec::new();
    };
    table
        .clients
        .iter()
        .filter(|c| c.total >= min_conns && !allowed(&c.client))
        .take(top)
        .map(|c| {
            let what = describe(c);
            Decision {
                rule: g.name.clone(),
                subject: c.client,
                action: Action::Ban,
                duration_s: Some(duration_s),
                at: now_ms,
                reason: format!("guard {}: {}; {what}", g.name, g.when_text),
                repeat: 0,
                evidence: Evidence {
                    count: c.total as f64,
                    window_s: 0,
                    threshold: min_conns as f64,
                    first: Mark { loc: 0, at: now_ms },
                    last: Mark { loc: 0, at: now_ms },
                    samples: vec![what],
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::guard::GuardState;
    use crate::detect::guard::expr::Cond;

    fn guard(dir: &std::path::Path, action_s: f64) -> Guard {
        let log = dir.join("log");
        let script = |what: &str, sleep: f64| {
            vec![
                "sh".to_string(),
                "-c".to_string(),
                format!(
                    "sleep {sleep}; echo \"{what} $WEBFENCE_EVENT $WEBFENCE_LA1\" >> {}",
                    log.display()
                ),
            ]
        };
        Guard {
            name: "load".into(),
            description: String::new(),
            when: Cond::parse("la1 >= 10").unwrap(),
            when_text: "la1 >= 10".into(),
            for_checks: 1,
            until: Some(Cond::parse("la1 <= 2").unwrap()),
            action: GuardAction::Run(script("run", action_s)),
            then: Some(script("then", 0.0)),
            repeat_ms: Some(1000),
            timeout_ms: 10_000,
            check_every_ms: 1000,
        }
    }

    fn sample(la1: f64) -> Sample {
        Sample {
            system: Some(crate::source::system::SystemSample {
                la1,
                ..Default::default()
            }),
            ..Sample::default()
        }
    }

    /// Drives checks one "second" apart, polling programs in between
    /// until each is done, and returns what the programs wrote.
    fn drive(g: &Guard, loads: &[f64], wait_between: bool) -> String {
        let dir = g.then.as_ref().unwrap()[2]
            .split(">> ")
            .nth(1)
            .unwrap()
            .to_string();
        let mut a = GuardActions::new(1, false);
        let mut st = GuardState::default();
        for (t, la) in loads.iter().enumerate() {
            let s = sample(*la);
            let step = st.check(g, &s, t as i64 * 1000);
            a.carry_out(0, g, step, &s, &|_| false, t as i64 * 1000);
            a.poll(&[g], t as i64 * 1000);
            if wait_between {
                while a.busy(0) || a.slots[0].recovering() {
                    std::thread::sleep(Duration::from_millis(10));
                    a.poll(&[g], t as i64 * 1000);
                }
            }
        }
        while a.busy(0) || a.slots[0].recovering() {
            std::thread::sleep(Duration::from_millis(10));
            a.poll(&[g], 0);
        }
        std::fs::read_to_string(dir).unwrap_or_default()
    }

    #[test]
    fn action_and_recovery_run_once_each_with_the_values() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = guard(dir.path(), 0.0);
        g.repeat_ms = None;
        let out = drive(&g, &[1.0, 12.0, 12.0, 5.0, 1.0, 1.0], true);
        assert_eq!(out, "run fire 12\nthen recover 1\n");
    }

    #[test]
    fn a_ban_guard_bans_the_busiest_clients_over_the_minimum_only() {
        use crate::source::conns::{Conn, TcpState};
        use crate::stats::conns::{ConnFilter, ConnTable};
        let mut conns = Vec::new();
        for (client, n) in [
            ("192.0.2.1", 60),
            ("192.0.2.2", 50),
            ("192.0.2.3", 40),
            ("10.0.0.9", 90),
            ("192.0.2.4", 5),
        ] {
            for _ in 0..n {
                conns.push(Conn {
                    local: "198.51.100.1".parse().unwrap(),
                    local_port: 80,
                    remote: client.parse().unwrap(),
                    remote_port: 1,
                    state: TcpState::SynRecv,
                });
            }
        }
        let sample = Sample {
            conns: Some(ConnTable::build(
                &[80].into(),
                &conns,
                &ConnFilter::default(),
            )),
            ..Sample::default()
        };
        let g = Guard {
            name: "syn-flood".into(),
            description: String::new(),
            when: Cond::parse("conns_syn > 100").unwrap(),
            when_text: "conns_syn > 100".into(),
            for_checks: 1,
            until: None,
            action: GuardAction::BanBusiest {
                top: 2,
                min_conns: 45,
                duration_s: 900,
            },
            then: None,
            repeat_ms: None,
            timeout_ms: 1000,
            check_every_ms: 1000,
        };
        let mut a = GuardActions::new(1, false);
        let allowed = |s: &Subject| s.to_string() == "10.0.0.9";
        let d = a.carry_out(0, &g, Step::Fire, &sample, &allowed, 0);
        let who: Vec<String> = d.iter().map(|d| d.subject.to_string()).collect();
        assert_eq!(who, vec!["192.0.2.1", "192.0.2.2"]);
        assert!(
            d.iter()
                .all(|d| d.duration_s == Some(900) && d.rule == "syn-flood")
        );
        assert!(
            d[0].reason.contains("60 connections (syn-recv 60)"),
            "{}",
            d[0].reason
        );
        assert!(
            a.carry_out(0, &g, Step::Nothing, &sample, &allowed, 0)
                .is_empty()
        );
    }

    #[test]
    fn a_running_action_is_not_started_again_and_recovery_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        // The action takes 0.5 s; the checks come without waiting: the
        // repeat finds it running, and the recovery is queued behind it.
        let g = guard(dir.path(), 0.5);
        let out = drive(&g, &[12.0, 12.0, 12.0, 1.0], false);
        assert_eq!(out, "run fire 12\nthen recover 1\n");
    }
}
