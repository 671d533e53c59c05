//! Programs guards run (`run`, `then`): started without a shell, watched
//! without blocking (the guard loop polls them each check, so one slow
//! `systemctl` never holds up another guard or a ban, which sysfence's
//! blocking rules did), killed at their time limit.

use std::io::Read;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::enforce::hooks::Invocation;

/// How a program ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ended {
    /// The exit code; None when a signal ended it (or it could not start).
    pub code: Option<i32>,
    pub timed_out: bool,
    pub ms: u64,
    /// The start of its standard error, for the log.
    pub stderr: String,
}

impl Ended {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// "exit 0", "exit 3: <stderr>", "killed after 60s".
    pub fn describe(&self) -> String {
        if self.timed_out {
            return format!("killed after {} ms (time limit)", self.ms);
        }
        let code = self
            .code
            .map_or_else(|| "ended by a signal".to_string(), |c| format!("exit {c}"));
        if self.stderr.is_empty() {
            code
        } else {
            format!("{code}: {}", self.stderr)
        }
    }
}

/// A program started and not yet reaped.
pub struct Running {
    child: Child,
    started: Instant,
    limit: Duration,
    pub program: String,
}

impl Running {
    /// Starts a program; the error says which and why.
    pub fn spawn(inv: &Invocation, limit: Duration) -> Result<Running, String> {
        let program = inv.argv.first().cloned().unwrap_or_default();
        let child = crate::enforce::hooks::spawn(inv)?;
        Ok(Running {
            child,
            started: Instant::now(),
            limit,
            program,
        })
    }

    /// Whether it has ended (killing it past its limit); never blocks
    /// longer than the kill takes.
    pub fn poll(&mut self) -> Option<Ended> {
        let ms = self.started.elapsed().as_millis() as u64;
        match self.child.try_wait() {
            Ok(Some(status)) => Some(Ended {
                code: status.code(),
                timed_out: false,
                ms,
                stderr: self.stderr(),
            }),
            Ok(None) if self.started.elapsed() >= self.limit => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Some(Ended {
                    code: None,
                    timed_out: true,
                    ms,
                    stderr: String::new(),
                })
            }
            Ok(None) => None,
            Err(_) => Some(Ended {
                code: None,
                timed_out: false,
                ms,
                stderr: "cannot wait for it".into(),
            }),
        }
    }

    fn stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = (&mut e).take(500).read_to_string(&mut err);
        }
        crate::log::parse::escape_for_display(err.trim().as_bytes())
    }

    /// Waits for it up to its limit (used at shutdown and in tests).
    pub fn wait(mut self) -> Ended {
        loop {
            if let Some(e) = self.poll() {
                return e;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A program still running when the daemon stops is left to finish
        // (a `systemctl start` must not be cut short); reap it if it is done.
        let _ = self.child.try_wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(argv: &[&str]) -> Invocation {
        Invocation {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("WEBFENCE_GUARD".into(), "g".into())],
        }
    }

    #[test]
    fn exit_codes_stderr_and_time_limits() {
        let ok = Running::spawn(
            &inv(&["sh", "-c", "test \"$WEBFENCE_GUARD\" = g"]),
            Duration::from_secs(5),
        )
        .unwrap()
        .wait();
        assert!(ok.success(), "{ok:?}");
        let bad = Running::spawn(
            &inv(&["sh", "-c", "echo nope >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .unwrap()
        .wait();
        assert_eq!(bad.describe(), "exit 3: nope");
        let slow = Running::spawn(&inv(&["sleep", "5"]), Duration::from_millis(100))
            .unwrap()
            .wait();
        assert!(slow.timed_out && slow.ms < 2000, "{slow:?}");
        let missing = Running::spawn(&inv(&["/nonexistent/prog"]), Duration::from_secs(1));
        assert!(
            missing
                .err()
                .unwrap()
                .contains("cannot run /nonexistent/prog")
        );
    }
}
