//! Guards: a condition over the machine's state, an action when it
//! becomes true, and a recovery when it is over (what sysfence does, and
//! what monit cannot: start the service again when load is back).
//!
//! [`Guard`] is the compiled `[guards.NAME]`; [`GuardState`] is its state
//! machine, a pure function of (condition, recovery condition, time) per
//! check, so every edge is unit-tested without a clock or a process.

pub mod expr;
pub mod sysfence;

use expr::{Cond, Var, Vars};

/// What a guard does when it fires.
#[derive(Debug, Clone, PartialEq)]
pub enum GuardAction {
    /// Log only.
    Log,
    /// Run a program (an argument vector, never a shell).
    Run(Vec<String>),
    /// Ban the busiest clients by connections to this machine.
    BanBusiest {
        /// At most this many clients.
        top: usize,
        /// Only clients with at least this many connections.
        min_conns: u64,
        duration_s: u64,
    },
}

/// A compiled `[guards.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    pub name: String,
    pub description: String,
    pub when: Cond,
    pub when_text: String,
    /// Consecutive true checks before it fires (monit's "for N cycles").
    pub for_checks: u32,
    /// What "over" means; None: `when` is false.
    pub until: Option<Cond>,
    pub action: GuardAction,
    /// Run when it is over; once per episode.
    pub then: Option<Vec<String>>,
    /// Fire again every this many ms while `when` stays true; None: once
    /// per episode (sysfence's `once`).
    pub repeat_ms: Option<i64>,
    /// The longest an action may run before it is killed.
    pub timeout_ms: i64,
    /// How often the condition is checked.
    pub check_every_ms: i64,
}

impl Guard {
    /// Every quantity the guard reads, `when` first.
    pub fn vars(&self) -> Vec<Var> {
        let mut v = self.when.vars();
        if let Some(u) = &self.until {
            for x in u.vars() {
                if !v.contains(&x) {
                    v.push(x);
                }
            }
        }
        v
    }

    /// Whether a check needs the connection table.
    pub fn needs_conns(&self) -> bool {
        self.vars().iter().any(Var::needs_conns)
            || matches!(self.action, GuardAction::BanBusiest { .. })
    }
}

/// Where a guard is in its episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Phase {
    Ok,
    /// `when` held for `checks` consecutive checks, fewer than `for`.
    Pending {
        checks: u32,
    },
    /// Fired at `since_ms`, not over yet.
    Firing {
        since_ms: i64,
        last_fired_ms: i64,
    },
}

/// What a check asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// The condition became true (after `for` checks): run the action.
    Fire,
    /// Still true and `repeat` has passed: run the action again.
    Repeat,
    /// It is over: run the recovery.
    Recover,
}

/// One guard's state across checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardState {
    pub phase: Phase,
}

impl Default for GuardState {
    fn default() -> Self {
        GuardState { phase: Phase::Ok }
    }
}

impl GuardState {
    /// One check: `when` and `until` evaluated on the same sample.
    pub fn step(&mut self, guard: &Guard, when: bool, until: bool, now_ms: i64) -> Step {
        match self.phase {
            Phase::Ok | Phase::Pending { .. } if when => {
                let checks = match self.phase {
                    Phase::Pending { checks } => checks + 1,
                    _ => 1,
                };
                if checks >= guard.for_checks.max(1) {
                    self.phase = Phase::Firing {
                        since_ms: now_ms,
                        last_fired_ms: now_ms,
                    };
                    Step::Fire
                } else {
                    self.phase = Phase::Pending { checks };
                    Step::Nothing
                }
            }
            Phase::Ok | Phase::Pending { .. } => {
                // `for N` counts consecutive checks: one false resets it.
                self.phase = Phase::Ok;
                Step::Nothing
            }
            Phase::Firing {
                since_ms,
                last_fired_ms,
            } => {
                let over = match guard.until {
                    Some(_) => until,
                    None => !when,
                };
                if over {
                    self.phase = Phase::Ok;
                    return Step::Recover;
                }
                match guard.repeat_ms {
                    Some(every) if when && now_ms - last_fired_ms >= every => {
                        self.phase = Phase::Firing {
                            since_ms,
                            last_fired_ms: now_ms,
                        };
                        Step::Repeat
                    }
                    _ => Step::Nothing,
                }
            }
        }
    }

    /// Evaluates the guard on a sample and steps.
    pub fn check(&mut self, guard: &Guard, vars: &dyn Vars, now_ms: i64) -> Step {
        let when = guard.when.eval(vars);
        let until = guard.until.as_ref().is_some_and(|u| u.eval(vars));
        self.step(guard, when, until, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(for_checks: u32, until: Option<&str>, repeat_ms: Option<i64>) -> Guard {
        Guard {
            name: "g".into(),
            description: String::new(),
            when: Cond::parse("la1 >= 10").unwrap(),
            when_text: "la1 >= 10".into(),
            for_checks,
            until: until.map(|u| Cond::parse(u).unwrap()),
            action: GuardAction::Log,
            then: None,
            repeat_ms,
            timeout_ms: 60_000,
            check_every_ms: 1000,
        }
    }

    /// Steps a guard through (when, until) pairs one second apart.
    fn run(g: &Guard, checks: &[(bool, bool)]) -> Vec<Step> {
        let mut s = GuardState::default();
        checks
            .iter()
            .enumerate()
            .map(|(i, &(w, u))| s.step(g, w, u, i as i64 * 1000))
            .collect()
    }

    use Step::*;

    #[test]
    fn fires_on_the_rising_edge_once_and_rearms_when_clear() {
        let g = guard(1, None, None);
        let steps = run(
            &g,
            &[
                (false, false),
                (true, false),
                (true, false),
                (true, false),
                (false, false),
                (true, false),
            ],
        );
        assert_eq!(steps, vec![Nothing, Fire, Nothing, Nothing, Recover, Fire]);
    }

    #[test]
    fn for_n_needs_n_consecutive_true_checks() {
        let g = guard(3, None, None);
        let steps = run(
            &g,
            &[
                (true, false),
                (true, false),
                (false, false),
                (true, false),
                (true, false),
                (true, false),
            ],
        );
        assert_eq!(
            steps,
            vec![Nothing, Nothing, Nothing, Nothing, Nothing, Fire]
        );
    }

    #[test]
    fn until_is_hysteresis_and_recovery_runs_once() {
        let g = guard(1, Some("la1 <= 2"), None);
        // when false but until not yet true: still firing, no recovery.
        let steps = run(
            &g,
            &[
                (true, false),
                (false, false),
                (false, false),
                (false, true),
                (false, true),
                (false, true),
            ],
        );
        assert_eq!(
            steps,
            vec![Fire, Nothing, Nothing, Recover, Nothing, Nothing]
        );
    }

    #[test]
    fn repeat_runs_again_while_true_only() {
        let g = guard(1, Some("la1 <= 2"), Some(2000));
        let steps = run(
            &g,
            &[
                (true, false),
                (true, false),
                (true, false),
                (true, false),
                (false, false),
                (false, false),
                (false, false),
                (false, true),
            ],
        );
        // Repeats at t=2s; at t=4s..6s `when` is false (hysteresis): no
        // repeat; the recovery comes once at t=7s.
        assert_eq!(
            steps,
            vec![
                Fire, Nothing, Repeat, Nothing, Nothing, Nothing, Nothing, Recover
            ]
        );
    }

    #[test]
    fn a_guard_reads_its_sample() {
        struct Load(f64);
        impl Vars for Load {
            fn get(&self, v: &Var) -> Option<f64> {
                (v == &Var::La1).then_some(self.0)
            }
        }
        let g = guard(1, Some("la1 <= 2"), None);
        let mut s = GuardState::default();
        assert_eq!(s.check(&g, &Load(12.0), 0), Fire);
        assert_eq!(s.check(&g, &Load(5.0), 1000), Nothing);
        assert_eq!(s.check(&g, &Load(1.0), 2000), Recover);
    }
}
