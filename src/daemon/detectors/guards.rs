//! The guards detector: `[guards.NAME]` compiled, and each guard's state
//! across checks. It decides; `actions::guard` carries the decisions out.

use crate::detect::config::{Config, ConfigError, Origin, RawGuard, Sp};
use crate::detect::guard::expr::{Cond, Var, Vars};
use crate::detect::guard::{Guard, GuardAction, GuardState, Phase, Step};

const DEFAULT_TIMEOUT_S: u64 = 60;
const DEFAULT_BAN_TOP: i64 = 10;
const DEFAULT_BAN_MIN_CONNS: i64 = 20;

/// Where the condition's text starts inside its TOML string, so an error
/// column points at the character.
fn text_origin(config: &Config, v: &Sp<String>, column: usize) -> Origin {
    let src = config.sources.excerpt(v.at);
    let quote = if src.starts_with("\"\"\"") || src.starts_with("'''") {
        3
    } else {
        1
    };
    let start = v.at.start + quote + column;
    Origin {
        file: v.at.file,
        start,
        end: start + 1,
    }
}

fn cond(config: &Config, v: &Sp<String>, errors: &mut Vec<ConfigError>) -> Option<Cond> {
    match Cond::parse(&v.value) {
        Ok(c) => Some(c),
        Err(e) => {
            errors.push(
                config
                    .sources
                    .error(text_origin(config, v, e.column), e.message),
            );
            None
        }
    }
}

/// Compiles every enabled `[guards.NAME]`, collecting every error.
pub fn compile(config: &Config, errors: &mut Vec<ConfigError>) -> Vec<Guard> {
    let mut out = Vec::new();
    for (name, raw) in &config.guards {
        if raw.enabled == Some(false) {
            continue;
        }
        if let Some(g) = compile_one(config, name, raw, errors) {
            out.push(g);
        }
    }
    out
}

fn compile_one(
    config: &Config,
    name: &Sp<String>,
    raw: &RawGuard,
    errors: &mut Vec<ConfigError>,
) -> Option<Guard> {
    let before = errors.len();
    let mut err = |at, msg: String| errors.push(config.sources.error(at, msg));
    let n = &name.value;
    if let Some(e) = crate::detect::config::name_error("guard", n, 64) {
        err(name.at, e);
    }
    let mut duration_ms = |v: &Option<Sp<String>>, what: &str, default_s: u64| -> i64 {
        match v {
            None => default_s as i64 * 1000,
            Some(d) => match crate::units::parse_duration(&d.value) {
                Ok(s) => s as i64 * 1000,
                Err(e) => {
                    err(d.at, format!("{what}: {e}"));
                    default_s as i64 * 1000
                }
            },
        }
    };
    let timeout_ms = duration_ms(&raw.timeout, "timeout", DEFAULT_TIMEOUT_S);
    let check_every_ms = duration_ms(&raw.check_every, "check_every", 1);
    let repeat_ms = raw
        .repeat
        .as_ref()
        .map(|_| duration_ms(&raw.repeat, "repeat", 600));
    let duration_s = duration_ms(&raw.duration, "duration", 3600) as u64 / 1000;

    let mut argv = |v: &Option<Vec<Sp<String>>>, what: &str| -> Option<Vec<String>> {
        let list = v.as_ref()?;
        let argv: Vec<String> = list.iter().map(|a| a.value.clone()).collect();
        if argv.first().is_none_or(|p| p.trim().is_empty()) {
            let at = list.first().map_or(name.at, |a| a.at);
            errors.push(config.sources.error(
                at,
                format!("'{what}' needs a program to run, such as [\"systemctl\", \"stop\", \"apache2\"]"),
            ));
            return None;
        }
        Some(argv)
    };
    let run = argv(&raw.run, "run");
    let then = argv(&raw.then, "then");

    let mut err = |at, msg: String| errors.push(config.sources.error(at, msg));
    let mut count = |v: &Option<Sp<i64>>, what: &str, default: i64, max: i64| -> i64 {
        match v {
            None => default,
            Some(x) if (1..=max).contains(&x.value) => x.value,
            Some(x) => {
                err(
                    x.at,
                    format!("invalid {what} {}: expected 1 to {max}", x.value),
                );
                default
            }
        }
    };
    let for_checks = count(&raw.for_checks, "for", 1, 3600) as u32;
    let ban_top = count(&raw.ban_top, "ban_top", DEFAULT_BAN_TOP, 100_000) as usize;
    let ban_min_conns = count(
        &raw.ban_min_conns,
        "ban_min_conns",
        DEFAULT_BAN_MIN_CONNS,
        1_000_000,
    ) as u64;

    let action = match raw.action.as_ref().map(|a| (a.value.as_str(), a.at)) {
        None if run.is_some() => GuardAction::Run(run.clone().unwrap_or_default()),
        None | Some(("log", _)) => GuardAction::Log,
        Some(("run", at)) => match &run {
            Some(r) => GuardAction::Run(r.clone()),
            None => {
                err(
                    at,
                    "action = \"run\" needs 'run', the program to run".into(),
                );
                GuardAction::Log
            }
        },
        Some(("ban", _)) => GuardAction::BanBusiest {
            top: ban_top,
            min_conns: ban_min_conns,
            duration_s,
        },
        Some((other, at)) => {
            err(
                at,
                format!("unknown guard action '{other}' (expected run, ban or log)"),
            );
            GuardAction::Log
        }
    };
    if run.is_some() && !matches!(action, GuardAction::Run(_)) {
        if let Some(r) = raw.run.as_ref().and_then(|r| r.first()) {
            err(
                r.at,
                format!(
                    "'run' is set but action is \"{}\": remove one",
                    raw.action.as_ref().map_or("", |a| a.value.as_str())
                ),
            );
        }
    }

    let when = match &raw.when {
        Some(w) => cond(config, w, errors),
        None => {
            errors.push(config.sources.error(
                name.at,
                format!("guard '{n}' needs 'when', a condition such as \"la1 >= 10 or la5 >= 6\""),
            ));
            None
        }
    };
    let until = raw.until.as_ref().and_then(|u| cond(config, u, errors));
    if errors.len() > before {
        return None;
    }
    Some(Guard {
        name: n.clone(),
        description: raw.description.clone().unwrap_or_default(),
        when: when?,
        when_text: raw
            .when
            .as_ref()
            .map(|w| w.value.clone())
            .unwrap_or_default(),
        for_checks,
        until,
        action,
        then,
        repeat_ms,
        timeout_ms,
        check_every_ms,
    })
}

/// One guard's figures for `status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GuardStatus {
    pub name: String,
    pub when: String,
    pub for_checks: u32,
    #[serde(flatten)]
    pub phase: Phase,
    /// The values of the quantities it reads, at the last check.
    pub values: Vec<(String, Option<f64>)>,
    pub last_check_ms: Option<i64>,
    /// The last program it ran, and how that ended.
    pub last_action: Option<LastAction>,
    /// A recovery is running or waiting for the action to end.
    pub recovering: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LastAction {
    /// "run", "then", "ban" or "log".
    pub what: String,
    pub at_ms: i64,
    /// None while it runs.
    pub outcome: Option<String>,
    pub ok: Option<bool>,
}

/// Every guard's state.
pub struct Guards {
    pub list: Vec<(Guard, GuardState, Option<i64>)>,
}

impl Guards {
    pub fn new(guards: Vec<Guard>) -> Guards {
        Guards {
            list: guards
                .into_iter()
                .map(|g| (g, GuardState::default(), None))
                .collect(),
        }
    }

    /// Which guards are due at `now_ms` (their `check_every` has passed).
    pub fn due(&self, now_ms: i64) -> Vec<usize> {
        self.list
            .iter()
            .enumerate()
            .filter(|(_, (g, _, last))| last.is_none_or(|l| now_ms - l >= g.check_every_ms - 50))
            .map(|(i, _)| i)
            .collect()
    }

    /// Checks guard `i` on a sample.
    pub fn check(&mut self, i: usize, vars: &dyn Vars, now_ms: i64) -> Step {
        let Some((g, state, last)) = self.list.get_mut(i) else {
            return Step::Nothing;
        };
        *last = Some(now_ms);
        state.check(g, vars, now_ms)
    }

    /// What the guards in `due` need read.
    pub fn needs(&self, due: &[usize]) -> super::super::sources::machine::Needs {
        let mut n = super::super::sources::machine::Needs::default();
        for &i in due {
            let Some((g, ..)) = self.list.get(i) else {
                continue;
            };
            for v in g.vars() {
                match v {
                    Var::Procs(p) => {
                        if !n.procs.contains(&p) {
                            n.procs.push(p)
                        }
                    }
                    Var::Conns | Var::ConnsSyn | Var::ConnsMaxIp => n.conns = true,
                    Var::ReqRate | Var::Status5xxRate | Var::Lag => {}
                    _ => n.system = true,
                }
            }
            n.conns |= g.needs_conns();
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_text(text: &str) -> (Vec<Guard>, String) {
        let config = Config::from_texts(vec![("g.toml".into(), text.into())]).unwrap();
        let mut errors = Vec::new();
        let g = compile(&config, &mut errors);
        let e = crate::detect::ConfigErrors(errors).to_string();
        (g, e)
    }

    #[test]
    fn the_issue_s_example_compiles() {
        let (g, e) = compile_text(
            r#"
[guards.apache-overload]
when = "la1 >= 10 or la5 >= 6"
for = 2
run = ["systemctl", "stop", "apache2"]
until = "la1 <= 2"
then = ["systemctl", "start", "apache2"]
repeat = "10m"
"#,
        );
        assert!(e.is_empty(), "{e}");
        let g = &g[0];
        assert_eq!(g.for_checks, 2);
        assert_eq!(g.repeat_ms, Some(600_000));
        assert_eq!(
            g.action,
            GuardAction::Run(vec!["systemctl".into(), "stop".into(), "apache2".into()])
        );
        assert!(g.then.is_some() && g.until.is_some());
    }

    #[test]
    fn errors_point_into_the_condition() {
        let (g, e) = compile_text(
            "[guards.x]\nwhen = \"la1 >= 10 or lodd >= 6\"\nfor = 0\naction = \"reboot\"\n\n[guards.y]\nrun = []\n",
        );
        assert!(g.is_empty());
        for want in [
            "g.toml:2:22: unknown quantity 'lodd'",
            "g.toml:3:7: invalid for 0: expected 1 to 3600",
            "g.toml:4:10: unknown guard action 'reboot'",
            "g.toml:6:9: guard 'y' needs 'when'",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }

    #[test]
    fn needs_follow_the_quantities() {
        let (g, e) = compile_text(
            "[guards.a]\nwhen = \"procs(\\\"nginx\\\") > 100 and conns_syn > 500\"\naction = \"ban\"\n[guards.b]\nwhen = \"req_rate > 1000\"\n",
        );
        assert!(e.is_empty(), "{e}");
        let guards = Guards::new(g);
        let n = guards.needs(&[0]);
        assert_eq!(n.procs, vec!["nginx".to_string()]);
        assert!(n.conns && !n.system);
        let n = guards.needs(&[1]);
        assert!(!n.conns && !n.system && n.procs.is_empty());
    }
}
