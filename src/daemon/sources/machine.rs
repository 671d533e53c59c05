//! The machine as a source: one [`Sample`] per check, holding what the
//! guards and connection rules asked for (load, memory, pressure,
//! processes by name, the connection table, and the log follower's own
//! figures). Nothing is read that no guard needs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::detect::guard::expr::{Var, Vars};
use crate::source::conns::ConnSource;
use crate::source::system::{SystemProbe, SystemSample};
use crate::stats::conns::{ConnFilter, ConnTable};

/// What the follow loop tells the machine loop about the logs, updated
/// after each read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LogFigures {
    /// Requests decided on since the start.
    pub requests: u64,
    /// Of which with a 5xx status.
    pub status_5xx: u64,
    /// Log time of the newest request read (epoch ms), 0 before any.
    pub newest_ms: i64,
    /// Bytes written to the logs and not read yet.
    pub behind_bytes: u64,
}

pub type SharedLogFigures = Arc<Mutex<LogFigures>>;

/// What one check must read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Needs {
    pub system: bool,
    pub procs: Vec<String>,
    pub conns: bool,
}

/// One check's readings.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub system: Option<SystemSample>,
    pub conns: Option<ConnTable>,
    pub req_rate: f64,
    pub status_5xx_rate: f64,
    pub lag_s: f64,
}

impl Vars for Sample {
    fn get(&self, var: &Var) -> Option<f64> {
        let s = self.system.as_ref();
        let c = self.conns.as_ref();
        Some(match var {
            Var::La1 => s?.la1,
            Var::La5 => s?.la5,
            Var::La15 => s?.la15,
            Var::MemFree => s?.mem_free as f64,
            Var::MemUsed => s?.mem_used() as f64,
            Var::MemAvail => s?.mem_avail as f64,
            Var::SwapFree => s?.swap_free as f64,
            Var::SwapUsed => s?.swap_used() as f64,
            Var::CpuPressure => s?.cpu_pressure?,
            Var::IoPressure => s?.io_pressure?,
            Var::MemPressure => s?.mem_pressure?,
            Var::Procs(name) => *s?.procs.get(name)? as f64,
            Var::Conns => c?.total as f64,
            Var::ConnsSyn => c?.syn_recv as f64,
            Var::ConnsMaxIp => c?.max_per_client() as f64,
            Var::ReqRate => self.req_rate,
            Var::Status5xxRate => self.status_5xx_rate,
            Var::Lag => self.lag_s,
        })
    }
}

/// The window the log rates are averaged over.
const RATE_WINDOW_MS: i64 = 10_000;

/// Reads the machine.
pub struct Machine {
    pub probe: Box<dyn SystemProbe>,
    pub conns: Box<dyn ConnSource>,
    pub logs: SharedLogFigures,
    /// (wall ms, requests, 5xx) at past checks, for rates.
    history: VecDeque<(i64, u64, u64)>,
    /// Whether a failed read was already logged (said once per episode).
    pub failing: Option<String>,
}

impl Machine {
    pub fn new(
        probe: Box<dyn SystemProbe>,
        conns: Box<dyn ConnSource>,
        logs: SharedLogFigures,
    ) -> Machine {
        Machine {
            probe,
            conns,
            logs,
            history: VecDeque::new(),
            failing: None,
        }
    }

    /// Reads what `needs` asks at wall time `now_ms`. A source that fails
    /// leaves its values unknown (so no condition on them holds) and is
    /// returned as a problem for `status`.
    pub fn sample(&mut self, needs: &Needs, now_ms: i64) -> (Sample, Vec<String>) {
        let mut problems = Vec::new();
        let mut s = Sample::default();
        if needs.system || !needs.procs.is_empty() {
            match self.probe.sample(&needs.procs) {
                Ok(x) => s.system = Some(x),
                Err(e) => problems.push(format!("cannot read /proc for the guards: {e}")),
            }
        }
        if needs.conns {
            match ConnTable::read(self.conns.as_mut(), &ConnFilter::default()) {
                Ok(t) => s.conns = Some(t),
                Err(e) => problems.push(format!("cannot read the connection table: {e}")),
            }
        }
        let f = *crate::daemon::lock(&self.logs);
        self.history.push_back((now_ms, f.requests, f.status_5xx));
        while self
            .history
            .front()
            .is_some_and(|(t, ..)| now_ms - t > RATE_WINDOW_MS)
        {
            self.history.pop_front();
        }
        if let Some(&(t0, r0, e0)) = self.history.front() {
            let secs = (now_ms - t0) as f64 / 1000.0;
            if secs > 0.0 {
                s.req_rate = f.requests.saturating_sub(r0) as f64 / secs;
                s.status_5xx_rate = f.status_5xx.saturating_sub(e0) as f64 / secs;
            }
        }
        s.lag_s = if f.behind_bytes > 0 && f.newest_ms > 0 {
            ((now_ms - f.newest_ms).max(0) as f64) / 1000.0
        } else {
            0.0
        };
        (s, problems)
    }

    /// Reads the connection table with a rule's filter.
    pub fn conns_with(&mut self, filter: &ConnFilter) -> std::io::Result<ConnTable> {
        ConnTable::read(self.conns.as_mut(), filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::conns::{Conn, States, Via};

    struct FakeProbe;
    impl SystemProbe for FakeProbe {
        fn sample(&mut self, procs: &[String]) -> std::io::Result<SystemSample> {
            Ok(SystemSample {
                la1: 3.0,
                procs: procs.iter().map(|p| (p.clone(), 7)).collect(),
                ..SystemSample::default()
            })
        }
    }
    struct NoConns;
    impl ConnSource for NoConns {
        fn dump(&mut self, _: States, _: &mut dyn FnMut(&Conn)) -> std::io::Result<Via> {
            Err(std::io::Error::other("no netlink here"))
        }
    }

    #[test]
    fn rates_come_from_the_log_figures_and_failures_are_problems() {
        let logs = SharedLogFigures::default();
        let mut m = Machine::new(Box::new(FakeProbe), Box::new(NoConns), logs.clone());
        let needs = Needs {
            system: true,
            procs: vec!["nginx".into()],
            conns: true,
        };
        let (s, problems) = m.sample(&needs, 0);
        assert_eq!(s.get(&Var::La1), Some(3.0));
        assert_eq!(s.get(&Var::Procs("nginx".into())), Some(7.0));
        assert_eq!(s.get(&Var::Conns), None);
        assert!(problems[0].contains("connection table"), "{problems:?}");
        *crate::daemon::lock(&logs) = LogFigures {
            requests: 500,
            status_5xx: 50,
            newest_ms: 1_000,
            behind_bytes: 10,
        };
        let (s, _) = m.sample(&needs, 5_000);
        assert_eq!(s.get(&Var::ReqRate), Some(100.0));
        assert_eq!(s.get(&Var::Status5xxRate), Some(10.0));
        assert_eq!(s.get(&Var::Lag), Some(4.0));
    }
}
