//! Hooks: programs the admin configures to run on a ban or an unban, and
//! named actions. The facts (address, rule, reason, a log line…) reach them
//! as environment variables and as placeholders substituted inside single
//! arguments, never through a shell, so a User-Agent such as
//! `$(touch /tmp/pwned)` stays text (the class of fail2ban's
//! CVE-2021-32749). They run on a thread of their own, one at a time with a
//! time limit, so a slow hook never delays a ban.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use crate::detect::addr::Subject;

/// The facts of one ban or unban.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// "ban", "unban" or a named action's name.
    pub event: String,
    pub subject: Subject,
    pub rule: String,
    pub action: String,
    pub duration_s: Option<u64>,
    pub reason: String,
    /// One of the log lines that led to the decision, if any.
    pub sample: Option<String>,
}

/// A program ready to run: plain data, so it can be checked in tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

pub const PLACEHOLDERS: [&str; 6] = [
    "{ip}",
    "{rule}",
    "{action}",
    "{duration}",
    "{reason}",
    "{event}",
];

impl Facts {
    fn value(&self, placeholder: &str) -> String {
        match placeholder {
            "{ip}" => self.subject.to_string(),
            "{rule}" => self.rule.clone(),
            "{action}" => self.action.clone(),
            "{duration}" => self.duration_s.map(|s| s.to_string()).unwrap_or_default(),
            "{reason}" => self.reason.clone(),
            "{event}" => self.event.clone(),
            _ => String::new(),
        }
    }

    /// `argv` with placeholders replaced in each argument (one pass, so a
    /// value that itself contains "{ip}" is not expanded again), and the
    /// facts as WEBFENCE_* variables.
    pub fn invocation(&self, argv: &[String]) -> Invocation {
        let argv = argv
            .iter()
            .map(|arg| {
                let mut out = String::new();
                let mut rest = arg.as_str();
                'scan: while !rest.is_empty() {
                    if rest.starts_with('{') {
                        for p in PLACEHOLDERS {
                            if let Some(after) = rest.strip_prefix(p) {
                                out.push_str(&self.value(p));
                                rest = after;
                                continue 'scan;
                            }
                        }
                    }
                    let mut chars = rest.chars();
                    if let Some(c) = chars.next() {
                        out.push(c);
                    }
                    rest = chars.as_str();
                }
                out
            })
            .collect();
        let mut env = vec![
            ("WEBFENCE_EVENT".to_string(), self.event.clone()),
            ("WEBFENCE_IP".to_string(), self.subject.to_string()),
            ("WEBFENCE_RULE".to_string(), self.rule.clone()),
            ("WEBFENCE_ACTION".to_string(), self.action.clone()),
            ("WEBFENCE_REASON".to_string(), self.reason.clone()),
        ];
        if let Some(d) = self.duration_s {
            env.push(("WEBFENCE_DURATION".into(), d.to_string()));
        }
        if let Some(s) = &self.sample {
            env.push(("WEBFENCE_SAMPLE".into(), s.clone()));
        }
        Invocation { argv, env }
    }
}

/// A shell given a command string (`sh -c '...'`) with a placeholder in
/// that string would hand log text to the shell: refused at configuration
/// time. Scripts read the facts from the environment instead.
pub fn shell_placeholder(argv: &[String]) -> Option<usize> {
    let shell = argv.first().is_some_and(|p| {
        let base = p.rsplit('/').next().unwrap_or(p);
        matches!(
            base,
            "sh" | "bash" | "dash" | "zsh" | "ksh" | "fish" | "busybox"
        )
    });
    if !shell {
        return None;
    }
    let c = argv
        .iter()
        .position(|a| a.starts_with('-') && a.contains('c'))?;
    argv.get(c + 1)
        .filter(|script| PLACEHOLDERS.iter().any(|p| script.contains(p)))
        .map(|_| c + 1)
}

/// How long a hook may run before it is killed.
const HOOK_TIME_LIMIT: Duration = Duration::from_secs(30);
/// Hooks waiting to run; beyond this (a flood of bans) they are dropped and
/// counted rather than piling up without bound.
const QUEUE: usize = 4096;

/// Runs invocations on a thread of its own.
pub struct HookRunner {
    tx: SyncSender<Invocation>,
    pub dropped: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
}

impl HookRunner {
    pub fn start() -> HookRunner {
        let (tx, rx) = sync_channel(QUEUE);
        let failed = Arc::new(AtomicU64::new(0));
        let f = failed.clone();
        // If the thread cannot start, hooks are counted as dropped below.
        let _ = std::thread::Builder::new()
            .name("hooks".into())
            .spawn(move || run_all(rx, &f));
        HookRunner {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            failed,
        }
    }

    pub fn submit(&self, inv: Invocation) {
        match self.tx.try_send(inv) {
            Ok(()) => {}
            Err(TrySendError::Full(inv)) | Err(TrySendError::Disconnected(inv)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(program = %inv.argv.first().map_or("", |s| s), "hook queue full; dropping hooks until it drains");
                }
            }
        }
    }
}

fn run_all(rx: Receiver<Invocation>, failed: &AtomicU64) {
    for inv in rx {
        if let Err(e) = run_one(&inv) {
            failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(program = %inv.argv.first().map_or("", |s| s), error = %e, "hook failed");
        }
    }
}

/// Runs one invocation to completion (or its time limit).
pub fn run_one(inv: &Invocation) -> Result<(), String> {
    let Some(program) = inv.argv.first() else {
        return Ok(());
    };
    let mut child = Command::new(program)
        .args(&inv.argv[1..])
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = (&mut e).take(2000).read_to_string(&mut err);
                }
                return Err(format!("{program} exited with {status}: {}", err.trim()));
            }
            Ok(None) if started.elapsed() > HOOK_TIME_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program} ran over {}s and was killed",
                    HOOK_TIME_LIMIT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(reason: &str) -> Facts {
        Facts {
            event: "ban".into(),
            subject: "203.0.113.7".parse().unwrap(),
            rule: "bad-agent".into(),
            action: "ban".into(),
            duration_s: Some(3600),
            reason: reason.into(),
            sample: Some("203.0.113.7 - - \"GET / HTTP/1.1\" 200 1 \"-\" \"`id`\"".into()),
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn placeholders_fill_single_arguments_once() {
        let inv = facts("agent {ip} $(touch /tmp/x)").invocation(&s(&[
            "/usr/local/bin/notify",
            "--ip={ip}",
            "{reason}",
            "{duration}s {unknown}",
        ]));
        assert_eq!(
            inv.argv,
            s(&[
                "/usr/local/bin/notify",
                "--ip=203.0.113.7",
                "agent {ip} $(touch /tmp/x)",
                "3600s {unknown}"
            ])
        );
        assert!(
            inv.env
                .contains(&("WEBFENCE_IP".into(), "203.0.113.7".into()))
        );
        assert!(
            inv.env
                .iter()
                .any(|(k, v)| k == "WEBFENCE_SAMPLE" && v.contains("`id`"))
        );
    }

    #[test]
    fn placeholders_in_shell_strings_are_refused() {
        assert_eq!(shell_placeholder(&s(&["sh", "-c", "echo {ip}"])), Some(2));
        assert_eq!(
            shell_placeholder(&s(&["/bin/bash", "-ec", "logger {reason}"])),
            Some(2)
        );
        assert_eq!(
            shell_placeholder(&s(&["sh", "-c", "echo \"$WEBFENCE_IP\""])),
            None
        );
        assert_eq!(
            shell_placeholder(&s(&["/usr/bin/logger", "{reason}"])),
            None
        );
    }

    #[test]
    fn payloads_stay_inert_when_run() {
        let dir = tempfile::tempdir().unwrap();
        let pwned = dir.path().join("pwned");
        let out = dir.path().join("out");
        let reason = format!("$(touch {}) `touch {}`", pwned.display(), pwned.display());
        let argv = s(&[
            "sh",
            "-c",
            "printf '%s|%s\\n' \"$1\" \"$WEBFENCE_REASON\" > \"$0\"",
            &out.display().to_string(),
            "{reason}",
        ]);
        run_one(&facts(&reason).invocation(&argv)).unwrap();
        let written = std::fs::read_to_string(&out).unwrap();
        assert_eq!(written, format!("{reason}|{reason}\n"));
        assert!(!pwned.exists());
    }

    #[test]
    fn failures_and_missing_programs_are_reported() {
        let e = run_one(&Invocation {
            argv: s(&["sh", "-c", "echo oops >&2; exit 3"]),
            env: vec![],
        })
        .unwrap_err();
        assert!(e.contains("exit status: 3") && e.contains("oops"), "{e}");
        let e = run_one(&Invocation {
            argv: s(&["/nonexistent/hook"]),
            env: vec![],
        })
        .unwrap_err();
        assert!(e.contains("cannot run /nonexistent/hook"), "{e}");
    }
}
